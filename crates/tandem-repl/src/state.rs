//! Per-job state in `state_dir/jobs/<job>.json`, written atomically (temp
//! file, fsync, rename, fsync of the directory), so a crash leaves either
//! the old or the new state, never half of one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tandem_zfs::{Guid, SnapshotName};

use crate::naming::JobName;

/// Errors reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory cannot be created or written.
    #[error("state directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A state file cannot be read or written.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A state file is not valid JSON of the expected shape.
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What serde said.
        source: serde_json::Error,
    },
}

/// Which way a job replicates (a later `reverse` flips it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// source → target, as configured.
    #[default]
    Forward,
    /// target → source.
    Reverse,
}

/// The newest snapshot both sides share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Common {
    /// Its name on the source.
    pub source: SnapshotName,
    /// Its name on the target.
    pub target: SnapshotName,
    /// Its GUID.
    pub guid: Guid,
    /// When it was taken (its creation time): lag is measured from here.
    pub created: DateTime<Utc>,
}

/// What tandem remembers about one job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobState {
    /// Replication direction.
    pub direction: Direction,
    /// Bumped each time the primary changes (failover, reverse).
    pub generation: u64,
    /// Start of the last attempt.
    pub last_attempt: Option<DateTime<Utc>>,
    /// End of the last successful cycle.
    pub last_success: Option<DateTime<Utc>>,
    /// The plan the last attempt carried out (`full`, `incremental`, …).
    pub last_plan: Option<String>,
    /// Newest common snapshot after the last success.
    pub common: Option<Common>,
    /// Bytes moved by the last transfer.
    pub last_bytes: u64,
    /// Duration of the last cycle, milliseconds.
    pub last_duration_ms: u64,
    /// The last error, cleared on success.
    pub last_error: Option<String>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// The last promotion of this job's replica by `tandem failover`.
    pub promoted: Option<Promotion>,
    /// Set by `reverse` when it rebuilt the follower as a clone of the
    /// common snapshot: see [`JobSpec::rebuilt_target`](crate::exec::JobSpec).
    pub rebuilt: Option<Rebuilt>,
}

/// A follower rebuilt by `reverse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuilt {
    /// The follower, `node:dataset`.
    pub target: String,
    /// The common snapshot it was cloned from.
    pub base: Guid,
    /// Its `written` right after the rebuild (nothing wrote to it).
    pub written: u64,
}

/// What `tandem failover` did to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// When the replica became writable.
    pub at: DateTime<Utc>,
    /// The node that became primary.
    pub node: String,
    /// The node that was fenced (or confirmed off by the operator).
    pub from: String,
    /// The snapshot the replica was rolled back to.
    pub snapshot: SnapshotName,
    /// Its age at promotion, seconds: the data-loss window suffered.
    pub rpo_seconds: i64,
    /// The generation after the promotion.
    pub generation: u64,
    /// "fence" when a device confirmed the power off, "operator" for `--confirmed-off`.
    pub confirmed_by: String,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// Opens (creating if needed) `dir`, and proves it is writable.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let jobs = dir.join("jobs");
        let derr = |e| StateError::Dir {
            path: dir.to_owned(),
            source: e,
        };
        fs::create_dir_all(&jobs).map_err(derr)?;
        fs::create_dir_all(dir.join("locks")).map_err(derr)?;
        // ssh connection-sharing sockets live here; only root may use them.
        let ssh = dir.join("ssh");
        fs::create_dir_all(&ssh).map_err(derr)?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).map_err(derr)?;
        }
        let probe = jobs.join(".write-test");
        fs::write(&probe, b"ok").map_err(derr)?;
        let _ = fs::remove_file(&probe);
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, job: &JobName) -> PathBuf {
        self.dir.join("jobs").join(format!("{job}.json"))
    }

    /// The job's state; default if never run.
    pub fn load(&self, job: &JobName) -> Result<JobState, StateError> {
        let path = self.path(job);
        match fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| StateError::Corrupt { path, source: e })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JobState::default()),
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    /// Replaces the job's state atomically.
    pub fn save(&self, job: &JobName, st: &JobState) -> Result<(), StateError> {
        let path = self.path(job);
        let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
        let ioerr = |p: &Path, e| StateError::Io {
            path: p.to_owned(),
            source: e,
        };
        let body = serde_json::to_vec_pretty(st).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            source: e,
        })?;
        {
            let mut f = fs::File::create(&tmp).map_err(|e| ioerr(&tmp, e))?;
            f.write_all(&body).map_err(|e| ioerr(&tmp, e))?;
            f.sync_all().map_err(|e| ioerr(&tmp, e))?;
        }
        fs::rename(&tmp, &path).map_err(|e| ioerr(&path, e))?;
        if let Ok(d) = fs::File::open(self.dir.join("jobs")) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Loads, changes and saves the job's state.
    pub fn update(
        &self,
        job: &JobName,
        f: impl FnOnce(&mut JobState),
    ) -> Result<JobState, StateError> {
        let mut st = self.load(job)?;
        f(&mut st);
        self.save(job, &st)?;
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption_is_named() {
        let d = tempfile::tempdir().expect("tmp");
        let s = StateStore::open(d.path()).expect("open");
        let j = JobName::parse("j").expect("j");
        assert_eq!(s.load(&j).expect("default"), JobState::default());
        let st = s
            .update(&j, |st| {
                st.last_bytes = 42;
                st.consecutive_failures = 2;
            })
            .expect("update");
        assert_eq!(s.load(&j).expect("load"), st);
        fs::write(d.path().join("jobs/j.json"), b"{not json").expect("write");
        let e = s.load(&j).expect_err("corrupt");
        assert!(e.to_string().contains("j.json"), "{e}");
    }

    #[test]
    fn unwritable_dir_is_refused() {
        let e = StateStore::open(Path::new("/proc/tandem-state")).expect_err("not writable");
        assert!(e.to_string().contains("/proc/tandem-state"), "{e}");
    }
}
