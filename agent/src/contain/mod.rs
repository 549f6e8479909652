//! Containment on this host: the agent's executors for the collector's
//! containments, one per kind (issue 15), all through one [`Hierarchy`]:
//! the cgroup2 mount found in mountinfo, and each target cgroup checked by
//! the guards and opened beneath it (`hierarchy.rs`).
//!
//! Isolation ([`Executor`]): a workload's cgroup v2 directory gets the
//! programs of `ebpf/bpf/contain.bpf.c` (egress packets, connect4,
//! connect6), which let through only loopback and an allow-list (the
//! collector, the DNS resolvers), and either block the rest (`enforce`) or
//! count it (`shadow`). They are attached as cgroup BPF links, always
//! multi-attach, so other BPF users of the cgroup keep their programs.
//!
//! [`Executor::reconcile`] makes what is attached equal to a desired set of
//! [`Isolation`]s. Everything it attaches lives in bpffs, not in the agent:
//! per isolation and per generation, `<bpffs_dir>/<id>/g<N>/` holds the
//! pinned links (`link_pg_ct_*`; a pinned link stays attached after the
//! agent exits, and removing the pin detaches it) and the instance's maps
//! (`ct_*`), the last of which, `ct_spec`, records what was applied. The
//! executor keeps no state of its own, so a restarted agent (or a `kill -9`)
//! finds the isolation in force and compares the desired spec with the
//! pinned one: the same spec is left alone, never detached and attached
//! again; a changed spec is attached as the next generation first and the
//! old one removed after (Tetragon's swap), so there is no window without
//! isolation in either case.
//!
//! Freeze ([`Freezer`], `freeze.rs`): `cgroup.freeze`; the kernel keeps the
//! cgroup frozen across agent restarts, and the freezer records which
//! freezes are its own in the agent's state directory so that a restarted
//! agent can lift them. Kill ([`Killer`], `kill.rs`): `cgroup.kill` when a
//! set names it and again at each periodic check that finds processes in
//! the cgroup; nothing persists.
//!
//! **Invariant:** no executor ever executes anything; each acts only on a
//! cgroup inside the cgroup2 mount, reached with `openat2(RESOLVE_BENEATH)`
//! (no symlink leads out), and refuses the hierarchy's root, the agent's own
//! cgroup, PID 1's and any ancestor of those (programs, freezes and kills
//! on a cgroup reach its descendants), with the guards read again at each
//! act. Under its bpffs directory the isolation executor removes only what
//! it created (isolation directories, generations, its own pin names);
//! anything else is reported as [`Applied::Foreign`] and left alone. The
//! freezer thaws only what its record says it froze. Parsers here
//! (`prefix.rs`, `cgroup.rs`, the freeze record) take bytes and do no I/O.

mod cgroup;
mod executor;
mod freeze;
mod hierarchy;
mod kill;
mod prefix;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use cgroup::{Protected, cgroup2_mount, protected_by};
pub use executor::{DEFAULT_BPFFS_DIR, Executor};
pub use freeze::{FREEZE_STATE_FILE, FreezeStatus, Freezer};
pub use hierarchy::{CgroupDir, Hierarchy};
pub use kill::{KillStatus, Killer};
pub use prefix::{MAX_NAMESERVERS, Prefix, PrefixError, nameservers};

/// One isolation, as the collector's desired state names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// The containment id, `[A-Za-z0-9_-]{1,64}`: the name of its bpffs
    /// directory.
    pub id: String,
    /// The workload's cgroup v2 directory, an absolute path inside the
    /// cgroup2 mount (on this host's hybrid layout, under
    /// /sys/fs/cgroup/unified).
    pub cgroup: PathBuf,
    /// Block, or only count what would be blocked.
    pub mode: Mode,
    /// Destinations that stay reachable, besides loopback (127.0.0.0/8 and
    /// ::1, always allowed). The caller adds the collector's address and the
    /// workload's DNS resolvers ([`nameservers`]). At most
    /// [`patchgap_ebpf::contain::ALLOW_MAX`] per address family.
    pub allow: Vec<Prefix>,
}

/// A freeze or a kill, as the collector's desired state names it: which
/// cgroup, under which id. Neither has a shadow form (the responder refuses
/// one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupTarget {
    /// The containment id, `[A-Za-z0-9_-]{1,64}`.
    pub id: String,
    /// The workload's cgroup v2 directory, an absolute path inside the
    /// cgroup2 mount.
    pub cgroup: PathBuf,
}

/// What an isolation does with traffic to a destination that is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Count would-block connects and packets; drop nothing.
    Shadow,
    /// Fail connects with EPERM, drop packets, and count both.
    Enforce,
}

/// What [`Executor::reconcile`] did, one entry per isolation it touched and
/// per foreign entry it found.
#[derive(Debug)]
pub enum Applied {
    /// Newly attached (no generation of this id was pinned).
    Attached {
        /// The containment id.
        id: String,
    },
    /// Already pinned with the same spec on the same cgroup: left attached
    /// as it was.
    Unchanged {
        /// The containment id.
        id: String,
    },
    /// The spec changed: the new one was attached, then the old one removed.
    Swapped {
        /// The containment id.
        id: String,
    },
    /// No longer desired: its pins were removed, which detached it.
    Released {
        /// The containment id.
        id: String,
    },
    /// Nothing could be done for this id, and why. A desired isolation that
    /// was already in force and fails to update stays in force.
    Failed {
        /// The containment id.
        id: String,
        /// What failed.
        error: ContainError,
    },
    /// An entry under the bpffs directory the executor did not create: left
    /// alone.
    Foreign {
        /// Its path.
        path: PathBuf,
    },
}

impl Applied {
    /// The containment id, for all but [`Applied::Foreign`].
    pub fn id(&self) -> Option<&str> {
        match self {
            Applied::Attached { id }
            | Applied::Unchanged { id }
            | Applied::Swapped { id }
            | Applied::Released { id }
            | Applied::Failed { id, .. } => Some(id),
            Applied::Foreign { .. } => None,
        }
    }
}

/// An isolation's evidence, read from its pinned counter map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counters {
    /// The mode in force.
    pub mode: Option<Mode>,
    /// Connects failed with EPERM.
    pub blocked_connects: u64,
    /// Packets dropped.
    pub blocked_packets: u64,
    /// Connects enforce would have failed (shadow).
    pub would_block_connects: u64,
    /// Packets enforce would have dropped (shadow).
    pub would_block_packets: u64,
    /// When the first connect or packet was blocked, ms since the epoch:
    /// the evidence of containment.
    pub first_block_unix_ms: Option<u64>,
    /// When the first connect or packet would have been blocked (shadow).
    pub first_would_block_unix_ms: Option<u64>,
}

/// Why an isolation could not be applied, read or removed. Each says which
/// isolation and, where one is involved, which cgroup.
#[derive(Debug, thiserror::Error)]
pub enum ContainError {
    /// The id is not `[A-Za-z0-9_-]{1,64}`.
    #[error("invalid containment id {id:?}: want 1 to 64 of A-Z a-z 0-9 _ -")]
    InvalidId {
        /// The id as given.
        id: String,
    },
    /// The same id twice in one desired set.
    #[error("containment id {id} is desired twice")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// The cgroup path is not inside the cgroup2 mount (or is relative, or
    /// has a `..`).
    #[error("cgroup {cgroup} is not inside the cgroup2 mount {mount}")]
    NotInCgroup2 {
        /// The path as given.
        cgroup: PathBuf,
        /// The cgroup2 mount point.
        mount: PathBuf,
    },
    /// The cgroup directory does not exist.
    #[error("cgroup {cgroup} does not exist")]
    CgroupMissing {
        /// The path as given.
        cgroup: PathBuf,
    },
    /// Resolving the path would have left the cgroup2 mount (a symlink).
    #[error("cgroup {cgroup} resolves outside the cgroup2 mount")]
    CgroupEscapes {
        /// The path as given.
        cgroup: PathBuf,
    },
    /// The directory is not on a cgroup2 filesystem.
    #[error("{cgroup} is not a cgroup v2 directory")]
    NotCgroup2Dir {
        /// The path as given.
        cgroup: PathBuf,
    },
    /// A guard refused the cgroup.
    #[error("refusing to contain {cgroup}: it is {what}")]
    Refused {
        /// The path as given.
        cgroup: PathBuf,
        /// What it is ([`Protected`]'s description).
        what: Protected,
    },
    /// The allow-list does not fit the maps or the spec record.
    #[error("allow-list of {id} too large: {what}")]
    AllowTooLarge {
        /// The containment id.
        id: String,
        /// Which limit.
        what: String,
    },
    /// The kernel lacks a cgroup core file this containment needs
    /// (`cgroup.freeze` since 5.2, `cgroup.kill` since 5.14).
    #[error("{cgroup} has no {file}: the kernel is older than {needs}")]
    Unsupported {
        /// The cgroup.
        cgroup: PathBuf,
        /// The missing file.
        file: &'static str,
        /// The kernel version that has it.
        needs: &'static str,
    },
    /// A freeze could not be recorded in the state directory, so it was not
    /// made: a restarted agent could never lift it.
    #[error("freeze not made: it cannot be recorded ({reason})")]
    Unrecorded {
        /// Why the record could not be written.
        reason: String,
    },
    /// No cgroup2 filesystem is mounted.
    #[error("no cgroup2 filesystem is mounted (see /proc/self/mountinfo)")]
    NoCgroup2,
    /// bpffs could not be mounted or the directory is not on it.
    #[error("bpffs directory {dir}: {reason}")]
    Bpffs {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
        /// The system error, if any.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A file-system step failed (reading /proc, bpffs directories, pins).
    #[error("{op} {path}")]
    Io {
        /// The step.
        op: &'static str,
        /// The path it was on.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A BPF step failed (load, map update, attach, pin).
    #[error("{step} for {id} on cgroup {cgroup}")]
    Bpf {
        /// The containment id.
        id: String,
        /// The cgroup.
        cgroup: PathBuf,
        /// The step.
        step: String,
        /// aya's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A pinned generation's spec record is missing or unreadable.
    #[error("pinned spec of {id} at {path}: {reason}")]
    BadSpec {
        /// The containment id.
        id: String,
        /// The generation directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Entries the executor did not create keep a directory it would remove.
    #[error("{path} holds entries patchgap did not create; left in place")]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
}

/// An error with its causes, `outer: inner: ...`, for a status a responder
/// reads (the sources of [`ContainError::Io`] carry the system's reason).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Whether `id` is a valid containment id, `[A-Za-z0-9_-]{1,64}`: it names a
/// bpffs directory, so it can never be `.`, `..` or hold a `/`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "inc-42_isolate", &"x".repeat(64), "A-Z_09"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a.b",
            "a b",
            &"x".repeat(65),
            "é",
            "a\0",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn mode_is_lowercase_json() {
        assert_eq!(serde_json::to_string(&Mode::Shadow).unwrap(), "\"shadow\"");
        assert_eq!(
            serde_json::to_string(&Mode::Enforce).unwrap(),
            "\"enforce\""
        );
        assert!(serde_json::from_str::<Mode>("\"observe\"").is_err());
    }
}
