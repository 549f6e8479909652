//! `incident plan`, `approve` and `revert` through the real `patchgap`
//! binary against a scripted collector (linkerd2-proxy's mock controllers):
//! the collector's engine for these RPCs is another part of issue 15, so
//! this pins the CLI's side of the conversation: what it sends, what it
//! prints, and above all what it does when an approval is refused because
//! the plan changed (the error, then the new plan, then exit 1).

use std::{
    net::SocketAddr,
    process::Output,
    sync::{Arc, Mutex},
};

use patchgap_proto::v1::{
    self,
    query_server::{Query, QueryServer},
};
use serde_json::Value;
use tonic::{Request, Response, Status};

mod common;
use common::{patchgap_at, stderr, stdout};

const OLD: &str = "0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0";
const NEW: &str = "9c1f9c1f9c1f9c1f9c1f9c1f9c1f9c1f9c1f9c1f9c1f9c1f9c1f9c1f9c1f9c1f";

/// What the scripted collector was asked, in order.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Plan(v1::PlanIncidentRequest),
    Approve(v1::ApproveIncidentRequest),
    Revert(v1::RevertIncidentRequest),
}

/// A collector whose plan for INC-7 is `NEW`: an approval of another hash
/// is refused as the real one refuses it (FailedPrecondition naming the
/// new hash).
#[derive(Clone, Default)]
struct Scripted {
    calls: Arc<Mutex<Vec<Call>>>,
    /// PlanIncident refuses the caller, as for a token with `approve`
    /// but not `respond`.
    plan_refused: bool,
}

fn the_plan() -> v1::Plan {
    v1::Plan {
        hash: NEW.into(),
        tier: Some(1),
        tier_name: "critical in a sensitive scope".into(),
        actions: vec![v1::PlanAction {
            id: 1,
            kind: "isolate_affected_workloads".into(),
            mode: "enforce".into(),
            approval: "required".into(),
            targets: vec![v1::PlanTarget {
                host: "web-1".into(),
                workload: "k8s:prod/ml/Deployment/trainer/trainer".into(),
                cgroup: "/kubepods.slice/pod7d1c/cri-containerd-4f4f.scope".into(),
                pids: vec![4242, 4250],
                processes: 3,
                shared_with: vec!["container:web-1/sidecar".into()],
            }],
            ..Default::default()
        }],
        made_at_ms: 1_764_900_120_000,
        requested_by: "alice".into(),
        expires_at_ms: 1_764_903_720_000,
        ..Default::default()
    }
}

fn the_incident() -> v1::Incident {
    v1::Incident {
        id: "INC-7".into(),
        state: "planned".into(),
        tier: Some(1),
        tier_name: "critical in a sensitive scope".into(),
        plan: Some(the_plan()),
        policy: Some(v1::PolicyInForce {
            source: "built-in".into(),
            loaded_at_ms: 1_764_899_000_000,
            reload_error: String::new(),
            verify: None,
        }),
        ..Default::default()
    }
}

fn action(id: u32, state: &str) -> v1::IncidentAction {
    v1::IncidentAction {
        id,
        kind: "isolate_affected_workloads".into(),
        mode: "enforce".into(),
        approval: "required".into(),
        state: state.into(),
        plan: NEW.into(),
        approved_by: "bob".into(),
        requested_at_ms: 1_764_900_300_000,
        ..Default::default()
    }
}

/// The Query service: the scripted RPCs go to `Scripted`'s methods, every
/// other answers Unimplemented. (One macro emits the whole impl, since
/// async_trait rewrites only the methods it sees written out.)
macro_rules! query_impl {
    (
        unscripted { $($u:ident($ureq:ty) -> $uresp:ty;)* }
        scripted { $($s:ident($sreq:ty) -> $sresp:ty => $f:ident;)* }
    ) => {
        #[tonic::async_trait]
        impl Query for Scripted {
            $(
                async fn $u(&self, _: Request<$ureq>) -> Result<Response<$uresp>, Status> {
                    Err(Status::unimplemented(stringify!($u)))
                }
            )*
            $(
                async fn $s(&self, request: Request<$sreq>) -> Result<Response<$sresp>, Status> {
                    self.$f(request.into_inner()).map(Response::new)
                }
            )*
        }
    };
}

query_impl! {
    unscripted {
        find_package(v1::FindPackageRequest) -> v1::FindPackageResponse;
        list_hosts(v1::ListHostsRequest) -> v1::ListHostsResponse;
        list_processes(v1::ListProcessesRequest) -> v1::ListProcessesResponse;
        list_workloads(v1::ListWorkloadsRequest) -> v1::ListWorkloadsResponse;
        list_connections(v1::ListConnectionsRequest) -> v1::ListConnectionsResponse;
        import_advisories(v1::ImportAdvisoriesRequest) -> v1::ImportAdvisoriesResponse;
        list_advisories(v1::ListAdvisoriesRequest) -> v1::ListAdvisoriesResponse;
        get_advisory(v1::GetAdvisoryRequest) -> v1::GetAdvisoryResponse;
        delete_advisory(v1::DeleteAdvisoryRequest) -> v1::DeleteAdvisoryResponse;
        list_findings(v1::ListFindingsRequest) -> v1::ListFindingsResponse;
        push_sbom(v1::PushSbomRequest) -> v1::PushSbomResponse;
        list_sboms(v1::ListSbomsRequest) -> v1::ListSbomsResponse;
        issue_token(v1::IssueTokenRequest) -> v1::IssueTokenResponse;
        list_tokens(v1::ListTokensRequest) -> v1::ListTokensResponse;
        revoke_token(v1::RevokeTokenRequest) -> v1::RevokeTokenResponse;
        list_audit(v1::ListAuditRequest) -> v1::ListAuditResponse;
        verify_audit(v1::VerifyAuditRequest) -> v1::VerifyAuditResponse;
        open_incident(v1::OpenIncidentRequest) -> v1::OpenIncidentResponse;
        list_incidents(v1::ListIncidentsRequest) -> v1::ListIncidentsResponse;
        get_incident(v1::GetIncidentRequest) -> v1::GetIncidentResponse;
        gate_check(v1::GateCheckRequest) -> v1::GateCheckResponse;
        close_incident(v1::CloseIncidentRequest) -> v1::CloseIncidentResponse;
        get_incident_evidence(v1::GetIncidentEvidenceRequest) -> v1::GetIncidentEvidenceResponse;
        retire_host(v1::RetireHostRequest) -> v1::RetireHostResponse;
        get_incident_graph(v1::GetIncidentGraphRequest) -> v1::GetIncidentGraphResponse;
        get_response_report(v1::GetResponseReportRequest) -> v1::GetResponseReportResponse;
        list_egress_alerts(v1::ListEgressAlertsRequest) -> v1::ListEgressAlertsResponse;
        get_egress_baseline(v1::GetEgressBaselineRequest) -> v1::GetEgressBaselineResponse;
        list_deliveries(v1::ListDeliveriesRequest) -> v1::ListDeliveriesResponse;
        enable_endpoint(v1::EnableEndpointRequest) -> v1::EnableEndpointResponse;
        list_workload_changes(v1::ListWorkloadChangesRequest) -> v1::ListWorkloadChangesResponse;
    }
    scripted {
        plan_incident(v1::PlanIncidentRequest) -> v1::PlanIncidentResponse => plan;
        approve_incident(v1::ApproveIncidentRequest) -> v1::ApproveIncidentResponse => approve;
        revert_incident(v1::RevertIncidentRequest) -> v1::RevertIncidentResponse => revert;
    }
}

impl Scripted {
    fn plan(&self, req: v1::PlanIncidentRequest) -> Result<v1::PlanIncidentResponse, Status> {
        self.calls.lock().unwrap().push(Call::Plan(req));
        if self.plan_refused {
            return Err(Status::permission_denied(
                "this call needs the respond scope",
            ));
        }
        Ok(v1::PlanIncidentResponse {
            incident: Some(the_incident()),
            plan: Some(the_plan()),
            recorded: true,
        })
    }

    fn approve(
        &self,
        req: v1::ApproveIncidentRequest,
    ) -> Result<v1::ApproveIncidentResponse, Status> {
        self.calls.lock().unwrap().push(Call::Approve(req.clone()));
        if req.plan != NEW {
            return Err(Status::failed_precondition(format!(
                "the plan changed: {} is not INC-7's plan, which is now {NEW}",
                req.plan
            )));
        }
        let mut i = the_incident();
        i.state = "approval_pending".into();
        i.actions = vec![action(1, "requested")];
        Ok(v1::ApproveIncidentResponse {
            incident: Some(i),
            requested: vec![1],
        })
    }

    fn revert(&self, req: v1::RevertIncidentRequest) -> Result<v1::RevertIncidentResponse, Status> {
        self.calls.lock().unwrap().push(Call::Revert(req.clone()));
        let mut i = the_incident();
        let mut a = action(1, "reverted");
        a.reason = req.reason.clone();
        a.reverted_at_ms = 1_764_900_900_000;
        i.actions = vec![a];
        Ok(v1::RevertIncidentResponse {
            incident: Some(i),
            reverted: vec![if req.action == 0 { 1 } else { req.action }],
        })
    }
}

/// The scripted collector on an ephemeral loopback port; it stops with
/// the test's runtime.
async fn serve() -> (SocketAddr, Scripted) {
    serve_script(Scripted::default()).await
}

async fn serve_script(script: Scripted) -> (SocketAddr, Scripted) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = QueryServer::new(script.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, script)
}

/// Runs the binary off the runtime's workers, so the server keeps
/// answering while it waits.
async fn run(addr: SocketAddr, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        patchgap_at(&addr.to_string(), "", &args)
    })
    .await
    .unwrap()
}

fn calls(s: &Scripted) -> Vec<Call> {
    s.calls.lock().unwrap().clone()
}

/// The plan changed between `plan` and `approve`: nothing is approved, the
/// collector's refusal is printed, then the new plan (from PlanIncident)
/// with the hash to approve, and the exit is 1.
#[tokio::test]
async fn a_stale_plan_hash_prints_the_refusal_then_the_new_plan() {
    let (addr, script) = serve().await;
    let o = run(addr, &["incident", "approve", "INC-7", "--plan", OLD]).await;
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.starts_with(&format!(
            "error: the plan changed: {OLD} is not INC-7's plan, which is now {NEW}\n"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("nothing approved: plan {OLD} is not the plan in force; review the plan above, then approve it with --plan {NEW}")),
        "{err}"
    );
    // The new plan, whole: hash, tier, targets, and the command to approve it.
    for want in [
        format!("  hash       {NEW}"),
        "  tier       1 critical in a sensitive scope".into(),
        "web-1 k8s:prod/ml/Deployment/trainer/trainer cgroup /kubepods.slice/pod7d1c/cri-containerd-4f4f.scope: 2 exposed pid(s) (4242 4250) of 3 process(es); shared with container:web-1/sidecar".into(),
        format!("approve with: patchgap incident approve INC-7 --plan {NEW}"),
    ] {
        assert!(out.contains(&want), "missing {want:?} in\n{out}");
    }
    assert_eq!(
        calls(&script),
        vec![
            Call::Approve(v1::ApproveIncidentRequest {
                id: "INC-7".into(),
                plan: OLD.into()
            }),
            Call::Plan(v1::PlanIncidentRequest { id: "INC-7".into() }),
        ]
    );

    // With -o json the new plan is the document on stdout; the refusal
    // still goes to stderr and the exit is still 1.
    let o = run(
        addr,
        &["incident", "approve", "INC-7", "--plan", OLD, "-o", "json"],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).expect("the new plan as JSON");
    assert_eq!(plan["hash"], NEW);
    assert_eq!(plan["id"], "INC-7");
    assert_eq!(plan["made_at"], "2025-12-05T02:02:00.000Z");
    assert!(stderr(&o).contains("the plan changed"), "{}", stderr(&o));
}

/// An approver whose token cannot plan still learns that nothing was
/// approved, and how to see the new plan.
#[tokio::test]
async fn a_stale_hash_without_the_respond_scope_still_says_nothing_was_approved() {
    let (addr, script) = serve_script(Scripted {
        plan_refused: true,
        ..Default::default()
    })
    .await;
    let o = run(addr, &["incident", "approve", "INC-7", "--plan", OLD]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("error: the plan changed"), "{err}");
    assert!(
        err.contains("nothing approved; cannot fetch the new plan (`patchgap incident plan INC-7` needs the respond scope): this call needs the respond scope"),
        "{err}"
    );
    assert_eq!(stdout(&o), "", "no plan to print");
    assert_eq!(calls(&script).len(), 2);
}

#[tokio::test]
async fn approving_the_current_plan_prints_the_requested_actions() {
    let (addr, script) = serve().await;
    let o = run(addr, &["incident", "approve", "7", "--plan", NEW]).await;
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.starts_with(&format!("approved plan {NEW} of INC-7: requested #1\n")),
        "{out}"
    );
    assert!(out.contains("  #1 isolate_affected_workloads  mode enforce  approval required  requested since 2025-12-05T02:05:00.000Z"), "{out}");
    assert_eq!(calls(&script).len(), 1, "no plan fetched after a success");

    let o = run(
        addr,
        &["incident", "approve", "7", "--plan", NEW, "-o", "json"],
    )
    .await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["requested"], serde_json::json!([1]));
    assert_eq!(v["actions"][0]["state"], "requested");
    assert_eq!(v["actions"][0]["approved_by"], "bob");
    assert_eq!(v["actions"][0]["applied_at"], Value::Null);
}

#[tokio::test]
async fn plan_prints_and_records() {
    let (addr, script) = serve().await;
    let o = run(addr, &["incident", "plan", "INC-7", "-o", "json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hash"], NEW);
    assert_eq!(v["recorded"], true);
    assert_eq!(v["tier"], 1);
    assert_eq!(v["actions"][0]["targets"][0]["processes"], 3);
    assert_eq!(
        calls(&script),
        vec![Call::Plan(v1::PlanIncidentRequest { id: "INC-7".into() })]
    );
}

/// The reason goes out as typed, the action as given (0: all of them).
#[tokio::test]
async fn revert_sends_the_reason_and_the_action() {
    let (addr, script) = serve().await;
    let o = run(
        addr,
        &[
            "incident",
            "revert",
            "INC-7",
            "--action",
            "2",
            "--reason",
            "not-affected",
            "-o",
            "json",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reverted"], serde_json::json!([2]));
    assert_eq!(v["actions"][0]["reason"], "not-affected");
    assert_eq!(v["actions"][0]["reverted_at"], "2025-12-05T02:15:00.000Z");

    let o = run(
        addr,
        &["incident", "revert", "INC-7", "--reason", "false-positive"],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("INC-7: reverting #1 (false-positive)\n"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        calls(&script),
        vec![
            Call::Revert(v1::RevertIncidentRequest {
                id: "INC-7".into(),
                action: 2,
                reason: "not-affected".into()
            }),
            Call::Revert(v1::RevertIncidentRequest {
                id: "INC-7".into(),
                action: 0,
                reason: "false-positive".into()
            }),
        ]
    );

    // A reason clap does not know never reaches the collector.
    let o = run(
        addr,
        &["incident", "revert", "INC-7", "--reason", "because"],
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("[possible values: false-positive, not-affected, resolved]"),
        "{err}"
    );
    assert_eq!(calls(&script).len(), 2);
}
