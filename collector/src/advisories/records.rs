//! Advisory import: OSV files (JSON, or YAML as PyPA ships it) become store
//! records. Each file is parsed on its own; a bad one is reported with its
//! name, position and reason, and changes nothing.

use std::cmp::Ordering;

use patchgap_proto::v1;
use sha2::Digest;

use crate::{
    advisories::{
        osv::{self, Advisory, Affected, Event, RangeKind},
        version::Order,
    },
    ecosystem::Ecosystem,
    store::{AdvisoryRecord, PutOutcome},
};

/// The purl type patchgap inventories for an OSV ecosystem, or "" for one
/// it does not (NuGet, RubyGems, ...).
pub fn purl_type(osv_ecosystem: &str) -> &'static str {
    Ecosystem::from_osv(osv_ecosystem).map_or("", Ecosystem::purl_type)
}

/// The store's record of a parsed advisory. `document` is the file as
/// imported.
pub fn record(a: &Advisory, source: &str, document: &[u8]) -> AdvisoryRecord {
    let (score, severity, vector) = match a.cvss_v3_entry() {
        Some((entry, score, rating)) => (Some(score), rating.to_uppercase(), entry.score.clone()),
        // GHSA's qualitative severity when there is no vector to score.
        None => (
            None,
            a.database_severity()
                .map(|s| s.to_uppercase())
                .unwrap_or_default(),
            String::new(),
        ),
    };
    // A distribution's record is found by its upstream ids too: `show
    // CVE-…` lists the upstream advisory and the distro's.
    let mut aliases: Vec<String> = a
        .aliases
        .iter()
        .chain(&a.upstream)
        .filter(|x| **x != a.id)
        .cloned()
        .collect();
    aliases.sort();
    aliases.dedup();
    let mut packages: Vec<(String, String, String)> = a
        .affected
        .iter()
        .filter_map(|af| af.package.as_ref())
        .map(|p| {
            (
                purl_type(&p.ecosystem).to_string(),
                p.ecosystem.clone(),
                p.name.clone(),
            )
        })
        .collect();
    packages.sort();
    packages.dedup();
    AdvisoryRecord {
        id: a.id.clone(),
        modified: a.modified.to_string(),
        modified_ms: a.modified.unix_seconds * 1000 + i64::from(a.modified.nanos / 1_000_000),
        withdrawn: a.withdrawn.map(|w| w.to_string()),
        aliases,
        summary: a.summary.clone().unwrap_or_default(),
        severity,
        score,
        vector,
        packages,
        source: source.to_string(),
        provenance: crate::store::Provenance {
            sha256: crate::auth::hex(&sha2::Sha256::digest(document)),
            ..Default::default()
        },
        data: document.to_vec(),
    }
}

/// Parses the files of one import request: records to store, and the
/// files that failed.
pub fn parse_files(files: &[v1::AdvisoryFile]) -> (Vec<AdvisoryRecord>, Vec<v1::ImportError>) {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match osv::import::parse_file(&f.name, &f.data) {
            Some(Ok(a)) => records.push(record(&a, &f.name, &f.data)),
            Some(Err(e)) => errors.push(v1::ImportError {
                file: e.file.clone(),
                position: format!("{}:{}", e.line, e.column),
                reason: if e.path.is_empty() {
                    e.reason.clone()
                } else {
                    format!("{}: {}", e.path, e.reason)
                },
            }),
            None => errors.push(v1::ImportError {
                file: f.name.clone(),
                position: String::new(),
                reason: "not an advisory file: the name must end in .json, .yaml or .yml".into(),
            }),
        }
    }
    (records, errors)
}

/// Adds one batch's outcomes to the response's counts.
pub fn count(
    resp: &mut v1::ImportAdvisoriesResponse,
    records: &[AdvisoryRecord],
    put: &[PutOutcome],
) {
    for (r, o) in records.iter().zip(put) {
        match o {
            PutOutcome::Added => resp.added += 1,
            PutOutcome::Updated => resp.updated += 1,
            PutOutcome::Unchanged => resp.unchanged += 1,
            PutOutcome::Older => resp.older += 1,
            PutOutcome::OtherSource => resp.refused += 1,
        }
        if matches!(o, PutOutcome::Added | PutOutcome::Updated) && r.withdrawn.is_some() {
            resp.withdrawn += 1;
        }
    }
}

/// The wire form of a stored advisory.
pub fn summary(a: &AdvisoryRecord) -> v1::AdvisorySummary {
    v1::AdvisorySummary {
        id: a.id.clone(),
        aliases: a.aliases.clone(),
        modified: a.modified.clone(),
        withdrawn: a.withdrawn.clone().unwrap_or_default(),
        summary: a.summary.clone(),
        severity: a.severity.clone(),
        score: a.score,
        vector: a.vector.clone(),
        packages: a
            .packages
            .iter()
            .map(|(e, o, n)| v1::AffectedPackage {
                ecosystem: e.clone(),
                osv_ecosystem: o.clone(),
                name: n.clone(),
            })
            .collect(),
        source: a.source.clone(),
        provenance: Some(provenance(&a.provenance)),
    }
}

/// The wire form of a record's provenance.
pub fn provenance(p: &crate::store::Provenance) -> v1::Provenance {
    v1::Provenance {
        imported_by: p.imported_by.clone(),
        imported_ms: p.imported_ms,
        source: p.source.clone(),
        sha256: p.sha256.clone(),
    }
}

/// Whether `version` of a package is affected by one `affected` entry:
/// listed in `versions`, or inside one of its ECOSYSTEM or SEMVER ranges
/// (GIT ranges name commits, which no installed package has).
pub fn affects(af: &Affected, version: &str, order: Order) -> bool {
    if version.is_empty() {
        return false;
    }
    if af
        .versions
        .iter()
        .any(|v| v == version || order.compare(v, version) == Ordering::Equal)
    {
        return true;
    }
    af.ranges.iter().any(|r| {
        let order = match r.kind {
            RangeKind::Ecosystem => order,
            RangeKind::Semver => Order::SemVer,
            RangeKind::Git => return false,
        };
        range_affects(&r.events, version, order)
    })
}

/// OSV's evaluation: the events in version order ("0" first), each moving
/// the state when `version` is at or past it. A range without `fixed`
/// stays affected up to the latest version.
fn range_affects(events: &[Event], version: &str, order: Order) -> bool {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by(|a, b| match (a.version(), b.version()) {
        ("0", "0") => Ordering::Equal,
        ("0", _) => Ordering::Less,
        (_, "0") => Ordering::Greater,
        (x, y) => order.compare(x, y),
    });
    let mut affected = false;
    for e in sorted {
        match e {
            Event::Introduced(x) => {
                if x == "0" || order.compare(version, x) != Ordering::Less {
                    affected = true;
                }
            }
            Event::Fixed(x) | Event::Limit(x) => {
                if order.compare(version, x) != Ordering::Less {
                    affected = false;
                }
            }
            Event::LastAffected(x) => {
                if order.compare(version, x) == Ordering::Greater {
                    affected = false;
                }
            }
        }
    }
    affected
}

/// Whether an OS package (its purl) is of the distribution and release an
/// OSV ecosystem names: "Debian:12" matches pkg:deb/debian/...&distro=debian-12,
/// "Ubuntu:22.04:LTS" matches ubuntu 22.04; a bare "Debian" any release.
pub fn distro_matches(purl: &str, osv_ecosystem: &str) -> bool {
    let mut parts = osv_ecosystem.split(':');
    let base = parts.next().unwrap_or("").to_lowercase();
    let release = parts.next().unwrap_or("");
    let Some(rest) = purl.split_once('/').map(|(_, r)| r) else {
        return false;
    };
    let namespace = rest.split('/').next().unwrap_or("");
    // The agent names a distro package by its root's os-release ID
    // (`pkg:rpm/rhel/…`, `pkg:rpm/rocky/…`), which is not OSV's name for
    // the distribution ("Red Hat", "Rocky Linux").
    let namespaces = crate::ecosystem::osv_namespaces(osv_ecosystem);
    if !(namespaces.contains(&namespace) || namespace == base) {
        return false;
    }
    if release.is_empty() {
        return true;
    }
    let distro = purl
        .split(['?', '&'])
        .find_map(|q| q.strip_prefix("distro="))
        .unwrap_or("");
    // "debian-12", "ubuntu-22.04", or with a point release as trivy writes
    // it ("debian-12.11"); an unknown release matches.
    distro.is_empty()
        || distro.rsplit_once('-').is_some_and(|(_, r)| {
            r == release || r.strip_prefix(release).is_some_and(|p| p.starts_with('.'))
        })
}

/// (name, source) to look a package up by: Maven's "group:artifact" is the
/// artifactId with the groupId as source; everything else its name.
pub fn lookup_name(osv_ecosystem: &str, name: &str) -> (String, Option<String>) {
    if osv::osv_ecosystem(osv_ecosystem) == "Maven"
        && let Some((group, artifact)) = name.split_once(':')
    {
        return (artifact.to_string(), Some(group.to_string()));
    }
    (name.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(events: Vec<Event>, versions: &[&str]) -> Affected {
        let doc = serde_json::json!({
            "id": "X-1", "modified": "2024-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "PyPI", "name": "p"},
                "ranges": [{"type": "ECOSYSTEM", "events": events.iter().map(|e| match e {
                    Event::Introduced(v) => serde_json::json!({"introduced": v}),
                    Event::Fixed(v) => serde_json::json!({"fixed": v}),
                    Event::LastAffected(v) => serde_json::json!({"last_affected": v}),
                    Event::Limit(v) => serde_json::json!({"limit": v}),
                }).collect::<Vec<_>>()}],
                "versions": versions}]
        });
        osv::parse_json(doc.to_string().as_bytes(), "x.json")
            .expect("valid")
            .affected
            .remove(0)
    }

    #[test]
    fn ranges_follow_osv_evaluation() {
        use Event::*;
        let pep = Order::Pep440;
        let af = entry(vec![Introduced("0".into()), Fixed("39.0.1".into())], &[]);
        assert!(affects(&af, "38.0.4", pep));
        assert!(!affects(&af, "39.0.1", pep));
        assert!(
            affects(&af, "39.0.1rc1", pep),
            "a pre-release of the fix is before it"
        );
        // No fixed: affected up to the latest version.
        let open = entry(vec![Introduced("1.0".into())], &[]);
        assert!(affects(&open, "99.0", pep));
        assert!(!affects(&open, "0.9", pep));
        let last = entry(
            vec![Introduced("1.0".into()), LastAffected("1.5".into())],
            &[],
        );
        assert!(affects(&last, "1.5", pep));
        assert!(!affects(&last, "1.5.1", pep));
        // Two windows in one range, events out of order in the document.
        let two = entry(
            vec![
                Fixed("1.2".into()),
                Introduced("1.0".into()),
                Introduced("2.0".into()),
                Fixed("2.1".into()),
            ],
            &[],
        );
        for (v, want) in [
            ("0.9", false),
            ("1.1", true),
            ("1.2", false),
            ("2.0.5", true),
            ("2.1", false),
        ] {
            assert_eq!(affects(&two, v, pep), want, "{v}");
        }
        let listed = entry(vec![Introduced("5.0".into())], &["1.0", "1.1"]);
        assert!(affects(&listed, "1.1", pep));
        assert!(!affects(&listed, "1.2", pep));
        assert!(!affects(&listed, "", pep));
    }

    #[test]
    fn golang_vulndb_times_are_the_unknown_sentinel() {
        let rel = "../testdata/osv/golang-vulndb/data/osv/GO-2025-3408.json";
        let data =
            std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap();
        let a = osv::parse_json(&data, rel).unwrap();
        assert_eq!(
            record(&a, rel, &data).modified_ms,
            crate::store::UNKNOWN_MODIFIED_MS
        );
    }

    #[test]
    fn distros_and_releases() {
        let deb12 = "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12";
        assert!(distro_matches(deb12, "Debian:12"));
        assert!(distro_matches(deb12, "Debian"));
        assert!(!distro_matches(deb12, "Debian:11"));
        assert!(!distro_matches(deb12, "Ubuntu:22.04:LTS"));
        let trivy = "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=debian-12.11";
        assert!(distro_matches(trivy, "Debian:12"));
        assert!(!distro_matches(trivy, "Debian:11"));
        assert!(!distro_matches(trivy, "Debian:1"));
        let jammy = "pkg:deb/ubuntu/libc6@2.35?arch=amd64&distro=ubuntu-22.04";
        assert!(distro_matches(jammy, "Ubuntu:22.04:LTS"));
        // Regression: the namespace is the os-release ID, not OSV's name.
        let rocky = "pkg:rpm/rocky/openssl@3.0.7-24.el9?arch=x86_64&distro=rocky-9.3";
        assert!(distro_matches(rocky, "Rocky Linux:9"));
        assert!(!distro_matches(rocky, "Rocky Linux:8"));
        assert!(!distro_matches(rocky, "AlmaLinux:9"));
        let azl = "pkg:rpm/azurelinux/openssl@3.3.2-1.azl3?arch=x86_64&distro=azurelinux-3.0";
        assert!(distro_matches(azl, "Azure Linux:3"));
        let photon = "pkg:rpm/photon/openssl@3.0.9-1.ph5?arch=x86_64&distro=photon-5.0";
        assert!(distro_matches(photon, "Photon OS:5"));
        assert_eq!(
            lookup_name("Maven", "org.apache.logging.log4j:log4j-core"),
            (
                "log4j-core".to_string(),
                Some("org.apache.logging.log4j".to_string())
            )
        );
        assert_eq!(
            lookup_name("PyPI", "cryptography"),
            ("cryptography".to_string(), None)
        );
    }
}
