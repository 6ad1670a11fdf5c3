//! `tandem failover NODE`: the engine is `tandem_ha::failover`; this
//! wires it to the config and renders what it did.
//!
//! Exit codes (for HA managers): 0 every replica promoted (or already
//! was), 1 a job failed, 3 refused because NODE is not confirmed off or
//! this node has no quorum; 2 bad usage or configuration.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use tandem_fence::FenceReport;
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

/// `tandem failover NODE`.
pub async fn failover(
    path: &Path,
    node: &str,
    confirmed_off: bool,
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
    match run(&env, &jobs, node, confirmed_off).await {
        Ok(report) => {
            print(&report, json)?;
            Ok(if report.ok() {
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
