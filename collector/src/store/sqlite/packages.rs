//! Package rows and the evidence that places them on processes and in
//! SBOMs. Reads only, on the connection the caller holds.

use std::collections::HashMap;

use patchgap_proto::{Message, v1};
use rusqlite::{Connection, OptionalExtension, params};

use super::fleet::start_in;
use crate::store::{
    EvidencePage, PackageName, PageLimit, ProcessCursor, Result,
    evidence::{Candidate, Declared, SELECTIVE_MAX, SetArtifact, process_evidence, selective_page},
    pep503,
};

/// A package and its distro identity; [`package_row`] reads the columns.
pub(super) const PACKAGE_COLUMNS: &str =
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

pub(super) fn package_row(r: &rusqlite::Row) -> rusqlite::Result<(i64, v1::Package)> {
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

pub(super) use crate::store::evidence::evidence_name;

/// One page of evidence (see `Store::evidence_page`). The packages'
/// artifacts are found by package and grouped by the sets that hold them,
/// and their SBOM declarations by the workload instances that run the
/// image. Without a window, when at most [`SELECTIVE_MAX`] running
/// processes have those sets or workloads, they are read through the
/// indexes on set and workload and paged in memory (`evidence::selective_page`):
/// a page costs the answer, not the fleet. Otherwise each host's processes
/// are walked in pid order from the cursor (on an index), and a process is
/// kept when its set (or, with a window, a set it had in the window) or
/// its workload has some. So a page costs its processes and at most
/// `limit.scan` index steps, never a sort of the fleet.
pub(super) fn evidence_page(
    conn: &Connection,
    package_ids: &[i64],
    window: Option<(i64, i64)>,
    after: Option<&ProcessCursor>,
    limit: PageLimit,
) -> Result<EvidencePage> {
    let mut by_set: HashMap<i64, Vec<SetArtifact>> = HashMap::new();
    let mut declared: HashMap<(i64, String), Vec<Declared>> = HashMap::new();
    {
        let mut arts = conn.prepare_cached(
            "SELECT m.set_id, a.kind, a.path, a.stale, a.deleted, a.dev, a.inode
             FROM artifact a JOIN artifact_set_member m ON m.artifact_id = a.id
             WHERE a.package_id = ?1",
        )?;
        let mut decls = conn.prepare_cached(
            "SELECT w.host, w.id, s.image, sc.ref, sc.chain
             FROM sbom_component sc
             JOIN sbom s ON s.id = sc.sbom_id
             JOIN workload w ON w.image_digest = s.image OR w.image_id = s.image
             WHERE sc.package_id = ?1",
        )?;
        for (pos, &package_id) in package_ids.iter().enumerate() {
            let mut rows = arts.query([package_id])?;
            while let Some(r) = rows.next()? {
                by_set.entry(r.get(0)?).or_default().push((
                    pos,
                    package_id,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ));
            }
            let mut rows = decls.query([package_id])?;
            while let Some(r) = rows.next()? {
                declared.entry((r.get(0)?, r.get(1)?)).or_default().push((
                    pos,
                    package_id,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ));
            }
        }
    }
    if by_set.is_empty() && declared.is_empty() {
        return Ok(EvidencePage::default());
    }
    for arts in by_set.values_mut() {
        arts.sort_by(|a, b| (a.0, a.2, &a.3).cmp(&(b.0, b.2, &b.3)));
    }
    for decls in declared.values_mut() {
        decls.sort();
    }
    if window.is_none()
        && let Some(candidates) = selective_candidates(conn, &by_set, &declared)?
    {
        return Ok(selective_page(candidates, &by_set, &declared, after, limit));
    }
    // "Now" walks the running processes and their current sets; a window
    // walks every process and the sets its history intervals had in the
    // window, so exited processes and sets a process had earlier count.
    let mut walk = conn.prepare_cached(match window {
        None => {
            "SELECT p.id, p.pid, p.set_id, p.workload, p.start_time_ms, p.exit_time_ms
             FROM process p INDEXED BY process_running_by_host_pid
             WHERE p.host = ?1 AND p.exit_time_ms IS NULL AND (p.pid, p.id) > (?2, ?3)
             ORDER BY p.pid, p.id"
        }
        Some(_) => {
            "SELECT p.id, p.pid, p.set_id, p.workload, p.start_time_ms, p.exit_time_ms
             FROM process p INDEXED BY process_by_host_pid
             WHERE p.host = ?1 AND (p.pid, p.id) > (?2, ?3)
             ORDER BY p.pid, p.id"
        }
    })?;
    let mut history = conn.prepare_cached(
        "SELECT DISTINCT set_id FROM process_set_history
         WHERE process_id = ?1 AND from_ms <= ?3 AND (until_ms IS NULL OR until_ms >= ?2)",
    )?;
    let mut holder = conn.prepare_cached(&format!(
        "SELECT {HOLDER_COLUMNS} FROM process p JOIN host h ON h.id = p.host WHERE p.id = ?1"
    ))?;
    let mut page = EvidencePage::default();
    let mut scanned = 0usize;
    for (host, hostname, _) in super::fleet::hosts_from(conn, None, after)? {
        let (pid, id) = start_in(host, after);
        let mut rows = walk.query(params![host, pid, id])?;
        while let Some(r) = rows.next()? {
            let cursor = ProcessCursor {
                hostname: hostname.clone(),
                host,
                pid: r.get(1)?,
                id: r.get(0)?,
            };
            scanned += 1;
            let set: i64 = r.get(2)?;
            let workload: String = r.get(3)?;
            let mut sets = Vec::new();
            match window {
                None => sets.push(set),
                Some((since, until)) if !by_set.is_empty() => {
                    let found = history
                        .query_map(params![cursor.id, since, until], |r| r.get::<_, i64>(0))?;
                    for s in found {
                        sets.push(s?);
                    }
                    sets.sort_unstable();
                }
                Some(_) => {}
            }
            let lived = match window {
                None => true,
                Some((since, until)) => {
                    let start: i64 = r.get(4)?;
                    let exit: Option<i64> = r.get(5)?;
                    start <= until && exit.is_none_or(|e| e >= since)
                }
            };
            let decls = if lived {
                declared.get(&(host, workload))
            } else {
                None
            };
            let arts: Vec<&SetArtifact> = sets
                .iter()
                .filter_map(|s| by_set.get(s))
                .flatten()
                .collect();
            if !arts.is_empty() || decls.is_some() {
                let who = std::sync::Arc::new(holder.query_row([cursor.id], |r| holder_at(r, 0))?);
                let evidence = process_evidence(cursor.id, &who, arts, decls);
                page.processes.push((cursor.clone(), evidence));
            }
            if page.processes.len() >= limit.items || scanned >= limit.scan {
                page.next = Some(cursor);
                return Ok(page);
            }
        }
    }
    Ok(page)
}

/// The side of a match a process row gives, after the columns a query
/// puts first (`at`): hostname, host id, workload, pid, start ticks, start
/// and exit time, exe, cmdline, uid and privilege.
const HOLDER_COLUMNS: &str = "h.hostname, h.host_id, p.workload, p.pid, p.start_ticks,
     p.start_time_ms, p.exe, p.cmdline, p.uid, p.privilege, p.exit_time_ms";

fn holder_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<v1::Match> {
    Ok(v1::Match {
        host: r.get(at)?,
        host_id: r.get(at + 1)?,
        workload: r.get(at + 2)?,
        key: Some(v1::ProcessKey {
            pid: r.get(at + 3)?,
            start_ticks: r.get::<_, i64>(at + 4)? as u64,
        }),
        process_start_ms: r.get(at + 5)?,
        exe: r.get(at + 6)?,
        cmdline: r.get(at + 7)?,
        uid: r.get(at + 8)?,
        privilege: v1::Privilege::decode(r.get::<_, Vec<u8>>(at + 9)?.as_slice()).ok(),
        exit_time_ms: r.get::<_, Option<i64>>(at + 10)?.unwrap_or(0),
        ..Default::default()
    })
}

/// The running processes whose set holds one of the packages' artifacts
/// or whose workload declares one, when there are at most
/// [`SELECTIVE_MAX`]; None when there are more (counted on the indexes
/// first, stopping one past the bound).
fn selective_candidates(
    conn: &Connection,
    by_set: &HashMap<i64, Vec<SetArtifact>>,
    declared: &HashMap<(i64, String), Vec<Declared>>,
) -> Result<Option<Vec<Candidate>>> {
    if by_set.len() + declared.len() > SELECTIVE_MAX {
        return Ok(None);
    }
    let mut count_set = conn.prepare_cached(
        "SELECT count(*) FROM (SELECT 1 FROM process INDEXED BY process_running_by_set
         WHERE set_id = ?1 AND exit_time_ms IS NULL LIMIT ?2)",
    )?;
    let mut count_workload = conn.prepare_cached(
        "SELECT count(*) FROM (SELECT 1 FROM process INDEXED BY process_by_workload
         WHERE host = ?1 AND workload = ?2 AND exit_time_ms IS NULL LIMIT ?3)",
    )?;
    let mut total = 0usize;
    for set in by_set.keys() {
        let left = (SELECTIVE_MAX + 1 - total) as i64;
        total += count_set.query_row(params![set, left], |r| r.get::<_, i64>(0))? as usize;
        if total > SELECTIVE_MAX {
            return Ok(None);
        }
    }
    for (host, workload) in declared.keys() {
        let left = (SELECTIVE_MAX + 1 - total) as i64;
        total += count_workload.query_row(params![host, workload, left], |r| r.get::<_, i64>(0))?
            as usize;
        if total > SELECTIVE_MAX {
            return Ok(None);
        }
    }
    let mut of_set = conn.prepare_cached(&format!(
        "SELECT p.id, p.pid, p.host, p.set_id, {HOLDER_COLUMNS}
         FROM process p INDEXED BY process_running_by_set JOIN host h ON h.id = p.host
         WHERE p.set_id = ?1 AND p.exit_time_ms IS NULL"
    ))?;
    let mut of_workload = conn.prepare_cached(&format!(
        "SELECT p.id, p.pid, p.host, p.set_id, {HOLDER_COLUMNS}
         FROM process p INDEXED BY process_by_workload JOIN host h ON h.id = p.host
         WHERE p.host = ?1 AND p.workload = ?2 AND p.exit_time_ms IS NULL"
    ))?;
    let candidate = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Candidate> {
        let holder = holder_at(r, 4)?;
        Ok(Candidate {
            cursor: ProcessCursor {
                hostname: holder.host.clone(),
                host: r.get(2)?,
                pid: r.get(1)?,
                id: r.get(0)?,
            },
            set: r.get(3)?,
            workload: holder.workload.clone(),
            holder: std::sync::Arc::new(holder),
        })
    };
    let mut out = Vec::with_capacity(total);
    for set in by_set.keys() {
        for c in of_set.query_map([set], candidate)? {
            out.push(c?);
        }
    }
    for (host, workload) in declared.keys() {
        for c in of_workload.query_map(params![host, workload], candidate)? {
            out.push(c?);
        }
    }
    Ok(Some(out))
}

/// Package rows by id.
pub(super) fn packages_by_id(conn: &Connection, ids: &[i64]) -> Result<Vec<(i64, v1::Package)>> {
    let mut stmt = conn.prepare_cached(&format!("{PACKAGE_COLUMNS} WHERE p.id = ?1"))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = stmt.query_row([id], package_row).optional()? {
            out.push(row);
        }
    }
    Ok(out)
}

pub(super) fn packages_named(
    conn: &Connection,
    q: &PackageName<'_>,
) -> Result<Vec<(i64, v1::Package)>> {
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
