//! Benchmarks of ratekeeper against its peers live in `benches/`; run them with
//! `cargo xtask bench`. This library holds what the benches and the profiling
//! example share.

use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use axum::Router;
use axum::routing::get;
use ratekeeper_axum::RateLimitLayer;
use ratekeeper_core::{Algorithm, Limiter, Quota, Rule};
use ratekeeper_http::{
    HeaderStyle, HttpPolicy, KeyExtractor, KeySource, Limits, ResetFormat, RouteTable,
};
use ratekeeper_memory::MemoryStorage;

/// Runs a future that completes without ever waiting (a memory-store
/// decision), polling it in place: no executor overhead in the figures.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// The HTTP benchmark's quota: high enough that nothing is denied.
pub const RATE: u64 = 1_000_000;

/// The app the HTTP benchmark serves: `GET /` answering "hello" behind no
/// limiter (`none`), our layer on the memory store (the modes of
/// [`our_policy`]), or tower_governor (`governor`), all with the same GCRA
/// quota, keyed by peer address.
pub fn http_app(mode: &str) -> Result<Router, Box<dyn std::error::Error>> {
    let router = Router::new().route("/", get(|| async { "hello" }));
    if let Some(policy) = our_policy(mode) {
        return Ok(router.layer(RateLimitLayer::new(policy?)));
    }
    Ok(match mode {
        "none" => router,
        "governor" => {
            let config = tower_governor::governor::GovernorConfigBuilder::default()
                .per_nanosecond(1_000_000_000 / RATE)
                .burst_size(RATE as u32)
                .finish()
                .ok_or("tower_governor rejected the quota")?;
            router.layer(tower_governor::GovernorLayer::new(Arc::new(config)))
        }
        other => {
            return Err(format!(
                "unknown mode {other:?}: none, ours, ours+decision, ours-headers or governor"
            )
            .into());
        }
    })
}

/// Our policy in a benchmark `mode`, `None` for a mode without it:
/// - `ours`: what the governor adapters do, no rate-limit headers and no
///   decision for handlers;
/// - `ours+decision`: the policy's default, the decision handed to handlers;
/// - `ours-headers`: `ours` with the IETF headers.
pub fn our_policy(mode: &str) -> Option<Result<HttpPolicy, Box<dyn std::error::Error>>> {
    let (headers, decision) = match mode {
        "ours" => (false, false),
        "ours+decision" => (false, true),
        "ours-headers" => (true, false),
        _ => return None,
    };
    Some(bench_policy(headers, decision))
}

/// The policy every HTTP benchmark server applies: GCRA at [`RATE`] per
/// second with a burst of [`RATE`], keyed by peer address, on the memory
/// store; IETF headers or none; the decision for handlers or not.
pub fn bench_policy(
    headers: bool,
    decision: bool,
) -> Result<HttpPolicy, Box<dyn std::error::Error>> {
    let rule = Rule::new(
        "bench",
        Algorithm::Gcra,
        Quota::per_second(RATE)?.with_burst(RATE)?,
    )?;
    let routes = RouteTable::new().default_limits(Limits::new(vec![rule]));
    let style = if headers {
        HeaderStyle::Ietf
    } else {
        HeaderStyle::None
    };
    Ok(HttpPolicy::new(
        Limiter::new(Arc::new(MemoryStorage::new())),
        routes,
        KeyExtractor::new(KeySource::Ip),
    )
    .headers(style, ResetFormat::Seconds)
    .decision_for_handlers(decision))
}

/// The mean time of one call of the decision engine (`FCALL`, or the
/// scripts: `EVAL`, `EVALSHA`) on `server` since its last `CONFIG
/// RESETSTAT`, µs, from `INFO commandstats`.
pub fn script_us_per_call(server: &ratekeeper_testkit::redis::RedisServer) -> f64 {
    let (calls, usec) = server.script_totals();
    usec as f64 / calls.max(1) as f64
}
