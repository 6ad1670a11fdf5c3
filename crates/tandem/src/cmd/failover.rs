//! `tandem failover NODE`: run on a survivor when NODE died. Fences NODE
//! (or takes the operator's word with `--confirmed-off`), then promotes the
//! local replica of every job that NODE was replicating here: aborts a
//! partial receive, rolls back to the newest complete replication
//! snapshot, makes it writable, marks it with a new generation, and records
//! that this node is the job's primary now.
//!
//! First of all it asks for quorum (`[quorum]`, see [`crate::quorum`]): a
//! node that is not in the quorate partition of its corosync cluster, or
//! cannot prove it is, may be the one that was cut off, and refuses before
//! it fences or changes anything. `--confirmed-off` does not bypass this:
//! the operator vouches for NODE's power, not for which side of a split
//! this node is on. There is no `--ignore-quorum`; `mode = "off"` in
//! `[quorum]` is the deliberate, written-down way out.
//!
//! Exit codes (for HA managers): 0 every replica promoted (or already
//! was), 1 a job failed, 3 refused because NODE is not confirmed off or
//! this node has no quorum; 2 bad usage or configuration.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use serde::Serialize;
use tandem_fence::level::fence_node;
use tandem_repl::exec::JobSpec;
use tandem_repl::state::{Direction, Promotion, StateStore};
use tandem_zfs::{Dataset, Zfs, GENERATION_PROPERTY};

use super::fence::{confirm, levels};
use super::load;
use crate::backend::NodeZfs;
use crate::config::{Config, Job};
use crate::outln;
use crate::output::age;

/// Exit code when the node is not confirmed off, or this node has no quorum.
pub const EXIT_REFUSED: u8 = 3;

#[derive(Debug, Serialize)]
struct JobResult {
    job: String,
    dataset: String,
    ok: bool,
    already: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rpo_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    writable_after_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    fenced: bool,
    confirmed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fence: Option<tandem_fence::FenceReport>,
    jobs: Vec<JobResult>,
    elapsed_ms: f64,
}

/// The jobs NODE replicates to this node now (by their current direction).
fn jobs_from<'a>(
    cfg: &'a Config,
    store: &StateStore,
    node: &str,
) -> Result<Vec<(&'a Job, JobSpec)>> {
    let mut out = Vec::new();
    for j in cfg.jobs.values() {
        let st = store.load(&j.name)?;
        let spec = j.spec(&st);
        let here = cfg.is_local(&spec.target.node) || cfg.is_local(&spec.source.node);
        let from_node = spec.source.node == node
            || (st.promoted.as_ref().is_some_and(|p| p.from == node)
                && cfg.is_local(&spec.source.node));
        if here && from_node {
            out.push((j, spec));
        }
    }
    Ok(out)
}

/// `tandem failover NODE`.
pub async fn failover(
    path: &Path,
    node: &str,
    confirmed_off: bool,
    yes: bool,
    json: bool,
) -> Result<ExitCode> {
    let start = Instant::now();
    let (cfg, store) = load(path)?;
    if !cfg.nodes.contains_key(node) {
        bail!(
            "{}: no node named {node:?} in [nodes] (known: {})",
            cfg.path.display(),
            cfg.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if node == cfg.local_node {
        bail!("{node} is this node (local_node); run failover on a survivor");
    }
    let jobs = jobs_from(&cfg, &store, node)?;
    if jobs.is_empty() {
        bail!(
            "no job replicates from {node} to this node ({}); nothing to promote",
            cfg.local_node
        );
    }
    let backends = cfg.backends()?;

    // Quorum before anything: nothing is fenced or changed without it.
    if let Some(why) = crate::quorum::failover_refusal(&cfg).await? {
        tracing::error!(node, "{why}");
        let report = Report {
            node: node.to_string(),
            refused: Some(why.clone()),
            fenced: false,
            confirmed_by: None,
            fence: None,
            jobs: Vec::new(),
            elapsed_ms: start.elapsed().as_secs_f64() * 1000.0,
        };
        if json {
            print(&report, json)?;
        } else {
            outln!("REFUSING to fail over from {node}: {why}.");
        }
        return Ok(ExitCode::from(EXIT_REFUSED));
    }

    // Which replicas still need promoting?
    let mut pending = Vec::new();
    let mut results = Vec::new();
    for (job, spec) in &jobs {
        let st = store.load(&job.name)?;
        let already = cfg.is_local(&spec.source.node)
            && st
                .promoted
                .as_ref()
                .is_some_and(|p| p.from == node && p.generation == st.generation);
        if already {
            let p = st.promoted.clone();
            results.push(JobResult {
                job: job.name.to_string(),
                dataset: spec.source.to_string(),
                ok: true,
                already: true,
                snapshot: p.as_ref().map(|p| p.snapshot.to_string()),
                rpo_seconds: p.as_ref().map(|p| p.rpo_seconds),
                generation: Some(st.generation),
                error: None,
                writable_after_ms: 0.0,
            });
        } else {
            pending.push((*job, spec.clone()));
        }
    }

    let mut report = Report {
        node: node.to_string(),
        refused: None,
        fenced: false,
        confirmed_by: None,
        fence: None,
        jobs: Vec::new(),
        elapsed_ms: 0.0,
    };
    if !pending.is_empty() {
        if confirmed_off {
            confirm(
                "promote replicas on your word that it is powered off: fail over from",
                node,
                yes,
            )?;
            tracing::warn!(node, "OPERATOR CONFIRMED {node} IS OFF BY HAND: no fence device was asked; promoting on the operator's word");
            eprintln!("tandem: WARNING: promoting without a fence: the operator confirmed {node} is powered off");
            report.fenced = true;
            report.confirmed_by = Some("operator".into());
        } else {
            let lv = levels(&cfg, node).context(
                "cannot fence; fix the fence levels or check by hand and pass --confirmed-off",
            )?;
            let f = fence_node(node, &lv).await;
            report.fenced = f.is_fenced();
            report.confirmed_by = f.is_fenced().then(|| "fence".to_string());
            report.fence = Some(f);
        }
    }
    if !pending.is_empty() && !report.fenced {
        report.jobs = results;
        report.elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
        print(&report, json)?;
        if !json {
            outln!(
                "REFUSING to promote: {node} is not confirmed powered off. Check it by hand and run \
                 `tandem failover {node} --confirmed-off`, or fix its fence levels (`tandem fence test {node}`)."
            );
        }
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    let by = report.confirmed_by.clone().unwrap_or_default();
    for (job, spec) in pending {
        let r = promote(&cfg, &store, &backends, job, &spec, node, &by, start).await;
        results.push(r.unwrap_or_else(|e| JobResult {
            job: job.name.to_string(),
            dataset: spec.target.to_string(),
            ok: false,
            already: false,
            snapshot: None,
            rpo_seconds: None,
            generation: None,
            error: Some(format!("{e:#}")),
            writable_after_ms: start.elapsed().as_secs_f64() * 1000.0,
        }));
    }
    report.jobs = results;
    report.elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
    print(&report, json)?;
    Ok(if report.jobs.iter().all(|j| j.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn own_newest<'a>(job: &Job, ds: &'a Dataset) -> Option<&'a tandem_zfs::Snapshot> {
    ds.snapshots.iter().rev().find(|s| job.name.owns(s))
}

#[allow(clippy::too_many_arguments)]
async fn promote(
    cfg: &Config,
    store: &StateStore,
    backends: &std::collections::BTreeMap<String, NodeZfs>,
    job: &Job,
    spec: &JobSpec,
    dead: &str,
    confirmed_by: &str,
    start: Instant,
) -> Result<JobResult> {
    let tgt = &spec.target;
    let z = backends
        .get(&tgt.node)
        .with_context(|| format!("no backend for node {}", tgt.node))?;
    let ds_name = &tgt.dataset;
    if !cfg.is_local(&tgt.node) {
        bail!("{tgt} is not on this node; run failover on {}", tgt.node);
    }
    // 1. A receive from the dead node may still be running: its TCP
    //    connection never ends (no FIN, no RST from a node without power),
    //    so it would wait for hours and keep the partial receive busy. The
    //    node is confirmed off: that stream can never complete.
    stop_receives(ds_name).await;
    // 2. A partial resumable receive is discarded: only complete snapshots count.
    let mut tries = 0;
    loop {
        match z.receive_abort(ds_name).await {
            Ok(_) => break,
            Err(tandem_zfs::ZfsError::Unsupported { .. }) => break,
            Err(e) if e.to_string().contains("busy") && tries < 20 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e).context(format!("{tgt}: cannot abort the partial receive")),
        }
    }
    let listing = z.list(std::slice::from_ref(ds_name)).await?;
    let ds = listing
        .get(ds_name)
        .with_context(|| format!("{tgt} does not exist; nothing to promote"))?;
    let snap = own_newest(job, ds).with_context(|| {
        format!(
            "{tgt} has no complete replication snapshot of job {}; nothing to promote",
            job.name
        )
    })?;
    // 3. Roll back to it; a newer snapshot (someone else's) is not destroyed.
    let newer: Vec<String> = ds
        .snapshots
        .iter()
        .filter(|s| s.createtxg > snap.createtxg)
        .map(|s| s.name.to_string())
        .collect();
    if !newer.is_empty() {
        bail!(
            "{tgt}: snapshots newer than the last replication snapshot {} exist ({}); \
             tandem destroys nothing it did not make: look at them, destroy or keep them, then run failover again",
            snap.name,
            newer.join(", ")
        );
    }
    z.rollback(&snap.name)
        .await
        .with_context(|| format!("rolling {tgt} back to {}", snap.name))?;
    // 4. Writable, with a new generation.
    let st = store.load(&job.name)?;
    let mark = |d: &Dataset| {
        d.generation_of(job.name.as_str())
            .map(|g| g.number)
            .unwrap_or(0)
    };
    let generation = st.generation.max(mark(ds)) + 1;
    z.set_property(ds_name, "readonly", "off").await?;
    z.set_property(
        ds_name,
        GENERATION_PROPERTY,
        &format!("{} {generation} {}", job.name, tgt.node),
    )
    .await?;
    let writable_after_ms = start.elapsed().as_secs_f64() * 1000.0;
    let now = Utc::now();
    let rpo = now.timestamp() - snap.creation;
    // 5. This node is the job's primary now.
    let new_direction = if job.source.node == tgt.node {
        Direction::Forward
    } else {
        Direction::Reverse
    };
    store.update(&job.name, |st| {
        st.direction = new_direction;
        st.generation = generation;
        st.common = None;
        st.last_error = None;
        st.consecutive_failures = 0;
        st.promoted = Some(Promotion {
            at: now,
            node: tgt.node.clone(),
            from: dead.to_string(),
            snapshot: snap.name.clone(),
            rpo_seconds: rpo,
            generation,
            confirmed_by: confirmed_by.to_string(),
        });
    })?;
    tracing::info!(job = %job.name, dataset = %tgt, snapshot = %snap.name, rpo_s = rpo, generation,
        "replica promoted: {} is the primary now", tgt.node);
    Ok(JobResult {
        job: job.name.to_string(),
        dataset: tgt.to_string(),
        ok: true,
        already: false,
        snapshot: Some(snap.name.to_string()),
        rpo_seconds: Some(rpo),
        generation: Some(generation),
        error: None,
        writable_after_ms,
    })
}

fn print(r: &Report, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    if let Some(f) = &r.fence {
        for a in &f.attempts {
            match (&a.outcome, &a.error) {
                (Some(o), _) => outln!(
                    "fence {}: level {} {} {}: {o} ({:.0} ms)",
                    r.node,
                    a.level,
                    a.kind,
                    a.device,
                    a.elapsed_ms
                ),
                (None, Some(e)) => outln!(
                    "fence {}: level {} {} {}: FAILED: {e} ({:.0} ms)",
                    r.node,
                    a.level,
                    a.kind,
                    a.device,
                    a.elapsed_ms
                ),
                _ => {}
            }
        }
    }
    for j in &r.jobs {
        match (&j.error, j.already) {
            (Some(e), _) => outln!("{}: FAILED: {e}", j.job),
            (None, true) => outln!(
                "{}: already promoted: {} is writable (generation {})",
                j.job,
                j.dataset,
                j.generation.unwrap_or(0)
            ),
            (None, false) => outln!(
                "{}: promoted {} at {} (data-loss window {}), writable {:.0} ms after start, generation {}",
                j.job,
                j.dataset,
                j.snapshot.as_deref().unwrap_or("?"),
                age(j.rpo_seconds.unwrap_or(0)),
                j.writable_after_ms,
                j.generation.unwrap_or(0)
            ),
        }
    }
    Ok(())
}

/// The `zfs receive` processes on this machine whose target is `ds`.
fn receives_into(ds: &tandem_zfs::DatasetName) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        let is_zfs = args
            .first()
            .is_some_and(|a| a.rsplit(|b| *b == b'/').next() == Some(b"zfs".as_slice()));
        let is_recv = args
            .iter()
            .any(|a| *a == b"receive".as_slice() || *a == b"recv".as_slice());
        if is_zfs && is_recv && args.last() == Some(&ds.as_str().as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Ends every `zfs receive` into `ds` (SIGTERM, then SIGKILL after 5 s).
async fn stop_receives(ds: &tandem_zfs::DatasetName) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pids = receives_into(ds);
    if pids.is_empty() {
        return;
    }
    tracing::warn!(dataset = %ds, ?pids, "ending the receive from the fenced node (it can never complete)");
    for &p in &pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    for step in 0..50 {
        if receives_into(ds).is_empty() {
            return;
        }
        if step == 25 {
            for p in receives_into(ds) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tracing::error!(dataset = %ds, "a zfs receive into it does not end");
}
