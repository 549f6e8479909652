//! The fleet as it is listed: hosts, workloads, outbound connections and
//! running processes. Reads only, on the connection the caller holds.

use std::collections::HashMap;

use patchgap_proto::{Message, v1};
use rusqlite::{Connection, OptionalExtension, params, types::Type};

use crate::store::{HostRow, ProcessCursor, Result, WorkloadRow};

/// Every host; with `count_running`, each one's running processes
/// counted (else `processes_running` is 0: coverage does not need it, and
/// counting reads every running process of the fleet).
pub(super) fn hosts(conn: &Connection, count_running: bool) -> Result<Vec<HostRow>> {
    let mut stmt = conn.prepare_cached(if count_running {
        "SELECT h.host_id, h.hostname, h.boot_id, h.kernel, h.labels, h.agent_version, h.capabilities,
         h.last_seen_ms, h.last_full_scan_ms, h.last_scan,
         (SELECT count(*) FROM process p WHERE p.host = h.id AND p.exit_time_ms IS NULL), h.sense,
         h.health
         FROM host h ORDER BY h.hostname, h.host_id"
    } else {
        "SELECT h.host_id, h.hostname, h.boot_id, h.kernel, h.labels, h.agent_version, h.capabilities,
         h.last_seen_ms, h.last_full_scan_ms, h.last_scan, 0, h.sense, h.health
         FROM host h ORDER BY h.hostname, h.host_id"
    })?;
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
            sense: v1::SenseStats::decode(r.get::<_, Vec<u8>>(11)?.as_slice()).unwrap_or_default(),
            health: r
                .get::<_, Option<Vec<u8>>>(12)?
                .map(|b| v1::AgentHealth::decode(b.as_slice()).unwrap_or_default()),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Workload instances with running processes, on every host (`hostnames`
/// None) or on the hosts of those names. Two statements: the workload
/// rows, and the running processes grouped by (host, workload,
/// privilege), which give each instance its count and its distinct
/// privileges; with names, both walk only those hosts (the workload
/// table's primary key, `process_by_workload`).
pub(super) fn inventory_gens(
    conn: &Connection,
    hostnames: Option<&[String]>,
) -> Result<Vec<(String, i64, i64)>> {
    let names = hostnames.map(|h| serde_json::Value::from(h.to_vec()).to_string());
    let mut stmt = conn.prepare_cached(
        "SELECT hostname, id, inventory_gen FROM host
         WHERE ?1 IS NULL OR hostname IN (SELECT value FROM json_each(?1))
         ORDER BY hostname, id",
    )?;
    let rows = stmt.query_map(params![names], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn workloads(
    conn: &Connection,
    hostnames: Option<&[String]>,
) -> Result<Vec<WorkloadRow>> {
    let names = hostnames.map(|h| serde_json::Value::from(h.to_vec()).to_string());
    let mut rows: Vec<(i64, WorkloadRow)> = {
        let mut stmt = conn.prepare_cached(if names.is_some() {
            // CROSS JOIN keeps this order: the named hosts first, then
            // their workloads by primary key (never a scan of the table).
            "SELECT w.host, h.hostname, h.host_id, h.labels, w.data
             FROM host h CROSS JOIN workload w ON w.host = h.id
             WHERE h.hostname IN (SELECT value FROM json_each(?1))
             ORDER BY h.hostname, w.id, w.host"
        } else {
            "SELECT w.host, h.hostname, h.host_id, h.labels, w.data
             FROM workload w JOIN host h ON h.id = w.host
             WHERE ?1 IS NULL
             ORDER BY h.hostname, w.id, w.host"
        })?;
        let rows = stmt.query_map(params![names], |r| {
            let labels: String = r.get(3)?;
            let data: Vec<u8> = r.get(4)?;
            Ok((
                r.get::<_, i64>(0)?,
                WorkloadRow {
                    host: r.get(1)?,
                    host_id: r.get(2)?,
                    host_labels: serde_json::from_str(&labels).unwrap_or_default(),
                    workload: v1::Workload::decode(data.as_slice()).unwrap_or_default(),
                    processes: 0,
                    privileges: Vec::new(),
                },
            ))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    // (host, workload) -> running processes, their distinct privileges.
    // Counted here rather than by GROUP BY: SQLite would sort every
    // running process of the hosts by privilege (a million rows, spilled
    // to temporary files, for a host that runs a million), where the
    // distinct values are few.
    let mut running: HashMap<(i64, String), (u32, Vec<v1::Privilege>)> = HashMap::new();
    {
        let mut stmt = conn.prepare_cached(if names.is_some() {
            "SELECT p.host, p.workload, p.privilege FROM process p
             WHERE p.host IN (SELECT id FROM host WHERE hostname IN (SELECT value FROM json_each(?1)))
               AND p.exit_time_ms IS NULL"
        } else {
            "SELECT p.host, p.workload, p.privilege FROM process p
             WHERE ?1 IS NULL AND p.exit_time_ms IS NULL"
        })?;
        // host -> workload -> privilege bytes -> processes.
        let mut counts: HashMap<i64, HashMap<String, HashMap<Vec<u8>, u32>>> = HashMap::new();
        let mut found = stmt.query(params![names])?;
        while let Some(r) = found.next()? {
            let wrong =
                |at: usize, t, e| rusqlite::Error::FromSqlConversionFailure(at, t, Box::new(e));
            let workload = r
                .get_ref(1)?
                .as_str()
                .map_err(|e| wrong(1, Type::Text, e))?;
            let privilege = r
                .get_ref(2)?
                .as_blob()
                .map_err(|e| wrong(2, Type::Blob, e))?;
            let by_workload = counts.entry(r.get(0)?).or_default();
            let by_privilege = match by_workload.get_mut(workload) {
                Some(p) => p,
                None => by_workload.entry(workload.to_string()).or_default(),
            };
            match by_privilege.get_mut(privilege) {
                Some(n) => *n += 1,
                None => {
                    by_privilege.insert(privilege.to_vec(), 1);
                }
            }
        }
        for (host, workloads) in counts {
            for (workload, privileges) in workloads {
                let mut privileges: Vec<(Vec<u8>, u32)> = privileges.into_iter().collect();
                // In the bytes' order, as the GROUP BY gave them.
                privileges.sort_unstable();
                let e = running.entry((host, workload)).or_default();
                for (bytes, n) in privileges {
                    e.0 += n;
                    e.1.push(v1::Privilege::decode(bytes.as_slice()).unwrap_or_default());
                }
            }
        }
    }
    rows.retain_mut(
        |(host, row)| match running.remove(&(*host, row.workload.id.clone())) {
            Some((n, privileges)) => {
                row.processes = n;
                row.privileges = privileges;
                true
            }
            None => false,
        },
    );
    Ok(rows.into_iter().map(|(_, w)| w).collect())
}

pub(super) fn connections(
    conn: &Connection,
    host: Option<&str>,
    since_ms: i64,
) -> Result<Vec<v1::ConnectionSummary>> {
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

/// Sockets listed per process in a process summary (a busy server has
/// thousands; `sockets_total` counts them all).
const PS_SOCKETS_LIMIT: i64 = 256;

/// The hosts a page walks, from the cursor's on, in (host name, id)
/// order: (id, host name, last scan), optionally only the one named
/// (hostname or host id).
pub(super) fn hosts_from(
    conn: &Connection,
    host: Option<&str>,
    after: Option<&ProcessCursor>,
) -> Result<Vec<(i64, String, Vec<u8>)>> {
    let (name, id) = match after {
        Some(c) => (c.hostname.as_str(), c.host),
        None => ("", i64::MIN),
    };
    let mut stmt = conn.prepare_cached(
        "SELECT id, hostname, last_scan FROM host
         WHERE (?1 IS NULL OR hostname = ?1 OR host_id = ?1) AND (hostname, id) >= (?2, ?3)
         ORDER BY hostname, id",
    )?;
    let rows = stmt.query_map(params![host, name, id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Where a host's walk starts: after the cursor's (pid, id) on the
/// cursor's host, from the first pid on any later host.
pub(super) fn start_in(host: i64, after: Option<&ProcessCursor>) -> (i64, i64) {
    match after {
        Some(c) if c.host == host => (i64::from(c.pid), c.id),
        _ => (-1, i64::MIN),
    }
}

/// What a process summary says of its artifact set: (artifacts, packages,
/// stale artifacts, anonymous code).
type SetFacts = (u32, u32, u32, Vec<v1::Artifact>);

fn set_facts(conn: &Connection, set: i64) -> Result<SetFacts> {
    let size: u32 = conn
        .prepare_cached("SELECT size FROM artifact_set WHERE id = ?1")?
        .query_row([set], |r| r.get(0))?;
    let (packages, stale): (u32, u32) = conn
        .prepare_cached(
            "SELECT count(DISTINCT CASE WHEN a.package_id != 0 THEN a.package_id END),
                    coalesce(sum(a.stale != 0), 0)
             FROM artifact_set_member m JOIN artifact a ON a.id = m.artifact_id
             WHERE m.set_id = ?1",
        )?
        .query_row([set], |r| Ok((r.get(0)?, r.get(1)?)))?;
    // Anonymous code is rare; its artifacts are listed with their content.
    let mut q = conn.prepare_cached(
        "SELECT a.path, a.dev, a.inode, a.deleted, a.stale, a.size, a.sha256, a.unhashed
         FROM artifact_set_member m JOIN artifact a ON a.id = m.artifact_id
         WHERE m.set_id = ?1 AND a.kind = 6 ORDER BY a.path",
    )?;
    let anonymous = q
        .query_map([set], |r| {
            Ok(v1::Artifact {
                path: r.get(0)?,
                dev: r.get::<_, i64>(1)? as u64,
                inode: r.get::<_, i64>(2)? as u64,
                kind: v1::ArtifactKind::Anonymous as i32,
                deleted: r.get(3)?,
                stale: r.get(4)?,
                package: None,
                content: Some(v1::Content {
                    size: r.get::<_, i64>(5)? as u64,
                    sha256: r.get(6)?,
                    unhashed: r.get(7)?,
                }),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok((size, packages, stale, anonymous))
}

/// One page of running processes in cursor order (see
/// `Store::processes_page`): each host's processes are walked in pid
/// order from the cursor on an index, and each distinct artifact set of
/// the page is summarised once.
pub(super) fn processes_page(
    conn: &Connection,
    host: Option<&str>,
    after: Option<&ProcessCursor>,
    limit: usize,
) -> Result<Vec<(ProcessCursor, v1::ProcessSummary)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.id, p.pid, p.workload, p.start_ticks, p.ppid, p.uid, p.exe, p.cmdline, p.start_time_ms,
                p.set_id, p.net_ns, p.net_ns_name, p.privilege,
                (SELECT count(*) FROM socket k WHERE k.process_id = p.id AND k.outbound),
                (SELECT count(*) FROM socket k WHERE k.process_id = p.id)
         FROM process p INDEXED BY process_running_by_host_pid
         WHERE p.host = ?1 AND p.exit_time_ms IS NULL AND (p.pid, p.id) > (?2, ?3)
         ORDER BY p.pid, p.id LIMIT ?4",
    )?;
    let mut out: Vec<(ProcessCursor, i64, v1::ProcessSummary)> = Vec::new();
    for (host_row, hostname, last_scan) in hosts_from(conn, host, after)? {
        if out.len() >= limit {
            break;
        }
        let (pid, id) = start_in(host_row, after);
        let sockets_read_ms = v1::ScanStats::decode(last_scan.as_slice())
            .unwrap_or_default()
            .sockets_read_ms;
        let room = i64::try_from(limit - out.len()).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![host_row, pid, id, room], |r| {
            let key = v1::ProcessKey {
                pid: r.get(1)?,
                start_ticks: r.get::<_, i64>(3)? as u64,
            };
            let summary = v1::ProcessSummary {
                host: hostname.clone(),
                workload: r.get(2)?,
                key: Some(key),
                ppid: r.get(4)?,
                uid: r.get(5)?,
                exe: r.get(6)?,
                cmdline: r.get(7)?,
                start_time_ms: r.get(8)?,
                net_ns: r.get::<_, i64>(10)? as u64,
                net_ns_name: r.get(11)?,
                host_net_ns: v1::Privilege::decode(r.get::<_, Vec<u8>>(12)?.as_slice())
                    .unwrap_or_default()
                    .host_net_ns,
                outbound_sockets: r.get(13)?,
                sockets_total: r.get(14)?,
                sockets_read_ms,
                ..Default::default()
            };
            let cursor = ProcessCursor {
                hostname: hostname.clone(),
                host: host_row,
                pid: key.pid,
                id: r.get(0)?,
            };
            Ok((cursor, r.get::<_, i64>(9)?, summary))
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    let mut sets: HashMap<i64, SetFacts> = HashMap::new();
    let mut sockets = conn.prepare_cached(
        "SELECT protocol, local_addr, local_port, remote_addr, remote_port, state, inode, outbound, connect_ms
         FROM socket WHERE process_id = ?1
         ORDER BY connect_ms DESC, outbound DESC, inode, remote_addr, remote_port LIMIT ?2",
    )?;
    let mut page = Vec::with_capacity(out.len());
    for (cursor, set, mut p) in out {
        if let std::collections::hash_map::Entry::Vacant(e) = sets.entry(set) {
            e.insert(set_facts(conn, set)?);
        }
        let (artifacts, packages, stale, anonymous) = &sets[&set];
        p.artifacts = *artifacts;
        p.packages = *packages;
        p.stale_artifacts = *stale;
        p.anonymous_code = anonymous.clone();
        let rows = sockets.query_map(params![cursor.id, PS_SOCKETS_LIMIT], |r| {
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
        page.push((cursor, p));
    }
    Ok(page)
}

/// The earliest start of any stored process of the instance on the host
/// (by hostname or host id), exited ones included.
pub(super) fn instance_first_start(
    conn: &Connection,
    host: &str,
    instance: &str,
) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT min(p.start_time_ms) FROM process p JOIN host h ON h.id = p.host
         WHERE (h.hostname = ?1 OR h.host_id = ?1) AND p.workload = ?2",
    )?;
    Ok(stmt.query_row(params![host, instance], |r| r.get::<_, Option<i64>>(0))?)
}

/// The stored name of the host keyed `host_key` (the unique `host_id`).
pub(super) fn hostname_of_key(conn: &Connection, host_key: &str) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached("SELECT hostname FROM host WHERE host_id = ?1")?;
    Ok(stmt
        .query_row(params![host_key], |r| r.get::<_, String>(0))
        .optional()?)
}
