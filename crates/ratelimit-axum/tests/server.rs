//! The layer on a real axum server, through a real HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ratelimit_axum::{RateLimitDecision, RateLimitLayer};
use ratelimit_core::http::{
    ClientIpPolicy, HttpPolicy, KeyExtractor, KeySource, Limits, RouteTable,
};
use ratelimit_core::{Algorithm, Limiter, Rule};
use ratelimit_memory::MemoryStorage;

fn rule(name: &str, quota: &str) -> Rule {
    Rule::new(name, Algorithm::Gcra, quota.parse().unwrap()).unwrap()
}

fn policy(routes: RouteTable, keys: KeyExtractor) -> HttpPolicy {
    HttpPolicy::new(Limiter::new(Arc::new(MemoryStorage::new())), routes, keys)
}

async fn serve(app: Router, connect_info: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        if connect_info {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        } else {
            axum::serve(listener, app).await.unwrap();
        }
    });
    addr
}

fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn get_path(
    client: &Client<HttpConnector, Body>,
    addr: SocketAddr,
    path: &str,
    xff: Option<&str>,
) -> Reply {
    let mut req = Request::get(format!("http://{addr}{path}"));
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    let res = client
        .request(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

fn app(policy: HttpPolicy) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/decision",
            get(
                |Extension(RateLimitDecision(d)): Extension<RateLimitDecision>| async move {
                    d.remaining().to_string()
                },
            ),
        )
        .layer(RateLimitLayer::new(policy))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_reached_answers_429_with_headers() {
    let routes = RouteTable::new()
        .default_limits(Limits::new(vec![rule("api", "3/minute")]))
        .exempt("/health")
        .unwrap();
    let addr = serve(app(policy(routes, KeyExtractor::new(KeySource::Ip))), true).await;
    let c = client();
    for remaining in ["2", "1", "0"] {
        let r = get_path(&c, addr, "/", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "hello");
        let header = r.headers["ratelimit"].to_str().unwrap();
        assert!(header.contains(&format!("r={remaining}")), "{header}");
        assert!(r.headers.contains_key("ratelimit-policy"));
    }
    let r = get_path(&c, addr, "/", None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert!(r.body.contains("rate_limited"), "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    // Exempt paths are never limited.
    for _ in 0..5 {
        assert_eq!(
            get_path(&c, addr, "/health", None).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_of_one_hundred_fifty_concurrent_requests_pass() {
    let routes = RouteTable::new().default_limits(Limits::new(vec![rule("api", "100/hour")]));
    let addr = serve(app(policy(routes, KeyExtractor::new(KeySource::Ip))), true).await;
    let c = client();
    let tasks: Vec<_> = (0..150)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { get_path(&c, addr, "/", None).await.status })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!((ok, limited), (100, 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_honoured_only_from_trusted_proxies() {
    let routes = || RouteTable::new().default_limits(Limits::new(vec![rule("api", "1/hour")]));
    let c = client();
    // Untrusted peer: a client cannot pick its own key.
    let addr = serve(
        app(policy(routes(), KeyExtractor::new(KeySource::Ip))),
        true,
    )
    .await;
    assert_eq!(
        get_path(&c, addr, "/", Some("203.0.113.1")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_path(&c, addr, "/", Some("203.0.113.2")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Behind a trusted proxy (the loopback peer), each forwarded client has its own limit.
    let keys = KeyExtractor::new(KeySource::Ip)
        .proxies(ClientIpPolicy::new().trust(["127.0.0.1"]).unwrap());
    let addr = serve(app(policy(routes(), keys)), true).await;
    assert_eq!(
        get_path(&c, addr, "/", Some("203.0.113.1")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_path(&c, addr, "/", Some("203.0.113.2")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_path(&c, addr, "/", Some("203.0.113.1")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_read_their_decision() {
    let routes = RouteTable::new().default_limits(Limits::new(vec![rule("api", "10/minute")]));
    let addr = serve(app(policy(routes, KeyExtractor::new(KeySource::Ip))), true).await;
    assert_eq!(get_path(&client(), addr, "/decision", None).await.body, "9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_layer_limits_one_route_only() {
    let limited = policy(
        RouteTable::new().default_limits(Limits::new(vec![rule("export", "1/hour")])),
        KeyExtractor::new(KeySource::Ip),
    );
    let app = Router::new()
        .route("/export", get(|| async { "export" }))
        .route_layer(RateLimitLayer::new(limited))
        .route("/free", get(|| async { "free" }));
    let addr = serve(app, true).await;
    let c = client();
    assert_eq!(
        get_path(&c, addr, "/export", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_path(&c, addr, "/export", None).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    for _ in 0..3 {
        assert_eq!(
            get_path(&c, addr, "/free", None).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_connect_info_the_layer_refuses_loudly() {
    let routes = RouteTable::new().default_limits(Limits::new(vec![rule("api", "10/minute")]));
    let addr = serve(app(policy(routes, KeyExtractor::new(KeySource::Ip))), false).await;
    let r = get_path(&client(), addr, "/", None).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        r.body.contains("into_make_service_with_connect_info"),
        "{}",
        r.body
    );
}
