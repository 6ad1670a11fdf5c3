//! Wire messages.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tandem_zfs::BookmarkName;
use tandem_zfs::{
    Capabilities, DatasetName, Generation, Listing, RecvSpec, SendRequest, SnapshotName,
    WireCompress, ZfsError,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol version spoken by this build (2: write claims and the
/// administrative requests of `reverse`; 3: recursive snapshots). Both
/// ends must speak the same one.
pub const VERSION: u32 = 5;
/// Largest control message.
pub const MAX_MESSAGE: usize = 64 << 20;

/// A request from a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// First message: versions and names.
    Hello {
        /// Client's protocol version.
        version: u32,
        /// Client's node name (informative; identity comes from the transport).
        node: String,
    },
    /// The server's ZFS capabilities.
    Capabilities,
    /// Listing of datasets.
    List {
        /// Roots.
        roots: Vec<DatasetName>,
    },
    /// Take snapshots.
    Snapshot {
        /// Names.
        names: Vec<SnapshotName>,
        /// `zfs snapshot -r` of the one name (protocol 3; a peer of an
        /// older protocol refuses the hello, so never sees it).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        recursive: bool,
    },
    /// Destroy one of tandem's snapshots.
    DestroySnapshot {
        /// Name.
        name: SnapshotName,
        /// The generation the peer acts for.
        #[serde(default)]
        claim: Option<Generation>,
        /// `zfs destroy -r`: the name on the dataset and every dataset
        /// below it (protocol 5).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        recursive: bool,
    },
    /// `zfs hold`.
    Hold {
        /// Tag.
        tag: String,
        /// Snapshot.
        snapshot: SnapshotName,
    },
    /// `zfs release`.
    Release {
        /// Tag.
        tag: String,
        /// Snapshot.
        snapshot: SnapshotName,
    },
    /// `zfs hold` of one tag on many snapshots, in one call (protocol 4).
    HoldMany {
        /// Tag.
        tag: String,
        /// Snapshots.
        snapshots: Vec<SnapshotName>,
    },
    /// `zfs release` of one tag from many snapshots (protocol 4).
    ReleaseMany {
        /// Tag.
        tag: String,
        /// Snapshots.
        snapshots: Vec<SnapshotName>,
    },
    /// `zfs rollback` (never `-r`).
    Rollback {
        /// Snapshot.
        snapshot: SnapshotName,
        /// The generation the peer acts for.
        #[serde(default)]
        claim: Option<Generation>,
    },
    /// `zfs set` of an allowed property.
    SetProperty {
        /// Dataset.
        dataset: DatasetName,
        /// Property.
        prop: String,
        /// Value.
        value: String,
        /// The generation the peer acts for.
        #[serde(default)]
        claim: Option<Generation>,
    },
    /// `zfs get` of one property.
    GetProperty {
        /// Dataset.
        dataset: DatasetName,
        /// Property.
        prop: String,
    },
    /// Receive a framed stream that follows the server's `Ready`.
    Receive {
        /// How.
        spec: RecvSpec,
    },
    /// Send a framed stream after `Ready`.
    Send {
        /// What.
        request: SendRequest,
        /// Compression on the wire.
        wire: WireCompress,
    },
    /// `zfs receive -A`.
    ReceiveAbort {
        /// Dataset.
        dataset: DatasetName,
        /// The generation the peer acts for.
        #[serde(default)]
        claim: Option<Generation>,
    },
    /// `zfs send -nP`.
    Estimate {
        /// What.
        request: SendRequest,
    },
    /// `zfs bookmark`.
    Bookmark {
        /// Of this snapshot.
        snapshot: SnapshotName,
        /// Named so.
        bookmark: BookmarkName,
    },
    /// Destroy one of tandem's bookmarks.
    DestroyBookmark {
        /// Name.
        bookmark: BookmarkName,
    },
    /// `zpool sync` of the pools holding these datasets.
    Sync {
        /// Datasets.
        datasets: Vec<DatasetName>,
    },
    /// `zfs rename` of a dataset (`reverse` setting a follower aside).
    Rename {
        /// The dataset.
        from: DatasetName,
        /// Its new name.
        to: DatasetName,
        /// The generation the peer acts for.
        #[serde(default)]
        claim: Option<Generation>,
    },
    /// `zfs clone` of a snapshot (`reverse` rebuilding a follower).
    Clone {
        /// The snapshot.
        snapshot: SnapshotName,
        /// The new dataset.
        to: DatasetName,
        /// `-o` properties (only `readonly`).
        props: Vec<(String, String)>,
        /// The generation the peer acts for.
        #[serde(default)]
        claim: Option<Generation>,
    },
    /// `zfs promote` of a clone.
    Promote {
        /// The clone.
        dataset: DatasetName,
        /// The generation the peer acts for.
        #[serde(default)]
        claim: Option<Generation>,
    },
    /// `zfs create -p -o canmount=off` of a container (the diverged area).
    CreateContainer {
        /// The container.
        dataset: DatasetName,
        /// `-o` properties (none are allowed through `tandem serve`).
        #[serde(default)]
        props: Vec<(String, String)>,
    },
}

impl Request {
    /// Short name for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Capabilities => "capabilities",
            Request::List { .. } => "list",
            Request::Snapshot { .. } => "snapshot",
            Request::DestroySnapshot { .. } => "destroy_snapshot",
            Request::Hold { .. } => "hold",
            Request::Release { .. } => "release",
            Request::HoldMany { .. } => "hold_many",
            Request::ReleaseMany { .. } => "release_many",
            Request::Rollback { .. } => "rollback",
            Request::SetProperty { .. } => "set_property",
            Request::GetProperty { .. } => "get_property",
            Request::Receive { .. } => "receive",
            Request::Send { .. } => "send",
            Request::ReceiveAbort { .. } => "receive_abort",
            Request::Estimate { .. } => "estimate",
            Request::Sync { .. } => "sync",
            Request::Bookmark { .. } => "bookmark",
            Request::DestroyBookmark { .. } => "destroy_bookmark",
            Request::Rename { .. } => "rename",
            Request::Clone { .. } => "clone",
            Request::Promote { .. } => "promote",
            Request::CreateContainer { .. } => "create_container",
        }
    }
}

/// The server's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `Hello`.
    Hello {
        /// Server's protocol version.
        version: u32,
        /// Server's node name.
        node: String,
        /// The identity the server sees for this client.
        peer: String,
    },
    /// Done, nothing to report.
    Ok,
    /// Capabilities.
    Capabilities(Capabilities),
    /// Listing.
    Listing(Listing),
    /// For idempotent operations: whether something changed.
    Changed {
        /// True if something changed.
        changed: bool,
    },
    /// For `HoldMany` and `ReleaseMany`: per snapshot, in order, whether
    /// something changed, or why it failed.
    ChangedMany {
        /// One per snapshot.
        results: Vec<Result<bool, WireError>>,
    },
    /// A property value.
    Property {
        /// Value, None for `-`.
        value: Option<String>,
    },
    /// An estimate.
    Estimate {
        /// Bytes, None if unknown.
        bytes: Option<u64>,
    },
    /// The stream may start (after `Receive`) or follows (after `Send`).
    Ready,
    /// A stream finished.
    Done {
        /// Raw bytes.
        raw: u64,
        /// Wire bytes.
        wire: u64,
    },
    /// Failed.
    Error(WireError),
}

/// An error as carried on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireError {
    /// `Denied`, `Protocol`, `Stream`, or a [`ZfsError`] variant name.
    pub kind: String,
    /// The command or request that failed.
    pub cmd: String,
    /// The message.
    pub msg: String,
}

impl WireError {
    /// A request the server cannot make sense of.
    pub fn protocol(msg: impl Into<String>) -> Self {
        Self {
            kind: "Protocol".into(),
            cmd: String::new(),
            msg: msg.into(),
        }
    }

    /// From a ZFS error on the server.
    pub fn zfs(e: &ZfsError) -> Self {
        let (cmd, msg) = e.parts();
        Self {
            kind: e.kind().to_owned(),
            cmd,
            msg,
        }
    }

    /// Back into a [`ZfsError`] on the client, prefixed with the peer.
    pub fn into_zfs(self, peer: &str) -> ZfsError {
        let cmd = if self.cmd.is_empty() {
            format!("[{peer}] tandem serve")
        } else {
            self.cmd
        };
        match self.kind.as_str() {
            "Denied" => ZfsError::PermissionDenied {
                cmd,
                msg: format!("refused by tandem serve on {peer}: {}", self.msg),
            },
            "Stream" => ZfsError::StreamCorrupt { cmd, msg: self.msg },
            k => ZfsError::from_kind(k, cmd, self.msg),
        }
    }
}

/// Transport and protocol failures.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The connection failed.
    #[error("peer connection: {0}")]
    Io(#[from] std::io::Error),
    /// The connection closed.
    #[error("peer closed the connection")]
    Closed,
    /// A message was not valid.
    #[error("bad message from peer: {0}")]
    Bad(String),
}

/// Writes one message: u32 LE length, then JSON.
pub async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), ProtoError> {
    let body = serde_json::to_vec(msg).map_err(|e| ProtoError::Bad(e.to_string()))?;
    w.write_all(&(body.len() as u32).to_le_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one message; `Ok(None)` on a clean end of stream before a message.
pub async fn read_msg<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<Option<T>, ProtoError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_MESSAGE {
        return Err(ProtoError::Bad(format!(
            "message of {n} bytes exceeds {MAX_MESSAGE}"
        )));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtoError::Closed
        } else {
            e.into()
        }
    })?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| ProtoError::Bad(e.to_string()))
}
