//! Decisions: the outcome of asking whether a request may proceed.

use std::time::Duration;

use smol_str::SmolStr;

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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decision {
    allowed: bool,
    limit: u64,
    remaining: u64,
    reset_after: Duration,
    retry_after: Option<Duration>,
    rule: SmolStr,
}

impl Decision {
    /// An admission by `rule`, leaving `remaining` of `limit` units.
    #[inline]
    pub fn allow(rule: SmolStr, limit: u64, remaining: u64, reset_after: Duration) -> Self {
        Self {
            allowed: true,
            limit,
            remaining,
            reset_after,
            retry_after: None,
            rule,
        }
    }

    /// A denial by `rule`; the same request may succeed after `retry_after`.
    #[inline]
    pub fn deny(
        rule: SmolStr,
        limit: u64,
        remaining: u64,
        reset_after: Duration,
        retry_after: Duration,
    ) -> Self {
        Self {
            allowed: false,
            limit,
            remaining,
            reset_after,
            retry_after: Some(retry_after),
            rule,
        }
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
        self.reset_after
    }

    /// When denied: how long until the same request could succeed.
    #[inline]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The name of the rule that decided.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// Whether `self` is more restrictive than `other`: a denial beats an
    /// admission, a longer wait beats a shorter one, fewer remaining units beat more.
    pub fn is_more_restrictive_than(&self, other: &Self) -> bool {
        match (self.allowed, other.allowed) {
            (false, true) => true,
            (true, false) => false,
            (false, false) => self.retry_after > other.retry_after,
            (true, true) => self.remaining < other.remaining,
        }
    }
}
