//! The Ingest service: one bidirectional stream per agent. The first
//! message must be a Hello; every later one is stored durably (and its new
//! packages matched) before it is acked, so an ack never lies.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use patchgap_proto::{
    time::now_ms,
    v1::{self, agent_message::Body, collector_message, ingest_server::Ingest as IngestApi},
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use super::{Connected, blocking, refused};
use crate::{
    fleet::{bounds, coverage, ingest::Ingest},
    response::contain::Hub,
    tls::{Role, peer_identity},
};

/// Agent messages decoded and waiting to be stored, at most, by default.
/// Ten thousand agents sending first snapshots at once held every decoded
/// snapshot in memory while they queued for the writer (14.6 GB, and
/// rising, at 129 s of the fleet bench); past this bound a message is
/// refused instead, and the agent resends it from its spool. 64 keeps the
/// writer busy on either backend (it stores one message at a time per
/// connection) at a few hundred MB of typical snapshots.
pub const MAX_WAITING_MESSAGES: usize = 64;

/// Messages refused for [`MAX_WAITING_MESSAGES`] since start, for the log.
static REFUSED_BUSY: AtomicU64 = AtomicU64::new(0);

/// Whether streams must come with an agent certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestTls {
    /// Plaintext (loopback, or `--insecure-plaintext`): a Hello is believed.
    Off,
    /// mTLS: each stream is bound to the host its client certificate names.
    Required,
}

#[derive(Clone)]
pub struct IngestService {
    ingest: Arc<Ingest>,
    /// Set when the collector shuts down: open streams end, so the server's
    /// graceful shutdown does not wait forever on agents that never hang up.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Hosts with a stream open right now.
    connected: Connected,
    tls: IngestTls,
    /// Where refused streams are recorded.
    audit: Arc<crate::audit::AuditLog>,
    /// The desired containments each stream sends its agent, and where
    /// their reports go.
    hub: Arc<Hub>,
    /// Permits for messages decoded and waiting to be stored (see
    /// [`MAX_WAITING_MESSAGES`]).
    waiting: Arc<tokio::sync::Semaphore>,
    max_waiting: usize,
    /// Heartbeats wait here instead, to be written together.
    beats: Arc<crate::fleet::beats::Beats>,
}

impl IngestService {
    pub fn new(
        ingest: Arc<Ingest>,
        connected: Connected,
        stopping: tokio::sync::watch::Receiver<bool>,
        tls: IngestTls,
        audit: Arc<crate::audit::AuditLog>,
        hub: Arc<Hub>,
        max_waiting: usize,
    ) -> Self {
        IngestService {
            connected,
            stopping,
            tls,
            audit,
            hub,
            waiting: Arc::new(tokio::sync::Semaphore::new(max_waiting)),
            max_waiting,
            beats: Arc::new(crate::fleet::beats::Beats::start(ingest.clone())),
            ingest,
        }
    }
}

type CollectorStream = Pin<Box<dyn Stream<Item = Result<v1::CollectorMessage, Status>> + Send>>;

/// Removes the stream from the connected set when its task ends, however
/// it ends (unless a later stream of its host holds the key).
struct ConnectedGuard(Connected, String, u64);

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close(&self.1, self.2);
    }
}

#[tonic::async_trait]
impl IngestApi for IngestService {
    type StreamStream = CollectorStream;

    async fn stream(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<CollectorStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // Under mTLS, who the stream may speak for comes from its client
        // certificate (already verified against the client CA by the
        // handshake), never from what it says.
        let mut cert_host = None;
        let mut cert_not_after_ms = 0;
        let mut subject = String::new();
        if self.tls == IngestTls::Required {
            let identity = request
                .peer_certs()
                .and_then(|certs| certs.first().and_then(|c| peer_identity(c)));
            let Some(identity) = identity else {
                refused(
                    &self.audit,
                    &peer,
                    "",
                    "Ingest/Stream",
                    "no client certificate",
                );
                return Err(Status::unauthenticated(
                    "ingest needs an agent certificate (patchgap pki issue agent)",
                ));
            };
            subject = identity.subject.clone();
            match identity.role {
                Role::Agent(host) => cert_host = Some(host),
                _ => {
                    let reason = "only an agent certificate can ingest";
                    refused(&self.audit, &peer, &subject, "Ingest/Stream", reason);
                    return Err(Status::permission_denied(reason));
                }
            }
            cert_not_after_ms = identity.not_after_ms;
        }
        let mut inbound = request.into_inner();
        // The first message must be a Hello; answer it before returning the
        // response stream, so a bad opener is a plain error status.
        let mut hello = match inbound.message().await {
            Ok(Some(v1::AgentMessage {
                body: Some(Body::Hello(h)),
                ..
            })) => h,
            Ok(Some(_)) => {
                return Err(Status::invalid_argument(
                    "the first message of a stream must be a Hello",
                ));
            }
            Ok(None) => {
                return Err(Status::cancelled(
                    "the agent closed the stream before its Hello",
                ));
            }
            Err(status) => return Err(inbound_error(status)),
        };
        // Every field within its bound before anything is stored.
        let cut = bounds::hello(&mut hello);
        if cut.0 > 0 {
            warn!(%peer, fields = cut.0, "cut the Hello's fields that were over their length bounds");
        }
        // No room for another message: the stream is refused at its Hello,
        // before anything is stored or audited, and the agent comes back in
        // its slot. Refused after its Hello, a stream cost a stored Hello
        // and an audit entry: 10,000 agents starting at once were refused
        // 10,600 times in their first 32 s, and stored 170 snapshots.
        if self.waiting.available_permits() == 0 {
            let (refused, retry_ms, status) = refuse_busy(&self.ingest, self.max_waiting);
            if refused.is_power_of_two() {
                warn!(%peer, refused, retry_ms, "refused an agent's stream at its Hello: the collector is busy storing other agents' messages (the agent comes back)");
            }
            return Err(status);
        }
        // Two agents with one machine-id: the one that comes back after it
        // was superseded, while the other streams, is refused and the host
        // flagged, so they do not take the host from each other forever.
        {
            let id = hello.host.clone().unwrap_or_default();
            let admitted = self
                .connected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .admit(
                    coverage::host_key(&id),
                    &hello.session_id,
                    &peer,
                    &id.hostname,
                    now_ms(),
                );
            if let Err(conflict) = admitted {
                refused(&self.audit, &peer, &subject, "Ingest/Stream", &conflict);
                return Err(Status::already_exists(conflict));
            }
        }
        let hello_copy = hello.clone();
        let ingest = self.ingest.clone();
        let session = match cert_host {
            None => blocking(move || ingest.hello(&hello_copy, now_ms())).await?,
            Some(cert_host) => {
                match blocking(move || ingest.hello_bound(&hello_copy, &cert_host, now_ms()))
                    .await?
                {
                    Ok(session) => session,
                    Err(reason) => {
                        refused(&self.audit, &peer, &subject, "Ingest/Stream", &reason);
                        return Err(Status::permission_denied(format!(
                            "this agent may not speak for that host: {reason}"
                        )));
                    }
                }
            }
        };
        let host_name = hello
            .host
            .as_ref()
            .map(|h| h.hostname.clone())
            .unwrap_or_default();
        // The same key the store uses: the machine-id, else the hostname.
        let host_key = hello
            .host
            .as_ref()
            .map(|h| coverage::host_key(h).to_string())
            .unwrap_or_default();
        // Live from the moment its Hello is stored: a listing that shows
        // the host shows it connected, with its certificate's expiry.
        let stream = self
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open(
                &host_key,
                super::Live {
                    stream: 0,
                    session: hello.session_id.clone(),
                    peer: peer.clone(),
                    hostname: host_name.clone(),
                    not_after_ms: cert_not_after_ms,
                },
                now_ms(),
            );
        let guard = ConnectedGuard(self.connected.clone(), host_key.clone(), stream);
        info!(host = %host_name, %peer, session = %hello.session_id, resume_after = session.acked_seq, new = session.new, "agent connected");
        // An agent's stream writes the runtime truth: each one it opens is
        // in the audit log (its messages are not, one by one).
        super::audited(
            &self.audit,
            crate::audit::Event {
                subject: if subject.is_empty() {
                    "anonymous".into()
                } else {
                    subject.clone()
                },
                scopes: String::new(),
                peer: peer.clone(),
                method: "Ingest/Stream".into(),
                args: format!(
                    "host={host_name} host_key={host_key} session={}",
                    hello.session_id
                ),
                result: format!(
                    "ok: stream open, resume after {}{}",
                    session.acked_seq,
                    if session.new { ", new session" } else { "" }
                ),
            },
        );

        let (tx, rx) = mpsc::channel(64);
        let welcome = v1::Welcome {
            acked_seq: session.acked_seq,
            resync: session.new,
            artifact_refs: true,
        };
        tx.send(Ok(v1::CollectorMessage {
            body: Some(collector_message::Body::Welcome(welcome)),
        }))
        .await
        .map_err(|_| Status::cancelled("agent went away"))?;
        // Then the containments this host must have in force, whole: the
        // agent lifts whatever the set does not name.
        let mut desired = self.hub.subscribe();
        let mut sent = containments(&desired.borrow_and_update(), &host_key);
        tx.send(Ok(command(sent.clone())))
            .await
            .map_err(|_| Status::cancelled("agent went away"))?;

        let ingest = self.ingest.clone();
        let hub = self.hub.clone();
        let waiting = self.waiting.clone();
        let max_waiting = self.max_waiting;
        let beats = self.beats.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let _guard = guard;
            loop {
                let woke = tokio::select! {
                    next = inbound.message() => Woke::Message(Box::new(next)),
                    _ = stopping.wait_for(|s| *s) => break,
                    changed = desired.changed() => match changed {
                        Ok(()) => Woke::SetChanged,
                        Err(_) => break,
                    },
                };
                let next = match woke {
                    Woke::Message(next) => *next,
                    // Every generation goes to every agent, changed for it
                    // or not: a revert is seen when the host reports a
                    // generation at least as new as the set that lifted it.
                    Woke::SetChanged => {
                        let now = containments(&desired.borrow_and_update(), &host_key);
                        if now != sent {
                            sent = now;
                            if tx.send(Ok(command(sent.clone()))).await.is_err() {
                                break;
                            }
                        }
                        continue;
                    }
                };
                let msg = match next {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => {
                        let status = inbound_error(status);
                        warn!(host = %host_name, code = ?status.code(), message = status.message(), "rejected agent message");
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                if let Some(Body::Heartbeat(beat)) = &msg.body {
                    hub.report(
                        &host_key,
                        beat.containments_generation,
                        beat.containments.clone(),
                        now_ms(),
                    );
                }
                let seq = msg.seq;
                if seq == 0 || matches!(msg.body, Some(Body::Hello(_)) | None) {
                    let _ = tx
                        .send(Err(Status::invalid_argument(
                            "after the Hello, every message needs a body and a sequence number above 0",
                        )))
                        .await;
                    break;
                }
                if let Err(why) = msg.check_artifact_refs() {
                    let _ = tx
                        .send(Err(Status::invalid_argument(format!(
                            "malformed agent message {seq}: {why}"
                        ))))
                        .await;
                    break;
                }
                let applied = if matches!(msg.body, Some(Body::Heartbeat(_))) {
                    // Heartbeats queue for the heartbeat writer, which
                    // writes them together (`fleet::beats`), with a bound
                    // of their own.
                    let mut msg = msg;
                    let cut = bounds::message(&mut msg);
                    if cut.0 > 0 {
                        warn!(host = %host_name, seq, fields = cut.0, "cut fields over their length bounds");
                    }
                    match beats.submit(session, msg) {
                        Ok(written) => match written.await {
                            Ok(result) => result.map_err(super::to_status),
                            Err(_) => Err(Status::internal("the heartbeat writer stopped")),
                        },
                        Err(_full) => {
                            let (refused, retry_ms, status) =
                                refuse_busy(&ingest, crate::fleet::beats::Beats::WAITING);
                            if refused.is_power_of_two() {
                                warn!(host = %host_name, seq, refused, retry_ms, "refused an agent heartbeat: the collector is busy storing other agents' heartbeats (the agent resends it)");
                            }
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    }
                } else {
                    // A bounded number of messages wait for the writer; past it
                    // the agent keeps this one and sends it again later.
                    let Ok(permit) = waiting.clone().try_acquire_owned() else {
                        let busy = max_waiting - waiting.available_permits();
                        let (refused, retry_ms, status) = refuse_busy(&ingest, busy);
                        if refused.is_power_of_two() {
                            warn!(host = %host_name, seq, refused, retry_ms, "refused an agent message: the collector is busy storing other agents' messages (the agent resends it)");
                        }
                        let _ = tx.send(Err(status)).await;
                        break;
                    };
                    // Stored, then its new packages matched, before the ack
                    // (the ack does not wait on a failed pass; see `Ingest`).
                    let ingest = ingest.clone();
                    let host = host_name.clone();
                    blocking(move || {
                    let _permit = permit;
                    let mut msg = msg;
                    let cut = bounds::message(&mut msg);
                    if cut.0 > 0 {
                        warn!(%host, seq, fields = cut.0, "cut fields over their length bounds");
                    }
                    ingest.apply(&session, &msg, now_ms())
                })
                .await
                };
                match applied {
                    // Committed: only now may the agent forget it.
                    Ok(()) => {
                        let ack = v1::CollectorMessage {
                            body: Some(collector_message::Body::Ack(v1::Ack { seq })),
                        };
                        if tx.send(Ok(ack)).await.is_err() {
                            break;
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
            info!(host = %host_name, "agent stream ended");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A refusal for want of room, with `busy` messages ahead: counted, and
/// given its own slot to come back in (refused agents return spread out at
/// the rate messages are stored). The refusals so far and the retry time
/// (for the log), and the status carrying it.
fn refuse_busy(ingest: &Ingest, busy: usize) -> (u64, i64, Status) {
    let refused = REFUSED_BUSY.fetch_add(1, Ordering::Relaxed) + 1;
    let retry_ms = ingest.pacer().pushback(now_ms(), busy);
    (refused, retry_ms, busy_status(retry_ms))
}

/// The refusal of a message for want of room, with when to send it again
/// (gRPC's retry pushback, in ms).
fn busy_status(retry_ms: i64) -> Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Ok(value) = retry_ms.to_string().parse() {
        metadata.insert(crate::fleet::pacing::PUSHBACK_KEY, value);
    }
    Status::with_metadata(
        tonic::Code::Unavailable,
        format!(
            "the collector is busy storing other agents' messages: send it again in {retry_ms} ms"
        ),
        metadata,
    )
}

/// What woke a stream's task.
enum Woke {
    Message(Box<Result<Option<v1::AgentMessage>, Status>>),
    SetChanged,
}

/// One host's desired containments.
fn containments(d: &crate::response::contain::Desired, host_key: &str) -> v1::Containments {
    d.for_host(host_key)
}

fn command(set: v1::Containments) -> v1::CollectorMessage {
    v1::CollectorMessage {
        body: Some(collector_message::Body::Command(v1::Command {
            body: Some(v1::command::Body::Containments(set)),
        })),
    }
}

/// An error while reading the agent's stream: tonic reports a message over
/// the size limit as OutOfRange/ResourceExhausted and undecodable bytes as
/// Internal. Both are the agent's fault, so say so plainly.
fn inbound_error(status: Status) -> Status {
    match status.code() {
        tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => {
            Status::resource_exhausted(format!("agent message rejected: {}", status.message()))
        }
        tonic::Code::Internal | tonic::Code::InvalidArgument | tonic::Code::DataLoss => {
            Status::invalid_argument(format!("malformed agent message: {}", status.message()))
        }
        _ => status,
    }
}
