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

use std::{collections::HashMap, sync::Arc};

use patchgap_proto::purl::Purl;

use crate::{
    model::PackageInfo,
    parse::{
        apk::parse_installed,
        dpkg::{DpkgPackage, parse_file_list, parse_md5sums, parse_status_db},
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
    by_path: HashMap<u64, u32>,
    /// Paragraphs of the status file that could not be parsed.
    pub malformed: usize,
}

impl PackageDb {
    /// Loads `var/lib/dpkg/status` plus `info/*.list`, and the distroless
    /// layout `var/lib/dpkg/status.d/<pkg>` plus `<pkg>.md5sums`. A root
    /// without any of them is an empty database, not an error.
    pub fn load(root: &RootFs) -> Result<PackageDb, RootError> {
        let distro = Distro::read(root);
        let mut db = PackageDb::default();
        match root.read(b"/var/lib/dpkg/status", STATUS_LIMIT) {
            Ok(bytes) => {
                let (packages, malformed) = parse_status_db(&bytes);
                db.malformed += malformed;
                for pkg in packages {
                    // Multi-Arch: same packages name their list "pkg:arch.list";
                    // older databases use "pkg.list" for everything.
                    let stem = pkg.list_stem();
                    let list = read_optional(root, format!("/var/lib/dpkg/info/{stem}.list"))?.or(
                        read_optional(root, format!("/var/lib/dpkg/info/{}.list", pkg.name))?,
                    );
                    let files = list.map(|b| parse_file_list(&b)).unwrap_or_default();
                    db.add(&pkg, &distro, files);
                }
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
        let idx = self.packages.len() as u32;
        self.packages.push(Arc::new(package_info(pkg, distro)));
        for (i, file) in files.iter().enumerate() {
            // Lists are sorted with each directory before its contents, so an
            // entry followed by "entry/..." is a directory. Directories are
            // shared by many packages and never mapped: skip them.
            if let Some(next) = files.get(i + 1)
                && next.len() > file.len()
                && next.starts_with(file)
                && next[file.len()] == b'/'
            {
                continue;
            }
            self.by_path.insert(path_key(&normalize(file)), idx);
        }
    }

    pub fn package_count(&self) -> usize {
        self.packages.len()
    }

    /// The package that owns `path` (inside the root), in either usrmerge
    /// spelling.
    pub fn owner(&self, path: &[u8]) -> Option<&Arc<PackageInfo>> {
        let idx = *self.by_path.get(&path_key(&normalize(path)))?;
        self.packages.get(idx as usize)
    }
}

/// The index key of a normalized path: SipHash with fixed keys, so it is
/// the same in every run.
fn path_key(path: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
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
    const MERGED: [&[u8]; 6] = [
        b"/lib/",
        b"/lib32/",
        b"/lib64/",
        b"/libx32/",
        b"/bin/",
        b"/sbin/",
    ];
    for prefix in MERGED {
        if path.starts_with(prefix) {
            let mut out = Vec::with_capacity(path.len() + 4);
            out.extend_from_slice(b"/usr");
            out.extend_from_slice(path);
            return out;
        }
    }
    path.to_vec()
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
    }
}

/// What identifies a database's contents: when any of these change, dpkg has
/// run and the database is read again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DbStamp(Vec<Option<(FileId, i128, u64)>>);

impl DbStamp {
    fn read(root: &RootFs) -> DbStamp {
        let paths: [&[u8]; 6] = [
            b"/var/lib/dpkg/status",
            b"/var/lib/dpkg/status.d",
            b"/var/lib/dpkg/info",
            RPMDB_PATHS[0],
            RPMDB_PATHS[1],
            b"/lib/apk/db/installed",
        ];
        DbStamp(
            paths
                .iter()
                .map(|p| root.metadata(p).ok().map(|m| (m.id, m.mtime_ns, m.size)))
                .collect(),
        )
    }
}

/// Resolution state that lives across scans.
#[derive(Debug, Default)]
pub struct Resolver {
    dbs: HashMap<FileId, (DbStamp, Arc<PackageDb>)>,
    /// When each root's database was last checked against dpkg's files.
    checked: HashMap<FileId, (std::time::Instant, Arc<PackageDb>)>,
    cache: HashMap<(FileId, u64, u64), Option<Arc<PackageInfo>>>,
    pub hits: u64,
    pub misses: u64,
}

impl Resolver {
    pub fn new() -> Resolver {
        Resolver::default()
    }

    /// The database for this root, reloaded if dpkg touched it since. Call
    /// once per root per scan.
    pub fn refresh(&mut self, root: &RootFs) -> Result<Arc<PackageDb>, RootError> {
        self.refresh_within(root, std::time::Duration::ZERO)
    }

    /// Like `refresh`, but trusts a database checked less than `max_age`
    /// ago without looking at dpkg's files again: event-time lookups (an
    /// open, an exec) come by the hundred per second.
    pub fn refresh_within(
        &mut self,
        root: &RootFs,
        max_age: std::time::Duration,
    ) -> Result<Arc<PackageDb>, RootError> {
        if !max_age.is_zero()
            && let Some((checked, db)) = self.checked.get(&root.id())
            && checked.elapsed() < max_age
        {
            return Ok(db.clone());
        }
        let db = self.refresh_now(root)?;
        self.checked
            .insert(root.id(), (std::time::Instant::now(), db.clone()));
        Ok(db)
    }

    fn refresh_now(&mut self, root: &RootFs) -> Result<Arc<PackageDb>, RootError> {
        let stamp = DbStamp::read(root);
        if let Some((old, db)) = self.dbs.get(&root.id())
            && *old == stamp
        {
            return Ok(db.clone());
        }
        let db = Arc::new(PackageDb::load(root)?);
        self.dbs.insert(root.id(), (stamp, db.clone()));
        Ok(db)
    }

    /// Resolves a file of this root. `current` says whether the file now at
    /// `path` is this very inode; when it is not (the mapping is stale) and
    /// the inode was never seen before, the path's owner is reported with an
    /// empty version, because the database only knows what replaced it.
    pub fn resolve(
        &mut self,
        root: FileId,
        db: &PackageDb,
        path: &[u8],
        dev: u64,
        inode: u64,
        current: bool,
    ) -> Option<Arc<PackageInfo>> {
        let key = (root, dev, inode);
        if let Some(hit) = self.cache.get(&key) {
            self.hits += 1;
            return hit.clone();
        }
        self.misses += 1;
        let owner = db.owner(path)?.clone();
        if !current {
            // Not cached: do not remember a guess under this inode.
            let mut unknown = (*owner).clone();
            unknown.version.clear();
            unknown.purl = match unknown.purl.split_once('@') {
                Some((head, tail)) => {
                    format!("{head}{}", tail.find('?').map(|i| &tail[i..]).unwrap_or(""))
                }
                None => unknown.purl,
            };
            return Some(Arc::new(unknown));
        }
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(key, Some(owner.clone()));
        Some(owner)
    }

    /// Caches that a current file has no owner, so the lookup is not repeated.
    pub fn remember_unowned(&mut self, root: FileId, dev: u64, inode: u64) {
        self.cache.insert((root, dev, inode), None);
    }

    /// Forgets the databases and resolutions of roots that no process uses
    /// any more, so a host that runs many short-lived containers does not
    /// keep every one's database in memory.
    pub fn retain_roots(&mut self, live: impl Fn(&FileId) -> bool) {
        self.dbs.retain(|id, _| live(id));
        self.checked.retain(|id, _| live(id));
        self.cache.retain(|(root, _, _), _| live(root));
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
