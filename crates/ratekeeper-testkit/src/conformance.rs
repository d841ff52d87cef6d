//! The conformance cases. Each takes a [`Harness`] and panics on a violation;
//! [`decision_conformance_tests!`](crate::decision_conformance_tests) turns
//! the cases of the decision step into tests (they use nothing but
//! [`Storage::decide`], through a [`Limiter`]), and
//! [`storage_conformance_tests!`](crate::storage_conformance_tests) those and
//! the cases of the key-value operations.
//!
//! One file on purpose: it is the storage contract written as cases, and a
//! store author reads it top to bottom as one specification.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ratekeeper_core::kit::{AlgorithmState, RuleState};
use ratekeeper_core::{
    Algorithm, Calendar, CasOp, Decision, ErrorKind, Limiter, ManualClock, Quota, Rule, Storage,
    Timestamp,
};

use crate::model::{Expected, Model};
use crate::{Expiry, Harness};

/// The time every case starts at: a realistic epoch offset.
pub const T0: u64 = 1_700_000_000_000_000;

const HOUR: Duration = Duration::from_secs(3_600);

/// A fresh store and a limiter on it, both on one manual clock at `T0`.
pub async fn setup(h: &Arc<dyn Harness>) -> (Arc<dyn Storage>, Limiter, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_micros(T0));
    let store = h.store(clock.clone()).await;
    let limiter = Limiter::builder(store.clone()).clock(clock.clone()).build();
    (store, limiter, clock)
}

/// Time passing in the expiry cases: the manual clock always, and real time
/// too for stores whose keys expire in real time ([`Expiry::RealTime`]).
struct Timeline {
    clock: ManualClock,
    real: bool,
}

impl Timeline {
    fn new(h: &Arc<dyn Harness>, clock: ManualClock) -> Self {
        Self {
            clock,
            real: h.expiry() == Expiry::RealTime,
        }
    }

    /// `n` units: seconds on a manual clock, 200 ms in real time.
    fn units(&self, n: u32) -> Duration {
        if self.real {
            Duration::from_millis(200) * n
        } else {
            Duration::from_secs(u64::from(n))
        }
    }

    /// Whether boundaries can be checked to the microsecond (a manual clock);
    /// in real time, checks keep a margin on each side.
    fn exact(&self) -> bool {
        !self.real
    }

    /// Added to a TTL before checking, in real time, that a key is gone.
    fn margin(&self) -> Duration {
        if self.real {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        }
    }

    async fn pass(&self, d: Duration) {
        self.clock.advance(d);
        if self.real {
            tokio::time::sleep(d).await;
        }
    }
}

fn rule(name: &str, algorithm: Algorithm, quota: &str) -> Rule {
    Rule::new(name, algorithm, quota.parse().unwrap()).unwrap()
}

/// get / set / exists / delete behave like a map.
pub async fn kv_get_set_delete_exists(h: Arc<dyn Harness>) {
    let (store, _, _) = setup(&h).await;
    assert_eq!(store.get("a").await.unwrap(), None);
    assert!(!store.exists("a").await.unwrap());
    store.set("a", b"one", HOUR).await.unwrap();
    assert_eq!(store.get("a").await.unwrap().as_deref(), Some(&b"one"[..]));
    assert!(store.exists("a").await.unwrap());
    store.set("a", b"two", HOUR).await.unwrap();
    assert_eq!(store.get("a").await.unwrap().as_deref(), Some(&b"two"[..]));
    store.set("binary", &[0, 255, 10], HOUR).await.unwrap();
    assert_eq!(store.get("binary").await.unwrap(), Some(vec![0, 255, 10]));
    assert!(store.delete("a").await.unwrap());
    assert!(!store.delete("a").await.unwrap());
    assert_eq!(store.get("a").await.unwrap(), None);
}

/// Values disappear when their TTL passes.
pub async fn kv_values_expire(h: Arc<dyn Harness>) {
    let (store, _, clock) = setup(&h).await;
    let t = Timeline::new(&h, clock);
    store.set("short", b"x", t.units(10)).await.unwrap();
    store.set("long", b"y", t.units(30)).await.unwrap();
    if t.exact() {
        t.pass(t.units(9)).await;
        assert!(store.exists("short").await.unwrap());
        t.pass(t.units(1)).await;
    } else {
        t.pass(t.units(5)).await;
        assert!(store.exists("short").await.unwrap());
        t.pass(t.units(5) + t.margin()).await;
    }
    assert!(
        !store.exists("short").await.unwrap(),
        "a value is gone once its TTL has passed"
    );
    assert_eq!(store.get("short").await.unwrap(), None);
    assert!(!store.delete("short").await.unwrap());
    assert_eq!(store.get("long").await.unwrap().as_deref(), Some(&b"y"[..]));
}

/// increment counts atomically, creates with a TTL, keeps an existing expiry,
/// and refuses non-integers.
pub async fn kv_increment(h: Arc<dyn Harness>) {
    let (store, _, clock) = setup(&h).await;
    let t = Timeline::new(&h, clock);
    assert_eq!(store.increment("n", 5, t.units(10)).await.unwrap(), 5);
    t.pass(t.units(6)).await;
    assert_eq!(store.increment("n", -2, t.units(100)).await.unwrap(), 3);
    assert_eq!(store.get("n").await.unwrap().as_deref(), Some(&b"3"[..]));
    t.pass(t.units(4) + t.margin()).await;
    assert!(
        !store.exists("n").await.unwrap(),
        "increment keeps the first expiry"
    );
    assert_eq!(store.increment("n", 1, t.units(10)).await.unwrap(), 1);

    store.set("text", b"hello", HOUR).await.unwrap();
    let err = store.increment("text", 1, HOUR).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongType);
    store
        .set("big", i64::MAX.to_string().as_bytes(), HOUR)
        .await
        .unwrap();
    assert_eq!(
        store.increment("big", 1, HOUR).await.unwrap_err().kind(),
        ErrorKind::WrongType
    );

    // Concurrent increments lose nothing.
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    store.increment("shared", 1, HOUR).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        store.get("shared").await.unwrap().as_deref(),
        Some(&b"800"[..])
    );
}

/// clear removes every key, including rule state.
pub async fn kv_clear(h: Arc<dyn Harness>) {
    let (store, limiter, _) = setup(&h).await;
    let r = rule("c", Algorithm::FixedWindow, "1/hour");
    for i in 0..10 {
        store.set(&format!("k{i}"), b"v", HOUR).await.unwrap();
    }
    assert!(limiter.check(&r, "u").await.unwrap().is_allowed());
    assert!(!limiter.check(&r, "u").await.unwrap().is_allowed());
    let removed = store.clear().await.unwrap();
    assert!(removed >= 11, "clear reported {removed} of 11 keys");
    for i in 0..10 {
        assert!(!store.exists(&format!("k{i}")).await.unwrap());
    }
    assert!(
        limiter.check(&r, "u").await.unwrap().is_allowed(),
        "state is gone after clear"
    );
}

/// After close, every operation fails with `Closed`; closing twice is fine.
pub async fn kv_close(h: Arc<dyn Harness>) {
    let (store, limiter, _) = setup(&h).await;
    store.set("k", b"v", HOUR).await.unwrap();
    store.close().await.unwrap();
    store.close().await.unwrap();
    assert_eq!(store.get("k").await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        store.set("k", b"v", HOUR).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    let r = rule("r", Algorithm::Gcra, "1/s");
    let err = limiter.check(&r, "u").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert!(!err.is_transient());
}

/// stats names the backend and, where it counts keys, counts them.
pub async fn kv_stats(h: Arc<dyn Harness>) {
    let (store, limiter, _) = setup(&h).await;
    let r = rule("s", Algorithm::TokenBucket, "5/s");
    for i in 0..7 {
        limiter.check(&r, &format!("user{i}")).await.unwrap();
    }
    store.set("extra", b"v", HOUR).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert!(!stats.backend.is_empty());
    if let Some(keys) = stats.keys {
        assert_eq!(keys, 8, "{stats:?}");
    }
}

/// compare_and_swap writes all or nothing.
pub async fn cas_semantics(h: Arc<dyn Harness>) {
    let (store, _, clock) = setup(&h).await;
    let t = Timeline::new(&h, clock);
    let ttl = t.units(10);
    let op = |key, expected, new_value| CasOp {
        key,
        expected,
        new_value,
        ttl,
    };
    assert!(
        store
            .compare_and_swap(&[op("a", None, b"1")])
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap(&[op("a", None, b"2")])
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap(&[op("a", Some(b"0"), b"2")])
            .await
            .unwrap()
    );
    assert!(
        store
            .compare_and_swap(&[op("a", Some(b"1"), b"2")])
            .await
            .unwrap()
    );
    assert_eq!(store.get("a").await.unwrap().as_deref(), Some(&b"2"[..]));

    // One stale expectation stops every write.
    let ops = [op("a", Some(b"2"), b"3"), op("b", Some(b"x"), b"4")];
    assert!(!store.compare_and_swap(&ops).await.unwrap());
    assert_eq!(store.get("a").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert!(!store.exists("b").await.unwrap());
    let ops = [op("a", Some(b"2"), b"3"), op("b", None, b"4")];
    assert!(store.compare_and_swap(&ops).await.unwrap());
    assert_eq!(store.get("b").await.unwrap().as_deref(), Some(&b"4"[..]));

    // An expired value counts as absent, and a CAS write carries its TTL.
    t.pass(ttl + t.margin()).await;
    assert!(
        store
            .compare_and_swap(&[op("a", None, b"5")])
            .await
            .unwrap()
    );
    t.pass(ttl + t.margin()).await;
    assert!(!store.exists("a").await.unwrap());
}

/// A peek (cost 0) reports without consuming, for every algorithm.
pub async fn peek_does_not_consume(h: Arc<dyn Harness>) {
    let (_, limiter, _) = setup(&h).await;
    for algorithm in Algorithm::ALL {
        let r = rule("peek", algorithm, "3/hour");
        for _ in 0..5 {
            let d = limiter.peek(&r, algorithm.as_str()).await.unwrap();
            assert!(d.is_allowed() && d.remaining() == 3, "{algorithm}: {d:?}");
        }
        for expected in [2, 1, 0] {
            let d = limiter.check(&r, algorithm.as_str()).await.unwrap();
            assert_eq!(d.remaining(), expected, "{algorithm}");
        }
        let d = limiter.peek(&r, algorithm.as_str()).await.unwrap();
        assert!(
            !d.is_allowed() && d.remaining() == 0 && d.retry_after().is_some(),
            "{algorithm}: {d:?}"
        );
    }
}

/// A monthly quota on a calendar (Europe/Berlin) starts again at local
/// midnight of the 1st: after the 29th of February of a leap year, across
/// the spring daylight-saving change (March has an hour less) and the
/// autumn one (October an hour more); every decision tells the true time to
/// that boundary, to the microsecond.
pub async fn calendar_windows(h: Arc<dyn Harness>) {
    let (_, limiter, clock) = setup(&h).await;
    let monthly = Rule::new(
        "monthly",
        Algorithm::FixedWindow,
        "3/month".parse().unwrap(),
    )
    .unwrap()
    .with_calendar(Calendar::new("Europe/Berlin").unwrap())
    .unwrap();
    const HOUR_US: u64 = 3_600_000_000;
    const DAY_US: u64 = 24 * HOUR_US;
    // UTC instants: 2024-02-29 22:00 (23:00 in Berlin), March 1st's
    // midnight (CET), April 1st's (CEST), October 27th's (CEST, an hour
    // before the clocks go back), November 1st's (CET).
    let (feb_29_23h, mar_1, apr_1) = (
        1_709_244_000_000_000,
        1_709_247_600_000_000,
        1_711_922_400_000_000,
    );
    let (oct_27, nov_1) = (1_729_980_000_000_000, 1_730_415_600_000_000);
    let at = |us: u64| clock.set(Timestamp::from_micros(us));
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap();
    at(feb_29_23h);
    for _ in 0..3 {
        assert!(limiter.check(&monthly, "k").await.unwrap().is_allowed());
    }
    let d = limiter.check(&monthly, "k").await.unwrap();
    assert!(!d.is_allowed());
    assert_eq!(d.retry_after().map(us), Some(HOUR_US));
    assert_eq!(us(d.reset_after()), HOUR_US);
    at(mar_1 - 1);
    let d = limiter.check(&monthly, "k").await.unwrap();
    assert_eq!((d.is_allowed(), d.retry_after().map(us)), (false, Some(1)));
    at(mar_1);
    let d = limiter.check(&monthly, "k").await.unwrap();
    assert!(d.is_allowed() && d.remaining() == 2, "{d:?}");
    // March: 31 days less the hour the clocks went forward.
    assert_eq!(us(d.reset_after()), 31 * DAY_US - HOUR_US);
    at(apr_1 - 1_000_000);
    let d = limiter.check(&monthly, "k").await.unwrap();
    assert!(d.is_allowed() && d.remaining() == 1, "{d:?}");
    assert_eq!(us(d.reset_after()), 1_000_000);
    at(apr_1);
    assert_eq!(limiter.check(&monthly, "k").await.unwrap().remaining(), 2);
    at(oct_27);
    for _ in 0..3 {
        assert!(limiter.check(&monthly, "k").await.unwrap().is_allowed());
    }
    // Five days and the hour the clocks go back on the 27th.
    let d = limiter.check(&monthly, "k").await.unwrap();
    assert_eq!(d.retry_after().map(us), Some(5 * DAY_US + HOUR_US));
    at(nov_1);
    assert_eq!(limiter.check(&monthly, "k").await.unwrap().remaining(), 2);
}

/// reset forgets a key's counters (and only that key's).
pub async fn reset_forgets_a_key(h: Arc<dyn Harness>) {
    let (_, limiter, _) = setup(&h).await;
    for algorithm in Algorithm::ALL {
        let r = rule("reset", algorithm, "2/hour");
        for key in ["a", "b"] {
            limiter.check_cost(&r, key, 2).await.unwrap();
            assert!(!limiter.check(&r, key).await.unwrap().is_allowed());
        }
        assert!(limiter.reset(&r, "a").await.unwrap());
        assert!(!limiter.reset(&r, "a").await.unwrap());
        assert_eq!(
            limiter.check(&r, "a").await.unwrap().remaining(),
            1,
            "{algorithm}"
        );
        assert!(
            !limiter.check(&r, "b").await.unwrap().is_allowed(),
            "{algorithm}"
        );
    }
}

/// A penalty blocks every request for its duration, then lets the client back.
pub async fn penalty_blocks_then_releases(h: Arc<dyn Harness>) {
    let (_, limiter, clock) = setup(&h).await;
    for algorithm in Algorithm::ALL {
        let r = rule("pen", algorithm, "2/s")
            .with_penalty(Duration::from_secs(60))
            .unwrap();
        let key = algorithm.as_str();
        limiter.check_cost(&r, key, 2).await.unwrap();
        let d = limiter.check(&r, key).await.unwrap();
        assert_eq!(
            d.retry_after(),
            Some(Duration::from_secs(60)),
            "{algorithm}"
        );
        clock.advance(Duration::from_secs(30));
        let d = limiter.check(&r, key).await.unwrap();
        assert_eq!(
            d.retry_after(),
            Some(Duration::from_secs(30)),
            "{algorithm}: the block is not extended"
        );
        assert!(!limiter.peek(&r, key).await.unwrap().is_allowed());
        clock.advance(Duration::from_secs(30));
        assert!(
            limiter.check(&r, key).await.unwrap().is_allowed(),
            "{algorithm}"
        );
    }
}

/// Several rules decide all or nothing, and report the most restrictive.
pub async fn multi_quota_all_or_nothing(h: Arc<dyn Harness>) {
    let (_, limiter, _) = setup(&h).await;
    for algorithm in Algorithm::ALL {
        let per_second = rule("ps", algorithm, "2/s");
        let per_hour = rule("ph", algorithm, "5/hour");
        let key = algorithm.as_str();
        let both = [(&per_second, key), (&per_hour, key)];
        let d = limiter.check_all(&both, 1).await.unwrap();
        assert!(
            d.is_allowed() && d.rule() == "ps" && d.remaining() == 1,
            "{algorithm}: {d:?}"
        );
        limiter.check_all(&both, 1).await.unwrap();
        let d = limiter.check_all(&both, 1).await.unwrap();
        assert!(!d.is_allowed() && d.rule() == "ps", "{algorithm}: {d:?}");
        // The hourly rule allowed, but consumed nothing for the denied request.
        assert_eq!(
            limiter.peek(&per_hour, key).await.unwrap().remaining(),
            3,
            "{algorithm}"
        );
        // Different keys per rule: a per-user and a shared rule.
        let shared = rule("shared", algorithm, "1/hour");
        let d = limiter
            .check_all(&[(&per_hour, "user-x"), (&shared, "all")], 1)
            .await
            .unwrap();
        assert!(d.is_allowed() && d.rule() == "shared");
        let d = limiter
            .check_all(&[(&per_hour, "user-y"), (&shared, "all")], 1)
            .await
            .unwrap();
        assert!(!d.is_allowed() && d.rule() == "shared");
        assert_eq!(
            limiter.peek(&per_hour, "user-y").await.unwrap().remaining(),
            5
        );
    }
    let r = rule("dup", Algorithm::Gcra, "1/s");
    let err = limiter
        .check_all(&[(&r, "k"), (&r, "k")], 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// One request with its own cost per rule, answered rule by rule
/// ([`Limiter::check_each`]): all or nothing as in
/// [`multi_quota_all_or_nothing`], a cost of 0 peeks only its rule (and
/// never holds the others back), and a rule that would have allowed a
/// denied request reports what it has.
pub async fn per_rule_costs_and_decisions(h: Arc<dyn Harness>) {
    let (_, limiter, _) = setup(&h).await;
    let remaining = |each: &[ratekeeper_core::Decision]| {
        each.iter()
            .map(|d| (d.is_allowed(), d.remaining()))
            .collect::<Vec<_>>()
    };
    for algorithm in Algorithm::ALL {
        let tokens = rule("tokens", algorithm, "10/hour");
        let calls = rule("calls", algorithm, "3/hour");
        let key = algorithm.as_str();
        let each = limiter
            .check_each(&[(&tokens, key, 6), (&calls, key, 1)])
            .await
            .unwrap();
        assert_eq!(remaining(&each), [(true, 4), (true, 2)], "{algorithm}");
        assert_eq!(each[0].rule(), "tokens");
        assert_eq!(each[1].rule(), "calls");
        // Denied by `tokens`: `calls` allows, is charged nothing, and says so.
        let each = limiter
            .check_each(&[(&tokens, key, 5), (&calls, key, 1)])
            .await
            .unwrap();
        assert_eq!(remaining(&each), [(false, 4), (true, 2)], "{algorithm}");
        assert!(each[0].retry_after().is_some(), "{algorithm}");
        let d = Decision::most_restrictive(&each).unwrap();
        assert!(!d.is_allowed() && d.rule() == "tokens", "{algorithm}");
        assert_eq!(
            limiter.peek(&calls, key).await.unwrap().remaining(),
            2,
            "{algorithm}: a denied request consumed nothing"
        );
        // A cost of 0 peeks its rule while the other is charged.
        let each = limiter
            .check_each(&[(&tokens, key, 0), (&calls, key, 2)])
            .await
            .unwrap();
        assert_eq!(remaining(&each), [(true, 4), (true, 0)], "{algorithm}");
        assert_eq!(
            limiter.peek(&tokens, key).await.unwrap().remaining(),
            4,
            "{algorithm}: a peek consumed nothing"
        );
        // A peek of the spent `calls` reports its denial and does not hold
        // back the charge on `tokens`.
        let each = limiter
            .check_each(&[(&calls, key, 0), (&tokens, key, 1)])
            .await
            .unwrap();
        assert_eq!(remaining(&each), [(false, 0), (true, 3)], "{algorithm}");
        assert_eq!(limiter.peek(&tokens, key).await.unwrap().remaining(), 3);
        // The same answer as check_all when the costs are equal.
        let each = limiter
            .check_each(&[(&tokens, "other", 1), (&calls, "other", 1)])
            .await
            .unwrap();
        let d = Decision::most_restrictive(&each).unwrap();
        assert!(d.is_allowed() && d.rule() == "calls" && d.remaining() == 2);
        let err = limiter
            .check_each(&[(&tokens, key, 11), (&calls, key, 1)])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CostExceedsCapacity, "{algorithm}");
    }
    let r = rule("dup", Algorithm::Gcra, "1/s");
    let err = limiter
        .check_each(&[(&r, "k", 1), (&r, "k", 2)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = limiter.check_each(&[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// Charges and refunds after the fact ([`Limiter::charge`],
/// [`Limiter::refund`]) and reservations settled above, below or at
/// nothing, on every algorithm: exact accounting, a charge past the limit
/// owed, never more than a full budget given back, and units that no
/// longer count never given back.
pub async fn charges_and_refunds(h: Arc<dyn Harness>) {
    let (_, limiter, clock) = setup(&h).await;
    for algorithm in Algorithm::ALL {
        let r = rule("spend", algorithm, "10/hour");
        let key = algorithm.as_str();
        let left = || async { limiter.peek(&r, key).await.unwrap().remaining() };
        let mut reservation = limiter.reserve(&r, key, 6).await.unwrap();
        assert!(reservation.is_allowed() && reservation.decision().remaining() == 4);
        let d = reservation.settle(2).await.unwrap();
        assert_eq!(d.remaining(), 8, "{algorithm}: 4 of 6 given back");
        assert_eq!(left().await, 8, "{algorithm}");
        // Settled once.
        let err = reservation.settle(2).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(reservation.is_settled());
        // A charge past the limit is never refused, and is owed.
        let d = limiter.charge(&r, key, 15).await.unwrap();
        assert!(!d.is_allowed() && d.remaining() == 0, "{algorithm}");
        assert!(d.retry_after().is_some(), "{algorithm}");
        assert!(!limiter.check(&r, key).await.unwrap().is_allowed());
        // 17 used: 7 owed, then 3 left.
        assert_eq!(limiter.refund(&r, key, 7).await.unwrap().remaining(), 0);
        assert!(
            !limiter.check(&r, key).await.unwrap().is_allowed(),
            "{algorithm}"
        );
        assert_eq!(limiter.refund(&r, key, 3).await.unwrap().remaining(), 3);
        // Never more than the whole budget.
        assert_eq!(
            limiter.refund(&r, key, 1_000).await.unwrap().remaining(),
            10
        );
        // Settled above the estimate, cancelled.
        let mut reservation = limiter.reserve(&r, key, 2).await.unwrap();
        assert_eq!(reservation.settle(5).await.unwrap().remaining(), 5);
        let mut reservation = limiter.reserve(&r, key, 4).await.unwrap();
        assert_eq!(left().await, 1);
        reservation.cancel().await.unwrap();
        assert_eq!(
            left().await,
            5,
            "{algorithm}: a cancelled reservation gave all back"
        );
        // A denied reservation took nothing, and settling it changes nothing.
        let mut denied = limiter.reserve(&r, key, 6).await.unwrap();
        assert!(!denied.is_allowed(), "{algorithm}");
        assert!(!denied.settle(0).await.unwrap().is_allowed());
        assert_eq!(left().await, 5);
        // Units that no longer count (their window ended, their bucket
        // refilled) are not given back.
        let key = format!("{key}-old");
        let mut old = limiter.reserve(&r, &key, 10).await.unwrap();
        clock.advance(2 * HOUR);
        assert!(limiter.check_cost(&r, &key, 10).await.unwrap().is_allowed());
        assert_eq!(old.settle(0).await.unwrap().remaining(), 0, "{algorithm}");
    }
    let r = rule("one", Algorithm::Gcra, "1/s");
    let changes = [
        (&r, "k", ratekeeper_core::Adjustment::Charge(1)),
        (&r, "k", ratekeeper_core::Adjustment::Charge(1)),
    ];
    let err = limiter.adjust(&changes).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidInput,
        "the same rule and key twice"
    );
    let err = limiter.adjust(&[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let mut reservation = limiter.reserve(&r, "k", 1).await.unwrap();
    let err = reservation.settle_each(&[1, 2]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        !reservation.is_settled(),
        "a refused settlement leaves it open"
    );
    // Several rules: one cost each, never one for all.
    let calls = rule("calls", Algorithm::FixedWindow, "5/hour");
    let mut both = limiter
        .reserve_each(&[(&r, "both", 1), (&calls, "both", 1)])
        .await
        .unwrap();
    let err = both.settle(1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let each = both.settle_each(&[0, 1]).await.unwrap();
    assert_eq!((each[0].remaining(), each[1].remaining()), (1, 4));
}

/// Two reservations settled one after the other on a bucket, with a
/// request admitted between the two: the second refund does not give back
/// what refilled while the first one's units were gone (the request in
/// between keeps its whole place, as if neither reservation was made).
pub async fn interleaved_refunds_give_back_once(h: Arc<dyn Harness>) {
    let (_, limiter, clock) = setup(&h).await;
    for algorithm in Algorithm::ALL.into_iter().filter(|a| a.uses_burst()) {
        // One unit every 10 s, 3 at once.
        let quota = "6/minute".parse::<Quota>().unwrap().with_burst(3).unwrap();
        let r = Rule::new("interleaved", algorithm, quota).unwrap();
        let key = algorithm.as_str();
        let mut first = limiter.reserve(&r, key, 1).await.unwrap();
        let mut second = limiter.reserve(&r, key, 1).await.unwrap();
        assert!(first.is_allowed() && second.is_allowed(), "{algorithm}");
        first.cancel().await.unwrap();
        clock.advance(Duration::from_secs(3));
        assert!(limiter.check(&r, key).await.unwrap().is_allowed());
        second.cancel().await.unwrap();
        // The one unit kept, taken 3 s in, refills 13 s in.
        clock.advance(Duration::from_secs(7));
        let d = limiter.check_cost(&r, key, 3).await.unwrap();
        assert!(!d.is_allowed(), "{algorithm}: a refund gave back twice");
        clock.advance(Duration::from_secs(3));
        let d = limiter.check_cost(&r, key, 3).await.unwrap();
        assert!(d.is_allowed(), "{algorithm}: a refund gave back too little");
    }
}

/// 64 tasks reserve and settle at or below their estimates on one key:
/// the units kept never pass the limit, and what is left afterwards is
/// exactly the limit less what was kept, on every algorithm.
pub async fn concurrent_reservations_are_exact(h: Arc<dyn Harness>) {
    let (_, limiter, _) = setup(&h).await;
    for algorithm in Algorithm::ALL {
        let r = rule("reserved", algorithm, "100/hour");
        let kept = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let (limiter, r, kept) = (limiter.clone(), r.clone(), kept.clone());
                tokio::spawn(async move {
                    for j in 0..4u64 {
                        let estimate = 1 + (i + j) % 5;
                        let mut reservation =
                            limiter.reserve(&r, "one-key", estimate).await.unwrap();
                        tokio::task::yield_now().await;
                        if reservation.is_allowed() {
                            let actual = (i * 7 + j) % (estimate + 1);
                            reservation.settle(actual).await.unwrap();
                            kept.fetch_add(actual, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let kept = kept.load(Ordering::Relaxed);
        assert!(kept <= 100, "{algorithm}: {kept} kept");
        let left = limiter.peek(&r, "one-key").await.unwrap().remaining();
        assert_eq!(left, 100 - kept, "{algorithm}");
    }
}

/// Concurrency rules: places in flight are taken by permits and given back
/// on release, on drop, and by themselves when a lease's window passes (a
/// holder that crashed); mixed with a rate rule, all or nothing, and a
/// release gives back the place only.
pub async fn concurrency_leases(h: Arc<dyn Harness>) {
    let (_, limiter, clock) = setup(&h).await;
    let jobs = Rule::concurrency("jobs", 3, Duration::from_secs(10)).unwrap();
    let a = limiter.acquire(&jobs, "team").await.unwrap();
    let b = limiter.acquire(&jobs, "team").await.unwrap();
    let c = limiter.acquire(&jobs, "team").await.unwrap();
    assert!(a.is_allowed() && b.is_allowed() && c.is_allowed());
    assert_eq!(c.decision().remaining(), 0);
    let full = limiter.acquire(&jobs, "team").await.unwrap();
    assert!(!full.is_allowed());
    let wait = full.decision().retry_after().unwrap();
    assert!(
        wait <= Duration::from_secs(1),
        "{wait:?}: a hint, at most 1 s"
    );
    drop(full);
    // Another key has places of its own.
    assert!(limiter.acquire(&jobs, "other").await.unwrap().is_allowed());
    // A release frees one place, and only one.
    b.release().await.unwrap();
    assert_eq!(limiter.peek(&jobs, "team").await.unwrap().remaining(), 1);
    let d = limiter.acquire(&jobs, "team").await.unwrap();
    assert!(d.is_allowed());
    assert!(!limiter.acquire(&jobs, "team").await.unwrap().is_allowed());
    // Dropped: released by a task on the runtime.
    drop(d);
    let freed = peek_reaches(&limiter, &jobs, "team", 1, Duration::from_secs(1)).await;
    assert!(freed, "a dropped permit gives its place back");
    // Holders that never release (a process killed): their leases end with
    // their window, and a late release frees nobody else's place.
    let e = limiter.acquire(&jobs, "team").await.unwrap();
    assert!(e.is_allowed());
    std::mem::forget(a);
    std::mem::forget(c);
    clock.advance(Duration::from_secs(10));
    let after = limiter.peek(&jobs, "team").await.unwrap();
    assert!(after.is_allowed());
    assert_eq!(
        after.remaining(),
        3,
        "every lease of the crashed holders ended"
    );
    let f = limiter.acquire(&jobs, "team").await.unwrap();
    e.release().await.unwrap();
    assert_eq!(limiter.peek(&jobs, "team").await.unwrap().remaining(), 2);
    f.release().await.unwrap();

    // With a rate rule, in one step: a request the rate denies takes no
    // place, one without a place spends no rate, and a release gives back
    // the place only.
    let calls = rule("calls", Algorithm::FixedWindow, "2/hour");
    let one = Rule::concurrency("one", 1, Duration::from_secs(60)).unwrap();
    let both = [(&one, "u", 1), (&calls, "u", 1)];
    let first = limiter.acquire_each(&both).await.unwrap();
    assert!(first.is_allowed());
    let second = limiter.acquire_each(&both).await.unwrap();
    assert!(!second.is_allowed());
    assert!(!second.decisions()[0].is_allowed() && second.decisions()[1].is_allowed());
    assert_eq!(limiter.peek(&calls, "u").await.unwrap().remaining(), 1);
    first.release().await.unwrap();
    assert_eq!(limiter.peek(&one, "u").await.unwrap().remaining(), 1);
    assert_eq!(limiter.peek(&calls, "u").await.unwrap().remaining(), 1);
    let third = limiter.acquire_each(&both).await.unwrap();
    assert!(third.is_allowed());
    third.release().await.unwrap();
    let fourth = limiter.acquire_each(&both).await.unwrap();
    assert!(!fourth.is_allowed());
    assert!(fourth.decisions()[0].is_allowed() && !fourth.decisions()[1].is_allowed());
    assert_eq!(limiter.peek(&one, "u").await.unwrap().remaining(), 1);

    // A release whose caller stops waiting (a cancelled request) is made
    // all the same.
    let held = limiter.acquire(&one, "cancelled").await.unwrap();
    let _ = tokio::time::timeout(Duration::ZERO, held.release()).await;
    let back = peek_reaches(&limiter, &one, "cancelled", 1, Duration::from_secs(1)).await;
    assert!(back, "a cancelled release gives its place back");
}

/// Whether a peek of `rule` for `key` comes to say `remaining` within
/// `within` of real time (a place released by a task on the runtime
/// comes back a moment later).
async fn peek_reaches(
    limiter: &Limiter,
    rule: &Rule,
    key: &str,
    remaining: u64,
    within: Duration,
) -> bool {
    let step = Duration::from_millis(5);
    for _ in 0..within.as_millis() / step.as_millis() {
        if limiter.peek(rule, key).await.unwrap().remaining() == remaining {
            return true;
        }
        tokio::time::sleep(step).await;
    }
    false
}

/// 32 tasks each run 4 jobs on one key limited to 5 in flight, taking a
/// permit for each and retrying when denied: the jobs running at once,
/// counted by the tasks themselves, never pass 5, every job runs, and
/// every place is free at the end.
pub async fn concurrent_leases_are_exact(h: Arc<dyn Harness>) {
    let (_, limiter, _) = setup(&h).await;
    let r = Rule::concurrency("in-flight", 5, HOUR).unwrap();
    let running = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (limiter, r) = (limiter.clone(), r.clone());
            let (running, most) = (running.clone(), most.clone());
            tokio::spawn(async move {
                let mut done = 0;
                while done < 4 {
                    let permit = limiter.acquire(&r, "one-key").await.unwrap();
                    if !permit.is_allowed() {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    permit.release().await.unwrap();
                    done += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 5, "{most} jobs ran at once");
    assert_eq!(
        limiter.peek(&r, "one-key").await.unwrap().remaining(),
        5,
        "every place was given back"
    );
}

/// Rule state expires once it no longer matters: no idle client is kept forever.
pub async fn state_keys_expire(h: Arc<dyn Harness>) {
    if h.expiry() == Expiry::RealTime {
        return state_keys_expire_in_real_time(h).await;
    }
    let (store, limiter, clock) = setup(&h).await;
    for algorithm in Algorithm::ALL {
        let r = rule("ttl", algorithm, "4/s");
        limiter.check_cost(&r, "idle", 3).await.unwrap();
        let key = limiter.state_key(&r, "idle");
        assert!(store.exists(&key).await.unwrap(), "{algorithm}");
        clock.advance(Duration::from_secs(2));
        assert!(
            !store.exists(&key).await.unwrap(),
            "{algorithm}: state outlived its window"
        );
    }
}

/// [`state_keys_expire`] on a store that decides, and expires keys, on its own
/// real clock: every algorithm's state is gone two windows later.
async fn state_keys_expire_in_real_time(h: Arc<dyn Harness>) {
    let store = h
        .real_time_store()
        .await
        .expect("a RealTime harness provides real_time_store");
    let limiter = Limiter::new(store.clone());
    let mut keys = Vec::new();
    for algorithm in Algorithm::ALL {
        let r = rule("ttl", algorithm, "4/500ms");
        limiter.check_cost(&r, algorithm.as_str(), 3).await.unwrap();
        let key = limiter.state_key(&r, algorithm.as_str());
        assert!(store.exists(&key).await.unwrap(), "{algorithm}");
        keys.push((algorithm, key));
    }
    // The longest-lived state (the sliding window counter's) matters for two
    // windows.
    tokio::time::sleep(Duration::from_millis(1_000 + 300)).await;
    for (algorithm, key) in keys {
        assert!(
            !store.exists(&key).await.unwrap(),
            "{algorithm}: state outlived its window"
        );
    }
    store.close().await.unwrap();
}

/// Huge keys are bounded before they reach the store, and stay distinct.
pub async fn long_keys_are_bounded(h: Arc<dyn Harness>) {
    let (store, limiter, _) = setup(&h).await;
    let r = rule("long", Algorithm::FixedWindow, "1/hour");
    let a = "a".repeat(100_000);
    let mut b = a.clone();
    b.push('b');
    assert!(limiter.check(&r, &a).await.unwrap().is_allowed());
    assert!(!limiter.check(&r, &a).await.unwrap().is_allowed());
    assert!(
        limiter.check(&r, &b).await.unwrap().is_allowed(),
        "distinct long keys stay distinct"
    );
    let key = limiter.state_key(&r, &a);
    assert!(key.len() <= 4 + 1 + 104, "{}", key.len());
    assert!(store.exists(&key).await.unwrap());
}

/// A cost no rule could ever grant is an error, not an endless denial.
pub async fn cost_above_capacity_is_an_error(h: Arc<dyn Harness>) {
    let (_, limiter, _) = setup(&h).await;
    for algorithm in Algorithm::ALL {
        let r = rule("cap", algorithm, "3/s");
        let err = limiter.check_cost(&r, "k", 4).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CostExceedsCapacity, "{algorithm}");
        let err = limiter
            .until_ready_cost(&r, "k", 4, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CostExceedsCapacity, "{algorithm}");
    }
}

/// Garbage where rule state should be is a clear error, never a panic; reset
/// recovers the key.
pub async fn corrupt_state_is_an_error(h: Arc<dyn Harness>) {
    let (store, limiter, _) = setup(&h).await;
    let r = rule("corrupt", Algorithm::Gcra, "1/s");
    let key = limiter.state_key(&r, "victim");
    for garbage in [
        &b""[..],
        b"\x01",
        b"\x01\x06short",
        b"not state at all",
        &[0xff; 40],
    ] {
        store.set(&key, garbage, HOUR).await.unwrap();
        let err = limiter.check(&r, "victim").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CorruptState, "{garbage:?}");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
    // State of another algorithm (the rule was changed) starts afresh instead.
    let other = RuleState {
        blocked_until: 0,
        algorithm: AlgorithmState::TokenBucket(ratekeeper_core::kit::TokenBucketState {
            tokens: 0,
            anchor: T0,
        }),
    };
    store.set(&key, &other.encode(), HOUR).await.unwrap();
    assert!(limiter.check(&r, "victim").await.unwrap().is_allowed());
    store.set(&key, b"junk", HOUR).await.unwrap();
    assert!(limiter.reset(&r, "victim").await.unwrap());
    assert!(limiter.check(&r, "victim").await.unwrap().is_allowed());
}

/// Arbitrary bytes where rule state should be (a corrupted or foreign value
/// in the store), for every algorithm: each decision is an answer or a
/// `CorruptState` error, never a panic nor another error; a reset recovers.
/// Inputs from proptest: random bytes, and valid states with bytes flipped
/// or cut (the likelier corruption). `RATELIMIT_FUZZ_CASES` cases per
/// algorithm (default 48).
pub async fn arbitrary_state_bytes_are_answered_or_corrupt(h: Arc<dyn Harness>) {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let (store, limiter, _) = setup(&h).await;
    let cases: usize = std::env::var("RATELIMIT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::deterministic();
    let (mut answered, mut corrupt) = (0, 0);
    for algorithm in Algorithm::ALL {
        let r = rule("fuzz", algorithm, "5/s");
        let key = limiter.state_key(&r, "victim");
        limiter.check(&r, "victim").await.unwrap();
        let valid = store.get(&key).await.unwrap().unwrap_or_default();
        let random = proptest::collection::vec(any::<u8>(), 0..96).boxed();
        let mangled = (
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            any::<prop::sample::Index>(),
        )
            .prop_map(move |(flips, cut)| {
                let mut v = valid.clone();
                for (at, byte) in flips {
                    if !v.is_empty() {
                        let i = at.index(v.len());
                        if let Some(b) = v.get_mut(i) {
                            *b ^= byte | 1;
                        }
                    }
                }
                let keep = cut.index(v.len() + 1);
                v.truncate(keep.max(v.len() / 2));
                v
            })
            .boxed();
        let inputs = prop_oneof![random, mangled];
        for _ in 0..cases {
            let bytes = inputs.new_tree(&mut runner).unwrap().current();
            store.set(&key, &bytes, HOUR).await.unwrap();
            for cost in [1, 0] {
                match limiter.check_cost(&r, "victim", cost).await {
                    Ok(_) => answered += 1,
                    Err(e) => {
                        assert_eq!(
                            e.kind(),
                            ErrorKind::CorruptState,
                            "{algorithm}, {bytes:?}: {e}"
                        );
                        corrupt += 1;
                    }
                }
            }
        }

        limiter.reset(&r, "victim").await.unwrap();
        assert!(limiter.check(&r, "victim").await.unwrap().is_allowed());
    }
    // Both outcomes were met: the inputs are not all of one kind.
    assert!(
        answered > 0 && corrupt > 0,
        "{answered} answered, {corrupt} corrupt"
    );
}

/// until_ready waits exactly as long as needed; with a bound it gives up.
pub async fn until_ready_waits(h: Arc<dyn Harness>) {
    let (_, limiter, clock) = setup(&h).await;
    let r = rule("wait", Algorithm::Gcra, "10/s");
    limiter.check_cost(&r, "api", 10).await.unwrap();
    let d = limiter
        .until_ready_cost(&r, "api", 1, Some(Duration::from_millis(50)))
        .await
        .unwrap();
    assert!(!d.is_allowed() && d.retry_after() == Some(Duration::from_millis(100)));
    assert_eq!(
        clock.now(),
        Timestamp::from_micros(T0),
        "a wait past the bound is not started"
    );
    let d = limiter.until_ready(&r, "api").await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(clock.now(), Timestamp::from_micros(T0 + 100_000));
}

use ratekeeper_core::Clock as _;

/// Waits (in real time, boundedly) until `done` holds: for tasks on other
/// threads to reach a point the test cannot await.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..2_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{what} did not happen within 10 s");
}

/// Counts the calls that reach the store below.
#[derive(Debug)]
struct CountCalls {
    inner: Arc<dyn Storage>,
    calls: AtomicU64,
}

impl ratekeeper_core::layer::LayeredStorage for CountCalls {
    fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    fn around<'a, T: Send + 'a>(
        &'a self,
        call: impl Future<Output = ratekeeper_core::Result<T>> + Send + 'a,
    ) -> impl Future<Output = ratekeeper_core::Result<T>> + Send + 'a {
        self.calls.fetch_add(1, Ordering::Relaxed);
        call
    }

    fn decide_now(
        &self,
        request: &ratekeeper_core::DecideRequest<'_>,
    ) -> Option<ratekeeper_core::Result<Decision>> {
        let answer = self.inner.decide_now(request);
        if answer.is_some() {
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }
}

/// What requests in line answer: each one's decision and when it returned.
type Answers = tokio::sync::mpsc::UnboundedReceiver<(Decision, Timestamp)>;

/// Requests let in by `limiter` on `rule` for `key`, one task each, each
/// answering with its decision and the time it returned.
fn line_up(limiter: &Limiter, rule: &Rule, key: &str, n: usize, until_ready: bool) -> Answers {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    line_up_into(&tx, limiter, rule, key, n, until_ready);
    rx
}

/// [`line_up`], answering on `tx`.
fn line_up_into(
    tx: &tokio::sync::mpsc::UnboundedSender<(Decision, Timestamp)>,
    limiter: &Limiter,
    rule: &Rule,
    key: &str,
    n: usize,
    until_ready: bool,
) {
    for _ in 0..n {
        let (limiter, rule, key, tx) = (limiter.clone(), rule.clone(), key.to_owned(), tx.clone());
        tokio::spawn(async move {
            let d = if until_ready {
                limiter.until_ready(&rule, &key).await.unwrap()
            } else {
                limiter.check(&rule, &key).await.unwrap()
            };
            let _ = tx.send((d, limiter.clock().now()));
        });
    }
}

/// The next answer of a request in line (within 10 s of real time).
async fn answer(answers: &mut Answers) -> (Decision, Timestamp) {
    tokio::time::timeout(Duration::from_secs(10), answers.recv())
        .await
        .ok()
        .flatten()
        .expect("a request in line answered")
}

/// Waiting in line (GCRA and the leaky bucket): with 10/s and a wait of up
/// to 1 s for at most 5 waiters, 20 requests at once: 10 are let in at
/// once, 5 wait for their turns and are let in one at a time, each at its
/// turn (100 ms apart), and 5 are denied at once with the time a place in
/// line opens. Beside the line, a cost past the real burst never fits, the
/// rule without its line reads the key alike, and no refund is taken. A
/// waiter that gives up keeps its place: its turn goes unused, and no
/// later request gets a turn beside one still waiting. `until_ready` takes
/// places in line too: its waiters are let in one at a time.
pub async fn waiting_in_line(h: Arc<dyn Harness>) {
    let (store, _, manual) = setup(&h).await;
    let clock = crate::WaitingClock::over(manual);
    let counted = Arc::new(CountCalls {
        inner: store,
        calls: AtomicU64::new(0),
    });
    let calls = || counted.calls.load(Ordering::Relaxed);
    let limiter = Limiter::builder(counted.clone())
        .clock(clock.clone())
        .build();
    let step = Duration::from_millis(100);
    let wait = ratekeeper_core::rule::Wait::new(Duration::from_secs(1), 5);
    for algorithm in [Algorithm::Gcra, Algorithm::LeakyBucket] {
        let r = rule("line", algorithm, "10/s").with_wait(wait).unwrap();
        let start = clock.now();
        let key = format!("{algorithm}-20");
        let mut answers = line_up(&limiter, &r, &key, 20, false);
        let mut at_once = Vec::new();
        for _ in 0..15 {
            at_once.push(answer(&mut answers).await);
        }
        assert!(at_once.iter().all(|(_, at)| *at == start), "{algorithm}");
        let allowed = at_once.iter().filter(|(d, _)| d.is_allowed()).count();
        assert_eq!(allowed, 10, "{algorithm}: the burst at once");
        for (d, _) in at_once.iter().filter(|(d, _)| !d.is_allowed()) {
            assert_eq!(d.retry_after(), Some(step), "{algorithm}: a place opens");
        }
        eventually("5 waiters asleep", || clock.sleepers() == 5).await;
        for turn in 1..=5u32 {
            clock.advance(step);
            let (d, at) = answer(&mut answers).await;
            assert!(d.is_allowed(), "{algorithm}");
            assert_eq!(
                at,
                start.saturating_add(step * turn),
                "{algorithm}: turn {turn}"
            );
            eventually("the next waiter asleep", || {
                clock.sleepers() == 5 - turn as usize
            })
            .await;
            assert!(answers.try_recv().is_err(), "{algorithm}: one per turn");
        }

        // Beside the line: a cost past the real burst never fits; the same
        // rule without its line reads the key alike (its next request fits
        // once the line has passed); the rule takes no refund, and a
        // reservation settled below its estimate keeps it.
        let err = limiter.check_cost(&r, &key, 11).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CostExceedsCapacity, "{algorithm}");
        let key = format!("{algorithm}-beside");
        assert!(limiter.check_cost(&r, &key, 10).await.unwrap().is_allowed());
        let mut line = line_up(&limiter, &r, &key, 5, false);
        eventually("5 waiters asleep", || clock.sleepers() == 5).await;
        let plain = limiter.check(&r.without_wait(), &key).await.unwrap();
        assert_eq!(plain.retry_after(), Some(step * 6), "{algorithm}");
        let err = limiter.refund(&r, &key, 1).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{algorithm}");
        for _ in 0..5 {
            clock.advance(step);
            assert!(answer(&mut line).await.0.is_allowed());
        }
        clock.advance(Duration::from_secs(2));
        let mut reservation = limiter.reserve(&r, &key, 2).await.unwrap();
        assert_eq!(
            reservation.settle(0).await.unwrap().remaining(),
            8,
            "{algorithm}"
        );

        // A waiter that gives up keeps its place: its turn goes unused,
        // and no later request is given a turn beside one still waiting.
        let key = format!("{algorithm}-gives-up");
        let start = clock.now();
        assert!(limiter.check_cost(&r, &key, 10).await.unwrap().is_allowed());
        let (tx, mut others) = tokio::sync::mpsc::unbounded_channel();
        line_up_into(&tx, &limiter, &r, &key, 2, false);
        eventually("2 waiters asleep", || clock.sleepers() == 2).await;
        let (l, r2, k) = (limiter.clone(), r.clone(), key.clone());
        let waiter = tokio::spawn(async move { l.check(&r2, &k).await });
        eventually("the third asleep", || clock.sleepers() == 3).await;
        line_up_into(&tx, &limiter, &r, &key, 2, false);
        eventually("5 waiters asleep", || clock.sleepers() == 5).await;
        waiter.abort();
        eventually("the third gone", || clock.sleepers() == 4).await;
        let d = limiter.peek(&r, &key).await.unwrap();
        assert!(!d.is_allowed(), "{algorithm}: its place stays taken");
        let mut turns = Vec::new();
        for turn in 1..=5u32 {
            clock.advance(step);
            if turn != 3 {
                let (d, at) = answer(&mut others).await;
                assert!(d.is_allowed());
                turns.push(at.saturating_duration_since(start));
            }
        }
        assert!(others.try_recv().is_err(), "{algorithm}: one per turn");

        // Places in flight taken with a place in line come back when the
        // request is dropped before its turn.
        let key = format!("{algorithm}-places");
        let two = Rule::concurrency("line-places", 2, HOUR).unwrap();
        assert!(limiter.check_cost(&r, &key, 10).await.unwrap().is_allowed());
        let (l, r2, two2, k) = (limiter.clone(), r.clone(), two.clone(), key.clone());
        let waiter =
            tokio::spawn(async move { l.acquire_each(&[(&r2, &k, 1), (&two2, &k, 1)]).await });
        eventually("the waiter asleep", || clock.sleepers() == 1).await;
        let free = limiter.peek(&two, &key).await.unwrap().remaining();
        assert_eq!(free, 1, "{algorithm}: its place in flight taken");
        waiter.abort();
        let back = peek_reaches(&limiter, &two, &key, 2, Duration::from_secs(10)).await;
        assert!(back, "{algorithm}: the place in flight came back");
        // A request past its whole line gives up at once when its turn
        // would come after its deadline (a line cut to 250 ms: two places,
        // both taken, one by the waiter gone).
        let _next = line_up(&limiter, &r, &key, 1, false);
        eventually("the next asleep", || clock.sleepers() == 1).await;
        let before = (calls(), clock.now());
        let d = limiter
            .until_ready_cost(&r, &key, 1, Some(Duration::from_millis(250)))
            .await
            .unwrap();
        assert!(!d.is_allowed(), "{algorithm}");
        assert_eq!(
            (calls(), clock.now()),
            (before.0 + 1, before.1),
            "{algorithm}: at once"
        );
        // The rule without its line denies here, and starts no penalty.
        let strict = r.clone().with_penalty(HOUR).unwrap();
        assert!(
            !limiter
                .check(&strict.without_wait(), &key)
                .await
                .unwrap()
                .is_allowed()
        );
        assert!(
            limiter.peek(&strict, &key).await.unwrap().is_allowed(),
            "{algorithm}"
        );
        clock.advance(Duration::from_secs(2));
        assert_eq!(turns, [step, step * 2, step * 4, step * 5], "{algorithm}");

        // until_ready on a rule with a line takes a place in it: one store
        // call each, let in one per turn.
        let key = format!("{algorithm}-ready");
        let start = clock.now();
        limiter.check_cost(&r, &key, 10).await.unwrap();
        let before = calls();
        let mut ready = line_up(&limiter, &r, &key, 4, true);
        eventually("4 asleep", || clock.sleepers() == 4).await;
        for turn in 1..=4u32 {
            clock.advance(step);
            let (d, at) = answer(&mut ready).await;
            assert!(d.is_allowed(), "{algorithm}");
            assert_eq!(
                at,
                start.saturating_add(step * turn),
                "{algorithm}: turn {turn}"
            );
            eventually("the rest asleep", || clock.sleepers() == 4 - turn as usize).await;
        }
        assert_eq!(
            calls() - before,
            4,
            "{algorithm}: one store call each, no polling"
        );
    }
}

/// What requests waiting for a place in flight answer: each one's number,
/// its permit and when it returned.
type Places = tokio::sync::mpsc::UnboundedReceiver<(usize, ratekeeper_core::Permit, Timestamp)>;
type PlacesTx = tokio::sync::mpsc::UnboundedSender<(usize, ratekeeper_core::Permit, Timestamp)>;

/// Request number `id` for a place in flight on `rule` for `key`, on a
/// task of its own, answering on `tx`.
fn ask_place(
    tx: &PlacesTx,
    limiter: &Limiter,
    rule: &Rule,
    key: &str,
    id: usize,
) -> tokio::task::JoinHandle<()> {
    let (limiter, rule, key, tx) = (limiter.clone(), rule.clone(), key.to_owned(), tx.clone());
    tokio::spawn(async move {
        let permit = limiter.acquire(&rule, &key).await.unwrap();
        let _ = tx.send((id, permit, limiter.clock().now()));
    })
}

/// The next answer of a request for a place (within 10 s of real time).
async fn place(places: &mut Places) -> (usize, ratekeeper_core::Permit, Timestamp) {
    tokio::time::timeout(Duration::from_secs(10), places.recv())
        .await
        .ok()
        .flatten()
        .expect("a request for a place answered")
}

/// Waiting for a place in flight (a concurrency rule with a line): with 5
/// places and a wait of up to 1 s for at most 5 waiters, 20 requests at
/// once: 5 are let in at once, 5 wait and are let in one per place
/// released, at once, and 10 are denied at once. Waiters are let in in the
/// order they came; one that gives up leaves the line; one arriving while
/// others wait goes behind them even when a place is free; a place freed
/// by another limiter (another process) is seen within 50 ms; a wait that
/// runs out is a denial; a request a rule without a line denies does not
/// wait.
pub async fn waiting_for_a_place(h: Arc<dyn Harness>) {
    let (store, _, manual) = setup(&h).await;
    let clock = crate::WaitingClock::over(manual);
    let limiter = Limiter::builder(store.clone()).clock(clock.clone()).build();
    // Another process on the same store: what it releases wakes no one here.
    let elsewhere = Limiter::builder(store).clock(clock.clone()).build();
    let wait = ratekeeper_core::rule::Wait::new(Duration::from_secs(1), 5);
    let r = Rule::concurrency("places", 5, HOUR)
        .unwrap()
        .with_wait(wait)
        .unwrap();
    let start = clock.now();

    // 20 at once.
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for id in 0..20 {
        ask_place(&tx, &limiter, &r, "20", id);
    }
    let mut held = Vec::new();
    let mut denied = 0;
    for _ in 0..15 {
        let (_, permit, at) = place(&mut answers).await;
        assert_eq!(at, start, "answered at once");
        if permit.is_allowed() {
            held.push(permit);
        } else {
            denied += 1;
            let retry = permit.decision().retry_after();
            assert_eq!(
                retry,
                Some(Duration::from_secs(1)),
                "a place opens within the wait"
            );
        }
    }
    assert_eq!((held.len(), denied), (5, 10));
    // The first waiter looks again at the store; the others wait their turn.
    eventually("5 waiting", || clock.sleepers() == 5).await;
    for left in (0..5).rev() {
        held.pop().unwrap().release().await.unwrap();
        let (_, permit, at) = place(&mut answers).await;
        assert!(
            permit.is_allowed() && at == start,
            "let in when a place is released"
        );
        held.push(permit);
        eventually("the rest waiting", || clock.sleepers() == left).await;
        assert!(answers.try_recv().is_err(), "one per place released");
    }
    for permit in held.drain(..) {
        permit.release().await.unwrap();
    }

    // In the order they came; one that gives up leaves the line, and the
    // line takes one more.
    let key = "order";
    for _ in 0..4 {
        held.push(limiter.acquire(&r, key).await.unwrap());
    }
    held.push(elsewhere.acquire(&r, key).await.unwrap());
    assert!(held.iter().all(ratekeeper_core::Permit::is_allowed));
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for id in 0..5 {
        waiters.push(ask_place(&tx, &limiter, &r, key, id));
        eventually("the waiter in line", || clock.sleepers() == id + 1).await;
    }
    let turned_away = |id| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        ask_place(&tx, &limiter, &r, key, id);
        rx
    };
    let (_, full, _) = place(&mut turned_away(99)).await;
    assert!(!full.is_allowed(), "the line is full");
    // A place freed elsewhere is seen when the first in line looks again;
    // meanwhile, a request finding the line full is denied even so.
    held.pop().unwrap().release().await.unwrap();
    let free = elsewhere.peek(&r.without_wait(), key).await.unwrap();
    assert_eq!(free.remaining(), 1);
    let (_, full, _) = place(&mut turned_away(98)).await;
    assert!(!full.is_allowed(), "a full line, even with a place free");
    waiters[2].abort();
    eventually("the third gone", || clock.sleepers() == 4).await;
    // A request arriving while others wait goes behind them.
    ask_place(&tx, &limiter, &r, key, 5);
    eventually("one more in line", || clock.sleepers() == 5).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        answers.try_recv().is_err(),
        "nobody let in before the first looks again"
    );
    clock.advance(Duration::from_millis(50));
    let (id, permit, at) = place(&mut answers).await;
    assert_eq!(
        (id, at),
        (0, start.saturating_add(Duration::from_millis(50)))
    );
    held.push(permit);
    let mut order = Vec::new();
    for _ in 0..3 {
        held.remove(0).release().await.unwrap();
        let (id, permit, _) = place(&mut answers).await;
        assert!(permit.is_allowed());
        order.push(id);
        held.push(permit);
    }
    assert_eq!(order, [1, 3, 4], "in the order they came");

    // A wait that runs out is a denial, and nothing is taken.
    eventually("the last waiting", || clock.sleepers() == 1).await;
    clock.advance(Duration::from_secs(1));
    let (id, permit, _) = place(&mut answers).await;
    assert!(id == 5 && !permit.is_allowed(), "its wait ran out");
    assert_eq!(limiter.peek(&r, key).await.unwrap().remaining(), 0);

    // Denied by a rule without a line: at once, even with a place to wait for.
    let calls = rule("calls", Algorithm::FixedWindow, "1/hour");
    assert!(limiter.check(&calls, key).await.unwrap().is_allowed());
    let both = limiter
        .acquire_each(&[(&r, key, 1), (&calls, key, 1)])
        .await
        .unwrap();
    assert!(!both.is_allowed() && clock.sleepers() == 0);
    for permit in held.drain(..) {
        permit.release().await.unwrap();
    }
    assert_eq!(limiter.peek(&r, key).await.unwrap().remaining(), 5);

    // Turned away from a full line: told to come back within the wait.
    let short = Rule::concurrency("short", 1, HOUR)
        .unwrap()
        .with_wait(ratekeeper_core::rule::Wait::new(
            Duration::from_millis(300),
            1,
        ))
        .unwrap();
    let only = limiter.acquire(&short, key).await.unwrap();
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    ask_place(&tx, &limiter, &short, key, 0);
    eventually("the waiter in line", || clock.sleepers() == 1).await;
    let full = limiter.acquire(&short, key).await.unwrap();
    let retry = full.decision().retry_after();
    assert_eq!(retry, Some(Duration::from_millis(300)), "within the wait");
    only.release().await.unwrap();
    let (_, next, _) = place(&mut answers).await;
    assert!(next.is_allowed());
    // until_ready waits in line past the rule's wait, keeping its place,
    // and is let in when the place is released.
    let (l, s2, k) = (limiter.clone(), short.clone(), key.to_owned());
    let ready = tokio::spawn(async move {
        l.until_ready_cost(&s2, &k, 1, Some(Duration::from_secs(60)))
            .await
    });
    eventually("until_ready in line", || clock.sleepers() == 1).await;
    clock.advance(Duration::from_secs(1));
    eventually("still in line", || clock.sleepers() == 1).await;
    next.release().await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .expect("until_ready let in when the place was released")
        .unwrap()
        .unwrap();
    assert!(d.is_allowed());
}

/// 64 tasks on a multi-thread runtime hammer one key: exactly the capacity is
/// admitted, for every algorithm.
pub async fn concurrent_exactness_every_algorithm(h: Arc<dyn Harness>) {
    let (_, limiter, _) = setup(&h).await;
    for algorithm in Algorithm::ALL {
        let r = rule("hot", algorithm, "100/hour");
        let admitted = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (limiter, r, admitted) = (limiter.clone(), r.clone(), admitted.clone());
                tokio::spawn(async move {
                    for _ in 0..4 {
                        if limiter.check(&r, "one-key").await.unwrap().is_allowed() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 100, "{algorithm}");
    }
}

/// Concurrent requests under a per-user and a shared rule: the shared limit is
/// exact and denied requests consume nothing from the per-user rule.
pub async fn concurrent_multi_rule_exactness(h: Arc<dyn Harness>) {
    let (_, limiter, _) = setup(&h).await;
    let per_user = rule("user", Algorithm::SlidingWindowCounter, "40/hour");
    let global = rule("global", Algorithm::FixedWindow, "50/hour");
    let counts: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (limiter, per_user, global, counts) = (
                limiter.clone(),
                per_user.clone(),
                global.clone(),
                counts.clone(),
            );
            tokio::spawn(async move {
                let user = if i % 2 == 0 { "u0" } else { "u1" };
                for _ in 0..3 {
                    let d = limiter
                        .check_all(&[(&per_user, user), (&global, "all")], 1)
                        .await
                        .unwrap();
                    if d.is_allowed() {
                        counts[i % 2].fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (u0, u1) = (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
    );
    assert_eq!(u0 + u1, 50);
    for (user, n) in [("u0", u0), ("u1", u1)] {
        assert!(n <= 40);
        assert_eq!(
            limiter.peek(&per_user, user).await.unwrap().remaining(),
            40 - n,
            "{user}"
        );
    }
}

/// How far the clock moves before a request of a [`Scenario`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// By this many µs.
    By(u64),
    /// To exactly the instant the last denial said to retry at (boundaries are
    /// where off-by-one errors live).
    ToRetry,
    /// To 1 µs before that instant.
    JustBeforeRetry,
}

/// What one step of a [`Scenario`] does after the clock moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A request of this cost; 0 is a peek.
    Check(u64),
    /// A reservation of this estimate ([`Limiter::reserve`]).
    Reserve(u64),
    /// Settles the oldest reservation still open at this many units (at
    /// most its estimate); nothing when none is open.
    Settle(u64),
}

/// One random scenario for the model comparison.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The rule under test.
    pub rule: Rule,
    /// Offset of the start from [`T0`], so windows align differently.
    pub start_offset: u64,
    /// What happens at each step, after moving the clock.
    pub steps: Vec<(Advance, Op)>,
}

/// Random rules and request sequences for `algorithm`.
pub fn scenarios(algorithm: Algorithm) -> impl Strategy<Value = Scenario> {
    let windows = prop_oneof![
        Just(1_000u64),
        Just(7_000),
        Just(1_000_000),
        Just(60_000_000)
    ];
    let bursty = algorithm.uses_burst();
    (
        windows,
        1u64..=8,
        proptest::option::of(1u64..=10),
        proptest::option::of(0u64..3),
    )
        .prop_flat_map(move |(window, limit, burst, penalty)| {
            let mut quota = Quota::new(limit, Duration::from_micros(window)).unwrap();
            if bursty && let Some(b) = burst {
                quota = quota.with_burst(b).unwrap();
            }
            let mut rule = Rule::new("prop", algorithm, quota).unwrap();
            if let Some(p) = penalty {
                let p = [window / 2, window, 3 * window][p as usize].max(1);
                rule = rule.with_penalty(Duration::from_micros(p)).unwrap();
            }
            let capacity = rule.capacity();
            let interval = quota.emission_interval_us();
            let dt = prop_oneof![
                2 => Just(Advance::By(0)),
                3 => (0..=interval).prop_map(Advance::By),
                2 => (0..=window * 2).prop_map(Advance::By),
                1 => Just(Advance::By(window)),
                2 => Just(Advance::ToRetry),
                2 => Just(Advance::JustBeforeRetry),
            ];
            let cost = || prop_oneof![4 => Just(1u64), 2 => 0..=capacity];
            let op = prop_oneof![
                6 => cost().prop_map(Op::Check),
                1 => cost().prop_map(Op::Reserve),
                1 => (0..=capacity).prop_map(Op::Settle),
            ];
            let steps = proptest::collection::vec((dt, op), 1..60);
            (Just(rule), 0..window, steps).prop_map(|(rule, start_offset, steps)| Scenario {
                rule,
                start_offset,
                steps,
            })
        })
}

async fn run_scenario(h: Arc<dyn Harness>, scenario: Scenario) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(Timestamp::from_micros(T0 + scenario.start_offset));
    let store = h.store(clock.clone()).await;
    let limiter = Limiter::builder(store.clone()).clock(clock.clone()).build();
    let rule = &scenario.rule;
    let mut model = Model::new(rule.clone());
    let state_key = limiter.state_key(rule, "k");
    let mut retry_at: Option<u64> = None;
    let fail = |e: ratekeeper_core::Error| TestCaseError::fail(e.to_string());
    // Reservations still open: the store's and the model's.
    let mut open = std::collections::VecDeque::new();
    for (i, (advance, op)) in scenario.steps.iter().enumerate() {
        let now = clock.now().as_micros();
        let dt = match (advance, retry_at) {
            (Advance::By(dt), _) => *dt,
            (Advance::ToRetry, Some(at)) => at.saturating_sub(now),
            (Advance::JustBeforeRetry, Some(at)) => at.saturating_sub(now + 1),
            (_, None) => 0,
        };
        clock.advance(Duration::from_micros(dt));
        let now = clock.now().as_micros();
        let (decision, expected) = match *op {
            Op::Check(cost) => {
                let decision = limiter.check_cost(rule, "k", cost).await.map_err(fail)?;
                (decision, model.check(now, cost))
            }
            Op::Reserve(estimate) => {
                let reservation = limiter.reserve(rule, "k", estimate).await.map_err(fail)?;
                let (expected, taken) = model.reserve(now, estimate);
                let decision = reservation.decision().clone();
                if let Some(taken) = taken {
                    prop_assert!(reservation.is_allowed(), "step {}: reserved", i);
                    open.push_back((reservation, taken));
                }
                (decision, expected)
            }
            Op::Settle(actual) => {
                let Some((mut reservation, taken)) = open.pop_front() else {
                    continue;
                };
                let actual = actual.min(taken.units);
                let decision = reservation.settle(actual).await.map_err(fail)?;
                (decision, model.settle(now, taken, actual))
            }
        };
        if let Some(wait) = decision.retry_after() {
            retry_at = Some(now + u64::try_from(wait.as_micros()).unwrap_or(u64::MAX));
        }
        prop_assert_eq!(
            Expected::of(&decision),
            expected,
            "step {} at t0+{}: {:?}",
            i,
            now - T0,
            op
        );
        prop_assert_eq!(decision.rule(), rule.name());
        prop_assert_eq!(decision.limit(), rule.quota().limit());
        if rule.algorithm() == Algorithm::Gcra
            && let Some(bytes) = stored(&*store, &state_key).await?
        {
            // GCRA's stored state is exactly the theoretical arrival time.
            let state =
                RuleState::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if let AlgorithmState::Gcra(g) = state.algorithm {
                prop_assert_eq!(
                    g.tat,
                    model.tat(),
                    "theoretical arrival time after step {}",
                    i
                );
            }
        }
    }
    model.check_invariants().map_err(TestCaseError::fail)?;
    store
        .close()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

/// The bytes at `key`, or `None` also when the store offers no `get` (a
/// store that writes only the decision step).
async fn stored(store: &dyn Storage, key: &str) -> Result<Option<Vec<u8>>, TestCaseError> {
    match store.get(key).await {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(None),
        Err(e) => Err(TestCaseError::fail(e.to_string())),
    }
}

/// Random request sequences, with reservations settled at or below their
/// estimates between them, give the same decisions as the reference model,
/// and the algorithm's promise holds over the whole history (net of what
/// was given back). `cases` random
/// sequences (0: `RATELIMIT_MODEL_CASES`, or 1 000).
pub fn matches_model(h: Arc<dyn Harness>, algorithm: Algorithm, cases: u32) {
    let cases = if cases > 0 {
        cases
    } else {
        std::env::var("RATELIMIT_MODEL_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000)
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runner.run(&scenarios(algorithm), |scenario| {
        runtime.block_on(run_scenario(h.clone(), scenario))
    });
    if let Err(e) = result {
        panic!("{algorithm} disagrees with its reference model: {e}");
    }
}
