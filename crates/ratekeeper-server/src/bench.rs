//! `--bench-in-process N`, for `cargo xtask bench server`: N decisions
//! through the gRPC service and N through the HTTP router, called in this
//! process as the listeners would call them (the protocol's framing,
//! decoding, the decision, encoding), without sockets. Prints
//! `grpc: NS ns per decision` and `http: NS ns per decision`: the CPU the
//! service spends per decision, free of the network stack.

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use http_body_util::BodyExt as _;
use prost::Message as _;
use tower::ServiceExt as _;

use crate::{App, grpc};

/// The descriptor value of decision `i`: 1 000 values, as the bench's
/// clients send.
fn value(i: usize) -> String {
    format!("t0-{}", i % 1_000)
}

fn grpc_body(i: usize) -> Vec<u8> {
    let request = RateLimitRequest {
        domain: "bench".to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "client".to_owned(),
                value: value(i),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 0,
    };
    let message = request.encode_to_vec();
    // gRPC framing: not compressed, then the length.
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&message);
    framed
}

pub(crate) async fn run(app: Arc<App>, n: usize) -> Result<(), String> {
    let grpc = RateLimitServiceServer::new(grpc::Grpc(app.clone()));
    let router = crate::http::router(app);
    for round in 0..2 {
        let started = Instant::now();
        for i in 0..n {
            let request =
                http::Request::post("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(tonic::body::Body::new(http_body_util::Full::new(
                        bytes::Bytes::from(grpc_body(i)),
                    )))
                    .map_err(|e| e.to_string())?;
            let response = grpc
                .clone()
                .oneshot(request)
                .await
                .map_err(|e| e.to_string())?;
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            let status = body
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.as_bytes().to_vec());
            if status.as_deref() != Some(b"0") {
                return Err(format!("a gRPC call failed: {status:?}"));
            }
        }
        let grpc_ns = started.elapsed().as_nanos() as f64 / n as f64;
        let started = Instant::now();
        for i in 0..n {
            let body = format!(
                r#"{{"domain":"bench","descriptors":[{{"entries":[{{"key":"client","value":"{}"}}]}}]}}"#,
                value(i)
            );
            let request = http::Request::post("/v1/check")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .map_err(|e| e.to_string())?;
            let response = router
                .clone()
                .oneshot(request)
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("an HTTP call failed: {}", response.status()));
            }
            let _ = response.into_body().collect().await;
        }
        let http_ns = started.elapsed().as_nanos() as f64 / n as f64;
        // The first round warms up; the second is reported.
        if round == 1 {
            println!("grpc: {grpc_ns:.0} ns per decision");
            println!("http: {http_ns:.0} ns per decision");
        }
    }
    Ok(())
}
