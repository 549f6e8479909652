//! Parser for the `package.json` manifests of installed npm packages
//! (`node_modules/<name>/package.json`), used to name the npm packages a
//! Node.js process loads.
//!
//! Only three fields matter: `name`, `version` and `private`. The rest of
//! the document (scripts, dependencies, README text that some packages
//! embed) is skipped by serde without being built into values, so memory
//! stays proportional to the three fields, not to the document. Quirks
//! handled here:
//!
//! * Not every `package.json` describes a package. Dual-module packages
//!   ship `dist/esm/package.json` holding only `{"type": "module"}`; such
//!   manifests have no name and yield `None`, as do non-object documents.
//! * Node and npm strip a UTF-8 byte order mark before parsing; so does
//!   this parser.
//! * A key given twice takes its last value, as in `JSON.parse`.
//! * `name` and `version` must be JSON strings; numbers (`"version": 1`)
//!   and nulls are rejected rather than converted.
//! * Legacy packages published before npm's current rules may have upper
//!   case letters or the characters `~'!()*` in their names; they are
//!   accepted. Names are otherwise checked strictly (see
//!   [`npm_name_valid`]) because the caller builds paths such as
//!   `node_modules/<name>/package.json` from them.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// The largest `package.json` parsed; larger inputs yield `None` without
/// being looked at. The biggest real manifests (packages that embed their
/// README) are a few hundred KiB.
pub const MAX_PACKAGE_JSON_BYTES: usize = 4 << 20;

/// The longest package name npm accepts, scope included.
pub const MAX_NAME_LEN: usize = 214;

/// The longest version string accepted. Real versions are well under 64
/// bytes; npm's own semver parser stops at 256.
pub const MAX_VERSION_LEN: usize = 256;

/// The identity of one installed npm package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpmPackage {
    /// Package name, e.g. `lru-cache` or `@npmcli/arborist`.
    pub name: String,
    /// Version as written in the manifest, e.g. `10.4.3`.
    pub version: String,
    /// Whether the manifest says `"private": true` (an application or
    /// workspace root, never published to a registry).
    pub private: bool,
}

/// Parses a `package.json`. Returns `None` for inputs over
/// [`MAX_PACKAGE_JSON_BYTES`], invalid JSON, a top level that is not an
/// object, a missing or non-string `name` or `version`, a name that fails
/// [`npm_name_valid`], or a version that is empty, longer than
/// [`MAX_VERSION_LEN`] or not printable ASCII without spaces. `private` is
/// true only for the JSON value `true`.
pub fn parse_package_json(bytes: &[u8]) -> Option<NpmPackage> {
    if bytes.len() > MAX_PACKAGE_JSON_BYTES {
        return None;
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let manifest: Manifest = serde_json::from_slice(bytes).ok()?;
    let name = manifest.name.filter(|n| npm_name_valid(n))?;
    let version = manifest.version.filter(|v| {
        !v.is_empty() && v.len() <= MAX_VERSION_LEN && v.bytes().all(|b| b.is_ascii_graphic())
    })?;
    Some(NpmPackage {
        name,
        version,
        private: manifest.private,
    })
}

/// Whether `name` is a well-formed npm package name that is safe to use as
/// one or two path components under `node_modules/`:
///
/// * 1 to [`MAX_NAME_LEN`] bytes, not starting with `.` or `_` (npm's
///   rules), and without `..` anywhere;
/// * either a plain name with no `/`, or `@scope/name` with exactly one
///   `/` and both parts non-empty;
/// * every other byte from the set that `encodeURIComponent` leaves alone:
///   ASCII letters and digits and `-._~!'()*`. This excludes spaces, `\`,
///   `%`, `:`, NUL and all non-ASCII bytes.
pub fn npm_name_valid(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    if name.starts_with('.') || name.starts_with('_') || name.contains("..") {
        return false;
    }
    let part_ok = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!'()*".contains(&b))
    };
    match name.strip_prefix('@') {
        Some(scoped) => match scoped.split_once('/') {
            Some((scope, rest)) => part_ok(scope) && part_ok(rest),
            None => false,
        },
        None => part_ok(name),
    }
}

/// The three fields read from a manifest; everything else is skipped.
#[derive(Default)]
struct Manifest {
    name: Option<String>,
    version: Option<String>,
    private: bool,
}

impl<'de> Deserialize<'de> for Manifest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ManifestVisitor)
    }
}

struct ManifestVisitor;

impl<'de> Visitor<'de> for ManifestVisitor {
    type Value = Manifest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a package.json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Manifest, A::Error> {
        let mut m = Manifest::default();
        while let Some(key) = map.next_key::<Key>()? {
            // Later duplicates overwrite earlier values, as in JSON.parse.
            match key {
                Key::Name => m.name = map.next_value::<Scalar>()?.into_string(),
                Key::Version => m.version = map.next_value::<Scalar>()?.into_string(),
                Key::Private => m.private = matches!(map.next_value::<Scalar>()?, Scalar::True),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(m)
    }
}

/// A manifest key, compared without allocating.
enum Key {
    Name,
    Version,
    Private,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "name" => Key::Name,
                    "version" => Key::Version,
                    "private" => Key::Private,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// The value of one of the fields read: a string, `true`, or anything else
/// (skipped without being built).
enum Scalar {
    Str(String),
    True,
    Other,
}

impl Scalar {
    fn into_string(self) -> Option<String> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(if v { Scalar::True } else { Scalar::Other })
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// The start of a real manifest (npm's bundled `@npmcli/arborist`), for the
/// fuzz loop.
#[cfg(test)]
pub(crate) const SAMPLE: &[u8] = br#"{
  "name": "@npmcli/arborist",
  "version": "9.1.6",
  "description": "Manage node_modules trees",
  "dependencies": {
    "@isaacs/string-locale-compare": "^1.1.0",
    "semver": "^7.3.7"
  },
  "bin": { "arborist": "bin/index.js" },
  "private": false,
  "files": ["bin/", "lib/"],
  "engines": { "node": "^20.17.0 || >=22.9.0" }
}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    /// Every `package.json` below `dir`, without following symlinks.
    fn find_manifests(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                find_manifests(&path, out);
            } else if kind.is_file() && entry.file_name() == "package.json" {
                out.push(path);
            }
        }
    }

    #[derive(serde::Deserialize)]
    struct InventoryEntry {
        name: String,
        version: String,
        path: String,
    }

    #[test]
    fn real_manifests_match_the_inventory() {
        // Test-only I/O: the parser itself never reads files.
        // Vendored from shared/data/inventory (see testdata/README.md):
        // the image's node packages.
        if !crate::parse::image::is_the_image("the image's global npm packages") {
            return;
        }
        let inventory_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/inventory/npm_global_packages.json");
        let bytes = std::fs::read(&inventory_path).expect("vendored inventory");
        let inventory: Vec<InventoryEntry> =
            serde_json::from_slice(&bytes).expect("inventory json");
        let by_dir: HashMap<&str, &InventoryEntry> =
            inventory.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut manifests = Vec::new();
        for root in ["/usr/lib/node_modules", "/usr/share/nodejs"] {
            find_manifests(Path::new(root), &mut manifests);
        }
        if manifests.is_empty() {
            eprintln!("no npm packages on this machine; skipping");
            return;
        }
        let (mut matched, mut nameless) = (0, 0);
        for path in &manifests {
            let bytes = std::fs::read(path).unwrap();
            let got = parse_package_json(&bytes);
            let dir = path.parent().unwrap().to_str().unwrap();
            match by_dir.get(dir) {
                Some(want) => {
                    let got = got.unwrap_or_else(|| panic!("{}", path.display()));
                    assert_eq!(
                        (got.name.as_str(), got.version.as_str()),
                        (want.name.as_str(), want.version.as_str())
                    );
                    // The inventory lists each package under its own
                    // name: node_modules/<name>.
                    assert!(
                        dir.ends_with(&format!("node_modules/{}", got.name)),
                        "{dir}"
                    );
                    assert!(!got.private, "{}", path.display());
                    matched += 1;
                }
                None => {
                    // Not a package: the {"type": "module"} markers under
                    // dist/esm and friends.
                    assert_eq!(got, None, "{}", path.display());
                    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    assert!(v.get("name").is_none(), "{}", path.display());
                    nameless += 1;
                }
            }
        }
        // Every package the inventory names under these roots was seen.
        let covered = inventory
            .iter()
            .filter(|e| {
                e.path.starts_with("/usr/lib/node_modules/")
                    || e.path.starts_with("/usr/share/nodejs/")
            })
            .count();
        assert_eq!(matched, covered);
        eprintln!("{matched} packages matched, {nameless} nameless manifests");
    }

    #[test]
    fn sample_and_field_types() {
        assert_eq!(
            parse_package_json(SAMPLE),
            Some(NpmPackage {
                name: "@npmcli/arborist".into(),
                version: "9.1.6".into(),
                private: false,
            })
        );
        let p = |s: &str| parse_package_json(s.as_bytes());
        let ok = |s: &str| p(s).map(|m| (m.name, m.version, m.private));
        assert_eq!(
            ok(r#"{"name":"a","version":"1.0.0","private":true}"#),
            Some(("a".into(), "1.0.0".into(), true))
        );
        // private must be the JSON value true.
        for private in ["\"true\"", "1", "null", "{}", "[true]", "false"] {
            let json = format!(r#"{{"name":"a","version":"1","private":{private}}}"#);
            assert!(!p(&json).unwrap().private, "{private}");
        }
        // Non-string name or version.
        for bad in [
            r#"{"name":1,"version":"1"}"#,
            r#"{"name":"a","version":1}"#,
            r#"{"name":"a","version":1.5}"#,
            r#"{"name":null,"version":"1"}"#,
            r#"{"name":["a"],"version":"1"}"#,
            r#"{"name":{"a":1},"version":"1"}"#,
            r#"{"name":"a"}"#,
            r#"{"version":"1"}"#,
            r#"{"type":"module"}"#,
            r#"{"name":"a","version":""}"#,
            r#"{"name":"a","version":"1 2"}"#,
            r#"{"name":"a","version":"1\n"}"#,
            r#"{"name":"a","version":"1.0.0-β"}"#,
            r#"{"name":"A B","version":"1"}"#,
            r#"["name","a"]"#,
            r#""name""#,
            "null",
            "",
            "{",
            r#"{"name":"a","version":"1"} trailing"#,
            r#"{"name":"a","version":"1",}"#,
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
        // Duplicate keys: the last wins, as in JSON.parse.
        assert_eq!(
            ok(r#"{"name":"a","version":"1","name":"b"}"#).unwrap().0,
            "b"
        );
        assert_eq!(p(r#"{"name":"a","version":"1","version":2}"#), None);
        // A BOM, escapes and whitespace.
        assert_eq!(
            ok("\u{feff}{\"name\":\"a\",\"version\":\"1\"}").unwrap().0,
            "a"
        );
        assert_eq!(
            ok(r#" { "name" : "\u0061b" , "version" : "1" } "#)
                .unwrap()
                .0,
            "ab"
        );
        // The longest accepted version, and one byte more.
        let v = "1".repeat(MAX_VERSION_LEN);
        assert!(p(&format!(r#"{{"name":"a","version":"{v}"}}"#)).is_some());
        assert!(p(&format!(r#"{{"name":"a","version":"{v}1"}}"#)).is_none());
    }

    #[test]
    fn names() {
        for good in [
            "a",
            "lru-cache",
            "@npmcli/arborist",
            "@types/node",
            "JSONStream",
            "node.extend",
            "a_b",
            "cheerio~",
            "@a/b",
            "@scope/.hidden-ok",
            &"a".repeat(MAX_NAME_LEN),
        ] {
            assert!(npm_name_valid(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".bin",
            "_private",
            "a/b",
            "@scope",
            "@scope/",
            "@/name",
            "@scope/a/b",
            "@scope/..",
            "@../x",
            "a..b",
            "../etc",
            "a\\b",
            "a b",
            " a",
            "a\0",
            "a:b",
            "a%2fb",
            "é",
            "@@a/b",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(!npm_name_valid(bad), "{bad:?}");
        }
    }

    use crate::parse::fuzz::Rng;
    fn mutate(rng: &mut Rng, fixture: &[u8]) -> Vec<u8> {
        crate::parse::fuzz::mutate(rng, fixture, ALPHABET)
    }

    /// Bytes that are structurally meaningful to JSON and to npm names.
    const ALPHABET: &[u8] = b"{}[]\":,\\ntrufalsenm@/.-_0123456789 \t\n\xef\xbb\xbf";

    fn check(input: &[u8]) {
        if let Some(p) = parse_package_json(input) {
            assert!(npm_name_valid(&p.name));
            assert!(p.version.len() <= MAX_VERSION_LEN && !p.version.is_empty());
        }
        if let Ok(s) = std::str::from_utf8(input)
            && npm_name_valid(s)
        {
            assert!(!s.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
            assert!(s.matches('/').count() <= 1);
        }
    }

    #[test]
    fn fuzz_no_panics() {
        let fixtures: [&[u8]; 3] = [
            SAMPLE,
            br#"{"name":"@a/b","version":"1.0.0","private":true}"#,
            br#"{"type":"module"}"#,
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..4000 {
            let input = if i % 3 == 0 {
                let len = rng.below(200);
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
        // Over the cap: rejected without parsing, even if valid.
        let mut big = br#"{"name":"a","version":"1","x":""#.to_vec();
        big.extend(vec![b'y'; MAX_PACKAGE_JSON_BYTES]);
        big.extend(b"\"}");
        assert_eq!(parse_package_json(&big), None);
        assert_eq!(parse_package_json(&vec![b' '; 32 << 20]), None);
        // Just under the cap: a huge ignored value is skipped, not built.
        let filler = MAX_PACKAGE_JSON_BYTES - 100;
        let mut doc = br#"{"name":"a","version":"1","readme":""#.to_vec();
        doc.extend(vec![b'y'; filler]);
        doc.extend(b"\"}");
        assert!(parse_package_json(&doc).is_some());
        // Two million array elements, in an ignored field and in "name".
        for key in ["deps", "name"] {
            let mut doc = format!(r#"{{"version":"1","{key}":["#).into_bytes();
            doc.extend(b"0,".repeat(filler / 2));
            doc.extend(br#"0],"name":"a"}"#);
            assert!(parse_package_json(&doc).is_some(), "{key}");
        }
        // Deep nesting hits serde_json's recursion limit instead of the
        // stack.
        let mut deep = br#"{"name":"a","version":"1","x":"#.to_vec();
        deep.extend(vec![b'['; 1 << 20]);
        assert_eq!(parse_package_json(&deep), None);
        // A 4 MiB name is rejected by the name check.
        let mut long = br#"{"version":"1","name":""#.to_vec();
        long.extend(vec![b'a'; filler]);
        long.extend(b"\"}");
        assert_eq!(parse_package_json(&long), None);
        assert!(!npm_name_valid(&"a".repeat(32 << 20)));
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    }
}
