//! # tandem-config
//!
//! tandem's configuration file (`/etc/tandem/tandem.toml`): parsed strictly
//! (an unknown key is an error), validated as a whole (every problem at
//! once, each naming the file and the key), and resolved into what the
//! engines take: a ZFS backend per node ([`NodeZfs`]: the `zfs` command
//! locally or over ssh, or a peer's `tandem serve`), the jobs, a node's
//! fence levels ([`fencing`]), the `[watchdog]` and `[quorum]` tables, and
//! the check against Proxmox VE's own HA manager ([`pve`]).
//!
//! A library rather than part of the binary because more than one program
//! reads the same file: `tandem` itself, and `fence_tandem` (the
//! fence-agents front end, which fences a node through its levels here).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod config;
pub mod fencing;
pub mod pve;

use std::path::PathBuf;

pub use backend::NodeZfs;
pub use config::{parse_duration, parse_rate, Config, Node, DEFAULT_PATH, DEFAULT_TLS_PORT};

/// Why a configuration cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape (an unknown key,
    /// a wrong type).
    #[error("{}: {msg}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        msg: String,
    },
    /// The file parses but what it says does not hold together.
    #[error("{}: invalid configuration:\n  - {}", path.display(), problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, each naming its key.
        problems: Vec<String>,
    },
    /// The `[tls]` material cannot be loaded.
    #[error("{}: [tls]: {msg}", path.display())]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A node that is not in `[nodes]`.
    #[error("{}: no node named {node:?} in [nodes] (known: {})", path.display(), known.join(", "))]
    UnknownNode {
        /// The file.
        path: PathBuf,
        /// The name given.
        node: String,
        /// The configured nodes.
        known: Vec<String>,
    },
    /// A job that is not in `[jobs]`.
    #[error("{}: no job named {job:?} (jobs: {})", path.display(), known.join(", "))]
    UnknownJob {
        /// The file.
        path: PathBuf,
        /// The name given.
        job: String,
        /// The configured jobs.
        known: Vec<String>,
    },
    /// A node's fence levels cannot be built.
    #[error("{}: {msg}", path.display())]
    Fence {
        /// The file.
        path: PathBuf,
        /// What is wrong (no levels, a credential).
        msg: String,
    },
}
