//! `tandem daemon`: every `interval`, runs each enabled job with an end on
//! this machine whose primary is here. Which end is the primary is read
//! from the generation marks on the datasets at every run
//! ([`tandem_repl::cycle::primary_here`]), so a failover or switchover
//! made elsewhere is picked up without a restart. SIGTERM/SIGINT stop it
//! cleanly (no new cycles; running ones get a grace period, then their
//! `zfs` processes are killed, leaving a resumable receive where ZFS
//! supports it). SIGHUP reloads the config; an invalid new config is
//! logged and the old one kept.
//!
//! With an enabled `[watchdog]` table the daemon also holds this node's
//! watchdog ([`DaemonKeeper`]): the keeper starts after the config is
//! loaded and the signal handlers are in place (a keeper that cannot start
//! is fatal), every turn of the main loop is its heartbeat, and a clean
//! stop disarms it last. A changed `[watchdog]` applies at the next start.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tandem_fence::watchdog::daemon::DaemonKeeper;
use tandem_repl::clock::SystemClock;
use tandem_repl::cycle::{primary_here, run_cycle, CycleEnv, CycleOptions, Live};
use tandem_repl::job::Job;
use tandem_repl::naming::JobName;
use tandem_repl::sched::Timetable;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{load, me};
use tandem_config::Config;

/// How often running transfers are logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// How long running cycles may take to finish after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

struct Loaded {
    cfg: Config,
    nodes: Arc<BTreeMap<String, tandem_config::NodeZfs>>,
}

/// Every enabled job with an end on this machine; whether this end is the
/// primary is decided at each run.
fn schedule(cfg: &Config) -> Vec<(JobName, Duration)> {
    cfg.jobs
        .values()
        .filter(|j| j.enabled)
        .filter(|j| cfg.is_local(&j.source.node) || cfg.is_local(&j.target.node))
        .map(|j| (j.name.clone(), j.interval))
        .collect()
}

async fn report_progress(live: Live) {
    let mut meters: BTreeMap<JobName, (tandem_repl::pipe::Meter, usize)> = BTreeMap::new();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tick.tick().await;
        let running: Vec<(JobName, Arc<tandem_repl::pipe::Progress>)> = match live.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => continue,
        };
        meters.retain(|j, _| running.iter().any(|(r, _)| r == j));
        for (job, p) in running {
            let (meter, seen) = meters.entry(job.clone()).or_default();
            *seen += 1;
            let (rate, eta) = meter.sample(&p);
            if *seen > 1 && p.bytes() > 0 {
                tracing::info!(job = %job, bytes = p.bytes(), estimate = p.estimate(), rate_bytes_per_s = rate as u64, eta_s = eta, "transfer in progress");
            }
        }
    }
}

/// Does any job with an end here fail over by itself?
fn wants_auto(cfg: &Config) -> bool {
    cfg.jobs.values().any(|j| {
        j.enabled
            && j.failover == tandem_repl::job::FailoverMode::Auto
            && (cfg.is_local(&j.source.node) || cfg.is_local(&j.target.node))
    })
}

/// The daemon's [`tandem_ha::auto::Control`]: the state directory's files,
/// and a last look at Proxmox VE's HA resources before acting — the config
/// refuses `failover = "auto"` for a guest PVE's HA manages when it is
/// loaded, but the guest may have been added to PVE's HA since.
struct PveAware {
    files: tandem_ha::auto::FileControl,
    resources: std::path::PathBuf,
}

impl tandem_ha::auto::Control for PveAware {
    fn paused(&self) -> Option<tandem_ha::auto::Pause> {
        tandem_ha::auto::Control::paused(&self.files)
    }
    fn publish(&self, status: &tandem_ha::auto::NodeHa) {
        tandem_ha::auto::Control::publish(&self.files, status)
    }
    fn report(&self, report: &Result<tandem_ha::auto::AutoReport, tandem_ha::HaError>, dead: &str) {
        tandem_ha::auto::Control::report(&self.files, report, dead)
    }
    fn veto(&self, job: &tandem_repl::job::Job) -> Option<String> {
        let guest = job.guest?;
        match std::fs::read_to_string(&self.resources) {
            Ok(text) => tandem_config::pve::managed_services(&text)
                .contains(&guest)
                .then(|| {
                    format!(
                        "guest {guest} is now managed by Proxmox VE's own HA manager ({}): two managers \
                         must never act on one guest",
                        self.resources.display()
                    )
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // Cannot tell: the safe answer is not to act.
            Err(e) => Some(format!(
                "cannot read {} to check that PVE's HA manager does not manage guest {guest}: {e}",
                self.resources.display()
            )),
        }
    }
}

/// Starts this node's automatic failover loop
/// ([`tandem_ha::auto::watch`]) over the loaded config, if a job here
/// asks for it.
fn start_auto(
    cur: &Loaded,
    store: &tandem_repl::state::StateStore,
) -> Option<tokio::task::JoinHandle<()>> {
    if !wants_auto(&cur.cfg) {
        return None;
    }
    let cfg = Arc::new(cur.cfg.clone());
    let nodes = cur.nodes.clone();
    let store = store.clone();
    tracing::info!(node = %cfg.local_node, "automatic failover: watching the primaries of this node's replicas");
    Some(tokio::spawn(async move {
        let fencer = tandem_config::fencing::ConfigFencer(&cfg);
        let quorum = cfg.quorum.source();
        let env = crate::ha::env(
            &cfg,
            &*quorum,
            &nodes,
            &store,
            &fencer,
            "daemon: automatic failover",
        );
        let (_tx, rx) = tokio::sync::watch::channel(cfg.jobs.values().cloned().collect::<Vec<_>>());
        let ctl = PveAware {
            files: tandem_ha::auto::FileControl::new(&cfg.state_dir),
            resources: cfg.pve_root.join(tandem_config::pve::RESOURCES),
        };
        tandem_ha::auto::watch(&env, &rx, cfg.ha, &ctl).await;
    }))
}

/// The daemon's main loop.
pub async fn daemon(path: &Path) -> Result<ExitCode> {
    let (cfg, store) = load(path)?;
    let mut cur = Loaded {
        nodes: Arc::new(cfg.backends()?),
        cfg,
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // After the signal handlers: a SIGTERM from here on is a clean stop,
    // never a death that leaves the watchdog armed. Nothing after this may
    // return early without stopping the keeper.
    let mut keeper = match cur.cfg.watchdog.clone() {
        Some(kc) => {
            Some(DaemonKeeper::start(kc, &cur.cfg.quorum, &cur.cfg.state_dir, &cur.cfg.path).await?)
        }
        None => {
            tracing::info!("no [watchdog] (or enabled = false): this node does not self-fence");
            None
        }
    };
    let running_watchdog = cur.cfg.watchdog.clone();
    // The loop turns at least this often: every turn is the keeper's
    // heartbeat.
    let turn = keeper
        .as_ref()
        .map(DaemonKeeper::period)
        .unwrap_or(Duration::from_secs(3600));

    let mut tt = Timetable::default();
    let jobs = schedule(&cur.cfg);
    tracing::info!(config = %path.display(), jobs = jobs.len(), node = %cur.cfg.local_node, "tandem daemon started");
    if jobs.is_empty() {
        tracing::warn!(
            "no enabled job has an end on this node ({}); nothing to do until a reload",
            cur.cfg.local_node
        );
    }
    tt.set_jobs(&jobs, Instant::now());
    // Automatic failover runs beside the cycles; a reload restarts it
    // (every step of a failover survives being stopped between any two).
    let mut auto = start_auto(&cur, &store);

    // (job, ok, jitter): one jitter draw per cycle, shared by its jobs, so
    // that jobs which ran together stay due together and keep sharing one
    // batch of listings, holds and releases; each node's daemon draws its
    // own, so nodes still do not snapshot at the same second.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(JobName, bool, f64)>();
    let mut tasks = JoinSet::new();
    // Running transfers report their progress to the log every 30 s.
    let live: Live = Arc::default();
    let reporter = tokio::spawn(report_progress(live.clone()));

    let mut fatal = None;
    loop {
        if let Some(k) = keeper.as_mut() {
            // Arming the watchdog once quorate can fail (device gone): a
            // node configured to self-fence does not run without it.
            if let Err(e) = k.turn() {
                tracing::error!("{e:#}");
                fatal = Some(e);
                break;
            }
        }
        let due = tt.take_due(Instant::now());
        if !due.is_empty() {
            let jobs: Vec<Job> = due
                .iter()
                .filter_map(|n| cur.cfg.jobs.get(n))
                .cloned()
                .collect();
            let nodes = cur.nodes.clone();
            let store = store.clone();
            let tx = done_tx.clone();
            let local = cur.cfg.local_nodes();
            let opts = CycleOptions {
                lock_wait: Duration::ZERO,
                me: me("daemon"),
                parallel: cur.cfg.parallel,
                live: Some(live.clone()),
                only_primary: Some(local.clone()),
            };
            let due_names = due.clone();
            tasks.spawn(async move {
                // The followers' jobs are their primaries' daemons' work.
                let mine = primary_here(&*nodes, &jobs, &local).await;
                let env = CycleEnv {
                    nodes: &*nodes,
                    store: &store,
                    clock: &SystemClock,
                };
                let reports = run_cycle(&env, &mine, &opts).await;
                let jitter = fastrand::f64();
                for name in due_names {
                    let r = reports.iter().find(|r| r.job == name);
                    let ok = r.is_none_or(|r| r.result.is_ok());
                    match r.map(|r| &r.result) {
                        Some(Ok(o)) if o.skipped.is_some() => tracing::debug!(job = %name, "not the primary here: {}", o.skipped.as_deref().unwrap_or_default()),
                        Some(Ok(o)) => tracing::info!(job = %name, plans = ?o.plans, bytes = o.bytes, pruned = o.pruned.len(), "cycle ok"),
                        Some(Err(e)) => tracing::error!(job = %name, "cycle failed: {e}"),
                        None => tracing::debug!(job = %name, "this node follows; the primary's daemon runs it"),
                    }
                    let _ = tx.send((name, ok, jitter));
                }
            });
        }
        let next_turn = Instant::now() + turn;
        let wake = tt.next_wakeup().map_or(next_turn, |w| w.min(next_turn));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            Some((job, ok, r)) = done_rx.recv() => tt.finished(&job, ok, Instant::now(), r),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = hup.recv() => {
                match Config::load(path).and_then(|cfg| Ok((cfg.backends()?, cfg))) {
                    Ok((nodes, cfg)) => {
                        let jobs = schedule(&cfg);
                        tracing::info!(jobs = jobs.len(), "configuration reloaded");
                        if cfg.watchdog != running_watchdog {
                            tracing::warn!(config = %path.display(),
                                "[watchdog] changed: restart the daemon to apply; \
                                 the watchdog keeper goes on with the settings it started with");
                        }
                        tt.set_jobs(&jobs, Instant::now());
                        cur = Loaded { nodes: Arc::new(nodes), cfg };
                        if let Some(a) = auto.take() {
                            a.abort();
                        }
                        auto = start_auto(&cur, &store);
                    }
                    Err(e) => tracing::error!("reload failed, keeping the running configuration: {e:#}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(running = tt.running(), "stopping: no new cycles");
    let stop = tokio::time::sleep(STOP_GRACE);
    tokio::pin!(stop);
    while !tasks.is_empty() {
        // Still alive while the running cycles finish.
        if let Some(k) = keeper.as_mut() {
            let _ = k.turn();
        }
        tokio::select! {
            _ = tokio::time::sleep(turn) => {}
            _ = tasks.join_next() => {}
            _ = &mut stop => {
                tracing::warn!("grace period over: aborting running transfers (resumable where ZFS supports it)");
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
    }
    reporter.abort();
    if let Some(a) = auto.take() {
        a.abort();
    }
    if let Some(k) = keeper {
        if let Err(e) = k.stop().await {
            tracing::error!("tandem daemon stopped, but not cleanly: {e:#}");
            return Ok(ExitCode::from(1));
        }
    }
    if let Some(e) = fatal {
        return Err(e.into());
    }
    tracing::info!("tandem daemon stopped");
    Ok(ExitCode::SUCCESS)
}
