//! Decisions: the outcome of asking whether a request may proceed.

use std::fmt;
use std::time::Duration;

use smol_str::SmolStr;

use crate::rule::Rule;

/// Whether a request may proceed, and what a client should be told.
///
/// A denial is a value, not an error. When several rules decided together, the
/// decision reported is the most restrictive one: the denying rule with the
/// longest wait, or, when all allowed, the rule with the fewest units left.
///
/// `reset_after` is the time after which, with no further requests, the full
/// limit would be available again. `retry_after` is set exactly when the request
/// was denied: the earliest time at which the same request could succeed if no
/// other request arrived in between.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Decision {
    rule: SmolStr,
    limit: u64,
    remaining: u64,
    /// µs; kept as integers so a decision stays one cache line.
    reset_after_us: u64,
    /// µs; [`NOT_DENIED`] when allowed.
    retry_after_us: u64,
    allowed: bool,
}

const NOT_DENIED: u64 = u64::MAX;

fn micros(d: Duration) -> u64 {
    crate::clock::duration_to_micros(d).min(NOT_DENIED - 1)
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("allowed", &self.allowed)
            .field("limit", &self.limit)
            .field("remaining", &self.remaining)
            .field("reset_after", &self.reset_after())
            .field("retry_after", &self.retry_after())
            .field("rule", &self.rule)
            .finish()
    }
}

impl Decision {
    /// An admission by the rule named `rule`, leaving `remaining` of
    /// `limit` units.
    #[inline]
    pub fn allow(rule: &str, limit: u64, remaining: u64, reset_after: Duration) -> Self {
        Self {
            rule: SmolStr::new(rule),
            limit,
            remaining,
            reset_after_us: micros(reset_after),
            retry_after_us: NOT_DENIED,
            allowed: true,
        }
    }

    /// A denial by the rule named `rule`; the same request may succeed
    /// after `retry_after`.
    #[inline]
    pub fn deny(
        rule: &str,
        limit: u64,
        remaining: u64,
        reset_after: Duration,
        retry_after: Duration,
    ) -> Self {
        Self {
            rule: SmolStr::new(rule),
            limit,
            remaining,
            reset_after_us: micros(reset_after),
            retry_after_us: micros(retry_after),
            allowed: false,
        }
    }

    /// An admission by `rule` (its name and limit), for stores that decide
    /// outside the engine (a Redis script): the name is shared, not copied.
    #[inline]
    pub fn allow_by(rule: &Rule, remaining: u64, reset_after: Duration) -> Self {
        Self::allow_us(
            rule.shared_name().clone(),
            rule.quota().limit(),
            remaining,
            micros(reset_after),
        )
    }

    /// A denial by `rule` (its name and limit), for stores that decide
    /// outside the engine; the same request may succeed after `retry_after`.
    #[inline]
    pub fn deny_by(
        rule: &Rule,
        remaining: u64,
        reset_after: Duration,
        retry_after: Duration,
    ) -> Self {
        Self::deny_us(
            rule.shared_name().clone(),
            rule.quota().limit(),
            remaining,
            micros(reset_after),
            micros(retry_after),
        )
    }

    /// An admission with times in µs (the engine's hot path).
    #[inline]
    pub(crate) fn allow_us(rule: SmolStr, limit: u64, remaining: u64, reset_after_us: u64) -> Self {
        Self {
            rule,
            limit,
            remaining,
            reset_after_us: reset_after_us.min(NOT_DENIED - 1),
            retry_after_us: NOT_DENIED,
            allowed: true,
        }
    }

    /// A denial with times in µs (the engine's hot path).
    #[inline]
    pub(crate) fn deny_us(
        rule: SmolStr,
        limit: u64,
        remaining: u64,
        reset_after_us: u64,
        retry_after_us: u64,
    ) -> Self {
        Self {
            rule,
            limit,
            remaining,
            reset_after_us: reset_after_us.min(NOT_DENIED - 1),
            retry_after_us: retry_after_us.min(NOT_DENIED - 1),
            allowed: false,
        }
    }

    /// The same decision with `places` fewer units left: a rule's places
    /// in line are not units a request can spend at once.
    #[inline]
    pub(crate) fn without_places(mut self, places: u64) -> Self {
        self.remaining = self.remaining.saturating_sub(places);
        self
    }

    /// Whether the request may proceed.
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// The quota's limit (units per window) of the deciding rule.
    #[inline]
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Units still available right after this decision.
    #[inline]
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Time until the full limit is available again, if no more requests come.
    #[inline]
    pub fn reset_after(&self) -> Duration {
        Duration::from_micros(self.reset_after_us)
    }

    /// When denied: how long until the same request could succeed.
    #[inline]
    pub fn retry_after(&self) -> Option<Duration> {
        (self.retry_after_us != NOT_DENIED).then(|| Duration::from_micros(self.retry_after_us))
    }

    /// The name of the rule that decided.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The decision a request decided by several rules reports, given each
    /// rule's decision: when any denies, the denial with the longest wait;
    /// when all allow, the admission with the fewest units left (the first
    /// on a tie). `None` for no decisions.
    ///
    /// ```
    /// use ratekeeper_core::Decision;
    /// use std::time::Duration;
    ///
    /// let s = Duration::from_secs;
    /// let each = [
    ///     Decision::allow("per-user", 10, 3, s(1)),
    ///     Decision::deny("per-route", 100, 0, s(60), s(2)),
    /// ];
    /// assert_eq!(Decision::most_restrictive(&each).unwrap().rule(), "per-route");
    /// ```
    pub fn most_restrictive(decisions: &[Decision]) -> Option<&Decision> {
        Self::most_restrictive_of(decisions.iter())
    }

    pub(crate) fn most_restrictive_of<'a>(
        decisions: impl Iterator<Item = &'a Decision> + Clone,
    ) -> Option<&'a Decision> {
        let denied = decisions.clone().any(|d| !d.allowed);
        // When the request is denied, only denials compete.
        decisions
            .filter(|d| !denied || !d.allowed)
            .reduce(|best, d| {
                if d.is_more_restrictive_than(best) {
                    d
                } else {
                    best
                }
            })
    }

    /// Whether `self` is more restrictive than `other`: a denial beats an
    /// admission, a longer wait beats a shorter one, fewer remaining units beat more.
    pub fn is_more_restrictive_than(&self, other: &Self) -> bool {
        match (self.allowed, other.allowed) {
            (false, true) => true,
            (true, false) => false,
            (false, false) => self.retry_after_us > other.retry_after_us,
            (true, true) => self.remaining < other.remaining,
        }
    }
}
