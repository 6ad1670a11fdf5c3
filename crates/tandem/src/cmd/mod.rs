//! One module per subcommand.

pub mod cert;
pub mod daemon;
pub mod demo;
pub mod failover;
pub mod fence;
pub mod ha;
pub mod import;
pub mod quorum;
pub mod reverse;
pub mod run;
pub mod serve;
pub mod status;

use std::path::Path;

use anyhow::{Context, Result};
use tandem_repl::state::StateStore;

use tandem_config::Config;

/// Loads the config and opens its state directory.
pub fn load(path: &Path) -> Result<(Config, StateStore)> {
    let cfg = Config::load(path)?;
    let store = StateStore::open(&cfg.state_dir).with_context(|| {
        format!(
            "{}: state_dir {} is not usable",
            cfg.path.display(),
            cfg.state_dir.display()
        )
    })?;
    Ok((cfg, store))
}

/// `pid 123 (tandem run)`, recorded in lock files.
pub fn me(what: &str) -> String {
    format!("pid {} (tandem {what})", std::process::id())
}
