//! Failover and reverse scenarios, in the style of pve-ha-manager's tests:
//! each one scripts faults (a BMC that is down, a node that wrote after the
//! last sync, a reverse killed after a step) and checks the log of what
//! tandem did, against real pools (zfs-fuse) with the fence levels on a
//! simulated BMC (ipmi_sim).
//!
//! Two nodes share this machine: `src` (the primary, whose "power" is the
//! BMC's) and `dst` (the survivor). Each node has its own config and state
//! directory, as on a real cluster; `failover` runs with dst's, `reverse`
//! with src's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;
use tandem_fence::PowerState;
use tandem_testkit::bmc::Bmc;

/// What to put in src's fence levels.
enum Fence {
    /// The simulated BMC.
    Bmc,
    /// A BMC that never answers, then the simulated one.
    DeadThenBmc,
    /// Two BMCs that never answer.
    AllDead,
    /// The watchdog level only (10 s + 5 s), with `[quorum] mode = "off"`.
    Watchdog,
}

/// How dst's config reaches src.
#[derive(PartialEq)]
enum SrcFromDst {
    /// Both nodes are this machine (`address = "local"`).
    Local,
    /// Through the loopback sshd and `tandem serve --stdio` with src's config.
    Serve,
}

struct Scenario {
    _a: Pool,
    _b: Pool,
    src: String,
    dst: String,
    bmc: Bmc,
    _silent: Vec<std::net::UdpSocket>,
    dir: tempfile::TempDir,
    /// dst's config (the survivor).
    dst_cfg: PathBuf,
    /// src's config (the old primary).
    src_cfg: PathBuf,
}

fn level(port: u16, pw: &std::path::Path) -> String {
    format!(
        "[[nodes.src.fence]]\nkind = \"ipmi\"\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"oper\"\n\
         password_file = \"{}\"\ntimeout = \"300ms\"\nattempts = 2\npower_timeout = \"5s\"\n",
        pw.display()
    )
}

impl Scenario {
    /// Two pools, a job src -> dst with `extra` keys, replicated `cycles` times.
    fn new(fence: Fence, extra: &str, cycles: usize) -> Option<Scenario> {
        Self::with(fence, extra, cycles, SrcFromDst::Local)
    }

    fn with(fence: Fence, extra: &str, cycles: usize, via: SrcFromDst) -> Option<Scenario> {
        if !zfs_available() {
            return None;
        }
        let ssh = if via == SrcFromDst::Serve {
            Some(ssh_target()?)
        } else {
            None
        };
        let (a, b) = (Pool::new("a"), Pool::new("b"));
        let (src, dst) = (a.ds("vm"), b.ds("vm"));
        zfs(&["create", &src]);
        let bmc = Bmc::start();
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("src.ipmi");
        std::fs::write(&pw, "opsecret\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut silent = Vec::new();
        let mut dead = || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let p = s.local_addr().unwrap().port();
            silent.push(s);
            p
        };
        let levels = match fence {
            Fence::Bmc => level(bmc.port, &pw),
            Fence::DeadThenBmc => format!("{}{}", level(dead(), &pw), level(bmc.port, &pw)),
            Fence::AllDead => format!("{}{}", level(dead(), &pw), level(dead(), &pw)),
            Fence::Watchdog => {
                "[[nodes.src.fence]]\nkind = \"watchdog\"\ntimeout = \"10s\"\nmargin = \"5s\"\n\
                 [quorum]\nmode = \"off\"\n"
                    .into()
            }
        };
        let job = format!(
            "[jobs.j]\nsource = \"src:{src}\"\ntarget = \"dst:{dst}\"\nkeep = 3\n{extra}\n"
        );
        let src_cfg_path = dir.path().join("src.toml");
        // How each node's config names src: itself, or (dst's, with
        // SrcFromDst::Serve) through ssh and src's `tandem serve`, which
        // lets peer dst write src's pool.
        let src_node = |node: &str| {
            match (&ssh, node) {
            (Some((port, key)), "dst") => format!(
                "[nodes.src]\naddress = \"127.0.0.1\"\nssh_user = \"root\"\nssh_port = {port}\n\
                 ssh_identity = \"{}\"\nssh_options = [\"StrictHostKeyChecking=no\", \"UserKnownHostsFile=/dev/null\", \"LogLevel=ERROR\"]\n\
                 transport = \"serve\"\ntandem_path = \"{}\"\nserve_args = [\"--config\", \"{}\", \"--peer\", \"dst\"]\n",
                key.display(),
                env!("CARGO_BIN_EXE_tandem"),
                src_cfg_path.display()
            ),
            (Some(_), _) => format!(
                "[nodes.src]\naddress = \"local\"\n[[serve.peers]]\nname = \"dst\"\nwrite = [\"{}\"]\n",
                a.name
            ),
            (None, _) => "[nodes.src]\naddress = \"local\"\n".into(),
        }
        };
        let cfg = |node: &str| {
            let p = dir.path().join(format!("{node}.toml"));
            std::fs::write(
                &p,
                format!(
                    "state_dir = \"{}/{node}-state\"\nlocal_node = \"{node}\"\n{}{levels}\
                     [nodes.dst]\naddress = \"local\"\n{job}",
                    dir.path().display(),
                    src_node(node)
                ),
            )
            .unwrap();
            p
        };
        let (src_cfg, dst_cfg) = (cfg("src"), cfg("dst"));
        assert_eq!(src_cfg, src_cfg_path);
        let s = Scenario {
            _a: a,
            _b: b,
            src,
            dst,
            bmc,
            _silent: silent,
            dir,
            dst_cfg,
            src_cfg,
        };
        for i in 0..cycles {
            std::fs::write(
                mnt(&s.src).join(format!("synced-{i}")),
                format!("cycle {i}\n"),
            )
            .unwrap();
            let o = s.as_src(&["run", "j"]);
            assert!(o.status.success(), "cycle {i}: {}", text(&o));
        }
        Some(s)
    }

    fn tandem(&self, cfg: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
        c.arg("--config").arg(cfg).args(args).stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// tandem on the old primary.
    fn as_src(&self, args: &[&str]) -> Output {
        self.tandem(&self.src_cfg, args, &[])
    }

    /// tandem on the survivor.
    fn as_dst(&self, args: &[&str]) -> Output {
        self.tandem(&self.dst_cfg, args, &[])
    }

    fn generation(&self, ds: &str) -> String {
        zfs(&["get", "-H", "-o", "value", "tandem:generation", ds])
            .trim()
            .to_string()
    }

    fn writable(&self, ds: &str) -> bool {
        std::fs::write(mnt(ds).join(".probe"), b"x")
            .map(|_| std::fs::remove_file(mnt(ds).join(".probe")).is_ok())
            .unwrap_or(false)
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The expected log: each phrase appears, in this order.
fn expect_log(o: &Output, phrases: &[&str]) {
    let t = text(o);
    let mut at = 0;
    for p in phrases {
        match t[at..].find(p) {
            Some(i) => at += i + p.len(),
            None => panic!("expected {p:?} (in this order) in:\n{t}"),
        }
    }
}

#[test]
fn node_powered_off_failover_then_reverse_loses_nothing() {
    let Some(s) = Scenario::new(Fence::Bmc, "", 2) else {
        return;
    };
    // src writes after the last sync, then dies.
    std::fs::write(
        mnt(&s.src).join("unsynced"),
        b"written on src after the last sync\n",
    )
    .unwrap();
    assert!(
        !s.writable(&s.dst),
        "the replica is read-only before failover"
    );

    let o = s.as_dst(&["failover", "src", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["fenced"], true);
    assert_eq!(v["confirmed_by"], "fence");
    assert_eq!(v["fence"]["attempts"][0]["outcome"], "powered_off");
    let j = &v["jobs"][0];
    assert_eq!(j["ok"], true);
    assert!(j["snapshot"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}@tandem_j_", s.dst)));
    assert!(j["rpo_seconds"].as_i64().unwrap() >= 0);
    eprintln!(
        "failover: writable {} ms after start (fence {} ms)",
        j["writable_after_ms"], v["fence"]["attempts"][0]["elapsed_ms"]
    );
    assert_eq!(
        s.bmc.machine_power(),
        PowerState::Off,
        "src was powered off"
    );
    assert!(s.writable(&s.dst), "the replica is writable");
    assert_eq!(s.generation(&s.dst), "j 1 dst");

    // The new primary takes writes.
    std::fs::write(mnt(&s.dst).join("after-failover"), b"written on dst\n").unwrap();

    // src comes back; its own daemon still thinks it is the primary and
    // must refuse, changing nothing.
    s.bmc.set_machine_power(true);
    let before = (snaps(&s.src), snaps(&s.dst));
    let o = s.as_src(&["run", "j"]);
    assert!(!o.status.success());
    expect_log(
        &o,
        &[
            "was promoted (generation 1, primary dst)",
            "no longer the primary",
            "tandem reverse j",
        ],
    );
    assert_eq!((snaps(&s.src), snaps(&s.dst)), before, "nothing changed");

    // reverse on src: the unsynced write is set aside, src follows dst.
    let o = s.as_src(&["reverse", "j", "--yes"]);
    eprintln!("tandem reverse j:\n{}", text(&o));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    expect_log(
        &o,
        &[
            "now follows",
            "divergent",
            "common snapshot",
            "is kept in",
            "tandem-diverged/j-",
            "zfs list -r -t all",
            "zfs destroy -r",
            "replication",
            "ok",
        ],
    );
    let t = text(&o);
    let diverged = t
        .split_whitespace()
        .find(|w| w.contains("/tandem-diverged/j-"))
        .unwrap()
        .to_string();
    drop_caches();
    // src's divergent write is intact in the set-aside dataset...
    assert_eq!(
        std::fs::read_to_string(mnt(&diverged).join("unsynced")).unwrap(),
        "written on src after the last sync\n"
    );
    // ...and src now follows dst: same newest snapshot, dst's writes there.
    assert_replica(&s.dst, &s.src);
    assert!(mnt(&s.src).join("after-failover").exists());
    assert!(!mnt(&s.src).join("unsynced").exists());
    assert!(!s.writable(&s.src), "the follower is read-only");
    assert_eq!(s.generation(&s.src), "j 1 dst");
    // The transfer was incremental (no full resend).
    let v: serde_json::Value =
        serde_json::from_slice(&s.as_src(&["reverse", "j", "--yes", "--json"]).stdout).unwrap();
    assert_eq!(v["already"], true);

    // dst's daemon replicates dst -> src from now on.
    std::fs::write(mnt(&s.dst).join("later"), b"later\n").unwrap();
    let o = s.as_dst(&["run", "j", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["plans"][0], "incremental");
    assert_replica(&s.dst, &s.src);
}

#[test]
fn network_cut_no_fence_possible_refuses_to_promote() {
    let Some(s) = Scenario::new(Fence::AllDead, "", 1) else {
        return;
    };
    let before = snaps(&s.dst);
    let o = s.as_dst(&["failover", "src"]);
    assert_eq!(o.status.code(), Some(3), "refused = 3: {}", text(&o));
    expect_log(
        &o,
        &[
            "level 1",
            "FAILED",
            "level 2",
            "FAILED",
            "REFUSING to fail over",
            "--confirmed-off",
        ],
    );
    assert!(!s.writable(&s.dst), "still read-only");
    assert_eq!(s.generation(&s.dst), "-");
    assert_eq!(snaps(&s.dst), before);
    // Its primary is unchanged: src still replicates.
    let o = s.as_src(&["run", "j"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn bmc_down_the_second_level_fences() {
    let Some(s) = Scenario::new(Fence::DeadThenBmc, "", 1) else {
        return;
    };
    let o = s.as_dst(&["failover", "src", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["fence"]["attempts"][0]["error_kind"], "timeout");
    assert_eq!(v["fence"]["attempts"][1]["outcome"], "powered_off");
    assert!(s.writable(&s.dst));
}

#[test]
fn a_lying_bmc_is_no_fence() {
    let Some(s) = Scenario::new(Fence::Bmc, "", 1) else {
        return;
    };
    s.bmc.lie();
    let o = s.as_dst(&["failover", "src"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    expect_log(&o, &["power still on", "REFUSING"]);
    assert!(!s.writable(&s.dst));
}

#[test]
fn failover_twice_is_idempotent() {
    let Some(s) = Scenario::new(Fence::Bmc, "", 1) else {
        return;
    };
    let o = s.as_dst(&["failover", "src"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    expect_log(
        &o,
        &[
            "confirmed off",
            "j: promoted",
            "data-loss window",
            "generation 1",
        ],
    );
    s.bmc.set_machine_power(true); // even if it came back, a second run changes nothing
    let o = s.as_dst(&["failover", "src"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    expect_log(&o, &["j: already primary", "generation 1"]);
    assert_eq!(s.bmc.sets(), vec!["set power 0"], "fenced once");
    assert_eq!(s.generation(&s.dst), "j 1 dst");
}

#[test]
fn confirmed_off_takes_the_operators_word_only_with_yes() {
    let Some(s) = Scenario::new(Fence::AllDead, "", 1) else {
        return;
    };
    let o = s.as_dst(&["failover", "src", "--confirmed-off"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("without --yes"), "{}", text(&o));
    assert!(!s.writable(&s.dst));
    let o = s.as_dst(&["failover", "src", "--confirmed-off", "--yes", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["confirmed_by"], "operator");
    assert!(text(&o).contains("WARNING: promoting without a fence"));
    assert!(s.writable(&s.dst));
}

#[test]
fn reverse_interrupted_after_each_step_is_completed_by_the_next_run() {
    for step in ["recorded", "renamed", "cloned", "promoted", "marked"] {
        let Some(s) = Scenario::new(Fence::Bmc, "", 2) else {
            return;
        };
        std::fs::write(mnt(&s.src).join("unsynced"), format!("tail {step}\n")).unwrap();
        let o = s.as_dst(&["failover", "src"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        std::fs::write(mnt(&s.dst).join("after-failover"), b"on dst\n").unwrap();
        let o = s.tandem(
            &s.src_cfg,
            &["reverse", "j", "--yes"],
            &[("TANDEM_TEST_CRASH_AFTER", step)],
        );
        assert_eq!(o.status.code(), Some(99), "{step}: {}", text(&o));
        let o = s.as_src(&["reverse", "j", "--yes"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "after a crash at {step}: {}",
            text(&o)
        );
        drop_caches();
        let diverged: Vec<String> = zfs(&[
            "list",
            "-H",
            "-o",
            "name",
            "-r",
            &format!("{}/tandem-diverged", s._a.name),
        ])
        .lines()
        .filter(|l| l.contains("/tandem-diverged/j-"))
        .map(str::to_string)
        .collect();
        assert_eq!(
            diverged.len(),
            1,
            "{step}: one set-aside dataset: {diverged:?}"
        );
        assert_eq!(
            std::fs::read_to_string(mnt(&diverged[0]).join("unsynced")).unwrap(),
            format!("tail {step}\n"),
            "{step}: the divergent write is kept"
        );
        assert_replica(&s.dst, &s.src);
        assert!(mnt(&s.src).join("after-failover").exists(), "{step}");
        assert_eq!(s.generation(&s.src), "j 1 dst", "{step}");
        let _ = &s.dir;
    }
}

#[test]
fn switchover_moves_the_primary_back_with_a_final_sync_and_hooks() {
    let hooks = tempfile::tempdir().unwrap();
    let log = hooks.path().join("hooks.log");
    let extra = format!(
        "switchover_stop = \"echo stop $TANDEM_JOB $TANDEM_FROM $TANDEM_TO >> {0}\"\n\
         switchover_start = \"echo start $TANDEM_JOB $TANDEM_FROM $TANDEM_TO >> {0}\"",
        log.display()
    );
    let Some(s) = Scenario::new(Fence::Bmc, &extra, 1) else {
        return;
    };
    std::fs::write(mnt(&s.src).join("last-write"), b"before the switchover\n").unwrap();
    let o = s.as_src(&["reverse", "j", "--switchover", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "stop j src dst\nstart j src dst\n"
    );
    assert_eq!(
        s.bmc.sets(),
        Vec::<String>::new(),
        "a switchover fences nothing"
    );
    // The final sync carried the last write; dst is the primary now.
    assert_replica(&s.src, &s.dst);
    assert!(s.writable(&s.dst));
    assert!(!s.writable(&s.src));
    assert_eq!(s.generation(&s.dst), "j 1 dst");
    assert_eq!(s.generation(&s.src), "j 1 dst");
    // Without a failover, a plain reverse has nothing to do on a fresh job.
}

#[test]
fn a_receive_hanging_on_the_dead_node_is_ended() {
    let Some(s) = Scenario::new(Fence::Bmc, "", 1) else {
        return;
    };
    // A receive whose sender lost power: its stream never ends.
    let mut stuck = Command::new("zfs")
        .args(["receive", &s.dst])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(stuck.try_wait().unwrap().is_none(), "the receive waits");
    let o = s.as_dst(&["failover", "src"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut ended = false;
    for _ in 0..50 {
        if stuck.try_wait().unwrap().is_some() {
            ended = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ended, "failover ended the hanging receive");
    assert!(s.writable(&s.dst));
}

/// Issue 10, defect 1: the watchdog level took "replication stopped" (an
/// old heartbeat file) for "the node reset itself" and promoted a replica
/// while its primary ran. Now it needs corosync's membership; without one
/// it refuses and says why, and nothing changes.
#[test]
fn the_watchdog_level_never_confirms_a_live_node_off_without_a_membership() {
    let Some(s) = Scenario::new(Fence::Watchdog, "", 1) else {
        return;
    };
    // What the old level read: a "last seen" a minute old.
    let seen = s.dir.path().join("dst-state/seen");
    std::fs::create_dir_all(&seen).unwrap();
    std::fs::write(seen.join("src"), b"").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    std::fs::File::options()
        .write(true)
        .open(seen.join("src"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let before = (snaps(&s.dst), s.generation(&s.dst));
    let o = s.as_dst(&["fence", "status", "src"]);
    assert_eq!(o.status.code(), Some(1), "not 2 (off): {}", text(&o));
    assert!(text(&o).contains("no corosync membership"), "{}", text(&o));
    let o = s.as_dst(&["failover", "src", "--yes"]);
    assert_eq!(o.status.code(), Some(3), "refused: {}", text(&o));
    expect_log(
        &o,
        &[
            "watchdog",
            "cannot tell whether the node reset itself",
            "REFUSING",
        ],
    );
    assert!(!s.writable(&s.dst), "the replica stays read-only");
    assert_eq!((snaps(&s.dst), s.generation(&s.dst)), before);
    // The live primary goes on replicating.
    std::fs::write(mnt(&s.src).join("later"), b"later\n").unwrap();
    let o = s.as_src(&["run", "j"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_replica(&s.src, &s.dst);
}

/// Issue 10, defect 2: after a switchover a -> b, b's own state still said
/// a -> b; b's run failed and a later failover on b rolled b back, losing
/// what it wrote. Now the direction comes from the marks: b replicates to
/// a, and failover on b is "already primary" and touches nothing.
#[test]
fn a_failover_after_a_switchover_keeps_the_new_primarys_writes() {
    let Some(s) = Scenario::new(Fence::AllDead, "", 1) else {
        return;
    };
    let o = s.as_src(&["reverse", "j", "--switchover", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(s.generation(&s.dst), "j 1 dst");
    std::fs::write(mnt(&s.dst).join("after-switchover"), b"written on dst\n").unwrap();
    // dst's own run and status know the new direction without being told.
    let o = s.as_dst(&["run", "j", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["source"], format!("dst:{}", s.dst), "{v}");
    assert_eq!(v[0]["plans"][0], "incremental", "{v}");
    assert_replica(&s.dst, &s.src);
    let o = s.as_dst(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["source"], format!("dst:{}", s.dst), "{v}");
    assert_eq!(v[0]["role"], "primary", "{v}");
    std::fs::write(mnt(&s.dst).join("unsynced"), b"not yet replicated\n").unwrap();
    // src dies; on dst the operator vouches for it.
    let before = snaps(&s.dst);
    let o = s.as_dst(&["failover", "src", "--confirmed-off", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    expect_log(
        &o,
        &["j: already primary", "generation 1", "nothing touched"],
    );
    assert_eq!(snaps(&s.dst), before, "nothing rolled back or snapshotted");
    assert_eq!(
        std::fs::read_to_string(mnt(&s.dst).join("unsynced")).unwrap(),
        "not yet replicated\n",
        "the write after the last sync is still there"
    );
    assert!(s.writable(&s.dst));
    assert_eq!(s.generation(&s.dst), "j 1 dst");
}

/// reverse runs on the new primary too: dst turns src around through
/// src's `tandem serve` over ssh (rename, clone, promote, mark), and what
/// src wrote after the last sync is kept on src.
#[test]
fn reverse_on_the_new_primary_turns_the_old_one_around_over_serve() {
    let Some(s) = Scenario::with(Fence::Bmc, "", 2, SrcFromDst::Serve) else {
        return;
    };
    std::fs::write(mnt(&s.src).join("unsynced"), b"src's last write\n").unwrap();
    let o = s.as_dst(&["failover", "src"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    std::fs::write(mnt(&s.dst).join("after-failover"), b"on dst\n").unwrap();
    s.bmc.set_machine_power(true);
    let o = s.as_dst(&["reverse", "j", "--yes"]);
    eprintln!("tandem reverse j (on dst):\n{}", text(&o));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    expect_log(
        &o,
        &[
            "now follows",
            "divergent",
            "is kept in",
            "tandem-diverged/j-",
            "replication",
            "ok",
        ],
    );
    let diverged = text(&o)
        .split_whitespace()
        .find(|w| w.contains("/tandem-diverged/j-"))
        .unwrap()
        .to_string();
    assert!(
        diverged.starts_with(&s._a.name),
        "set aside on src's pool: {diverged}"
    );
    drop_caches();
    assert_eq!(
        std::fs::read_to_string(mnt(&diverged).join("unsynced")).unwrap(),
        "src's last write\n"
    );
    assert_replica(&s.dst, &s.src);
    assert!(!s.writable(&s.src));
    assert_eq!(s.generation(&s.src), "j 1 dst");
}

/// A running daemon reads the job's direction from the marks at every run:
/// dst's daemon leaves the job to src's while src is the primary, and
/// replicates dst -> src by itself after a switchover made on src, without
/// a restart or a reload.
#[test]
fn a_daemon_picks_up_a_switchover_made_elsewhere_without_a_restart() {
    let Some(s) = Scenario::with(Fence::Bmc, "interval = \"1s\"", 1, SrcFromDst::Serve) else {
        return;
    };
    let log = s.dir.path().join("dst-daemon.log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--config")
        .arg(&s.dst_cfg)
        .arg("daemon")
        .env("TANDEM_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // src is the primary: dst's daemon only follows.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let on_src_before = snaps(&s.src);
    let o = s.as_src(&["reverse", "j", "--switchover", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    std::fs::write(mnt(&s.dst).join("after-switchover"), b"on dst\n").unwrap();
    let t = std::time::Instant::now();
    loop {
        drop_caches();
        if mnt(&s.src).join("after-switchover").exists() {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "dst's daemon never replicated after the switchover:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
    let daemon_log = std::fs::read_to_string(&log).unwrap();
    assert!(daemon_log.contains("cycle ok"), "{daemon_log}");
    assert_ne!(snaps(&s.src), on_src_before, "src received from dst");
    assert_replica(&s.dst, &s.src);
    eprintln!(
        "dst's daemon replicated dst -> src {:.1?} after the switchover",
        t.elapsed()
    );
}

/// One job's corrupt state file: failover still promotes it (from the
/// marks), moves the file aside and says so.
#[test]
fn a_corrupt_state_file_does_not_stop_a_failover() {
    let Some(s) = Scenario::new(Fence::Bmc, "", 1) else {
        return;
    };
    let state = s.dir.path().join("dst-state/jobs/j.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(&state, b"{\"direction\": ").unwrap();
    let o = s.as_dst(&["failover", "src", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["jobs"][0]["outcome"], "promoted", "{v}");
    let w = v["jobs"][0]["warnings"][0].as_str().unwrap();
    assert!(
        w.contains("was corrupt") && w.contains("moved aside"),
        "{w}"
    );
    assert!(s.writable(&s.dst));
    let kept: Vec<_> = std::fs::read_dir(state.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
        .collect();
    assert_eq!(kept.len(), 1, "the corrupt file is kept for a look");
}

/// A hook script in `dir` that appends "JOB FROM TO" to `dir/ran` and
/// exits with `code`.
fn counting_hook(dir: &std::path::Path, code: i32) -> PathBuf {
    let p = dir.join(format!("hook-{code}"));
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$TANDEM_HOOK $TANDEM_JOB $TANDEM_FROM $TANDEM_TO\" >> {}/ran\nexit {code}\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// `tandem failover` by hand starts the workload as the daemon does: the
/// job's on_promote runs once per promotion (a second failover does not
/// run it again), `--no-start` promotes only, and a failing hook is exit 1
/// with the promotion kept.
#[test]
fn a_manual_failover_runs_on_promote_once_and_no_start_skips_it() {
    let hooks = tempfile::tempdir().unwrap();
    let ok = counting_hook(hooks.path(), 0);
    let Some(s) = Scenario::new(
        Fence::Bmc,
        &format!("on_promote = \"{}\"\n", ok.display()),
        1,
    ) else {
        return;
    };
    let ran = || std::fs::read_to_string(hooks.path().join("ran")).unwrap_or_default();
    let o = s.as_dst(&["failover", "src"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    expect_log(&o, &["j: promoted", "j: on_promote succeeded"]);
    assert_eq!(ran(), "on_promote j src dst\n");
    let o = s.as_dst(&["failover", "src", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["jobs"][0]["outcome"], "already_primary", "{v}");
    assert_eq!(ran(), "on_promote j src dst\n", "not run twice");
    drop(s);

    let Some(s) = Scenario::new(
        Fence::Bmc,
        &format!("on_promote = \"{}\"\n", ok.display()),
        1,
    ) else {
        return;
    };
    std::fs::remove_file(hooks.path().join("ran")).unwrap();
    let o = s.as_dst(&["failover", "src", "--no-start", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hooks"], serde_json::json!({}), "{v}");
    assert_eq!(v["jobs"][0]["outcome"], "promoted", "{v}");
    assert!(s.writable(&s.dst));
    assert_eq!(ran(), "", "--no-start runs no hook");
    drop(s);

    let failing = counting_hook(hooks.path(), 7);
    let Some(s) = Scenario::new(
        Fence::Bmc,
        &format!("on_promote = \"{}\"\n", failing.display()),
        1,
    ) else {
        return;
    };
    let o = s.as_dst(&["failover", "src"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    expect_log(&o, &["j: promoted", "j: on_promote FAILED"]);
    assert!(s.writable(&s.dst), "the promotion stands");
    assert_eq!(ran(), "on_promote j src dst\n");
}
