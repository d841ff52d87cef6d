//! The six rate algorithms and concurrency, each a pure, deterministic transition
//! `(state, now, cost, quota) → (decision, next state, expiry)`.
//!
//! Times are microseconds since the epoch. A cost of 0 is a peek: the step
//! answers as for a cost of 1 but consumes nothing and never changes state.
//! Every step is total: a clock that moved backwards, a state written under an
//! older quota or a zero-length history all give a sane answer, never a panic.

mod concurrency;
mod fixed_window;
pub(crate) mod gcra;
mod leaky_bucket;
mod sliding_log;
mod sliding_window_counter;
mod token_bucket;

use crate::quota::Quota;
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
    /// The state after the step (a peek's, never written, may be left
    /// unbuilt: the sliding log leaves it empty).
    pub(crate) state: S,
    /// Whether units were consumed (the state must be written).
    pub(crate) consumed: bool,
    /// Whether a denial must write `state` all the same: the stored state
    /// was beyond what the rule allows (an older quota's debt) and `state`
    /// is it capped, which must be stored for every later wait reported to
    /// be the true one.
    pub(crate) rewrite: bool,
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
            rewrite: self.rewrite,
            ttl: self.ttl,
        }
    }
}

/// Runs `$body` with `s`, `rule`'s own state (a state of another algorithm
/// counts as none), in `rule`'s algorithm module, and wraps the state it
/// gives back in its [`AlgorithmState`] variant (with `map`).
macro_rules! per_algorithm {
    ($rule:expr, $state:expr, |$module:ident, $s:ident| $body:expr) => {{
        macro_rules! arm {
            ($variant:ident, $m:ident) => {{
                use $m as $module;
                let $s = match $state {
                    Some(AlgorithmState::$variant(s)) => Some(s),
                    _ => None,
                };
                $body.map(AlgorithmState::$variant)
            }};
        }
        match $rule.algorithm() {
            Algorithm::FixedWindow => arm!(FixedWindow, fixed_window),
            Algorithm::SlidingWindowLog => arm!(SlidingWindowLog, sliding_log),
            Algorithm::SlidingWindowCounter => arm!(SlidingWindowCounter, sliding_window_counter),
            Algorithm::TokenBucket => arm!(TokenBucket, token_bucket),
            Algorithm::LeakyBucket => arm!(LeakyBucket, leaky_bucket),
            Algorithm::Gcra => arm!(Gcra, gcra),
            Algorithm::Concurrency => arm!(Concurrency, concurrency),
        }
    }};
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
    // A calendar (fixed windows only) sets the windows around `now`.
    if let Some(span) = rule.calendar_span(now) {
        let s = match state {
            Some(AlgorithmState::FixedWindow(s)) => Some(s),
            _ => None,
        };
        return fixed_window::step_in(q, &span, s, now, cost).map(AlgorithmState::FixedWindow);
    }
    per_algorithm!(rule, state, |m, s| m::step(q, s, now, cost))
}

/// A change to a rule's budget after the fact, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Take this many units, whatever is left.
    Charge(u64),
    /// Give back this many units, taken at this instant (or, without one,
    /// the newest units). Only units that still count come back: on the
    /// window algorithms, units in a window that has not ended; on the
    /// buckets, units that have not refilled since the instant, which is
    /// when they began to (see [`give_back`]).
    Refund(u64, Option<u64>),
}

/// How far a refund of `units` moves a bucket's theoretical arrival time
/// back (GCRA's TAT; the instant a token bucket is full or a leaky bucket
/// empty): units that have refilled since they began to, at `taken_at`, no
/// longer count and are not given back. Without a time, all of them (as if
/// taken just now).
fn give_back(q: &Quota, units: u64, taken_at: Option<u64>, now: u64) -> u64 {
    let span = units.saturating_mul(q.emission_interval_us());
    match taken_at {
        None => span,
        Some(t) => span.min(t.saturating_add(span).saturating_sub(now)),
    }
}

/// A bucket's theoretical arrival time after `change` at `now`, from
/// `tat` (at or after `now`): a charge moves it on, a refund moves it back
/// by [`give_back`], never before `now`; either way at most two full
/// buckets past `now` (one bucket owed; more is left only by a clock that
/// stepped back, and the algorithms read it capped there).
fn bucket_tat(q: &Quota, tat: u64, now: u64, change: Change) -> u64 {
    let interval = q.emission_interval_us();
    let most = now.saturating_add(q.burst().saturating_mul(interval).saturating_mul(2));
    match change {
        Change::Charge(units) => tat.saturating_add(units.saturating_mul(interval)),
        Change::Refund(units, taken_at) => tat
            .saturating_sub(give_back(q, units, taken_at, now))
            .max(now),
    }
    .min(most)
}

/// Applies `change` to `rule`'s state at `now`: the state to store, or
/// `None` when nothing changes. A state of another algorithm counts as no
/// state.
pub(crate) fn adjust(
    rule: &Rule,
    state: Option<&AlgorithmState>,
    now: u64,
    change: Change,
) -> Option<AlgorithmState> {
    if matches!(change, Change::Charge(0) | Change::Refund(0, _)) {
        return None;
    }
    let q = rule.quota();
    if let Some(span) = rule.calendar_span(now) {
        let s = match state {
            Some(AlgorithmState::FixedWindow(s)) => Some(s),
            _ => None,
        };
        return fixed_window::adjust_in(q, &span, s, change).map(AlgorithmState::FixedWindow);
    }
    per_algorithm!(rule, state, |m, s| m::adjust(q, s, now, change))
}
