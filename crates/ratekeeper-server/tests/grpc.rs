//! Envoy's rate-limit API, through Envoy's generated client, against the
//! real binary serving `examples/server/envoy.yaml` on the memory store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use support::{Server, TempDir, descriptor, descriptor_hits, request, write};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/server/envoy.yaml"
);

fn ok(code: i32) -> bool {
    code == Code::Ok as i32
}

fn over(code: i32) -> bool {
    code == Code::OverLimit as i32
}

async fn ask(
    client: &mut envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient<tonic::transport::Channel>,
    req: RateLimitRequest,
) -> RateLimitResponse {
    client.should_rate_limit(req).await.unwrap().into_inner()
}

#[tokio::test]
async fn envoy_example_file_behaves_as_documented() {
    let server = Server::start(&["--config", EXAMPLE]);
    let mut c = server.client().await;

    // Nested: 5 logins per minute per address, each address its own counter.
    for i in 0..5 {
        let r = ask(
            &mut c,
            request(
                "edge",
                vec![descriptor(&[
                    ("remote_address", "203.0.113.9"),
                    ("path", "/login"),
                ])],
            ),
        )
        .await;
        assert!(ok(r.overall_code), "login {i}");
        let s = &r.statuses[0];
        let limit = s.current_limit.as_ref().unwrap();
        assert_eq!(
            (limit.requests_per_unit, limit.unit),
            (5, Unit::Minute as i32)
        );
        assert_eq!(s.limit_remaining, 4 - i);
        assert!(s.duration_until_reset.is_some());
    }
    let r = ask(
        &mut c,
        request(
            "edge",
            vec![descriptor(&[
                ("remote_address", "203.0.113.9"),
                ("path", "/login"),
            ])],
        ),
    )
    .await;
    assert!(over(r.overall_code) && over(r.statuses[0].code));
    // Another address has its own counter.
    let r = ask(
        &mut c,
        request(
            "edge",
            vec![descriptor(&[
                ("remote_address", "203.0.113.10"),
                ("path", "/login"),
            ])],
        ),
    )
    .await;
    assert!(ok(r.overall_code) && r.statuses[0].limit_remaining == 4);

    // A value refused outright; an unlimited value; a descriptor nothing
    // matches; a domain nobody configured.
    let r = ask(
        &mut c,
        request(
            "edge",
            vec![descriptor(&[("remote_address", "198.51.100.66")])],
        ),
    )
    .await;
    assert!(over(r.overall_code));
    let r = ask(
        &mut c,
        request("edge", vec![descriptor(&[("path", "/healthz")])]),
    )
    .await;
    assert!(ok(r.overall_code) && r.statuses[0].current_limit.is_none());
    let r = ask(
        &mut c,
        request("edge", vec![descriptor(&[("nothing", "here")])]),
    )
    .await;
    assert!(ok(r.overall_code) && r.statuses[0].current_limit.is_none());
    let r = ask(
        &mut c,
        request("elsewhere", vec![descriptor(&[("a", "b")])]),
    )
    .await;
    assert!(ok(r.overall_code) && r.statuses.len() == 1);

    // A prefix: 10 per hour for each path under /exports/.
    let mut req = request("edge", vec![descriptor(&[("path", "/exports/a.csv")])]);
    req.hits_addend = 10;
    assert!(ok(ask(&mut c, req.clone()).await.overall_code));
    req.hits_addend = 1;
    assert!(over(ask(&mut c, req).await.overall_code));
    let r = ask(
        &mut c,
        request("edge", vec![descriptor(&[("path", "/exports/b.csv")])]),
    )
    .await;
    assert!(ok(r.overall_code) && r.statuses[0].limit_remaining == 9);

    // Shadow mode: the free plan's 60 per minute is counted, never enforced.
    let free = || descriptor(&[("api_key", "k-1"), ("plan", "free")]);
    let mut req = request("edge", vec![free()]);
    req.hits_addend = 60;
    assert!(ok(ask(&mut c, req).await.overall_code));
    let r = ask(&mut c, request("edge", vec![free()])).await;
    assert!(
        ok(r.overall_code) && ok(r.statuses[0].code),
        "shadow mode never denies: {r:?}"
    );
    assert!(
        server
            .logs("over a limit in shadow mode", Duration::from_secs(5))
            .await
    );
}

#[tokio::test]
async fn all_or_nothing_and_hits_per_descriptor() {
    let dir = TempDir::new("grpc-aon");
    let file = write(
        &dir.0,
        "limits.yaml",
        "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: hour, requests_per_unit: 10}\n  - key: b\n    rate_limit: {unit: hour, requests_per_unit: 10}\n  - key: c\n    rate_limit: {unit: hour, requests_per_unit: 3}\n",
    );
    let server = Server::start(&["--config", &file]);
    let mut c = server.client().await;
    let three = |hits_c: u64| {
        request(
            "d",
            vec![
                descriptor(&[("a", "x")]),
                descriptor(&[("b", "x")]),
                descriptor_hits(&[("c", "x")], hits_c),
            ],
        )
    };
    let r = ask(&mut c, three(2)).await;
    assert!(ok(r.overall_code));
    let left: Vec<u32> = r.statuses.iter().map(|s| s.limit_remaining).collect();
    assert_eq!(left, [9, 9, 1]);
    // Two more on `c` would exceed it: nothing is consumed on `a` or `b`.
    let r = ask(&mut c, three(2)).await;
    assert!(over(r.overall_code));
    assert!(ok(r.statuses[0].code) && ok(r.statuses[1].code) && over(r.statuses[2].code));
    assert_eq!(
        r.statuses[0].limit_remaining, 9,
        "a denied request consumed nothing"
    );
    // hits_addend 0 on `c` looks without charging and never holds back the others.
    let r = ask(&mut c, three(0)).await;
    assert!(ok(r.overall_code));
    let left: Vec<u32> = r.statuses.iter().map(|s| s.limit_remaining).collect();
    assert_eq!(left, [8, 8, 1]);
    // The request's hits_addend applies to descriptors that do not say.
    let mut req = request(
        "d",
        vec![descriptor(&[("a", "y")]), descriptor_hits(&[("b", "y")], 1)],
    );
    req.hits_addend = 4;
    let r = ask(&mut c, req).await;
    let left: Vec<u32> = r.statuses.iter().map(|s| s.limit_remaining).collect();
    assert_eq!(left, [6, 9]);
    // A limit brought along by the request (Envoy's limit override).
    let mut d = descriptor(&[("z", "1")]);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 2,
        unit: envoy_types::pb::envoy::r#type::v3::RateLimitUnit::Minute as i32,
    });
    for expect_ok in [true, true, false] {
        let r = ask(&mut c, request("d", vec![d.clone()])).await;
        assert_eq!(ok(r.overall_code), expect_ok);
        assert_eq!(
            r.statuses[0]
                .current_limit
                .as_ref()
                .unwrap()
                .requests_per_unit,
            2
        );
    }
    // A limit brought along in an unknown unit, or of 0: refused.
    for (rpu, unit) in [(2, 0), (2, 99), (0, 2)] {
        let mut d = descriptor(&[("z", "2")]);
        d.limit = Some(RateLimitOverride {
            requests_per_unit: rpu,
            unit,
        });
        let err = c
            .should_rate_limit(request("d", vec![d]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{rpu} per {unit}");
    }
    // Giving units back (is_negative_hits) is refused unless `[server]
    // refunds` is on: a refund undoes a limit, as a reset does.
    let mut back = descriptor_hits(&[("c", "x")], 2);
    back.is_negative_hits = true;
    let err = c
        .should_rate_limit(request("d", vec![back.clone(), descriptor(&[("a", "x")])]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("refunds"), "{}", err.message());
    drop(server);
    let trusting = write(&dir.0, "server.toml", "[server]\nrefunds = true\n");
    let server = Server::start(&["--config", &file, "--config", &trusting]);
    let mut c = server.client().await;
    assert!(ok(ask(&mut c, three(2)).await.overall_code));
    assert!(ok(ask(
        &mut c,
        request("d", vec![descriptor(&[("a", "x")])])
    )
    .await
    .overall_code));
    // `c` gets its 2 back, and the request's other descriptors are decided
    // as usual.
    let r = ask(&mut c, request("d", vec![back, descriptor(&[("a", "x")])])).await;
    assert!(ok(r.overall_code));
    let left: Vec<u32> = r.statuses.iter().map(|s| s.limit_remaining).collect();
    assert_eq!(left, [3, 7]);
    assert!(ok(ask(&mut c, three(3)).await.overall_code));
    // `c` is spent. A descriptor without hits gives back the request's
    // (protobuf's 0: 1).
    let mut one = descriptor(&[("c", "x")]);
    one.is_negative_hits = true;
    let r = ask(&mut c, request("d", vec![one])).await;
    assert_eq!(r.statuses[0].limit_remaining, 1, "{r:?}");
    // Never more than the whole limit.
    let mut back = descriptor_hits(&[("c", "x")], 50);
    back.is_negative_hits = true;
    let r = ask(&mut c, request("d", vec![back])).await;
    assert!(ok(r.overall_code));
    assert_eq!(r.statuses[0].limit_remaining, 3);
}

#[tokio::test]
async fn headers_when_asked_for() {
    let dir = TempDir::new("grpc-headers");
    let file = write(
        &dir.0,
        "limits.toml",
        "[server]\nheaders = true\n\n[[domains]]\ndomain = \"h\"\n[[domains.descriptors]]\nkey = \"user\"\nrate_limit = { requests_per_unit = 2, unit = \"minute\" }\n",
    );
    let server = Server::start(&["--config", &file]);
    let mut c = server.client().await;
    let header = |r: &RateLimitResponse, name: &str| {
        r.response_headers_to_add
            .iter()
            .find(|h| h.key == name)
            .map(|h| h.value.clone())
    };
    let r = ask(&mut c, request("h", vec![descriptor(&[("user", "u")])])).await;
    assert!(ok(r.overall_code));
    let policy = header(&r, "ratelimit-policy").unwrap();
    assert!(policy.ends_with(";q=2;w=60"), "{policy}");
    assert!(header(&r, "ratelimit").unwrap().contains(";r=1;"));
    assert!(header(&r, "retry-after").is_none());
    ask(&mut c, request("h", vec![descriptor(&[("user", "u")])])).await;
    let r = ask(&mut c, request("h", vec![descriptor(&[("user", "u")])])).await;
    assert!(over(r.overall_code));
    let wait: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    // The default algorithm, the sliding window counter, may ask for more
    // than one window.
    assert!((1..=120).contains(&wait), "{wait}: {r:?}");
}

#[tokio::test]
async fn bad_requests_get_invalid_argument_and_the_server_keeps_serving() {
    let server = Server::start(&["--config", EXAMPLE]);
    let mut c = server.client().await;
    let code = |r: Result<tonic::Response<RateLimitResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(
            c.should_rate_limit(request("", vec![descriptor(&[("a", "b")])]))
                .await
        ),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(c.should_rate_limit(request("edge", vec![])).await),
        tonic::Code::InvalidArgument
    );
    let many: Vec<_> = (0..10_000)
        .map(|i| descriptor(&[("k", &i.to_string())]))
        .collect();
    let err = c
        .should_rate_limit(request("edge", many))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange
        ),
        "{err:?}"
    );
    let huge = "v".repeat(1 << 20);
    let err = c
        .should_rate_limit(request(
            "edge",
            vec![descriptor(&[("remote_address", &huge)])],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::OutOfRange,
        "over max_request_bytes: {err:?}"
    );
    let long = "v".repeat(2000);
    let err = c
        .should_rate_limit(request(
            "edge",
            vec![descriptor(&[("remote_address", &long)])],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(
        code(
            c.should_rate_limit(request("edge", vec![descriptor(&[("", "x")])]))
                .await
        ),
        tonic::Code::InvalidArgument
    );
    // A domain that is not UTF-8, sent as raw protobuf.
    let addr = server.grpc.unwrap();
    assert_eq!(
        raw_request(addr, b"\x0a\x02\xff\xfe").await,
        tonic::Code::InvalidArgument
    );
    // Still serving.
    let r = ask(
        &mut c,
        request("edge", vec![descriptor(&[("remote_address", "192.0.2.1")])]),
    )
    .await;
    assert!(ok(r.overall_code));
}

/// Sends `bytes` as the body of a ShouldRateLimit call; the answer's code.
async fn raw_request(addr: std::net::SocketAddr, bytes: &'static [u8]) -> tonic::Code {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    );
    grpc.unary(tonic::Request::new(bytes.to_vec()), path, RawCodec)
        .await
        .map(|_| tonic::Code::Ok)
        .unwrap_or_else(|s| s.code())
}

/// Bytes in, bytes out: a request no generated type would send.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// Two descriptors alike are one limit charged twice, not an error; a cost
/// no limit could grant is over the limit (never an error a gateway would
/// let through); a limit that denies everything, only looked at, holds
/// nothing back.
#[tokio::test]
async fn duplicates_oversized_costs_and_looks_at_a_denying_limit() {
    let dir = TempDir::new("grpc-dup");
    let file = write(
        &dir.0,
        "limits.yaml",
        "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: hour, requests_per_unit: 5}\n  - key: blocked\n    rate_limit: {unit: hour, requests_per_unit: 0}\n",
    );
    let server = Server::start(&["--config", &file]);
    let mut c = server.client().await;
    let twice = request(
        "d",
        vec![descriptor(&[("a", "x")]), descriptor(&[("a", "x")])],
    );
    let r = ask(&mut c, twice.clone()).await;
    assert!(ok(r.overall_code), "{r:?}");
    assert_eq!(
        (r.statuses[0].limit_remaining, r.statuses[1].limit_remaining),
        (3, 3)
    );
    ask(&mut c, twice.clone()).await;
    let r = ask(&mut c, twice).await;
    assert!(over(r.overall_code), "4 + 2 > 5: {r:?}");
    // 6 hits on a limit of 5: over the limit, and the other descriptor is
    // not charged.
    let r = ask(
        &mut c,
        request(
            "d",
            vec![descriptor(&[("a", "y")]), descriptor_hits(&[("a", "z")], 6)],
        ),
    )
    .await;
    assert!(over(r.overall_code) && ok(r.statuses[0].code) && over(r.statuses[1].code));
    assert_eq!(r.statuses[0].limit_remaining, 5, "nothing charged");
    // A look (hits 0) at a limit that denies everything: reported, but the
    // other descriptor is charged.
    let r = ask(
        &mut c,
        request(
            "d",
            vec![
                descriptor_hits(&[("blocked", "b")], 0),
                descriptor(&[("a", "y")]),
            ],
        ),
    )
    .await;
    assert!(ok(r.overall_code) && over(r.statuses[0].code), "{r:?}");
    assert_eq!(r.statuses[1].limit_remaining, 4);
    // Charged, it denies the request whatever the other says.
    let r = ask(
        &mut c,
        request(
            "d",
            vec![descriptor(&[("blocked", "b")]), descriptor(&[("a", "y")])],
        ),
    )
    .await;
    assert!(over(r.overall_code));
    assert_eq!(r.statuses[1].limit_remaining, 4, "nothing charged");
}

/// gRPC health checking answers for the server and for the service.
#[tokio::test]
async fn grpc_health_checks() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let server = Server::start(&["--config", EXAMPLE]);
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "envoy.service.ratelimit.v3.RateLimitService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let err = health
        .check(HealthCheckRequest {
            service: "nope".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}
