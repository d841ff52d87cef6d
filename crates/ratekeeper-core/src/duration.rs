//! Human-friendly durations: `"30s"`, `"1m"`, `"1h"`, `"1d"`, `"250ms"`, `"1h30m"`.

use std::fmt;
use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

impl ParseDurationError {
    fn new(input: &str, reason: &'static str) -> Self {
        // Hostile inputs can be huge; keep the error (and any log line) bounded.
        let input: String = input.chars().take(64).collect();
        Self { input, reason }
    }
}

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: {} (expected e.g. \"500ms\", \"30s\", \"1m\", \"1h\", \"1d\" or \"1h30m\")",
            self.input, self.reason
        )
    }
}

impl std::error::Error for ParseDurationError {}

/// The length of one unit, by any of its spellings.
pub(crate) fn unit_micros(unit: &str) -> Option<u64> {
    Some(match unit {
        "us" | "µs" | "micro" | "micros" | "microsecond" | "microseconds" => 1,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1_000,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000_000,
        "d" | "day" | "days" => 86_400_000_000,
        _ => return None,
    })
}

/// Parses a duration: one or more `<integer><unit>` parts (`"90s"`, `"1h30m"`),
/// with units `us`, `ms`, `s`, `m`, `h`, `d` (long forms such as `minutes` too).
///
/// ```
/// use ratekeeper_core::parse_duration;
/// use std::time::Duration;
///
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert!(parse_duration("10 parsecs").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(ParseDurationError::new(input, "it is empty"));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(ParseDurationError::new(
                input,
                "each part must start with a whole number",
            ));
        }
        let (number, tail) = rest.split_at(digits);
        let value: u64 = number
            .parse()
            .map_err(|_| ParseDurationError::new(input, "the number is too large"))?;
        let tail = tail.trim_start();
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .unwrap_or(tail.len());
        let (unit, after) = tail.split_at(unit_len);
        if unit.is_empty() {
            return Err(ParseDurationError::new(input, "a unit is missing"));
        }
        let per_unit = unit_micros(&unit.to_ascii_lowercase())
            .ok_or_else(|| ParseDurationError::new(input, "unknown unit"))?;
        let part = value
            .checked_mul(per_unit)
            .ok_or_else(|| ParseDurationError::new(input, "the duration is too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| ParseDurationError::new(input, "the duration is too large"))?;
        rest = after.trim_start();
    }
    Ok(Duration::from_micros(total))
}

/// Formats a duration compactly (`"1m"`, `"1h30m"`, `"250ms"`), the inverse of
/// [`parse_duration`] for whole microseconds.
pub fn format_duration(d: Duration) -> String {
    let mut micros = crate::clock::duration_to_micros(d);
    if micros == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000_000u64),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
        ("us", 1),
    ] {
        if micros >= size {
            out.push_str(&(micros / size).to_string());
            out.push_str(unit);
            micros %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_forms() {
        for (s, secs) in [
            ("30s", 30),
            ("1m", 60),
            ("1h", 3600),
            ("1d", 86400),
            ("2 minutes", 120),
            ("1h30m", 5400),
        ] {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(secs), "{s}");
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn rejects_bad_input_with_reason() {
        for (s, reason) in [
            ("", "empty"),
            ("s", "whole number"),
            ("10", "unit is missing"),
            ("10 parsecs", "unknown unit"),
            ("-5s", "whole number"),
            ("99999999999999999999s", "too large"),
            ("999999999999d", "too large"),
        ] {
            let err = parse_duration(s).unwrap_err().to_string();
            assert!(err.contains(reason), "{s}: {err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for s in ["1m", "1h30m", "250ms", "1d", "7us"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    proptest::proptest! {
        /// Whatever the text, parsing answers (a duration or an error),
        /// never panics.
        #[test]
        fn any_text_is_answered(text in "\\PC{0,40}") {
            let _ = parse_duration(&text);
        }

        /// Text made of the grammar's own pieces, in any order: answered.
        #[test]
        fn pieces_in_any_order_are_answered(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    "[0-9]{1,25}", "(ms|s|m|h|d|us|µs|sec|seconds|minutes|hours|days)",
                    "[ .,+-]", "[0-9]{1,3}\\.[0-9]{1,3}",
                ],
                0..8,
            )
        ) {
            let _ = parse_duration(&pieces.concat());
        }

        /// What is formatted reads back as the same duration.
        #[test]
        fn formatted_durations_read_back(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
