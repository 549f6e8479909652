//! A reopened incident is contained again: its old plan, however equal
//! its hash, no longer holds (its containment was lifted when it closed),
//! so the next plan is recorded afresh; `auto` actions are requested
//! again, `required` ones wait for a new approval, and the incident says
//! so.

use std::sync::Arc;

use super::*;
use crate::{
    response::{
        ActionKind, Approval, Policy,
        incident::{Source, log},
        plan::Protected,
    },
    store::{
        conformance::{T0, deb, exe, hello, mapped, msg, process, snapshot},
        sqlite::SqliteStore,
    },
};

/// One tier for everything: isolate (`auto`) and freeze the cgroup
/// (`required`), both enforced.
fn policy() -> Policy {
    let mut p = Policy::builtin();
    p.tiers.truncate(1);
    p.tiers[0].rules = vec![Default::default()];
    p.tiers[0]
        .actions
        .retain(|a| a.kind == ActionKind::IsolateAffectedWorkloads);
    p.tiers[0].actions[0].approval = Approval::Auto;
    let mut freeze = p.tiers[0].actions[0].clone();
    freeze.kind = ActionKind::FreezeCgroup;
    freeze.approval = Approval::Required;
    p.tiers[0].actions.push(freeze);
    p
}

#[test]
fn a_reopened_incident_gets_a_fresh_plan_auto_actions_run_again_required_ones_wait() {
    let ingest = Ingest::new(Arc::new(SqliteStore::in_memory().unwrap()));
    let session = ingest.hello(&hello("s1"), T0).unwrap();
    let p = process(
        10,
        vec![
            exe("/usr/bin/app", 100, Some(deb("app", "app", "1.0-1"))),
            mapped(
                "/usr/lib/libfoo.so.1",
                300,
                Some(deb("libfoo1", "foo", "1.5-1")),
            ),
        ],
    );
    ingest
        .apply(&session, &msg(1, snapshot("snap-1", vec![p], vec![])), T0)
        .unwrap();
    let source = Source::Package {
        package: "libfoo1".into(),
        name: "libfoo1".into(),
        ecosystem: None,
        group: None,
        range: Some("<2".into()),
    };
    let id = log::open(&ingest, source, "alice", &[], T0 + 1).unwrap().id;
    let policy = policy();
    let protected = Protected::default();
    let planning = Planning {
        policy: &policy,
        rules: &[],
        protected: &protected,
        executors: &Executors::default(),
    };
    let first = plan(&ingest, id, COLLECTOR, &planning, T0 + 2).unwrap();
    assert!(first.recorded);
    let hash = first.plan.hash.clone();
    let kinds = |i: &Incident| -> Vec<(u32, ActionKind, ActionState)> {
        i.actions
            .iter()
            .map(|a| (a.planned.id, a.planned.kind, a.state))
            .collect()
    };
    assert_eq!(
        kinds(&first.incident),
        [
            (
                1,
                ActionKind::IsolateAffectedWorkloads,
                ActionState::Requested
            ),
            (2, ActionKind::FreezeCgroup, ActionState::Planned),
        ]
    );
    assert_eq!(first.incident.state, State::ApprovalPending);

    // Contained, converged, lifted and closed; then the old version runs
    // again and the incident reopens (as the verify pass does), well
    // within the plan's lifetime.
    log::append(&ingest, id, COLLECTOR, T0 + 10, |cur| {
        Ok(vec![
            Event::Reverted {
                actions: vec![1, 2],
                reason: "resolved".into(),
            },
            Event::StateChanged {
                from: cur.state,
                to: State::Contained,
                reason: "test".into(),
            },
            Event::StateChanged {
                from: State::Contained,
                to: State::Verifying,
                reason: "test".into(),
            },
            Event::StateChanged {
                from: State::Verifying,
                to: State::Recovering,
                reason: "test".into(),
            },
            Event::StateChanged {
                from: State::Recovering,
                to: State::Closed,
                reason: "converged".into(),
            },
        ])
    })
    .unwrap();
    let reopened = log::append(&ingest, id, COLLECTOR, T0 + 20, |cur| {
        Ok(vec![cur.transition(
            State::Scoped,
            "reopened: an affected version runs again: pid 10",
        )?])
    })
    .unwrap();
    assert!(reopened.plan_stale);
    assert_eq!(reopened.reopened, 1);

    // The refresher plans it: the same hash, recorded afresh.
    let again = plan(&ingest, id, COLLECTOR, &planning, T0 + 21).unwrap();
    assert!(again.recorded, "the lifted plan does not hold");
    assert_eq!(again.plan.hash, hash, "same scope, same policy");
    let i = &again.incident;
    assert!(!i.plan_stale);
    assert_eq!(
        kinds(i),
        [
            (
                1,
                ActionKind::IsolateAffectedWorkloads,
                ActionState::Reverted
            ),
            (2, ActionKind::FreezeCgroup, ActionState::Reverted),
            (
                3,
                ActionKind::IsolateAffectedWorkloads,
                ActionState::Requested
            ),
            (4, ActionKind::FreezeCgroup, ActionState::Planned),
        ],
        "auto runs again; required waits"
    );
    assert_eq!(
        i.actions[3].approved_by, "",
        "the old approval does not carry over"
    );
    // The incident says so: approval pending, and why it was planned.
    assert_eq!(i.state, State::ApprovalPending);
    let shown = log::show(ingest.store().as_ref(), id, 1000).unwrap();
    let reasons: Vec<String> = shown
        .events
        .iter()
        .filter_map(|r| match &r.event {
            Event::StateChanged { to, reason, .. } if r.at_ms == T0 + 21 => {
                Some(format!("{to}: {reason}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            format!(
                "planned: plan {}: reopened: the earlier plan's containment was lifted when it closed, so it is planned and contained again",
                &hash[..12]
            ),
            "approval_pending: some action needs an approval of this plan".to_string(),
        ]
    );
    // The isolation is in the agents' set again.
    let hub = crate::response::contain::Hub::new(1);
    assert!(crate::response::contain::rebuild(ingest.store().as_ref(), &hub).unwrap());
    let set = hub.desired();
    assert_eq!(set.by_host["machine-1"].len(), 1);
    assert!(
        set.by_host["machine-1"][0]
            .id
            .starts_with(&format!("inc{id}-a3-")),
        "{:?}",
        set.by_host
    );
    // Planned again at once: now it holds.
    assert!(
        !plan(&ingest, id, COLLECTOR, &planning, T0 + 22)
            .unwrap()
            .recorded
    );
}
