//! Why an engine stopped. One variant per case a caller branches on; the
//! message (the doc comment's sentence, filled in) names the node, job or
//! dataset at fault and what to do.

use tandem_fence::FenceReport;
use tandem_repl::cycle::CycleError;
use tandem_repl::job::Endpoint;
use tandem_repl::lock::LockError;
use tandem_repl::roles::SplitMarks;
use tandem_repl::state::StateError;
use tandem_zfs::{Guid, ZfsError};

/// An engine's failure.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// This node is not in the quorate partition, or cannot prove it is:
    /// it may be the one cut off. Nothing was fenced or changed.
    #[error("this node ({node}) {why}: it may be the one cut off; refusing to promote")]
    NoQuorum {
        /// This node.
        node: String,
        /// What the quorum source said.
        why: String,
    },
    /// No fence level confirmed the node powered off. Nothing was changed.
    #[error(
        "{node} is not confirmed powered off: no fence level confirmed it. Check it by hand and \
         run `tandem failover {node} --confirmed-off`, or fix its fence levels (`tandem fence test {node}`)"
    )]
    NotFenced {
        /// The node.
        node: String,
        /// Every level tried.
        report: FenceReport,
    },
    /// A fence device said "off" but the node is still in this node's
    /// quorate corosync membership: the device lies or names the wrong
    /// machine. Nothing was changed.
    #[error(
        "{device} says {node} is off, but {node} is still a member of this node's quorate corosync \
         partition: the device lies or controls another machine. Nothing was promoted"
    )]
    FencedButPresent {
        /// The node.
        node: String,
        /// The level that confirmed.
        device: String,
        /// Every level tried.
        report: FenceReport,
    },
    /// The node cannot be fenced at all (no levels, bad credentials).
    #[error("cannot fence {node}: {why}; fix its fence levels, or check by hand and pass --confirmed-off")]
    CannotFence {
        /// The node.
        node: String,
        /// What is wrong.
        why: String,
    },
    /// A node that is not in the configuration.
    #[error("no node named {node:?} (known: {})", known.join(", "))]
    UnknownNode {
        /// The name given.
        node: String,
        /// The configured nodes.
        known: Vec<String>,
    },
    /// `failover` named this node itself.
    #[error("{node} is this node; run failover on a survivor")]
    IsLocalNode {
        /// The node.
        node: String,
    },
    /// No job has one end on the dead node and the other here.
    #[error("no job replicates between {dead} and this node ({local}); nothing to promote")]
    NothingToPromote {
        /// The dead node.
        dead: String,
        /// This node.
        local: String,
    },
    /// This node's copy is older than a generation known elsewhere (the
    /// other end answered with a newer mark, or this node's state saw
    /// one): it is an old primary that never followed, not a replica.
    #[error(
        "job {job}: {dataset} carries generation {generation}, but the job is at generation {} \
         (primary {}): this copy is an old primary that never followed it, and promoting it would \
         fail back to old data. Nothing was changed. If {} is gone for good, decide by hand which \
         data to keep; otherwise run `tandem reverse {job}` once it is back",
        newer.number, newer.primary, newer.primary
    )]
    StaleCopy {
        /// The job.
        job: String,
        /// This node's copy.
        dataset: Endpoint,
        /// Its generation.
        generation: u64,
        /// The newer mark.
        newer: tandem_zfs::Generation,
    },
    /// The replica to promote does not exist.
    #[error("job {job}: {dataset} does not exist; nothing to promote")]
    NoReplica {
        /// The job.
        job: String,
        /// The replica.
        dataset: Endpoint,
    },
    /// The replica has no complete replication snapshot.
    #[error(
        "job {job}: {dataset} has no complete replication snapshot of the job; nothing to promote"
    )]
    NoReplicationSnapshot {
        /// The job.
        job: String,
        /// The replica.
        dataset: Endpoint,
    },
    /// Snapshots that tandem did not make are newer than the snapshot to
    /// roll back to; tandem destroys nothing it did not make.
    #[error(
        "job {job}: snapshots newer than the last replication snapshot {base} exist on {dataset} ({}); \
         tandem destroys nothing it did not make: look at them, destroy or keep them, then run it again",
        newer.join(", ")
    )]
    ForeignNewerSnapshots {
        /// The job.
        job: String,
        /// The replica.
        dataset: Endpoint,
        /// The snapshot it would roll back to.
        base: String,
        /// The newer snapshots.
        newer: Vec<String>,
    },
    /// The two ends share no snapshot (by GUID).
    #[error(
        "job {job}: {follower} and {primary} have no snapshot in common (by GUID): following would need \
         a full resend, which tandem will not do over {follower}'s data. Rename it aside by hand \
         (zfs rename) and run `tandem run {job}`"
    )]
    NoCommonSnapshot {
        /// The job.
        job: String,
        /// The new primary.
        primary: Endpoint,
        /// The old one.
        follower: Endpoint,
    },
    /// `reverse` on a job that never changed primary.
    #[error(
        "job {job} was never failed over (no generation mark on either side); nothing to reverse. \
         For a planned move of the primary use `tandem reverse {job} --switchover`"
    )]
    NeverFailedOver {
        /// The job.
        job: String,
    },
    /// `switchover` where the follower does not follow the primary.
    #[error(
        "job {job}: {follower} does not follow {primary} (generation {generation}); a switchover \
         needs a follower in sync: run `tandem reverse {job}` first"
    )]
    NotFollowing {
        /// The job.
        job: String,
        /// The primary.
        primary: Endpoint,
        /// Its generation.
        generation: u64,
        /// The other end.
        follower: Endpoint,
    },
    /// Both ends claim one generation with different primaries.
    #[error(transparent)]
    SplitMarks(#[from] Box<SplitMarks>),
    /// A dataset the engine needs does not exist.
    #[error("job {job}: {dataset} does not exist")]
    DatasetMissing {
        /// The job.
        job: String,
        /// The dataset.
        dataset: Endpoint,
    },
    /// `reverse` rebuilt the follower, but the clone lacks the common
    /// snapshot; nothing more was changed.
    #[error(
        "job {job}: {dataset} was rebuilt but lacks the common snapshot (GUID {guid}); nothing more \
         was changed; the old state is in {aside}"
    )]
    RebuildLacksBase {
        /// The job.
        job: String,
        /// The follower.
        dataset: Endpoint,
        /// The common snapshot's GUID.
        guid: Guid,
        /// Where the old state was set aside.
        aside: String,
    },
    /// The final sync of a switchover failed; the old primary was made
    /// writable again.
    #[error(
        "job {job}: the final sync failed ({why}); {primary} is writable again and still the \
         primary. Start the workload on {} again (switchover_start was not run)",
        primary.node
    )]
    FinalSyncFailed {
        /// The job.
        job: String,
        /// The primary, unchanged.
        primary: Endpoint,
        /// Why.
        why: String,
    },
    /// A hook command failed.
    #[error("job {job}: {hook} command failed: {why}")]
    Hook {
        /// The job.
        job: String,
        /// Which hook.
        hook: &'static str,
        /// How.
        why: String,
    },
    /// An engine's progress record is unreadable.
    #[error("job {job}: the {kind} progress record is corrupt ({why}); look at it in the state directory before running again")]
    Progress {
        /// The job.
        job: String,
        /// Which engine.
        kind: &'static str,
        /// What serde said.
        why: String,
    },
    /// A ZFS call failed.
    #[error("node {node}: {source}")]
    Zfs {
        /// The node.
        node: String,
        /// The error.
        #[source]
        source: ZfsError,
    },
    /// A name built from the job (the diverged dataset's) is invalid.
    #[error(transparent)]
    Name(#[from] tandem_zfs::NameError),
    /// State could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The job is locked by another run.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A replication cycle the engine ran failed.
    #[error(transparent)]
    Cycle(#[from] CycleError),
    /// `failover --test` on a node that is the job's primary (a test
    /// runs against the follower's replica). Nothing was changed.
    #[error(
        "job {job}: {node} is the job's primary (generation {generation}), not its follower; \
         run `tandem failover --test {job}` on the follower ({other}). Nothing was changed"
    )]
    NotFollower {
        /// The job.
        job: String,
        /// This node.
        node: String,
        /// The job's generation.
        generation: u64,
        /// The other end's node.
        other: String,
    },
    /// The job has no end on this node.
    #[error("job {job} has no dataset on this node ({node}); run it on the job's follower")]
    NotOnThisNode {
        /// The job.
        job: String,
        /// This node.
        node: String,
    },
    /// The scratch place of `failover --test` holds something tandem did
    /// not make (or could not remove). Nothing was cloned.
    #[error("job {job}: the failover-test scratch place on {node} is not free: {why}")]
    ScratchTaken {
        /// The job.
        job: String,
        /// This node.
        node: String,
        /// What is there.
        why: String,
    },
    /// The job carries several datasets (`datasets` or `recursive`) and
    /// this command cannot yet turn them around together. Nothing was
    /// changed.
    #[error(
        "job {job} replicates several datasets (a guest job); `tandem {command}` does not \
         handle guest jobs yet and changed nothing. {advice}"
    )]
    GuestJob {
        /// The job.
        job: String,
        /// The command.
        command: &'static str,
        /// What to do instead.
        advice: &'static str,
    },
    /// The job sends to several targets (`target = [...]`), and changing
    /// its primary is not supported yet: which replica takes over, and
    /// how the others then follow it, is not decided. Nothing was changed.
    #[error(
        "job {job} sends to several targets (fan-out); `tandem {command}` does not handle \
         fan-out jobs yet and changed nothing. To move its primary, replace it by one job per \
         target, then fail over or reverse the job of the target that takes over"
    )]
    FanoutJob {
        /// The job.
        job: String,
        /// The command.
        command: &'static str,
    },
    /// The simulator crashed the command at this step.
    #[error("crashed after step {step:?}")]
    Crashed {
        /// The step.
        step: &'static str,
    },
}

/// Refuses a guest job (several datasets) in a command that handles one
/// dataset per job only.
pub fn refuse_guest_job(
    job: &tandem_repl::job::Job,
    command: &'static str,
    advice: &'static str,
) -> Result<(), HaError> {
    if job.is_multi() {
        return Err(HaError::GuestJob {
            job: job.name.to_string(),
            command,
            advice,
        });
    }
    Ok(())
}

/// Refuses a fan-out job (several targets) in a command that changes a
/// job's primary.
pub fn refuse_fanout_job(
    job: &tandem_repl::job::Job,
    command: &'static str,
) -> Result<(), HaError> {
    if job.is_fanout() {
        return Err(HaError::FanoutJob {
            job: job.name.to_string(),
            command,
        });
    }
    Ok(())
}

impl HaError {
    /// A short name of the variant, for JSON and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            HaError::NoQuorum { .. } => "no_quorum",
            HaError::NotFenced { .. } => "not_fenced",
            HaError::FencedButPresent { .. } => "fenced_but_present",
            HaError::CannotFence { .. } => "cannot_fence",
            HaError::UnknownNode { .. } => "unknown_node",
            HaError::IsLocalNode { .. } => "is_local_node",
            HaError::NothingToPromote { .. } => "nothing_to_promote",
            HaError::StaleCopy { .. } => "stale_copy",
            HaError::NoReplica { .. } => "no_replica",
            HaError::NoReplicationSnapshot { .. } => "no_replication_snapshot",
            HaError::ForeignNewerSnapshots { .. } => "foreign_newer_snapshots",
            HaError::NoCommonSnapshot { .. } => "no_common_snapshot",
            HaError::NeverFailedOver { .. } => "never_failed_over",
            HaError::NotFollowing { .. } => "not_following",
            HaError::SplitMarks(_) => "split_marks",
            HaError::DatasetMissing { .. } => "dataset_missing",
            HaError::RebuildLacksBase { .. } => "rebuild_lacks_base",
            HaError::FinalSyncFailed { .. } => "final_sync_failed",
            HaError::Hook { .. } => "hook",
            HaError::Progress { .. } => "progress",
            HaError::Zfs { .. } => "zfs",
            HaError::Name(_) => "name",
            HaError::State(_) => "state",
            HaError::Lock(_) => "lock",
            HaError::Cycle(_) => "cycle",
            HaError::NotFollower { .. } => "not_follower",
            HaError::NotOnThisNode { .. } => "not_on_this_node",
            HaError::GuestJob { .. } => "guest_job",
            HaError::FanoutJob { .. } => "fanout_job",
            HaError::ScratchTaken { .. } => "scratch_taken",
            HaError::Crashed { .. } => "crashed",
        }
    }

    /// Did the engine refuse for safety (no quorum, not fenced)? `tandem
    /// failover` exits 3 then, for HA managers.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            HaError::NoQuorum { .. }
                | HaError::NotFenced { .. }
                | HaError::FencedButPresent { .. }
                | HaError::CannotFence { .. }
        )
    }

    /// The fence report the error carries, if any.
    pub fn fence_report(&self) -> Option<&FenceReport> {
        match self {
            HaError::NotFenced { report, .. } | HaError::FencedButPresent { report, .. } => {
                Some(report)
            }
            _ => None,
        }
    }
}

/// Wraps a ZFS error with its node.
pub fn zerr(node: &str) -> impl Fn(ZfsError) -> HaError + '_ {
    move |source| HaError::Zfs {
        node: node.to_owned(),
        source,
    }
}
