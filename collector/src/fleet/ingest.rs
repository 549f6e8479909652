//! Every path that writes the runtime truth: agent messages, advisory
//! imports and SBOM pushes. Each one stores, then runs the matching pass
//! over what it stored, in one place, so a new write path cannot forget
//! the matcher ("every path that stores packages or advisories runs it
//! before answering").
//!
//! Writers are serialized here: the matcher reads candidates and then
//! records verdicts under one lock. Readers never take it; the store
//! serves them beside the writer. On a backend that stores several
//! messages at once (PostgreSQL, `Store::parallel_writes`), an agent
//! message's store write runs under its host's slot only, beside other
//! hosts' writes, as several collectors' writes already run; its matching
//! pass and egress judgement then take the lock. A pass records verdicts
//! for the package ids it read, so a write committed during it is not
//! marked matched without them (`parallel_writes_on_postgres_store_and_match_everything`
//! fails without that).
//!
//! Incidents write through here too (`open_incident`,
//! `append_incident_events`), so every write takes the one writer lock,
//! and every write that can change an exposure wakes the incident
//! refresher (`changed`).
//!
//! Unexpected egress runs here too: after an agent message with
//! connections commits, `egress::stage` judges them under the same lock
//! and writes its baselines and alerts through the store it is handed.
//! The stage caches process facts across messages, so this module tells it
//! first of every write that can change them (`Stage::before_write` before
//! an agent message is stored, `Stage::forget_chains` on a Hello).
//!
//! **Invariant:** `Store`'s write methods are called from this module only
//! (and from `egress::stage`, which this module calls under its lock, the
//! conformance suite, and `retention`, whose deletes touch only history
//! that ended before its horizon, which no agent message writes); executors
//! of later stages never run while its lock is held.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use patchgap_proto::v1;
use tracing::{info, warn};

use crate::{
    advisories::matching::{self, Pass},
    store::{
        AdvisoryRecord, IncidentCache, IncidentEventRecord, IncidentRecord, MatchScope, PutOutcome,
        Result, SbomRecord, Session, Store,
    },
};

/// How many pending advisories one matching pass takes: each pass's
/// verdicts are one transaction, and its candidates bound its memory.
pub const PENDING_CHUNK: usize = 1000;

/// The write side of the runtime truth.
pub struct Ingest {
    store: Arc<dyn Store>,
    /// Held for a write and its matching pass.
    writing: Mutex<()>,
    /// On a backend that stores several messages at once
    /// (`Store::parallel_writes` > 1): a host's messages take the slot its
    /// id picks, so they stay one at a time while other hosts' are stored
    /// beside them.
    slots: Vec<Mutex<()>>,
    /// Notified after every write that can change what is exposed (agent
    /// messages, advisory imports and deletes, SBOM pushes): the incident
    /// refresher waits on it beside its timer. Notifications coalesce.
    changed: tokio::sync::Notify,
    /// The unexpected-egress stage and the data-scope mapping it reads,
    /// once the collector attached them.
    /// From an agent's scan to the commit of its delta (`/metrics`).
    lag: super::lag::IngestLag,
    /// How long agent messages hold the writer, for the retry times of
    /// the messages ingest refuses.
    pacer: super::pacing::Pacer,
    egress: OnceLock<(
        Arc<crate::egress::stage::Stage>,
        Arc<Mutex<crate::ScopeMap>>,
    )>,
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
        let slots = (0..store.parallel_writes().max(1))
            .map(|_| Mutex::new(()))
            .collect();
        Ingest {
            store,
            writing: Mutex::new(()),
            slots,
            changed: tokio::sync::Notify::new(),
            lag: Default::default(),
            pacer: Default::default(),
            egress: OnceLock::new(),
        }
    }

    /// Judges the connections of every agent message from now on (see
    /// `egress::stage`). Once; a second call is ignored.
    pub fn attach_egress(
        &self,
        stage: Arc<crate::egress::stage::Stage>,
        scope: Arc<Mutex<crate::ScopeMap>>,
    ) {
        // Chains it may have cached came from writes it was not told of.
        stage.forget_chains();
        let _ = self.egress.set((stage, scope));
    }

    /// The egress stage, when attached.
    pub fn egress(&self) -> Option<&Arc<crate::egress::stage::Stage>> {
        self.egress.get().map(|(s, _)| s)
    }

    /// Resolves quiet egress alerts under the writer lock.
    pub fn resolve_egress(&self, now_ms: i64) -> Result<Vec<crate::egress::alert::Alert>> {
        let Some((stage, _)) = self.egress.get() else {
            return Ok(Vec::new());
        };
        let _w = self.lock();
        stage.resolve_quiet(self.store.as_ref(), now_ms)
    }

    /// When a refused agent message should be sent again (see
    /// `fleet::pacing`).
    pub fn pacer(&self) -> &super::pacing::Pacer {
        &self.pacer
    }

    /// The delta ingest lag so far.
    pub fn lag(&self) -> super::lag::LagSnapshot {
        self.lag.snapshot()
    }

    /// Wakes whoever waits for exposures to change (the incident
    /// refresher): one stored permit, so a burst of writes wakes it once.
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// Opens an incident (see [`Store::open_incident`]) under the writer
    /// lock.
    pub fn open_incident(
        &self,
        dedup_key: &str,
        created_ms: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<(IncidentRecord, bool)> {
        let _w = self.lock();
        self.store
            .open_incident(dedup_key, created_ms, events, cache)
    }

    /// Appends to an incident's log (see [`Store::append_incident_events`])
    /// under the writer lock.
    pub fn append_incident_events(
        &self,
        id: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<IncidentRecord> {
        let _w = self.lock();
        self.store.append_incident_events(id, events, cache)
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Matches packages stored but not matched yet, and advisories stored
    /// without their verdicts: a crash between a write and its pass, or a
    /// database from before schema 8 (packages) or 14 (advisories). Runs
    /// at start, before anything is served, so the store never serves an
    /// advisory whose matching a crash left undone.
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
        let pending = self.match_pending()?;
        if pending.candidates > 0 {
            info!(
                candidates = pending.candidates,
                matches = pending.matches,
                "matched advisories stored without verdicts"
            );
        }
        Ok(Pass {
            candidates: pass.candidates + pending.candidates,
            matches: pass.matches + pending.matches,
        })
    }

    /// Matches every pending advisory (stored, or marked by a delete, and
    /// not matched since), with the advisories sharing an alias with it,
    /// in chunks of [`PENDING_CHUNK`]: each chunk's verdicts and the
    /// clearing of its marks are one transaction. The caller holds the
    /// lock.
    fn match_pending(&self) -> Result<Pass> {
        let store = self.store.as_ref();
        let mut total = Pass::default();
        let mut last: Vec<String> = Vec::new();
        loop {
            let ids = store.pending_advisories(PENDING_CHUNK)?;
            if ids.is_empty() {
                return Ok(total);
            }
            if ids == last {
                // put_matches clears the marks it matched; a mark that
                // stays is a store that does not keep its contract.
                return Err(crate::store::StoreError::backend(std::io::Error::other(
                    format!("advisory {} stays pending after its matching pass", ids[0]),
                )));
            }
            let records: Vec<AdvisoryRecord> = ids
                .iter()
                .map(|id| store.advisory(id))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .filter(|r| ids.contains(&r.id))
                .collect();
            let mut scope = matching::related(store, &records)?;
            scope.extend(ids.iter().cloned());
            scope.sort();
            scope.dedup();
            let pass = matching::refresh(store, &MatchScope::Advisories(scope))?;
            total.candidates += pass.candidates;
            total.matches += pass.matches;
            last = ids;
        }
    }

    /// Registers an agent's Hello.
    pub fn hello(&self, hello: &v1::Hello, now_ms: i64) -> Result<Session> {
        let _w = self.lock();
        self.forget_egress_chains();
        self.store.hello(hello, now_ms)
    }

    /// Registers the Hello of an agent whose certificate names `cert_host`,
    /// or says why it may not speak for the host it names (`Ok(Err(reason))`):
    /// its host name must be the certificate's, and the key it names (its
    /// machine-id) must not already belong to a host of another name. Checked
    /// and registered under the write lock, so two streams cannot race.
    pub fn hello_bound(
        &self,
        hello: &v1::Hello,
        cert_host: &str,
        now_ms: i64,
    ) -> Result<std::result::Result<Session, String>> {
        let _w = self.lock();
        let id = hello.host.clone().unwrap_or_default();
        if id.hostname != cert_host {
            return Ok(Err(format!(
                "the certificate is for host {cert_host:?}, the Hello names {:?}",
                id.hostname
            )));
        }
        let key = crate::fleet::coverage::host_key(&id);
        // One indexed row, not every host: each Hello of an mTLS fleet
        // asks, 10,000 of them after a collector restart.
        if let Some(other) = self
            .store
            .hostname_of_key(key)?
            .filter(|name| name != cert_host)
        {
            return Ok(Err(format!(
                "host id {key:?} belongs to host {other:?}, not to {cert_host:?}"
            )));
        }
        self.forget_egress_chains();
        self.store.hello(hello, now_ms).map(Ok)
    }

    /// Stores one agent message durably, then matches its new packages
    /// against the stored advisories (one indexed query when nothing is
    /// new). The result means the message is committed: a failed pass
    /// leaves the packages unmatched, is logged, and the next write's pass
    /// retries (a heartbeat runs none), so an ack never waits on the
    /// matcher.
    ///
    /// On a backend that stores several messages at once, the store write
    /// runs under the host's slot only, beside other hosts' writes (as
    /// several collectors' do), and the matching pass and the egress
    /// judgement then take the writer lock: a pass records verdicts for
    /// the package ids it read, so a write committed during it keeps its
    /// packages unmatched for its own pass. The host's slot is held to the
    /// end, so its cached process facts are forgotten, written and judged
    /// in order.
    pub fn apply(&self, session: &Session, msg: &v1::AgentMessage, now_ms: i64) -> Result<()> {
        let parallel = self.slots.len() > 1;
        let (_slot, mut writer) = if parallel {
            let slot = self.slots[session.host.unsigned_abs() as usize % self.slots.len()]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            (Some(slot), None)
        } else {
            (None, Some(self.lock()))
        };
        let started = std::time::Instant::now();
        if let Some((stage, _)) = self.egress.get() {
            // Before the write: a judgement never caches the old record.
            stage.before_write(session.host, msg);
        }
        self.store.apply(session, msg, now_ms)?;
        // The pacing is by throughput: writes overlap on such a backend.
        self.pacer
            .wrote(started.elapsed().as_secs_f64() * 1000.0 / self.slots.len() as f64);
        use v1::agent_message::Body;
        if let Some(Body::Delta(d)) = &msg.body {
            self.lag.observe(d.scanned_at_ms, now_ms);
        }
        // A heartbeat brings no package and no connection: no pass, no
        // judgement, and on a parallel backend not even the writer lock
        // (heartbeats are most of a fleet's messages). It can still make
        // a host fresh, so the refresher is woken.
        if matches!(msg.body, Some(Body::Heartbeat(_))) {
            self.changed.notify_one();
            return Ok(());
        }
        if writer.is_none() {
            writer = Some(self.lock());
        }
        debug_assert!(writer.is_some(), "matched and judged under the writer lock");
        self.match_new("new packages");
        self.judge_egress(session, msg, now_ms);
        self.changed.notify_one();
        Ok(())
    }

    /// Heartbeats of different hosts, written together
    /// (`Store::apply_heartbeats`): a result per heartbeat, in order. A
    /// heartbeat brings no package and no connection, so no pass and no
    /// judgement; on a backend without parallel writes the writer lock
    /// is held as for any message. Fresher hosts wake the refresher.
    pub fn heartbeats(
        &self,
        beats: &[(Session, v1::AgentMessage)],
        now_ms: i64,
    ) -> Vec<Result<()>> {
        let _writer = (self.slots.len() <= 1).then(|| self.lock());
        let results = self.store.apply_heartbeats(beats, now_ms);
        self.changed.notify_one();
        results
    }

    /// Stores advisories, then matches what changed (and the advisories
    /// that share an alias with it) against every package: the answer
    /// means the findings are complete. `replace`: see
    /// [`Store::put_advisories`]. The records are stored pending in one
    /// transaction and the pass clears the marks with the verdicts, so a
    /// crash in between leaves them for the start-up pass (and the next
    /// import's), even when that import finds them unchanged.
    pub fn import_advisories(&self, records: &[AdvisoryRecord], replace: bool) -> Result<Imported> {
        let _w = self.lock();
        let outcomes = self.store.put_advisories(records, replace)?;
        let pass = self.match_pending()?;
        self.changed.notify_one();
        Ok(Imported { outcomes, pass })
    }

    /// Removes one advisory (by id) with its verdicts, then matches again
    /// the advisories that shared an alias with it (a distribution's
    /// record is judged beside the upstream one). The removed record, or
    /// `None` when no advisory has this id.
    pub fn delete_advisory(&self, id: &str) -> Result<Option<(AdvisoryRecord, Pass)>> {
        let _w = self.lock();
        let Some(stored) = self.store.advisory(id)?.into_iter().find(|a| a.id == id) else {
            return Ok(None);
        };
        let mut ids = matching::related(self.store.as_ref(), std::slice::from_ref(&stored))?;
        ids.retain(|x| x != id);
        // Those are marked pending with the delete, in its transaction.
        let Some(removed) = self.store.delete_advisory(id, &ids)? else {
            return Ok(None);
        };
        let pass = self.match_pending()?;
        self.changed.notify_one();
        Ok(Some((removed, pass)))
    }

    /// Attaches an SBOM to its image, then matches its packages. Stored
    /// either way: a failed pass leaves them unmatched for the next one.
    pub fn push_sbom(&self, record: &SbomRecord) -> Result<PutOutcome> {
        let _w = self.lock();
        let outcome = self.store.put_sbom(record)?;
        self.match_new("the SBOM's packages");
        self.changed.notify_one();
        Ok(outcome)
    }

    /// A Hello may change a host's identity or labels, or start a new
    /// boot that reuses process keys: the egress stage reads chains anew.
    fn forget_egress_chains(&self) {
        if let Some((stage, _)) = self.egress.get() {
            stage.forget_chains();
        }
    }

    /// The egress verdicts on a committed message's connections; the
    /// caller holds the lock. A failure is logged: the message is stored
    /// either way, and the ack must not wait on the verdict.
    fn judge_egress(&self, session: &Session, msg: &v1::AgentMessage, now_ms: i64) {
        let Some((stage, scope)) = self.egress.get() else {
            return;
        };
        let Some(v1::agent_message::Body::Delta(delta)) = &msg.body else {
            return;
        };
        if delta.connections.is_empty() {
            return;
        }
        let rules = {
            let mut scope = scope.lock().unwrap_or_else(|e| e.into_inner());
            scope.refresh();
            scope.rules().to_vec()
        };
        if let Err(e) = stage.on_connections(
            self.store.as_ref(),
            session,
            &delta.connections,
            &rules,
            now_ms,
        ) {
            warn!(error = %e.chain(), "egress verdicts failed for this message");
        }
    }

    /// The unmatched packages' pass; the caller holds the lock.
    fn match_new(&self, what: &str) {
        if let Err(e) = matching::refresh(self.store.as_ref(), &MatchScope::Unmatched) {
            warn!(error = %e.chain(), what, "matching failed; the next write retries");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        SqliteStore,
        store::{DeclaredPackage, MatchScope},
    };

    fn unmatched(ingest: &Ingest) -> usize {
        ingest
            .store()
            .match_candidates(&MatchScope::Unmatched)
            .unwrap()
            .scope_size
    }

    /// `n` PyPI advisories PYSEC-0000-i, the ith naming `package(i)` 1.0.
    fn pysec(n: usize, package: impl Fn(usize) -> String) -> Vec<AdvisoryRecord> {
        let files: Vec<v1::AdvisoryFile> = (0..n)
            .map(|i| {
                let doc = serde_json::json!({
                    "id": format!("PYSEC-0000-{i}"),
                    "modified": "2024-01-01T00:00:00Z",
                    "affected": [{"package": {"ecosystem": "PyPI", "name": package(i)},
                                  "versions": ["1.0"]}],
                });
                v1::AdvisoryFile {
                    name: format!("PYSEC-0000-{i}.json"),
                    data: doc.to_string().into_bytes(),
                }
            })
            .collect();
        let (records, errors) = crate::advisories::records::parse_files(&files);
        assert!(errors.is_empty(), "{errors:?}");
        records
    }

    /// Every write path leaves nothing unmatched: the matcher runs in the
    /// one place, whichever path stored the packages.
    #[test]
    fn every_write_path_matches_what_it_stored() {
        let ingest = Ingest::new(Arc::new(SqliteStore::in_memory().unwrap()));
        let package = |name: &str| v1::Package {
            ecosystem: "pypi".into(),
            name: name.into(),
            version: "1.0".into(),
            purl: format!("pkg:pypi/{name}@1.0"),
            ..Default::default()
        };
        let sbom = SbomRecord {
            image: format!("sha256:{}", "3".repeat(64)),
            sha256: "x".into(),
            packages: vec![DeclaredPackage {
                package: package("alpha"),
                ..Default::default()
            }],
            ..Default::default()
        };
        ingest.push_sbom(&sbom).unwrap();
        assert_eq!(unmatched(&ingest), 0, "after an SBOM push");

        let hello = v1::Hello {
            host: Some(v1::HostIdentity {
                host_id: "m1".into(),
                hostname: "h1".into(),
                ..Default::default()
            }),
            session_id: "s1".into(),
            ..Default::default()
        };
        let session = ingest.hello(&hello, 1).unwrap();
        let process = v1::Process {
            key: Some(v1::ProcessKey {
                pid: 10,
                start_ticks: 1,
            }),
            artifacts: vec![v1::Artifact {
                path: b"/venv/lib/beta/__init__.py".to_vec(),
                kind: v1::ArtifactKind::Opened as i32,
                package: Some(package("beta")),
                ..Default::default()
            }],
            ..Default::default()
        };
        let msg = v1::AgentMessage {
            seq: 1,
            body: Some(v1::agent_message::Body::Snapshot(v1::Snapshot {
                snapshot_id: "snap".into(),
                processes: vec![process],
                last: true,
                ..Default::default()
            })),
        };
        ingest.apply(&session, &msg, 2).unwrap();
        assert_eq!(unmatched(&ingest), 0, "after an agent message");

        let doc = serde_json::json!({
            "id": "PYSEC-0000-1",
            "modified": "2024-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "PyPI", "name": "beta"}, "versions": ["1.0"]}],
        });
        let (records, errors) = crate::advisories::records::parse_files(&[v1::AdvisoryFile {
            name: "PYSEC-0000-1.json".into(),
            data: doc.to_string().into_bytes(),
        }]);
        assert!(errors.is_empty(), "{errors:?}");
        let imported = ingest.import_advisories(&records, false).unwrap();
        assert_eq!(imported.outcomes, vec![PutOutcome::Added]);
        assert_eq!(imported.pass.matches, 1, "the import matched beta 1.0");
    }

    /// On PostgreSQL, hosts' messages are stored in parallel: 16 hosts on
    /// 16 threads, each bringing its own new package that an advisory
    /// names, all stored, every package matched (none marked matched by
    /// another host's pass without its verdict), each host's sequence
    /// acked in order.
    #[test]
    fn parallel_writes_on_postgres_store_and_match_everything() {
        use crate::store::postgres::{PgStore, PgTarget, harness::Cluster};
        let Some(cluster) = Cluster::shared() else {
            eprintln!("skipped: no PostgreSQL here");
            return;
        };
        let db = cluster.database();
        let store = PgStore::connect(&PgTarget::new(&db.url()).unwrap()).unwrap();
        assert!(store.parallel_writes() > 1);
        let ingest = Arc::new(Ingest::new(Arc::new(store)));
        const HOSTS: usize = 16;
        let records = pysec(HOSTS, |i| format!("pkg{i}"));
        ingest.import_advisories(&records, false).unwrap();
        let threads: Vec<_> = (0..HOSTS)
            .map(|i| {
                let ingest = ingest.clone();
                std::thread::spawn(move || {
                    let hello = v1::Hello {
                        host: Some(v1::HostIdentity {
                            host_id: format!("m{i}"),
                            hostname: format!("h{i}"),
                            ..Default::default()
                        }),
                        session_id: format!("s{i}"),
                        ..Default::default()
                    };
                    let session = ingest.hello(&hello, 1).unwrap();
                    for seq in 1..=5u64 {
                        let process = v1::Process {
                            key: Some(v1::ProcessKey {
                                pid: 10 + seq as u32,
                                start_ticks: seq,
                            }),
                            artifacts: vec![v1::Artifact {
                                path: format!("/venv/lib/pkg{i}/__init__.py").into_bytes(),
                                kind: v1::ArtifactKind::Opened as i32,
                                package: Some(v1::Package {
                                    ecosystem: "pypi".into(),
                                    name: format!("pkg{i}"),
                                    version: "1.0".into(),
                                    purl: format!("pkg:pypi/pkg{i}@1.0"),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        };
                        let body = if seq == 1 {
                            v1::agent_message::Body::Snapshot(v1::Snapshot {
                                snapshot_id: format!("snap{i}"),
                                processes: vec![process],
                                last: true,
                                ..Default::default()
                            })
                        } else {
                            v1::agent_message::Body::Delta(v1::Delta {
                                upserts: vec![process],
                                ..Default::default()
                            })
                        };
                        let msg = v1::AgentMessage {
                            seq,
                            body: Some(body),
                        };
                        ingest.apply(&session, &msg, 2).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(unmatched(&ingest), 0);
        let hosts = ingest.store().hosts().unwrap();
        assert_eq!(hosts.len(), HOSTS);
        assert!(hosts.iter().all(|h| h.processes_running == 5), "{hosts:?}");
        let verdicts = ingest.store().verdicts(None, false).unwrap();
        assert_eq!(
            verdicts.len(),
            HOSTS,
            "one affected verdict per host's package"
        );
    }

    /// An import that stored its records and died before its pass (the
    /// store's put without the matcher, as a kill -9 leaves it) is matched
    /// by the start-up pass, and a re-import that finds the records
    /// unchanged matches them too.
    #[test]
    fn advisories_stored_without_verdicts_are_matched_at_start_and_on_reimport() {
        let ingest = Ingest::new(Arc::new(SqliteStore::in_memory().unwrap()));
        let sbom = SbomRecord {
            image: format!("sha256:{}", "5".repeat(64)),
            sha256: "z".into(),
            packages: vec![DeclaredPackage {
                package: v1::Package {
                    ecosystem: "pypi".into(),
                    name: "beta".into(),
                    version: "1.0".into(),
                    purl: "pkg:pypi/beta@1.0".into(),
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        };
        ingest.push_sbom(&sbom).unwrap();
        let records = pysec(2500, |_| "beta".to_string());
        let affected = |ingest: &Ingest| ingest.store().verdicts(None, false).unwrap().len();
        // The crash: stored, never matched.
        ingest.store().put_advisories(&records, false).unwrap();
        assert_eq!(affected(&ingest), 0);
        assert_eq!(
            ingest.store().pending_advisories(usize::MAX).unwrap().len(),
            2500
        );
        let pass = ingest.match_unmatched().unwrap();
        assert_eq!(pass.matches, 2500, "in chunks of {PENDING_CHUNK}");
        assert_eq!(affected(&ingest), 2500);
        assert!(ingest.store().pending_advisories(1).unwrap().is_empty());

        // The same crash, then a re-import that finds everything unchanged.
        let ingest = Ingest::new(Arc::new(SqliteStore::in_memory().unwrap()));
        ingest.push_sbom(&sbom).unwrap();
        ingest
            .store()
            .put_advisories(&records[..10], false)
            .unwrap();
        let again = ingest.import_advisories(&records[..10], false).unwrap();
        assert!(again.outcomes.iter().all(|o| *o == PutOutcome::Unchanged));
        assert_eq!(again.pass.matches, 10);
        assert_eq!(affected(&ingest), 10);
    }

    /// A delete takes the advisory's verdicts with it, and an import with
    /// `replace` restores a record whose id another source holds.
    #[test]
    fn delete_and_replace_rematch() {
        let ingest = Ingest::new(Arc::new(SqliteStore::in_memory().unwrap()));
        let sbom = SbomRecord {
            image: format!("sha256:{}", "4".repeat(64)),
            sha256: "y".into(),
            packages: vec![DeclaredPackage {
                package: v1::Package {
                    ecosystem: "pypi".into(),
                    name: "beta".into(),
                    version: "1.0".into(),
                    purl: "pkg:pypi/beta@1.0".into(),
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        };
        ingest.push_sbom(&sbom).unwrap();
        let record = |modified: &str, versions: &[&str], source: &str| {
            let doc = serde_json::json!({
                "id": "PYSEC-0000-2",
                "modified": modified,
                "affected": [{"package": {"ecosystem": "PyPI", "name": "beta"}, "versions": versions}],
            });
            let (mut records, errors) =
                crate::advisories::records::parse_files(&[v1::AdvisoryFile {
                    name: "PYSEC-0000-2.json".into(),
                    data: doc.to_string().into_bytes(),
                }]);
            assert!(errors.is_empty(), "{errors:?}");
            records[0].provenance.source = source.into();
            records
        };
        let affected = |ingest: &Ingest| ingest.store().verdicts(None, false).unwrap().len();
        let genuine = record("2024-01-01T00:00:00Z", &["1.0"], "osv");
        ingest.import_advisories(&genuine, false).unwrap();
        assert_eq!(affected(&ingest), 1);
        let forged = record("2099-01-01T00:00:00Z", &[], "mirror");
        let refused = ingest.import_advisories(&forged, false).unwrap();
        assert_eq!(refused.outcomes, [PutOutcome::OtherSource]);
        assert_eq!(affected(&ingest), 1);
        ingest.import_advisories(&forged, true).unwrap();
        assert_eq!(affected(&ingest), 0, "the forgery hides it");
        let restored = ingest.import_advisories(&genuine, true).unwrap();
        assert_eq!(restored.outcomes, [PutOutcome::Updated]);
        assert_eq!(affected(&ingest), 1, "replace restores it");
        let (removed, _) = ingest.delete_advisory("PYSEC-0000-2").unwrap().unwrap();
        assert_eq!(removed.provenance.source, "osv");
        assert_eq!(affected(&ingest), 0);
        assert!(ingest.delete_advisory("PYSEC-0000-2").unwrap().is_none());
    }
}
