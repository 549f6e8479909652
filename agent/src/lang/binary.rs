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
        gobuild::{ModInfo, Module, read_elf_buildinfo},
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
                content: None,
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

/// The main module, every dependency, and the toolchain as `stdlib`. A
/// module replaced by another module is named as built (the replacement's
/// path and version); one replaced by a local directory
/// (`=> ./internal/x (devel)`) has no identity of its own, so it keeps the
/// path and version the binary's requirements name. Either way the
/// replacement is recorded in `replaced_by`.
fn go_packages(info: &ModInfo) -> Vec<Arc<PackageInfo>> {
    let mut out = Vec::new();
    let mut add = |path: &str, version: &str, replaced_by: String| {
        if path.is_empty() {
            return;
        }
        let purl = patchgap_proto::purl::Purl::golang(path, version)
            .map(|p| p.to_string())
            .unwrap_or_default();
        let mut p = package("golang", path, "", version, purl, None);
        if !replaced_by.is_empty() {
            Arc::make_mut(&mut p).replaced_by = replaced_by;
        }
        out.push(p);
    };
    for module in std::iter::once(&info.main).chain(&info.deps) {
        let (path, version, replaced_by) = go_identity(module);
        add(path, version, replaced_by);
    }
    // "go1.22.1" → "1.22.1", the form Go's advisories use for stdlib.
    let go = info
        .go_version
        .strip_prefix("go")
        .unwrap_or(&info.go_version);
    let go = go.split([' ', 'X']).next().unwrap_or(go);
    if !go.is_empty() {
        add("stdlib", go, String::new());
    }
    out
}

/// A module's name, version and replacement (see [`go_packages`]).
fn go_identity(module: &Module) -> (&str, &str, String) {
    let Some(r) = module.replace.as_deref() else {
        return (&module.path, &module.version, String::new());
    };
    // Go writes a local replacement as a relative or absolute directory.
    let local = r.path.starts_with("./") || r.path.starts_with("../") || r.path.starts_with('/');
    let named = if r.version.is_empty() || r.version == "(devel)" {
        r.path.clone()
    } else {
        format!("{}@{}", r.path, r.version)
    };
    if local {
        (&module.path, &module.version, named)
    } else {
        (&r.path, &r.version, named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::gobuild::parse_modinfo;

    /// `go version -m` of the terraform on this image (testdata/gobuildinfo):
    /// nine modules replaced by local directories keep their module path,
    /// and the replacement is a field; the main module is unchanged.
    #[test]
    fn local_replacements_keep_the_required_module_path() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/gobuildinfo/terraform.txt"
        ))
        .unwrap();
        let info = modinfo_from_go_version_m(&text);
        let pkgs = go_packages(&info);
        assert!(pkgs.iter().all(|p| !p.name.starts_with("./")), "{pkgs:?}");
        let azure = pkgs
            .iter()
            .find(|p| {
                p.name == "github.com/hashicorp/terraform/internal/backend/remote-state/azure"
            })
            .expect("named after the requirement");
        assert_eq!(azure.version, "v0.0.0-00010101000000-000000000000");
        assert_eq!(azure.replaced_by, "./internal/backend/remote-state/azure");
        assert_eq!(
            pkgs.iter()
                .filter(|p| p.replaced_by.starts_with("./"))
                .count(),
            9
        );
    }

    /// A module replaced by another module is named as built.
    #[test]
    fn module_replacements_are_named_as_built() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/gobuildinfo/terraform-provider-aws_v5.100.0_x5.txt"
        ))
        .unwrap();
        let pkgs = go_packages(&modinfo_from_go_version_m(&text));
        let log = pkgs
            .iter()
            .find(|p| p.name == "github.com/gdavison/terraform-plugin-log")
            .expect("as built");
        assert_eq!(log.version, "v0.0.0-20230928191232-6c653d8ef8fb");
        assert_eq!(
            log.replaced_by,
            "github.com/gdavison/terraform-plugin-log@v0.0.0-20230928191232-6c653d8ef8fb"
        );
    }

    /// The modinfo text inside a binary is `go version -m`'s output without
    /// the first line and the leading tab of each line.
    fn modinfo_from_go_version_m(text: &str) -> ModInfo {
        let body: String = text
            .lines()
            .skip(1)
            .map(|l| format!("{}\n", l.strip_prefix('\t').unwrap_or(l)))
            .collect();
        let mut info = parse_modinfo(body.as_bytes()).expect("modinfo");
        info.go_version = text
            .lines()
            .next()
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_default()
            .to_string();
        info
    }
}
