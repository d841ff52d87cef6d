//! The store guards (layers): the deny cache gives the same answers as the store it
//! fronts (a property over random traffic on every algorithm), exact under
//! concurrency; the deadline and the circuit breaker against a real
//! redis-server that is paused and killed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use ratekeeper::layer::{
    Breaker, BreakerState, BreakerStorage, Deadline, DeadlineStorage, DenyCache, DenyCacheStorage,
};
use ratekeeper::memory::MemoryStorage;
use ratekeeper::redis::RedisStorage;
use ratekeeper::{Algorithm, ErrorKind, Limiter, ManualClock, Quota, Rule, Storage, Timestamp};
use ratekeeper_testkit::redis::RedisServer;

mod common;

/// Every algorithm, and two with a penalty (whose denials the cache must
/// leave to the store).
fn rules() -> Vec<Rule> {
    let mut rules = common::every_algorithm(4, 6);
    for a in [Algorithm::FixedWindow, Algorithm::Gcra] {
        let rule = Rule::new(
            &format!("p-{a}"),
            a,
            Quota::new(3, Duration::from_secs(5)).unwrap(),
        );
        rules.push(rule.unwrap().with_penalty(Duration::from_secs(3)).unwrap());
    }
    rules
}

static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Of them, answers to `check_each`.
static EACH_HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, Clone)]
enum Step {
    Request {
        rule: usize,
        key: u8,
        cost: u64,
        both: bool,
    },
    /// One decision per rule (`check_each`), as the service asks.
    Each {
        rule: usize,
        key: u8,
        cost: u64,
        both: bool,
    },
    Advance(u64),
    Reset {
        rule: usize,
        key: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..8usize, 0..3u8, 1..4u64, any::<bool>()).prop_map(|(rule, key, cost, both)| Step::Request { rule, key, cost, both }),
        3 => (0..8usize, 0..3u8, 1..4u64, any::<bool>()).prop_map(|(rule, key, cost, both)| Step::Each { rule, key, cost, both }),
        3 => (1..4_000_000u64).prop_map(Step::Advance),
        1 => (0..8usize, 0..3u8).prop_map(|(rule, key)| Step::Reset { rule, key }),
    ]
}

fn limiter(storage: Arc<dyn Storage>, clock: &ManualClock) -> Limiter {
    Limiter::builder(storage).clock(clock.clone()).build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random traffic, time and resets: with the deny cache in front, every
    /// request is allowed or denied exactly as without it.
    #[test]
    fn the_deny_cache_answers_as_the_store_would(steps in prop::collection::vec(step(), 1..120)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let clock = ManualClock::new(Timestamp::from_micros(1_700_000_000_000_000));
            let memory = |c: &ManualClock| -> Arc<dyn Storage> {
                Arc::new(MemoryStorage::builder().clock(Arc::new(c.clone())).build())
            };
            let plain = limiter(memory(&clock), &clock);
            let guarded_store = Arc::new(DenyCacheStorage::new(memory(&clock), DenyCache::new(1_000)));
            let guarded = limiter(guarded_store.clone(), &clock);
            let rules = rules();
            for (i, s) in steps.iter().enumerate() {
                match s {
                    Step::Request { rule, key, cost, both } => {
                        let k = format!("k{key}");
                        let r = &rules[*rule];
                        let other = &rules[(rule + 1) % rules.len()];
                        let (a, b) = if *both {
                            let checks = [(r, k.as_str()), (other, k.as_str())];
                            (plain.check_all(&checks, *cost).await, guarded.check_all(&checks, *cost).await)
                        } else {
                            (plain.check_cost(r, &k, *cost).await, guarded.check_cost(r, &k, *cost).await)
                        };
                        let (a, b) = (a.unwrap(), b.unwrap());
                        prop_assert_eq!(a.is_allowed(), b.is_allowed(), "step {}: {:?}\nplain {:?}\nguarded {:?}", i, s, a, b);
                        if !*both {
                            prop_assert_eq!(a.retry_after().is_some(), b.retry_after().is_some(), "step {}", i);
                        }
                    }
                    Step::Each { rule, key, cost, both } => {
                        let k = format!("k{key}");
                        let r = &rules[*rule];
                        let other = &rules[(rule + 1) % rules.len()];
                        let mut checks = vec![(r, k.as_str(), *cost)];
                        if *both {
                            checks.push((other, k.as_str(), *cost));
                        }
                        let a = plain.check_each(&checks).await.unwrap();
                        let before = guarded_store.status().hits;
                        let b = guarded.check_each(&checks).await.unwrap();
                        EACH_HITS.fetch_add(guarded_store.status().hits - before, std::sync::atomic::Ordering::Relaxed);
                        let seen = |each: &[ratekeeper::Decision]| {
                            each.iter().map(|d| (d.is_allowed(), d.retry_after().is_some())).collect::<Vec<_>>()
                        };
                        prop_assert_eq!(seen(&a), seen(&b), "step {}: {:?}\nplain {:?}\nguarded {:?}", i, s, a, b);
                    }
                    Step::Advance(us) => clock.advance(Duration::from_micros(*us)),
                    Step::Reset { rule, key } => {
                        let k = format!("k{key}");
                        plain.reset(&rules[*rule], &k).await.unwrap();
                        guarded.reset(&rules[*rule], &k).await.unwrap();
                    }
                }
            }
            HITS.fetch_add(guarded_store.status().hits, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })?;
    }
}

#[test]
fn the_property_exercises_the_cache() {
    // Runs the property again here (proptest's cases are deterministic per
    // seed only in failure replay), then checks the cache answered some.
    the_deny_cache_answers_as_the_store_would();
    assert!(HITS.load(std::sync::atomic::Ordering::Relaxed) > 60);
    assert!(EACH_HITS.load(std::sync::atomic::Ordering::Relaxed) > 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deny_cache_is_exact_under_concurrency_and_saves_round_trips() {
    let server = RedisServer::start();
    let redis: Arc<dyn Storage> = Arc::new(RedisStorage::connect(&server.url()).await.unwrap());
    let guarded = Arc::new(DenyCacheStorage::new(redis, DenyCache::new(1_000)));
    let limiter = Limiter::new(guarded.clone());
    let rule = Rule::new(
        "flood",
        Algorithm::SlidingWindowLog,
        Quota::new(100, Duration::from_secs(3600)).unwrap(),
    )
    .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (limiter, rule) = (limiter.clone(), rule.clone());
            tokio::spawn(async move {
                let mut allowed = 0;
                for _ in 0..100 {
                    allowed +=
                        usize::from(limiter.check(&rule, "attacker").await.unwrap().is_allowed());
                }
                allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += t.await.unwrap();
    }
    assert_eq!(allowed, 100, "exactly the limit, never one more");
    let status = guarded.status();
    assert!(
        status.hits > 600,
        "most of the 700 denials never reached Redis: {status:?}"
    );
    assert_eq!(status.entries, 1);
    // A reset through this store clears the cached denial.
    assert!(limiter.reset(&rule, "attacker").await.unwrap());
    assert!(limiter.check(&rule, "attacker").await.unwrap().is_allowed());
    assert_eq!(guarded.status().entries, 0);
}

/// Polls `f` until it holds (a liveness bound, not a timing assertion).
async fn eventually(what: &str, f: impl AsyncFnMut() -> bool) {
    assert!(
        common::poll_until(200, Duration::from_millis(50), f).await,
        "{what} never happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_and_the_breaker_against_a_paused_then_killed_redis() {
    let mut server = RedisServer::start();
    let redis: Arc<dyn Storage> = Arc::new(
        RedisStorage::builder_from_url(&server.url())
            .unwrap()
            .response_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap(),
    );
    let deadline = Arc::new(DeadlineStorage::new(
        redis,
        Deadline::new(Duration::from_millis(100)),
    ));
    let guarded = Arc::new(BreakerStorage::new(
        deadline.clone(),
        Breaker::new(3, Duration::from_millis(300)),
    ));
    let limiter = Limiter::new(guarded.clone());
    let rule = Rule::new("api", Algorithm::Gcra, Quota::per_second(1000).unwrap()).unwrap();
    assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());

    // Paused: every call hits its deadline until the breaker opens; then
    // calls fail at once without reaching Redis.
    let port = server.port();
    let pause = std::thread::spawn(move || {
        ratekeeper_testkit::redis::command(port, &["CLIENT", "PAUSE", "1500", "ALL"])
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut kinds = Vec::new();
    for _ in 0..6 {
        kinds.push(limiter.check(&rule, "k").await.unwrap_err().kind());
    }
    assert_eq!(&kinds[..3], [ErrorKind::Timeout; 3]);
    assert_eq!(&kinds[3..], [ErrorKind::Unavailable; 3]);
    let s = guarded.status();
    assert_eq!(
        (s.state, s.opened, deadline.exceeded(), s.rejected),
        (BreakerState::Open, 1, 3, 3)
    );
    // Stats still answer, with the guards' state, while the store does not.
    let stats = guarded.stats().await.unwrap();
    assert_eq!(stats.backend, "unavailable");
    assert!(
        stats
            .details
            .contains(&("breaker".to_owned(), "open".to_owned())),
        "{stats:?}"
    );
    pause.join().unwrap().unwrap();
    // Redis answers again: a probe closes the breaker.
    eventually("the breaker closing after the pause", async || {
        limiter.check(&rule, "k").await.is_ok()
    })
    .await;
    assert_eq!(guarded.status().state, BreakerState::Closed);

    // Killed: failures open the breaker; restarted: it closes by itself.
    server.stop();
    eventually("the breaker opening", async || {
        let _ = limiter.check(&rule, "k").await;
        guarded.status().state != BreakerState::Closed
    })
    .await;
    assert!(guarded.status().opened >= 2);
    server.restart();
    eventually("recovery after a restart", async || {
        limiter.check(&rule, "k").await.is_ok()
    })
    .await;
    assert_eq!(guarded.status().state, BreakerState::Closed);
}

#[tokio::test]
async fn the_deny_cache_stays_within_its_bound_under_a_key_flood() {
    let guarded = Arc::new(DenyCacheStorage::new(
        Arc::new(MemoryStorage::new()),
        DenyCache::new(32),
    ));
    let limiter = Limiter::new(guarded.clone());
    let rule = Rule::new("one", Algorithm::FixedWindow, Quota::per_hour(1).unwrap()).unwrap();
    for i in 0..2_000 {
        let key = format!("client-{i}");
        assert!(limiter.check(&rule, &key).await.unwrap().is_allowed());
        assert!(!limiter.check(&rule, &key).await.unwrap().is_allowed());
    }
    let entries = guarded.status().entries;
    assert!((1..=32).contains(&entries), "{entries}");
}

/// Two instances, each with its deny cache, on one store: a place released
/// through one is taken through the other at once. A concurrency denial is
/// never cached (a place comes back when it is released, not after a wait).
#[tokio::test]
async fn places_in_flight_are_never_denied_from_the_cache() {
    let shared: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let instance = || {
        let guarded = Arc::new(DenyCacheStorage::new(shared.clone(), DenyCache::new(100)));
        (Limiter::new(guarded.clone()), guarded)
    };
    let ((a, _), (b, b_cache)) = (instance(), instance());
    let one = Rule::concurrency("one", 1, Duration::from_secs(60)).unwrap();
    let held = a.acquire(&one, "k").await.unwrap();
    assert!(held.is_allowed());
    assert!(!b.acquire(&one, "k").await.unwrap().is_allowed());
    held.release().await.unwrap();
    let next = b.acquire(&one, "k").await.unwrap();
    assert!(next.is_allowed(), "{:?}", next.decision());
    assert_eq!(b_cache.status().entries, 0);
}
