//! The I/O around the egress engine: for each connection an agent
//! reported, the facts from the store (the process chain, its packages,
//! its workload and scope), the workload's baseline (cached, loaded from
//! and written back to the store, versioned), the verdict, and the alert
//! stored under its dedup key and published.
//!
//! `fleet::ingest::Ingest` calls [`Stage::on_connections`] after the
//! agent's message is committed, under its writer lock: this stage writes
//! the store from there only, and never inside another write's
//! transaction. Delivery is not done here: [`Stage::subscribe`] hands out
//! a receiver of [`AlertEvent`]s (new and resolved alerts, not those of
//! workloads in `audit` mode) for the delivery stage to send.
//!
//! A process's facts (its chain, packages, workload and scope) are read
//! from the store once and kept per (host, process key) across messages:
//! most connections come from processes already seen. `Ingest` tells the
//! stage before it writes anything that can change them
//! ([`Stage::before_write`], [`Stage::forget_chains`]), so a cached chain
//! is never older than the store's record of its process. A host's
//! messages between two Hellos all reach one collector (its session), so
//! a second collector on the same store cannot change them unseen.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use patchgap_proto::v1;
use tokio::sync::broadcast;
use tracing::warn;

use super::{
    alert::{Alert, LineageStep, Privilege, Scope, WorkloadRef},
    baseline::{Baseline, Learning, Observation, Seen},
    engine::{self, Facts},
    policy::{EgressPolicy, Mode, glob},
};
use crate::{
    fleet::{changes, scope::Rule, workloads},
    store::{EgressAlertUpsert, ProcessChain, Result, Session, Store, WorkloadRow},
};

/// How far up a lineage goes: the workload's root is rarely deeper.
pub const LINEAGE_DEPTH: usize = 16;

/// Baselines kept in memory; past it the cache is dropped and reloaded
/// from the store on demand (bounded memory for a fleet of many
/// workloads).
pub const CACHED_BASELINES: usize = 4096;

/// Process facts kept across messages; past it one is evicted (counted)
/// for each new one, so memory stays bounded on a large fleet.
pub const CACHED_CHAINS: usize = 8192;

/// The egress policies of the policy file: the first whose selector
/// matches a workload applies, else `default`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EgressPolicies {
    pub default: EgressPolicy,
    /// (selector, policy). A selector is a glob (`*` anywhere) over the
    /// workload's baseline key (`k8s:cluster/ns/Deployment/trainer/c`),
    /// or over `namespace/owner`.
    pub workloads: Vec<(String, EgressPolicy)>,
}

impl EgressPolicies {
    pub fn for_workload(&self, w: &WorkloadRef) -> &EgressPolicy {
        if self.workloads.is_empty() {
            return &self.default;
        }
        let short = format!("{}/{}", w.namespace, w.owner);
        self.workloads
            .iter()
            .find(|(sel, _)| glob(sel, &w.key) || glob(sel, &short))
            .map(|(_, p)| p)
            .unwrap_or(&self.default)
    }
}

/// The egress stage's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressConfig {
    pub learning: Learning,
    pub policies: EgressPolicies,
    /// An open alert not seen for this long is resolved.
    pub resolve_after: Duration,
}

impl Default for EgressConfig {
    fn default() -> EgressConfig {
        EgressConfig {
            learning: Learning::default(),
            policies: EgressPolicies::default(),
            resolve_after: Duration::from_secs(15 * 60),
        }
    }
}

/// What delivery receives.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertEvent {
    /// An alert opened (its first sighting).
    New(Alert),
    /// An alert quiet for `resolve_after`.
    Resolved(Alert),
}

/// The stage. One per collector.
pub struct Stage {
    config: Mutex<EgressConfig>,
    /// Where the policies and learning durations come from when a policy
    /// file is in force (re-read at each use, so a SIGHUP reload applies),
    /// with the `--egress-*` flags over it.
    policy: Option<(crate::response::SharedPolicy, super::flags::EgressFlags)>,
    /// Baselines by key, with the store version they were read at.
    baselines: Mutex<HashMap<String, (i64, Baseline)>>,
    /// Process facts by (host, pid, start ticks).
    chains: Mutex<Chains>,
    events: broadcast::Sender<AlertEvent>,
}

/// The cache of process facts, valid for the scope rules they were
/// computed with.
struct Chains {
    /// At most this many (`CACHED_CHAINS`).
    cap: usize,
    rules: Vec<Rule>,
    by_process: HashMap<(i64, u32, u64), Arc<Instance>>,
    stats: ChainCacheStats,
}

impl Chains {
    fn new(cap: usize) -> Chains {
        Chains {
            cap,
            rules: Vec::new(),
            by_process: HashMap::new(),
            stats: ChainCacheStats::default(),
        }
    }

    fn forget_host(&mut self, host: i64) {
        let before = self.by_process.len();
        self.by_process.retain(|(h, _, _), _| *h != host);
        self.stats.invalidated += (before - self.by_process.len()) as u64;
    }

    fn forget_all(&mut self) {
        self.stats.invalidated += self.by_process.len() as u64;
        self.by_process.clear();
    }

    fn insert(&mut self, key: (i64, u32, u64), instance: Arc<Instance>) {
        if self.by_process.len() >= self.cap
            && !self.by_process.contains_key(&key)
            && let Some(old) = self.by_process.keys().next().copied()
        {
            self.by_process.remove(&old);
            self.stats.evicted += 1;
        }
        self.by_process.insert(key, instance);
    }
}

/// How the process-facts cache fared (for tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainCacheStats {
    /// Processes whose facts came from the cache (once per message).
    pub hits: u64,
    /// Processes read from the store.
    pub misses: u64,
    /// Dropped at the cap.
    pub evicted: u64,
    /// Dropped because their host's processes, workloads or identity
    /// changed, or the scope rules did.
    pub invalidated: u64,
    /// Held now.
    pub entries: usize,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage").finish_non_exhaustive()
    }
}

/// One connection's workload instance, as the baseline key and replica.
struct Instance {
    facts: Facts,
    replica: String,
}

impl Stage {
    pub fn new(config: EgressConfig) -> Stage {
        Stage {
            config: Mutex::new(config),
            policy: None,
            baselines: Mutex::new(HashMap::new()),
            chains: Mutex::new(Chains::new(CACHED_CHAINS)),
            events: broadcast::channel(1024).0,
        }
    }

    /// A stage that follows the response policy's `[[egress]]` and
    /// `[egress_learning]` (reloads included), with `flags` over them.
    pub fn from_policy(
        policy: crate::response::SharedPolicy,
        flags: super::flags::EgressFlags,
    ) -> Stage {
        Stage {
            policy: Some((policy, flags)),
            ..Stage::new(EgressConfig::default())
        }
    }

    /// New and resolved alerts, for delivery. A receiver that lags loses
    /// the oldest events (`RecvError::Lagged` says how many); the store
    /// keeps every alert, so delivery can catch up from `egress_alerts`.
    pub fn subscribe(&self) -> broadcast::Receiver<AlertEvent> {
        self.events.subscribe()
    }

    /// Forgets the cached facts that `msg`, about to be stored for
    /// `host`, may change: every process of the host for a snapshot or a
    /// delta with process upserts, exits or workloads (a new process can
    /// become another's parent, so the host's chains go together); none
    /// for connections or heartbeats alone. `Ingest` calls it before the
    /// store write, under its writer lock, so no judgement can cache the
    /// old record in between.
    pub fn before_write(&self, host: i64, msg: &v1::AgentMessage) {
        use v1::agent_message::Body;
        let changes = match &msg.body {
            Some(Body::Delta(d)) => {
                !(d.upserts.is_empty() && d.exits.is_empty() && d.workloads.is_empty())
            }
            Some(Body::Heartbeat(_)) => false,
            // A snapshot, or anything newer than this stage: assume the
            // host's records changed.
            _ => true,
        };
        if changes {
            self.chains
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget_host(host);
        }
    }

    /// Forgets every cached process fact: a Hello (a host's identity or
    /// labels, or a reboot that reuses process keys) or any other write
    /// that is not one host's agent message.
    pub fn forget_chains(&self) {
        self.chains
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_all();
    }

    /// The process-facts cache's counters.
    pub fn chain_cache_stats(&self) -> ChainCacheStats {
        let chains = self.chains.lock().unwrap_or_else(|e| e.into_inner());
        ChainCacheStats {
            entries: chains.by_process.len(),
            ..chains.stats
        }
    }

    /// Replaces the settings (a policy reload).
    pub fn set_config(&self, config: EgressConfig) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The settings in force: the policy file's (with the flags over its
    /// durations) when the stage follows one, else those set.
    pub fn config(&self) -> EgressConfig {
        let mut config = self
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((policy, flags)) = &self.policy {
            let current = policy.state().current.clone();
            config.policies = current.egress.clone();
            config.learning = flags.over(current.egress_learning.over(Learning::default()));
            if let Some(d) = flags.resolve_after {
                config.resolve_after = d;
            }
        }
        config
    }

    /// Judges the connections of one committed agent message (a delta's),
    /// stores the alerts and the baselines that changed, and publishes new
    /// alerts. Returns the alerts as stored. `scope_rules`: the operator's
    /// data-scope mapping. A connection whose process the store does not
    /// know is skipped (its snapshot has not arrived yet).
    pub fn on_connections(
        &self,
        store: &dyn Store,
        session: &Session,
        connections: &[v1::Connection],
        scope_rules: &[Rule],
        now_ms: i64,
    ) -> Result<Vec<Alert>> {
        let config = self.config();
        // Read once per message, and only when a process is not cached.
        let mut hosts = None;
        let mut chains: HashMap<(u32, u64), Option<Arc<Instance>>> = HashMap::new();
        {
            let mut cache = self.chains.lock().unwrap_or_else(|e| e.into_inner());
            if cache.rules != scope_rules {
                cache.forget_all();
                cache.rules = scope_rules.to_vec();
            }
        }
        let mut out = Vec::new();
        for c in connections {
            let Some(key) = &c.key else { continue };
            let Ok(ip) = c.remote_addr.parse::<IpAddr>() else {
                continue;
            };
            let Ok(port) = u16::try_from(c.remote_port) else {
                continue;
            };
            let instance = match chains.entry((key.pid, key.start_ticks)) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let id = (session.host, key.pid, key.start_ticks);
                    let cached = {
                        let mut cache = self.chains.lock().unwrap_or_else(|e| e.into_inner());
                        let found = cache.by_process.get(&id).cloned();
                        match found {
                            Some(_) => cache.stats.hits += 1,
                            None => cache.stats.misses += 1,
                        }
                        found
                    };
                    let found = match cached {
                        Some(i) => Some(i),
                        None => match store.process_chain(session.host, key, LINEAGE_DEPTH)? {
                            // Not cached when unknown: its snapshot may
                            // be on the way.
                            None => None,
                            Some(ch) => {
                                if hosts.is_none() {
                                    hosts = Some(store.hosts()?);
                                }
                                let hosts = hosts.as_deref().unwrap_or_default();
                                let i = Arc::new(instance(&ch, hosts, scope_rules));
                                self.chains
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(id, i.clone());
                                Some(i)
                            }
                        },
                    };
                    v.insert(found)
                }
            };
            let Some(instance) = instance.as_deref() else {
                continue;
            };
            let obs = Observation {
                ip,
                names: c.names.clone(),
                port,
                protocol: c.protocol.trim_end_matches('6').to_string(),
                replica: instance.replica.clone(),
                exe: instance
                    .facts
                    .lineage
                    .first()
                    .map(|l| l.exe.clone())
                    .unwrap_or_default(),
                lineage: instance
                    .facts
                    .lineage
                    .iter()
                    .map(|l| l.exe.clone())
                    .collect(),
                at_ms: if c.last_seen_ms > 0 {
                    c.last_seen_ms
                } else {
                    now_ms
                },
            };
            let policy = config.policies.for_workload(&instance.facts.workload);
            let key = instance.facts.workload.key.clone();
            let judgement = {
                let mut cache = self.baselines.lock().unwrap_or_else(|e| e.into_inner());
                if !cache.contains_key(&key) {
                    if cache.len() >= CACHED_BASELINES {
                        cache.clear();
                    }
                    let loaded = match store.egress_baseline(&key, None)? {
                        Some(r) => match serde_json::from_str::<Baseline>(&r.body) {
                            Ok(b) => (r.version, b),
                            Err(e) => {
                                warn!(error = %e, key, "unreadable egress baseline; learning again");
                                (r.version, Baseline::new(&key, "", obs.at_ms))
                            }
                        },
                        None => (0, Baseline::new(&key, "", obs.at_ms)),
                    };
                    cache.insert(key.clone(), loaded);
                }
                let (version, baseline) = cache.get_mut(&key).expect("inserted above");
                let j = engine::judge(baseline, policy, &config.learning, &instance.facts, &obs);
                if j.baseline_changed {
                    let body = serde_json::to_string(baseline)
                        .map_err(crate::store::StoreError::backend)?;
                    match store.put_egress_baseline(&key, *version, now_ms, &body) {
                        Ok(r) => *version = r.version,
                        Err(e) => {
                            // Another writer moved it (a second collector
                            // on one store): take theirs next time.
                            warn!(error = %e.chain(), key, "egress baseline not saved; reloading");
                            cache.remove(&key);
                        }
                    }
                }
                j
            };
            let Some(mut alert) = judgement.alert else {
                continue;
            };
            let count = i64::try_from(c.count.max(1)).unwrap_or(i64::MAX);
            // The stored alert keeps its first sighting's story; a later
            // sighting adds its replica and counts.
            let previous = store
                .open_egress_alert(&alert.dedup_key)?
                .and_then(|r| serde_json::from_str::<Alert>(&r.body).ok());
            if let Some(prev) = previous {
                let mut replicas = prev.replicas.clone();
                if !replicas.contains(&obs.replica) {
                    replicas.push(obs.replica.clone());
                }
                alert = Alert { replicas, ..prev };
            } else {
                // A new alert: what changed on the workload within the
                // quarantine window, among the packages this process has,
                // from the query `patchgap changes` answers.
                let since = obs.at_ms.saturating_sub(
                    i64::try_from(config.learning.quarantine.as_millis()).unwrap_or(i64::MAX / 4),
                );
                match changes::for_workload(store, &key, since) {
                    Ok(found) => {
                        alert.packages_changed = loaded_changes(&found.changes, &instance.facts)
                    }
                    Err(e) => {
                        warn!(error = %e.chain(), key, "package changes not read; the alert keeps the baseline's")
                    }
                }
            }
            let body = serde_json::to_string(&alert).map_err(crate::store::StoreError::backend)?;
            let (record, new) = store.upsert_egress_alert(&EgressAlertUpsert {
                dedup_key: &alert.dedup_key,
                workload: &key,
                seen_ms: obs.at_ms,
                count,
                body: &body,
            })?;
            alert.id = record.id;
            alert.first_seen_ms = record.first_seen_ms;
            alert.last_seen_ms = record.last_seen_ms;
            alert.count = u64::try_from(record.count).unwrap_or(0);
            if new && policy.mode != Mode::Audit {
                // No receiver is not an error: delivery may be off.
                let _ = self.events.send(AlertEvent::New(alert.clone()));
            }
            out.push(alert);
        }
        Ok(out)
    }

    /// Resolves alerts quiet for `resolve_after` and publishes them.
    pub fn resolve_quiet(&self, store: &dyn Store, now_ms: i64) -> Result<Vec<Alert>> {
        let after = i64::try_from(self.config().resolve_after.as_millis()).unwrap_or(i64::MAX);
        let resolved = store.resolve_egress_alerts(now_ms.saturating_sub(after), now_ms)?;
        let mut out = Vec::new();
        for r in resolved {
            let Ok(mut a) = serde_json::from_str::<Alert>(&r.body) else {
                continue;
            };
            a.id = r.id;
            if a.mode != Mode::Audit.as_str() {
                let _ = self.events.send(AlertEvent::Resolved(a.clone()));
            }
            out.push(a);
        }
        Ok(out)
    }
}

/// The changes among the packages the connecting process has (by
/// ecosystem/name), at most [`super::alert::MAX_PACKAGES`].
fn loaded_changes(found: &[changes::Change], facts: &Facts) -> Vec<super::baseline::PackageChange> {
    found
        .iter()
        .filter(|c| facts.packages.contains_key(&c.name))
        .take(super::alert::MAX_PACKAGES)
        .map(Into::into)
        .collect()
}

/// The facts of a process chain: the workload (by its fleet key, so
/// replicas on every host share one baseline), its scope through the
/// operator's mapping, privilege, lineage and packages.
fn instance(chain: &ProcessChain, hosts: &[crate::store::HostRow], rules: &[Rule]) -> Instance {
    let first = chain.links.first().cloned().unwrap_or_default();
    let workload = chain.workload.clone().unwrap_or_else(|| v1::Workload {
        id: first.workload.clone(),
        kind: "host".into(),
        ..v1::Workload::default()
    });
    let host = hosts.iter().find(|h| h.identity.hostname == chain.hostname);
    let row = WorkloadRow {
        host: chain.hostname.clone(),
        host_id: host.map(|h| h.identity.host_id.clone()).unwrap_or_default(),
        host_labels: host.map(|h| h.identity.labels.clone()).unwrap_or_default(),
        workload: workload.clone(),
        processes: 1,
        privileges: vec![first.privilege.clone()],
    };
    let exe = String::from_utf8_lossy(&first.exe).into_owned();
    let mut key = workloads::key(&row);
    if !matches!(workload.kind.as_str(), "pod" | "container" | "systemd") {
        // The host itself is no one workload: each executable is its own.
        key = format!("{key}/exe:{exe}");
    }
    let scope = workloads::scope_of(&row, rules);
    // The workload's root: the chain stops where the workload changes.
    let lineage: Vec<LineageStep> = chain
        .links
        .iter()
        .take_while(|l| l.workload == first.workload)
        .map(|l| LineageStep {
            pid: l.pid,
            start_time_ms: l.start_time_ms,
            exe: String::from_utf8_lossy(&l.exe).into_owned(),
            argv: l.cmdline.clone(),
        })
        .collect();
    let mut packages = BTreeMap::new();
    let mut purls = Vec::new();
    for (p, evidence) in &chain.packages {
        packages.insert(
            format!("{}/{}", p.ecosystem, p.name),
            Seen {
                version: p.version.clone(),
                evidence: evidence.clone(),
            },
        );
        purls.push(p.purl.clone());
    }
    let owner = workload.owner.clone().unwrap_or_default();
    Instance {
        replica: format!("{}/{}", chain.hostname, workload.id),
        facts: Facts {
            host: chain.hostname.clone(),
            workload: WorkloadRef {
                key,
                kind: workload.kind.clone(),
                owner_kind: owner.kind,
                owner: owner.name,
                namespace: workload.namespace.clone(),
                container: workload.container_name.clone(),
                image_digest: workload.image_digest.clone(),
            },
            scope: Scope {
                classification: scope.classification,
                writes_to: scope.writes_to,
            },
            privilege: Privilege {
                root: first.privilege.uid0 || first.privilege.euid0,
                privileged: first.privilege.privileged,
                host_network: first.privilege.host_net_ns,
            },
            lineage,
            packages,
            purls,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(key: &str) -> Arc<Instance> {
        Arc::new(Instance {
            facts: Facts {
                workload: WorkloadRef {
                    key: key.into(),
                    ..WorkloadRef::default()
                },
                ..Facts::default()
            },
            replica: String::new(),
        })
    }

    /// The cache holds at most its cap, evicting one (counted) per new
    /// process past it; a host's invalidation leaves other hosts' facts.
    #[test]
    fn chains_are_bounded_and_forgotten_by_host() {
        let mut c = Chains::new(3);
        for pid in 0..5 {
            c.insert((1, pid, 0), facts("a"));
        }
        assert_eq!((c.by_process.len(), c.stats.evicted), (3, 2));
        // Replacing a held key evicts nothing.
        let held = *c.by_process.keys().next().unwrap();
        c.insert(held, facts("b"));
        assert_eq!((c.by_process.len(), c.stats.evicted), (3, 2));
        c.insert((2, 9, 0), facts("c"));
        assert_eq!(c.stats.evicted, 3);
        c.forget_host(1);
        assert_eq!(c.by_process.len(), 1);
        assert_eq!(c.stats.invalidated, 2);
        assert!(c.by_process.contains_key(&(2, 9, 0)));
        c.forget_all();
        assert_eq!((c.by_process.len(), c.stats.invalidated), (0, 3));
    }
}
