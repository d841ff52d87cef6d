//! Concurrency: at most `limit` units in flight. Each admitted request holds
//! a lease on its cost, kept as a sliding log's entry at the instant it was
//! taken, until it is released (a refund naming that instant) or the
//! quota's window has passed since (a holder that crashed). Counting leases
//! is the sliding log's step; what differs is that a release frees only
//! its own lease, and that the wait a denial reports is a hint.

use super::{Change, Step, sliding_log};
use crate::quota::Quota;
use crate::state::SlidingLogState;

/// The longest wait a denial reports: leases are released when their
/// requests end, which no store can foresee, so the wait until one expires
/// would tell a client to stay away far too long.
const MAX_RETRY_US: u64 = 1_000_000;

#[inline]
pub(super) fn step(
    q: &Quota,
    state: Option<&SlidingLogState>,
    now: u64,
    cost: u64,
) -> Step<SlidingLogState> {
    let mut step = sliding_log::step(q, state, now, cost);
    step.retry_after = step.retry_after.min(MAX_RETRY_US);
    step
}

/// A release ([`Change::Refund`] with the instant its lease was taken)
/// frees units of the lease taken at that instant and of no other, so that
/// a lease released twice, or after it expired, never frees another's
/// place. Without an instant, the newest leases go first. A charge takes a
/// lease at `now` past the limit if need be, as the sliding log does.
pub(super) fn adjust(
    q: &Quota,
    state: Option<&SlidingLogState>,
    now: u64,
    change: Change,
) -> Option<SlidingLogState> {
    let Change::Refund(units, Some(taken_at)) = change else {
        return sliding_log::adjust(q, state, now, change);
    };
    let window = q.window_micros();
    if taken_at.saturating_add(window) <= now {
        return None;
    }
    let mut entries = sliding_log::live(state, window, now).to_vec();
    let entry = entries.iter_mut().find(|(ts, _)| *ts == taken_at)?;
    entry.1 = entry.1.saturating_sub(units);
    entries.retain(|(_, units)| *units > 0);
    Some(SlidingLogState { entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn q() -> Quota {
        Quota::new(3, Duration::from_micros(1_000)).unwrap()
    }

    #[test]
    fn holds_at_most_the_limit_until_released_or_expired() {
        let a = step(&q(), None, 10, 2);
        let b = step(&q(), Some(&a.state), 20, 1);
        assert!(a.allowed && b.allowed && b.remaining == 0);
        let c = step(&q(), Some(&b.state), 30, 1);
        // The wait until the lease at 10 expires (at 1 010) is 980 µs.
        assert!(!c.allowed && c.retry_after == 980);
        let released = adjust(&q(), Some(&b.state), 40, Change::Refund(1, Some(20))).unwrap();
        assert_eq!(released.entries, [(10, 2)]);
        assert!(step(&q(), Some(&released), 40, 1).allowed);
        // Expired leases free their place by themselves.
        assert!(step(&q(), Some(&b.state), 1_010, 2).allowed);
    }

    #[test]
    fn a_release_frees_its_own_lease_and_no_other() {
        let state = SlidingLogState {
            entries: vec![(10, 1), (20, 2)],
        };
        // Two leases taken in the same microsecond share an entry; each
        // release frees its own unit.
        let one = adjust(&q(), Some(&state), 30, Change::Refund(1, Some(20))).unwrap();
        assert_eq!(one.entries, [(10, 1), (20, 1)]);
        // A lease gone already (released, or expired and dropped): nothing
        // changes, where the sliding log would take from later entries.
        assert_eq!(
            adjust(&q(), Some(&state), 30, Change::Refund(1, Some(15))),
            None
        );
        assert_eq!(adjust(&q(), None, 30, Change::Refund(1, Some(10))), None);
        // Released after it expired: nothing to free.
        assert_eq!(
            adjust(&q(), Some(&state), 1_015, Change::Refund(1, Some(10))),
            None
        );
        // The other leases expired meanwhile are dropped on the way.
        let late = adjust(&q(), Some(&state), 1_015, Change::Refund(1, Some(20))).unwrap();
        assert_eq!(late.entries, [(20, 1)]);
    }

    #[test]
    fn the_reported_wait_is_at_most_a_second() {
        let long = Quota::new(1, Duration::from_secs(600)).unwrap();
        let held = step(&long, None, 0, 1);
        let denied = step(&long, Some(&held.state), 1, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, MAX_RETRY_US);
        assert_eq!(denied.reset_after, 600_000_000 - 1);
    }
}
