//! Reading whole OSV databases offline: a directory tree of advisory files
//! (a checkout of pypa/advisory-database, golang/vulndb's `data/osv`, an
//! unpacked osv.dev export), or a zip archive of OSV JSON as osv.dev
//! publishes per ecosystem (`<ecosystem>/all.zip`).
//!
//! Files are picked by extension: `.json` is read as JSON, `.yaml` and
//! `.yml` as YAML, anything else (READMEs, manifests) is passed over
//! silently. A file with an advisory extension that is not an advisory (an
//! index such as `_eval.json`, a broken record) becomes an [`ImportError`],
//! never a panic and never the end of the import: one bad file costs only
//! itself.
//!
//! Directory walks do not follow symlinks out of the tree: a symlinked file
//! is read only when its target lies inside the (canonicalized) root, a
//! symlinked directory is never entered (that would allow cycles), and
//! special files (FIFOs, sockets, devices) are not opened, since opening a
//! FIFO blocks. Each is reported as [`ImportError::Skipped`]. The type
//! check and the open are two steps, so someone who can write into the
//! tree could still swap a file for a FIFO in between; the tree is expected
//! to belong to the operator.
//!
//! Zip archives are read from memory with the reader in `super::zip`. Each
//! entry is inflated to at most [`super::MAX_FILE_BYTES`], entries whose
//! stored data overlap (the "overlapping files" zip bomb) are refused, and
//! the total inflated for one archive is capped at
//! [`ZIP_EXPANSION_RATIO`] times the archive's size (at least
//! [`MIN_ZIP_BUDGET`]), so a small archive cannot cost unbounded time.
//!
//! Returned paths are relative to the tree's root, or zip entry names as
//! stored. They are labels: a zip entry name may contain `..` and must not
//! be used to build a file system path.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Advisory, MAX_FILE_BYTES, OsvError, parse_json, parse_yaml, zip};

/// Most advisory files read from one tree or archive (osv.dev's whole
/// database is well under a million records).
pub const MAX_FILES: usize = 2_000_000;

/// Deepest directory level entered below the root.
pub const MAX_TREE_DEPTH: usize = 32;

/// Most bytes inflated from one archive, as a multiple of its size: real
/// OSV JSON compresses about 5 to 10 times, a deflate bomb about 1000.
pub const ZIP_EXPANSION_RATIO: u64 = 100;

/// The inflation budget of an archive smaller than 1/100 of this.
pub const MIN_ZIP_BUDGET: u64 = 256 << 20;

/// A file or archive entry that did not yield an advisory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The file was read but is not a valid advisory.
    #[error("{error}")]
    Parse {
        /// The file, relative to the root (or the entry name).
        path: PathBuf,
        /// Where and why (its `file` is `path`).
        error: OsvError,
    },
    /// The file or directory could not be read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file or directory, relative to the root.
        path: PathBuf,
        /// The operating system's error.
        message: String,
    },
    /// Left out on purpose: a symlink out of the tree, a symlinked
    /// directory, a special file, an oversized file, or a limit reached.
    #[error("{}: skipped: {reason}", path.display())]
    Skipped {
        /// The file or directory, relative to the root.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The archive, or one of its entries, is damaged or over a limit.
    #[error("{}: {reason}", if path.as_os_str().is_empty() { Path::new("<archive>") } else { path }.display())]
    Archive {
        /// The entry name, or empty for the archive as a whole.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl ImportError {
    /// The file, directory or entry the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ImportError::Parse { path, .. }
            | ImportError::Io { path, .. }
            | ImportError::Skipped { path, .. }
            | ImportError::Archive { path, .. } => path,
        }
    }
}

/// What [`read_tree`] and [`read_zip`] return: the advisories with their
/// paths, and everything that did not parse or was skipped.
pub type Imported = (Vec<(PathBuf, Advisory)>, Vec<ImportError>);

/// One step of a walk: a file read (its path and bytes), or what went wrong.
type Step = Result<(PathBuf, Vec<u8>), ImportError>;

/// Advisory files read but not parsed, and what could not be read.
pub type Files = (Vec<(PathBuf, Vec<u8>)>, Vec<ImportError>);

/// Whether `name` has an advisory extension (`.json`, `.yaml`, `.yml`,
/// any case).
pub fn is_advisory_name(name: &str) -> bool {
    format_of(name).is_some()
}

#[derive(Clone, Copy)]
enum Kind {
    Json,
    Yaml,
}

fn format_of(name: &str) -> Option<Kind> {
    let (_, ext) = name.rsplit_once('.')?;
    if ext.eq_ignore_ascii_case("json") {
        Some(Kind::Json)
    } else if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") {
        Some(Kind::Yaml)
    } else {
        None
    }
}

/// Parses `bytes` as the format `name`'s extension says, or `None` when
/// the name is not an advisory file's.
pub fn parse_file(name: &str, bytes: &[u8]) -> Option<Result<Advisory, OsvError>> {
    Some(match format_of(name)? {
        Kind::Json => parse_json(bytes, name),
        Kind::Yaml => parse_yaml(bytes, name),
    })
}

/// Parses one file's bytes into the output.
fn parse_into(out: &mut Imported, path: PathBuf, bytes: &[u8]) {
    let name = path.to_string_lossy().into_owned();
    match parse_file(&name, bytes) {
        Some(Ok(advisory)) => out.0.push((path, advisory)),
        Some(Err(error)) => out.1.push(ImportError::Parse { path, error }),
        None => {}
    }
}

/// Reads every advisory file under `root`, recursively (see the module
/// docs for what is followed and what is skipped). The results are sorted
/// by path; paths are relative to `root`.
pub fn read_tree(root: &Path) -> Imported {
    let mut out: Imported = (Vec::new(), Vec::new());
    walk_tree(root, &mut |item| match item {
        Ok((path, bytes)) => parse_into(&mut out, path, &bytes),
        Err(e) => out.1.push(e),
    });
    out.0.sort_by(|a, b| a.0.cmp(&b.0));
    out.1.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// The advisory files under `root` as bytes, unparsed, by the same walk as
/// [`read_tree`] (for a client that sends them to the collector to parse).
pub fn tree_files(root: &Path) -> Files {
    let mut out: Files = (Vec::new(), Vec::new());
    walk_tree(root, &mut |item| match item {
        Ok(file) => out.0.push(file),
        Err(e) => out.1.push(e),
    });
    out.0.sort_by(|a, b| a.0.cmp(&b.0));
    out.1.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// The walk behind [`read_tree`] and [`tree_files`]: each advisory file's
/// bytes, or what went wrong, go to `emit` in the order met.
fn walk_tree(root: &Path, emit: &mut dyn FnMut(Step)) {
    let io = |path: &Path, e: std::io::Error| ImportError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let root = match fs::canonicalize(root) {
        Ok(r) => r,
        Err(e) => {
            emit(Err(io(root, e)));
            return;
        }
    };
    let mut files = 0usize;
    let mut stack = vec![(PathBuf::new(), 0usize)];
    'walk: while let Some((rel_dir, depth)) = stack.pop() {
        let entries = match fs::read_dir(root.join(&rel_dir)) {
            Ok(rd) => rd,
            Err(e) => {
                emit(Err(io(&rel_dir, e)));
                continue;
            }
        };
        let mut listed = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => listed.push(entry),
                Err(e) => emit(Err(io(&rel_dir, e))),
            }
        }
        listed.sort_by_key(|e| e.file_name());
        for entry in listed {
            let rel = rel_dir.join(entry.file_name());
            let skip = |reason: &str| ImportError::Skipped {
                path: rel.clone(),
                reason: reason.to_string(),
            };
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) => {
                    emit(Err(io(&rel, e)));
                    continue;
                }
            };
            if file_type.is_dir() {
                if depth + 1 > MAX_TREE_DEPTH {
                    emit(Err(skip(&format!(
                        "deeper than {MAX_TREE_DEPTH} directory levels"
                    ))));
                } else {
                    stack.push((rel, depth + 1));
                }
                continue;
            }
            if !is_advisory_name(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let full = root.join(&rel);
            if file_type.is_symlink() {
                match fs::canonicalize(&full) {
                    Err(e) => {
                        emit(Err(io(&rel, e)));
                        continue;
                    }
                    Ok(target) if !target.starts_with(&root) => {
                        emit(Err(skip("symlink leads outside the tree")));
                        continue;
                    }
                    Ok(target) => match fs::metadata(&target) {
                        Ok(m) if m.is_file() => {}
                        Ok(m) if m.is_dir() => {
                            emit(Err(skip("symlinked directory not followed")));
                            continue;
                        }
                        Ok(_) => {
                            emit(Err(skip("not a regular file")));
                            continue;
                        }
                        Err(e) => {
                            emit(Err(io(&rel, e)));
                            continue;
                        }
                    },
                }
            } else if !file_type.is_file() {
                emit(Err(skip("not a regular file")));
                continue;
            }
            files += 1;
            if files > MAX_FILES {
                emit(Err(skip(&format!(
                    "more than {MAX_FILES} advisory files; the rest of the tree is not read"
                ))));
                break 'walk;
            }
            match read_capped(&full) {
                Ok(bytes) => emit(Ok((rel, bytes))),
                Err(ReadError::Io(e)) => emit(Err(io(&rel, e))),
                Err(ReadError::TooBig(len)) => emit(Err(skip(&format!(
                    "file is {len} bytes, larger than the {MAX_FILE_BYTES}-byte limit"
                )))),
            }
        }
    }
}

enum ReadError {
    Io(std::io::Error),
    TooBig(u64),
}

/// Reads a regular file of at most `MAX_FILE_BYTES` (one more byte is read
/// when it grew since its size was checked, and the parser refuses it).
fn read_capped(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = fs::File::open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::Io(std::io::Error::other("not a regular file")));
    }
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(ReadError::TooBig(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    Ok(bytes)
}

/// Reads every advisory entry of the zip archive in `bytes` (see the module
/// docs for the limits). Results are in central directory order; paths are
/// the entry names.
pub fn read_zip(bytes: &[u8]) -> Imported {
    read_zip_with_budget(bytes, MIN_ZIP_BUDGET)
}

/// [`read_zip`] with another floor for the inflation budget (tests use a
/// small one).
fn read_zip_with_budget(bytes: &[u8], min_budget: u64) -> Imported {
    let mut out: Imported = (Vec::new(), Vec::new());
    walk_zip(bytes, min_budget, &mut |item| match item {
        Ok((path, data)) => parse_into(&mut out, path, &data),
        Err(e) => out.1.push(e),
    });
    out
}

/// The advisory entries of a zip archive as bytes, unparsed, with the same
/// limits as [`read_zip`].
pub fn zip_files(bytes: &[u8]) -> Files {
    let mut out: Files = (Vec::new(), Vec::new());
    walk_zip(bytes, MIN_ZIP_BUDGET, &mut |item| match item {
        Ok(file) => out.0.push(file),
        Err(e) => out.1.push(e),
    });
    out
}

/// The reading behind [`read_zip`] and [`zip_files`].
fn walk_zip(bytes: &[u8], min_budget: u64, emit: &mut dyn FnMut(Step)) {
    let archive_error = |path: PathBuf, reason: String| ImportError::Archive { path, reason };
    let archive = match zip::open(bytes, MAX_FILES) {
        Ok(a) => a,
        Err(reason) => {
            emit(Err(archive_error(PathBuf::new(), reason)));
            return;
        }
    };
    if archive.skipped > 0 {
        emit(Err(archive_error(
            PathBuf::new(),
            format!(
                "{} central directory records malformed or over the {MAX_FILES}-entry limit",
                archive.skipped
            ),
        )));
    }
    let name_of = |e: &zip::Entry| -> String {
        String::from_utf8_lossy(&e.name)
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    };
    // Locate each advisory entry, refusing any whose bytes (local header
    // and data) overlap another's: no honest writer does that, and it is
    // how a small archive makes many large entries out of one.
    let mut wanted: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    for (i, e) in archive.entries.iter().enumerate() {
        if e.is_dir() || !is_advisory_name(&name_of(e)) {
            continue;
        }
        match archive.extent(e) {
            Ok((header, data)) => wanted.push((i, header..data.end)),
            Err(reason) => emit(Err(archive_error(PathBuf::from(name_of(e)), reason))),
        }
    }
    let mut by_start: Vec<usize> = (0..wanted.len()).collect();
    by_start.sort_by_key(|&w| (wanted[w].1.start, wanted[w].0));
    let mut overlapping = vec![false; wanted.len()];
    let mut end = 0usize;
    for &w in &by_start {
        if wanted[w].1.start < end {
            overlapping[w] = true;
        }
        end = end.max(wanted[w].1.end);
    }
    let mut budget = (bytes.len() as u64)
        .saturating_mul(ZIP_EXPANSION_RATIO)
        .max(min_budget);
    for (k, (i, _)) in wanted.iter().enumerate() {
        let e = &archive.entries[*i];
        let path = PathBuf::from(name_of(e));
        if overlapping[k] {
            emit(Err(archive_error(
                path,
                "entry overlaps another entry's data".to_string(),
            )));
            continue;
        }
        let cost = e.uncompressed_size.min(MAX_FILE_BYTES as u64);
        if cost > budget {
            emit(Err(archive_error(
                path,
                format!(
                    "archive inflates to more than {ZIP_EXPANSION_RATIO} times its size; \
                     this and later entries are not read"
                ),
            )));
            break;
        }
        match archive.read(e, MAX_FILE_BYTES) {
            Ok(data) => {
                budget -= cost;
                emit(Ok((path, data.into_owned())));
            }
            Err(reason) => {
                // A lying entry may have cost a full MAX_FILE_BYTES.
                budget = budget.saturating_sub(MAX_FILE_BYTES as u64);
                emit(Err(archive_error(path, reason)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisories::osv::zip::build_zip;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    /// The OSV sample shipped with the repository (see its PROVENANCE.md).
    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/osv");

    /// A fresh scratch directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("osv-import-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const MINIMAL: &str = r#"{"id": "OSV-1", "modified": "2024-01-01T00:00:00Z"}"#;

    #[test]
    fn every_file_of_the_sample_parses() {
        let (advisories, errors) = read_tree(Path::new(TESTDATA));
        let mut per_source: BTreeMap<String, usize> = BTreeMap::new();
        for (path, a) in &advisories {
            let source = path
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            *per_source.entry(source.into_owned()).or_default() += 1;
            // Every record is named after its id.
            assert_eq!(
                path.file_stem().unwrap().to_string_lossy(),
                a.id,
                "{}",
                path.display()
            );
        }
        eprintln!("advisories per source: {per_source:?}");
        let want: BTreeMap<String, usize> = [
            ("ghsa", 8),
            ("golang-vulndb", 205),
            ("pypa", 88),
            ("pypa-json-derived", 88),
            ("rustsec", 62),
            ("ubuntu", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(per_source, want);
        // The sample's own annotations are JSON arrays, not advisories:
        // they come back as errors naming the file and the reason.
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let suffix = ":1:1: expected an OSV record (an object) at the top level, found an array";
        assert_eq!(
            errors,
            [
                format!("golang-vulndb/_eval.json{suffix}"),
                format!("ground_truth_matches.json{suffix}"),
                format!("pypa/_eval.json{suffix}"),
                format!("rustsec/_eval.json{suffix}"),
            ]
        );
        // What the matcher will see.
        let withdrawn = advisories.iter().filter(|(_, a)| a.is_withdrawn()).count();
        let scored = advisories
            .iter()
            .filter(|(_, a)| a.cvss_v3().is_some())
            .count();
        let go_zero = advisories
            .iter()
            .filter(|(_, a)| a.id.starts_with("GO-") && a.modified.unix_seconds == -62_135_596_800)
            .count();
        eprintln!(
            "withdrawn {withdrawn}, with a CVSS v3 score {scored}, GO with year-1 modified {go_zero}"
        );
        assert_eq!((withdrawn, go_zero), (10, 205));
    }

    #[test]
    fn a_zip_of_the_sample_reads_like_the_tree() {
        let (tree, _) = read_tree(Path::new(TESTDATA));
        let files: Vec<(String, Vec<u8>)> = tree
            .iter()
            .map(|(p, _)| {
                let name = p.to_string_lossy().into_owned();
                (name.clone(), fs::read(Path::new(TESTDATA).join(p)).unwrap())
            })
            .chain([
                ("README.md".to_string(), b"not an advisory".to_vec()),
                ("x/_eval.json".to_string(), b"[]".to_vec()),
            ])
            .collect();
        let entries: Vec<(&str, &[u8], bool)> = files
            .iter()
            .enumerate()
            .map(|(i, (n, b))| (n.as_str(), b.as_slice(), i % 3 != 0))
            .collect();
        for zip64 in [false, true] {
            let bytes = build_zip(&entries, zip64, b"");
            let (advisories, errors) = read_zip(&bytes);
            assert_eq!(advisories, tree);
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].path(), Path::new("x/_eval.json"));
        }
    }

    #[test]
    fn symlinks_and_special_files() {
        let outside = TempDir::new("outside");
        fs::write(outside.0.join("secret.json"), MINIMAL).unwrap();
        let t = TempDir::new("tree");
        let root = &t.0;
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/OSV-1.json"), MINIMAL).unwrap();
        fs::write(
            root.join("a/OSV-2.yaml"),
            "id: OSV-2\nmodified: 2024-01-01T00:00:00Z\n",
        )
        .unwrap();
        fs::write(root.join("a/notes.txt"), "ignored").unwrap();
        fs::write(root.join("bad.json"), "{\"id\": \"x\",\n  \"modified\": 1}").unwrap();
        std::os::unix::fs::symlink(root.join("a/b/OSV-1.json"), root.join("inside.json")).unwrap();
        std::os::unix::fs::symlink(outside.0.join("secret.json"), root.join("escape.json"))
            .unwrap();
        std::os::unix::fs::symlink(&outside.0, root.join("outdir")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("loop.json")).unwrap();
        std::os::unix::fs::symlink(root.join("missing"), root.join("dangling.json")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(root.join("sock.json")).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(root.join("fifo.json"))
            .status()
            .is_ok_and(|s| s.success());
        fs::write(root.join("big.json"), vec![b' '; MAX_FILE_BYTES + 1]).unwrap();
        let (advisories, errors) = read_tree(root);
        let paths: Vec<_> = advisories
            .iter()
            .map(|(p, _)| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(paths, ["a/OSV-2.yaml", "a/b/OSV-1.json", "inside.json"]);
        let mut errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        if fifo {
            assert!(errors.contains(&"fifo.json: skipped: not a regular file".to_string()));
            errors.retain(|e| !e.starts_with("fifo.json"));
        }
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert_eq!(
            errors[0],
            "bad.json:2:15: modified: expected a string, found a number"
        );
        assert_eq!(
            errors[1],
            format!(
                "big.json: skipped: file is {} bytes, larger than the {MAX_FILE_BYTES}-byte limit",
                MAX_FILE_BYTES + 1
            )
        );
        assert!(
            errors[2].starts_with("dangling.json: No such file"),
            "{}",
            errors[2]
        );
        assert_eq!(
            errors[3],
            "escape.json: skipped: symlink leads outside the tree"
        );
        assert_eq!(
            errors[4],
            "loop.json: skipped: symlinked directory not followed"
        );
        assert_eq!(errors[5], "sock.json: skipped: not a regular file");
        // A missing root is one I/O error.
        let (a, e) = read_tree(&root.join("nope"));
        assert!(a.is_empty() && e.len() == 1);
    }

    #[test]
    fn deep_trees_stop_at_the_limit() {
        let t = TempDir::new("deep");
        let mut dir = t.0.clone();
        for _ in 0..MAX_TREE_DEPTH + 3 {
            dir.push("d");
        }
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("x.json"), MINIMAL).unwrap();
        let (advisories, errors) = read_tree(&t.0);
        assert!(advisories.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .ends_with("skipped: deeper than 32 directory levels")
        );
    }

    /// A raw deflate stream inflating to `total` zero bytes, built by hand
    /// (as in the agent's zip tests): fixed Huffman, a literal 0, then
    /// "copy 258 from distance 1" repeated.
    fn zero_bomb(total: u64) -> Vec<u8> {
        let (mut out, mut acc, mut n) = (Vec::new(), 0u64, 0u32);
        let mut put = |v: u64, len: u32, out: &mut Vec<u8>| {
            acc |= v << n;
            n += len;
            while n >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                n -= 8;
            }
        };
        put(1, 1, &mut out);
        put(1, 2, &mut out);
        put(0b0000_1100, 8, &mut out);
        for _ in 0..(total - 1) / 258 {
            put(0b1010_0011, 13, &mut out);
        }
        for _ in 0..(total - 1) % 258 {
            put(0b0000_1100, 8, &mut out);
        }
        put(0, 7, &mut out);
        put(0, 7, &mut out);
        out
    }

    #[test]
    fn zip_bombs_and_damaged_archives() {
        let t0 = Instant::now();
        // Not a zip at all.
        let (a, e) = read_zip(b"definitely not a zip archive");
        assert!(a.is_empty());
        assert_eq!(
            e[0].to_string(),
            "<archive>: not a zip archive (no end of central directory)"
        );
        // Overlapping entries: many directory records sharing one local
        // entry. The first is read, the others are refused.
        let one = build_zip(&[("a.json", MINIMAL.as_bytes(), true)], false, b"");
        let cd_len = 46 + "a.json".len();
        let eocd = one.len() - 22;
        let cd_start = eocd - cd_len;
        let record = one[cd_start..eocd].to_vec();
        let mut bytes = one[..cd_start].to_vec();
        for _ in 0..1000 {
            bytes.extend_from_slice(&record);
        }
        let mut tail = one[eocd..].to_vec();
        tail[8..10].copy_from_slice(&1000u16.to_le_bytes());
        tail[10..12].copy_from_slice(&1000u16.to_le_bytes());
        tail[12..16].copy_from_slice(&((cd_len * 1000) as u32).to_le_bytes());
        bytes.extend_from_slice(&tail);
        let (a, e) = read_zip(&bytes);
        assert_eq!(a.len(), 1);
        assert_eq!(e.len(), 999);
        assert_eq!(
            e[0].to_string(),
            "a.json: entry overlaps another entry's data"
        );
        // A deflate bomb claiming a small size: stopped at MAX_FILE_BYTES.
        let bomb = zero_bomb(1 << 30);
        let mut z = build_zip(&[("bomb.json", b"{}", true)], false, b"");
        let data_start = 30 + "bomb.json".len();
        let old_len = u32::from_le_bytes(z[18..22].try_into().unwrap()) as usize;
        z.splice(data_start..data_start + old_len, bomb.iter().copied());
        let grow = (bomb.len() - old_len) as u32;
        let eocd = z.len() - 22;
        let cd_off = u32::from_le_bytes(z[eocd + 16..eocd + 20].try_into().unwrap()) + grow;
        z[eocd + 16..eocd + 20].copy_from_slice(&cd_off.to_le_bytes());
        let c = cd_off as usize;
        z[c + 20..c + 24].copy_from_slice(&(bomb.len() as u32).to_le_bytes());
        let (a, e) = read_zip(&z);
        assert!(a.is_empty());
        assert_eq!(
            e[0].to_string(),
            format!("bomb.json: entry inflates to more than {MAX_FILE_BYTES} bytes")
        );
        // An entry claiming more than the limit is refused unread.
        z[c + 24..c + 28].copy_from_slice(&(1u32 << 30).to_le_bytes());
        let (_, e) = read_zip(&z);
        assert!(
            e[0].to_string().contains("over the 16777216-byte limit"),
            "{}",
            e[0]
        );
        // Many honest but highly compressible entries: the archive budget
        // (scaled down: a 1 MiB floor and 100 KiB entries).
        let spaces = vec![b' '; 100 << 10];
        let names: Vec<String> = (0..40).map(|i| format!("z{i}.json")).collect();
        let entries: Vec<(&str, &[u8], bool)> = names
            .iter()
            .map(|n| (n.as_str(), &spaces[..], true))
            .collect();
        let z = build_zip(&entries, false, b"");
        assert!((z.len() as u64) * ZIP_EXPANSION_RATIO < 1 << 20);
        let (a, e) = read_zip_with_budget(&z, 1 << 20);
        assert!(a.is_empty());
        // Ten entries of 100 KiB fit in 1 MiB; the eleventh is refused with
        // the rest.
        assert_eq!(e.len(), 11, "{e:#?}");
        assert!(
            e[9].to_string()
                .starts_with("z9.json:1:102401: unexpected end of input")
        );
        assert_eq!(
            e[10].to_string(),
            "z10.json: archive inflates to more than 100 times its size; this and later entries are not read"
        );
        // At full scale the floor is 256 MiB.
        assert_eq!(read_zip(&z).1.len(), 40);
        assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    }

    use crate::fuzz::Rng;
    fn mutate(rng: &mut Rng, fixture: &[u8]) -> Vec<u8> {
        crate::fuzz::mutate(rng, fixture, ALPHABET)
    }

    const ALPHABET: &[u8] = b"PK\x01\x02\x03\x04\x05\x06\x07\x08\xff\x00{}\"";

    #[test]
    fn fuzz_zips_no_panics_and_bounded_output() {
        let ghsa = fs::read(format!("{TESTDATA}/ghsa/GHSA-mq26-g339-26xf.json")).unwrap();
        let yaml = fs::read(format!("{TESTDATA}/pypa/vulns/jinja2/PYSEC-2014-8.yaml")).unwrap();
        let entries: [(&str, &[u8], bool); 3] = [
            ("a/GHSA.json", &ghsa, true),
            ("b/PYSEC.yaml", &yaml, false),
            ("c/min.json", MINIMAL.as_bytes(), true),
        ];
        let fixtures = [
            build_zip(&entries, false, b""),
            build_zip(&entries, true, b""),
            build_zip(&entries, false, b"#!/bin/sh\nexit 0\n"),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut read_any = 0;
        for i in 0..3000 {
            let input = if i % 5 == 0 {
                (0..rng.below(400))
                    .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                    .collect()
            } else {
                let f = &fixtures[rng.below(fixtures.len())];
                mutate(&mut rng, f)
            };
            let (a, e) = read_zip(&input);
            assert!(a.len() <= 3 + input.len() / 46, "{}", a.len());
            assert!(e.len() <= 1 + input.len() / 46);
            read_any += a.len();
        }
        assert!(read_any > 500, "{read_any}");
    }
}
