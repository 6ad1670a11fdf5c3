//! What the engines need from the world, as traits, and the [`Env`] one
//! command runs in.

use std::collections::BTreeMap;
use std::time::Duration;

use tandem_fence::quorum::{Quorum, QuorumSource};
use tandem_fence::{BoxFuture, FenceReport};
use tandem_repl::clock::Clock;
use tandem_repl::state::Store;
use tandem_zfs::{DatasetName, Zfs};

use crate::error::HaError;

/// Fences nodes: in production, a node's configured levels tried in order
/// ([`tandem_fence::level::fence_node`]); in the simulator, the same over
/// simulated devices.
pub trait Fencer: Send + Sync {
    /// Powers `node` off through its levels until one confirms it. `Err`
    /// when the node cannot be fenced at all (no levels, unreadable
    /// credentials): a configuration problem, named.
    fn fence<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<FenceReport, String>>;
}

/// One run of a job's hook command. Its fields reach the command as
/// environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    /// Which hook (`switchover_stop`, `switchover_start`, `on_promote`,
    /// `on_test`).
    pub hook: &'static str,
    /// The shell command.
    pub command: String,
    /// `TANDEM_JOB`.
    pub job: String,
    /// `TANDEM_FROM`: the old primary.
    pub from: String,
    /// `TANDEM_TO`: the new primary.
    pub to: String,
    /// `TANDEM_SNAPSHOT`: the snapshot promoted (or cloned), where there
    /// is one.
    pub snapshot: Option<String>,
    /// `TANDEM_DATASETS`, space-separated: the datasets the workload runs
    /// from (the promoted replicas, or the clones of a test).
    pub datasets: Vec<String>,
    /// `TANDEM_GUEST` (`vm:1001`), where the job names its Proxmox guest.
    pub guest: Option<String>,
    /// Killed (its whole process group) after this long; `None`: no limit.
    pub timeout: Option<Duration>,
}

impl HookCall {
    /// A call of `hook` with no snapshot, datasets, guest or timeout.
    pub fn new(hook: &'static str, command: &str, job: &str, from: &str, to: &str) -> HookCall {
        HookCall {
            hook,
            command: command.to_owned(),
            job: job.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            snapshot: None,
            datasets: Vec::new(),
            guest: None,
            timeout: None,
        }
    }

    /// The environment the command gets.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("TANDEM_HOOK", self.hook.to_owned()),
            ("TANDEM_JOB", self.job.clone()),
            ("TANDEM_FROM", self.from.clone()),
            ("TANDEM_TO", self.to.clone()),
            ("TANDEM_DATASETS", self.datasets.join(" ")),
        ];
        if let Some(s) = &self.snapshot {
            v.push(("TANDEM_SNAPSHOT", s.clone()));
        }
        if let Some(g) = &self.guest {
            v.push(("TANDEM_GUEST", g.clone()));
        }
        v
    }
}

/// What the engines ask of the machine they run on, beyond ZFS.
pub trait Host: Send + Sync {
    /// Ends every `zfs receive` into `dataset` still running here: its
    /// sender is confirmed off, and its stream (a TCP connection to a node
    /// without power) would never end by itself.
    fn end_receives<'a>(&'a self, dataset: &'a DatasetName) -> BoxFuture<'a, ()>;
    /// Runs a hook; `Err` says how it failed.
    fn run_hook<'a>(&'a self, call: &'a HookCall) -> BoxFuture<'a, Result<(), String>>;
    /// Passes a named step of an engine. A test host may stop the process
    /// here (`TANDEM_TEST_CRASH_AFTER`), the simulator crashes the command
    /// ([`HaError::Crashed`]), production does nothing.
    fn step(&self, step: &'static str) -> Result<(), HaError>;
}

/// Everything one command runs with.
pub struct Env<'a, Z: Zfs> {
    /// The node this runs on.
    pub local: &'a str,
    /// Every node's ZFS, by node name.
    pub nodes: &'a BTreeMap<String, Z>,
    /// Job state, records and locks.
    pub store: &'a dyn Store,
    /// Wall time.
    pub clock: &'a dyn Clock,
    /// Quorum and membership.
    pub quorum: &'a dyn QuorumSource,
    /// Fence devices.
    pub fencer: &'a dyn Fencer,
    /// The machine.
    pub host: &'a dyn Host,
    /// Who we are, in lock files (`pid 123 (tandem failover)`).
    pub me: String,
    /// How long to wait for a job's lock.
    pub lock_wait: Duration,
}

impl<Z: Zfs> Env<'_, Z> {
    /// The ZFS of `node`.
    pub fn zfs(&self, node: &str) -> Result<&Z, HaError> {
        self.nodes.get(node).ok_or_else(|| HaError::UnknownNode {
            node: node.to_owned(),
            known: self.nodes.keys().cloned().collect(),
        })
    }

    /// An engine's progress record of `kind` for `job`, if one was left.
    pub fn read_progress<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
        job: &tandem_repl::naming::JobName,
    ) -> Result<Option<T>, HaError> {
        match self.store.read_record(kind, job)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| HaError::Progress {
                    job: job.to_string(),
                    kind,
                    why: e.to_string(),
                }),
        }
    }

    /// Records an engine's progress, durably.
    pub fn write_progress<T: serde::Serialize>(
        &self,
        kind: &'static str,
        job: &tandem_repl::naming::JobName,
        progress: &T,
    ) -> Result<(), HaError> {
        let body = serde_json::to_vec_pretty(progress).map_err(|e| HaError::Progress {
            job: job.to_string(),
            kind,
            why: e.to_string(),
        })?;
        Ok(self.store.write_record(kind, job, &body)?)
    }

    /// Asks for quorum: `Ok` with what was said when this node may act
    /// (quorate, or in no cluster), [`HaError::NoQuorum`] otherwise.
    pub async fn require_quorum(&self) -> Result<Quorum, HaError> {
        match self.quorum.probe().await {
            Ok(Quorum::NotQuorate(v)) => Err(HaError::NoQuorum {
                node: self.local.to_owned(),
                why: format!("has no quorum ({v})"),
            }),
            Err(e) => Err(HaError::NoQuorum {
                node: self.local.to_owned(),
                why: format!("cannot prove it has quorum ({e})"),
            }),
            Ok(q) => Ok(q),
        }
    }
}
