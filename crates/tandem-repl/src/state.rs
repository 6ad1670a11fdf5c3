//! What tandem remembers between runs, behind the [`Store`] trait: per-job
//! state, small records (an interrupted `reverse`'s progress), and the
//! locks that keep a job from overlapping itself.
//!
//! [`StateStore`] keeps it in `state_dir`: `jobs/<job>.json` and
//! `<kind>/<job>.json`, each written atomically (temp file, fsync, rename,
//! fsync of the directory), so a crash leaves either the old or the new
//! version, never half of one; locks are `flock`s under `locks/` (see
//! [`crate::lock`]). [`MemStore`] keeps the same in memory, for tests and
//! the simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tandem_zfs::{Guid, SnapshotName};

use crate::lock::{key_file, LockError};
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
    /// common snapshot: see [`JobSpec::rebuilt_target`](crate::executor::JobSpec).
    pub rebuilt: Option<Rebuilt>,
    /// A guest job's datasets: the newest common snapshot of each after
    /// its last success, by path below the job's datasets.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<String, Common>,
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

/// A boxed, sendable future (the [`Store`] trait is used as an object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A held lock; released when dropped.
pub struct Held(#[allow(dead_code)] Box<dyn Send + Sync>);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

/// Where tandem keeps what it remembers.
pub trait Store: Send + Sync {
    /// The job's state; the default if it never ran.
    fn load(&self, job: &JobName) -> Result<JobState, StateError>;
    /// Replaces the job's state, durably (it is on disk when this returns).
    fn save(&self, job: &JobName, st: &JobState) -> Result<(), StateError>;
    /// A small record of `kind` for `job` (e.g. `reverse`'s progress).
    fn read_record(&self, kind: &str, job: &JobName) -> Result<Option<Vec<u8>>, StateError>;
    /// Replaces a record, durably.
    fn write_record(&self, kind: &str, job: &JobName, body: &[u8]) -> Result<(), StateError>;
    /// Removes a record (nothing if there is none).
    fn remove_record(&self, kind: &str, job: &JobName) -> Result<(), StateError>;
    /// Moves a job's unreadable state aside (kept for a look) so that the
    /// job starts afresh; says where it went.
    fn quarantine(&self, job: &JobName) -> Result<String, StateError>;
    /// Takes the lock `kind`/`key` (a job's name, a `node:dataset`),
    /// waiting up to `wait`; `what` names it in messages, `me` the holder.
    fn lock<'a>(
        &'a self,
        kind: &'a str,
        key: &'a str,
        me: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Held, LockError>>;
}

impl dyn Store + '_ {
    /// The job's state; an unreadable one is moved aside
    /// ([`Store::quarantine`]) and the job starts afresh: the state is a
    /// cache of what the datasets say, and one corrupt file must not stop
    /// a job (or its failover). The second value says what happened.
    pub fn load_or_reset(&self, job: &JobName) -> Result<(JobState, Option<String>), StateError> {
        match self.load(job) {
            Ok(st) => Ok((st, None)),
            Err(StateError::Corrupt { path, source }) => {
                let aside = self.quarantine(job)?;
                let w = format!(
                    "the state file {} was corrupt ({source}); moved aside to {aside}, the job starts afresh",
                    path.display()
                );
                tracing::warn!(%job, "{w}");
                Ok((JobState::default(), Some(w)))
            }
            Err(e) => Err(e),
        }
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

fn lock_what(kind: &str, key: &str) -> String {
    format!("{kind} {key}")
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
        let body = serde_json::to_vec_pretty(st).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            source: e,
        })?;
        write_durably(&path, &body)
    }

    fn record_path(&self, kind: &str, job: &JobName) -> PathBuf {
        self.dir.join(kind).join(format!("{job}.json"))
    }

    /// Loads, changes and saves the job's state.
    pub fn update(
        &self,
        job: &JobName,
        f: impl FnOnce(&mut JobState),
    ) -> Result<JobState, StateError> {
        (self as &dyn Store).update(job, f)
    }
}

/// Writes `body` to `path` atomically and durably: a temp file beside it,
/// fsync, rename over `path`, fsync of the directory.
fn write_durably(path: &Path, body: &[u8]) -> Result<(), StateError> {
    let ioerr = |p: &Path, e| StateError::Io {
        path: p.to_owned(),
        source: e,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| ioerr(dir, e))?;
    let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp).map_err(|e| ioerr(&tmp, e))?;
        f.write_all(body).map_err(|e| ioerr(&tmp, e))?;
        f.sync_all().map_err(|e| ioerr(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| ioerr(path, e))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Store for StateStore {
    fn load(&self, job: &JobName) -> Result<JobState, StateError> {
        StateStore::load(self, job)
    }

    fn save(&self, job: &JobName, st: &JobState) -> Result<(), StateError> {
        StateStore::save(self, job, st)
    }

    fn read_record(&self, kind: &str, job: &JobName) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.record_path(kind, job);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    fn write_record(&self, kind: &str, job: &JobName, body: &[u8]) -> Result<(), StateError> {
        write_durably(&self.record_path(kind, job), body)
    }

    fn remove_record(&self, kind: &str, job: &JobName) -> Result<(), StateError> {
        let path = self.record_path(kind, job);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(d) = path.parent().and_then(|d| fs::File::open(d).ok()) {
                    let _ = d.sync_all();
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    fn quarantine(&self, job: &JobName) -> Result<String, StateError> {
        let path = self.path(job);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = path.with_extension(format!("json.corrupt-{stamp}"));
        fs::rename(&path, &aside).map_err(|e| StateError::Io {
            path: path.clone(),
            source: e,
        })?;
        Ok(aside.display().to_string())
    }

    fn lock<'a>(
        &'a self,
        kind: &'a str,
        key: &'a str,
        me: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Held, LockError>> {
        Box::pin(async move {
            let path = key_file(&self.dir.join("locks"), kind, key);
            let l = crate::lock::lock(&path, &lock_what(kind, key), me, wait).await?;
            Ok(Held(Box::new(l)))
        })
    }
}

/// A [`Store`] in memory: for tests and the simulator. Clones share it
/// (a node's "disk"). State is kept serialized, so a corrupted entry
/// ([`MemStore::corrupt`]) fails to load exactly like a corrupt file.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Debug, Default)]
struct MemInner {
    files: BTreeMap<String, Vec<u8>>,
    locks: BTreeMap<String, String>,
}

struct MemHeld {
    inner: Arc<Mutex<MemInner>>,
    key: String,
}

impl Drop for MemHeld {
    fn drop(&mut self) {
        if let Ok(mut m) = self.inner.lock() {
            m.locks.remove(&self.key);
        }
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn key(kind: &str, job: &JobName) -> String {
        format!("{kind}/{job}.json")
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemInner) -> T) -> T {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    /// Overwrites the job's state with bytes that are not JSON.
    pub fn corrupt(&self, job: &JobName) {
        self.with(|m| {
            m.files
                .insert(Self::key("jobs", job), b"{\"direction\": ".to_vec())
        });
    }

    /// The locks held now: `kind key` and their holders.
    pub fn held_locks(&self) -> BTreeMap<String, String> {
        self.with(|m| m.locks.clone())
    }

    /// Names of everything stored, for inspection.
    pub fn entries(&self) -> BTreeSet<String> {
        self.with(|m| m.files.keys().cloned().collect())
    }
}

impl Store for MemStore {
    fn load(&self, job: &JobName) -> Result<JobState, StateError> {
        let key = Self::key("jobs", job);
        match self.with(|m| m.files.get(&key).cloned()) {
            None => Ok(JobState::default()),
            Some(b) => serde_json::from_slice(&b).map_err(|e| StateError::Corrupt {
                path: PathBuf::from(format!("mem:{key}")),
                source: e,
            }),
        }
    }

    fn save(&self, job: &JobName, st: &JobState) -> Result<(), StateError> {
        let key = Self::key("jobs", job);
        let body = serde_json::to_vec(st).map_err(|e| StateError::Corrupt {
            path: PathBuf::from(format!("mem:{key}")),
            source: e,
        })?;
        self.with(|m| m.files.insert(key, body));
        Ok(())
    }

    fn read_record(&self, kind: &str, job: &JobName) -> Result<Option<Vec<u8>>, StateError> {
        let key = Self::key(kind, job);
        Ok(self.with(|m| m.files.get(&key).cloned()))
    }

    fn write_record(&self, kind: &str, job: &JobName, body: &[u8]) -> Result<(), StateError> {
        let key = Self::key(kind, job);
        self.with(|m| m.files.insert(key, body.to_vec()));
        Ok(())
    }

    fn remove_record(&self, kind: &str, job: &JobName) -> Result<(), StateError> {
        let key = Self::key(kind, job);
        self.with(|m| m.files.remove(&key));
        Ok(())
    }

    fn quarantine(&self, job: &JobName) -> Result<String, StateError> {
        let key = Self::key("jobs", job);
        let aside = format!("{key}.corrupt");
        self.with(|m| {
            if let Some(b) = m.files.remove(&key) {
                m.files.insert(aside.clone(), b);
            }
        });
        Ok(format!("mem:{aside}"))
    }

    fn lock<'a>(
        &'a self,
        kind: &'a str,
        key: &'a str,
        me: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Held, LockError>> {
        Box::pin(async move {
            let k = lock_what(kind, key);
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let taken = self.with(|m| match m.locks.get(&k) {
                    Some(holder) => Err(holder.clone()),
                    None => {
                        m.locks.insert(k.clone(), me.to_owned());
                        Ok(())
                    }
                });
                match taken {
                    Ok(()) => {
                        return Ok(Held(Box::new(MemHeld {
                            inner: self.inner.clone(),
                            key: k,
                        })))
                    }
                    Err(holder) if tokio::time::Instant::now() < deadline => {
                        let _ = holder;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(holder) => {
                        return Err(LockError::Busy {
                            what: k.clone(),
                            holder,
                            path: PathBuf::from(format!("mem:locks/{k}")),
                        })
                    }
                }
            }
        })
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
