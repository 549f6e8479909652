//! A ZIP reader for an archive held in memory, enough for osv.dev's
//! `all.zip` exports: the End Of Central Directory record (classic or
//! ZIP64), the central directory, local headers, and stored or deflated
//! entries checked against their CRC-32.
//!
//! Adapted from the agent's piecewise reader (`agent/src/parse/zip.rs`),
//! which the collector cannot depend on; the format notes there apply. In
//! short: the EOCD is found by searching backwards over the last 64 KiB,
//! preferring a record whose comment reaches exactly the end; bytes
//! prepended to the archive shift every offset by the distance between
//! where the directory really is and where it says it is; sizes come from
//! the central directory (local headers may hold zeros when a data
//! descriptor follows), and only the local header's name and extra lengths
//! are used.
//!
//! The input is hostile: every offset and length is checked against the
//! buffer before use, no allocation is sized from a claimed count,
//! decompression stops at the caller's limit, and an entry's data must lie
//! before the central directory. Entries that overlap each other (the
//! "overlapping files" bomb) are refused by the caller, [`super::import`].

use std::borrow::Cow;
use std::ops::Range;

const EOCD_LEN: usize = 22;
const MAX_COMMENT_LEN: usize = 0xFFFF;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_LEN: usize = 56;
const LOCAL_HEADER_LEN: usize = 30;
const CD_RECORD_LEN: usize = 46;
const METHOD_STORED: u16 = 0;
const METHOD_DEFLATED: u16 = 8;
const FLAG_ENCRYPTED: u16 = 1;
const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CD: u32 = 0x0201_4b50;
const SIG_EOCD: u32 = 0x0605_4b50;
const SIG_ZIP64_EOCD: u32 = 0x0606_4b50;
const SIG_ZIP64_LOCATOR: u32 = 0x0706_4b50;
const U32_SENTINEL: u32 = 0xFFFF_FFFF;

/// One central directory record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The name as stored (UTF-8 by flag bit 11, else usually ASCII).
    pub name: Vec<u8>,
    pub method: u16,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    /// Counted from the start of the archive (not of the buffer).
    pub local_header_offset: u64,
    pub crc32: u32,
    pub flags: u16,
}

impl Entry {
    pub(super) fn is_dir(&self) -> bool {
        self.name.ends_with(b"/")
    }
}

/// An opened archive: its central directory, read.
#[derive(Debug)]
pub(super) struct Archive<'a> {
    bytes: &'a [u8],
    /// Where the central directory starts in `bytes`.
    cd_start: u64,
    /// Bytes prepended before the archive; offsets count from here.
    base: u64,
    pub entries: Vec<Entry>,
    /// Central directory records that were malformed or over the cap.
    pub skipped: usize,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(s.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// Where the central directory is: (start in the buffer, size, base).
type CdLoc = (u64, u64, u64);

/// Validates a directory of `size` bytes that claims archive offset
/// `offset` and really ends at buffer position `end`.
fn cd_location(size: u64, offset: u64, end: u64) -> Result<CdLoc, String> {
    let start = end
        .checked_sub(size)
        .ok_or("central directory larger than the archive")?;
    let base = start
        .checked_sub(offset)
        .ok_or("central directory offset beyond its end")?;
    Ok((start, size, base))
}

/// Reads the EOCD candidate at `p`, following a ZIP64 locator when one sits
/// right before it.
fn eocd_candidate(b: &[u8], p: usize) -> Result<CdLoc, String> {
    if let Some(lp) = p.checked_sub(ZIP64_LOCATOR_LEN)
        && le32(b, lp) == Some(SIG_ZIP64_LOCATOR)
    {
        let record = le64(b, lp + 8).ok_or("truncated zip64 locator")?;
        let read = |at: u64| -> Result<CdLoc, String> {
            let at_usize = usize::try_from(at).map_err(|_| "zip64 record out of range")?;
            if at.checked_add(ZIP64_EOCD_LEN as u64) > Some(lp as u64) {
                return Err("zip64 record out of range".into());
            }
            if le32(b, at_usize) != Some(SIG_ZIP64_EOCD) {
                return Err("bad zip64 record signature".into());
            }
            let size = le64(b, at_usize + 40).ok_or("truncated zip64 record")?;
            let offset = le64(b, at_usize + 48).ok_or("truncated zip64 record")?;
            cd_location(size, offset, at)
        };
        // With bytes prepended, the absolute offset is off; writers put the
        // record right before its locator, so look there too.
        return read(record).or_else(|e| match (lp as u64).checked_sub(ZIP64_EOCD_LEN as u64) {
            Some(at) if at != record => read(at),
            _ => Err(e),
        });
    }
    let size = u64::from(le32(b, p + 12).ok_or("truncated eocd")?);
    let offset = u64::from(le32(b, p + 16).ok_or("truncated eocd")?);
    cd_location(size, offset, p as u64)
}

/// Opens the archive in `bytes`, keeping at most `max_entries` entries.
pub(super) fn open(bytes: &[u8], max_entries: usize) -> Result<Archive<'_>, String> {
    if bytes.len() < EOCD_LEN {
        return Err("not a zip archive (too short)".into());
    }
    let last = bytes.len() - EOCD_LEN;
    let first = last.saturating_sub(MAX_COMMENT_LEN);
    let mut found = None;
    for p in (first..=last).rev() {
        if le32(bytes, p) != Some(SIG_EOCD) {
            continue;
        }
        let Ok(loc) = eocd_candidate(bytes, p) else {
            continue;
        };
        let comment_len = usize::from(le16(bytes, p + 20).unwrap_or(0));
        if p + EOCD_LEN + comment_len == bytes.len() {
            found = Some(loc);
            break;
        }
        found.get_or_insert(loc);
    }
    let (cd_start, size, base) = found.ok_or("not a zip archive (no end of central directory)")?;
    let cd = usize::try_from(cd_start)
        .ok()
        .zip(usize::try_from(cd_start + size).ok())
        .and_then(|(s, e)| bytes.get(s..e))
        .ok_or("central directory beyond the end of the archive")?;
    let (entries, skipped) = parse_central_directory(cd, max_entries);
    Ok(Archive {
        bytes,
        cd_start,
        base,
        entries,
        skipped,
    })
}

/// Walks the central directory: records in order, at most `max_entries`,
/// and a count of those not returned (malformed or over the cap). After a
/// malformed record the walk resumes at the next record signature.
fn parse_central_directory(cd: &[u8], max_entries: usize) -> (Vec<Entry>, usize) {
    let mut entries = Vec::with_capacity(max_entries.min(cd.len() / CD_RECORD_LEN));
    let mut skipped = 0usize;
    let mut pos = 0;
    while let Some(sig) = le32(cd, pos) {
        if sig != SIG_CD {
            // Digital signature or ZIP64 records may follow; anything else
            // is resynchronised below.
            if matches!(
                sig,
                0x0505_4b50 | SIG_ZIP64_EOCD | SIG_ZIP64_LOCATOR | SIG_EOCD
            ) {
                break;
            }
        }
        match parse_cd_record(cd, pos) {
            Some((entry, len)) => {
                if entries.len() < max_entries {
                    entries.push(entry);
                } else {
                    skipped += 1;
                }
                pos += len;
            }
            None => {
                skipped += 1;
                let needle = SIG_CD.to_le_bytes();
                match cd
                    .get(pos + 1..)
                    .and_then(|rest| rest.windows(4).position(|w| w == needle))
                {
                    Some(i) => pos = pos + 1 + i,
                    None => break,
                }
            }
        }
    }
    (entries, skipped)
}

/// The record at `pos` and its total length, or `None` when malformed.
fn parse_cd_record(b: &[u8], pos: usize) -> Option<(Entry, usize)> {
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
    if rec.len() < total {
        return None;
    }
    let name = rec.get(CD_RECORD_LEN..name_end)?;
    let extra = rec.get(name_end..extra_end)?;
    let mut uncompressed_size = u64::from(usize32);
    let mut compressed_size = u64::from(csize32);
    let mut local_header_offset = u64::from(offset32);
    let needs = [
        usize32 == U32_SENTINEL,
        csize32 == U32_SENTINEL,
        offset32 == U32_SENTINEL,
    ];
    if needs.contains(&true) {
        // The ZIP64 extra block holds exactly the values whose 32-bit slot
        // is the sentinel, in this order.
        let z = zip64_extra(extra)?;
        let mut at = 0;
        for (need, slot) in needs.into_iter().zip([
            &mut uncompressed_size,
            &mut compressed_size,
            &mut local_header_offset,
        ]) {
            if need {
                *slot = le64(z, at)?;
                at += 8;
            }
        }
    }
    let entry = Entry {
        name: name.to_vec(),
        method,
        compressed_size,
        uncompressed_size,
        local_header_offset,
        crc32,
        flags,
    };
    Some((entry, total))
}

/// The data of the ZIP64 extra block (id 1), if any.
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

impl<'a> Archive<'a> {
    /// Where `entry`'s stored data is in the buffer. It must end at or
    /// before the central directory.
    pub(super) fn data_range(&self, entry: &Entry) -> Result<Range<usize>, String> {
        self.extent(entry).map(|(_, data)| data)
    }

    /// Where `entry`'s local header starts, and where its stored data is.
    pub(super) fn extent(&self, entry: &Entry) -> Result<(usize, Range<usize>), String> {
        let header = self
            .base
            .checked_add(entry.local_header_offset)
            .filter(|h| h.checked_add(LOCAL_HEADER_LEN as u64) <= Some(self.cd_start))
            .ok_or("local header outside the archive")?;
        let h = usize::try_from(header).map_err(|_| "local header outside the archive")?;
        if le32(self.bytes, h) != Some(SIG_LOCAL) {
            return Err("bad local header signature".into());
        }
        let name_len = u64::from(le16(self.bytes, h + 26).unwrap_or(0));
        let extra_len = u64::from(le16(self.bytes, h + 28).unwrap_or(0));
        let start = header + LOCAL_HEADER_LEN as u64 + name_len + extra_len;
        let end = start
            .checked_add(entry.compressed_size)
            .filter(|&e| e <= self.cd_start)
            .ok_or("entry data runs into the central directory")?;
        // All fit in usize: they are at most cd_start, an index of bytes.
        Ok((h, start as usize..end as usize))
    }

    /// The decompressed, CRC-checked contents of `entry`, refused when it
    /// would exceed `max_out` bytes (before anything is inflated when the
    /// directory says so, and as soon as the output reaches the limit
    /// otherwise).
    pub(super) fn read(&self, entry: &Entry, max_out: usize) -> Result<Cow<'a, [u8]>, String> {
        if entry.flags & FLAG_ENCRYPTED != 0 {
            return Err("encrypted entry".into());
        }
        if entry.uncompressed_size > max_out as u64 {
            return Err(format!(
                "entry claims {} bytes, over the {max_out}-byte limit",
                entry.uncompressed_size
            ));
        }
        let range = self.data_range(entry)?;
        let raw = &self.bytes[range];
        let out = match entry.method {
            METHOD_STORED => Cow::Borrowed(raw),
            METHOD_DEFLATED => {
                use miniz_oxide::inflate::{TINFLStatus, decompress_to_vec_with_limit};
                match decompress_to_vec_with_limit(raw, max_out) {
                    Ok(out) => Cow::Owned(out),
                    Err(e) if e.status == TINFLStatus::HasMoreOutput => {
                        return Err(format!("entry inflates to more than {max_out} bytes"));
                    }
                    Err(e) => return Err(format!("bad deflate data ({:?})", e.status)),
                }
            }
            other => return Err(format!("unsupported compression method {other}")),
        };
        if out.len() as u64 != entry.uncompressed_size {
            return Err("entry length differs from the central directory".into());
        }
        if crc32(&out) != entry.crc32 {
            return Err("entry crc32 mismatch".into());
        }
        Ok(out)
    }
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

/// The CRC-32 that ZIP stores for each entry.
pub(super) fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8);
    }
    !c
}

/// A small ZIP writer for tests: `(name, contents, deflate?)`, optionally
/// with ZIP64 records and bytes prepended.
#[cfg(test)]
pub(super) fn build_zip(entries: &[(&str, &[u8], bool)], zip64: bool, prefix: &[u8]) -> Vec<u8> {
    fn put16(o: &mut Vec<u8>, v: u16) {
        o.extend_from_slice(&v.to_le_bytes());
    }
    fn put32(o: &mut Vec<u8>, v: u32) {
        o.extend_from_slice(&v.to_le_bytes());
    }
    fn put64(o: &mut Vec<u8>, v: u64) {
        o.extend_from_slice(&v.to_le_bytes());
    }
    let mut zip = Vec::new();
    let mut cd = Vec::new();
    // The same contents again are compressed once (bulk tests repeat them).
    let mut last: Option<(&[u8], Vec<u8>)> = None;
    for &(name, content, deflate) in entries {
        let (method, stored) = if deflate {
            let packed = match &last {
                Some((c, p)) if std::ptr::eq(*c, content) => p.clone(),
                _ => miniz_oxide::deflate::compress_to_vec(content, 6),
            };
            last = Some((content, packed.clone()));
            (METHOD_DEFLATED, packed)
        } else {
            (METHOD_STORED, content.to_vec())
        };
        let offset = zip.len() as u64;
        let (c32, u32_, o32) = if zip64 {
            (U32_SENTINEL, U32_SENTINEL, U32_SENTINEL)
        } else {
            (stored.len() as u32, content.len() as u32, offset as u32)
        };
        put32(&mut zip, SIG_LOCAL);
        put16(&mut zip, 20);
        put16(&mut zip, 0x800);
        put16(&mut zip, method);
        put32(&mut zip, 0);
        put32(&mut zip, crc32(content));
        put32(&mut zip, c32);
        put32(&mut zip, u32_);
        put16(&mut zip, name.len() as u16);
        put16(&mut zip, 0);
        zip.extend_from_slice(name.as_bytes());
        zip.extend_from_slice(&stored);
        put32(&mut cd, SIG_CD);
        put16(&mut cd, 0x031e);
        put16(&mut cd, 20);
        put16(&mut cd, 0x800);
        put16(&mut cd, method);
        put32(&mut cd, 0);
        put32(&mut cd, crc32(content));
        put32(&mut cd, c32);
        put32(&mut cd, u32_);
        put16(&mut cd, name.len() as u16);
        put16(&mut cd, if zip64 { 28 } else { 0 });
        put16(&mut cd, 0);
        put16(&mut cd, 0);
        put16(&mut cd, 0);
        put32(&mut cd, 0);
        put32(&mut cd, o32);
        cd.extend_from_slice(name.as_bytes());
        if zip64 {
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
    if zip64 {
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
    put32(&mut zip, 0);
    let (n16, s32, o32) = if zip64 {
        (0xFFFF, U32_SENTINEL, U32_SENTINEL)
    } else {
        (n as u16, cd_size as u32, cd_offset as u32)
    };
    put16(&mut zip, n16);
    put16(&mut zip, n16);
    put32(&mut zip, s32);
    put32(&mut zip, o32);
    put16(&mut zip, 0);
    let mut out = prefix.to_vec();
    out.extend_from_slice(&zip);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_zip64_and_prefixed_archives() {
        let big = b"{\"id\": \"X\"}".repeat(1000);
        let entries: [(&str, &[u8], bool); 3] = [
            ("a.json", b"{}", false),
            ("dir/", b"", false),
            ("b.json", &big, true),
        ];
        for (zip64, prefix) in [
            (false, &b""[..]),
            (true, &b""[..]),
            (false, &b"#!/bin/sh\n"[..]),
            (true, &b"MZ junk"[..]),
        ] {
            let bytes = build_zip(&entries, zip64, prefix);
            let z = open(&bytes, 100).unwrap();
            assert_eq!(z.entries.len(), 3);
            assert_eq!(z.skipped, 0);
            assert!(z.entries[1].is_dir());
            assert_eq!(&*z.read(&z.entries[0], 100).unwrap(), b"{}");
            assert_eq!(&*z.read(&z.entries[2], 1 << 20).unwrap(), &big[..]);
            // Too big for the caller's limit: refused by the claim first,
            // and by the inflater when the claim lies.
            assert!(z.read(&z.entries[2], 100).is_err());
            let mut liar = z.entries[2].clone();
            liar.uncompressed_size = 10;
            assert!(z.read(&liar, 100).unwrap_err().contains("more than"));
            // The cap on entries holds.
            let z = open(&bytes, 2).unwrap();
            assert_eq!((z.entries.len(), z.skipped), (2, 1));
        }
    }

    #[test]
    fn damaged_archives_fail_cleanly() {
        let bytes = build_zip(
            &[("a.json", b"{\"a\": 1}", true), ("b.json", b"[]", false)],
            false,
            b"",
        );
        for cut in 0..bytes.len() {
            if let Ok(z) = open(&bytes[..cut], 100) {
                for e in &z.entries {
                    let _ = z.read(e, 1 << 20);
                }
            }
        }
        let z = open(&bytes, 100).unwrap();
        let mut e = z.entries[0].clone();
        e.crc32 ^= 1;
        assert!(z.read(&e, 1 << 20).unwrap_err().contains("crc32"));
        e = z.entries[0].clone();
        e.flags |= FLAG_ENCRYPTED;
        assert!(z.read(&e, 1 << 20).is_err());
        e = z.entries[0].clone();
        e.method = 12;
        assert!(z.read(&e, 1 << 20).unwrap_err().contains("method"));
        e = z.entries[0].clone();
        e.local_header_offset = 1 << 40;
        assert!(z.read(&e, 1 << 20).is_err());
        e = z.entries[0].clone();
        e.compressed_size = 1 << 40;
        assert!(z.read(&e, 1 << 20).is_err());
        assert!(open(b"", 10).is_err());
        assert!(open(&[0u8; 100], 10).is_err());
    }
}
