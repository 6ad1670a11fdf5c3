//! A simulated BMC for tests: OpenIPMI's `ipmi_sim`, started by
//! `scripts/ipmi-sim.sh`, whose "machine" is a power file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tandem_fence::config::HumanDuration;
use tandem_fence::ipmi::IpmiConfig;
use tandem_fence::PowerState;

/// One ipmi_sim BMC, stopped on drop.
pub struct Bmc {
    /// Its working directory (config, power file, logs).
    pub dir: tempfile::TempDir,
    /// Its UDP port on 127.0.0.1.
    pub port: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ipmi-sim.sh")
}

/// A UDP port on 127.0.0.1 that is free now.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Bmc {
    /// Starts one (users `admin` and `oper`, see the script).
    pub fn start() -> Bmc {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            let port = free_udp_port();
            let out = Command::new("bash")
                .arg(script())
                .args(["start"])
                .arg(dir.path())
                .arg(port.to_string())
                .output()
                .expect("running scripts/ipmi-sim.sh");
            if out.status.success() {
                return Bmc { dir, port };
            }
            eprintln!(
                "ipmi-sim.sh failed on port {port}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!("cannot start ipmi_sim (is openipmi installed? run scripts/setup.sh ipmi)");
    }

    /// The power state as the simulated machine has it (not through IPMI).
    pub fn machine_power(&self) -> PowerState {
        match std::fs::read_to_string(self.dir.path().join("power"))
            .unwrap()
            .trim()
        {
            "1" => PowerState::On,
            "0" => PowerState::Off,
            other => panic!("power file says {other:?}"),
        }
    }

    /// Switches the simulated machine on or off behind the BMC's back.
    pub fn set_machine_power(&self, on: bool) {
        std::fs::write(
            self.dir.path().join("power"),
            if on { "1\n" } else { "0\n" },
        )
        .unwrap();
    }

    /// Chassis control calls ipmi_sim made, e.g. "set power 0".
    pub fn chassis_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("chassis.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()))
            .collect()
    }

    /// The power changes the BMC was asked for ("set power 0" = off).
    pub fn sets(&self) -> Vec<String> {
        self.chassis_log()
            .into_iter()
            .filter(|l| l.starts_with("set"))
            .collect()
    }

    /// Makes the BMC lie: it accepts "power off" and the machine stays on.
    pub fn lie(&self) {
        std::fs::write(self.dir.path().join("lying"), "").unwrap();
    }

    /// Writes a 0600 password file named `name` in its directory.
    pub fn password_file(&self, name: &str, password: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// An `[[nodes.X.fence]]` IPMI level for this BMC.
    pub fn config(&self, user: &str, password: &str) -> IpmiConfig {
        IpmiConfig {
            host: "127.0.0.1".into(),
            port: Some(self.port),
            username: user.into(),
            password_file: Some(self.password_file(&format!("{user}.pw"), password)),
            password_env: None,
            cipher_suite: None,
            privilege: None,
            power_timeout: None,
            timeout: Some(HumanDuration(Duration::from_millis(500))),
            attempts: Some(2),
        }
    }

    /// The BMC's count of open sessions, as `ipmitool session info active`
    /// reports it (ipmitool's own session included).
    pub fn active_sessions(&self) -> usize {
        let info = self.ipmitool(&["session", "info", "active"]);
        info.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "active sessions").then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no session count in {info}"))
    }

    /// Runs `ipmitool` against it and returns its output.
    pub fn ipmitool(&self, args: &[&str]) -> String {
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "admin", "-P", "secret"])
            .args(args)
            .output()
            .expect("ipmitool");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
