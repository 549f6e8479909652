//! What responders and the collector do to an incident after it opens:
//! plan (the policy's tier and actions for the scope as it is now),
//! approve exactly one plan, revert actions, and record what the agents
//! report about the actions in force. Each is a set of events appended
//! through [`log::append`], checked against the projection first.
//!
//! Executors are not called here: an action in force is part of the
//! desired containment set (`response::contain`), which the collector
//! pushes to the agents after these appends have committed.

use super::{
    ActionState, Event, Incident, IncidentError, Plan, State, display_id,
    log::{self, COLLECTOR, LogError},
    scope::{self, ScopeError},
};
use crate::{
    fleet::{ingest::Ingest, scope::Rule},
    response::{
        Approval, Policy,
        contain::{self, Observed},
        plan::{self, Executors, Protected},
    },
};

/// Why a revert is asked for. The names are an interface (`patchgap
/// incident revert --reason`).
pub const REVERT_REASONS: [&str; 3] = ["false-positive", "not-affected", "resolved"];

/// The reason the collector gives when an action's `revert_after` ran out.
pub const REVERT_AFTER: &str = "revert_after";

/// What a plan is made from.
pub struct Planning<'a> {
    pub policy: &'a Policy,
    pub rules: &'a [Rule],
    pub protected: &'a Protected,
    /// What carries out actions beyond the agents (the deploy gate).
    pub executors: &'a Executors,
}

/// A plan call's answer: the incident, its plan, and whether this call
/// recorded it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub incident: Incident,
    pub plan: Plan,
    pub recorded: bool,
}

/// Refusals a responder can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActError {
    #[error(
        "the plan changed since {asked} was shown: the plan now is {now}. Nothing was approved; review it with `patchgap incident plan` and approve that hash"
    )]
    PlanChanged { asked: String, now: String },
    #[error("plan {hash} expired at {expired_at_ms} ms: plan again")]
    PlanExpired { hash: String, expired_at_ms: i64 },
    #[error("{0}")]
    Refused(String),
}

/// The incident's scope now (recomputed; the stored one for sources that
/// have no query).
fn scope_now(
    ingest: &Ingest,
    incident: &Incident,
    rules: &[Rule],
) -> Result<super::Scope, LogError> {
    match scope::compute(ingest.store().as_ref(), &incident.source, rules) {
        Ok(s) => Ok(s),
        Err(
            ScopeError::NoQuery(_) | ScopeError::UnknownAdvisory(_) | ScopeError::UnknownAlert(_),
        ) => Ok(incident.scope.clone()),
        Err(e) => Err(e.into()),
    }
}

fn current(ingest: &Ingest, id: i64) -> Result<Incident, LogError> {
    let store = ingest.store().as_ref();
    let rec = store
        .incident(id)?
        .ok_or_else(|| LogError::NotFound(display_id(id)))?;
    log::load(store, &rec)
}

fn refused(why: impl Into<String>) -> LogError {
    LogError::Act(ActError::Refused(why.into()))
}

/// The events that record `fresh` as the incident's plan, from where it
/// stands: back to `scoped` when an earlier plan no longer holds, then
/// `planned`, the automatic actions requested, and `approval_pending`
/// when some action waits for an approval.
fn record_plan_events(
    cur: &Incident,
    fresh: &Plan,
    reason: &str,
) -> Result<Vec<Event>, IncidentError> {
    let mut events = Vec::new();
    let mut state = cur.state;
    if matches!(state, State::Planned | State::ApprovalPending) {
        events.push(Event::StateChanged {
            from: state,
            to: State::Scoped,
            reason: reason.to_string(),
        });
        state = State::Scoped;
    }
    events.push(Event::Planned {
        plan: fresh.clone(),
    });
    let auto: Vec<u32> = fresh
        .actions
        .iter()
        .filter(|a| {
            a.approval == Approval::Auto
                && a.has_executor()
                && a.mode != super::super::Mode::Observe
        })
        .map(|a| a.id)
        .collect();
    if !auto.is_empty() {
        events.push(Event::Requested { actions: auto });
    }
    if state == State::Scoped {
        events.push(Event::StateChanged {
            from: State::Scoped,
            to: State::Planned,
            reason: if cur.plan_stale {
                format!("plan {}: {reason}", short(&fresh.hash))
            } else {
                format!("plan {}", short(&fresh.hash))
            },
        });
        if fresh.needs_approval() {
            events.push(Event::StateChanged {
                from: State::Planned,
                to: State::ApprovalPending,
                reason: "some action needs an approval of this plan".into(),
            });
        }
    } else if state != State::Contained {
        return Err(IncidentError::IllegalTransition {
            from: cur.state,
            to: State::Planned,
        });
    }
    Ok(events)
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The plan for incident `id` now. It is recorded (for `actor`, the
/// requester an approval is checked against) when it differs from the
/// recorded one, when that one expired, or when a person asks for the
/// plan the collector made by itself. The scope is recomputed first and
/// its change recorded with it.
pub fn plan(
    ingest: &Ingest,
    id: i64,
    actor: &str,
    p: &Planning<'_>,
    now_ms: i64,
) -> Result<Planned, LogError> {
    let before = current(ingest, id)?;
    if !before.state.is_open() {
        return Err(refused(format!(
            "{} is {}: there is nothing to plan",
            display_id(id),
            before.state
        )));
    }
    let scope = scope_now(ingest, &before, p.rules)?;
    let mut made = None;
    let incident = log::append(ingest, id, actor, now_ms, |cur| {
        let fresh = plan::make(
            p.policy,
            &scope,
            p.protected,
            p.executors,
            cur.next_action,
            now_ms,
        );
        made = Some(fresh.clone());
        let mut events: Vec<Event> = scope.change_from(&cur.scope).into_iter().collect();
        if cur.tier != fresh.tier || cur.tier_name != fresh.tier_name {
            events.push(Event::TierRouted {
                tier: fresh.tier,
                name: fresh.tier_name.clone(),
            });
        }
        // A reopened incident's plan was lifted with its containment:
        // never held, whatever its hash.
        let holds = !cur.plan_stale
            && cur.plan.as_ref().is_some_and(|r| {
                r.plan.hash == fresh.hash
                    && now_ms < r.expires_at_ms()
                    && (r.by == actor || actor == COLLECTOR || r.by != COLLECTOR)
            });
        let plannable = matches!(
            cur.state,
            State::Scoped | State::Planned | State::ApprovalPending | State::Contained
        );
        if fresh.tier.is_some() && !holds && plannable {
            let why = match &cur.plan {
                Some(_) if cur.plan_stale => {
                    "reopened: the earlier plan's containment was lifted when it closed, so it is planned and contained again".to_string()
                }
                Some(r) if r.plan.hash != fresh.hash => {
                    format!(
                        "plan {} no longer holds: the scope or the policy changed",
                        short(&r.plan.hash)
                    )
                }
                Some(_) => "the plan is made again".to_string(),
                None => String::new(),
            };
            events.extend(record_plan_events(cur, &fresh, &why)?);
        }
        Ok(events)
    })?;
    let fresh = made.expect("append calls make at least once");
    let recorded = incident
        .plan
        .as_ref()
        .is_some_and(|r| r.plan.hash == fresh.hash && r.at_ms == now_ms && r.by == actor);
    // The plan as recorded (its action numbers), or as made.
    let plan = match &incident.plan {
        Some(r) if r.plan.hash == fresh.hash => r.plan.clone(),
        _ => fresh,
    };
    Ok(Planned {
        incident,
        plan,
        recorded,
    })
}

/// Approves plan `hash` of incident `id` for `actor`: refused when the
/// plan now differs (the scope or the policy changed), when the recorded
/// plan expired, or, for a tier 1 plan, when the approver is the
/// requester (or the collector made the plan: a person must ask for it).
/// The approved actions with an executor are requested.
pub fn approve(
    ingest: &Ingest,
    id: i64,
    actor: &str,
    hash: &str,
    p: &Planning<'_>,
    now_ms: i64,
) -> Result<(Incident, Vec<u32>), LogError> {
    let hash = hash.trim().to_ascii_lowercase();
    let before = current(ingest, id)?;
    let scope = scope_now(ingest, &before, p.rules)?;
    let mut requested = Vec::new();
    let incident = log::append(ingest, id, actor, now_ms, |cur| {
        let fresh = plan::make(
            p.policy,
            &scope,
            p.protected,
            p.executors,
            cur.next_action,
            now_ms,
        );
        let Some(recorded) = &cur.plan else {
            return Err(IncidentError::NoPlan);
        };
        if fresh.hash != hash || recorded.plan.hash != hash {
            return Err(IncidentError::PlanChanged {
                asked: hash.clone(),
                now: fresh.hash,
            });
        }
        if now_ms >= recorded.expires_at_ms() {
            return Err(IncidentError::PlanExpired {
                hash: hash.clone(),
                expired_at_ms: recorded.expires_at_ms(),
            });
        }
        let waiting: Vec<u32> = cur
            .actions
            .iter()
            .filter(|a| {
                a.plan == hash
                    && a.state == ActionState::Planned
                    && a.approved_by.is_empty()
                    && a.planned.approval == Approval::Required
            })
            .map(|a| a.planned.id)
            .collect();
        if waiting.is_empty() {
            return Err(IncidentError::NothingToApprove);
        }
        if recorded.plan.tier == Some(1) && (recorded.by == actor || recorded.by == COLLECTOR) {
            return Err(IncidentError::SameApprover {
                requester: recorded.by.clone(),
            });
        }
        requested = cur
            .actions
            .iter()
            .filter(|a| waiting.contains(&a.planned.id) && a.planned.has_executor())
            .filter(|a| a.planned.mode != super::super::Mode::Observe)
            .map(|a| a.planned.id)
            .collect();
        let mut events = vec![Event::Approved {
            plan: hash.clone(),
            actions: waiting,
        }];
        if cur.state == State::ApprovalPending {
            events.push(Event::StateChanged {
                from: State::ApprovalPending,
                to: State::Planned,
                reason: format!("plan {} approved by {actor}", short(&hash)),
            });
        }
        Ok(events)
    })
    .map_err(|e| match e {
        LogError::Refused(IncidentError::PlanChanged { asked, now }) => {
            LogError::Act(ActError::PlanChanged { asked, now })
        }
        LogError::Refused(IncidentError::PlanExpired {
            hash,
            expired_at_ms,
        }) => LogError::Act(ActError::PlanExpired {
            hash,
            expired_at_ms,
        }),
        LogError::Refused(IncidentError::NoPlan) => {
            refused("no plan is recorded: run `patchgap incident plan` first")
        }
        LogError::Refused(IncidentError::NothingToApprove) => {
            refused("nothing in this plan waits for an approval")
        }
        LogError::Refused(IncidentError::SameApprover { requester }) => refused(if requester == COLLECTOR {
            "a tier 1 plan is approved by a second person: the plan was made by the collector, so someone asks for it first (`patchgap incident plan`) and another person approves it".to_string()
        } else {
            format!("a tier 1 plan is approved by a second person: {requester} asked for this plan and cannot approve it (with tokens off, every caller is `anonymous`: send a token that names you)")
        }),
        other => other,
    })?;
    Ok((incident, requested))
}

/// Lifts action `action` (None: every action requested and not yet
/// reverted) for `reason`. A false positive also ends the incident.
pub fn revert(
    ingest: &Ingest,
    id: i64,
    actor: &str,
    action: Option<u32>,
    reason: &str,
    now_ms: i64,
) -> Result<(Incident, Vec<u32>), LogError> {
    if !REVERT_REASONS.contains(&reason) && reason != REVERT_AFTER {
        return Err(refused(format!(
            "{reason:?} is not a reason to revert: one of {}",
            REVERT_REASONS.join(", ")
        )));
    }
    let mut lifted = Vec::new();
    let incident = log::append(ingest, id, actor, now_ms, |cur| {
        let ids: Vec<u32> = match action {
            Some(n) => match cur.actions.iter().find(|a| a.planned.id == n) {
                None => return Err(IncidentError::NoSuchAction(n)),
                Some(a) if a.state == ActionState::Reverted => {
                    return Err(IncidentError::NoSuchAction(n));
                }
                Some(a) => vec![a.planned.id],
            },
            None => cur
                .actions
                .iter()
                .filter(|a| {
                    matches!(
                        a.state,
                        ActionState::Requested
                            | ActionState::Applied
                            | ActionState::Verified
                            | ActionState::Failed
                    ) || (a.state == ActionState::Planned && !a.approved_by.is_empty())
                })
                .map(|a| a.planned.id)
                .collect(),
        };
        if ids.is_empty() {
            return Err(IncidentError::NothingToRevert);
        }
        lifted = ids.clone();
        let mut events = vec![Event::Reverted {
            actions: ids,
            reason: reason.to_string(),
        }];
        if reason == "false-positive" && cur.state.is_open() && action.is_none() {
            events.push(cur.transition(State::FalsePositive, "reverted: a false positive")?);
        }
        Ok(events)
    })
    .map_err(|e| match e {
        LogError::Refused(IncidentError::NoSuchAction(n)) => refused(format!(
            "{} has no action {n} in force (see `patchgap incident show`)",
            display_id(id)
        )),
        LogError::Refused(IncidentError::NothingToRevert) => refused(format!(
            "{} has no action in force to revert",
            display_id(id)
        )),
        other => other,
    })?;
    Ok((incident, lifted))
}

/// What [`observe`] did in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Incidents with an action in force or a revert not yet seen.
    pub active: usize,
    /// Events appended.
    pub events: usize,
    pub failed: usize,
}

/// Records what the agents' reports show about every action in force
/// (applied, verified with its time to containment, failed) or reverted
/// (the revert seen), and reverts the actions whose `revert_after` ran
/// out. Looks at every open incident and the newest
/// [`log::REFRESH_MAX`] of all.
pub fn observe(ingest: &Ingest, observed: &Observed, now_ms: i64) -> Result<Progress, LogError> {
    let mut out = Progress::default();
    for (id, incident) in contain::incidents_to_watch(ingest.store().as_ref())? {
        let events = contain::observations(id, &incident, observed, now_ms);
        let expired: Vec<u32> = incident
            .actions
            .iter()
            .filter(|a| a.revert_at_ms().is_some_and(|at| at <= now_ms))
            .map(|a| a.planned.id)
            .collect();
        if contain::watching(&incident) {
            out.active += 1;
        }
        if events.is_empty() && expired.is_empty() {
            continue;
        }
        let wrote = log::append(ingest, id, COLLECTOR, now_ms, |cur| {
            // Only what still applies to the incident as it is now.
            let mut next = cur.clone();
            let mut out = Vec::new();
            for e in contain::observations(id, cur, observed, now_ms) {
                let r = super::Recorded {
                    seq: next.last_seq + 1,
                    at_ms: now_ms,
                    actor: COLLECTOR.into(),
                    event: e.clone(),
                };
                if next.apply(&r).is_ok() {
                    out.push(e);
                }
            }
            let expired: Vec<u32> = next
                .actions
                .iter()
                .filter(|a| a.revert_at_ms().is_some_and(|at| at <= now_ms))
                .map(|a| a.planned.id)
                .collect();
            if !expired.is_empty() {
                out.push(Event::Reverted {
                    actions: expired,
                    reason: REVERT_AFTER.into(),
                });
            }
            // The first action in force makes the incident contained.
            let applied = next.actions.iter().any(|a| {
                a.in_force() && matches!(a.state, ActionState::Applied | ActionState::Verified)
            });
            // (An approval still pending for other actions stays pending
            // on them: `approve` looks at the actions, not the state.)
            if applied && matches!(next.state, State::Planned | State::ApprovalPending) {
                out.push(Event::StateChanged {
                    from: next.state,
                    to: State::Contained,
                    reason: "an action is in force on its targets".into(),
                });
            }
            Ok(out)
        });
        match wrote {
            Ok(after) => out.events += (after.last_seq - incident.last_seq).max(0) as usize,
            Err(error) => {
                tracing::warn!(%error, incident = %display_id(id), "cannot record what the agents report");
                out.failed += 1;
            }
        }
    }
    Ok(out)
}

/// The actor of incidents the policy opens by itself.
pub const POLICY: &str = "policy";

/// Advisories one pass of [`auto_open`] looks at, at most.
pub const AUTO_OPEN_MAX: usize = 1_000;

/// Opens an incident (as [`POLICY`]) for every advisory with exposed
/// processes that a rule saying `open_incident = "auto"` routes, unless an
/// incident was ever opened under its key (the newest
/// [`log::REFRESH_MAX`] incidents are checked): a responder who closed
/// one decided, and the policy does not open it again. Costs nothing when
/// no rule says so.
pub fn auto_open(
    ingest: &Ingest,
    policy: &Policy,
    rules: &[Rule],
    now_ms: i64,
) -> Result<usize, LogError> {
    use crate::response::OpenIncident;
    let wanted = policy
        .tiers
        .iter()
        .flat_map(|t| &t.rules)
        .any(|r| r.open_incident == OpenIncident::Auto);
    if !wanted {
        return Ok(0);
    }
    let store = ingest.store().as_ref();
    let known: std::collections::HashSet<String> = store
        .incidents(None, false, log::REFRESH_MAX)?
        .into_iter()
        .map(|r| r.dedup_key)
        .collect();
    let mut advisories: Vec<String> = store
        .verdicts(None, false)?
        .into_iter()
        .filter(|v| v.status == "affected")
        .map(|v| v.advisory_id)
        .collect();
    advisories.dedup();
    let mut opened = 0;
    for id in advisories.into_iter().take(AUTO_OPEN_MAX) {
        let source = super::Source::Advisory {
            id,
            asked_as: String::new(),
            host: None,
        };
        if known.contains(&source.dedup_key()) {
            continue;
        }
        let scope = match scope::compute(store, &source, rules) {
            Ok(s) => s,
            Err(ScopeError::UnknownAdvisory(_) | ScopeError::UnknownAlert(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        if scope.processes == 0 || !plan::opens_by_itself(policy, &scope, now_ms) {
            continue;
        }
        if log::open(ingest, source, POLICY, rules, now_ms)?.new {
            opened += 1;
        }
    }
    Ok(opened)
}

#[cfg(test)]
mod reopen_tests;
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use patchgap_proto::v1;

    use super::*;
    use crate::{
        response::{
            ActionKind, Mode, Policy,
            contain::{Hub, containment_id, desired, rebuild},
            incident::{Observation, Recorded, Source, log},
            plan::Protected,
        },
        store::{
            conformance::{T0, deb, exe, hello, mapped, msg, process, snapshot},
            sqlite::SqliteStore,
        },
    };

    /// One tier for everything: isolate, enforce, approval required, lifted
    /// after a minute.
    fn policy() -> Policy {
        let mut p = Policy::builtin();
        p.tiers.truncate(1);
        p.tiers[0].rules = vec![Default::default()];
        p.tiers[0]
            .actions
            .retain(|a| a.kind == ActionKind::IsolateAffectedWorkloads);
        p.tiers[0].actions[0].revert_after_ms = Some(60_000);
        p
    }

    fn status(
        id: &str,
        applied_ms: i64,
        first_block_ms: i64,
        error: &str,
    ) -> v1::ContainmentStatus {
        v1::ContainmentStatus {
            id: id.into(),
            applied: error.is_empty(),
            error: error.into(),
            blocked_connects: u64::from(first_block_ms > 0),
            first_block_ms,
            applied_ms,
            ..Default::default()
        }
    }

    /// A host running one process that maps libfoo1 1.5-1.
    fn libfoo_running() -> Ingest {
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
        ingest
    }

    /// Plan, the two-person rule, a stale hash, approval, the set the
    /// agents get, what their reports make of the action, `revert_after`,
    /// the revert seen; and a responder's revert as a false positive.
    #[test]
    fn a_plan_is_approved_carried_out_observed_and_lifted() {
        let ingest = libfoo_running();
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

        // The collector plans it by itself: routed, waiting for approval.
        let by_collector = plan(&ingest, id, COLLECTOR, &planning, T0 + 2).unwrap();
        assert!(by_collector.recorded);
        assert_eq!(by_collector.incident.state, State::ApprovalPending);
        assert_eq!(by_collector.incident.tier, Some(1));
        let hash = by_collector.plan.hash.clone();
        let action = &by_collector.plan.actions[0];
        assert_eq!(action.targets[0].cgroup, "/system.slice/test.service");
        // A tier 1 plan the collector made needs a person to ask for it.
        let err = approve(&ingest, id, "bob", &hash, &planning, T0 + 3).unwrap_err();
        assert!(err.to_string().contains("second person"), "{err}");
        // The same plan asked again by the collector is not recorded twice.
        assert!(
            !plan(&ingest, id, COLLECTOR, &planning, T0 + 3)
                .unwrap()
                .recorded
        );
        // Alice asks: recorded for her, numbered on.
        let asked = plan(&ingest, id, "alice", &planning, T0 + 4).unwrap();
        assert!(asked.recorded);
        assert_eq!(asked.plan.hash, hash);
        assert_eq!(
            asked.plan.actions[0].id, 2,
            "the collector's plan was superseded"
        );
        assert_eq!(asked.incident.actions.len(), 1);
        let err = approve(&ingest, id, "alice", &hash, &planning, T0 + 5).unwrap_err();
        assert!(
            err.to_string().contains("alice asked for this plan"),
            "{err}"
        );
        let stale = "0".repeat(64);
        let err = approve(&ingest, id, "bob", &stale, &planning, T0 + 5).unwrap_err();
        assert!(
            matches!(err, LogError::Act(ActError::PlanChanged { ref now, .. }) if *now == hash),
            "{err}"
        );
        // Expired an hour later.
        let late = T0 + 4 + crate::response::plan::PLAN_TTL_MS;
        let err = approve(&ingest, id, "bob", &hash, &planning, late).unwrap_err();
        assert!(
            matches!(err, LogError::Act(ActError::PlanExpired { .. })),
            "{err}"
        );

        let (approved, requested) = approve(&ingest, id, "bob", &hash, &planning, T0 + 6).unwrap();
        assert_eq!(requested, [2]);
        assert_eq!(approved.state, State::Planned);
        assert_eq!(approved.actions[0].state, ActionState::Requested);
        assert_eq!(approved.actions[0].approved_by, "bob");
        // Approving again: nothing waits.
        assert!(approve(&ingest, id, "bob", &hash, &planning, T0 + 7).is_err());

        // The set the agents get.
        let hub = Hub::new(100);
        assert!(rebuild(ingest.store().as_ref(), &hub).unwrap());
        let set = hub.desired();
        assert_eq!(set.generation, 101);
        let items = &set.by_host["machine-1"];
        let cid = containment_id(id, 2, &approved.actions[0].planned.targets[0]);
        assert_eq!(items.len(), 1);
        assert_eq!(
            (
                items[0].id.as_str(),
                items[0].cgroup.as_str(),
                items[0].mode
            ),
            (
                cid.as_str(),
                "/system.slice/test.service",
                v1::ContainmentMode::Enforce as i32
            )
        );
        assert!(
            !rebuild(ingest.store().as_ref(), &hub).unwrap(),
            "unchanged"
        );

        // Reports: applied, then the first block (time to containment).
        hub.report("machine-1", 101, vec![status(&cid, T0 + 8, 0, "")], T0 + 9);
        let p = observe(&ingest, &hub.observed(), T0 + 9).unwrap();
        assert_eq!((p.active, p.events), (1, 2), "applied, and contained");
        let i = log::replay(ingest.store().as_ref(), id).unwrap();
        assert_eq!(i.state, State::Contained);
        assert_eq!(
            (i.actions[0].state, i.actions[0].times.applied),
            (ActionState::Applied, T0 + 8)
        );
        hub.report(
            "machine-1",
            101,
            vec![status(&cid, T0 + 8, T0 + 50, "")],
            T0 + 60,
        );
        observe(&ingest, &hub.observed(), T0 + 60).unwrap();
        let i = log::replay(ingest.store().as_ref(), id).unwrap();
        assert_eq!(i.actions[0].state, ActionState::Verified);
        assert_eq!(i.actions[0].time_to_containment_ms, Some(49));
        assert_eq!(i.actions[0].revert_at_ms(), Some(T0 + 8 + 60_000));
        // Nothing new: nothing written.
        assert_eq!(
            observe(&ingest, &hub.observed(), T0 + 61).unwrap().events,
            0
        );

        // revert_after runs out: lifted by the collector, then seen gone.
        let p = observe(&ingest, &hub.observed(), T0 + 8 + 60_000).unwrap();
        assert_eq!(p.events, 1);
        let i = log::replay(ingest.store().as_ref(), id).unwrap();
        assert_eq!(
            (i.actions[0].state, i.actions[0].reason.as_str()),
            (ActionState::Reverted, REVERT_AFTER)
        );
        assert!(rebuild(ingest.store().as_ref(), &hub).unwrap());
        assert!(hub.desired().by_host.is_empty());
        // A report of the old set does not verify the revert; one of the
        // new set without it does.
        hub.report(
            "machine-1",
            101,
            vec![status(&cid, T0 + 8, T0 + 50, "")],
            T0 + 60_100,
        );
        assert_eq!(
            observe(&ingest, &hub.observed(), T0 + 60_100)
                .unwrap()
                .events,
            0
        );
        hub.report("machine-1", 102, vec![], T0 + 60_200);
        assert_eq!(
            observe(&ingest, &hub.observed(), T0 + 60_200)
                .unwrap()
                .events,
            1
        );
        let i = log::replay(ingest.store().as_ref(), id).unwrap();
        assert_eq!(i.actions[0].times.revert_verified, T0 + 60_200);
        assert!(!crate::response::contain::watching(&i));
        assert!(desired([(id, &i)]).is_empty());

        // A failure is reported with its host and reason; a false positive
        // revert ends the incident.
        let mut shadow = policy.clone();
        shadow.tiers[0].actions[0].mode = Mode::Shadow;
        shadow.tiers[0].actions[0].approval = crate::response::Approval::Auto;
        let planning = Planning {
            policy: &shadow,
            rules: &[],
            protected: &protected,
            executors: &Executors::default(),
        };
        let again = plan(&ingest, id, COLLECTOR, &planning, T0 + 70_000).unwrap();
        assert!(again.recorded);
        let auto = again.incident.actions.last().unwrap();
        assert_eq!(
            (auto.state, auto.planned.mode),
            (ActionState::Requested, Mode::Shadow)
        );
        let cid = containment_id(id, auto.planned.id, &auto.planned.targets[0]);
        hub.report(
            "machine-1",
            103,
            vec![status(&cid, 0, 0, "no such cgroup")],
            T0 + 70_001,
        );
        observe(&ingest, &hub.observed(), T0 + 70_001).unwrap();
        let i = log::replay(ingest.store().as_ref(), id).unwrap();
        let last = i.actions.last().unwrap();
        assert_eq!(last.state, ActionState::Failed);
        assert_eq!(last.reason, "alpha: no such cgroup");
        let (done, lifted) =
            revert(&ingest, id, "alice", None, "false-positive", T0 + 70_002).unwrap();
        assert_eq!(lifted, [last.planned.id]);
        assert_eq!(done.state, State::FalsePositive);
        assert!(revert(&ingest, id, "alice", None, "bored", T0 + 70_003).is_err());
        assert!(rebuild(ingest.store().as_ref(), &hub).is_ok());
        assert!(hub.desired().by_host.is_empty());
    }

    /// The issue 17 race: the incident converged and the isolation was
    /// reverted and lifted before any heartbeat carried its first block.
    /// The agent's next report has the lifted containment's last status:
    /// a first block from before the revert still gives the action its
    /// time to containment (and the report its sample), the action stays
    /// reverted and the revert is seen in the same pass; a first block
    /// after the revert gives nothing but the revert seen. The fold
    /// refuses a second effect and one after the revert.
    #[test]
    fn a_block_reported_only_after_a_quick_revert_still_times_the_containment() {
        for (first_block, timed) in [(T0 + 15, true), (T0 + 20, true), (T0 + 25, false)] {
            let ingest = libfoo_running();
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
            let hash = plan(&ingest, id, "alice", &planning, T0 + 2)
                .unwrap()
                .plan
                .hash;
            let (approved, _) = approve(&ingest, id, "bob", &hash, &planning, T0 + 3).unwrap();
            let action = approved.actions[0].planned.id;
            let cid = containment_id(id, action, &approved.actions[0].planned.targets[0]);
            let hub = Hub::new(100);
            assert!(rebuild(ingest.store().as_ref(), &hub).unwrap());

            // Applied, no block yet; then reverted (converged) and lifted.
            hub.report("machine-1", 101, vec![status(&cid, T0 + 8, 0, "")], T0 + 9);
            observe(&ingest, &hub.observed(), T0 + 9).unwrap();
            revert(&ingest, id, "alice", None, "resolved", T0 + 20).unwrap();
            assert!(rebuild(ingest.store().as_ref(), &hub).unwrap());
            assert_eq!(hub.desired().generation, 102);
            let mut last = status(&cid, T0 + 8, first_block, "");
            last.lifted = true;
            last.applied = false;
            hub.report("machine-1", 102, vec![last], T0 + 21);
            let p = observe(&ingest, &hub.observed(), T0 + 21).unwrap();
            assert_eq!(p.events, if timed { 2 } else { 1 }, "{first_block}");

            let i = log::replay(ingest.store().as_ref(), id).unwrap();
            let a = &i.actions[0];
            assert_eq!(
                (a.state, a.reason.as_str(), a.times.revert_verified),
                (ActionState::Reverted, "resolved", T0 + 21)
            );
            let events: Vec<Recorded> = ingest
                .store()
                .incident_events(id, 0, 100)
                .unwrap()
                .iter()
                .map(|r| Recorded::from_record(r).unwrap())
                .collect();
            let times = crate::response::verify::metrics::from_log(id, &events);
            if timed {
                assert_eq!(a.time_to_containment_ms, Some(first_block - (T0 + 1)));
                assert_eq!(a.times.verified, first_block);
                assert_eq!(times.time_to_containment_ms, [(1, first_block - (T0 + 1))]);
            } else {
                assert_eq!((a.time_to_containment_ms, a.times.verified), (None, 0));
                assert!(times.time_to_containment_ms.is_empty(), "{times:?}");
            }
            assert!(!crate::response::contain::watching(&i));

            // Replayed, the fold takes no second effect and none after
            // the revert.
            let mut next = i.clone();
            for at_ms in [T0 + 21, T0 + 16] {
                let r = Recorded {
                    seq: next.last_seq + 1,
                    at_ms: T0 + 30,
                    actor: COLLECTOR.into(),
                    event: Event::Observed {
                        action,
                        observation: Observation::Verified {
                            at_ms,
                            time_to_containment_ms: at_ms - (T0 + 1),
                        },
                    },
                };
                // Untimed, the one before the revert is still taken.
                let accepted = next.apply(&r).is_ok();
                assert_eq!(
                    accepted,
                    !timed && at_ms <= T0 + 20,
                    "{first_block} {at_ms}"
                );
            }
        }
    }

    /// The scope grows between `plan` and `approve`: a process in another
    /// cgroup starts mapping the affected library. The hash the responder
    /// was shown no longer describes what would be isolated, so approving
    /// it is refused, and the refusal carries the hash of the plan as it is
    /// now, which reaches the new cgroup too. Nothing is approved.
    #[test]
    fn a_process_joining_after_the_plan_makes_its_hash_stale() {
        let ingest = Ingest::new(Arc::new(SqliteStore::in_memory().unwrap()));
        let session = ingest.hello(&hello("s1"), T0).unwrap();
        let libfoo = |pid: u32| {
            process(
                pid,
                vec![
                    exe("/usr/bin/app", 100, Some(deb("app", "app", "1.0-1"))),
                    mapped(
                        "/usr/lib/libfoo.so.1",
                        300,
                        Some(deb("libfoo1", "foo", "1.5-1")),
                    ),
                ],
            )
        };
        ingest
            .apply(
                &session,
                &msg(1, snapshot("snap-1", vec![libfoo(10)], vec![])),
                T0,
            )
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
        let shown = plan(&ingest, id, "alice", &planning, T0 + 2).unwrap();
        assert!(shown.recorded);
        let old = shown.plan.hash.clone();
        let cgroups = |p: &Plan| -> Vec<String> {
            p.actions[0]
                .targets
                .iter()
                .map(|t| t.cgroup.clone())
                .collect()
        };
        assert_eq!(cgroups(&shown.plan), ["/system.slice/test.service"]);

        // A second workload on the host loads libfoo after the plan: the
        // agent's next snapshot has its process and its cgroup.
        let mut joined = libfoo(30);
        joined.cgroup = "/system.slice/other.service".into();
        joined.workload = "unit/other.service".into();
        let mut next = snapshot("snap-2", vec![libfoo(10), joined], vec![]);
        let v1::agent_message::Body::Snapshot(s) = &mut next else {
            unreachable!("snapshot() makes a snapshot")
        };
        s.workloads.push(v1::Workload {
            id: "unit/other.service".into(),
            kind: "systemd".into(),
            unit: "other.service".into(),
            cgroup: "/system.slice/other.service".into(),
            ..Default::default()
        });
        ingest.apply(&session, &msg(2, next), T0 + 3).unwrap();

        let err = approve(&ingest, id, "bob", &old, &planning, T0 + 4).unwrap_err();
        let now = match err {
            LogError::Act(ActError::PlanChanged { ref asked, ref now }) => {
                assert_eq!(*asked, old);
                now.clone()
            }
            other => panic!("expected PlanChanged, got {other}"),
        };
        assert_ne!(now, old, "the refusal shows the new plan's hash");
        // The hash it names is the plan a responder gets by asking again,
        // and that plan reaches the new cgroup.
        let again = plan(&ingest, id, "alice", &planning, T0 + 5).unwrap();
        assert_eq!(again.plan.hash, now);
        let mut reached = cgroups(&again.plan);
        reached.sort();
        assert_eq!(
            reached,
            ["/system.slice/other.service", "/system.slice/test.service"]
        );
        // The refused approval wrote nothing: no action was approved.
        let i = log::replay(ingest.store().as_ref(), id).unwrap();
        assert!(i.actions.iter().all(|a| a.approved_by.is_empty()));
        assert_eq!(i.state, State::ApprovalPending);
        // The new hash is approved by the second person.
        let (approved, requested) = approve(&ingest, id, "bob", &now, &planning, T0 + 6).unwrap();
        assert_eq!(requested.len(), 1);
        assert_eq!(approved.actions.last().unwrap().approved_by, "bob");
    }

    /// A rule that says `open_incident = "auto"` opens one incident per
    /// exposed advisory, once; without such a rule nothing opens.
    #[test]
    fn the_policy_opens_incidents_it_is_told_to_once() {
        let ingest = libfoo_running();
        let osv = br#"{"id": "TEST-2026-1", "modified": "2026-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "Debian:12", "name": "foo"},
              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0-1"}]}]}],
            "database_specific": {"severity": "CRITICAL"}}"#;
        let (records, errors) = crate::advisories::records::parse_files(&[v1::AdvisoryFile {
            name: "TEST-2026-1.json".into(),
            data: osv.to_vec(),
        }]);
        assert!(errors.is_empty(), "{errors:?}");
        ingest.import_advisories(&records, false).unwrap();

        let mut policy = policy();
        assert_eq!(
            auto_open(&ingest, &policy, &[], T0 + 1).unwrap(),
            0,
            "no rule says so"
        );
        policy.tiers[0].rules[0].open_incident = crate::response::OpenIncident::Auto;
        assert_eq!(auto_open(&ingest, &policy, &[], T0 + 2).unwrap(), 1);
        assert_eq!(auto_open(&ingest, &policy, &[], T0 + 3).unwrap(), 0, "once");
        let listed = log::list(ingest.store().as_ref(), None, false, 10).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.opened_by, POLICY);
        assert_eq!(listed[0].1.dedup_key, "advisory:TEST-2026-1");
        assert_eq!(listed[0].1.scope.processes, 1);
    }

    /// Freeze and kill go to the agents as their kinds, in enforce mode;
    /// an action only observed is never in the set.
    #[test]
    fn freeze_kill_and_observe_in_the_set() {
        let ingest = libfoo_running();
        let source = Source::Package {
            package: "libfoo1".into(),
            name: "libfoo1".into(),
            ecosystem: None,
            group: None,
            range: None,
        };
        let id = log::open(&ingest, source, "alice", &[], T0 + 1).unwrap().id;
        let mut policy = policy();
        let template = policy.tiers[0].actions[0].clone();
        policy.tiers[0].actions = [
            (ActionKind::FreezeCgroup, Mode::Enforce),
            (ActionKind::KillProcesses, Mode::Enforce),
            (ActionKind::IsolateAffectedWorkloads, Mode::Observe),
        ]
        .into_iter()
        .map(|(kind, mode)| crate::response::Action {
            kind,
            mode,
            approval: crate::response::Approval::Auto,
            revert_after_ms: None,
            ..template.clone()
        })
        .collect();
        let protected = Protected::default();
        let planning = Planning {
            policy: &policy,
            rules: &[],
            protected: &protected,
            executors: &Executors::default(),
        };
        let planned = plan(&ingest, id, COLLECTOR, &planning, T0 + 2).unwrap();
        let states: Vec<_> = planned.incident.actions.iter().map(|a| a.state).collect();
        assert_eq!(
            states,
            [
                ActionState::Requested,
                ActionState::Requested,
                ActionState::Planned
            ]
        );
        assert!(planned.incident.actions[2].reason.starts_with("observe"));
        let hub = Hub::new(1);
        rebuild(ingest.store().as_ref(), &hub).unwrap();
        let kinds: Vec<(i32, i32)> = hub.desired().by_host["machine-1"]
            .iter()
            .map(|c| (c.kind, c.mode))
            .collect();
        let enforce = v1::ContainmentMode::Enforce as i32;
        assert_eq!(
            kinds,
            [
                (v1::ContainmentKind::Freeze as i32, enforce),
                (v1::ContainmentKind::Kill as i32, enforce)
            ]
        );
    }
}
