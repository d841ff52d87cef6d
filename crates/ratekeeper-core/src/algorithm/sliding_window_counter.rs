//! Sliding window counter: the current window's count plus the previous
//! window's count weighted by how much of it still overlaps the sliding window
//! (rounded up, so the estimate never undercounts the weighted total). Two
//! counters of state; never more than the limit per aligned window.

use super::{Change, Step};
use crate::quota::Quota;
use crate::state::SlidingCounterState;

/// `ceil(previous × left / window)`: the previous window's share of the sliding window.
fn weighted(previous: u64, left: u64, window: u64) -> u64 {
    let w = u128::from(window);
    let v = (u128::from(previous) * u128::from(left)).div_ceil(w);
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// `floor(room × window / count)`: how much of a window may still overlap when
/// `count` units must weigh at most `room`.
fn overlap_allowed(room: u64, window: u64, count: u64) -> u64 {
    let v = (u128::from(room) * u128::from(window))
        .checked_div(u128::from(count))
        .unwrap_or(u128::from(window));
    u64::try_from(v).unwrap_or(u64::MAX).min(window)
}

/// The counts as of the window `now` falls in.
#[inline]
fn view(q: &Quota, state: Option<&SlidingCounterState>, now: u64) -> SlidingCounterState {
    let window = q.window_micros();
    let aligned = now - now % window;
    match state {
        Some(s) if s.window_start >= aligned => *s,
        Some(s) if s.window_start.saturating_add(window) == aligned => SlidingCounterState {
            window_start: aligned,
            previous: s.current,
            current: 0,
        },
        _ => SlidingCounterState {
            window_start: aligned,
            previous: 0,
            current: 0,
        },
    }
}

#[inline]
pub(super) fn step(
    q: &Quota,
    state: Option<&SlidingCounterState>,
    now: u64,
    cost: u64,
) -> Step<SlidingCounterState> {
    let window = q.window_micros();
    let limit = q.limit();
    let s = view(q, state, now);
    let elapsed = now.saturating_sub(s.window_start).min(window);
    let estimate = weighted(s.previous, window - elapsed, window).saturating_add(s.current);
    let probe = cost.max(1);
    let allowed = estimate.saturating_add(probe) <= limit;
    let consumed = allowed && cost > 0;
    let next = SlidingCounterState {
        current: if consumed {
            s.current.saturating_add(cost)
        } else {
            s.current
        },
        ..s
    };
    let end = s.window_start.saturating_add(window);
    let ttl = if next.current > 0 {
        end.saturating_add(window).saturating_sub(now)
    } else if next.previous > 0 {
        end.saturating_sub(now)
    } else {
        0
    };

    let mut retry_after = 0;
    if !allowed {
        let room = limit.saturating_sub(probe);
        let at = if s.current <= room {
            // Still this window: wait until the previous window weighs little enough.
            end.saturating_sub(overlap_allowed(room - s.current, window, s.previous))
        } else {
            // Next window: this window's count becomes the weighted one.
            end.saturating_add(window - overlap_allowed(room, window, s.current))
        };
        retry_after = at.saturating_sub(now);
    }
    Step {
        allowed,
        remaining: limit.saturating_sub(estimate.saturating_add(if consumed { cost } else { 0 })),
        reset_after: ttl,
        retry_after,
        state: next,
        consumed,
        rewrite: false,
        ttl,
    }
}

/// A charge adds to the current window, past the limit if need be (up to
/// twice the limit; the excess then weighs on the next window through the
/// previous count). A
/// refund takes from the window its units were taken in, the current or
/// the previous one; without an instant, from the current window first.
pub(super) fn adjust(
    q: &Quota,
    state: Option<&SlidingCounterState>,
    now: u64,
    change: Change,
) -> Option<SlidingCounterState> {
    let mut s = view(q, state, now);
    match change {
        Change::Charge(units) => {
            s.current = s
                .current
                .saturating_add(units)
                .min(q.limit().saturating_mul(2));
        }
        Change::Refund(units, None) => {
            let from_current = units.min(s.current);
            s.current -= from_current;
            s.previous = s.previous.saturating_sub(units - from_current);
        }
        Change::Refund(units, Some(t)) if t >= s.window_start => {
            s.current = s.current.saturating_sub(units);
        }
        Change::Refund(units, Some(t)) if t.saturating_add(q.window_micros()) >= s.window_start => {
            s.previous = s.previous.saturating_sub(units);
        }
        Change::Refund(..) => return None,
    }
    if s.previous == 0 && s.current == 0 {
        // Nothing counted: the window `now` falls in, even where the clock
        // stepped back into an earlier one, so the state is no state at all.
        s.window_start = now - now % q.window_micros();
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_window_weighs_by_overlap() {
        let q = Quota::new(10, std::time::Duration::from_micros(100)).unwrap();
        let full = SlidingCounterState {
            window_start: 0,
            previous: 0,
            current: 10,
        };
        // At 125 the previous window (10 units) overlaps 75%: ceil(7.5) = 8 used.
        let a = step(&q, Some(&full), 125, 1);
        assert!(a.allowed && a.remaining == 1);
        let b = step(&q, Some(&a.state), 125, 2);
        // 8 + 1 used; 2 more fit once the previous weighs at most 7: at 130.
        assert!(!b.allowed && b.retry_after == 5);
        assert!(step(&q, Some(&a.state), 130, 2).allowed);
        assert!(!step(&q, Some(&a.state), 129, 2).allowed);
    }

    #[test]
    fn refunds_go_to_the_window_their_units_were_taken_in() {
        let q = Quota::new(10, std::time::Duration::from_micros(100)).unwrap();
        let s = SlidingCounterState {
            window_start: 200,
            previous: 6,
            current: 3,
        };
        let back = |units, at| adjust(&q, Some(&s), 250, Change::Refund(units, at));
        let this = back(2, Some(220)).unwrap();
        assert_eq!((this.current, this.previous), (1, 6));
        assert_eq!(back(2, Some(150)).unwrap().previous, 4);
        assert_eq!(back(2, Some(50)), None);
        let none = back(5, None).unwrap();
        assert_eq!((none.current, none.previous), (0, 4));
        let over = adjust(&q, Some(&s), 250, Change::Charge(20)).unwrap();
        assert!(!step(&q, Some(&over), 250, 1).allowed);
        // 20 units (twice the limit at most), weighed in the next window by
        // their overlap: ceil(20 × 60 / 100) = 12 at 340.
        assert!(!step(&q, Some(&over), 340, 1).allowed);
        assert!(step(&q, Some(&over), 400, 10).allowed);
    }
}
