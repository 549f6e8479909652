//! Queries while a large snapshot commits: the p50 and p99 of FindPackage
//! (over gRPC, against a real collector with its SQLite store on disk)
//! while an agent's 1,000-process snapshots commit back to back, next to
//! the same query on an idle store, in one run.
//!
//! Two stores are measured the same way:
//! - `one lock`: every store call behind one mutex, as the collector was
//!   before the store took `&self` (`Arc<Mutex<Box<dyn Store>>>`);
//! - `pooled`: the store as it is, reads on pooled WAL readers beside the
//!   writer.
//!
//! The snapshot is this host's real inventory (a scan), its processes
//! repeated under other pids up to 1,000.
//!
//! usage: cargo bench -p patchgap-tests --bench commit   (PATCHGAP_BENCH_SECONDS, default 10)

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use patchgap_collector::{
    CollectorConfig, SqliteStore, Store,
    store::{
        AdvisoryMatch, AdvisoryRecord, Candidates, DeliveryOutcome, DeliveryRecord,
        DisabledEndpoint, EgressAlertRecord, EgressAlertUpsert, EgressBaselineRecord, EvidencePage,
        HostRow, IncidentCache, IncidentEventRecord, IncidentRecord, MatchScope, NewDelivery,
        PackageName, PackageSpan, PageLimit, ProcessChain, ProcessCursor, PutOutcome, Result,
        SbomRecord, Session, Verdict, WorkloadRow,
    },
};
use patchgap_proto::v1::{self, agent_message::Body};

const PROCESSES: usize = 1000;

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("PATCHGAP_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut inv = patchgap_agent::Scanner::new(Default::default()).scan();
    let real = inv.processes.clone();
    let mut pid = 4_000_000;
    while inv.processes.len() < PROCESSES {
        for p in &real {
            if inv.processes.len() == PROCESSES {
                break;
            }
            let mut p = p.clone();
            p.key.pid = pid;
            pid += 1;
            inv.processes.push(p);
        }
    }
    inv.processes.truncate(PROCESSES);
    println!(
        "commit bench: {} processes per snapshot ({} real), {seconds} s per phase",
        inv.processes.len(),
        real.len()
    );
    for mode in [Mode::OneLock, Mode::Pooled] {
        let r = measure(&inv, mode, Duration::from_secs(seconds)).await;
        println!(
            "{:>8}: FindPackage idle p50 {:.1} ms p99 {:.1} ms ({} queries); during commits p50 {:.1} ms p99 {:.1} ms ({} queries, {} snapshots committed, {:.0} ms each p50); p99 ratio during/idle {:.1}x",
            mode.name(),
            r.idle.0,
            r.idle.1,
            r.idle.2,
            r.busy.0,
            r.busy.1,
            r.busy.2,
            r.commits,
            r.commit_p50_ms,
            r.busy.1 / r.idle.1.max(0.001),
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    OneLock,
    Pooled,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::OneLock => "one lock",
            Mode::Pooled => "pooled",
        }
    }
}

struct Measured {
    /// p50 ms, p99 ms, count.
    idle: (f64, f64, usize),
    busy: (f64, f64, usize),
    commits: usize,
    commit_p50_ms: f64,
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, usize) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99), v.len())
}

async fn measure(inv: &patchgap_agent::model::Inventory, mode: Mode, phase: Duration) -> Measured {
    let data = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(data.path()).unwrap();
    let store: Arc<dyn Store> = match mode {
        Mode::OneLock => Arc::new(OneLock(Mutex::new(sqlite), Default::default())),
        Mode::Pooled => Arc::new(sqlite),
    };
    let now = inv.scanned_at_ms;
    let session = store
        .hello(
            &v1::Hello {
                host: Some(patchgap_agent::wire::host(&inv.host)),
                agent_version: "bench".into(),
                capabilities: Some(Default::default()),
                session_id: "bench".into(),
            },
            now,
        )
        .unwrap();
    let mut committer = Committer {
        inv: Arc::new(inv.clone()),
        session,
        seq: 0,
        now,
    };
    committer.commit(store.as_ref(), 0);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = CollectorConfig {
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    let server = tokio::spawn(patchgap_collector::serve(
        config,
        store.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let mut client = v1::query_client::QueryClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(1 << 30);
    let query = v1::FindPackageRequest {
        name: "libc6".into(),
        ..Default::default()
    };
    let mut run = async |until: Instant| {
        let mut lat = Vec::new();
        while Instant::now() < until {
            let t = Instant::now();
            let r = client
                .find_package(query.clone())
                .await
                .unwrap()
                .into_inner();
            assert!(!r.matches.is_empty(), "libc6 is mapped by every process");
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat
    };
    let idle = run(Instant::now() + phase).await;

    // The writer: full snapshots back to back, on its own thread.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let store = store.clone();
        let writing = writing.clone();
        std::thread::spawn(move || {
            let mut times = Vec::new();
            let mut n = 1;
            while writing.load(Ordering::Relaxed) {
                let t = Instant::now();
                committer.commit(store.as_ref(), n);
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                n += 1;
            }
            times
        })
    };
    let busy = run(Instant::now() + phase).await;
    writing.store(false, Ordering::Relaxed);
    let commits = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    let _ = stop.send(());
    let _ = server.await;
    let commit_p50_ms = percentiles(commits.clone()).0;
    Measured {
        idle: percentiles(idle),
        busy: percentiles(busy),
        commits: commits.len(),
        commit_p50_ms,
    }
}

/// Sends full snapshots of one agent session, as the agent does: in parts
/// under 4 MiB, each part one message (one transaction).
struct Committer {
    inv: Arc<patchgap_agent::model::Inventory>,
    session: Session,
    seq: u64,
    now: i64,
}

impl Committer {
    fn commit(&mut self, store: &dyn Store, n: usize) {
        let parts = patchgap_agent::wire::snapshot_parts(&self.inv, &format!("snap-{n}"), 4 << 20);
        for part in parts {
            self.seq += 1;
            let msg = v1::AgentMessage {
                seq: self.seq,
                body: Some(Body::Snapshot(part)),
            };
            store.apply(&self.session, &msg, self.now).unwrap();
        }
    }
}

/// Every call behind one lock: the store as the collector held it before.
struct OneLock(
    Mutex<SqliteStore>,
    patchgap_collector::store::singleton::LocalSingletons,
);

impl OneLock {
    fn with<T>(&self, f: impl FnOnce(&SqliteStore) -> T) -> T {
        f(&self.0.lock().unwrap())
    }
}

impl Store for OneLock {
    fn hello(&self, hello: &v1::Hello, now_ms: i64) -> Result<Session> {
        self.with(|s| s.hello(hello, now_ms))
    }
    fn apply(&self, session: &Session, msg: &v1::AgentMessage, now_ms: i64) -> Result<()> {
        self.with(|s| s.apply(session, msg, now_ms))
    }
    fn hosts(&self) -> Result<Vec<HostRow>> {
        self.with(|s| s.hosts())
    }
    fn hosts_for_coverage(&self) -> Result<Vec<HostRow>> {
        self.with(|s| s.hosts_for_coverage())
    }
    fn packages_named(&self, name: &PackageName<'_>) -> Result<Vec<(i64, v1::Package)>> {
        self.with(|s| s.packages_named(name))
    }
    fn packages_by_id(&self, ids: &[i64]) -> Result<Vec<(i64, v1::Package)>> {
        self.with(|s| s.packages_by_id(ids))
    }
    fn evidence_page(
        &self,
        ids: &[i64],
        window: Option<(i64, i64)>,
        after: Option<&ProcessCursor>,
        limit: PageLimit,
    ) -> Result<EvidencePage> {
        self.with(|s| s.evidence_page(ids, window, after, limit))
    }
    fn connections(&self, host: Option<&str>, since: i64) -> Result<Vec<v1::ConnectionSummary>> {
        self.with(|s| s.connections(host, since))
    }
    fn workloads(&self) -> Result<Vec<WorkloadRow>> {
        self.with(|s| s.workloads())
    }
    fn workloads_on(&self, hosts: &[String]) -> Result<Vec<WorkloadRow>> {
        self.with(|s| s.workloads_on(hosts))
    }
    fn inventory_gens(&self, hosts: Option<&[String]>) -> Result<Vec<(String, i64, i64)>> {
        self.with(|s| s.inventory_gens(hosts))
    }
    fn instance_first_start(&self, host: &str, instance: &str) -> Result<Option<i64>> {
        self.with(|s| s.instance_first_start(host, instance))
    }
    fn hostname_of_key(&self, host_key: &str) -> Result<Option<String>> {
        self.with(|s| s.hostname_of_key(host_key))
    }
    fn processes_page(
        &self,
        host: Option<&str>,
        after: Option<&ProcessCursor>,
        limit: usize,
    ) -> Result<Vec<(ProcessCursor, v1::ProcessSummary)>> {
        self.with(|s| s.processes_page(host, after, limit))
    }
    fn put_advisories(&self, a: &[AdvisoryRecord], replace: bool) -> Result<Vec<PutOutcome>> {
        self.with(|s| s.put_advisories(a, replace))
    }
    fn delete_advisory(&self, id: &str, rematch: &[String]) -> Result<Option<AdvisoryRecord>> {
        self.with(|s| s.delete_advisory(id, rematch))
    }
    fn pending_advisories(&self, limit: usize) -> Result<Vec<String>> {
        self.with(|s| s.pending_advisories(limit))
    }
    fn advisory(&self, id: &str) -> Result<Vec<AdvisoryRecord>> {
        self.with(|s| s.advisory(id))
    }
    fn advisories(&self, eco: Option<&str>) -> Result<Vec<AdvisoryRecord>> {
        self.with(|s| s.advisories(eco))
    }
    fn match_candidates(&self, scope: &MatchScope) -> Result<Candidates> {
        self.with(|s| s.match_candidates(scope))
    }
    fn put_matches(&self, scope: &MatchScope, m: &[AdvisoryMatch]) -> Result<()> {
        self.with(|s| s.put_matches(scope, m))
    }
    fn verdicts(&self, a: Option<&[String]>, fixed: bool) -> Result<Vec<Verdict>> {
        self.with(|s| s.verdicts(a, fixed))
    }
    fn put_sbom(&self, sbom: &SbomRecord) -> Result<PutOutcome> {
        self.with(|s| s.put_sbom(sbom))
    }
    fn sboms(&self, image: Option<&str>) -> Result<Vec<SbomRecord>> {
        self.with(|s| s.sboms(image))
    }
    fn append_audit(&self, e: &patchgap_collector::store::AuditEntry) -> Result<()> {
        self.with(|s| s.append_audit(e))
    }
    fn audit_head(&self) -> Result<Option<(i64, String)>> {
        self.with(|s| s.audit_head())
    }
    fn audit_entries(
        &self,
        after: i64,
        since: i64,
        limit: usize,
    ) -> Result<Vec<patchgap_collector::store::AuditEntry>> {
        self.with(|s| s.audit_entries(after, since, limit))
    }
    fn append_audit_checkpoint(
        &self,
        c: &patchgap_collector::store::AuditCheckpoint,
    ) -> Result<()> {
        self.with(|s| s.append_audit_checkpoint(c))
    }
    fn audit_checkpoints(&self) -> Result<Vec<patchgap_collector::store::AuditCheckpoint>> {
        self.with(|s| s.audit_checkpoints())
    }
    fn put_token(&self, t: &patchgap_collector::store::TokenRecord) -> Result<()> {
        self.with(|s| s.put_token(t))
    }
    fn tokens(&self) -> Result<Vec<patchgap_collector::store::TokenRecord>> {
        self.with(|s| s.tokens())
    }
    fn revoke_token(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<patchgap_collector::store::TokenRecord>> {
        self.with(|s| s.revoke_token(id, now_ms))
    }
    fn open_incident(
        &self,
        dedup_key: &str,
        created_ms: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<(IncidentRecord, bool)> {
        self.with(|s| s.open_incident(dedup_key, created_ms, events, cache))
    }
    fn append_incident_events(
        &self,
        id: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<IncidentRecord> {
        self.with(|s| s.append_incident_events(id, events, cache))
    }
    fn incident(&self, id: i64) -> Result<Option<IncidentRecord>> {
        self.with(|s| s.incident(id))
    }
    fn open_incident_by_key(&self, dedup_key: &str) -> Result<Option<IncidentRecord>> {
        self.with(|s| s.open_incident_by_key(dedup_key))
    }
    fn incidents(
        &self,
        before: Option<i64>,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<IncidentRecord>> {
        self.with(|s| s.incidents(before, open_only, limit))
    }
    fn incident_events(
        &self,
        id: i64,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<IncidentEventRecord>> {
        self.with(|s| s.incident_events(id, after_seq, limit))
    }
    fn enqueue_delivery(&self, delivery: &NewDelivery) -> Result<bool> {
        self.with(|s| s.enqueue_delivery(delivery))
    }
    fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        self.with(|s| s.claim_deliveries(now_ms, lease_ms, limit))
    }
    fn finish_delivery(&self, id: i64, now_ms: i64, outcome: &DeliveryOutcome) -> Result<()> {
        self.with(|s| s.finish_delivery(id, now_ms, outcome))
    }
    fn deliveries(&self, incident: Option<i64>, limit: usize) -> Result<Vec<DeliveryRecord>> {
        self.with(|s| s.deliveries(incident, limit))
    }
    fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>> {
        self.with(|s| s.disabled_endpoints())
    }
    fn enable_endpoint(&self, name: &str) -> Result<bool> {
        self.with(|s| s.enable_endpoint(name))
    }
    fn put_egress_baseline(
        &self,
        key: &str,
        expected_version: i64,
        updated_ms: i64,
        body: &str,
    ) -> Result<EgressBaselineRecord> {
        self.with(|s| s.put_egress_baseline(key, expected_version, updated_ms, body))
    }
    fn egress_baseline(
        &self,
        key: &str,
        version: Option<i64>,
    ) -> Result<Option<EgressBaselineRecord>> {
        self.with(|s| s.egress_baseline(key, version))
    }
    fn egress_baselines(&self) -> Result<Vec<EgressBaselineRecord>> {
        self.with(|s| s.egress_baselines())
    }
    fn upsert_egress_alert(
        &self,
        alert: &EgressAlertUpsert<'_>,
    ) -> Result<(EgressAlertRecord, bool)> {
        self.with(|s| s.upsert_egress_alert(alert))
    }
    fn resolve_egress_alerts(
        &self,
        quiet_before_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<EgressAlertRecord>> {
        self.with(|s| s.resolve_egress_alerts(quiet_before_ms, now_ms))
    }
    fn process_chain(
        &self,
        host: i64,
        key: &v1::ProcessKey,
        depth: usize,
    ) -> Result<Option<ProcessChain>> {
        self.with(|s| s.process_chain(host, key, depth))
    }
    fn open_egress_alert(&self, dedup_key: &str) -> Result<Option<EgressAlertRecord>> {
        self.with(|s| s.open_egress_alert(dedup_key))
    }
    fn egress_alert(&self, id: i64) -> Result<Option<EgressAlertRecord>> {
        self.with(|s| s.egress_alert(id))
    }
    fn egress_alerts(&self, since_ms: i64, limit: usize) -> Result<Vec<EgressAlertRecord>> {
        self.with(|s| s.egress_alerts(since_ms, limit))
    }

    fn workload_instances(&self, seen_since_ms: i64, limit: usize) -> Result<Vec<WorkloadRow>> {
        self.with(|s| s.workload_instances(seen_since_ms, limit))
    }

    fn workload_package_spans(
        &self,
        host_id: &str,
        workload: &str,
        after_ms: i64,
        limit: usize,
    ) -> Result<Vec<PackageSpan>> {
        self.with(|s| s.workload_package_spans(host_id, workload, after_ms, limit))
    }
    fn try_singleton(
        &self,
        name: &str,
    ) -> Result<Option<patchgap_collector::store::Singleton<'_>>> {
        Ok(self.1.try_take(name))
    }
    fn prune_history(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<patchgap_collector::store::PruneStep> {
        self.with(|s| s.prune_history(before_ms, limit))
    }
    fn compact_history(&self, limit: usize) -> Result<u64> {
        self.with(|s| s.compact_history(limit))
    }
    fn history_cutoff(&self, nth: usize) -> Result<Option<i64>> {
        self.with(|s| s.history_cutoff(nth))
    }
    fn storage_use(&self) -> Result<patchgap_collector::store::StorageUse> {
        self.with(|s| s.storage_use())
    }
    fn reclaim(&self, max_bytes: u64) -> Result<u64> {
        self.with(|s| s.reclaim(max_bytes))
    }
    fn flush(&self) -> Result<()> {
        self.with(|s| s.flush())
    }
    fn set_retention_horizon(&self, horizon_ms: i64, now_ms: i64) -> Result<()> {
        self.with(|s| s.set_retention_horizon(horizon_ms, now_ms))
    }
    fn retention_horizon(&self) -> Result<Option<i64>> {
        self.with(|s| s.retention_horizon())
    }
}
