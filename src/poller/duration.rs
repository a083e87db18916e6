//! Prometheus durations: the `1m`, `1h30m`, `90s`, `1d` syntax of rule files.
//!
//! The format is that of Prometheus's `model.Duration`: an optional whole number for each of the
//! units `y` (365 days), `w`, `d`, `h`, `m`, `s` and `ms`, in that order, each at most once, with
//! no sign, no fraction and no spaces; `0` alone means zero. The data model is a plain
//! [`std::time::Duration`] with millisecond precision.

use std::fmt;
use std::time::Duration;

/// Units from largest to smallest, with their length in milliseconds.
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration string")]
    Empty,
    #[error("not a valid duration string: {0:?}")]
    Invalid(String),
    #[error("duration out of range: {0:?}")]
    Overflow(String),
}

/// Parses a Prometheus duration (`5m`, `1h30m`, `90s`, `1d`, `0`).
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid(s.to_string());
    let mut rest = s;
    let mut next_unit = 0; // units must come in order, each at most once
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let index = UNITS[next_unit..]
            .iter()
            .position(|(name, _)| *name == unit)
            .map(|i| i + next_unit)
            .ok_or_else(invalid)?;
        next_unit = index + 1;
        let overflow = || DurationError::Overflow(s.to_string());
        let n: u64 = number.parse().map_err(|_| overflow())?;
        let ms = n.checked_mul(UNITS[index].1).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(ms).ok_or_else(overflow)?;
        rest = tail;
    }
    // Prometheus keeps durations as Go time.Duration (int64 nanoseconds).
    if total_ms > i64::MAX as u64 / 1_000_000 {
        return Err(DurationError::Overflow(s.to_string()));
    }
    Ok(Duration::from_millis(total_ms))
}

/// Shows a duration the way Prometheus writes one (`1h30m`, `0s`); sub-millisecond parts are
/// dropped.
pub struct Display(pub Duration);

impl fmt::Display for Display {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0s");
        }
        for (name, len) in UNITS {
            let n = ms / len;
            if n > 0 {
                write!(f, "{n}{name}")?;
                ms -= n * len;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("90s"), Ok(secs(90)));
        assert_eq!(parse("1m"), Ok(secs(60)));
        assert_eq!(parse("1h30m"), Ok(secs(5400)));
        assert_eq!(parse("1d"), Ok(secs(86_400)));
        assert_eq!(parse("2w"), Ok(secs(14 * 86_400)));
        assert_eq!(parse("1y"), Ok(secs(365 * 86_400)));
        assert_eq!(parse("1m500ms"), Ok(Duration::from_millis(60_500)));
        assert_eq!(parse("1d2h3m4s5ms"), Ok(Duration::from_millis(93_784_005)));
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        for bad in [
            "5x", "m", "1.5m", "-1m", "+1m", "1m1h", "1m1m", "1 m", " 1m", "1M", "1", "s1",
        ] {
            assert_eq!(
                parse(bad),
                Err(DurationError::Invalid(bad.to_string())),
                "{bad}"
            );
        }
        assert!(matches!(
            parse("99999999999999999999y"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(parse("300y"), Err(DurationError::Overflow(_))));
    }

    #[test]
    fn displays_like_prometheus() {
        assert_eq!(Display(Duration::ZERO).to_string(), "0s");
        assert_eq!(Display(secs(5400)).to_string(), "1h30m");
        assert_eq!(Display(secs(8 * 86_400 + 1)).to_string(), "1w1d1s");
        assert_eq!(Display(Duration::from_millis(1500)).to_string(), "1s500ms");
    }
}
