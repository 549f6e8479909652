//! The SQLite store: the default backend, one file in the data directory.
//!
//! Thousands of processes share the same few sets of libraries, so each
//! distinct set of artifacts is stored once (`artifact_set`, keyed by its
//! sorted member ids) and a process points at its set. The exposure query
//! walks package → artifact → set → running process → host.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use patchgap_proto::{Message, v1};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use crate::store::{
    AdvisoryMatch, AdvisoryRecord, Candidates, DeclaredPackage, Evidence, HostRow, MatchCandidate,
    MatchScope, PackageName, PutOutcome, Result, SbomRecord, Session, Store, StoreError, Verdict,
    WorkloadRow, package_key, pep503,
};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::backend(e)
    }
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many have run. Never edit a released migration: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: hosts, packages, content-addressed artifact sets, processes with
    // their history, and current sockets.
    r#"
    CREATE TABLE host (
        id INTEGER PRIMARY KEY,
        host_id TEXT NOT NULL UNIQUE,
        hostname TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        kernel TEXT NOT NULL,
        labels TEXT NOT NULL,
        agent_version TEXT NOT NULL,
        capabilities BLOB NOT NULL,
        session_id TEXT NOT NULL,
        acked_seq INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        last_full_scan_ms INTEGER NOT NULL DEFAULT 0,
        last_scan BLOB NOT NULL DEFAULT x''
    );
    CREATE TABLE package (
        id INTEGER PRIMARY KEY,
        ecosystem TEXT NOT NULL,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        version TEXT NOT NULL,
        arch TEXT NOT NULL,
        purl TEXT NOT NULL,
        UNIQUE (ecosystem, name, source, version, arch, purl)
    );
    CREATE INDEX package_by_name ON package (name);
    CREATE INDEX package_by_source ON package (source);
    -- package_id 0 means "no package owns this file".
    CREATE TABLE artifact (
        id INTEGER PRIMARY KEY,
        path BLOB NOT NULL,
        dev INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        stale INTEGER NOT NULL,
        package_id INTEGER NOT NULL,
        UNIQUE (path, dev, inode, kind, deleted, stale, package_id)
    );
    CREATE INDEX artifact_by_package ON artifact (package_id);
    -- members: the sorted artifact ids, 8 bytes each, little endian. Exact,
    -- so two sets never collide.
    CREATE TABLE artifact_set (
        id INTEGER PRIMARY KEY,
        members BLOB NOT NULL UNIQUE,
        size INTEGER NOT NULL
    );
    CREATE TABLE artifact_set_member (
        set_id INTEGER NOT NULL,
        artifact_id INTEGER NOT NULL,
        PRIMARY KEY (artifact_id, set_id)
    ) WITHOUT ROWID;
    CREATE TABLE process (
        id INTEGER PRIMARY KEY,
        host INTEGER NOT NULL REFERENCES host (id),
        boot_id TEXT NOT NULL,
        pid INTEGER NOT NULL,
        start_ticks INTEGER NOT NULL,
        ppid INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        euid INTEGER NOT NULL,
        exe BLOB NOT NULL,
        cmdline TEXT NOT NULL,
        comm TEXT NOT NULL,
        cgroup TEXT NOT NULL,
        mnt_ns INTEGER NOT NULL,
        net_ns INTEGER NOT NULL,
        start_time_ms INTEGER NOT NULL,
        workload TEXT NOT NULL,
        root BLOB NOT NULL,
        partial INTEGER NOT NULL,
        set_id INTEGER NOT NULL REFERENCES artifact_set (id),
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        -- NULL while the process runs: "now" is exit_time_ms IS NULL.
        exit_time_ms INTEGER,
        snapshot_id TEXT NOT NULL,
        UNIQUE (host, boot_id, pid, start_ticks)
    );
    CREATE INDEX process_running_by_set ON process (set_id) WHERE exit_time_ms IS NULL;
    CREATE INDEX process_by_host ON process (host, exit_time_ms);
    -- The intervals during which a process had each artifact set.
    CREATE TABLE process_set_history (
        process_id INTEGER NOT NULL REFERENCES process (id),
        set_id INTEGER NOT NULL,
        from_ms INTEGER NOT NULL,
        until_ms INTEGER
    );
    CREATE INDEX history_by_set ON process_set_history (set_id, from_ms);
    CREATE INDEX history_by_process ON process_set_history (process_id);
    CREATE TABLE socket (
        process_id INTEGER NOT NULL REFERENCES process (id),
        protocol TEXT NOT NULL,
        local_addr TEXT NOT NULL,
        local_port INTEGER NOT NULL,
        remote_addr TEXT NOT NULL,
        remote_port INTEGER NOT NULL,
        state TEXT NOT NULL,
        inode INTEGER NOT NULL,
        outbound INTEGER NOT NULL
    );
    CREATE INDEX socket_by_process ON socket (process_id);
    "#,
    // 2: session epochs, so a lingering stream of a replaced session cannot write.
    r#"
    ALTER TABLE host ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: workloads (pods' containers, containers, units, the host) and each
    // process's privilege.
    r#"
    CREATE TABLE workload (
        host INTEGER NOT NULL REFERENCES host (id),
        id TEXT NOT NULL,
        -- The encoded patchgap.v1.Workload.
        data BLOB NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        PRIMARY KEY (host, id)
    );
    ALTER TABLE process ADD COLUMN privilege BLOB NOT NULL DEFAULT x'';
    ALTER TABLE process ADD COLUMN privileged INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX process_by_workload ON process (host, workload) WHERE exit_time_ms IS NULL;
    "#,
    // 4: outbound connections seen by eBPF, and the agent's sensing counters.
    r#"
    CREATE TABLE connection (
        process_id INTEGER NOT NULL REFERENCES process (id),
        protocol TEXT NOT NULL,
        remote_addr TEXT NOT NULL,
        remote_port INTEGER NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        count INTEGER NOT NULL,
        last_result INTEGER NOT NULL,
        PRIMARY KEY (process_id, protocol, remote_addr, remote_port)
    );
    CREATE INDEX connection_by_time ON connection (last_seen_ms);
    ALTER TABLE host ADD COLUMN sense BLOB NOT NULL DEFAULT x'';
    "#,
    // 5: language packages. A package can carry the OS package that installed
    // it (distro_id), and `key` is the name as queries compare it (lowercase;
    // PEP 503 for PyPI). SQLite cannot change a UNIQUE constraint in place,
    // so the table is rebuilt; ids are kept, so artifacts still point right.
    r#"
    CREATE TABLE package_v5 (
        id INTEGER PRIMARY KEY,
        ecosystem TEXT NOT NULL,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        version TEXT NOT NULL,
        arch TEXT NOT NULL,
        purl TEXT NOT NULL,
        -- The package id of the OS package that installed this one; 0 if none.
        distro_id INTEGER NOT NULL DEFAULT 0,
        key TEXT NOT NULL,
        UNIQUE (ecosystem, name, source, version, arch, purl, distro_id)
    );
    INSERT INTO package_v5 (id, ecosystem, name, source, version, arch, purl, distro_id, key)
        SELECT id, ecosystem, name, source, version, arch, purl, 0, lower(name) FROM package;
    DROP TABLE package;
    ALTER TABLE package_v5 RENAME TO package;
    CREATE INDEX package_by_key ON package (key);
    CREATE INDEX package_by_source ON package (source);
    "#,
    // 6: OSV advisories, by id; every alias (and the id itself) resolves
    // through advisory_alias; advisory_package lists the packages each
    // affects, for matching.
    r#"
    CREATE TABLE advisory (
        id TEXT PRIMARY KEY,
        modified TEXT NOT NULL,
        modified_ms INTEGER NOT NULL,
        withdrawn TEXT,
        summary TEXT NOT NULL,
        severity TEXT NOT NULL,
        score REAL,
        vector TEXT NOT NULL,
        -- The aliases as the advisory spells them, comma-separated; the
        -- alias table holds them upper-cased for lookups.
        aliases TEXT NOT NULL,
        source TEXT NOT NULL,
        -- The advisory as imported, as canonical JSON.
        data BLOB NOT NULL,
        imported_ms INTEGER NOT NULL
    );
    CREATE TABLE advisory_alias (
        alias TEXT NOT NULL,
        advisory_id TEXT NOT NULL REFERENCES advisory (id) ON DELETE CASCADE,
        PRIMARY KEY (alias, advisory_id)
    ) WITHOUT ROWID;
    CREATE INDEX alias_by_advisory ON advisory_alias (advisory_id);
    CREATE TABLE advisory_package (
        advisory_id TEXT NOT NULL REFERENCES advisory (id) ON DELETE CASCADE,
        -- The purl type patchgap uses (pypi, deb, ...), and OSV's own name
        -- for the ecosystem ("Debian:12").
        ecosystem TEXT NOT NULL,
        osv_ecosystem TEXT NOT NULL,
        -- Compared like package.key.
        key TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (advisory_id, osv_ecosystem, name)
    ) WITHOUT ROWID;
    CREATE INDEX advisory_package_by_key ON advisory_package (ecosystem, key);
    "#,
    // 7: an OS package's changelog CVEs (comma-separated), for findings
    // fixed by a distro backport.
    r#"
    ALTER TABLE package ADD COLUMN fixed_cves TEXT NOT NULL DEFAULT '';
    "#,
    // 8: incremental matching and SBOMs. advisory_match holds the matcher's
    // verdicts per (advisory, package); a package is `matched` once every
    // advisory was tested on it. Workloads get their image columns, so an
    // SBOM's image finds them; SBOM components are packages.
    r#"
    CREATE TABLE advisory_match (
        advisory_id TEXT NOT NULL REFERENCES advisory (id) ON DELETE CASCADE,
        package_id INTEGER NOT NULL REFERENCES package (id),
        -- "affected" or "fixed-by-distro".
        status TEXT NOT NULL,
        PRIMARY KEY (advisory_id, package_id)
    ) WITHOUT ROWID;
    CREATE INDEX advisory_match_by_package ON advisory_match (package_id);
    ALTER TABLE package ADD COLUMN matched INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX package_unmatched ON package (id) WHERE matched = 0;
    ALTER TABLE workload ADD COLUMN image_digest TEXT NOT NULL DEFAULT '';
    ALTER TABLE workload ADD COLUMN image_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX workload_by_image_digest ON workload (image_digest) WHERE image_digest != '';
    CREATE INDEX workload_by_image_id ON workload (image_id) WHERE image_id != '';
    CREATE TABLE sbom (
        id INTEGER PRIMARY KEY,
        -- sha256:<64 hex>; one SBOM per image.
        image TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        format TEXT NOT NULL,
        syntax TEXT NOT NULL,
        spec_version TEXT NOT NULL,
        tools TEXT NOT NULL,
        components INTEGER NOT NULL,
        edges INTEGER NOT NULL,
        data BLOB NOT NULL,
        pushed_ms INTEGER NOT NULL
    );
    CREATE TABLE sbom_component (
        sbom_id INTEGER NOT NULL REFERENCES sbom (id) ON DELETE CASCADE,
        package_id INTEGER NOT NULL REFERENCES package (id),
        ref TEXT NOT NULL,
        -- The "pulled in by" chain, root first, newline-separated.
        chain TEXT NOT NULL,
        PRIMARY KEY (sbom_id, package_id, ref)
    ) WITHOUT ROWID;
    CREATE INDEX sbom_component_by_package ON sbom_component (package_id);
    "#,
    // 9: Go modules replaced by a local directory keep the required module
    // path; the replacement is an attribute (issue 11).
    r#"
    ALTER TABLE package ADD COLUMN replaced_by TEXT NOT NULL DEFAULT '';
    "#,
    // 10: anonymous code (memfds, unlinked files no package owns) carries
    // what the file held: size, SHA-256, or why it was not hashed (issue
    // 11). The content is part of an artifact's identity, and SQLite cannot
    // change a UNIQUE constraint in place, so the table is rebuilt; ids are
    // kept, so sets still point right.
    r#"
    CREATE TABLE artifact_v10 (
        id INTEGER PRIMARY KEY,
        path BLOB NOT NULL,
        dev INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        stale INTEGER NOT NULL,
        package_id INTEGER NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        sha256 TEXT NOT NULL DEFAULT '',
        unhashed TEXT NOT NULL DEFAULT '',
        UNIQUE (path, dev, inode, kind, deleted, stale, package_id, size, sha256, unhashed)
    );
    INSERT INTO artifact_v10 (id, path, dev, inode, kind, deleted, stale, package_id)
        SELECT id, path, dev, inode, kind, deleted, stale, package_id FROM artifact;
    DROP TABLE artifact;
    ALTER TABLE artifact_v10 RENAME TO artifact;
    CREATE INDEX artifact_by_package ON artifact (package_id);
    CREATE INDEX artifact_anonymous ON artifact (id) WHERE kind = 6;
    "#,
    // 11: the name of a process's network namespace (/run/netns), and when
    // eBPF saw the connect that added a socket not read from the tables yet
    // (issue 11).
    r#"
    ALTER TABLE process ADD COLUMN net_ns_name TEXT NOT NULL DEFAULT '';
    ALTER TABLE socket ADD COLUMN connect_ms INTEGER NOT NULL DEFAULT 0;
    "#,
];

/// One writer connection, and for a database file a pool of read-only
/// connections: WAL lets each reader see the last commit while the writer
/// holds its transaction, so a large snapshot commit does not stall
/// queries. An in-memory database has one connection for both.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    readers: Option<Readers>,
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
    /// Opens (creating if needed) `patchgap.db` in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("patchgap.db");
        let conn = Connection::open(&path)?;
        Self::init(
            conn,
            Some(Readers {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        )
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<SqliteStore> {
        Self::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, readers: Option<Readers>) -> Result<SqliteStore> {
        // WAL lets readers run beside the writer; synchronous=FULL makes a
        // commit survive power loss, which is what an ack promises.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            writer: Mutex::new(conn),
            readers,
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

fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if i + 1 == 8 {
            backfill_workload_images(&tx)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Advisories with their aliases and packages; `data` only when asked.
fn advisory_rows(
    conn: &Connection,
    filter: &str,
    arg: &str,
    with_data: bool,
) -> Result<Vec<AdvisoryRecord>> {
    let sql = format!(
        "SELECT a.id, a.modified, a.modified_ms, a.withdrawn, a.summary, a.severity, a.score,
                    a.vector, a.source, CASE WHEN ?2 THEN a.data ELSE x'' END, a.aliases
             FROM advisory a {filter} ORDER BY a.id"
    );
    let mut rows: Vec<AdvisoryRecord> = conn
        .prepare_cached(&sql)?
        .query_map(params![arg, with_data], |r| {
            Ok(AdvisoryRecord {
                id: r.get(0)?,
                modified: r.get(1)?,
                modified_ms: r.get(2)?,
                withdrawn: r.get(3)?,
                summary: r.get(4)?,
                severity: r.get(5)?,
                score: r.get(6)?,
                vector: r.get(7)?,
                source: r.get(8)?,
                data: r.get(9)?,
                aliases: r
                    .get::<_, String>(10)?
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect(),
                ..Default::default()
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut packages = conn.prepare_cached(
        "SELECT ecosystem, osv_ecosystem, name FROM advisory_package WHERE advisory_id = ?1
             ORDER BY osv_ecosystem, name",
    )?;
    for a in &mut rows {
        a.packages = packages
            .query_map([&a.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
    }
    Ok(rows)
}

/// path, dev, inode, kind, deleted, stale, package id, and the content
/// (size, sha256, why unhashed).
type ArtifactKey = (
    Vec<u8>,
    u64,
    u64,
    i32,
    bool,
    bool,
    i64,
    (u64, String, String),
);

/// Interning caches for one transaction: processes of a snapshot share most
/// of their packages and artifacts.
#[derive(Default)]
struct Interner {
    packages: HashMap<PackageKey, i64>,
    artifacts: HashMap<ArtifactKey, i64>,
    sets: HashMap<Vec<u8>, i64>,
}

/// ecosystem, name, source, version, arch, purl, distro package id.
type PackageKey = (String, String, String, String, String, String, i64);

impl Interner {
    fn package(&mut self, tx: &Transaction, p: &v1::Package) -> Result<i64> {
        // The distro's own package first: ours names it by id. It never has
        // a distro of its own (the recursion stops at one level).
        let distro = match &p.distro {
            Some(d) if d.distro.is_none() => self.package(tx, d)?,
            _ => 0,
        };
        let key = (
            p.ecosystem.clone(),
            p.name.clone(),
            p.source.clone(),
            p.version.clone(),
            p.arch.clone(),
            p.purl.clone(),
            distro,
        );
        // A record with changelog CVEs is always written: an earlier one of
        // the same package may have come without them.
        if p.fixed_cves.is_empty()
            && let Some(id) = self.packages.get(&key)
        {
            return Ok(*id);
        }
        let args = params![key.0, key.1, key.2, key.3, key.4, key.5, key.6];
        let changed = tx.prepare_cached(
            "INSERT INTO package (ecosystem, name, source, version, arch, purl, distro_id, key, fixed_cves, replaced_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (ecosystem, name, source, version, arch, purl, distro_id)
             DO UPDATE SET fixed_cves = excluded.fixed_cves
                 WHERE excluded.fixed_cves != '' AND excluded.fixed_cves != package.fixed_cves",
        )?
        .execute(params![
            key.0,
            key.1,
            key.2,
            key.3,
            key.4,
            key.5,
            key.6,
            crate::store::package_key(&p.ecosystem, &p.name),
            p.fixed_cves.join(","),
            p.replaced_by
        ])? > 0;
        let id = tx
            .prepare_cached(
                "SELECT id FROM package WHERE ecosystem = ?1 AND name = ?2 AND source = ?3 AND version = ?4
                 AND arch = ?5 AND purl = ?6 AND distro_id = ?7",
            )?
            .query_row(args, |r| r.get(0))?;
        // New changelog CVEs can turn a match into fixed-by-distro: this
        // package and the language packages it installed are matched again.
        if changed && !p.fixed_cves.is_empty() {
            tx.prepare_cached("UPDATE package SET matched = 0 WHERE id = ?1 OR distro_id = ?1")?
                .execute([id])?;
        }
        self.packages.insert(key, id);
        Ok(id)
    }

    fn artifact(&mut self, tx: &Transaction, a: &v1::Artifact) -> Result<i64> {
        let package = match &a.package {
            Some(p) => self.package(tx, p)?,
            None => 0,
        };
        let key = (
            a.path.clone(),
            a.dev,
            a.inode,
            a.kind,
            a.deleted,
            a.stale,
            package,
            a.content
                .as_ref()
                .map(|c| (c.size, c.sha256.clone(), c.unhashed.clone()))
                .unwrap_or_default(),
        );
        if let Some(id) = self.artifacts.get(&key) {
            return Ok(*id);
        }
        let args = params![
            key.0,
            key.1 as i64,
            key.2 as i64,
            key.3,
            key.4,
            key.5,
            key.6,
            key.7.0 as i64,
            key.7.1,
            key.7.2
        ];
        tx.prepare_cached(
            "INSERT INTO artifact (path, dev, inode, kind, deleted, stale, package_id, size, sha256, unhashed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
        )?
        .execute(args)?;
        let id = tx
            .prepare_cached(
                "SELECT id FROM artifact WHERE path = ?1 AND dev = ?2 AND inode = ?3 AND kind = ?4
                 AND deleted = ?5 AND stale = ?6 AND package_id = ?7 AND size = ?8 AND sha256 = ?9
                 AND unhashed = ?10",
            )?
            .query_row(args, |r| r.get(0))?;
        self.artifacts.insert(key, id);
        Ok(id)
    }

    /// The id of the set holding exactly these artifacts.
    fn set(&mut self, tx: &Transaction, artifacts: &[v1::Artifact]) -> Result<i64> {
        let mut ids = artifacts
            .iter()
            .map(|a| self.artifact(tx, a))
            .collect::<Result<Vec<_>>>()?;
        ids.sort_unstable();
        ids.dedup();
        let members: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        if let Some(id) = self.sets.get(&members) {
            return Ok(*id);
        }
        let existing: Option<i64> = tx
            .prepare_cached("SELECT id FROM artifact_set WHERE members = ?1")?
            .query_row([&members], |r| r.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => {
                tx.prepare_cached("INSERT INTO artifact_set (members, size) VALUES (?1, ?2)")?
                    .execute(params![members, ids.len() as i64])?;
                let id = tx.last_insert_rowid();
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO artifact_set_member (set_id, artifact_id) VALUES (?1, ?2)",
                )?;
                for a in &ids {
                    stmt.execute([id, *a])?;
                }
                id
            }
        };
        self.sets.insert(members, id);
        Ok(id)
    }
}

fn key_of(k: &Option<v1::ProcessKey>) -> Result<v1::ProcessKey> {
    k.ok_or_else(|| StoreError::Invalid("process without a key".into()))
}

fn upsert_process(
    tx: &Transaction,
    interner: &mut Interner,
    host: i64,
    boot_id: &str,
    p: &v1::Process,
    snapshot_id: &str,
    at_ms: i64,
) -> Result<()> {
    let key = key_of(&p.key)?;
    let set_id = interner.set(tx, &p.artifacts)?;
    let existing: Option<(i64, i64, Option<i64>)> = tx
        .prepare_cached(
            "SELECT id, set_id, exit_time_ms FROM process WHERE host = ?1 AND boot_id = ?2 AND pid = ?3 AND start_ticks = ?4",
        )?
        .query_row(params![host, boot_id, key.pid, key.start_ticks as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let fields = params![
        p.ppid,
        p.uid,
        p.euid,
        p.exe,
        p.cmdline,
        p.comm,
        p.cgroup,
        p.mnt_ns as i64,
        p.net_ns as i64,
        p.start_time_ms,
        p.workload,
        p.root,
        p.partial,
        set_id,
        at_ms,
        snapshot_id,
    ];
    match existing {
        None => {
            tx.prepare_cached(
                "INSERT INTO process (ppid, uid, euid, exe, cmdline, comm, cgroup, mnt_ns, net_ns, start_time_ms,
                 workload, root, partial, set_id, last_seen_ms, snapshot_id, first_seen_ms, host, boot_id, pid, start_ticks)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?15, ?17, ?18, ?19, ?20)",
            )?
            .execute(rusqlite::params_from_iter(
                fields.iter().copied().chain(params![host, boot_id, key.pid, key.start_ticks as i64].iter().copied()),
            ))?;
            let id = tx.last_insert_rowid();
            set_later_columns(tx, id, p)?;
            tx.prepare_cached(
                "INSERT INTO process_set_history (process_id, set_id, from_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, set_id, at_ms])?;
        }
        Some((id, old_set, exit)) => {
            tx.prepare_cached(
                "UPDATE process SET ppid = ?1, uid = ?2, euid = ?3, exe = ?4, cmdline = ?5, comm = ?6, cgroup = ?7,
                 mnt_ns = ?8, net_ns = ?9, start_time_ms = ?10, workload = ?11, root = ?12, partial = ?13,
                 set_id = ?14, last_seen_ms = ?15, snapshot_id = ?16, exit_time_ms = NULL WHERE id = ?17",
            )?
            .execute(rusqlite::params_from_iter(fields.iter().copied().chain(params![id].iter().copied())))?;
            set_later_columns(tx, id, p)?;
            if old_set != set_id || exit.is_some() {
                tx.prepare_cached(
                    "UPDATE process_set_history SET until_ms = ?2 WHERE process_id = ?1 AND until_ms IS NULL",
                )?
                .execute(params![id, at_ms])?;
                tx.prepare_cached("INSERT INTO process_set_history (process_id, set_id, from_ms) VALUES (?1, ?2, ?3)")?
                    .execute(params![id, set_id, at_ms])?;
            }
        }
    }
    Ok(())
}

fn evidence_name(kind: i32) -> &'static str {
    match v1::ArtifactKind::try_from(kind) {
        Ok(v1::ArtifactKind::Exe) => "exe",
        Ok(v1::ArtifactKind::Opened) => "opened",
        Ok(v1::ArtifactKind::Installed) => "installed",
        Ok(v1::ArtifactKind::Embedded) => "embedded",
        Ok(v1::ArtifactKind::Anonymous) => "anonymous",
        _ => "mapped",
    }
}

/// The process columns later migrations added: privilege, the network
/// namespace's name.
fn set_later_columns(tx: &Transaction, id: i64, p: &v1::Process) -> Result<()> {
    let privilege = p.privilege.clone().unwrap_or_default();
    tx.prepare_cached(
        "UPDATE process SET privilege = ?2, privileged = ?3, net_ns_name = ?4 WHERE id = ?1",
    )?
    .execute(params![
        id,
        privilege.encode_to_vec(),
        privilege.privileged,
        p.net_ns_name
    ])?;
    Ok(())
}

/// Migration 8: the image columns of workloads stored before it, from
/// their encoded records.
fn backfill_workload_images(tx: &Transaction) -> Result<()> {
    let rows: Vec<(i64, String, Vec<u8>)> = tx
        .prepare("SELECT host, id, data FROM workload")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut update = tx.prepare(
        "UPDATE workload SET image_digest = ?3, image_id = ?4 WHERE host = ?1 AND id = ?2",
    )?;
    for (host, id, data) in rows {
        let w = v1::Workload::decode(data.as_slice()).unwrap_or_default();
        update.execute(params![host, id, w.image_digest, w.image_id])?;
    }
    Ok(())
}

fn upsert_workloads(
    tx: &Transaction,
    host: i64,
    workloads: &[v1::Workload],
    at_ms: i64,
) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO workload (host, id, data, last_seen_ms, image_digest, image_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (host, id) DO UPDATE SET data = excluded.data, last_seen_ms = excluded.last_seen_ms,
             image_digest = excluded.image_digest, image_id = excluded.image_id",
    )?;
    for w in workloads {
        if w.id.is_empty() {
            return Err(StoreError::Invalid("workload without an id".into()));
        }
        stmt.execute(params![
            host,
            w.id,
            w.encode_to_vec(),
            at_ms,
            w.image_digest,
            w.image_id
        ])?;
    }
    Ok(())
}

/// Adds connection records to their processes; a record for a process the
/// store does not know (it lived and died between two messages and no scan
/// saw it) is dropped.
fn add_connections(
    tx: &Transaction,
    host: i64,
    boot_id: &str,
    conns: &[v1::Connection],
) -> Result<()> {
    for c in conns {
        let key = key_of(&c.key)?;
        let id: Option<i64> = tx
            .prepare_cached("SELECT id FROM process WHERE host = ?1 AND boot_id = ?2 AND pid = ?3 AND start_ticks = ?4")?
            .query_row(params![host, boot_id, key.pid, key.start_ticks as i64], |r| r.get(0))
            .optional()?;
        let Some(id) = id else { continue };
        tx.prepare_cached(
            "INSERT INTO connection (process_id, protocol, remote_addr, remote_port, first_seen_ms, last_seen_ms,
             count, last_result) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (process_id, protocol, remote_addr, remote_port) DO UPDATE SET
               first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
               last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
               count = count + excluded.count,
               last_result = excluded.last_result",
        )?
        .execute(params![
            id,
            c.protocol,
            c.remote_addr,
            c.remote_port,
            c.first_seen_ms,
            c.last_seen_ms,
            c.count as i64,
            c.last_result
        ])?;
    }
    Ok(())
}

fn replace_sockets(
    tx: &Transaction,
    host: i64,
    boot_id: &str,
    ps: &v1::ProcessSockets,
) -> Result<()> {
    let key = key_of(&ps.key)?;
    let id: Option<i64> = tx
        .prepare_cached("SELECT id FROM process WHERE host = ?1 AND boot_id = ?2 AND pid = ?3 AND start_ticks = ?4")?
        .query_row(params![host, boot_id, key.pid, key.start_ticks as i64], |r| r.get(0))
        .optional()?;
    // Sockets of a process we never heard of: the upsert that names it is
    // in the same message, before them, so this only happens for bad input.
    let Some(id) = id else { return Ok(()) };
    tx.prepare_cached("DELETE FROM socket WHERE process_id = ?1")?
        .execute([id])?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO socket (process_id, protocol, local_addr, local_port, remote_addr, remote_port, state, inode, outbound, connect_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for s in &ps.sockets {
        stmt.execute(params![
            id,
            s.protocol,
            s.local_addr,
            s.local_port,
            s.remote_addr,
            s.remote_port,
            s.state,
            s.inode as i64,
            s.outbound,
            s.connect_ms
        ])?;
    }
    Ok(())
}

fn mark_exited(
    tx: &Transaction,
    where_clause: &str,
    args: &[&dyn rusqlite::ToSql],
    at_ms: i64,
) -> Result<()> {
    // Close the history interval and the process together.
    let ids: Vec<i64> = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT id FROM process WHERE exit_time_ms IS NULL AND {where_clause}"
        ))?;
        stmt.query_map(args, |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    for id in ids {
        tx.prepare_cached("UPDATE process SET exit_time_ms = ?2 WHERE id = ?1")?
            .execute(params![id, at_ms])?;
        tx.prepare_cached("UPDATE process_set_history SET until_ms = ?2 WHERE process_id = ?1 AND until_ms IS NULL")?
            .execute(params![id, at_ms])?;
        tx.prepare_cached("DELETE FROM socket WHERE process_id = ?1")?
            .execute([id])?;
    }
    Ok(())
}

/// Sockets listed per process in a process summary (a busy server has
/// thousands; `sockets_total` counts them all).
const PS_SOCKETS_LIMIT: i64 = 256;

/// A package and its distro identity; [`package_row`] reads the columns.
const PACKAGE_COLUMNS: &str =
    "SELECT p.id, p.ecosystem, p.name, p.source, p.version, p.arch, p.purl,
            d.ecosystem, d.name, d.source, d.version, d.arch, d.purl, d.fixed_cves,
            p.replaced_by
     FROM package p LEFT JOIN package d ON d.id = p.distro_id AND p.distro_id != 0";

fn split_cves(s: String) -> Vec<String> {
    s.split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn package_row(r: &rusqlite::Row) -> rusqlite::Result<(i64, v1::Package)> {
    let distro = match r.get::<_, Option<String>>(7)? {
        Some(ecosystem) => Some(Box::new(v1::Package {
            ecosystem,
            name: r.get(8)?,
            source: r.get(9)?,
            version: r.get(10)?,
            arch: r.get(11)?,
            purl: r.get(12)?,
            distro: None,
            fixed_cves: split_cves(r.get(13)?),
            replaced_by: String::new(),
        })),
        None => None,
    };
    Ok((
        r.get(0)?,
        v1::Package {
            ecosystem: r.get(1)?,
            name: r.get(2)?,
            source: r.get(3)?,
            version: r.get(4)?,
            arch: r.get(5)?,
            purl: r.get(6)?,
            distro,
            fixed_cves: Vec::new(),
            replaced_by: r.get(14)?,
        },
    ))
}

/// The evidence rows for `Store::evidence`: artifacts (of running
/// processes' current sets, or with a window of every set in the window's
/// history), then SBOM declarations through the workloads running an
/// image.
fn evidence(
    conn: &Connection,
    package_ids: &[i64],
    window: Option<(i64, i64)>,
) -> Result<Vec<Evidence>> {
    // "Now" walks the running processes' current sets; a window walks the
    // history intervals, so exited processes and sets a process had
    // earlier are found too.
    const COLUMNS: &str = "SELECT p.id, h.hostname, h.host_id, p.workload, p.pid, p.start_ticks, p.start_time_ms,
                p.exe, p.cmdline, p.uid, a.path, a.kind, a.stale, a.deleted, a.dev, a.inode, p.privilege,
                p.exit_time_ms
         FROM artifact a
         JOIN artifact_set_member m ON m.artifact_id = a.id";
    let sql = match window {
        None => format!(
            "{COLUMNS}
             JOIN process p ON p.set_id = m.set_id AND p.exit_time_ms IS NULL
             JOIN host h ON h.id = p.host
             WHERE a.package_id = ?1
             ORDER BY h.hostname, p.workload, p.pid, a.kind, a.path"
        ),
        Some(_) => format!(
            "{COLUMNS}
             JOIN process_set_history hs ON hs.set_id = m.set_id AND hs.from_ms <= ?3
                  AND (hs.until_ms IS NULL OR hs.until_ms >= ?2)
             JOIN process p ON p.id = hs.process_id
             JOIN host h ON h.id = p.host
             WHERE a.package_id = ?1
             ORDER BY h.hostname, p.workload, p.pid, a.kind, a.path"
        ),
    };
    // The declared side: the SBOM's image → workloads running it (by
    // digest or image id) → their processes.
    let declared_sql = format!(
        "SELECT p.id, h.hostname, h.host_id, p.workload, p.pid, p.start_ticks, p.start_time_ms,
                p.exe, p.cmdline, p.uid, sc.ref, s.image, sc.chain, p.privilege, p.exit_time_ms
         FROM sbom_component sc
         JOIN sbom s ON s.id = sc.sbom_id
         JOIN workload w ON w.image_digest = s.image OR w.image_id = s.image
         JOIN process p ON p.host = w.host AND p.workload = w.id AND {}
         JOIN host h ON h.id = p.host
         WHERE sc.package_id = ?1
         ORDER BY h.hostname, p.workload, p.pid",
        match window {
            None => "p.exit_time_ms IS NULL",
            Some(_) => "p.start_time_ms <= ?3 AND (p.exit_time_ms IS NULL OR p.exit_time_ms >= ?2)",
        }
    );
    // The process's side of a match; `privilege` is the column of its
    // privilege, and its exit time follows.
    let holder = |r: &rusqlite::Row, privilege: usize| {
        Ok::<_, rusqlite::Error>(v1::Match {
            host: r.get(1)?,
            host_id: r.get(2)?,
            workload: r.get(3)?,
            key: Some(v1::ProcessKey {
                pid: r.get(4)?,
                start_ticks: r.get::<_, i64>(5)? as u64,
            }),
            process_start_ms: r.get(6)?,
            exe: r.get(7)?,
            cmdline: r.get(8)?,
            uid: r.get(9)?,
            privilege: v1::Privilege::decode(r.get::<_, Vec<u8>>(privilege)?.as_slice()).ok(),
            exit_time_ms: r.get::<_, Option<i64>>(privilege + 1)?.unwrap_or(0),
            ..Default::default()
        })
    };
    let mut out = Vec::new();
    let mut stmt = conn.prepare_cached(&sql)?;
    for &package_id in package_ids {
        let mut rows = match window {
            None => stmt.query([package_id])?,
            Some((since, until)) => stmt.query(params![package_id, since, until])?,
        };
        while let Some(r) = rows.next()? {
            out.push(Evidence {
                process: r.get(0)?,
                package_id,
                holder: holder(r, 16)?,
                path: v1::MatchPath {
                    path: r.get(10)?,
                    evidence: evidence_name(r.get(11)?).into(),
                    stale: r.get(12)?,
                    deleted: r.get(13)?,
                    dev: r.get::<_, i64>(14)? as u64,
                    inode: r.get::<_, i64>(15)? as u64,
                },
                sbom: None,
            });
        }
    }
    drop(stmt);
    let mut stmt = conn.prepare_cached(&declared_sql)?;
    for &package_id in package_ids {
        let mut rows = match window {
            None => stmt.query([package_id])?,
            Some((since, until)) => stmt.query(params![package_id, since, until])?,
        };
        while let Some(r) = rows.next()? {
            let reference: String = r.get(10)?;
            let image: String = r.get(11)?;
            let chain: String = r.get(12)?;
            out.push(Evidence {
                process: r.get(0)?,
                package_id,
                holder: holder(r, 13)?,
                path: v1::MatchPath {
                    path: format!("sbom {image} {reference}").into_bytes(),
                    evidence: "declared".into(),
                    ..Default::default()
                },
                sbom: Some((
                    image,
                    chain
                        .split('\n')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect(),
                )),
            });
        }
    }
    Ok(out)
}

/// Package rows by id.
fn packages_by_id(conn: &Connection, ids: &[i64]) -> Result<Vec<(i64, v1::Package)>> {
    let mut stmt = conn.prepare_cached(&format!("{PACKAGE_COLUMNS} WHERE p.id = ?1"))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = stmt.query_row([id], package_row).optional()? {
            out.push(row);
        }
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn hello(&self, hello: &v1::Hello, now_ms: i64) -> Result<Session> {
        let mut conn = self.write();
        let id = hello
            .host
            .as_ref()
            .ok_or_else(|| StoreError::Invalid("hello without host identity".into()))?;
        let host_key = if id.host_id.is_empty() {
            &id.hostname
        } else {
            &id.host_id
        };
        if host_key.is_empty() {
            return Err(StoreError::Invalid(
                "hello names neither a host id nor a hostname".into(),
            ));
        }
        let caps = hello
            .capabilities
            .clone()
            .unwrap_or_default()
            .encode_to_vec();
        let labels = serde_json::to_string(&id.labels).unwrap_or_else(|_| "{}".into());
        let tx = conn.transaction()?;
        let existing: Option<(i64, String, i64, i64)> = tx
            .query_row(
                "SELECT id, session_id, acked_seq, session_epoch FROM host WHERE host_id = ?1",
                [host_key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let session = match existing {
            Some((host, session_id, acked, epoch)) if session_id == hello.session_id => Session {
                host,
                acked_seq: acked as u64,
                new: false,
                epoch,
            },
            Some((host, _, _, epoch)) => Session {
                host,
                acked_seq: 0,
                new: true,
                epoch: epoch + 1,
            },
            None => {
                tx.execute(
                    "INSERT INTO host (host_id, hostname, boot_id, kernel, labels, agent_version, capabilities,
                     session_id, acked_seq, last_seen_ms) VALUES (?1, '', '', '', '{}', '', x'', '', 0, ?2)",
                    params![host_key, now_ms],
                )?;
                Session {
                    host: tx.last_insert_rowid(),
                    acked_seq: 0,
                    new: true,
                    epoch: 1,
                }
            }
        };
        tx.execute(
            "UPDATE host SET hostname = ?2, boot_id = ?3, kernel = ?4, labels = ?5, agent_version = ?6,
             capabilities = ?7, session_id = ?8, acked_seq = ?9, last_seen_ms = ?10, session_epoch = ?11 WHERE id = ?1",
            params![
                session.host,
                id.hostname,
                id.boot_id,
                id.kernel,
                labels,
                hello.agent_version,
                caps,
                hello.session_id,
                session.acked_seq as i64,
                now_ms,
                session.epoch
            ],
        )?;
        tx.commit()?;
        Ok(session)
    }

    fn apply(&self, session: &Session, msg: &v1::AgentMessage, now_ms: i64) -> Result<()> {
        let mut conn = self.write();
        use v1::agent_message::Body;
        let tx = conn.transaction()?;
        let (acked, boot_id, epoch): (i64, String, i64) = tx.query_row(
            "SELECT acked_seq, boot_id, session_epoch FROM host WHERE id = ?1",
            [session.host],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        if epoch != session.epoch {
            return Err(StoreError::Superseded);
        }
        if msg.seq <= acked as u64 {
            return Ok(()); // A resend of something already stored.
        }
        let host = session.host;
        let mut interner = Interner::default();
        match &msg.body {
            None | Some(Body::Hello(_)) => {
                return Err(StoreError::Invalid(
                    "only the first message of a stream may be a Hello".into(),
                ));
            }
            Some(Body::Snapshot(s)) => {
                upsert_workloads(&tx, host, &s.workloads, s.scanned_at_ms)?;
                for p in &s.processes {
                    upsert_process(
                        &tx,
                        &mut interner,
                        host,
                        &boot_id,
                        p,
                        &s.snapshot_id,
                        s.scanned_at_ms,
                    )?;
                    // A snapshot is a full inventory and the part naming a
                    // process carries all its sockets: listing none means it
                    // has none, so forget what an earlier session stored.
                    replace_sockets(
                        &tx,
                        host,
                        &boot_id,
                        &v1::ProcessSockets {
                            key: p.key,
                            sockets: Vec::new(),
                        },
                    )?;
                }
                for ps in &s.sockets {
                    replace_sockets(&tx, host, &boot_id, ps)?;
                }
                if s.last {
                    // The snapshot is complete: whatever it did not name has exited.
                    mark_exited(
                        &tx,
                        "host = ?1 AND snapshot_id != ?2",
                        &[&host, &s.snapshot_id],
                        s.scanned_at_ms,
                    )?;
                    let stats = s.stats.unwrap_or_default().encode_to_vec();
                    tx.execute(
                        "UPDATE host SET last_full_scan_ms = ?2, last_scan = ?3 WHERE id = ?1",
                        params![host, s.scanned_at_ms, stats],
                    )?;
                }
            }
            Some(Body::Delta(d)) => {
                upsert_workloads(&tx, host, &d.workloads, d.scanned_at_ms)?;
                for p in &d.upserts {
                    upsert_process(&tx, &mut interner, host, &boot_id, p, "", d.scanned_at_ms)?;
                }
                for e in &d.exits {
                    let k = key_of(&e.key)?;
                    mark_exited(
                        &tx,
                        "host = ?1 AND boot_id = ?2 AND pid = ?3 AND start_ticks = ?4",
                        &[&host, &boot_id, &k.pid, &(k.start_ticks as i64)],
                        e.exit_time_ms,
                    )?;
                }
                for ps in &d.sockets {
                    replace_sockets(&tx, host, &boot_id, ps)?;
                }
                add_connections(&tx, host, &boot_id, &d.connections)?;
                if let Some(stats) = &d.stats {
                    tx.execute(
                        "UPDATE host SET last_scan = ?2 WHERE id = ?1",
                        params![host, stats.encode_to_vec()],
                    )?;
                }
            }
            Some(Body::Heartbeat(h)) => {
                // A scan that changed nothing sends no delta; the heartbeat
                // still says when the host was last scanned.
                if let Some(stats) = &h.last_scan
                    && stats.scanned_at_ms > 0
                {
                    tx.execute(
                        "UPDATE host SET last_scan = ?2 WHERE id = ?1",
                        params![host, stats.encode_to_vec()],
                    )?;
                }
                if let Some(sense) = &h.sense {
                    tx.execute(
                        "UPDATE host SET sense = ?2 WHERE id = ?1",
                        params![host, sense.encode_to_vec()],
                    )?;
                }
                if let Some(caps) = &h.capabilities {
                    tx.execute(
                        "UPDATE host SET capabilities = ?2 WHERE id = ?1",
                        params![host, caps.encode_to_vec()],
                    )?;
                }
            }
        }
        tx.execute(
            "UPDATE host SET acked_seq = ?2, last_seen_ms = ?3 WHERE id = ?1",
            params![host, msg.seq as i64, now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn hosts(&self) -> Result<Vec<HostRow>> {
        let conn = self.read()?;
        let mut stmt = conn.prepare_cached(
            "SELECT h.host_id, h.hostname, h.boot_id, h.kernel, h.labels, h.agent_version, h.capabilities,
             h.last_seen_ms, h.last_full_scan_ms, h.last_scan,
             (SELECT count(*) FROM process p WHERE p.host = h.id AND p.exit_time_ms IS NULL), h.sense
             FROM host h ORDER BY h.hostname, h.host_id",
        )?;
        let rows = stmt.query_map([], |r| {
            let labels: String = r.get(4)?;
            let caps: Vec<u8> = r.get(6)?;
            let scan: Vec<u8> = r.get(9)?;
            Ok(HostRow {
                identity: v1::HostIdentity {
                    host_id: r.get(0)?,
                    hostname: r.get(1)?,
                    boot_id: r.get(2)?,
                    kernel: r.get(3)?,
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                },
                agent_version: r.get(5)?,
                capabilities: v1::Capabilities::decode(caps.as_slice()).unwrap_or_default(),
                last_seen_ms: r.get(7)?,
                last_full_scan_ms: r.get(8)?,
                last_scan: v1::ScanStats::decode(scan.as_slice()).unwrap_or_default(),
                processes_running: r.get(10)?,
                sense: v1::SenseStats::decode(r.get::<_, Vec<u8>>(11)?.as_slice())
                    .unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn packages_named(&self, q: &PackageName<'_>) -> Result<Vec<(i64, v1::Package)>> {
        let conn = self.read()?;
        let mut stmt = conn.prepare_cached(&format!(
            "{PACKAGE_COLUMNS}
             WHERE p.key = ?1 OR (p.key = ?2 AND p.ecosystem = 'pypi') OR p.source = ?3"
        ))?;
        let rows = stmt.query_map(
            params![q.name.to_lowercase(), pep503(q.name), q.name],
            package_row,
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn packages_by_id(&self, ids: &[i64]) -> Result<Vec<(i64, v1::Package)>> {
        packages_by_id(&*self.read()?, ids)
    }

    fn evidence(&self, package_ids: &[i64], window: Option<(i64, i64)>) -> Result<Vec<Evidence>> {
        evidence(&*self.read()?, package_ids, window)
    }

    fn workloads(&self) -> Result<Vec<WorkloadRow>> {
        let conn = self.read()?;
        let mut rows: Vec<(i64, WorkloadRow)> = {
            let mut stmt = conn.prepare_cached(
                "SELECT w.host, h.hostname, h.host_id, h.labels, w.data,
                        (SELECT count(*) FROM process p
                          WHERE p.host = w.host AND p.workload = w.id AND p.exit_time_ms IS NULL)
                 FROM workload w JOIN host h ON h.id = w.host
                 ORDER BY h.hostname, w.id",
            )?;
            let rows = stmt.query_map([], |r| {
                let labels: String = r.get(3)?;
                let data: Vec<u8> = r.get(4)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    WorkloadRow {
                        host: r.get(1)?,
                        host_id: r.get(2)?,
                        host_labels: serde_json::from_str(&labels).unwrap_or_default(),
                        workload: v1::Workload::decode(data.as_slice()).unwrap_or_default(),
                        processes: r.get(5)?,
                        privileges: Vec::new(),
                    },
                ))
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        rows.retain(|(_, w)| w.processes > 0);
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT privilege FROM process WHERE host = ?1 AND workload = ?2 AND exit_time_ms IS NULL",
        )?;
        for (host, row) in &mut rows {
            let blobs =
                stmt.query_map(params![*host, row.workload.id], |r| r.get::<_, Vec<u8>>(0))?;
            for blob in blobs {
                row.privileges
                    .push(v1::Privilege::decode(blob?.as_slice()).unwrap_or_default());
            }
        }
        Ok(rows.into_iter().map(|(_, w)| w).collect())
    }

    fn connections(&self, host: Option<&str>, since_ms: i64) -> Result<Vec<v1::ConnectionSummary>> {
        let conn = self.read()?;
        let mut stmt = conn.prepare_cached(
            "SELECT h.hostname, p.workload, p.pid, p.start_ticks, p.exe, c.protocol, c.remote_addr, c.remote_port,
                    c.first_seen_ms, c.last_seen_ms, c.count, c.last_result, p.exit_time_ms, p.net_ns, p.net_ns_name
             FROM connection c JOIN process p ON p.id = c.process_id JOIN host h ON h.id = p.host
             WHERE c.last_seen_ms >= ?2 AND (?1 IS NULL OR h.hostname = ?1 OR h.host_id = ?1)
             ORDER BY h.hostname, c.first_seen_ms, p.pid",
        )?;
        let rows = stmt.query_map(params![host, since_ms], |r| {
            Ok(v1::ConnectionSummary {
                host: r.get(0)?,
                workload: r.get(1)?,
                key: Some(v1::ProcessKey {
                    pid: r.get(2)?,
                    start_ticks: r.get::<_, i64>(3)? as u64,
                }),
                exe: r.get(4)?,
                protocol: r.get(5)?,
                remote_addr: r.get(6)?,
                remote_port: r.get(7)?,
                first_seen_ms: r.get(8)?,
                last_seen_ms: r.get(9)?,
                count: r.get::<_, i64>(10)? as u64,
                last_result: r.get(11)?,
                exit_time_ms: r.get::<_, Option<i64>>(12)?.unwrap_or(0),
                net_ns: r.get::<_, i64>(13)? as u64,
                net_ns_name: r.get(14)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn processes(&self, host: Option<&str>) -> Result<Vec<v1::ProcessSummary>> {
        let conn = self.read()?;
        let mut stmt = conn.prepare_cached(
            "SELECT h.hostname, p.workload, p.pid, p.start_ticks, p.ppid, p.uid, p.exe, p.cmdline, p.start_time_ms,
                    s.size,
                    (SELECT count(DISTINCT a.package_id) FROM artifact_set_member m JOIN artifact a ON a.id = m.artifact_id
                       WHERE m.set_id = p.set_id AND a.package_id != 0),
                    (SELECT count(*) FROM artifact_set_member m JOIN artifact a ON a.id = m.artifact_id
                       WHERE m.set_id = p.set_id AND a.stale),
                    (SELECT count(*) FROM socket k WHERE k.process_id = p.id AND k.outbound),
                    p.id, p.net_ns, p.net_ns_name, p.privilege, h.last_scan,
                    (SELECT count(*) FROM socket k WHERE k.process_id = p.id), p.set_id
             FROM process p JOIN host h ON h.id = p.host JOIN artifact_set s ON s.id = p.set_id
             WHERE p.exit_time_ms IS NULL AND (?1 IS NULL OR h.hostname = ?1 OR h.host_id = ?1)
             ORDER BY h.hostname, p.pid",
        )?;
        // Anonymous code is rare: all of it at once, by set.
        let mut anonymous: HashMap<i64, Vec<v1::Artifact>> = HashMap::new();
        let mut q = conn.prepare_cached(
            "SELECT m.set_id, a.path, a.dev, a.inode, a.deleted, a.stale, a.size, a.sha256, a.unhashed
             FROM artifact a JOIN artifact_set_member m ON m.artifact_id = a.id
             WHERE a.kind = 6 ORDER BY a.path",
        )?;
        let found = q.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                v1::Artifact {
                    path: r.get(1)?,
                    dev: r.get::<_, i64>(2)? as u64,
                    inode: r.get::<_, i64>(3)? as u64,
                    kind: v1::ArtifactKind::Anonymous as i32,
                    deleted: r.get(4)?,
                    stale: r.get(5)?,
                    package: None,
                    content: Some(v1::Content {
                        size: r.get::<_, i64>(6)? as u64,
                        sha256: r.get(7)?,
                        unhashed: r.get(8)?,
                    }),
                },
            ))
        })?;
        for row in found {
            let (set, a) = row?;
            anonymous.entry(set).or_default().push(a);
        }
        let rows = stmt.query_map([host], |r| {
            let summary = v1::ProcessSummary {
                anonymous_code: anonymous
                    .get(&r.get::<_, i64>(19)?)
                    .cloned()
                    .unwrap_or_default(),
                host: r.get(0)?,
                workload: r.get(1)?,
                key: Some(v1::ProcessKey {
                    pid: r.get(2)?,
                    start_ticks: r.get::<_, i64>(3)? as u64,
                }),
                ppid: r.get(4)?,
                uid: r.get(5)?,
                exe: r.get(6)?,
                cmdline: r.get(7)?,
                start_time_ms: r.get(8)?,
                artifacts: r.get(9)?,
                packages: r.get(10)?,
                stale_artifacts: r.get(11)?,
                outbound_sockets: r.get(12)?,
                sockets: Vec::new(),
                sockets_read_ms: v1::ScanStats::decode(r.get::<_, Vec<u8>>(17)?.as_slice())
                    .unwrap_or_default()
                    .sockets_read_ms,
                net_ns: r.get::<_, i64>(14)? as u64,
                net_ns_name: r.get(15)?,
                host_net_ns: v1::Privilege::decode(r.get::<_, Vec<u8>>(16)?.as_slice())
                    .unwrap_or_default()
                    .host_net_ns,
                sockets_total: r.get(18)?,
            };
            Ok((r.get::<_, i64>(13)?, summary))
        })?;
        let mut out: Vec<(i64, v1::ProcessSummary)> = rows.collect::<Result<_, _>>()?;
        let mut sockets = conn.prepare_cached(
            "SELECT protocol, local_addr, local_port, remote_addr, remote_port, state, inode, outbound, connect_ms
             FROM socket WHERE process_id = ?1
             ORDER BY connect_ms DESC, outbound DESC, inode, remote_addr, remote_port LIMIT ?2",
        )?;
        for (id, p) in &mut out {
            let rows = sockets.query_map(params![*id, PS_SOCKETS_LIMIT], |r| {
                Ok(v1::Socket {
                    protocol: r.get(0)?,
                    local_addr: r.get(1)?,
                    local_port: r.get(2)?,
                    remote_addr: r.get(3)?,
                    remote_port: r.get(4)?,
                    state: r.get(5)?,
                    inode: r.get::<_, i64>(6)? as u64,
                    outbound: r.get(7)?,
                    connect_ms: r.get(8)?,
                })
            })?;
            p.sockets = rows.collect::<Result<_, _>>()?;
        }
        Ok(out.into_iter().map(|(_, p)| p).collect())
    }

    fn put_advisories(&self, advisories: &[AdvisoryRecord]) -> Result<Vec<PutOutcome>> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(advisories.len());
        let now = patchgap_proto::time::now_ms();
        for a in advisories {
            let stored: Option<(i64, Vec<u8>)> = tx
                .prepare_cached("SELECT modified_ms, data FROM advisory WHERE id = ?1")?
                .query_row([&a.id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let outcome = match stored {
                None => PutOutcome::Added,
                // A time that says nothing: the content decides.
                Some((m, data))
                    if m == a.modified_ms
                        && m == crate::store::UNKNOWN_MODIFIED_MS
                        && data != a.data =>
                {
                    PutOutcome::Updated
                }
                Some((m, _)) if m == a.modified_ms => PutOutcome::Unchanged,
                Some((m, _)) if m > a.modified_ms => PutOutcome::Older,
                Some(_) => PutOutcome::Updated,
            };
            out.push(outcome);
            if matches!(outcome, PutOutcome::Unchanged | PutOutcome::Older) {
                continue;
            }
            // ON DELETE CASCADE clears the aliases and packages.
            tx.prepare_cached("DELETE FROM advisory WHERE id = ?1")?
                .execute([&a.id])?;
            tx.prepare_cached(
                "INSERT INTO advisory (id, modified, modified_ms, withdrawn, summary, severity, score,
                 vector, aliases, source, data, imported_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                a.id,
                a.modified,
                a.modified_ms,
                a.withdrawn,
                a.summary,
                a.severity,
                a.score,
                a.vector,
                a.aliases.join(","),
                a.source,
                a.data,
                now
            ])?;
            let mut alias = tx.prepare_cached(
                "INSERT OR IGNORE INTO advisory_alias (alias, advisory_id) VALUES (?1, ?2)",
            )?;
            alias.execute(params![a.id.to_uppercase(), a.id])?;
            for x in &a.aliases {
                alias.execute(params![x.to_uppercase(), a.id])?;
            }
            let mut pkg = tx.prepare_cached(
                "INSERT OR IGNORE INTO advisory_package (advisory_id, ecosystem, osv_ecosystem, key, name)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (eco, osv_eco, name) in &a.packages {
                pkg.execute(params![a.id, eco, osv_eco, package_key(eco, name), name])?;
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn advisory(&self, id_or_alias: &str) -> Result<Vec<AdvisoryRecord>> {
        let conn = self.read()?;
        let ids: Vec<String> = conn
            .prepare_cached(
                "SELECT DISTINCT advisory_id FROM advisory_alias WHERE alias = ?1 ORDER BY advisory_id",
            )?
            .query_map([id_or_alias.trim().to_uppercase()], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for id in ids {
            out.extend(advisory_rows(&conn, "WHERE a.id = ?1", &id, true)?);
        }
        Ok(out)
    }

    fn advisories(&self, ecosystem: Option<&str>) -> Result<Vec<AdvisoryRecord>> {
        let conn = self.read()?;
        match ecosystem {
            Some(eco) => advisory_rows(
                &conn,
                "WHERE a.id IN (SELECT advisory_id FROM advisory_package WHERE ecosystem = ?1)",
                eco,
                false,
            ),
            None => advisory_rows(&conn, "WHERE ?1 = ?1", "", false),
        }
    }

    fn match_candidates(&self, scope: &MatchScope) -> Result<Candidates> {
        let conn = self.read()?;
        let mut out = Vec::new();
        let scope_size;
        match scope {
            MatchScope::Unmatched => {
                // Each new package against the advisories naming it: by its
                // key, its source (Debian and rpm advisories name source
                // packages) or Maven's group:artifact.
                let packages: Vec<(i64, v1::Package)> = conn
                    .prepare_cached(&format!("{PACKAGE_COLUMNS} WHERE p.matched = 0"))?
                    .query_map([], package_row)?
                    .collect::<Result<_, _>>()?;
                scope_size = packages.len();
                let mut stmt = conn.prepare_cached(
                    "SELECT DISTINCT advisory_id FROM advisory_package
                     WHERE ecosystem = ?1 AND key IN (?2, ?3, ?4)",
                )?;
                for (id, p) in packages {
                    let key = package_key(&p.ecosystem, &p.name);
                    let source = p.source.to_lowercase();
                    // Maven's group:artifact; Go's stdlib is also the
                    // toolchain (see `matching::affects_package`).
                    let other = if p.ecosystem == "golang" && key == "stdlib" {
                        "toolchain".to_string()
                    } else {
                        format!("{source}:{key}")
                    };
                    let ids: Vec<String> = stmt
                        .query_map(params![p.ecosystem, key, source, other], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    for advisory_id in ids {
                        out.push(MatchCandidate {
                            package_id: id,
                            package: p.clone(),
                            advisory_id,
                        });
                    }
                }
            }
            MatchScope::Advisories(ids) => {
                scope_size = ids.len();
                let mut names = conn.prepare_cached(
                    "SELECT DISTINCT ecosystem, key, name FROM advisory_package WHERE advisory_id = ?1",
                )?;
                let mut by_key = conn.prepare_cached(&format!(
                    "{PACKAGE_COLUMNS} WHERE p.key = ?2 AND p.ecosystem = ?1
                     UNION {PACKAGE_COLUMNS} WHERE p.source = ?3 AND p.ecosystem = ?1"
                ))?;
                let mut maven = conn.prepare_cached(&format!(
                    "{PACKAGE_COLUMNS} WHERE p.key = ?2 AND p.source = ?3 AND p.ecosystem = 'maven'"
                ))?;
                for advisory_id in ids {
                    let wanted: Vec<(String, String, String)> = names
                        .query_map([advisory_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<Result<_, _>>()?;
                    let mut seen = std::collections::HashSet::new();
                    for (eco, key, name) in wanted {
                        let rows: Vec<(i64, v1::Package)> =
                            match (eco.as_str(), name.split_once(':')) {
                                ("maven", Some((group, artifact))) => maven
                                    .query_map(
                                        params![eco, artifact.to_lowercase(), group],
                                        package_row,
                                    )?
                                    .collect::<Result<_, _>>()?,
                                ("maven", None) | ("", _) => Vec::new(),
                                ("golang", _) if key == "toolchain" => by_key
                                    .query_map(params![eco, "stdlib", "stdlib"], package_row)?
                                    .collect::<Result<_, _>>()?,
                                _ => by_key
                                    .query_map(params![eco, key, name], package_row)?
                                    .collect::<Result<_, _>>()?,
                            };
                        for (id, package) in rows {
                            if seen.insert(id) {
                                out.push(MatchCandidate {
                                    package_id: id,
                                    package,
                                    advisory_id: advisory_id.clone(),
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(Candidates {
            scope_size,
            pairs: out,
        })
    }

    fn put_matches(&self, scope: &MatchScope, matches: &[AdvisoryMatch]) -> Result<()> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        match scope {
            MatchScope::Unmatched => {
                tx.execute(
                    "DELETE FROM advisory_match WHERE package_id IN (SELECT id FROM package WHERE matched = 0)",
                    [],
                )?;
            }
            MatchScope::Advisories(ids) => {
                let mut del =
                    tx.prepare_cached("DELETE FROM advisory_match WHERE advisory_id = ?1")?;
                for id in ids {
                    del.execute([id])?;
                }
            }
        }
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO advisory_match (advisory_id, package_id, status) VALUES (?1, ?2, ?3)
                 ON CONFLICT (advisory_id, package_id) DO UPDATE SET status = excluded.status",
            )?;
            for m in matches {
                ins.execute(params![m.advisory_id, m.package_id, m.status])?;
            }
        }
        if *scope == MatchScope::Unmatched {
            tx.execute("UPDATE package SET matched = 1 WHERE matched = 0", [])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn verdicts(&self, advisories: Option<&[String]>, include_fixed: bool) -> Result<Vec<Verdict>> {
        let conn = self.read()?;
        let mut stmt = conn.prepare_cached(
            "SELECT m.advisory_id, m.package_id, m.status, a.severity, a.score, a.vector
             FROM advisory_match m JOIN advisory a ON a.id = m.advisory_id AND a.withdrawn IS NULL
             WHERE (?1 IS NULL OR m.advisory_id = ?1) AND (?2 OR m.status = 'affected')
             ORDER BY m.advisory_id, m.package_id",
        )?;
        let mut out = Vec::new();
        let mut collect = |id: Option<&str>| -> Result<()> {
            let rows = stmt.query_map(params![id, include_fixed], |r| {
                Ok(Verdict {
                    advisory_id: r.get(0)?,
                    package_id: r.get(1)?,
                    status: r.get(2)?,
                    severity: r.get(3)?,
                    score: r.get(4)?,
                    vector: r.get(5)?,
                })
            })?;
            for row in rows {
                out.push(row?);
            }
            Ok(())
        };
        match advisories {
            None => collect(None)?,
            Some(ids) => {
                for id in ids {
                    collect(Some(id))?;
                }
            }
        }
        Ok(out)
    }

    fn put_sbom(&self, sbom: &SbomRecord) -> Result<PutOutcome> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        let stored: Option<(i64, String)> = tx
            .prepare_cached("SELECT id, sha256 FROM sbom WHERE image = ?1")?
            .query_row([&sbom.image], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let outcome = match &stored {
            Some((_, sha)) if *sha == sbom.sha256 => return Ok(PutOutcome::Unchanged),
            Some((id, _)) => {
                // ON DELETE CASCADE clears its components.
                tx.execute("DELETE FROM sbom WHERE id = ?1", [id])?;
                PutOutcome::Updated
            }
            None => PutOutcome::Added,
        };
        tx.execute(
            "INSERT INTO sbom (image, name, sha256, format, syntax, spec_version, tools, components, edges, data, pushed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                sbom.image,
                sbom.name,
                sbom.sha256,
                sbom.format,
                sbom.syntax,
                sbom.spec_version,
                sbom.tools,
                sbom.components,
                sbom.edges,
                sbom.data,
                sbom.pushed_ms
            ],
        )?;
        let sbom_id = tx.last_insert_rowid();
        let mut interner = Interner::default();
        for d in &sbom.packages {
            let package_id = interner.package(&tx, &d.package)?;
            tx.prepare_cached(
                "INSERT OR IGNORE INTO sbom_component (sbom_id, package_id, ref, chain) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![sbom_id, package_id, d.reference, d.pulled_in_by.join("\n")])?;
        }
        tx.commit()?;
        Ok(outcome)
    }

    fn sboms(&self, image: Option<&str>) -> Result<Vec<SbomRecord>> {
        let conn = self.read()?;
        let mut rows: Vec<(i64, SbomRecord)> = conn
            .prepare_cached(
                "SELECT id, image, name, sha256, format, syntax, spec_version, tools, components, edges, pushed_ms
                 FROM sbom WHERE ?1 IS NULL OR image = ?1 ORDER BY image",
            )?
            .query_map([image], |r| {
                Ok((
                    r.get(0)?,
                    SbomRecord {
                        image: r.get(1)?,
                        name: r.get(2)?,
                        sha256: r.get(3)?,
                        format: r.get(4)?,
                        syntax: r.get(5)?,
                        spec_version: r.get(6)?,
                        tools: r.get(7)?,
                        components: r.get(8)?,
                        edges: r.get(9)?,
                        pushed_ms: r.get(10)?,
                        ..Default::default()
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare_cached(
            "SELECT sc.package_id, sc.ref, sc.chain FROM sbom_component sc WHERE sc.sbom_id = ?1
             ORDER BY sc.package_id, sc.ref",
        )?;
        let mut components: Vec<Vec<(i64, String, String)>> = Vec::new();
        for (id, _) in &rows {
            components.push(
                stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?,
            );
        }
        drop(stmt);
        let mut affected = conn.prepare_cached(
            "SELECT m.advisory_id FROM advisory_match m JOIN advisory a ON a.id = m.advisory_id
             WHERE m.package_id = ?1 AND m.status = 'affected' AND a.withdrawn IS NULL
             ORDER BY m.advisory_id",
        )?;
        let mut advisories: HashMap<i64, Vec<String>> = HashMap::new();
        for comps in &components {
            for (id, _, _) in comps {
                if !advisories.contains_key(id) {
                    let ids = affected
                        .query_map([id], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    advisories.insert(*id, ids);
                }
            }
        }
        drop(affected);
        for ((_, rec), comps) in rows.iter_mut().zip(components) {
            let ids: Vec<i64> = comps.iter().map(|c| c.0).collect();
            let packages: HashMap<i64, v1::Package> =
                packages_by_id(&conn, &ids)?.into_iter().collect();
            rec.packages = comps
                .into_iter()
                .filter_map(|(id, reference, chain)| {
                    Some(DeclaredPackage {
                        package: packages.get(&id)?.clone(),
                        reference,
                        pulled_in_by: chain
                            .split('\n')
                            .filter(|c| !c.is_empty())
                            .map(str::to_string)
                            .collect(),
                        advisories: advisories.get(&id).cloned().unwrap_or_default(),
                    })
                })
                .collect();
        }
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by the first schema migrates forward and keeps its rows.
    #[test]
    fn a_version_1_database_migrates_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("patchgap.db")).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO host (host_id, hostname, boot_id, kernel, labels, agent_version, capabilities,
                 session_id, acked_seq, last_seen_ms) VALUES ('m1', 'old-host', '', '', '{}', '', x'', 's', 7, 1)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let hosts = store.hosts().unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].identity.hostname, "old-host");
        let hello = v1::Hello {
            host: Some(v1::HostIdentity {
                host_id: "m1".into(),
                hostname: "old-host".into(),
                ..Default::default()
            }),
            session_id: "s".into(),
            ..Default::default()
        };
        let session = store.hello(&hello, 2).unwrap();
        assert_eq!(
            (session.acked_seq, session.new, session.epoch),
            (7, false, 0)
        );
    }

    /// Schema 8 fills the workloads' image columns from the records stored
    /// before it, so an SBOM pushed after the upgrade finds them; packages
    /// stored before it are unmatched, for the collector's start-up pass.
    #[test]
    fn a_version_7_database_gets_image_columns_and_unmatched_packages() {
        let dir = tempfile::tempdir().unwrap();
        let digest = format!("sha256:{}", "cd".repeat(32));
        {
            let conn = Connection::open(dir.path().join("patchgap.db")).unwrap();
            for m in &MIGRATIONS[..7] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", 7).unwrap();
            conn.execute(
                "INSERT INTO host (host_id, hostname, boot_id, kernel, labels, agent_version, capabilities,
                 session_id, acked_seq, last_seen_ms) VALUES ('m1', 'old-host', '', '', '{}', '', x'', 's', 7, 1)",
                [],
            )
            .unwrap();
            let w = v1::Workload {
                id: "container/c1".into(),
                image_digest: digest.clone(),
                image_id: "sha256:11".into(),
                ..Default::default()
            };
            conn.execute(
                "INSERT INTO workload (host, id, data, last_seen_ms) VALUES (1, ?1, ?2, 1)",
                params![w.id, w.encode_to_vec()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO package (ecosystem, name, source, version, arch, purl, distro_id, key)
                 VALUES ('pypi', 'requests', '', '2.19.0', '', 'pkg:pypi/requests@2.19.0', 0, 'requests')",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let (got_digest, got_id): (String, String) = store
            .read()
            .unwrap()
            .query_row(
                "SELECT image_digest, image_id FROM workload WHERE id = 'container/c1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (got_digest.as_str(), got_id.as_str()),
            (digest.as_str(), "sha256:11")
        );
        let unmatched = store.match_candidates(&MatchScope::Unmatched).unwrap();
        assert_eq!(unmatched.scope_size, 1);
    }
}
