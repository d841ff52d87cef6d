//! Token bucket: `burst` tokens, one more every emission interval
//! (`window / limit`), counted in whole tokens from an anchor instant. A full
//! bucket restarts its anchor, so idle time never banks extra tokens.

use super::Step;
use crate::quota::Quota;
use crate::state::TokenBucketState;

#[inline]
pub(super) fn step(
    q: &Quota,
    state: Option<&TokenBucketState>,
    now: u64,
    cost: u64,
) -> Step<TokenBucketState> {
    let interval = q.emission_interval_us();
    let burst = q.burst();
    let s = match state {
        None => TokenBucketState {
            tokens: burst,
            anchor: now,
        },
        Some(s) => {
            let ticks = now.saturating_sub(s.anchor) / interval;
            let tokens = s.tokens.saturating_add(ticks);
            if tokens >= burst {
                TokenBucketState {
                    tokens: burst,
                    anchor: now,
                }
            } else {
                TokenBucketState {
                    tokens,
                    anchor: s.anchor + ticks * interval,
                }
            }
        }
    };
    let probe = cost.max(1);
    let allowed = s.tokens >= probe;
    let consumed = allowed && cost > 0;
    let next = TokenBucketState {
        tokens: if consumed { s.tokens - cost } else { s.tokens },
        ..s
    };
    let full_at = next
        .anchor
        .saturating_add(burst.saturating_sub(next.tokens).saturating_mul(interval));
    let ttl = full_at.saturating_sub(now);
    let retry_at = s
        .anchor
        .saturating_add(probe.saturating_sub(s.tokens).saturating_mul(interval));
    Step {
        allowed,
        remaining: next.tokens,
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
    fn refills_one_token_per_interval() {
        let q = Quota::new(2, std::time::Duration::from_micros(100)).unwrap();
        let a = step(&q, None, 1000, 2);
        assert!(a.allowed && a.remaining == 0 && a.reset_after == 100);
        let b = step(&q, Some(&a.state), 1049, 1);
        assert!(!b.allowed && b.retry_after == 1);
        let c = step(&q, Some(&a.state), 1050, 1);
        assert!(c.allowed && c.remaining == 0 && c.state.anchor == 1050);
    }
}
