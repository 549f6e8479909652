//! Desired containment state. The collector holds it: the containments
//! every agent must have in force are a function of the incidents'
//! actions ([`desired`]), pushed whole to each host's agent after its
//! Welcome and at every change ([`Hub`]). Agents report what is in force
//! in their heartbeats ([`Observed`]), and [`observations`] turns those
//! reports into the actions' `applied`, `verified`, `failed` and
//! revert-seen events.
//!
//! An agent keeps reporting a containment it lifted for a while, its last
//! status marked `lifted`: a quick revert can lift an isolation before
//! any heartbeat carried its first block. Such a report counts as gone
//! for the revert, and its first block, when it came no later than the
//! revert, still verifies the action (time to containment).
//!
//! Restarts lose nothing: the set is derived from the incident logs, so a
//! restarted collector pushes the same set, and an agent keeps what is
//! pinned until a set that no longer names it arrives.
//!
//! **Invariant:** a containment is in the set exactly while its action
//! is in force (requested, applied, verified or failed, and not
//! reverted) in an open incident; nothing here talks to an agent, it only
//! publishes the set the ingest streams send.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use patchgap_proto::v1;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{
    ActionKind, Mode,
    incident::{
        ActionState, Event, Incident, IncidentAction, Observation, Target,
        log::{self, LogError},
    },
};
use crate::store::Store;

/// The containments each host must have in force, by host key, and the
/// generation that grows with every change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub generation: u64,
    pub by_host: BTreeMap<String, Vec<v1::Containment>>,
}

impl Desired {
    /// The command for one host: its whole set (empty lifts everything).
    pub fn for_host(&self, host_key: &str) -> v1::Containments {
        v1::Containments {
            generation: self.generation,
            items: self.by_host.get(host_key).cloned().unwrap_or_default(),
        }
    }
}

/// The id of one target's containment, as the agent pins it:
/// `inc<incident>-a<action>-<8 hex of host, instance and cgroup>`.
pub fn containment_id(incident: i64, action: u32, t: &Target) -> String {
    let digest = Sha256::digest(format!("{}\0{}\0{}", t.host_key, t.instance, t.cgroup));
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("inc{incident}-a{action}-{short}")
}

fn kind(k: ActionKind) -> Option<v1::ContainmentKind> {
    match k {
        ActionKind::IsolateAffectedWorkloads => Some(v1::ContainmentKind::Isolate),
        ActionKind::FreezeCgroup => Some(v1::ContainmentKind::Freeze),
        ActionKind::KillProcesses => Some(v1::ContainmentKind::Kill),
        _ => None,
    }
}

/// The containments the actions of these incidents ask for, by host key.
/// Only open incidents hold containments.
pub fn desired<'a>(
    incidents: impl IntoIterator<Item = (i64, &'a Incident)>,
) -> BTreeMap<String, Vec<v1::Containment>> {
    let mut by_host: BTreeMap<String, Vec<v1::Containment>> = BTreeMap::new();
    for (id, incident) in incidents {
        if !incident.state.is_open() {
            continue;
        }
        for a in incident.actions.iter().filter(|a| a.in_force()) {
            let Some(kind) = kind(a.planned.kind) else {
                continue;
            };
            let mode = match a.planned.mode {
                Mode::Shadow => v1::ContainmentMode::Shadow,
                _ => v1::ContainmentMode::Enforce,
            };
            for t in &a.planned.targets {
                by_host
                    .entry(t.host_key.clone())
                    .or_default()
                    .push(v1::Containment {
                        id: containment_id(id, a.planned.id, t),
                        cgroup: t.cgroup.clone(),
                        mode: mode as i32,
                        allow: a.planned.allow.clone(),
                        kind: kind as i32,
                    });
            }
        }
    }
    for set in by_host.values_mut() {
        set.sort_by(|a, b| a.id.cmp(&b.id));
    }
    by_host
}

/// What one host's agent reported last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostReport {
    /// The generation of the set it had reconciled to.
    pub generation: u64,
    pub statuses: Vec<v1::ContainmentStatus>,
    pub at_ms: i64,
}

/// The agents' last reports, by host key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub hosts: HashMap<String, HostReport>,
    /// The generation of the set published when this was copied.
    pub generation: u64,
}

/// Whether an incident has actions the agents' reports still say
/// something about: in force, or reverted and not yet seen lifted.
pub fn watching(incident: &Incident) -> bool {
    incident.actions.iter().any(|a| {
        a.planned.on_hosts()
            && a.planned.mode != Mode::Observe
            && (a.in_force()
                || (a.state == ActionState::Reverted
                    && a.times.requested > 0
                    && a.times.revert_verified == 0))
    })
}

/// The incidents whose actions the collector follows: every open one
/// with an action in force, and the newest [`log::REFRESH_MAX`] of any
/// state with a revert not yet seen.
pub fn incidents_to_watch(store: &dyn Store) -> Result<Vec<(i64, Incident)>, LogError> {
    let mut out: Vec<(i64, Incident)> = open_incidents(store)?
        .into_iter()
        .filter(|(_, i)| watching(i))
        .collect();
    let seen: std::collections::HashSet<i64> = out.iter().map(|(id, _)| *id).collect();
    for rec in store.incidents(None, false, log::REFRESH_MAX)? {
        if rec.open || seen.contains(&rec.id) {
            continue;
        }
        let i = log::load(store, &rec)?;
        if watching(&i) {
            out.push((rec.id, i));
        }
    }
    Ok(out)
}

/// The earliest effect (first block) these statuses report.
fn first_block(statuses: &[Option<&v1::ContainmentStatus>]) -> Option<i64> {
    statuses
        .iter()
        .flatten()
        .map(|s| s.first_block_ms)
        .filter(|&ms| ms > 0)
        .min()
}

/// What the reports show about one action: the observations its state
/// calls for, in order (none when nothing changed).
fn observe_action(
    id: i64,
    opened_at_ms: i64,
    a: &IncidentAction,
    observed: &Observed,
    now_ms: i64,
) -> Vec<Observation> {
    let targets = &a.planned.targets;
    if targets.is_empty() {
        return Vec::new();
    }
    let statuses: Vec<Option<&v1::ContainmentStatus>> = targets
        .iter()
        .map(|t| {
            let cid = containment_id(id, a.planned.id, t);
            observed
                .hosts
                .get(&t.host_key)
                .and_then(|h| h.statuses.iter().find(|s| s.id == cid))
        })
        .collect();
    if a.state == ActionState::Reverted {
        let mut out = Vec::new();
        // A first block reported only after the revert (the lift came
        // before the heartbeat that would have carried it) still times
        // the containment, if it came no later than the revert: a block
        // after it would credit the isolation with an effect it had once
        // it was no longer wanted. (The agent's clock against the
        // collector's: a skew between them moves this bound as it moves
        // every time to containment.)
        if a.times.verified == 0
            && let Some(at_ms) = first_block(&statuses).filter(|&ms| ms <= a.times.reverted)
        {
            out.push(Observation::Verified {
                at_ms,
                time_to_containment_ms: (at_ms - opened_at_ms).max(0),
            });
        }
        // Lifted when every target's agent has reconciled to a set made
        // after the revert and no longer has it in force (a lifted status
        // is its last one from before the lift).
        let lifted = targets.iter().zip(&statuses).all(|(t, s)| {
            s.is_none_or(|s| s.lifted)
                && observed.hosts.get(&t.host_key).is_some_and(|h| {
                    h.generation >= observed.generation && h.at_ms >= a.times.reverted
                })
        });
        if lifted && a.times.revert_verified == 0 {
            out.push(Observation::RevertVerified { at_ms: now_ms });
        }
        return out;
    }
    // In force, a lifted status is an old one: this action's containment
    // is not lifted while it is wanted.
    let statuses: Vec<Option<&v1::ContainmentStatus>> = statuses
        .into_iter()
        .map(|s| s.filter(|s| !s.lifted))
        .collect();
    if let Some((t, s)) = targets
        .iter()
        .zip(&statuses)
        .find_map(|(t, s)| s.filter(|s| !s.error.is_empty()).map(|s| (t, s)))
    {
        let reason = format!("{}: {}", t.host, s.error);
        return (a.state != ActionState::Failed || a.reason != reason)
            .then_some(Observation::Failed {
                at_ms: now_ms,
                reason,
            })
            .into_iter()
            .collect();
    }
    if let Some(at_ms) = first_block(&statuses)
        && a.state != ActionState::Verified
    {
        return vec![Observation::Verified {
            at_ms,
            time_to_containment_ms: (at_ms - opened_at_ms).max(0),
        }];
    }
    let all_applied = statuses.iter().all(|s| s.is_some_and(|s| s.applied));
    if all_applied && matches!(a.state, ActionState::Requested | ActionState::Failed) {
        let at_ms = statuses
            .iter()
            .flatten()
            .map(|s| s.applied_ms)
            .max()
            .filter(|&ms| ms > 0)
            .unwrap_or(now_ms);
        return vec![Observation::Applied { at_ms }];
    }
    Vec::new()
}

/// The `observed` events the agents' reports call for, for incident `id`.
pub fn observations(id: i64, incident: &Incident, observed: &Observed, now_ms: i64) -> Vec<Event> {
    incident
        .actions
        .iter()
        .filter(|a| {
            a.planned.on_hosts()
                && a.planned.mode != Mode::Observe
                && (a.in_force() || a.state == ActionState::Reverted)
                && a.times.requested > 0
        })
        .flat_map(|a| {
            observe_action(id, incident.opened_at_ms, a, observed, now_ms)
                .into_iter()
                .map(|observation| Event::Observed {
                    action: a.planned.id,
                    observation,
                })
        })
        .collect()
}

/// The collector's containment state in a running process: the set it
/// publishes and the agents' last reports.
pub struct Hub {
    desired: watch::Sender<Arc<Desired>>,
    observed: Mutex<Observed>,
    /// Woken by every report that carries containments.
    reported: tokio::sync::Notify,
    /// The collector's own host key and cgroup, when it knows them: never
    /// a target (see `plan::Protected`).
    collector: Option<(String, String)>,
    /// What carries out actions beyond the agents, for the plans made
    /// here (the deploy gate, when the collector serves admission).
    executors: super::plan::Executors,
}

impl Hub {
    /// A hub whose generations start at `first_generation` (the start
    /// time in ms, so a restarted collector's generations keep growing).
    pub fn new(first_generation: u64) -> Hub {
        Hub {
            desired: watch::Sender::new(Arc::new(Desired {
                generation: first_generation,
                by_host: BTreeMap::new(),
            })),
            observed: Mutex::new(Observed::default()),
            reported: tokio::sync::Notify::new(),
            collector: None,
            executors: super::plan::Executors::default(),
        }
    }

    /// Names the HTTP listener that serves the admission webhook: the
    /// deploy gate carries out `freeze_deployments` and
    /// `block_new_artifacts_with_package` there.
    pub fn with_admission(mut self, addr: String) -> Hub {
        self.executors.admission = Some(addr);
        self
    }

    pub fn executors(&self) -> &super::plan::Executors {
        &self.executors
    }

    /// Names the collector's own host key and cgroup.
    pub fn with_collector(mut self, host_key: String, cgroup: String) -> Hub {
        self.collector = Some((host_key, cgroup));
        self
    }

    pub fn collector(&self) -> Option<&(String, String)> {
        self.collector.as_ref()
    }

    /// The set now and a receiver that wakes at each change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Desired>> {
        self.desired.subscribe()
    }

    pub fn desired(&self) -> Arc<Desired> {
        self.desired.borrow().clone()
    }

    /// Publishes `by_host` when it differs from the set in force, with
    /// the next generation; true when it did.
    pub fn publish(&self, by_host: BTreeMap<String, Vec<v1::Containment>>) -> bool {
        self.desired.send_if_modified(|d| {
            if d.by_host == by_host {
                return false;
            }
            *d = Arc::new(Desired {
                generation: d.generation + 1,
                by_host,
            });
            true
        })
    }

    /// Records a heartbeat's containment report.
    pub fn report(
        &self,
        host_key: &str,
        generation: u64,
        statuses: Vec<v1::ContainmentStatus>,
        now_ms: i64,
    ) {
        let carries = !statuses.is_empty();
        let mut o = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        let before = o.hosts.get(host_key).map(|h| h.statuses.len()).unwrap_or(0);
        o.hosts.insert(
            host_key.to_string(),
            HostReport {
                generation,
                statuses,
                at_ms: now_ms,
            },
        );
        drop(o);
        if carries || before > 0 {
            self.reported.notify_one();
        }
    }

    /// A copy of the reports, with the generation now in force.
    pub fn observed(&self) -> Observed {
        let mut o = self
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        o.generation = self.desired.borrow().generation;
        o
    }

    /// The counters of a containment, summed over the hosts reporting it.
    pub fn counters(&self, ids: &[String]) -> v1::ContainmentStatus {
        let o = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        let mut sum = v1::ContainmentStatus::default();
        for h in o.hosts.values() {
            for s in h.statuses.iter().filter(|s| ids.contains(&s.id)) {
                sum.blocked_connects += s.blocked_connects;
                sum.blocked_packets += s.blocked_packets;
                sum.would_block_connects += s.would_block_connects;
                sum.would_block_packets += s.would_block_packets;
                sum.killed += s.killed;
            }
        }
        sum
    }

    pub fn reported(&self) -> &tokio::sync::Notify {
        &self.reported
    }
}

/// Every open incident, read a page at a time.
fn open_incidents(store: &dyn Store) -> Result<Vec<(i64, Incident)>, LogError> {
    const PAGE: usize = 100;
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = store.incidents(before, true, PAGE)?;
        for rec in &page {
            out.push((rec.id, log::load(store, rec)?));
        }
        match page.last() {
            Some(last) if page.len() == PAGE => before = Some(last.id),
            _ => return Ok(out),
        }
    }
}

/// Recomputes the desired set from the store's open incidents and
/// publishes it when it changed.
pub fn rebuild(store: &dyn Store, hub: &Hub) -> Result<bool, LogError> {
    let incidents = open_incidents(store)?;
    Ok(hub.publish(desired(incidents.iter().map(|(id, i)| (*id, i)))))
}

/// What is protected among the hosts of `scope`: the instances where the
/// agents report a patchgap agent or collector running, and the
/// collector's own cgroup.
pub fn protected(
    store: &dyn Store,
    scope: &super::incident::Scope,
    collector: Option<&(String, String)>,
) -> Result<super::plan::Protected, LogError> {
    let mut p = super::plan::Protected {
        collector_cgroup: collector.cloned(),
        ..Default::default()
    };
    let hosts: std::collections::BTreeSet<(&str, &str)> = scope
        .instances
        .iter()
        .map(|i| (i.host.as_str(), i.host_key.as_str()))
        .collect();
    for (host, host_key) in hosts {
        for proc in store.processes(Some(host))? {
            let key = (host_key.to_string(), proc.workload.clone());
            if super::plan::Protected::is_agent_exe(&proc.exe) {
                p.agent.insert(key.clone());
            }
            if super::plan::Protected::is_collector_exe(&proc.exe) {
                p.collector.insert(key);
            }
        }
    }
    Ok(p)
}
