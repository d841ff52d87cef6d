//! The service's requests and answers, whatever the protocol.

use std::time::Duration;

/// Envoy's units of time, for limits a request brings along and for the
/// limits reported back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    /// 30 days, as envoyproxy/ratelimit counts it.
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    pub(crate) fn window(self) -> Duration {
        Duration::from_secs(match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        })
    }

    /// The unit whose length is exactly `window`.
    pub(crate) fn of(window: Duration) -> Option<Unit> {
        Self::ALL.into_iter().find(|u| u.window() == window)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// The unit of Envoy's `RateLimitUnit` number (SECOND 1, MINUTE 2,
    /// HOUR 3, DAY 4, MONTH 5, YEAR 6; it has no week).
    pub(crate) fn from_envoy(number: i64) -> Option<Unit> {
        match number {
            1 => Some(Unit::Second),
            2 => Some(Unit::Minute),
            3 => Some(Unit::Hour),
            4 => Some(Unit::Day),
            5 => Some(Unit::Month),
            6 => Some(Unit::Year),
            _ => None,
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Unit> {
        Self::ALL.into_iter().find(|u| u.as_str() == text)
    }
}

/// One request: a domain, its descriptors, and the units it costs.
#[derive(Debug, Default)]
pub(crate) struct Check {
    pub(crate) domain: String,
    pub(crate) descriptors: Vec<Descriptor>,
    /// Units each descriptor costs unless it says otherwise.
    pub(crate) hits: u64,
}

/// One descriptor of a request.
#[derive(Debug, Default, Clone)]
pub(crate) struct Descriptor {
    pub(crate) entries: Vec<(String, String)>,
    /// Its own cost; 0 looks without charging.
    pub(crate) hits: Option<u64>,
    /// A limit the caller brings for this descriptor instead of the
    /// configured one.
    pub(crate) limit: Option<(u64, Unit)>,
    /// Units to give back instead of taking (`is_negative_hits`).
    pub(crate) negative: bool,
}

/// Why a request gets no answer.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The request is malformed or past a bound.
    Invalid(String),
    /// The store failed and the domain answers errors for that.
    Unavailable(String),
}

/// A limit as reported back.
#[derive(Debug, Clone)]
pub(crate) struct Shown {
    pub(crate) name: String,
    pub(crate) limit: u64,
    pub(crate) window: Duration,
}

/// One descriptor's answer.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    pub(crate) over_limit: bool,
    /// The limit that applied; `None` when none did (no match, unlimited).
    pub(crate) limit: Option<Shown>,
    pub(crate) remaining: u64,
    pub(crate) reset_after: Duration,
    pub(crate) retry_after: Option<Duration>,
    /// Decided in shadow mode and over its limit: reported, not enforced.
    pub(crate) shadow_over_limit: bool,
}

impl Status {
    pub(crate) fn free() -> Self {
        Self {
            over_limit: false,
            limit: None,
            remaining: 0,
            reset_after: Duration::ZERO,
            retry_after: None,
            shadow_over_limit: false,
        }
    }
}

/// A request's answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) over_limit: bool,
    pub(crate) statuses: Vec<Status>,
    /// Response headers, when the service adds them.
    pub(crate) headers: Vec<(String, String)>,
}
