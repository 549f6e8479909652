//! Semantic Versioning 2.0 ordering, for npm, crates.io and Go modules.
//!
//! A version is `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`. The release numbers compare
//! numerically; a version with a prerelease sorts before the same version without one; two
//! prereleases compare identifier by identifier (split on '.'), where an identifier of only
//! digits compares numerically and sorts before any other identifier, other identifiers compare
//! as ASCII bytes (so `-Beta < -alpha`), and when one list is a prefix of the other the shorter
//! sorts first. Build metadata (after '+') is ignored, so `1.0.0+a` equals `1.0.0+b`.
//!
//! Go module versions are semantic versions with a `v` prefix, and this module orders them
//! with the same rules:
//!
//! - `+incompatible` (a v2+ module without a go.mod) is build metadata and does not count.
//! - Pseudo-versions name a commit and are prereleases, so the semver rules already put them
//!   where Go does: `vX.0.0-20190102030405-abcdef123456` (no earlier tag) and
//!   `vX.Y.Z-pre.0.20190102030405-abcdef123456` (after the prerelease tag `vX.Y.Z-pre`) and
//!   `vX.Y.(Z+1)-0.20190102030405-abcdef123456` (after the release tag `vX.Y.Z`). The `0`
//!   identifier is numeric and so sorts before every named prerelease of the next version, and
//!   the fixed-width timestamp, compared as bytes inside its `-`-joined identifier, orders the
//!   commits in time.
//!
//! Digit runs of any length compare as numbers without being parsed into machine integers.
//!
//! # Leniency
//!
//! Installed versions and advisory versions are not always strict semver, and every string
//! must be ordered, so parsing is lenient and documented here:
//!
//! - Surrounding whitespace is ignored, and so is one leading `v` or `V` (OSV writes Go versions
//!   without it; `go.mod` writes them with it).
//! - The release part is one or more dot-separated digit runs; missing parts are 0 (`1.2` is
//!   `1.2.0`, as in Go's shorthand) and parts beyond the third count too (`1.2.3.4 > 1.2.3`,
//!   where strict semver would reject the version). Leading zeros are allowed and ignored.
//! - Whatever follows the release part is the prerelease: after a `-` as usual, or after a `.`
//!   or directly (`1.2.3rc1` and `1.2.3.rc1` both have the prerelease `rc1`).
//! - A string whose release part does not start with a digit is not a version. Such strings
//!   sort before every version and among themselves byte by byte; Go's `semver.Compare` also
//!   puts invalid versions first (it makes them all equal, which this module does not).

use std::cmp::Ordering;

use super::cmp_digit_strings;

/// A leniently parsed semantic version, borrowed from the input.
#[derive(Debug, Clone)]
pub struct SemVer<'a> {
    /// The input without surrounding whitespace.
    pub text: &'a str,
    /// The release numbers as digit strings (`["1", "2", "3"]`), empty when the text is not a
    /// version at all.
    pub release: Vec<&'a str>,
    /// The prerelease (without its `-`), if any.
    pub prerelease: Option<&'a str>,
    /// The build metadata (without its `+`), if any. It does not take part in the order.
    pub build: Option<&'a str>,
}

impl<'a> SemVer<'a> {
    /// Parses a version leniently (see the module documentation). Every string parses.
    pub fn parse(s: &'a str) -> SemVer<'a> {
        let text = s.trim();
        let unprefixed = text
            .strip_prefix(['v', 'V'])
            .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or(text);
        let (main, build) = match unprefixed.split_once('+') {
            Some((main, build)) => (main, Some(build)),
            None => (unprefixed, None),
        };
        let bytes = main.as_bytes();
        let mut release = Vec::new();
        let mut i = 0;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            let start = i;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            release.push(&main[start..i]);
            if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
            } else {
                break;
            }
        }
        if release.is_empty() {
            return SemVer {
                text,
                release,
                prerelease: None,
                build: None,
            };
        }
        let rest = &main[i..];
        let prerelease = if rest.is_empty() {
            None
        } else {
            Some(rest.strip_prefix(['-', '.']).unwrap_or(rest))
        };
        SemVer {
            text,
            release,
            prerelease,
            build,
        }
    }

    /// Whether the text had a release number at all.
    pub fn is_version(&self) -> bool {
        !self.release.is_empty()
    }
}

impl Ord for SemVer<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.is_version(), other.is_version()) {
            (false, false) => return self.text.as_bytes().cmp(other.text.as_bytes()),
            (a, b) if a != b => return a.cmp(&b),
            _ => {}
        }
        let n = self.release.len().max(other.release.len());
        for k in 0..n {
            let a = self.release.get(k).copied().unwrap_or("0");
            let b = other.release.get(k).copied().unwrap_or("0");
            let ord = cmp_digit_strings(a.as_bytes(), b.as_bytes());
            if ord != Ordering::Equal {
                return ord;
            }
        }
        match (self.prerelease, other.prerelease) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => cmp_prerelease(a, b),
        }
    }
}

impl PartialEq for SemVer<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SemVer<'_> {}

impl PartialOrd for SemVer<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two prereleases identifier by identifier.
fn cmp_prerelease(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = cmp_identifier(x.as_bytes(), y.as_bytes());
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// Compares two prerelease identifiers: numeric ones numerically and first, others as bytes.
fn cmp_identifier(a: &[u8], b: &[u8]) -> Ordering {
    let numeric = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    match (numeric(a), numeric(b)) {
        (true, true) => cmp_digit_strings(a, b),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// Compares two semantic versions (npm, crates.io, Go); see the module documentation.
pub fn compare(a: &str, b: &str) -> Ordering {
    SemVer::parse(a).cmp(&SemVer::parse(b))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Rng, check_vector_file, random_version};
    use super::*;
    use Ordering::{Equal, Greater, Less};

    #[test]
    fn semver_vectors() {
        let n = check_vector_file("semver-versions.txt", compare, &[]);
        assert_eq!(n, 86, "vectors in semver-versions.txt");
    }

    /// Checks that each version is strictly less than the next one, and that every pair in the
    /// list is ordered accordingly.
    fn assert_ascending(versions: &[&str]) {
        for (i, a) in versions.iter().enumerate() {
            for (j, b) in versions.iter().enumerate() {
                assert_eq!(compare(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn semver_spec_order() {
        // The example list from semver.org, section 11.
        assert_ascending(&[
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ]);
    }

    #[test]
    fn go_pseudo_versions() {
        assert_ascending(&[
            // No earlier tag: vX.0.0-timestamp-hash, ordered by time.
            "v0.0.0-20180101000000-ffffffffffff",
            "v0.0.0-20190102030405-abcdef123456",
            "v0.0.0-20190102030406-000000000000",
            "v0.1.0-alpha",
            "v0.1.0",
            // After the release v0.1.0: v0.1.1-0.timestamp-hash.
            "v0.1.1-0.20200101000000-abcdef123456",
            "v0.1.1-0.20210101000000-abcdef123456",
            "v0.1.1-beta",
            // After the prerelease v0.1.1-beta: v0.1.1-beta.0.timestamp-hash.
            "v0.1.1-beta.0.20210301000000-abcdef123456",
            "v0.1.1-beta.1",
            "v0.1.1-rc.1",
            "v0.1.1",
            "v1.0.0",
            "v2.0.0+incompatible",
            "v2.0.1-0.20220101000000-0123456789ab+incompatible",
            "v2.0.1+incompatible",
            "v10.0.0",
        ]);
        let equal = [
            ("v2.0.0+incompatible", "v2.0.0"),
            ("v2.0.0+incompatible", "2.0.0"),
            ("v1.2.3", "1.2.3"),
            ("v1.2", "v1.2.0"),
            ("v1", "v1.0.0"),
            ("1.2.3+build.1", "1.2.3+build.2"),
        ];
        for (a, b) in equal {
            assert_eq!(compare(a, b), Equal, "{a} vs {b}");
        }
    }

    #[test]
    fn lenient_and_invalid_versions() {
        let cases = [
            ("1.2.3.4", "1.2.3", Greater),
            ("1.2.3.0", "1.2.3", Equal),
            ("1.2.3rc1", "1.2.3-rc1", Equal),
            ("1.2.3rc1", "1.2.3", Less),
            ("01.002.0003", "1.2.3", Equal),
            (" v1.0.0 ", "1.0.0", Equal),
            ("1.0.0-", "1.0.0", Less),
            ("1.0.0-01", "1.0.0-1", Equal),
            ("latest", "0.0.0", Less),
            ("", "0", Less),
            ("abc", "abd", Less),
            ("v", "w", Less),
            ("vv1", "v1", Less),
            (
                "1.0.0-alpha.123456789012345678901234567890",
                "1.0.0-alpha.123456789012345678901234567891",
                Less,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn random_input_does_not_panic() {
        let mut rng = Rng::new(0x5eed_0002);
        for _ in 0..20_000 {
            let a = random_version(&mut rng, b"0123456789.-+vVaZz");
            let b = random_version(&mut rng, b"0123456789.-+vVaZz");
            assert_eq!(compare(&a, &a), Equal, "{a:?}");
            assert_eq!(compare(&a, &b), compare(&b, &a).reverse(), "{a:?} vs {b:?}");
        }
    }
}
