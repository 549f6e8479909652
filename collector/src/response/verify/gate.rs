//! The gate: from the incident as its log stands and one run's result,
//! the events that follow. Verification starts when containment took
//! effect; K successful runs in a row move the incident to `recovering`;
//! containment is lifted one action per pass, isolation first, each
//! revert seen lifted by the agents before the next; with nothing left in
//! force the incident is `closed`. A failed or inconclusive run resets
//! the streak and pauses the lifting. A closed incident whose affected
//! version runs again reopens.

use super::{Run, Settings, Verdict, check::CheckResult};
use crate::response::{
    ActionKind, Mode,
    incident::{ActionState, Event, Incident, IncidentAction, IncidentError, Recorded, State},
};

/// The revert reason the gate lifts containment with.
pub const RESOLVED: &str = "resolved";

/// The states in which the checks run and the gate decides.
pub fn verifying(state: State) -> bool {
    matches!(
        state,
        State::Contained | State::Verifying | State::Recovering
    )
}

/// A plan with nothing to carry out on hosts or at the deploy gate
/// (tier 3's patch window, a ticket; or every action in `observe` mode)
/// and nothing waiting for an approval: there is no containment to wait
/// for, so verification starts from `planned` (the table's `planned →
/// verifying` edge).
pub fn nothing_to_contain(incident: &Incident) -> bool {
    incident.state == State::Planned
        && incident.plan.is_some()
        && !incident.actions.iter().any(|a| {
            contains(a) && a.planned.mode != Mode::Observe && a.state != ActionState::Reverted
        })
}

/// Containment: carried out by the agents on hosts, or by the deploy
/// gate at admission (`response::gate::execute` records it).
fn contains(a: &IncidentAction) -> bool {
    a.planned.on_hosts() || a.planned.by_gate()
}

/// Whether a pass checks the incident now.
pub fn checkable(incident: &Incident) -> bool {
    verifying(incident.state) || nothing_to_contain(incident)
}

/// Appends `e` to the simulated incident and the output, so the next
/// decision sees it.
fn push(next: &mut Incident, out: &mut Vec<Event>, e: Event) -> Result<(), IncidentError> {
    next.apply(&Recorded {
        seq: next.last_seq + 1,
        at_ms: next.updated_at_ms,
        actor: String::new(),
        event: e.clone(),
    })?;
    out.push(e);
    Ok(())
}

/// The order containment is lifted in: isolation first, then freezes
/// and blocks, then the rest; within a kind the last planned first.
fn lift_rank(a: &IncidentAction) -> (u8, std::cmp::Reverse<u32>) {
    let kind = match a.planned.kind {
        ActionKind::IsolateAffectedWorkloads => 0,
        ActionKind::FreezeCgroup => 1,
        ActionKind::FreezeDeployments => 2,
        ActionKind::BlockNewArtifactsWithPackage => 3,
        _ => 4,
    };
    (kind, std::cmp::Reverse(a.planned.id))
}

/// A revert the agents (or the deploy gate's own decision) have not yet
/// shown lifted.
fn revert_unseen(a: &IncidentAction) -> bool {
    a.state == ActionState::Reverted
        && contains(a)
        && a.planned.mode != Mode::Observe
        && a.times.requested > 0
        && a.times.revert_verified == 0
}

/// What the gate appends after `run` for an incident as it stands (the
/// `checked` event included): nothing for an incident not being
/// verified.
pub fn after_run(
    incident: &Incident,
    run: &Run,
    settings: &Settings,
) -> Result<Vec<Event>, IncidentError> {
    let mut next = incident.clone();
    let mut out = Vec::new();
    if nothing_to_contain(&next) {
        let e = next.transition(
            State::Verifying,
            "nothing to contain on hosts: verification started",
        )?;
        push(&mut next, &mut out, e)?;
    }
    if !verifying(next.state) {
        return Ok(out);
    }
    if next.state == State::Contained {
        let e = next.transition(
            State::Verifying,
            "containment in force: verification started",
        )?;
        push(&mut next, &mut out, e)?;
    }
    push(&mut next, &mut out, Event::Checked { run: run.clone() })?;
    let streak = next.verification.as_ref().map_or(0, |v| v.streak);
    if run.verdict != Verdict::Successful {
        // Keeps the incident open; a recovery under way pauses.
        return Ok(out);
    }
    if next.state == State::Verifying && streak >= settings.streak.max(1) {
        let reason = format!("{streak} successful verification run(s) in a row");
        let e = next.transition(State::Recovering, &reason)?;
        push(&mut next, &mut out, e)?;
    }
    if next.state == State::Recovering {
        lift_step(&mut next, &mut out)?;
    }
    Ok(out)
}

/// One step of recovery: wait for a revert to be seen, else lift the
/// next action in force, else close.
fn lift_step(next: &mut Incident, out: &mut Vec<Event>) -> Result<(), IncidentError> {
    if next.actions.iter().any(revert_unseen) {
        return Ok(());
    }
    // A kill cannot be undone (nothing to lift); everything else is.
    let lift = next
        .actions
        .iter()
        .filter(|a| a.in_force() && a.planned.kind.irreversible().is_none())
        .min_by_key(|a| lift_rank(a))
        .map(|a| a.planned.id);
    let e = match lift {
        Some(id) => Event::Reverted {
            actions: vec![id],
            reason: RESOLVED.into(),
        },
        None => next.transition(
            State::Closed,
            "converged: containment lifted and each revert verified",
        )?,
    };
    push(next, out, e)
}

/// The reopen of a closed incident whose affected version runs again in
/// its scope: the package check (`package`, its result now) or the digest
/// check (`digest`) fails. Both, because they see different things: an old
/// image started again may carry the affected version only installed
/// (not loaded, so not counted by the package check under the default
/// levels), and the digest check that kept the incident open before it
/// closed must reopen it too. Incidents a responder closed by force stay
/// closed: what ran then still runs, and that was the responder's
/// decision.
pub fn regression(
    incident: &Incident,
    package: &CheckResult,
    digest: &CheckResult,
) -> Option<Event> {
    let failed: Vec<&CheckResult> = [package, digest]
        .into_iter()
        .filter(|c| c.verdict == Verdict::Failed)
        .collect();
    if incident.state != State::Closed || incident.forced_close.is_some() || failed.is_empty() {
        return None;
    }
    let blockers: Vec<&String> = failed.iter().flat_map(|c| &c.blockers).collect();
    let first = blockers.first().map(|b| b.to_string()).unwrap_or_default();
    let more = blockers.len().saturating_sub(1);
    let reason = if more > 0 {
        format!("reopened: an affected version runs again: {first} (and {more} more)")
    } else {
        format!("reopened: an affected version runs again: {first}")
    };
    incident.transition(State::Scoped, &reason).ok()
}

/// A forced close: every action in force lifted (the responder closes
/// the incident, its containment must not outlive it), then
/// `force_closed` with the reason.
pub fn force_close(incident: &Incident, reason: &str) -> Result<Vec<Event>, IncidentError> {
    if !incident.state.is_open() {
        return Err(IncidentError::IllegalTransition {
            from: incident.state,
            to: State::Closed,
        });
    }
    let mut out = Vec::new();
    let lifted: Vec<u32> = incident
        .actions
        .iter()
        .filter(|a| a.in_force())
        .map(|a| a.planned.id)
        .collect();
    if !lifted.is_empty() {
        out.push(Event::Reverted {
            actions: lifted,
            reason: RESOLVED.into(),
        });
    }
    out.push(Event::ForceClosed {
        reason: reason.to_string(),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::{
        Approval,
        incident::{ActionTimes, Source, project},
        plan::{PlannedAction, Target},
        verify::check::CheckResult,
    };

    fn run(verdict: Verdict) -> Run {
        Run {
            verdict,
            checks: vec![CheckResult {
                check: "package".into(),
                verdict,
                query: "q".into(),
                evidence: vec![],
                blockers: if verdict == Verdict::Successful {
                    vec![]
                } else {
                    vec!["pid 7 on alpha runs pkg:pypi/pip@23.0.1 (mapped)".into()]
                },
            }],
        }
    }

    fn action(id: u32, kind: ActionKind) -> IncidentAction {
        IncidentAction {
            planned: PlannedAction {
                id,
                kind,
                mode: Mode::Enforce,
                approval: Approval::Auto,
                revert_after_ms: None,
                allow: vec![],
                targets: vec![Target {
                    host: "alpha".into(),
                    host_key: "alpha".into(),
                    ..Target::default()
                }],
                excluded: vec![],
                no_executor: None,
                endpoint: None,
            },
            plan: "h".into(),
            state: ActionState::Verified,
            reason: String::new(),
            approved_by: "bob".into(),
            times: ActionTimes {
                planned: 1,
                requested: 2,
                applied: 3,
                verified: 4,
                ..ActionTimes::default()
            },
            time_to_containment_ms: Some(3),
        }
    }

    /// An incident in `state` with these actions.
    fn incident(state: State, actions: Vec<IncidentAction>) -> Incident {
        let source = Source::Advisory {
            id: "PYSEC-2023-228".into(),
            asked_as: String::new(),
            host: None,
        };
        let mut i = project(&[Recorded {
            seq: 1,
            at_ms: 1,
            actor: "alice".into(),
            event: Event::Opened {
                dedup_key: source.dedup_key(),
                source,
            },
        }])
        .unwrap();
        i.state = state;
        i.next_action = actions.len() as u32 + 1;
        i.actions = actions;
        i
    }

    /// Applies what the gate decided, as the log would.
    fn apply(i: &mut Incident, events: &[Event]) {
        for e in events {
            let r = Recorded {
                seq: i.last_seq + 1,
                at_ms: i.updated_at_ms + 1,
                actor: "collector".into(),
                event: e.clone(),
            };
            i.apply(&r).unwrap();
        }
    }

    fn lifted(events: &[Event]) -> Vec<u32> {
        events
            .iter()
            .flat_map(|e| match e {
                Event::Reverted { actions, reason } => {
                    assert_eq!(reason, RESOLVED);
                    actions.clone()
                }
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn k_green_runs_lift_isolation_first_each_revert_seen_before_the_next() {
        let s = Settings {
            streak: 2,
            ..Settings::default()
        };
        let mut i = incident(
            State::Contained,
            vec![
                action(1, ActionKind::FreezeCgroup),
                action(2, ActionKind::IsolateAffectedWorkloads),
                action(3, ActionKind::KillProcesses),
            ],
        );
        let e = after_run(&i, &run(Verdict::Successful), &s).unwrap();
        assert_eq!(e.len(), 2, "verifying, then the run: {e:?}");
        apply(&mut i, &e);
        assert_eq!(i.state, State::Verifying);
        // A failed run in between resets the streak.
        let e = after_run(&i, &run(Verdict::Failed), &s).unwrap();
        apply(&mut i, &e);
        assert_eq!(i.verification.as_ref().unwrap().streak, 0);
        let e = after_run(&i, &run(Verdict::Successful), &s).unwrap();
        apply(&mut i, &e);
        assert_eq!((i.state, lifted(&e)), (State::Verifying, vec![]));
        // The second in a row: recovering, and isolation lifted first.
        let e = after_run(&i, &run(Verdict::Successful), &s).unwrap();
        apply(&mut i, &e);
        assert_eq!((i.state, lifted(&e)), (State::Recovering, vec![2]));
        // Not yet seen lifted: nothing more.
        let e = after_run(&i, &run(Verdict::Successful), &s).unwrap();
        assert_eq!(lifted(&e), Vec::<u32>::new());
        apply(&mut i, &e);
        i.actions[1].times.revert_verified = 99;
        // Then the freeze; a failed run pauses the lifting.
        let e = after_run(&i, &run(Verdict::Inconclusive), &s).unwrap();
        assert_eq!(lifted(&e), Vec::<u32>::new());
        apply(&mut i, &e);
        let e = after_run(&i, &run(Verdict::Successful), &s).unwrap();
        assert_eq!(lifted(&e), vec![1]);
        apply(&mut i, &e);
        i.actions[0].times.revert_verified = 100;
        // The kill cannot be lifted: closed.
        let e = after_run(&i, &run(Verdict::Successful), &s).unwrap();
        apply(&mut i, &e);
        assert_eq!(i.state, State::Closed);
        assert!(matches!(
            e.last(),
            Some(Event::StateChanged {
                from: State::Recovering,
                to: State::Closed,
                ..
            })
        ));
        // A closed incident is no longer checked.
        assert!(
            after_run(&i, &run(Verdict::Successful), &s)
                .unwrap()
                .is_empty()
        );
        // `checked` on an incident not being verified is refused.
        let r = Recorded {
            seq: i.last_seq + 1,
            at_ms: 1,
            actor: "x".into(),
            event: Event::Checked {
                run: run(Verdict::Successful),
            },
        };
        assert!(matches!(
            i.clone().apply(&r),
            Err(IncidentError::NotVerifying { .. })
        ));
    }

    /// The deploy gate's actions are lifted after isolation, freeze then
    /// block, each only once the gate's own decision showed the previous
    /// revert lifted; a plan made without an admission listener has no
    /// gate action to lift.
    #[test]
    fn gate_actions_are_lifted_after_isolation_each_revert_seen_first() {
        let s = Settings {
            streak: 1,
            ..Settings::default()
        };
        let mut i = incident(
            State::Contained,
            vec![
                action(1, ActionKind::BlockNewArtifactsWithPackage),
                action(2, ActionKind::FreezeDeployments),
                action(3, ActionKind::IsolateAffectedWorkloads),
            ],
        );
        i.actions[0].planned.targets.clear();
        i.actions[1].planned.targets.clear();
        assert!(i.actions.iter().all(|a| a.in_force()));
        let mut order = Vec::new();
        for seen in 0..3 {
            let e = after_run(&i, &run(Verdict::Successful), &s).unwrap();
            order.extend(lifted(&e));
            apply(&mut i, &e);
            // Until its revert is seen, nothing else is lifted.
            let e = after_run(&i, &run(Verdict::Successful), &s).unwrap();
            assert!(lifted(&e).is_empty(), "{e:?}");
            apply(&mut i, &e);
            let last = *order.last().unwrap();
            let a = i.actions.iter_mut().find(|a| a.planned.id == last).unwrap();
            a.times.revert_verified = 100 + seen;
        }
        assert_eq!(order, [3, 2, 1]);
        let e = after_run(&i, &run(Verdict::Successful), &s).unwrap();
        apply(&mut i, &e);
        assert_eq!(i.state, State::Closed);

        // Without the gate as executor, a freeze is not containment.
        let mut no_gate = action(1, ActionKind::FreezeDeployments);
        no_gate.planned.no_executor = Some(crate::response::plan::NO_ADMISSION.into());
        no_gate.state = ActionState::Planned;
        assert!(!no_gate.in_force());
    }

    #[test]
    fn a_plan_with_nothing_to_contain_is_verified_from_planned() {
        let s = Settings {
            streak: 1,
            ..Settings::default()
        };
        let mut i = incident(State::Planned, vec![]);
        assert!(!checkable(&i), "no plan recorded yet");
        i.plan = Some(crate::response::incident::RecordedPlan {
            plan: crate::response::incident::Plan {
                hash: "h".into(),
                tier: Some(3),
                tier_name: "patch-window".into(),
                exception: None,
                actions: vec![],
            },
            at_ms: 1,
            by: "collector".into(),
        });
        assert!(checkable(&i));
        let e = after_run(&i, &run(Verdict::Successful), &s).unwrap();
        apply(&mut i, &e);
        assert_eq!(i.state, State::Closed, "K = 1, nothing to lift");
        // An isolation still planned (waiting for its approval) is
        // something to contain: not verified yet.
        let mut waiting = incident(
            State::Planned,
            vec![action(1, ActionKind::IsolateAffectedWorkloads)],
        );
        waiting.actions[0].state = ActionState::Planned;
        waiting.plan = i.plan.clone();
        assert!(!checkable(&waiting));
        assert!(
            after_run(&waiting, &run(Verdict::Successful), &s)
                .unwrap()
                .is_empty()
        );
    }

    /// A digest check's result: failed naming `digest`, or successful.
    fn digest_check(failed_on: Option<&str>) -> CheckResult {
        CheckResult {
            check: "digest".into(),
            verdict: if failed_on.is_some() {
                Verdict::Failed
            } else {
                Verdict::Successful
            },
            query: "q".into(),
            evidence: vec![],
            blockers: failed_on
                .map(|d| {
                    vec![format!(
                        "digest {d} in namespace ml carries pkg:pypi/pip@23.0.1"
                    )]
                })
                .into_iter()
                .flatten()
                .collect(),
        }
    }

    #[test]
    fn only_a_closed_with_evidence_incident_reopens_and_only_on_a_failure() {
        let mut closed = incident(State::Closed, vec![]);
        let failed = &run(Verdict::Failed).checks[0];
        let ok = &run(Verdict::Successful).checks[0];
        let no_digest = &digest_check(None);
        match regression(&closed, failed, no_digest) {
            Some(Event::StateChanged { from, to, reason }) => {
                assert_eq!((from, to), (State::Closed, State::Scoped));
                assert!(reason.contains("pid 7 on alpha"), "{reason}");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(regression(&closed, ok, no_digest), None);
        closed.forced_close = Some("rebuilt".into());
        assert_eq!(regression(&closed, failed, no_digest), None);
        let open = incident(State::Verifying, vec![]);
        assert_eq!(regression(&open, failed, no_digest), None);
    }

    /// An old image started again whose affected package is installed,
    /// not loaded: the package check (loaded only) passes, the digest
    /// check fails, and the incident reopens naming the digest. With both
    /// failing, the reason names the process first and counts the rest.
    /// A forced close stays closed either way.
    #[test]
    fn a_digest_failure_alone_reopens_a_closed_incident() {
        const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let mut closed = incident(State::Closed, vec![]);
        let package_ok = &run(Verdict::Successful).checks[0];
        let package_failed = &run(Verdict::Failed).checks[0];
        let old_image = &digest_check(Some(OLD));
        match regression(&closed, package_ok, old_image) {
            Some(Event::StateChanged { from, to, reason }) => {
                assert_eq!((from, to), (State::Closed, State::Scoped));
                assert_eq!(
                    reason,
                    format!(
                        "reopened: an affected version runs again: digest {OLD} in namespace ml carries pkg:pypi/pip@23.0.1"
                    )
                );
            }
            e => panic!("{e:?}"),
        }
        match regression(&closed, package_failed, old_image) {
            Some(Event::StateChanged { reason, .. }) => {
                assert!(
                    reason.starts_with("reopened: an affected version runs again: pid 7 on alpha"),
                    "{reason}"
                );
                assert!(reason.ends_with("(and 1 more)"), "{reason}");
            }
            e => panic!("{e:?}"),
        }
        // The event applies: the incident is open again, counted.
        let e = regression(&closed, package_ok, old_image).unwrap();
        let mut reopened = closed.clone();
        apply(&mut reopened, &[e]);
        assert_eq!((reopened.state, reopened.reopened), (State::Scoped, 1));
        closed.forced_close = Some("rebuilt".into());
        assert_eq!(regression(&closed, package_ok, old_image), None);
    }

    #[test]
    fn a_forced_close_lifts_what_is_in_force_then_closes() {
        let i = incident(
            State::Verifying,
            vec![
                action(1, ActionKind::IsolateAffectedWorkloads),
                action(2, ActionKind::FreezeCgroup),
            ],
        );
        let e = force_close(&i, "rebuilt").unwrap();
        assert_eq!(lifted(&e), vec![1, 2]);
        let mut after = i.clone();
        apply(&mut after, &e);
        assert_eq!(after.state, State::Closed);
        assert_eq!(after.forced_close.as_deref(), Some("rebuilt"));
        assert!(force_close(&after, "again").is_err());
    }
}
