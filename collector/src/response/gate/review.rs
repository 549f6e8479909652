//! `admission.k8s.io/v1` AdmissionReview, as kube-apiserver sends it to a
//! validating webhook: only the fields the gate reads, so unknown ones
//! (and the whole rest of a pod spec) are skipped, and the answer it
//! expects back (the same `uid`, `allowed`, `status`, `warnings`).
//!
//! Parsing takes bytes and does no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BREAK_GLASS, Image, MAX_TICKET, Request, Verdict};

/// The largest AdmissionReview read. kube-apiserver caps a request body
/// at 3 MiB; the review wraps the object (and the old one, on update).
pub const MAX_REVIEW_BYTES: usize = 7 << 20;

/// Containers judged per object, at most: a real pod has a handful.
pub const MAX_CONTAINERS: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("the AdmissionReview is {0} bytes; at most {MAX_REVIEW_BYTES} are read")]
    TooLarge(usize),
    #[error("not an AdmissionReview: {0}")]
    Json(String),
    #[error("apiVersion {0:?} kind {1:?}: only admission.k8s.io/v1 AdmissionReview is served")]
    Version(String, String),
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("the AdmissionReview's request has no uid")]
    NoUid,
    #[error("{kind} has more than {MAX_CONTAINERS} containers")]
    TooManyContainers { kind: String },
    #[error(
        "the break-glass annotation {BREAK_GLASS} must hold a ticket id of 1 to {MAX_TICKET} printable characters"
    )]
    BadTicket,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReview {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<RawRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    kind: GroupVersionKind,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    user_info: UserInfo,
    #[serde(default)]
    object: Option<Object>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

#[derive(Debug, Default, Deserialize)]
struct UserInfo {
    #[serde(default)]
    username: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Default, Deserialize)]
struct OwnerReference {
    #[serde(default)]
    controller: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct Object {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: Option<Spec>,
}

/// A pod spec, a workload's spec (`template`) or a CronJob's
/// (`jobTemplate.spec.template`): one shape with every way down, so each
/// kind is read by the same walk.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    init_containers: Vec<Container>,
    #[serde(default)]
    ephemeral_containers: Vec<Container>,
    #[serde(default)]
    template: Option<Box<Object>>,
    #[serde(default)]
    job_template: Option<Box<Object>>,
}

#[derive(Debug, Default, Deserialize)]
struct Container {
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: String,
}

/// An admission the gate judges, or one it lets through unjudged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub uid: String,
    pub dry_run: bool,
    pub user: String,
    /// Err: not something the gate judges (a DELETE, another kind); it
    /// is allowed, and this says why.
    pub request: Result<Request, String>,
}

/// The kinds whose objects carry a pod spec, and the API groups they
/// live in.
const KINDS: [(&str, &str); 7] = [
    ("", "Pod"),
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
];

/// Reads an AdmissionReview.
pub fn parse(bytes: &[u8]) -> Result<Review, ReviewError> {
    if bytes.len() > MAX_REVIEW_BYTES {
        return Err(ReviewError::TooLarge(bytes.len()));
    }
    let raw: RawReview =
        serde_json::from_slice(bytes).map_err(|e| ReviewError::Json(e.to_string()))?;
    if raw.api_version != "admission.k8s.io/v1" || raw.kind != "AdmissionReview" {
        return Err(ReviewError::Version(raw.api_version, raw.kind));
    }
    let r = raw.request.ok_or(ReviewError::NoRequest)?;
    if r.uid.is_empty() {
        return Err(ReviewError::NoUid);
    }
    let mut review = Review {
        uid: r.uid,
        dry_run: r.dry_run.unwrap_or(false),
        user: r.user_info.username,
        request: Err(String::new()),
    };
    let kind = r.kind.kind;
    if !KINDS.contains(&(r.kind.group.as_str(), kind.as_str())) {
        review.request = Err(format!("{}/{kind} carries no pod spec", r.kind.group));
        return Ok(review);
    }
    if !matches!(r.operation.as_str(), "CREATE" | "UPDATE") {
        review.request = Err(format!("{} is not a deploy", r.operation));
        return Ok(review);
    }
    let Some(object) = r.object else {
        review.request = Err(format!("{kind} without an object"));
        return Ok(review);
    };
    let namespace = r.namespace.or(object.metadata.namespace.clone());
    let name = r
        .name
        .or(object.metadata.name.clone())
        .or(object.metadata.generate_name.clone())
        .unwrap_or_default();
    let mut images = Vec::new();
    let mut annotations = object.metadata.annotations.clone();
    collect(&object, &mut images, &mut annotations, 0);
    if images.len() > MAX_CONTAINERS {
        return Err(ReviewError::TooManyContainers { kind });
    }
    let break_glass = match annotations.get(BREAK_GLASS) {
        Some(t) => {
            let t = t.trim();
            if t.is_empty() || t.chars().count() > MAX_TICKET || t.chars().any(|c| c.is_control()) {
                return Err(ReviewError::BadTicket);
            }
            Some(t.to_string())
        }
        None => None,
    };
    review.request = Ok(Request {
        object: match &namespace {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        },
        namespace,
        images,
        break_glass,
        controller_owned: object
            .metadata
            .owner_references
            .iter()
            .any(|o| o.controller == Some(true)),
    });
    Ok(review)
}

/// Every container's image under `o`, and the annotations of the pod
/// templates on the way (a break-glass annotation may sit on either).
fn collect(
    o: &Object,
    images: &mut Vec<Image>,
    annotations: &mut BTreeMap<String, String>,
    depth: usize,
) {
    // A CronJob is three levels deep; anything deeper is not Kubernetes.
    if depth > 3 {
        return;
    }
    let Some(spec) = &o.spec else { return };
    for (prefix, list) in [
        ("", &spec.containers),
        ("init:", &spec.init_containers),
        ("ephemeral:", &spec.ephemeral_containers),
    ] {
        for c in list {
            images.push(Image::from_reference(
                &format!("{prefix}{}", c.name),
                &c.image,
            ));
        }
    }
    for inner in [&spec.template, &spec.job_template].into_iter().flatten() {
        for (k, v) in &inner.metadata.annotations {
            annotations.entry(k.clone()).or_insert_with(|| v.clone());
        }
        collect(inner, images, annotations, depth + 1);
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Debug, Serialize)]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct StatusOut {
    code: u16,
    reason: &'static str,
    message: String,
}

/// kube-apiserver may shorten long warnings before kubectl prints them;
/// each is cut here at this many bytes, so a long chain cannot crowd out
/// the others.
const MAX_WARNING: usize = 512;

/// The AdmissionReview answer for `uid`.
pub fn respond(uid: &str, verdict: &Verdict) -> Vec<u8> {
    let mut warnings: Vec<String> = verdict.warnings.iter().map(|r| r.message.clone()).collect();
    if let Some(ticket) = &verdict.break_glass {
        for r in &verdict.overridden {
            warnings.push(format!("break-glass {ticket} (audited): {}", r.message));
        }
    }
    for w in &mut warnings {
        if w.len() > MAX_WARNING {
            let mut end = MAX_WARNING;
            while !w.is_char_boundary(end) {
                end -= 1;
            }
            w.truncate(end);
            w.push('…');
        }
    }
    let out = ReviewOut {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: ResponseOut {
            uid,
            allowed: verdict.allowed,
            status: (!verdict.allowed).then(|| StatusOut {
                code: 403,
                reason: "Forbidden",
                message: format!("patchgap deploy gate: {}", verdict.message()),
            }),
            warnings,
        },
    };
    serde_json::to_vec(&out).expect("admission responses serialize")
}
