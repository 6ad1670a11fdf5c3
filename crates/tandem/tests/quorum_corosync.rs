//! The quorum gate against a real corosync cluster: three nodes, each in a
//! network namespace of its own, joined by a bridge in a fourth (the
//! "switch"), knet over veth, votequorum; scripts/corosync-lab.sh builds
//! it. The test cuts node 3 off the switch and runs the real `tandem`
//! binary inside the namespaces (with `nsenter --net`, which leaves /sys
//! alone so zfs-fuse keeps working, unlike `ip netns exec`):
//!
//! - the watchdog keeper of a daemon on node 3 stops petting a fake
//!   watchdog-mux once corosync says node 3 lost quorum, while node 1's
//!   goes on; after the cable is back, node 3's petting resumes;
//! - `tandem failover --confirmed-off` on node 3 refuses (exit 3, "no
//!   quorum") and changes nothing on the pools, while the same command on
//!   node 1 promotes.
//! - `tandem quorum` (the native backend, corosync's libraries): all three
//!   members by name; after the cut, node 1's `--watch` reports the change
//!   as an event and node 3 says it is not quorate; a node whose corosync
//!   is stopped fails closed (exit 3) and recovers when it is back; a
//!   two-node cluster (`two_node: 1`) says `two_node` without a QDevice.
//!
//! Needs root and corosync (`scripts/setup.sh corosync`); skips with a note
//! otherwise, unless `TANDEM_TEST_REQUIRE_COROSYNC=1`. The failover part
//! also needs ZFS (zfs-fuse).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::corosync::*;
use common::*;
use tandem_testkit::fake_mux::FakeMux;

/// `tandem daemon` on node `n` of the lab, holding a fake watchdog.
struct Daemon {
    child: Child,
    log: PathBuf,
    mux: FakeMux,
}

impl Daemon {
    fn start(lab: &Lab, dir: &Path, n: u8) -> Daemon {
        Self::start_as(lab, dir, n, "")
    }

    fn start_as(lab: &Lab, dir: &Path, n: u8, tag: &str) -> Daemon {
        let d = dir.join(format!("daemon-n{n}{tag}"));
        std::fs::create_dir_all(&d).unwrap();
        let sock = d.join("watchdog-mux.sock");
        let mux = FakeMux::start(&sock);
        let cfg = d.join("tandem.toml");
        std::fs::write(
            &cfg,
            format!(
                "state_dir = \"{0}/state\"\nlocal_node = \"n{n}\"\n[nodes.n{n}]\naddress = \"local\"\n\n\
                 [watchdog]\ndevice = \"{0}/no-watchdog\"\nmux_socket = \"{1}\"\ninterval = \"100ms\"\n\n\
                 [quorum]\nmode = \"corosync\"\nrefresh = \"200ms\"\ntimeout = \"3s\"\n",
                d.display(),
                sock.display()
            ),
        )
        .unwrap();
        let log = d.join("daemon.log");
        let child = lab
            .node_cmd(n, env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(&cfg)
            .arg("daemon")
            .env("TANDEM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log, mux }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// SIGTERM; returns the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(t.elapsed() < PATIENCE, "the daemon did not stop");
            thread::sleep(Duration::from_millis(20));
        }
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

/// A replicated job src -> dst on zfs-fuse pools; `dst`'s config asks
/// corosync in `auto` mode, told where the lab node's corosync.conf is.
struct Replica {
    _a: Pool,
    b: Pool,
    dst: String,
    dst_cfg: PathBuf,
    dst_state: PathBuf,
}

impl Replica {
    fn new(dir: &Path, corosync_conf: &Path) -> Replica {
        let (a, b) = (Pool::new("qa"), Pool::new("qb"));
        let (src, dst) = (a.ds("vm"), b.ds("vm"));
        zfs(&["create", &src]);
        std::fs::write(mnt(&src).join("data"), "replicated\n").unwrap();
        let body = format!(
            "[nodes.src]\naddress = \"local\"\n[nodes.dst]\naddress = \"local\"\n\
             [jobs.j]\nsource = \"src:{src}\"\ntarget = \"dst:{dst}\"\nkeep = 3\n\n\
             [quorum]\ncorosync_conf = \"{}\"\n",
            corosync_conf.display()
        );
        let cfg = |node: &str| {
            let p = dir.join(format!("{node}.toml"));
            std::fs::write(
                &p,
                format!(
                    "state_dir = \"{}/{node}-state\"\nlocal_node = \"{node}\"\n{body}",
                    dir.display()
                ),
            )
            .unwrap();
            p
        };
        let src_cfg = cfg("src");
        let dst_cfg = cfg("dst");
        let o = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(&src_cfg)
            .args(["run", "j"])
            .output()
            .unwrap();
        assert!(o.status.success(), "replication: {}", text(&o));
        Replica {
            _a: a,
            b,
            dst,
            dst_cfg,
            dst_state: dir.join("dst-state"),
        }
    }
    fn failover_on(&self, lab: &Lab, n: u8, json: bool) -> Output {
        let mut c = lab.node_cmd(n, env!("CARGO_BIN_EXE_tandem"));
        c.arg("--config")
            .arg(&self.dst_cfg)
            .args(["failover", "src", "--confirmed-off", "--yes"]);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    }
    /// The generation mark failover sets when it promotes ("-" before).
    fn generation(&self) -> String {
        zfs(&["get", "-H", "-o", "value", "tandem:generation", &self.dst])
            .trim()
            .to_owned()
    }
}

/// Every file under `dir` with its contents.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(tree(&p));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_node_cut_off_neither_promotes_nor_pets_its_watchdog() {
    if !corosync_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t0 = Instant::now();
    let lab = Lab::up(&dir.join("lab"));
    let up = t0.elapsed();
    for n in 1..=3 {
        assert!(lab.quorate(n), "node {n} is not quorate after up");
    }

    // A daemon holding a watchdog on node 3 (to be cut off) and node 1.
    let d3 = Daemon::start(&lab, dir, 3);
    let d1 = Daemon::start(&lab, dir, 1);
    for (n, d) in [(3, &d3), (1, &d1)] {
        wait_until(&format!("node {n}'s keeper to pet"), || d.mux.count() >= 3);
        assert!(d.log().contains("quorum gate open"), "{}", d.log());
        assert!(
            d.log().contains("connected to corosync (votequorum, cmap)"),
            "the native backend: {}",
            d.log()
        );
    }
    let replica = zfs_available().then(|| Replica::new(dir, &lab.conf(3)));

    // Cut node 3 off.
    let t_cut = Instant::now();
    lab.cable(3, false);
    let lost = wait_until("node 3 to lose quorum", || !lab.quorate(3));
    assert!(
        lab.quorate(1) && lab.quorate(2),
        "the other two keep quorum"
    );
    wait_until("node 3's keeper to stop petting", || {
        d3.log().contains("NO QUORUM") && !d3.mux.petting(Duration::from_millis(600))
    });
    let silent = t_cut.elapsed();
    assert!(
        d3.log().contains("node UNFIT, STOPPED PETTING"),
        "{}",
        d3.log()
    );
    // Still silent a while later; node 1 goes on petting.
    assert!(
        !d3.mux.petting(Duration::from_millis(800)),
        "node 3 pets again while cut off"
    );
    assert!(
        d1.mux.petting(Duration::from_millis(800)),
        "node 1 stopped petting:\n{}",
        d1.log()
    );

    // A daemon that starts on node 3 now, without quorum, does not arm the
    // watchdog at all (it would reset the node every timeout and a cluster
    // cold start would never converge): it waits for quorum.
    let d3_late = Daemon::start_as(&lab, dir, 3, "-late");
    wait_until("the late daemon to wait for quorum", || {
        d3_late
            .log()
            .contains("no quorum yet: the watchdog is armed once this node is quorate")
    });
    assert_eq!(d3_late.mux.count(), 0, "armed without quorum");

    if let Some(r) = &replica {
        // Node 3 refuses, even with the operator's word, and changes nothing.
        let before = (pool_state_b(r), tree(&r.dst_state));
        let o = r.failover_on(&lab, 3, false);
        assert_eq!(o.status.code(), Some(3), "failover on node 3: {}", text(&o));
        let out = text(&o);
        assert!(
            out.contains("has no quorum") && out.contains("1 of 3 expected votes present"),
            "{out}"
        );
        assert!(out.contains("refusing to promote"), "{out}");
        eprintln!("node 3's failover said: {}", out.trim());
        let o = r.failover_on(&lab, 3, true);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(j["refused"].as_str().unwrap().contains("no quorum"), "{j}");
        assert_eq!(j["fenced"], false, "{j}");
        assert_eq!(
            (pool_state_b(r), tree(&r.dst_state)),
            before,
            "node 3 changed something"
        );
        assert_eq!(r.generation(), "-", "node 3 promoted");
        // Node 1, in the quorate partition, promotes.
        let o = r.failover_on(&lab, 1, false);
        assert!(o.status.success(), "failover on node 1: {}", text(&o));
        assert!(text(&o).contains("promoted"), "{}", text(&o));
        assert!(r.generation().starts_with("j 1 "), "{}", r.generation());
    }

    // Back on the switch: quorate again, and the keeper pets again.
    let t_heal = Instant::now();
    lab.cable(3, true);
    let regained = wait_until("node 3 to regain quorum", || lab.quorate(3));
    wait_until("node 3's keeper to pet again", || {
        d3.mux.petting(Duration::from_millis(300))
    });
    let petting_again = t_heal.elapsed();
    assert!(d3.log().contains("petting resumes"), "{}", d3.log());
    wait_until("the late daemon to arm once quorate", || {
        d3_late.mux.petting(Duration::from_millis(300))
    });
    assert!(
        d3_late.log().contains("quorate: arming the watchdog"),
        "{}",
        d3_late.log()
    );
    for l in d3
        .log()
        .lines()
        .filter(|l| l.contains("quorum gate open") || l.contains("NO QUORUM"))
    {
        eprintln!("node 3's daemon: {l}");
    }

    // Both stop cleanly now: one V each.
    for (n, d) in [(3, d3), (1, d1), (3, d3_late)] {
        let log = d.log();
        let mux = d.mux.clone();
        let st = d.stop();
        assert!(st.success(), "node {n}'s daemon: {st:?}\n{log}");
        wait_until("the V", || mux.vs() == 1);
    }
    eprintln!(
        "corosync lab up in {up:.1?}; cut -> node 3 not quorate {lost:.1?}, -> its keeper silent \
         {silent:.1?}; heal -> quorate {regained:.1?}, -> petting {petting_again:.1?}; total {:.1?}",
        t0.elapsed()
    );
}

/// The replica pool's state (GUIDs, readonly, holds).
fn pool_state_b(r: &Replica) -> String {
    pool_state(&r.b)
}

/// The watchdog fence level against a real corosync (issue 10, defect 1):
/// while n3 is a member of n1's quorate partition it is alive and the level
/// never confirms it off; once n3 is cut off, n1's level confirms it off
/// after timeout + margin of continuous absence, and failover promotes.
#[test]
fn the_watchdog_level_confirms_off_only_after_absence_from_the_membership() {
    if !corosync_available() || !zfs_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lab = Lab::up(&dir.join("lab"));
    for n in 1..=3 {
        assert!(lab.quorate(n), "node {n} is not quorate after up");
    }
    let (a, b) = (Pool::new("wa"), Pool::new("wb"));
    let (src, dst) = (a.ds("vm"), b.ds("vm"));
    zfs(&["create", &src]);
    std::fs::write(mnt(&src).join("data"), "replicated\n").unwrap();
    // tandem's node names are corosync's: n3 is the primary, n1 the replica.
    let cfg = |node: &str| {
        let p = dir.join(format!("{node}.toml"));
        std::fs::write(
            &p,
            format!(
                "state_dir = \"{0}/{node}-state\"\nlocal_node = \"{node}\"\n\
                 [nodes.n3]\naddress = \"local\"\n\
                 [[nodes.n3.fence]]\nkind = \"watchdog\"\ntimeout = \"2s\"\nmargin = \"1s\"\n\
                 [nodes.n1]\naddress = \"local\"\n\
                 [jobs.j]\nsource = \"n3:{src}\"\ntarget = \"n1:{dst}\"\n\n\
                 [quorum]\nmode = \"corosync\"\ncorosync_conf = \"{1}\"\n",
                dir.display(),
                lab.conf(1).display()
            ),
        )
        .unwrap();
        p
    };
    let (n3_cfg, n1_cfg) = (cfg("n3"), cfg("n1"));
    let o = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--config")
        .arg(&n3_cfg)
        .args(["run", "j"])
        .output()
        .unwrap();
    assert!(o.status.success(), "replication: {}", text(&o));
    let on_n1 = |args: &[&str]| {
        lab.node_cmd(1, env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(&n1_cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let generation = || {
        zfs(&["get", "-H", "-o", "value", "tandem:generation", &dst])
            .trim()
            .to_string()
    };

    // n3 is a member: alive ("on"), and never confirmed off.
    let o = on_n1(&["fence", "status", "n3"]);
    assert_eq!(o.status.code(), Some(0), "on: {}", text(&o));
    let before = pool_state(&b);
    let o = on_n1(&["failover", "n3", "--yes"]);
    assert_eq!(o.status.code(), Some(3), "refused: {}", text(&o));
    assert!(
        text(&o).contains("not confirmed powered off"),
        "{}",
        text(&o)
    );
    assert_eq!(pool_state(&b), before, "nothing changed");
    assert_eq!(generation(), "-");

    // Cut off: absent from n1's quorate partition; off after 2 s + 1 s.
    lab.cable(3, false);
    wait_until("node 3 to lose quorum", || !lab.quorate(3));
    let t = Instant::now();
    let o = on_n1(&["failover", "n3", "--yes", "--json"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["fence"]["attempts"][0]["kind"], "watchdog", "{v}");
    assert_eq!(v["fence"]["attempts"][0]["outcome"], "powered_off", "{v}");
    assert_eq!(v["jobs"][0]["outcome"], "promoted", "{v}");
    assert!(took >= Duration::from_secs(3), "confirmed after {took:?}");
    assert_eq!(generation(), "j 1 n1");
    eprintln!(
        "watchdog level: n3 absent -> confirmed off and promoted in {took:.1?} (timeout 2 s + margin 1 s)"
    );
    lab.cable(3, true);
}

/// A tandem config for `tandem quorum` on lab node `n` (corosync required).
fn quorum_cfg(lab: &Lab, dir: &Path, n: u8) -> PathBuf {
    let p = dir.join(format!("quorum-n{n}.toml"));
    std::fs::write(
        &p,
        format!(
            "state_dir = \"{0}/state-n{n}\"\nlocal_node = \"n{n}\"\n[nodes.n{n}]\naddress = \"local\"\n\n\
             [quorum]\nmode = \"corosync\"\ncorosync_conf = \"{1}\"\n",
            dir.display(),
            lab.conf(n).display()
        ),
    )
    .unwrap();
    p
}

/// `tandem quorum --json` on node `n`: (exit status, the JSON answer, stderr).
fn quorum_json(lab: &Lab, dir: &Path, n: u8) -> (Option<i32>, serde_json::Value, String) {
    let o = lab
        .node_cmd(n, env!("CARGO_BIN_EXE_tandem"))
        .arg("--config")
        .arg(quorum_cfg(lab, dir, n))
        .args(["quorum", "--json"])
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("node {n}: not JSON ({e}): {}", text(&o)));
    (
        o.status.code(),
        v,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn members(v: &serde_json::Value) -> Vec<String> {
    v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `tandem quorum --watch --json` on a node: its lines as they come.
struct Watch {
    child: Child,
    lines: std::sync::mpsc::Receiver<(Instant, serde_json::Value)>,
}

impl Watch {
    fn start(lab: &Lab, dir: &Path, n: u8) -> Watch {
        let mut child = lab
            .node_cmd(n, env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(quorum_cfg(lab, dir, n))
            .args(["quorum", "--watch", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("watch-n{n}.log"))).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("a --watch line is not JSON ({e}): {l}"));
                if tx.send((Instant::now(), v)).is_err() {
                    return;
                }
            }
        });
        Watch { child, lines }
    }

    /// The next line that satisfies `f` (earlier ones are passed over),
    /// with the time it arrived.
    fn next(
        &self,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> (Instant, serde_json::Value) {
        let t = Instant::now();
        loop {
            let left = PATIENCE.saturating_sub(t.elapsed());
            match self.lines.recv_timeout(left) {
                Ok((at, v)) if f(&v) => return (at, v),
                Ok((_, v)) => eprintln!("--watch ({what}): passing over {v}"),
                Err(e) => panic!("--watch: no line for {what}: {e}"),
            }
        }
    }

    /// SIGINT; returns the exit status.
    fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(t.elapsed() < PATIENCE, "--watch did not stop at SIGINT");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The native backend against the real cluster: names, the cut as an
/// event on node 1, no quorum on node 3, a stopped corosync fails closed.
#[test]
fn tandem_quorum_reports_corosyncs_membership_as_events() {
    if !corosync_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lab = Lab::up(&dir.join("lab"));
    let three = ["n1", "n2", "n3"];
    for n in 1..=3 {
        let (code, v, err) = quorum_json(&lab, dir, n);
        assert_eq!(code, Some(0), "node {n}: {v} {err}");
        assert_eq!(v["backend"], "native", "{v}");
        assert_eq!(v["state"], "quorate", "{v}");
        assert_eq!(v["quorate"], true, "{v}");
        assert_eq!(members(&v), three, "{v}");
        assert_eq!(v["node_id"], u64::from(n), "{v}");
        assert_eq!(
            (v["votes"].as_u64(), v["expected"].as_u64()),
            (Some(3), Some(3)),
            "{v}"
        );
        assert_eq!(
            (v["two_node"].as_bool(), v["qdevice"].as_bool()),
            (Some(false), Some(false)),
            "{v}"
        );
        assert_eq!(v["nodelist"], serde_json::json!(three), "{v}");
    }

    let w1 = Watch::start(&lab, dir, 1);
    let w3 = Watch::start(&lab, dir, 3);
    for w in [&w1, &w3] {
        w.next("the first answer", |v| {
            v["quorate"] == true && members(v) == three
        });
    }

    // Cut node 3 off: node 1 hears of it from corosync, not from a poll.
    let t_cut = Instant::now();
    lab.cable(3, false);
    let (at, v) = w1.next("node 1 to see n3 leave", |v| {
        v["state"] == "quorate" && !members(v).contains(&"n3".to_owned())
    });
    let n1_event = at - t_cut;
    assert_eq!(members(&v), ["n1", "n2"], "{v}");
    let (at, v) = w3.next("node 3 to lose quorum", |v| v["state"] == "not_quorate");
    let n3_event = at - t_cut;
    assert_eq!(members(&v), ["n3"], "{v}");
    let (code, v, _) = quorum_json(&lab, dir, 3);
    assert_eq!(code, Some(1), "not quorate: exit 1: {v}");
    assert_eq!(
        (v["state"].as_str(), v["quorate"].as_bool()),
        (Some("not_quorate"), Some(false)),
        "{v}"
    );
    assert!(
        lab.quorate(1) && !lab.quorate(3),
        "corosync-quorumtool agrees"
    );

    // Back: node 1 sees n3 return.
    let t_heal = Instant::now();
    lab.cable(3, true);
    let (at, _) = w1.next("node 1 to see n3 return", |v| members(v) == three);
    let n1_back = at - t_heal;
    w3.next("node 3 to regain quorum", |v| v["state"] == "quorate");

    // corosync stopped on node 2: fail closed there, an event on node 1.
    let w2 = Watch::start(&lab, dir, 2);
    w2.next("node 2's first answer", |v| v["state"] == "quorate");
    let t_stop = Instant::now();
    lab.corosync(2, false);
    let (at, v) = w2.next("node 2 to lose its corosync", |v| v["state"] == "no_answer");
    let n2_lost = at - t_stop;
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("corosync does not answer"),
        "{v}"
    );
    w1.next("node 1 to see n2 leave", |v| members(v) == ["n1", "n3"]);
    let (code, v, err) = quorum_json(&lab, dir, 2);
    assert_eq!(code, Some(3), "no answer: exit 3: {v} {err}");
    assert_eq!(
        (v["state"].as_str(), v["quorate"].as_bool()),
        (Some("no_answer"), Some(false)),
        "{v}"
    );
    assert!(
        err.contains("corosync does not answer") && err.contains("fail closed"),
        "{err}"
    );
    eprintln!("node 2 without corosync: {}", err.trim());
    // Started again: the watch reconnects and the view is back.
    let t_start = Instant::now();
    lab.corosync(2, true);
    let (at, _) = w2.next("node 2's corosync to be back", |v| {
        v["state"] == "quorate" && members(v) == three
    });
    let n2_back = at - t_start;
    let (code, v, _) = quorum_json(&lab, dir, 2);
    assert_eq!(
        (code, members(&v)),
        (Some(0), three.map(String::from).to_vec()),
        "{v}"
    );

    for (n, w) in [(1, w1), (2, w2), (3, w3)] {
        let st = w.interrupt();
        assert!(st.success(), "node {n}'s --watch at SIGINT: {st:?}");
    }
    eprintln!(
        "tandem quorum --watch: cut -> node 1's event {n1_event:.2?}, node 3's {n3_event:.2?}; \
         heal -> node 1's {n1_back:.2?}; corosync stopped -> node 2 no answer {n2_lost:.2?}, \
         started -> quorate again {n2_back:.2?}"
    );
}

/// `two_node: 1`: each node would stay quorate alone, and no QDevice
/// breaks the tie; `tandem quorum` says both.
#[test]
fn a_two_node_cluster_reports_two_node_and_no_qdevice() {
    if !corosync_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lab = Lab::up_with(&dir.join("lab"), 2);
    for n in 1..=2 {
        let (code, v, err) = quorum_json(&lab, dir, n);
        assert_eq!(code, Some(0), "node {n}: {v} {err}");
        assert_eq!(v["state"], "quorate", "{v}");
        assert_eq!(members(&v), ["n1", "n2"], "{v}");
        assert_eq!(v["two_node"], true, "{v}");
        assert_eq!(v["qdevice"], false, "{v}");
        assert_eq!(
            (v["expected"].as_u64(), v["needed"].as_u64()),
            (Some(2), Some(1)),
            "{v}"
        );
    }
}
