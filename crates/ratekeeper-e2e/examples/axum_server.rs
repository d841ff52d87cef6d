//! An axum server protected by ratekeeper: `GET /`, `GET /login` (200
//! with `X-Password: good`, 401 otherwise) and `GET /slow?ms=N` (answers
//! after N ms) are limited, `GET /health` is exempt. `--count-when 401`
//! counts only the failed logins; `--concurrency N` holds at most N
//! requests in flight per key.
//!
//! ```text
//! cargo run -p ratekeeper-e2e --example axum_server -- \
//!     --listen 127.0.0.1:8080 --storage memory:// --algorithm gcra \
//!     --limit 100 --window 60s --key ip --headers ietf --trust 10.0.0.0/8,127.0.0.1
//! ```
//!
//! The flags are the same for `actix_server` and `rocket_server` (see
//! `examples/common/server.rs`). `--storage` takes any URL
//! `ratekeeper::from_url` accepts (`memory://`, `sqlite://…`, `redis://…`:
//! this crate enables every store).

#[path = "common/server.rs"]
mod server;

use std::error::Error;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use ratekeeper::axum::RateLimitLayer;

async fn login(headers: axum::http::HeaderMap) -> impl axum::response::IntoResponse {
    let (status, body) = server::login(headers.get("x-password").and_then(|v| v.to_str().ok()));
    (
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::UNAUTHORIZED),
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let o = server::parse_args()?;
    let policy = server::policy(&o).await?;
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    server::HELLO,
                )
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .route("/login", get(login))
        .route(
            "/slow",
            get(|uri: axum::http::Uri| async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    server::slow(uri.query()).await,
                )
            }),
        )
        .layer(RateLimitLayer::new(policy));
    let listener = tokio::net::TcpListener::bind(o.listen).await?;
    println!("{}", server::describe(&o, listener.local_addr()?));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down");
    })
    .await?;
    Ok(())
}
