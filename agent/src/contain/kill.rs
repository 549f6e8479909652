//! Kill: `cgroup.kill` on a workload's cgroup sends SIGKILL to every
//! process in it and its descendants, including ones forking meanwhile
//! (kernel 5.14+). While a set names a kill, the cgroup is killed when the
//! set is applied and again at each periodic check ([`Killer::tick`], at
//! most every heartbeat interval) that finds processes in it, so a workload
//! restarted into the cgroup dies within one interval. Lifting stops the
//! killing; nothing comes back. Nothing persists: the list of kills comes
//! whole with every set, and the counts start again with the agent.
//!
//! **Invariant:** every kill round checks the guards again (the agent or
//! PID 1 may have been moved into the cgroup since the set), and a round
//! that finds no process writes nothing.

use std::collections::{BTreeMap, HashSet};

use patchgap_proto::time::now_ms;

use super::hierarchy::{Guards, Hierarchy};
use super::{Applied, CgroupTarget, ContainError, valid_id};

/// What a kill did so far, for a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KillStatus {
    /// When this agent took it on (ms since the epoch).
    pub applied_ms: i64,
    /// Processes killed (counted in `cgroup.procs` of the cgroup and its
    /// descendants just before each kill).
    pub killed: u64,
    /// The first kill (ms since the epoch): the evidence; 0 none yet.
    pub first_kill_ms: i64,
    /// Why the last round could not kill.
    pub problem: Option<String>,
}

#[derive(Debug)]
struct Active {
    target: CgroupTarget,
    status: KillStatus,
}

/// Carries out kill containments.
#[derive(Debug, Default)]
pub struct Killer {
    active: BTreeMap<String, Active>,
}

impl Killer {
    /// No kill in force.
    pub fn new() -> Killer {
        Killer::default()
    }

    /// Makes the kills in force equal to `desired` and kills in each of
    /// them at once. The ids in `keep` are wanted but their new spec could
    /// not be read: they go on as they were. One [`Applied`] per desired id
    /// and per released id.
    pub fn reconcile(
        &mut self,
        cgroups: &Hierarchy,
        desired: &[CgroupTarget],
        keep: &[&str],
    ) -> Vec<Applied> {
        let mut out = Vec::new();
        let mut old = std::mem::take(&mut self.active);
        let mut seen = HashSet::new();
        for d in desired {
            let fail = |error| Applied::Failed {
                id: d.id.clone(),
                error,
            };
            if !valid_id(&d.id) {
                out.push(fail(ContainError::InvalidId { id: d.id.clone() }));
                continue;
            }
            if !seen.insert(d.id.as_str()) {
                out.push(fail(ContainError::DuplicateId { id: d.id.clone() }));
                continue;
            }
            let (mut active, was) = match old.remove(&d.id) {
                // The same cgroup: the counts go on.
                Some(a) if a.target == *d => (a, true),
                _ => (
                    Active {
                        target: d.clone(),
                        status: KillStatus {
                            applied_ms: now_ms(),
                            ..Default::default()
                        },
                    },
                    false,
                ),
            };
            match kill_round(cgroups, &mut active, was) {
                Ok(()) => {
                    out.push(if was {
                        Applied::Unchanged { id: d.id.clone() }
                    } else {
                        Applied::Attached { id: d.id.clone() }
                    });
                    self.active.insert(d.id.clone(), active);
                }
                Err(error) => {
                    // A kill in force stays in force (its status says what
                    // failed); a new one whose cgroup the guards refuse, or
                    // that is not there, is not taken on.
                    if was {
                        self.active.insert(d.id.clone(), active);
                    }
                    out.push(fail(error));
                }
            }
        }
        for (id, a) in old {
            if keep.contains(&id.as_str()) {
                self.active.insert(id, a);
            } else {
                out.push(Applied::Released { id });
            }
        }
        out
    }

    /// Kills again in every kill in force where processes appeared.
    pub fn tick(&mut self, cgroups: &Hierarchy) {
        for a in self.active.values_mut() {
            if let Err(error) = kill_round(cgroups, a, true) {
                tracing::warn!(%error, id = %a.target.id, "contain: kill round failed");
            }
        }
    }

    /// What kill `id` did so far, if it is in force.
    pub fn status(&self, id: &str) -> Option<KillStatus> {
        self.active.get(id).map(|a| a.status.clone())
    }
}

/// One round: guards read now, the cgroup opened through them, its
/// processes counted and, if any, killed. For a kill already taken on, a
/// cgroup that is gone is one with nothing left to kill (runtimes remove a
/// container's cgroup once its processes died), not a failure.
fn kill_round(cgroups: &Hierarchy, a: &mut Active, taken_on: bool) -> Result<(), ContainError> {
    let round = Guards::read()
        .and_then(|g| cgroups.open_guarded(&a.target.cgroup, &g))
        .and_then(|dir| dir.kill());
    match round {
        Ok(n) => {
            a.status.problem = None;
            if n > 0 {
                a.status.killed += n;
                if a.status.first_kill_ms == 0 {
                    a.status.first_kill_ms = now_ms();
                }
                tracing::info!(id = %a.target.id, cgroup = %a.target.cgroup.display(), killed = n, "contain: killed");
            }
            Ok(())
        }
        Err(ContainError::CgroupMissing { .. }) if taken_on => {
            a.status.problem = None;
            Ok(())
        }
        Err(error) => {
            a.status.problem = Some(super::describe(&error));
            Err(error)
        }
    }
}
