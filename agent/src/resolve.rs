//! File → package resolution against the OS package database of the
//! process's own root: dpkg, rpm (rpmdb.sqlite) or apk.
//!
//! A process in a chroot or container is resolved against the database inside
//! its root, never against the host's. Databases are loaded once per root
//! (identified by the root directory's device and inode) and reloaded when
//! dpkg changes them. Resolutions are cached by (root, device, inode); the
//! cache deliberately outlives a database reload, because an inode that dpkg
//! has since replaced still belongs to the version that was installed when we
//! first saw it. That is how a stale mapping keeps naming the old version.
//!
//! Under change (an upgrade while processes start), three rules keep the
//! answers exact:
//!
//! * A database is checked against dpkg's files (the status file, its
//!   `updates/` journal, `info/`, rpm's and apk's databases: device, inode,
//!   mtime and size) at most once per scan or event batch, and again at
//!   once when a file to resolve changed (its ctime) after the last check:
//!   a file the loaded database may not know never gets that database's
//!   answer.
//! * dpkg's own view is the status file plus the journal in `updates/`, and
//!   a package whose files are on disk counts whatever its configuration
//!   state (`unpacked`, `half-configured`, ...). A `half-installed` package,
//!   whose files dpkg is replacing, is named without a version, and that
//!   answer is not cached.
//! * A cached answer for a file that is still current (the path names that
//!   inode) holds only for the database generation and the file ctime it was
//!   made with; answers for stale inodes are kept as they are.

use std::{collections::HashMap, sync::Arc};

use patchgap_proto::purl::Purl;

use crate::{
    dbwatch::DbWatch,
    model::PackageInfo,
    parse::{
        apk::parse_installed,
        dpkg::{
            DpkgPackage, Files, file_list_entries, parse_md5sums, parse_status_db,
            parse_status_entries,
        },
        rpm::{RpmHeader, parse_header_blob},
    },
    rootfs::{FileId, RootError, RootFs},
};

/// dpkg's files can be large on a fat host; this bounds what one root can
/// make the agent allocate.
const STATUS_LIMIT: u64 = 64 << 20;
const LIST_LIMIT: u64 = 16 << 20;
/// When the (root, dev, inode) cache grows past this, it is cleared.
const CACHE_LIMIT: usize = 1 << 20;

/// One root's OS package database (dpkg, rpm and apk, whichever the root
/// has), indexed by normalized file path.
///
/// The index keeps a 64-bit hash of each path, not the path: a Debian host
/// lists ~120,000 files (7 MB of names), and the names would be most of the
/// agent's memory. Two paths sharing a hash, or a path outside the database
/// hashing like one inside it, has odds of about 10^-14 per lookup.
#[derive(Debug, Default)]
pub struct PackageDb {
    packages: Vec<Arc<PackageInfo>>,
    by_path: ByPathKey<u32>,
    /// Packages dpkg is half way through replacing (`half-installed`): named
    /// without a version.
    unsettled: std::collections::HashSet<u32>,
    /// Paragraphs of the status file that could not be parsed.
    pub malformed: usize,
    /// Distinguishes loads: a cached answer names the load it came from.
    generation: u64,
}

/// Hands out database generations.
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl PackageDb {
    /// Loads `var/lib/dpkg/status` plus `info/*.list`, and the distroless
    /// layout `var/lib/dpkg/status.d/<pkg>` plus `<pkg>.md5sums`. A root
    /// without any of them is an empty database, not an error.
    pub fn load(root: &RootFs) -> Result<PackageDb, RootError> {
        Self::load_with(root, &mut ListCache::default())
    }

    /// Like `load`, reusing the file lists of `lists` that did not change
    /// since (same identity, mtime and size): an upgrade rewrites a few of
    /// a host's thousand lists, so a reload reads those and stats the rest.
    pub fn load_with(root: &RootFs, lists: &mut ListCache) -> Result<PackageDb, RootError> {
        let distro = Distro::read(root);
        let mut db = PackageDb {
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..PackageDb::default()
        };
        match root.read(b"/var/lib/dpkg/status", STATUS_LIMIT) {
            Ok(bytes) => {
                let (entries, malformed) = parse_status_entries(&bytes);
                db.malformed += malformed;
                let mut entries = DpkgState::from(entries);
                db.malformed += entries.apply_journal(root)?;
                let mut listed = Vec::new();
                for (files, pkg) in entries.packages() {
                    // Multi-Arch: same packages name their list "pkg:arch.list";
                    // older databases use "pkg.list" for everything.
                    let stem = pkg.list_stem();
                    let keys = match lists.keys(root, format!("/var/lib/dpkg/info/{stem}.list"))? {
                        Some(keys) => Some(keys),
                        None => {
                            lists.keys(root, format!("/var/lib/dpkg/info/{}.list", pkg.name))?
                        }
                    };
                    listed.push((files, pkg, keys));
                }
                // The index sized once, not grown through a dozen rehashes
                // of a hundred thousand keys.
                db.by_path.reserve(
                    listed
                        .iter()
                        .map(|(_, _, k)| k.as_ref().map_or(0, |k| k.len()))
                        .sum(),
                );
                for (files, pkg, keys) in listed {
                    if files == Files::HalfInstalled {
                        db.unsettled.insert(db.packages.len() as u32);
                    }
                    db.add_keys(pkg, &distro, keys.as_deref().map_or(&[], |k| &k[..]));
                }
                lists.sweep(root.id());
            }
            Err(RootError::NotFound) => {}
            Err(e) => return Err(e),
        }
        match root.read_dir(b"/var/lib/dpkg/status.d") {
            Ok(mut names) => {
                names.sort();
                for name in names {
                    if name.ends_with(b".md5sums") || name.starts_with(b".") {
                        continue;
                    }
                    let mut path = b"/var/lib/dpkg/status.d/".to_vec();
                    path.extend_from_slice(&name);
                    let Some(bytes) = read_optional(root, path.clone())? else {
                        continue;
                    };
                    let (packages, malformed) = parse_status_db(&bytes);
                    db.malformed += malformed;
                    path.extend_from_slice(b".md5sums");
                    let files = read_optional(root, path)?
                        .map(|b| parse_md5sums(&b))
                        .unwrap_or_default();
                    for pkg in packages {
                        db.add(&pkg, &distro, files.clone());
                    }
                }
            }
            Err(RootError::NotFound) => {}
            Err(e) => return Err(e),
        }
        db.load_rpm(root, &distro);
        db.load_apk(root, &distro);
        Ok(db)
    }

    /// rpm 4.16+ keeps its database in SQLite: table `Packages`, one
    /// header blob per package. The file is opened through the root (so a
    /// symlink cannot lead out of it) and handed to SQLite by descriptor,
    /// read-only and `immutable` so that nothing is written next to it.
    fn load_rpm(&mut self, root: &RootFs, distro: &Distro) {
        for path in RPMDB_PATHS {
            let Ok(file) = root.open_file(path) else {
                continue;
            };
            match read_rpmdb(&file) {
                Ok((headers, malformed)) => {
                    self.malformed += malformed;
                    for h in headers {
                        let pkg = rpm_package(&h, distro);
                        self.add_files(pkg, h.files);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "rpmdb.sqlite unreadable");
                    self.malformed += 1;
                }
            }
            return;
        }
    }

    /// apk's `lib/apk/db/installed`.
    fn load_apk(&mut self, root: &RootFs, distro: &Distro) {
        let Ok(bytes) = root.read(b"/lib/apk/db/installed", STATUS_LIMIT) else {
            return;
        };
        let (packages, malformed) = parse_installed(&bytes);
        self.malformed += malformed;
        for p in packages {
            let purl = Purl::apk(
                &distro.id,
                &p.name,
                &p.version,
                &p.arch,
                distro.qualifier().as_deref(),
            )
            .map(|p| p.to_string())
            .unwrap_or_default();
            let info = PackageInfo {
                ecosystem: "apk".into(),
                name: p.name.clone(),
                source: p.origin.clone(),
                version: p.version.clone(),
                arch: p.arch.clone(),
                purl,
                distro: None,
                fixed_cves: Vec::new(),
                replaced_by: String::new(),
            };
            self.add_files(info, p.files);
        }
    }

    /// Adds a package and the files it owns (directories included: rpm and
    /// apk list files, and a directory is never mapped anyway).
    fn add_files(&mut self, info: PackageInfo, files: Vec<Vec<u8>>) {
        let idx = self.packages.len() as u32;
        self.packages.push(Arc::new(info));
        for file in files {
            self.by_path
                .entry(path_key(&normalize(&file)))
                .or_insert(idx);
        }
    }

    fn add(&mut self, pkg: &DpkgPackage, distro: &Distro, files: Vec<Vec<u8>>) {
        self.add_keys(pkg, distro, &list_keys(files.iter().map(Vec::as_slice)));
    }

    fn add_keys(&mut self, pkg: &DpkgPackage, distro: &Distro, keys: &[u64]) {
        let idx = self.packages.len() as u32;
        let mut info = package_info(pkg, distro);
        if self.unsettled.contains(&idx) {
            info = without_version(info);
        }
        self.packages.push(Arc::new(info));
        for key in keys {
            self.by_path.insert(*key, idx);
        }
    }

    pub fn package_count(&self) -> usize {
        self.packages.len()
    }

    /// The package that owns `path` (inside the root), in either usrmerge
    /// spelling.
    pub fn owner(&self, path: &[u8]) -> Option<&Arc<PackageInfo>> {
        self.owner_settled(path).map(|(p, _)| p)
    }

    /// The owner of `path` and whether its version is settled (false while
    /// dpkg is replacing the package's files: the answer has no version and
    /// must not be remembered).
    pub fn owner_settled(&self, path: &[u8]) -> Option<(&Arc<PackageInfo>, bool)> {
        let idx = *self.by_path.get(&path_key(&normalize(path)))?;
        let pkg = self.packages.get(idx as usize)?;
        Some((pkg, !self.unsettled.contains(&idx)))
    }

    /// Which load of a root's database this is.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The index keys of a dpkg file list's files. Lists are sorted with each
/// directory before its contents, so an entry followed by "entry/..." is a
/// directory. Directories are shared by many packages and never mapped:
/// they are skipped.
fn list_keys<'a>(files: impl IntoIterator<Item = &'a [u8]>) -> Vec<u64> {
    let mut files = files.into_iter().peekable();
    let mut keys = Vec::with_capacity(files.size_hint().0);
    // One buffer for every normalized path: a list has thousands.
    let mut normalized = Vec::new();
    while let Some(file) = files.next() {
        if let Some(next) = files.peek()
            && next.len() > file.len()
            && next.starts_with(file)
            && next[file.len()] == b'/'
        {
            continue;
        }
        normalize_into(file, &mut normalized);
        keys.push(path_key(&normalized));
    }
    keys
}

/// A map keyed by [`path_key`]s, which are SipHash values already: hashing
/// them again (the default hasher) cost a one-shot scan more than a tenth
/// of the index's build, so the key is its own hash.
type ByPathKey<V> = HashMap<u64, V, std::hash::BuildHasherDefault<PathKeyHasher>>;

/// The hasher of [`ByPathKey`]: a `u64` key is its own hash.
#[derive(Debug, Default)]
struct PathKeyHasher(u64);

impl std::hash::Hasher for PathKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with it; anything else still hashes
        // (FNV-1a), never panics.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

/// A list file's identity, mtime and size.
type ListStamp = (FileId, i128, u64);
/// A root and a list's path in it.
type ListKey = (FileId, Vec<u8>);

/// dpkg file lists already read, by root and path, with the identity,
/// mtime and size they had: dpkg replaces a list by a rename when it
/// changes, so an unchanged stamp means unchanged contents.
#[derive(Debug, Default)]
pub struct ListCache {
    lists: HashMap<ListKey, (ListStamp, Arc<Vec<u64>>)>,
    /// Lists of the current load, so the entries of removed packages go.
    used: std::collections::HashSet<ListKey>,
}

impl ListCache {
    /// The keys of a list file, None when it does not exist.
    fn keys(&mut self, root: &RootFs, path: String) -> Result<Option<Arc<Vec<u64>>>, RootError> {
        let key = (root.id(), path.into_bytes());
        if let Some((s, keys)) = self.lists.get(&key) {
            let meta = match root.metadata(&key.1) {
                Ok(m) => m,
                Err(RootError::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            };
            if *s == (meta.id, meta.mtime_ns, meta.size) {
                let keys = keys.clone();
                self.used.insert(key);
                return Ok(Some(keys));
            }
        }
        // Not known, or changed: read it, stamped with the metadata of the
        // very file read (a first load, as in a one-shot scan, resolves
        // each of a host's thousand list paths once, not twice).
        let (meta, bytes) = match root.read_with_meta(&key.1, LIST_LIMIT) {
            Ok(read) => read,
            Err(RootError::NotFound | RootError::TooLarge { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let keys = Arc::new(list_keys(file_list_entries(&bytes)));
        self.used.insert(key.clone());
        self.lists
            .insert(key, ((meta.id, meta.mtime_ns, meta.size), keys.clone()));
        Ok(Some(keys))
    }

    /// Forgets the lists of this root that its last load did not use (the
    /// packages were removed).
    fn sweep(&mut self, root: FileId) {
        let used = std::mem::take(&mut self.used);
        self.lists.retain(|k, _| k.0 != root || used.contains(k));
    }
}

/// dpkg's view of its packages: the status file's paragraphs, with the
/// journal entries in `updates/` applied in order, as dpkg itself reads
/// them. dpkg writes a journal entry at each state change of a run and folds
/// them into the status file only at checkpoints and at the end, so during
/// an upgrade the status file alone still names the old version.
struct DpkgState {
    entries: Vec<crate::parse::dpkg::StatusEntry>,
}

impl From<Vec<crate::parse::dpkg::StatusEntry>> for DpkgState {
    fn from(entries: Vec<crate::parse::dpkg::StatusEntry>) -> Self {
        DpkgState { entries }
    }
}

impl DpkgState {
    /// Applies `updates/NNNN` (decimal names; `tmp.i` is an entry being
    /// written) in order. Returns the malformed paragraphs.
    fn apply_journal(&mut self, root: &RootFs) -> Result<usize, RootError> {
        let mut names = match root.read_dir(b"/var/lib/dpkg/updates") {
            Ok(names) => names,
            Err(RootError::NotFound) => return Ok(0),
            Err(e) => return Err(e),
        };
        names.retain(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit));
        names.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        let mut malformed = 0;
        for name in names {
            let mut path = b"/var/lib/dpkg/updates/".to_vec();
            path.extend_from_slice(&name);
            // An entry dpkg folded into the status file meanwhile is gone:
            // the status file read before it has what it said.
            let Some(bytes) = read_optional(root, path)? else {
                continue;
            };
            let (entries, bad) = parse_status_entries(&bytes);
            malformed += bad;
            for e in entries {
                self.entries.retain(|old| {
                    old.name != e.name
                        || (e.arch.is_some() && old.arch.is_some() && old.arch != e.arch)
                });
                self.entries.push(e);
            }
        }
        Ok(malformed)
    }

    /// Packages whose files are on disk, with their state.
    fn packages(&self) -> impl Iterator<Item = (Files, &DpkgPackage)> {
        self.entries
            .iter()
            .filter(|e| e.files != Files::Absent)
            .filter_map(|e| Some((e.files, e.package.as_ref()?)))
    }
}

/// The package with an empty version (and none in its purl): its owner is
/// known, the version of this file is not.
fn without_version(mut info: PackageInfo) -> PackageInfo {
    info.version.clear();
    info.purl = match info.purl.split_once('@') {
        Some((head, tail)) => {
            format!("{head}{}", tail.find('?').map(|i| &tail[i..]).unwrap_or(""))
        }
        None => info.purl,
    };
    info
}

/// The index key of a normalized path: SipHash with fixed keys, so it is
/// the same in every run of a build. SipHash-1-3 (`DefaultHasher::new`),
/// not the deprecated SipHash-2-4: a one-shot scan keys the 7 MB of a
/// Debian host's file lists, and the keys never leave the process.
fn path_key(path: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// Where rpm keeps rpmdb.sqlite: the classic path, and the one Fedora and
/// openSUSE moved to.
const RPMDB_PATHS: [&[u8]; 2] = [
    b"/var/lib/rpm/rpmdb.sqlite",
    b"/usr/lib/sysimage/rpm/rpmdb.sqlite",
];

/// Every package header in an rpmdb.sqlite, and how many blobs did not
/// parse.
fn read_rpmdb(file: &std::fs::File) -> Result<(Vec<RpmHeader>, usize), rusqlite::Error> {
    use rusqlite::OpenFlags;
    use std::os::fd::AsRawFd;
    let uri = format!("file:/proc/self/fd/{}?immutable=1", file.as_raw_fd());
    let conn = rusqlite::Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut stmt = conn.prepare("SELECT blob FROM Packages")?;
    let mut rows = stmt.query([])?;
    let (mut headers, mut malformed) = (Vec::new(), 0);
    while let Some(row) = rows.next()? {
        let blob: Vec<u8> = row.get(0)?;
        match parse_header_blob(&blob) {
            // The keys of rpm's signing keys are stored as packages too.
            Ok(h) if h.name == "gpg-pubkey" => {}
            Ok(h) => headers.push(h),
            Err(_) => malformed += 1,
        }
    }
    Ok((headers, malformed))
}

fn rpm_package(h: &RpmHeader, distro: &Distro) -> PackageInfo {
    let arch = h.arch.clone().unwrap_or_default();
    // "demo-1.2.3-4.fc40.src.rpm" → "demo".
    let source = h
        .source_rpm
        .as_deref()
        .and_then(|s| s.strip_suffix(".src.rpm"))
        .and_then(|s| s.rsplitn(3, '-').nth(2))
        .unwrap_or(&h.name)
        .to_string();
    // The builder moves an epoch prefix into the `epoch` qualifier.
    let version = match h.epoch {
        Some(epoch) => format!("{epoch}:{}-{}", h.version, h.release),
        None => format!("{}-{}", h.version, h.release),
    };
    let purl = Purl::rpm(
        &distro.id,
        &h.name,
        &version,
        &arch,
        distro.qualifier().as_deref(),
    )
    .map(|p| p.to_string())
    .unwrap_or_default();
    PackageInfo {
        ecosystem: "rpm".into(),
        name: h.name.clone(),
        source,
        version: h.evr(),
        arch,
        purl,
        distro: None,
        fixed_cves: Vec::new(),
        replaced_by: String::new(),
    }
}

fn read_optional(root: &RootFs, path: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, RootError> {
    match root.read(path.as_ref(), LIST_LIMIT) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(RootError::NotFound | RootError::TooLarge { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// With usrmerge, /lib is a symlink to /usr/lib, so the kernel shows
/// /usr/lib/x86_64-linux-gnu/libc.so.6 while dpkg's list says
/// /lib/x86_64-linux-gnu/libc.so.6 (and a few packages the other way round).
/// Both sides are mapped to the /usr spelling.
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 4);
    normalize_into(path, &mut out);
    out
}

/// [`normalize`] into `out` (cleared first), for callers that normalize
/// many paths with one buffer.
fn normalize_into(path: &[u8], out: &mut Vec<u8>) {
    const MERGED: [&[u8]; 6] = [
        b"/lib/",
        b"/lib32/",
        b"/lib64/",
        b"/libx32/",
        b"/bin/",
        b"/sbin/",
    ];
    out.clear();
    if MERGED.iter().any(|prefix| path.starts_with(prefix)) {
        out.extend_from_slice(b"/usr");
    }
    out.extend_from_slice(path);
}

/// The distribution of a root, from its os-release, for purls.
#[derive(Debug, Clone)]
struct Distro {
    id: String,
    version_id: String,
}

impl Distro {
    /// "<id>-<version>", a purl's `distro` qualifier, when the version is known.
    fn qualifier(&self) -> Option<String> {
        (!self.version_id.is_empty()).then(|| format!("{}-{}", self.id, self.version_id))
    }

    fn read(root: &RootFs) -> Distro {
        let mut d = Distro {
            id: "debian".into(),
            version_id: String::new(),
        };
        let bytes = root
            .read(b"/etc/os-release", 64 << 10)
            .or_else(|_| root.read(b"/usr/lib/os-release", 64 << 10))
            .unwrap_or_default();
        for line in String::from_utf8_lossy(&bytes).lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').trim_matches('\'');
            match k.trim() {
                "ID" if !v.is_empty() => d.id = v.to_ascii_lowercase(),
                "VERSION_ID" => d.version_id = v.to_string(),
                _ => {}
            }
        }
        d
    }
}

fn package_info(pkg: &DpkgPackage, distro: &Distro) -> PackageInfo {
    let purl = Purl::deb(
        &distro.id,
        &pkg.name,
        &pkg.version,
        &pkg.arch,
        distro.qualifier().as_deref(),
    )
    .map(|p| p.to_string())
    .unwrap_or_default();
    PackageInfo {
        ecosystem: "deb".into(),
        name: pkg.name.clone(),
        source: pkg.source.clone(),
        version: pkg.version.clone(),
        arch: pkg.arch.clone(),
        purl,
        distro: None,
        fixed_cves: Vec::new(),
        replaced_by: String::new(),
    }
}

/// What identifies a database's contents: when any of these change, dpkg has
/// run and the database is read again. dpkg replaces the status file by a
/// rename (a new inode), adds and removes journal entries in `updates/`, and
/// renames lists into `info/`, so each write changes one of these.
///
/// A directory's mtime comes from a coarse clock, so two journal entries
/// written within one tick leave it as it was after the first: the names of
/// the entries are part of the stamp too (dpkg numbers them in sequence).
/// They are read again only when they may have changed (see `read`): a
/// check runs per event batch, many times a second, and listing the
/// directory was most of its cost.
///
/// The third field is the wall time just before the names were last read
/// (not part of the comparison).
#[derive(Debug, Clone)]
struct DbStamp(Vec<Option<(FileId, i128, u64)>>, Vec<Vec<u8>>, i128);

impl PartialEq for DbStamp {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 && self.1 == other.1
    }
}

/// Where the journal is, and its index in `DbStamp`'s files.
const UPDATES: &[u8] = b"/var/lib/dpkg/updates";
const UPDATES_AT: usize = 1;

impl DbStamp {
    /// The stamp now. `last` is the previous stamp of this root: its
    /// journal names still hold when the journal directory is the same
    /// (identity, mtime, size) and its mtime was older than the time the
    /// names were read by more than the clock's slack, since any change
    /// after that read would have moved the mtime past it.
    fn read(root: &RootFs, last: Option<&DbStamp>) -> DbStamp {
        let paths: [&[u8]; 7] = [
            b"/var/lib/dpkg/status",
            UPDATES,
            b"/var/lib/dpkg/status.d",
            b"/var/lib/dpkg/info",
            RPMDB_PATHS[0],
            RPMDB_PATHS[1],
            b"/lib/apk/db/installed",
        ];
        let files: Vec<_> = paths
            .iter()
            .map(|p| root.metadata(p).ok().map(|m| (m.id, m.mtime_ns, m.size)))
            .collect();
        let (names, read_ns) = match (last, files[UPDATES_AT]) {
            (_, None) => (Vec::new(), wall_ns()),
            (Some(last), Some(now))
                if last.0[UPDATES_AT] == Some(now)
                    && now.1.saturating_add(CTIME_SLACK_NS) < last.2 =>
            {
                (last.1.clone(), last.2)
            }
            _ => {
                let read_ns = wall_ns();
                (root.read_dir(UPDATES).unwrap_or_default(), read_ns)
            }
        };
        DbStamp(files, names, read_ns)
    }
}

/// The kernel stamps ctime from a coarse clock (one tick, 4 ms at HZ=250,
/// behind the real time), so a file renamed just after a check can carry a
/// ctime a little before it. A file this close to a check counts as newer.
const CTIME_SLACK_NS: i128 = 50_000_000;

/// Wall-clock nanoseconds, comparable with file ctimes.
fn wall_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// A root's loaded database and when it was last compared with dpkg's
/// files.
#[derive(Debug)]
struct Loaded {
    stamp: DbStamp,
    db: Arc<PackageDb>,
    /// The wall time just before the stamp was last read: a file changed
    /// before it is known to the database (or to dpkg's files as read).
    verified_ns: i128,
    /// The batch in which it was last checked.
    batch: u64,
}

/// A remembered answer for a file.
#[derive(Debug, Clone)]
struct Cached {
    /// The database load it came from, and the file's ctime then: for a
    /// file that is still current, it holds only while both are the same.
    generation: u64,
    ctime_ns: i128,
    package: Option<Arc<PackageInfo>>,
    /// For "no package": the path it was asked under. An owner found holds
    /// for the inode under any name, but dpkg lists one spelling of a file
    /// and knows nothing of another (Perl opens its XS modules through
    /// `perl/5.36`, a symlink to the `perl/5.36.0` dpkg lists), so a miss
    /// holds only for the path that missed.
    missed_as: Option<Box<[u8]>>,
}

/// Resolution state that lives across scans.
#[derive(Debug, Default)]
pub struct Resolver {
    dbs: HashMap<FileId, Loaded>,
    cache: HashMap<(FileId, u64, u64), Cached>,
    lists: ListCache,
    /// The current scan or event batch: each root's database is checked at
    /// most once per batch, unless a newer file asks for it.
    batch: u64,
    pub hits: u64,
    pub misses: u64,
    /// Times dpkg's files were compared with the loaded database.
    pub checks: u64,
    /// Batches whose comparison inotify made unnecessary.
    pub unchanged: u64,
    /// Database loads.
    pub loads: u64,
    watch: Watch,
}

/// The inotify instance, opened at the first batch.
#[derive(Debug, Default)]
enum Watch {
    #[default]
    Unopened,
    Open(DbWatch),
    /// inotify is unavailable: every batch compares.
    Unavailable,
}

impl Watch {
    fn get(&mut self) -> Option<&mut DbWatch> {
        if matches!(self, Watch::Unopened) {
            *self = match DbWatch::new() {
                Ok(w) => Watch::Open(w),
                Err(error) => {
                    tracing::debug!(%error, "inotify unavailable: package databases are compared every batch");
                    Watch::Unavailable
                }
            };
        }
        match self {
            Watch::Open(w) => Some(w),
            _ => None,
        }
    }
}

impl Resolver {
    pub fn new() -> Resolver {
        Resolver::default()
    }

    /// Starts a scan or an event batch: the next lookup of each root checks
    /// its database against dpkg's files again.
    pub fn begin_batch(&mut self) {
        self.batch += 1;
    }

    /// The database for this root, reloaded if dpkg touched it since. Checks
    /// dpkg's files now.
    pub fn refresh(&mut self, root: &RootFs) -> Result<Arc<PackageDb>, RootError> {
        self.refresh_now(root)
    }

    /// The database for this root, checked against dpkg's files once per
    /// batch (see [`Resolver::begin_batch`]): event-time lookups (an open,
    /// an exec) come by the hundred per second.
    ///
    /// Where inotify watches the root's database directories and reported
    /// nothing since the last comparison, the files are not compared at
    /// all: the database is as current as it was then.
    pub fn refresh_batch(&mut self, root: &RootFs) -> Result<Arc<PackageDb>, RootError> {
        if let Some(l) = self.dbs.get_mut(&root.id()) {
            if l.batch == self.batch {
                return Ok(l.db.clone());
            }
            // Read before the events are: nothing changed up to here.
            let verified_ns = wall_ns();
            if self.watch.get().is_some_and(|w| w.unchanged(root.id())) {
                l.batch = self.batch;
                l.verified_ns = verified_ns;
                self.unchanged += 1;
                return Ok(l.db.clone());
            }
        }
        // Armed before the comparison, so a change made during it is
        // reported at the next batch.
        if let Some(w) = self.watch.get() {
            w.arm(root);
        }
        self.refresh_now(root)
    }

    /// The generation of the database of the root with this identity, when
    /// it is known to be current without touching the root: checked in this
    /// batch already, or unchanged by its watch since. None otherwise (the
    /// caller then opens the root and calls [`Resolver::refresh_batch`]).
    pub fn generation_if_current(&mut self, root: FileId) -> Option<u64> {
        let l = self.dbs.get_mut(&root)?;
        if l.batch != self.batch {
            let verified_ns = wall_ns();
            if !self.watch.get().is_some_and(|w| w.unchanged(root)) {
                return None;
            }
            l.batch = self.batch;
            l.verified_ns = verified_ns;
            self.unchanged += 1;
        }
        Some(l.db.generation())
    }

    fn refresh_now(&mut self, root: &RootFs) -> Result<Arc<PackageDb>, RootError> {
        self.checks += 1;
        let verified_ns = wall_ns();
        let last = self.dbs.get(&root.id()).map(|l| &l.stamp);
        let stamp = DbStamp::read(root, last);
        if let Some(l) = self.dbs.get_mut(&root.id())
            && l.stamp == stamp
        {
            // The same, but maybe listed later: keep the later listing time.
            l.stamp = stamp;
            l.verified_ns = verified_ns;
            l.batch = self.batch;
            return Ok(l.db.clone());
        }
        // dpkg may be writing while we read; the stamp read before the load
        // makes the next check see any change made during it.
        self.loads += 1;
        let started = std::time::Instant::now();
        let db = Arc::new(PackageDb::load_with(root, &mut self.lists)?);
        tracing::debug!(
            root.dev = root.id().dev,
            root.ino = root.id().ino,
            first = !self.dbs.contains_key(&root.id()),
            ms = started.elapsed().as_millis() as u64,
            "package database loaded"
        );
        self.dbs.insert(
            root.id(),
            Loaded {
                stamp,
                db: db.clone(),
                verified_ns,
                batch: self.batch,
            },
        );
        Ok(db)
    }

    /// Resolves a file of this root against its database (loaded by
    /// `refresh` or `refresh_batch`; None without one). `current` is the
    /// file's ctime when the file now at `path` is this very inode, None
    /// when it is not (the mapping is stale): a stale inode keeps the answer
    /// it got when it was current, and one never seen before is reported
    /// with its path's owner and an empty version, because the database
    /// only knows what replaced it.
    pub fn resolve(
        &mut self,
        root: &RootFs,
        path: &[u8],
        dev: u64,
        inode: u64,
        current: Option<i128>,
    ) -> Option<Arc<PackageInfo>> {
        let root_id = root.id();
        let key = (root_id, dev, inode);
        let generation = self.dbs.get(&root_id)?.db.generation;
        if let Some(hit) = self.cache.get(&key)
            && current.is_none_or(|c| hit.generation == generation && hit.ctime_ns == c)
            && hit.missed_as.as_deref().is_none_or(|p| p == path)
        {
            self.hits += 1;
            return hit.package.clone();
        }
        self.misses += 1;
        // A file changed after the last check may be newer than the
        // database: look at dpkg's files again before answering.
        if let Some(ctime) = current
            && ctime.saturating_add(CTIME_SLACK_NS) >= self.dbs.get(&root_id)?.verified_ns
        {
            let _ = self.refresh_now(root);
        }
        let db = self.dbs.get(&root_id)?.db.clone();
        let Some(ctime_ns) = current else {
            // Not cached: do not remember a guess under this inode.
            let owner = db.owner(path)?;
            return Some(Arc::new(without_version((**owner).clone())));
        };
        let package = match db.owner_settled(path) {
            // dpkg is replacing the package's files: no version, and not
            // remembered.
            Some((owner, false)) => return Some(owner.clone()),
            Some((owner, true)) => Some(owner.clone()),
            None => None,
        };
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(
            key,
            Cached {
                generation: db.generation,
                ctime_ns,
                missed_as: package.is_none().then(|| path.into()),
                package: package.clone(),
            },
        );
        package
    }

    /// Forgets the databases and resolutions of roots that no process uses
    /// any more, so a host that runs many short-lived containers does not
    /// keep every one's database in memory.
    pub fn retain_roots(&mut self, live: impl Fn(&FileId) -> bool) {
        self.dbs.retain(|id, _| live(id));
        if let Watch::Open(w) = &mut self.watch {
            w.retain_roots(&live);
        }
        self.cache.retain(|(root, _, _), _| live(root));
        self.lists.lists.retain(|(root, _), _| live(root));
    }

    pub fn loaded_roots(&self) -> usize {
        self.dbs.len()
    }

    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list's keys are those of its files (directories skipped), each in
    /// the /usr spelling, as a lookup of the mapped path computes them; the
    /// one buffer reused for every path leaves nothing of a longer path in
    /// a shorter one's key.
    #[test]
    fn list_keys_are_the_lookup_keys_of_the_files() {
        let list = b"/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libcrypto.so.3\n\
/lib/x86_64-linux-gnu/libssl.so.3\n/usr\n/usr/bin\n/usr/bin/openssl\n/etc/ssl/a\n";
        let keys = list_keys(file_list_entries(list));
        let expected: Vec<u64> = [
            &b"/usr/lib/x86_64-linux-gnu/libcrypto.so.3"[..],
            b"/usr/lib/x86_64-linux-gnu/libssl.so.3",
            b"/usr/bin/openssl",
            b"/etc/ssl/a",
        ]
        .iter()
        .map(|p| path_key(p))
        .collect();
        assert_eq!(keys, expected);
        // The map keyed by them finds each, and nothing else.
        let mut map = ByPathKey::default();
        for (i, k) in keys.iter().enumerate() {
            map.insert(*k, i);
        }
        assert_eq!(
            map.get(&path_key(&normalize(b"/lib/x86_64-linux-gnu/libssl.so.3"))),
            Some(&1)
        );
        assert_eq!(map.get(&path_key(b"/usr/bin/openssl.old")), None);
    }

    #[test]
    fn usrmerge_spellings_meet() {
        assert_eq!(
            normalize(b"/lib/x86_64-linux-gnu/libc.so.6"),
            b"/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            normalize(b"/usr/lib/x86_64-linux-gnu/libc.so.6"),
            b"/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(normalize(b"/bin/sh"), b"/usr/bin/sh");
        assert_eq!(normalize(b"/library/x"), b"/library/x");
    }

    /// Distroless images have no status file: one control file per package
    /// in status.d/, with its file list in <pkg>.md5sums.
    #[test]
    fn distroless_status_d_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("var/lib/dpkg/status.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("libssl3"),
            "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: 3.0.15-1~deb12u1\n",
        )
        .unwrap();
        std::fs::write(
            d.join("libssl3.md5sums"),
            "0123456789abcdef0123456789abcdef  usr/lib/x86_64-linux-gnu/libssl.so.3\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/os-release"),
            "ID=debian\nVERSION_ID=\"12\"\n",
        )
        .unwrap();
        let root = RootFs::open(dir.path()).unwrap();
        let db = PackageDb::load(&root).unwrap();
        assert_eq!(db.package_count(), 1);
        let owner = db
            .owner(b"/lib/x86_64-linux-gnu/libssl.so.3")
            .expect("owned, in the other usrmerge spelling");
        assert_eq!(
            (owner.name.as_str(), owner.source.as_str()),
            ("libssl3", "openssl")
        );
        assert_eq!(
            owner.purl,
            "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12"
        );
    }

    /// A root with a dpkg database naming libfoo1 at `version` and owning
    /// /usr/lib/libfoo.so.1. Files are written the way dpkg writes them: a
    /// new file renamed over the old one.
    fn write_db(dir: &std::path::Path, status: &str) {
        let tmp = dir.join("var/lib/dpkg/status-new");
        std::fs::write(&tmp, status).unwrap();
        std::fs::rename(&tmp, dir.join("var/lib/dpkg/status")).unwrap();
    }

    fn paragraph(version: &str, state: &str) -> String {
        format!(
            "Package: libfoo1\nStatus: install ok {state}\nArchitecture: amd64\nSource: foo\nVersion: {version}\n\n"
        )
    }

    fn foo_root(version: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "usr/lib"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("var/lib/dpkg/info/libfoo1.list"),
            "/.\n/usr\n/usr/lib\n/usr/lib/libfoo.so.1\n",
        )
        .unwrap();
        write_db(dir.path(), &paragraph(version, "installed"));
        replace_lib(dir.path());
        dir
    }

    fn replace_lib(dir: &std::path::Path) -> (u64, u64, i128) {
        let tmp = dir.join("usr/lib/libfoo.so.1.dpkg-new");
        std::fs::write(&tmp, b"\x7fELF").unwrap();
        let path = dir.join("usr/lib/libfoo.so.1");
        std::fs::rename(&tmp, &path).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&path).unwrap();
        (
            m.dev(),
            m.ino(),
            i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        )
    }

    /// During an upgrade dpkg records each state change in updates/ and
    /// folds it into the status file only at the end: the journal decides.
    /// Packages whose files are on disk count in every state, and while
    /// dpkg replaces them (half-installed) their version is unknown.
    #[test]
    fn dpkg_journal_entries_override_the_status_file() {
        let dir = foo_root("1.0-1");
        let root = RootFs::open(dir.path()).unwrap();
        let owner = |db: &PackageDb| {
            let (p, settled) = db.owner_settled(b"/usr/lib/libfoo.so.1").expect("owned");
            (p.version.clone(), p.purl.contains('@'), settled)
        };
        assert_eq!(
            owner(&PackageDb::load(&root).unwrap()),
            ("1.0-1".into(), true, true)
        );
        let updates = dir.path().join("var/lib/dpkg/updates");
        std::fs::write(updates.join("0000"), paragraph("1.0-1", "half-installed")).unwrap();
        assert_eq!(
            owner(&PackageDb::load(&root).unwrap()),
            (String::new(), false, false),
            "half-installed: no version"
        );
        std::fs::write(updates.join("0001"), paragraph("2.0-1", "unpacked")).unwrap();
        // An entry being written is not read.
        std::fs::write(updates.join("tmp.i"), paragraph("9.9-9", "installed")).unwrap();
        assert_eq!(
            owner(&PackageDb::load(&root).unwrap()),
            ("2.0-1".into(), true, true),
            "unpacked: the files are the new version's"
        );
        std::fs::write(
            updates.join("0002"),
            "Package: libfoo1\nStatus: purge ok not-installed\n\n",
        )
        .unwrap();
        assert!(
            PackageDb::load(&root)
                .unwrap()
                .owner(b"/usr/lib/libfoo.so.1")
                .is_none()
        );
    }

    /// The live agent under an upgrade: a file newer than the database's
    /// last check gets a fresh database in the same batch; a current file's
    /// cached answer holds only for the load it came from; a stale inode
    /// keeps the version it had.
    #[test]
    fn a_new_inode_is_never_answered_from_the_pre_upgrade_database() {
        let dir = foo_root("1.0-1");
        let root = RootFs::open(dir.path()).unwrap();
        let path = b"/usr/lib/libfoo.so.1";
        let (dev, old_ino, old_ctime) = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(dir.path().join("usr/lib/libfoo.so.1")).unwrap();
            (
                m.dev(),
                m.ino(),
                i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            )
        };
        let mut r = Resolver::new();
        r.begin_batch();
        r.refresh_batch(&root).unwrap();
        let v = |p: Option<Arc<PackageInfo>>| p.map(|p| p.version.clone());
        assert_eq!(
            v(r.resolve(&root, path, dev, old_ino, Some(old_ctime))),
            Some("1.0-1".into())
        );

        // Upgrade within the same batch: the file first, then the status.
        std::thread::sleep(std::time::Duration::from_millis(60));
        let (_, new_ino, new_ctime) = replace_lib(dir.path());
        write_db(dir.path(), &paragraph("2.0-1", "installed"));
        // The batch's database was checked before the new file appeared.
        let db = r.refresh_batch(&root).unwrap();
        assert_eq!(db.owner(path).unwrap().version, "1.0-1");
        let loads = r.loads;
        assert_eq!(
            v(r.resolve(&root, path, dev, new_ino, Some(new_ctime))),
            Some("2.0-1".into()),
            "the new inode is newer than the check: dpkg's files are read again"
        );
        assert_eq!(r.loads, loads + 1);
        assert_eq!(
            v(r.resolve(&root, path, dev, old_ino, None)),
            Some("1.0-1".into()),
            "the replaced inode keeps its version"
        );

        // A status change alone (the same file): the cached answer was made
        // with the previous load and is not reused.
        std::thread::sleep(std::time::Duration::from_millis(60));
        write_db(dir.path(), &paragraph("2.0-2", "installed"));
        r.begin_batch();
        r.refresh_batch(&root).unwrap();
        assert_eq!(
            v(r.resolve(&root, path, dev, new_ino, Some(new_ctime))),
            Some("2.0-2".into())
        );
        // Half way through the next upgrade: no version, and not cached.
        std::fs::write(
            dir.path().join("var/lib/dpkg/updates/0000"),
            paragraph("2.0-2", "half-installed"),
        )
        .unwrap();
        let (_, ino3, ctime3) = replace_lib(dir.path());
        assert_eq!(
            v(r.resolve(&root, path, dev, ino3, Some(ctime3))),
            Some(String::new())
        );
        std::fs::write(
            dir.path().join("var/lib/dpkg/updates/0001"),
            paragraph("3.0-1", "unpacked"),
        )
        .unwrap();
        r.begin_batch();
        r.refresh_batch(&root).unwrap();
        assert_eq!(
            v(r.resolve(&root, path, dev, ino3, Some(ctime3))),
            Some("3.0-1".into())
        );
    }

    /// Event batches do not compare dpkg's files while inotify reports
    /// nothing; a status file replaced between two batches is loaded at
    /// the next one all the same.
    #[test]
    fn batches_compare_only_after_a_reported_change() {
        let dir = foo_root("1.0-1");
        let root = RootFs::open(dir.path()).unwrap();
        let mut r = Resolver::new();
        r.begin_batch();
        r.refresh_batch(&root).unwrap();
        let checks = r.checks;
        for _ in 0..5 {
            r.begin_batch();
            assert_eq!(
                r.refresh_batch(&root)
                    .unwrap()
                    .owner(b"/usr/lib/libfoo.so.1")
                    .unwrap()
                    .version,
                "1.0-1"
            );
        }
        assert_eq!(r.checks, checks, "nothing changed, nothing compared");
        assert_eq!(r.unchanged, 5);
        write_db(dir.path(), &paragraph("2.0-1", "installed"));
        r.begin_batch();
        let db = r.refresh_batch(&root).unwrap();
        assert_eq!(db.owner(b"/usr/lib/libfoo.so.1").unwrap().version, "2.0-1");
        assert_eq!(r.checks, checks + 1);
    }

    /// The journal's names are listed again only when they may have
    /// changed. A directory whose mtime is as it was, and was old when it
    /// was last listed, is not listed; one touched within the clock's
    /// slack of the last listing is, so an entry added in the same tick
    /// (the mtime unchanged) is still seen.
    #[test]
    fn journal_names_are_listed_again_only_when_they_may_have_changed() {
        let dir = foo_root("1.0-1");
        let root = RootFs::open(dir.path()).unwrap();
        let updates = dir.path().join("var/lib/dpkg/updates");
        let set_mtime = |t: std::time::SystemTime| {
            std::fs::File::open(&updates)
                .unwrap()
                .set_times(std::fs::FileTimes::new().set_modified(t))
                .unwrap();
        };
        // Old: listed once, then reused while it stays so.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        set_mtime(old);
        let first = DbStamp::read(&root, None);
        let again = DbStamp::read(&root, Some(&first));
        assert_eq!(again, first);
        assert_eq!(again.2, first.2, "not listed again");
        // Just touched: an entry that lands in the same tick leaves the
        // mtime as it was, and must still be seen.
        let now = std::time::SystemTime::now();
        set_mtime(now);
        let touched = DbStamp::read(&root, Some(&again));
        std::fs::write(updates.join("0000"), paragraph("2.0-1", "unpacked")).unwrap();
        set_mtime(now);
        let after = DbStamp::read(&root, Some(&touched));
        assert_eq!(after.1, vec![b"0000".to_vec()], "listed again");
        assert_ne!(after, touched);
    }

    /// Issue 11, defect 4: Perl opens an XS module through a symlinked
    /// directory (`perl/5.36` → `perl/5.36.0`) that dpkg does not list.
    /// That spelling's "no package" must not be cached for the inode: the
    /// mapping of the same file under dpkg's spelling still resolves.
    #[test]
    fn a_miss_under_one_spelling_does_not_hide_the_owner() {
        let dir = foo_root("1.0-1");
        std::os::unix::fs::symlink("lib", dir.path().join("usr/lib64")).unwrap();
        let root = RootFs::open(dir.path()).unwrap();
        let (dev, ino, ctime) = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(dir.path().join("usr/lib/libfoo.so.1")).unwrap();
            (
                m.dev(),
                m.ino(),
                i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            )
        };
        let mut r = Resolver::new();
        r.begin_batch();
        r.refresh_batch(&root).unwrap();
        let v = |p: Option<Arc<PackageInfo>>| p.map(|p| p.version.clone());
        let via_link = b"/usr/lib64/libfoo.so.1";
        assert_eq!(v(r.resolve(&root, via_link, dev, ino, Some(ctime))), None);
        assert_eq!(
            v(r.resolve(&root, b"/usr/lib/libfoo.so.1", dev, ino, Some(ctime))),
            Some("1.0-1".into())
        );
        // Found once, the owner holds for the inode under any spelling, and
        // a miss is still cached for the spelling that missed.
        assert_eq!(
            v(r.resolve(&root, via_link, dev, ino, Some(ctime))),
            Some("1.0-1".into())
        );
        assert_eq!(
            v(r.resolve(&root, b"/usr/lib/libfoo.so.1", dev, ino, None)),
            Some("1.0-1".into())
        );
        let mut r = Resolver::new();
        r.begin_batch();
        r.refresh_batch(&root).unwrap();
        assert_eq!(v(r.resolve(&root, via_link, dev, ino, Some(ctime))), None);
        let misses = r.misses;
        assert_eq!(v(r.resolve(&root, via_link, dev, ino, Some(ctime))), None);
        assert_eq!(r.misses, misses, "the same spelling is a cache hit");
    }

    /// Every row of the usrmerge table gathered on this image resolves in
    /// both spellings against the host's real dpkg database.
    #[test]
    fn usrmerge_cases_from_this_image_resolve() {
        let table = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/debian/usrmerge_dpkgS_cases.tsv"
        ))
        .expect("shared data");
        let root = RootFs::open(std::path::Path::new("/")).unwrap();
        let db = PackageDb::load(&root).unwrap();
        let mut checked = 0;
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            let [path, on_path, on_alias, alias] = cols[..] else {
                continue;
            };
            let expected = if on_path != "NOT_FOUND" {
                on_path
            } else {
                on_alias
            };
            if expected == "NOT_FOUND" || !std::path::Path::new(path).exists() {
                continue;
            }
            let name = expected.split(':').next().unwrap();
            for p in [path, alias] {
                let owner = db
                    .owner(p.as_bytes())
                    .unwrap_or_else(|| panic!("{p} unresolved"));
                assert_eq!(owner.name, name, "{p}");
            }
            checked += 1;
        }
        assert!(checked > 0, "no usrmerge case was checked");
    }
}

#[cfg(test)]
mod rpm_apk_tests {
    use super::*;

    fn root(name: &str) -> RootFs {
        let dir = format!("{}/../testdata/{name}/root", env!("CARGO_MANIFEST_DIR"));
        RootFs::open(std::path::Path::new(&dir)).expect("fixture root")
    }

    /// A real rpmdb.sqlite (rpm 4.18, see testdata/rpm/PROVENANCE.md).
    #[test]
    fn rpm_roots_resolve_through_rpmdb_sqlite() {
        let db = PackageDb::load(&root("rpm")).expect("load");
        assert_eq!(db.package_count(), 2);
        assert_eq!(db.malformed, 0);
        let demo = db.owner(b"/usr/lib64/libdemo.so.1.2.3").expect("owned");
        assert_eq!(demo.ecosystem, "rpm");
        assert_eq!(demo.name, "demo");
        assert_eq!(demo.source, "demo");
        assert_eq!(demo.version, "1.2.3-4.fc40");
        assert_eq!(demo.arch, "x86_64");
        assert_eq!(
            demo.purl,
            "pkg:rpm/fedora/demo@1.2.3-4.fc40?arch=x86_64&distro=fedora-40"
        );
        let data = db.owner(b"/usr/share/demo/read me.txt").expect("owned");
        assert_eq!(data.name, "demo-data");
        assert_eq!(data.version, "2:0.9-1.fc40");
        assert!(data.purl.contains("&epoch=2"), "{}", data.purl);
        assert!(db.owner(b"/usr/bin/nothing").is_none());
    }

    /// A real Alpine 3.6 installed database (testdata/apk/PROVENANCE.md).
    #[test]
    fn apk_roots_resolve_through_the_installed_database() {
        let db = PackageDb::load(&root("apk")).expect("load");
        assert!(db.package_count() > 10, "{}", db.package_count());
        let musl = db.owner(b"/lib/ld-musl-x86_64.so.1").expect("owned");
        assert_eq!(musl.ecosystem, "apk");
        assert_eq!(musl.name, "musl");
        assert_eq!(musl.version, "1.1.16-r9");
        assert_eq!(
            musl.purl,
            "pkg:apk/alpine/musl@1.1.16-r9?arch=x86_64&distro=alpine-3.6.2"
        );
    }
}

/// OS package URLs come from `patchgap_proto::purl::Purl`'s builders, so
/// they are in the canonical form the collector gives an SBOM's or a
/// responder's purl for the same package.
#[cfg(test)]
mod purl_tests {
    use super::*;

    fn assert_canonical(purl: &str) {
        let canonical = Purl::parse(purl)
            .unwrap_or_else(|e| panic!("{purl}: {e:?}"))
            .to_string();
        assert_eq!(purl, canonical, "not in canonical form");
    }

    /// A Debian epoch stays `1:` (the purl spec keeps `:`), while `+` is
    /// `%2B`. The private encoder wrote `1%3A2.38.1-5%2Bdeb12u1`, which an
    /// SBOM's purl for the same package never equals.
    #[test]
    fn deb_purl_keeps_the_epoch_colon() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("var/lib/dpkg/status.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("bsdutils"),
            "Package: bsdutils\nStatus: install ok installed\nArchitecture: amd64\nSource: util-linux (2.38.1-5+deb12u1)\nVersion: 1:2.38.1-5+deb12u1\n",
        )
        .unwrap();
        std::fs::write(
            d.join("bsdutils.md5sums"),
            "0123456789abcdef0123456789abcdef  usr/bin/logger\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/os-release"),
            "ID=debian\nVERSION_ID=\"12\"\n",
        )
        .unwrap();
        let db = PackageDb::load(&RootFs::open(dir.path()).unwrap()).unwrap();
        let owner = db.owner(b"/usr/bin/logger").expect("owned");
        assert_eq!(
            owner.purl,
            "pkg:deb/debian/bsdutils@1:2.38.1-5%2Bdeb12u1?arch=amd64&distro=debian-12"
        );
        assert_canonical(&owner.purl);
    }

    /// An rpm epoch goes into the `epoch` qualifier, and qualifiers are
    /// sorted: the private encoder wrote `arch=…&epoch=2&distro=fedora-40`.
    #[test]
    fn rpm_purl_qualifiers_are_sorted() {
        let dir = format!("{}/../testdata/rpm/root", env!("CARGO_MANIFEST_DIR"));
        let db = PackageDb::load(&RootFs::open(std::path::Path::new(&dir)).unwrap()).unwrap();
        let data = db.owner(b"/usr/share/demo/read me.txt").expect("owned");
        assert_eq!(
            data.purl,
            "pkg:rpm/fedora/demo-data@0.9-1.fc40?arch=noarch&distro=fedora-40&epoch=2"
        );
    }

    /// Every package of this host's dpkg database and of the real rpm and
    /// apk roots has a canonical purl.
    #[test]
    fn every_os_purl_is_canonical() {
        let roots = [
            "/".to_string(),
            format!("{}/../testdata/rpm/root", env!("CARGO_MANIFEST_DIR")),
            format!("{}/../testdata/apk/root", env!("CARGO_MANIFEST_DIR")),
        ];
        let mut checked = 0;
        for dir in roots {
            let db = PackageDb::load(&RootFs::open(std::path::Path::new(&dir)).unwrap()).unwrap();
            for p in &db.packages {
                assert_canonical(&p.purl);
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} packages");
    }
}
