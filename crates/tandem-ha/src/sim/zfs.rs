//! [`SimZfs`]: the [`Zfs`] trait over the simulated world, as seen from one
//! node (the caller) on another (the node whose pools it changes).
//!
//! A call to another node fails like ssh does when the two cannot talk
//! (after a connect timeout), and a write into another node's dataset is
//! checked by the same generation guard `tandem serve` applies
//! ([`tandem_peer::guard`]). Transfers take [`World::transfer_time`]; a
//! sender that loses power mid-stream leaves the receive hanging (its TCP
//! connection never ends), a cut link fails it, and an interrupted
//! resumable receive leaves a resume token.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tandem_peer::guard::{self, Write};
use tandem_zfs::{
    Bookmark, BookmarkName, Capabilities, Changed, Claim, Dataset, DatasetKind, DatasetName,
    Generation, Guid, HoldTag, Listing, RecvSpec, RecvStream, SendBase, SendRequest, SendStream,
    Snapshot, SnapshotName, StreamHandle, Zfs, ZfsError,
};
use tokio::io::AsyncReadExt;

use super::world::{lock, Bm, Ds, Shared, Snap, World};

/// How long a call to an unreachable node takes to fail (ssh's
/// `ConnectTimeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any call takes (a `zfs` process): commands running at the
/// same time interleave between calls, as they do for real.
pub const CALL_TIME: Duration = Duration::from_millis(5);

/// One node's ZFS, as seen from `caller`.
#[derive(Debug, Clone)]
pub struct SimZfs {
    world: Shared,
    caller: String,
    node: String,
}

/// A stream on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stream {
    from_node: String,
    from_boot: u64,
    source: DatasetName,
    kind: DatasetKind,
    /// GUID of the incremental base (a snapshot or bookmark).
    base: Option<u64>,
    snaps: Vec<WireSnap>,
    /// The token this stream resumes, if it does.
    resumes: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireSnap {
    short: String,
    guid: u64,
    creation: i64,
    content: BTreeSet<u64>,
}

/// What a resume token names: the same stream again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    source: DatasetName,
    base: Option<u64>,
    to: u64,
    intermediates: bool,
}

fn cmd(node: &str, what: &str) -> String {
    format!("[{node}] zfs {what}")
}

fn not_found(node: &str, what: &str, name: &str) -> ZfsError {
    ZfsError::DatasetNotFound {
        cmd: cmd(node, what),
        msg: format!("cannot open '{name}': dataset does not exist"),
    }
}

impl SimZfs {
    /// `node`'s ZFS, called from `caller`.
    pub fn new(world: Shared, caller: &str, node: &str) -> SimZfs {
        SimZfs {
            world,
            caller: caller.to_owned(),
            node: node.to_owned(),
        }
    }

    fn by(&self) -> String {
        if self.caller == self.node {
            String::new()
        } else {
            format!(" (from {})", self.caller)
        }
    }

    /// Fails like ssh when the caller cannot reach the node.
    async fn reach(&self, what: &str) -> Result<(), ZfsError> {
        tokio::time::sleep(CALL_TIME).await;
        let ok = lock(&self.world).link(&self.caller, &self.node);
        if ok {
            return Ok(());
        }
        tokio::time::sleep(CONNECT_TIMEOUT).await;
        Err(ZfsError::Ssh {
            cmd: cmd(&self.node, what),
            msg: format!(
                "ssh: connect to host {} port 22: Connection timed out",
                self.node
            ),
        })
    }

    /// The generation guard of `tandem serve`, for calls from another node.
    fn guard(
        &self,
        w: &World,
        ds: &DatasetName,
        claim: Claim<'_>,
        write: Write,
        what: &str,
    ) -> Result<(), ZfsError> {
        if self.caller == self.node {
            return Ok(());
        }
        let mark = w
            .nodes
            .get(&self.node)
            .and_then(|n| n.pools.get(ds))
            .and_then(Ds::mark);
        guard::check(ds, mark.as_ref(), claim, &self.node, write).map_err(|msg| {
            ZfsError::PermissionDenied {
                cmd: cmd(&self.node, what),
                msg: format!("refused by tandem serve on {}: {msg}", self.node),
            }
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut lock(&self.world))
    }

    fn build_stream(&self, w: &World, req: &SendRequest) -> Result<Stream, ZfsError> {
        let node = &self.node;
        let (source, base, to, intermediates, resumes) = match req {
            SendRequest::Snapshot {
                snapshot,
                from,
                intermediates,
                ..
            } => {
                let base = match from {
                    None => None,
                    Some(SendBase::Snapshot(b)) => Some(BaseRef::Snap(b.short().to_owned())),
                    Some(SendBase::Bookmark(b)) => Some(BaseRef::Mark(b.short().to_owned())),
                };
                (
                    snapshot.dataset().clone(),
                    base,
                    Ok(snapshot.short().to_owned()),
                    *intermediates,
                    None,
                )
            }
            SendRequest::Resume { token } => {
                let t: Token = token
                    .strip_prefix("sim-")
                    .and_then(|j| serde_json::from_str(j).ok())
                    .ok_or_else(|| ZfsError::ResumeTokenStale {
                        cmd: cmd(node, "send -t"),
                        msg: "resume token is corrupt".into(),
                    })?;
                (
                    t.source.clone(),
                    t.base.map(BaseRef::Guid),
                    Err(t.to),
                    t.intermediates,
                    Some(token.clone()),
                )
            }
        };
        let stale = |what: &str| ZfsError::ResumeTokenStale {
            cmd: cmd(node, "send -t"),
            msg: format!("cannot resume send: {what} no longer exists"),
        };
        let ds = w
            .nodes
            .get(node)
            .and_then(|n| n.pools.get(&source))
            .filter(|d| !d.partial)
            .ok_or_else(|| {
                if resumes.is_some() {
                    stale(source.as_str())
                } else {
                    not_found(node, "send", source.as_str())
                }
            })?;
        let to_idx = ds
            .snaps
            .iter()
            .position(|s| match &to {
                Ok(short) => &s.short == short,
                Err(guid) => s.guid == *guid,
            })
            .ok_or_else(|| {
                if resumes.is_some() {
                    stale("the snapshot")
                } else {
                    not_found(node, "send", &format!("{source}@{to:?}"))
                }
            })?;
        let (base_guid, base_txg) = match base {
            None => (None, None),
            Some(b) => {
                let found = match &b {
                    BaseRef::Snap(short) => ds
                        .snaps
                        .iter()
                        .find(|s| &s.short == short)
                        .map(|s| (s.guid, s.txg)),
                    BaseRef::Mark(short) => ds
                        .bookmarks
                        .iter()
                        .find(|m| &m.short == short)
                        .map(|m| (m.guid, m.txg)),
                    BaseRef::Guid(g) => ds
                        .snaps
                        .iter()
                        .map(|s| (s.guid, s.txg))
                        .chain(ds.bookmarks.iter().map(|m| (m.guid, m.txg)))
                        .find(|(sg, _)| sg == g),
                };
                let (g, t) = found.ok_or_else(|| {
                    if resumes.is_some() {
                        stale("the incremental source")
                    } else {
                        not_found(node, "send", "the incremental source")
                    }
                })?;
                (Some(g), Some(t))
            }
        };
        let to_snap = &ds.snaps[to_idx];
        let snaps = ds
            .snaps
            .iter()
            .filter(|s| match base_txg {
                None => s.guid == to_snap.guid,
                Some(bt) if intermediates => s.txg > bt && s.txg <= to_snap.txg,
                Some(_) => s.guid == to_snap.guid,
            })
            .map(|s| WireSnap {
                short: s.short.clone(),
                guid: s.guid,
                creation: s.creation,
                content: s.content.clone(),
            })
            .collect();
        Ok(Stream {
            from_node: node.clone(),
            from_boot: w.nodes.get(node).map_or(0, |n| n.boot),
            source,
            kind: ds.kind,
            base: base_guid,
            snaps,
            resumes,
        })
    }
}

enum BaseRef {
    Snap(String),
    Mark(String),
    Guid(u64),
}

fn written(w: &World, node: &str, ds: &Ds) -> u64 {
    let base = ds.base_content(w, node);
    match base {
        Some(b) => ds.content.symmetric_difference(b).count() as u64 * 4096,
        None => ds.content.len() as u64 * 4096,
    }
}

fn listed(w: &World, node: &str, name: &DatasetName, ds: &Ds) -> Option<Dataset> {
    let mut d = Dataset::new(name.clone(), ds.kind, Guid(ds.guid));
    for s in &ds.snaps {
        d.snapshots.push(Snapshot {
            name: name.snapshot(&s.short).ok()?,
            guid: Guid(s.guid),
            createtxg: s.txg,
            creation: s.creation,
            userrefs: s.holds.len() as u64,
        });
    }
    for b in &ds.bookmarks {
        d.bookmarks.push(Bookmark {
            name: name.bookmark(&b.short).ok()?,
            guid: Guid(b.guid),
            createtxg: b.txg,
        });
    }
    d.resume_token = ds.token.clone();
    d.written = Some(if ds.partial { 0 } else { written(w, node, ds) });
    d.referenced = Some(ds.content.len() as u64 * 4096);
    d.generation = ds.mark();
    d.readonly = Some(ds.readonly);
    d.origin = ds
        .origin
        .as_ref()
        .and_then(|(o, short)| o.snapshot(short).ok());
    Some(d)
}

/// Applies a received stream to `node`'s pools, or says why not.
fn apply(w: &mut World, node: &str, target: &DatasetName, st: &Stream) -> Result<String, ZfsError> {
    let c = cmd(node, &format!("receive {target}"));
    let exists = w.nodes.get(node).and_then(|n| n.pools.get(target)).cloned();
    match (&exists, st.base) {
        (Some(d), None) if !d.partial => {
            return Err(ZfsError::TargetExists {
                cmd: c,
                msg: format!("cannot receive new filesystem stream: destination '{target}' exists"),
            })
        }
        (None, Some(_)) => return Err(not_found(node, "receive", target.as_str())),
        (Some(d), Some(base)) => {
            if d.token.is_some() && st.resumes.as_deref() != d.token.as_deref() {
                return Err(ZfsError::Failed {
                    cmd: c,
                    code: Some(1),
                    msg: format!("destination {target} contains partially-complete state from \"zfs receive -s\""),
                });
            }
            let at = d.snaps.iter().position(|s| s.guid == base).ok_or_else(|| {
                ZfsError::NoCommonSnapshot {
                    cmd: c.clone(),
                    msg: format!(
                        "cannot receive incremental stream: most recent snapshot of {target} does not match incremental source"
                    ),
                }
            })?;
            if at + 1 != d.snaps.len() {
                return Err(ZfsError::TargetDiverged {
                    cmd: c,
                    msg: format!("cannot receive incremental stream: destination {target} has snapshots (eg. {target}@{}) must destroy them to overwrite it", d.snaps[at + 1].short),
                });
            }
            if written(w, node, d) > 0 {
                return Err(ZfsError::TargetDiverged {
                    cmd: c,
                    msg: format!("cannot receive incremental stream: destination {target} has been modified since most recent snapshot"),
                });
            }
        }
        _ => {}
    }
    if exists.as_ref().is_none_or(|d| d.partial) {
        if let Some(parent) = target.parent() {
            let has_parent = w
                .nodes
                .get(node)
                .is_some_and(|n| n.pools.contains_key(&parent));
            if !has_parent {
                return Err(not_found(node, "receive", parent.as_str()));
            }
        }
    }
    let guid = w.guid();
    let txgs: Vec<u64> = st.snaps.iter().map(|_| w.txg()).collect();
    let n = w
        .nodes
        .get_mut(node)
        .ok_or_else(|| not_found(node, "receive", target.as_str()))?;
    let ds = n.pools.entry(target.clone()).or_insert_with(|| {
        let mut d = Ds::new(guid);
        d.kind = st.kind;
        d
    });
    if ds.partial {
        *ds = Ds::new(guid);
        ds.kind = st.kind;
    }
    for (s, txg) in st.snaps.iter().zip(txgs) {
        ds.snaps.push(Snap {
            short: s.short.clone(),
            guid: s.guid,
            txg,
            creation: s.creation,
            content: s.content.clone(),
            holds: BTreeSet::new(),
        });
    }
    if let Some(last) = st.snaps.last() {
        ds.content = last.content.clone();
    }
    ds.token = None;
    let shorts: Vec<&str> = st.snaps.iter().map(|s| s.short.as_str()).collect();
    Ok(format!(
        "{} {}",
        if st.base.is_none() {
            "full"
        } else {
            "incremental"
        },
        shorts.join(" ")
    ))
}

/// Leaves what an interrupted receive leaves: a resume token where the
/// receive was resumable, and the dataset no longer busy.
fn interrupted(
    w: &mut World,
    node: &str,
    target: &DatasetName,
    st: Option<&Stream>,
    resumable: bool,
) {
    let guid = w.guid();
    let Some(n) = w.nodes.get_mut(node) else {
        return;
    };
    if let Some(d) = n.pools.get_mut(target) {
        d.receiving = false;
    }
    let (Some(st), true, true) = (st, resumable, n.power) else {
        return;
    };
    let Some(to) = st.snaps.last() else {
        return;
    };
    let token = Token {
        source: st.source.clone(),
        base: st.base,
        to: to.guid,
        intermediates: st.snaps.len() > 1,
    };
    let token = format!("sim-{}", serde_json::to_string(&token).unwrap_or_default());
    let d = n.pools.entry(target.clone()).or_insert_with(|| {
        let mut d = Ds::new(guid);
        d.partial = true;
        d
    });
    d.token = Some(token);
    w.say(
        node,
        format!("zfs receive {target}: interrupted, resumable"),
    );
}

/// Clears a dataset's busy flag when the receive task ends, however.
struct Busy {
    world: Shared,
    node: String,
    target: DatasetName,
    stream: Option<Stream>,
    resumable: bool,
    done: bool,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut w = lock(&self.world);
        interrupted(
            &mut w,
            &self.node,
            &self.target,
            self.stream.as_ref(),
            self.resumable,
        );
    }
}

impl Zfs for SimZfs {
    fn node(&self) -> &str {
        &self.node
    }

    async fn capabilities(&self) -> Result<Capabilities, ZfsError> {
        self.reach("version").await?;
        Ok(Capabilities::openzfs("zfs-2.3.2 (simulated)"))
    }

    async fn list(&self, roots: &[DatasetName]) -> Result<Listing, ZfsError> {
        self.reach("get").await?;
        Ok(self.with(|w| {
            let mut l = Listing::default();
            if let Some(n) = w.nodes.get(&self.node) {
                for (name, ds) in &n.pools {
                    let wanted = roots
                        .iter()
                        .any(|r| name == r || name.parent().as_ref() == Some(r));
                    if wanted {
                        if let Some(d) = listed(w, &self.node, name, ds) {
                            l.datasets.insert(name.clone(), d);
                        }
                    }
                }
            }
            l
        }))
    }

    async fn snapshot(&self, names: &[SnapshotName]) -> Result<(), ZfsError> {
        self.reach("snapshot").await?;
        self.with(|w| {
            let now = w.now().timestamp();
            let txg = w.txg();
            let node = self.node.clone();
            for n in names {
                let ds = w
                    .nodes
                    .get(&node)
                    .and_then(|x| x.pools.get(n.dataset()))
                    .filter(|d| !d.partial)
                    .ok_or_else(|| not_found(&node, "snapshot", n.dataset().as_str()))?;
                if ds.snaps.iter().any(|s| s.short == n.short()) {
                    return Err(ZfsError::AlreadyExists {
                        cmd: cmd(&node, "snapshot"),
                        msg: format!("cannot create snapshot '{n}': dataset already exists"),
                    });
                }
            }
            for n in names {
                let guid = w.guid();
                if let Some(ds) = w
                    .nodes
                    .get_mut(&node)
                    .and_then(|x| x.pools.get_mut(n.dataset()))
                {
                    let content = ds.content.clone();
                    ds.snaps.push(Snap {
                        short: n.short().to_owned(),
                        guid,
                        txg,
                        creation: now,
                        content,
                        holds: BTreeSet::new(),
                    });
                }
            }
            let list: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            w.say(
                &node,
                format!("zfs snapshot {}{}", list.join(" "), self.by()),
            );
            Ok(())
        })
    }

    async fn snapshot_tree(&self, root: &SnapshotName) -> Result<(), ZfsError> {
        let names: Vec<SnapshotName> = self.with(|w| {
            w.nodes
                .get(&self.node)
                .map(|x| {
                    x.pools
                        .iter()
                        .filter(|(d, s)| {
                            !s.partial
                                && (*d == root.dataset()
                                    || d.as_str()
                                        .strip_prefix(root.dataset().as_str())
                                        .is_some_and(|r| r.starts_with('/')))
                        })
                        .filter_map(|(d, _)| root.on(d).ok())
                        .collect()
                })
                .unwrap_or_default()
        });
        if names.is_empty() {
            return Err(not_found(&self.node, "snapshot", root.dataset().as_str()));
        }
        self.snapshot(&names).await
    }

    async fn destroy_snapshot_tree(
        &self,
        _root: &SnapshotName,
        _claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        // The simulator has no guest jobs; callers fall back to one
        // destroy per dataset.
        Err(ZfsError::Unsupported {
            node: self.node.clone(),
            what: "zfs destroy -r".into(),
            version: "the simulator".into(),
        })
    }

    async fn destroy_snapshot(
        &self,
        name: &SnapshotName,
        claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        self.reach("destroy").await?;
        self.with(|w| {
            self.guard(w, name.dataset(), claim, Write::Housekeeping, "destroy")?;
            let node = self.node.clone();
            let is_origin = w.nodes.get(&node).is_some_and(|n| {
                n.pools.values().any(|d| {
                    d.origin
                        .as_ref()
                        .is_some_and(|(o, s)| o == name.dataset() && s == name.short())
                })
            });
            if name.dataset().as_str().contains("/tandem-diverged/") {
                w.violate(format!("{node}: destroy of a set-aside snapshot {name}"));
            }
            let Some(ds) = w
                .nodes
                .get_mut(&node)
                .and_then(|n| n.pools.get_mut(name.dataset()))
            else {
                return Ok(Changed::Already);
            };
            let Some(i) = ds.snaps.iter().position(|s| s.short == name.short()) else {
                return Ok(Changed::Already);
            };
            if !ds.snaps[i].holds.is_empty() {
                return Err(ZfsError::DatasetBusy {
                    cmd: cmd(&node, "destroy"),
                    msg: format!("cannot destroy snapshot {name}: dataset is busy"),
                });
            }
            if is_origin {
                return Err(ZfsError::HasClones {
                    cmd: cmd(&node, "destroy"),
                    msg: format!("cannot destroy '{name}': snapshot has dependent clones"),
                });
            }
            ds.snaps.remove(i);
            w.say(&node, format!("zfs destroy {name}{}", self.by()));
            Ok(Changed::Done)
        })
    }

    async fn hold(&self, tag: &HoldTag, snap: &SnapshotName) -> Result<Changed, ZfsError> {
        self.reach("hold").await?;
        self.with(|w| {
            let node = self.node.clone();
            let s = w
                .nodes
                .get_mut(&node)
                .and_then(|n| n.pools.get_mut(snap.dataset()))
                .and_then(|d| d.snaps.iter_mut().find(|s| s.short == snap.short()))
                .ok_or_else(|| not_found(&node, "hold", &snap.to_string()))?;
            Ok(if s.holds.insert(tag.to_string()) {
                Changed::Done
            } else {
                Changed::Already
            })
        })
    }

    async fn release(&self, tag: &HoldTag, snap: &SnapshotName) -> Result<Changed, ZfsError> {
        self.reach("release").await?;
        self.with(|w| {
            let node = self.node.clone();
            let Some(s) = w
                .nodes
                .get_mut(&node)
                .and_then(|n| n.pools.get_mut(snap.dataset()))
                .and_then(|d| d.snaps.iter_mut().find(|s| s.short == snap.short()))
            else {
                return Ok(Changed::Already);
            };
            Ok(if s.holds.remove(tag.as_str()) {
                Changed::Done
            } else {
                Changed::Already
            })
        })
    }

    async fn rollback(&self, snap: &SnapshotName, claim: Claim<'_>) -> Result<(), ZfsError> {
        self.reach("rollback").await?;
        self.with(|w| {
            self.guard(w, snap.dataset(), claim, Write::Data, "rollback")?;
            let node = self.node.clone();
            let mark = w
                .nodes
                .get(&node)
                .and_then(|n| n.pools.get(snap.dataset()))
                .and_then(Ds::mark);
            let ds = w
                .nodes
                .get(&node)
                .and_then(|n| n.pools.get(snap.dataset()))
                .ok_or_else(|| not_found(&node, "rollback", &snap.to_string()))?;
            if ds.receiving {
                return Err(ZfsError::DatasetBusy {
                    cmd: cmd(&node, "rollback"),
                    msg: format!("cannot rollback '{}': dataset is busy", snap.dataset()),
                });
            }
            let at = ds
                .snaps
                .iter()
                .position(|s| s.short == snap.short())
                .ok_or_else(|| not_found(&node, "rollback", &snap.to_string()))?;
            if at + 1 != ds.snaps.len() {
                return Err(ZfsError::Failed {
                    cmd: cmd(&node, "rollback"),
                    code: Some(1),
                    msg: format!(
                        "cannot rollback to '{snap}': more recent snapshots or bookmarks exist"
                    ),
                });
            }
            let lost: Vec<u64> = ds
                .content
                .difference(&ds.snaps[at].content)
                .copied()
                .collect();
            if mark.as_ref().is_some_and(|m| m.primary == node) {
                w.violate(format!(
                    "{node}: rollback of {} whose mark ({}) names this node as the primary",
                    snap.dataset(),
                    mark.map(|m| m.to_string()).unwrap_or_default()
                ));
            }
            if snap.dataset().as_str().contains("/tandem-diverged/") {
                w.violate(format!("{node}: rollback of a set-aside dataset {snap}"));
            }
            if let Some(ds) = w
                .nodes
                .get_mut(&node)
                .and_then(|n| n.pools.get_mut(snap.dataset()))
            {
                ds.content = ds.snaps[at].content.clone();
            }
            let lost = if lost.is_empty() {
                String::new()
            } else {
                format!(", discarding writes {lost:?}")
            };
            w.say(&node, format!("zfs rollback {snap}{lost}{}", self.by()));
            Ok(())
        })
    }

    async fn set_property(
        &self,
        ds: &DatasetName,
        prop: &str,
        value: &str,
        claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        self.reach("set").await?;
        self.with(|w| {
            self.guard(w, ds, claim, Write::Data, "set")?;
            let node = self.node.clone();
            let by = self.by();
            let d = w
                .nodes
                .get_mut(&node)
                .and_then(|n| n.pools.get_mut(ds))
                .ok_or_else(|| not_found(&node, "set", ds.as_str()))?;
            match prop {
                "readonly" => d.readonly = value == "on",
                _ => {
                    d.props.insert(prop.to_owned(), value.to_owned());
                }
            }
            w.say(&node, format!("zfs set {prop}={value} {ds}{by}"));
            Ok(())
        })
    }

    async fn get_property(&self, ds: &DatasetName, prop: &str) -> Result<Option<String>, ZfsError> {
        self.reach("get").await?;
        self.with(|w| {
            let d = w
                .nodes
                .get(&self.node)
                .and_then(|n| n.pools.get(ds))
                .ok_or_else(|| not_found(&self.node, "get", ds.as_str()))?;
            Ok(match prop {
                "readonly" => Some(if d.readonly { "on" } else { "off" }.to_owned()),
                "origin" => d.origin.as_ref().map(|(o, s)| format!("{o}@{s}")),
                p => d.props.get(p).cloned(),
            })
        })
    }

    async fn send(&self, req: &SendRequest) -> Result<SendStream, ZfsError> {
        self.reach("send").await?;
        let st = self.with(|w| self.build_stream(w, req))?;
        let bytes = serde_json::to_vec(&st).map_err(|e| ZfsError::Failed {
            cmd: cmd(&self.node, "send"),
            code: None,
            msg: e.to_string(),
        })?;
        Ok(SendStream {
            reader: Box::pin(std::io::Cursor::new(bytes)),
            handle: StreamHandle::task(cmd(&self.node, "send"), async { Ok(()) }),
        })
    }

    async fn receive(&self, spec: &RecvSpec) -> Result<RecvStream, ZfsError> {
        self.reach("receive").await?;
        let target = spec.target.clone().ok_or_else(|| ZfsError::Failed {
            cmd: cmd(&self.node, "receive"),
            code: None,
            msg: "receive without a target".into(),
        })?;
        self.with(|w| {
            self.guard(w, &target, spec.claim.as_ref(), Write::Data, "receive")?;
            let d = w
                .nodes
                .get_mut(&self.node)
                .and_then(|n| n.pools.get_mut(&target));
            if let Some(d) = d {
                if d.receiving {
                    return Err(ZfsError::DatasetBusy {
                        cmd: cmd(&self.node, "receive"),
                        msg: format!("cannot receive into {target}: dataset is busy"),
                    });
                }
                d.receiving = true;
            }
            Ok(())
        })?;
        let (writer, mut reader) = tokio::io::duplex(1 << 16);
        let world = self.world.clone();
        let node = self.node.clone();
        let resumable = spec.resumable;
        let t2 = target.clone();
        let inner = tokio::spawn(async move {
            let mut busy = Busy {
                world: world.clone(),
                node: node.clone(),
                target: t2.clone(),
                stream: None,
                resumable,
                done: false,
            };
            let mut bytes = Vec::new();
            let _ = reader.read_to_end(&mut bytes).await;
            let st: Stream = match serde_json::from_slice(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    return Err(ZfsError::StreamCorrupt {
                        cmd: cmd(&node, &format!("receive {t2}")),
                        msg: format!("cannot receive: invalid stream ({e})"),
                    })
                }
            };
            busy.stream = Some(st.clone());
            let transfer = lock(&world).transfer_time;
            tokio::time::sleep(transfer).await;
            let (sender_alive, linked, cut) = {
                let mut w = lock(&world);
                let alive = w
                    .nodes
                    .get(&st.from_node)
                    .is_some_and(|n| n.power && n.boot == st.from_boot);
                let linked = w.link(&st.from_node, &node);
                let cut = w.cut_next.remove(&(node.clone(), t2.clone()));
                (alive, linked, cut)
            };
            if !sender_alive {
                // Its TCP connection never ends: the receive waits until
                // it is killed.
                std::future::pending::<()>().await;
            }
            if !linked || cut {
                return Err(ZfsError::StreamCorrupt {
                    cmd: cmd(&node, &format!("receive {t2}")),
                    msg: "cannot receive: connection lost mid-stream".into(),
                });
            }
            let mut w = lock(&world);
            busy.done = true;
            if let Some(d) = w.nodes.get_mut(&node).and_then(|n| n.pools.get_mut(&t2)) {
                d.receiving = false;
            }
            let r = apply(&mut w, &node, &t2, &st);
            let by = if st.from_node == node {
                String::new()
            } else {
                format!(" (from {})", st.from_node)
            };
            match &r {
                Ok(what) => w.say(&node, format!("zfs receive {t2}: {what}{by}")),
                Err(e) => w.say(&node, format!("zfs receive {t2}: refused: {e}")),
            }
            r.map(|_| ())
        });
        lock(&self.world)
            .receives
            .push((self.node.clone(), target.clone(), inner.abort_handle()));
        let c = cmd(&self.node, &format!("receive {target}"));
        let handle = StreamHandle::task(c.clone(), async move {
            match inner.await {
                Ok(r) => r,
                Err(_) => Err(ZfsError::Failed {
                    cmd: c,
                    code: None,
                    msg: "killed".into(),
                }),
            }
        });
        Ok(RecvStream {
            writer: Box::pin(writer),
            handle,
            direct: None,
        })
    }

    async fn receive_abort(&self, ds: &DatasetName, claim: Claim<'_>) -> Result<Changed, ZfsError> {
        self.reach("receive -A").await?;
        self.with(|w| {
            self.guard(w, ds, claim, Write::Data, "receive -A")?;
            let node = self.node.clone();
            let Some(d) = w.nodes.get_mut(&node).and_then(|n| n.pools.get_mut(ds)) else {
                return Ok(Changed::Already);
            };
            if d.receiving {
                return Err(ZfsError::DatasetBusy {
                    cmd: cmd(&node, "receive -A"),
                    msg: format!("cannot abort the receive into {ds}: dataset is busy"),
                });
            }
            if d.token.is_none() {
                return Ok(Changed::Already);
            }
            if d.partial {
                w.nodes.get_mut(&node).map(|n| n.pools.remove(ds));
            } else {
                d.token = None;
            }
            w.say(&node, format!("zfs receive -A {ds}{}", self.by()));
            Ok(Changed::Done)
        })
    }

    async fn estimate(&self, _req: &SendRequest) -> Result<Option<u64>, ZfsError> {
        Ok(None)
    }

    async fn bookmark(&self, snap: &SnapshotName, bm: &BookmarkName) -> Result<Changed, ZfsError> {
        self.reach("bookmark").await?;
        self.with(|w| {
            let node = self.node.clone();
            let ds = w
                .nodes
                .get_mut(&node)
                .and_then(|n| n.pools.get_mut(snap.dataset()))
                .ok_or_else(|| not_found(&node, "bookmark", &snap.to_string()))?;
            if ds.bookmarks.iter().any(|b| b.short == bm.short()) {
                return Ok(Changed::Already);
            }
            let s = ds
                .snaps
                .iter()
                .find(|s| s.short == snap.short())
                .ok_or_else(|| not_found(&node, "bookmark", &snap.to_string()))?;
            let b = Bm {
                short: bm.short().to_owned(),
                guid: s.guid,
                txg: s.txg,
            };
            ds.bookmarks.push(b);
            Ok(Changed::Done)
        })
    }

    async fn destroy_bookmark(&self, bm: &BookmarkName) -> Result<Changed, ZfsError> {
        self.reach("destroy").await?;
        self.with(|w| {
            let Some(ds) = w
                .nodes
                .get_mut(&self.node)
                .and_then(|n| n.pools.get_mut(bm.dataset()))
            else {
                return Ok(Changed::Already);
            };
            let before = ds.bookmarks.len();
            ds.bookmarks.retain(|b| b.short != bm.short());
            Ok(if ds.bookmarks.len() < before {
                Changed::Done
            } else {
                Changed::Already
            })
        })
    }

    async fn sync(&self, _datasets: &[DatasetName]) -> Result<(), ZfsError> {
        self.reach("zpool sync").await
    }

    async fn rename(
        &self,
        from: &DatasetName,
        to: &DatasetName,
        claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        self.reach("rename").await?;
        self.with(|w| {
            self.guard(w, from, claim, Write::Data, "rename")?;
            let node = self.node.clone();
            let by = self.by();
            let n = w
                .nodes
                .get_mut(&node)
                .ok_or_else(|| not_found(&node, "rename", from.as_str()))?;
            if n.pools.contains_key(to) {
                return Err(ZfsError::AlreadyExists {
                    cmd: cmd(&node, "rename"),
                    msg: format!("cannot rename to '{to}': dataset already exists"),
                });
            }
            if let Some(p) = to.parent() {
                if !n.pools.contains_key(&p) {
                    return Err(not_found(&node, "rename", p.as_str()));
                }
            }
            let d = n
                .pools
                .get(from)
                .ok_or_else(|| not_found(&node, "rename", from.as_str()))?;
            if d.receiving {
                return Err(ZfsError::DatasetBusy {
                    cmd: cmd(&node, "rename"),
                    msg: format!("cannot rename '{from}': dataset is busy"),
                });
            }
            let d = n
                .pools
                .remove(from)
                .ok_or_else(|| not_found(&node, "rename", from.as_str()))?;
            n.pools.insert(to.clone(), d);
            for other in n.pools.values_mut() {
                if let Some((o, _)) = other.origin.as_mut() {
                    if o == from {
                        *o = to.clone();
                    }
                }
            }
            w.say(&node, format!("zfs rename {from} {to}{by}"));
            Ok(())
        })
    }

    async fn clone_snapshot(
        &self,
        snap: &SnapshotName,
        to: &DatasetName,
        props: &[(&str, &str)],
        claim: Claim<'_>,
    ) -> Result<(), ZfsError> {
        self.reach("clone").await?;
        self.with(|w| {
            self.guard(w, to, claim, Write::Data, "clone")?;
            let node = self.node.clone();
            let by = self.by();
            let guid = w.guid();
            let n = w
                .nodes
                .get_mut(&node)
                .ok_or_else(|| not_found(&node, "clone", &snap.to_string()))?;
            if n.pools.contains_key(to) {
                return Err(ZfsError::AlreadyExists {
                    cmd: cmd(&node, "clone"),
                    msg: format!("cannot create '{to}': dataset already exists"),
                });
            }
            let src = n
                .pools
                .get(snap.dataset())
                .ok_or_else(|| not_found(&node, "clone", &snap.to_string()))?;
            let s = src
                .snaps
                .iter()
                .find(|s| s.short == snap.short())
                .ok_or_else(|| not_found(&node, "clone", &snap.to_string()))?;
            let mut d = Ds::new(guid);
            d.kind = src.kind;
            d.content = s.content.clone();
            d.origin = Some((snap.dataset().clone(), snap.short().to_owned()));
            for (k, v) in props {
                if *k == "readonly" {
                    d.readonly = *v == "on";
                } else if k.contains(':') {
                    d.props.insert((*k).to_owned(), (*v).to_owned());
                }
            }
            n.pools.insert(to.clone(), d);
            w.say(&node, format!("zfs clone {snap} {to}{by}"));
            Ok(())
        })
    }

    async fn promote(&self, ds: &DatasetName, claim: Claim<'_>) -> Result<(), ZfsError> {
        self.reach("promote").await?;
        self.with(|w| {
            self.guard(w, ds, claim, Write::Data, "promote")?;
            let node = self.node.clone();
            let by = self.by();
            let n = w
                .nodes
                .get_mut(&node)
                .ok_or_else(|| not_found(&node, "promote", ds.as_str()))?;
            let Some((origin_ds, origin_snap)) = n.pools.get(ds).and_then(|d| d.origin.clone())
            else {
                return Err(ZfsError::Failed {
                    cmd: cmd(&node, "promote"),
                    code: Some(1),
                    msg: format!("cannot promote '{ds}': not a cloned filesystem"),
                });
            };
            let o = n
                .pools
                .get_mut(&origin_ds)
                .ok_or_else(|| not_found(&node, "promote", origin_ds.as_str()))?;
            let at = o
                .snaps
                .iter()
                .position(|s| s.short == origin_snap)
                .ok_or_else(|| not_found(&node, "promote", &origin_snap))?;
            let moved: Vec<Snap> = o.snaps.drain(..=at).collect();
            o.origin = Some((ds.clone(), origin_snap.clone()));
            if let Some(c) = n.pools.get_mut(ds) {
                let mut snaps = moved;
                snaps.append(&mut c.snaps);
                c.snaps = snaps;
                c.origin = None;
            }
            w.say(&node, format!("zfs promote {ds}{by}"));
            Ok(())
        })
    }

    async fn create_container(
        &self,
        ds: &DatasetName,
        props: &[(&str, &str)],
    ) -> Result<Changed, ZfsError> {
        self.reach("create").await?;
        self.with(|w| {
            let node = self.node.clone();
            let by = self.by();
            let guid = w.guid();
            let n = w
                .nodes
                .get_mut(&node)
                .ok_or_else(|| not_found(&node, "create", ds.as_str()))?;
            if n.pools.contains_key(ds) {
                return Ok(Changed::Already);
            }
            let mut d = Ds::new(guid);
            for (k, v) in props {
                d.props.insert((*k).to_owned(), (*v).to_owned());
            }
            n.pools.insert(ds.clone(), d);
            let opts: String = props.iter().map(|(k, v)| format!(" -o {k}={v}")).collect();
            w.say(&node, format!("zfs create{opts} {ds}{by}"));
            Ok(Changed::Done)
        })
    }

    async fn destroy_dataset(
        &self,
        ds: &DatasetName,
        claim: Claim<'_>,
    ) -> Result<Changed, ZfsError> {
        self.reach("destroy").await?;
        self.with(|w| {
            self.guard(w, ds, claim, Write::Data, "destroy")?;
            let node = self.node.clone();
            let by = self.by();
            let Some(n) = w.nodes.get(&node) else {
                return Ok(Changed::Already);
            };
            let Some(d) = n.pools.get(ds) else {
                return Ok(Changed::Already);
            };
            let busy = |what: &str| ZfsError::DatasetBusy {
                cmd: cmd(&node, "destroy"),
                msg: format!("cannot destroy '{ds}': {what}"),
            };
            if !d.snaps.is_empty() {
                return Err(busy("filesystem has children (snapshots); use -r"));
            }
            if n.pools.keys().any(|k| k.parent().as_ref() == Some(ds)) {
                return Err(busy("filesystem has children; use -r"));
            }
            if d.receiving {
                return Err(busy("dataset is busy"));
            }
            if d.mark().is_some() {
                w.violate(format!(
                    "{node}: destroy of {ds}, which carries a generation mark"
                ));
            }
            w.nodes.get_mut(&node).map(|n| n.pools.remove(ds));
            w.say(&node, format!("zfs destroy {ds}{by}"));
            Ok(Changed::Done)
        })
    }
}

/// The generation mark a listed dataset carries, for the log.
pub fn mark_text(g: Option<&Generation>) -> String {
    g.map_or("-".into(), |g| g.to_string())
}
