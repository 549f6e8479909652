//! Egress baselines (versioned documents) and alerts (one open per dedup
//! key). The documents are the domain's; SQL here keeps their identity,
//! versions and counters only.

use patchgap_proto::{Message, v1};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::packages::{PACKAGE_COLUMNS, evidence_name, package_row};
use crate::store::{
    ChainLink, EGRESS_BASELINE_VERSIONS, EgressAlertRecord, EgressAlertUpsert,
    EgressBaselineRecord, ProcessChain, Result, StoreError,
};

fn baseline_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EgressBaselineRecord> {
    Ok(EgressBaselineRecord {
        key: r.get(0)?,
        version: r.get(1)?,
        updated_ms: r.get(2)?,
        body: r.get(3)?,
    })
}

pub(super) fn put_baseline(
    conn: &mut Connection,
    key: &str,
    expected_version: i64,
    updated_ms: i64,
    body: &str,
) -> Result<EgressBaselineRecord> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM egress_baseline WHERE key = ?1")?
        .query_row([key], |r| r.get(0))?;
    if stored != expected_version {
        return Err(StoreError::Invalid(format!(
            "egress baseline {key:?} is at version {stored}, not {expected_version}: reload it"
        )));
    }
    let version = stored + 1;
    tx.prepare_cached(
        "INSERT INTO egress_baseline (key, version, updated_ms, body) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![key, version, updated_ms, body])?;
    tx.prepare_cached("DELETE FROM egress_baseline WHERE key = ?1 AND version <= ?2")?
        .execute(params![key, version - EGRESS_BASELINE_VERSIONS])?;
    tx.commit()?;
    Ok(EgressBaselineRecord {
        key: key.into(),
        version,
        updated_ms,
        body: body.into(),
    })
}

pub(super) fn baseline(
    conn: &Connection,
    key: &str,
    version: Option<i64>,
) -> Result<Option<EgressBaselineRecord>> {
    Ok(conn
        .prepare_cached(
            "SELECT key, version, updated_ms, body FROM egress_baseline
             WHERE key = ?1 AND (?2 IS NULL OR version = ?2)
             ORDER BY version DESC LIMIT 1",
        )?
        .query_row(params![key, version], baseline_row)
        .optional()?)
}

pub(super) fn baselines(conn: &Connection) -> Result<Vec<EgressBaselineRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT b.key, b.version, b.updated_ms, b.body FROM egress_baseline b
         WHERE b.version = (SELECT MAX(version) FROM egress_baseline WHERE key = b.key)
         ORDER BY b.key",
    )?;
    let rows = stmt.query_map([], baseline_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const ALERT_COLUMNS: &str =
    "id, dedup_key, workload, first_seen_ms, last_seen_ms, count, resolved_ms, body";

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EgressAlertRecord> {
    Ok(EgressAlertRecord {
        id: r.get(0)?,
        dedup_key: r.get(1)?,
        workload: r.get(2)?,
        first_seen_ms: r.get(3)?,
        last_seen_ms: r.get(4)?,
        count: r.get(5)?,
        resolved_ms: r.get(6)?,
        body: r.get(7)?,
    })
}

pub(super) fn upsert_alert(
    conn: &mut Connection,
    a: &EgressAlertUpsert<'_>,
) -> Result<(EgressAlertRecord, bool)> {
    if a.count < 1 {
        return Err(StoreError::Invalid(format!(
            "egress alert {:?}: a sighting counts at least 1, not {}",
            a.dedup_key, a.count
        )));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let open: Option<i64> = tx
        .prepare_cached("SELECT id FROM egress_alert WHERE dedup_key = ?1 AND resolved_ms IS NULL")?
        .query_row([a.dedup_key], |r| r.get(0))
        .optional()?;
    let (id, new) = match open {
        Some(id) => {
            tx.prepare_cached(
                "UPDATE egress_alert SET last_seen_ms = MAX(last_seen_ms, ?2),
                 count = count + ?3, body = ?4 WHERE id = ?1",
            )?
            .execute(params![id, a.seen_ms, a.count, a.body])?;
            (id, false)
        }
        None => {
            tx.prepare_cached(
                "INSERT INTO egress_alert (dedup_key, workload, first_seen_ms, last_seen_ms, count, body)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
            )?
            .execute(params![a.dedup_key, a.workload, a.seen_ms, a.count, a.body])?;
            (tx.last_insert_rowid(), true)
        }
    };
    let record = tx
        .prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM egress_alert WHERE id = ?1"
        ))?
        .query_row([id], alert_row)?;
    tx.commit()?;
    Ok((record, new))
}

pub(super) fn resolve_alerts(
    conn: &mut Connection,
    quiet_before_ms: i64,
    now_ms: i64,
) -> Result<Vec<EgressAlertRecord>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let resolved = tx
        .prepare_cached(&format!(
            "UPDATE egress_alert SET resolved_ms = ?2
             WHERE resolved_ms IS NULL AND last_seen_ms < ?1
             RETURNING {ALERT_COLUMNS}"
        ))?
        .query_map(params![quiet_before_ms, now_ms], alert_row)?
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit()?;
    Ok(resolved)
}

pub(super) fn alert(conn: &Connection, id: i64) -> Result<Option<EgressAlertRecord>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM egress_alert WHERE id = ?1"
        ))?
        .query_row([id], alert_row)
        .optional()?)
}

pub(super) fn open_alert(conn: &Connection, dedup_key: &str) -> Result<Option<EgressAlertRecord>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM egress_alert WHERE dedup_key = ?1 AND resolved_ms IS NULL"
        ))?
        .query_row([dedup_key], alert_row)
        .optional()?)
}

pub(super) fn alerts(
    conn: &Connection,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<EgressAlertRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM egress_alert WHERE last_seen_ms >= ?1
         ORDER BY last_seen_ms DESC, id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(
        params![since_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
        alert_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// (row id, set id, ppid, link).
type Found = (i64, i64, u32, ChainLink);

fn link_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Found> {
    let privilege: Vec<u8> = r.get(9)?;
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        ChainLink {
            pid: r.get(3)?,
            start_ticks: r.get::<_, i64>(4)? as u64,
            start_time_ms: r.get(5)?,
            exe: r.get(6)?,
            cmdline: r.get(7)?,
            workload: r.get(8)?,
            privilege: v1::Privilege::decode(privilege.as_slice()).unwrap_or_default(),
        },
    ))
}

const LINK_COLUMNS: &str =
    "id, set_id, ppid, pid, start_ticks, start_time_ms, exe, cmdline, workload, privilege";

pub(super) fn process_chain(
    conn: &Connection,
    host: i64,
    key: &v1::ProcessKey,
    depth: usize,
) -> Result<Option<ProcessChain>> {
    let Some(hostname) = conn
        .prepare_cached("SELECT hostname FROM host WHERE id = ?1")?
        .query_row([host], |r| r.get::<_, String>(0))
        .optional()?
    else {
        return Ok(None);
    };
    let first = conn
        .prepare_cached(&format!(
            "SELECT {LINK_COLUMNS} FROM process WHERE host = ?1 AND pid = ?2 AND start_ticks = ?3
             ORDER BY exit_time_ms IS NULL DESC, id DESC LIMIT 1"
        ))?
        .query_row(params![host, key.pid, key.start_ticks as i64], link_row)
        .optional()?;
    let Some((_, set_id, mut ppid, link)) = first else {
        return Ok(None);
    };
    let mut chain = ProcessChain {
        hostname,
        ..ProcessChain::default()
    };
    let workload_id = link.workload.clone();
    let mut started = link.start_time_ms;
    chain.links.push(link);
    // The parent is the process with the ppid that started before the
    // child: running if it still does, else the latest such.
    let mut parent = conn.prepare_cached(&format!(
        "SELECT {LINK_COLUMNS} FROM process WHERE host = ?1 AND pid = ?2 AND start_time_ms <= ?3
         ORDER BY exit_time_ms IS NULL DESC, start_time_ms DESC LIMIT 1"
    ))?;
    while chain.links.len() < depth && ppid > 0 {
        let Some((_, _, next, link)) = parent
            .query_row(params![host, ppid, started], link_row)
            .optional()?
        else {
            break;
        };
        if chain.links.iter().any(|l| l.pid == link.pid) {
            break;
        }
        started = link.start_time_ms;
        ppid = next;
        chain.links.push(link);
    }
    // The strongest evidence per package: exe, mapped, opened and
    // anonymous by their kind's number, then embedded, then installed.
    let mut kinds = conn.prepare_cached(
        "SELECT a.package_id, MIN(CASE a.kind WHEN 4 THEN 10 WHEN 5 THEN 9 ELSE a.kind END)
         FROM artifact a JOIN artifact_set_member m ON m.artifact_id = a.id
         WHERE m.set_id = ?1 AND a.package_id != 0
         GROUP BY a.package_id",
    )?;
    let found: Vec<(i64, i32)> = kinds
        .query_map([set_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut package = conn.prepare_cached(&format!("{PACKAGE_COLUMNS} WHERE p.id = ?1"))?;
    for (id, rank) in found {
        let kind = match rank {
            10 => v1::ArtifactKind::Installed as i32,
            9 => v1::ArtifactKind::Embedded as i32,
            k => k,
        };
        if let Some((_, p)) = package.query_row([id], package_row).optional()? {
            chain.packages.push((p, evidence_name(kind).to_string()));
        }
    }
    chain.packages.sort_by(|(a, _), (b, _)| {
        (&a.ecosystem, &a.name, &a.version).cmp(&(&b.ecosystem, &b.name, &b.version))
    });
    chain.workload = conn
        .prepare_cached("SELECT data FROM workload WHERE host = ?1 AND id = ?2")?
        .query_row(params![host, workload_id], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .and_then(|b| v1::Workload::decode(b.as_slice()).ok());
    Ok(Some(chain))
}
