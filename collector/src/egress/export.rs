//! A baseline written out as a reviewable allow-list: the policy file's
//! `[[egress]]` section for the workload, one `[[egress.allow]]` per
//! port and protocol, each destination with its provenance (first seen,
//! count, replicas, the executable that made it) as a comment. Pure.

use std::{collections::BTreeMap, fmt::Write};

use super::baseline::{Baseline, Destination};

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn when(ms: i64) -> String {
    crate::advisories::osv::Timestamp {
        unix_seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) as u32) * 1_000_000,
    }
    .to_string()
}

/// The allow-list for `baseline`'s workload, in `mode`.
pub fn allow_list(baseline: &Baseline, mode: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Learned egress of {} (generation {}), exported for review.",
        baseline.key, baseline.generation
    );
    let _ = writeln!(
        out,
        "# Each destination: when it was first seen, how often, from how many replicas, by which executable."
    );
    let _ = writeln!(out, "[[egress]]");
    let _ = writeln!(out, "workload = {}", quote(&baseline.key));
    let _ = writeln!(out, "mode = {}", quote(mode));
    let mut by_port: BTreeMap<(u16, &str), Vec<&super::baseline::Entry>> = BTreeMap::new();
    for e in &baseline.entries {
        by_port
            .entry((e.port, e.protocol.as_str()))
            .or_default()
            .push(e);
    }
    for ((port, protocol), entries) in by_port {
        let _ = writeln!(out, "\n[[egress.allow]]");
        let _ = writeln!(out, "ports = [{port}]  # {protocol}");
        for (label, names) in [("names", true), ("cidrs", false)] {
            let chosen: Vec<_> = entries
                .iter()
                .filter(|e| matches!(e.destination, Destination::Name(_)) == names)
                .collect();
            if chosen.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{label} = [");
            for e in chosen {
                let _ = writeln!(
                    out,
                    "  {},  # first seen {}, {} connects, {} replica(s){}, by {}",
                    quote(&e.destination.to_string()),
                    when(e.first_seen_ms),
                    e.count,
                    e.replicas.len(),
                    if e.promoted { "" } else { ", not promoted yet" },
                    e.exe
                );
            }
            let _ = writeln!(out, "]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::egress::baseline::{Learning, Observation};

    #[test]
    fn export_groups_by_port_with_provenance() {
        let l = Learning {
            warmup: Duration::from_secs(1),
            promote_replicas: 2,
            ..Learning::default()
        };
        let mut b = Baseline::new("k8s:/ml/Deployment/trainer/trainer", "g1", 0);
        for (name, ip, port) in [
            ("data.example.org", "198.51.100.10", 443),
            ("", "192.0.2.7", 443),
            ("metrics.example.org", "198.51.100.20", 9090),
        ] {
            b.observe(
                &Observation {
                    ip: ip.parse().unwrap(),
                    names: if name.is_empty() {
                        vec![]
                    } else {
                        vec![name.into()]
                    },
                    port,
                    protocol: "tcp".into(),
                    replica: "alpha/pod/1".into(),
                    exe: "/venv/bin/python3".into(),
                    lineage: vec![],
                    at_ms: 10,
                },
                &l,
            );
        }
        let text = allow_list(&b, "policy+learn");
        assert!(
            text.contains("workload = \"k8s:/ml/Deployment/trainer/trainer\""),
            "{text}"
        );
        assert!(text.contains("ports = [443]  # tcp\nnames = [\n  \"data.example.org\",  # first seen 1970-01-01T00:00:00.01Z, 1 connects, 1 replica(s), not promoted yet, by /venv/bin/python3\n]\ncidrs = [\n  \"192.0.2.7/32\","), "{text}");
        assert!(text.contains("ports = [9090]"), "{text}");
        // It parses as TOML.
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["egress"][0]["allow"].as_array().unwrap().len(), 2);
    }
}
