//! Workload rows held between reads. Summing up a host's workloads counts
//! its running processes (`Store::workloads_on`): for the thousand hosts a
//! query's matches can name, that is every process they run, on every
//! query. The rows of a host only change with its inventory generation
//! (`Store::inventory_gens`), which moves in the same transaction as every
//! stored snapshot, delta and Hello, so a read asks for the generations
//! (one row per host) and reads again only the hosts whose generation
//! moved since their rows were held.
//!
//! Invariant: the rows handed out are what `Store::workloads_on` returns
//! for the same hosts, read at or after the generations compared. Rows are
//! always read after their generations, so a write between the two leaves
//! rows newer than the generation held with them, which the next read
//! finds moved: never older rows under a newer generation. Memory: one
//! entry per hostname in the fleet, the rows `Store::workloads` returns.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::store::{Result, Store, WorkloadRow};

/// One hostname's rows and the generations of its host rows when read.
struct Held {
    /// (host row, generation), in host row order.
    gens: Vec<(i64, i64)>,
    rows: Arc<Vec<WorkloadRow>>,
}

/// See the module documentation.
#[derive(Default)]
pub struct HeldWorkloads {
    held: Mutex<HashMap<String, Held>>,
}

/// Held rows for some hostnames, in hostname order, as `Store::workloads_on`
/// orders them.
#[derive(Clone, Default)]
pub struct Rows(Vec<Arc<Vec<WorkloadRow>>>);

impl Rows {
    pub fn iter(&self) -> impl Iterator<Item = &WorkloadRow> + Clone {
        self.0.iter().flat_map(|r| r.iter())
    }
}

/// What one read found: the rows, and how many hostnames it read again.
pub struct Read {
    pub rows: Rows,
    pub hostnames: usize,
    pub reread: usize,
}

impl HeldWorkloads {
    /// The rows of `Store::workloads_on(hostnames)`, or of
    /// `Store::workloads()` for None, reading only the hosts whose
    /// generation moved since they were held.
    pub fn read(&self, store: &dyn Store, hostnames: Option<&[String]>) -> Result<Read> {
        let mut wanted: Vec<(String, Vec<(i64, i64)>)> = Vec::new();
        for (name, host, generation) in store.inventory_gens(hostnames)? {
            match wanted.last_mut() {
                Some((last, gens)) if *last == name => gens.push((host, generation)),
                _ => wanted.push((name, vec![(host, generation)])),
            }
        }
        // The rows held at the generations asked for; None: read again.
        let mut rows: Vec<Option<Arc<Vec<WorkloadRow>>>> = {
            let held = self.lock();
            wanted
                .iter()
                .map(|(name, gens)| {
                    held.get(name)
                        .filter(|h| h.gens == *gens)
                        .map(|h| h.rows.clone())
                })
                .collect()
        };
        let stale: Vec<String> = wanted
            .iter()
            .zip(&rows)
            .filter(|(_, r)| r.is_none())
            .map(|((name, _), _)| name.clone())
            .collect();
        let mut fresh: HashMap<String, Vec<WorkloadRow>> = HashMap::new();
        if !stale.is_empty() {
            for row in store.workloads_on(&stale)? {
                fresh.entry(row.host.clone()).or_default().push(row);
            }
        }
        let mut held = self.lock();
        for ((name, gens), slot) in wanted.iter().zip(rows.iter_mut()) {
            if slot.is_none() {
                let read = Arc::new(fresh.remove(name).unwrap_or_default());
                held.insert(
                    name.clone(),
                    Held {
                        gens: gens.clone(),
                        rows: read.clone(),
                    },
                );
                *slot = Some(read);
            }
        }
        if hostnames.is_none() {
            // Every host was listed: forget any other.
            let names: std::collections::HashSet<&str> =
                wanted.iter().map(|(n, _)| n.as_str()).collect();
            held.retain(|name, _| names.contains(name.as_str()));
        }
        Ok(Read {
            rows: Rows(rows.into_iter().flatten().collect()),
            hostnames: wanted.len(),
            reread: stale.len(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}
