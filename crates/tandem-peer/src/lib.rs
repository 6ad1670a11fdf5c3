//! # tandem-peer
//!
//! `tandem serve`, the agent every node runs so that other nodes can
//! replicate to and from it, and the client side of it.
//!
//! - [`proto`]: the messages — typed, versioned, one request and one
//!   response at a time, each a length-prefixed JSON document; a `Receive`
//!   or `Send` request is followed by a framed stream ([`tandem_stream`]).
//! - [`auth`]: what a peer may touch. Every request is checked against the
//!   peer's read and write dataset prefixes before any ZFS call; there is
//!   no request that runs a command.
//! - [`guard`]: the generation guard: no writes from a stale primary,
//!   none into this node's own primary.
//! - [`server`]: answers requests with a local [`Zfs`](tandem_zfs::Zfs).
//! - [`client`]: [`PeerZfs`](client::PeerZfs), a [`Zfs`](tandem_zfs::Zfs)
//!   that talks to a remote `tandem serve --stdio` through ssh, so the
//!   executor replicates to a remote node exactly as to a local one.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod client;
pub mod guard;
pub mod proto;
pub mod server;
pub mod tls;
