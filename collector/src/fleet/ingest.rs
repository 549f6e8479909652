//! Every path that writes the runtime truth: agent messages, advisory
//! imports and SBOM pushes. Each one stores, then runs the matching pass
//! over what it stored, in one place, so a new write path cannot forget
//! the matcher ("every path that stores packages or advisories runs it
//! before answering").
//!
//! Writers are serialized here: the matcher reads candidates and then
//! records verdicts, and nothing may commit in between. Readers never take
//! this lock; the store serves them beside the writer.
//!
//! **Invariant:** `Store`'s write methods are called from this module only
//! (and from the conformance suite); executors of later stages never run
//! while its lock is held.

use std::sync::{Arc, Mutex, MutexGuard};

use patchgap_proto::v1;
use tracing::{info, warn};

use crate::{
    advisories::matching::{self, Pass},
    store::{AdvisoryRecord, MatchScope, PutOutcome, Result, SbomRecord, Session, Store},
};

/// The write side of the runtime truth.
pub struct Ingest {
    store: Arc<dyn Store>,
    /// Held for a write and its matching pass.
    writing: Mutex<()>,
}

/// What an advisory import stored and matched.
#[derive(Debug)]
pub struct Imported {
    /// One outcome per record, in order.
    pub outcomes: Vec<PutOutcome>,
    pub pass: Pass,
}

impl Ingest {
    pub fn new(store: Arc<dyn Store>) -> Ingest {
        Ingest {
            store,
            writing: Mutex::new(()),
        }
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Matches packages stored but not matched yet: a crash between an
    /// ingest and its pass, or a database from before schema 8. Runs at
    /// start, before anything is served.
    pub fn match_unmatched(&self) -> Result<Pass> {
        let _w = self.lock();
        let pass = matching::refresh(self.store.as_ref(), &MatchScope::Unmatched)?;
        if pass.candidates > 0 {
            info!(
                candidates = pass.candidates,
                matches = pass.matches,
                "matched stored packages"
            );
        }
        Ok(pass)
    }

    /// Registers an agent's Hello.
    pub fn hello(&self, hello: &v1::Hello, now_ms: i64) -> Result<Session> {
        let _w = self.lock();
        self.store.hello(hello, now_ms)
    }

    /// Stores one agent message durably, then matches its new packages
    /// against the stored advisories (one indexed query when nothing is
    /// new). The result means the message is committed: a failed pass
    /// leaves the packages unmatched, is logged, and the next write's pass
    /// retries, so an ack never waits on the matcher.
    pub fn apply(&self, session: &Session, msg: &v1::AgentMessage, now_ms: i64) -> Result<()> {
        let _w = self.lock();
        self.store.apply(session, msg, now_ms)?;
        self.match_new("new packages");
        Ok(())
    }

    /// Stores advisories, then matches what changed (and the advisories
    /// that share an alias with it) against every package: the answer
    /// means the findings are complete.
    pub fn import_advisories(&self, records: &[AdvisoryRecord]) -> Result<Imported> {
        let _w = self.lock();
        let outcomes = self.store.put_advisories(records)?;
        let changed: Vec<AdvisoryRecord> = records
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| matches!(o, PutOutcome::Added | PutOutcome::Updated))
            .map(|(r, _)| r.clone())
            .collect();
        let ids = matching::related(self.store.as_ref(), &changed)?;
        let pass = matching::refresh(self.store.as_ref(), &MatchScope::Advisories(ids))?;
        Ok(Imported { outcomes, pass })
    }

    /// Attaches an SBOM to its image, then matches its packages. Stored
    /// either way: a failed pass leaves them unmatched for the next one.
    pub fn push_sbom(&self, record: &SbomRecord) -> Result<PutOutcome> {
        let _w = self.lock();
        let outcome = self.store.put_sbom(record)?;
        self.match_new("the SBOM's packages");
        Ok(outcome)
    }

    /// The unmatched packages' pass; the caller holds the lock.
    fn match_new(&self, what: &str) {
        if let Err(e) = matching::refresh(self.store.as_ref(), &MatchScope::Unmatched) {
            warn!(error = %e.chain(), what, "matching failed; the next write retries");
        }
    }
}
