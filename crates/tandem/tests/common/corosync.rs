//! A real corosync cluster in network namespaces (scripts/corosync-lab.sh),
//! for the tests that need corosync's membership: the quorum gate and
//! automatic failover.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};
/// Generous: corosync notices a lost node within token + consensus (about
/// 2.5 s here), but the build machine is shared and slow.
pub const PATIENCE: Duration = Duration::from_secs(45);

/// scripts/corosync-lab.sh.
pub fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/corosync-lab.sh")
}

/// Can a lab run here (root, corosync)? Skips or fails per
/// `TANDEM_TEST_REQUIRE_COROSYNC`.
pub fn corosync_available() -> bool {
    let installed = Path::new("/usr/sbin/corosync").exists();
    let root = nix::unistd::geteuid().is_root();
    if installed && root {
        return true;
    }
    let why = if root {
        "corosync is not installed (scripts/setup.sh corosync)"
    } else {
        "network namespaces need root"
    };
    assert!(
        std::env::var_os("TANDEM_TEST_REQUIRE_COROSYNC").is_none(),
        "corosync is required (TANDEM_TEST_REQUIRE_COROSYNC) but {why}"
    );
    eprintln!("SKIP: {why}");
    false
}

/// A running three-node corosync cluster; torn down on drop.
pub struct Lab {
    /// The lab directory.
    pub dir: PathBuf,
    /// Its namespaces' prefix.
    pub prefix: String,
}

impl Lab {
    pub fn up(dir: &Path) -> Lab {
        Self::up_with(dir, 3)
    }
    /// A lab of `nodes` (2 or 3) nodes.
    pub fn up_with(dir: &Path, nodes: u8) -> Lab {
        Self::up_opts(dir, nodes, false)
    }
    /// A two-node lab whose tie-breaker is a QDevice (qnetd on the switch).
    pub fn up_qdevice(dir: &Path) -> Lab {
        Self::up_opts(dir, 2, true)
    }
    fn up_opts(dir: &Path, nodes: u8, qdevice: bool) -> Lab {
        let prefix = format!("tq{}", std::process::id() % 100_000);
        let lab = Lab {
            dir: dir.to_owned(),
            prefix: prefix.clone(),
        };
        let o = Command::new("bash")
            .arg(lab_script())
            .args(["up", dir.to_str().unwrap(), &prefix])
            .env("TANDEM_LAB_NODES", nodes.to_string())
            .env("TANDEM_LAB_QDEVICE", if qdevice { "1" } else { "0" })
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "corosync lab did not come up: {}",
            text(&o)
        );
        lab
    }
    pub fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(lab_script())
            .args(args)
            .output()
            .unwrap()
    }
    pub fn node_cmd(&self, n: u8, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}-n{n}", self.prefix))
            .arg(program);
        c
    }
    pub fn quorate(&self, n: u8) -> bool {
        let o = self
            .node_cmd(n, "corosync-quorumtool")
            .arg("-s")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Quorate:", "Yes"])
    }
    pub fn cable(&self, n: u8, plugged: bool) {
        let what = if plugged { "heal" } else { "cut" };
        let o = self.script(&[what, self.dir.to_str().unwrap(), &n.to_string()]);
        assert!(o.status.success(), "{what} {n}: {}", text(&o));
    }
    pub fn conf(&self, n: u8) -> PathBuf {
        self.dir.join(format!("n{n}/corosync.conf"))
    }
    /// Stops (`false`) or starts node `n`'s corosync.
    pub fn corosync(&self, n: u8, running: bool) {
        let what = if running { "start" } else { "stop" };
        let o = self.script(&[what, self.dir.to_str().unwrap(), &n.to_string()]);
        assert!(o.status.success(), "{what} {n}: {}", text(&o));
    }
}

impl Lab {
    /// Starts node `n`'s BMC (ipmi_sim on the switch, 10.77.0.10N:623,
    /// admin/secret); powering it off kills everything in the node.
    pub fn bmc(&self, n: u8) {
        let o = self.script(&["bmc", self.dir.to_str().unwrap(), &n.to_string()]);
        assert!(o.status.success(), "bmc {n}: {}", text(&o));
    }
    /// The BMC's address.
    pub fn bmc_host(n: u8) -> String {
        format!("10.77.0.{}", 100 + u16::from(n))
    }
    /// What node `n`'s BMC says the power is (its chassis file).
    pub fn powered(&self, n: u8) -> bool {
        std::fs::read_to_string(self.dir.join(format!("bmc{n}/power")))
            .unwrap()
            .trim()
            == "1"
    }
    /// The chassis calls node `n`'s BMC got ("get power", "set power 0").
    pub fn chassis_log(&self, n: u8) -> String {
        std::fs::read_to_string(self.dir.join(format!("bmc{n}/chassis.log"))).unwrap_or_default()
    }
    /// `ipmitool chassis power ACTION` against node `n`'s BMC, from the
    /// switch (as an admin's workstation on the management network would).
    pub fn ipmitool(&self, n: u8, action: &str) -> Output {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}-sw", self.prefix));
        c.args(["ipmitool", "-I", "lanplus", "-C", "3", "-H"])
            .arg(Self::bmc_host(n))
            .args([
                "-p", "623", "-U", "admin", "-P", "secret", "chassis", "power", action,
            ]);
        c.output().unwrap()
    }
    /// Makes node `n`'s BMC hang (`false`: answer again).
    pub fn bmc_hang(&self, n: u8, hang: bool) {
        let pid = std::fs::read_to_string(self.dir.join(format!("bmc{n}/ipmi_sim.pid"))).unwrap();
        let sig = if hang { "-STOP" } else { "-CONT" };
        let o = Command::new("kill")
            .args([sig, pid.trim()])
            .output()
            .unwrap();
        assert!(o.status.success(), "kill {sig}: {}", text(&o));
    }
    /// Cuts corosync between nodes `a` and `b` (`false`: restores it);
    /// both still reach the switch (the BMCs, the qnetd).
    pub fn split(&self, a: u8, b: u8, cut: bool) {
        let what = if cut { "split" } else { "unsplit" };
        let o = self.script(&[
            what,
            self.dir.to_str().unwrap(),
            &a.to_string(),
            &b.to_string(),
        ]);
        assert!(o.status.success(), "{what} {a} {b}: {}", text(&o));
    }
    /// Does anything still run in node `n` (its corosync, daemon, hooks)?
    pub fn alive(&self, n: u8) -> bool {
        let o = Command::new("ip")
            .args(["netns", "pids", &format!("{}-n{n}", self.prefix)])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&o.stdout).trim().is_empty()
    }
    /// What a BMC does to node `n`, without the BMC: `false` kills every
    /// process in the node (as a reset by its watchdog would), `true`
    /// starts its corosync.
    pub fn power(&self, n: u8, on: bool) {
        let v = if on { "1" } else { "0" };
        let o = self.script(&["power", self.dir.to_str().unwrap(), &n.to_string(), v]);
        assert!(o.status.success(), "power {n} {v}: {}", text(&o));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.script(&["down", self.dir.to_str().unwrap()]);
    }
}

/// A command's stdout and stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits for `f`, returning how long it took.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < PATIENCE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}
