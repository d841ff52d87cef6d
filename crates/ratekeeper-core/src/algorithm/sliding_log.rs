//! Sliding window log: every admitted instant is kept until it leaves the window,
//! so no window of the quota's length ever holds more than the limit. Exact, but
//! its state grows with the limit.

use super::{Change, Step};
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
    let live = live(state, window, now);
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

    // A peek is never written: its state is left empty, unbuilt. Otherwise
    // room for the new entry up front: one allocation, not two.
    let mut entries = Vec::new();
    if cost > 0 {
        entries.reserve_exact(live.len() + usize::from(consumed));
        entries.extend_from_slice(live);
        if consumed {
            add(&mut entries, now, cost);
        }
    }
    let used_after = if consumed {
        used.saturating_add(cost)
    } else {
        used
    };
    // The newest entry after the step (`add` keeps them sorted).
    let newest = live.last().map(|(ts, _)| *ts);
    let newest = if consumed {
        newest.max(Some(now))
    } else {
        newest
    };
    let ttl = newest.map_or(0, |ts| ts.saturating_add(window).saturating_sub(now));
    Step {
        allowed,
        remaining: limit.saturating_sub(used_after),
        reset_after: ttl,
        retry_after,
        state: SlidingLogState { entries },
        consumed,
        rewrite: false,
        ttl,
    }
}

/// The entries still in the window at `now`: an entry counts while
/// `now < timestamp + window`.
#[inline]
pub(super) fn live(state: Option<&SlidingLogState>, window: u64, now: u64) -> &[(u64, u64)] {
    match state {
        Some(s) => {
            let first = s
                .entries
                .partition_point(|(ts, _)| ts.saturating_add(window) <= now);
            s.entries.get(first..).unwrap_or_default()
        }
        None => &[],
    }
}

/// Records `cost` units at `now`, keeping entries sorted with one per
/// instant, even if the clock stepped back.
fn add(entries: &mut Vec<(u64, u64)>, now: u64, cost: u64) {
    let at = entries.partition_point(|(ts, _)| *ts < now);
    match entries.get_mut(at) {
        Some(entry) if entry.0 == now => entry.1 = entry.1.saturating_add(cost),
        _ => entries.insert(at, (now, cost)),
    }
}

/// A charge is an entry at `now`, past the limit if need be (up to twice
/// the limit in the window). A refund
/// removes units taken at its instant: from the entry at that instant,
/// then from the oldest entries after it (they were taken later, so they
/// stay in the window longer: a clock difference errs towards holding
/// capacity back); units that have left the window are not given back.
/// Without an instant, the newest units go first.
pub(super) fn adjust(
    q: &Quota,
    state: Option<&SlidingLogState>,
    now: u64,
    change: Change,
) -> Option<SlidingLogState> {
    let window = q.window_micros();
    let mut entries = live(state, window, now).to_vec();
    match change {
        Change::Charge(units) => {
            // Up to twice the limit in the window: the excess owed is one
            // limit at most.
            let used = entries
                .iter()
                .fold(0u64, |acc, (_, c)| acc.saturating_add(*c));
            let units = units.min(q.limit().saturating_mul(2).saturating_sub(used));
            if units > 0 {
                add(&mut entries, now, units);
            }
        }
        Change::Refund(units, taken_at) => {
            let mut left = units;
            let mut take = |entry: &mut (u64, u64)| {
                let taken = entry.1.min(left);
                entry.1 -= taken;
                left -= taken;
            };
            match taken_at {
                Some(t) if t.saturating_add(window) <= now => return None,
                Some(t) => {
                    let from = entries.partition_point(|(ts, _)| *ts < t);
                    entries.iter_mut().skip(from).for_each(&mut take);
                }
                None => entries.iter_mut().rev().for_each(&mut take),
            }
        }
    }
    // An entry of no units (emptied here, or read from an old log) is no
    // entry.
    entries.retain(|(_, cost)| *cost > 0);
    Some(SlidingLogState { entries })
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

    #[test]
    fn refunds_remove_the_units_of_their_instant() {
        let q = Quota::new(10, std::time::Duration::from_micros(100)).unwrap();
        let state = SlidingLogState {
            entries: vec![(10, 2), (20, 3), (30, 1)],
        };
        let back = |units, at| adjust(&q, Some(&state), 40, Change::Refund(units, at));
        assert_eq!(
            back(2, Some(20)).unwrap().entries,
            [(10, 2), (20, 1), (30, 1)]
        );
        // More than the instant holds: then the oldest entries after it.
        assert_eq!(back(4, Some(20)).unwrap().entries, [(10, 2)]);
        // No instant: the newest first.
        assert_eq!(back(2, None).unwrap().entries, [(10, 2), (20, 2)]);
        // Units that have left the window stay gone.
        assert_eq!(
            adjust(&q, Some(&state), 115, Change::Refund(2, Some(10))),
            None
        );
        let over = adjust(&q, Some(&state), 40, Change::Charge(9)).unwrap();
        let s = step(&q, Some(&over), 40, 1);
        // 15 units in the window: 6 must leave before one fits, at 130.
        assert!(!s.allowed && s.retry_after == 90 && s.remaining == 0);
    }
}
