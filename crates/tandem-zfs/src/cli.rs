//! The [`Zfs`] trait and its backend over the `zfs` command line.

use std::future::Future;
use std::process::Stdio;

use tokio::sync::OnceCell;

use crate::caps::Capabilities;
use crate::error::ZfsError;
use crate::exec::{Invocation, Transport};
use crate::model::Listing;
use crate::name::{check_user_property, BookmarkName, DatasetName, HoldTag, SnapshotName};
use crate::parse::{parse_listing, parse_send_estimate, LISTING_PROPS};
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
}

/// The ZFS operations tandem needs on one node. Implemented by [`CliZfs`]
/// (the `zfs` command, locally or over ssh); later by a peer agent.
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
    /// Destroys one snapshot (never a dataset: the type makes that impossible).
    fn destroy_snapshot(
        &self,
        name: &SnapshotName,
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
    /// `zfs rollback` to the dataset's newest snapshot (never `-r`).
    fn rollback(&self, snap: &SnapshotName) -> impl Future<Output = Result<(), ZfsError>> + Send;
    /// `zfs set`.
    fn set_property(
        &self,
        ds: &DatasetName,
        prop: &str,
        value: &str,
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
    fn receive(&self, spec: &RecvSpec)
        -> impl Future<Output = Result<RecvStream, ZfsError>> + Send;
    /// `zfs receive -A`: discards a partial resumable receive.
    fn receive_abort(
        &self,
        ds: &DatasetName,
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
}

/// [`Zfs`] through the `zfs` program.
///
/// On legacy ZFS (zfs-fuse) every call that changes the pool is serialized:
/// zfs-fuse deadlocks when datasets are created or mounted concurrently
/// (reproduced with four parallel `zfs create` loops), and a receive mounts.
#[derive(Debug)]
pub struct CliZfs {
    node: String,
    transport: Transport,
    zfs: String,
    zpool: String,
    caps: OnceCell<Capabilities>,
    serial: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl CliZfs {
    /// `zfs` (at path `zfs`) on `node` through `transport`.
    pub fn new(node: &str, transport: Transport, zfs: &str) -> Self {
        Self {
            node: node.to_owned(),
            transport,
            zfs: zfs.to_owned(),
            zpool: zfs
                .strip_suffix("zfs")
                .map(|p| format!("{p}zpool"))
                .unwrap_or_else(|| "zpool".into()),
            caps: OnceCell::new(),
            serial: Default::default(),
        }
    }

    /// Uses `path` for `zpool` (default: beside `zfs`).
    pub fn with_zpool(mut self, path: &str) -> Self {
        self.zpool = path.to_owned();
        self
    }

    /// Serializes pool-changing calls where ZFS needs it (legacy zfs-fuse).
    async fn serial(&self) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ZfsError> {
        if self.caps().await?.serialize_changes() {
            Ok(Some(self.serial.clone().lock_owned().await))
        } else {
            Ok(None)
        }
    }

    fn inv(&self, args: Vec<String>) -> Invocation {
        Invocation::new(&self.node, &self.transport, &self.zfs, args)
    }

    async fn caps(&self) -> Result<&Capabilities, ZfsError> {
        self.caps
            .get_or_try_init(|| async {
                let (out, err, code) = self.inv(vec!["version".into()]).output_raw().await?;
                if code == Some(0) {
                    if let Some(c) = Capabilities::from_version_output(&out) {
                        return Ok(c);
                    }
                }
                if err.contains("unrecognized command") {
                    tracing::info!(node = %self.node, missing = ?Capabilities::legacy().missing(), "legacy ZFS (zfs-fuse): degraded mode");
                    return Ok(Capabilities::legacy());
                }
                Err(ZfsError::classify(&self.inv(vec!["version".into()]).display(), code, &err, matches!(self.transport, Transport::Ssh(_))))
            })
            .await
    }

    fn unsupported(&self, caps: &Capabilities, what: &str) -> ZfsError {
        ZfsError::Unsupported {
            node: self.node.clone(),
            what: what.to_owned(),
            version: caps.version.clone(),
        }
    }

    /// `zfs rename FROM TO` of a dataset (never a snapshot). Used only by
    /// `reverse`, to set an old primary's divergent state aside; not part
    /// of [`Zfs`], so no peer can ask for it.
    ///
    /// zfs-fuse refuses to rename a mounted filesystem that was written to
    /// ("dataset is busy") although nothing uses it; then the filesystem is
    /// unmounted (never forced: a real user keeps it busy and the rename
    /// fails), renamed, and mounted at its new place.
    pub async fn rename(&self, from: &DatasetName, to: &DatasetName) -> Result<(), ZfsError> {
        let _serial = self.serial().await?;
        let rename = vec!["rename".to_string(), from.to_string(), to.to_string()];
        let busy = |e: &ZfsError| e.to_string().contains("busy");
        match self.inv(rename.clone()).output().await {
            Ok(_) => Ok(()),
            Err(e) if busy(&e) => {
                tracing::debug!(%from, error = %e, "rename: busy; unmounting first");
                // zfs-fuse may report the mount busy for a moment after
                // writes; a few tries, never a forced unmount...
                self.output_retrying(vec!["unmount".into(), from.to_string()], 10, |_| true)
                    .await?;
                // ...and its unmount takes a moment to release the dataset.
                self.output_retrying(rename, 11, busy).await?;
                if let Err(e) = self
                    .inv(vec!["mount".into(), to.to_string()])
                    .output()
                    .await
                {
                    tracing::warn!(%to, error = %e, "renamed, but cannot mount it at its new place");
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs `zfs ARGS` up to `tries` times, waiting 100 ms, 200 ms, …
    /// between tries, while `retry` calls the error passing.
    async fn output_retrying(
        &self,
        args: Vec<String>,
        tries: u64,
        retry: impl Fn(&ZfsError) -> bool,
    ) -> Result<String, ZfsError> {
        let mut attempt = 0u64;
        loop {
            match self.inv(args.clone()).output().await {
                Ok(out) => return Ok(out),
                Err(e) if attempt + 1 < tries && retry(&e) => {
                    attempt += 1;
                    tracing::debug!(args = ?args, error = %e, "retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `zfs clone [-o PROP=VALUE]... SNAPSHOT TO`.
    pub async fn clone_snapshot(
        &self,
        snap: &SnapshotName,
        to: &DatasetName,
        props: &[(&str, &str)],
    ) -> Result<(), ZfsError> {
        let _serial = self.serial().await?;
        let mut args = vec!["clone".to_string()];
        for (k, v) in props {
            args.push("-o".into());
            args.push(format!("{k}={v}"));
        }
        args.push(snap.to_string());
        args.push(to.to_string());
        self.inv(args).output().await.map(|_| ())
    }

    /// `zfs promote DATASET`: the clone takes over its origin's older
    /// snapshots (GUIDs unchanged).
    pub async fn promote(&self, ds: &DatasetName) -> Result<(), ZfsError> {
        let _serial = self.serial().await?;
        self.inv(vec!["promote".into(), ds.to_string()])
            .output()
            .await
            .map(|_| ())
    }

    /// `zfs create -p -o canmount=off DATASET`: a container filesystem
    /// (e.g. `POOL/tandem-diverged`); nothing when it exists.
    pub async fn create_container(&self, ds: &DatasetName) -> Result<Changed, ZfsError> {
        let _serial = self.serial().await?;
        let r = self
            .inv(vec![
                "create".into(),
                "-p".into(),
                "-o".into(),
                "canmount=off".into(),
                ds.to_string(),
            ])
            .output()
            .await;
        match r {
            Ok(_) => Ok(Changed::Done),
            Err(e) if e.to_string().contains("already exists") => Ok(Changed::Already),
            Err(e) => Err(e),
        }
    }

    fn send_args(
        &self,
        caps: &Capabilities,
        req: &SendRequest,
        dry: bool,
    ) -> Result<Vec<String>, ZfsError> {
        let mut a = vec!["send".to_owned()];
        if dry {
            a.push("-nP".into());
        }
        match req {
            SendRequest::Resume { token } => {
                if !caps.resume {
                    return Err(self.unsupported(caps, "resuming a send (send -t)"));
                }
                a.push("-t".into());
                a.push(token.clone());
            }
            SendRequest::Snapshot {
                snapshot,
                from,
                intermediates,
                flags,
            } => {
                if flags.raw {
                    if !caps.send_raw {
                        return Err(self.unsupported(caps, "raw sends (send -w)"));
                    }
                    a.push("-w".into());
                }
                if flags.compressed || flags.large_blocks || flags.embedded {
                    if !caps.send_compressed {
                        return Err(self.unsupported(caps, "send -c/-L/-e"));
                    }
                    if flags.compressed {
                        a.push("-c".into());
                    }
                    if flags.large_blocks {
                        a.push("-L".into());
                    }
                    if flags.embedded {
                        a.push("-e".into());
                    }
                }
                match from {
                    Some(SendBase::Snapshot(base)) => {
                        a.push(if *intermediates { "-I" } else { "-i" }.into());
                        a.push(base.to_string());
                    }
                    Some(SendBase::Bookmark(bm)) => {
                        if !caps.bookmarks {
                            return Err(self.unsupported(caps, "sends from a bookmark"));
                        }
                        a.push("-i".into());
                        a.push(bm.to_string());
                    }
                    None => {}
                }
                a.push(snapshot.to_string());
            }
        }
        Ok(a)
    }
}

/// Maps "already so" errors of idempotent operations to [`Changed::Already`].
fn idempotent(
    r: Result<String, ZfsError>,
    already: impl Fn(&ZfsError) -> bool,
) -> Result<Changed, ZfsError> {
    match r {
        Ok(_) => Ok(Changed::Done),
        Err(e) if already(&e) => Ok(Changed::Already),
        Err(e) => Err(e),
    }
}

impl Zfs for CliZfs {
    fn node(&self) -> &str {
        &self.node
    }

    async fn capabilities(&self) -> Result<Capabilities, ZfsError> {
        self.caps().await.cloned()
    }

    async fn list(&self, roots: &[DatasetName]) -> Result<Listing, ZfsError> {
        if roots.is_empty() {
            return Ok(Listing::default());
        }
        let caps = self.caps().await?;
        let mut props: Vec<&str> = LISTING_PROPS.to_vec();
        if caps.written {
            props.push("written");
        }
        if caps.resume {
            props.push("receive_resume_token");
        }
        let mut args: Vec<String> = ["get", "-H", "-p", "-o", "name,property,value", "-d", "1"]
            .map(String::from)
            .to_vec();
        if caps.bookmarks {
            args.push("-t".into());
            args.push("filesystem,volume,snapshot,bookmark".into());
        }
        args.push(props.join(","));
        args.extend(roots.iter().map(|r| r.to_string()));
        let inv = self.inv(args);
        let (out, err, code) = inv.output_raw().await?;
        if code != Some(0) {
            // zfs get prints what it can and complains about each missing root.
            let only_missing = !err.trim().is_empty()
                && err
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .all(|l| l.contains("dataset does not exist"));
            if !only_missing {
                return Err(ZfsError::classify(
                    &inv.display(),
                    code,
                    &err,
                    inv.via_ssh(),
                ));
            }
        }
        parse_listing(&out).map_err(|e| ZfsError::Parse {
            cmd: inv.display(),
            source: e,
        })
    }

    async fn snapshot(&self, names: &[SnapshotName]) -> Result<(), ZfsError> {
        if names.is_empty() {
            return Ok(());
        }
        let _serial = self.serial().await?;
        let caps = self.caps().await?;
        if caps.multi_snapshot {
            let mut a = vec!["snapshot".to_owned()];
            a.extend(names.iter().map(|n| n.to_string()));
            self.inv(a).output().await?;
        } else {
            for n in names {
                self.inv(vec!["snapshot".into(), n.to_string()])
                    .output()
                    .await?;
            }
        }
        Ok(())
    }

    async fn destroy_snapshot(&self, name: &SnapshotName) -> Result<Changed, ZfsError> {
        let _serial = self.serial().await?;
        idempotent(
            self.inv(vec!["destroy".into(), name.to_string()])
                .output()
                .await,
            ZfsError::is_not_found,
        )
    }

    async fn hold(&self, tag: &HoldTag, snap: &SnapshotName) -> Result<Changed, ZfsError> {
        let _serial = self.serial().await?;
        let r = self
            .inv(vec!["hold".into(), tag.to_string(), snap.to_string()])
            .output()
            .await;
        idempotent(r, |e| matches!(e, ZfsError::HoldExists { .. }))
    }

    async fn release(&self, tag: &HoldTag, snap: &SnapshotName) -> Result<Changed, ZfsError> {
        let _serial = self.serial().await?;
        let r = self
            .inv(vec!["release".into(), tag.to_string(), snap.to_string()])
            .output()
            .await;
        idempotent(r, |e| {
            matches!(e, ZfsError::HoldNotFound { .. }) || e.is_not_found()
        })
    }

    async fn rollback(&self, snap: &SnapshotName) -> Result<(), ZfsError> {
        let _serial = self.serial().await?;
        self.inv(vec!["rollback".into(), snap.to_string()])
            .output()
            .await
            .map(|_| ())
    }

    async fn set_property(
        &self,
        ds: &DatasetName,
        prop: &str,
        value: &str,
    ) -> Result<(), ZfsError> {
        let _serial = self.serial().await?;
        if prop.contains(':') {
            check_user_property(prop)?;
        } else if !prop.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(crate::name::NameError {
                input: prop.to_owned(),
                reason: "not a property name".into(),
            }
            .into());
        }
        self.inv(vec![
            "set".into(),
            format!("{prop}={value}"),
            ds.to_string(),
        ])
        .output()
        .await
        .map(|_| ())
    }

    async fn get_property(&self, ds: &DatasetName, prop: &str) -> Result<Option<String>, ZfsError> {
        let out = self
            .inv(vec![
                "get".into(),
                "-H".into(),
                "-p".into(),
                "-o".into(),
                "value".into(),
                prop.to_owned(),
                ds.to_string(),
            ])
            .output()
            .await?;
        let v = out.trim_end_matches('\n').to_owned();
        Ok((v != "-").then_some(v))
    }

    async fn send(&self, req: &SendRequest) -> Result<SendStream, ZfsError> {
        let caps = self.caps().await?;
        let args = self.send_args(caps, req, false)?;
        SendStream::from_process(self.inv(args).spawn(Stdio::null(), Stdio::piped())?)
    }

    async fn receive(&self, spec: &RecvSpec) -> Result<RecvStream, ZfsError> {
        let caps = self.caps().await?;
        let mut a = vec!["receive".to_owned()];
        if spec.resumable {
            if !caps.resume {
                return Err(self.unsupported(caps, "resumable receive (receive -s)"));
            }
            a.push("-s".into());
        }
        if spec.unmounted || !spec.set.is_empty() || !spec.exclude.is_empty() {
            if !caps.recv_options {
                return Err(self.unsupported(caps, "receive -u/-o/-x"));
            }
            if spec.unmounted {
                a.push("-u".into());
            }
            for (k, v) in &spec.set {
                a.push("-o".into());
                a.push(format!("{k}={v}"));
            }
            for k in &spec.exclude {
                a.push("-x".into());
                a.push(k.clone());
            }
        }
        let target = spec.target.as_ref().ok_or_else(|| crate::name::NameError {
            input: String::new(),
            reason: "receive without a target".into(),
        })?;
        a.push(target.to_string());
        let serial = self.serial().await?;
        let mut p = self.inv(a).spawn(Stdio::piped(), Stdio::null())?;
        if let Some(g) = serial {
            p.keep_until_exit(Box::new(g));
        }
        RecvStream::from_process(p)
    }

    async fn receive_abort(&self, ds: &DatasetName) -> Result<Changed, ZfsError> {
        let caps = self.caps().await?;
        if !caps.resume {
            return Ok(Changed::Already);
        }
        let r = self
            .inv(vec!["receive".into(), "-A".into(), ds.to_string()])
            .output()
            .await;
        idempotent(r, |e| {
            e.is_not_found()
                || e.to_string()
                    .contains("does not have any resumable receive state")
        })
    }

    async fn estimate(&self, req: &SendRequest) -> Result<Option<u64>, ZfsError> {
        let caps = self.caps().await?;
        if !caps.send_estimate {
            return Ok(None);
        }
        let args = self.send_args(caps, req, true)?;
        let (out, err, code) = self.inv(args.clone()).output_raw().await?;
        if code != Some(0) {
            return Err(ZfsError::classify(
                &self.inv(args).display(),
                code,
                &err,
                matches!(self.transport, Transport::Ssh(_)),
            ));
        }
        // OpenZFS prints -nP output on stdout (older versions on stderr).
        Ok(parse_send_estimate(&out).or_else(|| parse_send_estimate(&err)))
    }

    async fn sync(&self, datasets: &[DatasetName]) -> Result<(), ZfsError> {
        if datasets.is_empty() || !self.caps().await?.written {
            return Ok(());
        }
        let mut pools: Vec<String> = datasets.iter().map(|d| d.pool().to_owned()).collect();
        pools.sort();
        pools.dedup();
        let mut a = vec!["sync".to_owned()];
        a.extend(pools);
        Invocation::new(&self.node, &self.transport, &self.zpool, a)
            .output()
            .await
            .map(|_| ())
    }

    async fn bookmark(&self, snap: &SnapshotName, bm: &BookmarkName) -> Result<Changed, ZfsError> {
        if !self.caps().await?.bookmarks {
            return Ok(Changed::Already);
        }
        let r = self
            .inv(vec!["bookmark".into(), snap.to_string(), bm.to_string()])
            .output()
            .await;
        idempotent(r, |e| e.to_string().contains("already exists"))
    }

    async fn destroy_bookmark(&self, bm: &BookmarkName) -> Result<Changed, ZfsError> {
        idempotent(
            self.inv(vec!["destroy".into(), bm.to_string()])
                .output()
                .await,
            ZfsError::is_not_found,
        )
    }
}
