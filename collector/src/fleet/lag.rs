//! Ingest lag: from the agent's scan that built a delta
//! (`Delta.scanned_at_ms`, the agent's clock) to its commit here. It
//! covers the agent's batching, the time a message waited in the agent's
//! spool while no collector answered, the wire and the commit, so a
//! collector that falls behind, or an outage being caught up, shows as
//! lag. Counted in fixed buckets with atomics: a write path never waits
//! for a scrape. Clock skew between hosts adds to it; a negative lag (an
//! agent clock ahead) counts as zero.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket bounds, in milliseconds (Prometheus `le`, in seconds, on
/// `/metrics`): a batching period to an hour of outage.
pub const BUCKETS_MS: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000,
];

/// The running histogram.
#[derive(Debug, Default)]
pub struct IngestLag {
    /// Per bucket, not cumulative: a sample lands in the first bucket
    /// whose bound holds it, or in none (above the last: +Inf only).
    buckets: [AtomicU64; BUCKETS_MS.len()],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

/// A copy of the histogram at one moment, cumulative as Prometheus
/// exposes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagSnapshot {
    /// Samples at or under each bound of [`BUCKETS_MS`].
    pub cumulative: [u64; BUCKETS_MS.len()],
    pub count: u64,
    pub sum_ms: u64,
}

impl IngestLag {
    /// One delta committed at `now_ms` that the agent built at
    /// `scanned_at_ms`.
    pub fn observe(&self, scanned_at_ms: i64, now_ms: i64) {
        let lag = now_ms.saturating_sub(scanned_at_ms).max(0) as u64;
        if let Some(i) = BUCKETS_MS.iter().position(|b| lag <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ms.fetch_add(lag, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LagSnapshot {
        // Count last: a scrape racing a sample may see it in a bucket
        // and not yet in the count, never the reverse beyond +Inf.
        let mut s = LagSnapshot::default();
        let mut running = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            running += b.load(Ordering::Relaxed);
            s.cumulative[i] = running;
        }
        s.sum_ms = self.sum_ms.load(Ordering::Relaxed);
        s.count = self.count.load(Ordering::Relaxed).max(running);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_their_buckets_cumulatively() {
        let lag = IngestLag::default();
        lag.observe(1_000, 1_040); // 40 ms
        lag.observe(1_000, 1_100); // 100 ms: on the bound
        lag.observe(1_000, 8_000); // 7 s
        lag.observe(0, 7_200_000); // two hours: +Inf only
        lag.observe(5_000, 1_000); // the agent's clock ahead: 0
        let s = lag.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.sum_ms, 40 + 100 + 7_000 + 7_200_000);
        assert_eq!(s.cumulative[0], 2, "0 and 40 ms are under 50 ms");
        assert_eq!(s.cumulative[1], 3);
        assert_eq!(s.cumulative[6], 3, "7 s is over 5 s");
        assert_eq!(s.cumulative[7], 4);
        assert_eq!(s.cumulative[BUCKETS_MS.len() - 1], 4);
    }
}
