//! What changed between two scans: the Delta the agent sends between full
//! snapshots.

use std::collections::HashMap;

use patchgap_proto::v1;

use crate::{
    model::{Artifact, ArtifactKind, Inventory, Process, ProcessKey, Workload},
    wire,
};

/// The processes of the last scan whose state the collector has been sent.
#[derive(Debug, Default)]
pub struct Baseline {
    processes: HashMap<ProcessKey, Process>,
    workloads: HashMap<String, Workload>,
    last_reconciled: u32,
}

impl Baseline {
    pub fn new(inv: &Inventory) -> Baseline {
        Baseline {
            processes: inv.processes.iter().map(|p| (p.key, p.clone())).collect(),
            workloads: inv
                .workloads
                .iter()
                .map(|w| (w.id.clone(), w.clone()))
                .collect(),
            last_reconciled: 0,
        }
    }

    /// The delta from this baseline to `inv`, or None when nothing changed.
    /// The baseline then becomes `inv`. With `sensing` (eBPF on), every
    /// process this scan finds that the baseline lacks, and every exit it
    /// finds, is something eBPF missed: counted as `reconciled`.
    pub fn advance(&mut self, inv: &Inventory, sensing: bool) -> Option<v1::Delta> {
        let mut delta = v1::Delta {
            scanned_at_ms: inv.scanned_at_ms,
            ..Default::default()
        };
        let mut reconciled = 0u32;
        // New or changed workloads go first, so every upsert can name them.
        for w in &inv.workloads {
            if self.workloads.get(&w.id) != Some(w) {
                delta.workloads.push(wire::workload(w));
                self.workloads.insert(w.id.clone(), w.clone());
            }
        }
        let mut next = HashMap::with_capacity(inv.processes.len());
        for p in &inv.processes {
            let mut p = p.clone();
            match self.processes.remove(&p.key) {
                None => {
                    reconciled += 1;
                    delta.upserts.push(wire::process(&p));
                    if !p.sockets.is_empty() {
                        delta.sockets.push(wire::sockets(&p));
                    }
                }
                Some(old) => {
                    // Files the process opened (seen by eBPF) are history a
                    // /proc scan cannot see again: keep them.
                    for a in old
                        .artifacts
                        .iter()
                        .filter(|a| a.kind == ArtifactKind::Opened)
                    {
                        if !p.artifacts.iter().any(|b| b.path == a.path) {
                            p.artifacts.push(a.clone());
                        }
                    }
                    if !old.same_record(&p) {
                        delta.upserts.push(wire::process(&p));
                    }
                    if old.sockets != p.sockets {
                        delta.sockets.push(wire::sockets(&p));
                    }
                }
            }
            next.insert(p.key, p);
        }
        // Whatever is left was not seen in this scan: it exited.
        for key in self.processes.keys() {
            reconciled += 1;
            delta.exits.push(v1::Exit {
                key: Some(wire::key(key)),
                exit_time_ms: inv.scanned_at_ms,
            });
        }
        self.processes = next;
        let changed = !(delta.upserts.is_empty()
            && delta.exits.is_empty()
            && delta.sockets.is_empty()
            && delta.workloads.is_empty());
        let mut stats = inv.stats;
        stats.reconciled = if sensing { reconciled } else { 0 };
        self.last_reconciled = stats.reconciled;
        changed.then(|| {
            delta.stats = Some(wire::stats(&stats));
            delta
        })
    }

    /// What the last `advance` counted as reconciled.
    pub fn last_reconciled(&self) -> u32 {
        self.last_reconciled
    }

    /// The running process with this pid (pids are unique among running
    /// processes).
    pub fn by_pid(&self, pid: u32) -> Option<&Process> {
        self.processes.values().find(|p| p.key.pid == pid)
    }

    /// A workload of the baseline, by id.
    pub fn workload(&self, id: &str) -> Option<&Workload> {
        self.workloads.get(id)
    }

    /// Records a process scanned at an event (exec, or an unknown pid), and
    /// puts what changed into `delta`.
    pub fn record(&mut self, p: Process, w: Workload, delta: &mut v1::Delta) {
        if self.workloads.get(&w.id) != Some(&w) {
            delta.workloads.push(wire::workload(&w));
            self.workloads.insert(w.id.clone(), w);
        }
        // A pid reused since: the old process is gone.
        let stale: Vec<ProcessKey> = self
            .processes
            .keys()
            .filter(|k| k.pid == p.key.pid && **k != p.key)
            .copied()
            .collect();
        for key in stale {
            self.processes.remove(&key);
            delta.exits.push(v1::Exit {
                key: Some(wire::key(&key)),
                exit_time_ms: p.start_time_ms,
            });
        }
        let mut p = p;
        if let Some(old) = self.processes.get(&p.key) {
            for a in old
                .artifacts
                .iter()
                .filter(|a| a.kind == ArtifactKind::Opened)
            {
                if !p.artifacts.iter().any(|b| b.path == a.path) {
                    p.artifacts.push(a.clone());
                }
            }
            if old.same_record(&p) {
                return;
            }
        }
        upsert(delta, wire::process(&p));
        if !p.sockets.is_empty() {
            delta.sockets.push(wire::sockets(&p));
        }
        self.processes.insert(p.key, p);
    }

    /// Adds a file a process opened. Returns false when the process is not
    /// known or already has that file.
    pub fn add_opened(&mut self, pid: u32, artifact: Artifact, delta: &mut v1::Delta) -> bool {
        let Some(p) = self.processes.values_mut().find(|p| p.key.pid == pid) else {
            return false;
        };
        if p.artifacts
            .iter()
            .any(|a| a.path == artifact.path && (a.dev, a.inode) == (artifact.dev, artifact.inode))
        {
            return false;
        }
        p.artifacts.push(artifact);
        upsert(delta, wire::process(p));
        true
    }

    /// Records an exit seen by eBPF. Returns the process's key, or None when
    /// it was never seen.
    pub fn exit(&mut self, pid: u32, at_ms: i64, delta: &mut v1::Delta) -> Option<ProcessKey> {
        let key = self.by_pid(pid)?.key;
        self.processes.remove(&key);
        delta.exits.push(v1::Exit {
            key: Some(wire::key(&key)),
            exit_time_ms: at_ms,
        });
        Some(key)
    }
}

/// Puts a process record into a pending delta, replacing an earlier record
/// of the same process in it.
fn upsert(delta: &mut v1::Delta, p: v1::Process) {
    match delta.upserts.iter_mut().find(|u| u.key == p.key) {
        Some(u) => *u = p,
        None => delta.upserts.push(p),
    }
}
