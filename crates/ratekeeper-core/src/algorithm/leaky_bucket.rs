//! Leaky bucket (as a meter): each request pours its cost into a bucket of
//! `burst` units that drains one unit every emission interval; a request that
//! would overflow is denied. It admits exactly what a token bucket of the same
//! quota admits, seen from the other side: its state is how full the bucket is.

use super::Step;
use crate::quota::Quota;
use crate::state::LeakyBucketState;

#[inline]
pub(super) fn step(
    q: &Quota,
    state: Option<&LeakyBucketState>,
    now: u64,
    cost: u64,
) -> Step<LeakyBucketState> {
    let interval = q.emission_interval_us();
    let capacity = q.burst();
    let s = match state {
        None => LeakyBucketState {
            level: 0,
            anchor: now,
        },
        Some(s) => {
            let ticks = now.saturating_sub(s.anchor) / interval;
            // Above capacity only after a quota change: capped at a full
            // bucket, so a client waits at most one new window.
            let level = s.level.saturating_sub(ticks).min(capacity);
            if level == 0 {
                LeakyBucketState {
                    level: 0,
                    anchor: now,
                }
            } else {
                LeakyBucketState {
                    level,
                    anchor: s.anchor + ticks * interval,
                }
            }
        }
    };
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
        ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_from_an_older_quota_is_capped_at_a_full_bucket() {
        let big = Quota::new(1_000, std::time::Duration::from_secs(1_000)).unwrap();
        let small = Quota::new(10, std::time::Duration::from_secs(10)).unwrap();
        let full = step(&big, None, 0, 500).state;
        let s = step(&small, Some(&full), 0, 1);
        assert!(!s.allowed);
        assert_eq!(s.retry_after, small.emission_interval_us());
        assert!(s.reset_after <= small.window_micros());
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
