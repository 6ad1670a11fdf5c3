//! Credentials: a password read from a private file or an environment
//! variable. A [`Secret`] never shows up in `Debug` output, logs or errors.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::FenceError;

/// A password. `Debug` prints `Secret(<redacted>)`; the bytes are wiped
/// when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // A volatile-free wipe is good enough here: the point is not to
            // leave passwords in freed heap pages that a core dump shows.
            *b = 0;
        }
        std::hint::black_box(&self.0);
    }
}

impl Secret {
    /// Wraps bytes (tests, or a password already in memory).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// The password's bytes, for the one place that needs them (the
    /// authentication code).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Reads a password file: its first line, without the line end. Refused
    /// when the file is readable or writable by group or others (like ssh
    /// refuses a private key), when it is not a regular file, or empty.
    pub fn from_file(path: &Path) -> Result<Self, FenceError> {
        let shown = path.display();
        let meta = std::fs::metadata(path)
            .map_err(|e| FenceError::Secret(format!("password file {shown}: {e}")))?;
        if !meta.is_file() {
            return Err(FenceError::Secret(format!(
                "password file {shown}: not a regular file"
            )));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(FenceError::Secret(format!(
                "password file {shown}: mode {mode:04o} lets group or others read it; \
                 run `chmod 600 {shown}`"
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| FenceError::Secret(format!("password file {shown}: {e}")))?;
        let mut bytes = Secret(bytes);
        let end = bytes
            .0
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(bytes.0.len());
        bytes.0.truncate(end);
        if bytes.0.is_empty() {
            return Err(FenceError::Secret(format!("password file {shown}: empty")));
        }
        Ok(bytes)
    }

    /// Reads a password from the environment variable `name`.
    pub fn from_env(name: &str) -> Result<Self, FenceError> {
        match std::env::var_os(name) {
            Some(v) if !v.is_empty() => {
                use std::os::unix::ffi::OsStringExt;
                Ok(Secret(v.into_vec()))
            }
            Some(_) => Err(FenceError::Secret(format!(
                "environment variable {name} (password) is empty"
            ))),
            None => Err(FenceError::Secret(format!(
                "environment variable {name} (password) is not set"
            ))),
        }
    }

    /// Loads from `password_file` or `password_env`, whichever is given
    /// (exactly one must be); `what` names the fence level in errors.
    pub fn load(what: &str, file: Option<&Path>, env: Option<&str>) -> Result<Self, FenceError> {
        match (file, env) {
            (Some(f), None) => Self::from_file(f).map_err(|e| prefix(what, e)),
            (None, Some(v)) => Self::from_env(v).map_err(|e| prefix(what, e)),
            (Some(_), Some(_)) => Err(FenceError::Config(format!(
                "{what}: give password_file or password_env, not both"
            ))),
            (None, None) => Err(FenceError::Config(format!(
                "{what}: needs password_file (mode 0600) or password_env"
            ))),
        }
    }
}

fn prefix(what: &str, e: FenceError) -> FenceError {
    match e {
        FenceError::Secret(m) => FenceError::Secret(format!("{what}: {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn debug_never_shows_the_password() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\nignored\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Secret::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
        assert!(!err.contains("s3cret"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), b"s3cret");
    }

    #[test]
    fn empty_missing_and_both() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Secret::from_file(&p)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let missing = dir.path().join("nope");
        let err = Secret::load("node a level 1", Some(&missing), None).unwrap_err();
        assert!(
            err.to_string().starts_with("node a level 1: password file"),
            "{err}"
        );
        assert!(matches!(
            Secret::load("x", Some(&p), Some("V")),
            Err(FenceError::Config(_))
        ));
        assert!(matches!(
            Secret::load("x", None, None),
            Err(FenceError::Config(_))
        ));
        let err = Secret::from_env("TANDEM_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(err.to_string().contains("not set"));
    }
}
