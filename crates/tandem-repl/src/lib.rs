//! # tandem-repl
//!
//! Replication logic, layered as zrepl does it:
//!
//! - [`naming`]: job names and tandem's own snapshot names;
//! - [`plan`]: the pure planner (both listings in, one decision out) and
//!   retention; property-tested over random histories;
//! - [`exec`]: the executor that carries a plan out against two [`Zfs`]
//!   nodes, streaming `send` into `receive` through bounded buffers;
//! - [`state`]: per-job state in `state_dir`, written atomically;
//! - [`lock`]: per-job and per-target locks that also hold across processes;
//! - [`sched`]: the daemon's scheduler (interval, jitter, backoff).
//!
//! [`Zfs`]: tandem_zfs::Zfs

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cycle;
pub mod exec;
pub mod lock;
pub mod naming;
pub mod pipe;
pub mod plan;
pub mod sched;
pub mod state;
