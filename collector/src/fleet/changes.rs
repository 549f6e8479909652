//! "What changed on this workload since T": the packages its processes
//! hold now that they did not hold before T, each as from → to, when,
//! with which evidence, on which hosts and replicas; and the packages
//! gone since. One query for `patchgap changes`, the egress alerts'
//! `packages_changed` and incidents opened from them.
//!
//! The store answers when each workload instance held each package
//! (`Store::workload_package_spans`, over the processes' history, exited
//! ones included); [`fold`] decides, pure, what is a change:
//! - a version first held at or after T is new; its `from` is the
//!   version of the same package first held before it (the latest such),
//!   or empty when the package is new to the workload (what the
//!   workload held when it was first seen is not a change: a young
//!   workload's packages are not all "added");
//! - a package no instance holds any more, while the workload still runs
//!   something, is removed (`to` empty) at its last end, if that end is
//!   at or after T.
//!
//! Replicas share the workload (its fleet key, `workloads::key`), and a
//! rollout's old instances count: they are found among the instances seen
//! since [`LOOKBACK_MS`] before T. Bounded: [`MAX_INSTANCES`] instances,
//! [`MAX_SPANS`] packages each.

use std::collections::{BTreeMap, BTreeSet};

use super::workloads;
use crate::store::{PackageSpan, Result, Store, WorkloadRow};

/// How far before T a version is looked for as a change's `from`.
pub const LOOKBACK_MS: i64 = 7 * 86_400_000;

/// Workload instances one query folds at most (replicas, and the
/// instances a rollout replaced).
pub const MAX_INSTANCES: usize = 256;

/// Instances looked at to find a workload's (the newest first).
pub const MAX_SCANNED_INSTANCES: usize = 100_000;

/// Packages per instance at most.
pub const MAX_SPANS: usize = 20_000;

/// One package change on a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `ecosystem/name`, as the egress baseline names packages.
    pub name: String,
    /// Empty when the package is new to the workload.
    pub from: String,
    /// Empty when it was removed.
    pub to: String,
    /// When the new version was first held (or the old one last held,
    /// for a removal), ms since the epoch.
    pub at_ms: i64,
    /// The strongest evidence of the new version (the old one's for a
    /// removal): "mapped", "opened", "installed", …
    pub evidence: String,
    /// The new version's purl (the old one's for a removal).
    pub purl: String,
    /// Hosts and replicas (host/instance) where it was seen.
    pub hosts: Vec<String>,
    pub replicas: Vec<String>,
}

impl From<&Change> for crate::egress::baseline::PackageChange {
    fn from(c: &Change) -> Self {
        crate::egress::baseline::PackageChange {
            name: c.name.clone(),
            from: c.from.clone(),
            to: c.to.clone(),
            at_ms: c.at_ms,
            evidence: c.evidence.clone(),
        }
    }
}

/// One workload instance's spans.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpans {
    pub host: String,
    /// `host/instance id`, as egress alerts name replicas.
    pub replica: String,
    pub spans: Vec<PackageSpan>,
}

/// The answer for one workload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    pub key: String,
    /// Sorted by time, then name.
    pub changes: Vec<Change>,
    /// Instances folded (replicas and replaced ones).
    pub instances: usize,
    /// Some bound was reached: the answer may miss changes.
    pub truncated: bool,
    /// Retention dropped the history before this time (ms), and the
    /// answer's window starts earlier, so changes before it are missing;
    /// 0 when the window is whole.
    pub history_dropped_before_ms: i64,
}

const EVIDENCE_ORDER: [&str; 6] = [
    "exe",
    "mapped",
    "opened",
    "embedded",
    "installed",
    "declared",
];

fn stronger<'a>(a: &'a str, b: &'a str) -> &'a str {
    let rank = |e: &str| EVIDENCE_ORDER.iter().position(|x| *x == e).unwrap_or(99);
    if rank(b) < rank(a) { b } else { a }
}

#[derive(Default)]
struct Version {
    first_ms: i64,
    /// None: held now.
    last_ms: Option<i64>,
    evidence: String,
    purl: String,
    hosts: BTreeSet<String>,
    replicas: BTreeSet<String>,
}

/// The changes since `since_ms` in `instances` (pure; see the module's
/// doc for what counts).
pub fn fold(instances: &[InstanceSpans], since_ms: i64) -> Vec<Change> {
    // (ecosystem/name) → version → what the instances say.
    let mut packages: BTreeMap<String, BTreeMap<String, Version>> = BTreeMap::new();
    let mut running = false;
    for i in instances {
        for s in &i.spans {
            running |= s.last_ms.is_none();
            let name = format!("{}/{}", s.package.ecosystem, s.package.name);
            let v = packages
                .entry(name)
                .or_default()
                .entry(s.package.version.clone())
                .or_insert_with(|| Version {
                    first_ms: i64::MAX,
                    last_ms: Some(i64::MIN),
                    evidence: s.evidence.clone(),
                    purl: s.package.purl.clone(),
                    ..Version::default()
                });
            v.first_ms = v.first_ms.min(s.first_ms);
            v.last_ms = match (v.last_ms, s.last_ms) {
                (None, _) | (_, None) => None,
                (Some(a), Some(b)) => Some(a.max(b)),
            };
            v.evidence = stronger(&v.evidence, &s.evidence).to_string();
            v.hosts.insert(i.host.clone());
            v.replicas.insert(i.replica.clone());
        }
    }
    // When the workload was first seen: what it held then is its start,
    // not a change.
    let start = instances
        .iter()
        .flat_map(|i| i.spans.iter().map(|s| s.first_ms))
        .min()
        .unwrap_or(i64::MIN);
    let mut out = Vec::new();
    for (name, versions) in packages {
        let mut by_time: Vec<(&String, &Version)> = versions.iter().collect();
        by_time.sort_by(|a, b| (a.1.first_ms, a.0).cmp(&(b.1.first_ms, b.0)));
        for (k, (version, v)) in by_time.iter().enumerate() {
            if v.first_ms < since_ms {
                continue;
            }
            let from = by_time[..k]
                .iter()
                .rev()
                .find(|(_, u)| u.first_ms < v.first_ms)
                .map(|(u, _)| u.to_string())
                .unwrap_or_default();
            if from.is_empty() && v.first_ms <= start {
                continue;
            }
            out.push(Change {
                name: name.clone(),
                from,
                to: version.to_string(),
                at_ms: v.first_ms,
                evidence: v.evidence.clone(),
                purl: v.purl.clone(),
                hosts: v.hosts.iter().cloned().collect(),
                replicas: v.replicas.iter().cloned().collect(),
            });
        }
        // Removed: nothing holds any version now, the workload still runs.
        let ended = by_time.iter().all(|(_, v)| v.last_ms.is_some());
        if running
            && ended
            && let Some((version, v)) = by_time.iter().max_by_key(|(_, v)| v.last_ms)
            && let Some(at) = v.last_ms
            && at >= since_ms
        {
            out.push(Change {
                name: name.clone(),
                from: version.to_string(),
                to: String::new(),
                at_ms: at,
                evidence: v.evidence.clone(),
                purl: v.purl.clone(),
                hosts: v.hosts.iter().cloned().collect(),
                replicas: v.replicas.iter().cloned().collect(),
            });
        }
    }
    out.sort_by(|a, b| (a.at_ms, &a.name, &a.to).cmp(&(b.at_ms, &b.name, &b.to)));
    out
}

/// The fleet key of a workload instance, as egress baselines key them.
fn key_of(row: &WorkloadRow) -> String {
    workloads::key(row)
}

/// The baseline keys of the instances seen since `seen_since_ms` that
/// contain `wanted` (exactly equal wins), for naming a workload by part
/// of its key.
pub fn keys_matching(store: &dyn Store, wanted: &str, seen_since_ms: i64) -> Result<Vec<String>> {
    let rows = store.workload_instances(seen_since_ms, MAX_SCANNED_INSTANCES)?;
    let keys: BTreeSet<String> = rows.iter().map(key_of).collect();
    if keys.contains(wanted) {
        return Ok(vec![wanted.to_string()]);
    }
    Ok(keys.into_iter().filter(|k| k.contains(wanted)).collect())
}

/// What changed on the workload with baseline key `key` since
/// `since_ms`. A host executable's key (`host:NAME/exe:PATH`) is its
/// host's: the host's packages are one set.
pub fn for_workload(store: &dyn Store, key: &str, since_ms: i64) -> Result<Changes> {
    let key = key.split_once("/exe:").map_or(key, |(k, _)| k);
    let after = since_ms.saturating_sub(LOOKBACK_MS);
    let rows = store.workload_instances(after, MAX_SCANNED_INSTANCES)?;
    let mut truncated = rows.len() >= MAX_SCANNED_INSTANCES;
    let mine: Vec<&WorkloadRow> = rows.iter().filter(|r| key_of(r) == key).collect();
    truncated |= mine.len() > MAX_INSTANCES;
    let mut instances = Vec::new();
    for row in mine.into_iter().take(MAX_INSTANCES) {
        let spans =
            store.workload_package_spans(&row.host_id, &row.workload.id, after, MAX_SPANS)?;
        truncated |= spans.len() >= MAX_SPANS;
        instances.push(InstanceSpans {
            host: row.host.clone(),
            replica: format!("{}/{}", row.host, row.workload.id),
            spans,
        });
    }
    Ok(Changes {
        key: key.to_string(),
        changes: fold(&instances, since_ms),
        instances: instances.len(),
        truncated,
        history_dropped_before_ms: crate::retention::dropped_before(
            store.retention_horizon()?,
            since_ms,
        ),
    })
}

#[cfg(test)]
mod tests {
    use patchgap_proto::v1;

    use super::*;

    fn span(name: &str, version: &str, first: i64, last: Option<i64>, ev: &str) -> PackageSpan {
        PackageSpan {
            package: v1::Package {
                ecosystem: "pypi".into(),
                name: name.into(),
                version: version.into(),
                purl: format!("pkg:pypi/{name}@{version}"),
                ..Default::default()
            },
            evidence: ev.into(),
            first_ms: first,
            last_ms: last,
            processes: 1,
        }
    }

    fn instance(replica: &str, spans: Vec<PackageSpan>) -> InstanceSpans {
        InstanceSpans {
            host: replica.split('/').next().unwrap().into(),
            replica: replica.into(),
            spans,
        }
    }

    /// Two replicas upgrade trainlib at different times: one change,
    /// 1.0.0 → 2.0.0 at the first, both replicas named; a package added
    /// and one removed; nothing before T.
    #[test]
    fn an_upgrade_on_two_replicas_is_one_change() {
        let a = instance(
            "alpha/a",
            vec![
                span("trainlib", "1.0.0", 100, Some(5_000), "installed"),
                span("trainlib", "2.0.0", 5_000, None, "installed"),
                span("numpy", "1.26.0", 100, None, "mapped"),
                span("oldlib", "0.1", 100, Some(5_000), "opened"),
                span("newlib", "3.0", 5_100, None, "opened"),
            ],
        );
        let b = instance(
            "beta/b",
            vec![
                span("trainlib", "1.0.0", 200, Some(6_000), "installed"),
                span("trainlib", "2.0.0", 6_000, None, "mapped"),
            ],
        );
        let got = fold(&[a.clone(), b], 1_000);
        let lines: Vec<String> = got
            .iter()
            .map(|c| {
                format!(
                    "{} {}->{} @{} {} {:?}",
                    c.name, c.from, c.to, c.at_ms, c.evidence, c.replicas
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                "pypi/oldlib 0.1-> @5000 opened [\"alpha/a\"]",
                "pypi/trainlib 1.0.0->2.0.0 @5000 mapped [\"alpha/a\", \"beta/b\"]",
                "pypi/newlib ->3.0 @5100 opened [\"alpha/a\"]",
            ]
        );
        // T before everything: what the workload started with is not a
        // change (numpy, trainlib 1.0.0 and oldlib at 100 are not listed).
        assert_eq!(fold(std::slice::from_ref(&a), 0).len(), 3);
        // T after everything: nothing changed since.
        assert!(fold(std::slice::from_ref(&a), 10_000).is_empty());
        // A workload with nothing running has no removals: it is gone,
        // not stripped.
        let gone = instance(
            "alpha/a",
            vec![span("oldlib", "0.1", 100, Some(5_000), "opened")],
        );
        assert!(fold(&[gone], 1_000).is_empty());
    }

    /// The from of a change is the version held just before it, not
    /// the oldest one.
    #[test]
    fn from_is_the_previous_version() {
        let a = instance(
            "alpha/a",
            vec![
                span("lib", "1", 0, Some(10), "installed"),
                span("lib", "2", 10, Some(20), "installed"),
                span("lib", "3", 20, None, "installed"),
            ],
        );
        let got: Vec<(String, String)> =
            fold(&[a], 5).into_iter().map(|c| (c.from, c.to)).collect();
        assert_eq!(got, [("1".into(), "2".into()), ("2".into(), "3".into())]);
    }

    /// A window that reaches back past what retention dropped says so; one
    /// inside what is kept does not.
    #[test]
    fn a_window_before_the_retention_horizon_says_so() {
        let store = crate::store::sqlite::SqliteStore::in_memory().unwrap();
        let found = for_workload(&store, "k8s:ml/Deployment/trainer", 1_000).unwrap();
        assert_eq!(found.history_dropped_before_ms, 0, "nothing dropped yet");
        store.set_retention_horizon(50_000, 60_000).unwrap();
        let found = for_workload(&store, "k8s:ml/Deployment/trainer", 1_000).unwrap();
        assert_eq!(found.history_dropped_before_ms, 50_000);
        let found = for_workload(&store, "k8s:ml/Deployment/trainer", 50_000).unwrap();
        assert_eq!(found.history_dropped_before_ms, 0, "the window is whole");
    }
}
