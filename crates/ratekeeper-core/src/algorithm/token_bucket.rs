//! Token bucket: `burst` tokens, one more every emission interval
//! (`window / limit`), counted in whole tokens from an anchor instant. A full
//! bucket restarts its anchor, so idle time never banks extra tokens.

use super::{Change, Step};
use crate::quota::Quota;
use crate::state::TokenBucketState;

/// The bucket at `now`, refilled. An anchor after `now` is a debt (a charge
/// after the fact that went past empty): no token comes back before it.
#[inline]
fn view(q: &Quota, state: Option<&TokenBucketState>, now: u64) -> TokenBucketState {
    capped_view(q, state, now).0
}

/// [`view`], and whether a debt past one full bucket (which only an older,
/// slower quota leaves) was capped to one: the capped state is then
/// written, so after a quota change a client waits at most one bucket more
/// of the new quota.
#[inline]
fn capped_view(q: &Quota, state: Option<&TokenBucketState>, now: u64) -> (TokenBucketState, bool) {
    let interval = q.emission_interval_us();
    let burst = q.burst();
    let full = TokenBucketState {
        tokens: burst,
        anchor: now,
    };
    let most = now.saturating_add(burst.saturating_mul(interval));
    match state {
        None => (full, false),
        // A debt has no tokens; tokens with a later anchor are a clock
        // that stepped back, read as usual.
        Some(s) if s.tokens == 0 && s.anchor > most => (
            TokenBucketState {
                tokens: 0,
                anchor: most,
            },
            true,
        ),
        Some(s) => {
            let ticks = now.saturating_sub(s.anchor) / interval;
            let tokens = s.tokens.saturating_add(ticks);
            if tokens >= burst {
                (full, false)
            } else {
                let anchor = s.anchor + ticks * interval;
                (TokenBucketState { tokens, anchor }, false)
            }
        }
    }
}

#[inline]
pub(super) fn step(
    q: &Quota,
    state: Option<&TokenBucketState>,
    now: u64,
    cost: u64,
) -> Step<TokenBucketState> {
    let interval = q.emission_interval_us();
    let burst = q.burst();
    let (s, capped) = capped_view(q, state, now);
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
        rewrite: capped,
        ttl,
    }
}

/// The instant the bucket is full again: its theoretical arrival time.
fn full_at(q: &Quota, s: &TokenBucketState) -> u64 {
    let owed = q.burst().saturating_sub(s.tokens);
    s.anchor
        .saturating_add(owed.saturating_mul(q.emission_interval_us()))
}

/// The normalized state at `now` whose bucket is full at `tat`: the
/// inverse of [`full_at`].
fn from_full_at(q: &Quota, tat: u64, now: u64) -> TokenBucketState {
    let interval = q.emission_interval_us();
    let burst = q.burst();
    if tat <= now {
        return TokenBucketState {
            tokens: burst,
            anchor: now,
        };
    }
    // Tokens still to come back, counting one partly refilled.
    let owed = (tat - now).div_ceil(interval).min(burst);
    TokenBucketState {
        tokens: burst - owed,
        anchor: tat.saturating_sub(owed * interval),
    }
}

/// A charge takes tokens, and past empty moves the anchor on (a debt of at
/// most one full bucket). A refund gives back the tokens that have not
/// refilled yet (see [`Change::Refund`]), paying a debt first, up to a full
/// bucket. Both work on the instant the bucket is full, as GCRA on its TAT.
pub(super) fn adjust(
    q: &Quota,
    state: Option<&TokenBucketState>,
    now: u64,
    change: Change,
) -> Option<TokenBucketState> {
    let s = view(q, state, now);
    let tat = super::bucket_tat(q, full_at(q, &s), now, change);
    Some(from_full_at(q, tat, now))
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

    #[test]
    fn a_charge_past_empty_is_a_debt_a_refund_pays_back() {
        let q = Quota::new(4, std::time::Duration::from_micros(100)).unwrap();
        // 25 µs a token. 6 units from a full bucket: 2 owed.
        let owed = adjust(&q, None, 1000, Change::Charge(6)).unwrap();
        assert_eq!((owed.tokens, owed.anchor), (0, 1050));
        let s = step(&q, Some(&owed), 1000, 1);
        assert!(!s.allowed && s.retry_after == 75 && s.reset_after == 150);
        assert!(step(&q, Some(&owed), 1075, 1).allowed);
        // Owing more than a full bucket: capped at one.
        let far = adjust(&q, None, 1000, Change::Charge(100)).unwrap();
        assert_eq!(far.anchor, 1100);
        // A refund pays the debt first, then fills, up to a full bucket.
        let paid = adjust(&q, Some(&owed), 1000, Change::Refund(3, None)).unwrap();
        assert_eq!((paid.tokens, paid.anchor), (1, 1000));
        let full = adjust(&q, Some(&owed), 1000, Change::Refund(50, None)).unwrap();
        assert_eq!((full.tokens, full.anchor), (4, 1000));
        // The state a decision leaves is the one `full_at` describes.
        for now in [1000, 1010, 1049, 1050, 1074, 1075, 1200] {
            let s = view(&q, Some(&owed), now);
            assert_eq!(from_full_at(&q, full_at(&q, &s), now), s, "at {now}");
        }
    }
}
