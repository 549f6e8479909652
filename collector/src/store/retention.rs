//! What the store reports of history retention (issue 19): one bounded
//! batch of pruning, and how much room the database takes. The policy
//! (which horizon, when, how many batches) is `crate::retention`'s; the
//! store only deletes what it is told, oldest first.
//!
//! **Invariant:** retention deletes only history: processes that exited,
//! closed history intervals, connections and workload instances with no
//! process left, all older than the horizon it is given, and the artifact
//! sets and artifacts that nothing references after that. Running
//! processes, their current intervals, hosts, packages, advisories,
//! SBOMs, incidents, the audit log and egress baselines are never touched.

/// What one [`Store::prune_history`](super::Store::prune_history) batch
/// deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStep {
    /// Exited processes, with their intervals, sockets and connections.
    pub processes: u64,
    /// Closed history intervals of processes that remain.
    pub intervals: u64,
    /// Connections last seen before the horizon, of processes that remain.
    pub connections: u64,
    /// Workload instances last reported before the horizon that no stored
    /// process runs in any more.
    pub workloads: u64,
    /// Fewer than the batch's limit of every kind was left: everything
    /// older than the horizon is gone.
    pub done: bool,
}

impl PruneStep {
    /// Rows deleted in all.
    pub fn rows(&self) -> u64 {
        self.processes + self.intervals + self.connections + self.workloads
    }
}

/// How much room the database takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageUse {
    /// Bytes that hold data: what a size bound is compared with. SQLite:
    /// pages in use (not on the freelist); PostgreSQL: the database's size
    /// as `pg_database_size` reports it.
    pub used_bytes: u64,
    /// Bytes on disk: SQLite's file (page count times page size), which
    /// shrinks only when free pages are handed back (`reclaim`).
    pub file_bytes: u64,
}
