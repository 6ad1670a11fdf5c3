//! Watchdog fencing: a guest arms a watchdog, stops petting it, and the host sees QEMU reset it
//! (QMP `RESET`), after which the guest boots again.
//!
//! Run with `cargo test -p tandem-hw-tests -- --include-ignored --nocapture` after
//! `hw-tests/lab/lab.sh build`.

use std::time::{Duration, Instant};
use tandem_hw_tests::{report_timing, timed, Guest, Lab, Result, Watchdog};

/// Opens /dev/watchdog (arming it), pets it once and never again, keeping the file open.
const ARM_AND_STOP_PETTING: &str =
    "exec 3>/dev/watchdog; printf x >&3; echo TANDEM-LAST-PET > /dev/ttyS0; exec sleep 100000";

fn arm_and_wait_for_reset(g: &Guest, label: &str) -> Result<()> {
    g.spawn(ARM_AND_STOP_PETTING)?;
    let armed = Instant::now();
    let ev = g.wait_event("RESET", Duration::from_secs(120))?;
    report_timing(
        &format!("{label}: last pet -> QMP RESET"),
        ev.received - armed,
    );
    println!("QMP RESET event: {:?}", ev.data);
    let again = g.wait_ready()?;
    report_timing(&format!("{label}: RESET -> ready again"), again);
    assert_eq!(
        g.boots(),
        2,
        "the guest booted a second time after the reset"
    );
    assert!(g.console().contains("TANDEM-LAST-PET"));
    Ok(())
}

#[test]
#[ignore = "needs the QEMU lab: hw-tests/lab/lab.sh build"]
fn softdog_resets_the_guest() {
    let Some(lab) = Lab::acquire_or_skip("softdog_resets_the_guest") else {
        return;
    };
    let run = || -> Result<()> {
        let g = lab.guest("wd-soft").start()?;
        timed("softdog: boot to ready", || g.wait_ready())?;
        let info = g.run(
            "modprobe softdog soft_margin=10 && cat /sys/class/watchdog/watchdog0/identity \
             /sys/class/watchdog/watchdog0/timeout",
        )?;
        println!("{info}");
        assert!(info.contains("Software Watchdog"), "{info}");
        assert!(
            info.lines().any(|l| l.trim() == "10"),
            "timeout 10 s: {info}"
        );
        arm_and_wait_for_reset(&g, "softdog")
    };
    if let Err(e) = run() {
        panic!("{e}");
    }
}

#[test]
#[ignore = "needs the QEMU lab: hw-tests/lab/lab.sh build"]
fn i6300esb_resets_the_guest() {
    let Some(lab) = Lab::acquire_or_skip("i6300esb_resets_the_guest") else {
        return;
    };
    let run = || -> Result<()> {
        let g = lab.guest("wd-esb").watchdog(Watchdog::I6300esb).start()?;
        timed("i6300esb: boot to ready", || g.wait_ready())?;
        // udev loaded i6300esb with its 30 s default; reload it with a 10 s heartbeat
        let info = g.run(
            "modprobe -r i6300esb; modprobe i6300esb heartbeat=10 && \
             cat /sys/class/watchdog/watchdog0/identity /sys/class/watchdog/watchdog0/timeout",
        )?;
        println!("{info}");
        assert!(info.contains("i6300ESB"), "{info}");
        assert!(
            info.lines().any(|l| l.trim() == "10"),
            "heartbeat 10 s: {info}"
        );
        arm_and_wait_for_reset(&g, "i6300esb")?;
        let wd = g
            .events()
            .into_iter()
            .find(|e| e.name == "WATCHDOG")
            .expect("QMP WATCHDOG event before the reset");
        assert_eq!(wd.data["action"], "reset", "{:?}", wd.data);
        Ok(())
    };
    if let Err(e) = run() {
        panic!("{e}");
    }
}
