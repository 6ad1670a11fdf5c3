//! `tandem reverse JOB [--switchover]`: the engines are
//! `tandem_ha::reverse` and `tandem_ha::switchover`; this wires them to
//! the config, asks for confirmation, and renders what they did.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde::Serialize;
use tandem_ha::reverse::ReverseReport;
use tandem_ha::switchover::SwitchoverReport;
use tandem_repl::cycle::Summary;

use super::fence::confirm;
use super::load;
use crate::ha::env;
use crate::outln;
use tandem_config::fencing::ConfigFencer;

#[derive(Serialize)]
#[serde(untagged)]
enum Report {
    Reverse(ReverseReport),
    Switchover(SwitchoverReport),
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
        .context("no such job")?
        .clone();
    let backends = cfg.backends()?;
    let fencer = ConfigFencer(&cfg);
    let quorum = cfg.quorum.source();
    let env = env(&cfg, &*quorum, &backends, &store, &fencer, "reverse");
    let r = if switchover {
        match tandem_ha::switchover::plan(&env, &job).await {
            Ok((c, f)) => {
                confirm(
                    &format!("move the primary of {} from {c} to {f}: quiesce", job.name),
                    &c.node,
                    yes,
                )?;
                tandem_ha::switchover::switchover(&env, &job)
                    .await
                    .map(Report::Switchover)
            }
            Err(e) => Err(e),
        }
    } else {
        match tandem_ha::reverse::plan(&env, &job).await {
            Ok(p) => {
                if p.changes_follower {
                    confirm(
                        &format!(
                            "make {} follow {}, setting its divergent state aside, on node",
                            p.follower, p.primary
                        ),
                        &p.follower.node,
                        yes,
                    )?;
                }
                tandem_ha::reverse::reverse(&env, &job)
                    .await
                    .map(Report::Reverse)
            }
            Err(e) => Err(e),
        }
    };
    let report = match r {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tandem: error: reverse {}: {e}", job.name);
            return Ok(ExitCode::from(1));
        }
    };
    let ok = match &report {
        Report::Reverse(r) => r.ok,
        Report::Switchover(s) => s.ok,
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        match &report {
            Report::Reverse(r) => print_reverse(r),
            Report::Switchover(s) => print_switchover(s),
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn cycle_line(job: &str, from: &str, to: &str, c: &Summary) {
    outln!(
        "{job}: replication {from} -> {to}: {}",
        if c.ok {
            format!("ok ({})", c.plans.join("+"))
        } else {
            format!("FAILED: {}", c.error.as_deref().unwrap_or("?"))
        }
    );
}

fn print_reverse(r: &ReverseReport) {
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
        cycle_line(&r.job, &r.primary, &r.follower, c);
    }
}

fn print_switchover(s: &SwitchoverReport) {
    outln!(
        "{}: {} is the primary now (generation {}); {} follows it",
        s.job,
        s.primary,
        s.generation,
        s.follower
    );
    if let Some(c) = &s.cycle {
        cycle_line(&s.job, &s.follower, &s.primary, c);
    }
    if let Some(e) = &s.start_hook_error {
        outln!("{}: WARNING: {e}", s.job);
    }
}
