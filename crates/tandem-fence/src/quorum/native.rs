//! The native backend: quorum and membership from corosync's own
//! libraries (the official `rust-corosync` bindings), as events.
//!
//! One thread per process ([`Monitor`], shared by every
//! [`CorosyncQuorum`] alive) holds a votequorum handle that tracks changes
//! (`votequorum_trackstart(CS_TRACK_CHANGES)`) and a cmap handle (the
//! nodelist's names). Every [`POLL`] it dispatches what votequorum has
//! queued, without blocking (`CS_DISPATCH_ALL`: one `recv` that finds
//! nothing, most of the time), and after a notification reads the whole
//! view again (`getinfo` of this node and of every node of the nodelist)
//! and publishes it in a [`tokio::sync::watch`] channel, which wakes
//! [`QuorumSource::changed`]. It also reads the view every [`HEARTBEAT`],
//! so a view is never older than that while corosync answers.
//!
//! Why a short poll of the library's queue, not a wait on its file
//! descriptor: waiting in `votequorum_dispatch(CS_DISPATCH_BLOCKING)`
//! would leave no turn for the heartbeat that detects a hung corosync,
//! and registering libqb's descriptor with tokio (`AsyncFd::register`)
//! or `poll(2)` needs `unsafe` (borrowing a descriptor the library owns),
//! which tandem keeps out of this crate. The price is at most `POLL`
//! (100 ms) between corosync's notification and tandem's event, against
//! the 2 s refresh and a fork of the tool backend.
//!
//! The callbacks are plain `fn`s with a `u64` context: they find their
//! connection's notes through a process-global registry keyed by that
//! context.
//!
//! Fail closed: when the connection breaks (corosync stopped or
//! restarted), the view becomes "no answer, because ..." at once, probes
//! say [`QuorumError::Unanswered`] (where a cluster is configured or
//! required), and the thread reconnects with a backoff (100 ms doubling
//! to 2 s); when corosync is back, so is the view. A view that has not
//! been refreshed for `HEARTBEAT + timeout` (a hung corosync) is no
//! answer either.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use rust_corosync::cmap;
use rust_corosync::votequorum::{self, NodeState};
use rust_corosync::{CsError, DispatchFlags, NodeId, TrackFlags};
use tokio::sync::watch;

use super::view::{InfoFlags, NodeFacts, Snapshot};
use super::{Quorum, QuorumConfig, QuorumError, QuorumMode, QuorumSource, DEFAULT_REFRESH};
use crate::agent::BoxFuture;

/// How often queued notifications are dispatched.
pub const POLL: Duration = Duration::from_millis(100);
/// How often the view is read again without a notification.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The name errors give the backend.
const WHAT: &str = "corosync (libvotequorum)";

/// What the monitor knows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Not connected yet (the first attempt is under way).
    Starting,
    /// Connected: the latest answer.
    Up(Snapshot),
    /// Not connected: why.
    Down(String),
}

/// A published view.
#[derive(Debug, Clone)]
struct Published {
    /// Bumped at every change of `view` and at every notification.
    seq: u64,
    /// When corosync last answered (or the connection last failed).
    at: Instant,
    view: View,
}

/// Notifications seen by one connection, found by the callbacks through
/// [`REGISTRY`].
#[derive(Default)]
struct Notes {
    events: AtomicU64,
}

/// The callbacks' way back: connection context -> its notes.
static REGISTRY: LazyLock<Mutex<HashMap<u64, Arc<Notes>>>> = LazyLock::new(Default::default);
static NEXT_CONTEXT: AtomicU64 = AtomicU64::new(1);
/// The process's monitor, while anyone holds it.
static SHARED: LazyLock<Mutex<Weak<Monitor>>> = LazyLock::new(Default::default);

fn note(context: u64) {
    let notes = REGISTRY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&context)
        .cloned();
    if let Some(n) = notes {
        n.events.fetch_add(1, Ordering::AcqRel);
    }
}

fn on_quorum(_: &votequorum::Handle, context: u64, _quorate: bool, _: Vec<votequorum::Node>) {
    note(context);
}
fn on_nodelist(_: &votequorum::Handle, context: u64, _: votequorum::RingId, _: Vec<NodeId>) {
    note(context);
}
fn on_expected(_: &votequorum::Handle, context: u64, _: u32) {
    note(context);
}

/// The connection thread and its channel.
pub struct Monitor {
    rx: watch::Receiver<Published>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("view", &self.rx.borrow().view)
            .finish()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // The thread notices at once (or after a library call in flight).
        let _ = self.stop.send(true);
    }
}

impl Monitor {
    /// The process's monitor: a new one (and its thread) when none is
    /// alive.
    pub fn shared() -> Arc<Monitor> {
        let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = slot.upgrade() {
            return m;
        }
        let m = Arc::new(Monitor::start());
        *slot = Arc::downgrade(&m);
        m
    }

    fn start() -> Monitor {
        let (tx, rx) = watch::channel(Published {
            seq: 0,
            at: Instant::now(),
            view: View::Starting,
        });
        let (stop, stop_rx) = watch::channel(false);
        let spawned = std::thread::Builder::new()
            .name("tandem-corosync".into())
            .spawn({
                let tx = tx.clone();
                move || thread_main(&tx, stop_rx)
            });
        if let Err(e) = spawned {
            publish(
                &tx,
                View::Down(format!("cannot start the corosync thread: {e}")),
                true,
            );
        }
        Monitor { rx, stop }
    }

    /// The latest view.
    pub fn view(&self) -> View {
        self.rx.borrow().view.clone()
    }
}

/// Publishes `view`: receivers wake when it differs from the last one or
/// `event` is set; the time of the answer is updated always.
fn publish(tx: &watch::Sender<Published>, view: View, event: bool) {
    tx.send_if_modified(|p| {
        p.at = Instant::now();
        if p.view != view || event {
            p.view = view;
            p.seq += 1;
            true
        } else {
            false
        }
    });
}

fn thread_main(tx: &watch::Sender<Published>, mut stop: watch::Receiver<bool>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            publish(
                tx,
                View::Down(format!("cannot start the corosync thread's runtime: {e}")),
                true,
            );
            return;
        }
    };
    rt.block_on(async {
        let mut backoff = MIN_BACKOFF;
        let mut last_error = None;
        loop {
            let context = NEXT_CONTEXT.fetch_add(1, Ordering::Relaxed);
            let notes = Arc::new(Notes::default());
            REGISTRY
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(context, notes.clone());
            let mut connected = false;
            let r = session(context, &notes, tx, &mut stop, &mut connected).await;
            REGISTRY
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&context);
            let Err(e) = r else { return };
            if connected {
                tracing::error!(error = %e, "lost the connection to corosync: no quorum until it is back");
                backoff = MIN_BACKOFF;
            } else if last_error.as_ref() != Some(&e) {
                tracing::warn!(error = %e, "cannot connect to corosync; retrying");
            }
            publish(tx, View::Down(e.clone()), false);
            last_error = Some(e);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
}

fn cs(call: &str) -> impl Fn(CsError) -> String + '_ {
    move |e| {
        let hint = match e {
            CsError::CsErrLibrary | CsError::CsErrBadHandle => " (is corosync running?)",
            CsError::CsErrAccess | CsError::CsErrSecurity => " (not allowed: run as root)",
            _ => "",
        };
        format!("{call} failed: {e}{hint}")
    }
}

/// One connection: until it breaks (`Err`, why) or the monitor stops.
async fn session(
    context: u64,
    notes: &Notes,
    tx: &watch::Sender<Published>,
    stop: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Result<(), String> {
    if *stop.borrow() {
        return Ok(());
    }
    let map = cmap::initialize(cmap::Map::Icmap).map_err(cs("cmap_initialize"))?;
    let vq = votequorum::initialize(&votequorum::Callbacks {
        quorum_notification_fn: Some(on_quorum),
        nodelist_notification_fn: Some(on_nodelist),
        expectedvotes_notification_fn: Some(on_expected),
    })
    .map_err(cs("votequorum_initialize"))?;
    votequorum::trackstart(&vq, context, TrackFlags::Changes)
        .map_err(cs("votequorum_trackstart"))?;
    let started = Instant::now();
    let snap = read_view(&vq, &map)?;
    tracing::info!(
        quorum = %snap.quorum(),
        took_ms = started.elapsed().as_secs_f64() * 1000.0,
        "connected to corosync (votequorum, cmap)"
    );
    *connected = true;
    publish(tx, View::Up(snap), true);
    let mut seen = notes.events.load(Ordering::Acquire);
    let mut read_at = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return Ok(()),
        }
        votequorum::dispatch(&vq, DispatchFlags::All).map_err(cs("votequorum_dispatch"))?;
        let events = notes.events.load(Ordering::Acquire);
        let event = events != seen;
        seen = events;
        if !event && read_at.elapsed() < HEARTBEAT {
            continue;
        }
        read_at = Instant::now();
        let snap = read_view(&vq, &map)?;
        if event {
            tracing::debug!(quorum = %snap.quorum(), "corosync notification");
        }
        publish(tx, View::Up(snap), event);
    }
}

/// One full view: this node's `getinfo`, the nodelist from cmap, and each
/// node's `getinfo` (its state decides membership).
fn read_view(vq: &votequorum::Handle, map: &cmap::Handle) -> Result<Snapshot, String> {
    // Node id 0 asks for this node.
    let me = votequorum::get_info(vq, NodeId::from(0)).map_err(cs("votequorum_getinfo"))?;
    let this_node = u32::from(me.node_id);
    let mut nodes = Vec::new();
    for (id, name) in cmap_nodelist(map)? {
        let (member, votes) = if id == this_node {
            (true, me.node_votes)
        } else {
            match votequorum::get_info(vq, NodeId::from(id)) {
                Ok(i) => (matches!(i.node_state, NodeState::Member), i.node_votes),
                // Never seen since corosync started.
                Err(CsError::CsErrNotExist) => (false, 0),
                Err(e) => return Err(cs("votequorum_getinfo")(e)),
            }
        };
        nodes.push(NodeFacts {
            id,
            name,
            member,
            votes,
        });
    }
    if !nodes.iter().any(|n| n.id == this_node) {
        nodes.push(NodeFacts {
            id: this_node,
            name: None,
            member: true,
            votes: me.node_votes,
        });
    }
    Ok(Snapshot {
        this_node,
        expected: me.node_expected_votes,
        quorum: me.quorum,
        flags: InfoFlags(me.flags.bits()),
        qdevice_votes: me.qdevice_votes,
        nodes,
    })
}

/// One `nodelist.node.N`: its nodeid, name and ring0_addr.
type ConfNode = (Option<u32>, Option<String>, Option<String>);

/// `nodelist.node.N.{nodeid,name,ring0_addr}` from cmap: (id, name).
fn cmap_nodelist(map: &cmap::Handle) -> Result<Vec<(u32, Option<String>)>, String> {
    let mut by_index: BTreeMap<String, ConfNode> = BTreeMap::new();
    let iter = cmap::CmapIterStart::new(map, "nodelist.node.").map_err(cs("cmap_iter_init"))?;
    // Always to the end: the bindings finalize the iterator there.
    for item in iter {
        let Some(rest) = item.key_name().strip_prefix("nodelist.node.") else {
            continue;
        };
        let Some((index, key)) = rest.split_once('.') else {
            continue;
        };
        let e = by_index.entry(index.to_owned()).or_default();
        match key {
            "nodeid" => e.0 = number(item.data()),
            "name" => e.1 = text(item.data()),
            "ring0_addr" => e.2 = text(item.data()),
            _ => {}
        }
    }
    Ok(by_index
        .into_values()
        .filter_map(|(id, name, addr)| id.map(|id| (id, name.or(addr))))
        .collect())
}

fn number(d: &cmap::Data) -> Option<u32> {
    match d {
        cmap::Data::UInt32(v) => Some(*v),
        cmap::Data::UInt8(v) => Some(u32::from(*v)),
        cmap::Data::UInt16(v) => Some(u32::from(*v)),
        cmap::Data::Int32(v) => u32::try_from(*v).ok(),
        cmap::Data::UInt64(v) => u32::try_from(*v).ok(),
        cmap::Data::Int64(v) => u32::try_from(*v).ok(),
        cmap::Data::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(d: &cmap::Data) -> Option<String> {
    match d {
        cmap::Data::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// [`QuorumSource`] from corosync's libraries: see the module page.
#[derive(Debug)]
pub struct CorosyncQuorum {
    cfg: QuorumConfig,
    /// `None` with `mode = "off"`: nothing is asked.
    monitor: Option<Arc<Monitor>>,
    /// The `seq` of the view the last probe returned: [`changed`]
    /// resolves once a newer one is published.
    ///
    /// [`changed`]: QuorumSource::changed
    seen: AtomicU64,
}

impl CorosyncQuorum {
    /// A source for `cfg` (its `mode`, `corosync_conf` and `timeout`);
    /// connects in the background unless `mode = "off"`.
    pub fn new(cfg: QuorumConfig) -> CorosyncQuorum {
        let monitor = (cfg.mode != QuorumMode::Off).then(Monitor::shared);
        CorosyncQuorum {
            cfg,
            monitor,
            seen: AtomicU64::new(0),
        }
    }

    /// No answer: fails closed where a cluster is configured or required.
    fn unanswered(&self, detail: String) -> Result<Quorum, QuorumError> {
        let clustered = self.cfg.mode == QuorumMode::Corosync
            || super::cluster_conf_nodes(&self.cfg.corosync_conf).is_some_and(|n| n >= 2);
        if clustered {
            Err(QuorumError::Unanswered {
                tool: WHAT.into(),
                detail,
            })
        } else {
            Ok(Quorum::NoCluster {
                reason: format!(
                    "corosync does not answer ({detail}) and {} lists no cluster",
                    self.cfg.corosync_conf.display()
                ),
            })
        }
    }
}

impl QuorumSource for CorosyncQuorum {
    fn probe(&self) -> BoxFuture<'_, Result<Quorum, QuorumError>> {
        Box::pin(async move {
            let Some(m) = &self.monitor else {
                return Ok(Quorum::NoCluster {
                    reason: "mode = \"off\" in [quorum]".into(),
                });
            };
            let timeout = self.cfg.timeout.0;
            let mut rx = m.rx.clone();
            let first =
                tokio::time::timeout(timeout, rx.wait_for(|p| !matches!(p.view, View::Starting)))
                    .await;
            let p = match first {
                Ok(Ok(p)) => p.clone(),
                Ok(Err(_)) => return self.unanswered("the corosync thread ended".into()),
                Err(_) => {
                    return self.unanswered(format!(
                        "no answer within {}",
                        humantime::format_duration(timeout)
                    ))
                }
            };
            self.seen.store(p.seq, Ordering::Release);
            match p.view {
                View::Up(snap) => {
                    let age = p.at.elapsed();
                    if age > HEARTBEAT + timeout {
                        self.unanswered(format!(
                            "its last answer is {} old",
                            humantime::format_duration(Duration::from_millis(
                                u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
                            ))
                        ))
                    } else {
                        Ok(snap.quorum())
                    }
                }
                View::Down(detail) => self.unanswered(detail),
                View::Starting => self.unanswered("not connected yet".into()),
            }
        })
    }

    fn nodelist(&self) -> Option<Vec<String>> {
        if let Some(View::Up(s)) = self.monitor.as_ref().map(|m| m.view()) {
            let names = s.nodelist();
            if !names.is_empty() {
                return Some(names);
            }
        }
        super::conf_nodelist(&self.cfg.corosync_conf)
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(m) = &self.monitor else {
                return tokio::time::sleep(DEFAULT_REFRESH).await;
            };
            let seen = self.seen.load(Ordering::Acquire);
            let mut rx = m.rx.clone();
            if rx.wait_for(|p| p.seq > seen).await.is_err() {
                tokio::time::sleep(DEFAULT_REFRESH).await;
            }
        })
    }

    fn backend(&self) -> &'static str {
        "native"
    }
}
