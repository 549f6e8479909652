//! The outbox (migration 18). Every function is one short transaction: a
//! worker never holds one across an outbound call.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::{
    DeliveryOutcome, DeliveryRecord, DeliveryState, DisabledEndpoint, NewDelivery, Result,
    StoreError,
};

const COLUMNS: &str = "id, webhook_id, endpoint, incident, action, event_type, body, created_ms,
     state, attempts, next_at_ms, claimed_until_ms, last_status, last_error, done_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let state: String = r.get(8)?;
    Ok(DeliveryRecord {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        endpoint: r.get(2)?,
        incident: r.get(3)?,
        action: r.get(4)?,
        event_type: r.get(5)?,
        body: r.get(6)?,
        created_ms: r.get(7)?,
        state: DeliveryState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                8,
                rusqlite::types::Type::Text,
                format!("unknown delivery state {state:?}").into(),
            )
        })?,
        attempts: r.get(9)?,
        next_at_ms: r.get(10)?,
        claimed_until_ms: r.get(11)?,
        last_status: r.get(12)?,
        last_error: r.get(13)?,
        done_ms: r.get(14)?,
    })
}

pub(super) fn enqueue(conn: &Connection, d: &NewDelivery) -> Result<bool> {
    if d.webhook_id.is_empty() || d.endpoint.is_empty() {
        return Err(StoreError::Invalid(
            "a delivery needs a webhook id and an endpoint".into(),
        ));
    }
    let n = conn
        .prepare_cached(
            "INSERT INTO outbox (webhook_id, endpoint, incident, action, event_type, body,
                                 created_ms, state, next_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?7)
             ON CONFLICT (webhook_id) DO NOTHING",
        )?
        .execute(params![
            d.webhook_id,
            d.endpoint,
            d.incident,
            d.action,
            d.event_type,
            d.body,
            d.created_ms
        ])?;
    Ok(n == 1)
}

pub(super) fn claim(
    conn: &mut Connection,
    now_ms: i64,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<DeliveryRecord>> {
    // IMMEDIATE: the select and the lease see the same rows, so two
    // workers (or two collectors on one file) never lease one delivery.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids: Vec<i64> = tx
        .prepare_cached(
            "SELECT id FROM outbox
             WHERE state = 'pending' AND next_at_ms <= ?1 AND claimed_until_ms <= ?1
               AND endpoint NOT IN (SELECT name FROM outbox_endpoint_disabled)
             ORDER BY next_at_ms, id LIMIT ?2",
        )?
        .query_map(params![now_ms, limit.min(i64::MAX as usize) as i64], |r| {
            r.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    let until = now_ms.saturating_add(lease_ms.max(1));
    let mut out = Vec::with_capacity(ids.len());
    {
        let mut lease = tx.prepare_cached(
            "UPDATE outbox SET claimed_until_ms = ?2, attempts = attempts + 1 WHERE id = ?1",
        )?;
        let mut get = tx.prepare_cached(&format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"))?;
        for id in ids {
            lease.execute(params![id, until])?;
            out.push(get.query_row([id], row)?);
        }
    }
    tx.commit()?;
    Ok(out)
}

pub(super) fn finish(
    conn: &mut Connection,
    id: i64,
    now_ms: i64,
    outcome: &DeliveryOutcome,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: Option<(String, String)> = tx
        .prepare_cached("SELECT state, endpoint FROM outbox WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let endpoint = match found {
        None => return Err(StoreError::Invalid(format!("no delivery {id}"))),
        Some((state, _)) if state != DeliveryState::Pending.name() => {
            return Err(StoreError::Invalid(format!(
                "delivery {id} is {state} already"
            )));
        }
        Some((_, endpoint)) => endpoint,
    };
    let changed = match outcome {
        DeliveryOutcome::Delivered { status } => tx
            .prepare_cached(
                "UPDATE outbox SET state = 'delivered', claimed_until_ms = 0, last_status = ?2,
                        last_error = '', done_ms = ?3 WHERE id = ?1",
            )?
            .execute(params![id, status, now_ms])?,
        DeliveryOutcome::Retry {
            next_at_ms,
            status,
            error,
        } => tx
            .prepare_cached(
                "UPDATE outbox SET claimed_until_ms = 0, next_at_ms = ?2, last_status = ?3,
                        last_error = ?4 WHERE id = ?1",
            )?
            .execute(params![id, next_at_ms, status, error])?,
        DeliveryOutcome::Failed { status, error } => tx
            .prepare_cached(
                "UPDATE outbox SET state = 'failed', claimed_until_ms = 0, last_status = ?2,
                        last_error = ?3, done_ms = ?4 WHERE id = ?1",
            )?
            .execute(params![id, status, error, now_ms])?,
        DeliveryOutcome::EndpointGone { status, error } => {
            tx.prepare_cached(
                "INSERT INTO outbox_endpoint_disabled (name, at_ms, reason) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![endpoint, now_ms, error])?;
            tx.prepare_cached(
                "UPDATE outbox SET state = 'failed', claimed_until_ms = 0, last_status = ?2,
                        last_error = ?3, done_ms = ?4 WHERE id = ?1",
            )?
            .execute(params![id, status, error, now_ms])?
        }
    };
    debug_assert_eq!(changed, 1);
    tx.commit()?;
    Ok(())
}

pub(super) fn list(
    conn: &Connection,
    incident: Option<i64>,
    limit: usize,
) -> Result<Vec<DeliveryRecord>> {
    let limit = limit.min(i64::MAX as usize) as i64;
    let rows = match incident {
        Some(i) => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE incident = ?1 ORDER BY id DESC LIMIT ?2"
            ))?
            .query_map(params![i, limit], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?1"
            ))?
            .query_map(params![limit], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(rows)
}

pub(super) fn disabled(conn: &Connection) -> Result<Vec<DisabledEndpoint>> {
    Ok(conn
        .prepare_cached("SELECT name, at_ms, reason FROM outbox_endpoint_disabled ORDER BY name")?
        .query_map([], |r| {
            Ok(DisabledEndpoint {
                name: r.get(0)?,
                at_ms: r.get(1)?,
                reason: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

pub(super) fn enable(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM outbox_endpoint_disabled WHERE name = ?1")?
        .execute([name])?
        == 1)
}
