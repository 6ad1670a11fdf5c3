//! # tandem-zfs
//!
//! Everything tandem knows about ZFS, and nothing about replication:
//!
//! - [`name`]: validated dataset, snapshot and hold-tag names (ZFS's own rules),
//!   so an invalid or hostile name is refused before any command runs;
//! - [`model`] and [`parse`]: the listing of one side (datasets, snapshots,
//!   GUIDs, createtxg) and the pure parsers that build it from `zfs` output;
//! - [`error`]: `zfs`'s stderr classified once into typed errors;
//! - [`process`]: the single place where processes start (argument vectors,
//!   locally or through ssh, stderr drained, every call timed);
//! - [`caps`]: per-node capability probing (OpenZFS 2.x vs zfs-fuse);
//! - [`stream`]: send/receive byte streams, whatever runs them;
//! - [`ops`]: the [`Zfs`] trait (every operation tandem makes on a node,
//!   replication and administration) and its request types;
//! - [`cli`]: its `zfs(8)` backend, locally or through ssh.
//!
//! The replication planner in `tandem-repl` sees only these types.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod caps;
pub mod cli;
pub mod error;
pub mod model;
pub mod name;
pub mod ops;
pub mod parse;
pub mod process;
pub mod stream;

pub use caps::Capabilities;
pub use cli::CliZfs;
pub use error::ZfsError;
pub use model::{
    Bookmark, Dataset, DatasetKind, Generation, Guid, Listing, Snapshot, GENERATION_PROPERTY,
};
pub use name::{BookmarkName, DatasetName, HoldTag, NameError, SnapshotName};
pub use ops::{Changed, Claim, RecvSpec, SendBase, SendFlags, SendRequest, WireCompress, Zfs};
pub use process::{SshTarget, Transport, ZfsProcess};
pub use stream::{DirectInput, RecvStream, SendStream, StreamHandle};
