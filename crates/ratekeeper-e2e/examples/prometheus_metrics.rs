//! The limiter's metrics in Prometheus format, and its status, next to an
//! axum app it protects.
//!
//! ```text
//! cargo run -p ratekeeper-e2e --example prometheus_metrics -- \
//!     --listen 127.0.0.1:8080 --limit 5 --window 10s
//! curl localhost:8080/            # limited
//! curl localhost:8080/metrics     # ratelimit_decisions_total{rule="api",outcome="denied"} …
//! curl localhost:8080/status      # {"backend":"memory","healthy":true,…}
//! ```
//!
//! Takes the same flags as `axum_server` (see `examples/common/server.rs`),
//! `--store-timeout` and `--deny-cache` among them, so the breaker and the
//! deny cache can be watched at work against a Redis store
//! (`--storage redis://…`). `/metrics` and
//! `/status` are outside the limiter.

#[path = "common/server.rs"]
mod server;

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusBuilder;
use ratekeeper::axum::RateLimitLayer;
use ratekeeper::observe;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let o = server::parse_args()?;
    // The recorder first: the limiter's metrics register on first use.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(observe::STORE_DURATION.to_owned()),
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
        )?
        .install_recorder()?;
    observe::describe();
    let policy = server::policy(&o).await?;
    let store = policy.current().limiter().storage().clone();

    let limited = Router::new()
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
        .layer(RateLimitLayer::new(policy));
    let app = limited
        .route(
            "/metrics",
            get(move || {
                let text = prometheus.render();
                async move { text }
            }),
        )
        .route(
            "/status",
            get(move || {
                let store = store.clone();
                async move {
                    let status = observe::status(&*store, Duration::from_millis(500)).await;
                    let code = if status.healthy {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        code,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        status.to_json(),
                    )
                }
            }),
        );
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
