//! How well the response went, from the incidents' event logs alone: time
//! to scope (detected → scoped), time to containment per tier (detected →
//! the action's verified effect) with the approval wait apart (plan
//! recorded → approved), convergence time (detected → the start of the
//! closing streak), the share of incidents closed with evidence, the
//! false-positive containment rate per tier (actions reverted as
//! `false-positive` or `not-affected` over actions applied), and reopens.
//! Distributions as p50, p90 and max (nearest rank), never bare means.
//!
//! `render` writes the same values, with the collector's operational
//! gauges, in the Prometheus text exposition format (version 0.0.4) for
//! the HTTP listener's `/metrics`. Everything here is pure.

use std::{collections::BTreeMap, fmt::Write};

use serde::Serialize;

use crate::response::incident::{Event, Observation, Recorded, State};

/// What one incident's log says, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IncidentTimes {
    pub id: i64,
    pub opened_at_ms: i64,
    /// The tier routed last (0: none).
    pub tier: u32,
    pub time_to_scope_ms: Option<i64>,
    /// (tier, detected → verified effect) per action that took effect.
    pub time_to_containment_ms: Vec<(u32, i64)>,
    /// (tier, plan recorded → approved) per approval.
    pub approval_wait_ms: Vec<(u32, i64)>,
    /// Detected → the first run of each streak that moved it to
    /// `recovering`.
    pub convergence_ms: Vec<i64>,
    /// Where it ended: Some(true) closed with evidence, Some(false) closed
    /// by force, None not closed.
    pub closed_with_evidence: Option<bool>,
    /// Every close the log records, each counted once however the
    /// incident ended later (a reopen does not take a close back): with
    /// evidence (`recovering → closed`), and by force (`force_closed`).
    /// The counter on `/metrics` is made of these, so it never goes down.
    pub closes_with_evidence: u64,
    pub closes_forced: u64,
    pub reopens: u32,
    /// Per tier: actions that took effect, and those reverted as a false
    /// positive or not affected.
    pub applied: BTreeMap<u32, u64>,
    pub false_positive: BTreeMap<u32, u64>,
}

/// Reads one incident's log.
pub fn from_log(id: i64, events: &[Recorded]) -> IncidentTimes {
    let mut f = Fold::new(id);
    for r in events {
        f.feed(r);
    }
    f.times
}

/// One incident's log read so far: its times, and what later events need
/// from earlier ones (the plans' recording times, each action's tier when
/// it took effect, where the current streak started). Events are only
/// ever appended to a log, so feeding the events after the last one read
/// gives what reading the whole log again would, which is what lets a
/// report read only the events appended since the last one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fold {
    pub times: IncidentTimes,
    /// Whether the first event (the opening) was read.
    started: bool,
    /// Plan hash -> when it was recorded.
    plans: BTreeMap<String, i64>,
    /// Action id -> its tier when it took effect.
    took_effect: BTreeMap<u32, u32>,
    streak_start: Option<i64>,
}

impl Fold {
    pub fn new(id: i64) -> Fold {
        Fold {
            times: IncidentTimes {
                id,
                ..IncidentTimes::default()
            },
            ..Fold::default()
        }
    }

    /// Whether any event was read (an incident without events counts in
    /// no report).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Reads the next event of the log.
    pub fn feed(&mut self, r: &Recorded) {
        let t = &mut self.times;
        if !self.started {
            self.started = true;
            t.opened_at_ms = r.at_ms;
        }
        let opened = t.opened_at_ms;
        match &r.event {
            Event::TierRouted { tier, .. } => t.tier = tier.unwrap_or(0),
            Event::StateChanged { from, to, .. } => {
                if *to == State::Scoped && *from == State::Detected && t.time_to_scope_ms.is_none()
                {
                    t.time_to_scope_ms = Some(r.at_ms - opened);
                }
                if *to == State::Recovering
                    && let Some(s) = self.streak_start
                {
                    t.convergence_ms.push(s - opened);
                }
                if *from == State::Closed {
                    t.reopens += 1;
                    t.closed_with_evidence = None;
                }
                if *to == State::Closed {
                    t.closed_with_evidence = Some(true);
                    t.closes_with_evidence += 1;
                }
            }
            Event::ForceClosed { .. } => {
                t.closed_with_evidence = Some(false);
                t.closes_forced += 1;
            }
            Event::Planned { plan } => {
                self.plans.insert(plan.hash.clone(), r.at_ms);
            }
            Event::Approved { plan, .. } => {
                if let Some(at) = self.plans.get(plan) {
                    t.approval_wait_ms.push((t.tier, r.at_ms - at));
                }
            }
            Event::Observed {
                action,
                observation,
            } => match observation {
                Observation::Applied { .. } if !self.took_effect.contains_key(action) => {
                    self.took_effect.insert(*action, t.tier);
                    *t.applied.entry(t.tier).or_default() += 1;
                }
                Observation::Verified {
                    time_to_containment_ms,
                    ..
                } => {
                    if !self.took_effect.contains_key(action) {
                        self.took_effect.insert(*action, t.tier);
                        *t.applied.entry(t.tier).or_default() += 1;
                    }
                    t.time_to_containment_ms
                        .push((self.took_effect[action], *time_to_containment_ms));
                }
                _ => {}
            },
            Event::Reverted { actions, reason }
                if reason == "false-positive" || reason == "not-affected" =>
            {
                for a in actions {
                    if let Some(tier) = self.took_effect.get(a) {
                        *t.false_positive.entry(*tier).or_default() += 1;
                    }
                }
            }
            Event::Checked { run } => {
                if run.verdict == super::Verdict::Successful {
                    self.streak_start.get_or_insert(r.at_ms);
                } else {
                    self.streak_start = None;
                }
            }
            _ => {}
        }
    }
}

/// p50, p90 and max of a sample (nearest rank), with its count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Dist {
    pub count: u64,
    pub p50_ms: Option<i64>,
    pub p90_ms: Option<i64>,
    pub max_ms: Option<i64>,
}

impl Dist {
    pub fn of(samples: &[i64]) -> Dist {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let rank = |p: u64| -> Option<i64> {
            if s.is_empty() {
                return None;
            }
            // Nearest rank: ceil(p/100 * n), from 1.
            let n = s.len() as u64;
            let k = (p * n).div_ceil(100).max(1);
            Some(s[(k - 1) as usize])
        };
        Dist {
            count: s.len() as u64,
            p50_ms: rank(50),
            p90_ms: rank(90),
            max_ms: s.last().copied(),
        }
    }
}

/// The report over a set of incidents, with the samples behind it (for
/// the histograms).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub incidents: u64,
    pub time_to_scope: Dist,
    /// By tier (0: none routed).
    pub time_to_containment: BTreeMap<u32, Dist>,
    pub approval_wait: BTreeMap<u32, Dist>,
    pub convergence: Dist,
    /// Incidents closed now, and those of them closed with evidence
    /// (a reopened incident leaves both until it closes again).
    pub closed: u64,
    pub closed_with_evidence: u64,
    /// closed_with_evidence / closed (None when none closed).
    pub share_closed_with_evidence: Option<f64>,
    /// Close events over the logs, with evidence and by force: these only
    /// grow (see [`IncidentTimes::closes_with_evidence`]).
    pub closes_with_evidence: u64,
    pub closes_forced: u64,
    pub actions_applied: BTreeMap<u32, u64>,
    pub false_positive_reverts: BTreeMap<u32, u64>,
    /// false positives / applied, per tier.
    pub false_positive_rate: BTreeMap<u32, f64>,
    pub reopens: u64,
    #[serde(skip)]
    pub samples: Samples,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    pub time_to_scope: Vec<i64>,
    pub time_to_containment: BTreeMap<u32, Vec<i64>>,
    pub approval_wait: BTreeMap<u32, Vec<i64>>,
    pub convergence: Vec<i64>,
}

/// The report over `incidents`.
pub fn report<'a>(incidents: impl IntoIterator<Item = &'a IncidentTimes>) -> Report {
    let mut s = Samples::default();
    let mut r = Report::default();
    for i in incidents {
        r.incidents += 1;
        s.time_to_scope.extend(i.time_to_scope_ms);
        for (tier, ms) in &i.time_to_containment_ms {
            s.time_to_containment.entry(*tier).or_default().push(*ms);
        }
        for (tier, ms) in &i.approval_wait_ms {
            s.approval_wait.entry(*tier).or_default().push(*ms);
        }
        s.convergence.extend(&i.convergence_ms);
        if let Some(with) = i.closed_with_evidence {
            r.closed += 1;
            r.closed_with_evidence += u64::from(with);
        }
        r.reopens += u64::from(i.reopens);
        r.closes_with_evidence += i.closes_with_evidence;
        r.closes_forced += i.closes_forced;
        for (tier, n) in &i.applied {
            *r.actions_applied.entry(*tier).or_default() += n;
        }
        for (tier, n) in &i.false_positive {
            *r.false_positive_reverts.entry(*tier).or_default() += n;
        }
    }
    r.time_to_scope = Dist::of(&s.time_to_scope);
    r.time_to_containment = s
        .time_to_containment
        .iter()
        .map(|(t, v)| (*t, Dist::of(v)))
        .collect();
    r.approval_wait = s
        .approval_wait
        .iter()
        .map(|(t, v)| (*t, Dist::of(v)))
        .collect();
    r.convergence = Dist::of(&s.convergence);
    r.share_closed_with_evidence =
        (r.closed > 0).then(|| r.closed_with_evidence as f64 / r.closed as f64);
    r.false_positive_rate = r
        .actions_applied
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, n)| {
            let fp = r.false_positive_reverts.get(t).copied().unwrap_or(0);
            (*t, fp as f64 / *n as f64)
        })
        .collect();
    r.samples = s;
    r
}

/// The collector's own state, for the same exposition.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Operational {
    pub agents_connected: u64,
    /// From each delta's scan on its agent to its commit here
    /// (`fleet::lag`): a backlog in an agent's spool shows as lag once
    /// it is caught up; per host, `patchgap hosts -o json` gives the
    /// backlog itself (`health.spool_unacked`).
    pub ingest_lag: crate::fleet::lag::LagSnapshot,
    /// Events the agents lost (kernel and user side, summed).
    pub lost_events: u64,
    pub stale_hosts: u64,
    pub store_bytes: u64,
}

/// Histogram buckets, in seconds: a second to a week.
pub const BUCKETS_SECONDS: [f64; 11] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0, 259200.0, 604800.0,
];

fn histogram(out: &mut String, name: &str, help: &str, series: &[(Option<String>, &[i64])]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (label, samples) in series {
        let lbl = |extra: &str| -> String {
            match (label, extra.is_empty()) {
                (Some(l), true) => format!("{{{l}}}"),
                (Some(l), false) => format!("{{{l},{extra}}}"),
                (None, true) => String::new(),
                (None, false) => format!("{{{extra}}}"),
            }
        };
        let secs: Vec<f64> = samples.iter().map(|ms| *ms as f64 / 1000.0).collect();
        for b in BUCKETS_SECONDS {
            let n = secs.iter().filter(|s| **s <= b).count();
            let _ = writeln!(out, "{name}_bucket{} {n}", lbl(&format!("le=\"{b}\"")));
        }
        let _ = writeln!(out, "{name}_bucket{} {}", lbl("le=\"+Inf\""), secs.len());
        let _ = writeln!(out, "{name}_sum{} {}", lbl(""), secs.iter().sum::<f64>());
        let _ = writeln!(out, "{name}_count{} {}", lbl(""), secs.len());
    }
}

/// `patchgap_ingest_lag_seconds`, from the running histogram's buckets.
fn lag_histogram(out: &mut String, lag: &crate::fleet::lag::LagSnapshot) {
    let name = "patchgap_ingest_lag_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From an agent's scan that built a delta to its commit by this collector (includes time in the agent's spool)."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (bound, n) in crate::fleet::lag::BUCKETS_MS.iter().zip(lag.cumulative) {
        let le = *bound as f64 / 1000.0;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", lag.count);
    let _ = writeln!(out, "{name}_sum {}", lag.sum_ms as f64 / 1000.0);
    let _ = writeln!(out, "{name}_count {}", lag.count);
}

fn scalar(out: &mut String, name: &str, kind: &str, help: &str, series: &[(Option<String>, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (label, v) in series {
        match label {
            Some(l) => {
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
            None => {
                let _ = writeln!(out, "{name} {v}");
            }
        }
    }
}

fn tier_label(t: u32) -> String {
    format!("tier=\"{t}\"")
}

/// The report and the operational gauges in the Prometheus text format.
/// Label values are tier numbers and fixed words only: nothing a caller
/// controls reaches the exposition.
pub fn render(report: &Report, ops: &Operational) -> String {
    let mut out = String::new();
    let s = &report.samples;
    histogram(
        &mut out,
        "patchgap_incident_time_to_scope_seconds",
        "From an incident's detection to its scope.",
        &[(None, &s.time_to_scope)],
    );
    let by_tier = |m: &BTreeMap<u32, Vec<i64>>| -> Vec<(Option<String>, Vec<i64>)> {
        m.iter()
            .map(|(t, v)| (Some(tier_label(*t)), v.clone()))
            .collect()
    };
    let ttc = by_tier(&s.time_to_containment);
    histogram(
        &mut out,
        "patchgap_incident_time_to_containment_seconds",
        "From detection to a containment action's verified effect, by tier.",
        &ttc.iter()
            .map(|(l, v)| (l.clone(), v.as_slice()))
            .collect::<Vec<_>>(),
    );
    let wait = by_tier(&s.approval_wait);
    histogram(
        &mut out,
        "patchgap_incident_approval_wait_seconds",
        "From a plan recorded to its approval, by tier.",
        &wait
            .iter()
            .map(|(l, v)| (l.clone(), v.as_slice()))
            .collect::<Vec<_>>(),
    );
    histogram(
        &mut out,
        "patchgap_incident_convergence_seconds",
        "From detection to the start of the streak of successful checks that closed it.",
        &[(None, &s.convergence)],
    );
    // Counted from the close events, not from the incidents closed now:
    // a reopen must not lower a counter (Prometheus reads a decrease as
    // a reset and `rate()` would invent a burst of closes).
    scalar(
        &mut out,
        "patchgap_incidents_closed_total",
        "counter",
        "Incident closes in the event logs, with runtime evidence or by force without it; a reopened incident's earlier close still counts.",
        &[
            (
                Some("evidence=\"true\"".into()),
                report.closes_with_evidence as f64,
            ),
            (
                Some("evidence=\"false\"".into()),
                report.closes_forced as f64,
            ),
        ],
    );
    scalar(
        &mut out,
        "patchgap_incident_reopens_total",
        "counter",
        "Closed incidents reopened because an affected version ran again.",
        &[(None, report.reopens as f64)],
    );
    scalar(
        &mut out,
        "patchgap_containment_actions_applied_total",
        "counter",
        "Containment actions that took effect, by tier.",
        &report
            .actions_applied
            .iter()
            .map(|(t, n)| (Some(tier_label(*t)), *n as f64))
            .collect::<Vec<_>>(),
    );
    scalar(
        &mut out,
        "patchgap_containment_false_positive_total",
        "counter",
        "Containment actions reverted as a false positive or not affected, by tier.",
        &report
            .actions_applied
            .keys()
            .map(|t| {
                let n = report.false_positive_reverts.get(t).copied().unwrap_or(0);
                (Some(tier_label(*t)), n as f64)
            })
            .collect::<Vec<_>>(),
    );
    scalar(
        &mut out,
        "patchgap_agents_connected",
        "gauge",
        "Agent streams connected now.",
        &[(None, ops.agents_connected as f64)],
    );
    lag_histogram(&mut out, &ops.ingest_lag);
    scalar(
        &mut out,
        "patchgap_agent_lost_events",
        "gauge",
        "Events the agents report lost, summed over hosts (their counters reset when an agent restarts).",
        &[(None, ops.lost_events as f64)],
    );
    scalar(
        &mut out,
        "patchgap_hosts_stale",
        "gauge",
        "Hosts that have not reported within the freshness window.",
        &[(None, ops.stale_hosts as f64)],
    );
    scalar(
        &mut out,
        "patchgap_store_size_bytes",
        "gauge",
        "Size of the store on disk.",
        &[(None, ops.store_bytes as f64)],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::{
        incident::{Plan, Source},
        verify::{Run, Verdict},
    };

    fn at(seq: i64, at_ms: i64, event: Event) -> Recorded {
        Recorded {
            seq,
            at_ms,
            actor: "a".into(),
            event,
        }
    }

    fn moved(from: State, to: State) -> Event {
        Event::StateChanged {
            from,
            to,
            reason: String::new(),
        }
    }

    fn checked(v: Verdict) -> Event {
        Event::Checked {
            run: Run {
                verdict: v,
                checks: vec![],
            },
        }
    }

    pub(super) fn log() -> Vec<Recorded> {
        let source = Source::Package {
            package: "x".into(),
            name: "x".into(),
            ecosystem: None,
            group: None,
            range: None,
        };
        let plan = Plan {
            hash: "h1".into(),
            tier: Some(1),
            tier_name: String::new(),
            exception: None,
            actions: vec![],
        };
        use State::*;
        vec![
            at(
                1,
                1_000,
                Event::Opened {
                    dedup_key: source.dedup_key(),
                    source,
                },
            ),
            at(2, 1_250, moved(Detected, Scoped)),
            at(
                3,
                2_000,
                Event::TierRouted {
                    tier: Some(1),
                    name: String::new(),
                },
            ),
            at(4, 2_000, Event::Planned { plan }),
            at(
                5,
                9_000,
                Event::Approved {
                    plan: "h1".into(),
                    actions: vec![1],
                },
            ),
            at(
                6,
                9_500,
                Event::Observed {
                    action: 1,
                    observation: Observation::Verified {
                        at_ms: 9_400,
                        time_to_containment_ms: 8_400,
                    },
                },
            ),
            at(7, 9_600, moved(ApprovalPending, Contained)),
            at(8, 10_000, checked(Verdict::Failed)),
            at(9, 11_000, checked(Verdict::Successful)),
            at(10, 12_000, checked(Verdict::Inconclusive)),
            at(11, 13_000, checked(Verdict::Successful)),
            at(12, 14_000, checked(Verdict::Successful)),
            at(13, 14_000, moved(Verifying, Recovering)),
            at(
                14,
                15_000,
                Event::Reverted {
                    actions: vec![1],
                    reason: "resolved".into(),
                },
            ),
            at(15, 16_000, moved(Recovering, Closed)),
        ]
    }

    #[test]
    fn the_log_gives_each_time() {
        let t = from_log(7, &log());
        assert_eq!(t.time_to_scope_ms, Some(250));
        assert_eq!(t.time_to_containment_ms, vec![(1, 8_400)]);
        assert_eq!(t.approval_wait_ms, vec![(1, 7_000)]);
        // The closing streak started at 13 000 (the inconclusive run at
        // 12 000 broke the first one).
        assert_eq!(t.convergence_ms, vec![12_000]);
        assert_eq!(t.closed_with_evidence, Some(true));
        assert_eq!(t.applied, BTreeMap::from([(1, 1)]));
        assert!(
            t.false_positive.is_empty(),
            "resolved is not a false positive"
        );
    }

    #[test]
    fn distributions_are_nearest_rank_and_rates_per_tier() {
        let d = Dist::of(&[5, 1, 4, 2, 3, 10, 9, 8, 7, 6]);
        assert_eq!(
            (d.count, d.p50_ms, d.p90_ms, d.max_ms),
            (10, Some(5), Some(9), Some(10))
        );
        assert_eq!(Dist::of(&[]).p50_ms, None);
        assert_eq!(Dist::of(&[42]).p90_ms, Some(42));
        let mut forced = from_log(8, &log());
        forced.closed_with_evidence = Some(false);
        forced.false_positive = BTreeMap::from([(1, 1)]);
        let r = report(&[from_log(7, &log()), forced]);
        assert_eq!((r.closed, r.closed_with_evidence), (2, 1));
        assert_eq!(r.share_closed_with_evidence, Some(0.5));
        assert_eq!(r.false_positive_rate, BTreeMap::from([(1, 0.5)]));
        assert_eq!(r.time_to_containment[&1].count, 2);
    }

    fn observed(seq: i64, at_ms: i64, action: u32, verified: bool) -> Recorded {
        let observation = match verified {
            true => Observation::Verified {
                at_ms,
                time_to_containment_ms: at_ms - 1_000,
            },
            false => Observation::Applied { at_ms },
        };
        at(
            seq,
            at_ms,
            Event::Observed {
                action,
                observation,
            },
        )
    }

    fn routed(seq: i64, at_ms: i64, tier: u32) -> Recorded {
        at(
            seq,
            at_ms,
            Event::TierRouted {
                tier: Some(tier),
                name: String::new(),
            },
        )
    }

    fn reverted(seq: i64, at_ms: i64, actions: Vec<u32>, reason: &str) -> Recorded {
        at(
            seq,
            at_ms,
            Event::Reverted {
                actions,
                reason: reason.into(),
            },
        )
    }

    /// Reverts as `false-positive` or `not-affected` count against the
    /// tier the action took effect in; other reasons, and actions that
    /// never took effect, do not.
    #[test]
    fn false_positive_reverts_give_the_rate_per_tier() {
        let opened = log().remove(0);
        // Tier 1: three actions take effect (one only verified); one is
        // reverted as a false positive, one as resolved; action 4 never
        // took effect. Then the incident moves to tier 2 and action 3 is
        // reverted as not affected: it counts for tier 1, where it took
        // effect.
        let one = vec![
            opened.clone(),
            routed(2, 2_000, 1),
            observed(3, 3_000, 1, false),
            observed(4, 3_100, 2, true),
            observed(5, 3_200, 3, false),
            // Verified after applied: still one action.
            observed(6, 3_300, 1, true),
            reverted(7, 4_000, vec![1], "false-positive"),
            reverted(8, 4_100, vec![2], "resolved"),
            reverted(9, 4_200, vec![4], "false-positive"),
            routed(10, 5_000, 2),
            reverted(11, 5_100, vec![3], "not-affected"),
        ];
        let t = from_log(1, &one);
        assert_eq!(t.applied, BTreeMap::from([(1, 3)]));
        assert_eq!(t.false_positive, BTreeMap::from([(1, 2)]));
        // Tier 2: one action, reverted as not affected.
        let two = vec![
            opened,
            routed(2, 2_000, 2),
            observed(3, 3_000, 1, false),
            reverted(4, 4_000, vec![1], "not-affected"),
        ];
        let u = from_log(2, &two);
        assert_eq!(u.applied, BTreeMap::from([(2, 1)]));
        assert_eq!(u.false_positive, BTreeMap::from([(2, 1)]));
        let r = report(&[t, u]);
        assert_eq!(r.actions_applied, BTreeMap::from([(1, 3), (2, 1)]));
        assert_eq!(r.false_positive_reverts, BTreeMap::from([(1, 2), (2, 1)]));
        assert_eq!(
            r.false_positive_rate,
            BTreeMap::from([(1, 2.0 / 3.0), (2, 1.0)])
        );
        let text = render(&r, &Operational::default());
        for line in [
            "patchgap_containment_actions_applied_total{tier=\"1\"} 3\n",
            "patchgap_containment_actions_applied_total{tier=\"2\"} 1\n",
            "patchgap_containment_false_positive_total{tier=\"1\"} 2\n",
            "patchgap_containment_false_positive_total{tier=\"2\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    /// The value of `series` (name and labels) in an exposition.
    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
            .parse()
            .unwrap()
    }

    /// A reopen takes the incident out of "closed now" (the report's
    /// share), but the counter of closes keeps the close it had: a
    /// Prometheus counter never goes down. The next close adds to it.
    #[test]
    fn a_reopen_never_lowers_the_closed_counter() {
        let closes = |events: &[Recorded]| {
            let r = report(&[from_log(7, events)]);
            let text = render(&r, &Operational::default());
            (
                r,
                sample(&text, "patchgap_incidents_closed_total{evidence=\"true\"}"),
                sample(&text, "patchgap_incidents_closed_total{evidence=\"false\"}"),
            )
        };
        let mut events = log();
        let (r, with, forced) = closes(&events);
        assert_eq!((r.closed, with, forced), (1, 1.0, 0.0));
        // A rollback reopens it.
        events.push(at(16, 20_000, moved(State::Closed, State::Scoped)));
        let (r, with, forced) = closes(&events);
        assert_eq!((r.closed, r.reopens), (0, 1), "{r:?}");
        assert_eq!((with, forced), (1.0, 0.0), "the close stays counted");
        // Closed again, by force this time.
        events.push(at(
            17,
            21_000,
            Event::ForceClosed {
                reason: "host rebuilt".into(),
            },
        ));
        let (r, with, forced) = closes(&events);
        assert_eq!((r.closed, r.closed_with_evidence), (1, 0), "{r:?}");
        assert_eq!((with, forced), (1.0, 1.0));
        // Reopened and closed with evidence again: 2 with evidence.
        events.push(at(18, 30_000, moved(State::Closed, State::Scoped)));
        events.push(at(19, 40_000, moved(State::Recovering, State::Closed)));
        let (r, with, forced) = closes(&events);
        assert_eq!((r.closed, r.closed_with_evidence, r.reopens), (1, 1, 2));
        assert_eq!((with, forced), (2.0, 1.0));
    }

    #[test]
    fn the_exposition_has_every_family_with_consistent_histograms() {
        let r = report(&[from_log(7, &log())]);
        let text = render(
            &r,
            &Operational {
                agents_connected: 2,
                stale_hosts: 1,
                ingest_lag: {
                    let lag = crate::fleet::lag::IngestLag::default();
                    lag.observe(1_000, 1_300);
                    lag.observe(1_000, 4_000);
                    lag.snapshot()
                },
                ..Operational::default()
            },
        );
        // The lag: 0.3 s and 3 s, cumulative buckets, sum in seconds.
        for line in [
            "patchgap_ingest_lag_seconds_bucket{le=\"0.25\"} 0\n",
            "patchgap_ingest_lag_seconds_bucket{le=\"0.5\"} 1\n",
            "patchgap_ingest_lag_seconds_bucket{le=\"5\"} 2\n",
            "patchgap_ingest_lag_seconds_bucket{le=\"+Inf\"} 2\n",
            "patchgap_ingest_lag_seconds_sum 3.3\n",
            "patchgap_ingest_lag_seconds_count 2\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
        assert!(
            text.contains("patchgap_incident_time_to_scope_seconds_bucket{le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("patchgap_incident_time_to_scope_seconds_count 1\n"));
        assert!(text.contains(
            "patchgap_incident_time_to_containment_seconds_bucket{tier=\"1\",le=\"5\"} 0\n"
        ));
        assert!(text.contains(
            "patchgap_incident_time_to_containment_seconds_bucket{tier=\"1\",le=\"15\"} 1\n"
        ));
        assert!(
            text.contains("patchgap_incident_time_to_containment_seconds_sum{tier=\"1\"} 8.4\n")
        );
        assert!(text.contains("patchgap_incidents_closed_total{evidence=\"true\"} 1\n"));
        assert!(text.contains("patchgap_agents_connected 2\n"));
        // Every family has HELP and TYPE, once.
        for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = family.split(' ').next().unwrap();
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}"
            );
        }
    }
}

/// The exposition checked by Prometheus's own linter (`promtool check
/// metrics`, from Debian's prometheus package; tests/deps.sh extracts it
/// to /var/cache/patchgap-tests/prometheus, or PATCHGAP_PROMTOOL names
/// it).
#[cfg(test)]
pub(crate) mod promtool {
    use std::{io::Write, process::Stdio};

    use super::*;

    fn promtool() -> std::path::PathBuf {
        let path = std::env::var_os("PATCHGAP_PROMTOOL")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/var/cache/patchgap-tests/prometheus/usr/bin/promtool".into());
        assert!(
            path.exists(),
            "{} is missing: run tests/deps.sh",
            path.display()
        );
        path
    }

    /// promtool's verdict on an exposition (ok, and what it said).
    pub(crate) fn check(text: &str) -> (bool, String) {
        let mut child = std::process::Command::new(promtool())
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success() && said.trim().is_empty(), said)
    }

    #[test]
    fn promtool_accepts_the_exposition() {
        let empty = render(&Report::default(), &Operational::default());
        let (ok, said) = check(&empty);
        assert!(ok, "{said}\n{empty}");
        let r = report(&[from_log(7, &tests_log())]);
        let full = render(
            &r,
            &Operational {
                agents_connected: 3,
                ingest_lag: {
                    let lag = crate::fleet::lag::IngestLag::default();
                    lag.observe(0, 120);
                    lag.observe(0, 7_200_000);
                    lag.snapshot()
                },
                lost_events: 12,
                stale_hosts: 1,
                store_bytes: 1 << 20,
            },
        );
        let (ok, said) = check(&full);
        assert!(ok, "{said}\n{full}");
        // promtool does find problems: a counter without `_total`.
        let (ok, said) =
            check("# HELP x_count_things a\n# TYPE x_count_things counter\nx_count_things 1\n");
        assert!(!ok, "promtool said nothing: {said}");
    }

    fn tests_log() -> Vec<Recorded> {
        super::tests::log()
    }
}
