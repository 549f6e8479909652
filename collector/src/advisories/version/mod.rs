//! Version ordering for each package ecosystem; here Debian's, with version validation and the
//! constraint language of queries.
//!
//! A query looks like `libssl3@'<3.0.13'`: a package name, then optionally '@' and a constraint.
//!
//! The order is dpkg's: `[epoch:]upstream[-revision]`, where the epoch is compared numerically,
//! then the upstream part and the revision with dpkg's `verrevcmp` algorithm. In that algorithm
//! '~' sorts before everything, even the end of the string; letters sort before all other
//! non-digits; and runs of digits compare numerically, with arbitrary length (the runs are
//! compared as strings after stripping leading zeros, never parsed into a machine integer).
//!
//! A constraint is a comma-separated conjunction of comparisons such as `>=1.2,<1.3`. The
//! operators are `<`, `<=`, `=`, `==`, `!=`, `>=`, `>` and dpkg's `<<` and `>>`; a bare version
//! means `=`. Note that `<` and `>` are strict here, unlike the deprecated dpkg control-file
//! meaning of a single `<` or `>`.
//!
//! The other ecosystems' orders live in submodules, one per scheme: [`pep440`] (PyPI),
//! [`semver`] (npm, crates.io, Go), [`maven`], [`rpm`] (Red Hat and the other RPM
//! distributions) and [`apk`] (Alpine). [`Order`] is the order, and `crate::ecosystem` picks it for an OSV ecosystem
//! name. Every comparator orders any two strings, never panics, and compares digit runs of any
//! length as strings.

use std::cmp::Ordering;
use std::fmt;

pub mod apk;
pub mod maven;
pub mod pep440;
pub mod rpm;
pub mod semver;

/// The largest epoch dpkg accepts (it stores the epoch in a C `int`).
const MAX_EPOCH: &str = "2147483647";

/// Compares two Debian versions in dpkg order.
///
/// The input does not have to be valid: any two strings are ordered, and the order is a total
/// preorder (for example "1.0" and "1.00" compare equal, as they do in dpkg). A string is split
/// into an epoch only when the text before its first ':' is a non-empty run of ASCII digits;
/// otherwise its epoch is 0 and the whole string is the upstream part. The revision is the text
/// after the last '-', or empty when there is none (which dpkg treats like "0").
pub fn dpkg_cmp(a: &str, b: &str) -> Ordering {
    let a = split_version(a.as_bytes());
    let b = split_version(b.as_bytes());
    cmp_digit_strings(a.epoch, b.epoch)
        .then_with(|| verrevcmp(a.upstream, b.upstream))
        .then_with(|| verrevcmp(a.revision, b.revision))
}

/// The three parts of a version, as byte slices of the original text.
struct Parts<'a> {
    epoch: &'a [u8],
    upstream: &'a [u8],
    revision: &'a [u8],
}

/// Splits a version into epoch, upstream part and revision, leniently (see [`dpkg_cmp`]).
fn split_version(v: &[u8]) -> Parts<'_> {
    let (epoch, rest): (&[u8], &[u8]) = match v.iter().position(|&c| c == b':') {
        Some(i) if i > 0 && v[..i].iter().all(u8::is_ascii_digit) => (&v[..i], &v[i + 1..]),
        _ => (b"0", v),
    };
    let (upstream, revision): (&[u8], &[u8]) = match rest.iter().rposition(|&c| c == b'-') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, b""),
    };
    Parts {
        epoch,
        upstream,
        revision,
    }
}

/// Compares two runs of ASCII digits numerically, whatever their length.
fn cmp_digit_strings(a: &[u8], b: &[u8]) -> Ordering {
    let a = strip_leading_zeros(a);
    let b = strip_leading_zeros(b);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Returns the slice without its leading '0' bytes.
fn strip_leading_zeros(s: &[u8]) -> &[u8] {
    let zeros = s.iter().take_while(|&&c| c == b'0').count();
    &s[zeros..]
}

/// The weight of a non-digit byte in dpkg's order; `None` is the end of the string.
///
/// This mirrors dpkg's `order()`: '~' is -1, the end and digits are 0, letters are their own
/// code, and every other byte is its code plus 256 so that it sorts after all letters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// Compares an upstream version or a revision with dpkg's `verrevcmp` algorithm.
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0usize, 0usize);
    let is_digit_at = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        // Compare the non-digit prefixes byte by byte.
        while (i < a.len() && !is_digit_at(a, i)) || (j < b.len() && !is_digit_at(b, j)) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        // Compare the digit runs numerically.
        let a_start = i;
        while is_digit_at(a, i) {
            i += 1;
        }
        let b_start = j;
        while is_digit_at(b, j) {
            j += 1;
        }
        let a_run = a.get(a_start..i).unwrap_or_default();
        let b_run = b.get(b_start..j).unwrap_or_default();
        let ord = cmp_digit_strings(a_run, b_run);
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// What is wrong with a version string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionProblem {
    /// The version is empty or only whitespace.
    #[error("a version must not be empty")]
    Empty,
    /// The version has whitespace inside it.
    #[error("a version must not contain spaces")]
    EmbeddedSpace,
    /// The version has a ':' with nothing before it.
    #[error("the epoch before ':' is empty")]
    EmptyEpoch,
    /// The text before the first ':' is not a number.
    #[error("the epoch {0:?} before ':' is not a number")]
    EpochNotNumber(String),
    /// The epoch is larger than dpkg accepts.
    #[error("the epoch {0:?} is larger than {MAX_EPOCH}")]
    EpochTooBig(String),
    /// The version ends with the ':' of its epoch.
    #[error("nothing after the epoch's ':'")]
    NothingAfterColon,
    /// The version ends with a '-' and so has an empty revision.
    #[error("the revision after the last '-' is empty")]
    EmptyRevision,
    /// The upstream part (between the epoch and the revision) is empty.
    #[error("the upstream version is empty")]
    EmptyUpstream,
    /// A constraint's version has a character no ecosystem uses.
    #[error("character {ch:?} is not allowed in a version of any ecosystem")]
    BadCharAny {
        /// The character.
        ch: char,
    },
    /// The upstream part does not start with a digit.
    #[error("a version must start with a digit")]
    NoLeadingDigit,
    /// The upstream part has a character outside `A-Za-z0-9.+~-:`.
    #[error("character {0:?} is not allowed in a version (only letters, digits and . + ~ - :)")]
    BadUpstreamChar(char),
    /// The revision has a character outside `A-Za-z0-9.+~`.
    #[error("character {0:?} is not allowed in a revision (only letters, digits and . + ~)")]
    BadRevisionChar(char),
}

/// An error in a version, a constraint or a query.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConstraintError {
    /// A version on its own (see [`validate_dpkg_version`]) is invalid.
    #[error("bad version {version:?}: {problem}")]
    BadVersion {
        /// The version as given.
        version: String,
        /// What is wrong with it.
        problem: VersionProblem,
    },
    /// The version in one comparison of a constraint is invalid.
    #[error("bad version {version:?} in part {part}: {problem}")]
    BadVersionInPart {
        /// The version as given, without its operator.
        version: String,
        /// The 1-based index of the comparison in the constraint.
        part: usize,
        /// What is wrong with it.
        problem: VersionProblem,
    },
    /// The whole constraint is empty or only whitespace.
    #[error("bad constraint {text:?}: it is empty")]
    EmptyConstraint {
        /// The constraint as given.
        text: String,
    },
    /// One comma-separated part of a constraint is empty.
    #[error("bad constraint {text:?}: part {part} is empty")]
    EmptyPart {
        /// The constraint as given.
        text: String,
        /// The 1-based index of the empty part.
        part: usize,
    },
    /// One part of a constraint has an operator but no version.
    #[error("bad constraint {text:?}: part {part} {part_text:?} has no version")]
    MissingVersion {
        /// The constraint as given.
        text: String,
        /// The 1-based index of the part.
        part: usize,
        /// The part, trimmed.
        part_text: String,
    },
    /// One part of a constraint starts with an operator that is not known.
    #[error(
        "bad constraint {text:?}: part {part} {part_text:?} has an unknown operator {operator:?}"
    )]
    UnknownOperator {
        /// The constraint as given.
        text: String,
        /// The 1-based index of the part.
        part: usize,
        /// The part, trimmed.
        part_text: String,
        /// The run of operator characters that is not an operator.
        operator: String,
    },
    /// The query is empty or only whitespace.
    #[error("the query is empty: give a package name such as \"libssl3\" or \"libssl3@<3.0.13\"")]
    EmptyQuery,
    /// The query has no package name before its '@'.
    #[error("bad query {spec:?}: the package name before '@' is empty")]
    EmptyName {
        /// The query as given.
        spec: String,
    },
    /// The query ends with an '@' that has no constraint after it.
    #[error(
        "bad query {spec:?}: nothing after '@'; add a constraint such as \"<1.0\" or remove the '@'"
    )]
    NothingAfterAt {
        /// The query as given.
        spec: String,
    },
    /// The query has more than one '@'.
    #[error("bad query {spec:?}: more than one '@'")]
    TooManyAts {
        /// The query as given.
        spec: String,
    },
    /// The package name breaks Debian's naming rules.
    #[error("bad package name {name:?}: {problem}")]
    BadName {
        /// The name as given, trimmed.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
}

/// What is wrong with a package name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    /// The name is empty.
    #[error("the package name is empty")]
    TooShort,
    /// The name has a character that is not allowed.
    #[error(
        "character {ch:?} at position {pos} is not allowed; a package name has only letters, digits, '+', '-', '.', '_', '~', '/' and a leading '@' (an npm scope); use a purl for anything else"
    )]
    BadChar {
        /// The character.
        ch: char,
        /// Its 1-based character position.
        pos: usize,
    },
    /// The name starts with '+', '-' or '.'.
    #[error("a package name must start with a letter or a digit")]
    BadStart,
}

/// Validates a Debian version string the way dpkg does.
///
/// Like dpkg's `parseversion`, surrounding whitespace is ignored, and these are errors: an empty
/// version, whitespace inside it, an empty or non-numeric epoch, an epoch above 2147483647,
/// nothing after the epoch's ':', an empty revision after a trailing '-', and an empty upstream
/// part. dpkg only warns when the upstream part does not start with a digit or when a character
/// is outside the allowed sets (`A-Za-z0-9.+~-:` upstream, `A-Za-z0-9.+~` in the revision); this
/// function treats both as errors, because the versions it checks are typed by people in queries,
/// where such characters are nearly always typos (for example ";" instead of ","). Comparing with
/// [`dpkg_cmp`] or [`Constraint::matches`] does not validate, so installed versions that dpkg
/// only warned about still compare. Letters of either case are accepted, as dpkg does.
pub fn validate_dpkg_version(v: &str) -> Result<(), ConstraintError> {
    check_version(v).map_err(|problem| ConstraintError::BadVersion {
        version: v.to_owned(),
        problem,
    })
}

/// Checks a version and returns the first problem found.
/// The checks a constraint's version gets: constraints apply to every
/// ecosystem (PEP 440's `1!2.0rc1`, Go's `v1.2.3`, Maven's `1.0-SNAPSHOT`),
/// so only what no ecosystem's version has is refused.
fn check_any_version(v: &str) -> Result<(), VersionProblem> {
    let v = v.trim();
    if v.is_empty() {
        return Err(VersionProblem::Empty);
    }
    if v.chars().any(char::is_whitespace) {
        return Err(VersionProblem::EmbeddedSpace);
    }
    if let Some(ch) = v.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-' | ':' | '_' | '!'))
    }) {
        return Err(VersionProblem::BadCharAny { ch });
    }
    Ok(())
}

fn check_version(v: &str) -> Result<(), VersionProblem> {
    let v = v.trim();
    if v.is_empty() {
        return Err(VersionProblem::Empty);
    }
    if v.chars().any(char::is_whitespace) {
        return Err(VersionProblem::EmbeddedSpace);
    }
    let rest = match v.split_once(':') {
        Some((epoch, rest)) => {
            if epoch.is_empty() {
                return Err(VersionProblem::EmptyEpoch);
            }
            if !epoch.bytes().all(|c| c.is_ascii_digit()) {
                return Err(VersionProblem::EpochNotNumber(epoch.to_owned()));
            }
            let digits = strip_leading_zeros(epoch.as_bytes());
            if cmp_digit_strings(digits, MAX_EPOCH.as_bytes()) == Ordering::Greater {
                return Err(VersionProblem::EpochTooBig(epoch.to_owned()));
            }
            if rest.is_empty() {
                return Err(VersionProblem::NothingAfterColon);
            }
            rest
        }
        None => v,
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((upstream, revision)) => {
            if revision.is_empty() {
                return Err(VersionProblem::EmptyRevision);
            }
            (upstream, Some(revision))
        }
        None => (rest, None),
    };
    if upstream.is_empty() {
        return Err(VersionProblem::EmptyUpstream);
    }
    if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(VersionProblem::NoLeadingDigit);
    }
    if let Some(c) = upstream
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || ".+~-:".contains(c)))
    {
        return Err(VersionProblem::BadUpstreamChar(c));
    }
    if let Some(c) = revision
        .unwrap_or_default()
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || ".+~".contains(c)))
    {
        return Err(VersionProblem::BadRevisionChar(c));
    }
    Ok(())
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Op {
    /// Strictly less than (`<` or `<<`).
    Lt,
    /// Less than or equal (`<=`).
    Le,
    /// Equal in dpkg order (`=`, `==` or no operator).
    Eq,
    /// Not equal in dpkg order (`!=`).
    Ne,
    /// Greater than or equal (`>=`).
    Ge,
    /// Strictly greater than (`>` or `>>`).
    Gt,
}

impl Op {
    /// The canonical spelling of the operator, as used in normalized constraint text.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Ge => ">=",
            Op::Gt => ">",
        }
    }

    /// Whether an ordering of a candidate against the operand satisfies the operator.
    pub fn holds(self, ord: Ordering) -> bool {
        match self {
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Eq => ord == Ordering::Equal,
            Op::Ne => ord != Ordering::Equal,
            Op::Ge => ord != Ordering::Less,
            Op::Gt => ord == Ordering::Greater,
        }
    }

    /// Parses an operator spelling; the empty string is `Eq`.
    fn from_symbol(s: &str) -> Option<Op> {
        Some(match s {
            "" | "=" | "==" => Op::Eq,
            "<" | "<<" => Op::Lt,
            "<=" => Op::Le,
            "!=" => Op::Ne,
            ">=" => Op::Ge,
            ">" | ">>" => Op::Gt,
            _ => return None,
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// One comparison of a constraint, such as `<3.0.13`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The operator.
    pub op: Op,
    /// The version compared against, trimmed and validated.
    pub version: String,
}

impl Comparison {
    /// Whether `version` satisfies this comparison in dpkg order.
    pub fn matches(&self, version: &str) -> bool {
        self.op.holds(dpkg_cmp(version, &self.version))
    }

    /// Whether `version` satisfies this comparison in an ecosystem's order.
    pub fn matches_in(&self, version: &str, ecosystem: Order) -> bool {
        self.op.holds(ecosystem.compare(version, &self.version))
    }
}

/// A conjunction of comparisons, e.g. ">=1.2,<1.3". A bare version means Eq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// The comparisons, all of which must hold.
    pub comparisons: Vec<Comparison>,
    /// The normalized text: canonical operators, no spaces, joined by ','.
    pub text: String,
}

impl Constraint {
    /// Parses a constraint such as `>=1.2, << 1.3` or a bare version such as `1.2-1`.
    ///
    /// Whitespace is allowed around each part and between an operator and its version. Each
    /// version is checked with the rules of [`validate_dpkg_version`]. The error names the part
    /// that is wrong, counting from 1.
    pub fn parse(text: &str) -> Result<Constraint, ConstraintError> {
        if text.trim().is_empty() {
            return Err(ConstraintError::EmptyConstraint {
                text: text.to_owned(),
            });
        }
        let mut comparisons = Vec::new();
        for (index, raw) in text.split(',').enumerate() {
            let part = index + 1;
            let part_text = raw.trim();
            if part_text.is_empty() {
                return Err(ConstraintError::EmptyPart {
                    text: text.to_owned(),
                    part,
                });
            }
            let op_len = part_text
                .find(|c: char| !matches!(c, '<' | '>' | '=' | '!'))
                .unwrap_or(part_text.len());
            let (op_text, version) = part_text.split_at(op_len);
            let op = Op::from_symbol(op_text).ok_or_else(|| ConstraintError::UnknownOperator {
                text: text.to_owned(),
                part,
                part_text: part_text.to_owned(),
                operator: op_text.to_owned(),
            })?;
            let version = version.trim();
            if version.is_empty() {
                return Err(ConstraintError::MissingVersion {
                    text: text.to_owned(),
                    part,
                    part_text: part_text.to_owned(),
                });
            }
            check_any_version(version).map_err(|problem| ConstraintError::BadVersionInPart {
                version: version.to_owned(),
                part,
                problem,
            })?;
            comparisons.push(Comparison {
                op,
                version: version.to_owned(),
            });
        }
        let text = comparisons
            .iter()
            .map(|c| format!("{}{}", c.op, c.version))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Constraint { comparisons, text })
    }

    /// Whether `version` satisfies every comparison, in dpkg order.
    ///
    /// The version is not validated; any string is compared as [`dpkg_cmp`] describes.
    pub fn matches(&self, version: &str) -> bool {
        self.comparisons.iter().all(|c| c.matches(version))
    }

    /// Whether `version` satisfies every comparison in an ecosystem's order.
    pub fn matches_in(&self, version: &str, ecosystem: Order) -> bool {
        self.comparisons
            .iter()
            .all(|c| c.matches_in(version, ecosystem))
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Constraint {
    type Err = ConstraintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Constraint::parse(s)
    }
}

/// Checks a package name against Debian's rules: at least 2 characters, only `a-z`, `0-9`,
/// '+', '-' and '.', starting with a letter or digit.
pub fn validate_package_name(name: &str) -> Result<(), ConstraintError> {
    check_name(name).map_err(|problem| ConstraintError::BadName {
        name: name.to_owned(),
        problem,
    })
}

/// Checks a package name and returns the first problem found.
fn check_name(name: &str) -> Result<(), NameProblem> {
    // Names of every ecosystem patchgap inventories: Debian's, PyPI's (any
    // case, '_'), npm's ("@scope/name"), Go module paths, crates, Maven
    // artifactIds. Matching is case-insensitive, so case is no error.
    for (i, ch) in name.chars().enumerate() {
        let pos = i + 1;
        let scope = ch == '@' && i == 0;
        if !(ch.is_ascii_alphanumeric() || scope || matches!(ch, '+' | '-' | '.' | '_' | '~' | '/'))
        {
            return Err(NameProblem::BadChar { ch, pos });
        }
    }
    if name.is_empty() {
        return Err(NameProblem::TooShort);
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '@' || c == '_') {
        return Err(NameProblem::BadStart);
    }
    Ok(())
}

/// Splits a query "NAME[@CONSTRAINT]" into name and optional constraint. Package names follow
/// Debian rules (lower case, digits, + - .; at least 2 chars) — error otherwise with a message
/// naming the bad part.
///
/// Whitespace around the name and around the constraint is ignored.
pub fn parse_query(spec: &str) -> Result<(String, Option<Constraint>), ConstraintError> {
    if spec.trim().is_empty() {
        return Err(ConstraintError::EmptyQuery);
    }
    // An npm scope ("@types/node@>=18") starts with '@' and has a '/'
    // before the constraint's '@'.
    let trimmed = spec.trim_start();
    let scope_len = trimmed
        .strip_prefix('@')
        .filter(|rest| rest.split('@').next().is_some_and(|n| n.contains('/')))
        .map_or(0, |_| 1);
    let (name, constraint) = match trimmed[scope_len..].split_once('@') {
        Some((name, constraint)) => (name.trim(), Some(constraint)),
        None => (trimmed[scope_len..].trim(), None),
    };
    let name = format!("{}{name}", &trimmed[..scope_len]);
    let name = name.as_str();
    if name.is_empty() {
        return Err(ConstraintError::EmptyName {
            spec: spec.to_owned(),
        });
    }
    validate_package_name(name)?;
    let constraint = match constraint {
        None => None,
        Some(c) if c.trim().is_empty() => {
            return Err(ConstraintError::NothingAfterAt {
                spec: spec.to_owned(),
            });
        }
        Some(c) if c.contains('@') => {
            return Err(ConstraintError::TooManyAts {
                spec: spec.to_owned(),
            });
        }
        Some(c) => Some(Constraint::parse(c)?),
    };
    Ok((name.to_owned(), constraint))
}

/// A version order; `crate::ecosystem` says which one each ecosystem uses.
///
/// OSV advisories give affected versions in the ecosystem's own order; an installed version is
/// compared with them with the order of the ecosystem the package came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Order {
    /// dpkg's order ([`dpkg_cmp`]): Debian, Ubuntu.
    Dpkg,
    /// PEP 440 ([`pep440::compare`]): PyPI.
    Pep440,
    /// Semantic Versioning 2.0 ([`semver::compare`]): npm, crates.io, Go, Hex, Bitnami,
    /// SwiftURL.
    SemVer,
    /// Maven's `ComparableVersion` ([`maven::compare`]).
    Maven,
    /// rpm's order ([`rpm::compare`]): Red Hat, Rocky Linux, AlmaLinux, SUSE, openSUSE and
    /// the other RPM distributions.
    Rpm,
    /// apk's order ([`apk::compare`]): Alpine, Wolfi, Chainguard, MinimOS.
    Apk,
}

impl Order {
    /// Compares two versions in this order. Any two strings are ordered; see each module for
    /// how versions that break the scheme's grammar are placed.
    ///
    /// Every order here is a total order except Maven's, which keeps a known non-transitive
    /// corner of Maven's own `ComparableVersion` (see [`maven`]): do not sort untrusted Maven
    /// versions with it (`slice::sort_by` may panic on an inconsistent order); comparing a
    /// version with range bounds is fine.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Order::Dpkg => dpkg_cmp(a, b),
            Order::Pep440 => pep440::compare(a, b),
            Order::SemVer => semver::compare(a, b),
            Order::Maven => maven::compare(a, b),
            Order::Rpm => rpm::compare(a, b),
            Order::Apk => apk::compare(a, b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one vector file and returns its (line number, a, expected order, b) entries.
    fn load_vectors(file: &str) -> Vec<(usize, String, Ordering, String)> {
        let path = format!(
            "{}/../testdata/version-vectors/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read vector file {path}: {e}"));
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [a, op, b] = fields[..] else {
                panic!("{path}:{}: expected `A OP B`, got {line:?}", i + 1);
            };
            let ord = match op {
                "<" => Ordering::Less,
                "=" => Ordering::Equal,
                ">" => Ordering::Greater,
                _ => panic!("{path}:{}: unknown operator {op:?}", i + 1),
            };
            out.push((i + 1, a.to_owned(), ord, b.to_owned()));
        }
        out
    }

    fn check_vector_file(file: &str) -> usize {
        let vectors = load_vectors(file);
        let mut failures = Vec::new();
        for (line, a, want, b) in &vectors {
            let got = dpkg_cmp(a, b);
            if got != *want {
                failures.push(format!(
                    "{file}:{line}: {a} vs {b}: want {want:?}, got {got:?}"
                ));
            }
            let back = dpkg_cmp(b, a);
            if back != want.reverse() {
                failures.push(format!(
                    "{file}:{line}: antisymmetry {b} vs {a}: want {:?}, got {back:?}",
                    want.reverse()
                ));
            }
            for v in [a, b] {
                if let Err(e) = validate_dpkg_version(v) {
                    failures.push(format!("{file}:{line}: real version rejected: {e}"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        vectors.len()
    }

    #[test]
    fn debian_vectors() {
        let checked = check_vector_file("debian-versions.txt");
        assert!(checked > 0, "no vectors checked in debian-versions.txt");
    }

    #[test]
    fn debian_generated_vectors() {
        let checked = check_vector_file("debian-versions-generated.txt");
        assert!(
            checked > 0,
            "no vectors checked in debian-versions-generated.txt"
        );
    }

    #[test]
    fn dpkg_order_edge_cases() {
        let cases = [
            ("1.0~rc1", "1.0", Ordering::Less),
            ("1.0~~", "1.0~", Ordering::Less),
            ("1.0~", "1.0", Ordering::Less),
            ("1.0", "1.0a", Ordering::Less),
            ("1.0a", "1.0+", Ordering::Less),
            ("1.0+", "1.0.", Ordering::Less),
            ("1.0", "1.00", Ordering::Equal),
            ("1:0.9", "2.0", Ordering::Greater),
            ("0:2.0", "2.0", Ordering::Equal),
            ("00:2.0", "2.0", Ordering::Equal),
            ("10:1", "9:2", Ordering::Greater),
            ("1.0-1", "1.0-0", Ordering::Greater),
            ("1.0", "1.0-0", Ordering::Equal),
            ("1.0-1~deb12u1", "1.0-1", Ordering::Less),
            // Digit runs longer than any machine integer compare numerically.
            (
                "1.123456789012345678901234567890",
                "1.123456789012345678901234567891",
                Ordering::Less,
            ),
            (
                "1.00000000000000000000000000000000000009",
                "1.10",
                Ordering::Less,
            ),
            (
                "99999999999999999999999999999999:1",
                "99999999999999999999999999999998:2",
                Ordering::Greater,
            ),
            ("", "", Ordering::Equal),
            ("", "0", Ordering::Equal),
            ("~", "", Ordering::Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(dpkg_cmp(a, b), want, "{a} vs {b}");
            assert_eq!(dpkg_cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn validate_versions() {
        let good = [
            "1.0",
            "1:1.0-1",
            "2:0.0.44-nobin",
            "1.0~rc1-1~deb12u2",
            "3.0.11-1~deb12u2",
            "1.2.3-a-b",
            "1:2:3",
            " 1.0 ",
            "2147483647:1",
            "1.0+dfsg-2ubuntu1.4",
            "1.0A",
        ];
        for v in good {
            assert_eq!(validate_dpkg_version(v), Ok(()), "{v}");
        }
        let bad = [
            ("", "bad version \"\": a version must not be empty"),
            ("  ", "bad version \"  \": a version must not be empty"),
            (
                "1 .0",
                "bad version \"1 .0\": a version must not contain spaces",
            ),
            (
                ":1.0",
                "bad version \":1.0\": the epoch before ':' is empty",
            ),
            (
                "a:1.0",
                "bad version \"a:1.0\": the epoch \"a\" before ':' is not a number",
            ),
            (
                "2147483648:1",
                "bad version \"2147483648:1\": the epoch \"2147483648\" is larger than 2147483647",
            ),
            ("1:", "bad version \"1:\": nothing after the epoch's ':'"),
            (
                "1.0-",
                "bad version \"1.0-\": the revision after the last '-' is empty",
            ),
            ("-1", "bad version \"-1\": the upstream version is empty"),
            (
                "a1.0",
                "bad version \"a1.0\": a version must start with a digit",
            ),
            (
                "1.0;2",
                "bad version \"1.0;2\": character ';' is not allowed in a version (only letters, digits and . + ~ - :)",
            ),
            (
                "1:1.0-1:2",
                "bad version \"1:1.0-1:2\": character ':' is not allowed in a revision (only letters, digits and . + ~)",
            ),
        ];
        for (v, want) in bad {
            match validate_dpkg_version(v) {
                Ok(()) => panic!("{v:?} was accepted"),
                Err(e) => assert_eq!(e.to_string(), want, "{v:?}"),
            }
        }
    }

    #[test]
    fn parse_good_constraints() {
        /// One good constraint: the input, its comparisons and its normalized text.
        type Case<'a> = (&'a str, &'a [(Op, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            ("<3.0.13", &[(Op::Lt, "3.0.13")], "<3.0.13"),
            ("<<3.0.13", &[(Op::Lt, "3.0.13")], "<3.0.13"),
            (">>1", &[(Op::Gt, "1")], ">1"),
            (">1", &[(Op::Gt, "1")], ">1"),
            ("1.2-1", &[(Op::Eq, "1.2-1")], "=1.2-1"),
            ("==1.2", &[(Op::Eq, "1.2")], "=1.2"),
            ("=1.2", &[(Op::Eq, "1.2")], "=1.2"),
            ("!=1.2", &[(Op::Ne, "1.2")], "!=1.2"),
            ("<=1.2", &[(Op::Le, "1.2")], "<=1.2"),
            (
                ">=1.2,<1.3",
                &[(Op::Ge, "1.2"), (Op::Lt, "1.3")],
                ">=1.2,<1.3",
            ),
            (
                "  >= 1.2 ,  << 1:1.3~rc1  ",
                &[(Op::Ge, "1.2"), (Op::Lt, "1:1.3~rc1")],
                ">=1.2,<1:1.3~rc1",
            ),
        ];
        for (text, want, normalized) in cases {
            let c = Constraint::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let got: Vec<(Op, &str)> = c
                .comparisons
                .iter()
                .map(|c| (c.op, c.version.as_str()))
                .collect();
            assert_eq!(got, *want, "{text:?}");
            assert_eq!(c.to_string(), *normalized, "{text:?}");
            assert_eq!(c.text, *normalized, "{text:?}");
            let again = Constraint::parse(&c.to_string()).expect("normalized text reparses");
            assert_eq!(again, c, "{text:?}");
        }
    }

    #[test]
    fn parse_bad_constraints() {
        let cases = [
            (
                ">=1.2,<<<1.3",
                "bad constraint \">=1.2,<<<1.3\": part 2 \"<<<1.3\" has an unknown operator \"<<<\"",
            ),
            (">=", "bad constraint \">=\": part 1 \">=\" has no version"),
            ("<1.2,", "bad constraint \"<1.2,\": part 2 is empty"),
            (",<1.2", "bad constraint \",<1.2\": part 1 is empty"),
            ("", "bad constraint \"\": it is empty"),
            (" ", "bad constraint \" \": it is empty"),
            (
                "=<1.0",
                "bad constraint \"=<1.0\": part 1 \"=<1.0\" has an unknown operator \"=<\"",
            ),
            (
                "!1.0",
                "bad constraint \"!1.0\": part 1 \"!1.0\" has an unknown operator \"!\"",
            ),
            (
                ">=1.0 <2.0",
                "bad version \"1.0 <2.0\" in part 1: a version must not contain spaces",
            ),
            (
                ">=1.0;<2.0",
                "bad version \"1.0;<2.0\" in part 1: character ';' is not allowed in a version of any ecosystem",
            ),
            (
                ">=1.0,<2/0",
                "bad version \"2/0\" in part 2: character '/' is not allowed in a version of any ecosystem",
            ),
        ];
        for (text, want) in cases {
            match Constraint::parse(text) {
                Ok(c) => panic!("{text:?} was accepted as {c}"),
                Err(e) => assert_eq!(e.to_string(), want, "{text:?}"),
            }
        }
    }

    #[test]
    fn constraint_matches() {
        let cases = [
            ("<3.0.13", "3.0.11-1~deb12u2", true),
            ("<3.0.13", "3.0.13", false),
            ("<3.0.13", "3.0.13-1", false),
            ("<3.0.13-1", "3.0.13", true),
            ("<<3.0.13", "3.0.13~rc1", true),
            ("<=3.0.13", "3.0.13-0", true),
            (">2.0", "1:0.9", true),
            ("<2.0", "1:0.9", false),
            (">=1:0", "9.9", false),
            ("=1.0", "1.00", true),
            ("1.0-1", "0:1.0-1", true),
            ("!=1.0", "1.0", false),
            ("!=1.0", "1.0.1", true),
            (">=1.2,<1.3", "1.2.9", true),
            (">=1.2,<1.3", "1.3~beta", true),
            (">=1.2,<1.3", "1.3", false),
            (">=1.2,<1.3", "1.1", false),
            (">=1.2,!=1.2.5,<1.3", "1.2.5", false),
        ];
        for (constraint, version, want) in cases {
            let c = Constraint::parse(constraint).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.matches(version), want, "{version} vs {constraint}");
        }
    }

    #[test]
    fn queries() {
        let (name, c) = parse_query("libssl3@<3.0.13").expect("valid query");
        assert_eq!(name, "libssl3");
        assert_eq!(c.map(|c| c.to_string()), Some("<3.0.13".to_owned()));

        let (name, c) = parse_query("  libstdc++6 @ >= 12 , << 13 ").expect("valid query");
        assert_eq!(name, "libstdc++6");
        assert_eq!(c.map(|c| c.to_string()), Some(">=12,<13".to_owned()));

        assert_eq!(parse_query("openssl"), Ok(("openssl".to_owned(), None)));
        assert_eq!(parse_query("g++-12"), Ok(("g++-12".to_owned(), None)));
        // Other ecosystems' names: any case, '_', npm scopes, Go paths.
        for name in [
            "PyYAML",
            "zope_interface",
            "@types/node",
            "golang.org/x/net",
            "a",
        ] {
            assert_eq!(parse_query(name), Ok((name.to_owned(), None)), "{name}");
        }
        let (name, c) = parse_query("@types/node@>=18").expect("scoped with a constraint");
        assert_eq!(name, "@types/node");
        assert!(c.is_some());

        let bad = [
            (
                "",
                "the query is empty: give a package name such as \"libssl3\" or \"libssl3@<3.0.13\"",
            ),
            (
                "@<1.0",
                "bad query \"@<1.0\": the package name before '@' is empty",
            ),
            (
                "libssl3@",
                "bad query \"libssl3@\": nothing after '@'; add a constraint such as \"<1.0\" or remove the '@'",
            ),
            (
                "libssl3@ ",
                "bad query \"libssl3@ \": nothing after '@'; add a constraint such as \"<1.0\" or remove the '@'",
            ),
            (
                "libssl3:amd64",
                "bad package name \"libssl3:amd64\": character ':' at position 8 is not allowed; a package name has only letters, digits, '+', '-', '.', '_', '~', '/' and a leading '@' (an npm scope); use a purl for anything else",
            ),
            (
                "lib ssl",
                "bad package name \"lib ssl\": character ' ' at position 4 is not allowed; a package name has only letters, digits, '+', '-', '.', '_', '~', '/' and a leading '@' (an npm scope); use a purl for anything else",
            ),
            (
                "-foo",
                "bad package name \"-foo\": a package name must start with a letter or a digit",
            ),
            ("foo@<1@2", "bad query \"foo@<1@2\": more than one '@'"),
            (
                "libssl3@>=1.2,<<<1.3",
                "bad constraint \">=1.2,<<<1.3\": part 2 \"<<<1.3\" has an unknown operator \"<<<\"",
            ),
        ];
        for (spec, want) in bad {
            match parse_query(spec) {
                Ok(q) => panic!("{spec:?} was accepted as {q:?}"),
                Err(e) => assert_eq!(e.to_string(), want, "{spec:?}"),
            }
        }
    }

    /// A tiny xorshift64 generator, so the fuzz test needs no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_string(rng: &mut XorShift) -> String {
        const ALPHABET: &[u8] = b"0123456789~:-.+<>=!,@ abzAZ/\t\xc3\xa9\xff\x00";
        let len = rng.below(24);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(4) == 0 {
                    (rng.next() & 0xff) as u8
                } else {
                    ALPHABET[rng.below(ALPHABET.len())]
                }
            })
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn random_input_does_not_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let a = random_string(&mut rng);
            let b = random_string(&mut rng);
            assert_eq!(dpkg_cmp(&a, &a), Ordering::Equal, "{a:?}");
            assert_eq!(
                dpkg_cmp(&a, &b),
                dpkg_cmp(&b, &a).reverse(),
                "{a:?} vs {b:?}"
            );
            let _ = validate_dpkg_version(&a);
            if let Ok(c) = Constraint::parse(&a) {
                let _ = c.matches(&b);
                assert_eq!(Constraint::parse(&c.to_string()).as_ref(), Ok(&c), "{a:?}");
            }
            let _ = parse_query(&a);
            let _ = parse_query(&format!("pkg@{a}"));
        }
    }
}

/// Helpers shared by the tests of this module and its submodules.
#[cfg(test)]
mod test_support {
    use std::cmp::Ordering;

    /// One line of a vector file: `A OP B`.
    pub(super) struct Vector {
        /// The 1-based line number.
        pub line: usize,
        /// The line, trimmed.
        pub text: String,
        pub a: String,
        pub want: Ordering,
        pub b: String,
    }

    /// Reads a file under testdata/version-vectors. Blank lines and lines starting with `#`
    /// or `//` are comments (the upstream files use both).
    pub(super) fn load_vectors(file: &str) -> Vec<Vector> {
        let path = format!(
            "{}/../testdata/version-vectors/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read vector file {path}: {e}"));
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [a, op, b] = fields[..] else {
                panic!("{path}:{}: expected `A OP B`, got {line:?}", i + 1);
            };
            let want = match op {
                "<" => Ordering::Less,
                "=" => Ordering::Equal,
                ">" => Ordering::Greater,
                _ => panic!("{path}:{}: unknown operator {op:?}", i + 1),
            };
            out.push(Vector {
                line: i + 1,
                text: line.to_owned(),
                a: a.to_owned(),
                want,
                b: b.to_owned(),
            });
        }
        out
    }

    /// The distinct versions named in a vector file, in order of first appearance.
    pub(super) fn vector_versions(file: &str) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for v in load_vectors(file) {
            for s in [v.a, v.b] {
                if seen.insert(s.clone()) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// A vector line whose expectation this crate deliberately does not meet, with the answer
    /// it gives instead and why. Overrides are matched by the exact (trimmed) line text.
    pub(super) struct Override {
        pub line: &'static str,
        pub got: Ordering,
        pub reason: &'static str,
    }

    /// Checks every vector of a file with `cmp` (both ways round) and returns how many were
    /// checked. Lines listed in `overrides` must give the override's answer instead, and
    /// every override must match a line whose expectation differs from it.
    pub(super) fn check_vector_file(
        file: &str,
        cmp: fn(&str, &str) -> Ordering,
        overrides: &[Override],
    ) -> usize {
        let vectors = load_vectors(file);
        let mut used = vec![false; overrides.len()];
        let mut failures = Vec::new();
        for v in &vectors {
            let got = cmp(&v.a, &v.b);
            let want = match overrides.iter().position(|o| o.line == v.text) {
                Some(k) => {
                    used[k] = true;
                    let o = &overrides[k];
                    assert!(!o.reason.is_empty(), "override {:?} has no reason", o.line);
                    if o.got == v.want {
                        failures.push(format!(
                            "{file}:{}: override for {:?} agrees with the file; remove it",
                            v.line, v.text
                        ));
                    }
                    o.got
                }
                None => v.want,
            };
            if got != want {
                failures.push(format!(
                    "{file}:{}: {} vs {}: want {want:?}, got {got:?}",
                    v.line, v.a, v.b
                ));
            }
            let back = cmp(&v.b, &v.a);
            if back != got.reverse() {
                failures.push(format!(
                    "{file}:{}: antisymmetry: {} vs {} is {got:?} but {} vs {} is {back:?}",
                    v.line, v.a, v.b, v.b, v.a
                ));
            }
        }
        for (o, used) in overrides.iter().zip(used) {
            if !used {
                failures.push(format!("{file}: override {:?} matches no line", o.line));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        vectors.len()
    }

    /// A tiny xorshift64 generator, so the tests need no dependency.
    pub(super) struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed | 1)
        }

        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// A random short string, mostly from `alphabet`, sometimes any byte (made valid UTF-8).
    pub(super) fn random_version(rng: &mut Rng, alphabet: &[u8]) -> String {
        let len = rng.below(24);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(8) == 0 {
                    (rng.next() & 0xff) as u8
                } else {
                    alphabet[rng.below(alphabet.len())]
                }
            })
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A copy of `s` with a few random bytes replaced, inserted or deleted.
    pub(super) fn mutate(rng: &mut Rng, s: &str, alphabet: &[u8]) -> String {
        let mut bytes = s.as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            let pick = |rng: &mut Rng| {
                if rng.below(4) == 0 {
                    (rng.next() & 0xff) as u8
                } else {
                    alphabet[rng.below(alphabet.len())]
                }
            };
            let at = rng.below(bytes.len() + 1);
            match rng.below(3) {
                0 if at < bytes.len() => bytes[at] = pick(rng),
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, pick(rng)),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod ecosystem_tests {
    use super::test_support::{Rng, load_vectors, mutate, random_version, vector_versions};
    use super::*;
    use Ordering::{Equal, Greater, Less};
    use std::time::Duration;

    /// Each ecosystem with the vector files for it.
    const FILES: &[(Order, &[&str])] = &[
        (
            Order::Dpkg,
            &["debian-versions.txt", "debian-versions-generated.txt"],
        ),
        (
            Order::Pep440,
            &["pypi-versions.txt", "pypi-versions-generated.txt"],
        ),
        (Order::SemVer, &["semver-versions.txt"]),
        (
            Order::Maven,
            &["maven-versions.txt", "maven-versions-generated.txt"],
        ),
        (Order::Rpm, &["redhat-versions.txt"]),
        (
            Order::Apk,
            &["alpine-versions.txt", "alpine-versions-generated.txt"],
        ),
    ];

    const ALL: [Order; 6] = [
        Order::Dpkg,
        Order::Pep440,
        Order::SemVer,
        Order::Maven,
        Order::Rpm,
        Order::Apk,
    ];

    #[test]
    fn osv_names() {
        let cases = [
            ("PyPI", Some(Order::Pep440)),
            ("npm", Some(Order::SemVer)),
            ("crates.io", Some(Order::SemVer)),
            ("Go", Some(Order::SemVer)),
            ("Maven", Some(Order::Maven)),
            ("Debian", Some(Order::Dpkg)),
            ("Debian:12", Some(Order::Dpkg)),
            ("Ubuntu:22.04:LTS", Some(Order::Dpkg)),
            ("Ubuntu:Pro:18.04:LTS", Some(Order::Dpkg)),
            ("Alpine", Some(Order::Apk)),
            ("Alpine:v3.18", Some(Order::Apk)),
            ("Wolfi", Some(Order::Apk)),
            ("Red Hat", Some(Order::Rpm)),
            ("Red Hat:enterprise_linux:9::appstream", Some(Order::Rpm)),
            ("Rocky Linux:9", Some(Order::Rpm)),
            ("AlmaLinux:8", Some(Order::Rpm)),
            ("openSUSE:Leap 15.5", Some(Order::Rpm)),
            ("SUSE:Linux Enterprise Server 15 SP5", Some(Order::Rpm)),
            ("NuGet", None),
            ("RubyGems", None),
            ("pypi", None),
            ("Debian12", None),
            ("", None),
            (":", None),
        ];
        for (name, want) in cases {
            assert_eq!(crate::ecosystem::osv_order(name), want, "{name:?}");
        }
    }

    #[test]
    fn dispatch() {
        let cases = [
            (Order::Dpkg, "1.0~rc1", "1.0", Less),
            (Order::Pep440, "1.0rc1", "1.0", Less),
            (Order::SemVer, "1.0.0-rc.1", "1.0.0", Less),
            (Order::Maven, "1.0-RC1", "1.0", Less),
            (Order::Rpm, "1.0~rc1", "1.0", Less),
            (Order::Apk, "1.0_rc1", "1.0", Less),
            // Where the schemes disagree.
            (Order::Dpkg, "1.0a", "1.0", Greater),
            (Order::Pep440, "1.0a", "1.0", Less),
            (Order::Maven, "1.0-1", "1.0.1", Less),
            (Order::SemVer, "1.0.0-1", "1.0.0", Less),
            (Order::Pep440, "1.0-1", "1.0", Greater),
        ];
        for (eco, a, b, want) in cases {
            assert_eq!(eco.compare(a, b), want, "{eco:?}: {a} vs {b}");
        }
    }

    /// Checks that three versions are ordered consistently: reflexive, antisymmetric and, when
    /// `transitive` is set, transitive.
    fn check_triple(eco: Order, t: [&str; 3], transitive: bool, failures: &mut Vec<String>) {
        let m: [[Ordering; 3]; 3] =
            std::array::from_fn(|i| std::array::from_fn(|j| eco.compare(t[i], t[j])));
        for x in 0..3 {
            if m[x][x] != Equal {
                failures.push(format!("{eco:?}: {:?} is not equal to itself", t[x]));
            }
            for y in 0..3 {
                if m[x][y] != m[y][x].reverse() {
                    failures.push(format!(
                        "{eco:?}: antisymmetry fails for {:?}, {:?}",
                        t[x], t[y]
                    ));
                }
                for z in (0..3).filter(|_| transitive) {
                    let (xy, yz, xz) = (m[x][y], m[y][z], m[x][z]);
                    // x <= y <= z implies x <= z, strictly unless both steps are equal.
                    if xy != Greater && yz != Greater {
                        let want = if xy == Equal && yz == Equal {
                            Equal
                        } else {
                            Less
                        };
                        if xz != want {
                            failures.push(format!(
                                "{eco:?}: {:?} {xy:?} {:?} and {:?} {yz:?} {:?}, but {:?} {xz:?} {:?}",
                                t[x], t[y], t[y], t[z], t[x], t[z]
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Versions from the vector files, in random triples: mostly neighbours in a file (the
    /// generated files list each package's versions in order, so neighbours are close calls)
    /// and some drawn from anywhere.
    #[test]
    fn vector_versions_are_totally_ordered() {
        let mut rng = Rng::new(0x7a1e_5eed);
        let mut failures = Vec::new();
        let mut checked = 0;
        for (eco, files) in FILES {
            let mut versions = Vec::new();
            for file in *files {
                versions.extend(vector_versions(file));
            }
            let n = versions.len();
            for _ in 0..20_000 {
                let t = if rng.below(4) == 0 {
                    [rng.below(n), rng.below(n), rng.below(n)]
                } else {
                    let base = rng.below(n);
                    let near = |rng: &mut Rng| (base + rng.below(8)).min(n - 1);
                    [base, near(&mut rng), near(&mut rng)]
                };
                check_triple(
                    *eco,
                    [&versions[t[0]], &versions[t[1]], &versions[t[2]]],
                    true,
                    &mut failures,
                );
                checked += 1;
            }
        }
        assert!(checked >= 100_000);
        failures.dedup();
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// Random bytes, and mutations of real versions, never panic and are ordered consistently.
    ///
    /// Maven is checked for antisymmetry only: `ComparableVersion` itself is not transitive on
    /// some odd strings (see the `maven` module), and this crate keeps its answers. Real Maven
    /// versions are checked for transitivity in `vector_versions_are_totally_ordered`.
    #[test]
    fn random_and_mutated_input() {
        const ALPHABET: &[u8] = b"0123456789.-_+~^:!vVrRaAbBcpPz \t\xc3\xa9\xff";
        let mut rng = Rng::new(0xf022_1234);
        let mut failures = Vec::new();
        for (eco, files) in FILES {
            let transitive = *eco != Order::Maven;
            let real = load_vectors(files[0]);
            for _ in 0..5_000 {
                let a = random_version(&mut rng, ALPHABET);
                let b = random_version(&mut rng, ALPHABET);
                let v = &real[rng.below(real.len())];
                let c = mutate(&mut rng, &v.a, ALPHABET);
                check_triple(*eco, [&a, &b, &c], transitive, &mut failures);
                let d = mutate(&mut rng, &v.b, ALPHABET);
                check_triple(*eco, [&v.a, &v.b, &d], transitive, &mut failures);
            }
        }
        failures.dedup();
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// CPU time of this thread: unlike the wall clock, not stretched by
    /// the other tests sharing the machine's cores.
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid, writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// Huge inputs: 1 MiB digit runs compare by value without overflow, and long strings of
    /// separators or components take linear time (about 10 s of CPU in a debug build; a
    /// quadratic step over 1 MiB would take hours, so the bound is loose and counts CPU,
    /// not wall-clock time, which CI's parallel tests stretch).
    #[test]
    fn huge_inputs() {
        const MIB: usize = 1 << 20;
        let nines = "9".repeat(MIB);
        let mut bigger = "1".to_owned();
        bigger.push_str(&"0".repeat(MIB));
        let mut nines_then_8 = "9".repeat(MIB - 1);
        nines_then_8.push('8');
        let zero_padded = format!("{}{}", "0".repeat(MIB), "7");
        let dotted = "1.".repeat(MIB / 2) + "1";
        let dotted_more = "1.".repeat(MIB / 2) + "2";
        let dashes = "-".repeat(MIB);
        let mixed = "a1".repeat(MIB / 2);
        let start = thread_cpu();
        for eco in ALL {
            assert_eq!(eco.compare(&nines, &bigger), Less, "{eco:?}");
            assert_eq!(eco.compare(&bigger, &nines), Greater, "{eco:?}");
            assert_eq!(eco.compare(&nines_then_8, &nines), Less, "{eco:?}");
            assert_eq!(eco.compare(&nines, &nines), Equal, "{eco:?}");
            assert_eq!(eco.compare(&zero_padded, "7"), Equal, "{eco:?}");
            assert_eq!(eco.compare(&zero_padded, "8"), Less, "{eco:?}");
            assert_eq!(
                eco.compare(&format!("1.{nines}"), "1.1"),
                Greater,
                "{eco:?}"
            );
            assert_eq!(eco.compare(&dotted, &dotted_more), Less, "{eco:?}");
            for s in [&dashes, &mixed] {
                assert_eq!(eco.compare(s, s), Equal, "{eco:?}");
                let _ = eco.compare(s, &nines);
            }
        }
        let elapsed = thread_cpu() - start;
        assert!(
            elapsed < Duration::from_secs(60),
            "huge inputs took {elapsed:?} of CPU"
        );
    }
}
