//! Automatic failover: the daemon on a replica's node watches the job's
//! primary, and when that node has been out of this node's quorate
//! membership for the job's `failover_delay`, fences it and promotes the
//! replica with the [`failover`](crate::failover) engine, then starts the
//! workload with the job's `on_promote` hook. It never fails back: a job
//! whose primary is this node is never acted on, and a returning node is
//! refused as a primary by the generation marks until `reverse`.
//!
//! Two parts:
//!
//! - [`Watcher`], a pure decision function in the style of the planner:
//!   facts in (the quorum answer, the jobs' primaries by their local
//!   marks, whether the node is paused, the clock), decisions out
//!   ([`Decision`]: fail over from NODE for these jobs), and each job's HA
//!   state ([`JobHa`]) for `tandem ha status`;
//! - [`watch`], the loop the daemon runs (and the simulator, on every
//!   node): it asks, decides, fails over, runs the hooks, publishes the
//!   status, and sleeps until the membership changes or a delay expires.
//!
//! The rules, all in [`Watcher::observe`]:
//!
//! - a node that is not quorate, or cannot prove it is, does nothing, and
//!   forgets every absence it was timing: on regaining quorum, the delays
//!   start again;
//! - a paused node does nothing either (and forgets likewise);
//! - a primary counts as lost from the first quorate answer that does not
//!   list it; one answer that lists it again resets its clock;
//! - in a two-node cluster without a QDevice (`two_node`, both halves of a
//!   cut link stay quorate), the node whose name sorts first fences at
//!   once and the other waits `two_node_delay` more, so the two cannot
//!   power each other off at the same moment; the first to fence wins and
//!   the other is off before its delay ends;
//! - a failover that did not confirm the node off is tried again after
//!   `retry`, never sooner.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tandem_fence::config::HumanDuration;
use tandem_fence::quorum::Quorum;
use tandem_repl::job::{FailoverMode, Job};
use tandem_repl::naming::JobName;
use tandem_repl::roles::mark_of;
use tandem_zfs::Zfs;
use tokio::time::Instant;

use crate::env::{Env, HookCall};
use crate::error::{zerr, HaError};
use crate::failover::{failover, FailoverReport, Outcome};

/// Default `[ha] two_node_delay`.
pub const DEFAULT_TWO_NODE_DELAY: Duration = Duration::from_secs(15);
/// Default `[ha] retry`.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(30);
/// How often the loop looks even without a membership event.
pub const IDLE_TURN: Duration = Duration::from_secs(5);

/// The `[ha]` table: this node's automatic failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoConfig {
    /// In a two-node cluster without a QDevice: how much longer the node
    /// whose name sorts last waits before it fences the other.
    #[serde(default = "default_two_node_delay")]
    pub two_node_delay: HumanDuration,
    /// After a failover that could not confirm the node off: wait this
    /// long before trying again.
    #[serde(default = "default_retry")]
    pub retry: HumanDuration,
}

fn default_two_node_delay() -> HumanDuration {
    HumanDuration(DEFAULT_TWO_NODE_DELAY)
}
fn default_retry() -> HumanDuration {
    HumanDuration(DEFAULT_RETRY)
}

impl Default for AutoConfig {
    fn default() -> Self {
        AutoConfig {
            two_node_delay: default_two_node_delay(),
            retry: default_retry(),
        }
    }
}

/// Why a node's automatic failover is paused (`tandem ha pause`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Since when.
    pub at: DateTime<Utc>,
    /// Who paused it (user and command).
    pub by: String,
    /// The operator's words.
    pub reason: Option<String>,
}

/// A job's state as the watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobHa {
    /// `failover = "manual"`: an operator fails it over.
    Manual,
    /// Automatic failover is paused on this node.
    Paused,
    /// This node is not quorate (or cannot prove it): nothing is done.
    NotQuorate,
    /// This node is the job's primary: nothing to watch.
    Primary,
    /// This node became the job's primary by a failover from `from`
    /// (and its `on_promote` succeeded, or there is none).
    Promoted {
        /// The node failed over from.
        from: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Promoted here, but `on_promote` failed: the workload may not run.
    HookFailed {
        /// The node failed over from.
        from: String,
        /// The hook's error.
        error: String,
    },
    /// The primary is in this node's quorate membership.
    Watching {
        /// The primary.
        primary: String,
    },
    /// The primary left the membership; it is fenced once the delay is
    /// over.
    PrimaryLost {
        /// The primary.
        primary: String,
        /// Since when it is gone.
        since: DateTime<Utc>,
        /// When it will be fenced, if it stays gone.
        fence_at: DateTime<Utc>,
    },
    /// Fencing the primary and promoting the replica now.
    Fencing {
        /// The primary.
        primary: String,
        /// Since when.
        since: DateTime<Utc>,
    },
    /// The last failover could not fence (or promote); it is tried again.
    Refused {
        /// The primary.
        primary: String,
        /// Why.
        error: String,
        /// The next try, if it stays gone.
        retry_at: DateTime<Utc>,
    },
    /// The job's local replica cannot be read.
    Unknown {
        /// Why.
        why: String,
    },
}

/// What the watcher knows of one job at one turn.
#[derive(Debug, Clone)]
pub struct JobFacts {
    /// The job.
    pub job: JobName,
    /// Its `failover` setting.
    pub mode: FailoverMode,
    /// Its `failover_delay`.
    pub delay: Duration,
    /// The primary by this node's copy's mark, or why it is unknown.
    pub primary: Result<String, String>,
    /// This node's record of the promotion that made it the primary at
    /// the current generation: from whom, when.
    pub promoted: Option<(String, DateTime<Utc>)>,
    /// That promotion's `on_promote` error, if it failed.
    pub hook_error: Option<String>,
}

/// What the watcher is told at each turn.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Monotonic now.
    pub now: Instant,
    /// Wall time now (for the status).
    pub wall: DateTime<Utc>,
    /// The quorum answer, or why there is none.
    pub quorum: Result<&'a Quorum, String>,
    /// Paused?
    pub paused: bool,
    /// The jobs with an end on this node.
    pub jobs: &'a [JobFacts],
}

/// Fail over from `dead` for `jobs`, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The primary to fence.
    pub dead: String,
    /// The jobs to promote here.
    pub jobs: Vec<JobName>,
}

/// What a failover attempt ended as, told back to the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Every job is this node's now (or not ours any more).
    Done,
    /// Nothing was promoted (not fenced, no quorum, ...).
    Refused(String),
}

/// The automatic failover decisions of one node.
#[derive(Debug)]
pub struct Watcher {
    local: String,
    cfg: AutoConfig,
    /// Nodes out of the quorate membership, since when (monotonic, wall).
    absent: BTreeMap<String, (Instant, DateTime<Utc>)>,
    /// Failed attempts: no new one before then; with the error.
    retry: BTreeMap<String, (Instant, DateTime<Utc>, String)>,
    /// The failover running now, if any.
    running: Option<(String, DateTime<Utc>)>,
    states: BTreeMap<JobName, JobHa>,
    next: Option<Instant>,
}

impl Watcher {
    /// A watcher for node `local`.
    pub fn new(local: &str, cfg: AutoConfig) -> Watcher {
        Watcher {
            local: local.to_owned(),
            cfg,
            absent: BTreeMap::new(),
            retry: BTreeMap::new(),
            running: None,
            states: BTreeMap::new(),
            next: None,
        }
    }

    /// Each job's state after the last [`observe`](Watcher::observe).
    pub fn states(&self) -> &BTreeMap<JobName, JobHa> {
        &self.states
    }

    /// When the watcher next needs a turn without any new event (a delay
    /// or a retry ends).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next
    }

    /// The extra delay before this node fences `dead` in a two-node
    /// cluster without a tie-breaker: none for the node whose name sorts
    /// first, `two_node_delay` for the other.
    fn split_delay(&self, q: &Quorum, dead: &str) -> Duration {
        match q {
            Quorum::Quorate(v) if !v.split_safe() && self.local.as_str() > dead => {
                self.cfg.two_node_delay.0
            }
            _ => Duration::ZERO,
        }
    }

    /// Takes in the facts of one turn; returns the failovers to run now.
    pub fn observe(&mut self, f: &Facts<'_>) -> Vec<Decision> {
        self.next = None;
        let quorate = match f.quorum {
            Ok(q @ Quorum::Quorate(_)) => Some(q),
            _ => None,
        };
        let blocked = if f.paused {
            Some(JobHa::Paused)
        } else if quorate.is_none() {
            Some(JobHa::NotQuorate)
        } else {
            None
        };
        // The absences are timed only while this node may act.
        match (quorate, &blocked) {
            (Some(Quorum::Quorate(v)), None) => {
                let members: BTreeSet<&str> = v.members.iter().map(String::as_str).collect();
                self.absent.retain(|n, _| !members.contains(n.as_str()));
                self.retry.retain(|n, _| !members.contains(n.as_str()));
                for j in f.jobs {
                    if let Ok(p) = &j.primary {
                        if p != &self.local && !members.contains(p.as_str()) {
                            self.absent.entry(p.clone()).or_insert((f.now, f.wall));
                        }
                    }
                }
            }
            _ => {
                self.absent.clear();
                self.retry.clear();
            }
        }
        let mut due: BTreeMap<String, Vec<JobName>> = BTreeMap::new();
        let mut states = BTreeMap::new();
        for j in f.jobs {
            let st = match (&j.primary, &blocked) {
                (Err(why), _) => JobHa::Unknown { why: why.clone() },
                (Ok(p), _) if p == &self.local => match (&j.promoted, &j.hook_error) {
                    (Some((from, _)), Some(error)) => JobHa::HookFailed {
                        from: from.clone(),
                        error: error.clone(),
                    },
                    (Some((from, at)), None) => JobHa::Promoted {
                        from: from.clone(),
                        at: *at,
                    },
                    _ => JobHa::Primary,
                },
                _ if j.mode == FailoverMode::Manual => JobHa::Manual,
                (_, Some(b)) => b.clone(),
                (Ok(p), None) => self.job_state(f, j, p, quorate, &mut due),
            };
            states.insert(j.job.clone(), st);
        }
        self.states = states;
        due.into_iter()
            .map(|(dead, jobs)| Decision { dead, jobs })
            .collect()
    }

    fn job_state(
        &mut self,
        f: &Facts<'_>,
        j: &JobFacts,
        primary: &str,
        quorum: Option<&Quorum>,
        due: &mut BTreeMap<String, Vec<JobName>>,
    ) -> JobHa {
        if let Some((n, since)) = &self.running {
            if n == primary {
                return JobHa::Fencing {
                    primary: n.clone(),
                    since: *since,
                };
            }
        }
        let Some(&(since, since_wall)) = self.absent.get(primary) else {
            return JobHa::Watching {
                primary: primary.to_owned(),
            };
        };
        let delay = j.delay + quorum.map_or(Duration::ZERO, |q| self.split_delay(q, primary));
        let mut at = since + delay;
        let mut at_wall = since_wall + chrono::Duration::from_std(delay).unwrap_or_default();
        if let Some((r, r_wall, error)) = self.retry.get(primary).cloned() {
            if r > at {
                if f.now < r {
                    self.wake(r);
                    return JobHa::Refused {
                        primary: primary.to_owned(),
                        error,
                        retry_at: r_wall,
                    };
                }
                (at, at_wall) = (r, r_wall);
            }
        }
        if f.now >= at && self.running.is_none() {
            due.entry(primary.to_owned())
                .or_default()
                .push(j.job.clone());
            return JobHa::Fencing {
                primary: primary.to_owned(),
                since: f.wall,
            };
        }
        self.wake(at);
        JobHa::PrimaryLost {
            primary: primary.to_owned(),
            since: since_wall,
            fence_at: at_wall,
        }
    }

    fn wake(&mut self, at: Instant) {
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    /// A failover from `dead` starts now.
    pub fn started(&mut self, dead: &str, wall: DateTime<Utc>) {
        self.running = Some((dead.to_owned(), wall));
    }

    /// The failover from `dead` ended.
    pub fn finished(&mut self, dead: &str, now: Instant, wall: DateTime<Utc>, how: Attempt) {
        self.running = None;
        match how {
            Attempt::Done => {
                self.retry.remove(dead);
            }
            Attempt::Refused(e) => {
                let r = self.cfg.retry.0;
                self.retry.insert(
                    dead.to_owned(),
                    (
                        now + r,
                        wall + chrono::Duration::from_std(r).unwrap_or_default(),
                        e,
                    ),
                );
            }
        }
    }
}

/// What `on_promote` did for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// The generation it ran for.
    pub generation: u64,
    /// When it was started.
    pub started: DateTime<Utc>,
    /// `None` while it runs (or when the node died meanwhile); then
    /// whether it succeeded.
    pub ok: Option<bool>,
    /// Its error.
    pub error: Option<String>,
}

/// The record kind of [`HookRecord`].
pub const HOOK_RECORD: &str = "on-promote";

/// The outcome of `on_promote` for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "hook", rename_all = "snake_case")]
pub enum HookOutcome {
    /// No `on_promote` is configured.
    None,
    /// It succeeded.
    Ok,
    /// It failed (the promotion stands).
    Failed {
        /// Why.
        error: String,
    },
    /// It had run (or started) for this generation before: not run again.
    AlreadyRun {
        /// What that run ended as (`None`: interrupted).
        ok: Option<bool>,
    },
}

/// A failover and the hooks it led to.
#[derive(Debug, Clone, Serialize)]
pub struct AutoReport {
    /// The failover.
    pub failover: FailoverReport,
    /// `on_promote` per job promoted (or finished) here.
    pub hooks: BTreeMap<String, HookOutcome>,
}

/// Runs `on_promote` for `job` after it became this node's primary at
/// `generation` (promoted from `from` at `snapshot`), at most once per
/// generation: a record, written under the job's lock before the hook
/// starts, says it ran. Its failure is reported and logged, never undoes
/// the promotion.
pub async fn start_workload<Z: Zfs>(
    env: &Env<'_, Z>,
    job: &Job,
    from: &str,
    generation: u64,
    snapshot: Option<String>,
) -> Result<HookOutcome, HaError> {
    let Some(command) = &job.hooks.on_promote else {
        return Ok(HookOutcome::None);
    };
    if job.endpoint_on(env.local).is_none() {
        return Ok(HookOutcome::None);
    }
    {
        let _lock = env
            .store
            .lock("job", job.name.as_str(), &env.me, env.lock_wait)
            .await?;
        if let Some(r) = env.read_progress::<HookRecord>(HOOK_RECORD, &job.name)? {
            if r.generation == generation {
                return Ok(HookOutcome::AlreadyRun { ok: r.ok });
            }
        }
        env.write_progress(
            HOOK_RECORD,
            &job.name,
            &HookRecord {
                generation,
                started: env.clock.now(),
                ok: None,
                error: None,
            },
        )?;
    }
    let mut call = HookCall::new("on_promote", command, job.name.as_str(), from, env.local);
    call.snapshot = snapshot;
    // Every dataset of a guest job (a recursive one: as configured, its root).
    call.datasets = job
        .datasets_on(env.local)
        .iter()
        .map(ToString::to_string)
        .collect();
    call.guest = job.guest.map(|g| g.to_string());
    call.timeout = Some(job.hooks.on_promote_timeout);
    tracing::info!(job = %job.name, hook = %command, "starting the workload: on_promote");
    let r = env.host.run_hook(&call).await;
    match &r {
        Ok(()) => tracing::info!(job = %job.name, "on_promote succeeded"),
        Err(e) => tracing::error!(job = %job.name,
            "on_promote FAILED (the replica stays promoted; start the workload by hand): {e}"),
    }
    env.write_progress(
        HOOK_RECORD,
        &job.name,
        &HookRecord {
            generation,
            started: env.clock.now(),
            ok: Some(r.is_ok()),
            error: r.as_ref().err().cloned(),
        },
    )?;
    Ok(match r {
        Ok(()) => HookOutcome::Ok,
        Err(error) => HookOutcome::Failed { error },
    })
}

/// Fails over from `dead` for `jobs` (the engine of `tandem failover`),
/// then runs `on_promote` for every job promoted or finished here.
pub async fn failover_and_start<Z: Zfs>(
    env: &Env<'_, Z>,
    jobs: &[Job],
    dead: &str,
    confirmed_off: bool,
) -> Result<AutoReport, HaError> {
    let report = failover(env, jobs, dead, confirmed_off).await?;
    let mut hooks = BTreeMap::new();
    for j in &report.jobs {
        let (generation, snapshot) = match &j.outcome {
            Outcome::Promoted {
                generation,
                snapshot,
                ..
            } => (*generation, Some(snapshot.clone())),
            Outcome::Completed { generation, .. } => (*generation, None),
            _ => continue,
        };
        let Some(job) = jobs.iter().find(|x| x.name.as_str() == j.job) else {
            continue;
        };
        let h = match start_workload(env, job, dead, generation, snapshot).await {
            Ok(h) => h,
            Err(e) => HookOutcome::Failed {
                error: e.to_string(),
            },
        };
        hooks.insert(j.job.clone(), h);
    }
    Ok(AutoReport {
        failover: report,
        hooks,
    })
}

/// The last automatic failover of a node, as `STATE_DIR/ha/last-failover.json`
/// keeps it: what was fenced, how, what was promoted, what the hooks did.
#[derive(Debug, Clone, Serialize)]
pub struct LastFailover {
    /// The node failed over from.
    pub node: String,
    /// When it ended.
    pub at: DateTime<Utc>,
    /// Whether every job ended as a writable primary here.
    pub ok: bool,
    /// The failover and its hooks, if it ran.
    pub report: Option<AutoReport>,
    /// Why it was refused before it could run.
    pub error: Option<String>,
}

/// Where the watch loop reads its pause and publishes its status.
pub trait Control: Send + Sync {
    /// Is automatic failover paused on this node?
    fn paused(&self) -> Option<Pause>;
    /// The status after a turn that changed it.
    fn publish(&self, status: &NodeHa);
    /// A failover ended (for alerts and the log).
    fn report(&self, report: &Result<AutoReport, HaError>, dead: &str);
    /// Why `job` must not fail over by itself now, if so: asked just
    /// before acting, so that what changed since the config was loaded
    /// (Proxmox VE's HA manager taking the guest over) still counts.
    fn veto(&self, job: &Job) -> Option<String> {
        let _ = job;
        None
    }
}

/// A node's automatic failover, for `tandem ha status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeHa {
    /// The node.
    pub node: String,
    /// When this was written.
    pub updated: DateTime<Utc>,
    /// The quorum answer, as text.
    pub quorum: String,
    /// Whether it was quorate.
    pub quorate: bool,
    /// The pause, if paused.
    pub paused: Option<Pause>,
    /// Per job.
    pub jobs: BTreeMap<String, JobHa>,
}

/// The facts of one job from this node's copy (its mark names the
/// primary).
async fn job_facts<Z: Zfs>(env: &Env<'_, Z>, jobs: &[Job]) -> Vec<JobFacts> {
    let mine: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.endpoint_on(env.local).is_some() && j.enabled)
        .collect();
    let roots: Vec<_> = mine
        .iter()
        .filter_map(|j| j.anchor_on(env.local).map(|e| e.dataset))
        .collect();
    let listing = match env.zfs(env.local) {
        Ok(z) => z
            .list(&roots)
            .await
            .map_err(|e| zerr(env.local)(e).to_string()),
        Err(e) => Err(e.to_string()),
    };
    mine.into_iter()
        .map(|j| {
            let primary = match (&listing, j.anchor_on(env.local)) {
                (Err(e), _) => Err(e.clone()),
                (Ok(l), Some(ep)) => match l.get(&ep.dataset) {
                    Some(ds) => Ok(mark_of(j, ds).primary),
                    None => Err(format!("{ep} does not exist")),
                },
                (Ok(_), None) => Err("no end here".into()),
            };
            let (mut promoted, mut hook_error) = (None, None);
            if primary.as_deref() == Ok(env.local) {
                let st = env.store.load(&j.name).ok();
                if let Some(p) = st
                    .as_ref()
                    .and_then(|st| {
                        st.promoted
                            .as_ref()
                            .filter(|p| p.generation == st.generation)
                    })
                    .filter(|p| p.node == env.local)
                {
                    promoted = Some((p.from.clone(), p.at));
                    hook_error = env
                        .read_progress::<HookRecord>(HOOK_RECORD, &j.name)
                        .ok()
                        .flatten()
                        .filter(|r| r.generation == p.generation && r.ok == Some(false))
                        .map(|r| r.error.unwrap_or_default());
                }
            }
            JobFacts {
                job: j.name.clone(),
                mode: j.failover,
                delay: j.failover_delay,
                primary,
                promoted,
                hook_error,
            }
        })
        .collect()
}

/// Runs on_promote for promotions made here whose hook never started
/// (the node died between the promotion and the hook).
async fn pending_hooks<Z: Zfs>(env: &Env<'_, Z>, jobs: &[Job], facts: &[JobFacts]) {
    for f in facts {
        if f.primary.as_deref() != Ok(env.local) || f.mode != FailoverMode::Auto {
            continue;
        }
        let Some(job) = jobs.iter().find(|j| j.name == f.job) else {
            continue;
        };
        if job.hooks.on_promote.is_none() {
            continue;
        }
        let Ok(st) = env.store.load(&job.name) else {
            continue;
        };
        let Some(p) = st
            .promoted
            .filter(|p| p.node == env.local && p.generation == st.generation)
        else {
            continue;
        };
        let done = env
            .read_progress::<HookRecord>(HOOK_RECORD, &job.name)
            .ok()
            .flatten()
            .is_some_and(|r| r.generation >= p.generation);
        if !done {
            tracing::warn!(job = %job.name, generation = p.generation,
                "promoted here but on_promote never started (the node went down?): starting it now");
            let _ = start_workload(
                env,
                job,
                &p.from,
                p.generation,
                Some(p.snapshot.to_string()),
            )
            .await;
        }
    }
}

/// The daemon's automatic failover: forever, ask quorum and the local
/// marks, decide, fail over, start the workloads, publish. `jobs` is read
/// at every turn, so a reload applies at once.
pub async fn watch<Z: Zfs>(
    env: &Env<'_, Z>,
    jobs: &tokio::sync::watch::Receiver<Vec<Job>>,
    cfg: AutoConfig,
    control: &dyn Control,
) {
    let mut w = Watcher::new(env.local, cfg);
    let mut last: Option<NodeHa> = None;
    loop {
        let jobs_now = jobs.borrow().clone();
        let q = env.quorum.probe().await;
        let facts = job_facts(env, &jobs_now).await;
        let paused = control.paused();
        let quorum_text = match &q {
            Ok(q) => q.to_string(),
            Err(e) => format!("cannot prove quorum: {e}"),
        };
        let quorate = matches!(q, Ok(Quorum::Quorate(_)));
        let decisions = w.observe(&Facts {
            now: Instant::now(),
            wall: env.clock.now(),
            quorum: q.as_ref().map_err(ToString::to_string),
            paused: paused.is_some(),
            jobs: &facts,
        });
        let status = |w: &Watcher| NodeHa {
            node: env.local.to_owned(),
            updated: env.clock.now(),
            quorum: quorum_text.clone(),
            quorate,
            paused: paused.clone(),
            jobs: w
                .states()
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let now_status = status(&w);
        if last.as_ref().is_none_or(|l| {
            l.jobs != now_status.jobs
                || l.paused != now_status.paused
                || l.quorum != now_status.quorum
        }) {
            for (job, st) in &now_status.jobs {
                let before = last.as_ref().and_then(|l| l.jobs.get(job));
                if before != Some(st) {
                    tracing::info!(job = %job, state = ?st, "automatic failover: job state");
                }
            }
            control.publish(&now_status);
            last = Some(now_status);
        }
        if quorate && paused.is_none() {
            pending_hooks(env, &jobs_now, &facts).await;
        }
        for d in decisions {
            let mut vetoed = Vec::new();
            let chosen: Vec<Job> = jobs_now
                .iter()
                .filter(|j| d.jobs.contains(&j.name))
                .filter(|j| match control.veto(j) {
                    Some(why) => {
                        tracing::error!(job = %j.name, "automatic failover REFUSED: {why}");
                        vetoed.push(format!("{}: {why}", j.name));
                        false
                    }
                    None => true,
                })
                .cloned()
                .collect();
            if chosen.is_empty() {
                w.finished(
                    &d.dead,
                    Instant::now(),
                    env.clock.now(),
                    Attempt::Refused(vetoed.join("; ")),
                );
                continue;
            }
            tracing::warn!(node = %d.dead, jobs = ?d.jobs,
                "automatic failover: {} has been out of the quorate membership for its failover_delay: fencing it", d.dead);
            w.started(&d.dead, env.clock.now());
            control.publish(&status(&w));
            let r = failover_and_start(env, &chosen, &d.dead, false).await;
            let how = match &r {
                Ok(rep) if rep.failover.ok() => Attempt::Done,
                Ok(rep) => Attempt::Refused(
                    rep.failover
                        .jobs
                        .iter()
                        .filter_map(|j| match &j.outcome {
                            Outcome::Failed { error, .. } => Some(format!("{}: {error}", j.job)),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                Err(e) => Attempt::Refused(e.to_string()),
            };
            control.report(&r, &d.dead);
            w.finished(&d.dead, Instant::now(), env.clock.now(), how);
        }
        let wake = w.next_deadline().map_or(Instant::now() + IDLE_TURN, |d| {
            d.min(Instant::now() + IDLE_TURN)
        });
        tokio::select! {
            _ = env.quorum.changed() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests;

/// The production [`Control`]: files in `STATE_DIR/ha/` — `paused` (a
/// [`Pause`], written by `tandem ha pause`, removed by `resume`) and
/// `status.json` (the last [`NodeHa`], read by `tandem ha status`).
#[derive(Debug, Clone)]
pub struct FileControl {
    /// `STATE_DIR/ha`.
    pub dir: std::path::PathBuf,
}

impl FileControl {
    /// The control files under `state_dir`.
    pub fn new(state_dir: &std::path::Path) -> FileControl {
        FileControl {
            dir: state_dir.join("ha"),
        }
    }

    fn paused_path(&self) -> std::path::PathBuf {
        self.dir.join("paused")
    }

    /// The status file.
    pub fn status_path(&self) -> std::path::PathBuf {
        self.dir.join("status.json")
    }

    /// The record of the last automatic failover (a [`LastFailover`]).
    pub fn last_failover_path(&self) -> std::path::PathBuf {
        self.dir.join("last-failover.json")
    }

    fn write(&self, path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Pauses automatic failover on this node (idempotent: an existing
    /// pause is kept, with its time and reason).
    pub fn pause(&self, by: &str, reason: Option<String>) -> std::io::Result<Pause> {
        if let Some(p) = self.paused() {
            return Ok(p);
        }
        let p = Pause {
            at: Utc::now(),
            by: by.to_owned(),
            reason,
        };
        let body = serde_json::to_vec_pretty(&p).map_err(std::io::Error::other)?;
        self.write(&self.paused_path(), &body)?;
        Ok(p)
    }

    /// Resumes it; `Ok(None)` when it was not paused.
    pub fn resume(&self) -> std::io::Result<Option<Pause>> {
        let p = self.paused();
        match std::fs::remove_file(self.paused_path()) {
            Ok(()) => Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The last status the daemon wrote, as JSON, if any.
    pub fn read_status(&self) -> std::io::Result<Option<serde_json::Value>> {
        match std::fs::read(self.status_path()) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Control for FileControl {
    fn paused(&self) -> Option<Pause> {
        let b = std::fs::read(self.paused_path()).ok()?;
        // An unreadable pause file still pauses: the operator meant it.
        Some(serde_json::from_slice(&b).unwrap_or_else(|_| Pause {
            at: Utc::now(),
            by: "unknown (unreadable pause file)".into(),
            reason: None,
        }))
    }

    fn publish(&self, status: &NodeHa) {
        let r = serde_json::to_vec_pretty(status)
            .map_err(std::io::Error::other)
            .and_then(|b| self.write(&self.status_path(), &b));
        if let Err(e) = r {
            tracing::warn!(file = %self.status_path().display(), "cannot write the HA status: {e}");
        }
    }

    fn report(&self, report: &Result<AutoReport, HaError>, dead: &str) {
        let record = LastFailover {
            node: dead.to_owned(),
            at: Utc::now(),
            ok: report.as_ref().is_ok_and(|r| r.failover.ok()),
            report: report.as_ref().ok().cloned(),
            error: report.as_ref().err().map(ToString::to_string),
        };
        let r = serde_json::to_vec_pretty(&record)
            .map_err(std::io::Error::other)
            .and_then(|b| self.write(&self.last_failover_path(), &b));
        if let Err(e) = r {
            tracing::warn!(file = %self.last_failover_path().display(), "cannot record the failover: {e}");
        }
        match report {
            Ok(r) if r.failover.ok() => tracing::warn!(node = dead,
                jobs = ?r.failover.jobs.iter().map(|j| &j.job).collect::<Vec<_>>(),
                hooks = ?r.hooks, "automatic failover done"),
            Ok(r) => tracing::error!(node = dead, report = ?r.failover.jobs,
                "automatic failover: some jobs failed; trying again later"),
            Err(e) => tracing::error!(
                node = dead,
                kind = e.kind(),
                "automatic failover refused: {e}; trying again later"
            ),
        }
    }
}
