//! `reverse JOB --switchover`: the planned move of a job's primary to its
//! follower. Never automatic.
//!
//! Quiesce (the job's `switchover_stop` hook), make the current primary
//! read-only, a final incremental sync, make the follower writable, mark
//! the new generation on the new primary and then on the old one (which
//! thereby follows it), `switchover_start`. Progress is recorded before
//! the first change, so an interrupted switchover is completed by the
//! next run; a failed final sync makes the old primary writable again and
//! changes nothing else.
//!
//! All writes are made under the *new* generation's claim: the follower
//! is made writable before it is marked, because from then on `tandem
//! serve` would refuse changes to a dataset whose mark names its own node.

use serde::{Deserialize, Serialize};
use tandem_repl::cycle::Summary;
use tandem_repl::job::{Endpoint, Job};
use tandem_repl::state::Direction;
use tandem_zfs::{Generation, Zfs, GENERATION_PROPERTY};

use crate::env::{Env, HookCall};
use crate::error::{refuse_fanout_job, refuse_guest_job, zerr, HaError};
use crate::reverse::run_one_cycle;

/// The store's record kind for a switchover's progress.
pub const PROGRESS: &str = "switchover";

/// Progress of an interrupted switchover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The primary being moved away from.
    pub from: Endpoint,
    /// The new primary.
    pub to: Endpoint,
    /// The generation it takes.
    pub generation: Generation,
    /// The final sync is done.
    pub synced: bool,
}

/// What a switchover did.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchoverReport {
    /// The job.
    pub job: String,
    /// The new primary, `node:dataset`.
    pub primary: String,
    /// The old one, now following it.
    pub follower: String,
    /// The new generation.
    pub generation: u64,
    /// The final sync.
    pub cycle: Option<Summary>,
    /// `switchover_start`'s failure, if it failed (the switchover itself
    /// is done then).
    pub start_hook_error: Option<String>,
    /// Everything succeeded.
    pub ok: bool,
}

async fn hook<Z: Zfs>(
    env: &Env<'_, Z>,
    job: &Job,
    hook: &'static str,
    command: Option<&String>,
    pr: &Progress,
) -> Result<(), HaError> {
    let Some(command) = command else {
        return Ok(());
    };
    let mut call = HookCall::new(hook, command, job.name.as_str(), &pr.from.node, &pr.to.node);
    call.datasets = vec![match hook {
        "switchover_stop" => pr.from.dataset.to_string(),
        _ => pr.to.dataset.to_string(),
    }];
    call.guest = job.guest.map(|g| g.to_string());
    env.host.run_hook(&call).await.map_err(|why| HaError::Hook {
        job: job.name.to_string(),
        hook,
        why,
    })
}

/// The endpoints of a planned switchover, for the confirmation: (current
/// primary, new primary).
pub async fn plan<Z: Zfs>(env: &Env<'_, Z>, job: &Job) -> Result<(Endpoint, Endpoint), HaError> {
    refuse_fanout_job(job, "switchover")?;
    refuse_guest_job(job, "switchover", "Stop the guest, let a cycle run, then fail over with `tandem failover NODE --confirmed-off` once the old primary is off")?;
    if let Some(pr) = env.read_progress::<Progress>(PROGRESS, &job.name)? {
        return Ok((pr.from, pr.to));
    }
    let (roles, _) = roles(env, job).await?;
    Ok((roles.primary, roles.follower))
}

async fn roles<Z: Zfs>(
    env: &Env<'_, Z>,
    job: &Job,
) -> Result<(tandem_repl::roles::Roles, bool), HaError> {
    let mut found = Vec::new();
    for ep in [&job.source, &job.target] {
        let l = env
            .zfs(&ep.node)?
            .list(std::slice::from_ref(&ep.dataset))
            .await
            .map_err(zerr(&ep.node))?;
        found.push(l.get(&ep.dataset).cloned());
    }
    let roles = tandem_repl::roles::resolve(job, found[0].as_ref(), found[1].as_ref())?;
    let both = found.iter().all(Option::is_some);
    Ok((roles, both))
}

/// Moves `job`'s primary to its follower.
pub async fn switchover<Z: Zfs>(env: &Env<'_, Z>, job: &Job) -> Result<SwitchoverReport, HaError> {
    refuse_fanout_job(job, "switchover")?;
    refuse_guest_job(job, "switchover", "Stop the guest, let a cycle run, then fail over with `tandem failover NODE --confirmed-off` once the old primary is off")?;
    let mut lock = Some(
        env.store
            .lock("job", job.name.as_str(), &env.me, env.lock_wait)
            .await?,
    );
    let mut pr = match env.read_progress::<Progress>(PROGRESS, &job.name)? {
        Some(pr) => pr,
        None => {
            let (roles, both) = roles(env, job).await?;
            if !both {
                let missing = if roles.follower_mark.is_none() {
                    roles.follower.clone()
                } else {
                    roles.primary.clone()
                };
                return Err(HaError::DatasetMissing {
                    job: job.name.to_string(),
                    dataset: missing,
                });
            }
            if !roles.follower_agrees() {
                return Err(HaError::NotFollowing {
                    job: job.name.to_string(),
                    primary: roles.primary.clone(),
                    generation: roles.generation.number,
                    follower: roles.follower.clone(),
                });
            }
            let (st, _) = env.store.load_or_reset(&job.name)?;
            let pr = Progress {
                generation: Generation {
                    job: job.name.to_string(),
                    number: roles.generation.number.max(st.generation) + 1,
                    primary: roles.follower.node.clone(),
                },
                from: roles.primary,
                to: roles.follower,
                synced: false,
            };
            hook(
                env,
                job,
                "switchover_stop",
                job.hooks.switchover_stop.as_ref(),
                &pr,
            )
            .await?;
            env.write_progress(PROGRESS, &job.name, &pr)?;
            env.host.step("recorded")?;
            pr
        }
    };
    let (c, f) = (pr.from.clone(), pr.to.clone());
    let (zc, zf) = (env.zfs(&c.node)?, env.zfs(&f.node)?);
    let claim = Some(&pr.generation);
    // Nothing can be written on the primary from here on.
    zc.set_property(&c.dataset, "readonly", "on", claim)
        .await
        .map_err(zerr(&c.node))?;
    env.host.step("quiesced")?;
    let mut summary = None;
    if !pr.synced {
        lock.take();
        let s = run_one_cycle(env, job).await;
        lock = Some(
            env.store
                .lock("job", job.name.as_str(), &env.me, env.lock_wait)
                .await?,
        );
        if !s.ok {
            let why = s.error.clone().unwrap_or_else(|| "failed".into());
            zc.set_property(&c.dataset, "readonly", "off", claim)
                .await
                .map_err(zerr(&c.node))?;
            env.store.remove_record(PROGRESS, &job.name)?;
            return Err(HaError::FinalSyncFailed {
                job: job.name.to_string(),
                primary: c,
                why,
            });
        }
        summary = Some(s);
        pr.synced = true;
        env.write_progress(PROGRESS, &job.name, &pr)?;
        env.host.step("synced")?;
    }
    let value = pr.generation.to_string();
    zf.set_property(&f.dataset, "readonly", "off", claim)
        .await
        .map_err(zerr(&f.node))?;
    env.host.step("writable")?;
    zf.set_property(&f.dataset, GENERATION_PROPERTY, &value, claim)
        .await
        .map_err(zerr(&f.node))?;
    env.host.step("marked-new")?;
    zc.set_property(&c.dataset, GENERATION_PROPERTY, &value, claim)
        .await
        .map_err(zerr(&c.node))?;
    env.host.step("marked-old")?;
    let forward = f == job.source;
    let number = pr.generation.number;
    env.store.update(&job.name, |st| {
        st.direction = if forward {
            Direction::Forward
        } else {
            Direction::Reverse
        };
        st.generation = number;
        st.common = None;
    })?;
    env.store.remove_record(PROGRESS, &job.name)?;
    env.host.step("done")?;
    drop(lock);
    let start_hook_error = hook(
        env,
        job,
        "switchover_start",
        job.hooks.switchover_start.as_ref(),
        &pr,
    )
    .await
    .err()
    .map(|e| e.to_string());
    tracing::info!(job = %job.name, from = %c, to = %f, generation = number, "switchover done");
    Ok(SwitchoverReport {
        job: job.name.to_string(),
        primary: f.to_string(),
        follower: c.to_string(),
        generation: number,
        ok: start_hook_error.is_none(),
        cycle: summary,
        start_hook_error,
    })
}
