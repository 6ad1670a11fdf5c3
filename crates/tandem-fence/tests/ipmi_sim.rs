//! The IPMI backend against a real BMC implementation: OpenIPMI's
//! `ipmi_sim` on loopback (started by `scripts/ipmi-sim.sh`), with
//! `ipmitool` and `fence_ipmilan` as cross-checks that the simulator
//! behaves like a BMC and agrees with what tandem reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use tandem_fence::ipmi::crypto::Suite;
use tandem_fence::ipmi::{self, LanSession, Privilege};
use tandem_fence::level::{
    fence_node, power_off_confirmed, power_on_confirmed, reboot_confirmed, Level, DEFAULT_POLL,
};
use tandem_fence::{FenceAgent, FenceError, FenceOutcome, PowerAction, PowerState};

const POWER_TIMEOUT: Duration = Duration::from_secs(10);

use tandem_testkit::bmc::{free_udp_port, Bmc};

#[tokio::test]
async fn status_off_on_reboot_against_ipmi_sim() {
    let bmc = Bmc::start();
    let agent = bmc.config("admin", "secret").agent("test level").unwrap();
    assert_eq!(agent.status().await.unwrap(), PowerState::On);

    let out = power_off_confirmed(&agent, POWER_TIMEOUT, DEFAULT_POLL)
        .await
        .unwrap();
    assert_eq!(out, FenceOutcome::PoweredOff);
    assert_eq!(bmc.machine_power(), PowerState::Off, "the machine is off");
    assert!(bmc
        .ipmitool(&["chassis", "power", "status"])
        .contains("Power is off"));
    assert_eq!(bmc.sets(), vec!["set power 0"]);

    // Fencing an off node sends nothing.
    let out = power_off_confirmed(&agent, POWER_TIMEOUT, DEFAULT_POLL)
        .await
        .unwrap();
    assert_eq!(out, FenceOutcome::AlreadyOff);
    assert_eq!(bmc.sets().len(), 1, "no command to a node that is off");

    assert!(power_on_confirmed(&agent, POWER_TIMEOUT, DEFAULT_POLL)
        .await
        .unwrap());
    assert_eq!(bmc.machine_power(), PowerState::On);

    reboot_confirmed(&agent, POWER_TIMEOUT, DEFAULT_POLL)
        .await
        .unwrap();
    assert_eq!(bmc.machine_power(), PowerState::On);
    assert_eq!(
        bmc.sets(),
        vec!["set power 0", "set power 1", "set power 0", "set power 1"],
        "a reboot is off then on, never a power cycle"
    );
}

#[tokio::test]
async fn fence_ipmilan_and_ipmitool_agree_with_tandem() {
    let bmc = Bmc::start();
    let agent = bmc.config("admin", "secret").agent("test level").unwrap();
    let fence_ipmilan = |action: &str| {
        let out = Command::new("fence_ipmilan")
            .args(["--ip", "127.0.0.1", "--ipport"])
            .arg(bmc.port.to_string())
            .args([
                "--username",
                "admin",
                "--password",
                "secret",
                "--lanplus",
                "--cipher=3",
            ])
            .args(["--action", action])
            .output()
            .expect("fence_ipmilan (Debian fence-agents; scripts/setup.sh ipmi)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(fence_ipmilan("status").contains("Status: ON"));
    power_off_confirmed(&agent, POWER_TIMEOUT, DEFAULT_POLL)
        .await
        .unwrap();
    assert!(fence_ipmilan("status").contains("Status: OFF"));
    assert!(bmc
        .ipmitool(&["chassis", "power", "status"])
        .contains("Power is off"));
    bmc.set_machine_power(true);
    assert_eq!(agent.status().await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn an_operator_only_user_can_fence() {
    let bmc = Bmc::start();
    let agent = bmc.config("oper", "opsecret").agent("test level").unwrap();
    let out = power_off_confirmed(&agent, POWER_TIMEOUT, DEFAULT_POLL)
        .await
        .unwrap();
    assert_eq!(out, FenceOutcome::PoweredOff);
    assert_eq!(bmc.machine_power(), PowerState::Off);
}

#[tokio::test]
async fn chassis_control_needs_the_raised_session_privilege() {
    // A session starts at User privilege; Chassis Control then fails with
    // completion code 0xD4 (what ipmi-rs 0.6 runs into, as it never sends
    // Set Session Privilege Level). tandem raises it; here we do not.
    let bmc = Bmc::start();
    let password = tandem_fence::Secret::new("opsecret");
    let mut s = LanSession::connect("127.0.0.1", bmc.port, Duration::from_secs(1), 2).unwrap();
    s.open(Suite::S3, "oper", &password, Privilege::User)
        .unwrap();
    assert_eq!(s.session(), Some((3, Privilege::User)));
    let err = ipmi::chassis_control(&mut s, PowerAction::Off).unwrap_err();
    assert!(matches!(err, FenceError::Privilege { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("insufficient privilege level (completion code 0xd4)"),
        "{err}"
    );
    assert_eq!(
        ipmi::chassis_status(&mut s).unwrap(),
        PowerState::On,
        "reading is allowed"
    );
    assert_eq!(bmc.machine_power(), PowerState::On, "nothing switched");
    s.open(Suite::S3, "oper", &password, Privilege::Operator)
        .unwrap();
    assert_eq!(s.session(), Some((3, Privilege::Operator)));
    ipmi::chassis_control(&mut s, PowerAction::Off).unwrap();
    assert_eq!(bmc.machine_power(), PowerState::Off);
    assert_eq!(bmc.active_sessions(), 2, "ours and ipmitool's");
    s.close();
    assert_eq!(s.session(), None);
    assert_eq!(bmc.active_sessions(), 1, "ours is closed");
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_failure() {
    let bmc = Bmc::start();
    let agent = bmc
        .config("admin", "not-the-password")
        .agent("test level")
        .unwrap();
    let err = agent.status().await.unwrap_err();
    assert!(matches!(err, FenceError::Auth { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{}", bmc.port)), "{msg}");
    assert!(msg.contains("authentication failed"), "{msg}");
    assert!(!msg.contains("not-the-password"));
    assert!(!format!("{agent:?}").contains("not-the-password"));
    let err = bmc
        .config("nobody", "x")
        .agent("l")
        .unwrap()
        .status()
        .await
        .unwrap_err();
    assert!(
        matches!(err, FenceError::Auth { .. }),
        "unknown user: {err}"
    );
}

#[tokio::test]
async fn unreachable_and_silent_bmcs_are_errors_naming_the_host() {
    // Nothing listens: the kernel answers with ICMP port unreachable.
    let port = free_udp_port();
    let bmc = Bmc::start();
    let mut cfg = bmc.config("admin", "secret");
    cfg.port = Some(port);
    let err = cfg.agent("l").unwrap().status().await.unwrap_err();
    assert!(
        matches!(
            err,
            FenceError::Unreachable { .. } | FenceError::Timeout { .. }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    // Something listens and never answers: a timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    cfg.port = Some(silent.local_addr().unwrap().port());
    let err = cfg.agent("l").unwrap().status().await.unwrap_err();
    assert!(matches!(err, FenceError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("no answer within"), "{err}");
}

#[tokio::test]
async fn a_bmc_that_accepts_off_but_stays_on_is_a_failed_fence() {
    let bmc = Bmc::start();
    bmc.lie();
    let agent = bmc.config("admin", "secret").agent("test level").unwrap();
    let err = power_off_confirmed(&agent, Duration::from_secs(2), DEFAULT_POLL)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FenceError::PowerTimeout {
                state: PowerState::On,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(bmc.sets(), vec!["set power 0"], "the command was sent");
    let report = fence_node(
        "liar",
        &[Level {
            agent: Box::new(agent),
            power_timeout: Duration::from_secs(1),
            poll: DEFAULT_POLL,
        }],
    )
    .await;
    assert!(!report.is_fenced());
}

#[tokio::test]
async fn a_hundred_fence_operations_leave_no_session_open() {
    let bmc = Bmc::start();
    // The users have 10 session slots each: a leak would exhaust them.
    for i in 0..100 {
        let agent = bmc.config("oper", "opsecret").agent("l").unwrap();
        if i % 2 == 0 {
            power_off_confirmed(&agent, POWER_TIMEOUT, DEFAULT_POLL)
                .await
                .unwrap();
        } else {
            power_on_confirmed(&agent, POWER_TIMEOUT, DEFAULT_POLL)
                .await
                .unwrap();
        }
    }
    assert_eq!(bmc.machine_power(), PowerState::On);
    // ipmitool's own session is the only one.
    assert_eq!(
        bmc.active_sessions(),
        1,
        "only ipmitool's own session is open"
    );
    // Wrong passwords must not leak half-open sessions either.
    for _ in 0..15 {
        let agent = bmc.config("oper", "wrong").agent("l").unwrap();
        assert!(agent.status().await.is_err());
    }
    let agent = bmc.config("oper", "opsecret").agent("l").unwrap();
    assert_eq!(agent.status().await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn the_checklist_reaches_authenticates_and_reads_without_switching() {
    let bmc = Bmc::start();
    let agent = bmc.config("oper", "opsecret").agent("test level").unwrap();
    let checks = agent.check().await;
    for c in &checks {
        eprintln!(
            "{} {:<28} {} ({:?})",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.detail,
            c.elapsed
        );
    }
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert!(names[0].starts_with("reach 127.0.0.1:"));
    assert!(names.contains(&"privilege"));
    let suite = checks.iter().find(|c| c.name == "cipher suite").unwrap();
    assert!(
        suite.detail.ends_with("using 3"),
        "ipmi_sim has no suite 17: {}",
        suite.detail
    );
    let power = checks
        .iter()
        .find(|c| c.name == "read power state")
        .unwrap();
    assert_eq!(power.detail, "on");
    assert!(bmc.sets().is_empty(), "the checklist switched nothing");

    let bad = bmc.config("oper", "nope").agent("l").unwrap().check().await;
    assert!(!bad.last().unwrap().ok);
    assert!(bad.last().unwrap().name.starts_with("authenticate"));
}
