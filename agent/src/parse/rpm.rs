//! Parser for rpm package headers, as stored one per row in the `Packages`
//! table of `/var/lib/rpm/rpmdb.sqlite` (and as found inside `.rpm` files).
//!
//! A header is a small tagged database in network byte order:
//!
//! ```text
//! [magic 8e ad e8 01 00 00 00 00]   only in .rpm files, not in rpmdb.sqlite
//! il: u32                           number of index entries
//! dl: u32                           length of the data section
//! il × { tag: u32, type: u32, offset: i32, count: u32 }
//! dl bytes of data
//! ```
//!
//! Each index entry says where its value lives in the data section and how
//! many elements it has; strings are NUL-terminated, string arrays are
//! `count` NUL-terminated strings back to back, integers are big-endian.
//! Quirks handled here:
//!
//! * rpmdb.sqlite stores the blob without the 8-byte magic, while headers
//!   read from a package file start with it. Both are accepted; bytes after
//!   the data section (the payload of an `.rpm`) are ignored.
//! * Since rpm 4.0.1 the first entry is usually a *region* tag (61, 62 or
//!   63, type BIN) whose data is a trailer describing the immutable part of
//!   the header, and rpm appends "dribble" entries (install time, install
//!   color, ...) after the region. A dribble entry that repeats a tag
//!   replaces the region's value, so here the last entry of a tag wins. The
//!   region trailer itself carries nothing this parser needs and is not
//!   interpreted, which also means headers without a region (very old
//!   databases, hand-made headers) parse the same way.
//! * The file list is normally compressed into `DIRNAMES` (each directory
//!   once, with a trailing `/`), `BASENAMES` and `DIRINDEXES` (for each
//!   basename, the index of its directory). Headers from rpm older than 4
//!   carry `OLDFILENAMES` (full paths) instead; it is used only when
//!   `BASENAMES` is absent. The list includes directories the package owns
//!   and `%ghost` files that may not exist on disk.
//! * `gpg-pubkey` pseudo-packages (imported signing keys) have a name,
//!   version and release but no architecture, no source rpm and no files,
//!   so those fields are optional.
//! * `EPOCH` is an INT32 that is absent for most packages; absent is not
//!   the same as 0 for display, although rpm compares them equal.
//!
//! The Berkeley DB `Packages` file of older releases (RHEL 7 and 8) and
//! SUSE's `Packages.db` (ndb) hold headers in this same format; only the
//! container around the blobs differs, and reading it is the caller's job.
//!
//! Every offset and count is checked against the data section before it is
//! used, counts and the size of the reconstructed file list are capped (see
//! the `MAX_*` constants), and each value is decoded at most once, so the
//! work is linear in the size of the blob.

use super::{ParseError, malformed};

/// The 8-byte header magic that starts a header inside an `.rpm` file:
/// `8e ad e8`, header version 1, then four reserved zero bytes.
pub const HEADER_MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];

/// The largest index entry count accepted. This is rpm's own limit
/// (`hdrchkTags`: fewer than 65536 tags); real headers have 50 to 150.
pub const MAX_INDEX_ENTRIES: usize = 0xffff;

/// The largest data section accepted: rpm's own limit (`HEADER_DATA_MAX`,
/// 256 MiB less one byte, raised from 16 MiB when file signatures were
/// added). Real headers are a few KiB to a few MiB, the largest being
/// packages with tens of thousands of files.
pub const MAX_DATA_LEN: usize = 0x0fff_ffff;

/// The most files (and, separately, the most directory names) one header
/// may list. The largest real packages list around 100 000 files.
pub const MAX_FILES: usize = 1_000_000;

/// The most bytes the reconstructed file paths of one header may add up
/// to. `DIRINDEXES` lets a header reuse one long directory name for every
/// file, so without this cap a small header could expand into gigabytes of
/// paths.
pub const MAX_FILE_LIST_BYTES: usize = 64 << 20;

/// Tag numbers used here (rpmtag.h).
const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_DISTRIBUTION: u32 = 1010;
const TAG_VENDOR: u32 = 1011;
const TAG_ARCH: u32 = 1022;
const TAG_OLDFILENAMES: u32 = 1027;
const TAG_SOURCERPM: u32 = 1044;
const TAG_DIRINDEXES: u32 = 1116;
const TAG_BASENAMES: u32 = 1117;
const TAG_DIRNAMES: u32 = 1118;

/// Data types (rpmtag.h `rpmTagType_e`).
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// The tags read, in the order of the slots in [`Wanted`].
const WANTED_TAGS: [u32; 12] = [
    TAG_NAME,
    TAG_VERSION,
    TAG_RELEASE,
    TAG_EPOCH,
    TAG_DISTRIBUTION,
    TAG_VENDOR,
    TAG_ARCH,
    TAG_OLDFILENAMES,
    TAG_SOURCERPM,
    TAG_DIRINDEXES,
    TAG_BASENAMES,
    TAG_DIRNAMES,
];

/// What `parse_header_blob` reports in its errors.
const WHAT: &str = "rpm header";

/// One installed package, from its rpm header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmHeader {
    /// Package name, e.g. `openssl-libs`.
    pub name: String,
    /// Upstream version, e.g. `3.0.7`.
    pub version: String,
    /// Release, e.g. `27.el9`.
    pub release: String,
    /// Epoch, when the header has one (`1` in `1:3.0.7-27.el9`).
    pub epoch: Option<u32>,
    /// Architecture, e.g. `x86_64` or `noarch`; absent for `gpg-pubkey`.
    pub arch: Option<String>,
    /// Source package file name, e.g. `openssl-3.0.7-27.el9.src.rpm`;
    /// absent for `gpg-pubkey` and for source packages themselves.
    pub source_rpm: Option<String>,
    /// Vendor, e.g. `Red Hat, Inc.`, when present.
    pub vendor: Option<String>,
    /// Distribution, e.g. `Fedora Project`, when present.
    pub distribution: Option<String>,
    /// Absolute paths of the files and directories the package owns, in
    /// header order, byte-exact (rpm does not require UTF-8). Entries that
    /// do not start with `/` cannot be installed paths and are left out.
    pub files: Vec<Vec<u8>>,
}

impl RpmHeader {
    /// The `[epoch:]version-release` string rpm prints and compares.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(e) => format!("{e}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }
}

/// Parses one header blob: the `blob` column of rpmdb.sqlite's `Packages`
/// table (no magic), or a header from an `.rpm` file (starting with
/// [`HEADER_MAGIC`]; anything after the header is ignored).
///
/// Fails when the blob is truncated or exceeds a cap, when `NAME`,
/// `VERSION` or `RELEASE` is missing or not a valid string, when `EPOCH`
/// is present but not a single INT32, or when the file list is
/// inconsistent (a `DIRINDEXES` entry pointing past `DIRNAMES`, or counts
/// that differ). The optional string fields (arch, source rpm, vendor,
/// distribution) are `None` when absent or unreadable rather than failing
/// the header.
pub fn parse_header_blob(bytes: &[u8]) -> Result<RpmHeader, ParseError> {
    let body = match bytes.get(..3) {
        Some(m) if m == &HEADER_MAGIC[..3] => bytes
            .strip_prefix(&HEADER_MAGIC[..])
            .ok_or_else(|| malformed(WHAT, "bad header magic version"))?,
        _ => bytes,
    };
    let il = be_u32(body, 0).ok_or_else(|| malformed(WHAT, "truncated intro"))? as usize;
    let dl = be_u32(body, 4).ok_or_else(|| malformed(WHAT, "truncated intro"))? as usize;
    if il == 0 || il > MAX_INDEX_ENTRIES {
        return Err(malformed(WHAT, format!("index count {il} out of range")));
    }
    if dl > MAX_DATA_LEN {
        return Err(malformed(WHAT, format!("data length {dl} too large")));
    }
    // il and dl are capped, so none of this can overflow.
    let data_start = 8 + il * 16;
    let index = body
        .get(8..data_start)
        .ok_or_else(|| malformed(WHAT, "truncated index"))?;
    let data = body
        .get(data_start..data_start + dl)
        .ok_or_else(|| malformed(WHAT, "truncated data"))?;

    let mut wanted = Wanted::default();
    for raw in index.chunks_exact(16) {
        let field = |i: usize| u32::from_be_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        let entry = Entry {
            tag: field(0),
            ty: field(4),
            offset: field(8),
            count: field(12),
        };
        if let Some(slot) = WANTED_TAGS.iter().position(|&t| t == entry.tag) {
            // The last entry of a tag wins, as rpm's dribble entries do.
            wanted.0[slot] = Some(entry);
        }
    }

    let required = |tag: u32, name: &'static str| -> Result<String, ParseError> {
        let entry = wanted.get(tag).ok_or(ParseError::Missing { what: name })?;
        let value = string(data, entry).ok_or_else(|| malformed(WHAT, format!("bad {name}")))?;
        valid_word(value)
            .then(|| String::from_utf8(value.to_vec()).ok())
            .flatten()
            .ok_or_else(|| malformed(WHAT, format!("invalid {name}")))
    };
    let name = required(TAG_NAME, "rpm NAME")?;
    if name == "." || name == ".." || name.contains('/') {
        return Err(malformed(WHAT, "invalid rpm NAME"));
    }
    let version = required(TAG_VERSION, "rpm VERSION")?;
    let release = required(TAG_RELEASE, "rpm RELEASE")?;
    let optional = |tag: u32| -> Option<String> {
        let value = string(data, wanted.get(tag)?)?;
        let text = std::str::from_utf8(value).ok()?;
        (!text.is_empty() && !text.chars().any(char::is_control)).then(|| text.to_owned())
    };
    let arch = optional(TAG_ARCH).filter(|a| valid_word(a.as_bytes()));
    // An unreadable epoch fails the header: guessing would give a wrong
    // version, and versions decide which advisories apply.
    let epoch = match wanted.get(TAG_EPOCH) {
        None => None,
        Some(e) => Some(int32_array(data, e, 1).map_err(|r| malformed(WHAT, r))?[0]),
    };
    let files = file_list(data, &wanted)?;
    Ok(RpmHeader {
        name,
        version,
        release,
        epoch,
        arch,
        source_rpm: optional(TAG_SOURCERPM),
        vendor: optional(TAG_VENDOR),
        distribution: optional(TAG_DISTRIBUTION),
        files,
    })
}

/// One index entry as stored (offset still raw; it is a signed value in
/// rpm, so anything at or above 2^31 is negative and rejected).
#[derive(Clone, Copy)]
struct Entry {
    tag: u32,
    ty: u32,
    offset: u32,
    count: u32,
}

/// The last entry seen for each tag in [`WANTED_TAGS`].
#[derive(Default)]
struct Wanted([Option<Entry>; WANTED_TAGS.len()]);

impl Wanted {
    fn get(&self, tag: u32) -> Option<Entry> {
        let slot = WANTED_TAGS.iter().position(|&t| t == tag)?;
        self.0[slot]
    }
}

/// Builds the file list from DIRNAMES/BASENAMES/DIRINDEXES, or from
/// OLDFILENAMES when BASENAMES is absent. A header with neither has no
/// files (e.g. `gpg-pubkey`, meta packages).
fn file_list(data: &[u8], wanted: &Wanted) -> Result<Vec<Vec<u8>>, ParseError> {
    let bad = |reason: &str| malformed(WHAT, reason.to_owned());
    let mut total = 0usize;
    let mut files = Vec::new();
    let mut push = |dir: &[u8], base: &[u8]| -> Result<(), ParseError> {
        let path_len = dir.len() + base.len();
        total = total.saturating_add(path_len);
        if total > MAX_FILE_LIST_BYTES {
            return Err(bad("file list too large"));
        }
        if dir.first().or(base.first()) == Some(&b'/') {
            let mut path = Vec::with_capacity(path_len);
            path.extend_from_slice(dir);
            path.extend_from_slice(base);
            files.push(path);
        }
        Ok(())
    };
    if let Some(basenames) = wanted.get(TAG_BASENAMES) {
        let basenames = string_array(data, basenames, MAX_FILES).map_err(bad)?;
        let dirnames = match wanted.get(TAG_DIRNAMES) {
            Some(e) => string_array(data, e, MAX_FILES).map_err(bad)?,
            None => return Err(bad("BASENAMES without DIRNAMES")),
        };
        let dirindexes = match wanted.get(TAG_DIRINDEXES) {
            Some(e) => int32_array(data, e, MAX_FILES).map_err(bad)?,
            None => return Err(bad("BASENAMES without DIRINDEXES")),
        };
        if dirindexes.len() != basenames.len() {
            return Err(bad("DIRINDEXES and BASENAMES counts differ"));
        }
        for (base, &dir) in basenames.iter().zip(&dirindexes) {
            let dir = dirnames
                .get(dir as usize)
                .ok_or_else(|| bad("DIRINDEXES entry out of range"))?;
            push(dir, base)?;
        }
    } else if let Some(old) = wanted.get(TAG_OLDFILENAMES) {
        for path in string_array(data, old, MAX_FILES).map_err(bad)? {
            push(b"", path)?;
        }
    }
    Ok(files)
}

/// A big-endian u32 at `at`, if the bytes are there.
fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The data of an entry from its offset to the end of the data section,
/// or `None` when the offset is negative or past the end.
fn tail(data: &[u8], entry: Entry) -> Option<&[u8]> {
    if entry.offset > i32::MAX as u32 {
        return None;
    }
    data.get(entry.offset as usize..)
}

/// A STRING (count 1) or the first element of an I18NSTRING, without its
/// NUL. `None` for any other type or a string not terminated inside the
/// data section.
fn string(data: &[u8], entry: Entry) -> Option<&[u8]> {
    let ok = match entry.ty {
        TYPE_STRING => entry.count == 1,
        TYPE_I18NSTRING => entry.count >= 1,
        _ => false,
    };
    if !ok {
        return None;
    }
    let rest = tail(data, entry)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

/// The `count` strings of a STRING_ARRAY, each without its NUL. Scans each
/// byte of the data section at most once.
fn string_array(data: &[u8], entry: Entry, cap: usize) -> Result<Vec<&[u8]>, &'static str> {
    if entry.ty != TYPE_STRING_ARRAY {
        return Err("string array has the wrong type");
    }
    let count = entry.count as usize;
    if count > cap {
        return Err("string array count over the cap");
    }
    let mut rest = tail(data, entry).ok_or("string array offset out of range")?;
    // Every element needs at least its NUL, so a count larger than the
    // remaining data is rejected before allocating for it.
    if count > rest.len() {
        return Err("string array count exceeds the data");
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or("unterminated string in array")?;
        out.push(&rest[..end]);
        rest = &rest[end + 1..];
    }
    Ok(out)
}

/// The `count` values of an INT32 entry.
fn int32_array(data: &[u8], entry: Entry, cap: usize) -> Result<Vec<u32>, &'static str> {
    if entry.ty != TYPE_INT32 {
        return Err("int32 array has the wrong type");
    }
    let count = entry.count as usize;
    if count == 0 || count > cap {
        return Err("int32 array count out of range");
    }
    let rest = tail(data, entry).ok_or("int32 array offset out of range")?;
    let bytes = rest
        .get(..count * 4)
        .ok_or("int32 array runs past the data")?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Names, versions, releases and architectures are non-empty printable
/// ASCII without spaces (rpmbuild enforces a narrower set still).
fn valid_word(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(u8::is_ascii_graphic)
}

/// Builds a header blob (no magic) from `(tag, type, count, data)` entries,
/// laying the data out back to back with INT32 values 4-aligned, as rpm
/// does. For tests.
#[cfg(test)]
pub(crate) fn build_blob(entries: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
    let mut index = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    for (tag, ty, count, bytes) in entries {
        if *ty == TYPE_INT32 {
            while !data.len().is_multiple_of(4) {
                data.push(0);
            }
        }
        for v in [*tag, *ty, data.len() as u32, *count] {
            index.extend_from_slice(&v.to_be_bytes());
        }
        data.extend_from_slice(bytes);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&index);
    out.extend_from_slice(&data);
    out
}

/// A small synthetic header (with a region-less layout and an EPOCH) for
/// the shared fuzz loop.
#[cfg(test)]
pub(crate) fn sample_blob() -> Vec<u8> {
    build_blob(&[
        (TAG_NAME, TYPE_STRING, 1, b"bash\0".to_vec()),
        (TAG_VERSION, TYPE_STRING, 1, b"5.2.26\0".to_vec()),
        (TAG_RELEASE, TYPE_STRING, 1, b"1.fc40\0".to_vec()),
        (TAG_EPOCH, TYPE_INT32, 1, 7u32.to_be_bytes().to_vec()),
        (TAG_ARCH, TYPE_STRING, 1, b"x86_64\0".to_vec()),
        (
            TAG_SOURCERPM,
            TYPE_STRING,
            1,
            b"bash-5.2.26-1.fc40.src.rpm\0".to_vec(),
        ),
        (
            TAG_DIRINDEXES,
            TYPE_INT32,
            3,
            [0u32, 0, 1].iter().flat_map(|v| v.to_be_bytes()).collect(),
        ),
        (
            TAG_BASENAMES,
            TYPE_STRING_ARRAY,
            3,
            b"bash\0sh\0bash.1.gz\0".to_vec(),
        ),
        (
            TAG_DIRNAMES,
            TYPE_STRING_ARRAY,
            2,
            b"/usr/bin/\0/usr/share/man/man1/\0".to_vec(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// The committed fixture directory (`testdata/rpm` at the workspace
    /// root).
    fn testdata() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/rpm")
    }

    /// Reads every `(hnum, blob)` row of an rpmdb.sqlite. The database is
    /// in WAL mode, as rpm leaves it; `immutable=1` reads it without
    /// creating `-wal`/`-shm` files next to the committed fixture.
    fn read_rpmdb(path: &Path) -> Vec<(i64, Vec<u8>)> {
        let uri = format!("file:{}?immutable=1", path.display());
        let conn = rusqlite::Connection::open_with_flags(
            uri,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .expect("open rpmdb.sqlite");
        let mut stmt = conn
            .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")
            .expect("prepare");
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// What `rpm -qa --qf` printed for the fixture (testdata/rpm/expected.txt):
    /// `PKG name epoch version release arch sourcerpm vendor distribution`
    /// and `FILE name path` lines, tab-separated, `(none)` for absent.
    fn expected() -> Vec<(RpmHeaderView, Vec<Vec<u8>>)> {
        let text = std::fs::read_to_string(testdata().join("expected.txt")).expect("expected.txt");
        let mut out: Vec<(RpmHeaderView, Vec<Vec<u8>>)> = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let opt = |s: &str| (s != "(none)").then(|| s.to_owned());
            match f[0] {
                "PKG" => out.push((
                    RpmHeaderView {
                        name: f[1].into(),
                        epoch: opt(f[2]).map(|e| e.parse().unwrap()),
                        version: f[3].into(),
                        release: f[4].into(),
                        arch: opt(f[5]),
                        source_rpm: opt(f[6]),
                        vendor: opt(f[7]),
                        distribution: opt(f[8]),
                    },
                    Vec::new(),
                )),
                "FILE" => {
                    let last = out.last_mut().expect("FILE before PKG");
                    assert_eq!(last.0.name, f[1]);
                    last.1.push(f[2].as_bytes().to_vec());
                }
                other => panic!("unexpected line kind {other}"),
            }
        }
        out
    }

    /// Everything but the files, for comparing with `rpm -q` output.
    #[derive(Debug, PartialEq, Eq)]
    struct RpmHeaderView {
        name: String,
        epoch: Option<u32>,
        version: String,
        release: String,
        arch: Option<String>,
        source_rpm: Option<String>,
        vendor: Option<String>,
        distribution: Option<String>,
    }

    fn view(h: &RpmHeader) -> RpmHeaderView {
        RpmHeaderView {
            name: h.name.clone(),
            epoch: h.epoch,
            version: h.version.clone(),
            release: h.release.clone(),
            arch: h.arch.clone(),
            source_rpm: h.source_rpm.clone(),
            vendor: h.vendor.clone(),
            distribution: h.distribution.clone(),
        }
    }

    #[test]
    fn real_rpmdb_sqlite_matches_rpm_query() {
        // Test-only I/O: the parser itself never reads files.
        let root = testdata().join("root");
        let blobs = read_rpmdb(&root.join("var/lib/rpm/rpmdb.sqlite"));
        assert_eq!(blobs.len(), 2);
        let mut got: Vec<RpmHeader> = blobs
            .iter()
            .map(|(hnum, blob)| {
                assert!(
                    !blob.starts_with(&HEADER_MAGIC[..3]),
                    "rpmdb blobs have no magic"
                );
                parse_header_blob(blob).unwrap_or_else(|e| panic!("hnum {hnum}: {e}"))
            })
            .collect();
        got.sort_by(|a, b| a.name.cmp(&b.name));
        let mut want = expected();
        want.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        assert_eq!(got.len(), want.len());
        for (g, (w, files)) in got.iter().zip(&want) {
            assert_eq!(view(g), *w);
            assert_eq!(&g.files, files, "{}", g.name);
        }
        // Spot checks, so a wrong expected.txt cannot hide a wrong parse.
        let demo = &got[0];
        assert_eq!(demo.name, "demo");
        assert_eq!(demo.evr(), "1.2.3-4.fc40");
        assert!(demo.files.iter().any(|f| f == b"/usr/lib64/libdemo.so.1"));
        let data = &got[1];
        assert_eq!((data.name.as_str(), data.epoch), ("demo-data", Some(2)));
        assert_eq!(data.evr(), "2:0.9-1.fc40");
        assert_eq!(data.arch.as_deref(), Some("noarch"));
        assert!(
            data.files
                .iter()
                .any(|f| f == b"/usr/share/demo/read me.txt")
        );
        // Every file the database lists exists in the committed root, so
        // resolver tests can use the same tree.
        for h in &got {
            for f in &h.files {
                let rel = std::str::from_utf8(&f[1..]).unwrap();
                let p = root.join(rel);
                assert!(p.symlink_metadata().is_ok(), "{}", p.display());
            }
        }
    }

    /// The main header of an `.rpm` file: after the 96-byte lead and the
    /// signature header, which is padded to a multiple of 8 bytes.
    fn rpm_file_main_header(rpm: &[u8]) -> &[u8] {
        assert_eq!(&rpm[..4], &[0xed, 0xab, 0xee, 0xdb], "rpm lead magic");
        let sig = &rpm[96..];
        assert_eq!(&sig[..8], &HEADER_MAGIC);
        let il = be_u32(sig, 8).unwrap() as usize;
        let dl = be_u32(sig, 12).unwrap() as usize;
        let len = 16 + il * 16 + dl;
        &sig[len.next_multiple_of(8)..]
    }

    #[test]
    fn real_rpm_files_with_magic_match_the_database() {
        // Test-only I/O.
        let dir = testdata().join("packages");
        let db = read_rpmdb(&testdata().join("root/var/lib/rpm/rpmdb.sqlite"));
        let installed: Vec<RpmHeader> = db
            .iter()
            .map(|(_, b)| parse_header_blob(b).unwrap())
            .collect();
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("testdata/rpm/packages") {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rpm") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let header = rpm_file_main_header(&bytes);
            assert!(header.starts_with(&HEADER_MAGIC));
            // The payload follows the header and is ignored.
            let from_file = parse_header_blob(header).unwrap();
            let db_copy = installed
                .iter()
                .find(|h| h.name == from_file.name)
                .expect("installed");
            assert_eq!(&from_file, db_copy, "{}", path.display());
            // Without the magic the same bytes parse the same way.
            assert_eq!(parse_header_blob(&header[8..]).unwrap(), from_file);
            seen += 1;
        }
        assert_eq!(seen, 2);
    }

    #[test]
    fn synthetic_header() {
        let h = parse_header_blob(&sample_blob()).unwrap();
        assert_eq!(h.name, "bash");
        assert_eq!(h.evr(), "7:5.2.26-1.fc40");
        assert_eq!(h.arch.as_deref(), Some("x86_64"));
        assert_eq!(h.vendor, None);
        assert_eq!(
            h.files,
            vec![
                b"/usr/bin/bash".to_vec(),
                b"/usr/bin/sh".to_vec(),
                b"/usr/share/man/man1/bash.1.gz".to_vec()
            ]
        );
        // With the magic in front.
        let mut magic = HEADER_MAGIC.to_vec();
        magic.extend(sample_blob());
        assert_eq!(parse_header_blob(&magic).unwrap(), h);
        // A wrong header version after the magic prefix is rejected.
        magic[3] = 2;
        assert!(parse_header_blob(&magic).is_err());
    }

    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }

    fn nvr() -> Vec<(u32, u32, u32, Vec<u8>)> {
        vec![
            (TAG_NAME, TYPE_STRING, 1, s("gpg-pubkey")),
            (TAG_VERSION, TYPE_STRING, 1, s("8d8a1b9d")),
            (TAG_RELEASE, TYPE_STRING, 1, s("5e2a3e0b")),
        ]
    }

    #[test]
    fn gpg_pubkey_and_optional_fields() {
        // gpg-pubkey headers: no arch, no sourcerpm, no files.
        let h = parse_header_blob(&build_blob(&nvr())).unwrap();
        assert_eq!(h.evr(), "8d8a1b9d-5e2a3e0b");
        assert_eq!((h.arch, h.source_rpm, h.epoch), (None, None, None));
        assert!(h.files.is_empty());
        // I18N strings take the first element; bad optional values are None.
        let mut e = nvr();
        e.push((TAG_VENDOR, TYPE_I18NSTRING, 2, b"Acme\0Akme\0".to_vec()));
        e.push((TAG_DISTRIBUTION, TYPE_STRING, 1, b"Bad\xff\0".to_vec()));
        e.push((TAG_ARCH, TYPE_STRING, 1, s("x 86")));
        e.push((TAG_SOURCERPM, TYPE_INT32, 1, vec![0; 4]));
        let h = parse_header_blob(&build_blob(&e)).unwrap();
        assert_eq!(h.vendor.as_deref(), Some("Acme"));
        assert_eq!((h.distribution, h.arch, h.source_rpm), (None, None, None));
    }

    #[test]
    fn last_entry_wins_and_old_filenames() {
        // A dribble entry after the region replaces the earlier value.
        let mut e = nvr();
        e.push((TAG_RELEASE, TYPE_STRING, 1, s("6")));
        e.push((
            TAG_OLDFILENAMES,
            TYPE_STRING_ARRAY,
            3,
            b"/etc/x\0relative\0/usr/y\0".to_vec(),
        ));
        let h = parse_header_blob(&build_blob(&e)).unwrap();
        assert_eq!(h.release, "6");
        assert_eq!(h.files, vec![b"/etc/x".to_vec(), b"/usr/y".to_vec()]);
        // BASENAMES wins over OLDFILENAMES when both are present.
        e.extend([
            (TAG_DIRINDEXES, TYPE_INT32, 1, vec![0; 4]),
            (TAG_BASENAMES, TYPE_STRING_ARRAY, 1, s("z")),
            (TAG_DIRNAMES, TYPE_STRING_ARRAY, 1, s("/opt/")),
        ]);
        let h = parse_header_blob(&build_blob(&e)).unwrap();
        assert_eq!(h.files, vec![b"/opt/z".to_vec()]);
    }

    #[test]
    fn rejects_broken_headers() {
        let bad = |entries: Vec<(u32, u32, u32, Vec<u8>)>| {
            parse_header_blob(&build_blob(&entries)).is_err()
        };
        // Missing or invalid required fields.
        assert!(bad(nvr()[..2].to_vec()));
        let mut e = nvr();
        e[0] = (TAG_NAME, TYPE_STRING, 1, s("../etc"));
        assert!(bad(e));
        let mut e = nvr();
        e[0] = (TAG_NAME, TYPE_STRING, 1, s(""));
        assert!(bad(e));
        // A string whose NUL is missing runs into the next entry's data
        // (as rpm would read it too); at the end of the data it fails.
        let mut e = nvr();
        e.swap(1, 2);
        e[2] = (TAG_VERSION, TYPE_STRING, 1, b"1.0".to_vec());
        assert!(bad(e));
        let mut e = nvr();
        e[1] = (TAG_VERSION, TYPE_INT32, 1, vec![0; 4]);
        assert!(bad(e));
        // An EPOCH that is not one INT32.
        for epoch in [
            (TAG_EPOCH, TYPE_STRING, 1, s("1")),
            (TAG_EPOCH, TYPE_INT32, 2, vec![0; 8]),
            (TAG_EPOCH, TYPE_INT32, 0, vec![]),
            (TAG_EPOCH, TYPE_INT32, 1, vec![0; 3]),
        ] {
            let mut e = nvr();
            e.push(epoch);
            assert!(bad(e));
        }
        let mut e = nvr();
        e.push((TAG_EPOCH, TYPE_INT32, 1, u32::MAX.to_be_bytes().to_vec()));
        assert_eq!(
            parse_header_blob(&build_blob(&e)).unwrap().epoch,
            Some(u32::MAX)
        );
        // Inconsistent file lists.
        let files = |idx: Vec<u32>, n_base: u32, base: &[u8], n_dir: u32, dir: &[u8]| {
            let mut e = nvr();
            e.extend([
                (
                    TAG_DIRINDEXES,
                    TYPE_INT32,
                    idx.len() as u32,
                    idx.iter().flat_map(|v| v.to_be_bytes()).collect(),
                ),
                (TAG_BASENAMES, TYPE_STRING_ARRAY, n_base, base.to_vec()),
                (TAG_DIRNAMES, TYPE_STRING_ARRAY, n_dir, dir.to_vec()),
            ]);
            e
        };
        assert!(!bad(files(vec![0], 1, b"a\0", 1, b"/\0")));
        assert!(bad(files(vec![1], 1, b"a\0", 1, b"/\0")));
        assert!(bad(files(vec![0, 0], 1, b"a\0", 1, b"/\0")));
        assert!(bad(files(vec![0], 2, b"a\0", 1, b"/\0")));
        assert!(bad(files(vec![0], 1, b"a\0", 1, b"/"))); // unterminated
        assert!(bad(files(vec![0], 1, b"a\0", u32::MAX, b"/\0")));
        let mut e = files(vec![0], 1, b"a\0", 1, b"/\0");
        e.remove(3); // no DIRINDEXES
        assert!(bad(e));
        let mut e = files(vec![0], 1, b"a\0", 1, b"/\0");
        e.pop(); // no DIRNAMES
        assert!(bad(e));
    }

    #[test]
    fn rejects_bad_layout() {
        let good = sample_blob();
        assert!(parse_header_blob(&good).is_ok());
        assert!(parse_header_blob(b"").is_err());
        assert!(parse_header_blob(&[0, 0, 0]).is_err());
        assert!(parse_header_blob(&HEADER_MAGIC).is_err());
        // il = 0, il too large, dl too large.
        for (il, dl) in [(0u32, 0u32), (0x10000, 0), (1, MAX_DATA_LEN as u32 + 1)] {
            let mut b = il.to_be_bytes().to_vec();
            b.extend(dl.to_be_bytes());
            b.extend(vec![0; 64]);
            assert!(parse_header_blob(&b).is_err(), "{il} {dl}");
        }
        // Every truncation fails cleanly.
        for n in 0..good.len() {
            assert!(parse_header_blob(&good[..n]).is_err(), "{n}");
        }
        // Trailing bytes (an .rpm payload) are ignored.
        let mut longer = good.clone();
        longer.extend_from_slice(b"payload");
        assert!(parse_header_blob(&longer).is_ok());
        // Offsets pointing outside the data, or negative, are rejected.
        for offset in [u32::MAX, 0x8000_0000, 10_000] {
            let mut b = good.clone();
            // Entry 0 (NAME): its offset field is bytes 16..20.
            b[16..20].copy_from_slice(&offset.to_be_bytes());
            assert!(parse_header_blob(&b).is_err(), "{offset}");
        }
    }

    use crate::parse::fuzz::Rng;
    fn mutate(rng: &mut Rng, fixture: &[u8]) -> Vec<u8> {
        crate::parse::fuzz::mutate(rng, fixture, ALPHABET)
    }

    /// Bytes that matter to a header: small integers, NULs, slashes.
    const ALPHABET: &[u8] = b"\0\0\0\x01\x02\x03\x04\x06\x08\x09\x10/ab.-";

    fn check_bounded(input: &[u8]) {
        if let Ok(h) = parse_header_blob(input) {
            assert!(!h.name.is_empty());
            assert!(h.files.len() <= MAX_FILES);
            let bytes: usize = h.files.iter().map(Vec::len).sum();
            assert!(bytes <= MAX_FILE_LIST_BYTES);
            assert!(h.files.iter().all(|f| f.starts_with(b"/")));
        }
    }

    #[test]
    fn fuzz_no_panics() {
        let mut fixtures = vec![sample_blob(), build_blob(&nvr())];
        let db = testdata().join("root/var/lib/rpm/rpmdb.sqlite");
        if db.exists() {
            fixtures.extend(read_rpmdb(&db).into_iter().map(|(_, b)| b));
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..4000 {
            let input = if i % 4 == 0 {
                // A plausible intro followed by noise.
                let il = rng.below(40) as u32;
                let dl = rng.below(400) as u32;
                let mut b = il.to_be_bytes().to_vec();
                b.extend(dl.to_be_bytes());
                let len = rng.below(1200);
                b.extend((0..len).map(|_| {
                    if rng.below(3) == 0 {
                        rng.next() as u8
                    } else {
                        ALPHABET[rng.below(ALPHABET.len())]
                    }
                }));
                b
            } else {
                let f = &fixtures[rng.below(fixtures.len())];
                mutate(&mut rng, f)
            };
            check_bounded(&input);
            // Targeted mutation of one index field of a real header: the
            // fields that drive allocation and indexing.
            let f = &fixtures[rng.below(fixtures.len())];
            let il = be_u32(f, 0).unwrap() as usize;
            let mut b = f.clone();
            let at = 8 + rng.below(il) * 16 + 4 * (1 + rng.below(3));
            let value = match rng.below(4) {
                0 => u32::MAX - rng.below(4) as u32,
                1 => rng.below(64) as u32,
                2 => 0x8000_0000,
                _ => rng.next() as u32,
            };
            b[at..at + 4].copy_from_slice(&value.to_be_bytes());
            check_bounded(&b);
        }
    }

    #[test]
    fn hostile_sizes() {
        let start = std::time::Instant::now();
        // 32 MiB of junk, with and without a plausible intro.
        let junk = vec![0xa5u8; 32 << 20];
        assert!(parse_header_blob(&junk).is_err());
        let mut b = 100u32.to_be_bytes().to_vec();
        b.extend(((32u32 << 20) - 8 - 1600).to_be_bytes());
        b.extend(vec![0u8; (32 << 20) - 8]);
        assert!(parse_header_blob(&b).is_err());

        // An expansion bomb: one 60 KiB directory name reused by 2000
        // files would be 120 MiB of paths; the cap stops it.
        let long_dir = format!("/{}/", "d".repeat(60 << 10));
        let n = 2000u32;
        let mut e = nvr();
        e.extend([
            (TAG_DIRINDEXES, TYPE_INT32, n, vec![0; 4 * n as usize]),
            (
                TAG_BASENAMES,
                TYPE_STRING_ARRAY,
                n,
                [b'f', 0].repeat(n as usize),
            ),
            (TAG_DIRNAMES, TYPE_STRING_ARRAY, 1, s(&long_dir)),
        ]);
        let err = parse_header_blob(&build_blob(&e)).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        // Half as many files fit under the cap.
        let n = 1000u32;
        e.truncate(3);
        e.extend([
            (TAG_DIRINDEXES, TYPE_INT32, n, vec![0; 4 * n as usize]),
            (
                TAG_BASENAMES,
                TYPE_STRING_ARRAY,
                n,
                [b'f', 0].repeat(n as usize),
            ),
            (TAG_DIRNAMES, TYPE_STRING_ARRAY, 1, s(&long_dir)),
        ]);
        assert_eq!(
            parse_header_blob(&build_blob(&e)).unwrap().files.len(),
            1000
        );

        // A million-file header (the cap) with 4 MiB of data parses; one
        // more file does not.
        let n = MAX_FILES as u32;
        let mut e = nvr();
        e.extend([
            (TAG_DIRINDEXES, TYPE_INT32, n, vec![0; 4 * n as usize]),
            (
                TAG_BASENAMES,
                TYPE_STRING_ARRAY,
                n,
                [b'f', 0].repeat(n as usize),
            ),
            (TAG_DIRNAMES, TYPE_STRING_ARRAY, 1, s("/")),
        ]);
        assert_eq!(
            parse_header_blob(&build_blob(&e)).unwrap().files.len(),
            MAX_FILES
        );
        e[3].2 += 1;
        e[4].2 += 1;
        e[3].3.extend([0; 4]);
        e[4].3.extend([b'f', 0]);
        assert!(parse_header_blob(&build_blob(&e)).is_err());

        // 65535 index entries, all pointing at the same huge unterminated
        // string: each wanted tag is decoded once, so this stays linear.
        let mut b = 0xffffu32.to_be_bytes().to_vec();
        let dl = 8u32 << 20;
        b.extend(dl.to_be_bytes());
        for i in 0..0xffffu32 {
            let tag = WANTED_TAGS[i as usize % WANTED_TAGS.len()];
            for v in [tag, TYPE_STRING, 0, 1] {
                b.extend(v.to_be_bytes());
            }
        }
        b.extend(vec![b'x'; dl as usize]);
        assert!(parse_header_blob(&b).is_err());
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    }
}
