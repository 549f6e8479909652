//! Incremental matching: each (advisory, package) pair is decided once and
//! stored, so findings are a join, not a re-evaluation of every advisory.
//!
//! Two passes keep the verdicts complete. New inventory (agent messages,
//! pushed SBOMs) stores packages unmatched, and [`MatchScope::Unmatched`]
//! tests them against every advisory naming them. An import tests the
//! advisories it added or changed against every package
//! ([`MatchScope::Advisories`]), with those that share an alias with them,
//! since a distro's advisory decides how an upstream one applies to the
//! packages the distro shipped.
//!
//! A verdict: the advisory's affected entries for the package's ecosystem
//! and name, its version inside their ranges in that ecosystem's order, and
//! for an OS package the distribution and release the entry names. Then,
//! for a package shipped by a distro package (python3-cryptography's
//! cryptography): when the distro has its own advisory for the same
//! vulnerability (an alias in common), that advisory's ranges on the distro
//! package's version decide; otherwise, when the distro package's changelog
//! names one of the advisory's ids, the fix was backported and the match is
//! `fixed-by-distro`.

use std::collections::HashMap;

use patchgap_proto::v1;

use crate::{
    advisories::{
        osv::{Advisory, Affected, import::parse_file},
        records::{affects, distro_matches, lookup_name, purl_type},
    },
    ecosystem::{Ecosystem, package_key, purl_order},
    store::{AdvisoryMatch, AdvisoryRecord, MatchScope, Result, Store},
};

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// (package, advisory) pairs whose name agreed, and so were tested.
    pub candidates: usize,
    /// Pairs where the advisory affects the package's version.
    pub matches: usize,
}

/// Tests `scope`'s candidates and stores the verdicts. The caller holds the
/// store for the whole pass.
pub fn refresh(store: &dyn Store, scope: &MatchScope) -> Result<Pass> {
    let found = store.match_candidates(scope)?;
    if found.scope_size == 0 {
        // Nothing new: no transaction (this runs after every agent message).
        return Ok(Pass::default());
    }
    let candidates = found.pairs;
    let mut pass = Pass {
        candidates: candidates.len(),
        matches: 0,
    };
    let mut advisories: HashMap<String, Option<(AdvisoryRecord, Advisory)>> = HashMap::new();
    let mut distro: DistroAdvisories = HashMap::new();
    let mut out = Vec::new();
    for c in &candidates {
        if !advisories.contains_key(&c.advisory_id) {
            let loaded = load(store, &c.advisory_id)?;
            advisories.insert(c.advisory_id.clone(), loaded);
        }
        let Some((rec, adv)) = advisories.get(&c.advisory_id).and_then(Option::as_ref) else {
            continue;
        };
        if !affects_package(adv, &c.package) {
            continue;
        }
        let status = status(store, &mut distro, rec, &c.package)?;
        out.push(AdvisoryMatch {
            advisory_id: c.advisory_id.clone(),
            package_id: c.package_id,
            status: status.to_string(),
        });
    }
    pass.matches = out.len();
    // The packages read, not "whatever is unmatched now": one committed
    // since (by another collector) keeps its mark for its own pass.
    let recorded = match scope {
        MatchScope::Unmatched => MatchScope::Packages(found.packages),
        other => other.clone(),
    };
    store.put_matches(&recorded, &out)?;
    Ok(pass)
}

/// The advisory `id` and its parsed document; None when it is withdrawn
/// (it affects nothing) or no longer parses.
fn load(store: &dyn Store, id: &str) -> Result<Option<(AdvisoryRecord, Advisory)>> {
    let rec = store.advisory(id)?.into_iter().find(|r| r.id == id);
    Ok(rec.and_then(|rec| {
        if rec.withdrawn.is_some() {
            return None;
        }
        match parse_file(&rec.source, &rec.data) {
            Some(Ok(adv)) => Some((rec, adv)),
            _ => None,
        }
    }))
}

/// Whether one of the advisory's affected entries names this package and
/// covers its version.
pub fn affects_package(adv: &Advisory, p: &v1::Package) -> bool {
    adv.affected
        .iter()
        .any(|af| names(af, p) && affects_entry(af, p))
}

/// Whether an affected entry names this package (ecosystem, and name or
/// source; an OS package's distribution and release too).
pub fn names(af: &Affected, p: &v1::Package) -> bool {
    let Some(ap) = &af.package else {
        return false;
    };
    let ty = purl_type(&ap.ecosystem);
    if ty.is_empty() || ty != p.ecosystem {
        return false;
    }
    let (name, source) = lookup_name(&ap.ecosystem, &ap.name);
    let named = match source {
        // Maven: groupId and artifactId.
        Some(group) => p.source == group && package_key(ty, &p.name) == package_key(ty, &name),
        // Go's vulndb files the go command's own vulnerabilities under
        // "toolchain"; a Go release is one version of both, and the
        // agent reports the release a binary was built with as stdlib.
        None if ty == "golang" && name == "toolchain" => p.name == "stdlib",
        None => {
            package_key(ty, &p.name) == package_key(ty, &name)
                // Debian and rpm advisories name source packages.
                || (is_os(ty) && p.source == name)
        }
    };
    named && (!is_os(ty) || distro_matches(&p.purl, &ap.ecosystem))
}

/// Whether the package's version is inside the entry's ranges or list, in
/// its ecosystem's order. (OSV's evaluation is per entry: an advisory
/// affects a version when any entry naming the package does.)
pub fn affects_entry(af: &Affected, p: &v1::Package) -> bool {
    affects(af, &p.version, purl_order(&p.ecosystem))
}

/// Whether a purl type is an operating system's package manager's.
fn is_os(ty: &str) -> bool {
    Ecosystem::from_purl_type(ty).is_some_and(Ecosystem::is_os)
}

/// Distro advisories by the upstream advisory id they share an alias with.
type DistroAdvisories = HashMap<String, Vec<Advisory>>;

/// "affected" or "fixed-by-distro" for a package the advisory affects.
fn status(
    store: &dyn Store,
    cache: &mut DistroAdvisories,
    rec: &AdvisoryRecord,
    p: &v1::Package,
) -> Result<&'static str> {
    let Some(d) = p.distro.as_deref() else {
        return Ok("affected");
    };
    if !cache.contains_key(&rec.id) {
        cache.insert(rec.id.clone(), distro_advisories(store, rec)?);
    }
    // The distro's own advisories for this vulnerability that name the
    // distro package (binary or source) for its release decide.
    let names_it = |adv: &&Advisory| {
        adv.affected.iter().any(|af| {
            af.package.as_ref().is_some_and(|ap| {
                purl_type(&ap.ecosystem) == d.ecosystem
                    && (ap.name == d.name || ap.name == d.source)
                    && distro_matches(&d.purl, &ap.ecosystem)
            })
        })
    };
    let deciding: Vec<&Advisory> = cache[&rec.id].iter().filter(names_it).collect();
    if !deciding.is_empty() {
        let affected = deciding.iter().any(|adv| affects_package(adv, d));
        return Ok(if affected {
            "affected"
        } else {
            "fixed-by-distro"
        });
    }
    // A backport the distro package's changelog names.
    let fixed = d.fixed_cves.iter().any(|c| {
        c.eq_ignore_ascii_case(&rec.id) || rec.aliases.iter().any(|a| a.eq_ignore_ascii_case(c))
    });
    Ok(if fixed { "fixed-by-distro" } else { "affected" })
}

/// The stored OS-ecosystem advisories that share the id or an alias with
/// `rec`.
fn distro_advisories(store: &dyn Store, rec: &AdvisoryRecord) -> Result<Vec<Advisory>> {
    let mut out: Vec<Advisory> = Vec::new();
    for name in std::iter::once(&rec.id).chain(&rec.aliases) {
        for other in store.advisory(name)? {
            if other.id == rec.id
                || other.withdrawn.is_some()
                || out.iter().any(|a| a.id == other.id)
                || !other.packages.iter().any(|(ty, _, _)| is_os(ty))
            {
                continue;
            }
            if let Some(Ok(adv)) = parse_file(&other.source, &other.data) {
                out.push(adv);
            }
        }
    }
    Ok(out)
}

/// The advisories to re-test after an import changed `changed`: those, and
/// every stored advisory that shares an id or alias with one of them.
pub fn related(store: &dyn Store, changed: &[AdvisoryRecord]) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for rec in changed {
        ids.push(rec.id.clone());
        for name in &rec.aliases {
            ids.extend(store.advisory(name)?.into_iter().map(|r| r.id));
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use patchgap_proto::v1;

    use super::*;
    use crate::{
        SqliteStore,
        store::{DeclaredPackage, SbomRecord},
    };

    /// The real PyPA advisory for CVE-2023-23931 (fixed upstream in 39.0.1).
    fn upstream() -> (String, Vec<u8>) {
        let rel = "../testdata/osv/pypa/vulns/cryptography/PYSEC-2023-11.yaml";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        (rel.into(), std::fs::read(path).unwrap())
    }

    /// A Debian record for the same CVE, shaped as osv.dev publishes
    /// DEBIAN-CVE records (no real one could be obtained offline; see
    /// testdata/osv/PROVENANCE.md): it names the source package and the
    /// release, and the CVE under `upstream`.
    fn debian(release: &str, fixed: &str, modified: &str) -> (String, Vec<u8>) {
        let doc = serde_json::json!({
            "id": "DEBIAN-CVE-2023-23931",
            "modified": modified,
            "upstream": ["CVE-2023-23931"],
            "affected": [{
                "package": {"ecosystem": format!("Debian:{release}"), "name": "python-cryptography"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
            }],
        });
        (
            "DEBIAN-CVE-2023-23931.json".into(),
            doc.to_string().into_bytes(),
        )
    }

    /// A store whose only package is Debian 12's cryptography 38.0.4, shipped
    /// by python3-cryptography 38.0.4-3+deb12u1 (with or without the
    /// changelog naming the CVE).
    fn store(changelog_names_cve: bool) -> SqliteStore {
        let s = SqliteStore::in_memory().unwrap();
        let distro = v1::Package {
            ecosystem: "deb".into(),
            name: "python3-cryptography".into(),
            source: "python-cryptography".into(),
            version: "38.0.4-3+deb12u1".into(),
            arch: "amd64".into(),
            purl:
                "pkg:deb/debian/python3-cryptography@38.0.4-3%2Bdeb12u1?arch=amd64&distro=debian-12"
                    .into(),
            distro: None,
            fixed_cves: if changelog_names_cve {
                vec!["CVE-2023-23931".into()]
            } else {
                Vec::new()
            },
            replaced_by: String::new(),
        };
        let sbom = SbomRecord {
            image: format!("sha256:{}", "0".repeat(64)),
            sha256: "x".into(),
            packages: vec![DeclaredPackage {
                package: v1::Package {
                    ecosystem: "pypi".into(),
                    name: "cryptography".into(),
                    version: "38.0.4".into(),
                    purl: "pkg:pypi/cryptography@38.0.4".into(),
                    distro: Some(Box::new(distro)),
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        };
        s.put_sbom(&sbom).unwrap();
        refresh(&s, &MatchScope::Unmatched).unwrap();
        s
    }

    /// Imports as the service does: store, then match what changed and
    /// the advisories related to it.
    fn import(s: &SqliteStore, files: &[(String, Vec<u8>)]) -> Pass {
        let files: Vec<v1::AdvisoryFile> = files
            .iter()
            .map(|(name, data)| v1::AdvisoryFile {
                name: name.clone(),
                data: data.clone(),
            })
            .collect();
        let (records, errors) = crate::advisories::records::parse_files(&files);
        assert!(errors.is_empty(), "{errors:?}");
        s.put_advisories(&records, false).unwrap();
        let ids = related(s, &records).unwrap();
        refresh(s, &MatchScope::Advisories(ids)).unwrap()
    }

    /// The upstream advisory's verdict on the pypi package: None when it
    /// does not match, else its status.
    fn verdict(s: &SqliteStore) -> Option<&'static str> {
        let upstream = crate::fleet::exposure::findings(s, &Default::default()).unwrap();
        assert!(upstream.is_empty(), "no process runs the image");
        let sboms = s.sboms(None).unwrap();
        let affected = sboms[0]
            .packages
            .iter()
            .any(|p| p.advisories.iter().any(|a| a == "PYSEC-2023-11"));
        let pass = refresh(s, &MatchScope::Advisories(vec!["PYSEC-2023-11".into()])).unwrap();
        match (pass.matches, affected) {
            (0, _) => None,
            (_, true) => Some("affected"),
            (_, false) => Some("fixed-by-distro"),
        }
    }

    /// Regression: Azure Linux, Photon OS and MinimOS had a version order
    /// but no purl type, and rpm namespaces are os-release IDs (rocky, not
    /// "rocky linux"), so these distributions' advisories matched nothing.
    #[test]
    fn os_advisories_match_their_distributions_packages() {
        let cases = [
            (
                "Azure Linux:3",
                "rpm",
                "azurelinux",
                "3.0",
                "3.3.2-1.azl3",
                "3.3.2-2.azl3",
            ),
            (
                "Photon OS:5",
                "rpm",
                "photon",
                "5.0",
                "3.0.9-1.ph5",
                "3.0.9-2.ph5",
            ),
            (
                "Rocky Linux:9",
                "rpm",
                "rocky",
                "9.3",
                "3.0.7-24.el9",
                "3.0.7-25.el9",
            ),
            ("MinimOS", "apk", "minimos", "", "3.3.2-r0", "3.3.2-r1"),
        ];
        for (osv, ty, id, release, installed, fixed) in cases {
            let s = SqliteStore::in_memory().unwrap();
            let distro = if release.is_empty() {
                String::new()
            } else {
                format!("&distro={id}-{release}")
            };
            let package = v1::Package {
                ecosystem: ty.into(),
                name: "openssl".into(),
                source: "openssl".into(),
                version: installed.into(),
                arch: "x86_64".into(),
                purl: format!("pkg:{ty}/{id}/openssl@{installed}?arch=x86_64{distro}"),
                ..Default::default()
            };
            s.put_sbom(&SbomRecord {
                image: format!("sha256:{}", "1".repeat(64)),
                sha256: "x".into(),
                packages: vec![DeclaredPackage {
                    package,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .unwrap();
            refresh(&s, &MatchScope::Unmatched).unwrap();
            let doc = serde_json::json!({
                "id": format!("TEST-{id}"),
                "modified": "2024-01-01T00:00:00Z",
                "affected": [{
                    "package": {"ecosystem": osv, "name": "openssl"},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
                }],
            });
            let pass = import(&s, &[(format!("{id}.json"), doc.to_string().into_bytes())]);
            assert_eq!(pass.matches, 1, "{osv}");
        }
    }

    #[test]
    fn the_changelog_proves_a_backport_when_the_distro_has_no_advisory() {
        let s = store(true);
        import(&s, &[upstream()]);
        assert_eq!(verdict(&s), Some("fixed-by-distro"));
        let s = store(false);
        import(&s, &[upstream()]);
        assert_eq!(verdict(&s), Some("affected"));
    }

    #[test]
    fn the_distros_own_advisory_decides_when_it_exists() {
        // Debian says its 38.0.4-3+deb12u1 is fixed: fixed-by-distro, even
        // without the changelog.
        let s = store(false);
        import(
            &s,
            &[
                upstream(),
                debian("12", "38.0.4-3+deb12u1", "2024-01-01T00:00:00Z"),
            ],
        );
        assert_eq!(verdict(&s), Some("fixed-by-distro"));
        // Debian says the fix came later: affected, whatever the changelog
        // says.
        let s = store(true);
        import(
            &s,
            &[
                upstream(),
                debian("12", "38.0.4-3+deb12u2", "2024-01-01T00:00:00Z"),
            ],
        );
        assert_eq!(verdict(&s), Some("affected"));
        // A record for another release does not decide for Debian 12.
        let s = store(false);
        import(
            &s,
            &[upstream(), debian("11", "3.3.2-1", "2024-01-01T00:00:00Z")],
        );
        assert_eq!(verdict(&s), Some("affected"));
    }

    #[test]
    fn a_distro_advisory_imported_later_reevaluates_the_upstream_one() {
        let s = store(false);
        import(&s, &[upstream()]);
        assert_eq!(verdict(&s), Some("affected"));
        import(
            &s,
            &[debian("12", "38.0.4-3+deb12u1", "2024-01-01T00:00:00Z")],
        );
        assert_eq!(verdict(&s), Some("fixed-by-distro"));
        // A newer Debian record moving the fix later turns it back.
        import(
            &s,
            &[debian("12", "38.0.4-3+deb12u2", "2024-02-01T00:00:00Z")],
        );
        assert_eq!(verdict(&s), Some("affected"));
        // The CVE names both records.
        let ids: Vec<String> = s
            .advisory("CVE-2023-23931")
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["DEBIAN-CVE-2023-23931", "PYSEC-2023-11"]);
    }

    #[test]
    fn new_packages_are_matched_against_stored_advisories() {
        let s = SqliteStore::in_memory().unwrap();
        import(&s, &[upstream()]);
        let pass = refresh(&s, &MatchScope::Unmatched).unwrap();
        assert_eq!(pass, Pass::default(), "nothing to match yet");
        let with_package = store(false);
        import(&with_package, &[upstream()]);
        // The same package arriving after the import is matched by the
        // Unmatched pass alone.
        let sbom = with_package.sboms(None).unwrap().remove(0);
        let sbom = SbomRecord {
            sha256: "y".into(),
            ..sbom
        };
        s.put_sbom(&sbom).unwrap();
        let pass = refresh(&s, &MatchScope::Unmatched).unwrap();
        assert_eq!(pass.matches, 1);
        assert_eq!(
            s.sboms(None).unwrap()[0].packages[0].advisories,
            ["PYSEC-2023-11"]
        );
    }
}
