//! Profiling aid: the HTTP benchmark's app called in a loop without a
//! network, to measure and `perf record` what the layer adds per request.
//! `cargo run --release -p ratekeeper-bench --example profile_http -- [none|ours|ours+decision|ours-headers|governor|policy] [N]`
//! (`policy` times `HttpPolicy::check_now` alone, without axum.)
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::Request;
use tower::{Service, ServiceExt};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "ours".to_owned());
    let n: u32 = std::env::args()
        .nth(2)
        .map_or(2_000_000, |s| s.parse().unwrap());
    if mode == "policy" {
        policy_alone(n);
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut app = ratekeeper_bench::http_app(&mode).unwrap();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let start = Instant::now();
        for _ in 0..n {
            let mut request = Request::get("/").body(Body::empty()).unwrap();
            request.extensions_mut().insert(ConnectInfo(peer));
            let service = ServiceExt::<Request<Body>>::ready(&mut app).await.unwrap();
            let response = service.call(request).await.unwrap();
            assert!(response.status().is_success());
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!("{mode}: {ns:.0} ns per request");
    });
}

/// The policy's decision for the benchmark's request, with no framework.
fn policy_alone(n: u32) {
    let policy = ratekeeper_bench::bench_policy(false, false).unwrap();
    let headers: &[(&str, &[u8])] = &[("host", b"x"), ("user-agent", b"wrk")];
    let view = ratekeeper_http::RequestView {
        method: "GET",
        path: "/",
        route: Some("/"),
        peer: "127.0.0.1".parse().unwrap(),
        headers: &headers,
        identity: None,
    };
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(policy.check_now(std::hint::black_box(&view)));
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("policy: {ns:.0} ns per decision");
}
