//! # tandem-hw-tests: the OpenZFS QEMU lab harness
//!
//! The build host cannot load kernel modules and has no nested KVM, so tandem's tests against a
//! real OpenZFS 2.x kernel module run in QEMU guests under TCG. `hw-tests/lab/lab.sh build`
//! builds (and caches) Debian's stock bookworm kernel, `zfs.ko`/`spl.ko` from `zfs-dkms`
//! (bookworm-backports) and one initramfs holding the whole guest root filesystem (zfsutils-linux
//! of the same version, udev, qemu-guest-agent, openssh, busybox init).
//!
//! This crate boots such guests and drives them:
//!
//! * [`Lab::acquire`] finds QEMU and the artifacts (or says why the lab cannot run) and serialises
//!   lab tests host-wide;
//! * [`GuestBuilder`] describes a guest: sparse raw virtio disks, a point-to-point [`Link`] to
//!   another guest, a 9p share of a host directory, a [`Watchdog`], an IPMI [`Bmc`];
//! * [`Guest`] runs commands through the QEMU guest agent ([`Guest::run`]), reads QMP events
//!   ([`Guest::wait_event`]) and always cleans up on drop (unless `TANDEM_KEEP_GUESTS=1`).
//!
//! ```no_run
//! use tandem_hw_tests::{Lab, GIB};
//! # fn main() -> tandem_hw_tests::Result<()> {
//! let Some(lab) = Lab::acquire_or_skip("example") else { return Ok(()) };
//! let g = lab.guest("example").disk(GIB).boot()?;
//! g.run("zpool create -f tank /dev/vda")?;
//! println!("{}", g.run("zfs version")?);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod b64;
mod error;
mod guest;
mod ipmi;
mod jsonio;
mod lab;
mod qga;
mod qmp;

pub use error::{Error, Result};
pub use guest::{
    run_host, shell_quote, Guest, GuestBuilder, Link, NetEnd, Watchdog, GIB, HOST_GATEWAY,
    READY_MARKER,
};
pub use ipmi::{Bmc, PowerState, BMC_PASSWORD, BMC_USER};
pub use lab::{Lab, BUILD_HINT};
pub use qga::{ExecOptions, ExecOutput};
pub use qmp::QmpEvent;

/// Prints a measured duration as `[lab-timing] <what>: <seconds> s` (visible with `--nocapture`).
pub fn report_timing(what: &str, took: std::time::Duration) {
    println!("[lab-timing] {what}: {:.2} s", took.as_secs_f64());
}

/// Runs `f`, prints how long it took with [`report_timing`], and returns its result.
pub fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t0 = std::time::Instant::now();
    let r = f();
    report_timing(what, t0.elapsed());
    r
}
