//! Several server processes on one real Redis (standalone and Cluster):
//! exact shared limits; a store that stops answering; recovery.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use ratekeeper_testkit::redis::{RedisCluster, RedisServer};
use support::{Server, TempDir, descriptor, request, write};

const LIMITS: &str = "domain: shared\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: hour, requests_per_unit: 100}\n  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 1000}\n";

/// 200 concurrent clients spread over three server processes on `url`,
/// one request each on one descriptor limited to 100 (beside a descriptor
/// of its own, so that every request is decided on two keys, in one slot
/// of a Cluster): exactly 100 pass, and the denied consumed nothing.
async fn exactly_100_of_200(url: &str) {
    let dir = TempDir::new("redis-exact");
    let file = write(&dir.0, "limits.yaml", LIMITS);
    let servers: Vec<Server> = (0..3)
        .map(|_| Server::start(&["--config", &file, "--storage", url]))
        .collect();
    let mut clients = Vec::new();
    for s in &servers {
        clients.push(s.client().await);
    }
    let ok = Arc::new(AtomicU64::new(0));
    let over = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let mut client = clients[i % 3].clone();
            let (ok, over) = (ok.clone(), over.clone());
            tokio::spawn(async move {
                let user = format!("u{}", i % 7);
                let r = client
                    .should_rate_limit(request(
                        "shared",
                        vec![
                            descriptor(&[("tenant", "t1")]),
                            descriptor(&[("user", &user)]),
                        ],
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                if r.overall_code == Code::Ok as i32 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    over.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(ok.load(Ordering::Relaxed), 100);
    assert_eq!(over.load(Ordering::Relaxed), 100);
    // Each user was charged only for its admitted requests.
    let mut c = clients[0].clone();
    let mut charged = 0;
    for u in 0..7 {
        let mut d = descriptor(&[("user", &format!("u{u}"))]);
        d.hits_addend = Some(envoy_types::pb::google::protobuf::UInt64Value { value: 0 });
        let r = c
            .should_rate_limit(request("shared", vec![d]))
            .await
            .unwrap()
            .into_inner();
        charged += 1000 - u64::from(r.statuses[0].limit_remaining);
    }
    assert_eq!(charged, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_share_an_exact_limit_on_redis() {
    let redis = RedisServer::start();
    exactly_100_of_200(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_share_an_exact_limit_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3, 0);
    exactly_100_of_200(&cluster.url()).await;
}

/// The store stops answering (paused, then killed) while clients run:
/// every answer comes within the deadline, by each domain's mode (a
/// degraded domain decides in memory on this instance's half of its limit:
/// 2 of 4), and the server recovers when the store is back, without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_store_is_answered_by_each_domains_mode() {
    let mut redis = RedisServer::start();
    let dir = TempDir::new("redis-fail");
    let file = write(
        &dir.0,
        "limits.toml",
        r#"
[storage]
timeout = "300ms"

[server]
degraded_instances = 2

[rules.api]
limit = 100
window = "1h"

[[domains]]
domain = "open"
on_store_error = "allow"
[[domains.descriptors]]
key = "k"
rate_limit = { requests_per_unit = 1000, unit = "hour" }

[[domains]]
domain = "closed"
on_store_error = "deny"
[[domains.descriptors]]
key = "k"
rate_limit = { requests_per_unit = 1000, unit = "hour" }

[[domains]]
domain = "strict"
[[domains.descriptors]]
key = "k"
rate_limit = { requests_per_unit = 1000, unit = "hour" }

[[domains]]
domain = "local"
on_store_error = "degraded"
[[domains.descriptors]]
key = "k"
rate_limit = { requests_per_unit = 4, unit = "hour" }
"#,
    );
    let server = Server::start(&["--config", &file, "--storage", &redis.url()]);
    let mut c = server.client().await;
    let ask = |domain: &'static str| request(domain, vec![descriptor(&[("k", "v")])]);
    for d in ["open", "closed", "strict", "local"] {
        let r = c.should_rate_limit(ask(d)).await.unwrap().into_inner();
        assert_eq!(r.overall_code, Code::Ok as i32);
    }
    let http = server.http.unwrap();
    assert_eq!(support::http(http, "GET", "/ready", "", None).await.0, 200);

    let mut local = Vec::new();
    for stage in ["paused", "killed"] {
        if stage == "paused" {
            redis.pause();
        } else {
            redis.resume();
            redis.stop();
        }
        for _ in 0..3 {
            for (domain, expect) in [
                ("open", Some(true)),
                ("closed", Some(false)),
                ("strict", None),
            ] {
                let started = Instant::now();
                let answer = c.should_rate_limit(ask(domain)).await;
                let took = started.elapsed();
                assert!(took < Duration::from_secs(3), "{stage} {domain}: {took:?}");
                match (expect, answer) {
                    (Some(allowed), Ok(r)) => assert_eq!(
                        r.into_inner().overall_code == Code::Ok as i32,
                        allowed,
                        "{stage} {domain}"
                    ),
                    (None, Err(status)) => {
                        assert_eq!(status.code(), tonic::Code::Unavailable, "{stage}")
                    }
                    (expect, other) => panic!("{stage} {domain}: {expect:?} but {other:?}"),
                }
            }
            let r = c.should_rate_limit(ask("local")).await;
            local.push(r.map(|r| r.into_inner().overall_code == Code::Ok as i32));
        }
        let (status, _) = support::http(http, "GET", "/ready", "", None).await;
        assert_eq!(status, 503, "not ready while the store is {stage}");
        // A check of a named rule follows `[server] on_store_error` (error).
        let (status, v) = support::http(
            http,
            "POST",
            "/v1/check",
            r#"{"rule":"api","key":"k"}"#,
            None,
        )
        .await;
        assert_eq!(status, 503, "{stage}: {v}");
    }
    let degraded = [
        Ok(true),
        Ok(true),
        Ok(false),
        Ok(false),
        Ok(false),
        Ok(false),
    ];
    assert_eq!(
        local
            .into_iter()
            .map(|r| r.map_err(|s| s.code()))
            .collect::<Vec<_>>(),
        degraded
    );
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.should_rate_limit(ask("strict")).await;
        if matches!(&r, Ok(r) if r.get_ref().overall_code == Code::Ok as i32) {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(support::http(http, "GET", "/ready", "", None).await.0, 200);
}

/// Past `max_in_flight`, a request is refused at once, not queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_past_the_in_flight_bound_are_refused_at_once() {
    let redis = RedisServer::start();
    let dir = TempDir::new("redis-inflight");
    let file = write(
        &dir.0,
        "limits.toml",
        "[storage]\ntimeout = \"5s\"\n\n[server]\nmax_in_flight = 1\non_store_error = \"allow\"\n\n[[domains]]\ndomain = \"d\"\n[[domains.descriptors]]\nkey = \"k\"\nrate_limit = { requests_per_unit = 10, unit = \"hour\" }\n",
    );
    // The store waits as long as the request does: the first request
    // hangs on the paused store.
    let url = format!("{}?response_timeout=5s", redis.url());
    let server = Server::start(&["--config", &file, "--storage", &url]);
    let mut c = server.client().await;
    assert!(
        c.should_rate_limit(request("d", vec![descriptor(&[("k", "v")])]))
            .await
            .is_ok()
    );
    redis.pause();
    let mut slow = c.clone();
    let first = tokio::spawn(async move {
        slow.should_rate_limit(request("d", vec![descriptor(&[("k", "v")])]))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let err = c
        .should_rate_limit(request("d", vec![descriptor(&[("k", "v")])]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(started.elapsed() < Duration::from_secs(1));
    let (status, _) = support::http(
        server.http.unwrap(),
        "POST",
        "/v1/check",
        r#"{"domain":"d","descriptors":[{"entries":[{"key":"k","value":"v"}]}]}"#,
        None,
    )
    .await;
    assert_eq!(status, 503);
    redis.resume();
    let first = first.await.unwrap().unwrap().into_inner();
    assert_eq!(
        first.statuses[0].limit_remaining, 8,
        "the first request was decided in the store"
    );
}

/// Clients that go away mid-request (an HTTP connection closed, a gRPC
/// call cancelled) while their request waits on a paused store leave
/// nothing behind: with one request allowed in flight, the next requests
/// are served once the store answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_gone_mid_request_free_their_place() {
    use tokio::io::AsyncWriteExt as _;

    let redis = RedisServer::start();
    let dir = TempDir::new("redis-gone");
    let file = write(
        &dir.0,
        "limits.toml",
        "[storage]\ntimeout = \"5s\"\n\n[server]\nmax_in_flight = 1\n\n[[domains]]\ndomain = \"d\"\n[[domains.descriptors]]\nkey = \"k\"\nrate_limit = { requests_per_unit = 100, unit = \"hour\" }\n",
    );
    let url = format!("{}?response_timeout=5s", redis.url());
    let server = Server::start(&["--config", &file, "--storage", &url]);
    let http = server.http.unwrap();
    let check = r#"{"domain":"d","descriptors":[{"entries":[{"key":"k","value":"v"}]}]}"#;
    assert_eq!(
        support::http(http, "POST", "/v1/check", check, None)
            .await
            .0,
        200
    );
    let mut c = server.client().await;
    for gone in ["http", "grpc"] {
        redis.pause();
        if gone == "http" {
            let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
            let request = format!(
                "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{check}",
                check.len()
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(stream);
        } else {
            let call = c.should_rate_limit(request("d", vec![descriptor(&[("k", "v")])]));
            assert!(
                tokio::time::timeout(Duration::from_millis(300), call)
                    .await
                    .is_err(),
                "the call waits on the paused store"
            );
        }
        redis.resume();
        // The place comes back once the store answers the abandoned request.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, v) = support::http(http, "POST", "/v1/check", check, None).await;
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{gone}: still refused: {status} {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..5 {
            let r = c
                .should_rate_limit(request("d", vec![descriptor(&[("k", "v")])]))
                .await
                .unwrap();
            assert_eq!(r.into_inner().overall_code, Code::Ok as i32, "{gone}");
        }
    }
}

/// Allow and deny lists: static ones from the file, runtime ones changed
/// through one server's admin API and seen by another on the same Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_apply_to_the_client_address_on_every_replica() {
    let redis = RedisServer::start();
    let dir = TempDir::new("lists");
    let file = write(
        &dir.0,
        "limits.toml",
        r#"
[lists]
allow = ["10.0.0.0/8"]
deny = ["192.0.2.66"]
runtime = true
refresh = "100ms"

[[domains]]
domain = "edge"
[[domains.descriptors]]
key = "remote_address"
rate_limit = { requests_per_unit = 1, unit = "hour" }
"#,
    );
    let a = Server::start_with_env(
        &["--config", &file, "--storage", &redis.url()],
        &[("RATEKEEPER_ADMIN_TOKEN", "t")],
    );
    let b = Server::start(&["--config", &file, "--storage", &redis.url()]);
    let mut cb = b.client().await;
    let ask = |ip: &str| request("edge", vec![descriptor(&[("remote_address", ip)])]);
    let code =
        |r: envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse| r.overall_code;
    // Static: denied at once; allowed without counting.
    assert_eq!(
        code(
            cb.should_rate_limit(ask("192.0.2.66"))
                .await
                .unwrap()
                .into_inner()
        ),
        Code::OverLimit as i32
    );
    for _ in 0..3 {
        assert_eq!(
            code(
                cb.should_rate_limit(ask("10.1.2.3"))
                    .await
                    .unwrap()
                    .into_inner()
            ),
            Code::Ok as i32
        );
    }
    // Runtime: denied through A's admin API, seen by B.
    assert_eq!(
        code(
            cb.should_rate_limit(ask("203.0.113.5"))
                .await
                .unwrap()
                .into_inner()
        ),
        Code::Ok as i32
    );
    let admin = a.admin.unwrap();
    let (status, v) = support::http(
        admin,
        "POST",
        "/v1/lists/deny",
        r#"{"net":"203.0.113.0/24","ttl":"1h"}"#,
        Some("t"),
    )
    .await;
    assert_eq!(
        (status, &v["added"]),
        (200, &serde_json::json!(true)),
        "{v}"
    );
    let (_, v) = support::http(admin, "GET", "/v1/lists", "", Some("t")).await;
    assert_eq!(v["deny"][0]["net"], "203.0.113.0/24", "{v}");
    assert!(v["deny"][0]["expires"].as_u64().is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = cb
            .should_rate_limit(ask("203.0.113.7"))
            .await
            .unwrap()
            .into_inner();
        if r.overall_code == Code::OverLimit as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica B never saw the deny entry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, v) = support::http(
        admin,
        "DELETE",
        "/v1/lists/deny",
        r#"{"net":"203.0.113.0/24"}"#,
        Some("t"),
    )
    .await;
    assert_eq!(
        (status, &v["removed"]),
        (200, &serde_json::json!(true)),
        "{v}"
    );
    // Bad changes: 400, 404, 401.
    for (method, path, body, token, expect) in [
        (
            "POST",
            "/v1/lists/deny",
            r#"{"net":"banana"}"#,
            Some("t"),
            400,
        ),
        (
            "POST",
            "/v1/lists/deny",
            r#"{"net":"10.0.0.1","ttl":"soon"}"#,
            Some("t"),
            400,
        ),
        (
            "POST",
            "/v1/lists/maybe",
            r#"{"net":"10.0.0.1"}"#,
            Some("t"),
            404,
        ),
        (
            "POST",
            "/v1/lists/allow",
            r#"{"net":"10.0.0.1"}"#,
            None,
            401,
        ),
    ] {
        let (status, v) = support::http(admin, method, path, body, token).await;
        assert_eq!(status, expect, "{method} {path} {body}: {v}");
    }
}

/// `[storage] deny_cache`: once Redis denies a descriptor, the server
/// answers its next requests from the cache, without a script call, and
/// as Redis would; a request with one descriptor not denied still asks.
#[tokio::test]
async fn the_deny_cache_spares_redis_the_denied_descriptors() {
    let redis = RedisServer::start();
    let dir = TempDir::new("deny-cache");
    let file = write(
        &dir.0,
        "limits.toml",
        "[storage]\ndeny_cache = 1000\n\n[[domains]]\ndomain = \"d\"\n[[domains.descriptors]]\nkey = \"user\"\nrate_limit = { requests_per_unit = 2, unit = \"hour\" }\n[[domains.descriptors]]\nkey = \"path\"\nrate_limit = { requests_per_unit = 100, unit = \"hour\" }\n",
    );
    let server = Server::start(&["--config", &file, "--storage", &redis.url()]);
    let mut client = server.client().await;
    let scripts = || redis.script_calls();
    let ask = |descriptors| request("d", descriptors);
    let user = || descriptor(&[("user", "mallory")]);
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r = client.should_rate_limit(ask(vec![user()])).await.unwrap();
        codes.push(r.into_inner().overall_code);
    }
    let over = Code::OverLimit as i32;
    assert_eq!(codes, [Code::Ok as i32, Code::Ok as i32, over]);
    let before = scripts();
    for _ in 0..20 {
        let r = client.should_rate_limit(ask(vec![user()])).await.unwrap();
        let r = r.into_inner();
        assert_eq!(r.overall_code, over);
        assert_eq!(r.statuses[0].limit_remaining, 0);
        assert!(r.statuses[0].duration_until_reset.is_some());
    }
    assert_eq!(scripts(), before, "20 denials answered without Redis");
    // With a descriptor that allows, the request needs the store: that
    // descriptor reports what it has left, and nothing is consumed.
    let r = client
        .should_rate_limit(ask(vec![user(), descriptor(&[("path", "/a")])]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, over);
    assert_eq!(r.statuses[1].code, Code::Ok as i32);
    assert_eq!(r.statuses[1].limit_remaining, 100);
    assert_eq!(scripts(), before + 1);
}
