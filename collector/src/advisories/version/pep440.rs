//! Python package version ordering (PEP 440), for PyPI.
//!
//! A version is `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, and this module accepts every
//! spelling that the `packaging` library accepts (its `VERSION_PATTERN`):
//!
//! - Case does not matter, surrounding whitespace is ignored, and a leading `v` is allowed.
//! - The epoch (`N!`) compares first, numerically; a missing epoch is 0.
//! - The release segment compares numerically part by part, with implicit zeros: `1.0 == 1.0.0`.
//! - Pre-releases are `a`, `b` and `rc`, also spelled `alpha`, `beta`, and `c`, `pre` or
//!   `preview` (all three meaning `rc`); the separator before and after the label may be `.`, `-`,
//!   `_` or nothing, and a missing number is 0: `1.0-Alpha.1 == 1.0a1`, `1.0rc == 1.0c0`.
//! - Post-releases are `post`, `rev` or `r` with an optional number, or the implicit form
//!   `1.0-1` (== `1.0.post1`).
//! - Development releases are `dev` with an optional number.
//! - A local version (`+ubuntu.1`) has segments separated by `.`, `-` or `_`; segments of only
//!   digits compare numerically and sort after segments with letters, which compare as
//!   lower-case strings; a version without a local part sorts before one with it.
//!
//! The order is `packaging`'s: `1.0.dev1 < 1.0a1.dev1 < 1.0a1 < 1.0a1.post1.dev1 < 1.0a1.post1
//! < 1.0rc1 < 1.0 < 1.0+local < 1.0.post1.dev1 < 1.0.post1 < 1.1.dev1`. A dev release of a
//! final release (`1.0.dev1`) sorts before that release's pre-releases.
//!
//! # Legacy versions
//!
//! Strings that are not valid PEP 440 versions (`2004d`, `0.9-doduo`, `latest`) still get a
//! total order: they sort before every valid version, as they did in `packaging`'s old
//! `LegacyVersion` (which pip used until 2022), and among themselves by that class's key:
//! the lower-cased string is cut into runs of digits, runs of letters, `.`, `-` and runs of
//! other characters; `.` is dropped, `pre`, `preview` and `rc` become `c`, `dev` becomes `@`, `-`
//! becomes `final-`, zeros that end a run of numbers are dropped before a word, `final-`
//! is dropped before a word that sorts before `final`, and `final` is appended. The parts
//! then compare in turn: words before numbers, words as strings, numbers numerically. (The
//! original padded numbers to 8 digits and compared them as strings, which misorders longer
//! numbers; this module compares digit runs of any length numerically.)
//!
//! Numbers of any length are compared as digit strings; nothing is parsed into a machine
//! integer.

use std::cmp::Ordering;

use super::cmp_digit_strings;

/// The pre-release phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PreKind {
    /// `a`, `alpha`.
    Alpha,
    /// `b`, `beta`.
    Beta,
    /// `rc`, `c`, `pre`, `preview`.
    Rc,
}

/// A valid PEP 440 version, with its numbers as digit strings borrowed from the input.
#[derive(Debug, Clone)]
pub struct Release<'a> {
    /// The epoch, "0" when there is none.
    pub epoch: &'a [u8],
    /// The release numbers.
    pub release: Vec<&'a [u8]>,
    /// The pre-release phase and number.
    pub pre: Option<(PreKind, &'a [u8])>,
    /// The post-release number.
    pub post: Option<&'a [u8]>,
    /// The development release number.
    pub dev: Option<&'a [u8]>,
    /// The local version segments, in their original case.
    pub local: Vec<&'a [u8]>,
}

/// One part of a legacy (non-PEP 440) version's sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyPart {
    /// A word (letters, or other characters, or the `final`/`final-` markers).
    Word(String),
    /// A run of ASCII digits.
    Number(String),
}

impl Ord for LegacyPart {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (LegacyPart::Word(a), LegacyPart::Word(b)) => a.cmp(b),
            (LegacyPart::Number(a), LegacyPart::Number(b)) => {
                cmp_digit_strings(a.as_bytes(), b.as_bytes())
            }
            (LegacyPart::Word(_), LegacyPart::Number(_)) => Ordering::Less,
            (LegacyPart::Number(_), LegacyPart::Word(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for LegacyPart {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A Python version: valid PEP 440, or legacy.
#[derive(Debug, Clone)]
pub enum Version<'a> {
    /// A legacy version's sort key (see the module documentation).
    Legacy(Vec<LegacyPart>),
    /// A valid PEP 440 version.
    Valid(Release<'a>),
}

impl<'a> Version<'a> {
    /// Parses a version; strings that are not PEP 440 become legacy versions.
    pub fn parse(s: &'a str) -> Version<'a> {
        match Parser::new(s.as_bytes()).version() {
            Some(r) => Version::Valid(r),
            None => Version::Legacy(legacy_key(s)),
        }
    }

    /// Whether the version is valid PEP 440.
    pub fn is_valid(&self) -> bool {
        matches!(self, Version::Valid(_))
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Version::Legacy(a), Version::Legacy(b)) => a.cmp(b),
            (Version::Legacy(_), Version::Valid(_)) => Ordering::Less,
            (Version::Valid(_), Version::Legacy(_)) => Ordering::Greater,
            (Version::Valid(a), Version::Valid(b)) => a.cmp_release(b),
        }
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version<'_> {}

/// Where the pre-release part of `packaging`'s sort key puts a version.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PreKey<'a> {
    /// A dev release of a final release: before all pre-releases.
    DevOfFinal,
    /// A pre-release.
    Pre(PreKind, Num<'a>),
    /// No pre-release.
    Final,
}

/// A digit string that orders numerically.
#[derive(Debug, PartialEq, Eq)]
struct Num<'a>(&'a [u8]);

impl Ord for Num<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_digit_strings(self.0, other.0)
    }
}

impl PartialOrd for Num<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Release<'_> {
    /// `packaging`'s order on valid versions.
    fn cmp_release(&self, other: &Self) -> Ordering {
        cmp_digit_strings(self.epoch, other.epoch)
            .then_with(|| {
                let n = self.release.len().max(other.release.len());
                (0..n)
                    .map(|k| {
                        let a = self.release.get(k).copied().unwrap_or(b"0");
                        let b = other.release.get(k).copied().unwrap_or(b"0");
                        cmp_digit_strings(a, b)
                    })
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            })
            .then_with(|| self.pre_key().cmp(&other.pre_key()))
            // No post release sorts first, no dev release last.
            .then_with(|| self.post.map(Num).cmp(&other.post.map(Num)))
            .then_with(|| match (self.dev, other.dev) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => cmp_digit_strings(a, b),
            })
            .then_with(|| cmp_local(&self.local, &other.local))
    }

    fn pre_key(&self) -> PreKey<'_> {
        match (self.pre, self.post, self.dev) {
            (Some((kind, n)), _, _) => PreKey::Pre(kind, Num(n)),
            (None, None, Some(_)) => PreKey::DevOfFinal,
            (None, _, _) => PreKey::Final,
        }
    }
}

/// Compares local versions: none first, then segment by segment, a prefix first.
fn cmp_local(a: &[&[u8]], b: &[&[u8]]) -> Ordering {
    let numeric = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    for (x, y) in a.iter().zip(b) {
        let ord = match (numeric(x), numeric(y)) {
            (true, true) => cmp_digit_strings(x, y),
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => x
                .iter()
                .map(u8::to_ascii_lowercase)
                .cmp(y.iter().map(u8::to_ascii_lowercase)),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// Compares two Python package versions; see the module documentation.
pub fn compare(a: &str, b: &str) -> Ordering {
    Version::parse(a).cmp(&Version::parse(b))
}

/// Whitespace as Python's `\s` sees it in a `str` pattern.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A hand-written matcher for `packaging`'s `VERSION_PATTERN`, over bytes.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(s: &'a [u8]) -> Self {
        Parser { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes a run of ASCII digits and returns it (possibly empty).
    fn digits(&mut self) -> &'a [u8] {
        let rest = self.s.get(self.pos..).unwrap_or_default();
        let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        self.pos += n;
        &rest[..n]
    }

    /// Consumes one of `words` (ASCII case-insensitively, first match wins) and returns its
    /// index.
    fn word(&mut self, words: &[&str]) -> Option<usize> {
        let rest = self.s.get(self.pos..).unwrap_or_default();
        let i = words.iter().position(|w| {
            rest.get(..w.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(w.as_bytes()))
        })?;
        self.pos += words[i].len();
        Some(i)
    }

    /// Consumes an optional separator `[-_.]`.
    fn separator(&mut self) {
        if matches!(self.peek(), Some(b'-' | b'_' | b'.')) {
            self.pos += 1;
        }
    }

    /// `[-_.]?[0-9]+`, or nothing (consuming nothing) when no digits follow.
    fn optional_number(&mut self) -> Option<&'a [u8]> {
        let save = self.pos;
        self.separator();
        let n = self.digits();
        if n.is_empty() {
            self.pos = save;
            None
        } else {
            Some(n)
        }
    }

    /// Skips whitespace as Python's `\s*` does.
    fn spaces(&mut self) {
        let rest = self.s.get(self.pos..).unwrap_or_default();
        let text = match std::str::from_utf8(rest) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or_default(),
        };
        let trimmed = text.trim_start_matches(is_py_space);
        self.pos += text.len() - trimmed.len();
    }

    fn version(mut self) -> Option<Release<'a>> {
        self.spaces();
        if matches!(self.peek(), Some(b'v' | b'V')) {
            self.pos += 1;
        }
        // Epoch: digits followed by '!'.
        let save = self.pos;
        let mut epoch: &[u8] = b"0";
        let e = self.digits();
        if !e.is_empty() && self.eat(b'!') {
            epoch = e;
        } else {
            self.pos = save;
        }
        // Release: N(.N)*
        let mut release = Vec::new();
        let first = self.digits();
        if first.is_empty() {
            return None;
        }
        release.push(first);
        while self.peek() == Some(b'.') && self.s.get(self.pos + 1).is_some_and(u8::is_ascii_digit)
        {
            self.pos += 1;
            release.push(self.digits());
        }
        // Pre-release: [-_.]?(alpha|a|beta|b|preview|pre|c|rc)[-_.]?N?
        let save = self.pos;
        self.separator();
        const PRE: [&str; 8] = ["alpha", "a", "beta", "b", "preview", "pre", "c", "rc"];
        let pre = match self.word(&PRE) {
            Some(i) => {
                let kind = match i {
                    0 | 1 => PreKind::Alpha,
                    2 | 3 => PreKind::Beta,
                    _ => PreKind::Rc,
                };
                Some((kind, self.optional_number().unwrap_or(b"0")))
            }
            None => {
                self.pos = save;
                None
            }
        };
        // Post-release: -N, or [-_.]?(post|rev|r)[-_.]?N?
        let save = self.pos;
        let mut post = None;
        if self.eat(b'-') {
            let n = self.digits();
            if !n.is_empty() {
                post = Some(n);
            } else {
                self.pos = save;
            }
        }
        if post.is_none() {
            self.separator();
            if self.word(&["post", "rev", "r"]).is_some() {
                post = Some(self.optional_number().unwrap_or(b"0"));
            } else {
                self.pos = save;
            }
        }
        // Development release: [-_.]?dev[-_.]?N?
        let save = self.pos;
        self.separator();
        let dev = if self.word(&["dev"]).is_some() {
            Some(self.optional_number().unwrap_or(b"0"))
        } else {
            self.pos = save;
            None
        };
        // Local version: +[a-z0-9]+([-_.][a-z0-9]+)*
        let mut local = Vec::new();
        if self.eat(b'+') {
            loop {
                let rest = self.s.get(self.pos..).unwrap_or_default();
                let n = rest
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .count();
                if n == 0 {
                    return None;
                }
                local.push(&rest[..n]);
                self.pos += n;
                let more = matches!(self.peek(), Some(b'-' | b'_' | b'.'))
                    && self
                        .s
                        .get(self.pos + 1)
                        .is_some_and(u8::is_ascii_alphanumeric);
                if !more {
                    break;
                }
                self.pos += 1;
            }
        }
        self.spaces();
        (self.pos == self.s.len()).then_some(Release {
            epoch,
            release,
            pre,
            post,
            dev,
            local,
        })
    }
}

/// The sort key of `packaging`'s old `LegacyVersion` (see the module documentation).
pub fn legacy_key(s: &str) -> Vec<LegacyPart> {
    let lower = s.to_lowercase();
    let mut parts: Vec<LegacyPart> = Vec::new();
    let mut push = |part: LegacyPart| {
        if let LegacyPart::Word(w) = &part {
            if w.as_str() < "final" {
                while matches!(parts.last(), Some(LegacyPart::Word(p)) if p == "final-") {
                    parts.pop();
                }
            }
            while matches!(parts.last(), Some(LegacyPart::Number(n)) if n.bytes().all(|c| c == b'0'))
            {
                parts.pop();
            }
        }
        parts.push(part);
    };
    let mut rest = lower.as_str();
    while let Some(c) = rest.chars().next() {
        let class = |c: char| {
            if c.is_ascii_digit() {
                0
            } else if c.is_ascii_lowercase() {
                1
            } else if c == '.' || c == '-' {
                2
            } else {
                3
            }
        };
        let len = match class(c) {
            2 => 1,
            k => rest.find(|d: char| class(d) != k).unwrap_or(rest.len()),
        };
        let (piece, tail) = rest.split_at(len);
        rest = tail;
        match piece {
            "." => {}
            _ if class(c) == 0 => push(LegacyPart::Number(piece.to_owned())),
            "pre" | "preview" | "rc" => push(LegacyPart::Word("c".to_owned())),
            "dev" => push(LegacyPart::Word("@".to_owned())),
            "-" => push(LegacyPart::Word("final-".to_owned())),
            _ => push(LegacyPart::Word(piece.to_owned())),
        }
    }
    push(LegacyPart::Word("final".to_owned()));
    parts
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Rng, check_vector_file, random_version};
    use super::*;
    use Ordering::{Equal, Greater, Less};

    #[test]
    fn pypi_vectors() {
        let n = check_vector_file("pypi-versions.txt", compare, &[]);
        assert_eq!(n, 37, "vectors in pypi-versions.txt");
    }

    #[test]
    fn pypi_generated_vectors() {
        let n = check_vector_file("pypi-versions-generated.txt", compare, &[]);
        assert_eq!(n, 12_375, "vectors in pypi-versions-generated.txt");
    }

    #[test]
    fn pep440_order() {
        // The ordering example from PEP 440's "Summary of permitted suffixes and relative
        // ordering", extended with epochs and local versions.
        let versions = [
            "1.dev0",
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
            "1!0.1",
        ];
        for (i, a) in versions.iter().enumerate() {
            for (j, b) in versions.iter().enumerate() {
                assert_eq!(compare(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn normalization() {
        let equal = [
            ("1.0", "1.0.0"),
            ("1.0", "v1.0"),
            ("1.0", "V1.0"),
            ("1.0", " 1.0\n"),
            ("1.0", "0!1.0"),
            ("1.0a1", "1.0-ALPHA-1"),
            ("1.0a1", "1.0.a.1"),
            ("1.0a1", "1.0_a_1"),
            ("1.0a0", "1.0a"),
            ("1.0b2", "1.0beta2"),
            ("1.0rc1", "1.0c1"),
            ("1.0rc1", "1.0pre1"),
            ("1.0rc1", "1.0preview1"),
            ("1.0.post1", "1.0-1"),
            ("1.0.post1", "1.0post1"),
            ("1.0.post1", "1.0-r1"),
            ("1.0.post1", "1.0.rev1"),
            ("1.0.post0", "1.0.post"),
            ("1.0.dev0", "1.0dev"),
            ("1.0.dev1", "1.0-DEV-1"),
            ("1.0+ABC", "1.0+abc"),
            ("1.0+1", "1.0+01"),
            ("1.0+a-b_c", "1.0+a.b.c"),
            ("01.02", "1.2"),
        ];
        for (a, b) in equal {
            assert!(Version::parse(a).is_valid(), "{a:?} should be valid");
            assert!(Version::parse(b).is_valid(), "{b:?} should be valid");
            assert_eq!(compare(a, b), Equal, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn validity() {
        let invalid = [
            "",
            " ",
            "v",
            "1.",
            ".1",
            "1..0",
            "1.0-",
            "1.0+",
            "1.0+a..b",
            "1.0+a+b",
            "1!",
            "!1",
            "1.0ab",
            "1.0.post.post",
            "1.0 1",
            "vv1",
            "1.0a1a1",
            "latest",
            "1.0_",
            "2004d",
            "1.0-dev1-1",
        ];
        for v in invalid {
            assert!(!Version::parse(v).is_valid(), "{v:?} should be legacy");
        }
        let valid = [
            "1",
            "1.0.0.0.0",
            "1!2",
            "1.0a1.post2.dev3+x.4",
            "1.0.a",
            "1.0-1.dev1",
            "1.0rc",
            "1.0c",
            "1.0r",
            "1.0a.post",
            "1.0-post1",
            "1.0_dev",
            "1.0+1-2_3.4",
        ];
        for v in valid {
            assert!(Version::parse(v).is_valid(), "{v:?} should be valid");
        }
    }

    #[test]
    fn legacy_versions() {
        let cases = [
            ("0.9-doduo", "0.9-eevee", Less),
            ("2004d", "1.0", Less),
            ("latest", "0", Less),
            ("1.0-foo", "1.0-foo", Equal),
            // Zeros before a word are dropped, `final-` before a pre-release word too.
            ("1.0.0-pre1", "1-c1", Equal),
            ("1.0-dev", "1.0-a", Less),
            ("1.0.x", "1.0.y", Less),
            ("1.0.x", "1.0.9x", Less),
            // Long numbers compare numerically (the original padded to 8 digits).
            ("1-x-123456789", "1-x-99999999", Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn random_input_does_not_panic() {
        let mut rng = Rng::new(0x5eed_0004);
        for _ in 0..20_000 {
            let a = random_version(&mut rng, b"0123456789.-_+!vabcrpostdevV ");
            let b = random_version(&mut rng, b"0123456789.-_+!vabcrpostdevV ");
            assert_eq!(compare(&a, &a), Equal, "{a:?}");
            assert_eq!(compare(&a, &b), compare(&b, &a).reverse(), "{a:?} vs {b:?}");
        }
    }
}
