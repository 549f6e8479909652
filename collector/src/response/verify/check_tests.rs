//! The digest, egress and policy checks on their own: each is a pure
//! function of the incident and the facts a pass read, so each case here
//! is the facts that should keep an incident open (and the line that
//! says why) next to the nearest facts that should not.

use super::{
    Verdict,
    check::{self, ConnectionFact, Facts, ProcessFact},
};
use crate::response::{
    ActionKind, Approval, Mode,
    incident::{
        ActionState, ActionTimes, Event, Incident, IncidentAction, Recorded, Source, project,
    },
    plan::{PlannedAction, Target},
};

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const FIXED: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
const AFFECTED: &str = "pkg:pypi/requests@2.19.0";
/// When the isolation was applied.
const APPLIED_AT: i64 = 1_700_000_100_000;

/// An incident on `requests <2.20`, opened at 1 700 000 000 000, with
/// `actions`.
fn incident(actions: Vec<IncidentAction>) -> Incident {
    let source = Source::Package {
        package: "requests".into(),
        name: "requests".into(),
        ecosystem: Some("pypi".into()),
        group: None,
        range: Some("<2.20".into()),
    };
    let mut i = project(&[Recorded {
        seq: 1,
        at_ms: 1_700_000_000_000,
        actor: "alice".into(),
        event: Event::Opened {
            dedup_key: source.dedup_key(),
            source,
        },
    }])
    .unwrap();
    i.actions = actions;
    i
}

/// Action `id` of `kind` in `mode`, on `targets` with `allow`, in
/// `state` at `times`.
fn action(
    id: u32,
    kind: ActionKind,
    mode: Mode,
    state: ActionState,
    reason: &str,
    times: ActionTimes,
) -> IncidentAction {
    IncidentAction {
        planned: PlannedAction {
            id,
            kind,
            mode,
            approval: Approval::Auto,
            revert_after_ms: None,
            allow: vec!["203.0.113.0/24".into()],
            targets: vec![Target {
                host: "alpha".into(),
                workload: "k8s:c/ml/Deployment/trainer/trainer".into(),
                instance: "pod/u1/trainer".into(),
                cgroup: "/kubepods/pod-u1/trainer".into(),
                pids: vec![42],
                processes: 1,
                ..Target::default()
            }],
            excluded: vec![],
            no_executor: None,
            endpoint: None,
        },
        plan: "h1".into(),
        state,
        reason: reason.into(),
        approved_by: String::new(),
        times,
        time_to_containment_ms: None,
    }
}

fn isolation(state: ActionState, reason: &str) -> IncidentAction {
    let times = ActionTimes {
        planned: APPLIED_AT - 2_000,
        requested: APPLIED_AT - 1_000,
        applied: match state {
            ActionState::Applied | ActionState::Verified => APPLIED_AT,
            _ => 0,
        },
        failed: match state {
            ActionState::Failed => APPLIED_AT,
            _ => 0,
        },
        ..ActionTimes::default()
    };
    action(
        1,
        ActionKind::IsolateAffectedWorkloads,
        Mode::Enforce,
        state,
        reason,
        times,
    )
}

fn running(pid: u32, host: &str, namespace: &str, digest: &str, purl: &str) -> ProcessFact {
    ProcessFact {
        host: host.into(),
        pid,
        exe: "/venv/bin/python3".into(),
        workload: format!("pod/u{pid}/trainer"),
        namespace: namespace.into(),
        image_digest: digest.into(),
        purl: purl.into(),
        evidence: "opened".into(),
        ..ProcessFact::default()
    }
}

#[test]
fn the_digest_check_fails_naming_each_affected_digest_and_its_namespace() {
    let i = incident(vec![]);
    let facts = Facts {
        processes: vec![
            running(42, "alpha", "ml", DIGEST, AFFECTED),
            // Another replica of the same image: one line for the digest.
            running(43, "beta", "ml", DIGEST, AFFECTED),
            // A host process (no image): the package check's business.
            running(7, "alpha", "", "", AFFECTED),
            // Only an image SBOM of the scope declares it.
            ProcessFact {
                pid: 0,
                sbom_image: FIXED.into(),
                purl: "pkg:pypi/requests@2.18.4".into(),
                evidence: "declared".into(),
                ..ProcessFact::default()
            },
        ],
        ..Facts::default()
    };
    let c = check::digest(&i, &facts);
    assert_eq!(c.check, "digest");
    assert_eq!(c.verdict, Verdict::Failed, "{c:?}");
    assert_eq!(
        c.blockers,
        [
            format!("digest {DIGEST} in namespace ml carries {AFFECTED}"),
            format!("digest {FIXED} in namespace - carries pkg:pypi/requests@2.18.4"),
        ]
    );
    assert_eq!(c.evidence, ["2 affected image digest(s) in scope"]);
    assert!(
        c.query.starts_with("patchgap query requests@<2.20"),
        "{}",
        c.query
    );
}

#[test]
fn the_digest_check_passes_when_no_workload_runs_an_affected_digest() {
    let i = incident(vec![]);
    // Nothing left in scope.
    let c = check::digest(&i, &Facts::default());
    assert_eq!((c.verdict, c.blockers.len()), (Verdict::Successful, 0));
    assert_eq!(c.evidence, ["0 affected image digest(s) in scope"]);
    // What is left runs outside any image.
    let facts = Facts {
        processes: vec![running(7, "alpha", "", "", AFFECTED)],
        ..Facts::default()
    };
    let c = check::digest(&i, &facts);
    assert_eq!(c.verdict, Verdict::Successful, "{c:?}");
    assert!(c.blockers.is_empty());
}

fn connect(
    pid: u32,
    host: &str,
    workload: &str,
    remote: &str,
    at: i64,
    result: i32,
) -> ConnectionFact {
    ConnectionFact {
        host: host.into(),
        workload: workload.into(),
        pid,
        remote: remote.into(),
        port: 443,
        last_seen_ms: at,
        last_result: result,
    }
}

/// EPERM, the errno the isolation's cgroup hook answers a refused
/// connect with.
const EPERM: i32 = 1;

#[test]
fn the_egress_check_fails_on_a_connect_that_got_out_past_the_allow_list() {
    let i = incident(vec![isolation(ActionState::Applied, "")]);
    let facts = Facts {
        connections: vec![
            connect(
                42,
                "alpha",
                "pod/u1/trainer",
                "198.51.100.7",
                APPLIED_AT + 5_000,
                0,
            ),
            // Refused by the isolation: what it is for.
            connect(
                42,
                "alpha",
                "pod/u1/trainer",
                "198.51.100.8",
                APPLIED_AT + 6_000,
                EPERM,
            ),
            // Inside the allow-list.
            connect(
                42,
                "alpha",
                "pod/u1/trainer",
                "203.0.113.9",
                APPLIED_AT + 7_000,
                0,
            ),
        ],
        ..Facts::default()
    };
    let c = check::egress(&i, &facts);
    assert_eq!(c.check, "egress");
    assert_eq!(c.verdict, Verdict::Failed, "{c:?}");
    assert_eq!(
        c.blockers,
        ["pid 42 on alpha connected to 198.51.100.7:443 (outside the allow-list) after isolation"]
    );
    assert_eq!(
        c.evidence,
        ["1 isolation(s) watched, 1 connection(s) refused by them"]
    );
}

#[test]
fn refused_connects_allowed_destinations_and_other_workloads_do_not_fail_the_egress_check() {
    let i = incident(vec![isolation(ActionState::Verified, "")]);
    let facts = Facts {
        connections: vec![
            connect(
                42,
                "alpha",
                "pod/u1/trainer",
                "198.51.100.7",
                APPLIED_AT + 1,
                EPERM,
            ),
            connect(
                42,
                "alpha",
                "pod/u1/trainer",
                "198.51.100.8",
                APPLIED_AT + 2,
                EPERM,
            ),
            // The allow-list's CIDR.
            connect(
                42,
                "alpha",
                "pod/u1/trainer",
                "203.0.113.250",
                APPLIED_AT + 3,
                0,
            ),
            // Matched by the fleet workload key, inside the allow-list.
            connect(
                44,
                "alpha",
                "k8s:c/ml/Deployment/trainer/trainer",
                "203.0.113.1",
                APPLIED_AT + 4,
                0,
            ),
            // Before the isolation was applied.
            connect(
                42,
                "alpha",
                "pod/u1/trainer",
                "198.51.100.7",
                APPLIED_AT - 1,
                0,
            ),
            // Not isolated: another workload, the same workload on
            // another host.
            connect(50, "alpha", "pod/u9/web", "198.51.100.7", APPLIED_AT + 5, 0),
            connect(
                42,
                "beta",
                "pod/u1/trainer",
                "198.51.100.7",
                APPLIED_AT + 6,
                0,
            ),
        ],
        ..Facts::default()
    };
    let c = check::egress(&i, &facts);
    assert_eq!(c.verdict, Verdict::Successful, "{c:?}");
    assert!(c.blockers.is_empty());
    assert_eq!(
        c.evidence,
        ["1 isolation(s) watched, 2 connection(s) refused by them"]
    );
    // An isolation never applied watches nothing: the connect that got
    // out is not held against it.
    let i = incident(vec![isolation(ActionState::Requested, "")]);
    let c = check::egress(&i, &facts);
    assert_eq!(c.verdict, Verdict::Successful, "{c:?}");
    assert_eq!(
        c.evidence,
        ["0 isolation(s) watched, 0 connection(s) refused by them"]
    );
}

#[test]
fn the_policy_check_fails_while_a_containment_is_failed_or_only_requested() {
    let facts = Facts::default();
    let failed = incident(vec![isolation(
        ActionState::Failed,
        "alpha: cgroup /kubepods/pod-u1/trainer not found",
    )]);
    let c = check::policy(&failed, &facts);
    assert_eq!(c.check, "policy");
    assert_eq!(c.verdict, Verdict::Failed, "{c:?}");
    assert_eq!(
        c.blockers,
        [
            "action 1 (isolate_affected_workloads) failed: alpha: cgroup /kubepods/pod-u1/trainer not found"
        ]
    );
    let requested = incident(vec![isolation(ActionState::Requested, "")]);
    let c = check::policy(&requested, &facts);
    assert_eq!(c.verdict, Verdict::Failed, "{c:?}");
    assert_eq!(
        c.blockers,
        ["action 1 (isolate_affected_workloads) requested, not yet in force on every target"]
    );
    // In force: it passes, and says so.
    for state in [ActionState::Applied, ActionState::Verified] {
        let c = check::policy(&incident(vec![isolation(state, "")]), &facts);
        assert_eq!(c.verdict, Verdict::Successful, "{state:?}: {c:?}");
        assert_eq!(
            c.evidence,
            [format!(
                "action 1 (isolate_affected_workloads) {} in Enforce mode",
                state.name()
            )]
        );
    }
    // An observe-only action is not containment: its failure does not
    // hold the incident.
    let mut observed = isolation(ActionState::Failed, "no agent");
    observed.planned.mode = Mode::Observe;
    let c = check::policy(&incident(vec![observed]), &facts);
    assert_eq!(c.verdict, Verdict::Successful, "{c:?}");
    assert_eq!(c.evidence, ["no containment was carried out on hosts"]);
}
