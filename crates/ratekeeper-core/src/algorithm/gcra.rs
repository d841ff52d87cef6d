//! GCRA (generic cell rate algorithm): the state is one integer, the
//! theoretical arrival time (TAT) of the next unit if the client spent at
//! exactly the quota's rate. A request of cost `c` fits when
//! `max(TAT, now) + c × interval − now ≤ burst × interval`.

use super::Step;
use crate::quota::Quota;
use crate::state::GcraState;

#[inline]
pub(super) fn step(q: &Quota, state: Option<&GcraState>, now: u64, cost: u64) -> Step<GcraState> {
    let interval = q.emission_interval_us();
    let tolerance = q.burst().saturating_mul(interval);
    let limit_at = now.saturating_add(tolerance);
    // Under an unchanged quota the stored TAT never passes `limit_at`; after a
    // quota change it can (debt measured in the old emission interval). It is
    // capped at a full bucket, so a client waits at most one new window.
    let base = state.map_or(now, |s| s.tat.max(now).min(limit_at));
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
        ttl,
    }
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
    fn debt_from_an_older_quota_is_capped_at_a_full_bucket() {
        let day = Quota::new(100, std::time::Duration::from_secs(86_400)).unwrap();
        let minute = Quota::new(100, std::time::Duration::from_secs(60)).unwrap();
        let mut state = None;
        for _ in 0..50 {
            state = Some(step(&day, state.as_ref(), 0, 1).state);
        }
        // Half a day of debt under the old quota; under the new one the
        // client waits one emission interval, not half a day.
        let s = step(&minute, state.as_ref(), 0, 1);
        assert!(!s.allowed);
        assert_eq!(s.retry_after, minute.emission_interval_us());
        assert!(s.reset_after <= minute.window_micros());
    }
}
