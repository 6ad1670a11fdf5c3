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

/// Shell commands a job runs around a change of primary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobHooks {
    /// Quiesces the workload on the current primary (e.g. stops the VM).
    pub switchover_stop: Option<String>,
    /// Starts the workload on the new primary.
    pub switchover_start: Option<String>,
    /// Starts the workload on this node after a failover promoted it
    /// (`on_promote`): run by the daemon's automatic failover and by
    /// `tandem failover`. Its failure is reported, never undoes the
    /// promotion.
    pub on_promote: Option<String>,
    /// How long `on_promote` may run before it is killed.
    pub on_promote_timeout: Duration,
    /// Checks the replicas without touching them (`on_test`): run by
    /// `tandem failover --test` against clones of the newest replicated
    /// snapshots.
    pub on_test: Option<String>,
    /// How long `on_test` may run before it is killed.
    pub on_test_timeout: Duration,
}

/// Default `on_promote_timeout` and `on_test_timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// Who promotes a job's replica when its primary node dies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverMode {
    /// An operator, with `tandem failover NODE`.
    #[default]
    Manual,
    /// The daemon on the replica's node, once the primary has been out of
    /// the quorate membership for the job's `failover_delay` and is fenced.
    Auto,
}

/// Default `failover_delay`.
pub const DEFAULT_FAILOVER_DELAY: Duration = Duration::from_secs(10);

/// The Proxmox guest a job carries, for hooks and for the check against
/// PVE's own HA manager (`guest = "vm:1001"` or `"ct:1001"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Guest {
    /// A VM (`qemu-server`) or a container (`lxc`).
    pub kind: GuestKind,
    /// Its VMID.
    pub vmid: u32,
}

/// A Proxmox guest's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestKind {
    /// `qm`, configs in `qemu-server/`, `vm:` in `ha/resources.cfg`.
    Vm,
    /// `pct`, configs in `lxc/`, `ct:` in `ha/resources.cfg`.
    Ct,
}

impl Guest {
    /// Parses `vm:1001` or `ct:1001` (PVE's own spelling of a service ID).
    pub fn parse(s: &str) -> Result<Guest, String> {
        let bad = || format!("{s:?} is not a Proxmox guest like \"vm:1001\" or \"ct:1001\"");
        let (k, id) = s.trim().split_once(':').ok_or_else(bad)?;
        let kind = match k {
            "vm" => GuestKind::Vm,
            "ct" => GuestKind::Ct,
            _ => return Err(bad()),
        };
        let vmid: u32 = id.parse().map_err(|_| bad())?;
        if !(100..=999_999_999).contains(&vmid) {
            return Err(format!("{s:?}: a VMID is between 100 and 999999999"));
        }
        Ok(Guest { kind, vmid })
    }
}

impl std::fmt::Display for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = match self.kind {
            GuestKind::Vm => "vm",
            GuestKind::Ct => "ct",
        };
        write!(f, "{k}:{}", self.vmid)
    }
}

/// Which datasets below a job's `source` and `target` it replicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Members {
    /// The source dataset itself, into the target dataset (one dataset).
    #[default]
    Itself,
    /// These paths relative to `source` and `target` (`datasets = [...]`):
    /// a guest's disks. Validated by the config loader (no `..`, no
    /// absolute names, no duplicates); parents come before their children.
    Datasets(Vec<String>),
    /// `source` and every filesystem and volume below it (`recursive =
    /// true`), as they are on the primary at each cycle.
    Recursive,
}

/// One dataset of a job: its path below the job's `source`/`target` and
/// both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Path relative to the job's datasets, `""` for the dataset itself.
    pub rel: String,
    /// Its source end.
    pub source: Endpoint,
    /// Its target end.
    pub target: Endpoint,
}

impl Member {
    /// How the member is named in messages: its path, or the dataset
    /// itself.
    pub fn label(&self) -> &str {
        if self.rel.is_empty() {
            self.source.dataset.as_str()
        } else {
            &self.rel
        }
    }
}

impl Endpoint {
    /// The endpoint of `rel` below this one (`""`: this one).
    pub fn child(&self, rel: &str) -> Result<Endpoint, tandem_zfs::NameError> {
        Ok(Endpoint {
            node: self.node.clone(),
            dataset: if rel.is_empty() {
                self.dataset.clone()
            } else {
                self.dataset.child(rel)?
            },
        })
    }
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
    /// Hooks.
    pub hooks: JobHooks,
    /// Who fails it over.
    pub failover: FailoverMode,
    /// With `failover = "auto"`: how long its primary must stay out of
    /// this node's quorate membership before it is fenced.
    pub failover_delay: Duration,
    /// The Proxmox guest it carries, if any.
    pub guest: Option<Guest>,
    /// Its datasets.
    pub members: Members,
    /// Every target of a fan-out job (`target = [...]` with two or more
    /// entries), in the config's order; empty for a job with one target.
    /// `target` is one of them: the first for the job as configured, its
    /// own for each of [`Job::legs`].
    pub fanout: Vec<Endpoint>,
}

impl Job {
    /// Does the job send to several targets (`target = [...]`)?
    pub fn is_fanout(&self) -> bool {
        !self.fanout.is_empty()
    }

    /// The job once per target: itself for a job with one target; for a
    /// fan-out job one leg per target, each the job with that target.
    /// Legs share the job's name (so its snapshots: one per cycle, sent
    /// to each target) and keep their own state, base and holds.
    pub fn legs(&self) -> Vec<Job> {
        if self.fanout.is_empty() {
            return vec![self.clone()];
        }
        self.fanout
            .iter()
            .map(|t| Job {
                target: t.clone(),
                ..self.clone()
            })
            .collect()
    }

    /// The name its state, locks and reports are kept under: the job's
    /// name, or for a leg of a fan-out job `JOB@NODE` (its target's node).
    pub fn state_key(&self) -> JobName {
        if self.fanout.is_empty() {
            self.name.clone()
        } else {
            self.name.leg(&self.target.node)
        }
    }

    /// Does the job carry more than one dataset (a `datasets` list or a
    /// recursive tree)? Such a job is snapshotted atomically and promoted
    /// all or nothing.
    pub fn is_multi(&self) -> bool {
        !matches!(self.members, Members::Itself)
    }

    /// The members the config names: the listed datasets, or the job's
    /// dataset itself (for a recursive job, its root; the descendants are
    /// found by listing the primary).
    pub fn configured_members(&self) -> Vec<Member> {
        let rels: Vec<String> = match &self.members {
            Members::Datasets(d) => d.clone(),
            Members::Itself | Members::Recursive => vec![String::new()],
        };
        rels.into_iter()
            .filter_map(|rel| self.member(&rel))
            .collect()
    }

    /// The member at `rel` (`None` only for a name ZFS would refuse, which
    /// the config loader rules out for configured members).
    pub fn member(&self, rel: &str) -> Option<Member> {
        Some(Member {
            source: self.source.child(rel).ok()?,
            target: self.target.child(rel).ok()?,
            rel: rel.to_owned(),
        })
    }

    /// One member as a job of its own: the same name, settings and marks,
    /// its datasets as the two ends. A guest job's cycle plans, sends and
    /// promotes each member as such a job, under one snapshot name.
    pub fn member_job(&self, m: &Member) -> Job {
        Job {
            source: m.source.clone(),
            target: m.target.clone(),
            members: Members::Itself,
            ..self.clone()
        }
    }

    /// The end on `node` of the job's first configured member: the dataset
    /// whose mark and state stand for the job there (its own dataset, for
    /// a single-dataset or recursive job).
    pub fn anchor_on(&self, node: &str) -> Option<Endpoint> {
        self.configured_members()
            .into_iter()
            .flat_map(|m| [m.source, m.target])
            .find(|e| e.node == node)
    }

    /// The datasets of the job on `node` that the config names (see
    /// [`Job::configured_members`]).
    pub fn datasets_on(&self, node: &str) -> Vec<tandem_zfs::DatasetName> {
        self.configured_members()
            .into_iter()
            .flat_map(|m| [m.source, m.target])
            .filter(|e| e.node == node)
            .map(|e| e.dataset)
            .collect()
    }

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
            shared_source: self.is_fanout(),
            rebuilt_target: st
                .rebuilt
                .as_ref()
                .filter(|r| r.target == target_name)
                .map(|r| (r.base, r.written)),
            claim: roles.generation.clone(),
        }
    }
}
