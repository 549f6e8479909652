//! Parser for Alpine's package database, `/lib/apk/db/installed`.
//!
//! The file is a sequence of paragraphs, one per installed package,
//! separated by blank lines. Each line is a one-letter key, a colon and a
//! value (`P:musl`). The keys read here:
//!
//! * `P` package name, `V` version (`1.2.4-r1`), `A` architecture, `o`
//!   origin (the aport, i.e. the source package, that built it);
//! * `F` a directory, relative to the root (`usr/lib`), and `R` a file in
//!   the directory named by the most recent `F` of the same paragraph.
//!
//! Everything else (`C` checksum, `D` dependencies, `p` provides, `Z` file
//! checksum, `a`/`M` ownership and mode, `T` description, ...) is skipped.
//! Quirks handled here:
//!
//! * apk writes a blank line after every paragraph, so the file ends with
//!   two newlines; a file cut short may lack them. Several blank lines in a
//!   row, whitespace-only lines and CRLF line ends are tolerated.
//! * `o:` is absent in packages not built by abuild; the origin then
//!   defaults to the package name (as `Source:` does for dpkg).
//! * A directory may appear in several paragraphs (every package that puts
//!   something in `usr/lib` lists it), and a package may list a directory
//!   with no files in it; only `R` lines produce files.
//! * apk keeps a paragraph for a package with no files at all (meta
//!   packages such as `libc-utils`).
//! * Values are not required to be UTF-8 by apk; the maintainer line of
//!   real databases holds UTF-8 names (`Timo Teräs`).
//!
//! Paths are returned absolute (`/usr/lib/libz.so.1`), byte-exact. The
//! database is hostile input, so file entries that could not name a path
//! inside the root are dropped: an `R` value containing `/` or equal to
//! `.` or `..`, an `F` value that is absolute or has a `.`/`..` component,
//! and an `R` before any `F`. Package names are validated because callers
//! may use them in file names and reports.

/// The most packages one database may yield. Real Alpine images have tens
/// to a few thousand.
pub const MAX_PACKAGES: usize = 100_000;

/// The most bytes the reconstructed file paths of the whole database may
/// add up to. An `F` line can be reused by any number of `R` lines, so
/// without this cap a small file could expand into gigabytes of paths.
/// Files beyond the cap are dropped and the packages still returned.
pub const MAX_FILE_LIST_BYTES: usize = 64 << 20;

/// The longest path kept (Linux's `PATH_MAX`). Longer ones cannot be
/// opened, so they are dropped.
pub const MAX_PATH_LEN: usize = 4096;

/// One installed package from the apk database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkPackage {
    /// Package name, e.g. `libssl3`.
    pub name: String,
    /// Version, e.g. `3.1.2-r0`.
    pub version: String,
    /// Architecture, e.g. `x86_64` or `noarch`; empty when the paragraph
    /// has no `A:` line.
    pub arch: String,
    /// Origin (source aport), e.g. `openssl`; the name when absent.
    pub origin: String,
    /// Absolute paths of the package's files, in database order.
    pub files: Vec<Vec<u8>>,
}

/// Parses `lib/apk/db/installed`. Returns the packages and the number of
/// paragraphs skipped as malformed: those without a valid `P:` or `V:`,
/// with a repeated `P`/`V`/`A`/`o` line, with a line that is not `X:value`,
/// or with a name, version, arch or origin that is not valid (see the
/// module docs). Paragraphs past [`MAX_PACKAGES`] are skipped and counted
/// too.
pub fn parse_installed(bytes: &[u8]) -> (Vec<ApkPackage>, usize) {
    let mut state = State::default();
    let mut para = Paragraph::default();
    for line in super::lines(bytes) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            state.finish(&mut para);
            continue;
        }
        para.add_line(line, &mut state.path_bytes);
    }
    state.finish(&mut para);
    (state.packages, state.malformed)
}

/// What the parse has produced so far.
#[derive(Default)]
struct State {
    packages: Vec<ApkPackage>,
    malformed: usize,
    /// Bytes of file paths produced so far, against [`MAX_FILE_LIST_BYTES`].
    path_bytes: usize,
}

impl State {
    /// Turns the paragraph just read into a package (or a skip) and resets
    /// it. An empty paragraph (between two blank lines) is nothing.
    fn finish(&mut self, para: &mut Paragraph<'_>) {
        let para = std::mem::take(para);
        if !para.seen {
            return;
        }
        if self.packages.len() >= MAX_PACKAGES {
            self.malformed += 1;
            return;
        }
        match para.into_package() {
            Some(p) => self.packages.push(p),
            None => self.malformed += 1,
        }
    }
}

/// The fields of one paragraph, borrowed from the input.
#[derive(Default)]
struct Paragraph<'a> {
    seen: bool,
    bad: bool,
    name: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
    arch: Option<&'a [u8]>,
    origin: Option<&'a [u8]>,
    /// The current `F:` directory: `None` before the first, `Some(None)`
    /// after one that cannot be used (its `R` lines are dropped).
    dir: Option<Option<&'a [u8]>>,
    files: Vec<Vec<u8>>,
}

impl<'a> Paragraph<'a> {
    fn add_line(&mut self, line: &'a [u8], path_bytes: &mut usize) {
        self.seen = true;
        if self.bad {
            return;
        }
        let (key, value) = match line {
            [key, b':', value @ ..] => (*key, value),
            _ => {
                self.bad = true;
                return;
            }
        };
        let slot = match key {
            b'P' => &mut self.name,
            b'V' => &mut self.version,
            b'A' => &mut self.arch,
            b'o' => &mut self.origin,
            b'F' => {
                self.dir = Some(valid_dir(value).then_some(value));
                return;
            }
            b'R' => {
                if let Some(Some(dir)) = self.dir {
                    self.add_file(dir, value, path_bytes);
                }
                return;
            }
            _ => return,
        };
        if slot.is_some() {
            self.bad = true;
        } else {
            *slot = Some(value);
        }
    }

    /// Adds `/dir/name` when `name` is a plain file name and the path fits
    /// the caps.
    fn add_file(&mut self, dir: &[u8], name: &[u8], path_bytes: &mut usize) {
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
            return;
        }
        // "/" + dir + "/" + name, or "/" + name for the root directory.
        let len = 1 + dir.len() + usize::from(!dir.is_empty()) + name.len();
        if len > MAX_PATH_LEN || *path_bytes + len > MAX_FILE_LIST_BYTES {
            return;
        }
        *path_bytes += len;
        let mut path = Vec::with_capacity(len);
        path.push(b'/');
        if !dir.is_empty() {
            path.extend_from_slice(dir);
            path.push(b'/');
        }
        path.extend_from_slice(name);
        self.files.push(path);
    }

    fn into_package(self) -> Option<ApkPackage> {
        if self.bad {
            return None;
        }
        let name = self.name.filter(|n| valid_name(n))?;
        let version = self.version.filter(|v| valid_word(v))?;
        let arch = match self.arch {
            None => &b""[..],
            Some(a) => Some(a).filter(|a| valid_word(a))?,
        };
        let origin = match self.origin {
            None => name,
            Some(o) => Some(o).filter(|o| valid_name(o))?,
        };
        // All four are ASCII by now, so these cannot fail.
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        Some(ApkPackage {
            name: text(name)?,
            version: text(version)?,
            arch: text(arch)?,
            origin: text(origin)?,
            files: self.files,
        })
    }
}

/// Package and origin names: printable ASCII without spaces or `/`, not
/// `.` or `..`, not starting with `-`. apk-tools itself allows
/// `[A-Za-z0-9_.+-]` and a few more.
fn valid_name(name: &[u8]) -> bool {
    valid_word(name) && !name.contains(&b'/') && name != b"." && name != b".." && name[0] != b'-'
}

/// Versions and architectures: non-empty printable ASCII without spaces.
fn valid_word(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(u8::is_ascii_graphic)
}

/// A directory relative to the root: not absolute, no empty, `.` or `..`
/// components. The empty string is the root itself.
fn valid_dir(dir: &[u8]) -> bool {
    dir.is_empty()
        || dir
            .split(|&b| b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// Paragraphs from a real Alpine 3.18 aarch64 database (the second one
/// shortened) and a made-up one without origin or files, for the fuzz
/// loops.
#[cfg(test)]
pub(crate) const SAMPLE: &[u8] = b"\
C:Q1W9bNRsvWY9M6bK1xczGEXAHIID4=
P:zlib
V:1.2.13-r1
A:aarch64
S:52659
I:143360
T:A compression/decompression Library
U:https://zlib.net/
L:Zlib
o:zlib
m:Natanael Copa <ncopa@alpinelinux.org>
t:1681228881
c:84a227baf001b6e0208e3352b294e4d7a40e93de
D:so:libc.musl-aarch64.so.1
p:so:libz.so.1=1.2.13
F:lib
R:libz.so.1
a:0:0:777
Z:Q16A/yKXYR0EF3avf+wJzXcNLZHgU=
R:libz.so.1.2.13
a:0:0:755
Z:Q1xUsJjsEavwD6+3qb6onGWpseXnQ=

C:Q1ZMq6MGv+JSXQAOE76jyCe5dWyRc=
P:libssl3
V:3.1.2-r0
A:aarch64
o:openssl
F:lib
R:libssl.so.3
a:0:0:755
F:usr
F:usr/lib
R:libssl.so.3
a:0:0:777

P:pkgname
V:1.2.3
A:x86_64

";

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn testdata() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/apk")
    }

    fn paths(files: &[Vec<u8>]) -> Vec<&str> {
        files
            .iter()
            .map(|f| std::str::from_utf8(f).unwrap())
            .collect()
    }

    #[test]
    fn real_alpine_database() {
        // Test-only I/O: the parser itself never reads files.
        let bytes = std::fs::read(testdata().join("root/lib/apk/db/installed")).unwrap();
        let (pkgs, bad) = parse_installed(&bytes);
        assert_eq!(bad, 0);
        // Counted independently on the file:
        //   grep -c '^P:' installed            -> 11 packages
        //   grep -c '^R:' installed            -> 68 files
        //   awk (name, version, arch, origin, R lines per paragraph):
        let want: &[(&str, &str, &str, &str, usize)] = &[
            ("musl", "1.1.16-r9", "x86_64", "musl", 2),
            ("busybox", "1.26.2-r5", "x86_64", "busybox", 6),
            (
                "alpine-baselayout",
                "3.0.4-r0",
                "x86_64",
                "alpine-baselayout",
                25,
            ),
            ("alpine-keys", "2.1-r1", "x86_64", "alpine-keys", 18),
            ("libressl2.5-libcrypto", "2.5.4-r0", "x86_64", "libressl", 4),
            ("libressl2.5-libssl", "2.5.4-r0", "x86_64", "libressl", 4),
            ("zlib", "1.2.11-r0", "x86_64", "zlib", 2),
            ("apk-tools", "2.7.1-r1", "x86_64", "apk-tools", 1),
            ("scanelf", "1.2.2-r0", "x86_64", "pax-utils", 1),
            ("musl-utils", "1.1.16-r9", "x86_64", "musl", 5),
            ("libc-utils", "0.7.1-r0", "x86_64", "libc-dev", 0),
        ];
        let got: Vec<_> = pkgs
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.arch.as_str(),
                    p.origin.as_str(),
                    p.files.len(),
                )
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(pkgs.iter().map(|p| p.files.len()).sum::<usize>(), 68);
        // A few paths, checked by hand against the F/R lines.
        assert_eq!(
            paths(&pkgs[0].files),
            ["/lib/libc.musl-x86_64.so.1", "/lib/ld-musl-x86_64.so.1"]
        );
        assert_eq!(
            paths(&pkgs[4].files),
            [
                "/lib/libcrypto.so.41.0.1",
                "/lib/libcrypto.so.41",
                "/usr/lib/libcrypto.so.41.0.1",
                "/usr/lib/libcrypto.so.41"
            ]
        );
        assert!(
            paths(&pkgs[1].files).contains(&"/etc/network/if-up.d/dad"),
            "{:?}",
            pkgs[1].files
        );
        assert_eq!(paths(&pkgs[7].files), ["/sbin/apk"]);
        // The same key name in several key directories is several files.
        let keys = paths(&pkgs[3].files);
        assert_eq!(
            keys.iter()
                .filter(|p| p.ends_with("/alpine-devel@lists.alpinelinux.org-4a6a0840.rsa.pub"))
                .count(),
            4
        );
        // No path is listed by two packages in this image.
        let mut all: Vec<&[u8]> = pkgs
            .iter()
            .flat_map(|p| p.files.iter().map(Vec::as_slice))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 68);
    }

    #[test]
    fn sample_paragraphs() {
        let (pkgs, bad) = parse_installed(SAMPLE);
        assert_eq!(bad, 0);
        assert_eq!(pkgs.len(), 3);
        assert_eq!(
            paths(&pkgs[1].files),
            ["/lib/libssl.so.3", "/usr/lib/libssl.so.3"]
        );
        assert_eq!(pkgs[1].origin, "openssl");
        // No o: line: the origin is the name.
        assert_eq!(
            pkgs[2],
            ApkPackage {
                name: "pkgname".into(),
                version: "1.2.3".into(),
                arch: "x86_64".into(),
                origin: "pkgname".into(),
                files: vec![],
            }
        );
    }

    #[test]
    fn layout_tolerance() {
        // CRLF, no final newline, several and whitespace-only separators,
        // no A: line, a file in the root directory (empty F).
        let input = b"\r\n\r\nP:a\r\nV:1\r\nF:usr/bin\r\nR:x\r\n \t\r\n\n\nP:b\nV:2\nF:\nR:top\nF:etc\nR:conf";
        let (pkgs, bad) = parse_installed(input);
        assert_eq!(bad, 0);
        assert_eq!(pkgs.len(), 2);
        assert_eq!(paths(&pkgs[0].files), ["/usr/bin/x"]);
        assert_eq!(pkgs[0].arch, "");
        assert_eq!(paths(&pkgs[1].files), ["/top", "/etc/conf"]);
        assert_eq!(parse_installed(b""), (vec![], 0));
        assert_eq!(parse_installed(b"\n\n\n"), (vec![], 0));
    }

    #[test]
    fn malformed_paragraphs_are_skipped_and_counted() {
        let input = b"\
P:nover

V:1.0

P:dup
P:dup2
V:1

P:badline
V:1
this is not a key

P:long
V:1
Key:value

P:bad/name
V:1

P:..
V:1

P:-flag
V:1

P:sp
V:1 2

P:badarch
V:1
A:x 86

P:badorigin
V:1
o:../x

P:utf8
V:\xc3\xa4

P:good
V:1-r0
F:usr/lib
R:ok
";
        let (pkgs, bad) = parse_installed(input);
        assert_eq!(bad, 12);
        assert_eq!(pkgs.len(), 1);
        assert_eq!(pkgs[0].name, "good");
        assert_eq!(paths(&pkgs[0].files), ["/usr/lib/ok"]);
    }

    #[test]
    fn hostile_paths_are_dropped() {
        let input = b"\
P:p
V:1
R:before-any-dir
F:/abs
R:a
F:usr/../etc
R:b
F:usr//lib
R:c
F:./usr
R:d
F:usr/lib
R:../../etc/shadow
R:sub/dir
R:.
R:..
R:
R:fine
F:..
R:e
";
        let (pkgs, bad) = parse_installed(input);
        assert_eq!(bad, 0);
        assert_eq!(paths(&pkgs[0].files), ["/usr/lib/fine"]);
        // An R after a bad F is dropped, one after the next good F is kept.
        let (pkgs, _) = parse_installed(b"P:p\nV:1\nF:..\nR:x\nF:lib\nR:y\n");
        assert_eq!(paths(&pkgs[0].files), ["/lib/y"]);
        // The F of one paragraph does not carry into the next.
        let (pkgs, _) = parse_installed(b"P:p\nV:1\nF:lib\n\nP:q\nV:1\nR:y\n");
        assert!(pkgs[1].files.is_empty());
    }

    use crate::parse::fuzz::Rng;
    fn mutate(rng: &mut Rng, fixture: &[u8]) -> Vec<u8> {
        crate::parse::fuzz::mutate(rng, fixture, ALPHABET)
    }

    /// Bytes that are structurally meaningful to the apk database.
    const ALPHABET: &[u8] = b"PVAoFRZa:\n\n\r/. -_0123456789abc\xc3\xff";

    fn check(input: &[u8]) {
        let (pkgs, bad) = parse_installed(input);
        // Every package and every skip needs at least one line.
        assert!(pkgs.len() + bad <= input.len());
        let mut total = 0;
        for p in &pkgs {
            assert!(valid_name(p.name.as_bytes()) && valid_name(p.origin.as_bytes()));
            assert!(valid_word(p.version.as_bytes()));
            for f in &p.files {
                assert!(f.starts_with(b"/") && f.len() <= MAX_PATH_LEN);
                assert!(!f.split(|&b| b == b'/').any(|c| c == b".." || c == b"."));
                total += f.len();
            }
        }
        assert!(total <= MAX_FILE_LIST_BYTES);
    }

    #[test]
    fn fuzz_no_panics() {
        let real = std::fs::read(testdata().join("root/lib/apk/db/installed")).unwrap_or_default();
        let fixtures: [&[u8]; 2] = [SAMPLE, &real];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..3000 {
            let input = if i % 3 == 0 {
                let len = rng.below(400);
                (0..len)
                    .map(|_| {
                        if rng.below(4) == 0 {
                            rng.next() as u8
                        } else {
                            ALPHABET[rng.below(ALPHABET.len())]
                        }
                    })
                    .collect()
            } else {
                let f = fixtures[rng.below(fixtures.len())];
                mutate(&mut rng, f)
            };
            check(&input);
        }
    }

    #[test]
    fn hostile_sizes() {
        let start = std::time::Instant::now();
        let big = 16 << 20;
        for input in [
            vec![b'\n'; big],
            vec![b'R'; big],
            vec![0xffu8; big],
            b"R:x\n".repeat(big / 4),
            b"P:p\nV:1\n\n".repeat(big / 10),
        ] {
            check(&input);
        }
        // More paragraphs than the cap: the rest are counted, not kept.
        let (pkgs, bad) = parse_installed(&b"P:p\nV:1\n\n".repeat(MAX_PACKAGES + 5));
        assert_eq!((pkgs.len(), bad), (MAX_PACKAGES, 5));

        // An expansion bomb: a 4000-byte directory followed by 40 000
        // one-letter files is 160 MB of paths from a 4 MB file; the cap
        // keeps the first 64 MiB worth.
        let mut input = b"P:p\nV:1\nF:".to_vec();
        input.extend(vec![b'd'; 4000]);
        input.push(b'\n');
        input.extend(b"R:f\n".repeat(40_000));
        let (pkgs, _) = parse_installed(&input);
        let total: usize = pkgs[0].files.iter().map(Vec::len).sum();
        assert!(total <= MAX_FILE_LIST_BYTES);
        assert_eq!(pkgs[0].files.len(), MAX_FILE_LIST_BYTES / 4003);
        // Paths longer than PATH_MAX are dropped.
        let mut input = b"P:p\nV:1\nF:".to_vec();
        input.extend(vec![b'd'; MAX_PATH_LEN]);
        input.extend(b"\nR:f\n");
        assert!(parse_installed(&input).0[0].files.is_empty());
        // A bound against super-linear work, not a speed test: a debug build
        // on a loaded machine took 46 s.
        assert!(start.elapsed().as_secs() < 600, "{:?}", start.elapsed());
    }
}
