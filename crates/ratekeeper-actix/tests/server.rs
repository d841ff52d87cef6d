//! What is particular to actix-web, on real servers through real clients:
//! one limit across workers, `scope` and `resource` wrapping, the decision
//! extractor and charging more. The behaviour every adapter shares is in
//! `behaviour.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use ratekeeper_actix::{RateLimit, RateLimitDecision};
use ratekeeper_core::{Algorithm, Limiter, Rule};
use ratekeeper_http::{HttpPolicy, KeyExtractor, KeySource, Limits, RouteTable};
use ratekeeper_memory::MemoryStorage;
use ratekeeper_testkit::http::TestClient;

fn limit(quota: &str) -> RateLimit {
    let rule = Rule::new("api", Algorithm::Gcra, quota.parse().unwrap()).unwrap();
    RateLimit::new(HttpPolicy::new(
        Limiter::new(Arc::new(MemoryStorage::new())),
        RouteTable::new().default_limits(Limits::new(vec![rule])),
        KeyExtractor::new(KeySource::Ip),
    ))
}

/// Four workers, each with its own app instance, and requests on fresh
/// connections (so they spread over the workers): still one limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_share_one_limit() {
    let (addr, handle) = common::start(limit("100/hour"), 4).await;
    let _stop = common::Stop(handle);
    // A client per request: a new connection each time.
    let burst = TestClient::new(addr).burst(150, true).await;
    assert_eq!(burst, (100, 50));
}

/// Starts an app configured by `configure` on its own actix system;
/// returns a client.
async fn serve<F>(configure: F) -> (TestClient, common::Stop)
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || App::new().configure(configure.clone()))
                .workers(1)
                .bind(("127.0.0.1", 0))
                .unwrap();
            let addr = *server.addrs().first().unwrap();
            let server = server.run();
            let _ = tx.send((addr, server.handle()));
            let _ = server.await;
        });
    });
    let (addr, handle) = rx.await.unwrap();
    (TestClient::new(addr), common::Stop(handle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_and_a_resource_can_be_wrapped_alone() {
    let (scoped, single) = (limit("1/hour"), limit("1/hour"));
    let (c, _stop) = serve(move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::scope("/api")
                .wrap(scoped.clone())
                .route("/a", web::get().to(|| async { "a" }))
                .route("/b", web::get().to(|| async { "b" })),
        )
        .service(
            web::resource("/export")
                .wrap(single.clone())
                .route(web::get().to(|| async { "export" })),
        )
        .route("/free", web::get().to(|| async { "free" }));
    })
    .await;
    assert_eq!(c.get("/api/a", &[]).await.status, 200);
    // The scope's limit covers every route in it.
    assert_eq!(c.get("/api/b", &[]).await.status, 429);
    assert_eq!(c.get("/export", &[]).await.status, 200);
    assert_eq!(c.get("/export", &[]).await.status, 429);
    for _ in 0..3 {
        assert_eq!(c.get("/free", &[]).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_extractor_says_when_the_middleware_is_missing() {
    async fn handler(d: RateLimitDecision) -> String {
        d.decision().remaining().to_string()
    }
    let limited = limit("10/minute");
    let (c, _stop) = serve(move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::resource("/limited")
                .wrap(limited.clone())
                .route(web::get().to(handler)),
        )
        .route("/outside", web::get().to(handler));
    })
    .await;
    assert_eq!(c.get("/limited", &[]).await.body, "9");
    let r = c.get("/outside", &[]).await;
    assert_eq!(r.status, 500);
    assert!(r.body.contains("RateLimit middleware"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_can_charge_more_after_the_fact() {
    async fn report(d: RateLimitDecision) -> String {
        match d.charge(5).await {
            Ok(charged) if charged.is_allowed() => format!("{} left", charged.remaining()),
            Ok(_) => "too large".to_owned(),
            Err(e) => format!("error: {e}"),
        }
    }
    let limited = limit("10/hour");
    let (c, _stop) = serve(move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::scope("")
                .wrap(limited.clone())
                .route("/report", web::get().to(report)),
        );
    })
    .await;
    assert_eq!(c.get("/report", &[]).await.body, "4 left");
    assert_eq!(c.get("/report", &[]).await.body, "too large");
}
