//! The server `cargo xtask bench http` loads with wrk:
//! `http-bench-server none|ours|governor PORT`. `GET /` answers "hello"
//! behind no limiter, our layer (memory store), or tower_governor, all with
//! the same quota (GCRA, 1 000 000 per second, burst 1 000 000: high enough
//! that nothing is denied, so the figures compare per-request overhead).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use ratelimit_axum::RateLimitLayer;
use ratelimit_core::http::{
    HeaderStyle, HttpPolicy, KeyExtractor, KeySource, Limits, ResetFormat, RouteTable,
};
use ratelimit_core::{Algorithm, Limiter, Quota, Rule};
use ratelimit_memory::MemoryStorage;

const RATE: u64 = 1_000_000;

fn app(mode: &str) -> Result<Router, Box<dyn std::error::Error>> {
    let router = Router::new().route("/", get(|| async { "hello" }));
    Ok(match mode {
        "none" => router,
        // `ours` sends no rate-limit headers, like tower_governor's default;
        // `ours-headers` adds the IETF fields.
        "ours" | "ours-headers" => {
            let rule = Rule::new(
                "bench",
                Algorithm::Gcra,
                Quota::per_second(RATE)?.with_burst(RATE)?,
            )?;
            let routes = RouteTable::new().default_limits(Limits::new(vec![rule]));
            let style = if mode == "ours" {
                HeaderStyle::None
            } else {
                HeaderStyle::Ietf
            };
            let policy = HttpPolicy::new(
                Limiter::new(Arc::new(MemoryStorage::new())),
                routes,
                KeyExtractor::new(KeySource::Ip),
            )
            .headers(style, ResetFormat::Seconds);
            router.layer(RateLimitLayer::new(policy))
        }
        "governor" => {
            let config = tower_governor::governor::GovernorConfigBuilder::default()
                .per_nanosecond(1_000_000_000 / RATE)
                .burst_size(RATE as u32)
                .finish()
                .ok_or("tower_governor rejected the quota")?;
            router.layer(tower_governor::GovernorLayer::new(Arc::new(config)))
        }
        other => return Err(format!("unknown mode {other:?}: none, ours or governor").into()),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "none".to_owned());
    let port: u16 = args.next().unwrap_or_else(|| "0".to_owned()).parse()?;
    let app = app(&mode)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
