//! Parser for `/proc/PID/maps`: the file-backed memory mappings of a process.
//!
//! Each line is printed by the kernel's `show_map_vma()` as
//!
//! ```text
//! 7f89ce05e000-7f89ce084000 r--p 00000000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
//! ```
//!
//! that is `start-end perms offset major:minor inode`, then padding spaces,
//! then the pathname. Quirks this parser handles:
//!
//! * The pathname is whatever `d_path()` produced and may contain spaces, so
//!   it runs from the first non-space byte after the inode to the end of the
//!   line and is kept byte-exact (no UTF-8 requirement, no trimming).
//! * The kernel prints the pathname with `seq_file_path(m, file, "\n")`,
//!   which escapes only the newline byte, as the four bytes `\012`. A raw
//!   newline therefore never appears inside a pathname and we decode exactly
//!   that sequence back to `\n`. Backslashes are *not* escaped by the kernel,
//!   so a file literally named `a\012b` is indistinguishable from `a<LF>b`;
//!   we decode it as the latter, like every other consumer of this file.
//! * When the mapped file has been unlinked, `d_path()` appends ` (deleted)`.
//!   We strip that suffix and set [`MapEntry::deleted`]. A file whose real
//!   name ends in ` (deleted)` reads the same; bytes alone cannot tell, so
//!   the scanner looks the full name up inside the process's root and
//!   compares device and inode (`scan::real_name`).
//! * The device numbers are printed with `%02x`, which is a minimum width:
//!   majors above 0xff and minors above 0xff (up to 20 bits) print more digits.
//! * Anonymous mappings have no pathname (the line ends with the padding
//!   space), and pseudo mappings use names like `[heap]`, `[vdso]`,
//!   `[stack]` or `anon_inode:...` which do not start with `/`.
//! * Some kernel-internal objects are shmem files that *do* look like absolute
//!   deleted paths: shared anonymous memory (`/dev/zero (deleted)`), System V
//!   shared memory (`/SYSV0000abcd (deleted)`) and AIO rings
//!   (`/[aio] (deleted)`). They are not on any filesystem a package could
//!   own, so they are skipped too.
//! * `memfd_create()` files print as `/memfd:NAME (deleted)`. They are not
//!   on any filesystem either, but code loaded from one (fileless loading)
//!   is what a responder wants to see, so they are kept, with
//!   [`MapEntry::is_memfd`] to tell them apart; the scanner reports only
//!   those mapped executable (a rw memfd is shared memory, as Wayland's
//!   cursor buffers are).

use super::{parse_dec_u64, parse_hex_u32, parse_hex_u64};

/// One file-backed mapping from `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address of the mapping.
    pub start: u64,
    /// One past the last address of the mapping.
    pub end: u64,
    /// The permission bytes, e.g. `*b"r-xp"`.
    pub perms: [u8; 4],
    /// Offset into the file, in bytes.
    pub offset: u64,
    /// Major number of the device holding the file.
    pub dev_major: u32,
    /// Minor number of the device holding the file.
    pub dev_minor: u32,
    /// Inode of the file on that device.
    pub inode: u64,
    /// The absolute pathname, byte-exact, with `\012` decoded to `\n` and
    /// the ` (deleted)` suffix removed. Never empty.
    pub path: Vec<u8>,
    /// Whether the kernel marked the file as unlinked.
    pub deleted: bool,
}

impl MapEntry {
    /// Whether the mapping may be executed (`x` in the permissions).
    pub fn is_exec(&self) -> bool {
        self.perms[2] == b'x'
    }

    /// Whether the file is a `memfd_create()` file (`/memfd:NAME`), which
    /// no directory holds.
    pub fn is_memfd(&self) -> bool {
        self.path.starts_with(MEMFD_PREFIX)
    }
}

/// How the kernel names `memfd_create()` files (then the name given).
pub const MEMFD_PREFIX: &[u8] = b"/memfd:";

/// The suffix `d_path()` appends to unlinked files.
const DELETED_SUFFIX: &[u8] = b" (deleted)";

/// Parses `/proc/PID/maps` and returns the file-backed mappings only.
///
/// File-backed mappings only (pathname starts with '/' and inode != 0), and
/// memfd files; pseudo entries ([heap], [vdso], anon, SysV shm etc.) are
/// skipped. Returns the entries and the number of malformed lines skipped.
///
/// Skipped pseudo entries and blank lines are not counted as malformed.
pub fn parse_maps(bytes: &[u8]) -> (Vec<MapEntry>, usize) {
    let mut entries = Vec::new();
    let mut malformed = 0;
    for line in super::lines(bytes) {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(Line::File(entry)) => entries.push(entry),
            Some(Line::NotFile) => {}
            None => malformed += 1,
        }
    }
    (entries, malformed)
}

/// What a well-formed line describes.
enum Line {
    /// A mapping of a real file.
    File(MapEntry),
    /// An anonymous or pseudo mapping.
    NotFile,
}

/// Parses one line. Returns `None` if the line is malformed.
fn parse_line(line: &[u8]) -> Option<Line> {
    // The five fixed fields are separated by exactly one space each.
    let (range, rest) = split_space(line)?;
    let (perms, rest) = split_space(rest)?;
    let (offset, rest) = split_space(rest)?;
    let (dev, rest) = split_space(rest)?;
    // The inode is followed by padding spaces and the pathname, or by a single
    // space and the end of the line for anonymous mappings. Old kernels (and
    // some hand-made fixtures) omit that trailing space, so it is optional.
    let inode_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let inode = parse_dec_u64(&rest[..inode_end])?;
    let raw_path = &rest[inode_end..];
    let raw_path = match raw_path.iter().position(|&b| b != b' ') {
        Some(i) => &raw_path[i..],
        None => &[],
    };

    let (start, end) = range.split_at(range.iter().position(|&b| b == b'-')?);
    let start = parse_hex_u64(start)?;
    let end = parse_hex_u64(&end[1..])?;
    if start > end {
        return None;
    }

    let perms: [u8; 4] = perms.try_into().ok()?;
    let valid_perms = matches!(perms[0], b'r' | b'-')
        && matches!(perms[1], b'w' | b'-')
        && matches!(perms[2], b'x' | b'-')
        && matches!(perms[3], b'p' | b's');
    if !valid_perms {
        return None;
    }

    let offset = parse_hex_u64(offset)?;

    let (major, minor) = dev.split_at(dev.iter().position(|&b| b == b':')?);
    let dev_major = parse_hex_u32(major)?;
    let dev_minor = parse_hex_u32(&minor[1..])?;

    if inode == 0 || raw_path.first() != Some(&b'/') {
        return Some(Line::NotFile);
    }
    let (raw_path, deleted) = match raw_path.strip_suffix(DELETED_SUFFIX) {
        Some(p) => (p, true),
        None => (raw_path, false),
    };
    if is_pseudo_path(raw_path, deleted) {
        return Some(Line::NotFile);
    }
    let path = unescape_newlines(raw_path);
    // The path starts with '/', and stripping the suffix cannot remove that
    // first byte because the suffix starts with a space, so `path` is
    // non-empty here.
    Some(Line::File(MapEntry {
        start,
        end,
        perms,
        offset,
        dev_major,
        dev_minor,
        inode,
        path,
        deleted,
    }))
}

/// Splits at the first space: returns the non-empty field before it and the
/// bytes after it.
fn split_space(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == b' ')?;
    if i == 0 {
        return None;
    }
    Some((&bytes[..i], &bytes[i + 1..]))
}

/// Recognises shmem-backed kernel objects that print like absolute paths but
/// are not files on any real filesystem. `raw` is the path with the
/// ` (deleted)` suffix already removed.
fn is_pseudo_path(raw: &[u8], deleted: bool) -> bool {
    // memfd_create() files ("memfd:<name>" on an internal shmem mount) are
    // kept: see the module comment.
    if !deleted {
        return false;
    }
    // Shared anonymous mappings (mmap MAP_SHARED|MAP_ANONYMOUS) are backed by
    // a shmem file the kernel names "dev/zero".
    if raw == b"/dev/zero" || raw == b"/[aio]" {
        return true;
    }
    // SysV shared memory segments are named "SYSV" plus the 8-hex-digit key.
    if let Some(key) = raw.strip_prefix(b"/SYSV") {
        return key.len() == 8 && key.iter().all(u8::is_ascii_hexdigit);
    }
    false
}

/// Decodes every `\012` sequence to a newline byte, leaving everything else
/// untouched. Runs in linear time.
fn unescape_newlines(raw: &[u8]) -> Vec<u8> {
    const ESC: &[u8] = b"\\012";
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw[i..].starts_with(ESC) {
            out.push(b'\n');
            i += ESC.len();
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

/// A realistic excerpt of `/proc/self/maps` from an x86-64 Debian host, plus a
/// few edge cases, used by the tests here and by the fuzz test.
#[cfg(test)]
pub(crate) const SAMPLE: &[u8] = b"\
56308b8bf000-56308b8c1000 r--p 00000000 fe:00 247282                     /usr/bin/head
56308b8c1000-56308b8c7000 r-xp 00002000 fe:00 247282                     /usr/bin/head
557ab70d0000-557ab70f1000 rw-p 00000000 00:00 0                          [heap]
7f89cdfd9000-7f89cdffb000 rw-p 00000000 00:00 0 
7f89cdffb000-7f89ce052000 r--p 00000000 fe:00 316534                     /usr/lib/locale/C.utf8/LC_CTYPE
7f89ce05e000-7f89ce084000 r--p 00000000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f89ce084000-7f89ce1da000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f89ce241000-7f89ce248000 r--s 00000000 fe:00 325745                     /usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache
7f89ce24b000-7f89ce24f000 r--p 00000000 00:00 0                          [vvar]
7f89ce251000-7f89ce253000 r-xp 00000000 00:00 0                          [vdso]
7f89ce254000-7f89ce27a000 r-xp 00001000 fe:00 325843                     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7f1c2a000000-7f1c2a021000 r-xp 00000000 103:02 1311 /opt/my app/lib foo.so (deleted)
7f1c2b000000-7f1c2b001000 rw-s 00000000 00:01 4242                       /memfd:wayland-cursor (deleted)
7f1c2c000000-7f1c2c001000 rw-s 00000000 00:01 1025                       /dev/zero (deleted)
7f1c2d000000-7f1c2d001000 rw-s 00000000 00:01 32769                      /SYSV0000162e (deleted)
7ffc23d71000-7ffc23d92000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(bytes: &[u8]) -> Vec<Vec<u8>> {
        parse_maps(bytes).0.into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn sample() {
        let (entries, bad) = parse_maps(SAMPLE);
        assert_eq!(bad, 0);
        let got: Vec<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(
            got,
            vec![
                b"/usr/bin/head" as &[u8],
                b"/usr/bin/head",
                b"/usr/lib/locale/C.utf8/LC_CTYPE",
                b"/usr/lib/x86_64-linux-gnu/libc.so.6",
                b"/usr/lib/x86_64-linux-gnu/libc.so.6",
                b"/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache",
                b"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                b"/opt/my app/lib foo.so",
                b"/memfd:wayland-cursor",
            ]
        );
        assert_eq!(
            entries[4],
            MapEntry {
                start: 0x7f89_ce08_4000,
                end: 0x7f89_ce1d_a000,
                perms: *b"r-xp",
                offset: 0x26000,
                dev_major: 0xfe,
                dev_minor: 0,
                inode: 326_279,
                path: b"/usr/lib/x86_64-linux-gnu/libc.so.6".to_vec(),
                deleted: false,
            }
        );
        assert_eq!(entries[5].perms, *b"r--s");
        let deleted = &entries[7];
        assert!(deleted.deleted && deleted.is_exec() && !deleted.is_memfd());
        assert_eq!((deleted.dev_major, deleted.dev_minor), (0x103, 2));
        assert!(entries[..7].iter().all(|e| !e.deleted));
        let memfd = &entries[8];
        assert!(memfd.deleted && memfd.is_memfd() && !memfd.is_exec());
        assert_eq!(memfd.inode, 4242);
    }

    #[test]
    fn the_real_self_maps_parses_cleanly() {
        // Test-only I/O: the parser itself never reads files.
        let Ok(bytes) = std::fs::read("/proc/self/maps") else {
            return;
        };
        let (entries, bad) = parse_maps(&bytes);
        assert_eq!(bad, 0);
        assert!(!entries.is_empty());
        assert!(
            entries
                .iter()
                .all(|e| e.path.starts_with(b"/") && e.inode != 0)
        );
        assert!(entries.iter().all(|e| !e.is_memfd()));
    }

    #[test]
    fn newline_escape_and_deleted() {
        let line = b"7f00-7f01 r--p 00000000 08:01 12 /tmp/a\\012b\\012 (deleted)\n";
        let (e, bad) = parse_maps(line);
        assert_eq!(bad, 0);
        assert_eq!(e[0].path, b"/tmp/a\nb\n");
        assert!(e[0].deleted);
        // Only the exact "\012" is decoded; other backslash runs stay as is.
        let line = b"7f00-7f01 r--p 00000000 08:01 12 /tmp/x\\01\\\\012\\0120\\n\\\n";
        assert_eq!(paths(line), vec![b"/tmp/x\\01\\\n\n0\\n\\".to_vec()]);
        // " (deleted)" only counts as a suffix.
        let line = b"7f00-7f01 r--p 00000000 08:01 12 /tmp/ (deleted) x\n";
        let (e, _) = parse_maps(line);
        assert_eq!(e[0].path, b"/tmp/ (deleted) x");
        assert!(!e[0].deleted);
        // Deleting the root directory cannot make the path empty.
        let (e, _) = parse_maps(b"0-1 r--p 0 0:0 1 / (deleted)");
        assert_eq!(e[0].path, b"/");
    }

    #[test]
    fn paths_with_spaces_and_odd_bytes_are_exact() {
        let line = b"1000-2000 r--p 00000000 fe:00 7     /a  b /c\t \xff\xfe  \n";
        assert_eq!(paths(line), vec![b"/a  b /c\t \xff\xfe  ".to_vec()]);
        // A carriage return is just another byte in a file name.
        let line = b"1000-2000 r--p 00000000 fe:00 7 /a\r\n";
        assert_eq!(paths(line), vec![b"/a\r".to_vec()]);
    }

    #[test]
    fn skips_pseudo_and_anonymous() {
        let input = b"\
1000-2000 rw-p 00000000 00:00 0 
1000-2000 rw-p 00000000 00:00 0
1000-2000 rw-p 00000000 00:00 0      [heap]
1000-2000 rw-p 00000000 00:0e 9      anon_inode:[perf_event]
1000-2000 rw-p 00000000 fe:00 0      /inode/zero
1000-2000 rw-s 00000000 00:01 9      /[aio] (deleted)
1000-2000 rw-s 00000000 00:01 9      /SYSV000000zz (deleted)
1000-2000 rw-s 00000000 00:01 9      /dev/zero
";
        let (e, bad) = parse_maps(input);
        assert_eq!(bad, 0);
        // A SYSV name without a hex key and a non-deleted /dev/zero are real
        // paths as far as we can tell.
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].path, b"/SYSV000000zz");
        assert_eq!(e[1].path, b"/dev/zero");
    }

    /// Issue 11, defect 5: code loaded from a memfd (fexecve, or dlopen of
    /// /proc/self/fd/N) shows as `/memfd:NAME (deleted)`; the name is kept
    /// byte-exact (it may hold spaces), and a memfd mapped rw is told apart
    /// by its permissions.
    #[test]
    fn memfd_mappings_are_kept_with_their_name() {
        let input = b"\
7f00-7f01 r--p 00000000 00:01 2051                       /memfd:payload (deleted)
7f01-7f02 r-xp 00001000 00:01 2051                       /memfd:payload (deleted)
7f02-7f03 rw-s 00000000 00:01 2052                       /memfd:wayland-cursor (deleted)
7f03-7f04 r-xp 00000000 00:01 2053                       /memfd:  a b  (deleted)
7f04-7f05 r-xp 00000000 00:01 2054                       /memfd:
7f05-7f06 r-xp 00000000 00:05 2055                       /memfd (deleted)
";
        let (e, bad) = parse_maps(input);
        assert_eq!(bad, 0);
        let got: Vec<(&[u8], bool, bool, bool)> = e
            .iter()
            .map(|e| (e.path.as_slice(), e.is_memfd(), e.is_exec(), e.deleted))
            .collect();
        assert_eq!(
            got,
            vec![
                (b"/memfd:payload" as &[u8], true, false, true),
                (b"/memfd:payload", true, true, true),
                (b"/memfd:wayland-cursor", true, false, true),
                (b"/memfd:  a b ", true, true, true),
                (b"/memfd:", true, true, false),
                // A real file named "/memfd" is no memfd.
                (b"/memfd", false, true, true),
            ]
        );
    }

    #[test]
    fn large_device_numbers_and_wide_fields() {
        let line = b"ffffffffff600000-ffffffffff601000 r-xp ffffffffffffffff fff:fffff 18446744073709551615 /x\n";
        let (e, bad) = parse_maps(line);
        assert_eq!(bad, 0);
        assert_eq!(e[0].dev_major, 0xfff);
        assert_eq!(e[0].dev_minor, 0xfffff);
        assert_eq!(e[0].offset, u64::MAX);
        assert_eq!(e[0].inode, u64::MAX);
    }

    #[test]
    fn malformed_lines_are_counted() {
        let input = b"\
1000-2000 r--p 00000000 fe:00 18446744073709551616 /overflow-inode
10000000000000000-2000 r--p 00000000 fe:00 1 /overflow-start
2000-1000 r--p 00000000 fe:00 1 /backwards
1000-2000 rwxq 00000000 fe:00 1 /bad-perms
1000-2000 r--pp 00000000 fe:00 1 /long-perms
1000-2000 r--p 00000000 fe00 1 /no-colon
1000-2000 r--p 00000000 fe:100000000 1 /minor-overflow
1000-2000 r--p 0000000g fe:00 1 /bad-offset
1000-2000  r--p 00000000 fe:00 1 /double-space
1000-2000 r--p 00000000 fe:00
1000-2000 r--p
1000-
\0\0\0
1000-2000 r--p 00000000 fe:00 1 /good
";
        let (e, bad) = parse_maps(input);
        assert_eq!(bad, 13);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, b"/good");
    }

    #[test]
    fn hostile_inputs() {
        assert_eq!(parse_maps(b""), (vec![], 0));
        assert_eq!(parse_maps(b"\n\n\n"), (vec![], 0));
        // Embedded NULs and invalid UTF-8 inside the path are kept.
        let (e, bad) = parse_maps(b"1-2 r--p 0 0:0 5 /a\0b\xc3\x28\n");
        assert_eq!(bad, 0);
        assert_eq!(e[0].path, b"/a\0b\xc3\x28");
        // A 4 MiB path, and a 4 MiB line of junk.
        let mut line = b"1-2 r--p 0 0:0 5 /".to_vec();
        line.extend(std::iter::repeat_n(b'a', 4 << 20));
        let (e, bad) = parse_maps(&line);
        assert_eq!(bad, 0);
        assert_eq!(e[0].path.len(), (4 << 20) + 1);
        let junk = vec![b'7'; 4 << 20];
        assert_eq!(parse_maps(&junk), (vec![], 1));
        let spaces = vec![b' '; 4 << 20];
        assert_eq!(parse_maps(&spaces), (vec![], 1));
        // A 4 MiB run of "\012" escapes decodes in linear time.
        let mut line = b"1-2 r--p 0 0:0 5 /".to_vec();
        for _ in 0..(1 << 20) {
            line.extend_from_slice(b"\\012");
        }
        let (e, _) = parse_maps(&line);
        assert_eq!(e[0].path.len(), (1 << 20) + 1);
        // Every truncation of a valid line yields at most one result: cut in
        // the fixed fields it is malformed, cut right after the inode it looks
        // anonymous, and cut inside the path it is a shorter (non-empty) path.
        let full = &SAMPLE[..SAMPLE.iter().position(|&b| b == b'\n').unwrap()];
        let path_at = full.iter().position(|&b| b == b'/').unwrap();
        for n in 0..full.len() {
            let (e, bad) = parse_maps(&full[..n]);
            assert!(e.len() + bad <= 1, "prefix {n}");
            assert_eq!(e.len(), usize::from(n > path_at), "prefix {n}");
            assert!(e.iter().all(|e| !e.path.is_empty()));
        }
    }
}
