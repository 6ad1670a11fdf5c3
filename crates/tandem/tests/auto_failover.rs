//! Automatic failover against the real parts: a three-node corosync cluster
//! in network namespaces (scripts/corosync-lab.sh), an ipmi_sim BMC per
//! node on the "management network" (the switch), zfs-fuse pools, and the
//! real `tandem daemon` on nodes n1 (the primary) and n2 (the replica),
//! each entered with `nsenter --net` so that it talks to its own node's
//! corosync. Job `j` replicates n1 → n2 every 2 s with `failover = "auto"`;
//! every node has two fence levels, IPMI first, then the watchdog level.
//!
//! Powering a node off through its BMC kills every process in its
//! namespace (corosync, daemon, hooks): the machine is gone. Each test
//! asserts what the issue asks, on the pools and the BMCs:
//!
//! - n1 powered off: n2 fences (the BMC says off), promotes, runs
//!   `on_promote`, by itself; n1 powered back on is refused as primary, and
//!   `tandem reverse` makes it follow, keeping what it wrote after the last
//!   sync;
//! - n1's cable cut, BMC reachable: n1 stops petting its watchdog; n2
//!   powers it off through IPMI (the chassis log shows the "set power 0")
//!   and promotes;
//! - n1's cable cut and its BMC hung: the IPMI level fails, the watchdog
//!   level waits out timeout + margin of absence, then n2 promotes;
//! - n2 cut off (the minority): nothing happens, for longer than the delay;
//! - n1 back within `failover_delay`: nothing happens;
//! - `failover --test` on n2 while the daemons replicate: the replica, the
//!   primary and the next cycles are unchanged, the clones are gone.
//!
//! `TANDEM_RTO_OUT=FILE` makes the first three append their measured times
//! (power cut → replica writable, → hook started) to FILE as JSON lines:
//! benches/failover.sh runs them ten times each that way. The tests
//! themselves assert outcomes, never durations — except the lower bound of
//! the watchdog level, which is a safety property, not a speed.
//!
//! Needs root, corosync, ipmi_sim and ZFS (scripts/setup.sh zfs ipmi
//! corosync); skips with a note otherwise, unless the
//! `TANDEM_TEST_REQUIRE_*` variables say they are required.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::corosync::*;
use common::*;
use tandem_testkit::fake_mux::FakeMux;

/// The watchdog level of every node: the node resets itself within
/// `timeout` of losing quorum, `margin` is added for safety.
const WD_TIMEOUT_S: u64 = 2;
const WD_MARGIN_S: u64 = 1;

fn ipmi_available() -> bool {
    let ok = Path::new("/usr/bin/ipmi_sim").exists() && Path::new("/usr/bin/ipmitool").exists();
    if !ok {
        assert!(
            std::env::var_os("TANDEM_TEST_REQUIRE_IPMI").is_none(),
            "ipmi_sim is required (TANDEM_TEST_REQUIRE_IPMI) but not installed"
        );
        eprintln!("SKIP: ipmi_sim is not installed (scripts/setup.sh ipmi)");
    }
    ok
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A `tandem daemon` in a lab node, holding a fake watchdog-mux.
struct Daemon {
    child: Child,
    log: PathBuf,
    mux: FakeMux,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Measured times of one failover, in seconds from the fault.
struct Rto {
    writable: f64,
    hook: f64,
    /// Something of n1 still ran when the replica became writable.
    unfenced: bool,
}

/// The cluster of one test.
struct Cluster {
    // Field order is drop order: daemons before the lab, pools last.
    daemons: [Option<Daemon>; 3],
    lab: Lab,
    dir: PathBuf,
    src: String,
    dst: String,
    nodes: u8,
    both_ways: bool,
    pve: bool,
    _a: Pool,
    _b: Pool,
}

/// The shape of a test's cluster.
struct Opts {
    /// failover_delay of every job.
    delay: String,
    /// 3, or 2 (`two_node: 1`, unless `qdevice`).
    nodes: u8,
    /// A two-node cluster with a QDevice as its tie-breaker.
    qdevice: bool,
    /// Also job `k`, n2 → n1: each node is the other's replica.
    both_ways: bool,
    /// Job j carries guest vm:100, and `[pve] root` is DIR/pve.
    pve: bool,
}

impl Opts {
    fn three(delay: &str) -> Opts {
        Opts {
            delay: delay.into(),
            nodes: 3,
            qdevice: false,
            both_ways: false,
            pve: false,
        }
    }
    fn two(delay: &str, qdevice: bool) -> Opts {
        Opts {
            delay: delay.into(),
            nodes: 2,
            qdevice,
            both_ways: true,
            pve: false,
        }
    }
}

/// The extra wait of the node whose name sorts last, in a two-node
/// cluster without a tie-breaker (`[ha] two_node_delay`).
const TWO_NODE_DELAY_S: u64 = 8;

impl Cluster {
    /// Lab, BMCs, pools, one replicated cycle, daemons on n1 and n2 (n3
    /// only votes), and n2's watcher watching n1.
    fn new(dir: &Path, delay: &str) -> Cluster {
        Self::with(dir, &Opts::three(delay))
    }

    fn with(dir: &Path, o: &Opts) -> Cluster {
        let lab = if o.qdevice {
            Lab::up_qdevice(&dir.join("lab"))
        } else {
            Lab::up_with(&dir.join("lab"), o.nodes)
        };
        for n in 1..=o.nodes {
            lab.bmc(n);
        }
        let (a, b) = (Pool::new("ha"), Pool::new("hb"));
        let (src, dst) = (a.ds("vm"), b.ds("vm"));
        zfs(&["create", &src]);
        std::fs::write(mnt(&src).join("data"), "written on n1\n").unwrap();
        if o.both_ways {
            zfs(&["create", &b.ds("ct")]);
            std::fs::write(mnt(&b.ds("ct")).join("data"), "written on n2\n").unwrap();
        }
        let pw = dir.join("bmc.pass");
        std::fs::write(&pw, "secret\n").unwrap();
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        // The hook "starts the workload": it needs the promoted dataset
        // writable, and says when and with what it ran (hook-started-JOB,
        // hook-env-JOB; hook-started last, so that it means both are there).
        let hook = dir.join("on-promote");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh
d={d}
                 t=$(date +%s.%N)
                 env | grep '^TANDEM_' | sort > $d/hook-env-$TANDEM_JOB
                 echo $t > $d/hook-started-$TANDEM_JOB.tmp && mv $d/hook-started-$TANDEM_JOB.tmp $d/hook-started-$TANDEM_JOB
                 echo \"workload started on $TANDEM_TO\" > \"$(zfs get -H -o value mountpoint $TANDEM_DATASETS)/workload\"\n",
                d = dir.display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut c = Cluster {
            daemons: [None, None, None],
            lab,
            dir: dir.to_owned(),
            src,
            dst,
            nodes: o.nodes,
            both_ways: o.both_ways,
            pve: o.pve,
            _a: a,
            _b: b,
        };
        for n in 1..=o.nodes {
            std::fs::create_dir_all(c.node_dir(n)).unwrap();
            std::fs::write(c.cfg(n), c.config(n, &o.delay)).unwrap();
        }
        let out = c.tandem(1, &["run", "j"]);
        assert!(out.status.success(), "first cycle: {}", text(&out));
        if o.both_ways {
            let out = c.tandem(2, &["run", "k"]);
            assert!(out.status.success(), "first cycle of k: {}", text(&out));
        }
        c.start(1);
        c.start(2);
        wait_until("n2 to watch n1", || c.ha_state(2) == "watching");
        if o.both_ways {
            wait_until("n1 to watch n2", || c.job_state(1, "k") == "watching");
        }
        c
    }

    /// Job k's ends: n2's dataset and its replica on n1.
    fn k(&self) -> (String, String) {
        (self._b.ds("ct"), self._a.ds("ct"))
    }

    fn node_dir(&self, n: u8) -> PathBuf {
        self.dir.join(format!("n{n}"))
    }
    fn cfg(&self, n: u8) -> PathBuf {
        self.node_dir(n).join("tandem.toml")
    }

    fn config(&self, n: u8, delay: &str) -> String {
        let d = self.node_dir(n);
        let mut s = format!(
            "state_dir = \"{}/state\"\nlocal_node = \"n{n}\"\n\n",
            d.display()
        );
        for m in 1..=self.nodes {
            s += &format!(
                "[nodes.n{m}]\naddress = \"local\"\n\
                 [[nodes.n{m}.fence]]\nkind = \"ipmi\"\nhost = \"{}\"\nport = 623\nusername = \"admin\"\n\
                 password_file = \"{}\"\ntimeout = \"300ms\"\nattempts = 2\npower_timeout = \"5s\"\n\
                 [[nodes.n{m}.fence]]\nkind = \"watchdog\"\ntimeout = \"{WD_TIMEOUT_S}s\"\nmargin = \"{WD_MARGIN_S}s\"\n\n",
                Lab::bmc_host(m),
                self.dir.join("bmc.pass").display()
            );
        }
        let hook = self.dir.join("on-promote");
        let job = |name: &str, from: &str, to: &str| {
            format!(
                "[jobs.{name}]\nsource = \"{from}\"\ntarget = \"{to}\"\ninterval = \"2s\"\nkeep = 5\n\
                 failover = \"auto\"\nfailover_delay = \"{delay}\"\non_promote = \"{}\"\n{}\n",
                hook.display(),
                if self.pve && name == "j" { "guest = \"vm:100\"\n" } else { "" }
            )
        };
        s += &job(
            "j",
            &format!("n1:{}", self.src),
            &format!("n2:{}", self.dst),
        );
        if self.both_ways {
            let (ks, kd) = self.k();
            s += &job("k", &format!("n2:{ks}"), &format!("n1:{kd}"));
        }
        if self.pve {
            s += &format!("[pve]\nroot = \"{}\"\n\n", self.dir.join("pve").display());
        }
        s += &format!(
            "[ha]\ntwo_node_delay = \"{TWO_NODE_DELAY_S}s\"\n\n\
             [watchdog]\ndevice = \"{d}/no-watchdog\"\nmux_socket = \"{d}/watchdog-mux.sock\"\ninterval = \"100ms\"\n\n\
             [quorum]\nmode = \"corosync\"\nrefresh = \"200ms\"\ntimeout = \"3s\"\n",
            d = d.display()
        );
        s
    }

    /// `tandem ARGS` on node `n`, with its config.
    fn tandem(&self, n: u8, args: &[&str]) -> Output {
        self.lab
            .node_cmd(n, env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(self.cfg(n))
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts (or restarts, after a power cycle) node `n`'s daemon.
    fn start(&mut self, n: u8) {
        self.daemons[usize::from(n - 1)] = None;
        let d = self.node_dir(n);
        let sock = d.join("watchdog-mux.sock");
        let _ = std::fs::remove_file(&sock);
        let mux = FakeMux::start(&sock);
        let log = d.join(format!("daemon-{}.log", now_s() as u64));
        let child = self
            .lab
            .node_cmd(n, env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(self.cfg(n))
            .arg("daemon")
            .env("TANDEM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.daemons[usize::from(n - 1)] = Some(Daemon { child, log, mux });
    }

    fn daemon(&mut self, n: u8) -> &mut Daemon {
        self.daemons[usize::from(n - 1)].as_mut().unwrap()
    }

    /// Every daemon log, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=3u8 {
            if let Ok(rd) = std::fs::read_dir(self.node_dir(n)) {
                let mut files: Vec<_> = rd
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .collect();
                files.sort();
                for f in files {
                    out += &format!(
                        "--- {} ---\n{}\n",
                        f.display(),
                        std::fs::read_to_string(&f).unwrap_or_default()
                    );
                }
            }
        }
        out
    }

    /// Node `n`'s HA status file (`tandem ha status --json` reads it).
    fn ha_status(&self, n: u8) -> serde_json::Value {
        std::fs::read(self.node_dir(n).join("state/ha/status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }
    /// Job j's HA state on node `n` ("watching", "primary_lost", ...).
    fn ha_state(&self, n: u8) -> String {
        self.job_state(n, "j")
    }
    fn job_state(&self, n: u8, job: &str) -> String {
        self.ha_status(n)["jobs"][job]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
    fn last_failover(&self, n: u8) -> serde_json::Value {
        std::fs::read(self.node_dir(n).join("state/ha/last-failover.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn prop(&self, ds: &str, p: &str) -> String {
        zfs(&["get", "-H", "-o", "value", p, ds]).trim().to_owned()
    }
    /// Is `ds` read-only? zfs-fuse reports a dataset whose `readonly` is
    /// on as "off" with source "temporary" (its read-only mount), so the
    /// source counts too.
    fn readonly(&self, ds: &str) -> bool {
        let o = zfs(&["get", "-H", "-o", "value,source", "readonly", ds]);
        let mut f = o.trim().split('\t');
        !matches!((f.next(), f.next()), (Some("off"), Some(s)) if s != "temporary")
    }
    fn writable(&self) -> bool {
        !self.readonly(&self.dst)
    }
    fn hook_started(&self) -> Option<f64> {
        std::fs::read_to_string(self.dir.join("hook-started-j"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Waits for a replicated cycle newer than the ones now on the replica.
    fn next_cycle(&self) {
        let last = snaps(&self.dst).last().cloned();
        wait_until("a new replicated snapshot", || {
            snaps(&self.dst).last() != last.as_ref()
        });
    }

    /// Waits until n2 has failed over by itself; returns the times from
    /// `cut` (a wall-clock time), recorded for benches/failover.sh under
    /// `scenario`. Fails if anything of n1 still ran at the promotion.
    fn wait_failover(&self, cut: f64, scenario: &str) -> Rto {
        let t = Instant::now();
        let patience = Duration::from_secs(60);
        let writable = loop {
            // Before the check: whatever ran in n1 when the replica turned
            // writable was running before, too.
            let n1_alive = self.lab.alive(1);
            if self.writable() {
                break (now_s(), n1_alive);
            }
            assert!(
                t.elapsed() < patience,
                "n2 did not promote by itself; status {}\n{}",
                self.ha_status(2),
                self.logs()
            );
            thread::sleep(Duration::from_millis(25));
        };
        let hook = loop {
            if let Some(h) = self.hook_started() {
                break h;
            }
            assert!(
                t.elapsed() < patience,
                "on_promote did not start\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(25));
        };
        let rto = Rto {
            writable: writable.0 - cut,
            hook: hook - cut,
            unfenced: writable.1,
        };
        self.record(scenario, &rto);
        assert!(
            !rto.unfenced,
            "the replica became writable while n1 still ran\n{}",
            self.logs()
        );
        rto
    }

    /// What every automatic failover must leave behind on n2.
    fn assert_promoted_on_n2(&self) {
        assert!(self.writable());
        let mark = self.prop(&self.dst, "tandem:generation");
        assert!(mark.contains("n2"), "generation mark: {mark}");
        let env = std::fs::read_to_string(self.dir.join("hook-env-j")).unwrap();
        for want in [
            "TANDEM_HOOK=on_promote",
            "TANDEM_JOB=j",
            "TANDEM_FROM=n1",
            "TANDEM_TO=n2",
        ] {
            assert!(env.lines().any(|l| l == want), "{want} in\n{env}");
        }
        assert_eq!(
            std::fs::read_to_string(mnt(&self.dst).join("workload")).unwrap(),
            "workload started on n2\n"
        );
        // The replicated data is there, and the BMC says n1 is off.
        assert_eq!(
            std::fs::read_to_string(mnt(&self.dst).join("data")).unwrap(),
            "written on n1\n"
        );
        assert!(!self.lab.powered(1), "n1's BMC must report power off");
        wait_until("n2's status to say promoted", || {
            self.ha_state(2) == "promoted"
        });
        let lf = self.last_failover(2);
        assert_eq!(lf["node"], "n1", "{lf}");
        assert_eq!(lf["ok"], true, "{lf}");
    }

    /// Appends a measured failover to `TANDEM_RTO_OUT`, if set.
    fn record(&self, scenario: &str, rto: &Rto) {
        let Rto {
            writable,
            hook,
            unfenced,
        } = rto;
        eprintln!("{scenario}: writable after {writable:.2} s, hook started after {hook:.2} s");
        if let Some(out) = std::env::var_os("TANDEM_RTO_OUT") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out)
                .unwrap();
            let unfenced = u8::from(*unfenced);
            writeln!(
                f,
                "{}",
                serde_json::json!({"scenario": scenario, "rto_writable_s": writable,
                    "rto_hook_s": hook, "unfenced": unfenced})
            )
            .unwrap();
        }
    }
}

fn available() -> bool {
    corosync_available() && ipmi_available() && zfs_available()
}

/// The failover_delay of the tests that fail over (the product's default
/// is 10 s; benches/failover.sh sets its own with TANDEM_RTO_DELAY).
fn delay() -> String {
    std::env::var("TANDEM_RTO_DELAY").unwrap_or_else(|_| "3s".into())
}

#[test]
fn a_node_powered_off_fails_over_by_itself_and_follows_after_reverse() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(tmp.path(), &delay());
    c.next_cycle();

    // The machine dies: its BMC switches it off (everything in the node
    // dies with it, the daemon and corosync included).
    let cut = now_s();
    let o = c.lab.ipmitool(1, "off");
    assert!(o.status.success(), "power off: {}", text(&o));
    wait_until("n1's daemon to die with its node", || {
        !c.daemon(1).running()
    });
    // What n1 wrote after its last replicated snapshot, before it died.
    std::fs::write(mnt(&c.src).join("late"), "after the last sync\n").unwrap();
    let _ = c.wait_failover(cut, "power off (IPMI level)");
    c.assert_promoted_on_n2();
    let lf = c.last_failover(2);
    let attempts = &lf["report"]["failover"]["fence"]["attempts"];
    assert_eq!(attempts[0]["kind"], "ipmi", "{lf}");
    assert_eq!(attempts[0]["outcome"], "already_off", "{lf}");

    // n1 comes back (powered on, corosync and the daemon start): it is
    // refused as the primary and does not take the job back.
    std::fs::write(mnt(&c.dst).join("on-n2"), "written on n2\n").unwrap();
    let n2_head = snaps(&c.dst);
    let o = c.lab.ipmitool(1, "on");
    assert!(o.status.success(), "power on: {}", text(&o));
    wait_until("n1 quorate again", || c.lab.quorate(1));
    c.start(1);
    wait_until("n1's daemon to refuse its stale primary role", || {
        c.daemon(1).log().contains("promoted") || c.daemon(1).log().contains("reverse")
    });
    thread::sleep(Duration::from_secs(5)); // two intervals
    assert_eq!(snaps(&c.dst), n2_head, "n1 sent nothing to n2");
    assert!(c.writable());
    assert_eq!(
        std::fs::read_to_string(mnt(&c.dst).join("on-n2")).unwrap(),
        "written on n2\n"
    );
    assert_eq!(c.ha_state(2), "promoted", "n2 never fails back");

    // reverse on n1: it follows n2, and keeps what it wrote after the sync.
    let o = c.tandem(1, &["reverse", "j", "--yes", "--json"]);
    assert!(o.status.success(), "reverse: {}\n{}", text(&o), c.logs());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(c.readonly(&c.src), "{v}");
    assert_eq!(
        std::fs::read_to_string(mnt(&c.src).join("on-n2")).unwrap(),
        "written on n2\n",
        "n1 follows n2"
    );
    let aside = v["diverged"].as_str().expect("n1's divergence set aside");
    let _ = zfs_try(&["mount", aside]);
    assert_eq!(
        std::fs::read_to_string(mnt(aside).join("late")).unwrap(),
        "after the last sync\n",
        "n1's late write is kept in {aside}: {v}"
    );
    let (s, d) = (snaps(&c.src), snaps(&c.dst));
    assert_eq!(
        s.last(),
        d.last(),
        "same newest snapshot (and GUID) on both"
    );
}

#[test]
fn a_cut_node_with_a_reachable_bmc_is_powered_off_then_its_replica_promoted() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(tmp.path(), &delay());
    c.next_cycle();
    wait_until("n1's keeper to pet", || {
        c.daemon(1).mux.petting(Duration::from_millis(500))
    });

    let cut = now_s();
    c.lab.cable(1, false);
    let _ = c.wait_failover(cut, "network cut, BMC reachable (IPMI level)");
    c.assert_promoted_on_n2();
    assert!(
        c.lab.chassis_log(1).contains("set power 0"),
        "n2 switched n1 off through IPMI: {}",
        c.lab.chassis_log(1)
    );
    let lf = c.last_failover(2);
    assert_eq!(
        lf["report"]["failover"]["fence"]["attempts"][0]["outcome"], "powered_off",
        "{lf}"
    );
}

#[test]
fn a_cut_node_with_a_hung_bmc_is_promoted_only_after_the_watchdog_wait() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(tmp.path(), &delay());
    c.next_cycle();
    wait_until("n1's keeper to pet", || {
        c.daemon(1).mux.petting(Duration::from_millis(500))
    });

    c.lab.bmc_hang(1, true);
    let cut = now_s();
    c.lab.cable(1, false);
    // n1 loses quorum and stops petting; its hardware watchdog would reset
    // it within the timeout: the lab does that reset.
    wait_until("n1 to stop petting", || {
        !c.daemon(1).mux.petting(Duration::from_millis(500))
    });
    assert!(!c.writable(), "nothing promoted before n1 stopped petting");
    c.lab.power(1, false);
    let rto = c.wait_failover(cut, "network cut, BMC hung (watchdog level)");
    // The safety property of the level: never before timeout + margin of
    // absence (a slow machine only makes this larger).
    assert!(
        rto.writable >= (WD_TIMEOUT_S + WD_MARGIN_S) as f64,
        "promoted {:.2} s after the cut, before the watchdog wait",
        rto.writable
    );
    c.lab.bmc_hang(1, false);
    // assert_promoted_on_n2 checks the BMC says off: the hung BMC never
    // got the order, but the machine was reset (the lab's power 0 is the
    // reset, not the BMC's chassis), so check the rest by hand.
    assert!(c.writable());
    assert_eq!(
        std::fs::read_to_string(mnt(&c.dst).join("workload")).unwrap(),
        "workload started on n2\n"
    );
    let lf = c.last_failover(2);
    let attempts = &lf["report"]["failover"]["fence"]["attempts"];
    assert_eq!(attempts[0]["kind"], "ipmi", "{lf}");
    assert_ne!(attempts[0]["outcome"], "powered_off", "{lf}");
    assert_eq!(attempts[1]["kind"], "watchdog", "{lf}");
    assert_eq!(attempts[1]["outcome"], "powered_off", "{lf}");
}

/// A node that sees nothing happen: the replica stays a replica, the
/// primary's BMC is never told to switch off.
fn assert_untouched(c: &Cluster, generation: &str) {
    assert!(c.readonly(&c.dst), "{}", c.logs());
    assert_eq!(c.prop(&c.dst, "tandem:generation"), generation);
    assert!(c.lab.powered(1), "n1 is still on");
    assert!(
        !c.lab.chassis_log(1).contains("set power"),
        "nobody switched n1: {}",
        c.lab.chassis_log(1)
    );
    assert!(c.last_failover(2).is_null(), "{}", c.last_failover(2));
    assert!(c.hook_started().is_none());
}

#[test]
fn the_minority_node_does_nothing() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(tmp.path(), "3s");
    c.next_cycle();
    let generation = c.prop(&c.dst, "tandem:generation");
    c.lab.cable(2, false);
    wait_until("n2 to see it is not quorate", || {
        c.ha_state(2) == "not_quorate"
    });
    // Far longer than the delay, and than the watchdog wait.
    thread::sleep(Duration::from_secs(10));
    assert_eq!(c.ha_state(2), "not_quorate", "{}", c.ha_status(2));
    assert_untouched(&c, &generation);
    assert!(c.daemon(2).running());
    c.lab.cable(2, true);
    wait_until("n2 to watch n1 again", || c.ha_state(2) == "watching");
    assert_untouched(&c, &generation);
}

#[test]
fn a_node_back_within_the_delay_is_left_alone() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(tmp.path(), "20s");
    c.next_cycle();
    let generation = c.prop(&c.dst, "tandem:generation");
    c.lab.cable(1, false);
    wait_until("n2 to see n1 gone", || c.ha_state(2) == "primary_lost");
    c.lab.cable(1, true);
    wait_until("n2 to see n1 back", || c.ha_state(2) == "watching");
    // Past the moment the delay would have ended.
    thread::sleep(Duration::from_secs(20));
    assert_eq!(c.ha_state(2), "watching", "{}", c.ha_status(2));
    assert_untouched(&c, &generation);
    assert!(c.daemon(1).running() && c.daemon(2).running());
    c.next_cycle();
}

/// Each snapshot with its GUID, and `written` of the head ("0": nothing
/// since the newest snapshot; zfs-fuse has no `written`: "-").
fn fingerprint(ds: &str) -> (Vec<(String, u64)>, String) {
    let w = zfs_try(&["get", "-H", "-p", "-o", "value", "written", ds]);
    let written = if w.status.success() {
        String::from_utf8_lossy(&w.stdout).trim().to_owned()
    } else {
        "-".to_owned()
    };
    (snaps(ds), written)
}

#[test]
fn a_test_failover_while_replicating_changes_nothing() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::new(tmp.path(), "3s");
    c.next_cycle();
    let (src_before, dst_before) = (fingerprint(&c.src), fingerprint(&c.dst));
    let o = c.tandem(2, &["failover", "--test", "j", "--json"]);
    assert!(o.status.success(), "failover --test: {}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    c.next_cycle();
    c.next_cycle();
    let (src_after, dst_after) = (fingerprint(&c.src), fingerprint(&c.dst));
    // Nothing of what was there changed: every older snapshot is still
    // there with its GUID (retention may have pruned the oldest), the
    // replica's head was not written to, the cycles went on.
    for (before, after, what) in [
        (&src_before, &src_after, "primary"),
        (&dst_before, &dst_after, "replica"),
    ] {
        let kept: Vec<_> = before.0.iter().filter(|s| after.0.contains(s)).collect();
        assert!(
            kept.len() + 2 >= before.0.len(),
            "{what}: snapshots lost: {before:?} -> {after:?}"
        );
        assert!(after.0.len() >= kept.len() + 2, "{what}: cycles went on");
    }
    assert!(
        dst_after.1 == "0" || dst_after.1 == "-",
        "nothing written to the replica: {}",
        dst_after.1
    );
    assert_eq!(src_after.0.last(), dst_after.0.last(), "in sync");
    assert!(c.readonly(&c.dst));
    let pool_b = c.dst.split('/').next().unwrap();
    assert!(
        !exists(&format!("{pool_b}/tandem-test/j")),
        "the clones are gone: {v}"
    );
    assert!(c.lab.powered(1), "nothing fenced");
    assert_eq!(c.ha_state(2), "watching");
}

/// Seconds between two RFC 3339 times of a status file.
fn secs_between(a: &serde_json::Value, b: &serde_json::Value) -> i64 {
    let t = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{v} is not a time: {e}"))
    };
    (t(b) - t(a)).num_seconds()
}

/// A two-node cluster (`two_node: 1`, no tie-breaker) split in two while
/// both still reach the BMCs: each side stays quorate and sees the other
/// die, and each holds the other's replica. The deterministic fence
/// delay lets only one win: n1 (its name sorts first) fences at once, n2
/// would wait `two_node_delay` more, and is powered off before it can.
#[test]
fn two_nodes_without_a_tie_breaker_cannot_both_win_the_fence_race() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::with(tmp.path(), &Opts::two("3s", false));
    let (k_src, k_dst) = c.k();
    let q = c.tandem(1, &["quorum", "--json"]);
    let qv: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
    assert_eq!(qv["two_node"], true, "{qv}");

    c.lab.split(1, 2, true);
    // Both see the other gone, and both stay quorate: n1 plans to fence
    // after the delay, n2 after the delay and two_node_delay.
    let mut seen = [None, None];
    wait_until("both sides to see the other gone", || {
        if seen[0].is_none() && c.job_state(1, "k") == "primary_lost" {
            seen[0] = Some(c.ha_status(1)["jobs"]["k"].clone());
        }
        if seen[1].is_none() && c.job_state(2, "j") == "primary_lost" {
            seen[1] = Some(c.ha_status(2)["jobs"]["j"].clone());
        }
        seen.iter().all(Option::is_some) || c.lab.chassis_log(2).contains("set power 0")
    });
    if let Some(s1) = &seen[0] {
        assert_eq!(secs_between(&s1["since"], &s1["fence_at"]), 3, "n1: {s1}");
    }
    if let Some(s2) = &seen[1] {
        assert_eq!(
            secs_between(&s2["since"], &s2["fence_at"]),
            3 + TWO_NODE_DELAY_S as i64,
            "n2 waits two_node_delay more: {s2}"
        );
    }
    // n1 wins: n2 is off, k's replica on n1 is the primary now.
    wait_until("n1 to promote k's replica", || !c.readonly(&k_dst));
    assert!(!c.lab.alive(2), "n2 was powered off");
    assert!(!c.lab.powered(2), "n2's BMC says off");
    assert!(c.lab.chassis_log(2).contains("set power 0"));
    assert!(c.lab.alive(1) && c.lab.powered(1), "n1 runs");
    assert!(
        !c.lab.chassis_log(1).contains("set power"),
        "nobody switched n1: {}",
        c.lab.chassis_log(1)
    );
    let mark = c.prop(&k_dst, "tandem:generation");
    assert!(mark.contains("n1"), "k's mark names n1: {mark}");
    // the hook runs after the promotion made the replica writable
    wait_until("n1 to run k's on_promote", || {
        c.dir.join("hook-started-k").exists()
    });
    let env = std::fs::read_to_string(c.dir.join("hook-env-k")).unwrap();
    assert!(env.lines().any(|l| l == "TANDEM_TO=n1"), "{env}");
    assert_eq!(
        std::fs::read_to_string(mnt(&k_dst).join("data")).unwrap(),
        "written on n2\n"
    );
    // j stays where it was: n1's primary, its replica on the dead n2 untouched.
    thread::sleep(Duration::from_secs(TWO_NODE_DELAY_S + 2));
    assert!(c.readonly(&c.dst), "n2 promoted nothing");
    assert!(!c.readonly(&c.src), "n1 still j's primary");
    assert!(c.last_failover(2).is_null(), "{}", c.last_failover(2));
    assert!(!c.dir.join("hook-started-j").exists());
    let _ = k_src;
}

/// A two-node cluster whose tie-breaker is a QDevice: n1's cable cut, n1
/// also loses the qnetd, so n1 is not quorate and does nothing, while n2
/// (with the QDevice's vote) fences it at once — no two-node wait, though
/// n2's name sorts last.
#[test]
fn with_a_qdevice_only_the_side_holding_its_vote_fails_over() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::with(tmp.path(), &Opts::two("3s", true));
    let (_, k_dst) = c.k();
    let q = c.tandem(2, &["quorum", "--json"]);
    let qv: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
    assert_eq!(qv["qdevice"], true, "{qv}");

    let cut = now_s();
    c.lab.cable(1, false);
    let mut lost = None;
    wait_until("n2 to see n1 gone", || {
        if c.ha_state(2) == "primary_lost" {
            lost = Some(c.ha_status(2)["jobs"]["j"].clone());
        }
        lost.is_some() || c.writable()
    });
    if let Some(l) = &lost {
        assert_eq!(
            secs_between(&l["since"], &l["fence_at"]),
            3,
            "no two-node wait with a QDevice: {l}"
        );
    }
    let _ = c.wait_failover(cut, "two nodes + QDevice, network cut (IPMI level)");
    c.assert_promoted_on_n2();
    assert!(c.lab.powered(2), "n2 runs");
    assert!(
        !c.lab.chassis_log(2).contains("set power"),
        "n1 switched nothing: {}",
        c.lab.chassis_log(2)
    );
    assert!(c.readonly(&k_dst), "n1 promoted nothing");
    assert!(!c.dir.join("hook-started-k").exists());
}

/// The config refuses `failover = "auto"` for a guest Proxmox VE's own HA
/// manager manages; the daemon looks again just before acting: a guest
/// added to PVE's HA after the daemon started is refused too (two
/// managers must never start one VM twice) — no fence, no promotion.
#[test]
fn a_guest_pve_ha_took_over_after_the_start_is_never_failed_over() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut o = Opts::three("3s");
    o.pve = true;
    let c = Cluster::with(tmp.path(), &o);
    let ha = c.dir.join("pve/ha");
    std::fs::create_dir_all(&ha).unwrap();
    std::fs::write(ha.join("resources.cfg"), "vm: 100\n\tstate started\n").unwrap();

    let o = c.lab.ipmitool(1, "off");
    assert!(o.status.success(), "power off: {}", text(&o));
    wait_until("n2 to refuse", || c.ha_state(2) == "refused");
    let st = c.ha_status(2);
    let why = st["jobs"]["j"]["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("vm:100") && why.contains("Proxmox VE's own HA manager"),
        "{st}"
    );
    thread::sleep(Duration::from_secs(2));
    assert!(c.readonly(&c.dst), "nothing promoted\n{}", c.logs());
    assert!(c.hook_started().is_none());
    assert_eq!(
        c.lab.chassis_log(1).matches("set power").count(),
        1,
        "only the test's own power off, no fence: {}",
        c.lab.chassis_log(1)
    );
}
