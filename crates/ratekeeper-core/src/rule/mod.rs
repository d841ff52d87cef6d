//! Rules: a named quota enforced by one algorithm, with an optional penalty.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use smol_str::SmolStr;

use crate::calendar::{Calendar, Period, Span, Windows};
use crate::quota::{MAX_HORIZON, Quota};

mod error;
mod wait;

pub use error::RuleError;
pub use wait::Wait;

/// The longest rule name.
pub const MAX_RULE_NAME_LEN: usize = 128;
/// The largest limit the sliding window log accepts: its state keeps one entry
/// per admitted instant, so its memory grows with the limit.
pub const MAX_SLIDING_LOG_LIMIT: u64 = 10_000;

/// The rate-limiting algorithms. See `docs/algorithms.md` for how each works,
/// its state and its accuracy.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Counts per aligned window; resets at each window boundary.
    FixedWindow,
    /// Remembers every admitted instant; exact over any sliding window.
    SlidingWindowLog,
    /// Weighs the previous window's count by its overlap; two counters of state.
    SlidingWindowCounter,
    /// A bucket of `burst` tokens refilled at `limit / window`.
    TokenBucket,
    /// A bucket that drains at `limit / window`; requests fill it up to `burst`.
    LeakyBucket,
    /// Generic cell rate algorithm: a theoretical arrival time, one integer of state.
    Gcra,
    /// At most `limit` units in flight: each admitted request holds a lease
    /// on its cost until it is released ([`Limiter::acquire`](crate::Limiter::acquire)
    /// and its [`Permit`](crate::Permit)) or, if it never is (a process
    /// that crashed), until the quota's window has passed. Not a rate.
    Concurrency,
}

impl Algorithm {
    /// Every algorithm, in documentation order: the six that limit a rate,
    /// then [`Concurrency`](Self::Concurrency).
    pub const ALL: [Self; 7] = [
        Self::FixedWindow,
        Self::SlidingWindowLog,
        Self::SlidingWindowCounter,
        Self::TokenBucket,
        Self::LeakyBucket,
        Self::Gcra,
        Self::Concurrency,
    ];

    /// The six algorithms that limit a rate (every one but
    /// [`Concurrency`](Self::Concurrency)).
    pub const RATES: [Self; 6] = [
        Self::FixedWindow,
        Self::SlidingWindowLog,
        Self::SlidingWindowCounter,
        Self::TokenBucket,
        Self::LeakyBucket,
        Self::Gcra,
    ];

    /// Everything the code knows about one algorithm besides its step: one
    /// row per algorithm, and the only place these facts are written. The
    /// match has no wildcard, so a new algorithm does not compile until it
    /// has its row.
    const fn facts(self) -> Facts {
        match self {
            Self::FixedWindow => Facts {
                name: "fixed_window",
                aliases: &["fixed"],
                tag: 1,
                fields: Some(2),
                burst: false,
            },
            Self::SlidingWindowLog => Facts {
                name: "sliding_window_log",
                aliases: &["sliding_log"],
                tag: 2,
                fields: None,
                burst: false,
            },
            Self::SlidingWindowCounter => Facts {
                name: "sliding_window_counter",
                aliases: &["sliding_window"],
                tag: 3,
                fields: Some(3),
                burst: false,
            },
            Self::TokenBucket => Facts {
                name: "token_bucket",
                aliases: &[],
                tag: 4,
                fields: Some(2),
                burst: true,
            },
            Self::LeakyBucket => Facts {
                name: "leaky_bucket",
                aliases: &[],
                tag: 5,
                fields: Some(2),
                burst: true,
            },
            Self::Gcra => Facts {
                name: "gcra",
                aliases: &[],
                tag: 6,
                fields: Some(1),
                burst: true,
            },
            Self::Concurrency => Facts {
                name: "concurrency",
                aliases: &["in_flight", "concurrent"],
                tag: 7,
                fields: None,
                burst: false,
            },
        }
    }

    /// The canonical snake_case name (`"sliding_window_counter"`).
    pub const fn as_str(self) -> &'static str {
        self.facts().name
    }

    /// The algorithm's tag in the stored state format
    /// ([`RuleState`](crate::kit::RuleState)): 1 fixed window, 2 sliding window log, 3
    /// sliding window counter, 4 token bucket, 5 leaky bucket, 6 GCRA, 7
    /// concurrency. Stores
    /// that decide natively (the Redis scripts) use it too.
    pub const fn state_tag(self) -> u8 {
        self.facts().tag
    }

    /// The algorithm whose [`state_tag`](Self::state_tag) is `tag`.
    pub fn from_state_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.state_tag() == tag)
    }

    /// How many 64-bit fields its stored state has after the common header
    /// ([`RuleState`](crate::kit::RuleState)); `None` for the sliding window log and
    /// concurrency, whose length varies.
    pub const fn state_fields(self) -> Option<u8> {
        self.facts().fields
    }

    /// Whether the algorithm limits requests in flight rather than a rate
    /// ([`Concurrency`](Self::Concurrency)): its units are places, held
    /// until released.
    pub const fn limits_in_flight(self) -> bool {
        matches!(self, Self::Concurrency)
    }

    /// Whether the algorithm meters a steady rate with a burst (token bucket,
    /// leaky bucket, GCRA) rather than counting per window.
    pub const fn uses_burst(self) -> bool {
        self.facts().burst
    }
}

/// See [`Algorithm::facts`].
#[derive(Clone, Copy)]
struct Facts {
    name: &'static str,
    /// Other names accepted when parsing.
    aliases: &'static [&'static str],
    tag: u8,
    fields: Option<u8>,
    burst: bool,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An algorithm name that is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAlgorithm(String);

impl UnknownAlgorithm {
    /// The name that was given (cut to 64 characters).
    pub fn input(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown algorithm {:?} (expected one of ", self.0)?;
        for (i, a) in Algorithm::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(a.as_str())?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|a| {
                let facts = a.facts();
                facts.name == norm || facts.aliases.contains(&norm.as_str())
            })
            .ok_or_else(|| UnknownAlgorithm(s.chars().take(64).collect()))
    }
}

/// A named quota enforced by one algorithm; cheap to clone.
///
/// The name identifies the rule's state in the store (`"{name}:{key}"`), so two
/// rules with the same name share counters. Names are 1 to 128 printable ASCII
/// characters without spaces, `:`, `{` or `}`.
///
/// ```
/// use ratekeeper_core::{Algorithm, Quota, Rule};
/// use std::time::Duration;
///
/// let rule = Rule::new("login", Algorithm::SlidingWindowCounter, "5/minute".parse()?)?
///     .with_penalty(Duration::from_secs(300))?;
/// assert_eq!(rule.name(), "login");
/// assert_eq!(rule.capacity(), 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    name: SmolStr,
    algorithm: Algorithm,
    quota: Quota,
    penalty: Option<Duration>,
    /// Calendar windows in place of windows aligned to the epoch.
    calendar: Option<Arc<Windows>>,
    /// Waiting in line on a bucket, and the rule the store decides in its place.
    line: Option<Arc<wait::Line>>,
    /// Waiting in line for a place in flight (a concurrency rule).
    queue: Option<wait::Wait>,
    /// Made from a rule with a line ([`Rule::without_wait`]): it takes no
    /// refund either, since requests may wait in that line.
    lined: bool,
    /// On the rule a store decides for a rule with a line: the units of its
    /// burst that are places in line.
    places: u64,
}

impl Rule {
    /// A rule called `name` enforcing `quota` with `algorithm`.
    pub fn new(name: &str, algorithm: Algorithm, quota: Quota) -> Result<Self, RuleError> {
        validate_name(name)?;
        if quota.has_explicit_burst() && !algorithm.uses_burst() {
            return Err(RuleError::BurstNotSupported(algorithm));
        }
        if algorithm.state_fields().is_none() && quota.limit() > MAX_SLIDING_LOG_LIMIT {
            return Err(RuleError::LogLimitTooLarge(quota.limit()));
        }
        Ok(Self {
            name: SmolStr::new(name),
            algorithm,
            quota,
            penalty: None,
            calendar: None,
            line: None,
            queue: None,
            lined: false,
            places: 0,
        })
    }

    /// At most `max` units in flight for each key (requests, or weighted by
    /// their cost), each held until it is released or, at the latest,
    /// `lease` after it was taken: the bound on how long a crashed holder
    /// keeps its place. [`Limiter::acquire`](crate::Limiter::acquire)
    /// takes a [`Permit`](crate::Permit) that releases it.
    ///
    /// ```
    /// use ratekeeper_core::Rule;
    /// use std::time::Duration;
    ///
    /// let exports = Rule::concurrency("exports", 2, Duration::from_secs(600))?;
    /// assert_eq!(exports.capacity(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn concurrency(name: &str, max: u64, lease: Duration) -> Result<Self, RuleError> {
        let quota = Quota::new(max, lease).map_err(RuleError::Quota)?;
        Self::new(name, Algorithm::Concurrency, quota)
    }

    /// Counts the quota's windows on `calendar`: a quota per day, week,
    /// month (`"10000/month"`) or year starts again at local midnight of
    /// the day, of the week's first day, of the 1st of the month or of
    /// January 1st, in the calendar's time zone, whatever the month's
    /// length and across daylight-saving changes; decisions tell the true
    /// time to that boundary. Fixed window only. Without a calendar, a
    /// month is a span of 30 days aligned to the epoch.
    pub fn with_calendar(mut self, calendar: Calendar) -> Result<Self, RuleError> {
        if self.algorithm != Algorithm::FixedWindow {
            return Err(RuleError::CalendarNeedsFixedWindow(self.algorithm));
        }
        let window = self.quota.window();
        let period = Period::of_window(window).ok_or(RuleError::CalendarWindow(window))?;
        self.calendar = Some(Arc::new(Windows { calendar, period }));
        Ok(self)
    }

    /// The calendar the rule's windows follow, if any, and which windows.
    pub fn calendar(&self) -> Option<(&Calendar, Period)> {
        self.calendar.as_deref().map(|w| (&w.calendar, w.period))
    }

    /// The windows around `now` (µs) of a rule on a calendar.
    #[inline]
    pub(crate) fn calendar_span(&self, now: u64) -> Option<Span> {
        self.calendar.as_deref()?.span(now)
    }

    /// Six consecutive window boundaries around `now` (µs), for a store
    /// that decides on its own clock: see [`Rule::with_calendar`]. `None`
    /// for a rule without a calendar.
    pub fn calendar_boundaries(&self, now: u64) -> Option<[u64; 6]> {
        self.calendar.as_deref()?.boundaries(now)
    }

    /// Blocks a client for `penalty` once it is denied (ratethrottle's
    /// `block_duration`): every request in that time is denied, and the block is
    /// not extended by requests made while it lasts. Peeks never trigger it.
    pub fn with_penalty(mut self, penalty: Duration) -> Result<Self, RuleError> {
        if penalty.is_zero() || penalty > MAX_HORIZON {
            return Err(RuleError::InvalidPenalty(penalty));
        }
        self.penalty = Some(penalty);
        self.relined()
    }

    /// The same rule with one instance's share of its quota
    /// ([`Quota::share_of`]): what each of `instances` enforces on its own
    /// when they cannot share a store. Same name, algorithm and penalty;
    /// the same wait in line when the share's slower rate still lets one
    /// waiter in within it (see [`with_wait`](Self::with_wait)), else none.
    #[must_use]
    pub fn share_of(&self, instances: u64) -> Self {
        let share = Self {
            quota: self.quota.share_of(instances),
            line: None,
            ..self.clone()
        };
        match self.wait() {
            Some(wait) => share.clone().with_wait(wait).unwrap_or(share),
            None => share,
        }
    }

    /// The rule's name.
    #[inline]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule's name as a cheaply clonable string (what a
    /// [`Decision`](crate::Decision) carries; short names are stored inline).
    #[inline]
    pub(crate) fn shared_name(&self) -> &SmolStr {
        &self.name
    }

    /// The algorithm.
    #[inline]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The quota.
    #[inline]
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The penalty, if any.
    #[inline]
    pub fn penalty(&self) -> Option<Duration> {
        self.penalty
    }

    /// The most units one request can ever be granted: the burst for bucket
    /// algorithms and GCRA, the limit for window algorithms.
    #[inline]
    pub fn capacity(&self) -> u64 {
        if self.algorithm.uses_burst() {
            self.quota.burst()
        } else {
            self.quota.limit()
        }
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &&*self.name)
            .field("algorithm", &self.algorithm)
            .field("quota", &self.quota.to_string())
            .field("penalty", &self.penalty)
            .field("calendar", &self.calendar())
            .field("wait", &self.wait())
            .finish()
    }
}

fn validate_name(name: &str) -> Result<(), RuleError> {
    let invalid = |reason| RuleError::InvalidName {
        name: name.chars().take(64).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_RULE_NAME_LEN {
        return Err(invalid("it is longer than 128 bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b':' | b'{' | b'}'))
    {
        return Err(invalid(
            "only printable ASCII without spaces, ':', '{' or '}' is allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> Quota {
        Quota::per_second(10).unwrap()
    }

    /// The table's rows agree with `ALL`: tags 1..=n in order, distinct
    /// names, and every name, alias and tag leads back to its algorithm.
    #[test]
    fn every_algorithm_has_one_consistent_row() {
        for (i, a) in Algorithm::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(a.state_tag()), i + 1, "{a}");
            assert_eq!(Algorithm::from_state_tag(a.state_tag()), Some(a));
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
            for alias in a.facts().aliases {
                assert_eq!(alias.parse::<Algorithm>(), Ok(a), "{alias}");
            }
            assert_eq!(
                a.state_fields().is_none(),
                matches!(a, Algorithm::SlidingWindowLog | Algorithm::Concurrency)
            );
        }
        let mut names: Vec<_> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Algorithm::ALL.len());
        assert_eq!(Algorithm::from_state_tag(0), None);
        assert_eq!(Algorithm::from_state_tag(8), None);
        assert_eq!(Algorithm::RATES, Algorithm::ALL[..6]);
        assert_eq!(
            "Token-Bucket".parse::<Algorithm>(),
            Ok(Algorithm::TokenBucket)
        );
        assert_eq!(
            "fast".parse::<Algorithm>().unwrap_err().to_string(),
            "unknown algorithm \"fast\" (expected one of fixed_window, sliding_window_log, \
             sliding_window_counter, token_bucket, leaky_bucket, gcra, concurrency)"
        );
    }

    #[test]
    fn names_are_validated() {
        assert!(Rule::new("api.v1/users", Algorithm::Gcra, q()).is_ok());
        for bad in ["", "a b", "a:b", "{tag}", "é", &"x".repeat(129)] {
            assert!(
                matches!(
                    Rule::new(bad, Algorithm::Gcra, q()),
                    Err(RuleError::InvalidName { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn burst_only_for_bucket_algorithms() {
        let bursty = q().with_burst(20).unwrap();
        assert_eq!(
            Rule::new("r", Algorithm::Gcra, bursty).unwrap().capacity(),
            20
        );
        assert_eq!(
            Rule::new("r", Algorithm::FixedWindow, bursty),
            Err(RuleError::BurstNotSupported(Algorithm::FixedWindow))
        );
    }

    #[test]
    fn sliding_log_limit_is_bounded() {
        let big = Quota::per_hour(10_001).unwrap();
        assert_eq!(
            Rule::new("r", Algorithm::SlidingWindowLog, big),
            Err(RuleError::LogLimitTooLarge(10_001))
        );
    }

    #[test]
    fn penalty_is_validated() {
        let r = Rule::new("r", Algorithm::Gcra, q()).unwrap();
        assert!(r.clone().with_penalty(Duration::ZERO).is_err());
        assert_eq!(
            r.with_penalty(Duration::from_secs(5)).unwrap().penalty(),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), a);
        }
        assert_eq!(
            "Sliding-Window".parse::<Algorithm>().unwrap(),
            Algorithm::SlidingWindowCounter
        );
        assert!("lottery".parse::<Algorithm>().is_err());
    }
}
