//! The `--egress-*` flags, defined once for `patchgap-collector` and
//! `patchgap up` (both flatten them). They override the policy file's
//! learning durations.

use std::time::Duration;

use super::{baseline::Learning, duration::parse_arg};

/// Learning durations given on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct EgressFlags {
    /// Unexpected egress: how long a new workload's baseline only learns
    /// before anything is judged (e.g. 10m, 2s; default 10m). Overrides
    /// the policy file.
    #[arg(long = "egress-warmup", value_name = "DURATION", value_parser = parse_arg)]
    pub warmup: Option<Duration>,
    /// Unexpected egress: a baseline is stable once no new destination
    /// came for this long (default 6h). Overrides the policy file.
    #[arg(long = "egress-stable", value_name = "DURATION", value_parser = parse_arg)]
    pub stable: Option<Duration>,
    /// Unexpected egress: learning that never settles ends here, and the
    /// baseline then raises no anomaly alerts (default 7d). Overrides the
    /// policy file.
    #[arg(long = "egress-max-learning", value_name = "DURATION", value_parser = parse_arg)]
    pub max_learning: Option<Duration>,
    /// Unexpected egress: a destination first reached this soon after a
    /// package change alerts as "new since the upgrade" (default 24h).
    /// Overrides the policy file.
    #[arg(long = "egress-quarantine", value_name = "DURATION", value_parser = parse_arg)]
    pub quarantine: Option<Duration>,
    /// Unexpected egress: an alert not seen again for this long is
    /// resolved, and Alertmanager and webhook receivers are told (default
    /// 15m).
    #[arg(long = "egress-resolve-after", value_name = "DURATION", value_parser = parse_arg)]
    pub resolve_after: Option<Duration>,
}

impl EgressFlags {
    /// `learning` with the flags given put over it.
    pub fn over(&self, mut learning: Learning) -> Learning {
        if let Some(d) = self.warmup {
            learning.warmup = d;
        }
        if let Some(d) = self.stable {
            learning.stable = d;
        }
        if let Some(d) = self.max_learning {
            learning.max_learning = d;
        }
        if let Some(d) = self.quarantine {
            learning.quarantine = d;
        }
        learning
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        egress: EgressFlags,
    }

    #[test]
    fn flags_override_only_what_they_name() {
        let cli = Cli::try_parse_from(["x", "--egress-warmup", "2s", "--egress-quarantine", "24h"])
            .unwrap();
        let l = cli.egress.over(Learning::default());
        assert_eq!(l.warmup, Duration::from_secs(2));
        assert_eq!(l.quarantine, Duration::from_secs(86_400));
        assert_eq!(l.stable, Learning::default().stable);
        assert!(Cli::try_parse_from(["x", "--egress-stable", "300"]).is_err());
        let cli = Cli::try_parse_from(["x", "--egress-resolve-after", "5s"]).unwrap();
        assert_eq!(cli.egress.resolve_after, Some(Duration::from_secs(5)));
        assert_eq!(cli.egress.over(Learning::default()), Learning::default());
    }
}
