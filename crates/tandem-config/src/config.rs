//! The configuration file (TOML): nodes, jobs, this node's watchdog and
//! quorum. Parsed strictly (unknown keys are errors), then validated as a
//! whole; every error names the file and the key or job at fault.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use std::sync::Arc;
use tandem_repl::job::{
    Endpoint, FailoverMode, Guest, Job, JobHooks, Members, DEFAULT_FAILOVER_DELAY,
    DEFAULT_HOOK_TIMEOUT,
};
use tandem_repl::naming::JobName;

use tandem_fence::config::LevelConfig;
use tandem_fence::quorum::QuorumConfig;
use tandem_fence::watchdog::KeeperConfig;
use tandem_peer::auth::Policy;
use tandem_peer::client::{PeerZfs, SshConnector};
use tandem_peer::tls::{TlsConnector, TlsFiles};
use tandem_zfs::{CliZfs, DatasetName, SendFlags, SshTarget, Transport, WireCompress};

use crate::backend::NodeZfs;
use crate::ConfigError;

/// Default config path.
pub const DEFAULT_PATH: &str = "/etc/tandem/tandem.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    local_node: Option<String>,
    #[serde(default)]
    parallel: Option<usize>,
    #[serde(default)]
    nodes: BTreeMap<String, RawNode>,
    #[serde(default)]
    jobs: BTreeMap<String, RawJob>,
    #[serde(default)]
    serve: RawServe,
    tls: Option<RawTls>,
    watchdog: Option<RawWatchdog>,
    #[serde(default)]
    quorum: QuorumConfig,
    #[serde(default)]
    ha: tandem_ha::auto::AutoConfig,
    #[serde(default)]
    pve: RawPve,
}

/// `[pve]`: where Proxmox VE's cluster filesystem is mounted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPve {
    #[serde(default = "default_pve_root")]
    root: PathBuf,
}

impl Default for RawPve {
    fn default() -> Self {
        RawPve {
            root: default_pve_root(),
        }
    }
}

fn default_pve_root() -> PathBuf {
    PathBuf::from(crate::pve::DEFAULT_ROOT)
}

/// The `[watchdog]` table: the keeper's own keys ([`KeeperConfig`], strict)
/// plus `enabled`. Deserialized by hand so that the keeper's table stays
/// the one definition of its keys (serde's `flatten` cannot be combined
/// with `deny_unknown_fields`).
#[derive(Debug)]
struct RawWatchdog {
    enabled: bool,
    keeper: KeeperConfig,
}

impl<'de> Deserialize<'de> for RawWatchdog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let enabled = match table.remove("enabled") {
            None => true,
            Some(toml::Value::Boolean(b)) => b,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "enabled = {other} is not true or false"
                )))
            }
        };
        let keeper = KeeperConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
            let msg = e.message();
            if msg.contains("expected one of") {
                D::Error::custom(format!("{msg}, `enabled`"))
            } else {
                D::Error::custom(msg)
            }
        })?;
        Ok(RawWatchdog { enabled, keeper })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    #[serde(default)]
    peers: Vec<RawPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/tandem")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    address: String,
    ssh_user: Option<String>,
    ssh_port: Option<u16>,
    ssh_identity: Option<PathBuf>,
    #[serde(default)]
    ssh_options: Vec<String>,
    #[serde(default = "default_zfs")]
    zfs_path: String,
    transport: Option<String>,
    #[serde(default = "default_tandem")]
    tandem_path: String,
    #[serde(default)]
    serve_args: Vec<String>,
    tls_port: Option<u16>,
    /// Fence levels, tried in order.
    #[serde(default)]
    fence: Vec<LevelConfig>,
}

fn default_zfs() -> String {
    "zfs".into()
}

fn default_tandem() -> String {
    "tandem".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    source: Option<String>,
    target: Option<toml::Value>,
    /// Datasets below `source`/`target` (a guest's disks).
    datasets: Option<Vec<String>>,
    /// `source` and everything below it.
    #[serde(default)]
    recursive: bool,
    #[serde(default = "default_interval")]
    interval: String,
    #[serde(default = "default_keep")]
    keep: i64,
    #[serde(default = "default_compress")]
    compress: String,
    #[serde(default = "default_rate")]
    rate_limit: toml::Value,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    compressed: bool,
    #[serde(default)]
    large_blocks: bool,
    #[serde(default)]
    embedded: bool,
    switchover_stop: Option<String>,
    switchover_start: Option<String>,
    #[serde(default)]
    failover: FailoverMode,
    failover_delay: Option<String>,
    on_promote: Option<String>,
    on_promote_timeout: Option<String>,
    on_test: Option<String>,
    on_test_timeout: Option<String>,
    guest: Option<String>,
}

/// A dataset a job works on, for the overlap checks.
struct Claim<'a> {
    role: &'static str,
    end: &'a Endpoint,
    dataset: DatasetName,
    /// It stands for its whole tree (a recursive job's root).
    tree: bool,
}

/// The datasets `job` works on: its two datasets, or for a `datasets`
/// job its members on both sides.
fn claims(job: &Job) -> Vec<Claim<'_>> {
    let tree = job.members == Members::Recursive;
    let mut out = Vec::new();
    for (role, end) in [("source", &job.source), ("target", &job.target)] {
        match &job.members {
            Members::Datasets(rels) => out.extend(rels.iter().filter_map(|r| {
                Some(Claim {
                    role,
                    end,
                    dataset: end.dataset.child(r).ok()?,
                    tree,
                })
            })),
            Members::Itself | Members::Recursive => out.push(Claim {
                role,
                end,
                dataset: end.dataset.clone(),
                tree,
            }),
        }
    }
    out
}

/// Why the datasets `ca` of job `a` and `cb` of job `b` may not both be
/// configured, if they may not.
fn overlap(a: &Job, ca: &Claim<'_>, b: &Job, cb: &Claim<'_>) -> Option<String> {
    if ca.end.node != cb.end.node {
        return None;
    }
    let (x, y) = (&ca.dataset, &cb.dataset);
    let nested = x.is_within(y) || y.is_within(x);
    let show = |c: &Claim<'_>| format!("{}:{}", c.end.node, c.dataset);
    if ca.role == "source" && cb.role == "source" {
        // Shared sources are fine between single-dataset jobs; a guest
        // job's datasets are its own, and a recursive tree takes every
        // dataset below it.
        let guest = a.is_multi() || b.is_multi();
        let clash = (guest && x == y) || (ca.tree && y.is_within(x)) || (cb.tree && x.is_within(y));
        return clash.then(|| {
            if x == y {
                format!(
                    "[jobs.{}] and [jobs.{}] both replicate {}: a dataset of a guest job \
                     (datasets or recursive) may be listed in one job only",
                    a.name,
                    b.name,
                    show(ca)
                )
            } else {
                format!(
                    "[jobs.{}] source {} and [jobs.{}] source {} overlap: a recursive job \
                     takes every dataset below its source, so no other job may replicate one",
                    a.name,
                    show(ca),
                    b.name,
                    show(cb)
                )
            }
        });
    }
    let same_target = ca.role == "target" && cb.role == "target" && ca.end == cb.end;
    if same_target && !a.is_multi() && !b.is_multi() {
        // Reported once, as "also the target of", above.
        return None;
    }
    nested.then(|| {
        format!(
            "[jobs.{}] {} {} and [jobs.{}] {} {} overlap: a job's target may not be, contain \
             or lie within another job's datasets",
            a.name,
            ca.role,
            show(ca),
            b.name,
            cb.role,
            show(cb)
        )
    })
}

/// A job's members from `datasets` and `recursive`: each path relative,
/// made of valid components, listed once; sorted, so that a parent comes
/// before its children (it is received first).
fn members_of(j: &RawJob) -> Result<Members, String> {
    match (&j.datasets, j.recursive) {
        (Some(_), true) => Err(
            "datasets and recursive = true exclude each other: list the \
                                datasets, or replicate the whole tree"
                .into(),
        ),
        (None, true) => Ok(Members::Recursive),
        (None, false) => Ok(Members::Itself),
        (Some(list), false) => {
            if list.is_empty() {
                return Err("datasets is empty: list the datasets below source and \
                            target, or leave it out to replicate source itself"
                    .into());
            }
            let probe = DatasetName::parse("pool").map_err(|e| e.to_string())?;
            let mut seen = BTreeSet::new();
            for d in list {
                let bad = |why: &str| Err(format!("datasets: {d:?} {why}"));
                if d.is_empty() {
                    return bad("is empty");
                }
                if d.starts_with('/') {
                    return bad("is absolute: datasets are relative to source and target");
                }
                if d.split('/').any(|c| c == ".." || c == ".") {
                    return bad(
                        "contains . or ..: datasets are relative to source and target, \
                                and stay below them",
                    );
                }
                if d.split('/').any(str::is_empty) {
                    return bad("has an empty path component");
                }
                if let Err(e) = probe.child(d) {
                    return bad(&format!("is not a valid dataset name: {e}"));
                }
                if !seen.insert(d.clone()) {
                    return bad("is listed twice");
                }
            }
            Ok(Members::Datasets(seen.into_iter().collect()))
        }
    }
}

fn default_interval() -> String {
    "1m".into()
}
fn default_keep() -> i64 {
    3
}
fn default_compress() -> String {
    "auto".into()
}
fn default_rate() -> toml::Value {
    toml::Value::String("0".into())
}
fn yes() -> bool {
    true
}

/// How to reach a node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Local or ssh.
    pub transport: Transport,
    /// Path of `zfs` on that node.
    pub zfs_path: String,
    /// For ssh nodes: talk to `tandem serve --stdio` there (the default), or
    /// run plain `zfs` commands (`transport = "ssh"`).
    pub serve: Option<Vec<String>>,
    /// For `transport = "tls"`: `host:port` of its `tandem serve --listen`.
    pub tls: Option<String>,
    /// Its fence levels (`[[nodes.NAME.fence]]`), in order.
    pub fence: Vec<LevelConfig>,
}

/// Default port of `tandem serve --listen`.
pub const DEFAULT_TLS_PORT: u16 = 7456;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// This node's name.
    pub local_node: String,
    /// Jobs run at once in a cycle.
    pub parallel: usize,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Jobs by name.
    pub jobs: BTreeMap<JobName, Job>,
    /// What each peer may do through `tandem serve` on this node.
    pub serve_peers: BTreeMap<String, Policy>,
    /// This node's TLS material (`[tls]`), for `transport = "tls"` and
    /// `tandem serve --listen`.
    pub tls: Option<TlsFiles>,
    /// This node's self-fencing watchdog keeper (`[watchdog]`), run by the
    /// daemon; `None` when the table is absent or `enabled = false`.
    pub watchdog: Option<KeeperConfig>,
    /// How this node learns whether it has quorum (`[quorum]`): asked by
    /// `failover` and by the watchdog keeper's gate.
    pub quorum: QuorumConfig,
    /// This node's automatic failover (`[ha]`).
    pub ha: tandem_ha::auto::AutoConfig,
    /// Where Proxmox VE's cluster filesystem is (`[pve] root`, default
    /// `/etc/pve`); absent: no PVE here, nothing to check.
    pub pve_root: PathBuf,
}

/// Parses "1m", "90s", "1h30m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like \"30s\", \"1m\" or \"1h\": {e}"))
}

/// Parses a byte rate: an integer, or with K/M/G suffix (powers of 1024).
pub fn parse_rate(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(*i as u64),
        toml::Value::String(s) => {
            let s = s.trim();
            let (num, mult) = match s.char_indices().last() {
                Some((i, c)) if c.is_ascii_alphabetic() => {
                    let m = match c.to_ascii_uppercase() {
                        'K' => 1u64 << 10,
                        'M' => 1 << 20,
                        'G' => 1 << 30,
                        _ => return Err(format!("{s:?}: unknown unit {c:?} (use K, M or G)")),
                    };
                    (&s[..i], m)
                }
                _ => (s, 1),
            };
            let n: u64 = num
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a byte rate like \"0\", \"50M\" or 52428800"))?;
            n.checked_mul(mult)
                .ok_or_else(|| format!("{s:?} is too large"))
        }
        other => Err(format!("{other} is not a byte rate")),
    }
}

fn parse_compress(s: &str) -> Result<WireCompress, String> {
    match s {
        "none" => Ok(WireCompress::None),
        "auto" => Ok(WireCompress::Auto(1)),
        "zstd" => Ok(WireCompress::Zstd(3)),
        _ => {
            let level = s
                .strip_prefix("zstd:")
                .and_then(|l| l.parse::<i32>().ok())
                .ok_or_else(|| format!("{s:?} is not one of none, zstd, zstd:LEVEL, auto"))?;
            if !(1..=19).contains(&level) {
                return Err(format!("zstd level {level} is outside 1..=19"));
            }
            Ok(WireCompress::Zstd(level))
        }
    }
}

fn parse_endpoint(s: &str, nodes: &BTreeMap<String, RawNode>) -> Result<Endpoint, String> {
    let (node, ds) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} must be NODE:DATASET"))?;
    if !nodes.contains_key(node) {
        let known: Vec<&str> = nodes.keys().map(String::as_str).collect();
        return Err(format!(
            "node {node:?} is not defined in [nodes] (known: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ));
    }
    let dataset = DatasetName::parse(ds).map_err(|e| e.to_string())?;
    Ok(Endpoint {
        node: node.to_owned(),
        dataset,
    })
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

impl Config {
    /// The config path: the flag, else `$TANDEM_CONFIG`, else the default.
    pub fn path_from(flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_owned)
            .or_else(|| std::env::var_os("TANDEM_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }

    /// Reads and validates the file, and checks its automatic failovers
    /// against PVE's HA manager ([`Config::check_pve_ha`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg = Self::parse(&text, path)?;
        cfg.check_pve_ha()?;
        Ok(cfg)
    }

    /// Validates config text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            msg: e.to_string().trim_end().to_owned(),
        })?;
        let mut errors = Vec::new();
        let mut nodes = BTreeMap::new();
        let local_node = raw.local_node.clone().unwrap_or_else(hostname);
        for (name, n) in &raw.nodes {
            let key = format!("nodes.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                errors.push(format!(
                    "[{key}]: node names are letters, digits, '-', '_' and '.' (as corosync's \
                     node names; they appear in generation marks)"
                ));
                continue;
            }
            let transport = if n.address == "local" || *name == local_node {
                Transport::Local
            } else {
                if n.address.is_empty()
                    || n.address.starts_with('-')
                    || n.address.contains(char::is_whitespace)
                {
                    errors.push(format!(
                        "[{key}] address {:?} is not a host name or address",
                        n.address
                    ));
                    continue;
                }
                Transport::Ssh(SshTarget {
                    host: n.address.clone(),
                    user: n.ssh_user.clone(),
                    port: n.ssh_port,
                    identity: n.ssh_identity.clone(),
                    options: n.ssh_options.clone(),
                    control_dir: Some(raw.state_dir.join("ssh")),
                })
            };
            if n.zfs_path.is_empty() {
                errors.push(format!("[{key}] zfs_path is empty"));
            }
            let tls = match (n.transport.as_deref(), &transport) {
                (Some("tls"), Transport::Ssh(t)) => {
                    let port = n.tls_port.unwrap_or(DEFAULT_TLS_PORT);
                    if t.host.contains(':') && !t.host.starts_with('[') {
                        Some(format!("[{}]:{port}", t.host))
                    } else {
                        Some(format!("{}:{port}", t.host))
                    }
                }
                _ => None,
            };
            let serve = match (n.transport.as_deref(), &transport) {
                (_, Transport::Local) | (Some("tls"), _) => None,
                (None | Some("serve"), _) => {
                    let mut cmd = vec![n.tandem_path.clone(), "serve".into(), "--stdio".into()];
                    cmd.extend(n.serve_args.iter().cloned());
                    Some(cmd)
                }
                (Some("ssh"), _) => None,
                (Some(other), _) => {
                    errors.push(format!(
                        "[{key}] transport {other:?} is not \"serve\" or \"ssh\""
                    ));
                    continue;
                }
            };
            nodes.insert(
                name.clone(),
                Node {
                    transport,
                    zfs_path: n.zfs_path.clone(),
                    serve,
                    tls,
                    fence: n.fence.clone(),
                },
            );
        }
        let mut serve_peers = BTreeMap::new();
        for (i, p) in raw.serve.peers.iter().enumerate() {
            let key = format!("serve.peers[{i}] ({})", p.name);
            let mut prefixes = |list: &[String], field: &str| -> Vec<DatasetName> {
                list.iter()
                    .filter_map(|d| {
                        DatasetName::parse(d)
                            .map_err(|e| errors.push(format!("[{key}] {field}: {e}")))
                            .ok()
                    })
                    .collect()
            };
            let read = prefixes(&p.read, "read");
            let write = prefixes(&p.write, "write");
            if p.name.is_empty() {
                errors.push(format!("[{key}] name is empty"));
            }
            if serve_peers
                .insert(
                    p.name.clone(),
                    Policy {
                        peer: p.name.clone(),
                        read,
                        write,
                    },
                )
                .is_some()
            {
                errors.push(format!("[{key}] peer {:?} is listed twice", p.name));
            }
        }
        if raw.tls.is_none()
            && raw
                .nodes
                .values()
                .any(|n| n.transport.as_deref() == Some("tls"))
        {
            errors.push(
                "a node uses transport = \"tls\" but there is no [tls] table (cert, key, ca)"
                    .into(),
            );
        }
        let mut jobs = BTreeMap::new();
        let mut targets: BTreeMap<String, String> = BTreeMap::new();
        for (name, j) in &raw.jobs {
            let key = format!("jobs.{name}");
            let jname = match JobName::parse(name) {
                Ok(n) => n,
                Err(e) => {
                    errors.push(format!("[{key}]: {e}"));
                    continue;
                }
            };
            let mut endpoint = |field: &str, v: &Option<String>| -> Option<Endpoint> {
                match v {
                    None => {
                        errors.push(format!("[{key}] {field} is missing (NODE:DATASET)"));
                        None
                    }
                    Some(s) => parse_endpoint(s, &raw.nodes)
                        .map_err(|e| errors.push(format!("[{key}] {field}: {e}")))
                        .ok(),
                }
            };
            let source = endpoint("source", &j.source);
            // One target, or a list of them (fan-out).
            let mut fanout: Vec<Endpoint> = Vec::new();
            let target = match &j.target {
                Some(toml::Value::Array(list)) => {
                    let mut bad = Vec::new();
                    for (i, v) in list.iter().enumerate() {
                        match v {
                            toml::Value::String(t) => match parse_endpoint(t, &raw.nodes) {
                                Ok(ep) => fanout.push(ep),
                                Err(e) => bad.push(format!("[{key}] target[{i}]: {e}")),
                            },
                            other => bad.push(format!(
                                "[{key}] target[{i}] must be a string NODE:DATASET, not a {}",
                                other.type_str()
                            )),
                        }
                    }
                    if list.is_empty() {
                        bad.push(format!(
                            "[{key}] target is an empty list: name one NODE:DATASET or several"
                        ));
                    }
                    let mut nodes_seen = BTreeSet::new();
                    for ep in &fanout {
                        if !nodes_seen.insert(ep.node.clone()) {
                            bad.push(format!(
                                "[{key}] target lists node {} twice: a fan-out job sends to \
                                 each node once (its state and holds are kept per node)",
                                ep.node
                            ));
                        }
                    }
                    if bad.is_empty() {
                        let first = fanout.first().cloned();
                        if fanout.len() == 1 {
                            fanout.clear();
                        }
                        first
                    } else {
                        errors.extend(bad);
                        None
                    }
                }
                Some(toml::Value::String(t)) => endpoint("target", &Some(t.clone())),
                Some(other) => {
                    errors.push(format!(
                        "[{key}] target must be a string NODE:DATASET or a list of them, not a {}",
                        other.type_str()
                    ));
                    None
                }
                None => endpoint("target", &None),
            };
            let members = members_of(j)
                .map_err(|e| errors.push(format!("[{key}] {e}")))
                .ok();
            let interval = parse_duration(&j.interval)
                .map_err(|e| errors.push(format!("[{key}] interval: {e}")))
                .ok();
            if interval.is_some_and(|i| i < Duration::from_secs(1)) {
                errors.push(format!("[{key}] interval must be at least 1s"));
            }
            if !(1..=10_000).contains(&j.keep) {
                errors.push(format!("[{key}] keep = {} must be between 1 and 10000 (the newest common snapshot is always kept)", j.keep));
            }
            let compress = parse_compress(&j.compress)
                .map_err(|e| errors.push(format!("[{key}] compress: {e}")))
                .ok();
            let rate = parse_rate(&j.rate_limit)
                .map_err(|e| errors.push(format!("[{key}] rate_limit: {e}")))
                .ok();
            let mut opt_duration = |k: &str, v: &Option<String>, default: Duration| match v {
                None => Some(default),
                Some(v) => parse_duration(v)
                    .map_err(|e| errors.push(format!("[{key}] {k}: {e}")))
                    .ok(),
            };
            let failover_delay =
                opt_duration("failover_delay", &j.failover_delay, DEFAULT_FAILOVER_DELAY);
            let on_promote_timeout = opt_duration(
                "on_promote_timeout",
                &j.on_promote_timeout,
                DEFAULT_HOOK_TIMEOUT,
            );
            let on_test_timeout =
                opt_duration("on_test_timeout", &j.on_test_timeout, DEFAULT_HOOK_TIMEOUT);
            let guest = match j.guest.as_deref().map(Guest::parse).transpose() {
                Ok(g) => g,
                Err(e) => {
                    errors.push(format!("[{key}] guest: {e}"));
                    None
                }
            };
            for (k, v) in [("on_promote", &j.on_promote), ("on_test", &j.on_test)] {
                if v.as_deref().is_some_and(|c| c.trim().is_empty()) {
                    errors.push(format!("[{key}] {k} is empty: leave it out for no hook"));
                }
            }
            let (
                Some(source),
                Some(target),
                Some(interval),
                Some(wire),
                Some(rate_limit),
                Some(failover_delay),
                Some(on_promote_timeout),
                Some(on_test_timeout),
                Some(members),
            ) = (
                source,
                target,
                interval,
                compress,
                rate,
                failover_delay,
                on_promote_timeout,
                on_test_timeout,
                members,
            )
            else {
                continue;
            };
            let all_targets = if fanout.is_empty() {
                vec![target.clone()]
            } else {
                fanout.clone()
            };
            if let Some(t) = all_targets.iter().find(|t| {
                source.node == t.node
                    && (source.dataset.is_within(&t.dataset)
                        || t.dataset.is_within(&source.dataset))
            }) {
                errors.push(format!("[{key}] source {source} and target {t} overlap"));
                continue;
            }
            if !fanout.is_empty() && j.failover == FailoverMode::Auto {
                errors.push(format!(
                    "[{key}] failover = \"auto\" with several targets is not supported yet: \
                     which replica takes over must be decided first (a fan-out job fails over \
                     by hand, see `tandem failover`)"
                ));
            }
            // Guest jobs may share a target's parent: their members are
            // checked one by one below.
            let shared_parent = matches!(members, Members::Datasets(_));
            for t in &all_targets {
                if let Some(other) = (!shared_parent)
                    .then(|| targets.insert(t.to_string(), name.clone()))
                    .flatten()
                {
                    errors.push(format!(
                        "[{key}] target {t} is also the target of job {other}"
                    ));
                }
            }
            let flags = SendFlags {
                raw: j.raw,
                compressed: j.compressed,
                large_blocks: j.large_blocks,
                embedded: j.embedded,
            };
            jobs.insert(
                jname.clone(),
                Job {
                    name: jname,
                    source,
                    target,
                    interval,
                    keep: usize::try_from(j.keep).unwrap_or(1),
                    wire,
                    rate_limit,
                    enabled: j.enabled,
                    flags,
                    hooks: JobHooks {
                        switchover_stop: j.switchover_stop.clone(),
                        switchover_start: j.switchover_start.clone(),
                        on_promote: j.on_promote.clone(),
                        on_promote_timeout,
                        on_test: j.on_test.clone(),
                        on_test_timeout,
                    },
                    failover: j.failover,
                    failover_delay,
                    guest,
                    members,
                    fanout,
                },
            );
        }
        // A job's target is received into, rolled back, renamed aside by
        // `reverse`: nothing of another job may live in it, contain it or be
        // it. Two single-dataset jobs may share a source (each snapshots it
        // under its own names); a dataset of a guest job (`datasets`,
        // `recursive`) belongs to that job alone, since it is promoted and
        // turned around with its siblings.
        let legs: Vec<Job> = jobs.values().flat_map(Job::legs).collect();
        let all: Vec<&Job> = legs.iter().collect();
        for (i, a) in all.iter().enumerate() {
            // A fan-out job's legs share its source, and their targets are
            // on different nodes.
            for b in all[i + 1..].iter().filter(|b| b.name != a.name) {
                for ca in claims(a) {
                    for cb in claims(b) {
                        if let Some(why) = overlap(a, &ca, b, &cb) {
                            errors.push(why);
                        }
                    }
                }
            }
        }
        for j in jobs.values().filter(|j| j.failover == FailoverMode::Auto) {
            if raw.quorum.mode == tandem_fence::quorum::QuorumMode::Off {
                errors.push(format!(
                    "[jobs.{}] failover = \"auto\" needs corosync's membership and quorum, \
                     but [quorum] mode = \"off\" (use \"corosync\" or \"auto\", or failover = \"manual\")",
                    j.name
                ));
            }
            for ep in [&j.source, &j.target] {
                if nodes.get(&ep.node).is_some_and(|n| n.fence.is_empty()) {
                    errors.push(format!(
                        "[jobs.{}] failover = \"auto\" needs fence levels for node {} \
                         ([[nodes.{}.fence]]): a replica is promoted only once its primary is \
                         confirmed off",
                        j.name, ep.node, ep.node
                    ));
                }
            }
        }
        if raw.quorum.timeout.0.is_zero() || raw.quorum.refresh.0.is_zero() {
            errors.push("[quorum] timeout and refresh must be longer than zero".into());
        }
        if raw.quorum.backend == tandem_fence::quorum::QuorumBackend::Native
            && !tandem_fence::quorum::NATIVE_BUILT
        {
            errors.push(
                "[quorum] backend = \"native\": this tandem was built without the corosync \
                 feature (corosync's libraries); use backend = \"tool\""
                    .into(),
            );
        }
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: errors,
            });
        }
        Ok(Config {
            path: path.to_owned(),
            state_dir: raw.state_dir,
            local_node,
            parallel: raw.parallel.unwrap_or(4).clamp(1, 64),
            nodes,
            jobs,
            serve_peers,
            tls: raw.tls.map(|t| TlsFiles {
                cert: t.cert,
                key: t.key,
                ca: t.ca,
            }),
            watchdog: raw.watchdog.filter(|w| w.enabled).map(|w| w.keeper),
            quorum: raw.quorum,
            ha: raw.ha,
            pve_root: raw.pve.root,
        })
    }

    /// Refuses a job with `failover = "auto"` whose guest Proxmox VE's own
    /// HA manager manages (`PVE_ROOT/ha/resources.cfg`): two managers must
    /// never act on one guest. Nothing to check where there is no PVE (the
    /// root or the file does not exist).
    ///
    /// Part of [`Config::load`] (so `daemon`, its reload and every command
    /// refuse such a config), not of [`Config::parse`], which reads only
    /// the text it is given. The file lives on pmxcfs and can change while
    /// the daemon runs: automatic failover calls this again before it acts.
    pub fn check_pve_ha(&self) -> Result<(), ConfigError> {
        let file = self.pve_root.join(crate::pve::RESOURCES);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ConfigError::Invalid {
                    path: self.path.clone(),
                    problems: vec![format!(
                        "cannot read {} to check which guests PVE's HA manager manages: {e}",
                        file.display()
                    )],
                })
            }
        };
        let managed = crate::pve::managed_services(&text);
        let problems: Vec<String> = self
            .jobs
            .values()
            .filter(|j| j.failover == FailoverMode::Auto)
            .filter_map(|j| j.guest.filter(|g| managed.contains(g)).map(|g| (j, g)))
            .map(|(j, g)| {
                format!(
                    "[jobs.{}] failover = \"auto\" for guest {g}, which Proxmox VE's own HA manager \
                     manages ({}): two managers must never act on one guest. Remove it from PVE's HA \
                     (`ha-manager remove {g}`) or use failover = \"manual\"",
                    j.name,
                    file.display()
                )
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: self.path.clone(),
                problems,
            })
        }
    }

    /// A ZFS backend per node: local `zfs`, `zfs` over ssh, or a remote
    /// `tandem serve` through ssh.
    pub fn backends(&self) -> Result<BTreeMap<String, NodeZfs>, ConfigError> {
        let mut tls_client = None;
        self.nodes
            .iter()
            .map(|(n, node)| {
                if let (Some(addr), Some(files)) = (&node.tls, &self.tls) {
                    if tls_client.is_none() {
                        tls_client = Some(tandem_peer::tls::client_config(files).map_err(|e| {
                            ConfigError::Tls {
                                path: self.path.clone(),
                                msg: e.to_string(),
                            }
                        })?);
                    }
                    let config = tls_client.clone().ok_or_else(|| ConfigError::Tls {
                        path: self.path.clone(),
                        msg: "no TLS client configuration".into(),
                    })?;
                    let c = TlsConnector {
                        addr: addr.clone(),
                        node: n.clone(),
                        config,
                    };
                    return Ok((
                        n.clone(),
                        NodeZfs::Peer(PeerZfs::new(n, &self.local_node, Arc::new(c))),
                    ));
                }
                let z = match (&node.transport, &node.serve) {
                    (Transport::Ssh(t), Some(remote)) => {
                        let c = SshConnector {
                            target: t.clone(),
                            remote: remote.clone(),
                        };
                        NodeZfs::Peer(PeerZfs::new(n, &self.local_node, Arc::new(c)))
                    }
                    _ => NodeZfs::Cli(CliZfs::new(n, node.transport.clone(), &node.zfs_path)),
                };
                Ok((n.clone(), z))
            })
            .collect()
    }

    /// The local `zfs`, for `tandem serve`.
    pub fn local_zfs(&self) -> CliZfs {
        let path = self
            .nodes
            .get(&self.local_node)
            .map(|n| n.zfs_path.clone())
            .unwrap_or_else(default_zfs);
        CliZfs::new(&self.local_node, Transport::Local, &path)
    }

    /// Is this node this machine?
    pub fn is_local(&self, node: &str) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| matches!(n.transport, Transport::Local))
    }

    /// The nodes that are this machine (`local_node`, and every node with
    /// `address = "local"`).
    pub fn local_nodes(&self) -> std::collections::BTreeSet<String> {
        let mut s: std::collections::BTreeSet<String> = self
            .nodes
            .keys()
            .filter(|n| self.is_local(n))
            .cloned()
            .collect();
        s.insert(self.local_node.clone());
        s
    }

    /// The node named `node`, or an error naming the known ones.
    pub fn node(&self, node: &str) -> Result<&Node, ConfigError> {
        self.nodes
            .get(node)
            .ok_or_else(|| ConfigError::UnknownNode {
                path: self.path.clone(),
                node: node.to_owned(),
                known: self.nodes.keys().cloned().collect(),
            })
    }

    /// The named jobs, or all enabled jobs if `names` is empty.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Job>, ConfigError> {
        if names.is_empty() {
            return Ok(self.jobs.values().filter(|j| j.enabled).collect());
        }
        names
            .iter()
            .map(|n| {
                JobName::parse(n)
                    .ok()
                    .and_then(|j| self.jobs.get(&j))
                    .ok_or_else(|| ConfigError::UnknownJob {
                        path: self.path.clone(),
                        job: n.clone(),
                        known: self.jobs.keys().map(|k| k.to_string()).collect(),
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
state_dir = "/tmp/x"
local_node = "trinity"
[nodes.oracle]
address = "10.0.0.1"
ssh_port = 2222
[[nodes.oracle.fence]]
kind = "ipmi"
host = "10.0.0.101"
username = "admin"
password_file = "/etc/tandem/oracle.ipmi"
[nodes.trinity]
address = "local"
[jobs.vm-1001]
source = "oracle:rpool/data/vm-1001-disk-0"
target = "trinity:rpool/replica/vm-1001-disk-0"
interval = "1m"
keep = 3
compress = "zstd:5"
rate_limit = "50M"
"#;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("/etc/t.toml"))
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn jobs_may_not_reach_into_each_others_targets() {
        let two = |a: (&str, &str), b: (&str, &str)| {
            format!(
                "[nodes.x]\naddress = \"local\"\n[nodes.y]\naddress = \"10.0.0.2\"\n\
                 [jobs.a]\nsource = \"{}\"\ntarget = \"{}\"\n[jobs.b]\nsource = \"{}\"\ntarget = \"{}\"\n",
                a.0, a.1, b.0, b.1
            )
        };
        let parse = |t: &str| Config::parse(t, Path::new("/etc/t.toml"));
        // nested replicas
        let e = err(&two(("x:tank/a", "y:tank/r"), ("x:tank/b", "y:tank/r/b")));
        assert!(
            e.contains("[jobs.a] target y:tank/r and [jobs.b] target y:tank/r/b overlap"),
            "{e}"
        );
        // a replica that is another job's source (a cascade would snapshot the replica)
        let e = err(&two(("x:tank/a", "y:tank/r"), ("y:tank/r", "x:tank/c")));
        assert!(
            e.contains("[jobs.a] target y:tank/r and [jobs.b] source y:tank/r overlap"),
            "{e}"
        );
        // a source inside another job's replica
        let e = err(&two(("x:tank/a", "y:tank/r"), ("y:tank/r/own", "x:tank/c")));
        assert!(e.contains("overlap"), "{e}");
        // the same target twice is reported once, as before
        let e = err(&two(("x:tank/a", "y:tank/r"), ("x:tank/b", "y:tank/r")));
        assert!(e.contains("is also the target of job a"), "{e}");
        assert!(!e.contains("overlap"), "{e}");
        // allowed: siblings, one source to two targets, the same path on other nodes
        assert!(parse(&two(("x:tank/a", "y:tank/r/a"), ("x:tank/b", "y:tank/r/b"))).is_ok());
        assert!(parse(&two(("x:tank/a", "y:tank/r1"), ("x:tank/a", "y:tank/r2"))).is_ok());
        assert!(parse(&two(("x:tank/a", "y:tank/a"), ("y:tank/b", "x:tank/b"))).is_ok());
    }

    #[test]
    fn guest_jobs_list_datasets_or_a_tree_and_own_them() {
        let head = "[nodes.x]\naddress = \"local\"\n[nodes.y]\naddress = \"10.0.0.2\"\n";
        let job = |name: &str, src: &str, tgt: &str, extra: &str| {
            format!("[jobs.{name}]\nsource = \"{src}\"\ntarget = \"{tgt}\"\n{extra}\n")
        };
        let parse = |t: String| Config::parse(&format!("{head}{t}"), Path::new("/etc/t.toml"));
        let bad = |t: String| parse(t).expect_err("invalid").to_string();
        let disks = "datasets = [\"vm-100-disk-1\", \"vm-100-disk-0\", \"vm-100-tpm\"]";
        let c = parse(job("vm100", "x:rpool/data", "y:tank/replica", disks)).expect("valid");
        let j = c.jobs.values().next().expect("job");
        assert_eq!(
            j.members,
            Members::Datasets(vec![
                "vm-100-disk-0".into(),
                "vm-100-disk-1".into(),
                "vm-100-tpm".into()
            ])
        );
        let m = j.configured_members();
        assert_eq!(m[1].source.to_string(), "x:rpool/data/vm-100-disk-1");
        assert_eq!(m[1].target.to_string(), "y:tank/replica/vm-100-disk-1");
        // Two guests into one replica parent: allowed, their disks differ.
        let two = job("vm100", "x:rpool/data", "y:tank/replica", disks)
            + &job(
                "vm101",
                "x:rpool/data",
                "y:tank/replica",
                "datasets = [\"vm-101-disk-0\"]",
            );
        assert!(parse(two).is_ok());
        let r = parse(job("ct", "x:rpool/ct", "y:tank/ct", "recursive = true")).expect("valid");
        assert_eq!(
            r.jobs.values().next().map(|j| &j.members),
            Some(&Members::Recursive)
        );

        for (extra, want) in [
            (
                "datasets = [\"a\", \"a\"]",
                "datasets: \"a\" is listed twice",
            ),
            (
                "datasets = [\"../etc\"]",
                "datasets: \"../etc\" contains . or ..",
            ),
            ("datasets = [\"a/./b\"]", "contains . or .."),
            (
                "datasets = [\"/rpool/x\"]",
                "datasets: \"/rpool/x\" is absolute",
            ),
            ("datasets = [\"a//b\"]", "has an empty path component"),
            ("datasets = [\"\"]", "datasets: \"\" is empty"),
            ("datasets = [\"a@s\"]", "is not a valid dataset name"),
            ("datasets = []", "datasets is empty"),
            ("datasets = [\"a\"]\nrecursive = true", "exclude each other"),
        ] {
            let e = bad(job("g", "x:rpool/data", "y:tank/replica", extra));
            assert!(
                e.contains(&format!("[jobs.g] {want}")) || e.contains(want),
                "{extra}: {e}"
            );
        }
        // A disk listed in two guest jobs.
        let e = bad(job(
            "a",
            "x:rpool/data",
            "y:tank/ra",
            "datasets = [\"vm-1-disk-0\"]",
        ) + &job(
            "b",
            "x:rpool/data",
            "y:tank/rb",
            "datasets = [\"vm-1-disk-0\"]",
        ));
        assert!(
            e.contains("[jobs.a] and [jobs.b] both replicate x:rpool/data/vm-1-disk-0"),
            "{e}"
        );
        // ... or in a guest job and a single-dataset job.
        let e = bad(job(
            "a",
            "x:rpool/data",
            "y:tank/ra",
            "datasets = [\"vm-1-disk-0\"]",
        ) + &job("b", "x:rpool/data/vm-1-disk-0", "y:tank/rb", ""));
        assert!(e.contains("both replicate x:rpool/data/vm-1-disk-0"), "{e}");
        // A recursive job overlapping another job's source.
        let e = bad(job("a", "x:rpool/ct", "y:tank/ct", "recursive = true")
            + &job("b", "x:rpool/ct/sub", "y:tank/sub", ""));
        assert!(
            e.contains("[jobs.a] source x:rpool/ct and [jobs.b] source x:rpool/ct/sub overlap"),
            "{e}"
        );
        // A guest job's replica disk that another job's replica contains.
        let e = bad(job("a", "x:rpool/data", "y:tank/r", "datasets = [\"d0\"]")
            + &job("b", "x:rpool/other", "y:tank/r/d0", ""));
        assert!(
            e.contains("[jobs.a] target y:tank/r/d0 and [jobs.b] target y:tank/r/d0 overlap"),
            "{e}"
        );
    }

    #[test]
    fn fan_out_lists_targets_on_distinct_nodes() {
        let head = "[nodes.x]\naddress = \"local\"\n[nodes.y]\naddress = \"10.0.0.2\"\n\
                    [nodes.z]\naddress = \"10.0.0.3\"\n";
        let parse = |t: &str| Config::parse(&format!("{head}{t}"), Path::new("/etc/t.toml"));
        let bad = |t: &str| parse(t).expect_err("invalid").to_string();
        let c = parse(
            "[jobs.f]\nsource = \"x:rpool/a\"\ntarget = [\"y:tank/a\", \"z:tank/b\"]\n\
             datasets = [\"d0\", \"d1\"]\n",
        )
        .expect("valid");
        let j = c.jobs.values().next().expect("job");
        assert!(j.is_fanout());
        assert_eq!(j.target.to_string(), "y:tank/a");
        let legs = j.legs();
        let shown: Vec<String> = legs
            .iter()
            .map(|l| format!("{} {}", l.state_key(), l.target))
            .collect();
        assert_eq!(shown, ["f@y y:tank/a", "f@z z:tank/b"]);
        assert!(legs.iter().all(|l| l.name.as_str() == "f"));
        // A one-entry list is a plain job.
        let c =
            parse("[jobs.f]\nsource = \"x:rpool/a\"\ntarget = [\"y:tank/a\"]\n").expect("valid");
        let j = c.jobs.values().next().expect("job");
        assert!(!j.is_fanout());
        assert_eq!(j.state_key().as_str(), "f");
        for (targets, want) in [
            ("[]", "[jobs.f] target is an empty list"),
            (
                "[\"y:tank/a\", \"y:tank/b\"]",
                "[jobs.f] target lists node y twice",
            ),
            (
                "[\"y:tank/a\", 3]",
                "[jobs.f] target[1] must be a string NODE:DATASET",
            ),
            ("[\"y:tank/a\", \"w:tank/a\"]", "[jobs.f] target[1]: "),
            (
                "[\"y:tank/a\", \"x:rpool/a/r\"]",
                "[jobs.f] source x:rpool/a and target x:rpool/a/r overlap",
            ),
            (
                "3",
                "[jobs.f] target must be a string NODE:DATASET or a list of them",
            ),
        ] {
            let e = bad(&format!(
                "[jobs.f]\nsource = \"x:rpool/a\"\ntarget = {targets}\n"
            ));
            assert!(e.contains(want), "{targets}: {e}");
        }
        // Each target is checked against other jobs, not only the first.
        let e = bad(
            "[jobs.f]\nsource = \"x:rpool/a\"\ntarget = [\"y:tank/a\", \"z:tank/b\"]\n\
             [jobs.g]\nsource = \"x:rpool/g\"\ntarget = \"z:tank/b/g\"\n",
        );
        assert!(
            e.contains("[jobs.f] target z:tank/b and [jobs.g] target z:tank/b/g overlap"),
            "{e}"
        );
        let e = bad(
            "[jobs.f]\nsource = \"x:rpool/a\"\ntarget = [\"y:tank/a\", \"z:tank/b\"]\n\
             [jobs.g]\nsource = \"x:rpool/g\"\ntarget = \"z:tank/b\"\n",
        );
        assert!(
            e.contains("target z:tank/b is also the target of job f"),
            "{e}"
        );
        // Automatic failover needs one replica to take over: not yet.
        let e = bad(
            "[jobs.f]\nsource = \"x:rpool/a\"\ntarget = [\"y:tank/a\", \"z:tank/b\"]\n\
             failover = \"auto\"\n",
        );
        assert!(
            e.contains("[jobs.f] failover = \"auto\" with several targets is not supported yet"),
            "{e}"
        );
    }

    #[test]
    fn automatic_failover_keys_and_what_they_need() {
        use tandem_repl::job::{FailoverMode, GuestKind};
        let trinity_fence = "[[nodes.trinity.fence]]\nkind = \"watchdog\"\n";
        let c = Config::parse(
            &format!(
                "{GOOD}failover = \"auto\"\nfailover_delay = \"20s\"\non_promote = \"/usr/lib/tandem/hooks/pve-start\"\n\
                 on_promote_timeout = \"2m\"\nguest = \"vm:1001\"\n{trinity_fence}[ha]\ntwo_node_delay = \"30s\"\n"
            ),
            Path::new("t.toml"),
        )
        .expect("valid");
        let j = c.jobs.values().next().expect("job");
        assert_eq!(j.failover, FailoverMode::Auto);
        assert_eq!(j.failover_delay, Duration::from_secs(20));
        assert_eq!(j.hooks.on_promote_timeout, Duration::from_secs(120));
        assert_eq!(j.hooks.on_test_timeout, Duration::from_secs(300));
        assert_eq!(
            j.guest.map(|g| (g.kind, g.vmid)),
            Some((GuestKind::Vm, 1001))
        );
        assert_eq!(c.ha.two_node_delay.0, Duration::from_secs(30));
        assert_eq!(c.ha.retry.0, Duration::from_secs(30));
        // Defaults: manual, 10 s.
        let c = Config::parse(GOOD, Path::new("t.toml")).expect("valid");
        let j = c.jobs.values().next().expect("job");
        assert_eq!(
            (j.failover, j.failover_delay),
            (FailoverMode::Manual, Duration::from_secs(10))
        );
        // Auto needs corosync and fence levels on both ends.
        let e = err(&format!(
            "{GOOD}failover = \"auto\"\n{trinity_fence}[quorum]\nmode = \"off\"\n"
        ));
        assert!(
            e.contains("[jobs.vm-1001] failover = \"auto\" needs corosync"),
            "{e}"
        );
        let e = err(&format!("{GOOD}failover = \"auto\"\n"));
        assert!(
            e.contains("needs fence levels for node trinity ([[nodes.trinity.fence]])"),
            "{e}"
        );
        let e = err(&format!("{GOOD}failover = \"sometimes\"\n"));
        assert!(e.contains("sometimes"), "{e}");
        let e = err(&format!("{GOOD}failover_delay = \"soon\"\n"));
        assert!(e.contains("[jobs.vm-1001] failover_delay"), "{e}");
        let e = err(&format!("{GOOD}guest = \"qemu:1001\"\n"));
        assert!(e.contains("[jobs.vm-1001] guest"), "{e}");
        let e = err(&format!("{GOOD}on_promote = \" \"\n"));
        assert!(e.contains("on_promote is empty"), "{e}");
        let e = err(&format!("{GOOD}[ha]\ntwo_node_dely = \"1s\"\n"));
        assert!(e.contains("two_node_dely"), "{e}");
    }

    #[test]
    fn parses_the_design_example() {
        let c = Config::parse(GOOD, Path::new("t.toml")).expect("valid");
        let j = c.jobs.values().next().expect("job");
        assert_eq!(j.rate_limit, 50 << 20);
        assert_eq!(j.wire, WireCompress::Zstd(5));
        assert_eq!(j.interval, Duration::from_secs(60));
        assert!(c.is_local("trinity"));
        assert!(!c.is_local("oracle"));
    }

    #[test]
    fn errors_name_the_file_and_key() {
        assert!(err("state_dir = [").contains("/etc/t.toml"));
        let e = err(&GOOD.replace("keep = 3", "keep = 3\nbogus = 1"));
        assert!(e.contains("bogus"), "{e}");
        let e = err(&GOOD.replace("oracle:rpool", "nosuch:rpool"));
        assert!(
            e.contains("[jobs.vm-1001] source") && e.contains("\"nosuch\""),
            "{e}"
        );
        let e = err(&GOOD.replace("vm-1001-disk-0\"\ntarget", "vm*1\"\ntarget"));
        assert!(e.contains("vm*1") && e.contains("'*'"), "{e}");
        let e = err(&GOOD.replace("source = \"oracle:rpool/data/vm-1001-disk-0\"\n", ""));
        assert!(e.contains("source is missing"), "{e}");
        let e = err(&GOOD.replace("keep = 3", "keep = 0"));
        assert!(e.contains("keep = 0"), "{e}");
        let e = err(&GOOD.replace("interval = \"1m\"", "interval = \"soon\""));
        assert!(e.contains("interval") && e.contains("soon"), "{e}");
        let e = err(&GOOD.replace("zstd:5", "lz5"));
        assert!(e.contains("compress"), "{e}");
        let e = err(&GOOD.replace("rate_limit = \"50M\"", "rate_limit = \"fast\""));
        assert!(e.contains("rate_limit"), "{e}");
        let e = err(&GOOD.replace("[jobs.vm-1001]", "[jobs.\"vm 1001\"]"));
        assert!(e.contains("jobs.vm 1001"), "{e}");
        let e = err(&format!("{GOOD}\n[jobs.b]\nsource = \"oracle:rpool/b\"\ntarget = \"trinity:rpool/replica/vm-1001-disk-0\"\n"));
        assert!(e.contains("also the target of job"), "{e}");
    }

    #[test]
    fn watchdog_table() {
        let c = Config::parse(GOOD, Path::new("t.toml")).expect("valid");
        assert_eq!(c.watchdog, None, "no [watchdog]: no keeper");
        let c =
            Config::parse(&format!("{GOOD}\n[watchdog]\n"), Path::new("t.toml")).expect("valid");
        assert_eq!(
            c.watchdog,
            Some(KeeperConfig::default()),
            "enabled by default"
        );
        let c = Config::parse(
            &format!("{GOOD}\n[watchdog]\nenabled = true\nmux_socket = \"/x.sock\"\ninterval = \"5s\"\nwedge_after = \"20s\"\n"),
            Path::new("t.toml"),
        )
        .expect("valid");
        let w = c.watchdog.expect("enabled");
        assert_eq!(w.mux_socket, Path::new("/x.sock"));
        assert_eq!(w.interval.map(|d| d.0), Some(Duration::from_secs(5)));
        assert_eq!(w.wedge_after.0, Duration::from_secs(20));
        let c = Config::parse(
            &format!("{GOOD}\n[watchdog]\nenabled = false\ndevice = \"/dev/watchdog1\"\n"),
            Path::new("t.toml"),
        )
        .expect("valid");
        assert_eq!(c.watchdog, None);

        let e = err(&format!("{GOOD}\n[watchdog]\nmux_sokcet = \"/x\"\n"));
        assert!(e.contains("/etc/t.toml") && e.contains("mux_sokcet"), "{e}");
        assert!(e.contains("watchdog"), "{e}");
        let e = err(&format!("{GOOD}\n[watchdog]\nenabled = \"yes\"\n"));
        assert!(e.contains("enabled") && e.contains("yes"), "{e}");
        let e = err(&format!("{GOOD}\n[watchdog]\ninterval = \"often\"\n"));
        assert!(e.contains("often"), "{e}");
    }

    #[test]
    fn quorum_table() {
        use tandem_fence::quorum::{QuorumBackend, QuorumConfig, QuorumMode, NATIVE_BUILT};
        let c = Config::parse(GOOD, Path::new("t.toml")).expect("valid");
        assert_eq!(c.quorum, QuorumConfig::default(), "no [quorum]: auto");
        assert_eq!(c.quorum.mode, QuorumMode::Auto);
        let native_default = if NATIVE_BUILT {
            QuorumBackend::Native
        } else {
            QuorumBackend::Tool
        };
        assert_eq!(c.quorum.backend, native_default);
        let c = Config::parse(
            &format!("{GOOD}\n[quorum]\nbackend = \"tool\"\n"),
            Path::new("t.toml"),
        )
        .expect("valid");
        assert_eq!(c.quorum.backend, QuorumBackend::Tool);
        let native = Config::parse(
            &format!("{GOOD}\n[quorum]\nbackend = \"native\"\n"),
            Path::new("t.toml"),
        );
        if NATIVE_BUILT {
            assert_eq!(native.expect("valid").quorum.backend, QuorumBackend::Native);
        } else {
            let e = native.expect_err("not built").to_string();
            assert!(e.contains("backend") && e.contains("tool"), "{e}");
        }
        let e = err(&format!("{GOOD}\n[quorum]\nbackend = \"dbus\"\n"));
        assert!(
            e.contains("dbus") && e.contains("native") && e.contains("tool"),
            "{e}"
        );
        let c = Config::parse(
            &format!("{GOOD}\n[quorum]\nmode = \"corosync\"\ntool = \"/opt/cq\"\ncorosync_conf = \"/x.conf\"\ntimeout = \"3s\"\nrefresh = \"1s\"\n"),
            Path::new("t.toml"),
        )
        .expect("valid");
        assert_eq!(c.quorum.mode, QuorumMode::Corosync);
        assert_eq!(c.quorum.tool, Path::new("/opt/cq"));
        assert_eq!(c.quorum.corosync_conf, Path::new("/x.conf"));
        assert_eq!(c.quorum.timeout.0, Duration::from_secs(3));
        assert_eq!(c.quorum.refresh.0, Duration::from_secs(1));
        let e = err(&format!("{GOOD}\n[quorum]\nmode = \"pacemaker\"\n"));
        assert!(e.contains("/etc/t.toml") && e.contains("pacemaker"), "{e}");
        assert!(
            e.contains("auto") && e.contains("corosync") && e.contains("off"),
            "{e}"
        );
        let e = err(&format!("{GOOD}\n[quorum]\nmod = \"off\"\n"));
        assert!(e.contains("`mod`") && e.contains("`mode`"), "{e}");
        let e = err(&format!("{GOOD}\n[quorum]\nrefresh = \"0s\"\n"));
        assert!(e.contains("[quorum]") && e.contains("refresh"), "{e}");
    }

    #[test]
    fn auto_failover_of_a_guest_pve_ha_manages_is_refused() {
        let dir = tempfile_dir();
        let pve = dir.join("pve");
        std::fs::create_dir_all(pve.join("ha")).expect("mkdir");
        let text = |mode: &str| {
            GOOD.replace(
                "rate_limit = \"50M\"",
                &format!("rate_limit = \"50M\"\nguest = \"vm:1001\"\nfailover = \"{mode}\""),
            ) + &format!(
                "\n[[nodes.trinity.fence]]\nkind = \"watchdog\"\n[pve]\nroot = \"{}\"\n",
                pve.display()
            )
        };
        let load = |mode: &str| {
            let p = dir.join(format!("{mode}.toml"));
            std::fs::write(&p, text(mode)).expect("write");
            Config::load(&p)
        };
        // No resources.cfg: no PVE HA, nothing to check.
        load("auto").expect("no resources.cfg");
        std::fs::write(
            pve.join("ha/resources.cfg"),
            "vm: 1001\n\tstate started\n\tgroup g\n\nct: 1002\n\tstate started\n",
        )
        .expect("write");
        let e = load("auto").expect_err("managed + auto").to_string();
        assert!(
            e.contains("[jobs.vm-1001]")
                && e.contains("vm:1001")
                && e.contains("ha/resources.cfg")
                && e.contains("ha-manager remove vm:1001"),
            "{e}"
        );
        load("manual").expect("manual is the operator's act");
        // Another guest is no concern.
        std::fs::write(pve.join("ha/resources.cfg"), "vm: 1003\n").expect("write");
        load("auto").expect("not managed");
        // No PVE at all.
        std::fs::remove_dir_all(&pve).expect("rm");
        load("auto").expect("no /etc/pve");
        let e = err(&format!("{GOOD}\n[pve]\nrot = \"/x\"\n"));
        assert!(e.contains("rot"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tandem-config-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn rates_and_durations() {
        assert_eq!(parse_rate(&toml::Value::Integer(5)).expect("int"), 5);
        assert_eq!(
            parse_rate(&toml::Value::String("2K".into())).expect("k"),
            2048
        );
        assert!(parse_rate(&toml::Value::String("-1".into())).is_err());
        assert_eq!(parse_duration("90s").expect("d"), Duration::from_secs(90));
    }
}
