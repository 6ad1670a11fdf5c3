//! Mutual TLS transport for `tandem serve --listen`.
//!
//! Every node has a key and a certificate signed by the cluster's CA; the
//! certificate names the node (a DNS subject alternative name equal to the
//! node name). Both sides verify the other against the CA: the client
//! checks that the server's certificate names the node it meant to reach,
//! and the server derives the peer's identity from the client's
//! certificate — the first `[[serve.peers]]` name it is valid for. A
//! connection without a valid certificate fails the handshake, and one
//! whose certificate names no configured peer is closed, both before any
//! request is read.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tandem_zfs::{Zfs, ZfsError};
use tokio::net::{TcpListener, TcpStream};

use crate::auth::Policy;
use crate::client::{Connection, Connector};

/// TLS setup errors, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        msg: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A node's TLS material.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This node's certificate (PEM, may include the chain).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
}

fn file_err(path: &Path, msg: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        msg: msg.into(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let v: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, format!("not a PEM certificate: {e}")))?;
    if v.is_empty() {
        return Err(file_err(path, "no certificate in the file"));
    }
    Ok(v)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| file_err(path, e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(file_err(
            path,
            format!(
                "private key is readable by group or others (mode {:o}); chmod 600 it",
                meta.permissions().mode() & 0o777
            ),
        ));
    }
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_err(path, format!("not a PEM private key: {e}")))
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut r = RootCertStore::empty();
    for c in certs(ca)? {
        r.add(c)
            .map_err(|e| file_err(ca, format!("unusable CA certificate: {e}")))?;
    }
    Ok(r)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side: requires a client certificate signed by the CA.
pub fn server_config(f: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&f.ca)?), provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&f.cert)?, key(&f.key)?)
        .map_err(|e| TlsError::Config(format!("{}: {e}", f.cert.display())))?;
    Ok(Arc::new(cfg))
}

/// The client side: verifies the server against the CA and presents our
/// certificate.
pub fn client_config(f: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(&f.ca)?)
        .with_client_auth_cert(certs(&f.cert)?, key(&f.key)?)
        .map_err(|e| TlsError::Config(format!("{}: {e}", f.cert.display())))?;
    Ok(Arc::new(cfg))
}

/// The configured peer a verified client certificate names, if any.
pub fn identity<'a>(
    cert: &CertificateDer<'_>,
    peers: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    peers.into_iter().find_map(|p| {
        let name = ServerName::try_from(p).ok()?;
        ee.verify_is_valid_for_subject_name(&name)
            .ok()
            .map(|_| p.to_owned())
    })
}

/// Connects to `tandem serve --listen` on a node.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    /// `host:port`.
    pub addr: String,
    /// The node name its certificate must carry.
    pub node: String,
    /// Client configuration.
    pub config: Arc<ClientConfig>,
}

impl Connector for TlsConnector {
    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<Connection, ZfsError>> + Send + '_>> {
        Box::pin(async move {
            let cmd = format!("[{}] tls://{}", self.node, self.addr);
            let err = |msg: String| ZfsError::Ssh {
                cmd: cmd.clone(),
                msg,
            };
            let tcp = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                TcpStream::connect(&self.addr),
            )
            .await
            .map_err(|_| err(format!("connecting to {} timed out", self.addr)))?
            .map_err(|e| err(format!("cannot connect to {}: {e}", self.addr)))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(self.node.clone()).map_err(|e| {
                err(format!(
                    "node name {:?} is not a certificate name: {e}",
                    self.node
                ))
            })?;
            let tls = tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| err(format!("TLS handshake failed: {e}")))?;
            let (r, w) = tokio::io::split(tls);
            Ok(Connection::new(r, w))
        })
    }

    fn describe(&self) -> String {
        format!("tls://{}", self.addr)
    }
}

/// Accepts connections forever, serving each with the policy its
/// certificate maps to.
pub async fn listen<Z: Zfs + 'static>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    policies: Arc<BTreeMap<String, Policy>>,
    zfs: Arc<Z>,
    node: String,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, from) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (acceptor, policies, zfs, node) = (
            acceptor.clone(),
            policies.clone(),
            zfs.clone(),
            node.clone(),
        );
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(%from, "refused: TLS handshake failed: {e}");
                    return;
                }
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first().cloned());
            let Some(peer) = cert.and_then(|c| identity(&c, policies.keys().map(String::as_str)))
            else {
                tracing::warn!(%from, "refused: the client certificate names no [[serve.peers]] entry");
                return;
            };
            let Some(policy) = policies.get(&peer) else {
                return;
            };
            tracing::info!(%from, %peer, "TLS peer connected");
            let (r, w) = tokio::io::split(tls);
            if let Err(e) = crate::server::serve(r, w, &*zfs, policy, &node).await {
                tracing::warn!(%from, %peer, "connection ended: {e}");
            }
        });
    }
}
