//! Job names, and the names tandem gives its own snapshots and holds.
//!
//! Replication snapshots are `DATASET@tandem_<job>_<yyyymmddThhmmssZ>` (UTC).
//! tandem destroys only snapshots whose short name parses back to its own
//! job with a valid timestamp: that is the whole of "tandem's snapshots".

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use tandem_zfs::{HoldTag, Snapshot};

/// Prefix of every snapshot and hold tag tandem makes.
pub const PREFIX: &str = "tandem_";
const TIME_FMT: &str = "%Y%m%dT%H%M%SZ";
const TIME_LEN: usize = 16;

/// A job name that was not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job name {input:?}: {reason}")]
pub struct JobNameError {
    /// The name given.
    pub input: String,
    /// Why.
    pub reason: &'static str,
}

/// A job's name: 1–64 of `[A-Za-z0-9_.-]`, starting with a letter or digit,
/// so that it fits in snapshot names, hold tags and file names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobName(String);

impl JobName {
    /// Validates a job name.
    pub fn parse(s: &str) -> Result<Self, JobNameError> {
        let err = |reason| {
            Err(JobNameError {
                input: s.to_owned(),
                reason,
            })
        };
        if s.is_empty() || s.len() > 64 {
            return err("must be 1 to 64 characters");
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return err("must start with a letter or digit");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return err("only letters, digits, '_', '.' and '-' are allowed");
        }
        Ok(Self(s.to_owned()))
    }

    /// The key a fan-out job's leg to `node` keeps its state, locks and
    /// reports under: `JOB@NODE`. Never a snapshot name or a hold tag
    /// (which `@` could not be part of): the leg's snapshots carry the
    /// job's own name, shared by all its legs.
    pub fn leg(&self, node: &str) -> JobName {
        JobName(format!("{}@{node}", self.0))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hold tag this job put on its common snapshots before tandem
    /// 0.2 (`tandem_<job>`; see [`peer_hold_tag`]): still released where
    /// it is found.
    pub fn legacy_hold_tag(&self) -> HoldTag {
        // A valid job name always makes a valid tag.
        HoldTag::parse(&format!("{PREFIX}{}", self.0)).unwrap_or_else(|_| unreachable_tag())
    }

    /// The short snapshot name for time `t`.
    pub fn snapshot_short(&self, t: DateTime<Utc>) -> String {
        format!("{PREFIX}{}_{}", self.0, t.format(TIME_FMT))
    }

    /// If `short` is one of this job's snapshot names, its time.
    pub fn parse_own(&self, short: &str) -> Option<DateTime<Utc>> {
        let rest = short
            .strip_prefix(PREFIX)?
            .strip_prefix(self.0.as_str())?
            .strip_prefix('_')?;
        if rest.len() != TIME_LEN {
            return None;
        }
        NaiveDateTime::parse_from_str(rest, TIME_FMT)
            .ok()
            .map(|n| n.and_utc())
    }

    /// Is this snapshot one of this job's own?
    pub fn owns(&self, s: &Snapshot) -> bool {
        self.parse_own(s.name.short()).is_some()
    }
}

/// The hold tag on a common snapshot on one node, naming the node at the
/// other end of the job: `tandem_@<peer>`. Every job between the same two
/// nodes shares it (so one `zfs hold` and one `zfs release` per node
/// carry a whole cycle), it stays the same whichever way a job runs, and
/// a source sending to several nodes holds a snapshot once for each of
/// them. It cannot be a job's legacy tag: a job name starts with a letter
/// or digit.
pub fn peer_hold_tag(peer: &str) -> HoldTag {
    HoldTag::parse(&format!("{PREFIX}@{peer}")).unwrap_or_else(|_| unreachable_tag())
}

fn unreachable_tag() -> HoldTag {
    // Only reachable if JobName validation were weaker than HoldTag's.
    HoldTag::parse("tandem").unwrap_or_else(|_| panic!("static hold tag is valid"))
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for JobName {
    type Error = JobNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<JobName> for String {
    fn from(j: JobName) -> String {
        j.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn own_names_roundtrip_and_do_not_collide() {
        let a = JobName::parse("a").expect("a");
        let ab = JobName::parse("a_b").expect("a_b");
        let t = Utc
            .with_ymd_and_hms(2026, 11, 21, 12, 0, 5)
            .single()
            .expect("time");
        let s = a.snapshot_short(t);
        assert_eq!(s, "tandem_a_20261121T120005Z");
        assert_eq!(a.parse_own(&s), Some(t));
        assert_eq!(ab.parse_own(&s), None);
        assert_eq!(
            a.parse_own(&ab.snapshot_short(t)),
            None,
            "job a must not claim job a_b's snapshots"
        );
        assert_eq!(a.parse_own("tandem_a_manual"), None);
        assert_eq!(a.parse_own("tandem_a_20261321T120005Z"), None);
        assert_eq!(a.legacy_hold_tag().as_str(), "tandem_a");
        assert_eq!(peer_hold_tag("b").as_str(), "tandem_@b");
    }

    #[test]
    fn job_names_are_checked() {
        for ok in ["vm-1001", "a", "A.b_c-9"] {
            assert!(JobName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "_x", "a b", "a/b", "a:b", "a@b", &"x".repeat(65)] {
            let e = JobName::parse(bad).expect_err(bad);
            assert_eq!(e.input, bad);
        }
    }
}
