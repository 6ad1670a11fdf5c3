//! When each node was last heard from: `STATE_DIR/seen/NODE`, whose
//! modification time is touched whenever tandem talked to the node
//! successfully (a replication cycle with it as source or target). The
//! watchdog fence level reads it: a node silent for longer than its
//! watchdog timeout plus a margin has surely reset itself.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tandem_fence::watchdog::Heartbeat;

/// The heartbeat file of one node.
#[derive(Debug, Clone)]
pub struct FileHeartbeat {
    path: PathBuf,
}

impl FileHeartbeat {
    /// The heartbeat of `node` under `state_dir`.
    pub fn new(state_dir: &Path, node: &str) -> Self {
        FileHeartbeat {
            path: state_dir.join("seen").join(node),
        }
    }

    /// Records that the node answered just now. Failures are logged only:
    /// a missing heartbeat makes the watchdog level refuse, never succeed.
    pub fn touch(&self) {
        let r = self
            .path
            .parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|_| std::fs::write(&self.path, b""));
        if let Err(e) = r {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot record heartbeat");
        }
    }
}

impl Heartbeat for FileHeartbeat {
    fn last_seen(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }
}

/// Touches the heartbeat of both nodes of every job that succeeded.
pub fn record(
    state_dir: &Path,
    specs: &[tandem_repl::exec::JobSpec],
    reports: &[tandem_repl::cycle::JobReport],
) {
    for r in reports.iter().filter(|r| r.result.is_ok()) {
        if let Some(s) = specs.iter().find(|s| s.name == r.job) {
            FileHeartbeat::new(state_dir, &s.source.node).touch();
            FileHeartbeat::new(state_dir, &s.target.node).touch();
        }
    }
}
