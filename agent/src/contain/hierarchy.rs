//! The cgroup2 hierarchy as every containment kind reaches it: found in
//! mountinfo, opened once, and each target cgroup checked by the guards and
//! opened beneath the mount. Isolation attaches programs to the opened
//! directory; freeze and kill write its core files (`cgroup.freeze`,
//! `cgroup.kill`) relative to it, so no path is resolved twice.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use super::ContainError;
use super::cgroup::{cgroup2_mount, protected_by, v2_path};
use crate::rootfs::{RootError, RootFs};

/// statfs f_type of cgroup2 (linux/magic.h).
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

/// Bytes of one `cgroup.procs` or `cgroup.events` read at most (a pid is at
/// most 8 bytes with its newline: 4 MiB is half a million processes).
const CORE_FILE_LIMIT: u64 = 4 << 20;

/// Descendant cgroups walked at most when counting what a kill reaches.
const WALK_LIMIT: usize = 10_000;

/// The cgroups the guards protect, read at each use (the agent may have
/// been moved).
pub(super) struct Guards {
    pub(super) agent: PathBuf,
    pub(super) pid1: PathBuf,
}

impl Guards {
    /// Reads the agent's and PID 1's cgroup v2 paths. A process without a
    /// `0::` line cannot be placed, and is taken to protect everything.
    pub(super) fn read() -> Result<Guards, ContainError> {
        let unknown = || PathBuf::from("/..");
        let agent = v2_path(&read("/proc/self/cgroup")?).unwrap_or_else(unknown);
        let pid1 = v2_path(&read("/proc/1/cgroup")?).unwrap_or_else(unknown);
        Ok(Guards { agent, pid1 })
    }
}

/// The host's cgroup2 hierarchy.
#[derive(Debug)]
pub struct Hierarchy {
    mount: PathBuf,
    /// The mount, opened so that lookups stay beneath it.
    root: RootFs,
}

impl Hierarchy {
    /// Finds the cgroup2 mount in /proc/self/mountinfo (on this host's
    /// hybrid layout /sys/fs/cgroup/unified) and opens it.
    pub fn new() -> Result<Hierarchy, ContainError> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let mount = cgroup2_mount(&mountinfo).ok_or(ContainError::NoCgroup2)?;
        let root = RootFs::open_beneath(&mount).map_err(|e| ContainError::Io {
            op: "open the cgroup2 mount",
            path: mount.clone(),
            source: root_io(e),
        })?;
        Ok(Hierarchy { mount, root })
    }

    /// Where it is mounted.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Checks `cgroup` (an absolute path inside the mount) against the
    /// guards read now and opens it: a path inside the mount without `..`,
    /// not a protected cgroup (the hierarchy's root, the agent's or PID 1's
    /// cgroup, or an ancestor of either), an existing cgroup2 directory
    /// reached without leaving the mount.
    pub fn open(&self, cgroup: &Path) -> Result<CgroupDir, ContainError> {
        self.open_guarded(cgroup, &Guards::read()?)
    }

    /// Opens a cgroup this agent acted on before, to undo it (thaw): the
    /// same path checks, but no guard, since undoing never harms the agent
    /// or init (and the agent may since have been moved under it).
    pub fn open_to_undo(&self, cgroup: &Path) -> Result<CgroupDir, ContainError> {
        self.open_checked(cgroup, None)
    }

    /// [`Hierarchy::open`] with guards already read (once per reconcile).
    pub(super) fn open_guarded(
        &self,
        cgroup: &Path,
        guards: &Guards,
    ) -> Result<CgroupDir, ContainError> {
        self.open_checked(cgroup, Some(guards))
    }

    fn open_checked(
        &self,
        cgroup: &Path,
        guards: Option<&Guards>,
    ) -> Result<CgroupDir, ContainError> {
        let not_inside = || ContainError::NotInCgroup2 {
            cgroup: cgroup.to_path_buf(),
            mount: self.mount.clone(),
        };
        let rel = cgroup.strip_prefix(&self.mount).map_err(|_| not_inside())?;
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(not_inside());
        }
        if let Some(g) = guards
            && let Some(what) = protected_by(rel, &g.agent, &g.pid1)
        {
            return Err(ContainError::Refused {
                cgroup: cgroup.to_path_buf(),
                what,
            });
        }
        // Undoing on the root is never asked for either: the root has no
        // cgroup.freeze.
        if rel.components().all(|c| c == Component::CurDir) {
            return Err(not_inside());
        }
        // RESOLVE_BENEATH: no symlink, absolute or "..", leads out of the
        // mount. The O_PATH descriptor is then reopened for reading through
        // its /proc/self/fd link, which names the very same directory.
        let path_fd = self
            .root
            .open_dir_path(rel.as_os_str().as_bytes())
            .map_err(|e| match e {
                RootError::NotFound => ContainError::CgroupMissing {
                    cgroup: cgroup.to_path_buf(),
                },
                RootError::Escapes => ContainError::CgroupEscapes {
                    cgroup: cgroup.to_path_buf(),
                },
                other => ContainError::Io {
                    op: "open cgroup",
                    path: cgroup.to_path_buf(),
                    source: root_io(other),
                },
            })?;
        let proc_link = format!("/proc/self/fd/{}", path_fd.as_raw_fd());
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&proc_link)
            .map_err(|source| ContainError::Io {
                op: "open cgroup",
                path: cgroup.to_path_buf(),
                source,
            })?;
        if fs_magic(&dir).ok() != Some(CGROUP2_SUPER_MAGIC) {
            return Err(ContainError::NotCgroup2Dir {
                cgroup: cgroup.to_path_buf(),
            });
        }
        let ino = dir
            .metadata()
            .map_err(|source| ContainError::Io {
                op: "stat cgroup",
                path: cgroup.to_path_buf(),
                source,
            })?
            .ino();
        Ok(CgroupDir {
            path: cgroup.to_path_buf(),
            rel: rel.to_path_buf(),
            dir,
            ino,
        })
    }
}

/// One cgroup v2 directory, checked and open. Its core files are opened
/// relative to this descriptor (`openat`, no symlink followed).
#[derive(Debug)]
pub struct CgroupDir {
    path: PathBuf,
    rel: PathBuf,
    dir: File,
    ino: u64,
}

impl CgroupDir {
    /// The path as given (absolute, inside the mount).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path relative to the mount.
    pub fn relative(&self) -> &Path {
        &self.rel
    }

    /// The directory's inode: a cgroup removed and made again under the
    /// same name is another cgroup.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The open directory (for attaching programs).
    pub fn file(&self) -> &File {
        &self.dir
    }

    /// Writes `cgroup.freeze`: `true` stops every process in the cgroup and
    /// its descendants (and any moved in later) until `false` is written.
    /// The kernel keeps it frozen whatever becomes of the agent.
    pub fn set_freeze(&self, frozen: bool) -> Result<(), ContainError> {
        self.write_core("cgroup.freeze", if frozen { b"1" } else { b"0" }, "5.2")
    }

    /// What `cgroup.freeze` asks for now (someone may have thawed it).
    pub fn freeze_requested(&self) -> Result<bool, ContainError> {
        let bytes = self.read_core("cgroup.freeze", "5.2")?;
        Ok(bytes.trim_ascii() == b"1")
    }

    /// Whether the kernel reports the cgroup frozen (`frozen 1` in
    /// `cgroup.events`): every process in it has stopped. This, not the
    /// write, is the evidence of the freeze.
    pub fn is_frozen(&self) -> Result<bool, ContainError> {
        let bytes = self.read_core("cgroup.events", "5.2")?;
        Ok(events_frozen(&bytes))
    }

    /// Kills every process in the cgroup and its descendants with SIGKILL
    /// (`cgroup.kill`, which also reaches processes forking meanwhile).
    /// Returns how many processes were there just before (counted from
    /// `cgroup.procs`); nothing is written when there were none.
    pub fn kill(&self) -> Result<u64, ContainError> {
        let n = self.processes()?;
        if n > 0 {
            self.write_core("cgroup.kill", b"1", "5.14")?;
        }
        Ok(n)
    }

    /// The processes in the cgroup and its descendants (at most 10,000
    /// cgroups walked).
    pub fn processes(&self) -> Result<u64, ContainError> {
        let top = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        let mut stack = vec![top];
        let mut walked = 0;
        let mut n = 0u64;
        while let Some(dir) = stack.pop() {
            walked += 1;
            let procs =
                read_limited(&dir.join("cgroup.procs")).map_err(|source| ContainError::Io {
                    op: "read cgroup.procs",
                    path: self.path.clone(),
                    source,
                })?;
            n += count_pids(&procs);
            let Ok(entries) = fs::read_dir(&dir) else {
                // Removed meanwhile: nothing below it to count.
                continue;
            };
            for e in entries.flatten() {
                if stack.len() + walked >= WALK_LIMIT {
                    break;
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        Ok(n)
    }

    fn open_core(&self, name: &'static str, flags: libc::c_int) -> io::Result<File> {
        let c = std::ffi::CString::new(name).expect("core file names have no NUL");
        // SAFETY: the directory descriptor is open for the call and `c` is
        // a valid NUL-terminated name; the returned descriptor is owned by
        // the File at once.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn core_error(
        &self,
        op: &'static str,
        name: &'static str,
        needs: &'static str,
        e: io::Error,
    ) -> ContainError {
        if e.kind() == io::ErrorKind::NotFound {
            ContainError::Unsupported {
                cgroup: self.path.clone(),
                file: name,
                needs,
            }
        } else {
            ContainError::Io {
                op,
                path: self.path.join(name),
                source: e,
            }
        }
    }

    fn write_core(
        &self,
        name: &'static str,
        value: &[u8],
        needs: &'static str,
    ) -> Result<(), ContainError> {
        self.open_core(name, libc::O_WRONLY)
            .and_then(|mut f| f.write_all(value))
            .map_err(|e| self.core_error("write", name, needs, e))
    }

    fn read_core(&self, name: &'static str, needs: &'static str) -> Result<Vec<u8>, ContainError> {
        let mut bytes = Vec::new();
        self.open_core(name, libc::O_RDONLY)
            .and_then(|f| f.take(CORE_FILE_LIMIT).read_to_end(&mut bytes))
            .map_err(|e| self.core_error("read", name, needs, e))?;
        Ok(bytes)
    }
}

/// Whether a `cgroup.events` says `frozen 1`.
pub fn events_frozen(events: &[u8]) -> bool {
    events
        .split(|&b| b == b'\n')
        .any(|line| line.trim_ascii() == b"frozen 1")
}

/// The pids in a `cgroup.procs`, one per line; other lines are not counted.
pub fn count_pids(procs: &[u8]) -> u64 {
    procs
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && l.iter().all(u8::is_ascii_digit))
        .count() as u64
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(CORE_FILE_LIMIT)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read(path: &str) -> Result<Vec<u8>, ContainError> {
    fs::read(path).map_err(|source| ContainError::Io {
        op: "read",
        path: PathBuf::from(path),
        source,
    })
}

pub(super) fn root_io(e: RootError) -> io::Error {
    match e {
        RootError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

/// fstatfs(2)'s f_type of an open file.
pub(super) fn fs_magic(file: &File) -> io::Result<u64> {
    // SAFETY: statfs is plain old data; all-zero bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the duration of the call, `st` a
    // writable statfs.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    u64::try_from(st.f_type).map_err(|_| io::Error::other("negative f_type"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_events() {
        assert!(events_frozen(b"populated 1\nfrozen 1\n"));
        assert!(!events_frozen(b"populated 1\nfrozen 0\n"));
        assert!(!events_frozen(b"populated 1\n"));
        assert!(!events_frozen(b""));
        assert!(!events_frozen(b"frozen 10\n"));
        assert!(!events_frozen(b"\xff\xfe frozen 1"));
    }

    #[test]
    fn cgroup_procs() {
        assert_eq!(count_pids(b""), 0);
        assert_eq!(count_pids(b"1\n22\n333\n"), 3);
        assert_eq!(count_pids(b"1\n\n-2\nx\n4"), 2);
    }
}
