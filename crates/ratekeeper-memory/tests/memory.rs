//! Behaviour specific to the memory store: the size bound, LRU order, the
//! background sweep and its stats.
#![allow(clippy::unwrap_used, reason = "test helpers")]

use std::sync::Arc;
use std::time::Duration;

use ratekeeper_core::{Algorithm, Limiter, ManualClock, Rule, Storage, Timestamp};
use ratekeeper_memory::{MemoryConfig, MemoryStorage};

const HOUR: Duration = Duration::from_secs(3_600);

fn manual() -> ManualClock {
    ManualClock::new(Timestamp::from_micros(1_700_000_000_000_000))
}

/// A store of `max_size` keys in one shard, without a sweep, and a limiter
/// over it, both reading time from one manual clock.
fn on_manual_clock(max_size: usize) -> (ManualClock, MemoryStorage, Limiter) {
    let clock = manual();
    let store = MemoryStorage::builder()
        .max_size(max_size)
        .shards(1)
        .cleanup_interval(None)
        .clock(Arc::new(clock.clone()))
        .build();
    let limiter = Limiter::builder(Arc::new(store.clone()))
        .shared_clock(Arc::new(clock.clone()))
        .build();
    (clock, store, limiter)
}

#[tokio::test]
async fn least_recently_used_key_goes_first() {
    let store = MemoryStorage::builder().max_size(3).shards(1).build();
    for key in ["a", "b", "c"] {
        store.set(key, b"v", HOUR).await.unwrap();
    }
    // Touch "a": "b" is now the least recently used.
    store.get("a").await.unwrap();
    store.set("d", b"v", HOUR).await.unwrap();
    assert!(store.exists("a").await.unwrap());
    assert!(!store.exists("b").await.unwrap());
    assert!(store.exists("c").await.unwrap() && store.exists("d").await.unwrap());
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.keys, stats.evictions), (Some(3), Some(1)));
}

#[tokio::test]
async fn bound_holds_across_shards() {
    for (max_size, shards) in [(1_000, 64), (5, 64), (1, 8), (777, 16)] {
        let store = MemoryStorage::builder()
            .max_size(max_size)
            .shards(shards)
            .build();
        for i in 0..5_000 {
            store.set(&format!("k{i}"), b"v", HOUR).await.unwrap();
        }
        let stats = store.stats().await.unwrap();
        let keys = stats.keys.unwrap();
        assert!(
            keys <= max_size as u64 && keys > 0,
            "{max_size}/{shards}: {keys}"
        );
        assert_eq!(stats.evictions.unwrap(), 5_000 - keys);
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Ten million distinct clients against a bound of 100 000 keys: the store
/// stays within its bound and the process's memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_million_distinct_keys_stay_bounded() {
    let store = MemoryStorage::builder().max_size(100_000).build();
    let limiter = Limiter::new(Arc::new(store.clone()));
    let rule = Rule::new("flood", Algorithm::Gcra, "10/minute".parse().unwrap()).unwrap();
    // Warm up to the bound first, then measure growth over the rest.
    for i in 0..200_000u64 {
        limiter.check(&rule, &format!("client-{i}")).await.unwrap();
    }
    let before = resident_bytes();
    let tasks: Vec<_> = (0..2u64)
        .map(|t| {
            let (limiter, rule) = (limiter.clone(), rule.clone());
            tokio::spawn(async move {
                let mut key = String::with_capacity(32);
                for i in 0..4_900_000u64 {
                    key.clear();
                    use std::fmt::Write;
                    write!(key, "flood-{t}-{i}").unwrap();
                    assert!(limiter.check(&rule, &key).await.unwrap().is_allowed());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let grown = resident_bytes().saturating_sub(before);
    let stats = store.stats().await.unwrap();
    assert!(stats.keys.unwrap() <= 100_000, "{stats:?}");
    assert!(stats.evictions.unwrap() >= 9_900_000, "{stats:?}");
    assert!(
        grown < 64 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
}

/// A flood of fresh keys (400 000 against a bound of 1 000) evicts only
/// state that gives nothing away when dropped: a key that spent its limit
/// stays denied (on a rule with a line too, whose places in line are free:
/// the store sees them as units left), a place in flight still held stays
/// held, and another rule's penalty stays in force. A store full of
/// such state refuses new keys (`ErrorKind::Full`) and keeps its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_flood_cannot_reset_spent_limits_or_penalties() {
    let store = MemoryStorage::builder().max_size(1_000).shards(4).build();
    let limiter = Limiter::new(Arc::new(store.clone()));
    let api = Rule::new(
        "api",
        Algorithm::SlidingWindowCounter,
        "3/hour".parse().unwrap(),
    )
    .unwrap();
    let login = Rule::new("login", Algorithm::FixedWindow, "1/hour".parse().unwrap())
        .unwrap()
        .with_penalty(Duration::from_secs(3_600))
        .unwrap();
    for _ in 0..3 {
        assert!(limiter.check(&api, "victim").await.unwrap().is_allowed());
    }
    assert!(!limiter.check(&api, "victim").await.unwrap().is_allowed());
    assert!(limiter.check(&login, "guesser").await.unwrap().is_allowed());
    assert!(!limiter.check(&login, "guesser").await.unwrap().is_allowed());
    let line = Rule::new("line", Algorithm::Gcra, "10/hour".parse().unwrap())
        .unwrap()
        .with_wait(ratekeeper_core::Wait::new(Duration::from_secs(3_600), 5))
        .unwrap();
    let d = limiter.check_cost(&line, "victim", 10).await.unwrap();
    assert!(d.is_allowed() && d.remaining() == 0);
    let jobs = Rule::concurrency("jobs", 3, Duration::from_secs(3_600)).unwrap();
    let held = limiter.acquire(&jobs, "victim").await.unwrap();
    assert_eq!(held.decision().remaining(), 2);
    for i in 0..400_000u64 {
        let d = limiter.check(&api, &format!("fresh-{i}")).await.unwrap();
        assert!(d.is_allowed() && d.remaining() == 2);
    }
    assert!(
        !limiter.check(&api, "victim").await.unwrap().is_allowed(),
        "the spent limit was reset"
    );
    assert!(
        !limiter.check(&login, "guesser").await.unwrap().is_allowed(),
        "the penalty was evicted"
    );
    assert!(
        !(limiter.check(&line.without_wait(), "victim").await.unwrap()).is_allowed(),
        "the spent burst before a line was reset"
    );
    let free = limiter.peek(&jobs, "victim").await.unwrap().remaining();
    assert_eq!(free, 2, "a place in flight was forgotten");
    drop(held);
    let stats = store.stats().await.unwrap();
    assert!(stats.keys.unwrap() <= 1_000, "{stats:?}");

    // Every key spent: nothing may be dropped, so new keys are refused.
    let mut refused = 0;
    for i in 0..3_000u64 {
        let key = format!("spent-{i}");
        match limiter.check_cost(&api, &key, 3).await {
            Ok(d) => assert!(d.is_allowed()),
            Err(e) => {
                assert_eq!(e.kind(), ratekeeper_core::ErrorKind::Full, "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 2_000, "{refused} refused");
    let stats = store.stats().await.unwrap();
    assert!(stats.keys.unwrap() <= 1_000, "{stats:?}");
    assert!(!limiter.check(&api, "victim").await.unwrap().is_allowed());
    assert!(!limiter.check(&login, "guesser").await.unwrap().is_allowed());
    assert!(
        stats
            .details
            .iter()
            .any(|(k, v)| k == "refused_full" && v.parse::<u64>().unwrap() == refused),
        "{stats:?}"
    );
}

/// Two rules of one request whose keys land in a shard of capacity 1:
/// the request cannot be stored whole, so it is refused, never half stored.
#[tokio::test]
async fn a_request_is_stored_whole_or_not_at_all() {
    let store = MemoryStorage::builder().max_size(1).shards(1).build();
    let limiter = Limiter::new(Arc::new(store.clone()));
    let a = Rule::new("a", Algorithm::FixedWindow, "5/hour".parse().unwrap()).unwrap();
    let b = Rule::new("b", Algorithm::FixedWindow, "5/hour".parse().unwrap()).unwrap();
    let err = limiter
        .check_all(&[(&a, "k"), (&b, "k")], 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ratekeeper_core::ErrorKind::Full);
    assert_eq!(store.stats().await.unwrap().keys, Some(0));
    // One rule fits.
    assert!(limiter.check(&a, "k").await.unwrap().is_allowed());
    assert_eq!(limiter.check(&a, "k").await.unwrap().remaining(), 3);
}

/// Several rules over one key: all or nothing, at once or awaited alike;
/// one rule is a plain check.
#[tokio::test]
async fn several_rules_over_one_key_decide_all_or_nothing() {
    let limiter = Limiter::new(Arc::new(MemoryStorage::new()));
    let burst = Rule::new("burst", Algorithm::FixedWindow, "2/minute".parse().unwrap()).unwrap();
    let hourly = Rule::new("hourly", Algorithm::FixedWindow, "5/hour".parse().unwrap()).unwrap();
    let both = [burst.clone(), hourly.clone()];
    let now = limiter.check_rules_now(&both, "k", 1).unwrap().unwrap();
    assert!(now.is_allowed());
    assert!(
        limiter
            .check_rules(&both, "k", 1)
            .await
            .unwrap()
            .is_allowed()
    );
    let denied = limiter.check_rules(&both, "k", 1).await.unwrap();
    assert_eq!((denied.is_allowed(), denied.rule()), (false, "burst"));
    // The denial charged nothing: the hourly rule has 3 left, not 2.
    let left = limiter.check_rules(&[hourly], "k", 0).await.unwrap();
    assert_eq!(left.remaining(), 3);
    let one = limiter.check_rules_now(&[burst], "k", 1).unwrap().unwrap();
    assert!(!one.is_allowed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_sweep_removes_expired_keys() {
    let clock = manual();
    let store = MemoryStorage::builder()
        .clock(Arc::new(clock.clone()))
        .cleanup_interval(Some(Duration::from_millis(5)))
        .build();
    assert!(store.is_cleanup_running());
    for i in 0..500 {
        store
            .set(&format!("k{i}"), b"v", Duration::from_secs(1))
            .await
            .unwrap();
    }
    store.set("keep", b"v", HOUR).await.unwrap();
    clock.advance(Duration::from_secs(2));
    let mut swept = false;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if store.stats().await.unwrap().expirations == Some(500) {
            swept = true;
            break;
        }
    }
    assert!(
        swept,
        "the sweep did not run: {:?}",
        store.stats().await.unwrap()
    );
    assert_eq!(store.stats().await.unwrap().keys, Some(1));
    store.stop_cleanup();
    assert!(!store.is_cleanup_running());
}

#[tokio::test]
async fn manual_sweep_and_lazy_expiry() {
    let clock = manual();
    let store = MemoryStorage::builder()
        .clock(Arc::new(clock.clone()))
        .cleanup_interval(None)
        .build();
    assert!(!store.is_cleanup_running());
    for i in 0..3_000 {
        store
            .set(&format!("k{i}"), b"v", Duration::from_secs(1))
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.get("k0").await.unwrap(), None, "expired on access");
    assert_eq!(store.cleanup_expired(), 2_999);
    assert_eq!(store.stats().await.unwrap().expirations, Some(3_000));
}

#[test]
fn builds_outside_a_runtime_without_a_sweep() {
    let store = MemoryStorage::builder()
        .cleanup_interval(Some(Duration::from_secs(1)))
        .build();
    assert!(!store.is_cleanup_running());
    assert!(store.start_cleanup(Duration::from_secs(1)).is_err());
}

#[tokio::test]
async fn refunds_and_places_given_back_leave_their_keys_evictable() {
    // Every key spent, then given a unit back: each has room again, so a
    // full store makes room for a new key by evicting one of them.
    let store = MemoryStorage::builder().max_size(16).shards(1).build();
    let limiter = Limiter::new(Arc::new(store));
    let two = Rule::new("two", Algorithm::FixedWindow, "2/hour".parse().unwrap()).unwrap();
    for i in 0..16 {
        let key = format!("k{i}");
        limiter.check_cost(&two, &key, 2).await.unwrap();
        assert!(!limiter.peek(&two, &key).await.unwrap().is_allowed());
        let back = limiter.refund(&two, &key, 1).await.unwrap();
        assert_eq!(back.remaining(), 1);
    }
    assert!(limiter.check(&two, "fresh").await.unwrap().is_allowed());
    // The same for places in flight taken and given back.
    let one = Rule::concurrency("one", 1, Duration::from_secs(600)).unwrap();
    for i in 0..16 {
        let permit = limiter.acquire(&one, &format!("p{i}")).await.unwrap();
        assert!(permit.is_allowed());
        permit.release().await.unwrap();
    }
    let fresh = limiter.acquire(&one, "fresh").await.unwrap();
    assert!(fresh.is_allowed());
    // Held places are never evicted: a full store of held keys refuses.
    drop(fresh);
    let mut held = Vec::new();
    for i in 0..16 {
        held.push(limiter.acquire(&one, &format!("h{i}")).await.unwrap());
    }
    let refused = limiter.acquire(&one, "one-more").await.unwrap_err();
    assert_eq!(refused.kind(), ratekeeper_core::ErrorKind::Full);
}

#[test]
fn a_permit_dropped_outside_a_runtime_gives_its_place_back() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let limiter = Limiter::new(Arc::new(MemoryStorage::new()));
    let rule = Rule::concurrency("one", 1, Duration::from_secs(600)).unwrap();
    let permit = runtime.block_on(limiter.acquire(&rule, "k")).unwrap();
    assert!(permit.is_allowed());
    assert!(
        !runtime
            .block_on(limiter.acquire(&rule, "k"))
            .unwrap()
            .is_allowed()
    );
    // No runtime here: the memory store answers at once, so the place
    // comes back now, not when its lease expires.
    assert!(tokio::runtime::Handle::try_current().is_err());
    drop(permit);
    assert!(
        runtime
            .block_on(limiter.acquire(&rule, "k"))
            .unwrap()
            .is_allowed()
    );
}

#[tokio::test]
async fn closing_the_store_ends_the_sweep() {
    let store = MemoryStorage::builder()
        .cleanup_interval(Some(Duration::from_millis(1)))
        .build();
    let clone = store.clone();
    drop(store);
    assert!(
        clone.is_cleanup_running(),
        "a clone keeps the store and its sweep alive"
    );
    clone.close().await.unwrap();
    assert!(!clone.is_cleanup_running());
}

#[tokio::test]
async fn stats_report_size() {
    let store = MemoryStorage::builder().max_size(10).shards(2).build();
    store.set("a", &[0; 1000], HOUR).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.backend, "memory");
    assert!(stats.approx_bytes.unwrap() >= 1000, "{stats:?}");
    assert!(
        stats
            .details
            .iter()
            .any(|(k, v)| k == "max_size" && v == "10")
    );
}

#[test]
fn from_url_reads_options() {
    let store = MemoryStorage::from_url("memory://?max_size=42").unwrap();
    assert_eq!(store.max_size(), 42);
    let config = MemoryConfig::from_url("memory://?cleanup_interval=off&shards=3").unwrap();
    assert_eq!((config.cleanup_interval, config.shards), (None, 3));
    let config = MemoryConfig::from_url("memory://?cleanup_interval=90s").unwrap();
    assert_eq!(config.cleanup_interval, Some(Duration::from_secs(90)));
    // Scheme in any case, a trailing slash, percent-encoding in the query.
    let config = MemoryConfig::from_url("MEMORY:///?max%5Fsize=7").unwrap();
    assert_eq!(config.max_size, 7);
    for bad in [
        "memory://?max_size=1#x",
        "memory:/?max_size=1",
        "memory://h?max_size=1",
        "memory://?max_size=1&max_size",
        "memory://host",
        "redis://localhost",
        "memory://?max_size=-1",
        "memory://?cleanup_interval=soon",
        "not a url",
        "memory://?cleanup_interval=0s",
    ] {
        let err = MemoryStorage::from_url(bad).unwrap_err();
        assert_eq!(
            err.kind(),
            ratekeeper_core::ErrorKind::InvalidInput,
            "{bad}"
        );
    }
}

/// A key spent again after its window rolled over is still denying state: the
/// second mark must not undo the first, or a flood of fresh keys would evict
/// it and hand the spent key a fresh limit.
#[tokio::test]
async fn a_key_spent_in_two_windows_is_still_never_evicted() {
    let (clock, _, limiter) = on_manual_clock(8);
    let strict = Rule::new("strict", Algorithm::FixedWindow, "1/s".parse().unwrap()).unwrap();
    let loose = Rule::new("loose", Algorithm::FixedWindow, "100/s".parse().unwrap()).unwrap();
    assert!(limiter.check(&strict, "victim").await.unwrap().is_allowed());
    // The next window: the expired entry is reused and spent again.
    clock.advance(Duration::from_secs(1));
    assert!(limiter.check(&strict, "victim").await.unwrap().is_allowed());
    for i in 0..100 {
        assert!(
            limiter
                .check(&loose, &format!("fresh-{i}"))
                .await
                .unwrap()
                .is_allowed()
        );
    }
    assert!(
        !limiter.check(&strict, "victim").await.unwrap().is_allowed(),
        "the spent key was evicted"
    );
}

/// The size estimate counts what a key holds on the heap: long keys and long
/// sliding logs.
#[tokio::test]
async fn stats_count_long_keys_and_long_logs() {
    async fn bytes(store: &MemoryStorage) -> u64 {
        store.stats().await.unwrap().approx_bytes.unwrap()
    }
    let short = MemoryStorage::builder().max_size(1_000).shards(1).build();
    let long = MemoryStorage::builder().max_size(1_000).shards(1).build();
    for i in 0..100 {
        short.set(&format!("k{i}"), b"v", HOUR).await.unwrap();
        long.set(&format!("{i:0>100}"), b"v", HOUR).await.unwrap();
    }
    // Short keys are held inline; each long key adds its 100 bytes.
    let (short, long) = (bytes(&short).await, bytes(&long).await);
    assert_eq!(long - short, 100 * 100);

    let (clock, store, limiter) = on_manual_clock(1_000);
    let log = Rule::new(
        "log",
        Algorithm::SlidingWindowLog,
        "1000/hour".parse().unwrap(),
    )
    .unwrap();
    assert_eq!(bytes(&store).await, 0);
    for _ in 0..1_000 {
        assert!(limiter.check(&log, "k").await.unwrap().is_allowed());
        clock.advance(Duration::from_millis(1));
    }
    // One entry of 16 bytes per instant (the log's spare capacity included),
    // plus the bookkeeping of one entry.
    let full = bytes(&store).await;
    assert!((16 * 1_000..16 * 2_048 + 200).contains(&full), "{full}");

    // Places in flight are a log's entries too: a lease per instant.
    let (clock, store, limiter) = on_manual_clock(1_000);
    let places = Rule::concurrency("places", 1_000, Duration::from_secs(3_600)).unwrap();
    let mut held = Vec::new();
    for _ in 0..1_000 {
        held.push(limiter.acquire(&places, "k").await.unwrap());
        clock.advance(Duration::from_millis(1));
    }
    let full = bytes(&store).await;
    assert!((16 * 1_000..16 * 2_048 + 200).contains(&full), "{full}");
}

/// State that cannot be decoded is an error naming the key, not a fresh limit.
#[tokio::test]
async fn corrupt_rule_state_is_an_error_naming_its_key() {
    let store = MemoryStorage::builder().build();
    let limiter = Limiter::new(Arc::new(store.clone()));
    let rule = Rule::new("api", Algorithm::Gcra, "5/s".parse().unwrap()).unwrap();
    store
        .set("api:client-7", b"not a state", HOUR)
        .await
        .unwrap();
    let err = limiter.check(&rule, "client-7").await.unwrap_err();
    assert_eq!(
        err.kind(),
        ratekeeper_core::ErrorKind::CorruptState,
        "{err}"
    );
    assert!(err.to_string().contains("api:client-7"), "{err}");
}

/// A key whose state expired starts afresh, and the expiry is counted.
#[tokio::test]
async fn expired_state_is_counted_when_a_decision_finds_it() {
    // GCRA's state lapses in its one-word cell, decided under the read
    // lock; the others' under the write lock: each counts it once.
    for algorithm in Algorithm::RATES {
        let (clock, store, limiter) = on_manual_clock(1_000);
        let rule = Rule::new("r", algorithm, "1/s".parse().unwrap()).unwrap();
        assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
        assert!(!limiter.check(&rule, "k").await.unwrap().is_allowed());
        clock.advance(Duration::from_secs(2));
        assert!(limiter.peek(&rule, "k").await.unwrap().is_allowed());
        assert_eq!(
            store.stats().await.unwrap().expirations,
            Some(0),
            "{algorithm}"
        );
        assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
        assert!(!limiter.check(&rule, "k").await.unwrap().is_allowed());
        assert_eq!(
            store.stats().await.unwrap().expirations,
            Some(1),
            "{algorithm}"
        );
    }
}

/// A request checked against several rules marks each rule's entry by its
/// own room: the spent rule's entry survives a flood, the other's may go. The
/// room it makes is only for keys it adds, and what it evicts or finds
/// expired is counted.
#[tokio::test]
async fn several_rules_mark_and_count_each_entry() {
    let (clock, store, limiter) = on_manual_clock(4);
    let strict = Rule::new("strict", Algorithm::FixedWindow, "1/hour".parse().unwrap()).unwrap();
    let loose = Rule::new("loose", Algorithm::FixedWindow, "100/hour".parse().unwrap()).unwrap();
    let both = [(&strict, "victim"), (&loose, "victim")];
    assert!(limiter.check_all(&both, 1).await.unwrap().is_allowed());
    for i in 0..20 {
        let key = format!("fresh-{i}");
        let pair = [(&loose, key.as_str()), (&loose, "other")];
        assert!(limiter.check_all(&pair, 1).await.unwrap().is_allowed());
    }
    assert!(
        !limiter.check(&strict, "victim").await.unwrap().is_allowed(),
        "the spent rule's entry was evicted"
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.evictions, Some(19), "{stats:?}");

    // Both keys already stored: nothing is evicted to make room.
    let stored = [(&loose, "fresh-19"), (&loose, "other")];
    assert!(limiter.check_all(&stored, 1).await.unwrap().is_allowed());
    assert_eq!(store.stats().await.unwrap().evictions, Some(19));

    // Every entry has expired: the request finds its spent entry expired and
    // evicts an expired entry to add the other; both count as expirations.
    clock.advance(Duration::from_secs(3_601));
    let before = store.stats().await.unwrap().expirations.unwrap();
    assert!(limiter.check_all(&both, 1).await.unwrap().is_allowed());
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.expirations, Some(before + 2), "{stats:?}");
    assert_eq!(stats.evictions, Some(19), "{stats:?}");
}

/// A compare-and-swap that finds its key expired counts the expiry.
#[tokio::test]
async fn compare_and_swap_counts_the_expired_keys_it_finds() {
    let (clock, store, _) = on_manual_clock(1_000);
    store
        .set("k", b"old", Duration::from_secs(1))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    let op = ratekeeper_core::storage::CasOp {
        key: "k",
        expected: None,
        new_value: b"new",
        ttl: HOUR,
    };
    assert!(store.compare_and_swap(&[op]).await.unwrap());
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(store.stats().await.unwrap().expirations, Some(1));
}

/// The memory store decides without awaiting: the synchronous path answers.
#[tokio::test]
async fn decisions_are_answered_synchronously() {
    let limiter = Limiter::new(Arc::new(MemoryStorage::builder().build()));
    let rule = Rule::new("r", Algorithm::Gcra, "2/s".parse().unwrap()).unwrap();
    let d = limiter.check_cost_now(&rule, "k", 1).expect("answered now");
    assert!(d.unwrap().is_allowed());
    let pair = [(&rule, "a"), (&rule, "b")];
    assert!(
        limiter
            .check_all_now(&pair, 1)
            .expect("answered now")
            .unwrap()
            .is_allowed()
    );
}

/// A GCRA key the store holds is decided under its shard's read lock, by a
/// compare-and-swap of its one-word state; a request over two rules (one
/// of them that key's) takes the write lock. Threads doing both on one hot
/// key, on a clock that does not move, admit exactly the burst.
#[test]
fn threads_on_one_hot_key_admit_exactly_the_burst() {
    const THREADS: usize = 6;
    const TRIES: u64 = 25_000;
    for shards in [1, 64] {
        let clock = manual();
        let store = MemoryStorage::builder()
            .max_size(1_000)
            .shards(shards)
            .cleanup_interval(None)
            .clock(Arc::new(clock.clone()))
            .build();
        let limiter = Limiter::builder(Arc::new(store))
            .shared_clock(Arc::new(clock.clone()))
            .build();
        let hot = Rule::new("hot", Algorithm::Gcra, "100000/hour".parse().unwrap()).unwrap();
        let wide = Rule::new(
            "wide",
            Algorithm::FixedWindow,
            "1000000/hour".parse().unwrap(),
        )
        .unwrap();
        let admitted = std::sync::atomic::AtomicU64::new(0);
        let start = std::sync::Barrier::new(THREADS);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (limiter, hot, wide, admitted) = (&limiter, &hot, &wide, &admitted);
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    for _ in 0..TRIES {
                        // Every third thread through the write lock's path.
                        let decision = if t % 3 == 0 {
                            limiter.check_all_now(&[(hot, "global"), (wide, "global")], 1)
                        } else {
                            limiter.check_cost_now(hot, "global", 1)
                        };
                        if decision.expect("answered now").unwrap().is_allowed() {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 100_000, "{shards} shards");
        let after = limiter.check_cost_now(&hot, "global", 1).unwrap().unwrap();
        assert!(!after.is_allowed() && after.remaining() == 0);
        // Time moves on: exactly what came back is admitted again.
        clock.advance(Duration::from_millis(360));
        let again = (0..20)
            .filter(|_| {
                let d = limiter.check_cost_now(&hot, "global", 1).unwrap().unwrap();
                d.is_allowed()
            })
            .count();
        assert_eq!(again, 10, "{shards} shards");
    }
}

/// A GCRA key spent by decisions in place (after the first, which stored
/// it) is marked as denying by them: a flood of fresh keys cannot evict it
/// and so give its limit back.
#[tokio::test]
async fn a_gcra_key_spent_in_place_is_never_evicted() {
    let (clock, store, limiter) = on_manual_clock(64);
    let rule = Rule::new("api", Algorithm::Gcra, "3/hour".parse().unwrap()).unwrap();
    for _ in 0..3 {
        assert!(limiter.check(&rule, "victim").await.unwrap().is_allowed());
    }
    for i in 0..10_000 {
        let d = limiter.check(&rule, &format!("fresh-{i}")).await.unwrap();
        assert!(d.is_allowed());
    }
    assert!(
        !limiter.check(&rule, "victim").await.unwrap().is_allowed(),
        "the spent limit was reset"
    );
    // A third of the hour: one unit came back, and only one.
    clock.advance(Duration::from_secs(1_200));
    assert!(limiter.check(&rule, "victim").await.unwrap().is_allowed());
    assert!(!limiter.check(&rule, "victim").await.unwrap().is_allowed());
    let stats = store.stats().await.unwrap();
    assert!(stats.keys.unwrap() <= 64 && stats.evictions.unwrap() > 9_000);
}
