//! Freeze: `cgroup.freeze` on a workload's cgroup stops every process in it
//! (and in its descendants, and any moved in later) where it stands, with
//! its memory, sockets and files intact for the responders to look at. The
//! kernel keeps a cgroup frozen whatever becomes of the agent, so a freeze
//! survives an agent restart by itself; what the agent must remember is
//! which freezes are its own, so that it can lift them when a later set no
//! longer names them, and never thaws a cgroup it did not freeze.
//!
//! That memory is a small JSON file in the agent's state directory
//! (`<state_dir>/contain/frozen.json`, bpffs holds no files), replaced
//! atomically (temporary file, fsync, rename) and written *before* a
//! cgroup is frozen, so a crash between the two leaves a freeze the agent
//! knows, never one it has forgotten. Without a state directory it lives in
//! memory, and a restarted agent cannot lift what its predecessor froze.
//!
//! **Invariant:** the freezer thaws only cgroups its record says it froze
//! (same path, same inode), and not while another wanted freeze names the
//! same cgroup, nor one that was frozen before the agent froze it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use patchgap_proto::time::now_ms;
use serde::{Deserialize, Serialize};

use super::hierarchy::{Guards, Hierarchy};
use super::{Applied, CgroupTarget, ContainError, valid_id};

/// The record's name, in `<state_dir>/contain/`.
pub const FREEZE_STATE_FILE: &str = "frozen.json";

/// The record's format version; another version is not trusted.
const RECORD_VERSION: u32 = 1;

/// The record is a few hundred bytes per freeze; more than this is not
/// ours.
const RECORD_LIMIT: u64 = 4 << 20;

/// How long a freeze waits for the kernel to report the cgroup frozen
/// before it returns (later observations set the time then).
const FROZEN_WAIT: Duration = Duration::from_millis(200);

/// One freeze this agent made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    id: String,
    /// Relative to the cgroup2 mount.
    cgroup: String,
    /// A cgroup removed and made again under the same name is another one.
    cgroup_ino: u64,
    /// When the agent froze it, ms since the epoch.
    applied_ms: i64,
    /// When the kernel was first seen to report it frozen; 0 not yet.
    frozen_ms: i64,
    /// It was frozen already when the agent froze it (someone else's
    /// freeze): lifting ours leaves it frozen.
    already_frozen: bool,
}

impl Entry {
    fn same_cgroup(&self, other: &Entry) -> bool {
        self.cgroup == other.cgroup && self.cgroup_ino == other.cgroup_ino
    }
}

/// The record file's JSON.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    version: u32,
    entries: Vec<Entry>,
}

/// Why the record file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not JSON of the record's shape.
    #[error("freeze record is not valid: {0}")]
    Invalid(#[source] serde_json::Error),
    /// Another format version.
    #[error("freeze record has version {found}, this agent reads {RECORD_VERSION}")]
    Version {
        /// The version found.
        found: u32,
    },
    /// An entry whose id or cgroup could never have been written.
    #[error("freeze record entry {id:?} is not valid: {why}")]
    Entry {
        /// The entry's id.
        id: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// Parses the record file's bytes (no I/O).
fn parse_record(bytes: &[u8]) -> Result<BTreeMap<String, Entry>, RecordError> {
    let record: Record = serde_json::from_slice(bytes).map_err(RecordError::Invalid)?;
    if record.version != RECORD_VERSION {
        return Err(RecordError::Version {
            found: record.version,
        });
    }
    let mut out = BTreeMap::new();
    for e in record.entries {
        if !valid_id(&e.id) {
            return Err(RecordError::Entry {
                id: e.id,
                why: "invalid id",
            });
        }
        if e.cgroup.is_empty() || e.cgroup.split('/').any(|c| c == "..") {
            return Err(RecordError::Entry {
                id: e.id,
                why: "bad cgroup path",
            });
        }
        if out.contains_key(&e.id) {
            return Err(RecordError::Entry {
                id: e.id,
                why: "listed twice",
            });
        }
        out.insert(e.id.clone(), e);
    }
    Ok(out)
}

/// What a freeze does now, for a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FreezeStatus {
    /// When the agent froze it (ms since the epoch).
    pub applied_ms: i64,
    /// The kernel reports the cgroup frozen now.
    pub frozen: bool,
    /// When it was first seen frozen (ms since the epoch): the evidence of
    /// the freeze; 0 not yet.
    pub frozen_ms: i64,
    /// Why the state cannot be read (the cgroup is gone, or is another
    /// cgroup now).
    pub problem: Option<String>,
}

/// Carries out freeze containments and remembers which are its own.
#[derive(Debug)]
pub struct Freezer {
    /// The record file; None keeps it in memory.
    path: Option<PathBuf>,
    entries: BTreeMap<String, Entry>,
}

impl Freezer {
    /// A freezer remembering its freezes in `<state_dir>/contain/`
    /// ([`FREEZE_STATE_FILE`]), or in memory without a state directory. An
    /// unreadable record is logged and taken as empty: nothing is thawed
    /// for it, and the next change rewrites it.
    pub fn open(state_dir: Option<&Path>) -> Freezer {
        let path = state_dir.map(|d| d.join("contain").join(FREEZE_STATE_FILE));
        let entries = match &path {
            None => BTreeMap::new(),
            Some(p) => match read_limited(p) {
                Ok(bytes) => parse_record(&bytes).unwrap_or_else(|error| {
                    tracing::warn!(%error, path = %p.display(), "contain: freeze record ignored; freezes it named must be lifted by hand");
                    BTreeMap::new()
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
                Err(error) => {
                    tracing::warn!(%error, path = %p.display(), "contain: cannot read the freeze record");
                    BTreeMap::new()
                }
            },
        };
        Freezer { path, entries }
    }

    /// The ids this agent has frozen (from its record).
    pub fn ids(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Makes the freezes in force equal to `desired`: freezes what is new
    /// (recorded first), writes `1` again where someone thawed a wanted
    /// freeze, and thaws what is no longer desired. The ids in `keep` are
    /// wanted but their new spec could not be read: they stay as they are.
    /// One [`Applied`] per desired id and per released id.
    pub fn reconcile(
        &mut self,
        cgroups: &Hierarchy,
        desired: &[CgroupTarget],
        keep: &[&str],
    ) -> Vec<Applied> {
        let mut out = Vec::new();
        let guards = match Guards::read() {
            Ok(g) => g,
            Err(e) => {
                for d in desired {
                    out.push(Applied::Failed {
                        id: d.id.clone(),
                        error: ContainError::Io {
                            op: "read the guards",
                            path: PathBuf::new(),
                            source: io::Error::other(e.to_string()),
                        },
                    });
                }
                return out;
            }
        };
        let old = std::mem::take(&mut self.entries);
        let mut next: BTreeMap<String, Entry> = old
            .iter()
            .filter(|(id, _)| keep.contains(&id.as_str()))
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        // Desired freezes, checked and opened, before anything is written.
        let mut to_freeze = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for d in desired {
            let fail = |error| Applied::Failed {
                id: d.id.clone(),
                error,
            };
            if !valid_id(&d.id) {
                out.push(fail(ContainError::InvalidId { id: d.id.clone() }));
                continue;
            }
            if !seen.insert(d.id.as_str()) {
                out.push(fail(ContainError::DuplicateId { id: d.id.clone() }));
                continue;
            }
            // Still wanted: on a failure a freeze of this id stays as it was.
            let keep_old = |next: &mut BTreeMap<String, Entry>| {
                if let Some(e) = old.get(&d.id) {
                    next.insert(d.id.clone(), e.clone());
                }
            };
            let dir = match cgroups.open_guarded(&d.cgroup, &guards) {
                Ok(dir) => dir,
                Err(error) => {
                    keep_old(&mut next);
                    out.push(fail(error));
                    continue;
                }
            };
            let mut entry = Entry {
                id: d.id.clone(),
                cgroup: dir.relative().to_string_lossy().into_owned(),
                cgroup_ino: dir.ino(),
                applied_ms: now_ms(),
                frozen_ms: 0,
                already_frozen: false,
            };
            let unchanged = old.get(&d.id).filter(|e| e.same_cgroup(&entry));
            if let Some(e) = unchanged {
                entry = e.clone();
            } else if let Some(ours) = old
                .values()
                .chain(next.values())
                .find(|e| e.same_cgroup(&entry))
            {
                // Frozen by another of our freezes: whether it was someone
                // else's first is that freeze's answer, not what the file
                // says now.
                entry.already_frozen = ours.already_frozen;
                entry.frozen_ms = ours.frozen_ms;
            } else {
                match dir.freeze_requested() {
                    Ok(v) => entry.already_frozen = v,
                    Err(error) => {
                        keep_old(&mut next);
                        out.push(fail(error));
                        continue;
                    }
                }
            }
            to_freeze.push((d.id.clone(), entry, dir));
        }
        // What may need thawing: ours, no longer desired nor kept.
        let lifted: Vec<Entry> = old
            .values()
            .filter(|e| {
                !next.contains_key(&e.id)
                    && !to_freeze
                        .iter()
                        .any(|(_, n, _)| n.id == e.id && n.same_cgroup(e))
            })
            .cloned()
            .collect();

        // Recorded before anything is frozen: a crash after the write
        // leaves a freeze the next agent knows.
        let mut recorded = next.clone();
        for (id, entry, _) in &to_freeze {
            recorded.insert(id.clone(), entry.clone());
        }
        let record_error = self.save(recorded.values().chain(lifted.iter()));
        for (id, mut entry, dir) in to_freeze {
            let was = old.get(&id).is_some_and(|e| e.same_cgroup(&entry));
            if let Err(error) = &record_error {
                // Unrecorded, a freeze could not be lifted after a restart:
                // only one already recorded goes ahead.
                if !was {
                    out.push(Applied::Failed {
                        id,
                        error: ContainError::Unrecorded {
                            reason: super::describe(error),
                        },
                    });
                    continue;
                }
            }
            let requested = dir.freeze_requested().unwrap_or(false);
            if was && !requested {
                tracing::warn!(id = %id, cgroup = %dir.path().display(), "contain: a frozen cgroup was thawed by someone else; freezing it again");
            }
            if !requested && let Err(error) = dir.set_freeze(true) {
                if was {
                    next.insert(id.clone(), entry);
                }
                out.push(Applied::Failed { id, error });
                continue;
            }
            if entry.frozen_ms == 0 && wait_frozen(&dir) {
                entry.frozen_ms = now_ms();
            }
            next.insert(id.clone(), entry);
            out.push(if was {
                Applied::Unchanged { id }
            } else {
                Applied::Attached { id }
            });
        }
        for e in lifted {
            let shared = next.values().any(|n| n.same_cgroup(&e));
            if shared || e.already_frozen {
                out.push(Applied::Released { id: e.id });
                continue;
            }
            match thaw(cgroups, &e) {
                Ok(()) => out.push(Applied::Released { id: e.id }),
                Err(error) => {
                    let id = e.id.clone();
                    if next.contains_key(&id) {
                        // The id now freezes another cgroup, and the record
                        // holds one cgroup per id: this one is left frozen.
                        tracing::error!(%error, id = %id, cgroup = %e.cgroup, "contain: cannot thaw the cgroup this id froze before; left frozen, thaw it by hand");
                    } else {
                        // Kept in the record: the next set tries again.
                        tracing::warn!(%error, id = %id, cgroup = %e.cgroup, "contain: cannot thaw");
                        next.insert(id.clone(), e);
                    }
                    out.push(Applied::Failed { id, error });
                }
            }
        }
        self.entries = next;
        if let Err(error) = self.save(self.entries.values()) {
            tracing::warn!(%error, "contain: cannot write the freeze record");
        }
        out
    }

    /// The state of freeze `id` if this agent froze it: whether the kernel
    /// reports the cgroup frozen, and since when (the first time it was
    /// seen frozen is recorded).
    pub fn status(&mut self, cgroups: &Hierarchy, id: &str) -> Option<FreezeStatus> {
        let entry = self.entries.get(id)?.clone();
        let mut s = FreezeStatus {
            applied_ms: entry.applied_ms,
            frozen_ms: entry.frozen_ms,
            ..Default::default()
        };
        match open_entry(cgroups, &entry).and_then(|dir| dir.is_frozen()) {
            Ok(frozen) => s.frozen = frozen,
            Err(e) => s.problem = Some(super::describe(&e)),
        }
        if s.frozen && entry.frozen_ms == 0 {
            s.frozen_ms = now_ms();
            if let Some(e) = self.entries.get_mut(id) {
                e.frozen_ms = s.frozen_ms;
            }
            if let Err(error) = self.save(self.entries.values()) {
                tracing::warn!(%error, "contain: cannot write the freeze record");
            }
        }
        Some(s)
    }

    /// Writes `1` again to each wanted freeze that someone thawed (the
    /// periodic check between sets).
    pub fn tick(&mut self, cgroups: &Hierarchy) {
        for e in self.entries.values() {
            let Ok(dir) = open_entry(cgroups, e) else {
                continue;
            };
            if dir.freeze_requested().ok() == Some(false) {
                tracing::warn!(id = %e.id, cgroup = %dir.path().display(), "contain: a frozen cgroup was thawed by someone else; freezing it again");
                if let Err(error) = dir.set_freeze(true) {
                    tracing::warn!(%error, id = %e.id, "contain: cannot freeze again");
                }
            }
        }
    }

    /// Replaces the record file: a temporary file, fsync'ed, renamed over
    /// the old one, then the directory fsync'ed.
    fn save<'a>(&self, entries: impl Iterator<Item = &'a Entry>) -> Result<(), ContainError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let record = Record {
            version: RECORD_VERSION,
            entries: entries.cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&record).expect("a record always serialises");
        let dir = path.parent().unwrap_or(Path::new("/"));
        let io = |op, source| ContainError::Io {
            op,
            path: path.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io("create the directory of", e))?;
        let tmp = path.with_extension("json.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("write", e))?;
        f.write_all(&json).map_err(|e| io("write", e))?;
        f.sync_all().map_err(|e| io("sync", e))?;
        fs::rename(&tmp, path).map_err(|e| io("rename into", e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync the directory of", e))
    }
}

/// Opens a recorded freeze's cgroup (path checks, no guard: reading and
/// thawing never harm) and checks it is still the cgroup that was frozen.
fn open_entry(cgroups: &Hierarchy, e: &Entry) -> Result<super::hierarchy::CgroupDir, ContainError> {
    let path = cgroups.mount().join(&e.cgroup);
    let dir = cgroups.open_to_undo(&path)?;
    if dir.ino() != e.cgroup_ino {
        return Err(ContainError::CgroupMissing { cgroup: path });
    }
    Ok(dir)
}

/// Thaws a recorded freeze's cgroup. One that is gone, or is another
/// cgroup under the same name, has nothing of ours to thaw.
fn thaw(cgroups: &Hierarchy, e: &Entry) -> Result<(), ContainError> {
    match open_entry(cgroups, e) {
        Ok(dir) => dir.set_freeze(false),
        Err(ContainError::CgroupMissing { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Waits up to [`FROZEN_WAIT`] for `frozen 1`.
fn wait_frozen(dir: &super::hierarchy::CgroupDir) -> bool {
    let start = Instant::now();
    loop {
        if dir.is_frozen().unwrap_or(false) {
            return true;
        }
        if start.elapsed() >= FROZEN_WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(RECORD_LIMIT)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, cgroup: &str) -> Entry {
        Entry {
            id: id.into(),
            cgroup: cgroup.into(),
            cgroup_ino: 7,
            applied_ms: 1,
            frozen_ms: 2,
            already_frozen: false,
        }
    }

    #[test]
    fn the_record_reads_back() {
        let record = Record {
            version: RECORD_VERSION,
            entries: vec![entry("a", "pods/x"), entry("b", "pods/y")],
        };
        let bytes = serde_json::to_vec(&record).unwrap();
        let back = parse_record(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back["b"], entry("b", "pods/y"));
    }

    #[test]
    fn bad_records_are_refused() {
        let with = |entries: Vec<Entry>| {
            serde_json::to_vec(&Record {
                version: RECORD_VERSION,
                entries,
            })
            .unwrap()
        };
        for (bytes, why) in [
            (b"".to_vec(), "not valid"),
            (b"{\"version\":1}".to_vec(), "not valid"),
            (b"\xff\x00[".to_vec(), "not valid"),
            (b"{\"version\":2,\"entries\":[]}".to_vec(), "version 2"),
            (with(vec![entry("a/b", "x")]), "invalid id"),
            (with(vec![entry("a", "")]), "bad cgroup"),
            (with(vec![entry("a", "x/../y")]), "bad cgroup"),
            (with(vec![entry("a", "x"), entry("a", "y")]), "twice"),
        ] {
            let e = parse_record(&bytes).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
