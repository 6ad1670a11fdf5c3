//! `tandem serve --stdio`: the peer agent, on stdin/stdout (usable as an
//! ssh forced command). The peer's identity comes from `--peer` (or
//! `$TANDEM_PEER`), set by the forced command in `authorized_keys`, and
//! selects its `[[serve.peers]]` policy; a peer without one is refused.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::pin::Pin;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use tandem_config::Config;

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
    let (stdin, stdout) = stdio();
    tandem_peer::server::serve(stdin, stdout, &zfs, policy, &cfg.local_node)
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

type Reader = Pin<Box<dyn tokio::io::AsyncRead + Send>>;
type Writer = Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// Stdin and stdout for the protocol. Under ssh they are pipes (or a
/// socket): those are driven by the runtime's reactor directly, from
/// duplicated descriptors. tokio's own `stdin()`/`stdout()` would hand every
/// read and write to a blocking thread and copy it once more, which costs
/// more CPU than the stream's checksums. Anything else (a terminal, a file,
/// a stdout that stderr shares) falls back to them.
fn stdio() -> (Reader, Writer) {
    let fd = |f: std::io::Result<OwnedFd>| -> Option<(OwnedFd, std::fs::FileType)> {
        let file = std::fs::File::from(f.ok()?);
        let t = file.metadata().ok()?.file_type();
        Some((OwnedFd::from(file), t))
    };
    let r: Option<Reader> =
        fd(std::io::stdin().as_fd().try_clone_to_owned()).and_then(|(fd, t)| {
            if t.is_fifo() {
                // A bigger pipe: fewer wake-ups of sshd and of us per MB.
                let _ =
                    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
                let p = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()?;
                Some(Box::pin(p) as Reader)
            } else if t.is_socket() {
                Some(Box::pin(unix_stream(fd)?) as Reader)
            } else {
                None
            }
        });
    // Non-blocking mode belongs to the pipe, not the descriptor: if stderr
    // is the same pipe (`2>&1`), log lines could then fail with EAGAIN.
    let id = |f: std::io::Result<OwnedFd>| {
        let m = std::fs::File::from(f.ok()?).metadata().ok()?;
        Some((m.dev(), m.ino()))
    };
    let shared = id(std::io::stdout().as_fd().try_clone_to_owned())
        == id(std::io::stderr().as_fd().try_clone_to_owned());
    let w: Option<Writer> =
        fd(std::io::stdout().as_fd().try_clone_to_owned()).and_then(|(fd, t)| {
            if shared {
                None
            } else if t.is_fifo() {
                let p = tokio::net::unix::pipe::Sender::from_owned_fd(fd).ok()?;
                Some(Box::pin(p) as Writer)
            } else if t.is_socket() {
                Some(Box::pin(unix_stream(fd)?) as Writer)
            } else {
                None
            }
        });
    match (r, w) {
        (Some(r), Some(w)) => (r, w),
        (r, w) => (
            r.unwrap_or_else(|| Box::pin(tokio::io::stdin())),
            w.unwrap_or_else(|| Box::pin(tokio::io::stdout())),
        ),
    }
}

fn unix_stream(fd: OwnedFd) -> Option<tokio::net::UnixStream> {
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(true).ok()?;
    tokio::net::UnixStream::from_std(s).ok()
}
