//! The six algorithms, each a pure, deterministic transition
//! `(state, now, cost, quota) → (decision, next state, expiry)`.
//!
//! Times are microseconds since the epoch. A cost of 0 is a peek: the step
//! answers as for a cost of 1 but consumes nothing and never changes state.
//! Every step is total: a clock that moved backwards, a state written under an
//! older quota or a zero-length history all give a sane answer, never a panic.

mod fixed_window;
mod gcra;
mod leaky_bucket;
mod sliding_log;
mod sliding_window_counter;
mod token_bucket;

use crate::rule::{Algorithm, Rule};
use crate::state::AlgorithmState;

/// The result of one algorithm step, before penalties and multi-rule logic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step<S> {
    /// Whether the request fits.
    pub(crate) allowed: bool,
    /// Units left after the step.
    pub(crate) remaining: u64,
    /// µs until the full limit is back, with no further requests.
    pub(crate) reset_after: u64,
    /// When denied: µs until the same request would fit. Meaningless when allowed.
    pub(crate) retry_after: u64,
    /// The state after the step.
    pub(crate) state: S,
    /// Whether units were consumed (the state must be written).
    pub(crate) consumed: bool,
    /// µs until `state` is equivalent to having no state at all.
    pub(crate) ttl: u64,
}

impl<S> Step<S> {
    #[inline]
    fn map<T>(self, f: impl FnOnce(S) -> T) -> Step<T> {
        Step {
            allowed: self.allowed,
            remaining: self.remaining,
            reset_after: self.reset_after,
            retry_after: self.retry_after,
            state: f(self.state),
            consumed: self.consumed,
            ttl: self.ttl,
        }
    }
}

/// Runs `rule`'s algorithm. A state of another algorithm (the rule was changed)
/// counts as no state.
#[inline]
pub(crate) fn step(
    rule: &Rule,
    state: Option<&AlgorithmState>,
    now: u64,
    cost: u64,
) -> Step<AlgorithmState> {
    let q = rule.quota();
    match rule.algorithm() {
        Algorithm::FixedWindow => {
            let s = match state {
                Some(AlgorithmState::FixedWindow(s)) => Some(s),
                _ => None,
            };
            fixed_window::step(q, s, now, cost).map(AlgorithmState::FixedWindow)
        }
        Algorithm::SlidingWindowLog => {
            let s = match state {
                Some(AlgorithmState::SlidingWindowLog(s)) => Some(s),
                _ => None,
            };
            sliding_log::step(q, s, now, cost).map(AlgorithmState::SlidingWindowLog)
        }
        Algorithm::SlidingWindowCounter => {
            let s = match state {
                Some(AlgorithmState::SlidingWindowCounter(s)) => Some(s),
                _ => None,
            };
            sliding_window_counter::step(q, s, now, cost).map(AlgorithmState::SlidingWindowCounter)
        }
        Algorithm::TokenBucket => {
            let s = match state {
                Some(AlgorithmState::TokenBucket(s)) => Some(s),
                _ => None,
            };
            token_bucket::step(q, s, now, cost).map(AlgorithmState::TokenBucket)
        }
        Algorithm::LeakyBucket => {
            let s = match state {
                Some(AlgorithmState::LeakyBucket(s)) => Some(s),
                _ => None,
            };
            leaky_bucket::step(q, s, now, cost).map(AlgorithmState::LeakyBucket)
        }
        Algorithm::Gcra => {
            let s = match state {
                Some(AlgorithmState::Gcra(s)) => Some(s),
                _ => None,
            };
            gcra::step(q, s, now, cost).map(AlgorithmState::Gcra)
        }
    }
}
