//! The quorum gate and the membership: whether this node is in the
//! quorate partition of its corosync cluster (the cluster engine Proxmox
//! nodes already run), and which nodes are in that partition with it.
//!
//! A node without quorum may be the one that is cut off, so it must never
//! promote a replica, and a node that self-fences stops petting its
//! watchdog (it resets). A node absent from a quorate partition for its
//! watchdog timeout plus a margin has reset itself: the evidence of the
//! `watchdog` fence level. All of it comes from [`QuorumSource::probe`];
//! [`QuorumConfig::source`] picks the implementation `[quorum] backend`
//! names, the simulator has its own.
//!
//! # Two backends
//!
//! - `backend = "native"` (the default, built with the `corosync` cargo
//!   feature, which is on by default): [`native::CorosyncQuorum`] talks to
//!   corosync through its own libraries (libvotequorum and libcmap, via the
//!   official `rust-corosync` bindings). votequorum *notifies* a change of
//!   membership or quorum, so a node's departure is an event that wakes
//!   [`QuorumSource::changed`] at once; the view comes from
//!   `votequorum_getinfo` (quorate, votes, `two_node`, the QDevice flags)
//!   and cmap's `nodelist` (the names). A broken connection (corosync
//!   stopped or restarted) is no answer, at once, and the backend
//!   reconnects in the background.
//! - `backend = "tool"`: [`QuorumConfig`] itself runs
//!   `corosync-quorumtool -s` with a timeout and parses its output
//!   ([`parse_status`], a pure function tested on captured real output);
//!   [`QuorumSource::changed`] is a `refresh` timer. It stays for builds
//!   without the `corosync` feature (a machine without Debian's
//!   corosync `-dev` packages: `cargo build --no-default-features`), and
//!   as the operator's fallback should the libraries misbehave. Both
//!   backends give the same answers ([`Quorum`], [`Votes`]) and decide
//!   "no cluster" the same way.
//!
//! The one hard question is "no cluster here" (no gate) versus "a cluster
//! that does not answer" (fail closed: a node that cannot prove quorum has
//! none). With `mode = "auto"` a node counts as clustered when its
//! `corosync.conf` lists two or more nodes, or when corosync answers at
//! all; Debian's corosync package ships a one-node `corosync.conf`, which
//! is not a cluster. `mode = "corosync"` requires the answer, `"off"` never
//! asks.

#[cfg(feature = "corosync")]
pub mod native;
pub mod view;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::agent::BoxFuture;
use crate::config::HumanDuration;

/// Where corosync's config lives (Proxmox copies `/etc/pve/corosync.conf` here).
pub const DEFAULT_COROSYNC_CONF: &str = "/etc/corosync/corosync.conf";
/// The tool asked.
pub const DEFAULT_TOOL: &str = "corosync-quorumtool";
/// How long the tool may take (a stopped corosync makes it hang).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the daemon asks again.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(2);

/// How this node learns whether it has quorum (`mode` in `[quorum]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuorumMode {
    /// corosync when this node is in a corosync cluster, else no gate.
    #[default]
    Auto,
    /// corosync, required: no answer means no quorum.
    Corosync,
    /// No gate: a node that is not in a cluster, or whose operator decided
    /// so.
    Off,
}

/// Which implementation answers (`backend` in `[quorum]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuorumBackend {
    /// corosync's libraries, with change notifications
    /// ([`native::CorosyncQuorum`]); needs the `corosync` feature.
    Native,
    /// `corosync-quorumtool -s`, every `refresh`.
    Tool,
}

/// Whether this build has the native backend (the `corosync` feature).
pub const NATIVE_BUILT: bool = cfg!(feature = "corosync");

impl Default for QuorumBackend {
    /// Native where it is built, else the tool.
    fn default() -> Self {
        if NATIVE_BUILT {
            QuorumBackend::Native
        } else {
            QuorumBackend::Tool
        }
    }
}

impl QuorumBackend {
    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            QuorumBackend::Native => "native",
            QuorumBackend::Tool => "tool",
        }
    }
}

/// The `[quorum]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumConfig {
    /// `auto` (default), `corosync` or `off`.
    #[serde(default)]
    pub mode: QuorumMode,
    /// `native` (corosync's libraries; the default where built) or `tool`
    /// (`corosync-quorumtool`).
    #[serde(default)]
    pub backend: QuorumBackend,
    /// The `corosync-quorumtool` to run (a name on `PATH` or a path).
    #[serde(default = "default_tool")]
    pub tool: PathBuf,
    /// The corosync config that says whether this node is in a cluster
    /// (`auto` only).
    #[serde(default = "default_conf")]
    pub corosync_conf: PathBuf,
    /// How long the tool (or, natively, the first connection) may take
    /// before the answer counts as "no quorum".
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How often the daemon asks (for its watchdog keeper's gate); with the
    /// native backend it also asks at every notification.
    #[serde(default = "default_refresh")]
    pub refresh: HumanDuration,
}

fn default_tool() -> PathBuf {
    PathBuf::from(DEFAULT_TOOL)
}
fn default_conf() -> PathBuf {
    PathBuf::from(DEFAULT_COROSYNC_CONF)
}
fn default_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_TIMEOUT)
}
fn default_refresh() -> HumanDuration {
    HumanDuration(DEFAULT_REFRESH)
}

impl Default for QuorumConfig {
    fn default() -> Self {
        QuorumConfig {
            mode: QuorumMode::Auto,
            backend: QuorumBackend::default(),
            tool: default_tool(),
            corosync_conf: default_conf(),
            timeout: default_timeout(),
            refresh: default_refresh(),
        }
    }
}

/// What `corosync-quorumtool -s` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Votes {
    /// This node's id.
    pub node_id: Option<u32>,
    /// Members in this node's partition.
    pub nodes: u32,
    /// Votes present in this partition.
    pub votes: u32,
    /// Votes the cluster expects.
    pub expected: u32,
    /// Votes needed for quorum.
    pub needed: Option<u32>,
    /// The names of the nodes in this partition (corosync's `Name`
    /// column: the `name` of each `nodelist` entry), this node included.
    pub members: Vec<String>,
    /// votequorum's `two_node` is on: each of two nodes stays quorate
    /// alone, so a cut link makes each side see the other die.
    pub two_node: bool,
    /// A QDevice (corosync-qnetd) is registered and alive: the
    /// tie-breaker that makes the side it votes for the only quorate one.
    pub qdevice: bool,
}

impl Votes {
    /// Does quorum alone decide a split here? Not in a two-node cluster
    /// without a QDevice: both halves of a cut link stay quorate.
    pub fn split_safe(&self) -> bool {
        !self.two_node || self.qdevice
    }
}

impl std::fmt::Display for Votes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} expected votes present",
            self.votes, self.expected
        )?;
        if let Some(n) = self.needed {
            write!(f, ", {n} needed")?;
        }
        write!(
            f,
            ", {} node{} in this partition",
            self.nodes,
            if self.nodes == 1 { "" } else { "s" }
        )
    }
}

/// The answer of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quorum {
    /// This node is not in a corosync cluster (or `mode = "off"`): no gate.
    NoCluster {
        /// Why we think so.
        reason: String,
    },
    /// In the quorate partition.
    Quorate(Votes),
    /// Not quorate: maybe the node that is cut off.
    NotQuorate(Votes),
}

impl Quorum {
    /// Whether this node may promote and go on petting its watchdog.
    pub fn allows(&self) -> bool {
        !matches!(self, Quorum::NotQuorate(_))
    }
}

impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quorum::NoCluster { reason } => write!(f, "no cluster ({reason})"),
            Quorum::Quorate(v) => write!(f, "quorate ({v})"),
            Quorum::NotQuorate(v) => write!(f, "NOT quorate ({v})"),
        }
    }
}

/// Why a probe could not prove quorum; every one counts as "no quorum".
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// The tool could not be started (e.g. not installed while quorum is
    /// required).
    #[error("cannot run {tool}: {source}")]
    Spawn {
        /// The tool.
        tool: String,
        /// Why.
        source: std::io::Error,
    },
    /// The tool did not finish in time (a stopped or overloaded corosync).
    #[error("{tool} did not answer within {}", humantime::format_duration(*after))]
    Timeout {
        /// The tool.
        tool: String,
        /// How long we waited.
        after: Duration,
    },
    /// corosync is configured (or required) but does not answer: not
    /// running, or its IPC failed.
    #[error("{tool}: corosync does not answer ({detail})")]
    Unanswered {
        /// The tool.
        tool: String,
        /// What the tool said and its exit status.
        detail: String,
    },
    /// The tool answered something we do not understand.
    #[error("{tool}: unexpected output ({detail})")]
    Unparsable {
        /// The tool.
        tool: String,
        /// What was wrong.
        detail: String,
    },
}

/// What one run of the tool gave.
struct ToolRun {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Where quorum and membership come from: corosync (through
/// [`QuorumConfig::source`]), or the simulator's cluster.
pub trait QuorumSource: Send + Sync + fmt::Debug {
    /// Asks now whether this node is quorate, and who is in its partition.
    fn probe(&self) -> BoxFuture<'_, Result<Quorum, QuorumError>>;
    /// The names of the nodes the cluster is configured with (corosync's
    /// `nodelist`), where known.
    fn nodelist(&self) -> Option<Vec<String>>;
    /// Resolves when the answer of [`probe`](QuorumSource::probe) may
    /// have changed: at a membership or quorum event where the source has
    /// events, else after a polling interval.
    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(DEFAULT_REFRESH))
    }
    /// Which implementation answers (`native`, `tool`, ...), for
    /// `tandem quorum` and logs.
    fn backend(&self) -> &'static str {
        "other"
    }
}

impl QuorumSource for QuorumConfig {
    fn probe(&self) -> BoxFuture<'_, Result<Quorum, QuorumError>> {
        let qc = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || qc.probe_now())
                .await
                .unwrap_or_else(|e| {
                    Err(QuorumError::Unanswered {
                        tool: DEFAULT_TOOL.into(),
                        detail: format!("the probe panicked: {e}"),
                    })
                })
        })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(self.refresh.0))
    }

    fn nodelist(&self) -> Option<Vec<String>> {
        conf_nodelist(&self.corosync_conf)
    }

    fn backend(&self) -> &'static str {
        "tool"
    }
}

/// The node names of a `corosync.conf`, where it can be read and lists any.
pub fn conf_nodelist(path: &Path) -> Option<Vec<String>> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| conf_nodes(&t))
        .filter(|n| !n.is_empty())
}

impl QuorumConfig {
    /// The source `backend` names: what the daemon, `failover`, the
    /// watchdog keeper's gate and the watchdog fence level ask. Native
    /// sources in one process share one corosync connection.
    ///
    /// `backend = "native"` in a build without the `corosync` feature
    /// falls back to the tool (with an error in the log); tandem-config
    /// refuses such a config before it gets here.
    pub fn source(&self) -> Arc<dyn QuorumSource> {
        match self.backend {
            #[cfg(feature = "corosync")]
            QuorumBackend::Native => Arc::new(native::CorosyncQuorum::new(self.clone())),
            #[cfg(not(feature = "corosync"))]
            QuorumBackend::Native => {
                tracing::error!(
                    "[quorum] backend = \"native\" but this tandem was built without the corosync \
                     feature: asking corosync-quorumtool instead"
                );
                Arc::new(self.clone())
            }
            QuorumBackend::Tool => Arc::new(self.clone()),
        }
    }

    /// Asks corosync whether this node has quorum. Blocks for at most
    /// `timeout` (plus the reaping of a killed tool).
    pub fn probe_now(&self) -> Result<Quorum, QuorumError> {
        if self.mode == QuorumMode::Off {
            return Ok(Quorum::NoCluster {
                reason: "mode = \"off\" in [quorum]".into(),
            });
        }
        let tool = self.tool.display().to_string();
        // Auto: is this node in a cluster by its config? Read before the
        // tool so a missing tool on a clustered node fails closed.
        let clustered = match self.mode {
            QuorumMode::Corosync => Some("mode = \"corosync\"".to_owned()),
            _ => cluster_conf_nodes(&self.corosync_conf).and_then(|n| {
                (n >= 2).then(|| format!("{} lists {n} nodes", self.corosync_conf.display()))
            }),
        };
        let run = match run_tool(&self.tool, &["-s"], self.timeout.0) {
            Ok(r) => r,
            Err(QuorumError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && clustered.is_none() =>
            {
                return Ok(Quorum::NoCluster {
                    reason: format!("{tool} is not installed"),
                });
            }
            Err(e) => return Err(e),
        };
        match parse_status(&run.stdout) {
            Ok(Some((quorate, votes))) => {
                // The exit status agrees (0 quorate, 2 not) or we say no.
                if quorate && run.status == Some(0) {
                    Ok(Quorum::Quorate(votes))
                } else {
                    Ok(Quorum::NotQuorate(votes))
                }
            }
            Ok(None) => {
                let detail = format!(
                    "{}, exit status {}",
                    first_line(&run.stderr, &run.stdout),
                    run.status.map_or("none (killed)".into(), |s| s.to_string())
                );
                match clustered {
                    Some(_) => Err(QuorumError::Unanswered { tool, detail }),
                    None => Ok(Quorum::NoCluster {
                        reason: format!(
                            "corosync is not running ({detail}) and {} lists no cluster",
                            self.corosync_conf.display()
                        ),
                    }),
                }
            }
            Err(detail) => Err(QuorumError::Unparsable { tool, detail }),
        }
    }
}

fn first_line<'a>(a: &'a str, b: &'a str) -> &'a str {
    a.lines()
        .chain(b.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output")
}

/// Runs the tool with a deadline, draining its output on other threads so
/// it never blocks on a full pipe; kills it when the deadline passes.
fn run_tool(tool: &Path, args: &[&str], timeout: Duration) -> Result<ToolRun, QuorumError> {
    let name = tool.display().to_string();
    let started = Instant::now();
    let mut child = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| QuorumError::Spawn {
            tool: name.clone(),
            source,
        })?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                s = String::from_utf8_lossy(&buf).into_owned();
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = started + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(QuorumError::Timeout {
                    tool: name.clone(),
                    after: timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(QuorumError::Spawn {
                    tool: name.clone(),
                    source,
                });
            }
        }
    };
    // After a timeout the readers are left behind: a grandchild could
    // still hold the pipes open.
    let status = status?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    tracing::debug!(tool = %name, ?args, status = ?status.code(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "quorum tool ran");
    Ok(ToolRun {
        status: status.code(),
        stdout,
        stderr,
    })
}

/// Parses `corosync-quorumtool -s` output: `Ok(None)` when it holds no
/// status at all (corosync did not answer: the tool printed only an error),
/// `Ok(Some((quorate, votes)))`, or an error naming what was odd.
///
/// Only the "Quorate:" line decides; the vote counts are for messages.
pub fn parse_status(out: &str) -> Result<Option<(bool, Votes)>, String> {
    let mut quorate = None;
    let mut v = Votes {
        node_id: None,
        nodes: 0,
        votes: 0,
        expected: 0,
        needed: None,
        members: Vec::new(),
        two_node: false,
        qdevice: false,
    };
    let num = |val: &str, key: &str| -> Result<u32, String> {
        // "Quorum:           2 Activity blocked": the first word counts.
        let w = val.split_whitespace().next().unwrap_or("");
        w.parse::<u32>()
            .or_else(|_| u32::from_str_radix(w.trim_start_matches("0x"), 16))
            .map_err(|_| format!("{key}: {val:?} is not a number"))
    };
    let mut seen_votes = false;
    let mut in_members = false;
    for line in out.lines() {
        if line.trim() == "Membership information" {
            in_members = true;
            continue;
        }
        if in_members {
            // "    Nodeid      Votes Name", dashes, then "  3  1 n3 (local)".
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() >= 3 && w[1].parse::<u32>().is_ok() && num(w[0], "Nodeid").is_ok() {
                v.members.push(w[2].to_owned());
            }
            continue;
        }
        let Some((key, val)) = line.split_once(':') else {
            continue;
        };
        let (key, val) = (key.trim(), val.trim());
        match key {
            "Quorate" => {
                quorate = Some(match val {
                    "Yes" => true,
                    "No" => false,
                    other => return Err(format!("Quorate: {other:?} is neither Yes nor No")),
                })
            }
            "Nodes" => v.nodes = num(val, key)?,
            "Node ID" => v.node_id = Some(num(val, key)?),
            "Expected votes" => v.expected = num(val, key)?,
            "Total votes" => {
                v.votes = num(val, key)?;
                seen_votes = true;
            }
            "Quorum" => v.needed = Some(num(val, key)?),
            // "Flags:            2Node Quorate WaitForAll Qdevice"
            "Flags" => {
                v.two_node = val.split_whitespace().any(|f| f == "2Node");
                v.qdevice = val.split_whitespace().any(|f| f == "Qdevice");
            }
            _ => {}
        }
    }
    match quorate {
        None if out.contains("Quorum information") => {
            Err("a status without a \"Quorate:\" line".into())
        }
        None => Ok(None),
        Some(q) => {
            if !seen_votes {
                // Another quorum provider than votequorum: no vote counts.
                v.votes = u32::from(q);
            }
            Ok(Some((q, v)))
        }
    }
}

/// How many nodes `corosync.conf` lists in its `nodelist`; `None` when it
/// cannot be read. A tiny reader of corosync's brace format: enough to
/// count `node { }` blocks inside `nodelist { }`.
pub fn cluster_conf_nodes(path: &Path) -> Option<usize> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| count_conf_nodes(&t))
}

/// [`cluster_conf_nodes`] on text.
pub fn count_conf_nodes(text: &str) -> usize {
    conf_node_blocks(text).len()
}

/// The names of the nodes in a `corosync.conf`'s `nodelist`: each node
/// block's `name`, or its `ring0_addr` where it has none (what
/// `corosync-quorumtool` prints then).
pub fn conf_nodes(text: &str) -> Vec<String> {
    conf_node_blocks(text)
        .into_iter()
        .filter_map(|keys| {
            let get = |k: &str| keys.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            get("name").or_else(|| get("ring0_addr"))
        })
        .collect()
}

/// The `key: value` pairs of every `node { }` block inside `nodelist { }`.
fn conf_node_blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stack: Vec<String> = Vec::new();
    let mut nodes: Vec<Vec<(String, String)>> = Vec::new();
    let in_node = |stack: &[String]| {
        stack.len() >= 2 && stack[stack.len() - 1] == "node" && stack[stack.len() - 2] == "nodelist"
    };
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let mut rest = line;
        while !rest.is_empty() {
            let (before, after) = match rest.find(['{', '}']) {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            if in_node(&stack) {
                for part in before.split(';') {
                    if let Some((k, v)) = part.split_once(':') {
                        if let Some(n) = nodes.last_mut() {
                            n.push((k.trim().to_owned(), v.trim().to_owned()));
                        }
                    }
                }
            }
            if after.is_empty() {
                break;
            }
            if after.starts_with('{') {
                let name = before.trim().to_owned();
                if name == "node" && stack.last().is_some_and(|s| s == "nodelist") {
                    nodes.push(Vec::new());
                }
                stack.push(name);
            } else {
                stack.pop();
            }
            rest = &after[1..];
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = include_str!("../testdata/quorum/quorate-three.txt");
    const TWO_OF_THREE: &str = include_str!("../testdata/quorum/quorate-two-of-three.txt");
    const CUT_OFF: &str = include_str!("../testdata/quorum/not-quorate-cut-off.txt");
    const NOT_RUNNING: &str = include_str!("../testdata/quorum/not-running.txt");

    #[test]
    fn parses_real_corosync_output() {
        let (q, v) = parse_status(THREE).expect("ok").expect("status");
        assert!(q);
        assert_eq!(
            v,
            Votes {
                node_id: Some(3),
                nodes: 3,
                votes: 3,
                expected: 3,
                needed: Some(2),
                members: vec!["n1".into(), "n2".into(), "n3".into()],
                two_node: false,
                qdevice: false,
            }
        );
        let (q, v) = parse_status(TWO_OF_THREE).expect("ok").expect("status");
        assert!(q);
        assert_eq!((v.votes, v.expected, v.nodes), (2, 3, 2));
        assert_eq!(v.members, ["n1", "n2"]);
        let (q, v) = parse_status(CUT_OFF).expect("ok").expect("status");
        assert!(!q);
        assert_eq!(v.members, ["n3"]);
        assert_eq!((v.votes, v.expected, v.needed), (1, 3, Some(2)));
        assert_eq!(
            v.to_string(),
            "1 of 3 expected votes present, 2 needed, 1 node in this partition"
        );
        assert_eq!(parse_status(NOT_RUNNING), Ok(None));
        assert_eq!(parse_status(""), Ok(None));
    }

    #[test]
    fn odd_output_is_an_error_not_a_yes() {
        let e = parse_status("Quorum information\n------\nNodes: 3\n").expect_err("odd");
        assert!(e.contains("Quorate"), "{e}");
        let e = parse_status("Quorate: Maybe\n").expect_err("odd");
        assert!(e.contains("Maybe"), "{e}");
        let e =
            parse_status(&THREE.replace("Total votes:      3", "Total votes: x")).expect_err("odd");
        assert!(e.contains("Total votes"), "{e}");
        // Hexadecimal node ids (-H).
        let (_, v) = parse_status(&THREE.replace("Node ID:          3", "Node ID: 0x00000003"))
            .expect("ok")
            .expect("status");
        assert_eq!(v.node_id, Some(3));
    }

    #[test]
    fn counts_the_nodes_of_a_corosync_conf() {
        let debian_default = "totem {\n version: 2\n}\nquorum {\n provider: corosync_votequorum\n}\n\
             nodelist {\n\tnode {\n\t\tname: node1\n\t\tnodeid: 1\n\t\tring0_addr: 127.0.0.1\n\t}\n}\n";
        assert_eq!(count_conf_nodes(debian_default), 1);
        let pve = "logging {\n debug: off\n}\nnodelist {\n  node {\n    name: a\n  }\n  node { name: b }\n  \
             # node { name: c }\n  node {\n    name: c\n  }\n}\ntotem {\n  interface {\n    linknumber: 0\n  }\n}\n";
        assert_eq!(count_conf_nodes(pve), 3);
        assert_eq!(conf_nodes(pve), ["a", "b", "c"]);
        assert_eq!(conf_nodes(debian_default), ["node1"]);
        assert_eq!(
            conf_nodes("nodelist {\n node {\n ring0_addr: 10.0.0.1\n nodeid: 1\n }\n}\n"),
            ["10.0.0.1"]
        );
        assert_eq!(count_conf_nodes("totem { node { } }"), 0);
        assert_eq!(
            cluster_conf_nodes(Path::new("/nonexistent/corosync.conf")),
            None
        );
    }

    fn fake_tool(dir: &Path, name: &str, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    fn cfg(mode: QuorumMode, tool: PathBuf, conf: PathBuf) -> QuorumConfig {
        QuorumConfig {
            mode,
            tool,
            backend: QuorumBackend::Tool,
            corosync_conf: conf,
            timeout: HumanDuration(Duration::from_millis(500)),
            ..QuorumConfig::default()
        }
    }

    #[test]
    fn probe_decides_between_no_cluster_and_no_quorum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let three = d.join("three.conf");
        std::fs::write(
            &three,
            "nodelist {\n node {\n ring0_addr: a\n }\n node {\n ring0_addr: b\n }\n node {\n ring0_addr: c\n }\n}\n",
        )
        .expect("write");
        let none = d.join("absent.conf");
        let missing = d.join("no-such-tool");
        std::fs::write(d.join("cut"), CUT_OFF).expect("write");
        std::fs::write(d.join("three"), THREE).expect("write");
        let down = fake_tool(
            d,
            "down",
            "echo 'Cannot initialize CMAP service' >&2; exit 1",
        );
        let p = |m, t: &PathBuf, c: &PathBuf| cfg(m, t.clone(), c.clone()).probe_now();
        use QuorumMode::*;

        // Not installed: no cluster unless one is configured or required.
        assert!(matches!(
            p(Auto, &missing, &none),
            Ok(Quorum::NoCluster { .. })
        ));
        assert!(matches!(
            p(Auto, &missing, &three),
            Err(QuorumError::Spawn { .. })
        ));
        assert!(matches!(
            p(Corosync, &missing, &none),
            Err(QuorumError::Spawn { .. })
        ));
        // Installed, not running.
        let r = p(Auto, &down, &none);
        assert!(
            matches!(&r, Ok(Quorum::NoCluster { reason }) if reason.contains("Cannot initialize CMAP")),
            "{r:?}"
        );
        let r = p(Auto, &down, &three);
        assert!(
            matches!(&r, Err(QuorumError::Unanswered { detail, .. }) if detail.contains("exit status 1")),
            "{r:?}"
        );
        assert!(matches!(
            p(Corosync, &down, &none),
            Err(QuorumError::Unanswered { .. })
        ));
        // Off never asks.
        assert!(matches!(
            p(Off, &down, &three),
            Ok(Quorum::NoCluster { .. })
        ));
        // Answers.
        let cut = fake_tool(
            d,
            "cut-off",
            &format!("cat {}; exit 2", d.join("cut").display()),
        );
        assert!(matches!(p(Auto, &cut, &none), Ok(Quorum::NotQuorate(_))));
        let yes = fake_tool(
            d,
            "yes",
            &format!("cat {}; exit 0", d.join("three").display()),
        );
        assert!(matches!(p(Auto, &yes, &none), Ok(Quorum::Quorate(_))));
        // "Yes" with a failing exit status is not believed.
        let odd = fake_tool(
            d,
            "odd",
            &format!("cat {}; exit 1", d.join("three").display()),
        );
        assert!(matches!(
            p(Corosync, &odd, &none),
            Ok(Quorum::NotQuorate(_))
        ));
        // A hung corosync: the tool is killed at the deadline.
        let hung = fake_tool(d, "hung", "exec sleep 30");
        let t = Instant::now();
        assert!(matches!(
            p(Auto, &hung, &none),
            Err(QuorumError::Timeout { .. })
        ));
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
