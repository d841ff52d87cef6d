//! Sliding window log: every admitted instant is kept until it leaves the window,
//! so no window of the quota's length ever holds more than the limit. Exact, but
//! its state grows with the limit.

use super::Step;
use crate::quota::Quota;
use crate::state::SlidingLogState;

#[inline]
pub(super) fn step(
    q: &Quota,
    state: Option<&SlidingLogState>,
    now: u64,
    cost: u64,
) -> Step<SlidingLogState> {
    let window = q.window_micros();
    let limit = q.limit();
    // An entry counts while now < timestamp + window.
    let live: &[(u64, u64)] = match state {
        Some(s) => {
            let first = s
                .entries
                .partition_point(|(ts, _)| ts.saturating_add(window) <= now);
            s.entries.get(first..).unwrap_or_default()
        }
        None => &[],
    };
    let used = live.iter().fold(0u64, |acc, (_, c)| acc.saturating_add(*c));
    let probe = cost.max(1);
    let allowed = used.saturating_add(probe) <= limit;
    let consumed = allowed && cost > 0;

    let mut retry_after = 0;
    if !allowed {
        let mut freed = 0u64;
        for (ts, c) in live {
            freed = freed.saturating_add(*c);
            if used.saturating_sub(freed).saturating_add(probe) <= limit {
                retry_after = ts.saturating_add(window).saturating_sub(now);
                break;
            }
        }
    }

    let mut entries = live.to_vec();
    if consumed {
        // Keep entries sorted with one per instant, even if the clock stepped back.
        let at = entries.partition_point(|(ts, _)| *ts < now);
        match entries.get_mut(at) {
            Some(entry) if entry.0 == now => entry.1 = entry.1.saturating_add(cost),
            _ => entries.insert(at, (now, cost)),
        }
    }
    let used_after = if consumed {
        used.saturating_add(cost)
    } else {
        used
    };
    let ttl = entries
        .last()
        .map_or(0, |(ts, _)| ts.saturating_add(window).saturating_sub(now));
    Step {
        allowed,
        remaining: limit.saturating_sub(used_after),
        reset_after: ttl,
        retry_after,
        state: SlidingLogState { entries },
        consumed,
        ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frees_units_as_entries_leave_the_window() {
        let q = Quota::new(3, std::time::Duration::from_micros(100)).unwrap();
        let a = step(&q, None, 10, 2);
        let b = step(&q, Some(&a.state), 50, 1);
        assert!(b.allowed && b.remaining == 0);
        let c = step(&q, Some(&b.state), 60, 2);
        // Two units come back when the entry at 10 leaves at 110.
        assert!(!c.allowed && c.retry_after == 50);
        let d = step(&q, Some(&c.state), 110, 2);
        assert!(d.allowed && d.remaining == 0 && d.state.entries == vec![(50, 1), (110, 2)]);
    }

    #[test]
    fn one_entry_per_instant_even_when_the_clock_steps_back() {
        let q = Quota::new(10, std::time::Duration::from_micros(100)).unwrap();
        let a = step(&q, None, 10, 1);
        let b = step(&q, Some(&a.state), 10, 2);
        assert_eq!(b.state.entries, vec![(10, 3)]);
        let c = step(&q, Some(&b.state), 30, 1);
        // The clock stepped back to 20: a new entry between the two, not
        // merged into the later one (it must leave the window at 120, not 130).
        let d = step(&q, Some(&c.state), 20, 2);
        assert_eq!(d.state.entries, vec![(10, 3), (20, 2), (30, 1)]);
        // Back again onto an existing instant: merged.
        let e = step(&q, Some(&d.state), 20, 1);
        assert_eq!(e.state.entries, vec![(10, 3), (20, 3), (30, 1)]);
        assert_eq!(e.remaining, 3);
    }
}
