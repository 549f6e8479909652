//! Language and binary packages: what a process loads beyond the files its
//! OS packages own.
//!
//! For each process the scanner hands over a [`ProcView`]; the resolvers
//! here add artifacts whose package is a PyPI distribution, an npm package,
//! a Maven artifact, a Go module or a Rust crate, each with the evidence it
//! rests on:
//!
//! * `mapped`: a Python C extension in /proc/PID/maps;
//! * `opened`: a module eBPF saw opened, or a jar the process holds open;
//! * `embedded`: a module compiled into the executable (Go buildinfo,
//!   cargo-auditable's `.dep-v0`);
//! * `installed`: the rest of the environment the process uses (its Python
//!   prefix or virtualenv, its app's node_modules).
//!
//! Everything is read through the process's own root ([`RootFs`]), never by
//! running the interpreter and never from the process's environment
//! variables: a scanned process controls both (CVE-2024-48990). What is read
//! is cached by file identity and re-read only when the directory or file
//! changes, so a steady host costs a few `statx` calls per scan.

mod binary;
mod jvm;
mod node;
mod python;

use std::{path::Path, sync::Arc};

pub use binary::embedded_in;

use crate::{
    model::{Artifact, ArtifactKind, PackageInfo, PathBytes},
    resolve::PackageDb,
    rootfs::{FileId, RootFs},
};

/// What the language resolvers need to know about one process.
pub struct ProcView<'a> {
    /// The process's root.
    pub root: &'a RootFs,
    /// The root's OS package database: a language package that an OS package
    /// installed carries both identities.
    pub db: Option<&'a PackageDb>,
    /// /proc/PID (or its fixture equivalent), for fd links and the cwd.
    pub proc_dir: &'a Path,
    /// Where the process's root is, as the agent sees it ("/" for most).
    pub root_link: &'a [u8],
    /// The executable as the process sees it (no " (deleted)" suffix).
    pub exe: &'a [u8],
    /// The raw arguments (not redacted: only argv[0] and the script path of
    /// an interpreter are used, never sent).
    pub argv: &'a [Vec<u8>],
}

/// Resolution state that lives across scans.
#[derive(Debug, Default)]
pub struct LangResolver {
    python: python::Python,
    node: node::Node,
    jvm: jvm::Jvm,
    binary: binary::Binaries,
}

impl LangResolver {
    pub fn new() -> LangResolver {
        LangResolver::default()
    }

    /// Adds the language-package artifacts of one process to `artifacts`,
    /// which already holds its exe and mappings (and, for event-time
    /// records, its opens).
    pub fn process(&mut self, view: &ProcView<'_>, artifacts: &mut Vec<Artifact>) {
        let name = basename(view.exe);
        let mut extra = Vec::new();
        if let Some(exe) = artifacts.iter().find(|a| a.kind == ArtifactKind::Exe) {
            self.binary.embedded(view, exe, &mut extra);
        }
        if python::is_python(name) {
            self.python.process(view, artifacts, &mut extra);
        } else {
            // A C extension can be mapped by an embedding program too.
            self.python.loaded_only(view, artifacts, &mut extra);
        }
        if node::is_node(name) {
            self.node.process(view, &mut extra);
        }
        if jvm::is_jvm(name, artifacts) {
            self.jvm.process(view, &mut extra);
        }
        artifacts.extend(extra);
    }

    /// The language identities of one file a process opened (an eBPF open
    /// event): a module of a Python distribution, a file of an npm package.
    /// `opened` is the artifact already built for the file.
    pub fn opened(
        &mut self,
        root: &RootFs,
        db: Option<&PackageDb>,
        root_link: &[u8],
        opened: &Artifact,
    ) -> Vec<Artifact> {
        let mut out = Vec::new();
        let in_root = crate::rootfs::in_root_path(root_link, &opened.path.0).to_vec();
        if let Some(p) = self.python.opened(root, db, root_link, opened) {
            out.push(with_package(opened, p));
        }
        if let Some(p) = self.node.owner_of_file(root, db, &in_root) {
            out.push(with_package(opened, p));
        }
        out
    }

    /// Forgets what belongs to roots no process uses any more.
    pub fn retain_roots(&mut self, live: impl Fn(&FileId) -> bool) {
        self.python.retain_roots(&live);
        self.node.retain_roots(&live);
        self.jvm.retain_roots(&live);
        self.binary.retain_roots(&live);
    }
}

/// The same file, another package identity.
fn with_package(a: &Artifact, package: Arc<PackageInfo>) -> Artifact {
    Artifact {
        package: Some(package),
        content: None,
        ..a.clone()
    }
}

/// The last path component.
fn basename(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

/// The directory part of a path ("/" for a file at the top).
fn dirname(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/",
        Some(i) => &path[..i],
        None => b"",
    }
}

/// `dir` + "/" + `name`.
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = dir.to_vec();
    if !out.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(name.strip_prefix(b"/").unwrap_or(name));
    out
}

/// A path inside the root as the agent's view of the process shows it:
/// prefixed with the root's location when the process is chrooted.
fn outside(root_link: &[u8], in_root: &[u8]) -> Vec<u8> {
    if root_link.is_empty() || root_link == b"/" {
        in_root.to_vec()
    } else {
        join(root_link, in_root)
    }
}

/// Resolves "." and ".." lexically (inside the root: ".." at the top stays
/// at the top, as the kernel does for a root).
fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Reads at most `limit` bytes from the start of a file inside the root:
/// enough for headers (a METADATA file's fields come before its long
/// description).
fn read_prefix(root: &RootFs, path: &[u8], limit: usize) -> Option<Vec<u8>> {
    let file = root.open_file(path).ok()?;
    read_at(&file, 0, limit)
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the file).
fn read_at(file: &std::fs::File, offset: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(done);
    Some(buf)
}

/// The OS package that owns a file of the root, for a language package's
/// second identity.
fn distro_owner(db: Option<&PackageDb>, path: &[u8]) -> Option<Arc<PackageInfo>> {
    db?.owner(path).cloned()
}

/// The changelog of a Debian package is at most this big, compressed.
const CHANGELOG_LIMIT: u64 = 4 << 20;

/// A Debian package with the CVEs its changelog says the installed
/// version, or an earlier one, fixed: the entries from the installed
/// version down. None when there is no changelog, or it does not list the
/// installed version (then nothing is claimed fixed).
fn with_fixed_cves(root: &RootFs, pkg: &Arc<PackageInfo>) -> Arc<PackageInfo> {
    use crate::parse::changelog::{MAX_CHANGELOG_LEN, gunzip, parse_changelog};
    if pkg.ecosystem != "deb" {
        return pkg.clone();
    }
    let path = format!("/usr/share/doc/{}/changelog.Debian.gz", pkg.name);
    let Ok(gz) = root.read(path.as_bytes(), CHANGELOG_LIMIT) else {
        return pkg.clone();
    };
    let Ok(text) = gunzip(&gz, MAX_CHANGELOG_LEN) else {
        return pkg.clone();
    };
    let (entries, _) = parse_changelog(&text);
    // A binNMU (`1.0.8-5+b1`) is a rebuild of the source entry `1.0.8-5`;
    // its own entry is in changelog.Debian.ARCH.gz and names no fixes.
    let version = binnmu_base(&pkg.version);
    let Some(at) = entries.iter().position(|e| e.version == version) else {
        return pkg.clone();
    };
    let mut cves: Vec<String> = entries[at..]
        .iter()
        .flat_map(|e| e.cves.iter().cloned())
        .collect();
    cves.sort();
    cves.dedup();
    if cves.is_empty() {
        return pkg.clone();
    }
    Arc::new(PackageInfo {
        fixed_cves: cves,
        ..(**pkg).clone()
    })
}

/// The source version a binNMU version was rebuilt from: `1.0.8-5+b1` →
/// `1.0.8-5`; any other version as it is.
fn binnmu_base(version: &str) -> &str {
    match version.rsplit_once("+b") {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => version,
    }
}

/// A language package's identity.
fn package(
    ecosystem: &str,
    name: &str,
    source: &str,
    version: &str,
    purl: String,
    distro: Option<Arc<PackageInfo>>,
) -> Arc<PackageInfo> {
    Arc::new(PackageInfo {
        ecosystem: ecosystem.into(),
        name: name.into(),
        source: source.into(),
        version: version.into(),
        arch: String::new(),
        purl,
        distro,
        fixed_cves: Vec::new(),
        replaced_by: String::new(),
    })
}

/// An artifact for a file or directory of the root that no mapping names
/// (an installed distribution, a package.json, a jar).
fn artifact_at(
    root_link: &[u8],
    in_root: &[u8],
    id: FileId,
    kind: ArtifactKind,
    package: Arc<PackageInfo>,
) -> Artifact {
    Artifact {
        path: PathBytes(outside(root_link, in_root)),
        dev: id.dev,
        inode: id.ino,
        kind,
        deleted: false,
        stale: false,
        package: Some(package),
        content: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binnmu_versions_look_up_their_source_entry() {
        assert_eq!(binnmu_base("1.0.8-5+b1"), "1.0.8-5");
        assert_eq!(binnmu_base("5.2.15-2+b8"), "5.2.15-2");
        assert_eq!(binnmu_base("38.0.4-3+deb12u1"), "38.0.4-3+deb12u1");
        assert_eq!(binnmu_base("1.0+b"), "1.0+b");
        assert_eq!(binnmu_base("2.0+bookworm1"), "2.0+bookworm1");
        // This host's bzip2 is a binNMU whose source entries name CVEs.
        let installed = std::process::Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", "bzip2"])
            .output()
            .expect("dpkg-query");
        let version = String::from_utf8(installed.stdout).unwrap();
        assert!(version.contains("+b"), "bzip2 {version} is no binNMU here");
        let root = RootFs::open(std::path::Path::new("/")).unwrap();
        let pkg = package("deb", "bzip2", "bzip2", &version, String::new(), None);
        let got = with_fixed_cves(&root, &pkg);
        assert!(
            got.fixed_cves.iter().any(|c| c == "CVE-2019-12900"),
            "{:?}",
            got.fixed_cves
        );
    }

    #[test]
    fn paths() {
        assert_eq!(basename(b"/usr/bin/python3.11"), b"python3.11");
        assert_eq!(dirname(b"/usr/bin/python3.11"), b"/usr/bin");
        assert_eq!(dirname(b"/python"), b"/");
        assert_eq!(join(b"/a/", b"/b"), b"/a/b");
        assert_eq!(
            normalize(b"/srv/app/../venv/./bin//python"),
            b"/srv/venv/bin/python"
        );
        assert_eq!(normalize(b"/../../etc"), b"/etc");
        assert_eq!(outside(b"/", b"/usr/lib"), b"/usr/lib");
        assert_eq!(outside(b"/srv/chroot", b"/usr/lib"), b"/srv/chroot/usr/lib");
    }
}
