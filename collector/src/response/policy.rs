//! The response policy: which risk tier a finding falls in, and what that
//! tier does about it.
//!
//! A policy is a list of tiers, numbered from 1. Each tier has rules that
//! match findings (severity or CVSS score, data scope, privilege, evidence,
//! ecosystem or purl, namespace, cluster, labels) and actions (the seed's
//! playbook names, plus `freeze_cgroup` and `kill_processes`), each with its
//! mode, approval and TTL. A finding goes to the lowest-numbered tier that
//! has a matching rule. Guards name workloads that are never touched (the
//! agent, the collector and PID 1 always, whatever the file says), and
//! exceptions exempt findings until they expire, each with its ticket.
//!
//! The file format and its checks live in `file.rs`; the holder that
//! reloads it on SIGHUP in `state.rs`. Without a file the seed's three
//! tiers are in force ([`Policy::builtin`]); `packaging/policy.example.toml`
//! spells the same policy out, and a test keeps the two equal.
//!
//! Everything here is pure: routing takes the finding's facts and the time
//! from the caller, so a plan can say exactly why it chose what it chose.

pub mod endpoint;
mod file;
pub mod state;

use std::{collections::BTreeMap, fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

pub use endpoint::{Endpoint, SecretRef};
pub use file::{MAX_POLICY_BYTES, PolicyError};

use crate::fleet::scope::matches as glob;

/// CVSS's qualitative ratings, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// An advisory's severity as the store keeps it (`CRITICAL`, `high`,
    /// GitHub's `MODERATE`, ...); None when it says none we know.
    pub fn from_advisory(s: &str) -> Option<Severity> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Severity::Low),
            "medium" | "moderate" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// How strongly the runtime shows that the workload uses the package, in
/// the three grades a policy can tell apart (`fleet::exposure` has the
/// finer ranking these fold).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Evidence {
    /// The process runs, maps, opened or embeds it.
    Loaded,
    /// Installed where the process would find it, not seen loaded.
    Installed,
    /// Only the image's SBOM lists it. The default, so a fact left unset
    /// never looks stronger than it is.
    #[default]
    Declared,
}

impl Evidence {
    /// The grade of a match's strongest evidence (`exe`, `mapped`,
    /// `embedded`, `opened`, `installed`, `declared`).
    pub fn from_match(evidence: &str) -> Evidence {
        if crate::fleet::exposure::evidence_loaded(evidence) {
            Evidence::Loaded
        } else if evidence == "installed" {
            Evidence::Installed
        } else {
            Evidence::Declared
        }
    }
}

/// The actions a tier can take: the seed's playbook names, exactly, plus
/// `freeze_cgroup` and `kill_processes` for policies that choose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    FreezeDeployments,
    IsolateAffectedWorkloads,
    RotateScopedTokens,
    OpenIncidentSev1,
    BlockNewArtifactsWithPackage,
    StartPatchedCanary,
    OpenIncidentSev2,
    QueueForPatchWindow,
    OpenTicketSev3,
    FreezeCgroup,
    KillProcesses,
}

impl ActionKind {
    pub const ALL: [ActionKind; 11] = [
        ActionKind::FreezeDeployments,
        ActionKind::IsolateAffectedWorkloads,
        ActionKind::RotateScopedTokens,
        ActionKind::OpenIncidentSev1,
        ActionKind::BlockNewArtifactsWithPackage,
        ActionKind::StartPatchedCanary,
        ActionKind::OpenIncidentSev2,
        ActionKind::QueueForPatchWindow,
        ActionKind::OpenTicketSev3,
        ActionKind::FreezeCgroup,
        ActionKind::KillProcesses,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::FreezeDeployments => "freeze_deployments",
            ActionKind::IsolateAffectedWorkloads => "isolate_affected_workloads",
            ActionKind::RotateScopedTokens => "rotate_scoped_tokens",
            ActionKind::OpenIncidentSev1 => "open_incident_sev1",
            ActionKind::BlockNewArtifactsWithPackage => "block_new_artifacts_with_package",
            ActionKind::StartPatchedCanary => "start_patched_canary",
            ActionKind::OpenIncidentSev2 => "open_incident_sev2",
            ActionKind::QueueForPatchWindow => "queue_for_patch_window",
            ActionKind::OpenTicketSev3 => "open_ticket_sev3",
            ActionKind::FreezeCgroup => "freeze_cgroup",
            ActionKind::KillProcesses => "kill_processes",
        }
    }

    /// A record (an incident, a ticket, a place in the patch queue): it
    /// changes nothing anywhere, so it has no shadow form and nothing to
    /// revert.
    pub fn is_record(self) -> bool {
        matches!(
            self,
            ActionKind::OpenIncidentSev1
                | ActionKind::OpenIncidentSev2
                | ActionKind::OpenTicketSev3
                | ActionKind::QueueForPatchWindow
        )
    }

    /// Whether a shadow mode exists: only controls that block something
    /// can count what they would have blocked (egress for isolation,
    /// admissions for the deploy gate's two actions).
    pub fn has_shadow(self) -> bool {
        matches!(
            self,
            ActionKind::IsolateAffectedWorkloads
                | ActionKind::FreezeDeployments
                | ActionKind::BlockNewArtifactsWithPackage
        )
    }

    /// Acts on the affected workloads' processes and cgroups on their
    /// hosts, so guards and `max_replica_share` apply to it.
    pub fn touches_workloads(self) -> bool {
        matches!(
            self,
            ActionKind::IsolateAffectedWorkloads
                | ActionKind::FreezeCgroup
                | ActionKind::KillProcesses
        )
    }

    /// Why `revert_after` cannot apply, when it cannot: a record changes
    /// nothing, a killed process is gone, a rotated token stays revoked.
    pub fn irreversible(self) -> Option<&'static str> {
        match self {
            k if k.is_record() => Some("it is a record and changes nothing to revert"),
            ActionKind::KillProcesses => Some("a killed process cannot be brought back"),
            ActionKind::RotateScopedTokens => Some("rotated tokens stay revoked"),
            _ => None,
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far an action goes: `observe` only plans and reports it, `shadow`
/// runs the control without effect and counts what it would have done,
/// `enforce` does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Observe,
    Shadow,
    Enforce,
}

/// Whether an action waits for a responder's approval of its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    Auto,
    Required,
}

/// Whether the collector opens an incident by itself for new findings a
/// rule matches (`auto`), or waits for a responder (`manual`, the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenIncident {
    #[default]
    Manual,
    Auto,
}

/// An IP network, such as 198.51.100.0/24 (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One action of a tier, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    pub kind: ActionKind,
    pub mode: Mode,
    pub approval: Approval,
    /// Lift the action this long after it took effect; None: until a
    /// responder reverts it.
    pub revert_after_ms: Option<u64>,
    /// Isolation only: destinations left open beyond loopback, the
    /// collector and the workload's own DNS resolvers.
    pub allow: Vec<Cidr>,
    /// At most this share of a workload's replicas at once (0 < x <= 1);
    /// None: all of them.
    pub max_replica_share: Option<f64>,
    /// The deploy gate's two actions only: whether an admission they
    /// cover is denied or let through with a warning.
    pub admission: Admission,
    /// The `[[endpoint]]` it is sent to as a signed webhook (None: an
    /// agent carries it out, or nothing does).
    pub endpoint: Option<String>,
}

impl Action {
    fn new(kind: ActionKind, mode: Mode, approval: Approval) -> Action {
        Action {
            kind,
            mode,
            approval,
            revert_after_ms: None,
            allow: Vec::new(),
            max_replica_share: None,
            admission: Admission::Deny,
            endpoint: None,
        }
    }
}

/// How the deploy gate answers what it would stop: `deny` refuses the
/// admission, `warn` lets it through with a warning kubectl prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    #[default]
    Deny,
    Warn,
}

impl Admission {
    pub fn as_str(self) -> &'static str {
        match self {
            Admission::Deny => "deny",
            Admission::Warn => "warn",
        }
    }
}

/// The deploy gate's settings that no tier owns (`[gate]` in the file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateSettings {
    /// An image named by a tag alone (no `@sha256:`) while some incident
    /// blocks images: the gate cannot know what the tag points at without
    /// a registry, which it never calls.
    pub tag_without_digest: Admission,
    /// Namespaces the gate never judges (exact, or a prefix ending in
    /// `*`): the control plane's own, so a gate outage or an incident
    /// cannot stop the cluster from healing itself.
    pub exclude_namespaces: Vec<String>,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            tag_without_digest: Admission::Warn,
            exclude_namespaces: ["kube-system", "kube-public", "kube-node-lease"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// What a rule matches. Every condition given must hold; a condition left
/// out (an empty list, None) holds for every finding, so a rule with none
/// matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rule {
    /// One of these severities.
    pub severity: Vec<Severity>,
    /// A CVSS base score at least this.
    pub min_score: Option<f32>,
    /// One of these data scopes (`--scope-map` or the workload's labels).
    pub data_scope: Vec<String>,
    /// The workload is privileged (true) or not (false).
    pub privileged: Option<bool>,
    /// A process runs as root (true) or none does (false).
    pub root: Option<bool>,
    /// One of these evidence grades.
    pub evidence: Vec<Evidence>,
    /// One of these ecosystems (purl types: deb, pypi, ...).
    pub ecosystem: Vec<String>,
    /// The package's purl starts with one of these.
    pub purl_prefix: Vec<String>,
    /// Kubernetes namespace, cluster and workload id: exact, or a prefix
    /// when the pattern ends in `*`.
    pub namespace: Vec<String>,
    pub cluster: Vec<String>,
    pub workload: Vec<String>,
    /// Every one of these labels, with exactly this value.
    pub labels: BTreeMap<String, String>,
    pub open_incident: OpenIncident,
}

impl Rule {
    /// Whether the finding meets every condition.
    pub fn matches(&self, f: &FindingFacts) -> bool {
        fn any_glob(patterns: &[String], value: Option<&str>) -> bool {
            patterns.is_empty() || value.is_some_and(|v| patterns.iter().any(|p| glob(p, v)))
        }
        (self.severity.is_empty() || f.severity.is_some_and(|s| self.severity.contains(&s)))
            && self
                .min_score
                .is_none_or(|min| f.score.is_some_and(|s| s >= min))
            && (self.data_scope.is_empty()
                || f.data_scope
                    .as_ref()
                    .is_some_and(|d| self.data_scope.contains(d)))
            && self.privileged.is_none_or(|p| p == f.privileged)
            && self.root.is_none_or(|r| r == f.root)
            && (self.evidence.is_empty() || self.evidence.contains(&f.evidence))
            && (self.ecosystem.is_empty() || self.ecosystem.contains(&f.ecosystem))
            && (self.purl_prefix.is_empty()
                || self.purl_prefix.iter().any(|p| f.purl.starts_with(p)))
            && any_glob(&self.namespace, f.namespace.as_deref())
            && any_glob(&self.cluster, f.cluster.as_deref())
            && any_glob(&self.workload, Some(&f.workload))
            && self
                .labels
                .iter()
                .all(|(k, v)| f.labels.get(k).is_some_and(|have| have == v))
    }

    /// A rule without conditions: it matches every finding.
    pub fn is_catch_all(&self) -> bool {
        Rule {
            open_incident: self.open_incident,
            ..Rule::default()
        } == *self
    }
}

/// A risk tier: its rules and its playbook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tier {
    pub number: u32,
    pub name: String,
    pub rules: Vec<Rule>,
    pub actions: Vec<Action>,
}

/// Serializes as the list of what is always protected, whatever the file
/// says: there is nothing to configure, and the JSON shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlwaysProtected;

impl Serialize for AlwaysProtected {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ["agent", "collector", "pid 1"].serialize(s)
    }
}

/// Workloads never to touch. The agent, the collector and PID 1 (with the
/// root cgroup, which holds everything) are always protected; the lists add
/// to that and can never take it away.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Guards {
    pub always: AlwaysProtected,
    /// systemd units (exact, or a prefix ending in `*`).
    pub units: Vec<String>,
    /// Kubernetes namespaces (default: kube-system).
    pub namespaces: Vec<String>,
    /// Cgroup v2 path prefixes, by whole components: `/system.slice`
    /// covers `/system.slice/x.service`, not `/system.slice2`.
    pub cgroups: Vec<String>,
    /// Workload ids (exact, or a prefix ending in `*`).
    pub workloads: Vec<String>,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            always: AlwaysProtected,
            units: Vec::new(),
            namespaces: vec!["kube-system".to_string()],
            cgroups: Vec::new(),
            workloads: Vec::new(),
        }
    }
}

/// A finding exempted from its tier's actions until `expires_ms`, on the
/// authority of `ticket`. Every matcher given must match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exception {
    /// The advisory id (compared without regard to case).
    pub advisory: Option<String>,
    /// The package's purl: exact, or a prefix ending in `*`.
    pub purl: Option<String>,
    /// The workload id: exact, or a prefix ending in `*`.
    pub workload: Option<String>,
    pub ticket: String,
    /// RFC 3339, UTC.
    pub expires: String,
    pub expires_ms: i64,
}

impl Exception {
    /// Whether it exempts this finding now; an expired one never does.
    pub fn applies(&self, f: &FindingFacts) -> bool {
        f.now_ms < self.expires_ms
            && self
                .advisory
                .as_ref()
                .is_none_or(|a| a.eq_ignore_ascii_case(&f.advisory))
            && self.purl.as_ref().is_none_or(|p| glob(p, &f.purl))
            && self.workload.as_ref().is_none_or(|w| glob(w, &f.workload))
    }
}

/// A whole policy: tiers in order of their numbers (1 first), guards and
/// exceptions. Equal policies compare equal whatever file they came from
/// (`warnings` are left out of the comparison).
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub tiers: Vec<Tier>,
    pub guards: Guards,
    pub exceptions: Vec<Exception>,
    /// The deploy gate's own settings.
    pub gate: GateSettings,
    /// Receivers of signed webhooks.
    pub endpoints: Vec<Endpoint>,
    /// What `policy check` warns about (such as an expired exception), as
    /// `file:line:column: warning: ...`.
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Unexpected egress (issue 18): each workload's allow-list and mode
    /// (`[[egress]]`), and the learning durations (`[egress_learning]`),
    /// which the `--egress-*` flags override.
    #[serde(skip)]
    pub egress: crate::egress::stage::EgressPolicies,
    #[serde(skip)]
    pub egress_learning: crate::egress::flags::EgressFlags,
    /// Verification's settings (`[verify]`: `every`, `streak` K,
    /// `evidence`), which the `--verify-*` flags override.
    #[serde(skip_serializing_if = "crate::response::verify::settings::VerifyTable::is_empty")]
    pub verify: crate::response::verify::settings::VerifyTable,
}

impl PartialEq for Policy {
    fn eq(&self, other: &Policy) -> bool {
        self.tiers == other.tiers
            && self.guards == other.guards
            && self.exceptions == other.exceptions
            && self.gate == other.gate
            && self.endpoints == other.endpoints
            && self.egress == other.egress
            && self.egress_learning == other.egress_learning
            && self.verify == other.verify
    }
}

/// What the collector knows about one finding (an advisory's match on a
/// process's package), in the terms a policy matches on. The collector
/// fills it from `fleet::exposure` (the match and its evidence), the
/// advisory (severity, score), `fleet::workloads` (namespace, cluster,
/// labels, privilege) and `fleet::scope` (`--scope-map`, data scope).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingFacts {
    pub advisory: String,
    pub severity: Option<Severity>,
    /// CVSS base score.
    pub score: Option<f32>,
    /// The workload's data classification, such as `sensitive`.
    pub data_scope: Option<String>,
    pub privileged: bool,
    pub root: bool,
    pub evidence: Evidence,
    /// The purl type, such as `deb` or `pypi`.
    pub ecosystem: String,
    pub purl: String,
    pub namespace: Option<String>,
    pub cluster: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The workload's id (`WorkloadSummary.key`).
    pub workload: String,
    /// Now, for exception expiry.
    pub now_ms: i64,
}

/// The tier a finding was routed to and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutedTier {
    pub number: u32,
    pub name: String,
    /// Which of the tier's rules matched (0-based), for the plan's
    /// explanation.
    pub rule_index: usize,
    pub rule: Rule,
    pub actions: Vec<Action>,
}

/// The exception that exempts a finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExceptionMatch {
    /// Its place among the policy's exceptions (0-based).
    pub index: usize,
    pub ticket: String,
    pub expires_ms: i64,
}

/// Where a finding goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// None when no tier's rule matches: the policy says to do nothing.
    pub tier: Option<RoutedTier>,
    /// An exception in force for this finding: the tier is still named,
    /// but none of its actions run and no incident opens by itself.
    pub exception: Option<ExceptionMatch>,
    /// The matching rule says `open_incident = "auto"` and no exception
    /// holds: the collector opens an incident for a new finding itself.
    pub open_incident_auto: bool,
}

impl Route {
    /// The actions to plan: the tier's, unless an exception holds.
    pub fn actions(&self) -> &[Action] {
        match (&self.tier, &self.exception) {
            (Some(t), None) => &t.actions,
            _ => &[],
        }
    }
}

/// A workload (or a part of one) that an action would touch on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardTarget {
    /// The workload id (`WorkloadSummary.key`).
    pub workload: String,
    /// Its cgroup v2 path, such as `/kubepods.slice/...`.
    pub cgroup: String,
    pub unit: Option<String>,
    pub namespace: Option<String>,
    /// The processes the action would reach.
    pub pids: Vec<u32>,
    /// The target's cgroup is, or contains, the agent's own.
    pub is_agent: bool,
    /// The target's cgroup is, or contains, the collector's own.
    pub is_collector: bool,
}

/// Why a guard excludes a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "guard", content = "pattern", rename_all = "snake_case")]
pub enum GuardReason {
    Agent,
    Collector,
    Pid1,
    /// The root cgroup: every process on the host.
    HostRoot,
    Unit(String),
    Namespace(String),
    Cgroup(String),
    Workload(String),
}

impl GuardReason {
    /// One of the guards no policy can lift.
    pub fn is_builtin(&self) -> bool {
        matches!(
            self,
            GuardReason::Agent | GuardReason::Collector | GuardReason::Pid1 | GuardReason::HostRoot
        )
    }
}

impl fmt::Display for GuardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardReason::Agent => f.write_str("the patchgap agent (always protected)"),
            GuardReason::Collector => f.write_str("the patchgap collector (always protected)"),
            GuardReason::Pid1 => f.write_str("PID 1 (always protected)"),
            GuardReason::HostRoot => {
                f.write_str("the root cgroup, which holds every process (always protected)")
            }
            GuardReason::Unit(p) => write!(f, "guards.units {p:?}"),
            GuardReason::Namespace(p) => write!(f, "guards.namespaces {p:?}"),
            GuardReason::Cgroup(p) => write!(f, "guards.cgroups {p:?}"),
            GuardReason::Workload(p) => write!(f, "guards.workloads {p:?}"),
        }
    }
}

/// Whether `path` is `prefix` or lies beneath it, by whole components.
fn cgroup_under(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

impl Policy {
    /// The seed's three tiers, in force when no file is given.
    /// `packaging/policy.example.toml` is the same policy written out.
    pub fn builtin() -> Policy {
        use ActionKind::*;
        let enforce_required =
            |kind: ActionKind| Action::new(kind, Mode::Enforce, Approval::Required);
        let sensitive = vec!["sensitive".to_string()];
        Policy {
            egress: Default::default(),
            egress_learning: Default::default(),
            verify: Default::default(),
            tiers: vec![
                Tier {
                    number: 1,
                    name: "critical in a sensitive scope".into(),
                    rules: vec![
                        Rule {
                            severity: vec![Severity::Critical],
                            data_scope: sensitive.clone(),
                            ..Rule::default()
                        },
                        Rule {
                            min_score: Some(9.0),
                            data_scope: sensitive,
                            ..Rule::default()
                        },
                    ],
                    actions: [
                        FreezeDeployments,
                        IsolateAffectedWorkloads,
                        RotateScopedTokens,
                        OpenIncidentSev1,
                    ]
                    .map(enforce_required)
                    .to_vec(),
                },
                Tier {
                    number: 2,
                    name: "high or critical".into(),
                    rules: vec![Rule {
                        severity: vec![Severity::High, Severity::Critical],
                        ..Rule::default()
                    }],
                    actions: [
                        BlockNewArtifactsWithPackage,
                        StartPatchedCanary,
                        OpenIncidentSev2,
                    ]
                    .map(enforce_required)
                    .to_vec(),
                },
                Tier {
                    number: 3,
                    name: "everything else".into(),
                    rules: vec![Rule::default()],
                    actions: [QueueForPatchWindow, OpenTicketSev3]
                        .map(|k| Action::new(k, Mode::Enforce, Approval::Auto))
                        .to_vec(),
                },
            ],
            guards: Guards::default(),
            exceptions: Vec::new(),
            gate: GateSettings::default(),
            endpoints: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Parses and checks a policy file. `file_name` only labels errors,
    /// each `file:line:column: reason`. Exceptions already expired are
    /// warnings, judged against the clock (see [`Policy::parse_at`]).
    pub fn parse(file_name: &str, bytes: &[u8]) -> Result<Policy, Vec<PolicyError>> {
        file::parse(file_name, bytes, patchgap_proto::time::now_ms())
    }

    /// [`Policy::parse`] with the time expired exceptions are judged at.
    pub fn parse_at(
        file_name: &str,
        bytes: &[u8],
        now_ms: i64,
    ) -> Result<Policy, Vec<PolicyError>> {
        file::parse(file_name, bytes, now_ms)
    }

    pub fn rule_count(&self) -> usize {
        self.tiers.iter().map(|t| t.rules.len()).sum()
    }

    pub fn action_count(&self) -> usize {
        self.tiers.iter().map(|t| t.actions.len()).sum()
    }

    /// The tier of a finding: the lowest-numbered tier with a matching
    /// rule (its first matching rule), and the exception that exempts it,
    /// if one holds at `f.now_ms`.
    pub fn route(&self, f: &FindingFacts) -> Route {
        let exception = self
            .exceptions
            .iter()
            .enumerate()
            .find(|(_, e)| e.applies(f))
            .map(|(index, e)| ExceptionMatch {
                index,
                ticket: e.ticket.clone(),
                expires_ms: e.expires_ms,
            });
        let matched = self.tiers.iter().find_map(|tier| {
            let (rule_index, rule) = tier.rules.iter().enumerate().find(|(_, r)| r.matches(f))?;
            Some((tier, rule_index, rule))
        });
        match matched {
            Some((tier, rule_index, rule)) => Route {
                open_incident_auto: rule.open_incident == OpenIncident::Auto && exception.is_none(),
                tier: Some(RoutedTier {
                    number: tier.number,
                    name: tier.name.clone(),
                    rule_index,
                    rule: rule.clone(),
                    actions: tier.actions.clone(),
                }),
                exception,
            },
            None => Route {
                tier: None,
                exception,
                open_incident_auto: false,
            },
        }
    }

    /// The guard that excludes a target from every action that touches
    /// workloads, or None when the target may be acted on. The built-in
    /// guards come first, so the reason names them when several apply.
    pub fn guarded(&self, t: &GuardTarget) -> Option<GuardReason> {
        if t.is_agent {
            return Some(GuardReason::Agent);
        }
        if t.is_collector {
            return Some(GuardReason::Collector);
        }
        let cgroup = t.cgroup.trim_end_matches('/');
        if t.pids.contains(&1) || cgroup == "/init.scope" || t.unit.as_deref() == Some("init.scope")
        {
            return Some(GuardReason::Pid1);
        }
        if cgroup.is_empty() {
            return Some(GuardReason::HostRoot);
        }
        let g = &self.guards;
        if let Some(unit) = &t.unit
            && let Some(p) = g.units.iter().find(|p| glob(p, unit))
        {
            return Some(GuardReason::Unit(p.clone()));
        }
        if let Some(ns) = &t.namespace
            && let Some(p) = g.namespaces.iter().find(|p| glob(p, ns))
        {
            return Some(GuardReason::Namespace(p.clone()));
        }
        if let Some(p) = g.cgroups.iter().find(|p| cgroup_under(p, &t.cgroup)) {
            return Some(GuardReason::Cgroup(p.clone()));
        }
        g.workloads
            .iter()
            .find(|p| glob(p, &t.workload))
            .map(|p| GuardReason::Workload(p.clone()))
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod verify_tests;
