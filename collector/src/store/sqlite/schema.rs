//! The schema: migrations, applied in order, and the data fix-ups that go
//! with them. A released migration is never edited; each runs in its own
//! transaction, which also advances `PRAGMA user_version`.

use patchgap_proto::{Message, v1};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use crate::store::{Result, StoreError};

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
    // 12: the tamper-evident audit log, its signed checkpoints, and the
    // tokens the collector issued (issue 13). The triggers make the log
    // append-only for this collector's own SQL: an UPDATE or DELETE is an
    // error. Someone with the file can drop them, which is what the hash
    // chain and the signed checkpoints are for.
    r#"
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        time_ms INTEGER NOT NULL,
        subject TEXT NOT NULL,
        scopes TEXT NOT NULL,
        peer TEXT NOT NULL,
        method TEXT NOT NULL,
        args TEXT NOT NULL,
        result TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_by_time ON audit (time_ms);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TABLE audit_checkpoint (
        seq INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        signature TEXT NOT NULL
    );
    CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TABLE token (
        id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        -- Comma-separated scope names.
        scopes TEXT NOT NULL,
        issued_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        issued_by TEXT NOT NULL,
        -- 0 while the token is not revoked.
        revoked_ms INTEGER NOT NULL DEFAULT 0
    );
    "#,
    // 13: provenance of advisories and SBOMs (issue 13): who imported each
    // record, from which named source (`origin`; `source` stays the file
    // name), and the SHA-256 of its bytes. Rows stored before it have no
    // subject and no source; migration 13's fix-up hashes their advisories.
    r#"
    ALTER TABLE advisory ADD COLUMN imported_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE advisory ADD COLUMN origin TEXT NOT NULL DEFAULT '';
    ALTER TABLE advisory ADD COLUMN sha256 TEXT NOT NULL DEFAULT '';
    ALTER TABLE sbom ADD COLUMN imported_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE sbom ADD COLUMN origin TEXT NOT NULL DEFAULT '';
    "#,
    // 14: the agent's own health from its last heartbeat (issue 14): scan
    // loop liveness and restarts, spool losses, watchdog shedding. NULL
    // until an agent that reports it sends a heartbeat.
    r#"
    ALTER TABLE host ADD COLUMN health BLOB;
    "#,
    // 15: keyset paging. Paged answers walk each host's processes in pid
    // order (running ones, or all of them for a time window) and seek to a
    // cursor; a set's members are found by set (ps's counts, anonymous
    // code, the evidence of a page's processes) without scanning them all.
    r#"
    CREATE INDEX process_running_by_host_pid ON process (host, pid) WHERE exit_time_ms IS NULL;
    CREATE INDEX process_by_host_pid ON process (host, pid);
    CREATE INDEX artifact_set_member_by_set ON artifact_set_member (set_id);
    "#,
    // 16: crash-safe detection (issue 14). An advisory is stored `matched =
    // 0` in its import's transaction, and only the transaction that writes
    // its verdicts sets it to 1, so a crash between the two leaves a mark
    // the start-up pass finds. Every advisory stored before it is marked:
    // an import killed before this schema left some without verdicts, and
    // nothing says which.
    r#"
    ALTER TABLE advisory ADD COLUMN matched INTEGER NOT NULL DEFAULT 1;
    UPDATE advisory SET matched = 0;
    CREATE INDEX advisory_pending ON advisory (id) WHERE matched = 0;
    "#,
    // 17: incidents (issue 15). An incident is the projection of its
    // append-only event log: `incident_event` rows are never changed or
    // removed (the triggers refuse it), and the incident row keeps only
    // its identity and what the domain cached with the last event (state,
    // open, projection). One open incident holds a dedup key at a time; a
    // closed or false-positive one frees it, so the same advisory can open
    // again later as a new incident. The identity columns never change.
    r#"
    CREATE TABLE incident (
        id INTEGER PRIMARY KEY,
        dedup_key TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        open INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        projection BLOB NOT NULL
    );
    CREATE UNIQUE INDEX incident_open_key ON incident (dedup_key) WHERE open = 1;
    CREATE INDEX incident_open ON incident (id) WHERE open = 1;
    CREATE TRIGGER incident_identity_fixed BEFORE UPDATE OF id, dedup_key, created_ms ON incident
        BEGIN SELECT RAISE(ABORT, 'an incident keeps its id, dedup key and creation time'); END;
    CREATE TRIGGER incident_no_delete BEFORE DELETE ON incident
        BEGIN SELECT RAISE(ABORT, 'incidents are never deleted'); END;
    CREATE TABLE incident_event (
        incident INTEGER NOT NULL REFERENCES incident (id),
        seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (incident, seq)
    );
    CREATE TRIGGER incident_event_no_update BEFORE UPDATE ON incident_event
        BEGIN SELECT RAISE(ABORT, 'the incident log is append-only'); END;
    CREATE TRIGGER incident_event_no_delete BEFORE DELETE ON incident_event
        BEGIN SELECT RAISE(ABORT, 'the incident log is append-only'); END;
    "#,
    // 18: the outbox of signed webhooks (issue 16). One row per delivery,
    // unique by its webhook-id, so enqueueing after a restart is a no-op;
    // a worker leases a due row (claimed_until_ms), commits, calls out,
    // then records the outcome. An endpoint a receiver answered 410 for is
    // a row of `outbox_endpoint_disabled`; its deliveries wait.
    r#"
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        webhook_id TEXT NOT NULL UNIQUE,
        endpoint TEXT NOT NULL,
        incident INTEGER NOT NULL,
        action INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        body BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at_ms INTEGER NOT NULL,
        claimed_until_ms INTEGER NOT NULL DEFAULT 0,
        last_status INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        done_ms INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_due ON outbox (next_at_ms) WHERE state = 'pending';
    CREATE INDEX outbox_by_incident ON outbox (incident, id);
    CREATE TABLE outbox_endpoint_disabled (
        name TEXT PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    "#,
    // 19: egress (issue 18): learned baselines, versioned (the newest few
    // versions of each key are kept), and unexpected-egress alerts, one
    // open alert per dedup key (workload, destination, port). Both are
    // documents the domain owns; the store keeps them with their identity
    // and counters.
    r#"
    CREATE TABLE egress_baseline (
        key TEXT NOT NULL,
        version INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (key, version)
    );
    CREATE TABLE egress_alert (
        id INTEGER PRIMARY KEY,
        dedup_key TEXT NOT NULL,
        workload TEXT NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        count INTEGER NOT NULL,
        resolved_ms INTEGER,
        body TEXT NOT NULL
    );
    CREATE UNIQUE INDEX egress_alert_open_key ON egress_alert (dedup_key) WHERE resolved_ms IS NULL;
    CREATE INDEX egress_alert_by_time ON egress_alert (last_seen_ms);
    "#,
    // 20: history retention (issue 19). `retention` holds the horizon the
    // collector enforced (history before it was dropped), so answers over
    // an older window say so. `retention_orphan` lists the artifact sets
    // that pruned rows pointed at, for compaction to check one by one
    // instead of scanning every set. The indexes find the oldest ended
    // history, and the processes of a set whether they run or not.
    r#"
    CREATE TABLE retention (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        horizon_ms INTEGER NOT NULL,
        enforced_ms INTEGER NOT NULL
    );
    CREATE TABLE retention_orphan (set_id INTEGER PRIMARY KEY);
    CREATE INDEX process_exited ON process (exit_time_ms) WHERE exit_time_ms IS NOT NULL;
    CREATE INDEX process_by_set ON process (set_id);
    CREATE INDEX history_closed ON process_set_history (until_ms) WHERE until_ms IS NOT NULL;
    CREATE INDEX workload_by_time ON workload (last_seen_ms);
    "#,
    // 21: a host's inventory generation, which moves with every stored
    // snapshot, delta and Hello (never a heartbeat), so a reader can keep
    // what it summed up of a host until the host changes
    // (`Store::inventory_gens`).
    r#"
    ALTER TABLE host ADD COLUMN inventory_gen INTEGER NOT NULL DEFAULT 0;
    "#,
];

/// The schema version this collector writes.
pub(super) const KNOWN_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found == known {
        return Ok(());
    }
    // Another process (`patchgap-collector token issue` beside a starting
    // collector) may be migrating the same file: each step takes the write
    // lock first (IMMEDIATE), then reads the version under it, so a step
    // is applied exactly once.
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > known {
            return Err(StoreError::SchemaTooNew { found, known });
        }
        if found == known {
            return Ok(());
        }
        tx.execute_batch(MIGRATIONS[found as usize])?;
        if found + 1 == 8 {
            backfill_workload_images(&tx)?;
        }
        if found + 1 == 13 {
            backfill_advisory_hashes(&tx)?;
        }
        tx.pragma_update(None, "user_version", found + 1)?;
        tx.commit()?;
    }
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

/// Migration 13: the content hash of advisories stored before it.
fn backfill_advisory_hashes(tx: &Transaction) -> Result<()> {
    use sha2::{Digest, Sha256};
    let rows: Vec<(String, Vec<u8>)> = tx
        .prepare("SELECT id, data FROM advisory")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut update = tx.prepare("UPDATE advisory SET sha256 = ?2 WHERE id = ?1")?;
    for (id, data) in rows {
        update.execute(params![id, crate::auth::hex(&Sha256::digest(&data))])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MatchScope, Store, sqlite::SqliteStore};

    /// Two processes opening a fresh data directory at once (a collector
    /// starting, `token issue` beside it) both get a store; neither trips
    /// on the other's half-made schema.
    #[test]
    fn concurrent_first_opens_migrate_once() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let (path, barrier) = (dir.path().to_path_buf(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        SqliteStore::open(&path).map(|_| ())
                    })
                })
                .collect();
            for open in opens {
                open.join().unwrap().unwrap();
            }
        }
    }

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

    /// Schema 14 marks every advisory stored before it pending: an import
    /// killed under an older collector may have left any of them without
    /// verdicts, so the start-up pass judges them all once.
    #[test]
    fn a_version_13_database_has_every_advisory_pending() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("patchgap.db")).unwrap();
            for m in &MIGRATIONS[..13] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", 13).unwrap();
            for id in ["PYSEC-1", "PYSEC-2"] {
                conn.execute(
                    "INSERT INTO advisory (id, modified, modified_ms, summary, severity, vector, aliases,
                     source, data, imported_ms) VALUES (?1, 'x', 1, '', '', '', '', 'a.json', x'7b7d', 5)",
                    [id],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(
            store.pending_advisories(10).unwrap(),
            ["PYSEC-1", "PYSEC-2"]
        );
    }

    /// Schema 13 hashes the advisories stored before it; they keep no
    /// subject and no source, so any source may update them.
    #[test]
    fn a_version_12_database_gets_advisory_hashes() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("patchgap.db")).unwrap();
            for m in &MIGRATIONS[..12] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", 12).unwrap();
            conn.execute(
                "INSERT INTO advisory (id, modified, modified_ms, summary, severity, vector, aliases,
                 source, data, imported_ms) VALUES ('PYSEC-1', 'x', 1, '', '', '', '', 'a.json', x'7b7d', 5)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let got = &store.advisories(None).unwrap()[0];
        assert_eq!(
            got.provenance,
            crate::store::Provenance {
                imported_by: String::new(),
                imported_ms: 5,
                source: String::new(),
                sha256: crate::auth::hex(&Sha256::digest(b"{}")),
            }
        );
    }
}
