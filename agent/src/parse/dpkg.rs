//! Parsers for the Debian package database: `/var/lib/dpkg/status`, the
//! `info/<pkg>.list` file lists, and the `status.d/<pkg>.md5sums` files that
//! distroless images ship instead of a full dpkg database.
//!
//! The status file is a sequence of deb822 paragraphs: `Field: value` lines,
//! with continuation lines starting with a space or tab, separated by blank
//! lines. Field names are case-insensitive. Quirks handled here:
//!
//! * Only paragraphs whose `Status:` third word is `installed` describe an
//!   installed package; others are removed packages that left conffiles
//!   behind (`deinstall ok config-files`), half-installed packages, and so on.
//! * `Source:` is optional and defaults to the package name; when the source
//!   version differs from the binary version (binNMUs, or packages built from
//!   a differently versioned source) it reads `Source: name (version)`.
//! * `Multi-Arch: same` packages name their info files `name:arch.list`,
//!   every other package uses `name.list`.
//! * Files written on other systems or edited by hand may use CRLF line ends,
//!   lack the final newline, or separate paragraphs by several blank lines
//!   (or lines holding only whitespace).
//!
//! The package name, architecture and source name are validated against the
//! Debian policy character sets. This matters beyond tidiness: the caller
//! builds file names such as `info/<name>:<arch>.list` from them, so a
//! hostile database in a container image must not be able to smuggle `/` or
//! `..` into a path.

/// One installed package from the dpkg status database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpkgPackage {
    /// Binary package name, e.g. `libc6`.
    pub name: String,
    /// Architecture, e.g. `amd64` or `all`.
    pub arch: String,
    /// Binary package version, e.g. `2.36-9+deb12u14`.
    pub version: String,
    /// Source package name, e.g. `glibc`.
    pub source: String,
    /// Source package version.
    pub source_version: String,
    /// Whether the package is `Multi-Arch: same`.
    pub multi_arch_same: bool,
}

impl DpkgPackage {
    /// The file name stem an info list uses for this package: `name:arch`
    /// when `multi_arch_same`, else `name`.
    pub fn list_stem(&self) -> String {
        if self.multi_arch_same {
            format!("{}:{}", self.name, self.arch)
        } else {
            self.name.clone()
        }
    }
}

/// Parses a dpkg status file (deb822 paragraphs). Only packages whose Status
/// third word is "installed" are returned. Source defaults to the package
/// name and `source_version` to version; "Source: foo (1.2-3)" sets both.
/// Continuation lines (starting with space/tab) belong to the previous field.
/// Tolerate CRLF, missing trailing newline, paragraphs separated by several
/// blank lines, fields in any order, and skip (do not fail on) malformed
/// paragraphs; return the count skipped.
///
/// A paragraph is malformed when it has a line that is neither a field nor a
/// continuation, a continuation with no field before it, a repeated field
/// among the ones read here, no `Package:` or `Status:`, or (when installed)
/// no valid `Version:` or `Architecture:`, or invalid names. Paragraphs that
/// are well-formed but not installed are skipped without being counted.
pub fn parse_status_db(bytes: &[u8]) -> (Vec<DpkgPackage>, usize) {
    let (entries, malformed) = parse_status_entries(bytes);
    let packages = entries
        .into_iter()
        .filter(|e| e.files == Files::Installed)
        .filter_map(|e| e.package)
        .collect();
    (packages, malformed)
}

/// What a paragraph says about the package's files on disk, from the third
/// word of its `Status:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// `installed`: the files are `Version`'s.
    Installed,
    /// `unpacked`, `half-configured`, `triggers-awaited`,
    /// `triggers-pending`: the files are `Version`'s, not yet (or no longer
    /// fully) configured. An upgrade passes through these states between
    /// apt's `dpkg --unpack` and `dpkg --configure`.
    Unpacked,
    /// `half-installed`: dpkg is replacing the files (or failed half way),
    /// so some may be the old version's and some the new one's, and the
    /// paragraph's `Version` may be either.
    HalfInstalled,
    /// `not-installed`, `config-files`: no program files.
    Absent,
}

/// One paragraph of a status file or of a journal entry in `updates/`,
/// whatever the package's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// The package name; with `arch`, the key a later journal entry
    /// replaces.
    pub name: String,
    /// The architecture, absent from some `not-installed` paragraphs.
    pub arch: Option<String>,
    pub files: Files,
    /// The package, unless its files are `Absent`.
    pub package: Option<DpkgPackage>,
}

/// Parses a status file, or one of dpkg's journal entries
/// (`/var/lib/dpkg/updates/NNNN`, the same format), keeping every state:
/// a journal entry that says a package is now `half-installed` or
/// `not-installed` must replace what the status file said. Malformed
/// paragraphs are skipped and counted as in [`parse_status_db`].
pub fn parse_status_entries(bytes: &[u8]) -> (Vec<StatusEntry>, usize) {
    let mut entries = Vec::new();
    let mut malformed = 0;
    let mut para = Paragraph::default();
    let mut in_para = false;
    for line in super::lines(bytes) {
        // CRLF files: the '\r' is never part of a value we care about.
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            if in_para {
                finish(&mut para, &mut entries, &mut malformed);
                in_para = false;
            }
            continue;
        }
        in_para = true;
        para.add_line(line);
    }
    if in_para {
        finish(&mut para, &mut entries, &mut malformed);
    }
    (entries, malformed)
}

/// Converts the paragraph just read into an entry (or a skip) and resets it.
fn finish(para: &mut Paragraph<'_>, entries: &mut Vec<StatusEntry>, malformed: &mut usize) {
    match std::mem::take(para).into_entry() {
        Ok(e) => entries.push(e),
        Err(()) => *malformed += 1,
    }
}

/// The fields of one paragraph that matter, borrowed from the input.
#[derive(Default)]
struct Paragraph<'a> {
    package: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
    arch: Option<&'a [u8]>,
    source: Option<&'a [u8]>,
    multi_arch: Option<&'a [u8]>,
    /// Whether any field line has been seen, so a leading continuation line
    /// can be told apart from a continuation of an ignored field.
    has_field: bool,
    /// Set as soon as the paragraph is known to be unusable.
    bad: bool,
}

impl<'a> Paragraph<'a> {
    fn add_line(&mut self, line: &'a [u8]) {
        if self.bad {
            return;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // A continuation line extends the previous field. None of the
            // fields read here is multi-line (Description and Conffiles are),
            // so continuations only need to be recognised, never stored: in
            // particular " Package: x" inside a Description is not a field.
            if !self.has_field {
                self.bad = true;
            }
            return;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            self.bad = true;
            return;
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.is_empty() {
            self.bad = true;
            return;
        }
        self.has_field = true;
        let slot = if name.eq_ignore_ascii_case(b"Package") {
            &mut self.package
        } else if name.eq_ignore_ascii_case(b"Status") {
            &mut self.status
        } else if name.eq_ignore_ascii_case(b"Version") {
            &mut self.version
        } else if name.eq_ignore_ascii_case(b"Architecture") {
            &mut self.arch
        } else if name.eq_ignore_ascii_case(b"Source") {
            &mut self.source
        } else if name.eq_ignore_ascii_case(b"Multi-Arch") {
            &mut self.multi_arch
        } else {
            return;
        };
        if slot.is_some() {
            // dpkg itself refuses duplicate fields.
            self.bad = true;
        } else {
            *slot = Some(value);
        }
    }

    /// The entry of a well-formed paragraph, `Err(())` for a malformed one.
    fn into_entry(self) -> Result<StatusEntry, ()> {
        if self.bad {
            return Err(());
        }
        let name = self.package.ok_or(())?;
        let mut words = super::fields(self.status.ok_or(())?);
        let (_want, _flag, state) = (words.next(), words.next(), words.next().ok_or(())?);
        if words.next().is_some() {
            return Err(());
        }
        if !valid_package_name(name) {
            return Err(());
        }
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| ());
        let files = match state {
            b"installed" => Files::Installed,
            b"unpacked" | b"half-configured" | b"triggers-awaited" | b"triggers-pending" => {
                Files::Unpacked
            }
            b"half-installed" => Files::HalfInstalled,
            _ => Files::Absent,
        };
        if files == Files::Absent {
            return Ok(StatusEntry {
                name: text(name)?,
                arch: self.arch.filter(|a| valid_arch(a)).map(text).transpose()?,
                files,
                package: None,
            });
        }
        let arch = self.arch.filter(|a| valid_arch(a)).ok_or(())?;
        let version = self.version.filter(|v| valid_version(v)).ok_or(())?;
        let (source, source_version) = match self.source {
            None => (name, version),
            Some(s) => parse_source(s, version)?,
        };
        let package = DpkgPackage {
            name: text(name)?,
            arch: text(arch)?,
            version: text(version)?,
            source: text(source)?,
            source_version: text(source_version)?,
            multi_arch_same: self.multi_arch == Some(b"same"),
        };
        Ok(StatusEntry {
            name: package.name.clone(),
            arch: Some(package.arch.clone()),
            files,
            package: Some(package),
        })
    }
}

/// Splits `name` or `name (version)`.
fn parse_source<'a>(value: &'a [u8], version: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ()> {
    let (name, source_version) = match value.iter().position(|&b| b == b'(') {
        None => (value, version),
        Some(open) => {
            let inner = value[open + 1..].strip_suffix(b")").ok_or(())?;
            (value[..open].trim_ascii(), inner.trim_ascii())
        }
    };
    if !valid_package_name(name) || !valid_version(source_version) {
        return Err(());
    }
    Ok((name, source_version))
}

/// Debian policy 5.6.1: at least two characters from `a-z0-9+-.`, starting
/// with an alphanumeric. Upper case is tolerated (old databases have it), and
/// a single character is tolerated too; anything that could form a path
/// component other than a plain name (`/`, `..`, NUL, `:`) is not.
fn valid_package_name(name: &[u8]) -> bool {
    name.first().is_some_and(u8::is_ascii_alphanumeric)
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !name.windows(2).any(|w| w == b"..")
}

/// Architecture names are lower-case letters, digits and `-` (`amd64`,
/// `all`, `musl-linux-arm64`).
fn valid_arch(arch: &[u8]) -> bool {
    !arch.is_empty() && arch.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Versions are `[epoch:]upstream[-revision]` from a restricted ASCII set;
/// here we only insist on non-empty printable ASCII without spaces, which is
/// enough to keep the value sane as a string and as part of a report.
fn valid_version(version: &[u8]) -> bool {
    !version.is_empty() && version.iter().all(u8::is_ascii_graphic)
}

/// info/<pkg>[:arch].list: one absolute path per line. Skip empty lines and
/// "/." ; keep bytes exact (no UTF-8 requirement).
///
/// Lines that do not start with `/` cannot be installed paths and are skipped
/// as well. No other normalisation is done; in particular a trailing `\r` is
/// kept because it is a legal file-name byte.
pub fn parse_file_list(bytes: &[u8]) -> Vec<Vec<u8>> {
    file_list_entries(bytes).map(<[u8]>::to_vec).collect()
}

/// The paths of `parse_file_list`, borrowed from `bytes`: a host's lists
/// hold about 120,000 paths, which a scan then indexes and drops, so
/// copying each into its own allocation first was a tenth of a one-shot
/// scan's CPU.
pub fn file_list_entries(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    super::lines(bytes).filter(|l| l.first() == Some(&b'/') && *l != b"/.")
}

/// status.d/<pkg>.md5sums (distroless): "<md5>  <path without leading
/// slash>" per line -> absolute paths ("/" prepended).
///
/// The digest is any run of hex digits (so other digest lengths work too),
/// followed by the `md5sum` separator: a space and then either a second space
/// (text mode) or `*` (binary mode); a single space is tolerated. Malformed
/// lines are skipped. A path that already starts with `/` is not given a
/// second one. The path is otherwise kept byte-exact.
pub fn parse_md5sums(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for line in super::lines(bytes) {
        let digest_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digest_len == 0 {
            continue;
        }
        let Some(rest) = line[digest_len..].strip_prefix(b" ") else {
            continue;
        };
        let path = match rest.first() {
            Some(b' ' | b'*') => &rest[1..],
            _ => rest,
        };
        if path.is_empty() {
            continue;
        }
        let mut abs = Vec::with_capacity(path.len() + 1);
        if path[0] != b'/' {
            abs.push(b'/');
        }
        abs.extend_from_slice(path);
        out.push(abs);
    }
    out
}

/// An excerpt of a real `/var/lib/dpkg/status` (Debian 12), with a removed
/// package, a binNMU-style source version and a CRLF paragraph added.
#[cfg(test)]
pub(crate) const SAMPLE_STATUS: &[u8] = b"\
Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 13001
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u14
Replaces: libc6-amd64
Depends: libgcc-s1
Recommends: libidn2-0 (>= 2.0.5~)
Suggests: glibc-doc, debconf | debconf-2.0, libc-l10n, locales, libnss-nis, libnss-nisplus
Breaks: aide (<< 0.17.3-4+b3), busybox (<< 1.30.1-6)
Conffiles:
 /etc/gai.conf 28fa76ff5a9e0566eaa1e11f1ce51f09
 /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system. This package includes shared versions of the standard C library
 and the standard math library, as well as many others.
Homepage: https://www.gnu.org/software/libc/libc.html

Package: bash
Essential: yes
Status: install ok installed
Priority: required
Section: shells
Installed-Size: 7164
Maintainer: Matthias Klose <doko@debian.org>
Architecture: amd64
Multi-Arch: foreign
Version: 5.2.15-2+b7
Replaces: bash-completion (<< 20060301-0), bash-doc (<= 2.05-1)
Depends: base-files (>= 2.1.12), debianutils (>= 5.6-0.1)
Pre-Depends: libc6 (>= 2.36), libtinfo6 (>= 6)
Description: GNU Bourne Again SHell
 Package: not-a-field
 .
 Bash is an sh-compatible command language interpreter.

Package: libssl3
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: openssl (3.0.15-1~deb12u1)
Version: 3.0.15-1~deb12u1+b1
Description: Secure Sockets Layer toolkit - shared libraries



Package: old-removed
Status: deinstall ok config-files
Architecture: all
Version: 1.0-1

package: tzdata\r
status: hold ok installed\r
architecture: all\r
version: 2024a-0+deb12u1\r
\r
Package: broken
Status: install ok installed
Version: 1.0
";

/// The first lines of a real `/var/lib/dpkg/info/libc6:amd64.list`.
#[cfg(test)]
pub(crate) const SAMPLE_LIST: &[u8] = b"/.
/etc
/etc/gai.conf
/etc/ld.so.conf.d
/etc/ld.so.conf.d/x86_64-linux-gnu.conf
/lib
/lib/x86_64-linux-gnu
/lib/x86_64-linux-gnu/libc.so.6
/lib64
/lib64/ld-linux-x86-64.so.2
";

/// The first lines of a real `libc6:amd64.md5sums`.
#[cfg(test)]
pub(crate) const SAMPLE_MD5SUMS: &[u8] = b"\
108877c29ef6a482337ddc42ea8b0985  lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
33f1cb6525f26614bd3a334d63632484  lib/x86_64-linux-gnu/libc.so.6
3d4948fc370f491a86669cad3021ab50  usr/share/doc/libc6/NEWS.Debian.gz
";

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(
        name: &str,
        arch: &str,
        version: &str,
        source: &str,
        sv: &str,
        same: bool,
    ) -> DpkgPackage {
        DpkgPackage {
            name: name.into(),
            arch: arch.into(),
            version: version.into(),
            source: source.into(),
            source_version: sv.into(),
            multi_arch_same: same,
        }
    }

    #[test]
    fn sample_status() {
        let (pkgs, bad) = parse_status_db(SAMPLE_STATUS);
        assert_eq!(
            pkgs,
            vec![
                pkg(
                    "libc6",
                    "amd64",
                    "2.36-9+deb12u14",
                    "glibc",
                    "2.36-9+deb12u14",
                    true
                ),
                pkg("bash", "amd64", "5.2.15-2+b7", "bash", "5.2.15-2+b7", false),
                pkg(
                    "libssl3",
                    "amd64",
                    "3.0.15-1~deb12u1+b1",
                    "openssl",
                    "3.0.15-1~deb12u1",
                    true
                ),
                pkg(
                    "tzdata",
                    "all",
                    "2024a-0+deb12u1",
                    "tzdata",
                    "2024a-0+deb12u1",
                    false
                ),
            ]
        );
        // Only "broken" (no Architecture) is malformed; "old-removed" is just
        // not installed.
        assert_eq!(bad, 1);
        assert_eq!(pkgs[0].list_stem(), "libc6:amd64");
        assert_eq!(pkgs[1].list_stem(), "bash");
    }

    #[test]
    fn malformed_paragraphs_are_skipped_and_counted() {
        let input: &[u8] = b"\
 leading continuation
Package: a
Status: install ok installed
Architecture: amd64
Version: 1

Package: dup
Package: dup
Status: install ok installed
Architecture: amd64
Version: 1

Package: nocolon
this line has no colon
Status: install ok installed
Architecture: amd64
Version: 1

Package: ../../etc/passwd
Status: install ok installed
Architecture: amd64
Version: 1

Package: badarch
Status: install ok installed
Architecture: amd64/../x
Version: 1

Package: badsource
Status: install ok installed
Architecture: amd64
Source: foo (1.0
Version: 1

Package: badstatus
Status: installed
Architecture: amd64
Version: 1

Package: badversion
Status: install ok installed
Architecture: amd64
Version: 1 2

Package: utf8
Status: install ok installed
Architecture: amd64
Version: \xff

Status: install ok installed

Package: good
Status: install ok installed
Architecture: arm64
Source: src
Version: 1:2.0-1
";
        let (pkgs, bad) = parse_status_db(input);
        assert_eq!(
            pkgs,
            vec![pkg("good", "arm64", "1:2.0-1", "src", "1:2.0-1", false)]
        );
        assert_eq!(bad, 10);
    }

    #[test]
    fn layout_tolerance() {
        // No trailing newline, whitespace-only separators, any field order,
        // tabs after the colon, continuation of an ignored field.
        let input = b"\n\n   \nVersion:\t1.0\nDescription: x\n\tmore\nArchitecture: all\nPackage: p\nStatus: install ok installed\n \t \n\n\nPackage: q\nStatus: install ok installed\nVersion: 2\nArchitecture: all\nMulti-Arch: same";
        let (pkgs, bad) = parse_status_db(input);
        assert_eq!(bad, 0);
        assert_eq!(pkgs.len(), 2);
        assert_eq!(pkgs[0].version, "1.0");
        assert!(pkgs[1].multi_arch_same);
        assert_eq!(pkgs[1].list_stem(), "q:all");
        // Paragraphs that are well-formed but not installed are not counted.
        for status in [
            "deinstall ok config-files",
            "install ok half-installed",
            "purge ok not-installed",
            "install reinstreq unpacked",
        ] {
            let input = format!("Package: p\nStatus: {status}\nVersion: 1\nArchitecture: all\n");
            assert_eq!(parse_status_db(input.as_bytes()), (vec![], 0), "{status}");
        }
        // A removed package may have lost its Version and Architecture.
        assert_eq!(
            parse_status_db(b"Package: p\nStatus: purge ok not-installed\n"),
            (vec![], 0)
        );
        assert_eq!(parse_status_db(b""), (vec![], 0));
        assert_eq!(parse_status_db(b"\r\n\r\n"), (vec![], 0));
    }

    #[test]
    fn source_field() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("foo", Some(("foo", "9"))),
            ("foo (1.2-3)", Some(("foo", "1.2-3"))),
            ("foo(1.2-3)", Some(("foo", "1.2-3"))),
            ("foo ( 1:1.2-3 )", Some(("foo", "1:1.2-3"))),
            ("foo (1.2-3", None),
            ("foo ()", None),
            ("(1.0)", None),
            ("foo bar", None),
            ("foo (1 2)", None),
        ];
        for &(source, want) in cases {
            let input = format!(
                "Package: p\nStatus: install ok installed\nArchitecture: all\nVersion: 9\nSource: {source}\n"
            );
            let (pkgs, bad) = parse_status_db(input.as_bytes());
            match want {
                Some((s, v)) => {
                    assert_eq!(bad, 0, "{source}");
                    assert_eq!(
                        (pkgs[0].source.as_str(), pkgs[0].source_version.as_str()),
                        (s, v)
                    );
                }
                None => assert_eq!((pkgs.len(), bad), (0, 1), "{source}"),
            }
        }
    }

    #[test]
    fn file_lists() {
        let paths = parse_file_list(SAMPLE_LIST);
        assert_eq!(paths.len(), 9);
        assert_eq!(paths[0], b"/etc");
        assert!(
            paths
                .iter()
                .any(|p| p == b"/lib/x86_64-linux-gnu/libc.so.6")
        );
        let odd = parse_file_list(b"\n/.\n/a b\n/\xff\xfe\n/x\r\nrelative\n\n/\0nul\n/last");
        assert_eq!(
            odd,
            vec![
                b"/a b".to_vec(),
                b"/\xff\xfe".to_vec(),
                b"/x\r".to_vec(),
                b"/\0nul".to_vec(),
                b"/last".to_vec()
            ]
        );
    }

    #[test]
    fn md5sums() {
        assert_eq!(
            parse_md5sums(SAMPLE_MD5SUMS),
            vec![
                b"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".to_vec(),
                b"/lib/x86_64-linux-gnu/libc.so.6".to_vec(),
                b"/usr/share/doc/libc6/NEWS.Debian.gz".to_vec(),
            ]
        );
        let odd = parse_md5sums(
            b"abc *bin/mode\nabc single\nabc  /already/abs\nabc   leading space\nnothex  x\nabc\nabc \nabc  \n  x\nabc  a\xffb\n",
        );
        assert_eq!(
            odd,
            vec![
                b"/bin/mode".to_vec(),
                b"/single".to_vec(),
                b"/already/abs".to_vec(),
                b"/ leading space".to_vec(),
                b"/a\xffb".to_vec(),
            ]
        );
    }

    #[test]
    fn hostile_inputs() {
        let big = 4 << 20;
        for input in [
            vec![b'a'; big],
            vec![b'\n'; big],
            vec![b' '; big],
            vec![b':'; big],
            vec![0u8; big],
            vec![0xff; big],
        ] {
            let (pkgs, _) = parse_status_db(&input);
            assert!(pkgs.is_empty());
            let _ = parse_file_list(&input);
            let _ = parse_md5sums(&input);
        }
        // A 4 MiB description does not disturb the package around it.
        let mut input = b"Package: p\nStatus: install ok installed\nDescription: x\n ".to_vec();
        input.extend(std::iter::repeat_n(b'y', big));
        input.extend_from_slice(b"\nVersion: 1\nArchitecture: all\n");
        assert_eq!(parse_status_db(&input).0.len(), 1);
        // A 4 MiB path and a 4 MiB digest.
        let mut l = b"/".to_vec();
        l.extend(std::iter::repeat_n(b'p', big));
        assert_eq!(parse_file_list(&l)[0].len(), big + 1);
        let mut l = vec![b'f'; big];
        l.extend_from_slice(b"  x");
        assert_eq!(parse_md5sums(&l), vec![b"/x".to_vec()]);
        // Embedded NULs and newlines inside values.
        let (pkgs, bad) = parse_status_db(
            b"Package: p\0\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n",
        );
        assert_eq!((pkgs.len(), bad), (0, 1));
        // Truncating the sample anywhere never panics and never invents
        // packages.
        for n in 0..SAMPLE_STATUS.len() {
            let (pkgs, _) = parse_status_db(&SAMPLE_STATUS[..n]);
            assert!(pkgs.len() <= 4);
        }
    }

    /// Runs `dpkg-query` (test-only I/O) and returns its output, or `None`
    /// when dpkg is not available on this machine.
    fn dpkg_query(format: &str, package: Option<&str>) -> Option<String> {
        let mut cmd = std::process::Command::new("dpkg-query");
        cmd.arg("-W").arg("-f").arg(format);
        if let Some(p) = package {
            cmd.arg(p);
        }
        let out = cmd.output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn matches_the_real_dpkg_database() {
        // Test-only I/O: the parser itself never reads files.
        let Ok(bytes) = std::fs::read("/var/lib/dpkg/status") else {
            eprintln!("no /var/lib/dpkg/status here; skipping");
            return;
        };
        let (pkgs, bad) = parse_status_db(&bytes);
        assert_eq!(bad, 0, "the real database has no malformed paragraphs");
        let Some(libc_version) = dpkg_query("${Version}", Some("libc6")) else {
            eprintln!("no dpkg-query here; skipping");
            return;
        };
        let libc6: Vec<_> = pkgs.iter().filter(|p| p.name == "libc6").collect();
        assert!(!libc6.is_empty());
        assert!(
            libc6
                .iter()
                .all(|p| p.version == libc_version && p.source == "glibc")
        );

        // Compare every installed package with dpkg's own view. The second
        // letter of db:Status-Abbrev is 'i' exactly when the status word is
        // "installed".
        let listing = dpkg_query(
            "${db:Status-Abbrev}\t${Package}\t${Architecture}\t${Version}\t${source:Package}\t${source:Version}\t${Multi-Arch}\n",
            None,
        )
        .expect("dpkg-query listing");
        let mut want: Vec<DpkgPackage> = listing
            .lines()
            .filter(|l| l.as_bytes().get(1) == Some(&b'i'))
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                pkg(f[1], f[2], f[3], f[4], f[5], f[6] == "same")
            })
            .collect();
        let mut got = pkgs.clone();
        let key = |p: &DpkgPackage| (p.name.clone(), p.arch.clone());
        want.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(got.len(), want.len());
        assert_eq!(got, want);

        // Every installed package has an info list named after list_stem().
        for p in &pkgs {
            let list = format!("/var/lib/dpkg/info/{}.list", p.list_stem());
            assert!(std::path::Path::new(&list).exists(), "{list}");
        }
    }

    #[test]
    fn parses_the_real_libc6_file_list() {
        // Test-only I/O: the parser itself never reads files.
        for (file, parse) in [
            (
                "/var/lib/dpkg/info/libc6:amd64.list",
                parse_file_list as fn(&[u8]) -> Vec<Vec<u8>>,
            ),
            ("/var/lib/dpkg/info/libc6:amd64.md5sums", parse_md5sums),
        ] {
            let Ok(bytes) = std::fs::read(file) else {
                eprintln!("no {file} here; skipping");
                continue;
            };
            let paths = parse(&bytes);
            assert!(
                paths
                    .iter()
                    .any(|p| p == b"/lib/x86_64-linux-gnu/libc.so.6"),
                "{file}"
            );
            assert!(paths.iter().all(|p| p.starts_with(b"/") && p != b"/."));
        }
    }
}
