//! The incident: what a responder opened (from an advisory, a package
//! range, later a policy rule or an egress alert), what it covers (its
//! scope: the exposure answer), and where it stands. It is never stored as
//! such: an incident is [`project`]ed from its append-only event log, so
//! who did what and when is the incident, not a note beside it. The policy
//! (tiers), plans, approvals and actions come in as further [`Event`]
//! kinds of the same log.
//!
//! `scope` computes the scope from the store's exposure answer; `log`
//! opens, refreshes, appends to and reads incidents through the store.
//!
//! **Invariant:** the incident is only ever the projection of its
//! append-only log; [`project`] is a pure function of the events, and a
//! write appends only events that it has checked to project.

pub mod act;
pub mod log;
pub mod scope;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use serde::{Deserialize, Serialize};

pub use super::plan::{Plan, PlannedAction, Target};
use super::{Mode, plan::PLAN_TTL_MS};
use crate::store::IncidentEventRecord;

/// Where an incident stands. The names (snake_case) are an interface:
/// `patchgap incident show -o json` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Opened; the scope is not computed yet.
    Detected,
    /// The exposed workloads, hosts and processes are known.
    Scoped,
    /// The policy chose actions (a plan with a hash).
    Planned,
    /// Some planned action waits for an approval of that plan.
    ApprovalPending,
    /// The containment actions took effect.
    Contained,
    /// Waiting for runtime evidence to converge.
    Verifying,
    /// Containment is being lifted after convergence.
    Recovering,
    /// Closed with evidence. Terminal.
    Closed,
    /// Not an exposure after all. Terminal; reachable from any open state.
    FalsePositive,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Detected,
        State::Scoped,
        State::Planned,
        State::ApprovalPending,
        State::Contained,
        State::Verifying,
        State::Recovering,
        State::Closed,
        State::FalsePositive,
    ];

    /// The name as JSON and the store spell it.
    pub fn name(self) -> &'static str {
        match self {
            State::Detected => "detected",
            State::Scoped => "scoped",
            State::Planned => "planned",
            State::ApprovalPending => "approval_pending",
            State::Contained => "contained",
            State::Verifying => "verifying",
            State::Recovering => "recovering",
            State::Closed => "closed",
            State::FalsePositive => "false_positive",
        }
    }

    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Open: neither closed nor a false positive. An open incident holds
    /// its dedup key and has its scope refreshed.
    pub fn is_open(self) -> bool {
        !matches!(self, State::Closed | State::FalsePositive)
    }

    /// The transition table. Forward along the response loop, with the
    /// few ways back a responder needs: a plan or a pending approval goes
    /// back to `scoped` when the scope changed under it (the plan hash no
    /// longer holds), an approval can be refused back to `planned`, and
    /// a failed verification goes back to `contained`. A plan with
    /// nothing to contain (tier 3: a patch window) goes straight to
    /// `verifying`. A closed incident reopens to `scoped` when an affected
    /// version runs in its scope again (a rollback, a new host, an old
    /// image: `verify` decides), so the policy plans it again.
    /// `false_positive` is reachable from every open state and leads
    /// nowhere. (A forced close is its own event, [`Event::ForceClosed`],
    /// not an edge: no `state_changed` skips the gate.)
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        if to == FalsePositive {
            return self.is_open();
        }
        matches!(
            (self, to),
            (Detected, Scoped)
                | (Scoped, Planned)
                | (Planned, ApprovalPending)
                | (Planned, Contained)
                | (Planned, Verifying)
                | (Planned, Scoped)
                | (ApprovalPending, Contained)
                | (ApprovalPending, Planned)
                | (ApprovalPending, Scoped)
                | (Contained, Verifying)
                | (Verifying, Contained)
                | (Verifying, Recovering)
                | (Recovering, Closed)
                | (Closed, Scoped)
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What opened the incident. Each kind has its own dedup key shape
/// ([`Source::dedup_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// An advisory, by its stored id (an alias the responder typed is
    /// resolved first, so CVE and GHSA ids of one record open one
    /// incident), optionally only on one host.
    Advisory {
        id: String,
        /// The id or alias as the responder gave it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        asked_as: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// A package and an optional version range in its ecosystem's order.
    Package {
        /// As the responder named it: a name, or a purl without its
        /// version (the version became the range).
        package: String,
        /// The name queries compare (npm and Go names with their
        /// namespace).
        name: String,
        /// A purl type, when a purl named it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ecosystem: Option<String>,
        /// A Maven groupId, from a purl.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<String>,
    },
    /// A policy rule that opens incidents by itself (the policy engine).
    PolicyRule { rule: String, subject: String },
    /// An egress alert (a process talking to a destination its workload
    /// never used).
    EgressAlert { alert: String },
}

impl Source {
    /// The key under which only one open incident may exist:
    /// `advisory:<ID>` (with ` host=<H>` for a host filter),
    /// `package:<purl-or-name>@<range>`, `policy:<rule>:<subject>`,
    /// `egress:<alert>`.
    pub fn dedup_key(&self) -> String {
        match self {
            Source::Advisory { id, host, .. } => match host {
                Some(h) => format!("advisory:{id} host={h}"),
                None => format!("advisory:{id}"),
            },
            Source::Package { package, range, .. } => match range {
                Some(r) => format!("package:{package}@{r}"),
                None => format!("package:{package}"),
            },
            Source::PolicyRule { rule, subject } => format!("policy:{rule}:{subject}"),
            Source::EgressAlert { alert } => format!("egress:{alert}"),
        }
    }
}

/// The exposure answer for an incident's subject, folded for a responder:
/// every set is sorted, so two scopes compare equal exactly when they say
/// the same thing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Fleet workload keys (`k8s:...`, `container:...`, `host:...`).
    pub workloads: BTreeSet<String>,
    /// Host names.
    pub hosts: BTreeSet<String>,
    /// Image digests the exposed workloads run (and SBOM images that
    /// declare the package).
    pub image_digests: BTreeSet<String>,
    /// The exposed processes' pids, per host name.
    pub pids: BTreeMap<String, BTreeSet<u32>>,
    /// Data classifications of the exposed workloads (`sensitive`, ...).
    pub data_scopes: BTreeSet<String>,
    /// Some exposed workload runs a privileged process.
    pub privileged: bool,
    /// The strongest evidence among the exposed processes (`exe`,
    /// `mapped`, `embedded`, `opened`, `installed`, `declared`); empty
    /// when nothing is exposed.
    pub evidence: String,
    /// The packages found, as purls (or name@version).
    pub packages: BTreeSet<String>,
    /// How many processes are exposed.
    pub processes: u32,
    /// The answer was cut at `scope::MAX_PROCESSES` processes.
    pub truncated: bool,
    /// Each exposed workload instance (a workload's processes on one
    /// host), sorted by host key and instance: what the policy routes on
    /// and what an action needs to reach it.
    #[serde(default)]
    pub instances: Vec<Instance>,
}

/// A workload's processes on one host, as the scope exposes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub host: String,
    /// The host as its agent's stream is keyed (machine id, else name).
    pub host_key: String,
    /// The fleet workload key (`k8s:...`, `unit:...`, `host:...`).
    pub workload: String,
    /// The agent's id for it on its host (`pod/<uid>/<container>`, ...).
    pub instance: String,
    /// Its cgroup v2 path, as the agent read it ("" when unknown).
    pub cgroup: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_scope: Option<String>,
    pub privileged: bool,
    /// Some exposed process runs as root.
    pub root: bool,
    /// Every running process of the instance, exposed or not.
    pub processes: u32,
    /// The exposed ones.
    pub pids: BTreeSet<u32>,
    /// What is exposed: each advisory (or package) and package, with the
    /// strongest evidence among the instance's processes.
    pub findings: BTreeSet<Finding>,
}

/// One package found in an instance, under one advisory (empty for an
/// incident opened from a package range).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub advisory: String,
    /// The advisory's severity as stored (`critical`, ...), "" if none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub severity: String,
    /// The CVSS base score, in tenths (98 for 9.8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_x10: Option<u32>,
    /// The purl type (`deb`, `pypi`, ...).
    pub ecosystem: String,
    /// The package's purl, or name@version without one.
    pub purl: String,
    pub evidence: String,
}

/// Workloads, hosts and pids that one scope has and another has not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeDiff {
    pub workloads: BTreeSet<String>,
    pub hosts: BTreeSet<String>,
    pub pids: BTreeMap<String, BTreeSet<u32>>,
}

impl ScopeDiff {
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.hosts.is_empty() && self.pids.is_empty()
    }
}

impl Scope {
    /// What `self` has that `other` has not.
    pub fn minus(&self, other: &Scope) -> ScopeDiff {
        let mut pids = BTreeMap::new();
        for (host, mine) in &self.pids {
            let gone: BTreeSet<u32> = match other.pids.get(host) {
                Some(theirs) => mine.difference(theirs).copied().collect(),
                None => mine.clone(),
            };
            if !gone.is_empty() {
                pids.insert(host.clone(), gone);
            }
        }
        ScopeDiff {
            workloads: self
                .workloads
                .difference(&other.workloads)
                .cloned()
                .collect(),
            hosts: self.hosts.difference(&other.hosts).cloned().collect(),
            pids,
        }
    }

    /// The event that moves an incident from `old` to this scope, or
    /// None when nothing differs.
    pub fn change_from(&self, old: &Scope) -> Option<Event> {
        (self != old).then(|| Event::ScopeChanged {
            scope: self.clone(),
            added: self.minus(old),
            removed: old.minus(self),
        })
    }
}

/// One thing that happened to an incident. The `kind` names (snake_case)
/// are an interface: they are stored and printed. New kinds (tier routed,
/// plan, approval, action) are added here by the stages that make them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Opened {
        source: Source,
        dedup_key: String,
    },
    /// The full new scope, and what it added and removed.
    ScopeChanged {
        scope: Scope,
        added: ScopeDiff,
        removed: ScopeDiff,
    },
    StateChanged {
        from: State,
        to: State,
        #[serde(default)]
        reason: String,
    },
    Note {
        text: String,
    },
    /// The policy routed the incident to a tier (None: no tier's rule
    /// matches).
    TierRouted {
        tier: Option<u32>,
        #[serde(default)]
        name: String,
    },
    /// A plan, recorded for its actor (the requester an approval is
    /// checked against). Actions of earlier plans that were neither
    /// approved nor requested are superseded by it.
    Planned {
        plan: Plan,
    },
    /// The actor approved the plan with this hash: these of its actions
    /// are requested (or, without an executor, stay planned, approved).
    Approved {
        plan: String,
        actions: Vec<u32>,
    },
    /// Actions that need no approval, requested when their plan was made.
    Requested {
        actions: Vec<u32>,
    },
    /// What the agents reported about an action.
    Observed {
        action: u32,
        observation: Observation,
    },
    /// Actions lifted, and why (`false-positive`, `not-affected`,
    /// `resolved`, `revert_after`).
    Reverted {
        actions: Vec<u32>,
        reason: String,
    },
    /// One verification run: each convergence check's verdict with its
    /// evidence (`response::verify`).
    Checked {
        run: super::verify::Run,
    },
    /// A responder closed the incident without converged evidence, for
    /// `reason`. The metrics count it as closed without evidence.
    ForceClosed {
        reason: String,
    },
    /// A host left the incident's coverage on purpose (`patchgap hosts
    /// retire`): it is decommissioned, not silent.
    HostRetired {
        host: String,
        #[serde(default)]
        reason: String,
    },
    /// A deploy the gate stopped, let through by a break-glass ticket
    /// (`patchgap.io/break-glass`), with the image digests it overrode:
    /// verification's policy check counts a workload running one of them
    /// as admitted with a ticket, not as a bypass of the gate.
    BreakGlass {
        ticket: String,
        #[serde(default)]
        by: String,
        object: String,
        #[serde(default)]
        digests: Vec<String>,
    },
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Opened { .. } => "opened",
            Event::ScopeChanged { .. } => "scope_changed",
            Event::StateChanged { .. } => "state_changed",
            Event::Note { .. } => "note",
            Event::TierRouted { .. } => "tier_routed",
            Event::Planned { .. } => "planned",
            Event::Approved { .. } => "approved",
            Event::Requested { .. } => "requested",
            Event::Observed { .. } => "observed",
            Event::Reverted { .. } => "reverted",
            Event::Checked { .. } => "checked",
            Event::ForceClosed { .. } => "force_closed",
            Event::HostRetired { .. } => "host_retired",
            Event::BreakGlass { .. } => "break_glass",
        }
    }
}

/// What the agents' reports showed about an action, at `at_ms` (the
/// agents' time of it where they say it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "is", rename_all = "snake_case")]
pub enum Observation {
    /// In force on every target.
    Applied { at_ms: i64 },
    /// Its effect seen: the first connect or packet blocked (or, in
    /// shadow mode, that would have been).
    Verified {
        at_ms: i64,
        time_to_containment_ms: i64,
    },
    /// An agent could not carry it out.
    Failed { at_ms: i64, reason: String },
    /// After a revert, no target's agent has it in force any more.
    RevertVerified { at_ms: i64 },
    /// The endpoint a webhook action went to answered 2xx. Done then,
    /// unless the endpoint confirms what it did: then it stays requested
    /// until [`Observation::Confirmed`].
    Acknowledged {
        at_ms: i64,
        endpoint: String,
        webhook_id: String,
        status: u16,
        awaits_confirmation: bool,
    },
    /// The receiver confirmed it carried the action out (its callback).
    Confirmed {
        at_ms: i64,
        by: String,
        #[serde(default)]
        note: String,
    },
}

/// Where an action stands. The names are an interface (`incident show -o
/// json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Planned, not (yet) carried out: waiting for an approval, in
    /// `observe` mode, or with no executor for it.
    Planned,
    /// Approved (or automatic) and sent to the agents.
    Requested,
    /// In force on every target.
    Applied,
    /// Its effect seen.
    Verified,
    /// Lifted.
    Reverted,
    /// An agent could not carry it out (it stays requested: an agent that
    /// can later will).
    Failed,
}

impl ActionState {
    pub fn name(self) -> &'static str {
        match self {
            ActionState::Planned => "planned",
            ActionState::Requested => "requested",
            ActionState::Applied => "applied",
            ActionState::Verified => "verified",
            ActionState::Reverted => "reverted",
            ActionState::Failed => "failed",
        }
    }
}

/// One action of an incident, from its plan to its revert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentAction {
    #[serde(flatten)]
    pub planned: PlannedAction,
    /// The hash of the plan it came from.
    pub plan: String,
    pub state: ActionState,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub approved_by: String,
    #[serde(default)]
    pub times: ActionTimes,
    /// From the incident's detection to the effect seen.
    #[serde(default)]
    pub time_to_containment_ms: Option<i64>,
}

/// When an action entered each state (ms since the epoch; 0: not yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionTimes {
    pub planned: i64,
    pub requested: i64,
    pub applied: i64,
    pub verified: i64,
    pub reverted: i64,
    pub failed: i64,
    pub revert_verified: i64,
}

impl IncidentAction {
    /// Its executor must hold it in force: requested and not reverted,
    /// not only observed, and carried out by the agents on hosts or by
    /// the deploy gate at admission (from the moment it is requested:
    /// the gate reads this from the store at every decision).
    pub fn in_force(&self) -> bool {
        matches!(
            self.state,
            ActionState::Requested
                | ActionState::Applied
                | ActionState::Verified
                | ActionState::Failed
        ) && (self.planned.on_hosts() || self.planned.by_gate())
            && self.planned.mode != Mode::Observe
    }

    /// When `revert_after` lifts it: that long after it took effect.
    pub fn revert_at_ms(&self) -> Option<i64> {
        let ttl = self.planned.revert_after_ms?;
        (self.in_force() && self.times.applied > 0)
            .then(|| self.times.applied.saturating_add(ttl as i64))
    }
}

/// The plan recorded last, with when and for whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedPlan {
    pub plan: Plan,
    pub at_ms: i64,
    pub by: String,
}

impl RecordedPlan {
    pub fn expires_at_ms(&self) -> i64 {
        self.at_ms.saturating_add(PLAN_TTL_MS)
    }
}

/// An event as the log holds it: numbered from 1, with when and who.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub event: Event,
}

impl Recorded {
    pub fn to_record(&self) -> IncidentEventRecord {
        IncidentEventRecord {
            seq: self.seq,
            at_ms: self.at_ms,
            actor: self.actor.clone(),
            kind: self.event.kind().to_string(),
            payload: serde_json::to_string(&self.event).expect("events serialize"),
        }
    }

    /// The stored event, decoded; its payload must be the kind the row
    /// says.
    pub fn from_record(r: &IncidentEventRecord) -> Result<Recorded, IncidentError> {
        let undecodable = |reason: String| IncidentError::Undecodable {
            seq: r.seq,
            kind: r.kind.clone(),
            reason,
        };
        let event: Event =
            serde_json::from_str(&r.payload).map_err(|e| undecodable(e.to_string()))?;
        if event.kind() != r.kind {
            return Err(undecodable(format!("the payload is a {}", event.kind())));
        }
        Ok(Recorded {
            seq: r.seq,
            at_ms: r.at_ms,
            actor: r.actor.clone(),
            event,
        })
    }
}

/// The incident as its log says it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub dedup_key: String,
    pub state: State,
    /// The policy's tier (1 to 3). None until the policy routes the
    /// incident, which is an event kind the policy stage adds.
    pub tier: Option<u32>,
    pub source: Source,
    pub opened_at_ms: i64,
    pub opened_by: String,
    /// When the last event happened.
    pub updated_at_ms: i64,
    pub scope: Scope,
    /// The last event's number.
    pub last_seq: i64,
    #[serde(default)]
    pub tier_name: String,
    /// The plan recorded last.
    #[serde(default)]
    pub plan: Option<RecordedPlan>,
    /// Every action of the plans recorded, but those superseded before
    /// they were approved or requested.
    #[serde(default)]
    pub actions: Vec<IncidentAction>,
    /// The number the next planned action gets.
    #[serde(default = "one")]
    pub next_action: u32,
    /// Every host any scope of the incident named, but those retired:
    /// the hosts whose freshness the coverage check asks for, also after
    /// the affected processes left the scope.
    #[serde(default)]
    pub hosts_seen: BTreeSet<String>,
    /// Hosts retired on purpose (decommissioned), never asked for again.
    #[serde(default)]
    pub hosts_retired: BTreeSet<String>,
    /// The last verification run and the successful streak it ends.
    #[serde(default)]
    pub verification: Option<super::verify::Verification>,
    /// Why a responder closed it without evidence (`force_closed`).
    #[serde(default)]
    pub forced_close: Option<String>,
    /// How often it reopened after a close.
    #[serde(default)]
    pub reopened: u32,
    /// The image digests break-glass tickets let through the gate, each
    /// with the first ticket that did (bounded by the digests blocked).
    #[serde(default)]
    pub break_glass: BTreeMap<String, BreakGlassRecord>,
    /// Reopened since its last plan: that plan's containment was lifted
    /// when it closed, so it no longer holds, even with the same hash.
    /// The next plan is recorded afresh: `auto` actions run again, and
    /// `required` ones wait for a new approval.
    #[serde(default)]
    pub plan_stale: bool,
}

/// A break-glass admission of one digest: the ticket, who, what, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassRecord {
    pub ticket: String,
    pub by: String,
    pub object: String,
    pub at_ms: i64,
}

fn one() -> u32 {
    1
}

/// Why a log does not project, or an event may not be appended.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IncidentError {
    #[error("the incident's log is empty")]
    Empty,
    #[error("an incident's log starts with `opened`, not `{kind}`")]
    NotOpened { kind: String },
    #[error("event {seq} follows event {last}: the log has a gap or a fork")]
    OutOfOrder { seq: i64, last: i64 },
    #[error("event {seq} opens an incident that is already open")]
    OpenedTwice { seq: i64 },
    #[error("an incident cannot go from {from} to {to}")]
    IllegalTransition { from: State, to: State },
    #[error("event {seq} moves the incident from {claimed}, but it is {actual}")]
    StaleFrom {
        seq: i64,
        claimed: State,
        actual: State,
    },
    #[error("event {seq}: the scope of a {state} incident does not change any more")]
    ScopeOfFinished { seq: i64, state: State },
    #[error("event {seq}: action {action}: {reason}")]
    BadAction {
        seq: i64,
        action: u32,
        reason: String,
    },
    #[error("event {seq} approves plan {claimed}, but the plan in force is {actual}")]
    StalePlan {
        seq: i64,
        claimed: String,
        actual: String,
    },
    #[error("no plan is recorded")]
    NoPlan,
    #[error("plan {asked} no longer holds: the plan now is {now}")]
    PlanChanged { asked: String, now: String },
    #[error("plan {hash} expired at {expired_at_ms}")]
    PlanExpired { hash: String, expired_at_ms: i64 },
    #[error("nothing in the plan waits for an approval")]
    NothingToApprove,
    #[error("{requester} asked for the plan and cannot approve it")]
    SameApprover { requester: String },
    #[error("no action {0} in force")]
    NoSuchAction(u32),
    #[error("no action in force")]
    NothingToRevert,
    #[error("a forced close needs a reason (--reason TEXT)")]
    ForceWithoutReason,
    #[error("event {seq}: a {state} incident is not being verified")]
    NotVerifying { seq: i64, state: State },
    #[error("event {seq} ({kind}) does not decode: {reason}")]
    Undecodable {
        seq: i64,
        kind: String,
        reason: String,
    },
}

impl Incident {
    /// The incident its first event opens.
    pub fn start(first: &Recorded) -> Result<Incident, IncidentError> {
        let Event::Opened { source, dedup_key } = &first.event else {
            return Err(IncidentError::NotOpened {
                kind: first.event.kind().to_string(),
            });
        };
        if first.seq != 1 {
            return Err(IncidentError::OutOfOrder {
                seq: first.seq,
                last: 0,
            });
        }
        Ok(Incident {
            dedup_key: dedup_key.clone(),
            state: State::Detected,
            tier: None,
            source: source.clone(),
            opened_at_ms: first.at_ms,
            opened_by: first.actor.clone(),
            updated_at_ms: first.at_ms,
            scope: Scope::default(),
            last_seq: first.seq,
            tier_name: String::new(),
            plan: None,
            actions: Vec::new(),
            next_action: 1,
            hosts_seen: BTreeSet::new(),
            hosts_retired: BTreeSet::new(),
            verification: None,
            forced_close: None,
            reopened: 0,
            break_glass: BTreeMap::new(),
            plan_stale: false,
        })
    }

    /// The incident after one more event; an event that does not follow
    /// (numbering, an illegal transition) is an error and changes nothing.
    pub fn apply(&mut self, r: &Recorded) -> Result<(), IncidentError> {
        if r.seq != self.last_seq + 1 {
            return Err(IncidentError::OutOfOrder {
                seq: r.seq,
                last: self.last_seq,
            });
        }
        match &r.event {
            Event::Opened { .. } => return Err(IncidentError::OpenedTwice { seq: r.seq }),
            Event::ScopeChanged { scope, .. } => {
                if !self.state.is_open() {
                    return Err(IncidentError::ScopeOfFinished {
                        seq: r.seq,
                        state: self.state,
                    });
                }
                self.scope = scope.clone();
                self.hosts_seen.extend(
                    scope
                        .hosts
                        .iter()
                        .filter(|h| !self.hosts_retired.contains(*h))
                        .cloned(),
                );
            }
            Event::StateChanged { from, to, .. } => {
                if *from != self.state {
                    return Err(IncidentError::StaleFrom {
                        seq: r.seq,
                        claimed: *from,
                        actual: self.state,
                    });
                }
                if !from.can_become(*to) {
                    return Err(IncidentError::IllegalTransition {
                        from: *from,
                        to: *to,
                    });
                }
                if *from == State::Closed {
                    // Reopened: the gate starts over, and so does the
                    // containment (see `plan_stale`).
                    self.reopened += 1;
                    self.verification = None;
                    self.forced_close = None;
                    self.plan_stale = self.plan.is_some();
                }
                self.state = *to;
            }
            Event::Note { .. } => {}
            Event::Checked { run } => {
                if !matches!(
                    self.state,
                    State::Contained | State::Verifying | State::Recovering
                ) {
                    return Err(IncidentError::NotVerifying {
                        seq: r.seq,
                        state: self.state,
                    });
                }
                let streak = match (&self.verification, run.verdict) {
                    (_, super::verify::Verdict::Successful) => {
                        self.verification.as_ref().map_or(0, |v| v.streak) + 1
                    }
                    _ => 0,
                };
                let streak_since_ms = match &self.verification {
                    Some(v) if streak > 1 => v.streak_since_ms,
                    _ if streak == 1 => r.at_ms,
                    _ => 0,
                };
                self.verification = Some(super::verify::Verification {
                    last: run.clone(),
                    at_ms: r.at_ms,
                    streak,
                    streak_since_ms,
                });
            }
            Event::ForceClosed { reason } => {
                if !self.state.is_open() {
                    return Err(IncidentError::IllegalTransition {
                        from: self.state,
                        to: State::Closed,
                    });
                }
                self.state = State::Closed;
                self.forced_close = Some(reason.clone());
            }
            Event::HostRetired { host, .. } => {
                self.hosts_seen.remove(host);
                self.hosts_retired.insert(host.clone());
            }
            Event::BreakGlass {
                ticket,
                by,
                object,
                digests,
            } => {
                for d in digests {
                    self.break_glass
                        .entry(d.clone())
                        .or_insert_with(|| BreakGlassRecord {
                            ticket: ticket.clone(),
                            by: by.clone(),
                            object: object.clone(),
                            at_ms: r.at_ms,
                        });
                }
            }
            Event::TierRouted { tier, name } => {
                self.tier = *tier;
                self.tier_name = name.clone();
            }
            Event::Planned { plan } => {
                self.record_plan(r, plan)?;
                self.plan_stale = false;
            }
            Event::Approved { plan, actions } => {
                let actual = self.plan.as_ref().map(|p| p.plan.hash.clone());
                if actual.as_deref() != Some(plan.as_str()) {
                    return Err(IncidentError::StalePlan {
                        seq: r.seq,
                        claimed: plan.clone(),
                        actual: actual.unwrap_or_default(),
                    });
                }
                for id in actions {
                    let a = self.action_in(r.seq, *id, ActionState::Planned)?;
                    if a.plan != *plan {
                        return Err(bad(r.seq, *id, "is not an action of that plan"));
                    }
                    a.approved_by = r.actor.clone();
                    if a.planned.has_executor() && a.planned.mode != Mode::Observe {
                        a.state = ActionState::Requested;
                        a.times.requested = r.at_ms;
                    }
                }
            }
            Event::Requested { actions } => {
                for id in actions {
                    let a = self.action_in(r.seq, *id, ActionState::Planned)?;
                    a.state = ActionState::Requested;
                    a.times.requested = r.at_ms;
                }
            }
            Event::Observed {
                action,
                observation,
            } => {
                let a = self
                    .actions
                    .iter_mut()
                    .find(|a| a.planned.id == *action)
                    .ok_or_else(|| bad(r.seq, *action, "no such action"))?;
                observe(a, observation).map_err(|why| bad(r.seq, *action, why))?;
            }
            Event::Reverted { actions, reason } => {
                for id in actions {
                    let a = self
                        .actions
                        .iter_mut()
                        .find(|a| a.planned.id == *id)
                        .ok_or_else(|| bad(r.seq, *id, "no such action"))?;
                    if a.state == ActionState::Reverted {
                        return Err(bad(r.seq, *id, "is reverted already"));
                    }
                    a.state = ActionState::Reverted;
                    a.times.reverted = r.at_ms;
                    a.reason = reason.clone();
                }
            }
        }
        self.last_seq = r.seq;
        self.updated_at_ms = r.at_ms;
        Ok(())
    }

    /// Records a plan: its actions are numbered on from `next_action`,
    /// and earlier ones never approved nor requested are superseded.
    fn record_plan(&mut self, r: &Recorded, plan: &Plan) -> Result<(), IncidentError> {
        let mut next = self.next_action;
        for a in &plan.actions {
            if a.id != next {
                return Err(bad(
                    r.seq,
                    a.id,
                    "plans number their actions on, without gaps",
                ));
            }
            next += 1;
        }
        self.actions
            .retain(|a| !(a.state == ActionState::Planned && a.approved_by.is_empty()));
        for a in &plan.actions {
            let reason = match (&a.no_executor, a.mode) {
                (Some(why), _) => why.clone(),
                (None, Mode::Observe) => {
                    "observe mode: planned and reported, never carried out".into()
                }
                (None, _) => String::new(),
            };
            self.actions.push(IncidentAction {
                planned: a.clone(),
                plan: plan.hash.clone(),
                state: ActionState::Planned,
                reason,
                approved_by: String::new(),
                times: ActionTimes {
                    planned: r.at_ms,
                    ..ActionTimes::default()
                },
                time_to_containment_ms: None,
            });
        }
        self.next_action = next;
        self.plan = Some(RecordedPlan {
            plan: plan.clone(),
            at_ms: r.at_ms,
            by: r.actor.clone(),
        });
        Ok(())
    }

    /// Action `id`, which must be in state `want`.
    fn action_in(
        &mut self,
        seq: i64,
        id: u32,
        want: ActionState,
    ) -> Result<&mut IncidentAction, IncidentError> {
        let a = self
            .actions
            .iter_mut()
            .find(|a| a.planned.id == id)
            .ok_or_else(|| bad(seq, id, "no such action"))?;
        if a.state != want {
            return Err(bad(
                seq,
                id,
                &format!("is {}, not {}", a.state.name(), want.name()),
            ));
        }
        Ok(a)
    }

    /// A state change from where the incident stands, checked against
    /// the transition table before anything is written.
    pub fn transition(&self, to: State, reason: &str) -> Result<Event, IncidentError> {
        if !self.state.can_become(to) {
            return Err(IncidentError::IllegalTransition {
                from: self.state,
                to,
            });
        }
        Ok(Event::StateChanged {
            from: self.state,
            to,
            reason: reason.to_string(),
        })
    }
}

fn bad(seq: i64, action: u32, reason: &str) -> IncidentError {
    IncidentError::BadAction {
        seq,
        action,
        reason: reason.to_string(),
    }
}

/// An action after what the agents showed about it.
fn observe(a: &mut IncidentAction, o: &Observation) -> Result<(), &'static str> {
    use ActionState::*;
    match o {
        Observation::RevertVerified { at_ms } => {
            if a.state != Reverted {
                return Err("a revert is verified only after a revert");
            }
            a.times.revert_verified = *at_ms;
        }
        // The agents may report an effect only after a quick revert lifted
        // it (see `contain`): it still times the containment, once, if it
        // came no later than the revert, and the action stays reverted.
        Observation::Verified {
            at_ms,
            time_to_containment_ms,
        } if a.state == Reverted => {
            if a.times.verified != 0 {
                return Err("its effect was seen already");
            }
            if *at_ms > a.times.reverted {
                return Err("an effect seen after the revert is not its containment");
            }
            if a.times.applied == 0 {
                a.times.applied = *at_ms;
            }
            a.times.verified = *at_ms;
            a.time_to_containment_ms = Some(*time_to_containment_ms);
        }
        _ if !matches!(a.state, Requested | Applied | Verified | Failed) => {
            return Err("only a requested action is observed");
        }
        Observation::Applied { at_ms } => {
            a.state = Applied;
            a.times.applied = *at_ms;
            a.reason.clear();
        }
        Observation::Verified {
            at_ms,
            time_to_containment_ms,
        } => {
            if a.times.applied == 0 {
                a.times.applied = *at_ms;
            }
            a.state = Verified;
            a.times.verified = *at_ms;
            a.time_to_containment_ms = Some(*time_to_containment_ms);
            a.reason.clear();
        }
        Observation::Failed { at_ms, reason } => {
            a.state = Failed;
            a.times.failed = *at_ms;
            a.reason = reason.clone();
        }
        Observation::Acknowledged {
            at_ms,
            endpoint,
            webhook_id,
            status,
            awaits_confirmation,
        } => {
            // Webhook actions, and the pages Alertmanager takes.
            let pages = matches!(
                a.planned.kind,
                super::ActionKind::OpenIncidentSev1 | super::ActionKind::OpenIncidentSev2
            );
            if !a.planned.via_endpoint() && !pages {
                return Err("only an action sent to an endpoint or a page is acknowledged");
            }
            let ack = match webhook_id.is_empty() {
                true => format!("acknowledged by {endpoint} (HTTP {status})"),
                false => {
                    format!("acknowledged by {endpoint} (HTTP {status}, webhook-id {webhook_id})")
                }
            };
            if *awaits_confirmation {
                // Still requested: done when confirmed.
                a.reason = format!("{ack}; waiting for its confirmation");
            } else {
                a.state = Applied;
                a.times.applied = *at_ms;
                a.reason = ack;
            }
        }
        Observation::Confirmed { at_ms, by, note } => {
            if !a.planned.via_endpoint() {
                return Err("only an action sent to an endpoint is confirmed");
            }
            if a.state == Failed {
                return Err("a failed delivery cannot be confirmed");
            }
            if a.times.applied == 0 {
                a.times.applied = *at_ms;
            }
            a.state = Verified;
            a.times.verified = *at_ms;
            a.reason = match note.is_empty() {
                true => format!("confirmed by {by}"),
                false => format!("confirmed by {by}: {note}"),
            };
        }
    }
    Ok(())
}

/// The incident a log describes: the first event opens it and every
/// later one applies in order. Pure: the same events give the same
/// incident.
pub fn project(events: &[Recorded]) -> Result<Incident, IncidentError> {
    let (first, rest) = events.split_first().ok_or(IncidentError::Empty)?;
    let mut incident = Incident::start(first)?;
    for r in rest {
        incident.apply(r)?;
    }
    Ok(incident)
}

/// How incidents are named to people: `INC-<id>`.
pub fn display_id(id: i64) -> String {
    format!("INC-{id}")
}

/// The store's id from `INC-7`, `inc-7` or `7`.
pub fn parse_id(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits = match s.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("inc-") => &s[4..],
        _ => s,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n: &i64| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: i64, event: Event) -> Recorded {
        Recorded {
            seq,
            at_ms: 1_000 * seq,
            actor: "alice".into(),
            event,
        }
    }

    fn opened() -> Event {
        let source = Source::Advisory {
            id: "PYSEC-2023-228".into(),
            asked_as: "CVE-2023-5752".into(),
            host: None,
        };
        Event::Opened {
            dedup_key: source.dedup_key(),
            source,
        }
    }

    fn moved(from: State, to: State) -> Event {
        Event::StateChanged {
            from,
            to,
            reason: String::new(),
        }
    }

    fn scope(pids: &[(&str, u32)]) -> Scope {
        let mut s = Scope::default();
        for (host, pid) in pids {
            s.hosts.insert(host.to_string());
            s.workloads.insert(format!("host:{host}"));
            s.pids.entry(host.to_string()).or_default().insert(*pid);
            s.processes += 1;
        }
        s
    }

    /// The path a state takes from `detected` to reach `to` along the
    /// table's forward edges.
    fn path_to(to: State) -> Vec<State> {
        use State::*;
        let forward = [
            Detected,
            Scoped,
            Planned,
            ApprovalPending,
            Contained,
            Verifying,
            Recovering,
            Closed,
        ];
        match to {
            FalsePositive => vec![Detected, FalsePositive],
            s => forward[..=forward.iter().position(|f| *f == s).unwrap()].to_vec(),
        }
    }

    fn log_to(to: State) -> Vec<Recorded> {
        let path = path_to(to);
        let mut log = vec![at(1, opened())];
        for w in path.windows(2) {
            log.push(at(log.len() as i64 + 1, moved(w[0], w[1])));
        }
        log
    }

    #[test]
    fn a_log_projects_to_its_incident() {
        let s1 = scope(&[("alpha", 10)]);
        let log = vec![
            at(1, opened()),
            at(2, s1.change_from(&Scope::default()).unwrap()),
            at(3, moved(State::Detected, State::Scoped)),
            at(
                4,
                Event::Note {
                    text: "paged the ML team".into(),
                },
            ),
        ];
        let i = project(&log).unwrap();
        assert_eq!(i.state, State::Scoped);
        assert_eq!(i.dedup_key, "advisory:PYSEC-2023-228");
        assert_eq!(i.scope, s1);
        assert_eq!(
            (i.opened_at_ms, i.updated_at_ms, i.last_seq),
            (1000, 4000, 4)
        );
        assert_eq!(i.opened_by, "alice");
        assert_eq!(i.tier, None);
        // Pure: the same events, the same incident; a prefix is the
        // incident as it was then.
        assert_eq!(project(&log).unwrap(), i);
        assert_eq!(project(&log[..2]).unwrap().state, State::Detected);
    }

    #[test]
    fn every_state_is_reachable_and_the_table_is_exact() {
        use State::*;
        for s in State::ALL {
            assert_eq!(project(&log_to(s)).unwrap().state, s, "{s}");
            assert_eq!(State::parse(s.name()), Some(s));
            // The serde name is the one the store and the CLI print.
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
        let legal: BTreeSet<(State, State)> = State::ALL
            .into_iter()
            .flat_map(|a| State::ALL.into_iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        let mut want: BTreeSet<(State, State)> = [
            (Detected, Scoped),
            (Scoped, Planned),
            (Planned, ApprovalPending),
            (Planned, Contained),
            (Planned, Verifying),
            (Planned, Scoped),
            (ApprovalPending, Contained),
            (ApprovalPending, Planned),
            (ApprovalPending, Scoped),
            (Contained, Verifying),
            (Verifying, Contained),
            (Verifying, Recovering),
            (Recovering, Closed),
            (Closed, Scoped),
        ]
        .into();
        for s in State::ALL.into_iter().filter(|s| s.is_open()) {
            want.insert((s, FalsePositive));
        }
        assert_eq!(legal, want);
        assert!(!Closed.is_open() && !FalsePositive.is_open());
        assert_eq!(State::parse("open"), None);
    }

    #[test]
    fn illegal_transitions_are_errors() {
        use State::*;
        let cases = [
            (Detected, Contained),
            (Scoped, Closed),
            (Contained, Scoped),
            (Closed, Verifying),
            (Closed, Contained),
            (FalsePositive, Scoped),
            (FalsePositive, Detected),
            (Closed, FalsePositive),
            (FalsePositive, FalsePositive),
        ];
        for (from, to) in cases {
            let mut log = log_to(from);
            let next = log.len() as i64 + 1;
            log.push(at(next, moved(from, to)));
            assert_eq!(
                project(&log),
                Err(IncidentError::IllegalTransition { from, to }),
                "{from} -> {to}"
            );
            let before = project(&log[..log.len() - 1]).unwrap();
            assert_eq!(
                before.transition(to, "x"),
                Err(IncidentError::IllegalTransition { from, to })
            );
        }
        // An event that claims another starting state is stale.
        let mut log = log_to(Scoped);
        log.push(at(3, moved(Detected, Scoped)));
        assert!(matches!(
            project(&log),
            Err(IncidentError::StaleFrom {
                claimed: Detected,
                actual: Scoped,
                ..
            })
        ));
        // False positive from every open state.
        for s in State::ALL.into_iter().filter(|s| s.is_open()) {
            let i = project(&log_to(s)).unwrap();
            assert!(i.transition(FalsePositive, "not loaded").is_ok(), "{s}");
        }
    }

    #[test]
    fn a_log_must_open_once_and_number_on() {
        assert_eq!(project(&[]), Err(IncidentError::Empty));
        assert_eq!(
            project(&[at(1, Event::Note { text: "x".into() })]),
            Err(IncidentError::NotOpened {
                kind: "note".into()
            })
        );
        assert_eq!(
            project(&[at(1, opened()), at(2, opened())]),
            Err(IncidentError::OpenedTwice { seq: 2 })
        );
        assert_eq!(
            project(&[at(1, opened()), at(3, Event::Note { text: "x".into() })]),
            Err(IncidentError::OutOfOrder { seq: 3, last: 1 })
        );
        assert_eq!(
            project(&[at(2, opened())]),
            Err(IncidentError::OutOfOrder { seq: 2, last: 0 })
        );
        // A finished incident's scope stays as it was.
        let mut log = log_to(State::FalsePositive);
        let n = log.len() as i64 + 1;
        log.push(at(
            n,
            scope(&[("a", 1)]).change_from(&Scope::default()).unwrap(),
        ));
        assert!(matches!(
            project(&log),
            Err(IncidentError::ScopeOfFinished { .. })
        ));
    }

    #[test]
    fn scope_changes_say_what_was_added_and_removed() {
        let old = scope(&[("alpha", 10), ("alpha", 11), ("beta", 7)]);
        let new = scope(&[("alpha", 11), ("alpha", 12), ("gamma", 3)]);
        assert_eq!(old.change_from(&old), None);
        let Some(Event::ScopeChanged {
            scope,
            added,
            removed,
        }) = new.change_from(&old)
        else {
            panic!("the scopes differ")
        };
        assert_eq!(scope, new);
        assert_eq!(added.hosts, BTreeSet::from(["gamma".to_string()]));
        assert_eq!(removed.hosts, BTreeSet::from(["beta".to_string()]));
        assert_eq!(
            added.pids,
            BTreeMap::from([
                ("alpha".to_string(), BTreeSet::from([12])),
                ("gamma".to_string(), BTreeSet::from([3]))
            ])
        );
        assert_eq!(
            removed.pids,
            BTreeMap::from([
                ("alpha".to_string(), BTreeSet::from([10])),
                ("beta".to_string(), BTreeSet::from([7]))
            ])
        );
        assert_eq!(added.workloads, BTreeSet::from(["host:gamma".to_string()]));
        // Only the evidence changed: still a change, with empty diffs.
        let mut stronger = old.clone();
        stronger.evidence = "mapped".into();
        match stronger.change_from(&old) {
            Some(Event::ScopeChanged { added, removed, .. }) => {
                assert!(added.is_empty() && removed.is_empty())
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn events_round_trip_through_their_records() {
        let log = vec![
            at(1, opened()),
            at(
                2,
                scope(&[("alpha", 10)])
                    .change_from(&Scope::default())
                    .unwrap(),
            ),
            at(3, moved(State::Detected, State::Scoped)),
            at(
                4,
                Event::Note {
                    text: "\u{1b}[2J hostile".into(),
                },
            ),
        ];
        for r in &log {
            let rec = r.to_record();
            assert_eq!(rec.kind, r.event.kind());
            assert_eq!(&Recorded::from_record(&rec).unwrap(), r);
        }
        let json: serde_json::Value = serde_json::from_str(&log[0].to_record().payload).unwrap();
        assert_eq!(json["kind"], "opened");
        assert_eq!(json["source"]["kind"], "advisory");
        assert_eq!(json["source"]["id"], "PYSEC-2023-228");
        // A payload of another kind than its row, or not JSON, is refused
        // with the event's number.
        let mut wrong = log[3].to_record();
        wrong.kind = "opened".into();
        assert!(matches!(
            Recorded::from_record(&wrong),
            Err(IncidentError::Undecodable { seq: 4, .. })
        ));
        wrong.payload = "{not json".into();
        assert!(Recorded::from_record(&wrong).is_err());
        let unknown = IncidentEventRecord {
            seq: 5,
            kind: "teleported".into(),
            payload: r#"{"kind":"teleported"}"#.into(),
            ..Default::default()
        };
        assert!(Recorded::from_record(&unknown).is_err());
    }

    #[test]
    fn dedup_keys_and_ids() {
        let with_host = Source::Advisory {
            id: "GHSA-x".into(),
            asked_as: String::new(),
            host: Some("web-1".into()),
        };
        assert_eq!(with_host.dedup_key(), "advisory:GHSA-x host=web-1");
        let pkg = Source::Package {
            package: "pkg:pypi/pip".into(),
            name: "pip".into(),
            ecosystem: Some("pypi".into()),
            group: None,
            range: Some("<23.3".into()),
        };
        assert_eq!(pkg.dedup_key(), "package:pkg:pypi/pip@<23.3");
        let name = Source::Package {
            package: "libssl3".into(),
            name: "libssl3".into(),
            ecosystem: None,
            group: None,
            range: None,
        };
        assert_eq!(name.dedup_key(), "package:libssl3");
        assert_eq!(display_id(7), "INC-7");
        for (s, want) in [
            ("INC-7", Some(7)),
            ("inc-12", Some(12)),
            (" 3 ", Some(3)),
            ("INC-", None),
            ("INC-0", None),
            ("INC--1", None),
            ("7x", None),
            ("99999999999999999999", None),
            ("ÍNC-1", None),
        ] {
            assert_eq!(parse_id(s), want, "{s:?}");
        }
    }
}
