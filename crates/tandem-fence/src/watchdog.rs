//! Watchdogs (placeholder until the backend lands).

use crate::error::FenceError;
use serde::Deserialize;
use std::sync::Arc;
use std::time::SystemTime;

/// Where a watchdog level learns when the node was last heard from.
pub trait Heartbeat: Send + Sync + std::fmt::Debug {
    /// The last time the node was seen alive, if ever.
    fn last_seen(&self) -> Option<SystemTime>;
}

/// A `kind = "watchdog"` fence level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogLevelConfig {}

/// The watchdog level's agent.
#[derive(Debug)]
pub struct WatchdogLevel;

impl WatchdogLevelConfig {
    /// Builds the agent.
    pub fn agent(&self, what: &str, _hb: Arc<dyn Heartbeat>) -> Result<WatchdogLevel, FenceError> {
        Err(FenceError::Config(format!(
            "{what}: watchdog is not implemented yet"
        )))
    }
}

impl crate::FenceAgent for WatchdogLevel {
    fn kind(&self) -> &'static str {
        "watchdog"
    }
    fn device(&self) -> String {
        String::new()
    }
    fn status(&self) -> crate::BoxFuture<'_, Result<crate::PowerState, FenceError>> {
        Box::pin(async { Ok(crate::PowerState::Unknown) })
    }
    fn power(&self, _: crate::PowerAction) -> crate::BoxFuture<'_, Result<(), FenceError>> {
        Box::pin(async { Ok(()) })
    }
    fn check(&self) -> crate::BoxFuture<'_, Vec<crate::Check>> {
        Box::pin(async { Vec::new() })
    }
}
