//! `failover --test JOB`: a failover drill that changes nothing. On the
//! job's follower, the newest complete replication snapshot of the local
//! replica is cloned into a scratch place, the job's `on_test` hook runs
//! against the clone (for Proxmox: a copy of the guest with its network
//! unplugged), and the clone is destroyed. The report says what a real
//! failover would have lost (the snapshot's age) and what the hook said.
//!
//! Nothing is fenced, no replica is written, rolled back, marked or made
//! writable, and the job's lock is not taken, so the primary's daemon
//! keeps replicating while the hook runs: an incremental receive into the
//! replica never needs to destroy the clone's origin (tandem receives
//! without `-F`), and a prune of that snapshot is refused by ZFS ("has
//! dependent clones") and skipped by the executor until the clone is gone.
//!
//! ## The scratch place
//!
//! Clones live in the replica's pool (ZFS requires it) under
//! `POOL/tandem-test/JOB/NAME`, where `NAME` is the replica's last name
//! component (so a hook can tell which disk a clone is):
//!
//! - `POOL/tandem-test`: a container (`canmount=off`) marked
//!   `tandem:test=*`; removed when no job's test uses it;
//! - `POOL/tandem-test/JOB`: a container marked `tandem:test=JOB`;
//! - `POOL/tandem-test/JOB/NAME`: the clone, `readonly=off` (a test guest
//!   writes to its disks; the replica is another dataset), marked
//!   `tandem:test=JOB`.
//!
//! Every mark is set by the `zfs create`/`zfs clone` itself, so there is no
//! moment at which tandem's scratch dataset exists unmarked. Clean-up
//! destroys only what carries the job's mark, sits in the job's scratch
//! place, and (for clones) is a clone of one of the job's replication
//! snapshots (DESIGN.md invariant 3); anything else found there is kept
//! and named.
//!
//! ## Crashes
//!
//! A test killed at any point leaves at most marked clones and containers.
//! The next `--test` of the job removes them before it starts, and
//! `--cleanup` removes them on demand. Tests and clean-ups in one pool on
//! one node take one lock (`test`, the pool), so two never destroy each
//! other's clones.

use serde::Serialize;
use tandem_repl::job::{Endpoint, Job};
use tandem_repl::roles::{mark_of, resolve};
use tandem_zfs::{Changed, Dataset, DatasetName, Guid, Zfs};

use crate::env::{Env, HookCall};
use crate::error::{refuse_fanout_job, refuse_guest_job, zerr, HaError};
use crate::failover::PEEK_TIMEOUT;

/// The scratch place's name under a pool's root.
pub const SCRATCH: &str = "tandem-test";
/// The user property that marks what `failover --test` made: the job's
/// name, or [`ROOT_MARK`] on the pool's scratch container.
pub const TEST_PROPERTY: &str = "tandem:test";
/// The mark of `POOL/tandem-test` (not a valid job name).
pub const ROOT_MARK: &str = "*";
/// The lock kind tests and clean-ups take (the key: the pool).
pub const LOCK: &str = "test";

/// `POOL/tandem-test`.
pub fn scratch_root(replica: &DatasetName) -> Result<DatasetName, HaError> {
    Ok(DatasetName::parse(&format!(
        "{}/{SCRATCH}",
        replica.pool()
    ))?)
}

/// `POOL/tandem-test/JOB`.
pub fn scratch_of(job: &Job, replica: &DatasetName) -> Result<DatasetName, HaError> {
    Ok(DatasetName::parse(&format!(
        "{}/{SCRATCH}/{}",
        replica.pool(),
        job.name
    ))?)
}

/// `POOL/tandem-test/JOB/NAME`: where the replica's test clone goes.
pub fn clone_name(job: &Job, replica: &DatasetName) -> Result<DatasetName, HaError> {
    let leaf = replica
        .as_str()
        .rsplit('/')
        .next()
        .unwrap_or(replica.as_str());
    Ok(DatasetName::parse(&format!(
        "{}/{leaf}",
        scratch_of(job, replica)?
    ))?)
}

/// How the `on_test` hook ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HookOutcome {
    /// It exited 0.
    Ok {
        /// How long it ran, in milliseconds.
        elapsed_ms: f64,
    },
    /// It failed, or was killed after `on_test_timeout`.
    Failed {
        /// How.
        error: String,
        /// How long it ran, in milliseconds.
        elapsed_ms: f64,
    },
    /// The job has no `on_test` hook: the clone was made and removed.
    None,
}

/// What `failover --test` did.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    /// The job.
    pub job: String,
    /// This node (the follower).
    pub node: String,
    /// The primary a failover would have failed over from.
    pub primary: String,
    /// The job's generation, as the marks say.
    pub generation: u64,
    /// Whether the primary answered (else this node's own marks decided).
    pub primary_answered: bool,
    /// The local replica, `node:dataset`; never changed.
    pub replica: String,
    /// The snapshot cloned: what a failover now would roll back to.
    pub snapshot: String,
    /// Its GUID.
    pub snapshot_guid: Guid,
    /// Its age: the data-loss window a failover now would have meant.
    pub rpo_seconds: i64,
    /// The clones the hook ran against.
    pub clones: Vec<String>,
    /// The hook's result.
    pub hook: HookOutcome,
    /// Leftovers of earlier, interrupted tests removed first.
    pub leftovers_removed: Vec<String>,
    /// Whether every clone (and scratch container) is gone again.
    pub cleaned_up: bool,
    /// Why not, when not.
    pub cleanup_error: Option<String>,
    /// The whole run, in milliseconds.
    pub elapsed_ms: f64,
}

impl TestReport {
    /// The clone was made, the hook (if any) succeeded, and everything
    /// was removed again.
    pub fn ok(&self) -> bool {
        self.cleaned_up && !matches!(self.hook, HookOutcome::Failed { .. })
    }
}

/// What a clean-up found and did for one job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cleanup {
    /// The job.
    pub job: String,
    /// Destroyed: tandem's own test clones and containers.
    pub destroyed: Vec<String>,
    /// Found in the scratch place but kept, each with why.
    pub kept: Vec<String>,
}

impl Cleanup {
    /// Nothing was kept.
    pub fn complete(&self) -> bool {
        self.kept.is_empty()
    }
}

/// Runs the failover test of `job` on this node (see the module docs).
///
/// `Err` when the test could not be made (not the follower here, no
/// replica or replication snapshot, the scratch place is taken, a ZFS
/// call failed); whatever it had made by then is removed again. A failing
/// hook or an incomplete clean-up is in the report ([`TestReport::ok`]).
pub async fn test<Z: Zfs>(env: &Env<'_, Z>, job: &Job) -> Result<TestReport, HaError> {
    refuse_fanout_job(job, "failover --test")?;
    refuse_guest_job(
        job,
        "failover --test",
        "Clone the replica disks of its newest common snapshot by hand to test them",
    )?;
    let start = tokio::time::Instant::now();
    let ep = job
        .endpoint_on(env.local)
        .ok_or_else(|| HaError::NotOnThisNode {
            job: job.name.to_string(),
            node: env.local.to_owned(),
        })?
        .clone();
    let z = env.zfs(env.local)?;
    let node = env.local;
    let listing = z
        .list(std::slice::from_ref(&ep.dataset))
        .await
        .map_err(zerr(node))?;
    let ds = listing.get(&ep.dataset).ok_or_else(|| HaError::NoReplica {
        job: job.name.to_string(),
        dataset: ep.clone(),
    })?;
    let (primary, generation, answered) = follower_check(env, job, &ep, ds).await?;

    let _lock = env
        .store
        .lock(LOCK, ep.dataset.pool(), &env.me, env.lock_wait)
        .await?;
    let before = cleanup_job(env, job, &ep).await?;
    if !before.complete() {
        return Err(HaError::ScratchTaken {
            job: job.name.to_string(),
            node: node.to_owned(),
            why: before.kept.join("; "),
        });
    }
    if !before.destroyed.is_empty() {
        tracing::info!(job = %job.name, removed = ?before.destroyed, "removed what an interrupted failover test left");
    }
    // The newest complete replication snapshot: a partial receive is no
    // snapshot, and a snapshot that tandem did not make is not the job's.
    let snap = ds
        .snapshots
        .iter()
        .rev()
        .find(|s| job.name.owns(s))
        .ok_or_else(|| HaError::NoReplicationSnapshot {
            job: job.name.to_string(),
            dataset: ep.clone(),
        })?
        .clone();
    let rpo = env.clock.now().timestamp() - snap.creation;

    let clone = clone_name(job, &ep.dataset)?;
    let made = make_clone(env, job, &ep, &snap.name, &clone).await;
    if let Err(e) = made {
        // Leave nothing behind; the error that stopped it is the news.
        if let Err(c) = cleanup_job(env, job, &ep).await {
            tracing::warn!(job = %job.name, "after a failed clone, the clean-up failed too: {c}");
        }
        return Err(e);
    }
    env.host.step("cloned")?;
    tracing::info!(job = %job.name, snapshot = %snap.name, %clone, rpo_s = rpo, "failover test: cloned");

    let hook = match &job.hooks.on_test {
        None => HookOutcome::None,
        Some(cmd) => {
            let mut call = HookCall::new("on_test", cmd, job.name.as_str(), &primary, node);
            call.snapshot = Some(snap.name.to_string());
            call.datasets = vec![clone.to_string()];
            call.guest = job.guest.map(|g| g.to_string());
            call.timeout = Some(job.hooks.on_test_timeout);
            let t = tokio::time::Instant::now();
            let r = env.host.run_hook(&call).await;
            let elapsed_ms = t.elapsed().as_secs_f64() * 1000.0;
            match r {
                Ok(()) => HookOutcome::Ok { elapsed_ms },
                Err(error) => {
                    tracing::error!(job = %job.name, "on_test failed: {error}");
                    HookOutcome::Failed { error, elapsed_ms }
                }
            }
        }
    };
    env.host.step("hook-run")?;

    let (cleaned_up, cleanup_error) = match cleanup_job(env, job, &ep).await {
        Ok(c) if c.complete() => (true, None),
        Ok(c) => (false, Some(format!("kept: {}", c.kept.join("; ")))),
        Err(e) => (false, Some(e.to_string())),
    };
    Ok(TestReport {
        job: job.name.to_string(),
        node: node.to_owned(),
        primary,
        generation,
        primary_answered: answered,
        replica: ep.to_string(),
        snapshot: snap.name.to_string(),
        snapshot_guid: snap.guid,
        rpo_seconds: rpo,
        clones: vec![clone.to_string()],
        hook,
        leftovers_removed: before.destroyed,
        cleaned_up,
        cleanup_error,
        elapsed_ms: start.elapsed().as_secs_f64() * 1000.0,
    })
}

/// This node must be the job's follower: by the other end's marks when it
/// answers at once, else by this node's own. Returns the primary's node,
/// the generation and whether the other end answered.
async fn follower_check<Z: Zfs>(
    env: &Env<'_, Z>,
    job: &Job,
    ep: &Endpoint,
    ds: &Dataset,
) -> Result<(String, u64, bool), HaError> {
    let other = job.other_than(env.local).cloned();
    let peer = match &other {
        Some(o) => {
            let z = env.zfs(&o.node)?;
            tokio::time::timeout(PEEK_TIMEOUT, z.list(std::slice::from_ref(&o.dataset)))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|l| l.get(&o.dataset).cloned())
        }
        None => None,
    };
    let (primary, generation, answered) = match (&peer, &other) {
        (Some(theirs), Some(_)) => {
            let (s, t) = if *ep == job.source {
                (Some(ds), theirs.as_ref())
            } else {
                (theirs.as_ref(), Some(ds))
            };
            let roles = resolve(job, s, t)?;
            (roles.primary.node, roles.generation.number, true)
        }
        _ => {
            let m = mark_of(job, ds);
            (m.primary, m.number, false)
        }
    };
    if primary == env.local {
        return Err(HaError::NotFollower {
            job: job.name.to_string(),
            node: env.local.to_owned(),
            generation,
            other: other.map(|o| o.node).unwrap_or_default(),
        });
    }
    Ok((primary, generation, answered))
}

/// The scratch containers (marked as they are made) and the clone.
async fn make_clone<Z: Zfs>(
    env: &Env<'_, Z>,
    job: &Job,
    ep: &Endpoint,
    snap: &tandem_zfs::SnapshotName,
    clone: &DatasetName,
) -> Result<(), HaError> {
    let z = env.zfs(env.local)?;
    let node = env.local;
    let root = scratch_root(&ep.dataset)?;
    z.create_container(&root, &[(TEST_PROPERTY, ROOT_MARK)])
        .await
        .map_err(zerr(node))?;
    let scratch = scratch_of(job, &ep.dataset)?;
    let made = z
        .create_container(&scratch, &[(TEST_PROPERTY, job.name.as_str())])
        .await
        .map_err(zerr(node))?;
    if made == Changed::Already {
        let mark = z
            .get_property(&scratch, TEST_PROPERTY)
            .await
            .map_err(zerr(node))?;
        if mark.as_deref() != Some(job.name.as_str()) {
            return Err(HaError::ScratchTaken {
                job: job.name.to_string(),
                node: node.to_owned(),
                why: format!(
                    "{scratch} exists but is not marked {TEST_PROPERTY}={} (it is {}): tandem did \
                     not make it; rename it, tandem keeps {root} for failover tests",
                    job.name,
                    mark.as_deref().unwrap_or("unset")
                ),
            });
        }
    }
    z.clone_snapshot(
        snap,
        clone,
        &[("readonly", "off"), (TEST_PROPERTY, job.name.as_str())],
        None,
    )
    .await
    .map_err(zerr(node))?;
    Ok(())
}

/// Removes what tests of `job` left on this node: clones marked with the
/// job's name in its scratch place whose origin is one of the job's
/// replication snapshots, then its scratch container and the pool's, when
/// they are marked and empty. Takes no lock (its callers do).
async fn cleanup_job<Z: Zfs>(
    env: &Env<'_, Z>,
    job: &Job,
    ep: &Endpoint,
) -> Result<Cleanup, HaError> {
    let z = env.zfs(env.local)?;
    let node = env.local;
    let mut out = Cleanup {
        job: job.name.to_string(),
        ..Cleanup::default()
    };
    let root = scratch_root(&ep.dataset)?;
    let scratch = scratch_of(job, &ep.dataset)?;
    let l = z
        .list(std::slice::from_ref(&scratch))
        .await
        .map_err(zerr(node))?;
    if let Some(container) = l.get(&scratch) {
        let mark = |ds: DatasetName| async move { z.get_property(&ds, TEST_PROPERTY).await };
        let mut left = 0;
        for (name, d) in &l.datasets {
            if name.parent().as_ref() != Some(&scratch) {
                continue;
            }
            let ours =
                mark(name.clone()).await.map_err(zerr(node))?.as_deref() == Some(job.name.as_str());
            let from_job = d
                .origin
                .as_ref()
                .is_some_and(|o| job.name.parse_own(o.short()).is_some());
            if !(ours && from_job) {
                out.kept.push(format!(
                    "{name}: not a test clone of job {} (no {TEST_PROPERTY}={} mark, or not a clone of its snapshots)",
                    job.name, job.name
                ));
                left += 1;
                continue;
            }
            match z.destroy_dataset(name, None).await {
                Ok(_) => out.destroyed.push(name.to_string()),
                Err(e) => {
                    out.kept.push(format!("{name}: {e}"));
                    left += 1;
                }
            }
        }
        let ours =
            mark(scratch.clone()).await.map_err(zerr(node))?.as_deref() == Some(job.name.as_str());
        if !ours {
            out.kept.push(format!(
                "{scratch}: not marked {TEST_PROPERTY}={}: tandem did not make it",
                job.name
            ));
        } else if left == 0 && container.snapshots.is_empty() {
            match z.destroy_dataset(&scratch, None).await {
                Ok(_) => out.destroyed.push(scratch.to_string()),
                Err(e) => out.kept.push(format!("{scratch}: {e}")),
            }
        }
    }
    // The pool's scratch container goes when no test uses it.
    let l = z
        .list(std::slice::from_ref(&root))
        .await
        .map_err(zerr(node))?;
    if let Some(r) = l.get(&root) {
        let empty = r.snapshots.is_empty()
            && !l
                .datasets
                .keys()
                .any(|k| k.parent().as_ref() == Some(&root));
        let marked = z
            .get_property(&root, TEST_PROPERTY)
            .await
            .map_err(zerr(node))?
            .as_deref()
            == Some(ROOT_MARK);
        if empty && marked {
            match z.destroy_dataset(&root, None).await {
                Ok(Changed::Done) => out.destroyed.push(root.to_string()),
                Ok(Changed::Already) => {}
                // Another node's tandem (same machine, "local" nodes) may
                // have just begun a test in it: it stays.
                Err(e) => tracing::debug!(%root, "kept the scratch container: {e}"),
            }
        }
    }
    Ok(out)
}

/// `failover --cleanup [JOB]`: removes what interrupted tests of `jobs`
/// left on this node (whatever this node's role in them is now).
pub async fn cleanup<Z: Zfs>(env: &Env<'_, Z>, jobs: &[Job]) -> Result<Vec<Cleanup>, HaError> {
    let mut out = Vec::new();
    for job in jobs {
        let Some(ep) = job.endpoint_on(env.local) else {
            continue;
        };
        let _lock = env
            .store
            .lock(LOCK, ep.dataset.pool(), &env.me, env.lock_wait)
            .await?;
        out.push(cleanup_job(env, job, ep).await?);
    }
    Ok(out)
}
