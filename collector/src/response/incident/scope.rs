//! An incident's scope: the exposure answer for its subject, as
//! `patchgap query --advisory ID` and `patchgap query NAME@RANGE` give it
//! (the same `fleet::exposure` walk), folded into workloads, hosts, image
//! digests, pids per host, data scopes, privilege and the strongest
//! evidence. An advisory's scope leaves out matches a distro backport
//! fixed: those processes are not exposed.
//!
//! Bounded: the walk goes a page at a time and stops at
//! [`MAX_PROCESSES`] exposed processes (the scope then says `truncated`).

use std::collections::{BTreeMap, HashMap};

use patchgap_proto::v1;

use super::{Finding, Instance, Scope, Source};
use crate::{
    advisories::version::Constraint,
    ecosystem::purl_order,
    fleet::{
        exposure::{self, FindingsQuery, MatchPage, PackageQuery, evidence_rank},
        scope::Rule,
        workloads,
    },
    store::{PageLimit, ProcessCursor, Store, StoreError, WorkloadRow},
};

/// The most processes one scope lists. Past it the scope is cut and says
/// so; the responder narrows the incident (a host, a range).
pub const MAX_PROCESSES: usize = 10_000;

/// One page of the walk: processes per page and rows looked at.
const PAGE: PageLimit = PageLimit {
    items: 1_000,
    scan: 100_000,
};

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("no advisory is known as {0}: import it with `patchgap advisories import`")]
    UnknownAdvisory(String),
    #[error("bad package range {spec:?}: {reason}")]
    BadRange { spec: String, reason: String },
    #[error("no egress alert {0} (patchgap alerts lists them)")]
    UnknownAlert(String),
    #[error("an incident from {0} has no exposure query to scope it yet")]
    NoQuery(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stored ids of the advisories an id or alias names, sorted: the
/// first is the incident's canonical id, whichever of them was typed.
pub fn advisory_ids(store: &dyn Store, id_or_alias: &str) -> Result<Vec<String>, ScopeError> {
    let mut ids: Vec<String> = store
        .advisory(id_or_alias)?
        .into_iter()
        .map(|a| a.id)
        .collect();
    if ids.is_empty() {
        return Err(ScopeError::UnknownAdvisory(id_or_alias.to_string()));
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The scope of `source` now, with the fleet's workloads named under the
/// data-scope mapping `rules`.
pub fn compute(store: &dyn Store, source: &Source, rules: &[Rule]) -> Result<Scope, ScopeError> {
    // Each instance's fleet workload: key, image, scope, privilege.
    let rows = store.workloads()?;
    let summaries = workloads::summarize(&rows, rules);
    let by_key: HashMap<&str, &v1::WorkloadSummary> =
        summaries.iter().map(|s| (s.key.as_str(), s)).collect();
    let by_instance: HashMap<(String, String), (&WorkloadRow, &v1::WorkloadSummary)> = rows
        .iter()
        .filter_map(|r| {
            let s = by_key.get(workloads::key(r).as_str())?;
            Some(((r.host_id.clone(), r.workload.id.clone()), (r, *s)))
        })
        .collect();

    let mut fold = Fold {
        scope: Scope::default(),
        by_instance: &by_instance,
        host: None,
        instances: BTreeMap::new(),
    };
    if let Source::Advisory { host, .. } = source {
        fold.host = host.as_deref();
    }
    if let Source::EgressAlert { alert } = source {
        // The alert's workload: every running instance of it (all
        // replicas, on every host), whatever they load.
        let id: i64 = alert
            .trim_start_matches("EGR-")
            .parse()
            .map_err(|_| ScopeError::UnknownAlert(alert.clone()))?;
        let record = store
            .egress_alert(id)?
            .ok_or_else(|| ScopeError::UnknownAlert(alert.clone()))?;
        // A host executable's baseline key is its host's key and the
        // executable; the instance is the host's.
        let key = record
            .workload
            .split_once("/exe:")
            .map_or(record.workload.as_str(), |(k, _)| k);
        for row in rows.iter().filter(|r| workloads::key(r) == key) {
            let m = v1::Match {
                host: row.host.clone(),
                host_id: row.host_id.clone(),
                workload: row.workload.id.clone(),
                ..Default::default()
            };
            let found = by_instance
                .get(&(row.host_id.clone(), row.workload.id.clone()))
                .copied();
            let s = &mut fold.scope;
            s.processes += row.processes;
            s.hosts.insert(row.host.clone());
            s.workloads.insert(key.to_string());
            if let Some((_, w)) = found {
                if !w.image_digest.is_empty() {
                    s.image_digests.insert(w.image_digest.clone());
                }
                if let Some(scope) = &w.scope
                    && !scope.classification.is_empty()
                {
                    s.data_scopes.insert(scope.classification.clone());
                }
                s.privileged |= w.privileged;
            }
            let host_key = if row.host_id.is_empty() {
                row.host.clone()
            } else {
                row.host_id.clone()
            };
            fold.instances.insert(
                (host_key.clone(), row.workload.id.clone()),
                new_instance(&m, host_key, found),
            );
        }
    } else {
        walk_source(store, source, &mut |matches| {
            if fold.scope.processes as usize >= MAX_PROCESSES {
                fold.scope.truncated = true;
                return false;
            }
            fold.process(matches);
            true
        })?;
    }
    let mut scope = fold.scope;
    scope.instances = fold.instances.into_values().collect();
    Ok(scope)
}

/// Every exposed process of `source`'s answer, its matches at a time, in
/// pages, until `visit` says stop (returns false) or the answer ends.
/// What the scope folds, and what `verify` checks process by process
/// (evidence, stale mappings) without the fold.
pub fn walk_source(
    store: &dyn Store,
    source: &Source,
    visit: &mut dyn FnMut(&[v1::Match]) -> bool,
) -> Result<(), ScopeError> {
    match source {
        Source::Advisory { id, .. } => {
            let ids = advisory_ids(store, id)?;
            let index = exposure::FindingsIndex::load(
                store,
                &FindingsQuery {
                    advisories: Some(ids),
                    window: None,
                    include_fixed: false,
                },
            )?;
            walk(visit, |after| {
                exposure::findings_page(store, &index, None, after, PAGE)
            })?;
        }
        Source::Package {
            package,
            name,
            ecosystem,
            group,
            range,
        } => {
            let range: Option<Constraint> = match range {
                Some(r) => Some(r.parse::<Constraint>().map_err(|e| ScopeError::BadRange {
                    spec: format!("{package}@{r}"),
                    reason: format!("{e}"),
                })?),
                None => None,
            };
            let version_ok = |eco: &str, v: &str| {
                range
                    .as_ref()
                    .is_none_or(|c| c.matches_in(v, purl_order(eco)))
            };
            let query = PackageQuery {
                name,
                ecosystem: ecosystem.as_deref(),
                source: group.as_deref(),
                version_ok: &version_ok,
                window: None,
            };
            walk(visit, |after| {
                exposure::find_package_page(store, &query, after, PAGE)
            })?;
        }
        Source::PolicyRule { .. } => return Err(ScopeError::NoQuery("a policy rule")),
        // An alert's scope is its workload's instances, not an answer
        // (`compute` takes it from the workload rows).
        Source::EgressAlert { .. } => return Err(ScopeError::NoQuery("an egress alert")),
    }
    Ok(())
}

/// An instance as its workload row describes it (or, for a process whose
/// row is gone, as its match does).
fn new_instance(
    m: &v1::Match,
    host_key: String,
    found: Option<(&WorkloadRow, &v1::WorkloadSummary)>,
) -> Instance {
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    match found {
        Some((row, w)) => Instance {
            host: m.host.clone(),
            host_key,
            workload: w.key.clone(),
            instance: m.workload.clone(),
            cgroup: row.workload.cgroup.clone(),
            unit: nonempty(&row.workload.unit),
            namespace: nonempty(&w.namespace),
            cluster: nonempty(&w.cluster),
            labels: row
                .workload
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            data_scope: w.scope.as_ref().and_then(|s| nonempty(&s.classification)),
            privileged: w.privileged,
            processes: row.processes,
            ..Instance::default()
        },
        None => Instance {
            host: m.host.clone(),
            host_key,
            workload: format!("{}/{}", m.host, m.workload),
            instance: m.workload.clone(),
            ..Instance::default()
        },
    }
}

/// The purl's type: `pkg:pypi/x@1` is `pypi`.
fn purl_type(purl: &str) -> Option<&str> {
    purl.strip_prefix("pkg:")?.split('/').next()
}

/// Walks pages until the answer ends or `visit` says stop.
fn walk(
    visit: &mut dyn FnMut(&[v1::Match]) -> bool,
    mut page: impl FnMut(Option<&ProcessCursor>) -> crate::store::Result<MatchPage>,
) -> Result<(), ScopeError> {
    let mut after: Option<ProcessCursor> = None;
    loop {
        let p = page(after.as_ref())?;
        for (_, matches) in p.processes {
            if !visit(&matches) {
                return Ok(());
            }
        }
        match p.next {
            Some(n) => after = Some(n),
            None => return Ok(()),
        }
    }
}

struct Fold<'a> {
    scope: Scope,
    by_instance: &'a HashMap<(String, String), (&'a WorkloadRow, &'a v1::WorkloadSummary)>,
    /// Only this host (by name or host id).
    host: Option<&'a str>,
    /// By host key and instance id.
    instances: BTreeMap<(String, String), Instance>,
}

impl Fold<'_> {
    /// Adds one process's matches (all of one process: a page never
    /// splits them).
    fn process(&mut self, matches: &[v1::Match]) {
        let mut counted = false;
        for m in matches {
            if self.host.is_some_and(|h| m.host != h && m.host_id != h) {
                continue;
            }
            let s = &mut self.scope;
            if !counted {
                s.processes += 1;
                counted = true;
            }
            s.hosts.insert(m.host.clone());
            if let Some(k) = m.key {
                s.pids.entry(m.host.clone()).or_default().insert(k.pid);
            }
            let host_key = if m.host_id.is_empty() {
                m.host.clone()
            } else {
                m.host_id.clone()
            };
            let found = self
                .by_instance
                .get(&(m.host_id.clone(), m.workload.clone()));
            match found {
                Some((_, w)) => {
                    s.workloads.insert(w.key.clone());
                    if !w.image_digest.is_empty() {
                        s.image_digests.insert(w.image_digest.clone());
                    }
                    if let Some(scope) = &w.scope
                        && !scope.classification.is_empty()
                    {
                        s.data_scopes.insert(scope.classification.clone());
                    }
                    s.privileged |= w.privileged;
                }
                // A process whose workload row is gone (it just exited):
                // its instance on its host.
                None => {
                    s.workloads.insert(format!("{}/{}", m.host, m.workload));
                }
            }
            let instance = self
                .instances
                .entry((host_key.clone(), m.workload.clone()))
                .or_insert_with(|| new_instance(m, host_key, found.copied()));
            if let Some(k) = m.key {
                instance.pids.insert(k.pid);
            }
            instance.root |= m.uid == 0 || m.privilege.as_ref().is_some_and(|p| p.euid0);
            if let Some(p) = &m.package {
                let purl = if p.purl.is_empty() {
                    format!("{}@{}", p.name, p.version)
                } else {
                    p.purl.clone()
                };
                let finding = Finding {
                    advisory: m.advisory.clone(),
                    severity: m.severity.to_ascii_lowercase(),
                    score_x10: m.score.map(|s| (s * 10.0).round().clamp(0.0, 100.0) as u32),
                    ecosystem: purl_type(&purl).unwrap_or(&p.ecosystem).to_string(),
                    purl,
                    evidence: m.evidence.clone(),
                };
                // One finding per advisory and package: the strongest
                // evidence among the instance's processes.
                let weaker = instance
                    .findings
                    .iter()
                    .find(|f| f.advisory == finding.advisory && f.purl == finding.purl)
                    .cloned();
                match weaker {
                    Some(old)
                        if evidence_rank(&old.evidence) >= evidence_rank(&finding.evidence) => {}
                    Some(old) => {
                        instance.findings.remove(&old);
                        instance.findings.insert(finding);
                    }
                    None => {
                        instance.findings.insert(finding);
                    }
                }
            }
            if !m.sbom_image.is_empty() {
                s.image_digests.insert(m.sbom_image.clone());
            }
            if s.evidence.is_empty() || evidence_rank(&m.evidence) > evidence_rank(&s.evidence) {
                s.evidence = m.evidence.clone();
            }
            if let Some(p) = &m.package {
                s.packages.insert(if p.purl.is_empty() {
                    format!("{}@{}", p.name, p.version)
                } else {
                    p.purl.clone()
                });
            }
        }
    }
}
