//! Sizes as operators type them for `--retain-size`: `10GB`, `500MB`,
//! `1GiB`, `4096B`. Parsing only.

/// A size that could not be read, with the text it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("size {text:?} has no number (expected e.g. 10GB, 500MiB)")]
    NoNumber { text: String },
    #[error(
        "size {text:?} has no unit or an unknown one (use B, kB, MB, GB, TB or KiB, MiB, GiB, TiB)"
    )]
    Unit { text: String },
    #[error("size {text:?} is too large")]
    TooLarge { text: String },
}

/// Parses `<integer><unit>`: decimal units (kB, MB, GB, TB: powers of
/// 1000, as disks are sold) or binary ones (KiB, MiB, GiB, TiB). A bare
/// number is refused: bytes or megabytes is a factor of a million.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(SizeError::NoNumber { text: text.into() });
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| SizeError::TooLarge { text: text.into() })?;
    let unit: u64 = match t[digits..].trim().to_ascii_lowercase().as_str() {
        "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(SizeError::Unit { text: text.into() }),
    };
    n.checked_mul(unit)
        .ok_or_else(|| SizeError::TooLarge { text: text.into() })
}

/// For clap's `value_parser`.
pub fn parse_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_refusals() {
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("2tb"), Ok(2_000_000_000_000));
        assert!(matches!(parse_size("300"), Err(SizeError::Unit { .. })));
        assert!(matches!(parse_size("3PB"), Err(SizeError::Unit { .. })));
        assert!(matches!(parse_size("GB"), Err(SizeError::NoNumber { .. })));
        assert!(matches!(
            parse_size("-1GB"),
            Err(SizeError::NoNumber { .. })
        ));
        assert!(matches!(
            parse_size("99999999999TiB"),
            Err(SizeError::TooLarge { .. })
        ));
    }
}
