//! The fleet as it is listed: hosts, workloads, outbound connections and
//! running processes. Reads only, on the connection the caller holds.

use std::collections::HashMap;

use patchgap_proto::{Message, v1};
use rusqlite::{Connection, params};

use crate::store::{HostRow, Result, WorkloadRow};

pub(super) fn hosts(conn: &Connection) -> Result<Vec<HostRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT h.host_id, h.hostname, h.boot_id, h.kernel, h.labels, h.agent_version, h.capabilities,
         h.last_seen_ms, h.last_full_scan_ms, h.last_scan,
         (SELECT count(*) FROM process p WHERE p.host = h.id AND p.exit_time_ms IS NULL), h.sense,
         h.health
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
            sense: v1::SenseStats::decode(r.get::<_, Vec<u8>>(11)?.as_slice()).unwrap_or_default(),
            health: r
                .get::<_, Option<Vec<u8>>>(12)?
                .map(|b| v1::AgentHealth::decode(b.as_slice()).unwrap_or_default()),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn workloads(conn: &Connection) -> Result<Vec<WorkloadRow>> {
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
        let blobs = stmt.query_map(params![*host, row.workload.id], |r| r.get::<_, Vec<u8>>(0))?;
        for blob in blobs {
            row.privileges
                .push(v1::Privilege::decode(blob?.as_slice()).unwrap_or_default());
        }
    }
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

pub(super) fn processes(conn: &Connection, host: Option<&str>) -> Result<Vec<v1::ProcessSummary>> {
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
