//! # tandem-repl
//!
//! Replication logic, layered as zrepl does it:
//!
//! - [`naming`]: job names and tandem's own snapshot names;
//! - [`job`]: a job as configured, both ends;
//! - [`roles`]: which end is the primary now, from the generation marks
//!   on the datasets (pure);
//! - [`plan`]: the pure planner (both listings in, one decision out) and
//!   retention; property-tested over random histories;
//! - [`executor`]: the executor that carries a plan out against two [`Zfs`]
//!   nodes, streaming `send` into `receive` through bounded buffers;
//! - [`guest`]: jobs over several datasets, snapshotted at one moment;
//! - [`cycle`]: one cycle over many jobs (lock, list each node once,
//!   resolve, execute, record);
//! - [`state`]: the [`Store`](state::Store) of per-job state, records and
//!   locks: files in `state_dir` written atomically, or memory;
//! - [`lock`]: the file locks that hold across processes;
//! - [`clock`]: wall time behind a trait (virtual in the simulator);
//! - [`pipe`]: the bounded, metered copy of a stream;
//! - [`sched`]: the daemon's scheduler (interval, jitter, backoff).
//!
//! [`Zfs`]: tandem_zfs::Zfs

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
pub mod cycle;
pub mod executor;
pub mod guest;
pub mod job;
pub mod lock;
pub mod naming;
pub mod pipe;
pub mod plan;
pub mod roles;
pub mod sched;
pub mod state;
