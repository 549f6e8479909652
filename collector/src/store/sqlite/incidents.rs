//! Incidents and their append-only event logs. Events are only ever
//! inserted (migration 17's triggers refuse UPDATE and DELETE); the
//! incident row holds the identity and what the domain cached with the
//! last event, replaced in the transaction that appends.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::{IncidentCache, IncidentEventRecord, IncidentRecord, Result, StoreError};

const COLUMNS: &str = "id, dedup_key, created_ms, state, open, last_seq, updated_ms, projection";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IncidentRecord> {
    Ok(IncidentRecord {
        id: r.get(0)?,
        dedup_key: r.get(1)?,
        created_ms: r.get(2)?,
        state: r.get(3)?,
        open: r.get(4)?,
        last_seq: r.get(5)?,
        updated_ms: r.get(6)?,
        projection: r.get(7)?,
    })
}

/// The events must number on from `last_seq` without gaps.
fn check_seqs(id: i64, last_seq: i64, events: &[IncidentEventRecord]) -> Result<()> {
    for (i, e) in events.iter().enumerate() {
        let want = last_seq + 1 + i as i64;
        if e.seq != want {
            return Err(StoreError::Invalid(format!(
                "incident {id}: event {} does not extend the log (the next is {want})",
                e.seq
            )));
        }
    }
    Ok(())
}

fn insert_events(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    events: &[IncidentEventRecord],
) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO incident_event (incident, seq, at_ms, actor, kind, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for e in events {
        insert.execute(params![id, e.seq, e.at_ms, e.actor, e.kind, e.payload])?;
    }
    Ok(())
}

pub(super) fn open(
    conn: &mut Connection,
    dedup_key: &str,
    created_ms: i64,
    events: &[IncidentEventRecord],
    cache: &IncidentCache<'_>,
) -> Result<(IncidentRecord, bool)> {
    if events.is_empty() {
        return Err(StoreError::Invalid(
            "an incident opens with at least one event".into(),
        ));
    }
    // IMMEDIATE: the lookup and the insert see the same database, so two
    // openers of one key cannot both miss it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(existing) = by_key(&tx, dedup_key)? {
        return Ok((existing, false));
    }
    check_seqs(0, 0, events)?;
    let last = events.last().expect("not empty");
    tx.prepare_cached(
        "INSERT INTO incident (dedup_key, created_ms, state, open, last_seq, updated_ms, projection)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        dedup_key,
        created_ms,
        cache.state,
        cache.open,
        last.seq,
        last.at_ms,
        cache.projection
    ])?;
    let id = tx.last_insert_rowid();
    insert_events(&tx, id, events)?;
    let stored = get(&tx, id)?.expect("inserted in this transaction");
    tx.commit()?;
    Ok((stored, true))
}

pub(super) fn append(
    conn: &mut Connection,
    id: i64,
    events: &[IncidentEventRecord],
    cache: &IncidentCache<'_>,
) -> Result<IncidentRecord> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(current) = get(&tx, id)? else {
        return Err(StoreError::Invalid(format!("no incident has the id {id}")));
    };
    check_seqs(id, current.last_seq, events)?;
    let Some(last) = events.last() else {
        return Ok(current);
    };
    insert_events(&tx, id, events)?;
    tx.prepare_cached(
        "UPDATE incident SET state = ?2, open = ?3, last_seq = ?4, updated_ms = ?5, projection = ?6
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        cache.state,
        cache.open,
        last.seq,
        last.at_ms,
        cache.projection
    ])?;
    let stored = get(&tx, id)?.expect("updated in this transaction");
    tx.commit()?;
    Ok(stored)
}

pub(super) fn get(conn: &Connection, id: i64) -> Result<Option<IncidentRecord>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM incident WHERE id = ?1"))?
        .query_row([id], row)
        .optional()?)
}

pub(super) fn by_key(conn: &Connection, dedup_key: &str) -> Result<Option<IncidentRecord>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM incident WHERE dedup_key = ?1 AND open = 1"
        ))?
        .query_row([dedup_key], row)
        .optional()?)
}

pub(super) fn list(
    conn: &Connection,
    before: Option<i64>,
    open_only: bool,
    limit: usize,
) -> Result<Vec<IncidentRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM incident WHERE id < ?1 {} ORDER BY id DESC LIMIT ?2",
        if open_only { "AND open = 1" } else { "" }
    );
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(
            params![
                before.unwrap_or(i64::MAX),
                limit.min(i64::MAX as usize) as i64
            ],
            row,
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn events(
    conn: &Connection,
    id: i64,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<IncidentEventRecord>> {
    let rows = conn
        .prepare_cached(
            "SELECT seq, at_ms, actor, kind, payload FROM incident_event
             WHERE incident = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?
        .query_map(
            params![id, after_seq, limit.min(i64::MAX as usize) as i64],
            |r| {
                Ok(IncidentEventRecord {
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    kind: r.get(3)?,
                    payload: r.get(4)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
