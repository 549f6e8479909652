//! The SQLite store: the default backend, one file in the data directory.
//!
//! Thousands of processes share the same few sets of libraries, so each
//! distinct set of artifacts is stored once (`artifact_set`, keyed by its
//! sorted member ids) and a process points at its set. The exposure query
//! walks package → artifact → set → running process → host.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use patchgap_proto::v1;
use rusqlite::{Connection, OpenFlags};

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
pub mod file;
mod fleet;
mod incidents;
mod ingest;
mod outbox;
mod packages;
mod retention;
mod sboms;
mod schema;

use schema::migrate;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::backend(e)
    }
}

/// One writer connection, and for a database file a pool of read-only
/// connections: WAL lets each reader see the last commit while the writer
/// holds its transaction, so a large snapshot commit does not stall
/// queries. An in-memory database has one connection for both.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    readers: Option<Readers>,
    /// One collector per file: the singleton passes are held in memory.
    singletons: crate::store::singleton::LocalSingletons,
}

/// Idle read-only connections to the database file; more are opened when
/// all are busy, and at most `MAX_IDLE_READERS` are kept.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

const MAX_IDLE_READERS: usize = 8;

/// A connection to read with: a pooled reader (returned to the pool when
/// dropped) or, for an in-memory database, the writer.
enum Reader<'a> {
    Pooled(Option<Connection>, &'a Readers),
    Writer(MutexGuard<'a, Connection>),
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            Reader::Pooled(c, _) => c.as_ref().expect("a pooled reader until dropped"),
            Reader::Writer(g) => g,
        }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Reader::Pooled(c, pool) = self
            && let Some(c) = c.take()
        {
            let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE_READERS {
                idle.push(c);
            }
        }
    }
}

impl SqliteStore {
    /// Opens `patchgap.db` in `data_dir` (creating it where no file of
    /// that name exists), checks it and migrates it. The directory is made
    /// 0700 and the database file 0600 (SQLite gives its -wal and -shm
    /// files the database file's mode), so only the collector's user reads
    /// the fleet's inventory and the audit log. A file that is not a
    /// patchgap store is refused ([`StoreError::Foreign`]), and one that
    /// fails SQLite's quick check too ([`StoreError::Corrupt`]), each
    /// naming the file: see [`file`].
    pub fn open(data_dir: &Path) -> Result<SqliteStore> {
        let dir_error = |source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        };
        private_dir(data_dir).map_err(dir_error)?;
        file::create_if_missing(data_dir)?;
        let path = data_dir.join(file::FILE);
        file::identify(&path)?;
        private_file(&path).map_err(dir_error)?;
        // A database from before schema 12 may have left these readable.
        // Another opener's last close may remove them at any moment.
        for side in ["patchgap.db-wal", "patchgap.db-shm"] {
            let side = data_dir.join(side);
            match private_file(&side) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                made => made.map_err(|source| StoreError::DataDir { path: side, source })?,
            }
        }
        // Never created here: `create_if_missing` made it whole.
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        file::identify_tables(&path, &conn)?;
        let started = std::time::Instant::now();
        file::quick_check(&path, &conn)?;
        tracing::debug!(path = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "store passed its quick check");
        let store = Self::init(
            conn,
            Some(Readers {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
            }),
        )
        .map_err(|e| match e {
            StoreError::Backend { source } => match source.downcast::<rusqlite::Error>() {
                Ok(e) => file::corrupt_or(&path, *e),
                Err(source) => StoreError::Backend { source },
            },
            e => e,
        })?;
        // Stores from before the application id get it now.
        let w = store.write();
        let app: i32 = w.pragma_query_value(None, "application_id", |r| r.get(0))?;
        if app == 0 {
            w.pragma_update(None, "application_id", file::APPLICATION_ID)?;
        }
        drop(w);
        Ok(store)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<SqliteStore> {
        let conn = Connection::open_in_memory()?;
        // Before the first table, as for a file (see `retention`).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        Self::init(conn, None)
    }

    fn init(mut conn: Connection, readers: Option<Readers>) -> Result<SqliteStore> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL lets readers run beside the writer; synchronous=FULL makes a
        // commit survive power loss, which is what an ack promises.
        // Switching a fresh file to WAL needs it to itself, and SQLite
        // answers BUSY without waiting when another process (`token
        // issue` beside a starting collector) has it open: retry a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other?,
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            writer: Mutex::new(conn),
            readers,
            singletons: Default::default(),
        })
    }

    /// The writer. Callers serialize writes above the store; this lock
    /// only keeps one connection's use exclusive.
    fn write(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection to read from, without waiting for the writer when the
    /// database is a file.
    fn read(&self) -> Result<Reader<'_>> {
        let Some(pool) = &self.readers else {
            return Ok(Reader::Writer(self.write()));
        };
        let idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &pool.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX
                        | OpenFlags::SQLITE_OPEN_URI,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c
            }
        };
        Ok(Reader::Pooled(Some(conn), pool))
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .read()?
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }
}

/// Creates `dir` (and its parents) if needed, and makes it 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Makes an existing file 0600.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

impl Store for SqliteStore {
    fn hello(&self, hello: &v1::Hello, now_ms: i64) -> Result<Session> {
        ingest::hello(&mut self.write(), hello, now_ms)
    }

    fn apply(&self, session: &Session, msg: &v1::AgentMessage, now_ms: i64) -> Result<()> {
        ingest::apply(&mut self.write(), session, msg, now_ms)
    }

    fn hosts(&self) -> Result<Vec<HostRow>> {
        fleet::hosts(&*self.read()?, true)
    }

    fn hosts_for_coverage(&self) -> Result<Vec<HostRow>> {
        fleet::hosts(&*self.read()?, false)
    }

    fn packages_named(&self, q: &PackageName<'_>) -> Result<Vec<(i64, v1::Package)>> {
        packages::packages_named(&*self.read()?, q)
    }

    fn packages_by_id(&self, ids: &[i64]) -> Result<Vec<(i64, v1::Package)>> {
        packages::packages_by_id(&*self.read()?, ids)
    }

    fn evidence_page(
        &self,
        package_ids: &[i64],
        window: Option<(i64, i64)>,
        after: Option<&ProcessCursor>,
        limit: PageLimit,
    ) -> Result<EvidencePage> {
        packages::evidence_page(&*self.read()?, package_ids, window, after, limit)
    }

    fn workloads(&self) -> Result<Vec<WorkloadRow>> {
        fleet::workloads(&*self.read()?, None)
    }

    fn workloads_on(&self, hostnames: &[String]) -> Result<Vec<WorkloadRow>> {
        fleet::workloads(&*self.read()?, Some(hostnames))
    }

    fn inventory_gens(&self, hostnames: Option<&[String]>) -> Result<Vec<(String, i64, i64)>> {
        fleet::inventory_gens(&*self.read()?, hostnames)
    }

    fn connections(&self, host: Option<&str>, since_ms: i64) -> Result<Vec<v1::ConnectionSummary>> {
        fleet::connections(&*self.read()?, host, since_ms)
    }

    fn instance_first_start(&self, host: &str, instance: &str) -> Result<Option<i64>> {
        fleet::instance_first_start(&*self.read()?, host, instance)
    }

    fn hostname_of_key(&self, host_key: &str) -> Result<Option<String>> {
        fleet::hostname_of_key(&*self.read()?, host_key)
    }

    fn processes_page(
        &self,
        host: Option<&str>,
        after: Option<&ProcessCursor>,
        limit: usize,
    ) -> Result<Vec<(ProcessCursor, v1::ProcessSummary)>> {
        fleet::processes_page(&*self.read()?, host, after, limit)
    }

    fn put_advisories(
        &self,
        advisories: &[AdvisoryRecord],
        replace: bool,
    ) -> Result<Vec<PutOutcome>> {
        advisories::put_advisories(&mut self.write(), advisories, replace)
    }

    fn delete_advisory(&self, id: &str, rematch: &[String]) -> Result<Option<AdvisoryRecord>> {
        advisories::delete_advisory(&mut self.write(), id, rematch)
    }

    fn pending_advisories(&self, limit: usize) -> Result<Vec<String>> {
        advisories::pending_advisories(&*self.read()?, limit)
    }

    fn advisory(&self, id_or_alias: &str) -> Result<Vec<AdvisoryRecord>> {
        advisories::advisory(&*self.read()?, id_or_alias)
    }

    fn advisories(&self, ecosystem: Option<&str>) -> Result<Vec<AdvisoryRecord>> {
        advisories::advisories(&*self.read()?, ecosystem)
    }

    fn match_candidates(&self, scope: &MatchScope) -> Result<Candidates> {
        advisories::match_candidates(&*self.read()?, scope)
    }

    fn put_matches(&self, scope: &MatchScope, matches: &[AdvisoryMatch]) -> Result<()> {
        advisories::put_matches(&mut self.write(), scope, matches)
    }

    fn verdicts(&self, advisories: Option<&[String]>, include_fixed: bool) -> Result<Vec<Verdict>> {
        advisories::verdicts(&*self.read()?, advisories, include_fixed)
    }

    fn put_sbom(&self, sbom: &SbomRecord) -> Result<PutOutcome> {
        sboms::put_sbom(&mut self.write(), sbom)
    }

    fn sboms(&self, image: Option<&str>) -> Result<Vec<SbomRecord>> {
        sboms::sboms(&*self.read()?, image)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        audit::append(&mut self.write(), entry)
    }

    fn audit_head(&self) -> Result<Option<(i64, String)>> {
        audit::head(&*self.read()?)
    }

    fn audit_entries(
        &self,
        after_seq: i64,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        audit::entries(&*self.read()?, after_seq, since_ms, limit)
    }

    fn append_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<()> {
        audit::append_checkpoint(&self.write(), checkpoint)
    }

    fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        audit::checkpoints(&*self.read()?)
    }

    fn put_token(&self, token: &TokenRecord) -> Result<()> {
        audit::put_token(&self.write(), token)
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        audit::tokens(&*self.read()?)
    }

    fn revoke_token(&self, id: &str, now_ms: i64) -> Result<Option<TokenRecord>> {
        audit::revoke_token(&mut self.write(), id, now_ms)
    }

    fn open_incident(
        &self,
        dedup_key: &str,
        created_ms: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<(IncidentRecord, bool)> {
        incidents::open(&mut self.write(), dedup_key, created_ms, events, cache)
    }

    fn append_incident_events(
        &self,
        id: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<IncidentRecord> {
        incidents::append(&mut self.write(), id, events, cache)
    }

    fn incident(&self, id: i64) -> Result<Option<IncidentRecord>> {
        incidents::get(&*self.read()?, id)
    }

    fn open_incident_by_key(&self, dedup_key: &str) -> Result<Option<IncidentRecord>> {
        incidents::by_key(&*self.read()?, dedup_key)
    }

    fn incidents(
        &self,
        before: Option<i64>,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<IncidentRecord>> {
        incidents::list(&*self.read()?, before, open_only, limit)
    }

    fn incident_events(
        &self,
        id: i64,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<IncidentEventRecord>> {
        incidents::events(&*self.read()?, id, after_seq, limit)
    }

    fn enqueue_delivery(&self, delivery: &NewDelivery) -> Result<bool> {
        outbox::enqueue(&self.write(), delivery)
    }

    fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        outbox::claim(&mut self.write(), now_ms, lease_ms, limit)
    }

    fn finish_delivery(&self, id: i64, now_ms: i64, outcome: &DeliveryOutcome) -> Result<()> {
        outbox::finish(&mut self.write(), id, now_ms, outcome)
    }

    fn deliveries(&self, incident: Option<i64>, limit: usize) -> Result<Vec<DeliveryRecord>> {
        outbox::list(&*self.read()?, incident, limit)
    }

    fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>> {
        outbox::disabled(&*self.read()?)
    }

    fn enable_endpoint(&self, name: &str) -> Result<bool> {
        outbox::enable(&self.write(), name)
    }

    fn put_egress_baseline(
        &self,
        key: &str,
        expected_version: i64,
        updated_ms: i64,
        body: &str,
    ) -> Result<EgressBaselineRecord> {
        egress::put_baseline(&mut self.write(), key, expected_version, updated_ms, body)
    }

    fn egress_baseline(
        &self,
        key: &str,
        version: Option<i64>,
    ) -> Result<Option<EgressBaselineRecord>> {
        egress::baseline(&*self.read()?, key, version)
    }

    fn egress_baselines(&self) -> Result<Vec<EgressBaselineRecord>> {
        egress::baselines(&*self.read()?)
    }

    fn upsert_egress_alert(
        &self,
        alert: &EgressAlertUpsert<'_>,
    ) -> Result<(EgressAlertRecord, bool)> {
        egress::upsert_alert(&mut self.write(), alert)
    }

    fn resolve_egress_alerts(
        &self,
        quiet_before_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<EgressAlertRecord>> {
        egress::resolve_alerts(&mut self.write(), quiet_before_ms, now_ms)
    }

    fn process_chain(
        &self,
        host: i64,
        key: &v1::ProcessKey,
        depth: usize,
    ) -> Result<Option<ProcessChain>> {
        egress::process_chain(&*self.read()?, host, key, depth)
    }

    fn open_egress_alert(&self, dedup_key: &str) -> Result<Option<EgressAlertRecord>> {
        egress::open_alert(&*self.read()?, dedup_key)
    }

    fn egress_alert(&self, id: i64) -> Result<Option<EgressAlertRecord>> {
        egress::alert(&*self.read()?, id)
    }

    fn egress_alerts(&self, since_ms: i64, limit: usize) -> Result<Vec<EgressAlertRecord>> {
        egress::alerts(&*self.read()?, since_ms, limit)
    }

    fn workload_instances(&self, seen_since_ms: i64, limit: usize) -> Result<Vec<WorkloadRow>> {
        changes::workload_instances(&*self.read()?, seen_since_ms, limit)
    }

    fn workload_package_spans(
        &self,
        host_id: &str,
        workload: &str,
        after_ms: i64,
        limit: usize,
    ) -> Result<Vec<PackageSpan>> {
        changes::package_spans(&*self.read()?, host_id, workload, after_ms, limit)
    }

    fn try_singleton(&self, name: &str) -> Result<Option<crate::store::Singleton<'_>>> {
        Ok(self.singletons.try_take(name))
    }

    fn prune_history(&self, before_ms: i64, limit: usize) -> Result<crate::store::PruneStep> {
        retention::prune(&mut self.write(), before_ms, limit)
    }

    fn compact_history(&self, limit: usize) -> Result<u64> {
        retention::compact(&mut self.write(), limit)
    }

    fn history_cutoff(&self, nth: usize) -> Result<Option<i64>> {
        retention::cutoff(&*self.read()?, nth)
    }

    fn storage_use(&self) -> Result<crate::store::StorageUse> {
        // The writer sees its own last commit and the freelist as it is.
        retention::storage(&self.write())
    }

    fn reclaim(&self, max_bytes: u64) -> Result<u64> {
        retention::reclaim(&self.write(), max_bytes)
    }

    fn flush(&self) -> Result<()> {
        retention::checkpoint(&self.write())
    }

    fn set_retention_horizon(&self, horizon_ms: i64, now_ms: i64) -> Result<()> {
        retention::set_horizon(&self.write(), horizon_ms, now_ms)
    }

    fn retention_horizon(&self) -> Result<Option<i64>> {
        retention::horizon(&*self.read()?)
    }
}
