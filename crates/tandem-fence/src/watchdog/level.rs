//! The `kind = "watchdog"` fence level: the dead node's own watchdog is
//! the fence device. Nothing is sent; the level reports the node
//! [`Off`](PowerState::Off) once the node's watchdog timeout plus a margin
//! has surely passed since it was last heard from.
//!
//! ```toml
//! [[nodes.oracle.fence]]
//! kind = "watchdog"
//! timeout = "60s"   # the node's watchdog timeout (watchdog-mux: 60s)
//! margin = "30s"    # >= its keeper's wedge_after (+ 11s with watchdog-mux)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::Heartbeat;
use crate::agent::{BoxFuture, Check, FenceAgent, PowerAction, PowerState};
use crate::config::HumanDuration;
use crate::error::FenceError;

/// The default watchdog timeout of the dead node (`watchdog-mux`'s client
/// timeout, and the keeper's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The default margin on top of the timeout. It covers the dead node's
/// keeper `wedge_after` (default 10 s), `watchdog-mux`'s own hardware
/// timeout (10 s) and loop, and heartbeat transit.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(30);
/// Added to `timeout + margin` for the level's power timeout, so polling
/// sees the node become off before the level gives up.
pub const POWER_TIMEOUT_SLACK: Duration = Duration::from_secs(5);

/// A `kind = "watchdog"` fence level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogLevelConfig {
    /// The fenced node's watchdog timeout: how long after its last
    /// keep-alive its watchdog resets it. Default 60 s.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Extra time before the node counts as off. Must cover the node's
    /// keeper `wedge_after` (it may pet that long after its last
    /// heartbeat), plus 11 s with `watchdog-mux`. Default 30 s.
    #[serde(default = "default_margin")]
    pub margin: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_TIMEOUT)
}
fn default_margin() -> HumanDuration {
    HumanDuration(DEFAULT_MARGIN)
}

impl Default for WatchdogLevelConfig {
    fn default() -> Self {
        WatchdogLevelConfig {
            timeout: default_timeout(),
            margin: default_margin(),
        }
    }
}

impl WatchdogLevelConfig {
    /// How long the level may take to confirm the node off: `timeout +
    /// margin` plus [`POWER_TIMEOUT_SLACK`].
    pub fn power_timeout(&self) -> Duration {
        self.timeout.0 + self.margin.0 + POWER_TIMEOUT_SLACK
    }

    /// Builds the agent. `what` names the level, e.g. "node oracle, fence
    /// level 2"; `heartbeat` says when that node was last heard from.
    pub fn agent(&self, what: &str, hb: Arc<dyn Heartbeat>) -> Result<WatchdogLevel, FenceError> {
        if self.timeout.0.is_zero() {
            return Err(FenceError::Config(format!(
                "{what}: watchdog timeout must be more than 0"
            )));
        }
        Ok(WatchdogLevel::new(what, self.timeout.0, self.margin.0, hb))
    }
}

/// The watchdog level's agent.
#[derive(Debug)]
pub struct WatchdogLevel {
    what: String,
    timeout: Duration,
    margin: Duration,
    heartbeat: Arc<dyn Heartbeat>,
}

/// How long the node has been silent.
enum Silence {
    /// Never heard from.
    Never,
    /// Last seen this far in the future (clock skew).
    Future(Duration),
    /// Silent for this long.
    For(Duration),
}

impl WatchdogLevel {
    /// The level for the node named by `what`, whose watchdog resets it
    /// `timeout` after its last keep-alive.
    pub fn new(
        what: impl Into<String>,
        timeout: Duration,
        margin: Duration,
        heartbeat: Arc<dyn Heartbeat>,
    ) -> Self {
        WatchdogLevel {
            what: what.into(),
            timeout,
            margin,
            heartbeat,
        }
    }

    /// How long the node must be silent to count as off.
    pub fn off_after(&self) -> Duration {
        self.timeout + self.margin
    }

    fn silence(&self, now: SystemTime) -> Silence {
        match self.heartbeat.last_seen() {
            None => Silence::Never,
            Some(seen) => match now.duration_since(seen) {
                Ok(d) => Silence::For(d),
                Err(e) => Silence::Future(e.duration()),
            },
        }
    }

    /// The node's state as of `now`: [`Off`](PowerState::Off) only when it
    /// was last seen at least `timeout + margin` before `now`; otherwise
    /// [`Unknown`](PowerState::Unknown) (never heard from, last seen in the
    /// future, or not silent long enough: it may be alive).
    pub fn state_at(&self, now: SystemTime) -> PowerState {
        match self.silence(now) {
            Silence::For(d) if d >= self.off_after() => PowerState::Off,
            _ => PowerState::Unknown,
        }
    }
}

/// A duration for people: whole seconds from 10 s on (rounded), else
/// milliseconds.
fn fmt_d(d: Duration) -> humantime::FormattedDuration {
    let rounded = if d >= Duration::from_secs(10) {
        Duration::from_secs(d.as_secs() + u64::from(d.subsec_millis() >= 500))
    } else {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(rounded)
}

impl FenceAgent for WatchdogLevel {
    fn kind(&self) -> &'static str {
        "watchdog"
    }

    fn device(&self) -> String {
        format!(
            "watchdog of {} (timeout {} + margin {})",
            self.what,
            fmt_d(self.timeout),
            fmt_d(self.margin)
        )
    }

    fn status(&self) -> BoxFuture<'_, Result<PowerState, FenceError>> {
        Box::pin(async move {
            let now = SystemTime::now();
            if let Silence::Future(d) = self.silence(now) {
                tracing::warn!(device = %self.device(), ahead = %fmt_d(d),
                    "node last seen in the future (clock skew?): not counting it as off");
            }
            Ok(self.state_at(now))
        })
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), FenceError>> {
        Box::pin(async move {
            match action {
                PowerAction::Off => {
                    tracing::info!(device = %self.device(),
                        "watchdog level: nothing to send, the node's own watchdog resets it; \
                         waiting out timeout + margin since it was last seen");
                    Ok(())
                }
                PowerAction::On => Err(FenceError::Unsupported {
                    device: self.device(),
                    kind: "watchdog",
                    what: action.to_string(),
                }),
            }
        })
    }

    fn check(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async move {
            let t = Instant::now();
            let now = SystemTime::now();
            let name = "last heard from";
            let off_after = self.off_after();
            match self.silence(now) {
                Silence::Never => vec![Check::fail(
                    name,
                    "never heard from: this level cannot confirm the node off",
                    t.elapsed(),
                )],
                Silence::Future(d) => vec![Check::fail(
                    name,
                    format!(
                        "last seen {} in the future (clock skew?): not counted as off",
                        fmt_d(d)
                    ),
                    t.elapsed(),
                )],
                Silence::For(d) => {
                    let when = if d >= off_after {
                        format!("counts as off now ({} >= {})", fmt_d(d), fmt_d(off_after))
                    } else {
                        format!(
                            "would count as off in {} (after {} of silence)",
                            fmt_d(off_after - d),
                            fmt_d(off_after)
                        )
                    };
                    vec![
                        Check::pass(name, format!("last seen {} ago", fmt_d(d)), t.elapsed()),
                        Check::pass("watchdog deadline", when, t.elapsed()),
                    ]
                }
            }
        })
    }
}
