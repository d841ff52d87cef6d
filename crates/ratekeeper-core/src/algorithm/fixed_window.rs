//! Fixed window: a counter per window aligned to the epoch (so every process and
//! machine agrees on window boundaries), or to a calendar (a rule's days,
//! weeks, months or years in its time zone). Simple and cheap; a client can
//! spend a full limit at the end of one window and another at the start of
//! the next.

use super::{Change, Step};
use crate::calendar::Span;
use crate::quota::Quota;
use crate::state::FixedWindowState;

/// What a window that ended with `count` units passes to the next one:
/// the excess over the limit (a charge after the fact that went past it),
/// at most one limit. Within the limit, nothing.
#[inline]
fn carried(q: &Quota, count: u64) -> u64 {
    count.saturating_sub(q.limit()).min(q.limit())
}

/// The state of the window `span` is about (the one `now` falls in).
#[inline]
fn view(q: &Quota, span: &Span, state: Option<&FixedWindowState>) -> FixedWindowState {
    match state {
        // This window; or counted in it under windows aligned otherwise
        // (the rule's window or calendar changed): counts in this window,
        // which ends when it does.
        Some(s) if s.window_start >= span.start && s.window_start < span.end => FixedWindowState {
            window_start: span.start,
            count: s.count,
        },
        // A later window: the clock stepped back.
        Some(s) if s.window_start >= span.end => *s,
        Some(s) if Some(s.window_start) == span.prev => FixedWindowState {
            window_start: span.start,
            count: carried(q, s.count),
        },
        _ => FixedWindowState {
            window_start: span.start,
            count: 0,
        },
    }
}

#[inline]
pub(super) fn step(
    q: &Quota,
    state: Option<&FixedWindowState>,
    now: u64,
    cost: u64,
) -> Step<FixedWindowState> {
    step_in(q, &Span::aligned(now, q.window_micros()), state, now, cost)
}

/// [`step`] in the windows of `span`: aligned to the epoch, or a calendar's.
#[inline]
pub(super) fn step_in(
    q: &Quota,
    span: &Span,
    state: Option<&FixedWindowState>,
    now: u64,
    cost: u64,
) -> Step<FixedWindowState> {
    // What follows this window: the next one, whose length a calendar sets.
    let window = span.next_len();
    let limit = q.limit();
    let s = view(q, span, state);
    // A state from a later window (the clock stepped back) ends with it.
    let end = if s.window_start > span.start {
        s.window_start.saturating_add(window)
    } else {
        span.end
    };
    let until_end = end.saturating_sub(now);
    let probe = cost.max(1);
    let allowed = s.count.saturating_add(probe) <= limit;
    let consumed = allowed && cost > 0;
    let next = FixedWindowState {
        count: if consumed {
            s.count.saturating_add(cost)
        } else {
            s.count
        },
        ..s
    };
    // Past the limit, the state lives on into the next window, which owes
    // the excess.
    let ttl = match next.count {
        0 => 0,
        c if c > limit => until_end.saturating_add(window),
        _ => until_end,
    };
    let retry_after = if carried(q, s.count).saturating_add(probe) <= limit {
        until_end
    } else {
        until_end.saturating_add(window)
    };
    Step {
        allowed,
        remaining: limit.saturating_sub(next.count),
        reset_after: ttl,
        retry_after,
        state: next,
        consumed,
        rewrite: false,
        ttl,
    }
}

/// A charge adds to the window's count, past the limit if need be (up to
/// twice the limit). A
/// refund takes from it when the units were taken in this window (or no
/// time is given); units taken in an earlier window are not given back.
pub(super) fn adjust(
    q: &Quota,
    state: Option<&FixedWindowState>,
    now: u64,
    change: Change,
) -> Option<FixedWindowState> {
    adjust_in(q, &Span::aligned(now, q.window_micros()), state, change)
}

/// [`adjust`] in the windows of `span`.
pub(super) fn adjust_in(
    q: &Quota,
    span: &Span,
    state: Option<&FixedWindowState>,
    change: Change,
) -> Option<FixedWindowState> {
    let mut s = view(q, span, state);
    match change {
        // Past twice the limit a count says no more: the next window owes
        // one limit at most.
        Change::Charge(units) => {
            s.count = s
                .count
                .saturating_add(units)
                .min(q.limit().saturating_mul(2))
        }
        Change::Refund(units, taken_at) => {
            if taken_at.is_some_and(|t| t < s.window_start) {
                return None;
            }
            s.count = s.count.saturating_sub(units);
        }
    }
    if s.count == 0 {
        // Nothing counted: the window `now` falls in, even where the clock
        // stepped back into an earlier one, so the state is no state at all.
        s.window_start = span.start;
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_aligned_window() {
        let q = Quota::new(2, std::time::Duration::from_micros(100)).unwrap();
        let a = step(&q, None, 150, 1);
        assert!(a.allowed && a.remaining == 1 && a.reset_after == 50);
        let b = step(&q, Some(&a.state), 160, 1);
        assert!(b.allowed && b.remaining == 0);
        let c = step(&q, Some(&b.state), 199, 1);
        assert!(!c.allowed && c.retry_after == 1 && !c.consumed);
        let d = step(&q, Some(&c.state), 200, 2);
        assert!(d.allowed && d.remaining == 0);
    }

    #[test]
    fn a_state_aligned_otherwise_counts_in_this_window_and_ends_with_it() {
        // Counted under one-minute windows from 01:42; the rule now has
        // hour windows (or a calendar): the 4 count in 01:00–02:00, which
        // still ends at 02:00.
        let minute_us = 60_000_000;
        let hour = Quota::new(5, std::time::Duration::from_secs(3_600)).unwrap();
        let state = FixedWindowState {
            window_start: 102 * minute_us,
            count: 4,
        };
        let s = step(&hour, Some(&state), 110 * minute_us, 1);
        assert!(s.allowed && s.remaining == 0, "{s:?}");
        assert_eq!(s.reset_after, 10 * minute_us);
        assert_eq!(s.state.window_start, 60 * minute_us);
        assert!(!step(&hour, Some(&s.state), 110 * minute_us, 1).allowed);
    }

    #[test]
    fn an_excess_is_owed_by_the_next_window() {
        let q = Quota::new(4, std::time::Duration::from_micros(100)).unwrap();
        let over = adjust(&q, None, 150, Change::Charge(7)).unwrap();
        let a = step(&q, Some(&over), 160, 1);
        // 3 over the limit: denied until the next window, which starts with 3.
        assert!(!a.allowed && a.retry_after == 40 && a.ttl == 140);
        let b = step(&q, Some(&over), 200, 1);
        assert!(b.allowed && b.remaining == 0);
        assert!(!step(&q, Some(&b.state), 200, 1).allowed);
        // More than a limit over: the next window is spent whole, no more.
        let far = adjust(&q, None, 150, Change::Charge(20)).unwrap();
        assert_eq!(step(&q, Some(&far), 160, 1).retry_after, 140);
        assert_eq!(step(&q, Some(&far), 200, 1).retry_after, 100);
        assert!(step(&q, Some(&far), 300, 4).allowed);
    }

    #[test]
    fn refunds_give_back_this_window_only() {
        let q = Quota::new(4, std::time::Duration::from_micros(100)).unwrap();
        let a = step(&q, None, 150, 3).state;
        let back = adjust(&q, Some(&a), 160, Change::Refund(2, Some(150))).unwrap();
        assert_eq!(back.count, 1);
        assert_eq!(
            adjust(&q, Some(&a), 160, Change::Refund(9, None))
                .unwrap()
                .count,
            0
        );
        let next = step(&q, Some(&a), 210, 1).state;
        assert_eq!(
            adjust(&q, Some(&next), 220, Change::Refund(3, Some(150))),
            None
        );
    }
}
