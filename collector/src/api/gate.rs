//! GateCheck: the deploy gate's decision for one image (`patchgap gate
//! check`), the same `response::gate::decide` the admission webhook asks.

use patchgap_proto::v1;
use tonic::Status;

use super::{QueryService, incidents, invalid};
use crate::response::gate::{self, Image, Request, facts};

/// The longest image reference read (Kubernetes allows no longer name).
const MAX_IMAGE: usize = 1024;

/// A GateCheckRequest, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GateCheck {
    pub request: Request,
    /// The packages of the SBOM document given with it (not stored).
    pub document: Option<Vec<crate::store::DeclaredPackage>>,
}

impl TryFrom<v1::GateCheckRequest> for GateCheck {
    type Error = String;

    fn try_from(r: v1::GateCheckRequest) -> Result<Self, String> {
        let image = r.image.trim();
        if image.is_empty() {
            return Err("give the image: --image sha256:DIGEST (or NAME@sha256:DIGEST)".into());
        }
        if image.len() > MAX_IMAGE || image.chars().any(char::is_control) {
            return Err(format!(
                "the image reference must be at most {MAX_IMAGE} printable characters"
            ));
        }
        let image = Image::from_reference("image", image);
        if image.reference.contains('@') && image.digest.is_none() {
            return Err(format!(
                "{:?} pins no sha256 digest: give NAME@sha256: and 64 hex digits",
                image.reference
            ));
        }
        let document = match r.sbom.is_empty() {
            true => None,
            false => {
                let name = match r.sbom_name.trim() {
                    "" => "sbom",
                    n => n,
                };
                if r.sbom.len() > crate::sbom::MAX_INPUT_BYTES {
                    return Err(format!(
                        "{name}: {} bytes is more than the {} accepted",
                        r.sbom.len(),
                        crate::sbom::MAX_INPUT_BYTES
                    ));
                }
                let parsed = crate::sbom::Sbom::parse(&r.sbom, name).map_err(|e| e.to_string())?;
                let digest = image.digest.clone().unwrap_or_default();
                Some(crate::sbom::records::record(&parsed, &digest, name, &r.sbom, 0).packages)
            }
        };
        let namespace = r.namespace.trim();
        Ok(GateCheck {
            document,
            request: Request {
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                object: format!("image {}", image.reference),
                images: vec![image],
                break_glass: None,
                controller_owned: false,
            },
        })
    }
}

pub(super) async fn check(
    q: &QueryService,
    req: v1::GateCheckRequest,
) -> Result<v1::GateCheckResponse, Status> {
    let check = GateCheck::try_from(req).map_err(invalid)?;
    let policy = q.policy().state();
    let cache = q.gate.clone();
    let verdict = q
        .domain(move |ingest| {
            let req = &check.request;
            let digests: Vec<&str> = req
                .images
                .iter()
                .filter_map(|i| i.digest.as_deref())
                .collect();
            let store = ingest.store().as_ref();
            let mut facts = cache
                .load(store, &policy.current, &digests)
                .map_err(incidents::status)?;
            // A document given with the request counts with the stored
            // SBOM; it is judged here and never stored.
            if let (Some(packages), Some(digest)) = (check.document, digests.first()) {
                let judged = facts::judge_document(store, &facts.blockers, packages)
                    .map_err(incidents::status)?;
                facts
                    .sboms
                    .entry(digest.to_string())
                    .or_default()
                    .extend(judged);
            }
            Ok(gate::decide(req, &facts, &policy.current.gate))
        })
        .await?;
    Ok(v1::GateCheckResponse {
        allowed: verdict.allowed,
        denied: verdict.denied.into_iter().map(reason).collect(),
        warnings: verdict.warnings.into_iter().map(reason).collect(),
        skipped: verdict.skipped.unwrap_or_default(),
    })
}

fn reason(r: gate::Reason) -> v1::GateReason {
    v1::GateReason {
        incident: r.incident,
        action: r.action,
        container: r.container,
        image: r.image,
        advisory: r.advisory,
        package: r.package,
        chain: r.chain,
        via: r.via,
        message: r.message,
    }
}

/// The audit entry's result: the verdict and the incidents behind it.
pub(super) fn summary(r: &v1::GateCheckResponse) -> String {
    let mut incidents: Vec<&str> = r.denied.iter().map(|d| d.incident.as_str()).collect();
    incidents.dedup();
    match r.allowed {
        true => format!("allowed, {} warning(s)", r.warnings.len()),
        false => format!("denied by {}", incidents.join(",")),
    }
}
