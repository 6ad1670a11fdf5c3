//! `tandem status`: per job, what the state directory remembers and what
//! the local datasets' generation marks say of the direction (the marks
//! win: a switchover or failover made on another node shows here without
//! a cycle having run). Only local datasets are listed: `status` never
//! waits for a remote node.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tandem_fence::watchdog::daemon::StatusFile;
use tandem_repl::job::{Endpoint, Job};
use tandem_repl::roles::known_primary;
use tandem_repl::state::JobState;
use tandem_zfs::{Dataset, Listing, Zfs};

use super::load;
use crate::output::{age, bytes};

/// One row of `status --json` (the documented schema).
#[derive(Debug, Serialize)]
pub struct Row {
    /// Job name.
    pub job: String,
    /// `node:dataset` data comes from now.
    pub source: String,
    /// `node:dataset` data goes to now.
    pub target: String,
    /// `forward` or `reverse`.
    pub direction: String,
    /// This node's part: `primary`, `follower`, or `none` (no end here).
    pub role: String,
    /// `ok`, `failing`, `never-run`, `disabled`, or `corrupt-state`.
    pub state: String,
    /// RFC 3339.
    pub last_success: Option<String>,
    /// RFC 3339.
    pub last_attempt: Option<String>,
    /// Seconds since the newest replicated snapshot was taken: the RPO now.
    pub lag_seconds: Option<i64>,
    /// Newest common snapshot (source side).
    pub common_snapshot: Option<String>,
    /// Its GUID.
    pub common_guid: Option<u64>,
    /// `full`, `incremental`, `resume`, `up-to-date`.
    pub last_plan: Option<String>,
    /// Bytes of the last transfer.
    pub last_bytes: u64,
    /// Duration of the last cycle.
    pub last_duration_ms: u64,
    /// Stream bytes per second of the last transfer's cycle.
    pub last_rate_bytes_per_s: Option<u64>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// The last error, if the last cycle failed.
    pub last_error: Option<String>,
    /// Bumped at every change of primary (failover, switchover).
    pub generation: u64,
    /// The last promotion by `tandem failover`, if any.
    pub promoted: Option<tandem_repl::state::Promotion>,
    /// The job's automatic failover state as this node's daemon last
    /// published it (`tandem ha status`): `{"state": "watching",
    /// "primary": "n1"}`, `primary_lost`, `fencing`, `promoted`,
    /// `hook_failed`, `paused`, `not_quorate`, ...; absent when no daemon
    /// here watches the job.
    pub ha: Option<serde_json::Value>,
}

/// `tandem status [--json]`.
pub async fn status(path: &Path, json: bool) -> Result<ExitCode> {
    let (cfg, store) = load(path)?;
    let now = Utc::now();
    let nodes = cfg.backends()?;
    // One listing per local node.
    let mut local: BTreeMap<String, Listing> = BTreeMap::new();
    for n in cfg.local_nodes() {
        let roots: Vec<_> = cfg
            .jobs
            .values()
            .flat_map(Job::legs)
            .flat_map(|j| j.anchor_on(&n))
            .map(|ep| ep.dataset)
            .collect();
        if let Some(z) = nodes.get(&n).filter(|_| !roots.is_empty()) {
            match z.list(&roots).await {
                Ok(l) => {
                    local.insert(n, l);
                }
                Err(e) => tracing::warn!(node = %n, "cannot list the local datasets: {e}"),
            }
        }
    }
    // What this node's daemon says of its automatic failover, if it runs.
    let ha = tandem_ha::auto::FileControl::new(&cfg.state_dir)
        .read_status()
        .ok()
        .flatten();
    let mut rows = Vec::new();
    // A fan-out job has a row per target.
    let legs: Vec<Job> = cfg.jobs.values().flat_map(Job::legs).collect();
    for j in &legs {
        let (st, corrupt) = match store.load(&j.state_key()) {
            Ok(st) => (st, None),
            Err(e) => (JobState::default(), Some(e.to_string())),
        };
        // A guest job by its first dataset on each node.
        let mine: Vec<&Dataset> = [&j.source.node, &j.target.node]
            .into_iter()
            .filter_map(|n| j.anchor_on(n))
            .filter_map(|ep| local.get(&ep.node).and_then(|l| l.get(&ep.dataset)))
            .collect();
        let g = known_primary(j, &mine, corrupt.is_none().then_some(&st));
        let (source, target): (&Endpoint, &Endpoint) = if g.primary == j.target.node {
            (&j.target, &j.source)
        } else {
            (&j.source, &j.target)
        };
        let role = if cfg.is_local(&source.node) {
            "primary"
        } else if cfg.is_local(&target.node) {
            "follower"
        } else {
            "none"
        };
        let state = if corrupt.is_some() {
            "corrupt-state"
        } else if !j.enabled {
            "disabled"
        } else if st.last_attempt.is_none() {
            "never-run"
        } else if st.last_error.is_some() {
            "failing"
        } else {
            "ok"
        };
        rows.push(Row {
            job: j.state_key().to_string(),
            source: source.to_string(),
            target: target.to_string(),
            direction: if *source == j.source {
                "forward"
            } else {
                "reverse"
            }
            .into(),
            role: role.into(),
            state: state.into(),
            last_success: st.last_success.map(|t| t.to_rfc3339()),
            last_attempt: st.last_attempt.map(|t| t.to_rfc3339()),
            lag_seconds: st
                .common
                .as_ref()
                .map(|c| (now - c.created).num_seconds().max(0)),
            common_snapshot: st.common.as_ref().map(|c| c.source.to_string()),
            common_guid: st.common.as_ref().map(|c| c.guid.0),
            last_plan: st.last_plan.clone(),
            last_bytes: st.last_bytes,
            last_duration_ms: st.last_duration_ms,
            last_rate_bytes_per_s: (st.last_duration_ms > 0 && st.last_bytes > 0)
                .then(|| st.last_bytes * 1000 / st.last_duration_ms),
            consecutive_failures: st.consecutive_failures,
            last_error: corrupt.or_else(|| st.last_error.clone()),
            generation: g.number,
            promoted: st.promoted.clone(),
            ha: ha
                .as_ref()
                .and_then(|h| h.get("jobs"))
                .and_then(|js| js.get(j.name.as_str()))
                .cloned(),
        });
    }
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        crate::outln!(
            "{:<16} {:<9} {:<8} {:<10} {:<10} SOURCE -> TARGET",
            "JOB",
            "STATE",
            "LAG",
            "LAST-OK",
            "LAST-SENT"
        );
        for r in &rows {
            let last_ok = r
                .last_success
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| format!("{} ago", age((now - t.with_timezone(&Utc)).num_seconds())))
                .unwrap_or_else(|| "-".into());
            crate::outln!(
                "{:<16} {:<9} {:<8} {:<10} {:<10} {} -> {}",
                r.job,
                r.state,
                r.lag_seconds.map(age).unwrap_or_else(|| "-".into()),
                last_ok,
                bytes(r.last_bytes),
                r.source,
                r.target
            );
            if let Some(e) = &r.last_error {
                crate::outln!("    error: {e}");
            }
            if let Some(h) = &r.ha {
                crate::outln!("    automatic failover: {}", super::ha::describe(h));
            }
        }
        // The daemon's watchdog keeper, if it left a status file (human
        // output only: `--json` stays the per-job array).
        if let Some(line) = watchdog_line(&cfg.state_dir) {
            crate::outln!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The one line `tandem status` prints about the daemon's watchdog keeper,
/// if the daemon left a status file in `state_dir`.
pub fn watchdog_line(state_dir: &Path) -> Option<String> {
    let f = match StatusFile::read(state_dir)? {
        Ok(f) => f,
        Err(e) => return Some(format!("watchdog: {e}")),
    };
    let now = Utc::now();
    let ago = |t: &str| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| age((now - t.with_timezone(&Utc)).num_seconds().max(0)))
            .unwrap_or_else(|_| "?".into())
    };
    let state = if f.fit {
        "fit, petting".to_owned()
    } else {
        format!(
            "UNFIT ({}), NOT petting: the node resets unless it recovers",
            f.unfit_reason.as_deref().unwrap_or("?")
        )
    };
    let last = f
        .last_keepalive
        .as_deref()
        .map(|t| format!("last keep-alive {} ago", ago(t)))
        .unwrap_or_else(|| "no keep-alive yet".into());
    Some(format!(
        "watchdog: {state} {} (timeout {}s), {last} [daemon pid {}, as of {} ago]",
        f.backend,
        f.timeout_s,
        f.pid,
        ago(&f.updated)
    ))
}
