//! Incidents and their append-only event logs. Events are only ever
//! inserted (the schema's triggers refuse UPDATE and DELETE); the incident
//! row holds the identity and what the domain cached with the last event,
//! replaced in the transaction that appends, with the row locked
//! (`FOR UPDATE`) so two appenders cannot both extend one `last_seq`.

use postgres::{Client, GenericClient, Row, Transaction};

use crate::store::{IncidentCache, IncidentEventRecord, IncidentRecord, Result, StoreError};

const COLUMNS: &str = "id, dedup_key, created_ms, state, open, last_seq, updated_ms, projection";

fn row(r: &Row) -> IncidentRecord {
    IncidentRecord {
        id: r.get(0),
        dedup_key: r.get(1),
        created_ms: r.get(2),
        state: r.get(3),
        open: r.get(4),
        last_seq: r.get(5),
        updated_ms: r.get(6),
        projection: r.get(7),
    }
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

fn insert_events(tx: &mut Transaction<'_>, id: i64, events: &[IncidentEventRecord]) -> Result<()> {
    let insert = tx.prepare(
        "INSERT INTO incident_event (incident, seq, at_ms, actor, kind, payload)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )?;
    for e in events {
        tx.execute(
            &insert,
            &[&id, &e.seq, &e.at_ms, &e.actor, &e.kind, &e.payload],
        )?;
    }
    Ok(())
}

pub(super) fn open(
    client: &mut Client,
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
    let last = events.last().expect("not empty");
    let mut tx = client.transaction()?;
    // The partial unique index (one open incident per key) decides: a
    // racing opener waits for the other's commit, then conflicts.
    let inserted = tx.query_opt(
        "INSERT INTO incident (dedup_key, created_ms, state, open, last_seq, updated_ms, projection)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (dedup_key) WHERE open DO NOTHING RETURNING id",
        &[
            &dedup_key,
            &created_ms,
            &cache.state,
            &cache.open,
            &last.seq,
            &last.at_ms,
            &cache.projection,
        ],
    )?;
    let Some(inserted) = inserted else {
        let existing = by_key(&mut tx, dedup_key)?.ok_or_else(|| {
            StoreError::Invalid(format!(
                "incident key {dedup_key:?} conflicted but no open incident holds it"
            ))
        })?;
        return Ok((existing, false));
    };
    let id: i64 = inserted.get(0);
    // A bad log rolls the insert back with the transaction.
    check_seqs(0, 0, events)?;
    insert_events(&mut tx, id, events)?;
    let stored = get(&mut tx, id)?.expect("inserted in this transaction");
    tx.commit()?;
    Ok((stored, true))
}

pub(super) fn append(
    client: &mut Client,
    id: i64,
    events: &[IncidentEventRecord],
    cache: &IncidentCache<'_>,
) -> Result<IncidentRecord> {
    let mut tx = client.transaction()?;
    let Some(current) = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM incident WHERE id = $1 FOR UPDATE"),
            &[&id],
        )?
        .map(|r| row(&r))
    else {
        return Err(StoreError::Invalid(format!("no incident has the id {id}")));
    };
    check_seqs(id, current.last_seq, events)?;
    let Some(last) = events.last() else {
        return Ok(current);
    };
    insert_events(&mut tx, id, events)?;
    tx.execute(
        "UPDATE incident SET state = $2, open = $3, last_seq = $4, updated_ms = $5, projection = $6
         WHERE id = $1",
        &[
            &id,
            &cache.state,
            &cache.open,
            &last.seq,
            &last.at_ms,
            &cache.projection,
        ],
    )?;
    let stored = get(&mut tx, id)?.expect("updated in this transaction");
    tx.commit()?;
    Ok(stored)
}

pub(super) fn get(c: &mut impl GenericClient, id: i64) -> Result<Option<IncidentRecord>> {
    Ok(c.query_opt(
        &format!("SELECT {COLUMNS} FROM incident WHERE id = $1"),
        &[&id],
    )?
    .map(|r| row(&r)))
}

pub(super) fn by_key(
    c: &mut impl GenericClient,
    dedup_key: &str,
) -> Result<Option<IncidentRecord>> {
    Ok(c.query_opt(
        &format!("SELECT {COLUMNS} FROM incident WHERE dedup_key = $1 AND open"),
        &[&dedup_key],
    )?
    .map(|r| row(&r)))
}

pub(super) fn list(
    c: &mut impl GenericClient,
    before: Option<i64>,
    open_only: bool,
    limit: usize,
) -> Result<Vec<IncidentRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM incident WHERE id < $1 {} ORDER BY id DESC LIMIT $2",
        if open_only { "AND open" } else { "" }
    );
    Ok(c.query(
        &sql,
        &[
            &before.unwrap_or(i64::MAX),
            &(limit.min(i64::MAX as usize) as i64),
        ],
    )?
    .iter()
    .map(row)
    .collect())
}

pub(super) fn events(
    c: &mut impl GenericClient,
    id: i64,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<IncidentEventRecord>> {
    Ok(c.query(
        "SELECT seq, at_ms, actor, kind, payload FROM incident_event
             WHERE incident = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[&id, &after_seq, &(limit.min(i64::MAX as usize) as i64)],
    )?
    .iter()
    .map(|r| IncidentEventRecord {
        seq: r.get(0),
        at_ms: r.get(1),
        actor: r.get(2),
        kind: r.get(3),
        payload: r.get(4),
    })
    .collect())
}
