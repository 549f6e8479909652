//! The audit log, its checkpoints and the issued tokens. An entry is
//! written only when it extends the stored chain, checked under a lock
//! every appender takes (`pg_advisory_xact_lock`), so two writers, even on
//! two collectors, can never fork the log; there is no SQL here that
//! updates or deletes an entry, and the schema's triggers refuse it.

use postgres::{Client, GenericClient, Row};

use crate::store::{AUDIT_GENESIS, AuditCheckpoint, AuditEntry, Result, StoreError, TokenRecord};

/// The advisory lock that serialises audit appends.
const AUDIT_LOCK: i64 = 0x7061_7463_6861_7564; // "patchaud"

pub(super) fn append(client: &mut Client, e: &AuditEntry) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
    let (seq, hash) = head(&mut tx)?.unwrap_or((0, AUDIT_GENESIS.to_string()));
    if e.seq != seq + 1 || e.prev_hash != hash {
        return Err(StoreError::Invalid(format!(
            "audit entry {} does not extend the log (its last entry is {seq})",
            e.seq
        )));
    }
    tx.execute(
        "INSERT INTO audit (seq, time_ms, subject, scopes, peer, method, args, result, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &e.seq, &e.time_ms, &e.subject, &e.scopes, &e.peer, &e.method, &e.args, &e.result,
            &e.prev_hash, &e.hash,
        ],
    )?;
    tx.commit()?;
    Ok(())
}

pub(super) fn head(c: &mut impl GenericClient) -> Result<Option<(i64, String)>> {
    Ok(
        c.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?
            .map(|r| (r.get(0), r.get(1))),
    )
}

pub(super) fn entries(
    c: &mut impl GenericClient,
    after_seq: i64,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<AuditEntry>> {
    Ok(c.query(
        "SELECT seq, time_ms, subject, scopes, peer, method, args, result, prev_hash, hash
             FROM audit WHERE seq > $1 AND time_ms >= $2 ORDER BY seq LIMIT $3",
        &[
            &after_seq,
            &since_ms,
            &(limit.min(i64::MAX as usize) as i64),
        ],
    )?
    .iter()
    .map(|r| AuditEntry {
        seq: r.get(0),
        time_ms: r.get(1),
        subject: r.get(2),
        scopes: r.get(3),
        peer: r.get(4),
        method: r.get(5),
        args: r.get(6),
        result: r.get(7),
        prev_hash: r.get(8),
        hash: r.get(9),
    })
    .collect())
}

pub(super) fn append_checkpoint(c: &mut impl GenericClient, cp: &AuditCheckpoint) -> Result<()> {
    c.execute(
        "INSERT INTO audit_checkpoint (seq, hash, time_ms, signature) VALUES ($1, $2, $3, $4)",
        &[&cp.seq, &cp.hash, &cp.time_ms, &cp.signature],
    )?;
    Ok(())
}

pub(super) fn checkpoints(c: &mut impl GenericClient) -> Result<Vec<AuditCheckpoint>> {
    Ok(c.query(
        "SELECT seq, hash, time_ms, signature FROM audit_checkpoint ORDER BY seq",
        &[],
    )?
    .iter()
    .map(|r| AuditCheckpoint {
        seq: r.get(0),
        hash: r.get(1),
        time_ms: r.get(2),
        signature: r.get(3),
    })
    .collect())
}

pub(super) fn put_token(c: &mut impl GenericClient, t: &TokenRecord) -> Result<()> {
    c.execute(
        "INSERT INTO token (id, subject, scopes, issued_ms, expires_ms, issued_by, revoked_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &t.id,
            &t.subject,
            &t.scopes.join(","),
            &t.issued_ms,
            &t.expires_ms,
            &t.issued_by,
            &t.revoked_ms,
        ],
    )?;
    Ok(())
}

const TOKEN_COLUMNS: &str = "id, subject, scopes, issued_ms, expires_ms, issued_by, revoked_ms";

fn token_row(r: &Row) -> TokenRecord {
    TokenRecord {
        id: r.get(0),
        subject: r.get(1),
        scopes: r
            .get::<_, &str>(2)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        issued_ms: r.get(3),
        expires_ms: r.get(4),
        issued_by: r.get(5),
        revoked_ms: r.get(6),
    }
}

pub(super) fn tokens(c: &mut impl GenericClient) -> Result<Vec<TokenRecord>> {
    Ok(c.query(
        &format!("SELECT {TOKEN_COLUMNS} FROM token ORDER BY issued_ms DESC, id"),
        &[],
    )?
    .iter()
    .map(token_row)
    .collect())
}

pub(super) fn revoke_token(
    client: &mut Client,
    id: &str,
    now_ms: i64,
) -> Result<Option<TokenRecord>> {
    let mut tx = client.transaction()?;
    tx.execute(
        "UPDATE token SET revoked_ms = $2 WHERE id = $1 AND revoked_ms = 0",
        &[&id, &now_ms],
    )?;
    let row = tx
        .query_opt(
            &format!("SELECT {TOKEN_COLUMNS} FROM token WHERE id = $1"),
            &[&id],
        )?
        .map(|r| token_row(&r));
    tx.commit()?;
    Ok(row)
}
