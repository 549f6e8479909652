//! The convergence checks: each is a pure function of the facts one pass
//! read (the incident's exposure answer process by process, the hosts'
//! reports, the connections since containment) and the incident, and
//! gives a verdict with the query it stands for, the evidence it saw and,
//! when it does not succeed, exactly what blocks closure.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use super::{Run, Settings, Verdict};
use crate::response::{
    ActionKind, Admission, Cidr, Mode,
    incident::{ActionState, Incident, IncidentAction},
};

/// The most blockers one check lists; past it the last line says how
/// many more there are, so a fleet-wide exposure stays a bounded event.
pub const MAX_BLOCKERS: usize = 50;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `package`, `digest`, `policy`, `egress`, `coverage`.
    pub check: String,
    pub verdict: Verdict,
    /// What was asked, in words a verifier can repeat
    /// (`patchgap query ...`).
    pub query: String,
    /// What it saw (counts, coverage, eBPF state, lost events).
    #[serde(default)]
    pub evidence: Vec<String>,
    /// What keeps the incident open: these processes on these hosts,
    /// this digest in this namespace, this host silent since T.
    #[serde(default)]
    pub blockers: Vec<String>,
}

/// One exposed process of the incident's subject, as the exposure answer
/// gives it (one line per process and package).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessFact {
    pub host: String,
    pub pid: u32,
    pub exe: String,
    /// The agent's instance id (`pod/<uid>/<container>`, ...).
    pub workload: String,
    pub namespace: String,
    pub image_digest: String,
    pub purl: String,
    /// The strongest evidence (`exe`, `mapped`, `opened`, `embedded`,
    /// `installed`, `declared`).
    pub evidence: String,
    /// The process maps a file that was replaced on disk: it still runs
    /// the old version until it restarts.
    pub stale: bool,
    /// Only an image SBOM declares it (no process): the image.
    pub sbom_image: String,
    /// For the exposure graph: the advisory matched ("" for a package
    /// range), the chain that pulled the package in (SBOM), the fleet
    /// workload key, its data scope and where it writes, and the image's
    /// provenance labels.
    pub advisory: String,
    pub pulled_in_by: Vec<String>,
    pub workload_key: String,
    pub data_scope: String,
    pub writes_to: Vec<String>,
    pub provenance: Vec<(String, String)>,
}

/// A host the incident covers, as its agent reported last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFact {
    pub name: String,
    /// The store knows the host (false: it never reported, or was removed).
    pub known: bool,
    pub last_seen_ms: i64,
    pub last_full_scan_ms: i64,
    pub ebpf: bool,
    pub ebpf_reason: String,
    pub lost_events: u64,
}

/// A connection seen from a host since containment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionFact {
    pub host: String,
    pub workload: String,
    pub pid: u32,
    pub remote: String,
    pub port: u32,
    pub last_seen_ms: i64,
    /// The connect's result: 0 succeeded, else the errno (blocked: EPERM).
    pub last_result: i32,
}

/// A workload instance running an image digest the incident's gate
/// blocks, as the store has it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFact {
    pub host: String,
    /// The agent's instance id (`pod/<uid>/<container>`, ...).
    pub instance: String,
    pub namespace: String,
    pub image_digest: String,
    /// The earliest start of its processes in the store's history, exited
    /// ones included (a restarted container keeps its first start); 0
    /// when unknown.
    pub first_start_ms: i64,
}

/// What one pass read for one incident.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub now_ms: i64,
    pub processes: Vec<ProcessFact>,
    /// The exposure answer was cut: the package check cannot succeed.
    pub truncated: bool,
    /// Every host of `Incident::hosts_seen` (known or not).
    pub hosts: Vec<HostFact>,
    pub connections: Vec<ConnectionFact>,
    /// The incident's subject cannot be queried (a policy rule, an egress
    /// alert): the package and digest checks have nothing to ask.
    pub no_query: Option<String>,
    /// While a `block_new_artifacts_with_package` action is in force: the
    /// workload instances that run a digest it blocks (at most
    /// [`MAX_INSTANCES`]).
    pub instances: Vec<InstanceFact>,
    /// How the policy in force answers the incident's block
    /// (`admission`); None: as a denial.
    pub gate_admission: Option<Admission>,
}

/// The most workload instances of blocked digests one pass reads.
pub const MAX_INSTANCES: usize = 200;

/// The image digests the incident's gate blocks, as far as the pass
/// knows them: those its scope saw running with an affected version, and
/// those whose SBOM declares one.
pub fn blocked_digests(incident: &Incident, facts: &Facts) -> BTreeSet<String> {
    let mut out = incident.scope.image_digests.clone();
    for p in &facts.processes {
        if !p.image_digest.is_empty() {
            out.insert(p.image_digest.clone());
        }
        if p.pid == 0 && !p.sbom_image.is_empty() {
            out.insert(p.sbom_image.clone());
        }
    }
    out
}

/// When a gate action came into force: when it was requested (approved,
/// or at once with `approval = auto`) or applied, whichever was first;
/// an `auto` action still `planned` (no executor to request it from)
/// since it was planned.
pub fn gate_since(a: &IncidentAction) -> Option<i64> {
    if !crate::response::gate::facts::in_force(a) {
        return None;
    }
    [a.times.requested, a.times.applied, a.times.verified]
        .into_iter()
        .filter(|t| *t > 0)
        .min()
        .or((a.times.planned > 0).then_some(a.times.planned))
}

/// Every check, in the order `incident show` lists them.
pub fn run_checks(incident: &Incident, facts: &Facts, settings: &Settings) -> Run {
    let checks = vec![
        package(incident, facts, settings),
        digest(incident, facts),
        policy(incident, facts),
        egress(incident, facts),
        coverage(incident, facts, settings),
    ];
    Run {
        verdict: Verdict::all(checks.iter().map(|c| c.verdict)),
        checks,
    }
}

fn subject(incident: &Incident) -> String {
    use crate::response::incident::Source;
    match &incident.source {
        Source::Advisory { id, host, .. } => match host {
            Some(h) => format!("patchgap query --advisory {id} --host {h}"),
            None => format!("patchgap query --advisory {id}"),
        },
        Source::Package { package, range, .. } => match range {
            Some(r) => format!("patchgap query {package}@{r}"),
            None => format!("patchgap query {package}"),
        },
        other => format!("{other:?}"),
    }
}

fn capped(mut lines: Vec<String>) -> Vec<String> {
    if lines.len() > MAX_BLOCKERS {
        let more = lines.len() - MAX_BLOCKERS;
        lines.truncate(MAX_BLOCKERS);
        lines.push(format!("... and {more} more"));
    }
    lines
}

/// No running process on any host in scope has an affected version at a
/// counted evidence level. A stale mapping always counts: the library was
/// upgraded on disk, but the process still runs the old one and must
/// restart.
pub fn package(incident: &Incident, facts: &Facts, settings: &Settings) -> CheckResult {
    let query = format!(
        "{} (evidence counted: {}; stale mappings always)",
        subject(incident),
        settings.counted.join(", ")
    );
    if let Some(why) = &facts.no_query {
        return CheckResult {
            check: "package".into(),
            verdict: Verdict::Inconclusive,
            query,
            evidence: vec![],
            blockers: vec![format!("{why} has no package query to check")],
        };
    }
    let running: Vec<&ProcessFact> = facts.processes.iter().filter(|p| p.pid > 0).collect();
    let mut blockers = Vec::new();
    let mut uncounted = 0;
    for p in &running {
        if p.stale {
            blockers.push(format!(
                "pid {} ({}) on {} still maps {} replaced on disk: restart it",
                p.pid, p.exe, p.host, p.purl
            ));
        } else if settings.counts(&p.evidence) {
            blockers.push(format!(
                "pid {} ({}) on {} runs {} ({})",
                p.pid, p.exe, p.host, p.purl, p.evidence
            ));
        } else {
            uncounted += 1;
        }
    }
    let stale = running.iter().filter(|p| p.stale).count();
    let mut evidence = vec![format!(
        "{} process(es) match, {} counted, {stale} stale, {uncounted} at evidence levels not counted",
        running.len(),
        blockers.len()
    )];
    if facts.truncated {
        evidence.push("the exposure answer was cut at its limit".into());
    }
    let verdict = if !blockers.is_empty() {
        Verdict::Failed
    } else if facts.truncated {
        Verdict::Inconclusive
    } else {
        Verdict::Successful
    };
    if verdict == Verdict::Inconclusive {
        blockers.push("the exposure answer was cut: narrow the incident".into());
    }
    CheckResult {
        check: "package".into(),
        verdict,
        query,
        evidence,
        blockers: capped(blockers),
    }
}

/// No workload in scope runs an image digest whose inventory carries an
/// affected version, and no image SBOM of the scope declares one.
pub fn digest(incident: &Incident, facts: &Facts) -> CheckResult {
    let query = format!("{} (image digests and SBOMs)", subject(incident));
    let mut by_digest: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for p in &facts.processes {
        let digest = if !p.image_digest.is_empty() {
            p.image_digest.clone()
        } else if p.pid == 0 && !p.sbom_image.is_empty() {
            p.sbom_image.clone()
        } else {
            continue;
        };
        by_digest
            .entry((digest, p.namespace.clone()))
            .or_default()
            .insert(p.purl.clone());
    }
    let blockers: Vec<String> = by_digest
        .iter()
        .map(|((d, ns), purls)| {
            let ns = if ns.is_empty() { "-" } else { ns.as_str() };
            let purls: Vec<&str> = purls.iter().map(String::as_str).collect();
            format!("digest {d} in namespace {ns} carries {}", purls.join(", "))
        })
        .collect();
    CheckResult {
        check: "digest".into(),
        verdict: if blockers.is_empty() {
            Verdict::Successful
        } else {
            Verdict::Failed
        },
        query,
        evidence: vec![format!(
            "{} affected image digest(s) in scope",
            blockers.len()
        )],
        blockers: capped(blockers),
    }
}

/// The containment and the gate are still in force, and nothing bypassed
/// the gate: every action carried out on hosts or by the deploy gate is
/// applied (or verified) on every target, and none failed; and while a
/// `block_new_artifacts_with_package` action denies (enforce mode, and
/// not `admission = "warn"`), no workload instance first started after it
/// came into force runs a digest it blocks, unless a break-glass ticket
/// let that digest through (a deploy while the webhook was down, or with
/// `failurePolicy: Ignore`, has none).
pub fn policy(incident: &Incident, facts: &Facts) -> CheckResult {
    let mut blockers = Vec::new();
    let mut evidence = Vec::new();
    let carried: Vec<_> = incident
        .actions
        .iter()
        .filter(|a| {
            (a.planned.on_hosts() || a.planned.by_gate()) && a.planned.mode != Mode::Observe
        })
        .filter(|a| a.state != ActionState::Planned)
        .collect();
    for a in &carried {
        let name = format!("action {} ({})", a.planned.id, a.planned.kind.as_str());
        match a.state {
            ActionState::Applied | ActionState::Verified => evidence.push(format!(
                "{name} {} in {:?} mode",
                a.state.name(),
                a.planned.mode
            )),
            // Lifted on purpose (by the gate, a responder, or its TTL).
            ActionState::Reverted => evidence.push(format!("{name} reverted ({})", a.reason)),
            ActionState::Failed => blockers.push(format!("{name} failed: {}", a.reason)),
            ActionState::Requested => blockers.push(format!(
                "{name} requested, not yet in force on every target"
            )),
            ActionState::Planned => {}
        }
    }
    if carried.is_empty() {
        evidence.push("no containment was carried out on hosts".into());
    }
    gate_bypasses(incident, facts, &mut evidence, &mut blockers);
    CheckResult {
        check: "policy".into(),
        verdict: if blockers.is_empty() {
            Verdict::Successful
        } else {
            Verdict::Failed
        },
        query: "the incident's actions as the agents report them, and workloads started from digests the gate blocks".into(),
        evidence,
        blockers: capped(blockers),
    }
}

/// The gate part of the policy check (see [`policy`]).
fn gate_bypasses(
    incident: &Incident,
    facts: &Facts,
    evidence: &mut Vec<String>,
    blockers: &mut Vec<String>,
) {
    let blocks: Vec<(&IncidentAction, i64)> = incident
        .actions
        .iter()
        .filter(|a| a.planned.kind == ActionKind::BlockNewArtifactsWithPackage)
        .filter_map(|a| gate_since(a).map(|t| (a, t)))
        .collect();
    for (a, since) in &blocks {
        evidence.push(format!(
            "action {} (block_new_artifacts_with_package) in force in the deploy gate since {} in {:?} mode",
            a.planned.id,
            utc(*since),
            a.planned.mode
        ));
    }
    let warns = facts.gate_admission == Some(Admission::Warn);
    let Some(since) = blocks
        .iter()
        .filter(|(a, _)| a.planned.mode == Mode::Enforce && !warns)
        .map(|(_, t)| *t)
        .min()
    else {
        if !blocks.is_empty() {
            evidence.push(
                "the gate only warns (shadow mode or admission = \"warn\"): deploys it lets through are not bypasses".into(),
            );
        }
        return;
    };
    let blocked = blocked_digests(incident, facts);
    let (mut admitted, mut bypassed) = (0, 0);
    for i in &facts.instances {
        if !blocked.contains(&i.image_digest) || i.first_start_ms <= since {
            continue;
        }
        let ns = if i.namespace.is_empty() {
            "-"
        } else {
            i.namespace.as_str()
        };
        match incident.break_glass.get(&i.image_digest) {
            Some(g) => {
                admitted += 1;
                evidence.push(format!(
                    "workload {} on {} (namespace {ns}) started {} from blocked digest {}: admitted by break-glass {} ({} for {} at {})",
                    i.instance,
                    i.host,
                    utc(i.first_start_ms),
                    i.image_digest,
                    g.ticket,
                    if g.by.is_empty() { "someone" } else { &g.by },
                    g.object,
                    utc(g.at_ms)
                ));
            }
            None => {
                bypassed += 1;
                blockers.push(format!(
                    "workload {} on {} (namespace {ns}) started {} from blocked digest {} after the gate blocked it at {}, with no break-glass ticket: a deploy bypassed the gate",
                    i.instance,
                    i.host,
                    utc(i.first_start_ms),
                    i.image_digest,
                    utc(since)
                ));
            }
        }
    }
    evidence.push(format!(
        "deploy gate: {} blocked digest(s), {bypassed} workload(s) started from one since {} without a ticket, {admitted} with a break-glass ticket",
        blocked.len(),
        utc(since)
    ));
}

fn parse_allow(s: &str) -> Option<Cidr> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, p.parse().ok()?),
        None => (s, if s.contains(':') { 128 } else { 32 }),
    };
    Some(Cidr {
        addr: addr.parse().ok()?,
        prefix,
    })
}

/// For the workloads an isolation holds, no connection succeeded to a
/// destination outside the action's allow-list since it was applied.
///
/// The allow-list, not the workload's learned egress baseline: while
/// isolated, the kernel refuses every destination outside the allow-list,
/// learned ones included, so a connect that succeeded to one of them
/// means the isolation did not hold, which is what this check exists to
/// catch. Counting baseline destinations as fine would hide exactly that.
pub fn egress(incident: &Incident, facts: &Facts) -> CheckResult {
    let mut blockers = Vec::new();
    let mut blocked = 0u64;
    let mut watched = 0;
    for a in &incident.actions {
        if a.planned.kind != ActionKind::IsolateAffectedWorkloads || a.times.applied == 0 {
            continue;
        }
        watched += 1;
        let allow: Vec<Cidr> = a
            .planned
            .allow
            .iter()
            .filter_map(|s| parse_allow(s))
            .collect();
        let until = if a.times.reverted > 0 {
            a.times.reverted
        } else {
            i64::MAX
        };
        for c in &facts.connections {
            let ours = a.planned.targets.iter().any(|t| {
                t.host == c.host && (t.instance == c.workload || t.workload == c.workload)
            });
            if !ours || c.last_seen_ms < a.times.applied || c.last_seen_ms > until {
                continue;
            }
            if c.last_result != 0 {
                blocked += 1;
                continue;
            }
            let allowed = c
                .remote
                .parse::<IpAddr>()
                .is_ok_and(|ip| allow.iter().any(|n| n.contains(ip)));
            if !allowed {
                blockers.push(format!(
                    "pid {} on {} connected to {}:{} (outside the allow-list) after isolation",
                    c.pid, c.host, c.remote, c.port
                ));
            }
        }
    }
    CheckResult {
        check: "egress".into(),
        verdict: if blockers.is_empty() {
            Verdict::Successful
        } else {
            Verdict::Failed
        },
        query: "connections of isolated workloads since isolation, against the allow-list".into(),
        evidence: vec![format!(
            "{watched} isolation(s) watched, {blocked} connection(s) refused by them"
        )],
        blockers: capped(blockers),
    }
}

/// Every host the incident covers reported within `fresh_after`: a
/// silent host makes the verdict inconclusive, never successful. eBPF
/// coverage and lost events are evidence.
pub fn coverage(incident: &Incident, facts: &Facts, settings: &Settings) -> CheckResult {
    let fresh_ms = settings.fresh_after.as_millis() as i64;
    let mut blockers = Vec::new();
    let mut evidence = Vec::new();
    for h in &facts.hosts {
        if incident.hosts_retired.contains(&h.name) {
            continue;
        }
        if !h.known {
            blockers.push(format!("host {} never reported to this collector", h.name));
            continue;
        }
        if facts.now_ms - h.last_seen_ms > fresh_ms {
            blockers.push(format!(
                "host {} silent since {} ({} s ago)",
                h.name,
                utc(h.last_seen_ms),
                (facts.now_ms - h.last_seen_ms) / 1000
            ));
        }
        evidence.push(format!(
            "host {}: last seen {}, last full scan {}, eBPF {}{}, {} event(s) lost",
            h.name,
            utc(h.last_seen_ms),
            utc(h.last_full_scan_ms),
            if h.ebpf { "on" } else { "off" },
            if h.ebpf || h.ebpf_reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", h.ebpf_reason)
            },
            h.lost_events
        ));
    }
    if !incident.hosts_retired.is_empty() {
        let retired: Vec<&str> = incident.hosts_retired.iter().map(String::as_str).collect();
        evidence.push(format!("retired: {}", retired.join(", ")));
    }
    CheckResult {
        check: "coverage".into(),
        verdict: if blockers.is_empty() {
            Verdict::Successful
        } else {
            Verdict::Inconclusive
        },
        query: format!(
            "every host the incident covered reported within {} s",
            settings.fresh_after.as_secs()
        ),
        evidence,
        blockers: capped(blockers),
    }
}

/// A time as people and the bundle read it (UTC, RFC 3339, ms); "never"
/// for 0.
pub fn utc(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    patchgap_proto::time::rfc3339(ms)
}
