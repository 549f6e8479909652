//! The deploy gate as the executor of its two action kinds
//! (`freeze_deployments`, `block_new_artifacts_with_package`), recorded on
//! the incident as the agents' reports record an isolation.
//!
//! The gate keeps no state of its own: every decision reads the actions
//! in force from the store (`facts::in_force`), so it denies from the
//! commit of an action's request (or approval) on, and stops at the
//! commit of its revert. What this module adds is the record:
//!
//! - `applied`, at the request's time, once the gate's own facts (loaded
//!   through the same cache the webhook reads) hold the action;
//! - `verified`, once the gate's own decision ([`decide`]), run on the
//!   incident's image digests (a block) and namespaces (a freeze), stops
//!   each of them as the action says: a denial, or a warning for
//!   `admission = "warn"` and shadow mode. The time to containment runs
//!   from the incident's detection to that check. An action with nothing
//!   to check it on (no digest, no Kubernetes namespace in scope) stays
//!   `applied`;
//! - `failed`, when that decision does not stop one of them;
//! - after a revert, the revert seen once the same decisions stop nothing
//!   for the action any more;
//! - `revert_after` run out, and `contained` at the first action applied.
//!
//! It runs only in a collector that serves admission (`--http-listen`):
//! elsewhere the plan says the gate's actions have no executor.
//!
//! **Invariant:** the checks are [`decide`] on facts read from the store
//! (never a registry, the network or anyone's admission request); events
//! are appended through `log::append`, outside any transaction but their
//! own, and only those that still apply to the incident as it stands.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use super::{Facts, Image, Request, decide, facts::Cache};
use crate::{
    fleet::ingest::Ingest,
    response::{
        ActionKind, Admission, GateSettings, Mode, Policy,
        incident::{
            ActionState, Event, Incident, IncidentAction, Observation, Recorded, State,
            act::REVERT_AFTER,
            display_id,
            log::{self, COLLECTOR, LogError},
        },
    },
    store::Store,
};

/// Digests and namespaces one action is checked on, at most: the check
/// is a handful of decisions, not a scan of the fleet.
pub const MAX_CHECKED: usize = 16;

/// What one gate action is checked on: a request per image digest (a
/// block) or per namespace (a freeze).
pub fn subjects(kind: ActionKind, incident: &Incident) -> Vec<Request> {
    let object = "a verification deploy".to_string();
    match kind {
        ActionKind::BlockNewArtifactsWithPackage => incident
            .scope
            .image_digests
            .iter()
            .take(MAX_CHECKED)
            .map(|d| Request {
                namespace: None,
                object: object.clone(),
                images: vec![Image::from_reference("verify", d)],
                ..Request::default()
            })
            .collect(),
        ActionKind::FreezeDeployments => incident
            .scope
            .instances
            .iter()
            .filter_map(|i| i.namespace.clone())
            .collect::<BTreeSet<String>>()
            .into_iter()
            .take(MAX_CHECKED)
            .map(|ns| Request {
                namespace: Some(ns),
                object: object.clone(),
                ..Request::default()
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// What the gate's decision says about one action on its subjects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// Subjects (a digest, a namespace) stopped as the action says.
    pub stopped: Vec<String>,
    /// Subjects it does not stop (or stops otherwise than it says).
    pub missed: Vec<String>,
    /// Subjects the gate does not judge (`gate.exclude_namespaces`).
    pub skipped: Vec<String>,
}

fn subject_name(r: &Request) -> String {
    match (&r.namespace, r.images.first()) {
        (_, Some(i)) => format!("image {}", i.reference),
        (Some(ns), None) => format!("namespace {ns}"),
        (None, None) => "nothing".into(),
    }
}

/// Runs the gate's decision on each subject and says which the action
/// `kind` of incident `id` stops: in `denied` when it answers deny in
/// enforce mode, else in `warnings` (warn, or shadow). Pure.
pub fn check(
    id: i64,
    kind: ActionKind,
    requests: &[Request],
    facts: &Facts,
    settings: &GateSettings,
) -> Check {
    let name = display_id(id);
    let answer = facts
        .blockers
        .iter()
        .find(|b| b.incident == id)
        .and_then(|b| match kind {
            ActionKind::FreezeDeployments => b.freeze,
            _ => b.block,
        });
    let mut out = Check::default();
    for req in requests {
        let subject = subject_name(req);
        let v = decide(req, facts, settings);
        if v.skipped.is_some() {
            out.skipped.push(subject);
            continue;
        }
        let ours = |r: &&super::Reason| r.incident == name && r.action == kind.as_str();
        let stopped = match answer {
            Some((Admission::Deny, Mode::Enforce)) => {
                !v.allowed && v.denied.iter().any(|r| ours(&r))
            }
            Some(_) => v.warnings.iter().any(|r| ours(&r)),
            None => false,
        };
        match stopped {
            true => out.stopped.push(subject),
            false => out.missed.push(subject),
        }
    }
    out
}

/// Whether any decision on `requests` still names the action (denies,
/// warns or was overridden for it): a revert is seen when none does.
pub fn still_stops(
    id: i64,
    kind: ActionKind,
    requests: &[Request],
    facts: &Facts,
    settings: &GateSettings,
) -> bool {
    let name = display_id(id);
    requests.iter().any(|req| {
        let v = decide(req, facts, settings);
        v.denied
            .iter()
            .chain(&v.warnings)
            .chain(&v.overridden)
            .any(|r| r.incident == name && r.action == kind.as_str())
    })
}

/// A gate action this module follows: the gate its executor, not only
/// observed.
fn followed(a: &IncidentAction) -> bool {
    a.planned.by_gate() && a.planned.mode != Mode::Observe
}

/// A revert of a gate action carried out, not yet seen lifted.
fn revert_unseen(a: &IncidentAction) -> bool {
    followed(a)
        && a.state == ActionState::Reverted
        && a.times.requested > 0
        && a.times.revert_verified == 0
}

/// Whether the incident has gate work: an action in force and not yet
/// verified, one with a `revert_after` to watch, or a revert unseen.
pub fn pending(incident: &Incident) -> bool {
    incident.actions.iter().any(|a| {
        followed(a)
            && ((a.in_force() && a.state != ActionState::Verified)
                || (a.in_force() && a.planned.revert_after_ms.is_some())
                || revert_unseen(a))
    })
}

/// The observations the gate's facts and decisions call for, for
/// incident `id` as it stands. Pure.
pub fn observations(
    id: i64,
    incident: &Incident,
    facts: &Facts,
    settings: &GateSettings,
    now_ms: i64,
) -> Vec<Event> {
    let mut out = Vec::new();
    for a in incident.actions.iter().filter(|a| followed(a)) {
        let kind = a.planned.kind;
        let requests = subjects(kind, incident);
        let mut observe = |observation| {
            out.push(Event::Observed {
                action: a.planned.id,
                observation,
            })
        };
        if revert_unseen(a) {
            if !still_stops(id, kind, &requests, facts, settings) {
                observe(Observation::RevertVerified { at_ms: now_ms });
            }
            continue;
        }
        if !a.in_force() || a.state == ActionState::Verified || !incident.state.is_open() {
            continue;
        }
        let held = facts.blockers.iter().any(|b| {
            b.incident == id
                && match kind {
                    ActionKind::FreezeDeployments => b.freeze.is_some(),
                    _ => b.block.is_some(),
                }
        });
        if !held {
            let reason = "the deploy gate's facts do not hold it".to_string();
            if a.state != ActionState::Failed || a.reason != reason {
                observe(Observation::Failed {
                    at_ms: now_ms,
                    reason,
                });
            }
            continue;
        }
        if a.state == ActionState::Requested {
            // Every decision since the request's commit read it.
            observe(Observation::Applied {
                at_ms: a.times.requested,
            });
        }
        let c = check(id, kind, &requests, facts, settings);
        if !c.missed.is_empty() {
            let reason = format!(
                "the deploy gate does not stop {} (checked {} of {})",
                c.missed.join(", "),
                c.missed.len(),
                requests.len()
            );
            if a.state != ActionState::Failed || a.reason != reason {
                observe(Observation::Failed {
                    at_ms: now_ms,
                    reason,
                });
            }
        } else if !c.stopped.is_empty() {
            observe(Observation::Verified {
                at_ms: now_ms,
                time_to_containment_ms: (now_ms - incident.opened_at_ms).max(0),
            });
        } else if a.state == ActionState::Failed {
            // Nothing left to check it on: in force all the same.
            observe(Observation::Applied {
                at_ms: a.times.requested,
            });
        }
    }
    out
}

/// The digests the checks of `incident` ask the store's SBOMs about.
fn digests(incident: &Incident) -> Vec<String> {
    incident
        .scope
        .image_digests
        .iter()
        .take(MAX_CHECKED)
        .cloned()
        .collect()
}

/// What one [`Follower::pass`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Incidents with gate work.
    pub active: usize,
    pub events: usize,
    pub failed: usize,
}

/// Follows the gate's actions across passes, remembering the incidents
/// that had no gate work at a log position, so a steady collector reads
/// their rows and decodes none of them.
#[derive(Debug, Default)]
pub struct Follower {
    idle: Mutex<HashMap<i64, i64>>,
}

impl Follower {
    /// One pass: every open incident, and the newest
    /// [`log::REFRESH_MAX`] of any state (a forced close reverts and
    /// closes at once), with gate work gets its observations, its
    /// `revert_after` reverts and `contained`.
    pub fn pass(
        &self,
        ingest: &Ingest,
        cache: &Cache,
        policy: &Arc<Policy>,
        now_ms: i64,
    ) -> Result<Progress, LogError> {
        let store: &dyn Store = ingest.store().as_ref();
        let mut records = store.incidents(None, true, super::facts::MAX_INCIDENTS)?;
        let mut ids: BTreeSet<i64> = records.iter().map(|r| r.id).collect();
        for rec in store.incidents(None, false, log::REFRESH_MAX)? {
            if ids.insert(rec.id) {
                records.push(rec);
            }
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|id, _| ids.contains(id));
        let mut out = Progress::default();
        for rec in records {
            if idle.get(&rec.id) == Some(&rec.last_seq) {
                continue;
            }
            let incident = log::load(store, &rec)?;
            if !pending(&incident) {
                idle.insert(rec.id, rec.last_seq);
                continue;
            }
            idle.remove(&rec.id);
            out.active += 1;
            let wanted: Vec<String> = digests(&incident);
            let asked: Vec<&str> = wanted.iter().map(String::as_str).collect();
            let facts = cache.load(store, policy, &asked)?;
            let settings = &policy.gate;
            let wrote = log::append(ingest, rec.id, COLLECTOR, now_ms, |cur| {
                Ok(events_for(rec.id, cur, &facts, settings, now_ms))
            });
            match wrote {
                Ok(after) => out.events += (after.last_seq - incident.last_seq).max(0) as usize,
                Err(error) => {
                    tracing::warn!(%error, incident = %display_id(rec.id), "cannot record what the deploy gate does");
                    out.failed += 1;
                }
            }
        }
        Ok(out)
    }
}

/// The events for one incident as it stands: the observations that
/// still apply, `revert_after` reverts of gate actions, and `contained`
/// at the first action in force on its targets.
fn events_for(
    id: i64,
    cur: &Incident,
    facts: &Facts,
    settings: &GateSettings,
    now_ms: i64,
) -> Vec<Event> {
    let mut next = cur.clone();
    let mut out = Vec::new();
    let mut push = |next: &mut Incident, e: Event| {
        let r = Recorded {
            seq: next.last_seq + 1,
            at_ms: now_ms,
            actor: COLLECTOR.into(),
            event: e.clone(),
        };
        if next.apply(&r).is_ok() {
            out.push(e);
        }
    };
    for e in observations(id, cur, facts, settings, now_ms) {
        push(&mut next, e);
    }
    let expired: Vec<u32> = next
        .actions
        .iter()
        .filter(|a| followed(a) && a.revert_at_ms().is_some_and(|at| at <= now_ms))
        .map(|a| a.planned.id)
        .collect();
    if !expired.is_empty() {
        push(
            &mut next,
            Event::Reverted {
                actions: expired,
                reason: REVERT_AFTER.into(),
            },
        );
    }
    let applied = next
        .actions
        .iter()
        .any(|a| a.in_force() && matches!(a.state, ActionState::Applied | ActionState::Verified));
    if applied && matches!(next.state, State::Planned | State::ApprovalPending) {
        let from = next.state;
        push(
            &mut next,
            Event::StateChanged {
                from,
                to: State::Contained,
                reason: "an action is in force: the deploy gate enforces it".into(),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::response::{
        Approval,
        gate::facts,
        incident::{Instance, Scope, Source, project},
        plan::{self, Plan, PlannedAction},
    };

    const BLOCKED: &str = "sha256:9a7e000000000000000000000000000000000000000000000000000000000001";
    const OPENED: i64 = 1_000;

    fn gate_action(
        id: u32,
        kind: ActionKind,
        mode: Mode,
        no_executor: Option<&str>,
    ) -> PlannedAction {
        PlannedAction {
            id,
            kind,
            mode,
            approval: Approval::Required,
            revert_after_ms: None,
            allow: Vec::new(),
            targets: Vec::new(),
            excluded: Vec::new(),
            no_executor: no_executor.map(String::from),
            endpoint: None,
        }
    }

    /// An incident whose scope runs `BLOCKED` in namespaces `shop` and
    /// `kube-system`, planned with a block (1) and a freeze (2) in `mode`,
    /// with `no_executor` (None: the gate executes), then `more`.
    fn incident(mode: Mode, no_executor: Option<&str>, more: Vec<Event>) -> Incident {
        project(&log_of(mode, no_executor, more)).unwrap()
    }

    /// [`incident`]'s log.
    fn log_of(mode: Mode, no_executor: Option<&str>, more: Vec<Event>) -> Vec<Recorded> {
        let mut plan = Plan {
            hash: String::new(),
            tier: Some(2),
            tier_name: "high".into(),
            exception: None,
            actions: vec![
                gate_action(
                    1,
                    ActionKind::BlockNewArtifactsWithPackage,
                    mode,
                    no_executor,
                ),
                gate_action(2, ActionKind::FreezeDeployments, mode, no_executor),
            ],
        };
        plan.hash = plan::hash(&plan);
        let source = Source::Advisory {
            id: "GHSA-test".into(),
            asked_as: String::new(),
            host: None,
        };
        let instance = |ns: &str| Instance {
            host: "alpha".into(),
            host_key: "alpha".into(),
            workload: format!("k8s:c/{ns}/Deployment/app"),
            instance: format!("pod/{ns}/app"),
            cgroup: format!("/kubepods/{ns}"),
            namespace: Some(ns.into()),
            ..Instance::default()
        };
        let scope = Scope {
            image_digests: [BLOCKED.to_string()].into(),
            instances: vec![instance("kube-system"), instance("shop")],
            ..Scope::default()
        };
        let mut events = vec![
            Event::Opened {
                dedup_key: source.dedup_key(),
                source,
            },
            Event::ScopeChanged {
                scope,
                added: Default::default(),
                removed: Default::default(),
            },
            Event::StateChanged {
                from: State::Detected,
                to: State::Scoped,
                reason: String::new(),
            },
            Event::TierRouted {
                tier: Some(2),
                name: "high".into(),
            },
            Event::Planned { plan: plan.clone() },
            Event::StateChanged {
                from: State::Scoped,
                to: State::Planned,
                reason: String::new(),
            },
            Event::StateChanged {
                from: State::Planned,
                to: State::ApprovalPending,
                reason: String::new(),
            },
        ];
        events.extend(more.into_iter().map(|e| match e {
            Event::Approved { actions, .. } => Event::Approved {
                plan: plan.hash.clone(),
                actions,
            },
            e => e,
        }));
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Recorded {
                seq: i as i64 + 1,
                at_ms: OPENED + i as i64,
                actor: "bob".into(),
                event,
            })
            .collect()
    }

    fn approved() -> Event {
        Event::Approved {
            plan: String::new(),
            actions: vec![1, 2],
        }
    }

    /// The gate's facts as a decision reads them, for this one incident.
    fn facts_of(i: &Incident, policy: &Policy) -> Facts {
        Facts {
            blockers: facts::blocker(7, i, policy)
                .map(Arc::new)
                .into_iter()
                .collect(),
            sboms: Default::default(),
        }
    }

    fn apply(i: &Incident, events: &[Event], at_ms: i64) -> Incident {
        let mut next = i.clone();
        for e in events {
            next.apply(&Recorded {
                seq: next.last_seq + 1,
                at_ms,
                actor: COLLECTOR.into(),
                event: e.clone(),
            })
            .unwrap();
        }
        next
    }

    /// Approved: the gate holds both actions from the approval's commit,
    /// so they are `applied` at that time; its own decision denies the
    /// blocked digest and a deploy into `shop` (kube-system is excluded
    /// and not held against it), so they are `verified`, with the time to
    /// containment from detection; the incident is contained. Reverted:
    /// the decisions name them no more, and the revert is seen.
    #[test]
    fn the_gate_applies_verifies_and_lifts_its_actions() {
        let policy = Policy::builtin();
        let settings = &policy.gate;
        let waiting = incident(Mode::Enforce, None, vec![]);
        assert!(
            !pending(&waiting),
            "nothing is in force before the approval"
        );
        assert_eq!(facts::blocker(7, &waiting, &policy), None);

        let i = incident(Mode::Enforce, None, vec![approved()]);
        let requested_at = i.actions[0].times.requested;
        assert_eq!(i.actions[0].state, ActionState::Requested);
        assert!(pending(&i));
        let f = facts_of(&i, &policy);
        let b = &f.blockers[0];
        assert_eq!(b.block, Some((Admission::Deny, Mode::Enforce)));
        assert_eq!(b.freeze, Some((Admission::Deny, Mode::Enforce)));
        let c = check(
            7,
            ActionKind::FreezeDeployments,
            &subjects(ActionKind::FreezeDeployments, &i),
            &f,
            settings,
        );
        assert_eq!(c.stopped, ["namespace shop"]);
        assert_eq!(c.skipped, ["namespace kube-system"]);
        assert!(c.missed.is_empty());

        let now = OPENED + 5_000;
        let events = events_for(7, &i, &f, settings, now);
        let after = apply(&i, &events, now);
        for a in &after.actions {
            assert_eq!(a.state, ActionState::Verified, "{a:?}");
            assert_eq!(
                a.times.applied, requested_at,
                "applied when the gate began to deny"
            );
            assert_eq!(a.times.verified, now);
            assert_eq!(a.time_to_containment_ms, Some(now - OPENED));
        }
        assert_eq!(after.state, State::Contained);
        assert!(
            !pending(&after),
            "verified, no revert_after: nothing left to do"
        );
        assert!(events_for(7, &after, &facts_of(&after, &policy), settings, now + 1).is_empty());

        // Reverted: the gate stops nothing for them; the revert is seen.
        let reverted = apply(
            &after,
            &[Event::Reverted {
                actions: vec![1, 2],
                reason: "resolved".into(),
            }],
            now + 10,
        );
        assert!(pending(&reverted));
        let f = facts_of(&reverted, &policy);
        assert!(f.blockers.is_empty());
        let events = events_for(7, &reverted, &f, settings, now + 20);
        let lifted = apply(&reverted, &events, now + 20);
        assert!(
            lifted
                .actions
                .iter()
                .all(|a| a.times.revert_verified == now + 20)
        );
        assert!(!pending(&lifted));
        // Before the revert, the same decisions named it.
        assert!(still_stops(
            7,
            ActionKind::BlockNewArtifactsWithPackage,
            &subjects(ActionKind::BlockNewArtifactsWithPackage, &i),
            &facts_of(&i, &policy),
            settings
        ));
    }

    /// Shadow mode and `admission = "warn"` stop by a warning, and are
    /// verified by it; a decision that does not stop a subject fails the
    /// action, naming it.
    #[test]
    fn warnings_verify_shadow_and_warn_and_a_miss_fails() {
        let mut warn = Policy::builtin();
        for a in &mut warn.tiers[1].actions {
            a.admission = Admission::Warn;
        }
        for (policy, mode) in [(Policy::builtin(), Mode::Shadow), (warn, Mode::Enforce)] {
            let i = incident(mode, None, vec![approved()]);
            let f = facts_of(&i, &policy);
            let events = events_for(7, &i, &f, &policy.gate, OPENED + 50);
            let after = apply(&i, &events, OPENED + 50);
            assert!(
                after
                    .actions
                    .iter()
                    .all(|a| a.state == ActionState::Verified),
                "{mode:?}: {:?}",
                after.actions
            );
        }
        // The gate's facts without the block (a decision that does not
        // deny the digest): failed, naming the image.
        let policy = Policy::builtin();
        let i = incident(Mode::Enforce, None, vec![approved()]);
        let mut f = facts_of(&i, &policy);
        Arc::make_mut(&mut f.blockers[0]).image_digests.clear();
        let events = events_for(7, &i, &f, &policy.gate, OPENED + 60);
        let after = apply(&i, &events, OPENED + 60);
        assert_eq!(after.actions[0].state, ActionState::Failed);
        assert!(
            after.actions[0]
                .reason
                .contains(&format!("does not stop image {BLOCKED}")),
            "{}",
            after.actions[0].reason
        );
        assert_eq!(after.actions[1].state, ActionState::Verified);
    }

    /// Without an admission listener the plan names no executor: approved,
    /// the actions stay `planned` and the gate denies nothing for them.
    /// Plans recorded before the gate was an executor ("no executor
    /// configured") keep being enforced as they were, and are not
    /// followed.
    #[test]
    fn no_listener_no_executor_and_older_plans_keep_their_block() {
        let policy = Policy::builtin();
        let i = incident(Mode::Enforce, Some(plan::NO_ADMISSION), vec![approved()]);
        assert!(i.actions.iter().all(|a| a.state == ActionState::Planned));
        assert_eq!(i.actions[0].reason, plan::NO_ADMISSION);
        assert_eq!(facts::blocker(7, &i, &policy), None);
        assert!(!pending(&i));
        let older = incident(Mode::Enforce, Some(plan::NO_EXECUTOR), vec![approved()]);
        assert!(
            older
                .actions
                .iter()
                .all(|a| a.state == ActionState::Planned)
        );
        let b = facts::blocker(7, &older, &policy).unwrap();
        assert!(b.block.is_some() && b.freeze.is_some());
        assert!(!pending(&older));
    }

    /// `revert_after` lifts a gate action that long after it applied.
    #[test]
    fn revert_after_lifts_a_gate_action() {
        let policy = Policy::builtin();
        let mut i = incident(Mode::Enforce, None, vec![approved()]);
        i.actions[0].planned.revert_after_ms = Some(60_000);
        let f = facts_of(&i, &policy);
        let now = OPENED + 100;
        let after = apply(&i, &events_for(7, &i, &f, &policy.gate, now), now);
        assert!(pending(&after), "a TTL is watched");
        let due = after.actions[0].revert_at_ms().unwrap();
        assert!(events_for(7, &after, &f, &policy.gate, due - 1).is_empty());
        let events = events_for(7, &after, &f, &policy.gate, due);
        assert_eq!(
            events,
            [Event::Reverted {
                actions: vec![1],
                reason: REVERT_AFTER.into()
            }]
        );
    }

    /// The report counts a gate action's verified time as the tier's time
    /// to containment, as it counts an isolation's first block.
    #[test]
    fn time_to_containment_counts_the_gates_verification() {
        use crate::response::verify::metrics;
        let policy = Policy::builtin();
        let mut log = log_of(Mode::Enforce, None, vec![approved()]);
        let i = project(&log).unwrap();
        let now = OPENED + 7_000;
        for e in events_for(7, &i, &facts_of(&i, &policy), &policy.gate, now) {
            log.push(Recorded {
                seq: log.len() as i64 + 1,
                at_ms: now,
                actor: COLLECTOR.into(),
                event: e,
            });
        }
        let times = metrics::from_log(7, &log);
        assert_eq!(
            times.time_to_containment_ms,
            [(2, now - OPENED), (2, now - OPENED)],
            "the block and the freeze, tier 2"
        );
        assert_eq!(times.applied.get(&2), Some(&2));
        let report = metrics::report(&[times]);
        assert!(
            metrics::render(&report, &Default::default()).contains("tier=\"2\""),
            "the containment histogram has tier 2"
        );
    }
}
