//! Why a rule was rejected.

use std::fmt;
use std::time::Duration;

use super::{Algorithm, MAX_SLIDING_LOG_LIMIT};

/// Why a rule was rejected.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// The name is empty, too long, or has a character outside the allowed set.
    InvalidName {
        /// The name, cut to 64 characters.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A burst was set on an algorithm that counts per window.
    BurstNotSupported(Algorithm),
    /// The sliding window log or a concurrency rule was given a limit
    /// above [`MAX_SLIDING_LOG_LIMIT`].
    LogLimitTooLarge(u64),
    /// The penalty is zero or longer than [`MAX_HORIZON`](crate::quota::MAX_HORIZON).
    InvalidPenalty(Duration),
    /// A calendar was given to an algorithm other than the fixed window.
    CalendarNeedsFixedWindow(Algorithm),
    /// A calendar was given to a quota whose window is not a day, a week,
    /// a month (30 days) or a year (365 days).
    CalendarWindow(Duration),
    /// The quota a constructor was given is not valid
    /// ([`Rule::concurrency`](super::Rule::concurrency)).
    Quota(crate::quota::QuotaError),
    /// A concurrency rule was given both a wait for a place and a penalty:
    /// a request waiting for a place is denied until one comes free, and a
    /// penalty would block the key at the first of those denials.
    WaitWithPenalty,
    /// Waiting in line was asked of an algorithm that cannot keep a line
    /// ([`Rule::with_wait`](super::Rule::with_wait)): only GCRA, the
    /// leaky bucket and concurrency can.
    WaitNotSupported(Algorithm),
    /// Waiting in line that would admit no one: no waiter, or a wait
    /// shorter than the time between two units at the quota's rate.
    WaitAdmitsNoOne {
        /// The longest wait asked for.
        up_to: Duration,
        /// The waiters asked for.
        waiters: u64,
        /// The time between two units at the quota's rate (zero on a
        /// concurrency rule, whose line needs only a wait longer than zero).
        interval: Duration,
    },
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { name, reason } => write!(f, "invalid rule name {name:?}: {reason}"),
            Self::BurstNotSupported(a) => write!(
                f,
                "{a} counts per window and takes no burst (a burst applies to token_bucket, leaky_bucket and gcra)"
            ),
            Self::LogLimitTooLarge(l) => write!(
                f,
                "sliding_window_log and concurrency keep one entry per request; a limit of {l} is \
                 above their maximum of {MAX_SLIDING_LOG_LIMIT} (use sliding_window_counter for \
                 large rates)"
            ),
            Self::InvalidPenalty(d) => write!(
                f,
                "invalid penalty {d:?}: it must be longer than zero and at most ~17 years"
            ),
            Self::CalendarNeedsFixedWindow(a) => write!(
                f,
                "{a} cannot count calendar windows (a calendar applies to fixed_window)"
            ),
            Self::CalendarWindow(d) => write!(
                f,
                "a calendar window is a day, a week, a month or a year, not {} \
                 (expected a quota such as \"10000/month\")",
                crate::duration::format_duration(*d)
            ),
            Self::Quota(e) => e.fmt(f),
            Self::WaitNotSupported(a) => write!(
                f,
                "{a} cannot make requests wait in line: waiting applies to gcra and leaky_bucket \
                 (which admit exactly what token_bucket admits) and to concurrency"
            ),
            Self::WaitWithPenalty => f.write_str(
                "a concurrency rule cannot both wait for a place and block with a penalty (a \
                 waiting request is denied until a place comes free): give one or the other",
            ),
            Self::WaitAdmitsNoOne { waiters: 0, .. } => {
                f.write_str("a line of 0 waiters admits no one (expected at least 1)")
            }
            Self::WaitAdmitsNoOne { interval, .. } if interval.is_zero() => {
                f.write_str("waiting up to 0s admits no one (expected a wait longer than zero)")
            }
            Self::WaitAdmitsNoOne {
                up_to, interval, ..
            } => write!(
                f,
                "waiting up to {} admits no one: the quota lets one unit in every {}, so wait \
                 at least that long",
                crate::duration::format_duration(*up_to),
                crate::duration::format_duration(*interval)
            ),
        }
    }
}

impl std::error::Error for RuleError {}
