//! The fleet as it is listed: hosts, workloads, outbound connections and
//! running processes. Reads only, on the client the caller holds.

use std::collections::HashMap;

use patchgap_proto::{Message, v1};
use postgres::GenericClient;

use crate::store::{HostRow, ProcessCursor, Result, WorkloadRow};

/// Every host; with `count_running`, each one's running processes
/// counted (else `processes_running` is 0: coverage does not need it, and
/// counting reads every running process of the fleet).
pub(super) fn hosts(c: &mut impl GenericClient, count_running: bool) -> Result<Vec<HostRow>> {
    let rows = c.query(
        if count_running {
            "SELECT h.host_id, h.hostname, h.boot_id, h.kernel, h.labels, h.agent_version, h.capabilities,
             h.last_seen_ms, h.last_full_scan_ms, h.last_scan,
             (SELECT count(*) FROM process p WHERE p.host = h.id AND p.exit_time_ms IS NULL), h.sense,
             h.health
             FROM host h ORDER BY h.hostname, h.host_id"
        } else {
            "SELECT h.host_id, h.hostname, h.boot_id, h.kernel, h.labels, h.agent_version, h.capabilities,
             h.last_seen_ms, h.last_full_scan_ms, h.last_scan, 0::BIGINT, h.sense, h.health
             FROM host h ORDER BY h.hostname, h.host_id"
        },
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let labels: String = r.get(4);
            HostRow {
                identity: v1::HostIdentity {
                    host_id: r.get(0),
                    hostname: r.get(1),
                    boot_id: r.get(2),
                    kernel: r.get(3),
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                },
                agent_version: r.get(5),
                capabilities: v1::Capabilities::decode(r.get::<_, &[u8]>(6)).unwrap_or_default(),
                last_seen_ms: r.get(7),
                last_full_scan_ms: r.get(8),
                last_scan: v1::ScanStats::decode(r.get::<_, &[u8]>(9)).unwrap_or_default(),
                processes_running: r.get::<_, i64>(10) as u32,
                sense: v1::SenseStats::decode(r.get::<_, &[u8]>(11)).unwrap_or_default(),
                health: r
                    .get::<_, Option<&[u8]>>(12)
                    .map(|b| v1::AgentHealth::decode(b).unwrap_or_default()),
            }
        })
        .collect())
}

/// Workload instances with running processes, on every host (`hostnames`
/// None) or on the hosts of those names. Two statements whatever the
/// number of instances: the workload rows, and the running processes
/// grouped by (host, workload, privilege), which give each instance its
/// count and its distinct privileges; with names, both walk only those
/// hosts (`= ANY($1)`, the workload table's primary key,
/// `process_by_workload`).
pub(super) fn workloads(
    c: &mut impl GenericClient,
    hostnames: Option<&[String]>,
) -> Result<Vec<WorkloadRow>> {
    let rows = match hostnames {
        Some(names) => c.query(
            "SELECT w.host, h.hostname, h.host_id, h.labels, w.data
             FROM workload w JOIN host h ON h.id = w.host
             WHERE w.host = ANY(ARRAY(SELECT id FROM host WHERE hostname = ANY($1)))
             ORDER BY h.hostname, w.id, w.host",
            &[&names],
        )?,
        None => c.query(
            "SELECT w.host, h.hostname, h.host_id, h.labels, w.data
             FROM workload w JOIN host h ON h.id = w.host
             ORDER BY h.hostname, w.id, w.host",
            &[],
        )?,
    };
    let mut rows: Vec<(i64, WorkloadRow)> = rows
        .iter()
        .map(|r| {
            let labels: String = r.get(3);
            (
                r.get(0),
                WorkloadRow {
                    host: r.get(1),
                    host_id: r.get(2),
                    host_labels: serde_json::from_str(&labels).unwrap_or_default(),
                    workload: v1::Workload::decode(r.get::<_, &[u8]>(4)).unwrap_or_default(),
                    processes: 0,
                    privileges: Vec::new(),
                },
            )
        })
        .collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let groups = match hostnames {
        Some(names) => c.query(
            "SELECT p.host, p.workload, p.privilege, count(*) FROM process p
             WHERE p.host = ANY(ARRAY(SELECT id FROM host WHERE hostname = ANY($1)))
               AND p.exit_time_ms IS NULL
             GROUP BY p.host, p.workload, p.privilege ORDER BY p.privilege",
            &[&names],
        )?,
        None => c.query(
            "SELECT p.host, p.workload, p.privilege, count(*) FROM process p
             WHERE p.exit_time_ms IS NULL
             GROUP BY p.host, p.workload, p.privilege ORDER BY p.privilege",
            &[],
        )?,
    };
    let mut running: HashMap<(i64, String), (u32, Vec<v1::Privilege>)> = HashMap::new();
    for g in &groups {
        let e = running.entry((g.get(0), g.get(1))).or_default();
        e.0 += g.get::<_, i64>(3) as u32;
        e.1.push(v1::Privilege::decode(g.get::<_, &[u8]>(2)).unwrap_or_default());
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

pub(super) fn inventory_gens(
    c: &mut impl GenericClient,
    hostnames: Option<&[String]>,
) -> Result<Vec<(String, i64, i64)>> {
    let rows = match hostnames {
        Some(names) => c.query(
            "SELECT hostname, id, inventory_gen FROM host WHERE hostname = ANY($1)
             ORDER BY hostname, id",
            &[&names],
        )?,
        None => c.query(
            "SELECT hostname, id, inventory_gen FROM host ORDER BY hostname, id",
            &[],
        )?,
    };
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

pub(super) fn connections(
    c: &mut impl GenericClient,
    host: Option<&str>,
    since_ms: i64,
) -> Result<Vec<v1::ConnectionSummary>> {
    let rows = c.query(
        "SELECT h.hostname, p.workload, p.pid, p.start_ticks, p.exe, c.protocol, c.remote_addr, c.remote_port,
                c.first_seen_ms, c.last_seen_ms, c.count, c.last_result, p.exit_time_ms, p.net_ns, p.net_ns_name
         FROM connection c JOIN process p ON p.id = c.process_id JOIN host h ON h.id = p.host
         WHERE c.last_seen_ms >= $2 AND ($1::TEXT IS NULL OR h.hostname = $1 OR h.host_id = $1)
         ORDER BY h.hostname, c.first_seen_ms, p.pid",
        &[&host, &since_ms],
    )?;
    Ok(rows
        .iter()
        .map(|r| v1::ConnectionSummary {
            host: r.get(0),
            workload: r.get(1),
            key: Some(v1::ProcessKey {
                pid: r.get::<_, i64>(2) as u32,
                start_ticks: r.get::<_, i64>(3) as u64,
            }),
            exe: r.get(4),
            protocol: r.get(5),
            remote_addr: r.get(6),
            remote_port: r.get::<_, i64>(7) as u32,
            first_seen_ms: r.get(8),
            last_seen_ms: r.get(9),
            count: r.get::<_, i64>(10) as u64,
            last_result: r.get::<_, i64>(11) as i32,
            exit_time_ms: r.get::<_, Option<i64>>(12).unwrap_or(0),
            net_ns: r.get::<_, i64>(13) as u64,
            net_ns_name: r.get(14),
        })
        .collect())
}

/// Sockets listed per process in a process summary (a busy server has
/// thousands; `sockets_total` counts them all).
const PS_SOCKETS_LIMIT: i64 = 256;

/// The hosts a page walks, from the cursor's on, in (host name, id)
/// order: (id, host name, last scan), optionally only the one named
/// (hostname or host id).
pub(super) fn hosts_from(
    c: &mut impl GenericClient,
    host: Option<&str>,
    after: Option<&ProcessCursor>,
) -> Result<Vec<(i64, String, Vec<u8>)>> {
    let (name, id) = match after {
        Some(c) => (c.hostname.as_str(), c.host),
        None => ("", i64::MIN),
    };
    let rows = c.query(
        "SELECT id, hostname, last_scan FROM host
         WHERE ($1::TEXT IS NULL OR hostname = $1 OR host_id = $1) AND (hostname, id) >= ($2, $3)
         ORDER BY hostname, id",
        &[&host, &name, &id],
    )?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
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

fn set_facts(c: &mut impl GenericClient, set: i64) -> Result<SetFacts> {
    let size: i64 = c
        .query_one("SELECT size FROM artifact_set WHERE id = $1", &[&set])?
        .get(0);
    let row = c.query_one(
        "SELECT count(DISTINCT CASE WHEN a.package_id != 0 THEN a.package_id END),
                count(*) FILTER (WHERE a.stale)
         FROM artifact_set_member m JOIN artifact a ON a.id = m.artifact_id
         WHERE m.set_id = $1",
        &[&set],
    )?;
    let (packages, stale): (i64, i64) = (row.get(0), row.get(1));
    // Anonymous code is rare; its artifacts are listed with their content.
    let anonymous = c
        .query(
            "SELECT a.path, a.dev, a.inode, a.deleted, a.stale, a.size, a.sha256, a.unhashed
             FROM artifact_set_member m JOIN artifact a ON a.id = m.artifact_id
             WHERE m.set_id = $1 AND a.kind = 6 ORDER BY a.path",
            &[&set],
        )?
        .iter()
        .map(|r| v1::Artifact {
            path: r.get(0),
            dev: r.get::<_, i64>(1) as u64,
            inode: r.get::<_, i64>(2) as u64,
            kind: v1::ArtifactKind::Anonymous as i32,
            deleted: r.get(3),
            stale: r.get(4),
            package: None,
            content: Some(v1::Content {
                size: r.get::<_, i64>(5) as u64,
                sha256: r.get(6),
                unhashed: r.get(7),
            }),
        })
        .collect();
    Ok((size as u32, packages as u32, stale as u32, anonymous))
}

/// One page of running processes in cursor order (see
/// `Store::processes_page`): each host's processes are walked in pid
/// order from the cursor on an index, and each distinct artifact set of
/// the page is summarised once.
pub(super) fn processes_page(
    c: &mut impl GenericClient,
    host: Option<&str>,
    after: Option<&ProcessCursor>,
    limit: usize,
) -> Result<Vec<(ProcessCursor, v1::ProcessSummary)>> {
    let stmt = c.prepare(
        "SELECT p.id, p.pid, p.workload, p.start_ticks, p.ppid, p.uid, p.exe, p.cmdline, p.start_time_ms,
                p.set_id, p.net_ns, p.net_ns_name, p.privilege,
                (SELECT count(*) FROM socket k WHERE k.process_id = p.id AND k.outbound),
                (SELECT count(*) FROM socket k WHERE k.process_id = p.id)
         FROM process p
         WHERE p.host = $1 AND p.exit_time_ms IS NULL AND (p.pid, p.id) > ($2, $3)
         ORDER BY p.pid, p.id LIMIT $4",
    )?;
    let mut out: Vec<(ProcessCursor, i64, v1::ProcessSummary)> = Vec::new();
    for (host_row, hostname, last_scan) in hosts_from(c, host, after)? {
        if out.len() >= limit {
            break;
        }
        let (pid, id) = start_in(host_row, after);
        let sockets_read_ms = v1::ScanStats::decode(last_scan.as_slice())
            .unwrap_or_default()
            .sockets_read_ms;
        let room = i64::try_from(limit - out.len()).unwrap_or(i64::MAX);
        for r in c.query(&stmt, &[&host_row, &pid, &id, &room])? {
            let key = v1::ProcessKey {
                pid: r.get::<_, i64>(1) as u32,
                start_ticks: r.get::<_, i64>(3) as u64,
            };
            let summary = v1::ProcessSummary {
                host: hostname.clone(),
                workload: r.get(2),
                key: Some(key),
                ppid: r.get::<_, i64>(4) as u32,
                uid: r.get::<_, i64>(5) as u32,
                exe: r.get(6),
                cmdline: r.get(7),
                start_time_ms: r.get(8),
                net_ns: r.get::<_, i64>(10) as u64,
                net_ns_name: r.get(11),
                host_net_ns: v1::Privilege::decode(r.get::<_, &[u8]>(12))
                    .unwrap_or_default()
                    .host_net_ns,
                outbound_sockets: r.get::<_, i64>(13) as u32,
                sockets_total: r.get::<_, i64>(14) as u32,
                sockets_read_ms,
                ..Default::default()
            };
            let cursor = ProcessCursor {
                hostname: hostname.clone(),
                host: host_row,
                pid: key.pid,
                id: r.get(0),
            };
            out.push((cursor, r.get(9), summary));
        }
    }
    let mut sets: HashMap<i64, SetFacts> = HashMap::new();
    let sockets = c.prepare(
        "SELECT protocol, local_addr, local_port, remote_addr, remote_port, state, inode, outbound, connect_ms
         FROM socket WHERE process_id = $1
         ORDER BY connect_ms DESC, outbound DESC, inode, remote_addr, remote_port LIMIT $2",
    )?;
    let mut page = Vec::with_capacity(out.len());
    for (cursor, set, mut p) in out {
        if let std::collections::hash_map::Entry::Vacant(e) = sets.entry(set) {
            e.insert(set_facts(c, set)?);
        }
        let (artifacts, packages, stale, anonymous) = &sets[&set];
        p.artifacts = *artifacts;
        p.packages = *packages;
        p.stale_artifacts = *stale;
        p.anonymous_code = anonymous.clone();
        p.sockets = c
            .query(&sockets, &[&cursor.id, &PS_SOCKETS_LIMIT])?
            .iter()
            .map(|r| v1::Socket {
                protocol: r.get(0),
                local_addr: r.get(1),
                local_port: r.get::<_, i64>(2) as u32,
                remote_addr: r.get(3),
                remote_port: r.get::<_, i64>(4) as u32,
                state: r.get(5),
                inode: r.get::<_, i64>(6) as u64,
                outbound: r.get(7),
                connect_ms: r.get(8),
            })
            .collect();
        page.push((cursor, p));
    }
    Ok(page)
}

/// The earliest stored start of any process of `instance` on `host` (by
/// hostname or host id), exited ones included.
pub(super) fn instance_first_start(
    c: &mut impl GenericClient,
    host: &str,
    instance: &str,
) -> Result<Option<i64>> {
    let row = c.query_one(
        "SELECT min(p.start_time_ms) FROM process p JOIN host h ON h.id = p.host
         WHERE (h.hostname = $1 OR h.host_id = $1) AND p.workload = $2",
        &[&host, &instance],
    )?;
    Ok(row.get::<_, Option<i64>>(0))
}

/// The stored name of the host keyed `host_key` (the unique `host_id`).
pub(super) fn hostname_of_key(
    c: &mut impl GenericClient,
    host_key: &str,
) -> Result<Option<String>> {
    Ok(
        c.query_opt("SELECT hostname FROM host WHERE host_id = $1", &[&host_key])?
            .map(|r| r.get(0)),
    )
}
