//! RPM version ordering: `[epoch:]version[-release]`, each part compared with `rpmvercmp`.
//!
//! This is the order of Red Hat, Rocky Linux, AlmaLinux, SUSE, openSUSE and the other RPM
//! distributions. A version string (an "EVR") splits the way rpm's `parseEVR` splits it: the
//! epoch is the run of ASCII digits before a ':' that directly follows it (so `1.m+e2:1` has no
//! epoch: its ':' is part of the version), the release is the text after the last '-', and the
//! version is what lies between. A missing epoch is 0.
//!
//! `rpmvercmp` walks both strings in step. Runs of bytes that are not ASCII letters or digits
//! (and not '~' or '^') are separators and are skipped; their length and kind do not matter, so
//! `1.0`, `1_0` and `1..0` are equal. What remains is a sequence of segments: a run of digits,
//! a run of letters, a '~' or a '^'. At each step:
//!
//! - '~' sorts before everything, even the end of the string: `1.0~rc1 < 1.0`.
//! - '^' sorts after the end of the string but before any segment: `1.0 < 1.0^git1 < 1.0.1`.
//! - A digit run sorts after a letter run; digit runs compare as numbers (leading zeros are
//!   dropped, and the runs are compared as strings, so they may be of any length) and letter
//!   runs compare byte by byte (upper case before lower case).
//! - Otherwise the string that still has a segment wins: `1.0 < 1.0.0`, `1.0 < 1.0a`.
//!
//! Bytes outside ASCII are separators, as in rpm, so `1.1.α` equals `1.1.β`. A NUL byte, which
//! would end a C string, is treated as one more separator.
//!
//! One choice differs from `rpm -q`'s header comparison: there, a version without a release
//! matches any release of the same version. An installed package always has a release, but an
//! advisory's version might not; this module orders a missing release before every release,
//! even an empty one (`1 < 1-0`, `1 < 1-`), which keeps the order total and is what the OSV
//! test vectors expect.

use std::cmp::Ordering;

use super::cmp_digit_strings;

/// A parsed RPM version: epoch, version and optional release, borrowed from the input.
#[derive(Debug, Clone, Copy)]
pub struct Evr<'a> {
    /// The epoch digits (possibly with leading zeros), or "0" when there is none.
    pub epoch: &'a str,
    /// The version, between the epoch's ':' and the release's '-'.
    pub version: &'a str,
    /// The release, after the last '-', or `None` when the string has no '-'.
    pub release: Option<&'a str>,
}

impl<'a> Evr<'a> {
    /// Splits a version string the way rpm's `parseEVR` does. Every string parses.
    pub fn parse(s: &'a str) -> Evr<'a> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (epoch, rest) = match s.as_bytes().get(digits) {
            Some(b':') => {
                let epoch = &s[..digits];
                (if epoch.is_empty() { "0" } else { epoch }, &s[digits + 1..])
            }
            _ => ("0", s),
        };
        let (version, release) = match rest.rfind('-') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        Evr {
            epoch,
            version,
            release,
        }
    }
}

impl Ord for Evr<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_digit_strings(self.epoch.as_bytes(), other.epoch.as_bytes())
            .then_with(|| rpmvercmp(self.version, other.version))
            .then_with(|| match (self.release, other.release) {
                (Some(a), Some(b)) => rpmvercmp(a, b),
                (a, b) => a.is_some().cmp(&b.is_some()),
            })
    }
}

impl PartialEq for Evr<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Evr<'_> {}

impl PartialOrd for Evr<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two RPM versions (`[epoch:]version[-release]`); see the module documentation.
pub fn compare(a: &str, b: &str) -> Ordering {
    Evr::parse(a).cmp(&Evr::parse(b))
}

/// Whether a byte starts a segment in `rpmvercmp` (anything else is a separator).
fn is_segment_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'~' || c == b'^'
}

/// The end of the run of bytes from `start` that satisfy `pred`.
fn run_end(s: &[u8], start: usize, pred: fn(&u8) -> bool) -> usize {
    start
        + s.get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|c| pred(c))
            .count()
}

/// Compares two version (or release) strings with rpm's `rpmvercmp` algorithm.
///
/// Linear in the length of the inputs; digit runs are never parsed into integers.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a == b {
        return Ordering::Equal;
    }
    let (mut i, mut j) = (0usize, 0usize);
    loop {
        while a.get(i).is_some_and(|&c| !is_segment_byte(c)) {
            i += 1;
        }
        while b.get(j).is_some_and(|&c| !is_segment_byte(c)) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        // '~' sorts before everything, including the end of the string.
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        // '^' sorts after the end of the string but before any other segment.
        if ca == Some(b'^') || cb == Some(b'^') {
            match (ca, cb) {
                (None, _) => return Ordering::Less,
                (_, None) => return Ordering::Greater,
                (Some(x), Some(y)) if x != b'^' || y != b'^' => {
                    return if x == b'^' {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    };
                }
                _ => {}
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(ca), Some(_)) = (ca, cb) else {
            break;
        };
        let ord = if ca.is_ascii_digit() {
            let (ea, eb) = (
                run_end(a, i, u8::is_ascii_digit),
                run_end(b, j, u8::is_ascii_digit),
            );
            if eb == j {
                // A number against letters: numbers are newer.
                return Ordering::Greater;
            }
            let ord = cmp_digit_strings(&a[i..ea], &b[j..eb]);
            (i, j) = (ea, eb);
            ord
        } else {
            let (ea, eb) = (
                run_end(a, i, u8::is_ascii_alphabetic),
                run_end(b, j, u8::is_ascii_alphabetic),
            );
            if eb == j {
                return Ordering::Less;
            }
            let ord = a[i..ea].cmp(&b[j..eb]);
            (i, j) = (ea, eb);
            ord
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    // Whichever string still has a segment left is newer.
    (i < a.len()).cmp(&(j < b.len()))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Rng, check_vector_file, random_version};
    use super::*;

    #[test]
    fn redhat_vectors() {
        let n = check_vector_file("redhat-versions.txt", compare, &[]);
        assert_eq!(n, 165, "vectors in redhat-versions.txt");
    }

    #[test]
    fn rpm_order_edge_cases() {
        use Ordering::{Equal, Greater, Less};
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0.0", Less),
            ("1.0", "1_0", Equal),
            ("1..0", "1.0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^", "1.0.0", Less),
            ("1.0^", "1.0~", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0.1", Less),
            ("1.A", "1.a", Less),
            ("1.001", "1.1", Equal),
            ("2:1.0-1", "1:9.9-9", Greater),
            ("0:1.0-1", "1.0-1", Equal),
            (":1.0", "1.0", Equal),
            ("1.0-1.el9_2", "1.0-1.el9_10", Less),
            ("3.0.7-16.el9_2", "3.0.7-18.el9", Less),
            ("1", "1-0", Less),
            ("", "", Equal),
            ("", "~", Greater),
            ("", "^", Less),
            ("1\u{0}2", "1.2", Equal),
            (
                "1.123456789012345678901234567890",
                "1.123456789012345678901234567891",
                Less,
            ),
            (
                "99999999999999999999999:1",
                "99999999999999999999998:2",
                Greater,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn parse_splits_like_rpm() {
        let cases = [
            ("1:2.3-4", ("1", "2.3", Some("4"))),
            ("2.3-4", ("0", "2.3", Some("4"))),
            ("2.3", ("0", "2.3", None)),
            ("1.2-3-4", ("0", "1.2-3", Some("4"))),
            ("a:1", ("0", "a:1", None)),
            ("1.m+e2:1", ("0", "1.m+e2:1", None)),
            (":1", ("0", "1", None)),
            ("1:", ("1", "", None)),
            ("-", ("0", "", Some(""))),
        ];
        for (s, (e, v, r)) in cases {
            let evr = Evr::parse(s);
            assert_eq!((evr.epoch, evr.version, evr.release), (e, v, r), "{s}");
        }
    }

    #[test]
    fn random_input_does_not_panic() {
        let mut rng = Rng::new(0x5eed_0001);
        for _ in 0..20_000 {
            let a = random_version(&mut rng, b"0123456789.~^-:_+aZz");
            let b = random_version(&mut rng, b"0123456789.~^-:_+aZz");
            assert_eq!(compare(&a, &a), Ordering::Equal, "{a:?}");
            assert_eq!(compare(&a, &b), compare(&b, &a).reverse(), "{a:?} vs {b:?}");
        }
    }
}
