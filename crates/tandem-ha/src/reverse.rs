//! `reverse JOB`: after a failover, make the old primary follow the new one
//! without losing what either side wrote. It runs on either node: every
//! change to the follower goes through its node's [`Zfs`], locally or
//! through `tandem serve`.
//!
//! The new primary is the end with the newer generation mark. If the old
//! primary has a divergent tail — snapshots after the newest common one,
//! or writes after its newest snapshot (or, where ZFS cannot tell,
//! possibly) — its dataset is first set aside whole under
//! `POOL/tandem-diverged/JOB-TIME` by a rename, and the dataset is rebuilt
//! at its old name as a promoted clone of the common snapshot (same GUIDs,
//! so the next transfer is incremental, never a full resend). Then the old
//! primary becomes read-only, takes the new generation, and one
//! incremental cycle runs from the new primary. Every step is idempotent;
//! an interrupted run is completed by the next (progress is kept in the
//! store's `reverse` record, written durably).

use serde::{Deserialize, Serialize};
use tandem_repl::cycle::{run_cycle, CycleEnv, CycleOptions, Summary};
use tandem_repl::job::{Endpoint, Job};
use tandem_repl::roles::{resolve, Roles};
use tandem_repl::state::{Direction, Rebuilt};
use tandem_zfs::{
    Dataset, DatasetKind, DatasetName, Generation, Guid, Snapshot, SnapshotName, Zfs,
    GENERATION_PROPERTY,
};

use crate::env::Env;
use crate::error::{refuse_fanout_job, refuse_guest_job, zerr, HaError};

/// The store's record kind for reverse's progress.
pub const PROGRESS: &str = "reverse";

/// Progress of an interrupted reverse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Where the old primary's dataset was set aside.
    pub diverged: DatasetName,
    /// The common snapshot's GUID.
    pub base: Guid,
    /// Its short name.
    pub base_short: String,
}

/// What `reverse` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReverseReport {
    /// The job.
    pub job: String,
    /// The primary, `node:dataset`.
    pub primary: String,
    /// The end that follows it now.
    pub follower: String,
    /// It followed already; only a cycle ran.
    pub already: bool,
    /// The newest common snapshot (on the follower).
    pub base: Option<String>,
    /// Where the follower's divergent state was set aside.
    pub diverged: Option<String>,
    /// What diverged, in words.
    pub divergence: String,
    /// The commands that bring the divergent state back.
    pub restore: Vec<String>,
    /// The cycle run from the primary afterwards.
    pub cycle: Option<Summary>,
    /// The follower follows and the cycle succeeded.
    pub ok: bool,
}

/// What `reverse` is about to do, for the confirmation.
#[derive(Debug, Clone)]
pub struct ReversePlan {
    /// The primary.
    pub primary: Endpoint,
    /// The end to turn around.
    pub follower: Endpoint,
    /// Whether anything on the follower changes (beyond a cycle).
    pub changes_follower: bool,
}

/// `ep`'s dataset, which must exist.
async fn existing<Z: Zfs>(env: &Env<'_, Z>, job: &Job, ep: &Endpoint) -> Result<Dataset, HaError> {
    listed(env, ep)
        .await?
        .ok_or_else(|| HaError::DatasetMissing {
            job: job.name.to_string(),
            dataset: ep.clone(),
        })
}

async fn listed<Z: Zfs>(env: &Env<'_, Z>, ep: &Endpoint) -> Result<Option<Dataset>, HaError> {
    let l = env
        .zfs(&ep.node)?
        .list(std::slice::from_ref(&ep.dataset))
        .await
        .map_err(zerr(&ep.node))?;
    Ok(l.get(&ep.dataset).cloned())
}

/// Both ends, listed, and the job's roles.
async fn look<Z: Zfs>(
    env: &Env<'_, Z>,
    job: &Job,
) -> Result<(Roles, Option<Dataset>, Option<Dataset>), HaError> {
    let (s, t) = (
        listed(env, &job.source).await?,
        listed(env, &job.target).await?,
    );
    let roles = resolve(job, s.as_ref(), t.as_ref())?;
    let (p, o) = if roles.forward(job) { (s, t) } else { (t, s) };
    Ok((roles, p, o))
}

/// What `reverse` would do, without changing anything.
pub async fn plan<Z: Zfs>(env: &Env<'_, Z>, job: &Job) -> Result<ReversePlan, HaError> {
    refuse_fanout_job(job, "reverse")?;
    refuse_guest_job(
        job,
        "reverse",
        "Until it does: stop the job, and turn each disk around by hand (see DESIGN.md, reverse)",
    )?;
    let progress = env.read_progress::<Progress>(PROGRESS, &job.name)?;
    let (roles, _, _) = look(env, job).await?;
    if progress.is_none() && roles.follower_agrees() && roles.generation.number == 0 {
        return Err(HaError::NeverFailedOver {
            job: job.name.to_string(),
        });
    }
    Ok(ReversePlan {
        changes_follower: progress.is_some() || !roles.follower_agrees(),
        primary: roles.primary,
        follower: roles.follower,
    })
}

/// Makes the old primary of `job` follow the new one.
pub async fn reverse<Z: Zfs>(env: &Env<'_, Z>, job: &Job) -> Result<ReverseReport, HaError> {
    refuse_fanout_job(job, "reverse")?;
    refuse_guest_job(
        job,
        "reverse",
        "Until it does: stop the job, and turn each disk around by hand (see DESIGN.md, reverse)",
    )?;
    let lock = env
        .store
        .lock("job", job.name.as_str(), &env.me, env.lock_wait)
        .await?;
    let progress = env.read_progress::<Progress>(PROGRESS, &job.name)?;
    let (roles, dp, d_o) = look(env, job).await?;
    let (p, o) = (roles.primary.clone(), roles.follower.clone());
    let dp = dp.ok_or_else(|| HaError::DatasetMissing {
        job: job.name.to_string(),
        dataset: p.clone(),
    })?;
    let mark = roles.generation.clone();
    let mut report = ReverseReport {
        job: job.name.to_string(),
        primary: p.to_string(),
        follower: o.to_string(),
        ..ReverseReport::default()
    };
    if progress.is_none() && roles.follower_agrees() {
        if mark.number == 0 {
            return Err(HaError::NeverFailedOver {
                job: job.name.to_string(),
            });
        }
        // Already following: make sure the job runs that way.
        report.already = true;
        report.divergence = "already following".into();
        drop(lock);
        return cycle(env, job, report).await;
    }
    let zo = env.zfs(&o.node)?;
    let pr = match progress {
        Some(pr) => pr,
        None => {
            let d_o = d_o.ok_or_else(|| HaError::DatasetMissing {
                job: job.name.to_string(),
                dataset: o.clone(),
            })?;
            let base = common_base(&d_o, &dp).ok_or_else(|| HaError::NoCommonSnapshot {
                job: job.name.to_string(),
                primary: p.clone(),
                follower: o.clone(),
            })?;
            report.base = Some(base.name.to_string());
            match divergence(&d_o, &base) {
                None => {
                    report.divergence = "no divergent writes".into();
                    // Nothing to keep: just follow.
                    follow(env, job, &o, &mark, None).await?;
                    env.host.step("marked")?;
                    drop(lock);
                    return cycle(env, job, report).await;
                }
                Some(why) => report.divergence = format!("divergent: {why}"),
            }
            let container = DatasetName::parse(&format!(
                "{}/{}",
                o.dataset.pool(),
                tandem_peer::auth::DIVERGED
            ))?;
            let leaf = format!("{}-{}", job.name, env.clock.now().format("%Y%m%dT%H%M%SZ"));
            let pr = Progress {
                diverged: DatasetName::parse(&format!("{container}/{leaf}"))?,
                base: base.guid,
                base_short: base.name.short().to_string(),
            };
            zo.create_container(&container, &[])
                .await
                .map_err(zerr(&o.node))?;
            env.write_progress(PROGRESS, &job.name, &pr)?;
            env.host.step("recorded")?;
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
    let claim = Some(&mark);
    // Set aside: rename the whole dataset (snapshots, writes and all).
    let aside_ep = Endpoint {
        node: o.node.clone(),
        dataset: pr.diverged.clone(),
    };
    if listed(env, &o).await?.is_some() && listed(env, &aside_ep).await?.is_none() {
        zo.rename(&o.dataset, &pr.diverged, claim)
            .await
            .map_err(zerr(&o.node))?;
        env.host.step("renamed")?;
    }
    // Rebuild the follower at its name from the common snapshot.
    if listed(env, &o).await?.is_none() {
        let base: SnapshotName = pr.diverged.snapshot(&pr.base_short)?;
        zo.clone_snapshot(&base, &o.dataset, &[("readonly", "on")], claim)
            .await
            .map_err(zerr(&o.node))?;
        env.host.step("cloned")?;
    }
    let rebuilt = existing(env, job, &o).await?;
    if rebuilt
        .origin
        .as_ref()
        .is_some_and(|v| v.dataset() == &pr.diverged)
    {
        zo.promote(&o.dataset, claim).await.map_err(zerr(&o.node))?;
        env.host.step("promoted")?;
    }
    // The rebuilt follower must have the base with its GUID.
    let rebuilt = existing(env, job, &o).await?;
    if rebuilt.by_guid(pr.base).is_none() {
        return Err(HaError::RebuildLacksBase {
            job: job.name.to_string(),
            dataset: o.clone(),
            guid: pr.base,
            aside: pr.diverged.to_string(),
        });
    }
    follow(env, job, &o, &mark, Some(pr.base)).await?;
    env.store.remove_record(PROGRESS, &job.name)?;
    env.host.step("marked")?;
    report.restore = restore_commands(&pr, &o, &p, rebuilt.kind);
    drop(lock);
    cycle(env, job, report).await
}

/// The newest snapshot of the follower that the primary has (by GUID).
fn common_base(follower: &Dataset, primary: &Dataset) -> Option<Snapshot> {
    follower
        .snapshots
        .iter()
        .rev()
        .find(|s| primary.by_guid(s.guid).is_some())
        .cloned()
}

/// What the follower has after `base`, in words; `None` if nothing.
fn divergence(o: &Dataset, base: &Snapshot) -> Option<String> {
    let tail: Vec<&str> = o
        .snapshots
        .iter()
        .filter(|s| s.createtxg > base.createtxg)
        .map(|s| s.name.short())
        .collect();
    if !tail.is_empty() {
        return Some(format!(
            "{} snapshot(s) after the common one: {}",
            tail.len(),
            tail.join(", ")
        ));
    }
    if o.newest().map(|s| s.guid) != Some(base.guid) {
        return Some("snapshots after the common one".into());
    }
    match o.written {
        Some(0) => None,
        Some(n) => Some(format!("{n} bytes written after the common snapshot")),
        None => Some(
            "this ZFS cannot tell whether anything was written after the common snapshot (no \
             `written` property); set aside to be safe"
                .into(),
        ),
    }
}

/// Makes `o` a follower of `mark`'s primary: read-only, marked, recorded.
/// `rebuilt`: the follower was rebuilt from this common snapshot.
async fn follow<Z: Zfs>(
    env: &Env<'_, Z>,
    job: &Job,
    o: &Endpoint,
    mark: &Generation,
    rebuilt: Option<Guid>,
) -> Result<(), HaError> {
    let zo = env.zfs(&o.node)?;
    let claim = Some(mark);
    zo.set_property(&o.dataset, "readonly", "on", claim)
        .await
        .map_err(zerr(&o.node))?;
    zo.set_property(&o.dataset, GENERATION_PROPERTY, &mark.to_string(), claim)
        .await
        .map_err(zerr(&o.node))?;
    // What `written` says of a rebuilt follower now is the clone's own
    // metadata (a zvol clone's intent log is reset, which `written` counts
    // and `zfs receive` ignores): remember it so the first cycle is not
    // mistaken for a diverged target.
    let rebuilt = match rebuilt {
        None => None,
        Some(base) => {
            zo.sync(std::slice::from_ref(&o.dataset))
                .await
                .map_err(zerr(&o.node))?;
            let written = listed(env, o).await?.and_then(|d| d.written).unwrap_or(0);
            Some(Rebuilt {
                target: o.to_string(),
                base,
                written,
            })
        }
    };
    let primary_is_source = mark.primary == job.source.node;
    env.store.update(&job.name, |st| {
        st.direction = if primary_is_source {
            Direction::Forward
        } else {
            Direction::Reverse
        };
        st.generation = mark.number;
        st.common = None;
        if rebuilt.is_some() {
            st.rebuilt = rebuilt;
        }
    })?;
    Ok(())
}

/// One cycle from the primary; the report says how it went.
async fn cycle<Z: Zfs>(
    env: &Env<'_, Z>,
    job: &Job,
    mut report: ReverseReport,
) -> Result<ReverseReport, HaError> {
    let summary = run_one_cycle(env, job).await;
    report.ok = summary.ok;
    report.cycle = Some(summary);
    Ok(report)
}

/// Runs one replication cycle of `job` from its primary, wherever that is.
pub async fn run_one_cycle<Z: Zfs>(env: &Env<'_, Z>, job: &Job) -> Summary {
    let opts = CycleOptions {
        lock_wait: env.lock_wait,
        me: env.me.clone(),
        parallel: 1,
        live: None,
        only_primary: None,
    };
    let cenv = CycleEnv {
        nodes: env.nodes,
        store: env.store,
        clock: env.clock,
    };
    let reports = run_cycle(&cenv, std::slice::from_ref(job), &opts).await;
    match reports.first() {
        Some(r) => r.summary(),
        None => Summary {
            job: job.name.to_string(),
            ok: false,
            source: None,
            target: None,
            plans: Vec::new(),
            sent: None,
            bytes: 0,
            duration_ms: 0,
            common: None,
            pruned: Vec::new(),
            warnings: Vec::new(),
            skipped: None,
            error: Some("the cycle reported nothing".into()),
        },
    }
}

/// The commands an operator runs to inspect, restore or discard the
/// set-aside state.
fn restore_commands(pr: &Progress, o: &Endpoint, p: &Endpoint, kind: DatasetKind) -> Vec<String> {
    let d = &pr.diverged;
    let mut v = vec![format!(
        "on {}: inspect:        zfs list -r -t all {d}",
        o.node
    )];
    match kind {
        DatasetKind::Filesystem => v.push(format!(
            "on {}: read the files:  zfs mount {d} 2>/dev/null; ls \"$(zfs get -H -o value mountpoint {d})\"",
            o.node
        )),
        DatasetKind::Volume => v.push(format!(
            "on {}: read the disk:   /dev/zvol/{d}  (e.g. mount a partition read-only)",
            o.node
        )),
    }
    v.push(format!(
        "copy back what matters to the primary {}: files with rsync/cp, or the whole state as a dataset: \
         zfs snapshot {d}@keep && zfs send {d}@keep | ssh {} zfs receive {}/{}/{}",
        p,
        p.node,
        p.dataset.pool(),
        tandem_peer::auth::DIVERGED,
        d.as_str().rsplit('/').next().unwrap_or("diverged")
    ));
    v.push(format!(
        "on {}: discard it when done: zfs destroy -r {d}",
        o.node
    ));
    v
}
