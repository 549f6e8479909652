//! Executables: the modules a Go binary was built from (its buildinfo) and
//! the crates of a Rust binary built with cargo-auditable (its `.dep-v0`
//! section).
//!
//! The executable is read through /proc/PID/exe, which reaches the very
//! inode the process runs even when the file was replaced or deleted; it is
//! only read (its ELF header, section headers and one section), never run.
//! Results are cached by the executable's device and inode, so each binary
//! is read once however many processes run it.

use std::{collections::HashMap, fs::File, io, sync::Arc};

use super::{ProcView, package};
use crate::{
    model::{Artifact, ArtifactKind, PackageInfo},
    parse::{
        auditable::read_elf_audit_data,
        elf::ElfFile,
        gobuild::{ModInfo, read_elf_buildinfo},
    },
    rootfs::FileId,
};

const MAX_BINARIES: usize = 1 << 14;

type Packages = Arc<Vec<Arc<PackageInfo>>>;

#[derive(Debug, Default)]
pub(super) struct Binaries {
    /// (root, exe dev and inode) → the packages compiled in.
    known: HashMap<(FileId, u64, u64), Packages>,
}

impl Binaries {
    /// Adds an `embedded` artifact, on the executable's path, for each
    /// module or crate compiled into it.
    pub(super) fn embedded(
        &mut self,
        view: &ProcView<'_>,
        exe: &Artifact,
        out: &mut Vec<Artifact>,
    ) {
        let key = (view.root.id(), exe.dev, exe.inode);
        let packages = match self.known.get(&key) {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(read_binary(view, exe).unwrap_or_default());
                if self.known.len() >= MAX_BINARIES {
                    self.known.clear();
                }
                self.known.insert(key, p.clone());
                p
            }
        };
        for p in packages.iter() {
            out.push(Artifact {
                kind: ArtifactKind::Embedded,
                package: Some(p.clone()),
                ..exe.clone()
            });
        }
    }

    pub(super) fn retain_roots(&mut self, live: &impl Fn(&FileId) -> bool) {
        self.known.retain(|(root, ..), _| live(root));
    }
}

fn read_binary(view: &ProcView<'_>, exe: &Artifact) -> Option<Vec<Arc<PackageInfo>>> {
    let file = File::open(view.proc_dir.join("exe")).ok()?;
    {
        // The process may have exec'd something else since the exe was
        // stat'ed: only read the file the artifact names.
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok()?;
        if (m.dev(), m.ino()) != (exe.dev, exe.inode) {
            return None;
        }
    }
    Some(embedded_in(&file))
}

/// The Go modules and Rust crates compiled into an executable (empty for
/// any other file).
pub fn embedded_in(file: &File) -> Vec<Arc<PackageInfo>> {
    let mut read_at = |offset: u64, len: usize| -> io::Result<Vec<u8>> {
        super::read_at(file, offset, len).ok_or_else(|| io::Error::other("read failed"))
    };
    let Ok(elf) = ElfFile::read(&mut read_at) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Ok(Some(info)) = read_elf_buildinfo(&elf, &mut read_at) {
        out.extend(go_packages(&info));
    }
    if let Ok(Some(audit)) = read_elf_audit_data(&elf, &mut read_at) {
        for c in audit.packages {
            let purl = patchgap_proto::purl::Purl::cargo(&c.name, &c.version)
                .map(|p| p.to_string())
                .unwrap_or_default();
            out.push(package("cargo", &c.name, "", &c.version, purl, None));
        }
    }
    out
}

/// The main module, every dependency (as built: a replacement's path and
/// version when there is one), and the toolchain as `stdlib`.
fn go_packages(info: &ModInfo) -> Vec<Arc<PackageInfo>> {
    let mut out = Vec::new();
    let mut add = |path: &str, version: &str| {
        if path.is_empty() {
            return;
        }
        let purl = patchgap_proto::purl::Purl::golang(path, version)
            .map(|p| p.to_string())
            .unwrap_or_default();
        out.push(package("golang", path, "", version, purl, None));
    };
    let main = info.main.replace.as_deref().unwrap_or(&info.main);
    add(&main.path, &main.version);
    for dep in &info.deps {
        let built = dep.replace.as_deref().unwrap_or(dep);
        add(&built.path, &built.version);
    }
    // "go1.22.1" → "1.22.1", the form Go's advisories use for stdlib.
    let go = info
        .go_version
        .strip_prefix("go")
        .unwrap_or(&info.go_version);
    let go = go.split([' ', 'X']).next().unwrap_or(go);
    if !go.is_empty() {
        add("stdlib", go);
    }
    out
}
