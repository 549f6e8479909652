//! Advisories: import OSV files (then match, so the answer means the
//! findings are complete), list and show them, and the findings: every
//! running process with a package an advisory affects.

use patchgap_proto::v1;
use tonic::Status;
use tracing::info;

use super::{blocking, invalid, paging::Paging, query::QueryService, query::place_in_workloads};
use crate::{
    advisories::records,
    ecosystem::Ecosystem,
    fleet::exposure::{self, FindingsQuery, evidence_loaded},
    store::PutOutcome,
};

/// The source name an import gives when it names none.
pub const UNNAMED_SOURCE: &str = "unnamed";

pub(super) async fn import(
    svc: &QueryService,
    req: v1::ImportAdvisoriesRequest,
    imported_by: String,
) -> Result<v1::ImportAdvisoriesResponse, Status> {
    let started = std::time::Instant::now();
    let source = match req.source.trim() {
        "" => UNNAMED_SOURCE.to_string(),
        s if s.len() > 200 || s.chars().any(char::is_control) => {
            return Err(invalid(
                "the source name must be at most 200 printable characters",
            ));
        }
        s => s.to_string(),
    };
    let replace = req.replace;
    let files = req.files;
    // Parsing is CPU work: off the async workers.
    let (mut parsed, errors) = tokio::task::spawn_blocking(move || records::parse_files(&files))
        .await
        .map_err(|_| Status::internal("advisory parsing failed"))?;
    let now = patchgap_proto::time::now_ms();
    for r in &mut parsed {
        r.provenance.imported_by = imported_by.clone();
        r.provenance.imported_ms = now;
        r.provenance.source = source.clone();
    }
    let mut resp = v1::ImportAdvisoriesResponse {
        errors,
        ..Default::default()
    };
    let ingest = svc.ingest.clone();
    let (parsed, imported, held) = blocking(move || {
        let imported = ingest.import_advisories(&parsed, replace)?;
        // Who holds each refused id, for its error.
        let mut held = Vec::new();
        for (r, o) in parsed.iter().zip(&imported.outcomes) {
            if *o == PutOutcome::OtherSource {
                let by = ingest
                    .store()
                    .advisory(&r.id)?
                    .into_iter()
                    .find(|a| a.id == r.id)
                    .map(|a| a.provenance)
                    .unwrap_or_default();
                held.push((r.source.clone(), r.id.clone(), by));
            }
        }
        Ok((parsed, imported, held))
    })
    .await?;
    records::count(&mut resp, &parsed, &imported.outcomes);
    for (file, id, by) in held {
        resp.errors.push(v1::ImportError {
            file,
            position: String::new(),
            reason: format!(
                "{id} is held from source {:?} (imported by {}); not replaced: use --replace to take it over from {source:?}",
                by.source, by.imported_by
            ),
        });
    }
    resp.matches = imported.pass.matches as u32;
    resp.time_to_scope_ms = started.elapsed().as_millis() as i64;
    info!(
        added = resp.added,
        updated = resp.updated,
        matches = resp.matches,
        refused = resp.refused,
        source,
        replace,
        time_to_scope_ms = resp.time_to_scope_ms,
        "advisories imported"
    );
    Ok(resp)
}

pub(super) async fn delete(
    svc: &QueryService,
    req: v1::DeleteAdvisoryRequest,
) -> Result<v1::DeleteAdvisoryResponse, Status> {
    let id = req.id.trim().to_string();
    if id.is_empty() {
        return Err(invalid("give the id of the advisory to delete"));
    }
    let ingest = svc.ingest.clone();
    let key = id.clone();
    let removed = blocking(move || ingest.delete_advisory(&key)).await?;
    let Some((record, pass)) = removed else {
        return Err(Status::not_found(format!(
            "no advisory has the id {id} (give its id, not an alias)"
        )));
    };
    info!(id, matches = pass.matches, "advisory deleted");
    Ok(v1::DeleteAdvisoryResponse {
        advisory: Some(records::summary(&record)),
        matches: pass.matches as u32,
    })
}

pub(super) async fn list(
    svc: &QueryService,
    req: v1::ListAdvisoriesRequest,
) -> Result<v1::ListAdvisoriesResponse, Status> {
    let eco = req.ecosystem;
    if !eco.is_empty() && Ecosystem::from_purl_type(&eco).is_none() {
        return Err(invalid(format!(
            "unknown ecosystem {eco:?}: use one of {}",
            Ecosystem::list()
        )));
    }
    let list = svc
        .read(move |s| s.advisories((!eco.is_empty()).then_some(eco.as_str())))
        .await?;
    Ok(v1::ListAdvisoriesResponse {
        advisories: list.iter().map(records::summary).collect(),
    })
}

pub(super) async fn get(
    svc: &QueryService,
    req: v1::GetAdvisoryRequest,
) -> Result<v1::GetAdvisoryResponse, Status> {
    let id = req.id;
    if id.trim().is_empty() {
        return Err(invalid(
            "give an advisory id or alias, such as CVE-2023-23931",
        ));
    }
    let found = svc.read(move |s| s.advisory(&id)).await?;
    Ok(v1::GetAdvisoryResponse {
        advisories: found.iter().map(records::summary).collect(),
        documents: found
            .iter()
            .map(|a| String::from_utf8_lossy(&a.data).into_owned())
            .collect(),
    })
}

/// CVSS's qualitative ratings, in order; unknown is below them all.
fn severity_rank(s: &str) -> u8 {
    match s.to_ascii_uppercase().as_str() {
        "LOW" => 1,
        "MEDIUM" | "MODERATE" => 2,
        "HIGH" => 3,
        "CRITICAL" => 4,
        _ => 0,
    }
}

/// What a ListFindings request asks, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ListFindings {
    /// The lowest severity rank shown (0: every one).
    pub min_severity: u8,
    /// Only loaded evidence.
    pub loaded: bool,
    pub filter: v1::WorkloadFilter,
}

impl TryFrom<v1::ListFindingsRequest> for ListFindings {
    type Error = Status;

    fn try_from(req: v1::ListFindingsRequest) -> Result<ListFindings, Status> {
        let min_severity = match req.severity.trim() {
            "" => 0,
            s if severity_rank(s) > 0 => severity_rank(s),
            s => {
                return Err(invalid(format!(
                    "unknown severity {s:?}: use low, medium, high or critical"
                )));
            }
        };
        Ok(ListFindings {
            min_severity,
            loaded: req.loaded,
            filter: req.filter.unwrap_or_default(),
        })
    }
}

impl ListFindings {
    pub(super) async fn apply(
        self,
        svc: &QueryService,
        paging: Paging,
    ) -> Result<v1::ListFindingsResponse, Status> {
        let started = std::time::Instant::now();
        let min = self.min_severity;
        let first = paging.first();
        let coverage = if first {
            Some(svc.coverage().await?)
        } else {
            None
        };
        let evaluated = if first {
            svc.read(|s| s.advisories(None))
                .await?
                .iter()
                .filter(|a| a.withdrawn.is_none() && severity_rank(&a.severity) >= min)
                .count() as u32
        } else {
            0
        };
        // Every stored verdict, by package: loaded for the first page,
        // reused by the pages after it.
        let index = svc
            .reused(&svc.findings_reuse, first, || {
                svc.read(|s| exposure::FindingsIndex::load(s, &FindingsQuery::default()))
            })
            .await?;
        let (after, limit) = (paging.after.clone(), paging.limit());
        let page = svc
            .read(move |s| exposure::findings_page(s, &index, None, after.as_ref(), limit))
            .await?;
        let fleet = svc
            .workloads_of(first, page.processes.iter().flat_map(|(_, ms)| ms.iter()))
            .await?;
        let groups = page
            .processes
            .into_iter()
            .map(|(cursor, mut findings)| {
                findings.retain(|m| {
                    severity_rank(&m.severity) >= min
                        && (!self.loaded || evidence_loaded(&m.evidence))
                });
                place_in_workloads(&mut findings, &fleet, &self.filter);
                (cursor, findings)
            })
            .collect();
        let (findings, next_page_token) = paging.fill(groups, page.next);
        Ok(v1::ListFindingsResponse {
            coverage,
            findings,
            scope_map_error: fleet.scope_map_error.clone(),
            advisories: evaluated,
            elapsed_ms: started.elapsed().as_millis() as i64,
            next_page_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities() {
        let parse = |s: &str| {
            ListFindings::try_from(v1::ListFindingsRequest {
                severity: s.into(),
                ..Default::default()
            })
        };
        assert_eq!(parse("").unwrap().min_severity, 0);
        assert_eq!(parse("High").unwrap().min_severity, 3);
        assert_eq!(parse("moderate").unwrap().min_severity, 2);
        let err = parse("urgent").unwrap_err();
        assert!(err.message().contains("use low, medium, high or critical"));
    }
}
