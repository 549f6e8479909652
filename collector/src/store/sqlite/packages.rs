//! Package rows and the evidence that places them on processes and in
//! SBOMs. Reads only, on the connection the caller holds.

use patchgap_proto::{Message, v1};
use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{Evidence, PackageName, Result, pep503};

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

/// The evidence rows for `Store::evidence`: artifacts (of running
/// processes' current sets, or with a window of every set in the window's
/// history), then SBOM declarations through the workloads running an
/// image.
pub(super) fn evidence(
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
