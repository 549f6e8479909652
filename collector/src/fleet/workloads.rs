//! Fleet-level workloads: instances on hosts that share a key become one
//! workload (a Deployment's pods on several hosts, a systemd unit on every
//! host), with the operator's scope mapping applied and the filters that
//! `patchgap workloads` and `patchgap query` take.

use std::collections::{BTreeMap, BTreeSet};

use patchgap_proto::v1;

use crate::{
    fleet::scope::{self, Rule, Subject},
    store::WorkloadRow,
};

/// The fleet-level key of a workload instance; see WorkloadSummary.key.
pub fn key(row: &WorkloadRow) -> String {
    let w = &row.workload;
    match w.kind.as_str() {
        "pod" => {
            let cluster = row
                .host_labels
                .get("cluster")
                .map(String::as_str)
                .unwrap_or("");
            let (kind, name) = owner_or_pod(w);
            let container = if w.container_name.is_empty() {
                short(&w.container_id)
            } else {
                &w.container_name
            };
            format!("k8s:{cluster}/{}/{kind}/{name}/{container}", w.namespace)
        }
        "container" => format!("container:{}/{}", row.host, container_name(w)),
        "systemd" => format!("unit:{}", w.unit),
        "user-session" => format!("session:{}/{}", row.host, w.unit),
        _ => format!("host:{}", row.host),
    }
}

/// Whether instances on other hosts (by name) can share this instance's
/// [`key`]: a pod's key names its cluster and owner, a systemd unit's
/// only the unit. Every other key names the instance's host, so its
/// summary comes whole from the workloads of the hosts of that name.
pub fn key_spans_hosts(w: &v1::Workload) -> bool {
    matches!(w.kind.as_str(), "pod" | "systemd")
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn container_name(w: &v1::Workload) -> &str {
    if w.container_name.is_empty() {
        short(&w.container_id)
    } else {
        &w.container_name
    }
}

/// The pod's owner, or the pod itself when it has none we know of.
fn owner_or_pod(w: &v1::Workload) -> (&str, &str) {
    match &w.owner {
        Some(o) if !o.name.is_empty() => (o.kind.as_str(), o.name.as_str()),
        _ if !w.pod.is_empty() => ("Pod", w.pod.as_str()),
        _ => ("Pod", w.pod_uid.as_str()),
    }
}

/// The scope in force: the first matching mapping rule, else the
/// workload's own labels.
pub fn scope_of(row: &WorkloadRow, rules: &[Rule]) -> v1::DataScope {
    let w = &row.workload;
    let labels = scope::labels(
        &w.labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let (owner_kind, owner_name) = match &w.owner {
        Some(o) => (o.kind.as_str(), o.name.as_str()),
        None => ("", ""),
    };
    let subject = Subject {
        cluster: row
            .host_labels
            .get("cluster")
            .map(String::as_str)
            .unwrap_or(""),
        namespace: &w.namespace,
        owner_kind,
        owner_name,
        labels: Some(&labels),
        unit: &w.unit,
        kind: &w.kind,
        container: container_name(w),
    };
    match scope::lookup(rules, &subject) {
        Some(rule) => v1::DataScope {
            classification: rule.classification.clone(),
            writes_to: rule.writes_to.clone(),
            source: format!("mapping:{}", rule.line),
        },
        None => w.scope.clone().unwrap_or_default(),
    }
}

/// The order of the non-capability tokens of a privilege summary.
const PRIVILEGE_ORDER: [&str; 6] = [
    "root",
    "ruid-root",
    "privileged",
    "hostpid",
    "hostnet",
    "hostmnt",
];

/// One workload being summed up: the summary, and its hosts, pods and
/// privilege tokens.
type Group = (
    v1::WorkloadSummary,
    BTreeSet<String>,
    BTreeSet<String>,
    BTreeSet<String>,
);

/// Groups instances by key into summaries, sorted by key.
pub fn summarize<'a>(
    rows: impl IntoIterator<Item = &'a WorkloadRow>,
    rules: &[Rule],
) -> Vec<v1::WorkloadSummary> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for row in rows {
        let w = &row.workload;
        let k = key(row);
        let entry = groups.entry(k.clone()).or_insert_with(|| {
            let (name, owner) = match w.kind.as_str() {
                "pod" => (owner_or_pod(w).1.to_string(), w.owner.clone()),
                "container" => (container_name(w).to_string(), None),
                "systemd" | "user-session" => (w.unit.clone(), None),
                _ => (row.host.clone(), None),
            };
            let summary = v1::WorkloadSummary {
                key: k,
                kind: w.kind.clone(),
                cluster: row.host_labels.get("cluster").cloned().unwrap_or_default(),
                namespace: w.namespace.clone(),
                name,
                owner,
                container: if w.kind == "pod" || w.kind == "container" {
                    container_name(w).to_string()
                } else {
                    String::new()
                },
                runtime: w.runtime.clone(),
                unit: w.unit.clone(),
                scope: Some(scope_of(row, rules)),
                ..Default::default()
            };
            (summary, BTreeSet::new(), BTreeSet::new(), BTreeSet::new())
        });
        let (s, hosts, pods, privs) = entry;
        hosts.insert(row.host.clone());
        if !w.pod.is_empty() {
            pods.insert(w.pod.clone());
        }
        s.processes += row.processes;
        s.metadata_warnings += w.metadata_warnings;
        if s.image.is_empty() {
            s.image = w.image.clone();
        }
        if s.image_digest.is_empty() {
            s.image_digest = w.image_digest.clone();
        }
        if s.provenance.is_none() {
            s.provenance = w.provenance.clone();
        }
        for p in &row.privileges {
            s.privileged |= p.privileged;
            for token in p.summary.split(',').filter(|t| !t.is_empty() && *t != "-") {
                privs.insert(token.to_string());
            }
        }
    }
    groups
        .into_values()
        .map(|(mut s, hosts, pods, privs)| {
            s.hosts = hosts.into_iter().collect();
            s.pods = pods.into_iter().collect();
            // Who first (root, privileged, host namespaces), then capabilities.
            let (who, caps): (Vec<String>, Vec<String>) =
                privs.into_iter().partition(|t| !t.starts_with("CAP_"));
            let who = PRIVILEGE_ORDER
                .iter()
                .filter(|w| who.iter().any(|t| t == *w))
                .map(|w| w.to_string());
            let tokens: Vec<String> = who.chain(caps).collect();
            s.privilege = if tokens.is_empty() {
                "-".into()
            } else {
                tokens.join(",")
            };
            s
        })
        .collect()
}

/// Whether a workload passes the filter; empty fields do not filter.
pub fn passes(s: &v1::WorkloadSummary, f: &v1::WorkloadFilter) -> bool {
    (f.namespace.is_empty() || s.namespace == f.namespace)
        && (f.cluster.is_empty() || s.cluster == f.cluster)
        && (f.scope.is_empty()
            || s.scope
                .as_ref()
                .is_some_and(|sc| sc.classification == f.scope))
        && (!f.privileged || s.privileged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, w: v1::Workload, privileged: bool) -> WorkloadRow {
        WorkloadRow {
            host: host.into(),
            host_id: format!("id-{host}"),
            host_labels: [("cluster".to_string(), "prod".to_string())]
                .into_iter()
                .collect(),
            workload: w,
            processes: 2,
            privileges: vec![v1::Privilege {
                privileged,
                summary: if privileged {
                    "root,CAP_SYS_ADMIN".into()
                } else {
                    "-".into()
                },
                ..Default::default()
            }],
        }
    }

    /// What `key_spans_hosts` promises: an instance whose key does not
    /// span hosts gets the same summary from the rows of the hosts of its
    /// name as from the fleet's; one whose key does, does not.
    #[test]
    fn host_keyed_summaries_come_whole_from_their_hosts() {
        let kinds = |n: &str| {
            vec![
                v1::Workload {
                    id: "host".into(),
                    kind: "host".into(),
                    ..Default::default()
                },
                v1::Workload {
                    id: "other".into(),
                    kind: "".into(),
                    ..Default::default()
                },
                v1::Workload {
                    id: format!("container/{n}"),
                    kind: "container".into(),
                    container_id: format!("{n}0123456789abcdef"),
                    container_name: "web".into(),
                    ..Default::default()
                },
                v1::Workload {
                    id: "session/session-1.scope".into(),
                    kind: "user-session".into(),
                    unit: "session-1.scope".into(),
                    ..Default::default()
                },
                v1::Workload {
                    id: "unit/ssh.service".into(),
                    kind: "systemd".into(),
                    unit: "ssh.service".into(),
                    ..Default::default()
                },
                pod(&format!("trainer-{n}")),
            ]
        };
        let mut fleet = Vec::new();
        // Two machines named a (a machine id each), and b.
        for (host, id) in [("a", "m1"), ("a", "m2"), ("b", "m3")] {
            for (i, w) in kinds(id).into_iter().enumerate() {
                let mut r = row(host, w, i % 2 == 0);
                r.host_id = id.into();
                fleet.push(r);
            }
        }
        let whole = summarize(&fleet, &[]);
        let by_key = |s: &[v1::WorkloadSummary], k: &str| s.iter().find(|s| s.key == k).cloned();
        let (mut checked, mut spanning) = (0, 0);
        for r in &fleet {
            let on_host: Vec<WorkloadRow> =
                fleet.iter().filter(|o| o.host == r.host).cloned().collect();
            let partial = summarize(&on_host, &[]);
            let k = key(r);
            if key_spans_hosts(&r.workload) {
                spanning += 1;
                assert_ne!(by_key(&partial, &k), by_key(&whole, &k), "{k}");
            } else {
                checked += 1;
                assert_eq!(by_key(&partial, &k), by_key(&whole, &k), "{k}");
            }
        }
        assert_eq!((checked, spanning), (12, 6));
    }

    fn pod(name: &str) -> v1::Workload {
        v1::Workload {
            id: format!("pod/{name}"),
            kind: "pod".into(),
            namespace: "ml".into(),
            pod: name.into(),
            container_name: "trainer".into(),
            owner: Some(v1::Owner {
                kind: "Deployment".into(),
                name: "trainer".into(),
                source: "label".into(),
            }),
            image: "registry/trainer:1".into(),
            labels: [(
                "patchgap.io/data-classification".to_string(),
                "internal".to_string(),
            )]
            .into_iter()
            .collect(),
            scope: Some(v1::DataScope {
                classification: "internal".into(),
                writes_to: vec![],
                source: "label".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_deployments_pods_on_two_hosts_are_one_workload() {
        let rows = [
            row("a", pod("trainer-7d9f8b6c5d-x2x4z"), false),
            row("b", pod("trainer-7d9f8b6c5d-q9w8r"), true),
        ];
        let s = summarize(&rows, &[]);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].key, "k8s:prod/ml/Deployment/trainer/trainer");
        assert_eq!(s[0].hosts, ["a", "b"]);
        assert_eq!(s[0].pods.len(), 2);
        assert_eq!(s[0].processes, 4);
        assert!(s[0].privileged);
        assert_eq!(s[0].privilege, "root,CAP_SYS_ADMIN");
        assert_eq!(s[0].scope.as_ref().unwrap().classification, "internal");
        let f = v1::WorkloadFilter {
            namespace: "ml".into(),
            scope: "internal".into(),
            privileged: true,
            ..Default::default()
        };
        assert!(passes(&s[0], &f));
        assert!(!passes(
            &s[0],
            &v1::WorkloadFilter {
                cluster: "dev".into(),
                ..Default::default()
            }
        ));
    }

    #[test]
    fn the_mapping_overrides_labels() {
        let rules = scope::parse(
            b"namespace=ml owner=Deployment/trainer => sensitive writes_to=s3://datasets\n",
        )
        .unwrap();
        let s = summarize(&[row("a", pod("trainer-7d9f8b6c5d-x2x4z"), false)], &rules);
        let scope = s[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.classification.as_str(), scope.source.as_str()),
            ("sensitive", "mapping:1")
        );
        assert_eq!(scope.writes_to, ["s3://datasets"]);
    }

    #[test]
    fn keys_by_kind() {
        let unit = v1::Workload {
            id: "unit/nginx.service".into(),
            kind: "systemd".into(),
            unit: "nginx.service".into(),
            ..Default::default()
        };
        assert_eq!(key(&row("a", unit, false)), "unit:nginx.service");
        let c = v1::Workload {
            id: "container/x".into(),
            kind: "container".into(),
            container_id: "0123456789abcdef".into(),
            ..Default::default()
        };
        assert_eq!(key(&row("a", c, false)), "container:a/0123456789ab");
        let h = v1::Workload {
            id: "host".into(),
            kind: "host".into(),
            ..Default::default()
        };
        assert_eq!(key(&row("a", h, false)), "host:a");
    }
}
