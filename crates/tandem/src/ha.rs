//! The production side of `tandem-ha`'s traits: fence levels from the
//! config, and this machine as the [`Host`] (receives, hooks, test crash
//! points).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use tandem_fence::config::BuildContext;
use tandem_fence::level::{fence_node, Level};
use tandem_fence::quorum::{QuorumMode, QuorumSource};
use tandem_fence::{BoxFuture, FenceReport};
use tandem_ha::{Env, Fencer, HaError, HookCall, Host};
use tandem_repl::clock::SystemClock;
use tandem_repl::state::StateStore;
use tandem_zfs::DatasetName;

use crate::backend::NodeZfs;
use crate::config::Config;

/// How long an engine waits for a job's lock (a running cycle).
pub const LOCK_WAIT: Duration = Duration::from_secs(600);

/// Where fence levels read corosync's membership: nowhere with `[quorum]
/// mode = "off"`.
pub fn quorum_source(cfg: &Config) -> Option<Arc<dyn QuorumSource>> {
    (cfg.quorum.mode != QuorumMode::Off).then(|| Arc::new(cfg.quorum.clone()) as _)
}

/// Builds a node's levels from the config (loads credentials).
pub fn levels(cfg: &Config, node: &str) -> Result<Vec<Level>> {
    let n = cfg.node(node)?;
    if n.fence.is_empty() {
        bail!(
            "{}: node {node:?} has no fence levels; add [[nodes.{node}.fence]] tables",
            cfg.path.display()
        );
    }
    let ctx = BuildContext {
        node: node.to_string(),
        quorum: quorum_source(cfg),
    };
    n.fence
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.build(
                &format!("nodes.{node}.fence[{}] ({})", i + 1, l.kind()),
                &ctx,
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.path.display()))
        })
        .collect()
}

/// A node's configured fence levels, tried in order.
pub struct ConfigFencer<'a>(pub &'a Config);

impl Fencer for ConfigFencer<'_> {
    fn fence<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<FenceReport, String>> {
        Box::pin(async move {
            let lv = levels(self.0, node).map_err(|e| format!("{e:#}"))?;
            Ok(fence_node(node, &lv).await)
        })
    }
}

/// This machine.
pub struct Machine;

impl Host for Machine {
    fn end_receives<'a>(&'a self, dataset: &'a DatasetName) -> BoxFuture<'a, ()> {
        Box::pin(stop_receives(dataset))
    }

    fn run_hook<'a>(&'a self, call: &'a HookCall) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let st = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&call.command)
                .env("TANDEM_JOB", &call.job)
                .env("TANDEM_FROM", &call.from)
                .env("TANDEM_TO", &call.to)
                .status()
                .await
                .map_err(|e| format!("{:?}: {e}", call.command))?;
            if st.success() {
                Ok(())
            } else {
                Err(format!("{:?} exited with {st}", call.command))
            }
        })
    }

    /// `TANDEM_TEST_CRASH_AFTER=STEP` makes the process exit(99) right
    /// after STEP, so tests prove that the next run completes the job.
    fn step(&self, step: &'static str) -> Result<(), HaError> {
        if std::env::var("TANDEM_TEST_CRASH_AFTER").is_ok_and(|v| v == step) {
            eprintln!("tandem: TANDEM_TEST_CRASH_AFTER={step}: exiting as if killed");
            std::process::exit(99);
        }
        Ok(())
    }
}

/// The engine's environment on this machine.
pub fn env<'a>(
    cfg: &'a Config,
    nodes: &'a BTreeMap<String, NodeZfs>,
    store: &'a StateStore,
    fencer: &'a ConfigFencer<'a>,
    what: &str,
) -> Env<'a, NodeZfs> {
    Env {
        local: &cfg.local_node,
        nodes,
        store,
        clock: &SystemClock,
        quorum: &cfg.quorum,
        fencer,
        host: &Machine,
        me: crate::cmd::me(what),
        lock_wait: LOCK_WAIT,
    }
}

/// The `zfs receive` processes on this machine whose target is `ds`.
fn receives_into(ds: &DatasetName) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        let is_zfs = args
            .first()
            .is_some_and(|a| a.rsplit(|b| *b == b'/').next() == Some(b"zfs".as_slice()));
        let is_recv = args
            .iter()
            .any(|a| *a == b"receive".as_slice() || *a == b"recv".as_slice());
        if is_zfs && is_recv && args.last() == Some(&ds.as_str().as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Ends every `zfs receive` into `ds` (SIGTERM, then SIGKILL after 5 s).
async fn stop_receives(ds: &DatasetName) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pids = receives_into(ds);
    if pids.is_empty() {
        return;
    }
    tracing::warn!(dataset = %ds, ?pids, "ending the receive from the fenced node (it can never complete)");
    for &p in &pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    for step in 0..50 {
        if receives_into(ds).is_empty() {
            return;
        }
        if step == 25 {
            for p in receives_into(ds) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::error!(dataset = %ds, "a zfs receive into it does not end");
}
