//! Which roots' package databases may have changed: inotify watches on the
//! directories dpkg, rpm and apk write, so that event batches (ten a second
//! under load) skip comparing a root's database files with what was loaded
//! unless something there moved.
//!
//! Invariant: a root counts as unchanged only while its watches, added
//! before its files were last compared, have reported nothing since. Events
//! are read before the comparison they clear, so a change made during the
//! comparison is seen by it or reported at the next poll; a lost event
//! (queue overflow) or a removed watch makes every affected root compare
//! again. Where watches cannot be added the root is compared every batch,
//! as without this module. Nothing here reads a database.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use crate::rootfs::{FileId, RootError, RootFs};

/// The directories whose entries (or files) make up the database stamps in
/// `resolve`: dpkg's status file, journal and lists, distroless status.d,
/// rpm's sqlite database in either place, apk's installed file. A missing
/// one is watched through its nearest existing ancestor, which sees it
/// appear.
const DB_DIRS: [&[u8]; 7] = [
    b"/var/lib/dpkg",
    b"/var/lib/dpkg/updates",
    b"/var/lib/dpkg/info",
    b"/var/lib/dpkg/status.d",
    b"/var/lib/rpm",
    b"/usr/lib/sysimage/rpm",
    b"/lib/apk/db",
];

/// Entries added, removed, renamed; files written or their times set; the
/// directory itself removed or moved. Reads and opens are not asked for.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// A watched root: whether anything was reported since it was armed.
#[derive(Debug)]
struct Root {
    changed: bool,
}

/// One inotify instance for all roots.
#[derive(Debug)]
pub struct DbWatch {
    fd: OwnedFd,
    /// Which roots a watch descriptor serves: one directory can be the same
    /// inode in two roots (a chroot onto the host's tree), and inotify gives
    /// it one descriptor.
    by_wd: HashMap<i32, Vec<FileId>>,
    roots: HashMap<FileId, Root>,
    /// Events read, and queue overflows (for tests and counters).
    pub events: u64,
    pub overflows: u64,
}

impl DbWatch {
    /// A new inotify instance; an error where inotify is unavailable (the
    /// caller then compares every batch).
    pub fn new() -> io::Result<DbWatch> {
        // SAFETY: no pointers; the descriptor is owned right below.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DbWatch {
            // SAFETY: a fresh descriptor nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            by_wd: HashMap::new(),
            roots: HashMap::new(),
            events: 0,
            overflows: 0,
        })
    }

    /// True when the root is watched and nothing was reported since it was
    /// last armed. Reads the events waiting first.
    pub fn unchanged(&mut self, root: FileId) -> bool {
        self.poll();
        self.roots.get(&root).is_some_and(|r| !r.changed)
    }

    /// Called just before the root's files are compared: from here on, any
    /// change is reported. Adds the watches on first use; false (and the
    /// root stays unwatched) when one cannot be added.
    pub fn arm(&mut self, root: &RootFs) -> bool {
        let id = root.id();
        if let Some(r) = self.roots.get_mut(&id) {
            r.changed = false;
            return true;
        }
        let mut wds = Vec::new();
        for dir in DB_DIRS {
            match self.add(root, dir) {
                Some(wd) => wds.push(wd),
                None => {
                    self.forget_wds(id, &wds);
                    return false;
                }
            }
        }
        for wd in wds {
            let ids = self.by_wd.entry(wd).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        self.roots.insert(id, Root { changed: false });
        true
    }

    /// Stops tracking roots no process uses any more. Their watches stay
    /// until the kernel drops them (the root unmounted) or another root
    /// shares them; a root seen again is armed again.
    pub fn retain_roots(&mut self, live: impl Fn(&FileId) -> bool) {
        self.roots.retain(|id, _| live(id));
        self.by_wd.retain(|_, ids| {
            ids.retain(|id| live(id));
            !ids.is_empty()
        });
    }

    pub fn watched_roots(&self) -> usize {
        self.roots.len()
    }

    /// Watches `dir` inside the root, or its nearest existing ancestor.
    fn add(&self, root: &RootFs, dir: &[u8]) -> Option<i32> {
        let mut dir = dir;
        loop {
            match root.open_dir_path(dir) {
                Ok(fd) => return self.add_fd(&fd),
                Err(RootError::NotFound) if !dir.is_empty() => {
                    let cut = dir.iter().rposition(|&b| b == b'/').unwrap_or(0);
                    dir = &dir[..cut];
                }
                Err(_) => return None,
            }
        }
    }

    /// The directory is reached through the descriptor resolved inside the
    /// root, never by a path the root's owner could redirect.
    fn add_fd(&self, fd: &OwnedFd) -> Option<i32> {
        let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        // SAFETY: a valid NUL-terminated path; the kernel only reads it.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), MASK) };
        (wd >= 0).then_some(wd)
    }

    /// Drops the bookkeeping of a root whose arming failed half way; the
    /// watches it added stay with the roots that share them, if any.
    fn forget_wds(&mut self, id: FileId, wds: &[i32]) {
        for wd in wds {
            if let Some(ids) = self.by_wd.get_mut(wd) {
                ids.retain(|r| *r != id);
            }
        }
    }

    /// Reads every event waiting and marks the roots they concern.
    fn poll(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads at most buf.len() bytes into buf.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                // EAGAIN: nothing more. Any other error is treated like an
                // overflow, so no change is missed.
                if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                    self.overflowed();
                }
                return;
            }
            self.take(&buf[..n as usize]);
        }
    }

    /// Marks the roots of a buffer of `inotify_event`s.
    fn take(&mut self, mut events: &[u8]) {
        const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
        while events.len() >= HEADER {
            // SAFETY: HEADER bytes are there; read_unaligned copes with any
            // alignment.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(events.as_ptr().cast()) };
            events = events.get(HEADER + ev.len as usize..).unwrap_or_default();
            self.events += 1;
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                self.overflowed();
                continue;
            }
            let Some(ids) = self.by_wd.get(&ev.wd) else {
                continue;
            };
            if ev.mask & libc::IN_IGNORED != 0 {
                // The watch is gone (the directory removed, its filesystem
                // unmounted): its roots are armed afresh at their next use.
                for id in self.by_wd.remove(&ev.wd).unwrap_or_default() {
                    self.roots.remove(&id);
                }
                continue;
            }
            for id in ids {
                if let Some(r) = self.roots.get_mut(id) {
                    r.changed = true;
                }
            }
        }
    }

    fn overflowed(&mut self) {
        self.overflows += 1;
        for r in self.roots.values_mut() {
            r.changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root_with_dpkg() -> (tempfile::TempDir, RootFs) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("var/lib/dpkg/updates")).unwrap();
        fs::create_dir_all(dir.path().join("var/lib/dpkg/info")).unwrap();
        fs::write(dir.path().join("var/lib/dpkg/status"), b"").unwrap();
        let root = RootFs::open(dir.path()).unwrap();
        (dir, root)
    }

    /// A dpkg root and a watch armed on it.
    fn armed() -> (tempfile::TempDir, RootFs, DbWatch) {
        let (dir, root) = root_with_dpkg();
        let mut w = DbWatch::new().unwrap();
        assert!(w.arm(&root));
        (dir, root, w)
    }

    #[test]
    fn a_root_is_unchanged_only_after_arming_and_until_a_write() {
        let (dir, root) = root_with_dpkg();
        let mut w = DbWatch::new().unwrap();
        assert!(!w.unchanged(root.id()), "never armed");
        assert!(w.arm(&root));
        assert!(w.unchanged(root.id()));
        // dpkg's journal entry, then the status file replaced by a rename.
        fs::write(dir.path().join("var/lib/dpkg/updates/0001"), b"x").unwrap();
        assert!(!w.unchanged(root.id()));
        assert!(w.arm(&root));
        assert!(w.unchanged(root.id()));
        fs::write(dir.path().join("var/lib/dpkg/status-new"), b"y").unwrap();
        fs::rename(
            dir.path().join("var/lib/dpkg/status-new"),
            dir.path().join("var/lib/dpkg/status"),
        )
        .unwrap();
        assert!(!w.unchanged(root.id()));
        // Reading changes nothing.
        assert!(w.arm(&root));
        let _ = fs::read(dir.path().join("var/lib/dpkg/status")).unwrap();
        assert!(w.unchanged(root.id()));
    }

    #[test]
    fn a_database_that_appears_later_is_seen_through_its_ancestor() {
        let (dir, root, mut w) = armed();
        // No /var/lib/rpm yet: /var/lib is watched in its place.
        fs::create_dir_all(dir.path().join("var/lib/rpm")).unwrap();
        assert!(!w.unchanged(root.id()));
        // No /lib at all: the root itself is watched.
        assert!(w.arm(&root));
        fs::create_dir_all(dir.path().join("lib")).unwrap();
        assert!(!w.unchanged(root.id()));
    }

    #[test]
    fn a_removed_watch_makes_its_root_compare_again() {
        let (dir, root, mut w) = armed();
        fs::remove_dir_all(dir.path().join("var/lib/dpkg/updates")).unwrap();
        assert!(!w.unchanged(root.id()));
        assert_eq!(w.watched_roots(), 0, "dropped with its watch");
        assert!(w.arm(&root), "armed afresh, through the ancestor");
        assert!(w.unchanged(root.id()));
    }

    #[test]
    fn events_for_a_forgotten_root_are_ignored() {
        let (dir, root, mut w) = armed();
        w.retain_roots(|_| false);
        fs::write(dir.path().join("var/lib/dpkg/updates/0001"), b"x").unwrap();
        assert!(!w.unchanged(root.id()), "not watched any more");
        assert_eq!(w.watched_roots(), 0);
        assert!(w.events > 0, "the event was read, and dropped");
    }
}
