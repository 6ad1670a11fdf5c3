//! The engines' environment on this machine.

use std::collections::BTreeMap;
use std::time::Duration;

use tandem_config::fencing::ConfigFencer;
use tandem_config::{Config, NodeZfs};
use tandem_fence::quorum::QuorumSource;
use tandem_ha::machine::Machine;
use tandem_ha::Env;
use tandem_repl::clock::SystemClock;
use tandem_repl::state::StateStore;

/// How long an engine waits for a job's lock (a running cycle).
pub const LOCK_WAIT: Duration = Duration::from_secs(600);

/// The engine's environment on this machine; `quorum` is
/// `cfg.quorum.source()`, held by the caller.
pub fn env<'a>(
    cfg: &'a Config,
    quorum: &'a dyn QuorumSource,
    nodes: &'a BTreeMap<String, NodeZfs>,
    store: &'a StateStore,
    fencer: &'a ConfigFencer<'a>,
    what: &str,
) -> Env<'a, NodeZfs> {
    Env {
        local: &cfg.local_node,
        nodes,
        store,
        clock: &SystemClock,
        quorum,
        fencer,
        host: &Machine,
        me: crate::cmd::me(what),
        lock_wait: LOCK_WAIT,
    }
}
