//! `tandem run` and `tandem plan`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use serde_json::json;
use std::sync::Arc;

use tandem_repl::cycle::{run_cycle, CycleOptions, JobReport, Live};
use tandem_repl::exec::{Executor, JobSpec};
use tandem_repl::pipe::Meter;
use tandem_repl::pipe::Progress;
use tandem_repl::plan::Plan;
use tandem_zfs::Zfs;

use super::{load, me};
use crate::output::{age, bytes};

/// How long `run` waits for a job that another process is running.
const RUN_LOCK_WAIT: Duration = Duration::from_secs(600);

/// One JSON object per job report.
pub fn report_json(r: &JobReport) -> serde_json::Value {
    match &r.result {
        Ok(o) => json!({
            "job": r.job.as_str(), "ok": true, "plans": o.plans, "sent": o.sent,
            "bytes": o.bytes, "duration_ms": r.duration.as_millis() as u64,
            "common": o.common, "pruned": o.pruned, "warnings": o.warnings,
        }),
        Err(e) => json!({
            "job": r.job.as_str(), "ok": false, "duration_ms": r.duration.as_millis() as u64,
            "error": e.to_string(),
        }),
    }
}

/// One line per job report.
pub fn report_line(r: &JobReport, spec: Option<&JobSpec>) -> String {
    let secs = r.duration.as_secs_f64();
    match &r.result {
        Ok(o) => {
            let what = o.plans.join("+");
            let mut s = match (&o.sent, spec) {
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
    let jobs = cfg.select(names)?;
    let specs: Vec<JobSpec> = jobs
        .iter()
        .map(|j| store.load(&j.name).map(|st| j.spec(&st)))
        .collect::<Result<_, _>>()?;
    let nodes = cfg.backends()?;
    let opts = CycleOptions {
        lock_wait: if no_wait {
            Duration::ZERO
        } else {
            RUN_LOCK_WAIT
        },
        me: me("run"),
        parallel: cfg.parallel,
        live: None,
    };
    // On a terminal, a progress line per running transfer.
    use std::io::IsTerminal;
    let show = !json && std::io::stderr().is_terminal();
    let live: Live = Arc::default();
    let opts = CycleOptions {
        live: show.then(|| live.clone()),
        ..opts
    };
    let bar = show.then(|| tokio::spawn(progress_lines(live.clone())));
    let reports = run_cycle(&nodes, &specs, &store, &opts).await;
    crate::heartbeat::record(&cfg.state_dir, &specs, &reports);
    if let Some(b) = bar {
        b.abort();
        eprint!("\r\x1b[K");
    }
    let failed = reports.iter().filter(|r| r.result.is_err()).count();
    if json {
        let v: Vec<_> = reports.iter().map(report_json).collect();
        crate::outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for r in &reports {
            crate::outln!("{}", report_line(r, specs.iter().find(|s| s.name == r.job)));
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

/// `tandem plan [JOB...]`: plans and size estimates, changing nothing.
pub async fn plan(path: &Path, names: &[String], json: bool) -> Result<ExitCode> {
    let (cfg, store) = load(path)?;
    let jobs = cfg.select(names)?;
    let nodes = cfg.backends()?;
    let mut rows = Vec::new();
    let mut bad = 0;
    for j in jobs {
        let spec = j.spec(&store.load(&j.name)?);
        let (Some(src), Some(tgt)) = (nodes.get(&spec.source.node), nodes.get(&spec.target.node))
        else {
            continue;
        };
        let ex = Executor {
            job: &spec,
            src,
            tgt,
            progress: std::sync::Arc::new(Progress::default()),
            previous_common: None,
        };
        if let Err(e) = src.sync(std::slice::from_ref(&spec.source.dataset)).await {
            tracing::warn!("zpool sync on {}: {e}", spec.source.node);
        }
        let lists = tokio::join!(
            src.list(std::slice::from_ref(&spec.source.dataset)),
            tgt.list(std::slice::from_ref(&spec.target.dataset))
        );
        let row = match lists {
            (Ok(sl), Ok(tl)) => match ex.plan(&sl, &tl, Utc::now()) {
                Ok(p) => {
                    let estimate = estimate(&ex, src, &p, &sl).await;
                    if matches!(p, Plan::Conflict(_)) {
                        bad += 1;
                    }
                    json!({"job": j.name.as_str(), "source": spec.source.to_string(), "target": spec.target.to_string(), "plan": p, "estimated_bytes": estimate, "compress": j.compress, "rate_limit": j.rate_limit,
                           "summary": summary(&p)})
                }
                Err(e) => {
                    bad += 1;
                    json!({"job": j.name.as_str(), "error": e.to_string()})
                }
            },
            (Err(e), _) | (_, Err(e)) => {
                bad += 1;
                json!({"job": j.name.as_str(), "error": e.to_string()})
            }
        };
        rows.push(row);
    }
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            let job = r["job"].as_str().unwrap_or("?");
            if let Some(e) = r["error"].as_str() {
                crate::outln!("{job:<16} ERROR  {e}");
                continue;
            }
            let est = match r["estimated_bytes"].as_u64() {
                Some(n) => bytes(n),
                None => "size unknown".into(),
            };
            crate::outln!("{job:<16} {}  [{est}]", r["summary"].as_str().unwrap_or(""));
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

async fn estimate<S: Zfs, T: Zfs>(
    ex: &Executor<'_, S, T>,
    src: &S,
    p: &Plan,
    sl: &tandem_zfs::Listing,
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
