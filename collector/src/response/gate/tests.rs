//! The gate's decision and the AdmissionReview reader, over the fixtures
//! in `fixtures/` (AdmissionReviews shaped as kube-apiserver sends them;
//! `@@BLOCKED@@` and `@@CLEAN@@` stand for digests).

use std::collections::BTreeMap;

use patchgap_proto::v1;

use super::{review, *};
use crate::store::DeclaredPackage;

const BLOCKED: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const CLEAN: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn fixture(name: &str) -> Vec<u8> {
    let text = match name {
        "pod" => include_str!("fixtures/pod.json"),
        "pod-dry-run" => include_str!("fixtures/pod-dry-run.json"),
        "pod-kube-system" => include_str!("fixtures/pod-kube-system.json"),
        "pod-tag-only" => include_str!("fixtures/pod-tag-only.json"),
        "deployment-two-containers" => include_str!("fixtures/deployment-two-containers.json"),
        "deployment-break-glass" => include_str!("fixtures/deployment-break-glass.json"),
        "cronjob" => include_str!("fixtures/cronjob.json"),
        "statefulset" => include_str!("fixtures/statefulset.json"),
        "daemonset" => include_str!("fixtures/daemonset.json"),
        "job" => include_str!("fixtures/job.json"),
        _ => panic!("no fixture {name}"),
    };
    text.replace("@@BLOCKED@@", BLOCKED)
        .replace("@@CLEAN@@", CLEAN)
        .into_bytes()
}

/// One incident blocking images under GHSA-test (its SBOM path) and
/// freezing namespace `frozen`.
fn facts(block: Option<(Admission, Mode)>, freeze: Option<(Admission, Mode)>) -> Facts {
    let mut sboms = BTreeMap::new();
    sboms.insert(
        BLOCKED.to_string(),
        vec![DeclaredPackage {
            package: v1::Package {
                name: "requests".into(),
                version: "2.19.0".into(),
                purl: "pkg:pypi/requests@2.19.0".into(),
                ..Default::default()
            },
            reference: "pkg:pypi/requests@2.19.0".into(),
            pulled_in_by: vec![
                "trainer@1.0".into(),
                "flask@1.0".into(),
                "requests@2.19.0".into(),
            ],
            advisories: vec!["GHSA-test".into()],
        }],
    );
    sboms.insert(CLEAN.to_string(), Vec::new());
    Facts {
        blockers: vec![std::sync::Arc::new(Blocker {
            incident: 7,
            block,
            freeze,
            advisories: ["GHSA-test".to_string()].into(),
            namespaces: ["frozen".to_string()].into(),
            ..Blocker::default()
        })],
        sboms,
    }
}

const DENY: Option<(Admission, Mode)> = Some((Admission::Deny, Mode::Enforce));

/// Parses a fixture and decides it.
fn check(name: &str, facts: &Facts) -> (review::Review, Verdict) {
    let r = review::parse(&fixture(name)).unwrap();
    let req = r.request.clone().expect("a judged kind");
    let v = decide(&req, facts, &GateSettings::default());
    (r, v)
}

#[test]
fn a_pod_with_a_blocked_digest_is_denied_naming_incident_advisory_package_and_chain() {
    let (r, v) = check("pod", &facts(DENY, None));
    assert_eq!(r.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert!(!v.allowed);
    let m = v.message();
    for want in [
        "INC-7",
        "GHSA-test",
        "pkg:pypi/requests@2.19.0",
        "trainer@1.0 -> flask@1.0 -> requests@2.19.0",
        "container ledger",
    ] {
        assert!(m.contains(want), "{want} missing from {m}");
    }
    let out: serde_json::Value = serde_json::from_slice(&review::respond(&r.uid, &v)).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(out["response"]["uid"], r.uid);
    assert_eq!(out["response"]["allowed"], false);
    assert_eq!(out["response"]["status"]["code"], 403);
}

#[test]
fn a_deployment_is_denied_for_its_affected_container_only() {
    let (_, v) = check("deployment-two-containers", &facts(DENY, None));
    assert!(!v.allowed);
    assert_eq!(v.denied.len(), 1, "{v:?}");
    assert_eq!(v.denied[0].container, "trainer");
    assert!(v.message().contains("Deployment payments/api") || v.message().contains("trainer"));
}

#[test]
fn a_cronjob_is_read_through_its_job_template() {
    let r = review::parse(&fixture("cronjob")).unwrap();
    let req = r.request.unwrap();
    let names: Vec<&str> = req.images.iter().map(|i| i.container.as_str()).collect();
    assert_eq!(names, ["train", "init:fetch"]);
    assert_eq!(req.images[0].digest.as_deref(), Some(BLOCKED));
    assert_eq!(req.object, "CronJob ml/nightly");
}

/// The other pod-template kinds the webhook is registered for, each as
/// kube-apiserver sends it (a StatefulSet created by a GitOps controller,
/// a DaemonSet updated by a rollout restart with its old object, a Job
/// created by hand): read down to their containers, denied for the
/// blocked digest only, and answered with the request's own uid.
#[test]
fn statefulsets_daemonsets_and_jobs_are_read_and_denied_for_the_blocked_digest() {
    for (name, uid, object, containers, blocked) in [
        (
            "statefulset",
            "0c9a3f2e-5b1d-4e7a-8c6f-2d4b9e1a7f35",
            "StatefulSet payments/ledger-db",
            &["db"][..],
            "db",
        ),
        (
            "daemonset",
            "9e4d1b7c-2a6f-4c3e-b8d5-7f0a1c9e2b64",
            "DaemonSet observability/log-shipper",
            &["shipper", "init:config"][..],
            "shipper",
        ),
        (
            "job",
            "3f7b2c9e-8d1a-4b6c-a5e4-0c2d9f8b1e73",
            "Job ml/backfill-2026-12",
            &["backfill"][..],
            "backfill",
        ),
    ] {
        let (r, v) = check(name, &facts(DENY, None));
        assert_eq!(r.uid, uid, "{name}");
        assert!(!r.dry_run, "{name}");
        let req = r.request.as_ref().unwrap();
        assert_eq!(req.object, object, "{name}");
        let names: Vec<&str> = req.images.iter().map(|i| i.container.as_str()).collect();
        assert_eq!(names, containers, "{name}");
        assert!(!v.allowed, "{name}: {v:?}");
        assert_eq!(v.denied.len(), 1, "{name}: {v:?}");
        assert_eq!(v.denied[0].container, blocked, "{name}");
        let m = v.message();
        let container = format!("container {blocked} image");
        for want in [
            "INC-7",
            "GHSA-test",
            "pkg:pypi/requests@2.19.0",
            "trainer@1.0 -> flask@1.0 -> requests@2.19.0",
            &container,
        ] {
            assert!(m.contains(want), "{name}: {want} missing from {m}");
        }
        let out: serde_json::Value = serde_json::from_slice(&review::respond(&r.uid, &v)).unwrap();
        assert_eq!(out["response"]["uid"], uid, "{name}");
        assert_eq!(out["response"]["allowed"], false, "{name}");
        assert_eq!(out["response"]["status"]["code"], 403, "{name}");
        // The same objects with clean images only: allowed.
        let clean = String::from_utf8(fixture(name))
            .unwrap()
            .replace(BLOCKED, CLEAN);
        let r = review::parse(clean.as_bytes()).unwrap();
        let v = decide(
            &r.request.unwrap(),
            &facts(DENY, None),
            &GateSettings::default(),
        );
        assert!(v.allowed && v.denied.is_empty(), "{name}: {v:?}");
    }
}

#[test]
fn system_namespaces_are_not_judged() {
    let (_, v) = check("pod-kube-system", &facts(DENY, DENY));
    assert!(v.allowed && v.denied.is_empty());
    assert!(v.skipped.unwrap().contains("kube-system"));
}

#[test]
fn a_tag_without_a_digest_warns_or_denies_per_policy_and_only_while_images_are_blocked() {
    let (_, v) = check("pod-tag-only", &facts(DENY, None));
    assert!(v.allowed);
    assert_eq!(v.warnings.len(), 1);
    assert!(
        v.warnings[0].message.contains("nginx:1.25 names no digest"),
        "{v:?}"
    );
    let req = review::parse(&fixture("pod-tag-only"))
        .unwrap()
        .request
        .unwrap();
    let strict = GateSettings {
        tag_without_digest: Admission::Deny,
        ..GateSettings::default()
    };
    assert!(!decide(&req, &facts(DENY, None), &strict).allowed);
    // Nothing blocks images: nothing to say about a tag.
    let v = decide(&req, &facts(None, None), &strict);
    assert!(v.allowed && v.warnings.is_empty());
}

#[test]
fn break_glass_lets_a_denied_deploy_through_and_says_what_it_overrode() {
    let (r, v) = check("deployment-break-glass", &facts(DENY, None));
    assert!(v.allowed);
    assert_eq!(v.break_glass.as_deref(), Some("SEC-4242"));
    assert_eq!(v.overridden.len(), 1);
    assert_eq!(
        v.overridden_incidents().into_iter().collect::<Vec<_>>(),
        ["INC-7"]
    );
    assert_eq!(r.user, "bob@example.com");
    let out: serde_json::Value = serde_json::from_slice(&review::respond(&r.uid, &v)).unwrap();
    assert_eq!(out["response"]["allowed"], true);
    assert!(
        out["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("break-glass SEC-4242 (audited)")
    );
}

#[test]
fn a_dry_run_is_read_as_such_and_decided_like_a_real_one() {
    let (r, v) = check("pod-dry-run", &facts(DENY, None));
    assert!(r.dry_run);
    // The same verdict; the caller records nothing for a dry run.
    assert!(v.allowed && v.break_glass.is_some());
}

#[test]
fn warn_and_shadow_let_the_deploy_through_with_the_reason() {
    let (_, v) = check("pod", &facts(Some((Admission::Warn, Mode::Enforce)), None));
    assert!(v.allowed && v.denied.is_empty());
    assert!(v.warnings[0].message.contains("GHSA-test"));
    let (_, v) = check("pod", &facts(Some((Admission::Deny, Mode::Shadow)), None));
    assert!(v.allowed);
    assert!(v.warnings[0].message.starts_with("shadow (would deny)"));
}

#[test]
fn a_frozen_namespace_refuses_every_deploy_but_pods_its_controllers_make() {
    let mut req = review::parse(&fixture("pod-tag-only"))
        .unwrap()
        .request
        .unwrap();
    req.namespace = Some("frozen".into());
    let v = decide(&req, &facts(None, DENY), &GateSettings::default());
    assert!(!v.allowed);
    assert_eq!(v.denied[0].action, "freeze_deployments");
    assert!(
        v.message().contains("frozen there by INC-7"),
        "{}",
        v.message()
    );
    req.controller_owned = true;
    assert!(decide(&req, &facts(None, DENY), &GateSettings::default()).allowed);
}

#[test]
fn a_digest_the_scope_saw_running_is_blocked_without_an_sbom() {
    let mut f = facts(DENY, None);
    f.sboms.clear();
    let b = std::sync::Arc::make_mut(&mut f.blockers[0]);
    b.image_digests.insert(BLOCKED.into());
    b.findings
        .push(("GHSA-test".into(), "pkg:deb/debian/libssl3@3.0.11-1".into()));
    let (_, v) = check("pod", &f);
    assert!(!v.allowed);
    assert_eq!(v.denied[0].via, "runtime");
    assert!(v.message().contains("libssl3"), "{}", v.message());
}

#[test]
fn a_clean_digest_is_allowed() {
    let req = Request {
        namespace: Some("payments".into()),
        object: "image".into(),
        images: vec![Image::from_reference("image", CLEAN)],
        ..Request::default()
    };
    let v = decide(&req, &facts(DENY, DENY), &GateSettings::default());
    assert!(
        v.allowed && v.denied.is_empty() && v.warnings.is_empty(),
        "{v:?}"
    );
}

#[test]
fn bad_reviews_are_refused_with_the_reason() {
    let bad = |s: &str| review::parse(s.as_bytes()).unwrap_err().to_string();
    assert!(bad("{").starts_with("not an AdmissionReview"));
    assert!(
        bad(r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#)
            .contains("only admission.k8s.io/v1")
    );
    assert!(
        bad(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#)
            .contains("no request")
    );
    assert!(
        bad(
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#
        )
        .contains("no uid")
    );
    let huge = vec![b' '; review::MAX_REVIEW_BYTES + 1];
    assert!(matches!(
        review::parse(&huge),
        Err(review::ReviewError::TooLarge(_))
    ));
    // A control character in the ticket is refused, not logged.
    let text = String::from_utf8(fixture("deployment-break-glass"))
        .unwrap()
        .replace("SEC-4242", "SEC\\u001b[31m");
    assert_eq!(
        review::parse(text.as_bytes()),
        Err(review::ReviewError::BadTicket)
    );
}

#[test]
fn kinds_without_a_pod_spec_and_deletes_are_allowed_unjudged() {
    let text = String::from_utf8(fixture("pod"))
        .unwrap()
        .replace("\"operation\": \"CREATE\"", "\"operation\": \"DELETE\"");
    let r = review::parse(text.as_bytes()).unwrap();
    assert!(r.request.is_err());
    let text = String::from_utf8(fixture("pod")).unwrap().replacen(
        "\"kind\": \"Pod\"",
        "\"kind\": \"ConfigMap\"",
        1,
    );
    assert!(review::parse(text.as_bytes()).unwrap().request.is_err());
}

/// An incident's log, projected: opened, routed to tier 2, planned with
/// the block action (approval required) and freeze (observe only), then
/// `more`.
fn incident_with(
    more: Vec<crate::response::incident::Event>,
) -> crate::response::incident::Incident {
    use crate::response::{
        ActionKind, Approval,
        incident::{Event, Recorded, Source, State, project},
        plan::{Plan, PlannedAction},
    };
    let action = |id, kind, mode, approval| PlannedAction {
        id,
        kind,
        mode,
        approval,
        revert_after_ms: None,
        allow: Vec::new(),
        targets: Vec::new(),
        excluded: Vec::new(),
        no_executor: Some(crate::response::plan::NO_EXECUTOR.into()),
        endpoint: None,
    };
    let mut plan = Plan {
        hash: String::new(),
        tier: Some(2),
        tier_name: "high or critical".into(),
        exception: None,
        actions: vec![
            action(
                1,
                ActionKind::BlockNewArtifactsWithPackage,
                Mode::Enforce,
                Approval::Required,
            ),
            action(
                2,
                ActionKind::FreezeDeployments,
                Mode::Observe,
                Approval::Auto,
            ),
        ],
    };
    plan.hash = crate::response::plan::hash(&plan);
    let source = Source::Advisory {
        id: "GHSA-test".into(),
        asked_as: String::new(),
        host: None,
    };
    let mut events = vec![
        Event::Opened {
            dedup_key: source.dedup_key(),
            source,
        },
        Event::StateChanged {
            from: State::Detected,
            to: State::Scoped,
            reason: String::new(),
        },
        Event::TierRouted {
            tier: Some(2),
            name: "high or critical".into(),
        },
        Event::Planned { plan: plan.clone() },
    ];
    events.extend(more.into_iter().map(|e| match e {
        Event::Approved { actions, .. } => Event::Approved {
            plan: plan.hash.clone(),
            actions,
        },
        e => e,
    }));
    let recorded: Vec<Recorded> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Recorded {
            seq: i as i64 + 1,
            at_ms: 1_000 + i as i64,
            actor: "alice".into(),
            event,
        })
        .collect();
    project(&recorded).unwrap()
}

#[test]
fn a_gate_action_blocks_once_approved_never_in_observe_and_not_after_a_revert() {
    use crate::response::{Policy, incident::Event};
    let policy = Policy::builtin();
    // Waiting for its approval: nothing blocks; freeze is observe-only.
    assert_eq!(facts::blocker(1, &incident_with(vec![]), &policy), None);
    let approved = Event::Approved {
        plan: String::new(),
        actions: vec![1],
    };
    let b = facts::blocker(1, &incident_with(vec![approved.clone()]), &policy).unwrap();
    assert_eq!(b.block, Some((Admission::Deny, Mode::Enforce)));
    assert_eq!(b.freeze, None);
    assert!(b.advisories.contains("GHSA-test"));
    // The policy in force says how tier 2 answers.
    let mut warn = Policy::builtin();
    warn.tiers[1].actions[0].admission = Admission::Warn;
    let b = facts::blocker(1, &incident_with(vec![approved.clone()]), &warn).unwrap();
    assert_eq!(b.block, Some((Admission::Warn, Mode::Enforce)));
    // Reverted: nothing blocks.
    let reverted = Event::Reverted {
        actions: vec![1],
        reason: "resolved".into(),
    };
    assert_eq!(
        facts::blocker(1, &incident_with(vec![approved, reverted]), &policy),
        None
    );
}
