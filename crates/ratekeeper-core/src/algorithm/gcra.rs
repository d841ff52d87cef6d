//! GCRA (generic cell rate algorithm): the state is one integer, the
//! theoretical arrival time (TAT) of the next unit if the client spent at
//! exactly the quota's rate. A request of cost `c` fits when
//! `max(TAT, now) + c × interval − now ≤ burst × interval`.

use super::{Change, Step};
use crate::quota::Quota;
use crate::state::GcraState;

#[inline]
pub(crate) fn step(q: &Quota, state: Option<&GcraState>, now: u64, cost: u64) -> Step<GcraState> {
    let interval = q.emission_interval_us();
    let tolerance = q.burst().saturating_mul(interval);
    let limit_at = now.saturating_add(tolerance);
    // Past `limit_at`, the TAT is a debt: a charge after the fact that went
    // past empty (one bucket at most), or what an older quota left.
    let (base, capped) = base(q, state, now);
    let probe = cost.max(1);
    let probe_tat = base.saturating_add(probe.saturating_mul(interval));
    let allowed = probe_tat <= limit_at;
    let consumed = allowed && cost > 0;
    let tat = if consumed {
        base.saturating_add(cost.saturating_mul(interval))
    } else {
        base
    };
    let ttl = tat - now;
    Step {
        allowed,
        remaining: limit_at.saturating_sub(tat) / interval,
        reset_after: ttl,
        retry_after: probe_tat.saturating_sub(limit_at),
        state: GcraState { tat },
        consumed,
        rewrite: capped,
        ttl,
    }
}

/// The TAT at `now`, and whether it was capped: past one bucket of debt
/// (`now + 2 × burst × interval`), which only an older, slower quota
/// leaves, it is capped there (and the capped TAT is written), so after a
/// quota change a client waits at most one bucket more of the new quota.
fn base(q: &Quota, state: Option<&GcraState>, now: u64) -> (u64, bool) {
    let most = now.saturating_add(
        q.burst()
            .saturating_mul(q.emission_interval_us())
            .saturating_mul(2),
    );
    match state {
        Some(s) if s.tat > most => (most, true),
        Some(s) => (s.tat.max(now), false),
        None => (now, false),
    }
}

/// A charge moves the TAT on, past the limit if need be (a debt of at most
/// one full bucket). A refund moves it back, never before `now`, by the
/// units that have not refilled yet (see [`Change::Refund`]).
pub(super) fn adjust(
    q: &Quota,
    state: Option<&GcraState>,
    now: u64,
    change: Change,
) -> Option<GcraState> {
    let (base, _) = base(q, state, now);
    Some(GcraState {
        tat: super::bucket_tat(q, base, now, change),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_units_by_the_emission_interval() {
        let q = Quota::new(4, std::time::Duration::from_micros(100))
            .unwrap()
            .with_burst(2)
            .unwrap();
        let a = step(&q, None, 1000, 2);
        assert!(a.allowed && a.remaining == 0 && a.state.tat == 1050);
        let b = step(&q, Some(&a.state), 1010, 1);
        assert!(!b.allowed && b.retry_after == 15);
        let c = step(&q, Some(&a.state), 1025, 1);
        assert!(c.allowed && c.state.tat == 1075 && c.remaining == 0);
    }

    #[test]
    fn debt_from_an_older_quota_is_capped_at_one_bucket() {
        let day = Quota::new(100, std::time::Duration::from_secs(86_400)).unwrap();
        let minute = Quota::new(100, std::time::Duration::from_secs(60)).unwrap();
        let mut state = None;
        for _ in 0..50 {
            state = Some(step(&day, state.as_ref(), 0, 1).state);
        }
        // Half a day of debt under the old quota; under the new one the
        // client owes one bucket (a minute): it waits that and one unit,
        // and the capped TAT is written so that the wait stays true.
        let s = step(&minute, state.as_ref(), 0, 1);
        assert!(!s.allowed && s.rewrite);
        let interval = minute.emission_interval_us();
        assert_eq!(s.retry_after, minute.window_micros() + interval);
        assert!(!step(&minute, Some(&s.state), s.retry_after - 1, 1).allowed);
        assert!(step(&minute, Some(&s.state), s.retry_after, 1).allowed);
        // Within one bucket of debt nothing is rewritten.
        let again = step(&minute, Some(&s.state), 1, 1);
        assert!(!again.allowed && !again.rewrite);
    }

    #[test]
    fn charges_move_the_tat_on_refunds_move_it_back() {
        let q = Quota::new(4, std::time::Duration::from_micros(100)).unwrap();
        let owed = adjust(&q, None, 1000, Change::Charge(6)).unwrap();
        assert_eq!(owed.tat, 1150);
        let s = step(&q, Some(&owed), 1000, 1);
        assert!(!s.allowed && s.retry_after == 75);
        assert_eq!(
            adjust(&q, None, 1000, Change::Charge(100)).unwrap().tat,
            1200
        );
        let back = adjust(&q, Some(&owed), 1000, Change::Refund(2, None)).unwrap();
        assert_eq!(back.tat, 1100);
        assert_eq!(
            adjust(&q, Some(&owed), 1000, Change::Refund(99, None))
                .unwrap()
                .tat,
            1000
        );
        // Units taken at 1000 that began to refill then: by 1030, one of the
        // two refunded has refilled (and a bit), so only 20 µs come back.
        let back = adjust(&q, Some(&owed), 1030, Change::Refund(2, Some(1000))).unwrap();
        assert_eq!(back.tat, 1130);
        assert_eq!(
            adjust(&q, Some(&owed), 1060, Change::Refund(2, Some(1000)))
                .unwrap()
                .tat,
            1150
        );
    }
}
