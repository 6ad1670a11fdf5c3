//! Guest jobs against real ZFS (zfs-fuse): a job over a VM's three disks
//! (`datasets = [...]`) and a job over a whole tree (`recursive = true`),
//! over every transport. Each cycle must leave one snapshot name on every
//! dataset, equal GUIDs on both sides and equal files; a recursive job's
//! snapshots share one `createtxg` (one transaction group); a disk that is
//! missing stops the job before anything is snapshotted.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;

const DISKS: [&str; 3] = ["vm-100-disk-0", "vm-100-disk-1", "vm-100-efi"];

fn createtxg(snapshot: &str) -> u64 {
    zfs(&["get", "-H", "-p", "-o", "value", "createtxg", snapshot])
        .trim()
        .parse()
        .unwrap()
}

/// Destroys `ds` after releasing the job's holds on its snapshots.
fn destroy_held(ds: &str) {
    for (s, _) in snaps(ds) {
        for tag in ["tandem_@src", "tandem_@dst"] {
            let _ = zfs_try(&["release", tag, &format!("{ds}@{s}")]);
        }
    }
    // zfs-fuse calls a filesystem busy for a moment after a receive or a
    // write through its mount.
    for _ in 0..30 {
        if zfs_try(&["destroy", "-r", ds]).status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    zfs(&["destroy", "-r", ds]);
}

fn datasets_key(disks: &[&str]) -> String {
    let list: Vec<String> = disks.iter().map(|d| format!("\"{d}\"")).collect();
    format!("datasets = [{}]", list.join(", "))
}

/// Every disk's newest snapshot: one name on all of them, the same GUID
/// on the replica, the same files. Returns the name.
fn assert_guest_replica(src: &str, dst: &str, disks: &[&str]) -> String {
    let mut name = None;
    for d in disks {
        let (s, t) = (format!("{src}/{d}"), format!("{dst}/{d}"));
        assert_replica(&s, &t);
        let newest = snaps(&s).pop().unwrap().0;
        assert!(newest.starts_with("tandem_g_"), "{s}@{newest}");
        match &name {
            None => name = Some(newest),
            Some(n) => assert_eq!(n, &newest, "{s} has another newest snapshot"),
        }
    }
    name.unwrap()
}

both_transports!(
    a_three_disk_guest_is_replicated_under_one_snapshot_name,
    |via| {
        let (a, b) = (Pool::new("a"), Pool::new("b"));
        let (src, dst) = (a.ds("data"), b.ds("replica"));
        for d in DISKS {
            zfs(&["create", "-p", &format!("{src}/{d}")]);
        }
        // Another VM's disk beside them is not the job's.
        zfs(&["create", &format!("{src}/vm-200-disk-0")]);
        zfs(&["create", &dst]);
        let Some(env) = Env::new(via, &job("g", &src, &dst, &datasets_key(&DISKS))) else {
            return;
        };
        for cycle in 0..3u64 {
            for (i, d) in DISKS.iter().enumerate() {
                let f = mnt(&format!("{src}/{d}")).join(format!("c{cycle}"));
                write_random(&f, 256 << 10, cycle * 10 + i as u64);
            }
            let out = env.run_ok("g");
            let want = if cycle == 0 { "full" } else { "incremental" };
            assert!(out.contains(want), "cycle {cycle}: {out}");
            let name = assert_guest_replica(&src, &dst, &DISKS);
            // keep = 2 on every disk, on both sides.
            for d in DISKS {
                for side in [&src, &dst] {
                    let n = snaps(&format!("{side}/{d}")).len();
                    assert_eq!(
                        n,
                        (cycle as usize + 1).min(2),
                        "{side}/{d} after cycle {cycle}"
                    );
                }
            }
            assert!(!name.is_empty());
        }
        assert!(
            snaps(&format!("{src}/vm-200-disk-0")).is_empty(),
            "a dataset the job does not list is never snapshotted"
        );
        assert!(!exists(&format!("{dst}/vm-200-disk-0")));
        // A cycle with nothing written on one disk still takes the snapshot
        // on all of them.
        write_random(
            &mnt(&format!("{src}/{}", DISKS[0])).join("only"),
            1 << 16,
            99,
        );
        env.run_ok("g");
        assert_guest_replica(&src, &dst, &DISKS);
        // --json names the guest job's snapshot and moves bytes.
        let o = env.tandem(&["run", "g", "--json"]);
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v[0]["ok"], true, "{v}");
    }
);

both_transports!(
    a_missing_disk_fails_the_job_before_anything_is_snapshotted,
    |via| {
        let (a, b) = (Pool::new("a"), Pool::new("b"));
        let (src, dst) = (a.ds("data"), b.ds("replica"));
        for d in &DISKS[..2] {
            zfs(&["create", "-p", &format!("{src}/{d}")]);
        }
        zfs(&["create", &dst]);
        let Some(env) = Env::new(via, &job("g", &src, &dst, &datasets_key(&DISKS))) else {
            return;
        };
        let (before_a, before_b) = (pool_state(&a), pool_state(&b));
        let text = env.run_fails("g");
        assert!(
            text.contains(&format!("source dataset {src}/vm-100-efi does not exist")),
            "{text}"
        );
        assert_eq!(
            pool_state(&a),
            before_a,
            "nothing snapshotted on the source"
        );
        assert_eq!(pool_state(&b), before_b, "nothing received");
        // Once it exists, the job runs; then a disk that vanishes stops it
        // again, before the next snapshot.
        zfs(&["create", &format!("{src}/vm-100-efi")]);
        env.run_ok("g");
        assert_guest_replica(&src, &dst, &DISKS);
        destroy_held(&format!("{src}/vm-100-disk-1"));
        let (before_a, before_b) = (pool_state(&a), pool_state(&b));
        let text = env.run_fails("g");
        assert!(text.contains("vm-100-disk-1 does not exist"), "{text}");
        assert_eq!(pool_state(&a), before_a);
        assert_eq!(pool_state(&b), before_b);
    }
);

both_transports!(
    a_recursive_tree_is_snapshotted_in_one_txg_and_follows_its_children,
    |via| {
        let (a, b) = (Pool::new("a"), Pool::new("b"));
        let (src, dst) = (a.ds("ct"), b.ds("ct"));
        for d in ["", "/rootfs", "/rootfs/home", "/data"] {
            zfs(&["create", "-p", &format!("{src}{d}")]);
        }
        let Some(env) = Env::new(via, &job("g", &src, &dst, "recursive = true")) else {
            return;
        };
        let tree = |extra: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = ["", "/rootfs", "/rootfs/home", "/data"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect();
            v.sort();
            v
        };
        let check = |members: &[String]| {
            let mut txg = None;
            let mut name = None;
            for m in members {
                let (s, t) = (format!("{src}{m}"), format!("{dst}{m}"));
                assert_replica(&s, &t);
                let newest = snaps(&s).pop().unwrap().0;
                let x = createtxg(&format!("{s}@{newest}"));
                assert_eq!(*txg.get_or_insert(x), x, "{s}@{newest}: another txg");
                assert_eq!(name.get_or_insert(newest.clone()), &newest);
            }
        };
        write_random(&mnt(&format!("{src}/rootfs/home")).join("f"), 1 << 18, 1);
        let out = env.run_ok("g");
        assert!(out.contains("full"), "{out}");
        check(&tree(&[]));
        write_random(&mnt(&format!("{src}/data")).join("g"), 1 << 18, 2);
        let out = env.run_ok("g");
        assert!(out.contains("incremental"), "{out}");
        check(&tree(&[]));
        // A child added and one removed.
        zfs(&["create", &format!("{src}/rootfs/new")]);
        write_random(&mnt(&format!("{src}/rootfs/new")).join("n"), 1 << 16, 3);
        destroy_held(&format!("{src}/data"));
        let o = env.tandem(&["run", "g"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{text}");
        assert!(
            text.contains(&format!("{dst}/data is no longer on the primary")),
            "{text}"
        );
        let now: Vec<String> = tree(&["/rootfs/new"])
            .into_iter()
            .filter(|m| m != "/data")
            .collect();
        check(&now);
        assert!(
            exists(&format!("{dst}/data")),
            "a removed child's replica is kept"
        );
        // keep = 2 on every old member, on both sides: the source's oldest
        // snapshot went with one `zfs destroy -r` of the root (the target
        // has a child the source no longer has, so it prunes one by one).
        for m in now.iter().filter(|m| *m != "/rootfs/new") {
            for side in [&src, &dst] {
                let n = snaps(&format!("{side}{m}")).len();
                assert_eq!(n, 2, "{side}{m}: {:?}", snaps(&format!("{side}{m}")));
            }
        }
        // A fourth cycle, nothing removed since: both sides prune by tree.
        write_random(&mnt(&format!("{src}/rootfs")).join("h"), 1 << 16, 4);
        let o = env.tandem(&["run", "g", "--json"]);
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let pruned = v[0]["pruned"].as_array().unwrap().len();
        check(&now);
        for m in &now {
            for side in [&src, &dst] {
                let n = snaps(&format!("{side}{m}")).len();
                assert_eq!(
                    n,
                    2,
                    "{side}{m} after cycle 4: {:?}",
                    snaps(&format!("{side}{m}"))
                );
            }
        }
        assert!(pruned >= now.len(), "{v}");
    }
);

#[test]
fn guest_jobs_in_commands_that_do_not_handle_them_yet_change_nothing() {
    if !zfs_available() {
        return;
    }
    let (a, b) = (Pool::new("a"), Pool::new("b"));
    let (src, dst) = (a.ds("data"), b.ds("replica"));
    for d in DISKS {
        zfs(&["create", "-p", &format!("{src}/{d}")]);
    }
    zfs(&["create", &dst]);
    let env = Env::new(Via::Local, &job("g", &src, &dst, &datasets_key(&DISKS))).unwrap();
    env.run_ok("g");
    let (before_a, before_b) = (pool_state(&a), pool_state(&b));
    for args in [
        &["reverse", "g", "--yes"][..],
        &["reverse", "g", "--switchover", "--yes"][..],
    ] {
        let o = env.tandem(args);
        let text =
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
        assert!(!o.status.success(), "{args:?}: {text}");
        assert!(
            text.contains("replicates several datasets (a guest job)")
                && text.contains("changed nothing"),
            "{args:?}: {text}"
        );
    }
    assert_eq!(pool_state(&a), before_a);
    assert_eq!(pool_state(&b), before_b);
    // `plan` speaks for the first disk.
    let o = env.tandem(&["plan", "g"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Two nodes on this machine, each with its own config and state, as in
/// `failover.rs`; `dst` fails over from `src` on the operator's word.
fn two_node_configs(dir: &std::path::Path, job: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let cfg = |node: &str| {
        let p = dir.join(format!("{node}.toml"));
        std::fs::write(
            &p,
            format!(
                "state_dir = \"{}/{node}-state\"\nlocal_node = \"{node}\"\n[nodes.src]\naddress = \"local\"\n\
                 [nodes.dst]\naddress = \"local\"\n{job}",
                dir.display()
            ),
        )
        .unwrap();
        p
    };
    (cfg("src"), cfg("dst"))
}

fn tandem_with(cfg: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn failover_promotes_every_disk_to_one_snapshot_or_none() {
    if !zfs_available() {
        return;
    }
    let (a, b) = (Pool::new("a"), Pool::new("b"));
    let (src, dst) = (a.ds("data"), b.ds("replica"));
    for d in DISKS {
        zfs(&["create", "-p", &format!("{src}/{d}")]);
    }
    zfs(&["create", &dst]);
    let dir = tempfile::tempdir().unwrap();
    let (src_cfg, dst_cfg) =
        two_node_configs(dir.path(), &job("g", &src, &dst, &datasets_key(&DISKS)));
    for cycle in 0..2u64 {
        for (i, d) in DISKS.iter().enumerate() {
            write_random(
                &mnt(&format!("{src}/{d}")).join(format!("c{cycle}")),
                1 << 16,
                cycle * 7 + i as u64,
            );
        }
        let (ok, out, err) = tandem_with(&src_cfg, &["run", "g"]);
        assert!(ok, "{out}{err}");
    }
    let synced = assert_guest_replica(&src, &dst, &DISKS);
    // A cycle that stopped half-way: disk-0 alone received a newer
    // replication snapshot.
    let d0 = format!("{src}/{}", DISKS[0]);
    let late = "tandem_g_20991231T235959Z";
    write_random(&mnt(&d0).join("late"), 1 << 16, 77);
    zfs(&["snapshot", &format!("{d0}@{late}")]);
    let mut send = std::process::Command::new("zfs")
        .args([
            "send",
            "-i",
            &format!("{d0}@{synced}"),
            &format!("{d0}@{late}"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let recv = std::process::Command::new("zfs")
        .args(["receive", &format!("{dst}/{}", DISKS[0])])
        .stdin(send.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(recv.success());
    assert!(send.wait().unwrap().success());
    // The primary writes more, then dies; dst fails over on the operator's word.
    for d in DISKS {
        std::fs::write(
            mnt(&format!("{src}/{d}")).join("unsynced"),
            "after the last sync",
        )
        .unwrap();
    }
    let (ok, out, err) = tandem_with(
        &dst_cfg,
        &["failover", "src", "--confirmed-off", "--yes", "--json"],
    );
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let j = &v["jobs"][0];
    assert_eq!(j["ok"], true, "{v}");
    assert_eq!(j["outcome"], "promoted", "{v}");
    assert_eq!(
        j["snapshot"],
        format!("{dst}/{}@{synced}", DISKS[0]),
        "all disks at the snapshot they all have: {v}"
    );
    assert!(j["warnings"].to_string().contains("discarded"), "{v}");
    drop_caches();
    for d in DISKS {
        let t = format!("{dst}/{d}");
        assert_eq!(snaps(&t).pop().unwrap().0, synced, "{t}");
        assert_eq!(
            zfs(&["get", "-H", "-o", "value", "tandem:generation", &t]).trim(),
            "g 1 dst",
            "{t}"
        );
        let probe = mnt(&t).join("after-failover");
        std::fs::write(&probe, "new primary").unwrap();
        assert!(!mnt(&t).join("unsynced").exists());
        assert!(!mnt(&t).join("late").exists());
    }
    // Again: nothing more to do.
    let (ok, out, err) = tandem_with(
        &dst_cfg,
        &["failover", "src", "--confirmed-off", "--yes", "--json"],
    );
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["jobs"][0]["outcome"], "already_primary", "{v}");
    // The old primary's daemon sees the marks and sends nothing.
    let before = (pool_state(&a), pool_state(&b));
    let (ok, out, err) = tandem_with(&src_cfg, &["run", "g"]);
    assert!(!ok, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("no longer the primary"),
        "{out}{err}"
    );
    assert_eq!((pool_state(&a), pool_state(&b)), before, "nothing changed");
}
