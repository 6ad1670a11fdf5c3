//! One replication cycle over a set of jobs: lock, list each node once,
//! run the jobs (a few at a time), record state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use tandem_zfs::{DatasetName, Listing, Zfs};

use crate::exec::{Executor, JobSpec, Outcome, ReplError};
use crate::lock::{key_file, lock, Lock, LockError};
use crate::naming::JobName;
use crate::pipe::Progress;
use crate::state::{StateError, StateStore};

/// Why a job did not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// Replication failed.
    #[error(transparent)]
    Repl(#[from] ReplError),
    /// The job or its target is locked by another run.
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
}

/// Live counters of the transfers running now, by job.
pub type Live = Arc<std::sync::Mutex<BTreeMap<JobName, Arc<Progress>>>>;

/// The result of one job in a cycle.
#[derive(Debug)]
pub struct JobReport {
    /// The job.
    pub job: JobName,
    /// When it started.
    pub started: DateTime<Utc>,
    /// How long it took.
    pub duration: Duration,
    /// What happened.
    pub result: Result<Outcome, CycleError>,
}

struct Locked<'a> {
    spec: &'a JobSpec,
    _locks: (Lock, Lock),
}

async fn take_locks<'a>(
    store: &StateStore,
    spec: &'a JobSpec,
    opts: &CycleOptions,
) -> Result<Locked<'a>, LockError> {
    let dir = store.dir().join("locks");
    let jl = lock(
        &key_file(&dir, "job", spec.name.as_str()),
        &format!("job {}", spec.name),
        &opts.me,
        opts.lock_wait,
    )
    .await?;
    let tkey = spec.target.to_string();
    let tl = lock(
        &key_file(&dir, "target", &tkey),
        &format!("target {tkey}"),
        &opts.me,
        opts.lock_wait,
    )
    .await?;
    Ok(Locked {
        spec,
        _locks: (jl, tl),
    })
}

/// Runs one cycle of `jobs`. Every job gets a report; state is updated.
pub async fn run_cycle<Z: Zfs>(
    nodes: &BTreeMap<String, Z>,
    jobs: &[JobSpec],
    store: &StateStore,
    opts: &CycleOptions,
) -> Vec<JobReport> {
    let mut reports = Vec::new();
    let mut locked = Vec::new();
    for spec in jobs {
        let started = Utc::now();
        for node in [&spec.source.node, &spec.target.node] {
            if !nodes.contains_key(node) {
                reports.push(JobReport {
                    job: spec.name.clone(),
                    started,
                    duration: Duration::ZERO,
                    result: Err(CycleError::UnknownNode {
                        job: spec.name.to_string(),
                        node: node.clone(),
                    }),
                });
            }
        }
        if reports.iter().any(|r| r.job == spec.name) {
            continue;
        }
        match take_locks(store, spec, opts).await {
            Ok(l) => locked.push(l),
            Err(e) => reports.push(JobReport {
                job: spec.name.clone(),
                started,
                duration: Duration::ZERO,
                result: Err(e.into()),
            }),
        }
    }

    // One listing per node for the whole cycle.
    let mut roots: BTreeMap<&str, BTreeSet<DatasetName>> = BTreeMap::new();
    for l in &locked {
        roots
            .entry(&l.spec.source.node)
            .or_default()
            .insert(l.spec.source.dataset.clone());
        roots
            .entry(&l.spec.target.node)
            .or_default()
            .insert(l.spec.target.dataset.clone());
    }
    // Commit pending writes on the sources first, so `written` is current.
    let mut sources: BTreeMap<&str, Vec<DatasetName>> = BTreeMap::new();
    for l in &locked {
        sources
            .entry(&l.spec.source.node)
            .or_default()
            .push(l.spec.source.dataset.clone());
    }
    futures::future::join_all(
        sources
            .into_iter()
            .map(|(node, ds)| sync_node(nodes, node, ds)),
    )
    .await;
    let listings: BTreeMap<&str, Option<Listing>> =
        futures::future::join_all(roots.into_iter().map(|(node, r)| list_node(nodes, node, r)))
            .await
            .into_iter()
            .collect();

    type JobFuture<'f> =
        std::pin::Pin<Box<dyn std::future::Future<Output = JobReport> + Send + 'f>>;
    let futs: Vec<JobFuture<'_>> = locked
        .iter()
        .map(|l| {
            Box::pin(job_report(
                nodes,
                l.spec,
                store,
                &listings,
                opts.live.clone(),
            )) as JobFuture<'_>
        })
        .collect();
    let results: Vec<JobReport> = stream::iter(futs)
        .buffer_unordered(opts.parallel.max(1))
        .collect()
        .await;
    reports.extend(results);
    reports.sort_by(|a, b| a.job.cmp(&b.job));
    reports
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

async fn job_report<Z: Zfs>(
    nodes: &BTreeMap<String, Z>,
    spec: &JobSpec,
    store: &StateStore,
    listings: &BTreeMap<&str, Option<Listing>>,
    live: Option<Live>,
) -> JobReport {
    let started = Utc::now();
    let t0 = Instant::now();
    let progress = Arc::new(Progress::default());
    if let Some(live) = &live {
        if let Ok(mut m) = live.lock() {
            m.insert(spec.name.clone(), progress.clone());
        }
    }
    let result = run_one(nodes, spec, store, listings, progress).await;
    if let Some(live) = &live {
        if let Ok(mut m) = live.lock() {
            m.remove(&spec.name);
        }
    }
    let duration = t0.elapsed();
    record(store, spec, started, duration, &result);
    JobReport {
        job: spec.name.clone(),
        started,
        duration,
        result,
    }
}

async fn run_one<Z: Zfs>(
    nodes: &BTreeMap<String, Z>,
    spec: &JobSpec,
    store: &StateStore,
    listings: &BTreeMap<&str, Option<Listing>>,
    progress: Arc<Progress>,
) -> Result<Outcome, CycleError> {
    let unknown = |node: &str| CycleError::UnknownNode {
        job: spec.name.to_string(),
        node: node.to_owned(),
    };
    let src = nodes
        .get(&spec.source.node)
        .ok_or_else(|| unknown(&spec.source.node))?;
    let tgt = nodes
        .get(&spec.target.node)
        .ok_or_else(|| unknown(&spec.target.node))?;
    let st = store.load(&spec.name)?;
    let shared = match (
        listings.get(spec.source.node.as_str()),
        listings.get(spec.target.node.as_str()),
    ) {
        (Some(Some(a)), Some(Some(b))) => Some((a.clone(), b.clone())),
        _ => None,
    };
    let ex = Executor {
        job: spec,
        src,
        tgt,
        progress,
        previous_common: st.common.as_ref().map(|c| c.guid),
    };
    Ok(ex.run(shared, Utc::now).await?)
}

fn record(
    store: &StateStore,
    spec: &JobSpec,
    started: DateTime<Utc>,
    duration: Duration,
    result: &Result<Outcome, CycleError>,
) {
    let r = store.update(&spec.name, |st| {
        st.last_attempt = Some(started);
        st.last_duration_ms = duration.as_millis() as u64;
        match result {
            Ok(o) => {
                st.last_success = Some(Utc::now());
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
        tracing::error!(job = %spec.name, "cannot record state: {e}");
    }
}
