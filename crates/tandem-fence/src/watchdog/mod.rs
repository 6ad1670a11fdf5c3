//! Watchdogs: self-fencing on this node, and waiting out a dead node's
//! watchdog as a fence level on the others.
//!
//! - [`Keeper`] (in [`keeper`]) holds this node's watchdog while the node
//!   is fit to run its primaries: the daemon's loop [`Liveness::touch`]es a
//!   heartbeat and an optional gate (the daemon's: quorum) says yes. When either
//!   fails the keeper stops petting, *without* disarming the watchdog, and
//!   the node resets. On a Proxmox node it is a client of `watchdog-mux`
//!   ([`mux`]); elsewhere it opens `/dev/watchdog` itself ([`ioctl`]).
//! - [`WatchdogLevel`] (in [`level`]) is the `kind = "watchdog"` fence
//!   level: it reports the dead node [`Off`](crate::PowerState::Off) once
//!   its watchdog timeout plus a margin has surely passed since it was last
//!   heard from.
//!
//! ## Choosing the level's `margin`
//!
//! A node whose daemon wedges at time `T` (its last heartbeat) pets its
//! watchdog for the last time at most `wedge_after` later, and is reset
//! at most `timeout` after that; with `watchdog-mux` add the mux's own
//! 10 s hardware timeout and its 1 s loop. So the level's `margin` must be
//! at least the dead node's keeper `wedge_after` (+ 11 s with
//! `watchdog-mux`) plus the transit time of the heartbeat. The defaults
//! (`wedge_after` 10 s, margin 30 s) satisfy this.
//!
//! A node that is healthy but cut off from its peers stops petting once
//! corosync says it lost quorum (the daemon's gate, see [`crate::quorum`]),
//! so the level is safe for a partition too where corosync runs; add the
//! time corosync takes to notice (token + consensus, a few seconds) and
//! the gate's `refresh` to the margin. Without corosync (no gate) it is
//! only safe for nodes that are really dead or wedged.

pub mod ioctl;
pub mod keeper;
pub mod level;
pub mod mux;

use std::time::SystemTime;

pub use ioctl::{DevWatchdog, WatchdogDevice, WatchdogInfo};
pub use keeper::{Keeper, KeeperConfig, KeeperError, KeeperHandle, KeeperStatus, Liveness};
pub use level::{WatchdogLevel, WatchdogLevelConfig};

/// Where a watchdog level learns when the node was last heard from.
pub trait Heartbeat: Send + Sync + std::fmt::Debug {
    /// The last time the node was seen alive, if ever.
    fn last_seen(&self) -> Option<SystemTime>;
}
