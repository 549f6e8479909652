//! The PostgreSQL side of [`crate::store::singleton`]: a session-level
//! advisory lock per pass name, held on a connection taken out of the pool
//! for the guard's life.
//!
//! Session-level rather than `pg_try_advisory_xact_lock`, because a pass
//! is many transactions (each append is its own), and the guard must span
//! them all. The key is `hashtextextended` of the name under a patchgap
//! prefix, computed by the server, so every collector version agrees on it
//! without a hash of our own. A collector killed mid-pass loses its
//! connection, and the server releases the lock with it.

use super::Conn;
use crate::store::{Result, Singleton};

/// The advisory lock key of pass `name`, as SQL over `$1`.
const KEY: &str = "hashtextextended('patchgap.singleton.' || $1, 0)";

pub(super) fn try_singleton<'a>(mut conn: Conn<'a>, name: &str) -> Result<Option<Singleton<'a>>> {
    let taken: bool = conn
        .query_one(&format!("SELECT pg_try_advisory_lock({KEY})"), &[&name])?
        .get(0);
    if !taken {
        return Ok(None);
    }
    let owned = name.to_string();
    Ok(Some(Singleton::new(name, move || {
        let mut conn = conn;
        let released = conn
            .query_one(&format!("SELECT pg_advisory_unlock({KEY})"), &[&owned])
            .map(|row| row.get::<_, bool>(0));
        if !matches!(released, Ok(true)) {
            // The lock state of this session is unknown: close the
            // connection rather than pool it, which releases whatever it
            // still holds.
            let _ = conn.client.take();
        }
    })))
}
