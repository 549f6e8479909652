//! The policy file: TOML, read through serde with the span of every value
//! that a later check may refuse, then checked as a whole. Syntax and type
//! errors stop at the first (that is what the TOML reader gives); the
//! checks after it report every problem they find. Every error names
//! `file:line:column`, 1-based, the column counted in characters.
//!
//! Parsing takes bytes and does no I/O; the clock comes from the caller.

use std::{collections::BTreeMap, fmt, net::IpAddr, ops::Range};

use serde::Deserialize;
use toml::Spanned;

use super::{
    Action, ActionKind, Admission, Approval, Cidr, Evidence, Exception, GateSettings, Guards, Mode,
    OpenIncident, Policy, Rule, Severity, Tier,
};
use crate::{advisories::osv::Timestamp, ecosystem::Ecosystem};

/// The largest policy file read. A real one is a few KiB; this bounds the
/// memory and time a mistaken path (a log, a core file) can cost.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// The longest `revert_after`: an action meant to hold longer than a year
/// should be reverted by a person.
const MAX_TTL_MS: u64 = 366 * 86_400_000;

/// One problem with a policy file, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.reason
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    tier: Vec<Spanned<RawTier>>,
    guards: Option<Spanned<RawGuards>>,
    #[serde(default)]
    exception: Vec<Spanned<RawException>>,
    gate: Option<RawGate>,
    #[serde(default)]
    endpoint: Vec<Spanned<super::endpoint::RawEndpoint>>,
    #[serde(default)]
    egress: Vec<Spanned<RawEgress>>,
    egress_learning: Option<Spanned<RawEgressLearning>>,
    verify: Option<Spanned<RawVerify>>,
}

/// `[verify]`: how incidents past containment are verified (issue 17).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    every: Option<Spanned<String>>,
    streak: Option<Spanned<i64>>,
    evidence: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    tag_without_digest: Option<Admission>,
    exclude_namespaces: Option<Vec<Spanned<String>>>,
}

/// `[[egress]]`: one workload's egress policy (issue 18).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    workload: Spanned<String>,
    mode: Option<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<RawEgressAllow>>,
    /// An `[[endpoint]]`'s name: the workload's alerts also go there as
    /// signed webhooks.
    endpoint: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgressAllow {
    #[serde(default)]
    names: Vec<Spanned<String>>,
    #[serde(default)]
    cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    ports: Vec<Spanned<i64>>,
}

/// `[egress_learning]`: durations such as "10m" or "24h".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgressLearning {
    warmup: Option<Spanned<String>>,
    stable: Option<Spanned<String>>,
    max_learning: Option<Spanned<String>>,
    quarantine: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    number: Spanned<i64>,
    name: Spanned<String>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    action: Vec<Spanned<RawAction>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    severity: Vec<Severity>,
    min_score: Option<Spanned<f32>>,
    #[serde(default)]
    data_scope: Vec<Spanned<String>>,
    privileged: Option<bool>,
    root: Option<bool>,
    #[serde(default)]
    evidence: Vec<Evidence>,
    #[serde(default)]
    ecosystem: Vec<Spanned<String>>,
    #[serde(default)]
    purl_prefix: Vec<Spanned<String>>,
    #[serde(default)]
    namespace: Vec<Spanned<String>>,
    #[serde(default)]
    cluster: Vec<Spanned<String>>,
    #[serde(default)]
    workload: Vec<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    open_incident: OpenIncident,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    kind: Spanned<ActionKind>,
    mode: Spanned<Mode>,
    approval: Approval,
    revert_after: Option<Spanned<String>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    max_replica_share: Option<Spanned<f64>>,
    admission: Option<Spanned<Admission>>,
    /// The `[[endpoint]]` a webhook action goes to.
    endpoint: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuards {
    #[serde(default)]
    units: Vec<Spanned<String>>,
    namespaces: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    cgroups: Vec<Spanned<String>>,
    #[serde(default)]
    workloads: Vec<Spanned<String>>,
    // The built-in guards cannot be switched off. These keys are known
    // only so that `false` is refused with the reason, not as a typo.
    protect_agent: Option<Spanned<bool>>,
    protect_collector: Option<Spanned<bool>>,
    protect_pid1: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawException {
    advisory: Option<Spanned<String>>,
    purl: Option<Spanned<String>>,
    workload: Option<Spanned<String>>,
    ticket: Option<Spanned<String>>,
    expires: Option<Spanned<toml::Value>>,
    // Known only to be refused with the reason: an exception exempts
    // findings, never a workload from its guards.
    guards: Option<Spanned<toml::Value>>,
}

/// Collects errors and warnings with their places in the text.
struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<PolicyError>,
    warnings: Vec<String>,
}

impl Checker<'_> {
    fn at(&self, offset: usize, reason: String) -> PolicyError {
        let (line, column) = position(self.text, offset);
        PolicyError {
            file: self.file.to_string(),
            line,
            column,
            reason,
        }
    }

    fn error(&mut self, span: Range<usize>, reason: impl Into<String>) {
        let e = self.at(span.start, reason.into());
        self.errors.push(e);
    }

    fn warn(&mut self, span: Range<usize>, reason: impl Into<String>) {
        let e = self.at(span.start, format!("warning: {}", reason.into()));
        self.warnings.push(e.to_string());
    }

    /// The strings of a list, each checked non-empty.
    fn strings(&mut self, what: &str, list: Vec<Spanned<String>>) -> Vec<String> {
        list.into_iter()
            .filter_map(|s| {
                if s.get_ref().trim().is_empty() {
                    self.error(s.span(), format!("an empty {what}"));
                    None
                } else {
                    Some(s.into_inner())
                }
            })
            .collect()
    }
}

/// (line, column) of a byte offset, both 1-based; the column counts
/// characters. An offset past the end (TOML reports an unexpected end
/// there) is the end.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

pub(super) fn parse(file: &str, bytes: &[u8], now_ms: i64) -> Result<Policy, Vec<PolicyError>> {
    let one = |line, column, reason: String| {
        vec![PolicyError {
            file: file.to_string(),
            line,
            column,
            reason,
        }]
    };
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(one(
            1,
            1,
            format!(
                "the file is {} bytes; a policy may be at most {MAX_POLICY_BYTES}",
                bytes.len()
            ),
        ));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let (line, column) = position(valid, valid.len());
            return Err(one(line, column, "not valid UTF-8".into()));
        }
    };
    let mut c = Checker {
        file,
        text,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let raw: RawPolicy = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            let reason = e.message().trim().replace('\n', "; ");
            return Err(vec![c.at(offset, reason)]);
        }
    };
    let policy = check(&mut c, raw, now_ms);
    if c.errors.is_empty() {
        Ok(Policy {
            warnings: c.warnings,
            ..policy
        })
    } else {
        Err(c.errors)
    }
}

fn check(c: &mut Checker, raw: RawPolicy, now_ms: i64) -> Policy {
    let endpoints = {
        let mut errors = Vec::new();
        let endpoints = super::endpoint::check(raw.endpoint, &mut |span, why| {
            errors.push((span, why));
        });
        for (span, why) in errors {
            c.error(span, why);
        }
        endpoints
    };
    if raw.tier.is_empty() {
        c.error(
            0..0,
            "a policy needs at least one [[tier]] (without a file, the built-in three tiers apply)",
        );
    }
    let count = raw.tier.len();
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    let mut numbering_ok = true;
    let mut tiers = Vec::new();
    for raw_tier in raw.tier {
        let span = raw_tier.span();
        let t = raw_tier.into_inner();
        let number = *t.number.get_ref();
        if number < 1 {
            c.error(
                t.number.span(),
                format!("tier {number}: tiers are numbered from 1"),
            );
            numbering_ok = false;
        } else if let Some(&line) = seen.get(&number) {
            c.error(
                t.number.span(),
                format!("tier {number} is defined twice (first on line {line})"),
            );
            numbering_ok = false;
        } else {
            seen.insert(number, position(c.text, t.number.span().start).0);
        }
        let name = t.name.get_ref().trim().to_string();
        if name.is_empty() {
            c.error(t.name.span(), "a tier needs a name");
        }
        if t.rule.is_empty() {
            c.warn(
                span.clone(),
                format!("tier {number} has no [[tier.rule]], so no finding reaches it"),
            );
        }
        let actions = check_actions(c, number, t.action, &endpoints);
        let touches = actions
            .iter()
            .find(|a| a.kind.touches_workloads())
            .map(|a| a.kind);
        let rules = t
            .rule
            .into_iter()
            .map(|r| check_rule(c, number, touches, r))
            .collect();
        tiers.push(Tier {
            number: u32::try_from(number).unwrap_or(0),
            name,
            rules,
            actions,
        });
    }
    if numbering_ok {
        // Unique and from 1: the numbers run 1..=N only if none is past N.
        for t in &tiers {
            if t.number as usize > count {
                let line = seen[&i64::from(t.number)];
                let offset = line_offset(c.text, line);
                c.error(
                    offset..offset,
                    format!(
                        "tier {} in a policy of {count} tier(s): number the tiers 1 to {count} without gaps",
                        t.number
                    ),
                );
            }
        }
    }
    tiers.sort_by_key(|t| t.number);
    // A catch-all rule before the last tier leaves the later ones unreachable.
    if let Some(t) = tiers
        .iter()
        .find(|t| t.rules.iter().any(Rule::is_catch_all))
        && t.number as usize != tiers.len()
        && let Some(&line) = seen.get(&i64::from(t.number))
    {
        let offset = line_offset(c.text, line);
        c.warn(
            offset..offset,
            format!(
                "tier {} has a rule without conditions, which matches every finding: later tiers are never reached",
                t.number
            ),
        );
    }
    let guards = match raw.guards {
        Some(g) => check_guards(c, g.into_inner()),
        None => Guards::default(),
    };
    let exceptions = raw
        .exception
        .into_iter()
        .filter_map(|e| check_exception(c, e, now_ms))
        .collect();
    let gate = match raw.gate {
        Some(g) => GateSettings {
            tag_without_digest: g
                .tag_without_digest
                .unwrap_or(GateSettings::default().tag_without_digest),
            exclude_namespaces: match g.exclude_namespaces {
                Some(list) => c.strings("gate.exclude_namespaces entry", list),
                None => GateSettings::default().exclude_namespaces,
            },
        },
        None => GateSettings::default(),
    };
    let (egress, egress_learning) = check_egress(c, raw.egress, raw.egress_learning, &endpoints);
    let verify = match raw.verify {
        Some(v) => check_verify(c, v.into_inner()),
        None => Default::default(),
    };
    Policy {
        verify,
        tiers,
        guards,
        exceptions,
        gate,
        endpoints,
        warnings: Vec::new(),
        egress,
        egress_learning,
    }
}

/// The deploy gate carries these out: they take an `admission` answer.
fn is_gate(kind: ActionKind) -> bool {
    matches!(
        kind,
        ActionKind::FreezeDeployments | ActionKind::BlockNewArtifactsWithPackage
    )
}

/// The `[[egress]]` sections and `[egress_learning]`. A workload `"*"`
/// sets the default for every workload no other section names.
fn check_egress(
    c: &mut Checker,
    raw: Vec<Spanned<RawEgress>>,
    learning: Option<Spanned<RawEgressLearning>>,
    endpoints: &[super::Endpoint],
) -> (
    crate::egress::stage::EgressPolicies,
    crate::egress::flags::EgressFlags,
) {
    use crate::egress::policy::{Allow, EgressPolicy, Mode as EgressMode};
    let mut policies = crate::egress::stage::EgressPolicies::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for section in raw {
        let e = section.into_inner();
        let workload = e.workload.get_ref().trim().to_string();
        if workload.is_empty() {
            c.error(
                e.workload.span(),
                "an [[egress]] section needs a workload (a baseline key, a glob, or \"*\")",
            );
            continue;
        }
        if let Some(&line) = seen.get(&workload) {
            c.error(
                e.workload.span(),
                format!("egress workload {workload:?} is named twice (first on line {line})"),
            );
        }
        seen.insert(
            workload.clone(),
            position(c.text, e.workload.span().start).0,
        );
        let mode = match &e.mode {
            None => EgressMode::default(),
            Some(m) => match EgressMode::parse(m.get_ref()) {
                Some(mode) => mode,
                None => {
                    c.error(
                        m.span(),
                        format!(
                            "egress mode {:?}: use \"enforce\", \"policy+learn\" or \"audit\"",
                            m.get_ref()
                        ),
                    );
                    EgressMode::default()
                }
            },
        };
        let mut allow = Vec::new();
        for a in e.allow {
            let a = a.into_inner();
            let mut rule = Allow::default();
            for n in a.names {
                let name = n.get_ref().trim();
                let bare = name.strip_prefix("*.").unwrap_or(name);
                if bare.is_empty()
                    || bare.contains('*')
                    || bare.chars().any(|ch| ch.is_whitespace() || ch.is_control())
                {
                    c.error(
                        n.span(),
                        format!("egress name {name:?}: a DNS name, or *.SUFFIX for its subdomains"),
                    );
                } else {
                    rule.names.push(name.to_string());
                }
            }
            for cidr in a.cidrs {
                match parse_cidr(cidr.get_ref().trim()) {
                    Ok(net) => rule.cidrs.push(net),
                    Err(reason) => c.error(cidr.span(), reason.replacen("allow", "egress cidr", 1)),
                }
            }
            for p in a.ports {
                match u16::try_from(*p.get_ref()) {
                    Ok(port) if port > 0 => rule.ports.push(port),
                    _ => c.error(p.span(), format!("egress port {}: 1 to 65535", p.get_ref())),
                }
            }
            if rule.names.is_empty() && rule.cidrs.is_empty() {
                c.warn(
                    e.workload.span(),
                    format!("an allow of egress workload {workload:?} names no destination, so it allows nothing"),
                );
            }
            allow.push(rule);
        }
        let endpoint = match &e.endpoint {
            None => None,
            Some(name) if endpoints.iter().any(|ep| ep.name == *name.get_ref()) => {
                if mode == EgressMode::Audit {
                    c.warn(
                        name.span(),
                        format!("egress workload {workload:?} is in audit mode: its alerts are listed, never sent to endpoint {:?}", name.get_ref()),
                    );
                }
                Some(name.get_ref().clone())
            }
            Some(name) => {
                c.error(
                    name.span(),
                    format!(
                        "egress endpoint {:?} is not an [[endpoint]] of this file",
                        name.get_ref()
                    ),
                );
                None
            }
        };
        let policy = EgressPolicy {
            mode,
            allow,
            endpoint,
        };
        if workload == "*" {
            policies.default = policy;
        } else {
            policies.workloads.push((workload, policy));
        }
    }
    let mut flags = crate::egress::flags::EgressFlags::default();
    if let Some(l) = learning {
        let l = l.into_inner();
        for (field, slot) in [
            (l.warmup, &mut flags.warmup),
            (l.stable, &mut flags.stable),
            (l.max_learning, &mut flags.max_learning),
            (l.quarantine, &mut flags.quarantine),
        ] {
            if let Some(v) = field {
                match crate::egress::duration::parse(v.get_ref()) {
                    Ok(d) => *slot = Some(d),
                    Err(e) => c.error(v.span(), e.to_string()),
                }
            }
        }
    }
    (policies, flags)
}

/// `[verify]`: each key checked on its own (see
/// `response::verify::settings`), every problem reported.
fn check_verify(c: &mut Checker, v: RawVerify) -> crate::response::verify::settings::VerifyTable {
    use crate::response::verify::settings::{self, VerifyTable};
    let mut out = VerifyTable::default();
    if let Some(e) = v.every {
        match crate::egress::duration::parse(e.get_ref())
            .map_err(|err| format!("verify {err}"))
            .and_then(|d| settings::check_every(d).map_err(|err| format!("verify {err}")))
        {
            Ok(d) => out.every = Some(d),
            Err(why) => c.error(e.span(), why),
        }
    }
    if let Some(k) = v.streak {
        match settings::check_streak(*k.get_ref()) {
            Ok(k) => out.streak = Some(k),
            Err(why) => c.error(k.span(), format!("verify {why}")),
        }
    }
    if let Some(list) = v.evidence {
        let span = list.span();
        let mut levels = Vec::new();
        let mut ok = true;
        for l in list.into_inner() {
            let level = l.get_ref().trim().to_string();
            // Each entry's own problem at its place; the list's (no
            // "loaded") at the list.
            let why = if !crate::response::verify::LEVELS.contains(&level.as_str()) {
                Some(format!(
                    "verify evidence level {level:?} is not one of {}",
                    crate::response::verify::LEVELS.join(", ")
                ))
            } else if levels.contains(&level) {
                Some(format!("verify evidence level {level:?} is listed twice"))
            } else {
                None
            };
            match why {
                Some(why) => {
                    c.error(l.span(), why);
                    ok = false;
                }
                None => levels.push(level),
            }
        }
        if ok {
            match settings::check_levels(&levels) {
                Ok(()) => out.evidence = Some(levels),
                Err(why) => c.error(span, format!("verify {why}")),
            }
        }
    }
    out
}

/// The byte offset of a 1-based line's start.
fn line_offset(text: &str, line: usize) -> usize {
    text.split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum()
}

fn check_actions(
    c: &mut Checker,
    tier: i64,
    raw: Vec<Spanned<RawAction>>,
    endpoints: &[super::Endpoint],
) -> Vec<Action> {
    let mut kinds: Vec<ActionKind> = Vec::new();
    let mut actions = Vec::new();
    for a in raw {
        let a = a.into_inner();
        let kind = *a.kind.get_ref();
        if kinds.contains(&kind) {
            c.error(a.kind.span(), format!("tier {tier} lists {kind} twice"));
        }
        kinds.push(kind);
        let mode = *a.mode.get_ref();
        if mode == Mode::Shadow && !kind.has_shadow() {
            let why = if kind.is_record() {
                "it is a record, not a control"
            } else {
                "it blocks nothing whose attempts could be counted"
            };
            c.error(
                a.mode.span(),
                format!("{kind} has no shadow mode ({why}): use observe or enforce"),
            );
        }
        let revert_after_ms = a.revert_after.and_then(|r| {
            if let Some(why) = kind.irreversible() {
                c.error(r.span(), format!("{kind} cannot have revert_after: {why}"));
                return None;
            }
            match parse_ttl(r.get_ref()) {
                Ok(ms) => Some(ms),
                Err(e) => {
                    c.error(r.span(), format!("revert_after {:?}: {e}", r.get_ref()));
                    None
                }
            }
        });
        let mut allow = Vec::new();
        if let Some(list) = a.allow {
            if kind != ActionKind::IsolateAffectedWorkloads {
                c.error(
                    list.span(),
                    format!("allow applies to isolate_affected_workloads only, not {kind}"),
                );
            }
            for cidr in list.into_inner() {
                match parse_cidr(cidr.get_ref()) {
                    Ok(n) => allow.push(n),
                    Err(e) => c.error(cidr.span(), e),
                }
            }
        }
        let max_replica_share = a.max_replica_share.and_then(|s| {
            let share = *s.get_ref();
            if !kind.touches_workloads() {
                c.error(
                    s.span(),
                    format!(
                        "max_replica_share applies to isolate_affected_workloads, freeze_cgroup and kill_processes, not {kind}"
                    ),
                );
                None
            } else if !(share > 0.0 && share <= 1.0) {
                c.error(
                    s.span(),
                    format!(
                        "max_replica_share {share} is out of range: a share of a workload's replicas, more than 0 and at most 1 (0.5 is half)"
                    ),
                );
                None
            } else {
                Some(share)
            }
        });
        let admission = match a.admission {
            Some(m) if !is_gate(kind) => {
                c.error(
                    m.span(),
                    format!(
                        "admission applies to the deploy gate's actions (freeze_deployments, block_new_artifacts_with_package), not {kind}"
                    ),
                );
                Admission::Deny
            }
            Some(m) => *m.get_ref(),
            None => Admission::Deny,
        };
        let endpoint = a.endpoint.and_then(|e| {
            if kind.touches_workloads() {
                c.error(
                    e.span(),
                    format!("{kind} is carried out by the agents, not sent to an endpoint"),
                );
                None
            } else if is_gate(kind) {
                c.error(
                    e.span(),
                    format!(
                        "{kind} is carried out by the deploy gate (the admission webhook on the collector's --http-listen), not sent to an endpoint"
                    ),
                );
                None
            } else if !endpoints.iter().any(|d| d.name == *e.get_ref()) {
                c.error(
                    e.span(),
                    format!(
                        "endpoint {:?} is not defined: add an [[endpoint]] with that name",
                        e.get_ref()
                    ),
                );
                None
            } else {
                Some(e.into_inner())
            }
        });
        actions.push(Action {
            kind,
            mode,
            approval: a.approval,
            revert_after_ms,
            allow,
            max_replica_share,
            admission,
            endpoint,
        });
    }
    actions
}

/// The patterns of workloads the built-in guards always protect: a rule
/// that names one of them, in a tier whose actions touch workloads, asks
/// for what no executor will do.
fn names_protected_workload(pattern: &str) -> bool {
    let p = pattern.trim_end_matches('*');
    p.contains("patchgap-agent")
        || p.contains("patchgap-collector")
        || p == "unit:init.scope"
        || p.ends_with("/init.scope")
}

fn check_rule(
    c: &mut Checker,
    tier: i64,
    touches: Option<ActionKind>,
    raw: Spanned<RawRule>,
) -> Rule {
    let rule_span = raw.span();
    let r = raw.into_inner();
    let min_score = r.min_score.and_then(|s| {
        let v = *s.get_ref();
        if (0.0..=10.0).contains(&v) {
            Some(v)
        } else {
            c.error(
                s.span(),
                format!("min_score {v} is not a CVSS score (0 to 10)"),
            );
            None
        }
    });
    let mut ecosystem = Vec::new();
    for e in r.ecosystem {
        match Ecosystem::from_purl_type(e.get_ref()) {
            Some(eco) => ecosystem.push(eco.purl_type().to_string()),
            None => c.error(
                e.span(),
                format!(
                    "unknown ecosystem {:?} (expected one of {})",
                    e.get_ref(),
                    Ecosystem::list()
                ),
            ),
        }
    }
    let mut purl_prefix = Vec::new();
    for p in r.purl_prefix {
        if p.get_ref().starts_with("pkg:") && p.get_ref().len() > 4 {
            purl_prefix.push(p.into_inner());
        } else {
            c.error(
                p.span(),
                format!(
                    "purl_prefix {:?} is not the start of a purl, such as \"pkg:pypi/torch\"",
                    p.get_ref()
                ),
            );
        }
    }
    if let Some(kind) = touches {
        for w in &r.workload {
            if names_protected_workload(w.get_ref()) {
                c.error(
                    w.span(),
                    format!(
                        "tier {tier} would {kind} on {:?}: the agent, the collector and PID 1 are always protected, so no executor acts on them",
                        w.get_ref()
                    ),
                );
            }
        }
    }
    if r.labels.keys().any(|k| k.trim().is_empty()) {
        c.error(rule_span, "an empty label name");
    }
    Rule {
        severity: r.severity,
        min_score,
        data_scope: c.strings("data scope", r.data_scope),
        privileged: r.privileged,
        root: r.root,
        evidence: r.evidence,
        ecosystem,
        purl_prefix,
        namespace: c.strings("namespace", r.namespace),
        cluster: c.strings("cluster", r.cluster),
        workload: c.strings("workload", r.workload),
        labels: r.labels,
        open_incident: r.open_incident,
    }
}

fn check_guards(c: &mut Checker, g: RawGuards) -> Guards {
    for (key, value) in [
        ("protect_agent", &g.protect_agent),
        ("protect_collector", &g.protect_collector),
        ("protect_pid1", &g.protect_pid1),
    ] {
        if let Some(v) = value
            && !*v.get_ref()
        {
            c.error(
                v.span(),
                format!(
                    "{key} = false: the agent, the collector and PID 1 are always protected, and no policy can lift that"
                ),
            );
        }
    }
    fn list(c: &mut Checker, what: &str, items: Vec<Spanned<String>>) -> Vec<String> {
        for s in &items {
            if s.get_ref().starts_with('!') {
                c.error(
                    s.span(),
                    format!(
                        "{what} {:?}: guards only add protection; nothing can remove one",
                        s.get_ref()
                    ),
                );
            }
        }
        c.strings(what, items)
    }
    let units = list(c, "unit", g.units);
    let workloads = list(c, "workload", g.workloads);
    let namespaces = match g.namespaces {
        Some(ns) => {
            let span = ns.span();
            let ns = list(c, "namespace", ns.into_inner());
            if !ns.iter().any(|n| n == "kube-system") {
                c.warn(
                    span,
                    "kube-system is not guarded: the default guard is replaced, not added to",
                );
            }
            ns
        }
        None => Guards::default().namespaces,
    };
    let mut cgroups = Vec::new();
    for p in g.cgroups {
        let path = p.get_ref();
        if !path.starts_with('/') {
            c.error(
                p.span(),
                format!("cgroup {path:?} is not a cgroup v2 path such as /system.slice"),
            );
        } else {
            if path.trim_end_matches('/').is_empty() {
                c.warn(
                    p.span(),
                    "cgroup \"/\" guards every workload: nothing can be isolated, frozen or killed",
                );
            }
            cgroups.push(p.into_inner());
        }
    }
    Guards {
        units,
        namespaces,
        cgroups,
        workloads,
        ..Guards::default()
    }
}

fn check_exception(c: &mut Checker, raw: Spanned<RawException>, now_ms: i64) -> Option<Exception> {
    let span = raw.span();
    let e = raw.into_inner();
    let mut ok = true;
    if let Some(g) = &e.guards {
        c.error(
            g.span(),
            "an exception cannot lift a guard: it exempts findings, and the agent, the collector and PID 1 are always protected",
        );
        ok = false;
    }
    if e.advisory.is_none() && e.purl.is_none() && e.workload.is_none() {
        c.error(
            span.clone(),
            "an exception must say what it exempts: advisory, purl or workload",
        );
        ok = false;
    }
    let nonempty = |c: &mut Checker, what: &str, v: Option<Spanned<String>>| match v {
        Some(s) if s.get_ref().trim().is_empty() => {
            c.error(s.span(), format!("an empty {what}"));
            None
        }
        other => other.map(Spanned::into_inner),
    };
    let advisory = nonempty(c, "advisory", e.advisory);
    if let Some(p) = &e.purl
        && !p.get_ref().starts_with("pkg:")
    {
        c.error(
            p.span(),
            format!(
                "purl {:?} is not a purl such as pkg:deb/debian/openssl",
                p.get_ref()
            ),
        );
        ok = false;
    }
    let purl = nonempty(c, "purl", e.purl);
    let workload = nonempty(c, "workload", e.workload);
    let ticket = match e.ticket {
        None => {
            c.error(
                span.clone(),
                "an exception needs a ticket (ticket = \"SEC-123\"): who accepted the risk, and where",
            );
            None
        }
        Some(t) if t.get_ref().trim().is_empty() => {
            c.error(t.span(), "the ticket is empty");
            None
        }
        Some(t) => Some(t.into_inner()),
    };
    let expires = match e.expires {
        None => {
            c.error(
                span,
                "an exception needs an expiry (expires = 2026-12-31T00:00:00Z, RFC 3339)",
            );
            None
        }
        Some(x) => {
            let text = match x.get_ref() {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Datetime(d) => Some(d.to_string()),
                _ => None,
            };
            match text.as_deref().and_then(Timestamp::parse) {
                Some(t) => {
                    let ms = t.unix_seconds.saturating_mul(1000);
                    if ms <= now_ms {
                        c.warn(
                            x.span(),
                            format!("this exception expired at {t}: it never applies"),
                        );
                    }
                    Some((t.to_string(), ms))
                }
                None => {
                    c.error(
                        x.span(),
                        "expires must be an RFC 3339 time with its offset, such as 2026-12-31T00:00:00Z",
                    );
                    None
                }
            }
        }
    };
    let (ticket, (expires, expires_ms)) = (ticket?, expires?);
    ok.then_some(Exception {
        advisory,
        purl,
        workload,
        ticket,
        expires,
        expires_ms,
    })
}

/// A TTL such as 90s, 30m, 2h or 1d: positive, whole units, at most 366d.
pub(crate) fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err("a TTL cannot be negative: write a duration such as 30m, 2h or 1d".into());
    }
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let unit_ms: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" if !n.is_empty() => {
            return Err("a TTL needs a unit: s, m, h or d (such as 30m)".into());
        }
        _ => return Err("not a duration such as 30m, 2h or 1d (units: s, m, h, d)".into()),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| "not a duration such as 30m, 2h or 1d (units: s, m, h, d)".to_string())?;
    if n == 0 {
        return Err(
            "a TTL of zero would lift the action at once: leave revert_after out to keep it until a responder reverts it"
                .into(),
        );
    }
    match n.checked_mul(unit_ms) {
        Some(ms) if ms <= MAX_TTL_MS => Ok(ms),
        _ => Err("longer than 366d: leave revert_after out and revert by hand".into()),
    }
}

/// An IP network (198.51.100.0/24, 2001:db8::/32) or one address (as /32
/// or /128). Host bits must be zero, so a typo cannot widen or shift it
/// unseen.
pub(crate) fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("allow {s:?} is not an IP network such as 198.51.100.0/24"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max && !p.starts_with('+') => n,
            _ => {
                return Err(format!("allow {s:?}: the prefix length must be 0 to {max}"));
            }
        },
    };
    let net = Cidr { addr, prefix };
    let zeroed = match addr {
        IpAddr::V4(a) => IpAddr::V4(
            (u32::from(a) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)).into(),
        ),
        IpAddr::V6(a) => IpAddr::V6(
            (u128::from(a) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)).into(),
        ),
    };
    if zeroed != addr {
        return Err(format!(
            "allow {s:?} has host bits set: the network is {zeroed}/{prefix}"
        ));
    }
    Ok(net)
}
