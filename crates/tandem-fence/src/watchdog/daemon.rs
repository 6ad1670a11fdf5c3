//! The keeper as the daemon runs it: gated by quorum, armed only once
//! quorate, and reporting what it does in a status file.
//!
//! - [`QuorumWatch`] asks the quorum source ([`QuorumConfig::source`]) on
//!   a thread of its own at every change it reports (the native backend's
//!   notifications) and at least every `refresh`, and publishes "open
//!   until" as an atomic deadline, because the
//!   keeper's gate must answer at once: an answer that allows (quorate, or
//!   no cluster) opens the gate for `refresh + timeout + 1 s`; an answer
//!   that does not closes it at once. A watch thread that stops answering
//!   therefore closes the gate by itself: the node cannot keep petting on
//!   a stale "yes".
//! - [`DaemonKeeper`] starts the [`Keeper`] with that gate, feeds it the
//!   daemon's heartbeat, stops it cleanly, and leaves a small status file
//!   (`STATE_DIR/watchdog.json`) for `tandem status`. Like Proxmox's LRM,
//!   it arms the watchdog only once the node is quorate: a node that starts
//!   without quorum (a cluster cold start, nodes booting one by one) waits,
//!   unarmed, instead of resetting every timeout and never letting the
//!   cluster form.
//!
//! The heartbeat ([`Liveness`]) is touched on every [`DaemonKeeper::turn`]
//! of the daemon's main loop, which turns at least every
//! [`DaemonKeeper::period`] (at most 1 s, at most a quarter of
//! `wedge_after`): a main loop that stops turning for `wedge_after` counts
//! as wedged, the keeper stops petting, and the node resets.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Keeper, KeeperConfig, KeeperError, KeeperHandle, KeeperStatus, Liveness};
use crate::quorum::{Quorum, QuorumConfig, QuorumError, QuorumMode, QuorumSource};

/// How often the status file is rewritten (also whenever fitness changes).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The status file's name under `state_dir`.
pub const STATUS_FILE: &str = "watchdog.json";

struct Shared {
    base: Instant,
    /// Milliseconds since `base` (plus one) until which the gate is open;
    /// 0 = closed.
    open_until: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    fn open(&self) -> bool {
        self.now_ms() < self.open_until.load(Ordering::Acquire)
    }
}

/// The daemon's view of quorum, kept current by a thread of its own.
pub struct QuorumWatch {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl QuorumWatch {
    /// Asks once (so the gate is right from the start), then keeps asking
    /// at every change the source reports and at least every `refresh`, on
    /// a thread. With `mode = "off"` there is no thread and the gate is
    /// always open. Blocks for the first answer.
    pub fn start(qc: &QuorumConfig) -> QuorumWatch {
        let shared = Arc::new(Shared {
            base: Instant::now(),
            open_until: AtomicU64::new(0),
        });
        if qc.mode == QuorumMode::Off {
            tracing::info!("[quorum] mode = \"off\": the watchdog keeper does not ask for quorum");
            shared.open_until.store(u64::MAX, Ordering::Release);
            return QuorumWatch {
                shared,
                stop: None,
                thread: None,
            };
        }
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (first_tx, first_rx) = mpsc::channel::<()>();
        let qc = qc.clone();
        let sh = shared.clone();
        // The thread has a runtime of its own: the source's futures (its
        // timers, its channel) run there, whatever the caller runs on.
        let thread = std::thread::Builder::new()
            .name("tandem-quorum".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the quorum watch's runtime: \
                            the quorum gate stays closed");
                        return;
                    }
                };
                rt.block_on(async move {
                    let source = qc.source();
                    let mut last = None;
                    ask(ask_once(&*source, &qc).await, &qc, &sh, &mut last);
                    drop(first_tx);
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => return,
                            _ = source.changed() => {}
                            _ = tokio::time::sleep(qc.refresh.0) => {}
                        }
                        ask(ask_once(&*source, &qc).await, &qc, &sh, &mut last);
                    }
                });
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the quorum watch thread: the quorum gate stays closed"))
            .ok();
        // The first answer (or the thread's end).
        let _ = first_rx.recv();
        QuorumWatch {
            shared,
            stop: Some(stop_tx),
            thread,
        }
    }

    /// The keeper's gate: quick, lock-free.
    pub fn gate(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let sh = self.shared.clone();
        move || sh.open()
    }

    /// Stops the thread (the gate then closes within its freshness window).
    pub fn stop(mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the last answer was, for logging changes only.
#[derive(PartialEq)]
enum Answer {
    Allowed(&'static str),
    Denied(&'static str),
}

/// One probe, bounded by `timeout` (plus a second for the tool's reaping).
async fn ask_once(source: &dyn QuorumSource, qc: &QuorumConfig) -> Result<Quorum, QuorumError> {
    let limit = qc.timeout.0 + Duration::from_secs(1);
    tokio::time::timeout(limit, source.probe())
        .await
        .unwrap_or_else(|_| {
            Err(QuorumError::Timeout {
                tool: source.backend().into(),
                after: limit,
            })
        })
}

fn ask(
    answer: Result<Quorum, QuorumError>,
    qc: &QuorumConfig,
    sh: &Shared,
    last: &mut Option<Answer>,
) {
    let fresh_for = qc.refresh.0 + qc.timeout.0 + Duration::from_secs(1);
    let allows = answer.as_ref().is_ok_and(Quorum::allows);
    if allows {
        let until = sh
            .now_ms()
            .saturating_add(u64::try_from(fresh_for.as_millis()).unwrap_or(u64::MAX))
            .saturating_add(1);
        sh.open_until.store(until, Ordering::Release);
    } else {
        sh.open_until.store(0, Ordering::Release);
    }
    let seen = match &answer {
        Ok(Quorum::NoCluster { .. }) => Answer::Allowed("no cluster"),
        Ok(Quorum::Quorate(_)) => Answer::Allowed("quorate"),
        Ok(Quorum::NotQuorate(_)) => Answer::Denied("not quorate"),
        Err(_) => Answer::Denied("no answer"),
    };
    if last.as_ref() == Some(&seen) {
        return;
    }
    let first = last.is_none();
    match (&answer, allows) {
        (Ok(q), true) if first => tracing::info!(quorum = %q, "quorum gate open"),
        (Ok(q), true) => {
            tracing::warn!(quorum = %q, "quorum gate open again: the watchdog keeper may pet")
        }
        (Ok(q), _) => tracing::error!(quorum = %q,
            "this node has NO QUORUM: quorum gate closed, the watchdog keeper stops petting \
             and the node resets unless quorum returns"),
        (Err(e), _) => tracing::error!(error = %e,
            "this node cannot prove quorum: quorum gate closed, the watchdog keeper stops \
             petting and the node resets unless quorum returns"),
    }
    *last = Some(seen);
}

/// Why the daemon's keeper could not start or arm.
#[derive(Debug, thiserror::Error)]
#[error(
    "{config}: [watchdog]: cannot start the watchdog keeper: {source}; a node configured to \
     self-fence does not run without its watchdog (enabled = false in [watchdog] runs the daemon \
     without self-fencing)"
)]
pub struct ArmError {
    /// The config file (every keeper error that concerns a path names it).
    pub config: String,
    /// What failed.
    #[source]
    pub source: KeeperError,
}

/// The running keeper, as the daemon holds it.
pub struct DaemonKeeper {
    /// The running keeper; `None` while waiting for quorum to arm it.
    handle: Option<KeeperHandle>,
    /// What to start once quorate.
    pending: Option<KeeperConfig>,
    config_path: PathBuf,
    quorum: QuorumWatch,
    liveness: Liveness,
    period: Duration,
    status_path: PathBuf,
    last_write: Option<(Instant, bool)>,
    writing: Option<tokio::task::JoinHandle<()>>,
}

fn fmt_d(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

impl DaemonKeeper {
    /// Starts the keeper for `kc`, gated by quorum as `qc` says, writing
    /// its status into `state_dir`; arms it at once when quorate. A
    /// keeper that cannot start is an error: a node configured to
    /// self-fence must not run without its watchdog. `config_path` names
    /// the config in errors.
    pub async fn start(
        kc: KeeperConfig,
        qc: &QuorumConfig,
        state_dir: &Path,
        config_path: &Path,
    ) -> Result<DaemonKeeper, ArmError> {
        let period = Self::period_for(&kc);
        let qc = qc.clone();
        // The gate: this node pets only while it is in the quorate partition
        // (or in no cluster). The watch answers once before `start` returns.
        let quorum = tokio::task::spawn_blocking(move || QuorumWatch::start(&qc))
            .await
            .map_err(|_| ArmError {
                config: config_path.display().to_string(),
                source: KeeperError::Panicked,
            })?;
        let mut k = DaemonKeeper {
            handle: None,
            pending: Some(kc),
            config_path: config_path.to_owned(),
            quorum,
            liveness: Liveness::new(),
            period,
            status_path: state_dir.join(STATUS_FILE),
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
        Ok(k)
    }

    /// Is the watchdog armed (or still waiting for quorum)?
    pub fn armed(&self) -> bool {
        self.handle.is_some()
    }

    /// Starts the keeper now (quorum is there). Blocking but quick: opens
    /// the device or connects to watchdog-mux.
    fn arm(&mut self) -> Result<(), ArmError> {
        let Some(kc) = self.pending.take() else {
            return Ok(());
        };
        let wedge_after = kc.wedge_after.0;
        self.liveness.touch();
        let handle = Keeper::new(kc, self.liveness.clone())
            .with_gate("quorum", self.quorum.gate())
            .start()
            .map_err(|source| ArmError {
                config: self.config_path.display().to_string(),
                source,
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
    pub fn period_for(kc: &KeeperConfig) -> Duration {
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
    pub fn turn(&mut self) -> Result<(), ArmError> {
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
    pub async fn stop(self) -> Result<(), KeeperError> {
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
        .map_err(|_| KeeperError::Panicked)?;
        r?;
        if let Err(e) = std::fs::remove_file(&self.status_path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.status_path.display(), error = %e,
                    "cannot remove the watchdog status file");
            }
        }
        Ok(())
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
    pub fn write(&self, path: &Path) {
        let tmp = path.with_extension("json.tmp");
        let r = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the watchdog status file");
        }
    }

    /// Reads the file the daemon left in `state_dir`, if any.
    pub fn read(state_dir: &Path) -> Option<Result<StatusFile, String>> {
        let path = state_dir.join(STATUS_FILE);
        let text = std::fs::read(&path).ok()?;
        Some(
            serde_json::from_slice(&text)
                .map_err(|e| format!("unreadable {}: {e}", path.display())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn tool(dir: &std::path::Path, name: &str, script: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    #[test]
    fn the_gate_follows_the_answers_and_closes_when_they_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("quorate");
        std::fs::write(&flag, "Yes").expect("write");
        let t = tool(
            dir.path(),
            "cq",
            &format!(
                "q=$(cat {})\nprintf 'Quorum information\\nQuorate: %s\\nExpected votes: 3\\nTotal votes: 2\\n' $q\n[ $q = Yes ]",
                flag.display()
            ),
        );
        let qc = QuorumConfig {
            mode: QuorumMode::Corosync,
            backend: crate::quorum::QuorumBackend::Tool,
            tool: t,
            refresh: HumanDuration(Duration::from_millis(50)),
            timeout: HumanDuration(Duration::from_secs(2)),
            ..QuorumConfig::default()
        };
        let w = QuorumWatch::start(&qc);
        let gate = w.gate();
        assert!(gate(), "quorate from the first answer on");
        let wait = |want: bool| {
            let t = Instant::now();
            while gate() != want {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "gate never became {want}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        std::fs::write(&flag, "No").expect("write");
        wait(false);
        std::fs::write(&flag, "Yes").expect("write");
        wait(true);
        w.stop();
        // No more answers: closed once the last one is stale (3.05 s).
        wait(false);
    }

    #[test]
    fn off_is_always_open() {
        let w = QuorumWatch::start(&QuorumConfig {
            mode: QuorumMode::Off,
            ..QuorumConfig::default()
        });
        assert!(w.gate()());
        w.stop();
    }

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
    fn the_status_file_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(StatusFile::read(dir.path()).is_none());
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
        let f = StatusFile::read(dir.path()).expect("file").expect("parses");
        assert!(!f.fit);
        assert_eq!(f.unfit_reason.as_deref(), Some("daemon wedged"));
        assert_eq!(f.backend, "watchdog-mux /run/watchdog-mux.sock");
    }
}
