//! Runtime metadata: what the container runtimes themselves wrote on disk about a container,
//! read without calling an API server or a runtime socket.
//!
//! The parsers are pure (bytes in, no I/O). [`MetaReader`] finds the files under a runtime root
//! ("/" in production, a temporary directory in tests) through a [`RootFs`] opened with
//! [`RootFs::open_beneath`], so a symlink that would leave that root is refused rather than
//! followed: these files sit next to a container's rootfs, and no lookup made for them may be
//! turned into a read of some other host file.
//!
//! Where each runtime keeps a container's metadata, and the quirks that matter here:
//!
//! - containerd writes the OCI bundle of every task (runtime v2 shim) to
//!   `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`. The CRI plugin
//!   uses the namespace "k8s.io" and records the pod in `io.kubernetes.cri.*` annotations
//!   (`sandbox-name`, `sandbox-namespace`, `sandbox-uid`, `container-name`, `image-name`,
//!   `container-type`, `sandbox-id`). `image-name` is the image's reference, not a digest, and
//!   no image id is recorded in the spec. Pod labels are never in the spec; pod annotations only
//!   when the runtime's `pod_annotations` setting lets them through. The digest, the image id,
//!   the provenance labels and the pod's labels (on the sandbox) come from containerd's own
//!   database and content store ([`super::containerd`]).
//! - Docker runs its containers through containerd too, in the namespace "moby", with a
//!   config.json that has no CRI annotations. Such a config is only a fallback: the lookup goes
//!   on to Docker's own `config.v2.json`, which knows the image and the labels.
//! - CRI-O writes `/run/containers/storage/overlay-containers/<id>/userdata/config.json` (the
//!   run root; its own paths say `/var/run`, which is a symlink to `/run` and, being absolute,
//!   could not be followed beneath the root). Besides `io.kubernetes.cri-o.*` annotations it
//!   copies the CRI labels and annotations in as plain annotations. The pod's labels, and its
//!   annotations, are only on the sandbox (infra) container, JSON-encoded in
//!   `io.kubernetes.cri-o.Labels` and `io.kubernetes.cri-o.Annotations`; an application
//!   container's `Labels` only holds the kubelet's `io.kubernetes.*` keys. [`MetaReader`]
//!   therefore reads the sandbox named by `io.kubernetes.cri-o.SandboxID` as well and merges the
//!   pod's labels and `patchgap.io/` annotations in. `ImageName` is the reference; `ImageRef`
//!   holds the image id as 64 bare hex digits, and so does `Image` for a container (the image
//!   spec the kubelet passed, normally the id it resolved), so both are normalized to
//!   "sha256:<hex>", and a "repo@sha256:..." in either is taken as the repo digest it is.
//! - Podman (rootful) writes the same OCI shape to
//!   `/var/lib/containers/storage/overlay-containers/<id>/userdata/config.json` with
//!   `io.container.manager=libpod`. Both use the containers/storage layout (CRI-O its run
//!   root, Podman its graph root, and either can be configured to the other's), so the
//!   `io.container.manager` annotation, not the directory, decides between "cri-o" and
//!   "podman" when it is there. Podman's config names neither the container nor its image:
//!   those, the digest and the image's provenance labels come from containers/storage's own
//!   lists ([`super::storage`]), which fill in only what the config left empty.
//! - Docker keeps `/var/lib/docker/containers/<id>/config.v2.json`: `Config.Image` is what was
//!   asked for (a familiar name such as "nginx:1.25", or for cri-dockerd the image id), `Image`
//!   is the image id, `Config.Labels` the labels and `Name` the name with a leading "/".
//!   cri-dockerd (the former dockershim) puts the pod in labels (`io.kubernetes.pod.*`,
//!   `io.kubernetes.container.name`, `io.kubernetes.docker.type`, `io.kubernetes.sandbox.id`)
//!   and the pod's annotations in labels prefixed with "annotation.".
//! - The kubelet names `/var/log/pods/<namespace>_<pod>_<uid>` after every pod it runs, which
//!   identifies a pod from the uid in its cgroup path when the runtime's files do not. A static
//!   pod's uid there is the 32-hex hash of its manifest, which is also the uid in its cgroup.
//!
//! A repo digest ("sha256:..." of the manifest or index a registry serves) is reported only when
//! the runtime wrote one down as part of a reference ("repo@sha256:..."); an image id is never
//! passed off as one. The fixtures under `testdata/` were written from knowledge of the formats
//! (containerd `pkg/cri/annotations/annotations.go` and `pkg/cri/server/container_create*.go`,
//! CRI-O `pkg/annotations/annotations.go` and `server/container_create_linux.go`,
//! `server/sandbox_run_linux.go`, moby `container/container.go`), without access to the sources
//! here; they are compact single-line JSON with Go's HTML escaping, as Go's encoding/json writes
//! them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{Map, Value};

use crate::rootfs::{FileMeta, RootError, RootFs};
use crate::workload::containerd::{ContainerdImage, ContainerdReader};
use crate::workload::storage::{StorageFacts, StorageReader};

/// The largest metadata file that is read; a larger one is refused (`too_large`).
pub const MAX_META_BYTES: u64 = 4 << 20;

/// The runtime names of [`RuntimeMeta::runtime`].
const CONTAINERD: &str = "containerd";
const CRIO: &str = "cri-o";
const DOCKER: &str = "docker";
const PODMAN: &str = "podman";

/// The prefix of the annotations and labels that patchgap itself reads.
const PATCHGAP_PREFIX: &str = "patchgap.io/";
/// The data classification of a workload, such as "pii".
const DATA_CLASSIFICATION: &str = "patchgap.io/data-classification";
/// Where a workload writes data, comma-separated.
const WRITES_TO: &str = "patchgap.io/writes-to";

// containerd's CRI annotations (pkg/cri/annotations).
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const CRI_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const CRI_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const CRI_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const CRI_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
/// The prefix that marks a containerd config as one the CRI plugin made.
const CRI_PREFIX: &str = "io.kubernetes.cri.";

// CRI-O's annotations (pkg/annotations).
const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
const CRIO_SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";
const CRIO_IMAGE: &str = "io.kubernetes.cri-o.Image";
const CRIO_IMAGE_NAME: &str = "io.kubernetes.cri-o.ImageName";
const CRIO_IMAGE_REF: &str = "io.kubernetes.cri-o.ImageRef";
const CRIO_LABELS: &str = "io.kubernetes.cri-o.Labels";
const CRIO_ANNOTATIONS: &str = "io.kubernetes.cri-o.Annotations";
const CRIO_METADATA: &str = "io.kubernetes.cri-o.Metadata";
const CRIO_KUBE_NAME: &str = "io.kubernetes.cri-o.KubeName";
const CRIO_NAMESPACE: &str = "io.kubernetes.cri-o.Namespace";
/// Which program made an OCI config in the containers/storage layout: "cri-o" or "libpod".
const CONTAINER_MANAGER: &str = "io.container.manager";

// The kubelet's CRI labels (k8s.io/kubelet/pkg/types), which CRI-O copies into annotations and
// cri-dockerd into Docker labels.
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_UID: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";

// cri-dockerd's own labels.
const DOCKER_TYPE: &str = "io.kubernetes.docker.type";
const DOCKER_SANDBOX_ID: &str = "io.kubernetes.sandbox.id";
/// The prefix under which cri-dockerd stores a pod's annotations as Docker labels.
const DOCKER_ANNOTATION_PREFIX: &str = "annotation.";

// Where the runtimes keep their files, relative to the runtime root.
const CONTAINERD_TASKS: &str = "run/containerd/io.containerd.runtime.v2.task";
const CRIO_CONTAINERS: &str = "run/containers/storage/overlay-containers";
const DOCKER_CONTAINERS: &str = "var/lib/docker/containers";
const PODMAN_CONTAINERS: &str = "var/lib/containers/storage/overlay-containers";
const POD_LOGS: &str = "var/log/pods";

/// What a container runtime recorded about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeMeta {
    /// "containerd", "cri-o", "docker", "podman", or "" when unknown.
    pub runtime: String,
    /// The pod's name, for a Kubernetes container.
    pub pod_name: String,
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's uid.
    pub pod_uid: String,
    /// The container's name ("POD" for a CRI-O or cri-dockerd sandbox; containerd records none).
    pub container_name: String,
    /// The image reference, fully qualified, e.g. "docker.io/library/nginx:1.25" (a reference,
    /// not a digest).
    pub image_ref: String,
    /// The image id, e.g. "sha256:...", when the runtime records it.
    pub image_id: String,
    /// "sha256:<64 hex>" only when the runtime records the repo digest itself (e.g. an image
    /// reference "repo@sha256:..."); empty means unknown — never guess.
    pub image_digest: String,
    /// Pod labels (CRI-O's sandbox Labels annotation, merged into its containers by
    /// [`MetaReader`]; containerd has none) or container labels (Docker's Config.Labels).
    pub labels: BTreeMap<String, String>,
    /// Only the annotations whose keys start with "patchgap.io/", and the `io.kubernetes.*`
    /// annotations whose values went into the fields above.
    pub annotations: BTreeMap<String, String>,
    /// The container is a pod sandbox (pause), from io.kubernetes.cri.container-type=sandbox /
    /// io.kubernetes.cri-o.ContainerType=sandbox / io.kubernetes.docker.type=podsandbox.
    pub sandbox: bool,
    /// Where the image came from, where the runtime records its labels (Podman's image config,
    /// Docker's merged container labels); empty fields are unknown.
    pub provenance: Provenance,
}

/// The longest provenance value kept.
pub const MAX_PROVENANCE_BYTES: usize = 1024;

/// An image's provenance, from its OCI labels (`org.opencontainers.image.revision`, `.source`,
/// `.created`): the commit it was built from, the repository, and when it was built. These are
/// what the image's builder wrote, not verified facts; a responder reads them as claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Provenance {
    /// The source revision, usually a commit sha.
    pub revision: String,
    /// The source repository's URL.
    pub source: String,
    /// When the image was built (RFC 3339, as written).
    pub created: String,
}

impl Provenance {
    /// From OCI labels (or annotations), looked up by `labels`; trimmed, empty when absent.
    /// Each value is cut to [`MAX_PROVENANCE_BYTES`] (at a character boundary): they are
    /// whatever the image's builder wrote.
    pub fn from_labels<'a>(labels: impl Fn(&str) -> Option<&'a String>) -> Provenance {
        let get = |k: &str| {
            let v = labels(k).map(|v| v.trim()).unwrap_or_default();
            let mut end = v.len().min(MAX_PROVENANCE_BYTES);
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            v[..end].to_string()
        };
        Provenance {
            revision: get("org.opencontainers.image.revision"),
            source: get("org.opencontainers.image.source"),
            created: get("org.opencontainers.image.created"),
        }
    }

    /// Nothing is known.
    pub fn is_empty(&self) -> bool {
        self.revision.is_empty() && self.source.is_empty() && self.created.is_empty()
    }
}

/// Why a metadata file could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    /// The file is not valid JSON (truncated, for instance, when read while being written).
    #[error("not valid JSON at line {line} column {column}: {reason}")]
    Json {
        /// The 1-based line of the error.
        line: usize,
        /// The column of the error on that line, as serde_json counts it.
        column: usize,
        /// What was wrong.
        reason: String,
    },
    /// The JSON is valid but not the runtime's format: a field that is always written is absent.
    #[error("missing {0}")]
    Missing(&'static str),
}

/// What a parser learned, including what only [`MetaReader`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    /// The public part.
    meta: RuntimeMeta,
    /// The id of the container's pod sandbox, when recorded.
    sandbox_id: String,
    /// For containerd: whether the CRI plugin made the container (any `io.kubernetes.cri.*`
    /// annotation). Always true for the other runtimes.
    kubernetes: bool,
    /// For the containers/storage layout: the `io.container.manager` annotation.
    manager: String,
}

/// containerd OCI bundle config.json (runtime v2 task dir): annotations
/// io.kubernetes.cri.sandbox-name, sandbox-namespace, sandbox-uid, container-name, image-name,
/// container-type.
pub fn parse_containerd_config(bytes: &[u8]) -> Result<RuntimeMeta, MetaError> {
    parse_containerd(bytes).map(|p| p.meta)
}

/// CRI-O userdata/config.json: annotations io.kubernetes.pod.name, io.kubernetes.pod.namespace,
/// io.kubernetes.pod.uid, io.kubernetes.container.name, io.kubernetes.cri-o.ImageName,
/// io.kubernetes.cri-o.ImageRef (image id), io.kubernetes.cri-o.Labels (a JSON-encoded string of
/// pod labels), io.kubernetes.cri-o.ContainerType.
///
/// Podman writes the same shape; its configs (`io.container.manager=libpod`) report "podman".
pub fn parse_crio_config(bytes: &[u8]) -> Result<RuntimeMeta, MetaError> {
    parse_crio(bytes).map(|p| p.meta)
}

/// Docker /var/lib/docker/containers/<id>/config.v2.json: Config.Image (reference), Image (image
/// id "sha256:..."), Config.Labels, Name ("/name"); cri-dockerd containers carry
/// io.kubernetes.pod.name/namespace/uid and io.kubernetes.container.name as labels.
pub fn parse_docker_config(bytes: &[u8]) -> Result<RuntimeMeta, MetaError> {
    parse_docker(bytes).map(|p| p.meta)
}

/// kubelet's /var/log/pods/<namespace>_<pod>_<uid> directory name, as (namespace, pod, uid).
///
/// Namespaces (DNS labels) and pod names (DNS subdomains) cannot contain "_", so the split is
/// unambiguous; anything else, such as a stray file, gives None.
pub fn parse_pod_log_dir(name: &str) -> Option<(String, String, String)> {
    let mut parts = name.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !is_dns_label(namespace)
        || !is_dns_subdomain(pod)
        || !is_pod_uid(uid)
    {
        return None;
    }
    Some((namespace.to_string(), pod.to_string(), uid.to_string()))
}

/// The controller that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Owner {
    /// Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or CronJob.
    pub kind: String,
    /// The controller's name.
    pub name: String,
    /// How the owner was found.
    pub source: OwnerSource,
}

/// How an [`Owner`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerSource {
    /// From a label that the controller sets on its pods.
    Label,
    /// From the pod name's pattern alone.
    Inferred,
}

/// The alphabet of Kubernetes' generated name suffixes and of `pod-template-hash`
/// (k8s.io/apimachinery/pkg/util/rand: no vowels, no 0, 1 or 3, so no words and no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// The length of the random suffix of a generated name.
const GENERATED_SUFFIX_LEN: usize = 5;
/// The longest prefix kept of a `generateName` base (63 − 5): a longer base is cut there.
const MAX_GENERATED_BASE: usize = 58;

/// Derives the owner of a pod from its labels, else from its name.
///
/// Label rules, in this order; once one applies, its answer (or None) is final:
///
/// 1. `pod-template-hash` => Deployment. A ReplicaSet names its pods `<rs>-<5 chars>` with
///    `<rs> = <deployment>-<hash>`, so the name is the pod name minus "-<hash>-<suffix>". The
///    ReplicaSet's own name is not recorded on the node. `generateName` keeps only the first 58
///    characters of `<rs>-`, so a 63-character pod name may hold only a prefix of the hash: the
///    Deployment is then the part before "-<prefix of hash>" when that prefix has at least one
///    character; with no hash left the Deployment's name may itself be cut, and the answer is
///    None.
/// 2. `statefulset.kubernetes.io/pod-name` or `apps.kubernetes.io/pod-index` => StatefulSet:
///    its pods are `<sts>-<ordinal>` (the ordinal from `pod-index` when present), never cut.
/// 3. `controller-revision-hash` together with `pod-template-generation` => DaemonSet: the pod
///    name minus "-<5 chars>". A 63-character name may have been cut, so it gives None.
/// 4. `batch.kubernetes.io/job-name` (Kubernetes 1.27+) or `job-name` => Job with the label's
///    value as its name; a Job named `<x>-<8 or more digits>` was made by CronJob `<x>` (the
///    digits are the scheduled time in minutes since the epoch) => CronJob `<x>`.
///
/// Without any of those labels, from the name's pattern alone (all marked Inferred), for valid
/// lower-case pod names only (so "/process_api" or "Web-0" give None):
///
/// 1. `<x>-<8 or more digits>-<5 chars>` => CronJob `<x>` (a CronJob's Job's pod). Checked
///    first: an all-digit middle part is far more likely a timestamp than a template hash.
/// 2. `<deploy>-<hash>-<5 chars>`, hash 6–10 characters, both of the alphabet
///    "bcdfghjklmnpqrstvwxz2456789" => Deployment `<deploy>`.
/// 3. `<name>-<ordinal>` (decimal, no leading zero) => StatefulSet `<name>`, unless the ordinal
///    is 5 digits of the alphabet, which could as well be a random suffix: None.
/// 4. `<name>-<5 chars of the alphabet>`: a DaemonSet's or a Job's pod; ambiguous, so None
///    rather than a guess.
///
/// A static pod named `<name>-<node>` on a node whose name ends in digits looks like a
/// StatefulSet pod to rule 3; such an answer is Inferred, not known.
pub fn infer_owner(pod_name: &str, labels: &BTreeMap<String, String>) -> Option<Owner> {
    let label = |k: &str| labels.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let owner = |kind: &str, name: &str, source| Owner {
        kind: kind.to_string(),
        name: name.to_string(),
        source,
    };
    let valid_name = is_dns_subdomain(pod_name);

    if let Some(hash) = label("pod-template-hash") {
        return valid_name
            .then(|| deployment_from_hash(pod_name, hash))
            .flatten()
            .map(|d| owner("Deployment", d, OwnerSource::Label));
    }
    if labels.contains_key("statefulset.kubernetes.io/pod-name")
        || labels.contains_key("apps.kubernetes.io/pod-index")
    {
        // The pod-name label is the pod's name, which helps when the runtime's files had none.
        let name = if valid_name {
            pod_name
        } else {
            label("statefulset.kubernetes.io/pod-name").filter(|n| is_dns_subdomain(n))?
        };
        let (base, ordinal) = name.rsplit_once('-')?;
        let ordinal_ok = match label("apps.kubernetes.io/pod-index") {
            Some(index) => ordinal == index,
            None => is_ordinal(ordinal),
        };
        return (ordinal_ok && !base.is_empty())
            .then(|| owner("StatefulSet", base, OwnerSource::Label));
    }
    if labels.contains_key("controller-revision-hash")
        && labels.contains_key("pod-template-generation")
    {
        return valid_name
            .then(|| generated_base(pod_name))
            .flatten()
            .map(|d| owner("DaemonSet", d, OwnerSource::Label));
    }
    if let Some(job) = label("batch.kubernetes.io/job-name").or_else(|| label("job-name")) {
        return Some(match cronjob_of_job(job) {
            Some(cron) => owner("CronJob", cron, OwnerSource::Label),
            None => owner("Job", job, OwnerSource::Label),
        });
    }

    if !valid_name {
        return None;
    }
    let (rest, last) = pod_name.rsplit_once('-')?;
    if rest.is_empty() {
        return None;
    }
    let suffix = last.len() == GENERATED_SUFFIX_LEN && in_alphabet(last);
    if suffix && let Some((base, middle)) = rest.rsplit_once('-') {
        if !base.is_empty() && middle.len() >= 8 && middle.bytes().all(|b| b.is_ascii_digit()) {
            return Some(owner("CronJob", base, OwnerSource::Inferred));
        }
        if !base.is_empty() && (6..=10).contains(&middle.len()) && in_alphabet(middle) {
            return Some(owner("Deployment", base, OwnerSource::Inferred));
        }
    }
    if is_ordinal(last) && !suffix {
        return Some(owner("StatefulSet", rest, OwnerSource::Inferred));
    }
    None
}

/// The Deployment of a pod with `pod-template-hash` `hash` (see [`infer_owner`], rule 1).
fn deployment_from_hash<'a>(pod: &'a str, hash: &str) -> Option<&'a str> {
    let (rs, _suffix) = pod.rsplit_once('-')?;
    if let Some(deploy) = rs.strip_suffix(hash).and_then(|d| d.strip_suffix('-'))
        && !deploy.is_empty()
    {
        return Some(deploy);
    }
    // Cut by generateName: the pod is ("<deploy>-<hash>-")[..58] + 5 random characters.
    if pod.len() != MAX_GENERATED_BASE + GENERATED_SUFFIX_LEN {
        return None;
    }
    let base = &pod[..MAX_GENERATED_BASE];
    let tail = format!("-{hash}-");
    // At least "-" and one character of the hash must be left to tell where the name ends.
    (2..tail.len())
        .rev()
        .find(|&k| base.ends_with(&tail[..k]))
        .map(|k| &base[..MAX_GENERATED_BASE - k])
        .filter(|d| !d.is_empty() && !d.ends_with('-'))
}

/// The base of a generated name `<base>-<5 chars>`, when it cannot have been cut.
fn generated_base(pod: &str) -> Option<&str> {
    if pod.len() >= MAX_GENERATED_BASE + GENERATED_SUFFIX_LEN {
        return None;
    }
    let (base, suffix) = pod.rsplit_once('-')?;
    (!base.is_empty() && suffix.len() == GENERATED_SUFFIX_LEN).then_some(base)
}

/// The CronJob that made a Job named `<cronjob>-<8 or more digits>`.
fn cronjob_of_job(job: &str) -> Option<&str> {
    let (cron, minutes) = job.rsplit_once('-')?;
    (!cron.is_empty() && minutes.len() >= 8 && minutes.bytes().all(|b| b.is_ascii_digit()))
        .then_some(cron)
}

/// Whether every character is of [`NAME_ALPHABET`] (and there is at least one).
fn in_alphabet(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| NAME_ALPHABET.contains(&b))
}

/// Whether `s` is a decimal number as `%d` prints it (no sign, no leading zero).
fn is_ordinal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

/// Whether `s` is an RFC 1123 DNS label, as namespaces are.
fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// Whether `s` is an RFC 1123 DNS subdomain, as pod names are: lower-case letters, digits, "-"
/// and ".", starting and ending with a letter or digit.
fn is_dns_subdomain(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| alnum(b) || b == b'-' || b == b'.')
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum)
}

/// Whether `s` looks like a pod uid: a UUID, or a static pod's 32-hex manifest hash.
fn is_pod_uid(s: &str) -> bool {
    (32..=36).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
}

/// Data scope from labels or annotations: "patchgap.io/data-classification" (trimmed,
/// lower-cased; empty = none) and "patchgap.io/writes-to" (comma-separated, trimmed, empties
/// dropped). Annotations win over labels: a key present as an annotation is taken from there,
/// even when its value is empty.
pub fn data_scope(meta: &RuntimeMeta) -> (String, Vec<String>) {
    let get = |k: &str| meta.annotations.get(k).or_else(|| meta.labels.get(k));
    let classification = get(DATA_CLASSIFICATION)
        .map(|v| v.trim().to_lowercase())
        .unwrap_or_default();
    let writes_to = get(WRITES_TO)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    (classification, writes_to)
}

/// Parses `bytes` as JSON.
fn parse_json(bytes: &[u8]) -> Result<Value, MetaError> {
    serde_json::from_slice(bytes).map_err(json_error)
}

/// A JSON error as a `MetaError` (containers/storage's lists use it too).
pub(super) fn json_error(e: serde_json::Error) -> MetaError {
    // serde_json's message ends with " at line L column C", which the variant says itself.
    let message = e.to_string();
    let reason = match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message,
    };
    MetaError::Json {
        line: e.line(),
        column: e.column(),
        reason,
    }
}

/// The string-valued members of a JSON object (others, such as `null`, are skipped).
fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON object encoded in a string, as CRI-O's Labels and Annotations are; a malformed one
/// counts as empty (the file itself was fine).
fn embedded_map(value: Option<&String>) -> BTreeMap<String, String> {
    value
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .map(|v| string_map(Some(&v)))
        .unwrap_or_default()
}

/// The annotations of an OCI runtime config, which must at least have `ociVersion`.
fn oci_annotations(bytes: &[u8]) -> Result<BTreeMap<String, String>, MetaError> {
    let value = parse_json(bytes)?;
    let object: &Map<String, Value> = value.as_object().ok_or(MetaError::Missing("ociVersion"))?;
    if !object.get("ociVersion").is_some_and(Value::is_string) {
        return Err(MetaError::Missing("ociVersion"));
    }
    Ok(string_map(object.get("annotations")))
}

/// Reads annotations, remembering the `io.kubernetes.*` ones whose values were used.
struct Annotations<'a> {
    /// All of the config's annotations.
    all: &'a BTreeMap<String, String>,
    /// The ones used, with the `patchgap.io/` ones: [`RuntimeMeta::annotations`].
    used: BTreeMap<String, String>,
}

impl<'a> Annotations<'a> {
    fn new(all: &'a BTreeMap<String, String>) -> Self {
        let used = all
            .iter()
            .filter(|(k, _)| k.starts_with(PATCHGAP_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Annotations { all, used }
    }

    /// The non-empty value of `key`, recorded as used.
    fn take(&mut self, key: &str) -> Option<String> {
        let value = self.all.get(key).filter(|v| !v.trim().is_empty())?;
        self.used.insert(key.to_string(), value.clone());
        Some(value.clone())
    }
}

fn parse_containerd(bytes: &[u8]) -> Result<Parsed, MetaError> {
    let all = oci_annotations(bytes)?;
    let mut a = Annotations::new(&all);
    let mut meta = RuntimeMeta {
        runtime: CONTAINERD.to_string(),
        pod_name: a.take(CRI_SANDBOX_NAME).unwrap_or_default(),
        pod_namespace: a.take(CRI_SANDBOX_NAMESPACE).unwrap_or_default(),
        pod_uid: a.take(CRI_SANDBOX_UID).unwrap_or_default(),
        container_name: a.take(CRI_CONTAINER_NAME).unwrap_or_default(),
        sandbox: a.take(CRI_CONTAINER_TYPE).as_deref() == Some("sandbox"),
        ..RuntimeMeta::default()
    };
    if let Some(image) = a.take(CRI_IMAGE_NAME) {
        set_image(&mut meta, &image);
    }
    let sandbox_id = a.take(CRI_SANDBOX_ID).unwrap_or_default();
    meta.annotations = a.used;
    Ok(Parsed {
        meta,
        sandbox_id,
        kubernetes: all.keys().any(|k| k.starts_with(CRI_PREFIX)),
        manager: String::new(),
    })
}

fn parse_crio(bytes: &[u8]) -> Result<Parsed, MetaError> {
    let all = oci_annotations(bytes)?;
    let labels = embedded_map(all.get(CRIO_LABELS));
    let kube_annotations = embedded_map(all.get(CRIO_ANNOTATIONS));
    let manager = all.get(CONTAINER_MANAGER).cloned().unwrap_or_default();
    let mut a = Annotations::new(&all);
    let sandbox = a.take(CRIO_CONTAINER_TYPE).as_deref() == Some("sandbox");
    let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    // The kubelet's labels are copied in as annotations; the Labels JSON has them too, and a
    // sandbox names its pod in KubeName/Namespace as well.
    let pod_name = a
        .take(POD_NAME)
        .or_else(|| label(POD_NAME))
        .or_else(|| a.take(CRIO_KUBE_NAME));
    let pod_namespace = a
        .take(POD_NAMESPACE)
        .or_else(|| label(POD_NAMESPACE))
        .or_else(|| a.take(CRIO_NAMESPACE));
    let pod_uid = a.take(POD_UID).or_else(|| label(POD_UID));
    let mut container_name = a.take(CONTAINER_NAME).or_else(|| label(CONTAINER_NAME));
    if container_name.is_none() && !sandbox {
        // A sandbox's Metadata names the pod, a container's names the container.
        container_name = all
            .get(CRIO_METADATA)
            .and_then(|m| serde_json::from_str::<Value>(m).ok())
            .and_then(|m| m.get("name")?.as_str().map(String::from))
            .filter(|n| !n.is_empty());
    }
    let mut meta = RuntimeMeta {
        runtime: if manager == "libpod" { PODMAN } else { CRIO }.to_string(),
        pod_name: pod_name.unwrap_or_default(),
        pod_namespace: pod_namespace.unwrap_or_default(),
        pod_uid: pod_uid.unwrap_or_default(),
        container_name: container_name.unwrap_or_default(),
        sandbox,
        ..RuntimeMeta::default()
    };
    // ImageName is the reference; ImageRef (and for containers Image) the image id. Image is
    // only consulted for what the other two left unknown.
    for key in [CRIO_IMAGE_NAME, CRIO_IMAGE_REF, CRIO_IMAGE] {
        if let Some(image) = a.take(key) {
            set_image(&mut meta, &image);
        }
    }
    let sandbox_id = a.take(CRIO_SANDBOX_ID).unwrap_or_default();
    meta.annotations = a.used;
    // The pod's annotations, JSON-encoded on the sandbox; the plain annotations win.
    for (k, v) in kube_annotations {
        if k.starts_with(PATCHGAP_PREFIX) {
            meta.annotations.entry(k).or_insert(v);
        }
    }
    meta.labels = labels;
    Ok(Parsed {
        meta,
        sandbox_id,
        kubernetes: true,
        manager,
    })
}

fn parse_docker(bytes: &[u8]) -> Result<Parsed, MetaError> {
    let value = parse_json(bytes)?;
    let object = value.as_object().ok_or(MetaError::Missing("Config"))?;
    let config = object
        .get("Config")
        .and_then(Value::as_object)
        .ok_or(MetaError::Missing("Config"))?;
    let labels = string_map(config.get("Labels"));
    let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    let mut meta = RuntimeMeta {
        runtime: DOCKER.to_string(),
        pod_name: label(POD_NAME).unwrap_or_default(),
        pod_namespace: label(POD_NAMESPACE).unwrap_or_default(),
        pod_uid: label(POD_UID).unwrap_or_default(),
        container_name: label(CONTAINER_NAME).unwrap_or_else(|| {
            let name = object.get("Name").and_then(Value::as_str).unwrap_or("");
            name.strip_prefix('/').unwrap_or(name).to_string()
        }),
        sandbox: label(DOCKER_TYPE).as_deref() == Some("podsandbox"),
        ..RuntimeMeta::default()
    };
    // The top-level Image is the image id the container was made from; Config.Image is what
    // was asked for, which is a reference unless it was an id.
    for image in [object.get("Image"), config.get("Image")] {
        if let Some(image) = image.and_then(Value::as_str) {
            set_image(&mut meta, image);
        }
    }
    for (k, v) in &labels {
        if let Some(key) = k.strip_prefix(DOCKER_ANNOTATION_PREFIX)
            && key.starts_with(PATCHGAP_PREFIX)
        {
            meta.annotations.insert(key.to_string(), v.clone());
        }
    }
    let sandbox_id = label(DOCKER_SANDBOX_ID).unwrap_or_default();
    // Docker merges the image's labels into the container's, so its provenance labels are here.
    meta.provenance = Provenance::from_labels(|k| labels.get(k));
    meta.labels = labels;
    Ok(Parsed {
        meta,
        sandbox_id,
        kubernetes: true,
        manager: String::new(),
    })
}

/// Files one recorded image string where it belongs: an image id, a reference (normalized),
/// and a repo digest when the reference carries one. Fields already set are kept.
fn set_image(meta: &mut RuntimeMeta, image: &str) {
    let image = image.trim();
    if image.is_empty() {
        return;
    }
    if let Some(id) = image_id(image) {
        if meta.image_id.is_empty() {
            meta.image_id = id;
        }
        return;
    }
    if image.len() < 64 && image.len() >= 12 && image.bytes().all(is_lower_hex) {
        // A short id prefix (as in `docker run 9c7a54a9a43c`): neither a name nor a whole id.
        return;
    }
    if meta.image_digest.is_empty()
        && let Some((_, digest)) = image.rsplit_once('@')
        && image_id(digest).is_some_and(|d| d == digest)
    {
        meta.image_digest = digest.to_string();
    }
    if meta.image_ref.is_empty() {
        meta.image_ref = normalize_reference(image).unwrap_or_else(|| image.to_string());
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// "sha256:<64 hex>" for an image id written either that way or as the bare 64 hex digits
/// (which distribution's reference grammar refuses as a name, so it cannot be one).
fn image_id(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (hex.len() == 64 && hex.bytes().all(is_lower_hex)).then(|| format!("sha256:{hex}"))
}

/// Expands a familiar image reference the way Docker does (distribution's
/// `ParseNormalizedNamed` and `TagNameOnly`): a first path component without ".", ":" or
/// upper-case letters that is not "localhost" is not a registry, so the registry is docker.io;
/// a single-component name on docker.io is under "library/"; no tag and no digest means
/// ":latest". None when `s` is not a reference at all.
fn normalize_reference(s: &str) -> Option<String> {
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    let (domain, path_tag) = match name_tag.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (
                if first == "index.docker.io" {
                    "docker.io"
                } else {
                    first
                },
                rest,
            )
        }
        _ => ("docker.io", name_tag),
    };
    let (path, tag) = match path_tag.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (path_tag, None),
    };
    let path_ok = !path.is_empty()
        && path.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    if !path_ok || !tag_ok || domain.is_empty() || digest.is_some_and(|d| !d.contains(':')) {
        return None;
    }
    let library = if domain == "docker.io" && !path.contains('/') {
        "library/"
    } else {
        ""
    };
    let mut out = format!("{domain}/{library}{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Some(out)
}

/// Counts of metadata files that could not be used.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetaWarnings {
    /// Not valid JSON, or not the runtime's format.
    pub bad_json: u32,
    /// Larger than [`MAX_META_BYTES`].
    pub too_large: u32,
    /// A symlink (or a directory on the way) that points outside the runtime root.
    pub escapes_root: u32,
    /// Any other failure: permissions, a symlink loop, not a regular file.
    pub unreadable: u32,
}

impl MetaWarnings {
    fn add(&mut self, other: &MetaWarnings) {
        self.bad_json = self.bad_json.saturating_add(other.bad_json);
        self.too_large = self.too_large.saturating_add(other.too_large);
        self.escapes_root = self.escapes_root.saturating_add(other.escapes_root);
        self.unreadable = self.unreadable.saturating_add(other.unreadable);
    }

    /// The warning for a failed lookup or read; None for a file that is simply not there.
    fn of(err: &RootError) -> Option<MetaWarnings> {
        let mut w = MetaWarnings::default();
        match err {
            RootError::NotFound => return None,
            RootError::TooLarge { .. } => w.too_large = 1,
            RootError::Escapes => w.escapes_root = 1,
            RootError::PermissionDenied | RootError::Unsupported | RootError::Io { .. } => {
                w.unreadable = 1;
            }
        }
        Some(w)
    }
}

/// A runtime's on-disk layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Containerd,
    CriO,
    Docker,
    Podman,
}

impl Layout {
    /// The order in which layouts are tried without a hint.
    const ALL: [Layout; 4] = [
        Layout::Containerd,
        Layout::CriO,
        Layout::Docker,
        Layout::Podman,
    ];

    /// The layout for a runtime name from the cgroup path (or a common alias of it).
    fn from_hint(hint: &str) -> Option<Layout> {
        match hint {
            "containerd" | "cri-containerd" => Some(Layout::Containerd),
            "cri-o" | "crio" => Some(Layout::CriO),
            "docker" => Some(Layout::Docker),
            "podman" | "libpod" => Some(Layout::Podman),
            _ => None,
        }
    }

    /// The layouts to try, the hinted one first.
    fn order(hint: Option<Layout>) -> impl Iterator<Item = Layout> {
        hint.into_iter()
            .chain(Layout::ALL.into_iter().filter(move |&l| Some(l) != hint))
    }

    fn parse(self, bytes: &[u8]) -> Result<Parsed, MetaError> {
        match self {
            Layout::Containerd => parse_containerd(bytes),
            Layout::CriO | Layout::Podman => {
                let mut parsed = parse_crio(bytes)?;
                // Without io.container.manager, the directory is all there is to go by.
                if self == Layout::Podman && parsed.manager.is_empty() {
                    parsed.meta.runtime = PODMAN.to_string();
                }
                Ok(parsed)
            }
            Layout::Docker => parse_docker(bytes),
        }
    }

    /// The path of container `id`'s file in this layout (containerd: in `namespace`).
    fn path(self, id: &str, namespace: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        match self {
            Layout::Containerd => {
                p.extend_from_slice(CONTAINERD_TASKS.as_bytes());
                p.push(b'/');
                p.extend_from_slice(namespace);
                p.extend_from_slice(format!("/{id}/config.json").as_bytes());
            }
            Layout::CriO => p.extend_from_slice(
                format!("{CRIO_CONTAINERS}/{id}/userdata/config.json").as_bytes(),
            ),
            Layout::Docker => {
                p.extend_from_slice(format!("{DOCKER_CONTAINERS}/{id}/config.v2.json").as_bytes())
            }
            Layout::Podman => p.extend_from_slice(
                format!("{PODMAN_CONTAINERS}/{id}/userdata/config.json").as_bytes(),
            ),
        }
        p
    }
}

/// What identifies one version of a file: if none of these changed, it was not rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

impl FileKey {
    fn of(m: &FileMeta) -> FileKey {
        FileKey {
            dev: m.id.dev,
            ino: m.id.ino,
            mtime_ns: m.mtime_ns,
            size: m.size,
        }
    }
}

/// The outcome of looking one container up.
#[derive(Debug, Clone)]
struct Entry {
    layout: Layout,
    /// The file the outcome came from (or the path whose lookup failed).
    path: Vec<u8>,
    /// The file's version, when it was found; None for a lookup that failed on the way.
    key: Option<FileKey>,
    /// What the file said, when it could be read and parsed.
    parsed: Option<Parsed>,
    warnings: MetaWarnings,
    /// The scan in which the entry was last used.
    generation: u64,
}

/// Reads runtime metadata under a runtime root, never following a symlink out of it.
///
/// Outcomes are cached per container id together with the file's (device, inode, mtime, size),
/// so an unchanged file is not read again; every later lookup costs one `openat2` + `fstat`.
/// Entries not used during a whole scan are dropped at the next [`MetaReader::begin_scan`].
#[derive(Debug)]
pub struct MetaReader {
    root: RootFs,
    cache: HashMap<String, Entry>,
    /// Pod uid → (namespace, name), listed once per scan.
    pods: Option<HashMap<String, (String, String)>>,
    /// Counts scans, for evicting unused cache entries.
    generation: u64,
    totals: MetaWarnings,
    /// How many metadata files were opened for reading.
    reads: u64,
    /// containers/storage's lists, for Podman's names, images and digests.
    storage: StorageReader,
    /// containerd's metadata database, for its containers' image digests.
    containerd: ContainerdReader,
}

impl MetaReader {
    /// Opens `runtime_root` ("/" in production) with [`RootFs::open_beneath`].
    ///
    /// Beneath the root, an absolute symlink in a runtime's own directories (say
    /// `/var/lib/docker -> /data/docker`) cannot be followed either; the runtime's files then
    /// give `escapes_root` warnings. A relative link that stays inside works.
    pub fn new(runtime_root: &Path) -> Result<MetaReader, RootError> {
        Ok(MetaReader {
            root: RootFs::open_beneath(runtime_root)?,
            cache: HashMap::new(),
            pods: None,
            generation: 0,
            totals: MetaWarnings::default(),
            reads: 0,
            storage: StorageReader::default(),
            containerd: ContainerdReader::default(),
        })
    }

    /// Looks a container id up in every runtime's layout, in this order: containerd
    /// /run/containerd/io.containerd.runtime.v2.task/<any namespace dir>/<id>/config.json, CRI-O
    /// /run/containers/storage/overlay-containers/<id>/userdata/config.json, Docker
    /// /var/lib/docker/containers/<id>/config.v2.json, Podman rootful
    /// /var/lib/containers/storage/overlay-containers/<id>/userdata/config.json (same shape as
    /// CRI-O's). `runtime_hint` (from the cgroup path: "containerd", "cri-o", "docker",
    /// "podman") is tried first.
    ///
    /// The first file found decides, except that a containerd config without CRI annotations
    /// (Docker's "moby" namespace, or `ctr run`) is only used when no other runtime has the
    /// container. For a CRI-O, Podman or cri-dockerd container that is not itself a sandbox, the
    /// sandbox's labels, pod names and `patchgap.io/` annotations are merged in (the
    /// container's own win).
    ///
    /// Returns what is known plus the warnings for THIS container: a bad, huge or escaping file
    /// yields a warning and None, never an error. A failure on the way to one runtime's file
    /// (its directory escapes, say) is only reported when no runtime has the container. The
    /// totals of [`MetaReader::warnings`] count each distinct outcome once, not once per call.
    pub fn container(
        &mut self,
        id: &str,
        runtime_hint: Option<&str>,
    ) -> (Option<RuntimeMeta>, MetaWarnings) {
        if !is_container_id(id) {
            return (None, MetaWarnings::default());
        }
        let hint = runtime_hint.and_then(Layout::from_hint);
        let Some(entry) = self.resolve(id, hint) else {
            return (None, MetaWarnings::default());
        };
        let Some(mut parsed) = entry.parsed else {
            return (None, entry.warnings);
        };
        let sandbox_id = std::mem::take(&mut parsed.sandbox_id);
        if !parsed.meta.sandbox
            && entry.layout != Layout::Containerd
            && sandbox_id != id
            && is_container_id(&sandbox_id)
            && let Some(Entry {
                parsed: Some(sandbox),
                ..
            }) = self.resolve(&sandbox_id, Some(entry.layout))
        {
            merge_sandbox(&mut parsed.meta, &sandbox.meta);
        }
        let mut warnings = entry.warnings;
        if matches!(entry.layout, Layout::Podman | Layout::CriO) {
            let (facts, w) = self.storage.container(&self.root, self.generation, id);
            if w != MetaWarnings::default() {
                // Counted once per change of outcome would need the file's version here; the
                // lists are looked at once per scan, so this counts at most once per scan.
                self.totals.add(&w);
                warnings.add(&w);
            }
            if let Some(facts) = facts {
                apply_storage(&mut parsed.meta, facts);
            }
        }
        if entry.layout == Layout::Containerd
            && let Some(namespace) = containerd_namespace(&entry.path)
        {
            let (image, w) = self
                .containerd
                .container(&self.root, self.generation, &namespace, id);
            if w != MetaWarnings::default() {
                self.totals.add(&w);
                warnings.add(&w);
            }
            if let Some(image) = image {
                apply_containerd(&mut parsed.meta, image);
            }
            // The CRI plugin gives a pod's labels to its sandbox's containerd container only.
            if parsed.kubernetes
                && !parsed.meta.sandbox
                && sandbox_id != id
                && is_container_id(&sandbox_id)
            {
                let (sandbox, _) =
                    self.containerd
                        .container(&self.root, self.generation, &namespace, &sandbox_id);
                if let Some(sandbox) = sandbox {
                    merge_pod_labels(&mut parsed.meta, &sandbox.labels);
                }
            }
        }
        (Some(parsed.meta), warnings)
    }

    /// Finds namespace and pod name for a pod uid from /var/log/pods/<ns>_<pod>_<uid> (the
    /// directory is listed once per scan: call [`MetaReader::begin_scan`] first). The uid may be
    /// written with "_" for "-", as systemd cgroup names have it.
    pub fn pod_by_uid(&mut self, uid: &str) -> Option<(String, String)> {
        if self.pods.is_none() {
            let pods = self.list_pods();
            self.pods = Some(pods);
        }
        let uid = uid.trim().replace('_', "-");
        self.pods.as_ref()?.get(&uid).cloned()
    }

    /// Starts a scan: the pod log directory is listed again when next needed, and cache entries
    /// that were not used since the previous call are dropped.
    pub fn begin_scan(&mut self) {
        let current = self.generation;
        self.cache.retain(|_, e| e.generation == current);
        self.storage.evict(current);
        self.containerd.evict(current);
        self.generation = self.generation.wrapping_add(1);
        self.pods = None;
    }

    /// Totals since start.
    pub fn warnings(&self) -> MetaWarnings {
        self.totals.clone()
    }

    /// How many metadata files were opened for reading since start (cache misses), those of
    /// containers/storage included.
    pub fn files_read(&self) -> u64 {
        self.reads + self.storage.files_read() + self.containerd.files_read()
    }

    /// The outcome for container `id`, from the cache while its file is unchanged.
    fn resolve(&mut self, id: &str, hint: Option<Layout>) -> Option<Entry> {
        if let Some(cached) = self.cache.get_mut(id)
            && let Some(key) = cached.key
            && let Ok(m) = self.root.metadata(&cached.path)
            && FileKey::of(&m) == key
        {
            cached.generation = self.generation;
            return Some(cached.clone());
        }
        let fresh = self.lookup(id, hint);
        let previous = self.cache.remove(id);
        let mut fresh = fresh?;
        // A failure that repeats itself exactly (the same escaping link, say) is not counted
        // again; a file that changed and is still bad is.
        let repeated = previous.is_some_and(|p| {
            p.path == fresh.path && p.key == fresh.key && p.warnings == fresh.warnings
        });
        if !repeated {
            self.totals.add(&fresh.warnings);
        }
        fresh.generation = self.generation;
        self.cache.insert(id.to_string(), fresh.clone());
        Some(fresh)
    }

    /// Looks container `id` up in the runtimes' layouts; None when no runtime has it.
    fn lookup(&mut self, id: &str, hint: Option<Layout>) -> Option<Entry> {
        let mut fallback: Option<Entry> = None;
        let mut failure: Option<Entry> = None;
        let failed = |layout, path, w: Option<MetaWarnings>, failure: &mut Option<Entry>| {
            if let Some(warnings) = w
                && failure.is_none()
            {
                *failure = Some(Entry {
                    layout,
                    path,
                    key: None,
                    parsed: None,
                    warnings,
                    generation: 0,
                });
            }
        };
        for layout in Layout::order(hint) {
            let paths = if layout == Layout::Containerd {
                match self.root.read_dir(CONTAINERD_TASKS.as_bytes()) {
                    Ok(namespaces) => namespaces.iter().map(|ns| layout.path(id, ns)).collect(),
                    Err(e) => {
                        failed(
                            layout,
                            CONTAINERD_TASKS.as_bytes().to_vec(),
                            MetaWarnings::of(&e),
                            &mut failure,
                        );
                        Vec::new()
                    }
                }
            } else {
                vec![layout.path(id, b"")]
            };
            for path in paths {
                let key = match self.root.metadata(&path) {
                    Ok(m) => FileKey::of(&m),
                    Err(e) => {
                        failed(layout, path, MetaWarnings::of(&e), &mut failure);
                        continue;
                    }
                };
                self.reads += 1;
                let mut entry = Entry {
                    layout,
                    path,
                    key: Some(key),
                    parsed: None,
                    warnings: MetaWarnings::default(),
                    generation: 0,
                };
                match self.root.read(&entry.path, MAX_META_BYTES) {
                    // Gone since the stat: the container was removed meanwhile.
                    Err(RootError::NotFound) => continue,
                    Err(e) => entry.warnings = MetaWarnings::of(&e).unwrap_or_default(),
                    Ok(bytes) => match layout.parse(&bytes) {
                        Err(_) => entry.warnings.bad_json = 1,
                        Ok(parsed) => {
                            if layout == Layout::Containerd && !parsed.kubernetes {
                                // Docker's own containerd namespace, or a plain containerd
                                // container: keep looking for a runtime that knows more.
                                entry.parsed = Some(parsed);
                                fallback.get_or_insert(entry);
                                break;
                            }
                            entry.parsed = Some(parsed);
                        }
                    },
                }
                return Some(entry);
            }
        }
        fallback.or(failure)
    }

    /// Lists /var/log/pods into uid → (namespace, pod).
    fn list_pods(&mut self) -> HashMap<String, (String, String)> {
        match self.root.read_dir(POD_LOGS.as_bytes()) {
            Ok(names) => names
                .iter()
                .filter_map(|n| std::str::from_utf8(n).ok())
                .filter_map(parse_pod_log_dir)
                .map(|(namespace, pod, uid)| (uid, (namespace, pod)))
                .collect(),
            Err(e) => {
                if let Some(w) = MetaWarnings::of(&e) {
                    self.totals.add(&w);
                }
                HashMap::new()
            }
        }
    }
}

/// Fills in what containers/storage knows and the OCI config did not say: the name, the image
/// id, reference and digest, and the image's provenance. What the config said wins (CRI-O's
/// annotations name the container as the kubelet asked).
fn apply_storage(meta: &mut RuntimeMeta, facts: StorageFacts) {
    if meta.container_name.is_empty() && !meta.sandbox {
        meta.container_name = facts.container.name;
    }
    if meta.image_id.is_empty() {
        meta.image_id = facts.container.image_id;
    }
    if meta.image_ref.is_empty() {
        // The reference asked for; else the image's first name that is not a digest reference.
        let name = Some(facts.container.image_name)
            .filter(|n| !n.is_empty())
            .or_else(|| {
                facts
                    .image
                    .as_ref()
                    .and_then(|i| i.names.iter().find(|n| !n.contains('@')).cloned())
            });
        if let Some(name) = name {
            meta.image_ref = normalize_reference(&name).unwrap_or(name);
        }
    }
    if meta.image_digest.is_empty()
        && let Some(image) = &facts.image
    {
        meta.image_digest.clone_from(&image.digest);
    }
    if meta.provenance.is_empty() {
        meta.provenance = facts.provenance;
    }
}

/// The namespace of a containerd task's config path
/// (`run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`).
fn containerd_namespace(path: &[u8]) -> Option<String> {
    let rest = path
        .strip_prefix(CONTAINERD_TASKS.as_bytes())?
        .strip_prefix(b"/")?;
    let end = rest.iter().position(|&b| b == b'/')?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

/// The label prefixes containerd puts among a sandbox's labels that are not the pod's: the CRI
/// plugin's kind marker, and the pause image's config (`io.containerd.image.config.*`) and OCI
/// labels.
const NOT_POD_LABELS: [&str; 3] = [
    "io.cri-containerd.",
    "io.containerd.",
    "org.opencontainers.",
];

/// Takes a pod's labels from its sandbox's containerd labels; the container's own win.
fn merge_pod_labels(meta: &mut RuntimeMeta, sandbox: &BTreeMap<String, String>) {
    for (k, v) in sandbox {
        if !NOT_POD_LABELS.iter().any(|p| k.starts_with(p)) {
            meta.labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// Fills in what containerd's database knows and the config did not say: the image's name
/// (a `ctr run` container's config has none), its digest, its id and its provenance, and from
/// the kubelet's labels (`io.kubernetes.*`) the pod and container names the annotations lacked.
fn apply_containerd(meta: &mut RuntimeMeta, image: ContainerdImage) {
    let label = |k: &str| image.labels.get(k).filter(|v| !v.is_empty()).cloned();
    for (field, key) in [
        (&mut meta.pod_name, POD_NAME),
        (&mut meta.pod_namespace, POD_NAMESPACE),
        (&mut meta.pod_uid, POD_UID),
        (&mut meta.container_name, CONTAINER_NAME),
    ] {
        if field.is_empty()
            && let Some(v) = label(key)
        {
            *field = v;
        }
    }
    if meta.image_ref.is_empty() && !image.name.is_empty() {
        meta.image_ref = normalize_reference(&image.name).unwrap_or(image.name);
    }
    if meta.image_digest.is_empty() {
        meta.image_digest = image.digest;
    }
    if meta.image_id.is_empty() {
        meta.image_id = image.image_id;
    }
    if meta.provenance.is_empty() {
        meta.provenance = image.provenance;
    }
}

/// Merges what a container's pod sandbox knows into the container's metadata; the
/// container's own values win.
fn merge_sandbox(meta: &mut RuntimeMeta, sandbox: &RuntimeMeta) {
    for (k, v) in &sandbox.labels {
        meta.labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &sandbox.annotations {
        if k.starts_with(PATCHGAP_PREFIX) {
            meta.annotations
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
    for (field, from) in [
        (&mut meta.pod_name, &sandbox.pod_name),
        (&mut meta.pod_namespace, &sandbox.pod_namespace),
        (&mut meta.pod_uid, &sandbox.pod_uid),
    ] {
        if field.is_empty() {
            field.clone_from(from);
        }
    }
}

/// Whether `id` can be a container id: containerd allows `[A-Za-z0-9._-]` (up to 76
/// characters), the others use 64 hex digits. Anything else (a "/" or "..") is never looked up.
fn is_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use tempfile::TempDir;

    const CONTAINERD_JSON: &str = include_str!("testdata/containerd-config.json");
    const CONTAINERD_SANDBOX_JSON: &str = include_str!("testdata/containerd-sandbox-config.json");
    const CRIO_JSON: &str = include_str!("testdata/crio-config.json");
    const CRIO_SANDBOX_JSON: &str = include_str!("testdata/crio-sandbox-config.json");
    const DOCKER_JSON: &str = include_str!("testdata/docker-config.v2.json");
    const CRI_DOCKERD_JSON: &str = include_str!("testdata/cri-dockerd-config.v2.json");

    // The ids in the fixtures.
    const CONTAINERD_ID: &str = "c36d6b1351191f9a9babbc2e644b7e46c80f6ce4e1f83bb6410072603a6dcc81";
    const CONTAINERD_SANDBOX_ID: &str =
        "df1d4aa794be8ce214d1fcb9b981b27509f7a50937a904cf70fccc0258e6649e";
    const CRIO_ID: &str = "0ba655720e91fd4f00ee5a6297c47c02e3ea7549900ffe63b5ed1d995550c0ed";
    const CRIO_SANDBOX_CTR: &str =
        "65ef01c0858871b8fd8a541d87893bf177585847fa0469730c589cce8af4a2e0";
    const DOCKER_ID: &str = "9371cf599d9c82137822dd5e2c8f26940db36f224bae3a1c3628306df1b39476";

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The value of a key in a fixture's annotations.
    fn fixture_annotation(fixture: &str, key: &str) -> String {
        let v: Value = serde_json::from_str(fixture).expect("fixture is JSON");
        v["annotations"][key]
            .as_str()
            .expect("annotation")
            .to_string()
    }

    #[test]
    fn containerd_container() {
        let m = parse_containerd_config(CONTAINERD_JSON.as_bytes()).expect("parse");
        let sandbox_id = fixture_annotation(CONTAINERD_JSON, CRI_SANDBOX_ID);
        assert_eq!(
            m,
            RuntimeMeta {
                runtime: "containerd".into(),
                pod_name: "trainer-7d9f8b6c5d-x2x4z".into(),
                pod_namespace: "ml".into(),
                pod_uid: "6f0d2c1e-4b7a-4e59-9c3d-2a8b5e7f1c04".into(),
                container_name: "trainer".into(),
                image_ref: "ghcr.io/acme/trainer:2.3.1".into(),
                image_id: String::new(),
                image_digest: String::new(),
                labels: BTreeMap::new(),
                annotations: map(&[
                    (CRI_CONTAINER_NAME, "trainer"),
                    (CRI_CONTAINER_TYPE, "container"),
                    (CRI_IMAGE_NAME, "ghcr.io/acme/trainer:2.3.1"),
                    (CRI_SANDBOX_ID, &sandbox_id),
                    (CRI_SANDBOX_NAME, "trainer-7d9f8b6c5d-x2x4z"),
                    (CRI_SANDBOX_NAMESPACE, "ml"),
                    (CRI_SANDBOX_UID, "6f0d2c1e-4b7a-4e59-9c3d-2a8b5e7f1c04"),
                ]),
                sandbox: false,
                provenance: Provenance::default(),
            }
        );
        let p = parse_containerd(CONTAINERD_JSON.as_bytes()).expect("parse");
        assert!(p.kubernetes);
        assert_eq!(p.sandbox_id, sandbox_id);
        // The fixture is shaped as containerd writes it.
        let v: Value = serde_json::from_str(CONTAINERD_JSON).expect("json");
        assert!(v["linux"]["cgroupsPath"]
            .as_str()
            .expect("cgroupsPath")
            .starts_with("kubepods-burstable-pod6f0d2c1e_4b7a_4e59_9c3d_2a8b5e7f1c04.slice:cri-containerd:"));
        assert_eq!(v["root"]["path"], "rootfs");
    }

    #[test]
    fn containerd_sandbox() {
        let m = parse_containerd_config(CONTAINERD_SANDBOX_JSON.as_bytes()).expect("parse");
        assert!(m.sandbox);
        assert_eq!(m.pod_name, "trainer-7d9f8b6c5d-x2x4z");
        assert_eq!(m.pod_namespace, "ml");
        assert_eq!(m.container_name, "");
        assert_eq!(m.image_ref, "registry.k8s.io/pause:3.9");
        // Only the keys that were used, not sandbox-log-directory or the cpu ones.
        assert!(
            !m.annotations
                .contains_key("io.kubernetes.cri.sandbox-log-directory")
        );
    }

    #[test]
    fn containerd_digest_only_from_a_digest_reference() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let pinned = CONTAINERD_JSON.replace(
            "\"ghcr.io/acme/trainer:2.3.1\"",
            &format!("\"ghcr.io/acme/trainer@{digest}\""),
        );
        let m = parse_containerd_config(pinned.as_bytes()).expect("parse");
        assert_eq!(m.image_digest, digest);
        assert_eq!(m.image_ref, format!("ghcr.io/acme/trainer@{digest}"));
        assert_eq!(m.image_id, "");
        // A tag is no digest, and nothing is made up.
        let m = parse_containerd_config(CONTAINERD_JSON.as_bytes()).expect("parse");
        assert_eq!(m.image_digest, "");
    }

    #[test]
    fn containerd_without_cri_annotations() {
        let p = parse_containerd(br#"{"ociVersion":"1.1.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"}}"#)
            .expect("parse");
        assert!(!p.kubernetes);
        assert_eq!(p.meta.runtime, "containerd");
        assert_eq!(p.meta.pod_name, "");
    }

    #[test]
    fn crio_container() {
        let m = parse_crio_config(CRIO_JSON.as_bytes()).expect("parse");
        let image = fixture_annotation(CRIO_JSON, CRIO_IMAGE_REF);
        assert_eq!(m.runtime, "cri-o");
        assert_eq!(m.pod_name, "web-6c8f7b9d4c-h7k2p");
        assert_eq!(m.pod_namespace, "shop");
        assert_eq!(m.pod_uid, "0c7e5a2f-9d41-4b83-8e16-5f3a7c9b2d60");
        assert_eq!(m.container_name, "web");
        assert_eq!(m.image_ref, "quay.io/acme/web:1.8.2");
        assert_eq!(m.image_id, format!("sha256:{image}"));
        assert_eq!(m.image_digest, "");
        assert!(!m.sandbox);
        // A container's Labels are the kubelet's own; the pod's are on the sandbox.
        assert_eq!(
            m.labels,
            map(&[
                (CONTAINER_NAME, "web"),
                (POD_NAME, "web-6c8f7b9d4c-h7k2p"),
                (POD_NAMESPACE, "shop"),
                (POD_UID, "0c7e5a2f-9d41-4b83-8e16-5f3a7c9b2d60"),
            ])
        );
        assert_eq!(
            m.annotations.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                CONTAINER_NAME,
                CRIO_CONTAINER_TYPE,
                CRIO_IMAGE,
                CRIO_IMAGE_NAME,
                CRIO_IMAGE_REF,
                CRIO_SANDBOX_ID,
                POD_NAME,
                POD_NAMESPACE,
                POD_UID,
            ]
        );
        let p = parse_crio(CRIO_JSON.as_bytes()).expect("parse");
        assert_eq!(p.sandbox_id, CRIO_SANDBOX_CTR);
        assert_eq!(p.manager, "cri-o");
    }

    #[test]
    fn crio_sandbox_has_the_pod_labels_and_annotations() {
        let m = parse_crio_config(CRIO_SANDBOX_JSON.as_bytes()).expect("parse");
        assert!(m.sandbox);
        assert_eq!(m.pod_name, "web-6c8f7b9d4c-h7k2p");
        assert_eq!(m.container_name, "POD");
        assert_eq!(m.image_ref, "registry.k8s.io/pause:3.9");
        assert_eq!(
            m.labels.get("pod-template-hash").map(String::as_str),
            Some("6c8f7b9d4c")
        );
        assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            m.annotations.get(DATA_CLASSIFICATION).map(String::as_str),
            Some(" PII ")
        );
        assert_eq!(
            data_scope(&m),
            (
                "pii".to_string(),
                vec![
                    "postgres://orders-db.shop.svc:5432/orders".to_string(),
                    "s3://acme-invoices".to_string()
                ]
            )
        );
        assert_eq!(
            infer_owner(&m.pod_name, &m.labels),
            Some(Owner {
                kind: "Deployment".into(),
                name: "web".into(),
                source: OwnerSource::Label
            })
        );
    }

    #[test]
    fn crio_pod_annotations_only_in_the_json_still_count() {
        // Drop the plain copies of the pod's annotations: the Annotations JSON still has them.
        let v: Value = serde_json::from_str(CRIO_SANDBOX_JSON).expect("json");
        let mut v = v;
        let ann = v["annotations"].as_object_mut().expect("annotations");
        ann.remove(DATA_CLASSIFICATION);
        ann.remove(WRITES_TO);
        let m = parse_crio_config(&serde_json::to_vec(&v).expect("json")).expect("parse");
        assert_eq!(data_scope(&m).0, "pii");
    }

    #[test]
    fn podman_by_its_manager_annotation() {
        let podman = br#"{"ociVersion":"1.1.0+dev","process":{"user":{"uid":0,"gid":0},"args":["/bin/sh"],"cwd":"/"},"root":{"path":"/var/lib/containers/storage/overlay/x/merged"},"hostname":"4f2a9c1e7b3d","annotations":{"io.container.manager":"libpod","io.podman.annotations.autoremove":"FALSE","io.podman.annotations.init":"FALSE","io.podman.annotations.privileged":"FALSE","io.podman.annotations.publish-all":"FALSE","org.opencontainers.image.stopSignal":"15"},"linux":{"cgroupsPath":"machine.slice:libpod:4f2a9c1e7b3d"}}"#;
        let m = parse_crio_config(podman).expect("parse");
        assert_eq!(m.runtime, "podman");
        assert!(m.annotations.is_empty() && m.labels.is_empty());
    }

    #[test]
    fn docker_container() {
        let m = parse_docker_config(DOCKER_JSON.as_bytes()).expect("parse");
        let v: Value = serde_json::from_str(DOCKER_JSON).expect("json");
        assert_eq!(m.runtime, "docker");
        assert_eq!(m.container_name, "web");
        assert_eq!(m.image_ref, "docker.io/library/nginx:1.25");
        assert_eq!(m.image_id, v["Image"].as_str().expect("Image"));
        assert!(m.image_id.starts_with("sha256:"));
        assert_eq!(m.image_digest, "");
        assert_eq!(m.pod_name, "");
        assert!(!m.sandbox);
        // Go escapes "<", ">" and "&" in JSON strings.
        assert!(DOCKER_JSON.contains("\\u003cdocker-maint@nginx.com\\u003e"));
        assert_eq!(
            m.labels.get("maintainer").map(String::as_str),
            Some("NGINX Docker Maintainers <docker-maint@nginx.com>")
        );
        assert_eq!(m.labels.len(), 4);
        assert!(m.annotations.is_empty());
        assert_eq!(
            data_scope(&m),
            ("internal".to_string(), vec!["/srv/uploads".to_string()])
        );
    }

    #[test]
    fn cri_dockerd_container() {
        let m = parse_docker_config(CRI_DOCKERD_JSON.as_bytes()).expect("parse");
        assert_eq!(m.runtime, "docker");
        assert_eq!(m.pod_name, "api-7b8c9d6f5d-q4w2r");
        assert_eq!(m.pod_namespace, "payments");
        assert_eq!(m.pod_uid, "a3e1f6b9-2c4d-4e8f-9a07-5b1c3d2e6f48");
        assert_eq!(m.container_name, "api");
        // The kubelet created it by image id: there is no reference to report.
        assert_eq!(m.image_ref, "");
        assert!(m.image_id.starts_with("sha256:") && m.image_id.len() == 71);
        assert!(!m.sandbox);
        let p = parse_docker(CRI_DOCKERD_JSON.as_bytes()).expect("parse");
        assert_eq!(p.sandbox_id.len(), 64);
        // cri-dockerd keeps pod annotations as "annotation.<key>" labels.
        let with_scope = CRI_DOCKERD_JSON.replace(
            "\"io.kubernetes.container.logpath\"",
            "\"annotation.patchgap.io/data-classification\":\"Confidential\",\"io.kubernetes.container.logpath\"",
        );
        let m = parse_docker_config(with_scope.as_bytes()).expect("parse");
        assert_eq!(m.annotations, map(&[(DATA_CLASSIFICATION, "Confidential")]));
        assert_eq!(data_scope(&m).0, "confidential");
    }

    #[test]
    fn docker_sandbox_and_null_labels() {
        let sandbox = br#"{"ID":"x","Config":{"Image":"registry.k8s.io/pause:3.9","Labels":{"io.kubernetes.docker.type":"podsandbox","io.kubernetes.container.name":"POD","io.kubernetes.pod.name":"api-7b8c9d6f5d-q4w2r","pod-template-hash":"7b8c9d6f5d"}},"Image":"sha256:e6f1816883972d4be47bd48879a08919b96afcd344132622e4d444987919323c","Name":"/k8s_POD_api-7b8c9d6f5d-q4w2r_payments_a3e1f6b9-2c4d-4e8f-9a07-5b1c3d2e6f48_0"}"#;
        let m = parse_docker_config(sandbox).expect("parse");
        assert!(m.sandbox);
        assert_eq!(m.container_name, "POD");
        let plain = br#"{"ID":"x","Config":{"Image":"nginx","Labels":null},"Image":"","Name":"/quirky_bohr"}"#;
        let m = parse_docker_config(plain).expect("parse");
        assert!(m.labels.is_empty());
        assert_eq!(m.container_name, "quirky_bohr");
        assert_eq!(m.image_ref, "docker.io/library/nginx:latest");
        assert_eq!(m.image_id, "");
    }

    #[test]
    fn bad_json_has_line_and_column() {
        let truncated = &CONTAINERD_JSON.as_bytes()[..CONTAINERD_JSON.len() / 2];
        match parse_containerd_config(truncated) {
            Err(MetaError::Json {
                line: 1,
                column,
                reason,
            }) => {
                assert_eq!(column, truncated.len());
                assert!(reason.contains("EOF"), "{reason}");
            }
            other => panic!("truncated: {other:?}"),
        }
        let bad =
            b"{\n  \"ociVersion\": \"1.1.0\",\n  \"annotations\": {\n    \"a\": \"b\",,\n  }\n}\n";
        let err = parse_crio_config(bad).expect_err("bad");
        assert_eq!(
            err,
            MetaError::Json {
                line: 4,
                column: 14,
                reason: "key must be a string".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "not valid JSON at line 4 column 14: key must be a string"
        );
        assert!(matches!(
            parse_docker_config(b""),
            Err(MetaError::Json {
                line: 1,
                column: 0,
                ..
            })
        ));
    }

    #[test]
    fn valid_json_of_the_wrong_shape_is_missing_a_field() {
        for bytes in [&b"[]"[..], b"{}", b"{\"ociVersion\":1}", b"null"] {
            assert_eq!(
                parse_containerd_config(bytes),
                Err(MetaError::Missing("ociVersion"))
            );
            assert_eq!(
                parse_crio_config(bytes),
                Err(MetaError::Missing("ociVersion"))
            );
        }
        assert_eq!(
            parse_docker_config(CONTAINERD_JSON.as_bytes()),
            Err(MetaError::Missing("Config"))
        );
        assert_eq!(
            parse_docker_config(b"{\"Config\":null}").map_err(|e| e.to_string()),
            Err("missing Config".to_string())
        );
    }

    #[test]
    fn image_strings() {
        let hex = "e6f1816883972d4be47bd48879a08919b96afcd344132622e4d444987919323c";
        let cases: &[(&str, &str, &str, &str)] = &[
            // (recorded, image_ref, image_id, image_digest)
            ("nginx", "docker.io/library/nginx:latest", "", ""),
            ("nginx:1.25", "docker.io/library/nginx:1.25", "", ""),
            ("bitnami/redis:7.2", "docker.io/bitnami/redis:7.2", "", ""),
            ("docker.io/nginx", "docker.io/library/nginx:latest", "", ""),
            (
                "index.docker.io/library/nginx:1",
                "docker.io/library/nginx:1",
                "",
                "",
            ),
            ("localhost/app", "localhost/app:latest", "", ""),
            ("localhost:5000/app:dev", "localhost:5000/app:dev", "", ""),
            (
                "registry.k8s.io/pause:3.9",
                "registry.k8s.io/pause:3.9",
                "",
                "",
            ),
            ("quay.io/acme/web:1.8.2", "quay.io/acme/web:1.8.2", "", ""),
            (hex, "", "sha256:", ""),
            ("sha256:", "", "sha256:", ""),
            ("9c7a54a9a43c", "", "", ""),
            ("Not A Reference", "Not A Reference", "", ""),
        ];
        for &(recorded, want_ref, want_id, want_digest) in cases {
            let mut m = RuntimeMeta::default();
            let recorded = if recorded == "sha256:" {
                format!("sha256:{hex}")
            } else {
                recorded.to_string()
            };
            set_image(&mut m, &recorded);
            let want_id = if want_id.is_empty() {
                String::new()
            } else {
                format!("sha256:{hex}")
            };
            assert_eq!(
                (
                    m.image_ref.as_str(),
                    m.image_id.as_str(),
                    m.image_digest.as_str()
                ),
                (want_ref, want_id.as_str(), want_digest),
                "{recorded}"
            );
        }
        let mut m = RuntimeMeta::default();
        set_image(&mut m, &format!("nginx@sha256:{hex}"));
        assert_eq!(m.image_ref, format!("docker.io/library/nginx@sha256:{hex}"));
        assert_eq!(m.image_digest, format!("sha256:{hex}"));
        let mut m = RuntimeMeta::default();
        set_image(&mut m, &format!("nginx:1.25@sha256:{hex}"));
        assert_eq!(
            m.image_ref,
            format!("docker.io/library/nginx:1.25@sha256:{hex}")
        );
        assert_eq!(m.image_digest, format!("sha256:{hex}"));
        // A short or odd digest is not a digest.
        let mut m = RuntimeMeta::default();
        set_image(&mut m, "nginx@sha256:abcd");
        assert_eq!(m.image_digest, "");
    }

    #[test]
    fn pod_log_dirs() {
        assert_eq!(
            parse_pod_log_dir("ml_trainer-7d9f8b6c5d-x2x4z_6f0d2c1e-4b7a-4e59-9c3d-2a8b5e7f1c04"),
            Some((
                "ml".into(),
                "trainer-7d9f8b6c5d-x2x4z".into(),
                "6f0d2c1e-4b7a-4e59-9c3d-2a8b5e7f1c04".into()
            ))
        );
        // A static pod's uid is the hash of its manifest.
        assert_eq!(
            parse_pod_log_dir("kube-system_etcd-node-1_0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
            Some((
                "kube-system".into(),
                "etcd-node-1".into(),
                "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into()
            ))
        );
        for bad in [
            "",
            "ml_trainer",
            "ml_trainer_6f0d2c1e-4b7a-4e59-9c3d-2a8b5e7f1c04_extra",
            "ML_trainer_6f0d2c1e-4b7a-4e59-9c3d-2a8b5e7f1c04",
            "ml__6f0d2c1e-4b7a-4e59-9c3d-2a8b5e7f1c04",
            "ml_trainer_not-a-uid",
            "my.ns_trainer_6f0d2c1e-4b7a-4e59-9c3d-2a8b5e7f1c04",
            ".gitkeep",
        ] {
            assert_eq!(parse_pod_log_dir(bad), None, "{bad}");
        }
    }

    fn owner(kind: &str, name: &str, source: OwnerSource) -> Option<Owner> {
        Some(Owner {
            kind: kind.into(),
            name: name.into(),
            source,
        })
    }

    #[test]
    fn owner_from_labels() {
        use OwnerSource::Label;
        let long = "a".repeat(50);
        let cut = format!("{long}-7d9f8b6q2x4zb"); // ("<50>-7d9f8b6c5d-")[..58] + "q2x4zb"[..5]
        let cut = &cut[..63];
        let very_long = format!("{}x2x4z", "b".repeat(58));
        let cases: Vec<(&str, BTreeMap<String, String>, Option<Owner>)> = vec![
            (
                "trainer-7d9f8b6c5d-x2x4z",
                map(&[("pod-template-hash", "7d9f8b6c5d"), ("app", "trainer")]),
                owner("Deployment", "trainer", Label),
            ),
            (
                "my-app-v2-5f6b7c8d9-abcde",
                map(&[("pod-template-hash", "5f6b7c8d9")]),
                owner("Deployment", "my-app-v2", Label),
            ),
            // generateName cut the hash: the Deployment is still known.
            (
                cut,
                map(&[("pod-template-hash", "7d9f8b6c5d")]),
                owner("Deployment", &long, Label),
            ),
            // Cut inside the Deployment's own name: not known.
            (
                &very_long,
                map(&[("pod-template-hash", "7d9f8b6c5d")]),
                None,
            ),
            // The label wins over the name, and a name that does not fit gives None.
            ("kafka-0", map(&[("pod-template-hash", "7d9f8b6c5d")]), None),
            (
                "db-2",
                map(&[
                    ("statefulset.kubernetes.io/pod-name", "db-2"),
                    ("controller-revision-hash", "db-5c7b9f8d6"),
                ]),
                owner("StatefulSet", "db", Label),
            ),
            (
                "kafka-broker-10",
                map(&[("apps.kubernetes.io/pod-index", "10")]),
                owner("StatefulSet", "kafka-broker", Label),
            ),
            // The pod-name label names the pod when the runtime did not.
            (
                "",
                map(&[("statefulset.kubernetes.io/pod-name", "zk-1")]),
                owner("StatefulSet", "zk", Label),
            ),
            (
                "node-exporter-x7k2p",
                map(&[
                    ("controller-revision-hash", "6d5f8c7b9"),
                    ("pod-template-generation", "3"),
                ]),
                owner("DaemonSet", "node-exporter", Label),
            ),
            (
                "migrate-schema-h2k9x",
                map(&[
                    ("batch.kubernetes.io/job-name", "migrate-schema"),
                    ("job-name", "migrate-schema"),
                ]),
                owner("Job", "migrate-schema", Label),
            ),
            (
                "nightly-backup-28585440-q7w2x",
                map(&[("job-name", "nightly-backup-28585440")]),
                owner("CronJob", "nightly-backup", Label),
            ),
            // Seven digits are not a CronJob's timestamp.
            (
                "report-1234567-q7w2x",
                map(&[("job-name", "report-1234567")]),
                owner("Job", "report-1234567", Label),
            ),
            // Unrelated labels: the name decides.
            (
                "kafka-0",
                map(&[("app", "kafka")]),
                owner("StatefulSet", "kafka", OwnerSource::Inferred),
            ),
        ];
        for (pod, labels, want) in cases {
            assert_eq!(infer_owner(pod, &labels), want, "{pod} {labels:?}");
        }
    }

    #[test]
    fn owner_from_names() {
        use OwnerSource::Inferred;
        let none = BTreeMap::new();
        let cases: &[(&str, Option<Owner>)] = &[
            (
                "trainer-7d9f8b6c5d-x2x4z",
                owner("Deployment", "trainer", Inferred),
            ),
            (
                "my-web-app-6c8f7b9d4c-h7k2p",
                owner("Deployment", "my-web-app", Inferred),
            ),
            ("web-bd5f7c-h7k2p", owner("Deployment", "web", Inferred)),
            ("kafka-0", owner("StatefulSet", "kafka", Inferred)),
            ("web-123", owner("StatefulSet", "web", Inferred)),
            (
                "nightly-backup-28585440-q7w2x",
                owner("CronJob", "nightly-backup", Inferred),
            ),
            // A DaemonSet's or a Job's pod: ambiguous.
            ("fluent-bit-x2x4z", None),
            // Five digits of the alphabet: an ordinal or a random suffix.
            ("web-24567", None),
            // Not of the alphabet ('a' in the hash, 'e' in the suffix), or the wrong lengths.
            ("trainer-7d9f8b6c5a-x2x4z", None),
            ("trainer-7d9f8b6c5d-x2x4e", None),
            ("trainer-7d9f-x2x4z", None),
            ("trainer-7d9f8b6c5d2-x2x4z", None),
            ("trainer-7d9f8b6c5d-x2x4", None),
            ("-7d9f8b6c5d-x2x4z", None),
            // Not pod names at all.
            ("/process_api", None),
            ("process_api-0", None),
            ("Trainer-7d9f8b6c5d-x2x4z", None),
            ("TRAINER-0", None),
            ("", None),
            ("nginx", None),
            ("web-01", None),
            ("web-", None),
            ("-0", None),
        ];
        for (pod, want) in cases {
            assert_eq!(&infer_owner(pod, &none), want, "{pod}");
        }
    }

    #[test]
    fn data_scope_rules() {
        let mut m = RuntimeMeta::default();
        assert_eq!(data_scope(&m), (String::new(), Vec::new()));
        m.labels = map(&[(DATA_CLASSIFICATION, "Public"), (WRITES_TO, "a,b")]);
        assert_eq!(
            data_scope(&m),
            ("public".to_string(), vec!["a".to_string(), "b".to_string()])
        );
        m.annotations = map(&[
            (DATA_CLASSIFICATION, "  PII\t"),
            (WRITES_TO, " , s3://x ,, pg "),
        ]);
        assert_eq!(
            data_scope(&m),
            (
                "pii".to_string(),
                vec!["s3://x".to_string(), "pg".to_string()]
            )
        );
        // Present as an annotation, even empty, it wins.
        m.annotations = map(&[(DATA_CLASSIFICATION, "  ")]);
        assert_eq!(
            data_scope(&m),
            (String::new(), vec!["a".to_string(), "b".to_string()])
        );
    }

    /// A runtime root in a temporary directory, with room for files outside it.
    struct Host {
        dir: TempDir,
    }

    impl Host {
        fn new() -> Host {
            let dir = TempDir::new().expect("temp dir");
            std::fs::create_dir(dir.path().join("root")).expect("mkdir root");
            Host { dir }
        }

        fn root(&self) -> std::path::PathBuf {
            self.dir.path().join("root")
        }

        fn write(&self, rel: &str, bytes: &[u8]) -> std::path::PathBuf {
            let path = self.root().join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, bytes).expect("write");
            path
        }

        fn link(&self, rel: &str, target: &str) {
            let path = self.root().join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            symlink(target, path).expect("symlink");
        }

        fn reader(&self) -> MetaReader {
            MetaReader::new(&self.root()).expect("open runtime root")
        }
    }

    fn containerd_path(namespace: &str, id: &str) -> String {
        format!("{CONTAINERD_TASKS}/{namespace}/{id}/config.json")
    }

    fn warn(f: impl FnOnce(&mut MetaWarnings)) -> MetaWarnings {
        let mut w = MetaWarnings::default();
        f(&mut w);
        w
    }

    #[test]
    fn reader_finds_containerd_in_any_namespace() {
        let host = Host::new();
        host.write(
            &containerd_path("k8s.io", CONTAINERD_ID),
            CONTAINERD_JSON.as_bytes(),
        );
        host.write(
            &containerd_path("default", CONTAINERD_SANDBOX_ID),
            CONTAINERD_SANDBOX_JSON.as_bytes(),
        );
        host.write(&format!("{CONTAINERD_TASKS}/buildkit/.keep"), b"");
        let mut r = host.reader();
        for hint in [
            None,
            Some("containerd"),
            Some("docker"),
            Some("something-else"),
        ] {
            let (m, w) = r.container(CONTAINERD_ID, hint);
            let m = m.expect("found");
            assert_eq!(m.container_name, "trainer", "{hint:?}");
            assert_eq!(w, MetaWarnings::default());
            let (m, _) = r.container(CONTAINERD_SANDBOX_ID, hint);
            assert!(m.expect("found").sandbox);
        }
        assert_eq!(r.container("ffff", None), (None, MetaWarnings::default()));
        assert_eq!(r.warnings(), MetaWarnings::default());
    }

    #[test]
    fn reader_finds_docker_and_prefers_it_to_the_moby_namespace() {
        let host = Host::new();
        host.write(
            &format!("{DOCKER_CONTAINERS}/{DOCKER_ID}/config.v2.json"),
            DOCKER_JSON.as_bytes(),
        );
        // Docker's containerd task for the same container, without CRI annotations.
        host.write(
            &containerd_path("moby", DOCKER_ID),
            br#"{"ociVersion":"1.1.0","process":{"args":["nginx","-g","daemon off;"],"cwd":"/"},"root":{"path":"/var/lib/docker/overlay2/x/merged"},"linux":{"cgroupsPath":"system.slice:docker:9371cf599d9c"}}"#,
        );
        let mut r = host.reader();
        for hint in [None, Some("docker"), Some("containerd")] {
            let m = r.container(DOCKER_ID, hint).0.expect("found");
            assert_eq!(m.runtime, "docker", "{hint:?}");
            assert_eq!(m.image_ref, "docker.io/library/nginx:1.25");
        }
        // A plain containerd container is still reported, with what little is known.
        let plain = "a".repeat(64);
        host.write(
            &containerd_path("default", &plain),
            br#"{"ociVersion":"1.1.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"}}"#,
        );
        let (m, w) = r.container(&plain, None);
        assert_eq!(m.expect("found").runtime, "containerd");
        assert_eq!(w, MetaWarnings::default());
    }

    /// Podman's files as Podman 4.3 wrote them for one container (see storage.rs's tests).
    fn podman_host() -> (Host, &'static str) {
        const ID: &str = "b9cdc87e57068b734cac5de981a5c0a5f416d56a60e4319d1e2f7367f7526efd";
        const IMAGE: &str = "3e56b8b0befefa485efe449d1641f64e5028506e83a7d5874077cf5216a65800";
        let host = Host::new();
        host.write(
            &format!("{PODMAN_CONTAINERS}/{ID}/userdata/config.json"),
            include_bytes!("testdata/podman-config.json"),
        );
        host.write(
            &format!("{PODMAN_CONTAINERS}/containers.json"),
            include_bytes!("testdata/podman-containers.json"),
        );
        host.write(
            "var/lib/containers/storage/overlay-images/images.json",
            include_bytes!("testdata/podman-images.json"),
        );
        host.write(
            &format!(
                "var/lib/containers/storage/overlay-images/{IMAGE}/{}",
                crate::workload::storage::big_data_file_name(&format!("sha256:{IMAGE}"))
            ),
            include_bytes!("testdata/podman-image-config.json"),
        );
        (host, ID)
    }

    /// Issue 20: a Podman container's config.json names neither it nor its image;
    /// containers/storage's lists do, and the image's config has its provenance.
    #[test]
    fn podman_name_image_digest_and_provenance_from_containers_storage() {
        let (host, id) = podman_host();
        let mut r = host.reader();
        r.begin_scan();
        let (m, w) = r.container(id, Some("podman"));
        assert_eq!(w, MetaWarnings::default());
        let m = m.expect("found");
        assert_eq!(m.runtime, "podman");
        assert_eq!(m.container_name, "pg-explore");
        assert_eq!(
            m.image_ref,
            "localhost/patchgap-test-debian:bookworm-hello-1"
        );
        assert_eq!(
            m.image_id,
            "sha256:3e56b8b0befefa485efe449d1641f64e5028506e83a7d5874077cf5216a65800"
        );
        assert_eq!(
            m.image_digest,
            "sha256:1f9252c1ec3b7aba187c3b49df2843e75bb10c2c7bb8f06a84e60ae44cd4b03c"
        );
        assert_eq!(
            m.provenance,
            Provenance {
                revision: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
                source: "https://example.org/patchgap/test-image".into(),
                created: "2026-12-01T00:00:00Z".into(),
            }
        );
        // The files are read once: later scans with nothing new read none.
        let read = r.files_read();
        assert_eq!(read, 4, "config.json, two lists, the image config");
        for _ in 0..3 {
            r.begin_scan();
            assert_eq!(r.container(id, Some("podman")).0, Some(m.clone()));
        }
        assert_eq!(r.files_read(), read);
        // A renamed container: the list changed, and is read again at the next scan.
        let renamed = std::fs::read_to_string(
            host.root()
                .join(format!("{PODMAN_CONTAINERS}/containers.json")),
        )
        .expect("read")
        .replace("\"pg-explore\"", "\"pg-renamed-explore\"");
        host.write(
            &format!("{PODMAN_CONTAINERS}/containers.json"),
            renamed.as_bytes(),
        );
        r.begin_scan();
        let m2 = r.container(id, Some("podman")).0.expect("found");
        assert_eq!(m2.container_name, "pg-renamed-explore");
        assert_eq!(r.files_read(), read + 1);
    }

    #[test]
    fn podman_lists_that_are_bad_or_escape_give_warnings_and_what_the_config_said() {
        let (host, id) = podman_host();
        host.write(
            &format!("{PODMAN_CONTAINERS}/containers.json"),
            b"[{\"id\":",
        );
        let mut r = host.reader();
        r.begin_scan();
        let (m, w) = r.container(id, Some("podman"));
        let m = m.expect("the config itself is fine");
        assert_eq!(m.runtime, "podman");
        assert_eq!(m.container_name, "");
        assert_eq!(m.image_digest, "");
        assert_eq!(w.bad_json, 1);
        // Not read again, nor counted again, within the same scan.
        let read = r.files_read();
        assert_eq!(r.container(id, Some("podman")).1, MetaWarnings::default());
        assert_eq!(r.files_read(), read);

        // images.json as a link out of the root is refused, never followed.
        let (host, id) = podman_host();
        let outside = host.dir.path().join("images.json");
        std::fs::write(&outside, include_bytes!("testdata/podman-images.json")).expect("write");
        std::fs::remove_file(
            host.root()
                .join("var/lib/containers/storage/overlay-images/images.json"),
        )
        .expect("rm");
        host.link(
            "var/lib/containers/storage/overlay-images/images.json",
            outside.to_str().expect("utf-8"),
        );
        let mut r = host.reader();
        r.begin_scan();
        let (m, w) = r.container(id, Some("podman"));
        let m = m.expect("found");
        assert_eq!(m.container_name, "pg-explore");
        assert_eq!(m.image_digest, "", "never read through the escaping link");
        assert_eq!(w.escapes_root, 1);
    }

    #[test]
    fn reader_merges_the_crio_sandbox() {
        let host = Host::new();
        host.write(
            &format!("{CRIO_CONTAINERS}/{CRIO_ID}/userdata/config.json"),
            CRIO_JSON.as_bytes(),
        );
        host.write(
            &format!("{CRIO_CONTAINERS}/{CRIO_SANDBOX_CTR}/userdata/config.json"),
            CRIO_SANDBOX_JSON.as_bytes(),
        );
        let mut r = host.reader();
        let (m, w) = r.container(CRIO_ID, Some("cri-o"));
        let m = m.expect("found");
        assert_eq!(w, MetaWarnings::default());
        assert_eq!(m.container_name, "web");
        assert_eq!(
            m.labels.get("pod-template-hash").map(String::as_str),
            Some("6c8f7b9d4c")
        );
        // The container's own value wins over the sandbox's "POD".
        assert_eq!(
            m.labels.get(CONTAINER_NAME).map(String::as_str),
            Some("web")
        );
        assert_eq!(data_scope(&m).0, "pii");
        assert_eq!(
            infer_owner(&m.pod_name, &m.labels),
            owner("Deployment", "web", OwnerSource::Label)
        );
        assert_eq!(r.files_read(), 2);
        // Without its sandbox, the container is still known.
        std::fs::remove_file(host.root().join(format!(
            "{CRIO_CONTAINERS}/{CRIO_SANDBOX_CTR}/userdata/config.json"
        )))
        .expect("rm");
        let (m, _) = r.container(CRIO_ID, None);
        let m = m.expect("found");
        assert!(!m.labels.contains_key("pod-template-hash"));
        assert_eq!(m.pod_name, "web-6c8f7b9d4c-h7k2p");
    }

    #[test]
    fn reader_finds_podman() {
        let host = Host::new();
        let id = "4f2a9c1e7b3d".repeat(5) + "abcd";
        // Older Podman without io.container.manager: the directory says which runtime it is.
        host.write(
            &format!("{PODMAN_CONTAINERS}/{id}/userdata/config.json"),
            br#"{"ociVersion":"1.0.2-dev","process":{"args":["/bin/sh"],"cwd":"/"},"root":{"path":"/var/lib/containers/storage/overlay/x/merged"},"annotations":{"org.opencontainers.image.stopSignal":"15"}}"#,
        );
        let mut r = host.reader();
        assert_eq!(
            r.container(&id, Some("podman")).0.expect("found").runtime,
            "podman"
        );
        assert_eq!(r.container(&id, None).0.expect("found").runtime, "podman");
    }

    #[test]
    fn reader_warns_about_bad_json_once() {
        let host = Host::new();
        let path = containerd_path("k8s.io", CONTAINERD_ID);
        host.write(&path, &CONTAINERD_JSON.as_bytes()[..1000]);
        let mut r = host.reader();
        let want = warn(|w| w.bad_json = 1);
        assert_eq!(r.container(CONTAINERD_ID, None), (None, want.clone()));
        assert_eq!(
            r.container(CONTAINERD_ID, Some("containerd")),
            (None, want.clone())
        );
        assert_eq!(r.warnings(), want);
        assert_eq!(r.files_read(), 1);
        // The runtime finishes writing it: read again, and good.
        std::fs::write(host.root().join(&path), CONTAINERD_JSON).expect("write");
        let (m, w) = r.container(CONTAINERD_ID, None);
        assert_eq!(m.expect("found").pod_namespace, "ml");
        assert_eq!(w, MetaWarnings::default());
        assert_eq!(r.warnings(), want);
    }

    #[test]
    fn reader_refuses_huge_files() {
        let host = Host::new();
        let path = host.write(
            &format!("{DOCKER_CONTAINERS}/{DOCKER_ID}/config.v2.json"),
            b"",
        );
        std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(5 << 20)
            .expect("grow to 5 MiB");
        let mut r = host.reader();
        let want = warn(|w| w.too_large = 1);
        assert_eq!(r.container(DOCKER_ID, Some("docker")), (None, want.clone()));
        assert_eq!(r.container(DOCKER_ID, None), (None, want.clone()));
        assert_eq!(r.warnings(), want);
    }

    #[test]
    fn reader_never_follows_a_link_out_of_the_root() {
        let host = Host::new();
        // A valid config outside the runtime root: reading it would give Some.
        let outside = host.dir.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("config.json"), CONTAINERD_JSON).expect("write");
        std::fs::write(outside.join("config.v2.json"), DOCKER_JSON).expect("write");
        let outside_abs = outside
            .join("config.json")
            .to_str()
            .expect("utf-8")
            .to_string();

        let ids = [
            "a1".repeat(32),
            "b2".repeat(32),
            "c3".repeat(32),
            "d4".repeat(32),
        ];
        host.link(&containerd_path("k8s.io", &ids[0]), "/etc/passwd");
        host.link(
            &containerd_path("k8s.io", &ids[1]),
            "../../../../../../etc/hostname",
        );
        host.link(&containerd_path("k8s.io", &ids[2]), &outside_abs);
        // From <id>/ six levels up is above the root; "outside" is next to it.
        host.link(
            &format!("{DOCKER_CONTAINERS}/{}/config.v2.json", ids[3]),
            "../../../../../../outside/config.v2.json",
        );
        let mut r = host.reader();
        let escaped = warn(|w| w.escapes_root = 1);
        for id in &ids {
            assert_eq!(r.container(id, None), (None, escaped.clone()), "{id}");
            // Asked again, the same link is not counted again.
            assert_eq!(
                r.container(id, Some("docker")),
                (None, escaped.clone()),
                "{id}"
            );
        }
        assert_eq!(r.warnings(), warn(|w| w.escapes_root = 4));
        assert_eq!(r.files_read(), 0);

        // A relative link that climbs but stays inside the root works.
        let shared = host.write("srv/shared/config.json", CONTAINERD_JSON.as_bytes());
        assert!(shared.exists());
        let inside = "e5".repeat(32);
        host.link(
            &containerd_path("k8s.io", &inside),
            "../../../../../srv/shared/config.json",
        );
        let (m, w) = r.container(&inside, None);
        assert_eq!(m.expect("found").container_name, "trainer");
        assert_eq!(w, MetaWarnings::default());
        // One that lands inside on nothing is simply not there.
        let nothing = "f6".repeat(32);
        host.link(
            &containerd_path("k8s.io", &nothing),
            "../../../../etc/hostname",
        );
        assert_eq!(r.container(&nothing, None), (None, MetaWarnings::default()));

        // A whole runtime directory that is an absolute link escapes too.
        let moved = host.dir.path().join("moved");
        std::fs::create_dir_all(moved.join(format!("{CRIO_ID}/userdata"))).expect("mkdir");
        std::fs::write(
            moved.join(format!("{CRIO_ID}/userdata/config.json")),
            CRIO_JSON,
        )
        .expect("write");
        host.link(CRIO_CONTAINERS, moved.to_str().expect("utf-8"));
        assert_eq!(r.container(CRIO_ID, Some("cri-o")), (None, escaped.clone()));
        // While that directory escapes, a container no runtime has reports it: the lookup could
        // not tell whether CRI-O has it.
        assert_eq!(r.container(&nothing, None), (None, escaped.clone()));
        // One runtime's escaping directory does not taint a container another runtime has.
        let (m, w) = r.container(&inside, None);
        assert!(m.is_some());
        assert_eq!(w, MetaWarnings::default());
        assert_eq!(r.warnings(), warn(|w| w.escapes_root = 6));
    }

    #[test]
    fn reader_caches_unchanged_files() {
        let host = Host::new();
        let path = host.write(
            &containerd_path("k8s.io", CONTAINERD_ID),
            CONTAINERD_JSON.as_bytes(),
        );
        let mut r = host.reader();
        r.begin_scan();
        let first = r.container(CONTAINERD_ID, Some("containerd"));
        assert_eq!(r.files_read(), 1);
        let second = r.container(CONTAINERD_ID, Some("containerd"));
        assert_eq!(first, second);
        assert_eq!(r.files_read(), 1, "an unchanged file is not read again");
        // Replaced (a new inode, as an atomic rename makes): read again.
        let next = path.with_extension("tmp");
        std::fs::write(
            &next,
            CONTAINERD_JSON.replace("\"trainer\"", "\"trainer-v2\""),
        )
        .expect("write");
        std::fs::rename(&next, &path).expect("rename");
        let third = r.container(CONTAINERD_ID, Some("containerd"));
        assert_eq!(r.files_read(), 2);
        assert_eq!(third.0.expect("found").container_name, "trainer-v2");
        // Entries unused for a whole scan are dropped.
        r.begin_scan();
        assert_eq!(r.cache.len(), 1);
        r.begin_scan();
        assert!(r.cache.is_empty());
        r.container(CONTAINERD_ID, None);
        assert_eq!(r.files_read(), 3);
        // A removed container is forgotten.
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(
            r.container(CONTAINERD_ID, None),
            (None, MetaWarnings::default())
        );
        assert!(r.cache.is_empty());
    }

    #[test]
    fn reader_refuses_odd_ids() {
        let host = Host::new();
        host.write(
            "var/lib/docker/containers/config.v2.json",
            DOCKER_JSON.as_bytes(),
        );
        host.write(
            &format!("{DOCKER_CONTAINERS}/x/config.v2.json"),
            DOCKER_JSON.as_bytes(),
        );
        let mut r = host.reader();
        for id in ["", ".", "..", "x/../x", "../containers/x", "x\0"] {
            assert_eq!(
                r.container(id, None),
                (None, MetaWarnings::default()),
                "{id:?}"
            );
        }
        assert_eq!(r.files_read(), 0);
        assert!(r.container("x", None).0.is_some());
    }

    #[test]
    fn reader_finds_pods_by_uid() {
        let host = Host::new();
        let uid = "6f0d2c1e-4b7a-4e59-9c3d-2a8b5e7f1c04";
        std::fs::create_dir_all(host.root().join(format!(
            "{POD_LOGS}/ml_trainer-7d9f8b6c5d-x2x4z_{uid}/trainer"
        )))
        .expect("mkdir");
        std::fs::create_dir_all(host.root().join(format!(
            "{POD_LOGS}/kube-system_etcd-node-1_0f1e2d3c4b5a69788796a5b4c3d2e1f0"
        )))
        .expect("mkdir");
        host.write(&format!("{POD_LOGS}/not_a_pod"), b"");
        let mut r = host.reader();
        r.begin_scan();
        let want = Some(("ml".to_string(), "trainer-7d9f8b6c5d-x2x4z".to_string()));
        assert_eq!(r.pod_by_uid(uid), want);
        assert_eq!(r.pod_by_uid(&uid.replace('-', "_")), want);
        assert_eq!(
            r.pod_by_uid("0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
            Some(("kube-system".to_string(), "etcd-node-1".to_string()))
        );
        // Listed once per scan: a pod that appears meanwhile waits for the next one.
        let late = "11111111-2222-4333-8444-555555555555";
        std::fs::create_dir(host.root().join(format!("{POD_LOGS}/shop_late-0_{late}")))
            .expect("mkdir");
        assert_eq!(r.pod_by_uid(late), None);
        r.begin_scan();
        assert_eq!(
            r.pod_by_uid(late),
            Some(("shop".to_string(), "late-0".to_string()))
        );
        assert_eq!(r.warnings(), MetaWarnings::default());
        // No /var/log/pods at all is no warning; one that escapes is.
        let empty = Host::new();
        let mut r = empty.reader();
        assert_eq!(r.pod_by_uid(uid), None);
        assert_eq!(r.warnings(), MetaWarnings::default());
        let escaping = Host::new();
        escaping.link("var/log/pods", "/var/log/pods");
        let mut r = escaping.reader();
        assert_eq!(r.pod_by_uid(uid), None);
        assert_eq!(r.warnings(), warn(|w| w.escapes_root = 1));
    }

    #[test]
    fn serializes_for_the_wire() {
        let m = parse_containerd_config(CONTAINERD_JSON.as_bytes()).expect("parse");
        let v = serde_json::to_value(&m).expect("serialize");
        assert_eq!(v["pod_name"], "trainer-7d9f8b6c5d-x2x4z");
        let o = owner("Deployment", "web", OwnerSource::Inferred);
        assert_eq!(
            serde_json::to_value(o).expect("serialize")["source"],
            "inferred"
        );
    }
}
