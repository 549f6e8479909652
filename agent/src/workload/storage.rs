//! Podman's own records of its containers and images: containers/storage's
//! `overlay-containers/containers.json` and `overlay-images/images.json`,
//! and an image's OCI config, stored beside them.
//!
//! Podman's per-container OCI `config.json` names neither the container nor
//! its image (measured with Podman 4.3: only `io.container.manager=libpod`
//! and a few `io.podman.annotations.*`), so a Podman workload read from it
//! alone has no name, image or digest, and an SBOM pushed for its image can
//! never join it. containers/storage keeps them instead, under the graph root
//! (`/var/lib/containers/storage` for root):
//!
//! - `overlay-containers/containers.json`, one array of every container:
//!   `id`, `names` (the first is the name `podman ps` shows), `image` (the
//!   image id, 64 bare hex digits) and `metadata`, a JSON object encoded in a
//!   string, whose `image-name` is the reference the container was made from;
//! - `overlay-images/images.json`, one array of every image: `id`, `digest`
//!   (the manifest digest, "sha256:...", which is what a registry serves and
//!   `podman images --digests` shows) and `names` (its references; a pulled
//!   image may also have "repo@sha256:..." ones);
//! - `overlay-images/<id>/=<base64 of "sha256:<id>">`, the image's OCI config
//!   (a "big data" item, named by the base64 of its key), whose
//!   `config.Labels` hold the `org.opencontainers.image.*` provenance labels.
//!
//! CRI-O uses the same layout under the same graph root. The parsers are pure
//! (bytes in, no I/O) and keep only the fields above; [`StorageReader`] reads
//! the files beneath the runtime root through [`RootFs`], caches each file by
//! its (device, inode, mtime, size), and looks at the two lists at most once
//! per scan unless a container or image is missing from them, so the cost of a
//! scan with nothing new is two `statx`-like lookups. An image's config is
//! content-addressed (its name is its digest): it is read once per image in
//! use and never again.

use std::collections::HashMap;

use serde::Deserialize;

use crate::rootfs::{FileMeta, RootError, RootFs};
use crate::workload::meta::{MetaError, MetaWarnings, Provenance, json_error};

/// The largest `containers.json` or `images.json` that is read: about 10,000
/// containers or images. A larger one is refused (`too_large`).
pub const MAX_STORAGE_LIST_BYTES: u64 = 32 << 20;
/// The largest image config that is read (they are a few kB).
pub const MAX_IMAGE_CONFIG_BYTES: u64 = 1 << 20;

/// containers/storage's graph root for root, relative to the runtime root.
const GRAPH_ROOT: &str = "var/lib/containers/storage";
/// The list of containers, under [`GRAPH_ROOT`].
const CONTAINERS_JSON: &str = "var/lib/containers/storage/overlay-containers/containers.json";
/// The list of images, under [`GRAPH_ROOT`].
const IMAGES_JSON: &str = "var/lib/containers/storage/overlay-images/images.json";

/// The OCI label of an image's build time (image-spec annotations.md).
const LABEL_CREATED: &str = "org.opencontainers.image.created";

/// What containers/storage records about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredContainer {
    /// The container's name (the first of `names`), e.g. "web".
    pub name: String,
    /// The image id, "sha256:<64 hex>"; empty for a container made from no image.
    pub image_id: String,
    /// The reference it was made from, e.g. "localhost/app:1" (`metadata.image-name`).
    pub image_name: String,
}

/// What containers/storage records about one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredImage {
    /// The manifest digest, "sha256:<64 hex>"; empty when not recorded.
    pub digest: String,
    /// Its references, as recorded.
    pub names: Vec<String>,
}

#[derive(Deserialize)]
struct RawContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    metadata: String,
}

#[derive(Deserialize)]
struct RawImage {
    id: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    names: Vec<String>,
}

#[derive(Deserialize, Default)]
struct RawMetadata {
    #[serde(default, rename = "image-name")]
    image_name: String,
}

#[derive(Deserialize)]
struct RawImageConfig {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    config: Option<RawConfigSection>,
}

#[derive(Deserialize)]
struct RawConfigSection {
    #[serde(default, rename = "Labels")]
    labels: Option<HashMap<String, String>>,
}

/// "sha256:<hex>" for 64 lower-case hex digits, bare or prefixed; None otherwise.
fn sha256_id(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| format!("sha256:{hex}"))
}

/// Parses `overlay-containers/containers.json` into container id → record.
///
/// An entry whose `metadata` string is not JSON keeps its name and image id
/// (the file itself was fine); an image id that is not 64 hex digits is
/// dropped rather than passed on.
pub fn parse_containers_json(bytes: &[u8]) -> Result<HashMap<String, StoredContainer>, MetaError> {
    let raw: Vec<RawContainer> = serde_json::from_slice(bytes).map_err(json_error)?;
    Ok(raw
        .into_iter()
        .map(|c| {
            let metadata: RawMetadata = serde_json::from_str(&c.metadata).unwrap_or_default();
            let record = StoredContainer {
                name: c.names.into_iter().next().unwrap_or_default(),
                image_id: sha256_id(&c.image).unwrap_or_default(),
                image_name: metadata.image_name.trim().to_string(),
            };
            (c.id, record)
        })
        .collect())
}

/// Parses `overlay-images/images.json` into image id (64 bare hex) → record.
/// A `digest` that is not "sha256:<64 hex>" is dropped: never a guess.
pub fn parse_images_json(bytes: &[u8]) -> Result<HashMap<String, StoredImage>, MetaError> {
    let raw: Vec<RawImage> = serde_json::from_slice(bytes).map_err(json_error)?;
    Ok(raw
        .into_iter()
        .map(|i| {
            let digest = sha256_id(&i.digest)
                .filter(|d| d == &i.digest)
                .unwrap_or_default();
            (
                i.id,
                StoredImage {
                    digest,
                    names: i.names,
                },
            )
        })
        .collect())
}

/// The provenance of an image from its OCI config: the
/// `org.opencontainers.image.{revision,source,created}` labels; without a
/// `created` label, the config's own `created` (when the image was built, or
/// imported).
pub fn parse_image_config(bytes: &[u8]) -> Result<Provenance, MetaError> {
    let raw: RawImageConfig = serde_json::from_slice(bytes).map_err(json_error)?;
    let labels = raw.config.and_then(|c| c.labels).unwrap_or_default();
    let created = raw.created.unwrap_or_default();
    let mut p = Provenance::from_labels(|k| labels.get(k));
    if p.created.is_empty() {
        // Without the label, the config's own time (when it was built, or imported).
        p.created = Provenance::from_labels(|k| (k == LABEL_CREATED).then_some(&created)).created;
    }
    Ok(p)
}

/// The file name containers/storage gives a "big data" item: "=" and the
/// standard base64 (with padding) of its key.
pub fn big_data_file_name(key: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = key.as_bytes();
    let mut out = String::with_capacity(1 + bytes.len().div_ceil(3) * 4);
    out.push('=');
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What identifies one version of a file (containerd's reader uses it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Version {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

impl Version {
    pub(super) fn of(m: &FileMeta) -> Version {
        Version {
            dev: m.id.dev,
            ino: m.id.ino,
            mtime_ns: m.mtime_ns,
            size: m.size,
        }
    }
}

/// A parser of one of the two lists.
type ParseList<T> = fn(&[u8]) -> Result<HashMap<String, T>, MetaError>;

/// One of the two lists, parsed, with the version it was parsed from.
#[derive(Debug)]
struct List<T> {
    path: &'static str,
    version: Option<Version>,
    entries: HashMap<String, T>,
    /// The scan in which the file was last looked at.
    checked: Option<u64>,
    /// The last look failed (unreadable or bad): not tried again in the same scan.
    failed: bool,
}

impl<T> List<T> {
    fn new(path: &'static str) -> Self {
        List {
            path,
            version: None,
            entries: HashMap::new(),
            checked: None,
            failed: false,
        }
    }

    /// Brings the list up to date when it was not looked at in this scan, or
    /// when `id` is missing from it (a container started since); parses the
    /// file again only when it changed. Returns the warnings of a failure.
    fn refresh(
        &mut self,
        root: &RootFs,
        generation: u64,
        id: &str,
        limit: u64,
        parse: ParseList<T>,
        reads: &mut u64,
    ) -> MetaWarnings {
        if self.checked == Some(generation) && (self.failed || self.entries.contains_key(id)) {
            return MetaWarnings::default();
        }
        self.checked = Some(generation);
        self.failed = false;
        let path = self.path.as_bytes();
        let version = match root.metadata(path) {
            Ok(m) => Version::of(&m),
            Err(e) => {
                self.version = None;
                self.entries.clear();
                self.failed = !matches!(e, RootError::NotFound);
                return warning(&e);
            }
        };
        if self.version == Some(version) {
            return MetaWarnings::default();
        }
        *reads += 1;
        let parsed = root
            .read(path, limit)
            .map_err(|e| warning(&e))
            .and_then(|b| {
                parse(&b).map_err(|_| MetaWarnings {
                    bad_json: 1,
                    ..Default::default()
                })
            });
        match parsed {
            Ok(entries) => {
                self.entries = entries;
                self.version = Some(version);
                MetaWarnings::default()
            }
            Err(w) => {
                // Read while being rewritten, most likely: try again next time.
                self.entries.clear();
                self.version = None;
                self.failed = true;
                w
            }
        }
    }
}

fn warning(e: &RootError) -> MetaWarnings {
    let mut w = MetaWarnings::default();
    match e {
        RootError::NotFound => {}
        RootError::TooLarge { .. } => w.too_large = 1,
        RootError::Escapes => w.escapes_root = 1,
        RootError::PermissionDenied | RootError::Unsupported | RootError::Io { .. } => {
            w.unreadable = 1
        }
    }
    w
}

/// What containers/storage knows about one container and its image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageFacts {
    pub container: StoredContainer,
    pub image: Option<StoredImage>,
    pub provenance: Provenance,
}

/// Reads containers/storage's lists beneath a runtime root (see the module
/// docs for the files and the caching).
#[derive(Debug)]
pub struct StorageReader {
    containers: List<StoredContainer>,
    images: List<StoredImage>,
    /// Image id (bare hex) → provenance, with the scan it was last used in.
    configs: HashMap<String, (Provenance, u64)>,
    /// How many files were read (cache misses), for tests and metrics.
    reads: u64,
}

impl Default for StorageReader {
    fn default() -> Self {
        StorageReader {
            containers: List::new(CONTAINERS_JSON),
            images: List::new(IMAGES_JSON),
            configs: HashMap::new(),
            reads: 0,
        }
    }
}

impl StorageReader {
    /// What the graph root under `root` records about container `id` (64
    /// hex), or None when it does not know the container. `generation`
    /// counts scans: each list is looked at once per scan, and again only for
    /// an id it does not have.
    pub fn container(
        &mut self,
        root: &RootFs,
        generation: u64,
        id: &str,
    ) -> (Option<StorageFacts>, MetaWarnings) {
        let mut warnings = self.containers.refresh(
            root,
            generation,
            id,
            MAX_STORAGE_LIST_BYTES,
            parse_containers_json,
            &mut self.reads,
        );
        let Some(container) = self.containers.entries.get(id).cloned() else {
            return (None, warnings);
        };
        let mut facts = StorageFacts {
            container,
            ..Default::default()
        };
        let image_hex = facts
            .container
            .image_id
            .strip_prefix("sha256:")
            .unwrap_or_default()
            .to_string();
        if image_hex.is_empty() {
            return (Some(facts), warnings);
        }
        let w = self.images.refresh(
            root,
            generation,
            &image_hex,
            MAX_STORAGE_LIST_BYTES,
            parse_images_json,
            &mut self.reads,
        );
        add(&mut warnings, &w);
        facts.image = self.images.entries.get(&image_hex).cloned();
        if facts.image.is_some() {
            let (p, w) = self.provenance(root, generation, &image_hex);
            facts.provenance = p;
            add(&mut warnings, &w);
        }
        (Some(facts), warnings)
    }

    /// Drops the provenance of images no container used in the previous scan.
    pub fn evict(&mut self, previous_generation: u64) {
        self.configs.retain(|_, (_, g)| *g >= previous_generation);
    }

    /// How many files were read since start (cache misses).
    pub fn files_read(&self) -> u64 {
        self.reads
    }

    fn provenance(
        &mut self,
        root: &RootFs,
        generation: u64,
        image_hex: &str,
    ) -> (Provenance, MetaWarnings) {
        if let Some((p, g)) = self.configs.get_mut(image_hex) {
            *g = generation;
            return (p.clone(), MetaWarnings::default());
        }
        let path = format!(
            "{GRAPH_ROOT}/overlay-images/{image_hex}/{}",
            big_data_file_name(&format!("sha256:{image_hex}"))
        );
        self.reads += 1;
        let (p, w) = match root.read(path.as_bytes(), MAX_IMAGE_CONFIG_BYTES) {
            Ok(bytes) => match parse_image_config(&bytes) {
                Ok(p) => (p, MetaWarnings::default()),
                Err(_) => (
                    Provenance::default(),
                    MetaWarnings {
                        bad_json: 1,
                        ..Default::default()
                    },
                ),
            },
            Err(e) => (Provenance::default(), warning(&e)),
        };
        // A config is content-addressed, so what was read stays true; a
        // failure is not cached, so it is tried again next time.
        if w == MetaWarnings::default() {
            self.configs
                .insert(image_hex.to_string(), (p.clone(), generation));
        }
        (p, w)
    }
}

fn add(a: &mut MetaWarnings, b: &MetaWarnings) {
    a.bad_json = a.bad_json.saturating_add(b.bad_json);
    a.too_large = a.too_large.saturating_add(b.too_large);
    a.escapes_root = a.escapes_root.saturating_add(b.escapes_root);
    a.unreadable = a.unreadable.saturating_add(b.unreadable);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by Podman 4.3.1 on this kind of machine (`podman import` of a
    // debootstrapped Debian with provenance labels, then `podman run`).
    const CONTAINERS: &str = include_str!("testdata/podman-containers.json");
    const IMAGES: &str = include_str!("testdata/podman-images.json");
    const CONFIG: &str = include_str!("testdata/podman-image-config.json");
    const CONTAINER_ID: &str = "b9cdc87e57068b734cac5de981a5c0a5f416d56a60e4319d1e2f7367f7526efd";
    const IMAGE_ID: &str = "3e56b8b0befefa485efe449d1641f64e5028506e83a7d5874077cf5216a65800";

    #[test]
    fn containers_json_as_podman_writes_it() {
        let c = parse_containers_json(CONTAINERS.as_bytes()).expect("parse");
        assert_eq!(
            c.get(CONTAINER_ID),
            Some(&StoredContainer {
                name: "pg-explore".into(),
                image_id: format!("sha256:{IMAGE_ID}"),
                image_name: "localhost/patchgap-test-debian:bookworm-hello-1".into(),
            })
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn images_json_as_podman_writes_it() {
        let i = parse_images_json(IMAGES.as_bytes()).expect("parse");
        let image = i.get(IMAGE_ID).expect("image");
        assert_eq!(
            image.digest,
            "sha256:1f9252c1ec3b7aba187c3b49df2843e75bb10c2c7bb8f06a84e60ae44cd4b03c"
        );
        assert_eq!(
            image.names,
            vec!["localhost/patchgap-test-debian:bookworm-hello-1".to_string()]
        );
    }

    #[test]
    fn image_config_provenance() {
        let p = parse_image_config(CONFIG.as_bytes()).expect("parse");
        assert_eq!(
            p,
            Provenance {
                revision: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
                source: "https://example.org/patchgap/test-image".into(),
                created: "2026-12-01T00:00:00Z".into(),
            }
        );
        // Without the label, the config's own time; without labels at all, nothing else.
        let p = parse_image_config(br#"{"created":"2026-01-02T03:04:05Z","config":{}}"#)
            .expect("parse");
        assert_eq!(p.created, "2026-01-02T03:04:05Z");
        assert_eq!(p.revision, "");
        // A builder's long label is cut, at a character boundary.
        let long = format!(
            r#"{{"config":{{"Labels":{{"org.opencontainers.image.source":"{}"}}}}}}"#,
            "é".repeat(2000)
        );
        let p = parse_image_config(long.as_bytes()).expect("parse");
        assert_eq!(p.source, "é".repeat(512));
    }

    #[test]
    fn odd_entries_are_kept_apart_not_guessed() {
        let c = parse_containers_json(
            br#"[{"id":"a","names":[],"image":"nothex","metadata":"{not json"},{"id":"b","names":["x","y"]}]"#,
        )
        .expect("parse");
        assert_eq!(c["a"], StoredContainer::default());
        assert_eq!(c["b"].name, "x");
        let i =
            parse_images_json(br#"[{"id":"a","digest":"sha512:00"},{"id":"b"}]"#).expect("parse");
        assert_eq!(i["a"].digest, "");
        assert_eq!(i["b"].digest, "");
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        for bad in [&b""[..], b"{", b"{}", b"[{\"names\":[]}]", b"[1]"] {
            assert!(parse_containers_json(bad).is_err(), "{bad:?}");
            assert!(parse_images_json(bad).is_err(), "{bad:?}");
        }
        let e = parse_containers_json(b"[{\"id\":").unwrap_err();
        assert!(matches!(e, MetaError::Json { line: 1, .. }), "{e:?}");
        for bad in [&b"1"[..], b"{", b"{\"config\":{\"Labels\":[1]}}"] {
            assert!(parse_image_config(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn big_data_names_as_on_disk() {
        // The file name Podman gave the config above.
        assert_eq!(
            big_data_file_name(&format!("sha256:{IMAGE_ID}")),
            "=c2hhMjU2OjNlNTZiOGIwYmVmZWZhNDg1ZWZlNDQ5ZDE2NDFmNjRlNTAyODUwNmU4M2E3ZDU4NzQwNzdjZjUyMTZhNjU4MDA="
        );
        assert_eq!(big_data_file_name("manifest"), "=bWFuaWZlc3Q=");
        assert_eq!(big_data_file_name("ab"), "=YWI=");
        assert_eq!(big_data_file_name(""), "=");
    }
}
