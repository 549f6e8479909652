//! The collector's HTTP listener (`--http-listen`): what speaks plain HTTP
//! rather than gRPC. Today the Kubernetes admission webhook
//! (`POST /v1/admission`, `admission.rs`) and the Prometheus exposition
//! (`GET /metrics`, `metrics.rs`) and webhook receivers' confirmations
//! (`POST /v1/webhooks/confirm`, `confirm.rs`).
//!
//! Adding a route is one line in [`router`]: a path, a method and a
//! handler that takes `State<Http>` (and, if it reads a body, `Bytes`,
//! bounded by [`MAX_BODY_BYTES`]). The listener around it is shared: TLS
//! with the collector's certificate (reloaded like gRPC's; a client
//! certificate is optional, as kube-apiserver presents none by default,
//! unless `--http-client-cert` requires a CLI certificate of the client CA),
//! plaintext on loopback only, HTTP/1.1 and HTTP/2, at most
//! [`MAX_CONNECTIONS`] connections, and every request answered within
//! [`REQUEST_TIMEOUT`] or given 503.
//!
//! **Invariant:** handlers decode, call a decision in `response` (or a
//! read of the store) off the async workers, and encode; no handler holds
//! a store transaction across an await, and nothing here knows SQL.

pub mod admission;
pub mod confirm;
pub mod metrics;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    extract::{DefaultBodyLimit, Request},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::{Ingest, SharedPolicy, audit::AuditLog, tls::ReloadingConfig};

/// The largest request body read: an AdmissionReview of the largest
/// object kube-apiserver stores (3 MiB), twice on UPDATE, with room.
pub const MAX_BODY_BYTES: usize = crate::response::gate::review::MAX_REVIEW_BYTES;

/// Every request is answered within this (kube-apiserver's webhook
/// timeout is at most 30 s, and ours is set to 5 s in packaging).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 512;

/// How long a client may take for its TLS handshake and its headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's TLS: the collector's reloading configuration, and
/// whether a client must present a CLI certificate of the client CA.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ReloadingConfig>,
    pub client_cert: bool,
}

/// Whether a verified client certificate chain holds a CLI identity
/// (`urn:patchgap:cli:NAME`): an agent's key sits on every host, so an
/// agent certificate is not enough to speak for kube-apiserver.
fn cli_certificate(certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> bool {
    certs
        .and_then(|c| c.first())
        .and_then(|c| crate::tls::peer_identity(c))
        .is_some_and(|p| matches!(p.role, crate::tls::Role::Cli(_)))
}

/// What handlers share: the write path (for the incident log), the policy
/// in force and the audit log.
#[derive(Clone)]
pub struct Http {
    pub ingest: Arc<Ingest>,
    pub policy: SharedPolicy,
    pub audit: Arc<AuditLog>,
    /// The open incidents' gate facts between requests.
    pub gate: Arc<crate::response::gate::facts::Cache>,
    /// The response report's incident folds, shared with the API.
    pub ledger: Arc<crate::response::verify::report::Ledger>,
    /// The agents streaming now (`/metrics`' agents connected).
    pub connected: crate::api::Connected,
    /// When a host counts as stale (`/metrics`).
    pub fresh_after: Duration,
    /// The store's directory (`/metrics`' store size).
    pub data_dir: std::path::PathBuf,
}

/// The client's address, for logs and the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The routes. One line per route.
pub fn router(state: Http) -> Router {
    Router::new()
        .route("/v1/admission", post(admission::review))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/webhooks/confirm", post(confirm::confirm))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(within_timeout))
        .with_state(state)
}

/// 503 when a handler takes longer than [`REQUEST_TIMEOUT`]: for the
/// webhook, kube-apiserver then applies its failurePolicy at once instead
/// of waiting out its own timeout.
async fn within_timeout(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            warn!(
                path,
                timeout_ms = REQUEST_TIMEOUT.as_millis() as u64,
                "HTTP request timed out"
            );
            (StatusCode::SERVICE_UNAVAILABLE, "timed out\n").into_response()
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes: TLS with the
/// collector's certificate when `tls` is given, else plaintext (the caller
/// checked that the address is loopback, see `check_listen`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
) {
    let addr = listener.local_addr().ok();
    info!(
        addr = ?addr,
        tls = tls.is_some(),
        "HTTP listener (admission webhook) listening"
    );
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and the like: back off, do not spin.
                    warn!(%error, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = router.clone().layer(Extension(Peer(peer)));
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = TowerToHyperService::new(service);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            let served = match tls {
                None => builder.serve_connection(TokioIo::new(tcp), service).await,
                Some(tls) => {
                    // The gRPC configuration offers h2 only; webhooks
                    // speak HTTP/1.1 too.
                    let mut c = (*tls.config.current()).clone();
                    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(c));
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            if tls.client_cert
                                && !cli_certificate(stream.get_ref().1.peer_certificates())
                            {
                                info!(%peer, "HTTP client refused: --http-client-cert needs a CLI certificate of the client CA");
                                return;
                            }
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        Ok(Err(error)) => {
                            debug!(%error, %peer, "HTTP TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(%peer, "HTTP TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(error) = served {
                debug!(%error, %peer, "HTTP connection ended with an error");
            }
        });
    }
}
