//! Parser for the dependency list that `cargo auditable` embeds in Rust
//! executables: the `.dep-v0` section.
//!
//! The section holds zlib-compressed JSON (the `auditable-serde` format):
//!
//! ```text
//! {"packages":[
//!   {"name":"auditable-fixture","version":"0.1.0","source":"local",
//!    "dependencies":[2,3],"root":true},
//!   {"name":"libc","version":"0.2.191","source":"crates.io"},
//!   {"name":"time","version":"0.1.43","source":"crates.io","kind":"build",
//!    "dependencies":[1]}],
//!  "format":1}
//! ```
//!
//! Quirks handled here:
//!
//! * Fields at their default value are left out by the writer: `kind`
//!   (default `runtime`), `dependencies` (default empty) and `root`
//!   (default false). Unknown fields (`format`, added later) are ignored.
//! * `source` is `crates.io`, `git`, `local`, `registry`, or another
//!   string for sources the format does not name.
//! * `dependencies` are indices into `packages`. An index out of range
//!   makes the whole list unusable (the graph can no longer be trusted), so
//!   it fails the parse, as it does in `auditable-serde`. Cycles and
//!   several roots, which `auditable-serde` also rejects, are accepted: they
//!   do not make the package list wrong, and rejecting cycles has broken
//!   real binaries before.
//! * Only crates compiled in for the target are listed; platform-specific
//!   dependencies of other targets (winapi on Linux) are in `Cargo.lock`
//!   but not here.
//!
//! The input is hostile: the decompressed size is capped at
//! [`MAX_DECOMPRESSED_LEN`] (a zlib bomb stops there), and deep JSON
//! cannot exhaust the stack: `serde_json` refuses nesting deeper than 128
//! levels in the values it reads, and skips ignored fields without
//! recursion.

use super::elf::{ElfFile, ReadError};
use super::{ParseError, malformed};

/// Name of the ELF section holding the compressed dependency list.
pub const SECTION_NAME: &[u8] = b".dep-v0";

/// Largest decompressed JSON accepted. A package costs about 80 bytes, so
/// this is room for some 100,000 crates; real lists are a few KiB.
pub const MAX_DECOMPRESSED_LEN: usize = 8 << 20;

/// Largest compressed section [`read_elf_audit_data`] reads. Compression
/// never helps JSON by less than 2:1, so this is plenty.
pub const MAX_COMPRESSED_LEN: usize = 8 << 20;

/// How a crate is used by the executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DependencyKind {
    /// Only used at build time (build scripts, proc macros); not in the
    /// executable's code.
    Build,
    /// Compiled into the executable.
    #[default]
    Runtime,
    /// A kind this parser does not know, from a newer format.
    #[serde(other)]
    Other,
}

/// One crate in the dependency list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct CratePackage {
    /// Crate name, e.g. `smallvec`.
    pub name: String,
    /// Version, e.g. `1.6.0`.
    pub version: String,
    /// `crates.io`, `git`, `local`, `registry`, or another source.
    pub source: String,
    /// Whether the crate is compiled in or only used to build.
    #[serde(default)]
    pub kind: DependencyKind,
    /// Indices into [`AuditData::packages`] of this crate's dependencies.
    #[serde(default)]
    pub dependencies: Vec<usize>,
    /// Whether this is the crate the executable was built from.
    #[serde(default)]
    pub root: bool,
}

/// The dependency list of a Rust executable built with `cargo auditable`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct AuditData {
    /// Every crate, in the writer's order (sorted by name and version).
    pub packages: Vec<CratePackage>,
}

/// Decompresses and parses the contents of a `.dep-v0` section.
///
/// Fails if the zlib stream is damaged or inflates to more than
/// [`MAX_DECOMPRESSED_LEN`] bytes, if the JSON does not have the expected
/// shape, or if a dependency index is out of range.
pub fn parse_dep_v0(compressed: &[u8]) -> Result<AuditData, ParseError> {
    const WHAT: &str = "dep-v0";
    let json =
        miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(compressed, MAX_DECOMPRESSED_LEN)
            .map_err(|e| match e.status {
            miniz_oxide::inflate::TINFLStatus::HasMoreOutput => malformed(
                WHAT,
                format!("inflates to more than {MAX_DECOMPRESSED_LEN} bytes"),
            ),
            status => malformed(WHAT, format!("bad zlib stream ({status:?})")),
        })?;
    let data: AuditData =
        serde_json::from_slice(&json).map_err(|e| malformed(WHAT, short(&e.to_string())))?;
    let count = data.packages.len();
    for package in &data.packages {
        if let Some(&bad) = package.dependencies.iter().find(|&&i| i >= count) {
            return Err(malformed(
                WHAT,
                format!("dependency index {bad} out of range ({count} packages)"),
            ));
        }
    }
    Ok(data)
}

/// serde_json's messages can quote a string from the input ("invalid
/// type: string ..."), so they are cut to a line.
fn short(message: &str) -> String {
    const MAX: usize = 120;
    match message.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &message[..at]),
        None => message.to_string(),
    }
}

/// Finds, reads and parses the `.dep-v0` section of an ELF executable
/// through `read_at` (see [`ElfFile::read`]). Returns `Ok(None)` when there
/// is no such section (the executable was not built with `cargo
/// auditable`).
pub fn read_elf_audit_data<E, F>(
    elf: &ElfFile,
    read_at: &mut F,
) -> Result<Option<AuditData>, ReadError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(u64, usize) -> Result<Vec<u8>, E>,
{
    let Some(section) = elf.find_section(SECTION_NAME) else {
        return Ok(None);
    };
    let compressed = elf.read_section(section, MAX_COMPRESSED_LEN, read_at)?;
    Ok(Some(parse_dep_v0(&compressed)?))
}

#[cfg(test)]
mod tests {
    use super::super::elf::testutil::*;
    use super::*;
    use miniz_oxide::deflate::compress_to_vec_zlib;
    use serde_json::Value;
    use std::cell::Cell;

    fn real_section() -> Vec<u8> {
        shared_data("rust_auditable/dep-v0.zlib")
    }

    fn package(
        name: &str,
        version: &str,
        source: &str,
        deps: &[usize],
        root: bool,
    ) -> CratePackage {
        CratePackage {
            name: name.into(),
            version: version.into(),
            source: source.into(),
            kind: DependencyKind::Runtime,
            dependencies: deps.to_vec(),
            root,
        }
    }

    /// The real section decodes to exactly what `rust-audit-info` printed.
    #[test]
    fn real_section_matches_rust_audit_info() {
        let data = parse_dep_v0(&real_section()).unwrap();
        let want: Value =
            serde_json::from_slice(&shared_data("rust_auditable/rust-audit-info.json")).unwrap();
        let want = want["packages"].as_array().unwrap();
        assert_eq!(data.packages.len(), want.len());
        for (got, want) in data.packages.iter().zip(want) {
            assert_eq!(got.name, want["name"].as_str().unwrap());
            assert_eq!(got.version, want["version"].as_str().unwrap());
            assert_eq!(got.source, want["source"].as_str().unwrap());
            let kind = want
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("runtime");
            let got_kind = match got.kind {
                DependencyKind::Build => "build",
                DependencyKind::Runtime => "runtime",
                DependencyKind::Other => "other",
            };
            assert_eq!(got_kind, kind);
            let deps: Vec<usize> = want
                .get("dependencies")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|v| v.as_u64().unwrap() as usize).collect())
                .unwrap_or_default();
            assert_eq!(got.dependencies, deps);
            assert_eq!(
                got.root,
                want.get("root").and_then(Value::as_bool).unwrap_or(false)
            );
        }
        // And spelled out, so a shared misreading cannot hide.
        assert_eq!(
            data.packages,
            vec![
                package("auditable-fixture", "0.1.0", "local", &[2, 3], true),
                package("libc", "0.2.191", "crates.io", &[], false),
                package("smallvec", "1.6.0", "crates.io", &[], false),
                package("time", "0.1.43", "crates.io", &[1], false),
            ]
        );
    }

    /// `[[package]]` entries of a Cargo.lock: name, version, source and
    /// dependency names (enough of TOML for the file at hand).
    fn read_lock(text: &str) -> Vec<(String, String, Option<String>, Vec<String>)> {
        let mut out: Vec<(String, String, Option<String>, Vec<String>)> = Vec::new();
        let mut in_deps = false;
        for line in text.lines() {
            let value = |l: &str| l.split('"').nth(1).unwrap().to_string();
            if line == "[[package]]" {
                out.push(Default::default());
                in_deps = false;
            } else if let Some(p) = out.last_mut() {
                if line.starts_with("name = ") {
                    p.0 = value(line);
                } else if line.starts_with("version = ") {
                    p.1 = value(line);
                } else if line.starts_with("source = ") {
                    p.2 = Some(value(line));
                } else if line == "dependencies = [" {
                    in_deps = true;
                } else if line == "]" {
                    in_deps = false;
                } else if in_deps {
                    p.3.push(value(line));
                }
            }
        }
        out
    }

    /// The section agrees with the crate it was built from: its Cargo.toml
    /// and Cargo.lock.
    #[test]
    fn real_section_matches_the_crate_source() {
        let data = parse_dep_v0(&real_section()).unwrap();
        let lock = read_lock(&String::from_utf8(shared_data("rust_auditable/Cargo.lock")).unwrap());
        let manifest = String::from_utf8(shared_data("rust_auditable/Cargo.toml")).unwrap();
        for p in &data.packages {
            let entry = lock
                .iter()
                .find(|l| l.0 == p.name)
                .unwrap_or_else(|| panic!("{} not in Cargo.lock", p.name));
            assert_eq!(p.version, entry.1, "{}", p.name);
            let source = match entry.2.as_deref() {
                None => "local",
                Some("registry+https://github.com/rust-lang/crates.io-index") => "crates.io",
                Some(other) => panic!("unexpected source {other}"),
            };
            assert_eq!(p.source, source, "{}", p.name);
            // Every edge is one Cargo.lock has too.
            for &d in &p.dependencies {
                assert!(
                    entry.3.contains(&data.packages[d].name),
                    "{} -> {d}",
                    p.name
                );
            }
        }
        // The root is the package of Cargo.toml, and depends on exactly the
        // crates it names, at the pinned versions.
        let root: Vec<_> = data.packages.iter().filter(|p| p.root).collect();
        assert_eq!(root.len(), 1);
        assert!(manifest.contains(&format!("name = \"{}\"", root[0].name)));
        assert!(manifest.contains(&format!("version = \"{}\"", root[0].version)));
        for &d in &root[0].dependencies {
            let dep = &data.packages[d];
            assert!(manifest.contains(&format!("{} = \"={}\"", dep.name, dep.version)));
        }
        // Cargo.lock also lists winapi and its two helper crates, which time
        // uses only on Windows: they are not compiled in on Linux, so the
        // section leaves them out.
        let missing: Vec<&str> = lock
            .iter()
            .filter(|l| !data.packages.iter().any(|p| p.name == l.0))
            .map(|l| l.0.as_str())
            .collect();
        assert_eq!(
            missing,
            [
                "winapi",
                "winapi-i686-pc-windows-gnu",
                "winapi-x86_64-pc-windows-gnu"
            ]
        );
    }

    /// Runs objcopy (test-only I/O); false if it is not installed.
    fn objcopy(args: &[&str]) -> bool {
        std::process::Command::new("objcopy")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Reads `path` the way the agent does; returns the data and the number
    /// of bytes read.
    fn read_binary(path: &str) -> (Option<AuditData>, u64) {
        let file = std::fs::File::open(path).unwrap();
        let total = Cell::new(0);
        let mut read_at = file_reader(&file, &total);
        let elf = ElfFile::read(&mut read_at).unwrap();
        let data = read_elf_audit_data(&elf, &mut read_at).unwrap();
        (data, total.get())
    }

    /// The real section, put into real ELF files by objcopy: added to
    /// /bin/true (as the brief suggests, not built with cargo-auditable),
    /// and wrapped into object files of both classes and byte orders.
    #[test]
    fn real_section_in_elf_files_made_by_objcopy() {
        let want = parse_dep_v0(&real_section()).unwrap();
        let dir = std::env::temp_dir().join(format!("patchgap-auditable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let section = dir.join("dep-v0.zlib");
        std::fs::write(&section, real_section()).unwrap();
        let section = section.to_str().unwrap();
        let mut made = Vec::new();
        let out = dir.join("true-auditable");
        let out = out.to_str().unwrap().to_string();
        let add = format!(".dep-v0={section}");
        if objcopy(&[
            "--add-section",
            &add,
            "--set-section-flags",
            ".dep-v0=noload,readonly",
            "/bin/true",
            &out,
        ]) {
            made.push(out);
        }
        for target in ["elf32-big", "elf64-big", "elf32-little", "elf64-little"] {
            let out = dir.join(format!("{target}.o"));
            let out = out.to_str().unwrap().to_string();
            if objcopy(&[
                "-I",
                "binary",
                "-O",
                target,
                "--rename-section",
                ".data=.dep-v0",
                section,
                &out,
            ]) {
                made.push(out);
            }
        }
        for path in &made {
            let (got, read) = read_binary(path);
            assert_eq!(got.as_ref(), Some(&want), "{path}");
            assert!(read < 64 << 10, "{path}: {read}");
        }
        let _ = std::fs::remove_dir_all(&dir);
        if made.is_empty() {
            eprintln!("no objcopy here; skipping");
        }
        // A binary without the section.
        if std::path::Path::new("/bin/true").exists() {
            assert_eq!(read_binary("/bin/true").0, None);
        }
    }

    fn zlib(json: &[u8]) -> Vec<u8> {
        compress_to_vec_zlib(json, 6)
    }

    #[test]
    fn json_edge_cases() {
        let ok = |json: &str| parse_dep_v0(&zlib(json.as_bytes()));
        assert_eq!(ok(r#"{"packages":[]}"#).unwrap().packages, vec![]);
        let got = ok(r#"{"packages":[{"name":"cc","version":"1.0.83","source":"crates.io","kind":"build"},
            {"name":"x","version":"0.1.0","source":"git","kind":"dev-only","dependencies":[0,0,1],"root":false,"extra":{"a":[1]}}],
            "format":2,"future":null}"#)
        .unwrap();
        assert_eq!(got.packages[0].kind, DependencyKind::Build);
        assert_eq!(got.packages[1].kind, DependencyKind::Other);
        assert_eq!(
            got.packages[1].dependencies,
            vec![0, 0, 1],
            "self-edges and repeats are kept"
        );
        // Cycles and several roots are accepted.
        assert!(ok(r#"{"packages":[{"name":"a","version":"1","source":"local","dependencies":[1],"root":true},
            {"name":"b","version":"1","source":"local","dependencies":[0],"root":true}]}"#)
        .is_ok());
        for bad in [
            r#"{"packages":[{"name":"a","version":"1","source":"local","dependencies":[1]}]}"#,
            r#"{"packages":[{"name":"a","version":"1","source":"local","dependencies":[-1]}]}"#,
            r#"{"packages":[{"name":"a","version":"1","source":"local","dependencies":[18446744073709551616]}]}"#,
            r#"{"packages":[{"name":"a","version":"1"}]}"#,
            r#"{"packages":[{"name":"a","version":1,"source":"local"}]}"#,
            r#"{"packages":[{"name":"a","version":"1","source":"local","root":"yes"}]}"#,
            r#"{"packages":[{"name":"a","version":"1","source":"local","kind":5}]}"#,
            r#"{"packages":{}}"#,
            r#"{}"#,
            r#"[]"#,
            r#"{"packages":[]} trailing"#,
            "{\"packages\":[{\"name\":\"\\ud800\",\"version\":\"1\",\"source\":\"x\"}]}",
            "",
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
        // Invalid UTF-8 inside a string.
        assert!(
            parse_dep_v0(&zlib(
                b"{\"packages\":[{\"name\":\"\xff\",\"version\":\"1\",\"source\":\"x\"}]}"
            ))
            .is_err()
        );
        // A long string in the wrong place does not make a long error.
        let long = format!(
            r#"{{"packages":[{{"name":"a","version":"1","source":"x","root":"{}"}}]}}"#,
            "y".repeat(100_000)
        );
        let err = ok(&long).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn zlib_edge_cases() {
        let real = real_section();
        assert!(parse_dep_v0(&[]).is_err());
        assert!(
            parse_dep_v0(b"{\"packages\":[]}").is_err(),
            "not compressed"
        );
        // Truncated anywhere.
        for n in 0..real.len() {
            assert!(parse_dep_v0(&real[..n]).is_err(), "{n}");
        }
        // A wrong Adler-32 checksum.
        let mut bad = real.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(parse_dep_v0(&bad).is_err());
        // Raw deflate without the zlib header.
        let raw = miniz_oxide::deflate::compress_to_vec(b"{\"packages\":[]}", 6);
        assert!(parse_dep_v0(&raw).is_err());
        // Trailing bytes after the stream are ignored.
        let mut trailing = real.clone();
        trailing.extend_from_slice(b"junk");
        assert!(parse_dep_v0(&trailing).is_ok());
    }

    #[test]
    fn hostile_sizes() {
        let start = crate::parse::fuzz::CpuTimer::start();
        // A zlib bomb: 64 MiB of zeros in 64 KiB. Inflation stops at the
        // cap.
        let bomb = zlib(&vec![b' '; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let err = parse_dep_v0(&bomb).unwrap_err().to_string();
        assert!(err.contains("inflates to more than"), "{err}");
        // Exactly at the cap is fine; one byte more is not.
        let mut json = br#"{"packages":[]}"#.to_vec();
        json.resize(MAX_DECOMPRESSED_LEN, b' ');
        assert!(parse_dep_v0(&zlib(&json)).is_ok());
        json.push(b' ');
        assert!(parse_dep_v0(&zlib(&json)).is_err());
        // JSON nested 10,000 deep where a value is read: refused at depth
        // 128 (serde_json's limit), at the top or inside a package.
        let deep = format!(
            r#"{{"packages":[{{"name":{}"a"{},"version":"1","source":"x"}}]}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(parse_dep_v0(&zlib(deep.as_bytes())).is_err());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_dep_v0(&zlib(deep.as_bytes())).is_err());
        let deep = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        assert!(parse_dep_v0(&zlib(deep.as_bytes())).is_err());
        // In a field that is ignored, serde_json skips the value without
        // recursing, so even 4 million levels are safe, and accepted.
        let half = (MAX_DECOMPRESSED_LEN - 40) / 2;
        let deep = format!(
            r#"{{"packages":[],"x":{}{}}}"#,
            "[".repeat(half),
            "]".repeat(half)
        );
        assert_eq!(
            parse_dep_v0(&zlib(deep.as_bytes())).unwrap().packages,
            vec![]
        );
        // The most packages and edges that fit under the cap.
        let mut json = String::from(r#"{"packages":["#);
        let one = r#"{"name":"a","version":"1","source":"x"},"#;
        let n = (MAX_DECOMPRESSED_LEN - 100) / one.len();
        for _ in 0..n {
            json.push_str(one);
        }
        json.push_str(r#"{"name":"b","version":"1","source":"x","dependencies":[0"#);
        while json.len() < MAX_DECOMPRESSED_LEN - 10 {
            json.push_str(",0");
        }
        json.push_str("]}]}");
        let data = parse_dep_v0(&zlib(json.as_bytes())).unwrap();
        assert_eq!(data.packages.len(), n + 1);
        // 64 MiB of junk, and junk after a valid zlib header.
        let mut rng = Rng(7);
        let mut junk = rng.bytes(64 << 20);
        assert!(parse_dep_v0(&junk).is_err());
        junk[..2].copy_from_slice(&[0x78, 0x9c]);
        assert!(parse_dep_v0(&junk).is_err());
        // A 64 MiB section is refused before it is read.
        let section = TestSection::progbits(SECTION_NAME, 0, junk);
        let bytes = build_elf(true, false, &[section], false);
        let mut read_at = slice_reader(&bytes);
        let elf = ElfFile::read(&mut read_at).unwrap();
        assert!(read_elf_audit_data(&elf, &mut read_at).is_err());
        assert!(start.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn fuzz_no_panics() {
        let real = real_section();
        let json = miniz_oxide::inflate::decompress_to_vec_zlib(&real).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut parsed = 0;
        for i in 0..3000 {
            let input = if i % 2 == 0 {
                mutate(&mut rng, &real)
            } else {
                // Mutate the JSON, so that most inputs get past zlib.
                zlib(&mutate(&mut rng, &json))
            };
            if let Ok(data) = parse_dep_v0(&input) {
                parsed += 1;
                let n = data.packages.len();
                assert!(
                    data.packages
                        .iter()
                        .all(|p| p.dependencies.iter().all(|&d| d < n))
                );
            }
        }
        assert!(parsed > 0, "the mutations never produced valid JSON");
    }
}
