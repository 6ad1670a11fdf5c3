//! # tandem-testkit
//!
//! Test support that more than one crate's tests use, as a dev-only crate
//! (it used to be included with `#[path]`):
//!
//! - [`bmc`]: a simulated BMC, OpenIPMI's `ipmi_sim` started by
//!   `scripts/ipmi-sim.sh`, whose "machine" is a power file;
//! - [`fake_mux`]: a unix socket that records what a watchdog-mux client
//!   sends (keep-alives, the magic `V`).
//!
//! Its functions panic on failure: they are for tests only.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bmc;
pub mod fake_mux;
