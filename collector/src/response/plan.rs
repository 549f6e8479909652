//! The plan: what the policy would do about an incident now, exactly.
//! Every exposed instance (a workload's processes on one host) is routed
//! by its findings; the incident takes the tier of its most severe
//! instance, and that tier's actions act on the instances routed to it,
//! minus what the guards, the exceptions and `max_replica_share` leave
//! out (each exclusion names its reason). The plan has a hash, so an
//! approval names exactly what it approves.
//!
//! Pure: [`make`] is a function of the scope, the policy, what the caller
//! knows is protected and the time. It reads nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Action, ActionKind, Approval, Evidence, FindingFacts, GuardTarget, Mode, Policy, Severity,
    incident::{Instance, Scope},
};

/// How long a recorded plan can be approved: an approval after this is
/// refused, and the responder plans again (and sees what changed).
pub const PLAN_TTL_MS: i64 = 3_600_000;

/// Why nothing carries out an action that needs another system and names
/// no `[[endpoint]]` to send it to: it stays `planned` (a page to
/// Alertmanager, `--alertmanager`, is recorded when Alertmanager takes it).
pub const NO_EXECUTOR: &str = "no executor configured";

/// Why nothing carries out a deploy gate action (`freeze_deployments`,
/// `block_new_artifacts_with_package`): the gate is the admission webhook
/// on the collector's HTTP listener, and this collector serves none. It
/// stays `planned`, and the gate denies nothing for it.
pub const NO_ADMISSION: &str =
    "no admission listener configured (the deploy gate runs on the collector's --http-listen)";

/// The executor a plan names for the deploy gate's actions.
pub const DEPLOY_GATE: &str = "deploy_gate";

/// What carries out the actions that reach other systems, in the
/// collector as it runs now. A plan says who executes each action, so it
/// depends on this; the agents and the `[[endpoint]]`s are always there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executors {
    /// The HTTP listener serving the admission webhook (`--http-listen`),
    /// as `ADDR`: the deploy gate enforces its actions there. None: the
    /// gate's actions have no executor.
    pub admission: Option<String>,
}

/// The deploy gate's two action kinds.
pub fn is_gate_kind(kind: ActionKind) -> bool {
    matches!(
        kind,
        ActionKind::FreezeDeployments | ActionKind::BlockNewArtifactsWithPackage
    )
}

/// One action of a plan with its exact targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedAction {
    /// The number it has (or will have) in the incident.
    pub id: u32,
    pub kind: ActionKind,
    pub mode: Mode,
    pub approval: Approval,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<Exclusion>,
    /// Why nothing will carry it out (None: an executor will).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_executor: Option<String>,
    /// The policy's `[[endpoint]]` it goes to as a signed webhook (its
    /// name only: never the URL's secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl PlannedAction {
    /// An agent carries it out on the targets' hosts.
    pub fn on_hosts(&self) -> bool {
        self.kind.touches_workloads() && self.no_executor.is_none()
    }

    /// A signed webhook to its endpoint carries it out
    /// (`response::deliver`).
    pub fn via_endpoint(&self) -> bool {
        self.endpoint.is_some() && self.no_executor.is_none() && !is_gate_kind(self.kind)
    }

    /// The deploy gate carries it out (`response::gate`): it denies (or
    /// warns about) admissions while the action is in force. Plans made
    /// before the gate was an executor said "no executor configured" and
    /// stay without one.
    pub fn by_gate(&self) -> bool {
        is_gate_kind(self.kind) && self.no_executor.is_none()
    }

    /// Something carries it out once it is requested (outside observe
    /// mode).
    pub fn has_executor(&self) -> bool {
        self.on_hosts() || self.via_endpoint() || self.by_gate()
    }

    /// Who carries it out, as the plan names it: `agents`, `deploy_gate`,
    /// `endpoint:NAME`; None when nothing does.
    pub fn executor(&self) -> Option<String> {
        if self.on_hosts() {
            Some("agents".into())
        } else if self.by_gate() {
            Some(DEPLOY_GATE.into())
        } else if self.via_endpoint() {
            self.endpoint.as_ref().map(|e| format!("endpoint:{e}"))
        } else {
            None
        }
    }
}

/// A workload instance an action reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub host: String,
    pub host_key: String,
    pub workload: String,
    pub instance: String,
    pub cgroup: String,
    /// The exposed processes (not hashed: the action acts on the cgroup).
    pub pids: Vec<u32>,
    /// Every running process in the instance.
    pub processes: u32,
    /// Other exposed instances in the same cgroup on that host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
}

/// An instance the tier's action would reach but may not, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Exclusion {
    pub host: String,
    pub host_key: String,
    pub workload: String,
    pub instance: String,
    pub cgroup: String,
    /// The guard, as `policy check` names it, or the exception's ticket.
    pub guard: String,
    pub pids: Vec<u32>,
}

/// What the policy would do about an incident.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub hash: String,
    /// None: no tier's rule matches (the policy says to do nothing).
    pub tier: Option<u32>,
    #[serde(default)]
    pub tier_name: String,
    /// The exception that exempts every instance of the tier: its ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    pub actions: Vec<PlannedAction>,
}

impl Plan {
    /// Whether some action waits for an approval.
    pub fn needs_approval(&self) -> bool {
        self.actions
            .iter()
            .any(|a| a.approval == Approval::Required)
    }
}

/// Instances that hold the agent or the collector: never a target,
/// whatever the policy says. The caller fills it from what the agents
/// report (processes whose executable is patchgap's) and from the
/// collector's own cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    /// (host key, instance) pairs holding an agent.
    pub agent: BTreeSet<(String, String)>,
    /// (host key, instance) pairs holding the collector.
    pub collector: BTreeSet<(String, String)>,
    /// The collector's own host key and cgroup, when it runs on a host
    /// with an agent.
    pub collector_cgroup: Option<(String, String)>,
}

impl Protected {
    /// Executables that are the agent or the collector (`patchgap` is
    /// `patchgap up`, both in one process).
    pub fn is_agent_exe(exe: &[u8]) -> bool {
        let name = exe.rsplit(|&b| b == b'/').next().unwrap_or(exe);
        let name = name.strip_suffix(b" (deleted)").unwrap_or(name);
        matches!(name, b"patchgap-agent" | b"patchgap")
    }

    pub fn is_collector_exe(exe: &[u8]) -> bool {
        let name = exe.rsplit(|&b| b == b'/').next().unwrap_or(exe);
        let name = name.strip_suffix(b" (deleted)").unwrap_or(name);
        matches!(name, b"patchgap-collector" | b"patchgap")
    }
}

/// The facts a policy routes one finding of an instance on.
fn facts(i: &Instance, f: &super::incident::Finding, now_ms: i64) -> FindingFacts {
    FindingFacts {
        advisory: f.advisory.clone(),
        severity: Severity::from_advisory(&f.severity),
        score: f.score_x10.map(|s| s as f32 / 10.0),
        data_scope: i.data_scope.clone(),
        privileged: i.privileged,
        root: i.root,
        evidence: Evidence::from_match(&f.evidence),
        ecosystem: f.ecosystem.clone(),
        purl: f.purl.clone(),
        namespace: i.namespace.clone(),
        cluster: i.cluster.clone(),
        labels: i.labels.clone(),
        workload: i.workload.clone(),
        now_ms,
    }
}

/// Where one instance goes: its most severe finding's tier, and the
/// exception's ticket when one exempts that finding.
struct Routed<'a> {
    instance: &'a Instance,
    tier: u32,
    tier_name: String,
    actions: Vec<Action>,
    exception: Option<String>,
}

fn route<'a>(policy: &Policy, i: &'a Instance, now_ms: i64) -> Option<Routed<'a>> {
    let mut best: Option<Routed<'a>> = None;
    for f in &i.findings {
        let r = policy.route(&facts(i, f, now_ms));
        let Some(t) = r.tier else { continue };
        // A lower number is more severe; between equals, one without an
        // exception wins (the instance is exposed through it).
        let better = match &best {
            None => true,
            Some(b) => t.number < b.tier || (t.number == b.tier && b.exception.is_some()),
        };
        if better {
            best = Some(Routed {
                instance: i,
                tier: t.number,
                tier_name: t.name.clone(),
                actions: t.actions.clone(),
                exception: r.exception.map(|e| e.ticket),
            });
        }
    }
    best
}

/// Whether a rule that routes some instance of `scope` says to open an
/// incident by itself (`open_incident = "auto"`, no exception holding).
pub fn opens_by_itself(policy: &Policy, scope: &Scope, now_ms: i64) -> bool {
    scope.instances.iter().any(|i| {
        i.findings
            .iter()
            .any(|f| policy.route(&facts(i, f, now_ms)).open_incident_auto)
    })
}

fn target(i: &Instance, shared_with: Vec<String>) -> Target {
    Target {
        host: i.host.clone(),
        host_key: i.host_key.clone(),
        workload: i.workload.clone(),
        instance: i.instance.clone(),
        cgroup: i.cgroup.clone(),
        pids: i.pids.iter().copied().collect(),
        processes: i.processes,
        shared_with,
    }
}

fn exclusion(i: &Instance, guard: String) -> Exclusion {
    Exclusion {
        host: i.host.clone(),
        host_key: i.host_key.clone(),
        workload: i.workload.clone(),
        instance: i.instance.clone(),
        cgroup: i.cgroup.clone(),
        guard,
        pids: i.pids.iter().copied().collect(),
    }
}

/// Why a guard keeps an action away from an instance, if one does.
fn guarded(policy: &Policy, protected: &Protected, i: &Instance) -> Option<String> {
    if i.cgroup.is_empty() {
        return Some("its cgroup is unknown (the agent did not report one)".into());
    }
    let key = (i.host_key.clone(), i.instance.clone());
    let t = GuardTarget {
        workload: i.workload.clone(),
        cgroup: i.cgroup.clone(),
        unit: i.unit.clone(),
        namespace: i.namespace.clone(),
        pids: i.pids.iter().copied().collect(),
        is_agent: protected.agent.contains(&key),
        is_collector: protected.collector.contains(&key)
            || protected
                .collector_cgroup
                .as_ref()
                .is_some_and(|(h, c)| *h == i.host_key && cgroup_within(&i.cgroup, c)),
    };
    policy.guarded(&t).map(|g| g.to_string())
}

/// Whether acting on cgroup `target` reaches `inner` (it is `inner` or an
/// ancestor of it).
fn cgroup_within(target: &str, inner: &str) -> bool {
    let target = target.trim_end_matches('/');
    match inner.strip_prefix(target) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || target.is_empty(),
        None => false,
    }
}

/// Why nothing would carry out an action of `kind` (None: something will).
/// The agents carry out what touches workloads, the deploy gate its two
/// kinds when this collector serves admission, an `[[endpoint]]` the rest
/// that name one.
fn no_executor(action: &Action, executors: &Executors) -> Option<String> {
    if action.kind.touches_workloads() {
        None
    } else if is_gate_kind(action.kind) {
        executors
            .admission
            .is_none()
            .then(|| NO_ADMISSION.to_string())
    } else {
        action.endpoint.is_none().then(|| NO_EXECUTOR.to_string())
    }
}

/// The plan for `scope` under `policy` at `now_ms`, its actions numbered
/// from `first_id`, carried out by `executors`. The hash does not depend
/// on `first_id` or on pids.
pub fn make(
    policy: &Policy,
    scope: &Scope,
    protected: &Protected,
    executors: &Executors,
    first_id: u32,
    now_ms: i64,
) -> Plan {
    let routed: Vec<Routed<'_>> = scope
        .instances
        .iter()
        .filter_map(|i| route(policy, i, now_ms))
        .collect();
    let Some(tier) = routed.iter().map(|r| r.tier).min() else {
        let mut plan = Plan::default();
        plan.hash = hash(&plan);
        return plan;
    };
    let in_tier: Vec<&Routed<'_>> = routed.iter().filter(|r| r.tier == tier).collect();
    let exposed: Vec<&Routed<'_>> = in_tier
        .iter()
        .copied()
        .filter(|r| r.exception.is_none())
        .collect();
    let exception = match exposed.is_empty() {
        true => in_tier.iter().find_map(|r| r.exception.clone()),
        false => None,
    };
    let mut plan = Plan {
        hash: String::new(),
        tier: Some(tier),
        tier_name: in_tier[0].tier_name.clone(),
        exception: exception.clone(),
        actions: Vec::new(),
    };
    if exception.is_some() {
        plan.hash = hash(&plan);
        return plan;
    }
    // Which exposed instances share a cgroup on a host.
    let mut by_cgroup: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for i in &scope.instances {
        if !i.cgroup.is_empty() {
            by_cgroup
                .entry((&i.host_key, &i.cgroup))
                .or_default()
                .push(&i.instance);
        }
    }
    for (id, action) in (first_id..).zip(&in_tier[0].actions) {
        let mut planned = PlannedAction {
            id,
            kind: action.kind,
            mode: action.mode,
            approval: action.approval,
            revert_after_ms: action.revert_after_ms,
            allow: action.allow.iter().map(ToString::to_string).collect(),
            targets: Vec::new(),
            excluded: Vec::new(),
            no_executor: no_executor(action, executors),
            endpoint: action.endpoint.clone(),
        };
        if action.kind.touches_workloads() {
            let mut per_workload: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
            for r in &in_tier {
                let i = r.instance;
                if let Some(ticket) = &r.exception {
                    planned
                        .excluded
                        .push(exclusion(i, format!("exception (ticket {ticket})")));
                } else if let Some(guard) = guarded(policy, protected, i) {
                    planned.excluded.push(exclusion(i, guard));
                } else {
                    per_workload.entry(&i.workload).or_default().push(i);
                }
            }
            for (_, instances) in per_workload {
                let allowed = match action.max_replica_share {
                    Some(share) => (instances.len() as f64 * share).floor() as usize,
                    None => instances.len(),
                };
                for (n, i) in instances.iter().enumerate() {
                    if n < allowed {
                        let shared = by_cgroup
                            .get(&(i.host_key.as_str(), i.cgroup.as_str()))
                            .map(|v| {
                                v.iter()
                                    .filter(|o| **o != i.instance)
                                    .map(|o| o.to_string())
                                    .collect()
                            })
                            .unwrap_or_default();
                        planned.targets.push(target(i, shared));
                    } else {
                        planned.excluded.push(exclusion(
                            i,
                            format!(
                                "max_replica_share {} ({allowed} of {} replicas at once)",
                                action.max_replica_share.unwrap_or(1.0),
                                instances.len()
                            ),
                        ));
                    }
                }
            }
            planned.targets.sort();
            planned.excluded.sort();
        }
        plan.actions.push(planned);
    }
    plan.hash = hash(&plan);
    plan
}

/// SHA-256 of what the plan does: its tier, exception and actions with
/// their settings, targets and exclusions by host, instance and cgroup.
/// Not the action numbers (a plan made again numbers from where the
/// incident is) and not pids (the action acts on the cgroup).
pub fn hash(plan: &Plan) -> String {
    #[derive(Serialize)]
    struct View<'a> {
        tier: Option<u32>,
        exception: &'a Option<String>,
        actions: Vec<ActionView<'a>>,
    }
    #[derive(Serialize)]
    struct ActionView<'a> {
        kind: ActionKind,
        mode: Mode,
        approval: Approval,
        revert_after_ms: Option<u64>,
        allow: &'a [String],
        no_executor: &'a Option<String>,
        // Left out when None, so plans without endpoints keep their hash.
        #[serde(skip_serializing_if = "Option::is_none")]
        endpoint: &'a Option<String>,
        targets: Vec<(&'a str, &'a str, &'a str)>,
        excluded: Vec<(&'a str, &'a str, &'a str, &'a str)>,
    }
    let view = View {
        tier: plan.tier,
        exception: &plan.exception,
        actions: plan
            .actions
            .iter()
            .map(|a| ActionView {
                kind: a.kind,
                mode: a.mode,
                approval: a.approval,
                revert_after_ms: a.revert_after_ms,
                allow: &a.allow,
                no_executor: &a.no_executor,
                endpoint: &a.endpoint,
                targets: a
                    .targets
                    .iter()
                    .map(|t| (t.host_key.as_str(), t.instance.as_str(), t.cgroup.as_str()))
                    .collect(),
                excluded: a
                    .excluded
                    .iter()
                    .map(|e| {
                        (
                            e.host_key.as_str(),
                            e.instance.as_str(),
                            e.cgroup.as_str(),
                            e.guard.as_str(),
                        )
                    })
                    .collect(),
            })
            .collect(),
    };
    let json = serde_json::to_vec(&view).expect("plans serialize");
    Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
