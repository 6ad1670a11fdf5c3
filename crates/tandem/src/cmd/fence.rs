//! `tandem fence status|on|off|reboot|test NODE`.
//!
//! Exit codes follow the fence-agents convention where it applies: `status`
//! exits 0 when the node is on, 2 when it is off, 1 on any error or an
//! unknown state; the other actions exit 0 on success and 1 on failure.
//! Configuration errors exit 1 too here (2 would read as "off").

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use serde::Serialize;
use tandem_fence::actions::{self, Change, LevelResult};
use tandem_fence::level::{fence_node, Level};
use tandem_fence::PowerState;

use crate::outln;
use tandem_config::fencing::levels;
use tandem_config::Config;

/// What `tandem fence` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Report the power state.
    Status,
    /// Power on.
    On,
    /// Power off (fence).
    Off,
    /// Off, confirmed, on.
    Reboot,
    /// The commissioning checklist.
    Test {
        /// Also run the real drill: off, verify, on, verify.
        power_cycle: bool,
    },
}

/// Asks before a destructive action: on a terminal, the operator types
/// the node's name; elsewhere `--yes` is required.
pub fn confirm(what: &str, node: &str, yes: bool) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {what} {node} without --yes (standard input is not a terminal)");
    }
    eprint!("This will {what} node {node}. Type the node's name to go on: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != node {
        bail!("not confirmed; nothing done");
    }
    Ok(())
}

/// `tandem fence ACTION NODE`.
pub async fn fence(
    path: &Path,
    action: Action,
    node: &str,
    yes: bool,
    json: bool,
) -> Result<ExitCode> {
    match fence_inner(path, action, node, yes, json).await {
        Ok(code) => Ok(code),
        Err(e) => {
            // Not exit 2: for `status` that would mean "off".
            eprintln!("tandem: error: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

async fn fence_inner(
    path: &Path,
    action: Action,
    node: &str,
    yes: bool,
    json: bool,
) -> Result<ExitCode> {
    let cfg = Config::load(path)?;
    let levels = levels(&cfg, node)?;
    match action {
        Action::Status => status(node, &levels, json).await,
        Action::Off => {
            confirm("power off", node, yes)?;
            let report = fence_node(node, &levels).await;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for a in &report.attempts {
                    match (&a.outcome, &a.error) {
                        (Some(o), _) => outln!(
                            "{node}: level {} {} {}: {} ({:.0} ms)",
                            a.level,
                            a.kind,
                            a.device,
                            o,
                            a.elapsed_ms
                        ),
                        (None, Some(e)) => outln!(
                            "{node}: level {} {} {}: FAILED: {e} ({:.0} ms)",
                            a.level,
                            a.kind,
                            a.device,
                            a.elapsed_ms
                        ),
                        (None, None) => {}
                    }
                }
                if report.is_fenced() {
                    outln!("{node}: fenced: power is off");
                } else {
                    outln!("{node}: NOT fenced: no level confirmed power off");
                }
            }
            Ok(if report.is_fenced() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Action::On | Action::Reboot => {
            let (what, change) = if action == Action::On {
                ("power on", Change::On)
            } else {
                ("reboot", Change::Reboot)
            };
            confirm(what, node, yes)?;
            let (ok, results) = actions::power(&levels, change).await;
            print_results(node, what, &results, json)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Action::Test { power_cycle } => {
            if power_cycle {
                confirm("power-cycle (off, then on)", node, yes)?;
            }
            test(node, &levels, power_cycle, json).await
        }
    }
}

fn print_results(node: &str, what: &str, results: &[LevelResult], json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(results)?);
        return Ok(());
    }
    for r in results {
        match &r.error {
            None => outln!(
                "{node}: level {} {} {}: {what}: done, confirmed ({:.0} ms)",
                r.level,
                r.kind,
                r.device,
                r.elapsed_ms
            ),
            Some(e) => outln!(
                "{node}: level {} {} {}: {what} FAILED: {e} ({:.0} ms)",
                r.level,
                r.kind,
                r.device,
                r.elapsed_ms
            ),
        }
    }
    Ok(())
}

async fn status(node: &str, levels: &[Level], json: bool) -> Result<ExitCode> {
    let (state, results) = actions::status(levels).await;
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            node: &'a str,
            power: PowerState,
            levels: &'a [LevelResult],
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&Out {
                node,
                power: state.unwrap_or(PowerState::Unknown),
                levels: &results,
            })?
        );
    } else {
        for r in &results {
            match (&r.state, &r.error) {
                (Some(s), _) => outln!(
                    "{node}: power is {s} (level {} {} {}, {:.0} ms)",
                    r.level,
                    r.kind,
                    r.device,
                    r.elapsed_ms
                ),
                (None, Some(e)) => outln!(
                    "{node}: level {} {} {}: {e} ({:.0} ms)",
                    r.level,
                    r.kind,
                    r.device,
                    r.elapsed_ms
                ),
                _ => {}
            }
        }
    }
    Ok(match state {
        Some(PowerState::On) => ExitCode::SUCCESS,
        Some(PowerState::Off) => ExitCode::from(2),
        _ => ExitCode::from(1),
    })
}

async fn test(node: &str, levels: &[Level], power_cycle: bool, json: bool) -> Result<ExitCode> {
    let results = actions::test(levels, power_cycle).await;
    let all_ok = results.iter().all(|r| r.ok);
    if json {
        outln!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            outln!("{node}: fence level {} ({} {})", r.level, r.kind, r.device);
            for c in &r.checks {
                outln!(
                    "  [{}] {:<34} {:<60} {:>8.1} ms",
                    if c.ok { " ok " } else { "FAIL" },
                    c.name,
                    c.detail,
                    c.elapsed.as_secs_f64() * 1000.0
                );
            }
        }
        if all_ok {
            outln!(
                "{node}: all {} fence level(s) passed{}",
                results.len(),
                if power_cycle {
                    " the checklist and the power-cycle drill"
                } else {
                    " the checklist (add --power-cycle --yes for the real drill)"
                }
            );
        } else {
            outln!("{node}: FENCING IS NOT READY: fix the failed checks above");
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
