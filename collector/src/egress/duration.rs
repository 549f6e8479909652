//! Durations as responders type them on a command line or in the policy
//! file: `500ms`, `2s`, `15m`, `24h`, `7d`. Parsing only; no clock.

use std::time::Duration;

/// A duration that could not be read, with the text it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration {text:?} has no number (expected e.g. 2s, 15m, 24h)")]
    NoNumber { text: String },
    #[error("duration {text:?} has no unit or an unknown one (use ms, s, m, h or d)")]
    Unit { text: String },
    #[error("duration {text:?} is too long")]
    TooLong { text: String },
}

/// Parses `<integer><unit>`, unit one of `ms`, `s`, `m`, `h`, `d`.
/// A bare number is refused: "300" could be seconds or milliseconds, and
/// a learning window off by a factor of 1,000 is a silent failure.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(DurationError::NoNumber { text: text.into() });
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| DurationError::TooLong { text: text.into() })?;
    let unit_ms: u64 = match &t[digits..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(DurationError::Unit { text: text.into() }),
    };
    let ms = n
        .checked_mul(unit_ms)
        .filter(|ms| *ms <= i64::MAX as u64)
        .ok_or_else(|| DurationError::TooLong { text: text.into() })?;
    Ok(Duration::from_millis(ms))
}

/// For clap's `value_parser`.
pub fn parse_arg(text: &str) -> Result<Duration, String> {
    parse(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_refusals() {
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(matches!(parse("300"), Err(DurationError::Unit { .. })));
        assert!(matches!(parse("2w"), Err(DurationError::Unit { .. })));
        assert!(matches!(parse("h"), Err(DurationError::NoNumber { .. })));
        assert!(matches!(parse("-2s"), Err(DurationError::NoNumber { .. })));
        assert!(matches!(
            parse("99999999999999999999d"),
            Err(DurationError::TooLong { .. })
        ));
        assert!(matches!(
            parse("999999999999999d"),
            Err(DurationError::TooLong { .. })
        ));
    }
}
