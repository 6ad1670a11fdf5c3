//! The quorum gate as the binary uses it: `failover` asks once
//! ([`failover_refusal`]), and the daemon keeps a [`QuorumWatch`] whose
//! answer the watchdog keeper's gate reads on every interval.
//!
//! The keeper's gate must answer at once, so the watch asks corosync on a
//! thread of its own every `refresh` and publishes "open until" as an
//! atomic deadline: an answer that allows (quorate, or no cluster) opens
//! the gate for `refresh + timeout + 1 s`; an answer that does not closes
//! it at once. A watch thread that stops answering therefore closes the
//! gate by itself: the node cannot keep petting on a stale "yes".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tandem_fence::quorum::{Quorum, QuorumConfig, QuorumMode};

use crate::config::Config;

/// Why `failover` must not go on, if it must not: this node is not
/// quorate, or cannot prove it is.
pub async fn failover_refusal(cfg: &Config) -> anyhow::Result<Option<String>> {
    let qc = cfg.quorum.clone();
    let answer = tokio::task::spawn_blocking(move || qc.probe())
        .await
        .map_err(|e| anyhow::anyhow!("the quorum probe panicked: {e}"))?;
    let me = &cfg.local_node;
    Ok(match answer {
        Ok(Quorum::NotQuorate(v)) => Some(format!(
            "this node ({me}) has no quorum ({v}): it may be the one cut off; refusing to promote"
        )),
        Ok(q) => {
            tracing::info!(quorum = %q, "quorum check before failover: may promote");
            None
        }
        Err(e) => Some(format!(
            "this node ({me}) cannot prove it has quorum: {e}; a node that cannot prove quorum may \
             be the one cut off; refusing to promote"
        )),
    })
}

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
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl QuorumWatch {
    /// Asks once (so the gate is right from the start), then keeps asking
    /// every `refresh` on a thread. With `mode = "off"` there is no thread
    /// and the gate is always open.
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
        let mut last = None;
        ask(qc, &shared, &mut last);
        let (tx, rx) = mpsc::channel();
        let qc = qc.clone();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tandem-quorum".into())
            .spawn(move || loop {
                match rx.recv_timeout(qc.refresh.0) {
                    Err(mpsc::RecvTimeoutError::Timeout) => ask(&qc, &sh, &mut last),
                    _ => return,
                }
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the quorum watch thread: the quorum gate stays closed"))
            .ok();
        QuorumWatch {
            shared,
            stop: Some(tx),
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
enum Seen {
    Allowed(&'static str),
    Denied(&'static str),
}

fn ask(qc: &QuorumConfig, sh: &Shared, last: &mut Option<Seen>) {
    let answer = qc.probe();
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
        Ok(Quorum::NoCluster { .. }) => Seen::Allowed("no cluster"),
        Ok(Quorum::Quorate(_)) => Seen::Allowed("quorate"),
        Ok(Quorum::NotQuorate(_)) => Seen::Denied("not quorate"),
        Err(_) => Seen::Denied("no answer"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_fence::config::HumanDuration;

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
}
