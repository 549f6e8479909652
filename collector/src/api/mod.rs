//! The gRPC edge: the Ingest stream from agents and the Query API for
//! responders. This is the only module that knows tonic, and the one place
//! where errors become `tonic::Status`; SQL text and causes are logged,
//! never sent.
//!
//! One file per service area. Each parses its request into a plain type
//! that unit tests build without a server (`TryFrom<Request>`, the
//! mini-redis `cmd/get.rs` shape), then calls the domain (`fleet`,
//! `advisories`, `sbom`).
//!
//! **Invariant:** nothing below `api` knows tonic or `Status`.

mod advisories;
pub mod auth;
mod fleet;
mod ingest;
mod packages;
mod query;
mod sboms;
mod security;

use std::sync::Arc;

use tonic::Status;
use tracing::warn;

pub use ingest::IngestService;
pub use query::QueryService;

use crate::store::{Store, StoreError};

/// The store every service shares: `&self` methods, safe to call from
/// many tasks at once.
pub type SharedStore = Arc<dyn Store>;

/// Runs blocking domain work (the store, the matcher) off the async
/// workers, and maps its error at the edge.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Status::internal("store task failed"))?
        .map_err(to_status)
}

/// The one mapping of store errors to statuses.
fn to_status(e: StoreError) -> Status {
    match e {
        StoreError::Invalid(msg) => Status::invalid_argument(msg),
        StoreError::Superseded => Status::failed_precondition(StoreError::Superseded.to_string()),
        other => {
            // Log the cause chain here; the client gets a plain message.
            warn!(error = %other.chain(), "store error");
            Status::internal("the collector's store failed; see the collector log")
        }
    }
}

/// A request field that does not parse: the client's mistake, said plainly.
fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}
