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

/// `tandem serve --listen ADDR`: mutual TLS; each connection's identity is
/// the `[[serve.peers]]` name its client certificate carries.
pub async fn serve_listen(path: &Path, addr: &str) -> Result<ExitCode> {
    let cfg = Config::load(path)?;
    let files = cfg.tls.clone().with_context(|| {
        format!(
            "{}: tandem serve --listen needs a [tls] table (cert, key, ca)",
            cfg.path.display()
        )
    })?;
    let server = tandem_peer::tls::server_config(&files)
        .with_context(|| format!("{}: [tls]", cfg.path.display()))?;
    if cfg.serve_peers.is_empty() {
        bail!(
            "{}: no [[serve.peers]]: every connection would be refused",
            cfg.path.display()
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, node = %cfg.local_node, peers = cfg.serve_peers.len(), "tandem serve listening (mutual TLS)");
    let zfs = std::sync::Arc::new(cfg.local_zfs());
    let policies = std::sync::Arc::new(cfg.serve_peers.clone());
    tokio::select! {
        r = tandem_peer::tls::listen(listener, server, policies, zfs, cfg.local_node.clone()) => { r.context("tandem serve")?; }
        _ = tokio::signal::ctrl_c() => {}
        _ = async { if let Ok(mut t) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) { t.recv().await; } } => {}
    }
    tracing::info!("tandem serve stopped");
    Ok(ExitCode::SUCCESS)
}
