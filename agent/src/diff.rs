//! What changed between two scans: the Delta the agent sends between full
//! snapshots.

use std::collections::HashMap;

use patchgap_proto::v1;

use crate::{
    model::{Inventory, Process, ProcessKey, Workload},
    wire,
};

/// The processes of the last scan whose state the collector has been sent.
#[derive(Debug, Default)]
pub struct Baseline {
    processes: HashMap<ProcessKey, Process>,
    workloads: HashMap<String, Workload>,
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
        }
    }

    /// The delta from this baseline to `inv`, or None when nothing changed.
    /// The baseline then becomes `inv`.
    pub fn advance(&mut self, inv: &Inventory) -> Option<v1::Delta> {
        let mut delta = v1::Delta {
            scanned_at_ms: inv.scanned_at_ms,
            ..Default::default()
        };
        // New or changed workloads go first, so every upsert can name them.
        for w in &inv.workloads {
            if self.workloads.get(&w.id) != Some(w) {
                delta.workloads.push(wire::workload(w));
                self.workloads.insert(w.id.clone(), w.clone());
            }
        }
        let mut next = HashMap::with_capacity(inv.processes.len());
        for p in &inv.processes {
            match self.processes.remove(&p.key) {
                None => {
                    delta.upserts.push(wire::process(p));
                    if !p.sockets.is_empty() {
                        delta.sockets.push(wire::sockets(p));
                    }
                }
                Some(old) => {
                    if !old.same_record(p) {
                        delta.upserts.push(wire::process(p));
                    }
                    if old.sockets != p.sockets {
                        delta.sockets.push(wire::sockets(p));
                    }
                }
            }
            next.insert(p.key, p.clone());
        }
        // Whatever is left was not seen in this scan: it exited.
        for key in self.processes.keys() {
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
        changed.then(|| {
            delta.stats = Some(wire::stats(&inv.stats));
            delta
        })
    }
}
