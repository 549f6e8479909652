use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::response::{
    Guards,
    incident::{Finding, Instance},
};

fn finding(severity: &str) -> Finding {
    Finding {
        advisory: "PYSEC-2023-228".into(),
        severity: severity.into(),
        score_x10: None,
        ecosystem: "pypi".into(),
        purl: "pkg:pypi/pip@23.0.1".into(),
        evidence: "opened".into(),
    }
}

fn instance(host: &str, name: &str, scope: Option<&str>, severity: &str) -> Instance {
    Instance {
        host: host.into(),
        host_key: format!("id-{host}"),
        workload: format!("k8s:c/ns/Deployment/{name}/{name}"),
        instance: format!("pod/{name}-{host}/c1"),
        cgroup: format!("/kubepods.slice/{name}-{host}.scope"),
        namespace: Some("ns".into()),
        data_scope: scope.map(Into::into),
        processes: 3,
        pids: BTreeSet::from([100, 101]),
        findings: BTreeSet::from([finding(severity)]),
        ..Instance::default()
    }
}

fn scope(instances: Vec<Instance>) -> Scope {
    Scope {
        instances,
        ..Scope::default()
    }
}

fn isolate(plan: &Plan) -> &PlannedAction {
    plan.actions
        .iter()
        .find(|a| a.kind == ActionKind::IsolateAffectedWorkloads)
        .expect("an isolation")
}

#[test]
fn the_most_severe_instance_names_the_tier_and_only_its_tier_is_targeted() {
    let s = scope(vec![
        instance("a", "trainer", Some("sensitive"), "critical"),
        instance("a", "api", None, "critical"),
    ]);
    let plan = make(
        &Policy::builtin(),
        &s,
        &Protected::default(),
        &Executors::default(),
        1,
        0,
    );
    assert_eq!(plan.tier, Some(1));
    let kinds: Vec<_> = plan.actions.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "freeze_deployments",
            "isolate_affected_workloads",
            "rotate_scoped_tokens",
            "open_incident_sev1"
        ]
    );
    let iso = isolate(&plan);
    assert_eq!(iso.targets.len(), 1, "{plan:#?}");
    assert!(iso.targets[0].workload.contains("trainer"));
    assert_eq!(iso.targets[0].pids, [100, 101]);
    assert!(iso.on_hosts());
    // The rest have no executor here, and say why: the freeze's gate
    // needs an admission listener, the others an endpoint.
    for a in plan
        .actions
        .iter()
        .filter(|a| a.kind != ActionKind::IsolateAffectedWorkloads)
    {
        let why = match a.kind {
            ActionKind::FreezeDeployments => NO_ADMISSION,
            _ => NO_EXECUTOR,
        };
        assert_eq!(a.no_executor.as_deref(), Some(why), "{a:?}");
        assert!(!a.has_executor() && a.executor().is_none(), "{a:?}");
    }
    assert_eq!(iso.executor().as_deref(), Some("agents"));
    // Numbered from where the incident is; the hash does not care.
    let later = make(
        &Policy::builtin(),
        &s,
        &Protected::default(),
        &Executors::default(),
        9,
        0,
    );
    assert_eq!(later.actions[0].id, 9);
    assert_eq!(later.hash, plan.hash);
    assert_eq!(plan.hash.len(), 64);
}

#[test]
fn the_hash_follows_targets_and_settings_not_pids() {
    let base = scope(vec![instance(
        "a",
        "trainer",
        Some("sensitive"),
        "critical",
    )]);
    let p = Policy::builtin();
    let h = make(
        &p,
        &base,
        &Protected::default(),
        &Executors::default(),
        1,
        0,
    )
    .hash;
    let mut more_pids = base.clone();
    more_pids.instances[0].pids.insert(999);
    assert_eq!(
        make(
            &p,
            &more_pids,
            &Protected::default(),
            &Executors::default(),
            1,
            0
        )
        .hash,
        h
    );
    let mut moved = base.clone();
    moved.instances[0].cgroup = "/kubepods.slice/elsewhere.scope".into();
    assert_ne!(
        make(
            &p,
            &moved,
            &Protected::default(),
            &Executors::default(),
            1,
            0
        )
        .hash,
        h
    );
    let mut grown = base.clone();
    grown
        .instances
        .push(instance("b", "trainer", Some("sensitive"), "critical"));
    assert_ne!(
        make(
            &p,
            &grown,
            &Protected::default(),
            &Executors::default(),
            1,
            0
        )
        .hash,
        h
    );
    // A lower severity is another tier: another plan.
    let high = scope(vec![instance("a", "trainer", Some("sensitive"), "high")]);
    let plan = make(
        &p,
        &high,
        &Protected::default(),
        &Executors::default(),
        1,
        0,
    );
    assert_eq!(plan.tier, Some(2));
    assert_ne!(plan.hash, h);
    assert!(plan.actions.iter().all(|a| !a.on_hosts()));
}

#[test]
fn guards_exclude_with_their_reason() {
    let mut agent = instance("a", "agent", Some("sensitive"), "critical");
    agent.instance = "unit/patchgap-agent.service".into();
    let mut init = instance("a", "init", Some("sensitive"), "critical");
    init.pids.insert(1);
    let mut kube = instance("a", "dns", Some("sensitive"), "critical");
    kube.namespace = Some("kube-system".into());
    let mut unknown = instance("a", "odd", Some("sensitive"), "critical");
    unknown.cgroup.clear();
    let mut here = instance("a", "collector", Some("sensitive"), "critical");
    here.cgroup = "/system.slice".into();
    let trainer = instance("a", "trainer", Some("sensitive"), "critical");
    let s = scope(vec![agent, init, kube, unknown, here, trainer]);
    let protected = Protected {
        agent: BTreeSet::from([(
            "id-a".to_string(),
            "unit/patchgap-agent.service".to_string(),
        )]),
        collector: BTreeSet::new(),
        // The collector runs in /system.slice/patchgap-collector.service:
        // acting on /system.slice would reach it.
        collector_cgroup: Some((
            "id-a".into(),
            "/system.slice/patchgap-collector.service".into(),
        )),
    };
    let plan = make(
        &Policy::builtin(),
        &s,
        &protected,
        &Executors::default(),
        1,
        0,
    );
    let iso = isolate(&plan);
    assert_eq!(iso.targets.len(), 1, "{iso:#?}");
    assert!(iso.targets[0].workload.contains("trainer"));
    let why: BTreeMap<&str, &str> = iso
        .excluded
        .iter()
        .map(|e| (e.workload.rsplit('/').next().unwrap(), e.guard.as_str()))
        .collect();
    assert!(why["agent"].contains("agent"), "{why:?}");
    assert!(why["init"].contains("PID 1"), "{why:?}");
    assert!(why["dns"].contains("kube-system"), "{why:?}");
    assert!(why["odd"].contains("cgroup is unknown"), "{why:?}");
    assert!(why["collector"].contains("collector"), "{why:?}");
}

#[test]
fn replica_share_and_exceptions_leave_instances_out() {
    let mut policy = Policy::builtin();
    for a in &mut policy.tiers[0].actions {
        a.max_replica_share = Some(0.5);
    }
    let s = scope(
        ["a", "b", "c", "d"]
            .iter()
            .map(|h| instance(h, "trainer", Some("sensitive"), "critical"))
            .collect(),
    );
    let plan = make(
        &policy,
        &s,
        &Protected::default(),
        &Executors::default(),
        1,
        0,
    );
    let iso = isolate(&plan);
    assert_eq!((iso.targets.len(), iso.excluded.len()), (2, 2), "{iso:#?}");
    assert!(iso.excluded[0].guard.starts_with("max_replica_share 0.5"));

    policy.exceptions.push(crate::response::Exception {
        advisory: Some("pysec-2023-228".into()),
        purl: None,
        workload: None,
        ticket: "SEC-42".into(),
        expires: "2027-01-01T00:00:00Z".into(),
        expires_ms: 1_800_000_000_000,
    });
    let plan = make(
        &policy,
        &s,
        &Protected::default(),
        &Executors::default(),
        1,
        0,
    );
    assert_eq!(plan.exception.as_deref(), Some("SEC-42"));
    assert!(plan.actions.is_empty());
    // Expired, it exempts nothing.
    let plan = make(
        &policy,
        &s,
        &Protected::default(),
        &Executors::default(),
        1,
        1_900_000_000_000,
    );
    assert_eq!(plan.exception, None);
    assert!(!plan.actions.is_empty());
    let _ = Guards::default();
}

#[test]
fn nothing_routed_is_an_empty_plan() {
    let mut policy = Policy::builtin();
    policy.tiers.truncate(1);
    let s = scope(vec![instance("a", "api", None, "low")]);
    let plan = make(
        &policy,
        &s,
        &Protected::default(),
        &Executors::default(),
        1,
        0,
    );
    assert_eq!((plan.tier, plan.actions.len()), (None, 0));
    assert_eq!(plan.hash, hash(&Plan::default()));
}

#[test]
fn the_agent_and_collector_are_known_by_their_executables() {
    assert!(Protected::is_agent_exe(b"/usr/bin/patchgap-agent"));
    assert!(Protected::is_agent_exe(
        b"/usr/bin/patchgap-agent (deleted)"
    ));
    assert!(Protected::is_collector_exe(b"/opt/x/patchgap-collector"));
    assert!(Protected::is_agent_exe(b"/usr/local/bin/patchgap"));
    assert!(!Protected::is_agent_exe(b"/usr/bin/patchgap-agentx"));
    assert!(!Protected::is_collector_exe(b"/usr/bin/python3"));
}

/// With the admission listener on, the deploy gate is the executor of
/// its two kinds, and only of those: the plan names it, the hash says
/// so (a plan made without the listener is another plan), and the
/// address is not hashed (a collector moved to another port keeps its
/// approvals).
#[test]
fn the_gate_executes_freezes_and_blocks_when_admission_is_served() {
    let tier1 = scope(vec![instance(
        "a",
        "trainer",
        Some("sensitive"),
        "critical",
    )]);
    let tier2 = scope(vec![instance("a", "trainer", Some("sensitive"), "high")]);
    let p = Policy::builtin();
    let none = Executors::default();
    let served = Executors {
        admission: Some("127.0.0.1:7374".into()),
    };
    let moved = Executors {
        admission: Some("10.0.0.1:8443".into()),
    };
    for (s, kind) in [
        (&tier1, ActionKind::FreezeDeployments),
        (&tier2, ActionKind::BlockNewArtifactsWithPackage),
    ] {
        let off = make(&p, s, &Protected::default(), &none, 1, 0);
        let on = make(&p, s, &Protected::default(), &served, 1, 0);
        let gate = |plan: &Plan| {
            plan.actions
                .iter()
                .find(|a| a.kind == kind)
                .cloned()
                .unwrap()
        };
        assert_eq!(gate(&off).no_executor.as_deref(), Some(NO_ADMISSION));
        assert!(!gate(&off).by_gate() && !gate(&off).has_executor());
        let g = gate(&on);
        assert_eq!(g.no_executor, None, "{g:?}");
        assert!(g.by_gate() && g.has_executor() && !g.on_hosts() && !g.via_endpoint());
        assert_eq!(g.executor().as_deref(), Some(DEPLOY_GATE));
        assert!(
            g.targets.is_empty(),
            "the gate acts on admissions, not on hosts"
        );
        // Only the gate's kinds changed.
        for (a, b) in off.actions.iter().zip(&on.actions) {
            if a.kind != kind {
                assert_eq!(a, b);
            }
        }
        assert_ne!(off.hash, on.hash);
        assert_eq!(
            make(&p, s, &Protected::default(), &moved, 1, 0).hash,
            on.hash
        );
    }
}

/// The hash of a plan whose actions have no executor, pinned: plans
/// recorded before the deploy gate became an executor said "no executor
/// configured" for its kinds, and such a plan's hash must not move, or
/// every approval of it would be refused after an upgrade.
#[test]
fn a_plan_recorded_before_the_gate_keeps_its_hash() {
    let mut plan = make(
        &Policy::builtin(),
        &scope(vec![instance("a", "trainer", Some("sensitive"), "high")]),
        &Protected::default(),
        &Executors::default(),
        1,
        0,
    );
    for a in &mut plan.actions {
        a.no_executor = Some(NO_EXECUTOR.into());
    }
    let before = hash(&plan);
    assert_eq!(
        before,
        "f7755e216b065040046efb3ef9e14b8471abc2b040c388191ec6d177158b2e6b"
    );
    assert!(plan.actions.iter().all(|a| !a.by_gate()));
}
