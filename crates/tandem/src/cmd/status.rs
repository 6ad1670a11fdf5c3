//! `tandem status`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use serde::Serialize;

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
    /// `ok`, `failing`, `never-run` or `disabled`.
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
}

/// `tandem status [--json]`.
pub async fn status(path: &Path, json: bool) -> Result<ExitCode> {
    let (cfg, store) = load(path)?;
    let now = Utc::now();
    let mut rows = Vec::new();
    for j in cfg.jobs.values() {
        let st = store.load(&j.name)?;
        let spec = j.spec(&st);
        let state = if !j.enabled {
            "disabled"
        } else if st.last_attempt.is_none() {
            "never-run"
        } else if st.last_error.is_some() {
            "failing"
        } else {
            "ok"
        };
        rows.push(Row {
            job: j.name.to_string(),
            source: spec.source.to_string(),
            target: spec.target.to_string(),
            direction: format!("{:?}", st.direction).to_lowercase(),
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
            last_error: st.last_error.clone(),
            generation: st.generation,
            promoted: st.promoted.clone(),
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
        }
        // The daemon's watchdog keeper, if it left a status file (human
        // output only: `--json` stays the per-job array).
        if let Some(line) = crate::keeper::StatusFile::line(&cfg.state_dir) {
            crate::outln!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
