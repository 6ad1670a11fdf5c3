//! `tandem fence` against a simulated BMC (OpenIPMI's ipmi_sim): the exit
//! codes, the checklist, confirmation, bad credentials and bad configs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tandem_fence::PowerState;
use tandem_testkit::bmc::Bmc;

struct Setup {
    bmc: Bmc,
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn ipmi_level(host_port: u16, user: &str, pw: &Path) -> String {
    format!(
        "[[nodes.oracle.fence]]\nkind = \"ipmi\"\nhost = \"127.0.0.1\"\nport = {host_port}\n\
         username = \"{user}\"\npassword_file = \"{}\"\ntimeout = \"300ms\"\nattempts = 2\n\
         power_timeout = \"5s\"\n",
        pw.display()
    )
}

fn setup(levels: impl FnOnce(&Bmc, &Path) -> String) -> Setup {
    let bmc = Bmc::start();
    let dir = tempfile::tempdir().unwrap();
    let fence = levels(&bmc, dir.path());
    let text = format!(
        "state_dir = \"{}/state\"\nlocal_node = \"trinity\"\n[nodes.trinity]\naddress = \"local\"\n\
         [nodes.oracle]\naddress = \"10.0.0.1\"\n{fence}",
        dir.path().display()
    );
    let config = dir.path().join("tandem.toml");
    std::fs::write(&config, text).unwrap();
    Setup { bmc, dir, config }
}

fn standard(bmc: &Bmc, dir: &Path) -> String {
    let pw = dir.join("oracle.ipmi");
    std::fs::write(&pw, "opsecret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    ipmi_level(bmc.port, "oper", &pw)
}

impl Setup {
    fn tandem(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn status_off_on_follow_the_fence_agents_exit_codes() {
    let s = setup(standard);
    let o = s.tandem(&["fence", "status", "oracle"]);
    assert_eq!(o.status.code(), Some(0), "on = 0: {}", text(&o));
    assert!(text(&o).contains("oracle: power is on (level 1 ipmi 127.0.0.1:"));

    let o = s.tandem(&["fence", "off", "oracle", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("powered off, confirmed off"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("oracle: fenced: power is off"));
    assert_eq!(s.bmc.machine_power(), PowerState::Off);

    let o = s.tandem(&["fence", "status", "oracle", "--json"]);
    assert_eq!(o.status.code(), Some(2), "off = 2: {}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["power"], "off");
    assert_eq!(v["levels"][0]["kind"], "ipmi");

    // Fencing again: already off, nothing sent.
    let o = s.tandem(&["fence", "off", "oracle", "--yes", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["attempts"][0]["outcome"], "already_off");
    assert_eq!(s.bmc.sets(), vec!["set power 0"]);

    let o = s.tandem(&["fence", "on", "oracle", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(s.bmc.machine_power(), PowerState::On);

    let o = s.tandem(&["fence", "reboot", "oracle", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        s.bmc.sets(),
        vec!["set power 0", "set power 1", "set power 0", "set power 1"]
    );
}

#[test]
fn destructive_actions_need_yes_off_a_terminal() {
    let s = setup(standard);
    for action in ["off", "on", "reboot"] {
        let o = s.tandem(&["fence", action, "oracle"]);
        assert_eq!(o.status.code(), Some(1), "{action}: {}", text(&o));
        assert!(text(&o).contains("without --yes"), "{}", text(&o));
    }
    let o = s.tandem(&["fence", "test", "oracle", "--power-cycle"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(s.bmc.sets().is_empty(), "nothing was switched");
    assert_eq!(s.bmc.machine_power(), PowerState::On);
}

#[test]
fn fence_test_prints_the_checklist_and_the_drill() {
    let s = setup(standard);
    let o = s.tandem(&["fence", "test", "oracle"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for line in [
        "oracle: fence level 1 (ipmi 127.0.0.1:",
        "[ ok ] reach 127.0.0.1:",
        "[ ok ] cipher suite",
        "[ ok ] authenticate as \"oper\"",
        "[ ok ] privilege",
        "[ ok ] identify the BMC",
        "[ ok ] read power state",
        "all 1 fence level(s) passed the checklist",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    assert!(s.bmc.sets().is_empty(), "the checklist switches nothing");

    let o = s.tandem(&[
        "fence",
        "test",
        "oracle",
        "--power-cycle",
        "--yes",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"power off, confirmed off"), "{names:?}");
    assert!(names.contains(&"power on, confirmed on"), "{names:?}");
    assert_eq!(s.bmc.sets(), vec!["set power 0", "set power 1"]);
    assert_eq!(s.bmc.machine_power(), PowerState::On);
}

#[test]
fn a_dead_first_level_falls_through_to_the_second() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_port = silent.local_addr().unwrap().port();
    let s = setup(|bmc, dir| {
        let pw = dir.join("pw");
        std::fs::write(&pw, "opsecret").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        format!(
            "{}{}",
            ipmi_level(dead_port, "oper", &pw),
            ipmi_level(bmc.port, "oper", &pw)
        )
    });
    let o = s.tandem(&["fence", "off", "oracle", "--yes", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["attempts"][0]["error_kind"], "timeout");
    assert_eq!(v["attempts"][1]["outcome"], "powered_off");
    assert_eq!(s.bmc.machine_power(), PowerState::Off);
}

#[test]
fn no_level_confirming_is_a_failure_and_says_not_fenced() {
    let s = setup(standard);
    s.bmc.lie();
    let o = s.tandem(&["fence", "off", "oracle", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("NOT fenced"), "{}", text(&o));
    assert!(text(&o).contains("power still on"), "{}", text(&o));
}

#[test]
fn bad_credentials_and_configs_are_named_and_change_nothing() {
    // A password file others can read is refused before any packet.
    let s = setup(|bmc, dir| {
        let pw = dir.join("oracle.ipmi");
        std::fs::write(&pw, "opsecret").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        ipmi_level(bmc.port, "oper", &pw)
    });
    let o = s.tandem(&["fence", "off", "oracle", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(out.contains("oracle.ipmi") && out.contains("0644"), "{out}");
    assert!(out.contains("nodes.oracle.fence[1] (ipmi)"), "{out}");
    assert!(!out.contains("opsecret"));
    assert!(s.bmc.chassis_log().is_empty(), "the BMC was not even asked");

    // A wrong password: authentication failed, exit 1 (not 2 = "off").
    let s = setup(|bmc, dir| {
        let pw = dir.join("pw");
        std::fs::write(&pw, "wrong").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        ipmi_level(bmc.port, "oper", &pw)
    });
    let o = s.tandem(&["fence", "status", "oracle"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("authentication failed"), "{}", text(&o));
    let o = s.tandem(&["fence", "off", "oracle", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(s.bmc.machine_power(), PowerState::On);

    // Unknown node, node without levels, unknown kind, unknown key.
    let o = s.tandem(&["fence", "status", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("no node named \"nosuch\""),
        "{}",
        text(&o)
    );
    let o = s.tandem(&["fence", "status", "trinity"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("has no fence levels"), "{}", text(&o));
    for (bad, words) in [
        ("kind = \"ipmi\"", vec!["kind = \"ilo\"", "ilo"]),
        ("attempts = 2", vec!["atempts = 2", "atempts"]),
        ("timeout = \"300ms\"", vec!["timeout = \"soon\"", "soon"]),
    ] {
        let t = std::fs::read_to_string(&s.config).unwrap();
        let broken = t.replace(bad, words[0]);
        let p = s.dir.path().join("broken.toml");
        std::fs::write(&p, broken).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(&p)
            .args(["fence", "status", "oracle"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{bad}");
        let out = text(&o);
        assert!(
            out.contains(words[1]) && out.contains("broken.toml"),
            "{out}"
        );
    }
}
