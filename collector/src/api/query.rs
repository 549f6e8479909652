//! The Query service: what responders ask. The trait impl only routes each
//! RPC to its area's file; the shared parts (coverage, fleet workloads with
//! the data-scope mapping in force) live here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use patchgap_proto::{
    time::now_ms,
    v1::{self, query_server::Query},
};
use tonic::{Request, Response, Status};

use super::{
    Connected, SharedStore, advisories,
    auth::Caller,
    blocking, changes, egress, fleet, incidents, packages,
    paging::Paging,
    sboms,
    security::{self, AuditArgs},
};
use crate::{
    audit::{AuditLog, Event},
    auth::Tokens,
    fleet::{coverage, ingest::Ingest, scope::ScopeMap, workloads},
    response::SharedPolicy,
};

/// Store reads that may run at once. Each takes a pooled reader and a
/// blocking thread for at most a page's time; past this they queue here,
/// so a burst of queries never takes every blocking thread or reader from
/// ingest, whose writes do not wait on this.
pub const CONCURRENT_READS: usize = 4;

/// How long a listing's later pages reuse what its first page loaded (the
/// fleet's workloads, the findings' verdicts).
const LISTING_REUSE: Duration = Duration::from_secs(60);

/// How often every host's workload rows are read ahead
/// ([`QueryService::keep_workloads_warm`]).
const WARM_EVERY: Duration = Duration::from_secs(10);

/// A value loaded for a first page and reused by the pages after it.
type Reused<T> = Arc<Mutex<Option<(std::time::Instant, Arc<T>)>>>;

#[derive(Clone)]
pub struct QueryService {
    pub(super) ingest: Arc<Ingest>,
    connected: Connected,
    /// A host is fresh when it reported within this long.
    fresh_after: Duration,
    /// The operator's data-scope mapping, reloaded when its file changes.
    scope: Arc<Mutex<ScopeMap>>,
    pub(super) tokens: Arc<Tokens>,
    pub(super) audit: Arc<AuditLog>,
    /// See [`CONCURRENT_READS`].
    reads: Arc<tokio::sync::Semaphore>,
    fleet_reuse: Reused<Fleet>,
    /// The workloads of a page's hosts (`workloads_of`), for the pages
    /// after it on the same hosts: a host with a million processes is
    /// counted once per listing, not once per page.
    hosts_reuse: Reused<HostsFleet>,
    /// Each host's workload rows, read again only when its inventory
    /// generation moved.
    held: Arc<crate::fleet::held::HeldWorkloads>,
    pub(super) findings_reuse: Reused<crate::fleet::exposure::FindingsIndex>,
    /// The response policy in force (reloaded on SIGHUP).
    policy: SharedPolicy,
    /// The desired containments and the agents' reports.
    pub(super) hub: Arc<crate::response::contain::Hub>,
    /// GateCheck's open-incident facts between calls.
    pub(super) gate: Arc<crate::response::gate::facts::Cache>,
    /// GetResponseReport's incident folds between calls.
    pub(super) ledger: Arc<crate::response::verify::report::Ledger>,
    /// How verification runs (K, the evidence counted), for answers: the
    /// base and the flags, resolved with the policy in force.
    verify: crate::response::verify::Settings,
    verify_flags: crate::response::verify::settings::VerifyFlags,
}

/// Some hosts' workloads (`QueryService::workloads_of`): the hostnames
/// (sorted), the instances among them whose key spans hosts (by host id
/// and instance id), and their summaries.
pub(super) struct HostsFleet {
    hosts: Vec<String>,
    spanning: std::collections::HashSet<(String, String)>,
    fleet: Arc<Fleet>,
}

/// Fleet workloads with the mapping in force: the summaries, the index of
/// each instance's summary by (host id, instance id), and the mapping's
/// load error if the last reload failed.
pub(super) struct Fleet {
    pub summaries: Vec<v1::WorkloadSummary>,
    pub by_instance: HashMap<(String, String), usize>,
    pub scope_map_error: String,
}

impl QueryService {
    pub fn new(
        ingest: Arc<Ingest>,
        connected: Connected,
        fresh_after: Duration,
        scope: Arc<Mutex<ScopeMap>>,
        tokens: Arc<Tokens>,
        audit: Arc<AuditLog>,
    ) -> Self {
        QueryService {
            ingest,
            connected,
            fresh_after,
            scope,
            tokens,
            audit,
            reads: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_READS)),
            fleet_reuse: Arc::default(),
            hosts_reuse: Arc::default(),
            held: Arc::default(),
            findings_reuse: Arc::default(),
            policy: SharedPolicy::builtin(),
            hub: Arc::new(crate::response::contain::Hub::new(now_ms().max(0) as u64)),
            gate: Default::default(),
            ledger: Default::default(),
            verify: crate::response::verify::Settings::default(),
            verify_flags: Default::default(),
        }
    }

    /// Answers with these verification settings (the collector's base
    /// and its `--verify-*` flags; the policy's `[verify]` between them).
    pub fn with_verify(
        mut self,
        settings: crate::response::verify::Settings,
        flags: crate::response::verify::settings::VerifyFlags,
    ) -> Self {
        self.verify = settings;
        self.verify_flags = flags;
        self
    }

    /// The verification settings in force now, and where each came from.
    pub(super) fn verify_in_force(&self) -> crate::response::verify::settings::InForce {
        crate::response::verify::settings::resolve(
            &self.verify,
            &self.policy.state().current.verify,
            &self.verify_flags,
        )
    }

    pub(super) fn verify_settings(&self) -> crate::response::verify::Settings {
        self.verify_in_force().settings
    }

    /// Plans, approvals and reverts publish to this hub (a hub of its own
    /// otherwise, which no agent stream reads).
    pub fn with_hub(mut self, hub: Arc<crate::response::contain::Hub>) -> Self {
        self.hub = hub;
        self
    }

    /// Shares the deploy gate's facts and admission tally with the HTTP
    /// listener (a cache of its own otherwise, whose tally stays empty).
    pub fn with_gate(mut self, gate: Arc<crate::response::gate::facts::Cache>) -> Self {
        self.gate = gate;
        self
    }

    /// Shares the response report's incident folds with the HTTP
    /// listener's `/metrics` (a ledger of its own otherwise).
    pub fn with_ledger(mut self, ledger: Arc<crate::response::verify::report::Ledger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// Serves with this response policy (the built-in one otherwise).
    pub fn with_policy(mut self, policy: SharedPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The response policy holder: `policy().state()` is the policy in
    /// force, its source, and the last reload's error, if it failed.
    pub fn policy(&self) -> &SharedPolicy {
        &self.policy
    }

    /// Runs one RPC and appends its audit entry: who (the [`Caller`] that
    /// `api::auth` attached), the arguments, and the result. The entry is
    /// written after the call's own store work has committed, never inside
    /// it. A failure to write it is logged; the call's answer stands.
    async fn audited<Req: AuditArgs, Resp, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        summary: fn(&Resp) -> String,
        f: impl FnOnce(Req, Caller) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: std::future::Future<Output = Result<Resp, Status>>,
    {
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_default();
        let req = request.into_inner();
        let args = req.audit_args();
        let event = Event {
            subject: caller.subject.clone(),
            scopes: caller.scopes.clone(),
            peer: caller.peer.clone(),
            method: format!("Query/{method}"),
            args,
            result: String::new(),
        };
        let result = f(req, caller).await;
        let event = Event {
            result: match &result {
                Ok(r) => summary(r),
                Err(s) => format!("{:?}: {}", s.code(), s.message()),
            },
            ..event
        };
        let audit = self.audit.clone();
        let t = std::time::Instant::now();
        let recorded = tokio::task::spawn_blocking(move || audit.record(event)).await;
        tracing::debug!(
            method,
            audit_ms = t.elapsed().as_secs_f64() * 1e3,
            "audited"
        );
        match recorded {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e.chain(), method, "cannot write the audit entry")
            }
            Err(_) => tracing::warn!(method, "the audit task failed"),
        }
        result.map(Response::new)
    }

    /// The store, for reads.
    pub(super) fn store(&self) -> SharedStore {
        self.ingest.store().clone()
    }

    /// Runs a read off the async workers.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn crate::store::Store) -> crate::store::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store();
        let permit = self
            .reads
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the collector is stopping"))?;
        blocking(move || {
            let _permit = permit;
            f(store.as_ref())
        })
        .await
    }

    /// Runs domain work that reads the store, and may append through
    /// `ingest`, off the async workers under the same permits as
    /// [`QueryService::read`]; the work maps its own errors.
    pub(super) async fn domain<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Ingest) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let ingest = self.ingest.clone();
        let permit = self
            .reads
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the collector is stopping"))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&ingest)
        })
        .await
        .map_err(|_| Status::internal("store task failed"))?
    }

    /// A value a listing's first page loads (`load`) and its later pages
    /// reuse for a while, so a page costs its own processes only.
    pub(super) async fn reused<T, F, Fut>(
        &self,
        slot: &Reused<T>,
        first_page: bool,
        load: F,
    ) -> Result<Arc<T>, Status>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        if !first_page {
            let held = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some((at, value)) = held
                && at.elapsed() < LISTING_REUSE
            {
                return Ok(value);
            }
        }
        let value = Arc::new(load().await?);
        *slot.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), value.clone()));
        Ok(value)
    }

    /// The fleet's workloads: loaded for a first page, reused by the
    /// pages after it.
    pub(super) async fn workloads_for(&self, first_page: bool) -> Result<Arc<Fleet>, Status> {
        self.reused(&self.fleet_reuse, first_page, || self.workloads())
            .await
    }

    /// The workloads that the matches of one page name, summed up as
    /// [`QueryService::workloads`] sums up the fleet's: the same summary
    /// for every instance a match names, at the cost of the matches'
    /// hosts. An instance's summary sums every instance with its key; the
    /// keys of containers, sessions and hosts name their host, so those
    /// instances are all on hosts of the same name and the hosts' own
    /// workloads give the summary whole. A pod's or systemd unit's key
    /// spans hosts (and an empty host id is shared by every host without
    /// a machine id), so a page that names one of those takes the fleet's
    /// workloads instead, as before (loaded for a first page, reused after).
    /// The hosts' workloads are reused in the same way: a later page whose
    /// hosts a recent load covered costs no store read at all.
    pub(super) async fn workloads_of<'a>(
        &self,
        first_page: bool,
        matches: impl Iterator<Item = &'a v1::Match>,
    ) -> Result<Arc<Fleet>, Status> {
        let mut hosts = std::collections::BTreeSet::new();
        let mut named = std::collections::HashSet::new();
        for m in matches {
            if m.host_id.is_empty() {
                return self.workloads_for(first_page).await;
            }
            hosts.insert(m.host.clone());
            named.insert((m.host_id.clone(), m.workload.clone()));
        }
        let hosts: Vec<String> = hosts.into_iter().collect();
        // A later page on hosts the held ones cover reuses them, as
        // `reused` does; any other page loads its own hosts.
        let held = if first_page {
            None
        } else {
            self.hosts_reuse
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .filter(|(at, held)| {
                    at.elapsed() < LISTING_REUSE
                        && hosts.iter().all(|h| held.hosts.binary_search(h).is_ok())
                })
                .map(|(_, held)| held)
        };
        let held = match held {
            Some(held) => held,
            None => {
                let (wanted, cache) = (hosts.clone(), self.held.clone());
                let rows = self.read(move |s| cache.read(s, Some(&wanted))).await?.rows;
                let spanning = rows
                    .iter()
                    .filter(|r| workloads::key_spans_hosts(&r.workload))
                    .map(|r| (r.host_id.clone(), r.workload.id.clone()))
                    .collect();
                let held = Arc::new(HostsFleet {
                    hosts,
                    spanning,
                    fleet: Arc::new(self.fleet_of(rows.iter())),
                });
                *self.hosts_reuse.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((std::time::Instant::now(), held.clone()));
                held
            }
        };
        if named.iter().any(|n| held.spanning.contains(n)) {
            return self.workloads_for(first_page).await;
        }
        Ok(held.fleet.clone())
    }

    /// Reads every host's workload rows into `held` now and then, so the
    /// hosts a first page names are seldom read while a responder waits:
    /// each round reads again only the hosts whose generation moved since
    /// (at a delta per host every 30 s, a third of them per round), the
    /// work their next query would otherwise do. Runs until aborted.
    pub async fn keep_workloads_warm(self) {
        loop {
            let cache = self.held.clone();
            match self.read(move |s| cache.read(s, None)).await {
                Ok(read) => tracing::debug!(
                    hostnames = read.hostnames,
                    reread = read.reread,
                    "read the workloads ahead"
                ),
                Err(e) => {
                    tracing::debug!(error = e.message(), "could not read the workloads ahead")
                }
            }
            tokio::time::sleep(WARM_EVERY).await;
        }
    }

    pub(super) async fn workloads(&self) -> Result<Fleet, Status> {
        let cache = self.held.clone();
        let rows = self.read(move |s| cache.read(s, None)).await?.rows;
        Ok(self.fleet_of(rows.iter()))
    }

    /// Workload rows summed up with the mapping in force.
    fn fleet_of<'a>(
        &self,
        rows: impl Iterator<Item = &'a crate::store::WorkloadRow> + Clone,
    ) -> Fleet {
        let (rules, scope_map_error) = {
            let mut scope = self.scope.lock().unwrap_or_else(|e| e.into_inner());
            scope.refresh();
            (
                scope.rules().to_vec(),
                scope.error().unwrap_or_default().to_string(),
            )
        };
        let summaries = workloads::summarize(rows.clone(), &rules);
        let index: HashMap<&str, usize> = summaries
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.as_str(), i))
            .collect();
        let by_instance = rows
            .map(|r| {
                (
                    (r.host_id.clone(), r.workload.id.clone()),
                    index[workloads::key(r).as_str()],
                )
            })
            .collect();
        Fleet {
            summaries,
            by_instance,
            scope_map_error,
        }
    }

    /// The data-scope mapping in force (reloaded if its file changed).
    pub(super) fn scope_rules(&self) -> Vec<crate::fleet::scope::Rule> {
        let mut scope = self.scope.lock().unwrap_or_else(|e| e.into_inner());
        scope.refresh();
        scope.rules().to_vec()
    }

    /// Says in `coverage` that history before the retention horizon was
    /// dropped, when the answer's window starts at `since_ms` before it.
    pub(super) async fn mark_retention(
        &self,
        coverage: &mut v1::Coverage,
        since_ms: i64,
    ) -> Result<(), Status> {
        let horizon = self.read(|s| s.retention_horizon()).await?;
        coverage.history_dropped_before_ms = crate::retention::dropped_before(horizon, since_ms);
        Ok(())
    }

    pub(super) async fn hosts(&self) -> Result<(v1::Coverage, Vec<v1::HostSummary>), Status> {
        let rows = self.read(|s| s.hosts()).await?;
        Ok(self.summarize_hosts(rows))
    }

    /// An answer's coverage: [`QueryService::hosts`]'s, without counting
    /// each host's running processes (the coverage does not carry them).
    pub(super) async fn coverage(&self) -> Result<v1::Coverage, Status> {
        let rows = self.read(|s| s.hosts_for_coverage()).await?;
        Ok(self.summarize_hosts(rows).0)
    }

    fn summarize_hosts(
        &self,
        rows: Vec<crate::store::HostRow>,
    ) -> (v1::Coverage, Vec<v1::HostSummary>) {
        let now = now_ms();
        let streams = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        let (coverage, mut hosts) =
            coverage::summarize(rows, &streams.expiries(), self.fresh_after, now);
        for h in &mut hosts {
            let key = h.identity.as_ref().map(coverage::host_key).unwrap_or("");
            if let Some(c) = streams.conflict(key, now) {
                h.conflict = c.to_string();
            }
        }
        (coverage, hosts)
    }
}

/// Names each match's fleet workload (its key and summary) and keeps
/// those the filter passes, in the order given (host, pid: the paging
/// order).
pub(super) fn place_in_workloads(
    matches: &mut Vec<v1::Match>,
    fleet: &Fleet,
    filter: &v1::WorkloadFilter,
) {
    matches.retain_mut(|m| {
        let detail = fleet
            .by_instance
            .get(&(m.host_id.clone(), m.workload.clone()))
            .map(|&i| &fleet.summaries[i]);
        if let Some(d) = detail {
            m.workload = d.key.clone();
            m.workload_detail = Some(d.clone());
        }
        let empty = v1::WorkloadSummary::default();
        workloads::passes(detail.unwrap_or(&empty), filter)
    });
}

/// Audit summaries of a successful call.
fn ok<T>(_: &T) -> String {
    "ok".into()
}

fn imported(r: &v1::ImportAdvisoriesResponse) -> String {
    format!(
        "ok: {} added, {} updated, {} unchanged, {} older, {} refused (other source), {} errors",
        r.added,
        r.updated,
        r.unchanged,
        r.older,
        r.refused,
        r.errors.len()
    )
}

fn deleted(r: &v1::DeleteAdvisoryResponse) -> String {
    format!(
        "ok: deleted {}",
        r.advisory.as_ref().map_or("", |a| a.id.as_str())
    )
}

/// The subject a stored record's provenance names: the caller's, or
/// `anonymous` when the call passed without a token.
fn imported_by(caller: &Caller) -> String {
    if caller.subject.is_empty() {
        "anonymous".into()
    } else {
        caller.subject.clone()
    }
}

fn pushed(r: &v1::PushSbomResponse) -> String {
    format!("ok: {}", r.outcome)
}

fn issued(r: &v1::IssueTokenResponse) -> String {
    // The token id, never the token.
    format!(
        "ok: token {}",
        r.info.as_ref().map_or("", |i| i.id.as_str())
    )
}

fn opened(r: &v1::OpenIncidentResponse) -> String {
    let id = r.incident.as_ref().map_or("", |i| i.id.as_str());
    if r.created {
        format!("ok: opened {id}")
    } else {
        format!("ok: already open: {id}")
    }
}

fn verified(r: &v1::VerifyAuditResponse) -> String {
    if r.intact {
        format!("ok: intact, {} entries", r.entries)
    } else {
        format!("ok: broken at entry {} ({})", r.first_bad_seq, r.kind)
    }
}

/// Each RPC goes through [`QueryService::audited`] to its area's file.
#[tonic::async_trait]
impl Query for QueryService {
    async fn find_package(
        &self,
        request: Request<v1::FindPackageRequest>,
    ) -> Result<Response<v1::FindPackageResponse>, Status> {
        self.audited("FindPackage", request, ok, |req, _| async move {
            let paging = Paging::parse(
                req.page_size,
                &req.page_token,
                &v1::FindPackageRequest {
                    page_size: 0,
                    page_token: String::new(),
                    ..req.clone()
                },
            )?;
            packages::FindPackage::try_from(req)?
                .apply(self, paging)
                .await
        })
        .await
    }

    async fn list_workloads(
        &self,
        request: Request<v1::ListWorkloadsRequest>,
    ) -> Result<Response<v1::ListWorkloadsResponse>, Status> {
        self.audited("ListWorkloads", request, ok, |req, _| async move {
            fleet::list_workloads(self, req).await
        })
        .await
    }

    async fn import_advisories(
        &self,
        request: Request<v1::ImportAdvisoriesRequest>,
    ) -> Result<Response<v1::ImportAdvisoriesResponse>, Status> {
        self.audited(
            "ImportAdvisories",
            request,
            imported,
            |req, caller| async move { advisories::import(self, req, imported_by(&caller)).await },
        )
        .await
    }

    async fn list_advisories(
        &self,
        request: Request<v1::ListAdvisoriesRequest>,
    ) -> Result<Response<v1::ListAdvisoriesResponse>, Status> {
        self.audited("ListAdvisories", request, ok, |req, _| async move {
            advisories::list(self, req).await
        })
        .await
    }

    async fn get_advisory(
        &self,
        request: Request<v1::GetAdvisoryRequest>,
    ) -> Result<Response<v1::GetAdvisoryResponse>, Status> {
        self.audited("GetAdvisory", request, ok, |req, _| async move {
            advisories::get(self, req).await
        })
        .await
    }

    async fn delete_advisory(
        &self,
        request: Request<v1::DeleteAdvisoryRequest>,
    ) -> Result<Response<v1::DeleteAdvisoryResponse>, Status> {
        self.audited("DeleteAdvisory", request, deleted, |req, _| async move {
            advisories::delete(self, req).await
        })
        .await
    }

    async fn list_findings(
        &self,
        request: Request<v1::ListFindingsRequest>,
    ) -> Result<Response<v1::ListFindingsResponse>, Status> {
        self.audited("ListFindings", request, ok, |req, _| async move {
            let paging = Paging::parse(
                req.page_size,
                &req.page_token,
                &v1::ListFindingsRequest {
                    page_size: 0,
                    page_token: String::new(),
                    ..req.clone()
                },
            )?;
            advisories::ListFindings::try_from(req)?
                .apply(self, paging)
                .await
        })
        .await
    }

    async fn push_sbom(
        &self,
        request: Request<v1::PushSbomRequest>,
    ) -> Result<Response<v1::PushSbomResponse>, Status> {
        self.audited("PushSbom", request, pushed, |req, caller| async move {
            sboms::push(self, req, imported_by(&caller)).await
        })
        .await
    }

    async fn list_sboms(
        &self,
        request: Request<v1::ListSbomsRequest>,
    ) -> Result<Response<v1::ListSbomsResponse>, Status> {
        self.audited("ListSboms", request, ok, |req, _| async move {
            sboms::list(self, req).await
        })
        .await
    }

    async fn list_connections(
        &self,
        request: Request<v1::ListConnectionsRequest>,
    ) -> Result<Response<v1::ListConnectionsResponse>, Status> {
        self.audited("ListConnections", request, ok, |req, _| async move {
            fleet::list_connections(self, req).await
        })
        .await
    }

    async fn list_hosts(
        &self,
        request: Request<v1::ListHostsRequest>,
    ) -> Result<Response<v1::ListHostsResponse>, Status> {
        self.audited("ListHosts", request, ok, |_, _| async move {
            let (coverage, hosts) = self.hosts().await?;
            Ok(v1::ListHostsResponse {
                coverage: Some(coverage),
                hosts,
            })
        })
        .await
    }

    async fn list_processes(
        &self,
        request: Request<v1::ListProcessesRequest>,
    ) -> Result<Response<v1::ListProcessesResponse>, Status> {
        self.audited("ListProcesses", request, ok, |req, _| async move {
            fleet::list_processes(self, req).await
        })
        .await
    }

    async fn issue_token(
        &self,
        request: Request<v1::IssueTokenRequest>,
    ) -> Result<Response<v1::IssueTokenResponse>, Status> {
        self.audited("IssueToken", request, issued, |req, caller| async move {
            security::issue_token(self, req, caller).await
        })
        .await
    }

    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.audited("ListTokens", request, ok, |_, _| async move {
            security::list_tokens(self).await
        })
        .await
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        self.audited("RevokeToken", request, ok, |req, _| async move {
            security::revoke_token(self, req).await
        })
        .await
    }

    async fn list_audit(
        &self,
        request: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        self.audited("ListAudit", request, ok, |req, _| async move {
            security::list_audit(self, req).await
        })
        .await
    }

    async fn verify_audit(
        &self,
        request: Request<v1::VerifyAuditRequest>,
    ) -> Result<Response<v1::VerifyAuditResponse>, Status> {
        self.audited("VerifyAudit", request, verified, |_, _| async move {
            security::verify_audit(self).await
        })
        .await
    }

    async fn list_egress_alerts(
        &self,
        request: Request<v1::ListEgressAlertsRequest>,
    ) -> Result<Response<v1::ListEgressAlertsResponse>, Status> {
        self.audited("ListEgressAlerts", request, ok, |req, _| async move {
            egress::list_alerts(self, req).await
        })
        .await
    }

    async fn get_egress_baseline(
        &self,
        request: Request<v1::GetEgressBaselineRequest>,
    ) -> Result<Response<v1::GetEgressBaselineResponse>, Status> {
        self.audited("GetEgressBaseline", request, ok, |req, _| async move {
            egress::get_baseline(self, req).await
        })
        .await
    }

    async fn list_workload_changes(
        &self,
        request: Request<v1::ListWorkloadChangesRequest>,
    ) -> Result<Response<v1::ListWorkloadChangesResponse>, Status> {
        self.audited("ListWorkloadChanges", request, ok, |req, _| async move {
            changes::list(self, req).await
        })
        .await
    }

    async fn open_incident(
        &self,
        request: Request<v1::OpenIncidentRequest>,
    ) -> Result<Response<v1::OpenIncidentResponse>, Status> {
        self.audited("OpenIncident", request, opened, |req, caller| async move {
            incidents::OpenIncident::try_from(req)?
                .apply(self, imported_by(&caller))
                .await
        })
        .await
    }

    async fn list_incidents(
        &self,
        request: Request<v1::ListIncidentsRequest>,
    ) -> Result<Response<v1::ListIncidentsResponse>, Status> {
        self.audited("ListIncidents", request, ok, |req, _| async move {
            incidents::list(self, req).await
        })
        .await
    }

    async fn get_incident(
        &self,
        request: Request<v1::GetIncidentRequest>,
    ) -> Result<Response<v1::GetIncidentResponse>, Status> {
        self.audited("GetIncident", request, ok, |req, _| async move {
            incidents::get(self, req).await
        })
        .await
    }

    async fn plan_incident(
        &self,
        request: Request<v1::PlanIncidentRequest>,
    ) -> Result<Response<v1::PlanIncidentResponse>, Status> {
        self.audited("PlanIncident", request, ok, |req, caller| async move {
            incidents::plan(self, req, imported_by(&caller)).await
        })
        .await
    }

    async fn approve_incident(
        &self,
        request: Request<v1::ApproveIncidentRequest>,
    ) -> Result<Response<v1::ApproveIncidentResponse>, Status> {
        self.audited("ApproveIncident", request, ok, |req, caller| async move {
            incidents::approve(self, req, imported_by(&caller)).await
        })
        .await
    }

    async fn revert_incident(
        &self,
        request: Request<v1::RevertIncidentRequest>,
    ) -> Result<Response<v1::RevertIncidentResponse>, Status> {
        self.audited("RevertIncident", request, ok, |req, caller| async move {
            incidents::revert(self, req, imported_by(&caller)).await
        })
        .await
    }

    async fn gate_check(
        &self,
        request: Request<v1::GateCheckRequest>,
    ) -> Result<Response<v1::GateCheckResponse>, Status> {
        self.audited(
            "GateCheck",
            request,
            super::gate::summary,
            |req, _| async move { super::gate::check(self, req).await },
        )
        .await
    }

    async fn close_incident(
        &self,
        request: Request<v1::CloseIncidentRequest>,
    ) -> Result<Response<v1::CloseIncidentResponse>, Status> {
        self.audited("CloseIncident", request, ok, |req, caller| async move {
            super::verify::close(self, req, imported_by(&caller)).await
        })
        .await
    }

    async fn get_incident_evidence(
        &self,
        request: Request<v1::GetIncidentEvidenceRequest>,
    ) -> Result<Response<v1::GetIncidentEvidenceResponse>, Status> {
        self.audited("GetIncidentEvidence", request, ok, |req, _| async move {
            super::verify::evidence(self, req).await
        })
        .await
    }

    async fn list_deliveries(
        &self,
        request: Request<v1::ListDeliveriesRequest>,
    ) -> Result<Response<v1::ListDeliveriesResponse>, Status> {
        self.audited(
            "ListDeliveries",
            request,
            super::deliveries::listed_summary,
            |req, _| async move { super::deliveries::list(self, req).await },
        )
        .await
    }

    async fn enable_endpoint(
        &self,
        request: Request<v1::EnableEndpointRequest>,
    ) -> Result<Response<v1::EnableEndpointResponse>, Status> {
        self.audited(
            "EnableEndpoint",
            request,
            super::deliveries::enabled_summary,
            |req, _| async move { super::deliveries::enable(self, req).await },
        )
        .await
    }

    async fn retire_host(
        &self,
        request: Request<v1::RetireHostRequest>,
    ) -> Result<Response<v1::RetireHostResponse>, Status> {
        self.audited("RetireHost", request, ok, |req, caller| async move {
            super::verify::retire(self, req, imported_by(&caller)).await
        })
        .await
    }

    async fn get_incident_graph(
        &self,
        request: Request<v1::GetIncidentGraphRequest>,
    ) -> Result<Response<v1::GetIncidentGraphResponse>, Status> {
        self.audited("GetIncidentGraph", request, ok, |req, _| async move {
            super::verify::graph(self, req).await
        })
        .await
    }

    async fn get_response_report(
        &self,
        request: Request<v1::GetResponseReportRequest>,
    ) -> Result<Response<v1::GetResponseReportResponse>, Status> {
        self.audited("GetResponseReport", request, ok, |req, _| async move {
            super::verify::report(self, req).await
        })
        .await
    }
}
