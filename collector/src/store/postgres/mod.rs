//! The PostgreSQL store: the same [`Store`] contract as SQLite's, for a
//! fleet that outgrows one file (issue 19). The SQL is organised per area
//! like `sqlite/` (ingest, fleet, packages, advisories, sboms, audit,
//! incidents, outbox, egress), so a method added to the trait gets its
//! PostgreSQL twin beside its SQLite one.
//!
//! **Invariant:** the store knows nothing of gRPC, the API or the response
//! engine, and holds no connection string with its password in anything
//! it prints ([`PgTarget`] redacts it).
//!
//! ## Why the synchronous `postgres` client and a small pool of our own
//!
//! [`Store`] is a sync trait, called from blocking threads
//! (`spawn_blocking`) and from tests. The `postgres` crate is the
//! tokio-postgres project's own blocking wrapper: each client drives its
//! tokio-postgres connection on a private current-thread runtime, so a
//! store call blocks its (blocking) thread and nothing else, exactly like
//! a rusqlite call. With tokio-postgres and deadpool we would need a
//! runtime handle to `block_on` from those same threads, and would add
//! deadpool, deadpool-runtime and their async plumbing to wrap it back
//! into a sync trait. The pool here is a `Mutex<Vec<Client>>` of idle
//! clients (more are connected when all are busy, at most
//! [`MAX_IDLE`] are kept, a broken one is dropped), which is all a sync
//! caller needs. Like any blocking client, it must not be called on an
//! async worker thread (the private runtime refuses to nest): the
//! collector already keeps store calls off those.
//!
//! ## Transactions
//!
//! Every write is one transaction, as in SQLite: `apply` commits the
//! message with its sequence number, so an ack after it returns is never
//! a lie and a resend is recognised. SQLite serialises writers with one
//! lock; here rows are locked where a check and a write must see the same
//! state (`SELECT … FOR UPDATE` on the host row in `apply`, on the audit
//! head, on the incident row), and the few "one per key" rules are unique
//! indexes the insert relies on (`ON CONFLICT`).

use std::sync::Mutex;

use patchgap_proto::v1;
use postgres::{Client, NoTls};

use crate::store::{
    AdvisoryMatch, AdvisoryRecord, AuditCheckpoint, AuditEntry, Candidates, DeliveryOutcome,
    DeliveryRecord, DisabledEndpoint, EgressAlertRecord, EgressAlertUpsert, EgressBaselineRecord,
    EvidencePage, HostRow, IncidentCache, IncidentEventRecord, IncidentRecord, MatchScope,
    NewDelivery, PackageName, PackageSpan, PageLimit, ProcessChain, ProcessCursor, PutOutcome,
    Result, SbomRecord, Session, Store, StoreError, TokenRecord, Verdict, WorkloadRow,
};

mod advisories;
mod audit;
mod changes;
mod egress;
mod fleet;
mod incidents;
mod ingest;
mod outbox;
mod packages;
mod retention;
mod sboms;
mod schema;
mod singleton;
mod target;

pub use target::PgTarget;

/// A throwaway PostgreSQL 15 for tests (std only; `tests/src/lib.rs`
/// includes the same file by path).
#[cfg(test)]
#[allow(dead_code)] // Some of it serves only the end-to-end tests.
pub(crate) mod harness;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        StoreError::backend(e)
    }
}

/// Idle clients kept for reuse.
const MAX_IDLE: usize = 8;

/// Agent messages of different hosts stored at once (see
/// `Store::parallel_writes`).
const PARALLEL_WRITES: usize = 4;

/// The PostgreSQL backend: a connection target and a pool of clients.
pub struct PgStore {
    target: PgTarget,
    config: postgres::Config,
    /// Each with the statements `apply` prepared on it (see `Conn`).
    idle: Mutex<Vec<(Client, ingest::Statements)>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A pooled client, returned to the pool when dropped (unless its
/// connection broke).
struct Conn<'a> {
    client: Option<Client>,
    /// Statements prepared on this client by earlier messages' `apply`,
    /// kept with it: a message's statements are the same few every time,
    /// and preparing them anew cost a round trip and a plan each.
    statements: ingest::Statements,
    store: &'a PgStore,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("a pooled client until dropped")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("a pooled client until dropped")
    }
}

impl Drop for Conn<'_> {
    /// A client whose connection broke is dropped, and so are the idle
    /// ones: they were connected to the same server, which most likely
    /// went away (a failover, a restart), and each would fail its next
    /// call, costing an agent its ack and a reconnect. Connecting anew
    /// reaches whatever the address leads to now (through HAProxy, the new
    /// primary), so one failed call per collector is the price of a
    /// failover rather than one per idle client.
    fn drop(&mut self) {
        let Some(c) = self.client.take() else { return };
        let statements = std::mem::take(&mut self.statements);
        let mut idle = self.store.idle.lock().unwrap_or_else(|e| e.into_inner());
        if c.is_closed() {
            let stale = std::mem::take(&mut *idle);
            drop(idle);
            drop(statements);
            drop(stale);
        } else if idle.len() < MAX_IDLE {
            idle.push((c, statements));
        }
    }
}

impl Drop for PgStore {
    /// Closing a client blocks on its private runtime, which panics on a
    /// thread that drives async tasks (the collector drops its store at
    /// the end of `main`): the idle clients are closed on a thread of
    /// their own.
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|e| e.into_inner()));
        if idle.is_empty() {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("pg-close".into())
            .spawn(move || drop(idle))
            .map(|t| t.join());
    }
}

impl PgStore {
    /// Connects to `target` (a `postgres://USER@HOST:PORT/DB` URL or a
    /// libpq key=value string) and migrates the database. A database with
    /// a newer schema is refused ([`StoreError::SchemaTooNew`]).
    pub fn connect(target: &PgTarget) -> Result<PgStore> {
        let store = PgStore {
            config: target.config()?,
            target: target.clone(),
            idle: Mutex::new(Vec::new()),
        };
        schema::migrate(&mut *store.conn()?)?;
        Ok(store)
    }

    /// Where this store connects, password redacted.
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// A client from the pool, or a new connection.
    fn conn(&self) -> Result<Conn<'_>> {
        // One known to be closed is skipped (most are not known to be
        // until used: see `Conn`'s drop).
        let idle = loop {
            match self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                Some((c, _)) if c.is_closed() => continue,
                other => break other,
            }
        };
        let (client, statements) = match idle {
            Some(pooled) => pooled,
            None => (
                self.config
                    .connect(NoTls)
                    .map_err(|e| StoreError::Backend {
                        source: format!("cannot connect to {}: {e}", self.target).into(),
                    })?,
                Default::default(),
            ),
        };
        Ok(Conn {
            client: Some(client),
            statements,
            store: self,
        })
    }

    /// How many migrations the database has run.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn()?
            .query_one("SELECT version FROM schema_version", &[])?
            .get(0))
    }
}

impl Store for PgStore {
    fn hello(&self, hello: &v1::Hello, now_ms: i64) -> Result<Session> {
        ingest::hello(&mut *self.conn()?, hello, now_ms)
    }

    fn apply(&self, session: &Session, msg: &v1::AgentMessage, now_ms: i64) -> Result<()> {
        let mut conn = self.conn()?;
        let mut statements = std::mem::take(&mut conn.statements);
        let applied = ingest::apply(&mut conn, &mut statements, session, msg, now_ms);
        conn.statements = statements;
        applied
    }

    fn apply_heartbeats(
        &self,
        beats: &[(Session, v1::AgentMessage)],
        now_ms: i64,
    ) -> Vec<Result<()>> {
        match self
            .conn()
            .and_then(|mut conn| ingest::heartbeats(&mut conn, beats, now_ms))
        {
            Ok(each) => each,
            // The batch failed as a whole: so did each heartbeat in it.
            Err(e) => {
                let why = e.chain();
                beats
                    .iter()
                    .map(|_| Err(StoreError::backend(std::io::Error::other(why.clone()))))
                    .collect()
            }
        }
    }

    fn hosts(&self) -> Result<Vec<HostRow>> {
        fleet::hosts(&mut *self.conn()?, true)
    }

    fn hosts_for_coverage(&self) -> Result<Vec<HostRow>> {
        fleet::hosts(&mut *self.conn()?, false)
    }

    fn instance_first_start(&self, host: &str, instance: &str) -> Result<Option<i64>> {
        fleet::instance_first_start(&mut *self.conn()?, host, instance)
    }

    fn hostname_of_key(&self, host_key: &str) -> Result<Option<String>> {
        fleet::hostname_of_key(&mut *self.conn()?, host_key)
    }

    /// Several collectors already write one database at once (a message
    /// locks its host row; interning is `ON CONFLICT`), so one collector's
    /// writers may too: while one waits on the server, another runs.
    fn parallel_writes(&self) -> usize {
        PARALLEL_WRITES
    }

    fn workload_instances(&self, seen_since_ms: i64, limit: usize) -> Result<Vec<WorkloadRow>> {
        changes::workload_instances(&mut *self.conn()?, seen_since_ms, limit)
    }

    fn workload_package_spans(
        &self,
        host_id: &str,
        workload: &str,
        after_ms: i64,
        limit: usize,
    ) -> Result<Vec<PackageSpan>> {
        changes::package_spans(&mut *self.conn()?, host_id, workload, after_ms, limit)
    }

    fn try_singleton(&self, name: &str) -> Result<Option<crate::store::Singleton<'_>>> {
        singleton::try_singleton(self.conn()?, name)
    }

    fn prune_history(&self, before_ms: i64, limit: usize) -> Result<crate::store::PruneStep> {
        retention::prune(&mut *self.conn()?, before_ms, limit)
    }

    fn compact_history(&self, limit: usize) -> Result<u64> {
        retention::compact(&mut *self.conn()?, limit)
    }

    fn history_cutoff(&self, nth: usize) -> Result<Option<i64>> {
        retention::cutoff(&mut *self.conn()?, nth)
    }

    fn storage_use(&self) -> Result<crate::store::StorageUse> {
        retention::storage(&mut *self.conn()?)
    }

    fn reclaim(&self, _max_bytes: u64) -> Result<u64> {
        // PostgreSQL reuses freed space; autovacuum owns it.
        Ok(0)
    }

    fn flush(&self) -> Result<()> {
        // Every commit is in the server's hands already.
        Ok(())
    }

    fn set_retention_horizon(&self, horizon_ms: i64, now_ms: i64) -> Result<()> {
        retention::set_horizon(&mut *self.conn()?, horizon_ms, now_ms)
    }

    fn retention_horizon(&self) -> Result<Option<i64>> {
        retention::horizon(&mut *self.conn()?)
    }

    fn packages_named(&self, q: &PackageName<'_>) -> Result<Vec<(i64, v1::Package)>> {
        packages::packages_named(&mut *self.conn()?, q)
    }

    fn packages_by_id(&self, ids: &[i64]) -> Result<Vec<(i64, v1::Package)>> {
        packages::packages_by_id(&mut *self.conn()?, ids)
    }

    fn evidence_page(
        &self,
        package_ids: &[i64],
        window: Option<(i64, i64)>,
        after: Option<&ProcessCursor>,
        limit: PageLimit,
    ) -> Result<EvidencePage> {
        // One snapshot for the whole page: ingest committing between its
        // queries cannot show a process with half its evidence.
        let mut conn = self.conn()?;
        let mut tx = conn
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let page = packages::evidence_page(&mut tx, package_ids, window, after, limit)?;
        tx.commit()?;
        Ok(page)
    }

    fn workloads(&self) -> Result<Vec<WorkloadRow>> {
        fleet::workloads(&mut *self.conn()?, None)
    }

    fn workloads_on(&self, hostnames: &[String]) -> Result<Vec<WorkloadRow>> {
        fleet::workloads(&mut *self.conn()?, Some(hostnames))
    }

    fn inventory_gens(&self, hostnames: Option<&[String]>) -> Result<Vec<(String, i64, i64)>> {
        fleet::inventory_gens(&mut *self.conn()?, hostnames)
    }

    fn connections(&self, host: Option<&str>, since_ms: i64) -> Result<Vec<v1::ConnectionSummary>> {
        fleet::connections(&mut *self.conn()?, host, since_ms)
    }

    fn processes_page(
        &self,
        host: Option<&str>,
        after: Option<&ProcessCursor>,
        limit: usize,
    ) -> Result<Vec<(ProcessCursor, v1::ProcessSummary)>> {
        let mut conn = self.conn()?;
        let mut tx = conn
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let page = fleet::processes_page(&mut tx, host, after, limit)?;
        tx.commit()?;
        Ok(page)
    }

    fn put_advisories(
        &self,
        advisories: &[AdvisoryRecord],
        replace: bool,
    ) -> Result<Vec<PutOutcome>> {
        advisories::put_advisories(&mut *self.conn()?, advisories, replace)
    }

    fn delete_advisory(&self, id: &str, rematch: &[String]) -> Result<Option<AdvisoryRecord>> {
        advisories::delete_advisory(&mut *self.conn()?, id, rematch)
    }

    fn pending_advisories(&self, limit: usize) -> Result<Vec<String>> {
        advisories::pending_advisories(&mut *self.conn()?, limit)
    }

    fn advisory(&self, id_or_alias: &str) -> Result<Vec<AdvisoryRecord>> {
        advisories::advisory(&mut *self.conn()?, id_or_alias)
    }

    fn advisories(&self, ecosystem: Option<&str>) -> Result<Vec<AdvisoryRecord>> {
        advisories::advisories(&mut *self.conn()?, ecosystem)
    }

    fn match_candidates(&self, scope: &MatchScope) -> Result<Candidates> {
        advisories::match_candidates(&mut *self.conn()?, scope)
    }

    fn put_matches(&self, scope: &MatchScope, matches: &[AdvisoryMatch]) -> Result<()> {
        advisories::put_matches(&mut *self.conn()?, scope, matches)
    }

    fn verdicts(&self, advisories: Option<&[String]>, include_fixed: bool) -> Result<Vec<Verdict>> {
        advisories::verdicts(&mut *self.conn()?, advisories, include_fixed)
    }

    fn put_sbom(&self, sbom: &SbomRecord) -> Result<PutOutcome> {
        sboms::put_sbom(&mut *self.conn()?, sbom)
    }

    fn sboms(&self, image: Option<&str>) -> Result<Vec<SbomRecord>> {
        sboms::sboms(&mut *self.conn()?, image)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        audit::append(&mut *self.conn()?, entry)
    }

    fn audit_head(&self) -> Result<Option<(i64, String)>> {
        audit::head(&mut *self.conn()?)
    }

    fn audit_entries(
        &self,
        after_seq: i64,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        audit::entries(&mut *self.conn()?, after_seq, since_ms, limit)
    }

    fn append_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<()> {
        audit::append_checkpoint(&mut *self.conn()?, checkpoint)
    }

    fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        audit::checkpoints(&mut *self.conn()?)
    }

    fn put_token(&self, token: &TokenRecord) -> Result<()> {
        audit::put_token(&mut *self.conn()?, token)
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        audit::tokens(&mut *self.conn()?)
    }

    fn revoke_token(&self, id: &str, now_ms: i64) -> Result<Option<TokenRecord>> {
        audit::revoke_token(&mut *self.conn()?, id, now_ms)
    }

    fn open_incident(
        &self,
        dedup_key: &str,
        created_ms: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<(IncidentRecord, bool)> {
        incidents::open(&mut *self.conn()?, dedup_key, created_ms, events, cache)
    }

    fn append_incident_events(
        &self,
        id: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<IncidentRecord> {
        incidents::append(&mut *self.conn()?, id, events, cache)
    }

    fn incident(&self, id: i64) -> Result<Option<IncidentRecord>> {
        incidents::get(&mut *self.conn()?, id)
    }

    fn open_incident_by_key(&self, dedup_key: &str) -> Result<Option<IncidentRecord>> {
        incidents::by_key(&mut *self.conn()?, dedup_key)
    }

    fn incidents(
        &self,
        before: Option<i64>,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<IncidentRecord>> {
        incidents::list(&mut *self.conn()?, before, open_only, limit)
    }

    fn incident_events(
        &self,
        id: i64,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<IncidentEventRecord>> {
        incidents::events(&mut *self.conn()?, id, after_seq, limit)
    }

    fn enqueue_delivery(&self, delivery: &NewDelivery) -> Result<bool> {
        outbox::enqueue(&mut *self.conn()?, delivery)
    }

    fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        outbox::claim(&mut *self.conn()?, now_ms, lease_ms, limit)
    }

    fn finish_delivery(&self, id: i64, now_ms: i64, outcome: &DeliveryOutcome) -> Result<()> {
        outbox::finish(&mut *self.conn()?, id, now_ms, outcome)
    }

    fn deliveries(&self, incident: Option<i64>, limit: usize) -> Result<Vec<DeliveryRecord>> {
        outbox::list(&mut *self.conn()?, incident, limit)
    }

    fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>> {
        outbox::disabled(&mut *self.conn()?)
    }

    fn enable_endpoint(&self, name: &str) -> Result<bool> {
        outbox::enable(&mut *self.conn()?, name)
    }

    fn put_egress_baseline(
        &self,
        key: &str,
        expected_version: i64,
        updated_ms: i64,
        body: &str,
    ) -> Result<EgressBaselineRecord> {
        egress::put_baseline(&mut *self.conn()?, key, expected_version, updated_ms, body)
    }

    fn egress_baseline(
        &self,
        key: &str,
        version: Option<i64>,
    ) -> Result<Option<EgressBaselineRecord>> {
        egress::baseline(&mut *self.conn()?, key, version)
    }

    fn egress_baselines(&self) -> Result<Vec<EgressBaselineRecord>> {
        egress::baselines(&mut *self.conn()?)
    }

    fn upsert_egress_alert(
        &self,
        alert: &EgressAlertUpsert<'_>,
    ) -> Result<(EgressAlertRecord, bool)> {
        egress::upsert_alert(&mut *self.conn()?, alert)
    }

    fn resolve_egress_alerts(
        &self,
        quiet_before_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<EgressAlertRecord>> {
        egress::resolve_alerts(&mut *self.conn()?, quiet_before_ms, now_ms)
    }

    fn process_chain(
        &self,
        host: i64,
        key: &v1::ProcessKey,
        depth: usize,
    ) -> Result<Option<ProcessChain>> {
        egress::process_chain(&mut *self.conn()?, host, key, depth)
    }

    fn open_egress_alert(&self, dedup_key: &str) -> Result<Option<EgressAlertRecord>> {
        egress::open_alert(&mut *self.conn()?, dedup_key)
    }

    fn egress_alert(&self, id: i64) -> Result<Option<EgressAlertRecord>> {
        egress::alert(&mut *self.conn()?, id)
    }

    fn egress_alerts(&self, since_ms: i64, limit: usize) -> Result<Vec<EgressAlertRecord>> {
        egress::alerts(&mut *self.conn()?, since_ms, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::Cluster;

    fn fresh() -> Option<(harness::TestDatabase, PgTarget)> {
        let db = Cluster::shared()?.database();
        let target = PgTarget::new(&db.url()).expect("target");
        Some((db, target))
    }

    /// When the server ends the pool's connections (as a failover does),
    /// one call fails and the next connects anew, rather than every idle
    /// client failing in turn, each an agent message without its ack.
    #[test]
    fn broken_connections_leave_the_pool_at_the_first_failure() {
        let Some((db, target)) = fresh() else { return };
        let store = PgStore::connect(&target).unwrap();
        // Four idle clients.
        let held: Vec<Conn<'_>> = (0..4).map(|_| store.conn().unwrap()).collect();
        drop(held);
        assert_eq!(store.idle.lock().unwrap().len(), 4);
        let mut admin = postgres::Client::connect(&db.url(), NoTls).unwrap();
        let ended = admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db.name()],
            )
            .unwrap();
        assert_eq!(ended, 4, "the pool's four backends ended");
        // Ended, not only signalled.
        for _ in 0..500 {
            let left: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&db.name()],
                )
                .unwrap()
                .get(0);
            if left == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut failures = 0;
        while store.schema_version().is_err() {
            failures += 1;
            assert!(failures <= 4, "the pool never recovered");
        }
        assert_eq!(failures, 1, "only the first call after the failover fails");
        assert_eq!(store.schema_version().unwrap(), schema::KNOWN_VERSION);
    }

    /// Two ingests naming the same stored packages in opposite orders (two
    /// collectors' agents, one database) both commit: a package stored
    /// already is read, not upserted, so neither holds a row lock the other
    /// waits for (an upsert's lock made one of them a deadlock victim).
    #[test]
    fn ingests_naming_stored_packages_in_opposite_orders_do_not_deadlock() {
        let Some((_db, target)) = fresh() else { return };
        let store = PgStore::connect(&target).unwrap();
        let package = |name: &str| v1::Package {
            ecosystem: "deb".into(),
            name: name.into(),
            version: "1.0".into(),
            fixed_cves: vec!["CVE-2024-0001".into()],
            ..Default::default()
        };
        let (a, b) = (package("liba"), package("libb"));
        {
            let mut conn = store.conn().unwrap();
            let mut tx = conn.transaction().unwrap();
            let mut interner = ingest::Interner::default();
            interner.package(&mut tx, &a).unwrap();
            interner.package(&mut tx, &b).unwrap();
            tx.commit().unwrap();
        }
        let barrier = std::sync::Barrier::new(2);
        let ingest = |first: &v1::Package, second: &v1::Package| -> Result<()> {
            let mut conn = store.conn()?;
            let mut tx = conn.transaction()?;
            let mut interner = ingest::Interner::default();
            interner.package(&mut tx, first)?;
            // Both hold their first package before either takes its second.
            barrier.wait();
            interner.package(&mut tx, second)?;
            tx.commit()?;
            Ok(())
        };
        let (one, two) = std::thread::scope(|s| {
            let one = s.spawn(|| ingest(&a, &b));
            let two = s.spawn(|| ingest(&b, &a));
            (one.join().unwrap(), two.join().unwrap())
        });
        assert!(
            one.is_ok() && two.is_ok(),
            "both ingests commit: {one:?} {two:?}"
        );
    }

    /// A database migrated by a newer collector is refused, like SQLite's,
    /// and nothing is changed in it.
    #[test]
    fn a_newer_schema_is_refused() {
        let Some((_db, target)) = fresh() else { return };
        let store = PgStore::connect(&target).unwrap();
        assert_eq!(store.schema_version().unwrap(), schema::KNOWN_VERSION);
        store
            .conn()
            .unwrap()
            .execute("UPDATE schema_version SET version = version + 1", &[])
            .unwrap();
        drop(store);
        match PgStore::connect(&target) {
            Err(StoreError::SchemaTooNew { found, known }) => {
                assert_eq!(
                    (found, known),
                    (schema::KNOWN_VERSION + 1, schema::KNOWN_VERSION)
                );
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    /// Collectors starting together on one empty database all connect,
    /// and the schema is made once (a second run of migration 1 would
    /// fail on its CREATE TABLEs).
    #[test]
    fn concurrent_first_connects_migrate_once() {
        let Some((_db, target)) = fresh() else { return };
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let (target, barrier) = (target.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    PgStore::connect(&target).map(|s| s.schema_version().unwrap())
                })
            })
            .collect();
        for open in opens {
            assert_eq!(open.join().unwrap().unwrap(), schema::KNOWN_VERSION);
        }
    }

    /// A server that is not there: the error names the target without its
    /// password.
    #[test]
    fn connect_errors_redact_the_password() {
        let target = PgTarget::new("postgres://patchgap:s3cret@127.0.0.1:1/fleet").unwrap();
        let err = PgStore::connect(&target).unwrap_err();
        let chain = err.chain();
        assert!(chain.contains("patchgap:***@127.0.0.1:1/fleet"), "{chain}");
        assert!(!chain.contains("s3cret"), "{chain}");
        assert!(!format!("{err:?}").contains("s3cret"));
    }

    /// The pool hands a client back and reuses it; a broken one is dropped.
    #[test]
    fn the_pool_reuses_clients() {
        let Some((_db, target)) = fresh() else { return };
        let store = PgStore::connect(&target).unwrap();
        let pid = |s: &PgStore| -> i32 {
            s.conn()
                .unwrap()
                .query_one("SELECT pg_backend_pid()", &[])
                .unwrap()
                .get(0)
        };
        let first = pid(&store);
        assert_eq!(pid(&store), first, "an idle client is reused");
        {
            let mut c = store.conn().unwrap();
            // Ends this backend: the client is closed once it notices.
            let _ = c.batch_execute("SELECT pg_terminate_backend(pg_backend_pid())");
            let _ = c.batch_execute("SELECT 1");
        }
        assert_ne!(pid(&store), first, "a broken client went back to the pool");
    }
}
