//! Profiling aid: the HTTP benchmark's app called in a loop without a
//! network, to measure and `perf record` what the layer adds per request.
//! `cargo run --release -p ratekeeper-bench --example profile_http -- [none|ours|ours+decision|ours-headers|governor|policy|response|response+fields] [N]`
//! (`policy` times `HttpPolicy::check_now` alone, without axum;
//! `response` makes the handler's response alone, and `response+fields`
//! adds two IETF fields to it at the least cost the `http` crate allows:
//! the floor under what any middleware pays for them.)
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

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
    if mode == "response" || mode == "response+fields" {
        response_alone(mode == "response+fields", n);
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

/// The handler's response made and dropped, with (`fields`) or without
/// two IETF rate-limit fields added at the least cost `http` allows: the
/// `RateLimit-Policy` value made once and cloned (a reference count), the
/// `RateLimit` value written per request into a stack buffer with `itoa`
/// and checked as `http` checks every value, each inserted by a name made
/// once. The difference is the floor under what any middleware pays for
/// the two fields.
fn response_alone(fields: bool, n: u32) {
    use axum::response::IntoResponse;
    use http::{HeaderName, HeaderValue};
    let ratelimit = HeaderName::from_static("ratelimit");
    let policy_name = HeaderName::from_static("ratelimit-policy");
    let policy = HeaderValue::from_static("\"bench\";q=1000000;w=1");
    let start = Instant::now();
    for i in 0..n {
        let mut response = "hello".into_response();
        if fields {
            let mut buf = [0u8; 64];
            let mut len = 0;
            let mut put = |bytes: &[u8]| {
                buf[len..len + bytes.len()].copy_from_slice(bytes);
                len += bytes.len();
            };
            let mut digits = itoa::Buffer::new();
            put(b"\"bench\";r=");
            put(digits.format(999_999 - i % 1000).as_bytes());
            put(b";t=0");
            let value = HeaderValue::from_bytes(&buf[..len]).unwrap();
            let headers = response.headers_mut();
            headers.insert(ratelimit.clone(), value);
            headers.insert(policy_name.clone(), policy.clone());
        }
        std::hint::black_box(response);
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("response (fields: {fields}): {ns:.0} ns per response");
}
