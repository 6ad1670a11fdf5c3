//! # tandem-fence
//!
//! Fencing: making certain that a node is powered off before its replicas
//! are promoted somewhere else.
//!
//! - [`agent`]: the [`FenceAgent`] trait every device implements (power
//!   status, on, off, and a non-destructive checklist for `tandem fence
//!   test`), and [`PowerState`].
//! - [`actions`]: status, power on, reboot and the commissioning test
//!   through a node's levels;
//! - [`level`]: fencing through a node's levels, tried in order; a level
//!   succeeds only when its device *confirms* the power is off (a timeout is
//!   a failure, never a success).
//! - [`secret`]: credentials read from a private file or the environment,
//!   never printed.
//! - [`ipmi`]: IPMI v2.0 over LAN (RMCP+), built on the `ipmi-rs` message
//!   types.
//! - [`amt`]: Intel AMT over WS-Management (SOAP, HTTP Digest).
//! - [`watchdog`]: the self-fencing keeper (`/dev/watchdog` or
//!   `watchdog-mux`), and the "watchdog" fence level that waits out a dead
//!   node's watchdog timeout.
//! - [`quorum`]: whether this node is in the quorate partition of its
//!   corosync cluster (natively through corosync's libraries, or
//!   `corosync-quorumtool`), for the failover and watchdog gates.
//! - [`config`]: the `[[nodes.NAME.fence]]` tables of tandem's config.

#![deny(missing_docs)]

pub mod actions;
pub mod agent;
pub mod amt;
pub mod config;
pub mod error;
pub mod ipmi;
pub mod level;
pub mod quorum;
pub mod secret;
pub mod watchdog;

pub use agent::{BoxFuture, Check, FenceAgent, PowerAction, PowerState};
pub use error::FenceError;
pub use level::{FenceOutcome, FenceReport, Level};
pub use secret::Secret;
