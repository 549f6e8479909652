//! Exposure: which processes have a package, and how strongly the evidence
//! shows it. The store finds the pieces of evidence ([`Evidence`]); this
//! module ranks them and merges them into one `v1::Match` per process and
//! package, for package queries, advisory queries and findings alike.
//!
//! **Invariant:** evidence meaning (ranking, what "loaded" is, merging) is
//! decided here only, never in a store backend.

use std::collections::{HashMap, HashSet, hash_map::Entry};

use patchgap_proto::v1;

use crate::store::{Evidence, PackageName, PageLimit, ProcessCursor, Result, Store};

/// What `find_package` looks for.
pub struct PackageQuery<'a> {
    /// Compared by the ecosystem's key; a deb or rpm source package name
    /// also matches.
    pub name: &'a str,
    /// Only packages of this ecosystem (a purl type), when set.
    pub ecosystem: Option<&'a str>,
    /// Only packages with this source (a Maven groupId from a purl).
    pub source: Option<&'a str>,
    /// Whether a package's version qualifies: (ecosystem, version).
    pub version_ok: &'a dyn Fn(&str, &str) -> bool,
    /// (since, until) ms: every process that had the package at any time in
    /// the window, exited ones included. None: the running processes.
    pub window: Option<(i64, i64)>,
}

/// What `findings` looks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingsQuery {
    /// Only these advisories (ids); None for every one.
    pub advisories: Option<Vec<String>>,
    /// (since, until) ms, as in [`PackageQuery::window`]; None: running
    /// processes.
    pub window: Option<(i64, i64)>,
    /// Include matches a distro backport fixed.
    pub include_fixed: bool,
}

/// How strongly a match's evidence shows the process uses the package: the
/// executable itself, a mapping, a module compiled in, an open, and last a
/// package merely installed where the process would find it.
pub fn evidence_rank(evidence: &str) -> u8 {
    match evidence {
        "exe" => 5,
        "mapped" => 4,
        "embedded" => 3,
        "opened" => 2,
        "installed" => 1,
        // "declared": an image SBOM lists it; nothing on the host shows it.
        _ => 0,
    }
}

/// Evidence that the process loaded the package, as `--evidence loaded`
/// means it: everything but "installed" and "declared".
pub fn evidence_loaded(evidence: &str) -> bool {
    matches!(evidence, "exe" | "mapped" | "embedded" | "opened")
}

/// One page of matches: each process's matches (never split across
/// pages), in cursor order, and where the next page starts (None: no
/// more).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchPage {
    pub processes: Vec<(ProcessCursor, Vec<v1::Match>)>,
    pub next: Option<ProcessCursor>,
}

impl MatchPage {
    /// The matches of every process of the page, in order.
    pub fn matches(self) -> Vec<v1::Match> {
        self.processes.into_iter().flat_map(|(_, m)| m).collect()
    }
}

/// Runs `page` from the start until it says there is no more: the whole
/// answer at once (tests and small fleets; the API pages).
fn all_pages(
    mut page: impl FnMut(Option<&ProcessCursor>) -> Result<MatchPage>,
) -> Result<Vec<v1::Match>> {
    let mut out = Vec::new();
    let mut after: Option<ProcessCursor> = None;
    loop {
        let p = page(after.as_ref())?;
        let next = p.next.clone();
        out.extend(p.matches());
        match next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// The package rows a package query names.
fn named_packages(store: &dyn Store, q: &PackageQuery<'_>) -> Result<Vec<(i64, v1::Package)>> {
    Ok(store
        .packages_named(&PackageName { name: q.name })?
        .into_iter()
        .filter(|(_, p)| q.ecosystem.is_none_or(|e| p.ecosystem == e))
        .filter(|(_, p)| q.source.is_none_or(|s| p.source == s))
        .filter(|(_, p)| (q.version_ok)(&p.ecosystem, &p.version))
        .collect())
}

/// The processes that have a package the query names, one match per
/// process and package identity, ordered by host and pid.
pub fn find_package(store: &dyn Store, q: &PackageQuery<'_>) -> Result<Vec<v1::Match>> {
    all_pages(|after| find_package_page(store, q, after, PageLimit::ALL))
}

/// One page of [`find_package`].
pub fn find_package_page(
    store: &dyn Store,
    q: &PackageQuery<'_>,
    after: Option<&ProcessCursor>,
    limit: PageLimit,
) -> Result<MatchPage> {
    let packages = named_packages(store, q)?;
    let page = merge_page(store, &packages, q.window, after, limit)?;
    Ok(MatchPage {
        processes: page
            .processes
            .into_iter()
            .map(|(c, ms)| (c, ms.into_iter().map(|(_, m)| m).collect()))
            .collect(),
        next: page.next,
    })
}

/// The verdicts a findings query looks at, by package, with the package
/// rows: what every page of one listing shares (bounded by advisories
/// and packages, not by processes).
#[derive(Debug, Default)]
pub struct FindingsIndex {
    by_package: HashMap<i64, Vec<crate::store::Verdict>>,
    packages: Vec<(i64, v1::Package)>,
}

impl FindingsIndex {
    pub fn load(store: &dyn Store, q: &FindingsQuery) -> Result<FindingsIndex> {
        let mut by_package: HashMap<i64, Vec<crate::store::Verdict>> = HashMap::new();
        for v in store.verdicts(q.advisories.as_deref(), q.include_fixed)? {
            by_package.entry(v.package_id).or_default().push(v);
        }
        let mut ids: Vec<i64> = by_package.keys().copied().collect();
        ids.sort_unstable();
        let packages = store.packages_by_id(&ids)?;
        Ok(FindingsIndex {
            by_package,
            packages,
        })
    }
}

/// The processes with a package an advisory affects (from the matcher's
/// stored verdicts), one match per process, package and advisory, with
/// `advisory`, `severity`, `score` and `status` set.
pub fn findings(store: &dyn Store, q: &FindingsQuery) -> Result<Vec<v1::Match>> {
    let index = FindingsIndex::load(store, q)?;
    all_pages(|after| findings_page(store, &index, q.window, after, PageLimit::ALL))
}

/// One page of [`findings`], with the index loaded once for the listing.
pub fn findings_page(
    store: &dyn Store,
    index: &FindingsIndex,
    window: Option<(i64, i64)>,
    after: Option<&ProcessCursor>,
    limit: PageLimit,
) -> Result<MatchPage> {
    let page = merge_page(store, &index.packages, window, after, limit)?;
    let mut out = MatchPage {
        processes: Vec::with_capacity(page.processes.len()),
        next: page.next,
    };
    for (cursor, merged) in page.processes {
        let mut found = Vec::new();
        for (package_ids, m) in merged {
            // Per advisory: affected if any contributing package row is.
            let mut per_advisory: Vec<&crate::store::Verdict> = Vec::new();
            for id in &package_ids {
                for v in index.by_package.get(id).into_iter().flatten() {
                    match per_advisory
                        .iter_mut()
                        .find(|p| p.advisory_id == v.advisory_id)
                    {
                        Some(p) if v.status == "affected" => *p = v,
                        Some(_) => {}
                        None => per_advisory.push(v),
                    }
                }
            }
            per_advisory.sort_by(|a, b| {
                (&a.advisory_id, &a.severity, &a.status).cmp(&(
                    &b.advisory_id,
                    &b.severity,
                    &b.status,
                ))
            });
            for v in per_advisory {
                let mut f = m.clone();
                f.score = v.score;
                f.vector = v.vector.clone();
                f.advisory = v.advisory_id.clone();
                f.severity = v.severity.clone();
                f.status = v.status.clone();
                found.push(f);
            }
        }
        if !found.is_empty() {
            out.processes.push((cursor, found));
        }
    }
    Ok(out)
}

/// One row per process and package, even when several advisories (an id
/// and its aliases' records) match it: an `affected` verdict wins over
/// `fixed-by-distro`.
pub fn one_per_package(matches: Vec<v1::Match>) -> Vec<v1::Match> {
    type Key = (String, Option<v1::ProcessKey>, String, String, String);
    let mut out: Vec<v1::Match> = Vec::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    for m in matches {
        let p = m.package.clone().unwrap_or_default();
        match index.entry((m.host_id.clone(), m.key, p.purl, p.name, p.version)) {
            Entry::Occupied(e) => {
                let o = &mut out[*e.get()];
                if o.status != "affected" && m.status == "affected" {
                    *o = m;
                }
            }
            Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(m);
            }
        }
    }
    out
}

/// The identity two package rows share when they are one package to a
/// responder (the same package seen with and without a distro record).
fn identity(p: &v1::Package) -> (String, String, String) {
    (
        p.ecosystem.clone(),
        crate::store::package_key(&p.ecosystem, &p.name),
        p.version.clone(),
    )
}

/// A page of the store's evidence for `packages`, each process's merged
/// into one match per package identity, with the ids of the package rows
/// that contributed. The strongest evidence names the match; a stale path
/// makes it stale; an SBOM declaration adds its image and chain.
type Merged = Vec<(Vec<i64>, v1::Match)>;

struct MergedPage {
    processes: Vec<(ProcessCursor, Merged)>,
    next: Option<ProcessCursor>,
}

fn merge_page(
    store: &dyn Store,
    packages: &[(i64, v1::Package)],
    window: Option<(i64, i64)>,
    after: Option<&ProcessCursor>,
    limit: PageLimit,
) -> Result<MergedPage> {
    if packages.is_empty() {
        return Ok(MergedPage {
            processes: Vec::new(),
            next: None,
        });
    }
    let ids: Vec<i64> = packages.iter().map(|(id, _)| *id).collect();
    let by_id: HashMap<i64, &v1::Package> = packages.iter().map(|(id, p)| (*id, p)).collect();
    let page = store.evidence_page(&ids, window, after, limit)?;
    let processes = page
        .processes
        .into_iter()
        .map(|(cursor, evidence)| (cursor, merge(&by_id, evidence)))
        .filter(|(_, m)| !m.is_empty())
        .collect();
    Ok(MergedPage {
        processes,
        next: page.next,
    })
}

/// One process's evidence merged into one match per package identity.
fn merge(by_id: &HashMap<i64, &v1::Package>, evidence: Vec<Evidence>) -> Merged {
    let mut matches: Merged = Vec::new();
    // package identity → index in `matches`.
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    // (package id, path, evidence) already listed.
    let mut seen: HashSet<(i64, Vec<u8>, String)> = HashSet::new();
    for Evidence {
        package_id,
        holder,
        path,
        sbom,
        ..
    } in evidence
    {
        let Some(package) = by_id.get(&package_id) else {
            continue;
        };
        if !seen.insert((package_id, path.path.clone(), path.evidence.clone())) {
            continue;
        }
        let i = *index.entry(identity(package)).or_insert_with(|| {
            let mut m = std::sync::Arc::unwrap_or_clone(holder);
            m.package = Some((*package).clone());
            m.evidence = path.evidence.clone();
            matches.push((Vec::new(), m));
            matches.len() - 1
        });
        let (ids, m) = &mut matches[i];
        if !ids.contains(&package_id) {
            ids.push(package_id);
        }
        match sbom {
            Some((image, chain)) => {
                if m.sbom_image.is_empty() {
                    m.sbom_image = image;
                    m.pulled_in_by = chain;
                }
                // One declaration per document reference, whichever
                // package row of the identity it came through.
                if m.paths.iter().any(|p| p.path == path.path) {
                    continue;
                }
            }
            None => {
                m.stale |= path.stale;
                if evidence_rank(&path.evidence) > evidence_rank(&m.evidence) {
                    m.evidence = path.evidence.clone();
                }
            }
        }
        m.paths.push(path);
    }
    matches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks() {
        let order = [
            "declared",
            "installed",
            "opened",
            "embedded",
            "mapped",
            "exe",
        ];
        for w in order.windows(2) {
            assert!(evidence_rank(w[0]) < evidence_rank(w[1]), "{w:?}");
        }
        assert!(!evidence_loaded("installed"));
        assert!(!evidence_loaded("declared"));
        assert!(evidence_loaded("opened"));
    }
}
