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
pub mod paging;
mod query;
mod sboms;
mod security;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tonic::Status;
use tracing::warn;

pub use ingest::{IngestService, IngestTls};
pub use query::QueryService;

use crate::store::{Store, StoreError};

/// The store every service shares: `&self` methods, safe to call from
/// many tasks at once.
pub type SharedStore = Arc<dyn Store>;

/// The agents with a stream open right now, by host key (machine-id, else
/// host name), with the expiry of the certificate each connected with (ms
/// since the epoch; 0 without TLS).
pub type Connected = Arc<Mutex<HashMap<String, i64>>>;

/// A call refused for who the caller is (its certificate does not allow
/// it). The one place every such refusal goes through: today it logs; the
/// audit log will record it here too.
pub fn refused(
    audit: &Arc<crate::audit::AuditLog>,
    peer: &str,
    subject: &str,
    method: &str,
    reason: &str,
) {
    warn!(peer, subject, method, reason, "refused");
    // A store write: off the async workers, and never in the way of the
    // refusal itself.
    let (audit, peer, subject, method, reason) = (
        audit.clone(),
        peer.to_string(),
        subject.to_string(),
        method.to_string(),
        reason.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        if let Err(e) = crate::audit::record_refusal(&audit, &peer, &subject, &method, &reason) {
            warn!(error = %e, "the refusal could not be audited");
        }
    });
}

/// Appends an event to the audit log off the async workers; a failure is
/// logged, never in the way of the call.
pub fn audited(audit: &Arc<crate::audit::AuditLog>, event: crate::audit::Event) {
    let audit = audit.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = audit.record(event) {
            warn!(error = %e, "an audit entry could not be written");
        }
    });
}

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
