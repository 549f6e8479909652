//! What agents write: sessions (`hello`), their messages (`apply`), and the
//! interning of packages, artifacts and sets. Each message is one
//! transaction committed with its sequence number; the helpers run inside
//! the caller's transaction and never commit.
//!
//! The host row is locked (`FOR UPDATE`) for the whole of `apply`, so two
//! collectors holding streams of one host (a lingering old stream and the
//! new one) apply its messages one at a time, and the sequence check and
//! the write see the same row. Interning inserts with `ON CONFLICT`, so two
//! collectors interning one package both end with the same row.

use std::collections::HashMap;

use patchgap_proto::{Message, v1};
use postgres::{Client, Statement, Transaction, types::ToSql};
use sha2::{Digest, Sha256};

use crate::store::{HelloHost, Result, Session, StoreError};

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

/// ecosystem, name, source, version, arch, purl, distro package id.
type PackageKey = (String, String, String, String, String, String, i64);

/// Statements of one transaction, prepared once: a snapshot interns
/// thousands of artifacts with the same few statements.
#[derive(Default)]
pub(super) struct Prepared(HashMap<&'static str, Statement>);

impl Prepared {
    pub(super) fn get(&mut self, tx: &mut Transaction<'_>, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = tx.prepare(sql)?;
        self.0.insert(sql, s.clone());
        Ok(s)
    }
}

/// Interning caches for one transaction: processes of a snapshot share most
/// of their packages and artifacts.
#[derive(Default)]
pub(super) struct Interner {
    packages: HashMap<PackageKey, i64>,
    artifacts: HashMap<ArtifactKey, i64>,
    sets: HashMap<Vec<u8>, i64>,
    pub(super) sql: Prepared,
}

const INSERT_PACKAGE: &str = "INSERT INTO package (ecosystem, name, source, version, arch, purl, distro_id, key, fixed_cves, replaced_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (ecosystem, name, source, version, arch, purl, distro_id)
     DO UPDATE SET fixed_cves = excluded.fixed_cves
         WHERE excluded.fixed_cves != '' AND excluded.fixed_cves != package.fixed_cves
     RETURNING id";
const SELECT_PACKAGE: &str =
    "SELECT id FROM package WHERE ecosystem = $1 AND name = $2 AND source = $3 AND version = $4
     AND arch = $5 AND purl = $6 AND distro_id = $7";
const SELECT_PACKAGE_CVES: &str =
    "SELECT id, fixed_cves FROM package WHERE ecosystem = $1 AND name = $2 AND source = $3
     AND version = $4 AND arch = $5 AND purl = $6 AND distro_id = $7";
const INSERT_ARTIFACT: &str = "INSERT INTO artifact (path, dev, inode, kind, deleted, stale, package_id, size, sha256, unhashed)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING RETURNING id";
const SELECT_ARTIFACT: &str = "SELECT id FROM artifact WHERE path = $1 AND dev = $2 AND inode = $3 AND kind = $4
     AND deleted = $5 AND stale = $6 AND package_id = $7 AND size = $8 AND sha256 = $9 AND unhashed = $10";

impl Interner {
    pub(super) fn package(&mut self, tx: &mut Transaction<'_>, p: &v1::Package) -> Result<i64> {
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
        let fixed_cves = p.fixed_cves.join(",");
        // Stored already, with nothing to change: read, not upserted. An
        // upsert locks the row even when its WHERE turns the update down,
        // so every ingest touching libc6 would queue behind the others on
        // that row until they commit, and two touching the same packages
        // in another order deadlock (collectors on one database do).
        let select = self.sql.get(tx, SELECT_PACKAGE_CVES)?;
        if let Some(row) = tx.query_opt(
            &select,
            &[&key.0, &key.1, &key.2, &key.3, &key.4, &key.5, &key.6],
        )? {
            let (id, stored): (i64, String) = (row.get(0), row.get(1));
            if fixed_cves.is_empty() || fixed_cves == stored {
                self.packages.insert(key, id);
                return Ok(id);
            }
        }
        let insert = self.sql.get(tx, INSERT_PACKAGE)?;
        let written = tx.query_opt(
            &insert,
            &[
                &key.0,
                &key.1,
                &key.2,
                &key.3,
                &key.4,
                &key.5,
                &key.6,
                &crate::store::package_key(&p.ecosystem, &p.name),
                &fixed_cves,
                &p.replaced_by,
            ],
        )?;
        // No row back: the package was stored and its CVEs did not change.
        let (id, changed) = match written {
            Some(row) => (row.get::<_, i64>(0), true),
            None => {
                let select = self.sql.get(tx, SELECT_PACKAGE)?;
                let row = tx.query_one(
                    &select,
                    &[&key.0, &key.1, &key.2, &key.3, &key.4, &key.5, &key.6],
                )?;
                (row.get(0), false)
            }
        };
        // New changelog CVEs can turn a match into fixed-by-distro: this
        // package and the language packages it installed are matched again.
        if changed && !p.fixed_cves.is_empty() {
            tx.execute(
                "UPDATE package SET matched = FALSE WHERE id = $1 OR distro_id = $1",
                &[&id],
            )?;
        }
        self.packages.insert(key, id);
        Ok(id)
    }

    fn artifact(&mut self, tx: &mut Transaction<'_>, a: &v1::Artifact) -> Result<i64> {
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
        let (dev, inode, kind, size) =
            (key.1 as i64, key.2 as i64, i64::from(key.3), key.7.0 as i64);
        let args: [&(dyn ToSql + Sync); 10] = [
            &key.0, &dev, &inode, &kind, &key.4, &key.5, &key.6, &size, &key.7.1, &key.7.2,
        ];
        let insert = self.sql.get(tx, INSERT_ARTIFACT)?;
        let id = match tx.query_opt(&insert, &args)? {
            Some(row) => row.get(0),
            None => {
                let select = self.sql.get(tx, SELECT_ARTIFACT)?;
                tx.query_one(&select, &args)?.get(0)
            }
        };
        self.artifacts.insert(key, id);
        Ok(id)
    }

    /// The id of the set holding exactly these artifacts.
    fn set(&mut self, tx: &mut Transaction<'_>, artifacts: &[v1::Artifact]) -> Result<i64> {
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
        let digest = Sha256::digest(&members).to_vec();
        let insert = self.sql.get(
            tx,
            "INSERT INTO artifact_set (members, members_sha256, size) VALUES ($1, $2, $3)
             ON CONFLICT (members_sha256) DO NOTHING RETURNING id",
        )?;
        let id = match tx.query_opt(&insert, &[&members, &digest, &(ids.len() as i64)])? {
            Some(row) => {
                let id: i64 = row.get(0);
                tx.execute(
                    "INSERT INTO artifact_set_member (set_id, artifact_id)
                     SELECT $1, unnest($2::BIGINT[])",
                    &[&id, &ids],
                )?;
                id
            }
            None => {
                let select = self
                    .sql
                    .get(tx, "SELECT id FROM artifact_set WHERE members_sha256 = $1")?;
                tx.query_one(&select, &[&digest])?.get(0)
            }
        };
        self.sets.insert(members, id);
        Ok(id)
    }
}

fn key_of(k: &Option<v1::ProcessKey>) -> Result<v1::ProcessKey> {
    k.ok_or_else(|| StoreError::Invalid("process without a key".into()))
}

const PROCESS_BY_KEY: &str =
    "SELECT id FROM process WHERE host = $1 AND boot_id = $2 AND pid = $3 AND start_ticks = $4";

/// The id of the process with this key on the host's current boot.
fn process_id(
    tx: &mut Transaction<'_>,
    sql: &mut Prepared,
    host: i64,
    boot_id: &str,
    key: &v1::ProcessKey,
) -> Result<Option<i64>> {
    let stmt = sql.get(tx, PROCESS_BY_KEY)?;
    Ok(tx
        .query_opt(
            &stmt,
            &[
                &host,
                &boot_id,
                &i64::from(key.pid),
                &(key.start_ticks as i64),
            ],
        )?
        .map(|r| r.get(0)))
}

fn upsert_process(
    tx: &mut Transaction<'_>,
    interner: &mut Interner,
    host: i64,
    boot_id: &str,
    p: &v1::Process,
    snapshot_id: &str,
    at_ms: i64,
) -> Result<()> {
    let key = key_of(&p.key)?;
    let set_id = interner.set(tx, &p.artifacts)?;
    let find = interner.sql.get(
        tx,
        "SELECT id, set_id, exit_time_ms FROM process
         WHERE host = $1 AND boot_id = $2 AND pid = $3 AND start_ticks = $4",
    )?;
    let (pid, start_ticks) = (i64::from(key.pid), key.start_ticks as i64);
    let existing: Option<(i64, i64, Option<i64>)> = tx
        .query_opt(&find, &[&host, &boot_id, &pid, &start_ticks])?
        .map(|r| (r.get(0), r.get(1), r.get(2)));
    let privilege = p.privilege.clone().unwrap_or_default();
    let (ppid, uid, euid) = (i64::from(p.ppid), i64::from(p.uid), i64::from(p.euid));
    let (mnt_ns, net_ns) = (p.mnt_ns as i64, p.net_ns as i64);
    let privilege_bytes = privilege.encode_to_vec();
    let fields: [&(dyn ToSql + Sync); 19] = [
        &ppid,
        &uid,
        &euid,
        &p.exe,
        &p.cmdline,
        &p.comm,
        &p.cgroup,
        &mnt_ns,
        &net_ns,
        &p.start_time_ms,
        &p.workload,
        &p.root,
        &p.partial,
        &set_id,
        &at_ms,
        &snapshot_id,
        &privilege_bytes,
        &privilege.privileged,
        &p.net_ns_name,
    ];
    match existing {
        None => {
            let insert = interner.sql.get(
                tx,
                "INSERT INTO process (ppid, uid, euid, exe, cmdline, comm, cgroup, mnt_ns, net_ns, start_time_ms,
                 workload, root, partial, set_id, last_seen_ms, snapshot_id, privilege, privileged, net_ns_name,
                 first_seen_ms, host, boot_id, pid, start_ticks)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                 $15, $20, $21, $22, $23)
                 RETURNING id",
            )?;
            let mut args = fields.to_vec();
            args.extend_from_slice(&[&host, &boot_id, &pid, &start_ticks]);
            let id: i64 = tx.query_one(&insert, &args)?.get(0);
            let history = interner.sql.get(
                tx,
                "INSERT INTO process_set_history (process_id, set_id, from_ms) VALUES ($1, $2, $3)",
            )?;
            tx.execute(&history, &[&id, &set_id, &at_ms])?;
        }
        Some((id, old_set, exit)) => {
            let update = interner.sql.get(
                tx,
                "UPDATE process SET ppid = $1, uid = $2, euid = $3, exe = $4, cmdline = $5, comm = $6, cgroup = $7,
                 mnt_ns = $8, net_ns = $9, start_time_ms = $10, workload = $11, root = $12, partial = $13,
                 set_id = $14, last_seen_ms = $15, snapshot_id = $16, privilege = $17, privileged = $18,
                 net_ns_name = $19, exit_time_ms = NULL WHERE id = $20",
            )?;
            let mut args = fields.to_vec();
            args.push(&id);
            tx.execute(&update, &args)?;
            if old_set != set_id || exit.is_some() {
                tx.execute(
                    "UPDATE process_set_history SET until_ms = $2 WHERE process_id = $1 AND until_ms IS NULL",
                    &[&id, &at_ms],
                )?;
                tx.execute(
                    "INSERT INTO process_set_history (process_id, set_id, from_ms) VALUES ($1, $2, $3)",
                    &[&id, &set_id, &at_ms],
                )?;
            }
        }
    }
    Ok(())
}

fn upsert_workloads(
    tx: &mut Transaction<'_>,
    host: i64,
    workloads: &[v1::Workload],
    at_ms: i64,
) -> Result<()> {
    if workloads.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare(
        "INSERT INTO workload (host, id, data, last_seen_ms, image_digest, image_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (host, id) DO UPDATE SET data = excluded.data, last_seen_ms = excluded.last_seen_ms,
             image_digest = excluded.image_digest, image_id = excluded.image_id",
    )?;
    for w in workloads {
        if w.id.is_empty() {
            return Err(StoreError::Invalid("workload without an id".into()));
        }
        tx.execute(
            &stmt,
            &[
                &host,
                &w.id,
                &w.encode_to_vec(),
                &at_ms,
                &w.image_digest,
                &w.image_id,
            ],
        )?;
    }
    Ok(())
}

/// Adds connection records to their processes; a record for a process the
/// store does not know (it lived and died between two messages and no scan
/// saw it) is dropped.
fn add_connections(
    tx: &mut Transaction<'_>,
    sql: &mut Prepared,
    host: i64,
    boot_id: &str,
    conns: &[v1::Connection],
) -> Result<()> {
    for c in conns {
        let key = key_of(&c.key)?;
        let Some(id) = process_id(tx, sql, host, boot_id, &key)? else {
            continue;
        };
        let stmt = sql.get(
            tx,
            "INSERT INTO connection (process_id, protocol, remote_addr, remote_port, first_seen_ms, last_seen_ms,
             count, last_result) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (process_id, protocol, remote_addr, remote_port) DO UPDATE SET
               first_seen_ms = LEAST(connection.first_seen_ms, excluded.first_seen_ms),
               last_seen_ms = GREATEST(connection.last_seen_ms, excluded.last_seen_ms),
               count = connection.count + excluded.count,
               last_result = excluded.last_result",
        )?;
        tx.execute(
            &stmt,
            &[
                &id,
                &c.protocol,
                &c.remote_addr,
                &i64::from(c.remote_port),
                &c.first_seen_ms,
                &c.last_seen_ms,
                &(c.count as i64),
                &i64::from(c.last_result),
            ],
        )?;
    }
    Ok(())
}

fn replace_sockets(
    tx: &mut Transaction<'_>,
    sql: &mut Prepared,
    host: i64,
    boot_id: &str,
    ps: &v1::ProcessSockets,
) -> Result<()> {
    let key = key_of(&ps.key)?;
    // Sockets of a process we never heard of: the upsert that names it is
    // in the same message, before them, so this only happens for bad input.
    let Some(id) = process_id(tx, sql, host, boot_id, &key)? else {
        return Ok(());
    };
    let delete = sql.get(tx, "DELETE FROM socket WHERE process_id = $1")?;
    tx.execute(&delete, &[&id])?;
    if ps.sockets.is_empty() {
        return Ok(());
    }
    let insert = sql.get(
        tx,
        "INSERT INTO socket (process_id, protocol, local_addr, local_port, remote_addr, remote_port, state, inode, outbound, connect_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )?;
    for s in &ps.sockets {
        tx.execute(
            &insert,
            &[
                &id,
                &s.protocol,
                &s.local_addr,
                &i64::from(s.local_port),
                &s.remote_addr,
                &i64::from(s.remote_port),
                &s.state,
                &(s.inode as i64),
                &s.outbound,
                &s.connect_ms,
            ],
        )?;
    }
    Ok(())
}

/// Retires the running processes `where_clause` selects (its arguments
/// are `$1…$n`; the exit time is `$n+1`): the process, its history
/// interval and its sockets together, in one statement.
fn mark_exited(
    tx: &mut Transaction<'_>,
    where_clause: &str,
    args: &[&(dyn ToSql + Sync)],
    at_ms: i64,
) -> Result<()> {
    let at = args.len() + 1;
    let sql = format!(
        "WITH gone AS (
             UPDATE process SET exit_time_ms = ${at}
             WHERE exit_time_ms IS NULL AND {where_clause} RETURNING id
         ), closed AS (
             UPDATE process_set_history SET until_ms = ${at}
             WHERE until_ms IS NULL AND process_id IN (SELECT id FROM gone)
         )
         DELETE FROM socket WHERE process_id IN (SELECT id FROM gone)"
    );
    let mut all = args.to_vec();
    all.push(&at_ms);
    tx.execute(&sql, &all)?;
    Ok(())
}

pub(super) fn hello(client: &mut Client, hello: &v1::Hello, now_ms: i64) -> Result<Session> {
    let HelloHost {
        id,
        host_key,
        caps,
        labels,
    } = HelloHost::of(hello)?;
    let mut tx = client.transaction()?;
    // Two collectors greeting one host at once: one inserts, and both
    // then hold the row locked in turn.
    let inserted = tx.execute(
        "INSERT INTO host (host_id, hostname, boot_id, kernel, labels, agent_version, capabilities,
         session_id, acked_seq, last_seen_ms) VALUES ($1, '', '', '', '{}', '', '\\x', '', 0, $2)
         ON CONFLICT (host_id) DO NOTHING",
        &[host_key, &now_ms],
    )? == 1;
    let row = tx.query_one(
        "SELECT id, session_id, acked_seq, session_epoch FROM host WHERE host_id = $1 FOR UPDATE",
        &[host_key],
    )?;
    let (host, session_id, acked, epoch): (i64, String, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let session = if inserted {
        Session {
            host,
            acked_seq: 0,
            new: true,
            epoch: 1,
        }
    } else if session_id == hello.session_id {
        Session {
            host,
            acked_seq: acked as u64,
            new: false,
            epoch,
        }
    } else {
        Session {
            host,
            acked_seq: 0,
            new: true,
            epoch: epoch + 1,
        }
    };
    tx.execute(
        "UPDATE host SET hostname = $2, boot_id = $3, kernel = $4, labels = $5, agent_version = $6,
         capabilities = $7, session_id = $8, acked_seq = $9, last_seen_ms = $10, session_epoch = $11 WHERE id = $1",
        &[
            &session.host,
            &id.hostname,
            &id.boot_id,
            &id.kernel,
            &labels,
            &hello.agent_version,
            &caps,
            &hello.session_id,
            &(session.acked_seq as i64),
            &now_ms,
            &session.epoch,
        ],
    )?;
    tx.commit()?;
    Ok(session)
}

pub(super) fn apply(
    client: &mut Client,
    session: &Session,
    msg: &v1::AgentMessage,
    now_ms: i64,
) -> Result<()> {
    use v1::agent_message::Body;
    let mut tx = client.transaction()?;
    let row = tx.query_one(
        "SELECT acked_seq, boot_id, session_epoch FROM host WHERE id = $1 FOR UPDATE",
        &[&session.host],
    )?;
    let (acked, boot_id, epoch): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
    if epoch != session.epoch {
        return Err(StoreError::Superseded);
    }
    if msg.seq <= acked as u64 {
        return Ok(()); // A resend of something already stored.
    }
    let host = session.host;
    let mut interner = Interner::default();
    let boot_id = boot_id.as_str();
    match &msg.body {
        None | Some(Body::Hello(_)) => {
            return Err(StoreError::Invalid(
                "only the first message of a stream may be a Hello".into(),
            ));
        }
        Some(Body::Snapshot(s)) => {
            upsert_workloads(&mut tx, host, &s.workloads, s.scanned_at_ms)?;
            for p in &s.processes {
                upsert_process(
                    &mut tx,
                    &mut interner,
                    host,
                    boot_id,
                    p,
                    &s.snapshot_id,
                    s.scanned_at_ms,
                )?;
                // A snapshot is a full inventory and the part naming a
                // process carries all its sockets: listing none means it
                // has none, so forget what an earlier session stored.
                replace_sockets(
                    &mut tx,
                    &mut interner.sql,
                    host,
                    boot_id,
                    &v1::ProcessSockets {
                        key: p.key,
                        sockets: Vec::new(),
                    },
                )?;
            }
            for ps in &s.sockets {
                replace_sockets(&mut tx, &mut interner.sql, host, boot_id, ps)?;
            }
            if s.last {
                // The snapshot is complete: whatever it did not name has exited.
                mark_exited(
                    &mut tx,
                    "host = $1 AND snapshot_id != $2",
                    &[&host, &s.snapshot_id],
                    s.scanned_at_ms,
                )?;
                let stats = s.stats.unwrap_or_default().encode_to_vec();
                tx.execute(
                    "UPDATE host SET last_full_scan_ms = $2, last_scan = $3 WHERE id = $1",
                    &[&host, &s.scanned_at_ms, &stats],
                )?;
            }
        }
        Some(Body::Delta(d)) => {
            upsert_workloads(&mut tx, host, &d.workloads, d.scanned_at_ms)?;
            for p in &d.upserts {
                upsert_process(
                    &mut tx,
                    &mut interner,
                    host,
                    boot_id,
                    p,
                    "",
                    d.scanned_at_ms,
                )?;
            }
            for e in &d.exits {
                let k = key_of(&e.key)?;
                mark_exited(
                    &mut tx,
                    "host = $1 AND boot_id = $2 AND pid = $3 AND start_ticks = $4",
                    &[&host, &boot_id, &i64::from(k.pid), &(k.start_ticks as i64)],
                    e.exit_time_ms,
                )?;
            }
            for ps in &d.sockets {
                replace_sockets(&mut tx, &mut interner.sql, host, boot_id, ps)?;
            }
            add_connections(&mut tx, &mut interner.sql, host, boot_id, &d.connections)?;
            if let Some(stats) = &d.stats {
                tx.execute(
                    "UPDATE host SET last_scan = $2 WHERE id = $1",
                    &[&host, &stats.encode_to_vec()],
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
                    "UPDATE host SET last_scan = $2 WHERE id = $1",
                    &[&host, &stats.encode_to_vec()],
                )?;
            }
            if let Some(sense) = &h.sense {
                tx.execute(
                    "UPDATE host SET sense = $2 WHERE id = $1",
                    &[&host, &sense.encode_to_vec()],
                )?;
            }
            if let Some(caps) = &h.capabilities {
                tx.execute(
                    "UPDATE host SET capabilities = $2 WHERE id = $1",
                    &[&host, &caps.encode_to_vec()],
                )?;
            }
            if let Some(health) = &h.health {
                tx.execute(
                    "UPDATE host SET health = $2 WHERE id = $1",
                    &[&host, &health.encode_to_vec()],
                )?;
            }
        }
    }
    tx.execute(
        "UPDATE host SET acked_seq = $2, last_seen_ms = $3 WHERE id = $1",
        &[&host, &(msg.seq as i64), &now_ms],
    )?;
    tx.commit()?;
    Ok(())
}
