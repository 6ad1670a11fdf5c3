//! Crashes, concurrency and the daemon, against real ZFS.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use std::time::{Duration, Instant};

fn pgrep(pattern: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child (a daemon) if the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn healthy(pool: &str) {
    let s = cmd("zpool", &["status", "-x", pool]);
    assert!(s.contains("healthy"), "pool {pool} is not healthy: {s}");
}

#[test]
fn sigkill_mid_stream_leaves_pools_consistent_and_the_next_cycle_succeeds() {
    if !zfs_available() {
        return;
    }
    let (a, b) = (Pool::new("a"), Pool::new("b"));
    let (src, dst) = (a.ds("vm"), b.ds("vm"));
    zfs(&["create", &src]);
    let Some(env) = Env::new(Via::Local, &job("j", &src, &dst, "rate_limit = \"4M\"")) else {
        return;
    };
    write_random(&mnt(&src).join("base"), 1 << 20, 1);
    env.run_ok("j");
    write_random(&mnt(&src).join("big"), 24 << 20, 2);
    let before = snaps(&dst);
    let mut child = env.spawn(&["run", "j"]);
    // Kill tandem (and so its pipe) while the receive is running.
    wait_for("the receive to start", Duration::from_secs(30), || {
        pgrep(&format!("zfs receive {dst}"))
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        pgrep(&format!("zfs receive {dst}")),
        "transfer ended before the kill: raise the data size"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The orphaned zfs send/receive notice the broken pipe and exit.
    wait_for(
        "orphaned zfs processes to exit",
        Duration::from_secs(60),
        || !pgrep(&dst),
    );
    assert_eq!(
        snaps(&dst),
        before,
        "the interrupted receive left nothing half-done (no resume on this ZFS)"
    );
    healthy(&a.name);
    healthy(&b.name);
    // The next cycle completes (no stale lock, the orphaned snapshot is sent too).
    env.rewrite("rate_limit = \"4M\"", "rate_limit = \"0\"");
    let out = env.run_ok("j");
    assert!(out.contains("incremental"), "{out}");
    assert_replica(&src, &dst);
}

#[test]
fn two_runs_of_one_job_wait_or_refuse_and_the_replica_stays_exact() {
    if !zfs_available() {
        return;
    }
    let (a, b) = (Pool::new("a"), Pool::new("b"));
    let (src, dst) = (a.ds("vm"), b.ds("vm"));
    zfs(&["create", &src]);
    let Some(env) = Env::new(Via::Local, &job("j", &src, &dst, "rate_limit = \"8M\"")) else {
        return;
    };
    write_random(&mnt(&src).join("big"), 16 << 20, 3);
    let first = env.spawn(&["run", "j"]);
    wait_for("the first run's receive", Duration::from_secs(30), || {
        pgrep(&format!("zfs receive {dst}"))
    });
    // --no-wait refuses, naming the holder.
    let refused = env.tandem(&["run", "--no-wait", "j"]);
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success());
    assert!(
        text.contains("busy") && text.contains("locked by pid"),
        "{text}"
    );
    // Without it, the second run waits for the first, then runs.
    let second = env.spawn(&["run", "j"]);
    let o1 = first.wait_with_output().unwrap();
    let o2 = second.wait_with_output().unwrap();
    assert!(
        o1.status.success(),
        "{}",
        String::from_utf8_lossy(&o1.stdout)
    );
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stdout)
    );
    assert!(String::from_utf8_lossy(&o1.stdout).contains("full"));
    assert!(String::from_utf8_lossy(&o2.stdout).contains("incremental"));
    assert_replica(&src, &dst);
}

#[test]
fn daemon_replicates_on_schedule_reloads_on_sighup_and_stops_on_sigterm() {
    if !zfs_available() {
        return;
    }
    let (a, b) = (Pool::new("a"), Pool::new("b"));
    let (src, dst) = (a.ds("vm"), b.ds("vm"));
    let (src2, dst2) = (a.ds("ct"), b.ds("ct"));
    zfs(&["create", &src]);
    zfs(&["create", &src2]);
    let Some(env) = Env::new(Via::Local, &job("j", &src, &dst, "interval = \"1s\"")) else {
        return;
    };
    write_random(&mnt(&src).join("f"), 1 << 20, 4);
    write_random(&mnt(&src2).join("f"), 1 << 20, 5);
    let mut d = KillOnDrop(env.spawn(&["daemon"]));
    let pid = nix::unistd::Pid::from_raw(d.0.id() as i32);
    let status = |env: &Env| -> serde_json::Value {
        serde_json::from_slice(&env.tandem(&["status", "--json"]).stdout).unwrap()
    };
    wait_for("three cycles", Duration::from_secs(60), || {
        exists(&dst) && snaps(&dst).len() >= 2 && status(&env)[0]["last_plan"] == "incremental"
    });
    assert_replica(&src, &dst);
    // Reload with a second job.
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!("{cfg}\n{}", job("k", &src2, &dst2, "interval = \"1s\"")),
    )
    .unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for("job k after the reload", Duration::from_secs(60), || {
        exists(&dst2) && !snaps(&dst2).is_empty()
    });
    // A broken config on reload is refused; the daemon keeps running.
    std::fs::write(&env.config, "this is [not toml").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        d.0.try_wait().unwrap().is_none(),
        "daemon died on a bad reload"
    );
    std::fs::write(
        &env.config,
        format!("{cfg}\n{}", job("k", &src2, &dst2, "interval = \"1s\"")),
    )
    .unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let t0 = Instant::now();
    let code = loop {
        if let Some(s) = d.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "daemon exit: {code:?}");
    let err = std::io::read_to_string(d.0.stderr.take().unwrap()).unwrap();
    assert!(err.contains("reload failed"), "{err}");
    assert!(err.contains("daemon stopped"), "{err}");
    wait_for("zfs processes to end", Duration::from_secs(30), || {
        !pgrep(&dst) && !pgrep(&dst2)
    });
    assert_replica(&src, &dst);
    assert_replica(&src2, &dst2);
}
