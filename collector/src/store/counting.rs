//! A [`Store`] that forwards every call to another and counts the reads
//! whose cost tests bound: the workload rows (read once per verification
//! pass), the incident record pages and the incident events (read again
//! only for incidents whose log grew since the last report).

use std::sync::atomic::{AtomicUsize, Ordering};

use patchgap_proto::v1;

use super::*;

/// What a [`Counting`] store has been asked for so far.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Calls to [`Store::workloads`].
    pub workloads: AtomicUsize,
    /// Calls to [`Store::hosts`] (which counts every running process).
    pub hosts: AtomicUsize,
    /// Rows returned by [`Store::workloads_on`].
    pub workload_rows_on: AtomicUsize,
    /// Calls to [`Store::incidents`] (one per page of records).
    pub incident_pages: AtomicUsize,
    /// Incident events returned by [`Store::incident_events`].
    pub events: AtomicUsize,
}

impl Counts {
    pub(crate) fn workloads(&self) -> usize {
        self.workloads.load(Ordering::Relaxed)
    }

    pub(crate) fn hosts(&self) -> usize {
        self.hosts.load(Ordering::Relaxed)
    }

    pub(crate) fn workload_rows_on(&self) -> usize {
        self.workload_rows_on.load(Ordering::Relaxed)
    }

    pub(crate) fn incident_pages(&self) -> usize {
        self.incident_pages.load(Ordering::Relaxed)
    }

    pub(crate) fn events(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }
}

/// `inner`, with its reads counted in `count`.
pub(crate) struct Counting {
    pub inner: Box<dyn Store>,
    pub count: Counts,
}

impl Counting {
    pub(crate) fn new(inner: impl Store) -> Counting {
        Counting {
            inner: Box::new(inner),
            count: Counts::default(),
        }
    }
}

impl Store for Counting {
    fn hello(&self, hello: &v1::Hello, now_ms: i64) -> Result<Session> {
        self.inner.hello(hello, now_ms)
    }

    fn apply(&self, session: &Session, msg: &v1::AgentMessage, now_ms: i64) -> Result<()> {
        self.inner.apply(session, msg, now_ms)
    }

    fn hosts(&self) -> Result<Vec<HostRow>> {
        self.count.hosts.fetch_add(1, Ordering::Relaxed);
        self.inner.hosts()
    }

    fn hosts_for_coverage(&self) -> Result<Vec<HostRow>> {
        self.inner.hosts_for_coverage()
    }

    fn packages_named(&self, name: &PackageName<'_>) -> Result<Vec<(i64, v1::Package)>> {
        self.inner.packages_named(name)
    }

    fn packages_by_id(&self, ids: &[i64]) -> Result<Vec<(i64, v1::Package)>> {
        self.inner.packages_by_id(ids)
    }

    fn evidence_page(
        &self,
        package_ids: &[i64],
        window: Option<(i64, i64)>,
        after: Option<&ProcessCursor>,
        limit: PageLimit,
    ) -> Result<EvidencePage> {
        self.inner.evidence_page(package_ids, window, after, limit)
    }

    fn connections(&self, host: Option<&str>, since_ms: i64) -> Result<Vec<v1::ConnectionSummary>> {
        self.inner.connections(host, since_ms)
    }

    fn workloads(&self) -> Result<Vec<WorkloadRow>> {
        self.count.workloads.fetch_add(1, Ordering::Relaxed);
        self.inner.workloads()
    }

    fn workloads_on(&self, hostnames: &[String]) -> Result<Vec<WorkloadRow>> {
        let rows = self.inner.workloads_on(hostnames)?;
        self.count
            .workload_rows_on
            .fetch_add(rows.len(), Ordering::Relaxed);
        Ok(rows)
    }

    fn inventory_gens(&self, hostnames: Option<&[String]>) -> Result<Vec<(String, i64, i64)>> {
        self.inner.inventory_gens(hostnames)
    }

    fn instance_first_start(&self, host: &str, instance: &str) -> Result<Option<i64>> {
        self.inner.instance_first_start(host, instance)
    }

    fn hostname_of_key(&self, host_key: &str) -> Result<Option<String>> {
        self.inner.hostname_of_key(host_key)
    }

    fn parallel_writes(&self) -> usize {
        self.inner.parallel_writes()
    }

    fn processes_page(
        &self,
        host: Option<&str>,
        after: Option<&ProcessCursor>,
        limit: usize,
    ) -> Result<Vec<(ProcessCursor, v1::ProcessSummary)>> {
        self.inner.processes_page(host, after, limit)
    }

    fn put_advisories(
        &self,
        advisories: &[AdvisoryRecord],
        replace: bool,
    ) -> Result<Vec<PutOutcome>> {
        self.inner.put_advisories(advisories, replace)
    }

    fn delete_advisory(&self, id: &str, rematch: &[String]) -> Result<Option<AdvisoryRecord>> {
        self.inner.delete_advisory(id, rematch)
    }

    fn pending_advisories(&self, limit: usize) -> Result<Vec<String>> {
        self.inner.pending_advisories(limit)
    }

    fn advisory(&self, id_or_alias: &str) -> Result<Vec<AdvisoryRecord>> {
        self.inner.advisory(id_or_alias)
    }

    fn advisories(&self, ecosystem: Option<&str>) -> Result<Vec<AdvisoryRecord>> {
        self.inner.advisories(ecosystem)
    }

    fn match_candidates(&self, scope: &MatchScope) -> Result<Candidates> {
        self.inner.match_candidates(scope)
    }

    fn put_matches(&self, scope: &MatchScope, matches: &[AdvisoryMatch]) -> Result<()> {
        self.inner.put_matches(scope, matches)
    }

    fn verdicts(&self, advisories: Option<&[String]>, include_fixed: bool) -> Result<Vec<Verdict>> {
        self.inner.verdicts(advisories, include_fixed)
    }

    fn put_sbom(&self, sbom: &SbomRecord) -> Result<PutOutcome> {
        self.inner.put_sbom(sbom)
    }

    fn sboms(&self, image: Option<&str>) -> Result<Vec<SbomRecord>> {
        self.inner.sboms(image)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        self.inner.append_audit(entry)
    }

    fn audit_head(&self) -> Result<Option<(i64, String)>> {
        self.inner.audit_head()
    }

    fn audit_entries(
        &self,
        after_seq: i64,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        self.inner.audit_entries(after_seq, since_ms, limit)
    }

    fn append_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<()> {
        self.inner.append_audit_checkpoint(checkpoint)
    }

    fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        self.inner.audit_checkpoints()
    }

    fn put_token(&self, token: &TokenRecord) -> Result<()> {
        self.inner.put_token(token)
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.inner.tokens()
    }

    fn revoke_token(&self, id: &str, now_ms: i64) -> Result<Option<TokenRecord>> {
        self.inner.revoke_token(id, now_ms)
    }

    fn open_incident(
        &self,
        dedup_key: &str,
        created_ms: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<(IncidentRecord, bool)> {
        self.inner
            .open_incident(dedup_key, created_ms, events, cache)
    }

    fn append_incident_events(
        &self,
        id: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<IncidentRecord> {
        self.inner.append_incident_events(id, events, cache)
    }

    fn incident(&self, id: i64) -> Result<Option<IncidentRecord>> {
        self.inner.incident(id)
    }

    fn open_incident_by_key(&self, dedup_key: &str) -> Result<Option<IncidentRecord>> {
        self.inner.open_incident_by_key(dedup_key)
    }

    fn incidents(
        &self,
        before: Option<i64>,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<IncidentRecord>> {
        self.count.incident_pages.fetch_add(1, Ordering::Relaxed);
        self.inner.incidents(before, open_only, limit)
    }

    fn incident_events(
        &self,
        id: i64,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<IncidentEventRecord>> {
        let events = self.inner.incident_events(id, after_seq, limit)?;
        self.count.events.fetch_add(events.len(), Ordering::Relaxed);
        Ok(events)
    }

    fn enqueue_delivery(&self, delivery: &NewDelivery) -> Result<bool> {
        self.inner.enqueue_delivery(delivery)
    }

    fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        self.inner.claim_deliveries(now_ms, lease_ms, limit)
    }

    fn finish_delivery(&self, id: i64, now_ms: i64, outcome: &DeliveryOutcome) -> Result<()> {
        self.inner.finish_delivery(id, now_ms, outcome)
    }

    fn deliveries(&self, incident: Option<i64>, limit: usize) -> Result<Vec<DeliveryRecord>> {
        self.inner.deliveries(incident, limit)
    }

    fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>> {
        self.inner.disabled_endpoints()
    }

    fn enable_endpoint(&self, name: &str) -> Result<bool> {
        self.inner.enable_endpoint(name)
    }

    fn put_egress_baseline(
        &self,
        key: &str,
        expected_version: i64,
        updated_ms: i64,
        body: &str,
    ) -> Result<EgressBaselineRecord> {
        self.inner
            .put_egress_baseline(key, expected_version, updated_ms, body)
    }

    fn egress_baseline(
        &self,
        key: &str,
        version: Option<i64>,
    ) -> Result<Option<EgressBaselineRecord>> {
        self.inner.egress_baseline(key, version)
    }

    fn egress_baselines(&self) -> Result<Vec<EgressBaselineRecord>> {
        self.inner.egress_baselines()
    }

    fn upsert_egress_alert(
        &self,
        alert: &EgressAlertUpsert<'_>,
    ) -> Result<(EgressAlertRecord, bool)> {
        self.inner.upsert_egress_alert(alert)
    }

    fn resolve_egress_alerts(
        &self,
        quiet_before_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<EgressAlertRecord>> {
        self.inner.resolve_egress_alerts(quiet_before_ms, now_ms)
    }

    fn process_chain(
        &self,
        host: i64,
        key: &v1::ProcessKey,
        depth: usize,
    ) -> Result<Option<ProcessChain>> {
        self.inner.process_chain(host, key, depth)
    }

    fn open_egress_alert(&self, dedup_key: &str) -> Result<Option<EgressAlertRecord>> {
        self.inner.open_egress_alert(dedup_key)
    }

    fn egress_alert(&self, id: i64) -> Result<Option<EgressAlertRecord>> {
        self.inner.egress_alert(id)
    }

    fn egress_alerts(&self, since_ms: i64, limit: usize) -> Result<Vec<EgressAlertRecord>> {
        self.inner.egress_alerts(since_ms, limit)
    }

    fn workload_instances(&self, seen_since_ms: i64, limit: usize) -> Result<Vec<WorkloadRow>> {
        self.inner.workload_instances(seen_since_ms, limit)
    }

    fn workload_package_spans(
        &self,
        host_id: &str,
        workload: &str,
        after_ms: i64,
        limit: usize,
    ) -> Result<Vec<PackageSpan>> {
        self.inner
            .workload_package_spans(host_id, workload, after_ms, limit)
    }

    fn try_singleton(&self, name: &str) -> Result<Option<Singleton<'_>>> {
        self.inner.try_singleton(name)
    }

    fn prune_history(&self, before_ms: i64, limit: usize) -> Result<PruneStep> {
        self.inner.prune_history(before_ms, limit)
    }

    fn compact_history(&self, limit: usize) -> Result<u64> {
        self.inner.compact_history(limit)
    }

    fn history_cutoff(&self, nth: usize) -> Result<Option<i64>> {
        self.inner.history_cutoff(nth)
    }

    fn storage_use(&self) -> Result<StorageUse> {
        self.inner.storage_use()
    }

    fn reclaim(&self, max_bytes: u64) -> Result<u64> {
        self.inner.reclaim(max_bytes)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn set_retention_horizon(&self, horizon_ms: i64, now_ms: i64) -> Result<()> {
        self.inner.set_retention_horizon(horizon_ms, now_ms)
    }

    fn retention_horizon(&self) -> Result<Option<i64>> {
        self.inner.retention_horizon()
    }
}
