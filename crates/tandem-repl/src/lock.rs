//! Locks that hold across processes: `flock(2)` on files under
//! `state_dir/locks`. A job never overlaps itself, and two jobs never write
//! one target dataset at once, whether they run in one daemon or in two
//! `tandem run` processes. The kernel drops a lock when its holder dies,
//! so a SIGKILLed run never leaves a stale lock behind.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

/// Lock errors.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds the lock and we did not wait (or waited too long).
    #[error("{what} is busy: locked by {holder} ({path})")]
    Busy {
        /// What the lock protects.
        what: String,
        /// The holder, as it recorded itself.
        holder: String,
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file cannot be opened.
    #[error("lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _f: Flock<File>,
}

/// Encodes a key (a job or `node:dataset`) into a file name.
pub fn key_file(dir: &Path, kind: &str, key: &str) -> PathBuf {
    let mut name = String::from(kind);
    name.push('-');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push_str(".lock");
    dir.join(name)
}

/// Tries once to take the lock at `path`.
pub fn try_lock(path: &Path, what: &str, me: &str) -> Result<Lock, LockError> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).map_err(|e| LockError::Io {
            path: p.to_owned(),
            source: e,
        })?;
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| LockError::Io {
            path: path.to_owned(),
            source: e,
        })?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(mut l) => {
            let _ = l.set_len(0);
            let _ = l.rewind();
            let _ = write!(l, "{me}");
            Ok(Lock { _f: l })
        }
        Err((mut f, _)) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            if holder.is_empty() {
                holder = "another process".into();
            }
            Err(LockError::Busy {
                what: what.to_owned(),
                holder,
                path: path.to_owned(),
            })
        }
    }
}

/// Takes the lock, waiting up to `wait` for it (polling, so the async
/// runtime is never blocked).
pub async fn lock(path: &Path, what: &str, me: &str, wait: Duration) -> Result<Lock, LockError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut told = false;
    loop {
        match try_lock(path, what, me) {
            Ok(l) => return Ok(l),
            Err(LockError::Busy { holder, .. }) if tokio::time::Instant::now() < deadline => {
                if !told {
                    tracing::info!(%what, %holder, "waiting for lock");
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_named() {
        let d = tempfile::tempdir().expect("tmp");
        let p = key_file(d.path(), "target", "n1:tank/with space");
        assert!(p
            .to_string_lossy()
            .ends_with("target-n1%3Atank%2Fwith%20space.lock"));
        let l = try_lock(&p, "target n1:tank/with space", "pid 1").expect("first");
        let e = try_lock(&p, "target n1:tank/with space", "pid 2").expect_err("second");
        assert!(e.to_string().contains("pid 1"), "{e}");
        drop(l);
        try_lock(&p, "x", "pid 3").expect("free again");
    }
}
