//! Reads files inside a scanned process's root without ever following a symlink out of it.
//!
//! The agent looks at files through `/proc/PID/root` (or a fixture directory in tests). A path
//! inside that view is controlled by whoever owns the process, so a symlink such as
//! `/usr/lib/libssl.so.3 -> /etc/shadow`, `-> ../../../../etc/shadow` or
//! `-> /proc/self/root/etc/shadow` must never make the agent read a file of the host. Following
//! such links is the bug class of needrestart's CVE-2024-48990.
//!
//! Every lookup therefore goes through Linux's `openat2(2)` on a directory file descriptor of
//! the root, with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`:
//!
//! - `RESOLVE_IN_ROOT` makes the kernel treat the root descriptor as "/" for the whole lookup,
//!   as `chroot` would: absolute paths, absolute symlinks and ".." all stay inside it, so a link
//!   resolves exactly as the process itself sees it.
//! - `RESOLVE_NO_MAGICLINKS` refuses procfs "magic links" (such as `/proc/self/root` or
//!   `/proc/PID/fd/N`), which would otherwise jump to an object outside the root.
//!
//! A root opened with [`RootFs::open_beneath`] resolves with `RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS` instead. That suits a directory whose symlinks are not meant to be
//! read as a chroot would, such as a container runtime's state on the host: any lookup that
//! would leave the directory (an absolute symlink, a ".." that climbs above it, or an absolute
//! path) fails with `EXDEV`, reported as [`RootError::Escapes`], instead of being re-rooted.
//! Symlinks that stay inside still work. Paths given to such a root are relative to it; a
//! leading "/" is ignored.
//!
//! The kernel does this atomically for the whole path, so there is no check-then-open race. If
//! `openat2` is not available (`ENOSYS`: a kernel older than 5.6, or a seccomp profile that
//! blocks it), every lookup fails with [`RootError::Unsupported`]; there is no fallback to a
//! plain `open`, because that would reintroduce the bug.

use std::ffi::{CStr, CString, c_char};
use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;

/// The resolve flags of every lookup: stay inside the root, and refuse procfs magic links.
const RESOLVE_FLAGS: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

/// The resolve flags of a root opened with [`RootFs::open_beneath`]: fail (`EXDEV`) rather than
/// leave the root, and refuse procfs magic links.
const BENEATH_FLAGS: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;

/// How many times a lookup is retried when the kernel reports `EAGAIN` or `EINTR`.
///
/// With `RESOLVE_IN_ROOT` the kernel returns `EAGAIN` when a concurrent rename could have let a
/// ".." escape; the lookup is then safe to retry.
const MAX_RETRIES: usize = 32;

/// The most memory [`RootFs::read`] reserves up front, whatever the file's reported size.
const MAX_PREALLOC: u64 = 1 << 20;

/// A directory opened as the root of a filesystem view; all lookups resolve inside it.
#[derive(Debug)]
pub struct RootFs {
    /// The root directory, opened with `O_PATH | O_DIRECTORY | O_CLOEXEC`.
    fd: OwnedFd,
    /// The identity of the root directory.
    id: FileId,
    /// The `RESOLVE_*` flags of every lookup: [`RESOLVE_FLAGS`] or [`BENEATH_FLAGS`].
    resolve: u64,
}

/// The identity of a file: its device and inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The device number (`st_dev`).
    pub dev: u64,
    /// The inode number (`st_ino`).
    pub ino: u64,
}

/// What [`RootFs::metadata`] reports about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// The file's identity.
    pub id: FileId,
    /// The size in bytes (`st_size`; 0 for most procfs files).
    pub size: u64,
    /// The modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    /// The status change time (a rename, a chmod, a write), likewise.
    pub ctime_ns: i128,
    /// Whether the file is a directory.
    pub is_dir: bool,
    /// Whether the file is a regular file.
    pub is_file: bool,
}

/// An error from a lookup inside a [`RootFs`].
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The path does not exist (`ENOENT`, `ENOTDIR`), or the process vanished (`ESRCH`).
    #[error("not found")]
    NotFound,
    /// The agent may not look there (`EACCES`, `EPERM`).
    #[error("permission denied")]
    PermissionDenied,
    /// The file is larger than the caller's limit.
    #[error("file too large: {size} bytes, limit {limit}")]
    TooLarge {
        /// The file's size, or for a file whose reported size was too small (such as a procfs
        /// file), the number of bytes read before giving up, which is `limit + 1`.
        size: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// A lookup in a root opened with [`RootFs::open_beneath`] would have left it (`EXDEV`): an
    /// absolute symlink, or a ".." that climbs above the root.
    #[error("a symlink points outside the root")]
    Escapes,
    /// The kernel (or a seccomp filter) does not provide `openat2`.
    #[error("openat2 unsupported by this kernel")]
    Unsupported,
    /// Any other failure, such as a symlink loop or a procfs magic link (`ELOOP`), or a
    /// non-regular file given to [`RootFs::read`].
    #[error("{op} failed")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl RootError {
    /// Whether the path or the whole process is gone, which is normal while scanning.
    pub fn is_vanished(&self) -> bool {
        matches!(self, RootError::NotFound)
    }

    /// Whether the failure is a permission problem.
    pub fn is_denied(&self) -> bool {
        matches!(self, RootError::PermissionDenied)
    }

    /// Classifies an OS error from operation `op`.
    fn from_io(op: &'static str, source: io::Error) -> RootError {
        match source.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ESRCH) => RootError::NotFound,
            Some(libc::EACCES | libc::EPERM) => RootError::PermissionDenied,
            // Only openat2 with RESOLVE_BENEATH reports this: the lookup would have left the
            // root. RESOLVE_IN_ROOT never does (it re-roots instead).
            Some(libc::EXDEV) => RootError::Escapes,
            _ => RootError::Io { op, source },
        }
    }
}

impl RootFs {
    /// Opens `dir` (e.g. "/proc/1234/root" — following that one magic link is intended, it is
    /// the entry point — or a plain fixture directory).
    ///
    /// `dir` itself is opened with an ordinary `open`, following symlinks: it is chosen by the
    /// agent, not by the scanned process.
    pub fn open(dir: &Path) -> Result<RootFs, RootError> {
        RootFs::open_with(dir, RESOLVE_FLAGS)
    }

    /// Opens `dir` like [`RootFs::open`], but every later lookup uses `RESOLVE_BENEATH |
    /// RESOLVE_NO_MAGICLINKS` instead of `RESOLVE_IN_ROOT`: a symlink that would leave `dir`
    /// (absolute, or relative with enough "..") fails with [`RootError::Escapes`] instead of
    /// being resolved as if `dir` were "/".
    ///
    /// Paths are interpreted relative to `dir`; a leading "/" is ignored, and an empty path means
    /// `dir` itself.
    pub fn open_beneath(dir: &Path) -> Result<RootFs, RootError> {
        RootFs::open_with(dir, BENEATH_FLAGS)
    }

    /// Opens `dir` as a root whose lookups use the `RESOLVE_*` flags `resolve`.
    fn open_with(dir: &Path, resolve: u64) -> Result<RootFs, RootError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|e| RootError::from_io("open root", e))?;
        let meta = file_meta(&file)?;
        Ok(RootFs {
            fd: file.into(),
            id: meta.id,
            resolve,
        })
    }

    /// The identity of the root directory itself.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// Stat a path (absolute or relative, bytes; interpreted inside the root) without following
    /// a final symlink out of the root. Uses openat2(O_PATH) + fstat.
    ///
    /// Symlinks, the final one included, are followed inside the root, so the result describes
    /// the file the process would reach. An empty path means the root itself.
    pub fn metadata(&self, path: &[u8]) -> Result<FileMeta, RootError> {
        let fd = self.open_in_root(path, libc::O_PATH)?;
        file_meta(&File::from(fd))
    }

    /// A path descriptor (`O_PATH`) of a directory inside the root, to name
    /// it to calls that take a path (inotify) through `/proc/self/fd`
    /// without resolving the path again.
    pub fn open_dir_path(&self, path: &[u8]) -> Result<OwnedFd, RootError> {
        self.open_in_root(path, libc::O_PATH | libc::O_DIRECTORY)
    }

    /// Opens a regular file inside the root for reading, for callers that
    /// read parts of large files (a jar's central directory, an
    /// executable's section headers) with `read_at`.
    pub fn open_file(&self, path: &[u8]) -> Result<File, RootError> {
        // Resolve with O_PATH first and look at the type: opening a device
        // node for reading can have side effects, so nothing but a regular
        // file is ever opened for real.
        let pathfd = File::from(self.open_in_root(path, libc::O_PATH)?);
        let pmeta = pathfd
            .metadata()
            .map_err(|e| RootError::from_io("fstat", e))?;
        if !pmeta.file_type().is_file() {
            return Err(RootError::Io {
                op: "read",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("not a regular file: {}", type_name(pmeta.file_type())),
                ),
            });
        }
        // Reopen that very inode through our own descriptor; the path is not
        // resolved again, so nothing can be swapped in between.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{}", pathfd.as_raw_fd()))
            .map_err(|e| RootError::from_io("reopen", e))?;
        let meta = file
            .metadata()
            .map_err(|e| RootError::from_io("fstat", e))?;
        if !meta.file_type().is_file() || meta.ino() != pmeta.ino() || meta.dev() != pmeta.dev() {
            return Err(RootError::Io {
                op: "read",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("not a regular file: {}", type_name(meta.file_type())),
                ),
            });
        }
        Ok(file)
    }

    /// Read a whole regular file inside the root, refusing files larger than `limit` bytes
    /// (error, not truncation).
    ///
    /// The path is resolved with `O_PATH`, and anything that is not a regular file (a FIFO,
    /// socket, device or directory) is refused before it is ever opened for reading; the
    /// regular file is then reopened through `/proc/self/fd` with `O_NONBLOCK` and `O_NOCTTY`.
    /// The limit is checked against the reported size first and then while reading, so a file
    /// that reports a size of 0 (as procfs files do) or grows meanwhile is still refused.
    pub fn read(&self, path: &[u8], limit: u64) -> Result<Vec<u8>, RootError> {
        self.read_with_meta(path, limit).map(|(_, data)| data)
    }

    /// [`read`](Self::read), and the file's metadata as of the open: for a
    /// caller that keys what it makes of the contents by the file's
    /// identity, mtime and size, without resolving the path a second time.
    pub fn read_with_meta(
        &self,
        path: &[u8],
        limit: u64,
    ) -> Result<(FileMeta, Vec<u8>), RootError> {
        let file = self.open_file(path)?;
        let meta = file_meta(&file)?;
        if meta.size > limit {
            return Err(RootError::TooLarge {
                size: meta.size,
                limit,
            });
        }
        let reserve = usize::try_from(meta.size.min(MAX_PREALLOC)).unwrap_or(0);
        let mut data = Vec::with_capacity(reserve);
        (&file)
            .take(limit.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| RootError::from_io("read", e))?;
        let read = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if read > limit {
            return Err(RootError::TooLarge { size: read, limit });
        }
        Ok((meta, data))
    }

    /// List a directory's entry names inside the root (bytes), skipping "." and "..".
    ///
    /// The names are sorted bytewise so that the result does not depend on the filesystem's
    /// order. An empty path means the root itself.
    pub fn read_dir(&self, path: &[u8]) -> Result<Vec<Vec<u8>>, RootError> {
        let fd = self.open_in_root(
            path,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOCTTY | libc::O_NONBLOCK,
        )?;
        let mut names = DirStream::new(fd)?.names()?;
        names.sort_unstable();
        Ok(names)
    }

    /// Opens `path` inside the root with `openat2` and the given `O_*` flags (plus `O_CLOEXEC`).
    fn open_in_root(&self, path: &[u8], flags: libc::c_int) -> Result<OwnedFd, RootError> {
        let path: &[u8] = if self.resolve == BENEATH_FLAGS {
            // RESOLVE_BENEATH refuses an absolute path outright, so a leading "/" is taken to
            // mean the root, as it does for RESOLVE_IN_ROOT.
            let start = path.iter().position(|&b| b != b'/').unwrap_or(path.len());
            match &path[start..] {
                b"" => b".",
                rest => rest,
            }
        } else if path.is_empty() {
            b"/"
        } else {
            path
        };
        let path = CString::new(path).map_err(|_| RootError::Io {
            op: "openat2",
            source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        })?;
        // SAFETY: `open_how` is a plain C struct of integer fields, for which all-zero bytes are
        // a valid value; zero is also what the kernel requires for the fields not set below.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = u64::from((flags | libc::O_CLOEXEC).cast_unsigned());
        how.resolve = self.resolve;
        let mut last = io::Error::from_raw_os_error(libc::EAGAIN);
        for _ in 0..MAX_RETRIES {
            // SAFETY: the descriptor is open for the lifetime of `self`, `path` is a valid
            // NUL-terminated string and `how` is a valid `open_how` whose size is passed, as
            // openat2(2) requires; the kernel only reads through both pointers.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd.as_raw_fd(),
                    path.as_ptr(),
                    &raw const how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if ret >= 0 {
                let raw = libc::c_int::try_from(ret).map_err(|_| RootError::Io {
                    op: "openat2",
                    source: io::Error::other("the kernel returned an out-of-range descriptor"),
                })?;
                // SAFETY: a non-negative return value of openat2 is a new descriptor that
                // nothing else owns.
                return Ok(unsafe { OwnedFd::from_raw_fd(raw) });
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => last = err,
                Some(libc::ENOSYS) => return Err(RootError::Unsupported),
                _ => return Err(RootError::from_io("openat2", err)),
            }
        }
        Err(RootError::Io {
            op: "openat2",
            source: last,
        })
    }
}

/// Reads the metadata of an open file (works on `O_PATH` descriptors too).
fn file_meta(file: &File) -> Result<FileMeta, RootError> {
    let m = file
        .metadata()
        .map_err(|e| RootError::from_io("fstat", e))?;
    Ok(FileMeta {
        id: FileId {
            dev: m.dev(),
            ino: m.ino(),
        },
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        is_dir: m.is_dir(),
        is_file: m.is_file(),
    })
}

/// A short name for a file type, for error messages.
fn type_name(t: FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "unknown file type"
    }
}

/// A directory stream from `fdopendir`, closed with `closedir` on drop.
struct DirStream(NonNull<libc::DIR>);

impl DirStream {
    /// Wraps an open directory descriptor; the stream takes it over.
    fn new(fd: OwnedFd) -> Result<DirStream, RootError> {
        // SAFETY: `fd` is an open directory descriptor opened for reading. On success the stream
        // owns it (closedir closes it), so ownership is released below; on failure it stays
        // ours and is closed when `fd` drops.
        let dir = unsafe { libc::fdopendir(fd.as_raw_fd()) };
        match NonNull::new(dir) {
            Some(dir) => {
                let _ = fd.into_raw_fd();
                Ok(DirStream(dir))
            }
            None => Err(RootError::from_io("fdopendir", io::Error::last_os_error())),
        }
    }

    /// Reads all entry names except "." and "..".
    fn names(&mut self) -> Result<Vec<Vec<u8>>, RootError> {
        let mut names = Vec::new();
        loop {
            // SAFETY: errno is thread-local; it is reset so that the end of the stream (NULL
            // with errno unchanged) can be told apart from an error (NULL with errno set).
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `self.0` is an open stream from fdopendir, used only through `&mut self`.
            let entry = unsafe { libc::readdir(self.0.as_ptr()) };
            if entry.is_null() {
                let err = io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(0) | None => Ok(names),
                    Some(_) => Err(RootError::from_io("readdir", err)),
                };
            }
            // SAFETY: readdir returned a valid entry whose `d_name` is NUL-terminated and stays
            // valid until the next call on this stream; it is copied out at once. The field is
            // addressed with a raw pointer, because glibc may allocate an entry shorter than
            // `size_of::<dirent>()`, so no reference to the whole array may be made.
            let name = unsafe { CStr::from_ptr((&raw const (*entry).d_name).cast::<c_char>()) };
            let name = name.to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the stream came from fdopendir and is closed exactly once, here; closedir
        // also closes its descriptor.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}

/// Paths as the kernel shows them for another process (in /proc/PID/maps,
/// /proc/PID/map_files and /proc/PID/fd), turned into paths inside that
/// process's root.
///
/// For a process whose root is a plain directory of the host (chroot, or
/// unshare --root), the kernel shows mapped paths in the host's view, with
/// the root as a prefix; for a container that pivoted into its own mounts
/// the paths are already the container's view and the root link reads "/".
/// Either way this returns the path as seen from inside the root.
pub fn in_root_path<'a>(root_link: &[u8], path: &'a [u8]) -> &'a [u8] {
    if root_link.len() > 1
        && path.starts_with(root_link)
        && path.get(root_link.len()) == Some(&b'/')
    {
        &path[root_link.len()..]
    } else {
        path
    }
}

/// The kernel appends " (deleted)" to a path whose file was unlinked.
pub fn strip_deleted(mut path: Vec<u8>) -> (Vec<u8>, bool) {
    const SUFFIX: &[u8] = b" (deleted)";
    if path.ends_with(SUFFIX) {
        path.truncate(path.len() - SUFFIX.len());
        (path, true)
    } else {
        (path, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::sync::mpsc;
    use std::time::Duration;
    use tempfile::TempDir;

    /// The absolute target of the fixture's `etc/link`; the host file of that name must never
    /// be read.
    const HOST_PASSWD_FIXTURE: &str = "/etc/passwd-fixture";

    /// Builds a fixture root:
    ///
    /// ```text
    /// etc/os-release            "ID=fixture\n"
    /// etc/passwd-fixture        "fixture passwd\n"
    /// etc/link        -> /etc/passwd-fixture     (absolute, must stay inside)
    /// etc/rel         -> os-release              (relative)
    /// usr/lib/libfoo.so.1       "ELF-ish"
    /// lib             -> usr/lib
    /// escape          -> ../../../../../etc/hostname
    /// dotdot          -> ../../..
    /// proclink        -> /proc/self/root/etc/hostname
    /// loop1 -> loop2, loop2 -> loop1
    /// fifo                      (a named pipe)
    /// ```
    fn fixture() -> TempDir {
        let dir = TempDir::new().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).expect("mkdir etc");
        std::fs::create_dir_all(root.join("usr/lib")).expect("mkdir usr/lib");
        std::fs::write(root.join("etc/os-release"), "ID=fixture\n").expect("write");
        std::fs::write(root.join("etc/passwd-fixture"), "fixture passwd\n").expect("write");
        std::fs::write(root.join("usr/lib/libfoo.so.1"), "ELF-ish").expect("write");
        symlink(HOST_PASSWD_FIXTURE, root.join("etc/link")).expect("symlink");
        symlink("os-release", root.join("etc/rel")).expect("symlink");
        symlink("usr/lib", root.join("lib")).expect("symlink");
        symlink("../../../../../etc/hostname", root.join("escape")).expect("symlink");
        symlink("../../..", root.join("dotdot")).expect("symlink");
        symlink("/proc/self/root/etc/hostname", root.join("proclink")).expect("symlink");
        symlink("loop2", root.join("loop1")).expect("symlink");
        symlink("loop1", root.join("loop2")).expect("symlink");
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: `fifo` is a valid NUL-terminated path.
        let rc = unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) };
        assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
        dir
    }

    fn open_fixture(dir: &TempDir) -> RootFs {
        RootFs::open(dir.path()).expect("open fixture root")
    }

    #[test]
    fn reads_plain_and_relative_symlinked_files() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        assert_eq!(
            fs.read(b"/etc/os-release", 1024).expect("read"),
            b"ID=fixture\n"
        );
        assert_eq!(
            fs.read(b"etc/os-release", 1024).expect("read"),
            b"ID=fixture\n"
        );
        assert_eq!(fs.read(b"/etc/rel", 1024).expect("read"), b"ID=fixture\n");
        assert_eq!(
            fs.read(b"/lib/libfoo.so.1", 1024).expect("read"),
            b"ELF-ish"
        );
        let direct = fs.metadata(b"/usr/lib/libfoo.so.1").expect("stat");
        let via_link = fs.metadata(b"/lib/libfoo.so.1").expect("stat");
        assert_eq!(direct, via_link);
        assert!(direct.is_file && !direct.is_dir);
        assert_eq!(direct.size, 7);
        assert!(direct.mtime_ns > 0);
    }

    #[test]
    fn absolute_symlink_resolves_inside_the_root() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        let data = fs
            .read(b"/etc/link", 1024)
            .expect("read through absolute link");
        assert_eq!(data, b"fixture passwd\n");
        if let Ok(host) = std::fs::read(HOST_PASSWD_FIXTURE) {
            assert_ne!(data, host, "read the host's file");
        }
        let meta = fs.metadata(b"etc/link").expect("stat");
        let want = std::fs::metadata(dir.path().join("etc/passwd-fixture")).expect("stat");
        assert_eq!(meta.id.ino, want.ino());
    }

    #[test]
    fn dotdot_symlink_cannot_escape() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        match fs.read(b"/escape", 1 << 20) {
            Err(RootError::NotFound) => {}
            other => panic!("escape link must not reach the host: {other:?}"),
        }
        match fs.read(b"../../../../../../etc/hostname", 1 << 20) {
            Err(RootError::NotFound) => {}
            other => panic!("a '..' path must not reach the host: {other:?}"),
        }
        // Once the root has its own etc/hostname, the link reaches that one.
        std::fs::write(dir.path().join("etc/hostname"), "fixture-host\n").expect("write");
        assert_eq!(fs.read(b"/escape", 1024).expect("read"), b"fixture-host\n");
        // A '..' link to a directory lands on the root itself.
        assert_eq!(fs.metadata(b"dotdot").expect("stat").id, fs.id());
        assert_eq!(fs.metadata(b"/../..").expect("stat").id, fs.id());
        assert_eq!(
            fs.read_dir(b"dotdot").expect("list"),
            fs.read_dir(b"/").expect("list")
        );
    }

    #[test]
    fn proc_path_inside_the_root_is_the_roots_own() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        // The fixture has no /proc, so this absolute link finds nothing, rather than the host's
        // /proc/self/root.
        match fs.read(b"proclink", 1 << 20) {
            Err(RootError::NotFound) => {}
            other => panic!("proclink must not reach the host: {other:?}"),
        }
    }

    #[test]
    fn magic_links_are_refused() {
        let fs = RootFs::open(Path::new("/proc/self/root")).expect("open /proc/self/root");
        for path in [
            &b"/proc/self/root/etc/hostname"[..],
            b"/proc/self/cwd",
            b"/proc/self/exe",
        ] {
            match fs.metadata(path) {
                Err(RootError::Io {
                    op: "openat2",
                    source,
                }) if source.raw_os_error() == Some(libc::ELOOP) => {}
                other => panic!("{}: magic link followed: {other:?}", path.escape_ascii()),
            }
        }
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        match fs.read(b"loop1", 1024) {
            Err(RootError::Io { source, .. }) if source.raw_os_error() == Some(libc::ELOOP) => {}
            other => panic!("loop: {other:?}"),
        }
    }

    #[test]
    fn fifo_read_fails_quickly() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        let meta = fs.metadata(b"fifo").expect("stat fifo");
        assert!(!meta.is_file && !meta.is_dir);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(fs.read(b"/fifo", 1024));
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Err(RootError::Io { op: "read", source })) => {
                assert_eq!(source.kind(), io::ErrorKind::InvalidInput);
                assert!(source.to_string().contains("fifo"), "{source}");
            }
            Ok(other) => panic!("fifo read: {other:?}"),
            Err(_) => panic!("reading a fifo hung"),
        }
        drop(dir);
    }

    #[test]
    fn directories_are_not_read_as_files() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        match fs.read(b"/etc", 1024) {
            Err(RootError::Io { op: "read", .. }) => {}
            other => panic!("read of a directory: {other:?}"),
        }
    }

    #[test]
    fn size_limit_is_an_error_not_truncation() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        assert_eq!(
            fs.read(b"/usr/lib/libfoo.so.1", 7).expect("exact"),
            b"ELF-ish"
        );
        match fs.read(b"/usr/lib/libfoo.so.1", 6) {
            Err(RootError::TooLarge { size: 7, limit: 6 }) => {}
            other => panic!("limit: {other:?}"),
        }
        match fs.read(b"/usr/lib/libfoo.so.1", 0) {
            Err(e @ RootError::TooLarge { .. }) => {
                assert_eq!(e.to_string(), "file too large: 7 bytes, limit 0");
            }
            other => panic!("limit: {other:?}"),
        }
        assert_eq!(
            fs.read(b"/usr/lib/libfoo.so.1", u64::MAX)
                .expect("no limit"),
            b"ELF-ish"
        );
    }

    #[test]
    fn size_limit_holds_for_files_that_report_size_zero() {
        let fs = RootFs::open(Path::new("/proc/self/root")).expect("open /proc/self/root");
        assert_eq!(fs.metadata(b"/proc/self/status").expect("stat").size, 0);
        match fs.read(b"/proc/self/status", 16) {
            Err(RootError::TooLarge {
                size: 17,
                limit: 16,
            }) => {}
            other => panic!("procfs limit: {other:?}"),
        }
        let status = fs.read(b"/proc/self/status", 1 << 20).expect("read status");
        assert!(status.starts_with(b"Name:"));
    }

    #[test]
    fn missing_paths_are_not_found() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        for path in [
            &b"/nope"[..],
            b"etc/nope",
            b"etc/os-release/child",
            b"nope/",
        ] {
            let err = fs.read(path, 1024).expect_err("missing");
            assert!(err.is_vanished(), "{}: {err:?}", path.escape_ascii());
            assert!(!err.is_denied());
            assert_eq!(err.to_string(), "not found");
            assert!(fs.metadata(path).expect_err("missing").is_vanished());
            assert!(fs.read_dir(path).expect_err("missing").is_vanished());
        }
        assert!(matches!(
            RootFs::open(&dir.path().join("missing")),
            Err(RootError::NotFound)
        ));
        assert!(matches!(
            RootFs::open(&dir.path().join("etc/os-release")),
            Err(RootError::NotFound)
        ));
    }

    #[test]
    fn nul_byte_in_path_is_an_error() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        match fs.read(b"etc/os-release\0x", 1024) {
            Err(RootError::Io {
                op: "openat2",
                source,
            }) => {
                assert_eq!(source.kind(), io::ErrorKind::InvalidInput);
            }
            other => panic!("NUL path: {other:?}"),
        }
    }

    #[test]
    fn read_dir_lists_names() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        let names = fs.read_dir(b"/").expect("list root");
        let want: Vec<Vec<u8>> = [
            "dotdot", "escape", "etc", "fifo", "lib", "loop1", "loop2", "proclink", "usr",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        assert_eq!(names, want);
        assert_eq!(fs.read_dir(b"").expect("list root"), want);
        assert_eq!(
            fs.read_dir(b"lib").expect("list via link"),
            vec![b"libfoo.so.1".to_vec()]
        );
        let err = fs.read_dir(b"etc/os-release").expect_err("not a directory");
        assert!(err.is_vanished(), "{err:?}");
        let empty = TempDir::new().expect("temp dir");
        let fs = RootFs::open(empty.path()).expect("open");
        assert!(fs.read_dir(b"/").expect("list").is_empty());
    }

    #[test]
    fn root_identity() {
        let dir = fixture();
        let fs = open_fixture(&dir);
        let want = std::fs::metadata(dir.path()).expect("stat");
        assert_eq!(
            fs.id(),
            FileId {
                dev: want.dev(),
                ino: want.ino()
            }
        );
        let meta = fs.metadata(b"/").expect("stat root");
        assert_eq!(meta.id, fs.id());
        assert!(meta.is_dir && !meta.is_file);
        assert_eq!(fs.metadata(b"").expect("stat root").id, fs.id());
    }

    #[test]
    fn proc_self_root_reads_the_hosts_view() {
        let fs = RootFs::open(Path::new("/proc/self/root")).expect("open /proc/self/root");
        let ours = fs.read(b"/etc/hostname", 1 << 20);
        match std::fs::read("/etc/hostname") {
            Ok(want) => assert_eq!(ours.expect("read /etc/hostname"), want),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                assert!(ours.expect_err("missing").is_vanished());
            }
            Err(e) => panic!("std read of /etc/hostname: {e}"),
        }
        let meta = std::fs::metadata("/").expect("stat /");
        assert_eq!(
            fs.id(),
            FileId {
                dev: meta.dev(),
                ino: meta.ino()
            }
        );
    }

    #[test]
    fn in_root_path_strips_a_chroot_prefix_only_on_a_component_boundary() {
        assert_eq!(in_root_path(b"/", b"/usr/lib/x.so"), b"/usr/lib/x.so");
        assert_eq!(
            in_root_path(b"/srv/r", b"/srv/r/usr/lib/x.so"),
            b"/usr/lib/x.so"
        );
        assert_eq!(
            in_root_path(b"/srv/r", b"/srv/root/usr/lib/x.so"),
            b"/srv/root/usr/lib/x.so"
        );
    }

    #[test]
    fn strip_deleted_marks_deleted() {
        assert_eq!(
            strip_deleted(b"/a b (deleted)".to_vec()),
            (b"/a b".to_vec(), true)
        );
        assert_eq!(strip_deleted(b"/a b".to_vec()), (b"/a b".to_vec(), false));
    }

    fn open_fixture_beneath(dir: &TempDir) -> RootFs {
        RootFs::open_beneath(dir.path()).expect("open fixture root beneath")
    }

    #[test]
    fn beneath_absolute_symlink_escapes() {
        let dir = fixture();
        let fs = open_fixture_beneath(&dir);
        // etc/link -> /etc/passwd-fixture: RESOLVE_IN_ROOT would re-root it, RESOLVE_BENEATH
        // refuses it even though the fixture has a file of that name.
        for path in [&b"etc/link"[..], b"/etc/link", b"proclink"] {
            match fs.read(path, 1 << 20) {
                Err(e @ RootError::Escapes) => {
                    assert_eq!(e.to_string(), "a symlink points outside the root");
                    assert!(!e.is_vanished() && !e.is_denied());
                }
                other => panic!("{}: absolute link followed: {other:?}", path.escape_ascii()),
            }
            assert!(matches!(fs.metadata(path), Err(RootError::Escapes)));
        }
    }

    #[test]
    fn beneath_dotdot_symlink_escapes() {
        let dir = fixture();
        // Even with a file the link could land on inside the root, climbing out is refused.
        std::fs::write(dir.path().join("etc/hostname"), "fixture-host\n").expect("write");
        let fs = open_fixture_beneath(&dir);
        for path in [
            &b"escape"[..],
            b"dotdot",
            b"dotdot/etc/hostname",
            b"../etc/hostname",
            b"etc/../../etc/hostname",
        ] {
            match fs.metadata(path) {
                Err(RootError::Escapes) => {}
                other => panic!("{}: escaped the root: {other:?}", path.escape_ascii()),
            }
        }
        assert!(matches!(fs.read_dir(b"dotdot"), Err(RootError::Escapes)));
        // A link to a directory that climbs and comes back stays inside, and works.
        symlink("../etc", dir.path().join("usr/etc-link")).expect("symlink");
        assert_eq!(
            fs.read(b"usr/etc-link/hostname", 1024).expect("read"),
            b"fixture-host\n"
        );
    }

    #[test]
    fn beneath_relative_symlinks_inside_work() {
        let dir = fixture();
        let fs = open_fixture_beneath(&dir);
        assert_eq!(fs.read(b"etc/rel", 1024).expect("read"), b"ID=fixture\n");
        assert_eq!(fs.read(b"/etc/rel", 1024).expect("read"), b"ID=fixture\n");
        assert_eq!(
            fs.read(b"etc/../etc/os-release", 1024).expect("read"),
            b"ID=fixture\n"
        );
        assert_eq!(fs.read(b"lib/libfoo.so.1", 1024).expect("read"), b"ELF-ish");
        assert_eq!(fs.metadata(b"").expect("stat root").id, fs.id());
        assert_eq!(fs.metadata(b"/").expect("stat root").id, fs.id());
        assert_eq!(fs.metadata(b"///").expect("stat root").id, fs.id());
        assert_eq!(
            fs.read_dir(b"").expect("list"),
            open_fixture(&dir).read_dir(b"/").expect("list")
        );
        assert!(
            fs.read(b"etc/nope", 1024)
                .expect_err("missing")
                .is_vanished()
        );
        match fs.read(b"usr/lib/libfoo.so.1", 3) {
            Err(RootError::TooLarge { size: 7, limit: 3 }) => {}
            other => panic!("limit: {other:?}"),
        }
    }

    #[test]
    fn beneath_refuses_magic_links() {
        let fs = RootFs::open_beneath(Path::new("/proc/self/root")).expect("open beneath");
        for path in [
            &b"proc/self/cwd"[..],
            b"proc/self/exe",
            b"proc/self/root/etc",
        ] {
            match fs.metadata(path) {
                Err(RootError::Io {
                    op: "openat2",
                    source,
                }) if source.raw_os_error() == Some(libc::ELOOP) => {}
                other => panic!("{}: magic link followed: {other:?}", path.escape_ascii()),
            }
        }
    }
}
