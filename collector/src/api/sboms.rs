//! SBOMs: push one for an image digest (parsed here, stored and matched by
//! the domain) and list them.

use patchgap_proto::{time::now_ms, v1};
use tonic::Status;

use super::{blocking, invalid, query::QueryService};
use crate::{
    sbom::{Sbom, records},
    store::PutOutcome,
};

pub(super) async fn push(
    svc: &QueryService,
    req: v1::PushSbomRequest,
    imported_by: String,
) -> Result<v1::PushSbomResponse, Status> {
    let image = records::image_digest(&req.image).map_err(invalid)?;
    let name = if req.name.is_empty() {
        "sbom".to_string()
    } else {
        req.name
    };
    let source = match req.source.trim() {
        "" => std::path::Path::new(&name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.clone()),
        s => s.to_string(),
    };
    // Parsing is CPU work: off the async workers. A document that does not
    // parse changes nothing.
    let record = tokio::task::spawn_blocking(move || {
        Sbom::parse(&req.data, &name).map(|sbom| {
            let mut record = records::record(&sbom, &image, &name, &req.data, now_ms());
            record.provenance.imported_by = imported_by;
            record.provenance.source = source;
            record
        })
    })
    .await
    .map_err(|_| Status::internal("SBOM parsing failed"))?
    .map_err(|e| invalid(e.to_string()))?;
    let image = record.image.clone();
    let ingest = svc.ingest.clone();
    let (outcome, stored) = blocking(move || {
        let outcome = ingest.push_sbom(&record)?;
        let stored = ingest.store().sboms(Some(&record.image))?;
        Ok((outcome, stored))
    })
    .await?;
    let stored = stored
        .into_iter()
        .next()
        .ok_or_else(|| Status::internal(format!("the SBOM of {image} was not stored")))?;
    Ok(v1::PushSbomResponse {
        sbom: Some(records::summary(&stored)),
        outcome: match outcome {
            PutOutcome::Added => "added",
            PutOutcome::Updated => "replaced",
            PutOutcome::Unchanged | PutOutcome::Older | PutOutcome::OtherSource => "unchanged",
        }
        .into(),
        matches: stored
            .packages
            .iter()
            .map(|p| p.advisories.len() as u32)
            .sum(),
    })
}

pub(super) async fn list(
    svc: &QueryService,
    req: v1::ListSbomsRequest,
) -> Result<v1::ListSbomsResponse, Status> {
    let image = if req.image.trim().is_empty() {
        None
    } else {
        Some(records::image_digest(&req.image).map_err(invalid)?)
    };
    let sboms = svc.read(move |s| s.sboms(image.as_deref())).await?;
    Ok(v1::ListSbomsResponse {
        sboms: sboms.iter().map(records::summary).collect(),
    })
}
