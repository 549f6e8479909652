//! Where verification's settings come from: the policy file's `[verify]`
//! table (`every`, `streak`, `evidence`), the collector's `--verify-*`
//! flags, and the built-in defaults. A flag given on the command line (or
//! as a key of the collector's config file) wins over the policy file,
//! which wins over the built-in; each setting on its own, so a file that
//! sets only `streak` keeps the flags' interval. The policy file is read
//! again on every pass, so a reload's `[verify]` applies from the next.
//!
//! Parsing and resolving only: no I/O, no clock.

use std::time::Duration;

use serde::Serialize;

use super::{LEVELS, Settings};

/// The policy file's `[verify]` table, as checked (`None`: not set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyTable {
    /// How often the incidents past containment are checked.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_duration_text"
    )]
    pub every: Option<Duration>,
    /// K: successful runs in a row before containment is lifted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streak: Option<u32>,
    /// The evidence levels that count as still affected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Vec<String>>,
}

impl VerifyTable {
    pub fn is_empty(&self) -> bool {
        self == &VerifyTable::default()
    }
}

fn as_duration_text<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&duration_text(*d)),
        None => s.serialize_none(),
    }
}

/// A duration as the policy file and the flags write it (`1500ms`, `30s`,
/// `5m`).
pub fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// The shortest and longest `every`: checks read the store, so not more
/// often than once a second; a run a day is the least that still shows
/// a silent host the same day.
pub const EVERY_MIN: Duration = Duration::from_secs(1);
pub const EVERY_MAX: Duration = Duration::from_secs(86_400);
/// The largest K (as `--verify-streak`).
pub const STREAK_MAX: u32 = 1000;

/// `every` if it is in range, else why not.
pub fn check_every(d: Duration) -> Result<Duration, String> {
    if d < EVERY_MIN {
        Err(format!(
            "every {}: at least 1s (each run reads the store)",
            duration_text(d)
        ))
    } else if d > EVERY_MAX {
        Err(format!(
            "every {}: at most 24h (a silent host must show the same day)",
            duration_text(d)
        ))
    } else {
        Ok(d)
    }
}

/// K if it is in range, else why not.
pub fn check_streak(k: i64) -> Result<u32, String> {
    match u32::try_from(k) {
        Ok(k) if (1..=STREAK_MAX).contains(&k) => Ok(k),
        _ => Err(format!(
            "streak {k}: successful runs in a row before containment is lifted, 1 to {STREAK_MAX}"
        )),
    }
}

/// Why a list of evidence levels is refused: each must be one of
/// [`LEVELS`], once, and `loaded` must be among them. A process that runs
/// an affected version is never converged, whatever else a policy counts.
pub fn check_levels(levels: &[String]) -> Result<(), String> {
    for (i, l) in levels.iter().enumerate() {
        if !LEVELS.contains(&l.as_str()) {
            return Err(format!(
                "evidence level {l:?} is not one of {}",
                LEVELS.join(", ")
            ));
        }
        if levels[..i].contains(l) {
            return Err(format!("evidence level {l:?} is listed twice"));
        }
    }
    if !levels.iter().any(|l| l == "loaded") {
        return Err(
            "the evidence levels must include \"loaded\": a process that runs an affected version is never converged (add \"installed\" or \"declared\" to count more)"
                .into(),
        );
    }
    Ok(())
}

/// The `--verify-*` flags of `patchgap-collector`; unset, the policy
/// file's `[verify]` or the built-in applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct VerifyFlags {
    /// How often the incidents past containment are verified (their
    /// convergence checks run and the gate decides), such as 30s or 1m.
    /// Wins over the policy file's [verify] every; default 1m.
    #[arg(long = "verify-every", value_name = "DURATION", value_parser = parse_every)]
    pub every: Option<Duration>,
    /// Successful verification runs in a row (K) before an incident's
    /// containment is lifted and it closes. Wins over the policy file's
    /// [verify] streak; default 3.
    #[arg(long = "verify-streak", value_name = "K", value_parser = clap::value_parser!(u32).range(1..=i64::from(STREAK_MAX)))]
    pub streak: Option<u32>,
    /// Evidence levels that count as "still affected" in the package
    /// check (comma-separated: loaded, installed, declared; loaded
    /// always). Stale mappings always count. Wins over the policy file's
    /// [verify] evidence; default loaded.
    #[arg(long = "verify-evidence", value_name = "LEVELS", value_delimiter = ',', value_parser = ["loaded", "installed", "declared"])]
    pub evidence: Option<Vec<String>>,
}

fn parse_every(text: &str) -> Result<Duration, String> {
    crate::egress::duration::parse(text)
        .map_err(|e| e.to_string())
        .and_then(check_every)
}

impl VerifyFlags {
    /// Refuses what clap's parsers cannot see (a level list without
    /// `loaded`, one listed twice).
    pub fn check(&self) -> Result<(), String> {
        match &self.evidence {
            Some(levels) => check_levels(levels).map_err(|e| format!("--verify-evidence: {e}")),
            None => Ok(()),
        }
    }
}

/// Where one setting in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Flag,
    PolicyFile,
    BuiltIn,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Flag => "flag",
            Origin::PolicyFile => "policy file",
            Origin::BuiltIn => "built-in",
        }
    }
}

/// The settings in force and where each came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    pub settings: Settings,
    pub every: Origin,
    pub streak: Origin,
    pub evidence: Origin,
}

impl InForce {
    /// "every 1m (built-in), streak 3 (policy file), evidence loaded,
    /// installed (flag)": what answers show as the policy in force.
    pub fn describe(&self) -> String {
        format!(
            "every {} ({}), streak {} ({}), evidence {} ({})",
            duration_text(self.settings.every),
            self.every.name(),
            self.settings.streak,
            self.streak.name(),
            self.settings.counted.join(", "),
            self.evidence.name()
        )
    }
}

/// The settings in force: each flag given, else the policy file's key,
/// else `base` (the built-in defaults, or what a library caller set;
/// `fresh_after` always from `base`).
pub fn resolve(base: &Settings, file: &VerifyTable, flags: &VerifyFlags) -> InForce {
    fn pick<T: Clone>(flag: &Option<T>, file: &Option<T>, base: &T) -> (T, Origin) {
        match (flag, file) {
            (Some(v), _) => (v.clone(), Origin::Flag),
            (None, Some(v)) => (v.clone(), Origin::PolicyFile),
            (None, None) => (base.clone(), Origin::BuiltIn),
        }
    }
    let (every, every_from) = pick(&flags.every, &file.every, &base.every);
    let (streak, streak_from) = pick(&flags.streak, &file.streak, &base.streak);
    let (counted, evidence_from) = pick(&flags.evidence, &file.evidence, &base.counted);
    InForce {
        settings: Settings {
            every,
            streak,
            counted,
            fresh_after: base.fresh_after,
        },
        every: every_from,
        streak: streak_from,
        evidence: evidence_from,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        verify: VerifyFlags,
    }

    fn flags(args: &[&str]) -> Result<VerifyFlags, String> {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
            .map(|c| c.verify)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_built_in_each_setting_alone() {
        let base = Settings::default();
        let file = VerifyTable {
            every: Some(Duration::from_secs(30)),
            streak: Some(5),
            evidence: None,
        };
        let f = flags(&["--verify-streak", "2"]).unwrap();
        let r = resolve(&base, &file, &f);
        assert_eq!(r.settings.every, Duration::from_secs(30));
        assert_eq!(r.settings.streak, 2);
        assert_eq!(r.settings.counted, vec!["loaded".to_string()]);
        assert_eq!(
            (r.every, r.streak, r.evidence),
            (Origin::PolicyFile, Origin::Flag, Origin::BuiltIn)
        );
        assert_eq!(
            r.describe(),
            "every 30s (policy file), streak 2 (flag), evidence loaded (built-in)"
        );
        // Nothing given: the base, as a library caller set it.
        let r = resolve(&base, &VerifyTable::default(), &VerifyFlags::default());
        assert_eq!(r.settings, base);
        assert_eq!(
            r.describe(),
            "every 1m (built-in), streak 3 (built-in), evidence loaded (built-in)"
        );
    }

    #[test]
    fn flags_are_refused_out_of_range_and_without_loaded() {
        let f = flags(&[
            "--verify-every",
            "500ms",
            "--verify-evidence",
            "loaded,installed",
        ]);
        assert!(f.unwrap_err().contains("at least 1s"));
        assert!(flags(&["--verify-streak", "0"]).is_err());
        assert!(flags(&["--verify-streak", "1001"]).is_err());
        assert!(flags(&["--verify-every", "30"]).is_err(), "a bare number");
        assert!(flags(&["--verify-evidence", "mapped"]).is_err());
        let f = flags(&["--verify-evidence", "installed"]).unwrap();
        assert!(f.check().unwrap_err().contains("must include \"loaded\""));
        let f = flags(&[
            "--verify-evidence",
            "loaded,declared",
            "--verify-every",
            "2s",
        ])
        .unwrap();
        assert_eq!(f.check(), Ok(()));
        assert_eq!(f.every, Some(Duration::from_secs(2)));
    }

    #[test]
    fn levels_and_k_and_every_are_checked() {
        let l = |v: &[&str]| check_levels(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(l(&["loaded"]), Ok(()));
        assert_eq!(l(&["installed", "loaded", "declared"]), Ok(()));
        assert!(l(&[]).unwrap_err().contains("must include"));
        assert!(l(&["loaded", "loaded"]).unwrap_err().contains("twice"));
        assert!(l(&["loaded", "sbom"]).unwrap_err().contains("not one of"));
        assert_eq!(check_streak(3), Ok(3));
        assert!(
            check_streak(0).is_err() && check_streak(-1).is_err() && check_streak(1001).is_err()
        );
        assert!(check_every(Duration::from_millis(999)).is_err());
        assert!(check_every(Duration::from_secs(86_401)).is_err());
        assert_eq!(duration_text(Duration::from_secs(90)), "90s");
        assert_eq!(duration_text(Duration::from_secs(120)), "2m");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
    }
}
