//! The simulator (see the crate docs).
