//! `tandem run` and `tandem plan`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use serde::Serialize;
use std::sync::Arc;

use tandem_repl::clock::SystemClock;
use tandem_repl::cycle::{dry_run, run_cycle, CycleEnv, CycleOptions, JobReport, Live};
use tandem_repl::job::Job;
use tandem_repl::pipe::Meter;
use tandem_repl::pipe::Progress;
use tandem_repl::plan::Plan;
use tandem_zfs::{WireCompress, Zfs};

use super::{load, me};
use crate::output::{age, bytes};

/// How long `run` waits for a job that another process is running.
const RUN_LOCK_WAIT: Duration = Duration::from_secs(600);

/// One line per job report.
pub fn report_line(r: &JobReport) -> String {
    let secs = r.duration.as_secs_f64();
    match &r.result {
        Ok(o) if o.skipped.is_some() => format!(
            "{:<16} {:<12} {}",
            r.job.as_str(),
            "skipped",
            o.skipped.as_deref().unwrap_or_default()
        ),
        Ok(o) => {
            let what = o.plans.join("+");
            let mut s = match (&o.sent, &r.spec) {
                (Some(sent), Some(spec)) => format!(
                    "{:<12} {}:{} -> {}:{}  {} in {secs:.2}s",
                    what,
                    spec.source.node,
                    sent,
                    spec.target.node,
                    spec.target.dataset,
                    bytes(o.bytes)
                ),
                _ => {
                    let c = o
                        .common
                        .as_ref()
                        .map(|c| {
                            format!(
                                "common {} (lag {})",
                                c.source,
                                age((Utc::now() - c.created).num_seconds())
                            )
                        })
                        .unwrap_or_default();
                    format!("{what:<12} {c}")
                }
            };
            if !o.pruned.is_empty() {
                s.push_str(&format!(", pruned {}", o.pruned.len()));
            }
            for w in &o.warnings {
                s.push_str(&format!("\n    warning: {w}"));
            }
            format!("{:<16} {s}", r.job.as_str())
        }
        Err(e) => format!("{:<16} FAILED       {e}", r.job.as_str()),
    }
}

/// `tandem run [JOB...]`.
pub async fn run(path: &Path, names: &[String], no_wait: bool, json: bool) -> Result<ExitCode> {
    let (cfg, store) = load(path)?;
    let jobs: Vec<Job> = cfg.select(names)?.into_iter().cloned().collect();
    let nodes = cfg.backends()?;
    // On a terminal, a progress line per running transfer.
    use std::io::IsTerminal;
    let show = !json && std::io::stderr().is_terminal();
    let live: Live = Arc::default();
    let opts = CycleOptions {
        lock_wait: if no_wait {
            Duration::ZERO
        } else {
            RUN_LOCK_WAIT
        },
        me: me("run"),
        parallel: cfg.parallel,
        live: show.then(|| live.clone()),
        only_primary: None,
    };
    let bar = show.then(|| tokio::spawn(progress_lines(live.clone())));
    let env = CycleEnv {
        nodes: &nodes,
        store: &store,
        clock: &SystemClock,
    };
    let reports = run_cycle(&env, &jobs, &opts).await;
    if let Some(b) = bar {
        b.abort();
        eprint!("\r\x1b[K");
    }
    let failed = reports.iter().filter(|r| r.result.is_err()).count();
    if json {
        let v: Vec<_> = reports.iter().map(JobReport::summary).collect();
        crate::outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for r in &reports {
            crate::outln!("{}", report_line(r));
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn progress_lines(live: Live) {
    use std::io::Write;
    let mut meters: std::collections::BTreeMap<String, Meter> = Default::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let running: Vec<(String, Arc<Progress>)> = match live.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            Err(_) => continue,
        };
        let mut line = String::new();
        for (job, p) in running.iter().filter(|(_, p)| p.bytes() > 0) {
            let (rate, eta) = meters.entry(job.clone()).or_default().sample(p);
            let of = p
                .estimate()
                .map(|e| format!(" of ~{}", bytes(e)))
                .unwrap_or_default();
            let eta = eta
                .map(|s| format!(", ETA {}", age(s as i64)))
                .unwrap_or_default();
            line.push_str(&format!(
                "{job}: {}{of} at {}/s{eta}  ",
                bytes(p.bytes()),
                bytes(rate as u64)
            ));
        }
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[K{}", line.trim_end());
        let _ = err.flush();
    }
}

/// One row of `tandem plan --json`.
#[derive(Debug, Serialize)]
struct PlanRow {
    job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<Plan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimated_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compress: Option<WireCompress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl PlanRow {
    fn error(job: &Job, e: impl std::fmt::Display) -> Self {
        PlanRow {
            job: job.state_key().to_string(),
            source: None,
            target: None,
            plan: None,
            estimated_bytes: None,
            compress: None,
            rate_limit: None,
            summary: None,
            error: Some(e.to_string()),
        }
    }
}

/// Plans one job from its primary, changing nothing.
async fn plan_job<Z: Zfs>(
    nodes: &std::collections::BTreeMap<String, Z>,
    store: &dyn tandem_repl::state::Store,
    j: &Job,
) -> PlanRow {
    match dry_run(nodes, store, &SystemClock, j).await {
        Ok(d) => PlanRow {
            job: j.state_key().to_string(),
            source: Some(d.spec.source.to_string()),
            target: Some(d.spec.target.to_string()),
            estimated_bytes: d.estimated_bytes,
            compress: Some(j.wire),
            rate_limit: Some(j.rate_limit),
            summary: Some(summary(&d.plan)),
            plan: Some(d.plan),
            error: None,
        },
        Err(e) => PlanRow::error(j, e),
    }
}

/// `tandem plan [JOB...]`: plans and size estimates, changing nothing.
pub async fn plan(path: &Path, names: &[String], json: bool) -> Result<ExitCode> {
    let (cfg, store) = load(path)?;
    let jobs = cfg.select(names)?;
    let nodes = cfg.backends()?;
    let mut rows = Vec::new();
    for j in jobs {
        for leg in j.legs() {
            rows.push(plan_job(&nodes, &store, &leg).await);
        }
    }
    let bad = rows
        .iter()
        .filter(|r| r.error.is_some() || matches!(r.plan, Some(Plan::Conflict(_))))
        .count();
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            if let Some(e) = &r.error {
                crate::outln!("{:<16} ERROR  {e}", r.job);
                continue;
            }
            let est = match r.estimated_bytes {
                Some(n) => bytes(n),
                None => "size unknown".into(),
            };
            crate::outln!(
                "{:<16} {}  [{est}]",
                r.job,
                r.summary.as_deref().unwrap_or("")
            );
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn summary(p: &Plan) -> String {
    match p {
        Plan::Full { to } => format!("full send of {} (new target)", to.snapshot()),
        Plan::Incremental {
            base,
            target_base,
            to,
        } => {
            if base.name.short() == target_base.name.short() {
                format!(
                    "incremental {} -> {}",
                    base.name.short(),
                    to.snapshot().short()
                )
            } else {
                format!(
                    "incremental {} (on target: {}) -> {}",
                    base.name.short(),
                    target_base.name.short(),
                    to.snapshot().short()
                )
            }
        }
        Plan::IncrementalFromBookmark { bookmark, to, .. } => {
            format!(
                "incremental from bookmark {} (its snapshot was destroyed) -> {}",
                bookmark.name,
                to.snapshot().short()
            )
        }
        Plan::Resume { .. } => "resume the interrupted receive from its token".into(),
        Plan::UpToDate { common } => format!("up to date at {}", common.name.short()),
        Plan::Conflict(c) => format!("CONFLICT: {c}. What to do: {}", c.advice()),
    }
}
