//! A real actix-web server for the tests, on its own thread and runtime.
#![allow(dead_code, reason = "each test binary uses part of this")]
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test harness set-up; a handler that panics"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, Error, HttpMessage, HttpServer, web};
use async_trait::async_trait;
use ratekeeper_actix::{RateLimit, RateLimitDecision};
use ratekeeper_core::Storage;
use ratekeeper_http::SharedPolicy;
use ratekeeper_testkit::http::{
    HttpHarness, InFlight, Server, calls_body, count_call, decision_body, login, most_body, slow,
    stream_delay, suite_identity,
};

/// The app's own authentication, as the suite expects it: `x-user` (and
/// `x-tier`) name the caller.
async fn auth(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let headers = request.headers();
    let identity = suite_identity(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    if let Some(identity) = identity {
        request.extensions_mut().insert(identity);
    }
    next.call(request).await
}

async fn decision(decision: Option<RateLimitDecision>) -> String {
    decision_body(decision.as_ref().map(|d| d.decision()))
}

async fn sign_in(request: actix_web::HttpRequest) -> actix_web::HttpResponse {
    let password = request
        .headers()
        .get("x-password")
        .and_then(|v| v.to_str().ok());
    let (status, body) = login(password);
    let status = actix_web::http::StatusCode::from_u16(status).expect("a status");
    actix_web::HttpResponse::build(status).body(body)
}

async fn counted(calls: web::Data<AtomicU64>) -> String {
    count_call(&calls)
}

async fn read_calls(calls: web::Data<AtomicU64>) -> String {
    calls_body(&calls)
}

async fn slow_handler(
    request: actix_web::HttpRequest,
    flight: web::Data<InFlight>,
) -> &'static str {
    slow(Some(request.query_string()), &flight).await
}

async fn most(flight: web::Data<InFlight>) -> String {
    most_body(&flight)
}

/// `/stream`: `first ` at once, `second` after the pause asked for.
async fn stream(request: actix_web::HttpRequest) -> actix_web::HttpResponse {
    use tokio_stream::StreamExt;
    let delay = stream_delay(Some(request.query_string()));
    let chunks = tokio_stream::iter([false, true]).then(move |late| async move {
        if late {
            tokio::time::sleep(delay).await;
            Ok::<_, Error>(bytes::Bytes::from_static(b"second"))
        } else {
            Ok(bytes::Bytes::from_static(b"first "))
        }
    });
    actix_web::HttpResponse::Ok().streaming(chunks)
}

async fn panics() -> &'static str {
    panic!("a handler that panics")
}

/// Stops the server when the scenario is done.
pub(crate) struct Stop(pub(crate) ServerHandle);

impl Drop for Stop {
    fn drop(&mut self) {
        drop(self.0.stop(false));
    }
}

/// Starts the suite's app behind `limit` with `workers` workers; returns its
/// address and handle.
pub(crate) async fn start(limit: RateLimit, workers: usize) -> (SocketAddr, ServerHandle) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let calls = web::Data::new(AtomicU64::new(0));
    let flight = web::Data::new(InFlight::default());
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(calls.clone())
                    .app_data(flight.clone())
                    .route("/counted", web::get().to(counted))
                    .route("/calls", web::get().to(read_calls))
                    .wrap(limit.clone())
                    .wrap(from_fn(auth))
                    .route("/", web::get().to(|| async { "ok" }))
                    .route("/health", web::get().to(|| async { "ok" }))
                    .service(
                        web::resource("/users/{id}")
                            .route(web::get().to(|| async { "user" }))
                            .route(web::post().to(|| async { "user" })),
                    )
                    .route("/decision", web::get().to(decision))
                    .route("/login", web::get().to(sign_in))
                    .route("/slow", web::get().to(slow_handler))
                    .route("/most", web::get().to(most))
                    .route("/panic", web::get().to(panics))
                    .route("/stream", web::get().to(stream))
            })
            .workers(workers)
            .bind(("127.0.0.1", 0))
            .expect("a loopback port");
            let addr = *server.addrs().first().expect("an address");
            let server = server.run();
            let _ = tx.send((addr, server.handle()));
            let _ = server.await;
        });
    });
    rx.await.expect("the server started")
}

pub(crate) struct Actix {
    pub(crate) sqlite: bool,
}

#[async_trait]
impl HttpHarness for Actix {
    async fn serve(&self, policy: SharedPolicy) -> Server {
        let (addr, handle) = start(RateLimit::new(policy), 2).await;
        Server {
            addr,
            guard: Box::new(Stop(handle)),
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
