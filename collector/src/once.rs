//! The collector's background passes that must run once across every
//! collector sharing the database: each takes its named
//! [`Singleton`](crate::store::Singleton) for the length of one pass, and
//! a collector that finds it held skips that pass (the holder is doing the
//! same work on the same rows).
//!
//! Which passes, and why these:
//! - [`INCIDENT_REFRESH`]: opening incidents by policy, refreshing scopes
//!   and planning; two at once would append the same events twice;
//! - [`VERIFY`]: the verification gate's runs are counted into a streak,
//!   so a second pass would count each run twice and lift early;
//! - [`EGRESS_RESOLVE`]: resolving quiet egress alerts, which tells the
//!   receivers once;
//! - [`RETENTION`]: dropping old history; two at once would fight over
//!   the same rows and each wait on the other's locks.
//!
//! Passes that stay per collector, because each one's input is what its
//! own agents or its own listener saw: the containment follower (the
//! reports of the agents whose streams this collector holds) and the
//! deploy gate's follower (the admissions this collector answered). The
//! outbox needs no singleton: its claims are leases (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL), so each delivery has one deliverer.
//!
//! **Invariant:** a pass wrapped in [`run_once`] runs on at most one
//! collector of a database at a time; the guard is taken and dropped on
//! the same blocking thread as the pass, outside any store transaction.

use crate::store::Store;

/// Incident refresh: auto-open, scope refresh and planning.
pub const INCIDENT_REFRESH: &str = "incident-refresh";
/// The verification pass over incidents past containment.
pub const VERIFY: &str = "verify";
/// Resolving egress alerts that went quiet.
pub const EGRESS_RESOLVE: &str = "egress-resolve";
/// History retention (`crate::retention`).
pub const RETENTION: &str = "retention";

/// Runs `pass` when this collector can take the singleton `name`, and
/// returns its result; None when another collector holds it (or the
/// database cannot say, which is logged: the pass would fail the same
/// way).
pub fn run_once<T>(store: &dyn Store, name: &str, pass: impl FnOnce() -> T) -> Option<T> {
    match store.try_singleton(name) {
        Ok(Some(_guard)) => Some(pass()),
        Ok(None) => {
            tracing::debug!(pass = name, "skipped: another collector runs this pass");
            None
        }
        Err(error) => {
            tracing::warn!(error = %error.chain(), pass = name, "cannot take the pass's lock; skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn a_held_pass_is_skipped_and_a_free_one_runs() {
        let store = SqliteStore::in_memory().unwrap();
        assert_eq!(run_once(&store, VERIFY, || 7), Some(7));
        let held = store.try_singleton(VERIFY).unwrap().unwrap();
        let mut ran = false;
        assert_eq!(run_once(&store, VERIFY, || ran = true), None);
        assert!(!ran, "a held pass ran");
        assert_eq!(run_once(&store, INCIDENT_REFRESH, || 1), Some(1));
        drop(held);
        assert_eq!(run_once(&store, VERIFY, || 8), Some(8));
    }
}
