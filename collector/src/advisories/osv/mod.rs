//! OSV advisories (the Open Source Vulnerability schema 1.x) read from JSON
//! or YAML, validated and reduced to the fields the matcher needs.
//!
//! An OSV record says which versions of which packages a vulnerability
//! affects: `affected[]` entries name a package (ecosystem and name), list
//! version `ranges` as ordered `events` (`introduced`, `fixed`,
//! `last_affected`, `limit`) and may enumerate `versions` outright. The
//! record's `id` and `aliases` tie it to CVE, GHSA, PYSEC, GO and RUSTSEC
//! identifiers, and `severity` carries CVSS vectors (scored by [`cvss`]).
//! [`import`] reads whole databases: a directory tree, or the zip archives
//! osv.dev publishes.
//!
//! What the sources do, and what this module does about it:
//!
//! * PyPA's advisory-database ships YAML. It is read with saphyr-parser's
//!   YAML 1.2 event stream, so unquoted timestamps stay text and a plain
//!   scalar that looks like a number keeps its spelling where a string is
//!   expected (`fixed: 1.10` is the version "1.10", where PyYAML would say
//!   1.1). Aliases are expanded under a budget (see [`MAX_NODES`] and
//!   [`MAX_EXPANDED_BYTES`]), which is what stops a "billion laughs" file.
//! * Timestamps are RFC 3339 and are compared as instants ([`Timestamp`]):
//!   a YAML-to-JSON conversion through PyYAML rewrites
//!   `2024-07-11T17:21:37.216928Z` as `2024-07-11 17:21:37.216928+00:00`,
//!   which is the same instant (RFC 3339 allows the space).
//! * golang/vulndb's repository files carry `modified: 0001-01-01T00:00:00Z`
//!   (osv.dev fills in the real date when it serves them); that is a valid
//!   timestamp and is kept as is.
//! * GHSA records keep their qualitative severity in
//!   `database_specific.severity` (`LOW`, `MODERATE`, `HIGH`, `CRITICAL`);
//!   `database_specific` and the `*_specific` objects of affected entries and
//!   ranges are kept whole as JSON values. Other fields the schema does not
//!   name here (`credits`, anything unknown) are dropped.
//! * Optional fields may be `null` (some generators emit that for empty
//!   lists); they are read as absent. `schema_version` is kept when present.
//!
//! Validation: `id` (and every alias and related id) must be non-empty, at
//! most [`MAX_ID_LEN`] bytes, without `/`, `\`, whitespace or control
//! characters, and not `.` or `..`, because ids end up in file names and
//! database keys. `modified` is required. Every range must have a known type
//! (`ECOSYSTEM`, `SEMVER`, `GIT`), at least one `introduced` event, and
//! events that are objects with exactly one of the four keys and a string
//! value; a `GIT` range must name its `repo`. Duplicate keys are refused.
//!
//! Errors name the file, the position (1-based line and column, counted in
//! characters), the path of the offending field and the reason, as in
//! `advisories/x.json:12:5: affected[0].ranges[0].events: expected an array,
//! found an object`. The input is untrusted: every size and count is capped
//! (the `MAX_*` constants), the parsers never panic, and the work is linear
//! in the input.

pub mod cvss;
pub mod import;
mod tree;
mod zip;

use std::fmt;

use tree::{Loc, Node, Value, preview};

/// Largest advisory file accepted, in bytes (the biggest real OSV records,
/// kernel CVEs with hundreds of affected packages, are a few MiB).
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// Deepest nesting of arrays and objects accepted (OSV needs about 8).
pub const MAX_DEPTH: usize = 64;

/// Most values (scalars, arrays and objects, after YAML alias expansion) in
/// one document. A real advisory has a few hundred to a few tens of
/// thousands; this bounds the tree to well under 100 MiB.
pub const MAX_NODES: usize = 1_000_000;

/// Most bytes of scalar text in one document after YAML alias expansion.
pub const MAX_EXPANDED_BYTES: usize = 4 * MAX_FILE_BYTES;

/// Most elements in any one array or members in any one object.
pub const MAX_CONTAINER_LEN: usize = 65_536;

/// Longest id (and alias, and related id) accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Most `affected` entries in one advisory.
pub const MAX_AFFECTED: usize = 4096;

/// Most `ranges` in one affected entry.
pub const MAX_RANGES: usize = 1024;

/// Most `events` in one range.
pub const MAX_EVENTS: usize = 4096;

/// Most `versions` in one affected entry.
pub const MAX_VERSIONS: usize = 65_536;

/// Most `aliases`, and most `related` ids, in one advisory.
pub const MAX_ALIASES: usize = 1024;

/// Most `references` in one advisory.
pub const MAX_REFERENCES: usize = 4096;

/// Most `severity` entries in one advisory or affected entry.
pub const MAX_SEVERITIES: usize = 64;

/// One OSV advisory.
#[derive(Debug, Clone, PartialEq)]
pub struct Advisory {
    /// The record's id, e.g. `GHSA-mq26-g339-26xf` or `PYSEC-2023-228`.
    pub id: String,
    /// `schema_version`, when the record states it (e.g. `1.4.0`).
    pub schema_version: Option<String>,
    /// When the record last changed.
    pub modified: Timestamp,
    /// When the record was first published.
    pub published: Option<Timestamp>,
    /// When the record was withdrawn; a withdrawn advisory no longer
    /// applies.
    pub withdrawn: Option<Timestamp>,
    /// Other ids of the same vulnerability (CVE, GHSA, PYSEC, GO, ...).
    pub aliases: Vec<String>,
    /// Ids of closely related but distinct vulnerabilities.
    pub related: Vec<String>,
    /// Ids of the upstream vulnerabilities a distribution's record is about
    /// (OSV 1.6: Debian's DEBIAN-CVE-… and DSA records name their CVEs here).
    pub upstream: Vec<String>,
    /// One-line summary.
    pub summary: Option<String>,
    /// Longer description (often Markdown).
    pub details: Option<String>,
    /// Severity scores of the whole record.
    pub severity: Vec<Severity>,
    /// The affected packages and versions.
    pub affected: Vec<Affected>,
    /// Links (advisories, fixes, reports).
    pub references: Vec<Reference>,
    /// The database's own data (GHSA puts its qualitative `severity` here).
    pub database_specific: Option<serde_json::Value>,
}

/// One entry of `severity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Severity {
    /// The scoring system: `CVSS_V2`, `CVSS_V3`, `CVSS_V4` or `Ubuntu`.
    pub kind: String,
    /// The score: a CVSS vector string, or for `Ubuntu` a word such as
    /// `medium`.
    pub score: String,
}

/// One entry of `affected`: a package and the versions of it affected.
#[derive(Debug, Clone, PartialEq)]
pub struct Affected {
    /// The package; absent only in records that describe a bare git
    /// repository through `GIT` ranges.
    pub package: Option<Package>,
    /// Severity specific to this package (schema 1.5 and later).
    pub severity: Vec<Severity>,
    /// Version ranges.
    pub ranges: Vec<Range>,
    /// Affected versions, enumerated.
    pub versions: Vec<String>,
    /// Ecosystem-specific data (Go's affected symbols, Ubuntu's binaries).
    pub ecosystem_specific: Option<serde_json::Value>,
    /// Database-specific data.
    pub database_specific: Option<serde_json::Value>,
}

/// The package an affected entry is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The OSV ecosystem, possibly with a suffix after ':' (`PyPI`, `Go`,
    /// `crates.io`, `Ubuntu:22.04:LTS`, `Debian:12`).
    pub ecosystem: String,
    /// The name as the ecosystem spells it.
    pub name: String,
    /// A package URL, when given.
    pub purl: Option<String>,
}

/// The kind of a range, which says how to order its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RangeKind {
    /// Versions ordered by the ecosystem's own rules.
    Ecosystem,
    /// Semantic versions (SemVer 2.0).
    Semver,
    /// Git commits of the range's `repo`.
    Git,
}

impl RangeKind {
    /// The schema's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RangeKind::Ecosystem => "ECOSYSTEM",
            RangeKind::Semver => "SEMVER",
            RangeKind::Git => "GIT",
        }
    }
}

/// One entry of `ranges`.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    /// How versions are ordered.
    pub kind: RangeKind,
    /// The repository, for `GIT` ranges.
    pub repo: Option<String>,
    /// The events in document order (at least one `introduced`).
    pub events: Vec<Event>,
    /// Database-specific data.
    pub database_specific: Option<serde_json::Value>,
}

/// One range event. Events are evaluated in version order, not document
/// order: see the OSV schema's "evaluation" section.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// Versions from this one on are affected (`"0"` means all).
    Introduced(String),
    /// Versions from this one on are fixed.
    Fixed(String),
    /// This is the last affected version.
    LastAffected(String),
    /// Versions from this one on are outside the range (GIT ranges).
    Limit(String),
}

impl Event {
    /// The version (or commit) the event names.
    pub fn version(&self) -> &str {
        match self {
            Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => v,
        }
    }
}

/// One entry of `references`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `ADVISORY`, `ARTICLE`, `FIX`, `PACKAGE`, `REPORT`, `WEB`, ...
    pub kind: String,
    /// The URL.
    pub url: String,
}

/// An instant read from an RFC 3339 timestamp, kept to the nanosecond.
/// Equal instants compare equal whatever their spelling (offset, `T` or
/// space, trailing zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z (negative before it; year 1 is
    /// -62135596800).
    pub unix_seconds: i64,
    /// Nanoseconds within the second (fractions past 9 digits are cut).
    pub nanos: u32,
}

/// Why a file is not a valid advisory, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct OsvError {
    /// The file name the caller gave (control characters replaced).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// The field, e.g. `affected[0].ranges[1].events`; empty for the whole
    /// document.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for OsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.reason)
    }
}

/// A package identity for matching: the ecosystem's base name and the
/// normalized package name (see [`package_key`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackageKey {
    /// The ecosystem without its suffix (`Ubuntu`, not `Ubuntu:22.04:LTS`).
    pub ecosystem: String,
    /// The normalized name.
    pub name: String,
}

/// The text of an OSV ecosystem before the first ':' (`Debian:12` is
/// `Debian`, `Red Hat:enterprise_linux:9::appstream` is `Red Hat`).
pub fn osv_ecosystem(ecosystem: &str) -> &str {
    ecosystem
        .split_once(':')
        .map_or(ecosystem, |(base, _)| base)
}

/// A package name normalized for comparison, exactly as the store and the
/// matcher compare names ([`crate::ecosystem::Ecosystem::key`]); an OSV
/// ecosystem patchgap does not inventory is lowercased.
pub fn package_key(ecosystem: &str, name: &str) -> String {
    match crate::ecosystem::Ecosystem::from_osv(ecosystem) {
        Some(e) => e.key(name),
        None => name.to_lowercase(),
    }
}

impl Advisory {
    /// The id followed by the aliases.
    pub fn all_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.aliases.iter().map(String::as_str))
    }

    /// Whether the record has been withdrawn.
    pub fn is_withdrawn(&self) -> bool {
        self.withdrawn.is_some()
    }

    /// GHSA's qualitative severity (`LOW`, `MODERATE`, `HIGH`, `CRITICAL`)
    /// from `database_specific.severity`, when present.
    pub fn database_severity(&self) -> Option<&str> {
        self.database_specific.as_ref()?.get("severity")?.as_str()
    }

    /// The highest CVSS v3 base score among the record's and its affected
    /// entries' severities, with its rating. CVSS v4 vectors are not scored
    /// (see [`cvss`]).
    pub fn cvss_v3(&self) -> Option<(f64, &'static str)> {
        self.cvss_v3_entry()
            .map(|(_, score, rating)| (score, rating))
    }

    /// Like [`Advisory::cvss_v3`], with the severity entry (and so the
    /// vector) that gave the score.
    pub fn cvss_v3_entry(&self) -> Option<(&Severity, f64, &'static str)> {
        self.severity
            .iter()
            .chain(self.affected.iter().flat_map(|a| a.severity.iter()))
            .filter_map(|s| s.cvss_v3().map(|(score, rating)| (s, score, rating)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

impl Severity {
    /// The CVSS v3.0/v3.1 base score and rating, when this is a `CVSS_V3`
    /// entry with a valid vector.
    pub fn cvss_v3(&self) -> Option<(f64, &'static str)> {
        if self.kind == "CVSS_V3" {
            cvss::base_score(&self.score)
        } else {
            None
        }
    }
}

impl Affected {
    /// The package's ecosystem without its suffix, see [`osv_ecosystem`].
    pub fn osv_ecosystem(&self) -> Option<&str> {
        self.package.as_ref().map(|p| osv_ecosystem(&p.ecosystem))
    }

    /// The package's identity for matching, see [`PackageKey`].
    pub fn package_key(&self) -> Option<PackageKey> {
        let p = self.package.as_ref()?;
        Some(PackageKey {
            ecosystem: osv_ecosystem(&p.ecosystem).to_string(),
            name: package_key(&p.ecosystem, &p.name),
        })
    }
}

impl Timestamp {
    /// Parses an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`,
    /// with `t`, `z` and a space as the separator accepted as RFC 3339
    /// allows. Leap seconds (`:60`) are read as the next second.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let d = b.get(r)?;
            d.iter().all(u8::is_ascii_digit).then_some(())?;
            Some(d.iter().fold(0i64, |v, &c| v * 10 + i64::from(c - b'0')))
        };
        let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let mut at = 19;
        let mut nanos = 0u32;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let start = at;
            while b.get(at).is_some_and(u8::is_ascii_digit) {
                if at - start < 9 {
                    nanos = nanos * 10 + u32::from(b[at] - b'0');
                }
                at += 1;
            }
            let n = at - start;
            if n == 0 {
                return None;
            }
            for _ in n..9 {
                nanos *= 10;
            }
        }
        let offset = match b.get(at)? {
            b'Z' | b'z' => {
                at += 1;
                0
            }
            c @ (b'+' | b'-') => {
                if !sep(at + 3, b":") {
                    return None;
                }
                let (oh, om) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
                if oh > 23 || om > 59 {
                    return None;
                }
                at += 6;
                let o = oh * 3600 + om * 60;
                if *c == b'-' { -o } else { o }
            }
            _ => return None,
        };
        if at != b.len() {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let unix_seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
        Some(Timestamp {
            unix_seconds,
            nanos,
        })
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, with the fraction trimmed of trailing zeros.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.unix_seconds.div_euclid(86_400);
        let secs = self.unix_seconds.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )?;
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Parses one OSV advisory in JSON. `file_name` only labels errors.
pub fn parse_json(bytes: &[u8], file_name: &str) -> Result<Advisory, OsvError> {
    parse(bytes, file_name, Format::Json)
}

/// Parses one OSV advisory in YAML (as PyPA's advisory-database ships
/// them). `file_name` only labels errors.
pub fn parse_yaml(bytes: &[u8], file_name: &str) -> Result<Advisory, OsvError> {
    parse(bytes, file_name, Format::Yaml)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

fn parse(bytes: &[u8], file_name: &str, format: Format) -> Result<Advisory, OsvError> {
    let file: String = file_name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let whole = |src: &str, at: usize, reason: String| {
        let (line, column) = Loc::Byte(at).line_col(src);
        OsvError {
            file: file.clone(),
            line,
            column,
            path: String::new(),
            reason,
        }
    };
    if bytes.len() > MAX_FILE_BYTES {
        // Position the error where the cap was crossed; only that prefix
        // is looked at, and only as far as it is valid UTF-8.
        let head = &bytes[..MAX_FILE_BYTES];
        let head = match std::str::from_utf8(head) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
        };
        return Err(whole(
            head,
            head.len(),
            format!(
                "file is {} bytes, larger than the {MAX_FILE_BYTES}-byte limit",
                bytes.len()
            ),
        ));
    }
    let src = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let good = std::str::from_utf8(good).unwrap_or("");
            let bad = bytes.get(e.valid_up_to()).copied().unwrap_or(0);
            return Err(whole(
                good,
                good.len(),
                format!("invalid UTF-8 (byte 0x{bad:02x})"),
            ));
        }
    };
    let root = match format {
        Format::Json => tree::parse_json(src),
        Format::Yaml => tree::parse_yaml(src),
    };
    let mut cx = Cx {
        src,
        file: &file,
        lenient: format == Format::Yaml,
        path: Vec::new(),
    };
    match root {
        Ok(root) => cx.advisory(&root),
        Err(e) => Err(cx.error(e.loc, e.reason)),
    }
}

/// One step of a field path.
#[derive(Debug, Clone, Copy)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

/// The mapping context: where we are, for error messages.
struct Cx<'a> {
    src: &'a str,
    file: &'a str,
    /// YAML: a number may stand where a string is expected (its text is
    /// used).
    lenient: bool,
    path: Vec<Seg>,
}

type Members = [(String, Node)];

impl Cx<'_> {
    fn error(&self, loc: Loc, reason: impl Into<String>) -> OsvError {
        let (line, column) = loc.line_col(self.src);
        let mut path = String::new();
        for seg in &self.path {
            match seg {
                Seg::Key(k) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                }
                Seg::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        OsvError {
            file: self.file.to_string(),
            line,
            column,
            path,
            reason: reason.into(),
        }
    }

    /// Runs `f` with `seg` pushed on the path.
    fn at<T>(
        &mut self,
        seg: Seg,
        f: impl FnOnce(&mut Self) -> Result<T, OsvError>,
    ) -> Result<T, OsvError> {
        self.path.push(seg);
        let r = f(self);
        self.path.pop();
        r
    }

    fn expected(&self, node: &Node, what: &str) -> OsvError {
        self.error(
            node.loc,
            format!("expected {what}, found {}", node.value.kind()),
        )
    }

    fn object<'n>(&self, node: &'n Node) -> Result<&'n Members, OsvError> {
        match &node.value {
            Value::Object(m) => Ok(m),
            _ => Err(self.expected(node, "an object")),
        }
    }

    /// An array of at most `max` elements.
    fn array<'n>(&self, node: &'n Node, max: usize) -> Result<&'n [Node], OsvError> {
        match &node.value {
            Value::Array(a) if a.len() > max => Err(self.error(
                a[max].loc,
                format!("more than {max} entries (has {})", a.len()),
            )),
            Value::Array(a) => Ok(a),
            _ => Err(self.expected(node, "an array")),
        }
    }

    fn string(&self, node: &Node) -> Result<String, OsvError> {
        match &node.value {
            Value::Str(s) => Ok(s.clone()),
            Value::Number(s) if self.lenient => Ok(s.clone()),
            _ => Err(self.expected(node, "a string")),
        }
    }

    fn non_empty(&self, node: &Node) -> Result<String, OsvError> {
        let s = self.string(node)?;
        if s.is_empty() {
            return Err(self.error(node.loc, "must not be empty"));
        }
        Ok(s)
    }

    fn id(&self, node: &Node) -> Result<String, OsvError> {
        let s = self.string(node)?;
        let bad_char = s
            .chars()
            .find(|&c| c == '/' || c == '\\' || c.is_whitespace() || c.is_control());
        let reason = if s.is_empty() {
            "empty id".to_string()
        } else if s.len() > MAX_ID_LEN {
            format!("id is {} bytes, longer than {MAX_ID_LEN}", s.len())
        } else if s == "." || s == ".." {
            format!("invalid id {}", preview(&s))
        } else if let Some(c) = bad_char {
            format!("invalid character {:?} in id {}", c, preview(&s))
        } else {
            return Ok(s);
        };
        Err(self.error(node.loc, reason))
    }

    fn timestamp(&self, node: &Node) -> Result<Timestamp, OsvError> {
        let s = self.string(node)?;
        Timestamp::parse(&s).ok_or_else(|| {
            self.error(
                node.loc,
                format!("not an RFC 3339 timestamp: {}", preview(&s)),
            )
        })
    }

    /// An optional field: `None` when absent or null.
    fn opt<T>(
        &mut self,
        node: Option<&Node>,
        key: &'static str,
        f: impl FnOnce(&mut Self, &Node) -> Result<T, OsvError>,
    ) -> Result<Option<T>, OsvError> {
        match node {
            None => Ok(None),
            Some(n) if n.value == Value::Null => Ok(None),
            Some(n) => self.at(Seg::Key(key), |cx| f(cx, n)).map(Some),
        }
    }

    /// A required field.
    fn req<T>(
        &mut self,
        parent: &Node,
        node: Option<&Node>,
        key: &'static str,
        f: impl FnOnce(&mut Self, &Node) -> Result<T, OsvError>,
    ) -> Result<T, OsvError> {
        match node {
            Some(n) => self.at(Seg::Key(key), |cx| f(cx, n)),
            None => Err(self.error(parent.loc, format!("missing required field `{key}`"))),
        }
    }

    /// An optional list: empty when absent or null.
    fn list<T>(
        &mut self,
        node: Option<&Node>,
        key: &'static str,
        max: usize,
        mut f: impl FnMut(&mut Self, &Node) -> Result<T, OsvError>,
    ) -> Result<Vec<T>, OsvError> {
        let items = self.opt(node, key, |cx, n| {
            let items = cx.array(n, max)?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(cx.at(Seg::Index(i), |cx| f(cx, item))?);
            }
            Ok(out)
        })?;
        Ok(items.unwrap_or_default())
    }

    /// An opaque `*_specific` object, converted to a JSON value.
    fn specific(
        &mut self,
        node: Option<&Node>,
        key: &'static str,
    ) -> Result<Option<serde_json::Value>, OsvError> {
        self.opt(node, key, |cx, n| {
            cx.object(n)?;
            Ok(to_json(n))
        })
    }

    fn advisory(&mut self, root: &Node) -> Result<Advisory, OsvError> {
        let members = match &root.value {
            Value::Object(m) => m,
            _ => {
                return Err(self.error(
                    root.loc,
                    format!(
                        "expected an OSV record (an object) at the top level, found {}",
                        root.value.kind()
                    ),
                ));
            }
        };
        let f = Fields::of(members, TOP_FIELDS);
        let id = self.req(root, f.get("id"), "id", |cx, n| cx.id(n))?;
        let modified = self.req(root, f.get("modified"), "modified", |cx, n| cx.timestamp(n))?;
        Ok(Advisory {
            schema_version: self.opt(f.get("schema_version"), "schema_version", |cx, n| {
                cx.string(n)
            })?,
            published: self.opt(f.get("published"), "published", |cx, n| cx.timestamp(n))?,
            withdrawn: self.opt(f.get("withdrawn"), "withdrawn", |cx, n| cx.timestamp(n))?,
            aliases: self.list(f.get("aliases"), "aliases", MAX_ALIASES, |cx, n| cx.id(n))?,
            related: self.list(f.get("related"), "related", MAX_ALIASES, |cx, n| cx.id(n))?,
            upstream: self.list(f.get("upstream"), "upstream", MAX_ALIASES, |cx, n| cx.id(n))?,
            summary: self.opt(f.get("summary"), "summary", |cx, n| cx.string(n))?,
            details: self.opt(f.get("details"), "details", |cx, n| cx.string(n))?,
            severity: self.list(f.get("severity"), "severity", MAX_SEVERITIES, Cx::severity)?,
            affected: self.list(f.get("affected"), "affected", MAX_AFFECTED, Cx::affected)?,
            references: self.list(
                f.get("references"),
                "references",
                MAX_REFERENCES,
                Cx::reference,
            )?,
            database_specific: self.specific(f.get("database_specific"), "database_specific")?,
            id,
            modified,
        })
    }

    fn severity(&mut self, node: &Node) -> Result<Severity, OsvError> {
        let f = Fields::of(self.object(node)?, &["type", "score"]);
        Ok(Severity {
            kind: self.req(node, f.get("type"), "type", |cx, n| cx.non_empty(n))?,
            score: self.req(node, f.get("score"), "score", |cx, n| cx.non_empty(n))?,
        })
    }

    fn reference(&mut self, node: &Node) -> Result<Reference, OsvError> {
        let f = Fields::of(self.object(node)?, &["type", "url"]);
        Ok(Reference {
            kind: self.req(node, f.get("type"), "type", |cx, n| cx.non_empty(n))?,
            url: self.req(node, f.get("url"), "url", |cx, n| cx.non_empty(n))?,
        })
    }

    fn affected(&mut self, node: &Node) -> Result<Affected, OsvError> {
        let f = Fields::of(self.object(node)?, AFFECTED_FIELDS);
        Ok(Affected {
            package: self.opt(f.get("package"), "package", Cx::package)?,
            severity: self.list(f.get("severity"), "severity", MAX_SEVERITIES, Cx::severity)?,
            ranges: self.list(f.get("ranges"), "ranges", MAX_RANGES, Cx::range)?,
            versions: self.list(f.get("versions"), "versions", MAX_VERSIONS, |cx, n| {
                cx.string(n)
            })?,
            ecosystem_specific: self.specific(f.get("ecosystem_specific"), "ecosystem_specific")?,
            database_specific: self.specific(f.get("database_specific"), "database_specific")?,
        })
    }

    fn package(&mut self, node: &Node) -> Result<Package, OsvError> {
        let f = Fields::of(self.object(node)?, &["ecosystem", "name", "purl"]);
        Ok(Package {
            ecosystem: self.req(node, f.get("ecosystem"), "ecosystem", |cx, n| {
                cx.non_empty(n)
            })?,
            name: self.req(node, f.get("name"), "name", |cx, n| cx.non_empty(n))?,
            purl: self.opt(f.get("purl"), "purl", |cx, n| cx.string(n))?,
        })
    }

    fn range(&mut self, node: &Node) -> Result<Range, OsvError> {
        let f = Fields::of(
            self.object(node)?,
            &["type", "repo", "events", "database_specific"],
        );
        let kind = self.req(node, f.get("type"), "type", |cx, n| {
            match cx.string(n)?.as_str() {
                "ECOSYSTEM" => Ok(RangeKind::Ecosystem),
                "SEMVER" => Ok(RangeKind::Semver),
                "GIT" => Ok(RangeKind::Git),
                other => Err(cx.error(
                    n.loc,
                    format!(
                        "unknown range type {} (expected ECOSYSTEM, SEMVER or GIT)",
                        preview(other)
                    ),
                )),
            }
        })?;
        let repo = self.opt(f.get("repo"), "repo", |cx, n| cx.non_empty(n))?;
        if kind == RangeKind::Git && repo.is_none() {
            return Err(self.error(node.loc, "a GIT range needs a `repo`"));
        }
        let events_node = f.get("events");
        let events = self.req(node, events_node, "events", |cx, n| {
            let items = cx.array(n, MAX_EVENTS)?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(cx.at(Seg::Index(i), |cx| cx.event(item))?);
            }
            if !out.iter().any(|e| matches!(e, Event::Introduced(_))) {
                return Err(cx.error(n.loc, "no `introduced` event"));
            }
            Ok(out)
        })?;
        Ok(Range {
            kind,
            repo,
            events,
            database_specific: self.specific(f.get("database_specific"), "database_specific")?,
        })
    }

    fn event(&mut self, node: &Node) -> Result<Event, OsvError> {
        let members = self.object(node)?;
        let [(key, value)] = members else {
            return Err(self.error(
                node.loc,
                format!(
                    "an event must have exactly one of introduced, fixed, last_affected, limit (has {} keys)",
                    members.len()
                ),
            ));
        };
        let (key, make): (&'static str, fn(String) -> Event) = match key.as_str() {
            "introduced" => ("introduced", Event::Introduced),
            "fixed" => ("fixed", Event::Fixed),
            "last_affected" => ("last_affected", Event::LastAffected),
            "limit" => ("limit", Event::Limit),
            other => {
                return Err(self.error(value.loc, format!("unknown event {}", preview(other))));
            }
        };
        self.at(Seg::Key(key), |cx| cx.non_empty(value).map(make))
    }
}

const TOP_FIELDS: &[&str] = &[
    "id",
    "schema_version",
    "modified",
    "published",
    "withdrawn",
    "aliases",
    "related",
    "upstream",
    "summary",
    "details",
    "severity",
    "affected",
    "references",
    "database_specific",
];

const AFFECTED_FIELDS: &[&str] = &[
    "package",
    "severity",
    "ranges",
    "versions",
    "ecosystem_specific",
    "database_specific",
];

/// The known members of one object, found in one pass over it.
struct Fields<'n> {
    names: &'static [&'static str],
    found: Vec<Option<&'n Node>>,
}

impl<'n> Fields<'n> {
    fn of(members: &'n Members, names: &'static [&'static str]) -> Fields<'n> {
        let mut found = vec![None; names.len()];
        for (k, v) in members {
            if let Some(i) = names.iter().position(|n| n == k) {
                found[i] = Some(v);
            }
        }
        Fields { names, found }
    }

    fn get(&self, name: &str) -> Option<&'n Node> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.found[i]
    }
}

/// Converts a tree node to a JSON value. YAML numbers that JSON cannot
/// hold (`.inf`, `.nan`) become strings.
fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Str(s) => J::String(s.clone()),
        Value::Number(t) => number_to_json(t),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Object(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

fn number_to_json(t: &str) -> serde_json::Value {
    use serde_json::{Number, Value as J};
    // JSON syntax: exactly as serde_json reads it (`-0` is a float there).
    if let Ok(n) = t.parse::<Number>() {
        return J::Number(n);
    }
    let (neg, unsigned) = match t.strip_prefix('-') {
        Some(u) => (true, u),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let radix = [("0x", 16), ("0o", 8)]
        .iter()
        .find_map(|&(p, r)| unsigned.strip_prefix(p).map(|d| (d, r)));
    if let Some((digits, radix)) = radix {
        if let Ok(v) = i64::from_str_radix(digits, radix) {
            return J::Number(Number::from(if neg { -v } else { v }));
        }
    } else if let Ok(v) = t.strip_prefix('+').unwrap_or(t).parse::<u64>() {
        return J::Number(Number::from(v));
    } else if let Ok(v) = t.parse::<i64>() {
        return J::Number(Number::from(v));
    } else if let Ok(v) = t.parse::<f64>()
        && let Some(n) = Number::from_f64(v)
    {
        return J::Number(n);
    }
    J::String(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    /// The OSV sample shipped with the repository (see its PROVENANCE.md).
    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/osv");

    fn read(rel: &str) -> Vec<u8> {
        std::fs::read(format!("{TESTDATA}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn json(rel: &str) -> Advisory {
        parse_json(&read(rel), rel).unwrap_or_else(|e| panic!("{e}"))
    }

    fn yaml(rel: &str) -> Advisory {
        parse_yaml(&read(rel), rel).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Parses `text` as JSON and returns the error's Display.
    fn json_err(text: &str) -> String {
        match parse_json(text.as_bytes(), "x.json") {
            Ok(a) => panic!("accepted: {a:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn yaml_err(text: &str) -> String {
        match parse_yaml(text.as_bytes(), "x.yaml") {
            Ok(a) => panic!("accepted: {a:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A minimal valid record, for edge cases to break.
    const MINIMAL: &str = r#"{
  "id": "OSV-1",
  "modified": "2024-01-01T00:00:00Z",
  "affected": [
    {
      "package": {"ecosystem": "PyPI", "name": "x"},
      "ranges": [
        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0"}]}
      ]
    }
  ]
}"#;

    #[test]
    fn aliases_of_known_advisories() {
        let ids = |a: &Advisory| a.all_ids().map(str::to_string).collect::<Vec<_>>();
        let cases: &[(Advisory, &[&str])] = &[
            (
                yaml("pypa/vulns/jinja2/PYSEC-2014-8.yaml"),
                &["PYSEC-2014-8", "CVE-2014-1402", "GHSA-8r7q-cvjq-x353"],
            ),
            (
                json("golang-vulndb/data/osv/GO-2021-0064.json"),
                &["GO-2021-0064", "CVE-2020-8565", "GHSA-8cfg-vx93-jvxw"],
            ),
            (
                json("rustsec/crates/RUSTSEC-2026-0009.json"),
                &["RUSTSEC-2026-0009", "CVE-2026-25727", "GHSA-r6v5-fh4h-64xc"],
            ),
            (
                json("ghsa/GHSA-mq26-g339-26xf.json"),
                &["GHSA-mq26-g339-26xf", "CVE-2023-5752"],
            ),
            (json("ubuntu/CVE-2023-4911.json"), &["CVE-2023-4911"]),
        ];
        for (a, want) in cases {
            assert_eq!(ids(a), *want);
        }
        // The PYSEC and GHSA records of the pip advisory do not name each
        // other: only the CVE links them.
        let pysec = yaml("pypa/vulns/pip/PYSEC-2023-228.yaml");
        let ghsa = json("ghsa/GHSA-mq26-g339-26xf.json");
        assert_eq!(pysec.aliases, ["CVE-2023-5752"]);
        assert_eq!(ghsa.aliases, ["CVE-2023-5752"]);
    }

    #[test]
    fn fields_of_real_records() {
        // PyPA YAML: an ECOSYSTEM range, a GIT range, enumerated versions.
        let a = yaml("pypa/vulns/jinja2/PYSEC-2014-8.yaml");
        assert_eq!(a.modified.to_string(), "2021-07-05T00:01:22.043149Z");
        assert_eq!(a.published.unwrap().to_string(), "2014-05-19T14:55:00Z");
        let aff = &a.affected[0];
        let p = aff.package.as_ref().unwrap();
        assert_eq!((&*p.ecosystem, &*p.name), ("PyPI", "jinja2"));
        assert_eq!(p.purl.as_deref(), Some("pkg:pypi/jinja2"));
        assert_eq!(
            aff.ranges[0].events,
            [Event::Introduced("0".into()), Event::Fixed("2.7.2".into())]
        );
        assert_eq!(aff.versions.len(), 19);
        assert_eq!(aff.versions[0], "2.0");
        assert_eq!(a.references.len(), 18);
        assert_eq!(a.references[0].kind, "WEB");
        let git = yaml("pypa/vulns/cryptography/PYSEC-2017-8.yaml");
        let r = &git.affected[0].ranges[0];
        assert_eq!(r.kind, RangeKind::Git);
        assert_eq!(
            r.repo.as_deref(),
            Some("https://github.com/pyca/cryptography")
        );
        assert_eq!(
            r.events[1],
            Event::Fixed("b924696b2e8731f39696584d12cceeb3aeb2d874".into())
        );
        assert_eq!(git.affected[0].ranges[1].kind, RangeKind::Ecosystem);

        // golang/vulndb: the repository's zero `modified`, Go's symbols kept.
        let go = json("golang-vulndb/data/osv/GO-2021-0064.json");
        assert_eq!(go.modified.unix_seconds, -62_135_596_800);
        assert_eq!(go.modified.to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(go.schema_version.as_deref(), Some("1.3.1"));
        let aff = &go.affected[0];
        assert_eq!(aff.ranges[0].kind, RangeKind::Semver);
        assert_eq!(
            aff.package_key(),
            Some(PackageKey {
                ecosystem: "Go".into(),
                name: "k8s.io/client-go".into()
            })
        );
        let imports = &aff.ecosystem_specific.as_ref().unwrap()["imports"][0];
        assert_eq!(imports["path"], "k8s.io/client-go/transport");
        assert_eq!(
            go.database_specific.as_ref().unwrap()["review_status"],
            "REVIEWED"
        );

        // Ubuntu: a suffixed ecosystem, binaries in ecosystem_specific.
        let u = json("ubuntu/CVE-2023-4911.json");
        assert_eq!(u.affected.len(), 2);
        assert_eq!(u.affected[0].osv_ecosystem(), Some("Ubuntu"));
        assert_eq!(u.affected[0].package_key().unwrap().name, "glibc");
        let bins = &u.affected[0].ecosystem_specific.as_ref().unwrap()["binaries"][0];
        assert_eq!(bins["libc6"], "2.35-0ubuntu3.4");
        assert_eq!(u.cvss_v3(), Some((7.8, "HIGH")));

        // RustSec: a withdrawn advisory.
        let w = json("rustsec/crates/RUSTSEC-2025-0007.json");
        assert!(w.is_withdrawn());
        assert_eq!(w.withdrawn.unwrap().to_string(), "2025-02-22T12:00:00Z");
    }

    #[test]
    fn ghsa_severity_and_cvss_scores() {
        let a = json("ghsa/GHSA-mq26-g339-26xf.json");
        assert_eq!(a.database_severity(), Some("MODERATE"));
        let (entry, _, _) = a.cvss_v3_entry().unwrap();
        assert_eq!(entry.score, "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:H/A:N");
        assert_eq!(a.severity[0].kind, "CVSS_V3");
        assert_eq!(a.cvss_v3(), Some((5.5, "MEDIUM")));
        // Every GHSA record: the CVSS v3 rating agrees with GHSA's own
        // (GHSA says MODERATE for MEDIUM).
        let mut scored = 0;
        for entry in std::fs::read_dir(format!("{TESTDATA}/ghsa")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let a = parse_json(&std::fs::read(&path).unwrap(), "ghsa").unwrap();
            let db = a.database_severity().expect("GHSA severity");
            let db = if db == "MODERATE" { "MEDIUM" } else { db };
            match a.cvss_v3() {
                Some((_, rating)) => {
                    assert_eq!(rating, db, "{}", a.id);
                    scored += 1;
                }
                None => assert!(
                    a.severity
                        .iter()
                        .all(|s| s.kind == "CVSS_V4" && cvss::is_v4_vector(&s.score)),
                    "{}",
                    a.id
                ),
            }
        }
        assert_eq!(scored, 8);
        // One record has both a v3.1 and a v4.0 vector; only v3 is scored.
        let v4 = json("ghsa/GHSA-78wr-2p64-hpwj.json");
        assert_eq!(v4.cvss_v3(), Some((7.5, "HIGH")));
        assert_eq!(v4.severity[1].kind, "CVSS_V4");
        assert!(v4.severity[1].cvss_v3().is_none());
        assert!(cvss::is_v4_vector(&v4.severity[1].score));
        // A RustSec record with a v3.0 vector.
        let r = json("rustsec/crates/RUSTSEC-2021-0003.json");
        assert_eq!(r.cvss_v3(), Some((9.8, "CRITICAL")));
    }

    #[test]
    fn pypa_yaml_and_derived_json_are_the_same_advisories() {
        // pypa-json-derived/ is PyYAML safe_load + json.dump of pypa/. The
        // one thing the derivation changes is the spelling of unquoted
        // timestamps (10 files: `2024-07-11T17:21:37.216928Z` became
        // `2024-07-11 17:21:37.216928+00:00`), which parse to the same
        // instant, so the advisories compare equal field for field.
        let root = format!("{TESTDATA}/pypa/vulns");
        let mut pairs = 0;
        let mut respelled = 0;
        for pkg in std::fs::read_dir(&root).unwrap() {
            for file in std::fs::read_dir(pkg.unwrap().path()).unwrap() {
                let y = file.unwrap().path();
                let rel = y.strip_prefix(format!("{TESTDATA}/pypa/")).unwrap();
                let j = Path::new(TESTDATA)
                    .join("pypa-json-derived")
                    .join(rel)
                    .with_extension("json");
                let from_yaml = parse_yaml(&std::fs::read(&y).unwrap(), "y").unwrap();
                let json_bytes = std::fs::read(&j).unwrap();
                let from_json = parse_json(&json_bytes, "j").unwrap();
                assert_eq!(from_yaml, from_json, "{}", y.display());
                if String::from_utf8_lossy(&json_bytes).contains("+00:00\"") {
                    respelled += 1;
                }
                pairs += 1;
            }
        }
        assert_eq!((pairs, respelled), (88, 10));
    }

    #[test]
    fn error_names_file_position_path_and_reason() {
        let text = MINIMAL.replace(
            r#""events": [{"introduced": "0"}, {"fixed": "1.0"}]"#,
            r#""events": {"introduced": "0"}"#,
        );
        assert_eq!(
            json_err(&text),
            "x.json:8:41: affected[0].ranges[0].events: expected an array, found an object"
        );
        let e = parse_json(text.as_bytes(), "advisories/x.json").unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.line, e.column, e.path.as_str()),
            ("advisories/x.json", 8, 41, "affected[0].ranges[0].events")
        );
        // Missing fields point at their object.
        assert_eq!(
            json_err(r#"{"modified": "2024-01-01T00:00:00Z"}"#),
            "x.json:1:1: missing required field `id`"
        );
        assert_eq!(
            json_err(&MINIMAL.replace(r#"{"introduced": "0"}, "#, "")),
            "x.json:8:41: affected[0].ranges[0].events: no `introduced` event"
        );
        assert_eq!(
            json_err(&MINIMAL.replace("\"0\"", "0")),
            "x.json:8:57: affected[0].ranges[0].events[0].introduced: expected a string, found a number"
        );
        assert!(
            json_err(&MINIMAL.replace("ECOSYSTEM", "RANGE")).ends_with(
                "affected[0].ranges[0].type: unknown range type \"RANGE\" (expected ECOSYSTEM, SEMVER or GIT)"
            )
        );
        assert!(
            json_err(&MINIMAL.replace("ECOSYSTEM", "GIT"))
                .ends_with("affected[0].ranges[0]: a GIT range needs a `repo`")
        );
        assert!(
            json_err(&MINIMAL.replace(r#"{"fixed": "1.0"}"#, r#"{"fixed": "1.0", "limit": "2"}"#))
                .contains("an event must have exactly one of")
        );
        assert!(
            json_err(&MINIMAL.replace(r#"{"fixed": "1.0"}"#, r#"{"fixd": "1.0"}"#))
                .ends_with("unknown event \"fixd\"")
        );
        assert!(
            json_err(&MINIMAL.replace("2024-01-01T00:00:00Z", "2024-01-01"))
                .ends_with("modified: not an RFC 3339 timestamp: \"2024-01-01\"")
        );
        assert!(
            json_err(&MINIMAL.replace(r#""name": "x""#, r#""name": """#))
                .ends_with("affected[0].package.name: must not be empty")
        );
        // The YAML path gives positions too.
        let y = "id: OSV-1\nmodified: 2024-01-01T00:00:00Z\naffected:\n- package: {ecosystem: PyPI, name: x}\n  ranges:\n  - type: ECOSYSTEM\n    events:\n      introduced: '0'\n";
        assert_eq!(
            yaml_err(y),
            "x.yaml:8:7: affected[0].ranges[0].events: expected an array, found an object"
        );
        // A file that is not an advisory.
        let e = parse_json(&read("pypa/_eval.json"), "pypa/_eval.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pypa/_eval.json:1:1: expected an OSV record (an object) at the top level, found an array"
        );
    }

    #[test]
    fn ids_are_validated() {
        let with_id = |id: &str| {
            let quoted = serde_json::to_string(id).unwrap();
            MINIMAL.replace("\"OSV-1\"", &quoted)
        };
        assert!(parse_json(with_id("GHSA-xxxx-yyyy-zzzz").as_bytes(), "x").is_ok());
        for bad in ["", "a/b", "..", ".", "a\\b", "a\u{1}b", "a b", "a\nb"] {
            let err = json_err(&with_id(bad));
            assert!(err.starts_with("x.json:2:9: id: "), "{bad:?}: {err}");
        }
        assert!(json_err(&with_id(&"A".repeat(129))).ends_with("id is 129 bytes, longer than 128"));
        assert!(parse_json(with_id(&"A".repeat(128)).as_bytes(), "x").is_ok());
        // Aliases are ids too.
        let text = MINIMAL.replace(
            "\"id\": \"OSV-1\",",
            "\"id\": \"OSV-1\", \"aliases\": [\"CVE-1\", \"../x\"],",
        );
        assert!(json_err(&text).contains("aliases[1]: invalid character '/'"));
        // Control characters in the file name are not echoed.
        let e = parse_json(b"[]", "a\u{1b}[31mb.json").unwrap_err();
        assert_eq!(e.file, "a?[31mb.json");
    }

    #[test]
    fn nulls_unknown_fields_and_duplicates() {
        let text = MINIMAL.replace(
            "\"id\": \"OSV-1\",",
            "\"id\": \"OSV-1\", \"aliases\": null, \"summary\": null, \"credits\": [{\"name\": \"x\"}], \"x-extra\": {\"deep\": [1, 2]},",
        );
        let a = parse_json(text.as_bytes(), "x").unwrap();
        assert!(a.aliases.is_empty() && a.summary.is_none());
        // Required fields may not be null.
        assert!(
            json_err(&MINIMAL.replace("\"OSV-1\"", "null"))
                .ends_with("id: expected a string, found null")
        );
        // Duplicate keys are refused, in both encodings.
        let dup = MINIMAL.replace(
            "\"id\": \"OSV-1\",",
            "\"id\": \"OSV-1\", \"id\": \"OSV-2\",",
        );
        assert_eq!(json_err(&dup), "x.json:2:24: duplicate key \"id\"");
        assert!(
            yaml_err("id: a\nid: b\nmodified: 2024-01-01T00:00:00Z\n")
                .contains(":2:1: duplicate key \"id\"")
        );
    }

    #[test]
    fn yaml_scalars_follow_the_core_schema() {
        let y = "id: OSV-1\nmodified: 2024-01-01 00:00:00Z\naffected:\n- package: {ecosystem: PyPI, name: yes}\n  ranges:\n  - type: ECOSYSTEM\n    events: [{introduced: 0}, {fixed: 1.10}, {last_affected: 0x1F}]\n  versions: [1.0, !!str 2, '3']\n  database_specific: {n: 0x1F, f: 1.5, inf: .inf, b: true, z: ~, s: on}\n";
        let a = parse_yaml(y.as_bytes(), "x").unwrap();
        let aff = &a.affected[0];
        assert_eq!(aff.package.as_ref().unwrap().name, "yes");
        assert_eq!(
            aff.ranges[0].events,
            [
                Event::Introduced("0".into()),
                Event::Fixed("1.10".into()),
                Event::LastAffected("0x1F".into())
            ]
        );
        assert_eq!(aff.versions, ["1.0", "2", "3"]);
        assert_eq!(
            aff.database_specific,
            Some(
                serde_json::json!({"n": 31, "f": 1.5, "inf": ".inf", "b": true, "z": null, "s": "on"})
            )
        );
        // Booleans and nulls are not strings.
        assert!(
            yaml_err(&y.replace("name: yes", "name: true"))
                .ends_with("affected[0].package.name: expected a string, found a boolean")
        );
        assert!(
            yaml_err(&y.replace("name: yes", "name: ~")).contains("expected a string, found null")
        );
        // One document only; scalar keys only; no tabs for indentation.
        assert!(yaml_err(&format!("{y}---\n{y}")).contains("more than one YAML document"));
        assert!(yaml_err("? [a, b]\n: c\n").contains("mapping keys must be scalars"));
        assert!(yaml_err("").contains("empty YAML document"));
        assert!(yaml_err("id: [unclosed\n").contains("invalid YAML"));
    }

    #[test]
    fn timestamps() {
        let t = |s: &str| Timestamp::parse(s);
        let a = t("2024-07-11T17:21:37.216928Z").unwrap();
        assert_eq!(t("2024-07-11 17:21:37.216928+00:00"), Some(a));
        assert_eq!(t("2024-07-11t19:21:37.216928000+02:00"), Some(a));
        assert_eq!(t("2024-07-11T12:51:37.216928-04:30"), Some(a));
        assert_eq!(a.to_string(), "2024-07-11T17:21:37.216928Z");
        assert_eq!(a.unix_seconds, 1_720_718_497);
        assert_eq!(t("1970-01-01T00:00:00Z").unwrap().unix_seconds, 0);
        assert_eq!(
            t("2000-02-29T00:00:00z").unwrap().to_string(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            t("2016-12-31T23:59:60Z").unwrap().to_string(),
            "2017-01-01T00:00:00Z"
        );
        assert_eq!(
            t("2024-01-01T00:00:00.1234567891Z").unwrap().nanos,
            123_456_789
        );
        assert!(t("2024-01-01T00:00:00Z") < t("2024-01-01T00:00:00.000000001Z"));
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00Zjunk",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00+24:00",
            "+024-01-01T00:00:00Z",
            "2024-01-01T00:00:00\u{e9}",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
        // Round trip over a wide span of days.
        // Years 1 to 9999, the range RFC 3339 can spell.
        for days in (-719_162i64..2_932_897).step_by(997) {
            let ts = Timestamp {
                unix_seconds: days * 86_400 + 3_723,
                nanos: 5,
            };
            assert_eq!(t(&ts.to_string()), Some(ts));
        }
    }

    #[test]
    fn package_keys() {
        assert_eq!(package_key("PyPI", "Flask_CORS"), "flask-cors");
        assert_eq!(package_key("PyPI", "zope.interface"), "zope-interface");
        // Regression: this kept the case while the store lowercased, two
        // definitions of one key.
        assert_eq!(
            package_key("Go", "github.com/BurntSushi/toml"),
            crate::store::package_key("golang", "github.com/BurntSushi/toml")
        );
        assert_eq!(package_key("crates.io", "Serde"), "serde");
        assert_eq!(
            package_key("Maven", "com.google.guava:Guava"),
            "com.google.guava:guava"
        );
        assert_eq!(package_key("Debian:12", "OpenSSL"), "openssl");
        assert_eq!(
            osv_ecosystem("Red Hat:enterprise_linux:9::appstream"),
            "Red Hat"
        );
        assert_eq!(osv_ecosystem("npm"), "npm");
    }

    #[test]
    fn json_syntax_errors_have_positions() {
        let cases = [
            ("", "x.json:1:1: unexpected end of input, expected a value"),
            ("{", "x.json:1:2: expected a string key, found end of input"),
            (
                "{\"id\": \"a\"",
                "x.json:1:11: expected ',' or '}' in object, found end of input",
            ),
            ("{\"id\": \"a", "x.json:1:8: unterminated string"),
            ("[1,]", "x.json:1:4: expected a value, found ']'"),
            (
                "{\"a\":1}x",
                "x.json:1:8: trailing characters after the document",
            ),
            (
                "{\"a\": 01}",
                "x.json:1:8: expected ',' or '}' in object, found '1'",
            ),
            (
                "{\"a\": 1.}",
                "x.json:1:9: invalid number: expected a digit after '.'",
            ),
            ("{\"a\": \"\\x\"}", "x.json:1:8: invalid escape"),
            (
                "{\"a\": \"\\ud800\"}",
                "x.json:1:8: lone leading surrogate in \\u escape",
            ),
            ("{\"a\": \"\t\"}", "x.json:1:8: control character in string"),
            (
                "{\n  \"é\": tru}",
                "x.json:2:8: expected a value, found 't'",
            ),
            (
                "\u{feff}[]",
                "x.json:1:2: expected an OSV record (an object) at the top level, found an array",
            ),
        ];
        for (text, want) in cases {
            let got = match parse_json(text.as_bytes(), "x.json") {
                Ok(_) => "accepted".to_string(),
                Err(e) => e.to_string(),
            };
            assert_eq!(got, want, "{text:?}");
        }
        // Escapes decode.
        let a = parse_json(
            MINIMAL
                .replace("\"x\"", r#""a\u00e9\ud83d\ude00\n\/""#)
                .as_bytes(),
            "x",
        )
        .unwrap();
        assert_eq!(a.affected[0].package.as_ref().unwrap().name, "aé😀\n/");
    }

    #[test]
    fn truncated_real_files_fail_cleanly() {
        for rel in [
            "ghsa/GHSA-c2qf-rxjj-qqgw.json",
            "pypa/vulns/pip/PYSEC-2023-228.yaml",
        ] {
            let bytes = read(rel);
            let is_yaml = rel.ends_with(".yaml");
            let mut accepted = 0;
            for cut in 0..bytes.len() {
                let r = if is_yaml {
                    parse_yaml(&bytes[..cut], rel)
                } else {
                    parse_json(&bytes[..cut], rel)
                };
                match r {
                    Ok(_) => accepted += 1,
                    Err(e) => {
                        assert_eq!(e.file, rel);
                        assert!(e.line >= 1 && e.column >= 1 && !e.reason.is_empty());
                    }
                }
            }
            // JSON is never complete before its last brace; a YAML prefix
            // that ends between entries is a valid, shorter record.
            if is_yaml {
                assert!(accepted > 0);
            } else {
                assert_eq!(accepted, 0);
            }
        }
        let e = parse_json(&read("ghsa/GHSA-c2qf-rxjj-qqgw.json")[..200], "t.json").unwrap_err();
        assert_eq!(e.line, 9);
        assert!(e.reason.contains("unterminated string"), "{e}");
    }

    #[test]
    fn hostile_inputs_are_refused_quickly() {
        let t0 = crate::fuzz::CpuTimer::start();
        // 64 MiB: refused by size, positioned where the limit was crossed.
        let mut big = MINIMAL.as_bytes().to_vec();
        big.resize(64 << 20, b' ');
        let e = parse_json(&big, "big.json").unwrap_err();
        assert!(
            e.reason.contains("larger than the 16777216-byte limit"),
            "{e}"
        );
        let last_line_start = MINIMAL.rfind('\n').unwrap() + 1;
        assert_eq!(
            (e.line as usize, e.column as usize),
            (
                MINIMAL.lines().count(),
                MAX_FILE_BYTES - last_line_start + 1
            )
        );
        // A million aliases: the container limit stops the tree at 65536.
        let mut many = String::from("{\"id\": \"A\", \"aliases\": [");
        for i in 0..1_000_000 {
            many.push_str(if i == 0 { "\"C\"" } else { ",\"C\"" });
        }
        many.push_str("]}");
        let e = parse_json(many.as_bytes(), "many.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            "many.json:1:262169: array has more than 65536 elements"
        );
        // Under the container limit, the field's own cap applies.
        let aliases = vec!["\"C\""; 2000].join(",");
        let text = MINIMAL.replace(
            "\"id\": \"OSV-1\",",
            &format!("\"id\": \"OSV-1\", \"aliases\": [{aliases}],"),
        );
        assert!(json_err(&text).contains("aliases: more than 1024 entries (has 2000)"));
        // A million values spread over small arrays: the node budget.
        let chunk = format!("[{}]", vec!["0"; 1000].join(","));
        let spread = format!(
            "{{\"id\": \"A\", \"database_specific\": [{}]}}",
            vec![chunk.as_str(); 1100].join(",")
        );
        let e = parse_json(spread.as_bytes(), "spread.json").unwrap_err();
        assert!(e.reason.contains("more than 1000000 values"), "{e}");
        // Deep nesting, in JSON and in both YAML styles.
        let deep = "[".repeat(100_000);
        assert_eq!(
            json_err(&deep),
            "x.json:1:65: nested more than 64 levels deep"
        );
        assert!(
            yaml_err(&deep).contains("nested more than 64 levels deep")
                || yaml_err(&deep).contains("recursion limit")
        );
        let block: String = (0..200)
            .map(|i| format!("{}- \n", "  ".repeat(i)))
            .collect();
        assert!(yaml_err(&block).contains("nested more than 64 levels deep"));
        let dashes = "- ".repeat(1 << 20);
        assert!(yaml_err(&dashes).contains("nested more than 64 levels deep"));
        // Non-UTF-8, positioned at the bad byte.
        let mut bad = MINIMAL.as_bytes().to_vec();
        bad[MINIMAL.find("OSV-1").unwrap()] = 0xff;
        assert_eq!(
            parse_json(&bad, "bad.json").unwrap_err().to_string(),
            "bad.json:2:10: invalid UTF-8 (byte 0xff)"
        );
        assert!(
            parse_yaml(&bad, "bad.yaml")
                .unwrap_err()
                .to_string()
                .starts_with("bad.yaml:2:10: invalid UTF-8")
        );
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    }

    #[test]
    fn yaml_alias_bombs_are_refused() {
        // Billion laughs: 9 levels of 10 aliases = 10^9 nodes if expanded.
        let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let t0 = crate::fuzz::CpuTimer::start();
        let e = yaml_err(&bomb);
        assert!(e.contains("document has more than 1000000 values"), "{e}");
        assert!(e.starts_with("x.yaml:6:"), "{e}");
        // A big string aliased many times: the byte budget.
        let s = "x".repeat(1 << 20);
        let mut strings = format!("s: &s {s}\nl: [");
        strings.push_str(&vec!["*s"; 100].join(", "));
        strings.push_str("]\n");
        let e = yaml_err(&strings);
        assert!(e.contains("expands to more than 67108864 bytes"), "{e}");
        // A recursive alias.
        assert!(yaml_err("a: &a [1, *a]\n").contains("recursive alias"));
        assert!(yaml_err("a: *nope\n").contains("invalid YAML"));
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        // Aliases within budget are expanded.
        let ok = "id: &i OSV-1\naliases: [*i]\nmodified: 2024-01-01T00:00:00Z\n";
        assert_eq!(parse_yaml(ok.as_bytes(), "x").unwrap().aliases, ["OSV-1"]);
    }

    use crate::fuzz::Rng;
    fn mutate(rng: &mut Rng, fixture: &[u8]) -> Vec<u8> {
        crate::fuzz::mutate(rng, fixture, ALPHABET)
    }

    /// Bytes that mean something to JSON or YAML.
    const ALPHABET: &[u8] = b"{}[]:,\"'\\ \n\t-&*!|>#0123456789.eEuU~nulltruefalse\xff\xc3";

    /// Checks one JSON input against serde_json: whatever this parser
    /// accepts, serde_json accepts with the same value, except numbers too
    /// large for an f64. (This parser refuses more: duplicate keys and its
    /// limits.)
    fn differential(input: &[u8]) {
        let ours = std::str::from_utf8(input).ok().map(tree::parse_json);
        let theirs = serde_json::from_slice::<serde_json::Value>(input);
        match (ours, theirs) {
            (Some(Ok(node)), Ok(v)) => {
                assert_eq!(to_json(&node), v, "{:?}", String::from_utf8_lossy(input))
            }
            // serde_json refuses numbers beyond f64 (1e400); they are valid
            // JSON and are kept here as text.
            (Some(Ok(_)), Err(e)) if e.to_string().starts_with("number out of range") => {}
            (Some(Ok(_)), Err(e)) => panic!(
                "accepted what serde_json refuses ({e}): {:?}",
                String::from_utf8_lossy(input)
            ),
            _ => {}
        }
    }

    #[test]
    fn fuzz_no_panics_and_bounded_output() {
        let fixtures: Vec<(Vec<u8>, bool)> = [
            "ghsa/GHSA-c2qf-rxjj-qqgw.json",
            "golang-vulndb/data/osv/GO-2021-0064.json",
            "rustsec/crates/RUSTSEC-2026-0009.json",
            "ubuntu/CVE-2023-4911.json",
            "pypa/vulns/pip/PYSEC-2023-228.yaml",
            "pypa/vulns/jinja2/PYSEC-2014-8.yaml",
        ]
        .iter()
        .map(|rel| (read(rel), rel.ends_with(".yaml")))
        .chain([(MINIMAL.as_bytes().to_vec(), false)])
        .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut ok = 0;
        for i in 0..6000 {
            let (input, is_yaml) = if i % 5 == 0 {
                let len = rng.below(300);
                let bytes = (0..len)
                    .map(|_| {
                        if rng.below(4) == 0 {
                            rng.next() as u8
                        } else {
                            ALPHABET[rng.below(ALPHABET.len())]
                        }
                    })
                    .collect();
                (bytes, rng.below(2) == 0)
            } else {
                let (f, y) = &fixtures[rng.below(fixtures.len())];
                (mutate(&mut rng, f), *y)
            };
            // Feed every input to both parsers, whatever it looks like.
            for yaml_first in [is_yaml, !is_yaml] {
                let r = if yaml_first {
                    parse_yaml(&input, "f")
                } else {
                    parse_json(&input, "f")
                };
                match r {
                    Ok(a) => {
                        ok += 1;
                        assert!(a.affected.len() <= MAX_AFFECTED && a.aliases.len() <= MAX_ALIASES);
                        assert!(!a.id.is_empty() && a.id.len() <= MAX_ID_LEN);
                        for aff in &a.affected {
                            for r in &aff.ranges {
                                assert!(r.events.iter().any(|e| matches!(e, Event::Introduced(_))));
                            }
                        }
                    }
                    Err(e) => assert!(e.line >= 1 && e.column >= 1 && !e.reason.is_empty()),
                }
            }
            differential(&input);
        }
        // The mutations leave many records valid; the test would prove
        // little if none were.
        assert!(ok > 300, "{ok}");
    }

    #[test]
    fn json_parser_agrees_with_serde_json() {
        for text in [
            "0",
            "-0",
            "1e400",
            "-1e-400",
            "123456789012345678901234567890",
            "18446744073709551615",
            "-9223372036854775808",
            "1.5E+3",
            "[1, 2.0, -3]",
            "\"\\u0000\"",
            "{\"a\": {\"b\": [true, false, null]}}",
            "  [ ]  ",
            "{}",
            "\"\u{10FFFF}\"",
            "[\"\\uDBFF\\uDFFF\"]",
            "1 2",
            "[01]",
            "[-]",
            "[.5]",
            "nul",
            "[\"\\u12\"]",
            "{\"a\" 1}",
            "{,}",
            "[1,,2]",
            "\"\\uD800\\u0041\"",
        ] {
            differential(text.as_bytes());
        }
    }
}
