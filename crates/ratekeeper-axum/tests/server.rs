//! What is particular to the tower layer, on real servers through real
//! clients: `route_layer` and nested routers, a missing peer address, the
//! decision extractor and charging more from a handler, a plain hyper service,
//! and gRPC through tonic. The behaviour every adapter shares is in
//! `behaviour.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use ratekeeper_axum::{RateLimitDecision, RateLimitLayer};
use ratekeeper_core::{Algorithm, Limiter, Rule};
use ratekeeper_http::{HttpPolicy, KeyExtractor, KeySource, Limits, RouteTable};
use ratekeeper_memory::MemoryStorage;
use ratekeeper_testkit::http::TestClient;

fn rule(name: &str, quota: &str) -> Rule {
    Rule::new(name, Algorithm::Gcra, quota.parse().unwrap()).unwrap()
}

fn policy(quota: &str) -> HttpPolicy {
    HttpPolicy::new(
        Limiter::new(Arc::new(MemoryStorage::new())),
        RouteTable::new().default_limits(Limits::new(vec![rule("api", quota)])),
        KeyExtractor::new(KeySource::Ip),
    )
}

async fn serve(app: Router, connect_info: bool) -> TestClient {
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
    TestClient::new(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_layer_limits_one_route_only() {
    let app = Router::new()
        .route("/export", get(|| async { "export" }))
        .route_layer(RateLimitLayer::new(policy("1/hour")))
        .route("/free", get(|| async { "free" }));
    let c = serve(app, true).await;
    assert_eq!(c.get("/export", &[]).await.status, 200);
    assert_eq!(c.get("/export", &[]).await.status, 429);
    for _ in 0..3 {
        assert_eq!(c.get("/free", &[]).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_router_is_limited_by_its_full_route() {
    let routes = RouteTable::new()
        .route(
            "/api/users/{id}",
            &[],
            Limits::new(vec![rule("users", "1/hour")]),
        )
        .unwrap();
    let policy = HttpPolicy::new(
        Limiter::new(Arc::new(MemoryStorage::new())),
        routes,
        KeyExtractor::new(KeySource::Route),
    );
    let api = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .layer(RateLimitLayer::new(policy));
    let app = Router::new()
        .nest("/api", api)
        .route("/", get(|| async { "home" }));
    let c = serve(app, true).await;
    assert_eq!(c.get("/api/users/1", &[]).await.status, 200);
    // Keyed by route: every id shares the route's limit.
    assert_eq!(c.get("/api/users/2", &[]).await.status, 429);
    assert_eq!(c.get("/", &[]).await.status, 200);
    assert_eq!(c.get("/", &[]).await.status, 200);
}

/// The matched route is looked up only for a policy that reads it: a hook
/// does (it sees the view), and gets the pattern; so does an exemption
/// predicate, which exempts by pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_and_predicates_see_the_matched_route() {
    let app = |policy| {
        Router::new()
            .route("/users/{id}", get(|| async { "user" }))
            .route("/health/{part}", get(|| async { "ok" }))
            .layer(RateLimitLayer::new(policy))
    };
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let hooked = policy("1/hour").on_blocked(Arc::new(move |view, _| {
        record.lock().unwrap().push(view.route.map(str::to_owned));
    }));
    let c = serve(app(hooked), true).await;
    assert_eq!(c.get("/users/1", &[]).await.status, 200);
    assert_eq!(c.get("/users/2", &[]).await.status, 429);
    assert_eq!(
        *seen.lock().unwrap(),
        [Some("/users/{id}".to_owned())],
        "the hook saw the pattern"
    );

    let routes = RouteTable::new()
        .default_limits(Limits::new(vec![rule("api", "1/hour")]))
        .exempt_when(Arc::new(|view: &ratekeeper_http::RequestView<'_>| {
            view.route == Some("/health/{part}")
        }));
    let exempting = HttpPolicy::new(
        Limiter::new(Arc::new(MemoryStorage::new())),
        routes,
        KeyExtractor::new(KeySource::Ip),
    );
    let c = serve(app(exempting), true).await;
    for _ in 0..3 {
        assert_eq!(c.get("/health/live", &[]).await.status, 200);
    }
    assert_eq!(c.get("/users/1", &[]).await.status, 200);
    assert_eq!(c.get("/users/1", &[]).await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_peer_address_the_layer_refuses_loudly() {
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(policy("10/minute")));
    let r = serve(app, false).await.get("/", &[]).await;
    assert_eq!(r.status, 500);
    assert!(
        r.body.contains("into_make_service_with_connect_info"),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_extractor_says_when_the_layer_is_missing() {
    async fn handler(d: RateLimitDecision) -> String {
        d.decision().remaining().to_string()
    }
    let app = Router::new()
        .route("/limited", get(handler))
        .route_layer(RateLimitLayer::new(policy("10/minute")))
        .route("/outside", get(handler));
    let c = serve(app, true).await;
    assert_eq!(c.get("/limited", &[]).await.body, "9");
    let r = c.get("/outside", &[]).await;
    assert_eq!(r.status, 500);
    assert!(r.body.contains("RateLimitLayer"), "{}", r.body);
}

/// A handler charges more once it knows the real cost (here, one unit per
/// 1 kB of response): the next requests see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_can_charge_more_after_the_fact() {
    async fn report(d: RateLimitDecision) -> String {
        let body = "x".repeat(5_000);
        let extra = body.len() as u64 / 1_000;
        match d.charge(extra).await {
            Ok(charged) if charged.is_allowed() => {
                format!("charged {extra}, {} left", charged.remaining())
            }
            Ok(denied) => format!("too large: {:?}", denied.retry_after()),
            Err(e) => format!("error: {e}"),
        }
    }
    let app = Router::new()
        .route("/report", get(report))
        .layer(RateLimitLayer::new(policy("10/hour")));
    let c = serve(app, true).await;
    // 1 for the request, 5 charged: 4 left.
    assert_eq!(c.get("/report", &[]).await.body, "charged 5, 4 left");
    // The next request fits (3 left) but its 5 more do not: nothing charged.
    assert!(c.get("/report", &[]).await.body.starts_with("too large"));
    let r = c.get("/report", &[]).await;
    assert!(r.body.starts_with("too large"), "{}", r.body);
    assert!(
        r.header("ratelimit").is_some_and(|v| v.contains("r=2")),
        "{:?}",
        r.header("ratelimit")
    );
}

/// Any tower HTTP service, here a plain hyper server whose connection loop
/// records the peer address in the request extensions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_hyper_service() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::{Layer, ServiceExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limited = RateLimitLayer::new(policy("2/hour")).layer(tower::service_fn(
        |_: http::Request<hyper::body::Incoming>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                hyper::body::Bytes::from("hello"),
            )))
        },
    ));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let service = limited.clone().map_request(move |mut r: http::Request<_>| {
                r.extensions_mut().insert(peer);
                r
            });
            tokio::spawn(async move {
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    let c = TestClient::new(addr);
    assert_eq!(c.get("/", &[]).await.body, "hello");
    assert_eq!(c.get("/", &[]).await.status, 200);
    let r = c.get("/", &[]).await;
    assert_eq!(r.status, 429);
    assert!(r.body.contains("rate_limited"));
}

/// A service whose body type the layer cannot write goes behind it with its
/// body wrapped in `ResponseBody::inner`; denials come back in the wrapper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_type_of_its_own_goes_behind_the_layer_wrapped() {
    use http_body_util::BodyExt;
    use ratekeeper_axum::ResponseBody;
    use tower::{Service, ServiceBuilder, ServiceExt};

    // `MapErr<Full<Bytes>, _>` is no `AnswerBody`.
    let inner = tower::service_fn(|_: http::Request<()>| async {
        let body = http_body_util::Full::new(bytes::Bytes::from("hello"))
            .map_err(|never| -> std::io::Error { match never {} });
        Ok::<_, std::convert::Infallible>(http::Response::new(body))
    });
    let mut limited = ServiceBuilder::new()
        .layer(RateLimitLayer::new(policy("1/hour")))
        .map_response(|r: http::Response<_>| r.map(ResponseBody::inner))
        .service(inner);
    let peer: std::net::SocketAddr = "192.0.2.7:5000".parse().unwrap();
    let request = || {
        let mut r = http::Request::new(());
        r.extensions_mut().insert(peer);
        r
    };
    // One unit an hour: the handler's body, then the layer's denial, both
    // in the wrapper.
    for (status, text) in [(200, "hello"), (429, "rate_limited")] {
        let response = limited
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains(text), "{body:?}");
    }
}

/// gRPC: a denial is the status RESOURCE_EXHAUSTED, with the wait in its
/// message and the rate-limit metadata; a tonic client sees a `Status`.
/// (Feature `tonic`: the layer answers in tonic's own body type.)
#[cfg(feature = "tonic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_denials_are_resource_exhausted() {
    use tonic::transport::server::TcpConnectInfo;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let (_reporter, health) = tonic_health::server::health_reporter();
    let layer = RateLimitLayer::new(policy("2/hour"))
        .peer(|e| e.get::<TcpConnectInfo>()?.remote_addr().map(|a| a.ip()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let check = || HealthCheckRequest {
        service: String::new(),
    };
    for _ in 0..2 {
        let response = client.check(check()).await.unwrap();
        assert!(response.metadata().get("ratelimit").is_some());
    }
    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("retry in"),
        "{}",
        status.message()
    );
    assert!(status.metadata().get("retry-after").is_some());
}
