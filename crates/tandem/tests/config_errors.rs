//! Bad input gets a clear error naming what was wrong, and no pool changes.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;

#[test]
fn bad_configs_are_refused_with_a_named_problem_and_no_pool_changes() {
    if !zfs_available() {
        return;
    }
    let (a, b) = (Pool::new("a"), Pool::new("b"));
    let (src, dst) = (a.ds("vm"), b.ds("vm"));
    zfs(&["create", &src]);
    zfs(&["snapshot", &format!("{src}@mine")]);
    let (sa, sb) = (pool_state(&a), pool_state(&b));
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "state_dir = \"{}/state\"\nlocal_node = \"src\"\n[nodes.src]\naddress = \"local\"\n[nodes.dst]\naddress = \"local\"\n[jobs.j]\nsource = \"src:{src}\"\ntarget = \"dst:{dst}\"\n",
        dir.path().display()
    );
    let bad_name = format!("{src}*x");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "malformed TOML",
            good.replace("[jobs.j]", "[jobs.j"),
            vec!["tandem.toml", "TOML parse error", "line"],
        ),
        (
            "unknown node",
            good.replace("dst:", "nosuch:"),
            vec!["[jobs.j] target", "\"nosuch\" is not defined"],
        ),
        (
            "illegal dataset name",
            good.replace(&format!("src:{src}"), &format!("src:{src}*x")),
            vec!["[jobs.j] source", "'*'", &bad_name],
        ),
        (
            "missing source",
            good.replace(&format!("source = \"src:{src}\"\n"), ""),
            vec!["[jobs.j] source is missing"],
        ),
        (
            "unknown key",
            good.replace("[jobs.j]", "[jobs.j]\nkepe = 3"),
            vec!["unknown field", "kepe"],
        ),
        (
            "two @",
            good.replace(&format!("src:{src}"), &format!("src:{src}@a@b")),
            vec!["[jobs.j] source", "'@'"],
        ),
        (
            "too long",
            good.replace(
                &format!("src:{src}"),
                &format!("src:{src}/{}", "x".repeat(260)),
            ),
            vec!["[jobs.j] source", "at most 255"],
        ),
        (
            "a job inside another job's replica",
            format!("{good}[jobs.k]\nsource = \"src:{src}\"\ntarget = \"dst:{dst}/inner\"\n"),
            vec!["[jobs.j] target", "[jobs.k] target", "overlap"],
        ),
        (
            "unreadable state dir",
            good.replace(
                &format!("{}/state", dir.path().display()),
                "/proc/tandem-state",
            ),
            vec!["state_dir /proc/tandem-state is not usable"],
        ),
    ];
    for (what, text, needles) in cases {
        let cfg = dir.path().join("tandem.toml");
        std::fs::write(&cfg, &text).unwrap();
        for args in [vec!["run"], vec!["status"], vec!["plan"]] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
                .arg("--config")
                .arg(&cfg)
                .args(&args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{what} / {args:?}: exit {:?}, stderr {err}",
                out.status
            );
            for n in &needles {
                assert!(
                    err.contains(n),
                    "{what} / {args:?}: {n:?} missing in: {err}"
                );
            }
        }
        assert_eq!(pool_state(&a), sa, "{what}: source pool changed");
        assert_eq!(pool_state(&b), sb, "{what}: target pool changed");
    }
    // A missing config file and an unknown job are named too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["--config", "/nonexistent/t.toml", "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read config file /nonexistent/t.toml"));
    std::fs::write(dir.path().join("tandem.toml"), &good).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--config")
        .arg(dir.path().join("tandem.toml"))
        .args(["run", "nosuch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job named \"nosuch\""));
    assert_eq!(pool_state(&a), sa);
    assert_eq!(pool_state(&b), sb);
}

#[test]
fn an_unreachable_peer_is_named_and_nothing_changes() {
    if !zfs_available() {
        return;
    }
    let a = Pool::new("a");
    let src = a.ds("vm");
    zfs(&["create", &src]);
    let sa = pool_state(&a);
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: connection refused at once.
    let text = format!(
        "state_dir = \"{}/state\"\nlocal_node = \"src\"\n[nodes.src]\naddress = \"local\"\n[nodes.far]\naddress = \"127.0.0.1\"\nssh_port = 1\n[jobs.j]\nsource = \"src:{src}\"\ntarget = \"far:pool/vm\"\n",
        dir.path().display()
    );
    let cfg = dir.path().join("tandem.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--config")
        .arg(&cfg)
        .args(["run", "j"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("node far") && s.contains("ssh failed"), "{s}");
    assert_eq!(
        pool_state(&a),
        sa,
        "no snapshot was taken for an unreachable target"
    );
}
