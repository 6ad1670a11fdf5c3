//! The simulator, in the spirit of pve-ha-manager's: the real engines
//! (failover, reverse, switchover, the daemon's replication cycle, the
//! fence levels' logic) run against a simulated world — ZFS pools with
//! GUIDs, holds, `written`, read-only flags, user properties and resume
//! tokens; nodes with power, BMCs that answer, hang, crawl or lie,
//! watchdogs, corosync's membership and network partitions — on a paused
//! tokio clock, so minutes of cluster life take milliseconds and every
//! run is the same.
//!
//! - [`world`]: the state of everything, and its log;
//! - [`zfs`]: [`SimZfs`](zfs::SimZfs), the `Zfs` trait over the world;
//! - [`cluster`]: corosync, BMCs, fence levels, the host, watchdogs;
//! - [`scenario`]: scenario files (a setup and timed commands) and the
//!   runner that produces the log;
//! - [`check`]: the invariants, checked after every command and every
//!   simulated half second;
//! - [`random`]: random fault schedules for the property test.

pub mod auto;
pub mod check;
pub mod cluster;
pub mod random;
pub mod scenario;
pub mod world;
pub mod zfs;
