//! Fan-out against real ZFS (zfs-fuse): one job sends to two targets
//! (`target = [...]`), the second one over the loopback sshd so that it
//! can be taken down for real (its ssh port closed). Each cycle takes one
//! snapshot, sent to each target from its own base; a target that is down
//! fails its leg only; the source keeps the snapshot the absent target
//! still needs (held under its own tag) and the target catches up
//! incrementally when it is back.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;

/// `tandem run --json` of every job: (rows by leg, exit success).
fn run_json(env: &Env) -> (std::collections::BTreeMap<String, serde_json::Value>, bool) {
    let o = env.tandem(&["run", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "run --json: {e}\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let rows = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["job"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    (rows, o.status.success())
}

/// How many holds a snapshot has (zfs-fuse's `zfs holds` needs a Python
/// module Debian does not ship; `userrefs` counts them).
fn userrefs(snapshot: &str) -> u64 {
    zfs(&["get", "-H", "-p", "-o", "value", "userrefs", snapshot])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn one_snapshot_per_cycle_to_each_target_and_a_target_that_is_down_holds_no_one_back() {
    if !zfs_available() {
        return;
    }
    let Some((port, key)) = ssh_target() else {
        return;
    };
    let (a, b, c) = (Pool::new("a"), Pool::new("b"), Pool::new("c"));
    let (src, dst, far) = (a.ds("vm"), b.ds("vm"), c.ds("vm"));
    let disks = ["disk-0", "disk-1"];
    let (gsrc, gdst, gfar) = (a.ds("guest"), b.ds("guest"), c.ds("guest"));
    zfs(&["create", &src]);
    for d in disks {
        zfs(&["create", "-p", &format!("{gsrc}/{d}")]);
    }
    zfs(&["create", &gdst]);
    zfs(&["create", &gfar]);
    let far_node = format!(
        "[nodes.far]\naddress = \"127.0.0.1\"\nssh_user = \"root\"\nssh_port = {port}\n\
         ssh_identity = \"{}\"\nssh_options = [\"StrictHostKeyChecking=no\", \
         \"UserKnownHostsFile=/dev/null\", \"LogLevel=ERROR\", \"ConnectTimeout=5\"]\n\
         zfs_path = \"/usr/sbin/zfs\"\ntransport = \"ssh\"\n",
        key.display()
    );
    let jobs = format!(
        "[jobs.f]\nsource = \"src:{src}\"\ntarget = [\"dst:{dst}\", \"far:{far}\"]\nkeep = 2\n\
         [jobs.g]\nsource = \"src:{gsrc}\"\ntarget = [\"dst:{gdst}\", \"far:{gfar}\"]\nkeep = 2\n\
         datasets = [\"disk-0\", \"disk-1\"]\n{far_node}"
    );
    let env = Env::new(Via::Local, &jobs).unwrap();
    let members =
        |root: &str| -> Vec<String> { disks.iter().map(|d| format!("{root}/{d}")).collect() };
    let write = |seed: u64| {
        write_random(&mnt(&src).join(format!("f{seed}")), 256 << 10, seed);
        for (i, m) in members(&gsrc).iter().enumerate() {
            write_random(
                &mnt(m).join(format!("f{seed}")),
                128 << 10,
                seed * 10 + i as u64,
            );
        }
    };
    let names = |ds: &str| -> Vec<String> { snaps(ds).into_iter().map(|s| s.0).collect() };

    // Cycle 1: both targets get a full copy of the one snapshot.
    write(1);
    let (rows, ok) = run_json(&env);
    assert!(ok, "{rows:?}");
    for leg in ["f@dst", "f@far", "g@dst", "g@far"] {
        assert_eq!(rows[leg]["ok"], true, "{leg}: {}", rows[leg]);
        assert!(
            rows[leg]["plans"].to_string().contains("full"),
            "{}",
            rows[leg]
        );
    }
    assert_eq!(names(&src).len(), 1, "one snapshot for both targets");
    assert_replica(&src, &dst);
    assert_replica(&src, &far);
    for (s, (d, f)) in members(&gsrc)
        .iter()
        .zip(members(&gdst).iter().zip(&members(&gfar)))
    {
        assert_eq!(names(s).len(), 1, "{s}: one snapshot for both targets");
        assert_replica(s, d);
        assert_replica(s, f);
    }
    let first = snaps(&src)[0].clone();
    // Each target holds the common snapshot on the source, under its own
    // tag (tandem_@dst, tandem_@far).
    assert_eq!(userrefs(&format!("{src}@{}", first.0)), 2);

    // Cycles 2..4 with `far` down: its legs fail, `dst` keeps up, and the
    // source keeps the snapshot `far` needs.
    env.rewrite(
        &format!("ssh_port = {port}"),
        &format!("ssh_port = {}", free_port()),
    );
    for seed in 2..=4 {
        write(seed);
        let before = names(&src);
        let (rows, ok) = run_json(&env);
        assert!(!ok, "a failed leg fails the run");
        for job in ["f", "g"] {
            let (up, down) = (&rows[&format!("{job}@dst")], &rows[&format!("{job}@far")]);
            assert_eq!(up["ok"], true, "{up}");
            assert!(up["plans"].to_string().contains("incremental"), "{up}");
            assert_eq!(up["warnings"].as_array().map(Vec::len), Some(0), "{up}");
            assert_eq!(down["ok"], false, "{down}");
            assert!(
                down["error"].as_str().unwrap().contains("far"),
                "the error names the node: {down}"
            );
        }
        let after = names(&src);
        assert_eq!(
            after.iter().filter(|n| !before.contains(n)).count(),
            1,
            "one new snapshot in cycle {seed}: {before:?} -> {after:?}"
        );
        assert_replica(&src, &dst);
        for (s, d) in members(&gsrc).iter().zip(&members(&gdst)) {
            assert_replica(s, d);
        }
        assert_eq!(
            snaps(&far),
            std::slice::from_ref(&first),
            "far is untouched"
        );
        assert!(
            snaps(&src).contains(&first),
            "cycle {seed}: the source destroyed what far still needs: {after:?}"
        );
        assert_eq!(
            userrefs(&format!("{src}@{}", first.0)),
            1,
            "far's hold only"
        );
        for (m, f) in members(&gsrc).iter().zip(&members(&gfar)) {
            let theirs = snaps(f);
            assert_eq!(theirs.len(), 1, "{f} is untouched");
            assert!(
                snaps(m).contains(&theirs[0]),
                "cycle {seed}: {m} lost what far still needs: {:?}",
                names(m)
            );
        }
        // keep = 2 on dst; the source keeps 2 plus far's common.
        assert!(names(&dst).len() <= 2, "{:?}", names(&dst));
        assert!(after.len() <= 3, "cycle {seed}: {after:?}");
    }

    // `far` is back: it catches up from its own base, incrementally.
    env.rewrite(
        &format!("ssh_port = {}", free_port_rewritten(&env)),
        &format!("ssh_port = {port}"),
    );
    write(5);
    let (rows, ok) = run_json(&env);
    assert!(ok, "{rows:?}");
    for leg in ["f@far", "g@far"] {
        assert!(
            rows[leg]["plans"].to_string().contains("incremental"),
            "{leg} resumes from its common snapshot: {}",
            rows[leg]
        );
    }
    assert_replica(&src, &dst);
    assert_replica(&src, &far);
    for (s, (d, f)) in members(&gsrc)
        .iter()
        .zip(members(&gdst).iter().zip(&members(&gfar)))
    {
        assert_replica(s, d);
        assert_replica(s, f);
    }
    // Once far no longer needs it, the old snapshot goes (a cycle after
    // its hold was released) and retention is back to keep = 2.
    write(6);
    let (rows, ok) = run_json(&env);
    assert!(ok, "{rows:?}");
    assert!(!snaps(&src).contains(&first), "{:?}", names(&src));
    assert_eq!(names(&src).len(), 2, "{:?}", names(&src));

    // status has a row per target.
    let o = env.tandem(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let jobs: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["f@dst", "f@far", "g@dst", "g@far"]);

    // Commands that change a primary refuse a fan-out job, changing nothing.
    let (pa, pb, pc) = (pool_state(&a), pool_state(&b), pool_state(&c));
    for args in [
        &["reverse", "f", "--yes"][..],
        &["failover", "--test", "g"][..],
    ] {
        let o = env.tandem(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            err.contains("sends to several targets (fan-out)"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        (pool_state(&a), pool_state(&b), pool_state(&c)),
        (pa, pb, pc)
    );
}

/// The closed port the test wrote into the config.
fn free_port_rewritten(env: &Env) -> u16 {
    let t = std::fs::read_to_string(&env.config).unwrap();
    let at = t.find("[nodes.far]").unwrap();
    t[at..]
        .lines()
        .find_map(|l| l.strip_prefix("ssh_port = "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
