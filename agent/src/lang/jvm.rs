//! JVM: the jars a process holds open, with their Maven coordinates.
//!
//! A JVM keeps every jar on its class path open, so /proc/PID/fd lists
//! them. Each jar is read the way `unzip -l` would, but only in part: its
//! tail (the end of central directory record), its central directory, and
//! then just the `META-INF/maven/*/*/pom.properties` entries and the
//! manifest. A jar of hundreds of megabytes therefore costs a few reads.
//! Jars nested in a Spring Boot or WAR fat jar (`BOOT-INF/lib/`,
//! `WEB-INF/lib/`) are read from memory when they are small enough, and
//! reported as `outer.jar!/BOOT-INF/lib/inner.jar`.

use std::{collections::HashMap, fs::File, sync::Arc};

use super::{ProcView, basename, distro_owner, outside, package, read_at};
use crate::{
    model::{Artifact, ArtifactKind, PackageInfo, PathBytes},
    parse::{
        jar::{
            JarInfo, MAX_MANIFEST_LEN, MAX_NESTED_JAR_LEN, MAX_POM_PROPERTIES_LEN, MavenCoords,
            find_manifest, inspect_jar, nested_jar_names, parse_manifest, parse_pom_properties,
            pick_primary, pom_properties_paths,
        },
        zip::{
            CdEntry, CdLocation, EocdInfo, LOCAL_HEADER_LEN, MAX_CD_ENTRIES, TAIL_LEN,
            ZIP64_EOCD_LEN, ZipBytes, check_entry, decode_entry, entry_data_range,
            parse_central_directory, parse_eocd, parse_zip64_eocd,
        },
    },
    resolve::PackageDb,
    rootfs::{FileId, RootFs},
};

/// Open files looked at per process.
const MAX_FDS: usize = 65_536;
/// Nested jars opened per fat jar.
const MAX_NESTED: usize = 512;
const MAX_JARS: usize = 1 << 14;

/// A JVM: the `java` launcher, or anything that maps libjvm.so (an
/// embedded JVM).
pub(super) fn is_jvm(name: &[u8], artifacts: &[Artifact]) -> bool {
    name == b"java"
        || artifacts
            .iter()
            .any(|a| a.kind == ArtifactKind::Mapped && basename(&a.path.0) == b"libjvm.so")
}

#[derive(Debug, Default)]
pub(super) struct Jvm {
    /// (root, dev, inode, size, mtime) of a jar → what it contains.
    jars: HashMap<(FileId, FileId, u64, i128), Arc<Vec<Found>>>,
}

/// One package found in a jar: in the jar itself (`inner` empty) or in a
/// jar nested in it.
#[derive(Debug)]
struct Found {
    inner: Vec<u8>,
    package: Arc<PackageInfo>,
}

impl Jvm {
    pub(super) fn process(&mut self, view: &ProcView<'_>, out: &mut Vec<Artifact>) {
        let Ok(fds) = std::fs::read_dir(view.proc_dir.join("fd")) else {
            return;
        };
        let mut seen = std::collections::HashSet::new();
        for fd in fds.flatten().take(MAX_FDS) {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.into_os_string().into_encoded_bytes();
            if !is_archive(&link) || !seen.insert(link.clone()) {
                continue;
            }
            let in_root = crate::rootfs::in_root_path(view.root_link, &link).to_vec();
            let Ok(meta) = view.root.metadata(&in_root) else {
                continue;
            };
            let key = (view.root.id(), meta.id, meta.size, meta.mtime_ns);
            let found = match self.jars.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(
                        read_jar(view.root, view.db, &in_root, meta.id).unwrap_or_default(),
                    );
                    if self.jars.len() >= MAX_JARS {
                        self.jars.clear();
                    }
                    self.jars.insert(key, f.clone());
                    f
                }
            };
            for f in found.iter() {
                let mut path = outside(view.root_link, &in_root);
                if !f.inner.is_empty() {
                    path.extend_from_slice(b"!/");
                    path.extend_from_slice(&f.inner);
                }
                out.push(Artifact {
                    path: PathBytes(path),
                    dev: meta.id.dev,
                    inode: meta.id.ino,
                    kind: ArtifactKind::Opened,
                    deleted: false,
                    stale: false,
                    package: Some(f.package.clone()),
                    content: None,
                });
            }
        }
    }

    pub(super) fn retain_roots(&mut self, live: &impl Fn(&FileId) -> bool) {
        self.jars.retain(|(root, ..), _| live(root));
    }
}

fn is_archive(path: &[u8]) -> bool {
    let lower = path.to_ascii_lowercase();
    [&b".jar"[..], b".war", b".ear"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// A zip file read in parts.
struct Archive {
    file: File,
    loc: CdLocation,
    entries: Vec<CdEntry>,
}

impl Archive {
    fn open(file: File) -> Option<Archive> {
        let len = file.metadata().ok()?.len();
        let tail_len = len.min(TAIL_LEN as u64);
        let tail = read_at(&file, len - tail_len, tail_len as usize)?;
        let loc = match parse_eocd(&tail, len).ok()? {
            EocdInfo::Classic(loc) => loc,
            EocdInfo::Zip64(at) => {
                let record = read_at(&file, at.record_offset, ZIP64_EOCD_LEN)?;
                parse_zip64_eocd(&record, &at).ok()?
            }
        };
        let cd = read_at(&file, loc.offset, usize::try_from(loc.size).ok()?)?;
        let (entries, _skipped) = parse_central_directory(&cd, MAX_CD_ENTRIES);
        Some(Archive { file, loc, entries })
    }

    /// One entry, decompressed and checked, if it is at most `max_out`.
    fn read(&self, entry: &CdEntry, max_out: usize) -> Option<Vec<u8>> {
        check_entry(entry, max_out).ok()?;
        let header = read_at(
            &self.file,
            self.loc.local_header_pos(entry)?,
            LOCAL_HEADER_LEN,
        )?;
        let range = entry_data_range(&self.loc, entry, &header).ok()?;
        let len = usize::try_from(range.end - range.start).ok()?;
        let data = read_at(&self.file, range.start, len)?;
        decode_entry(entry, &data, max_out).ok()
    }

    /// What `inspect_jar` reads from an in-memory jar, read from the file:
    /// only the entries that matter.
    fn inspect(&self, jar_file_name: &str) -> JarInfo {
        let names = || self.entries.iter().map(|e| e.name.as_slice());
        let mut info = JarInfo::default();
        for p in pom_properties_paths(names()) {
            let parsed = self
                .entries
                .get(p.index)
                .and_then(|e| self.read(e, MAX_POM_PROPERTIES_LEN))
                .and_then(|b| parse_pom_properties(&b));
            match parsed {
                Some(c) => info.poms.push(c),
                None => info.pom_failures = info.pom_failures.saturating_add(1),
            }
        }
        info.manifest = find_manifest(&self.entries)
            .and_then(|e| self.read(e, MAX_MANIFEST_LEN))
            .map(|b| parse_manifest(&b));
        info.primary = pick_primary(&info.poms, jar_file_name, info.manifest.as_ref());
        info.nested = nested_jar_names(names());
        info
    }
}

/// Everything one jar on disk contains, nested jars included.
fn read_jar(
    root: &RootFs,
    db: Option<&PackageDb>,
    in_root: &[u8],
    id: FileId,
) -> Option<Vec<Found>> {
    let file = root.open_file(in_root).ok()?;
    {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok()?;
        if (m.dev(), m.ino()) != (id.dev, id.ino) {
            return None;
        }
    }
    let archive = Archive::open(file)?;
    let name = String::from_utf8_lossy(basename(in_root)).into_owned();
    let distro = distro_owner(db, in_root);
    let info = archive.inspect(&name);
    let mut out: Vec<Found> = coords_of(&info, &name)
        .into_iter()
        .map(|c| Found {
            inner: Vec::new(),
            package: maven(&c, distro.clone()),
        })
        .collect();
    for &i in info.nested.iter().take(MAX_NESTED) {
        let Some(entry) = archive.entries.get(i) else {
            continue;
        };
        let Some(bytes) = archive.read(entry, MAX_NESTED_JAR_LEN) else {
            continue;
        };
        let Ok(zip) = ZipBytes::open(&bytes) else {
            continue;
        };
        let inner_name = String::from_utf8_lossy(basename(&entry.name)).into_owned();
        let inner = inspect_jar(&zip, &inner_name);
        for c in coords_of(&inner, &inner_name) {
            out.push(Found {
                inner: entry.name.clone(),
                package: maven(&c, distro.clone()),
            });
        }
    }
    Some(out)
}

/// Every pom.properties a jar has (a shaded jar has its dependencies'
/// too), its own first; the manifest's guess when there is none.
fn coords_of(info: &JarInfo, jar_file_name: &str) -> Vec<MavenCoords> {
    let mut out = Vec::new();
    if let Some((c, _guess)) = info.coords(jar_file_name) {
        out.push(c);
    }
    for c in &info.poms {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

fn maven(c: &MavenCoords, distro: Option<Arc<PackageInfo>>) -> Arc<PackageInfo> {
    let purl = patchgap_proto::purl::Purl::maven(&c.group_id, &c.artifact_id, &c.version)
        .map(|p| p.to_string())
        .unwrap_or_default();
    package(
        "maven",
        &c.artifact_id,
        &c.group_id,
        &c.version,
        purl,
        distro,
    )
}
