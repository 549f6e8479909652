//! Judging one connection: the workload's policy first, then its
//! baseline, and the alert that carries the story when the answer is
//! "unexpected". Pure: the caller (`egress::stage`) brings the facts
//! from the store and keeps what this returns.

use std::collections::BTreeMap;

use super::{
    alert::{self, Alert, BaselineRef, LineageStep, Privilege, Reason, Scope, WorkloadRef},
    baseline::{Baseline, Destination, Learning, Observation, Seen, Verdict},
    policy::{EgressPolicy, Mode},
};

/// What the collector knows about the connecting process and its
/// workload, beside the connection itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub host: String,
    pub workload: WorkloadRef,
    pub scope: Scope,
    pub privilege: Privilege,
    /// The connecting process first, up to the workload's root.
    pub lineage: Vec<LineageStep>,
    /// The process's packages by name (ecosystem/name): version and the
    /// strongest evidence.
    pub packages: BTreeMap<String, Seen>,
    /// The same packages as purls, for the alert.
    pub purls: Vec<String>,
}

/// The outcome for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Allowed by the workload's policy.
    pub allowed: bool,
    /// Set when the connection alerts; the caller stores it under its
    /// dedup key (one alert per workload, destination and port).
    pub alert: Option<Alert>,
    /// The baseline changed in a way worth persisting.
    pub baseline_changed: bool,
}

/// The key of the one alert a (workload, destination, port, protocol)
/// may have: the destination by name when the process was told one.
pub fn dedup_key(workload: &str, obs: &Observation) -> String {
    format!(
        "{workload}|{}|{}|{}",
        Destination::of(obs.ip, &obs.names),
        obs.port,
        obs.protocol
    )
}

/// Judges `obs` for the workload of `facts` and learns from it.
pub fn judge(
    baseline: &mut Baseline,
    policy: &EgressPolicy,
    learning: &Learning,
    facts: &Facts,
    obs: &Observation,
) -> Judgement {
    let exe = facts.lineage.first().map(|s| s.exe.as_str()).unwrap_or("");
    let mut changed = baseline.track_packages(
        exe,
        &facts.workload.image_digest,
        &facts.packages,
        obs.at_ms,
    );
    let allowed = policy.allows(obs.ip, &obs.names, obs.port);
    // The baseline learns from every connection, allowed or not, so it
    // shows what the workload does even where policy decides.
    let (verdict, learned) = baseline.observe(obs, learning);
    changed |= learned;
    let reason = match (policy.mode, allowed, &verdict) {
        (_, true, _) => None,
        (Mode::Enforce, false, _) => Some(Reason::Policy),
        (_, false, Verdict::New) => Some(Reason::NewDestination),
        (_, false, Verdict::NewSinceUpgrade { .. }) => Some(Reason::NewSinceUpgrade),
        (_, false, Verdict::Known | Verdict::Learned | Verdict::Unjudged) => None,
    };
    let alert = reason.map(|reason| Alert {
        id: 0,
        dedup_key: dedup_key(&facts.workload.key, obs),
        reason,
        mode: policy.mode.as_str().into(),
        host: facts.host.clone(),
        workload: facts.workload.clone(),
        scope: facts.scope.clone(),
        privilege: facts.privilege.clone(),
        destination: alert::Destination {
            ip: obs.ip.to_string(),
            port: obs.port,
            protocol: obs.protocol.clone(),
            names: obs.names.clone(),
            names_source: if obs.names.is_empty() { "none" } else { "dns" }.into(),
        },
        lineage: facts
            .lineage
            .iter()
            .take(alert::MAX_LINEAGE)
            .cloned()
            .collect(),
        packages: facts
            .purls
            .iter()
            .take(alert::MAX_PACKAGES)
            .cloned()
            .collect(),
        packages_changed: match &verdict {
            Verdict::NewSinceUpgrade { changes } => changes.clone(),
            _ if baseline.quarantined(learning, obs.at_ms) => baseline.changes.clone(),
            _ => Vec::new(),
        },
        baseline: BaselineRef {
            state: baseline.state(learning, obs.at_ms).as_str().into(),
            generation: baseline.generation.clone(),
        },
        first_seen_ms: obs.at_ms,
        last_seen_ms: obs.at_ms,
        count: 1,
        replicas: vec![obs.replica.clone()],
        delivery: match policy.mode {
            Mode::Audit => alert::NOT_SENT_AUDIT.into(),
            _ => "sent".into(),
        },
    });
    Judgement {
        verdict,
        allowed,
        alert,
        baseline_changed: changed,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn learning() -> Learning {
        Learning {
            warmup: Duration::from_secs(1),
            stable: Duration::from_secs(2),
            max_learning: Duration::from_secs(60),
            quarantine: Duration::from_secs(60),
            promote_replicas: 2,
            promote_after: Duration::from_secs(3600),
        }
    }

    fn facts(version: &str) -> Facts {
        Facts {
            host: "alpha".into(),
            workload: WorkloadRef {
                key: "pod:ml/Deployment/trainer/trainer".into(),
                kind: "pod".into(),
                ..WorkloadRef::default()
            },
            scope: Scope {
                classification: "sensitive".into(),
                writes_to: vec![],
            },
            lineage: vec![LineageStep {
                pid: 42,
                start_time_ms: 0,
                exe: "/venv/bin/python3".into(),
                argv: "python3 train.py".into(),
            }],
            packages: [(
                "pypi/trainlib".to_string(),
                Seen {
                    version: version.into(),
                    evidence: "installed".into(),
                },
            )]
            .into(),
            ..Facts::default()
        }
    }

    fn obs(name: &str, ip: &str, replica: &str, at_ms: i64) -> Observation {
        Observation {
            ip: ip.parse().unwrap(),
            names: if name.is_empty() {
                vec![]
            } else {
                vec![name.into()]
            },
            port: 443,
            protocol: "tcp".into(),
            replica: replica.into(),
            exe: "/venv/bin/python3".into(),
            lineage: vec![],
            at_ms,
        }
    }

    /// The 7:10 a.m. story without I/O: two replicas learn, the baseline
    /// settles, an upgrade and a new name alert as new since the upgrade
    /// with from → to, once per key whichever replica connects.
    #[test]
    fn upgrade_then_new_name_alerts_with_the_diff() {
        let l = learning();
        let p = EgressPolicy::default();
        let mut b = Baseline::new("pod:ml/Deployment/trainer/trainer", "", 0);
        let f1 = facts("1.0.0");
        for (i, r) in ["a", "b"].iter().enumerate() {
            let j = judge(
                &mut b,
                &p,
                &l,
                &f1,
                &obs("data.example.org", "198.51.100.10", r, 100 + i as i64),
            );
            assert!(j.alert.is_none() && j.baseline_changed);
        }
        assert!(b.entries[0].promoted);
        // Learned destination after stabilising: nothing.
        let j = judge(
            &mut b,
            &p,
            &l,
            &f1,
            &obs("data.example.org", "198.51.100.10", "a", 4000),
        );
        assert_eq!((j.verdict, j.alert), (Verdict::Known, None));
        // The upgrade.
        let f2 = facts("2.0.0");
        let j = judge(
            &mut b,
            &p,
            &l,
            &f2,
            &obs("telemetry.example.net", "203.0.113.66", "a", 5000),
        );
        let alert = j.alert.expect("an alert");
        assert_eq!(alert.reason, Reason::NewSinceUpgrade);
        assert_eq!(
            alert.destination.names,
            vec!["telemetry.example.net".to_string()]
        );
        assert_eq!(alert.packages_changed.len(), 1);
        assert_eq!(
            (
                alert.packages_changed[0].from.as_str(),
                alert.packages_changed[0].to.as_str()
            ),
            ("1.0.0", "2.0.0")
        );
        assert_eq!(alert.scope.classification, "sensitive");
        assert_eq!(alert.baseline.state, "stable");
        // The other replica (still on 1.0.0) makes the same connection:
        // the same key, so the store folds it into the one alert.
        let j2 = judge(
            &mut b,
            &p,
            &l,
            &f1,
            &obs("telemetry.example.net", "203.0.113.66", "b", 5100),
        );
        assert_eq!(j2.alert.unwrap().dedup_key, alert.dedup_key);
    }

    /// Policy: allowed never alerts; enforce alerts on anything else even
    /// while learning; audit alerts like policy+learn (the mode says not
    /// to send).
    #[test]
    fn policy_modes() {
        let l = learning();
        let f = facts("1.0.0");
        let mut enforce = EgressPolicy {
            mode: Mode::Enforce,
            allow: vec![crate::egress::policy::Allow {
                names: vec!["*.example.org".into()],
                ..Default::default()
            }],
            endpoint: None,
        };
        let mut b = Baseline::new("k", "", 0);
        assert!(
            judge(
                &mut b,
                &enforce,
                &l,
                &f,
                &obs("data.example.org", "198.51.100.10", "a", 10)
            )
            .alert
            .is_none()
        );
        let j = judge(&mut b, &enforce, &l, &f, &obs("", "10.1.2.3", "a", 20));
        assert_eq!(j.alert.unwrap().reason, Reason::Policy);
        enforce.mode = Mode::Audit;
        let mut b = Baseline::new("k", "", 0);
        judge(
            &mut b,
            &enforce,
            &l,
            &f,
            &obs("data.example.org", "198.51.100.10", "a", 10),
        );
        // A destination with no name alerts with the address alone.
        let j = judge(&mut b, &enforce, &l, &f, &obs("", "192.0.2.99", "a", 5000));
        let a = j.alert.unwrap();
        assert_eq!(
            (a.reason, a.mode.as_str()),
            (Reason::NewDestination, "audit")
        );
        assert_eq!(a.destination.names_source, "none");
        assert_eq!(
            a.dedup_key,
            "pod:ml/Deployment/trainer/trainer|192.0.2.99/32|443|tcp"
        );
    }
}
