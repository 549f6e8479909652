//! Maven coordinates from the files inside a jar: `pom.properties`, the
//! manifest, and the jars nested in a fat jar.
//!
//! Where the identity of a jar comes from, best first:
//!
//! * `META-INF/maven/<groupId>/<artifactId>/pom.properties`, written by
//!   Maven (and by Gradle's and the bundle plugin's Maven support). It is a
//!   Java `.properties` file with `groupId`, `artifactId` and `version`.
//!   Shaded ("uber") jars carry one per bundled artifact, so a jar can hold
//!   several; and some carry only their dependencies' (Debian's
//!   `guice-4.2.3.jar` holds only `cglib/cglib`'s), so the one that names the
//!   jar itself is chosen by the file name ([`pick_primary`]), never by
//!   position.
//! * `META-INF/MANIFEST.MF`: `Implementation-*` and OSGi `Bundle-*` headers.
//!   They do not carry a groupId as such, so [`manifest_coords`] is a
//!   documented guess, used only when no `pom.properties` names the jar.
//! * Fat jars nest whole jars: Spring Boot under `BOOT-INF/lib/` (stored, so
//!   the JVM can map them) and WARs under `WEB-INF/lib/` (usually
//!   deflated). [`nested_jar_names`] finds them; each is then read with
//!   [`super::zip::ZipBytes`] and inspected like a top-level jar.
//!
//! Quirks of the two text formats are described on [`parse_pom_properties`]
//! and [`parse_manifest`]. Both parsers run in linear time and allocate at
//! most a small multiple of their input; values are capped at
//! [`MAX_COORD_LEN`] and [`MAX_MANIFEST_VALUE_LEN`].

use super::zip::{CdEntry, ZipBytes};

/// Where the manifest lives (looked up exactly first, then ignoring ASCII
/// case, as the JVM's `JarFile` does).
pub const MANIFEST_PATH: &[u8] = b"META-INF/MANIFEST.MF";

/// Largest `pom.properties` read (the `max_out` to decompress it with).
/// Maven writes about 100 bytes.
pub const MAX_POM_PROPERTIES_LEN: usize = 64 << 10;

/// How much of a manifest is read (its main section is at the start; signed
/// jars list a digest for every class after it, 130 KB for Eclipse's ecj).
pub const MAX_MANIFEST_LEN: usize = 1 << 20;

/// Largest nested jar read into memory: the `max_out` for
/// [`super::zip::check_entry`] and [`super::zip::decode_entry`]. A stored
/// nested jar is its own data range (and [`ZipBytes::read`] borrows it); a
/// deflated one (WARs) has to be inflated whole.
pub const MAX_NESTED_JAR_LEN: usize = 64 << 20;

/// Most `pom.properties` paths returned for one jar. The shaded jars seen
/// carry up to 48.
pub const MAX_POM_FILES: usize = 1024;

/// Most nested jars returned for one fat jar.
pub const MAX_NESTED_JARS: usize = 4096;

/// Longest groupId, artifactId or version accepted, in bytes.
pub const MAX_COORD_LEN: usize = 256;

/// Longest manifest header value kept (longer values of the headers read
/// here are dropped; other headers are skipped without being stored).
pub const MAX_MANIFEST_VALUE_LEN: usize = 1024;

/// A Maven artifact's coordinates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MavenCoords {
    /// The groupId, e.g. `commons-io`.
    pub group_id: String,
    /// The artifactId, e.g. `commons-io`.
    pub artifact_id: String,
    /// The version, e.g. `2.11.0`.
    pub version: String,
}

/// Whether `s` is a valid Maven groupId or artifactId: Maven's own pattern
/// `[A-Za-z0-9_.-]+`, at most [`MAX_COORD_LEN`] bytes.
fn valid_id(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= MAX_COORD_LEN
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `s` is a usable version: non-empty, at most [`MAX_COORD_LEN`]
/// bytes, no whitespace or control characters, none of the characters Maven
/// bans from versions (`\ / : " < > | ? *`), and no unresolved `${...}`
/// property (left by builds that forgot to flatten their POM).
fn valid_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_COORD_LEN
        && !s.contains("${")
        && s.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !matches!(c, '\\' | '/' | ':' | '"' | '<' | '>' | '|' | '?' | '*')
        })
}

/// Builds coordinates after validating each part.
fn coords(group: &str, artifact: &str, version: &str) -> Option<MavenCoords> {
    (valid_id(group.as_bytes()) && valid_id(artifact.as_bytes()) && valid_version(version)).then(
        || MavenCoords {
            group_id: group.to_owned(),
            artifact_id: artifact.to_owned(),
            version: version.to_owned(),
        },
    )
}

/// Parses a `pom.properties` file into coordinates; `None` unless all of
/// `groupId`, `artifactId` and `version` are present and valid.
///
/// The file follows `java.util.Properties.load(InputStream)`:
///
/// * Bytes are ISO-8859-1; other characters come as `\uXXXX` escapes.
/// * Lines end with LF, CR or CRLF. A line whose first non-blank character
///   is `#` or `!` is a comment (and is never continued).
/// * A line ending in an odd number of backslashes continues on the next
///   line, whose leading blanks (space, tab, form feed) are dropped.
/// * The key ends at the first unescaped `=`, `:` or blank; blanks and one
///   `=` or `:` after it are skipped, and the rest is the value (trailing
///   blanks included, which is why values are trimmed here).
/// * Escapes: `\t`, `\n`, `\r`, `\f`, `\uXXXX`, and `\` before any other
///   character stands for that character. A line with a malformed `\u`
///   escape (which makes Java throw) is ignored.
/// * A repeated key replaces the earlier value.
pub fn parse_pom_properties(bytes: &[u8]) -> Option<MavenCoords> {
    let [group, artifact, version] = pom_values(bytes);
    coords(group?.trim(), artifact?.trim(), version?.trim())
}

/// The raw `groupId`, `artifactId` and `version` values of a properties
/// file, exactly as `java.util.Properties` would return them.
fn pom_values(bytes: &[u8]) -> [Option<String>; 3] {
    let mut values = [None, None, None];
    for line in logical_lines(bytes) {
        let Some((key, value)) = split_property(&line) else {
            continue;
        };
        let i = match key.as_str() {
            "groupId" => 0,
            "artifactId" => 1,
            "version" => 2,
            _ => continue,
        };
        values[i] = Some(value);
    }
    values
}

/// Whether `b` is a `.properties` blank.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\x0c')
}

/// Splits `.properties` input into logical lines: comments and blank lines
/// dropped, continuations joined (the joining backslash removed, the next
/// line's leading blanks skipped). Escapes are left for [`unescape`].
fn logical_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    // Whether we are at the start of a natural line, skipping blanks.
    let mut skip_blanks = true;
    // Whether the current logical line is a comment being skipped.
    let mut comment = false;
    // Whether the current natural line continues an earlier one.
    let mut continued = false;
    // Whether the last byte was an unescaped backslash.
    let mut backslash = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if b == b'\n' || b == b'\r' {
            // A CRLF pair is one line end.
            if b == b'\r' && bytes.get(i) == Some(&b'\n') {
                i += 1;
            }
            if comment || line.is_empty() {
                comment = false;
                skip_blanks = true;
                backslash = false;
                continued = false;
                continue;
            }
            if backslash {
                // Drop the joining backslash and carry on with the next line.
                line.pop();
                backslash = false;
                skip_blanks = true;
                continued = true;
                continue;
            }
            out.push(std::mem::take(&mut line));
            skip_blanks = true;
            continued = false;
            continue;
        }
        if comment {
            continue;
        }
        if skip_blanks {
            if is_blank(b) {
                continue;
            }
            skip_blanks = false;
            if !continued && (b == b'#' || b == b'!') {
                comment = true;
                continue;
            }
        }
        backslash = b == b'\\' && !backslash;
        line.push(b);
    }
    if !comment && !line.is_empty() {
        if backslash {
            line.pop();
        }
        out.push(line);
    }
    out
}

/// Splits one logical line into its unescaped key and value.
fn split_property(line: &[u8]) -> Option<(String, String)> {
    let mut key_end = line.len();
    let mut value_start = line.len();
    let mut has_sep = false;
    let mut backslash = false;
    for (i, &b) in line.iter().enumerate() {
        if !backslash && (b == b'=' || b == b':') {
            key_end = i;
            value_start = i + 1;
            has_sep = true;
            break;
        }
        if !backslash && is_blank(b) {
            key_end = i;
            value_start = i + 1;
            break;
        }
        backslash = b == b'\\' && !backslash;
    }
    let mut rest = line.get(value_start..).unwrap_or_default();
    while let Some((&b, tail)) = rest.split_first() {
        if is_blank(b) {
            rest = tail;
        } else if !has_sep && (b == b'=' || b == b':') {
            has_sep = true;
            rest = tail;
        } else {
            break;
        }
    }
    let key = unescape(line.get(..key_end).unwrap_or_default())?;
    let value = unescape(rest)?;
    Some((key, value))
}

/// Resolves `.properties` escapes in ISO-8859-1 bytes. `None` when a `\u`
/// escape is malformed.
fn unescape(bytes: &[u8]) -> Option<String> {
    // Java strings are UTF-16, and a character outside the BMP arrives as
    // two `\u` escapes (a surrogate pair), so collect UTF-16 units.
    let mut units: Vec<u16> = Vec::with_capacity(bytes.len());
    let mut it = bytes.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            units.push(u16::from(b));
            continue;
        }
        let Some(&e) = it.next() else {
            break;
        };
        let unit = match e {
            b't' => u16::from(b'\t'),
            b'n' => u16::from(b'\n'),
            b'r' => u16::from(b'\r'),
            b'f' => 0x0c,
            b'u' => {
                let mut v: u16 = 0;
                for _ in 0..4 {
                    let d = super::hex_digit(*it.next()?)?;
                    v = (v << 4) | u16::from(d);
                }
                v
            }
            other => u16::from(other),
        };
        units.push(unit);
    }
    Some(String::from_utf16_lossy(&units))
}

/// A `pom.properties` entry found by [`pom_properties_paths`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PomPath {
    /// Index of the entry among the names given.
    pub index: usize,
    /// The groupId directory of the path.
    pub group_id: String,
    /// The artifactId directory of the path.
    pub artifact_id: String,
}

/// Which of `names` are `META-INF/maven/<group>/<artifact>/pom.properties`
/// with a valid group and artifact (at most [`MAX_POM_FILES`], in order).
/// The directories normally repeat the file's own groupId and artifactId,
/// but the file's contents are what count.
pub fn pom_properties_paths<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> Vec<PomPath> {
    let mut out = Vec::new();
    for (index, name) in names.into_iter().enumerate() {
        if out.len() >= MAX_POM_FILES {
            break;
        }
        let Some(mid) = name
            .strip_prefix(b"META-INF/maven/")
            .and_then(|r| r.strip_suffix(b"/pom.properties"))
        else {
            continue;
        };
        let mut parts = mid.split(|&b| b == b'/');
        let (Some(g), Some(a), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if valid_id(g) && valid_id(a) {
            out.push(PomPath {
                index,
                group_id: String::from_utf8_lossy(g).into_owned(),
                artifact_id: String::from_utf8_lossy(a).into_owned(),
            });
        }
    }
    out
}

/// Which of `names` are jars nested in a fat jar: directly under
/// `BOOT-INF/lib/` (Spring Boot) or `WEB-INF/lib/` (WARs) and ending in
/// `.jar` (any case). Returns their indices, at most [`MAX_NESTED_JARS`].
/// Deeper directories are not searched: neither Spring Boot's launcher nor a
/// servlet container loads jars from them.
pub fn nested_jar_names<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> Vec<usize> {
    let mut out = Vec::new();
    for (index, name) in names.into_iter().enumerate() {
        if out.len() >= MAX_NESTED_JARS {
            break;
        }
        let Some(file) = name
            .strip_prefix(b"BOOT-INF/lib/")
            .or_else(|| name.strip_prefix(b"WEB-INF/lib/"))
        else {
            continue;
        };
        if file.len() > 4
            && !file.contains(&b'/')
            && file[file.len() - 4..].eq_ignore_ascii_case(b".jar")
        {
            out.push(index);
        }
    }
    out
}

/// How [`pick_primary`] chose a `pom.properties`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickReason {
    /// The file name is `<artifactId>-<version>.jar` (the name part may
    /// differ in case and punctuation, as Debian's `error-prone-*` jars do).
    ArtifactAndVersion,
    /// The file name is `<artifactId>.jar` or starts with `<artifactId>-`,
    /// or its name part is the artifactId up to case and punctuation.
    Artifact,
    /// The file name names no candidate, but there is exactly one and
    /// nothing contradicts it: the version in the file name, if any, is its
    /// version, and the manifest, if it has identifying headers, mentions its
    /// artifactId or version. This is the usual renamed application jar
    /// (`COPY target/*.jar app.jar`).
    SoleCandidate,
}

/// The file name without directories and without a `.jar` suffix (any case).
fn jar_stem(jar_file_name: &str) -> &str {
    let base = jar_file_name.rsplit('/').next().unwrap_or(jar_file_name);
    match base.len().checked_sub(4) {
        Some(cut) if base.is_char_boundary(cut) && base[cut..].eq_ignore_ascii_case(".jar") => {
            &base[..cut]
        }
        _ => base,
    }
}

/// Splits a jar file stem `name-1.2.3` at the first `-` followed by a
/// digit, the usual Maven file naming, into `(name, Some(version))`.
fn split_stem(stem: &str) -> (&str, Option<&str>) {
    let bytes = stem.as_bytes();
    for (i, w) in bytes.windows(2).enumerate() {
        if w[0] == b'-' && w[1].is_ascii_digit() && i > 0 {
            return (&stem[..i], Some(&stem[i + 1..]));
        }
    }
    (stem, None)
}

/// Lower-cased ASCII letters and digits only, so that `error-prone`,
/// `error_prone` and `Error Prone` compare equal.
fn squash(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// How the file name `stem` names `c`, if it does. The name part is also
/// compared squashed, so Debian's `error-prone-annotations.jar` names
/// `error_prone_annotations`.
fn stem_match(stem: &str, c: &MavenCoords) -> Option<PickReason> {
    let (name, version) = split_stem(stem);
    if stem
        .strip_prefix(c.artifact_id.as_str())
        .and_then(|r| r.strip_prefix('-'))
        == Some(&c.version)
    {
        return Some(PickReason::ArtifactAndVersion);
    }
    let artifact = squash(&c.artifact_id);
    if stem.starts_with(c.artifact_id.as_str())
        && stem[c.artifact_id.len()..]
            .chars()
            .next()
            .is_none_or(|ch| ch == '-')
    {
        return Some(PickReason::Artifact);
    }
    if squash(name) == artifact {
        return Some(if version == Some(c.version.as_str()) {
            PickReason::ArtifactAndVersion
        } else {
            PickReason::Artifact
        });
    }
    None
}

/// Whether the manifest's identifying headers mention `c` (`None` when it
/// has none).
fn manifest_mentions(m: &Manifest, c: &MavenCoords) -> Option<bool> {
    let names = [
        &m.implementation_title,
        &m.specification_title,
        &m.bundle_symbolic_name,
        &m.bundle_name,
        &m.automatic_module_name,
    ];
    let versions = [&m.implementation_version, &m.bundle_version];
    if names.iter().chain(&versions).all(|v| v.is_none()) {
        return None;
    }
    let artifact = squash(&c.artifact_id);
    let named = names
        .iter()
        .filter_map(|v| v.as_deref())
        .any(|v| squash(v).contains(&artifact));
    let versioned = versions
        .iter()
        .any(|v| v.as_deref() == Some(c.version.as_str()));
    Some(named || versioned)
}

/// Picks the coordinates that name the jar itself among those found in its
/// `pom.properties` files, by the jar's file name (a path is fine), with
/// the manifest as a witness for a sole candidate ([`PickReason`]). When
/// several match equally, the longest artifactId wins, then the first.
/// Returns the index into `found` and why, or `None` when nothing names the
/// jar: the caller then reports them all as bundled artifacts and falls
/// back to [`manifest_coords`] for the jar itself.
pub fn pick_primary(
    found: &[MavenCoords],
    jar_file_name: &str,
    manifest: Option<&Manifest>,
) -> Option<(usize, PickReason)> {
    let stem = jar_stem(jar_file_name);
    let mut best: Option<(usize, PickReason, usize)> = None;
    for (i, c) in found.iter().enumerate() {
        let Some(reason) = stem_match(stem, c) else {
            continue;
        };
        let rank = |r: PickReason| usize::from(r == PickReason::ArtifactAndVersion);
        let len = c.artifact_id.len();
        if best.is_none_or(|(_, r, l)| (rank(reason), len) > (rank(r), l)) {
            best = Some((i, reason, len));
        }
    }
    if let Some((i, r, _)) = best {
        return Some((i, r));
    }
    let [only] = found else {
        return None;
    };
    let version_ok = split_stem(stem).1.is_none_or(|v| v == only.version);
    let manifest_ok = manifest
        .and_then(|m| manifest_mentions(m, only))
        .unwrap_or(true);
    (version_ok && manifest_ok).then_some((0, PickReason::SoleCandidate))
}

/// The main-section headers of a `META-INF/MANIFEST.MF` that help identify
/// a jar. Absent headers (and values over [`MAX_MANIFEST_VALUE_LEN`]) are
/// `None`; values are trimmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// `Manifest-Version`.
    pub manifest_version: Option<String>,
    /// `Created-By`, the tool that wrote the jar.
    pub created_by: Option<String>,
    /// `Main-Class`, set on runnable jars.
    pub main_class: Option<String>,
    /// `Implementation-Title`.
    pub implementation_title: Option<String>,
    /// `Implementation-Version`, usually Maven's `${project.version}`.
    pub implementation_version: Option<String>,
    /// `Implementation-Vendor`.
    pub implementation_vendor: Option<String>,
    /// `Implementation-Vendor-Id`, usually Maven's `${project.groupId}`
    /// (maven-archiver writes it with its default implementation entries).
    pub implementation_vendor_id: Option<String>,
    /// `Specification-Title`.
    pub specification_title: Option<String>,
    /// `Specification-Version`.
    pub specification_version: Option<String>,
    /// `Specification-Vendor`.
    pub specification_vendor: Option<String>,
    /// `Bundle-SymbolicName` without its `;` directives
    /// (`org.foo;singleton:=true` gives `org.foo`).
    pub bundle_symbolic_name: Option<String>,
    /// `Bundle-Version`, an OSGi version (`31.1.0.jre` for Maven's
    /// `31.1-jre`).
    pub bundle_version: Option<String>,
    /// `Bundle-Name`.
    pub bundle_name: Option<String>,
    /// `Automatic-Module-Name`, the JPMS module name.
    pub automatic_module_name: Option<String>,
    /// `Spring-Boot-Version`, set on Spring Boot fat jars.
    pub spring_boot_version: Option<String>,
}

impl Manifest {
    /// The field a (lower-cased) header name fills, if it is one we keep.
    fn slot(&mut self, name: &[u8]) -> Option<&mut Option<String>> {
        let n = name.to_ascii_lowercase();
        Some(match n.as_slice() {
            b"manifest-version" => &mut self.manifest_version,
            b"created-by" => &mut self.created_by,
            b"main-class" => &mut self.main_class,
            b"implementation-title" => &mut self.implementation_title,
            b"implementation-version" => &mut self.implementation_version,
            b"implementation-vendor" => &mut self.implementation_vendor,
            b"implementation-vendor-id" => &mut self.implementation_vendor_id,
            b"specification-title" => &mut self.specification_title,
            b"specification-version" => &mut self.specification_version,
            b"specification-vendor" => &mut self.specification_vendor,
            b"bundle-symbolicname" => &mut self.bundle_symbolic_name,
            b"bundle-version" => &mut self.bundle_version,
            b"bundle-name" => &mut self.bundle_name,
            b"automatic-module-name" => &mut self.automatic_module_name,
            b"spring-boot-version" => &mut self.spring_boot_version,
            _ => return None,
        })
    }
}

/// Splits manifest bytes into lines ending in CRLF, LF or CR, each with
/// whether it was terminated (only the last line can be unterminated).
fn manifest_lines(bytes: &[u8]) -> impl Iterator<Item = (&[u8], bool)> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        let line = &rest[..end];
        let next = match rest.get(end) {
            Some(b'\r') if rest.get(end + 1) == Some(&b'\n') => end + 2,
            Some(_) => end + 1,
            None => end,
        };
        rest = rest.get(next..).unwrap_or_default();
        Some((line, next > end))
    })
}

/// Parses the main section of a manifest (everything before the first empty
/// line).
///
/// The format (the JAR File Specification): `Name: value` headers, names
/// case-insensitive, lines at most 72 bytes, so a longer value goes on in
/// continuation lines that start with one space (the space is not part of
/// the value). Writers split at 72 *bytes*, which can cut a UTF-8 character
/// in two, so a value is joined as bytes and decoded only once complete
/// (invalid UTF-8 becomes U+FFFD). Lines end in CRLF, LF or CR. A repeated
/// header replaces the earlier one, as in the JVM. Lines that are neither
/// headers nor continuations are skipped (the JVM refuses the whole
/// manifest). Like the JVM, an unterminated last line is ignored, and so is
/// the header it continues: the input may be a truncated prefix of the file
/// ([`super::zip::inflate_prefix`]), and a header cut off at the end must
/// not be taken half-read.
pub fn parse_manifest(bytes: &[u8]) -> Manifest {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut m = Manifest::default();
    // The header being read: its name and value so far, or `None` when it
    // is one we do not keep (its continuations are then skipped).
    let mut current: Option<(&[u8], Vec<u8>)> = None;
    let mut too_long = false;
    for (line, terminated) in manifest_lines(bytes) {
        if !terminated {
            if line.starts_with(b" ") {
                current = None;
            }
            break;
        }
        if line.is_empty() {
            break;
        }
        if let Some(cont) = line.strip_prefix(b" ") {
            if let Some((_, value)) = current.as_mut() {
                if value.len() + cont.len() > MAX_MANIFEST_VALUE_LEN {
                    too_long = true;
                } else if !too_long {
                    value.extend_from_slice(cont);
                }
            }
            continue;
        }
        commit(&mut m, current.take(), too_long);
        too_long = false;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let valid_name = !name.is_empty()
            && name.len() <= 70
            && name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name || m.slot(name).is_none() {
            continue;
        }
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if value.len() > MAX_MANIFEST_VALUE_LEN {
            too_long = true;
        }
        current = Some((name, if too_long { Vec::new() } else { value.to_vec() }));
    }
    commit(&mut m, current, too_long);
    m
}

/// Stores a finished header value in its field (a later one replaces an
/// earlier one; an over-long one clears it).
fn commit(m: &mut Manifest, current: Option<(&[u8], Vec<u8>)>, too_long: bool) {
    let Some((name, value)) = current else {
        return;
    };
    let Some(slot) = m.slot(name) else {
        return;
    };
    if too_long {
        *slot = None;
        return;
    }
    let mut text = String::from_utf8_lossy(&value).trim().to_owned();
    if name.eq_ignore_ascii_case(b"Bundle-SymbolicName")
        && let Some(semi) = text.find(';')
    {
        text = text[..semi].trim().to_owned();
    }
    *slot = (!text.is_empty()).then_some(text);
}

/// **Fallback guess** of a jar's coordinates from its manifest and file
/// name, for jars with no `pom.properties` naming them. It is right for
/// many jars and plainly wrong for some (on the jars of this machine that
/// do have a `pom.properties`, it agrees for about half); report it as a
/// guess.
///
/// * version: `Implementation-Version`; else the version in a
///   `<name>-<version>.jar` file name; else `Bundle-Version` (an OSGi form
///   that can differ from the Maven version, e.g. `31.1.0.jre`).
/// * artifactId: the file name without `-<version>` and `.jar`.
/// * groupId: `Implementation-Vendor-Id` when it is a valid groupId (Maven's
///   archiver writes the groupId there); else the `Bundle-SymbolicName`,
///   undoing the maven-bundle-plugin's default naming: its last segment is
///   dropped when it repeats the artifactId's tail
///   (`org.apache.commons.lang3` for `commons-lang3`) or, for an artifactId
///   with `-` or `_`, the whole artifactId (`javax.enterprise.cdi-api`); a
///   symbolic name that is just the artifactId (`slf4j.api`) gives no group.
///
/// `None` unless all three are found and valid.
pub fn manifest_coords(m: &Manifest, jar_file_name: &str) -> Option<MavenCoords> {
    let stem = jar_stem(jar_file_name);
    let implementation_version = m
        .implementation_version
        .as_deref()
        .filter(|v| valid_version(v));
    let (artifact, file_version) = match implementation_version
        .and_then(|v| stem.strip_suffix(v))
        .and_then(|s| s.strip_suffix('-'))
    {
        Some(a) if !a.is_empty() => (a, implementation_version),
        _ => split_stem(stem),
    };
    let version = implementation_version
        .or(file_version.filter(|v| valid_version(v)))
        .or(m.bundle_version.as_deref())?;
    let group = match m
        .implementation_vendor_id
        .as_deref()
        .filter(|g| valid_id(g.as_bytes()))
    {
        Some(g) => g.to_owned(),
        None => bundle_group(m.bundle_symbolic_name.as_deref()?, artifact)?,
    };
    coords(&group, artifact, version)
}

/// The groupId that the maven-bundle-plugin's default symbolic name `bsn`
/// most likely came from, for `artifact`.
fn bundle_group(bsn: &str, artifact: &str) -> Option<String> {
    if squash(bsn) == squash(artifact) {
        return None;
    }
    let Some((head, last)) = bsn.rsplit_once('.') else {
        return Some(bsn.to_owned());
    };
    let compound = artifact.contains(['-', '_']);
    let tail = artifact.rsplit(['-', '_']).next().unwrap_or(artifact);
    let strip = if last == artifact {
        // `groupId.artifactId`, unless the artifactId is the groupId's last
        // segment (`com.google.guava` for `guava`), which is likelier for a
        // plain word.
        compound
    } else {
        compound && last == tail
    };
    Some(if strip { head } else { bsn }.to_owned())
}

/// What [`inspect_jar`] found in one jar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JarInfo {
    /// Coordinates from every `pom.properties` that parsed, in directory
    /// order.
    pub poms: Vec<MavenCoords>,
    /// `pom.properties` entries that could not be read or parsed.
    pub pom_failures: u32,
    /// The entry of `poms` that names the jar itself, by [`pick_primary`].
    pub primary: Option<(usize, PickReason)>,
    /// The manifest's main section, if the jar has a readable manifest.
    pub manifest: Option<Manifest>,
    /// Indices (into the archive's entries) of nested jars.
    pub nested: Vec<usize>,
}

impl JarInfo {
    /// The jar's own coordinates: the primary `pom.properties`, else the
    /// manifest guess. The flag is `true` for the guess.
    pub fn coords(&self, jar_file_name: &str) -> Option<(MavenCoords, bool)> {
        if let Some((i, _)) = self.primary
            && let Some(c) = self.poms.get(i)
        {
            return Some((c.clone(), false));
        }
        let m = self.manifest.as_ref()?;
        manifest_coords(m, jar_file_name).map(|c| (c, true))
    }
}

/// The manifest entry: `META-INF/MANIFEST.MF` exactly, else ignoring case.
pub fn find_manifest(entries: &[CdEntry]) -> Option<&CdEntry> {
    entries
        .iter()
        .find(|e| e.name == MANIFEST_PATH)
        .or_else(|| {
            entries
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case(MANIFEST_PATH))
        })
}

/// Reads the `pom.properties` files, the manifest and the nested jar list
/// of a jar held in memory (typically one nested in a fat jar). Failures to
/// read single entries are counted or leave fields empty; nested jars are
/// listed, not opened (the caller decides how deep to go).
pub fn inspect_jar(zip: &ZipBytes<'_>, jar_file_name: &str) -> JarInfo {
    let entries = zip.entries();
    let names = || entries.iter().map(|e| e.name.as_slice());
    let mut info = JarInfo::default();
    for p in pom_properties_paths(names()) {
        let parsed = entries
            .get(p.index)
            .and_then(|e| zip.read(e, MAX_POM_PROPERTIES_LEN).ok())
            .and_then(|b| parse_pom_properties(&b));
        match parsed {
            Some(c) => info.poms.push(c),
            None => info.pom_failures = info.pom_failures.saturating_add(1),
        }
    }
    info.manifest = find_manifest(entries)
        .and_then(|e| zip.read_prefix(e, MAX_MANIFEST_LEN).ok())
        .map(|(b, _)| parse_manifest(&b));
    info.primary = pick_primary(&info.poms, jar_file_name, info.manifest.as_ref());
    info.nested = nested_jar_names(names());
    info
}

#[cfg(test)]
mod tests {
    use super::super::zip::test_support::*;
    use super::super::zip::{self, METHOD_DEFLATED, METHOD_STORED, ZipBytes};
    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// The reference: python's zipfile reads every `pom.properties` (parsed
    /// as plain `key=value` lines, which is all Maven writes) and the
    /// manifest's main section (continuations joined as bytes, then decoded).
    const PY_JARS: &str = r#"
import sys, zipfile, re
KEYS = ['implementation-title', 'implementation-version', 'implementation-vendor-id',
        'bundle-symbolicname', 'bundle-version', 'automatic-module-name']
for p in sys.argv[1:]:
    z = zipfile.ZipFile(p)
    print('J\t' + p)
    for n in z.namelist():
        parts = n.split('/')
        if len(parts) == 5 and parts[:2] == ['META-INF', 'maven'] and parts[4] == 'pom.properties':
            props = {}
            for line in z.read(n).decode('latin-1').splitlines():
                line = line.strip()
                if not line or line[0] in '#!':
                    continue
                k, _, v = line.partition('=')
                props[k.strip()] = v.strip()
            print('P\t%s\t%s\t%s' % (props['groupId'], props['artifactId'], props['version']))
    names = [n for n in z.namelist() if n.upper() == 'META-INF/MANIFEST.MF']
    if names:
        headers = []
        for line in re.split(rb'\r\n|\r|\n', z.read(names[0])):
            if not line:
                break
            if line.startswith(b' '):
                headers[-1][1] += line[1:]
            else:
                k, _, v = line.partition(b':')
                headers.append([k, v[1:] if v.startswith(b' ') else v])
        for k, v in headers:
            k = k.decode().lower()
            if k in KEYS:
                v = v.decode('utf-8').strip()
                if k == 'bundle-symbolicname':
                    v = v.split(';')[0].strip()
                print('M\t%s\t%s' % (k, v))
"#;

    /// What the reference says about one jar.
    #[derive(Default, Debug)]
    struct Expected {
        poms: Vec<MavenCoords>,
        manifest: BTreeMap<String, String>,
    }

    fn reference(paths: &[PathBuf]) -> Vec<Expected> {
        let args: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
        let mut out: Vec<Expected> = Vec::new();
        for line in python(PY_JARS, &args).lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f[0] {
                "J" => out.push(Expected::default()),
                "P" => out.last_mut().unwrap().poms.push(MavenCoords {
                    group_id: f[1].into(),
                    artifact_id: f[2].into(),
                    version: f[3].into(),
                }),
                _ => {
                    out.last_mut()
                        .unwrap()
                        .manifest
                        .insert(f[1].into(), f[2].into());
                }
            }
        }
        assert_eq!(out.len(), paths.len());
        out
    }

    /// Our manifest fields under the reference's keys.
    fn manifest_map(m: &Manifest) -> BTreeMap<String, String> {
        let fields = [
            ("implementation-title", &m.implementation_title),
            ("implementation-version", &m.implementation_version),
            ("implementation-vendor-id", &m.implementation_vendor_id),
            ("bundle-symbolicname", &m.bundle_symbolic_name),
            ("bundle-version", &m.bundle_version),
            ("automatic-module-name", &m.automatic_module_name),
        ];
        fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v.clone()?)))
            .collect()
    }

    /// A jar inspected exactly as the agent does it: pread the tail, the
    /// directory, then only the `pom.properties` files and the manifest.
    struct Found {
        info: JarInfo,
        bytes_read: u64,
        len: u64,
    }

    fn inspect_file(path: &Path) -> Found {
        let mut z = FileZip::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let entries = z.entries.clone();
        let names = || entries.iter().map(|e| e.name.as_slice());
        let mut info = JarInfo::default();
        for p in pom_properties_paths(names()) {
            let bytes = z.read(&entries[p.index], MAX_POM_PROPERTIES_LEN).unwrap();
            match parse_pom_properties(&bytes) {
                Some(c) => info.poms.push(c),
                None => info.pom_failures += 1,
            }
        }
        let file_name = path.file_name().unwrap().to_str().unwrap();
        if let Some(e) = find_manifest(&entries) {
            info.manifest = Some(parse_manifest(&z.read_prefix(e, MAX_MANIFEST_LEN).unwrap()));
        }
        info.primary = pick_primary(&info.poms, file_name, info.manifest.as_ref());
        info.nested = nested_jar_names(names());
        Found {
            info,
            bytes_read: z.bytes_read,
            len: z.len,
        }
    }

    /// Checks every jar under `paths` against the reference and returns
    /// (jars with pom.properties, jars with only a manifest, manifest
    /// guesses that agree with the primary pom.properties, guesses made).
    fn check_jars(paths: &[PathBuf]) -> (usize, usize, usize, usize) {
        let expected = reference(paths);
        let (mut with_pom, mut manifest_only, mut agree, mut guesses) = (0, 0, 0, 0);
        for (path, want) in paths.iter().zip(&expected) {
            let found = inspect_file(path);
            let info = &found.info;
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(info.poms, want.poms, "{}", path.display());
            assert_eq!(info.pom_failures, 0);
            let m = info.manifest.as_ref();
            assert_eq!(
                m.map(manifest_map).unwrap_or_default(),
                want.manifest,
                "{}",
                path.display()
            );
            // The in-memory path (used for nested jars) agrees with the
            // piecewise one.
            if found.len < 32 << 20 {
                let bytes = std::fs::read(path).unwrap();
                assert_eq!(&inspect_jar(&ZipBytes::open(&bytes).unwrap(), name), info);
            }
            if info.poms.is_empty() {
                manifest_only += usize::from(m.is_some());
            } else {
                with_pom += 1;
            }
            if let (Some((i, _)), Some(m)) = (info.primary, m) {
                guesses += 1;
                agree += usize::from(manifest_coords(m, name).as_ref() == Some(&info.poms[i]));
            }
            // Big jars are not read whole (small ones may be: the tail read
            // can cover the whole file and the directory is read again).
            if found.len > 1 << 20 {
                assert!(found.bytes_read < found.len / 2, "{}", path.display());
            }
        }
        (with_pom, manifest_only, agree, guesses)
    }

    #[test]
    fn every_jar_in_usr_share_java() {
        // Symlinks too: Debian installs `name.jar` and `name-version.jar`,
        // and the file name decides which pom.properties is the jar's own.
        let jars = jars_under(Path::new("/usr/share/java"), true);
        assert!(
            jars.len() >= 100,
            "expected the Debian jars in /usr/share/java"
        );
        let (with_pom, manifest_only, agree, guesses) = check_jars(&jars);
        eprintln!(
            "/usr/share/java: {} jar names, {with_pom} with pom.properties, {manifest_only} with \
             only a manifest; the manifest guess matches pom.properties for {agree} of {guesses}",
            jars.len()
        );
        assert_eq!(with_pom + manifest_only, jars.len());
        // Spot checks of the pipeline's final answer.
        let check = |file: &str, want: Option<(&str, &str, &str)>, guess: bool| {
            let f = inspect_file(&Path::new("/usr/share/java").join(file));
            let got = f.info.coords(file);
            let want = want.map(|(g, a, v)| {
                (
                    MavenCoords {
                        group_id: g.into(),
                        artifact_id: a.into(),
                        version: v.into(),
                    },
                    guess,
                )
            });
            assert_eq!(got, want, "{file}");
        };
        check(
            "commons-io-2.11.0.jar",
            Some(("commons-io", "commons-io", "2.11.0")),
            false,
        );
        check(
            "commons-io.jar",
            Some(("commons-io", "commons-io", "2.11.0")),
            false,
        );
        check(
            "commons-cli-1.5.0.jar",
            Some(("commons-cli", "commons-cli", "1.5.0")),
            false,
        );
        check(
            "guava-31.1-jre.jar",
            Some(("com.google.guava", "guava", "31.1-jre")),
            false,
        );
        // wagon-http-shaded bundles five artifacts; the file name picks
        // wagon-http (not wagon-http-shared).
        check(
            "wagon-http-shaded-3.5.3.jar",
            Some(("org.apache.maven.wagon", "wagon-http", "3.5.3")),
            false,
        );
        // guice's only pom.properties is its shaded cglib's: not the jar's
        // identity, so the manifest guess is used (and is right).
        check(
            "guice-4.2.3.jar",
            Some(("com.google.inject", "guice", "4.2.3")),
            true,
        );
        let f = inspect_file(Path::new("/usr/share/java/guice-4.2.3.jar"));
        assert_eq!(f.info.poms[0].artifact_id, "cglib");
        assert_eq!(f.info.primary, None);
        // aopalliance has neither pom.properties nor version headers.
        check("aopalliance-1.0.jar", None, true);
    }

    /// About 260 upstream jars (Maven Central builds, shaded emulators up to
    /// 70 MB) when the Google Cloud SDK is installed.
    #[test]
    fn cloud_sdk_jars() {
        let jars = jars_under(Path::new("/usr/lib/google-cloud-sdk"), false);
        if jars.is_empty() {
            eprintln!("no /usr/lib/google-cloud-sdk jars on this machine; skipped");
            return;
        }
        let (with_pom, manifest_only, agree, guesses) = check_jars(&jars);
        eprintln!(
            "cloud sdk: {} jars, {with_pom} with pom.properties, {manifest_only} with only a \
             manifest; the manifest guess matches pom.properties for {agree} of {guesses}",
            jars.len()
        );
    }

    /// A Spring Boot style fat jar written by python's zipfile: one real jar
    /// stored under BOOT-INF/lib, one deflated under WEB-INF/lib, one too
    /// deep to count. Read the agent's way, piece by piece.
    #[test]
    fn fat_jar_written_by_python() {
        let path = temp_path("fat.jar");
        let script = r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    z.writestr('META-INF/MANIFEST.MF', 'Manifest-Version: 1.0\r\nMain-Class: org.springframework.boot.loader.JarLauncher\r\nSpring-Boot-Version: 2.7.18\r\n\r\n', compress_type=zipfile.ZIP_DEFLATED)
    z.writestr('BOOT-INF/classes/app/App.class', b'\xca\xfe\xba\xbe', compress_type=zipfile.ZIP_DEFLATED)
    z.write('/usr/share/java/commons-io.jar', 'BOOT-INF/lib/commons-io-2.11.0.jar', compress_type=zipfile.ZIP_STORED)
    z.write('/usr/share/java/commons-cli.jar', 'WEB-INF/lib/commons-cli-1.5.0.jar', compress_type=zipfile.ZIP_DEFLATED)
    z.write('/usr/share/java/slf4j-api.jar', 'BOOT-INF/lib/deeper/slf4j-api-1.7.32.jar', compress_type=zipfile.ZIP_STORED)
"#;
        python(script, &[path.to_str().unwrap()]);
        let mut z = FileZip::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let entries = z.entries.clone();
        let nested = nested_jar_names(entries.iter().map(|e| e.name.as_slice()));
        assert_eq!(nested.len(), 2);
        let mut found = HashMap::new();
        for i in nested {
            let e = &entries[i];
            zip::check_entry(e, MAX_NESTED_JAR_LEN).unwrap();
            let raw = z.raw(e).unwrap();
            // A stored nested jar is its own bytes; a deflated one is
            // inflated (bounded) first.
            let bytes = match e.method {
                METHOD_STORED => raw,
                _ => zip::decode_entry(e, &raw, MAX_NESTED_JAR_LEN).unwrap(),
            };
            let name = String::from_utf8(e.name.clone()).unwrap();
            let file = name.rsplit('/').next().unwrap().to_owned();
            let info = inspect_jar(&ZipBytes::open(&bytes).unwrap(), &file);
            found.insert((name, e.method), info.coords(&file).unwrap().0);
        }
        let c = |g: &str, a: &str, v: &str| MavenCoords {
            group_id: g.into(),
            artifact_id: a.into(),
            version: v.into(),
        };
        assert_eq!(
            found[&("BOOT-INF/lib/commons-io-2.11.0.jar".into(), METHOD_STORED)],
            c("commons-io", "commons-io", "2.11.0")
        );
        assert_eq!(
            found[&("WEB-INF/lib/commons-cli-1.5.0.jar".into(), METHOD_DEFLATED)],
            c("commons-cli", "commons-cli", "1.5.0")
        );
        let m = find_manifest(&entries).unwrap();
        let m = parse_manifest(&z.read_prefix(m, MAX_MANIFEST_LEN).unwrap());
        assert_eq!(m.spring_boot_version.as_deref(), Some("2.7.18"));
    }

    /// The same shape built in memory by our own writer and read with
    /// `ZipBytes` only; the stored nested jar is borrowed, not copied.
    #[test]
    fn fat_jar_in_memory() {
        let io = std::fs::read("/usr/share/java/commons-io.jar").unwrap();
        let cli = std::fs::read("/usr/share/java/commons-cli.jar").unwrap();
        let fat = build_zip(
            &[
                (b"BOOT-INF/lib/commons-io-2.11.0.jar", &io, METHOD_STORED),
                (b"WEB-INF/lib/commons-cli-1.5.0.jar", &cli, METHOD_DEFLATED),
                (b"BOOT-INF/lib/notes.txt", b"not a jar", METHOD_STORED),
            ],
            &ZipOpts {
                zip64: true,
                ..Default::default()
            },
        );
        let outer = ZipBytes::open(&fat).unwrap();
        let info = inspect_jar(&outer, "app.jar");
        assert_eq!(info.nested, vec![0, 1]);
        let mut got = Vec::new();
        for &i in &info.nested {
            let e = &outer.entries()[i];
            let bytes = outer.read(e, MAX_NESTED_JAR_LEN).unwrap();
            assert_eq!(
                matches!(bytes, std::borrow::Cow::Borrowed(_)),
                e.method == METHOD_STORED
            );
            let file = String::from_utf8_lossy(&e.name)
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned();
            let inner = inspect_jar(&ZipBytes::open(&bytes).unwrap(), &file);
            got.push(inner.coords(&file).unwrap().0.artifact_id);
        }
        assert_eq!(got, ["commons-io", "commons-cli"]);
    }

    fn gav(g: &str, a: &str, v: &str) -> Option<MavenCoords> {
        Some(MavenCoords {
            group_id: g.into(),
            artifact_id: a.into(),
            version: v.into(),
        })
    }

    #[test]
    fn properties_syntax() {
        let maven = b"#Generated by Maven\n#Tue Oct 05 10:00:00 UTC 2021\ngroupId=org.example\nartifactId=demo\nversion=1.0.0\n";
        assert_eq!(
            parse_pom_properties(maven),
            gav("org.example", "demo", "1.0.0")
        );
        // Every separator style, CRLF and CR line ends, blanks around.
        let mixed = b"  groupId : org.example\r\nartifactId demo\rversion\t=\t1.0\x0c\n";
        assert_eq!(
            parse_pom_properties(mixed),
            gav("org.example", "demo", "1.0")
        );
        // Continuations: the backslash and the next line's indent vanish.
        let cont = b"groupId=org.\\\n    example\nartifactId=de\\\r\n\tmo\nversion=1.\\\n0";
        assert_eq!(
            parse_pom_properties(cont),
            gav("org.example", "demo", "1.0")
        );
        // An even number of backslashes does not continue.
        let even = b"groupId=g\nartifactId=a\nversion=1\\\\\nversion2=x\n";
        assert_eq!(pom_values(even)[2].as_deref(), Some("1\\"));
        // Escapes, including a separator inside a key.
        let esc =
            b"group\\Id=\\u006frg.x\nartifact\\u0049d=a\\-b\nversion=2\\u002E0\nkey\\=with=sep\n";
        assert_eq!(parse_pom_properties(esc), gav("org.x", "a-b", "2.0"));
        // Comments (`#` and `!`, indented too) are never continued.
        let comments =
            b"# groupId=wrong \\\ngroupId=g\n  ! artifactId=wrong\nartifactId=a\nversion=3\n";
        assert_eq!(parse_pom_properties(comments), gav("g", "a", "3"));
        // The last value of a repeated key wins; trailing blanks are trimmed.
        let dup = b"groupId=g1\ngroupId=g2   \nartifactId=a\nversion=1\n";
        assert_eq!(parse_pom_properties(dup), gav("g2", "a", "1"));
        // A malformed \u escape drops only its line.
        let bad = b"groupId=g\nartifactId=a\nversion=1\nversion=\\u12\n";
        assert_eq!(parse_pom_properties(bad), gav("g", "a", "1"));
        // Latin-1 bytes and a surrogate pair decode like Java.
        assert_eq!(pom_values(b"version=\xe9")[2].as_deref(), Some("\u{e9}"));
        assert_eq!(
            pom_values(b"version=\\ud83d\\ude00")[2].as_deref(),
            Some("\u{1f600}")
        );
        // All three keys are required and must be valid.
        assert_eq!(parse_pom_properties(b"groupId=g\nartifactId=a\n"), None);
        assert_eq!(
            parse_pom_properties(b"groupId=g h\nartifactId=a\nversion=1\n"),
            None
        );
        assert_eq!(
            parse_pom_properties(b"groupId=g\nartifactId=a/b\nversion=1\n"),
            None
        );
        assert_eq!(
            parse_pom_properties(b"groupId=g\nartifactId=a\nversion=${revision}\n"),
            None
        );
        assert_eq!(
            parse_pom_properties(b"groupId=g\nartifactId=a\nversion=\n"),
            None
        );
        let long = format!(
            "groupId=g\nartifactId=a\nversion={}\n",
            "1".repeat(MAX_COORD_LEN + 1)
        );
        assert_eq!(parse_pom_properties(long.as_bytes()), None);
        assert_eq!(parse_pom_properties(b""), None);
    }

    #[test]
    fn manifest_syntax() {
        // 72-byte lines: the continuation space is dropped, and a UTF-8
        // character split across lines is joined before decoding.
        let text = "Manifest-Version: 1.0\r\nImplementation-Title: Caf\u{e9} \u{2603}";
        let bytes = text.as_bytes();
        let split_at = bytes.len() - 2; // inside the snowman
        let mut mf = bytes[..split_at].to_vec();
        mf.extend_from_slice(b"\r\n ");
        mf.extend_from_slice(&bytes[split_at..]);
        mf.extend_from_slice(b"\r\nimplementation-version:  9.1 \r\nBundle-SymbolicName: org.x.y;singleton:=true\r\n\r\nName: org/x/\r\nImplementation-Version: 0.0-section\r\n");
        let m = parse_manifest(&mf);
        assert_eq!(m.manifest_version.as_deref(), Some("1.0"));
        assert_eq!(
            m.implementation_title.as_deref(),
            Some("Caf\u{e9} \u{2603}")
        );
        // Case-insensitive names; the per-entry section does not count.
        assert_eq!(m.implementation_version.as_deref(), Some("9.1"));
        assert_eq!(m.bundle_symbolic_name.as_deref(), Some("org.x.y"));
        // LF and CR line ends, a BOM, no final newline, junk lines skipped.
        let m = parse_manifest(b"\xef\xbb\xbfBundle-Version: 1\rjunk line\nBundle-Name: n\n co\n  nt\nAutomatic-Module-Name: m\n");
        assert_eq!(m.bundle_version.as_deref(), Some("1"));
        assert_eq!(m.bundle_name.as_deref(), Some("nco nt"));
        assert_eq!(m.automatic_module_name.as_deref(), Some("m"));
        // An unterminated last line is ignored, with the header it
        // continues: a truncated manifest yields no half-read value.
        let m = parse_manifest(b"Bundle-Version: 1\nBundle-Name: n");
        assert_eq!(
            (m.bundle_version.as_deref(), m.bundle_name),
            (Some("1"), None)
        );
        let m = parse_manifest(b"Bundle-Version: 1\nBundle-Name: n\n co");
        assert_eq!(
            (m.bundle_version.as_deref(), m.bundle_name),
            (Some("1"), None)
        );
        // A continuation with nothing before it, empty values, repeats.
        let m = parse_manifest(b" orphan\nMain-Class:\nCreated-By: a\nCreated-By: b\n");
        assert_eq!(m.main_class, None);
        assert_eq!(m.created_by.as_deref(), Some("b"));
        // Over-long values are dropped, not truncated.
        let long = format!(
            "Implementation-Vendor: {}\n\n",
            "v".repeat(MAX_MANIFEST_VALUE_LEN + 1)
        );
        assert_eq!(parse_manifest(long.as_bytes()).implementation_vendor, None);
        let mut cont = b"Implementation-Vendor: x\n".to_vec();
        for _ in 0..100 {
            cont.extend_from_slice(b" 0123456789abcdef0123456789abcdef\n");
        }
        assert_eq!(parse_manifest(&cont).implementation_vendor, None);
        assert_eq!(parse_manifest(b""), Manifest::default());
    }

    #[test]
    fn names_paths_and_picks() {
        let names: Vec<&[u8]> = vec![
            b"META-INF/maven/org.a/x/pom.properties",
            b"META-INF/maven/org.a/x/pom.xml",
            b"META-INF/maven/org.a/pom.properties",
            b"META-INF/maven/org.b/y/z/pom.properties",
            b"META-INF/maven/bad group/y/pom.properties",
            b"META-INF/maven/com.c/y-shaded/pom.properties",
            b"BOOT-INF/lib/a-1.0.jar",
            b"BOOT-INF/lib/A.JAR",
            b"BOOT-INF/lib/x/b.jar",
            b"WEB-INF/lib/c.jar",
            b"WEB-INF/lib/.jar",
            b"WEB-INF/lib/d.jarx",
            b"lib/e.jar",
        ];
        let poms = pom_properties_paths(names.iter().copied());
        let got: Vec<_> = poms
            .iter()
            .map(|p| (p.index, p.group_id.as_str(), p.artifact_id.as_str()))
            .collect();
        assert_eq!(got, [(0, "org.a", "x"), (5, "com.c", "y-shaded")]);
        assert_eq!(nested_jar_names(names.iter().copied()), [6, 7, 9]);
        // Picking by file name.
        let found = [
            gav("org.apache.httpcomponents", "httpclient", "4.5.14").unwrap(),
            gav("org.apache.maven.wagon", "wagon-http", "3.5.3").unwrap(),
            gav("org.apache.maven.wagon", "wagon-http-shared", "3.5.3").unwrap(),
        ];
        assert_eq!(
            pick_primary(&found, "/opt/lib/wagon-http-shared-3.5.3.jar", None),
            Some((2, PickReason::ArtifactAndVersion))
        );
        assert_eq!(
            pick_primary(&found, "wagon-http-shaded-3.5.3.jar", None),
            Some((1, PickReason::Artifact))
        );
        assert_eq!(
            pick_primary(&found, "httpclient.JAR", None),
            Some((0, PickReason::Artifact))
        );
        assert_eq!(pick_primary(&found, "app.jar", None), None);
        assert_eq!(pick_primary(&[], "x.jar", None), None);
        // Debian's spelling of an artifactId.
        let ep = [gav("com.google.errorprone", "error_prone_annotations", "2.18.0").unwrap()];
        assert_eq!(
            pick_primary(&ep, "error-prone-annotations-2.18.0.jar", None),
            Some((0, PickReason::ArtifactAndVersion))
        );
        // A sole candidate, unless the file name or manifest contradicts it.
        let one = &found[..1];
        assert_eq!(
            pick_primary(one, "app.jar", None),
            Some((0, PickReason::SoleCandidate))
        );
        assert_eq!(
            pick_primary(one, "app-4.5.14.jar", None),
            Some((0, PickReason::SoleCandidate))
        );
        assert_eq!(pick_primary(one, "guice-4.2.3.jar", None), None);
        let m = parse_manifest(b"Bundle-SymbolicName: com.google.inject\n");
        assert_eq!(pick_primary(one, "guice.jar", Some(&m)), None);
        let m = parse_manifest(b"Implementation-Title: Apache HttpClient\n");
        assert_eq!(
            pick_primary(one, "app.jar", Some(&m)),
            Some((0, PickReason::SoleCandidate))
        );
        let m = parse_manifest(b"Created-By: Maven\n");
        assert_eq!(
            pick_primary(one, "app.jar", Some(&m)),
            Some((0, PickReason::SoleCandidate))
        );
    }

    #[test]
    fn manifest_fallback_guesses() {
        let m = |pairs: &[(&str, &str)]| {
            let mut text = String::new();
            for (k, v) in pairs {
                text.push_str(&format!("{k}: {v}\r\n"));
            }
            parse_manifest(text.as_bytes())
        };
        // Implementation-Vendor-Id is the groupId.
        let io = m(&[
            ("Implementation-Version", "2.11.0"),
            ("Implementation-Vendor-Id", "commons-io"),
            ("Bundle-SymbolicName", "org.apache.commons.io"),
        ]);
        assert_eq!(
            manifest_coords(&io, "commons-io-2.11.0.jar"),
            gav("commons-io", "commons-io", "2.11.0")
        );
        assert_eq!(
            manifest_coords(&io, "commons-io.jar"),
            gav("commons-io", "commons-io", "2.11.0")
        );
        // The symbolic name loses a last segment that repeats the artifact.
        let lang = m(&[
            ("Bundle-SymbolicName", "org.apache.commons.lang3"),
            ("Bundle-Version", "3.12.0"),
        ]);
        assert_eq!(
            manifest_coords(&lang, "commons-lang3-3.12.0.jar"),
            gav("org.apache.commons", "commons-lang3", "3.12.0")
        );
        // The file name's version beats the OSGi Bundle-Version.
        let guava = m(&[
            ("Bundle-SymbolicName", "com.google.guava"),
            ("Bundle-Version", "31.1.0.jre"),
        ]);
        assert_eq!(
            manifest_coords(&guava, "guava-31.1-jre.jar"),
            gav("com.google.guava", "guava", "31.1-jre")
        );
        assert_eq!(
            manifest_coords(&guava, "guava.jar"),
            gav("com.google.guava", "guava", "31.1.0.jre")
        );
        // `groupId.artifactId` for a compound artifactId.
        let cdi = m(&[
            ("Bundle-SymbolicName", "javax.enterprise.cdi-api"),
            ("Bundle-Version", "1.2"),
        ]);
        assert_eq!(
            manifest_coords(&cdi, "cdi-api.jar"),
            gav("javax.enterprise", "cdi-api", "1.2")
        );
        // A symbolic name that is only the artifactId says nothing of the group.
        let slf = m(&[
            ("Bundle-SymbolicName", "slf4j.api"),
            ("Implementation-Version", "1.7.32"),
        ]);
        assert_eq!(manifest_coords(&slf, "slf4j-api-1.7.32.jar"), None);
        // Nothing to go on.
        assert_eq!(
            manifest_coords(&m(&[("Manifest-Version", "1.0")]), "x-1.0.jar"),
            None
        );
        assert_eq!(
            manifest_coords(&m(&[("Implementation-Version", "1.0")]), "x-1.0.jar"),
            None
        );
    }

    /// Runs Java's own `Properties.load` and `Manifest` on `cases` and
    /// returns one line per case (hex UTF-8 values, `-` when absent, `EXC`
    /// when Java refused the input). `None` when no `java` is installed.
    fn java_reference(mode: &str, cases: &[Vec<u8>]) -> Option<Vec<String>> {
        const SRC: &str = r#"
import java.io.*; import java.nio.file.*; import java.util.*; import java.util.jar.*;
public class Ref {
  static final String[] KEYS = {"Implementation-Title", "Implementation-Version", "Implementation-Vendor-Id", "Bundle-SymbolicName", "Bundle-Version", "Automatic-Module-Name"};
  static String hex(String s) {
    if (s == null) return "-";
    StringBuilder b = new StringBuilder("h");
    for (byte x : s.getBytes(java.nio.charset.StandardCharsets.UTF_8)) b.append(String.format("%02x", x));
    return b.toString();
  }
  public static void main(String[] a) throws Exception {
    DataInputStream in = new DataInputStream(new ByteArrayInputStream(Files.readAllBytes(Path.of(a[1]))));
    StringBuilder out = new StringBuilder();
    while (in.available() > 0) {
      byte[] data = new byte[in.readInt()];
      in.readFully(data);
      try {
        List<String> vals = new ArrayList<>();
        if (a[0].equals("props")) {
          Properties p = new Properties();
          p.load(new ByteArrayInputStream(data));
          for (String k : new String[] {"groupId", "artifactId", "version"}) vals.add(hex(p.getProperty(k)));
        } else {
          Attributes at = new Manifest(new ByteArrayInputStream(data)).getMainAttributes();
          for (String k : KEYS) vals.add(hex(at.getValue(k)));
        }
        out.append(String.join(" ", vals)).append('\n');
      } catch (Exception e) {
        out.append("EXC\n");
      }
    }
    System.out.print(out);
  }
}
"#;
        let dir = temp_path(&format!("javaref-{mode}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Ref.java"), SRC).unwrap();
        let mut input = Vec::new();
        for c in cases {
            input.extend_from_slice(&(c.len() as u32).to_be_bytes());
            input.extend_from_slice(c);
        }
        std::fs::write(dir.join("cases.bin"), &input).unwrap();
        let out = std::process::Command::new("java")
            .arg(dir.join("Ref.java"))
            .arg(mode)
            .arg(dir.join("cases.bin"))
            .output();
        std::fs::remove_dir_all(&dir).unwrap();
        let out = out.ok()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(lines.len(), cases.len());
        Some(lines)
    }

    fn hex(v: Option<&str>) -> String {
        match v {
            None => "-".into(),
            Some(s) => std::iter::once("h".to_owned())
                .chain(s.bytes().map(|b| format!("{b:02x}")))
                .collect(),
        }
    }

    /// Hand-written tricky cases plus mutations of them.
    fn differential_cases(seeds: &[&[u8]], alphabet: &[u8], n: usize) -> Vec<Vec<u8>> {
        let mut rng = Rng(0x5eed);
        let mut cases: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
        while cases.len() < n {
            let s = seeds[rng.below(seeds.len())];
            cases.push(mutate(&mut rng, s, alphabet));
        }
        cases
    }

    /// Our properties reader returns exactly what Java's does, on tricky
    /// and mutated inputs (wherever Java accepts the input).
    #[test]
    fn properties_match_java() {
        let seeds: &[&[u8]] = &[
            b"#c\ngroupId=org.example\nartifactId=demo\nversion=1.0.0\n",
            b"  groupId : g \r\nartifactId a\rversion\t=\t1\x0c\n",
            b"groupId=org.\\\n    example\nartifactId=de\\\r\n\tmo\nversion=1.\\\n0",
            b"group\\Id=\\u006frg\nartifact\\u0049d=a\\-b\\tc\nversion=2\\u002E0\\",
            b"# groupId=x \\\ngroupId=g\n ! x\nartifactId==a\nversion::1\n",
            b"groupId\\\n=g\nartifactId\\ =a\nversion=\\\n\\\n  1\n",
            b"\\\ngroupId=g\n\\\n\nversion=\xe9\\ud83d\\ude00\nartifactId=\\\\\\\n x",
            b"groupId=a\\u12\nartifactId\nversion= \\ \n",
        ];
        let cases = differential_cases(seeds, b"\\\n\r \t=:#!u0aZ", 3000);
        let Some(java) = java_reference("props", &cases) else {
            eprintln!("no java on this machine; skipped");
            return;
        };
        let mut compared = 0;
        for (case, want) in cases.iter().zip(&java) {
            if want == "EXC" {
                continue;
            }
            let [g, a, v] = pom_values(case);
            // A lone surrogate escape: Java keeps it (and prints `?`), a Rust
            // string cannot hold it and gets U+FFFD.
            if [&g, &a, &v]
                .iter()
                .any(|x| x.as_deref().is_some_and(|x| x.contains('\u{fffd}')))
            {
                continue;
            }
            let got = format!(
                "{} {} {}",
                hex(g.as_deref()),
                hex(a.as_deref()),
                hex(v.as_deref())
            );
            assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(case));
            compared += 1;
        }
        assert!(compared > 2000, "{compared}");
    }

    /// Our manifest reader agrees with `java.util.jar.Manifest` wherever
    /// Java accepts the input (Java is stricter: it refuses a last line
    /// without a newline, a missing space after the colon, lines over 512
    /// bytes). Values are compared trimmed, symbolic names without `;`.
    #[test]
    fn manifest_matches_java() {
        let seeds: &[&[u8]] = &[
            b"Manifest-Version: 1.0\r\nImplementation-Title: Caf\xc3\r\n \xa9 x\r\nImplementation-Version: 9.1\r\n\r\nName: a\r\nBundle-Version: 2\r\n",
            b"Bundle-SymbolicName: org.x.y;singleton:=true\nbundle-version: 1.2\n\n",
            b"Implementation-Vendor-Id: org.x\rAutomatic-Module-Name: m\r\rImplementation-Version: 3\r",
            b"Implementation-Title: a\n b\n  c\nImplementation-Title: d\n\n",
        ];
        let cases = differential_cases(seeds, b"\r\n :;-xA.", 3000);
        let Some(java) = java_reference("manifest", &cases) else {
            eprintln!("no java on this machine; skipped");
            return;
        };
        let mut compared = 0;
        for (case, want) in cases.iter().zip(&java) {
            if want == "EXC" || std::str::from_utf8(case).is_err() {
                continue;
            }
            let want: Vec<String> = want
                .split(' ')
                .enumerate()
                .map(|(i, h)| {
                    if h == "-" {
                        return h.to_owned();
                    }
                    let bytes: Vec<u8> = (1..h.len())
                        .step_by(2)
                        .map(|j| u8::from_str_radix(&h[j..j + 2], 16).unwrap())
                        .collect();
                    let mut s = String::from_utf8(bytes).unwrap().trim().to_owned();
                    if i == 3 {
                        s = s.split(';').next().unwrap().trim().to_owned();
                    }
                    if s.is_empty() {
                        "-".to_owned()
                    } else {
                        hex(Some(&s))
                    }
                })
                .collect();
            let m = parse_manifest(case);
            let got: Vec<String> = [
                &m.implementation_title,
                &m.implementation_version,
                &m.implementation_vendor_id,
                &m.bundle_symbolic_name,
                &m.bundle_version,
                &m.automatic_module_name,
            ]
            .iter()
            .map(|v| hex(v.as_deref()))
            .collect();
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(case));
            compared += 1;
        }
        assert!(compared > 500, "{compared}");
    }

    use crate::parse::fuzz::Rng;
    use crate::parse::fuzz::mutate;

    #[test]
    fn fuzz_no_panics_and_bounded_output() {
        let jar = std::fs::read("/usr/share/java/commons-cli.jar").unwrap();
        let small = build_zip(
            &[
                (
                    b"META-INF/MANIFEST.MF",
                    b"Manifest-Version: 1.0\r\nImplementation-Version: 1\r\n\r\n",
                    METHOD_DEFLATED,
                ),
                (
                    b"META-INF/maven/g/a/pom.properties",
                    b"groupId=g\nartifactId=a\nversion=1\n",
                    METHOD_STORED,
                ),
                (b"BOOT-INF/lib/x.jar", b"PK\x05\x06", METHOD_STORED),
            ],
            &ZipOpts::default(),
        );
        let texts: &[&[u8]] = &[
            b"groupId=g\nartifactId=a\\\n  b\nversion=\\u0031\n",
            b"Manifest-Version: 1.0\r\nBundle-SymbolicName: a;b\r\n c\r\n\r\n",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..3000 {
            let seed = texts[rng.below(texts.len())];
            let text = mutate(&mut rng, seed, b"\\\r\n :=#!u0");
            if let Some(c) = parse_pom_properties(&text) {
                assert!(c.group_id.len() <= MAX_COORD_LEN && c.version.len() <= MAX_COORD_LEN);
            }
            let m = parse_manifest(&text);
            for v in manifest_map(&m).values() {
                assert!(v.len() <= 3 * MAX_MANIFEST_VALUE_LEN);
            }
            let _ = manifest_coords(&m, "x-1.jar");
            let names: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
            assert!(pom_properties_paths(names.iter().copied()).len() <= names.len());
            assert!(nested_jar_names(names.iter().copied()).len() <= names.len());
            // Whole jars, mutated: inspect never panics.
            let base: &[u8] = if i % 10 == 0 { &jar } else { &small };
            let bytes = mutate(&mut rng, base, b"PK\x01\x02\x03\x04\x05\x06\xff\x00");
            if let Ok(z) = ZipBytes::open(&bytes) {
                let info = inspect_jar(&z, "x-1.jar");
                assert!(info.poms.len() <= MAX_POM_FILES && info.nested.len() <= z.entries().len());
                let _ = info.coords("x-1.jar");
            }
        }
    }

    #[test]
    fn hostile_sizes_finish_quickly() {
        let t = crate::parse::fuzz::CpuTimer::start();
        // 64 MiB of continuation lines, comment lines and backslashes.
        let mut props = b"groupId=g\nartifactId=a\nversion=1\\\n".to_vec();
        props.extend(std::iter::repeat_n(b"\\\n".as_slice(), 8 << 20).flatten());
        props.extend(std::iter::repeat_n(b"#\\\\\\\n".as_slice(), 8 << 20).flatten());
        assert_eq!(parse_pom_properties(&props).map(|c| c.version), None);
        let mut mf = b"Implementation-Version: 1\n".to_vec();
        mf.extend(std::iter::repeat_n(b" xxxxxxx\n".as_slice(), 7 << 20).flatten());
        assert_eq!(parse_manifest(&mf).implementation_version, None);
        // 64 MiB of one header line with no newline.
        let mut line = b"Bundle-Name: ".to_vec();
        line.resize(64 << 20, b'n');
        assert_eq!(parse_manifest(&line).bundle_name, None);
        // A million pom.properties and nested jar names: capped.
        let names: Vec<Vec<u8>> = (0..1_000_000)
            .map(|i| {
                if i % 2 == 0 {
                    format!("META-INF/maven/g/a{i}/pom.properties").into_bytes()
                } else {
                    format!("WEB-INF/lib/l{i}.jar").into_bytes()
                }
            })
            .collect();
        assert_eq!(
            pom_properties_paths(names.iter().map(|n| n.as_slice())).len(),
            MAX_POM_FILES
        );
        assert_eq!(
            nested_jar_names(names.iter().map(|n| n.as_slice())).len(),
            MAX_NESTED_JARS
        );
        // A nested "jar" that is a deflate bomb stops at the nested cap.
        let bomb = zero_bomb(1 << 30);
        assert!(zip::inflate(METHOD_DEFLATED, &bomb, MAX_NESTED_JAR_LEN).is_err());
        // A bound against super-linear work (hours on these sizes), not a
        // measure of speed: a debug build on a loaded 2-core machine took
        // over 30 s, so the margin is wide.
        assert!(t.elapsed() < Duration::from_secs(600), "{:?}", t.elapsed());
    }
}
