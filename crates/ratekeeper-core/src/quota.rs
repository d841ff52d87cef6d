//! Quotas: how many units per window, with an optional burst.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::clock::duration_to_micros;
use crate::duration::{format_duration, parse_duration, unit_micros};

/// The shortest window a quota may have (one microsecond, the unit of time).
pub const MIN_WINDOW: Duration = Duration::from_micros(1);
/// The longest window a quota may have (366 days).
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 86_400);
/// The longest a full bucket may take to refill, and the longest penalty
/// (about 17.8 years, 2^49 µs).
///
/// It bounds `burst × window / limit` for the bucket algorithms and every
/// penalty. A state is kept at most twice as long (a bucket owing a full
/// bucket after a charge past empty), so that every timestamp the
/// algorithms compute stays well inside 2^53 and can be carried exactly by
/// any store (including Lua numbers).
pub const MAX_HORIZON: Duration = Duration::from_micros(1 << 49);

/// Why a quota was rejected.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaError {
    /// The limit is zero.
    ZeroLimit,
    /// The window is shorter than [`MIN_WINDOW`] or longer than [`MAX_WINDOW`].
    WindowOutOfRange(Duration),
    /// More than one unit per microsecond.
    RateTooHigh {
        /// The limit.
        limit: u64,
        /// The window.
        window: Duration,
    },
    /// The burst is zero.
    ZeroBurst,
    /// Emptying a full burst would take longer than [`MAX_HORIZON`].
    BurstTooLarge(u64),
    /// A quota string could not be parsed.
    Parse {
        /// The input, cut to 64 characters.
        input: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroLimit => f.write_str("the limit must be at least 1"),
            Self::WindowOutOfRange(w) => write!(
                f,
                "the window {} is out of range (expected between {} and {})",
                format_duration(*w),
                format_duration(MIN_WINDOW),
                format_duration(MAX_WINDOW)
            ),
            Self::RateTooHigh { limit, window } => write!(
                f,
                "{limit} per {} is more than one unit per microsecond",
                format_duration(*window)
            ),
            Self::ZeroBurst => f.write_str("the burst must be at least 1"),
            Self::BurstTooLarge(b) => write!(
                f,
                "a burst of {b} takes longer than the maximum horizon to refill"
            ),
            Self::Parse { input, reason } => write!(
                f,
                "invalid quota {input:?}: {reason} (expected e.g. \"100/minute\", \"10/s\", \"1000/1h\" or \"5 per second\")"
            ),
        }
    }
}

impl std::error::Error for QuotaError {}

/// A quota: at most `limit` units per `window`, optionally with a `burst`.
///
/// For fixed window, sliding window log and sliding window counter, the limit is
/// the most a window may hold. For token bucket, leaky bucket and GCRA, units
/// come back at a steady rate of `limit` per `window` (one every
/// `window / limit`, rounded up to a whole microsecond so the rate never exceeds
/// the quota), and the burst (default: the limit) is how many can be spent at once.
///
/// ```
/// use ratekeeper_core::Quota;
/// use std::time::Duration;
///
/// let q: Quota = "100/minute".parse().unwrap();
/// assert_eq!(q, Quota::per_minute(100).unwrap());
/// assert_eq!(q.window(), Duration::from_secs(60));
/// let q: Quota = "1000/1h".parse().unwrap();
/// assert_eq!(q.limit(), 1000);
/// assert!("0/s".parse::<Quota>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u64,
    window_us: u64,
    burst: Option<u64>,
    /// `window_us / limit` rounded up, kept: the bucket algorithms read it
    /// on every decision, and a division costs tens of cycles.
    interval_us: u64,
}

impl Quota {
    /// `limit` units per `window` (counted in whole microseconds).
    pub fn new(limit: u64, window: Duration) -> Result<Self, QuotaError> {
        if limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        if window < MIN_WINDOW || window > MAX_WINDOW {
            return Err(QuotaError::WindowOutOfRange(window));
        }
        // Time is counted in whole microseconds; a rate above one unit per
        // microsecond cannot be scheduled.
        let window_us = duration_to_micros(window);
        if limit > window_us {
            return Err(QuotaError::RateTooHigh { limit, window });
        }
        Ok(Self {
            limit,
            window_us,
            burst: None,
            interval_us: window_us.div_ceil(limit),
        })
    }

    /// `limit` units per second.
    pub fn per_second(limit: u64) -> Result<Self, QuotaError> {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` units per minute.
    pub fn per_minute(limit: u64) -> Result<Self, QuotaError> {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` units per hour.
    pub fn per_hour(limit: u64) -> Result<Self, QuotaError> {
        Self::new(limit, Duration::from_secs(3_600))
    }

    /// `limit` units per day.
    pub fn per_day(limit: u64) -> Result<Self, QuotaError> {
        Self::new(limit, Duration::from_secs(86_400))
    }

    /// One instance's share when `instances` share this quota without a
    /// common store: the limit and the burst divided by `instances`,
    /// rounded down, at least 1 (so `n` instances together never admit
    /// more than the quota, except where it is smaller than `n`). The
    /// window stays.
    ///
    /// ```
    /// use ratekeeper_core::Quota;
    ///
    /// let q: Quota = "100/minute".parse()?;
    /// assert_eq!(q.share_of(3).limit(), 33);
    /// assert_eq!(q.share_of(500).limit(), 1);
    /// assert_eq!(q.share_of(0), q);
    /// # Ok::<(), ratekeeper_core::QuotaError>(())
    /// ```
    #[must_use]
    pub fn share_of(self, instances: u64) -> Self {
        let n = instances.max(1);
        let limit = (self.limit / n).max(1);
        Self {
            limit,
            burst: self.burst.map(|b| (b / n).max(1)),
            interval_us: self.window_us.div_ceil(limit),
            ..self
        }
    }

    /// Sets how many units may be spent at once by the bucket algorithms and GCRA
    /// (default: the limit). Window algorithms reject a rule with a burst.
    pub fn with_burst(self, burst: u64) -> Result<Self, QuotaError> {
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        let quota = Self {
            burst: Some(burst),
            ..self
        };
        if u128::from(burst) * u128::from(quota.emission_interval_us())
            > u128::from(duration_to_micros(MAX_HORIZON))
        {
            return Err(QuotaError::BurstTooLarge(burst));
        }
        Ok(quota)
    }

    /// Units per window.
    #[inline]
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    /// The window.
    pub const fn window(&self) -> Duration {
        Duration::from_micros(self.window_us)
    }

    /// The burst: how many units a bucket algorithm can spend at once.
    #[inline]
    pub const fn burst(&self) -> u64 {
        match self.burst {
            Some(b) => b,
            None => self.limit,
        }
    }

    /// Whether a burst was set explicitly.
    pub const fn has_explicit_burst(&self) -> bool {
        self.burst.is_some()
    }

    /// The window in microseconds.
    #[inline]
    pub const fn window_micros(&self) -> u64 {
        self.window_us
    }

    /// The time one unit takes to come back, in microseconds: `window / limit`
    /// rounded up (so the rate never exceeds the quota).
    #[inline]
    pub const fn emission_interval_us(&self) -> u64 {
        self.interval_us
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, format_duration(self.window()))?;
        if let Some(b) = self.burst {
            write!(f, " burst {b}")?;
        }
        Ok(())
    }
}

/// The units a quota's period may also be: a week (7 days), a month (30
/// days) and a year (365 days), the nominal lengths a rule on a
/// [calendar](crate::Rule::with_calendar) replaces with the real ones.
fn calendar_unit_micros(unit: &str) -> Option<u64> {
    const DAY: u64 = 86_400_000_000;
    Some(match unit {
        "w" | "week" | "weeks" => 7 * DAY,
        "mo" | "month" | "months" => 30 * DAY,
        "y" | "year" | "years" => 365 * DAY,
        _ => return None,
    })
}

impl FromStr for Quota {
    type Err = QuotaError;

    /// Parses `"<limit>/<period>"` or `"<limit> per <period>"`, where the period
    /// is a unit (`s`, `second`, `minute`, `h`, `day`, `week`, `month`,
    /// `year`, ...) or a duration (`30s`, `1h`, `1h30m`). A month is 30
    /// days and a year 365, unless the rule follows a calendar.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let parse_err = |reason: &str| QuotaError::Parse {
            input: input.chars().take(64).collect(),
            reason: reason.to_owned(),
        };
        let s = input.trim();
        let (limit, period) = if let Some((l, p)) = s.split_once('/') {
            (l, p)
        } else if let Some((l, p)) = s.split_once(" per ") {
            (l, p)
        } else {
            return Err(parse_err(
                "no '/' or ' per ' between the limit and the period",
            ));
        };
        let limit: u64 = limit
            .trim()
            .parse()
            .map_err(|_| parse_err("the limit is not a whole number"))?;
        let period = period.trim().to_ascii_lowercase();
        let window = match unit_micros(&period).or_else(|| calendar_unit_micros(&period)) {
            Some(us) => Duration::from_micros(us),
            None if !period.starts_with(|c: char| c.is_ascii_digit()) => {
                return Err(parse_err(&format!(
                    "unknown unit {:?} (expected second, minute, hour, day, week, month, year or a duration such as 30s)",
                    period.chars().take(32).collect::<String>()
                )));
            }
            None => parse_duration(&period).map_err(|e| parse_err(&e.to_string()))?,
        };
        Self::new(limit, window).map_err(|e| match e {
            QuotaError::Parse { .. } => e,
            other => parse_err(&other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms_users_know() {
        let cases = [
            ("100/minute", 100, 60),
            ("10/s", 10, 1),
            ("1000/1h", 1000, 3600),
            ("5 per second", 5, 1),
            ("20/30s", 20, 30),
            ("7/day", 7, 86_400),
            ("10000/month", 10_000, 30 * 86_400),
            ("500 per week", 500, 7 * 86_400),
            ("1/year", 1, 365 * 86_400),
            (" 3 / hour ", 3, 3600),
        ];
        for (s, limit, secs) in cases {
            let q: Quota = s.parse().unwrap();
            assert_eq!(
                (q.limit(), q.window()),
                (limit, Duration::from_secs(secs)),
                "{s}"
            );
        }
    }

    #[test]
    fn rejects_with_clear_errors() {
        for (s, needle) in [
            ("100", "no '/'"),
            ("x/s", "not a whole number"),
            ("-1/s", "not a whole number"),
            ("0/s", "at least 1"),
            ("10/fortnight", "unknown unit"),
            ("10/0s", "out of range"),
            ("10/400d", "out of range"),
            ("2000000/s", "more than one unit per microsecond"),
        ] {
            let err = s.parse::<Quota>().unwrap_err().to_string();
            assert!(err.contains(needle), "{s}: {err}");
        }
    }

    #[test]
    fn emission_interval_rounds_up() {
        assert_eq!(
            Quota::per_second(3).unwrap().emission_interval_us(),
            333_334
        );
        assert_eq!(
            Quota::per_minute(100).unwrap().emission_interval_us(),
            600_000
        );
        // A share has its own interval, and equals the quota made for it.
        let share = Quota::per_minute(100).unwrap().share_of(3);
        assert_eq!(share.emission_interval_us(), 1_818_182);
        assert_eq!(share, Quota::per_minute(33).unwrap());
    }

    #[test]
    fn burst_is_validated() {
        let q = Quota::per_second(10).unwrap();
        assert_eq!(q.burst(), 10);
        assert_eq!(q.with_burst(25).unwrap().burst(), 25);
        assert_eq!(q.with_burst(0), Err(QuotaError::ZeroBurst));
        assert!(matches!(
            Quota::per_day(1).unwrap().with_burst(1_000_000),
            Err(QuotaError::BurstTooLarge(_))
        ));
    }

    #[test]
    fn window_bounds_are_inclusive_and_exact() {
        // 366 days is the longest window; one microsecond more is refused.
        assert_eq!(MAX_WINDOW, Duration::from_secs(31_622_400));
        assert!(Quota::new(1, MAX_WINDOW).is_ok());
        assert!("10/366d".parse::<Quota>().is_ok());
        assert_eq!(
            Quota::new(1, MAX_WINDOW + Duration::from_micros(1)),
            Err(QuotaError::WindowOutOfRange(
                MAX_WINDOW + Duration::from_micros(1)
            ))
        );
        assert!(Quota::new(1, MIN_WINDOW).is_ok());
    }

    #[test]
    fn a_burst_that_empties_in_exactly_the_horizon_is_allowed() {
        // One unit per microsecond: emptying the burst takes `burst` µs, so a
        // burst of exactly 2^49 reaches the horizon and one more goes past it.
        let q = Quota::new(1, MIN_WINDOW).unwrap();
        assert_eq!(q.emission_interval_us(), 1);
        let at_horizon = 1u64 << 49;
        assert_eq!(q.with_burst(at_horizon).unwrap().burst(), at_horizon);
        assert_eq!(
            q.with_burst(at_horizon + 1),
            Err(QuotaError::BurstTooLarge(at_horizon + 1))
        );
    }

    #[test]
    fn display_round_trips() {
        let q: Quota = "100/1m".parse().unwrap();
        assert_eq!(q.to_string(), "100/1m");
        assert_eq!(q.to_string().parse::<Quota>().unwrap(), q);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any string either parses into a valid quota or is rejected with an
        /// error; never a panic, and what parses prints back to the same quota.
        #[test]
        fn parsing_never_panics(input in "\\PC{0,40}") {
            if let Ok(q) = input.parse::<Quota>() {
                prop_assert!(q.limit() >= 1 && q.window() >= MIN_WINDOW && q.window() <= MAX_WINDOW);
                prop_assert_eq!(q.to_string().parse::<Quota>(), Ok(q));
            }
        }

        #[test]
        fn quota_like_strings_never_panic(limit in "[0-9]{0,25}", sep in "(/| per |//)", n in "[0-9]{0,22}", unit in "(s|m|h|d|ms|us|second|minutes|x|)") {
            let _ = format!("{limit}{sep}{n}{unit}").parse::<Quota>();
        }

        #[test]
        fn durations_never_panic(input in "[0-9a-zµ ]{0,30}") {
            if let Ok(d) = crate::parse_duration(&input) {
                // What parses formats back to the same duration.
                prop_assert_eq!(crate::parse_duration(&crate::format_duration(d)).ok(), Some(d));
            }
        }
    }
}
