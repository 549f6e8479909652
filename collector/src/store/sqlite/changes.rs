//! What packages a workload instance's processes had over time, for
//! "what changed on this workload since T" (`fleet::changes`): per
//! package, aggregated over `process_set_history`. The store says when
//! each package was held; what counts as a change is the domain's.

use patchgap_proto::{Message, v1};
use rusqlite::{Connection, OptionalExtension, params};

use super::packages::{PACKAGE_COLUMNS, evidence_name, package_row};
use crate::store::{PackageSpan, Result, WorkloadRow};

pub(super) fn workload_instances(
    conn: &Connection,
    seen_since_ms: i64,
    limit: usize,
) -> Result<Vec<WorkloadRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT h.hostname, h.host_id, h.labels, w.data
         FROM workload w JOIN host h ON h.id = w.host
         WHERE w.last_seen_ms >= ?1
         ORDER BY w.last_seen_ms DESC, h.hostname, w.id
         LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![seen_since_ms, limit.min(i64::MAX as usize) as i64],
        |r| {
            let labels: String = r.get(2)?;
            let data: Vec<u8> = r.get(3)?;
            Ok(WorkloadRow {
                host: r.get(0)?,
                host_id: r.get(1)?,
                host_labels: serde_json::from_str(&labels).unwrap_or_default(),
                workload: v1::Workload::decode(data.as_slice()).unwrap_or_default(),
                processes: 0,
                privileges: Vec::new(),
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn package_spans(
    conn: &Connection,
    host_id: &str,
    workload: &str,
    after_ms: i64,
    limit: usize,
) -> Result<Vec<PackageSpan>> {
    let Some(host) = conn
        .prepare_cached("SELECT id FROM host WHERE host_id = ?1")?
        .query_row([host_id], |r| r.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(Vec::new());
    };
    // The strongest evidence per package as `process_chain` ranks it:
    // exe, mapped, opened, then embedded and installed last.
    let mut stmt = conn.prepare_cached(
        "SELECT a.package_id,
                MIN(CASE a.kind WHEN 4 THEN 10 WHEN 5 THEN 9 ELSE a.kind END),
                MIN(h.from_ms),
                MAX(h.until_ms IS NULL),
                MAX(COALESCE(h.until_ms, 0)),
                COUNT(DISTINCT p.id)
         FROM process p
         JOIN process_set_history h ON h.process_id = p.id
         JOIN artifact_set_member m ON m.set_id = h.set_id
         JOIN artifact a ON a.id = m.artifact_id
         WHERE p.host = ?1 AND p.workload = ?2 AND a.package_id != 0
           AND (h.until_ms IS NULL OR h.until_ms >= ?3)
         GROUP BY a.package_id
         ORDER BY a.package_id
         LIMIT ?4",
    )?;
    let found: Vec<(i64, i32, i64, bool, i64, u32)> = stmt
        .query_map(
            params![
                host,
                workload,
                after_ms,
                limit.min(i64::MAX as usize) as i64
            ],
            |r| {
                let rank: i32 = r.get(1)?;
                Ok((
                    r.get(0)?,
                    match rank {
                        10 => 4,
                        9 => 5,
                        k => k,
                    },
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut package = conn.prepare_cached(&format!("{PACKAGE_COLUMNS} WHERE p.id = ?1"))?;
    let mut out = Vec::with_capacity(found.len());
    for (id, kind, first_ms, running, last_ms, processes) in found {
        let Some((_, p)) = package.query_row([id], package_row).optional()? else {
            continue;
        };
        out.push(PackageSpan {
            package: p,
            evidence: evidence_name(kind).to_string(),
            first_ms,
            last_ms: (!running).then_some(last_ms),
            processes,
        });
    }
    Ok(out)
}
