//! History retention on SQLite: bounded batches of deletes, each its own
//! short IMMEDIATE transaction on the writer, so ingest waits for one
//! batch at most, never for the whole pass.
//!
//! Freed pages go to SQLite's freelist, where later ingest reuses them:
//! the file stops growing, but shrinks only with `auto_vacuum`. Stores
//! created since schema 20 are `auto_vacuum=incremental` (it must be set
//! before the first table), and [`reclaim`] hands free pages back in
//! bounded steps. An older store keeps `auto_vacuum=none`: switching needs
//! a full VACUUM, which rewrites the whole file under an exclusive lock
//! and needs as much free disk again, so the collector never does it on
//! its own; an operator can, offline (see README, "History retention").

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::{PruneStep, Result, StorageUse};

pub(super) fn prune(conn: &mut Connection, before_ms: i64, limit: usize) -> Result<PruneStep> {
    let limit = limit.min(i64::MAX as usize) as i64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS prune_process (id INTEGER PRIMARY KEY);
         DELETE FROM temp.prune_process;",
    )?;
    let processes = tx.execute(
        "INSERT INTO temp.prune_process (id)
         SELECT id FROM process WHERE exit_time_ms IS NOT NULL AND exit_time_ms < ?1
         ORDER BY exit_time_ms LIMIT ?2",
        params![before_ms, limit],
    )? as u64;
    // The sets the rows to go point at: compaction checks them later.
    tx.execute(
        "INSERT OR IGNORE INTO retention_orphan (set_id)
         SELECT set_id FROM process WHERE id IN (SELECT id FROM temp.prune_process)
         UNION SELECT set_id FROM process_set_history
               WHERE process_id IN (SELECT id FROM temp.prune_process)",
        [],
    )?;
    for table in ["process_set_history", "socket", "connection"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE process_id IN (SELECT id FROM temp.prune_process)"),
            [],
        )?;
    }
    tx.execute(
        "DELETE FROM process WHERE id IN (SELECT id FROM temp.prune_process)",
        [],
    )?;
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS prune_interval (rid INTEGER PRIMARY KEY);
         DELETE FROM temp.prune_interval;",
    )?;
    tx.execute(
        "INSERT INTO temp.prune_interval (rid)
         SELECT rowid FROM process_set_history
         WHERE until_ms IS NOT NULL AND until_ms < ?1 ORDER BY until_ms LIMIT ?2",
        params![before_ms, limit],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO retention_orphan (set_id)
         SELECT set_id FROM process_set_history WHERE rowid IN (SELECT rid FROM temp.prune_interval)",
        [],
    )?;
    let intervals = tx.execute(
        "DELETE FROM process_set_history WHERE rowid IN (SELECT rid FROM temp.prune_interval)",
        [],
    )? as u64;
    let connections = tx.execute(
        "DELETE FROM connection WHERE rowid IN (
             SELECT rowid FROM connection WHERE last_seen_ms < ?1 ORDER BY last_seen_ms LIMIT ?2)",
        params![before_ms, limit],
    )? as u64;
    let workloads = tx.execute(
        "DELETE FROM workload WHERE rowid IN (
             SELECT w.rowid FROM workload w
             WHERE w.last_seen_ms < ?1
               AND NOT EXISTS (SELECT 1 FROM process p WHERE p.host = w.host AND p.workload = w.id)
             ORDER BY w.last_seen_ms LIMIT ?2)",
        params![before_ms, limit],
    )? as u64;
    tx.commit()?;
    let limit = limit as u64;
    Ok(PruneStep {
        processes,
        intervals,
        connections,
        workloads,
        done: processes < limit && intervals < limit && connections < limit && workloads < limit,
    })
}

pub(super) fn compact(conn: &mut Connection, limit: usize) -> Result<u64> {
    let limit = limit.min(i64::MAX as usize) as i64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let candidates: Vec<i64> = tx
        .prepare("SELECT set_id FROM retention_orphan ORDER BY set_id LIMIT ?1")?
        .query_map([limit], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut unreferenced = tx.prepare(
        "SELECT NOT EXISTS (SELECT 1 FROM process WHERE set_id = ?1)
            AND NOT EXISTS (SELECT 1 FROM process_set_history WHERE set_id = ?1)",
    )?;
    let mut members =
        tx.prepare("SELECT artifact_id FROM artifact_set_member WHERE set_id = ?1")?;
    for &set in &candidates {
        tx.execute("DELETE FROM retention_orphan WHERE set_id = ?1", [set])?;
        if !unreferenced.query_row([set], |r| r.get::<_, bool>(0))? {
            continue;
        }
        let artifacts: Vec<i64> = members
            .query_map([set], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute("DELETE FROM artifact_set_member WHERE set_id = ?1", [set])?;
        tx.execute("DELETE FROM artifact_set WHERE id = ?1", [set])?;
        // An artifact goes with its last set (members are keyed by
        // artifact first, so this is an index lookup).
        for a in artifacts {
            tx.execute(
                "DELETE FROM artifact WHERE id = ?1
                 AND NOT EXISTS (SELECT 1 FROM artifact_set_member WHERE artifact_id = ?1)",
                [a],
            )?;
        }
    }
    drop((unreferenced, members));
    tx.commit()?;
    Ok(candidates.len() as u64)
}

pub(super) fn cutoff(conn: &Connection, nth: usize) -> Result<Option<i64>> {
    let offset = nth.saturating_sub(1).min(i64::MAX as usize) as i64;
    let at: Option<i64> = conn
        .query_row(
            "SELECT exit_time_ms FROM process WHERE exit_time_ms IS NOT NULL
             ORDER BY exit_time_ms LIMIT 1 OFFSET ?1",
            [offset],
            |r| r.get(0),
        )
        .optional()?;
    match at {
        Some(at) => Ok(Some(at)),
        None => Ok(conn.query_row(
            "SELECT max(exit_time_ms) FROM process WHERE exit_time_ms IS NOT NULL",
            [],
            |r| r.get(0),
        )?),
    }
}

pub(super) fn storage(conn: &Connection) -> Result<StorageUse> {
    let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    Ok(StorageUse {
        used_bytes: ((pages - free).max(0) * page) as u64,
        file_bytes: (pages * page) as u64,
    })
}

/// With `auto_vacuum=incremental`, moves up to `max_bytes` of free pages
/// to the end of the file and truncates it (in WAL mode the file shrinks
/// at the next checkpoint, which this forces, passively).
pub(super) fn reclaim(conn: &Connection, max_bytes: u64) -> Result<u64> {
    let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
    // 2 is incremental; 0 (none) cannot hand pages back without a VACUUM.
    if mode != 2 {
        return Ok(0);
    }
    let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let before: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let pages = (max_bytes / page.max(1) as u64).min(before.max(0) as u64) as i64;
    if pages == 0 {
        return Ok(0);
    }
    // Stepped to the end: each step moves pages.
    let mut vacuum = conn.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = vacuum.query([])?;
    while rows.next()?.is_some() {}
    drop(rows);
    drop(vacuum);
    let after: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    Ok(((before - after).max(0) * page) as u64)
}

/// Copies the whole WAL into the database file and truncates the WAL
/// (waiting for readers, up to the busy timeout). A reader that holds an
/// old snapshot makes SQLite answer "busy" in the result row, not an
/// error: the WAL then stays for the next checkpoint, which is fine.
pub(super) fn checkpoint(conn: &Connection) -> Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

pub(super) fn set_horizon(conn: &Connection, horizon_ms: i64, now_ms: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO retention (one, horizon_ms, enforced_ms) VALUES (1, ?1, ?2)
         ON CONFLICT (one) DO UPDATE SET horizon_ms = max(horizon_ms, excluded.horizon_ms),
                                         enforced_ms = excluded.enforced_ms",
        params![horizon_ms, now_ms],
    )?;
    Ok(())
}

pub(super) fn horizon(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .query_row("SELECT horizon_ms FROM retention WHERE one = 1", [], |r| {
            r.get(0)
        })
        .optional()?)
}
