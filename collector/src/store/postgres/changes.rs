//! What packages a workload instance's processes had over time, for
//! "what changed on this workload since T" (`fleet::changes`), as
//! `sqlite/changes.rs` says it: per package, aggregated over
//! `process_set_history`.

use patchgap_proto::{Message, v1};
use postgres::GenericClient;

use super::packages::{PACKAGE_COLUMNS, evidence_name, package_row};
use crate::store::{PackageSpan, Result, WorkloadRow};

pub(super) fn workload_instances(
    c: &mut impl GenericClient,
    seen_since_ms: i64,
    limit: usize,
) -> Result<Vec<WorkloadRow>> {
    let rows = c.query(
        "SELECT h.hostname, h.host_id, h.labels, w.data
         FROM workload w JOIN host h ON h.id = w.host
         WHERE w.last_seen_ms >= $1
         ORDER BY w.last_seen_ms DESC, h.hostname, w.id
         LIMIT $2",
        &[&seen_since_ms, &(limit.min(i64::MAX as usize) as i64)],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let labels: String = r.get(2);
            let data: Vec<u8> = r.get(3);
            WorkloadRow {
                host: r.get(0),
                host_id: r.get(1),
                host_labels: serde_json::from_str(&labels).unwrap_or_default(),
                workload: v1::Workload::decode(data.as_slice()).unwrap_or_default(),
                processes: 0,
                privileges: Vec::new(),
            }
        })
        .collect())
}

pub(super) fn package_spans(
    c: &mut impl GenericClient,
    host_id: &str,
    workload: &str,
    after_ms: i64,
    limit: usize,
) -> Result<Vec<PackageSpan>> {
    let Some(host) = c
        .query_opt("SELECT id FROM host WHERE host_id = $1", &[&host_id])?
        .map(|r| r.get::<_, i64>(0))
    else {
        return Ok(Vec::new());
    };
    // The strongest evidence per package as `process_chain` ranks it:
    // exe, mapped, opened, then embedded and installed last.
    let found = c.query(
        "SELECT a.package_id,
                MIN(CASE a.kind WHEN 4 THEN 10 WHEN 5 THEN 9 ELSE a.kind END)::INT4,
                MIN(h.from_ms),
                BOOL_OR(h.until_ms IS NULL),
                MAX(COALESCE(h.until_ms, 0)),
                COUNT(DISTINCT p.id)
         FROM process p
         JOIN process_set_history h ON h.process_id = p.id
         JOIN artifact_set_member m ON m.set_id = h.set_id
         JOIN artifact a ON a.id = m.artifact_id
         WHERE p.host = $1 AND p.workload = $2 AND a.package_id != 0
           AND (h.until_ms IS NULL OR h.until_ms >= $3)
         GROUP BY a.package_id
         ORDER BY a.package_id
         LIMIT $4",
        &[
            &host,
            &workload,
            &after_ms,
            &(limit.min(i64::MAX as usize) as i64),
        ],
    )?;
    let package = c.prepare(&format!("{PACKAGE_COLUMNS} WHERE p.id = $1"))?;
    let mut out = Vec::with_capacity(found.len());
    for r in &found {
        let id: i64 = r.get(0);
        let kind = match r.get::<_, i32>(1) {
            10 => 4,
            9 => 5,
            k => k,
        };
        let running: bool = r.get(3);
        let last_ms: i64 = r.get(4);
        let Some(row) = c.query_opt(&package, &[&id])? else {
            continue;
        };
        let (_, p) = package_row(&row);
        out.push(PackageSpan {
            package: p,
            evidence: evidence_name(kind).to_string(),
            first_ms: r.get(2),
            last_ms: (!running).then_some(last_ms),
            processes: u32::try_from(r.get::<_, i64>(5)).unwrap_or(u32::MAX),
        });
    }
    Ok(out)
}
