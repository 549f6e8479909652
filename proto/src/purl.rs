//! Package URLs (purl, <https://github.com/package-url/purl-spec>): the
//! `pkg:type/namespace/name@version?qualifiers#subpath` strings that name a
//! package across ecosystems. The agent builds them for what it finds
//! (`pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64`,
//! `pkg:pypi/cryptography@38.0.4`); the CLI and the collector parse the ones
//! a responder types.
//!
//! A [`Purl`] always holds the canonical, percent-decoded components, so two
//! purls for the same package compare equal and [`Display`](fmt::Display)
//! prints the canonical string, which [`Purl::parse`] reads back to an equal
//! value. Canonical means, following the specification:
//!
//! * the scheme and type are lower case, and `pkg://` is read as `pkg:`;
//! * components are percent-encoded except for ASCII letters and digits,
//!   `.`, `-`, `_`, `~` and `:` (so a Debian epoch stays `1:2.3-4` while `+`
//!   becomes `%2B`, and an npm scope's `@` becomes `%40`); qualifier values
//!   also keep `/` (`repository_url=repo.spring.io/release`);
//! * qualifier keys are lower case and sorted, and qualifiers with an empty
//!   value are dropped;
//! * empty namespace segments and empty, `.` and `..` subpath segments are
//!   dropped;
//! * the type-specific rules of the purl-spec type definitions are applied:
//!   `pypi` names are normalized as PEP 503 does (`My.PyPI_Package` →
//!   `my-pypi-package`); `alpm`, `apk`, `bitbucket`, `composer`, `deb`,
//!   `github`, `gitlab`, `hex`, `npm` and `qpkg` namespaces and names are
//!   lower case, and so are `bitnami` names and `rpm` namespaces (an `rpm`
//!   name is case-sensitive).
//!
//! Deliberately lenient where the specification's own test suite disagrees
//! with itself: an unencoded `@` at the start of a path segment is read as
//! an npm scope (`pkg:npm/@babel/core`), `+` is read literally (never as a
//! space), and `golang` paths keep their case because Go module paths are
//! case-sensitive (`github.com/Azure/...`); the specification only warns
//! about them. Surrounding whitespace is trimmed; whitespace or control
//! characters inside are an error rather than a guess.
//!
//! The parser is linear and bounded: input longer than [`MAX_PURL_LEN`] is
//! rejected before any work, and no purl whose canonical form is longer can
//! be built.

use std::fmt;
use std::str::FromStr;

/// The longest purl accepted, in bytes, both as parser input and as the
/// canonical form of a built purl. Real purls are well under 1 KiB; the
/// limit keeps a hostile request cheap.
pub const MAX_PURL_LEN: usize = 16 * 1024;

/// A parsed or built Package URL, in canonical form (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Purl {
    ty: String,
    namespace: Option<String>,
    name: String,
    version: Option<String>,
    qualifiers: Vec<(String, String)>,
    subpath: Option<String>,
}

/// Why a string is not a valid purl, or why components do not make one.
///
/// Messages name the problem and echo at most a short prefix of the
/// offending text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurlError {
    /// The input, or the canonical form of a built purl, is longer than
    /// [`MAX_PURL_LEN`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The string does not start with the `pkg:` scheme.
    MissingScheme,
    /// A whitespace or control character appears unencoded.
    Unencoded {
        /// The character.
        ch: char,
    },
    /// Nothing between `pkg:` and the first `/`.
    MissingType,
    /// The type has a character other than ASCII letters, digits, `.`, `+`
    /// and `-`, or does not start with a letter.
    InvalidType {
        /// The type as given (shortened).
        ty: String,
    },
    /// The name is empty or absent.
    MissingName,
    /// An `@` is followed by nothing.
    EmptyVersion,
    /// A `%` is not followed by two hex digits.
    BadPercentEncoding {
        /// The component: "namespace", "name", "version", "qualifier
        /// value" or "subpath".
        component: &'static str,
    },
    /// The percent-decoded bytes are not UTF-8.
    NotUtf8 {
        /// The component, as in [`PurlError::BadPercentEncoding`].
        component: &'static str,
    },
    /// A namespace or subpath segment contains an encoded `/` (`%2F`).
    SlashInSegment {
        /// "namespace" or "subpath".
        component: &'static str,
    },
    /// A qualifier key has a character other than ASCII letters, digits,
    /// `.`, `-` and `_`, or does not start with a letter.
    InvalidQualifierKey {
        /// The key as given (shortened).
        key: String,
    },
    /// Two qualifiers have the same key.
    DuplicateQualifier {
        /// The key, lower case (shortened).
        key: String,
    },
    /// A qualifier has no `=`.
    QualifierWithoutValue {
        /// The key as given (shortened).
        key: String,
    },
}

impl fmt::Display for PurlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len } => write!(
                f,
                "purl is {len} bytes long, more than the {MAX_PURL_LEN} allowed"
            ),
            Self::MissingScheme => write!(f, "a purl must start with `pkg:`"),
            Self::Unencoded { ch } => {
                write!(f, "character {ch:?} must be percent-encoded in a purl")
            }
            Self::MissingType => write!(f, "missing package type after `pkg:`"),
            Self::InvalidType { ty } => write!(
                f,
                "invalid package type `{ty}`: a type is ASCII letters, digits, `.`, `+` and `-`, starting with a letter"
            ),
            Self::MissingName => write!(f, "missing package name"),
            Self::EmptyVersion => write!(f, "empty version after `@`"),
            Self::BadPercentEncoding { component } => write!(
                f,
                "invalid percent-encoding in the {component}: `%` must be followed by two hex digits"
            ),
            Self::NotUtf8 { component } => {
                write!(f, "the {component} is not UTF-8 once percent-decoded")
            }
            Self::SlashInSegment { component } => {
                write!(f, "a {component} segment contains an encoded `/` (%2F)")
            }
            Self::InvalidQualifierKey { key } => write!(
                f,
                "invalid qualifier key `{key}`: a key is ASCII letters, digits, `.`, `-` and `_`, starting with a letter"
            ),
            Self::DuplicateQualifier { key } => {
                write!(f, "qualifier `{key}` appears more than once")
            }
            Self::QualifierWithoutValue { key } => {
                write!(f, "qualifier `{key}` has no `=value`")
            }
        }
    }
}

impl std::error::Error for PurlError {}

/// At most a short prefix of `s`, for error messages.
fn short(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

impl Purl {
    /// Builds a purl from decoded components, validating them and bringing
    /// them to canonical form (see the module docs). Empty strings count as
    /// absent for the namespace, version and subpath, and a qualifier with
    /// an empty value is dropped.
    pub fn new(
        ty: &str,
        namespace: Option<&str>,
        name: &str,
        version: Option<&str>,
        qualifiers: &[(&str, &str)],
        subpath: Option<&str>,
    ) -> Result<Purl, PurlError> {
        let ty = valid_type(ty)?;
        let namespace = namespace
            .map(|ns| join_segments(ns.split('/').filter(|s| !s.is_empty())))
            .filter(|ns| !ns.is_empty());
        let name = name.trim_matches('/');
        if name.is_empty() {
            return Err(PurlError::MissingName);
        }
        let mut quals = Vec::with_capacity(qualifiers.len());
        for &(key, value) in qualifiers {
            let key = valid_key(key)?;
            if !value.is_empty() {
                quals.push((key, value.to_owned()));
            }
        }
        quals.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = quals.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(PurlError::DuplicateQualifier {
                key: short(&w[0].0),
            });
        }
        let subpath = subpath
            .map(|s| join_segments(s.split('/').filter(|seg| !matches!(*seg, "" | "." | ".."))))
            .filter(|s| !s.is_empty());
        let mut purl = Purl {
            ty,
            namespace,
            name: name.to_owned(),
            version: version.filter(|v| !v.is_empty()).map(str::to_owned),
            qualifiers: quals,
            subpath,
        };
        purl.normalize_for_type();
        let len = purl.to_string().len();
        if len > MAX_PURL_LEN {
            return Err(PurlError::TooLong { len });
        }
        Ok(purl)
    }

    /// Parses a purl string. Percent-escapes are decoded; the result is in
    /// canonical form, so `Purl::parse(s)?.to_string()` is the canonical
    /// spelling of `s`. Leading and trailing whitespace is ignored.
    pub fn parse(input: &str) -> Result<Purl, PurlError> {
        let s = input.trim();
        if s.len() > MAX_PURL_LEN {
            return Err(PurlError::TooLong { len: s.len() });
        }
        if let Some(ch) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(PurlError::Unencoded { ch });
        }
        // The order of the splits is the specification's: subpath, then
        // qualifiers, from the right; then scheme and type from the left;
        // then version, name and namespace from the right.
        let (rest, raw_subpath) = match s.rsplit_once('#') {
            Some((rest, sub)) => (rest, Some(sub)),
            None => (s, None),
        };
        let (rest, raw_qualifiers) = match rest.rsplit_once('?') {
            Some((rest, q)) => (rest, Some(q)),
            None => (rest, None),
        };
        let (scheme, rest) = rest.split_once(':').ok_or(PurlError::MissingScheme)?;
        if !scheme.eq_ignore_ascii_case("pkg") {
            return Err(PurlError::MissingScheme);
        }
        let rest = rest.trim_start_matches('/');
        let (ty, rest) = match rest.split_once('/') {
            Some(split) => split,
            None => {
                // No name at all: report the type if it is the problem.
                valid_type(rest)?;
                return Err(PurlError::MissingName);
            }
        };
        // The version follows the last `@` of the last path segment: an `@`
        // that starts the segment is an npm scope, an `@` in an earlier
        // segment cannot be a version separator.
        let seg_start = rest.rfind('/').map_or(0, |i| i + 1);
        let (rest, version) = match rest[seg_start..].rfind('@') {
            Some(at) if at > 0 || seg_start == 0 => {
                let at = seg_start + at;
                let raw = &rest[at + 1..];
                if raw.is_empty() {
                    return Err(PurlError::EmptyVersion);
                }
                (&rest[..at], Some(decode(raw, "version")?))
            }
            _ => (rest, None),
        };
        let rest = rest.trim_end_matches('/');
        let (raw_namespace, raw_name) = match rest.rsplit_once('/') {
            Some((ns, name)) => (ns, name),
            None => ("", rest),
        };
        let name = decode(raw_name, "name")?;
        let namespace = decode_segments(raw_namespace, "namespace")?;

        let mut qualifiers = Vec::new();
        for pair in raw_qualifiers.unwrap_or("").split('&') {
            if pair.is_empty() {
                continue;
            }
            let Some((key, value)) = pair.split_once('=') else {
                return Err(PurlError::QualifierWithoutValue { key: short(pair) });
            };
            qualifiers.push((key, decode(value, "qualifier value")?));
        }
        let qualifiers: Vec<(&str, &str)> =
            qualifiers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let subpath = decode_segments(raw_subpath.unwrap_or(""), "subpath")?;

        Purl::new(
            ty,
            Some(&namespace),
            &name,
            version.as_deref(),
            &qualifiers,
            Some(&subpath),
        )
    }

    /// `pkg:pypi/<name>@<version>`, the name normalized as PEP 503 does
    /// (`PyYAML` → `pyyaml`, `dbus_python` → `dbus-python`).
    pub fn pypi(name: &str, version: &str) -> Result<Purl, PurlError> {
        Purl::new("pypi", None, name, Some(version), &[], None)
    }

    /// `pkg:npm/<name>@<version>`; a scoped name `@scope/pkg` puts the scope
    /// in the namespace (`pkg:npm/%40scope/pkg@1.0.0`). Lower case.
    pub fn npm(name: &str, version: &str) -> Result<Purl, PurlError> {
        let (namespace, name) = match name.split_once('/') {
            Some((scope, name)) if scope.starts_with('@') => (Some(scope), name),
            _ => (None, name),
        };
        Purl::new("npm", namespace, name, Some(version), &[], None)
    }

    /// `pkg:maven/<group>/<artifact>@<version>`.
    pub fn maven(group: &str, artifact: &str, version: &str) -> Result<Purl, PurlError> {
        Purl::new("maven", Some(group), artifact, Some(version), &[], None)
    }

    /// `pkg:golang/<module path>@<version>`: the last path segment is the
    /// name and the segments before it the namespace
    /// (`google.golang.org/genproto` → namespace `google.golang.org`, name
    /// `genproto`). Case is kept.
    pub fn golang(module_path: &str, version: &str) -> Result<Purl, PurlError> {
        let path = module_path.trim_matches('/');
        let (namespace, name) = match path.rsplit_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, path),
        };
        Purl::new("golang", namespace, name, Some(version), &[], None)
    }

    /// `pkg:cargo/<name>@<version>`.
    pub fn cargo(name: &str, version: &str) -> Result<Purl, PurlError> {
        Purl::new("cargo", None, name, Some(version), &[], None)
    }

    /// `pkg:deb/<distro>/<name>@<version>?arch=<arch>&distro=<qualifier>`,
    /// e.g. `pkg:deb/debian/curl@7.50.3-1?arch=i386&distro=jessie`. The
    /// version is the full Debian version, epoch included
    /// (`1:2.3-4%2Bdeb12u1`). An empty `arch` is left out.
    pub fn deb(
        distro: &str,
        name: &str,
        version: &str,
        arch: &str,
        distro_qualifier: Option<&str>,
    ) -> Result<Purl, PurlError> {
        let quals = [("arch", arch), ("distro", distro_qualifier.unwrap_or(""))];
        Purl::new("deb", Some(distro), name, Some(version), &quals, None)
    }

    /// `pkg:rpm/<vendor>/<name>@<version>?arch=<arch>&distro=<qualifier>`,
    /// e.g. `pkg:rpm/fedora/curl@7.50.3-1.fc25?arch=i386&distro=fedora-25`.
    /// As the rpm type definition asks, an epoch prefix of the version
    /// (`1:4.22.10-1.el6`) goes into the `epoch` qualifier instead.
    pub fn rpm(
        vendor: &str,
        name: &str,
        version: &str,
        arch: &str,
        distro_qualifier: Option<&str>,
    ) -> Result<Purl, PurlError> {
        let (epoch, version) = match version.split_once(':') {
            Some((e, v)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => (e, v),
            _ => ("", version),
        };
        let quals = [
            ("arch", arch),
            ("distro", distro_qualifier.unwrap_or("")),
            ("epoch", epoch),
        ];
        Purl::new("rpm", Some(vendor), name, Some(version), &quals, None)
    }

    /// `pkg:apk/<vendor>/<name>@<version>?arch=<arch>&distro=<qualifier>`,
    /// e.g. `pkg:apk/alpine/curl@7.83.0-r0?arch=x86`.
    pub fn apk(
        vendor: &str,
        name: &str,
        version: &str,
        arch: &str,
        distro_qualifier: Option<&str>,
    ) -> Result<Purl, PurlError> {
        let quals = [("arch", arch), ("distro", distro_qualifier.unwrap_or(""))];
        Purl::new("apk", Some(vendor), name, Some(version), &quals, None)
    }

    /// The package type, lower case, e.g. `deb`.
    pub fn ty(&self) -> &str {
        &self.ty
    }

    /// The namespace, decoded, with `/` between segments, e.g. `@angular` or
    /// `github.com/gorilla`.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The name, decoded.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version, decoded.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The qualifiers, decoded, sorted by key, none with an empty value.
    pub fn qualifiers(&self) -> &[(String, String)] {
        &self.qualifiers
    }

    /// The value of one qualifier, e.g. `arch`.
    pub fn qualifier(&self, key: &str) -> Option<&str> {
        self.qualifiers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The subpath, decoded, with `/` between segments.
    pub fn subpath(&self) -> Option<&str> {
        self.subpath.as_deref()
    }

    /// Applies the type-specific rules listed in the module docs.
    fn normalize_for_type(&mut self) {
        let (lower_namespace, lower_name) = match self.ty.as_str() {
            "alpm" | "apk" | "bitbucket" | "composer" | "deb" | "github" | "gitlab" | "hex"
            | "npm" | "qpkg" => (true, true),
            "bitnami" => (false, true),
            "rpm" => (true, false),
            "pypi" => {
                self.name = pep503(&self.name);
                (false, false)
            }
            _ => (false, false),
        };
        if lower_namespace {
            self.namespace = self.namespace.as_deref().map(str::to_lowercase);
        }
        if lower_name {
            self.name = self.name.to_lowercase();
        }
    }
}

impl FromStr for Purl {
    type Err = PurlError;

    fn from_str(s: &str) -> Result<Purl, PurlError> {
        Purl::parse(s)
    }
}

impl fmt::Display for Purl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pkg:")?;
        f.write_str(&self.ty)?;
        f.write_str("/")?;
        if let Some(ns) = &self.namespace {
            encode_segments(f, ns)?;
            f.write_str("/")?;
        }
        encode(f, &self.name, false)?;
        if let Some(v) = &self.version {
            f.write_str("@")?;
            encode(f, v, false)?;
        }
        for (i, (k, v)) in self.qualifiers.iter().enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            f.write_str(k)?;
            f.write_str("=")?;
            encode(f, v, true)?;
        }
        if let Some(s) = &self.subpath {
            f.write_str("#")?;
            encode_segments(f, s)?;
        }
        Ok(())
    }
}

/// Lower-cases and validates a type.
fn valid_type(ty: &str) -> Result<String, PurlError> {
    if ty.is_empty() {
        return Err(PurlError::MissingType);
    }
    let ok = ty.as_bytes()[0].is_ascii_alphabetic()
        && ty
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'));
    if !ok {
        return Err(PurlError::InvalidType { ty: short(ty) });
    }
    Ok(ty.to_ascii_lowercase())
}

/// Lower-cases and validates a qualifier key.
fn valid_key(key: &str) -> Result<String, PurlError> {
    let ok = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        return Err(PurlError::InvalidQualifierKey { key: short(key) });
    }
    Ok(key.to_ascii_lowercase())
}

/// Joins segments with `/`.
fn join_segments<'a>(segments: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, seg) in segments.enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(seg);
    }
    out
}

/// PEP 503: lower case, runs of `-`, `_` and `.` become one `-`. How
/// PyPI, pip and Package URLs compare Python distribution names; the agent
/// and the collector use this one function.
pub fn pep503(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_run = false;
        }
    }
    out
}

/// Percent-decodes one component.
fn decode(s: &str, component: &'static str) -> Result<String, PurlError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| bytes.get(j).and_then(|&b| (b as char).to_digit(16));
            match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => return Err(PurlError::BadPercentEncoding { component }),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PurlError::NotUtf8 { component })
}

/// Splits on `/`, decodes each non-empty segment (rejecting a decoded `/`),
/// and joins them again. Subpath segments that decode to `.` or `..` are
/// left for [`Purl::new`] to drop.
fn decode_segments(s: &str, component: &'static str) -> Result<String, PurlError> {
    let mut segments = Vec::new();
    for raw in s.split('/').filter(|seg| !seg.is_empty()) {
        let seg = decode(raw, component)?;
        if seg.contains('/') {
            return Err(PurlError::SlashInSegment { component });
        }
        segments.push(seg);
    }
    Ok(join_segments(segments.iter().map(String::as_str)))
}

/// Writes `s` percent-encoded: everything but ASCII letters and digits,
/// `.-_~:` (and `/` when `keep_slash`) becomes `%XX` with upper-case hex.
fn encode(f: &mut fmt::Formatter<'_>, s: &str, keep_slash: bool) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'.' | b'-' | b'_' | b'~' | b':')
            || (keep_slash && b == b'/');
        if plain {
            continue;
        }
        // Bytes start..i are all plain, hence ASCII: when the run is not
        // empty, both ends are char boundaries (a byte after an ASCII byte
        // starts a char). An empty run may start inside a multi-byte char,
        // so it is not sliced at all.
        if start < i {
            f.write_str(&s[start..i])?;
        }
        let esc = [b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
        f.write_str(std::str::from_utf8(&esc).map_err(|_| fmt::Error)?)?;
        start = i + 1;
    }
    if start < bytes.len() {
        f.write_str(&s[start..])?;
    }
    Ok(())
}

/// Writes `/`-separated segments, each percent-encoded.
fn encode_segments(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for (i, seg) in s.split('/').enumerate() {
        if i > 0 {
            f.write_str("/")?;
        }
        encode(f, seg, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input`, checks that the canonical form is `canonical`, and
    /// that the canonical form parses back to the same purl.
    fn check(input: &str, canonical: &str) {
        let p = Purl::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(p.to_string(), canonical, "{input}");
        assert_eq!(Purl::parse(canonical), Ok(p), "{canonical}");
    }

    #[test]
    fn spec_roundtrips() {
        let same = |s: &str| check(s, s);
        same("pkg:maven/org.apache.commons/io@1.3.4");
        same("pkg:golang/google.golang.org/genproto#googleapis/api/annotations");
        same("pkg:golang/github.com/gorilla/context@234fd47e07d1004f0aed9c#api");
        same("pkg:npm/%40angular/animation@12.3.1");
        same("pkg:npm/foobar@12.3.1");
        same("pkg:npm/mypackage@12.4.5?vcs_url=git://host.com/path/to/repo.git%404345abcd34343");
        same("pkg:npm/foo@1.0.0#src/%F0%9F%98%83/file.js");
        same("pkg:npm/foo@1.0.0?vcs_url=https://a.com/b/c%F0%9F%98%83d.git");
        same("pkg:npm/foo.bar@1.2.3");
        same("pkg:npm/foo@1.2.3-%F0%9F%98%83");
        same("pkg:pypi/django@1.11.1?filename=Django-1.11.1-py2.py3-none-any.whl");
        same("pkg:pypi/django-allauth@12.23");
        same("pkg:generic/bitwarderl?checksum=sha1:ad9503c3e994a4f%2Csha256:41bf9088b3a1e6c1ef1d");
        same(
            "pkg:generic/openssl@1.1.10g?checksum=sha1:ad9503c3e994a4f%2Csha256:41bf9088b3a1e6c1ef1d",
        );
        same("pkg:deb/debian/curl@7.50.3-1?arch=i386&distro=jessie");
        same("pkg:deb/debian/dpkg@1.19.0.4?arch=amd64&distro=stretch");
        same("pkg:deb/ubuntu/dpkg@1.19.0.4?arch=amd64");
        same("pkg:deb/debian/attr@1:2.4.47-2?arch=source");
        same("pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64");
        same("pkg:rpm/fedora/curl@7.50.3-1.fc25?arch=i386&distro=fedora-25");
        same("pkg:apk/alpine/curl@7.83.0-r0?arch=x86");
        same("pkg:apk/alpine/apk@2.12.9-r3?arch=x86");
        same("pkg:nuget/EnterpriseLibrary.Common@6.0.1304");
        same("pkg:cargo/rand@0.7.2");
        same("pkg:gem/ruby-advisory-db-check@0.12.4");
        same("pkg:docker/cassandra@latest");
        same("pkg:golang/github.com/Azure/azure-sdk-for-go@v68.0.0%2Bincompatible");
        same("pkg:generic/name%20with%20spaces@1%2F2");
    }

    #[test]
    fn spec_normalizations() {
        check(
            "pkg:GOLANG/google.golang.org/genproto#/googleapis/api/annotations/",
            "pkg:golang/google.golang.org/genproto#googleapis/api/annotations",
        );
        check(
            "pkg:GOLANG/google.golang.org/genproto@abcdedf#/googleapis/api/annotations/",
            "pkg:golang/google.golang.org/genproto@abcdedf#googleapis/api/annotations",
        );
        check(
            "pkg:npm/@babel/core#/googleapis/api/annotations/",
            "pkg:npm/%40babel/core#googleapis/api/annotations",
        );
        check(
            "pkg:npm/core@2.0.1#/googleapis/api/annotations/",
            "pkg:npm/core@2.0.1#googleapis/api/annotations",
        );
        check("pkg:npm/LoDash@4.17.21", "pkg:npm/lodash@4.17.21");
        check(
            "pkg:npm/%40MyScope/MyPackage@1.0.0",
            "pkg:npm/%40myscope/mypackage@1.0.0",
        );
        check(
            "pkg:pypi/My.PyPI_.--._Package@1.11.1.dev1",
            "pkg:pypi/my-pypi-package@1.11.1.dev1",
        );
        check(
            "pkg:rpm/centerim@4.22.10-1.el6?arch=i686&epoch=1&distro=fedora-25",
            "pkg:rpm/centerim@4.22.10-1.el6?arch=i686&distro=fedora-25&epoch=1",
        );
        check("pkg:rpm/Fedora/Curl@1", "pkg:rpm/fedora/Curl@1");
        check(
            "pkg:docker/customer/dockerimage@sha256%3A244fd47e07d10?repository_url=gcr.io",
            "pkg:docker/customer/dockerimage@sha256:244fd47e07d10?repository_url=gcr.io",
        );
        check(
            "pkg:maven/org.apache.xmlgraphics/batik-anim@1.9.1?repositorY_url=repo.spring.io/release&classifier=sources",
            "pkg:maven/org.apache.xmlgraphics/batik-anim@1.9.1?classifier=sources&repository_url=repo.spring.io/release",
        );
        check(
            "pkg:maven/org.apache.xmlgraphics/batik-anim@1.9.1?repository_url=repo.spring.io%2Frelease",
            "pkg:maven/org.apache.xmlgraphics/batik-anim@1.9.1?repository_url=repo.spring.io/release",
        );
        check(
            "pkg:github/Package-URL/purl-spec@244fd47e07d1004f0aed9c",
            "pkg:github/package-url/purl-spec@244fd47e07d1004f0aed9c",
        );
        // `+` is literal (not a space) and is encoded in canonical form.
        check(
            "pkg:npm/foobar@1.2.3-alpha.1+build.456",
            "pkg:npm/foobar@1.2.3-alpha.1%2Bbuild.456",
        );
        check(
            "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64",
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64",
        );
        // Lower-case hex, encoded unreserved characters, `pkg://`, extra
        // slashes, empty qualifiers, `.` and `..` subpath segments, case.
        check("pkg:npm/%66oo@1%2e0", "pkg:npm/foo@1.0");
        check("PKG://npm//foo//", "pkg:npm/foo");
        check("pkg:generic/a//b///c@1", "pkg:generic/a/b/c@1");
        check("pkg:generic/foo?a=&b=1&&", "pkg:generic/foo?b=1");
        check("pkg:generic/foo?a=", "pkg:generic/foo");
        check("pkg:generic/foo#./a/../b/%2E%2E/", "pkg:generic/foo#a/b");
        check("pkg:generic/foo#", "pkg:generic/foo");
        check("pkg:generic/foo?", "pkg:generic/foo");
        check("pkg:generic/foo?k=a%3Db%26c", "pkg:generic/foo?k=a%3Db%26c");
        check(
            "pkg:generic/%E2%82%AC@%e2%82%ac",
            "pkg:generic/%E2%82%AC@%E2%82%AC",
        );
        check("pkg:generic/\u{20ac}", "pkg:generic/%E2%82%AC");
        check("pkg:generic/a%2Fb", "pkg:generic/a%2Fb");
        check("pkg:generic/a%40b@1", "pkg:generic/a%40b@1");
        check("pkg:generic/ns/n@v?q=1#s", "pkg:generic/ns/n@v?q=1#s");
        check("  pkg:npm/foo@1\n", "pkg:npm/foo@1");
        check("pkg:c++/x", "pkg:c++/x");
    }

    #[test]
    fn parsed_components() {
        let p = Purl::parse("pkg:npm/%40angular/animation@12.3.1").unwrap();
        assert_eq!(
            (p.ty(), p.namespace(), p.name(), p.version()),
            ("npm", Some("@angular"), "animation", Some("12.3.1"))
        );
        assert!(p.qualifiers().is_empty() && p.subpath().is_none());
        let p =
            Purl::parse("pkg:golang/google.golang.org/genproto@abcdedf#googleapis/api/annotations")
                .unwrap();
        assert_eq!(p.namespace(), Some("google.golang.org"));
        assert_eq!(p.name(), "genproto");
        assert_eq!(p.subpath(), Some("googleapis/api/annotations"));
        let p =
            Purl::parse("pkg:deb/debian/attr@1:2.4.47-2%2Bb1?distro=bookworm&arch=amd64").unwrap();
        assert_eq!(p.version(), Some("1:2.4.47-2+b1"));
        assert_eq!(p.qualifier("arch"), Some("amd64"));
        assert_eq!(p.qualifier("distro"), Some("bookworm"));
        assert_eq!(p.qualifier("epoch"), None);
        assert_eq!(
            p.qualifiers(),
            &[
                ("arch".to_owned(), "amd64".to_owned()),
                ("distro".to_owned(), "bookworm".to_owned())
            ]
        );
        let p = Purl::parse(
            "pkg:npm/mypackage@12.4.5?vcs_url=git://host.com/path/to/repo.git%404345abcd34343",
        )
        .unwrap();
        assert_eq!(
            p.qualifier("vcs_url"),
            Some("git://host.com/path/to/repo.git@4345abcd34343")
        );
        let p = Purl::parse("pkg:npm/foo@1.0.0#src/%F0%9F%98%83/file.js").unwrap();
        assert_eq!(p.subpath(), Some("src/\u{1f603}/file.js"));
        let p: Purl = "pkg:generic/a%2Fb".parse().unwrap();
        assert_eq!(p.name(), "a/b");
        assert_eq!(p.namespace(), None);
    }

    #[test]
    fn errors() {
        use PurlError::*;
        let cases: &[(&str, PurlError)] = &[
            ("EnterpriseLibrary.Common@6.0.1304", MissingScheme),
            ("", MissingScheme),
            ("npm/foo", MissingScheme),
            ("http://example.com/pkg", MissingScheme),
            ("pkg%3Amaven/org.apache.commons/io", MissingScheme),
            ("pkgs:npm/foo", MissingScheme),
            ("pkg:", MissingType),
            ("pkg://", MissingType),
            ("pkg:/foo", MissingName),
            ("pkg:npm", MissingName),
            ("pkg:npm/", MissingName),
            ("pkg:maven/@1.3.4", MissingName),
            ("pkg:generic/%2F", MissingName),
            ("pkg:npm/foobar@", EmptyVersion),
            (
                "pkg:EnterpriseLibrary.Common@6.0.1304",
                InvalidType {
                    ty: "EnterpriseLibrary.Common@6.0.1304".into(),
                },
            ),
            (
                "pkg:3nginx/nginx@0.8.9",
                InvalidType {
                    ty: "3nginx".into(),
                },
            ),
            (
                "pkg:nginx:a/nginx@0.8.9",
                InvalidType {
                    ty: "nginx:a".into(),
                },
            ),
            ("pkg:n%70m/foo", InvalidType { ty: "n%70m".into() }),
            ("pkg:n&g?inx/nginx@0.8.9", InvalidType { ty: "n&g".into() }),
            (
                "pkg:npm/myartifact@1.0.0?in%20production=true",
                InvalidQualifierKey {
                    key: "in%20production".into(),
                },
            ),
            ("pkg:npm/foo?1a=b", InvalidQualifierKey { key: "1a".into() }),
            ("pkg:npm/foo?=b", InvalidQualifierKey { key: "".into() }),
            (
                "pkg:npm/foo?a=1&a=2",
                DuplicateQualifier { key: "a".into() },
            ),
            (
                "pkg:npm/foo?A=1&a=2",
                DuplicateQualifier { key: "a".into() },
            ),
            (
                "pkg:npm/foo?flag",
                QualifierWithoutValue { key: "flag".into() },
            ),
            ("pkg:npm/foo%2", BadPercentEncoding { component: "name" }),
            ("pkg:npm/foo%zz", BadPercentEncoding { component: "name" }),
            (
                "pkg:npm/foo@1%",
                BadPercentEncoding {
                    component: "version",
                },
            ),
            (
                "pkg:a/b%x/c",
                BadPercentEncoding {
                    component: "namespace",
                },
            ),
            (
                "pkg:npm/foo?a=%g0",
                BadPercentEncoding {
                    component: "qualifier value",
                },
            ),
            (
                "pkg:npm/foo#%",
                BadPercentEncoding {
                    component: "subpath",
                },
            ),
            ("pkg:npm/foo%ff", NotUtf8 { component: "name" }),
            (
                "pkg:npm/foo@%C3",
                NotUtf8 {
                    component: "version",
                },
            ),
            (
                "pkg:generic/a%2Fb/c",
                SlashInSegment {
                    component: "namespace",
                },
            ),
            (
                "pkg:generic/c#a%2Fb",
                SlashInSegment {
                    component: "subpath",
                },
            ),
            ("pkg:npm/foo bar", Unencoded { ch: ' ' }),
            ("pkg:npm/foo\tbar", Unencoded { ch: '\t' }),
            ("pkg:npm/foo\0", Unencoded { ch: '\0' }),
            ("pkg:npm/a\u{a0}b", Unencoded { ch: '\u{a0}' }),
        ];
        for (input, want) in cases {
            let got = Purl::parse(input);
            assert_eq!(got.as_ref(), Err(want), "{input:?}");
            // Every message is one short line.
            let msg = want.to_string();
            assert!(
                !msg.is_empty() && msg.len() < 200 && !msg.contains('\n'),
                "{msg}"
            );
        }
        // Messages name the problem and shorten what they echo.
        let e = Purl::parse(&format!("pkg:{}/x", "t_".repeat(1000))).unwrap_err();
        assert!(
            e.to_string().starts_with("invalid package type `t_t_"),
            "{e}"
        );
        assert!(e.to_string().len() < 200, "{e}");
        assert_eq!(
            Purl::parse("pkg:npm/foobar@").unwrap_err().to_string(),
            "empty version after `@`"
        );
        let long = format!("pkg:generic/{}", "a".repeat(MAX_PURL_LEN));
        assert!(matches!(Purl::parse(&long), Err(TooLong { .. })));
        // Within the input limit, but too long once canonically encoded.
        let wide = format!("pkg:generic/{}", "\u{20ac}".repeat(MAX_PURL_LEN / 3 - 10));
        assert!(wide.len() <= MAX_PURL_LEN);
        assert!(matches!(Purl::parse(&wide), Err(TooLong { .. })));
    }

    #[test]
    fn builders() {
        let cases: Vec<(Result<Purl, PurlError>, &str)> = vec![
            (Purl::pypi("PyYAML", "6.0"), "pkg:pypi/pyyaml@6.0"),
            (
                Purl::pypi("dbus_python", "1.3.2"),
                "pkg:pypi/dbus-python@1.3.2",
            ),
            (
                Purl::pypi("lazr.restfulclient", "0.14.5"),
                "pkg:pypi/lazr-restfulclient@0.14.5",
            ),
            (
                Purl::pypi("My.PyPI_.--._Package", "1.11.1.dev1"),
                "pkg:pypi/my-pypi-package@1.11.1.dev1",
            ),
            (Purl::pypi("six", ""), "pkg:pypi/six"),
            (
                Purl::pypi("torch", "2.1.0+cpu"),
                "pkg:pypi/torch@2.1.0%2Bcpu",
            ),
            (
                Purl::npm("@angular/animation", "12.3.1"),
                "pkg:npm/%40angular/animation@12.3.1",
            ),
            (Purl::npm("lodash", "4.17.21"), "pkg:npm/lodash@4.17.21"),
            (Purl::npm("JSONStream", "1.3.5"), "pkg:npm/jsonstream@1.3.5"),
            (
                Purl::maven("org.apache.commons", "io", "1.3.4"),
                "pkg:maven/org.apache.commons/io@1.3.4",
            ),
            (
                Purl::golang("google.golang.org/genproto", ""),
                "pkg:golang/google.golang.org/genproto",
            ),
            (
                Purl::golang("github.com/gorilla/context", "234fd47e07d1004f0aed9c"),
                "pkg:golang/github.com/gorilla/context@234fd47e07d1004f0aed9c",
            ),
            (
                Purl::golang("github.com/Azure/azure-sdk-for-go", "v68.0.0+incompatible"),
                "pkg:golang/github.com/Azure/azure-sdk-for-go@v68.0.0%2Bincompatible",
            ),
            (
                Purl::golang("rsc.io/quote/v3", "v3.1.0"),
                "pkg:golang/rsc.io/quote/v3@v3.1.0",
            ),
            (
                Purl::golang("stdlib", "go1.22.1"),
                "pkg:golang/stdlib@go1.22.1",
            ),
            (Purl::cargo("rand", "0.7.2"), "pkg:cargo/rand@0.7.2"),
            (
                Purl::deb("debian", "curl", "7.50.3-1", "i386", Some("jessie")),
                "pkg:deb/debian/curl@7.50.3-1?arch=i386&distro=jessie",
            ),
            (
                Purl::deb(
                    "debian",
                    "libc6",
                    "2.36-9+deb12u4",
                    "amd64",
                    Some("debian-12"),
                ),
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12",
            ),
            (
                Purl::deb("Debian", "libstdc++6", "1:2.3-4+deb12u1", "", None),
                "pkg:deb/debian/libstdc%2B%2B6@1:2.3-4%2Bdeb12u1",
            ),
            (
                Purl::rpm("fedora", "curl", "7.50.3-1.fc25", "i386", Some("fedora-25")),
                "pkg:rpm/fedora/curl@7.50.3-1.fc25?arch=i386&distro=fedora-25",
            ),
            (
                Purl::rpm(
                    "fedora",
                    "centerim",
                    "1:4.22.10-1.el6",
                    "i686",
                    Some("fedora-25"),
                ),
                "pkg:rpm/fedora/centerim@4.22.10-1.el6?arch=i686&distro=fedora-25&epoch=1",
            ),
            (
                Purl::rpm("redhat", "x", "a:1", "", None),
                "pkg:rpm/redhat/x@a:1",
            ),
            (
                Purl::apk("alpine", "curl", "7.83.0-r0", "x86", None),
                "pkg:apk/alpine/curl@7.83.0-r0?arch=x86",
            ),
            (
                Purl::apk("alpine", "musl", "1.2.4-r2", "x86_64", Some("3.18.4")),
                "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=3.18.4",
            ),
            (
                Purl::new(
                    "Generic",
                    Some("/a//b/"),
                    "/n/",
                    Some(""),
                    &[("K", "v"), ("e", "")],
                    Some("./x/../y/"),
                ),
                "pkg:generic/a/b/n?k=v#x/y",
            ),
        ];
        for (built, want) in cases {
            let p = built.unwrap_or_else(|e| panic!("{want}: {e}"));
            assert_eq!(p.to_string(), want);
            assert_eq!(Purl::parse(want), Ok(p), "{want}");
        }
        assert_eq!(Purl::pypi("", "1"), Err(PurlError::MissingName));
        assert_eq!(Purl::npm("@scope/", "1"), Err(PurlError::MissingName));
        assert_eq!(Purl::golang("", "1"), Err(PurlError::MissingName));
        assert_eq!(
            Purl::deb("debian", "", "1", "amd64", None),
            Err(PurlError::MissingName)
        );
        assert!(matches!(
            Purl::new("3d", None, "x", None, &[], None),
            Err(PurlError::InvalidType { .. })
        ));
        assert!(matches!(
            Purl::new("t", None, "x", None, &[("a", "1"), ("A", "2")], None),
            Err(PurlError::DuplicateQualifier { .. })
        ));
        assert!(matches!(
            Purl::pypi(&"a".repeat(MAX_PURL_LEN), "1"),
            Err(PurlError::TooLong { .. })
        ));
    }

    // ---- Fuzz --------------------------------------------------------------

    /// A xorshift64* generator: deterministic, dependency-free, good enough to
    /// shake out panics.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    /// Characters that mean something to the parser, plus a few that must
    /// be encoded.
    const ALPHABET: &[char] = &[
        'p',
        'k',
        'g',
        ':',
        '/',
        '@',
        '?',
        '=',
        '&',
        '#',
        '%',
        '+',
        '-',
        '.',
        '_',
        '~',
        'a',
        'N',
        'P',
        'M',
        '0',
        '2',
        'F',
        'f',
        'e',
        'C',
        '3',
        ' ',
        '\u{e9}',
        '\u{1f603}',
        '\0',
    ];

    const FIXTURES: &[&str] = &[
        "pkg:npm/%40angular/animation@12.3.1?vcs_url=git://h/p.git%404345#a/b",
        "pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64&distro=debian-12",
        "pkg:golang/google.golang.org/genproto@abcdedf#googleapis/api/annotations",
        "pkg:pypi/My.PyPI_.--._Package@1.11.1.dev1",
        "pkg://maven/org.apache/io@1?repositorY_url=repo.spring.io/release&a=",
    ];

    fn random_string(rng: &mut Rng) -> String {
        let len = rng.below(80);
        (0..len)
            .map(|_| {
                if rng.below(8) == 0 {
                    char::from_u32(rng.next() as u32 % 0x11_0000).unwrap_or('x')
                } else {
                    ALPHABET[rng.below(ALPHABET.len())]
                }
            })
            .collect()
    }

    fn mutate(rng: &mut Rng, fixture: &str) -> String {
        let mut out: Vec<char> = fixture.chars().collect();
        for _ in 0..=rng.below(6) {
            let pos = rng.below(out.len() + 1);
            match rng.below(4) {
                0 if pos < out.len() => out[pos] = ALPHABET[rng.below(ALPHABET.len())],
                1 => out.insert(pos, ALPHABET[rng.below(ALPHABET.len())]),
                2 => {
                    let end = (pos + rng.below(8)).min(out.len());
                    out.drain(pos..end);
                }
                _ => out.truncate(pos),
            }
        }
        out.into_iter().collect()
    }

    /// Whatever parses has an ASCII canonical form that parses back to the
    /// same purl and is its own canonical form.
    fn check_canonical(p: &Purl) {
        let canonical = p.to_string();
        assert!(canonical.is_ascii(), "{canonical}");
        assert!(canonical.starts_with("pkg:"));
        assert!(canonical.len() <= MAX_PURL_LEN);
        let again = Purl::parse(&canonical).unwrap_or_else(|e| panic!("{canonical}: {e}"));
        assert_eq!(&again, p, "{canonical}");
        assert_eq!(again.to_string(), canonical);
    }

    #[test]
    fn fuzz_no_panics_and_roundtrips() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut parsed = 0;
        for i in 0..6000 {
            let input = if i % 2 == 0 {
                let mut s = random_string(&mut rng);
                if rng.below(2) == 0 {
                    s.insert_str(0, "pkg:t/");
                }
                s
            } else {
                let fixture = FIXTURES[rng.below(FIXTURES.len())];
                mutate(&mut rng, fixture)
            };
            if let Ok(p) = Purl::parse(&input) {
                check_canonical(&p);
                parsed += 1;
            }
            // The builders accept any strings and produce purls that
            // roundtrip, or an error.
            let a = random_string(&mut rng);
            let b = random_string(&mut rng);
            for p in [
                Purl::pypi(&a, &b),
                Purl::npm(&a, &b),
                Purl::maven(&a, &b, &a),
                Purl::golang(&a, &b),
                Purl::cargo(&a, &b),
                Purl::deb(&a, &b, &a, &b, Some(&a)),
                Purl::rpm(&a, &b, &b, &a, None),
                Purl::apk(&a, &b, &a, &b, Some(&b)),
                Purl::new(&a, Some(&b), &a, Some(&b), &[("k", &a)], Some(&b)),
            ]
            .into_iter()
            .flatten()
            {
                check_canonical(&p);
            }
        }
        // The fuzzing reached past the first checks often enough.
        assert!(parsed > 600, "{parsed}");
    }

    #[test]
    fn hostile_sizes() {
        let started = std::time::Instant::now();
        for unit in ["%", "%2", "@", "/", "?a=1&", "#/", ":", "\u{1f603}", "a"] {
            let input = format!("pkg:t/{}", unit.repeat(MAX_PURL_LEN / unit.len() - 7));
            let _ = Purl::parse(&input);
            let huge = unit.repeat((8 << 20) / unit.len());
            assert!(matches!(Purl::parse(&huge), Err(PurlError::TooLong { .. })));
        }
        // Many qualifiers, all distinct, within the limit.
        let quals: String = (0..1500).map(|i| format!("k{i}=v&")).collect();
        let p = Purl::parse(&format!("pkg:t/n?{quals}")).unwrap();
        assert_eq!(p.qualifiers().len(), 1500);
        check_canonical(&p);
        assert!(started.elapsed().as_secs() < 30);
    }
}
