//! The daemons of a simulated cluster: on every node, while it is powered
//! on, the real automatic failover loop ([`crate::auto::watch`]) over the
//! node's simulated ZFS, store, quorum, fence devices and hooks. A power
//! cut kills it with everything else the node ran; a boot starts it
//! afresh (it remembers nothing but what is on disk).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::scenario::{failover_lines, Kit, Setup};
use super::world::{lock, Shared};
use crate::auto::{AutoConfig, AutoReport, Control, HookOutcome, JobHa, NodeHa, Pause};
use crate::error::HaError;

/// How long after a boot the daemon starts.
pub const DAEMON_START: Duration = Duration::from_secs(1);

/// Keeps `node`'s daemon running whenever the node is on.
pub async fn supervise(world: Shared, setup: Arc<Setup>, node: String) {
    loop {
        tokio::time::sleep(DAEMON_START).await;
        if !lock(&world).up(&node) {
            continue;
        }
        let h = tokio::spawn(daemon(world.clone(), setup.clone(), node.clone()));
        lock(&world).tasks.push((node.clone(), h.abort_handle()));
        // Ends when the node loses power (its tasks are aborted).
        let _ = h.await;
    }
}

async fn daemon(world: Shared, setup: Arc<Setup>, node: String) {
    let kit = Kit::new(&world, &setup, &node, None);
    let env = kit.env();
    let (_tx, rx) = tokio::sync::watch::channel(setup.jobs.clone());
    let ctl = SimControl {
        world: world.clone(),
        node: node.clone(),
        last: Mutex::default(),
    };
    crate::auto::watch(&env, &rx, AutoConfig::default(), &ctl).await;
}

/// A node's pause flag and its status, in the world and the log.
struct SimControl {
    world: Shared,
    node: String,
    last: Mutex<BTreeMap<String, String>>,
}

impl SimControl {
    /// Seconds since the start of the world, for the log.
    fn at(&self, t: &chrono::DateTime<chrono::Utc>) -> String {
        let epoch = lock(&self.world).epoch;
        format!("{:.1}", (*t - epoch).num_milliseconds() as f64 / 1000.0)
    }

    fn text(&self, st: &JobHa) -> String {
        match st {
            JobHa::Manual => "manual".into(),
            JobHa::Paused => "paused".into(),
            JobHa::NotQuorate => "not quorate: doing nothing".into(),
            JobHa::Primary => "primary here".into(),
            JobHa::Promoted { from, at } => {
                format!("primary here (promoted from {from} at {})", self.at(at))
            }
            JobHa::HookFailed { from, error } => {
                format!("primary here (promoted from {from}), but on_promote FAILED: {error}")
            }
            JobHa::Watching { primary } => format!("watching {primary}"),
            JobHa::PrimaryLost {
                primary, fence_at, ..
            } => format!("{primary} lost; fencing it at {}", self.at(fence_at)),
            JobHa::Fencing { primary, .. } => format!("fencing {primary}"),
            JobHa::Refused {
                primary,
                error,
                retry_at,
            } => format!(
                "failover from {primary} refused ({error}); again at {}",
                self.at(retry_at)
            ),
            JobHa::Unknown { why } => format!("unknown: {why}"),
        }
    }
}

impl Control for SimControl {
    fn paused(&self) -> Option<Pause> {
        let w = lock(&self.world);
        w.nodes
            .get(&self.node)
            .filter(|n| n.ha_paused)
            .map(|_| Pause {
                at: w.now(),
                by: "sim".into(),
                reason: None,
            })
    }

    fn publish(&self, status: &NodeHa) {
        let mut last = match self.last.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for (job, st) in &status.jobs {
            let t = self.text(st);
            if last.get(job) != Some(&t) {
                lock(&self.world).say(&self.node, format!("ha {job}: {t}"));
                last.insert(job.clone(), t);
            }
        }
    }

    fn report(&self, report: &Result<AutoReport, HaError>, dead: &str) {
        let lines = match report {
            Ok(r) => {
                let mut l = failover_lines(&self.world, &self.node, dead, &r.failover, false);
                for (job, h) in &r.hooks {
                    l.push(match h {
                        HookOutcome::None => format!("ha {job}: no on_promote"),
                        HookOutcome::Ok => format!("ha {job}: on_promote ok: workload started"),
                        HookOutcome::Failed { error } => {
                            format!("ha {job}: on_promote FAILED ({error}); the promotion stands")
                        }
                        HookOutcome::AlreadyRun { ok } => {
                            format!("ha {job}: on_promote ran before ({ok:?})")
                        }
                    });
                }
                l
            }
            Err(e) => vec![format!(
                "auto failover {dead}: {} ({}): {e}",
                if e.is_refusal() { "REFUSED" } else { "FAILED" },
                e.kind()
            )],
        };
        let mut w = lock(&self.world);
        for l in lines {
            w.say(&self.node, l);
        }
    }
}
