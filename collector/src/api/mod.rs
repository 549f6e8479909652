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
mod changes;
mod deliveries;
mod egress;
mod fleet;
mod gate;
mod incidents;
mod ingest;
mod packages;
pub mod paging;
mod query;
mod sboms;
mod security;
mod verify;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tonic::Status;
use tracing::warn;

pub use ingest::{IngestService, IngestTls, MAX_WAITING_MESSAGES};
pub use query::QueryService;

use crate::store::{Store, StoreError};

/// The store every service shares: `&self` methods, safe to call from
/// many tasks at once.
pub type SharedStore = Arc<dyn Store>;

/// The agents with a stream open right now, by host key (machine-id, else
/// host name), and the identities two agents fought over.
pub type Connected = Arc<Mutex<Streams>>;

/// One open agent stream.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Tells this stream from a later one of the same host key.
    pub stream: u64,
    pub session: String,
    pub peer: String,
    pub hostname: String,
    /// When its client certificate expires (ms since the epoch; 0 without TLS).
    pub not_after_ms: i64,
}

/// Two agents claiming one host identity (issue 14: they superseded each
/// other five times in six seconds). A Hello may supersede the live
/// stream of its host once (an agent restarted: a new session); a Hello
/// of a session that was superseded, while the session that superseded it
/// is still streaming, is a second agent with the same machine-id: it is
/// refused, and the host is flagged with a `conflict` naming both, until
/// [`CONFLICT_TTL_MS`] after the last refusal.
#[derive(Debug, Default)]
pub struct Streams {
    pub live: HashMap<String, Live>,
    /// Sessions superseded by a later Hello, per host key, with when.
    superseded: HashMap<String, Vec<(String, i64)>>,
    /// Per host key: what the conflict is, and the last refusal.
    conflicts: HashMap<String, (String, i64)>,
    next_stream: u64,
}

/// How long a host stays flagged after the last refused Hello.
pub const CONFLICT_TTL_MS: i64 = 10 * 60 * 1000;
/// How long a superseded session is remembered.
const SUPERSEDED_TTL_MS: i64 = 60 * 60 * 1000;
/// Superseded sessions remembered per host key.
const SUPERSEDED_KEPT: usize = 16;

impl Streams {
    /// Before registering a Hello of `session` for `key`: `Err(conflict)`
    /// when it must be refused (see [`Streams`]).
    pub fn admit(
        &mut self,
        key: &str,
        session: &str,
        peer: &str,
        hostname: &str,
        now_ms: i64,
    ) -> Result<(), String> {
        let Some(live) = self.live.get(key).filter(|l| l.session != session) else {
            return Ok(());
        };
        let list = self.superseded.entry(key.to_string()).or_default();
        list.retain(|(_, at)| now_ms - at < SUPERSEDED_TTL_MS);
        if list.iter().any(|(s, _)| s == session) {
            let text = format!(
                "two agents claim host id {key:?}: a stream from {peer} (host name {hostname:?}, session {session}) was refused while the stream from {} (host name {:?}, session {}) is live; give each host its own /etc/machine-id",
                live.peer, live.hostname, live.session
            );
            self.conflicts
                .insert(key.to_string(), (text.clone(), now_ms));
            return Err(text);
        }
        Ok(())
    }

    /// Registers an open stream; its id, for [`Streams::close`]. A live
    /// stream of another session that it replaces is remembered as
    /// superseded.
    pub fn open(&mut self, key: &str, mut live: Live, now_ms: i64) -> u64 {
        self.next_stream += 1;
        live.stream = self.next_stream;
        if let Some(old) = self.live.insert(key.to_string(), live)
            && old.session != self.live[key].session
        {
            let list = self.superseded.entry(key.to_string()).or_default();
            list.push((old.session, now_ms));
            if list.len() > SUPERSEDED_KEPT {
                list.remove(0);
            }
        }
        self.next_stream
    }

    /// Forgets a stream that ended, unless a later one of its host holds
    /// the key now.
    pub fn close(&mut self, key: &str, stream: u64) {
        if self.live.get(key).is_some_and(|l| l.stream == stream) {
            self.live.remove(key);
        }
    }

    /// The host keys with a live stream, and their certificates' expiry.
    pub fn expiries(&self) -> HashMap<String, i64> {
        self.live
            .iter()
            .map(|(k, l)| (k.clone(), l.not_after_ms))
            .collect()
    }

    /// The conflict flagged on `key`, while it lasts.
    pub fn conflict(&self, key: &str, now_ms: i64) -> Option<&str> {
        self.conflicts
            .get(key)
            .filter(|(_, at)| now_ms - at < CONFLICT_TTL_MS)
            .map(|(t, _)| t.as_str())
    }
}

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
