//! One replication cycle over a set of jobs: lock, list each node once,
//! resolve each job's direction from the generation marks, run the jobs (a
//! few at a time), record state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use tandem_zfs::{DatasetName, Listing, Zfs};

use crate::clock::Clock;
use crate::executor::{
    tidy_all, zerr, Executor, JobSpec, NotFollowing, Outcome, ReplError, Sent, Tidy, TidyItem,
};
use crate::job::Job;
use crate::lock::LockError;
use crate::naming::JobName;
use crate::pipe::Progress;
use crate::plan::Plan;
use crate::roles::{self, Roles};
use crate::state::{Direction, Held, StateError, Store};

/// Why a job did not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// Replication failed.
    #[error(transparent)]
    Repl(#[from] ReplError),
    /// The job or one of its datasets is locked by another run.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// State could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The job names a node that has no backend.
    #[error("job {job}: node {node} is not configured")]
    UnknownNode {
        /// Job.
        job: String,
        /// Node.
        node: String,
    },
}

/// How a cycle runs.
#[derive(Debug, Clone)]
pub struct CycleOptions {
    /// How long to wait for a job's locks (zero: refuse at once).
    pub lock_wait: Duration,
    /// Who we are, written into lock files (`pid 123 (tandem run)`).
    pub me: String,
    /// Jobs run at the same time.
    pub parallel: usize,
    /// Where running transfers register their live counters, for progress
    /// displays and logs; entries are removed when the job ends.
    pub live: Option<Live>,
    /// Run only the jobs whose primary is one of these nodes (a daemon:
    /// the nodes that are its machine); others are reported as skipped.
    /// `None`: run every job from its primary, wherever that is (`tandem
    /// run`).
    pub only_primary: Option<BTreeSet<String>>,
}

/// Live counters of the transfers running now, by job.
pub type Live = Arc<std::sync::Mutex<BTreeMap<JobName, Arc<Progress>>>>;

/// The result of one job in a cycle.
#[derive(Debug)]
pub struct JobReport {
    /// The job.
    pub job: JobName,
    /// The job with its current direction applied, once known.
    pub spec: Option<JobSpec>,
    /// When it started.
    pub started: DateTime<Utc>,
    /// How long it took.
    pub duration: Duration,
    /// What happened.
    pub result: Result<Outcome, CycleError>,
}

/// A [`JobReport`] as `--json` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// The job.
    pub job: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// `node:dataset` data came from, once known.
    pub source: Option<String>,
    /// `node:dataset` data went to, once known.
    pub target: Option<String>,
    /// Plan kinds carried out, in order.
    pub plans: Vec<String>,
    /// The snapshot sent.
    pub sent: Option<String>,
    /// Stream bytes moved.
    pub bytes: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// The newest common snapshot afterwards.
    pub common: Option<crate::state::Common>,
    /// Snapshots pruned.
    pub pruned: Vec<String>,
    /// Things worth a look.
    pub warnings: Vec<String>,
    /// Why nothing was done, when this node leaves the job to its primary.
    pub skipped: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

impl JobReport {
    /// The summary `--json` prints.
    pub fn summary(&self) -> Summary {
        let (o, error) = match &self.result {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Summary {
            job: self.job.to_string(),
            ok: self.result.is_ok(),
            source: self.spec.as_ref().map(|s| s.source.to_string()),
            target: self.spec.as_ref().map(|s| s.target.to_string()),
            plans: o.map(|o| o.plans.clone()).unwrap_or_default(),
            sent: o.and_then(|o| o.sent.as_ref().map(|s| s.to_string())),
            bytes: o.map_or(0, |o| o.bytes),
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            common: o.and_then(|o| o.common.clone()),
            pruned: o
                .map(|o| o.pruned.iter().map(|p| p.to_string()).collect())
                .unwrap_or_default(),
            warnings: o.map(|o| o.warnings.clone()).unwrap_or_default(),
            skipped: o.and_then(|o| o.skipped.clone()),
            error,
        }
    }
}

/// A job, its locks and its result so far.
struct Locked<'a> {
    job: &'a Job,
    _locks: Vec<Held>,
}

/// Takes the job's lock, then the locks of both its datasets (in one
/// order for every job, so two jobs sharing a dataset cannot deadlock).
async fn take_locks<'a>(
    store: &dyn Store,
    job: &'a Job,
    opts: &CycleOptions,
) -> Result<Locked<'a>, LockError> {
    let mut locks = vec![
        store
            .lock("job", job.name.as_str(), &opts.me, opts.lock_wait)
            .await?,
    ];
    let mut keys: Vec<String> = job
        .legs()
        .iter()
        .flat_map(Job::configured_members)
        .flat_map(|m| [m.source.to_string(), m.target.to_string()])
        .collect();
    keys.sort();
    keys.dedup();
    for k in &keys {
        locks.push(store.lock("dataset", k, &opts.me, opts.lock_wait).await?);
    }
    Ok(Locked { job, _locks: locks })
}

/// What one cycle needs from the world: the nodes, the store, the clock.
pub struct CycleEnv<'a, Z: Zfs> {
    /// Every node's ZFS, by node name.
    pub nodes: &'a BTreeMap<String, Z>,
    /// Job state and locks.
    pub store: &'a dyn Store,
    /// Wall time (snapshot names, recorded times).
    pub clock: &'a dyn Clock,
}

/// Runs one cycle of `jobs`. Every job gets a report; state is updated.
pub async fn run_cycle<Z: Zfs>(
    env: &CycleEnv<'_, Z>,
    jobs: &[Job],
    opts: &CycleOptions,
) -> Vec<JobReport> {
    let mut reports = Vec::new();
    let mut locked = Vec::new();
    for job in jobs {
        let started = env.clock.now();
        let fail = |e: CycleError| JobReport {
            job: job.name.clone(),
            spec: None,
            started,
            duration: Duration::ZERO,
            result: Err(e),
        };
        if let Some(node) = std::iter::once(&job.source.node)
            .chain(job.legs().iter().map(|l| &l.target.node))
            .find(|n| !env.nodes.contains_key(*n))
            .cloned()
        {
            reports.push(fail(CycleError::UnknownNode {
                job: job.name.to_string(),
                node,
            }));
            continue;
        }
        match take_locks(env.store, job, opts).await {
            Ok(l) => locked.push(l),
            Err(e) => reports.push(fail(e.into())),
        }
    }

    // A fan-out job runs as one leg per target; its legs share one
    // snapshot per cycle, taken by the first leg that needs one.
    let legs: Vec<Job> = locked.iter().flat_map(|l| l.job.legs()).collect();
    let slots: Slots = locked
        .iter()
        .filter(|l| l.job.is_fanout())
        .map(|l| (l.job.name.clone(), tokio::sync::Mutex::new(None)))
        .collect();

    // Commit pending writes on both ends first, so `written` is current
    // (the primary's for planning, the follower's to see a diverged
    // replica), then list each node once for the whole cycle.
    let mut roots: BTreeMap<&str, BTreeSet<DatasetName>> = BTreeMap::new();
    for l in &legs {
        for node in [&l.source.node, &l.target.node] {
            roots.entry(node).or_default().extend(l.datasets_on(node));
        }
    }
    futures::future::join_all(
        roots
            .iter()
            .map(|(node, ds)| sync_node(env.nodes, node, ds.iter().cloned().collect())),
    )
    .await;
    let listings: BTreeMap<&str, Option<Listing>> = futures::future::join_all(
        roots
            .into_iter()
            .map(|(node, r)| list_node(env.nodes, node, r)),
    )
    .await
    .into_iter()
    .collect();

    // Each job's transfer, `parallel` at a time; what is left after it
    // (the listing that checks it, holds, pruning) waits for a batch:
    // every FLUSH_EVERY, and once all transfers are done.
    type JobFuture<'f> =
        std::pin::Pin<Box<dyn std::future::Future<Output = Stage<'f>> + Send + 'f>>;
    let futs: Vec<JobFuture<'_>> = legs
        .iter()
        .map(|l| Box::pin(job_stage(env, l, &listings, slots.get(&l.name), opts)) as JobFuture<'_>)
        .collect();
    let queue: std::sync::Mutex<Vec<Pending<'_>>> = std::sync::Mutex::new(Vec::new());
    let all_sent = std::sync::atomic::AtomicBool::new(false);
    let wake = tokio::sync::Notify::new();
    let take = || std::mem::take(&mut *queue.lock().unwrap_or_else(|e| e.into_inner()));
    let transfers = async {
        let mut done = Vec::new();
        let mut s = stream::iter(futs).buffer_unordered(opts.parallel.max(1));
        while let Some(st) = s.next().await {
            match st {
                Stage::Done(r) => done.push(*r),
                Stage::Pending(p) => queue.lock().unwrap_or_else(|e| e.into_inner()).push(*p),
            }
        }
        all_sent.store(true, std::sync::atomic::Ordering::SeqCst);
        wake.notify_one();
        done
    };
    let batches = async {
        let mut done = Vec::new();
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
            }
            let last = all_sent.load(std::sync::atomic::Ordering::SeqCst);
            let batch = take();
            if !batch.is_empty() {
                done.extend(finish_batch(env, batch).await);
            }
            if last {
                done.extend(finish_batch(env, take()).await);
                return done;
            }
        }
    };
    let (a, b) = tokio::join!(transfers, batches);
    reports.extend(a);
    reports.extend(b);
    reports.sort_by(|a, b| a.job.cmp(&b.job));
    reports
}

/// The snapshot each fan-out job's legs share this cycle, once one of
/// them took it.
type Slots = BTreeMap<JobName, Slot>;

/// One fan-out job's snapshot of this cycle (its short name), shared by
/// its legs.
pub(crate) type Slot = tokio::sync::Mutex<Option<String>>;

/// How long a job whose transfer is done waits, at most, for the batch
/// that checks it, holds its new common snapshot and prunes: long enough
/// that a cycle of many small jobs shares a few `zfs get`, `zfs hold` and
/// `zfs release` per node, short enough that a long transfer of one job
/// never keeps another's state (its lag) behind.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// A job after its transfer, waiting for its batch.
struct Pending<'j> {
    job: &'j Job,
    spec: JobSpec,
    started: DateTime<Utc>,
    /// How long its first step took.
    took: Duration,
    sent: Sent,
    previous_common: Option<tandem_zfs::Guid>,
}

/// A job's first step: finished (a failure, a guest job, nothing to
/// send), or waiting for its batch.
enum Stage<'j> {
    Done(Box<JobReport>),
    Pending(Box<Pending<'j>>),
}

/// What [`run_one`] leaves.
enum Step {
    Done(Outcome),
    Sent {
        sent: Sent,
        previous_common: Option<tandem_zfs::Guid>,
    },
}

/// Finishes a batch of jobs whose transfers are done: one listing of
/// each node involved checks them all, then their holds, releases and
/// prunes go in as few `zfs` calls as the nodes take ([`tidy_all`]); then
/// each job's state is recorded.
async fn finish_batch<Z: Zfs>(env: &CycleEnv<'_, Z>, batch: Vec<Pending<'_>>) -> Vec<JobReport> {
    if batch.is_empty() {
        return Vec::new();
    }
    let t0 = tokio::time::Instant::now();
    let mut roots: BTreeMap<String, BTreeSet<DatasetName>> = BTreeMap::new();
    for p in batch.iter().filter(|p| p.sent.finish.is_some()) {
        for ep in [&p.spec.source, &p.spec.target] {
            roots
                .entry(ep.node.clone())
                .or_default()
                .insert(ep.dataset.clone());
        }
    }
    let listings: BTreeMap<&str, Option<Listing>> = futures::future::join_all(
        roots
            .iter()
            .map(|(n, r)| list_node(env.nodes, n.as_str(), r.clone())),
    )
    .await
    .into_iter()
    .collect();
    let mut checked: Vec<(Pending<'_>, Result<Tidy, CycleError>)> = Vec::new();
    for mut p in batch {
        let r = match p.sent.finish.take() {
            None => Ok(std::mem::take(&mut p.sent.tidy)),
            Some(snap) => verify_one(env, &mut p, &listings, &snap).await,
        };
        checked.push((p, r));
    }
    let mut items: Vec<TidyItem<'_>> = checked
        .iter_mut()
        .filter_map(|(p, r)| {
            let tidy = std::mem::take(r.as_mut().ok()?);
            let out = std::mem::take(&mut p.sent.out);
            Some(TidyItem {
                spec: &p.spec,
                tidy,
                out,
            })
        })
        .collect();
    tidy_all(|n| env.nodes.get(n), &mut items).await;
    let outs: Vec<Outcome> = items.into_iter().map(|i| i.out).collect();
    let mut outs = outs.into_iter();
    let spent = t0.elapsed();
    checked
        .into_iter()
        .map(|(p, r)| {
            // The checked ones' outcomes come back from the batch in order.
            let result = r.map(|_| outs.next().unwrap_or_default());
            let duration = p.took + spent;
            record(env, p.job, Some(&p.spec), p.started, duration, &result);
            JobReport {
                job: p.job.state_key(),
                spec: Some(p.spec),
                started: p.started,
                duration,
                result,
            }
        })
        .collect()
}

/// Checks one job's transfer against the batch's listings (or its own,
/// where a node's listing failed).
async fn verify_one<Z: Zfs>(
    env: &CycleEnv<'_, Z>,
    p: &mut Pending<'_>,
    listings: &BTreeMap<&str, Option<Listing>>,
    snap: &tandem_zfs::SnapshotName,
) -> Result<Tidy, CycleError> {
    let unknown = |node: &str| CycleError::UnknownNode {
        job: p.job.name.to_string(),
        node: node.to_owned(),
    };
    let src = env
        .nodes
        .get(&p.spec.source.node)
        .ok_or_else(|| unknown(&p.spec.source.node))?;
    let tgt = env
        .nodes
        .get(&p.spec.target.node)
        .ok_or_else(|| unknown(&p.spec.target.node))?;
    let ex = Executor {
        job: &p.spec,
        src,
        tgt,
        progress: Arc::new(Progress::default()),
        previous_common: p.previous_common,
        pinned: None,
    };
    let shared = (
        listings.get(p.spec.source.node.as_str()),
        listings.get(p.spec.target.node.as_str()),
    );
    let own;
    let (sl, tl) = match shared {
        (Some(Some(a)), Some(Some(b))) => (a, b),
        _ => {
            own = ex.list_both(false).await?;
            (&own.0, &own.1)
        }
    };
    Ok(ex.verify(sl, tl, snap, &mut p.sent.out).await?)
}

/// The jobs a daemon on the machine of the `local` nodes runs: those
/// whose local dataset takes itself for the primary
/// ([`roles::believes_primary`]). One listing per local node; a job whose
/// local listing fails is kept, so its cycle reports the error.
pub async fn primary_here<Z: Zfs>(
    nodes: &BTreeMap<String, Z>,
    jobs: &[Job],
    local: &BTreeSet<String>,
) -> Vec<Job> {
    let mut roots: BTreeMap<&str, BTreeSet<DatasetName>> = BTreeMap::new();
    for j in jobs {
        for node in [&j.source.node, &j.target.node] {
            if local.contains(node) {
                roots.entry(node).or_default().extend(j.datasets_on(node));
            }
        }
    }
    let listings: BTreeMap<&str, Option<Listing>> =
        futures::future::join_all(roots.into_iter().map(|(n, r)| list_node(nodes, n, r)))
            .await
            .into_iter()
            .collect();
    jobs.iter()
        .filter(|j| {
            [&j.source, &j.target]
                .into_iter()
                .filter(|ep| local.contains(&ep.node))
                .any(
                    |ep| match (listings.get(ep.node.as_str()), j.anchor_on(&ep.node)) {
                        (Some(Some(l)), Some(a)) => {
                            roles::believes_primary(j, &ep.node, l.get(&a.dataset))
                        }
                        _ => true,
                    },
                )
        })
        .cloned()
        .collect()
}

async fn sync_node<Z: Zfs>(nodes: &BTreeMap<String, Z>, node: &str, datasets: Vec<DatasetName>) {
    if let Some(z) = nodes.get(node) {
        if let Err(e) = z.sync(&datasets).await {
            tracing::warn!(%node, "zpool sync failed (changes of the last seconds may wait a cycle): {e}");
        }
    }
}

async fn list_node<'n, Z: Zfs>(
    nodes: &BTreeMap<String, Z>,
    node: &'n str,
    roots: BTreeSet<DatasetName>,
) -> (&'n str, Option<Listing>) {
    let roots: Vec<DatasetName> = roots.into_iter().collect();
    let l = match nodes.get(node) {
        Some(z) => z
            .list(&roots)
            .await
            .map_err(|e| tracing::warn!(%node, "listing failed: {e}"))
            .ok(),
        None => None,
    };
    (node, l)
}

async fn job_stage<'j, Z: Zfs>(
    env: &CycleEnv<'_, Z>,
    job: &'j Job,
    listings: &BTreeMap<&str, Option<Listing>>,
    slot: Option<&Slot>,
    opts: &CycleOptions,
) -> Stage<'j> {
    let started = env.clock.now();
    let t0 = tokio::time::Instant::now();
    let progress = Arc::new(Progress::default());
    let key = job.state_key();
    if let Some(live) = &opts.live {
        if let Ok(mut m) = live.lock() {
            m.insert(key.clone(), progress.clone());
        }
    }
    let mut spec = None;
    let result = run_one(env, job, listings, progress, slot, opts, &mut spec).await;
    if let Some(live) = &opts.live {
        if let Ok(mut m) = live.lock() {
            m.remove(&key);
        }
    }
    let duration = t0.elapsed();
    let result = match (result, spec) {
        (
            Ok(Step::Sent {
                sent,
                previous_common,
            }),
            Some(spec),
        ) => {
            return Stage::Pending(Box::new(Pending {
                job,
                spec,
                started,
                took: duration,
                sent,
                previous_common,
            }))
        }
        (r, s) => {
            spec = s;
            r.map(|st| match st {
                Step::Done(o) => o,
                Step::Sent { sent, .. } => sent.out,
            })
        }
    };
    record(env, job, spec.as_ref(), started, duration, &result);
    Stage::Done(Box::new(JobReport {
        job: key,
        spec,
        started,
        duration,
        result,
    }))
}

/// Both ends of `job` as listed: from this cycle's shared listings, or
/// listed now when a shared listing failed (so the error is the node's).
async fn listings_of<Z: Zfs>(
    env: &CycleEnv<'_, Z>,
    job: &Job,
    shared: &BTreeMap<&str, Option<Listing>>,
) -> Result<(Listing, Listing), CycleError> {
    let mut out = Vec::new();
    for ep in [&job.source, &job.target] {
        if let Some(Some(l)) = shared.get(ep.node.as_str()) {
            // A single-dataset job takes its own datasets only: a copy of a
            // whole node's listing per job would cost a cycle of n jobs n².
            out.push(if job.is_multi() {
                l.clone()
            } else {
                Listing {
                    datasets: job
                        .datasets_on(&ep.node)
                        .into_iter()
                        .filter_map(|d| l.get(&d).map(|x| (d, x.clone())))
                        .collect(),
                }
            });
            continue;
        }
        let z = env
            .nodes
            .get(&ep.node)
            .ok_or_else(|| CycleError::UnknownNode {
                job: job.name.to_string(),
                node: ep.node.clone(),
            })?;
        let l = z
            .list(&job.datasets_on(&ep.node))
            .await
            .map_err(|e| ReplError::Zfs {
                node: ep.node.clone(),
                source: e,
            })?;
        out.push(l);
    }
    let t = out.pop().unwrap_or_default();
    let s = out.pop().unwrap_or_default();
    Ok((s, t))
}

/// The roles of `job` from its two ends' listings.
pub fn roles_of(job: &Job, source: &Listing, target: &Listing) -> Result<Roles, ReplError> {
    if job.is_multi() {
        return crate::guest::roles_of_members(job, source, target);
    }
    Ok(roles::resolve(
        job,
        source.get(&job.source.dataset),
        target.get(&job.target.dataset),
    )?)
}

async fn run_one<Z: Zfs>(
    env: &CycleEnv<'_, Z>,
    job: &Job,
    shared: &BTreeMap<&str, Option<Listing>>,
    progress: Arc<Progress>,
    slot: Option<&Slot>,
    opts: &CycleOptions,
    spec_out: &mut Option<JobSpec>,
) -> Result<Step, CycleError> {
    let (ls, lt) = listings_of(env, job, shared).await?;
    let roles = roles_of(job, &ls, &lt)?;
    let (st, reset) = env.store.load_or_reset(&job.state_key())?;
    let spec = job.spec(&roles, &st);
    *spec_out = Some(spec.clone());
    if let Some(here) = &opts.only_primary {
        if !here.contains(&roles.primary.node) && roles.follower_agrees() {
            return Ok(Step::Done(Outcome {
                skipped: Some(format!(
                    "{} is the primary (generation {}); this node follows it",
                    roles.primary, roles.generation.number
                )),
                ..Outcome::default()
            }));
        }
    }
    if !roles.follower_agrees() {
        return Err(ReplError::NotFollowing(Box::new(NotFollowing::of(job, &roles))).into());
    }
    if job.is_fanout() && !roles.forward(job) {
        return Err(ReplError::FanoutTurned {
            job: job.name.to_string(),
            primary: roles.primary.to_string(),
        }
        .into());
    }
    let (mut src_list, tgt_list) = if roles.forward(job) {
        (ls, lt)
    } else {
        (lt, ls)
    };
    let unknown = |node: &str| CycleError::UnknownNode {
        job: job.name.to_string(),
        node: node.to_owned(),
    };
    let src = env
        .nodes
        .get(&spec.source.node)
        .ok_or_else(|| unknown(&spec.source.node))?;
    let tgt = env
        .nodes
        .get(&spec.target.node)
        .ok_or_else(|| unknown(&spec.target.node))?;
    if job.is_multi() {
        let (mut out, commons) = crate::guest::run(
            job,
            &roles,
            &spec,
            &st,
            (src, tgt),
            (src_list, tgt_list),
            progress,
            slot,
            opts.parallel,
            || env.clock.now(),
        )
        .await?;
        out.warnings.extend(reset);
        if let Err(e) = env
            .store
            .update(&job.state_key(), |st| st.members = commons)
        {
            tracing::error!(job = %job.name, "cannot record its datasets' state: {e}");
        }
        return Ok(Step::Done(out));
    }
    let mut ex = Executor {
        job: &spec,
        src,
        tgt,
        progress,
        previous_common: st.common.as_ref().map(|c| c.guid),
        pinned: None,
    };
    if let Some(slot) = slot {
        ex.pinned =
            shared_snapshot(&ex, slot, &mut src_list, &tgt_list, || env.clock.now()).await?;
    }
    let mut sent = ex
        .transfer(Some((src_list, tgt_list)), || env.clock.now())
        .await?;
    sent.out.warnings.extend(reset);
    Ok(Step::Sent {
        sent,
        previous_common: ex.previous_common,
    })
}

/// A fan-out leg's snapshot: the one a sibling took this cycle, or the
/// one this leg takes now when its plan wants a new one (under the slot's
/// lock, so the legs take one between them). Where one was taken, the
/// source's listing is refreshed to hold it.
async fn shared_snapshot<S: Zfs, T: Zfs>(
    ex: &Executor<'_, S, T>,
    slot: &Slot,
    src_list: &mut Listing,
    tgt_list: &Listing,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<Option<String>, ReplError> {
    let mut taken = slot.lock().await;
    if taken.is_none() {
        if let Some(snapshot) = ex.plan(src_list, tgt_list, now())?.creates() {
            ex.src
                .snapshot(std::slice::from_ref(snapshot))
                .await
                .map_err(zerr(&ex.job.source.node))?;
            *taken = Some(snapshot.short().to_owned());
        }
    }
    let Some(short) = taken.clone() else {
        return Ok(None);
    };
    drop(taken);
    if src_list
        .get(&ex.job.source.dataset)
        .and_then(|d| d.by_short(&short))
        .is_none()
    {
        let fresh = ex
            .src
            .list(std::slice::from_ref(&ex.job.source.dataset))
            .await
            .map_err(zerr(&ex.job.source.node))?;
        src_list.datasets.extend(fresh.datasets);
    }
    Ok(Some(short))
}

fn record<Z: Zfs>(
    env: &CycleEnv<'_, Z>,
    job: &Job,
    spec: Option<&JobSpec>,
    started: DateTime<Utc>,
    duration: Duration,
    result: &Result<Outcome, CycleError>,
) {
    let now = env.clock.now();
    let r = env.store.update(&job.state_key(), |st| {
        if let Some(spec) = spec {
            // What the marks said, for `status` when a node is unreachable.
            st.direction = if spec.source == job.source {
                Direction::Forward
            } else {
                Direction::Reverse
            };
            st.generation = st.generation.max(spec.claim.number);
        }
        if matches!(result, Ok(o) if o.skipped.is_some()) {
            return;
        }
        st.last_attempt = Some(started);
        st.last_duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok(o) => {
                st.last_success = Some(now);
                st.last_plan = o.plans.last().cloned();
                if o.sent.is_some() {
                    st.last_bytes = o.bytes;
                }
                if o.common.is_some() {
                    st.common = o.common.clone();
                }
                st.last_error = None;
                st.consecutive_failures = 0;
            }
            Err(e) => {
                st.last_error = Some(e.to_string());
                st.consecutive_failures += 1;
            }
        }
    });
    if let Err(e) = r {
        tracing::error!(job = %job.name, "cannot record state: {e}");
    }
}

/// What a cycle of a job would do now: its direction, its plan, and the
/// estimated stream size (where ZFS can tell). Changes nothing but a
/// `zpool sync` of both ends.
#[derive(Debug)]
pub struct DryRun {
    /// The job with its current direction.
    pub spec: JobSpec,
    /// The planner's decision.
    pub plan: Plan,
    /// Bytes the transfer would move, where known.
    pub estimated_bytes: Option<u64>,
}

/// Plans one job from its primary, changing nothing (`tandem plan`). A
/// guest job is planned by its first configured dataset (its siblings
/// share its snapshots).
pub async fn dry_run<Z: Zfs>(
    nodes: &BTreeMap<String, Z>,
    store: &dyn Store,
    clock: &dyn Clock,
    j: &Job,
) -> Result<DryRun, CycleError> {
    let first;
    let j = match j.configured_members().first() {
        Some(m) if j.is_multi() => {
            first = j.member_job(m);
            &first
        }
        _ => j,
    };
    let unknown = |node: &str| CycleError::UnknownNode {
        job: j.name.to_string(),
        node: node.to_owned(),
    };
    let za = nodes
        .get(&j.source.node)
        .ok_or_else(|| unknown(&j.source.node))?;
    let zb = nodes
        .get(&j.target.node)
        .ok_or_else(|| unknown(&j.target.node))?;
    for (z, ep) in [(za, &j.source), (zb, &j.target)] {
        if let Err(e) = z.sync(std::slice::from_ref(&ep.dataset)).await {
            tracing::warn!("zpool sync on {}: {e}", ep.node);
        }
    }
    let empty = BTreeMap::new();
    let env = CycleEnv {
        nodes,
        store,
        clock,
    };
    let (la, lb) = listings_of(&env, j, &empty).await?;
    let roles = roles_of(j, &la, &lb)?;
    if !roles.follower_agrees() {
        return Err(ReplError::NotFollowing(Box::new(NotFollowing::of(j, &roles))).into());
    }
    let spec = j.spec(&roles, &store.load(&j.state_key()).unwrap_or_default());
    let (sl, tl, src, tgt) = if roles.forward(j) {
        (la, lb, za, zb)
    } else {
        (lb, la, zb, za)
    };
    let ex = Executor {
        job: &spec,
        src,
        tgt,
        progress: Arc::new(Progress::default()),
        previous_common: None,
        pinned: None,
    };
    let plan = ex.plan(&sl, &tl, clock.now())?;
    let estimated_bytes = estimate(&ex, src, &plan, &sl).await;
    Ok(DryRun {
        spec,
        plan,
        estimated_bytes,
    })
}

async fn estimate<S: Zfs, T: Zfs>(
    ex: &Executor<'_, S, T>,
    src: &S,
    p: &Plan,
    sl: &Listing,
) -> Option<u64> {
    let ds = sl.get(&ex.job.source.dataset);
    match p {
        // The snapshot does not exist yet: estimate from what exists.
        Plan::Full { .. } => ds.and_then(|d| d.referenced),
        Plan::Incremental { base, .. } => {
            if let (Some(d), Some(w)) = (ds, ds.and_then(|d| d.written)) {
                // changes since the newest snapshot, plus what lies between base and it
                let newest = d.newest()?;
                if newest.guid == base.guid {
                    return Some(w);
                }
                let req = tandem_zfs::SendRequest::Snapshot {
                    snapshot: newest.name.clone(),
                    from: Some(tandem_zfs::SendBase::Snapshot(base.name.clone())),
                    intermediates: true,
                    flags: ex.job.flags,
                };
                return src.estimate(&req).await.ok().flatten().map(|n| n + w);
            }
            None
        }
        Plan::Resume { token } => src
            .estimate(&tandem_zfs::SendRequest::Resume {
                token: token.clone(),
            })
            .await
            .ok()
            .flatten(),
        _ => Some(0),
    }
}
