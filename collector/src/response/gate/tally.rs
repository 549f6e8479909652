//! What the deploy gate did at admission, counted per incident action:
//! the admissions it denied, those a shadow-mode action would have
//! denied (the gate's `would_block_connects`), those it only warned about
//! (`admission = "warn"`), and the denials a break-glass ticket overrode.
//! `incident show` reads an action's counts, `/metrics` the totals.
//!
//! Counted in memory since the collector started, like the agents'
//! counters of an isolation since it was attached; dry runs and
//! `patchgap gate check` ask, they are not admissions, and are not
//! counted.

use std::{collections::BTreeMap, fmt::Write as _, sync::Mutex};

use super::Verdict;
use crate::response::{ActionKind, incident::parse_id};

/// One action's admissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Denied (enforce mode, `admission = "deny"`).
    pub denied: u64,
    /// Allowed with a warning, where the action in enforce mode would
    /// have denied (shadow mode).
    pub would_deny: u64,
    /// Allowed with a warning by `admission = "warn"`.
    pub warned: u64,
    /// Denied, then let through by a break-glass ticket.
    pub overridden: u64,
}

/// The counts of every incident action the gate answered for, by
/// incident id and action kind (an incident holds one gate action of a
/// kind in force at a time).
#[derive(Debug, Default)]
pub struct Tally {
    counts: Mutex<BTreeMap<(i64, &'static str), Counts>>,
}

/// The deploy gate's action kind a reason names (None: a tag without a
/// digest, which no action stops).
fn gate_kind(name: &str) -> Option<ActionKind> {
    [
        ActionKind::BlockNewArtifactsWithPackage,
        ActionKind::FreezeDeployments,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
}

/// The outcomes, as `/metrics` labels them.
const OUTCOMES: [&str; 4] = ["denied", "would_deny", "warned", "overridden"];

impl Tally {
    /// Counts one admission's verdict: each (incident, action) it names
    /// once per bucket, however many containers it stopped.
    pub fn record(&self, verdict: &Verdict) {
        let mut seen: BTreeMap<(i64, &'static str), Counts> = BTreeMap::new();
        let buckets = [
            (&verdict.denied, 0usize),
            (&verdict.overridden, 3),
            (&verdict.warnings, 2),
        ];
        for (reasons, bucket) in buckets {
            for r in reasons {
                let (Some(id), Some(kind)) = (parse_id(&r.incident), gate_kind(&r.action)) else {
                    // A tag without a digest: no incident action.
                    continue;
                };
                let c = seen.entry((id, kind.as_str())).or_default();
                let bucket = if bucket == 2 && r.shadow { 1 } else { bucket };
                let slot = match bucket {
                    0 => &mut c.denied,
                    1 => &mut c.would_deny,
                    2 => &mut c.warned,
                    _ => &mut c.overridden,
                };
                *slot = 1;
            }
        }
        if seen.is_empty() {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (key, c) in seen {
            let total = counts.entry(key).or_default();
            total.denied += c.denied;
            total.would_deny += c.would_deny;
            total.warned += c.warned;
            total.overridden += c.overridden;
        }
    }

    /// One incident action's counts.
    pub fn of(&self, incident: i64, kind: ActionKind) -> Counts {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .get(&(incident, kind.as_str()))
            .copied()
            .unwrap_or_default()
    }

    /// The totals by action kind, for `/metrics`.
    pub fn totals(&self) -> BTreeMap<&'static str, Counts> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<&'static str, Counts> = BTreeMap::new();
        for ((_, kind), c) in counts.iter() {
            let t = out.entry(*kind).or_default();
            t.denied += c.denied;
            t.would_deny += c.would_deny;
            t.warned += c.warned;
            t.overridden += c.overridden;
        }
        out
    }

    /// The totals in Prometheus' text exposition format: one counter,
    /// labelled by the action's kind and the outcome (fixed words only),
    /// every series present from the start so a rate has a baseline.
    pub fn render(&self) -> String {
        let totals = self.totals();
        let mut out = String::new();
        let name = "patchgap_gate_admissions_total";
        let _ = writeln!(
            out,
            "# HELP {name} Admissions the deploy gate answered for an incident's action since the collector started, by outcome (would_deny: a shadow-mode action's warning)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for kind in [
            ActionKind::BlockNewArtifactsWithPackage,
            ActionKind::FreezeDeployments,
        ] {
            let c = totals.get(kind.as_str()).copied().unwrap_or_default();
            let values = [c.denied, c.would_deny, c.warned, c.overridden];
            for (outcome, v) in OUTCOMES.iter().zip(values) {
                let _ = writeln!(
                    out,
                    "{name}{{action=\"{}\",outcome=\"{outcome}\"}} {v}",
                    kind.as_str()
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::gate::Reason;

    fn reason(incident: &str, action: &str, shadow: bool) -> Reason {
        Reason {
            incident: incident.into(),
            action: action.into(),
            container: "app".into(),
            image: "x@sha256:...".into(),
            advisory: String::new(),
            package: String::new(),
            chain: Vec::new(),
            via: "sbom".into(),
            message: String::new(),
            shadow,
        }
    }

    /// Each admission counts once per action and outcome, in the bucket
    /// its verdict puts it: a shadow warning is a would-be denial, a
    /// tag-only warning counts for no action.
    #[test]
    fn admissions_are_counted_per_action_and_outcome() {
        let t = Tally::default();
        let block = "block_new_artifacts_with_package";
        // Two containers stopped by one action: one admission.
        t.record(&Verdict {
            denied: vec![reason("INC-3", block, false), reason("INC-3", block, false)],
            ..Verdict::default()
        });
        t.record(&Verdict {
            allowed: true,
            warnings: vec![
                reason("INC-4", "freeze_deployments", true),
                reason("INC-4", block, false),
                reason("", "tag_without_digest", false),
            ],
            ..Verdict::default()
        });
        t.record(&Verdict {
            allowed: true,
            overridden: vec![reason("INC-3", block, false)],
            break_glass: Some("SEC-1".into()),
            ..Verdict::default()
        });
        t.record(&Verdict {
            allowed: true,
            ..Verdict::default()
        });
        assert_eq!(
            t.of(3, ActionKind::BlockNewArtifactsWithPackage),
            Counts {
                denied: 1,
                overridden: 1,
                ..Counts::default()
            }
        );
        assert_eq!(
            t.of(4, ActionKind::FreezeDeployments),
            Counts {
                would_deny: 1,
                ..Counts::default()
            }
        );
        assert_eq!(t.of(4, ActionKind::BlockNewArtifactsWithPackage).warned, 1);
        assert_eq!(t.of(5, ActionKind::FreezeDeployments), Counts::default());
        let text = t.render();
        for line in [
            "patchgap_gate_admissions_total{action=\"block_new_artifacts_with_package\",outcome=\"denied\"} 1",
            "patchgap_gate_admissions_total{action=\"block_new_artifacts_with_package\",outcome=\"warned\"} 1",
            "patchgap_gate_admissions_total{action=\"block_new_artifacts_with_package\",outcome=\"overridden\"} 1",
            "patchgap_gate_admissions_total{action=\"freeze_deployments\",outcome=\"would_deny\"} 1",
            "patchgap_gate_admissions_total{action=\"freeze_deployments\",outcome=\"denied\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        // Prometheus' own linter accepts it, after the report's
        // exposition as `/metrics` serves them.
        let served =
            crate::response::verify::metrics::render(&Default::default(), &Default::default())
                + &text;
        let (ok, said) = crate::response::verify::metrics::promtool::check(&served);
        assert!(ok, "{said}\n{served}");
    }
}
