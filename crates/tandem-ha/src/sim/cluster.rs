//! The simulated cluster around the engines: corosync's quorum and
//! membership ([`SimQuorum`]), BMCs ([`SimBmc`]), a node's fence levels
//! ([`SimFencer`], the real [`fence_node`] over simulated devices and the
//! real [`WatchdogLevel`]), the machine ([`SimHost`]), and the watchdogs
//! of self-fencing nodes ([`watchdogs`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tandem_fence::level::{fence_node, Level, DEFAULT_POLL};
use tandem_fence::quorum::{Quorum, QuorumError, QuorumSource, Votes};
use tandem_fence::watchdog::WatchdogLevel;
use tandem_fence::{
    BoxFuture, Check, FenceAgent, FenceError, FenceReport, PowerAction, PowerState,
};
use tandem_zfs::DatasetName;

use super::world::{lock, Bmc, Shared};
use crate::env::{Fencer, HookCall, Host};
use crate::error::HaError;

/// How long a node's quorum gate takes to close after it lost quorum (the
/// daemon's refresh plus a probe).
pub const GATE_DELAY: Duration = Duration::from_secs(3);
/// How long a node takes to boot after a watchdog reset.
pub const BOOT_TIME: Duration = Duration::from_secs(30);
/// The watchdog fence level's margin in the simulator.
pub const MARGIN: Duration = Duration::from_secs(5);
/// How long the simulated `on_test` hook runs (a test guest booting).
pub const TEST_HOOK_TIME: Duration = Duration::from_secs(30);
/// A BMC's answer timeout (an IPMI session's).
pub const BMC_TIMEOUT: Duration = Duration::from_secs(1);

/// corosync as seen from one node.
#[derive(Debug, Clone)]
pub struct SimQuorum {
    /// The world.
    pub world: Shared,
    /// The node asking.
    pub node: String,
    /// No cluster at all (`[quorum] mode = "off"`, or no corosync).
    pub off: bool,
}

impl QuorumSource for SimQuorum {
    fn probe(&self) -> BoxFuture<'_, Result<Quorum, QuorumError>> {
        let w = lock(&self.world);
        let answer = if self.off {
            Ok(Quorum::NoCluster {
                reason: "no corosync here".into(),
            })
        } else if !w.up(&self.node) {
            Err(QuorumError::Unanswered {
                tool: "corosync".into(),
                detail: "the node is down".into(),
            })
        } else {
            let (members, quorate) = w.membership(&self.node);
            let v = Votes {
                node_id: None,
                nodes: members.len() as u32,
                votes: members.len() as u32,
                expected: w.nodes.len() as u32,
                needed: Some(w.nodes.len() as u32 / 2 + 1),
                members: members.into_iter().collect(),
                two_node: w.two_node,
                qdevice: w.qdevice && w.nodes.get(&self.node).is_some_and(|n| !n.isolated),
            };
            Ok(if quorate {
                Quorum::Quorate(v)
            } else {
                Quorum::NotQuorate(v)
            })
        };
        Box::pin(async move { answer })
    }

    fn nodelist(&self) -> Option<Vec<String>> {
        (!self.off).then(|| lock(&self.world).nodes.keys().cloned().collect())
    }
}

/// A node's BMC, asked by another node.
#[derive(Debug, Clone)]
pub struct SimBmc {
    /// The world.
    pub world: Shared,
    /// Whose BMC.
    pub node: String,
    /// Who asks.
    pub by: String,
    /// A device that never answers, whatever the node's BMC does.
    pub dead: bool,
}

impl SimBmc {
    fn mode(&self) -> Bmc {
        if self.dead {
            return Bmc::Down;
        }
        lock(&self.world)
            .nodes
            .get(&self.node)
            .map_or(Bmc::Down, |n| n.bmc)
    }

    async fn answer(&self) -> Result<Bmc, FenceError> {
        match self.mode() {
            Bmc::Down => {
                tokio::time::sleep(BMC_TIMEOUT).await;
                Err(FenceError::Timeout {
                    device: self.device(),
                    waited: BMC_TIMEOUT,
                })
            }
            Bmc::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(Bmc::Up)
            }
            m => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(m)
            }
        }
    }
}

impl FenceAgent for SimBmc {
    fn kind(&self) -> &'static str {
        "ipmi"
    }

    fn device(&self) -> String {
        if self.dead {
            format!("dead-device-{}", self.node)
        } else {
            format!("bmc-{}", self.node)
        }
    }

    fn status(&self) -> BoxFuture<'_, Result<PowerState, FenceError>> {
        Box::pin(async move {
            Ok(match self.answer().await? {
                Bmc::LieOn => PowerState::On,
                Bmc::LieOff => PowerState::Off,
                _ => {
                    if lock(&self.world).up(&self.node) {
                        PowerState::On
                    } else {
                        PowerState::Off
                    }
                }
            })
        })
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), FenceError>> {
        Box::pin(async move {
            let mode = self.answer().await?;
            let mut w = lock(&self.world);
            let dev = self.device();
            match (mode, action) {
                (Bmc::LieOn | Bmc::LieOff, _) => {
                    w.say(
                        &dev,
                        format!("{action} accepted, nothing done (asked by {})", self.by),
                    );
                }
                (_, PowerAction::Off) => {
                    w.say(&dev, format!("power off (asked by {})", self.by));
                    let node = self.node.clone();
                    w.power_off(&node, "by its BMC");
                }
                (_, PowerAction::On) => {
                    w.say(&dev, format!("power on (asked by {})", self.by));
                    let node = self.node.clone();
                    w.power_on(&node, "by its BMC");
                }
            }
            Ok(())
        })
    }

    fn check(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async move {
            let t = std::time::Instant::now();
            match self.status().await {
                Ok(s) => vec![Check::pass("power state", s.to_string(), t.elapsed())],
                Err(e) => vec![Check::fail("reach", e.to_string(), t.elapsed())],
            }
        })
    }
}

/// A node's fence levels, as configured in the world.
#[derive(Debug, Clone)]
pub struct SimFencer {
    /// The world.
    pub world: Shared,
    /// The node fencing.
    pub node: String,
    /// Its view of corosync.
    pub quorum: SimQuorum,
}

impl Fencer for SimFencer {
    fn fence<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<FenceReport, String>> {
        Box::pin(async move {
            let (kinds, timeout) = {
                let w = lock(&self.world);
                let n = w.nodes.get(node).ok_or("no such node")?;
                (
                    n.fence.clone(),
                    n.watchdog.unwrap_or(Duration::from_secs(10)),
                )
            };
            if kinds.is_empty() {
                return Err(format!("node {node:?} has no fence levels"));
            }
            let levels: Vec<Level> = kinds
                .iter()
                .map(|k| match k.as_str() {
                    "watchdog" => Level {
                        agent: Box::new(WatchdogLevel::new(
                            node,
                            timeout,
                            MARGIN,
                            Some(Arc::new(self.quorum.clone()) as Arc<dyn QuorumSource>),
                        )),
                        power_timeout: timeout + MARGIN + Duration::from_secs(5),
                        poll: tandem_fence::watchdog::level::POLL,
                    },
                    // A device that never answers (a PDU on a dead network).
                    "dead" => Level {
                        agent: Box::new(SimBmc {
                            world: self.world.clone(),
                            node: node.to_owned(),
                            by: self.node.clone(),
                            dead: true,
                        }),
                        power_timeout: Duration::from_secs(5),
                        poll: DEFAULT_POLL,
                    },
                    _ => Level {
                        agent: Box::new(SimBmc {
                            world: self.world.clone(),
                            node: node.to_owned(),
                            by: self.node.clone(),
                            dead: false,
                        }),
                        power_timeout: Duration::from_secs(5),
                        poll: DEFAULT_POLL,
                    },
                })
                .collect();
            let report = fence_node(node, &levels).await;
            let mut w = lock(&self.world);
            for a in &report.attempts {
                let how = match (&a.outcome, &a.error) {
                    (Some(o), _) => o.to_string(),
                    (None, Some(e)) => format!("FAILED: {e}"),
                    _ => String::new(),
                };
                w.say(
                    &self.node,
                    format!("fence {node}: level {} {}: {how}", a.level, a.kind),
                );
            }
            Ok(report)
        })
    }
}

/// A node's machine: receives, hooks, crash points.
#[derive(Debug, Clone)]
pub struct SimHost {
    /// The world.
    pub world: Shared,
    /// The node.
    pub node: String,
    /// Crash the command after this step.
    pub crash_after: Option<String>,
}

impl Host for SimHost {
    fn end_receives<'a>(&'a self, dataset: &'a DatasetName) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut w = lock(&self.world);
            let mut ended = false;
            for (n, d, t) in &w.receives {
                if n == &self.node && d == dataset && !t.is_finished() {
                    t.abort();
                    ended = true;
                }
            }
            if ended {
                w.say(
                    &self.node,
                    format!("ended the receive into {dataset} (its sender is fenced)"),
                );
            }
        })
    }

    fn run_hook<'a>(&'a self, call: &'a HookCall) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let testing = {
                let mut w = lock(&self.world);
                w.say(
                    &self.node,
                    format!(
                        "hook {} {} {} -> {}",
                        call.hook, call.job, call.from, call.to
                    ),
                );
                if call.command == "fail" {
                    return Err("exit status 1 (the simulated hook fails)".into());
                }
                match call.hook {
                    "switchover_stop" => {
                        if let Some(n) = w.nodes.get_mut(&call.from) {
                            n.workload.remove(&call.job);
                        }
                    }
                    "switchover_start" | "on_promote" => {
                        if let Some(n) = w.nodes.get_mut(&call.to) {
                            n.workload.insert(call.job.clone());
                        }
                    }
                    // A test guest reads its disks: what the clones hold.
                    "on_test" => {
                        let mut seen = Vec::new();
                        for d in &call.datasets {
                            let held = DatasetName::parse(d).ok().and_then(|d| {
                                w.nodes
                                    .get(&self.node)
                                    .and_then(|n| n.pools.get(&d))
                                    .cloned()
                            });
                            seen.push(match held {
                                Some(ds) => format!(
                                    "{d} {} writes {:?}",
                                    if ds.readonly { "ro" } else { "rw" },
                                    ds.content
                                ),
                                None => format!("{d} MISSING"),
                            });
                        }
                        w.say(&self.node, format!("on_test sees {}", seen.join(", ")));
                    }
                    _ => {}
                }
                call.hook == "on_test"
            };
            if testing {
                // A test guest boots and is checked: it takes a while, and
                // replication goes on meanwhile.
                tokio::time::sleep(TEST_HOOK_TIME).await;
                lock(&self.world).say(&self.node, format!("on_test {} done", call.job));
            }
            Ok(())
        })
    }

    fn step(&self, step: &'static str) -> Result<(), HaError> {
        if self.crash_after.as_deref() == Some(step) {
            lock(&self.world).say(&self.node, format!("CRASH after step {step}"));
            return Err(HaError::Crashed { step });
        }
        Ok(())
    }
}

/// The watchdogs of the self-fencing nodes, once a second: a node armed
/// (quorate once) that has not been quorate for [`GATE_DELAY`] plus its
/// watchdog timeout is reset, and boots again [`BOOT_TIME`] later.
pub async fn watchdogs(world: Shared) {
    let mut armed: BTreeMap<String, bool> = BTreeMap::new();
    let mut back: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = tokio::time::Instant::now();
        let mut w = lock(&world);
        let names: Vec<String> = w.nodes.keys().cloned().collect();
        for n in names {
            if back.get(&n).is_some_and(|t| now >= *t) {
                back.remove(&n);
                w.power_on(&n, "rebooted after its watchdog reset it");
                armed.insert(n.clone(), false);
            }
            let Some(timeout) = w.nodes.get(&n).and_then(|x| x.watchdog) else {
                continue;
            };
            if !w.up(&n) {
                continue;
            }
            let (_, quorate) = w.membership(&n);
            let node = w.nodes.get_mut(&n).map(|x| {
                if quorate {
                    x.unquorate_since = None;
                } else if x.unquorate_since.is_none() {
                    x.unquorate_since = Some(now);
                }
                x.unquorate_since
            });
            let is_armed = armed.entry(n.clone()).or_insert(false);
            if quorate {
                *is_armed = true;
                continue;
            }
            if let (Some(Some(since)), true) = (node, *is_armed) {
                if now.duration_since(since) >= GATE_DELAY + timeout {
                    w.power_off(&n, "its watchdog reset it: no quorum");
                    back.insert(n.clone(), now + BOOT_TIME);
                }
            }
        }
    }
}
