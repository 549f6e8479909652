//! What agents write: sessions (`hello`), their messages (`apply`), and the
//! interning of packages, artifacts and sets. Each message is one transaction
//! committed with its sequence number; the helpers run inside the caller's
//! transaction and never commit.

use std::collections::HashMap;

use patchgap_proto::{Message, v1};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

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

/// Interning caches for one transaction: processes of a snapshot share most
/// of their packages and artifacts.
#[derive(Default)]
pub(super) struct Interner {
    packages: HashMap<PackageKey, i64>,
    artifacts: HashMap<ArtifactKey, i64>,
    sets: HashMap<Vec<u8>, i64>,
    /// The id of each entry of the message's artifact table, once met.
    table: Vec<Option<i64>>,
}

/// ecosystem, name, source, version, arch, purl, distro package id.
type PackageKey = (String, String, String, String, String, String, i64);

impl Interner {
    pub(super) fn package(&mut self, tx: &Transaction, p: &v1::Package) -> Result<i64> {
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

    /// The id of the set holding exactly this process's artifacts, those
    /// it refers to in `table` (its message's) included.
    fn set(&mut self, tx: &Transaction, table: &[v1::Artifact], p: &v1::Process) -> Result<i64> {
        let mut ids = Vec::with_capacity(p.artifact_count());
        for a in &p.artifacts {
            ids.push(self.artifact(tx, a)?);
        }
        for &r in &p.artifact_refs {
            let Some(a) = table.get(r as usize) else {
                continue;
            };
            self.table.resize(table.len(), None);
            ids.push(match self.table[r as usize] {
                Some(id) => id,
                None => {
                    let id = self.artifact(tx, a)?;
                    self.table[r as usize] = Some(id);
                    id
                }
            });
        }
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
    (table, p): (&[v1::Artifact], &v1::Process),
    snapshot_id: &str,
    at_ms: i64,
) -> Result<()> {
    let key = key_of(&p.key)?;
    let set_id = interner.set(tx, table, p)?;
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

pub(super) fn hello(conn: &mut Connection, hello: &v1::Hello, now_ms: i64) -> Result<Session> {
    let HelloHost {
        id,
        host_key,
        caps,
        labels,
    } = HelloHost::of(hello)?;
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
         capabilities = ?7, session_id = ?8, acked_seq = ?9, last_seen_ms = ?10, session_epoch = ?11,
         inventory_gen = inventory_gen + 1 WHERE id = ?1",
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

pub(super) fn apply(
    conn: &mut Connection,
    session: &Session,
    msg: &v1::AgentMessage,
    now_ms: i64,
) -> Result<()> {
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
                    (&s.artifacts, p),
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
                upsert_process(
                    &tx,
                    &mut interner,
                    host,
                    &boot_id,
                    (&d.artifacts, p),
                    "",
                    d.scanned_at_ms,
                )?;
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
            if let Some(health) = &h.health {
                tx.execute(
                    "UPDATE host SET health = ?2 WHERE id = ?1",
                    params![host, health.encode_to_vec()],
                )?;
            }
        }
    }
    // A snapshot or delta moves the host's inventory generation; a
    // heartbeat changes nothing a workload summary reads.
    tx.execute(
        "UPDATE host SET acked_seq = ?2, last_seen_ms = ?3, inventory_gen = inventory_gen + ?4 WHERE id = ?1",
        params![
            host,
            msg.seq as i64,
            now_ms,
            !matches!(msg.body, Some(Body::Heartbeat(_))) as i64
        ],
    )?;
    tx.commit()?;
    Ok(())
}
