//! # tandem-ha
//!
//! What tandem does when the primary of a job changes: `failover` (a node
//! died: fence it, promote the replicas here), `reverse` (the old primary
//! returned: make it follow the new one, keeping what it wrote after the
//! last sync), `switchover` (a planned move), and `failover --test` (a
//! drill against clones that changes nothing). Each is a sequence of
//! idempotent steps over traits — ZFS ([`tandem_zfs::Zfs`], administration
//! included), the [`Fencer`](env::Fencer), quorum and membership
//! ([`tandem_fence::quorum::QuorumSource`]), the clock, the state
//! [`Store`](tandem_repl::state::Store) and the [`Host`](env::Host) — so
//! that the same code runs against real pools in `tandem` and against the
//! simulator in [`sim`], which drives it through scripted and random
//! faults (power, network, BMCs, watchdogs, crashes between steps) and
//! checks the safety invariants after every step.
//!
//! The decisions are taken from facts every node can read: the
//! generation marks on the datasets ([`tandem_repl::roles`]) and what a
//! fence device or corosync confirms. Nothing here trusts one node's own
//! state alone: a node never rolls back a dataset whose mark names it as
//! the primary, and never promotes a replica of a node that is not
//! confirmed off (DESIGN.md invariants 4, 9, 10, 11).
//!
//! - [`env`]: the traits and the [`Env`](env::Env) a command runs in;
//! - [`error`]: [`HaError`](error::HaError), one variant per case a caller
//!   branches on;
//! - [`failover`], [`reverse`], [`switchover`]: the engines and their
//!   typed reports;
//! - [`drill`]: `failover --test`, a failover drill against clones that
//!   changes nothing;
//! - [`machine`]: the production host (receives, hooks);
//! - [`sim`]: the simulated cluster and ZFS, scenarios and invariants.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
// `HaError` carries what it names (endpoints, the fence report); it is
// returned once per command, never in a loop, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod auto;
pub mod drill;
pub mod env;
pub mod error;
pub mod failover;
pub mod machine;
pub mod reverse;
pub mod sim;
pub mod switchover;

pub use env::{Env, Fencer, HookCall, Host};
pub use error::HaError;
