//! Leaky bucket (as a meter): each request pours its cost into a bucket of
//! `burst` units that drains one unit every emission interval; a request that
//! would overflow is denied. It admits exactly what a token bucket of the same
//! quota admits, seen from the other side: its state is how full the bucket is.

use super::{Change, Step};
use crate::quota::Quota;
use crate::state::LeakyBucketState;

/// The most a bucket holds: a full bucket, and as much again owed (a
/// charge after the fact that went past full).
#[inline]
fn most(q: &Quota) -> u64 {
    q.burst().saturating_mul(2)
}

/// The bucket at `now`, drained. A level above [`most`] (left by an older
/// quota) is capped before draining, so the cap holds the same at every
/// instant and every wait reported is the true one.
#[inline]
fn view(q: &Quota, state: Option<&LeakyBucketState>, now: u64) -> LeakyBucketState {
    let empty = LeakyBucketState {
        level: 0,
        anchor: now,
    };
    let Some(s) = state else {
        return empty;
    };
    let interval = q.emission_interval_us();
    let ticks = now.saturating_sub(s.anchor) / interval;
    match s.level.min(most(q)).saturating_sub(ticks) {
        0 => empty,
        level => LeakyBucketState {
            level,
            anchor: s.anchor + ticks * interval,
        },
    }
}

#[inline]
pub(super) fn step(
    q: &Quota,
    state: Option<&LeakyBucketState>,
    now: u64,
    cost: u64,
) -> Step<LeakyBucketState> {
    let interval = q.emission_interval_us();
    let capacity = q.burst();
    let s = view(q, state, now);
    let probe = cost.max(1);
    let allowed = s.level.saturating_add(probe) <= capacity;
    let consumed = allowed && cost > 0;
    let next = LeakyBucketState {
        level: if consumed { s.level + cost } else { s.level },
        ..s
    };
    let empty_at = next
        .anchor
        .saturating_add(next.level.saturating_mul(interval));
    let ttl = empty_at.saturating_sub(now);
    let overflow = s.level.saturating_add(probe).saturating_sub(capacity);
    let retry_at = s.anchor.saturating_add(overflow.saturating_mul(interval));
    Step {
        allowed,
        remaining: capacity.saturating_sub(next.level),
        reset_after: ttl,
        retry_after: retry_at.saturating_sub(now),
        state: next,
        consumed,
        rewrite: false,
        ttl,
    }
}

/// A charge pours into the bucket, past full if need be (at most one
/// bucket more). A refund takes out of it the units that have not drained
/// yet (see [`Change::Refund`]). Both work on the instant the bucket is
/// empty, as GCRA on its TAT.
pub(super) fn adjust(
    q: &Quota,
    state: Option<&LeakyBucketState>,
    now: u64,
    change: Change,
) -> Option<LeakyBucketState> {
    let interval = q.emission_interval_us();
    let s = view(q, state, now);
    let empty_at = s.anchor.saturating_add(s.level.saturating_mul(interval));
    let tat = super::bucket_tat(q, empty_at.max(now), now, change);
    // Units still in the bucket, counting one partly drained.
    let level = tat.saturating_sub(now).div_ceil(interval);
    Some(LeakyBucketState {
        level,
        anchor: if level == 0 {
            now
        } else {
            tat - level * interval
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_from_an_older_quota_is_capped_at_two_buckets() {
        let big = Quota::new(1_000, std::time::Duration::from_secs(1_000)).unwrap();
        let small = Quota::new(10, std::time::Duration::from_secs(10)).unwrap();
        let full = step(&big, None, 0, 500).state;
        let s = step(&small, Some(&full), 0, 1);
        assert!(!s.allowed);
        // 20 units in a bucket of 10: 11 must drain before one fits.
        let interval = small.emission_interval_us();
        assert_eq!(s.retry_after, 11 * interval);
        assert!(s.reset_after <= 2 * small.window_micros());
        // The wait reported is the true one.
        assert!(!step(&small, Some(&full), s.retry_after - 1, 1).allowed);
        assert!(step(&small, Some(&full), s.retry_after, 1).allowed);
    }

    #[test]
    fn charges_pour_past_full_refunds_take_out() {
        let q = Quota::new(4, std::time::Duration::from_micros(100)).unwrap();
        let over = adjust(&q, None, 1000, Change::Charge(6)).unwrap();
        assert_eq!((over.level, over.anchor), (6, 1000));
        let s = step(&q, Some(&over), 1000, 1);
        assert!(!s.allowed && s.retry_after == 75 && s.reset_after == 150);
        assert_eq!(
            adjust(&q, None, 1000, Change::Charge(100)).unwrap().level,
            8
        );
        let back = adjust(&q, Some(&over), 1010, Change::Refund(6, None)).unwrap();
        assert_eq!((back.level, back.anchor), (0, 1010));
    }

    #[test]
    fn drains_one_unit_per_interval() {
        let q = Quota::new(2, std::time::Duration::from_micros(100)).unwrap();
        let a = step(&q, None, 1000, 2);
        assert!(a.allowed && a.remaining == 0 && a.state.level == 2);
        let b = step(&q, Some(&a.state), 1010, 1);
        assert!(!b.allowed && b.retry_after == 40);
        let c = step(&q, Some(&a.state), 1100, 2);
        assert!(c.allowed && c.state.level == 2 && c.state.anchor == 1100);
    }
}
