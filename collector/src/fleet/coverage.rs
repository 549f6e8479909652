//! Coverage: which hosts an answer covers, which are fresh or stale, where
//! eBPF is on and how many events were lost. Every answer carries it, so
//! "not found" is never confused with "not observed".

use std::{collections::HashMap, time::Duration};

use patchgap_proto::v1;

use crate::store::HostRow;

/// The hosts as responders see them and the coverage they give, at `now`.
/// A host is fresh when it reported within `fresh_after`, has sent a full
/// scan and its agent still scans (its last heartbeat's health says so);
/// `connected` holds the keys (machine-id, else hostname) of hosts with a
/// stream open, each with its certificate's expiry (ms, 0 without TLS). A
/// host whose agent no longer scans is never shown as connected: its
/// stream may be open, but nothing on it is current.
pub fn summarize(
    rows: Vec<HostRow>,
    connected: &HashMap<String, i64>,
    fresh_after: Duration,
    now_ms: i64,
) -> (v1::Coverage, Vec<v1::HostSummary>) {
    let mut coverage = v1::Coverage {
        generated_at_ms: now_ms,
        ..Default::default()
    };
    let hosts = rows
        .into_iter()
        .map(|h| {
            // Agents that report no health (older ones) are taken at their word.
            let scanning = h.health.as_ref().is_none_or(|x| x.scanning);
            let fresh = now_ms - h.last_seen_ms <= fresh_after.as_millis() as i64
                && h.last_full_scan_ms > 0
                && scanning;
            coverage.hosts_total += 1;
            if fresh {
                coverage.hosts_fresh += 1;
                let scanned = h.last_scan.scanned_at_ms.max(h.last_full_scan_ms);
                if coverage.oldest_scan_ms == 0 || scanned < coverage.oldest_scan_ms {
                    coverage.oldest_scan_ms = scanned;
                }
            } else {
                coverage.hosts_stale += 1;
            }
            if !h.capabilities.ebpf {
                coverage.hosts_scan_only += 1;
            }
            coverage.hosts.push(v1::HostCoverage {
                host: h.identity.hostname.clone(),
                fresh,
                ebpf: h.capabilities.ebpf,
                ebpf_reason: h.capabilities.ebpf_reason.clone(),
                events_lost: h.sense.lost_kernel + h.sense.lost_user + h.sense.dropped,
                scanning,
                scan_restarts: h.health.as_ref().map_or(0, |x| x.scan_restarts),
                spool_dropped: h.health.as_ref().map_or(0, |x| x.spool_dropped),
                shedding: h
                    .health
                    .as_ref()
                    .map(|x| x.shedding.clone())
                    .unwrap_or_default(),
            });
            v1::HostSummary {
                connected: scanning && connected.contains_key(host_key(&h.identity)),
                cert_not_after_ms: connected.get(host_key(&h.identity)).copied().unwrap_or(0),
                identity: Some(h.identity),
                agent_version: h.agent_version,
                capabilities: Some(h.capabilities),
                last_seen_ms: h.last_seen_ms,
                last_full_scan_ms: h.last_full_scan_ms,
                fresh,
                processes_running: h.processes_running,
                last_scan: Some(h.last_scan),
                health: h.health,
                // The API layer knows the streams that fought over it.
                conflict: String::new(),
            }
        })
        .collect();
    (coverage, hosts)
}

/// The key a host is known by, as the store keys it: the machine-id, else
/// the hostname.
pub fn host_key(id: &v1::HostIdentity) -> &str {
    if id.host_id.is_empty() {
        &id.hostname
    } else {
        &id.host_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, last_seen_ms: i64, full_scan_ms: i64, ebpf: bool) -> HostRow {
        HostRow {
            identity: v1::HostIdentity {
                hostname: name.into(),
                host_id: format!("id-{name}"),
                ..Default::default()
            },
            agent_version: "0".into(),
            capabilities: v1::Capabilities {
                ebpf,
                ..Default::default()
            },
            last_seen_ms,
            last_full_scan_ms: full_scan_ms,
            processes_running: 1,
            last_scan: Default::default(),
            sense: v1::SenseStats {
                lost_kernel: 2,
                lost_user: 3,
                ..Default::default()
            },
            health: None,
        }
    }

    #[test]
    fn fresh_needs_a_recent_report_and_a_full_scan() {
        let now = 1_000_000;
        let connected: HashMap<String, i64> = [("id-a".to_string(), 0)].into();
        let (c, hosts) = summarize(
            vec![
                row("a", now - 1_000, now - 5_000, true),
                row("b", now - 100_000, now - 100_000, false),
                row("c", now, 0, true),
            ],
            &connected,
            Duration::from_secs(90),
            now,
        );
        assert_eq!((c.hosts_total, c.hosts_fresh, c.hosts_stale), (3, 1, 2));
        assert_eq!(c.hosts_scan_only, 1);
        assert_eq!(c.oldest_scan_ms, now - 5_000);
        assert_eq!(c.hosts[0].events_lost, 5);
        assert!(hosts[0].connected && !hosts[1].connected);
        assert_eq!(
            hosts.iter().map(|h| h.fresh).collect::<Vec<_>>(),
            [true, false, false]
        );
    }

    #[test]
    fn a_host_whose_agent_does_not_scan_is_neither_connected_nor_fresh() {
        let now = 1_000_000;
        let connected: HashMap<String, i64> =
            [("id-a".to_string(), 0), ("id-b".to_string(), 0)].into();
        let mut stalled = row("a", now - 1_000, now - 5_000, true);
        stalled.health = Some(v1::AgentHealth {
            scanning: false,
            scan_restarts: 3,
            spool_dropped: 7,
            shedding: "opens".into(),
            ..Default::default()
        });
        let mut healthy = row("b", now - 1_000, now - 5_000, true);
        healthy.health = Some(v1::AgentHealth {
            scanning: true,
            ..Default::default()
        });
        let (c, hosts) = summarize(
            vec![stalled, healthy],
            &connected,
            Duration::from_secs(90),
            now,
        );
        assert!(!hosts[0].connected && !hosts[0].fresh);
        assert!(hosts[1].connected && hosts[1].fresh);
        assert_eq!((c.hosts_fresh, c.hosts_stale), (1, 1));
        let a = &c.hosts[0];
        assert!(!a.scanning);
        assert_eq!(
            (a.scan_restarts, a.spool_dropped, a.shedding.as_str()),
            (3, 7, "opens")
        );
        assert_eq!(hosts[0].health.as_ref().unwrap().scan_restarts, 3);
    }
}
