//! A real actix-web server for the tests, on its own thread and runtime.
#![allow(dead_code, reason = "each test binary uses part of this")]
#![allow(clippy::expect_used, reason = "test harness set-up")]

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
    HttpHarness, Server, calls_body, count_call, decision_body, login, suite_identity,
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
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(calls.clone())
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
