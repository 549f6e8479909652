//! The collector's TLS: mutual TLS with rustls (the ring provider, the one
//! crypto provider of the workspace), served through our own acceptor so the
//! certificate, key and client CA are reloaded from disk when they change.
//!
//! tonic's `ServerTlsConfig` takes its identity once, at start. Instead the
//! collector accepts TCP itself, runs each handshake with the `ServerConfig`
//! current at that moment, and hands finished `TlsStream`s to
//! `Server::serve_with_incoming_shutdown`. tonic knows that stream type
//! (`Connected for tokio_rustls::server::TlsStream`), so `peer_certs()` and
//! `remote_addr()` work as with its own TLS. A reload builds a new
//! `ServerConfig` for later handshakes; connections already up keep theirs,
//! so no stream is dropped.
//!
//! Identities are in the certificates `patchgap pki` issues: a URI SAN
//! `urn:patchgap:agent:HOST` (and CN = HOST) for an agent,
//! `urn:patchgap:cli:NAME` for a CLI client.
//!
//! **Invariant:** knows rustls, never tonic's services or the store; a file
//! that fails to reload keeps the previous configuration.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

use crate::conn::{Admission, Admitted, Guarded};

/// The URI SAN prefix of an agent certificate; the host name follows.
pub const AGENT_URI_PREFIX: &str = "urn:patchgap:agent:";
/// The URI SAN prefix of a CLI client certificate; the client name follows.
pub const CLI_URI_PREFIX: &str = "urn:patchgap:cli:";

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Files are stat'ed for a change at most this often.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The collector's certificate, key and the CA its clients' certificates
/// must chain to (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the client CA in {path} is not usable: {source}")]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the client verifier cannot be built: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the certificate and key do not make a TLS identity: {0}")]
    Config(#[from] rustls::Error),
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// Builds the server configuration from the files: client certificates are
/// required and must chain to the client CA; HTTP/2 only (gRPC).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    // ring is the workspace's one provider (tonic's `tls-ring`); rustls
    // 0.23.48 deprecates it only to point at aws-lc-rs's post-quantum key
    // exchange, which would bring the second provider in.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Read {
        path: files.key.clone(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.client_ca)? {
        roots.add(ca).map_err(|source| TlsError::ClientCa {
            path: files.client_ca.clone(),
            source,
        })?;
    }
    // A client without a certificate gets through the handshake (the CLI
    // may hold only a token); one that presents a certificate must present
    // a valid one of this CA. Ingest refuses streams without an agent
    // certificate.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The modification times of the three files, to notice a change.
fn stamps(files: &TlsFiles) -> [Option<SystemTime>; 3] {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    [m(&files.cert), m(&files.key), m(&files.client_ca)]
}

/// The current `ServerConfig`, rebuilt when a file's mtime changes (checked
/// at most once per second, on accept).
pub struct ReloadingConfig {
    files: TlsFiles,
    state: Mutex<ReloadState>,
}

struct ReloadState {
    config: Arc<ServerConfig>,
    stamps: [Option<SystemTime>; 3],
    checked: Instant,
}

impl ReloadingConfig {
    /// Loads the files; an error here stops the collector at start.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let stamps = stamps(&files);
        let config = server_config(&files)?;
        Ok(ReloadingConfig {
            files,
            state: Mutex::new(ReloadState {
                config,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let now = stamps(&self.files);
            if now != state.stamps {
                // Remember the stamps either way, so a bad file is reported
                // once per change, not on every accept.
                state.stamps = now;
                match server_config(&self.files) {
                    Ok(config) => {
                        info!(cert = %self.files.cert.display(), "TLS certificate, key or client CA changed; reloaded");
                        state.config = config;
                    }
                    Err(error) => {
                        warn!(%error, "TLS files changed but do not load; keeping the previous ones")
                    }
                }
            }
        }
        state.config.clone()
    }
}

/// A connection through its TLS handshake, as the server gets it.
pub type TlsConnection = Guarded<TlsStream<TcpStream>>;

/// Takes the connections admission let in (see `conn`) and yields those
/// whose TLS handshake succeeded. Each handshake runs in its own task
/// (bounded by a timeout, and given up when admission needs the room), so
/// a slow or hostile client holds up nobody. The task ends when the
/// returned stream is dropped, or when the caller aborts the handle.
pub fn incoming(
    mut accepted: tokio::sync::mpsc::Receiver<Admitted>,
    admission: Arc<Admission>,
    config: Arc<ReloadingConfig>,
) -> (
    ReceiverStream<io::Result<TlsConnection>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(async move {
        while let Some((tcp, peer, state)) = accepted.recv().await {
            if tx.is_closed() {
                return;
            }
            let acceptor = TlsAcceptor::from(config.current());
            let tx = tx.clone();
            let admission = admission.clone();
            tokio::spawn(async move {
                let handshake = tokio::select! {
                    r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
                    _ = state.closed() => {
                        handshake_failed(peer, "closed to make room");
                        return;
                    }
                };
                match handshake {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(Guarded::new(tls, state, admission))).await;
                    }
                    Ok(Err(error)) => handshake_failed(peer, &error.to_string()),
                    Err(_) => handshake_failed(peer, "handshake timed out"),
                }
            });
        }
    });
    (ReceiverStream::new(rx), task)
}

/// A client that did not get through the handshake (no certificate, an
/// expired one, another CA, plaintext): the connection never reaches a
/// service.
fn handshake_failed(peer: SocketAddr, reason: &str) {
    // Not `api::refused`: anyone who can reach the port can cause these, so
    // they are not worth an audit entry each.
    info!(%peer, reason, "TLS handshake refused");
}

/// What a client certificate says about who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub role: Role,
    /// The certificate's subject, for logs and the audit trail.
    pub subject: String,
    /// When the certificate expires (ms since the epoch).
    pub not_after_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// An agent for this host name.
    Agent(String),
    /// A CLI client with this name.
    Cli(String),
    /// A certificate of the CA that names no patchgap role.
    Other,
}

/// Reads the role and expiry from a (verified) client certificate.
pub fn peer_identity(der: &[u8]) -> Option<PeerIdentity> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject().to_string();
    let not_after_ms = cert.validity().not_after.timestamp().saturating_mul(1000);
    let mut role = Role::Other;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if let Some(host) = uri.strip_prefix(AGENT_URI_PREFIX) {
                    role = Role::Agent(host.to_string());
                    break;
                }
                if let Some(n) = uri.strip_prefix(CLI_URI_PREFIX) {
                    role = Role::Cli(n.to_string());
                    break;
                }
            }
        }
    }
    Some(PeerIdentity {
        role,
        subject,
        not_after_ms,
    })
}
