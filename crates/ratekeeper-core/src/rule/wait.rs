//! Waiting in line: a request a little over a bucket's rate is given a
//! later place instead of a denial.
//!
//! A rule with a line is decided by the store as the same rule with a
//! burst grown by the places in line: GCRA's theoretical arrival time and
//! the leaky bucket's level mean the same under either burst, so the store
//! takes a place atomically like any unit, and the part of the key's debt
//! past the real burst is how long the request waits for its turn. No
//! store changes and no polling: the caller sleeps until its turn.

use std::sync::Arc;
use std::time::Duration;

use super::{Algorithm, Rule, RuleError};
use crate::clock::duration_to_micros;
use crate::decision::Decision;

/// Waiting in line on a rule ([`Rule::with_wait`]): a request over the
/// rate waits for its turn instead of being denied, when a place in line
/// is free. The places are the turns of the quota's rate that come within
/// `up_to`, at most `waiters` and at most the burst; with none free, a
/// request is denied at once, and its `retry_after` says when a place
/// opens.
///
/// ```
/// use ratekeeper_core::rule::Wait;
/// use ratekeeper_core::{Algorithm, Rule};
/// use std::time::Duration;
///
/// let api = Rule::new("api", Algorithm::Gcra, "10/s".parse()?)?
///     .with_wait(Wait::new(Duration::from_secs(1), 5))?;
/// assert_eq!(api.wait(), Some(Wait::new(Duration::from_secs(1), 5)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Wait {
    up_to: Duration,
    waiters: u64,
}

impl Wait {
    /// Waiting at most `up_to`, with at most `waiters` waiting per key.
    pub const fn new(up_to: Duration, waiters: u64) -> Self {
        Self { up_to, waiters }
    }

    /// The longest a request waits for its turn.
    pub const fn up_to(self) -> Duration {
        self.up_to
    }

    /// The most requests of one key waiting at once (counted in units: a
    /// request of cost 3 takes three places in line).
    pub const fn waiters(self) -> u64 {
        self.waiters
    }
}

/// A rule's line: its wait, the places it has, and the rule the store
/// decides in its place (the burst grown by those places).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Line {
    wait: Wait,
    places: u64,
    store: Rule,
}

impl Rule {
    /// Makes requests over the rate wait for their turn instead of being
    /// denied (nginx's `limit_req burst=N`, without `nodelay`): up to
    /// `wait.waiters()` per key, each for at most `wait.up_to()`. The
    /// [`Limiter`](crate::Limiter) takes a request's place atomically in the
    /// store, then sleeps until its turn (on the limiter's clock: tokio's
    /// timer by default): every `check`, `check_each`, `reserve` and
    /// `acquire` on the rule returns when the request may proceed, and
    /// `peek` says whether a request would be let in, at once or after
    /// waiting. The places in line are whole turns of the quota's rate,
    /// never more than the waiters nor than the burst: with `"10/s"`,
    /// waiting up to 1 s gives at most 10 places. (A longer line would
    /// read, to the same rule without its line, as an older quota's debt,
    /// and be cut short under requests still waiting.)
    ///
    /// The line only ever moves forward, so that every request waiting
    /// keeps its turn and no two share one: a request whose future is
    /// dropped while it waits (a client gone, a timeout) keeps its place,
    /// and its turn goes unused; the rule takes no refund
    /// ([`Limiter::adjust`](crate::Limiter::adjust) refuses one, and a
    /// [`Reservation`](crate::Reservation) settled below its estimate keeps
    /// it). Other rules decided with it count the request when it is
    /// placed in line, not when its turn comes.
    ///
    /// On a [concurrency](Rule::concurrency) rule, a request finding every
    /// place in flight taken waits, up to `wait.up_to()`, for one to be
    /// released, in a fair line: first come, first let in, and a request
    /// arriving while others wait goes behind them, even if a place has
    /// just come free. The line is kept by the
    /// [`Limiter`](crate::Limiter) (the store keeps the places themselves,
    /// exact across processes): at most `wait.waiters()` units (requests,
    /// or weighted by their cost) of a key wait in each process. Only the
    /// first in line asks the store: at once when a place is released
    /// through the same limiter, else again every 50 ms at most (a place
    /// freed by another process, or a lease expired). A request that gives
    /// up (its future dropped, its wait over) leaves the line, and the one
    /// behind it moves up. Releases are refunds as before. Not with a
    /// penalty ([`RuleError::WaitWithPenalty`]): a waiting request is
    /// denied until a place comes free.
    ///
    /// GCRA, the leaky bucket and concurrency only (GCRA and the leaky
    /// bucket admit exactly what a token bucket admits; a token bucket
    /// counts the tokens left, which a line cannot be added to without
    /// reading the state differently): [`RuleError::WaitNotSupported`]
    /// otherwise, and [`RuleError::WaitAdmitsNoOne`] when the line would
    /// have no place.
    pub fn with_wait(mut self, wait: Wait) -> Result<Self, RuleError> {
        if self.algorithm == Algorithm::Concurrency {
            if wait.waiters == 0 || wait.up_to.is_zero() {
                return Err(RuleError::WaitAdmitsNoOne {
                    up_to: wait.up_to,
                    waiters: wait.waiters,
                    interval: Duration::ZERO,
                });
            }
            if self.penalty.is_some() {
                return Err(RuleError::WaitWithPenalty);
            }
            self.queue = Some(wait);
            return Ok(self);
        }
        if !matches!(self.algorithm, Algorithm::Gcra | Algorithm::LeakyBucket) {
            return Err(RuleError::WaitNotSupported(self.algorithm));
        }
        let interval = self.quota.emission_interval_us();
        let places = (duration_to_micros(wait.up_to) / interval)
            .min(wait.waiters)
            .min(self.quota.burst());
        if places == 0 {
            return Err(RuleError::WaitAdmitsNoOne {
                up_to: wait.up_to,
                waiters: wait.waiters,
                interval: Duration::from_micros(interval),
            });
        }
        let burst = self.quota.burst().saturating_add(places);
        let quota = self.quota.with_burst(burst).map_err(RuleError::Quota)?;
        let store = Self {
            quota,
            line: None,
            places,
            ..self.clone()
        };
        self.line = Some(Arc::new(Line {
            wait,
            places,
            store,
        }));
        Ok(self)
    }

    /// How requests over the rate wait in line, if they do.
    pub fn wait(&self) -> Option<Wait> {
        self.line.as_ref().map(|line| line.wait).or(self.queue)
    }

    /// How a request waits for a place in flight, if it does (a concurrency
    /// rule with a line).
    #[inline]
    pub(crate) fn queue(&self) -> Option<Wait> {
        self.queue
    }

    /// Whether requests over the rate wait in line on a bucket (the
    /// decision path's one look at it; see [`queue`](Self::queue) for a
    /// line for places in flight).
    #[inline]
    pub(crate) fn has_line(&self) -> bool {
        self.line.is_some()
    }

    /// The same rule without its line, for what holds back no request (a
    /// rule in shadow mode, a service that answers at once): a request
    /// over the rate is denied. It shares the rule's state, reads the line
    /// there as debt (a request fits once the line has passed), starts no
    /// penalty (a request the line would have placed is not to block the
    /// key), and takes no refund either (see [`takes_refunds`](Self::takes_refunds)).
    /// A rule without a line is returned as it is; a concurrency rule
    /// loses its line only (its places are released as before).
    #[must_use]
    pub fn without_wait(&self) -> Self {
        if self.line.is_none() {
            return Self {
                queue: None,
                ..self.clone()
            };
        }
        Self {
            line: None,
            penalty: None,
            lined: true,
            ..self.clone()
        }
    }

    /// Whether units can be given back to the rule
    /// ([`Adjustment::Refund`](crate::Adjustment::Refund)): not on a rule
    /// whose requests wait in line, nor on one made from it by
    /// [`without_wait`](Self::without_wait). The store records where the
    /// line ends, not who is in it, and each request in it sleeps until its
    /// own turn: moving the end back would give the next request a turn
    /// beside one still asleep.
    pub fn takes_refunds(&self) -> bool {
        self.line.is_none() && !self.lined
    }

    /// The units of the burst that are places in line: non-zero only on the
    /// rule a store decides for a rule with a line (see
    /// [`kit::leaves_no_room`](crate::kit::leaves_no_room)).
    #[inline]
    pub(crate) fn places_in_line(&self) -> u64 {
        self.places
    }

    /// How long the places of its line take to pass: the wait of the last
    /// request placed in it (zero without a line).
    pub(crate) fn line_length(&self) -> Duration {
        let places = self.line.as_ref().map_or(0, |line| line.places);
        Duration::from_micros(places.saturating_mul(self.quota.emission_interval_us()))
    }

    /// The rule with its line made again from its current fields (after a
    /// change to them).
    pub(super) fn relined(self) -> Result<Self, RuleError> {
        match self.wait() {
            Some(wait) => self.with_wait(wait),
            None => Ok(self),
        }
    }

    /// The rule the store decides: this one, or for a rule with a line,
    /// the same with its burst grown by the places in line.
    #[inline]
    pub(crate) fn for_store(&self) -> &Self {
        self.line.as_ref().map_or(self, |line| &line.store)
    }

    /// What the store's `decision` on [`for_store`](Self::for_store) means
    /// for a client of this rule, and how long a request it admitted waits
    /// for its turn: the part of the key's debt past the real burst (its
    /// `reset_after` is when the bucket is whole again). The places in
    /// line are not units left.
    pub(crate) fn read_store(&self, decision: Decision) -> (Decision, Duration) {
        let Some(line) = &self.line else {
            return (decision, Duration::ZERO);
        };
        let wait = if decision.is_allowed() {
            let burst = Duration::from_micros(
                self.quota
                    .burst()
                    .saturating_mul(self.quota.emission_interval_us()),
            );
            decision.reset_after().saturating_sub(burst)
        } else {
            Duration::ZERO
        };
        (decision.without_places(line.places), wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcra() -> Rule {
        Rule::new("r", Algorithm::Gcra, "10/s".parse().unwrap()).unwrap()
    }

    #[test]
    fn places_are_whole_turns_and_at_most_the_waiters() {
        let r = gcra()
            .with_wait(Wait::new(Duration::from_secs(1), 5))
            .unwrap();
        assert_eq!(r.for_store().quota().burst(), 15);
        assert_eq!(r.for_store().wait(), None);
        let r = gcra()
            .with_wait(Wait::new(Duration::from_millis(250), 50))
            .unwrap();
        assert_eq!(r.for_store().quota().burst(), 12);
        assert_eq!(r.capacity(), 10);
    }

    #[test]
    fn a_line_with_no_place_and_windows_are_refused() {
        assert!(matches!(
            gcra().with_wait(Wait::new(Duration::from_millis(99), 5)),
            Err(RuleError::WaitAdmitsNoOne { .. })
        ));
        assert!(matches!(
            gcra().with_wait(Wait::new(Duration::from_secs(1), 0)),
            Err(RuleError::WaitAdmitsNoOne { .. })
        ));
        for a in [
            Algorithm::FixedWindow,
            Algorithm::SlidingWindowLog,
            Algorithm::SlidingWindowCounter,
            Algorithm::TokenBucket,
        ] {
            let r = Rule::new("r", a, "10/s".parse().unwrap()).unwrap();
            let err = r.with_wait(Wait::new(Duration::from_secs(1), 5));
            assert_eq!(err, Err(RuleError::WaitNotSupported(a)));
        }
    }

    #[test]
    fn a_concurrency_rule_waits_for_a_place_in_flight() {
        let slots = Rule::concurrency("c", 5, Duration::from_secs(60)).unwrap();
        let wait = Wait::new(Duration::from_secs(2), 3);
        let r = slots.clone().with_wait(wait).unwrap();
        assert_eq!((r.wait(), r.queue()), (Some(wait), Some(wait)));
        // Its store decides the rule as it is, and takes releases.
        assert_eq!(r.for_store().quota(), slots.quota());
        assert!(r.takes_refunds() && !r.has_line());
        let plain = r.without_wait();
        assert_eq!((plain.wait(), plain.takes_refunds()), (None, true));
        let penalized = slots.clone().with_penalty(Duration::from_secs(5)).unwrap();
        assert_eq!(penalized.with_wait(wait), Err(RuleError::WaitWithPenalty));
        assert_eq!(
            r.clone().with_penalty(Duration::from_secs(5)),
            Err(RuleError::WaitWithPenalty)
        );
        for (up_to, waiters) in [(Duration::ZERO, 3), (Duration::from_secs(1), 0)] {
            let err = slots
                .clone()
                .with_wait(Wait::new(up_to, waiters))
                .unwrap_err();
            assert!(matches!(err, RuleError::WaitAdmitsNoOne { .. }));
            assert!(err.to_string().contains("admits no one"), "{err}");
        }
    }

    #[test]
    fn a_penalty_and_a_share_keep_the_line() {
        let r = gcra()
            .with_wait(Wait::new(Duration::from_millis(500), 5))
            .unwrap()
            .with_penalty(Duration::from_secs(9))
            .unwrap();
        assert_eq!(r.for_store().penalty(), Some(Duration::from_secs(9)));
        assert_eq!(r.for_store().quota().burst(), 15);
        // A share of 2: 5/s, one unit every 200 ms, 2 places within 500 ms.
        let half = r.share_of(2);
        assert_eq!(half.wait(), r.wait());
        assert_eq!(half.for_store().quota().burst(), 7);
        // A share of 20: 1/s, no place within 500 ms.
        assert_eq!(r.share_of(20).wait(), None);
    }

    #[test]
    fn the_store_decision_is_read_without_the_line() {
        let r = gcra()
            .with_wait(Wait::new(Duration::from_secs(1), 5))
            .unwrap();
        // 12 units taken at once: 200 ms past the burst of 10.
        let d = Decision::allow("r", 10, 3, Duration::from_millis(1_200));
        let (seen, wait) = r.read_store(d);
        assert_eq!((seen.remaining(), wait), (0, Duration::from_millis(200)));
        let d = Decision::allow("r", 10, 9, Duration::from_millis(600));
        let (seen, wait) = r.read_store(d);
        assert_eq!((seen.remaining(), wait), (4, Duration::ZERO));
        let denied = Decision::deny(
            "r",
            10,
            0,
            Duration::from_millis(1_500),
            Duration::from_millis(100),
        );
        let (seen, wait) = r.read_store(denied);
        assert!(!seen.is_allowed() && wait.is_zero());
        assert_eq!(seen.retry_after(), Some(Duration::from_millis(100)));
    }
}
