//! Alpine package (apk) version ordering, for Alpine, Wolfi, Chainguard and MinimOS.
//!
//! The grammar, from apk-tools' `version.c`, is
//! `number{.number}...{letter}{_suffix{number}}...{~hash}{-r#}`:
//!
//! - The first number compares numerically. Each later `.number` compares numerically too,
//!   unless either side starts with '0': then the two compare as strings, as in Gentoo, so
//!   `1.01 < 1.1` and `1.001 < 1.01`.
//! - An optional single lower-case letter follows the numbers: `1.2a < 1.2b`.
//! - Suffixes follow, each `_name` with an optional number. The names order as
//!   `_alpha < _beta < _pre < _rc < (no suffix) < _cvs < _svn < _git < _hg < _p`.
//! - An optional `~hash` of lower-case hex digits follows (compared as a string).
//! - An optional `-rN` revision comes last and compares numerically.
//!
//! The two strings are cut into tokens and compared token by token. When one string has run
//! out of tokens or has a token of another kind at the same place, apk decides by kind: a
//! prerelease suffix (`_alpha` to `_rc`) sorts first, then anything invalid, then the end of
//! the string, then a revision, a hash, a suffix number, a post-release suffix, a letter, and a
//! number last. So `1.2 < 1.2.1`, `1.2_rc1 < 1.2 < 1.2_p1 < 1.2a`, and `1.2 < 1.2-r1`.
//!
//! This module follows apk-tools 3 (the `master` branch, and the "latest apk" of the comments
//! in the OSV test vectors), which differs from the apk-tools 2 of older Alpine releases only on
//! versions that apk-tools 3 calls invalid, with one exception: like apk-tools 2, it reads
//! digits right after the letter as a number (`6.0.2p1` is 6, 0, 2, p, 1). Older Alpine
//! releases shipped packages with such versions (`sudo-1.9.5p2-r1`, `openssh-6.0.2p1-r5`), and
//! apk-tools 3 would make everything after the letter one invalid tail, so that `-r9` and `-r10`
//! of the same version could not be told apart numerically. Other apk-tools 2 readings are not
//! kept: it read `-r` without a number as `-r0`, which apk-tools 3 (and this module) rejects.
//!
//! # Invalid versions
//!
//! Where a version stops following the grammar (an upper-case letter, `-x`, a second letter,
//! an unknown suffix...), apk stops reading it: the rest is one "invalid" token, which sorts
//! before the end of a string. apk makes all invalid tails equal; this module compares them as
//! byte strings instead, so that distinct strings such as `a` and `b` or `6.6.2p1` and
//! `6.6.2p2` are not equal, and the order stays total.
//!
//! Numbers of any length compare as digit strings; nothing is parsed into a machine integer.

use std::cmp::Ordering;

use super::cmp_digit_strings;

/// The kinds of tokens, in the order in which they may follow one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The leading number.
    InitialDigit,
    /// A `.number`.
    Digit,
    /// The single letter after the numbers.
    Letter,
    /// A `_name` suffix.
    Suffix,
    /// The number after a suffix.
    SuffixNo,
    /// A `~hash`.
    CommitHash,
    /// The number of `-rN`.
    RevisionNo,
    /// The end of the string.
    End,
    /// The rest of a string that does not follow the grammar.
    Invalid,
}

/// The suffixes in order; "no suffix" sits between `rc` and `cvs`.
const SUFFIXES: [&[u8]; 9] = [
    b"alpha", b"beta", b"pre", b"rc", b"cvs", b"svn", b"git", b"hg", b"p",
];

/// The rank of "no suffix" among [`SUFFIXES`]: suffixes below it are prereleases.
const SUFFIX_NONE: u8 = 4;

/// One token: its kind, its text, and for suffixes their rank (with "none" at [`SUFFIX_NONE`]).
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    value: &'a [u8],
    suffix: u8,
}

impl Token<'_> {
    /// Where a token sorts against a token of another kind at the same place.
    fn kind_rank(&self) -> u8 {
        match self.kind {
            Kind::Suffix if self.suffix < SUFFIX_NONE => 0,
            Kind::Invalid => 1,
            Kind::End => 2,
            Kind::RevisionNo => 3,
            Kind::CommitHash => 4,
            Kind::SuffixNo => 5,
            Kind::Suffix => 6,
            Kind::Letter => 7,
            Kind::Digit => 8,
            Kind::InitialDigit => 9,
        }
    }

    /// Compares two tokens; the order is total.
    fn cmp(&self, other: &Self) -> Ordering {
        if self.kind != other.kind {
            return self.kind_rank().cmp(&other.kind_rank());
        }
        let (a, b) = (self.value, other.value);
        match self.kind {
            Kind::Digit if a.first() == Some(&b'0') || b.first() == Some(&b'0') => a.cmp(b),
            Kind::InitialDigit | Kind::Digit | Kind::SuffixNo | Kind::RevisionNo => {
                cmp_digit_strings(a, b)
            }
            Kind::Suffix => self.suffix.cmp(&other.suffix),
            Kind::Letter | Kind::CommitHash | Kind::Invalid => a.cmp(b),
            Kind::End => Ordering::Equal,
        }
    }
}

/// Cuts a version into tokens, one at a time.
struct Tokens<'a> {
    s: &'a [u8],
    pos: usize,
    last: Option<Kind>,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str) -> Self {
        Tokens {
            s: s.as_bytes(),
            pos: 0,
            last: None,
        }
    }

    /// Consumes the bytes from `pos` that satisfy `pred` and returns them.
    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let rest = self.s.get(self.pos..).unwrap_or_default();
        let n = rest.iter().take_while(|&&c| pred(c)).count();
        self.pos += n;
        &rest[..n]
    }

    /// Reads the next token. After `End` or `Invalid` it keeps returning the same kind.
    fn next_token(&mut self) -> Token<'a> {
        let start = self.pos;
        let kind = self.read_kind();
        let token = match kind {
            Some(kind) => kind,
            None => Token {
                kind: Kind::Invalid,
                value: self.s.get(start..).unwrap_or_default(),
                suffix: 0,
            },
        };
        self.last = Some(token.kind);
        if token.kind == Kind::Invalid {
            self.pos = self.s.len();
        }
        token
    }

    /// Reads one token, or `None` when the text breaks the grammar here.
    fn read_kind(&mut self) -> Option<Token<'a>> {
        let digits = |t: &mut Self, kind: Kind| {
            let value = t.take_while(|c| c.is_ascii_digit());
            (!value.is_empty()).then_some(Token {
                kind,
                value,
                suffix: 0,
            })
        };
        let Some(last) = self.last else {
            return digits(self, Kind::InitialDigit);
        };
        if matches!(last, Kind::End | Kind::Invalid) {
            return Some(Token {
                kind: last,
                value: b"",
                suffix: 0,
            });
        }
        let Some(&c) = self.s.get(self.pos) else {
            return Some(Token {
                kind: Kind::End,
                value: b"",
                suffix: 0,
            });
        };
        match c {
            b'a'..=b'z' if last <= Kind::Digit => {
                self.pos += 1;
                Some(Token {
                    kind: Kind::Letter,
                    value: self.s.get(self.pos - 1..self.pos).unwrap_or_default(),
                    suffix: 0,
                })
            }
            b'.' if last <= Kind::Digit => {
                self.pos += 1;
                digits(self, Kind::Digit)
            }
            b'0'..=b'9' if last == Kind::Suffix => digits(self, Kind::SuffixNo),
            // apk-tools 2 also read digits right after the letter (`6.0.2p1`).
            b'0'..=b'9' if last == Kind::Letter => digits(self, Kind::Digit),
            b'_' if last <= Kind::SuffixNo => {
                self.pos += 1;
                let name = self.take_while(|c| c.is_ascii_lowercase());
                let rank = SUFFIXES.iter().position(|s| *s == name)?;
                let rank = u8::try_from(rank).ok()?;
                Some(Token {
                    kind: Kind::Suffix,
                    value: name,
                    // Leave room for "no suffix" between the prereleases and the rest.
                    suffix: if rank < SUFFIX_NONE { rank } else { rank + 1 },
                })
            }
            b'~' if last < Kind::CommitHash => {
                self.pos += 1;
                let hash = self.take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
                (!hash.is_empty()).then_some(Token {
                    kind: Kind::CommitHash,
                    value: hash,
                    suffix: 0,
                })
            }
            b'-' if last < Kind::RevisionNo && self.s.get(self.pos + 1) == Some(&b'r') => {
                self.pos += 2;
                digits(self, Kind::RevisionNo)
            }
            _ => None,
        }
    }
}

/// Compares two Alpine package versions; see the module documentation.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (mut ta, mut tb) = (Tokens::new(a), Tokens::new(b));
    loop {
        let (x, y) = (ta.next_token(), tb.next_token());
        let ord = x.cmp(&y);
        if ord != Ordering::Equal || matches!(x.kind, Kind::End | Kind::Invalid) {
            return ord;
        }
    }
}

/// Whether the string follows the grammar: apk-tools 3's (`apk version -c`), with digits
/// allowed right after the letter as in apk-tools 2.
pub fn is_valid(v: &str) -> bool {
    let mut t = Tokens::new(v);
    loop {
        match t.next_token().kind {
            Kind::End => return true,
            Kind::Invalid => return false,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Override, Rng, check_vector_file, random_version};
    use super::*;
    use Ordering::{Equal, Greater, Less};

    /// Vectors whose expectation is not apk-tools 3's answer, each with this module's answer
    /// and the reason. The test fails if one of these lines disappears or starts to agree.
    const ALPINE_OVERRIDES: &[Override] = &[
        Override {
            line: "1-r = 1-r0",
            got: Less,
            reason: "apk-tools 2 read a bare `-r` as `-r0`; apk-tools 3 rejects `-r` without a \
                     number, and an invalid tail sorts before a revision",
        },
        Override {
            line: "1-r0-1 = 1-r-2",
            got: Greater,
            reason: "apk-tools 2 read `-r` as `-r0`, so both were `-r0` and then invalid, which it \
                     calls equal; in apk-tools 3 `1-r-2` is invalid at its revision, which sorts \
                     before the valid `-r0`",
        },
        Override {
            line: "1-r0-1 = 1-r0-2",
            got: Less,
            reason: "apk calls all invalid tails equal; this module orders them as bytes",
        },
        Override {
            line: "1-ruff2 = 1-ruff1",
            got: Greater,
            reason: "apk calls all invalid tails equal; this module orders them as bytes",
        },
        Override {
            line: "1-ruff2 = 1--ruff1",
            got: Greater,
            reason: "apk calls all invalid tails equal; this module orders them as bytes",
        },
        Override {
            line: "1-r0-ruff2 = 1-r0-ruff1",
            got: Greater,
            reason: "apk calls all invalid tails equal; this module orders them as bytes",
        },
    ];

    #[test]
    fn alpine_vectors() {
        let n = check_vector_file("alpine-versions.txt", compare, ALPINE_OVERRIDES);
        assert_eq!(n, 778, "vectors in alpine-versions.txt");
    }

    #[test]
    fn alpine_generated_vectors() {
        let n = check_vector_file("alpine-versions-generated.txt", compare, &[]);
        assert_eq!(n, 13_979, "vectors in alpine-versions-generated.txt");
    }

    #[test]
    fn apk_order_edge_cases() {
        let cases = [
            ("1.2", "1.2.0", Less),
            ("1.2_rc1", "1.2", Less),
            ("1.2_alpha", "1.2_beta", Less),
            ("1.2_pre2", "1.2_rc1", Less),
            ("1.2", "1.2_cvs", Less),
            ("1.2_git20240101", "1.2_p1", Less),
            ("1.2_p1", "1.2a", Less),
            ("1.2a", "1.2.1", Less),
            ("1.2", "1.2-r1", Less),
            ("1.2-r9", "1.2-r10", Less),
            ("1.2_p1-r0", "1.2_p1-r1", Less),
            ("1.2~abc-r0", "1.2~abd-r0", Less),
            ("1.2~abc", "1.2", Greater),
            ("1.2_rc1~abc", "1.2", Less),
            ("1.01", "1.1", Less),
            ("1.001", "1.01", Less),
            ("1.010", "1.09", Less),
            ("01.2", "1.2", Equal),
            ("1.2_alpha_pre", "1.2_alpha", Less),
            ("1.2_alpha1_p2", "1.2_alpha1", Greater),
            // Invalid tails sort before the end of a valid string, and among themselves as bytes.
            ("1.2X", "1.2", Less),
            ("1.2_foo", "1.2", Less),
            ("1.2_foo", "1.2_rc1", Greater),
            ("1.2a1", "1.2a2", Less),
            // Digits after the letter are a number, as in apk-tools 2.
            ("1.9.5p2-r9", "1.9.5p2-r10", Less),
            ("1.9.5p9", "1.9.5p10", Less),
            ("1.9.5p1", "1.9.5p", Greater),
            ("1.9.5p1", "1.9.5_p1", Greater),
            ("1.9.5p1", "1.9.6", Less),
            ("", "", Equal),
            ("", "0", Less),
            ("x", "y", Less),
            (
                "1.123456789012345678901234567890",
                "1.123456789012345678901234567891",
                Less,
            ),
            (
                "1-r99999999999999999999999",
                "1-r99999999999999999999998",
                Greater,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn validity() {
        for v in [
            "1",
            "1.2.3",
            "1.2.3a",
            "1.2_rc1_p2",
            "1.2_git20240101-r3",
            "1.2~a1b2-r0",
            "6.0.2p1-r5",
        ] {
            assert!(is_valid(v), "{v}");
        }
        for v in [
            "", "a", "1.", "1..2", "1ab", "1-r", "1-r1-r2", "1_foo", "1A", "1~",
        ] {
            assert!(!is_valid(v), "{v}");
        }
    }

    #[test]
    fn random_input_does_not_panic() {
        let mut rng = Rng::new(0x5eed_0003);
        for _ in 0..20_000 {
            let a = random_version(&mut rng, b"0123456789._~-raApZ");
            let b = random_version(&mut rng, b"0123456789._~-raApZ");
            assert_eq!(compare(&a, &a), Equal, "{a:?}");
            assert_eq!(compare(&a, &b), compare(&b, &a).reverse(), "{a:?} vs {b:?}");
        }
    }
}
