//! A job as configured: both ends, and how to replicate between them.
//!
//! The configured `source` and `target` say where a job *starts*; which
//! end is the primary *now* is a cluster-wide fact, read from the
//! generation marks on the datasets themselves ([`crate::roles`]), and a
//! [`JobSpec`] is the job with that direction applied.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tandem_zfs::{DatasetName, Generation, SendFlags, WireCompress};

use crate::executor::JobSpec;
use crate::naming::JobName;
use crate::roles::Roles;
use crate::state::JobState;

/// One end of a job: a node and a dataset on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Node name (a key of the config's `[nodes]`).
    pub node: String,
    /// Dataset on that node.
    pub dataset: DatasetName,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.node, self.dataset)
    }
}

/// Shell commands run around a planned switchover (`reverse --switchover`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobHooks {
    /// Quiesces the workload on the current primary (e.g. stops the VM).
    pub switchover_stop: Option<String>,
    /// Starts the workload on the new primary.
    pub switchover_start: Option<String>,
}

/// A replication job as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its name.
    pub name: JobName,
    /// The configured source: the primary until the first change of
    /// primary (failover, switchover).
    pub source: Endpoint,
    /// The configured target.
    pub target: Endpoint,
    /// How often the daemon runs it.
    pub interval: Duration,
    /// Own snapshots kept on each side (at least 1).
    pub keep: usize,
    /// Stream compression where the stream crosses the network.
    pub wire: WireCompress,
    /// Bytes per second, 0 = unlimited.
    pub rate_limit: u64,
    /// Scheduled by the daemon?
    pub enabled: bool,
    /// Extra `zfs send` flags.
    pub flags: SendFlags,
    /// Switchover hooks.
    pub hooks: JobHooks,
}

impl Job {
    /// The end on `node`, if the job has one there.
    pub fn endpoint_on(&self, node: &str) -> Option<&Endpoint> {
        [&self.source, &self.target]
            .into_iter()
            .find(|e| e.node == node)
    }

    /// The other end than the one on `node`.
    pub fn other_than(&self, node: &str) -> Option<&Endpoint> {
        match (self.source.node == node, self.target.node == node) {
            (true, false) => Some(&self.target),
            (false, true) => Some(&self.source),
            _ => None,
        }
    }

    /// The mark an unmarked dataset of this job stands for: generation 0,
    /// the configured source as primary.
    pub fn unmarked(&self) -> Generation {
        Generation {
            job: self.name.to_string(),
            number: 0,
            primary: self.source.node.clone(),
        }
    }

    /// The job with `roles` applied: from the primary to the follower.
    pub fn spec(&self, roles: &Roles, st: &JobState) -> JobSpec {
        let target_name = roles.follower.to_string();
        JobSpec {
            name: self.name.clone(),
            source: roles.primary.clone(),
            target: roles.follower.clone(),
            keep: self.keep,
            flags: self.flags,
            rate_limit: self.rate_limit,
            wire: self.wire,
            rebuilt_target: st
                .rebuilt
                .as_ref()
                .filter(|r| r.target == target_name)
                .map(|r| (r.base, r.written)),
            claim: roles.generation.clone(),
        }
    }
}
