//! The Linux watchdog device (`/dev/watchdog`), through its ioctls
//! (`linux/watchdog.h`), behind the [`WatchdogDevice`] trait so the keeper
//! can be tested against a double.
//!
//! This is the only module of the crate with `unsafe` code: the ioctl
//! calls themselves.

#![allow(unsafe_code)]

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::libc::c_int;

/// `WDIOF_SETTIMEOUT`: the timeout can be set.
pub const WDIOF_SETTIMEOUT: u32 = 0x0080;
/// `WDIOF_MAGICCLOSE`: closing the device stops the watchdog only after
/// the magic character `V` was written.
pub const WDIOF_MAGICCLOSE: u32 = 0x0100;
/// `WDIOF_KEEPALIVEPING`: `WDIOC_KEEPALIVE` is supported.
pub const WDIOF_KEEPALIVEPING: u32 = 0x8000;

const OPTION_NAMES: [(u32, &str); 12] = [
    (0x0001, "overheat"),
    (0x0002, "fanfault"),
    (0x0004, "extern1"),
    (0x0008, "extern2"),
    (0x0010, "powerunder"),
    (0x0020, "cardreset"),
    (0x0040, "powerover"),
    (WDIOF_SETTIMEOUT, "settimeout"),
    (WDIOF_MAGICCLOSE, "magicclose"),
    (0x0200, "pretimeout"),
    (0x0400, "alarmonly"),
    (WDIOF_KEEPALIVEPING, "keepaliveping"),
];

/// What a watchdog driver says about itself (`WDIOC_GETSUPPORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogInfo {
    /// The driver's name, e.g. "Software Watchdog", "iTCO_wdt".
    pub identity: String,
    /// The driver's firmware version.
    pub firmware_version: u32,
    /// The `WDIOF_*` option bits.
    pub options: u32,
}

impl WatchdogInfo {
    /// Whether the timeout can be set (`WDIOF_SETTIMEOUT`).
    pub fn can_set_timeout(&self) -> bool {
        self.options & WDIOF_SETTIMEOUT != 0
    }

    /// Whether closing the device disarms it only after a magic `V`
    /// (`WDIOF_MAGICCLOSE`). Without it, closing the device disarms it
    /// (unless the driver was loaded with `nowayout=1`).
    pub fn has_magic_close(&self) -> bool {
        self.options & WDIOF_MAGICCLOSE != 0
    }

    /// The option bits by name, e.g. "settimeout,magicclose,keepaliveping".
    pub fn option_names(&self) -> String {
        let names: Vec<&str> = OPTION_NAMES
            .iter()
            .filter(|(bit, _)| self.options & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        names.join(",")
    }
}

/// A watchdog device as the keeper uses it. [`DevWatchdog`] is the real
/// one; tests use doubles.
///
/// Dropping a device closes it *without* the magic character: an armed
/// watchdog stays armed (on drivers with [`WDIOF_MAGICCLOSE`]).
pub trait WatchdogDevice: Send + fmt::Debug {
    /// The device, for logs and errors (its path).
    fn name(&self) -> String;

    /// `WDIOC_GETSUPPORT`: the driver's identity and options.
    fn info(&mut self) -> io::Result<WatchdogInfo>;

    /// `WDIOC_SETTIMEOUT`: asks for a timeout in seconds; returns the
    /// timeout the driver actually set (it may round).
    fn set_timeout(&mut self, seconds: u32) -> io::Result<u32>;

    /// `WDIOC_GETTIMEOUT`: the current timeout in seconds.
    fn timeout(&mut self) -> io::Result<u32>;

    /// `WDIOC_KEEPALIVE`: pets the watchdog.
    fn keepalive(&mut self) -> io::Result<()>;

    /// Writes the magic character `V`, so that closing the device next
    /// disarms the watchdog. Only for a clean shutdown.
    fn magic_close(&mut self) -> io::Result<()>;
}

/// The raw `struct watchdog_info` of `linux/watchdog.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RawWatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

mod sys {
    use super::RawWatchdogInfo;
    use nix::libc::c_int;

    nix::ioctl_read!(
        /// `WDIOC_GETSUPPORT = _IOR('W', 0, struct watchdog_info)`.
        wdioc_getsupport,
        b'W',
        0,
        RawWatchdogInfo
    );
    nix::ioctl_read!(
        /// `WDIOC_KEEPALIVE = _IOR('W', 5, int)`; the argument is unused.
        wdioc_keepalive,
        b'W',
        5,
        c_int
    );
    nix::ioctl_readwrite!(
        /// `WDIOC_SETTIMEOUT = _IOWR('W', 6, int)`; the driver writes back
        /// the timeout it set.
        wdioc_settimeout,
        b'W',
        6,
        c_int
    );
    nix::ioctl_read!(
        /// `WDIOC_GETTIMEOUT = _IOR('W', 7, int)`.
        wdioc_gettimeout,
        b'W',
        7,
        c_int
    );
}

/// The real watchdog device, e.g. `/dev/watchdog`.
#[derive(Debug)]
pub struct DevWatchdog {
    path: PathBuf,
    file: File,
}

impl DevWatchdog {
    /// Opens the device (write-only, close-on-exec). Opening arms the
    /// watchdog.
    pub fn open(path: &Path) -> io::Result<DevWatchdog> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(DevWatchdog {
            path: path.to_path_buf(),
            file,
        })
    }
}

fn errno(e: nix::errno::Errno, what: &str) -> io::Error {
    io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"))
}

impl WatchdogDevice for DevWatchdog {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn info(&mut self) -> io::Result<WatchdogInfo> {
        let mut raw = RawWatchdogInfo {
            options: 0,
            firmware_version: 0,
            identity: [0; 32],
        };
        // SAFETY: the fd is open for the life of `self.file`, and `raw` is a
        // properly aligned `struct watchdog_info` (repr(C), same layout as
        // linux/watchdog.h) that the kernel fills in and that outlives the
        // call.
        unsafe { sys::wdioc_getsupport(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| errno(e, "WDIOC_GETSUPPORT"))?;
        let len = raw.identity.iter().position(|&b| b == 0).unwrap_or(32);
        Ok(WatchdogInfo {
            identity: String::from_utf8_lossy(&raw.identity[..len]).into_owned(),
            firmware_version: raw.firmware_version,
            options: raw.options,
        })
    }

    fn set_timeout(&mut self, seconds: u32) -> io::Result<u32> {
        let mut t = c_int::try_from(seconds)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "timeout too large"))?;
        // SAFETY: the fd is open; `t` is a valid c_int the kernel reads the
        // requested timeout from and writes the actual one back to.
        unsafe { sys::wdioc_settimeout(self.file.as_raw_fd(), &mut t) }
            .map_err(|e| errno(e, "WDIOC_SETTIMEOUT"))?;
        u32::try_from(t).map_err(|_| io::Error::other(format!("driver set timeout {t}")))
    }

    fn timeout(&mut self) -> io::Result<u32> {
        let mut t: c_int = 0;
        // SAFETY: the fd is open; `t` is a valid c_int the kernel writes to.
        unsafe { sys::wdioc_gettimeout(self.file.as_raw_fd(), &mut t) }
            .map_err(|e| errno(e, "WDIOC_GETTIMEOUT"))?;
        u32::try_from(t).map_err(|_| io::Error::other(format!("driver reports timeout {t}")))
    }

    fn keepalive(&mut self) -> io::Result<()> {
        let mut unused: c_int = 0;
        // SAFETY: the fd is open; the kernel ignores the argument of
        // WDIOC_KEEPALIVE, and `unused` is a valid c_int in any case.
        unsafe { sys::wdioc_keepalive(self.file.as_raw_fd(), &mut unused) }
            .map_err(|e| errno(e, "WDIOC_KEEPALIVE"))?;
        Ok(())
    }

    fn magic_close(&mut self) -> io::Result<()> {
        self.file.write_all(b"V")?;
        self.file.flush()
    }
}
