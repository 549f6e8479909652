//! Python: the distributions of the environment a process uses.
//!
//! The environment is found from what the process itself shows, never by
//! running it and never from its environment variables (PYTHONPATH,
//! VIRTUAL_ENV and PYTHONHOME are the process's to forge):
//!
//! 1. a virtualenv: `pyvenv.cfg` next to the `bin/` of argv[0] (a venv's
//!    `bin/python` is a symlink, so /proc/PID/exe names the base
//!    interpreter, while argv[0] keeps the venv path), or above a
//!    `lib/pythonX.Y/site-packages` that a mapping or an open names;
//! 2. otherwise the prefix of the executable (`/usr/bin/python3.11` →
//!    `/usr`, `~/.pyenv/versions/3.11.7/bin/python3.11` → that version).
//!
//! Site directories are then those CPython would put on sys.path for that
//! prefix, Debian's `dist-packages` included; a venv adds its base's only
//! with `include-system-site-packages = true`. Each distribution is read
//! from its `*.dist-info` or `*.egg-info` (reported once when a package has
//! both, as Debian's python3-cryptography does), and the first site
//! directory that has a name wins, as it does for `import`.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::{
    ProcView, artifact_at, basename, dirname, distro_owner, join, normalize, package, read_prefix,
    with_fixed_cves, with_package,
};
use crate::{
    model::{Artifact, ArtifactKind, PackageInfo},
    parse::python::{
        DistKind, normalize_name, parse_dist_dir_name, parse_installed_files, parse_metadata,
        parse_pyvenv_cfg, parse_record, parse_top_level, top_level_of,
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

/// Whether an executable's name is a Python interpreter's.
pub(super) fn is_python(name: &[u8]) -> bool {
    name.starts_with(b"python") || name.starts_with(b"pypy")
}

#[derive(Debug, Default)]
pub(super) struct Python {
    sites: HashMap<(FileId, Vec<u8>), (Stamp, Arc<Site>)>,
}

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
}

#[derive(Debug)]
struct Dist {
    /// PEP 503 name, for shadowing across site directories.
    key: String,
    /// The *.dist-info or *.egg-info, inside the root.
    path: Vec<u8>,
    id: FileId,
    package: Arc<PackageInfo>,
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
            let in_root = crate::rootfs::in_root_path(view.root_link, &a.path.0);
            for (dir, site) in &loaded {
                if let Some(p) = site.owner(dir, in_root) {
                    out.push(with_package(a, p));
                    break;
                }
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
            // Most mappings of most processes are not under a site
            // directory: a string check, no allocation, decides.
            let in_root = crate::rootfs::in_root_path(view.root_link, &a.path.0);
            if site_dir_of(in_root).is_none() {
                continue;
            }
            if let Some(p) = self.owner_of_file(view.root, view.db, in_root) {
                out.push(with_package(a, p));
            }
        }
    }

    /// The distribution a file under a site directory belongs to.
    pub(super) fn owner_of_file(
        &mut self,
        root: &RootFs,
        db: Option<&PackageDb>,
        in_root: &[u8],
    ) -> Option<Arc<PackageInfo>> {
        let dir = site_dir_of(in_root)?;
        let site = self.site(root, db, dir)?;
        site.owner(dir, in_root)
    }

    pub(super) fn retain_roots(&mut self, live: &impl Fn(&FileId) -> bool) {
        self.sites.retain(|(root, _), _| live(root));
    }

    /// The site directories of the process's environment, in sys.path
    /// order, existing ones only.
    fn environment(&mut self, view: &ProcView<'_>, artifacts: &[Artifact]) -> Vec<Vec<u8>> {
        let root = view.root;
        let exe = crate::rootfs::in_root_path(view.root_link, view.exe);
        let exe_version = version_of_name(basename(exe));
        // A venv named by argv[0] or by a site directory the process uses.
        let mut venvs: Vec<Vec<u8>> = Vec::new();
        if let Some(argv0) = view.argv.first()
            && argv0.contains(&b'/')
        {
            let path = if argv0.starts_with(b"/") {
                normalize(argv0)
            } else {
                let cwd = std::fs::read_link(view.proc_dir.join("cwd"))
                    .map(|l| l.into_os_string().into_encoded_bytes())
                    .unwrap_or_default();
                let cwd = crate::rootfs::in_root_path(view.root_link, &cwd);
                normalize(&join(cwd, argv0))
            };
            venvs.push(dirname(dirname(&path)).to_vec());
        }
        for a in artifacts {
            let in_root = crate::rootfs::in_root_path(view.root_link, &a.path.0);
            if let Some(site) = site_dir_of(in_root) {
                // <venv>/lib/pythonX.Y/site-packages
                venvs.push(dirname(dirname(dirname(site))).to_vec());
            }
        }
        // Many mappings share one site directory: each candidate once.
        let mut tried = HashSet::new();
        for venv in venvs {
            if !tried.insert(venv.clone()) {
                continue;
            }
            let Ok(cfg) = root.read(&join(&venv, b"pyvenv.cfg"), SMALL_LIMIT) else {
                continue;
            };
            let cfg = parse_pyvenv_cfg(&cfg);
            let version = cfg
                .version
                .as_deref()
                .and_then(major_minor)
                .or(exe_version.clone());
            let mut sites = versioned_sites(root, &venv, version.as_deref(), "site-packages");
            if cfg.include_system_site_packages {
                let base = cfg
                    .home
                    .as_deref()
                    .map(|h| dirname(h.trim_end_matches('/').as_bytes()).to_vec())
                    .unwrap_or_else(|| dirname(dirname(exe)).to_vec());
                sites.extend(prefix_sites(root, &base, version.as_deref()));
            }
            return existing(root, sites);
        }
        let prefix = dirname(dirname(exe)).to_vec();
        existing(root, prefix_sites(root, &prefix, exe_version.as_deref()))
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
        let site = Arc::new(load_site(root, db, dir));
        self.sites.insert(key, (stamp, site.clone()));
        Some(site)
    }
}

impl Site {
    /// The distribution that a file under this site directory (`dir`)
    /// belongs to, by its importable top-level name.
    fn owner(&self, dir: &[u8], in_root: &[u8]) -> Option<Arc<PackageInfo>> {
        let rel = in_root.strip_prefix(dir)?.strip_prefix(b"/")?;
        let top = top_level_of(std::str::from_utf8(rel).ok()?)?;
        let i = *self.by_top.get(&top)?;
        Some(self.dists[i].package.clone())
    }
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
fn load_site(root: &RootFs, db: Option<&PackageDb>, dir: &[u8]) -> Site {
    let mut site = Site::default();
    let mut changelogs: HashMap<String, Arc<PackageInfo>> = HashMap::new();
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
        // read once per OS package per site load.
        let distro = distro_owner(db, &metadata_path).map(|d| {
            changelogs
                .entry(d.name.clone())
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
    let files: Vec<String> = match kind {
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
    };
    let mut tops: Vec<String> = files.iter().filter_map(|f| top_level_of(f)).collect();
    tops.sort();
    tops.dedup();
    tops
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
    }
}
