//! The value forms settings share across sections: a number within a range (with its default) and a
//! duration like `500ms`, `30s`, `10m` or `1h`.

use std::time::Duration;

use super::{ConfigError, invalid};

/// A number within `min..=max`, `default` when unset; the error names `field`.
pub(super) fn in_range(
    field: &str,
    v: Option<usize>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let v = v.unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(field, format!("{v} is outside {min}..={max}")));
    }
    Ok(v)
}

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}
