//! What `tandem fence status|on|reboot|test` (and `fence_tandem`) do with a
//! node's levels, each returning one [`LevelResult`] per level tried:
//!
//! - [`status`]: the first level whose device gives a definite answer
//!   (on or off) decides; a level that errs or says "unknown" passes the
//!   question on;
//! - [`power`]: power on, or reboot (off, confirmed off, on, confirmed
//!   on), through the first level that manages it;
//! - [`test`]: every level's non-destructive checklist, and with
//!   `power_cycle` the real drill on each level that passed it.
//!
//! Powering a node *off* is [`crate::level::fence_node`].

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::agent::{Check, PowerState};
use crate::error::FenceError;
use crate::level::{power_off_confirmed, power_on_confirmed, reboot_confirmed, Level};

/// What one level did.
#[derive(Debug, Clone, Serialize)]
pub struct LevelResult {
    /// The level's position, from 1.
    pub level: usize,
    /// Its backend.
    pub kind: &'static str,
    /// Its device.
    pub device: String,
    /// Whether it did what was asked.
    pub ok: bool,
    /// The power state it reported or brought about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<PowerState>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub elapsed_ms: f64,
    /// `test`'s checklist.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

fn result(
    i: usize,
    l: &Level,
    r: Result<Option<PowerState>, &FenceError>,
    t: Instant,
) -> LevelResult {
    LevelResult {
        level: i + 1,
        kind: l.agent.kind(),
        device: l.agent.device(),
        ok: r.is_ok(),
        state: r.as_ref().ok().copied().flatten(),
        error: r.err().map(|e| e.to_string()),
        elapsed_ms: ms(t.elapsed()),
        checks: Vec::new(),
    }
}

/// The node's power state, as the first level with a definite answer
/// says (`None`: no level knows).
pub async fn status(levels: &[Level]) -> (Option<PowerState>, Vec<LevelResult>) {
    let mut results = Vec::new();
    for (i, l) in levels.iter().enumerate() {
        let t = Instant::now();
        match l.agent.status().await {
            Ok(s) => {
                results.push(result(i, l, Ok(Some(s)), t));
                if s != PowerState::Unknown {
                    return (Some(s), results);
                }
            }
            Err(e) => results.push(result(i, l, Err(&e), t)),
        }
    }
    (None, results)
}

/// A power change other than off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Power on, confirmed on.
    On,
    /// Off, confirmed off, on, confirmed on (never a power cycle).
    Reboot,
}

/// Carries out `change` through the first level that manages it; `true`
/// when one did.
pub async fn power(levels: &[Level], change: Change) -> (bool, Vec<LevelResult>) {
    let mut results = Vec::new();
    for (i, l) in levels.iter().enumerate() {
        let t = Instant::now();
        let r = match change {
            Change::On => power_on_confirmed(l.agent.as_ref(), l.power_timeout, l.poll)
                .await
                .map(|_| ()),
            Change::Reboot => reboot_confirmed(l.agent.as_ref(), l.power_timeout, l.poll)
                .await
                .map(|_| ()),
        };
        match r {
            Ok(()) => {
                results.push(result(i, l, Ok(Some(PowerState::On)), t));
                return (true, results);
            }
            Err(e) => results.push(result(i, l, Err(&e), t)),
        }
    }
    (false, results)
}

/// Every level's checklist; with `power_cycle`, the drill too on each
/// level whose checklist passed. A level is `ok` when all its checks are.
pub async fn test(levels: &[Level], power_cycle: bool) -> Vec<LevelResult> {
    let mut results = Vec::new();
    for (i, l) in levels.iter().enumerate() {
        let t = Instant::now();
        let mut checks = l.agent.check().await;
        if power_cycle && checks.iter().all(|c| c.ok) {
            drill(l, &mut checks).await;
        }
        let mut r = result(i, l, Ok(None), t);
        r.ok = !checks.is_empty() && checks.iter().all(|c| c.ok);
        r.checks = checks;
        results.push(r);
    }
    results
}

/// The real drill: off, verify off, on, verify on.
async fn drill(l: &Level, checks: &mut Vec<Check>) {
    let agent = l.agent.as_ref();
    let t = std::time::Instant::now();
    match power_off_confirmed(agent, l.power_timeout, l.poll).await {
        Ok(o) => checks.push(Check::pass(
            "power off, confirmed off",
            format!("{o:?}"),
            t.elapsed(),
        )),
        Err(e) => {
            checks.push(Check::fail(
                "power off, confirmed off",
                e.to_string(),
                t.elapsed(),
            ));
            return;
        }
    }
    let t = std::time::Instant::now();
    match power_on_confirmed(agent, l.power_timeout, l.poll).await {
        Ok(_) => checks.push(Check::pass("power on, confirmed on", "on", t.elapsed())),
        Err(FenceError::Unsupported { .. }) => checks.push(Check::pass(
            "power on",
            "not possible through this level; the node comes back by itself",
            t.elapsed(),
        )),
        Err(e) => checks.push(Check::fail(
            "power on, confirmed on",
            e.to_string(),
            t.elapsed(),
        )),
    }
}
