//! The audit log: every query and every mutating call, appended to a hash
//! chain in the store, with checkpoints signed by the collector's key.
//!
//! Each entry's `hash` is SHA-256 over a canonical encoding of its fields
//! and the previous entry's hash (see [`entry_hash`]); the order of the log
//! is the chain, and `seq` only names positions. An edited entry no longer
//! matches its own hash; a deleted one leaves a gap in `seq` or a link
//! that points nowhere; a moved one links to an entry that is not its
//! predecessor. Rewriting the chain from an entry onwards is caught by
//! the next signed checkpoint, which needs the collector's key.
//!
//! **Invariant:** the log is written only here, one entry per store call,
//! never inside another store transaction, and nothing updates or deletes
//! an entry (the store offers no such method). This module knows nothing
//! of tonic: `api` hands it plain [`Event`]s.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use patchgap_proto::time::now_ms;
use sha2::{Digest, Sha256};
use tracing::debug;

use crate::{
    auth::{SigningKey, hex},
    store::{AUDIT_GENESIS, AuditCheckpoint, AuditEntry, Result, Store, StoreError},
};

/// One call, as the api layer describes it.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub subject: String,
    pub scopes: String,
    pub peer: String,
    pub method: String,
    /// The arguments, with secrets left out.
    pub args: String,
    pub result: String,
}

/// When a checkpoint is signed: after this many entries, or when this long
/// has passed since the last one (checked at each append).
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    pub entries: i64,
    pub interval: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            entries: 100,
            interval: Duration::from_secs(60),
        }
    }
}

/// How long one entry is tried again while other writers (collectors
/// sharing one PostgreSQL) keep moving the stored head between our read
/// of it and our append. Each lost try is another writer's success, so
/// this only runs out when the log is written far faster than usual.
const APPEND_RETRY: Duration = Duration::from_secs(5);

/// The log's writer. Appends are serialized by its mutex, so the chain
/// never forks; the store checks again that each entry extends it.
pub struct AuditLog {
    store: Arc<dyn Store>,
    key: Arc<SigningKey>,
    policy: CheckpointPolicy,
    state: Mutex<State>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

struct State {
    /// The last entry written, or none yet: (seq, hash).
    head: Option<(i64, String)>,
    /// The last checkpoint's seq and when it was signed.
    checkpoint_seq: i64,
    checkpoint_ms: i64,
}

impl AuditLog {
    pub fn open(
        store: Arc<dyn Store>,
        key: Arc<SigningKey>,
        policy: CheckpointPolicy,
    ) -> Result<AuditLog> {
        let head = store.audit_head()?;
        let last = store.audit_checkpoints()?.pop();
        let state = State {
            head,
            checkpoint_seq: last.as_ref().map_or(0, |c| c.seq),
            checkpoint_ms: last.map_or_else(now_ms, |c| c.time_ms),
        };
        Ok(AuditLog {
            store,
            key,
            policy,
            state: Mutex::new(state),
        })
    }

    /// Appends one entry (blocking: call it off the async workers), and a
    /// signed checkpoint when one is due.
    pub fn record(&self, event: Event) -> Result<i64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut entry = AuditEntry {
            seq: 0,
            time_ms: now_ms(),
            subject: event.subject,
            scopes: event.scopes,
            peer: event.peer,
            method: event.method,
            args: event.args,
            result: event.result,
            prev_hash: String::new(),
            hash: String::new(),
        };
        let mut append = |head: &Option<(i64, String)>| {
            let (seq, prev) = head.clone().unwrap_or((0, AUDIT_GENESIS.to_string()));
            entry.seq = seq + 1;
            entry.prev_hash = prev;
            entry.hash = entry_hash(&entry);
            self.store.append_audit(&entry)
        };
        let give_up = Instant::now() + APPEND_RETRY;
        while let Err(e) = append(&state.head) {
            // The stored log moved under us: another collector on the same
            // database appended (routine with several collectors), or
            // someone edited the file. Continue from what is stored; the
            // verifier reports any damage. A failure that left the stored
            // head where we thought it was is not a race: it is returned.
            let stored = self.store.audit_head()?;
            if stored == state.head || Instant::now() >= give_up {
                return Err(e);
            }
            debug!(error = %e.chain(), "the audit log moved on; appending after its new head");
            state.head = stored;
        }
        state.head = Some((entry.seq, entry.hash.clone()));
        let due = entry.seq - state.checkpoint_seq >= self.policy.entries
            || entry.time_ms - state.checkpoint_ms >= self.policy.interval.as_millis() as i64;
        if due {
            self.checkpoint(&mut state, entry.seq, &entry.hash)?;
        }
        Ok(entry.seq)
    }

    fn checkpoint(&self, state: &mut State, seq: i64, hash: &str) -> Result<()> {
        let time_ms = now_ms();
        let signature = self
            .key
            .sign_bytes(&checkpoint_payload(seq, hash, time_ms))
            .map_err(|e| StoreError::Invalid(format!("signing an audit checkpoint: {e}")))?;
        self.store.append_audit_checkpoint(&AuditCheckpoint {
            seq,
            hash: hash.to_string(),
            time_ms,
            signature,
        })?;
        state.checkpoint_seq = seq;
        state.checkpoint_ms = time_ms;
        Ok(())
    }

    /// Signs a checkpoint of the current head now, if it has none yet
    /// (at shutdown, and before a verify).
    pub fn checkpoint_now(&self) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.head.clone() {
            Some((seq, hash)) if seq > state.checkpoint_seq => {
                self.checkpoint(&mut state, seq, &hash)
            }
            _ => Ok(()),
        }
    }

    /// Recomputes the chain and the checkpoints' signatures.
    pub fn verify(&self) -> Result<Report> {
        // Entries appended while this runs are simply not looked at.
        let checkpoints = self.store.audit_checkpoints()?;
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.audit_entries(after, i64::MIN, 10_000)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            entries.extend(page);
        }
        Ok(verify(&entries, &checkpoints, &self.key))
    }
}

/// Records a call refused before it reached a service (a bad token, a
/// client certificate that names another host): blocking, like
/// [`AuditLog::record`]. The mTLS layer's `api::refused` calls this.
pub fn record_refusal(
    log: &AuditLog,
    peer: &str,
    subject: &str,
    method: &str,
    reason: &str,
) -> Result<i64> {
    log.record(Event {
        subject: subject.to_string(),
        scopes: String::new(),
        peer: peer.to_string(),
        method: method.to_string(),
        args: String::new(),
        result: format!("refused: {reason}"),
    })
}

/// SHA-256 (hex) over the entry's fields and its `prev_hash`, each as a
/// big-endian u64 length and its bytes, after a version tag. `seq` and
/// `hash` are left out: the chain, not the numbering, fixes the order.
pub fn entry_hash(e: &AuditEntry) -> String {
    let mut h = Sha256::new();
    let time = e.time_ms.to_string();
    for field in [
        "patchgap-audit-v1",
        &time,
        &e.subject,
        &e.scopes,
        &e.peer,
        &e.method,
        &e.args,
        &e.result,
        &e.prev_hash,
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex(&h.finalize())
}

fn checkpoint_payload(seq: i64, hash: &str, time_ms: i64) -> Vec<u8> {
    format!("patchgap-audit-checkpoint-v1 {seq} {hash} {time_ms}").into_bytes()
}

/// What `verify` found: the first problem, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub entries: u64,
    pub checkpoints: u64,
    pub problem: Option<Problem>,
}

/// The first entry that is not as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry's position.
    pub seq: i64,
    /// `edited`, `deleted`, `reordered` or `checkpoint`.
    pub kind: &'static str,
    pub message: String,
}

/// Walks the chain in `seq` order, then checks each checkpoint's signature
/// and hash, and reports the problem at the lowest position.
pub fn verify(entries: &[AuditEntry], checkpoints: &[AuditCheckpoint], key: &SigningKey) -> Report {
    let stored: HashMap<&str, i64> = entries.iter().map(|e| (e.hash.as_str(), e.seq)).collect();
    let by_seq: HashMap<i64, &AuditEntry> = entries.iter().map(|e| (e.seq, e)).collect();
    let mut problems = Vec::new();
    let mut prev = AUDIT_GENESIS;
    for (expected, e) in (1..).zip(entries) {
        if e.seq != expected {
            problems.push(Problem {
                seq: expected,
                kind: "deleted",
                message: format!(
                    "entry {expected} was deleted (the log goes from {} to {})",
                    expected - 1,
                    e.seq
                ),
            });
            break;
        }
        if entry_hash(e) != e.hash {
            problems.push(Problem {
                seq: e.seq,
                kind: "edited",
                message: format!("entry {} was edited: it no longer matches its hash", e.seq),
            });
            break;
        }
        if e.prev_hash != prev {
            let problem = match stored.get(e.prev_hash.as_str()) {
                Some(&after) => Problem {
                    seq: e.seq,
                    kind: "reordered",
                    message: format!(
                        "entry {} was reordered: it was written after entry {after}, not after entry {}",
                        e.seq,
                        e.seq - 1
                    ),
                },
                None => Problem {
                    seq: e.seq,
                    kind: "deleted",
                    message: format!(
                        "the entry written before entry {} was deleted (its link points to no stored entry)",
                        e.seq
                    ),
                },
            };
            problems.push(problem);
            break;
        }
        prev = &e.hash;
    }
    let last_seq = entries.last().map_or(0, |e| e.seq);
    for c in checkpoints {
        let genuine = key
            .verify_bytes(&c.signature)
            .is_some_and(|p| p == checkpoint_payload(c.seq, &c.hash, c.time_ms));
        let problem = if !genuine {
            Some((
                "checkpoint",
                format!(
                    "the checkpoint at entry {} is not signed by this collector's key",
                    c.seq
                ),
            ))
        } else {
            match by_seq.get(&c.seq) {
                None if c.seq > last_seq => Some((
                    "deleted",
                    format!(
                        "entries after {last_seq} were deleted: a signed checkpoint names entry {}",
                        c.seq
                    ),
                )),
                None => None, // A gap; the chain walk names it.
                Some(e) if e.hash != c.hash => Some((
                    "edited",
                    format!(
                        "entries up to {} were rewritten: it does not match the signed checkpoint",
                        c.seq
                    ),
                )),
                Some(_) => None,
            }
        };
        if let Some((kind, message)) = problem {
            problems.push(Problem {
                seq: c.seq.min(last_seq + 1),
                kind,
                message,
            });
            break;
        }
    }
    Report {
        entries: entries.len() as u64,
        checkpoints: checkpoints.len() as u64,
        problem: problems.into_iter().min_by_key(|p| p.seq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn log(entries: i64) -> (tempfile::TempDir, Arc<SqliteStore>, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let key = Arc::new(SigningKey::load_or_create(dir.path()).unwrap());
        let policy = CheckpointPolicy {
            entries: 4,
            interval: Duration::from_secs(3600),
        };
        let log = AuditLog::open(store.clone(), key, policy).unwrap();
        for i in 1..=entries {
            let seq = log
                .record(Event {
                    subject: "ci".into(),
                    method: "Query/FindPackage".into(),
                    args: format!("name=libssl3 n={i}"),
                    result: "ok".into(),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(seq, i);
        }
        (dir, store, log)
    }

    fn problem(entries: &[AuditEntry], log: &AuditLog) -> Option<(i64, &'static str)> {
        let cps = log.store.audit_checkpoints().unwrap();
        verify(entries, &cps, &log.key)
            .problem
            .map(|p| (p.seq, p.kind))
    }

    #[test]
    fn an_untouched_log_verifies_and_is_checkpointed() {
        let (_d, store, log) = log(10);
        let report = log.verify().unwrap();
        assert_eq!(report.problem, None);
        assert_eq!(report.entries, 10);
        // Every 4 entries.
        assert_eq!(store.audit_checkpoints().unwrap().len(), 2);
        log.checkpoint_now().unwrap();
        assert_eq!(store.audit_checkpoints().unwrap().len(), 3);
    }

    #[test]
    fn edits_deletions_and_moves_are_named() {
        let (_d, store, log) = log(10);
        let all = store.audit_entries(0, i64::MIN, 100).unwrap();
        assert_eq!(problem(&all, &log), None);

        let mut edited = all.clone();
        edited[5].args = "name=zlib".into();
        assert_eq!(problem(&edited, &log), Some((6, "edited")));

        let mut deleted = all.clone();
        deleted.remove(2);
        assert_eq!(problem(&deleted, &log), Some((3, "deleted")));

        // Swapped rows keep their content and hash, and trade positions.
        let mut swapped = all.clone();
        let (a, b) = (swapped[6].clone(), swapped[8].clone());
        swapped[6] = AuditEntry { seq: 7, ..b };
        swapped[8] = AuditEntry { seq: 9, ..a };
        assert_eq!(problem(&swapped, &log), Some((7, "reordered")));

        // Rewriting the chain from entry 3 with valid hashes is caught by
        // the signed checkpoint at 4.
        let mut rewritten = all.clone();
        rewritten[2].args = "forged".into();
        for i in 2..rewritten.len() {
            rewritten[i].prev_hash = rewritten[i - 1].hash.clone();
            rewritten[i].hash = entry_hash(&rewritten[i]);
        }
        assert_eq!(problem(&rewritten, &log), Some((4, "edited")));

        // The tail cut off below a checkpoint.
        assert_eq!(problem(&all[..6], &log), Some((7, "deleted")));
    }

    #[test]
    fn refusals_are_recorded() {
        let (_d, store, log) = log(0);
        record_refusal(
            &log,
            "10.0.0.9:5000",
            "host-a",
            "Ingest/Hello",
            "names host-b",
        )
        .unwrap();
        let e = &store.audit_entries(0, 0, 10).unwrap()[0];
        assert_eq!(e.result, "refused: names host-b");
        assert_eq!(e.prev_hash, AUDIT_GENESIS);
    }

    /// Two collectors on one database append to one chain: each one's
    /// idea of the head goes stale whenever the other writes, and every
    /// entry still lands, in one unforked chain that verifies.
    #[test]
    fn two_writers_on_one_store_extend_one_chain() {
        let (dir, store, a) = log(1);
        let key = Arc::new(SigningKey::load_or_create(dir.path()).unwrap());
        let b = AuditLog::open(store.clone(), key.clone(), a.policy).unwrap();
        let event = |n: usize| Event {
            subject: "ci".into(),
            method: "Query/FindPackage".into(),
            args: format!("n={n}"),
            result: "ok".into(),
            ..Default::default()
        };
        let mut seqs = Vec::new();
        for n in 0..6 {
            let writer = if n % 3 == 0 { &b } else { &a };
            seqs.push(writer.record(event(n)).unwrap());
        }
        assert_eq!(seqs, [2, 3, 4, 5, 6, 7]);

        // Writers racing: a writer can lose several times in a row (one
        // reload and one retry was not enough).
        let writers: Vec<AuditLog> = (0..4)
            .map(|_| AuditLog::open(store.clone(), key.clone(), a.policy).unwrap())
            .collect();
        std::thread::scope(|s| {
            for (w, log) in writers.iter().enumerate() {
                s.spawn(move || {
                    for n in 0..100 {
                        log.record(event(w * 1_000 + n)).unwrap();
                    }
                });
            }
        });
        let report = a.verify().unwrap();
        assert_eq!(report.entries, 407);
        assert!(report.problem.is_none(), "{:?}", report.problem);
    }
}
