//! The token check in front of the Query service: a tower service that
//! wraps `QueryServer`, maps each RPC to the scope it needs, verifies the
//! bearer token (through `crate::auth`) and either refuses the call
//! (audited) or hands the service a [`Caller`] in the request's
//! extensions, for the audit entry the service writes.
//!
//! With `require_tokens` off (the loopback first look), reads, SBOM pushes
//! and advisory imports pass without a token, but `admin` calls (tokens,
//! the audit log) always need one: otherwise anyone who reached a
//! tokenless collector could mint an admin token that outlives that mode.
//!
//! With `critical_needs_cert` (`--critical-needs-cert`), the critical paths
//! (calls that need `approve` or `admin`) also need the connection to
//! present a CLI client certificate (`patchgap pki issue cli`), verified
//! against the client CA by the TLS handshake: a stolen token alone cannot
//! mint tokens or approve actions.

use std::{convert::Infallible, sync::Arc};

use tonic::{
    Status,
    body::Body,
    codegen::{BoxFuture, Context, Poll, Service, http},
    server::NamedService,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use crate::{
    audit::{AuditLog, record_refusal},
    auth::{AuthError, Identity, Scope, Tokens},
    tls::{Role, peer_identity},
};

/// The scope an RPC of the Query service needs. A method this table does
/// not know needs `admin`, so a new RPC is closed until it is listed.
pub fn required_scope(method: &str) -> Scope {
    match method {
        "FindPackage"
        | "ListHosts"
        | "ListProcesses"
        | "ListWorkloads"
        | "ListConnections"
        | "ListAdvisories"
        | "GetAdvisory"
        | "ListFindings"
        | "ListSboms"
        | "ListIncidents"
        | "GetIncident"
        | "GateCheck"
        | "GetIncidentEvidence"
        | "GetIncidentGraph"
        | "GetResponseReport"
        | "ListEgressAlerts"
        | "GetEgressBaseline"
        | "ListDeliveries" => Scope::Read,
        "ListWorkloadChanges" => Scope::Read,
        "ImportAdvisories" | "DeleteAdvisory" => Scope::Advisories,
        // Opening an incident writes to its log (and, once the policy
        // routes it, starts its playbook): a responder's act.
        "OpenIncident" | "PlanIncident" | "RevertIncident" => Scope::Respond,
        // A forced close lifts containment; a retired host leaves the
        // coverage of every open incident.
        "CloseIncident" | "RetireHost" => Scope::Respond,
        // Calling a receiver again that answered 410 (gone).
        "EnableEndpoint" => Scope::Respond,
        // Approving starts containment: the one act that needs `approve`.
        "ApproveIncident" => Scope::Approve,
        "PushSbom" => Scope::IngestSbom,
        _ => Scope::Admin,
    }
}

/// Who is calling, as the audit log records it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The token's subject, or `anonymous` (tokens off, none sent).
    pub subject: String,
    /// Comma-separated; `tokens-off` when the call passed without a token.
    pub scopes: String,
    pub peer: String,
    pub identity: Option<Identity>,
}

/// What the check needs: shared by every clone of the wrapper.
pub struct Guard {
    pub tokens: Arc<Tokens>,
    pub audit: Arc<AuditLog>,
    pub require_tokens: bool,
    /// `approve` and `admin` calls also need a verified CLI client
    /// certificate.
    pub critical_needs_cert: bool,
}

/// Whether a call needing `scope` is a critical path.
pub fn is_critical(scope: Scope) -> bool {
    matches!(scope, Scope::Approve | Scope::Admin)
}

impl Guard {
    /// Decides one call: the caller, or the status to refuse it with and
    /// the subject to audit the refusal under.
    ///
    /// `cert` is the connection's client certificate (DER), present only
    /// when the TLS handshake verified it against the client CA.
    fn check(
        &self,
        method: &str,
        bearer: Option<&str>,
        cert: Option<&[u8]>,
        peer: String,
    ) -> Result<Caller, (Status, String)> {
        let needed = required_scope(method);
        let verified = bearer.map(|t| self.tokens.verify(t));
        if !self.require_tokens && needed != Scope::Admin {
            // Tokens off: a valid token still names the caller in the log.
            return Ok(match verified {
                Some(Ok(id)) => Caller {
                    subject: id.subject.clone(),
                    scopes: id.scope_names(),
                    peer,
                    identity: Some(id),
                },
                _ => Caller {
                    subject: "anonymous".into(),
                    scopes: "tokens-off".into(),
                    peer,
                    identity: None,
                },
            });
        }
        let id = match verified {
            None => {
                return Err((
                    Status::unauthenticated(AuthError::Missing.to_string()),
                    String::new(),
                ));
            }
            Some(Err(e)) => return Err((Status::unauthenticated(e.to_string()), String::new())),
            Some(Ok(id)) => id,
        };
        if !id.has(needed) {
            let has = if id.scopes.is_empty() {
                "none".to_string()
            } else {
                id.scope_names()
            };
            return Err((
                Status::permission_denied(format!(
                    "{method} needs the `{needed}` scope; this token (subject {}) has: {has}",
                    id.subject
                )),
                id.subject,
            ));
        }
        if self.critical_needs_cert && is_critical(needed) {
            // Only a CLI certificate speaks for a person; an agent's key
            // sits on every host it runs on.
            match cert.and_then(peer_identity).map(|p| p.role) {
                Some(Role::Cli(_)) => {}
                other => {
                    let presented = match other {
                        None => "none",
                        Some(Role::Agent(_)) => "an agent certificate",
                        Some(_) => "a certificate that names no CLI client",
                    };
                    return Err((
                        Status::permission_denied(format!(
                            "{method} is a critical path (`{needed}`): it needs a CLI client certificate (patchgap pki issue cli; --cert/--key) as well as the token; this connection presented {presented}"
                        )),
                        id.subject,
                    ));
                }
            }
        }
        Ok(Caller {
            subject: id.subject.clone(),
            scopes: id.scope_names(),
            peer,
            identity: Some(id),
        })
    }
}

/// The bearer token of `authorization: Bearer TOKEN`, if any.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `QueryServer` behind the token check.
#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S> Authorized<S> {
    pub fn new(inner: S, guard: Arc<Guard>) -> Self {
        Authorized { inner, guard }
    }
}

impl<S: NamedService> NamedService for Authorized<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Authorized<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        let method = path.rsplit('/').next().unwrap_or_default().to_string();
        // Plaintext gives TcpConnectInfo; TLS (see `tls`) wraps it.
        let ext = req.extensions();
        let tls = ext.get::<TlsConnectInfo<TcpConnectInfo>>();
        let peer = ext
            .get::<TcpConnectInfo>()
            .or_else(|| tls.map(|i| i.get_ref()))
            .and_then(|i| i.remote_addr())
            .map(|a| a.to_string())
            .unwrap_or_default();
        // The handshake verified the chain; the leaf comes first.
        let certs = tls.and_then(|i| i.peer_certs());
        let cert = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
        // Verifying is one ed25519 check: cheap enough to do inline.
        let checked = self
            .guard
            .check(&method, bearer(req.headers()), cert, peer.clone());
        drop(certs);
        match checked {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                // The clone that was polled ready serves this call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(req))
            }
            Err((status, subject)) => {
                let audit = self.guard.audit.clone();
                Box::pin(async move {
                    let reason = format!("{:?}: {}", status.code(), status.message());
                    let method = format!("Query/{method}");
                    let written = tokio::task::spawn_blocking(move || {
                        record_refusal(&audit, &peer, &subject, &method, &reason)
                    })
                    .await;
                    if let Ok(Err(e)) = written {
                        tracing::warn!(error = %e.chain(), "cannot audit a refused call");
                    }
                    Ok(status.into_http())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writes that change what the fleet is exposed to need their own
    /// scopes; an RPC left out of the table needs `admin`. Approving is
    /// the one response act that needs `approve`: a responder who asks for
    /// a plan (`respond`) cannot also start containment with that token.
    #[test]
    fn rpc_scopes() {
        for (method, scope) in [
            ("ImportAdvisories", Scope::Advisories),
            ("DeleteAdvisory", Scope::Advisories),
            ("PushSbom", Scope::IngestSbom),
            ("GetAdvisory", Scope::Read),
            ("OpenIncident", Scope::Respond),
            ("PlanIncident", Scope::Respond),
            ("ApproveIncident", Scope::Approve),
            ("RevertIncident", Scope::Respond),
            ("CloseIncident", Scope::Respond),
            ("RetireHost", Scope::Respond),
            ("ListWorkloadChanges", Scope::Read),
            ("ListIncidents", Scope::Read),
            ("GetIncident", Scope::Read),
            ("ListEgressAlerts", Scope::Read),
            ("GetEgressBaseline", Scope::Read),
            ("ListDeliveries", Scope::Read),
            ("EnableEndpoint", Scope::Respond),
            ("ListAudit", Scope::Admin),
            ("SomethingNew", Scope::Admin),
        ] {
            assert_eq!(required_scope(method), scope, "{method}");
        }
    }
}
