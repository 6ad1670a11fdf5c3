//! The `kind = "watchdog"` fence level: the dead node's own watchdog is
//! the fence device. Nothing is sent; the level reports the node
//! [`Off`](PowerState::Off) once it has been *absent from this node's
//! quorate corosync membership* for longer than its watchdog timeout plus
//! a margin, continuously, as watched by this level.
//!
//! ```toml
//! [[nodes.oracle.fence]]
//! kind = "watchdog"
//! timeout = "60s"   # the node's watchdog timeout (watchdog-mux: 60s)
//! margin = "30s"    # >= its keeper's wedge_after and quorum refresh (+ 11s with watchdog-mux)
//! ```
//!
//! Why that is evidence: at most one partition of a corosync cluster is
//! quorate. A node absent from ours is in none; its daemon's keeper stops
//! petting its watchdog once its own quorum gate closes (the gate's
//! `refresh` plus the tool's `timeout` after corosync noticed), and the
//! watchdog resets it `timeout` after the last pet. Replication having
//! stopped is *not* evidence (a replica node never hears from a healthy
//! primary that pushes), nor is anything this node did not watch itself:
//! the count restarts whenever the node is seen again, this node loses
//! quorum, or the membership cannot be read. Without corosync's membership
//! (no cluster, `[quorum] mode = "off"`) the level refuses, and says why;
//! so does it when the node's name is not in corosync's nodelist, since
//! then its absence would prove nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::agent::{BoxFuture, Check, FenceAgent, PowerAction, PowerState};
use crate::config::HumanDuration;
use crate::error::FenceError;
use crate::quorum::{Quorum, QuorumSource};

/// The default watchdog timeout of the dead node (`watchdog-mux`'s client
/// timeout, and the keeper's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The default margin on top of the timeout. It covers the dead node's
/// keeper `wedge_after` (default 10 s), its quorum gate's refresh and tool
/// timeout (2 s + 5 s), `watchdog-mux`'s own hardware timeout (10 s) and
/// loop.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(30);
/// Added to `timeout + margin` for the level's power timeout, so polling
/// sees the node become off before the level gives up.
pub const POWER_TIMEOUT_SLACK: Duration = Duration::from_secs(5);
/// How often the level asks for the membership while it waits.
pub const POLL: Duration = Duration::from_secs(1);

/// A `kind = "watchdog"` fence level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogLevelConfig {
    /// The fenced node's watchdog timeout: how long after its last
    /// keep-alive its watchdog resets it. Default 60 s.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Extra time before the node counts as off. Must cover the node's
    /// keeper `wedge_after` and its quorum gate's delay, plus 11 s with
    /// `watchdog-mux`. Default 30 s.
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

    /// Builds the agent for `node`; `quorum` is where this node reads the
    /// membership (`None`: nowhere, and the level refuses).
    pub fn agent(
        &self,
        node: &str,
        quorum: Option<Arc<dyn QuorumSource>>,
    ) -> Result<WatchdogLevel, FenceError> {
        if self.timeout.0.is_zero() {
            return Err(FenceError::Config(format!(
                "node {node}: watchdog timeout must be more than 0"
            )));
        }
        Ok(WatchdogLevel::new(
            node,
            self.timeout.0,
            self.margin.0,
            quorum,
        ))
    }
}

/// The watchdog level's agent. It remembers since when it has watched the
/// node absent, so one agent should serve one fencing attempt (the
/// polling of [`crate::level::power_off_confirmed`]) or a daemon's
/// continuous watch.
#[derive(Debug)]
pub struct WatchdogLevel {
    node: String,
    timeout: Duration,
    margin: Duration,
    quorum: Option<Arc<dyn QuorumSource>>,
    absent_since: Mutex<Option<tokio::time::Instant>>,
}

/// What one look at the membership said about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// In this node's quorate partition: alive.
    Present,
    /// Absent from this node's quorate partition for this long (as
    /// watched continuously by this level).
    AbsentFor(Duration),
    /// This node is not quorate: it may be the one cut off, and sees
    /// nothing of the others.
    NotQuorate(String),
}

impl WatchdogLevel {
    /// The level for `node`, whose watchdog resets it `timeout` after its
    /// last keep-alive.
    pub fn new(
        node: impl Into<String>,
        timeout: Duration,
        margin: Duration,
        quorum: Option<Arc<dyn QuorumSource>>,
    ) -> Self {
        WatchdogLevel {
            node: node.into(),
            timeout,
            margin,
            quorum,
            absent_since: Mutex::new(None),
        }
    }

    /// How long the node must be absent to count as off.
    pub fn off_after(&self) -> Duration {
        self.timeout + self.margin
    }

    fn no_evidence(&self, why: String) -> FenceError {
        FenceError::NoEvidence {
            device: self.device(),
            why,
        }
    }

    fn set_absent_since(&self, v: Option<tokio::time::Instant>) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let mut g = match self.absent_since.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match v {
            None => {
                *g = None;
                now
            }
            Some(t) => *g.get_or_insert(t),
        }
    }

    /// Looks at the membership once and updates the watch.
    pub async fn look(&self) -> Result<Seen, FenceError> {
        let Some(q) = &self.quorum else {
            return Err(self.no_evidence(
                "no corosync membership to watch ([quorum] mode = \"off\"): this level cannot tell \
                 whether the node reset itself, and refuses; configure corosync or another level"
                    .into(),
            ));
        };
        let answer = q.probe().await;
        let votes = match answer {
            Ok(Quorum::Quorate(v)) => v,
            Ok(Quorum::NotQuorate(v)) => {
                self.set_absent_since(None);
                return Ok(Seen::NotQuorate(v.to_string()));
            }
            Ok(Quorum::NoCluster { reason }) => {
                self.set_absent_since(None);
                return Err(self.no_evidence(format!(
                    "this node is in no corosync cluster ({reason}): without its membership this \
                     level cannot tell whether the node reset itself, and refuses"
                )));
            }
            Err(e) => {
                self.set_absent_since(None);
                return Err(self.no_evidence(format!(
                    "cannot read corosync's membership ({e}); the absence count starts again"
                )));
            }
        };
        if let Some(names) = q.nodelist() {
            if !names.contains(&self.node) {
                self.set_absent_since(None);
                return Err(self.no_evidence(format!(
                    "node {} is not in corosync's nodelist ({}): tandem's node names must be \
                     corosync's, or its absence proves nothing",
                    self.node,
                    names.join(", ")
                )));
            }
        }
        if votes.members.contains(&self.node) {
            self.set_absent_since(None);
            return Ok(Seen::Present);
        }
        if !votes.split_safe() {
            // With two_node each half of a cut link stays quorate: the
            // other node never loses quorum, never stops petting, never
            // resets. Its absence proves nothing.
            self.set_absent_since(None);
            return Err(self.no_evidence(format!(
                "this is a two-node cluster (two_node) without a QDevice: a node cut off from this one stays quorate and never resets itself, so its absence proves nothing; this level refuses (configure a QDevice, or an IPMI/AMT level for {})",
                self.node
            )));
        }
        let now = tokio::time::Instant::now();
        let since = self.set_absent_since(Some(now));
        Ok(Seen::AbsentFor(now.duration_since(since)))
    }

    fn state_of(&self, seen: &Seen) -> PowerState {
        match seen {
            Seen::Present => PowerState::On,
            Seen::AbsentFor(d) if *d >= self.off_after() => PowerState::Off,
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
            "watchdog of {} (absent from the quorate membership for timeout {} + margin {})",
            self.node,
            fmt_d(self.timeout),
            fmt_d(self.margin)
        )
    }

    fn status(&self) -> BoxFuture<'_, Result<PowerState, FenceError>> {
        Box::pin(async move {
            let seen = self.look().await?;
            match &seen {
                Seen::AbsentFor(d) if *d < self.off_after() => {
                    tracing::info!(node = %self.node, absent = %fmt_d(*d), off_after = %fmt_d(self.off_after()),
                        "watchdog level: node absent from the quorate membership; waiting out its watchdog")
                }
                Seen::NotQuorate(v) => tracing::warn!(node = %self.node, quorum = %v,
                    "watchdog level: this node is not quorate; it cannot see whether the node reset"),
                _ => {}
            }
            Ok(self.state_of(&seen))
        })
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), FenceError>> {
        Box::pin(async move {
            match action {
                PowerAction::Off => {
                    tracing::info!(device = %self.device(),
                        "watchdog level: nothing to send, the node's own watchdog resets it; \
                         waiting for timeout + margin of absence from the quorate membership");
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
            let name = "corosync membership";
            match self.look().await {
                Err(e) => vec![Check::fail(name, e.to_string(), t.elapsed())],
                Ok(Seen::NotQuorate(v)) => vec![Check::fail(
                    name,
                    format!("this node is not quorate ({v}): it cannot watch the node"),
                    t.elapsed(),
                )],
                Ok(Seen::Present) => vec![
                    Check::pass(name, "readable; this node is quorate", t.elapsed()),
                    Check::pass(
                        "node present",
                        format!(
                            "{} is in the quorate membership; it would count as off after {} of absence",
                            self.node,
                            fmt_d(self.off_after())
                        ),
                        t.elapsed(),
                    ),
                ],
                Ok(Seen::AbsentFor(_)) => vec![
                    Check::pass(name, "readable; this node is quorate", t.elapsed()),
                    Check::pass(
                        "node absent",
                        format!(
                            "{} is NOT in the quorate membership now; it counts as off after {} of \
                             continuous absence",
                            self.node,
                            fmt_d(self.off_after())
                        ),
                        t.elapsed(),
                    ),
                ],
            }
        })
    }
}
