//! Parsers for the build information that the Go linker embeds in every
//! executable built in module mode: the Go version, the main module, and
//! the path, version and checksum of every module compiled in (what
//! `go version -m` prints).
//!
//! The information starts with a 32-byte header, 16-byte aligned, at the
//! start of the `.go.buildinfo` section of ELF executables (Go 1.13 and
//! later; that section is the first thing in the data segment, or follows
//! `.data` when the program was linked externally):
//!
//! ```text
//! 0   14 bytes  "\xff Go buildinf:"
//! 14  1 byte    pointer size (4 or 8)
//! 15  1 byte    flags: bit 0 big endian, bit 1 inline strings (Go >= 1.18)
//! 16  2 words   pointers (pre-1.18 only; zero otherwise)
//! 32            Go >= 1.18: uvarint length + Go version,
//!               uvarint length + modinfo
//! ```
//!
//! Before Go 1.18 the two words at offset 16 are virtual addresses of Go
//! string headers (`runtime.buildVersion` and `runtime.modinfo`), each a
//! pointer to the bytes and a length, in the binary's pointer size and byte
//! order; [`parse_buildinfo`] returns them as [`BuildInfoRef::Pointers`]
//! and the caller translates them with the ELF program headers
//! ([`read_elf_buildinfo`] does all of it).
//!
//! The modinfo string is framed by two 16-byte sentinels
//! ([`MODINFO_START`], [`MODINFO_END`]) and holds one record per line,
//! fields separated by tabs:
//!
//! ```text
//! path   github.com/docker/cli/cmd/docker
//! mod    github.com/hashicorp/terraform  (devel)  <empty sum>
//! dep    github.com/foo/bar  v1.2.3  h1:...=
//! dep    github.com/old/x    v0.1.0                    (no sum: replaced)
//! =>     github.com/new/x    v0.2.0  h1:...=           (replaces the line above)
//! build  -ldflags="-s -w -X \"main.v=1\""
//! build  GOOS=linux
//! ```
//!
//! Quirks handled here, following Go's own `debug/buildinfo` and
//! `runtime/debug.ParseBuildInfo`:
//!
//! * A replaced module's line has no sum column; the `=>` line after it
//!   names the replacement, which may be a local directory (`./internal/x`,
//!   version `(devel)`, empty sum). A `=>` line with no module line before
//!   it is skipped. Go writes an empty line after every `=>` line (Terraform
//!   has nine); empty lines are ignored.
//! * The main module's line ends in a tab, for its empty sum. Its version
//!   is `(devel)` unless the build stamped one from version control.
//! * Build setting keys and values are Go-quoted (with `"` or backquotes)
//!   when they contain spaces, tabs, quotes, `=` (keys) or non-printable
//!   characters; they are unquoted here.
//! * Binaries built outside module mode (or by build systems such as
//!   Bazel) have an empty modinfo, though the Go version is still there.
//!   Toolchains other than the release ones write versions such as
//!   `go1.25-20250209-RC00 cl/724970549 +ff27d270c9 X:fieldtrack,boringcrypto`.
//!
//! Malformed lines are skipped and counted in [`ModInfo::skipped`]. Every
//! length is capped by a `pub const` below and every read is bounds
//! checked.

use super::elf::{ElfFile, PF_W, PF_X, PT_LOAD, ReadError};
use super::{ParseError, malformed};

/// The magic bytes that start the build information header.
pub const BUILDINFO_MAGIC: &[u8; 14] = b"\xff Go buildinf:";

/// Size of the build information header.
pub const BUILDINFO_HEADER_LEN: usize = 32;

/// The header is aligned to this many bytes within its section or segment.
pub const BUILDINFO_ALIGN: usize = 16;

/// Name of the ELF section holding the build information.
pub const BUILDINFO_SECTION: &[u8] = b".go.buildinfo";

/// How far into the `.go.buildinfo` section, or into the data segment of
/// an executable without section headers, the header is searched for. In
/// the section it is at offset 0; in the segment it follows `.data` when
/// the binary was linked externally (208 KiB into Docker's).
pub const MAX_SCAN_LEN: usize = 1 << 20;

/// The search reads this much at a time, so the usual hit at offset 0
/// costs one small read.
pub const SCAN_CHUNK_LEN: usize = 64 << 10;

/// Longest modinfo string accepted (either format).
pub const MAX_MODINFO_LEN: usize = 4 << 20;

/// Longest Go version string accepted (e.g. `go1.22-20240109-RC01 cl/...`).
pub const MAX_GO_VERSION_LEN: usize = 1_024;

/// At most this many `dep` lines are kept; further ones are counted as
/// skipped.
pub const MAX_DEPS: usize = 65_536;

/// At most this many `build` settings are kept; further ones are counted as
/// skipped.
pub const MAX_SETTINGS: usize = 4_096;

/// The sentinel before the modinfo text (`cmd/go/internal/modload.infoStart`).
pub const MODINFO_START: &[u8; 16] = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";

/// The sentinel after the modinfo text (`cmd/go/internal/modload.infoEnd`).
pub const MODINFO_END: &[u8; 16] = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";

/// The Go version and modinfo, as [`parse_buildinfo`] finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildInfoRef<'a> {
    /// Go 1.18 and later: both strings follow the header.
    Inline {
        /// The Go version, e.g. `go1.24.3`.
        go_version: &'a [u8],
        /// The modinfo text, still framed by its sentinels; pass it to
        /// [`parse_modinfo`].
        modinfo: &'a [u8],
    },
    /// Before Go 1.18: virtual addresses of two Go string headers, each to
    /// be translated, read (2 × `ptr_size` bytes) and decoded with
    /// [`parse_go_string_header`].
    Pointers {
        /// 4 or 8.
        ptr_size: usize,
        /// Byte order of the pointers and string headers.
        big_endian: bool,
        /// Address of the string header of `runtime.buildVersion`.
        go_version_addr: u64,
        /// Address of the string header of `runtime.modinfo`.
        modinfo_addr: u64,
    },
}

/// A module, as recorded in the modinfo.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Module {
    /// Module path, e.g. `golang.org/x/net`, or a directory for local
    /// replacements (`./internal/legacy`).
    pub path: String,
    /// Version, e.g. `v0.38.0` or `(devel)`; may be empty.
    pub version: String,
    /// `h1:` checksum; empty for the main module, for local replacements,
    /// and for modules that are replaced.
    pub sum: String,
    /// The module that replaced this one (`=>` line), if any.
    pub replace: Option<Box<Module>>,
}

/// The build information of a Go executable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModInfo {
    /// Go toolchain version, e.g. `go1.24.3`. [`parse_modinfo`] fills it
    /// only from a `go` line (which the linker does not write);
    /// [`read_elf_buildinfo`] fills it from the header.
    pub go_version: String,
    /// Import path of the main package (`path` line).
    pub path: String,
    /// The main module (`mod` line); all fields empty if there is none.
    pub main: Module,
    /// Every other module compiled in (`dep` lines), in order.
    pub deps: Vec<Module>,
    /// Build settings (`build` lines), unquoted, in order.
    pub settings: Vec<(String, String)>,
    /// Lines that were not understood or were over a cap.
    pub skipped: usize,
}

/// Finds the build information header in `data` (a section or segment that
/// starts at a 16-byte aligned address): the offset of the first
/// [`BUILDINFO_ALIGN`]-aligned copy of [`BUILDINFO_MAGIC`] that has a full
/// header after it. Only aligned offsets are compared, so the search is
/// linear and never sees a misaligned decoy.
pub fn find_buildinfo_magic(data: &[u8]) -> Option<usize> {
    (0..data.len())
        .step_by(BUILDINFO_ALIGN)
        .take_while(|&at| data.len() - at >= BUILDINFO_HEADER_LEN)
        .find(|&at| data[at..].starts_with(BUILDINFO_MAGIC))
}

/// Parses the build information header at the start of `section` (as found
/// by [`find_buildinfo_magic`]; the `.go.buildinfo` section starts with
/// it). For Go 1.18 and later the two strings are returned in place;
/// before that, the two pointers.
pub fn parse_buildinfo(section: &[u8]) -> Result<BuildInfoRef<'_>, ParseError> {
    const WHAT: &str = "go buildinfo";
    if !section.starts_with(BUILDINFO_MAGIC) {
        return Err(malformed(WHAT, "no magic"));
    }
    let header = section
        .get(..BUILDINFO_HEADER_LEN)
        .ok_or_else(|| malformed(WHAT, "truncated header"))?;
    let ptr_size = usize::from(header[14]);
    let flags = header[15];
    if flags & 2 != 0 {
        let rest = &section[BUILDINFO_HEADER_LEN..];
        let (go_version, rest) = inline_string(rest, MAX_GO_VERSION_LEN)
            .ok_or_else(|| malformed(WHAT, "bad go version string"))?;
        let (modinfo, _) = inline_string(rest, MAX_MODINFO_LEN)
            .ok_or_else(|| malformed(WHAT, "bad modinfo string"))?;
        if go_version.is_empty() {
            return Err(ParseError::Missing { what: "go version" });
        }
        return Ok(BuildInfoRef::Inline {
            go_version,
            modinfo,
        });
    }
    if ptr_size != 4 && ptr_size != 8 {
        return Err(malformed(WHAT, format!("pointer size {ptr_size}")));
    }
    let big_endian = flags & 1 != 0;
    let go_version_addr = read_word(&header[16..], ptr_size, big_endian)
        .ok_or_else(|| malformed(WHAT, "truncated header"))?;
    let modinfo_addr = read_word(&header[16 + ptr_size..], ptr_size, big_endian)
        .ok_or_else(|| malformed(WHAT, "truncated header"))?;
    Ok(BuildInfoRef::Pointers {
        ptr_size,
        big_endian,
        go_version_addr,
        modinfo_addr,
    })
}

/// Decodes a Go string header (data pointer, then length, each `ptr_size`
/// bytes in the given byte order) from the start of `bytes`: returns
/// `(data_addr, len)`.
pub fn parse_go_string_header(
    bytes: &[u8],
    ptr_size: usize,
    big_endian: bool,
) -> Result<(u64, u64), ParseError> {
    if ptr_size != 4 && ptr_size != 8 {
        return Err(malformed("go string", format!("pointer size {ptr_size}")));
    }
    let addr = read_word(bytes, ptr_size, big_endian);
    let len = bytes
        .get(ptr_size..)
        .and_then(|rest| read_word(rest, ptr_size, big_endian));
    match (addr, len) {
        (Some(addr), Some(len)) => Ok((addr, len)),
        _ => Err(malformed("go string", "truncated header")),
    }
}

/// A 4- or 8-byte unsigned word at the start of `bytes`.
fn read_word(bytes: &[u8], size: usize, big_endian: bool) -> Option<u64> {
    let word = bytes.get(..size)?;
    let mut value: u64 = 0;
    for i in 0..size {
        let b = if big_endian {
            word[i]
        } else {
            word[size - 1 - i]
        };
        value = (value << 8) | u64::from(b);
    }
    Some(value)
}

/// Decodes a uvarint-length-prefixed string of at most `max` bytes; returns
/// it and the rest of the input.
fn inline_string(bytes: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let (len, used) = read_uvarint(bytes)?;
    let len = usize::try_from(len).ok().filter(|&len| len <= max)?;
    let rest = &bytes[used..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Decodes an unsigned LEB128 varint as Go's `binary.Uvarint` does: at
/// most 10 bytes, the tenth at most 1. Returns the value and the bytes used.
fn read_uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return None;
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

/// What the previous module line was, for a `=>` line to attach to.
#[derive(Clone, Copy)]
enum Last {
    None,
    Main,
    Dep(usize),
}

/// Parses a modinfo string: strips the sentinels when present, then reads
/// the `path`, `mod`, `dep`, `=>`, `build` (and `go`) lines.
///
/// Fails only if the input is longer than [`MAX_MODINFO_LEN`], or is not
/// empty but has no line that could be understood. Otherwise malformed
/// lines (a wrong number of columns, an empty module path, invalid UTF-8, a
/// bad quoted build setting, an unknown keyword) are skipped and counted.
pub fn parse_modinfo(s: &[u8]) -> Result<ModInfo, ParseError> {
    const WHAT: &str = "go modinfo";
    if s.len() > MAX_MODINFO_LEN {
        return Err(malformed(WHAT, "too long"));
    }
    let s = s.strip_prefix(MODINFO_START).unwrap_or(s);
    let s = s.strip_suffix(MODINFO_END).unwrap_or(s);
    let mut info = ModInfo::default();
    let mut last = Last::None;
    let mut understood = 0usize;
    for line in s.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if parse_line(line, &mut info, &mut last) {
            understood += 1;
        } else {
            info.skipped += 1;
            last = Last::None;
        }
    }
    if understood == 0 && info.skipped > 0 {
        return Err(malformed(WHAT, "no modinfo lines"));
    }
    Ok(info)
}

/// Applies one line to `info`; false if it was skipped.
fn parse_line(line: &[u8], info: &mut ModInfo, last: &mut Last) -> bool {
    let Some(tab) = line.iter().position(|&b| b == b'\t') else {
        return false;
    };
    let (word, rest) = (&line[..tab], &line[tab + 1..]);
    match word {
        b"path" => match text(rest) {
            Some(path) => {
                info.path = path;
                true
            }
            None => false,
        },
        b"go" => match text(rest) {
            Some(v) if !v.is_empty() => {
                info.go_version = v;
                true
            }
            _ => false,
        },
        b"mod" => match module_line(rest) {
            Some(m) => {
                info.main = m;
                *last = Last::Main;
                true
            }
            None => false,
        },
        b"dep" => match module_line(rest) {
            Some(m) if info.deps.len() < MAX_DEPS => {
                info.deps.push(m);
                *last = Last::Dep(info.deps.len() - 1);
                true
            }
            _ => false,
        },
        b"=>" => {
            let Some(replacement) = replacement_line(rest) else {
                return false;
            };
            let target = match *last {
                Last::None => return false,
                Last::Main => &mut info.main,
                Last::Dep(i) => &mut info.deps[i],
            };
            // Go accepts one replacement per module line.
            *last = Last::None;
            target.replace = Some(Box::new(replacement));
            true
        }
        b"build" => match build_setting(rest) {
            Some(kv) if info.settings.len() < MAX_SETTINGS => {
                info.settings.push(kv);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Valid UTF-8 as an owned string.
fn text(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

/// `path \t version [\t sum]`, as Go's `readModuleLine` accepts it.
fn module_line(rest: &[u8]) -> Option<Module> {
    let cols: Vec<&[u8]> = rest.splitn(4, |&b| b == b'\t').collect();
    if cols.len() != 2 && cols.len() != 3 {
        return None;
    }
    module_from(&cols)
}

/// `path \t version \t sum`: a replacement always has three columns.
fn replacement_line(rest: &[u8]) -> Option<Module> {
    let cols: Vec<&[u8]> = rest.splitn(4, |&b| b == b'\t').collect();
    if cols.len() != 3 {
        return None;
    }
    module_from(&cols)
}

fn module_from(cols: &[&[u8]]) -> Option<Module> {
    let path = text(cols.first()?)?;
    if path.is_empty() {
        return None;
    }
    Some(Module {
        path,
        version: text(cols.get(1)?)?,
        sum: cols.get(2).map_or(Some(String::new()), |s| text(s))?,
        replace: None,
    })
}

/// `key=value`, where the key may be quoted (it then may contain `=`) and
/// the value may be quoted, as Go's `ParseBuildInfo` reads it.
fn build_setting(kv: &[u8]) -> Option<(String, String)> {
    let (key, raw_value) = match kv.first()? {
        b'=' => return None,
        b'"' | b'`' => {
            let (key, used) = go_unquote_prefix(kv)?;
            (key, kv[used..].strip_prefix(b"=")?)
        }
        _ => {
            let eq = kv.iter().position(|&b| b == b'=')?;
            (kv[..eq].to_vec(), &kv[eq + 1..])
        }
    };
    let value = match raw_value.first() {
        Some(b'"' | b'`') => {
            let (value, used) = go_unquote_prefix(raw_value)?;
            if used != raw_value.len() {
                return None;
            }
            value
        }
        _ => raw_value.to_vec(),
    };
    // Go strings may hold any bytes (a \xff escape, say); keep what is
    // there rather than drop the setting.
    Some((
        String::from_utf8_lossy(&key).into_owned(),
        String::from_utf8_lossy(&value).into_owned(),
    ))
}

/// Decodes the Go string literal at the start of `s` (double-quoted with
/// escapes, or backquoted and raw, carriage returns dropped); returns the
/// bytes and the length of the literal.
fn go_unquote_prefix(s: &[u8]) -> Option<(Vec<u8>, usize)> {
    let quote = *s.first()?;
    let mut out = Vec::new();
    if quote == b'`' {
        let end = 1 + s[1..].iter().position(|&b| b == b'`')?;
        out.extend(s[1..end].iter().filter(|&&b| b != b'\r'));
        return Some((out, end + 1));
    }
    if quote != b'"' {
        return None;
    }
    let mut i = 1;
    loop {
        let b = *s.get(i)?;
        i += 1;
        match b {
            b'"' => return Some((out, i)),
            b'\n' => return None,
            b'\\' => {
                let e = *s.get(i)?;
                i += 1;
                match e {
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'v' => out.push(11),
                    b'\\' | b'"' => out.push(e),
                    b'x' => {
                        out.push(u8::try_from(hex_value(s.get(i..i + 2)?)?).ok()?);
                        i += 2;
                    }
                    b'u' | b'U' => {
                        let n = if e == b'u' { 4 } else { 8 };
                        let c = char::from_u32(hex_value(s.get(i..i + n)?)?)?;
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        i += n;
                    }
                    b'0'..=b'7' => {
                        let digits = s.get(i - 1..i + 2)?;
                        let mut v: u32 = 0;
                        for &d in digits {
                            if !(b'0'..=b'7').contains(&d) {
                                return None;
                            }
                            v = v * 8 + u32::from(d - b'0');
                        }
                        out.push(u8::try_from(v).ok()?);
                        i += 2;
                    }
                    _ => return None,
                }
            }
            _ => out.push(b),
        }
    }
}

/// The value of a run of hex digits (at most 8, so it fits in `u32`).
fn hex_value(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |v, &d| {
        let d = (d as char).to_digit(16)?;
        Some(v << 4 | d)
    })
}

/// `p_type` of the segment that is made read-only after relocation.
const PT_GNU_RELRO: u32 = 0x6474_e552;

/// Enough bytes after the header to hold both varint lengths whenever the
/// version is within [`MAX_GO_VERSION_LEN`].
const PREFIX_LEN: usize = BUILDINFO_HEADER_LEN + 10 + MAX_GO_VERSION_LEN + 10;

/// Finds, reads and parses the Go build information of an ELF executable
/// through `read_at` (see [`ElfFile::read`]).
///
/// The header is searched for in the `.go.buildinfo` section, which every
/// Go executable since 1.13 has (the header itself dates from 1.13). An
/// executable with section headers but no such section is therefore not a
/// Go executable with build information. One without section headers is
/// searched the way Go's `debug/buildinfo` does it, in the first writable,
/// non-executable `PT_LOAD` segment, except that a segment starting inside
/// `PT_GNU_RELRO` is passed over: in externally linked binaries (cgo, as
/// Docker is) that one holds `.data.rel.ro` and the header is in the next.
/// At most [`MAX_SCAN_LEN`] bytes are searched, [`SCAN_CHUNK_LEN`] at a
/// time; then only the header and the strings after it are read. Pre-1.18
/// pointers are translated through the program headers.
///
/// Returns `Ok(None)` when the file is not a Go executable (no section, or
/// no header found).
pub fn read_elf_buildinfo<E, F>(
    elf: &ElfFile,
    read_at: &mut F,
) -> Result<Option<ModInfo>, ReadError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(u64, usize) -> Result<Vec<u8>, E>,
{
    let (offset, size) = if elf.sections.is_empty() {
        let relro: Vec<_> = elf
            .program_headers
            .iter()
            .filter(|p| p.ty == PT_GNU_RELRO)
            .collect();
        let in_relro = |vaddr: u64| {
            relro
                .iter()
                .any(|r| r.vaddr <= vaddr && vaddr - r.vaddr < r.memsz)
        };
        let segment = elf
            .program_headers
            .iter()
            .find(|p| p.ty == PT_LOAD && p.flags & (PF_X | PF_W) == PF_W && !in_relro(p.vaddr));
        match segment {
            Some(p) => (p.offset, p.filesz),
            None => return Ok(None),
        }
    } else {
        let Some(section) = elf.find_section(BUILDINFO_SECTION) else {
            return Ok(None);
        };
        section
            .file_range()
            .ok_or_else(|| malformed("go buildinfo", "section has no file contents"))?
    };
    let Some(data) = find_and_read(read_at, offset, size)? else {
        return Ok(None);
    };
    let (go_version, mut info) = match parse_buildinfo(&data)? {
        BuildInfoRef::Inline {
            go_version,
            modinfo,
        } => (go_version.to_vec(), parse_modinfo(modinfo)?),
        BuildInfoRef::Pointers {
            ptr_size,
            big_endian,
            go_version_addr,
            modinfo_addr,
        } => {
            let mut read_string = |addr: u64, max: usize| -> Result<Vec<u8>, ReadError<E>> {
                let header = elf.read_vaddr(addr, 2 * ptr_size, read_at)?;
                let (data_addr, len) = parse_go_string_header(&header, ptr_size, big_endian)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&len| len <= max)
                    .ok_or_else(|| malformed("go buildinfo", "string too long"))?;
                elf.read_vaddr(data_addr, len, read_at)
            };
            let go_version = read_string(go_version_addr, MAX_GO_VERSION_LEN)?;
            let modinfo = read_string(modinfo_addr, MAX_MODINFO_LEN)?;
            if go_version.is_empty() {
                return Err(ParseError::Missing { what: "go version" }.into());
            }
            (go_version, parse_modinfo(&modinfo)?)
        }
    };
    info.go_version = String::from_utf8(go_version)
        .map_err(|_| malformed("go buildinfo", "go version is not UTF-8"))?;
    Ok(Some(info))
}

/// Searches the first [`MAX_SCAN_LEN`] bytes of the `size` bytes at
/// `offset` for the header and returns the bytes from the header to the
/// end of its inline strings (or just the header, for the pointer format).
fn find_and_read<E, F>(
    read_at: &mut F,
    offset: u64,
    size: u64,
) -> Result<Option<Vec<u8>>, ReadError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(u64, usize) -> Result<Vec<u8>, E>,
{
    let mut read = |at: usize, len: usize| -> Result<Vec<u8>, ReadError<E>> {
        let mut bytes = read_at(offset.saturating_add(at as u64), len).map_err(ReadError::Read)?;
        bytes.truncate(len);
        Ok(bytes)
    };
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let scan = size.min(MAX_SCAN_LEN);
    let mut pos = 0;
    while pos < scan {
        // Overlap the chunks by a header, so one straddling two chunks is
        // still seen whole.
        let want = (SCAN_CHUNK_LEN + BUILDINFO_HEADER_LEN).min(size - pos);
        let chunk = read(pos, want)?;
        let hit = find_buildinfo_magic(&chunk).filter(|&at| at < SCAN_CHUNK_LEN);
        if let Some(at) = hit {
            let start = pos + at;
            let available = size - start;
            let mut data = chunk[at..].to_vec();
            if data.len() < PREFIX_LEN.min(available) {
                data = read(start, PREFIX_LEN.min(available))?;
            }
            let need = buildinfo_len(&data).min(available);
            if data.len() < need {
                data = read(start, need)?;
            }
            data.truncate(need);
            return Ok(Some(data));
        }
        if chunk.len() < want {
            break; // the file ended
        }
        pos += SCAN_CHUNK_LEN;
    }
    Ok(None)
}

/// How many bytes, from the start of the header, the build information
/// needs: the header, plus the two inline strings when there are any. For
/// malformed or over-long strings it returns what is at hand, and
/// [`parse_buildinfo`] then reports the error.
fn buildinfo_len(data: &[u8]) -> usize {
    let inline = data.get(15).is_some_and(|flags| flags & 2 != 0);
    if !inline {
        return BUILDINFO_HEADER_LEN;
    }
    let strings = (|| {
        let rest = data.get(BUILDINFO_HEADER_LEN..)?;
        let (version_len, used) = read_uvarint(rest)?;
        let version_len = usize::try_from(version_len)
            .ok()
            .filter(|&l| l <= MAX_GO_VERSION_LEN)?;
        let second = used + version_len;
        let (modinfo_len, used2) = read_uvarint(rest.get(second..)?)?;
        let modinfo_len = usize::try_from(modinfo_len)
            .ok()
            .filter(|&l| l <= MAX_MODINFO_LEN)?;
        Some(second + used2 + modinfo_len)
    })();
    strings.map_or(data.len(), |len| BUILDINFO_HEADER_LEN + len)
}

#[cfg(test)]
mod tests {
    use super::super::elf::testutil::*;
    use super::super::elf::{ElfFile, PF_W, PF_X};
    use super::*;
    use std::cell::Cell;

    /// The `go version -m` outputs in the shared data.
    const TXT_FILES: &[&str] = &[
        "docker.txt",
        "syft.txt",
        "terraform.txt",
        "terraform-provider-aws_v5.100.0_x5.txt",
        "trivy.txt",
    ];

    fn module(path: &str, version: &str, sum: &str) -> Module {
        Module {
            path: path.into(),
            version: version.into(),
            sum: sum.into(),
            replace: None,
        }
    }

    /// Undoes the quoting `go version -m` applies to the build settings in
    /// the shared data, which only escapes `"` and `\`.
    fn unquote_simple(v: &str) -> String {
        let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
            return v.to_string();
        };
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                let e = chars.next().unwrap();
                assert!(
                    e == '"' || e == '\\',
                    "unexpected escape \\{e} in test data"
                );
                out.push(e);
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Reads a `go version -m` output: the binary's path, what the parser
    /// should find in it, and the modinfo text the linker embedded (the
    /// output minus its first line and the leading tabs, framed by the
    /// sentinels).
    fn expected_from_txt(txt: &str) -> (String, ModInfo, Vec<u8>) {
        let mut lines = txt.lines();
        let (binary, go_version) = lines.next().unwrap().split_once(": ").unwrap();
        let mut info = ModInfo {
            go_version: go_version.into(),
            ..ModInfo::default()
        };
        let mut modinfo = MODINFO_START.to_vec();
        for line in lines {
            let line = line.strip_prefix('\t').expect("tab-indented line");
            modinfo.extend_from_slice(line.as_bytes());
            modinfo.push(b'\n');
            let cols: Vec<&str> = line.split('\t').collect();
            match cols[..] {
                // Go writes an empty line after each replacement.
                [""] => {}
                ["path", p] => info.path = p.into(),
                ["mod", p, v, s] => info.main = module(p, v, s),
                ["dep", p, v, s] => info.deps.push(module(p, v, s)),
                ["dep", p, v] => info.deps.push(module(p, v, "")),
                ["=>", p, v, s] => {
                    let target = info.deps.last_mut().unwrap_or(&mut info.main);
                    assert!(target.replace.is_none());
                    target.replace = Some(Box::new(module(p, v, s)));
                }
                ["build", kv] => {
                    let (k, v) = kv.split_once('=').unwrap();
                    info.settings.push((k.into(), unquote_simple(v)));
                }
                _ => panic!("unexpected line in test data: {line:?}"),
            }
        }
        modinfo.extend_from_slice(MODINFO_END);
        (binary.to_string(), info, modinfo)
    }

    /// Reads the Go build information of a real file, the way the agent
    /// does, and returns it with the number of bytes read.
    fn read_binary(path: &str) -> Option<(ModInfo, u64)> {
        let file = std::fs::File::open(path).ok()?;
        let total = Cell::new(0);
        let mut read_at = file_reader(&file, &total);
        let elf = ElfFile::read(&mut read_at).unwrap();
        let info = read_elf_buildinfo(&elf, &mut read_at).unwrap().expect(path);
        Some((info, total.get()))
    }

    #[test]
    fn real_binaries_match_go_version_m() {
        // Test-only I/O: the parsers never read files.
        let mut checked = 0;
        for name in TXT_FILES {
            let txt = String::from_utf8(shared_data(&format!("gobuildinfo/{name}"))).unwrap();
            let (binary, want, modinfo) = expected_from_txt(&txt);
            assert!(!want.deps.is_empty() || *name == "docker.txt");
            // The text itself, as the linker frames it.
            let mut got = parse_modinfo(&modinfo).unwrap();
            assert_eq!(got.skipped, 0, "{name}");
            got.go_version = want.go_version.clone();
            assert_eq!(got, want, "{name}");
            // The binary, where it is on this machine.
            let Some((got, read)) = read_binary(&binary) else {
                eprintln!("no {binary} here; checked {name} as text only");
                continue;
            };
            assert_eq!(got, want, "{binary}");
            // Header, tables, string table and the section: well under
            // 1 MiB of a file that may be 700 MB.
            assert!(read < 1 << 20, "{binary}: read {read} bytes");
            checked += 1;
        }
        eprintln!("checked {checked} real Go binaries");
    }

    #[test]
    fn real_data_details() {
        // A few values spelled out, so a bug shared by the parser and the
        // test's reading of the .txt files cannot hide.
        let txt = String::from_utf8(shared_data("gobuildinfo/docker.txt")).unwrap();
        let (_, _, modinfo) = expected_from_txt(&txt);
        let docker = parse_modinfo(&modinfo).unwrap();
        assert_eq!(docker.path, "github.com/docker/cli/cmd/docker");
        assert_eq!(docker.main, Module::default());
        assert!(docker.deps.is_empty());
        let ldflags = &docker
            .settings
            .iter()
            .find(|(k, _)| k == "-ldflags")
            .unwrap()
            .1;
        assert!(ldflags.starts_with(" -X \"github.com/docker/cli/cli/version.GitCommit=e6534b4\""));
        assert!(ldflags.ends_with("-extldflags -static"));

        let txt = String::from_utf8(shared_data("gobuildinfo/terraform.txt")).unwrap();
        let (_, _, modinfo) = expected_from_txt(&txt);
        let tf = parse_modinfo(&modinfo).unwrap();
        assert_eq!(
            tf.main,
            module("github.com/hashicorp/terraform", "(devel)", "")
        );
        let replaced: Vec<_> = tf.deps.iter().filter(|d| d.replace.is_some()).collect();
        assert_eq!(replaced.len(), 9);
        let legacy = tf
            .deps
            .iter()
            .find(|d| d.path == "github.com/hashicorp/terraform/internal/legacy")
            .unwrap();
        assert_eq!(legacy.sum, "");
        assert_eq!(
            legacy.replace.as_deref(),
            Some(&module("./internal/legacy", "(devel)", ""))
        );

        let txt = String::from_utf8(shared_data(
            "gobuildinfo/terraform-provider-aws_v5.100.0_x5.txt",
        ))
        .unwrap();
        let (_, _, modinfo) = expected_from_txt(&txt);
        let aws = parse_modinfo(&modinfo).unwrap();
        let log = aws
            .deps
            .iter()
            .find(|d| d.path == "github.com/hashicorp/terraform-plugin-log")
            .unwrap();
        assert_eq!(
            log.replace.as_deref().map(|r| r.path.as_str()),
            Some("github.com/gdavison/terraform-plugin-log")
        );
    }

    #[test]
    fn other_go_binaries_on_this_machine() {
        // Go binaries that happen to be installed (the Google Cloud SDK
        // ships several): each parses with no line skipped.
        let dirs = [
            "/usr/lib/google-cloud-sdk/bin",
            "/usr/lib/google-cloud-sdk/platform/bigtable-emulator",
        ];
        let mut checked = 0;
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(file) = std::fs::File::open(&path) else {
                    continue;
                };
                let total = Cell::new(0);
                let mut read_at = file_reader(&file, &total);
                let Ok(elf) = ElfFile::read(&mut read_at) else {
                    continue; // a script
                };
                let Some(info) = read_elf_buildinfo(&elf, &mut read_at).unwrap() else {
                    continue; // not Go
                };
                assert!(info.go_version.starts_with("go"), "{path:?}");
                assert_eq!(info.skipped, 0, "{path:?}");
                // Binaries built outside module mode (local-extract, by
                // Google's own toolchain) have an empty modinfo.
                if info.path.is_empty() {
                    assert_eq!(info.main, Module::default());
                    assert!(info.deps.is_empty() && info.settings.is_empty());
                }
                assert!(total.get() < 1 << 20);
                checked += 1;
            }
        }
        eprintln!("checked {checked} other Go binaries");
    }

    #[test]
    fn real_binary_without_section_headers() {
        // Hide the section header table (e_shoff = 0, e_shnum = 0): the
        // header is then found at the start of the first writable segment,
        // as Go's own reader finds it.
        let path = "/usr/local/bin/docker";
        if !crate::parse::image::has(path) {
            return;
        }
        let file = std::fs::File::open(path).unwrap();
        let total = Cell::new(0);
        let mut inner = file_reader(&file, &total);
        let mut read_at = |offset: u64, len: usize| {
            let mut bytes = inner(offset, len)?;
            if offset == 0 && bytes.len() >= 64 {
                bytes[40..48].fill(0);
                bytes[60..64].fill(0);
            }
            Ok::<_, std::io::Error>(bytes)
        };
        let elf = ElfFile::read(&mut read_at).unwrap();
        assert!(elf.sections.is_empty());
        let stripped = read_elf_buildinfo(&elf, &mut read_at).unwrap().unwrap();
        let (with_sections, _) = read_binary(path).unwrap();
        assert_eq!(stripped, with_sections);
    }

    /// A pre-1.18 executable: the header holds pointers to Go string
    /// headers in another segment.
    fn old_format_elf(is_64: bool, big: bool, version: &[u8], modinfo: &[u8]) -> Vec<u8> {
        let ptr = if is_64 { 8 } else { 4 };
        let word = |v: u64| -> Vec<u8> {
            let b = if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            if big {
                b[8 - ptr..].to_vec()
            } else {
                b[..ptr].to_vec()
            }
        };
        let (bi_addr, ro_addr) = (0x60_0000u64, 0x40_0000u64);
        let mut header = BUILDINFO_MAGIC.to_vec();
        header.push(ptr as u8);
        header.push(u8::from(big));
        header.extend(word(ro_addr));
        header.extend(word(ro_addr + 2 * ptr as u64));
        header.resize(BUILDINFO_HEADER_LEN, 0);
        let mut ro = Vec::new();
        ro.extend(word(ro_addr + 64));
        ro.extend(word(version.len() as u64));
        ro.extend(word(ro_addr + 64 + version.len() as u64));
        ro.extend(word(modinfo.len() as u64));
        ro.resize(64, 0);
        ro.extend_from_slice(version);
        ro.extend_from_slice(modinfo);
        build_elf(
            is_64,
            big,
            &[
                TestSection {
                    load: Some(4 | PF_X),
                    ..TestSection::progbits(b".text", 0x30_0000, vec![0xc3; 32])
                },
                TestSection {
                    load: Some(4),
                    ..TestSection::progbits(b".rodata", ro_addr, ro)
                },
                TestSection {
                    load: Some(4 | PF_W),
                    ..TestSection::progbits(b".go.buildinfo", bi_addr, header)
                },
            ],
            false,
        )
    }

    const SMALL_MODINFO: &[u8] = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6\
path\texample.com/cmd/x\n\
mod\texample.com\tv1.0.0\th1:abc=\n\
dep\tgolang.org/x/net\tv0.1.0\n\
=>\tgolang.org/x/net\tv0.2.0\th1:def=\n\
dep\tgolang.org/x/text\tv0.3.7\th1:ghi=\n\
\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";

    #[test]
    fn pre_1_18_pointer_format_in_every_class_and_byte_order() {
        let want = ModInfo {
            go_version: "go1.16.15".into(),
            path: "example.com/cmd/x".into(),
            main: module("example.com", "v1.0.0", "h1:abc="),
            deps: vec![
                Module {
                    replace: Some(Box::new(module("golang.org/x/net", "v0.2.0", "h1:def="))),
                    ..module("golang.org/x/net", "v0.1.0", "")
                },
                module("golang.org/x/text", "v0.3.7", "h1:ghi="),
            ],
            settings: vec![],
            skipped: 0,
        };
        for is_64 in [false, true] {
            for big in [false, true] {
                let bytes = old_format_elf(is_64, big, b"go1.16.15", SMALL_MODINFO);
                let mut read_at = slice_reader(&bytes);
                let mut elf = ElfFile::read(&mut read_at).unwrap();
                let got = read_elf_buildinfo(&elf, &mut read_at).unwrap().unwrap();
                assert_eq!(got, want, "{is_64} {big}");
                // The header itself.
                let section = *elf.find_section(BUILDINFO_SECTION).unwrap();
                let data = elf.read_section(&section, 64, &mut read_at).unwrap();
                let BuildInfoRef::Pointers {
                    ptr_size,
                    big_endian,
                    go_version_addr,
                    ..
                } = parse_buildinfo(&data).unwrap()
                else {
                    panic!("inline?");
                };
                assert_eq!((ptr_size, big_endian), (if is_64 { 8 } else { 4 }, big));
                assert_eq!(go_version_addr, 0x40_0000);
                // Without section headers, through the writable segment.
                elf.sections.clear();
                let got = read_elf_buildinfo(&elf, &mut read_at).unwrap().unwrap();
                assert_eq!(got, want);
            }
        }
        // Pointers that lead nowhere, or to absurd lengths.
        let bytes = old_format_elf(true, false, b"go1.16", SMALL_MODINFO);
        let ro = bytes
            .windows(8)
            .position(|w| w == (0x40_0040u64).to_le_bytes())
            .unwrap();
        for (at, value) in [
            (ro, 0x99_0000u64),
            (ro + 8, u64::MAX),
            (ro + 8, MAX_GO_VERSION_LEN as u64 + 1),
            (ro + 24, MAX_MODINFO_LEN as u64 + 1),
            (ro + 24, 1 << 40),
        ] {
            let mut bad = bytes.clone();
            bad[at..at + 8].copy_from_slice(&value.to_le_bytes());
            let mut read_at = slice_reader(&bad);
            let elf = ElfFile::read(&mut read_at).unwrap();
            assert!(
                read_elf_buildinfo(&elf, &mut read_at).is_err(),
                "{at} {value}"
            );
        }
        // An empty version is "not a Go binary" in Go; here an error.
        let bytes = old_format_elf(false, true, b"", SMALL_MODINFO);
        let mut read_at = slice_reader(&bytes);
        let elf = ElfFile::read(&mut read_at).unwrap();
        assert!(read_elf_buildinfo(&elf, &mut read_at).is_err());
    }

    #[test]
    fn not_go_binaries() {
        let bytes = build_elf(
            true,
            false,
            &[TestSection {
                load: Some(4 | PF_W),
                ..TestSection::progbits(b".data", 0x1000, vec![0; 4096])
            }],
            false,
        );
        let mut read_at = slice_reader(&bytes);
        let elf = ElfFile::read(&mut read_at).unwrap();
        assert_eq!(read_elf_buildinfo(&elf, &mut read_at).unwrap(), None);
        let bytes = build_elf(true, false, &[], false);
        let mut read_at = slice_reader(&bytes);
        let elf = ElfFile::read(&mut read_at).unwrap();
        assert_eq!(read_elf_buildinfo(&elf, &mut read_at).unwrap(), None);
        // /bin/true is C.
        if let Ok(file) = std::fs::File::open("/bin/true") {
            let total = Cell::new(0);
            let mut read_at = file_reader(&file, &total);
            let elf = ElfFile::read(&mut read_at).unwrap();
            assert_eq!(read_elf_buildinfo(&elf, &mut read_at).unwrap(), None);
        }
    }

    /// An inline (Go >= 1.18) buildinfo section.
    fn inline_section(version: &[u8], modinfo: &[u8]) -> Vec<u8> {
        let mut out = BUILDINFO_MAGIC.to_vec();
        out.extend_from_slice(&[8, 2]);
        out.resize(BUILDINFO_HEADER_LEN, 0);
        for s in [version, modinfo] {
            let mut n = s.len() as u64;
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    out.push(b);
                    break;
                }
                out.push(b | 0x80);
            }
            out.extend_from_slice(s);
        }
        out
    }

    #[test]
    fn buildinfo_header_edge_cases() {
        let section = inline_section(b"go1.24.3", SMALL_MODINFO);
        assert_eq!(
            parse_buildinfo(&section),
            Ok(BuildInfoRef::Inline {
                go_version: b"go1.24.3",
                modinfo: SMALL_MODINFO
            })
        );
        // Truncated anywhere: an error, never a panic or a short string.
        for n in 0..section.len() {
            assert!(parse_buildinfo(&section[..n]).is_err(), "{n}");
        }
        // Truncated and overlong varints.
        let mut bad = section[..BUILDINFO_HEADER_LEN].to_vec();
        bad.extend_from_slice(&[0x80, 0x80]);
        assert!(parse_buildinfo(&bad).is_err());
        let mut bad = section[..BUILDINFO_HEADER_LEN].to_vec();
        bad.extend_from_slice(&[0xff; 10]);
        bad.push(0);
        assert!(parse_buildinfo(&bad).is_err());
        assert_eq!(
            read_uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Some((u64::MAX, 10))
        );
        assert_eq!(
            read_uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(read_uvarint(&[0x80; 11]), None);
        assert_eq!(read_uvarint(&[]), None);
        assert_eq!(read_uvarint(&[0x96, 0x01]), Some((150, 2)));
        // A version longer than the cap, an empty version.
        let long = vec![b'g'; MAX_GO_VERSION_LEN + 1];
        assert!(parse_buildinfo(&inline_section(&long, b"")).is_err());
        assert_eq!(
            parse_buildinfo(&inline_section(b"", b"")),
            Err(ParseError::Missing { what: "go version" })
        );
        // Bad pointer sizes in the old format.
        let mut bad = section.clone();
        bad[15] = 0;
        bad[14] = 3;
        assert!(parse_buildinfo(&bad).is_err());
        bad[14] = 4;
        assert!(matches!(
            parse_buildinfo(&bad),
            Ok(BuildInfoRef::Pointers { ptr_size: 4, .. })
        ));
        assert!(parse_buildinfo(b"\xff Go buildinf").is_err());
        assert!(parse_buildinfo(&[0; 64]).is_err());
        // String headers.
        assert_eq!(
            parse_go_string_header(&[0, 0, 0x10, 0, 0, 0, 0, 5], 4, true),
            Ok((0x1000, 5))
        );
        assert_eq!(
            parse_go_string_header(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0], 8, false),
            Ok((1, 2))
        );
        assert!(parse_go_string_header(&[0; 15], 8, false).is_err());
        assert!(parse_go_string_header(&[0; 16], 2, false).is_err());
    }

    #[test]
    fn magic_search() {
        let header = inline_section(b"go1.22", b"");
        let mut data = vec![0u8; 100];
        data.extend_from_slice(&header); // at 100: not aligned
        data.resize(160, 0);
        data.extend_from_slice(&header); // at 160: aligned
        assert_eq!(find_buildinfo_magic(&data), Some(160));
        assert_eq!(find_buildinfo_magic(&data[..160 + 31]), None);
        assert_eq!(find_buildinfo_magic(&data[..160 + 32]), Some(160));
        assert_eq!(find_buildinfo_magic(&header), Some(0));
        assert_eq!(find_buildinfo_magic(b""), None);
        assert_eq!(find_buildinfo_magic(BUILDINFO_MAGIC), None);
    }

    #[test]
    fn modinfo_edge_cases() {
        // Empty, with or without sentinels: a binary built outside module
        // mode.
        assert_eq!(parse_modinfo(b""), Ok(ModInfo::default()));
        let framed = [&MODINFO_START[..], &MODINFO_END[..]].concat();
        assert_eq!(parse_modinfo(&framed), Ok(ModInfo::default()));
        // Only junk.
        assert!(parse_modinfo(b"hello world").is_err());
        assert!(parse_modinfo(&vec![b'x'; MAX_MODINFO_LEN + 1]).is_err());

        let input = b"go\tgo1.21.0\n\
path\tp\n\
mod\tm\t(devel)\t\n\
=>\t../m\t(devel)\t\n\
=>\tsecond\tv1\th1:x\n\
dep\ta\tv1\th1:a\textra\n\
dep\t\tv1\th1:a\n\
dep\tb\n\
dep\tc\tv1\n\
=>\tc2\tv2\n\
dep\td\tv1\th1:d\n\
=>\td2\tv2\th1:d2\n\
dep\te\t\xff\n\
bogus line\n\
future\tkey\n\
build\t-tags=osusergo,netgo\n\
build\t\"-ldflags\"=\"-s -w -X \\\"main.v=1\\\"\"\n\
build\t\"we\\tird=key\"=`raw \\n value`\n\
build\tCGO_CFLAGS=\n\
build\tesc=\"\\x41\\101\\u00e9\\U0001F600\\a\\v\"\n\
build\t=nokey\n\
build\tnoequals\n\
build\tbad=\"unterminated\n\
build\tbad=\"trailing\"x\n\
build\tbad=\"\\q\"\n\
build\tbad=\"\\ud800\"\n\
build\tbad=\"\\400\"\n\
build\t\"k\"v\n\
build\tlast=1";
        let got = parse_modinfo(input).unwrap();
        assert_eq!(got.go_version, "go1.21.0");
        assert_eq!(got.path, "p");
        assert_eq!(
            got.main,
            Module {
                replace: Some(Box::new(module("../m", "(devel)", ""))),
                ..module("m", "(devel)", "")
            }
        );
        assert_eq!(
            got.deps,
            vec![
                module("c", "v1", ""),
                Module {
                    replace: Some(Box::new(module("d2", "v2", "h1:d2"))),
                    ..module("d", "v1", "h1:d")
                },
            ]
        );
        assert_eq!(
            got.settings,
            vec![
                ("-tags".into(), "osusergo,netgo".into()),
                ("-ldflags".into(), "-s -w -X \"main.v=1\"".into()),
                ("we\tird=key".into(), "raw \\n value".into()),
                ("CGO_CFLAGS".into(), String::new()),
                ("esc".into(), "AAé😀\u{7}\u{b}".into()),
                ("last".into(), "1".into()),
            ]
        );
        // second "=>", dep a (4 columns), empty path, dep b (1 column),
        // "=>" c2 (2 columns), dep e (UTF-8), "bogus line", "future", and
        // eight bad build lines.
        assert_eq!(got.skipped, 16);
        // A replacement whose module line was skipped is skipped too.
        let got = parse_modinfo(b"dep\t\tv1\n=>\tx\tv\ts\n").unwrap_err();
        assert_eq!(got, malformed("go modinfo", "no modinfo lines"));
        // CRLF is not Go's, but only costs the \r.
        let got = parse_modinfo(b"path\tp\r\ndep\ta\tv1\th1:a\r\n").unwrap();
        assert_eq!(got.path, "p\r");
        assert_eq!(got.deps[0].sum, "h1:a\r");
        // Only one of the two sentinels.
        let got = parse_modinfo(&[&MODINFO_START[..], b"path\tp\n"].concat()).unwrap();
        assert_eq!(got.path, "p");
        let got = parse_modinfo(&[&b"path\tp\n"[..], &MODINFO_END[..]].concat()).unwrap();
        assert_eq!(got.path, "p");
    }

    #[test]
    fn caps_and_hostile_sizes() {
        let start = crate::parse::fuzz::CpuTimer::start();
        // More deps than the cap.
        let mut input = Vec::new();
        for i in 0..MAX_DEPS + 10 {
            input.extend_from_slice(format!("dep\tm{i}\tv1\th1:x\n").as_bytes());
        }
        input.extend_from_slice(b"=>\tr\tv\ts\n");
        let got = parse_modinfo(&input).unwrap();
        assert_eq!(got.deps.len(), MAX_DEPS);
        assert_eq!(got.skipped, 11);
        assert!(got.deps.iter().all(|d| d.replace.is_none()));
        // More settings than the cap.
        let input = b"build\tk=v\n".repeat(MAX_SETTINGS + 1);
        let got = parse_modinfo(&input).unwrap();
        assert_eq!((got.settings.len(), got.skipped), (MAX_SETTINGS, 1));
        // One 4 MiB line, 4 MiB of tabs, 4 MiB of quotes and backslashes.
        let mut long = b"build\tk=\"".to_vec();
        long.extend(b"\\\\".repeat((MAX_MODINFO_LEN - 20) / 2));
        long.push(b'"');
        assert_eq!(
            parse_modinfo(&long).unwrap().settings[0].1.len(),
            (MAX_MODINFO_LEN - 20) / 2
        );
        assert!(parse_modinfo(&vec![b'\t'; MAX_MODINFO_LEN]).is_err());
        let mut tabs = b"dep".to_vec();
        tabs.extend(vec![b'\t'; MAX_MODINFO_LEN - 3]);
        assert!(parse_modinfo(&tabs).is_err());
        // 64 MiB of junk, and 64 MiB with the magic at every odd 8 bytes.
        let mut rng = Rng(42);
        let junk = rng.bytes(64 << 20);
        assert!(parse_modinfo(&junk).is_err());
        assert!(parse_buildinfo(&junk).is_err());
        assert_eq!(find_buildinfo_magic(&junk), None);
        let mut decoys = vec![0u8; 64 << 20];
        for at in (8..decoys.len() - 32).step_by(16) {
            decoys[at..at + 14].copy_from_slice(BUILDINFO_MAGIC);
        }
        assert_eq!(find_buildinfo_magic(&decoys), None);
        // A .go.buildinfo section of 64 MiB: at most MAX_SCAN_LEN of it is
        // searched, and a header claiming huge strings reads no more.
        let mut data = vec![0; 64 << 20];
        let bytes = build_elf(
            true,
            false,
            &[TestSection::progbits(
                BUILDINFO_SECTION,
                0x1000,
                data.clone(),
            )],
            false,
        );
        let (none, read) = read_counted(&bytes);
        assert_eq!(none.unwrap(), None);
        assert!(read < 2 * MAX_SCAN_LEN as u64, "{read}");
        let header = inline_section(b"go1.0", b"");
        data[..header.len()].copy_from_slice(&header);
        for modinfo_len in [
            u64::MAX,
            MAX_MODINFO_LEN as u64 + 1,
            MAX_MODINFO_LEN as u64,
            60 << 20,
        ] {
            let mut d = data[..BUILDINFO_HEADER_LEN + 6].to_vec();
            let mut n = modinfo_len;
            while n >= 0x80 {
                d.push((n as u8) | 0x80);
                n >>= 7;
            }
            d.push(n as u8);
            let mut section = data.clone();
            section[..d.len()].copy_from_slice(&d);
            let bytes = build_elf(
                true,
                false,
                &[TestSection::progbits(BUILDINFO_SECTION, 0x1000, section)],
                false,
            );
            let (got, read) = read_counted(&bytes);
            assert!(got.is_err(), "{modinfo_len}");
            assert!(
                read < MAX_SCAN_LEN as u64 + MAX_MODINFO_LEN as u64 + 8192,
                "{read}"
            );
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(60));
    }

    /// Runs the whole pipeline over `bytes`, counting the bytes read.
    fn read_counted(bytes: &[u8]) -> (Result<Option<ModInfo>, ReadError<std::io::Error>>, u64) {
        let total = Cell::new(0u64);
        let mut inner = slice_reader(bytes);
        let mut read_at = |off: u64, len: usize| {
            let got = inner(off, len)?;
            total.set(total.get() + got.len() as u64);
            Ok::<_, std::io::Error>(got)
        };
        let result =
            ElfFile::read(&mut read_at).and_then(|elf| read_elf_buildinfo(&elf, &mut read_at));
        (result, total.get())
    }

    #[test]
    fn header_deep_in_a_segment_without_section_headers() {
        let section = inline_section(b"go1.22.1", SMALL_MODINFO);
        for at in [
            0,
            16,
            SCAN_CHUNK_LEN - 16,
            SCAN_CHUNK_LEN,
            208 << 10,
            MAX_SCAN_LEN - 32,
        ] {
            let mut data = vec![0u8; at];
            // A misaligned decoy first.
            if at >= 64 {
                data[8..8 + 14].copy_from_slice(BUILDINFO_MAGIC);
            }
            data.extend_from_slice(&section);
            data.resize(data.len() + 100, 0);
            let segment = TestSection {
                load: Some(4 | PF_W),
                ..TestSection::progbits(b".data", 0x10_0000, data)
            };
            let mut bytes = build_elf(true, false, &[segment], false);
            // Drop the section header table.
            bytes[40..48].fill(0);
            bytes[60..64].fill(0);
            let (got, read) = read_counted(&bytes);
            let got = got.unwrap().unwrap_or_else(|| panic!("{at}"));
            assert_eq!(got.go_version, "go1.22.1");
            assert_eq!(got.deps.len(), 2);
            assert!(read < (at + 2 * SCAN_CHUNK_LEN) as u64);
        }
        // Past the scan limit it is not found.
        let mut data = vec![0u8; MAX_SCAN_LEN];
        data.extend_from_slice(&section);
        let segment = TestSection {
            load: Some(4 | PF_W),
            ..TestSection::progbits(b".data", 0x10_0000, data)
        };
        let mut bytes = build_elf(true, false, &[segment], false);
        bytes[40..48].fill(0);
        bytes[60..64].fill(0);
        assert_eq!(read_counted(&bytes).0.unwrap(), None);
    }

    #[test]
    fn relro_segment_is_passed_over() {
        // An externally linked binary without section headers: the first
        // writable segment is RELRO (.data.rel.ro), and holds a decoy
        // header; the real one is in the next writable segment.
        let segments = |relro: bool| {
            [
                TestSection {
                    load: Some(4 | PF_W),
                    relro,
                    ..TestSection::progbits(
                        b".data.rel.ro",
                        0x10_0000,
                        inline_section(b"go0.decoy", b""),
                    )
                },
                TestSection {
                    load: Some(4 | PF_W),
                    ..TestSection::progbits(
                        b".data",
                        0x20_0000,
                        inline_section(b"go1.24.3", SMALL_MODINFO),
                    )
                },
            ]
        };
        for (relro, want) in [(true, "go1.24.3"), (false, "go0.decoy")] {
            let mut bytes = build_elf(true, false, &segments(relro), false);
            bytes[40..48].fill(0);
            bytes[60..64].fill(0);
            let got = read_counted(&bytes).0.unwrap().unwrap();
            assert_eq!(got.go_version, want);
        }
    }

    #[test]
    fn fuzz_no_panics() {
        let txt = String::from_utf8(shared_data("gobuildinfo/terraform.txt")).unwrap();
        let (_, _, tf_modinfo) = expected_from_txt(&txt);
        let sections = [
            inline_section(b"go1.23.3", &tf_modinfo),
            inline_section(b"go1.24.3", SMALL_MODINFO),
        ];
        let elves = [
            old_format_elf(true, false, b"go1.16", SMALL_MODINFO),
            old_format_elf(false, true, b"go1.12", SMALL_MODINFO),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..3000 {
            match i % 3 {
                0 => {
                    let pick = rng.below(sections.len());
                    // Mutating only the first KiB keeps the rest intact,
                    // so the modinfo parser sees deep, valid-looking input.
                    let s = &sections[pick];
                    let head = s.len().min(1024);
                    let mut input = mutate(&mut rng, &s[..head]);
                    input.extend_from_slice(&s[head..]);
                    if let Ok(BuildInfoRef::Inline {
                        modinfo,
                        go_version,
                    }) = parse_buildinfo(&input)
                    {
                        assert!(go_version.len() <= MAX_GO_VERSION_LEN);
                        let _ = parse_modinfo(modinfo);
                    }
                    let _ = find_buildinfo_magic(&input);
                }
                1 => {
                    let start = rng.below(tf_modinfo.len());
                    let end = (start + rng.below(4096)).min(tf_modinfo.len());
                    let input = mutate(&mut rng, &tf_modinfo[start..end]);
                    if let Ok(info) = parse_modinfo(&input) {
                        assert!(info.deps.len() + info.skipped <= input.len());
                    }
                }
                _ => {
                    let pick = rng.below(elves.len());
                    let input = mutate(&mut rng, &elves[pick]);
                    let mut read_at = slice_reader(&input);
                    if let Ok(elf) = ElfFile::read(&mut read_at)
                        && let Ok(Some(info)) = read_elf_buildinfo(&elf, &mut read_at)
                    {
                        assert!(info.deps.len() <= 2);
                    }
                }
            }
        }
    }
}
