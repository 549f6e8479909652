//! When to come back: a message refused because too many wait to be
//! stored (`api::ingest`'s bound) is answered with a time to retry, gRPC's
//! `grpc-retry-pushback-ms`. Each refusal gets its own slot, one write
//! apart, after the messages already waiting and after the slots given
//! before it, so a fleet that connects at once comes back spread out at
//! the rate the writer stores, instead of retrying together and being
//! refused together again (at 1,000 simulated hosts retrying after a
//! fixed second, each first snapshot was refused two to four times, and
//! every refusal cost a decode, a reconnect and a Hello).
//!
//! The rate is learned from the writes themselves: the time the writer
//! lock is held for an agent message, averaged. Deltas of connected hosts
//! keep arriving between the slots; a host that finds the queue full at
//! its slot is refused again with a later one.

use std::sync::Mutex;

/// The metadata key of a refusal's retry time, in milliseconds (gRPC's
/// retry design, A6).
pub const PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";

/// Never sooner: an agent at its slot reconnects and says Hello first.
const MIN_PUSHBACK_MS: i64 = 200;
/// Never later than this: past it, a slot says little about the queue.
pub const MAX_PUSHBACK_MS: i64 = 300_000;
/// The average write until one was measured.
const FIRST_GUESS_MS: f64 = 10.0;
/// Weight of the newest write in the average.
const ALPHA: f64 = 0.05;

#[derive(Debug)]
pub struct Pacer {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Average time one agent message holds the writer, ms.
    write_ms: f64,
    /// The last slot given, ms since the epoch (fractional: slots are
    /// often a few milliseconds apart).
    last_slot_ms: f64,
}

impl Default for Pacer {
    fn default() -> Pacer {
        Pacer {
            state: Mutex::new(State {
                write_ms: FIRST_GUESS_MS,
                last_slot_ms: 0.0,
            }),
        }
    }
}

impl Pacer {
    /// One agent message held the writer for `ms`.
    pub fn wrote(&self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.write_ms += ALPHA * (ms - s.write_ms);
    }

    /// The average write, ms.
    pub fn write_ms(&self) -> f64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_ms
    }

    /// How long a message refused at `now_ms`, with `waiting` messages
    /// ahead of it, should wait before it is sent again, in ms: the next
    /// free slot.
    pub fn pushback(&self, now_ms: i64, waiting: usize) -> i64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms as f64;
        let after_queue = now + waiting as f64 * s.write_ms;
        let slot = after_queue.max(s.last_slot_ms) + s.write_ms;
        let wait = ((slot - now).ceil() as i64).clamp(MIN_PUSHBACK_MS, MAX_PUSHBACK_MS);
        // A clamped slot still advances the line by one write.
        s.last_slot_ms = slot.min(now + MAX_PUSHBACK_MS as f64);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_get_slots_one_write_apart_after_the_queue() {
        let p = Pacer::default();
        for _ in 0..200 {
            p.wrote(5.0);
        }
        assert!((p.write_ms() - 5.0).abs() < 0.1, "{}", p.write_ms());
        // 64 waiting at 5 ms each: the first slot is past them.
        let first = p.pushback(1_000_000, 64);
        assert!((320..=330).contains(&first), "{first}");
        // Each next refusal (same moment, the queue still full) one write
        // later: 1,000 refusals spread over 5 s, not all at once.
        let mut last = first;
        for _ in 0..999 {
            let next = p.pushback(1_000_000, 64);
            assert!(next >= last && next - last <= 6, "{last} -> {next}");
            last = next;
        }
        assert!((5_300..=5_340).contains(&last), "{last}");
        // Later, with the line drained, a refusal goes to the queue's end.
        let much_later = p.pushback(2_000_000, 2);
        assert!((200..=220).contains(&much_later), "{much_later}");
    }

    #[test]
    fn the_wait_is_bounded_both_ways() {
        let p = Pacer::default();
        for _ in 0..500 {
            p.wrote(0.01);
        }
        assert_eq!(p.pushback(1_000, 0), MIN_PUSHBACK_MS);
        for _ in 0..500 {
            p.wrote(10_000.0);
        }
        for _ in 0..100 {
            assert!(p.pushback(1_000, 64) <= MAX_PUSHBACK_MS);
        }
        // Nonsense durations are ignored.
        let before = p.write_ms();
        p.wrote(f64::NAN);
        p.wrote(-1.0);
        assert_eq!(p.write_ms(), before);
    }
}
