//! Wall-clock time, behind a trait so that a simulator can run tandem's
//! logic on a virtual clock.
//!
//! Only *wall-clock* readings go through [`Clock`]: snapshot names, the
//! creation times recorded in state, ages. Waiting and measuring use
//! `tokio::time` (its `sleep` and `Instant`), which a paused tokio runtime
//! already makes virtual; [`TokioClock`] derive their wall time
//! from that same `Instant`, so both stay in step.

use std::fmt;

use chrono::{DateTime, Utc};

/// Where "now" comes from.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that advances with `tokio::time::Instant` from a fixed start:
/// on a paused runtime it is virtual and deterministic.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `epoch` now.
    pub fn starting_at(epoch: DateTime<Utc>) -> Self {
        TokioClock {
            epoch,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let d = tokio::time::Instant::now().duration_since(self.start);
        self.epoch + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    }
}
