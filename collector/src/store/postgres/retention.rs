//! History retention on PostgreSQL, as `sqlite/retention.rs` does it:
//! bounded batches, each one short transaction.
//!
//! Compaction races ingest here, where SQLite's one writer cannot: an
//! ingest transaction may find an artifact set (or artifact) that exists,
//! and insert a process pointing at it after compaction deleted it. So a
//! compaction batch takes `artifact_set` and `artifact` in SHARE ROW
//! EXCLUSIVE mode: ingest looks every set and artifact up by an INSERT
//! (ROW EXCLUSIVE, held to its commit), so the batch waits for ingest
//! transactions in flight and holds new ones for its own few
//! milliseconds. With a lock timeout, a busy moment skips the batch
//! instead of stalling ingest. Freed space is PostgreSQL's to reuse
//! (autovacuum); the database file does not shrink.

use postgres::Client;

use crate::store::{PruneStep, Result, StorageUse};

pub(super) fn prune(client: &mut Client, before_ms: i64, limit: usize) -> Result<PruneStep> {
    let limit = limit.min(i64::MAX as usize) as i64;
    let mut tx = client.transaction()?;
    // SKIP LOCKED: a row ingest holds now is left for the next pass.
    let ids: Vec<i64> = tx
        .query(
            "SELECT id FROM process WHERE exit_time_ms IS NOT NULL AND exit_time_ms < $1
             ORDER BY exit_time_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&before_ms, &limit],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !ids.is_empty() {
        tx.execute(
            "INSERT INTO retention_orphan (set_id)
             SELECT set_id FROM process WHERE id = ANY($1)
             UNION SELECT set_id FROM process_set_history WHERE process_id = ANY($1)
             ON CONFLICT DO NOTHING",
            &[&ids],
        )?;
        for table in ["process_set_history", "socket", "connection"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE process_id = ANY($1)"),
                &[&ids],
            )?;
        }
        tx.execute("DELETE FROM process WHERE id = ANY($1)", &[&ids])?;
    }
    let intervals: i64 = tx
        .query_one(
            "WITH gone AS (
                 DELETE FROM process_set_history WHERE ctid IN (
                     SELECT ctid FROM process_set_history
                     WHERE until_ms IS NOT NULL AND until_ms < $1 ORDER BY until_ms LIMIT $2)
                 RETURNING set_id),
             kept AS (
                 INSERT INTO retention_orphan (set_id) SELECT DISTINCT set_id FROM gone
                 ON CONFLICT DO NOTHING)
             SELECT count(*) FROM gone",
            &[&before_ms, &limit],
        )?
        .get(0);
    let connections = tx.execute(
        "DELETE FROM connection WHERE ctid IN (
             SELECT ctid FROM connection WHERE last_seen_ms < $1 ORDER BY last_seen_ms LIMIT $2)",
        &[&before_ms, &limit],
    )?;
    let workloads = tx.execute(
        "DELETE FROM workload WHERE ctid IN (
             SELECT w.ctid FROM workload w
             WHERE w.last_seen_ms < $1
               AND NOT EXISTS (SELECT 1 FROM process p WHERE p.host = w.host AND p.workload = w.id)
             ORDER BY w.last_seen_ms LIMIT $2)",
        &[&before_ms, &limit],
    )?;
    // A row skipped as locked is still there: not done until it went too,
    // so the horizon recorded is never one with history left before it.
    let skipped: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM process
                            WHERE exit_time_ms IS NOT NULL AND exit_time_ms < $1)",
            &[&before_ms],
        )?
        .get(0);
    tx.commit()?;
    let (processes, intervals, limit) = (ids.len() as u64, intervals as u64, limit as u64);
    Ok(PruneStep {
        processes,
        intervals,
        connections,
        workloads,
        done: !skipped
            && processes < limit
            && intervals < limit
            && connections < limit
            && workloads < limit,
    })
}

pub(super) fn compact(client: &mut Client, limit: usize) -> Result<u64> {
    let limit = limit.min(i64::MAX as usize) as i64;
    let mut tx = client.transaction()?;
    tx.batch_execute(
        "SET LOCAL lock_timeout = '2s';
         LOCK TABLE artifact_set, artifact IN SHARE ROW EXCLUSIVE MODE;",
    )?;
    let candidates: Vec<i64> = tx
        .query(
            "DELETE FROM retention_orphan WHERE set_id IN (
                 SELECT set_id FROM retention_orphan ORDER BY set_id LIMIT $1)
             RETURNING set_id",
            &[&limit],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if candidates.is_empty() {
        tx.commit()?;
        return Ok(0);
    }
    let sets: Vec<i64> = tx
        .query(
            "SELECT s.id FROM artifact_set s WHERE s.id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM process p WHERE p.set_id = s.id)
               AND NOT EXISTS (SELECT 1 FROM process_set_history h WHERE h.set_id = s.id)",
            &[&candidates],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let artifacts: Vec<i64> = tx
        .query(
            "DELETE FROM artifact_set_member WHERE set_id = ANY($1) RETURNING artifact_id",
            &[&sets],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.execute("DELETE FROM artifact_set WHERE id = ANY($1)", &[&sets])?;
    // An artifact goes with its last set.
    tx.execute(
        "DELETE FROM artifact a WHERE a.id = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM artifact_set_member m WHERE m.artifact_id = a.id)",
        &[&artifacts],
    )?;
    tx.commit()?;
    Ok(candidates.len() as u64)
}

pub(super) fn cutoff(client: &mut Client, nth: usize) -> Result<Option<i64>> {
    let offset = nth.saturating_sub(1).min(i64::MAX as usize) as i64;
    if let Some(row) = client.query_opt(
        "SELECT exit_time_ms FROM process WHERE exit_time_ms IS NOT NULL
         ORDER BY exit_time_ms LIMIT 1 OFFSET $1",
        &[&offset],
    )? {
        return Ok(Some(row.get(0)));
    }
    Ok(client
        .query_one(
            "SELECT max(exit_time_ms) FROM process WHERE exit_time_ms IS NOT NULL",
            &[],
        )?
        .get(0))
}

pub(super) fn storage(client: &mut Client) -> Result<StorageUse> {
    let bytes: i64 = client
        .query_one("SELECT pg_database_size(current_database())", &[])?
        .get(0);
    Ok(StorageUse {
        used_bytes: bytes.max(0) as u64,
        file_bytes: bytes.max(0) as u64,
    })
}

pub(super) fn set_horizon(client: &mut Client, horizon_ms: i64, now_ms: i64) -> Result<()> {
    client.execute(
        "INSERT INTO retention (one, horizon_ms, enforced_ms) VALUES (TRUE, $1, $2)
         ON CONFLICT (one) DO UPDATE SET horizon_ms = GREATEST(retention.horizon_ms, EXCLUDED.horizon_ms),
                                         enforced_ms = EXCLUDED.enforced_ms",
        &[&horizon_ms, &now_ms],
    )?;
    Ok(())
}

pub(super) fn horizon(client: &mut Client) -> Result<Option<i64>> {
    Ok(client
        .query_opt("SELECT horizon_ms FROM retention", &[])?
        .map(|r| r.get(0)))
}
