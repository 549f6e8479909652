//! The audit log, its checkpoints and the issued tokens. An entry is
//! written only when it extends the stored chain (checked in the same
//! transaction), so two writers can never fork the log; there is no SQL
//! here that updates or deletes an entry.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{AUDIT_GENESIS, AuditCheckpoint, AuditEntry, Result, StoreError, TokenRecord};

pub(super) fn append(conn: &mut Connection, e: &AuditEntry) -> Result<()> {
    let tx = conn.transaction()?;
    let (seq, hash) = head(&tx)?.unwrap_or((0, AUDIT_GENESIS.to_string()));
    if e.seq != seq + 1 || e.prev_hash != hash {
        return Err(StoreError::Invalid(format!(
            "audit entry {} does not extend the log (its last entry is {seq})",
            e.seq
        )));
    }
    tx.prepare_cached(
        "INSERT INTO audit (seq, time_ms, subject, scopes, peer, method, args, result, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        e.seq, e.time_ms, e.subject, e.scopes, e.peer, e.method, e.args, e.result, e.prev_hash,
        e.hash
    ])?;
    tx.commit()?;
    Ok(())
}

pub(super) fn head(conn: &Connection) -> Result<Option<(i64, String)>> {
    Ok(conn
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

pub(super) fn entries(
    conn: &Connection,
    after_seq: i64,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<AuditEntry>> {
    let rows = conn
        .prepare_cached(
            "SELECT seq, time_ms, subject, scopes, peer, method, args, result, prev_hash, hash
             FROM audit WHERE seq > ?1 AND time_ms >= ?2 ORDER BY seq LIMIT ?3",
        )?
        .query_map(
            params![after_seq, since_ms, limit.min(i64::MAX as usize) as i64],
            |r| {
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    time_ms: r.get(1)?,
                    subject: r.get(2)?,
                    scopes: r.get(3)?,
                    peer: r.get(4)?,
                    method: r.get(5)?,
                    args: r.get(6)?,
                    result: r.get(7)?,
                    prev_hash: r.get(8)?,
                    hash: r.get(9)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn append_checkpoint(conn: &Connection, c: &AuditCheckpoint) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_checkpoint (seq, hash, time_ms, signature) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![c.seq, c.hash, c.time_ms, c.signature])?;
    Ok(())
}

pub(super) fn checkpoints(conn: &Connection) -> Result<Vec<AuditCheckpoint>> {
    let rows = conn
        .prepare_cached("SELECT seq, hash, time_ms, signature FROM audit_checkpoint ORDER BY seq")?
        .query_map([], |r| {
            Ok(AuditCheckpoint {
                seq: r.get(0)?,
                hash: r.get(1)?,
                time_ms: r.get(2)?,
                signature: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn put_token(conn: &Connection, t: &TokenRecord) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO token (id, subject, scopes, issued_ms, expires_ms, issued_by, revoked_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        t.id,
        t.subject,
        t.scopes.join(","),
        t.issued_ms,
        t.expires_ms,
        t.issued_by,
        t.revoked_ms
    ])?;
    Ok(())
}

const TOKEN_COLUMNS: &str = "id, subject, scopes, issued_ms, expires_ms, issued_by, revoked_ms";

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let scopes: String = r.get(2)?;
    Ok(TokenRecord {
        id: r.get(0)?,
        subject: r.get(1)?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        issued_ms: r.get(3)?,
        expires_ms: r.get(4)?,
        issued_by: r.get(5)?,
        revoked_ms: r.get(6)?,
    })
}

pub(super) fn tokens(conn: &Connection) -> Result<Vec<TokenRecord>> {
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM token ORDER BY issued_ms DESC, id"
        ))?
        .query_map([], token_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn revoke_token(
    conn: &mut Connection,
    id: &str,
    now_ms: i64,
) -> Result<Option<TokenRecord>> {
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE token SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms = 0",
        params![id, now_ms],
    )?;
    let row = tx
        .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM token WHERE id = ?1"))?
        .query_row([id], token_row)
        .optional()?;
    tx.commit()?;
    Ok(row)
}
