//! Fixed window: a counter per window aligned to the epoch (so every process and
//! machine agrees on window boundaries). Simple and cheap; a client can spend a
//! full limit at the end of one window and another at the start of the next.

use super::Step;
use crate::quota::Quota;
use crate::state::FixedWindowState;

#[inline]
pub(super) fn step(
    q: &Quota,
    state: Option<&FixedWindowState>,
    now: u64,
    cost: u64,
) -> Step<FixedWindowState> {
    let window = q.window_micros();
    let limit = q.limit();
    let aligned = now - now % window;
    let s = match state {
        // The current window, or a later one if the clock stepped back.
        Some(s) if s.window_start >= aligned => *s,
        _ => FixedWindowState {
            window_start: aligned,
            count: 0,
        },
    };
    let until_end = s.window_start.saturating_add(window).saturating_sub(now);
    let allowed = s.count.saturating_add(cost.max(1)) <= limit;
    let consumed = allowed && cost > 0;
    let next = FixedWindowState {
        count: if consumed {
            s.count.saturating_add(cost)
        } else {
            s.count
        },
        ..s
    };
    let ttl = if next.count == 0 { 0 } else { until_end };
    Step {
        allowed,
        remaining: limit.saturating_sub(next.count),
        reset_after: ttl,
        retry_after: until_end,
        state: next,
        consumed,
        ttl,
    }
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
}
