//! `tandem reverse JOB`: after a failover, make the old primary follow the
//! new one without losing what either side wrote.
//!
//! The new primary is the side with the newer generation mark (set by
//! `failover`). If the old primary has a divergent tail — snapshots after
//! the newest common one, or writes after its newest snapshot (or, where
//! ZFS cannot tell, possibly) — its dataset is first set aside whole under
//! `POOL/tandem-diverged/JOB-TIME` by a rename, and the dataset is rebuilt
//! at its old name as a promoted clone of the common snapshot (same GUIDs,
//! so the next transfer is incremental, never a full resend). Then the old
//! primary becomes read-only, takes the new generation, and one incremental
//! cycle runs from the new primary. Every step is idempotent; an
//! interrupted run is completed by the next (progress is kept in
//! `STATE_DIR/reverse/JOB.json`).
//!
//! `--switchover` is the planned move: quiesce (the job's `switchover_stop`
//! command), make the current primary read-only, a final incremental sync,
//! promote the other side, `switchover_start`. Never automatic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tandem_repl::cycle::{run_cycle, CycleOptions};
use tandem_repl::exec::{Endpoint, JobSpec};
use tandem_repl::state::{Direction, Rebuilt, StateStore};
use tandem_zfs::{CliZfs, Dataset, DatasetName, Guid, SnapshotName, Zfs, GENERATION_PROPERTY};

use super::fence::confirm;
use super::{load, me};
use crate::backend::NodeZfs;
use crate::config::{Config, Job};
use crate::outln;

/// Progress of an interrupted reverse.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    /// Where the old primary's dataset was set aside.
    diverged: DatasetName,
    /// The common snapshot's GUID.
    base: Guid,
    /// Its short name.
    base_short: String,
}

fn progress_path(store: &StateStore, job: &Job) -> PathBuf {
    store
        .dir()
        .join("reverse")
        .join(format!("{}.json", job.name))
}

fn load_progress(store: &StateStore, job: &Job) -> Result<Option<Progress>> {
    let p = progress_path(store, job);
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("{} is corrupt", p.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn save_progress(store: &StateStore, job: &Job, pr: &Progress) -> Result<()> {
    let p = progress_path(store, job);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(pr)?)?;
    std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))
}

/// A test hook: `TANDEM_TEST_CRASH_AFTER=STEP` makes `reverse` exit(99)
/// right after STEP, to prove that the next run completes the job.
fn crash_point(step: &str) {
    if std::env::var("TANDEM_TEST_CRASH_AFTER").is_ok_and(|v| v == step) {
        eprintln!("tandem: TANDEM_TEST_CRASH_AFTER={step}: exiting as if killed");
        std::process::exit(99);
    }
}

#[derive(Debug, Serialize, Default)]
struct Report {
    job: String,
    primary: String,
    follower: String,
    already: bool,
    base: Option<String>,
    diverged: Option<String>,
    divergence: String,
    restore: Vec<String>,
    cycle: Option<serde_json::Value>,
    ok: bool,
}

fn mark(job: &Job, d: Option<&Dataset>) -> u64 {
    d.and_then(|d| d.generation_of(job.name.as_str()))
        .map(|g| g.number)
        .unwrap_or(0)
}

async fn dataset(z: &NodeZfs, ep: &Endpoint) -> Result<Option<Dataset>> {
    let l = z
        .list(std::slice::from_ref(&ep.dataset))
        .await
        .with_context(|| format!("listing {ep}"))?;
    Ok(l.get(&ep.dataset).cloned())
}

fn cli<'a>(backends: &'a BTreeMap<String, NodeZfs>, ep: &Endpoint) -> Result<&'a CliZfs> {
    match backends.get(&ep.node) {
        Some(NodeZfs::Cli(c)) => Ok(c),
        Some(NodeZfs::Peer(_)) => bail!(
            "node {} is reached through `tandem serve`, which cannot rename or clone datasets; \
             run this command on {} itself",
            ep.node,
            ep.node
        ),
        None => bail!("no backend for node {}", ep.node),
    }
}

/// `tandem reverse JOB [--switchover]`.
pub async fn reverse(
    path: &Path,
    job: &str,
    switchover: bool,
    yes: bool,
    json: bool,
) -> Result<ExitCode> {
    let (cfg, store) = load(path)?;
    let job = cfg
        .select(&[job.to_string()])?
        .into_iter()
        .next()
        .context("no such job")?;
    let backends = cfg.backends()?;
    let r = if switchover {
        do_switchover(&cfg, &store, &backends, job, yes).await
    } else {
        do_reverse(&cfg, &store, &backends, job, yes).await
    };
    let report = match r {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tandem: error: reverse {}: {e:#}", job.name);
            return Ok(ExitCode::from(1));
        }
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print(r: &Report) {
    if r.already {
        outln!("{}: {} already follows {}", r.job, r.follower, r.primary);
    } else {
        outln!(
            "{}: {} now follows {} ({})",
            r.job,
            r.follower,
            r.primary,
            r.divergence
        );
    }
    if let Some(base) = &r.base {
        outln!("{}: common snapshot: {base}", r.job);
    }
    if let Some(d) = &r.diverged {
        outln!(
            "{}: what {} wrote after the common snapshot is kept in {d}",
            r.job,
            r.follower
        );
        for l in &r.restore {
            outln!("    {l}");
        }
    }
    if let Some(c) = &r.cycle {
        outln!(
            "{}: replication {} -> {}: {}",
            r.job,
            r.primary,
            r.follower,
            if c["ok"] == true {
                format!("ok ({})", c["plans"])
            } else {
                format!("FAILED: {}", c["error"])
            }
        );
    }
}

/// Sets the job's direction so that `primary` is its source, with `generation`.
fn set_primary(store: &StateStore, job: &Job, primary: &str, generation: u64) -> Result<()> {
    let direction = if job.source.node == primary {
        Direction::Forward
    } else {
        Direction::Reverse
    };
    store.update(&job.name, |st| {
        st.direction = direction;
        st.generation = generation;
        st.common = None;
    })?;
    Ok(())
}

async fn one_cycle(
    cfg: &Config,
    store: &StateStore,
    backends: &BTreeMap<String, NodeZfs>,
    job: &Job,
) -> Result<(bool, serde_json::Value)> {
    let st = store.load(&job.name)?;
    let spec: JobSpec = job.spec(&st);
    let opts = CycleOptions {
        lock_wait: std::time::Duration::from_secs(600),
        me: me("reverse"),
        parallel: 1,
        live: None,
    };
    let reports = run_cycle(backends, std::slice::from_ref(&spec), store, &opts).await;
    crate::heartbeat::record(&cfg.state_dir, std::slice::from_ref(&spec), &reports);
    let r = reports.first().context("the cycle reported nothing")?;
    Ok((r.result.is_ok(), super::run::report_json(r)))
}

async fn do_reverse(
    cfg: &Config,
    store: &StateStore,
    backends: &BTreeMap<String, NodeZfs>,
    job: &Job,
    yes: bool,
) -> Result<Report> {
    let (a, b) = (&job.source, &job.target);
    let za = backends.get(&a.node).context("no backend")?;
    let zb = backends.get(&b.node).context("no backend")?;
    let progress = load_progress(store, job)?;
    let (da, db) = (dataset(za, a).await?, dataset(zb, b).await?);
    let (ga, gb) = (mark(job, da.as_ref()), mark(job, db.as_ref()));
    // The new primary: the newer mark; with a reverse in progress, the
    // follower's mark may already equal it.
    let st = store.load(&job.name)?;
    // (new primary, its listing, follower, its listing, the primary's generation)
    let ((p, dp), (o, d_o), gp) = if ga > gb {
        ((a, da), (b, db), ga)
    } else if gb > ga {
        ((b, db), (a, da), gb)
    } else if progress.is_some() || ga > 0 {
        if job.spec(&st).source.node == a.node {
            ((a, da), (b, db), ga)
        } else {
            ((b, db), (a, da), ga)
        }
    } else {
        bail!(
            "job {} was never failed over (no generation mark on either side); nothing to reverse. \
             For a planned move of the primary use `tandem reverse {} --switchover`",
            job.name,
            job.name
        );
    };
    let zo = cli(backends, o)?;
    // The follower's node, for listings (`zo` is the same node's `zfs`).
    let zo_node = backends.get(&o.node).context("no backend")?;
    let dp = dp.with_context(|| format!("the new primary {p} does not exist"))?;
    let primary_mark = dp
        .generation_of(job.name.as_str())
        .cloned()
        .with_context(|| format!("{p} carries no generation mark"))?;
    let mut report = Report {
        job: job.name.to_string(),
        primary: p.to_string(),
        follower: o.to_string(),
        ..Report::default()
    };
    if progress.is_none() && mark(job, d_o.as_ref()) == gp && d_o.is_some() {
        // Already following: make sure the job runs that way.
        set_primary(store, job, &p.node, gp)?;
        report.already = true;
        report.divergence = "already following".into();
        let (ok, c) = one_cycle(cfg, store, backends, job).await?;
        report.ok = ok;
        report.cycle = Some(c);
        return Ok(report);
    }
    confirm(
        &format!("make {o} follow {p}, setting its divergent state aside, on node"),
        &o.node,
        yes,
    )?;

    let pr = match progress {
        Some(pr) => pr,
        None => {
            let d_o = d_o.with_context(|| format!("{o} does not exist"))?;
            // The newest snapshot of the old primary that the new one has (by GUID).
            let base = d_o
                .snapshots
                .iter()
                .rev()
                .find(|s| dp.by_guid(s.guid).is_some())
                .with_context(|| {
                    format!(
                        "{o} and {p} have no snapshot in common (by GUID): following would need a \
                         full resend, which tandem will not do over {o}'s data. Rename {o} aside by \
                         hand and run `tandem run {}`",
                        job.name
                    )
                })?
                .clone();
            let tail: Vec<String> = d_o
                .snapshots
                .iter()
                .filter(|s| s.createtxg > base.createtxg)
                .map(|s| s.name.short().to_string())
                .collect();
            let newest_is_base = d_o.newest().map(|s| s.guid) == Some(base.guid);
            let divergence = if !tail.is_empty() {
                Some(format!(
                    "{} snapshot(s) after the common one: {}",
                    tail.len(),
                    tail.join(", ")
                ))
            } else if !newest_is_base {
                Some("snapshots after the common one".to_string())
            } else {
                match d_o.written {
                    Some(0) => None,
                    Some(n) => Some(format!("{n} bytes written after the common snapshot")),
                    None => Some(
                        "this ZFS cannot tell whether anything was written after the common snapshot \
                         (no `written` property); set aside to be safe"
                            .to_string(),
                    ),
                }
            };
            report.base = Some(base.name.to_string());
            match divergence {
                None => {
                    report.divergence = "no divergent writes".into();
                    // Nothing to keep: just follow.
                    zo.set_property(&o.dataset, "readonly", "on").await?;
                    zo.set_property(&o.dataset, GENERATION_PROPERTY, &primary_mark.to_string())
                        .await?;
                    set_primary(store, job, &p.node, gp)?;
                    let (ok, c) = one_cycle(cfg, store, backends, job).await?;
                    report.ok = ok;
                    report.cycle = Some(c);
                    return Ok(report);
                }
                Some(why) => report.divergence = format!("divergent: {why}"),
            }
            let container = DatasetName::parse(&format!("{}/tandem-diverged", o.dataset.pool()))?;
            let leaf = format!("{}-{}", job.name, Utc::now().format("%Y%m%dT%H%M%SZ"));
            let pr = Progress {
                diverged: DatasetName::parse(&format!("{container}/{leaf}"))?,
                base: base.guid,
                base_short: base.name.short().to_string(),
            };
            zo.create_container(&container).await?;
            save_progress(store, job, &pr)?;
            crash_point("recorded");
            pr
        }
    };
    report.diverged = Some(pr.diverged.to_string());
    if report.divergence.is_empty() {
        report.divergence = "divergent (completing an interrupted reverse)".into();
    }
    report
        .base
        .get_or_insert_with(|| format!("{}@{}", o.dataset, pr.base_short));
    // Set aside: rename the whole dataset (snapshots, writes and all).
    let here = dataset(zo_node, o).await?;
    let diverged_ep = Endpoint {
        node: o.node.clone(),
        dataset: pr.diverged.clone(),
    };
    let aside = dataset(zo_node, &diverged_ep).await?;
    if here.is_some() && aside.is_none() {
        zo.rename(&o.dataset, &pr.diverged).await?;
        crash_point("renamed");
    }
    // Rebuild the follower at its name from the common snapshot.
    if dataset(zo_node, o).await?.is_none() {
        let base: SnapshotName = pr.diverged.snapshot(&pr.base_short)?;
        zo.clone_snapshot(&base, &o.dataset, &[("readonly", "on")])
            .await?;
        crash_point("cloned");
    }
    let origin = zo.get_property(&o.dataset, "origin").await?;
    if origin
        .as_deref()
        .is_some_and(|v| v.starts_with(&format!("{}@", pr.diverged)))
    {
        zo.promote(&o.dataset).await?;
        crash_point("promoted");
    }
    // The rebuilt follower must have the base with its GUID.
    let rebuilt = dataset(zo_node, o)
        .await?
        .with_context(|| format!("{o} is missing after the rebuild"))?;
    if rebuilt.by_guid(pr.base).is_none() {
        bail!("{o} was rebuilt but lacks the common snapshot (GUID {}); nothing more was changed; see {}", pr.base, pr.diverged);
    }
    zo.set_property(&o.dataset, "readonly", "on").await?;
    zo.set_property(&o.dataset, GENERATION_PROPERTY, &primary_mark.to_string())
        .await?;
    // What `written` says of the rebuilt follower now is the clone's own
    // metadata (a zvol clone's intent log is reset, which `written` counts
    // and `zfs receive` ignores): remember it so the first cycle is not
    // mistaken for a diverged target.
    zo.sync(std::slice::from_ref(&o.dataset)).await?;
    let written = dataset(zo_node, o)
        .await?
        .and_then(|d| d.written)
        .unwrap_or(0);
    set_primary(store, job, &p.node, gp)?;
    store.update(&job.name, |st| {
        st.rebuilt = Some(Rebuilt {
            target: o.to_string(),
            base: pr.base,
            written,
        });
    })?;
    let _ = std::fs::remove_file(progress_path(store, job));
    crash_point("marked");
    report.restore = restore_commands(&pr, o, p, &rebuilt);
    let (ok, c) = one_cycle(cfg, store, backends, job).await?;
    report.ok = ok;
    report.cycle = Some(c);
    Ok(report)
}

fn restore_commands(pr: &Progress, o: &Endpoint, p: &Endpoint, rebuilt: &Dataset) -> Vec<String> {
    let d = &pr.diverged;
    let mut v = vec![format!(
        "on {}: inspect:        zfs list -r -t all {d}",
        o.node
    )];
    match rebuilt.kind {
        tandem_zfs::DatasetKind::Filesystem => v.push(format!(
            "on {}: read the files:  zfs mount {d} 2>/dev/null; ls \"$(zfs get -H -o value mountpoint {d})\"",
            o.node
        )),
        tandem_zfs::DatasetKind::Volume => v.push(format!(
            "on {}: read the disk:   /dev/zvol/{d}  (e.g. mount a partition read-only)",
            o.node
        )),
    }
    v.push(format!(
        "copy back what matters to the primary {}: files with rsync/cp, or the whole state as a dataset: \
         zfs snapshot {d}@keep && zfs send {d}@keep | ssh {} zfs receive {}/tandem-diverged/{}",
        p,
        p.node,
        p.dataset.pool(),
        d.as_str().rsplit('/').next().unwrap_or("diverged")
    ));
    v.push(format!(
        "on {}: discard it when done: zfs destroy -r {d}",
        o.node
    ));
    v
}

async fn run_hook(what: &str, cmd: Option<&String>, job: &Job, from: &str, to: &str) -> Result<()> {
    let Some(cmd) = cmd else {
        return Ok(());
    };
    let st = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("TANDEM_JOB", job.name.as_str())
        .env("TANDEM_FROM", from)
        .env("TANDEM_TO", to)
        .status()
        .await
        .with_context(|| format!("{what} command {cmd:?}"))?;
    if !st.success() {
        bail!("{what} command {cmd:?} failed ({st})");
    }
    Ok(())
}

async fn do_switchover(
    cfg: &Config,
    store: &StateStore,
    backends: &BTreeMap<String, NodeZfs>,
    job: &Job,
    yes: bool,
) -> Result<Report> {
    let st = store.load(&job.name)?;
    let spec = job.spec(&st);
    let (c, f) = (&spec.source, &spec.target);
    confirm(
        &format!("move the primary of {} from {c} to {f}: quiesce", job.name),
        &c.node,
        yes,
    )?;
    let zc = backends.get(&c.node).context("no backend")?;
    let zf = backends.get(&f.node).context("no backend")?;
    let dc = dataset(zc, c)
        .await?
        .with_context(|| format!("{c} does not exist"))?;
    let df = dataset(zf, f)
        .await?
        .with_context(|| format!("{f} does not exist"))?;
    let generation = st
        .generation
        .max(mark(job, Some(&dc)))
        .max(mark(job, Some(&df)))
        + 1;
    run_hook(
        "switchover_stop",
        job.switchover_stop.as_ref(),
        job,
        &c.node,
        &f.node,
    )
    .await?;
    // Nothing can be written on the primary from here on.
    zc.set_property(&c.dataset, "readonly", "on").await?;
    let (ok, cyc) = one_cycle(cfg, store, backends, job).await?;
    if !ok {
        let _ = zc.set_property(&c.dataset, "readonly", "off").await;
        bail!(
            "the final sync failed ({}); {c} is writable again and still the primary. \
             Start the workload on {} again (switchover_start was not run)",
            cyc["error"],
            c.node
        );
    }
    let value = format!("{} {generation} {}", job.name, f.node);
    zf.set_property(&f.dataset, "readonly", "off").await?;
    zf.set_property(&f.dataset, GENERATION_PROPERTY, &value)
        .await?;
    zc.set_property(&c.dataset, GENERATION_PROPERTY, &value)
        .await?;
    set_primary(store, job, &f.node, generation)?;
    run_hook(
        "switchover_start",
        job.switchover_start.as_ref(),
        job,
        &c.node,
        &f.node,
    )
    .await?;
    Ok(Report {
        job: job.name.to_string(),
        primary: f.to_string(),
        follower: c.to_string(),
        already: false,
        base: None,
        diverged: None,
        divergence: "planned switchover: final sync done, nothing diverged".into(),
        restore: Vec::new(),
        cycle: Some(cyc),
        ok: true,
    })
}
