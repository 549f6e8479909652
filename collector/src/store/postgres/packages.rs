//! Package rows and the evidence that places them on processes and in
//! SBOMs. Reads only, on the client the caller holds.

use std::collections::HashMap;

use patchgap_proto::{Message, v1};
use postgres::{GenericClient, Row};

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

fn split_cves(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

pub(super) fn package_row(r: &Row) -> (i64, v1::Package) {
    let distro = r.get::<_, Option<String>>(7).map(|ecosystem| {
        Box::new(v1::Package {
            ecosystem,
            name: r.get(8),
            source: r.get(9),
            version: r.get(10),
            arch: r.get(11),
            purl: r.get(12),
            distro: None,
            fixed_cves: split_cves(r.get(13)),
            replaced_by: String::new(),
        })
    });
    (
        r.get(0),
        v1::Package {
            ecosystem: r.get(1),
            name: r.get(2),
            source: r.get(3),
            version: r.get(4),
            arch: r.get(5),
            purl: r.get(6),
            distro,
            fixed_cves: Vec::new(),
            replaced_by: r.get(14),
        },
    )
}

pub(super) use crate::store::evidence::evidence_name;

/// Process rows read per round trip while a page walks a host.
const WALK_CHUNK: i64 = 512;

/// One page of evidence (see `Store::evidence_page`), as SQLite's: the
/// packages' artifacts are found by package and grouped by the sets that
/// hold them, and their SBOM declarations by the workload instances that
/// run the image. Without a window, when at most [`SELECTIVE_MAX`] running
/// processes have those sets or workloads, they are read in one query and
/// paged in memory (`evidence::selective_page`): a page costs the answer,
/// not the fleet, and no round trip per host or per match. Otherwise each
/// host's processes are walked in pid order from
/// the cursor, [`WALK_CHUNK`] rows at a time (on an index), and a process
/// is kept when its set (or, with a window, a set it had in the window) or
/// its workload has some. A page costs its processes and at most
/// `limit.scan` rows walked, never a sort of the fleet.
pub(super) fn evidence_page(
    c: &mut impl GenericClient,
    package_ids: &[i64],
    window: Option<(i64, i64)>,
    after: Option<&ProcessCursor>,
    limit: PageLimit,
) -> Result<EvidencePage> {
    let mut by_set: HashMap<i64, Vec<SetArtifact>> = HashMap::new();
    let mut declared: HashMap<(i64, String), Vec<Declared>> = HashMap::new();
    {
        let arts = c.prepare(
            "SELECT m.set_id, a.kind, a.path, a.stale, a.deleted, a.dev, a.inode
             FROM artifact a JOIN artifact_set_member m ON m.artifact_id = a.id
             WHERE a.package_id = $1",
        )?;
        let decls = c.prepare(
            "SELECT w.host, w.id, s.image, sc.ref, sc.chain
             FROM sbom_component sc
             JOIN sbom s ON s.id = sc.sbom_id
             JOIN workload w ON w.image_digest = s.image OR w.image_id = s.image
             WHERE sc.package_id = $1",
        )?;
        for (pos, &package_id) in package_ids.iter().enumerate() {
            for r in c.query(&arts, &[&package_id])? {
                by_set.entry(r.get(0)).or_default().push((
                    pos,
                    package_id,
                    r.get::<_, i64>(1) as i32,
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                ));
            }
            for r in c.query(&decls, &[&package_id])? {
                declared.entry((r.get(0), r.get(1))).or_default().push((
                    pos,
                    package_id,
                    r.get(2),
                    r.get(3),
                    r.get(4),
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
        && let Some(candidates) = selective_candidates(c, &by_set, &declared)?
    {
        return Ok(selective_page(candidates, &by_set, &declared, after, limit));
    }
    // "Now" walks the running processes and their current sets; a window
    // walks every process and the sets its history intervals had in the
    // window, so exited processes and sets a process had earlier count.
    let walk = c.prepare(match window {
        None => {
            "SELECT p.id, p.pid, p.set_id, p.workload, p.start_time_ms, p.exit_time_ms
             FROM process p
             WHERE p.host = $1 AND p.exit_time_ms IS NULL AND (p.pid, p.id) > ($2, $3)
             ORDER BY p.pid, p.id LIMIT $4"
        }
        Some(_) => {
            "SELECT p.id, p.pid, p.set_id, p.workload, p.start_time_ms, p.exit_time_ms
             FROM process p
             WHERE p.host = $1 AND (p.pid, p.id) > ($2, $3)
             ORDER BY p.pid, p.id LIMIT $4"
        }
    })?;
    let history = c.prepare(
        "SELECT DISTINCT set_id FROM process_set_history
         WHERE process_id = $1 AND from_ms <= $3 AND (until_ms IS NULL OR until_ms >= $2)",
    )?;
    let holder = c.prepare(&format!(
        "SELECT {HOLDER_COLUMNS} FROM process p JOIN host h ON h.id = p.host WHERE p.id = $1"
    ))?;
    let mut page = EvidencePage::default();
    let mut scanned = 0usize;
    for (host, hostname, _) in super::fleet::hosts_from(c, None, after)? {
        let (mut pid, mut id) = start_in(host, after);
        loop {
            let rows = c.query(&walk, &[&host, &pid, &id, &WALK_CHUNK])?;
            let Some(last) = rows.last() else { break };
            (pid, id) = (last.get(1), last.get(0));
            for r in &rows {
                let cursor = ProcessCursor {
                    hostname: hostname.clone(),
                    host,
                    pid: r.get::<_, i64>(1) as u32,
                    id: r.get(0),
                };
                scanned += 1;
                let set: i64 = r.get(2);
                let workload: String = r.get(3);
                let mut sets = Vec::new();
                match window {
                    None => sets.push(set),
                    Some((since, until)) if !by_set.is_empty() => {
                        for s in c.query(&history, &[&cursor.id, &since, &until])? {
                            sets.push(s.get::<_, i64>(0));
                        }
                        sets.sort_unstable();
                    }
                    Some(_) => {}
                }
                let lived = match window {
                    None => true,
                    Some((since, until)) => {
                        let start: i64 = r.get(4);
                        let exit: Option<i64> = r.get(5);
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
                    let who =
                        std::sync::Arc::new(holder_at(&c.query_one(&holder, &[&cursor.id])?, 0));
                    let evidence = process_evidence(cursor.id, &who, arts, decls);
                    page.processes.push((cursor.clone(), evidence));
                }
                if page.processes.len() >= limit.items || scanned >= limit.scan {
                    page.next = Some(cursor);
                    return Ok(page);
                }
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

fn holder_at(h: &Row, at: usize) -> v1::Match {
    v1::Match {
        host: h.get(at),
        host_id: h.get(at + 1),
        workload: h.get(at + 2),
        key: Some(v1::ProcessKey {
            pid: h.get::<_, i64>(at + 3) as u32,
            start_ticks: h.get::<_, i64>(at + 4) as u64,
        }),
        process_start_ms: h.get(at + 5),
        exe: h.get(at + 6),
        cmdline: h.get(at + 7),
        uid: h.get::<_, i64>(at + 8) as u32,
        privilege: v1::Privilege::decode(h.get::<_, &[u8]>(at + 9)).ok(),
        exit_time_ms: h.get::<_, Option<i64>>(at + 10).unwrap_or(0),
        ..Default::default()
    }
}

/// The running processes whose set holds one of the packages' artifacts
/// or whose workload declares one, with their side of a match, when there
/// are at most [`SELECTIVE_MAX`]; None when there are more. Two round
/// trips: a count that stops one past the bound, then the rows.
fn selective_candidates(
    c: &mut impl GenericClient,
    by_set: &HashMap<i64, Vec<SetArtifact>>,
    declared: &HashMap<(i64, String), Vec<Declared>>,
) -> Result<Option<Vec<Candidate>>> {
    if by_set.len() + declared.len() > SELECTIVE_MAX {
        return Ok(None);
    }
    let sets: Vec<i64> = by_set.keys().copied().collect();
    let (hosts, workloads): (Vec<i64>, Vec<String>) = declared.keys().cloned().unzip();
    let bound = SELECTIVE_MAX as i64 + 1;
    let count: i64 = c
        .query_one(
            "SELECT count(*) FROM (
                 SELECT p.id FROM process p
                 WHERE p.exit_time_ms IS NULL AND p.set_id = ANY($1)
                 UNION ALL
                 SELECT p.id FROM process p
                 JOIN unnest($2::BIGINT[], $3::TEXT[]) AS d(host, workload)
                   ON p.host = d.host AND p.workload = d.workload
                 WHERE p.exit_time_ms IS NULL
                 LIMIT $4) found",
            &[&sets, &hosts, &workloads, &bound],
        )?
        .get(0);
    if count >= bound {
        return Ok(None);
    }
    let rows = c.query(
        &format!(
            // The count's two index walks give the ids, and the rows are
            // read by primary key: an OR of the two in one WHERE, or an
            // IN join, is planned as a scan of every process.
            "SELECT p.id, p.pid, p.host, p.set_id, {HOLDER_COLUMNS}
             FROM process p JOIN host h ON h.id = p.host
             WHERE p.id = ANY(ARRAY(
                 SELECT p.id FROM process p
                 WHERE p.exit_time_ms IS NULL AND p.set_id = ANY($1)
                 UNION
                 SELECT p.id FROM process p
                 JOIN unnest($2::BIGINT[], $3::TEXT[]) AS d(host, workload)
                   ON p.host = d.host AND p.workload = d.workload
                 WHERE p.exit_time_ms IS NULL))"
        ),
        &[&sets, &hosts, &workloads],
    )?;
    Ok(Some(
        rows.iter()
            .map(|r| {
                let holder = holder_at(r, 4);
                Candidate {
                    cursor: ProcessCursor {
                        hostname: holder.host.clone(),
                        host: r.get(2),
                        pid: r.get::<_, i64>(1) as u32,
                        id: r.get(0),
                    },
                    set: r.get(3),
                    workload: holder.workload.clone(),
                    holder: std::sync::Arc::new(holder),
                }
            })
            .collect(),
    ))
}

/// Package rows by id.
pub(super) fn packages_by_id(
    c: &mut impl GenericClient,
    ids: &[i64],
) -> Result<Vec<(i64, v1::Package)>> {
    let stmt = c.prepare(&format!("{PACKAGE_COLUMNS} WHERE p.id = $1"))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = c.query_opt(&stmt, &[id])? {
            out.push(package_row(&row));
        }
    }
    Ok(out)
}

pub(super) fn packages_named(
    c: &mut impl GenericClient,
    q: &PackageName<'_>,
) -> Result<Vec<(i64, v1::Package)>> {
    let rows = c.query(
        &format!(
            "{PACKAGE_COLUMNS}
             WHERE p.key = $1 OR (p.key = $2 AND p.ecosystem = 'pypi') OR p.source = $3
             ORDER BY p.id"
        ),
        &[&q.name.to_lowercase(), &pep503(q.name), &q.name],
    )?;
    Ok(rows.iter().map(package_row).collect())
}
