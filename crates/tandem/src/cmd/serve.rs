//! `tandem serve --stdio`: the peer agent, on stdin/stdout (usable as an
//! ssh forced command). The peer's identity comes from `--peer` (or
//! `$TANDEM_PEER`), set by the forced command in `authorized_keys`, and
//! selects its `[[serve.peers]]` policy; a peer without one is refused.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::config::Config;

/// `tandem serve --stdio`.
pub async fn serve_stdio(path: &Path, peer: Option<String>) -> Result<ExitCode> {
    let cfg = Config::load(path)?;
    let Some(peer) = peer.or_else(|| std::env::var("TANDEM_PEER").ok()) else {
        bail!("tandem serve needs the peer's identity: --peer NAME (set it in the ssh forced command)");
    };
    let Some(policy) = cfg.serve_peers.get(&peer) else {
        tracing::warn!(%peer, "refused: no [[serve.peers]] entry");
        bail!(
            "{}: peer {peer:?} has no [[serve.peers]] entry; refusing",
            cfg.path.display()
        );
    };
    let zfs = cfg.local_zfs();
    tandem_peer::server::serve(
        tokio::io::stdin(),
        tokio::io::stdout(),
        &zfs,
        policy,
        &cfg.local_node,
    )
    .await
    .context("tandem serve")?;
    Ok(ExitCode::SUCCESS)
}
