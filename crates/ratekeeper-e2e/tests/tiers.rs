//! Subscription tiers through the HTTP policy: real limiter, memory store,
//! manual clock, an async resolver that counts its lookups.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ratekeeper::http::{
    HttpPolicy, Identity, KeyExtractor, KeySource, Limits, Outcome, RequestView, RouteTable, Tiers,
    tier_resolver_fn,
};
use ratekeeper::memory::MemoryStorage;
use ratekeeper::{Algorithm, Error, ErrorKind, Limiter, ManualClock, Rule, Timestamp};

mod common;

use common::{NONE, admitted};

fn rule(name: &str, quota: &str) -> Rule {
    Rule::new(name, Algorithm::FixedWindow, quota.parse().unwrap()).unwrap()
}

fn identity(user: &str, tier: Option<&str>) -> Identity {
    match tier {
        Some(tier) => Identity::new(user).with_tier(tier),
        None => Identity::new(user),
    }
}

/// FastAPI-boilerplate's example: `POST /api/v1/tasks/task` is 1 an hour on free, 10
/// on pro; everything else (and everyone anonymous) gets 3 a minute per IP.
fn tiers() -> Tiers {
    Tiers::new()
        .rule(
            "free",
            "/api/v1/tasks/task",
            &["POST"],
            Limits::new(vec![rule("tasks-free", "1/hour")]),
        )
        .unwrap()
        .rule(
            "pro",
            "/api/v1/tasks/task",
            &["POST"],
            Limits::new(vec![rule("tasks-pro", "10/hour")]),
        )
        .unwrap()
}

fn policy(tiers: Tiers) -> (HttpPolicy, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_micros(1_700_000_000_000_000));
    let store = MemoryStorage::builder()
        .clock(Arc::new(clock.clone()))
        .build();
    let limiter = Limiter::builder(Arc::new(store))
        .clock(clock.clone())
        .build();
    let routes = RouteTable::new().default_limits(Limits::new(vec![rule("default", "3/minute")]));
    let policy = HttpPolicy::new(limiter, routes, KeyExtractor::new(KeySource::Ip)).tiers(tiers);
    (policy, clock)
}

const TASK: &str = "/api/v1/tasks/task";

#[tokio::test]
async fn each_tier_gets_its_own_limit_per_user() {
    let (p, _) = policy(tiers());
    let free = identity("fiona", Some("free"));
    let pro = identity("paul", Some("pro"));
    assert_eq!(
        admitted(&p, 5, "POST", TASK, "198.51.100.1", Some(&free)).await,
        1
    );
    assert_eq!(
        admitted(&p, 15, "POST", TASK, "198.51.100.2", Some(&pro)).await,
        10
    );
    // Keyed by user: the same user from another address has nothing left.
    assert_eq!(
        admitted(&p, 1, "POST", TASK, "198.51.100.3", Some(&pro)).await,
        0
    );
    // Another pro user has their own 10.
    let other = identity("petra", Some("pro"));
    assert_eq!(
        admitted(&p, 15, "POST", TASK, "198.51.100.2", Some(&other)).await,
        10
    );
}

#[tokio::test]
async fn anonymous_unknown_tiers_and_uncovered_paths_get_the_default_per_ip() {
    let (p, _) = policy(tiers());
    // No identity: the default rule by IP.
    assert_eq!(admitted(&p, 5, "POST", TASK, "198.51.100.1", None).await, 3);
    // An unknown tier: the default rule, by IP (this IP has used it up).
    let gold = identity("gina", Some("gold"));
    assert_eq!(
        admitted(&p, 2, "POST", TASK, "198.51.100.1", Some(&gold)).await,
        0
    );
    assert_eq!(
        admitted(&p, 5, "POST", TASK, "198.51.100.4", Some(&gold)).await,
        3
    );
    // A path the tier does not cover, and a method it does not: the default.
    let pro = identity("paul", Some("pro"));
    assert_eq!(
        admitted(&p, 5, "GET", "/other", "198.51.100.5", Some(&pro)).await,
        3
    );
    assert_eq!(
        admitted(&p, 5, "GET", TASK, "198.51.100.6", Some(&pro)).await,
        3
    );
    // An identity without a tier and no resolver: the default.
    let plain = identity("nia", None);
    assert_eq!(
        admitted(&p, 5, "POST", TASK, "198.51.100.7", Some(&plain)).await,
        3
    );
}

#[tokio::test]
async fn the_resolver_finds_tiers_and_its_answers_are_cached() {
    let lookups = Arc::new(AtomicU32::new(0));
    let counter = lookups.clone();
    let resolver = tier_resolver_fn(move |who: Identity| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            match who.user() {
                "paul" => Ok(Some("pro".to_owned())),
                "db-down" => Err(Error::new(ErrorKind::Unavailable, "the database is down")),
                _ => Ok(None),
            }
        }
    });
    let (p, clock) = policy(
        tiers()
            .resolver(resolver)
            .cache(Duration::from_secs(30), 100),
    );
    let paul = identity("paul", None);
    let view = RequestView {
        method: "POST",
        path: TASK,
        route: None,
        peer: "198.51.100.2".parse().unwrap(),
        headers: &NONE,
        identity: Some(&paul),
    };
    // Not cached yet: deciding needs the resolver, so not without waiting.
    assert!(p.check_now(&view).is_none());
    assert_eq!(
        admitted(&p, 12, "POST", TASK, "198.51.100.2", Some(&paul)).await,
        10
    );
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        1,
        "one lookup, then the cache"
    );
    // Cached: decided without waiting (and denied: the 10 are used).
    assert!(matches!(
        p.check_now(&view),
        Some(Outcome::Respond {
            status: http::StatusCode::TOO_MANY_REQUESTS,
            ..
        })
    ));
    // After the TTL the resolver is asked again.
    clock.advance(Duration::from_secs(31));
    admitted(&p, 1, "POST", TASK, "198.51.100.2", Some(&paul)).await;
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
    // A failing resolver: the default rule by IP, and the failure is not
    // cached.
    let down = identity("db-down", None);
    assert_eq!(
        admitted(&p, 5, "POST", TASK, "198.51.100.9", Some(&down)).await,
        3
    );
    assert_eq!(lookups.load(Ordering::SeqCst), 7);
}
