//! The [`Zfs`] trait — every ZFS operation tandem makes, on one node — and
//! the request types its callers build. The backends live elsewhere: the
//! `zfs` command line in [`cli`](crate::cli), `tandem serve` in
//! `tandem-peer`, a simulated ZFS in `tandem-ha`'s simulator.

use std::future::Future;

use crate::caps::Capabilities;
use crate::error::ZfsError;
use crate::model::{Generation, Listing};
use crate::name::{BookmarkName, DatasetName, HoldTag, SnapshotName};
use crate::stream::{RecvStream, SendStream};

/// Whether an idempotent operation changed anything (so a retry is safe and
/// the log can say what happened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// It did something.
    Done,
    /// The world already was that way.
    Already,
}

/// Optional `zfs send` flags, set per job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SendFlags {
    /// `-w`: raw (encrypted datasets stay encrypted, no key needed).
    pub raw: bool,
    /// `-c`: keep on-disk compression.
    pub compressed: bool,
    /// `-L`: allow blocks over 128 KiB.
    pub large_blocks: bool,
    /// `-e`: embedded data blocks.
    pub embedded: bool,
}

/// The base of an incremental send: a snapshot, or a bookmark of one
/// (which survives the snapshot's destruction).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendBase {
    /// `send -i/-I DATASET@SNAP`.
    Snapshot(SnapshotName),
    /// `send -i DATASET#BOOKMARK` (`-I` is not possible from a bookmark).
    Bookmark(BookmarkName),
}

impl SendBase {
    /// The dataset it belongs to.
    pub fn dataset(&self) -> &DatasetName {
        match self {
            SendBase::Snapshot(s) => s.dataset(),
            SendBase::Bookmark(b) => b.dataset(),
        }
    }
}

impl std::fmt::Display for SendBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendBase::Snapshot(s) => s.fmt(f),
            SendBase::Bookmark(b) => b.fmt(f),
        }
    }
}

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SendRequest {
    /// A snapshot, full or incremental.
    Snapshot {
        /// The snapshot to send.
        snapshot: SnapshotName,
        /// Incremental base on the same dataset, if any.
        from: Option<SendBase>,
        /// `-I` (with intermediate snapshots) rather than `-i`.
        intermediates: bool,
        /// Extra flags.
        flags: SendFlags,
    },
    /// Resume an interrupted receive from its token (`send -t`).
    Resume {
        /// The target's `receive_resume_token`.
        token: String,
    },
}

/// How a stream crossing the network is compressed (ignored for local and
/// plain-ssh transfers, which carry the raw `zfs send` bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireCompress {
    /// Never.
    None,
    /// zstd at this level, per frame where it pays.
    Zstd(i32),
    /// zstd at this level while the link is the bottleneck.
    Auto(i32),
}

impl Default for WireCompress {
    fn default() -> Self {
        WireCompress::Auto(1)
    }
}

/// How to receive.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecvSpec {
    /// Compression of the stream on the wire, when it crosses the network.
    #[serde(default)]
    pub wire: WireCompress,
    /// Where the stream goes.
    pub target: Option<DatasetName>,
    /// `-s`: keep partial state so an interruption can resume.
    pub resumable: bool,
    /// `-u`: do not mount.
    pub unmounted: bool,
    /// `-o prop=value` overrides.
    pub set: Vec<(String, String)>,
    /// `-x prop` exclusions.
    pub exclude: Vec<String>,
    /// The generation the sending primary acts under (see [`Claim`]): a
    /// `tandem serve` receiver refuses a stream from a stale primary.
    #[serde(default)]
    pub claim: Option<Generation>,
}

/// The generation a write is made under: a fencing token.
///
/// Every write into a dataset that may be a job's primary or replica
/// carries the generation mark ([`Generation`]) of the primary the writer
/// acts for. The `zfs` command ignores it (a local or plain-ssh write is
/// the operator's own); `tandem serve` checks it against the dataset's own
/// mark and refuses a writer whose generation is older, or a write into
/// its own node's primary (see `tandem_peer::guard`). `None`: the writer
/// acts for no job (the dataset must then carry no foreign mark).
pub type Claim<'a> = Option<&'a Generation>;

/// The ZFS operations tandem needs on one node: replication (listing,
/// snapshots, holds, send and receive) and the few administrative ones
/// that failover and reverse use (rollback, rename, clone, promote,
/// create) and `failover --test` (destroying its own clones). Implemented by [`CliZfs`](crate::CliZfs) (the `zfs` command,
/// locally or over ssh), by `tandem serve`'s client, and by the
/// simulator's ZFS. Every operation that may destroy or overwrite data
/// takes a [`Claim`].
pub trait Zfs: Send + Sync {
    /// The node's name, for messages.
    fn node(&self) -> &str;
    /// What this node's ZFS can do (probed once).
    fn capabilities(&self) -> impl Future<Output = Result<Capabilities, ZfsError>> + Send;
    /// The given datasets, their direct children, and all their snapshots, in
    /// one call. Roots that do not exist are simply absent.
    fn list(&self, roots: &[DatasetName])
        -> impl Future<Output = Result<Listing, ZfsError>> + Send;
    /// Takes snapshots, atomically in one call where ZFS allows it.
    fn snapshot(&self, names: &[SnapshotName])
        -> impl Future<Output = Result<(), ZfsError>> + Send;
    /// Snapshots `root` and every filesystem and volume below it under one
    /// name in one transaction group (`zfs snapshot -r`): atomic on every
    /// ZFS, zfs-fuse included.
    fn snapshot_tree(
        &self,
        root: &SnapshotName,
    ) -> impl Future<Output = Result<(), ZfsError>> + Send;
    /// Destroys one snapshot (never a dataset: the type makes that impossible).
    fn destroy_snapshot(
        &self,
        name: &SnapshotName,
        claim: Claim<'_>,
    ) -> impl Future<Output = Result<Changed, ZfsError>> + Send;
    /// Destroys the snapshot of this name on `root`'s dataset and on every
    /// dataset below it that has one (`zfs destroy -r`), atomically: if
    /// one cannot go (a hold), none goes. The caller makes sure that every
    /// dataset below is one whose snapshot it means to destroy.
    fn destroy_snapshot_tree(
        &self,
        root: &SnapshotName,
        claim: Claim<'_>,
    ) -> impl Future<Output = Result<Changed, ZfsError>> + Send;
    /// `zfs hold`.
    fn hold(
        &self,
        tag: &HoldTag,
        snap: &SnapshotName,
    ) -> impl Future<Output = Result<Changed, ZfsError>> + Send;
    /// `zfs release`.
    fn release(
        &self,
        tag: &HoldTag,
        snap: &SnapshotName,
    ) -> impl Future<Output = Result<Changed, ZfsError>> + Send;
    /// `zfs hold TAG SNAP...`: one tag on many snapshots, in one call
    /// where ZFS takes many names (both zfs-fuse and OpenZFS do). One
    /// result per snapshot, in order; one that fails does not stop the
    /// others.
    fn hold_many(
        &self,
        tag: &HoldTag,
        snaps: &[SnapshotName],
    ) -> impl Future<Output = Vec<Result<Changed, ZfsError>>> + Send {
        async move {
            let mut out = Vec::with_capacity(snaps.len());
            for s in snaps {
                out.push(self.hold(tag, s).await);
            }
            out
        }
    }
    /// `zfs release TAG SNAP...`, as [`Zfs::hold_many`]: a snapshot that
    /// lacks the tag (or is gone) is [`Changed::Already`].
    fn release_many(
        &self,
        tag: &HoldTag,
        snaps: &[SnapshotName],
    ) -> impl Future<Output = Vec<Result<Changed, ZfsError>>> + Send {
        async move {
            let mut out = Vec::with_capacity(snaps.len());
            for s in snaps {
                out.push(self.release(tag, s).await);
            }
            out
        }
    }
    /// `zfs rollback` to the dataset's newest snapshot (never `-r`).
    fn rollback(
        &self,
        snap: &SnapshotName,
        claim: Claim<'_>,
    ) -> impl Future<Output = Result<(), ZfsError>> + Send;
    /// `zfs set`.
    fn set_property(
        &self,
        ds: &DatasetName,
        prop: &str,
        value: &str,
        claim: Claim<'_>,
    ) -> impl Future<Output = Result<(), ZfsError>> + Send;
    /// `zfs get` of one property; `None` for `-`.
    fn get_property(
        &self,
        ds: &DatasetName,
        prop: &str,
    ) -> impl Future<Output = Result<Option<String>, ZfsError>> + Send;
    /// Starts `zfs send`; read the stream from [`SendStream::reader`].
    fn send(&self, req: &SendRequest) -> impl Future<Output = Result<SendStream, ZfsError>> + Send;
    /// Starts `zfs receive`; write the stream into [`RecvStream::writer`].
    /// The claim travels in [`RecvSpec::claim`].
    fn receive(&self, spec: &RecvSpec)
        -> impl Future<Output = Result<RecvStream, ZfsError>> + Send;
    /// `zfs receive -A`: discards a partial resumable receive.
    fn receive_abort(
        &self,
        ds: &DatasetName,
        claim: Claim<'_>,
    ) -> impl Future<Output = Result<Changed, ZfsError>> + Send;
    /// `zfs send -nP`: the stream's size, where ZFS can estimate it.
    fn estimate(
        &self,
        req: &SendRequest,
    ) -> impl Future<Output = Result<Option<u64>, ZfsError>> + Send;
    /// `zfs bookmark SNAPSHOT BOOKMARK` (where ZFS has bookmarks; else
    /// [`Changed::Already`] without doing anything).
    fn bookmark(
        &self,
        snap: &SnapshotName,
        bm: &BookmarkName,
    ) -> impl Future<Output = Result<Changed, ZfsError>> + Send;
    /// Destroys one bookmark.
    fn destroy_bookmark(
        &self,
        bm: &BookmarkName,
    ) -> impl Future<Output = Result<Changed, ZfsError>> + Send;
    /// Commits the pools holding `datasets` to disk (`zpool sync`), so that
    /// `written` reflects every write made so far. OpenZFS updates
    /// `written` only when a transaction group commits (every few seconds),
    /// and `fsync` does not force one: without this, a cycle right after a
    /// write would be planned "up to date" and miss it. A no-op where ZFS
    /// has no `written` (then every cycle snapshots anyway).
    fn sync(&self, datasets: &[DatasetName]) -> impl Future<Output = Result<(), ZfsError>> + Send;
    /// `zfs rename FROM TO` of a dataset (never a snapshot): how `reverse`
    /// sets an old primary's divergent state aside, whole.
    fn rename(
        &self,
        from: &DatasetName,
        to: &DatasetName,
        claim: Claim<'_>,
    ) -> impl Future<Output = Result<(), ZfsError>> + Send;
    /// `zfs clone [-o PROP=VALUE]... SNAPSHOT TO`.
    fn clone_snapshot(
        &self,
        snap: &SnapshotName,
        to: &DatasetName,
        props: &[(&str, &str)],
        claim: Claim<'_>,
    ) -> impl Future<Output = Result<(), ZfsError>> + Send;
    /// `zfs promote DATASET`: the clone takes over its origin's older
    /// snapshots (GUIDs unchanged).
    fn promote(
        &self,
        ds: &DatasetName,
        claim: Claim<'_>,
    ) -> impl Future<Output = Result<(), ZfsError>> + Send;
    /// `zfs create -p -o canmount=off [-o PROP=VALUE]... DATASET`: a
    /// container filesystem (e.g. `POOL/tandem-diverged`, or the scratch
    /// place of `failover --test`, marked with its user property from the
    /// moment it exists); [`Changed::Already`] when it exists (its
    /// properties are then left as they are).
    fn create_container(
        &self,
        ds: &DatasetName,
        props: &[(&str, &str)],
    ) -> impl Future<Output = Result<Changed, ZfsError>> + Send;
    /// `zfs destroy DATASET` of one filesystem or volume: never `-r` or
    /// `-R`, so ZFS itself refuses one with snapshots or children (and a
    /// snapshot's origin keeps its clones). [`Changed::Already`] when it
    /// does not exist. Only for datasets tandem made and has checked it
    /// made (the clones of `failover --test`): DESIGN.md invariant 3.
    fn destroy_dataset(
        &self,
        ds: &DatasetName,
        claim: Claim<'_>,
    ) -> impl Future<Output = Result<Changed, ZfsError>> + Send;
}
