//! OpenIncident, ListIncidents, GetIncident. Each request is parsed into a
//! plain type without I/O ([`OpenIncident::try_from`], ...); `apply` runs
//! `response::incident::log` off the async workers and maps its errors.
//! The projection becomes patchgap.v1 messages here, and only here.

use patchgap_proto::{time::now_ms, v1};
use tonic::Status;

use super::{
    invalid,
    packages::{FindPackage, Target},
    query::QueryService,
    to_status,
};
use crate::response::{
    Approval, Mode,
    contain::{self, Hub},
    incident::{
        Incident, IncidentAction, Plan, Recorded, RecordedPlan, Scope, Source,
        act::{self, Planning},
        display_id,
        log::{self, LogError, MAX_EVENTS},
        parse_id,
        scope::ScopeError,
    },
};

/// Incidents a listing returns by default, and at most.
const DEFAULT_LIST: usize = 100;
const MAX_LIST: usize = 1_000;

/// The longest advisory id, host or package spec accepted.
const MAX_FIELD: usize = 512;

/// What an OpenIncident request asks, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenIncident {
    pub source: Source,
}

/// The purl without its version, qualifiers or subpath: how the incident
/// names the package (the version is its range).
fn versionless_purl(purl: &str) -> &str {
    let base = purl.split(['?', '#']).next().unwrap_or(purl);
    let last = base.rfind('/').map_or(0, |i| i + 1);
    match base[last..].find('@') {
        Some(at) => &base[..last + at],
        None => base,
    }
}

fn bounded<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    let value = value.trim();
    if value.len() > MAX_FIELD {
        return Err(invalid(format!(
            "{field} is {} bytes long; at most {MAX_FIELD}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!("{field} holds control characters")));
    }
    Ok(value)
}

impl TryFrom<v1::OpenIncidentRequest> for OpenIncident {
    type Error = Status;

    fn try_from(req: v1::OpenIncidentRequest) -> Result<OpenIncident, Status> {
        let advisory = bounded("the advisory", &req.advisory)?;
        let host = bounded("the host", &req.host)?;
        let package = bounded("the package", &req.package)?;
        let alert = bounded("the alert", &req.alert)?;
        if !alert.is_empty() {
            if !advisory.is_empty() || !package.is_empty() || !host.is_empty() {
                return Err(invalid(
                    "give an alert alone, without an advisory, package or host",
                ));
            }
            if alert.trim_start_matches("EGR-").parse::<i64>().is_err() {
                return Err(invalid(format!("{alert:?} is not an egress alert id")));
            }
            return Ok(OpenIncident {
                source: Source::EgressAlert {
                    alert: alert.trim_start_matches("EGR-").to_string(),
                },
            });
        }
        let source = match (advisory.is_empty(), package.is_empty()) {
            (false, false) => return Err(invalid("give an advisory or a package, not both")),
            (true, true) => {
                return Err(invalid(
                    "give an advisory (--advisory) or a package (--package)",
                ));
            }
            (false, true) => Source::Advisory {
                id: advisory.to_string(),
                asked_as: String::new(),
                host: (!host.is_empty()).then(|| host.to_string()),
            },
            (true, false) => {
                if !host.is_empty() {
                    return Err(invalid("--host goes with --advisory only"));
                }
                // The query parser `patchgap query` uses: purls, names,
                // ranges in each ecosystem's order, with its errors.
                let q = FindPackage::try_from(v1::FindPackageRequest {
                    name: package.to_string(),
                    ..Default::default()
                })?;
                let Target::Package {
                    name,
                    constraint,
                    source: group,
                } = q.target
                else {
                    return Err(invalid("give a package"));
                };
                let shown = if package.starts_with("pkg:") {
                    versionless_purl(package).to_string()
                } else {
                    name.clone()
                };
                Source::Package {
                    package: shown,
                    name,
                    ecosystem: q.ecosystem.map(|e| e.purl_type().to_string()),
                    group,
                    range: constraint.map(|c| c.text),
                }
            }
        };
        Ok(OpenIncident { source })
    }
}

/// The one mapping of the incident domain's errors to statuses.
pub(super) fn status(e: LogError) -> Status {
    match e {
        LogError::Scope(ScopeError::UnknownAdvisory(_) | ScopeError::UnknownAlert(_))
        | LogError::NotFound(_) => Status::not_found(e.to_string()),
        LogError::Scope(ScopeError::BadRange { .. }) => invalid(e.to_string()),
        LogError::Scope(ScopeError::NoQuery(_)) | LogError::Refused(_) => {
            Status::failed_precondition(e.to_string())
        }
        LogError::Conflict(_) => Status::aborted(e.to_string()),
        LogError::Act(_) => Status::failed_precondition(e.to_string()),
        LogError::Scope(ScopeError::Store(s)) | LogError::Store(s) => to_status(s),
        LogError::Corrupt { .. } => {
            let cause = std::error::Error::source(&e).map(ToString::to_string);
            tracing::warn!(error = %e, cause, "an incident's log does not project");
            Status::internal(format!("{e}; see the collector log"))
        }
    }
}

impl OpenIncident {
    pub(super) async fn apply(
        self,
        svc: &QueryService,
        actor: String,
    ) -> Result<v1::OpenIncidentResponse, Status> {
        let rules = svc.scope_rules();
        let (opened, changes) = svc
            .domain(move |ingest| {
                let opened =
                    log::open(ingest, self.source, &actor, &rules, now_ms()).map_err(status)?;
                let changes = super::changes::of_incident(ingest, &opened.incident);
                Ok((opened, changes))
            })
            .await?;
        let mut out = incident(opened.id, &opened.incident, &[]);
        if let Some(s) = &mut out.source {
            s.changes = changes;
        }
        Ok(v1::OpenIncidentResponse {
            incident: Some(out),
            created: opened.new,
        })
    }
}

pub(super) async fn list(
    svc: &QueryService,
    req: v1::ListIncidentsRequest,
) -> Result<v1::ListIncidentsResponse, Status> {
    let limit = match req.limit as usize {
        0 => DEFAULT_LIST,
        n => n.min(MAX_LIST),
    };
    let before = match req.before.trim() {
        "" => None,
        b => Some(parse_id(b).ok_or_else(|| invalid(format!("{b:?} is not an incident id")))?),
    };
    let found = svc
        .domain(move |ingest| {
            log::list(ingest.store().as_ref(), before, req.open_only, limit).map_err(status)
        })
        .await?;
    let next_before = match found.last() {
        Some((id, _)) if found.len() == limit => display_id(*id),
        _ => String::new(),
    };
    Ok(v1::ListIncidentsResponse {
        incidents: found.iter().map(|(id, i)| incident(*id, i, &[])).collect(),
        time_to_containment: per_tier(found.iter().map(|(_, i)| i)),
        policy: Some(v1::PolicyInForce {
            verify: Some(verify_in_force(&svc.verify_in_force())),
            ..policy_in_force(&svc.policy().state())
        }),
        next_before,
    })
}

pub(super) async fn get(
    svc: &QueryService,
    req: v1::GetIncidentRequest,
) -> Result<v1::GetIncidentResponse, Status> {
    let id = parse_id(&req.id)
        .ok_or_else(|| invalid(format!("{:?} is not an incident id (INC-7, or 7)", req.id)))?;
    let max = match req.max_events as usize {
        0 => MAX_EVENTS,
        n => n.min(MAX_EVENTS),
    };
    let (shown, changes) = svc
        .domain(move |ingest| {
            let shown = log::show(ingest.store().as_ref(), id, max).map_err(status)?;
            let changes = super::changes::of_incident(ingest, &shown.incident);
            Ok((shown, changes))
        })
        .await?;
    let mut out = incident(shown.id, &shown.incident, &shown.events);
    if let Some(s) = &mut out.source {
        s.changes = changes;
    }
    out.policy = Some(v1::PolicyInForce {
        verify: Some(verify_in_force(&svc.verify_in_force())),
        ..policy_in_force(&svc.policy().state())
    });
    if let Some(v) = &mut out.verification {
        v.streak_required = svc.verify_settings().streak;
    }
    fill_counters(&mut out, shown.id, &shown.incident, &svc.hub, &svc.gate);
    Ok(v1::GetIncidentResponse {
        incident: Some(out),
        more_events: shown.more_events,
    })
}

fn source(s: &Source) -> v1::IncidentSource {
    let kind = |k: &str| k.to_string();
    match s {
        Source::Advisory { id, asked_as, host } => v1::IncidentSource {
            kind: kind("advisory"),
            advisory: id.clone(),
            asked_as: asked_as.clone(),
            host: host.clone().unwrap_or_default(),
            ..Default::default()
        },
        Source::Package { package, range, .. } => v1::IncidentSource {
            kind: kind("package"),
            package: package.clone(),
            range: range.clone().unwrap_or_default(),
            ..Default::default()
        },
        Source::PolicyRule { rule, subject } => v1::IncidentSource {
            kind: kind("policy_rule"),
            rule: rule.clone(),
            subject: subject.clone(),
            ..Default::default()
        },
        Source::EgressAlert { alert } => v1::IncidentSource {
            kind: kind("egress_alert"),
            alert: alert.clone(),
            ..Default::default()
        },
    }
}

fn scope(s: &Scope) -> v1::IncidentScope {
    let list =
        |set: &std::collections::BTreeSet<String>| -> Vec<String> { set.iter().cloned().collect() };
    v1::IncidentScope {
        workloads: list(&s.workloads),
        hosts: list(&s.hosts),
        image_digests: list(&s.image_digests),
        pids: s
            .pids
            .iter()
            .map(|(host, pids)| v1::HostPids {
                host: host.clone(),
                pids: pids.iter().copied().collect(),
            })
            .collect(),
        data_scopes: list(&s.data_scopes),
        privileged: s.privileged,
        evidence: s.evidence.clone(),
        packages: list(&s.packages),
        processes: s.processes,
        truncated: s.truncated,
    }
}

pub(super) fn incident(id: i64, i: &Incident, events: &[Recorded]) -> v1::Incident {
    v1::Incident {
        id: display_id(id),
        dedup_key: i.dedup_key.clone(),
        state: i.state.name().to_string(),
        tier: i.tier,
        source: Some(source(&i.source)),
        opened_at_ms: i.opened_at_ms,
        opened_by: i.opened_by.clone(),
        updated_at_ms: i.updated_at_ms,
        scope: Some(scope(&i.scope)),
        events: events
            .iter()
            .map(|r| {
                let rec = r.to_record();
                v1::IncidentEvent {
                    seq: rec.seq,
                    at_ms: rec.at_ms,
                    actor: rec.actor,
                    kind: rec.kind,
                    payload_json: rec.payload,
                }
            })
            .collect(),
        tier_name: i.tier_name.clone(),
        plan: i.plan.as_ref().map(|r| plan_message(&r.plan, Some(r))),
        actions: i.actions.iter().map(action_message).collect(),
        policy: None,
        verification: super::verify::verification(i),
    }
}

/// Time to containment per tier over these incidents' verified actions.
fn per_tier<'a>(incidents: impl Iterator<Item = &'a Incident>) -> Vec<v1::TierContainment> {
    let mut by_tier: std::collections::BTreeMap<u32, Vec<i64>> = Default::default();
    for i in incidents {
        let Some(tier) = i.tier else { continue };
        for ms in i.actions.iter().filter_map(|a| a.time_to_containment_ms) {
            by_tier.entry(tier).or_default().push(ms);
        }
    }
    by_tier
        .into_iter()
        .map(|(tier, mut ms)| {
            ms.sort_unstable();
            v1::TierContainment {
                tier,
                actions: ms.len() as u32,
                min_ms: ms[0],
                median_ms: ms[ms.len() / 2],
                max_ms: ms[ms.len() - 1],
            }
        })
        .collect()
}

/// The incident id of a request.
fn incident_id(id: &str) -> Result<i64, Status> {
    parse_id(id).ok_or_else(|| invalid(format!("{id:?} is not an incident id (INC-7, or 7)")))
}

/// What plans are made from, in force now.
struct Inputs {
    policy: std::sync::Arc<crate::response::PolicyState>,
    rules: Vec<crate::fleet::scope::Rule>,
    hub: std::sync::Arc<Hub>,
}

impl Inputs {
    fn of(svc: &QueryService) -> Inputs {
        Inputs {
            policy: svc.policy().state(),
            rules: svc.scope_rules(),
            hub: svc.hub.clone(),
        }
    }

    /// Runs `f` with the planning inputs for incident `id`'s scope.
    fn with<T>(
        &self,
        ingest: &crate::fleet::ingest::Ingest,
        id: i64,
        f: impl FnOnce(&Planning<'_>) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        let store = ingest.store().as_ref();
        let rec = store
            .incident(id)?
            .ok_or_else(|| LogError::NotFound(display_id(id)))?;
        let incident = log::load(store, &rec)?;
        // The protected instances on every host the incident reaches now
        // or reached when it was last scoped.
        let protected = contain::protected(store, &incident.scope, self.hub.collector())?;
        f(&Planning {
            policy: &self.policy.current,
            rules: &self.rules,
            protected: &protected,
            executors: self.hub.executors(),
        })
    }

    /// Publishes the containments the incidents now ask for.
    fn publish(&self, ingest: &crate::fleet::ingest::Ingest) {
        if let Err(error) = contain::rebuild(ingest.store().as_ref(), &self.hub) {
            tracing::warn!(%error, "cannot publish the desired containments");
        }
    }
}

pub(super) async fn plan(
    svc: &QueryService,
    req: v1::PlanIncidentRequest,
    actor: String,
) -> Result<v1::PlanIncidentResponse, Status> {
    let id = incident_id(&req.id)?;
    let inputs = Inputs::of(svc);
    let policy = policy_in_force(&inputs.policy);
    let hub = inputs.hub.clone();
    let planned = svc
        .domain(move |ingest| {
            let done = inputs
                .with(ingest, id, |p| act::plan(ingest, id, &actor, p, now_ms()))
                .map_err(status)?;
            inputs.publish(ingest);
            Ok(done)
        })
        .await?;
    let mut incident = incident(id, &planned.incident, &[]);
    incident.policy = Some(policy);
    fill_counters(&mut incident, id, &planned.incident, &hub, &svc.gate);
    Ok(v1::PlanIncidentResponse {
        plan: Some(plan_message(
            &planned.plan,
            planned
                .incident
                .plan
                .as_ref()
                .filter(|r| r.plan.hash == planned.plan.hash),
        )),
        incident: Some(incident),
        recorded: planned.recorded,
    })
}

pub(super) async fn approve(
    svc: &QueryService,
    req: v1::ApproveIncidentRequest,
    actor: String,
) -> Result<v1::ApproveIncidentResponse, Status> {
    let id = incident_id(&req.id)?;
    let hash = req.plan.trim().to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "{:?} is not a plan hash: give the 64 hex digits `patchgap incident plan` printed",
            req.plan
        )));
    }
    let inputs = Inputs::of(svc);
    let policy = policy_in_force(&inputs.policy);
    let hub = inputs.hub.clone();
    let (approved, requested) = svc
        .domain(move |ingest| {
            let done = inputs
                .with(ingest, id, |p| {
                    act::approve(ingest, id, &actor, &hash, p, now_ms())
                })
                .map_err(status)?;
            inputs.publish(ingest);
            Ok(done)
        })
        .await?;
    let mut incident = incident(id, &approved, &[]);
    incident.policy = Some(policy);
    fill_counters(&mut incident, id, &approved, &hub, &svc.gate);
    Ok(v1::ApproveIncidentResponse {
        incident: Some(incident),
        requested,
    })
}

pub(super) async fn revert(
    svc: &QueryService,
    req: v1::RevertIncidentRequest,
    actor: String,
) -> Result<v1::RevertIncidentResponse, Status> {
    let id = incident_id(&req.id)?;
    let reason = req.reason.trim().to_string();
    if !act::REVERT_REASONS.contains(&reason.as_str()) {
        return Err(invalid(format!(
            "--reason {reason:?}: one of {}",
            act::REVERT_REASONS.join(", ")
        )));
    }
    let action = (req.action > 0).then_some(req.action);
    let inputs = Inputs::of(svc);
    let policy = policy_in_force(&inputs.policy);
    let hub = inputs.hub.clone();
    let (reverted, lifted) = svc
        .domain(move |ingest| {
            let done =
                act::revert(ingest, id, &actor, action, &reason, now_ms()).map_err(status)?;
            inputs.publish(ingest);
            Ok(done)
        })
        .await?;
    let mut incident = incident(id, &reverted, &[]);
    incident.policy = Some(policy);
    fill_counters(&mut incident, id, &reverted, &hub, &svc.gate);
    Ok(v1::RevertIncidentResponse {
        incident: Some(incident),
        reverted: lifted,
    })
}

/// The policy in force, as answers state it.
fn policy_in_force(p: &crate::response::PolicyState) -> v1::PolicyInForce {
    v1::PolicyInForce {
        source: p.source.clone(),
        loaded_at_ms: p.loaded_at_ms,
        reload_error: p.last_error.clone().unwrap_or_default(),
        verify: None,
    }
}

/// Verification's settings in force, as answers state them.
fn verify_in_force(v: &crate::response::verify::settings::InForce) -> v1::VerifyInForce {
    v1::VerifyInForce {
        every_ms: v.settings.every.as_millis() as i64,
        streak: v.settings.streak,
        evidence: v.settings.counted.clone(),
        every_from: v.every.name().into(),
        streak_from: v.streak.name().into(),
        evidence_from: v.evidence.name().into(),
    }
}

/// The agents' counters of each action in force, summed over its
/// targets, and the deploy gate's admissions of each gate action.
fn fill_counters(
    out: &mut v1::Incident,
    id: i64,
    i: &Incident,
    hub: &Hub,
    gate: &crate::response::gate::facts::Cache,
) {
    for (msg, a) in out.actions.iter_mut().zip(&i.actions) {
        if a.planned.by_gate() {
            // The tally counts by incident and kind, and an incident holds
            // one gate action of a kind in force at a time: the counts go
            // to the last one of its kind carried out.
            let last = i
                .actions
                .iter()
                .filter(|b| b.planned.kind == a.planned.kind && b.times.requested > 0)
                .map(|b| b.planned.id)
                .max();
            if last != Some(a.planned.id) {
                continue;
            }
            let c = gate.tally.of(id, a.planned.kind);
            msg.denied_admissions = c.denied;
            msg.would_deny_admissions = c.would_deny;
            msg.warned_admissions = c.warned;
            msg.overridden_admissions = c.overridden;
            continue;
        }
        let ids: Vec<String> = a
            .planned
            .targets
            .iter()
            .map(|t| contain::containment_id(id, a.planned.id, t))
            .collect();
        let c = hub.counters(&ids);
        msg.blocked_connects = c.blocked_connects;
        msg.blocked_packets = c.blocked_packets;
        msg.would_block_connects = c.would_block_connects;
        msg.would_block_packets = c.would_block_packets;
    }
}

fn target_message(t: &crate::response::incident::Target) -> v1::PlanTarget {
    v1::PlanTarget {
        host: t.host.clone(),
        workload: t.workload.clone(),
        cgroup: t.cgroup.clone(),
        pids: t.pids.clone(),
        processes: t.processes,
        shared_with: t.shared_with.clone(),
    }
}

fn plan_message(p: &Plan, recorded: Option<&RecordedPlan>) -> v1::Plan {
    v1::Plan {
        hash: p.hash.clone(),
        tier: p.tier,
        tier_name: p.tier_name.clone(),
        exception: p.exception.clone().unwrap_or_default(),
        actions: p
            .actions
            .iter()
            .map(|a| v1::PlanAction {
                id: a.id,
                kind: a.kind.as_str().to_string(),
                mode: mode_name(a.mode).to_string(),
                approval: approval_name(a.approval).to_string(),
                revert_after_ms: a.revert_after_ms.unwrap_or(0),
                allow: a.allow.clone(),
                targets: a.targets.iter().map(target_message).collect(),
                excluded: a
                    .excluded
                    .iter()
                    .map(|e| v1::PlanExclusion {
                        host: e.host.clone(),
                        workload: e.workload.clone(),
                        cgroup: e.cgroup.clone(),
                        guard: e.guard.clone(),
                        pids: e.pids.clone(),
                    })
                    .collect(),
                no_executor: a.no_executor.clone().unwrap_or_default(),
                executor: a.executor().unwrap_or_default(),
            })
            .collect(),
        made_at_ms: recorded.map_or(0, |r| r.at_ms),
        requested_by: recorded.map(|r| r.by.clone()).unwrap_or_default(),
        expires_at_ms: recorded.map_or(0, RecordedPlan::expires_at_ms),
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Observe => "observe",
        Mode::Shadow => "shadow",
        Mode::Enforce => "enforce",
    }
}

fn approval_name(a: Approval) -> &'static str {
    match a {
        Approval::Auto => "auto",
        Approval::Required => "required",
    }
}

fn action_message(a: &IncidentAction) -> v1::IncidentAction {
    let p = &a.planned;
    v1::IncidentAction {
        id: p.id,
        kind: p.kind.as_str().to_string(),
        mode: mode_name(p.mode).to_string(),
        approval: approval_name(p.approval).to_string(),
        state: a.state.name().to_string(),
        reason: a.reason.clone(),
        plan: a.plan.clone(),
        targets: p.targets.iter().map(target_message).collect(),
        planned_at_ms: a.times.planned,
        requested_at_ms: a.times.requested,
        applied_at_ms: a.times.applied,
        verified_at_ms: a.times.verified,
        reverted_at_ms: a.times.reverted,
        failed_at_ms: a.times.failed,
        time_to_containment_ms: a.time_to_containment_ms.unwrap_or(0),
        revert_at_ms: a.revert_at_ms().unwrap_or(0),
        revert_verified_at_ms: a.times.revert_verified,
        approved_by: a.approved_by.clone(),
        executor: p.executor().unwrap_or_default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(advisory: &str, host: &str, package: &str) -> Result<Source, String> {
        OpenIncident::try_from(v1::OpenIncidentRequest {
            advisory: advisory.into(),
            host: host.into(),
            package: package.into(),
            alert: String::new(),
        })
        .map(|o| o.source)
        .map_err(|s| s.message().to_string())
    }

    #[test]
    fn requests_name_one_subject_with_its_dedup_key() {
        let s = parse(" CVE-2023-5752 ", "web-1", "").unwrap();
        assert_eq!(s.dedup_key(), "advisory:CVE-2023-5752 host=web-1");
        let s = parse("", "", "pip@<23.3").unwrap();
        assert_eq!(s.dedup_key(), "package:pip@<23.3");
        let s = parse("", "", "pkg:pypi/pip@23.0.1").unwrap();
        assert_eq!(s.dedup_key(), "package:pkg:pypi/pip@=23.0.1");
        match s {
            Source::Package {
                name, ecosystem, ..
            } => assert_eq!((name.as_str(), ecosystem.as_deref()), ("pip", Some("pypi"))),
            s => panic!("{s:?}"),
        }
        let s = parse(
            "",
            "",
            "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1?type=jar",
        )
        .unwrap();
        assert_eq!(
            s.dedup_key(),
            "package:pkg:maven/org.apache.logging.log4j/log4j-core@=2.14.1"
        );
        match s {
            Source::Package { group, .. } => {
                assert_eq!(group.as_deref(), Some("org.apache.logging.log4j"))
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(
            versionless_purl("pkg:npm/%40babel/core@7.0.0"),
            "pkg:npm/%40babel/core"
        );
        assert_eq!(
            versionless_purl("pkg:deb/debian/libssl3"),
            "pkg:deb/debian/libssl3"
        );
    }

    #[test]
    fn bad_requests_say_why() {
        for (a, h, p, want) in [
            ("CVE-1", "", "pip", "not both"),
            ("", "", "", "give an advisory"),
            ("", "web-1", "pip", "--host goes with --advisory"),
            ("CVE-1\u{1b}[2J", "", "", "control characters"),
            ("", "", "pkg:nuget/Foo@1", "not one patchgap inventories"),
            ("", "", "p!p", "p!p"),
        ] {
            let err = parse(a, h, p).unwrap_err();
            assert!(err.contains(want), "{a:?} {h:?} {p:?}: {err}");
        }
        let long = "x".repeat(MAX_FIELD + 1);
        assert!(parse(&long, "", "").unwrap_err().contains("at most 512"));
    }

    /// `--alert` goes alone, and takes an alert id.
    #[test]
    fn alert_sources() {
        let parse_alert = |alert: &str, package: &str| {
            OpenIncident::try_from(v1::OpenIncidentRequest {
                alert: alert.into(),
                package: package.into(),
                ..Default::default()
            })
            .map(|o| o.source)
            .map_err(|s| s.message().to_string())
        };
        assert_eq!(
            parse_alert("12", ""),
            Ok(Source::EgressAlert { alert: "12".into() })
        );
        assert_eq!(
            parse_alert("EGR-12", ""),
            Ok(Source::EgressAlert { alert: "12".into() })
        );
        assert!(
            parse_alert("twelve", "")
                .unwrap_err()
                .contains("not an egress alert id")
        );
        assert!(parse_alert("12", "libc6").unwrap_err().contains("alone"));
    }
}
