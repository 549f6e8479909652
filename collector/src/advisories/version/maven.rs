//! Maven version ordering: the semantics of `ComparableVersion` in maven-artifact 3.8.6.
//!
//! The OSV vectors for Maven were produced with that release, and Maven's own documentation
//! ("Version Order Specification" in the POM reference) describes the same order.
//!
//! # Parsing
//!
//! The version is lower-cased and cut into items: runs of digits become numbers, runs of other
//! characters become strings ("qualifiers"). `.` separates items; `-` separates them too but
//! also opens a sub-list that holds the rest of the version, and so does every change between
//! digits and letters: `1.0-alpha-1` is `[1, 0, [alpha, [1]]]` and `1a1` is `[1, [a, [1]]]`.
//! An empty item (as in `1..2` or `1.-2`) is the number 0.
//!
//! A one-letter qualifier directly followed by a digit is an alias: `a1` is `alpha-1`, `b1` is
//! `beta-1`, `m1` is `milestone-1`. `ga`, `final` and `release` mean the empty qualifier, and
//! `cr` means `rc`.
//!
//! Each list then drops its trailing "null" items: the number 0, the empty qualifier and empty
//! sub-lists; a sub-list does not stop this, so `1.0.0-foo` is `[1, [foo]]`, the same as
//! `1-foo`.
//!
//! # Order
//!
//! Lists compare item by item; where one list has run out, its missing item counts as "null".
//!
//! - Numbers compare numerically (as digit strings of any length) and are greater than
//!   strings and sub-lists; a number is greater than null unless it is 0.
//! - Qualifiers order `alpha < beta < milestone < rc < snapshot < "" < sp`, and after those
//!   every other qualifier, in lexical order (by UTF-16 code unit, as Java compares
//!   strings). Null counts as the empty qualifier: `1-rc1 < 1 < 1-sp < 1-xyz`.
//! - A sub-list is greater than a qualifier and less than a number (`1-1 < 1.1`); against
//!   null it compares its items with null in turn (MNG-6964).
//!
//! # Known quirks kept, and differences
//!
//! This is Maven's order, quirks included. It is not transitive everywhere: a qualifier that
//! follows a `.0` is compared with null when the other version is shorter but with the `0`
//! otherwise, so `1.0.alpha < 1 < 1.x` while `1.0.alpha > 1.x`. Such strings are rare, and
//! Maven 3.9 changed `.qualifier` parsing because of them; the OSV vectors (and so this module)
//! follow 3.8.6.
//!
//! Two details differ from Maven on purpose: only ASCII digits count as digits (Java's
//! `Character.isDigit` also takes other scripts' digits), and a number compares by value
//! whatever its length (Maven keeps an all-zero run longer than nine digits, such as
//! `0000000000`, as a separate "long" zero that sorts above every short number).

use std::cmp::Ordering;

use super::cmp_digit_strings;

/// Where a qualifier sorts: the known ones by their index, every other one after them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qualifier {
    /// A known qualifier, by its rank in `alpha, beta, milestone, rc, snapshot, "", sp`.
    Known(u8),
    /// Any other qualifier, compared by its UTF-16 code units.
    Other(Vec<u16>),
}

/// The rank of the empty qualifier (a release), which null items compare as.
const RELEASE: u8 = 5;

impl Qualifier {
    fn new(text: &str, followed_by_digit: bool) -> Qualifier {
        let text = match text {
            "a" if followed_by_digit => "alpha",
            "b" if followed_by_digit => "beta",
            "m" if followed_by_digit => "milestone",
            "ga" | "final" | "release" => "",
            "cr" => "rc",
            t => t,
        };
        const KNOWN: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];
        match KNOWN.iter().position(|k| *k == text) {
            Some(i) => Qualifier::Known(u8::try_from(i).unwrap_or(u8::MAX)),
            None => Qualifier::Other(text.encode_utf16().collect()),
        }
    }
}

/// One item of a list (sub-lists are kept apart, see [`MavenVersion`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A number, as its digits without leading zeros ("" is zero).
    Number(String),
    /// A qualifier.
    Qualifier(Qualifier),
}

impl Item {
    fn is_null(&self) -> bool {
        match self {
            Item::Number(n) => n.is_empty(),
            Item::Qualifier(q) => *q == Qualifier::Known(RELEASE),
        }
    }

    fn number(digits: &str) -> Item {
        Item::Number(digits.trim_start_matches('0').to_owned())
    }
}

/// A parsed Maven version.
///
/// Maven nests each sub-list as the last item of its parent, so the whole version is a chain
/// of lists; `levels[k]` holds the items of the list at depth `k` other than its sub-list,
/// which is `levels[k + 1]`. Keeping the chain flat lets comparison run without recursion,
/// however many sub-lists a hostile version opens.
#[derive(Debug, Clone)]
pub struct MavenVersion {
    /// The items of each list in the chain, after normalization.
    pub levels: Vec<Vec<Item>>,
}

/// One element of a list, as the comparison sees it.
#[derive(Debug, Clone, Copy)]
enum Elem<'a> {
    Item(&'a Item),
    /// The sub-list at this depth.
    List(usize),
    /// Past the end of the list.
    Null,
}

impl MavenVersion {
    /// Parses a version the way `ComparableVersion.parseVersion` does. Every string parses.
    pub fn parse(s: &str) -> MavenVersion {
        let lower = s.to_lowercase();
        let mut levels: Vec<Vec<Item>> = vec![Vec::new()];
        let mut is_digit = false;
        let mut start = 0usize;
        // Adds an item to the innermost list.
        fn add(levels: &mut [Vec<Item>], item: Item) {
            if let Some(last) = levels.last_mut() {
                last.push(item);
            }
        }
        for (i, c) in lower.char_indices() {
            if c == '.' || c == '-' {
                if i == start {
                    add(&mut levels, Item::Number(String::new()));
                } else {
                    let text = &lower[start..i];
                    add(&mut levels, parse_item(is_digit, text));
                }
                start = i + 1;
                if c == '-' {
                    levels.push(Vec::new());
                }
            } else if c.is_ascii_digit() {
                if !is_digit && i > start {
                    let text = &lower[start..i];
                    add(&mut levels, Item::Qualifier(Qualifier::new(text, true)));
                    start = i;
                    levels.push(Vec::new());
                }
                is_digit = true;
            } else {
                if is_digit && i > start {
                    add(&mut levels, Item::number(&lower[start..i]));
                    start = i;
                    levels.push(Vec::new());
                }
                is_digit = false;
            }
        }
        if lower.len() > start {
            let text = &lower[start..];
            add(&mut levels, parse_item(is_digit, text));
        }
        // Normalize from the innermost list out: drop trailing null items, and drop a
        // sub-list that ends up empty.
        for k in (0..levels.len()).rev() {
            let has_child = k + 1 < levels.len();
            let own = &mut levels[k];
            while own.last().is_some_and(Item::is_null) {
                own.pop();
            }
            if own.is_empty() && !has_child && k > 0 {
                levels.pop();
            }
        }
        MavenVersion { levels }
    }

    /// The `e`-th element of the list at depth `k`.
    fn elem(&self, k: usize, e: usize) -> Elem<'_> {
        let own = self.levels.get(k).map(Vec::as_slice).unwrap_or_default();
        match own.get(e) {
            Some(item) => Elem::Item(item),
            None if e == own.len() && k + 1 < self.levels.len() => Elem::List(k + 1),
            None => Elem::Null,
        }
    }

    /// Compares the list at depth `k` with null: each element in turn, sub-lists included.
    fn list_vs_null(&self, mut k: usize) -> Ordering {
        while let Some(own) = self.levels.get(k) {
            for item in own {
                let ord = item_vs_null(item);
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            k += 1;
        }
        Ordering::Equal
    }

    /// Compares one element of `self` with one of `other`; `List` vs `List` is not handled
    /// here (the caller descends instead).
    fn cmp_elem(&self, a: Elem<'_>, other: &MavenVersion, b: Elem<'_>) -> Ordering {
        use Ordering::{Equal, Greater, Less};
        match (a, b) {
            (Elem::Null, Elem::Null) | (Elem::List(_), Elem::List(_)) => Equal,
            (Elem::Item(x), Elem::Item(y)) => cmp_items(x, y),
            (Elem::Item(x), Elem::Null) => item_vs_null(x),
            (Elem::Null, Elem::Item(y)) => item_vs_null(y).reverse(),
            (Elem::List(k), Elem::Null) => self.list_vs_null(k),
            (Elem::Null, Elem::List(k)) => other.list_vs_null(k).reverse(),
            (Elem::Item(Item::Number(_)), Elem::List(_)) => Greater,
            (Elem::Item(Item::Qualifier(_)), Elem::List(_)) => Less,
            (Elem::List(_), Elem::Item(Item::Number(_))) => Less,
            (Elem::List(_), Elem::Item(Item::Qualifier(_))) => Greater,
        }
    }
}

impl Ord for MavenVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        // Walk the two chains in step; a sub-list against a sub-list is always the last
        // element of both lists, so comparing it means moving one level down.
        let mut k = 0;
        loop {
            let mut e = 0;
            loop {
                let (a, b) = (self.elem(k, e), other.elem(k, e));
                match (a, b) {
                    (Elem::Null, Elem::Null) => return Ordering::Equal,
                    (Elem::List(_), Elem::List(_)) => break,
                    _ => {}
                }
                let ord = self.cmp_elem(a, other, b);
                if ord != Ordering::Equal {
                    return ord;
                }
                e += 1;
            }
            k += 1;
        }
    }
}

impl PartialOrd for MavenVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for MavenVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for MavenVersion {}

/// `ComparableVersion.parseItem` for an item that is not followed by a digit.
fn parse_item(is_digit: bool, text: &str) -> Item {
    if is_digit {
        Item::number(text)
    } else {
        Item::Qualifier(Qualifier::new(text, false))
    }
}

/// Compares an item with null (a missing item).
fn item_vs_null(item: &Item) -> Ordering {
    match item {
        Item::Number(n) => (!n.is_empty()).cmp(&false),
        Item::Qualifier(q) => q.cmp(&Qualifier::Known(RELEASE)),
    }
}

/// Compares two items: numbers above qualifiers.
fn cmp_items(a: &Item, b: &Item) -> Ordering {
    match (a, b) {
        (Item::Number(x), Item::Number(y)) => cmp_digit_strings(x.as_bytes(), y.as_bytes()),
        (Item::Number(_), Item::Qualifier(_)) => Ordering::Greater,
        (Item::Qualifier(_), Item::Number(_)) => Ordering::Less,
        (Item::Qualifier(x), Item::Qualifier(y)) => x.cmp(y),
    }
}

/// Compares two Maven versions; see the module documentation.
pub fn compare(a: &str, b: &str) -> Ordering {
    MavenVersion::parse(a).cmp(&MavenVersion::parse(b))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Override, Rng, check_vector_file, random_version};
    use super::*;
    use Ordering::{Equal, Greater, Less};

    /// Vectors that are not maven-artifact 3.8.6's answer. The test fails if one of these lines
    /// disappears or starts to agree.
    const MAVEN_OVERRIDES: &[Override] = &[Override {
        line: "1-1 = 1-ga-1",
        got: Greater,
        reason: "an example from the POM reference's Version Order Specification, which OSV's \
                 spec-based comparator follows; ComparableVersion 3.8.6 (which produced the \
                 generated vectors) drops `ga` but keeps the sub-list it opened, so `1-ga-1` is \
                 [1, [[1]]] and sorts before `1-1`, [1, [1]]",
    }];

    #[test]
    fn maven_vectors() {
        let n = check_vector_file("maven-versions.txt", compare, MAVEN_OVERRIDES);
        assert_eq!(n, 102, "vectors in maven-versions.txt");
    }

    #[test]
    fn maven_generated_vectors() {
        let n = check_vector_file("maven-versions-generated.txt", compare, &[]);
        assert_eq!(n, 14_752, "vectors in maven-versions-generated.txt");
    }

    #[test]
    fn maven_documented_order() {
        // From the POM reference's "Version Order Specification" and Maven's own tests.
        let versions = [
            "1-alpha-1",
            "1-alpha2",
            "1-beta-1",
            "1-milestone-1",
            "1-rc-1",
            "1-SNAPSHOT",
            "1",
            "1-sp",
            "1-abc",
            "1-xyz",
            "1-1",
            "1-2",
            "1.1",
            "1.2-SNAPSHOT",
            "1.2",
        ];
        for (i, a) in versions.iter().enumerate() {
            for (j, b) in versions.iter().enumerate() {
                assert_eq!(compare(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn maven_edge_cases() {
        let cases = [
            ("1.0.0", "1", Equal),
            ("1.0-final", "1", Equal),
            ("1.0.RELEASE", "1", Equal),
            ("1.0.0-foo", "1-foo", Equal),
            ("1..1", "1.0.1", Equal),
            ("1-.1", "1-0.1", Equal),
            ("1a1", "1-alpha-1", Equal),
            ("1.0.alpha", "1", Less),
            ("1.x", "1", Greater),
            // Maven's non-transitive corner, kept as Maven has it.
            ("1.0.alpha", "1.x", Greater),
            ("1.2.3.4.5.6.7.8.9.10", "1.2.3.4.5.6.7.8.9.9", Greater),
            (
                "1.123456789012345678901234567890",
                "1.123456789012345678901234567891",
                Less,
            ),
            ("1.0000000000", "1", Equal),
            ("", "", Equal),
            ("", "0", Equal),
            ("", "-", Equal),
            ("\u{10000}", "\u{ffff}", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let deep = "1-".repeat(200_000) + "2";
        let deeper = "1-".repeat(200_000) + "3";
        assert_eq!(compare(&deep, &deeper), Less);
        assert_eq!(compare(&deep, &deep), Equal);
        let alternating = "a1".repeat(200_000);
        assert_eq!(compare(&alternating, &alternating), Equal);
    }

    #[test]
    fn random_input_does_not_panic() {
        let mut rng = Rng::new(0x5eed_0005);
        for _ in 0..20_000 {
            let a = random_version(&mut rng, b"0123456789.-_abmrcspAZ");
            let b = random_version(&mut rng, b"0123456789.-_abmrcspAZ");
            assert_eq!(compare(&a, &a), Equal, "{a:?}");
            assert_eq!(compare(&a, &b), compare(&b, &a).reverse(), "{a:?} vs {b:?}");
        }
    }
}
