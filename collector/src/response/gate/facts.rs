//! What the gate reads from the store, and the one thing it writes: a
//! break-glass admission, audited and noted on the incidents it overrode.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use super::{Blocker, Facts, Verdict};
use crate::{
    audit::{self, AuditLog},
    fleet::ingest::Ingest,
    response::{
        ActionKind, Admission, Mode, Policy,
        incident::{
            ActionState, Event, Incident, IncidentAction, Source,
            log::{self, LogError},
        },
        plan,
    },
    store::Store,
};

/// Open incidents the gate looks at, at most (as the refresher does).
pub const MAX_INCIDENTS: usize = log::REFRESH_MAX;

/// Digests one request may ask about (a pod has few containers; a
/// hostile request must not make the gate read thousands of SBOMs).
pub const MAX_IMAGES: usize = 64;

/// The gate's facts for these digests: every open incident with a gate
/// action in force, and the SBOM packages of each digest. Decodes every
/// open incident; the servers use [`Cache::load`].
pub fn load(store: &dyn Store, policy: &Policy, digests: &[&str]) -> Result<Facts, LogError> {
    let mut blockers = Vec::new();
    for rec in store.incidents(None, true, MAX_INCIDENTS)? {
        let incident = log::load(store, &rec)?;
        if let Some(b) = blocker(rec.id, &incident, policy) {
            blockers.push(Arc::new(b));
        }
    }
    with_sboms(store, blockers, digests)
}

fn with_sboms(
    store: &dyn Store,
    blockers: Vec<Arc<Blocker>>,
    digests: &[&str],
) -> Result<Facts, LogError> {
    let mut sboms = BTreeMap::new();
    if !blockers.is_empty() {
        for d in digests.iter().take(MAX_IMAGES) {
            let packages = store
                .sboms(Some(d))?
                .into_iter()
                .flat_map(|s| s.packages)
                .collect();
            sboms.insert(d.to_string(), packages);
        }
    }
    Ok(Facts { blockers, sboms })
}

/// The open incidents' gate facts, kept between requests: an incident's
/// projection is decoded again only when its log grew or the policy in
/// force changed, so a request reads the open incidents' rows and decodes
/// none of them in the steady state. One per collector (the webhook, the
/// gRPC API and the gate's executor share it); it holds at most
/// [`MAX_INCIDENTS`] entries.
#[derive(Debug, Default)]
pub struct Cache {
    state: Mutex<CacheState>,
    /// What the gate answered at admission, per incident action (shared
    /// by the webhook, which counts, and the API and `/metrics`, which
    /// read).
    pub tally: super::tally::Tally,
}

#[derive(Debug, Default)]
struct CacheState {
    policy: Option<Arc<Policy>>,
    /// Incident id -> (last seq decoded, its blocker if it has one).
    by_id: HashMap<i64, (i64, Option<Arc<Blocker>>)>,
}

impl Cache {
    /// [`load`], decoding only incidents changed since the last call.
    pub fn load(
        &self,
        store: &dyn Store,
        policy: &Arc<Policy>,
        digests: &[&str],
    ) -> Result<Facts, LogError> {
        let records = store.incidents(None, true, MAX_INCIDENTS)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state
            .policy
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, policy))
        {
            state.by_id.clear();
            state.policy = Some(policy.clone());
        }
        let mut fresh = HashMap::with_capacity(records.len());
        let mut blockers = Vec::new();
        for rec in &records {
            let b = match state.by_id.remove(&rec.id) {
                Some((seq, b)) if seq == rec.last_seq => b,
                _ => {
                    let incident = log::load(store, rec)?;
                    blocker(rec.id, &incident, policy).map(Arc::new)
                }
            };
            if let Some(b) = &b {
                blockers.push(b.clone());
            }
            fresh.insert(rec.id, (rec.last_seq, b));
        }
        // Closed incidents fall out here.
        state.by_id = fresh;
        drop(state);
        with_sboms(store, blockers, digests)
    }
}

/// The packages of an SBOM document that comes with the request and is
/// not stored (`gate check --sbom`): each gets the advisories, among those
/// of the blockers, that affect it, judged here as the matcher would.
pub fn judge_document(
    store: &dyn Store,
    blockers: &[Arc<Blocker>],
    mut packages: Vec<crate::store::DeclaredPackage>,
) -> Result<Vec<crate::store::DeclaredPackage>, LogError> {
    use crate::advisories::{matching::affects_package, osv::import::parse_file};
    let ids: std::collections::BTreeSet<&String> =
        blockers.iter().flat_map(|b| &b.advisories).collect();
    for id in ids {
        for rec in store.advisory(id)? {
            let Some(Ok(adv)) = parse_file(&rec.source, &rec.data) else {
                continue;
            };
            for p in &mut packages {
                if affects_package(&adv, &p.package) && !p.advisories.contains(&rec.id) {
                    p.advisories.push(rec.id.clone());
                }
            }
        }
    }
    Ok(packages)
}

/// Whether the gate carries this action out now: one of its two kinds,
/// the gate its executor (the plan was made with the admission listener
/// on), and in force: requested, applied, verified or failed, not
/// reverted, not observe-only. The gate denies from the commit of the
/// request (or approval) on, since every decision reads this from the
/// store; `execute` records that as `applied`.
///
/// Plans recorded before the gate was an executor said "no executor
/// configured" for its kinds, and their approved (or automatic) actions
/// stayed `planned` while the gate enforced them: those still count, so
/// an upgrade lifts no block by surprise.
pub fn in_force(a: &IncidentAction) -> bool {
    if !plan::is_gate_kind(a.planned.kind) || a.planned.mode == Mode::Observe {
        return false;
    }
    if a.planned.by_gate() {
        return a.in_force();
    }
    a.planned.no_executor.as_deref() == Some(plan::NO_EXECUTOR)
        && a.state == ActionState::Planned
        && (!a.approved_by.is_empty() || a.planned.approval == crate::response::Approval::Auto)
}

/// An open incident's gate actions in force, with its scope's facts;
/// None when it has none. The answer (deny or warn) is the policy's in
/// force for the incident's tier, so a reloaded policy softens or
/// hardens the gate at once; whether the gate acts at all is the plan's.
pub fn blocker(id: i64, incident: &Incident, policy: &Policy) -> Option<Blocker> {
    if !incident.state.is_open() {
        return None;
    }
    let admission = |kind: ActionKind| {
        policy
            .tiers
            .iter()
            .find(|t| Some(t.number) == incident.tier)
            .and_then(|t| t.actions.iter().find(|a| a.kind == kind))
            .map_or(Admission::Deny, |a| a.admission)
    };
    let mut b = Blocker {
        incident: id,
        ..Blocker::default()
    };
    for a in incident.actions.iter().filter(|a| in_force(a)) {
        let answer = Some((admission(a.planned.kind), a.planned.mode));
        match a.planned.kind {
            ActionKind::FreezeDeployments => b.freeze = b.freeze.or(answer),
            _ => b.block = b.block.or(answer),
        }
    }
    if b.block.is_none() && b.freeze.is_none() {
        return None;
    }
    if let Source::Advisory { id, .. } = &incident.source {
        b.advisories.insert(id.clone());
    }
    let scope = &incident.scope;
    b.packages = scope.packages.clone();
    b.image_digests = scope.image_digests.clone();
    for i in &scope.instances {
        if let Some(ns) = &i.namespace {
            b.namespaces.insert(ns.clone());
        }
        for f in &i.findings {
            if !f.advisory.is_empty() {
                b.advisories.insert(f.advisory.clone());
            }
            b.findings.push((f.advisory.clone(), f.purl.clone()));
        }
    }
    b.findings.sort();
    b.findings.dedup();
    Some(b)
}

/// Who asked, for the audit log and the incident's note.
#[derive(Debug, Clone, Default)]
pub struct Requester {
    /// The Kubernetes user (`userInfo.username`), or the CLI's subject.
    pub user: String,
    /// Where the request came from (the webhook's peer address).
    pub peer: String,
    /// The admission's uid, or empty.
    pub uid: String,
}

/// A deploy a break-glass ticket let through: one audit entry, and a note
/// on each incident it overrode (`incident show` lists it). Never for a
/// dry run, and never inside a store transaction but the appends' own.
pub fn record_break_glass(
    ingest: &Ingest,
    audit: &AuditLog,
    who: &Requester,
    object: &str,
    verdict: &Verdict,
    now_ms: i64,
) -> Result<(), LogError> {
    let Some(ticket) = &verdict.break_glass else {
        return Ok(());
    };
    let incidents: Vec<String> = verdict.overridden_incidents().into_iter().collect();
    audit.record(audit::Event {
        subject: who.user.clone(),
        scopes: String::new(),
        peer: who.peer.clone(),
        method: "gate/break-glass".into(),
        args: format!(
            "ticket={ticket} object={object} uid={} incidents={}",
            who.uid,
            incidents.join(",")
        ),
        result: format!("admitted despite: {}", overridden_message(verdict)),
    })?;
    let text = format!(
        "break-glass {ticket}: {} admitted {object} despite: {}",
        if who.user.is_empty() {
            "someone"
        } else {
            &who.user
        },
        overridden_message(verdict)
    );
    for inc in incidents {
        let Some(id) = crate::response::incident::parse_id(&inc) else {
            continue;
        };
        // The note for people; the digests it let through for the
        // policy check (a workload running one is admitted, not a bypass).
        let glass = Event::BreakGlass {
            ticket: ticket.clone(),
            by: who.user.clone(),
            object: object.to_string(),
            digests: overridden_digests(verdict, &inc),
        };
        log::append(ingest, id, log::COLLECTOR, now_ms, |_| {
            Ok(vec![Event::Note { text: text.clone() }, glass.clone()])
        })?;
    }
    Ok(())
}

/// The pinned digests of the images a break-glass let through despite
/// incident `inc`, each once.
fn overridden_digests(v: &Verdict, inc: &str) -> Vec<String> {
    let digests: std::collections::BTreeSet<String> = v
        .overridden
        .iter()
        .filter(|r| r.incident == inc)
        .filter_map(|r| super::Image::from_reference(&r.container, &r.image).digest)
        .collect();
    digests.into_iter().collect()
}

fn overridden_message(v: &Verdict) -> String {
    let mut lines: Vec<&str> = v.overridden.iter().map(|r| r.message.as_str()).collect();
    lines.dedup();
    lines.join("; ")
}
