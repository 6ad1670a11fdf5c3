//! `tandem failover NODE`: the engine is `tandem_ha::failover`; this
//! wires it to the config and renders what it did. `failover --test JOB`
//! and `--cleanup [JOB]`: the engine is `tandem_ha::drill`.
//!
//! Exit codes (for HA managers): 0 every replica promoted (or already
//! was) and its `on_promote` (if any) succeeded, 1 a job or a hook failed, 3 refused because NODE is not confirmed off or
//! this node has no quorum; 2 bad usage or configuration. `--test`: 0 the
//! clone was made, the hook (if any) succeeded and everything was removed
//! again; 1 otherwise (refused here, the hook failed, something was left).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use tandem_fence::FenceReport;
use tandem_ha::drill::{self, Cleanup, HookOutcome, TestReport};
use tandem_ha::failover::{failover as run, ConfirmedBy, FailoverReport, Outcome};
use tandem_ha::HaError;

use super::fence::confirm;
use super::load;
use crate::ha::env;
use crate::outln;
use crate::output::age;
use tandem_config::fencing::ConfigFencer;

/// Exit code when the node is not confirmed off, or this node has no quorum.
pub const EXIT_REFUSED: u8 = 3;

/// `--json` of a refusal.
#[derive(Serialize)]
struct Refusal<'a> {
    node: &'a str,
    refused: String,
    error_kind: &'static str,
    fenced: bool,
    fence: Option<&'a FenceReport>,
}

/// `--json` of a failover: the engine's report, and what each job's
/// `on_promote` did (absent with `--no-start`).
#[derive(Serialize)]
struct Manual<'a> {
    #[serde(flatten)]
    failover: &'a FailoverReport,
    hooks: &'a std::collections::BTreeMap<String, tandem_ha::auto::HookOutcome>,
}

/// `tandem failover NODE`: fence, promote, then (unless `no_start`) run
/// the `on_promote` hook of every job promoted here, as the daemon's
/// automatic failover does — at most once per generation.
pub async fn failover(
    path: &Path,
    node: &str,
    confirmed_off: bool,
    no_start: bool,
    yes: bool,
    json: bool,
) -> Result<ExitCode> {
    let (cfg, store) = load(path)?;
    cfg.node(node)?;
    if confirmed_off {
        confirm(
            "promote replicas on your word that it is powered off: fail over from",
            node,
            yes,
        )?;
        eprintln!("tandem: WARNING: promoting without a fence: the operator confirmed {node} is powered off");
    }
    let backends = cfg.backends()?;
    let fencer = ConfigFencer(&cfg);
    let quorum = cfg.quorum.source();
    let env = env(&cfg, &*quorum, &backends, &store, &fencer, "failover");
    let jobs: Vec<_> = cfg.jobs.values().cloned().collect();
    let done = if no_start {
        run(&env, &jobs, node, confirmed_off)
            .await
            .map(|failover| tandem_ha::auto::AutoReport {
                failover,
                hooks: Default::default(),
            })
    } else {
        tandem_ha::auto::failover_and_start(&env, &jobs, node, confirmed_off).await
    };
    match done {
        Ok(r) => {
            let hooks_ok = r.hooks.values().all(|h| {
                !matches!(
                    h,
                    tandem_ha::auto::HookOutcome::Failed { .. }
                        | tandem_ha::auto::HookOutcome::AlreadyRun { ok: Some(false) }
                )
            });
            if json {
                let m = Manual {
                    failover: &r.failover,
                    hooks: &r.hooks,
                };
                outln!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print(&r.failover, false)?;
                print_hooks(&r.hooks);
            }
            Ok(if r.failover.ok() && hooks_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e) if e.is_refusal() => {
            tracing::error!(node, "{e}");
            if json {
                let r = Refusal {
                    node,
                    refused: e.to_string(),
                    error_kind: e.kind(),
                    fenced: false,
                    fence: e.fence_report(),
                };
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                if let Some(f) = e.fence_report() {
                    print_fence(f);
                }
                outln!("REFUSING to fail over from {node}: {e}.");
            }
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        Err(e @ (HaError::UnknownNode { .. } | HaError::IsLocalNode { .. })) => {
            Err(anyhow::anyhow!("{}: {e}", cfg.path.display()))
        }
        Err(e) => Err(e.into()),
    }
}

fn print_fence(f: &FenceReport) {
    for a in &f.attempts {
        match (&a.outcome, &a.error) {
            (Some(o), _) => outln!(
                "fence {}: level {} {} {}: {o} ({:.0} ms)",
                f.node,
                a.level,
                a.kind,
                a.device,
                a.elapsed_ms
            ),
            (None, Some(e)) => outln!(
                "fence {}: level {} {} {}: FAILED: {e} ({:.0} ms)",
                f.node,
                a.level,
                a.kind,
                a.device,
                a.elapsed_ms
            ),
            _ => {}
        }
    }
}

fn print_hooks(hooks: &std::collections::BTreeMap<String, tandem_ha::auto::HookOutcome>) {
    use tandem_ha::auto::HookOutcome as H;
    for (job, h) in hooks {
        match h {
            H::None => {}
            H::Ok => outln!("{job}: on_promote succeeded: the workload is starting here"),
            H::Failed { error } => outln!(
                "{job}: on_promote FAILED: {error} (the replica stays promoted: start the workload by hand)"
            ),
            H::AlreadyRun { ok } => outln!(
                "{job}: on_promote already ran for this generation ({}); not run again",
                match ok {
                    Some(true) => "it succeeded",
                    Some(false) => "it FAILED",
                    None => "it did not finish",
                }
            ),
        }
    }
}

fn print(r: &FailoverReport, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    if let Some(f) = &r.fence {
        print_fence(f);
    }
    if r.confirmed_by == Some(ConfirmedBy::Operator) {
        outln!(
            "{}: confirmed off by the operator (no fence device asked)",
            r.node
        );
    }
    for j in &r.jobs {
        match &j.outcome {
            Outcome::Failed { error, .. } => outln!("{}: FAILED: {error}", j.job),
            Outcome::AlreadyPrimary {
                generation,
                confirmed,
            } => outln!(
                "{}: already primary: {} is writable (generation {generation}){}; nothing touched",
                j.job,
                j.dataset,
                if *confirmed {
                    ""
                } else {
                    ", as far as this node knows: the other node did not answer, and this node has no record of the promotion"
                }
            ),
            Outcome::OtherPrimary {
                primary,
                generation,
            } => outln!(
                "{}: not {}'s job now: its primary is {primary} (generation {generation}); nothing touched",
                j.job,
                r.node
            ),
            Outcome::Completed {
                generation,
                writable_after_ms,
            } => outln!(
                "{}: finished an interrupted promotion: {} writable {writable_after_ms:.0} ms after start, generation {generation}",
                j.job,
                j.dataset
            ),
            Outcome::Promoted {
                snapshot,
                rpo_seconds,
                generation,
                writable_after_ms,
                warnings,
            } => {
                outln!(
                    "{}: promoted {} at {snapshot} (data-loss window {}), writable {writable_after_ms:.0} ms after start, generation {generation}",
                    j.job,
                    j.dataset,
                    age(*rpo_seconds),
                );
                for w in warnings {
                    outln!("    warning: {w}");
                }
            }
        }
    }
    Ok(())
}

/// `--json` of a test that could not be made.
#[derive(Serialize)]
struct TestRefusal<'a> {
    job: &'a str,
    node: &'a str,
    error: String,
    error_kind: &'static str,
}

/// `tandem failover --test JOB`.
pub async fn test(path: &Path, job: &str, json: bool) -> Result<ExitCode> {
    let (cfg, store) = load(path)?;
    let job = cfg.select(&[job.to_owned()])?.remove(0).clone();
    let backends = cfg.backends()?;
    let fencer = ConfigFencer(&cfg);
    let quorum = cfg.quorum.source();
    let env = env(
        &cfg,
        &*quorum,
        &backends,
        &store,
        &fencer,
        "failover --test",
    );
    match drill::test(&env, &job).await {
        Ok(r) => {
            print_test(&r, json)?;
            Ok(if r.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e) => {
            tracing::error!(job = %job.name, "{e}");
            if json {
                let r = TestRefusal {
                    job: job.name.as_str(),
                    node: &cfg.local_node,
                    error: e.to_string(),
                    error_kind: e.kind(),
                };
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                outln!("failover test of {} NOT made: {e}", job.name);
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn print_test(r: &TestReport, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    outln!(
        "failover test of {} on {} (primary {}, generation {}{}):",
        r.job,
        r.node,
        r.primary,
        r.generation,
        if r.primary_answered {
            ""
        } else {
            ", by this node's marks: the primary did not answer"
        }
    );
    for l in &r.leftovers_removed {
        outln!("  removed a leftover of an interrupted test: {l}");
    }
    outln!(
        "  cloned {} (GUID {}) into {}",
        r.snapshot,
        r.snapshot_guid,
        r.clones.join(", ")
    );
    outln!(
        "  data-loss window had {} failed now: {}",
        r.primary,
        age(r.rpo_seconds)
    );
    match &r.hook {
        HookOutcome::Ok { elapsed_ms } => outln!("  on_test: ok ({:.1} s)", elapsed_ms / 1000.0),
        HookOutcome::Failed { error, elapsed_ms } => {
            outln!(
                "  on_test: FAILED after {:.1} s: {error}",
                elapsed_ms / 1000.0
            )
        }
        HookOutcome::None => outln!("  on_test: none configured (the clone was made and removed)"),
    }
    if r.cleaned_up {
        outln!("  cleaned up: the clones are destroyed");
    } else {
        outln!(
            "  NOT cleaned up: {}; run `tandem failover --cleanup {}`",
            r.cleanup_error.as_deref().unwrap_or("?"),
            r.job
        );
    }
    outln!(
        "  {:.1} s; nothing was fenced, no replica or schedule was changed",
        r.elapsed_ms / 1000.0
    );
    Ok(())
}

/// `tandem failover --cleanup [JOB]`.
pub async fn cleanup(path: &Path, job: Option<&str>, json: bool) -> Result<ExitCode> {
    let (cfg, store) = load(path)?;
    let jobs: Vec<_> = match job {
        Some(j) => cfg.select(&[j.to_owned()])?.into_iter().cloned().collect(),
        None => cfg.jobs.values().cloned().collect(),
    };
    let backends = cfg.backends()?;
    let fencer = ConfigFencer(&cfg);
    let quorum = cfg.quorum.source();
    let env = env(
        &cfg,
        &*quorum,
        &backends,
        &store,
        &fencer,
        "failover --cleanup",
    );
    let done = drill::cleanup(&env, &jobs).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        for c in &done {
            if c.destroyed.is_empty() && c.kept.is_empty() {
                outln!("{}: nothing left by failover tests", c.job);
            }
            for d in &c.destroyed {
                outln!("{}: destroyed {d}", c.job);
            }
            for k in &c.kept {
                outln!("{}: KEPT {k}", c.job);
            }
        }
    }
    Ok(if done.iter().all(Cleanup::complete) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
