//! The /proc scanner: one pass over a procfs root produces an [`Inventory`].
//!
//! The procfs root is a parameter so that tests and benchmarks run on fixture
//! trees and a containerised agent can read a host /proc mounted elsewhere.
//! Processes come and go while we read them: a file that disappears mid-scan
//! (ENOENT, ESRCH) counts the process as vanished, a refusal (EACCES, EPERM)
//! counts it as denied, and neither is logged per pid.
//!
//! Nothing here executes anything or reads a process's environment. Files
//! inside a process's root are read only through [`RootFs`], which never
//! follows a symlink out of that root.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use crate::{
    lang::{LangResolver, ProcView},
    model::{
        Artifact, ArtifactKind, Content, HostIdentity, Inventory, PathBytes, Process, ProcessKey,
        ScanStats, Socket, Workload,
    },
    netns::NetnsNames,
    parse::{self, net::NetEntry},
    resolve::{PackageDb, Resolver},
    rootfs::{FileId, RootFs, in_root_path, strip_deleted},
    workload::{
        attribute::attribute,
        meta::MetaReader,
        privilege::{NsIds, Privilege, privilege},
    },
};

/// What an exec event says about the new process.
#[derive(Debug, Clone, Copy)]
pub struct ExecInfo<'a> {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: &'a str,
    pub filename: &'a [u8],
    /// argv, NUL-separated (from the exec event, not /proc), redacted here.
    pub args: &'a [u8],
    /// argv was cut (the event carries a bounded prefix).
    pub args_truncated: bool,
    /// From the kernel's start_boottime, in clock ticks.
    pub start_ticks: u64,
    /// The file that runs, as the kernel named it at exec (see
    /// [`kernel_file`]).
    pub exe: Option<KernelFile>,
}

/// A light record of a just-exec'd process; see [`Scanner::exec_record`].
#[derive(Debug, Clone)]
pub struct ExecRecord {
    pub process: Process,
    pub workload: Option<Workload>,
    pub alive: bool,
}

/// What the scanner needs to know; everything else it reads.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// Usually /proc.
    pub proc_root: PathBuf,
    /// Operator labels for the host identity (cluster, region, env).
    pub labels: BTreeMap<String, String>,
    /// Where the container runtimes' metadata lives (/run/containerd,
    /// /var/lib/docker, /var/log/pods, ...): "/" on a host, the host's root
    /// mounted elsewhere in a DaemonSet, a fixture directory in tests.
    pub runtime_root: PathBuf,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            proc_root: PathBuf::from("/proc"),
            labels: BTreeMap::new(),
            runtime_root: PathBuf::from("/"),
        }
    }
}

/// A process's root and where it is, as the agent sees it.
type ProcRoot = Arc<(RootFs, Vec<u8>)>;

/// Appended to a command line the exec event cut at its bound.
pub const TRUNCATED: &str = " …(truncated)";

/// Parents' roots remembered at once. Each holds the root's descriptor, so
/// expired ones are dropped as new ones come, not left until a limit (at
/// `RECENT_LIMIT` that would be thousands of descriptors).
const RECENT_ROOTS_LIMIT: usize = 64;

/// Remembers a parent's root for `RECENT_FOR`, dropping the expired ones
/// (and, past the limit, all) first. Each holds a descriptor, so the
/// expired go at every insert (at most `RECENT_ROOTS_LIMIT` to look at),
/// and at every full scan (`forget_expired_roots`) for a quiet host.
fn remember_root(roots: &mut HashMap<u32, (Instant, ProcRoot)>, ppid: u32, root: ProcRoot) {
    forget_expired_roots(roots);
    if roots.len() >= RECENT_ROOTS_LIMIT {
        roots.clear();
    }
    roots.insert(ppid, (Instant::now(), root));
}

fn forget_expired_roots(roots: &mut HashMap<u32, (Instant, ProcRoot)>) {
    roots.retain(|_, (at, _)| at.elapsed() < RECENT_FOR);
}

/// How long an open's answer, or a parent's root, is reused.
const RECENT_FOR: std::time::Duration = std::time::Duration::from_secs(1);
/// Entries of those caches before they are emptied.
const RECENT_LIMIT: usize = 4096;

/// Scans a procfs root. Keeps its resolution caches between scans.
#[derive(Debug)]
pub struct Scanner {
    config: ScanConfig,
    resolver: Resolver,
    lang: LangResolver,
    /// Recent answers to opens: (root, path) → the answer, valid only for
    /// the same file (identity and ctime) and the same database load.
    recent: HashMap<(FileId, Vec<u8>), Recent>,
    /// Recent answers to execs: (root, path exec was given) → the exe
    /// artifact, valid like `recent`'s.
    recent_exes: HashMap<(FileId, Vec<u8>), Recent>,
    /// Recently used parents' roots, for opens of processes already gone.
    recent_roots: HashMap<u32, (Instant, ProcRoot)>,
    /// Read sockets in one full scan out of this many (1: every scan).
    socket_scans_every: u32,
    scans: u32,
    force_sockets: bool,
    /// When a full scan last read the socket tables, ms since the epoch.
    sockets_read_ms: i64,
    /// Names of network namespaces (/run/netns).
    netns: NetnsNames,
    clk_tck: u64,
    /// Runtime metadata; None when the runtime root cannot be opened.
    meta: Option<MetaReader>,
    /// The host's namespaces and boot time, as of the last full scan, for
    /// event-time scans of one pid.
    host_ns: Option<NsIds>,
    btime: Option<u64>,
    /// Wall-clock ms at boot (see [`Scanner::boot_ms_cached`]).
    boot_ms: Option<i64>,
    /// Workload attributions of the last full scan, by cgroup lines, for
    /// event-time records.
    workload_cache: HashMap<Vec<parse::cgroup::CgroupLine>, Workload>,
    /// Contents of anonymous code, by (device, inode), valid while the
    /// file's size and mtime stay the same.
    contents: HashMap<(u64, u64), (ContentStamp, Content)>,
    /// The /proc/PID directory of the process being read, if any.
    pid_dir: Option<PidDir>,
    /// See [`Scanner::note_exited`]; emptied at each batch.
    exited: HashSet<(u32, u64)>,
    /// The last full scan's quiet processes, by pid (see [`Quiet`]).
    quiet: HashMap<u32, Quiet>,
    /// Whether full scans keep quiet processes for the next one (false
    /// for [`Scanner::single_scan`]).
    keep_quiet: bool,
    /// The kernel's count of cgroup membership changes (sensor, count),
    /// as read just before the next full scan (see
    /// [`Scanner::cgroup_changes_before_scan`]), and as it was before the
    /// last one.
    cgroup_changes_next: Option<(u64, u64)>,
    cgroup_changes_last: Option<(u64, u64)>,
}

/// One process's /proc/PID directory, held open (O_PATH) while the process
/// is read. Files are opened relative to it (openat, readlinkat), and paths
/// handed to other readers go through it (`/proc/self/fd/N/...`): once the
/// process is gone, its pid reused, lookups through the descriptor fail
/// instead of reaching the new process.
#[derive(Debug)]
struct PidDir {
    pid: u32,
    fd: std::os::fd::OwnedFd,
}

impl PidDir {
    fn open(proc_root: &Path, pid: u32) -> io::Result<PidDir> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(proc_root.join(pid.to_string()).as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a NUL-terminated path; the descriptor returned is owned below.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a descriptor we just opened and nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(PidDir { pid, fd })
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    fn name(name: &str) -> io::Result<std::ffi::CString> {
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let name = Self::name(name)?;
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned by the File.
        let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        read_to_eof(&mut file, 1, ONE_RECORD_FILES.contains(&name.to_bytes()))
    }

    /// Which root the process sees: the mount and directory its `root`
    /// link names, with one statx(2) and no descriptor. None where the
    /// kernel does not report a mount id (before 5.8).
    fn root_key(&self) -> Option<RootKey> {
        // SAFETY: statx is plain old data; all zeroes is a valid value.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory descriptor, a NUL-terminated name and
        // a buffer of the size statx(2) writes.
        let rc = unsafe {
            libc::statx(
                self.fd.as_raw_fd(),
                c"root".as_ptr(),
                libc::AT_STATX_SYNC_AS_STAT,
                libc::STATX_INO | libc::STATX_MNT_ID | libc::STATX_MNT_ID_UNIQUE,
                &mut stx,
            )
        };
        // A 64-bit id (6.8 on) is never reused; the older one is not
        // reused while the scan holds the root open.
        if rc != 0 || stx.stx_mask & (libc::STATX_MNT_ID | libc::STATX_MNT_ID_UNIQUE) == 0 {
            return None;
        }
        Some(RootKey {
            mnt_id: stx.stx_mnt_id,
            id: FileId {
                dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
                ino: stx.stx_ino,
            },
        })
    }

    fn read_link(&self, name: &str) -> io::Result<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        let name = Self::name(name)?;
        // On the stack, and the target copied out at its length: a 4 KiB
        // heap buffer per link, kept by the path it became, was a page
        // fault and a 4 KiB memset per link of every process.
        let mut buf = [0u8; 4096];
        let n = readlinkat(self.fd.as_raw_fd(), &name, &mut buf)?;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(
            buf[..n].to_vec(),
        )))
    }

    /// The socket inodes among the process's open files (the `fd/*` links
    /// that read `socket:[INODE]`). The links are read relative to the
    /// `fd` directory's descriptor: through `/proc/self/fd/N/fd/M`, each
    /// of a thousand processes' links cost a walk of five path components.
    /// The directory is listed with getdents64(2) into a buffer on the
    /// stack: opendir's 32 KiB stream per process cost more than the
    /// listing.
    fn socket_inodes(&self) -> io::Result<Vec<u64>> {
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c"fd".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and nobody else owns it.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut dents = [0u8; 4096];
        // "socket:[" + 20 digits + "]" fits; a longer target is no socket.
        let mut link = [0u8; 64];
        let mut inodes = Vec::new();
        loop {
            // SAFETY: dents is writable for its length; fd is open.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    fd.as_raw_fd(),
                    dents.as_mut_ptr(),
                    dents.len(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Ok(inodes);
            }
            for name in dirent_names(&dents[..n as usize]) {
                if name == b"." || name == b".." {
                    continue;
                }
                let Ok(name) = std::ffi::CStr::from_bytes_with_nul(name) else {
                    continue;
                };
                if let Ok(n) = readlinkat(fd.as_raw_fd(), name, &mut link)
                    && n < link.len()
                    && let Some(inode) = parse::cgroup::parse_socket_link(&link[..n])
                {
                    inodes.push(inode);
                }
            }
        }
    }
}

/// The entry names (each with its NUL) in a buffer getdents64(2) filled:
/// records of d_ino (8 bytes), d_off (8), d_reclen (2), d_type (1) and the
/// NUL-terminated name, padded to d_reclen. A record that does not fit, or
/// a name without its NUL, ends the walk.
fn dirent_names(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    const NAME_AT: usize = 19;
    let mut rest = buf;
    std::iter::from_fn(move || {
        let reclen = usize::from(u16::from_ne_bytes([*rest.get(16)?, *rest.get(17)?]));
        if reclen <= NAME_AT || reclen > rest.len() {
            return None;
        }
        let (record, tail) = rest.split_at(reclen);
        rest = tail;
        let name = &record[NAME_AT..];
        let nul = name.iter().position(|&b| b == 0)?;
        Some(&name[..=nul])
    })
}

/// readlinkat(2) into `buf`; the length of the target (truncated to the
/// buffer, as readlinkat does).
fn readlinkat(dir: std::os::fd::RawFd, name: &std::ffi::CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is writable for its length; the name is NUL-terminated.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Reads a /proc file to its end, each read(2) offered at least
/// `min_read` bytes. /proc files say they are empty, so `read_to_end`
/// would first fstat and lseek for a size hint and then probe with a
/// 32-byte read: twice the syscalls of reading into a page-sized buffer
/// until read(2) returns 0. A full rescan reads half a dozen files of every
/// process, so this is a third of its syscalls. The buffer is the thread's
/// own and kept (up to [`PROC_BUF_KEEP`]): a fresh page per file made glibc
/// consolidate its free lists on every read.
///
/// With `one_record`, a read that leaves room in the buffer is the whole
/// file, and the read(2) that would return 0 is not made: for the files of
/// [`ONE_RECORD_FILES`], three thousand system calls in a scan of a
/// thousand processes.
fn read_to_eof(file: &mut std::fs::File, min_read: usize, one_record: bool) -> io::Result<Vec<u8>> {
    use std::io::Read;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        let mut len = 0;
        let read = loop {
            if buf.len() - len < min_read.max(1) {
                let want = (len + min_read).max(buf.len() * 2).max(4096);
                buf.resize(want, 0);
            }
            match file.read(&mut buf[len..]) {
                Ok(0) => break Ok(buf[..len].to_vec()),
                Ok(n) if one_record && len + n < buf.len() => {
                    break Ok(buf[..len + n].to_vec());
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if buf.len() > PROC_BUF_KEEP {
            *buf = Vec::new();
        }
        read
    })
}

/// /proc/PID files that the kernel formats whole, in one `show` of a
/// `single_open` seq_file, and hands out whole to a read(2) with room for
/// them: a short read is the end of the file.
const ONE_RECORD_FILES: [&[u8]; 3] = [b"stat", b"status", b"cgroup"];

/// The largest read buffer a thread keeps between /proc reads (a JVM's
/// maps runs to hundreds of KiB; most files are under a page).
const PROC_BUF_KEEP: usize = 256 << 10;

/// A file's size, mtime seconds and mtime nanoseconds: while they hold,
/// its hashed content does.
type ContentStamp = (u64, i64, i64);

/// The largest anonymous file that is hashed: reading more would cost the
/// scan too much. A larger one is reported with its size and the reason.
const HASH_LIMIT: u64 = 64 << 20;
/// Entries of `Scanner::contents` before it is emptied.
const CONTENTS_LIMIT: usize = 1024;

/// The file at a path now: its identity and ctime.
pub type FileNow = (FileId, i128);

/// A file as an eBPF event named it, in stat's terms: which file an exec
/// ran or an mmap mapped at that moment, and the root of the process that
/// reached it. A recent answer for the same root, path and file is then
/// reused without a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFile {
    /// The file (device, inode) and its change time.
    pub file: FileNow,
    /// The process's root directory; None when unread.
    pub root: Option<FileId>,
}

/// None when the program could not read the file.
pub fn kernel_file(k: &patchgap_ebpf::FileIdentity) -> Option<KernelFile> {
    let k = k.known()?;
    Some(KernelFile {
        file: (
            FileId {
                dev: k.st_dev(),
                ino: k.ino,
            },
            k.ctime_ns(),
        ),
        root: (k.root_ino != 0).then(|| FileId {
            dev: k.root_st_dev(),
            ino: k.root_ino,
        }),
    })
}

/// A recent answer to an open.
#[derive(Debug)]
struct Recent {
    at: Instant,
    /// The file the answer is for: after an upgrade the path names a new
    /// inode, which must not get the old one's answer.
    file: FileNow,
    /// The database load it was resolved with (0: none).
    generation: u64,
    artifacts: Vec<Artifact>,
}

/// The recent answer in `cache` for the root and file the kernel named and
/// `path`, if it holds: the root's database is known current without
/// opening the root, and the answer is young and for this file and load.
fn recent_for<'c>(
    resolver: &mut Resolver,
    cache: &'c HashMap<(FileId, Vec<u8>), Recent>,
    k: KernelFile,
    path: &[u8],
) -> Option<&'c [Artifact]> {
    let root = k.root?;
    let r = cache.get(&(root, path.to_vec()))?;
    let generation = resolver.generation_if_current(root)?;
    r.holds(k.file, generation)
        .then_some(r.artifacts.as_slice())
}

impl Recent {
    /// Whether the answer still holds: young, for the same file, and from
    /// the same database load.
    fn holds(&self, file: FileNow, generation: u64) -> bool {
        self.at.elapsed() < RECENT_FOR && self.file == file && self.generation == generation
    }
}

/// Why one process could not be scanned.
enum Skip {
    Vanished,
    Denied,
    KernelThread,
}

fn classify(e: &io::Error) -> Skip {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Skip::Denied,
        _ => Skip::Vanished,
    }
}

/// A network namespace's sockets: inode → (protocol, entry).
type NetTable = HashMap<u64, (&'static str, NetEntry)>;

/// What could not be read of one process.
#[derive(Default)]
struct Gaps {
    partial: bool,
    denied: bool,
}

impl Gaps {
    fn note(&mut self, e: &io::Error) {
        self.partial = true;
        if matches!(classify(e), Skip::Denied) {
            self.denied = true;
        }
    }
}

/// A process's view of its root: the mount (by the kernel's mount id,
/// unique across namespaces) and the directory on it. Processes with the
/// same key resolve every path alike, so a full scan opens that root once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RootKey {
    mnt_id: u64,
    id: FileId,
}

/// Roots a full scan holds open at most (descriptors: the soft limit is
/// often 1024). A host with more views than this opens the rest each time.
const ROOTS_HELD: usize = 256;

/// Per-scan state: each root, network namespace and path is looked at once
/// per scan, however many processes share it.
#[derive(Default)]
struct ScanCtx {
    /// Event-time scans of one pid do not read the socket tables.
    skip_sockets: bool,
    /// A process exiting (no exe any more) or a zombie with no threads
    /// left is gone, not a process with nothing mapped: an event-time scan
    /// must not replace the record its exec made with an empty one (its
    /// exit event closes it).
    skip_exited: bool,
    dbs: HashMap<FileId, Option<Arc<PackageDb>>>,
    /// root → in-root path → the file now at that path.
    current: HashMap<FileId, HashMap<Vec<u8>, Option<FileNow>>>,
    /// Full scans only: reuse what a quiet process's last full read found
    /// (see [`Quiet`]), and remember this scan's quiet processes here.
    reuse: bool,
    quiet: HashMap<u32, Quiet>,
    /// Full scans only: the roots opened so far, by view. Dropped with the
    /// scan, so no root (a container's) stays open between scans.
    roots: Option<HashMap<RootKey, Arc<RootFs>>>,
    /// No process changed cgroups since the last full scan read them.
    cgroups_unchanged: bool,
    /// network namespace inode → socket inode → (protocol, entry).
    net: HashMap<u64, Arc<NetTable>>,
    stats: ScanStats,
    /// The host's namespaces, for "shares the host's pid/net/mnt namespace".
    host_ns: NsIds,
    /// Workload attribution by the exact cgroup lines.
    workload_by_cgroup: HashMap<Vec<parse::cgroup::CgroupLine>, String>,
    /// This scan's workloads by id.
    workloads: HashMap<String, Workload>,
}

impl ScanCtx {
    /// The file at `in_root` in `root` now, looked up once per scan.
    fn file_now(&mut self, root: &RootFs, in_root: &[u8]) -> Option<FileNow> {
        let paths = self.current.entry(root.id()).or_default();
        if let Some(now) = paths.get(in_root) {
            return *now;
        }
        let now = root.metadata(in_root).ok().map(|m| (m.id, m.ctime_ns));
        paths.insert(in_root.to_vec(), now);
        now
    }

    /// Records what a caller just looked up, so `file_now` need not.
    fn knows(&mut self, root: &RootFs, in_root: &[u8], now: Option<FileNow>) {
        self.current
            .entry(root.id())
            .or_default()
            .insert(in_root.to_vec(), now);
    }
}

/// Full scans after which a quiet process is read in full again whatever
/// its schedstat says. That bounds what a change the process did not make
/// itself can hide: a process sharing its memory (clone with CLONE_VM but
/// not CLONE_THREAD) mapping files, a pivot_root in its mount namespace,
/// a ptracer writing its argv. At the 30 s default, 5 minutes.
const QUIET_REFRESH: u32 = 10;

/// A single-threaded process read in full by an earlier full scan, reused
/// while it has not run since.
///
/// Its credentials, argv, namespaces, root and mappings change only by
/// its own system calls (setuid, setns, chroot, mmap, exec), and
/// /proc/PID/schedstat counts every time slice it gets: the same line means
/// no call was made. Reading that one small file replaces status, cmdline,
/// three namespace links, the root and exe links and the maps, which the
/// kernel formats anew at each read (the costliest part of a scan). Most
/// of a host's processes sleep between two scans.
///
/// What others can change is read every scan: the cgroup (a runtime moves
/// processes) and the files the mappings name (an upgrade replaces them:
/// any path that now names another file or ctime, a reloaded package
/// database, or another root means a full read).
#[derive(Debug)]
struct Quiet {
    start_ticks: u64,
    /// /proc/PID/schedstat at the read: time on the CPU (ns), time waiting
    /// and time slices.
    schedstat: Vec<u8>,
    /// Full scans since the full read.
    age: u32,
    own: OwnState,
    /// /proc/PID/cgroup as the last full scan read it (or reused it).
    cgroups: Arc<[parse::cgroup::CgroupLine]>,
}

/// What only the process itself can change, as one full read found it.
#[derive(Debug, Clone)]
struct OwnState {
    status: Option<parse::status::Status>,
    args: Vec<Vec<u8>>,
    ns_ids: NsIds,
    root_link: Vec<u8>,
    /// The root's identity and the load of its package database the
    /// artifacts were resolved with (0: none).
    root_id: Option<FileId>,
    generation: u64,
    /// The executable and the mapped files, before the language resolvers
    /// had their say, with the executable ranges of unnamed code.
    artifacts: Vec<Artifact>,
    code_ranges: Vec<(usize, (u64, u64))>,
    /// What each artifact's path named at the read (None for a memfd).
    files: Vec<Option<FileNow>>,
}

/// Where a process's files are looked up: its root, that root's package
/// database, and the root as the kernel names it (for paths in the host's
/// view).
struct ProcFiles<'a> {
    root: Option<&'a RootFs>,
    db: Option<&'a PackageDb>,
    root_link: &'a [u8],
}

impl Scanner {
    pub fn new(config: ScanConfig) -> Scanner {
        // SAFETY: sysconf has no preconditions.
        let clk_tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let meta = MetaReader::new(&config.runtime_root).ok();
        let netns = NetnsNames::new(&config.runtime_root);
        Scanner {
            config,
            resolver: Resolver::new(),
            lang: LangResolver::new(),
            recent: HashMap::new(),
            recent_exes: HashMap::new(),
            recent_roots: HashMap::new(),
            socket_scans_every: 1,
            scans: 0,
            force_sockets: false,
            sockets_read_ms: 0,
            netns,
            clk_tck: if clk_tck > 0 { clk_tck as u64 } else { 100 },
            meta,
            host_ns: None,
            btime: None,
            boot_ms: None,
            workload_cache: HashMap::new(),
            contents: HashMap::new(),
            pid_dir: None,
            exited: HashSet::new(),
            quiet: HashMap::new(),
            keep_quiet: true,
            cgroup_changes_next: None,
            cgroup_changes_last: None,
        }
    }

    /// A scanner for one full scan and no next one (`patchgap-agent
    /// scan`): it keeps no quiet processes for a next scan, so it reads no
    /// schedstat file and copies no process's state for later, work that
    /// only a next scan could make good. Later scans, if any, are correct,
    /// only never reuse a quiet process.
    pub fn single_scan(config: ScanConfig) -> Scanner {
        Scanner {
            keep_quiet: false,
            ..Scanner::new(config)
        }
    }

    pub fn config(&self) -> &ScanConfig {
        &self.config
    }

    /// The path of a file of /proc/PID: through the descriptor of the
    /// process being read (`/proc/self/fd/N/NAME`, so a recycled pid cannot
    /// slip in between two files), else by pid.
    fn proc_path(&self, pid: u32, name: &str) -> PathBuf {
        self.pid_path(pid).join(name)
    }

    /// /proc/PID itself, as `proc_path` reaches it.
    fn pid_path(&self, pid: u32) -> PathBuf {
        match &self.pid_dir {
            Some(d) if d.pid == pid => d.path(),
            _ => self.config.proc_root.join(pid.to_string()),
        }
    }

    /// Reads /proc/PID/NAME, with openat(2) on the pid's descriptor when it
    /// is the one being read.
    fn pid_read(&self, pid: u32, name: &str) -> io::Result<Vec<u8>> {
        match &self.pid_dir {
            Some(d) if d.pid == pid => d.read(name),
            _ => std::fs::read(self.proc_path(pid, name)),
        }
    }

    /// readlink of /proc/PID/NAME, with readlinkat(2) likewise.
    fn pid_read_link(&self, pid: u32, name: &str) -> io::Result<PathBuf> {
        match &self.pid_dir {
            Some(d) if d.pid == pid => d.read_link(name),
            _ => std::fs::read_link(self.proc_path(pid, name)),
        }
    }

    /// Holds /proc/PID open while `f` reads the process, so every file of
    /// it comes from one process even if the pid is recycled meanwhile.
    /// (Without the descriptor, when it cannot be opened, `f` reads by
    /// pid and fails as the files are gone.)
    fn with_pid_dir<T>(&mut self, pid: u32, f: impl FnOnce(&mut Self) -> T) -> T {
        let outer = self.pid_dir.take();
        self.pid_dir = PidDir::open(&self.config.proc_root, pid).ok();
        let out = f(self);
        self.pid_dir = outer;
        out
    }

    /// This host's identity. Missing pieces are empty, not errors.
    pub fn host_identity(&self) -> HostIdentity {
        let read = |p: &str| {
            std::fs::read_to_string(self.config.proc_root.join(p))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        // The host's machine-id, read through PID 1's root so that an agent in a
        // container with the host's /proc still names the host.
        let host_id = RootFs::open(&self.config.proc_root.join("1/root"))
            .and_then(|r| r.read(b"/etc/machine-id", 4096))
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/machine-id")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_default();
        HostIdentity {
            host_id,
            hostname: read("sys/kernel/hostname"),
            boot_id: read("sys/kernel/random/boot_id"),
            kernel: read("sys/kernel/osrelease"),
            labels: self.config.labels.clone(),
        }
    }

    /// Scans one process now: at its exec, or when an event names a
    /// process the agent has not seen. Returns the process and its
    /// workload, or None when it is gone (or a kernel thread).
    pub fn scan_pid(&mut self, pid: u32) -> Option<(Process, Workload)> {
        let host_ns = self.host_ns_cached();
        let mut ctx = ScanCtx {
            host_ns,
            skip_sockets: true,
            skip_exited: true,
            ..Default::default()
        };
        let process = self.scan_process(pid, &mut ctx).ok()?;
        let workload = ctx.workloads.remove(&process.workload)?;
        Some((process, workload))
    }

    /// A light record of a process that just exec'd, from the event and at
    /// most two small /proc files (stat, cgroup): most exec'd processes live
    /// for milliseconds, and a full read of each would cost more than the
    /// budget allows. The event's start time keys the process even when it
    /// is already gone; its workload is then unknown here (None) and the
    /// caller takes the parent's. `alive` says whether /proc still had it,
    /// so a full scan is worth scheduling.
    pub fn exec_record(&mut self, e: ExecInfo<'_>) -> ExecRecord {
        if self.exited(e.pid, e.start_ticks) {
            return self.exec_record_in(e, true);
        }
        self.with_pid_dir(e.pid, |s| s.exec_record_in(e, false))
    }

    /// `gone`: the process's exit is in this batch (see `note_exited`).
    fn exec_record_in(&mut self, e: ExecInfo<'_>, gone: bool) -> ExecRecord {
        // The event carries the start time (the key), the parent, argv and
        // the path exec was given; only the cgroup needs /proc, and reading
        // it tells whether the process still runs. The start time is 0 only
        // from an old object: then /proc/PID/stat supplies it.
        let start_ticks = if e.start_ticks > 0 {
            Some(e.start_ticks)
        } else {
            self.pid_read(e.pid, "stat")
                .ok()
                .and_then(|b| parse::stat::parse_stat(&b).ok())
                .map(|s| s.start_ticks)
        };
        let cgroups = if gone {
            Err(io::Error::from(io::ErrorKind::NotFound))
        } else {
            self.pid_read(e.pid, "cgroup")
                .map(|b| parse::cgroup::parse_cgroup(&b))
        };
        let alive = cgroups.is_ok() && start_ticks.is_some();
        let start_ticks = start_ticks.unwrap_or(0);
        let ppid = e.ppid;
        let cgroups = cgroups.unwrap_or_default();
        let cgroup = primary_cgroup(&cgroups);
        let workload = if cgroups.is_empty() {
            None
        } else {
            Some(match self.workload_cache.get(&cgroups) {
                Some(w) => w.clone(),
                None => {
                    let w = attribute(&cgroups, &cgroup, self.meta.as_mut());
                    self.workload_cache.insert(cgroups, w.clone());
                    w
                }
            })
        };
        // The command line from the event, redacted like /proc's; a cut
        // argv says so, so nobody takes the prefix for all of it.
        let mut cmdline = parse::cmdline::redact_cmdline(&parse::cmdline::parse_cmdline(e.args));
        if e.args_truncated && !cmdline.is_empty() {
            cmdline.push_str(TRUNCATED);
        }
        // The executable, resolved to its package now: a process that lived
        // for milliseconds is never scanned, and this is all it leaves.
        let exe_artifact = self.exec_artifact(e.pid, e.ppid, e.filename, e.exe, gone);
        let exe = exe_artifact
            .as_ref()
            .map(|a| a.path.clone())
            .unwrap_or_else(|| PathBytes(e.filename.to_vec()));
        let boot_ms = self.boot_ms_cached();
        let process = Process {
            key: ProcessKey {
                pid: e.pid,
                start_ticks,
            },
            ppid,
            uid: e.uid,
            euid: e.uid,
            comm: e.comm.to_string(),
            exe,
            cmdline,
            cgroup,
            mnt_ns: 0,
            net_ns: 0,
            net_ns_name: String::new(),
            start_time_ms: self.start_time_ms(boot_ms, start_ticks),
            workload: workload.as_ref().map(|w| w.id.clone()).unwrap_or_default(),
            root: PathBytes::default(),
            artifacts: exe_artifact.into_iter().collect(),
            sockets: Vec::new(),
            // Not read yet: the full scan fills it in, if the process lives.
            partial: true,
            privilege: Privilege::default(),
        };
        ExecRecord {
            process,
            workload,
            alive,
        }
    }

    /// The `exe` artifact of a just-exec'd process from the path exec was
    /// given, resolved inside its root (its parent's when it is gone), under
    /// the path of the file it reached.
    /// None for a relative path or a file that is not there any more.
    fn exec_artifact(
        &mut self,
        pid: u32,
        ppid: u32,
        filename: &[u8],
        exe: Option<KernelFile>,
        gone: bool,
    ) -> Option<Artifact> {
        if !filename.starts_with(b"/") {
            return None;
        }
        // The kernel said which file runs, and in which root: an answer
        // for this root, path and very file holds without a syscall (for a
        // script, the file is its interpreter, which never matches the
        // script's answer).
        if let Some(k) = exe
            && let Some(r) = recent_for(&mut self.resolver, &self.recent_exes, k, filename)
        {
            return r.first().cloned();
        }
        let root = self.root_of(pid, Some(ppid), gone)?;
        // The root was not named or its database not known current: the
        // same, once the root is open.
        if let Some(k) = exe {
            let key = (root.0.id(), filename.to_vec());
            let generation = self.generation(&root.0);
            if let Some(r) = self.recent_exes.get(&key)
                && r.holds(k.file, generation)
            {
                return r.artifacts.first().cloned();
            }
        }
        // Execs come by the hundred per second, mostly of a few binaries:
        // a root's answer for a path is reused for a second, as long as the
        // path still reaches the same file and the database was not
        // reloaded (an upgrade renames a new file over the path).
        let (root, root_link) = (&root.0, &root.1);
        let meta = root.metadata(in_root_path(root_link, filename)).ok()?;
        let file = (meta.id, meta.ctime_ns);
        let key = (root.id(), filename.to_vec());
        let generation = self.generation(root);
        if let Some(r) = self.recent_exes.get(&key)
            && r.holds(file, generation)
        {
            return r.artifacts.first().cloned();
        }
        if self.recent_exes.len() > RECENT_LIMIT {
            self.recent_exes.clear();
        }
        let found = self.exec_artifact_in(root, root_link, filename);
        let generation = self.generation(root);
        self.recent_exes.insert(
            key,
            Recent {
                at: Instant::now(),
                file,
                generation,
                artifacts: found.iter().cloned().collect(),
            },
        );
        found
    }

    fn exec_artifact_in(
        &mut self,
        root: &RootFs,
        root_link: &[u8],
        filename: &[u8],
    ) -> Option<Artifact> {
        // The path exec was given may be a symlink (/usr/bin/python3); the
        // exe is the file it reached, as /proc/PID/exe would name it. The
        // kernel names the file we open the same way (inside the root, no
        // symlink followed out of it).
        let file = root.open_file(in_root_path(root_link, filename)).ok()?;
        let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .ok()?
            .into_os_string()
            .into_encoded_bytes();
        drop(file);
        let meta = root.metadata(in_root_path(root_link, &path)).ok()?;
        if !meta.is_file {
            return None;
        }
        let mut ctx = ScanCtx::default();
        ctx.knows(
            root,
            in_root_path(root_link, &path),
            Some((meta.id, meta.ctime_ns)),
        );
        Some(self.artifact(
            &mut ctx,
            Some(root),
            root_link,
            path,
            meta.id.dev,
            meta.id.ino,
            ArtifactKind::Exe,
            false,
        ))
    }

    /// A light record of a process known only from a kernel event other
    /// than its exec (a connect of a process that forked without exec'ing
    /// and is gone): its key, parent, uid and comm. The caller fills in the
    /// workload (the parent's).
    pub fn event_record(
        &mut self,
        pid: u32,
        ppid: u32,
        uid: u32,
        comm: &str,
        start_ticks: u64,
    ) -> Process {
        let boot_ms = self.boot_ms_cached();
        Process {
            key: ProcessKey { pid, start_ticks },
            ppid,
            uid,
            euid: uid,
            comm: comm.to_string(),
            exe: PathBytes::default(),
            cmdline: String::new(),
            cgroup: String::new(),
            mnt_ns: 0,
            net_ns: 0,
            net_ns_name: String::new(),
            start_time_ms: self.start_time_ms(boot_ms, start_ticks),
            workload: String::new(),
            root: PathBytes::default(),
            artifacts: Vec::new(),
            sockets: Vec::new(),
            partial: true,
            privilege: Privilege::default(),
        }
    }

    /// Wall-clock ms of a start time in clock ticks since boot.
    fn start_time_ms(&self, boot_ms: i64, start_ticks: u64) -> i64 {
        boot_ms + (start_ticks * 1000 / self.clk_tck) as i64
    }

    /// The wall-clock time of boot in ms: CLOCK_REALTIME − CLOCK_BOOTTIME,
    /// which is what /proc/stat's btime is in whole seconds (so btime alone
    /// puts every start up to a second early). Used only when it agrees with
    /// the btime of the procfs being scanned (a fixture tree or another
    /// host's /proc has its own); kept while it moves less than 50 ms, so
    /// start times do not jitter between scans.
    fn boot_ms_cached(&mut self) -> i64 {
        let btime_ms = self.btime_cached() as i64 * 1000;
        let precise = clock_ms(libc::CLOCK_REALTIME) - clock_ms(libc::CLOCK_BOOTTIME);
        let fresh = if btime_ms > 0 && !(-1000..2000).contains(&(precise - btime_ms)) {
            btime_ms
        } else {
            precise
        };
        match self.boot_ms {
            Some(old) if (old - fresh).abs() <= 50 => old,
            _ => {
                self.boot_ms = Some(fresh);
                fresh
            }
        }
    }

    fn host_ns_cached(&mut self) -> NsIds {
        if let Some(ns) = self.host_ns {
            return ns;
        }
        let mut host_ns = self.ns_ids(1);
        if host_ns == NsIds::default() && self.is_kthreadd(2) {
            // Kernel threads live in the initial namespaces, as PID 1
            // does, and their links stay readable where PID 1's are not.
            host_ns = self.ns_ids(2);
        }
        if host_ns == NsIds::default() {
            host_ns = self.ns_ids_of("self");
        }
        self.host_ns = Some(host_ns);
        host_ns
    }

    /// Whether `pid` is the kernel's thread spawner (parent 0, `kthreadd`):
    /// only in the host's PID namespace.
    fn is_kthreadd(&self, pid: u32) -> bool {
        self.pid_read(pid, "stat")
            .ok()
            .and_then(|b| parse::stat::parse_stat(&b).ok())
            .is_some_and(|s| s.ppid == 0 && s.comm == b"kthreadd")
    }

    fn btime_cached(&mut self) -> u64 {
        if let Some(b) = self.btime {
            return b;
        }
        let btime = std::fs::read(self.config.proc_root.join("stat"))
            .ok()
            .and_then(|b| parse::stat::parse_btime(&b).ok())
            .unwrap_or(0);
        self.btime = Some(btime);
        btime
    }

    /// The artifact for a library-like file a process opened (an eBPF open
    /// event): resolved inside the process's root like a mapping. None when
    /// the process or the file is gone, or the path is relative.
    ///
    /// A process that has exited by the time its open is handled (events
    /// come in batches) has no root to look in any more: its parent's is
    /// used, which is the same root unless the process chrooted itself.
    ///
    /// Opens come by the hundred per second (every exec's loader opens
    /// libc), so a root's answer for a path is reused for a second, as long
    /// as the path still names the same file (one statx) and the root's
    /// database was not reloaded; a parent's root is kept as long.
    pub fn opened_artifacts(
        &mut self,
        key: ProcessKey,
        ppid: Option<u32>,
        path: &[u8],
        kernel: Option<KernelFile>,
    ) -> Vec<Artifact> {
        if !path.starts_with(b"/") {
            return Vec::new();
        }
        if self.recent.len() > RECENT_LIMIT {
            self.recent.clear();
        }
        // The kernel named the file opened or mapped, and the root: a
        // recent answer for them holds without a syscall.
        if let Some(k) = kernel
            && let Some(r) = recent_for(&mut self.resolver, &self.recent, k, path)
        {
            return r.to_vec();
        }
        let gone = self.exited(key.pid, key.start_ticks);
        let Some(root) = self.root_of(key.pid, ppid, gone) else {
            return Vec::new();
        };
        let (root, root_link) = (&root.0, &root.1);
        if let Some(k) = kernel {
            let generation = self.generation(root);
            if let Some(r) = self.recent.get(&(root.id(), path.to_vec()))
                && r.holds(k.file, generation)
            {
                return r.artifacts.clone();
            }
        }
        let Ok(meta) = root.metadata(in_root_path(root_link, path)) else {
            return Vec::new();
        };
        if !meta.is_file {
            return Vec::new();
        }
        let db = self.resolver.refresh_batch(root).ok();
        let generation = db.as_ref().map_or(0, |db| db.generation());
        let file = (meta.id, meta.ctime_ns);
        let key = (root.id(), path.to_vec());
        if let Some(r) = self.recent.get(&key)
            && r.holds(file, generation)
        {
            return r.artifacts.clone();
        }
        let found = self.opened_in(root, root_link, path, db.as_deref(), file);
        // The resolution may have reloaded the database (a file newer than
        // its last check): remember the answer under the load it used.
        let generation = self.generation(root);
        self.recent.insert(
            key,
            Recent {
                at: Instant::now(),
                file,
                generation,
                artifacts: found.clone(),
            },
        );
        found
    }

    /// Which load of the root's package database answers now (0: none).
    fn generation(&mut self, root: &RootFs) -> u64 {
        self.resolver
            .refresh_batch(root)
            .map_or(0, |db| db.generation())
    }

    /// The root of a process, or of its parent when it is gone (the same
    /// root unless the process chrooted itself). Parents' roots are reused
    /// for a second.
    fn root_of(&mut self, pid: u32, ppid: Option<u32>, gone: bool) -> Option<ProcRoot> {
        // (A process known to be gone has no root to open.)
        let own = match (!gone).then(|| RootFs::open(&self.proc_path(pid, "root"))) {
            Some(Ok(root)) => self
                .pid_read_link(pid, "root")
                .ok()
                .map(|l| Arc::new((root, l.into_os_string().into_encoded_bytes()))),
            _ => None,
        };
        own.or_else(|| {
            let ppid = ppid.filter(|&p| p > 0)?;
            if let Some((at, r)) = self.recent_roots.get(&ppid)
                && at.elapsed() < RECENT_FOR
            {
                return Some(r.clone());
            }
            let root = RootFs::open(&self.proc_path(ppid, "root")).ok()?;
            let link = std::fs::read_link(self.proc_path(ppid, "root")).ok()?;
            let r = Arc::new((root, link.into_os_string().into_encoded_bytes()));
            remember_root(&mut self.recent_roots, ppid, r.clone());
            Some(r)
        })
    }

    fn opened_in(
        &mut self,
        root: &RootFs,
        root_link: &[u8],
        path: &[u8],
        db: Option<&PackageDb>,
        file: FileNow,
    ) -> Vec<Artifact> {
        let meta_id = file.0;
        let mut ctx = ScanCtx::default();
        // The file was just looked up: artifact() need not stat it again.
        ctx.knows(root, in_root_path(root_link, path), Some(file));
        let opened = self.artifact(
            &mut ctx,
            Some(root),
            root_link,
            path.to_vec(),
            meta_id.dev,
            meta_id.ino,
            ArtifactKind::Opened,
            false,
        );
        // The same file under its language package's name: a module of a
        // Python distribution, a file of an npm package.
        let mut out = self.lang.opened(root, db, root_link, &opened);
        out.insert(0, opened);
        out
    }

    /// One full pass over the procfs root.
    pub fn scan(&mut self) -> Inventory {
        let wall = Instant::now();
        let cpu = thread_cpu_micros();
        let (hits, misses) = (self.resolver.hits, self.resolver.misses);
        // Each root's database is checked against dpkg's files once per scan.
        self.resolver.begin_batch();
        forget_expired_roots(&mut self.recent_roots);
        // The host's namespaces are PID 1's. Where PID 1 cannot be read (a
        // non-dumpable init, as on this project's VMs), kthreadd's (the
        // initial ones too); without the host's PID namespace, the agent's
        // own stand in.
        self.host_ns = None;
        self.btime = None;
        let host_ns = self.host_ns_cached();
        let sockets_read = self.scans.is_multiple_of(self.socket_scans_every.max(1));
        self.scans = self.scans.wrapping_add(1);
        let sockets_read = sockets_read || std::mem::take(&mut self.force_sockets);
        if sockets_read {
            // As of the start of the walk: a connect after this may be
            // missing from the tables, and eBPF adds it.
            self.sockets_read_ms = now_ms();
        }
        self.netns.refresh();
        let mut ctx = ScanCtx {
            host_ns,
            skip_sockets: !sockets_read,
            reuse: self.keep_quiet,
            roots: Some(HashMap::new()),
            ..Default::default()
        };
        let changes = self.cgroup_changes_next.take();
        ctx.cgroups_unchanged = changes.is_some() && changes == self.cgroup_changes_last;
        self.cgroup_changes_last = changes;
        if let Some(meta) = &mut self.meta {
            meta.begin_scan();
        }
        let mut pids: Vec<u32> = match std::fs::read_dir(&self.config.proc_root) {
            Ok(dir) => dir
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        pids.sort_unstable();
        let mut processes = Vec::with_capacity(pids.len());
        for pid in pids {
            match self.scan_process(pid, &mut ctx) {
                Ok(p) => processes.push(p),
                Err(Skip::Vanished) => ctx.stats.vanished += 1,
                Err(Skip::Denied) => ctx.stats.denied += 1,
                Err(Skip::KernelThread) => {}
            }
        }
        // Processes gone (or no longer quiet) are forgotten.
        self.quiet = std::mem::take(&mut ctx.quiet);
        self.resolver.retain_roots(|id| ctx.dbs.contains_key(id));
        self.lang.retain_roots(|id| ctx.dbs.contains_key(id));
        let mut stats = ctx.stats;
        stats.processes = processes.len() as u32;
        stats.resolve_cache_hits = self.resolver.hits - hits;
        stats.resolve_cache_misses = self.resolver.misses - misses;
        let scanned_at_ms = now_ms();
        stats.scanned_at_ms = scanned_at_ms;
        stats.sockets_read_ms = self.sockets_read_ms;
        stats.cpu_micros = thread_cpu_micros().saturating_sub(cpu);
        stats.wall_micros = wall.elapsed().as_micros() as u64;
        self.workload_cache = ctx
            .workload_by_cgroup
            .iter()
            .filter_map(|(lines, id)| Some((lines.clone(), ctx.workloads.get(id)?.clone())))
            .collect();
        let mut workloads: Vec<Workload> = ctx.workloads.into_values().collect();
        workloads.sort_by(|a, b| a.id.cmp(&b.id));
        Inventory {
            host: self.host_identity(),
            scanned_at_ms,
            stats,
            workloads,
            processes,
            sockets_read,
        }
    }

    /// The sensor's count of cgroup membership changes (its identity and
    /// the count), read just before the next full scan. When it is the
    /// same before two scans, no process changed cgroups in between, and
    /// the second scan reuses what the first read of each process it saw
    /// there (same pid and start). Without a count, every scan reads them.
    pub fn cgroup_changes_before_scan(&mut self, changes: Option<(u64, u64)>) {
        self.cgroup_changes_next = changes;
    }

    /// Reads sockets in one full scan out of `every` (the first scan always
    /// reads them). For an agent whose eBPF programs see every connect.
    pub fn set_socket_scans_every(&mut self, every: u32) {
        self.socket_scans_every = every.max(1);
    }

    /// The next full scan reads sockets whatever the schedule says.
    pub fn read_sockets_next(&mut self) {
        self.force_sockets = true;
    }

    /// Scans one pid. Only a missing or unreadable stat file skips the
    /// process; anything else missing later makes it `partial`.
    /// One process, in the order a responder's answer needs it: identity,
    /// workload, privilege, root, artifacts (executable, mappings, language
    /// packages) and sockets. Only a process gone before its stat was read
    /// is skipped; anything missing later makes it `partial`.
    fn scan_process(&mut self, pid: u32, ctx: &mut ScanCtx) -> Result<Process, Skip> {
        // Every file is read through one descriptor of /proc/PID, which
        // reaches only the process it was opened on: once that process is
        // gone, reads through it fail even if the pid was reused (see
        // `a_pid_directory_reads_only_its_own_process`). So the start time
        // read first keys everything read after it, and reading it again
        // at the end could never differ.
        self.with_pid_dir(pid, |s| s.scan_process_in(pid, ctx))
    }

    fn scan_process_in(&mut self, pid: u32, ctx: &mut ScanCtx) -> Result<Process, Skip> {
        let stat = self.read_stat(pid)?;
        if ctx.skip_exited && stat.state == b'Z' && stat.num_threads <= 1 {
            return Err(Skip::Vanished);
        }
        let mut gaps = Gaps::default();
        // A runtime moves processes between cgroups: read every scan,
        // unless the kernel counted no change since the last one read it.
        let kept = ctx
            .cgroups_unchanged
            .then(|| self.quiet.get(&pid))
            .flatten()
            .filter(|q| q.start_ticks == stat.start_ticks)
            .map(|q| q.cgroups.clone());
        let cgroups: Arc<[parse::cgroup::CgroupLine]> = match kept {
            Some(c) => {
                ctx.stats.cgroups_reused += 1;
                c
            }
            None => self
                .read_pid_file(pid, "cgroup", &mut gaps, |b| {
                    Some(parse::cgroup::parse_cgroup(b))
                })
                .unwrap_or_default()
                .into(),
        };
        let cgroup = primary_cgroup(&cgroups);
        let workload_id = self.workload_of(&cgroups, &cgroup, ctx);

        // The process's own root: its dpkg database and the files its mappings
        // name are looked up there.
        let root = self.process_root(pid, ctx);
        let root = root.as_deref();
        let db = self.package_db(root, ctx);
        let schedstat = self.schedstat(pid, &stat, ctx);
        let (own, age) = match self.quiet_own(pid, &stat, schedstat.as_deref(), root, ctx) {
            Some((own, age)) => {
                ctx.stats.reused += 1;
                (own, age + 1)
            }
            None => {
                let own = self.read_own(pid, &stat, root, db.as_deref(), ctx, &mut gaps)?;
                (own, 0)
            }
        };
        // A complete read of a quiet process is kept for the next scan.
        if let Some(schedstat) = schedstat
            && !gaps.partial
            && own.root_id.is_some()
        {
            ctx.quiet.insert(
                pid,
                Quiet {
                    start_ticks: stat.start_ticks,
                    schedstat,
                    age,
                    own: own.clone(),
                    cgroups,
                },
            );
        }
        let OwnState {
            status,
            args,
            ns_ids,
            root_link,
            mut artifacts,
            code_ranges,
            ..
        } = own;
        let (uid, euid) = status
            .as_ref()
            .map(|s| (s.uid[0], s.uid[1]))
            .unwrap_or((u32::MAX, u32::MAX));
        // The raw arguments stay in the agent: only argv[0] and an
        // interpreter's script path are used (to find its environment).
        let cmdline = parse::cmdline::redact_cmdline(&args);
        let (mnt_ns, net_ns) = (ns_ids.mnt, ns_ids.net);
        let net_ns_name = self.netns.name(net_ns, net_ns != ctx.host_ns.net);
        let privilege = match &status {
            Some(s) => privilege(s, ns_ids, ctx.host_ns),
            None => Privilege::default(),
        };
        let files = ProcFiles {
            root,
            db: db.as_deref(),
            root_link: &root_link,
        };
        let exe = artifacts
            .iter()
            .find(|a| a.kind == ArtifactKind::Exe)
            .map(|a| a.path.clone())
            .unwrap_or_default();
        self.lang_artifacts(pid, &files, &exe.0, &args, &mut artifacts);
        // Only now is it known which unlinked code no resolver named: that
        // is anonymous, and only that is read and hashed.
        named_code_is_not_anonymous(&mut artifacts);
        for (i, range) in code_ranges {
            if artifacts[i].kind == ArtifactKind::Anonymous {
                let inode = artifacts[i].inode;
                artifacts[i].content = Some(self.content_of(pid, range, inode));
            }
        }

        // A network namespace's tables list every socket in it (thousands in
        // TIME_WAIT on a busy host), so a single-process scan at an event
        // skips them: sockets come with full scans, connections from eBPF.
        let sockets = if ctx.skip_sockets {
            Vec::new()
        } else {
            self.sockets(pid, net_ns, ctx)
        };
        if gaps.denied {
            ctx.stats.denied += 1;
        }
        ctx.stats.artifacts += artifacts.len() as u32;
        ctx.stats.unresolved_artifacts +=
            artifacts.iter().filter(|a| a.package.is_none()).count() as u32;
        let boot_ms = self.boot_ms_cached();
        let start_time_ms = self.start_time_ms(boot_ms, stat.start_ticks);
        Ok(Process {
            key: ProcessKey {
                pid,
                start_ticks: stat.start_ticks,
            },
            ppid: stat.ppid,
            uid,
            euid,
            comm: String::from_utf8_lossy(&stat.comm).into_owned(),
            exe,
            cmdline,
            workload: workload_id,
            cgroup,
            mnt_ns,
            net_ns,
            net_ns_name,
            start_time_ms,
            root: PathBytes(root_link),
            artifacts,
            sockets,
            partial: gaps.partial,
            privilege,
        })
    }

    /// The root `pid` sees. A full scan opens each view once (its key is
    /// one statx, an open is three calls and a descriptor) and hands it to
    /// every process that sees the same mount and directory.
    fn process_root(&mut self, pid: u32, ctx: &mut ScanCtx) -> Option<Arc<RootFs>> {
        let path = self.proc_path(pid, "root");
        let key = match (&ctx.roots, &self.pid_dir) {
            (Some(_), Some(dir)) if dir.pid == pid => dir.root_key(),
            _ => None,
        };
        if let Some(key) = key
            && let Some(root) = ctx.roots.as_ref().and_then(|r| r.get(&key))
        {
            return Some(root.clone());
        }
        let root = Arc::new(RootFs::open(&path).ok()?);
        // (It chrooted between the two calls: not this key's root.)
        if let (Some(key), Some(roots)) = (key, &mut ctx.roots)
            && root.id() == key.id
            && roots.len() < ROOTS_HELD
        {
            roots.insert(key, root.clone());
        }
        Some(root)
    }

    /// /proc/PID/schedstat of a process whose state a full scan may reuse:
    /// single-threaded (the file counts the leader's time slices only) and
    /// not a zombie. None otherwise, or when the kernel accounts nothing.
    fn schedstat(&self, pid: u32, stat: &parse::stat::Stat, ctx: &ScanCtx) -> Option<Vec<u8>> {
        if !ctx.reuse || stat.num_threads != 1 || stat.state == b'Z' {
            return None;
        }
        // "0 0 0": no scheduler statistics (a kernel without SCHED_INFO).
        self.pid_read(pid, "schedstat")
            .ok()
            .filter(|s| !s.starts_with(b"0 "))
    }

    /// The last full read of `pid`, if the process has not run since and
    /// everything it resolved still holds, with its age.
    fn quiet_own(
        &mut self,
        pid: u32,
        stat: &parse::stat::Stat,
        schedstat: Option<&[u8]>,
        root: Option<&RootFs>,
        ctx: &mut ScanCtx,
    ) -> Option<(OwnState, u32)> {
        let schedstat = schedstat?;
        let q = self.quiet.remove(&pid)?;
        if q.start_ticks != stat.start_ticks
            || q.schedstat != schedstat
            || q.age + 1 >= QUIET_REFRESH
        {
            return None;
        }
        let root = root?;
        if q.own.root_id != Some(root.id()) || q.own.generation != self.generation(root) {
            return None;
        }
        // An upgrade replaced a file it maps (or anything touched one).
        for (a, was) in q.own.artifacts.iter().zip(&q.own.files) {
            if !is_memfd(&a.path.0)
                && ctx.file_now(root, in_root_path(&q.own.root_link, &a.path.0)) != *was
            {
                return None;
            }
        }
        Some((q.own, q.age))
    }

    /// Reads what only the process itself changes: credentials, argv,
    /// namespaces, root, executable and mappings.
    fn read_own(
        &mut self,
        pid: u32,
        stat: &parse::stat::Stat,
        root: Option<&RootFs>,
        db: Option<&PackageDb>,
        ctx: &mut ScanCtx,
        gaps: &mut Gaps,
    ) -> Result<OwnState, Skip> {
        let status =
            self.read_pid_file(pid, "status", gaps, |b| parse::status::parse_status(b).ok());
        let args = self
            .read_pid_file(pid, "cmdline", gaps, |b| {
                Some(parse::cmdline::parse_cmdline(b))
            })
            .unwrap_or_default();
        let ns_ids = self.ns_ids(pid);
        let root_link = match self.pid_read_link(pid, "root") {
            Ok(l) => l.into_os_string().into_encoded_bytes(),
            Err(e) => {
                gaps.note(&e);
                Vec::new()
            }
        };
        let files = ProcFiles {
            root,
            db,
            root_link: &root_link,
        };
        let mut artifacts = Vec::new();
        match self.pid_read_link(pid, "exe") {
            Ok(link) => artifacts.extend(self.exe_artifact(pid, link, ctx, &files)),
            // Exiting: its memory is gone (no exe, an empty cmdline) before
            // it is a zombie. At an event that is no news: its exec record
            // stands and its exit event closes it.
            Err(_) if ctx.skip_exited => return Err(Skip::Vanished),
            // A zombie has no executable any more; anyone else should.
            Err(_) if stat.state != b'Z' => gaps.partial = true,
            Err(_) => {}
        }
        let code_ranges = self.mapped_artifacts(pid, ctx, &files, &mut artifacts, gaps);
        let (root_id, generation) = match root {
            Some(root) => (Some(root.id()), self.generation(root)),
            None => (None, 0),
        };
        // Only a quiet process's next scan compares them.
        let files = if ctx.reuse {
            artifacts
                .iter()
                .map(|a| {
                    let root = root.filter(|_| !is_memfd(&a.path.0))?;
                    ctx.file_now(root, in_root_path(&root_link, &a.path.0))
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(OwnState {
            status,
            args,
            ns_ids,
            root_link,
            root_id,
            generation,
            artifacts,
            code_ranges,
            files,
        })
    }

    /// /proc/PID/stat; a process without it is gone, and kernel threads have
    /// no user space to resolve.
    fn read_stat(&self, pid: u32) -> Result<parse::stat::Stat, Skip> {
        let stat_bytes = self.pid_read(pid, "stat").map_err(|e| classify(&e))?;
        let stat = parse::stat::parse_stat(&stat_bytes).map_err(|_| Skip::Vanished)?;
        if pid == 2 || stat.ppid == 2 {
            return Err(Skip::KernelThread);
        }
        Ok(stat)
    }

    /// A per-pid file, parsed; a read failure is a gap, not an error.
    fn read_pid_file<T>(
        &self,
        pid: u32,
        name: &str,
        gaps: &mut Gaps,
        parse: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Option<T> {
        match self.pid_read(pid, name) {
            Ok(b) => parse(&b),
            Err(e) => {
                gaps.note(&e);
                None
            }
        }
    }

    /// The workload of a process's cgroup lines: one attribution per distinct
    /// cgroup per scan, since the processes of a container share it.
    fn workload_of(
        &mut self,
        cgroups: &[parse::cgroup::CgroupLine],
        cgroup: &str,
        ctx: &mut ScanCtx,
    ) -> String {
        if let Some(id) = ctx.workload_by_cgroup.get(cgroups) {
            return id.clone();
        }
        let w = attribute(cgroups, cgroup, self.meta.as_mut());
        let id = w.id.clone();
        ctx.workload_by_cgroup.insert(cgroups.to_vec(), id.clone());
        ctx.workloads.entry(id.clone()).or_insert(w);
        id
    }

    /// The OS package database of a root, loaded once per root per scan.
    fn package_db(&mut self, root: Option<&RootFs>, ctx: &mut ScanCtx) -> Option<Arc<PackageDb>> {
        let root = root?;
        ctx.dbs
            .entry(root.id())
            .or_insert_with(|| self.resolver.refresh_batch(root).ok())
            .clone()
    }

    /// The executable `link` (the /proc/PID/exe link's target). stat() on
    /// the magic link reaches the file even when it was deleted; when that
    /// fails there is no artifact (and no gap).
    fn exe_artifact(
        &mut self,
        pid: u32,
        link: PathBuf,
        ctx: &mut ScanCtx,
        files: &ProcFiles,
    ) -> Option<Artifact> {
        use std::os::unix::fs::MetadataExt;
        let (path, deleted) = strip_deleted(link.into_os_string().into_encoded_bytes());
        let meta = std::fs::metadata(self.proc_path(pid, "exe")).ok()?;
        let (path, deleted) = real_name(
            files.root,
            files.root_link,
            path,
            deleted,
            meta.dev(),
            meta.ino(),
        );
        Some(self.artifact(
            ctx,
            files.root,
            files.root_link,
            path,
            meta.dev(),
            meta.ino(),
            ArtifactKind::Exe,
            deleted,
        ))
    }

    /// Every distinct file in /proc/PID/maps. Code mapped from a file that
    /// no path names and no package owns (a memfd, or an unlinked file:
    /// fileless loading) is `anonymous`; returned with the index and one
    /// executable range of each, for its content to be hashed once the
    /// language resolvers have had their say. A memfd that is not mapped
    /// executable is shared memory and left out.
    fn mapped_artifacts(
        &mut self,
        pid: u32,
        ctx: &mut ScanCtx,
        files: &ProcFiles,
        artifacts: &mut Vec<Artifact>,
        gaps: &mut Gaps,
    ) -> Vec<(usize, (u64, u64))> {
        let mut code_ranges = Vec::new();
        let bytes = match self.pid_read(pid, "maps") {
            Ok(bytes) => bytes,
            Err(e) => {
                gaps.note(&e);
                return code_ranges;
            }
        };
        let (entries, _malformed) = parse::maps::parse_maps(&bytes);
        // The files mapped executable, each with the range of one such
        // mapping, through which its content is read.
        let mut code = HashMap::new();
        for m in entries.iter().filter(|m| m.is_exec()) {
            code.entry((libc::makedev(m.dev_major, m.dev_minor), m.inode))
                .or_insert((m.start, m.end));
        }
        let mut seen = HashSet::new();
        for m in entries {
            let dev = libc::makedev(m.dev_major, m.dev_minor);
            let exec = code.get(&(dev, m.inode)).copied();
            // A memfd mapped only readable or writable is shared memory
            // (Wayland's cursor buffers, a JIT's data), not code.
            if m.is_memfd() && exec.is_none() {
                continue;
            }
            if !seen.insert((dev, m.inode, m.deleted, m.path.clone())) {
                continue;
            }
            let memfd = m.is_memfd();
            let (path, deleted) = if memfd {
                (m.path, m.deleted)
            } else {
                real_name(files.root, files.root_link, m.path, m.deleted, dev, m.inode)
            };
            let mut a = self.artifact(
                ctx,
                files.root,
                files.root_link,
                path,
                dev,
                m.inode,
                ArtifactKind::Mapped,
                deleted,
            );
            if let Some(range) = exec
                && a.package.is_none()
                && (memfd || a.deleted)
            {
                // Anonymous unless a language resolver names it; its
                // content is read once that is settled (see scan_process).
                a.kind = ArtifactKind::Anonymous;
                code_ranges.push((artifacts.len(), range));
            }
            artifacts.push(a);
        }
        code_ranges
    }

    /// What the file mapped at `range` of a process holds: its size and
    /// SHA-256 (up to [`HASH_LIMIT`]), cached by identity, size and mtime.
    ///
    /// /proc/PID/map_files/START-END is a link to the very file mapped
    /// there, not a path lookup: opening it cannot leave the file the kernel
    /// holds for that mapping (root may open it; the link needs
    /// CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE). The file is only read,
    /// never executed. The inode is checked against the maps line, so a
    /// range remapped in between is not mistaken for it; the device is not,
    /// as on overlayfs maps shows one device and fstat another.
    fn content_of(&mut self, pid: u32, range: (u64, u64), inode: u64) -> Content {
        use std::io::Read;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let unhashed = |size, why| Content {
            size,
            sha256: String::new(),
            unhashed: why,
        };
        let link = self.proc_path(pid, &format!("map_files/{:x}-{:x}", range.0, range.1));
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&link)
        {
            Ok(f) => f,
            // Gone (the process exited or unmapped it) or refused.
            Err(_) => return unhashed(0, "unreadable"),
        };
        let Ok(meta) = file.metadata() else {
            return unhashed(0, "unreadable");
        };
        if !meta.is_file() || meta.ino() != inode {
            return unhashed(0, "unreadable");
        }
        let key = (meta.dev(), meta.ino());
        let stamp = (meta.size(), meta.mtime(), meta.mtime_nsec());
        if let Some((s, c)) = self.contents.get(&key)
            && *s == stamp
        {
            return c.clone();
        }
        let content = if meta.size() > HASH_LIMIT {
            unhashed(meta.size(), "larger than 64 MiB")
        } else {
            let mut hasher = sha2::Sha256::default();
            let mut buf = vec![0; 64 << 10];
            let mut read = 0u64;
            let mut reader = file.take(HASH_LIMIT + 1);
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        sha2::Digest::update(&mut hasher, &buf[..n]);
                        read += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return unhashed(meta.size(), "unreadable"),
                }
            }
            if read > HASH_LIMIT {
                // It grew while being read.
                unhashed(read, "larger than 64 MiB")
            } else {
                let digest = sha2::Digest::finalize(hasher);
                Content {
                    size: read,
                    sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
                    unhashed: "",
                }
            }
        };
        if self.contents.len() >= CONTENTS_LIMIT {
            self.contents.clear();
        }
        self.contents.insert(key, (stamp, content.clone()));
        content
    }

    /// Language and binary packages: the process's Python environment,
    /// node_modules, open jars, and what its executable has compiled in.
    fn lang_artifacts(
        &mut self,
        pid: u32,
        files: &ProcFiles,
        exe: &[u8],
        args: &[Vec<u8>],
        artifacts: &mut Vec<Artifact>,
    ) {
        let Some(root) = files.root else {
            return;
        };
        let proc_dir = self.pid_path(pid);
        let view = ProcView {
            root,
            db: files.db,
            proc_dir: &proc_dir,
            root_link: files.root_link,
            exe,
            argv: args,
        };
        self.lang.process(&view, artifacts);
    }

    /// A process's pid, net and mount namespace ids (0 where unreadable).
    fn ns_ids(&self, pid: u32) -> NsIds {
        // readlinkat on the pid's descriptor: no walk through
        // /proc/self/fd/N for each of the three.
        let ns = |name: &str| {
            self.pid_read_link(pid, name)
                .ok()
                .and_then(|l| parse::cgroup::parse_ns_link(l.as_os_str().as_encoded_bytes()))
                .unwrap_or(0)
        };
        NsIds {
            pid: ns("ns/pid"),
            net: ns("ns/net"),
            mnt: ns("ns/mnt"),
        }
    }

    fn ns_ids_of(&self, dir: &str) -> NsIds {
        self.ns_ids_at(&self.config.proc_root.join(dir))
    }

    fn ns_ids_at(&self, dir: &Path) -> NsIds {
        let ns = |name: &str| {
            std::fs::read_link(dir.join("ns").join(name))
                .ok()
                .and_then(|l| parse::cgroup::parse_ns_link(l.as_os_str().as_encoded_bytes()))
                .unwrap_or(0)
        };
        NsIds {
            pid: ns("pid"),
            net: ns("net"),
            mnt: ns("mnt"),
        }
    }

    /// Builds one artifact: stale check and package resolution, both inside
    /// the process's root.
    #[allow(clippy::too_many_arguments)]
    fn artifact(
        &mut self,
        ctx: &mut ScanCtx,
        root: Option<&RootFs>,
        root_link: &[u8],
        path: Vec<u8>,
        dev: u64,
        inode: u64,
        kind: ArtifactKind,
        deleted: bool,
    ) -> Artifact {
        // A memfd executable (fileless execution) never was a file on disk:
        // it is neither stale nor owned by a package.
        if is_memfd(&path) {
            return Artifact {
                path: PathBytes(path),
                dev,
                inode,
                kind,
                deleted,
                stale: false,
                package: None,
                content: None,
            };
        }
        let in_root = in_root_path(root_link, &path);
        let mut stale = deleted;
        let mut package = None;
        if let Some(root) = root {
            let now = ctx.file_now(root, in_root);
            // The kernel marks a mapping whose file was unlinked (which is
            // what dpkg's rename-over does to the old file) as deleted. Beyond
            // that, a different inode at the same path on the same device
            // means the file was replaced. On overlayfs the path's st_dev is
            // the overlay's while maps shows the underlying device, so a
            // device mismatch alone proves nothing and is not called stale.
            let replaced = matches!(now, Some((id, _)) if id.dev == dev && id.ino != inode);
            stale |= replaced;
            // The ctime of the file at the path, when that is this file (on
            // overlayfs the device differs: see above). A file gone from its
            // path without a "(deleted)" mark has no ctime to go by (0).
            let current = match now {
                _ if stale => None,
                Some((_, ctime)) => Some(ctime),
                None => Some(0),
            };
            package = self.resolver.resolve(root, in_root, dev, inode, current);
        }
        Artifact {
            path: PathBytes(path),
            dev,
            inode,
            kind,
            deleted,
            stale,
            package,
            content: None,
        }
    }

    /// The process's sockets, from its fd links and its network namespace's
    /// tables.
    fn sockets(&self, pid: u32, net_ns: u64, ctx: &mut ScanCtx) -> Vec<Socket> {
        let inodes = match &self.pid_dir {
            Some(d) if d.pid == pid => d.socket_inodes().unwrap_or_default(),
            _ => {
                let Ok(fds) = std::fs::read_dir(self.proc_path(pid, "fd")) else {
                    return Vec::new();
                };
                fds.flatten()
                    .filter_map(|fd| {
                        let link = std::fs::read_link(fd.path()).ok()?;
                        parse::cgroup::parse_socket_link(link.as_os_str().as_encoded_bytes())
                    })
                    .collect()
            }
        };
        if inodes.is_empty() {
            return Vec::new();
        }
        let table = ctx
            .net
            .entry(net_ns)
            .or_insert_with(|| Arc::new(self.net_table(pid)))
            .clone();
        let found: Vec<(&'static str, NetEntry)> = inodes
            .iter()
            .filter_map(|i| table.get(i).copied())
            .collect();
        // Ports this process listens on: a connection from one of them was
        // accepted, not initiated.
        let listening: HashSet<u16> = found
            .iter()
            .filter(|(proto, e)| is_listening(proto, e))
            .map(|(_, e)| e.local.port())
            .collect();
        let mut out: Vec<Socket> = found
            .iter()
            .map(|(proto, e)| {
                let has_remote = e.remote.port() != 0 && !e.remote.ip().is_unspecified();
                Socket {
                    protocol: proto,
                    local_addr: e.local.ip().to_string(),
                    local_port: e.local.port(),
                    remote_addr: e.remote.ip().to_string(),
                    remote_port: e.remote.port(),
                    state: state_name(proto, e.state),
                    inode: e.inode,
                    outbound: has_remote
                        && !is_listening(proto, e)
                        && !listening.contains(&e.local.port()),
                    connect_ms: 0,
                }
            })
            .collect();
        out.sort_by_key(|s| s.inode);
        out
    }

    fn net_table(&self, pid: u32) -> NetTable {
        let mut table = HashMap::new();
        for proto in ["tcp", "tcp6", "udp", "udp6"] {
            if let Ok(bytes) = read_seq_file(&self.proc_path(pid, &format!("net/{proto}"))) {
                for e in parse::net::parse_net(&bytes).0 {
                    table.insert(e.inode, (proto, e));
                }
            }
        }
        table
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Starts an event batch: each root's package database is checked
    /// against dpkg's files at its first lookup in the batch.
    pub fn begin_batch(&mut self) {
        self.resolver.begin_batch();
        self.exited.clear();
    }

    /// Processes (pid, start ticks) whose exit events are in this batch:
    /// /proc no longer has them, so their exec records and opens go
    /// straight to what the event says and to the parent's root, without
    /// first failing to open /proc/PID (most exec'd processes live for
    /// milliseconds: a batch usually holds both their exec and their exit).
    pub fn note_exited(&mut self, exited: impl IntoIterator<Item = (u32, u64)>) {
        self.exited.extend(exited);
    }

    fn exited(&self, pid: u32, start_ticks: u64) -> bool {
        start_ticks > 0 && self.exited.contains(&(pid, start_ticks))
    }
}

/// Reads a procfs seq_file in large chunks. /proc/net/tcp restarts its walk
/// of the kernel's socket hash at every read(2), and std's read_to_end
/// starts with small reads: after a connect storm (thousands of TIME_WAIT
/// sockets) that made one scan cost tens of milliseconds in the kernel.
fn read_seq_file(path: &Path) -> io::Result<Vec<u8>> {
    read_to_eof(&mut std::fs::File::open(path)?, 256 << 10, false)
}

fn is_listening(proto: &str, e: &NetEntry) -> bool {
    let unconnected_udp = proto.starts_with("udp") && e.remote.port() == 0;
    (proto.starts_with("tcp") && e.state == parse::net::TCP_LISTEN) || unconnected_udp
}

fn state_name(proto: &str, state: u8) -> &'static str {
    if proto.starts_with("udp") {
        return match state {
            0x01 => "ESTABLISHED",
            0x07 => "UNCONN",
            _ => "UNKNOWN",
        };
    }
    match state {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        0x0C => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// The cgroup that names the workload: the v2 path, or on hybrid hosts where
/// v2 is "/", the first non-root v1 path (name=systemd first).
pub fn primary_cgroup(lines: &[parse::cgroup::CgroupLine]) -> String {
    let v2 = lines
        .iter()
        .find(|l| l.hierarchy == 0 && l.controllers.is_empty());
    if let Some(l) = v2
        && l.path != b"/"
    {
        return String::from_utf8_lossy(&l.path).into_owned();
    }
    let named = lines
        .iter()
        .find(|l| l.controllers.iter().any(|c| c == "name=systemd") && l.path != b"/");
    let any = lines.iter().find(|l| l.hierarchy != 0 && l.path != b"/");
    match named.or(any).or(v2) {
        Some(l) => String::from_utf8_lossy(&l.path).into_owned(),
        None => String::new(),
    }
}

/// The kernel appends " (deleted)" to the name of an unlinked file, and a
/// file may really be named "x (deleted)": the two read the same in
/// /proc/PID/maps and in the exe link. When a file with the full name
/// exists inside the process's root and is the mapped one (same device and
/// inode), it is that file, not a deleted one. Only names the parser marked
/// deleted cost a lookup.
fn real_name(
    root: Option<&RootFs>,
    root_link: &[u8],
    path: Vec<u8>,
    deleted: bool,
    dev: u64,
    inode: u64,
) -> (Vec<u8>, bool) {
    let Some(root) = root.filter(|_| deleted) else {
        return (path, deleted);
    };
    let mut full = path.clone();
    full.extend_from_slice(b" (deleted)");
    match root.metadata(in_root_path(root_link, &full)) {
        Ok(m) if m.id.dev == dev && m.id.ino == inode => (full, false),
        _ => (path, true),
    }
}

/// A memfd's name as the kernel shows it: never a file on disk.
fn is_memfd(path: &[u8]) -> bool {
    path.starts_with(b"/memfd:")
}

/// A clock's reading in ms.
fn clock_ms(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; REALTIME and BOOTTIME exist
    // on every kernel this runs on.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// Unlinked code a language resolver named (a C extension pip replaced
/// keeps the distribution and version it was loaded at) is a package's
/// file, mapped, not anonymous code: the scan called it anonymous only
/// because dpkg knew no owner.
fn named_code_is_not_anonymous(artifacts: &mut [Artifact]) {
    let named: HashSet<(u64, u64)> = artifacts
        .iter()
        .filter(|a| a.package.is_some())
        .map(|a| (a.dev, a.inode))
        .collect();
    for a in artifacts
        .iter_mut()
        .filter(|a| a.kind == ArtifactKind::Anonymous && named.contains(&(a.dev, a.inode)))
    {
        a.kind = ArtifactKind::Mapped;
        a.content = None;
    }
}

fn thread_cpu_micros() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

pub use patchgap_proto::time::now_ms;

/// Scans the given procfs root once. The entry point of `patchgap-agent scan`.
pub fn scan_once(proc_root: &Path, labels: BTreeMap<String, String>) -> Inventory {
    Scanner::new(ScanConfig {
        proc_root: proc_root.to_path_buf(),
        labels,
        ..ScanConfig::default()
    })
    .scan()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that blocks reading its stdin; each line it reads names a
    /// library to map with ctypes before it blocks again. Python's main
    /// thread is its only one.
    fn mapper() -> std::process::Child {
        std::process::Command::new("/usr/bin/python3")
            .args([
                "-S",
                "-c",
                "import ctypes,sys\nfor l in sys.stdin: ctypes.CDLL(l.strip()); print('ok', flush=True)",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Has the child map `lib`, and waits until it has.
    fn map_in(child: &mut std::process::Child, lib: &Path) {
        use std::io::{BufRead, Write};
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", lib.display()).unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ok");
    }

    fn scanned(s: &mut Scanner, pid: u32) -> (Process, ScanStats) {
        let inv = s.scan();
        let p = inv
            .processes
            .into_iter()
            .find(|p| p.key.pid == pid)
            .expect("child in scan");
        (p, inv.stats)
    }

    fn maps_file(p: &Process, path: &Path) -> Option<Artifact> {
        let path = path.as_os_str().as_encoded_bytes();
        // (Unlinked and owned by no package, it is anonymous code.)
        p.artifacts
            .iter()
            .find(|a| a.path.0 == path && a.kind != ArtifactKind::Exe)
            .cloned()
    }

    /// A library in a directory of its own, so the test may replace it.
    fn own_library(dir: &Path) -> PathBuf {
        let lib = dir.join("libz-copy.so.1");
        std::fs::copy("/usr/lib/x86_64-linux-gnu/libz.so.1", &lib).unwrap();
        lib
    }

    /// An answer for an opened file is reused on the kernel's identity of
    /// the file and root alone, with no syscall (a process long gone still
    /// gets it); a file with another change time is resolved again.
    #[test]
    fn kernel_identity_reuses_an_answer_only_for_the_same_file() {
        use std::os::unix::{ffi::OsStrExt, fs::MetadataExt};
        let lib = b"/usr/lib/x86_64-linux-gnu/libz.so.1";
        let mut s = Scanner::new(ScanConfig::default());
        s.begin_batch();
        let me = ProcessKey {
            pid: std::process::id(),
            start_ticks: 0,
        };
        let first = s.opened_artifacts(me, None, lib, None);
        assert!(
            first.iter().any(|a| a.package.is_some()),
            "libz1 owns it: {first:?}"
        );
        let (m, root) = (
            std::fs::metadata(std::ffi::OsStr::from_bytes(lib)).unwrap(),
            std::fs::metadata("/").unwrap(),
        );
        let id = |ctime_ns: i128| KernelFile {
            file: (
                FileId {
                    dev: m.dev(),
                    ino: m.ino(),
                },
                ctime_ns,
            ),
            root: Some(FileId {
                dev: root.dev(),
                ino: root.ino(),
            }),
        };
        let ctime = i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec());
        // No such process, and no parent to borrow a root from: only the
        // kernel's identity can answer.
        let gone = ProcessKey {
            pid: u32::MAX - 7,
            start_ticks: 1,
        };
        assert_eq!(s.opened_artifacts(gone, None, lib, Some(id(ctime))), first);
        assert!(
            s.opened_artifacts(gone, None, lib, Some(id(ctime + 1)))
                .is_empty(),
            "another file: resolved again, and there is no root to resolve it in"
        );
        assert!(s.opened_artifacts(gone, None, lib, None).is_empty());
    }

    /// A process that has not run since the last full scan is reused
    /// from it, and reads exactly as a fresh scanner reads it.
    #[test]
    fn a_quiet_process_is_reused_and_reads_as_fresh() {
        let mut child = mapper();
        let pid = child.id();
        map_in(&mut child, Path::new("libz.so.1"));
        let mut s = Scanner::new(ScanConfig::default());
        let (first, _) = scanned(&mut s, pid);
        let (second, stats) = scanned(&mut s, pid);
        assert_eq!(s.quiet.get(&pid).map(|q| q.age), Some(1), "reused");
        assert!(stats.reused >= 1);
        let (mut fresh, _) = scanned(&mut Scanner::new(ScanConfig::default()), pid);
        assert_eq!(second, first);
        // Another scanner reads the boot time from the clocks again: its
        // start times may differ by a millisecond.
        assert!((fresh.start_time_ms - second.start_time_ms).abs() <= 50);
        fresh.start_time_ms = second.start_time_ms;
        assert_eq!(second, fresh);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A quiet process that runs (and maps a library) is read in full.
    #[test]
    fn a_process_that_ran_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let lib = own_library(dir.path());
        let mut child = mapper();
        let pid = child.id();
        map_in(&mut child, Path::new("libz.so.1"));
        let mut s = Scanner::new(ScanConfig::default());
        scanned(&mut s, pid);
        let (p, _) = scanned(&mut s, pid);
        assert!(maps_file(&p, &lib).is_none());
        assert_eq!(s.quiet.get(&pid).map(|q| q.age), Some(1), "reused");
        map_in(&mut child, &lib);
        let (p, _) = scanned(&mut s, pid);
        assert!(maps_file(&p, &lib).is_some(), "the new mapping is seen");
        assert_eq!(s.quiet.get(&pid).map(|q| q.age), Some(0), "read in full");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A file replaced under a quiet process (an upgrade's rename-over)
    /// makes the process stale at the next scan, though it never ran.
    #[test]
    fn a_file_replaced_under_a_quiet_process_is_stale_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let lib = own_library(dir.path());
        let mut child = mapper();
        let pid = child.id();
        map_in(&mut child, &lib);
        let mut s = Scanner::new(ScanConfig::default());
        scanned(&mut s, pid);
        let (p, _) = scanned(&mut s, pid);
        assert!(!maps_file(&p, &lib).expect("mapped").stale);
        assert_eq!(s.quiet.get(&pid).map(|q| q.age), Some(1), "reused");
        let new = dir.path().join("new");
        std::fs::copy(&lib, &new).unwrap();
        std::fs::rename(&new, &lib).unwrap();
        let (p, _) = scanned(&mut s, pid);
        let a = maps_file(&p, &lib).expect("still mapped");
        assert!(a.stale && a.deleted, "{a:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// However quiet, a process is read in full every `QUIET_REFRESH` scans.
    #[test]
    fn a_quiet_process_is_read_in_full_now_and_then() {
        let mut child = mapper();
        let pid = child.id();
        map_in(&mut child, Path::new("libz.so.1"));
        let mut s = Scanner::new(ScanConfig::default());
        let mut ages = Vec::new();
        for _ in 0..=QUIET_REFRESH {
            scanned(&mut s, pid);
            ages.push(s.quiet.get(&pid).map(|q| q.age));
        }
        let expected: Vec<_> = (0..QUIET_REFRESH).chain([0]).map(Some).collect();
        assert_eq!(ages, expected);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Each remembered parent's root holds a descriptor: the expired ones
    /// go as new parents come, so the agent's descriptors stay few however
    /// many parents its events name.
    #[test]
    fn parents_roots_do_not_pile_up_descriptors() {
        let root: ProcRoot = Arc::new((RootFs::open(Path::new("/")).unwrap(), b"/".to_vec()));
        let mut roots = HashMap::new();
        let old = Instant::now() - RECENT_FOR - std::time::Duration::from_millis(10);
        roots.insert(7, (old, root.clone()));
        remember_root(&mut roots, 100_000, root.clone());
        assert_eq!(roots.len(), 1, "one expired went at the next insert");
        roots.insert(8, (old, root.clone()));
        forget_expired_roots(&mut roots);
        assert_eq!(roots.len(), 1, "and at a full scan");
        for ppid in 0..10 * RECENT_ROOTS_LIMIT as u32 {
            remember_root(&mut roots, ppid, root.clone());
            assert!(roots.len() <= RECENT_ROOTS_LIMIT);
        }
        assert!(
            roots.contains_key(&(10 * RECENT_ROOTS_LIMIT as u32 - 1)),
            "the newest stays"
        );
    }

    /// Unlinked code the Python resolver named (a pip-replaced extension)
    /// is mapped; unlinked code nobody named stays anonymous, with its hash.
    #[test]
    fn named_code_is_mapped_unnamed_code_stays_anonymous() {
        let anonymous = |ino: u64| Artifact {
            path: PathBytes(format!("/tmp/{ino}.so").into_bytes()),
            dev: 1,
            inode: ino,
            kind: ArtifactKind::Anonymous,
            deleted: true,
            stale: true,
            package: None,
            content: Some(Content {
                size: 3,
                sha256: "ab".into(),
                unhashed: "",
            }),
        };
        let pyyaml = Arc::new(crate::model::PackageInfo {
            ecosystem: "pypi".into(),
            name: "PyYAML".into(),
            source: String::new(),
            version: "6.0.1".into(),
            arch: String::new(),
            purl: "pkg:pypi/pyyaml@6.0.1".into(),
            distro: None,
            fixed_cves: Vec::new(),
            replaced_by: String::new(),
        });
        let mut named = anonymous(7);
        named.package = Some(pyyaml);
        let mut artifacts = vec![anonymous(7), named, anonymous(8)];
        named_code_is_not_anonymous(&mut artifacts);
        let kinds: Vec<(u64, ArtifactKind, bool)> = artifacts
            .iter()
            .map(|a| (a.inode, a.kind, a.content.is_some()))
            .collect();
        assert_eq!(
            kinds,
            [
                (7, ArtifactKind::Mapped, false),
                (7, ArtifactKind::Mapped, false),
                (8, ArtifactKind::Anonymous, true),
            ]
        );
    }

    /// The database of a root that no process uses any more is dropped.
    #[test]
    fn databases_of_vanished_roots_are_forgotten() {
        use crate::fixture::{ProcTemplate, TreeSpec, write_proc_tree};
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        let me = ProcTemplate::capture(Path::new("/proc"), std::process::id())
            .unwrap()
            .unwrap();
        let pids = write_proc_tree(&proc_root, &TreeSpec::new(2, vec![me])).unwrap();
        let other_root = dir.path().join("other-root");
        std::fs::create_dir_all(other_root.join("var/lib/dpkg")).unwrap();
        std::fs::write(
            other_root.join("var/lib/dpkg/status"),
            "Package: x\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n",
        )
        .unwrap();
        let link = proc_root.join(pids[1].to_string()).join("root");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&other_root, &link).unwrap();

        let mut scanner = Scanner::new(ScanConfig {
            proc_root: proc_root.clone(),
            labels: BTreeMap::new(),
            ..ScanConfig::default()
        });
        assert_eq!(scanner.scan().stats.processes, 2);
        assert_eq!(
            scanner.resolver().loaded_roots(),
            2,
            "the host's root and the other root"
        );
        std::fs::remove_dir_all(proc_root.join(pids[1].to_string())).unwrap();
        assert_eq!(scanner.scan().stats.processes, 1);
        assert_eq!(
            scanner.resolver().loaded_roots(),
            1,
            "the other root is forgotten"
        );
    }

    /// A real scan of this host finds this test process, with libc resolved
    /// to the version dpkg reports.
    /// The socket inodes of a process are read from its `fd` links: a
    /// listener this test opens is among them, and its other descriptors
    /// (files, pipes) are not.
    #[test]
    fn socket_inodes_are_read_from_the_fd_links() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
        let inode = parse::cgroup::parse_socket_link(link.as_os_str().as_encoded_bytes()).unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let dir = PidDir::open(Path::new("/proc"), std::process::id()).unwrap();
        let inodes = dir.socket_inodes().unwrap();
        assert!(inodes.contains(&inode), "{inode} not in {inodes:?}");
        let file_ino = std::os::unix::fs::MetadataExt::ino(&file.metadata().unwrap());
        assert!(!inodes.contains(&file_ino) || file_ino == inode);
        drop(listener);
        assert!(!dir.socket_inodes().unwrap().contains(&inode), "closed");
    }

    /// getdents64 records are walked by their length; a short, zero-length
    /// or unterminated record ends the walk instead of looping or reading
    /// past the buffer.
    #[test]
    fn dirent_records_are_walked_by_their_length() {
        fn record(name: &[u8], reclen: u16) -> Vec<u8> {
            let mut r = vec![0u8; 19];
            r[16..18].copy_from_slice(&reclen.to_ne_bytes());
            r.extend_from_slice(name);
            r.push(0);
            r.resize(usize::from(reclen).max(r.len()), 0);
            r
        }
        let mut buf = record(b".", 24);
        buf.extend(record(b"10", 24));
        buf.extend(record(b"255", 32));
        let names: Vec<&[u8]> = dirent_names(&buf).collect();
        assert_eq!(names, vec![&b".\0"[..], b"10\0", b"255\0"]);
        // Cut mid-record: the whole records before it only.
        assert_eq!(dirent_names(&buf[..30]).count(), 1);
        // A zero length, or one shorter than the header, ends the walk.
        assert_eq!(dirent_names(&record(b"x", 0)).count(), 0);
        assert_eq!(dirent_names(&record(b"x", 12)).count(), 0);
        // No NUL within the record.
        let mut unterminated = record(b"abc", 24);
        unterminated[19..].fill(b'a');
        assert_eq!(dirent_names(&unterminated).count(), 0);
        assert_eq!(dirent_names(&[]).count(), 0);
    }

    /// Two processes share a root in a full scan only when they see the
    /// same directory through the same mount: a bind of "/" in a mount
    /// namespace of its own has the host root's inode, but is another
    /// mount, whose submounts may differ.
    #[test]
    fn processes_share_a_root_only_through_the_same_mount() {
        let proc = Path::new("/proc");
        let key = |pid: u32| PidDir::open(proc, pid).unwrap().root_key();
        let Some(me) = key(std::process::id()) else {
            eprintln!("skipped: this kernel reports no mount id (before 5.8)");
            return;
        };
        let same = Kill(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
        assert_eq!(key(same.0.id()), Some(me), "same mount, same directory");
        let bind = tempfile::tempdir().unwrap();
        let other = Kill(
            std::process::Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind / {0} && exec chroot {0} sleep 30",
                    bind.path().display()
                ))
                .spawn()
                .unwrap(),
        );
        let pid = other.0.id();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default() != b"sleep\n" {
            assert!(Instant::now() < deadline, "the bound sleep never started");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let bound = key(pid).expect("a mount id");
        assert_eq!(bound.id, me.id, "the same directory");
        assert_ne!(bound.mnt_id, me.mnt_id, "through another mount");
        // A full scan resolves both, each through its own view.
        let mut scanner = Scanner::new(ScanConfig::default());
        let inv = scanner.scan();
        for pid in [same.0.id(), pid] {
            let p = inv
                .processes
                .iter()
                .find(|p| p.key.pid == pid)
                .expect("listed");
            let exe = p.artifacts.iter().find(|a| a.kind == ArtifactKind::Exe);
            assert!(
                exe.is_some_and(|a| a.package.is_some()),
                "{pid}: its sleep resolved to a package: {:?}",
                p.artifacts
            );
        }
        drop((same, other));
    }

    /// A child killed and reaped when the test ends, however it ends.
    struct Kill(std::process::Child);

    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A descriptor of /proc/PID keeps reading its own process: once that
    /// one is gone (and its pid free for another), reads through the
    /// descriptor fail rather than reaching whoever holds the pid now.
    #[test]
    fn a_pid_directory_reads_only_its_own_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let dir = PidDir::open(Path::new("/proc"), pid).unwrap();
        let stat = parse::stat::parse_stat(&dir.read("stat").unwrap()).unwrap();
        assert_eq!(stat.ppid, std::process::id());
        assert_eq!(
            dir.read_link("exe").unwrap(),
            std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
        );
        assert!(
            dir.path().join("maps").exists(),
            "paths go through the descriptor"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            dir.read("stat").is_err(),
            "the process is gone; so is what the descriptor reads"
        );
        assert!(dir.read_link("exe").is_err());
        assert!(!dir.path().join("maps").exists());
        // The scanner reads each process through such a descriptor (so
        // its first stat keys every later read); a live process comes out
        // whole, a gone one not at all.
        let mut scanner = Scanner::new(ScanConfig::default());
        let (me, _) = scanner.scan_pid(std::process::id()).expect("this process");
        assert!(!me.exe.0.is_empty() && !me.artifacts.is_empty());
        assert!(scanner.pid_dir.is_none(), "released after the read");
        assert!(scanner.scan_pid(pid).is_none());
    }

    #[test]
    fn scans_this_process() {
        let inv = scan_once(Path::new("/proc"), BTreeMap::new());
        let me = std::process::id();
        let p = inv
            .processes
            .iter()
            .find(|p| p.key.pid == me)
            .expect("self in scan");
        let libc6 = p
            .artifacts
            .iter()
            .find_map(|a| a.package.as_ref().filter(|p| p.name == "libc6"))
            .expect("libc6 resolved");
        let out = std::process::Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "libc6"])
            .output()
            .unwrap();
        assert_eq!(libc6.version, String::from_utf8_lossy(&out.stdout));
        assert!(
            libc6.purl.starts_with("pkg:deb/debian/libc6@"),
            "{}",
            libc6.purl
        );
        assert!(inv.stats.processes > 1);
    }
}
