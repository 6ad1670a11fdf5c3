//! `tandem import pvesr`: Proxmox VE's storage replication, turned into a
//! tandem config. It reads, and changes nothing:
//!
//! - `replication.cfg`: the pvesr jobs (`local: VMID-N`, with `target`,
//!   `schedule`, `rate`, `comment`, `disable`, `remove_job`);
//! - `storage.cfg`: which storage IDs are ZFS pools (`zfspool`, `pool`,
//!   `nodes`);
//! - `nodes/NODE/qemu-server/VMID.conf` and `nodes/NODE/lxc/VMID.conf`: each
//!   guest's disks, and (from the directory) the node it runs on;
//! - `corosync.conf`: the nodes' addresses (`ring0_addr`);
//! - `ha/resources.cfg`: which guests PVE's own HA manages.
//!
//! One job per guest (per ZFS pool it has disks on) with all its
//! replicated ZFS volumes, the union of its pvesr targets (fan-out), the
//! shortest of their schedules as the interval, and the smallest rate. What
//! cannot be mapped is kept as a comment ([`Import::notes`] and each job's
//! [`ImportedJob::comments`]), never dropped silently: disks on storage that
//! is not ZFS, `replicate=0`, CD-ROMs, bind mounts, calendar schedules with no
//! fixed interval, jobs marked for removal.
//!
//! [`read`] loads the files; [`import`] is pure (texts in, model out), and
//! [`Import::to_toml`] renders the config.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tandem_repl::job::{Guest, GuestKind};
use tandem_zfs::DatasetName;

use super::section::{guest_settings, sections, volume_options, Section};

/// Why the PVE files cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The root is not a directory (not a PVE node, or a wrong `--root`).
    #[error("{}: not a directory; is this a Proxmox VE node (its cluster filesystem is mounted at /etc/pve)? Pass --root to read a copy elsewhere", root.display())]
    NoRoot {
        /// The root given.
        root: PathBuf,
    },
    /// A file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A guest config found under `nodes/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// The node whose directory holds it: where the guest runs.
    pub node: String,
    /// The guest.
    pub guest: Guest,
    /// The file's text.
    pub text: String,
}

/// The PVE files an import reads, as texts (absent files empty or `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// Where they were read from (for the header comment).
    pub root: PathBuf,
    /// `replication.cfg` (absent: PVE has no replication jobs).
    pub replication: Option<String>,
    /// `storage.cfg`.
    pub storage: Option<String>,
    /// `corosync.conf`.
    pub corosync: Option<String>,
    /// `ha/resources.cfg`.
    pub ha_resources: Option<String>,
    /// Every guest config under `nodes/*/qemu-server/` and `nodes/*/lxc/`.
    pub guests: Vec<GuestFile>,
}

fn read_opt(path: &Path) -> Result<Option<String>, ImportError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ImportError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ImportError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|source| ImportError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

/// Reads the files of a PVE cluster filesystem mounted (or copied) at
/// `root`.
pub fn read(root: &Path) -> Result<Tree, ImportError> {
    if !root.is_dir() {
        return Err(ImportError::NoRoot {
            root: root.to_path_buf(),
        });
    }
    let mut guests = Vec::new();
    for node_dir in read_dir_sorted(&root.join("nodes"))? {
        let Some(node) = node_dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        for (sub, kind) in [("qemu-server", GuestKind::Vm), ("lxc", GuestKind::Ct)] {
            for f in read_dir_sorted(&node_dir.join(sub))? {
                let vmid = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".conf"))
                    .and_then(|n| n.parse::<u32>().ok());
                let Some(vmid) = vmid else { continue };
                if let Some(text) = read_opt(&f)? {
                    guests.push(GuestFile {
                        node: node.to_string(),
                        guest: Guest { kind, vmid },
                        text,
                    });
                }
            }
        }
    }
    Ok(Tree {
        root: root.to_path_buf(),
        replication: read_opt(&root.join("replication.cfg"))?,
        storage: read_opt(&root.join("storage.cfg"))?,
        corosync: read_opt(&root.join("corosync.conf"))?,
        ha_resources: read_opt(&root.join(super::RESOURCES))?,
        guests,
    })
}

/// A node of the generated config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedNode {
    /// Its name (corosync's and PVE's node name).
    pub name: String,
    /// How tandem reaches it: `ring0_addr` from `corosync.conf`, else the
    /// name itself.
    pub address: String,
    /// Whether the address came from `corosync.conf`.
    pub from_corosync: bool,
}

/// A job of the generated config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedJob {
    /// Its name: `vm-VMID` or `ct-VMID` (with `-STORAGE` when the guest
    /// has disks on more than one ZFS pool).
    pub name: String,
    /// The guest.
    pub guest: String,
    /// The pvesr jobs it replaces (`100-0`, ...).
    pub replaces: Vec<String>,
    /// `node:dataset`: the guest's node and, for one disk, the disk's
    /// dataset, else the pool's dataset the disks are under.
    pub source: String,
    /// `node:dataset` per target, same dataset as the source (pvesr
    /// replicates to the same storage ID).
    pub targets: Vec<String>,
    /// The disks relative to the source, when there are more than one.
    pub datasets: Vec<String>,
    /// The interval, as a duration string (`15m`).
    pub interval: String,
    /// Bytes per second (pvesr's `rate` is in MB/s), 0 = unlimited.
    pub rate_limit: u64,
    /// False when every pvesr job it replaces is disabled.
    pub enabled: bool,
    /// Whether PVE's HA manager manages the guest.
    pub pve_ha: bool,
    /// What the job's comment lines say (pvesr comments, what was left
    /// out).
    pub comments: Vec<String>,
}

/// What an import produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Import {
    /// Where the files were read from.
    pub root: PathBuf,
    /// The nodes the jobs name.
    pub nodes: Vec<ImportedNode>,
    /// One per guest (per ZFS pool).
    pub jobs: Vec<ImportedJob>,
    /// What could not be mapped, for the whole import.
    pub notes: Vec<String>,
}

/// One pvesr job, as parsed.
struct PvesrJob<'a> {
    id: &'a str,
    jobnum: u32,
    target: &'a str,
    schedule: &'a str,
    rate: Option<f64>,
    disabled: bool,
    comment: Option<&'a str>,
}

/// pvesr's default schedule.
const DEFAULT_SCHEDULE: &str = "*/15";

/// A pvesr schedule with no fixed interval: why, and the interval it is
/// mapped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// Why it has no fixed interval.
    pub why: String,
    /// The nearest interval tandem uses instead.
    pub nearest: Duration,
}

/// A pvesr schedule (a systemd-like calendar event) as a fixed interval,
/// where it has one; otherwise the nearest and why.
pub fn schedule_interval(s: &str) -> Result<Duration, Unmapped> {
    let s = s.trim();
    let min = |n: u64| Duration::from_secs(60 * n);
    let unmapped = |why: String, nearest: Duration| Err(Unmapped { why, nearest });
    match s {
        "minutely" => return Ok(min(1)),
        "hourly" => return Ok(min(60)),
        _ => {}
    }
    // "*/N", "*:*/N", "*:0/N", "*:00/N": every N minutes (N divides the hour
    // evenly, or the last run of each hour comes early)
    let rep = ["*/", "*:*/", "*:0/", "*:00/"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| (1..=59).contains(n));
    if let Some(n) = rep {
        if 60 % n == 0 {
            return Ok(min(n));
        }
        return unmapped(
            format!("{s:?} runs every {n} minutes and again at the full hour"),
            min(n),
        );
    }
    // "*:MM" or "*:MM,NN": once (or a few times) an hour
    if let Some(mm) = s.strip_prefix("*:") {
        let count = mm.split(',').count() as u64;
        if mm.split(',').all(|m| m.parse::<u8>().is_ok_and(|m| m < 60)) && 60 % count == 0 {
            return Ok(min(60 / count));
        }
    }
    let nearest = match s {
        "daily" => min(24 * 60),
        "weekly" => min(7 * 24 * 60),
        "monthly" => min(30 * 24 * 60),
        _ => min(15),
    };
    unmapped(
        format!("schedule {s:?} is a calendar event with no fixed interval"),
        nearest,
    )
}

fn fmt_duration(d: Duration) -> String {
    let m = d.as_secs() / 60;
    if m % (24 * 60) == 0 {
        format!("{}d", m / (24 * 60))
    } else if m % 60 == 0 {
        format!("{}h", m / 60)
    } else {
        format!("{m}m")
    }
}

/// Whether `key` names a disk in a guest config of `kind`.
fn is_disk_key(kind: GuestKind, key: &str) -> bool {
    let numbered = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    match kind {
        GuestKind::Vm => {
            ["ide", "sata", "scsi", "virtio", "unused"]
                .iter()
                .any(|p| numbered(p))
                || key == "efidisk0"
                || key == "tpmstate0"
        }
        GuestKind::Ct => key == "rootfs" || numbered("mp") || numbered("unused"),
    }
}

/// The nodes `corosync.conf`'s nodelist names, with their `ring0_addr`.
pub fn corosync_nodes(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut in_nodelist = false;
    let mut cur: Option<(Option<String>, Option<String>)> = None;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.ends_with('{') {
            let name = line.trim_end_matches('{').trim();
            depth += 1;
            if depth == 1 && name == "nodelist" {
                in_nodelist = true;
            } else if in_nodelist && depth == 2 && name == "node" {
                cur = Some((None, None));
            }
            continue;
        }
        if line == "}" {
            if in_nodelist && depth == 2 {
                if let Some((Some(n), a)) = cur.take() {
                    out.push((n, a));
                }
            }
            if depth == 1 {
                in_nodelist = false;
            }
            depth = depth.saturating_sub(1);
            continue;
        }
        if let (Some(c), Some((k, v))) = (cur.as_mut(), line.split_once(':')) {
            let v = v.trim().to_string();
            match k.trim() {
                "name" => c.0 = Some(v),
                "ring0_addr" => c.1 = Some(v),
                _ => {}
            }
        }
    }
    out
}

/// A disk of a guest that will be replicated.
struct Disk {
    storage: String,
    pool: DatasetName,
    name: String,
}

/// Maps the PVE files to tandem jobs. Pure.
pub fn import(tree: &Tree) -> Import {
    let mut notes = Vec::new();
    let storages: BTreeMap<String, Section> = tree
        .storage
        .as_deref()
        .map(sections)
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    if tree.storage.is_none() {
        notes.push("no storage.cfg: no disk can be mapped to a ZFS dataset".into());
    }
    let managed = tree
        .ha_resources
        .as_deref()
        .map(super::managed_services)
        .unwrap_or_default();

    // the pvesr jobs, by guest
    let repl = tree
        .replication
        .as_deref()
        .map(sections)
        .unwrap_or_default();
    if tree.replication.is_none() {
        notes.push("no replication.cfg: PVE has no replication jobs to import".into());
    }
    let mut by_guest: BTreeMap<u32, Vec<PvesrJob<'_>>> = BTreeMap::new();
    for s in &repl {
        if s.kind != "local" {
            notes.push(format!(
                "replication.cfg line {}: `{}: {}` is not a local replication job; skipped",
                s.line, s.kind, s.id
            ));
            continue;
        }
        let parsed =
            s.id.split_once('-')
                .and_then(|(g, n)| Some((g.parse::<u32>().ok()?, n.parse::<u32>().ok()?)));
        let Some((vmid, jobnum)) = parsed else {
            notes.push(format!(
                "replication.cfg line {}: job ID {:?} is not GUEST-JOBNUM; skipped",
                s.line, s.id
            ));
            continue;
        };
        let Some(target) = s.get("target").filter(|t| !t.is_empty()) else {
            notes.push(format!("pvesr job {} has no target; skipped", s.id));
            continue;
        };
        if let Some(r) = s.get("remove_job") {
            notes.push(format!(
                "pvesr job {} is being removed (remove_job {r}); skipped",
                s.id
            ));
            continue;
        }
        let rate = match s.get("rate") {
            None => None,
            Some(r) => match r.parse::<f64>() {
                Ok(v) if v > 0.0 && v.is_finite() => Some(v),
                _ => {
                    notes.push(format!(
                        "pvesr job {}: rate {r:?} is not a number of MB/s; left unlimited",
                        s.id
                    ));
                    None
                }
            },
        };
        by_guest.entry(vmid).or_default().push(PvesrJob {
            id: &s.id,
            jobnum,
            target,
            schedule: s.get("schedule").unwrap_or(DEFAULT_SCHEDULE),
            rate,
            disabled: s.flag("disable"),
            comment: s.get("comment").filter(|c| !c.is_empty()),
        });
    }

    let mut jobs = Vec::new();
    let mut used_nodes = BTreeSet::new();
    for (vmid, mut pj) in by_guest {
        pj.sort_by_key(|j| j.jobnum);
        let ids: Vec<String> = pj.iter().map(|j| j.id.to_string()).collect();
        let files: Vec<&GuestFile> = tree
            .guests
            .iter()
            .filter(|g| g.guest.vmid == vmid)
            .collect();
        let Some(gf) = files.first() else {
            notes.push(format!(
                "pvesr job {}: guest {vmid} has no config under nodes/*/qemu-server/ or nodes/*/lxc/; skipped",
                ids.join(", ")
            ));
            continue;
        };
        if files.len() > 1 {
            notes.push(format!(
                "guest {vmid} has configs on more than one node ({}); used the one on {}",
                files
                    .iter()
                    .map(|f| f.node.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                gf.node
            ));
        }
        let guest = gf.guest;
        let mut comments = Vec::new();

        // the disks
        let mut disks: Vec<Disk> = Vec::new();
        for (key, value) in guest_settings(&gf.text) {
            if !is_disk_key(guest.kind, &key) {
                continue;
            }
            let vkey = if guest.kind == GuestKind::Ct {
                "volume"
            } else {
                "file"
            };
            let (vol, opts) = volume_options(&value, vkey);
            let opt = |k: &str| opts.iter().find(|(o, _)| *o == k).map(|(_, v)| *v);
            let Some(vol) = vol.filter(|v| *v != "none") else {
                continue;
            };
            if opt("media") == Some("cdrom") {
                continue;
            }
            let Some((sid, volname)) = vol.split_once(':').filter(|_| !vol.starts_with('/')) else {
                comments.push(format!(
                    "{key}: {vol} is not a storage volume (a bind mount or a device): not replicated"
                ));
                continue;
            };
            if opt("replicate") == Some("0") {
                comments.push(format!(
                    "{key}: {vol} has replicate=0: not replicated (as with pvesr)"
                ));
                continue;
            }
            let Some(st) = storages.get(sid) else {
                comments.push(format!(
                    "{key}: {vol}: storage {sid:?} is not in storage.cfg: not replicated"
                ));
                continue;
            };
            if st.kind != "zfspool" {
                comments.push(format!(
                    "{key}: {vol} is on {} storage {sid:?}, not a local ZFS pool: not replicated \
                     (pvesr refuses such a guest; move the disk or set replicate=0)",
                    st.kind
                ));
                continue;
            }
            let Some(pool) = st.get("pool").and_then(|p| DatasetName::parse(p).ok()) else {
                comments.push(format!(
                    "{key}: {vol}: storage {sid:?} has no valid `pool`: not replicated"
                ));
                continue;
            };
            // a linked clone's volume is `base-9000-disk-0/vm-101-disk-0`
            let name = volname.rsplit('/').next().unwrap_or(volname).to_string();
            if name.contains(char::is_whitespace)
                || DatasetName::parse(&format!("{pool}/{name}")).is_err()
            {
                comments.push(format!(
                    "{key}: {vol}: {name:?} is not a dataset name: not replicated"
                ));
                continue;
            }
            if volname.contains('/') {
                comments.push(format!(
                    "{key}: {name} is a linked clone ({volname}); tandem replicates the clone \
                     itself, not its base"
                ));
            }
            if disks.iter().any(|d| d.pool == pool && d.name == name) {
                continue; // the same volume under two keys
            }
            disks.push(Disk {
                storage: sid.to_string(),
                pool,
                name,
            });
        }
        let kind = match guest.kind {
            GuestKind::Vm => "vm",
            GuestKind::Ct => "ct",
        };
        if disks.is_empty() {
            notes.push(format!(
                "{kind}:{vmid} (pvesr {}): no replicable ZFS disk{}; skipped",
                ids.join(", "),
                if comments.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", comments.join("; "))
                }
            ));
            continue;
        }

        // the targets, schedule and rate
        let active: Vec<&PvesrJob<'_>> = pj.iter().filter(|j| !j.disabled).collect();
        let enabled = !active.is_empty();
        let chosen: Vec<&PvesrJob<'_>> = if enabled { active } else { pj.iter().collect() };
        for j in &pj {
            let mut line = format!(
                "pvesr {} -> {}, schedule {:?}{}{}",
                j.id,
                j.target,
                j.schedule,
                j.rate
                    .map(|r| format!(", rate {r} MB/s"))
                    .unwrap_or_default(),
                if j.disabled { ", disabled" } else { "" }
            );
            if let Some(c) = j.comment {
                line.push_str(&format!(": {c}"));
            }
            comments.push(line);
            if enabled && j.disabled {
                comments.push(format!(
                    "{} is disabled in PVE and left out; add its target to replicate there too",
                    j.id
                ));
            }
        }
        let mut targets: Vec<&str> = Vec::new();
        for j in &chosen {
            if j.target == gf.node {
                comments.push(format!(
                    "{}: its target {} is where the guest runs now (it moved); left out",
                    j.id, j.target
                ));
            } else if !targets.contains(&j.target) {
                targets.push(j.target);
            }
        }
        if targets.is_empty() {
            notes.push(format!(
                "{kind}:{vmid}: every target of pvesr {} is the guest's own node {}; skipped",
                ids.join(", "),
                gf.node
            ));
            continue;
        }
        let mut interval: Option<Duration> = None;
        for j in &chosen {
            let d = match schedule_interval(j.schedule) {
                Ok(d) => d,
                Err(Unmapped { why, nearest }) => {
                    comments.push(format!(
                        "{}: {why}; mapped to {}",
                        j.id,
                        fmt_duration(nearest)
                    ));
                    nearest
                }
            };
            interval = Some(interval.map_or(d, |i| i.min(d)));
        }
        let interval = interval.unwrap_or(Duration::from_secs(15 * 60));
        let rates: Vec<Option<f64>> = chosen.iter().map(|j| j.rate).collect();
        let rate = rates
            .iter()
            .flatten()
            .copied()
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.min(r))));
        // f64 is not Ord: compare by bits for "they differ"
        let distinct: BTreeSet<u64> = rates.iter().map(|r| r.map_or(0, f64::to_bits)).collect();
        if distinct.len() > 1 {
            comments.push(format!(
                "the pvesr jobs have different rates; the smallest applies to every target ({} MB/s)",
                rate.unwrap_or(0.0)
            ));
        }
        let pve_ha = managed.contains(&guest);

        // one job per ZFS pool the guest has disks on
        let pools: BTreeSet<&DatasetName> = disks.iter().map(|d| &d.pool).collect();
        if pools.len() > 1 {
            comments.push(format!(
                "{kind}:{vmid} has disks on {} ZFS pools: one job per pool, so its disks are \
                 not snapshotted in one transaction across pools",
                pools.len()
            ));
        }
        used_nodes.insert(gf.node.clone());
        used_nodes.extend(targets.iter().map(|t| t.to_string()));
        for pool in &pools {
            let mine: Vec<&Disk> = disks.iter().filter(|d| &d.pool == *pool).collect();
            let base = format!("{kind}-{vmid}");
            let name = if pools.len() > 1 {
                format!("{base}-{}", mine[0].storage)
            } else {
                base
            };
            let (src_ds, datasets) = if mine.len() == 1 {
                (format!("{pool}/{}", mine[0].name), Vec::new())
            } else {
                (
                    pool.to_string(),
                    mine.iter().map(|d| d.name.clone()).collect(),
                )
            };
            for t in &targets {
                if let Some(nodes) = storages.get(&mine[0].storage).and_then(|s| s.get("nodes")) {
                    if !nodes.split(',').any(|n| n.trim() == *t) {
                        comments.push(format!(
                            "storage {:?} is restricted to nodes {nodes}, not {t}: check the target dataset exists there",
                            mine[0].storage
                        ));
                    }
                }
            }
            jobs.push(ImportedJob {
                name,
                guest: guest.to_string(),
                replaces: ids.clone(),
                source: format!("{}:{src_ds}", gf.node),
                targets: targets.iter().map(|t| format!("{t}:{src_ds}")).collect(),
                datasets,
                interval: fmt_duration(interval),
                rate_limit: rate.map_or(0, |r| (r * 1_000_000.0).round() as u64),
                enabled,
                pve_ha,
                comments: comments.clone(),
            });
        }
    }

    // the nodes
    let coro = tree
        .corosync
        .as_deref()
        .map(corosync_nodes)
        .unwrap_or_default();
    if tree.corosync.is_none() && !used_nodes.is_empty() {
        notes.push("no corosync.conf: node addresses are the node names".into());
    }
    let nodes = used_nodes
        .into_iter()
        .map(|name| match coro.iter().find(|(n, _)| *n == name) {
            Some((_, Some(a))) => ImportedNode {
                name,
                address: a.clone(),
                from_corosync: true,
            },
            _ => ImportedNode {
                address: name.clone(),
                name,
                from_corosync: false,
            },
        })
        .collect();
    Import {
        root: tree.root.clone(),
        nodes,
        jobs,
        notes,
    }
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A table key: bare where TOML allows it, else quoted.
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        s.to_string()
    } else {
        q(s)
    }
}

fn comment_lines(out: &mut String, text: &str) {
    for l in text.lines() {
        out.push_str("# ");
        out.push_str(l);
        out.push('\n');
    }
}

impl Import {
    /// The generated config, with comments for everything that was not
    /// mapped.
    pub fn to_toml(&self) -> String {
        let mut o = String::new();
        comment_lines(
            &mut o,
            &format!(
                "tandem config generated by `tandem import pvesr` from {}.\n\
                 Nothing was changed. Review it, install it as /etc/tandem/tandem.toml on every\n\
                 node (local_node defaults to the host name), then disable the pvesr jobs each\n\
                 job replaces: pvesr and tandem must not both replicate one disk. Where pvesr\n\
                 has replicated a disk, tandem's first cycle sends from pvesr's last snapshot\n\
                 (`__replicate_<job>_<time>__`, matched by GUID) instead of a full copy; tandem\n\
                 never prunes those snapshots: destroy them on both sides once tandem has run.",
                self.root.display()
            ),
        );
        if !self.notes.is_empty() {
            o.push_str("#\n# Not imported:\n");
            for n in &self.notes {
                comment_lines(&mut o, &format!("- {n}"));
            }
        }
        for n in &self.nodes {
            o.push_str(&format!("\n[nodes.{}]\n", key(&n.name)));
            o.push_str(&format!("address = {}", q(&n.address)));
            if !n.from_corosync {
                o.push_str("   # not in corosync.conf: the node name");
            }
            o.push('\n');
        }
        for j in &self.jobs {
            o.push_str(&format!("\n[jobs.{}]\n", key(&j.name)));
            for c in &j.comments {
                comment_lines(&mut o, c);
            }
            o.push_str(&format!("guest = {}\n", q(&j.guest)));
            o.push_str(&format!("source = {}\n", q(&j.source)));
            match j.targets.as_slice() {
                [one] => o.push_str(&format!("target = {}\n", q(one))),
                many => o.push_str(&format!(
                    "target = [{}]\n",
                    many.iter().map(|t| q(t)).collect::<Vec<_>>().join(", ")
                )),
            }
            if !j.datasets.is_empty() {
                o.push_str(&format!(
                    "datasets = [{}]\n",
                    j.datasets
                        .iter()
                        .map(|d| q(d))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            o.push_str(&format!("interval = {}\n", q(&j.interval)));
            if j.rate_limit > 0 {
                o.push_str(&format!("rate_limit = {}\n", j.rate_limit));
            }
            if !j.enabled {
                o.push_str("enabled = false   # every pvesr job it replaces is disabled\n");
            }
            if j.pve_ha {
                o.push_str(
                    "# PVE's HA manager manages this guest (ha/resources.cfg): keep failover manual,\n\
                     # or remove it from PVE HA before setting failover = \"auto\".\n",
                );
            } else if j.targets.len() > 1 {
                o.push_str(
                    "# several targets: failover is by hand (automatic failover of a fan-out job\n\
                     # is not supported yet; keep one target for failover = \"auto\")\n",
                );
            } else {
                o.push_str(
                    "# failover = \"auto\"   # needs [quorum] and fence levels: README, \"Automatic failover\"\n",
                );
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_repl::naming::JobName;

    const STORAGE: &str = "zfspool: local-zfs\n\tpool rpool/data\n\tsparse\n\n\
                           lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\n\
                           zfspool: tank\n\tpool tank/vms\n\tnodes pve1\n";

    fn tree(repl: &str, guests: &[(&str, &str, u32, &str)]) -> Tree {
        Tree {
            root: "/etc/pve".into(),
            replication: Some(repl.into()),
            storage: Some(STORAGE.into()),
            corosync: Some(
                "nodelist {\n  node {\n    name: pve1\n    ring0_addr: 10.0.0.1\n  }\n  node {\n    \
                 name: pve2 # the second\n    ring0_addr: 10.0.0.2\n  }\n}\n"
                    .into(),
            ),
            ha_resources: None,
            guests: guests
                .iter()
                .map(|(node, kind, vmid, text)| GuestFile {
                    node: node.to_string(),
                    guest: Guest {
                        kind: if *kind == "vm" { GuestKind::Vm } else { GuestKind::Ct },
                        vmid: *vmid,
                    },
                    text: text.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn schedules_with_and_without_a_fixed_interval() {
        let m = |s: &str| schedule_interval(s).map(fmt_duration).map_err(|u| u.why);
        let nearest = |s: &str| fmt_duration(schedule_interval(s).expect_err(s).nearest);
        assert_eq!(m("*/15"), Ok("15m".into()));
        assert_eq!(m("*/1"), Ok("1m".into()));
        assert_eq!(m("*:0/30"), Ok("30m".into()));
        assert_eq!(m("minutely"), Ok("1m".into()));
        assert_eq!(m("hourly"), Ok("1h".into()));
        assert_eq!(m("*:00"), Ok("1h".into()));
        assert_eq!(m("*:00,30"), Ok("30m".into()));
        assert!(m("*/7").unwrap_err().contains("full hour"));
        assert!(
            !m("*/7").unwrap_err().contains("mapped to"),
            "the caller says that once"
        );
        assert!(m("mon..fri 22:00")
            .unwrap_err()
            .contains("no fixed interval"));
        assert!(m("daily").is_err());
        assert_eq!(nearest("daily"), "1d");
        assert_eq!(nearest("*/7"), "7m");
        assert_eq!(nearest("sat 18:15"), "15m");
        assert!(schedule_interval("*/0").is_err() && schedule_interval("*/90").is_err());
    }

    #[test]
    fn corosync_nodelist_names_and_addresses() {
        let t = tree("", &[]);
        let n = corosync_nodes(t.corosync.as_deref().unwrap_or(""));
        assert_eq!(
            n,
            [
                ("pve1".to_string(), Some("10.0.0.1".to_string())),
                ("pve2".to_string(), Some("10.0.0.2".to_string()))
            ]
        );
        // a `node {` outside the nodelist is not a node
        assert!(corosync_nodes("totem {\n node {\n name: x\n }\n}\n").is_empty());
    }

    #[test]
    fn a_multi_disk_vm_becomes_one_job_with_every_replicated_zfs_disk() {
        let t = tree(
            "local: 100-0\n\ttarget pve2\n\tschedule */5\n\trate 12.5\n\tcomment edge router\n",
            &[(
                "pve1",
                "vm",
                100,
                "efidisk0: local-zfs:vm-100-disk-0,size=1M\nide2: local:iso/x.iso,media=cdrom\n\
                 scsi0: local-zfs:vm-100-disk-1,size=32G\nscsi1: local-zfs:vm-100-disk-2,replicate=0\n\
                 scsi2: local-lvm:vm-100-disk-0,size=8G\nvirtio0: file=local-zfs:vm-100-disk-1\n\
                 [snap]\nscsi5: local-zfs:vm-100-disk-7\n",
            )],
        );
        let out = import(&t);
        assert!(out.notes.is_empty(), "{:?}", out.notes);
        assert_eq!(out.jobs.len(), 1);
        let j = &out.jobs[0];
        assert_eq!(j.name, "vm-100");
        assert_eq!(j.source, "pve1:rpool/data");
        assert_eq!(j.targets, ["pve2:rpool/data"]);
        assert_eq!(
            j.datasets,
            ["vm-100-disk-0", "vm-100-disk-1"],
            "no duplicate, no snapshot section"
        );
        assert_eq!((j.interval.as_str(), j.rate_limit), ("5m", 12_500_000));
        assert!(j.enabled && !j.pve_ha);
        let c = j.comments.join("\n");
        assert!(
            c.contains("replicate=0") && c.contains("lvmthin") && c.contains("edge router"),
            "{c}"
        );
        assert_eq!(
            out.nodes,
            [
                ImportedNode {
                    name: "pve1".into(),
                    address: "10.0.0.1".into(),
                    from_corosync: true
                },
                ImportedNode {
                    name: "pve2".into(),
                    address: "10.0.0.2".into(),
                    from_corosync: true
                },
            ]
        );
        let toml = out.to_toml();
        assert!(
            toml.contains("datasets = [\"vm-100-disk-0\", \"vm-100-disk-1\"]\n"),
            "{toml}"
        );
        assert!(toml::from_str::<toml::Value>(&toml).is_ok(), "{toml}");
    }

    #[test]
    fn single_disk_guests_give_a_config_tandem_loads_as_it_is() {
        let t = tree(
            "local: 101-0\n\ttarget pve1\n\tschedule */1\n\nlocal: 102-0\n\ttarget pve2\n\tdisable 1\n",
            &[
                ("pve2", "ct", 101, "rootfs: local-zfs:subvol-101-disk-0,size=8G\nmp0: /srv,mp=/srv\n"),
                ("pve1", "vm", 102, "scsi0: local-zfs:base-9000-disk-0/vm-102-disk-0\n"),
            ],
        );
        let mut t = t;
        t.ha_resources = Some("ct: 101\n\tstate started\n".into());
        let out = import(&t);
        let toml = out.to_toml();
        let cfg = crate::Config::parse(&toml, Path::new("imported.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let ct = &cfg.jobs[&JobName::parse("ct-101").expect("name")];
        assert_eq!(ct.source.to_string(), "pve2:rpool/data/subvol-101-disk-0");
        assert_eq!(ct.target.to_string(), "pve1:rpool/data/subvol-101-disk-0");
        assert_eq!(ct.interval, Duration::from_secs(60));
        assert!(ct.enabled);
        let vm = &cfg.jobs[&JobName::parse("vm-102").expect("name")];
        assert_eq!(
            vm.source.to_string(),
            "pve1:rpool/data/vm-102-disk-0",
            "the clone, not its base"
        );
        assert!(!vm.enabled, "every pvesr job of 102 is disabled");
        assert_eq!(cfg.nodes.len(), 2);
        assert!(
            toml.contains("PVE's HA manager manages this guest"),
            "{toml}"
        );
        assert!(toml.contains("mp0: /srv is not a storage volume"), "{toml}");
    }

    #[test]
    fn what_cannot_be_mapped_is_said_never_dropped() {
        let t = tree(
            "local: 100-0\n\ttarget pve2\n\nlocal: 101-0\n\ttarget pve2\n\tremove_job local\n\n\
             local: 103-0\n\ttarget pve2\n\nlocal: bogus\n\ttarget pve2\n\nlocal: 104-0\n\n\
             remote: 105-0\n\ttarget x\n\nlocal: 106-0\n\ttarget pve1\n\trate fast\n\
             \tschedule sat 18:15\n\nlocal: 107-0\n\ttarget pve2\n\nlocal: 107-1\n\ttarget pve3\n\
             \tschedule */30\n\tdisable 1\n\nlocal: 108-0\n\ttarget pve1\n\nlocal: 109-0\n\ttarget pve2\n",
            &[
                ("pve1", "vm", 100, "scsi0: local-lvm:vm-100-disk-0\n"),
                (
                    "pve2",
                    "vm",
                    106,
                    "scsi0: local-zfs:vm-106-disk-0\nscsi1: tank:vm-106-disk-1\n",
                ),
                ("pve1", "vm", 107, "scsi0: local-zfs:vm-107-disk-0\n"),
                ("pve1", "vm", 108, "scsi0: local-zfs:vm-108-disk-0\n"),
                ("pve1", "vm", 109, "scsi0: tank:vm-109-disk-0\n"),
            ],
        );
        let out = import(&t);
        let notes = out.notes.join("\n");
        for want in [
            "vm:100 (pvesr 100-0): no replicable ZFS disk",
            "101-0 is being removed",
            "guest 103 has no config",
            "\"bogus\" is not GUEST-JOBNUM",
            "104-0 has no target",
            "`remote: 105-0` is not a local replication job",
            "every target of pvesr 108-0 is the guest's own node pve1",
        ] {
            assert!(notes.contains(want), "missing {want:?} in:\n{notes}");
        }
        let j106: Vec<&ImportedJob> = out.jobs.iter().filter(|j| j.guest == "vm:106").collect();
        assert_eq!(j106.len(), 2, "one job per pool");
        assert_eq!(j106[0].name, "vm-106-local-zfs");
        assert_eq!(j106[1].name, "vm-106-tank");
        let c = j106[1].comments.join("\n");
        assert!(
            notes
                .contains("pvesr job 106-0: rate \"fast\" is not a number of MB/s; left unlimited"),
            "{notes}"
        );
        assert_eq!(j106[1].rate_limit, 0);
        assert!(
            !c.contains("restricted"),
            "tank is enabled on the target pve1: {c}"
        );
        assert!(
            c.contains("sat 18:15") && c.contains("not snapshotted in one transaction"),
            "{c}"
        );
        let j107 = out
            .jobs
            .iter()
            .find(|j| j.name == "vm-107")
            .expect("vm-107");
        assert_eq!(
            j107.targets,
            ["pve2:rpool/data/vm-107-disk-0"],
            "the disabled target left out"
        );
        assert_eq!(
            j107.interval, "15m",
            "the disabled job's schedule does not count"
        );
        assert!(j107
            .comments
            .iter()
            .any(|c| c.contains("107-1 is disabled")));
        let j109 = out
            .jobs
            .iter()
            .find(|j| j.name == "vm-109")
            .expect("vm-109");
        assert!(
            j109.comments
                .iter()
                .any(|c| c.contains("storage \"tank\" is restricted to nodes pve1, not pve2")),
            "{:?}",
            j109.comments
        );
        let pve3 = out.nodes.iter().find(|n| n.name == "pve3");
        assert!(pve3.is_none(), "a left-out target is no node of the config");
        assert!(out
            .to_toml()
            .contains("\n# - pvesr job 104-0 has no target; skipped\n"));
    }

    #[test]
    fn a_tree_that_is_not_there_is_an_error_naming_it() {
        let e = read(Path::new("/nonexistent/pve")).expect_err("no root");
        assert!(
            e.to_string().contains("/nonexistent/pve: not a directory"),
            "{e}"
        );
        let empty = import(&Tree::default());
        assert!(empty.jobs.is_empty());
        assert!(empty.notes.iter().any(|n| n.contains("no replication.cfg")));
    }
}
