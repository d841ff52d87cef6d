//! The shared HTTP behaviour suite on a real axum server: over the memory
//! store (decided without a future) and over SQLite (decided in one).
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test harness set-up; a handler that panics"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use axum::Router;
use axum::extract::Request;
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use axum::routing::get;
use ratekeeper_axum::{RateLimitDecision, RateLimitLayer};
use ratekeeper_core::Storage;
use ratekeeper_http::SharedPolicy;
use ratekeeper_testkit::http::{
    HttpHarness, InFlight, Server, calls_body, count_call, decision_body, login, most_body, slow,
    stream_delay, suite_identity,
};

/// The app's own authentication, as the suite expects it: `x-user` (and
/// `x-tier`) name the caller.
async fn auth(mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let identity = suite_identity(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    if let Some(identity) = identity {
        request.extensions_mut().insert(identity);
    }
    next.run(request).await
}

async fn sign_in(headers: http::HeaderMap) -> (http::StatusCode, &'static str) {
    let (status, body) = login(headers.get("x-password").and_then(|v| v.to_str().ok()));
    (http::StatusCode::from_u16(status).expect("a status"), body)
}

/// `/stream`: `first ` at once, `second` after the pause asked for.
async fn stream(uri: http::Uri) -> axum::body::Body {
    use tokio_stream::StreamExt;
    let delay = stream_delay(uri.query());
    let chunks = tokio_stream::iter([false, true]).then(move |late| async move {
        if late {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(&b"second"[..])
        } else {
            Ok(&b"first "[..])
        }
    });
    axum::body::Body::from_stream(chunks)
}

async fn panics() -> &'static str {
    panic!("a handler that panics")
}

async fn decision(decision: Option<RateLimitDecision>) -> String {
    decision_body(decision.as_ref().map(|d| d.decision()))
}

/// Stops the server when the scenario is done.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Axum {
    sqlite: bool,
}

#[async_trait]
impl HttpHarness for Axum {
    async fn serve(&self, policy: SharedPolicy) -> Server {
        let calls = Arc::new(AtomicU64::new(0));
        let (counted, read) = (calls.clone(), calls);
        let flight = Arc::new(InFlight::default());
        let (slow_flight, most_flight) = (flight.clone(), flight);
        let app = Router::new()
            .route(
                "/slow",
                get(move |uri: http::Uri| async move { slow(uri.query(), &slow_flight).await }),
            )
            .route("/most", get(move || async move { most_body(&most_flight) }))
            .route("/panic", get(panics))
            .route("/stream", get(stream))
            .route("/counted", get(move || async move { count_call(&counted) }))
            .route("/calls", get(move || async move { calls_body(&read) }))
            .route("/", get(|| async { "ok" }))
            .route("/health", get(|| async { "ok" }))
            .route(
                "/users/{id}",
                get(|| async { "user" }).post(|| async { "user" }),
            )
            .route("/decision", get(decision))
            .route("/login", get(sign_in))
            .layer(RateLimitLayer::new(policy))
            .layer(from_fn(auth));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        Server {
            addr,
            guard: Box::new(Abort(task)),
        }
    }

    async fn store(&self) -> Arc<dyn Storage> {
        if self.sqlite {
            Arc::new(ratekeeper_sqlite::SqliteStorage::in_memory().expect("a SQLite store"))
        } else {
            Arc::new(ratekeeper_memory::MemoryStorage::new())
        }
    }
}

mod memory {
    ratekeeper_testkit::http_behaviour_tests!(super::Axum { sqlite: false });
}

mod sqlite {
    ratekeeper_testkit::http_behaviour_tests!(super::Axum { sqlite: true });
}
