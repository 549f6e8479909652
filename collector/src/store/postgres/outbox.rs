//! The outbox. Every function is one short transaction: a worker never
//! holds one across an outbound call. A claim leases rows with
//! `FOR UPDATE SKIP LOCKED`, so workers of several collectors sharing the
//! database each lease different deliveries and none waits on another.

use postgres::{Client, GenericClient, Row};

use crate::store::{
    DeliveryOutcome, DeliveryRecord, DeliveryState, DisabledEndpoint, NewDelivery, Result,
    StoreError,
};

const COLUMNS: &str = "id, webhook_id, endpoint, incident, action, event_type, body, created_ms,
     state, attempts, next_at_ms, claimed_until_ms, last_status, last_error, done_ms";

fn row(r: &Row) -> Result<DeliveryRecord> {
    let state: String = r.get(8);
    Ok(DeliveryRecord {
        id: r.get(0),
        webhook_id: r.get(1),
        endpoint: r.get(2),
        incident: r.get(3),
        action: r.get::<_, i64>(4) as u32,
        event_type: r.get(5),
        body: r.get(6),
        created_ms: r.get(7),
        state: DeliveryState::parse(&state).ok_or_else(|| StoreError::Backend {
            source: format!("unknown delivery state {state:?}").into(),
        })?,
        attempts: r.get::<_, i64>(9) as u32,
        next_at_ms: r.get(10),
        claimed_until_ms: r.get(11),
        last_status: r.get::<_, i64>(12) as u16,
        last_error: r.get(13),
        done_ms: r.get(14),
    })
}

pub(super) fn enqueue(c: &mut impl GenericClient, d: &NewDelivery) -> Result<bool> {
    if d.webhook_id.is_empty() || d.endpoint.is_empty() {
        return Err(StoreError::Invalid(
            "a delivery needs a webhook id and an endpoint".into(),
        ));
    }
    let n = c.execute(
        "INSERT INTO outbox (webhook_id, endpoint, incident, action, event_type, body,
                             created_ms, state, next_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $7)
         ON CONFLICT (webhook_id) DO NOTHING",
        &[
            &d.webhook_id,
            &d.endpoint,
            &d.incident,
            &i64::from(d.action),
            &d.event_type,
            &d.body,
            &d.created_ms,
        ],
    )?;
    Ok(n == 1)
}

pub(super) fn claim(
    client: &mut Client,
    now_ms: i64,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<DeliveryRecord>> {
    let until = now_ms.saturating_add(lease_ms.max(1));
    let mut tx = client.transaction()?;
    // Rows another worker is leasing right now are skipped, not waited
    // for; its lease is written before it commits.
    let rows = tx.query(
        &format!(
            "WITH due AS (
                 SELECT id FROM outbox
                 WHERE state = 'pending' AND next_at_ms <= $1 AND claimed_until_ms <= $1
                   AND endpoint NOT IN (SELECT name FROM outbox_endpoint_disabled)
                 ORDER BY next_at_ms, id LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE outbox o SET claimed_until_ms = $3, attempts = o.attempts + 1
             FROM due WHERE o.id = due.id
             RETURNING {}",
            COLUMNS
                .split(',')
                .map(|c| format!("o.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &[&now_ms, &(limit.min(i64::MAX as usize) as i64), &until],
    )?;
    let mut out = rows.iter().map(row).collect::<Result<Vec<_>>>()?;
    tx.commit()?;
    out.sort_by_key(|d| (d.next_at_ms, d.id));
    Ok(out)
}

pub(super) fn finish(
    client: &mut Client,
    id: i64,
    now_ms: i64,
    outcome: &DeliveryOutcome,
) -> Result<()> {
    let mut tx = client.transaction()?;
    let found: Option<(String, String)> = tx
        .query_opt(
            "SELECT state, endpoint FROM outbox WHERE id = $1 FOR UPDATE",
            &[&id],
        )?
        .map(|r| (r.get(0), r.get(1)));
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
        DeliveryOutcome::Delivered { status } => tx.execute(
            "UPDATE outbox SET state = 'delivered', claimed_until_ms = 0, last_status = $2,
                    last_error = '', done_ms = $3 WHERE id = $1",
            &[&id, &i64::from(*status), &now_ms],
        )?,
        DeliveryOutcome::Retry {
            next_at_ms,
            status,
            error,
        } => tx.execute(
            "UPDATE outbox SET claimed_until_ms = 0, next_at_ms = $2, last_status = $3,
                    last_error = $4 WHERE id = $1",
            &[&id, next_at_ms, &i64::from(*status), error],
        )?,
        DeliveryOutcome::Failed { status, error } => tx.execute(
            "UPDATE outbox SET state = 'failed', claimed_until_ms = 0, last_status = $2,
                    last_error = $3, done_ms = $4 WHERE id = $1",
            &[&id, &i64::from(*status), error, &now_ms],
        )?,
        DeliveryOutcome::EndpointGone { status, error } => {
            tx.execute(
                "INSERT INTO outbox_endpoint_disabled (name, at_ms, reason) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&endpoint, &now_ms, error],
            )?;
            tx.execute(
                "UPDATE outbox SET state = 'failed', claimed_until_ms = 0, last_status = $2,
                        last_error = $3, done_ms = $4 WHERE id = $1",
                &[&id, &i64::from(*status), error, &now_ms],
            )?
        }
    };
    debug_assert_eq!(changed, 1);
    tx.commit()?;
    Ok(())
}

pub(super) fn list(
    c: &mut impl GenericClient,
    incident: Option<i64>,
    limit: usize,
) -> Result<Vec<DeliveryRecord>> {
    let limit = limit.min(i64::MAX as usize) as i64;
    let rows = c.query(
        &format!(
            "SELECT {COLUMNS} FROM outbox WHERE $1::BIGINT IS NULL OR incident = $1
             ORDER BY id DESC LIMIT $2"
        ),
        &[&incident, &limit],
    )?;
    rows.iter().map(row).collect()
}

pub(super) fn disabled(c: &mut impl GenericClient) -> Result<Vec<DisabledEndpoint>> {
    Ok(c.query(
        "SELECT name, at_ms, reason FROM outbox_endpoint_disabled ORDER BY name",
        &[],
    )?
    .iter()
    .map(|r| DisabledEndpoint {
        name: r.get(0),
        at_ms: r.get(1),
        reason: r.get(2),
    })
    .collect())
}

pub(super) fn enable(c: &mut impl GenericClient, name: &str) -> Result<bool> {
    Ok(c.execute(
        "DELETE FROM outbox_endpoint_disabled WHERE name = $1",
        &[&name],
    )? == 1)
}
