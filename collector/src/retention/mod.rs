//! History retention (issue 19): the collector drops history older than
//! `--retain` (an age) and, above `--retain-size` (a size bound), the
//! oldest history first, then compacts the artifact sets and artifacts
//! nothing references any more, and hands freed pages back where the
//! backend can. A host of a busy machine writes tens of MB an hour
//! without it.
//!
//! The pass ([`enforce`]) runs once across the collectors of a database
//! (`once::RETENTION`), on a blocking thread, as many short store
//! transactions of at most [`BATCH`] rows each: ingest waits for one batch
//! at most. It records the horizon it enforced (history before it is
//! gone), and answers over an older window say so in their coverage
//! (`Coverage.history_dropped_before_ms`).
//!
//! What is current is never dropped: running processes and their open
//! intervals, hosts, packages, advisories, SBOMs, baselines, incidents,
//! the audit log. History an open incident may still need is kept too:
//! the horizon never passes the creation of the oldest open incident.
//!
//! **Invariant:** retention deletes only through the store's retention
//! methods (history that ended before the horizon, and what only that
//! history referenced), in bounded batches, outside any other store
//! transaction; the horizon it records is one before which everything
//! was deleted.

use std::time::Duration;

use crate::store::{Store, StoreError};

pub mod size;

pub use size::{SizeError, parse_size};

/// Rows of each kind one batch deletes at most (one short transaction).
pub const BATCH: usize = 2_000;

/// Batches one pass runs at most: the rest waits for the next pass, so a
/// first pass over a large backlog does not hold the writer for long.
pub const MAX_BATCHES: usize = 500;

/// Free space one pass hands back at most (SQLite's incremental vacuum).
pub const RECLAIM_PER_PASS: u64 = 256 << 20;

/// The `--retain*` flags, shared by `patchgap-collector` (and its config
/// file: `retain = "30d"`, `retain-size = "10GB"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct RetentionFlags {
    /// Drop history older than this: processes that exited, past package
    /// intervals, connections and workload instances last seen before it
    /// (e.g. 30d, 24h, 2s). Running processes, incidents, advisories,
    /// SBOMs and the audit log are kept. Default: keep everything.
    #[arg(long = "retain", value_name = "DURATION", value_parser = crate::egress::duration::parse_arg)]
    pub max_age: Option<Duration>,
    /// Keep the database below this size by dropping the oldest history
    /// first (e.g. 10GB, 500MiB). Current data is never dropped, so the
    /// bound may not be met. Default: no bound.
    #[arg(long = "retain-size", value_name = "SIZE", value_parser = size::parse_arg)]
    pub max_bytes: Option<u64>,
}

impl RetentionFlags {
    /// Whether any retention is asked for.
    pub fn enabled(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }

    /// How often the pass runs: a quarter of the age (so history outlives
    /// it by at most a quarter), at least every 10 minutes and at most
    /// every 500 ms; each minute for a size bound alone.
    pub fn every(&self) -> Duration {
        match self.max_age {
            Some(age) => (age / 4).clamp(Duration::from_millis(500), Duration::from_secs(600)),
            None => Duration::from_secs(60),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// The horizon enforced by this pass, if it got everything before it.
    pub horizon_ms: Option<i64>,
    pub processes: u64,
    pub intervals: u64,
    pub connections: u64,
    pub workloads: u64,
    /// Artifact sets looked at by compaction.
    pub sets_checked: u64,
    pub used_bytes_before: u64,
    pub used_bytes_after: u64,
    pub file_bytes_after: u64,
    pub reclaimed_bytes: u64,
    /// The pass stopped at [`MAX_BATCHES`]: more remains for the next.
    pub unfinished: bool,
    /// The size bound could not be met without dropping current data.
    pub size_unmet: bool,
}

impl PassReport {
    /// Rows of history deleted.
    pub fn rows(&self) -> u64 {
        self.processes + self.intervals + self.connections + self.workloads
    }
}

/// What an answer whose window starts at `since_ms` reports as dropped,
/// given the stored `horizon`: the horizon when the window reaches before
/// it, else 0 (`Coverage.history_dropped_before_ms`).
pub fn dropped_before(horizon: Option<i64>, since_ms: i64) -> i64 {
    match horizon {
        Some(h) if since_ms < h => h,
        _ => 0,
    }
}

/// One retention pass at `now_ms` (call it under `once::RETENTION`).
pub fn enforce(
    store: &dyn Store,
    flags: &RetentionFlags,
    now_ms: i64,
) -> Result<PassReport, StoreError> {
    let mut report = PassReport {
        used_bytes_before: store.storage_use()?.used_bytes,
        ..Default::default()
    };
    let mut batches = 0;
    // Never past the oldest open incident: its responders may still ask
    // what ran before it opened.
    let keep_from = store
        .incidents(None, true, 10_000)?
        .iter()
        .map(|i| i.created_ms)
        .min()
        .unwrap_or(i64::MAX);
    if let Some(age) = flags.max_age {
        let before = now_ms
            .saturating_sub(age.as_millis().min(i64::MAX as u128) as i64)
            .min(keep_from);
        prune_before(store, before, now_ms, &mut batches, &mut report)?;
    }
    if let Some(bound) = flags.max_bytes {
        let mut last_used = u64::MAX;
        loop {
            compact(store, &mut batches, &mut report)?;
            let used = store.storage_use()?.used_bytes;
            if used <= bound || batches >= MAX_BATCHES {
                break;
            }
            // The last round freed nothing the backend counts (PostgreSQL's
            // size drops only once vacuum returns the space): stop here
            // rather than drop all history for a figure that cannot move
            // in this pass. The next pass goes on.
            if used >= last_used {
                report.size_unmet = true;
                break;
            }
            last_used = used;
            // The oldest BATCH exited processes, and everything else that
            // ended as early, go next.
            let Some(cutoff) = store.history_cutoff(BATCH)? else {
                report.size_unmet = true;
                break;
            };
            let before = cutoff.saturating_add(1).min(keep_from);
            if report.horizon_ms.is_some_and(|h| h >= before) {
                // Nothing older is left to drop.
                report.size_unmet = true;
                break;
            }
            prune_before(store, before, now_ms, &mut batches, &mut report)?;
        }
    }
    compact(store, &mut batches, &mut report)?;
    report.unfinished = batches >= MAX_BATCHES;
    let mut left = RECLAIM_PER_PASS;
    while left > 0 {
        let got = store.reclaim(left.min(16 << 20))?;
        if got == 0 {
            break;
        }
        report.reclaimed_bytes += got;
        left = left.saturating_sub(got);
    }
    let used = store.storage_use()?;
    report.used_bytes_after = used.used_bytes;
    report.file_bytes_after = used.file_bytes;
    Ok(report)
}

/// Prunes everything that ended before `before`, batch by batch, and
/// records the horizon once nothing older is left.
fn prune_before(
    store: &dyn Store,
    before: i64,
    now_ms: i64,
    batches: &mut usize,
    report: &mut PassReport,
) -> Result<(), StoreError> {
    while *batches < MAX_BATCHES {
        *batches += 1;
        let step = store.prune_history(before, BATCH)?;
        report.processes += step.processes;
        report.intervals += step.intervals;
        report.connections += step.connections;
        report.workloads += step.workloads;
        if step.done {
            store.set_retention_horizon(before, now_ms)?;
            report.horizon_ms = Some(report.horizon_ms.map_or(before, |h| h.max(before)));
            return Ok(());
        }
        pause();
    }
    Ok(())
}

fn compact(
    store: &dyn Store,
    batches: &mut usize,
    report: &mut PassReport,
) -> Result<(), StoreError> {
    while *batches < MAX_BATCHES {
        *batches += 1;
        let checked = store.compact_history(BATCH)?;
        report.sets_checked += checked;
        if checked == 0 {
            return Ok(());
        }
        pause();
    }
    Ok(())
}

/// Between batches: the writer (SQLite's one connection, or PostgreSQL's
/// row locks) goes to ingest first.
fn pause() {
    std::thread::sleep(Duration::from_millis(2));
}

/// Runs [`enforce`] every [`RetentionFlags::every`] while the collector
/// serves, once across collectors; logs what each pass did.
pub async fn run(store: std::sync::Arc<dyn Store>, flags: RetentionFlags) {
    loop {
        tokio::time::sleep(flags.every()).await;
        let s = store.clone();
        let pass = tokio::task::spawn_blocking(move || {
            crate::once::run_once(s.as_ref(), crate::once::RETENTION, || {
                enforce(s.as_ref(), &flags, patchgap_proto::time::now_ms())
            })
        })
        .await;
        match pass {
            Ok(Some(Ok(r))) if r.rows() > 0 || r.reclaimed_bytes > 0 || r.size_unmet => {
                tracing::info!(
                    horizon_ms = r.horizon_ms,
                    rows = r.rows(),
                    processes = r.processes,
                    sets_checked = r.sets_checked,
                    used_bytes = r.used_bytes_after,
                    file_bytes = r.file_bytes_after,
                    reclaimed_bytes = r.reclaimed_bytes,
                    unfinished = r.unfinished,
                    size_unmet = r.size_unmet,
                    "history retention dropped old history"
                );
            }
            Ok(Some(Ok(_))) | Ok(None) => {}
            Ok(Some(Err(e))) => tracing::warn!(error = %e.chain(), "history retention failed"),
            Err(e) => tracing::warn!(error = %e, "history retention panicked"),
        }
    }
}
