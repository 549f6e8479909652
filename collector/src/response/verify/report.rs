//! The response report (`patchgap report`, `/metrics`) kept between calls.
//!
//! A report covers every incident the store holds, read in pages, so its
//! counters only grow: a window of the newest incidents would let an old
//! incident's closes fall out and a Prometheus counter go down. Reading
//! every log on every call would cost the whole history each scrape, so
//! the [`Ledger`] keeps each incident's [`Fold`] with the `seq` of the
//! last event it read, and a call reads only the events appended since:
//! the incident records (one row each) are listed every call, the events
//! of an unchanged incident are not read again. The key is the store's
//! `last_seq`, not anything this collector did, so events appended by
//! another collector sharing the same PostgreSQL are read on the next
//! call like any other.

use std::{collections::BTreeMap, sync::Mutex};

use super::metrics::{self, Fold, Report};
use crate::{
    response::incident::{Recorded, display_id, log::LogError},
    store::Store,
};

/// Incident records per page.
pub const PAGE: usize = 500;

/// Events per read of one incident's log.
const EVENTS_PAGE: usize = 1_000;

/// One [`Fold`] per incident in the store, kept between reports; one per
/// collector, shared by the API and `/metrics`.
///
/// Memory: one entry per incident the store holds (retention never
/// deletes incidents, so this grows with them and with nothing else):
/// about 300 bytes, plus about 100 bytes per plan the incident recorded
/// and 16 bytes per time sample (containment, approval, convergence),
/// so 100,000 incidents take some 40 MB. The histograms' percentiles need
/// every sample anyway, so nothing smaller could give the same report.
#[derive(Debug)]
pub struct Ledger {
    page: usize,
    /// Incident id -> its log read up to `seq`.
    by_id: Mutex<BTreeMap<i64, Entry>>,
}

#[derive(Debug)]
struct Entry {
    seq: i64,
    fold: Fold,
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger::with_page(PAGE)
    }
}

impl Ledger {
    /// A ledger that lists incident records `page` at a time (tests use a
    /// small page to cross page boundaries with a few incidents).
    pub fn with_page(page: usize) -> Ledger {
        Ledger {
            page: page.max(1),
            by_id: Mutex::default(),
        }
    }

    /// The report over the incidents opened at or after `since_ms`, each
    /// from its whole log, reading only the events appended since the
    /// last call. Calls are serialized: two scrapes at once would
    /// otherwise read the same new events twice.
    pub fn report(&self, store: &dyn Store, since_ms: i64) -> Result<Report, LogError> {
        let mut by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh = BTreeMap::new();
        let mut before = None;
        loop {
            let page = store.incidents(before, false, self.page)?;
            for rec in &page {
                let mut entry = match by_id.remove(&rec.id) {
                    // A log never shrinks; a store restored from an older
                    // backup could, and then the log is read again.
                    Some(e) if e.seq <= rec.last_seq => e,
                    _ => Entry {
                        seq: 0,
                        fold: Fold::new(rec.id),
                    },
                };
                while entry.seq < rec.last_seq {
                    let chunk = store.incident_events(rec.id, entry.seq, EVENTS_PAGE)?;
                    for r in &chunk {
                        let event =
                            Recorded::from_record(r).map_err(|source| LogError::Corrupt {
                                id: display_id(rec.id),
                                source,
                            })?;
                        entry.fold.feed(&event);
                        entry.seq = r.seq;
                    }
                    if chunk.len() < EVENTS_PAGE {
                        break;
                    }
                }
                fresh.insert(rec.id, entry);
            }
            match page.last() {
                Some(last) if page.len() == self.page => before = Some(last.id),
                _ => break,
            }
        }
        *by_id = fresh;
        // Newest first, as the store lists them: the histograms' sums add
        // in the same order on every call.
        Ok(metrics::report(by_id.values().rev().filter_map(|e| {
            (e.fold.started() && e.fold.times.opened_at_ms >= since_ms).then_some(&e.fold.times)
        })))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        fleet::ingest::Ingest,
        response::{
            incident::{Source, log},
            verify::{metrics::from_log, pass::force_close},
        },
        store::{
            conformance::{T0, hello, msg, snapshot},
            counting::Counting,
            sqlite::SqliteStore,
        },
    };

    fn source(package: &str) -> Source {
        Source::Package {
            package: package.into(),
            name: package.into(),
            ecosystem: None,
            group: None,
            range: Some("<2".into()),
        }
    }

    fn last_seq(store: &dyn Store, id: i64) -> i64 {
        store.incident(id).unwrap().unwrap().last_seq
    }

    /// Every incident's times read from its whole log, as a report with
    /// no ledger would.
    fn from_scratch(store: &dyn Store) -> Report {
        let mut times = Vec::new();
        for rec in store.incidents(None, false, 1_000).unwrap() {
            let events: Vec<Recorded> = store
                .incident_events(rec.id, 0, 1_000)
                .unwrap()
                .iter()
                .map(|r| Recorded::from_record(r).unwrap())
                .collect();
            times.push(from_log(rec.id, &events));
        }
        metrics::report(&times)
    }

    /// With a page of 2 (the old window's size, here), three incidents:
    /// the oldest one's close stays counted when the newer two push it
    /// past the first page, and each counter only grows. A call reads the
    /// events of the incidents whose log grew since the last call, and
    /// those only from where it stopped; events appended by another
    /// writer on the same store (another collector) are read like any
    /// other. The folds give what reading every log from scratch gives.
    #[test]
    fn counters_cover_every_incident_and_a_call_reads_only_new_events() {
        let store = Arc::new(Counting::new(SqliteStore::in_memory().unwrap()));
        let ingest = Ingest::new(store.clone());
        let session = ingest.hello(&hello("s1"), T0).unwrap();
        ingest
            .apply(&session, &msg(1, snapshot("snap-1", vec![], vec![])), T0)
            .unwrap();
        let ledger = Ledger::with_page(2);
        let report = |since_ms| ledger.report(store.as_ref(), since_ms).unwrap();
        let events = || store.count.events();

        let a = log::open(&ingest, source("liba"), "alice", &[], T0 + 1)
            .unwrap()
            .id;
        force_close(&ingest, a, "bob", "host rebuilt", T0 + 2).unwrap();
        let r = report(0);
        assert_eq!((r.incidents, r.closes_forced), (1, 1));
        assert_eq!(events(), last_seq(store.as_ref(), a) as usize);

        let b = log::open(&ingest, source("libb"), "alice", &[], T0 + 3)
            .unwrap()
            .id;
        let c = log::open(&ingest, source("libc"), "alice", &[], T0 + 4)
            .unwrap()
            .id;
        let (read, pages) = (events(), store.count.incident_pages());
        let r = report(0);
        assert_eq!(r.incidents, 3);
        assert_eq!(
            r.closes_forced, 1,
            "the oldest close is past the first page"
        );
        assert_eq!(
            store.count.incident_pages() - pages,
            2,
            "3 records, pages of 2"
        );
        assert_eq!(
            events() - read,
            (last_seq(store.as_ref(), b) + last_seq(store.as_ref(), c)) as usize,
            "only the new incidents' logs"
        );

        // Nothing appended: nothing read.
        let read = events();
        assert_eq!(report(0), r);
        assert_eq!(events(), read);

        // Another collector closes b on the same store.
        let other = Ingest::new(store.clone());
        let before = last_seq(store.as_ref(), b);
        force_close(&other, b, "carol", "false alarm", T0 + 5).unwrap();
        let r = report(0);
        assert_eq!((r.incidents, r.closes_forced, r.closed), (3, 2, 2));
        assert_eq!(
            events() - read,
            (last_seq(store.as_ref(), b) - before) as usize,
            "only b's events appended since"
        );
        assert_eq!(r, from_scratch(store.as_ref()));
        assert_eq!(r, Ledger::with_page(2).report(store.as_ref(), 0).unwrap());

        // `since` narrows the report, not what the ledger holds.
        let recent = report(T0 + 3);
        assert_eq!((recent.incidents, recent.closes_forced), (2, 1));
        assert_eq!(report(0), r);
    }
}
