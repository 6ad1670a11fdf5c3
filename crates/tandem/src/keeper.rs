//! The daemon's side of self-fencing: starts the watchdog keeper of
//! `tandem-fence` from the `[watchdog]` table, feeds it the daemon's
//! heartbeat, stops it cleanly, and leaves a small status file
//! (`STATE_DIR/watchdog.json`) for `tandem status`.
//!
//! The heartbeat ([`Liveness`]) is touched on every turn of the daemon's
//! main loop, and the loop turns at least every [`DaemonKeeper::period`]
//! (at most 1 s, at most a quarter of `wedge_after`), so a daemon whose
//! main loop stops turning for `wedge_after` counts as wedged and the
//! keeper stops petting the watchdog: the node resets.
//!
//! The keeper's gate is quorum ([`QuorumWatch`]): a node that is not in the
//! quorate partition of its corosync cluster, or cannot prove it is, stops
//! petting too, so the node that was cut off resets.
//!
//! Like Proxmox's LRM, the watchdog is armed only once the node is quorate:
//! a node that starts without quorum (a cluster cold start, nodes booting
//! one by one) waits, unarmed, instead of resetting every timeout and never
//! letting the cluster form.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tandem_fence::watchdog::{Keeper, KeeperConfig, KeeperHandle, KeeperStatus, Liveness};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::quorum::QuorumWatch;

/// How often the status file is rewritten (also whenever fitness changes).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The status file under `state_dir`.
pub const STATUS_FILE: &str = "watchdog.json";

/// The running keeper, as the daemon holds it.
pub struct DaemonKeeper {
    /// The running keeper; `None` while waiting for quorum to arm it.
    handle: Option<KeeperHandle>,
    /// What to start once quorate.
    pending: Option<(KeeperConfig, PathBuf)>,
    quorum: QuorumWatch,
    liveness: Liveness,
    period: Duration,
    status_path: PathBuf,
    last_write: Option<(Instant, bool)>,
    writing: Option<JoinHandle<()>>,
}

fn fmt_d(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

impl DaemonKeeper {
    /// Starts the keeper when `[watchdog]` is enabled. A keeper that cannot
    /// start is an error: a node configured to self-fence must not run
    /// without its watchdog.
    pub async fn start(cfg: &Config) -> Result<Option<DaemonKeeper>> {
        let Some(kc) = cfg.watchdog.clone() else {
            tracing::info!("no [watchdog] (or enabled = false): this node does not self-fence");
            return Ok(None);
        };
        let period = Self::period_for(&kc);
        let liveness = Liveness::new();
        let qc = cfg.quorum.clone();
        // The gate: this node pets only while it is in the quorate partition
        // (or in no cluster); see `crate::quorum`. The watch answers once
        // before `start` returns.
        let quorum = tokio::task::spawn_blocking(move || QuorumWatch::start(&qc))
            .await
            .map_err(|e| anyhow!("the quorum watch's start panicked: {e}"))?;
        let mut k = DaemonKeeper {
            handle: None,
            pending: Some((kc, cfg.path.clone())),
            quorum,
            liveness,
            period,
            status_path: cfg.state_dir.join(STATUS_FILE),
            last_write: None,
            writing: None,
        };
        if (k.quorum.gate())() {
            if let Err(e) = k.arm() {
                let quorum = k.quorum;
                tokio::task::spawn_blocking(move || quorum.stop())
                    .await
                    .ok();
                return Err(e);
            }
        } else {
            tracing::warn!(
                "no quorum yet: the watchdog is armed once this node is quorate \
                 (a node that starts without quorum waits instead of resetting)"
            );
        }
        k.turn()?;
        Ok(Some(k))
    }

    /// Starts the keeper now (quorum is there). Blocking but quick: opens
    /// the device or connects to watchdog-mux.
    fn arm(&mut self) -> Result<()> {
        let Some((kc, path)) = self.pending.take() else {
            return Ok(());
        };
        let wedge_after = kc.wedge_after.0;
        self.liveness.touch();
        let handle = Keeper::new(kc, self.liveness.clone())
            .with_gate("quorum", self.quorum.gate())
            .start()
            .map_err(|e| {
                // Every KeeperError that concerns a path names it.
                anyhow!(
                    "{}: [watchdog]: cannot start the watchdog keeper: {e}; a node configured to \
                     self-fence does not run without its watchdog (enabled = false in [watchdog] \
                     runs the daemon without self-fencing)",
                    path.display(),
                )
            })?;
        let st = handle.status();
        tracing::info!(
            backend = %st.backend,
            timeout = %fmt_d(st.timeout),
            interval = %fmt_d(st.interval),
            wedge_after = %fmt_d(wedge_after),
            "watchdog keeper started: the node resets if this daemon stops turning for \
             wedge_after plus the watchdog timeout"
        );
        self.handle = Some(handle);
        Ok(())
    }

    /// How often the main loop must turn at least: 1 s, or a quarter of
    /// `wedge_after` if that is shorter.
    fn period_for(kc: &KeeperConfig) -> Duration {
        (kc.wedge_after.0 / 4)
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(10))
    }

    /// The longest the main loop may sleep between turns.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// One turn of the daemon's main loop: the daemon is alive. Also
    /// rewrites the status file now and then (off the async threads, one
    /// write at a time, so a slow disk cannot wedge the loop).
    ///
    /// While the watchdog waits for quorum, a turn that finds the node
    /// quorate arms it; failing to arm then is an error for the daemon.
    pub fn turn(&mut self) -> Result<()> {
        self.liveness.touch();
        if self.handle.is_none() && (self.quorum.gate())() {
            tracing::info!("quorate: arming the watchdog");
            self.arm()?;
        }
        if self.writing.as_ref().is_some_and(|w| !w.is_finished()) {
            return Ok(());
        }
        let Some(handle) = self.handle.as_ref() else {
            return Ok(());
        };
        let st = handle.status();
        let due = match self.last_write {
            None => true,
            Some((at, fit)) => at.elapsed() >= STATUS_EVERY || fit != st.fit,
        };
        if !due {
            return Ok(());
        }
        self.last_write = Some((Instant::now(), st.fit));
        let path = self.status_path.clone();
        let file = StatusFile::from(&st);
        self.writing = Some(tokio::task::spawn_blocking(move || file.write(&path)));
        Ok(())
    }

    /// Stops the keeper: disarms the watchdog (magic close) unless the gate
    /// is closed, and removes the status file.
    pub async fn stop(self) -> Result<()> {
        if let Some(w) = self.writing {
            let _ = w.await;
        }
        let handle = self.handle;
        let quorum = self.quorum;
        // The keeper first: it reads the gate to decide whether to disarm.
        let r = tokio::task::spawn_blocking(move || {
            let r = handle.map(|h| h.stop()).unwrap_or(Ok(()));
            quorum.stop();
            r
        })
        .await
        .map_err(|e| anyhow!("stopping the watchdog keeper panicked: {e}"))?;
        match r {
            Ok(()) => {
                if let Err(e) = std::fs::remove_file(&self.status_path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(path = %self.status_path.display(), error = %e,
                            "cannot remove the watchdog status file");
                    }
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `STATE_DIR/watchdog.json`: what the daemon's keeper was doing when it
/// last wrote it.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusFile {
    /// The daemon's pid.
    pub pid: u32,
    /// When this was written (RFC 3339).
    pub updated: String,
    /// The watchdog backend.
    pub backend: String,
    /// The effective watchdog timeout, in seconds.
    pub timeout_s: u64,
    /// The petting interval, in milliseconds.
    pub interval_ms: u64,
    /// Whether the keeper is petting.
    pub fit: bool,
    /// Why not, when it is not.
    pub unfit_reason: Option<String>,
    /// Keep-alives sent.
    pub keepalives: u64,
    /// Keep-alives that failed.
    pub failed_keepalives: u64,
    /// The last successful keep-alive (RFC 3339).
    pub last_keepalive: Option<String>,
}

impl From<&KeeperStatus> for StatusFile {
    fn from(st: &KeeperStatus) -> Self {
        let now = SystemTime::now();
        StatusFile {
            pid: std::process::id(),
            updated: DateTime::<Utc>::from(now).to_rfc3339(),
            backend: st.backend.clone(),
            timeout_s: st.timeout.as_secs(),
            interval_ms: u64::try_from(st.interval.as_millis()).unwrap_or(u64::MAX),
            fit: st.fit,
            unfit_reason: st.unfit_reason.clone(),
            keepalives: st.keepalives,
            failed_keepalives: st.failed_keepalives,
            last_keepalive: st
                .last_keepalive
                .map(|t| DateTime::<Utc>::from(now - t.elapsed()).to_rfc3339()),
        }
    }
}

impl StatusFile {
    /// Writes it atomically; failures are logged only.
    fn write(&self, path: &Path) {
        let tmp = path.with_extension("json.tmp");
        let r = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the watchdog status file");
        }
    }

    /// The one line `tandem status` prints, if the daemon left a status
    /// file in `state_dir`.
    pub fn line(state_dir: &Path) -> Option<String> {
        let path = state_dir.join(STATUS_FILE);
        let text = std::fs::read(&path).ok()?;
        let f: StatusFile = match serde_json::from_slice(&text) {
            Ok(f) => f,
            Err(e) => return Some(format!("watchdog: unreadable {}: {e}", path.display())),
        };
        let now = Utc::now();
        let ago = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| crate::output::age((now - t.with_timezone(&Utc)).num_seconds().max(0)))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_fence::config::HumanDuration;

    #[test]
    fn the_loop_turns_well_within_wedge_after() {
        let mut kc = KeeperConfig::default();
        assert_eq!(DaemonKeeper::period_for(&kc), Duration::from_secs(1));
        kc.wedge_after = HumanDuration(Duration::from_millis(800));
        assert_eq!(DaemonKeeper::period_for(&kc), Duration::from_millis(200));
        kc.wedge_after = HumanDuration(Duration::from_millis(1));
        assert_eq!(DaemonKeeper::period_for(&kc), Duration::from_millis(10));
    }

    #[test]
    fn status_line_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(StatusFile::line(dir.path()), None);
        let st = KeeperStatus {
            backend: "watchdog-mux /run/watchdog-mux.sock".into(),
            timeout: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            fit: false,
            unfit_reason: Some("daemon wedged".into()),
            keepalives: 3,
            failed_keepalives: 0,
            last_keepalive: Some(std::time::Instant::now()),
        };
        StatusFile::from(&st).write(&dir.path().join(STATUS_FILE));
        let line = StatusFile::line(dir.path()).expect("line");
        assert!(
            line.starts_with("watchdog: UNFIT (daemon wedged)"),
            "{line}"
        );
        assert!(
            line.contains("watchdog-mux /run/watchdog-mux.sock"),
            "{line}"
        );
        assert!(line.contains("last keep-alive 0s ago"), "{line}");
    }
}
