//! Runtime allow and deny lists: kept in the store, changed by any instance,
//! seen by every instance, applied by the policy.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::sync::Arc;
use std::time::Duration;

use ratekeeper::http::{
    HttpPolicy, KeyExtractor, KeySource, Limits, ListKind, RouteTable, RuntimeLists,
};
use ratekeeper::memory::MemoryStorage;
use ratekeeper::{Algorithm, ErrorKind, Limiter, ManualClock, Rule, Storage, Timestamp};

mod common;

fn policy(store: Arc<dyn Storage>, lists: RuntimeLists, routes: RouteTable) -> HttpPolicy {
    HttpPolicy::new(
        Limiter::new(store),
        routes,
        KeyExtractor::new(KeySource::Ip),
    )
    .runtime_lists(lists)
}

fn limited() -> RouteTable {
    RouteTable::new().default_limits(Limits::new(vec![
        Rule::new("api", Algorithm::FixedWindow, "1/hour".parse().unwrap()).unwrap(),
    ]))
}

async fn status(p: &HttpPolicy, peer: &str) -> u16 {
    common::get_from(p, peer).await.0
}

/// The instant the manual-clock tests start at.
const T0: u64 = 1_700_000_000_000_000;

/// Lists on a memory store, read by a manual clock at `T0`.
async fn lists_on_a_manual_clock() -> (RuntimeLists, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_micros(T0));
    let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let lists = RuntimeLists::load_with_clock(store, Arc::new(clock.clone()))
        .await
        .unwrap();
    (lists, clock)
}

#[tokio::test]
async fn entries_are_added_listed_expired_and_removed() {
    let (lists, clock) = lists_on_a_manual_clock().await;
    lists
        .add(ListKind::Deny, "203.0.113.7", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    lists
        .add(ListKind::Deny, "198.51.100.0/24", None)
        .await
        .unwrap();
    lists
        .add(ListKind::Allow, "10.0.0.0/8", None)
        .await
        .unwrap();
    assert!(lists.is_denied("203.0.113.7".parse().unwrap()));
    assert!(lists.is_denied("198.51.100.200".parse().unwrap()));
    assert!(lists.is_denied("::ffff:198.51.100.1".parse().unwrap()));
    assert!(lists.is_allowed("10.9.9.9".parse().unwrap()));
    assert_eq!(lists.list(ListKind::Deny).await.unwrap().len(), 2);

    clock.advance(Duration::from_secs(61));
    assert!(!lists.is_denied("203.0.113.7".parse().unwrap()), "expired");
    let deny = lists.list(ListKind::Deny).await.unwrap();
    assert_eq!(deny.len(), 1);
    assert_eq!(deny[0].net.to_string(), "198.51.100.0/24");

    assert!(
        lists
            .remove(ListKind::Deny, "198.51.100.0/24")
            .await
            .unwrap()
    );
    assert!(
        !lists
            .remove(ListKind::Deny, "198.51.100.0/24")
            .await
            .unwrap()
    );
    assert!(!lists.is_denied("198.51.100.200".parse().unwrap()));
    assert_eq!(
        lists
            .add(ListKind::Deny, "not an address", None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn the_policy_refuses_denied_and_exempts_allowed_clients() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let lists = RuntimeLists::load(store.clone()).await.unwrap();
    let routes = limited().deny(["192.0.2.1"]).unwrap();
    let p = policy(store, lists.clone(), routes);
    assert_eq!(status(&p, "203.0.113.7").await, 200);
    lists
        .add(ListKind::Deny, "203.0.113.7", None)
        .await
        .unwrap();
    assert_eq!(status(&p, "203.0.113.7").await, 403);

    lists
        .add(ListKind::Allow, "198.51.100.9", None)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            status(&p, "198.51.100.9").await,
            200,
            "allowed: never limited"
        );
    }
    // On both lists: refused. The policy's own deny list beats a runtime allow.
    lists
        .add(ListKind::Allow, "203.0.113.7", None)
        .await
        .unwrap();
    assert_eq!(status(&p, "203.0.113.7").await, 403);
    lists.add(ListKind::Allow, "192.0.2.1", None).await.unwrap();
    assert_eq!(status(&p, "192.0.2.1").await, 403);
}

/// Two instances sharing one store: a change through one reaches the other
/// within its refresh interval, by itself.
#[tokio::test]
async fn every_instance_sees_a_change() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let a = RuntimeLists::load(store.clone()).await.unwrap();
    let b = RuntimeLists::load(store.clone())
        .await
        .unwrap()
        .refresh_every(Duration::from_millis(50));
    let pb = policy(store, b, limited());
    a.add(ListKind::Deny, "203.0.113.7", None).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if status(&pb, "203.0.113.7").await == 403 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Concurrent changes from many tasks through separate instances all land:
/// the list is changed by compare-and-swap, never by blind overwrite.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_all_land() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let lists = RuntimeLists::load(store).await.unwrap();
                lists
                    .add(ListKind::Deny, &format!("203.0.113.{i}"), None)
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let lists = RuntimeLists::load(store).await.unwrap();
    assert_eq!(lists.list(ListKind::Deny).await.unwrap().len(), 40);
}

/// A list value that is not ours is reported, never overwritten, and the
/// instance keeps its last good snapshot.
#[tokio::test]
async fn a_corrupt_list_is_an_error_and_the_last_snapshot_stays() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let lists = RuntimeLists::load(store.clone()).await.unwrap();
    lists
        .add(ListKind::Deny, "203.0.113.7", None)
        .await
        .unwrap();
    store
        .set(ListKind::Deny.store_key(), b"junk", Duration::from_secs(60))
        .await
        .unwrap();
    let e = lists
        .add(ListKind::Deny, "203.0.113.8", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CorruptState);
    assert_eq!(
        lists.refresh().await.unwrap_err().kind(),
        ErrorKind::CorruptState
    );
    assert!(lists.is_denied("203.0.113.7".parse().unwrap()));
    assert_eq!(
        store
            .get(ListKind::Deny.store_key())
            .await
            .unwrap()
            .unwrap(),
        b"junk"
    );
    assert_eq!(
        RuntimeLists::load(store).await.unwrap_err().kind(),
        ErrorKind::CorruptState
    );
}

/// A refresh that read the deny list just before a change landed must not
/// put its older snapshot over the change's: the new entry applies at once
/// and stays applied.
#[tokio::test]
async fn a_refresh_never_hides_a_change_made_meanwhile() {
    let held = Arc::new(common::gated::Gated::new(Arc::new(MemoryStorage::new())));
    held.hold_get(1);
    // The load reads both lists (gets 0 and 1): release the second.
    let loading = tokio::spawn({
        let store: Arc<dyn Storage> = held.clone();
        async move { RuntimeLists::load(store).await.unwrap() }
    });
    tokio::task::yield_now().await;
    held.release();
    let lists = loading.await.unwrap();
    // Hold the refresh's read of the deny list (its second get)...
    held.hold_get(1);
    let refreshing = tokio::spawn({
        let lists = lists.clone();
        async move { lists.refresh().await }
    });
    while held.gets() < 2 {
        tokio::task::yield_now().await;
    }
    // ...while a deny entry is added through this instance.
    lists
        .add(ListKind::Deny, "203.0.113.9", None)
        .await
        .unwrap();
    assert!(lists.is_denied("203.0.113.9".parse().unwrap()));
    held.release();
    refreshing.await.unwrap().unwrap();
    assert!(
        lists.is_denied("203.0.113.9".parse().unwrap()),
        "the refresh put an older deny list over the change"
    );
}

/// A policy rereads the lists once per refresh interval, by the lists'
/// clock: not before, once at the interval, not again until the next one.
#[tokio::test]
async fn the_lists_are_reread_once_per_interval() {
    let clock = ManualClock::new(Timestamp::from_micros(T0));
    let counted = Arc::new(common::gated::Gated::new(Arc::new(MemoryStorage::new())));
    let store: Arc<dyn Storage> = counted.clone();
    let lists = RuntimeLists::load_with_clock(store.clone(), Arc::new(clock.clone()))
        .await
        .unwrap()
        .refresh_every(Duration::from_secs(10));
    let p = policy(store, lists, limited());
    // Count the store's reads without holding any.
    counted.hold_get(u32::MAX);
    let reads_after = |offset_us: u64| {
        clock.set(Timestamp::from_micros(T0 + offset_us));
        let (p, counted) = (&p, &counted);
        async move {
            status(p, "203.0.113.7").await;
            // The reread runs on this (current-thread) runtime: let it finish.
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            counted.gets()
        }
    };
    assert_eq!(reads_after(9_999_999).await, 0, "before the interval");
    assert_eq!(
        reads_after(10_000_000).await,
        2,
        "both lists, at the interval"
    );
    assert_eq!(reads_after(10_000_000).await, 2);
    assert_eq!(reads_after(19_999_999).await, 2);
    assert_eq!(reads_after(20_000_000).await, 4);
}

/// A list entry added without an expiry outlives years without changes: the
/// list's own key in the store lives for ten years after its last change.
#[tokio::test]
async fn a_permanent_entry_outlives_years_without_changes() {
    let clock = ManualClock::new(Timestamp::from_micros(T0));
    let store: Arc<dyn Storage> = Arc::new(
        MemoryStorage::builder()
            .clock(Arc::new(clock.clone()))
            .build(),
    );
    let lists = RuntimeLists::load_with_clock(store.clone(), Arc::new(clock.clone()))
        .await
        .unwrap();
    lists
        .add(ListKind::Deny, "203.0.113.7", None)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(9 * 365 * 86_400));
    let later = RuntimeLists::load_with_clock(store, Arc::new(clock.clone()))
        .await
        .unwrap();
    assert!(later.is_denied("203.0.113.7".parse().unwrap()));
    assert!(!later.is_allowed("203.0.113.7".parse().unwrap()));
    assert_eq!(later.list(ListKind::Deny).await.unwrap().len(), 1);
}

/// An entry expires at its instant: it is no longer listed then, and a
/// change made at that instant drops it from the store.
#[tokio::test]
async fn an_entry_expires_at_its_instant() {
    let (lists, clock) = lists_on_a_manual_clock().await;
    lists
        .add(ListKind::Deny, "203.0.113.7", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(60));
    assert!(lists.list(ListKind::Deny).await.unwrap().is_empty());
    assert!(!lists.is_denied("203.0.113.7".parse().unwrap()));
    lists
        .add(ListKind::Deny, "203.0.113.8", None)
        .await
        .unwrap();
    // Back one microsecond: had the change kept the expired entry, it would
    // be listed again.
    clock.set(Timestamp::from_micros(T0 + 59_999_999));
    let deny = lists.list(ListKind::Deny).await.unwrap();
    assert_eq!(deny.len(), 1);
    assert_eq!(deny[0].net.to_string(), "203.0.113.8/32");
}

#[test]
fn list_kinds_are_named() {
    assert_eq!(ListKind::Allow.as_str(), "allow");
    assert_eq!(ListKind::Deny.to_string(), "deny");
}
