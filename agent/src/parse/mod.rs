//! Pure byte parsers for the /proc files and the dpkg database the agent reads.
//!
//! Every parser in this module takes `&[u8]` and never performs I/O, so the
//! caller decides how (and from which root) the bytes are read. The parsers
//! treat their input as hostile: a process can put almost anything into its
//! `comm`, its command line or the names of the files it maps, and a container
//! image can ship a damaged dpkg database. They therefore never panic, never
//! allocate more than a small multiple of the input, and run in linear time.
//! Malformed records are skipped (and counted where the API says so) rather
//! than failing the whole file.

pub mod apk;
pub mod auditable;
pub mod bolt;
pub mod cgroup;
pub mod changelog;
pub mod cmdline;
pub mod dns;
pub mod dpkg;
pub mod elf;
#[cfg(test)]
pub(crate) mod fuzz;
pub mod gobuild;
/// The development image's own assets (pyenv, the docker CLI) that some
/// tests read: "skipped" without them, a failure in CI.
#[cfg(test)]
#[path = "../../../tests/src/image.rs"]
pub(crate) mod image;
pub mod jar;
pub mod maps;
pub mod net;
pub mod npm;
pub mod python;
pub mod rpm;
pub mod stat;
pub mod status;
pub mod zip;

/// The error returned by the parsers that can fail as a whole.
///
/// The `reason` strings are short and never echo more than a few bytes of the
/// input, because the input may be several megabytes of attacker-controlled
/// data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The input was present but could not be understood.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which file or field was being parsed, e.g. "stat".
        what: &'static str,
        /// A short human-readable explanation.
        reason: String,
    },
    /// A record or field that the parser requires was not found.
    #[error("missing {what}")]
    Missing {
        /// Which record or field was missing, e.g. "btime line".
        what: &'static str,
    },
}

/// Builds a [`ParseError::Malformed`] with a short reason.
fn malformed(what: &'static str, reason: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        what,
        reason: reason.into(),
    }
}

/// Renders at most a few bytes of `bytes` for an error message, escaping
/// anything that is not printable ASCII so the message stays one short line.
fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 24;
    let shown = &bytes[..bytes.len().min(MAX)];
    let mut out = shown.escape_ascii().to_string();
    if bytes.len() > MAX {
        out.push_str("...");
    }
    out
}

/// Parses a non-empty run of ASCII decimal digits. Signs, whitespace and
/// values that overflow `u64` are rejected.
fn parse_dec_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// Like [`parse_dec_u64`] but for values that must fit in a `u32`.
fn parse_dec_u32(bytes: &[u8]) -> Option<u32> {
    u32::try_from(parse_dec_u64(bytes)?).ok()
}

/// Parses a non-empty run of ASCII hex digits (either case, no `0x` prefix).
/// Values that overflow `u64` are rejected.
fn parse_hex_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in bytes {
        let digit = hex_digit(b)?;
        value = value.checked_mul(16)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

/// Like [`parse_hex_u64`] but for values that must fit in a `u32`.
fn parse_hex_u32(bytes: &[u8]) -> Option<u32> {
    u32::try_from(parse_hex_u64(bytes)?).ok()
}

/// The value of one ASCII hex digit.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Iterates over the `\n`-separated lines of `bytes`, without the newline.
///
/// A trailing newline does not produce a final empty line, but empty lines in
/// the middle are yielded so callers that care about blank lines (deb822
/// paragraph separators) can see them.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut it = body.split(|&b| b == b'\n');
    if bytes.is_empty() {
        // An empty input has no lines at all, not one empty line.
        it.next();
    }
    it
}

/// Splits `bytes` on runs of spaces and tabs, skipping empty fields.
fn fields(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|f| !f.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_reject_overflow_and_junk() {
        assert_eq!(parse_dec_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_dec_u64(b"18446744073709551616"), None);
        assert_eq!(parse_dec_u64(b"99999999999999999999999999"), None);
        assert_eq!(parse_dec_u64(b""), None);
        assert_eq!(parse_dec_u64(b"+1"), None);
        assert_eq!(parse_dec_u64(b"-1"), None);
        assert_eq!(parse_dec_u64(b"1 "), None);
        assert_eq!(parse_dec_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_dec_u32(b"4294967296"), None);
        assert_eq!(parse_hex_u64(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex_u64(b"1ffffffffffffffff"), None);
        assert_eq!(parse_hex_u64(b"0x10"), None);
        assert_eq!(parse_hex_u64(b"DeadBeef"), Some(0xdead_beef));
        assert_eq!(parse_hex_u32(b"100000000"), None);
        // Leading zeros never overflow, however many there are.
        let zeros = vec![b'0'; 1 << 20];
        assert_eq!(parse_dec_u64(&zeros), Some(0));
        assert_eq!(parse_hex_u64(&zeros), Some(0));
    }

    #[test]
    fn lines_and_fields() {
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"\n").collect::<Vec<_>>(), vec![b"" as &[u8]]);
        assert_eq!(
            lines(b"a\nb").collect::<Vec<_>>(),
            vec![b"a" as &[u8], b"b"]
        );
        assert_eq!(
            lines(b"a\n\nb\n").collect::<Vec<_>>(),
            vec![b"a" as &[u8], b"", b"b"]
        );
        assert_eq!(
            fields(b"  a\t b  ").collect::<Vec<_>>(),
            vec![b"a" as &[u8], b"b"]
        );
    }

    #[test]
    fn preview_is_short_and_escaped() {
        let huge = vec![0xffu8; 4 << 20];
        let p = preview(&huge);
        assert!(p.len() < 200);
        assert!(p.ends_with("..."));
        assert_eq!(preview(b"a\nb"), "a\\nb");
        let e = malformed("stat", preview(&huge));
        assert!(e.to_string().starts_with("malformed stat: "));
    }

    use crate::parse::fuzz::Rng;
    fn mutate(rng: &mut Rng, fixture: &[u8]) -> Vec<u8> {
        crate::parse::fuzz::mutate(rng, fixture, ALPHABET)
    }

    fn random_input(rng: &mut Rng) -> Vec<u8> {
        crate::parse::fuzz::random_input(rng, ALPHABET)
    }

    /// Bytes that are structurally meaningful to at least one parser, so that
    /// random inputs get past the first checks more often than pure noise.
    const ALPHABET: &[u8] = b"0123456789abcdefABCDEF:-/ ()[]\t\n\r\0=@,.\\x_(deleted)socket:[mnt:";

    fn feed_all(input: &[u8]) {
        let (entries, _) = maps::parse_maps(input);
        for e in &entries {
            assert!(!e.path.is_empty(), "maps returned an empty path");
            assert!(e.start <= e.end);
        }
        let _ = stat::parse_stat(input);
        let _ = stat::parse_btime(input);
        let _ = status::parse_status(input);
        let args = cmdline::parse_cmdline(input);
        let _ = cmdline::redact_cmdline(&args);
        // Also redact the input as whitespace-split args, which exercises the
        // key/value and URL paths far more often than NUL-split noise does.
        let ws: Vec<Vec<u8>> = fields(input).map(<[u8]>::to_vec).collect();
        let _ = cmdline::redact_cmdline(&ws);
        let (pkgs, _) = dpkg::parse_status_db(input);
        for p in &pkgs {
            let _ = p.list_stem();
        }
        let _ = dpkg::parse_file_list(input);
        let _ = dpkg::parse_md5sums(input);
        let _ = net::parse_net(input);
        let _ = cgroup::parse_cgroup(input);
        let _ = cgroup::parse_ns_link(input);
        let _ = cgroup::parse_socket_link(input);
    }

    #[test]
    fn fuzz_no_panics() {
        let fixtures: &[&[u8]] = &[
            maps::SAMPLE,
            stat::SAMPLE,
            stat::SAMPLE_PROC_STAT,
            status::SAMPLE,
            cmdline::SAMPLE,
            dpkg::SAMPLE_STATUS,
            dpkg::SAMPLE_LIST,
            dpkg::SAMPLE_MD5SUMS,
            net::SAMPLE_TCP,
            net::SAMPLE_TCP6,
            cgroup::SAMPLE,
            b"mnt:[4026531841]",
            b"socket:[12345]",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..2000 {
            let input = if i % 2 == 0 {
                random_input(&mut rng)
            } else {
                let f = fixtures[rng.below(fixtures.len())];
                mutate(&mut rng, f)
            };
            feed_all(&input);
        }
    }
}
