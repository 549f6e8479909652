//! Python: the distributions of the environment a process uses.
//!
//! The environment is found from what the process itself shows, never by
//! running it and never from its environment variables (PYTHONPATH,
//! VIRTUAL_ENV and PYTHONHOME are the process's to forge):
//!
//! 1. a virtualenv: `pyvenv.cfg` next to the `bin/` of argv[0] (a venv's
//!    `bin/python` is a symlink, so /proc/PID/exe names the base
//!    interpreter, while argv[0] keeps the venv path);
//! 2. otherwise the prefix of the executable (`/usr/bin/python3.11` →
//!    `/usr`, `~/.pyenv/versions/3.11.7/bin/python3.11` → that version).
//!
//! Site directories are then those CPython would put on sys.path for that
//! prefix, Debian's `dist-packages` included; a venv adds its base's only
//! with `include-system-site-packages = true`. Any other `site-packages` or
//! `dist-packages` that a mapping or an open lies under (a `sys.path.insert`,
//! a PYTHONPATH entry, an activated venv run as plain `python`) comes first,
//! as it does on sys.path. Each distribution is read from its `*.dist-info`
//! or `*.egg-info` (reported once when a package has both, as Debian's
//! python3-cryptography does), and the first site directory that has a name
//! wins, as it does for `import`.
//!
//! A mapped or opened file belongs to the distribution whose `RECORD` lists
//! it, wherever it is: under a site directory of the environment, under any
//! other `site-packages` or `dist-packages`, or, for a module file, under
//! the nearest directory above it that holds distributions; the importable
//! top-level name decides only for files no `RECORD` lists (Debian's
//! egg-infos have none). Each file's distribution is remembered by (root,
//! device, inode), so a file that pip has since replaced (the old
//! `_yaml….so` still mapped, `(deleted)`, at a stash path) stays named
//! with the version that was installed when the process loaded it: the
//! rule dpkg's resolution cache follows for OS packages.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::Arc,
};

use super::{
    ProcView, artifact_at, basename, dirname, distro_owner, join, normalize, package, read_prefix,
    with_fixed_cves, with_package,
};
use crate::{
    model::{Artifact, ArtifactKind, PackageInfo},
    parse::python::{
        DistKind, is_module_file, normalize_name, parse_dist_dir_name, parse_installed_files,
        parse_metadata, parse_pyvenv_cfg, parse_record, parse_top_level, record_key, top_level_of,
    },
    resolve::PackageDb,
    rootfs::{FileId, RootFs},
};

/// A METADATA file's fields come first; its description can be long.
const METADATA_PREFIX: usize = 64 << 10;
/// RECORD lists every file of a distribution (botocore: ~2,000 lines).
const RECORD_LIMIT: u64 = 8 << 20;
const SMALL_LIMIT: u64 = 1 << 20;
/// Distributions read from one site directory.
const MAX_DISTS: usize = 20_000;
/// Site directories cached across all roots.
const MAX_SITES: usize = 4096;
/// Files whose distribution is remembered, across all roots.
const MAX_FILES: usize = 1 << 16;
/// Directories above a module file that are looked at for distributions.
const MAX_ANCESTORS: usize = 6;

/// Whether an executable's name is a Python interpreter's.
pub(super) fn is_python(name: &[u8]) -> bool {
    name.starts_with(b"python") || name.starts_with(b"pypy")
}

#[derive(Debug, Default)]
pub(super) struct Python {
    sites: HashMap<(FileId, Vec<u8>), (Stamp, Arc<Site>)>,
    /// The distribution of each file resolved while it was current, by
    /// (root, device, inode): a stale file keeps it.
    files: HashMap<(FileId, u64, u64), Arc<PackageInfo>>,
    /// Module files outside every site directory that no directory above
    /// them claims, by (root, device, inode), and when that was found: the
    /// walk up their directories is not done again for `MISS_FOR`. An
    /// interpreter outside dpkg (pyenv, a build's python) opens hundreds of
    /// its standard library's modules, each an ancestor walk of stats.
    misses: HashMap<(FileId, u64, u64), std::time::Instant>,
    /// What each OS package's changelog says it fixed, by (root, name,
    /// version): a site directory is read again whenever its mtime moves,
    /// and unpacking every changelog each time cost more than the rest.
    changelogs: HashMap<(FileId, String, String), Arc<PackageInfo>>,
}

/// How long a module file no distribution claims is taken as unclaimed.
const MISS_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// What identifies a site directory's contents: installing or removing a
/// distribution adds or removes a directory entry, which changes the
/// directory's mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(FileId, i128);

/// One site directory's distributions.
#[derive(Debug, Default)]
struct Site {
    dists: Vec<Dist>,
    /// Importable top-level name → index in `dists`.
    by_top: HashMap<String, usize>,
    /// The hash of each loadable file a RECORD lists (its path relative to
    /// the site directory, see `record_key`) → index in `dists`. Read on the
    /// first lookup of a file: an idle interpreter's environment costs no
    /// RECORD reads.
    by_file: std::sync::OnceLock<HashMap<u64, usize>>,
}

#[derive(Debug)]
struct Dist {
    /// PEP 503 name, for shadowing across site directories.
    key: String,
    /// The *.dist-info or *.egg-info, inside the root.
    path: Vec<u8>,
    id: FileId,
    package: Arc<PackageInfo>,
    /// What lists its files (None for a single-file egg-info).
    records: Option<DistKind>,
}

impl Python {
    /// An interpreter: its environment's distributions, `installed`, plus
    /// `mapped` and `opened` for those its mappings and opens show loaded.
    pub(super) fn process(
        &mut self,
        view: &ProcView<'_>,
        artifacts: &[Artifact],
        out: &mut Vec<Artifact>,
    ) {
        let sites = self.environment(view, artifacts);
        let mut seen = HashSet::new();
        let mut loaded: Vec<(Vec<u8>, Arc<Site>)> = Vec::new();
        for dir in sites {
            let Some(site) = self.site(view.root, view.db, &dir) else {
                continue;
            };
            for d in &site.dists {
                if seen.insert(d.key.clone()) {
                    out.push(artifact_at(
                        view.root_link,
                        &d.path,
                        d.id,
                        ArtifactKind::Installed,
                        d.package.clone(),
                    ));
                }
            }
            loaded.push((dir, site));
        }
        for a in artifacts {
            if let Some(p) = self.resolve_file(view.root, view.db, view.root_link, a, &loaded, true)
            {
                out.push(with_package(a, p));
            }
        }
    }

    /// Not an interpreter: only files it maps or opened under a site
    /// directory (a program embedding Python, a uwsgi).
    pub(super) fn loaded_only(
        &mut self,
        view: &ProcView<'_>,
        artifacts: &[Artifact],
        out: &mut Vec<Artifact>,
    ) {
        for a in artifacts {
            if a.kind == ArtifactKind::Exe {
                continue;
            }
            if let Some(p) = self.resolve_file(view.root, view.db, view.root_link, a, &[], false) {
                out.push(with_package(a, p));
            }
        }
    }

    /// The distribution of a file a process opened (an eBPF open event).
    pub(super) fn opened(
        &mut self,
        root: &RootFs,
        db: Option<&PackageDb>,
        root_link: &[u8],
        opened: &Artifact,
    ) -> Option<Arc<PackageInfo>> {
        self.resolve_file(root, db, root_link, opened, &[], true)
    }

    /// The distribution of one file a process maps or opened: by a site
    /// directory of its environment (`env`), else wherever the file is. A
    /// stale file (deleted, or its path now names another file) is named
    /// only by what it resolved to while it was current: its path may be
    /// pip's stash (`site-packages/~aml/…`) or name the new version.
    /// `interpreter`: any module file may be Python's, not only an
    /// extension module with its ABI tag.
    fn resolve_file(
        &mut self,
        root: &RootFs,
        db: Option<&PackageDb>,
        root_link: &[u8],
        a: &Artifact,
        env: &[(Vec<u8>, Arc<Site>)],
        interpreter: bool,
    ) -> Option<Arc<PackageInfo>> {
        let key = (root.id(), a.dev, a.inode);
        if a.stale {
            return self.files.get(&key).cloned();
        }
        let in_root = crate::rootfs::in_root_path(root_link, &a.path.0);
        // Beyond site directories, only a module file that no OS package
        // owns is looked for (the standard library's are dpkg's).
        let walk = a.package.is_none()
            && std::str::from_utf8(basename(in_root))
                .is_ok_and(|n| is_module_file(n) && (interpreter || has_abi_tag(n)));
        let found = env
            .iter()
            .find_map(|(dir, site)| site.owner(root, dir, in_root))
            .or_else(|| {
                if walk
                    && self
                        .misses
                        .get(&key)
                        .is_some_and(|at| at.elapsed() < MISS_FOR)
                {
                    return None;
                }
                let found = self.owner_of_file(root, db, in_root, walk);
                if walk && found.is_none() {
                    if self.misses.len() >= MAX_FILES {
                        self.misses.clear();
                    }
                    self.misses.insert(key, std::time::Instant::now());
                }
                found
            })?;
        if self.files.len() >= MAX_FILES {
            self.files.clear();
        }
        self.files.insert(key, found.clone());
        Some(found)
    }

    /// The distribution a file belongs to: under a `site-packages` or
    /// `dist-packages`, that directory's; elsewhere, for a module file, that
    /// of the nearest directory above it that holds distributions (a
    /// PYTHONPATH entry, a `pip install --target` directory).
    fn owner_of_file(
        &mut self,
        root: &RootFs,
        db: Option<&PackageDb>,
        in_root: &[u8],
        walk: bool,
    ) -> Option<Arc<PackageInfo>> {
        // Most mappings of most processes are neither under a site
        // directory nor module files: string checks, no I/O, decide.
        if let Some(dir) = site_dir_of(in_root) {
            return self.site(root, db, dir)?.owner(root, dir, in_root);
        }
        if !walk {
            return None;
        }
        let mut dir = dirname(in_root);
        for _ in 0..MAX_ANCESTORS {
            if dir.len() <= 1 {
                break;
            }
            if let Some(site) = self.site(root, db, dir)
                && !site.dists.is_empty()
            {
                return site.owner(root, dir, in_root);
            }
            dir = dirname(dir);
        }
        None
    }

    pub(super) fn retain_roots(&mut self, live: &impl Fn(&FileId) -> bool) {
        self.sites.retain(|(root, _), _| live(root));
        self.files.retain(|(root, _, _), _| live(root));
        self.misses.retain(|(root, _, _), _| live(root));
        self.changelogs.retain(|(root, _, _), _| live(root));
    }

    /// The site directories of the process's environment, in sys.path
    /// order, existing ones only.
    fn environment(&mut self, view: &ProcView<'_>, artifacts: &[Artifact]) -> Vec<Vec<u8>> {
        let root = view.root;
        let exe = crate::rootfs::in_root_path(view.root_link, view.exe);
        let exe_version = version_of_name(basename(exe));
        // A venv named by argv[0]; else the executable's prefix. A venv that
        // only a site directory in use points at is not the environment: a
        // system interpreter that inserted it into sys.path still has its
        // own site directories.
        let venv = view
            .argv
            .first()
            .filter(|a| a.contains(&b'/'))
            .map(|argv0| {
                let path = if argv0.starts_with(b"/") {
                    normalize(argv0)
                } else {
                    let cwd = std::fs::read_link(view.proc_dir.join("cwd"))
                        .map(|l| l.into_os_string().into_encoded_bytes())
                        .unwrap_or_default();
                    let cwd = crate::rootfs::in_root_path(view.root_link, &cwd);
                    normalize(&join(cwd, argv0))
                };
                dirname(dirname(&path)).to_vec()
            });
        let own = venv
            .and_then(|v| venv_sites(root, &v, exe, exe_version.as_deref()))
            .unwrap_or_else(|| {
                let prefix = dirname(dirname(exe)).to_vec();
                prefix_sites(root, &prefix, exe_version.as_deref())
            });
        // Other site directories the process's mappings and opens lie
        // under come first, in the order they appear (many share one).
        let mut sites: Vec<Vec<u8>> = Vec::new();
        for a in artifacts {
            let in_root = crate::rootfs::in_root_path(view.root_link, &a.path.0);
            if let Some(site) = site_dir_of(in_root)
                && !a.stale
                && !own.iter().chain(&sites).any(|s| s == site)
            {
                sites.push(site.to_vec());
            }
        }
        sites.extend(own);
        existing(root, sites)
    }

    /// One site directory, read again when it changed.
    fn site(&mut self, root: &RootFs, db: Option<&PackageDb>, dir: &[u8]) -> Option<Arc<Site>> {
        let meta = root.metadata(dir).ok()?;
        if !meta.is_dir {
            return None;
        }
        let stamp = Stamp(meta.id, meta.mtime_ns);
        let key = (root.id(), dir.to_vec());
        if let Some((s, site)) = self.sites.get(&key)
            && *s == stamp
        {
            return Some(site.clone());
        }
        if self.sites.len() >= MAX_SITES {
            self.sites.clear();
        }
        if self.changelogs.len() >= MAX_SITES {
            self.changelogs.clear();
        }
        let site = Arc::new(load_site(root, db, dir, &mut self.changelogs));
        self.sites.insert(key, (stamp, site.clone()));
        Some(site)
    }
}

impl Site {
    /// The distribution that a file under this site directory (`dir`)
    /// belongs to: the one whose RECORD lists it, else the one that provides
    /// its importable top-level name.
    fn owner(&self, root: &RootFs, dir: &[u8], in_root: &[u8]) -> Option<Arc<PackageInfo>> {
        let rel = in_root.strip_prefix(dir)?.strip_prefix(b"/")?;
        let rel = std::str::from_utf8(rel).ok()?;
        let by_file = |k: &str| self.by_file(root).get(&path_hash(k));
        let i = match record_key(rel).and_then(by_file) {
            Some(&i) => i,
            None => *self.by_top.get(&top_level_of(rel)?)?,
        };
        Some(self.dists[i].package.clone())
    }

    /// The loadable files each distribution's RECORD (or installed-files.txt)
    /// lists, read once.
    fn by_file(&self, root: &RootFs) -> &HashMap<u64, usize> {
        self.by_file.get_or_init(|| {
            let mut by_file = HashMap::new();
            for (i, d) in self.dists.iter().enumerate() {
                let Some(kind) = d.records else { continue };
                for f in installed_files(root, &d.path, kind) {
                    if let Some(k) = record_key(&f) {
                        by_file.entry(path_hash(k)).or_insert(i);
                    }
                }
            }
            by_file
        })
    }
}

/// The key of a RECORD path in `Site::by_file`. SipHash with fixed keys: a
/// collision needs two paths of one directory, and would name a sibling
/// distribution of the same directory.
fn path_hash(rel: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    rel.hash(&mut h);
    h.finish()
}

/// The site directories of a venv (`<venv>/pyvenv.cfg`), its base's too
/// with `include-system-site-packages = true`; None when it is no venv.
fn venv_sites(
    root: &RootFs,
    venv: &[u8],
    exe: &[u8],
    exe_version: Option<&str>,
) -> Option<Vec<Vec<u8>>> {
    let cfg = root.read(&join(venv, b"pyvenv.cfg"), SMALL_LIMIT).ok()?;
    let cfg = parse_pyvenv_cfg(&cfg);
    let version = cfg
        .version
        .as_deref()
        .and_then(major_minor)
        .or(exe_version.map(str::to_string));
    let mut sites = versioned_sites(root, venv, version.as_deref(), "site-packages");
    if cfg.include_system_site_packages {
        let base = cfg
            .home
            .as_deref()
            .map(|h| dirname(h.trim_end_matches('/').as_bytes()).to_vec())
            .unwrap_or_else(|| dirname(dirname(exe)).to_vec());
        sites.extend(prefix_sites(root, &base, version.as_deref()));
    }
    Some(sites)
}

/// The site directory that a path lies under: everything up to and
/// including its last `site-packages` or `dist-packages` component.
fn site_dir_of(path: &[u8]) -> Option<&[u8]> {
    let mut end = None;
    let mut start = 0;
    for (i, part) in path.split(|&b| b == b'/').enumerate() {
        let part_end = start + part.len();
        if i > 0 && (part == b"site-packages" || part == b"dist-packages") && part_end < path.len()
        {
            end = Some(part_end);
        }
        start = part_end + 1;
    }
    end.map(|e| &path[..e])
}

/// Whether an extension module's file name carries a Python ABI tag
/// (`_speedups.cpython-311-x86_64-linux-gnu.so`, `_x.abi3.so`,
/// `_x.pypy310-pp73-x86_64-linux-gnu.so`): a plain `libfoo.so` mapped by
/// some program is not looked for.
fn has_abi_tag(name: &str) -> bool {
    name.ends_with(".py")
        || name.ends_with(".pyc")
        || name.contains(".cpython-")
        || name.contains(".abi3.")
        || name.contains(".pypy")
}

/// "3.11" from "python3.11", "python3.11d" or "pypy3.10"; None for "python3".
fn version_of_name(name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name).ok()?;
    let rest = name.strip_prefix("python").or(name.strip_prefix("pypy"))?;
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    major_minor(&digits)
}

/// "3.11" from "3.11.2" or "3.11"; None unless there are two numbers.
fn major_minor(version: &str) -> Option<String> {
    let mut parts = version.trim().split('.');
    let major = parts
        .next()
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (!minor.is_empty()).then(|| format!("{major}.{minor}"))
}

/// `<prefix>/lib/pythonX.Y/<leaf>` for the version, or for every
/// `pythonX.Y` under `<prefix>/lib` when the version is unknown.
fn versioned_sites(
    root: &RootFs,
    prefix: &[u8],
    version: Option<&str>,
    leaf: &str,
) -> Vec<Vec<u8>> {
    let lib = join(prefix, b"lib");
    let versions: Vec<String> = match version {
        Some(v) => vec![v.to_string()],
        None => root
            .read_dir(&lib)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| {
                let n = String::from_utf8(n).ok()?;
                major_minor(n.strip_prefix("python")?).map(|_| n["python".len()..].to_string())
            })
            .collect(),
    };
    versions
        .iter()
        .map(|v| join(&lib, format!("python{v}/{leaf}").as_bytes()))
        .collect()
}

/// The site directories CPython puts on sys.path for an installation
/// prefix, Debian's layout included.
fn prefix_sites(root: &RootFs, prefix: &[u8], version: Option<&str>) -> Vec<Vec<u8>> {
    let mut sites = Vec::new();
    if prefix == b"/usr" {
        // Debian: /usr/local/lib/pythonX.Y/dist-packages,
        // /usr/lib/python3/dist-packages, /usr/lib/pythonX.Y/dist-packages.
        sites.extend(versioned_sites(
            root,
            b"/usr/local",
            version,
            "dist-packages",
        ));
        if version.is_none_or(|v| v.starts_with("3.")) {
            sites.push(b"/usr/lib/python3/dist-packages".to_vec());
        }
        sites.extend(versioned_sites(root, b"/usr", version, "dist-packages"));
    }
    sites.extend(versioned_sites(root, prefix, version, "site-packages"));
    sites
}

fn existing(root: &RootFs, sites: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut seen = HashSet::new();
    sites
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .filter(|s| root.metadata(s).is_ok_and(|m| m.is_dir))
        .collect()
}

/// Reads every distribution of one site directory.
/// `changelogs` keeps what each OS package's changelog said, across loads.
fn load_site(
    root: &RootFs,
    db: Option<&PackageDb>,
    dir: &[u8],
    changelogs: &mut HashMap<(FileId, String, String), Arc<PackageInfo>>,
) -> Site {
    let mut site = Site::default();
    let mut names = root.read_dir(dir).unwrap_or_default();
    // dist-info before egg-info of the same name: the newer format wins.
    names.sort_by_key(|n| !n.ends_with(b".dist-info"));
    for name in names.into_iter().take(MAX_DISTS) {
        let Ok(text) = std::str::from_utf8(&name) else {
            continue;
        };
        let Some(parsed) = parse_dist_dir_name(text) else {
            continue;
        };
        let path = join(dir, &name);
        let Ok(meta) = root.metadata(&path) else {
            continue;
        };
        // The metadata file: METADATA in a dist-info, PKG-INFO in an
        // egg-info directory, or the egg-info itself when distutils wrote
        // it as a single file.
        let metadata_path = match (parsed.kind, meta.is_dir) {
            (DistKind::DistInfo, true) => join(&path, b"METADATA"),
            (DistKind::EggInfo, true) => join(&path, b"PKG-INFO"),
            (DistKind::EggInfo, false) if meta.is_file => path.clone(),
            _ => continue,
        };
        let Some(fields) = read_prefix(root, &metadata_path, METADATA_PREFIX)
            .as_deref()
            .and_then(parse_metadata)
        else {
            continue;
        };
        let key = normalize_name(&fields.name);
        if site.dists.iter().any(|d| d.key == key) {
            continue;
        }
        let purl = patchgap_proto::purl::Purl::pypi(&fields.name, &fields.version)
            .map(|p| p.to_string())
            .unwrap_or_default();
        // The distro identity carries what its changelog says it fixed;
        // read once per OS package version (an upgrade brings a new one).
        let distro = distro_owner(db, &metadata_path).map(|d| {
            changelogs
                .entry((root.id(), d.name.clone(), d.version.clone()))
                .or_insert_with(|| with_fixed_cves(root, &d))
                .clone()
        });
        let pkg = package("pypi", &fields.name, "", &fields.version, purl, distro);
        let index = site.dists.len();
        let mut tops = top_levels(root, &path, parsed.kind, meta.is_dir);
        if tops.is_empty() {
            tops.push(key.replace('-', "_"));
        }
        for top in tops {
            site.by_top.entry(top).or_insert(index);
        }
        site.dists.push(Dist {
            key,
            path,
            id: meta.id,
            package: pkg,
            records: meta.is_dir.then_some(parsed.kind),
        });
    }
    site
}

/// The importable names a distribution provides: top_level.txt, else the
/// first components of the files it installed.
fn top_levels(root: &RootFs, path: &[u8], kind: DistKind, is_dir: bool) -> Vec<String> {
    if !is_dir {
        return Vec::new();
    }
    if let Ok(bytes) = root.read(&join(path, b"top_level.txt"), SMALL_LIMIT) {
        let tops = parse_top_level(&bytes);
        if !tops.is_empty() {
            return tops;
        }
    }
    let files = installed_files(root, path, kind);
    let mut tops: Vec<String> = files.iter().filter_map(|f| top_level_of(f)).collect();
    tops.sort();
    tops.dedup();
    tops
}

/// The files a distribution installed, relative to its site directory:
/// its RECORD, or an egg-info's installed-files.txt (which is relative to
/// the egg-info directory itself).
fn installed_files(root: &RootFs, path: &[u8], kind: DistKind) -> Vec<String> {
    match kind {
        DistKind::DistInfo => root
            .read(&join(path, b"RECORD"), RECORD_LIMIT)
            .map(|b| parse_record(&b).0)
            .unwrap_or_default(),
        // installed-files.txt is relative to the egg-info directory.
        DistKind::EggInfo => root
            .read(&join(path, b"installed-files.txt"), RECORD_LIMIT)
            .map(|b| {
                parse_installed_files(&b)
                    .into_iter()
                    .filter_map(|f| f.strip_prefix("../").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_dirs_and_versions() {
        assert_eq!(
            site_dir_of(b"/srv/venv/lib/python3.11/site-packages/tiny/__init__.py"),
            Some(&b"/srv/venv/lib/python3.11/site-packages"[..])
        );
        assert_eq!(
            site_dir_of(b"/usr/lib/python3/dist-packages/cryptography/x.so"),
            Some(&b"/usr/lib/python3/dist-packages"[..])
        );
        assert_eq!(site_dir_of(b"/usr/lib/python3/dist-packages"), None);
        assert_eq!(version_of_name(b"python3.11"), Some("3.11".into()));
        assert_eq!(version_of_name(b"python2.7"), Some("2.7".into()));
        assert_eq!(version_of_name(b"python3"), None);
        assert_eq!(version_of_name(b"pypy3.10"), Some("3.10".into()));
        assert_eq!(major_minor("3.11.2"), Some("3.11".into()));
        assert_eq!(major_minor("3"), None);
        assert!(is_python(b"python3.11"));
        assert!(!is_python(b"node"));
        assert!(has_abi_tag("_speedups.cpython-311-x86_64-linux-gnu.so"));
        assert!(has_abi_tag("_rust.abi3.so"));
        assert!(has_abi_tag("decoder.cpython-311.pyc"));
        assert!(!has_abi_tag("libgconv.so"));
        assert!(!has_abi_tag("pam_unix.so"));
    }

    /// A pip `--target` directory (no site-packages in its path): a module
    /// file is named by the RECORD of the dist-info beside its package,
    /// a file that RECORD does not list by the top-level name, and nothing
    /// outside it.
    #[test]
    fn a_module_file_resolves_by_the_record_of_a_directory_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let vendor = dir.path().join("vendor");
        let write = |rel: &str, body: &str| {
            let p = vendor.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        };
        write("simplejson/__init__.py", "");
        write("simplejson/_speedups.cpython-311-x86_64-linux-gnu.so", "");
        write("simplejson/late.py", "");
        write(
            "simplejson-3.19.3.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: simplejson\nVersion: 3.19.3\n\n",
        );
        write(
            "simplejson-3.19.3.dist-info/RECORD",
            "simplejson/__init__.py,,\nsimplejson/_speedups.cpython-311-x86_64-linux-gnu.so,,\n",
        );
        write("namespace/other.py", "");
        let root = RootFs::open(std::path::Path::new("/")).unwrap();
        let mut py = Python::default();
        let at = |rel: &str| {
            let mut p = vendor.as_os_str().as_encoded_bytes().to_vec();
            p.push(b'/');
            p.extend_from_slice(rel.as_bytes());
            p
        };
        for rel in [
            "simplejson/_speedups.cpython-311-x86_64-linux-gnu.so",
            "simplejson/__init__.py",
            "simplejson/late.py",
        ] {
            let p = py.owner_of_file(&root, None, &at(rel), true);
            assert_eq!(
                p.map(|p| (p.name.clone(), p.version.clone())),
                Some(("simplejson".into(), "3.19.3".into())),
                "{rel}"
            );
        }
        // No walk asked for, or a file no distribution provides: nothing.
        assert!(
            py.owner_of_file(&root, None, &at("simplejson/__init__.py"), false)
                .is_none()
        );
        assert!(
            py.owner_of_file(&root, None, &at("namespace/other.py"), true)
                .is_none()
        );
    }
}
