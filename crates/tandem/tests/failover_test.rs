//! `tandem failover --test JOB` against real pools (zfs-fuse here): the
//! hook sees the replicated data in a clone, nothing else changes, the
//! clone goes away (also after a crash), the primary's node refuses, a
//! failing hook fails the test, and replication goes on while the hook
//! runs.
//!
//! Two nodes share this machine, each with its own config and state:
//! `src` (the primary) and `dst` (the follower, where the test runs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Drill {
    _a: Pool,
    b: Pool,
    src: String,
    dst: String,
    dir: tempfile::TempDir,
    src_cfg: PathBuf,
    dst_cfg: PathBuf,
}

/// The on_test hook: waits for `go` if asked to, then records what it
/// was given and the checksum of `data.bin` in the clone; `fail` makes it
/// fail after that.
const HOOK: &str = r#"#!/bin/sh
set -eu
out="$1"; mode="${2:-}"
env | grep '^TANDEM_' | sort > "$out/env"
if [ "$mode" = wait ]; then
    i=0
    while [ ! -e "$out/go" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
fi
for ds in $TANDEM_DATASETS; do
    mp=$(zfs get -H -o value mountpoint "$ds")
    sha256sum < "$mp/data.bin" | cut -d' ' -f1 > "$out/sum"
    zfs get -H -o value readonly "$ds" > "$out/readonly"
    echo "test guest was here" > "$mp/written-by-test"
done
if [ "$mode" = fail ]; then echo "the test guest did not boot" >&2; exit 3; fi
echo "checked $TANDEM_DATASETS"
"#;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

impl Drill {
    /// Two pools, a job src -> dst with an on_test hook in `mode`,
    /// replicated once.
    fn new(mode: &str) -> Option<Drill> {
        if !zfs_available() {
            return None;
        }
        let (a, b) = (Pool::new("a"), Pool::new("b"));
        let (src, dst) = (a.ds("vm-100-disk-0"), b.ds("vm-100-disk-0"));
        zfs(&["create", &src]);
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("hook.sh");
        std::fs::write(&hook, HOOK).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let job = format!(
            "[jobs.j]\nsource = \"src:{src}\"\ntarget = \"dst:{dst}\"\nkeep = 2\n\
             on_test = \"sh {} {} {mode}\"\non_test_timeout = \"90s\"\nguest = \"vm:100\"\n",
            hook.display(),
            out.display()
        );
        let cfg = |node: &str| {
            let p = dir.path().join(format!("{node}.toml"));
            std::fs::write(
                &p,
                format!(
                    "state_dir = \"{}/{node}-state\"\nlocal_node = \"{node}\"\n[quorum]\nmode = \"off\"\n\
                     [nodes.src]\naddress = \"local\"\n[nodes.dst]\naddress = \"local\"\n{job}",
                    dir.path().display()
                ),
            )
            .unwrap();
            p
        };
        let (src_cfg, dst_cfg) = (cfg("src"), cfg("dst"));
        let d = Drill {
            _a: a,
            b,
            src,
            dst,
            dir,
            src_cfg,
            dst_cfg,
        };
        write_random(&mnt(&d.src).join("data.bin"), 1 << 20, 1);
        d.run_ok();
        Some(d)
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn tandem(&self, cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
        c.arg("--config").arg(cfg).args(args).stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn as_dst(&self, args: &[&str]) -> Output {
        self.tandem(&self.dst_cfg, args, &[])
    }

    fn run_ok(&self) {
        let o = self.tandem(&self.src_cfg, &["run", "j"], &[]);
        assert!(o.status.success(), "tandem run j on src: {}", text(&o));
    }

    /// Everything about both datasets a test must not change: GUIDs,
    /// `written` and `referenced`, `readonly`, holds, marks and origins of
    /// each and of every snapshot.
    fn state(&self) -> String {
        // zfs-fuse has no `written`; `referenced` stands in for it there.
        let written = zfs_try(&["get", "-H", "written", &self.dst])
            .status
            .success();
        let props = format!(
            "guid,{},readonly,userrefs,tandem:generation,origin",
            if written {
                "written,referenced"
            } else {
                "referenced"
            }
        );
        zfs(&[
            "get",
            "-H",
            "-p",
            "-o",
            "name,property,value",
            "-r",
            &props,
            &self.src,
            &self.dst,
        ])
    }

    fn scratch(&self) -> String {
        format!("{}/tandem-test", self.b.name)
    }

    fn test(&self, env: &[(&str, &str)]) -> (Output, Option<serde_json::Value>) {
        let o = self.tandem(&self.dst_cfg, &["failover", "--test", "j", "--json"], env);
        let v = serde_json::from_slice(&o.stdout).ok();
        (o, v)
    }
}

#[test]
fn the_hook_sees_the_replicated_data_and_nothing_changes() {
    let Some(d) = Drill::new("") else { return };
    let at_snapshot = sha256(&mnt(&d.src).join("data.bin"));
    // Written after the last sync: a failover now would lose it, and the
    // clone must not have it.
    write_random(&mnt(&d.src).join("data.bin"), 1 << 20, 2);
    std::thread::sleep(Duration::from_millis(1100));
    let before = d.state();
    let snaps_before = snaps(&d.dst);

    let t = Instant::now();
    let (o, v) = d.test(&[]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = v.expect("JSON report");
    assert_eq!(v["hook"]["result"], "ok", "{v}");
    assert_eq!(v["cleaned_up"], true, "{v}");
    assert_eq!(v["primary"], "src");
    assert_eq!(v["node"], "dst");
    let newest = snaps_before.last().unwrap();
    assert_eq!(v["snapshot"], format!("{}@{}", d.dst, newest.0));
    assert_eq!(v["snapshot_guid"], newest.1);
    assert!(v["rpo_seconds"].as_i64().unwrap() >= 1, "{v}");
    let clone = format!("{}/j/vm-100-disk-0", d.scratch());
    assert_eq!(v["clones"][0], clone);

    // The hook read the replicated bytes, from a writable clone.
    let seen = std::fs::read_to_string(d.out().join("sum")).unwrap();
    assert_eq!(
        seen.trim(),
        at_snapshot,
        "the clone holds data.bin as of the snapshot"
    );
    assert_eq!(
        std::fs::read_to_string(d.out().join("readonly"))
            .unwrap()
            .trim(),
        "off"
    );
    let env = std::fs::read_to_string(d.out().join("env")).unwrap();
    for want in [
        "TANDEM_HOOK=on_test".to_owned(),
        "TANDEM_JOB=j".into(),
        "TANDEM_FROM=src".into(),
        "TANDEM_TO=dst".into(),
        "TANDEM_GUEST=vm:100".into(),
        format!("TANDEM_DATASETS={clone}"),
        format!("TANDEM_SNAPSHOT={}@{}", d.dst, newest.0),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in:\n{env}");
    }

    // Nothing changed, and nothing is left.
    assert_eq!(d.state(), before, "the replica or the source changed");
    assert_eq!(snaps(&d.dst), snaps_before);
    assert!(!exists(&d.scratch()), "the scratch place is gone");
    assert!(
        !mnt(&d.dst).join("written-by-test").exists(),
        "the test guest's write went into the clone, not the replica"
    );

    // Replication goes on as before.
    d.run_ok();
    assert_replica(&d.src, &d.dst);
    eprintln!(
        "failover --test on zfs-fuse: {:.2} s wall ({} ms by the report, hook {} ms)",
        took.as_secs_f64(),
        v["elapsed_ms"],
        v["hook"]["elapsed_ms"]
    );
}

#[test]
fn a_crash_leaves_clones_that_cleanup_and_the_next_test_remove() {
    let Some(d) = Drill::new("") else { return };
    let (o, _) = d.test(&[("TANDEM_TEST_CRASH_AFTER", "cloned")]);
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let clone = format!("{}/j/vm-100-disk-0", d.scratch());
    assert!(exists(&clone), "the crash left the clone");
    // While it exists, replication still works.
    write_random(&mnt(&d.src).join("data.bin"), 1 << 20, 3);
    d.run_ok();

    let o = d.as_dst(&["failover", "--cleanup", "j"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("destroyed {clone}")),
        "{}",
        text(&o)
    );
    assert!(!exists(&d.scratch()));

    let (o, _) = d.test(&[("TANDEM_TEST_CRASH_AFTER", "cloned")]);
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    assert!(exists(&clone));
    let (o, v) = d.test(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = v.unwrap();
    let removed: Vec<&str> = v["leftovers_removed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert!(removed.contains(&clone.as_str()), "{v}");
    assert!(!exists(&d.scratch()));
    // --cleanup without a job: every job here; nothing is left to do.
    let o = d.as_dst(&["failover", "--cleanup"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("j: nothing left"), "{}", text(&o));
    d.run_ok();
    assert_replica(&d.src, &d.dst);
}

#[test]
fn the_primarys_node_refuses_and_changes_nothing() {
    let Some(d) = Drill::new("") else { return };
    let before = d.state();
    let o = d.tandem(&d.src_cfg, &["failover", "--test", "j"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("src is the job's primary") && t.contains("on the follower (dst)"),
        "{t}"
    );
    assert_eq!(d.state(), before);
    assert!(!exists(&format!("{}/tandem-test", d._a.name)));
    assert!(!d.out().join("env").exists(), "the hook did not run");
}

#[test]
fn a_failing_hook_fails_the_test_and_the_clones_still_go() {
    let Some(d) = Drill::new("fail") else { return };
    let before = d.state();
    let (o, v) = d.test(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v = v.unwrap();
    assert_eq!(v["hook"]["result"], "failed", "{v}");
    assert!(
        v["hook"]["error"]
            .as_str()
            .unwrap()
            .contains("the test guest did not boot"),
        "{v}"
    );
    assert_eq!(v["cleaned_up"], true);
    assert!(!exists(&d.scratch()));
    assert_eq!(d.state(), before);
    // The human form says so too.
    let o = d.as_dst(&["failover", "--test", "j"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("on_test: FAILED"), "{}", text(&o));
}

#[test]
fn replication_goes_on_while_the_hook_runs() {
    let Some(d) = Drill::new("wait") else { return };
    let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--config")
        .arg(&d.dst_cfg)
        .args(["failover", "--test", "j", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the hook runs (it waits for `go`).
    let t = Instant::now();
    while !d.out().join("env").exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "the hook never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let origin = snaps(&d.dst).last().unwrap().clone();
    // Two cycles while the clone exists: with keep = 2 the second prunes
    // the clone's origin on the source, and must keep it on the replica.
    for seed in [10, 11] {
        write_random(&mnt(&d.src).join("data.bin"), 1 << 20, seed);
        std::thread::sleep(Duration::from_millis(1100));
        let t = Instant::now();
        d.run_ok();
        eprintln!(
            "a cycle while the test's hook runs: {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
    assert!(
        snaps(&d.dst).iter().any(|s| s.1 == origin.1),
        "the clone's origin is kept on the replica while the clone exists"
    );
    std::fs::write(d.out().join("go"), b"").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["snapshot_guid"], origin.1);
    assert_eq!(v["cleaned_up"], true, "{v}");
    assert!(!exists(&d.scratch()));
    // The next cycle prunes what the clone kept, and both sides agree.
    write_random(&mnt(&d.src).join("data.bin"), 1 << 20, 12);
    d.run_ok();
    assert!(!snaps(&d.dst).iter().any(|s| s.1 == origin.1), "pruned now");
    assert_replica(&d.src, &d.dst);
}
