//! Verify and Recover: an incident closes on runtime evidence, not on a
//! merged PR. Each open incident past containment is checked on an
//! interval (`check`: package, digest, policy, egress, coverage), each run
//! is recorded as a `checked` event with its evidence, and `gate` decides
//! from the log what follows: K successful runs in a row move the
//! incident to `recovering`, its containment is lifted one action at a
//! time (isolation first), each revert seen lifted before the next, and
//! then it is `closed`. A closed incident whose affected version runs
//! again in its scope reopens. `pass` gathers the facts from the store
//! and appends what `gate` decides; `evidence` signs the closure as a
//! DSSE envelope around an in-toto Statement.
//!
//! **Invariant:** checks and the gate are pure functions of the facts
//! the pass read, the incident and the settings (the caller passes
//! `now_ms`): no check reads the store, a file or the clock, so a run
//! recorded in the log says exactly what it saw. `pass` never appends
//! inside a store transaction of its own; the agents lift containment
//! from the set published after its appends committed. Only `evidence`
//! knows DSSE and in-toto.

#[cfg(test)]
mod bypass_tests;
pub mod check;
#[cfg(test)]
mod check_tests;
pub mod evidence;
pub mod gate;
pub mod graph;
pub mod metrics;
pub mod pass;
pub mod report;
pub mod settings;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use check::{CheckResult, Facts, HostFact, ProcessFact, run_checks};

/// A check's answer. The names are an interface (`incident show -o json`,
/// the evidence bundle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The evidence shows convergence.
    Successful,
    /// The evidence shows what is still exposed.
    Failed,
    /// Not enough evidence to tell (a silent host): never a success,
    /// because no data is not healthy.
    Inconclusive,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Successful => "successful",
            Verdict::Failed => "failed",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// The verdict of several checks: any failure fails, else any
    /// inconclusive one makes it inconclusive.
    pub fn all(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        verdicts
            .into_iter()
            .fold(Verdict::Successful, |acc, v| match (acc, v) {
                (Verdict::Failed, _) | (_, Verdict::Failed) => Verdict::Failed,
                (Verdict::Inconclusive, _) | (_, Verdict::Inconclusive) => Verdict::Inconclusive,
                _ => Verdict::Successful,
            })
    }
}

/// One verification run: every check's result and the verdict of all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub verdict: Verdict,
    pub checks: Vec<CheckResult>,
}

impl Run {
    /// What keeps the incident open, one line each, as `incident show`
    /// prints it ("" lines never).
    pub fn blockers(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c.verdict != Verdict::Successful)
            .flat_map(|c| {
                c.blockers
                    .iter()
                    .map(move |b| format!("{} ({}): {b}", c.check, c.verdict.name()))
            })
            .collect()
    }
}

/// Where an incident's verification stands: the last run and the
/// successful streak it ends (0 after a failed or inconclusive one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub last: Run,
    pub at_ms: i64,
    pub streak: u32,
    /// When the current successful streak started (0: none).
    pub streak_since_ms: i64,
}

/// The evidence levels a package check counts as "still running it".
/// The names are the policy's (`response::Evidence`): `loaded` (runs,
/// maps, opened or embeds), `installed`, `declared`.
pub const LEVELS: [&str; 3] = ["loaded", "installed", "declared"];

/// How verification runs: how often, how many successful runs in a row
/// close an incident, and which evidence levels count. Resolved by
/// [`settings::resolve`] from the collector's `--verify-*` flags, the
/// policy file's `[verify]` table and the built-in defaults (this type's
/// `Default`), in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub every: Duration,
    /// K: successful runs in a row before containment is lifted.
    pub streak: u32,
    /// Evidence levels (of [`LEVELS`]) that count as still affected.
    pub counted: Vec<String>,
    /// A host is fresh when it reported within this long.
    pub fresh_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            every: Duration::from_secs(60),
            streak: 3,
            counted: vec!["loaded".into()],
            fresh_after: Duration::from_secs(90),
        }
    }
}

impl Settings {
    /// Whether a match with the exposure's evidence name (`exe`,
    /// `mapped`, `opened`, `embedded`, `installed`, `declared`) counts.
    pub fn counts(&self, evidence: &str) -> bool {
        let level = match evidence {
            "exe" | "mapped" | "opened" | "embedded" => "loaded",
            "installed" => "installed",
            "declared" => "declared",
            // An evidence name this build does not know: count it, so
            // the gate never closes on a fact it cannot read.
            _ => return true,
        };
        self.counted.iter().any(|c| c == level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_of_all_is_the_worst() {
        use Verdict::*;
        assert_eq!(Verdict::all([]), Successful);
        assert_eq!(Verdict::all([Successful, Successful]), Successful);
        assert_eq!(Verdict::all([Successful, Inconclusive]), Inconclusive);
        assert_eq!(Verdict::all([Inconclusive, Failed, Successful]), Failed);
        assert_eq!(Verdict::all([Failed, Inconclusive]), Failed);
    }

    #[test]
    fn loaded_counts_by_default_and_unknown_evidence_always() {
        let s = Settings::default();
        for e in ["exe", "mapped", "opened", "embedded", "new-kind"] {
            assert!(s.counts(e), "{e}");
        }
        assert!(!s.counts("installed") && !s.counts("declared"));
        let all = Settings {
            counted: LEVELS.iter().map(|s| s.to_string()).collect(),
            ..Settings::default()
        };
        assert!(all.counts("installed") && all.counts("declared"));
    }
}
