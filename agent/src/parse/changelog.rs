//! Debian package changelogs (`/usr/share/doc/<pkg>/changelog.Debian.gz`):
//! a gzip reader, and a parser that reports which CVE ids each changelog
//! entry says it fixed.
//!
//! Debian backports security fixes without changing the upstream version,
//! so an advisory that matches upstream `cryptography 38.0.4` may already be
//! fixed in Debian's `python3-cryptography 38.0.4-3+deb12u1`. The changelog
//! the package installs is the record of those backports: the collector uses
//! [`fixed_by`] to call such a finding fixed by the distribution.
//!
//! # Gzip
//!
//! [`gunzip`] reads the gzip framing (RFC 1952) by hand and leaves only the
//! raw deflate stream to `miniz_oxide`. Each member is a 10-byte header
//! (magic `1f 8b`, method 8, flags, mtime, extra flags, OS), optional fields
//! selected by the flags (`FEXTRA`: a length-prefixed blob, `FNAME` and
//! `FCOMMENT`: NUL-terminated strings, `FHCRC`: the low 16 bits of the
//! CRC-32 of the header), the deflate data, and an 8-byte trailer holding
//! the CRC-32 and the length modulo 2^32 of the member's output. Both are
//! checked. Several members may follow one another and their outputs are
//! concatenated, as `gzip -d` does. Output stops at a caller-given cap
//! ([`MAX_CHANGELOG_LEN`] is the one meant for changelogs), so a bomb costs
//! at most that much memory and the time to produce it.
//!
//! # Changelog format
//!
//! deb-changelog(5): the file is a sequence of entries, newest first.
//!
//! ```text
//! python-cryptography (38.0.4-3+deb12u1) bookworm; urgency=medium
//!
//!   * Non-maintainer upload.
//!   * CVE-2023-49083: NULL dereference when loading PKCS7 certificates
//!     (Closes: #1057108)
//!   * CVE-2024-26130: NULL dereference when PKCS#12 key and cert don't match
//!     (Closes: #1064778)
//!
//!  -- Adrian Bunk <bunk@debian.org>  Wed, 16 Oct 2024 19:53:04 +0300
//!
//! python-cryptography (38.0.4-3) unstable; urgency=medium
//!
//!   [ Salvatore Bonaccorso ]
//!   * Don't allow update_into to mutate immutable objects (CVE-2023-23931)
//!     (Closes: #1031049)
//!
//!  -- Sandro Tosi <morph@debian.org>  Tue, 28 Feb 2023 00:36:13 -0500
//! ```
//!
//! (Installed `38.0.4-3+deb12u1` therefore fixes CVE-2023-23931 too: the
//! fix came in `38.0.4-3`, before bookworm was released.)
//!
//! An entry starts with a heading at column 0, `source (version)
//! distribution...; key=value, ...`; its body lines are indented; its
//! trailer starts with ` -- `. The heading is matched as dpkg's
//! `Dpkg::Changelog::Entry::Debian` matches it. CVE ids are collected from
//! the body lines only (never from headings or trailers), case-insensitively,
//! upper-cased, once per entry, in order of first mention.
//!
//! Real changelogs, some of them thirty years old, hold more than entries.
//! What this parser does with each kind of line, and how dpkg's parser
//! differs:
//!
//! * Blank lines are ignored everywhere.
//! * `# ` comment lines (debhelper writes `# Older entries have been removed
//!   from this changelog.` when it trims a changelog), `/* ... */` comments
//!   and RCS keyword lines (`$Id: ... $`) are ignored, as dpkg ignores them.
//! * An editor footer (`Local variables:`, `;; Local variables:`, `vim:`)
//!   ends the changelog, as it does for dpkg: the rest is not read.
//! * Any other line at column 0 that is not a heading is skipped and counted
//!   as malformed, and it closes the current entry: the indented lines after
//!   it belong to no entry until the next heading. This covers old-format
//!   sections (`Old Changelog:`, `Changes for bc-1.03-10:`, GNU-style
//!   `Thu Jul 18 01:30:22 MDT 1996  Name  <mail>` headings). dpkg stops
//!   reading at the first such section; this parser goes on and reads the
//!   well-formed entries that some of those sections still contain (make's
//!   changelog has 28 after its `Old Changelog:` line).
//! * A line starting with ` --` is a trailer and closes the current entry.
//! * Any other line starting with a space or tab is a body line of the
//!   current entry (dpkg wants at least two blanks and reports other
//!   indented lines as unrecognized; their CVE ids are kept here).
//!   A body line or trailer with no open entry, such as the body of an
//!   old-format section, is skipped and counted as malformed.
//! * Lines are split on `\n`; a trailing `\r` and a leading UTF-8 byte-order
//!   mark are dropped. Bytes need not be UTF-8 (maintainer names in old
//!   trailers are often Latin-1): headings must be ASCII, body lines are
//!   searched as bytes.
//!
//! An entry with no trailer is still returned. An entry whose heading lacks
//! a valid `urgency=` option is returned with an empty urgency.

use std::collections::{BTreeMap, HashSet};

use super::zip::crc32;
use super::{ParseError, lines, malformed, preview};

/// The output cap meant for [`gunzip`] on a changelog. The largest one on a
/// Debian 12 system is the kernel's, at about 3.7 MB.
pub const MAX_CHANGELOG_LEN: usize = 16 << 20;

/// The most gzip members [`gunzip`] reads from one input. Real files have
/// one; the cap bounds the work an input of millions of empty members costs.
pub const MAX_GZIP_MEMBERS: usize = 1024;

/// The most entries [`parse_changelog`] returns. The kernel's changelog has
/// about 200 entries and binutils' about 700.
pub const MAX_ENTRIES: usize = 65_536;

/// The most CVE ids [`parse_changelog`] keeps across all entries of one
/// file (after removing repeats within an entry). The kernel's changelog
/// has about 4,600 mentions, 1,262 of them in a single entry.
pub const MAX_CVES: usize = 131_072;

/// The longest source name, version, distribution list or urgency accepted
/// in a heading, in bytes. A heading with a longer name, version or
/// distribution list is malformed; a longer urgency is dropped.
pub const MAX_FIELD_LEN: usize = 256;

/// The most digits accepted in the sequence number of a CVE id
/// (`CVE-2019-1010204` has seven). Longer digit runs are not CVE ids.
pub const MAX_CVE_DIGITS: usize = 12;

/// What gzip errors are reported as.
const GZIP: &str = "gzip";

/// gzip header flags (RFC 1952, section 2.3.1).
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
/// Flag bits that RFC 1952 reserves; a reader must reject them.
const FRESERVED: u8 = 0xe0;

/// One changelog entry: its heading and the CVE ids its body mentions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// Source package name from the heading, e.g. `python-cryptography`.
    pub source: String,
    /// Version from the heading, epoch included, e.g. `38.0.4-3+deb12u1`.
    pub version: String,
    /// Target distributions from the heading, separated by single spaces,
    /// e.g. `bookworm-security`.
    pub distribution: String,
    /// The urgency's keyword in lower case, e.g. `medium` (a trailing
    /// comment such as `high (security fixes)` is dropped), or empty when
    /// the heading has no valid `urgency=`.
    pub urgency: String,
    /// The CVE ids the body mentions, upper case (`CVE-2023-23931`), each
    /// once, in order of first mention.
    pub cves: Vec<String>,
}

/// Decompresses a gzip file, producing at most `max_out` bytes in all.
///
/// Every member's header flags must be valid, its header CRC (when
/// present), CRC-32 and length must match, and its deflate data must end
/// before the input does. Members that follow one another are decompressed
/// in turn and concatenated (at most [`MAX_GZIP_MEMBERS`]). Bytes after a
/// member that do not start with the gzip magic are ignored, as `gzip -d`
/// ignores trailing zeros (it warns about other trailing bytes).
///
/// Fails on an empty input, on anything that is not gzip, on a truncated
/// or damaged member, and as soon as the output would exceed `max_out`.
pub fn gunzip(bytes: &[u8], max_out: usize) -> Result<Vec<u8>, ParseError> {
    use miniz_oxide::inflate::core::DecompressorOxide;

    let mut out = Vec::new();
    // The decompressor holds its Huffman tables (about 10 KiB): box it once
    // and reset it for each member.
    let mut inflater = Box::<DecompressorOxide>::default();
    let mut rest = bytes;
    let mut members = 0;
    loop {
        let header_len = member_header_len(rest)?;
        let deflate = rest.get(header_len..).unwrap_or_default();
        let start = out.len();
        let used = inflate_member(&mut inflater, deflate, &mut out, max_out)?;
        let after = deflate.get(used..).unwrap_or_default();
        let Some((trailer, next)) = after.split_first_chunk::<8>() else {
            return Err(malformed(GZIP, "truncated trailer"));
        };
        let data = out.get(start..).unwrap_or_default();
        let [c0, c1, c2, c3, s0, s1, s2, s3] = *trailer;
        if crc32(data) != u32::from_le_bytes([c0, c1, c2, c3]) {
            return Err(malformed(GZIP, "crc32 mismatch"));
        }
        // ISIZE is the length modulo 2^32: the truncation is the format's.
        if data.len() as u32 != u32::from_le_bytes([s0, s1, s2, s3]) {
            return Err(malformed(GZIP, "length mismatch"));
        }
        members += 1;
        rest = next;
        if !rest.starts_with(&[0x1f, 0x8b]) {
            return Ok(out);
        }
        if members >= MAX_GZIP_MEMBERS {
            return Err(malformed(
                GZIP,
                format!("more than {MAX_GZIP_MEMBERS} members"),
            ));
        }
    }
}

/// Checks the header of the gzip member at the start of `bytes` and returns
/// its length, optional fields included.
fn member_header_len(bytes: &[u8]) -> Result<usize, ParseError> {
    let Some(fixed) = bytes.first_chunk::<10>() else {
        return Err(malformed(GZIP, "truncated header"));
    };
    if fixed[..2] != [0x1f, 0x8b] {
        return Err(malformed(
            GZIP,
            format!("bad magic {}", preview(&fixed[..2])),
        ));
    }
    if fixed[2] != 8 {
        return Err(malformed(
            GZIP,
            format!("unsupported compression method {}", fixed[2]),
        ));
    }
    let flags = fixed[3];
    if flags & FRESERVED != 0 {
        return Err(malformed(GZIP, format!("reserved flags {flags:#04x}")));
    }
    let mut pos = 10;
    if flags & FEXTRA != 0 {
        let xlen = le16(bytes, pos).ok_or_else(|| malformed(GZIP, "truncated extra field"))?;
        pos += 2 + usize::from(xlen);
        if pos > bytes.len() {
            return Err(malformed(GZIP, "truncated extra field"));
        }
    }
    for (flag, what) in [
        (FNAME, "truncated file name"),
        (FCOMMENT, "truncated comment"),
    ] {
        if flags & flag != 0 {
            let field = bytes.get(pos..).unwrap_or_default();
            let nul = field
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| malformed(GZIP, what))?;
            pos += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        let stored = le16(bytes, pos).ok_or_else(|| malformed(GZIP, "truncated header crc"))?;
        let covered = bytes.get(..pos).unwrap_or_default();
        if crc32(covered) as u16 != stored {
            return Err(malformed(GZIP, "header crc mismatch"));
        }
        pos += 2;
    }
    Ok(pos)
}

/// The little-endian `u16` at `pos`, if the input is long enough.
fn le16(bytes: &[u8], pos: usize) -> Option<u16> {
    let pair = bytes.get(pos..)?.first_chunk::<2>()?;
    Some(u16::from_le_bytes(*pair))
}

/// Inflates the raw deflate stream at the start of `input`, appending its
/// output to `out` without letting `out` grow past `max_out`. Returns how
/// many input bytes the stream took, so the caller can find the trailer.
fn inflate_member(
    inflater: &mut miniz_oxide::inflate::core::DecompressorOxide,
    input: &[u8],
    out: &mut Vec<u8>,
    max_out: usize,
) -> Result<usize, ParseError> {
    use miniz_oxide::inflate::TINFLStatus;
    use miniz_oxide::inflate::core::decompress;
    use miniz_oxide::inflate::core::inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;

    inflater.init();
    // This member's output is the tail of `out` from `start`. The flag tells
    // miniz that this slice is the whole output so far (not a ring buffer),
    // so back-references can reach anywhere in it; `filled` is how much of
    // it holds output, the rest being zeros not yet written.
    let start = out.len();
    let mut filled = start;
    let mut used = 0;
    // Changelogs compress about 3:1; start there and double when needed.
    grow(
        out,
        start.saturating_add(input.len().saturating_mul(4)),
        max_out,
    );
    loop {
        let pending = input.get(used..).unwrap_or_default();
        let window = out.get_mut(start..).unwrap_or_default();
        let (status, took, wrote) = decompress(
            inflater,
            pending,
            window,
            filled - start,
            TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
        );
        used += took;
        filled += wrote;
        match status {
            TINFLStatus::Done => {
                out.truncate(filled);
                return Ok(used);
            }
            TINFLStatus::HasMoreOutput => {
                if out.len() >= max_out {
                    return Err(malformed(
                        GZIP,
                        format!("inflates to more than {max_out} bytes"),
                    ));
                }
                let doubled = out
                    .len()
                    .saturating_mul(2)
                    .max(start.saturating_add(64 * 1024));
                grow(out, doubled, max_out);
            }
            TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
                return Err(malformed(GZIP, "truncated deflate data"));
            }
            other => return Err(malformed(GZIP, format!("bad deflate data ({other:?})"))),
        }
    }
}

/// Zero-extends `out` to `want` bytes, but never past `max_out`.
fn grow(out: &mut Vec<u8>, want: usize, max_out: usize) {
    let len = want.min(max_out);
    if len > out.len() {
        out.resize(len, 0);
    }
}

/// Parses a Debian changelog (see the module docs for the format and what
/// happens to each kind of line). Returns the entries in file order (newest
/// first) and the number of malformed things skipped: non-blank lines that
/// belong to no entry and are not comments, plus headings over
/// [`MAX_ENTRIES`] and CVE mentions over [`MAX_CVES`]. Never fails.
pub fn parse_changelog(text: &[u8]) -> (Vec<Entry>, u32) {
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    let mut parser = Parser::default();
    for line in lines(text) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !parser.line(line) {
            break;
        }
    }
    (parser.entries, parser.malformed)
}

/// The state of [`parse_changelog`].
#[derive(Default)]
struct Parser {
    entries: Vec<Entry>,
    /// Whether body lines go to the last entry: a heading was read, and no
    /// trailer or unparseable line since.
    open: bool,
    /// The CVE ids of the last entry, to drop repeats in constant time.
    seen: HashSet<String>,
    /// CVE ids kept so far, over all entries.
    cves: usize,
    malformed: u32,
}

impl Parser {
    /// Handles one line. Returns false at an editor footer, which ends the
    /// changelog.
    fn line(&mut self, line: &[u8]) -> bool {
        if line.trim_ascii().is_empty() {
            return true;
        }
        match line.first() {
            Some(b' ' | b'\t') => {
                if line.starts_with(b" --") {
                    if !self.open {
                        self.skip();
                    }
                    self.open = false;
                } else if self.open {
                    self.body(line);
                } else {
                    self.skip();
                }
            }
            _ => {
                if let Some(entry) = parse_heading(line) {
                    if self.entries.len() < MAX_ENTRIES {
                        self.entries.push(entry);
                        // A fresh set rather than clear(), which costs the
                        // old capacity: one huge entry would make every
                        // later heading slow.
                        self.seen = HashSet::new();
                        self.open = true;
                    } else {
                        self.skip();
                        self.open = false;
                    }
                } else if is_footer(line) {
                    return false;
                } else if !is_comment(line) {
                    self.skip();
                    self.open = false;
                }
            }
        }
        true
    }

    /// Counts one skipped thing.
    fn skip(&mut self) {
        self.malformed = self.malformed.saturating_add(1);
    }

    /// Adds the CVE ids of a body line to the last entry.
    fn body(&mut self, line: &[u8]) {
        let mut at = 0;
        while let Some((cve, end)) = next_cve(line, at) {
            at = end;
            if self.seen.contains(&cve) {
                continue;
            }
            if self.cves >= MAX_CVES {
                self.skip();
                continue;
            }
            let Some(entry) = self.entries.last_mut() else {
                return;
            };
            self.cves += 1;
            self.seen.insert(cve.clone());
            entry.cves.push(cve);
        }
    }
}

/// Whether a line at column 0 is an editor footer, which dpkg takes as the
/// end of the changelog: `Local variables:` (Emacs, possibly after `;;`) or
/// `vim:`, in any case.
fn is_footer(line: &[u8]) -> bool {
    let emacs = match line.strip_prefix(b";;") {
        Some(rest) => rest.trim_ascii_start(),
        None => line,
    };
    starts_with_ignore_case(emacs, b"local variables:") || starts_with_ignore_case(line, b"vim:")
}

/// Whether a line at column 0 is one of the comments dpkg ignores: `# `
/// lines, `/* ... */` lines and RCS keywords (`$Id: ... $`).
fn is_comment(line: &[u8]) -> bool {
    if line.starts_with(b"# ") {
        return true;
    }
    if let Some(rest) = line.strip_prefix(b"/*") {
        return rest.windows(2).any(|w| w == b"*/");
    }
    if let Some(rest) = line.strip_prefix(b"$") {
        let word = rest
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_')
            .count();
        return word > 0
            && rest.get(word) == Some(&b':')
            && rest.get(word + 1..).is_some_and(|r| r.contains(&b'$'));
    }
    false
}

/// Whether `line` starts with `prefix`, ignoring ASCII case.
fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// The characters of package and distribution names in a heading, as dpkg
/// matches them (case-insensitively): `[-+0-9a-z.]`.
fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}

/// Parses an entry heading, `source (version) dist...; key=value, ...`,
/// following dpkg's regular expression:
///
/// ```text
/// ^(\w[-+0-9a-z.]*) \(([^\(\) \t]+)\)((?:\s+[-+0-9a-z.]+)+)\;(.*?)\s*$
/// ```
///
/// and additionally requiring the version to be printable ASCII and each
/// field to fit in [`MAX_FIELD_LEN`]. The returned entry has no CVE ids.
fn parse_heading(line: &[u8]) -> Option<Entry> {
    // The name cannot contain '(' or ' ', so the first " (" ends it.
    let open = line.iter().position(|&b| b == b'(')?;
    let source = line.get(..open)?.strip_suffix(b" ")?;
    let (&first, rest) = source.split_first()?;
    if !(first.is_ascii_alphanumeric() || first == b'_') || !rest.iter().all(|&b| is_name_char(b)) {
        return None;
    }
    let after_open = line.get(open + 1..)?;
    let close = after_open
        .iter()
        .position(|&b| matches!(b, b'(' | b')' | b' ' | b'\t'))?;
    if after_open.get(close) != Some(&b')') {
        return None;
    }
    let version = after_open.get(..close)?;
    if version.is_empty() || !version.iter().all(|&b| b.is_ascii_graphic()) {
        return None;
    }
    // Distributions: one or more runs of blanks each followed by a name,
    // the last one directly before the ';'.
    let after_close = after_open.get(close + 1..)?;
    let semi = after_close.iter().position(|&b| b == b';')?;
    let dists = after_close.get(..semi)?;
    if !dists.first().is_some_and(|&b| is_blank(b))
        || !dists.last().is_some_and(|&b| is_name_char(b))
        || !dists.iter().all(|&b| is_blank(b) || is_name_char(b))
    {
        return None;
    }
    let distribution = dists
        .split(|&b| is_blank(b))
        .filter(|d| !d.is_empty())
        .map(ascii)
        .collect::<Vec<_>>()
        .join(" ");
    if source.len() > MAX_FIELD_LEN
        || version.len() > MAX_FIELD_LEN
        || distribution.len() > MAX_FIELD_LEN
    {
        return None;
    }
    let options = after_close.get(semi + 1..)?;
    Some(Entry {
        source: ascii(source),
        version: ascii(version),
        distribution,
        urgency: urgency(options),
        cves: Vec::new(),
    })
}

/// The blanks that separate distributions (Perl's `\s`, minus the line
/// ends that cannot occur inside a line).
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\x0b' | b'\x0c')
}

/// Converts bytes already checked to be ASCII into a `String`.
fn ascii(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The urgency keyword from a heading's options (`urgency=medium`,
/// `urgency=high (security fixes), binary-only=yes`), in lower case, or
/// empty. As in dpkg, options are split on commas, keys are
/// case-insensitive, and the value must start with a word of `[-0-9a-z]`;
/// only that word is kept.
fn urgency(options: &[u8]) -> String {
    for option in options.split(|&b| b == b',') {
        let option = option.trim_ascii();
        let Some(eq) = option.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&option[..eq], &option[eq + 1..]);
        if !key.eq_ignore_ascii_case(b"urgency") {
            continue;
        }
        let value = value.trim_ascii_start();
        let word_len = value
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'-')
            .count();
        let word = &value[..word_len];
        let ends_well = value.get(word_len).is_none_or(|&b| b.is_ascii_whitespace());
        if word.is_empty() || !ends_well || word.len() > MAX_FIELD_LEN {
            return String::new();
        }
        return ascii(word).to_ascii_lowercase();
    }
    String::new()
}

/// Finds the next CVE id in `line` at or after byte `from`: `cve-`
/// (any case), four digits, `-`, then 4 to [`MAX_CVE_DIGITS`] digits not
/// followed by another digit. Returns the id in upper case and the offset
/// just past it. Whatever precedes `cve-` does not matter, so patch names
/// such as `01_CVE-2016-4425.patch` count.
fn next_cve(line: &[u8], from: usize) -> Option<(String, usize)> {
    let mut at = from;
    loop {
        // Every id has a '-' after "cve": jump from one '-' to the next.
        let dash = at + line.get(at..)?.iter().position(|&b| b == b'-')?;
        at = dash + 1;
        let is_cve = dash
            .checked_sub(3)
            .and_then(|s| line.get(s..dash))
            .is_some_and(|w| w.eq_ignore_ascii_case(b"cve"));
        if !is_cve {
            continue;
        }
        let tail = line.get(at..).unwrap_or_default();
        // Digit runs are counted only as far as they matter, so a long
        // one costs no more than the '-' search that skips it afterwards.
        let year_len = tail
            .iter()
            .take(5)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if year_len != 4 || tail.get(4) != Some(&b'-') {
            continue;
        }
        let seq = tail.get(5..).unwrap_or_default();
        let seq_len = seq
            .iter()
            .take(MAX_CVE_DIGITS + 1)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if !(4..=MAX_CVE_DIGITS).contains(&seq_len) {
            at += 5 + seq_len;
            continue;
        }
        let mut id = String::with_capacity(9 + seq_len);
        id.push_str("CVE-");
        id.push_str(&ascii(&tail[..4]));
        id.push('-');
        id.push_str(&ascii(&seq[..seq_len]));
        return Some((id, at + 5 + seq_len));
    }
}

/// For each CVE id the entries mention, the version of the oldest entry
/// mentioning it: the version that fixed it, since the entries are in file
/// order (newest first) and a mention in a newer entry is usually a
/// follow-up (a regression fix, a further backport, dropping a patch that a
/// new upstream release made unnecessary).
pub fn fixed_cves(entries: &[Entry]) -> BTreeMap<String, String> {
    let mut fixed = BTreeMap::new();
    for entry in entries {
        for cve in &entry.cves {
            // Later entries are older: let them overwrite.
            fixed.insert(cve.clone(), entry.version.clone());
        }
    }
    fixed
}

/// Whether the changelog says `cve` (compared ignoring ASCII case) was fixed
/// at or below `installed_version`.
///
/// The entries must be in file order (newest first). The first entry whose
/// version equals `installed_version` exactly (epoch included, as dpkg
/// writes it) marks the installed version; the answer is true when that
/// entry or any entry after it mentions `cve`. No versions are compared:
/// the file's order is trusted. When no entry has exactly
/// `installed_version` (the caller passed a binary version such as a binNMU
/// `1.2-3+b1` rather than the source version, or the changelog is not the
/// installed one) the answer is false, because nothing then shows which
/// entries are installed.
pub fn fixed_by(entries: &[Entry], installed_version: &str, cve: &str) -> bool {
    let Some(at) = entries.iter().position(|e| e.version == installed_version) else {
        return false;
    };
    entries
        .get(at..)
        .unwrap_or_default()
        .iter()
        .any(|e| e.cves.iter().any(|c| c.eq_ignore_ascii_case(cve)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    /// The TSV of what each changelog on this image says it fixed, copied
    /// unchanged from the shared data.
    const TSV: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/debian/changelog_cves.tsv"
    );

    /// python3-cryptography's changelog, the motivating case.
    const CRYPTOGRAPHY: &str = "/usr/share/doc/python3-cryptography/changelog.Debian.gz";

    /// A small changelog in the shapes met on a real system.
    const SAMPLE: &[u8] = b"\
python-cryptography (38.0.4-3+deb12u1) bookworm; urgency=medium

  * Non-maintainer upload.
  * CVE-2023-49083: NULL dereference when loading PKCS7 certificates
    (Closes: #1057108)
  * CVE-2024-26130: NULL dereference when PKCS#12 key and cert don't match

 -- Adrian Bunk <bunk@debian.org>  Wed, 16 Oct 2024 19:53:04 +0300

python-cryptography (38.0.4-3) unstable; urgency=medium

  [ Salvatore Bonaccorso ]
  * Don't allow update_into to mutate immutable objects (CVE-2023-23931)
    (Closes: #1031049)

 -- Sandro Tosi <morph@debian.org>  Tue, 28 Feb 2023 00:36:13 -0500

python-cryptography (3.3.2-1) unstable; urgency=high

  * New upstream release; fixes cve-2020-36242, CVE-2020-36242.
  * debian/patches/01_CVE-2020-25659.patch: follow-up.

 -- Tristan Seligmann <mithrandi@debian.org>  Tue, 09 Feb 2021 11:00:00 +0200

# Older entries have been removed from this changelog.
# To read the complete changelog use `apt changelog python3-cryptography`.
";

    /// Reads a gzip file from this machine, or says why not.
    fn read_gz(path: &str) -> Option<Vec<u8>> {
        match std::fs::read(path) {
            Ok(gz) => {
                Some(gunzip(&gz, MAX_CHANGELOG_LEN).unwrap_or_else(|e| panic!("{path}: {e}")))
            }
            Err(e) => {
                eprintln!("cannot read {path} here ({e}); skipping it");
                None
            }
        }
    }

    /// An (entry version, distribution, CVE) triple.
    type Triple = (String, String, String);

    /// The triples of a changelog, sorted.
    fn triples(entries: &[Entry]) -> Vec<Triple> {
        let mut out: Vec<_> = entries
            .iter()
            .flat_map(|e| {
                e.cves
                    .iter()
                    .map(|c| (e.version.clone(), e.distribution.clone(), c.clone()))
            })
            .collect();
        out.sort();
        out
    }

    /// Mentions the TSV leaves out: its generator matched `CVE-` in upper
    /// case only, and this lower-case one (a patch name, in an entry that
    /// drops the patch because the new upstream release has the fix) is its
    /// only mention in the entry. The same is why the TSV has nothing at all
    /// for pam, whose one mention is `cve-2010-4708.patch`.
    const TSV_MISSES: &[(&str, &str, &str, &str)] = &[(
        "/usr/share/doc/python3-yaml/changelog.Debian.gz",
        "5.4.1-1",
        "unstable",
        "CVE-2020-14343",
    )];

    #[test]
    fn every_changelog_in_the_tsv_gives_the_tsv_triples() {
        if !Path::new(CRYPTOGRAPHY).exists() {
            eprintln!("no {CRYPTOGRAPHY} here: not the Debian 12 image of the TSV; skipping");
            return;
        }
        let tsv = std::fs::read_to_string(TSV).unwrap();
        let mut rows = tsv.lines();
        assert_eq!(
            rows.next(),
            Some(
                "source\tinstalled_source_version\tbinary_pkg_with_changelog\t\
                 changelog_entry_version\tdistribution\tcve\tchangelog_path"
            )
        );
        // What this host has installed now, by binary package: the TSV
        // describes the image as it was, and a package upgraded here since
        // has another changelog (more entries, more CVEs).
        let status = std::fs::read("/var/lib/dpkg/status").unwrap_or_default();
        let installed_now: BTreeMap<String, String> = crate::parse::dpkg::parse_status_db(&status)
            .0
            .into_iter()
            .map(|p| (p.name, p.source_version))
            .collect();
        // path -> (binary package, installed source version, sorted triples)
        let mut want: BTreeMap<&str, (&str, &str, Vec<Triple>)> = BTreeMap::new();
        for row in rows {
            let f: Vec<&str> = row.split('\t').collect();
            assert_eq!(f.len(), 7, "{row}");
            let slot = want.entry(f[6]).or_insert((f[2], f[1], Vec::new()));
            assert_eq!(slot.1, f[1], "one installed version per path");
            slot.2
                .push((f[3].to_string(), f[4].to_string(), f[5].to_string()));
        }
        let listed = want.len();
        let (mut paths, mut entries, mut cves, mut missing) = (0, 0, 0, Vec::new());
        let mut changed = Vec::new();
        let mut diffs = Vec::new();
        for (path, (binary, installed, mut expected)) in want {
            let Some(text) = read_gz(path) else {
                missing.push(path);
                continue;
            };
            match installed_now.get(binary) {
                Some(now) if now != installed => {
                    changed.push(format!("{binary} {installed} -> {now}"));
                    continue;
                }
                _ => {}
            }
            let (parsed, _) = parse_changelog(&text);
            for &(p, version, dist, cve) in TSV_MISSES {
                if p == path {
                    expected.push((version.into(), dist.into(), cve.into()));
                }
            }
            expected.sort();
            let got = triples(&parsed);
            for t in got.iter().filter(|t| !expected.contains(t)) {
                diffs.push(format!("{path}: not in the TSV: {t:?}"));
            }
            for t in expected.iter().filter(|t| !got.contains(t)) {
                diffs.push(format!("{path}: only in the TSV: {t:?}"));
            }
            // The TSV lists what the installed version's changelog says it
            // fixed: each of its CVEs is fixed at the installed version.
            for (_, _, cve) in &got {
                assert!(
                    fixed_by(&parsed, installed, cve),
                    "{path} {installed} {cve}"
                );
            }
            paths += 1;
            entries += parsed.len();
            cves += got.len();
        }
        eprintln!(
            "checked {paths} changelogs, {entries} entries, {cves} (entry, CVE) pairs; \
             not installed here: {missing:?}; upgraded here since the TSV: {changed:?}"
        );
        // Every changelog that is as the TSV saw it must agree with it.
        assert!(diffs.is_empty(), "{diffs:#?}");
        // 135 paths in the TSV, three of whose packages (golang-1.19-go,
        // libintl-perl, needrestart) are not installed on this image; a
        // package upgraded on this host since is left out, not failed. A
        // host where most differ (a fresh container of another point
        // release) is not the image the TSV describes: said, not failed.
        if paths * 4 < listed * 3 {
            eprintln!(
                "only {paths} of the TSV's {listed} changelogs are as the TSV saw them: \
                 not the image of the TSV; the parser's own tests still ran"
            );
            return;
        }
        assert!(cves > 0);
    }

    #[test]
    fn python3_cryptography_backports() {
        let from_file = read_gz(CRYPTOGRAPHY);
        for text in [Some(SAMPLE.to_vec()), from_file].into_iter().flatten() {
            let (entries, malformed) = parse_changelog(&text);
            assert_eq!(malformed, 0);
            let top = &entries[0];
            assert_eq!(top.source, "python-cryptography");
            assert_eq!(top.version, "38.0.4-3+deb12u1");
            assert_eq!(top.distribution, "bookworm");
            assert_eq!(top.urgency, "medium");
            // The bookworm update itself names CVE-2023-49083 (and
            // CVE-2024-26130); CVE-2023-23931 was fixed by 38.0.4-3, before
            // bookworm's release, so the installed version fixes both.
            assert_eq!(top.cves, ["CVE-2023-49083", "CVE-2024-26130"]);
            assert_eq!(entries[1].version, "38.0.4-3");
            assert_eq!(entries[1].cves, ["CVE-2023-23931"]);
            for cve in ["CVE-2023-23931", "CVE-2023-49083", "cve-2023-49083"] {
                assert!(fixed_by(&entries, "38.0.4-3+deb12u1", cve), "{cve}");
            }
            assert!(fixed_by(&entries, "38.0.4-3", "CVE-2023-23931"));
            assert!(!fixed_by(&entries, "38.0.4-3", "CVE-2023-49083"));
            assert!(!fixed_by(&entries, "38.0.4-3+b1", "CVE-2023-23931"));
            assert!(!fixed_by(&entries, "38.0.4-3+deb12u1", "CVE-2023-99999"));
            let fixed = fixed_cves(&entries);
            assert_eq!(fixed["CVE-2023-23931"], "38.0.4-3");
            assert_eq!(fixed["CVE-2023-49083"], "38.0.4-3+deb12u1");
            assert_eq!(fixed["CVE-2020-36242"], "3.3.2-1");
        }
    }

    /// Lists, with dpkg's own parser (Dpkg::Changelog::Debian), the entry
    /// versions of each changelog: one line per file, `path \t whether an
    /// unparsed old-format tail was left \t versions...`.
    const DPKG_LIST: &str = r#"
use strict; use warnings;
use Dpkg::Changelog::Debian;
use IO::Uncompress::Gunzip qw($GunzipError);
for my $p (@ARGV) {
    my $z = IO::Uncompress::Gunzip->new($p) or die "$p: $GunzipError";
    my $c = Dpkg::Changelog::Debian->new(verbose => 0);
    $c->parse($z, $p);
    my @v = map { $_->get_version() // '?' } @$c;
    my $tail = defined $c->get_unparsed_tail() ? 1 : 0;
    print join("\t", $p, $tail, @v), "\n";
}
"#;

    #[test]
    fn every_changelog_here_has_dpkgs_entries() {
        let Ok(dir) = std::fs::read_dir("/usr/share/doc") else {
            eprintln!("no /usr/share/doc here; skipping");
            return;
        };
        let mut paths: Vec<String> = dir
            .filter_map(|d| {
                let p = d.ok()?.path().join("changelog.Debian.gz");
                p.is_file().then(|| p.to_string_lossy().into_owned())
            })
            .collect();
        paths.sort();
        let Ok(out) = std::process::Command::new("perl")
            .arg("-e")
            .arg(DPKG_LIST)
            .args(&paths)
            .output()
        else {
            eprintln!("no perl here; skipping");
            return;
        };
        if !out.status.success() {
            eprintln!("dpkg's perl modules failed here; skipping");
            return;
        }
        let listing = String::from_utf8(out.stdout).unwrap();
        let (mut files, mut entries, mut with_tail, mut malformed) = (0, 0, 0, 0);
        for (path, line) in paths.iter().zip(listing.lines()) {
            let mut f = line.split('\t');
            assert_eq!(f.next(), Some(path.as_str()));
            let tail = f.next() == Some("1");
            let want: Vec<&str> = f.collect();
            let text = read_gz(path).unwrap();
            let (parsed, bad) = parse_changelog(&text);
            let got: Vec<&str> = parsed.iter().map(|e| e.version.as_str()).collect();
            if tail {
                // dpkg stops at the first old-format section; this parser
                // goes on, so it may find more entries after it.
                assert!(got.starts_with(&want), "{path}");
                with_tail += 1;
            } else {
                assert_eq!(got, want, "{path}");
                assert_eq!(bad, 0, "{path}");
            }
            files += 1;
            entries += got.len();
            malformed += bad;
        }
        assert_eq!(files, paths.len());
        eprintln!(
            "{files} changelogs, {entries} entries, {with_tail} with an old-format tail, \
             {malformed} lines skipped"
        );
    }

    /// Wraps `data` in a gzip member with the given header flags.
    fn gz_member(data: &[u8], flags: u8) -> Vec<u8> {
        let mut out = vec![0x1f, 0x8b, 8, flags, 1, 2, 3, 4, 0, 3];
        if flags & FEXTRA != 0 {
            out.extend_from_slice(&[4, 0, b'A', b'B', 0, 0]);
        }
        if flags & FNAME != 0 {
            out.extend_from_slice(b"changelog.Debian\0");
        }
        if flags & FCOMMENT != 0 {
            out.extend_from_slice(b"a comment\0");
        }
        if flags & FHCRC != 0 {
            let crc = crc32(&out) as u16;
            out.extend_from_slice(&crc.to_le_bytes());
        }
        out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 6));
        out.extend_from_slice(&crc32(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    #[test]
    fn gunzip_reads_every_header_field_and_member() {
        for flags in 0..0x20u8 {
            let gz = gz_member(SAMPLE, flags);
            assert_eq!(
                gunzip(&gz, MAX_CHANGELOG_LEN).unwrap(),
                SAMPLE,
                "{flags:#x}"
            );
        }
        // Concatenated members, including an empty one, as `cat a.gz b.gz`.
        let mut gz = gz_member(b"first\n", 0);
        gz.extend(gz_member(b"", FNAME));
        gz.extend(gz_member(b"second\n", FHCRC | FCOMMENT));
        assert_eq!(gunzip(&gz, 100).unwrap(), b"first\nsecond\n");
        // The cap counts all members together.
        assert_eq!(gunzip(&gz, 13).unwrap(), b"first\nsecond\n");
        assert!(gunzip(&gz, 12).is_err());
        // Trailing bytes that are not a member are ignored, as gzip does.
        let mut padded = gz_member(b"x", 0);
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(gunzip(&padded, 100).unwrap(), b"x");
        padded.extend_from_slice(b"garbage");
        assert_eq!(gunzip(&padded, 100).unwrap(), b"x");
        // An empty member with a zero cap is fine.
        assert_eq!(gunzip(&gz_member(b"", 0), 0).unwrap(), b"");
        assert!(gunzip(&gz_member(b"a", 0), 0).is_err());
        // Too many members.
        let many: Vec<u8> = (0..=MAX_GZIP_MEMBERS)
            .flat_map(|_| gz_member(b"", 0))
            .collect();
        assert!(
            gunzip(&many, 100)
                .unwrap_err()
                .to_string()
                .contains("members")
        );
        let enough: Vec<u8> = (0..MAX_GZIP_MEMBERS)
            .flat_map(|_| gz_member(b"a", 0))
            .collect();
        assert_eq!(gunzip(&enough, 1 << 20).unwrap().len(), MAX_GZIP_MEMBERS);
    }

    #[test]
    fn gunzip_rejects_damage() {
        let good = gz_member(SAMPLE, FNAME | FHCRC);
        let err = |bytes: &[u8]| gunzip(bytes, MAX_CHANGELOG_LEN).unwrap_err().to_string();
        assert!(err(b"").contains("truncated header"));
        assert!(err(SAMPLE).contains("bad magic"));
        let mut method = good.clone();
        method[2] = 7;
        assert!(err(&method).contains("method 7"));
        let mut reserved = good.clone();
        reserved[3] |= 0x20;
        assert!(err(&reserved).contains("reserved"));
        let mut header_crc = good.clone();
        header_crc[5] ^= 1;
        assert!(err(&header_crc).contains("header crc"));
        let n = good.len();
        let mut crc = good.clone();
        crc[n - 8] ^= 1;
        assert!(err(&crc).contains("crc32 mismatch"));
        let mut size = good.clone();
        size[n - 1] ^= 1;
        assert!(err(&size).contains("length mismatch"));
        // Every truncation fails cleanly: a member must be whole.
        for cut in 0..n {
            assert!(
                gunzip(&good[..cut], MAX_CHANGELOG_LEN).is_err(),
                "cut at {cut}"
            );
        }
        // A flipped bit anywhere is caught by one check or another, unless
        // it is in a field nothing reads (mtime, OS, the padding after the
        // last deflate block): then the output is unchanged.
        for at in 0..n {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[at] ^= 1 << bit;
                if let Ok(out) = gunzip(&bad, MAX_CHANGELOG_LEN) {
                    assert_eq!(out, SAMPLE, "bit {bit} of byte {at}");
                }
            }
        }
        // A file name that never ends, and an extra field longer than the file.
        assert!(err(&[0x1f, 0x8b, 8, FNAME, 0, 0, 0, 0, 0, 3, b'a']).contains("file name"));
        assert!(err(&[0x1f, 0x8b, 8, FEXTRA, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0]).contains("extra"));
        assert!(err(&[0x1f, 0x8b, 8, FEXTRA, 0, 0, 0, 0, 0, 3, 0xff]).contains("extra"));
        // A damaged second member fails the whole file.
        let mut two = gz_member(b"one", 0);
        two.extend_from_slice(&good[..n - 1]);
        assert!(gunzip(&two, MAX_CHANGELOG_LEN).is_err());
    }

    #[test]
    fn headings() {
        let one = |line: &[u8]| parse_changelog(line).0.into_iter().next();
        let e = one(b"glibc (2.36-9+deb12u10) bookworm-security; urgency=medium").unwrap();
        assert_eq!(
            (
                e.source.as_str(),
                e.version.as_str(),
                e.distribution.as_str()
            ),
            ("glibc", "2.36-9+deb12u10", "bookworm-security")
        );
        assert_eq!(e.urgency, "medium");
        let e = one(b"_Foo+bar.2 (1:2.0~rc1-1) unstable  experimental;urgency=HIGH (security), binary-only=yes  ").unwrap();
        assert_eq!(e.source, "_Foo+bar.2");
        assert_eq!(e.version, "1:2.0~rc1-1");
        assert_eq!(e.distribution, "unstable experimental");
        assert_eq!(e.urgency, "high");
        let e = one(b"foo (1.0) UNRELEASED; Urgency=low,binary-only=yes").unwrap();
        assert_eq!(
            (e.distribution.as_str(), e.urgency.as_str()),
            ("UNRELEASED", "low")
        );
        // No urgency, or a bad one: the entry stands with an empty urgency.
        for line in [
            &b"foo (1.0) unstable;"[..],
            b"foo (1.0) sid; urgency=",
            b"foo (1.0) sid; urgency=l*w",
        ] {
            assert_eq!(one(line).unwrap().urgency, "", "{}", line.escape_ascii());
        }
        // Not headings (as dpkg's regular expression sees them).
        for line in [
            &b"foo(1.0) unstable; urgency=low"[..],
            b"foo  (1.0) unstable; urgency=low",
            b"-foo (1.0) unstable; urgency=low",
            b"fo/o (1.0) unstable; urgency=low",
            b"foo_bar (1.0) unstable; urgency=low",
            b"foo (1.0 ) unstable; urgency=low",
            b"foo (1 0) unstable; urgency=low",
            b"foo () unstable; urgency=low",
            b"foo ((1)) unstable; urgency=low",
            b"foo (1.0)unstable; urgency=low",
            b"foo (1.0) unstable urgency=low",
            b"foo (1.0) unstable ; urgency=low",
            b"foo (1.0) ; urgency=low",
            b"foo (1.0) uns/table; urgency=low",
            b"foo (1.\xe90) unstable; urgency=low",
            b"binutils (2.7-3):",
            b"gmp (1.3.2-2) - dcs",
            b"Old Changelog:",
        ] {
            let (entries, bad) = parse_changelog(line);
            assert!(entries.is_empty(), "{}", line.escape_ascii());
            assert_eq!(bad, 1, "{}", line.escape_ascii());
        }
        // Field lengths are capped.
        let long = "v".repeat(MAX_FIELD_LEN);
        assert!(one(format!("foo (1{long}) sid; urgency=low").as_bytes()).is_none());
        assert!(one(format!("foo (1) sid {long}; urgency=low").as_bytes()).is_none());
        assert!(one(format!("f{long} (1) sid; urgency=low").as_bytes()).is_none());
        assert_eq!(
            one(format!("foo (1) sid; urgency=l{long}").as_bytes())
                .unwrap()
                .urgency,
            ""
        );
        assert_eq!(
            one(format!("foo ({long}) sid; urgency=low").as_bytes())
                .unwrap()
                .version,
            long
        );
    }

    #[test]
    fn cve_ids() {
        let cves = |body: &str| {
            let text = format!("foo (1) sid; urgency=low\n\n  {body}\n");
            let (mut entries, bad) = parse_changelog(text.as_bytes());
            assert_eq!(bad, 0);
            entries.remove(0).cves
        };
        assert_eq!(
            cves("CVE-2019-1010204 cve-2020-14343 Cve-2021-3156"),
            ["CVE-2019-1010204", "CVE-2020-14343", "CVE-2021-3156"]
        );
        // Repeats are dropped, first mention order is kept.
        assert_eq!(
            cves("CVE-2002-0002, CVE-2001-0001 and cve-2002-0002"),
            ["CVE-2002-0002", "CVE-2001-0001"]
        );
        // Patch names and punctuation around the id do not matter.
        assert_eq!(
            cves("01_CVE-2016-4425.patch, (CVE-2016-2177/CVE-2016-2178)"),
            ["CVE-2016-4425", "CVE-2016-2177", "CVE-2016-2178"]
        );
        assert_eq!(cves("XCVE-2016-4425a"), ["CVE-2016-4425"]);
        // Not ids: three digits, a five-digit year, an over-long number,
        // another separator, the old CAN- candidate names.
        assert!(cves("CVE-2015-119: CVE-20155-1234 CVE-2015-1234567890123").is_empty());
        assert!(cves("CVE 2015-1234 CVE_2015_1234 CVE--2015-1234 CAN-2005-0758").is_empty());
        assert!(cves("CVE-2015- CVE-").is_empty());
        assert_eq!(
            cves(&format!("CVE-2015-{}", "9".repeat(MAX_CVE_DIGITS))).len(),
            1
        );
        // The heading and the trailer are not the body.
        let (entries, _) = parse_changelog(
            b"foo (1) sid; urgency=low CVE-2001-0001\n  x\n -- CVE-2001-0002 <a@b>  Mon, 01 Jan 2001 00:00:00 +0000\n",
        );
        assert!(entries[0].cves.is_empty());
    }

    #[test]
    fn odd_lines_are_skipped_and_counted() {
        let text = b"\xef\xbb\xbffoo (3) sid; urgency=low\r\n\
            \r\n\
            \x20 * CVE-2003-0003 fixed.\r\n\
            \t* tab body CVE-2003-0033, one blank:\r\n\
            \x20CVE-2003-0333\r\n\
            \x20-- Ma\xefntainer <m@x>  Mon, 01 Jan 2001 00:00:00 +0000\r\n\
            \x20 * orphan after the trailer CVE-2003-9999\n\
            \n\
            foo (2) sid; urgency=low\n\
            \x20 * no trailer CVE-2002-0002\n\
            # a comment\n\
            /* another */\n\
            $Id: changelog,v 1.1 $\n\
            \x20 * still entry 2: CVE-2002-0022\n\
            Old Changelog:\n\
            \x20 * old CVE-2000-0000\n\
            \x20-- Someone <s@x>  Mon, 01 Jan 2001 00:00:00 +0000\n\
            foo (1) sid; urgency=low\n\
            \x20 * CVE-2001-0001 \xff\xfe\n\
            \n\
            Local variables:\n\
            mode: debian-changelog\n\
            foo (0) sid; urgency=low\n\
            \x20 * CVE-2000-0001\n\
            End:\n";
        let (entries, bad) = parse_changelog(text);
        let got: Vec<(&str, Vec<&str>)> = entries
            .iter()
            .map(|e| {
                (
                    e.version.as_str(),
                    e.cves.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("3", vec!["CVE-2003-0003", "CVE-2003-0033", "CVE-2003-0333"]),
                ("2", vec!["CVE-2002-0002", "CVE-2002-0022"]),
                ("1", vec!["CVE-2001-0001"]),
            ]
        );
        // The orphan after a trailer, "Old Changelog:", its body line and
        // trailer.
        assert_eq!(bad, 4);
        // Other footers.
        for footer in [
            &b";; Local Variables:"[..],
            b";;local variables:",
            b"vim: set tw=78:",
        ] {
            let mut text = b"foo (1) sid; urgency=low\n  CVE-2001-0001\n".to_vec();
            text.extend_from_slice(footer);
            text.extend_from_slice(b"\nfoo (0) sid; urgency=low\n");
            let (entries, bad) = parse_changelog(&text);
            assert_eq!((entries.len(), bad), (1, 0), "{}", footer.escape_ascii());
        }
        // Empty and blank-only inputs.
        assert_eq!(parse_changelog(b""), (vec![], 0));
        assert_eq!(parse_changelog(b"\n \n\t\n\r\n"), (vec![], 0));
        // Repeated trailers: the second one belongs to no entry.
        let (entries, bad) = parse_changelog(b"a (1) b;\n  x\n -- a\n -- b\n");
        assert_eq!((entries.len(), bad), (1, 1));
    }

    #[test]
    fn fixed_cves_and_fixed_by() {
        let entry = |version: &str, cves: &[&str]| Entry {
            source: "foo".into(),
            version: version.into(),
            distribution: "sid".into(),
            urgency: "low".into(),
            cves: cves.iter().map(|c| c.to_string()).collect(),
        };
        let entries = [
            entry("4", &["CVE-2004-0001"]),
            entry("3", &["CVE-2003-0001", "CVE-2001-0001"]),
            entry("2", &[]),
            entry("1", &["CVE-2001-0001"]),
        ];
        let fixed = fixed_cves(&entries);
        assert_eq!(
            fixed.into_iter().collect::<Vec<_>>(),
            [
                ("CVE-2001-0001".into(), "1".into()),
                ("CVE-2003-0001".into(), "3".into()),
                ("CVE-2004-0001".into(), "4".into()),
            ]
        );
        assert!(fixed_by(&entries, "4", "CVE-2004-0001"));
        assert!(fixed_by(&entries, "4", "CVE-2001-0001"));
        assert!(!fixed_by(&entries, "3", "CVE-2004-0001"));
        assert!(fixed_by(&entries, "3", "cve-2003-0001"));
        assert!(!fixed_by(&entries, "2", "CVE-2003-0001"));
        assert!(fixed_by(&entries, "2", "CVE-2001-0001"));
        // A version the changelog does not have: nothing is known.
        assert!(!fixed_by(&entries, "5", "CVE-2004-0001"));
        assert!(!fixed_by(&entries, "4+b1", "CVE-2004-0001"));
        assert!(!fixed_by(&[], "1", "CVE-2001-0001"));
        assert!(fixed_cves(&[]).is_empty());
    }

    /// Writes bits least significant first, as deflate does.
    #[derive(Default)]
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }

    impl Bits {
        fn put(&mut self, value: u64, count: u32) {
            self.acc |= value << self.n;
            self.n += count;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }

        /// A Huffman code, which deflate writes most significant bit first.
        fn code(&mut self, code: u64, len: u32) {
            let reversed = (0..len).fold(0, |r, i| (r << 1) | ((code >> i) & 1));
            self.put(reversed, len);
        }

        fn finish(mut self) -> Vec<u8> {
            if self.n > 0 {
                self.out.push(self.acc as u8);
            }
            self.out
        }
    }

    /// A gzip member of `len` zero bytes: one fixed-Huffman block holding a
    /// literal zero and then copies of 258 bytes at distance 1, about 159:1.
    /// The trailer's CRC is only computed when asked, since it is slow for
    /// a gibibyte in a debug build.
    fn zeros_gz(len: u64, with_crc: bool) -> Vec<u8> {
        let mut bits = Bits::default();
        bits.put(1, 1); // BFINAL
        bits.put(1, 2); // BTYPE = fixed Huffman
        let mut left = len;
        if left > 0 {
            bits.code(0x30, 8); // literal 0
            left -= 1;
        }
        while left >= 258 {
            bits.code(0xc5, 8); // length symbol 285: 258 bytes
            bits.code(0, 5); // distance code 0: distance 1
            left -= 258;
        }
        for _ in 0..left {
            bits.code(0x30, 8);
        }
        bits.code(0, 7); // end of block
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        gz.extend(bits.finish());
        let crc = if with_crc {
            crc32(&vec![0; len as usize])
        } else {
            0
        };
        gz.extend_from_slice(&crc.to_le_bytes());
        gz.extend_from_slice(&(len as u32).to_le_bytes());
        gz
    }

    #[test]
    fn gzip_bomb_stops_at_the_cap() {
        // The crafted stream is valid: below the cap it inflates whole.
        let small = zeros_gz(3 << 20, true);
        assert_eq!(gunzip(&small, MAX_CHANGELOG_LEN).unwrap(), vec![0; 3 << 20]);
        // A gibibyte of zeros in 6.8 MB: stopped after 16 MiB of output.
        let bomb = zeros_gz(1 << 30, false);
        assert!(bomb.len() < 8 << 20);
        let start = crate::parse::fuzz::CpuTimer::start();
        let err = gunzip(&bomb, MAX_CHANGELOG_LEN).unwrap_err();
        assert!(
            err.to_string().contains("more than 16777216 bytes"),
            "{err}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // Exactly at the cap is fine; one byte over is not.
        let at_cap = zeros_gz(1 << 16, true);
        assert_eq!(gunzip(&at_cap, 1 << 16).unwrap().len(), 1 << 16);
        assert!(gunzip(&at_cap, (1 << 16) - 1).is_err());
    }

    #[test]
    fn hostile_sizes_are_bounded() {
        let start = crate::parse::fuzz::CpuTimer::start();
        // 64 MiB of junk: not gzip, and as text nothing but skipped lines.
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let junk: Vec<u8> = (0..64 << 20).map(|_| rng.next() as u8).collect();
        assert!(gunzip(&junk, MAX_CHANGELOG_LEN).is_err());
        let (entries, _) = parse_changelog(&junk);
        assert!(entries.len() < 16);
        // A single 10 MiB line, as a heading, as a body line full of ids
        // (all the same, so one is kept), and as one long digit run.
        let mut heading = b"foo (1) sid; urgency=low ".to_vec();
        heading.resize(10 << 20, b'x');
        let (entries, bad) = parse_changelog(&heading);
        assert_eq!((entries.len(), bad), (1, 0));
        let mut body = b"foo (1) sid; urgency=low\n".to_vec();
        while body.len() < 10 << 20 {
            body.extend_from_slice(b" CVE-2020-1234");
        }
        let (entries, bad) = parse_changelog(&body);
        assert_eq!((entries[0].cves.len(), bad), (1, 0));
        let mut digits = b"foo (1) sid;\n CVE-2020-".to_vec();
        digits.resize(10 << 20, b'7');
        let (entries, bad) = parse_changelog(&digits);
        assert_eq!((entries[0].cves.len(), bad), (0, 0));
        let mut long_version = b"foo (1".to_vec();
        long_version.resize(10 << 20, b'1');
        long_version.extend_from_slice(b") sid; urgency=low");
        assert_eq!(parse_changelog(&long_version).1, 1);
        // One entry with 100,000 ids and then 65,536 small ones: the set
        // of ids seen in an entry must not cost its old size at each heading.
        let mut big = b"big (1) sid;\n".to_vec();
        for i in 0..100_000 {
            big.extend_from_slice(format!(" CVE-2000-{i:06}\n").as_bytes());
        }
        for i in 0..MAX_ENTRIES {
            big.extend_from_slice(format!("p ({i}) sid;\n").as_bytes());
        }
        let timer = crate::parse::fuzz::CpuTimer::start();
        let (entries, bad) = parse_changelog(&big);
        assert_eq!(
            (entries.len(), entries[0].cves.len(), bad),
            (MAX_ENTRIES, 100_000, 1)
        );
        assert!(
            timer.elapsed() < Duration::from_secs(10),
            "{:?}",
            timer.elapsed()
        );
        // Too many entries and too many ids: capped and counted.
        let mut many = Vec::new();
        for i in 0..MAX_ENTRIES + 10 {
            many.extend_from_slice(
                format!("p ({i}) sid;\n  CVE-2000-{:07}\n", i % 70_000).as_bytes(),
            );
            many.extend_from_slice(format!("  CVE-2001-{:07}\n", i).as_bytes());
        }
        let (entries, bad) = parse_changelog(&many);
        assert_eq!(entries.len(), MAX_ENTRIES);
        let kept: usize = entries.iter().map(|e| e.cves.len()).sum();
        assert_eq!(kept, MAX_CVES);
        assert_eq!(bad as usize, 3 * 10 + (2 * MAX_ENTRIES - MAX_CVES));
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}",
            start.elapsed()
        );
    }

    use crate::parse::fuzz::Rng;
    fn mutate(rng: &mut Rng, fixture: &[u8]) -> Vec<u8> {
        crate::parse::fuzz::mutate(rng, fixture, ALPHABET)
    }

    fn random_input(rng: &mut Rng) -> Vec<u8> {
        crate::parse::fuzz::random_input(rng, ALPHABET)
    }

    /// Bytes that mean something to the changelog parser.
    const ALPHABET: &[u8] = b"0123456789cveCVE-() ;=,:\t\n\r -#$/*urgency.+~\x1f\x8b\x08\0";

    /// Parses `text` and checks that the output is bounded by the input.
    fn check_parse(text: &[u8]) {
        let (entries, bad) = parse_changelog(text);
        let lines = text.split(|&b| b == b'\n').count();
        assert!(entries.len() <= lines);
        assert!(bad as usize <= lines);
        let mut ids = 0;
        for e in &entries {
            assert!(!e.version.is_empty() && e.version.len() <= MAX_FIELD_LEN);
            assert!(!e.source.is_empty() && !e.distribution.is_empty());
            for c in &e.cves {
                assert!(
                    c.starts_with("CVE-") && c.len() <= 9 + MAX_CVE_DIGITS,
                    "{c}"
                );
            }
            ids += e.cves.iter().map(|c| c.len()).sum::<usize>();
        }
        assert!(ids <= text.len());
        let fixed = fixed_cves(&entries);
        for (cve, version) in &fixed {
            assert!(
                fixed_by(&entries, &entries[0].version, cve),
                "{cve} {version}"
            );
        }
    }

    #[test]
    fn fuzz_no_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let gz = gz_member(SAMPLE, FNAME | FHCRC | FEXTRA | FCOMMENT);
        for i in 0..6000 {
            let input = match i % 3 {
                0 => random_input(&mut rng),
                1 => mutate(&mut rng, SAMPLE),
                _ => mutate(&mut rng, &gz),
            };
            check_parse(&input);
            if let Ok(out) = gunzip(&input, 4096) {
                assert!(out.len() <= 4096);
                check_parse(&out);
            }
        }
    }
}
