//! One verification pass through the store: for each incident being
//! verified, read the facts, run the checks, and append the run and what
//! the gate decides; for each closed incident, look for a regression and
//! reopen it. Also the two responder writes of this stage: a forced close
//! and a retired host.

use std::collections::HashMap;

use patchgap_proto::v1;
use tracing::warn;

use super::{
    Run, Settings,
    check::{self, ConnectionFact, Facts, HostFact, ProcessFact},
    gate,
};
use crate::{
    fleet::{ingest::Ingest, scope::Rule},
    response::{
        Policy,
        incident::{
            Event, Incident, IncidentError, Source, State, display_id,
            log::{self, COLLECTOR, LogError},
            scope::{self, MAX_PROCESSES, ScopeError},
        },
    },
    store::{HostRow, Store, WorkloadRow},
};

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Passed {
    /// Incidents checked (being verified).
    pub checked: usize,
    /// Events appended.
    pub events: usize,
    /// Containment actions the gate lifted: the desired set must be
    /// published again.
    pub lifted: usize,
    pub closed: usize,
    pub reopened: usize,
    /// Incidents that could not be checked (logged).
    pub failed: usize,
}

/// The fleet's workload rows and their summaries under the data-scope
/// mapping, read once per pass and shared by every incident it checks:
/// reading and summarizing every row is the costly part of the facts, and
/// it does not depend on the incident.
pub struct Workloads {
    rows: Vec<WorkloadRow>,
    summaries: Vec<v1::WorkloadSummary>,
    /// (host id, instance id) -> (its row, its fleet workload's summary),
    /// as indexes into `rows` and `summaries`.
    by_instance: HashMap<(String, String), (usize, usize)>,
}

impl Workloads {
    /// Reads the workload rows and places each instance in its fleet
    /// workload under `rules` (as the scope is).
    pub fn read(store: &dyn Store, rules: &[Rule]) -> Result<Workloads, LogError> {
        let rows = store.workloads()?;
        let summaries = crate::fleet::workloads::summarize(&rows, rules);
        let by_key: HashMap<&str, usize> = summaries
            .iter()
            .enumerate()
            .map(|(n, s)| (s.key.as_str(), n))
            .collect();
        let by_instance = rows
            .iter()
            .enumerate()
            .filter_map(|(n, r)| {
                let s = by_key.get(crate::fleet::workloads::key(r).as_str())?;
                Some(((r.host_id.clone(), r.workload.id.clone()), (n, *s)))
            })
            .collect();
        Ok(Workloads {
            rows,
            summaries,
            by_instance,
        })
    }

    /// An instance's own row (its image digest and namespace: one replica
    /// may run an old image) and its fleet workload.
    fn placed(
        &self,
        host_id: &str,
        instance: &str,
    ) -> Option<(&v1::Workload, &v1::WorkloadSummary)> {
        let (row, summary) = self
            .by_instance
            .get(&(host_id.to_string(), instance.to_string()))?;
        Some((&self.rows[*row].workload, &self.summaries[*summary]))
    }
}

/// The facts the checks of `incident` need, read from the store now,
/// with each process placed in its fleet workload under the data-scope
/// mapping `rules` (as the scope is): the exposure walk gives only the
/// agent's instance id, and without the placement the digest check and
/// the graph would see no image digest, namespace or data scope. For one
/// incident (the API's graph and evidence); a pass reads the workloads
/// once and calls [`facts_with`] for each incident.
pub fn facts(
    store: &dyn Store,
    incident: &Incident,
    rules: &[Rule],
    now_ms: i64,
) -> Result<Facts, LogError> {
    facts_with(store, incident, &Workloads::read(store, rules)?, now_ms)
}

/// [`facts`] with the workloads already read.
pub fn facts_with(
    store: &dyn Store,
    incident: &Incident,
    workloads: &Workloads,
    now_ms: i64,
) -> Result<Facts, LogError> {
    let mut out = Facts {
        now_ms,
        ..Facts::default()
    };
    let host_filter = match &incident.source {
        Source::Advisory { host, .. } => host.clone(),
        _ => None,
    };
    let mut count = 0usize;
    let walked = scope::walk_source(store, &incident.source, &mut |matches| {
        if count >= MAX_PROCESSES {
            out.truncated = true;
            return false;
        }
        count += 1;
        for m in matches {
            if host_filter
                .as_deref()
                .is_some_and(|h| m.host != h && m.host_id != h)
            {
                continue;
            }
            if m.exit_time_ms > 0 {
                continue;
            }
            let placed = workloads.placed(&m.host_id, &m.workload);
            let w = m
                .workload_detail
                .clone()
                .or_else(|| placed.map(|(_, s)| s.clone()))
                .unwrap_or_default();
            let (namespace, image_digest) = match placed {
                Some((instance, _)) if !instance.image_digest.is_empty() => {
                    (instance.namespace.clone(), instance.image_digest.clone())
                }
                _ => (w.namespace.clone(), w.image_digest.clone()),
            };
            let pkg = m.package.clone().unwrap_or_default();
            let scope = w.scope.clone().unwrap_or_default();
            let provenance = w
                .provenance
                .as_ref()
                .map(|p| {
                    [
                        ("revision", &p.revision),
                        ("source", &p.source),
                        ("created", &p.created),
                    ]
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect()
                })
                .unwrap_or_default();
            out.processes.push(ProcessFact {
                host: m.host.clone(),
                pid: m.key.map_or(0, |k| k.pid),
                exe: String::from_utf8_lossy(&m.exe).into_owned(),
                workload: m.workload.clone(),
                namespace,
                image_digest,
                purl: if pkg.purl.is_empty() {
                    format!("{}@{}", pkg.name, pkg.version)
                } else {
                    pkg.purl
                },
                evidence: m.evidence.clone(),
                stale: m.stale,
                sbom_image: m.sbom_image.clone(),
                advisory: m.advisory.clone(),
                pulled_in_by: m.pulled_in_by.clone(),
                workload_key: w.key.clone(),
                data_scope: scope.classification,
                writes_to: scope.writes_to,
                provenance,
            });
        }
        true
    });
    match walked {
        Ok(()) => {}
        Err(ScopeError::NoQuery(what)) => out.no_query = Some(what.to_string()),
        Err(e) => return Err(e.into()),
    }
    let rows = store.hosts()?;
    let by_name: HashMap<&str, &HostRow> = rows
        .iter()
        .map(|h| (h.identity.hostname.as_str(), h))
        .collect();
    let mut names = incident.hosts_seen.clone();
    names.extend(incident.scope.hosts.iter().cloned());
    for p in &out.processes {
        names.insert(p.host.clone());
    }
    for name in names {
        if incident.hosts_retired.contains(&name) {
            continue;
        }
        out.hosts.push(match by_name.get(name.as_str()) {
            Some(h) => HostFact {
                name,
                known: true,
                last_seen_ms: h.last_seen_ms,
                last_full_scan_ms: h.last_full_scan_ms,
                ebpf: h.capabilities.ebpf,
                ebpf_reason: h.capabilities.ebpf_reason.clone(),
                lost_events: h.sense.lost_kernel + h.sense.lost_user + h.sense.dropped,
            },
            None => HostFact {
                name,
                ..HostFact::default()
            },
        });
    }
    gate_instances(store, incident, workloads, &mut out)?;
    // Connections of the isolated workloads' hosts since isolation.
    let mut since: HashMap<&str, i64> = HashMap::new();
    for a in &incident.actions {
        if a.times.applied == 0 {
            continue;
        }
        for t in &a.planned.targets {
            let e = since.entry(t.host.as_str()).or_insert(a.times.applied);
            *e = (*e).min(a.times.applied);
        }
    }
    for (host, since_ms) in since {
        for c in store.connections(Some(host), since_ms)? {
            out.connections.push(ConnectionFact {
                host: c.host,
                workload: c.workload,
                pid: c.key.map_or(0, |k| k.pid),
                remote: c.remote_addr,
                port: c.remote_port,
                last_seen_ms: c.last_seen_ms,
                last_result: c.last_result,
            });
        }
    }
    Ok(out)
}

/// While a `block_new_artifacts_with_package` action is in force: the
/// workload instances running a digest it blocks, each with its first
/// start from the store's history (at most [`check::MAX_INSTANCES`]).
fn gate_instances(
    store: &dyn Store,
    incident: &Incident,
    workloads: &Workloads,
    out: &mut Facts,
) -> Result<(), LogError> {
    let blocking = incident.actions.iter().any(|a| {
        a.planned.kind == crate::response::ActionKind::BlockNewArtifactsWithPackage
            && check::gate_since(a).is_some()
    });
    if !blocking {
        return Ok(());
    }
    let blocked = check::blocked_digests(incident, out);
    if blocked.is_empty() {
        return Ok(());
    }
    for w in &workloads.rows {
        if out.instances.len() >= check::MAX_INSTANCES {
            break;
        }
        if !blocked.contains(&w.workload.image_digest) {
            continue;
        }
        let first = store
            .instance_first_start(&w.host_id, &w.workload.id)?
            .unwrap_or(0);
        out.instances.push(check::InstanceFact {
            host: w.host.clone(),
            instance: w.workload.id.clone(),
            namespace: w.workload.namespace.clone(),
            image_digest: w.workload.image_digest.clone(),
            first_start_ms: first,
        });
    }
    Ok(())
}

/// The checks of one incident now (what `incident verify` would record).
pub fn check_now(
    store: &dyn Store,
    incident: &Incident,
    settings: &Settings,
    rules: &[Rule],
    now_ms: i64,
) -> Result<Run, LogError> {
    let workloads = Workloads::read(store, rules)?;
    check_with_policy(store, 0, incident, settings, &workloads, None, now_ms)
}

/// [`check_now`] with the policy in force, which says how the gate
/// answers the incident's block (`admission`).
fn check_with_policy(
    store: &dyn Store,
    id: i64,
    incident: &Incident,
    settings: &Settings,
    workloads: &Workloads,
    policy: Option<&Policy>,
    now_ms: i64,
) -> Result<Run, LogError> {
    let mut f = facts_with(store, incident, workloads, now_ms)?;
    f.gate_admission = policy
        .and_then(|p| crate::response::gate::facts::blocker(id, incident, p))
        .and_then(|b| b.block)
        .map(|(admission, _)| admission);
    Ok(check::run_checks(incident, &f, settings))
}

/// One pass over the open incidents being verified (the newest
/// [`log::REFRESH_MAX`]) and the newest closed ones. The workloads are
/// read once, when the first incident needs its facts, and serve every
/// incident of the pass.
pub fn run_pass(
    ingest: &Ingest,
    settings: &Settings,
    rules: &[Rule],
    policy: &Policy,
    now_ms: i64,
) -> Result<Passed, LogError> {
    let store = ingest.store().as_ref();
    let mut out = Passed::default();
    let mut workloads: Option<Workloads> = None;
    for rec in store.incidents(None, false, log::REFRESH_MAX)? {
        let id = display_id(rec.id);
        let incident = match log::load(store, &rec) {
            Ok(i) => i,
            Err(error) => {
                warn!(%error, incident = %id, "cannot verify the incident");
                out.failed += 1;
                continue;
            }
        };
        let checkable = gate::checkable(&incident);
        if !checkable && (incident.state != State::Closed || incident.forced_close.is_some()) {
            continue;
        }
        let w = match &workloads {
            Some(w) => w,
            None => workloads.insert(Workloads::read(store, rules)?),
        };
        let done = if checkable {
            out.checked += 1;
            verify_one(ingest, rec.id, &incident, settings, w, policy, now_ms)
        } else {
            reopen_if_regressed(ingest, rec.id, &incident, settings, rules, w, now_ms)
        };
        match done {
            Ok(after) => {
                out.events += (after.last_seq - incident.last_seq).max(0) as usize;
                let lifted = |i: &Incident| {
                    i.actions
                        .iter()
                        .filter(|a| a.reason == gate::RESOLVED && a.times.reverted > 0)
                        .count()
                };
                out.lifted += lifted(&after).saturating_sub(lifted(&incident));
                if after.state == State::Closed && incident.state != State::Closed {
                    out.closed += 1;
                }
                if after.reopened > incident.reopened {
                    out.reopened += 1;
                }
            }
            Err(error) => {
                warn!(%error, incident = %id, "cannot verify the incident");
                out.failed += 1;
            }
        }
    }
    Ok(out)
}

fn verify_one(
    ingest: &Ingest,
    id: i64,
    incident: &Incident,
    settings: &Settings,
    workloads: &Workloads,
    policy: &Policy,
    now_ms: i64,
) -> Result<Incident, LogError> {
    let run = check_with_policy(
        ingest.store().as_ref(),
        id,
        incident,
        settings,
        workloads,
        Some(policy),
        now_ms,
    )?;
    log::append(ingest, id, COLLECTOR, now_ms, |cur| {
        gate::after_run(cur, &run, settings)
    })
}

fn reopen_if_regressed(
    ingest: &Ingest,
    id: i64,
    incident: &Incident,
    settings: &Settings,
    rules: &[Rule],
    workloads: &Workloads,
    now_ms: i64,
) -> Result<Incident, LogError> {
    let store = ingest.store().as_ref();
    let f = facts_with(store, incident, workloads, now_ms)?;
    let package = check::package(incident, &f, settings);
    let digest = check::digest(incident, &f);
    if gate::regression(incident, &package, &digest).is_none() {
        return Ok(incident.clone());
    }
    // Another incident opened under the same key since: that one
    // follows the exposure; this one stays closed.
    if store.open_incident_by_key(&incident.dedup_key)?.is_some() {
        return Ok(incident.clone());
    }
    let scope = scope::compute(store, &incident.source, rules)?;
    log::append(ingest, id, COLLECTOR, now_ms, |cur| {
        let Some(reopen) = gate::regression(cur, &package, &digest) else {
            return Ok(Vec::new());
        };
        let mut events = vec![reopen];
        events.extend(scope.change_from(&cur.scope));
        Ok(events)
    })
}

/// The operational gauges the store knows (lost events summed over hosts,
/// hosts not fresh within `fresh_after`); the caller adds what only it
/// knows (streams connected, the database's size on disk).
pub fn operational(
    store: &dyn Store,
    fresh_after: std::time::Duration,
    now_ms: i64,
) -> Result<super::metrics::Operational, LogError> {
    let hosts = store.hosts()?;
    let fresh_ms = fresh_after.as_millis() as i64;
    Ok(super::metrics::Operational {
        lost_events: hosts
            .iter()
            .map(|h| h.sense.lost_kernel + h.sense.lost_user + h.sense.dropped)
            .sum(),
        stale_hosts: hosts
            .iter()
            .filter(|h| now_ms - h.last_seen_ms > fresh_ms)
            .count() as u64,
        ..super::metrics::Operational::default()
    })
}

/// `patchgap incident close --force --reason TEXT`: lifts what is in
/// force and closes without evidence, for `actor`.
pub fn force_close(
    ingest: &Ingest,
    id: i64,
    actor: &str,
    reason: &str,
    now_ms: i64,
) -> Result<Incident, LogError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(LogError::Refused(IncidentError::ForceWithoutReason));
    }
    log::append(ingest, id, actor, now_ms, |cur| {
        gate::force_close(cur, reason)
    })
}

/// `patchgap hosts retire NAME`: the host is decommissioned on purpose,
/// so every open incident that covers it stops asking for its reports
/// (a `host_retired` event each). Returns the incidents changed.
pub fn retire_host(
    ingest: &Ingest,
    host: &str,
    actor: &str,
    reason: &str,
    now_ms: i64,
) -> Result<Vec<i64>, LogError> {
    let store = ingest.store().as_ref();
    let mut changed = Vec::new();
    for rec in store.incidents(None, true, log::REFRESH_MAX)? {
        let incident = log::load(store, &rec)?;
        let covers = incident.hosts_seen.contains(host) || incident.scope.hosts.contains(host);
        if !covers || incident.hosts_retired.contains(host) {
            continue;
        }
        log::append(ingest, rec.id, actor, now_ms, |cur| {
            Ok(if cur.hosts_retired.contains(host) {
                Vec::new()
            } else {
                vec![Event::HostRetired {
                    host: host.to_string(),
                    reason: reason.to_string(),
                }]
            })
        })?;
        changed.push(rec.id);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use patchgap_proto::v1;

    use super::*;
    use crate::{
        response::{
            incident::{Recorded, log::show},
            verify::Verdict,
        },
        store::{
            Session,
            conformance::{T0, deb, delta, exe, hello, hello_for, mapped, msg, process, snapshot},
            counting::Counting,
            sqlite::SqliteStore,
        },
    };

    const LIB: &str = "/usr/lib/x86_64-linux-gnu/libfoo.so.1";

    fn with_libfoo(pid: u32, version: &str, inode: u64) -> v1::Process {
        process(
            pid,
            vec![
                exe("/usr/bin/app", 100, Some(deb("app", "app", "1.0-1"))),
                mapped(LIB, inode, Some(deb("libfoo1", "foo", version))),
            ],
        )
    }

    fn libfoo_below_2() -> Source {
        Source::Package {
            package: "libfoo1".into(),
            name: "libfoo1".into(),
            ecosystem: None,
            group: None,
            range: Some("<2".into()),
        }
    }

    fn settings(k: u32) -> Settings {
        Settings {
            every: Duration::from_secs(1),
            streak: k,
            counted: vec!["loaded".into()],
            fresh_after: Duration::from_secs(90),
        }
    }

    struct Fleet {
        ingest: Ingest,
        alpha: Session,
        seq: u64,
    }

    impl Fleet {
        fn new(processes: Vec<v1::Process>) -> Fleet {
            Fleet::on(Arc::new(SqliteStore::in_memory().unwrap()), processes)
        }

        /// A fleet on `store`, with alpha running `processes`.
        fn on(store: Arc<dyn Store>, processes: Vec<v1::Process>) -> Fleet {
            let ingest = Ingest::new(store);
            let alpha = ingest.hello(&hello("s1"), T0).unwrap();
            ingest
                .apply(&alpha, &msg(1, snapshot("snap-1", processes, vec![])), T0)
                .unwrap();
            Fleet {
                ingest,
                alpha,
                seq: 1,
            }
        }

        /// An agent message from alpha at `at` (also its heartbeat).
        fn alpha(&mut self, started: Vec<v1::Process>, exited: &[u32], at: i64) {
            self.seq += 1;
            let d = delta(started, exited, vec![]);
            self.ingest
                .apply(&self.alpha, &msg(self.seq, d), at)
                .unwrap();
        }

        /// Opens the incident and moves it to `contained` (no action on
        /// hosts: what is under test is the checks and the gate).
        fn open_contained(&self, at: i64) -> i64 {
            self.open_contained_on(libfoo_below_2(), at)
        }

        /// [`Fleet::open_contained`] for an incident opened on `source`.
        fn open_contained_on(&self, source: Source, at: i64) -> i64 {
            let o = log::open(&self.ingest, source, "alice", &[], at).unwrap();
            log::append(&self.ingest, o.id, "alice", at, |i| {
                let planned = i.transition(State::Planned, "")?;
                Ok(vec![
                    planned,
                    Event::StateChanged {
                        from: State::Planned,
                        to: State::Contained,
                        reason: "test".into(),
                    },
                ])
            })
            .unwrap();
            o.id
        }

        fn pass(&self, k: u32, at: i64) -> Passed {
            run_pass(&self.ingest, &settings(k), &[], &Policy::builtin(), at).unwrap()
        }

        fn incident(&self, id: i64) -> Incident {
            show(self.ingest.store().as_ref(), id, 1000)
                .unwrap()
                .incident
        }

        fn events(&self, id: i64) -> Vec<Recorded> {
            show(self.ingest.store().as_ref(), id, 1000).unwrap().events
        }
    }

    fn blockers(i: &Incident) -> Vec<String> {
        i.verification.as_ref().unwrap().last.blockers()
    }

    /// A process with libfoo `version` installed on disk (its package's
    /// files are in the image or on the host) but not loaded: the agent's
    /// `installed` evidence.
    fn with_libfoo_installed(pid: u32, version: &str) -> v1::Process {
        let mut lib = mapped(
            "/usr/share/doc/libfoo1/copyright",
            400,
            Some(deb("libfoo1", "foo", version)),
        );
        lib.kind = v1::ArtifactKind::Installed as i32;
        process(
            pid,
            vec![
                exe("/usr/bin/app", 100, Some(deb("app", "app", "1.0-1"))),
                lib,
            ],
        )
    }

    /// The policy file with `[verify]` counting `levels` (K = 1), and the
    /// settings the collector resolves from it (no `--verify-*` flags).
    fn counting(levels: &str) -> (Policy, Settings) {
        let text = format!(
            "[[tier]]\nnumber = 1\nname = \"all\"\n\n[[tier.rule]]\n\n[verify]\nstreak = 1\nevidence = [{levels}]\n"
        );
        let policy = Policy::parse("p.toml", text.as_bytes()).unwrap();
        let s = super::super::settings::resolve(&settings(3), &policy.verify, &Default::default())
            .settings;
        (policy, s)
    }

    /// The last run's result of `check` in the incident's log.
    fn last_check(events: &[Recorded], check: &str) -> check::CheckResult {
        events
            .iter()
            .rev()
            .find_map(|r| match &r.event {
                Event::Checked { run } => run.checks.iter().find(|c| c.check == check).cloned(),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {check} check in {events:#?}"))
    }

    /// Which evidence levels count is the policy's: with `loaded` only, a
    /// process that has the affected version installed but not loaded is
    /// seen and not counted, and the incident closes; with `installed`
    /// counted too, the same process fails the package check, named with
    /// its evidence, and the incident stays open.
    #[test]
    fn an_installed_only_process_blocks_only_where_the_policy_counts_installed() {
        for (levels, blocks) in [("\"loaded\"", false), ("\"loaded\", \"installed\"", true)] {
            let (policy, s) = counting(levels);
            assert_eq!(s.streak, 1, "{levels}");
            let f = Fleet::new(vec![with_libfoo_installed(10, "1.5-1")]);
            let id = f.open_contained(T0 + 1);
            run_pass(&f.ingest, &s, &[], &policy, T0 + 2).unwrap();
            let i = f.incident(id);
            let package = last_check(&f.events(id), "package");
            assert!(
                package.evidence[0].starts_with("1 process(es) match"),
                "the process is seen either way: {package:?}"
            );
            if blocks {
                assert_eq!(package.verdict, Verdict::Failed, "{levels}");
                assert_eq!(
                    package.blockers,
                    [
                        "pid 10 (/usr/bin/app) on alpha runs pkg:deb/debian/libfoo1@1.5-1?arch=amd64 (installed)"
                    ]
                );
                assert!(
                    package
                        .query
                        .contains("evidence counted: loaded, installed")
                );
                assert_eq!(i.state, State::Verifying, "kept open");
                assert!(
                    blockers(&i)
                        .iter()
                        .any(|b| b.starts_with("package (failed): pid 10 (/usr/bin/app) on alpha")),
                    "{:?}",
                    blockers(&i)
                );
            } else {
                assert_eq!(package.verdict, Verdict::Successful, "{levels}");
                assert!(package.blockers.is_empty());
                assert!(
                    package.evidence[0].ends_with("1 at evidence levels not counted"),
                    "{package:?}"
                );
                assert_eq!(i.state, State::Closed, "K = 1: {:?}", f.events(id));
            }
        }
    }

    /// An old image started again after the close, whose affected package
    /// is only installed in it (not loaded): the package check does not
    /// count it under the default levels, the digest check does, and the
    /// incident reopens naming the digest in its namespace.
    #[test]
    fn an_old_image_with_the_package_only_installed_reopens_a_closed_incident() {
        const OLD_IMAGE: &str =
            "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let mut f = Fleet::new(vec![with_libfoo(10, "1.5-1", 300)]);
        let id = f.open_contained(T0 + 1);
        f.alpha(vec![with_libfoo(11, "2.1-1", 301)], &[10], T0 + 10);
        f.pass(1, T0 + 11);
        assert_eq!(f.incident(id).state, State::Closed);

        let mut old = with_libfoo_installed(12, "1.5-1");
        old.workload = "pod/old/app".into();
        let v1::agent_message::Body::Delta(mut d) = delta(vec![old], &[], vec![]) else {
            unreachable!("delta() builds a delta")
        };
        d.workloads = vec![v1::Workload {
            id: "pod/old/app".into(),
            kind: "pod".into(),
            namespace: "ml".into(),
            pod: "old".into(),
            image_digest: OLD_IMAGE.into(),
            ..Default::default()
        }];
        f.seq += 1;
        f.ingest
            .apply(
                &f.alpha,
                &msg(f.seq, v1::agent_message::Body::Delta(d)),
                T0 + 20,
            )
            .unwrap();

        let now = check_now(
            f.ingest.store().as_ref(),
            &f.incident(id),
            &settings(1),
            &[],
            T0 + 21,
        )
        .unwrap();
        let verdicts: Vec<(&str, Verdict)> = now
            .checks
            .iter()
            .map(|c| (c.check.as_str(), c.verdict))
            .collect();
        assert!(
            verdicts.contains(&("package", Verdict::Successful))
                && verdicts.contains(&("digest", Verdict::Failed)),
            "{now:#?}"
        );

        let p = f.pass(1, T0 + 21);
        assert_eq!(p.reopened, 1);
        let i = f.incident(id);
        assert_eq!((i.state, i.reopened), (State::Scoped, 1));
        let reason = f
            .events(id)
            .iter()
            .find_map(|r| match &r.event {
                Event::StateChanged {
                    from: State::Closed,
                    reason,
                    ..
                } => Some(reason.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            reason,
            format!(
                "reopened: an affected version runs again: digest {OLD_IMAGE} in namespace ml carries pkg:deb/debian/libfoo1@1.5-1?arch=amd64"
            )
        );
        assert_eq!(f.pass(1, T0 + 22).reopened, 0, "reopened once");
    }

    /// The whole loop in the store: failed while the affected version
    /// runs, K successful runs after the upgrade, recovering, closed (no
    /// containment to lift), and a rollback reopens it with an event.
    #[test]
    fn an_incident_closes_after_k_green_runs_and_a_rollback_reopens_it() {
        let mut f = Fleet::new(vec![with_libfoo(10, "1.5-1", 300)]);
        let id = f.open_contained(T0 + 1);

        let p = f.pass(3, T0 + 2);
        assert_eq!((p.checked, p.closed), (1, 0));
        let i = f.incident(id);
        assert_eq!(i.state, State::Verifying, "verification started");
        let v = i.verification.as_ref().unwrap();
        assert_eq!((v.last.verdict, v.streak), (Verdict::Failed, 0));
        let b = blockers(&i);
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(
            b[0].starts_with(
                "package (failed): pid 10 (/usr/bin/app) on alpha runs pkg:deb/debian/libfoo1@1.5-1"
            ),
            "{b:?}"
        );
        assert!(b[0].ends_with("(mapped)"), "{b:?}");

        // The upgrade: 10 exits, 11 runs the fixed version.
        f.alpha(vec![with_libfoo(11, "2.1-1", 301)], &[10], T0 + 10);
        for (n, at) in [(1, T0 + 11), (2, T0 + 12)] {
            f.pass(3, at);
            let i = f.incident(id);
            assert_eq!(i.state, State::Verifying);
            let v = i.verification.as_ref().unwrap();
            assert_eq!((v.last.verdict, v.streak), (Verdict::Successful, n));
            assert_eq!(v.streak_since_ms, T0 + 11);
            assert!(blockers(&i).is_empty());
        }
        let p = f.pass(3, T0 + 13);
        assert_eq!(p.closed, 1);
        let i = f.incident(id);
        assert_eq!(i.state, State::Closed);
        assert_eq!(i.forced_close, None);
        let kinds: Vec<String> = f
            .events(id)
            .iter()
            .skip(5)
            .map(|r| match &r.event {
                Event::StateChanged { from, to, .. } => format!("{from}->{to}"),
                e => e.kind().to_string(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "contained->verifying",
                "checked",
                "checked",
                "checked",
                "checked",
                "verifying->recovering",
                "recovering->closed"
            ]
        );
        // Closed and still converged: nothing more is written.
        assert_eq!(f.pass(3, T0 + 14).events, 0);

        // A rollback: the old version starts again.
        f.alpha(vec![with_libfoo(12, "1.5-1", 300)], &[], T0 + 20);
        let p = f.pass(3, T0 + 21);
        assert_eq!(p.reopened, 1);
        let i = f.incident(id);
        assert_eq!((i.state, i.reopened), (State::Scoped, 1));
        assert_eq!(i.verification, None, "the gate starts over");
        assert_eq!(
            i.scope
                .pids
                .get("alpha")
                .map(|p| p.iter().copied().collect::<Vec<_>>()),
            Some(vec![12])
        );
        let events = f.events(id);
        let reopened = events
            .iter()
            .find_map(|r| match &r.event {
                Event::StateChanged {
                    from: State::Closed,
                    reason,
                    ..
                } => Some(reason.clone()),
                _ => None,
            })
            .unwrap();
        assert!(reopened.contains("pid 12"), "{reopened}");
        // Reopened once: the next pass does not reopen it again.
        assert_eq!(f.pass(3, T0 + 22).reopened, 0);
    }

    /// A pass reads the fleet's workload rows once, however many incidents
    /// it checks, and not at all when none needs its facts; each incident
    /// still gets the facts `check_now` reads for it alone.
    #[test]
    fn a_pass_reads_the_workloads_once_for_all_its_incidents() {
        let store = Arc::new(Counting::new(SqliteStore::in_memory().unwrap()));
        let f = Fleet::on(store.clone(), vec![with_libfoo(10, "1.5-1", 300)]);
        let before = store.count.workloads();
        assert_eq!(f.pass(3, T0 + 1), Passed::default());
        assert_eq!(store.count.workloads(), before, "nothing to check");

        let ids: Vec<i64> = ["<2", "<3", "<4"]
            .into_iter()
            .map(|range| {
                let source = Source::Package {
                    package: "libfoo1".into(),
                    name: "libfoo1".into(),
                    ecosystem: None,
                    group: None,
                    range: Some(range.into()),
                };
                f.open_contained_on(source, T0 + 2)
            })
            .collect();
        let alone: Vec<Run> = ids
            .iter()
            .map(|id| {
                check_now(
                    f.ingest.store().as_ref(),
                    &f.incident(*id),
                    &settings(3),
                    &[],
                    T0 + 3,
                )
                .unwrap()
            })
            .collect();
        let before = store.count.workloads();
        let p = f.pass(3, T0 + 3);
        assert_eq!((p.checked, p.failed), (3, 0));
        assert_eq!(
            store.count.workloads() - before,
            1,
            "one read for 3 incidents"
        );
        for (id, alone) in ids.iter().zip(&alone) {
            let i = f.incident(*id);
            assert_eq!(i.state, State::Verifying);
            let v = i.verification.as_ref().unwrap();
            assert_eq!(&v.last, alone, "the pass's facts are the incident's own");
            assert!(
                blockers(&i)[0].starts_with("package (failed): pid 10 (/usr/bin/app) on alpha"),
                "{:?}",
                blockers(&i)
            );
        }
    }

    /// The seed's "patches deployed, alerts continue": the library was
    /// replaced on disk, the process still maps the old one, and the
    /// package check names it as needing a restart.
    #[test]
    fn a_stale_mapping_blocks_closure_and_is_named() {
        let mut f = Fleet::new(vec![with_libfoo(10, "1.5-1", 300)]);
        let id = f.open_contained(T0 + 1);
        let mut stale = mapped(LIB, 300, Some(deb("libfoo1", "foo", "1.5-1")));
        stale.stale = true;
        stale.deleted = true;
        f.alpha(
            vec![process(10, vec![exe("/usr/bin/app", 100, None), stale])],
            &[],
            T0 + 5,
        );
        for at in [T0 + 6, T0 + 7, T0 + 8, T0 + 9] {
            f.pass(1, at);
        }
        let i = f.incident(id);
        assert_eq!(i.state, State::Verifying, "never closes while it is stale");
        let b = blockers(&i);
        assert!(
            b.iter().any(|l| l.contains("pid 10")
                && l.contains("on alpha still maps pkg:deb/debian/libfoo1@1.5-1")
                && l.ends_with("replaced on disk: restart it")),
            "{b:?}"
        );
        // Restarted: the new process maps the new file.
        f.alpha(vec![with_libfoo(13, "2.1-1", 301)], &[10], T0 + 10);
        f.pass(1, T0 + 11);
        assert_eq!(f.incident(id).state, State::Closed, "K = 1");
    }

    /// A host that stopped reporting keeps the incident open as
    /// inconclusive, naming it; retiring it (an audited event) takes it
    /// out of the coverage.
    #[test]
    fn a_silent_host_is_inconclusive_until_retired() {
        let mut f = Fleet::new(vec![with_libfoo(10, "1.5-1", 300)]);
        let beta = f
            .ingest
            .hello(&hello_for("host-beta", "beta", "s2"), T0)
            .unwrap();
        f.ingest
            .apply(
                &beta,
                &msg(
                    1,
                    snapshot("snap-b", vec![with_libfoo(20, "1.2-1", 500)], vec![]),
                ),
                T0,
            )
            .unwrap();
        let id = f.open_contained(T0 + 1);
        assert_eq!(f.incident(id).hosts_seen.len(), 2);
        // Both fixed; only alpha keeps reporting.
        f.alpha(vec![with_libfoo(11, "2.1-1", 301)], &[10], T0 + 2);
        f.ingest
            .apply(&beta, &msg(2, delta(vec![], &[20], vec![])), T0 + 2)
            .unwrap();
        let late = T0 + 200_000;
        f.alpha(vec![], &[], late);
        for n in 0..3 {
            f.pass(1, late + n);
        }
        let i = f.incident(id);
        assert_eq!(i.state, State::Verifying);
        let v = i.verification.as_ref().unwrap();
        assert_eq!((v.last.verdict, v.streak), (Verdict::Inconclusive, 0));
        let b = blockers(&i);
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(
            b[0].starts_with(
                "coverage (inconclusive): host beta silent since 2023-11-14T22:13:20.002Z"
            ),
            "{b:?}"
        );
        // eBPF and lost events are evidence.
        let coverage = v
            .last
            .checks
            .iter()
            .find(|c| c.check == "coverage")
            .unwrap();
        assert!(
            coverage
                .evidence
                .iter()
                .any(|e| e.contains("host alpha") && e.contains("event(s) lost"))
        );

        let ops = operational(f.ingest.store().as_ref(), Duration::from_secs(90), late).unwrap();
        assert_eq!(ops.stale_hosts, 1, "beta");
        let retired = retire_host(&f.ingest, "beta", "alice", "decommissioned", late + 5).unwrap();
        assert_eq!(retired, vec![id]);
        assert!(
            retire_host(&f.ingest, "beta", "alice", "again", late + 6)
                .unwrap()
                .is_empty()
        );
        f.pass(1, late + 7);
        let i = f.incident(id);
        assert_eq!(i.state, State::Closed);
        assert!(i.hosts_retired.contains("beta") && !i.hosts_seen.contains("beta"));
    }

    /// A forced close needs a reason, is recorded with its actor, counts
    /// as without evidence, and never reopens by itself.
    #[test]
    fn a_forced_close_is_recorded_and_stays_closed() {
        let mut f = Fleet::new(vec![with_libfoo(10, "1.5-1", 300)]);
        let id = f.open_contained(T0 + 1);
        f.pass(3, T0 + 2);
        assert!(matches!(
            force_close(&f.ingest, id, "bob", "  ", T0 + 3),
            Err(LogError::Refused(IncidentError::ForceWithoutReason))
        ));
        let i = force_close(&f.ingest, id, "bob", "host rebuilt", T0 + 3).unwrap();
        assert_eq!(i.state, State::Closed);
        assert_eq!(i.forced_close.as_deref(), Some("host rebuilt"));
        let last = f.events(id).pop().unwrap();
        assert_eq!(last.actor, "bob");
        assert!(matches!(last.event, Event::ForceClosed { .. }));
        // Closed twice: refused.
        assert!(force_close(&f.ingest, id, "bob", "again", T0 + 4).is_err());
        // What still runs does not reopen a forced close.
        f.alpha(vec![with_libfoo(12, "1.5-1", 300)], &[], T0 + 5);
        assert_eq!(f.pass(3, T0 + 6).reopened, 0);
        assert_eq!(f.incident(id).state, State::Closed);
    }
}
