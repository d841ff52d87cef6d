//! Approximate mode: one instance never admits a unit its store cannot
//! take (a property over random traffic on every algorithm, and exact under
//! real concurrency against a real redis-server); several instances over
//! one Redis account for every unit they admit; pending units wait out a
//! dead store, and a write that timed out is never sent twice; resets drop
//! them; the table stays within its bound.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use ratekeeper::approximate::{Approximate, ApproximateStorage};
use ratekeeper::memory::MemoryStorage;
use ratekeeper::redis::RedisStorage;
use ratekeeper::{Algorithm, Limiter, ManualClock, Quota, Rule, Storage, Timestamp};
use ratekeeper_testkit::redis::RedisServer;

mod common;

fn rules() -> Vec<Rule> {
    common::every_algorithm(20, 25)
}

#[derive(Debug, Clone)]
enum Step {
    Request { rule: usize, key: u8, cost: u64 },
    Both { key: u8, cost: u64 },
    Advance(u64),
    Flush,
    Reset { rule: usize, key: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (0..6usize, 0..2u8, 1..4u64).prop_map(|(rule, key, cost)| Step::Request { rule, key, cost }),
        2 => (0..2u8, 1..3u64).prop_map(|(key, cost)| Step::Both { key, cost }),
        3 => (1..3_000_000u64).prop_map(Step::Advance),
        2 => Just(Step::Flush),
        1 => (0..6usize, 0..2u8).prop_map(|(rule, key)| Step::Reset { rule, key }),
    ]
}

static LOCAL: AtomicU64 = AtomicU64::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// Alone over a store, approximate mode admits only what the store can
    /// take: every unit it counted locally fits when its batch is written
    /// (nothing unrecorded), whatever the algorithm, costs, time steps,
    /// flushes and resets; and it denies only what the store would deny.
    #[test]
    fn one_instance_never_admits_what_its_store_cannot_take(steps in proptest::collection::vec(step(), 1..120)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let clock = ManualClock::new(Timestamp::from_micros(1_000_000_000));
            let memory: Arc<dyn Storage> =
                Arc::new(MemoryStorage::builder().clock(Arc::new(clock.clone())).build());
            let approximate = Arc::new(
                ApproximateStorage::new(memory.clone(), Approximate::new(Duration::from_secs(1)))
                    .clock(Arc::new(clock.clone())),
            );
            let limiter = Limiter::builder(approximate.clone()).clock(clock.clone()).build();
            let exact = Limiter::builder(memory.clone()).clock(clock.clone()).build();
            let rules = rules();
            for step in steps {
                match step {
                    Step::Request { rule, key, cost } => {
                        let rule = &rules[rule];
                        let key = format!("k{key}");
                        let d = limiter.check_cost(rule, &key, cost).await.unwrap();
                        if d.is_allowed() {
                            // The store, with every pending unit written,
                            // still has room for what was just admitted.
                            approximate.flush().await;
                            prop_assert_eq!(approximate.status().unrecorded_units, 0);
                        } else {
                            // Denied only when the store, with every
                            // pending unit written, would deny it too.
                            approximate.flush().await;
                            let now = exact.peek(rule, &key).await.unwrap();
                            prop_assert!(now.remaining() < cost, "denied with room: {:?}", now);
                        }
                    }
                    Step::Both { key, cost } => {
                        let key = format!("k{key}");
                        let _ = limiter.check_all(&[(&rules[0], &key), (&rules[5], &key)], cost).await.unwrap();
                    }
                    Step::Advance(us) => clock.advance(Duration::from_micros(us)),
                    Step::Flush => approximate.flush().await,
                    Step::Reset { rule, key } => {
                        limiter.reset(&rules[rule], &format!("k{key}")).await.unwrap();
                    }
                }
            }
            approximate.flush().await;
            let s = approximate.status();
            prop_assert_eq!(s.unrecorded_units, 0, "{:?}", s);
            LOCAL.fetch_add(s.local_decisions, Ordering::Relaxed);
            Ok(())
        })?;
    }
}

#[test]
fn the_property_exercises_local_decisions() {
    one_instance_never_admits_what_its_store_cannot_take();
    assert!(
        LOCAL.load(Ordering::Relaxed) > 100,
        "too few local decisions to mean anything"
    );
}

async fn redis(server: &RedisServer) -> Arc<dyn Storage> {
    Arc::new(RedisStorage::connect(&server.url()).await.unwrap())
}

/// `tasks` tasks each asking `per_task` times for one unit of `rule` on
/// `key` through `limiter`: how many were admitted.
async fn hammer(limiter: &Limiter, rule: &Rule, key: &str, tasks: usize, per_task: usize) -> u64 {
    let admitted = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (limiter, rule, key) = (limiter.clone(), rule.clone(), key.to_owned());
            let admitted = admitted.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    if limiter.check(&rule, &key).await.unwrap().is_allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    admitted.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_is_exact_under_concurrency_and_saves_round_trips() {
    let server = RedisServer::start();
    let store = Arc::new(ApproximateStorage::new(
        redis(&server).await,
        Approximate::new(Duration::from_millis(20)),
    ));
    let limiter = Limiter::new(store.clone());
    let exact = Limiter::new(store.inner().clone());
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindowLog,
        Algorithm::TokenBucket,
    ] {
        let rule = Rule::new(
            &format!("one-{algorithm}"),
            algorithm,
            Quota::per_hour(1_000).unwrap(),
        )
        .unwrap();
        let admitted = hammer(&limiter, &rule, "hot", 50, 40).await;
        store.flush().await;
        assert_eq!(admitted, 1_000, "{algorithm}: {:?}", store.status());
        let left = exact.peek(&rule, "hot").await.unwrap();
        assert_eq!(
            left.remaining(),
            0,
            "{algorithm}: the store took every unit"
        );
    }
    let s = store.status();
    assert_eq!(s.unrecorded_units, 0, "{s:?}");
    assert!(
        s.local_decisions > 4 * s.store_decisions,
        "most decisions were local: {s:?}"
    );
    assert!(s.batches > 0 && s.flushed_units > 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_limit_every_unit_reaches_the_store() {
    let server = RedisServer::start();
    let store = Arc::new(ApproximateStorage::new(
        redis(&server).await,
        Approximate::new(Duration::from_millis(10)),
    ));
    let limiter = Limiter::new(store.clone());
    let rule = Rule::new(
        "big",
        Algorithm::FixedWindow,
        Quota::per_hour(1_000_000).unwrap(),
    )
    .unwrap();
    let admitted = hammer(&limiter, &rule, "hot", 20, 200).await;
    assert_eq!(admitted, 4_000);
    // Written by the background flush, without being asked.
    let exact = Limiter::new(store.inner().clone());
    let mut left = 0;
    common::poll_until(100, Duration::from_millis(10), async || {
        left = exact.peek(&rule, "hot").await.unwrap().remaining();
        left == 1_000_000 - 4_000
    })
    .await;
    assert_eq!(left, 1_000_000 - 4_000, "{:?}", store.status());
    assert!(
        store.status().local_decisions > 3_000,
        "{:?}",
        store.status()
    );
}

/// Four instances over one Redis hammer one key of a limit of 2 000:
/// how many they admitted, and how many units they counted as unrecorded.
async fn four_instances(server: &RedisServer, config: Approximate, rule: &Rule) -> (u64, u64) {
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(Arc::new(ApproximateStorage::new(
            redis(server).await,
            config,
        )));
    }
    let runs: Vec<_> = instances
        .iter()
        .map(|s| {
            let limiter = Limiter::new(s.clone());
            let rule = rule.clone();
            tokio::spawn(async move { hammer(&limiter, &rule, "hot", 10, 200).await })
        })
        .collect();
    let mut admitted = 0;
    for r in runs {
        admitted += r.await.unwrap();
    }
    let mut unrecorded = 0;
    for s in &instances {
        s.close().await.unwrap();
        unrecorded += s.status().unrecorded_units;
    }
    (admitted, unrecorded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_instances_account_for_every_unit_they_admit() {
    let server = RedisServer::start();
    let exact = Limiter::new(redis(&server).await);
    let flush = Duration::from_millis(20);
    for (name, config) in [
        ("alone", Approximate::new(flush)),
        ("shared", Approximate::new(flush).with_instances(4)),
    ] {
        let rule = Rule::new(
            name,
            Algorithm::FixedWindow,
            Quota::per_hour(2_000).unwrap(),
        )
        .unwrap();
        let (admitted, unrecorded) = four_instances(&server, config, &rule).await;
        // Every admitted unit is either in the store or counted as
        // unrecorded, and the store's limit is spent.
        assert_eq!(admitted, 2_000 + unrecorded, "{name}: admitted {admitted}");
        assert!(admitted <= 4 * 2_000, "{name}");
        assert_eq!(exact.peek(&rule, "hot").await.unwrap().remaining(), 0);
        println!(
            "{name}: 4 instances, 8 000 requests, limit 2 000: admitted {admitted}, over-admission {:.1}%",
            unrecorded as f64 / 20.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_timed_out_is_not_sent_again_and_a_reset_drops_pending_units() {
    let server = RedisServer::start();
    let store = Arc::new(ApproximateStorage::new(
        redis(&server).await,
        Approximate::new(Duration::from_millis(300)),
    ));
    let limiter = Limiter::new(store.clone());
    let exact = Limiter::new(store.inner().clone());
    let rule = Rule::new("p", Algorithm::FixedWindow, Quota::per_hour(1_000).unwrap()).unwrap();
    // Paused right after the first decision made a budget: the next ones
    // are counted locally and cannot be written.
    assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
    let port = server.port();
    let pause = std::thread::spawn(move || {
        ratekeeper_testkit::redis::command(port, &["CLIENT", "PAUSE", "600", "WRITE"])
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    for _ in 0..9 {
        assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
    }
    pause.join().unwrap().unwrap();
    common::poll_until(200, Duration::from_millis(10), async || {
        store.status().flush_errors > 0
    })
    .await;
    let s = store.status();
    assert!(s.flush_errors > 0 && s.uncertain_units == 9, "{s:?}");
    // The write that timed out ran once Redis answered again; it was not
    // sent twice.
    let mut left = 0;
    common::poll_until(200, Duration::from_millis(10), async || {
        // The peek itself times out while Redis is still paused.
        if let Ok(d) = exact.peek(&rule, "k").await {
            left = d.remaining();
        }
        left == 990
    })
    .await;
    assert_eq!(left, 990, "{:?}", store.status());

    // A reset drops the key's pending units with its state.
    for _ in 0..5 {
        assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
    }
    assert!(limiter.reset(&rule, "k").await.unwrap());
    store.flush().await;
    assert_eq!(exact.peek(&rule, "k").await.unwrap().remaining(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_units_wait_out_a_dead_store() {
    let mut server = RedisServer::start();
    let store = Arc::new(ApproximateStorage::new(
        redis(&server).await,
        Approximate::new(Duration::from_millis(300)),
    ));
    let limiter = Limiter::new(store.clone());
    let exact = Limiter::new(store.inner().clone());
    let rule = Rule::new("d", Algorithm::FixedWindow, Quota::per_hour(1_000).unwrap()).unwrap();
    assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
    server.stop();
    for _ in 0..9 {
        assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
    }
    common::poll_until(200, Duration::from_millis(10), async || {
        store.status().flush_errors > 0
    })
    .await;
    let s = store.status();
    assert!(s.flush_errors > 0 && s.uncertain_units == 0, "{s:?}");
    // Restarted empty (no persistence): the 9 pending units are written
    // by a later flush, once.
    server.restart();
    let mut left = 0;
    common::poll_until(300, Duration::from_millis(10), async || {
        if let Ok(d) = exact.peek(&rule, "k").await {
            left = d.remaining();
        }
        left == 991
    })
    .await;
    assert_eq!(left, 991, "{:?}", store.status());
}

#[tokio::test]
async fn a_key_flood_stays_within_the_bound_and_stays_exact() {
    let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let store = Arc::new(ApproximateStorage::new(
        memory.clone(),
        Approximate::new(Duration::from_secs(60)).with_max_keys(32),
    ));
    let limiter = Limiter::new(store.clone());
    let exact = Limiter::new(memory);
    let rule = Rule::new("flood", Algorithm::FixedWindow, Quota::per_hour(3).unwrap()).unwrap();
    for i in 0..2_000 {
        for _ in 0..4 {
            let _ = limiter.check(&rule, &format!("k{i}")).await.unwrap();
        }
    }
    let s = store.status();
    assert!(s.keys <= 32, "{s:?}");
    // Keys past the bound were decided by the store: exactly 3 each.
    store.flush().await;
    for i in (0..2_000).step_by(97) {
        let d = exact.peek(&rule, &format!("k{i}")).await.unwrap();
        assert_eq!(d.remaining(), 0, "k{i}");
    }
    assert_eq!(store.status().unrecorded_units, 0);
}

/// A decision that goes to the store with a key's pending units, dropped on
/// the way (its client went away) before the store answered: the units are
/// put back, and the next flush writes them. Lost, the store would have
/// admitted them again.
#[tokio::test]
async fn pending_units_survive_a_decision_dropped_on_the_way() {
    let gated = Arc::new(common::gated::Gated::new(Arc::new(MemoryStorage::new())));
    let store = Arc::new(ApproximateStorage::new(
        gated.clone(),
        // No background flush within the test.
        Approximate::new(Duration::from_secs(3_600)),
    ));
    let limiter = Limiter::new(store.clone());
    let rule = Rule::new("ten", Algorithm::FixedWindow, Quota::per_hour(10).unwrap()).unwrap();
    // The store's answer sets a budget; five more are counted locally.
    assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
    for _ in 0..5 {
        assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
    }
    assert_eq!(store.status().local_decisions, 5, "{:?}", store.status());
    // A request too big for the local budget goes to the store with the
    // five pending units; the store hangs, and the request is given up.
    gated.hang_decisions(true);
    let given_up =
        tokio::time::timeout(Duration::from_millis(20), limiter.check_cost(&rule, "k", 5)).await;
    assert!(given_up.is_err(), "the decision waited for the store");
    gated.hang_decisions(false);
    store.flush().await;
    let exact = Limiter::new(store.inner().clone());
    assert_eq!(
        exact.peek(&rule, "k").await.unwrap().remaining(),
        4,
        "the five pending units reached the store: {:?}",
        store.status()
    );
}

/// What approximate mode cannot answer from its local budgets is refused,
/// never decided by the store alone behind the units counted locally: one
/// decision per rule (and so reservations), and changes after the fact.
#[tokio::test]
async fn answers_it_cannot_give_exactly_are_refused() {
    let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let store = Arc::new(ApproximateStorage::new(
        memory,
        Approximate::new(Duration::from_secs(1)),
    ));
    let limiter = Limiter::new(store);
    let rule = Rule::new("api", Algorithm::Gcra, "10/s".parse().unwrap()).unwrap();
    let unsupported = ratekeeper::ErrorKind::Unsupported;
    let err = limiter.check_each(&[(&rule, "k", 1)]).await.unwrap_err();
    assert_eq!(err.kind(), unsupported);
    let err = limiter.reserve(&rule, "k", 1).await.unwrap_err();
    assert_eq!(err.kind(), unsupported);
    let err = limiter.charge(&rule, "k", 1).await.unwrap_err();
    assert_eq!(err.kind(), unsupported);
    assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
}
