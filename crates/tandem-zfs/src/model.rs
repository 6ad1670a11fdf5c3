//! What tandem knows about one side: datasets, their snapshots and the few
//! properties replication needs, as read by one listing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::{BookmarkName, DatasetName, SnapshotName};

/// A snapshot's GUID: the identity that survives send/receive and renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Guid(pub u64);

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One snapshot as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Full name.
    pub name: SnapshotName,
    /// GUID (equal on both sides after a send/receive).
    pub guid: Guid,
    /// Transaction group that created it: orders snapshots of one dataset.
    pub createtxg: u64,
    /// Creation time, seconds since the Unix epoch.
    pub creation: i64,
    /// Number of user holds.
    pub userrefs: u64,
}

/// One bookmark as listed: a snapshot's GUID and position, without its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bookmark {
    /// Full name.
    pub name: BookmarkName,
    /// GUID of the snapshot it was made from.
    pub guid: Guid,
    /// That snapshot's createtxg.
    pub createtxg: u64,
}

/// Filesystem or volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// A filesystem.
    Filesystem,
    /// A zvol.
    Volume,
}

/// One dataset with its snapshots, oldest first (by `createtxg`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Name.
    pub name: DatasetName,
    /// Filesystem or volume.
    pub kind: DatasetKind,
    /// The dataset's own GUID.
    pub guid: Guid,
    /// Snapshots, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// Bookmarks, oldest first (empty where ZFS has none).
    #[serde(default)]
    pub bookmarks: Vec<Bookmark>,
    /// `receive_resume_token`, when a resumable receive was interrupted.
    pub resume_token: Option<String>,
    /// `written`: bytes written since the newest snapshot (None where ZFS lacks it).
    pub written: Option<u64>,
    /// `referenced` bytes.
    pub referenced: Option<u64>,
    /// tandem's generation mark (`tandem:generation`), if set on this
    /// dataset (an inherited value names another job and is ignored by
    /// [`Dataset::generation_of`]).
    #[serde(default)]
    pub generation: Option<Generation>,
    /// `readonly` (None where not listed).
    #[serde(default)]
    pub readonly: Option<bool>,
    /// `origin`: the snapshot this dataset is a clone of, if it is one.
    #[serde(default)]
    pub origin: Option<SnapshotName>,
}

/// Who is primary for a job, as marked on a dataset with the user property
/// `tandem:generation` = `"JOB NUMBER NODE"`. Failover bumps the number on
/// the promoted replica; a node whose own mark is older than its peer's is
/// no longer primary and refuses to replicate as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// The job the mark belongs to.
    pub job: String,
    /// Bumped at every change of primary.
    pub number: u64,
    /// The node that became primary at this generation.
    pub primary: String,
}

/// The user property holding a [`Generation`].
pub const GENERATION_PROPERTY: &str = "tandem:generation";

impl Generation {
    /// Parses `"JOB NUMBER NODE"`; `None` for anything else.
    pub fn parse(v: &str) -> Option<Generation> {
        let mut f = v.split_whitespace();
        let (job, number, primary) = (f.next()?, f.next()?, f.next()?);
        if f.next().is_some() {
            return None;
        }
        Some(Generation {
            job: job.to_owned(),
            number: number.parse().ok()?,
            primary: primary.to_owned(),
        })
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.job, self.number, self.primary)
    }
}

impl Dataset {
    /// A dataset with nothing listed but its name, kind and GUID (no
    /// snapshots, properties unknown).
    pub fn new(name: DatasetName, kind: DatasetKind, guid: Guid) -> Self {
        Dataset {
            name,
            kind,
            guid,
            snapshots: Vec::new(),
            bookmarks: Vec::new(),
            resume_token: None,
            written: None,
            referenced: None,
            generation: None,
            readonly: None,
            origin: None,
        }
    }

    /// This dataset's generation mark for `job` (0 with no primary when
    /// unmarked, or marked for another job).
    pub fn generation_of(&self, job: &str) -> Option<&Generation> {
        self.generation.as_ref().filter(|g| g.job == job)
    }

    /// The newest snapshot, if any.
    pub fn newest(&self) -> Option<&Snapshot> {
        self.snapshots.last()
    }

    /// The snapshot with this GUID.
    pub fn by_guid(&self, guid: Guid) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.guid == guid)
    }

    /// The snapshot with this short name.
    pub fn by_short(&self, short: &str) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.name.short() == short)
    }
}

/// Everything one listing saw on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Datasets by name.
    pub datasets: BTreeMap<DatasetName, Dataset>,
}

impl Listing {
    /// The dataset of this name, if it exists.
    pub fn get(&self, name: &DatasetName) -> Option<&Dataset> {
        self.datasets.get(name)
    }
}
