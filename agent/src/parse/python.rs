//! Parsers for the metadata of installed Python distributions, so the agent
//! can tell which PyPI packages a process imports.
//!
//! An installed distribution leaves a metadata directory beside the code it
//! installed, in a `site-packages` (or Debian's `dist-packages`) directory:
//!
//! * `<name>-<version>.dist-info/` (PEP 376/627, written by pip and every
//!   wheel installer) holds `METADATA`, `RECORD` and often `top_level.txt`.
//!   Its name uses the wheel file-name escaping: `-` in the project name
//!   becomes `_`, and the case is whatever the build tool wrote
//!   (`PyYAML-6.0.dist-info` from Debian, `pyyaml-6.0.3.dist-info` from a
//!   recent pip), so the directory name is a hint and `METADATA` is the
//!   authority.
//! * `<name>-<version>[-pyX.Y[-platform]].egg-info/` (setuptools) holds
//!   `PKG-INFO` (the same format as `METADATA`), `top_level.txt` and, when
//!   pip installed it, `installed-files.txt`. Debian also ships egg-info
//!   directories without a version (`cryptography.egg-info`) next to a
//!   dist-info directory for the same distribution, so a caller must expect
//!   the same distribution twice.
//! * `<name>-<version>-pyX.Y.egg-info` as a plain **file**: old distutils
//!   (`setup.py install` without setuptools, and CPython 2.7's own
//!   `wsgiref.egg-info`) writes the `PKG-INFO` contents directly into a file
//!   with the directory's name. [`parse_dist_dir_name`] accepts the name
//!   either way and [`parse_metadata`] parses the contents either way; only
//!   the caller knows whether it is looking at a file or a directory.
//!
//! Zipped or unzipped `.egg` installs (`easy_install`) and `.egg-link`
//! development installs are not covered here.
//!
//! `METADATA` and `PKG-INFO` are RFC 822 style headers followed by a body
//! (the long description). Only the headers are read: the first blank line
//! ends them, and so does a line that cannot be a header, exactly as Python's
//! `email` parser (which `importlib.metadata` uses) decides. `RECORD` is CSV
//! as Python's `csv` module writes it: paths that contain a comma, a quote or
//! a newline are double-quoted with quotes doubled inside.
//!
//! Everything returned here is untrusted: paths from `RECORD` and
//! `installed-files.txt` are relative to the site-packages directory (or to
//! the egg-info directory) and routinely contain `..` (console scripts in
//! `../../../bin/`), and a hostile image can put absolute paths or `..`
//! chains anywhere. The caller must resolve them inside the root it scans.

use std::collections::HashSet;

/// The longest distribution name, version, or importable top-level name
/// accepted, in bytes. Real names are far shorter; this only stops a hostile
/// file from making every report huge.
pub const MAX_NAME_LEN: usize = 256;

/// The longest path accepted from `RECORD` or `installed-files.txt`, in
/// bytes: Linux's `PATH_MAX`.
pub const MAX_PATH_LEN: usize = 4096;

/// The most paths returned from one `RECORD` or `installed-files.txt`. The
/// largest real `RECORD` on the development machine (cfn-lint) has 8,754
/// lines.
pub const MAX_FILE_ENTRIES: usize = 100_000;

/// The most names returned from one `top_level.txt`.
pub const MAX_TOP_LEVEL_NAMES: usize = 1024;

/// The longest `pyvenv.cfg` value kept (`home`, `version`), in bytes.
pub const MAX_CFG_VALUE_LEN: usize = 4096;

/// The name and version of a distribution, from `METADATA` or `PKG-INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistMetadata {
    /// The `Name:` header exactly as written, e.g. `PyYAML` or
    /// `dbus-python`; see [`normalize_name`] to compare names.
    pub name: String,
    /// The `Version:` header exactly as written, e.g. `38.0.4`.
    pub version: String,
}

/// Parses the headers of a `*.dist-info/METADATA` or `*.egg-info/PKG-INFO`
/// file (or of an egg-info *file*), returning its `Name` and `Version`.
///
/// Header names are case-insensitive and the first occurrence wins, as with
/// Python's `email.message.Message`. Values are trimmed. Continuation lines
/// (starting with a space or tab) are skipped: neither field is ever folded
/// in practice. CRLF line ends and a leading UTF-8 byte order mark are
/// tolerated. The headers end at the first empty line or at the first line
/// that is neither a continuation nor `Field-Name:` with a field name of
/// printable ASCII without spaces; nothing after that is read, so a
/// `Version:` line inside the description cannot be mistaken for a header.
///
/// Returns `None` when `Name` or `Version` is missing or empty, is not UTF-8,
/// contains a control character, or is longer than [`MAX_NAME_LEN`].
pub fn parse_metadata(bytes: &[u8]) -> Option<DistMetadata> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut name: Option<&[u8]> = None;
    let mut version: Option<&[u8]> = None;
    for line in super::lines(bytes) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            continue;
        }
        // Python's email.feedparser headerRE: `[\041-\071\073-\176]*:`.
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        let field = &line[..colon];
        if !field.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
            break;
        }
        let value = line[colon + 1..].trim_ascii();
        if field.eq_ignore_ascii_case(b"Name") {
            name.get_or_insert(value);
        } else if field.eq_ignore_ascii_case(b"Version") {
            version.get_or_insert(value);
        }
    }
    Some(DistMetadata {
        name: header_text(name?)?,
        version: header_text(version?)?,
    })
}

/// A header value as a string, if it is usable as a name or version.
fn header_text(value: &[u8]) -> Option<String> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    if text.chars().any(char::is_control) {
        return None;
    }
    Some(text.to_owned())
}

/// Parses a `*.dist-info/RECORD` file and returns the path of every row, in
/// order, together with the number of malformed rows skipped.
///
/// Rows are CSV as Python's `csv` module writes them: `path,hash,size`,
/// where a field holding a comma, a quote or a newline is enclosed in double
/// quotes and quotes inside are doubled. Rows end with `\n` or `\r\n`
/// (a quoted field may span lines). Empty lines are skipped silently. A row
/// is malformed, and counted, when it has more than three fields (an
/// unquoted path with a comma), an empty path, an unterminated quote, text
/// after a closing quote, a path that is not UTF-8, holds a NUL, or is longer
/// than [`MAX_PATH_LEN`], or when [`MAX_FILE_ENTRIES`] paths were already
/// returned.
///
/// Paths are returned exactly as written, relative to the site-packages
/// directory; see the module docs on `..` and absolute paths.
pub fn parse_record(bytes: &[u8]) -> (Vec<String>, u32) {
    let mut paths = Vec::new();
    let mut malformed: u32 = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        let keep = paths.len() < MAX_FILE_ENTRIES;
        let row = csv_row(bytes, &mut pos, keep);
        if row.blank {
            continue;
        }
        let path = row
            .first
            .filter(|_| !row.bad && row.fields <= 3 && keep)
            .and_then(|p| String::from_utf8(p).ok())
            .filter(|p| valid_path(p));
        match path {
            Some(p) => paths.push(p),
            None => malformed = malformed.saturating_add(1),
        }
    }
    (paths, malformed)
}

/// One CSV row: its first field (when asked for and not too long), the
/// number of fields, and whether the quoting was broken.
struct CsvRow {
    first: Option<Vec<u8>>,
    fields: usize,
    bad: bool,
    blank: bool,
}

/// Reads the CSV row starting at `*pos` and advances `*pos` past its line
/// end. Each byte is looked at a constant number of times, and at most
/// [`MAX_PATH_LEN`] + 1 bytes of the first field are copied.
fn csv_row(bytes: &[u8], pos: &mut usize, keep_first: bool) -> CsvRow {
    let start = *pos;
    let mut row = CsvRow {
        first: None,
        fields: 0,
        bad: false,
        blank: false,
    };
    loop {
        row.fields += 1;
        let want = keep_first && row.fields == 1;
        let mut value = Vec::new();
        if bytes.get(*pos) == Some(&b'"') {
            *pos += 1;
            // Quoted field: runs to the next quote that is not doubled.
            loop {
                let rest = bytes.get(*pos..).unwrap_or_default();
                let Some(q) = rest.iter().position(|&b| b == b'"') else {
                    // Unterminated: the rest of the file was swallowed.
                    *pos = bytes.len();
                    row.bad = true;
                    return row;
                };
                if want {
                    push_capped(&mut value, &rest[..q]);
                }
                *pos += q + 1;
                if bytes.get(*pos) == Some(&b'"') {
                    if want {
                        push_capped(&mut value, b"\"");
                    }
                    *pos += 1;
                } else {
                    break;
                }
            }
        } else {
            let rest = bytes.get(*pos..).unwrap_or_default();
            let end = rest
                .iter()
                .position(|&b| b == b',' || b == b'\n')
                .unwrap_or(rest.len());
            let mut field = &rest[..end];
            if rest.get(end) != Some(&b',') {
                field = field.strip_suffix(b"\r").unwrap_or(field);
            }
            if want {
                push_capped(&mut value, field);
            }
            *pos += end;
        }
        if want {
            row.first = Some(value);
        }
        match bytes.get(*pos) {
            Some(b',') => *pos += 1,
            Some(b'\n') => {
                *pos += 1;
                break;
            }
            None => break,
            Some(b'\r') if bytes.get(*pos + 1) == Some(&b'\n') => {
                *pos += 2;
                break;
            }
            Some(_) => {
                // Text after a closing quote: resynchronise at the next line.
                row.bad = true;
                let rest = bytes.get(*pos..).unwrap_or_default();
                *pos += rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |n| n + 1);
                break;
            }
        }
    }
    let line = &bytes[start..*pos];
    row.blank = row.fields == 1 && matches!(line, b"\n" | b"\r\n" | b"\r" | b"");
    row
}

/// Appends to a field buffer, stopping one byte past [`MAX_PATH_LEN`] so an
/// over-long field is still recognised as such without being copied whole.
fn push_capped(value: &mut Vec<u8>, more: &[u8]) {
    let room = (MAX_PATH_LEN + 1).saturating_sub(value.len());
    value.extend_from_slice(&more[..more.len().min(room)]);
}

/// A path from a file list: non-empty, not too long, no NUL.
fn valid_path(path: &str) -> bool {
    !path.is_empty() && path.len() <= MAX_PATH_LEN && !path.contains('\0')
}

/// Parses an egg-info `installed-files.txt`, which pip writes with one path
/// per line, relative to the egg-info directory (`../six.py`,
/// `../__pycache__/six.cpython-311.pyc`, `PKG-INFO`).
///
/// A trailing `\r` is removed (Python reads the file in universal-newline
/// mode). Empty lines, lines that are not UTF-8, hold a NUL or are longer
/// than [`MAX_PATH_LEN`] are skipped; at most [`MAX_FILE_ENTRIES`] paths are
/// returned.
pub fn parse_installed_files(bytes: &[u8]) -> Vec<String> {
    super::lines(bytes)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty() && l.len() <= MAX_PATH_LEN)
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| valid_path(l))
        .take(MAX_FILE_ENTRIES)
        .map(str::to_owned)
        .collect()
}

/// Parses a `top_level.txt` (setuptools writes it into both egg-info and
/// dist-info directories): the importable top-level names of the
/// distribution, one per line, e.g. `cryptography` and `_cffi_backend`.
///
/// Lines are trimmed and empty lines skipped. A name is kept only when it
/// could be a file name in site-packages: UTF-8, at most [`MAX_NAME_LEN`]
/// bytes, no `/`, `\`, control characters, and not `.` or `..`. Duplicates are
/// dropped and at most [`MAX_TOP_LEVEL_NAMES`] names are returned, in file
/// order.
pub fn parse_top_level(bytes: &[u8]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in super::lines(bytes) {
        if out.len() >= MAX_TOP_LEVEL_NAMES {
            break;
        }
        let line = line.trim_ascii();
        if line.is_empty() || line.len() > MAX_NAME_LEN {
            continue;
        }
        let Ok(name) = std::str::from_utf8(line) else {
            continue;
        };
        let bad = name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control());
        if !bad && seen.insert(name) {
            out.push(name.to_owned());
        }
    }
    out
}

/// The settings of a virtual environment's `pyvenv.cfg` that decide where
/// its packages come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PyvenvCfg {
    /// `home`: the directory of the base interpreter the venv was made from.
    pub home: Option<String>,
    /// `include-system-site-packages = true`: the base interpreter's
    /// site-packages are visible too.
    pub include_system_site_packages: bool,
    /// `version` (the `venv` module, uv) or else `version_info`
    /// (virtualenv), e.g. `3.11.7` or `3.11.7.final.0`.
    pub version: Option<String>,
}

/// Parses a `pyvenv.cfg`: `key = value` lines, read the way CPython's
/// `site.py` and `getpath` read them.
///
/// Each line is split at its first `=`; the key is trimmed and compared
/// case-insensitively, the value is trimmed. Lines without `=` are ignored
/// and later lines override earlier ones. Only the exact spelling
/// `include-system-site-packages` counts, and only the value `true` (any
/// case) enables it, because that is all `site.py` accepts. Values that are
/// empty, not UTF-8, contain a control character or are longer than
/// [`MAX_CFG_VALUE_LEN`] are ignored.
pub fn parse_pyvenv_cfg(bytes: &[u8]) -> PyvenvCfg {
    let mut cfg = PyvenvCfg::default();
    let mut version = None;
    let mut version_info = None;
    for line in super::lines(bytes) {
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            continue;
        };
        let key = line[..eq].trim_ascii();
        let raw = line[eq + 1..].trim_ascii();
        let value = || {
            std::str::from_utf8(raw)
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= MAX_CFG_VALUE_LEN)
                .filter(|v| !v.chars().any(char::is_control))
                .map(str::to_owned)
        };
        if key.eq_ignore_ascii_case(b"home") {
            cfg.home = value();
        } else if key.eq_ignore_ascii_case(b"include-system-site-packages") {
            cfg.include_system_site_packages = raw.eq_ignore_ascii_case(b"true");
        } else if key.eq_ignore_ascii_case(b"version") {
            version = value();
        } else if key.eq_ignore_ascii_case(b"version_info") {
            version_info = value();
        }
    }
    cfg.version = version.or(version_info);
    cfg
}

/// Normalizes a distribution name as PEP 503 does: lower case, with every
/// run of `-`, `_` and `.` replaced by a single `-`. `PyYAML` becomes
/// `pyyaml`, `dbus_python` and `dbus-python` both become `dbus-python`, and
/// `lazr.restfulclient` becomes `lazr-restfulclient`. This is how PyPI, pip
/// and Package URLs compare names.
pub fn normalize_name(name: &str) -> String {
    patchgap_proto::purl::pep503(name)
}

/// Which kind of metadata directory (or file) a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistKind {
    /// `*.dist-info`: a directory with `METADATA` and `RECORD`.
    DistInfo,
    /// `*.egg-info`: a directory with `PKG-INFO`, or (old distutils) a file
    /// in the `PKG-INFO` format.
    EggInfo,
}

/// What the name of a metadata directory says about its distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistDirName {
    /// The name as written in the directory name (`Foo_Bar`, `PyYAML`,
    /// `dbus_python`): compare it with [`normalize_name`].
    pub name: String,
    /// The version, when the name has one (`cryptography.egg-info` has
    /// none).
    pub version: Option<String>,
    /// Whether it is a dist-info or an egg-info.
    pub kind: DistKind,
}

/// Splits the name of a `*.dist-info` or `*.egg-info` directory (or
/// egg-info file) found in site-packages into name and version.
///
/// The suffix is matched case-insensitively. As in `importlib.metadata`, the
/// name ends at the first `-`: project names are escaped with `_` in these
/// file names, so the first `-` separates name and version. A dist-info
/// version is everything after it (`cryptography-38.0.4.dist-info`); an
/// egg-info version ends at the next `-`, which starts the Python tag and
/// platform (`Foo_Bar-1.0-py3.11.egg-info`, `Python-2.7.18-py2.7.egg-info`).
/// `cryptography.egg-info` has no version. Returns `None` for any other
/// name, an empty name, or a name with `/`, a NUL, or more than
/// [`MAX_NAME_LEN`] bytes in total.
pub fn parse_dist_dir_name(dir_name: &str) -> Option<DistDirName> {
    if dir_name.len() > MAX_NAME_LEN || dir_name.contains(['/', '\0']) {
        return None;
    }
    let (stem, kind) = if let Some(stem) = strip_suffix_ignore_case(dir_name, ".dist-info") {
        (stem, DistKind::DistInfo)
    } else if let Some(stem) = strip_suffix_ignore_case(dir_name, ".egg-info") {
        (stem, DistKind::EggInfo)
    } else {
        return None;
    };
    let (name, rest) = match stem.split_once('-') {
        Some((name, rest)) => (name, Some(rest)),
        None => (stem, None),
    };
    if name.is_empty() || name.chars().any(char::is_control) {
        return None;
    }
    let version = rest
        .map(|r| match kind {
            DistKind::DistInfo => r,
            DistKind::EggInfo => r.split('-').next().unwrap_or(r),
        })
        .filter(|v| !v.is_empty() && !v.chars().any(char::is_control));
    Some(DistDirName {
        name: name.to_owned(),
        version: version.map(str::to_owned),
        kind,
    })
}

/// `s` without `suffix`, compared case-insensitively (suffix is ASCII).
fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let tail = s.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &s[..cut])
}

/// The importable top-level name that a file under site-packages belongs
/// to, given its path relative to site-packages (as in `RECORD`):
///
/// * a file in a package directory belongs to that directory:
///   `cryptography/hazmat/x.py` → `cryptography`;
/// * a module file is its own top level, named by what precedes the first
///   `.`: `six.py` → `six`,
///   `_cffi_backend.cpython-311-x86_64-linux-gnu.so` → `_cffi_backend`;
/// * a byte-compiled module in site-packages' own `__pycache__` belongs to
///   its source module: `__pycache__/six.cpython-311.pyc` → `six`.
///
/// Everything that cannot be imported gives `None`: `*.pth` files,
/// `*.dist-info/` and `*.egg-info/` contents, `README.txt`, auditwheel's
/// `<dist>.libs/` directories, absolute paths and `..` paths. Module files
/// are those ending in `.py`, `.pyc`, `.pyo`, `.pyi`, `.so` or `.pyd`.
/// Names are `[A-Za-z0-9_]` and non-ASCII letters and digits; a leading digit
/// is accepted because mypyc's shared helper modules
/// (`81d243bd2c585b0f4821__mypyc.cpython-311-x86_64-linux-gnu.so`) are
/// listed in `top_level.txt` although only `importlib` can import them.
pub fn top_level_of(rel_path: &str) -> Option<String> {
    let mut path = rel_path;
    while let Some(rest) = path.strip_prefix("./") {
        path = rest;
    }
    let mut parts = path.split('/');
    let first = parts.next()?;
    let name = match parts.next() {
        None => module_of_file(first)?,
        Some(file) if first == "__pycache__" => {
            if parts.next().is_some() {
                return None;
            }
            module_of_file(file)?
        }
        Some(_) => first,
    };
    is_module_name(name).then(|| name.to_owned())
}

/// A loadable file's path from `RECORD` (or `installed-files.txt` without
/// its `../`), relative to the site directory, in the form a file under that
/// directory is looked up by: leading `./` removed, and `None` for what a
/// process cannot load from there (`..` and absolute paths, metadata,
/// data files). Loadable files are modules (see [`is_module_file`]) and the
/// shared libraries wheels vendor (`numpy.libs/libgfortran-….so.5.0.0`).
pub fn record_key(rel_path: &str) -> Option<&str> {
    let mut path = rel_path;
    while let Some(rest) = path.strip_prefix("./") {
        path = rest;
    }
    if path.is_empty()
        || path.starts_with('/')
        || path.split('/').any(|c| c == ".." || c.is_empty())
    {
        return None;
    }
    let name = path.rsplit('/').next()?;
    (is_module_file(name) || is_shared_library(name)).then_some(path)
}

/// Whether a file name is a Python module's: `.py`, `.pyc`, `.pyo` or an
/// extension module (`.so`, `.pyd`), with something before the extension.
pub fn is_module_file(name: &str) -> bool {
    module_of_file(name).is_some_and(|stem| !stem.is_empty())
}

/// Whether a file name is a shared library's: `libx.so` or `libx.so.1.2`.
fn is_shared_library(name: &str) -> bool {
    match name.split_once(".so") {
        Some((stem, rest)) => {
            !stem.is_empty()
                && (rest.is_empty()
                    || rest.strip_prefix('.').is_some_and(|v| {
                        v.split('.')
                            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    }))
        }
        None => false,
    }
}

/// The module name of a module file name, if it is one.
fn module_of_file(file: &str) -> Option<&str> {
    let (stem, _) = file.split_once('.')?;
    let (_, ext) = file.rsplit_once('.')?;
    matches!(ext, "py" | "pyc" | "pyo" | "pyi" | "so" | "pyd").then_some(stem)
}

/// Whether `name` can be a top-level module name (see [`top_level_of`]).
fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '_' || (!c.is_ascii() && c.is_alphanumeric())
        })
}

/// The headers of Debian 12's `cryptography-38.0.4.dist-info/METADATA`
/// (shortened), with its description body.
#[cfg(test)]
pub(crate) const SAMPLE_METADATA: &[u8] = b"\
Metadata-Version: 2.1
Name: cryptography
Version: 38.0.4
Summary: cryptography is a package which provides cryptographic recipes and primitives to Python developers.
Home-page: https://github.com/pyca/cryptography
Author: The Python Cryptographic Authority and individual contributors
License: BSD-3-Clause OR Apache-2.0
Project-URL: Documentation, https://cryptography.io/
Classifier: Development Status :: 5 - Production/Stable
Requires-Python: >=3.6
Description-Content-Type: text/x-rst
Provides-Extra: test
License-File: LICENSE

pyca/cryptography
=================

Name: not-a-header
Version: 0.0
";

/// CPython 2.7.18's `wsgiref.egg-info` (an egg-info *file*, metadata 1.0),
/// with an indented multi-line `Description` added in the style distutils
/// wrote them (see pyenv 2.7.18's `Python-2.7.18-py2.7.egg-info`).
#[cfg(test)]
pub(crate) const SAMPLE_PKG_INFO: &[u8] = b"\
Metadata-Version: 1.0
Name: wsgiref
Version: 0.1.2
Summary: WSGI (PEP 333) Reference Library
Author: Phillip J. Eby
Author-email: web-sig@python.org
License: PSF or ZPL
Description: This is a standalone release of the ``wsgiref`` library,
        Version: 9.9 is a continuation line, not a header
        
Platform: UNKNOWN
";

/// The start of pyenv 3.11.7's `awscli-1.45.11.dist-info/RECORD`, with a
/// few quoted rows added.
#[cfg(test)]
pub(crate) const SAMPLE_RECORD: &[u8] = b"\
../../../bin/aws,sha256=0qX0SjkOWH_O6TrEs2Qz7QXXUDaaHvCDTZjxvd2rMhk,838
../../../bin/aws.cmd,sha256=s46DkC6LNgX63CIkzxxbPnFMJ6DRDBkvc88GnWa8Pvg,1432
awscli-1.45.11.dist-info/RECORD,,
awscli/__init__.py,sha256=abc,1578
\"awscli/with,comma.py\",sha256=abc,1
\"awscli/with \"\"quotes\"\".py\",,
__pycache__/six.cpython-311.pyc,,
";

/// The `pyvenv.cfg` that `python3 -m venv` (3.11.7) wrote on the
/// development machine.
#[cfg(test)]
pub(crate) const SAMPLE_PYVENV_CFG: &[u8] = b"\
home = /root/.pyenv/versions/3.11.7/bin
include-system-site-packages = false
version = 3.11.7
executable = /root/.pyenv/versions/3.11.7/bin/python3.11
command = /root/.pyenv/versions/3.11.7/bin/python3 -m venv /work/main/target/tmp/py-grpc
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_are_the_loadable_files() {
        assert_eq!(record_key("yaml/__init__.py"), Some("yaml/__init__.py"));
        assert_eq!(
            record_key("./yaml/_yaml.cpython-311-x86_64-linux-gnu.so"),
            Some("yaml/_yaml.cpython-311-x86_64-linux-gnu.so")
        );
        assert_eq!(
            record_key("numpy.libs/libgfortran-040039e1.so.5.0.0"),
            Some("numpy.libs/libgfortran-040039e1.so.5.0.0")
        );
        assert_eq!(
            record_key("__pycache__/six.cpython-311.pyc"),
            Some("__pycache__/six.cpython-311.pyc")
        );
        for no in [
            "../../../bin/aws",
            "/etc/passwd",
            "a/../b.py",
            "a//b.py",
            "PyYAML-6.0.1.dist-info/RECORD",
            "yaml/README.txt",
            ".py",
            "x.so.1a",
            "",
        ] {
            assert_eq!(record_key(no), None, "{no}");
        }
        assert!(is_module_file("_speedups.cpython-311-x86_64-linux-gnu.so"));
        assert!(is_module_file("six.py"));
        assert!(!is_module_file("libc.so.6"));
        assert!(!is_module_file("METADATA"));
    }
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    fn meta(name: &str, version: &str) -> Option<DistMetadata> {
        Some(DistMetadata {
            name: name.into(),
            version: version.into(),
        })
    }

    fn dir(name: &str, version: Option<&str>, kind: DistKind) -> Option<DistDirName> {
        Some(DistDirName {
            name: name.into(),
            version: version.map(Into::into),
            kind,
        })
    }

    // ---- Real data -------------------------------------------------------

    /// The inventory files vendored from shared/data (testdata/README.md).
    fn inventory_dir() -> Option<PathBuf> {
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/inventory"))
    }

    /// Reads an inventory JSON list of `{name, version[, path]}` objects.
    fn inventory(file: &str) -> Option<Vec<(String, String, Option<String>)>> {
        let bytes = std::fs::read(inventory_dir()?.join(file)).ok()?;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&bytes).expect(file);
        Some(
            list.iter()
                .map(|d| {
                    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                    (s("name").unwrap(), s("version").unwrap(), s("path"))
                })
                .collect(),
        )
    }

    /// Test-only I/O: every distribution in `site` as (name, version, path),
    /// found the way the agent will find them: the directory name first,
    /// then the metadata file it implies. Also checks that the directory
    /// name agrees with the metadata (normalized name, and version where the
    /// name has one).
    fn scan_site(site: &Path) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(site).unwrap() {
            let entry = entry.unwrap();
            let file_name = entry.file_name().into_string().unwrap();
            let Some(d) = parse_dist_dir_name(&file_name) else {
                continue;
            };
            let path = entry.path();
            let meta_file = match (path.is_dir(), d.kind) {
                (true, DistKind::DistInfo) => path.join("METADATA"),
                (true, DistKind::EggInfo) => path.join("PKG-INFO"),
                (false, DistKind::EggInfo) => path.clone(),
                (false, DistKind::DistInfo) => panic!("dist-info file {path:?}"),
            };
            let m = parse_metadata(&std::fs::read(&meta_file).unwrap())
                .unwrap_or_else(|| panic!("no metadata in {meta_file:?}"));
            assert_eq!(normalize_name(&d.name), normalize_name(&m.name), "{path:?}");
            if let Some(v) = &d.version {
                assert_eq!(v, &m.version, "{path:?}");
            }
            out.push((m.name, m.version, path.to_str().unwrap().to_owned()));
        }
        out.sort();
        out
    }

    /// Compares a site directory with the inventory taken from it
    /// (`dist_*.json`, which importlib.metadata produced) and with what
    /// `pip list` printed (`pip_*.json`).
    fn check_site(site: &str, dist_json: &str, pip_json: &str) {
        let (Some(want), Some(pip)) = (inventory(dist_json), inventory(pip_json)) else {
            eprintln!("no inventory {dist_json} here; skipping");
            return;
        };
        if !crate::parse::image::has(site) {
            return;
        }
        compare_site(Path::new(site), want, pip, dist_json, pip_json);
    }

    /// Test-only I/O: a site directory's distributions as importlib.metadata
    /// and `pip list --path` report them now, run with `python`.
    #[allow(clippy::type_complexity)]
    fn live_inventory(
        python: &str,
        site: &str,
    ) -> (
        Vec<(String, String, Option<String>)>,
        Vec<(String, String, Option<String>)>,
    ) {
        let run = |args: &[&str]| -> Vec<(String, String, Option<String>)> {
            let out = std::process::Command::new(python)
                .args(args)
                .output()
                .expect("run python");
            assert!(
                out.status.success(),
                "{python} {args:?} (tests/deps.sh installs pip): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
            list.iter()
                .map(|d| {
                    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                    (s("name").unwrap(), s("version").unwrap(), s("path"))
                })
                .collect()
        };
        let dist = run(&[
            "-c",
            "import importlib.metadata as m, json, sys\n\
             print(json.dumps([{'name': d.metadata['Name'], 'version': d.version, \
             'path': str(d._path)} for d in m.distributions(path=[sys.argv[1]])]))",
            site,
        ]);
        let pip = run(&[
            "-m",
            "pip",
            "list",
            "--path",
            site,
            "--format",
            "json",
            "--disable-pip-version-check",
        ]);
        (dist, pip)
    }

    fn compare_site(
        site: &Path,
        want: Vec<(String, String, Option<String>)>,
        pip: Vec<(String, String, Option<String>)>,
        dist_json: &str,
        pip_json: &str,
    ) {
        let got = scan_site(site);
        // Names compare raw: the inventory holds METADATA's Name exactly as
        // written (PyYAML, dbus-python, typing_extensions), and so does
        // parse_metadata.
        let mut got_pairs: Vec<(String, String)> =
            got.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect();
        let mut want_pairs: Vec<(String, String)> = want
            .iter()
            .map(|(n, v, _)| (n.clone(), v.clone()))
            .collect();
        got_pairs.sort();
        want_pairs.sort();
        assert_eq!(
            got_pairs, want_pairs,
            "{site:?} no longer matches {dist_json}"
        );
        // Where the inventory recorded paths, they match too.
        if want.iter().all(|(_, _, p)| p.is_some()) {
            let mut want_triples: Vec<(String, String, String)> = want
                .into_iter()
                .map(|(n, v, p)| (n, v, p.unwrap()))
                .collect();
            want_triples.sort();
            assert_eq!(got, want_triples);
        }
        // pip list shows each distribution once (it keeps the first it finds
        // on sys.path), so compare the de-duplicated set.
        let dedup: BTreeMap<String, (String, String)> = got_pairs
            .into_iter()
            .map(|(n, v)| (normalize_name(&n), (n, v)))
            .collect();
        let mut pip_pairs: Vec<(String, String)> =
            pip.into_iter().map(|(n, v, _)| (n, v)).collect();
        pip_pairs.sort();
        let mut ours: Vec<(String, String)> = dedup.into_values().collect();
        ours.sort();
        assert_eq!(ours, pip_pairs, "{site:?} differs from {pip_json}");
    }

    #[test]
    fn debian_dist_packages_match_the_inventory() {
        // Compared with what importlib.metadata and pip report for it now:
        // what apt installed there changes from machine to machine (the
        // HA script's Patroni, a fresh machine's few). Debian ships
        // cryptography both as cryptography-38.0.4.dist-info and as a
        // versionless cryptography.egg-info: two directories, one
        // distribution.
        let site = "/usr/lib/python3/dist-packages";
        let (dist, pip) = live_inventory("/usr/bin/python3", site);
        compare_site(
            Path::new(site),
            dist,
            pip,
            "importlib.metadata",
            "pip list --path",
        );
    }

    #[test]
    fn pyenv_site_packages_match_the_inventory() {
        check_site(
            "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages",
            "dist_pyenv_3.11.7.json",
            "pip_pyenv_3.11.7.json",
        );
    }

    #[test]
    fn real_egg_info_files() {
        // Test-only I/O. Old distutils wrote egg-info as a single file.
        for (path, name, version) in [
            (
                "/root/.pyenv/versions/2.7.18/lib/python2.7/wsgiref.egg-info",
                "wsgiref",
                "0.1.2",
            ),
            (
                "/root/.pyenv/versions/2.7.18/lib/python2.7/lib-dynload/Python-2.7.18-py2.7.egg-info",
                "Python",
                "2.7.18",
            ),
        ] {
            if !crate::parse::image::has(path) {
                continue;
            }
            let bytes = std::fs::read(path).unwrap();
            assert!(Path::new(path).is_file());
            assert_eq!(parse_metadata(&bytes), meta(name, version), "{path}");
            let file_name = Path::new(path).file_name().unwrap().to_str().unwrap();
            let d = parse_dist_dir_name(file_name).unwrap();
            assert_eq!(d.kind, DistKind::EggInfo);
            assert_eq!(normalize_name(&d.name), normalize_name(name));
        }
    }

    /// Test-only I/O: the RECORD of every dist-info directory in `site`.
    fn records(site: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(site) else {
            return out;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let file_name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if parse_dist_dir_name(&file_name).map(|d| d.kind) == Some(DistKind::DistInfo) {
                let record = path.join("RECORD");
                let bytes = std::fs::read(&record).unwrap();
                out.push((record, bytes));
            }
        }
        out
    }

    #[test]
    fn real_record_paths_exist() {
        // Every path in every RECORD exists relative to site-packages,
        // except `..` paths (console scripts in ../../../bin) and one stale
        // build path that Debian's pybuild left in distro's RECORD.
        const STALE: &[&str] = &["scripts-3.10/distro"];
        let mut checked = 0;
        let mut stale = Vec::new();
        for site in [
            "/usr/lib/python3/dist-packages",
            "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages",
        ] {
            let site = Path::new(site);
            for (record, bytes) in records(site) {
                let (paths, bad) = parse_record(&bytes);
                assert_eq!(bad, 0, "{record:?}");
                // One path per line: no real path is quoted or spans lines.
                assert_eq!(
                    paths.len(),
                    super::super::lines(&bytes).count(),
                    "{record:?}"
                );
                for p in &paths {
                    if p.split('/').any(|c| c == "..") {
                        continue;
                    }
                    if site.join(p).exists() {
                        checked += 1;
                    } else {
                        stale.push(p.clone());
                    }
                }
                // The file lists itself.
                let own = record.strip_prefix(site).unwrap().to_str().unwrap();
                assert!(paths.iter().any(|p| p == own), "{record:?}");
            }
        }
        if checked == 0 {
            eprintln!("no site-packages here; skipping");
            return;
        }
        assert!(
            stale.iter().all(|p| STALE.contains(&p.as_str())),
            "{stale:?}"
        );
        assert!(checked > 500, "{checked}");
    }

    #[test]
    fn real_top_level_names_cover_record_files() {
        // Every importable file a RECORD lists belongs to a name in the same
        // distribution's top_level.txt.
        let site = Path::new("/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages");
        if !crate::parse::image::has(&site.to_string_lossy()) {
            return;
        }
        let entries = std::fs::read_dir(site).unwrap();
        let mut checked = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let file_name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if parse_dist_dir_name(&file_name).map(|d| d.kind) != Some(DistKind::DistInfo) {
                continue;
            }
            let Ok(top) = std::fs::read(path.join("top_level.txt")) else {
                continue;
            };
            let top = parse_top_level(&top);
            let (paths, _) = parse_record(&std::fs::read(path.join("RECORD")).unwrap());
            for p in paths {
                if let Some(t) = top_level_of(&p) {
                    assert!(top.contains(&t), "{file_name}: {p} -> {t} not in {top:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn real_pyvenv_cfg() {
        assert_eq!(
            parse_pyvenv_cfg(SAMPLE_PYVENV_CFG),
            PyvenvCfg {
                home: Some("/root/.pyenv/versions/3.11.7/bin".into()),
                include_system_site_packages: false,
                version: Some("3.11.7".into()),
            }
        );
        // Test-only I/O: let Debian's python3 write fresh ones.
        let python = Path::new("/usr/bin/python3");
        let run = |args: &[&str]| {
            std::process::Command::new(python)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
        };
        let Some(out) = run(&["-c", "import platform; print(platform.python_version())"]) else {
            eprintln!("no {python:?} here; skipping");
            return;
        };
        let version = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        for system in [false, true] {
            let dir = std::env::temp_dir()
                .join(format!("patchgap-pyvenv-{}-{system}", std::process::id()));
            let mut args = vec!["-m", "venv", "--without-pip"];
            if system {
                args.push("--system-site-packages");
            }
            args.push(dir.to_str().unwrap());
            let made = run(&args);
            let cfg = std::fs::read(dir.join("pyvenv.cfg"));
            let _ = std::fs::remove_dir_all(&dir);
            if made.is_none() {
                eprintln!("python3 -m venv failed here; skipping");
                return;
            }
            let cfg = parse_pyvenv_cfg(&cfg.unwrap());
            assert_eq!(cfg.home.as_deref(), Some("/usr/bin"));
            assert_eq!(cfg.include_system_site_packages, system);
            assert_eq!(cfg.version, Some(version.clone()));
        }
    }

    // ---- Samples and edge cases -----------------------------------------

    #[test]
    fn metadata_samples() {
        assert_eq!(
            parse_metadata(SAMPLE_METADATA),
            meta("cryptography", "38.0.4")
        );
        assert_eq!(parse_metadata(SAMPLE_PKG_INFO), meta("wsgiref", "0.1.2"));
    }

    /// One metadata case: the input and the (name, version) expected.
    type MetadataCase<'a> = (&'a [u8], Option<(&'a str, &'a str)>);

    #[test]
    fn metadata_headers() {
        let cases: &[MetadataCase] = &[
            (b"Name: a\nVersion: 1\n", Some(("a", "1"))),
            (b"name: a\nVERSION: 1", Some(("a", "1"))),
            (b"Name: a\r\nVersion: 1\r\n\r\n", Some(("a", "1"))),
            (b"\xef\xbb\xbfName: a\nVersion: 1\n", Some(("a", "1"))),
            (
                b"Version:\t1.0 \nName:   Foo_Bar  \n",
                Some(("Foo_Bar", "1.0")),
            ),
            // The first occurrence wins.
            (
                b"Name: a\nName: b\nVersion: 1\nVersion: 2\n",
                Some(("a", "1")),
            ),
            // Continuations are skipped, even before the first header.
            (b" junk\nName: a\n\tmore\nVersion: 1\n", Some(("a", "1"))),
            // A whitespace-only line is a continuation, not the end.
            (b"Name: a\n   \nVersion: 1\n", Some(("a", "1"))),
            // The body is never read.
            (b"Name: a\n\nVersion: 1\n", None),
            (b"Name: a\r\n\r\nVersion: 1\r\n", None),
            // A line that is not a header ends the headers, as in Python.
            (b"Name: a\nnot a header\nVersion: 1\n", None),
            (b"Name: a\nVer sion: 1\nVersion: 1\n", None),
            (b"Name: a\nVers\xc3\xa9ion: 1\nVersion: 1\n", None),
            (b"Name : a\nVersion: 1\n", None),
            // Missing or unusable values.
            (b"Name: a\n", None),
            (b"Version: 1\n", None),
            (b"Name:\nVersion: 1\n", None),
            (b"Name: a\nVersion:   \n", None),
            (b"Name: \xff\nVersion: 1\n", None),
            (b"Name: a\x01b\nVersion: 1\n", None),
            (b"Name: a\nVersion: 1\x7f\n", None),
            (b"", None),
            (b"\n", None),
            // Values keep inner spaces and colons, and may be non-ASCII.
            (b"Name: a\nVersion: 1:2 beta\n", Some(("a", "1:2 beta"))),
            (b"Name: caf\xc3\xa9\nVersion: 1\n", Some(("caf\u{e9}", "1"))),
        ];
        for &(input, want) in cases {
            let got = parse_metadata(input);
            assert_eq!(
                got,
                want.and_then(|(n, v)| meta(n, v)),
                "{}",
                input.escape_ascii()
            );
        }
        let long = format!("Name: {}\nVersion: 1\n", "a".repeat(MAX_NAME_LEN + 1));
        assert_eq!(parse_metadata(long.as_bytes()), None);
        let max = format!("Name: {}\nVersion: 1\n", "a".repeat(MAX_NAME_LEN));
        assert!(parse_metadata(max.as_bytes()).is_some());
    }

    #[test]
    fn record_sample() {
        let (paths, bad) = parse_record(SAMPLE_RECORD);
        assert_eq!(bad, 0);
        assert_eq!(
            paths,
            vec![
                "../../../bin/aws",
                "../../../bin/aws.cmd",
                "awscli-1.45.11.dist-info/RECORD",
                "awscli/__init__.py",
                "awscli/with,comma.py",
                "awscli/with \"quotes\".py",
                "__pycache__/six.cpython-311.pyc",
            ]
        );
    }

    #[test]
    fn record_csv_edge_cases() {
        let cases: &[(&[u8], &[&str], u32)] = &[
            (b"", &[], 0),
            (b"\n\n\r\n", &[], 0),
            (b"a,,\r\nb,,\r\n", &["a", "b"], 0),
            // No final newline; fewer than three fields is fine.
            (b"a\nb,h", &["a", "b"], 0),
            // A quoted path may contain newlines and CRs.
            (
                b"\"multi\nline\r\",h,1\nnext,,\n",
                &["multi\nline\r", "next"],
                0,
            ),
            (b"\"\",,\n", &[], 1),
            (b",,\n", &[], 1),
            // An unquoted comma makes too many fields.
            (b"a,b,h,1\nc,,\n", &["c"], 1),
            // Text after a closing quote.
            (b"\"a\"b,,\nc,,\n", &["c"], 1),
            // Unterminated quote swallows the rest.
            (b"ok,,\n\"a,,\nb,,\n", &["ok"], 1),
            // A bare quote inside an unquoted field is kept (as Python does).
            (b"a\"b,,\n", &["a\"b"], 0),
            // Bytes that cannot be a path.
            (b"\xff,,\nnul\0,,\n", &[], 2),
            // A lone CR is part of the field, not a line end.
            (b"a\rb,,\n", &["a\rb"], 0),
            // Spaces are significant.
            (b" a ,,\n", &[" a "], 0),
        ];
        for &(input, want, want_bad) in cases {
            let (paths, bad) = parse_record(input);
            assert_eq!(paths, want, "{}", input.escape_ascii());
            assert_eq!(bad, want_bad, "{}", input.escape_ascii());
        }
        // Paths at and over the length cap, quoted and not.
        let at = "p".repeat(MAX_PATH_LEN);
        let over = "p".repeat(MAX_PATH_LEN + 1);
        let input = format!("{at},,\n{over},,\n\"{at}\",,\n\"{over}\",,\n");
        let (paths, bad) = parse_record(input.as_bytes());
        assert_eq!(paths, vec![at.clone(), at]);
        assert_eq!(bad, 2);
    }

    #[test]
    fn record_entry_cap() {
        let input = "a,,\n".repeat(MAX_FILE_ENTRIES + 10);
        let (paths, bad) = parse_record(input.as_bytes());
        assert_eq!(paths.len(), MAX_FILE_ENTRIES);
        assert_eq!(bad, 10);
        let input = "a\n".repeat(MAX_FILE_ENTRIES + 10);
        assert_eq!(
            parse_installed_files(input.as_bytes()).len(),
            MAX_FILE_ENTRIES
        );
    }

    #[test]
    fn installed_files() {
        let input = b"../six.py\r\n../__pycache__/six.cpython-311.pyc\n\n./\nPKG-INFO\n\xff\nnul\0\n top_level.txt";
        assert_eq!(
            parse_installed_files(input),
            vec![
                "../six.py",
                "../__pycache__/six.cpython-311.pyc",
                "./",
                "PKG-INFO",
                " top_level.txt"
            ]
        );
        assert!(parse_installed_files(b"").is_empty());
    }

    #[test]
    fn top_level() {
        assert_eq!(parse_top_level(b"cryptography\n"), vec!["cryptography"]);
        assert_eq!(
            parse_top_level(b"_cffi_backend\r\n  cffi \n\ncffi\n.\n..\na/b\na\\b\n\xff\nx\x01\n81d243bd2c585b0f4821__mypyc"),
            vec!["_cffi_backend", "cffi", "81d243bd2c585b0f4821__mypyc"]
        );
        let many: String = (0..MAX_TOP_LEVEL_NAMES + 5)
            .map(|i| format!("m{i}\n"))
            .collect();
        assert_eq!(parse_top_level(many.as_bytes()).len(), MAX_TOP_LEVEL_NAMES);
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert!(parse_top_level(long.as_bytes()).is_empty());
    }

    #[test]
    fn pyvenv_cfg() {
        // virtualenv's layout.
        let cfg = parse_pyvenv_cfg(
            b"home = /usr/bin\r\nimplementation = CPython\r\nversion_info = 3.11.2.final.0\r\nvirtualenv = 20.17.1\r\ninclude-system-site-packages = TRUE\r\nbase-prefix = /usr\r\n",
        );
        assert_eq!(
            cfg,
            PyvenvCfg {
                home: Some("/usr/bin".into()),
                include_system_site_packages: true,
                version: Some("3.11.2.final.0".into()),
            }
        );
        // `version` is preferred over `version_info` whatever the order; the
        // last of repeated keys wins; keys are case-insensitive.
        let cfg = parse_pyvenv_cfg(
            b"version = 3.12.1\nversion_info = 3.12.1.final.0\nHOME=/a\nhome = /b = c\n",
        );
        assert_eq!(cfg.version.as_deref(), Some("3.12.1"));
        assert_eq!(cfg.home.as_deref(), Some("/b = c"));
        // Only the hyphenated spelling and only "true" count, as in site.py.
        for line in [
            "include_system_site_packages = true",
            "include-system-site-packages = yes",
            "include-system-site-packages = 1",
            "include-system-site-packages",
        ] {
            assert!(
                !parse_pyvenv_cfg(line.as_bytes()).include_system_site_packages,
                "{line}"
            );
        }
        // A later "false" overrides an earlier "true".
        assert!(
            !parse_pyvenv_cfg(
                b"include-system-site-packages = true\ninclude-system-site-packages = false\n"
            )
            .include_system_site_packages
        );
        assert_eq!(parse_pyvenv_cfg(b""), PyvenvCfg::default());
        assert_eq!(
            parse_pyvenv_cfg(b"home =\nversion = \xff\n"),
            PyvenvCfg::default()
        );
        let long = format!("home = /{}\n", "h".repeat(MAX_CFG_VALUE_LEN));
        assert_eq!(parse_pyvenv_cfg(long.as_bytes()).home, None);
    }

    #[test]
    fn names_normalize_as_pep_503() {
        for (raw, want) in [
            ("PyYAML", "pyyaml"),
            ("dbus_python", "dbus-python"),
            ("lazr.restfulclient", "lazr-restfulclient"),
            ("My.PyPI_.--._Package", "my-pypi-package"),
            ("Foo__Bar", "foo-bar"),
            ("-_.x._-", "-x-"),
            ("", ""),
            ("\u{c9}clair", "\u{e9}clair"),
        ] {
            assert_eq!(normalize_name(raw), want, "{raw}");
        }
    }

    #[test]
    fn dist_dir_names() {
        use DistKind::{DistInfo, EggInfo};
        let cases: &[(&str, Option<DistDirName>)] = &[
            (
                "cryptography-38.0.4.dist-info",
                dir("cryptography", Some("38.0.4"), DistInfo),
            ),
            (
                "argcomplete-2.0.0.egg-info",
                dir("argcomplete", Some("2.0.0"), EggInfo),
            ),
            (
                "Foo_Bar-1.0-py3.11.egg-info",
                dir("Foo_Bar", Some("1.0"), EggInfo),
            ),
            (
                "foo-1.0-py3.11-linux-x86_64.egg-info",
                dir("foo", Some("1.0"), EggInfo),
            ),
            ("cryptography.egg-info", dir("cryptography", None, EggInfo)),
            ("foo-1.0.egg-info", dir("foo", Some("1.0"), EggInfo)),
            (
                "Python-2.7.18-py2.7.egg-info",
                dir("Python", Some("2.7.18"), EggInfo),
            ),
            (
                "lazr.restfulclient-0.14.5.egg-info",
                dir("lazr.restfulclient", Some("0.14.5"), EggInfo),
            ),
            (
                "outcome-1.3.0.post0.dist-info",
                dir("outcome", Some("1.3.0.post0"), DistInfo),
            ),
            ("PyYAML-6.0.DIST-INFO", dir("PyYAML", Some("6.0"), DistInfo)),
            // A legacy version with a dash stays whole in a dist-info name.
            ("foo-1.0-1.dist-info", dir("foo", Some("1.0-1"), DistInfo)),
            ("foo-.dist-info", dir("foo", None, DistInfo)),
            ("foo.dist-info", dir("foo", None, DistInfo)),
            (".dist-info", None),
            ("-1.0.dist-info", None),
            ("foo-1.0.egg", None),
            ("foo-1.0.egg-link", None),
            ("foo.pth", None),
            ("six.py", None),
            ("a/b-1.0.dist-info", None),
            ("a\0-1.0.dist-info", None),
            ("dist-info", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_dist_dir_name(input), want, "{input}");
        }
        let long = format!("{}-1.dist-info", "n".repeat(MAX_NAME_LEN));
        assert_eq!(parse_dist_dir_name(&long), None);
        // Multi-byte characters next to the suffix do not split a char.
        assert_eq!(parse_dist_dir_name("\u{e9}\u{e9}\u{e9}\u{e9}"), None);
        assert_eq!(parse_dist_dir_name("\u{10ffff}dist-info"), None);
    }

    #[test]
    fn top_level_of_paths() {
        let cases: &[(&str, Option<&str>)] = &[
            ("cryptography/hazmat/x.py", Some("cryptography")),
            ("cryptography/__init__.py", Some("cryptography")),
            (
                "cryptography/hazmat/bindings/_rust.abi3.so",
                Some("cryptography"),
            ),
            ("six.py", Some("six")),
            ("six.pyc", Some("six")),
            ("__pycache__/six.cpython-311.pyc", Some("six")),
            ("__pycache__/six.cpython-311.opt-1.pyc", Some("six")),
            (
                "_cffi_backend.cpython-311-x86_64-linux-gnu.so",
                Some("_cffi_backend"),
            ),
            (
                "81d243bd2c585b0f4821__mypyc.cpython-311-x86_64-linux-gnu.so",
                Some("81d243bd2c585b0f4821__mypyc"),
            ),
            ("foo.abi3.so", Some("foo")),
            ("foo.pyd", Some("foo")),
            ("foo.pyi", Some("foo")),
            ("./six.py", Some("six")),
            ("caf\u{e9}/x.py", Some("caf\u{e9}")),
            ("foo.pth", None),
            ("distutils-precedence.pth", None),
            ("six-1.17.0.dist-info/RECORD", None),
            ("cryptography.egg-info/PKG-INFO", None),
            ("numpy.libs/libopenblas.so", None),
            ("README.txt", None),
            ("libfoo.so.1", None),
            ("six", None),
            ("__pycache__", None),
            ("__pycache__/x/y.pyc", None),
            ("__pycache__/README", None),
            ("../../../bin/aws", None),
            ("/usr/lib/python3/six.py", None),
            ("", None),
            (".py", None),
            ("a-b/x.py", None),
            ("a b.py", None),
        ];
        for &(input, want) in cases {
            assert_eq!(top_level_of(input).as_deref(), want, "{input}");
        }
    }

    // ---- Fuzz and hostile sizes ------------------------------------------

    use crate::parse::fuzz::Rng;
    fn mutate(rng: &mut Rng, fixture: &[u8]) -> Vec<u8> {
        crate::parse::fuzz::mutate(rng, fixture, ALPHABET)
    }

    fn random_input(rng: &mut Rng) -> Vec<u8> {
        crate::parse::fuzz::random_input(rng, ALPHABET)
    }

    /// Bytes that are structurally meaningful to these parsers.
    const ALPHABET: &[u8] = b"Nnamevrsio:- _.\"\r\n\t,=/\\#\xef\xbb\xbf\xc3\xa90123456789";

    /// Runs every parser on `input` and checks the bounds they promise.
    fn feed_all(input: &[u8]) {
        if let Some(m) = parse_metadata(input) {
            assert!(!m.name.is_empty() && m.name.len() <= MAX_NAME_LEN);
            assert!(!m.version.is_empty() && m.version.len() <= MAX_NAME_LEN);
        }
        let (paths, bad) = parse_record(input);
        assert!(paths.len() + bad as usize <= input.len());
        for p in paths.iter().chain(&parse_installed_files(input)) {
            assert!(valid_path(p));
            let _ = top_level_of(p);
            if let Some(k) = record_key(p) {
                assert!(!k.starts_with('/') && !k.split('/').any(|c| c == ".."));
            }
        }
        for t in parse_top_level(input) {
            assert!(!t.is_empty() && !t.contains('/'));
        }
        let cfg = parse_pyvenv_cfg(input);
        assert!(cfg.home.is_none_or(|h| h.len() <= MAX_CFG_VALUE_LEN));
        let text = String::from_utf8_lossy(input);
        let n = normalize_name(&text);
        assert_eq!(normalize_name(&n), n, "normalize_name is idempotent");
        for candidate in [&*text, text.lines().next().unwrap_or("")] {
            if let Some(d) = parse_dist_dir_name(candidate) {
                assert!(!d.name.is_empty() && !d.name.contains('/'));
            }
            if let Some(t) = top_level_of(candidate) {
                assert!(is_module_name(&t));
            }
        }
    }

    #[test]
    fn fuzz_no_panics() {
        let fixtures: &[&[u8]] = &[
            SAMPLE_METADATA,
            SAMPLE_PKG_INFO,
            SAMPLE_RECORD,
            SAMPLE_PYVENV_CFG,
            b"cryptography\n_cffi_backend\n",
            b"Foo_Bar-1.0-py3.11.egg-info",
            b"__pycache__/six.cpython-311.pyc",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..4000 {
            let input = if i % 2 == 0 {
                random_input(&mut rng)
            } else {
                let f = fixtures[rng.below(fixtures.len())];
                mutate(&mut rng, f)
            };
            feed_all(&input);
        }
    }

    #[test]
    fn hostile_sizes() {
        // 8 MiB keeps this test to a few seconds in debug builds; every
        // parser is linear, so larger inputs only take proportionally longer.
        let big = 8 << 20;
        let started = std::time::Instant::now();
        for input in [
            vec![b'"'; big],
            vec![b'\n'; big],
            vec![b','; big],
            vec![b'a'; big],
            vec![0xff; big],
        ] {
            assert_eq!(parse_metadata(&input), None);
            let (paths, _) = parse_record(&input);
            assert!(paths.len() <= MAX_FILE_ENTRIES);
            assert!(parse_installed_files(&input).len() <= MAX_FILE_ENTRIES);
            assert!(parse_top_level(&input).len() <= MAX_TOP_LEVEL_NAMES);
            let _ = parse_pyvenv_cfg(&input);
        }
        // One unterminated quoted path of 64 MiB is copied only up to the cap.
        let mut input = b"\"".to_vec();
        input.extend(std::iter::repeat_n(b'p', 64 << 20));
        assert_eq!(parse_record(&input), (vec![], 1));
        // A huge header block: Name and Version after 8 MiB of headers and
        // continuation lines are still found.
        let mut input = Vec::with_capacity(big + 64);
        while input.len() < big {
            input.extend_from_slice(b"Classifier: x\n continuation\n");
        }
        input.extend_from_slice(b"Name: late\nVersion: 1\n");
        assert_eq!(parse_metadata(&input), meta("late", "1"));
        // Many tiny rows hit the entry cap and are counted.
        let input = "a\n".repeat(big / 2);
        let (paths, bad) = parse_record(input.as_bytes());
        assert_eq!(paths.len(), MAX_FILE_ENTRIES);
        assert_eq!(bad as usize, big / 2 - MAX_FILE_ENTRIES);
        let long = "x".repeat(big);
        assert_eq!(normalize_name(&long).len(), big);
        assert_eq!(parse_dist_dir_name(&long), None);
        assert!(top_level_of(&long).is_none());
        // A bound against super-linear work, not a speed test: a debug build
        // on a loaded machine took 98 s.
        assert!(started.elapsed().as_secs() < 600, "{:?}", started.elapsed());
    }
}
