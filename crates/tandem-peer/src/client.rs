//! [`PeerZfs`]: the [`Zfs`] trait spoken to a remote `tandem serve`.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use tandem_stream::{Counters, EncodeOptions};
use tandem_zfs::BookmarkName;
use tandem_zfs::{
    Capabilities, Changed, Claim, DatasetName, HoldTag, Listing, RecvSpec, RecvStream, SendRequest,
    SendStream, SnapshotName, SshTarget, StreamHandle, WireCompress, Zfs, ZfsError,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, OnceCell};

use crate::proto::{read_msg, write_msg, ProtoError, Request, Response, VERSION};
use crate::server::mode;

/// One open connection to a peer.
pub struct Connection {
    r: Pin<Box<dyn AsyncRead + Send>>,
    w: Pin<Box<dyn AsyncWrite + Send>>,
    _child: Option<tokio::process::Child>,
}

impl Connection {
    /// A connection over any byte streams (tests, TLS).
    pub fn new(r: impl AsyncRead + Send + 'static, w: impl AsyncWrite + Send + 'static) -> Self {
        Self {
            r: Box::pin(r),
            w: Box::pin(w),
            _child: None,
        }
    }
}

/// Opens connections to one peer.
pub trait Connector: Send + Sync + 'static {
    /// A new, not yet greeted connection.
    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<Connection, ZfsError>> + Send + '_>>;
    /// How to describe the peer in messages.
    fn describe(&self) -> String;
}

/// `ssh HOST TANDEM serve --stdio [ARGS]`.
#[derive(Debug, Clone)]
pub struct SshConnector {
    /// How to reach the host.
    pub target: SshTarget,
    /// The remote command and its arguments (`tandem serve --stdio ...`).
    pub remote: Vec<String>,
}

impl Connector for SshConnector {
    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<Connection, ZfsError>> + Send + '_>> {
        Box::pin(async move {
            let program = self
                .remote
                .first()
                .cloned()
                .unwrap_or_else(|| "tandem".into());
            let inv = tandem_zfs::process::Invocation::new(
                &self.target.host,
                &tandem_zfs::Transport::Ssh(self.target.clone()),
                &program,
                self.remote[1..].to_vec(),
            );
            let mut p = inv.spawn(Stdio::piped(), Stdio::piped())?;
            let (Some(r), Some(w)) = (p.take_stdout(), p.take_stdin()) else {
                return Err(ZfsError::Io {
                    cmd: inv.display(),
                    source: std::io::Error::other("no pipes"),
                });
            };
            // The process handle (and its stderr drain) lives as long as the connection.
            let conn = Connection {
                r: Box::pin(r),
                w: Box::pin(w),
                _child: None,
            };
            tokio::spawn(async move {
                if let Err(e) = p.wait().await {
                    tracing::debug!("tandem serve over ssh ended: {e}");
                }
            });
            Ok(conn)
        })
    }

    fn describe(&self) -> String {
        format!("ssh {} {}", self.target.host, self.remote.join(" "))
    }
}

/// A remote node's ZFS, through its `tandem serve`.
pub struct PeerZfs {
    node: String,
    local: String,
    connector: Arc<dyn Connector>,
    idle: Arc<Mutex<Vec<Connection>>>,
    caps: OnceCell<Capabilities>,
    /// Compression for streams this node sends us (pull).
    pub pull_wire: WireCompress,
}

impl std::fmt::Debug for PeerZfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PeerZfs({} via {})",
            self.node,
            self.connector.describe()
        )
    }
}

fn proto_err(node: &str, e: ProtoError) -> ZfsError {
    ZfsError::Ssh {
        cmd: format!("[{node}] tandem serve"),
        msg: e.to_string(),
    }
}

impl PeerZfs {
    /// `node` is the peer's name, `local` ours.
    pub fn new(node: &str, local: &str, connector: Arc<dyn Connector>) -> Self {
        Self {
            node: node.to_owned(),
            local: local.to_owned(),
            connector,
            idle: Arc::default(),
            caps: OnceCell::new(),
            pull_wire: WireCompress::default(),
        }
    }

    async fn take(&self) -> Result<Connection, ZfsError> {
        if let Some(c) = self.idle.lock().await.pop() {
            return Ok(c);
        }
        let mut c = self.connector.connect().await?;
        // A refused connection (an untrusted certificate, an unknown peer)
        // surfaces here, as the first exchange failing.
        let refused = |e: ProtoError| {
            ZfsError::Ssh {
            cmd: format!("[{}] {}", self.node, self.connector.describe()),
            msg: format!(
                "the peer refused the connection ({e}); check that it trusts our certificate or key and lists this node in [[serve.peers]]"
            ),
        }
        };
        write_msg(
            &mut c.w,
            &Request::Hello {
                version: VERSION,
                node: self.local.clone(),
            },
        )
        .await
        .map_err(refused)?;
        match read_msg::<_, Response>(&mut c.r).await {
            Ok(Some(Response::Hello { node, peer, .. })) => {
                tracing::debug!(peer = %self.node, remote_node = %node, as_identity = %peer, "connected to tandem serve");
                Ok(c)
            }
            Ok(Some(Response::Error(e))) => Err(e.into_zfs(&self.node)),
            Ok(Some(other)) => Err(proto_err(
                &self.node,
                ProtoError::Bad(format!("unexpected {other:?} to hello")),
            )),
            Ok(None) => Err(refused(ProtoError::Closed)),
            Err(e) => Err(refused(e)),
        }
    }

    async fn call(&self, req: Request) -> Result<Response, ZfsError> {
        let mut c = self.take().await?;
        write_msg(&mut c.w, &req)
            .await
            .map_err(|e| proto_err(&self.node, e))?;
        match read_msg::<_, Response>(&mut c.r).await {
            Ok(Some(Response::Error(e))) => {
                self.idle.lock().await.push(c);
                Err(e.into_zfs(&self.node))
            }
            Ok(Some(r)) => {
                self.idle.lock().await.push(c);
                Ok(r)
            }
            Ok(None) => Err(proto_err(&self.node, ProtoError::Closed)),
            Err(e) => Err(proto_err(&self.node, e)),
        }
    }

    fn unexpected(&self, r: Response) -> ZfsError {
        proto_err(
            &self.node,
            ProtoError::Bad(format!("unexpected reply {r:?}")),
        )
    }

    async fn changed(&self, req: Request) -> Result<Changed, ZfsError> {
        match self.call(req).await? {
            Response::Changed { changed: true } => Ok(Changed::Done),
            Response::Changed { changed: false } => Ok(Changed::Already),
            r => Err(self.unexpected(r)),
        }
    }

    /// A `HoldMany`/`ReleaseMany`: one result per snapshot; a failure of
    /// the call itself is every snapshot's.
    async fn many(&self, req: Request) -> Vec<Result<Changed, ZfsError>> {
        let n = match &req {
            Request::HoldMany { snapshots, .. } | Request::ReleaseMany { snapshots, .. } => {
                snapshots.len()
            }
            _ => 0,
        };
        if n == 0 {
            return Vec::new();
        }
        match self.call(req).await {
            Ok(Response::ChangedMany { results }) if results.len() == n => results
                .into_iter()
                .map(|r| match r {
                    Ok(true) => Ok(Changed::Done),
                    Ok(false) => Ok(Changed::Already),
                    Err(e) => Err(e.into_zfs(&self.node)),
                })
                .collect(),
            Ok(r) => {
                let e = self.unexpected(r);
                let msg = e.to_string();
                std::iter::once(Err(e))
                    .chain((1..n).map(|_| Err(proto_err(&self.node, ProtoError::Bad(msg.clone())))))
                    .collect()
            }
            Err(e) => {
                let w = crate::proto::WireError::zfs(&e);
                std::iter::once(Err(e))
                    .chain((1..n).map(|_| Err(w.clone().into_zfs(&self.node))))
                    .collect()
            }
        }
    }

    async fn unit(&self, req: Request) -> Result<(), ZfsError> {
        match self.call(req).await? {
            Response::Ok => Ok(()),
            r => Err(self.unexpected(r)),
        }
    }

    /// Sends `req` and waits for `Ready`; the connection then carries a stream.
    async fn start_stream(&self, req: Request) -> Result<Connection, ZfsError> {
        let mut c = self.take().await?;
        write_msg(&mut c.w, &req)
            .await
            .map_err(|e| proto_err(&self.node, e))?;
        match read_msg::<_, Response>(&mut c.r).await {
            Ok(Some(Response::Ready)) => Ok(c),
            Ok(Some(Response::Error(e))) => {
                self.idle.lock().await.push(c);
                Err(e.into_zfs(&self.node))
            }
            Ok(Some(r)) => Err(self.unexpected(r)),
            Ok(None) => Err(proto_err(&self.node, ProtoError::Closed)),
            Err(e) => Err(proto_err(&self.node, e)),
        }
    }
}

async fn finish(
    node: String,
    mut c: Connection,
    idle: Arc<Mutex<Vec<Connection>>>,
    stream_err: Option<String>,
) -> Result<(), ZfsError> {
    match read_msg::<_, Response>(&mut c.r).await {
        Ok(Some(Response::Done { raw, wire })) => {
            tracing::debug!(peer = %node, raw, wire, "stream done");
            if stream_err.is_none() {
                idle.lock().await.push(c);
            }
            Ok(())
        }
        Ok(Some(Response::Error(e))) => Err(e.into_zfs(&node)),
        Ok(Some(r)) => Err(proto_err(
            &node,
            ProtoError::Bad(format!("unexpected reply {r:?}")),
        )),
        Ok(None) | Err(_) => Err(ZfsError::StreamCorrupt {
            cmd: format!("[{node}] tandem serve"),
            msg: stream_err
                .unwrap_or_else(|| "the peer closed the connection without a result".into()),
        }),
    }
}

enum Input {
    Direct(Pin<Box<dyn AsyncRead + Send>>),
    Duplex(tokio::io::BufReader<tokio::io::DuplexStream>),
}

/// Waits for the caller's choice: a reader handed over through `direct`,
/// or bytes (or the end) arriving through the duplex. A handed-over reader
/// wins: it is sent before the writer is closed.
async fn input(
    mut direct: tokio::sync::oneshot::Receiver<Pin<Box<dyn AsyncRead + Send>>>,
    duplex: tokio::io::DuplexStream,
) -> Input {
    use tokio::io::AsyncBufReadExt;
    let mut duplex = tokio::io::BufReader::with_capacity(1 << 20, duplex);
    let mut offered = true;
    loop {
        tokio::select! {
            biased;
            r = &mut direct, if offered => match r {
                Ok(from) => return Input::Direct(from),
                Err(_) => offered = false,
            },
            _ = async { duplex.fill_buf().await.map(|b| b.len()) } => {
                if let Ok(from) = direct.try_recv() {
                    return Input::Direct(from);
                }
                return Input::Duplex(duplex);
            }
        }
    }
}

impl Zfs for PeerZfs {
    fn node(&self) -> &str {
        &self.node
    }

    async fn capabilities(&self) -> Result<Capabilities, ZfsError> {
        self.caps
            .get_or_try_init(|| async {
                match self.call(Request::Capabilities).await? {
                    Response::Capabilities(c) => Ok(c),
                    r => Err(self.unexpected(r)),
                }
            })
            .await
            .cloned()
    }

    async fn list(&self, roots: &[DatasetName]) -> Result<Listing, ZfsError> {
        match self
            .call(Request::List {
                roots: roots.to_vec(),
            })
            .await?
        {
            Response::Listing(l) => Ok(l),
            r => Err(self.unexpected(r)),
        }
    }

    async fn snapshot(&self, names: &[SnapshotName]) -> Result<(), ZfsError> {
        self.unit(Request::Snapshot {
            names: names.to_vec(),
            recursive: false,
        })
        .await
    }

    async fn snapshot_tree(&self, root: &SnapshotName) -> Result<(), ZfsError> {
        self.unit(Request::Snapshot {
            names: vec![root.clone()],
            recursive: true,
        })
        .await
    }

    async fn destroy_snapshot(
        &self,
        name: &SnapshotName,
        claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        self.changed(Request::DestroySnapshot {
            name: name.clone(),
            claim: claim.cloned(),
            recursive: false,
        })
        .await
    }

    async fn destroy_snapshot_tree(
        &self,
        root: &SnapshotName,
        claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        self.changed(Request::DestroySnapshot {
            name: root.clone(),
            claim: claim.cloned(),
            recursive: true,
        })
        .await
    }

    async fn hold(&self, tag: &HoldTag, snap: &SnapshotName) -> Result<Changed, ZfsError> {
        self.changed(Request::Hold {
            tag: tag.to_string(),
            snapshot: snap.clone(),
        })
        .await
    }

    async fn release(&self, tag: &HoldTag, snap: &SnapshotName) -> Result<Changed, ZfsError> {
        self.changed(Request::Release {
            tag: tag.to_string(),
            snapshot: snap.clone(),
        })
        .await
    }

    async fn hold_many(
        &self,
        tag: &HoldTag,
        snaps: &[SnapshotName],
    ) -> Vec<Result<Changed, ZfsError>> {
        self.many(Request::HoldMany {
            tag: tag.to_string(),
            snapshots: snaps.to_vec(),
        })
        .await
    }

    async fn release_many(
        &self,
        tag: &HoldTag,
        snaps: &[SnapshotName],
    ) -> Vec<Result<Changed, ZfsError>> {
        self.many(Request::ReleaseMany {
            tag: tag.to_string(),
            snapshots: snaps.to_vec(),
        })
        .await
    }

    async fn rollback(&self, snap: &SnapshotName, claim: Claim<'_>) -> Result<(), ZfsError> {
        self.unit(Request::Rollback {
            snapshot: snap.clone(),
            claim: claim.cloned(),
        })
        .await
    }

    async fn set_property(
        &self,
        ds: &DatasetName,
        prop: &str,
        value: &str,
        claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        self.unit(Request::SetProperty {
            dataset: ds.clone(),
            prop: prop.to_owned(),
            value: value.to_owned(),
            claim: claim.cloned(),
        })
        .await
    }

    async fn get_property(&self, ds: &DatasetName, prop: &str) -> Result<Option<String>, ZfsError> {
        match self
            .call(Request::GetProperty {
                dataset: ds.clone(),
                prop: prop.to_owned(),
            })
            .await?
        {
            Response::Property { value } => Ok(value),
            r => Err(self.unexpected(r)),
        }
    }

    async fn send(&self, req: &SendRequest) -> Result<SendStream, ZfsError> {
        let c = self
            .start_stream(Request::Send {
                request: req.clone(),
                wire: self.pull_wire,
            })
            .await?;
        let (reader, mut writer) = tokio::io::duplex(4 << 20);
        let (node, idle) = (self.node.clone(), self.idle.clone());
        let handle =
            StreamHandle::task(format!("[{}] tandem serve: send", self.node), async move {
                let mut c = c;
                let r = tandem_stream::decode(&mut c.r, &mut writer, Arc::new(Counters::default()))
                    .await;
                let _ = writer.shutdown().await;
                drop(writer);
                let err = r.err().map(|e| e.to_string());
                if let Some(e) = &err {
                    return Err(ZfsError::StreamCorrupt {
                        cmd: format!("[{node}] tandem serve: send"),
                        msg: e.clone(),
                    });
                }
                finish(node, c, idle, err).await
            });
        Ok(SendStream {
            reader: Box::pin(reader),
            handle,
        })
    }

    async fn receive(&self, spec: &RecvSpec) -> Result<RecvStream, ZfsError> {
        let c = self
            .start_stream(Request::Receive { spec: spec.clone() })
            .await?;
        let (writer, reader) = tokio::io::duplex(4 << 20);
        let (direct, direct_rx) = tokio::sync::oneshot::channel();
        let (node, idle, wire) = (self.node.clone(), self.idle.clone(), spec.wire);
        let handle = StreamHandle::task(
            format!(
                "[{}] tandem serve: receive into {}",
                self.node,
                spec.target
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            ),
            async move {
                let mut c = c;
                let opts = EncodeOptions {
                    mode: mode(wire),
                    ..EncodeOptions::default()
                };
                let counters = Arc::new(Counters::default());
                // The sender's reader itself if the caller hands it over (no
                // copy through the duplex), else what is written into it.
                let r = match input(direct_rx, reader).await {
                    Input::Direct(from) => {
                        tandem_stream::encode(from, &mut c.w, opts, counters).await
                    }
                    Input::Duplex(from) => {
                        tandem_stream::encode(from, &mut c.w, opts, counters).await
                    }
                };
                finish(node, c, idle, r.err().map(|e| e.to_string())).await
            },
        );
        Ok(RecvStream {
            writer: Box::pin(writer),
            handle,
            direct: Some(direct),
        })
    }

    async fn receive_abort(&self, ds: &DatasetName, claim: Claim<'_>) -> Result<Changed, ZfsError> {
        self.changed(Request::ReceiveAbort {
            dataset: ds.clone(),
            claim: claim.cloned(),
        })
        .await
    }

    async fn estimate(&self, req: &SendRequest) -> Result<Option<u64>, ZfsError> {
        match self
            .call(Request::Estimate {
                request: req.clone(),
            })
            .await?
        {
            Response::Estimate { bytes } => Ok(bytes),
            r => Err(self.unexpected(r)),
        }
    }

    async fn sync(&self, datasets: &[DatasetName]) -> Result<(), ZfsError> {
        self.unit(Request::Sync {
            datasets: datasets.to_vec(),
        })
        .await
    }

    async fn bookmark(&self, snap: &SnapshotName, bm: &BookmarkName) -> Result<Changed, ZfsError> {
        self.changed(Request::Bookmark {
            snapshot: snap.clone(),
            bookmark: bm.clone(),
        })
        .await
    }

    async fn destroy_bookmark(&self, bm: &BookmarkName) -> Result<Changed, ZfsError> {
        self.changed(Request::DestroyBookmark {
            bookmark: bm.clone(),
        })
        .await
    }

    async fn rename(
        &self,
        from: &DatasetName,
        to: &DatasetName,
        claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        self.unit(Request::Rename {
            from: from.clone(),
            to: to.clone(),
            claim: claim.cloned(),
        })
        .await
    }

    async fn clone_snapshot(
        &self,
        snap: &SnapshotName,
        to: &DatasetName,
        props: &[(&str, &str)],
        claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        self.unit(Request::Clone {
            snapshot: snap.clone(),
            to: to.clone(),
            props: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            claim: claim.cloned(),
        })
        .await
    }

    async fn promote(&self, ds: &DatasetName, claim: Claim<'_>) -> Result<(), ZfsError> {
        self.unit(Request::Promote {
            dataset: ds.clone(),
            claim: claim.cloned(),
        })
        .await
    }

    async fn create_container(
        &self,
        ds: &DatasetName,
        props: &[(&str, &str)],
    ) -> Result<Changed, ZfsError> {
        self.changed(Request::CreateContainer {
            dataset: ds.clone(),
            props: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
        .await
    }

    /// Not offered over the network: destroying a dataset is only ever
    /// done by `failover --test` on its own node, to its own clones,
    /// through the local `zfs`. A peer that could ask for it would be a
    /// way to destroy another node's data.
    async fn destroy_dataset(
        &self,
        ds: &DatasetName,
        _claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        Err(ZfsError::Unsupported {
            node: self.node().to_owned(),
            what: format!("destroying a dataset ({ds}) through tandem serve"),
            version: "tandem serve".into(),
        })
    }
}
