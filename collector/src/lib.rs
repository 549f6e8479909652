//! The patchgap collector: ingests agent streams, stores the runtime truth and
//! answers responders' queries. It is grouped by stage of the response loop:
//!
//! - `api`: the gRPC edge (tonic), the only module that knows it;
//! - `fleet`: the runtime truth as responders read it (workloads, scope);
//! - `advisories`: Detect (OSV, version orders, matching);
//! - `sbom`: image SBOMs (CycloneDX, SPDX) and their records;
//! - `store`: the storage contract, its conformance suite and backends;
//! - `auth`: scoped PASETO tokens and their revocation;
//! - `audit`: the hash-chained, checkpointed audit log.
//!
//! [`run`] serves everything on one listener.

pub mod advisories;
pub mod api;
pub mod audit;
pub mod auth;
pub mod ecosystem;
pub mod fleet;
#[cfg(test)]
pub(crate) mod fuzz;
pub mod sbom;
pub mod store;

use std::{
    collections::HashSet,
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use patchgap_proto::v1::{ingest_server::IngestServer, query_server::QueryServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use api::{IngestService, QueryService, SharedStore};
pub use fleet::{ingest::Ingest, scope::ScopeMap};
pub use store::{Store, sqlite::SqliteStore};

#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// The largest message accepted from an agent or client.
    pub max_message_bytes: usize,
    /// A host is fresh when it reported within this long.
    pub fresh_after: Duration,
    /// The operator's data-scope mapping file (see `scope`), if any.
    pub scope_map: Option<PathBuf>,
    /// Every Query call needs a bearer token with the RPC's scope. Off,
    /// only `admin` calls (tokens, the audit log) need one: the loopback
    /// first look of `patchgap up`.
    pub require_tokens: bool,
    /// Token lifetimes: the default and the longest allowed.
    pub token_policy: auth::TokenPolicy,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            data_dir: PathBuf::from("/var/lib/patchgap"),
            max_message_bytes: 16 << 20,
            fresh_after: Duration::from_secs(90),
            scope_map: None,
            require_tokens: false,
            token_policy: auth::TokenPolicy::default(),
        }
    }
}

/// Opens the store and serves Ingest, Query and reflection on `listener`
/// until `shutdown` completes.
pub async fn run(
    config: CollectorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = SqliteStore::open(&config.data_dir).map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "opening the store in {}",
            config.data_dir.display()
        ))
    })?;
    serve(config, Arc::new(store), listener, shutdown).await
}

/// Serves with a store the caller opened (tests use this to share one).
pub async fn serve(
    config: CollectorConfig,
    store: SharedStore,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // The signing key lives beside the database (0600, in the 0700 data
    // directory); the audit log and the tokens share it.
    let tokens = {
        let (dir, policy, store) = (config.data_dir.clone(), config.token_policy, store.clone());
        tokio::task::spawn_blocking(move || auth::Tokens::open(&dir, policy, store.as_ref()))
            .await?
            .map_err(|e| anyhow::Error::new(e).context("loading the token signing key"))?
    };
    let key = tokens.key();
    let audit = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            audit::AuditLog::open(store, key, audit::CheckpointPolicy::default())
        })
        .await?
        .map_err(|e| anyhow::Error::new(e).context("opening the audit log"))?
    };
    let (tokens, audit) = (Arc::new(tokens), Arc::new(audit));
    let ingest = Arc::new(Ingest::new(store));
    // Packages stored but not matched yet (a crash between an ingest and
    // its matching pass, or a database from before schema 8).
    {
        let ingest = ingest.clone();
        tokio::task::spawn_blocking(move || ingest.match_unmatched())
            .await?
            .map_err(|e| anyhow::Error::new(e).context("matching stored packages"))?;
    }
    let connected = Arc::new(Mutex::new(HashSet::new()));
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        // End the agents' streams; they reconnect to whoever serves next.
        let _ = stopping_tx.send(true);
    };
    let ingest_api = IngestServer::new(IngestService::new(
        ingest.clone(),
        connected.clone(),
        stopping,
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);
    // A mapping file that does not load stops the collector at start; later
    // reloads keep the previous mapping instead.
    let scope = match &config.scope_map {
        Some(path) => ScopeMap::load(path).map_err(|e| anyhow::anyhow!("scope mapping: {e}"))?,
        None => ScopeMap::default(),
    };
    let query = QueryServer::new(QueryService::new(
        ingest,
        connected,
        config.fresh_after,
        scope,
        tokens.clone(),
        audit.clone(),
    ))
    // An SBOM push carries a whole document: room for the largest the
    // parser accepts, so it (not the transport) says what is wrong.
    .max_decoding_message_size(
        config
            .max_message_bytes
            .max(sbom::MAX_INPUT_BYTES + (1 << 20)),
    )
    .max_encoding_message_size(64 << 20);
    // Every Query call passes the token check first (the agents' Ingest
    // stream is authenticated by its client certificate instead).
    let query = api::auth::Authorized::new(
        query,
        Arc::new(api::auth::Guard {
            tokens,
            audit: audit.clone(),
            require_tokens: config.require_tokens,
        }),
    );
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(ingest_api)
        .add_service(query)
        .add_service(patchgap_proto::reflection::v1())
        .add_service(patchgap_proto::reflection::v1alpha())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    // Seal what was logged since the last checkpoint.
    tokio::task::spawn_blocking(move || audit.checkpoint_now())
        .await?
        .map_err(|e| anyhow::Error::new(e).context("signing the last audit checkpoint"))?;
    Ok(())
}
