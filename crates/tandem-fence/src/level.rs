//! Fencing a node through its levels.
//!
//! A level is one device plus its timing. [`fence_node`] tries the levels
//! in order; a level succeeds only when its device reports the power
//! [`Off`](PowerState::Off), either before anything is sent
//! ([`FenceOutcome::AlreadyOff`]) or within `power_timeout` after a power
//! off ([`FenceOutcome::PoweredOff`]). A timeout is a failure, never a
//! success. Every attempt is logged with its timing and kept in the
//! [`FenceReport`].

use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;

use crate::agent::{FenceAgent, PowerAction, PowerState};
use crate::error::FenceError;

/// Default time to wait for a device to confirm a power change.
pub const DEFAULT_POWER_TIMEOUT: Duration = Duration::from_secs(20);
/// Default status polling interval while waiting.
pub const DEFAULT_POLL: Duration = Duration::from_millis(200);

/// One fence level of a node: a device and how long to wait for it.
#[derive(Debug)]
pub struct Level {
    /// The device.
    pub agent: Box<dyn FenceAgent>,
    /// How long the device has to confirm a power change.
    pub power_timeout: Duration,
    /// How often to ask for the power state while waiting.
    pub poll: Duration,
}

impl Level {
    /// A level with the default timing.
    pub fn new(agent: Box<dyn FenceAgent>) -> Self {
        Level {
            agent,
            power_timeout: DEFAULT_POWER_TIMEOUT,
            poll: DEFAULT_POLL,
        }
    }
}

/// How a successful fence went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceOutcome {
    /// The device reported the node off before anything was sent.
    AlreadyOff,
    /// The node was powered off and the device confirmed it.
    PoweredOff,
}

impl std::fmt::Display for FenceOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FenceOutcome::AlreadyOff => "already off",
            FenceOutcome::PoweredOff => "powered off, confirmed off",
        })
    }
}

/// Powers a node off through one device and waits until the device
/// confirms it.
pub async fn power_off_confirmed(
    agent: &dyn FenceAgent,
    power_timeout: Duration,
    poll: Duration,
) -> Result<FenceOutcome, FenceError> {
    if agent.status().await? == PowerState::Off {
        return Ok(FenceOutcome::AlreadyOff);
    }
    agent.power(PowerAction::Off).await?;
    wait_for(agent, PowerAction::Off, power_timeout, poll).await?;
    Ok(FenceOutcome::PoweredOff)
}

/// Powers a node on and waits until the device confirms it. Returns
/// `false` when it was on already (nothing sent).
pub async fn power_on_confirmed(
    agent: &dyn FenceAgent,
    power_timeout: Duration,
    poll: Duration,
) -> Result<bool, FenceError> {
    if agent.status().await? == PowerState::On {
        return Ok(false);
    }
    agent.power(PowerAction::On).await?;
    wait_for(agent, PowerAction::On, power_timeout, poll).await?;
    Ok(true)
}

/// Reboots a node the safe way: off, confirmed off, on, confirmed on. A
/// node that is off is only powered on (never sent a power cycle).
pub async fn reboot_confirmed(
    agent: &dyn FenceAgent,
    power_timeout: Duration,
    poll: Duration,
) -> Result<FenceOutcome, FenceError> {
    let off = power_off_confirmed(agent, power_timeout, poll).await?;
    agent.power(PowerAction::On).await?;
    wait_for(agent, PowerAction::On, power_timeout, poll).await?;
    Ok(off)
}

/// Polls the device until it reports the state `action` leads to, or
/// `power_timeout` has passed. Polling errors are retried until then (a
/// BMC may drop a packet while the host powers down); the last one is
/// reported if the state is never confirmed.
pub async fn wait_for(
    agent: &dyn FenceAgent,
    action: PowerAction,
    power_timeout: Duration,
    poll: Duration,
) -> Result<(), FenceError> {
    let want = match action {
        PowerAction::Off => PowerState::Off,
        PowerAction::On => PowerState::On,
    };
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + power_timeout;
    let mut last_state = PowerState::Unknown;
    let mut last_error = String::new();
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            break;
        }
        match tokio::time::timeout(remaining, agent.status()).await {
            Ok(Ok(s)) if s == want => return Ok(()),
            Ok(Ok(s)) => {
                last_state = s;
                last_error.clear();
            }
            Ok(Err(e)) => {
                tracing::debug!(device = %agent.device(), error = %e, "status poll failed");
                last_error = format!("; last error: {e}");
            }
            Err(_) => break,
        }
        tokio::time::sleep_until((tokio::time::Instant::now() + poll).min(deadline)).await;
    }
    Err(FenceError::PowerTimeout {
        device: agent.device(),
        action,
        state: last_state,
        waited: start.elapsed(),
        last_error,
    })
}

/// One level's attempt, as logged and reported.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The level's position, from 1.
    pub level: usize,
    /// The backend ("ipmi", "amt", "watchdog").
    pub kind: &'static str,
    /// The device.
    pub device: String,
    /// How the level ended, if it succeeded.
    pub outcome: Option<FenceOutcome>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The error's kind (see [`FenceError::kind`]).
    pub error_kind: Option<&'static str>,
    /// How long the attempt took, in milliseconds.
    pub elapsed_ms: f64,
}

/// What fencing a node did.
#[derive(Debug, Clone, Serialize)]
pub struct FenceReport {
    /// The node.
    pub node: String,
    /// Every level tried, in order.
    pub attempts: Vec<Attempt>,
    /// The total time, in milliseconds.
    pub elapsed_ms: f64,
}

impl FenceReport {
    /// The successful attempt, if any: the node is confirmed off.
    pub fn confirmed(&self) -> Option<&Attempt> {
        self.attempts.iter().find(|a| a.outcome.is_some())
    }

    /// Whether the node is confirmed powered off.
    pub fn is_fenced(&self) -> bool {
        self.confirmed().is_some()
    }
}

/// Fences `node` through `levels`, in order, until one confirms the power
/// is off. With no levels, or when every level fails, the report has no
/// confirmed attempt and the node must be treated as alive.
pub async fn fence_node(node: &str, levels: &[Level]) -> FenceReport {
    let start = Instant::now();
    let mut attempts = Vec::new();
    for (i, level) in levels.iter().enumerate() {
        let t = Instant::now();
        let agent = level.agent.as_ref();
        tracing::info!(node, level = i + 1, kind = agent.kind(), device = %agent.device(), "fencing");
        let r = power_off_confirmed(agent, level.power_timeout, level.poll).await;
        let elapsed_ms = t.elapsed().as_secs_f64() * 1000.0;
        let attempt = match r {
            Ok(outcome) => {
                tracing::info!(node, level = i + 1, kind = agent.kind(), device = %agent.device(),
                    ?outcome, elapsed_ms, "fence confirmed: power is off");
                Attempt {
                    level: i + 1,
                    kind: agent.kind(),
                    device: agent.device(),
                    outcome: Some(outcome),
                    error: None,
                    error_kind: None,
                    elapsed_ms,
                }
            }
            Err(e) => {
                tracing::warn!(node, level = i + 1, kind = agent.kind(), device = %agent.device(),
                    error = %e, elapsed_ms, "fence level failed");
                Attempt {
                    level: i + 1,
                    kind: agent.kind(),
                    device: agent.device(),
                    outcome: None,
                    error: Some(e.to_string()),
                    error_kind: Some(e.kind()),
                    elapsed_ms,
                }
            }
        };
        let done = attempt.outcome.is_some();
        attempts.push(attempt);
        if done {
            break;
        }
    }
    if attempts.iter().all(|a| a.outcome.is_none()) {
        tracing::error!(
            node,
            levels = levels.len(),
            "node NOT fenced: no level confirmed power off"
        );
    }
    FenceReport {
        node: node.to_string(),
        attempts,
        elapsed_ms: start.elapsed().as_secs_f64() * 1000.0,
    }
}

#[cfg(test)]
mod tests;
