//! When to try a delivery again, and what an answer means. The schedule is
//! the Standard Webhooks specification's: immediately, then 5 seconds, 5
//! minutes, 30 minutes, 2, 5, 10 and 10 hours, each wait with ±20 %
//! jitter so that many deliveries failing together do not come back
//! together. A time scale compresses every wait (tests run the whole
//! schedule in seconds); production runs at 1.
//!
//! Pure: the caller passes the attempt, the answer, the time and the
//! jitter's random number.

use std::time::Duration;

/// The waits before attempts 1, 2, … (the first is immediate).
pub const SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The longest `retry-after` honoured: a receiver asking for more gets
/// the schedule's last wait, not a week.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 3600);

/// What one attempt came to, as the worker records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again after this long.
    RetryAfter(Duration),
    /// The schedule ran out, or the answer means no retry can help.
    GiveUp(String),
    /// 410 Gone: disable the endpoint.
    Gone,
}

/// The answer to an attempt: an HTTP status with its `retry-after`, or no
/// answer (connect refused, a timeout, TLS), with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    NoAnswer(String),
}

/// `retry-after` as seconds (the HTTP-date form is not honoured: the
/// schedule applies then).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Scales a wait by `scale` and spreads it by ±20 % with `random` (any
/// u32, uniform).
pub fn jittered(wait: Duration, scale: f64, random: u32) -> Duration {
    let spread = 0.8 + 0.4 * (f64::from(random) / f64::from(u32::MAX));
    Duration::from_secs_f64((wait.as_secs_f64() * scale * spread).max(0.0))
}

/// What to do after attempt `attempt` (1-based) got `answer`. Every
/// answer but a 2xx and 410 is retried on the schedule, as the
/// specification says; a 429 or 5xx that sends `retry-after` waits at
/// least that long (scaled like the schedule, capped at
/// [`MAX_RETRY_AFTER`]).
pub fn verdict(attempt: u32, answer: &Answer, scale: f64, random: u32) -> Verdict {
    let asked = match answer {
        Answer::Status { status, .. } if (200..300).contains(status) => {
            return Verdict::Delivered;
        }
        Answer::Status { status: 410, .. } => return Verdict::Gone,
        Answer::Status {
            status,
            retry_after,
        } if *status == 429 || *status >= 500 => retry_after.as_deref().and_then(parse_retry_after),
        Answer::Status { .. } | Answer::NoAnswer(_) => None,
    };
    let Some(next) = SCHEDULE.get(attempt as usize) else {
        return Verdict::GiveUp(format!(
            "no 2xx after {attempt} attempts (the retry schedule ran out)"
        ));
    };
    let wait = jittered(*next, scale, random);
    let asked = asked.map_or(Duration::ZERO, |a| {
        Duration::from_secs_f64(a.min(MAX_RETRY_AFTER).as_secs_f64() * scale)
    });
    Verdict::RetryAfter(wait.max(asked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> Answer {
        Answer::Status {
            status: s,
            retry_after: None,
        }
    }

    const MID: u32 = u32::MAX / 2;

    #[test]
    fn any_2xx_is_delivered_and_410_disables() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(verdict(1, &status(s), 1.0, MID), Verdict::Delivered, "{s}");
        }
        assert_eq!(verdict(1, &status(410), 1.0, MID), Verdict::Gone);
    }

    #[test]
    fn follows_the_specifications_schedule_then_gives_up() {
        let waits: Vec<u64> = (1..=7)
            .map(|n| match verdict(n, &status(500), 1.0, MID) {
                Verdict::RetryAfter(d) => d.as_secs_f64().round() as u64,
                v => panic!("{v:?}"),
            })
            .collect();
        // Jitter at its middle is ×1.0 (to the second).
        assert_eq!(waits, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert!(matches!(
            verdict(8, &status(503), 1.0, MID),
            Verdict::GiveUp(_)
        ));
        assert!(matches!(
            verdict(8, &Answer::NoAnswer("refused".into()), 1.0, MID),
            Verdict::GiveUp(_)
        ));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let lo = jittered(Duration::from_secs(100), 1.0, 0);
        let hi = jittered(Duration::from_secs(100), 1.0, u32::MAX);
        assert_eq!((lo.as_secs(), hi.as_secs()), (80, 120));
        assert_eq!(
            jittered(Duration::from_secs(300), 0.001, MID).as_millis(),
            300
        );
    }

    #[test]
    fn honours_retry_after_on_429_and_5xx() {
        let asked = |s: u16, v: &str| {
            verdict(
                1,
                &Answer::Status {
                    status: s,
                    retry_after: Some(v.into()),
                },
                1.0,
                MID,
            )
        };
        assert_eq!(
            asked(429, "120"),
            Verdict::RetryAfter(Duration::from_secs(120))
        );
        assert_eq!(
            asked(503, "60"),
            Verdict::RetryAfter(Duration::from_secs(60))
        );
        // Less than the schedule's wait: the schedule's.
        assert_eq!(asked(503, "1"), Verdict::RetryAfter(Duration::from_secs(5)));
        // An HTTP-date or nonsense: the schedule.
        assert_eq!(
            asked(429, "Wed, 21 Oct 2015 07:28:00 GMT"),
            Verdict::RetryAfter(Duration::from_secs(5))
        );
        // Capped.
        assert_eq!(asked(429, "999999"), Verdict::RetryAfter(MAX_RETRY_AFTER));
    }
}
