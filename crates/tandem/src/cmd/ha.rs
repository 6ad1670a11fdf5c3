//! `tandem ha pause|resume|status`: this node's automatic failover, as an
//! operator sees it. Pausing writes `STATE_DIR/ha/paused`, which the
//! daemon reads at every turn (no restart, no signal); the status is what
//! the running daemon last wrote to `STATE_DIR/ha/status.json`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use tandem_ha::auto::FileControl;
use tandem_repl::job::FailoverMode;

use super::load;
use crate::outln;

fn user() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "root".into())
}

/// `tandem ha pause [--reason TEXT]`.
pub fn pause(path: &Path, reason: Option<String>, json: bool) -> Result<ExitCode> {
    let (cfg, _) = load(path)?;
    let ctl = FileControl::new(&cfg.state_dir);
    let p = ctl
        .pause(&format!("{} (tandem ha pause)", user()), reason)
        .with_context(|| format!("cannot write {}", ctl.dir.display()))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        outln!(
            "automatic failover is paused on {} since {} (by {}{}); `tandem ha resume` ends it",
            cfg.local_node,
            p.at.to_rfc3339(),
            p.by,
            p.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tandem ha resume`.
pub fn resume(path: &Path, json: bool) -> Result<ExitCode> {
    let (cfg, _) = load(path)?;
    let ctl = FileControl::new(&cfg.state_dir);
    let was = ctl
        .resume()
        .with_context(|| format!("cannot remove the pause in {}", ctl.dir.display()))?;
    if json {
        outln!(
            "{}",
            serde_json::json!({ "resumed": was.is_some(), "pause": was })
        );
    } else if was.is_some() {
        outln!(
            "automatic failover resumed on {}: delays count from now",
            cfg.local_node
        );
    } else {
        outln!("automatic failover was not paused on {}", cfg.local_node);
    }
    Ok(ExitCode::SUCCESS)
}

/// `tandem ha status [--json]`: exit 0, or 1 when no daemon has written a
/// status (not running, or no job of this node fails over by itself).
pub fn status(path: &Path, json: bool) -> Result<ExitCode> {
    let (cfg, _) = load(path)?;
    let ctl = FileControl::new(&cfg.state_dir);
    let st = ctl
        .read_status()
        .with_context(|| format!("cannot read {}", ctl.status_path().display()))?;
    let auto: Vec<_> = cfg
        .jobs
        .values()
        .filter(|j| j.failover == FailoverMode::Auto)
        .filter(|j| j.endpoint_on(&cfg.local_node).is_some())
        .map(|j| j.name.to_string())
        .collect();
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "node": cfg.local_node,
                "paused": tandem_ha::auto::Control::paused(&ctl),
                "auto_jobs": auto,
                "daemon": st,
            }))?
        );
        return Ok(if st.is_some() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if let Some(p) = tandem_ha::auto::Control::paused(&ctl) {
        outln!(
            "PAUSED since {} by {}{}",
            p.at.to_rfc3339(),
            p.by,
            p.reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
    }
    let Some(st) = st else {
        outln!(
            "no status from a daemon on {} ({} does not exist): is `tandem daemon` running? \
             jobs here with failover = \"auto\": {}",
            cfg.local_node,
            ctl.status_path().display(),
            if auto.is_empty() {
                "none".into()
            } else {
                auto.join(", ")
            }
        );
        return Ok(ExitCode::from(1));
    };
    let s = |k: &str| st.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
    outln!(
        "node {} — quorum: {} (as of {})",
        s("node"),
        s("quorum"),
        s("updated")
    );
    if let Some(jobs) = st.get("jobs").and_then(|j| j.as_object()) {
        for (job, v) in jobs {
            outln!("  {job:<20} {}", describe(v));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One job's HA state from the daemon's status file, as a line:
/// `primary_lost primary=n1 since=... fence_at=...`.
pub fn describe(v: &serde_json::Value) -> String {
    let state = v.get("state").and_then(|x| x.as_str()).unwrap_or("?");
    let detail: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "state")
        .map(|(k, x)| format!("{k}={}", x.as_str().map_or(x.to_string(), str::to_owned)))
        .collect();
    format!("{state:<13} {}", detail.join(" "))
        .trim_end()
        .to_owned()
}
