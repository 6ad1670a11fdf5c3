//! The simulated world: nodes with power, disks (their pools and their
//! state directory), BMCs and watchdogs; the network between them; the
//! workload's writes; and the log of everything that changed.
//!
//! Everything is behind one mutex and changes only between awaits, so
//! each simulated ZFS call is atomic, as a `zfs` command is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tandem_repl::state::MemStore;
use tandem_zfs::{DatasetKind, DatasetName, Generation, GENERATION_PROPERTY};

/// What a node's BMC does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bmc {
    /// Answers truthfully.
    Up,
    /// Never answers (a dead BMC, a cut management network).
    Down,
    /// Answers truthfully, after this long.
    Slow(Duration),
    /// Says "on" whatever the truth, accepts "off" and does nothing.
    LieOn,
    /// Says "off" whatever the truth, accepts commands and does nothing.
    LieOff,
}

/// One snapshot.
#[derive(Debug, Clone)]
pub struct Snap {
    /// Short name.
    pub short: String,
    /// GUID.
    pub guid: u64,
    /// createtxg.
    pub txg: u64,
    /// Creation, seconds since the epoch.
    pub creation: i64,
    /// The writes it holds.
    pub content: BTreeSet<u64>,
    /// Hold tags.
    pub holds: BTreeSet<String>,
}

/// A bookmark.
#[derive(Debug, Clone)]
pub struct Bm {
    /// Short name.
    pub short: String,
    /// The snapshot's GUID.
    pub guid: u64,
    /// Its createtxg.
    pub txg: u64,
}

/// One dataset.
#[derive(Debug, Clone)]
pub struct Ds {
    /// Its own GUID.
    pub guid: u64,
    /// Filesystem or volume.
    pub kind: DatasetKind,
    /// `readonly`.
    pub readonly: bool,
    /// User properties (the generation mark among them).
    pub props: BTreeMap<String, String>,
    /// The writes it holds now.
    pub content: BTreeSet<u64>,
    /// Snapshots, oldest first.
    pub snaps: Vec<Snap>,
    /// Bookmarks.
    pub bookmarks: Vec<Bm>,
    /// `receive_resume_token`.
    pub token: Option<String>,
    /// A partially received new dataset (only the token is real).
    pub partial: bool,
    /// `origin` (dataset, snapshot short name) for a clone.
    pub origin: Option<(DatasetName, String)>,
    /// A receive is running into it.
    pub receiving: bool,
}

impl Ds {
    /// An empty filesystem.
    pub fn new(guid: u64) -> Ds {
        Ds {
            guid,
            kind: DatasetKind::Filesystem,
            readonly: false,
            props: BTreeMap::new(),
            content: BTreeSet::new(),
            snaps: Vec::new(),
            bookmarks: Vec::new(),
            token: None,
            partial: false,
            origin: None,
            receiving: false,
        }
    }

    /// The content its `written` is measured against.
    pub fn base_content<'a>(&'a self, world: &'a World, node: &str) -> Option<&'a BTreeSet<u64>> {
        if let Some(s) = self.snaps.last() {
            return Some(&s.content);
        }
        let (d, short) = self.origin.as_ref()?;
        world
            .nodes
            .get(node)?
            .pools
            .get(d)?
            .snaps
            .iter()
            .find(|s| &s.short == short)
            .map(|s| &s.content)
    }

    /// The generation mark, if any.
    pub fn mark(&self) -> Option<Generation> {
        self.props
            .get(GENERATION_PROPERTY)
            .and_then(|v| Generation::parse(v))
    }
}

/// One node.
#[derive(Debug)]
pub struct Node {
    /// Powered on.
    pub power: bool,
    /// Incremented at every power-on: in-flight work from before is stale.
    pub boot: u64,
    /// Its datasets (the disk survives power-offs).
    pub pools: BTreeMap<DatasetName, Ds>,
    /// Its state directory (survives power-offs too).
    pub store: MemStore,
    /// Its BMC.
    pub bmc: Bmc,
    /// Self-fencing: the watchdog resets the node this long after its
    /// keeper stopped petting (its quorum gate closed).
    pub watchdog: Option<Duration>,
    /// Since when it has not been quorate (for the watchdog).
    pub unquorate_since: Option<tokio::time::Instant>,
    /// Cut off from every other node.
    pub isolated: bool,
    /// The jobs whose workload (VM) runs here.
    pub workload: BTreeSet<String>,
    /// Fence levels, in order: `ipmi` (its BMC) or `watchdog`.
    pub fence: Vec<String>,
    /// `tandem ha pause` was run here.
    pub ha_paused: bool,
}

impl Node {
    /// A powered-on node with no datasets.
    pub fn new() -> Node {
        Node {
            power: true,
            boot: 1,
            pools: BTreeMap::new(),
            store: MemStore::new(),
            bmc: Bmc::Up,
            watchdog: None,
            unquorate_since: None,
            isolated: false,
            workload: BTreeSet::new(),
            fence: Vec::new(),
            ha_paused: false,
        }
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

/// A write the workload made and the node acknowledged.
#[derive(Debug, Clone)]
pub struct Ack {
    /// Its id.
    pub id: u64,
    /// Where.
    pub node: String,
    /// Into which dataset.
    pub dataset: DatasetName,
}

/// A broken rule, found when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

/// The whole world.
#[derive(Debug)]
pub struct World {
    /// Wall time at the start.
    pub epoch: DateTime<Utc>,
    /// The start, on tokio's (paused) clock.
    pub start: tokio::time::Instant,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Partitions: nodes in different groups cannot talk; `None`: one network.
    pub partition: Option<Vec<BTreeSet<String>>>,
    /// Next GUID.
    pub next_guid: u64,
    /// Next transaction group.
    pub next_txg: u64,
    /// Next write id.
    pub next_write: u64,
    /// Acknowledged writes.
    pub acks: Vec<Ack>,
    /// The log.
    pub log: Vec<String>,
    /// Broken rules found as they happened.
    pub violations: Vec<Violation>,
    /// The next transfer into this (node, dataset) is cut mid-stream.
    pub cut_next: BTreeSet<(String, DatasetName)>,
    /// How long a transfer takes.
    pub transfer_time: Duration,
    /// Running tasks (commands, daemons) by the node they run on.
    pub tasks: Vec<(String, tokio::task::AbortHandle)>,
    /// Running receives: (node, dataset, task).
    pub receives: Vec<(String, DatasetName, tokio::task::AbortHandle)>,
    /// votequorum's `two_node` (a two-node cluster stays quorate with
    /// one node).
    pub two_node: bool,
    /// A QDevice: one more vote, given to one partition (the larger; on a
    /// tie, the one with the node whose name sorts first), from the nodes
    /// that reach it (powered on and not isolated).
    pub qdevice: bool,
}

/// The world, shared.
pub type Shared = Arc<Mutex<World>>;

/// Locks the world (a poisoned lock still holds a consistent world: every
/// change is made under it without awaiting).
pub fn lock(w: &Shared) -> MutexGuard<'_, World> {
    match w.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl World {
    /// An empty world starting now.
    pub fn new() -> World {
        World {
            epoch: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            start: tokio::time::Instant::now(),
            nodes: BTreeMap::new(),
            partition: None,
            next_guid: 1000,
            next_txg: 1,
            next_write: 1,
            acks: Vec::new(),
            log: Vec::new(),
            violations: Vec::new(),
            cut_next: BTreeSet::new(),
            transfer_time: Duration::from_secs(2),
            tasks: Vec::new(),
            receives: Vec::new(),
            two_node: false,
            qdevice: false,
        }
    }

    /// Seconds since the start, virtual.
    pub fn elapsed(&self) -> Duration {
        tokio::time::Instant::now().duration_since(self.start)
    }

    /// Wall time now.
    pub fn now(&self) -> DateTime<Utc> {
        self.epoch + chrono::Duration::from_std(self.elapsed()).unwrap_or_default()
    }

    /// Appends a line to the log, stamped with the virtual time.
    pub fn say(&mut self, who: &str, what: impl AsRef<str>) {
        let t = self.elapsed();
        self.log.push(format!(
            "{:>7.1} {:<4} {}",
            t.as_secs_f64(),
            who,
            what.as_ref()
        ));
    }

    /// Records a broken rule (and logs it).
    pub fn violate(&mut self, what: String) {
        self.say("!!", format!("VIOLATION: {what}"));
        self.violations.push(Violation(what));
    }

    /// A new GUID.
    pub fn guid(&mut self) -> u64 {
        self.next_guid += 1;
        self.next_guid
    }

    /// A new transaction group.
    pub fn txg(&mut self) -> u64 {
        self.next_txg += 1;
        self.next_txg
    }

    /// Is `node` powered on?
    pub fn up(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| n.power)
    }

    /// Can `a` and `b` talk (both on, same partition, neither isolated)?
    pub fn link(&self, a: &str, b: &str) -> bool {
        if a == b {
            return self.up(a);
        }
        let (Some(na), Some(nb)) = (self.nodes.get(a), self.nodes.get(b)) else {
            return false;
        };
        if !(na.power && nb.power) || na.isolated || nb.isolated {
            return false;
        }
        match &self.partition {
            None => true,
            Some(groups) => groups.iter().any(|g| g.contains(a) && g.contains(b)),
        }
    }

    /// The nodes `node` sees in its corosync partition (itself included),
    /// and whether that partition is quorate (a majority of all nodes).
    pub fn membership(&self, node: &str) -> (BTreeSet<String>, bool) {
        let members: BTreeSet<String> = self
            .nodes
            .keys()
            .filter(|n| self.link(node, n))
            .cloned()
            .collect();
        if !self.up(node) {
            return (members, false);
        }
        if self.qdevice {
            let votes = members.len() + usize::from(self.qdevice_votes_for(&members));
            return (members, votes * 2 > self.nodes.len() + 1);
        }
        if self.two_node && self.nodes.len() == 2 {
            return (members, true);
        }
        let quorate = members.len() * 2 > self.nodes.len();
        (members, quorate)
    }

    /// Whether the QDevice gives its vote to the partition `members`.
    fn qdevice_votes_for(&self, members: &BTreeSet<String>) -> bool {
        let reaches = |n: &String| self.nodes.get(n).is_some_and(|x| x.power && !x.isolated);
        if !members.iter().any(reaches) {
            return false;
        }
        // Every other partition that reaches the QDevice competes.
        let others: Vec<BTreeSet<String>> = self
            .nodes
            .keys()
            .filter(|n| !members.contains(*n) && reaches(n))
            .map(|n| {
                self.nodes
                    .keys()
                    .filter(|m| self.link(n, m))
                    .cloned()
                    .collect()
            })
            .collect();
        others.iter().all(|o| {
            o.len() < members.len()
                || (o.len() == members.len() && members.iter().next() < o.iter().next())
        })
    }

    /// Powers a node off: its workload stops, its running commands and
    /// receives die with it (the caller aborts their tasks).
    pub fn power_off(&mut self, node: &str, why: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            if n.power {
                n.power = false;
                n.workload.clear();
                n.unquorate_since = None;
                self.say(node, format!("powered off ({why})"));
            }
        }
        // Whatever ran there dies with it.
        for (n, t) in &self.tasks {
            if n == node {
                t.abort();
            }
        }
        for (n, _, t) in &self.receives {
            if n == node {
                t.abort();
            }
        }
        self.tasks.retain(|(n, t)| n != node && !t.is_finished());
        self.receives
            .retain(|(n, _, t)| n != node && !t.is_finished());
    }

    /// Powers a node on (a new boot; the workload does not start by itself).
    pub fn power_on(&mut self, node: &str, why: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            if !n.power {
                n.power = true;
                n.boot += 1;
                self.say(node, format!("powered on ({why})"));
            }
        }
    }

    /// Every write any dataset or snapshot on any disk still holds.
    pub fn all_content(&self) -> BTreeSet<u64> {
        let mut all = BTreeSet::new();
        for n in self.nodes.values() {
            for ds in n.pools.values() {
                all.extend(ds.content.iter().copied());
                for s in &ds.snaps {
                    all.extend(s.content.iter().copied());
                }
            }
        }
        all
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}
