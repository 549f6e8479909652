//! Incidents through the store: open one (its scope computed first, then
//! opened atomically under its dedup key), append checked events, refresh
//! the scopes of open incidents, and read incidents back with their logs.
//!
//! Writes go through `fleet::ingest::Ingest` (the one writer lock). Every
//! event is applied to the current projection before it is written, so
//! the log never holds an event that does not project; a writer that lost
//! a race (another event took its number) reads again and retries.

use tracing::warn;

use super::{
    Event, Incident, IncidentError, Recorded, Source, State, display_id,
    scope::{self, ScopeError},
};
use crate::{
    fleet::{ingest::Ingest, scope::Rule},
    store::{IncidentCache, IncidentRecord, Store, StoreError},
};

/// The actor of what the collector does by itself (scope refreshes).
pub const COLLECTOR: &str = "collector";

/// Events `show` returns at most; the answer says when there are more.
pub const MAX_EVENTS: usize = 1_000;

/// Open incidents one refresh pass looks at, at most.
pub const REFRESH_MAX: usize = 1_000;

/// Events read from the store at a time when a log is replayed.
const REPLAY_CHUNK: usize = 1_000;

/// How often a writer that lost a race tries again.
const RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// The event does not follow (an illegal transition, ...).
    #[error(transparent)]
    Refused(#[from] IncidentError),
    #[error("no incident is known as {0}")]
    NotFound(String),
    #[error("{0} changed while this was being written; try again")]
    Conflict(String),
    #[error("{id}: its log does not project")]
    Corrupt {
        id: String,
        #[source]
        source: IncidentError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A plan, approval or revert a responder can correct.
    #[error(transparent)]
    Act(#[from] super::act::ActError),
}

/// What `open` did: the incident, and whether this call opened it (false:
/// an open incident already held the dedup key).
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub id: i64,
    pub new: bool,
    pub incident: Incident,
}

/// An incident with (the first [`MAX_EVENTS`] of) its log.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub id: i64,
    pub incident: Incident,
    pub events: Vec<Recorded>,
    /// The log has more events than were returned.
    pub more_events: bool,
}

/// What one refresh pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Open incidents looked at.
    pub checked: usize,
    /// Those whose scope changed (a `scope_changed` event each).
    pub changed: usize,
    /// Those that could not be refreshed (logged).
    pub failed: usize,
}

fn numbered(first_seq: i64, at_ms: i64, actor: &str, events: Vec<Event>) -> Vec<Recorded> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Recorded {
            seq: first_seq + i as i64,
            at_ms,
            actor: actor.to_string(),
            event,
        })
        .collect()
}

fn encode(incident: &Incident) -> Vec<u8> {
    serde_json::to_vec(incident).expect("incidents serialize")
}

/// Opens an incident from `source` for `actor`: the scope is computed
/// (an advisory given by alias is resolved to its stored id first, so one
/// advisory has one dedup key), then the log `opened`, `scope_changed`,
/// `state_changed` (detected → scoped) is written, unless an open
/// incident holds the dedup key already: that one is returned, unchanged.
pub fn open(
    ingest: &Ingest,
    source: Source,
    actor: &str,
    rules: &[Rule],
    now_ms: i64,
) -> Result<Opened, LogError> {
    let store = ingest.store().as_ref();
    let source = match source {
        Source::Advisory { id, host, .. } => {
            let canonical = scope::advisory_ids(store, &id)?.swap_remove(0);
            Source::Advisory {
                asked_as: if canonical == id { String::new() } else { id },
                id: canonical,
                host,
            }
        }
        other => other,
    };
    let dedup_key = source.dedup_key();
    // Most second opens stop here, before any scope is computed.
    if let Some(rec) = store.open_incident_by_key(&dedup_key)? {
        return Ok(Opened {
            id: rec.id,
            new: false,
            incident: load(store, &rec)?,
        });
    }
    let scope = scope::compute(store, &source, rules)?;
    let mut events = vec![Event::Opened {
        source,
        dedup_key: dedup_key.clone(),
    }];
    events.extend(scope.change_from(&Default::default()));
    events.push(Event::StateChanged {
        from: State::Detected,
        to: State::Scoped,
        reason: format!(
            "{} process(es) on {} host(s)",
            scope.processes,
            scope.hosts.len()
        ),
    });
    let log = numbered(1, now_ms, actor, events);
    let incident = super::project(&log)?;
    let records: Vec<_> = log.iter().map(Recorded::to_record).collect();
    let projection = encode(&incident);
    let (rec, new) = ingest.open_incident(
        &dedup_key,
        now_ms,
        &records,
        &IncidentCache {
            state: incident.state.name(),
            open: incident.state.is_open(),
            projection: &projection,
        },
    )?;
    let incident = if new {
        incident
    } else {
        // Another open of the same key won the race.
        load(store, &rec)?
    };
    Ok(Opened {
        id: rec.id,
        new,
        incident,
    })
}

/// Appends the events `make` decides on, given the incident as it stands,
/// for `actor` at `now_ms`: checked against the projection first (an
/// illegal transition is `Refused` and nothing is written), retried when
/// another writer appended in between. `make` returning nothing writes
/// nothing. This is how later stages (the policy's tier, plans,
/// approvals, actions) add to an incident.
pub fn append(
    ingest: &Ingest,
    id: i64,
    actor: &str,
    now_ms: i64,
    mut make: impl FnMut(&Incident) -> Result<Vec<Event>, IncidentError>,
) -> Result<Incident, LogError> {
    let store = ingest.store().as_ref();
    for _ in 0..RETRIES {
        let rec = store
            .incident(id)?
            .ok_or_else(|| LogError::NotFound(display_id(id)))?;
        let current = load(store, &rec)?;
        let events = make(&current)?;
        if events.is_empty() {
            return Ok(current);
        }
        let log = numbered(current.last_seq + 1, now_ms, actor, events);
        let mut next = current.clone();
        for r in &log {
            next.apply(r)?;
        }
        let records: Vec<_> = log.iter().map(Recorded::to_record).collect();
        let projection = encode(&next);
        match ingest.append_incident_events(
            id,
            &records,
            &IncidentCache {
                state: next.state.name(),
                open: next.state.is_open(),
                projection: &projection,
            },
        ) {
            Ok(_) => return Ok(next),
            // Another writer took the number: read again.
            Err(StoreError::Invalid(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(LogError::Conflict(display_id(id)))
}

/// The incident a stored record stands for: its cached projection when
/// that decodes and is current, else its log replayed.
pub fn load(store: &dyn Store, rec: &IncidentRecord) -> Result<Incident, LogError> {
    if let Ok(i) = serde_json::from_slice::<Incident>(&rec.projection)
        && i.last_seq == rec.last_seq
    {
        return Ok(i);
    }
    replay(store, rec.id)
}

/// Projects an incident from its whole log, read in chunks.
pub fn replay(store: &dyn Store, id: i64) -> Result<Incident, LogError> {
    let corrupt = |source| LogError::Corrupt {
        id: display_id(id),
        source,
    };
    let mut incident: Option<Incident> = None;
    let mut after = 0;
    loop {
        let chunk = store.incident_events(id, after, REPLAY_CHUNK)?;
        for r in &chunk {
            let r = Recorded::from_record(r).map_err(corrupt)?;
            incident = Some(match incident.take() {
                None => Incident::start(&r).map_err(corrupt)?,
                Some(mut i) => {
                    i.apply(&r).map_err(corrupt)?;
                    i
                }
            });
        }
        match chunk.last() {
            Some(last) if chunk.len() == REPLAY_CHUNK => after = last.seq,
            _ => break,
        }
    }
    incident.ok_or_else(|| LogError::NotFound(display_id(id)))
}

/// One incident and the first `max_events` events of its log.
pub fn show(store: &dyn Store, id: i64, max_events: usize) -> Result<Shown, LogError> {
    let rec = store
        .incident(id)?
        .ok_or_else(|| LogError::NotFound(display_id(id)))?;
    let incident = load(store, &rec)?;
    let max = max_events.min(MAX_EVENTS);
    let records = store.incident_events(id, 0, max + 1)?;
    let more_events = records.len() > max;
    let events = records
        .iter()
        .take(max)
        .map(Recorded::from_record)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| LogError::Corrupt {
            id: display_id(id),
            source,
        })?;
    Ok(Shown {
        id,
        incident,
        events,
        more_events,
    })
}

/// Incidents newest first, below id `before` (None: from the newest), at
/// most `limit`.
pub fn list(
    store: &dyn Store,
    before: Option<i64>,
    open_only: bool,
    limit: usize,
) -> Result<Vec<(i64, Incident)>, LogError> {
    store
        .incidents(before, open_only, limit)?
        .iter()
        .map(|rec| -> Result<(i64, Incident), LogError> { Ok((rec.id, load(store, rec)?)) })
        .collect()
}

/// Recomputes the scope of every open incident (the newest
/// [`REFRESH_MAX`]) and appends `scope_changed` to those whose scope
/// differs. An incident whose advisory was deleted keeps its last scope;
/// one that fails (its log does not project, a store error) is logged and
/// counted, and the pass goes on.
pub fn refresh_open(ingest: &Ingest, rules: &[Rule], now_ms: i64) -> Result<Refreshed, LogError> {
    const PAGE: usize = 100;
    let store = ingest.store().as_ref();
    let mut out = Refreshed::default();
    let mut before = None;
    loop {
        let page = store.incidents(before, true, PAGE)?;
        for rec in &page {
            if out.checked >= REFRESH_MAX {
                return Ok(out);
            }
            out.checked += 1;
            let id = display_id(rec.id);
            let incident = match load(store, rec) {
                Ok(i) => i,
                Err(error) => {
                    warn!(%error, incident = %id, "cannot refresh the incident's scope");
                    out.failed += 1;
                    continue;
                }
            };
            let scope = match scope::compute(store, &incident.source, rules) {
                Ok(s) => s,
                // Nothing to recompute for this kind of source; or its
                // advisory was deleted, and the scope stays as the last
                // `scope_changed` says (no warning every pass).
                Err(
                    ScopeError::NoQuery(_)
                    | ScopeError::UnknownAdvisory(_)
                    | ScopeError::UnknownAlert(_),
                ) => continue,
                Err(error) => {
                    warn!(%error, incident = %id, "cannot refresh the incident's scope");
                    out.failed += 1;
                    continue;
                }
            };
            if scope == incident.scope {
                continue;
            }
            let appended = append(ingest, rec.id, COLLECTOR, now_ms, |current| {
                // Only while open: it may have closed in between.
                Ok(if current.state.is_open() {
                    scope.change_from(&current.scope).into_iter().collect()
                } else {
                    Vec::new()
                })
            });
            match appended {
                Ok(next) if next.last_seq > incident.last_seq => out.changed += 1,
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, incident = %id, "cannot record the incident's new scope");
                    out.failed += 1;
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE => before = Some(last.id),
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, sync::Arc};

    use super::*;
    use crate::store::{
        conformance::{T0, deb, delta, exe, hello, mapped, msg, process, snapshot},
        sqlite::SqliteStore,
    };

    fn with_libfoo(pid: u32, version: &str) -> patchgap_proto::v1::Process {
        process(
            pid,
            vec![
                exe("/usr/bin/app", 100, Some(deb("app", "app", "1.0-1"))),
                mapped(
                    "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
                    300 + u64::from(pid),
                    Some(deb("libfoo1", "foo", version)),
                ),
            ],
        )
    }

    fn pids(i: &Incident) -> Vec<u32> {
        i.scope
            .pids
            .get("alpha")
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default()
    }

    fn libfoo_below_2() -> Source {
        Source::Package {
            package: "libfoo1".into(),
            name: "libfoo1".into(),
            ecosystem: None,
            group: None,
            range: Some("<2".into()),
        }
    }

    /// Open, open again, refresh after the fleet changed, a refused
    /// transition, a false positive, and a new incident under the freed
    /// key: each step as the log and its projection show it.
    #[test]
    fn an_incident_opens_once_and_follows_its_exposure() {
        let ingest = Ingest::new(Arc::new(SqliteStore::in_memory().unwrap()));
        let session = ingest.hello(&hello("s1"), T0).unwrap();
        let snap = snapshot(
            "snap-1",
            vec![with_libfoo(10, "1.5-1"), with_libfoo(20, "2.1-1")],
            vec![],
        );
        ingest.apply(&session, &msg(1, snap), T0).unwrap();

        let a = open(&ingest, libfoo_below_2(), "alice", &[], T0 + 1).unwrap();
        assert!(a.new);
        assert_eq!(a.incident.state, State::Scoped);
        assert_eq!(a.incident.dedup_key, "package:libfoo1@<2");
        assert_eq!(pids(&a.incident), [10], "2.1-1 is outside the range");
        assert_eq!(
            a.incident.scope.hosts,
            BTreeSet::from(["alpha".to_string()])
        );
        assert_eq!(a.incident.scope.evidence, "mapped");
        assert_eq!(a.incident.scope.processes, 1);
        assert!(a.incident.scope.privileged, "pid 10 is privileged");
        assert_eq!(a.incident.opened_by, "alice");

        // Again: the same incident, nothing appended.
        let b = open(&ingest, libfoo_below_2(), "bob", &[], T0 + 2).unwrap();
        assert!(!b.new);
        assert_eq!((b.id, &b.incident), (a.id, &a.incident));

        // Nothing changed: a refresh appends nothing.
        let r = refresh_open(&ingest, &[], T0 + 3).unwrap();
        assert_eq!(
            r,
            Refreshed {
                checked: 1,
                changed: 0,
                failed: 0
            }
        );
        // A new exposed process and the old one gone: one scope_changed
        // with both sides of the diff.
        let d = delta(vec![with_libfoo(30, "1.9-1")], &[10], vec![]);
        ingest.apply(&session, &msg(2, d), T0 + 4).unwrap();
        let r = refresh_open(&ingest, &[], T0 + 5).unwrap();
        assert_eq!((r.checked, r.changed, r.failed), (1, 1, 0));
        assert_eq!(refresh_open(&ingest, &[], T0 + 6).unwrap().changed, 0);
        let shown = show(ingest.store().as_ref(), a.id, MAX_EVENTS).unwrap();
        assert_eq!(pids(&shown.incident), [30]);
        let kinds: Vec<&str> = shown.events.iter().map(|e| e.event.kind()).collect();
        assert_eq!(
            kinds,
            ["opened", "scope_changed", "state_changed", "scope_changed"]
        );
        let last = &shown.events[3];
        assert_eq!((last.actor.as_str(), last.at_ms), (COLLECTOR, T0 + 5));
        match &last.event {
            Event::ScopeChanged { added, removed, .. } => {
                assert_eq!(added.pids["alpha"], BTreeSet::from([30]));
                assert_eq!(removed.pids["alpha"], BTreeSet::from([10]));
            }
            e => panic!("{e:?}"),
        }
        // The projection of the stored log is the cached incident.
        assert_eq!(
            replay(ingest.store().as_ref(), a.id).unwrap(),
            shown.incident
        );
        assert!(!shown.more_events);
        assert_eq!(
            show(ingest.store().as_ref(), a.id, 2).unwrap().events.len(),
            2
        );

        // An illegal transition is refused and writes nothing.
        let refused = append(&ingest, a.id, "alice", T0 + 7, |i| {
            Ok(vec![i.transition(State::Closed, "done")?])
        });
        assert!(matches!(
            refused,
            Err(LogError::Refused(IncidentError::IllegalTransition { .. }))
        ));
        let fp = append(&ingest, a.id, "alice", T0 + 8, |i| {
            Ok(vec![i.transition(State::FalsePositive, "not loaded")?])
        })
        .unwrap();
        assert_eq!((fp.state, fp.last_seq), (State::FalsePositive, 5));
        // A finished incident is not refreshed, and frees its key.
        let d = delta(vec![with_libfoo(40, "1.0-1")], &[], vec![]);
        ingest.apply(&session, &msg(3, d), T0 + 9).unwrap();
        assert_eq!(refresh_open(&ingest, &[], T0 + 10).unwrap().checked, 0);
        let c = open(&ingest, libfoo_below_2(), "alice", &[], T0 + 11).unwrap();
        assert!(c.new && c.id != a.id);
        assert_eq!(pids(&c.incident), [30, 40]);
        let listed = list(ingest.store().as_ref(), None, false, 10).unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|(id, i)| (*id, i.state))
                .collect::<Vec<_>>(),
            [(c.id, State::Scoped), (a.id, State::FalsePositive)]
        );
        assert!(matches!(
            show(ingest.store().as_ref(), 999, 10),
            Err(LogError::NotFound(_))
        ));
    }

    #[test]
    fn an_unknown_advisory_opens_nothing() {
        let ingest = Ingest::new(Arc::new(SqliteStore::in_memory().unwrap()));
        let err = open(
            &ingest,
            Source::Advisory {
                id: "CVE-1999-0001".into(),
                asked_as: String::new(),
                host: None,
            },
            "alice",
            &[],
            T0,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("no advisory is known as CVE-1999-0001"),
            "{err}"
        );
        assert!(
            list(ingest.store().as_ref(), None, false, 10)
                .unwrap()
                .is_empty()
        );
    }
}
