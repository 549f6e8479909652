//! containerd's own record of a container's image: its metadata database
//! (`/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db`, bbolt) and
//! its content store.
//!
//! The OCI config.json of a containerd task names the image only by the
//! reference the CRI plugin was asked for (`io.kubernetes.cri.image-name`),
//! and a `ctr run` container not at all; the digest is in the database
//! (containerd's metadata/buckets.go):
//!
//! - `v1/<namespace>/containers/<id>/image`: the image's name;
//! - `v1/<namespace>/images/<name>/target/{digest,mediatype}`: the digest of
//!   the manifest (or index) the name points at, which is what a registry
//!   serves and `ctr image ls` shows.
//!
//! The image's config (its id, and its `org.opencontainers.image.*` labels)
//! is a blob of the content store,
//! `io.containerd.content.v1.content/blobs/sha256/<hex>`, named by the
//! manifest's `config.digest`; an index is first resolved to this machine's
//! platform's manifest.
//!
//! [`ContainerdReader`] reads the database beneath the runtime root only
//! when it meets a container it has not resolved yet and the file changed
//! since it last looked; what it resolved stays true for the container's
//! life (a container's image never changes), so a scan with nothing new
//! reads nothing. The database is read whole, up to [`MAX_DB_BYTES`].

use std::collections::{BTreeMap, HashMap};

use serde_json::Value as Json;

use crate::parse::bolt::{Bolt, BoltError, Value};
use crate::rootfs::{RootError, RootFs};
use crate::workload::meta::{MetaWarnings, Provenance};
use crate::workload::storage::{Version, parse_image_config};

/// The largest metadata database that is read. A node's is usually well
/// under 10 MiB; a larger one is refused (`too_large`).
pub const MAX_DB_BYTES: u64 = 64 << 20;
/// The largest manifest, index or config blob that is read.
const MAX_BLOB_BYTES: u64 = 1 << 20;

const META_DB: &str = "var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db";
const BLOBS: &str = "var/lib/containerd/io.containerd.content.v1.content/blobs/sha256";

/// What containerd records about a container's image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerdImage {
    /// The image's name, e.g. "docker.io/library/nginx:1.25".
    pub name: String,
    /// The digest of what the name points at (manifest or index), "sha256:...".
    pub digest: String,
    /// The config's digest (what CRI calls the image id), when the blob was found.
    pub image_id: String,
    /// The config's provenance labels.
    pub provenance: Provenance,
    /// The container's labels in containerd (`v1/<ns>/containers/<id>/labels`): for a CRI
    /// sandbox, the pod's labels; for a CRI container, the kubelet's `io.kubernetes.*` ones;
    /// both with the image config's labels under them. At most [`MAX_LABELS`].
    pub labels: BTreeMap<String, String>,
}

/// The most labels kept of one container.
pub const MAX_LABELS: usize = 256;

/// What containerd's metadata database records about container `id` in `namespace`: the
/// image's name and target digest, and the container's labels. Pure: bytes in.
pub fn container_record(
    db: &[u8],
    namespace: &str,
    id: &str,
) -> Result<Option<ContainerdImage>, BoltError> {
    let bolt = Bolt::new(db)?;
    let ns = namespace.as_bytes();
    let container: [&[u8]; 4] = [b"v1", ns, b"containers", id.as_bytes()];
    if bolt.bucket(&container)?.is_none() {
        return Ok(None);
    }
    let mut record = ContainerdImage::default();
    if let Some(labels) = bolt.bucket(&[b"v1", ns, b"containers", id.as_bytes(), b"labels"])? {
        for (k, v) in bolt.entries(labels, MAX_LABELS)? {
            if let Value::Bytes(v) = v {
                record.labels.insert(
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                );
            }
        }
    }
    // A container made from a root filesystem, not an image, has none.
    let Some(name) = bolt.value(&container, b"image")? else {
        return Ok(Some(record));
    };
    record.name = String::from_utf8_lossy(name).into_owned();
    record.digest = bolt
        .value(&[b"v1", ns, b"images", name, b"target"], b"digest")?
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .filter(|d| sha256_hex(d).is_some())
        .unwrap_or_default();
    Ok(Some(record))
}

/// The 64 hex digits of "sha256:<64 hex>".
fn sha256_hex(d: &str) -> Option<&str> {
    let hex = d.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

/// This machine's platform as OCI names it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// From a manifest: its config's digest. From an index: the digest of the
/// manifest for linux on this architecture (or of its only one). Pure.
pub fn next_in_manifest(bytes: &[u8]) -> Option<(bool, String)> {
    let v: Json = serde_json::from_slice(bytes).ok()?;
    if let Some(d) = v["config"]["digest"].as_str() {
        return Some((true, d.to_string()));
    }
    let manifests = v["manifests"].as_array()?;
    let pick = manifests
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == oci_arch())
        .or_else(|| (manifests.len() == 1).then(|| &manifests[0]))?;
    Some((false, pick["digest"].as_str()?.to_string()))
}

/// Resolves containerd containers to their images (see the module docs).
#[derive(Debug, Default)]
pub struct ContainerdReader {
    /// (namespace, id) → what was found, with the scan it was last used in.
    resolved: HashMap<(String, String), (ContainerdImage, u64)>,
    /// The database version in which each unresolved container was missing.
    missing: HashMap<(String, String), Version>,
    reads: u64,
}

fn warning(e: &RootError) -> MetaWarnings {
    let mut w = MetaWarnings::default();
    match e {
        RootError::NotFound => {}
        RootError::TooLarge { .. } => w.too_large = 1,
        RootError::Escapes => w.escapes_root = 1,
        _ => w.unreadable = 1,
    }
    w
}

impl ContainerdReader {
    /// What containerd's database under `root` says about container `id` in
    /// `namespace`; None when it does not know it (or has no database).
    pub fn container(
        &mut self,
        root: &RootFs,
        generation: u64,
        namespace: &str,
        id: &str,
    ) -> (Option<ContainerdImage>, MetaWarnings) {
        let key = (namespace.to_string(), id.to_string());
        if let Some((image, g)) = self.resolved.get_mut(&key) {
            *g = generation;
            return (Some(image.clone()), MetaWarnings::default());
        }
        let version = match root.metadata(META_DB.as_bytes()) {
            Ok(m) => Version::of(&m),
            Err(e) => return (None, warning(&e)),
        };
        if self.missing.get(&key) == Some(&version) {
            return (None, MetaWarnings::default());
        }
        self.reads += 1;
        let db = match root.read(META_DB.as_bytes(), MAX_DB_BYTES) {
            Ok(db) => db,
            Err(e) => return (None, warning(&e)),
        };
        let found = match container_record(&db, namespace, id) {
            Ok(found) => found,
            // Torn while containerd committed, most likely: tried again when the file changes.
            Err(_) => {
                self.missing.insert(key, version);
                return (
                    None,
                    MetaWarnings {
                        bad_json: 1,
                        ..Default::default()
                    },
                );
            }
        };
        drop(db);
        let Some(mut image) = found else {
            self.missing.insert(key, version);
            return (None, MetaWarnings::default());
        };
        self.missing.remove(&key);
        self.config(root, &mut image);
        self.resolved.insert(key, (image.clone(), generation));
        (Some(image), MetaWarnings::default())
    }

    /// Follows the target (index → manifest → config) through the content
    /// store, and reads the config's id and provenance. A blob that is
    /// missing (content garbage-collected, or a lazily pulled image) leaves
    /// them unknown.
    fn config(&mut self, root: &RootFs, image: &mut ContainerdImage) {
        let mut digest = image.digest.clone();
        // An index, then a manifest, then the config: three steps at most.
        for _ in 0..3 {
            let Some(hex) = sha256_hex(&digest) else {
                return;
            };
            self.reads += 1;
            let Ok(bytes) = root.read(format!("{BLOBS}/{hex}").as_bytes(), MAX_BLOB_BYTES) else {
                return;
            };
            if !image.image_id.is_empty() {
                if let Ok(p) = parse_image_config(&bytes) {
                    image.provenance = p;
                }
                return;
            }
            match next_in_manifest(&bytes) {
                Some((true, config)) => {
                    image.image_id = config.clone();
                    digest = config;
                }
                Some((false, manifest)) => digest = manifest,
                None => return,
            }
        }
    }

    /// Forgets containers not looked up since `previous_generation`.
    pub fn evict(&mut self, previous_generation: u64) {
        self.resolved.retain(|_, (_, g)| *g >= previous_generation);
        if self.missing.len() > 4096 {
            self.missing.clear();
        }
    }

    /// How many files were read since start.
    pub fn files_read(&self) -> u64 {
        self.reads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::bolt::BoltError;

    /// Written by containerd 1.6.20 (Debian) after `ctr -n k8s.io image import` of the test
    /// image's OCI archive and `ctr -n k8s.io run` of container "c0ffee…01".
    const DB: &[u8] = include_bytes!("testdata/containerd-meta.bolt");
    const ID: &str = "c0ffee0000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn a_container_s_image_digest_and_labels_from_a_real_database() {
        let r = container_record(DB, "k8s.io", ID)
            .expect("read")
            .expect("found");
        assert_eq!(r.name, "localhost/patchgap-test-debian:bookworm-2");
        assert_eq!(
            r.digest,
            "sha256:9cc9f10b9807c97c37c3fbfb26cc6541b890e8568d70425b5aa3e600948917d0"
        );
        assert_eq!(
            r.labels.get("io.kubernetes.pod.name").map(String::as_str),
            Some("web-6c8f7b9d4c-h7k2p")
        );
        assert_eq!(container_record(DB, "k8s.io", "nope").expect("read"), None);
        assert_eq!(container_record(DB, "default", ID).expect("read"), None);
    }

    #[test]
    fn torn_or_foreign_files_are_errors_not_panics() {
        assert_eq!(
            container_record(b"", "k8s.io", ID).unwrap_err(),
            BoltError::NoMeta
        );
        assert_eq!(
            container_record(&[0u8; 8192], "k8s.io", ID).unwrap_err(),
            BoltError::NoMeta
        );
        // Cut anywhere after the meta pages: an error or no answer, never a panic.
        for cut in (8192..DB.len()).step_by(4096) {
            let _ = container_record(&DB[..cut], "k8s.io", ID);
        }
        // Every byte of every page flipped in turn (a page at a time, to stay quick).
        let mut db = DB.to_vec();
        for at in (8192..db.len()).step_by(97) {
            db[at] ^= 0xff;
            let _ = container_record(&db, "k8s.io", ID);
            db[at] ^= 0xff;
        }
    }

    #[test]
    fn index_to_manifest_to_config() {
        let arch = oci_arch();
        let index = format!(
            r#"{{"manifests":[{{"digest":"sha256:aa","platform":{{"os":"linux","architecture":"s390x"}}}},{{"digest":"sha256:bb","platform":{{"os":"linux","architecture":"{arch}"}}}}]}}"#
        );
        assert_eq!(
            next_in_manifest(index.as_bytes()),
            Some((false, "sha256:bb".into()))
        );
        assert_eq!(
            next_in_manifest(br#"{"config":{"digest":"sha256:cc"},"layers":[]}"#),
            Some((true, "sha256:cc".into()))
        );
        assert_eq!(next_in_manifest(b"{"), None);
    }
}
