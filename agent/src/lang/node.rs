//! Node.js: the packages under the running app's node_modules.
//!
//! The app is found from the process's cwd and its main script (the first
//! argument that is not an option), each walked up to the root looking for
//! `node_modules` directories, as Node's own resolution does. Every package
//! there (scoped ones and nested node_modules included, within caps) is
//! reported `installed`; a package whose package.json or native addon eBPF
//! saw opened is reported `opened` through [`Node::owner_of_file`].

use std::{collections::HashMap, sync::Arc};

use super::{ProcView, artifact_at, dirname, distro_owner, join, normalize, package, read_prefix};
use crate::{
    model::{Artifact, ArtifactKind, PackageInfo},
    parse::npm::{npm_name_valid, parse_package_json},
    resolve::PackageDb,
    rootfs::{FileId, RootFs},
};

/// package.json files larger than this are not read.
const PACKAGE_JSON_LIMIT: usize = 4 << 20;
/// Packages read from one node_modules tree, nested ones included.
const MAX_PACKAGES: usize = 20_000;
/// How deep nested node_modules are followed.
const MAX_DEPTH: usize = 8;
/// Ancestors walked up from the cwd and the script.
const MAX_ANCESTORS: usize = 32;
const MAX_TREES: usize = 1024;
const MAX_PACKAGE_CACHE: usize = 1 << 16;

pub(super) fn is_node(name: &[u8]) -> bool {
    name == b"node" || name == b"nodejs"
}

#[derive(Debug, Default)]
pub(super) struct Node {
    /// (root, node_modules dir) → its packages.
    trees: HashMap<RootPath, (Stamp, Arc<Vec<Pkg>>)>,
    /// (root, package dir) → its identity, for opened files.
    packages: HashMap<RootPath, (Stamp, Option<Arc<PackageInfo>>)>,
}

/// A path inside one root.
type RootPath = (FileId, Vec<u8>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(FileId, i128);

#[derive(Debug)]
struct Pkg {
    /// The package.json, inside the root.
    path: Vec<u8>,
    id: FileId,
    package: Arc<PackageInfo>,
}

impl Node {
    pub(super) fn process(&mut self, view: &ProcView<'_>, out: &mut Vec<Artifact>) {
        let cwd = std::fs::read_link(view.proc_dir.join("cwd"))
            .map(|l| l.into_os_string().into_encoded_bytes())
            .unwrap_or_default();
        let cwd = crate::rootfs::in_root_path(view.root_link, &cwd).to_vec();
        let mut starts = Vec::new();
        if let Some(script) = view.argv.iter().skip(1).find(|a| !a.starts_with(b"-")) {
            let script = if script.starts_with(b"/") {
                normalize(script)
            } else {
                normalize(&join(&cwd, script))
            };
            starts.push(dirname(&script).to_vec());
        }
        if cwd.starts_with(b"/") {
            starts.push(cwd);
        }
        let mut seen_trees = std::collections::HashSet::new();
        let mut seen_files = std::collections::HashSet::new();
        for start in starts {
            let mut dir = start;
            for _ in 0..MAX_ANCESTORS {
                let nm = join(&dir, b"node_modules");
                if seen_trees.insert(nm.clone())
                    && let Some(tree) = self.tree(view.root, view.db, &nm)
                {
                    for p in tree.iter() {
                        if seen_files.insert(p.path.clone()) {
                            out.push(artifact_at(
                                view.root_link,
                                &p.path,
                                p.id,
                                ArtifactKind::Installed,
                                p.package.clone(),
                            ));
                        }
                    }
                }
                if dir == b"/" {
                    break;
                }
                dir = dirname(&dir).to_vec();
            }
        }
    }

    /// The npm package a file under some node_modules belongs to: the
    /// innermost `node_modules/<name>` or `node_modules/@scope/<name>`.
    pub(super) fn owner_of_file(
        &mut self,
        root: &RootFs,
        db: Option<&PackageDb>,
        in_root: &[u8],
    ) -> Option<Arc<PackageInfo>> {
        let dir = package_dir_of(in_root)?;
        let meta = root.metadata(&join(dir, b"package.json")).ok()?;
        let stamp = Stamp(meta.id, meta.mtime_ns);
        let key = (root.id(), dir.to_vec());
        if let Some((s, p)) = self.packages.get(&key)
            && *s == stamp
        {
            return p.clone();
        }
        if self.packages.len() >= MAX_PACKAGE_CACHE {
            self.packages.clear();
        }
        let p = read_package(root, db, dir).map(|(_, p)| p);
        self.packages.insert(key, (stamp, p.clone()));
        p
    }

    pub(super) fn retain_roots(&mut self, live: &impl Fn(&FileId) -> bool) {
        self.trees.retain(|(root, _), _| live(root));
        self.packages.retain(|(root, _), _| live(root));
    }

    /// One node_modules tree, read again when its directory changed.
    fn tree(&mut self, root: &RootFs, db: Option<&PackageDb>, nm: &[u8]) -> Option<Arc<Vec<Pkg>>> {
        let meta = root.metadata(nm).ok()?;
        if !meta.is_dir {
            return None;
        }
        let stamp = Stamp(meta.id, meta.mtime_ns);
        let key = (root.id(), nm.to_vec());
        if let Some((s, t)) = self.trees.get(&key)
            && *s == stamp
        {
            return Some(t.clone());
        }
        if self.trees.len() >= MAX_TREES {
            self.trees.clear();
        }
        let mut pkgs = Vec::new();
        walk(root, db, nm, 0, &mut pkgs);
        let tree = Arc::new(pkgs);
        self.trees.insert(key, (stamp, tree.clone()));
        Some(tree)
    }
}

/// Reads the packages of one node_modules directory and, recursively, of
/// the node_modules nested in them.
fn walk(root: &RootFs, db: Option<&PackageDb>, nm: &[u8], depth: usize, out: &mut Vec<Pkg>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(names) = root.read_dir(nm) else {
        return;
    };
    let mut dirs = Vec::new();
    for name in names {
        if name.starts_with(b".") {
            continue;
        }
        if name.starts_with(b"@") {
            for inner in root.read_dir(&join(nm, &name)).unwrap_or_default() {
                if !inner.starts_with(b".") {
                    dirs.push(join(&join(nm, &name), &inner));
                }
            }
        } else {
            dirs.push(join(nm, &name));
        }
    }
    for dir in dirs {
        if out.len() >= MAX_PACKAGES {
            return;
        }
        if let Some((id, package)) = read_package(root, db, &dir) {
            out.push(Pkg {
                path: join(&dir, b"package.json"),
                id,
                package,
            });
        }
        walk(root, db, &join(&dir, b"node_modules"), depth + 1, out);
    }
}

fn read_package(
    root: &RootFs,
    db: Option<&PackageDb>,
    dir: &[u8],
) -> Option<(FileId, Arc<PackageInfo>)> {
    let path = join(dir, b"package.json");
    let meta = root.metadata(&path).ok()?;
    if !meta.is_file || meta.size > PACKAGE_JSON_LIMIT as u64 {
        return None;
    }
    let bytes = read_prefix(root, &path, PACKAGE_JSON_LIMIT)?;
    let p = parse_package_json(&bytes)?;
    if !npm_name_valid(&p.name) || p.version.is_empty() {
        return None;
    }
    let purl = patchgap_proto::purl::Purl::npm(&p.name, &p.version)
        .map(|p| p.to_string())
        .unwrap_or_default();
    let distro = distro_owner(db, &path);
    Some((
        meta.id,
        package("npm", &p.name, "", &p.version, purl, distro),
    ))
}

/// `…/node_modules/<name>` or `…/node_modules/@scope/<name>` of a path
/// below it; None when the path is not inside a package.
fn package_dir_of(path: &[u8]) -> Option<&[u8]> {
    const NM: &[u8] = b"/node_modules/";
    let at = path.windows(NM.len()).rposition(|w| w == NM)?;
    let rest = &path[at + NM.len()..];
    let mut parts = rest.split(|&b| b == b'/');
    let first = parts.next()?;
    let mut len = first.len();
    if first.starts_with(b"@") {
        len += 1 + parts.next()?.len();
    }
    // There must be something below the package directory.
    if rest.len() <= len || first.is_empty() || first.starts_with(b".") {
        return None;
    }
    Some(&path[..at + NM.len() + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_dirs() {
        assert_eq!(
            package_dir_of(b"/app/node_modules/left-pad/package.json"),
            Some(&b"/app/node_modules/left-pad"[..])
        );
        assert_eq!(
            package_dir_of(b"/app/node_modules/@types/node/package.json"),
            Some(&b"/app/node_modules/@types/node"[..])
        );
        assert_eq!(
            package_dir_of(b"/app/node_modules/a/node_modules/b/build/x.node"),
            Some(&b"/app/node_modules/a/node_modules/b"[..])
        );
        assert_eq!(package_dir_of(b"/app/node_modules/left-pad"), None);
        assert_eq!(package_dir_of(b"/app/node_modules/.bin/x"), None);
        assert_eq!(package_dir_of(b"/app/package.json"), None);
    }
}
