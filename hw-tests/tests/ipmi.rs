//! IPMI-over-LAN fencing: OpenIPMI's `ipmi_sim` is the BMC of a guest and owns its power; the host
//! fences it with `ipmitool -I lanplus chassis power off` and brings it back with `power on`.
//!
//! Run with `cargo test -p tandem-hw-tests -- --include-ignored --nocapture` after
//! `hw-tests/lab/lab.sh build`.

use std::time::Duration;
use tandem_hw_tests::{timed, Error, Lab, PowerState, Result, GIB};

#[test]
#[ignore = "needs the QEMU lab: hw-tests/lab/lab.sh build"]
fn ipmi_power_off_and_on() {
    let Some(lab) = Lab::acquire_or_skip("ipmi_power_off_and_on") else {
        return;
    };
    if let Err(e) = lab.require_ipmi() {
        println!("SKIP ipmi_power_off_and_on: {e}");
        return;
    }
    if let Err(e) = scenario(&lab) {
        panic!("{e}");
    }
}

fn scenario(lab: &Lab) -> Result<()> {
    let g = lab.guest("bmc").disk(GIB).ipmi_bmc().start()?;
    timed("ipmi: BMC start + boot to ready", || g.wait_ready())?;
    let bmc = g
        .bmc()
        .ok_or_else(|| Error::Config("guest has no BMC".into()))?;
    println!("ipmitool {}", bmc.ipmitool_args().join(" "));
    assert_eq!(bmc.power_status()?, PowerState::On);

    // the guest sees the same BMC through its KCS interface
    let mc = g.run("modprobe ipmi_si && modprobe ipmi_devintf && sleep 1 && ipmitool mc info")?;
    assert!(mc.contains("IPMI Version"), "{mc}");

    g.run("zpool create -f tank /dev/vda && echo survived > /tank/f && zpool sync tank")?;

    // fence: power off ends the QEMU process
    let pid = g.pid().ok_or_else(|| Error::Config("no QEMU pid".into()))?;
    timed("ipmi: power off command", || bmc.power("off"))?;
    let gone = g.wait_stopped(Duration::from_secs(60))?;
    tandem_hw_tests::report_timing(
        "ipmi: power off -> QEMU gone (after ipmitool returned)",
        gone,
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || !g.is_running(),
        "QEMU {pid} still running"
    );
    assert_eq!(bmc.power_status()?, PowerState::Off);

    // power on boots it again, with its disk
    timed("ipmi: power on -> ready", || -> Result<()> {
        bmc.power("on")?;
        g.wait_ready()?;
        Ok(())
    })?;
    assert_eq!(bmc.power_status()?, PowerState::On);
    assert_eq!(g.boots(), 2);
    let new_pid = g
        .pid()
        .ok_or_else(|| Error::Config("no QEMU pid after power on".into()))?;
    assert_ne!(pid, new_pid, "a new QEMU process");
    assert_eq!(g.run("zpool import tank && cat /tank/f")?, "survived\n");
    Ok(())
}
