//! Piecewise ZIP reading for jars that a JVM holds open: the End Of Central
//! Directory record, the central directory, local headers and entry data.
//!
//! A jar can be 100 MB or more, and the agent wants three or four small
//! entries out of it, so nothing here takes the whole file. Each function
//! parses one slice that the caller read with `pread` and says where to read
//! next:
//!
//! 1. Read the last `min(file_len, TAIL_LEN)` bytes and call [`parse_eocd`].
//!    It returns either the central directory's location or, for a ZIP64
//!    archive, a [`Zip64Locator`]: read [`ZIP64_EOCD_LEN`] bytes at its
//!    `record_offset` and call [`parse_zip64_eocd`]; if that fails, try
//!    again at [`Zip64Locator::fallback_offset`] (with `record_offset` set
//!    to it).
//! 2. Read `size` bytes at the [`CdLocation`]'s `offset` (at most
//!    [`MAX_CD_LEN`]) and call [`parse_central_directory`].
//! 3. For each wanted [`CdEntry`], call [`check_entry`] with the most bytes
//!    you will accept (it refuses entries whose stored data is longer than
//!    that could need), read [`LOCAL_HEADER_LEN`] bytes at
//!    [`CdLocation::local_header_pos`], call [`entry_data_range`], read that
//!    range and call [`decode_entry`]. For a manifest, whose start is
//!    enough, use [`check_entry_prefix`] and [`inflate_prefix`].
//!
//! [`ZipBytes`] runs the same steps over an archive that is already in
//! memory, which is how jars nested in a fat jar (`BOOT-INF/lib/*.jar`,
//! `WEB-INF/lib/*.jar`) are read.
//!
//! The format (PKWARE APPNOTE 6.3) and the quirks handled here:
//!
//! * The EOCD record is 22 bytes plus a comment of up to 65535 bytes, so it
//!   is found by searching backwards for its signature. The comment may
//!   itself contain the signature, so a candidate whose comment length
//!   reaches exactly the end of the file is preferred. Files with bytes
//!   appended after the comment are still read (as the JVM's `ZipFile` does)
//!   when no candidate fits exactly.
//! * Archives with more than 65535 entries, or past 4 GiB, store `0xFFFF` /
//!   `0xFFFFFFFF` in the EOCD and put the real values in a ZIP64 EOCD record,
//!   found through a 20-byte locator right before the EOCD. Central
//!   directory records then carry their large values in a ZIP64 extra field
//!   (id `0x0001`), holding only the fields whose 32-bit slot is `0xFFFFFFFF`,
//!   in a fixed order.
//! * Data may be prepended to an archive (self-extracting stubs, launch
//!   scripts glued onto "executable" jars). The offsets in the archive then
//!   count from the start of the zip, not of the file. Like the JVM, the
//!   prefix length is computed as the distance between where the central
//!   directory really ends (at the EOCD) and where it claims to, and is
//!   added to every offset ([`CdLocation::base`]). The ZIP64 locator's
//!   record offset is shifted the same way, so when the record is not where
//!   the locator says, it is looked for right before the locator, as
//!   python's zipfile does ([`Zip64Locator::fallback_offset`]).
//! * The entry count in the EOCD is only a hint: tools that predate ZIP64
//!   wrap it modulo 65536, so the central directory is walked by its bytes,
//!   not by the count.
//! * Local headers may have a different extra field from the central
//!   directory's copy (alignment padding), and their sizes are zero when a
//!   data descriptor follows the data (flag bit 3), so the sizes always come
//!   from the central directory and only the local header's name and extra
//!   lengths are used.
//!
//! The input is hostile. Every count and size read from the archive is
//! checked against the file length before it is used, no allocation is
//! sized from a claimed count, decompression stops at the caller's
//! `max_out`, and an entry's data must lie before the central directory so a
//! record cannot point into the directory itself. Entries may still overlap
//! each other (the "overlapping files" zip bomb); each read stays bounded by
//! its `max_out`, and the agent reads only a few small entries per jar.

use std::borrow::Cow;
use std::ops::Range;

use super::{ParseError, malformed};

/// Length of the fixed part of the End Of Central Directory record.
pub const EOCD_LEN: usize = 22;

/// Longest archive comment the EOCD can announce.
pub const MAX_COMMENT_LEN: usize = 0xFFFF;

/// Length of the ZIP64 EOCD locator, which sits right before the EOCD.
pub const ZIP64_LOCATOR_LEN: usize = 20;

/// Length of the fixed part of the ZIP64 EOCD record: read this many bytes
/// at [`Zip64Locator::record_offset`].
pub const ZIP64_EOCD_LEN: usize = 56;

/// How many bytes at the end of the file to give [`parse_eocd`]: the EOCD,
/// a maximal comment and the ZIP64 locator before them.
pub const TAIL_LEN: usize = EOCD_LEN + MAX_COMMENT_LEN + ZIP64_LOCATOR_LEN;

/// Largest central directory accepted, in bytes. A jar with 100,000 entries
/// has a directory of about 8 MiB; a larger claim is refused so the caller
/// never allocates more than this for it.
pub const MAX_CD_LEN: u64 = 64 << 20;

/// Most entries [`ZipBytes`] keeps from a central directory, and the cap to
/// pass to [`parse_central_directory`] when reading a file.
pub const MAX_CD_ENTRIES: usize = 1 << 20;

/// Length of the fixed part of a local file header: read this many bytes at
/// [`CdLocation::local_header_pos`].
pub const LOCAL_HEADER_LEN: usize = 30;

/// Length of the fixed part of a central directory record.
pub const CD_RECORD_LEN: usize = 46;

/// Compression method 0: the data is stored as is.
pub const METHOD_STORED: u16 = 0;

/// Compression method 8: raw deflate (RFC 1951).
pub const METHOD_DEFLATED: u16 = 8;

/// General purpose flag bit 0: the entry is encrypted.
pub const FLAG_ENCRYPTED: u16 = 1;

const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CD: u32 = 0x0201_4b50;
const SIG_EOCD: u32 = 0x0605_4b50;
const SIG_ZIP64_EOCD: u32 = 0x0606_4b50;
const SIG_ZIP64_LOCATOR: u32 = 0x0706_4b50;
const SIG_DIGITAL_SIGNATURE: u32 = 0x0505_4b50;

/// The 32-bit (or 16-bit) value that says "the real value is in ZIP64".
const U32_SENTINEL: u32 = 0xFFFF_FFFF;

/// Where the central directory is, validated against the file length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdLocation {
    /// Absolute file position of the first central directory record.
    pub offset: u64,
    /// Length of the central directory in bytes (at most [`MAX_CD_LEN`]).
    pub size: u64,
    /// The entry count the archive claims, clamped to what `size` bytes can
    /// hold. Only a hint: pre-ZIP64 tools wrap it modulo 65536, and a
    /// hostile archive can lie; [`parse_central_directory`] walks the bytes.
    pub entries: u64,
    /// Bytes prepended before the archive (0 for an ordinary jar). Archive
    /// offsets count from here; [`CdLocation::local_header_pos`] adds it.
    pub base: u64,
}

impl CdLocation {
    /// The absolute file position of `entry`'s local header, or `None` when
    /// it overflows or does not lie before the central directory.
    pub fn local_header_pos(&self, entry: &CdEntry) -> Option<u64> {
        let pos = self.base.checked_add(entry.local_header_offset)?;
        let end = pos.checked_add(LOCAL_HEADER_LEN as u64)?;
        (end <= self.offset).then_some(pos)
    }
}

/// Where the ZIP64 EOCD record is, as announced by the ZIP64 locator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zip64Locator {
    /// Absolute file position of the ZIP64 EOCD record: read
    /// [`ZIP64_EOCD_LEN`] bytes here.
    pub record_offset: u64,
    /// Absolute file position of the locator itself; the record must end
    /// before it.
    pub locator_offset: u64,
}

impl Zip64Locator {
    /// Where else to look when the record is not at `record_offset`: right
    /// before the locator, where writers put it. This is how an archive with
    /// data prepended after it was written (which shifts the absolute
    /// `record_offset`) is still read, as python's zipfile does; `None` when
    /// that is the same place.
    pub fn fallback_offset(&self) -> Option<u64> {
        let at = self.locator_offset.checked_sub(ZIP64_EOCD_LEN as u64)?;
        (at != self.record_offset).then_some(at)
    }
}

/// What [`parse_eocd`] found at the end of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EocdInfo {
    /// An ordinary archive: the central directory is here.
    Classic(CdLocation),
    /// A ZIP64 archive: read the ZIP64 EOCD record first.
    Zip64(Zip64Locator),
}

/// One central directory record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdEntry {
    /// The entry name as stored: UTF-8 when flag bit 11 is set, else
    /// usually ASCII or CP437. At most 65535 bytes (a `u16` length).
    pub name: Vec<u8>,
    /// Compression method ([`METHOD_STORED`], [`METHOD_DEFLATED`], ...).
    pub method: u16,
    /// Length of the data as stored in the archive.
    pub compressed_size: u64,
    /// Length of the data once decompressed, as claimed.
    pub uncompressed_size: u64,
    /// Offset of the local header, counted from [`CdLocation::base`].
    pub local_header_offset: u64,
    /// CRC-32 of the decompressed data, as claimed.
    pub crc32: u32,
    /// General purpose flags (bit 0: encrypted, bit 3: data descriptor,
    /// bit 11: UTF-8 name).
    pub flags: u16,
}

impl CdEntry {
    /// Whether the entry names a directory (its name ends in `/`).
    pub fn is_dir(&self) -> bool {
        self.name.ends_with(b"/")
    }
}

/// Reads a little-endian `u16` at `at`, or `None` past the end.
fn le16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(s.try_into().ok()?))
}

/// Reads a little-endian `u32` at `at`, or `None` past the end.
fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

/// Reads a little-endian `u64` at `at`, or `None` past the end.
fn le64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// Finds the End Of Central Directory record in `tail`, the last bytes of a
/// file of `file_len` bytes (pass the last `min(file_len, TAIL_LEN)` bytes).
///
/// The search runs backwards over the positions where an EOCD whose comment
/// reaches the end of the file could start. The first candidate whose
/// comment length matches exactly and whose central directory fits in the
/// file wins; failing that, the candidate nearest the end whose directory
/// fits (the file then has bytes appended after the archive). When a ZIP64
/// locator sits right before the chosen record, the ZIP64 record is what
/// counts and [`EocdInfo::Zip64`] says where to read it.
pub fn parse_eocd(tail: &[u8], file_len: u64) -> Result<EocdInfo, ParseError> {
    const WHAT: &str = "zip eocd";
    let tail_len = tail.len() as u64;
    let Some(tail_start) = file_len.checked_sub(tail_len) else {
        return Err(malformed(WHAT, "tail longer than the file"));
    };
    if tail.len() < EOCD_LEN {
        return Err(ParseError::Missing {
            what: "zip end of central directory",
        });
    }
    let last = tail.len() - EOCD_LEN;
    // An EOCD further back than this cannot reach the end with its comment;
    // the JVM does not look further either.
    let first = last.saturating_sub(MAX_COMMENT_LEN);
    let mut fallback = None;
    for p in (first..=last).rev() {
        if le32(tail, p) != Some(SIG_EOCD) {
            continue;
        }
        let Ok(info) = eocd_candidate(tail, p, tail_start) else {
            continue;
        };
        let comment_len = usize::from(le16(tail, p + 20).unwrap_or(0));
        if p + EOCD_LEN + comment_len == tail.len() {
            return Ok(info);
        }
        if fallback.is_none() {
            fallback = Some(info);
        }
    }
    fallback.ok_or(ParseError::Missing {
        what: "zip end of central directory",
    })
}

/// Decodes and validates the EOCD candidate at `p` in `tail`, whose first
/// byte is at file position `tail_start`.
fn eocd_candidate(tail: &[u8], p: usize, tail_start: u64) -> Result<EocdInfo, ParseError> {
    const WHAT: &str = "zip eocd";
    let field = |at| le32(tail, p + at).ok_or_else(|| malformed(WHAT, "truncated"));
    let eocd_pos = tail_start + p as u64;
    // The ZIP64 locator, when present, sits right before the EOCD.
    if let Some(lp) = p.checked_sub(ZIP64_LOCATOR_LEN)
        && le32(tail, lp) == Some(SIG_ZIP64_LOCATOR)
    {
        let record_offset = le64(tail, lp + 8).ok_or_else(|| malformed(WHAT, "truncated"))?;
        let locator_offset = eocd_pos - ZIP64_LOCATOR_LEN as u64;
        let fits = record_offset
            .checked_add(ZIP64_EOCD_LEN as u64)
            .is_some_and(|end| end <= locator_offset);
        if !fits {
            return Err(malformed(WHAT, "zip64 record offset out of range"));
        }
        return Ok(EocdInfo::Zip64(Zip64Locator {
            record_offset,
            locator_offset,
        }));
    }
    let entries = u64::from(le16(tail, p + 10).unwrap_or(0));
    let size = u64::from(field(12)?);
    let offset = u64::from(field(16)?);
    cd_location(WHAT, entries, size, offset, eocd_pos).map(EocdInfo::Classic)
}

/// Validates a central directory that claims `entries` records in `size`
/// bytes at archive offset `offset`, and really ends at file position `end`.
fn cd_location(
    what: &'static str,
    entries: u64,
    size: u64,
    offset: u64,
    end: u64,
) -> Result<CdLocation, ParseError> {
    if size > MAX_CD_LEN {
        return Err(malformed(
            what,
            format!("central directory of {size} bytes"),
        ));
    }
    // The count is a hint; clamp it to what the directory can hold so no
    // caller is tempted to trust a claim of 2^64 entries.
    let entries = entries.min(size / CD_RECORD_LEN as u64);
    // The directory ends where the EOCD (or ZIP64 record) starts; whatever
    // lies before its claimed offset is a prefix (see the module docs).
    let Some(start) = end.checked_sub(size) else {
        return Err(malformed(what, "directory larger than the file"));
    };
    let Some(base) = start.checked_sub(offset) else {
        return Err(malformed(what, "directory offset beyond its end"));
    };
    Ok(CdLocation {
        offset: start,
        size,
        entries,
        base,
    })
}

/// Parses the ZIP64 EOCD record (the [`ZIP64_EOCD_LEN`] bytes read at
/// `at.record_offset`) into the central directory's location. The
/// directory ends where the record starts, which gives the prefix length
/// as for a classic EOCD.
pub fn parse_zip64_eocd(bytes: &[u8], at: &Zip64Locator) -> Result<CdLocation, ParseError> {
    const WHAT: &str = "zip64 eocd";
    if bytes.len() < ZIP64_EOCD_LEN {
        return Err(malformed(WHAT, "truncated"));
    }
    if le32(bytes, 0) != Some(SIG_ZIP64_EOCD) {
        return Err(malformed(WHAT, "bad signature"));
    }
    let field = |off| le64(bytes, off).ok_or_else(|| malformed(WHAT, "truncated"));
    let entries = field(32)?;
    let size = field(40)?;
    let offset = field(48)?;
    // `parse_eocd` checked that the record lies before the locator.
    if at.record_offset >= at.locator_offset {
        return Err(malformed(WHAT, "record after its locator"));
    }
    cd_location(WHAT, entries, size, offset, at.record_offset)
}

/// A central directory record borrowed from the input; only records that
/// are kept are copied into a [`CdEntry`].
struct RawRecord<'a> {
    name: &'a [u8],
    method: u16,
    compressed_size: u64,
    uncompressed_size: u64,
    local_header_offset: u64,
    crc32: u32,
    flags: u16,
}

/// Parses the central directory `bytes` (exactly the `size` bytes at
/// [`CdLocation::offset`]) into at most `max_entries` entries, in directory
/// order.
///
/// The second value counts the records that were not returned: malformed
/// ones (truncated, bad signature, a `0xFFFFFFFF` value without its ZIP64
/// extra field) and those beyond `max_entries`. After a malformed record
/// the walk resumes at the next record signature. The walk stops at the end
/// of `bytes` or at an EOCD, ZIP64 or digital signature record, so a caller
/// that read a little too much does not see it counted.
pub fn parse_central_directory(bytes: &[u8], max_entries: usize) -> (Vec<CdEntry>, u32) {
    let cap = max_entries.min(MAX_CD_ENTRIES);
    let mut entries = Vec::with_capacity(cap.min(bytes.len() / CD_RECORD_LEN));
    let mut skipped: u32 = 0;
    let mut pos = 0;
    while let Some(sig) = le32(bytes, pos) {
        if matches!(
            sig,
            SIG_EOCD | SIG_ZIP64_EOCD | SIG_ZIP64_LOCATOR | SIG_DIGITAL_SIGNATURE
        ) {
            break;
        }
        match parse_cd_record(bytes, pos) {
            Some((rec, len)) => {
                if entries.len() < cap {
                    entries.push(CdEntry {
                        name: rec.name.to_vec(),
                        method: rec.method,
                        compressed_size: rec.compressed_size,
                        uncompressed_size: rec.uncompressed_size,
                        local_header_offset: rec.local_header_offset,
                        crc32: rec.crc32,
                        flags: rec.flags,
                    });
                } else {
                    skipped = skipped.saturating_add(1);
                }
                pos += len;
            }
            None => {
                skipped = skipped.saturating_add(1);
                // Resynchronise on the next record signature. `pos` only
                // moves forward, so the walk stays linear.
                match find_sig(bytes, pos + 1, SIG_CD) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
        }
    }
    (entries, skipped)
}

/// The position of the next `sig` at or after `from`.
fn find_sig(bytes: &[u8], from: usize, sig: u32) -> Option<usize> {
    let needle = sig.to_le_bytes();
    let rest = bytes.get(from..)?;
    rest.windows(4).position(|w| w == needle).map(|i| from + i)
}

/// Parses the central directory record at `pos`, returning it and its
/// total length, or `None` when it is malformed.
fn parse_cd_record(b: &[u8], pos: usize) -> Option<(RawRecord<'_>, usize)> {
    let rec = b.get(pos..)?;
    if le32(rec, 0)? != SIG_CD {
        return None;
    }
    let flags = le16(rec, 8)?;
    let method = le16(rec, 10)?;
    let crc32 = le32(rec, 16)?;
    let csize32 = le32(rec, 20)?;
    let usize32 = le32(rec, 24)?;
    let name_len = usize::from(le16(rec, 28)?);
    let extra_len = usize::from(le16(rec, 30)?);
    let comment_len = usize::from(le16(rec, 32)?);
    let offset32 = le32(rec, 42)?;
    let name_end = CD_RECORD_LEN + name_len;
    let extra_end = name_end + extra_len;
    let total = extra_end + comment_len;
    let name = rec.get(CD_RECORD_LEN..name_end)?;
    let extra = rec.get(name_end..extra_end)?;
    if rec.len() < total {
        return None;
    }
    let mut uncompressed_size = u64::from(usize32);
    let mut compressed_size = u64::from(csize32);
    let mut local_header_offset = u64::from(offset32);
    let need_u = usize32 == U32_SENTINEL;
    let need_c = csize32 == U32_SENTINEL;
    let need_o = offset32 == U32_SENTINEL;
    if need_u || need_c || need_o {
        // The ZIP64 extra field holds exactly the values whose 32-bit slot
        // is the sentinel, in this order.
        let z = zip64_extra(extra)?;
        let mut at = 0;
        let mut take = |needed: bool, slot: &mut u64| -> Option<()> {
            if needed {
                *slot = le64(z, at)?;
                at += 8;
            }
            Some(())
        };
        take(need_u, &mut uncompressed_size)?;
        take(need_c, &mut compressed_size)?;
        take(need_o, &mut local_header_offset)?;
    }
    Some((
        RawRecord {
            name,
            method,
            compressed_size,
            uncompressed_size,
            local_header_offset,
            crc32,
            flags,
        },
        total,
    ))
}

/// The data of the ZIP64 extra block (id 1) in an extra field, if any.
/// Parsing stops at the first block that overruns the field.
fn zip64_extra(extra: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    while let (Some(id), Some(len)) = (le16(extra, at), le16(extra, at + 2)) {
        let start = at + 4;
        let end = start + usize::from(len);
        let data = extra.get(start..end)?;
        if id == 1 {
            return Some(data);
        }
        at = end;
    }
    None
}

/// From a local file header (its first [`LOCAL_HEADER_LEN`] bytes suffice),
/// the offset of the entry's data relative to the start of the header:
/// 30 plus the local name and extra lengths.
pub fn local_data_offset(local_header: &[u8]) -> Result<u64, ParseError> {
    const WHAT: &str = "zip local header";
    if local_header.len() < LOCAL_HEADER_LEN {
        return Err(malformed(WHAT, "truncated"));
    }
    if le32(local_header, 0) != Some(SIG_LOCAL) {
        return Err(malformed(WHAT, "bad signature"));
    }
    let name_len = u64::from(le16(local_header, 26).unwrap_or(0));
    let extra_len = u64::from(le16(local_header, 28).unwrap_or(0));
    Ok(LOCAL_HEADER_LEN as u64 + name_len + extra_len)
}

/// The absolute file range of `entry`'s stored data, given the bytes read at
/// [`CdLocation::local_header_pos`]. The range must end at or before the
/// central directory, so an entry cannot overlap it.
pub fn entry_data_range(
    loc: &CdLocation,
    entry: &CdEntry,
    local_header: &[u8],
) -> Result<Range<u64>, ParseError> {
    const WHAT: &str = "zip entry";
    let header = loc
        .local_header_pos(entry)
        .ok_or_else(|| malformed(WHAT, "local header outside the archive"))?;
    let start = header
        .checked_add(local_data_offset(local_header)?)
        .ok_or_else(|| malformed(WHAT, "offset overflow"))?;
    let end = start
        .checked_add(entry.compressed_size)
        .filter(|&end| end <= loc.offset)
        .ok_or_else(|| malformed(WHAT, "data overlaps the central directory"))?;
    Ok(start..end)
}

/// Decompresses `data` with `method`, producing at most `max_out` bytes.
/// Also returns whether the output is complete: `false` means the data
/// would decompress to more than `max_out` bytes and only the first
/// `max_out` are returned. Useful for manifests, whose main section is at
/// the start. Methods other than stored and deflate are refused.
pub fn inflate_prefix(
    method: u16,
    data: &[u8],
    max_out: usize,
) -> Result<(Vec<u8>, bool), ParseError> {
    use miniz_oxide::inflate::{TINFLStatus, decompress_to_vec_with_limit};
    match method {
        METHOD_STORED => {
            let n = data.len().min(max_out);
            Ok((data.get(..n).unwrap_or_default().to_vec(), n == data.len()))
        }
        METHOD_DEFLATED => match decompress_to_vec_with_limit(data, max_out) {
            Ok(out) => Ok((out, true)),
            Err(e) if e.status == TINFLStatus::HasMoreOutput => {
                let mut out = e.output;
                out.truncate(max_out);
                Ok((out, false))
            }
            Err(e) => Err(malformed("deflate", format!("{:?}", e.status))),
        },
        other => Err(malformed(
            "zip entry",
            format!("unsupported compression method {other}"),
        )),
    }
}

/// Decompresses `data` with `method` (stored or deflate), failing when the
/// output would exceed `max_out` bytes. Decompression stops as soon as the
/// limit is reached, so a deflate bomb costs at most `max_out` bytes and the
/// time to produce them.
pub fn inflate(method: u16, data: &[u8], max_out: usize) -> Result<Vec<u8>, ParseError> {
    match inflate_prefix(method, data, max_out)? {
        (out, true) => Ok(out),
        (_, false) => Err(malformed(
            "zip entry",
            format!("decompresses to more than {max_out} bytes"),
        )),
    }
}

/// Decompresses an entry's data (the bytes of [`entry_data_range`]) and
/// checks it against the central directory: [`check_entry`] first, then
/// the length and CRC-32 must match what the directory claims.
pub fn decode_entry(entry: &CdEntry, data: &[u8], max_out: usize) -> Result<Vec<u8>, ParseError> {
    check_entry(entry, max_out)?;
    let out = inflate(entry.method, data, max_out)?;
    check_decoded(entry, &out)?;
    Ok(out)
}

/// The longest stored (compressed) data that can decompress to at most
/// `max_out` bytes: deflate's worst case, stored blocks, adds 5 bytes per
/// 65535, so this allows `max_out` plus 1/8192 plus a little.
pub fn max_stored_len(max_out: usize) -> u64 {
    let max_out = max_out as u64;
    max_out + max_out / 8192 + 64
}

/// Refuses, before anything is read, an entry that cannot be decoded whole
/// within `max_out` bytes: encrypted, claiming more than `max_out`
/// decompressed bytes, or with more than [`max_stored_len`] stored bytes
/// (so a caller never preads a huge range for a small entry).
pub fn check_entry(entry: &CdEntry, max_out: usize) -> Result<(), ParseError> {
    check_entry_prefix(entry, max_out)?;
    if entry.uncompressed_size > max_out as u64 {
        return Err(malformed(
            "zip entry",
            format!("claims {} bytes, over {max_out}", entry.uncompressed_size),
        ));
    }
    Ok(())
}

/// Like [`check_entry`], for reading only the first `max_out` bytes with
/// [`inflate_prefix`] (a manifest): the decompressed size may be larger,
/// but the stored data must still fit in [`max_stored_len`].
pub fn check_entry_prefix(entry: &CdEntry, max_out: usize) -> Result<(), ParseError> {
    if entry.flags & FLAG_ENCRYPTED != 0 {
        return Err(malformed("zip entry", "encrypted"));
    }
    if entry.compressed_size > max_stored_len(max_out) {
        return Err(malformed(
            "zip entry",
            format!("stores {} bytes, over {max_out}", entry.compressed_size),
        ));
    }
    Ok(())
}

/// Checks decoded data against the length and CRC-32 the directory claims.
fn check_decoded(entry: &CdEntry, out: &[u8]) -> Result<(), ParseError> {
    if out.len() as u64 != entry.uncompressed_size {
        return Err(malformed("zip entry", "length differs from the directory"));
    }
    if crc32(out) != entry.crc32 {
        return Err(malformed("zip entry", "crc32 mismatch"));
    }
    Ok(())
}

/// The CRC-32 table (IEEE 802.3, reflected polynomial `0xEDB88320`).
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The CRC-32 that ZIP stores for each entry (the same as zlib's `crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8);
    }
    !c
}

/// A ZIP archive held in memory, such as a jar nested in a fat jar. It runs
/// the same steps a caller runs over a file (tail, EOCD, central directory,
/// local header, data) on slices of one buffer.
#[derive(Debug, Clone)]
pub struct ZipBytes<'a> {
    bytes: &'a [u8],
    loc: CdLocation,
    entries: Vec<CdEntry>,
    skipped: u32,
}

/// `len` bytes of `bytes` at `offset`, or an error naming `what`.
fn slice_at<'a>(
    bytes: &'a [u8],
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<&'a [u8], ParseError> {
    let start = usize::try_from(offset).ok();
    let end = offset
        .checked_add(len)
        .and_then(|e| usize::try_from(e).ok());
    match (start, end) {
        (Some(s), Some(e)) => bytes
            .get(s..e)
            .ok_or_else(|| malformed(what, "beyond the end of the archive")),
        _ => Err(malformed(what, "beyond the end of the archive")),
    }
}

impl<'a> ZipBytes<'a> {
    /// Locates and parses the central directory of the archive in `bytes`,
    /// keeping at most [`MAX_CD_ENTRIES`] entries.
    pub fn open(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let file_len = bytes.len() as u64;
        let tail = &bytes[bytes.len().saturating_sub(TAIL_LEN)..];
        let loc = match parse_eocd(tail, file_len)? {
            EocdInfo::Classic(loc) => loc,
            EocdInfo::Zip64(at) => {
                let read = |offset| {
                    let rec = slice_at(bytes, offset, ZIP64_EOCD_LEN as u64, "zip64 eocd")?;
                    parse_zip64_eocd(
                        rec,
                        &Zip64Locator {
                            record_offset: offset,
                            ..at
                        },
                    )
                };
                match (read(at.record_offset), at.fallback_offset()) {
                    (Ok(loc), _) => loc,
                    (Err(_), Some(other)) => read(other)?,
                    (Err(e), None) => return Err(e),
                }
            }
        };
        let cd = slice_at(bytes, loc.offset, loc.size, "zip central directory")?;
        let (entries, skipped) = parse_central_directory(cd, MAX_CD_ENTRIES);
        Ok(ZipBytes {
            bytes,
            loc,
            entries,
            skipped,
        })
    }

    /// The entries of the central directory, in order.
    pub fn entries(&self) -> &[CdEntry] {
        &self.entries
    }

    /// How many central directory records were malformed or over the cap.
    pub fn skipped(&self) -> u32 {
        self.skipped
    }

    /// Where the central directory is.
    pub fn location(&self) -> &CdLocation {
        &self.loc
    }

    /// The first entry named exactly `name`.
    pub fn find(&self, name: &[u8]) -> Option<&CdEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The stored (still compressed) bytes of `entry`, borrowed.
    pub fn raw(&self, entry: &CdEntry) -> Result<&'a [u8], ParseError> {
        let header_pos = self
            .loc
            .local_header_pos(entry)
            .ok_or_else(|| malformed("zip entry", "local header outside the archive"))?;
        let header = slice_at(
            self.bytes,
            header_pos,
            LOCAL_HEADER_LEN as u64,
            "zip local header",
        )?;
        let range = entry_data_range(&self.loc, entry, header)?;
        slice_at(
            self.bytes,
            range.start,
            range.end - range.start,
            "zip entry",
        )
    }

    /// The decompressed, CRC-checked contents of `entry`, at most `max_out`
    /// bytes (an error otherwise). Stored entries are borrowed, not copied,
    /// which keeps reading a nested jar cheap.
    pub fn read(&self, entry: &CdEntry, max_out: usize) -> Result<Cow<'a, [u8]>, ParseError> {
        check_entry(entry, max_out)?;
        let raw = self.raw(entry)?;
        let out = match entry.method {
            METHOD_STORED => Cow::Borrowed(raw),
            _ => Cow::Owned(inflate(entry.method, raw, max_out)?),
        };
        check_decoded(entry, &out)?;
        Ok(out)
    }

    /// The first `max_out` decompressed bytes of `entry` and whether that is
    /// all of it. Not CRC-checked when incomplete.
    pub fn read_prefix(
        &self,
        entry: &CdEntry,
        max_out: usize,
    ) -> Result<(Vec<u8>, bool), ParseError> {
        check_entry_prefix(entry, max_out)?;
        let (out, complete) = inflate_prefix(entry.method, self.raw(entry)?, max_out)?;
        if complete {
            check_decoded(entry, &out)?;
        }
        Ok((out, complete))
    }
}

/// Helpers shared by the zip and jar tests: a small ZIP writer (plain,
/// prefixed, commented, ZIP64) and the agent's piecewise read pipeline over
/// a real file.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    /// Options for [`build_zip`].
    #[derive(Default)]
    pub(crate) struct ZipOpts {
        /// Bytes glued before the archive (offsets stay zip-relative).
        pub prefix: Vec<u8>,
        /// The archive comment.
        pub comment: Vec<u8>,
        /// Bytes appended after the EOCD and comment.
        pub trailing: Vec<u8>,
        /// Write ZIP64 extra fields, a ZIP64 EOCD record and its locator.
        pub zip64: bool,
    }

    fn put16(out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&v.to_le_bytes());
    }

    fn put32(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes());
    }

    fn put64(out: &mut Vec<u8>, v: u64) {
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// Builds an archive from `(name, contents, method)` triples.
    pub(crate) fn build_zip(entries: &[(&[u8], &[u8], u16)], opts: &ZipOpts) -> Vec<u8> {
        let mut zip = Vec::new();
        let mut cd = Vec::new();
        for &(name, content, method) in entries {
            let stored = match method {
                METHOD_DEFLATED => miniz_oxide::deflate::compress_to_vec(content, 6),
                _ => content.to_vec(),
            };
            let crc = crc32(content);
            let offset = zip.len() as u64;
            let (c32, u32_, o32) = if opts.zip64 {
                (U32_SENTINEL, U32_SENTINEL, U32_SENTINEL)
            } else {
                (stored.len() as u32, content.len() as u32, offset as u32)
            };
            // Local header; with ZIP64 its sizes move to an extra field.
            put32(&mut zip, SIG_LOCAL);
            put16(&mut zip, if opts.zip64 { 45 } else { 20 });
            put16(&mut zip, 0);
            put16(&mut zip, method);
            put16(&mut zip, 0);
            put16(&mut zip, 0x21);
            put32(&mut zip, crc);
            put32(&mut zip, c32);
            put32(&mut zip, u32_);
            put16(&mut zip, name.len() as u16);
            put16(&mut zip, if opts.zip64 { 20 } else { 0 });
            zip.extend_from_slice(name);
            if opts.zip64 {
                put16(&mut zip, 1);
                put16(&mut zip, 16);
                put64(&mut zip, content.len() as u64);
                put64(&mut zip, stored.len() as u64);
            }
            zip.extend_from_slice(&stored);
            // Central directory record.
            put32(&mut cd, SIG_CD);
            put16(&mut cd, 0x031e);
            put16(&mut cd, if opts.zip64 { 45 } else { 20 });
            put16(&mut cd, 0);
            put16(&mut cd, method);
            put16(&mut cd, 0);
            put16(&mut cd, 0x21);
            put32(&mut cd, crc);
            put32(&mut cd, c32);
            put32(&mut cd, u32_);
            put16(&mut cd, name.len() as u16);
            put16(&mut cd, if opts.zip64 { 28 } else { 0 });
            put16(&mut cd, 0);
            put16(&mut cd, 0);
            put16(&mut cd, 0);
            put32(&mut cd, 0);
            put32(&mut cd, o32);
            cd.extend_from_slice(name);
            if opts.zip64 {
                put16(&mut cd, 1);
                put16(&mut cd, 24);
                put64(&mut cd, content.len() as u64);
                put64(&mut cd, stored.len() as u64);
                put64(&mut cd, offset);
            }
        }
        let cd_offset = zip.len() as u64;
        let cd_size = cd.len() as u64;
        zip.extend_from_slice(&cd);
        let n = entries.len() as u64;
        if opts.zip64 {
            let record = zip.len() as u64;
            put32(&mut zip, SIG_ZIP64_EOCD);
            put64(&mut zip, 44);
            put16(&mut zip, 0x031e);
            put16(&mut zip, 45);
            put32(&mut zip, 0);
            put32(&mut zip, 0);
            put64(&mut zip, n);
            put64(&mut zip, n);
            put64(&mut zip, cd_size);
            put64(&mut zip, cd_offset);
            put32(&mut zip, SIG_ZIP64_LOCATOR);
            put32(&mut zip, 0);
            put64(&mut zip, record);
            put32(&mut zip, 1);
        }
        put32(&mut zip, SIG_EOCD);
        put16(&mut zip, 0);
        put16(&mut zip, 0);
        let (n16, s32, o32) = if opts.zip64 {
            (0xFFFF, U32_SENTINEL, U32_SENTINEL)
        } else {
            (n as u16, cd_size as u32, cd_offset as u32)
        };
        put16(&mut zip, n16);
        put16(&mut zip, n16);
        put32(&mut zip, s32);
        put32(&mut zip, o32);
        put16(&mut zip, opts.comment.len() as u16);
        zip.extend_from_slice(&opts.comment);
        zip.extend_from_slice(&opts.trailing);
        let mut out = opts.prefix.clone();
        out.extend_from_slice(&zip);
        out
    }

    /// A raw deflate stream that inflates to `total` zero bytes (at least
    /// one), built by hand so a 1 GiB bomb costs 6 MB and no 1 GiB buffer:
    /// one fixed-Huffman block, a literal 0, then "copy 258 bytes from
    /// distance 1" (13 bits each) repeated.
    pub(crate) fn zero_bomb(total: u64) -> Vec<u8> {
        struct Bits {
            out: Vec<u8>,
            acc: u64,
            n: u32,
        }
        impl Bits {
            // Appends the low `len` bits of `v`, least significant first.
            fn put(&mut self, v: u64, len: u32) {
                self.acc |= v << self.n;
                self.n += len;
                while self.n >= 8 {
                    self.out.push(self.acc as u8);
                    self.acc >>= 8;
                    self.n -= 8;
                }
            }
        }
        let pairs = (total - 1) / 258;
        let rest = (total - 1) % 258;
        let mut b = Bits {
            out: Vec::with_capacity((pairs as usize * 13) / 8 + 64),
            acc: 0,
            n: 0,
        };
        // BFINAL = 1, BTYPE = 01 (fixed Huffman).
        b.put(1, 1);
        b.put(1, 2);
        // Huffman codes go most significant bit first, so they are written
        // bit-reversed: literal 0 is 00110000, length 258 is 11000101, and
        // distance code 0 is 00000.
        const LIT0: u64 = 0b0000_1100;
        const LEN258: u64 = 0b1010_0011;
        b.put(LIT0, 8);
        for _ in 0..pairs {
            b.put(LEN258, 13);
        }
        for _ in 0..rest {
            b.put(LIT0, 8);
        }
        // End of block (256) is seven zero bits; then flush.
        b.put(0, 7);
        b.put(0, 7);
        b.out
    }

    /// A jar read the way the agent reads one: pread the tail, the ZIP64
    /// record if any, the central directory, then single entries. Counts
    /// the bytes read so tests can check the jar was not read whole.
    pub(crate) struct FileZip {
        file: File,
        pub len: u64,
        pub loc: CdLocation,
        pub entries: Vec<CdEntry>,
        pub skipped: u32,
        pub bytes_read: u64,
    }

    impl FileZip {
        fn pread(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
            pread(&self.file, offset, len, &mut self.bytes_read)
        }

        /// Steps 1 and 2 of the module docs.
        pub(crate) fn open(path: &std::path::Path) -> Result<Self, String> {
            let file = File::open(path).map_err(|e| e.to_string())?;
            let len = file.metadata().map_err(|e| e.to_string())?.len();
            let mut bytes_read = 0;
            let tail_len = len.min(TAIL_LEN as u64);
            let tail = pread(&file, len - tail_len, tail_len, &mut bytes_read)?;
            let loc = match parse_eocd(&tail, len).map_err(|e| e.to_string())? {
                EocdInfo::Classic(loc) => loc,
                EocdInfo::Zip64(at) => {
                    let mut read = |offset| -> Result<CdLocation, String> {
                        let rec = pread(&file, offset, ZIP64_EOCD_LEN as u64, &mut bytes_read)?;
                        let at = Zip64Locator {
                            record_offset: offset,
                            ..at
                        };
                        parse_zip64_eocd(&rec, &at).map_err(|e| e.to_string())
                    };
                    match (read(at.record_offset), at.fallback_offset()) {
                        (Ok(loc), _) => loc,
                        (Err(_), Some(other)) => read(other)?,
                        (Err(e), None) => return Err(e),
                    }
                }
            };
            let cd = pread(&file, loc.offset, loc.size, &mut bytes_read)?;
            let (entries, skipped) = parse_central_directory(&cd, MAX_CD_ENTRIES);
            Ok(FileZip {
                file,
                len,
                loc,
                entries,
                skipped,
                bytes_read,
            })
        }

        /// Step 3 up to the stored bytes.
        pub(crate) fn raw(&mut self, e: &CdEntry) -> Result<Vec<u8>, String> {
            let pos = self
                .loc
                .local_header_pos(e)
                .ok_or("local header outside the archive")?;
            let header = self.pread(pos, LOCAL_HEADER_LEN as u64)?;
            let range = entry_data_range(&self.loc, e, &header).map_err(|e| e.to_string())?;
            self.pread(range.start, range.end - range.start)
        }

        /// Step 3: the decoded, checked contents.
        pub(crate) fn read(&mut self, e: &CdEntry, max_out: usize) -> Result<Vec<u8>, String> {
            check_entry(e, max_out).map_err(|e| e.to_string())?;
            let raw = self.raw(e)?;
            decode_entry(e, &raw, max_out).map_err(|e| e.to_string())
        }

        /// Step 3 for a manifest: a prefix is enough.
        pub(crate) fn read_prefix(
            &mut self,
            e: &CdEntry,
            max_out: usize,
        ) -> Result<Vec<u8>, String> {
            check_entry_prefix(e, max_out).map_err(|e| e.to_string())?;
            let raw = self.raw(e)?;
            inflate_prefix(e.method, &raw, max_out)
                .map(|(b, _)| b)
                .map_err(|e| e.to_string())
        }
    }

    fn pread(file: &File, offset: u64, len: u64, counter: &mut u64) -> Result<Vec<u8>, String> {
        let len = usize::try_from(len).map_err(|_| "length overflow")?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| e.to_string())?;
        *counter += len as u64;
        Ok(buf)
    }

    /// Runs `python3 -c script args...` and returns its stdout.
    pub(crate) fn python(script: &str, args: &[&str]) -> String {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .expect("python3 is needed by the tests (the reference zip reader)");
        assert!(
            out.status.success(),
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("python output is UTF-8")
    }

    /// A fresh path in the temp directory for a fixture file.
    pub(crate) fn temp_path(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("patchgap-zip-{}-{tag}", std::process::id()))
    }

    /// The regular jars under `dir`, recursively, following no symlinked
    /// directories; symlinked jar files are included when `links` is set.
    pub(crate) fn jars_under(dir: &std::path::Path, links: bool) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "jar")
                    && (ft.is_file() || links && ft.is_symlink() && p.is_file())
                {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    /// Lists every entry of each jar with python3's zipfile, the reference
    /// reader: one line per jar, `path \t entry count \t crc32 of the
    /// entries' (name, crc, sizes, method, absolute header offset) lines`.
    const PY_LIST: &str = r#"
import sys, zipfile, zlib
for p in sys.argv[1:]:
    z = zipfile.ZipFile(p)
    buf = b''
    for i in z.infolist():
        name = i.orig_filename.encode('utf-8' if i.flag_bits & 0x800 else 'cp437')
        buf += b'%s\0%d\0%d\0%d\0%d\0%d\n' % (name, i.CRC, i.compress_size, i.file_size, i.compress_type, i.header_offset)
    print('%s\t%d\t%d' % (p, len(z.infolist()), zlib.crc32(buf)))
"#;

    /// The same digest over our own central directory.
    fn digest(z: &FileZip) -> u32 {
        let mut buf = Vec::new();
        for e in &z.entries {
            buf.extend_from_slice(&e.name);
            let pos = z.loc.local_header_pos(e).map_or(-1, |p| p as i128);
            buf.extend_from_slice(
                format!(
                    "\0{}\0{}\0{}\0{}\0{}\n",
                    e.crc32, e.compressed_size, e.uncompressed_size, e.method, pos
                )
                .as_bytes(),
            );
        }
        crc32(&buf)
    }

    /// Checks our directory of every jar in `paths` against python's, and
    /// returns the opened jars.
    fn check_against_python(paths: &[std::path::PathBuf]) -> Vec<FileZip> {
        let args: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
        let listing = python(PY_LIST, &args);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), paths.len());
        let mut out = Vec::new();
        for (path, line) in paths.iter().zip(lines) {
            let mut f = line.split('\t');
            let (p, n, d) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            assert_eq!(Path::new(p), path);
            let z = FileZip::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(z.skipped, 0, "{}", path.display());
            assert_eq!(
                z.entries.len(),
                n.parse::<usize>().unwrap(),
                "{}",
                path.display()
            );
            assert_eq!(digest(&z), d.parse::<u32>().unwrap(), "{}", path.display());
            out.push(z);
        }
        out
    }

    #[test]
    fn every_jar_in_usr_share_java_matches_python_and_inflates() {
        let jars = jars_under(Path::new("/usr/share/java"), false);
        assert!(
            jars.len() >= 50,
            "expected the Debian jars in /usr/share/java (libcommons-io-java, maven, ...)"
        );
        let mut entries = 0;
        let mut deflated = 0;
        for mut z in check_against_python(&jars) {
            // Decode every entry: length and CRC-32 are checked against the
            // directory, so this checks inflate on real data byte for byte.
            for e in z.entries.clone() {
                let out = z
                    .read(&e, 64 << 20)
                    .unwrap_or_else(|err| panic!("{:?}: {err}", String::from_utf8_lossy(&e.name)));
                assert_eq!(out.len() as u64, e.uncompressed_size);
                entries += 1;
                deflated += usize::from(e.method == METHOD_DEFLATED);
            }
        }
        eprintln!(
            "/usr/share/java: {} jars, {entries} entries ({deflated} deflated) decoded",
            jars.len()
        );
        assert!(entries > 5000 && deflated > 4000);
    }

    /// The Google Cloud SDK ships about 260 upstream jars from Maven
    /// Central, up to 70 MB and 40,000 entries; a bonus corpus when present.
    #[test]
    fn cloud_sdk_jars_match_python_without_reading_them_whole() {
        let jars = jars_under(Path::new("/usr/lib/google-cloud-sdk"), false);
        if jars.is_empty() {
            eprintln!("no /usr/lib/google-cloud-sdk jars on this machine; skipped");
            return;
        }
        let (mut total, mut read) = (0, 0);
        for z in check_against_python(&jars) {
            total += z.len;
            read += z.bytes_read;
            if z.len > 10 << 20 {
                assert!(
                    z.bytes_read < z.len / 4,
                    "read {} of {}",
                    z.bytes_read,
                    z.len
                );
            }
        }
        eprintln!(
            "cloud sdk: {} jars, {total} bytes, {read} read for their directories",
            jars.len()
        );
        assert!(read < total / 4);
    }

    fn sample_entries() -> Vec<(&'static [u8], &'static [u8], u16)> {
        vec![
            (
                b"META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\r\n\r\n",
                METHOD_DEFLATED,
            ),
            (b"a/stored.txt", b"hello stored", METHOD_STORED),
            (b"a/deflated.txt", &[b'x'; 5000], METHOD_DEFLATED),
            (b"empty", b"", METHOD_STORED),
            (b"dir/", b"", METHOD_STORED),
        ]
    }

    /// Opens `bytes`, reads every entry and checks it equals `want`.
    fn check_roundtrip(bytes: &[u8], want: &[(&[u8], &[u8], u16)]) -> CdLocation {
        let z = ZipBytes::open(bytes).unwrap();
        assert_eq!(z.skipped(), 0);
        assert_eq!(z.entries().len(), want.len());
        for (e, (name, content, method)) in z.entries().iter().zip(want) {
            assert_eq!(&e.name, name);
            assert_eq!(e.method, *method);
            assert_eq!(&*z.read(e, 1 << 20).unwrap(), *content);
        }
        *z.location()
    }

    #[test]
    fn plain_zip64_prefixed_commented_and_padded_archives() {
        let want = sample_entries();
        let plain = build_zip(&want, &ZipOpts::default());
        let loc = check_roundtrip(&plain, &want);
        assert_eq!((loc.base, loc.entries), (0, 5));
        let z64 = build_zip(
            &want,
            &ZipOpts {
                zip64: true,
                ..Default::default()
            },
        );
        let tail = &z64[z64.len().saturating_sub(TAIL_LEN)..];
        assert!(matches!(
            parse_eocd(tail, z64.len() as u64),
            Ok(EocdInfo::Zip64(_))
        ));
        check_roundtrip(&z64, &want);
        // A launch script glued in front: every offset moves by its length.
        let script = b"#!/bin/sh\nexec java -jar \"$0\" \"$@\"\n".to_vec();
        for zip64 in [false, true] {
            let opts = ZipOpts {
                prefix: script.clone(),
                zip64,
                ..Default::default()
            };
            let bytes = build_zip(&want, &opts);
            // With ZIP64 the locator's absolute record offset is off by the
            // script's length, and the record is found right before it.
            let loc = check_roundtrip(&bytes, &want);
            assert_eq!(loc.base, script.len() as u64);
        }
        // A comment that contains a plausible EOCD (an empty archive) is not
        // mistaken for the end, because its own comment length does not
        // reach the end of the file while the real one's does.
        let mut fake = b"built by hand PK\x05\x06".to_vec();
        fake.extend_from_slice(&[0; 18]);
        fake.extend_from_slice(b" and more");
        let bytes = build_zip(
            &want,
            &ZipOpts {
                comment: fake.clone(),
                ..Default::default()
            },
        );
        check_roundtrip(&bytes, &want);
        // A fake that does reach the end exactly is taken, as by the JVM and
        // python: the two readings are equally valid.
        fake.truncate(fake.len() - 9);
        let bytes = build_zip(
            &want,
            &ZipOpts {
                comment: fake,
                ..Default::default()
            },
        );
        assert!(ZipBytes::open(&bytes).unwrap().entries().is_empty());
        // Junk appended after the archive is tolerated, like the JVM does.
        let bytes = build_zip(
            &want,
            &ZipOpts {
                trailing: vec![0xAB; 1000],
                ..Default::default()
            },
        );
        check_roundtrip(&bytes, &want);
        // An empty archive.
        let empty = build_zip(&[], &ZipOpts::default());
        assert_eq!(empty.len(), EOCD_LEN);
        assert!(ZipBytes::open(&empty).unwrap().entries().is_empty());
    }

    /// Archives written by python's zipfile with its ZIP64 limits lowered,
    /// so every structure is ZIP64: an independent ZIP64 writer.
    #[test]
    fn python_zip64_archives() {
        let path = temp_path("py64.zip");
        let script = r#"
import sys, zipfile
zipfile.ZIP64_LIMIT = 10
zipfile.ZIP_FILECOUNT_LIMIT = 1
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    z.writestr('a.txt', b'alpha' * 100, compress_type=zipfile.ZIP_DEFLATED)
    z.writestr('b.txt', b'beta', compress_type=zipfile.ZIP_STORED)
    z.writestr('c/d.txt', b'delta' * 3, compress_type=zipfile.ZIP_DEFLATED)
    z.comment = b'a comment'
"#;
        python(script, &[path.to_str().unwrap()]);
        let bytes = std::fs::read(&path).unwrap();
        let z = FileZip::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(z.loc.entries, 3);
        let tail = &bytes[bytes.len().saturating_sub(TAIL_LEN)..];
        assert!(matches!(
            parse_eocd(tail, bytes.len() as u64),
            Ok(EocdInfo::Zip64(_))
        ));
        // At least the later offsets went through the ZIP64 extra field.
        let zb = ZipBytes::open(&bytes).unwrap();
        let got: Vec<_> = zb
            .entries()
            .iter()
            .map(|e| zb.read(e, 4096).unwrap().into_owned())
            .collect();
        assert_eq!(
            got,
            vec![b"alpha".repeat(100), b"beta".to_vec(), b"delta".repeat(3)]
        );
    }

    #[test]
    fn eocd_search_edges() {
        // Too short, junk, and a tail longer than the file.
        assert!(matches!(
            parse_eocd(b"PK\x05\x06", 4),
            Err(ParseError::Missing { .. })
        ));
        assert!(matches!(
            parse_eocd(&[0; 100], 100),
            Err(ParseError::Missing { .. })
        ));
        assert!(parse_eocd(&[0; 100], 10).is_err());
        // A directory claimed to be larger than the file before the EOCD.
        let mut e = Vec::new();
        e.extend_from_slice(&SIG_EOCD.to_le_bytes());
        e.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
        e.extend_from_slice(&100u32.to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(&[0, 0]);
        assert!(parse_eocd(&e, 22).is_err());
        // The same record after 100 bytes fits: the directory is at 0.
        let mut f = vec![0; 100];
        f.extend_from_slice(&e);
        let loc = match parse_eocd(&f, 122).unwrap() {
            EocdInfo::Classic(loc) => loc,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (loc.offset, loc.size, loc.entries, loc.base),
            (0, 100, 1, 0)
        );
        // The caller passed only the tail of a bigger file.
        let loc2 = parse_eocd(&f[50..], 1122).unwrap();
        assert_eq!(
            loc2,
            EocdInfo::Classic(CdLocation {
                offset: 1000,
                size: 100,
                entries: 1,
                base: 1000
            })
        );
        // A directory over the cap is refused before anything is read.
        let mut big = e.clone();
        big[12..16].copy_from_slice(&(MAX_CD_LEN as u32 + 1).to_le_bytes());
        assert!(parse_eocd(&big, 1 << 30).is_err());
        // A ZIP64 locator whose record would overlap it.
        let mut z = Vec::new();
        z.extend_from_slice(&SIG_ZIP64_LOCATOR.to_le_bytes());
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(&1000u64.to_le_bytes());
        z.extend_from_slice(&1u32.to_le_bytes());
        z.extend_from_slice(&e);
        assert!(parse_eocd(&z, z.len() as u64).is_err());
        assert!(matches!(parse_eocd(&z, 2000), Ok(EocdInfo::Zip64(_))));
    }

    #[test]
    fn claimed_counts_are_hints_and_entries_are_capped() {
        // A ZIP64 record claiming 2^32 entries in a 10-record directory.
        let want: Vec<(Vec<u8>, Vec<u8>)> = (0..10)
            .map(|i| (format!("f{i}").into_bytes(), vec![i as u8; 3]))
            .collect();
        let refs: Vec<(&[u8], &[u8], u16)> = want
            .iter()
            .map(|(n, c)| (&n[..], &c[..], METHOD_STORED))
            .collect();
        let mut bytes = build_zip(
            &refs,
            &ZipOpts {
                zip64: true,
                ..Default::default()
            },
        );
        let rec = bytes.len() - EOCD_LEN - ZIP64_LOCATOR_LEN - ZIP64_EOCD_LEN;
        assert_eq!(le32(&bytes, rec), Some(SIG_ZIP64_EOCD));
        bytes[rec + 24..rec + 40]
            .copy_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        let z = ZipBytes::open(&bytes).unwrap();
        assert_eq!(z.entries().len(), 10);
        // The claim is clamped to what the directory can hold.
        assert!(z.location().entries <= z.location().size / CD_RECORD_LEN as u64);
        // The caller's cap holds, and what it drops is counted.
        let loc = *z.location();
        let cd = &bytes[loc.offset as usize..(loc.offset + loc.size) as usize];
        let (kept, skipped) = parse_central_directory(cd, 3);
        assert_eq!((kept.len(), skipped), (3, 7));
        assert_eq!(kept[2].name, b"f2");
        // 200,000 records (9 MB of directory) are walked and capped quickly.
        let one = &cd[..cd.len() / 10];
        let many = one.repeat(200_000);
        let t = crate::parse::fuzz::CpuTimer::start();
        let (kept, skipped) = parse_central_directory(&many, 1000);
        assert_eq!((kept.len(), skipped), (1000, 199_000));
        // A bound against super-linear work, not a speed test (a debug build
        // on a loaded machine went over 5 s).
        assert!(t.elapsed() < Duration::from_secs(120), "{:?}", t.elapsed());
    }

    #[test]
    fn truncated_and_overlapping_records() {
        let want = sample_entries();
        let bytes = build_zip(&want, &ZipOpts::default());
        let z = ZipBytes::open(&bytes).unwrap();
        let loc = *z.location();
        let cd = &bytes[loc.offset as usize..(loc.offset + loc.size) as usize];
        // Every truncation of the directory: whole records come back, the
        // cut one is counted, nothing panics.
        for cut in 0..cd.len() {
            let (entries, skipped) = parse_central_directory(&cd[..cut], 100);
            assert!(entries.len() <= want.len());
            assert!(skipped <= 1, "cut {cut}: {skipped}");
        }
        // A damaged record is skipped and the walk resynchronises.
        let mut bad = cd.to_vec();
        bad[0] = b'X';
        let (entries, skipped) = parse_central_directory(&bad, 100);
        assert_eq!((entries.len(), skipped), (want.len() - 1, 1));
        // A name length running past the end.
        let mut bad = cd.to_vec();
        bad[28] = 0xff;
        bad[29] = 0xff;
        let (entries, skipped) = parse_central_directory(&bad, 100);
        assert!(entries.len() < want.len() && skipped >= 1);
        // Every truncation of the whole archive fails cleanly or reads a
        // consistent directory.
        for cut in 0..bytes.len() {
            if let Ok(z) = ZipBytes::open(&bytes[..cut]) {
                for e in z.entries() {
                    let _ = z.read(e, 1 << 16);
                }
            }
        }
        // An entry whose local header points into the directory.
        let mut e = z.entries()[1].clone();
        e.local_header_offset = loc.offset;
        assert!(loc.local_header_pos(&e).is_none());
        assert!(z.read(&e, 1 << 20).is_err());
        // An entry whose data would run into the directory.
        let mut e = z.entries()[1].clone();
        e.compressed_size = loc.offset;
        assert!(z.read(&e, 1 << 20).is_err());
        // Two records sharing one local entry (the overlapping-file bomb
        // shape) are each read, each within max_out.
        let mut e = z.entries()[2].clone();
        e.name = b"alias".to_vec();
        assert_eq!(z.read(&e, 1 << 20).unwrap().len(), 5000);
        assert!(z.read(&e, 4999).is_err());
        // A wrong CRC or length is caught.
        let mut e = z.entries()[2].clone();
        e.crc32 ^= 1;
        assert!(z.read(&e, 1 << 20).is_err());
        let mut e = z.entries()[1].clone();
        e.uncompressed_size += 1;
        e.compressed_size += 1;
        assert!(z.read(&e, 1 << 20).is_err());
        // A local header with a bad signature or cut short.
        assert!(local_data_offset(&[0; 30]).is_err());
        assert!(local_data_offset(&bytes[..29]).is_err());
        assert_eq!(local_data_offset(&bytes[..30]).unwrap(), 30 + 20);
        // An entry claiming huge stored data is refused before any read.
        let mut e = z.entries()[0].clone();
        e.compressed_size = 1 << 40;
        assert!(check_entry(&e, 1 << 20).is_err());
        assert!(check_entry_prefix(&e, 1 << 20).is_err());
        e.compressed_size = max_stored_len(1 << 20);
        assert!(check_entry(&e, 1 << 20).is_ok());
        e.uncompressed_size = (1 << 20) + 1;
        assert!(check_entry(&e, 1 << 20).is_err());
        assert!(check_entry_prefix(&e, 1 << 20).is_ok());
        // Encrypted and unsupported entries are refused.
        let mut e = z.entries()[1].clone();
        e.flags |= FLAG_ENCRYPTED;
        assert!(z.read(&e, 1 << 20).is_err());
        assert!(inflate(12, b"BZh", 100).is_err());
        // A ZIP64 sentinel without its extra field is malformed.
        let mut bad = cd.to_vec();
        bad[20..24].copy_from_slice(&U32_SENTINEL.to_le_bytes());
        let (entries, skipped) = parse_central_directory(&bad, 100);
        assert_eq!((entries.len(), skipped), (want.len() - 1, 1));
    }

    #[test]
    fn inflate_limits_and_crc() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let data = b"abcabcabcabc".repeat(100);
        let packed = miniz_oxide::deflate::compress_to_vec(&data, 6);
        assert_eq!(inflate(METHOD_DEFLATED, &packed, data.len()).unwrap(), data);
        assert!(inflate(METHOD_DEFLATED, &packed, data.len() - 1).is_err());
        let (pre, complete) = inflate_prefix(METHOD_DEFLATED, &packed, 10).unwrap();
        assert_eq!((&pre[..], complete), (&data[..10], false));
        assert_eq!(inflate(METHOD_STORED, b"abc", 3).unwrap(), b"abc");
        assert!(inflate(METHOD_STORED, b"abc", 2).is_err());
        assert_eq!(
            inflate_prefix(METHOD_STORED, b"abc", 2).unwrap(),
            (b"ab".to_vec(), false)
        );
        // Truncated and garbage deflate streams fail cleanly.
        assert!(inflate(METHOD_DEFLATED, &packed[..packed.len() / 2], 1 << 20).is_err());
        assert!(inflate(METHOD_DEFLATED, &[0xff; 64], 1 << 20).is_err());
        // An empty stream, with and without room.
        let empty = miniz_oxide::deflate::compress_to_vec(b"", 6);
        assert_eq!(inflate(METHOD_DEFLATED, &empty, 0).unwrap(), b"");
        // The hand-built bomb generator is a valid stream.
        for n in [1u64, 2, 258, 259, 260, 100_000] {
            let out = inflate(METHOD_DEFLATED, &zero_bomb(n), 1 << 20).unwrap();
            assert_eq!(out.len() as u64, n);
            assert!(out.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn hostile_sizes_finish_quickly() {
        // 1 GiB of zeros in 6 MB of deflate, stopped at 16 MiB.
        let bomb = zero_bomb(1 << 30);
        assert!(bomb.len() < 8 << 20);
        let t = crate::parse::fuzz::CpuTimer::start();
        let err = inflate(METHOD_DEFLATED, &bomb, 16 << 20).unwrap_err();
        assert!(err.to_string().contains("more than"));
        let (pre, complete) = inflate_prefix(METHOD_DEFLATED, &bomb, 16 << 20).unwrap();
        assert_eq!((pre.len(), complete), (16 << 20, false));
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        // The same bomb inside a jar that claims a tiny entry.
        let mut bytes = build_zip(
            &[(b"pom.properties", b"tiny", METHOD_DEFLATED)],
            &ZipOpts::default(),
        );
        let z = ZipBytes::open(&bytes).unwrap();
        let e = z.entries()[0].clone();
        let data_start = z.location().local_header_pos(&e).unwrap() as usize + 30 + e.name.len();
        let old_len = e.compressed_size as usize;
        bytes.splice(data_start..data_start + old_len, bomb.iter().copied());
        // Fix up the directory: its data grew, so its offset moved.
        let grow = (bomb.len() - old_len) as u32;
        let eocd = bytes.len() - EOCD_LEN;
        let cd_off = le32(&bytes, eocd + 16).unwrap() + grow;
        bytes[eocd + 16..eocd + 20].copy_from_slice(&cd_off.to_le_bytes());
        let c = cd_off as usize;
        bytes[c + 20..c + 24].copy_from_slice(&(bomb.len() as u32).to_le_bytes());
        let t = crate::parse::fuzz::CpuTimer::start();
        let z = ZipBytes::open(&bytes).unwrap();
        let e = &z.entries()[0];
        assert!(z.read(e, 64 << 10).is_err());
        let mut big_claim = e.clone();
        big_claim.uncompressed_size = 1 << 40;
        assert!(z.read(&big_claim, 64 << 10).is_err());
        // A bound against super-linear work, not a speed test (a debug build
        // on a loaded machine went over 5 s).
        assert!(t.elapsed() < Duration::from_secs(120), "{:?}", t.elapsed());
        // A valid archive followed by 64 MiB of junk: the EOCD is out of
        // reach (as for the JVM), and the search stays within TAIL_LEN.
        let mut junk = build_zip(&sample_entries(), &ZipOpts::default());
        let mut rng = Rng(7);
        junk.extend((0..64 << 20).map(|_| rng.next() as u8));
        let t = crate::parse::fuzz::CpuTimer::start();
        assert!(ZipBytes::open(&junk).is_err());
        // Given the whole 64 MiB as its "tail", parse_eocd still looks only
        // where an EOCD could be.
        assert!(parse_eocd(&junk, junk.len() as u64).is_err());
        // 64 MiB of junk as a central directory: walked once, nothing kept
        // that is not a record.
        let (entries, _) = parse_central_directory(&junk, MAX_CD_ENTRIES);
        assert!(entries.len() <= 5 + junk.len() / 1_000_000);
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }

    use crate::parse::fuzz::Rng;
    fn mutate(rng: &mut Rng, fixture: &[u8]) -> Vec<u8> {
        crate::parse::fuzz::mutate(rng, fixture, ALPHABET)
    }

    /// Bytes that mean something to a ZIP reader.
    const ALPHABET: &[u8] = b"PK\x01\x02\x03\x04\x05\x06\x07\x08\xff\x00\x2e";

    #[test]
    fn fuzz_no_panics_and_bounded_output() {
        let want = sample_entries();
        let fixtures = [
            build_zip(&want, &ZipOpts::default()),
            build_zip(
                &want,
                &ZipOpts {
                    zip64: true,
                    ..Default::default()
                },
            ),
            build_zip(
                &want,
                &ZipOpts {
                    prefix: b"#!/bin/sh\n".to_vec(),
                    comment: b"c".to_vec(),
                    ..Default::default()
                },
            ),
            std::fs::read("/usr/share/java/atinject-jsr330-api-1.0.jar").unwrap_or_default(),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..4000 {
            let input = if i % 4 == 0 {
                let len = rng.below(400);
                (0..len)
                    .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                    .collect()
            } else {
                let f = &fixtures[rng.below(fixtures.len())];
                mutate(&mut rng, f)
            };
            let max_out = 1 + rng.below(8192);
            if let Ok(z) = ZipBytes::open(&input) {
                assert!(z.entries().len() <= input.len() / CD_RECORD_LEN);
                for e in z.entries() {
                    if let Ok(b) = z.read(e, max_out) {
                        assert!(b.len() <= max_out);
                    }
                    if let Ok((b, _)) = z.read_prefix(e, max_out) {
                        assert!(b.len() <= max_out);
                    }
                }
            }
            let _ = parse_eocd(&input, input.len() as u64 + rng.below(100) as u64);
            let (entries, _) = parse_central_directory(&input, 50);
            assert!(entries.len() <= 50);
            let _ = local_data_offset(&input);
            if let Ok(b) = inflate(METHOD_DEFLATED, &input, max_out) {
                assert!(b.len() <= max_out);
            }
        }
    }
}
