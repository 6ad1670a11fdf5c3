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
//!   it has been absent from this node's quorate corosync membership for
//!   its watchdog timeout plus a margin.
//! - [`daemon`]: the keeper as the daemon runs it: gated by a
//!   [`QuorumWatch`](daemon::QuorumWatch), and armed only once the node is
//!   quorate.
//!
//! ## Choosing the level's `margin`
//!
//! The level counts from the moment this node *sees* the node leave its
//! quorate membership. The node itself learns that it lost quorum at about
//! the same moment (both sides see the same membership change), and its
//! keeper stops petting once its quorum gate closes: at most the gate's
//! `refresh` plus the tool's `timeout` plus 1 s later (2 + 5 + 1 s by
//! default). A node whose daemon wedged instead pets for at most
//! `wedge_after` (10 s). Its watchdog resets it `timeout` after the last
//! pet; with `watchdog-mux` add the mux's own 10 s hardware timeout and
//! its 1 s loop. So `margin` must cover the larger of the gate delay and
//! `wedge_after` (+ 11 s with `watchdog-mux`); the defaults (margin 30 s)
//! do. Without corosync there is no membership and the level refuses.

pub mod daemon;
pub mod ioctl;
pub mod keeper;
pub mod level;
pub mod mux;

pub use ioctl::{DevWatchdog, WatchdogDevice, WatchdogInfo};
pub use keeper::{Keeper, KeeperConfig, KeeperError, KeeperHandle, KeeperStatus, Liveness};
pub use level::{WatchdogLevel, WatchdogLevelConfig};
