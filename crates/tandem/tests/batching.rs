//! One cycle over many jobs against real ZFS (zfs-fuse), with every `zfs`
//! process counted through a `zfs_path` wrapper: the cycle lists each node
//! once to plan and once to check every transfer, and takes all holds and
//! releases of a node in one `zfs hold` and one `zfs release`; per job it
//! runs only what ZFS cannot batch (snapshot, send, receive, destroy). The
//! holds land where they must (the newest common snapshot of every job
//! held on both sides, older ones not), and a hold made before tandem 0.2
//! (tagged with the job's name) is released and its snapshot pruned.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use std::collections::BTreeMap;

const JOBS: usize = 4;

fn userrefs(snap: &str) -> u64 {
    zfs(&["get", "-H", "-p", "-o", "value", "userrefs", snap])
        .trim()
        .parse()
        .unwrap()
}

/// The job's own snapshots on `ds`, oldest first.
fn own(ds: &str, job: &str) -> Vec<String> {
    snaps(ds)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with(&format!("tandem_{job}_")))
        .collect()
}

/// Puts a wrapper in front of both nodes' `zfs`: `script` runs first (with
/// the arguments in `$@`), then the real `zfs`.
fn wrap_zfs(env: &Env, script: &str) {
    let wrapper = env.dir.path().join("zfs-wrapper");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\n{script}exec /usr/sbin/zfs \"$@\"\n"),
    )
    .unwrap();
    cmd("chmod", &["755", wrapper.to_str().unwrap()]);
    let zfs_path = format!("zfs_path = \"{}\"\n", wrapper.display());
    for node in ["src", "dst"] {
        let from = format!("[nodes.{node}]\naddress = \"local\"\n");
        env.rewrite(&from, &format!("{from}{zfs_path}"));
    }
}

#[test]
fn a_cycle_of_many_jobs_holds_and_releases_once_per_node() {
    if !zfs_available() {
        return;
    }
    let a = Pool::new("ba");
    let b = Pool::new("bb");
    zfs(&["create", &b.ds("r")]);
    let mut jobs = String::new();
    for i in 0..JOBS {
        zfs(&["create", &a.ds(&format!("d{i}"))]);
        jobs.push_str(&job(
            &format!("j{i}"),
            &a.ds(&format!("d{i}")),
            &b.ds(&format!("r/d{i}")),
            "",
        ));
    }
    let env = Env::new(Via::Local, &jobs).unwrap();
    // Every zfs process of both (local) nodes, one line each: its subcommand.
    let log = env.dir.path().join("zfs.log");
    wrap_zfs(&env, &format!("echo \"$1\" >> {}\n", log.display()));
    let run_all = || {
        let o = env.tandem(&["run"]);
        assert!(
            o.status.success(),
            "tandem run failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run_all(); // full sends
    run_all(); // the first incrementals: two own snapshots on each side

    // A hold from before tandem 0.2 on job j0's common snapshot, on both
    // sides, instead of the peer tag.
    let old_common = own(&a.ds("d0"), "j0").last().unwrap().clone();
    for (ds, tag) in [(a.ds("d0"), "tandem_@dst"), (b.ds("r/d0"), "tandem_@src")] {
        let snap = format!("{ds}@{old_common}");
        zfs(&["release", tag, &snap]);
        zfs(&["hold", "tandem_j0", &snap]);
    }

    std::fs::write(&log, "").unwrap();
    run_all();
    let calls: BTreeMap<String, usize> =
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .fold(BTreeMap::new(), |mut m, l| {
                *m.entry(l.to_owned()).or_default() += 1;
                m
            });
    let n = |c: &str| calls.get(c).copied().unwrap_or(0);
    // Batched, per node: one listing to plan and one to check, one hold,
    // one release of the peer tag, plus one release of j0's old tag.
    assert_eq!(n("get"), 4, "zfs get per cycle: {calls:?}");
    assert_eq!(n("hold"), 2, "zfs hold per cycle: {calls:?}");
    assert_eq!(n("release"), 2 + 2, "zfs release per cycle: {calls:?}");
    // Per job, what ZFS cannot batch (zfs-fuse takes one name per
    // snapshot and destroy): keep = 2, so each side prunes one.
    assert_eq!(n("snapshot"), JOBS, "{calls:?}");
    assert_eq!(n("send"), JOBS, "{calls:?}");
    assert_eq!(n("receive"), JOBS, "{calls:?}");
    assert_eq!(n("destroy"), 2 * JOBS, "{calls:?}");

    for i in 0..JOBS {
        let (s, d) = (a.ds(&format!("d{i}")), b.ds(&format!("r/d{i}")));
        let job = format!("j{i}");
        let (so, dso) = (own(&s, &job), own(&d, &job));
        assert_eq!(so.len(), 2, "{s}: {so:?}");
        assert_eq!(so, dso, "both sides keep the same two");
        let guids = |ds: &str| snaps(ds).into_iter().map(|(_, g)| g).collect::<Vec<_>>();
        assert_eq!(
            guids(&s).last(),
            guids(&d).last(),
            "{job}: newest GUIDs differ"
        );
        for ds in [&s, &d] {
            assert_eq!(userrefs(&format!("{ds}@{}", so[1])), 1, "{ds}: newest held");
            assert_eq!(
                userrefs(&format!("{ds}@{}", so[0])),
                0,
                "{ds}: older released"
            );
        }
    }
    // j0's pre-0.2 hold is gone with the peer tag's: the snapshot it held
    // is the older of the two kept, unheld.
    assert_eq!(own(&a.ds("d0"), "j0")[0], old_common);
    for ds in [a.ds("d0"), b.ds("r/d0")] {
        assert!(
            !zfs_try(&["release", "tandem_j0", &format!("{ds}@{old_common}")])
                .status
                .success(),
            "{ds}@{old_common} still carries tandem_j0"
        );
    }
}

#[test]
fn a_hold_that_fails_keeps_the_older_common_snapshot_held_and_unpruned() {
    if !zfs_available() {
        return;
    }
    let a = Pool::new("ha");
    let b = Pool::new("hb");
    let (src, dst) = (a.ds("d"), b.ds("d"));
    zfs(&["create", &src]);
    let env = Env::new(
        Via::Local,
        &job("h", &src, &dst, "").replace("keep = 2", "keep = 1"),
    )
    .unwrap();
    // A zfs that refuses every hold while the flag file exists.
    let flag = env.dir.path().join("refuse-holds");
    wrap_zfs(
        &env,
        &format!(
            "if [ \"$1\" = hold ] && [ -e {} ]; then\n  shift 2\n  for s in \"$@\"; do echo \"cannot hold '$s': permission denied\" >&2; done\n  exit 1\nfi\n",
            flag.display()
        ),
    );
    env.run_ok("h");
    env.run_ok("h");
    let base = own(&src, "h");
    assert_eq!(base.len(), 1, "keep = 1: {base:?}");
    let base = base[0].clone();

    std::fs::write(&flag, "").unwrap();
    let out = env.tandem(&["run", "h"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("permission denied"),
        "the failed hold is reported:\n{text}"
    );
    for ds in [&src, &dst] {
        let kept = own(ds, "h");
        assert_eq!(kept.len(), 2, "{ds}: the base is not pruned: {kept:?}");
        assert_eq!(kept[0], base);
        assert_eq!(
            userrefs(&format!("{ds}@{base}")),
            1,
            "{ds}: base still held"
        );
        assert_eq!(
            userrefs(&format!("{ds}@{}", kept[1])),
            0,
            "{ds}: new one unheld"
        );
    }

    // Holds work again: the next cycle converges.
    std::fs::remove_file(&flag).unwrap();
    env.run_ok("h");
    for ds in [&src, &dst] {
        let kept = own(ds, "h");
        assert_eq!(kept.len(), 1, "{ds}: {kept:?}");
        assert_ne!(kept[0], base);
        assert_eq!(
            userrefs(&format!("{ds}@{}", kept[0])),
            1,
            "{ds}: newest held"
        );
    }
}
