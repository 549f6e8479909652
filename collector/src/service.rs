//! The gRPC edge: the Ingest stream from agents and the Query API for
//! responders. This is the one place where store errors become
//! `tonic::Status`; SQL text never reaches a client.

use std::{
    collections::{HashMap, HashSet},
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use patchgap_proto::v1::{
    self, agent_message::Body, collector_message, ingest_server::Ingest, query_server::Query,
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::{
    scope::ScopeMap,
    store::{FindingsQuery, MatchScope, PackageQuery, PutOutcome, Store, StoreError},
    version::{Constraint, Ecosystem, parse_query},
    workloads,
};

pub type SharedStore = Arc<Mutex<Box<dyn Store>>>;

use patchgap_proto::time::now_ms;

/// Runs a store call off the async workers.
async fn with_store<T: Send + 'static>(
    store: &SharedStore,
    f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = store.lock().unwrap_or_else(|e| e.into_inner());
        f(guard.as_mut())
    })
    .await
    .map_err(|_| Status::internal("store task failed"))?
    .map_err(to_status)
}

fn to_status(e: StoreError) -> Status {
    match e {
        StoreError::Invalid(msg) => Status::invalid_argument(msg),
        StoreError::Superseded => Status::failed_precondition(StoreError::Superseded.to_string()),
        other => {
            // Log the cause chain here; the client gets a plain message.
            let mut chain = other.to_string();
            let mut src = std::error::Error::source(&other);
            while let Some(s) = src {
                chain.push_str(&format!(": {s}"));
                src = s.source();
            }
            warn!(error = %chain, "store error");
            Status::internal("the collector's store failed; see the collector log")
        }
    }
}

#[derive(Clone)]
pub struct IngestService {
    store: SharedStore,
    /// Set when the collector shuts down: open streams end, so the server's
    /// graceful shutdown does not wait forever on agents that never hang up.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Hosts with a stream open right now.
    connected: Arc<Mutex<HashSet<String>>>,
}

impl IngestService {
    pub fn new(
        store: SharedStore,
        connected: Arc<Mutex<HashSet<String>>>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        IngestService {
            store,
            connected,
            stopping,
        }
    }
}

type CollectorStream = Pin<Box<dyn Stream<Item = Result<v1::CollectorMessage, Status>> + Send>>;

/// Removes the host from the connected set when the stream task ends, however
/// it ends.
struct ConnectedGuard(Arc<Mutex<HashSet<String>>>, String);

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = CollectorStream;

    async fn stream(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<CollectorStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        // The first message must be a Hello; answer it before returning the
        // response stream, so a bad opener is a plain error status.
        let hello = match inbound.message().await {
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
        let hello_copy = hello.clone();
        let session = with_store(&self.store, move |s| s.hello(&hello_copy, now_ms())).await?;
        let host_name = hello
            .host
            .as_ref()
            .map(|h| h.hostname.clone())
            .unwrap_or_default();
        // The same key the store uses: the machine-id, else the hostname.
        let host_key = hello
            .host
            .as_ref()
            .map(|h| {
                if h.host_id.is_empty() {
                    h.hostname.clone()
                } else {
                    h.host_id.clone()
                }
            })
            .unwrap_or_default();
        info!(host = %host_name, %peer, session = %hello.session_id, resume_after = session.acked_seq, new = session.new, "agent connected");

        let (tx, rx) = mpsc::channel(64);
        let welcome = v1::Welcome {
            acked_seq: session.acked_seq,
            resync: session.new,
        };
        tx.send(Ok(v1::CollectorMessage {
            body: Some(collector_message::Body::Welcome(welcome)),
        }))
        .await
        .map_err(|_| Status::cancelled("agent went away"))?;

        let store = self.store.clone();
        let mut stopping = self.stopping.clone();
        self.connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host_key.clone());
        let guard = ConnectedGuard(self.connected.clone(), host_key);
        tokio::spawn(async move {
            let _guard = guard;
            loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    _ = stopping.wait_for(|s| *s) => break,
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
                let seq = msg.seq;
                if seq == 0 || matches!(msg.body, Some(Body::Hello(_)) | None) {
                    let _ = tx
                        .send(Err(Status::invalid_argument(
                            "after the Hello, every message needs a body and a sequence number above 0",
                        )))
                        .await;
                    break;
                }
                let applied = with_store(&store, move |s| {
                    s.apply(&session, &msg, now_ms())?;
                    // New packages against the stored advisories, before
                    // the ack (one indexed query when nothing is new). The
                    // ack does not depend on it: a failed pass leaves them
                    // unmatched, and the next message's pass retries.
                    if let Err(e) = crate::matching::refresh(s, &MatchScope::Unmatched) {
                        warn!(error = %e, "matching new packages failed; will retry");
                    }
                    Ok(())
                })
                .await;
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

#[derive(Clone)]
pub struct QueryService {
    store: SharedStore,
    connected: Arc<Mutex<HashSet<String>>>,
    /// A host is fresh when it reported within this long.
    fresh_after: Duration,
    /// The operator's data-scope mapping, reloaded when its file changes.
    scope: Arc<Mutex<ScopeMap>>,
}

impl QueryService {
    pub fn new(
        store: SharedStore,
        connected: Arc<Mutex<HashSet<String>>>,
        fresh_after: Duration,
        scope: ScopeMap,
    ) -> Self {
        QueryService {
            store,
            connected,
            fresh_after,
            scope: Arc::new(Mutex::new(scope)),
        }
    }

    /// Fleet workloads with the mapping in force, keyed by (host id,
    /// instance id), plus the mapping's load error if the last reload failed.
    async fn workloads(
        &self,
    ) -> Result<
        (
            Vec<v1::WorkloadSummary>,
            HashMap<(String, String), usize>,
            String,
        ),
        Status,
    > {
        let rows = with_store(&self.store, |s| s.workloads()).await?;
        let (rules, error) = {
            let mut scope = self.scope.lock().unwrap_or_else(|e| e.into_inner());
            scope.refresh();
            (
                scope.rules().to_vec(),
                scope.error().unwrap_or_default().to_string(),
            )
        };
        let summaries = workloads::summarize(&rows, &rules);
        let index: HashMap<&str, usize> = summaries
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.as_str(), i))
            .collect();
        let by_instance = rows
            .iter()
            .map(|r| {
                (
                    (r.host_id.clone(), r.workload.id.clone()),
                    index[workloads::key(r).as_str()],
                )
            })
            .collect();
        Ok((summaries, by_instance, error))
    }

    async fn hosts(&self) -> Result<(v1::Coverage, Vec<v1::HostSummary>), Status> {
        let rows = with_store(&self.store, |s| s.hosts()).await?;
        let now = now_ms();
        let connected = self
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut coverage = v1::Coverage {
            generated_at_ms: now,
            ..Default::default()
        };
        let hosts: Vec<v1::HostSummary> = rows
            .into_iter()
            .map(|h| {
                let fresh = now - h.last_seen_ms <= self.fresh_after.as_millis() as i64
                    && h.last_full_scan_ms > 0;
                coverage.hosts_total += 1;
                if fresh {
                    coverage.hosts_fresh += 1;
                    let scanned = h.last_scan.scanned_at_ms.max(h.last_full_scan_ms);
                    if coverage.oldest_scan_ms == 0 || scanned < coverage.oldest_scan_ms {
                        coverage.oldest_scan_ms = scanned;
                    }
                } else {
                    coverage.hosts_stale += 1;
                }
                if !h.capabilities.ebpf {
                    coverage.hosts_scan_only += 1;
                }
                coverage.hosts.push(v1::HostCoverage {
                    host: h.identity.hostname.clone(),
                    fresh,
                    ebpf: h.capabilities.ebpf,
                    ebpf_reason: h.capabilities.ebpf_reason.clone(),
                    events_lost: h.sense.lost_kernel + h.sense.lost_user + h.sense.dropped,
                });
                v1::HostSummary {
                    connected: connected.contains(if h.identity.host_id.is_empty() {
                        &h.identity.hostname
                    } else {
                        &h.identity.host_id
                    }),
                    identity: Some(h.identity),
                    agent_version: h.agent_version,
                    capabilities: Some(h.capabilities),
                    last_seen_ms: h.last_seen_ms,
                    last_full_scan_ms: h.last_full_scan_ms,
                    fresh,
                    processes_running: h.processes_running,
                    last_scan: Some(h.last_scan),
                }
            })
            .collect();
        Ok((coverage, hosts))
    }
}

/// The ecosystems `FindPackage` filters on: purl types.
pub const ECOSYSTEMS: &[&str] = &[
    "deb", "rpm", "apk", "pypi", "npm", "maven", "golang", "cargo",
];

/// Names each match's fleet workload (its key and summary), keeps those
/// the filter passes, and sorts by workload, host and pid.
fn place_in_workloads(
    matches: &mut Vec<v1::Match>,
    summaries: &[v1::WorkloadSummary],
    by_instance: &std::collections::HashMap<(String, String), usize>,
    filter: &v1::WorkloadFilter,
) {
    matches.retain_mut(|m| {
        let detail = by_instance
            .get(&(m.host_id.clone(), m.workload.clone()))
            .map(|&i| &summaries[i]);
        if let Some(d) = detail {
            m.workload = d.key.clone();
            m.workload_detail = Some(d.clone());
        }
        let empty = v1::WorkloadSummary::default();
        workloads::passes(detail.unwrap_or(&empty), filter)
    });
    matches.sort_by(|a, b| {
        (&a.workload, &a.host, a.key.map(|k| k.pid)).cmp(&(
            &b.workload,
            &b.host,
            b.key.map(|k| k.pid),
        ))
    });
}

/// CVSS's qualitative ratings, in order; unknown is below them all.
fn severity_rank(s: &str) -> u8 {
    match s.to_ascii_uppercase().as_str() {
        "LOW" => 1,
        "MEDIUM" | "MODERATE" => 2,
        "HIGH" => 3,
        "CRITICAL" => 4,
        _ => 0,
    }
}

impl QueryService {
    /// The processes that have a package and version an advisory (by id or
    /// alias) affects, from the matcher's stored verdicts: fixed-by-distro
    /// ones included, with their status. Withdrawn advisories expose nothing.
    async fn exposed_to(
        &self,
        id: &str,
        ecosystem: Option<String>,
        window: Option<(i64, i64)>,
    ) -> Result<Vec<v1::Match>, Status> {
        let wanted = id.to_string();
        let found = with_store(&self.store, move |s| s.advisory(&wanted)).await?;
        if found.is_empty() {
            return Err(Status::not_found(format!(
                "no advisory is known as {id}: import it with `patchgap advisories import`"
            )));
        }
        let ids: Vec<String> = found.into_iter().map(|r| r.id).collect();
        let mut matches = with_store(&self.store, move |s| {
            s.findings(&FindingsQuery {
                advisories: Some(ids),
                window,
                include_fixed: true,
            })
        })
        .await?;
        if let Some(e) = ecosystem {
            matches.retain(|m| m.package.as_ref().is_some_and(|p| p.ecosystem == e));
        }
        // One row per process and package, even when several of the
        // advisories (an id and its aliases' records) match it.
        let mut out: Vec<v1::Match> = Vec::new();
        let mut index: HashMap<(String, Option<v1::ProcessKey>, String, String, String), usize> =
            HashMap::new();
        for m in matches {
            let p = m.package.clone().unwrap_or_default();
            match index.entry((m.host_id.clone(), m.key, p.purl, p.name, p.version)) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    let o = &mut out[*e.get()];
                    if o.status != "affected" && m.status == "affected" {
                        *o = m;
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(out.len());
                    out.push(m);
                }
            }
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn find_package(
        &self,
        request: Request<v1::FindPackageRequest>,
    ) -> Result<Response<v1::FindPackageResponse>, Status> {
        let mut req = request.into_inner();
        // A purl names the ecosystem, the package and an exact version.
        let mut source = None;
        if req.name.trim_start().starts_with("pkg:") {
            let purl = patchgap_proto::purl::Purl::parse(req.name.trim())
                .map_err(|e| Status::invalid_argument(format!("bad purl {:?}: {e}", req.name)))?;
            let eco = purl.ty().to_string();
            if !ECOSYSTEMS.contains(&eco.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "purl type {eco:?} is not one patchgap inventories: use one of {}",
                    ECOSYSTEMS.join(", ")
                )));
            }
            if !req.ecosystem.is_empty() && req.ecosystem != eco {
                return Err(Status::invalid_argument(format!(
                    "the purl says {eco}, --ecosystem says {}",
                    req.ecosystem
                )));
            }
            if let Some(v) = purl.version() {
                if !req.constraint.is_empty() {
                    return Err(Status::invalid_argument(
                        "give the version in the purl or as a constraint, not both",
                    ));
                }
                req.constraint = v.to_string();
            }
            req.name = match (eco.as_str(), purl.namespace()) {
                // Their names include the namespace.
                ("npm" | "golang", Some(ns)) => format!("{ns}/{}", purl.name()),
                // The groupId is stored as the source.
                ("maven", Some(ns)) => {
                    source = Some(ns.to_string());
                    purl.name().to_string()
                }
                // deb, rpm, apk: the namespace is the distribution.
                _ => purl.name().to_string(),
            };
            req.ecosystem = eco;
        }
        let advisory = req.advisory.trim().to_string();
        if !advisory.is_empty() && (!req.name.is_empty() || !req.constraint.is_empty()) {
            return Err(Status::invalid_argument(
                "give a package or an advisory, not both",
            ));
        }
        let (query, name, constraint): (String, String, Option<Constraint>) = if advisory.is_empty()
        {
            let spec = if req.constraint.is_empty() {
                req.name.clone()
            } else {
                format!("{}@{}", req.name, req.constraint)
            };
            let (name, constraint) =
                parse_query(&spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let query = match &constraint {
                Some(c) => format!("{name}@{c}"),
                None => name.clone(),
            };
            (query, name, constraint)
        } else {
            (format!("advisory {advisory}"), String::new(), None)
        };
        let filter = req.filter.unwrap_or_default();
        if req.since_ms < 0 || req.until_ms < 0 || (req.until_ms > 0 && req.until_ms < req.since_ms)
        {
            return Err(Status::invalid_argument(
                "the time window needs 0 <= since <= until",
            ));
        }
        let until = if req.until_ms > 0 {
            req.until_ms
        } else {
            i64::MAX
        };
        let window = (req.since_ms > 0 || req.until_ms > 0).then_some((req.since_ms, until));
        let (coverage, _) = self.hosts().await?;
        let (summaries, by_instance, scope_map_error) = self.workloads().await?;
        let ecosystem = match req.ecosystem.trim() {
            "" => None,
            e if ECOSYSTEMS.contains(&e) => Some(e.to_string()),
            e => {
                return Err(Status::invalid_argument(format!(
                    "unknown ecosystem {e:?}: use one of {}",
                    ECOSYSTEMS.join(", ")
                )));
            }
        };
        let evidence = match req.evidence.trim() {
            "" => None,
            e @ ("loaded" | "installed" | "declared") => Some(e.to_string()),
            e => {
                return Err(Status::invalid_argument(format!(
                    "unknown evidence {e:?}: use loaded, installed or declared"
                )));
            }
        };
        let mut matches = if advisory.is_empty() {
            with_store(&self.store, move |s| {
                s.find_package(&PackageQuery {
                    name: &name,
                    ecosystem: ecosystem.as_deref(),
                    source: source.as_deref(),
                    // Each package's version in its own ecosystem's order.
                    version_ok: &|eco, v| {
                        constraint
                            .as_ref()
                            .is_none_or(|c| c.matches_in(v, Ecosystem::from_purl_type(eco)))
                    },
                    window,
                })
            })
            .await?
        } else {
            self.exposed_to(&advisory, ecosystem, window).await?
        };
        if let Some(wanted) = evidence {
            matches.retain(|m| match wanted.as_str() {
                "loaded" => crate::store::evidence_loaded(&m.evidence),
                other => m.evidence == other,
            });
        }
        place_in_workloads(&mut matches, &summaries, &by_instance, &filter);
        Ok(Response::new(v1::FindPackageResponse {
            query,
            coverage: Some(coverage),
            matches,
            scope_map_error,
        }))
    }

    async fn list_workloads(
        &self,
        request: Request<v1::ListWorkloadsRequest>,
    ) -> Result<Response<v1::ListWorkloadsResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let (coverage, _) = self.hosts().await?;
        let (summaries, _, scope_map_error) = self.workloads().await?;
        Ok(Response::new(v1::ListWorkloadsResponse {
            coverage: Some(coverage),
            workloads: summaries
                .into_iter()
                .filter(|s| workloads::passes(s, &filter))
                .collect(),
            scope_map_error,
        }))
    }

    async fn import_advisories(
        &self,
        request: Request<v1::ImportAdvisoriesRequest>,
    ) -> Result<Response<v1::ImportAdvisoriesResponse>, Status> {
        let started = std::time::Instant::now();
        let files = request.into_inner().files;
        // Parsing is CPU work: off the async workers.
        let (records, errors) =
            tokio::task::spawn_blocking(move || crate::advisories::parse_files(&files))
                .await
                .map_err(|_| Status::internal("advisory parsing failed"))?;
        let mut resp = v1::ImportAdvisoriesResponse {
            errors,
            ..Default::default()
        };
        let (records, put, pass) = with_store(&self.store, move |s| {
            let put = s.put_advisories(&records)?;
            // Match what changed (and the advisories that share an alias
            // with it) against every package, now: the import's answer
            // means the findings are complete.
            let changed: Vec<_> = records
                .iter()
                .zip(&put)
                .filter(|(_, o)| matches!(o, PutOutcome::Added | PutOutcome::Updated))
                .map(|(r, _)| r.clone())
                .collect();
            let ids = crate::matching::related(s, &changed)?;
            let pass = crate::matching::refresh(s, &MatchScope::Advisories(ids))?;
            Ok((records, put, pass))
        })
        .await?;
        crate::advisories::count(&mut resp, &records, &put);
        resp.matches = pass.matches as u32;
        resp.time_to_scope_ms = started.elapsed().as_millis() as i64;
        info!(
            added = resp.added,
            updated = resp.updated,
            matches = resp.matches,
            time_to_scope_ms = resp.time_to_scope_ms,
            "advisories imported"
        );
        Ok(Response::new(resp))
    }

    async fn list_advisories(
        &self,
        request: Request<v1::ListAdvisoriesRequest>,
    ) -> Result<Response<v1::ListAdvisoriesResponse>, Status> {
        let eco = request.into_inner().ecosystem;
        if !eco.is_empty() && !ECOSYSTEMS.contains(&eco.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown ecosystem {eco:?}: use one of {}",
                ECOSYSTEMS.join(", ")
            )));
        }
        let list = with_store(&self.store, move |s| {
            s.advisories((!eco.is_empty()).then_some(eco.as_str()))
        })
        .await?;
        Ok(Response::new(v1::ListAdvisoriesResponse {
            advisories: list.iter().map(crate::advisories::summary).collect(),
        }))
    }

    async fn get_advisory(
        &self,
        request: Request<v1::GetAdvisoryRequest>,
    ) -> Result<Response<v1::GetAdvisoryResponse>, Status> {
        let id = request.into_inner().id;
        if id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "give an advisory id or alias, such as CVE-2023-23931",
            ));
        }
        let found = with_store(&self.store, move |s| s.advisory(&id)).await?;
        Ok(Response::new(v1::GetAdvisoryResponse {
            advisories: found.iter().map(crate::advisories::summary).collect(),
            documents: found
                .iter()
                .map(|a| String::from_utf8_lossy(&a.data).into_owned())
                .collect(),
        }))
    }

    async fn list_findings(
        &self,
        request: Request<v1::ListFindingsRequest>,
    ) -> Result<Response<v1::ListFindingsResponse>, Status> {
        let started = std::time::Instant::now();
        let req = request.into_inner();
        let min = match req.severity.trim() {
            "" => 0,
            s if severity_rank(s) > 0 => severity_rank(s),
            s => {
                return Err(Status::invalid_argument(format!(
                    "unknown severity {s:?}: use low, medium, high or critical"
                )));
            }
        };
        let filter = req.filter.unwrap_or_default();
        let (coverage, _) = self.hosts().await?;
        let (summaries, by_instance, scope_map_error) = self.workloads().await?;
        let evaluated = with_store(&self.store, |s| s.advisories(None))
            .await?
            .iter()
            .filter(|a| a.withdrawn.is_none() && severity_rank(&a.severity) >= min)
            .count() as u32;
        let mut findings = with_store(&self.store, |s| {
            s.findings(&FindingsQuery {
                advisories: None,
                window: None,
                include_fixed: false,
            })
        })
        .await?;
        findings.retain(|m| {
            severity_rank(&m.severity) >= min
                && (!req.loaded || crate::store::evidence_loaded(&m.evidence))
        });
        place_in_workloads(&mut findings, &summaries, &by_instance, &filter);
        Ok(Response::new(v1::ListFindingsResponse {
            coverage: Some(coverage),
            findings,
            scope_map_error,
            advisories: evaluated,
            elapsed_ms: started.elapsed().as_millis() as i64,
        }))
    }

    async fn push_sbom(
        &self,
        request: Request<v1::PushSbomRequest>,
    ) -> Result<Response<v1::PushSbomResponse>, Status> {
        let req = request.into_inner();
        let image = crate::sboms::image_digest(&req.image).map_err(Status::invalid_argument)?;
        let name = if req.name.is_empty() {
            "sbom".to_string()
        } else {
            req.name
        };
        // Parsing is CPU work: off the async workers. A document that does
        // not parse changes nothing.
        let record = tokio::task::spawn_blocking(move || {
            crate::sbom::Sbom::parse(&req.data, &name)
                .map(|sbom| crate::sboms::record(&sbom, &image, &name, &req.data, now_ms()))
        })
        .await
        .map_err(|_| Status::internal("SBOM parsing failed"))?
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let image = record.image.clone();
        let (outcome, stored) = with_store(&self.store, move |s| {
            let outcome = s.put_sbom(&record)?;
            // Stored either way: a failed pass leaves its packages
            // unmatched, for the next pass (the next agent message).
            if let Err(e) = crate::matching::refresh(s, &MatchScope::Unmatched) {
                warn!(error = %e, "matching the SBOM's packages failed; will retry");
            }
            let stored = s.sboms(Some(&record.image))?;
            Ok((outcome, stored))
        })
        .await?;
        let stored = stored
            .into_iter()
            .next()
            .ok_or_else(|| Status::internal(format!("the SBOM of {image} was not stored")))?;
        Ok(Response::new(v1::PushSbomResponse {
            sbom: Some(crate::sboms::summary(&stored)),
            outcome: match outcome {
                PutOutcome::Added => "added",
                PutOutcome::Updated => "replaced",
                PutOutcome::Unchanged | PutOutcome::Older => "unchanged",
            }
            .into(),
            matches: stored
                .packages
                .iter()
                .map(|p| p.advisories.len() as u32)
                .sum(),
        }))
    }

    async fn list_sboms(
        &self,
        request: Request<v1::ListSbomsRequest>,
    ) -> Result<Response<v1::ListSbomsResponse>, Status> {
        let image = request.into_inner().image;
        let image = if image.trim().is_empty() {
            None
        } else {
            Some(crate::sboms::image_digest(&image).map_err(Status::invalid_argument)?)
        };
        let sboms = with_store(&self.store, move |s| s.sboms(image.as_deref())).await?;
        Ok(Response::new(v1::ListSbomsResponse {
            sboms: sboms.iter().map(crate::sboms::summary).collect(),
        }))
    }

    async fn list_connections(
        &self,
        request: Request<v1::ListConnectionsRequest>,
    ) -> Result<Response<v1::ListConnectionsResponse>, Status> {
        let req = request.into_inner();
        let (coverage, hosts) = self.hosts().await?;
        let (summaries, by_instance, _) = self.workloads().await?;
        let host_ids: HashMap<String, String> = hosts
            .into_iter()
            .filter_map(|h| h.identity.map(|i| (i.hostname, i.host_id)))
            .collect();
        let host = (!req.host.is_empty()).then_some(req.host);
        let mut connections = with_store(&self.store, move |s| {
            s.connections(host.as_deref(), req.since_ms)
        })
        .await?;
        // Name each connection's fleet workload, as queries do.
        for c in &mut connections {
            if let Some(id) = host_ids.get(&c.host)
                && let Some(&i) = by_instance.get(&(id.clone(), c.workload.clone()))
            {
                c.workload = summaries[i].key.clone();
            }
        }
        Ok(Response::new(v1::ListConnectionsResponse {
            coverage: Some(coverage),
            connections,
        }))
    }

    async fn list_hosts(
        &self,
        _: Request<v1::ListHostsRequest>,
    ) -> Result<Response<v1::ListHostsResponse>, Status> {
        let (coverage, hosts) = self.hosts().await?;
        Ok(Response::new(v1::ListHostsResponse {
            coverage: Some(coverage),
            hosts,
        }))
    }

    async fn list_processes(
        &self,
        request: Request<v1::ListProcessesRequest>,
    ) -> Result<Response<v1::ListProcessesResponse>, Status> {
        let host = request.into_inner().host;
        let (coverage, _) = self.hosts().await?;
        let processes = with_store(&self.store, move |s| {
            s.processes((!host.is_empty()).then_some(host.as_str()))
        })
        .await?;
        Ok(Response::new(v1::ListProcessesResponse {
            coverage: Some(coverage),
            processes,
        }))
    }
}
