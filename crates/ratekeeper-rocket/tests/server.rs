//! What is particular to Rocket, on real servers through real clients: the
//! request guards (alone and on top of the fairing), a guard without the
//! fairing, a catch-all route, workers sharing one limit, charging more.
//! The behaviour every adapter shares is in `behaviour.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::sync::Arc;

use ratekeeper_core::{Algorithm, Limiter, Rule};
use ratekeeper_http::{HttpPolicy, KeyExtractor, KeySource, Limits, RouteTable};
use ratekeeper_memory::MemoryStorage;
use ratekeeper_rocket::{RateLimit, RateLimitDecision, RateLimited, RateLimitedBy, RouteLimits};
use ratekeeper_testkit::http::TestClient;

fn rule(name: &str, quota: &str) -> Rule {
    Rule::new(name, Algorithm::Gcra, quota.parse().unwrap()).unwrap()
}

fn policy(routes: RouteTable, keys: KeySource) -> HttpPolicy {
    HttpPolicy::new(
        Limiter::new(Arc::new(MemoryStorage::new())),
        routes,
        KeyExtractor::new(keys),
    )
}

struct Exports;

impl RouteLimits for Exports {
    fn limits() -> Limits {
        Limits::new(vec![rule("exports", "2/hour")])
    }
}

#[rocket::get("/guarded")]
fn guarded(limit: RateLimited) -> String {
    limit.0.map_or_else(
        || "none".to_owned(),
        |a| a.decision().remaining().to_string(),
    )
}

#[rocket::get("/export")]
fn export(limit: RateLimitedBy<Exports>) -> String {
    limit.0.map_or_else(
        || "none".to_owned(),
        |a| a.decision().remaining().to_string(),
    )
}

#[rocket::get("/open")]
fn open() -> &'static str {
    "open"
}

#[rocket::get("/users/<id>/profile")]
fn profile(id: u64, _limit: RateLimited) -> String {
    format!("user {id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_limit_only_the_routes_that_ask() {
    let p = policy(
        RouteTable::new().default_limits(Limits::new(vec![rule("api", "1/hour")])),
        KeySource::Ip,
    );
    let rocket = common::app()
        .attach(RateLimit::guards_only(p))
        .mount("/", rocket::routes![guarded, export, open]);
    let (addr, _stop) = common::launch(rocket).await;
    let c = TestClient::new(addr);
    for _ in 0..3 {
        assert_eq!(c.get("/open", &[]).await.status, 200);
    }
    let r = c.get("/guarded", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "0"));
    assert!(
        r.header("ratelimit").is_some(),
        "the fairing adds the headers"
    );
    let r = c.get("/guarded", &[]).await;
    assert_eq!(r.status, 429);
    assert!(r.body.contains("rate_limited"), "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("content-type"), Some("application/json"));
    // The route's own limits, instead of the table's.
    assert_eq!(c.get("/export", &[]).await.body, "1");
    assert_eq!(c.get("/export", &[]).await.body, "0");
    assert_eq!(c.get("/export", &[]).await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_guard_adds_its_limits_to_the_fairings() {
    let p = policy(
        RouteTable::new().default_limits(Limits::new(vec![rule("api", "10/hour")])),
        KeySource::Ip,
    );
    let rocket = common::app()
        .attach(RateLimit::new(p))
        .mount("/", rocket::routes![export, open]);
    let (addr, _stop) = common::launch(rocket).await;
    let c = TestClient::new(addr);
    assert_eq!(c.get("/export", &[]).await.status, 200);
    assert_eq!(c.get("/export", &[]).await.status, 200);
    let r = c.get("/export", &[]).await;
    assert_eq!(r.status, 429);
    assert!(r.header("ratelimit").is_some_and(|v| v.contains("exports")));
    // The global limit counted those three as well: 7 of 10 left.
    let r = c.get("/open", &[]).await;
    assert!(
        r.header("ratelimit").is_some_and(|v| v.contains("r=6")),
        "{:?}",
        r.header("ratelimit")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_key_by_rockets_route_pattern() {
    let p = policy(
        RouteTable::new().default_limits(Limits::new(vec![rule("per-route", "1/hour")])),
        KeySource::Route,
    );
    let rocket = common::app()
        .attach(RateLimit::guards_only(p))
        .mount("/", rocket::routes![profile]);
    let (addr, _stop) = common::launch(rocket).await;
    let c = TestClient::new(addr);
    assert_eq!(c.get("/users/1/profile", &[]).await.status, 200);
    // Another id, the same pattern (`/users/{id}/profile`): the same key.
    assert_eq!(c.get("/users/2/profile", &[]).await.status, 429);
}

struct PerPattern;

impl RouteLimits for PerPattern {
    fn limits() -> Limits {
        Limits::new(vec![rule("per-pattern", "1/hour")]).key(KeySource::Route)
    }
}

#[rocket::get("/items/<id>")]
fn item(id: u64, _limit: RateLimitedBy<PerPattern>) -> String {
    format!("item {id}")
}

#[rocket::get("/orders/<id>")]
fn order(id: u64, _limit: RateLimitedBy<PerPattern>) -> String {
    format!("order {id}")
}

/// A guard whose own limits key by the route gets Rocket's pattern even
/// when nothing else in the policy reads it: one key per pattern, not one
/// for every route (nor one per path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_keyed_by_route_gets_the_pattern() {
    let p = policy(RouteTable::new(), KeySource::Ip);
    assert!(!p.reads_route());
    let rocket = common::app()
        .attach(RateLimit::guards_only(p))
        .mount("/", rocket::routes![item, order]);
    let (addr, _stop) = common::launch(rocket).await;
    let c = TestClient::new(addr);
    assert_eq!(c.status("/items/1", &[]).await, 200);
    assert_eq!(c.status("/items/2", &[]).await, 429);
    assert_eq!(
        c.status("/orders/1", &[]).await,
        200,
        "another pattern, another key"
    );
}

/// The every-route fairing decides before Rocket routes the request, yet
/// keys by the route Rocket will match, as guards and other adapters do. A
/// `RateLimited` guard under it charges nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fairing_keys_by_rockets_route_pattern() {
    let p = policy(
        RouteTable::new().default_limits(Limits::new(vec![rule("per-route", "1/hour")])),
        KeySource::Route,
    );
    let rocket = common::app()
        .attach(RateLimit::new(p))
        .mount("/", rocket::routes![profile])
        .mount("/", common::routes());
    let (addr, _stop) = common::launch(rocket).await;
    let c = TestClient::new(addr);
    assert_eq!(c.status("/users/1/profile", &[]).await, 200);
    assert_eq!(c.status("/users/2/profile", &[]).await, 429);
    // Another route, another key; paths no route matches share one key, so
    // a client inventing paths gets no fresh limit with each.
    assert_eq!(c.status("/users/1", &[]).await, 200);
    assert_eq!(c.status("/users/2", &[]).await, 429);
    assert_eq!(c.status("/nowhere/1", &[]).await, 404);
    assert_eq!(c.status("/nowhere/2", &[]).await, 429);
    assert_eq!(c.status("/elsewhere", &[]).await, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_without_the_fairing_says_so() {
    let rocket = common::app().mount("/", rocket::routes![guarded]);
    let (addr, _stop) = common::launch(rocket).await;
    let r = TestClient::new(addr).get("/guarded", &[]).await;
    assert_eq!(r.status, 500);
}

#[rocket::get("/<path..>", rank = 100)]
fn catch_all(path: std::path::PathBuf) -> String {
    format!("caught {}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_all_route_does_not_swallow_the_answer() {
    let p = policy(
        RouteTable::new().default_limits(Limits::new(vec![rule("api", "1/hour")])),
        KeySource::Ip,
    );
    let rocket = common::app()
        .attach(RateLimit::new(p))
        .mount("/", rocket::routes![catch_all]);
    let (addr, _stop) = common::launch(rocket).await;
    let c = TestClient::new(addr);
    assert_eq!(c.get("/anything", &[]).await.body, "caught anything");
    let r = c.get("/anything", &[]).await;
    assert_eq!(r.status, 429);
    assert!(r.body.contains("rate_limited"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_share_one_limit() {
    let p = policy(
        RouteTable::new().default_limits(Limits::new(vec![rule("api", "100/hour")])),
        KeySource::Ip,
    );
    let app = common::app();
    let config = rocket::Config {
        workers: 4,
        ..app.figment().extract::<rocket::Config>().unwrap()
    };
    let rocket = app
        .configure(config)
        .attach(RateLimit::new(p))
        .mount("/", common::routes());
    let (addr, _stop) = common::launch(rocket).await;
    // A client per request: a new connection each time.
    let burst = TestClient::new(addr).burst(150, true).await;
    assert_eq!(burst, (100, 50));
}

#[rocket::get("/report")]
async fn report(decision: RateLimitDecision) -> String {
    match decision.charge(5).await {
        Ok(charged) if charged.is_allowed() => format!("{} left", charged.remaining()),
        Ok(_) => "too large".to_owned(),
        Err(e) => format!("error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_can_charge_more_after_the_fact() {
    let p = policy(
        RouteTable::new().default_limits(Limits::new(vec![rule("api", "10/hour")])),
        KeySource::Ip,
    );
    let rocket = common::app()
        .attach(RateLimit::new(p))
        .mount("/", rocket::routes![report]);
    let (addr, _stop) = common::launch(rocket).await;
    let c = TestClient::new(addr);
    assert_eq!(c.get("/report", &[]).await.body, "4 left");
    assert_eq!(c.get("/report", &[]).await.body, "too large");
}
