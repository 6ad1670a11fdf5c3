//! `tandem import pvesr [--root DIR] [--json]`: reads Proxmox VE's storage
//! replication setup and prints the tandem config that replaces it (the
//! mapping is `tandem_config::pve::import`'s). Writes nothing anywhere.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use tandem_config::pve::import;

/// Runs it: the config on stdout (or the mapping as JSON).
pub fn pvesr(root: &Path, json: bool) -> Result<ExitCode> {
    let tree = import::read(root)?;
    let out = import::import(&tree);
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        crate::outln!("{}", out.to_toml().trim_end());
    }
    Ok(ExitCode::SUCCESS)
}
