//! The deploy gate: the executor of `freeze_deployments` and
//! `block_new_artifacts_with_package`. It answers one question, for a
//! Kubernetes admission (`review`) and for CI (`patchgap gate check`)
//! alike: may these images be deployed into this namespace now?
//!
//! An image is stopped when an incident whose `block_new_artifacts_with_package`
//! action is in force covers its digest: the digest's SBOM declares a
//! package under the incident's advisory (or in its package range), or the
//! incident's scope saw the digest running. Everything is stopped in a
//! namespace a `freeze_deployments` action in force froze (the namespaces
//! of the incident's exposed workloads). Each action's `admission` says
//! whether "stopped" is a denial or a warning; a `shadow` action only
//! warns. A break-glass annotation lets a denied deploy through; the
//! caller audits it and notes it on each incident it overrode.
//!
//! The gate is these actions' executor only where the collector serves
//! admission (`--http-listen`; the plan says so). `execute` records on
//! each incident what it enforces (`applied` from the request, `verified`
//! by [`decide`] on the incident's digests and namespaces, the revert
//! seen the same way), and `tally` counts each admission per action,
//! shadow-mode would-be denials included.
//!
//! **Invariant:** [`decide`] is a pure function of the request, the facts
//! (`facts::load`, read from the store only: never a registry, never the
//! network) and the policy's gate settings; it has no side effects, so a
//! `dryRun` admission and `gate check` get exactly the answer a real one
//! does. Side effects (the break-glass audit and incident note) happen in
//! `facts::record_break_glass`, after the decision, outside any store
//! transaction but their own appends; the gate's record of its own
//! actions (`execute`) comes from `decide` on the store's facts, never
//! from an assumption.

pub mod execute;
pub mod facts;
pub mod review;
pub mod tally;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{ActionKind, Admission, GateSettings, Mode, incident::display_id};
use crate::{fleet::scope::matches as glob, store::DeclaredPackage};

/// The annotation that lets a denied deploy through, with a ticket id as
/// its value. Always audited and noted on the incidents it overrode.
pub const BREAK_GLASS: &str = "patchgap.io/break-glass";

/// The longest break-glass ticket id kept (longer ones are refused).
pub const MAX_TICKET: usize = 128;

/// One image of a request, as the workload names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// The container's name (`app`, `init:migrate`), or `image` for CI.
    pub container: String,
    /// The reference as written (`registry/app@sha256:...`, `nginx:1.25`).
    pub reference: String,
    /// `sha256:` and 64 hex digits, when the reference pins one.
    pub digest: Option<String>,
}

impl Image {
    /// An image reference as a pod spec writes it; the digest is taken
    /// from `@sha256:...` (or a bare `sha256:...`, as CI passes it).
    pub fn from_reference(container: &str, reference: &str) -> Image {
        let pinned = match reference.rsplit_once('@') {
            Some((_, d)) => Some(d),
            None if reference.starts_with("sha256:") => Some(reference),
            None => None,
        };
        Image {
            container: container.to_string(),
            reference: reference.to_string(),
            digest: pinned.and_then(|d| crate::sbom::records::image_digest(d).ok()),
        }
    }
}

/// What the gate judges: images going into a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The Kubernetes namespace; None for CI (no freeze applies).
    pub namespace: Option<String>,
    /// What is deployed, for messages: `Deployment payments/ledger`.
    pub object: String,
    pub images: Vec<Image>,
    /// The break-glass annotation's ticket id.
    pub break_glass: Option<String>,
    /// The object is a pod a controller made (an owner reference with
    /// `controller: true`): a freeze leaves it alone, so frozen workloads
    /// can still heal; a blocked image is stopped all the same.
    pub controller_owned: bool,
}

/// One open incident's gate actions in force, with what the gate needs
/// to know of its scope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Blocker {
    pub incident: i64,
    /// `block_new_artifacts_with_package` in force: how it answers, and
    /// whether only in shadow.
    pub block: Option<(Admission, Mode)>,
    /// `freeze_deployments` in force.
    pub freeze: Option<(Admission, Mode)>,
    /// The advisories the incident is about (its source's, and those its
    /// scope's findings name).
    pub advisories: BTreeSet<String>,
    /// The packages its scope found (purls), for incidents opened from a
    /// package range.
    pub packages: BTreeSet<String>,
    /// Digests its exposed workloads run, with the (advisory, purl)
    /// findings the scope has.
    pub image_digests: BTreeSet<String>,
    pub findings: Vec<(String, String)>,
    /// The frozen scope: the namespaces of its exposed workloads.
    pub namespaces: BTreeSet<String>,
}

/// What the store says about the request: the incidents whose gate
/// actions are in force, and the SBOM packages of each digest asked about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub blockers: Vec<std::sync::Arc<Blocker>>,
    pub sboms: BTreeMap<String, Vec<DeclaredPackage>>,
}

/// Why the gate stops (or would stop) an image or a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// `INC-7`; empty for a tag-only image.
    pub incident: String,
    /// The action that stops it (`block_new_artifacts_with_package`,
    /// `freeze_deployments`), or `tag_without_digest`.
    pub action: String,
    pub container: String,
    pub image: String,
    pub advisory: String,
    /// The package as a purl (or name@version).
    pub package: String,
    /// From the image's root to the package, `name@version` each.
    pub chain: Vec<String>,
    /// How the gate knows: `sbom`, `runtime`, `freeze` or `tag`.
    pub via: String,
    pub message: String,
    /// Only a shadow-mode action stops it: a warning that would have been
    /// a denial (counted per action, `tally`).
    #[serde(skip)]
    pub shadow: bool,
}

/// The gate's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    /// What stops the deploy (empty when allowed).
    pub denied: Vec<Reason>,
    /// What would have stopped it but only warns (`admission = "warn"`,
    /// shadow mode, a tag without a digest).
    pub warnings: Vec<Reason>,
    /// Denials a break-glass ticket overrode.
    pub overridden: Vec<Reason>,
    /// The break-glass ticket, when it overrode something.
    pub break_glass: Option<String>,
    /// Why the gate did not judge at all (an excluded namespace).
    pub skipped: Option<String>,
}

impl Verdict {
    /// The incidents a break-glass ticket overrode, each once.
    pub fn overridden_incidents(&self) -> BTreeSet<String> {
        self.overridden
            .iter()
            .filter(|r| !r.incident.is_empty())
            .map(|r| r.incident.clone())
            .collect()
    }

    /// One line per reason, for an admission's `status.message`.
    pub fn message(&self) -> String {
        let mut lines: Vec<&str> = self.denied.iter().map(|r| r.message.as_str()).collect();
        lines.dedup();
        lines.join("; ")
    }
}

/// The decision. Pure: the same request and facts always get the same
/// verdict.
pub fn decide(req: &Request, facts: &Facts, settings: &GateSettings) -> Verdict {
    if let Some(ns) = &req.namespace
        && settings.exclude_namespaces.iter().any(|p| glob(p, ns))
    {
        return Verdict {
            allowed: true,
            skipped: Some(format!(
                "namespace {ns} is excluded from the deploy gate (gate.exclude_namespaces)"
            )),
            ..Verdict::default()
        };
    }
    let mut stops: Vec<(Admission, Mode, Reason)> = Vec::new();
    for b in &facts.blockers {
        let id = display_id(b.incident);
        if let (Some((admission, mode)), Some(ns)) = (b.freeze, &req.namespace)
            && b.namespaces.contains(ns)
            && !req.controller_owned
        {
            stops.push((
                admission,
                mode,
                Reason {
                    incident: id.clone(),
                    action: ActionKind::FreezeDeployments.to_string(),
                    via: "freeze".into(),
                    message: format!(
                        "{} into namespace {ns}: deployments are frozen there by {id} ({})",
                        req.object,
                        advisories_named(b)
                    ),
                    ..empty_reason()
                },
            ));
        }
        let Some((admission, mode)) = b.block else {
            continue;
        };
        for image in &req.images {
            let Some(digest) = &image.digest else {
                continue;
            };
            for mut r in covered(b, digest, facts.sboms.get(digest)) {
                r.incident = id.clone();
                r.container = image.container.clone();
                r.image = image.reference.clone();
                r.message = image_message(&r, &id);
                stops.push((admission, mode, r));
            }
        }
    }
    // A tag hides its digest, and the gate never asks a registry: said
    // only while some incident blocks images, answered per the policy.
    if facts.blockers.iter().any(|b| b.block.is_some()) {
        for image in req.images.iter().filter(|i| i.digest.is_none()) {
            stops.push((
                settings.tag_without_digest,
                Mode::Enforce,
                Reason {
                    action: "tag_without_digest".into(),
                    container: image.container.clone(),
                    image: image.reference.clone(),
                    via: "tag".into(),
                    message: format!(
                        "container {} image {} names no digest: while an incident blocks images the gate judges digests only (it never asks a registry); pin the image as name@sha256:...",
                        image.container, image.reference
                    ),
                    ..empty_reason()
                },
            ));
        }
    }
    let mut v = Verdict {
        allowed: true,
        ..Verdict::default()
    };
    for (admission, mode, mut r) in stops {
        match (admission, mode) {
            (Admission::Deny, Mode::Enforce) => v.denied.push(r),
            (_, Mode::Shadow) => {
                r.message = format!("shadow (would deny): {}", r.message);
                r.shadow = true;
                v.warnings.push(r);
            }
            _ => v.warnings.push(r),
        }
    }
    if !v.denied.is_empty() {
        match &req.break_glass {
            Some(ticket) => {
                v.break_glass = Some(ticket.clone());
                v.overridden = std::mem::take(&mut v.denied);
            }
            None => v.allowed = false,
        }
    }
    v
}

fn empty_reason() -> Reason {
    Reason {
        incident: String::new(),
        action: ActionKind::BlockNewArtifactsWithPackage.to_string(),
        container: String::new(),
        image: String::new(),
        advisory: String::new(),
        package: String::new(),
        chain: Vec::new(),
        via: String::new(),
        message: String::new(),
        shadow: false,
    }
}

/// Why blocker `b` covers `digest`: each SBOM package under one of its
/// advisories (or among its packages), else the runtime scope's findings
/// when its workloads were seen running the digest.
fn covered(b: &Blocker, digest: &str, sbom: Option<&Vec<DeclaredPackage>>) -> Vec<Reason> {
    let mut out = Vec::new();
    for p in sbom.into_iter().flatten() {
        let purl = p.package.purl.clone();
        let named = if purl.is_empty() {
            format!("{}@{}", p.package.name, p.package.version)
        } else {
            purl
        };
        let advisory = p
            .advisories
            .iter()
            .find(|a| b.advisories.contains(*a))
            .cloned();
        let by_package = b.packages.contains(&named);
        if advisory.is_none() && !by_package {
            continue;
        }
        out.push(Reason {
            action: ActionKind::BlockNewArtifactsWithPackage.to_string(),
            advisory: advisory.unwrap_or_default(),
            package: named,
            chain: p.pulled_in_by.clone(),
            via: "sbom".into(),
            ..empty_reason()
        });
    }
    if out.is_empty() && b.image_digests.contains(digest) {
        let (advisory, package) = b.findings.first().cloned().unwrap_or_default();
        out.push(Reason {
            action: ActionKind::BlockNewArtifactsWithPackage.to_string(),
            advisory,
            package,
            via: "runtime".into(),
            ..empty_reason()
        });
    }
    out
}

fn image_message(r: &Reason, id: &str) -> String {
    let advisory = match r.advisory.as_str() {
        "" => String::new(),
        a => format!(" ({a})"),
    };
    let how = match (r.via.as_str(), r.chain.is_empty()) {
        ("sbom", false) => format!(", pulled in by {}", r.chain.join(" -> ")),
        ("sbom", true) => ", declared by the image's SBOM".to_string(),
        _ => ", seen running in the incident's scope".to_string(),
    };
    format!(
        "container {} image {} carries {}{advisory}{how}: blocked by {id} (block_new_artifacts_with_package)",
        r.container, r.image, r.package
    )
}

fn advisories_named(b: &Blocker) -> String {
    match b.advisories.iter().next() {
        Some(a) if b.advisories.len() > 1 => format!("{a} and {} more", b.advisories.len() - 1),
        Some(a) => a.clone(),
        None => b
            .packages
            .iter()
            .next()
            .cloned()
            .unwrap_or_else(|| "its scope".into()),
    }
}
