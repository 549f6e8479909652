//! Tokens and the audit log over the Query API (every RPC here needs
//! `admin`, checked in `api::auth`), and what each request says in an
//! audit entry ([`AuditArgs`]): never a token, never a document's bytes.

use patchgap_proto::v1;
use sha2::{Digest, Sha256};
use tonic::Status;

use super::{auth::Caller, blocking, invalid, query::QueryService};
use crate::{
    auth::{IssueError, Scope, hex},
    store::{AuditEntry, TokenRecord},
};

fn info(t: TokenRecord) -> v1::TokenInfo {
    v1::TokenInfo {
        id: t.id,
        subject: t.subject,
        scopes: t.scopes,
        issued_ms: t.issued_ms,
        expires_ms: t.expires_ms,
        issued_by: t.issued_by,
        revoked_ms: t.revoked_ms,
    }
}

pub(super) async fn issue_token(
    svc: &QueryService,
    req: v1::IssueTokenRequest,
    caller: Caller,
) -> Result<v1::IssueTokenResponse, Status> {
    let scopes = Scope::parse_list(&req.scopes.join(",")).map_err(invalid)?;
    let ttl = (req.ttl_seconds > 0).then(|| std::time::Duration::from_secs(req.ttl_seconds));
    let tokens = svc.tokens.clone();
    let store = svc.store();
    let issued = tokio::task::spawn_blocking(move || {
        tokens.issue(store.as_ref(), &req.subject, &scopes, ttl, &caller.subject)
    })
    .await
    .map_err(|_| Status::internal("token task failed"))?;
    match issued {
        Ok((token, record)) => Ok(v1::IssueTokenResponse {
            token,
            info: Some(info(record)),
        }),
        Err(IssueError::Invalid(msg)) => Err(invalid(msg)),
        Err(IssueError::Store(e)) => Err(super::to_status(e)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot issue a token");
            Err(Status::internal(
                "cannot issue a token; see the collector log",
            ))
        }
    }
}

pub(super) async fn list_tokens(svc: &QueryService) -> Result<v1::ListTokensResponse, Status> {
    let tokens = svc.read(|s| s.tokens()).await?;
    Ok(v1::ListTokensResponse {
        tokens: tokens.into_iter().map(info).collect(),
    })
}

pub(super) async fn revoke_token(
    svc: &QueryService,
    req: v1::RevokeTokenRequest,
) -> Result<v1::RevokeTokenResponse, Status> {
    let tokens = svc.tokens.clone();
    let store = svc.store();
    let id = req.id.trim().to_string();
    let record = blocking(move || tokens.revoke(store.as_ref(), &id)).await?;
    match record {
        Some(r) => Ok(v1::RevokeTokenResponse {
            info: Some(info(r)),
        }),
        None => Err(Status::not_found(format!("no token has the id {}", req.id))),
    }
}

fn entry(e: AuditEntry) -> v1::AuditEntry {
    v1::AuditEntry {
        seq: e.seq,
        time_ms: e.time_ms,
        subject: e.subject,
        scopes: e.scopes,
        peer: e.peer,
        method: e.method,
        args: e.args,
        result: e.result,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

pub(super) async fn list_audit(
    svc: &QueryService,
    req: v1::ListAuditRequest,
) -> Result<v1::ListAuditResponse, Status> {
    let limit = if req.limit == 0 {
        1000
    } else {
        req.limit.min(10_000)
    } as usize;
    let entries = svc
        .read(move |s| s.audit_entries(req.after_seq, req.since_ms, limit))
        .await?;
    Ok(v1::ListAuditResponse {
        entries: entries.into_iter().map(entry).collect(),
    })
}

pub(super) async fn verify_audit(svc: &QueryService) -> Result<v1::VerifyAuditResponse, Status> {
    let audit = svc.audit.clone();
    let report = blocking(move || audit.verify()).await?;
    let problem = report.problem.unwrap_or_else(|| crate::audit::Problem {
        seq: 0,
        kind: "",
        message: String::new(),
    });
    Ok(v1::VerifyAuditResponse {
        intact: problem.kind.is_empty(),
        entries: report.entries,
        checkpoints: report.checkpoints,
        first_bad_seq: problem.seq,
        kind: problem.kind.to_string(),
        message: problem.message,
    })
}

/// What a request says in its audit entry.
pub(super) trait AuditArgs {
    fn audit_args(&self) -> String;
}

/// Requests small and free of secrets: their fields as they are.
macro_rules! plain_args {
    ($($t:ty),* $(,)?) => {$(
        impl AuditArgs for $t {
            fn audit_args(&self) -> String {
                format!("{self:?}")
            }
        }
    )*};
}

plain_args!(
    v1::FindPackageRequest,
    v1::ListHostsRequest,
    v1::ListProcessesRequest,
    v1::ListWorkloadsRequest,
    v1::ListConnectionsRequest,
    v1::ListAdvisoriesRequest,
    v1::GetAdvisoryRequest,
    v1::DeleteAdvisoryRequest,
    v1::ListFindingsRequest,
    v1::ListSbomsRequest,
    v1::ListTokensRequest,
    v1::RevokeTokenRequest,
    v1::ListAuditRequest,
    v1::VerifyAuditRequest,
    v1::IssueTokenRequest,
    v1::OpenIncidentRequest,
    v1::ListIncidentsRequest,
    v1::GetIncidentRequest,
    v1::PlanIncidentRequest,
    v1::ApproveIncidentRequest,
    v1::RevertIncidentRequest,
    v1::CloseIncidentRequest,
    v1::GetIncidentEvidenceRequest,
    v1::RetireHostRequest,
    v1::GetIncidentGraphRequest,
    v1::GetResponseReportRequest,
    v1::ListEgressAlertsRequest,
    v1::GetEgressBaselineRequest,
    v1::ListDeliveriesRequest,
    v1::EnableEndpointRequest,
    v1::ListWorkloadChangesRequest,
);

fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

impl AuditArgs for v1::ImportAdvisoriesRequest {
    /// Each file's name, size and SHA-256, not its content.
    fn audit_args(&self) -> String {
        let files: Vec<String> = self
            .files
            .iter()
            .map(|f| {
                format!(
                    "{} ({} bytes, sha256 {})",
                    f.name,
                    f.data.len(),
                    sha256(&f.data)
                )
            })
            .collect();
        format!(
            "source: {:?}, replace: {}, files: [{}]",
            self.source,
            self.replace,
            files.join(", ")
        )
    }
}

/// The SBOM a gate check may carry is named by its size and hash, never
/// written whole into the log.
impl AuditArgs for v1::GateCheckRequest {
    fn audit_args(&self) -> String {
        let sbom = match self.sbom.is_empty() {
            true => String::new(),
            false => format!(
                ", sbom: {:?}, {} bytes, sha256 {}",
                self.sbom_name,
                self.sbom.len(),
                sha256(&self.sbom)
            ),
        };
        format!(
            "image: {:?}, namespace: {:?}{sbom}",
            self.image, self.namespace
        )
    }
}

impl AuditArgs for v1::PushSbomRequest {
    fn audit_args(&self) -> String {
        format!(
            "image: {}, name: {}, source: {:?}, {} bytes, sha256 {}",
            self.image,
            self.name,
            self.source,
            self.data.len(),
            sha256(&self.data)
        )
    }
}
