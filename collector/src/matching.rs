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
    advisories::{affects, distro_matches, lookup_name, purl_type},
    osv::{Advisory, Affected, import::parse_file},
    store::{AdvisoryMatch, AdvisoryRecord, MatchScope, Result, Store, package_key},
    version::Ecosystem,
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
pub fn refresh(store: &mut dyn Store, scope: &MatchScope) -> Result<Pass> {
    let candidates = store.match_candidates(scope)?;
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
    store.put_matches(scope, &out)?;
    Ok(pass)
}

/// The advisory `id` and its parsed document; None when it is withdrawn
/// (it affects nothing) or no longer parses.
fn load(store: &mut dyn Store, id: &str) -> Result<Option<(AdvisoryRecord, Advisory)>> {
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
    adv.affected.iter().any(|af| names(af, p) && affects_entry(af, p))
}

/// Whether an affected entry names this package (ecosystem, and name or
/// source; an OS package's distribution and release too).
pub fn names(af: &Affected, p: &v1::Package) -> bool {
    {
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
                    || (matches!(ty, "deb" | "rpm" | "apk") && p.source == name)
            }
        };
        named && (!matches!(ty, "deb" | "rpm" | "apk") || distro_matches(&p.purl, &ap.ecosystem))
    }
}

/// Whether the package's version is inside the entry's ranges or list, in
/// its ecosystem's order. (OSV's evaluation is per entry: an advisory
/// affects a version when any entry naming the package does.)
pub fn affects_entry(af: &Affected, p: &v1::Package) -> bool {
    affects(af, &p.version, Ecosystem::from_purl_type(&p.ecosystem))
}

/// Distro advisories by the upstream advisory id they share an alias with.
type DistroAdvisories = HashMap<String, Vec<Advisory>>;

/// "affected" or "fixed-by-distro" for a package the advisory affects.
fn status(
    store: &mut dyn Store,
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
fn distro_advisories(store: &mut dyn Store, rec: &AdvisoryRecord) -> Result<Vec<Advisory>> {
    let mut out: Vec<Advisory> = Vec::new();
    for name in std::iter::once(&rec.id).chain(&rec.aliases) {
        for other in store.advisory(name)? {
            if other.id == rec.id
                || other.withdrawn.is_some()
                || out.iter().any(|a| a.id == other.id)
                || !other
                    .packages
                    .iter()
                    .any(|(ty, _, _)| matches!(ty.as_str(), "deb" | "rpm" | "apk"))
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
pub fn related(store: &mut dyn Store, changed: &[AdvisoryRecord]) -> Result<Vec<String>> {
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
