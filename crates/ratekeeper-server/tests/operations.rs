//! Running the server: reloads (file change, SIGHUP, refused files),
//! directories of limits files, graceful shutdown, and limits files written
//! the way envoyproxy/ratelimit's documentation writes them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use support::{Server, TempDir, descriptor, http, request, write};

fn limits(per_hour: u32) -> String {
    format!(
        "domain: live\ndescriptors:\n  - key: user\n    rate_limit: {{unit: hour, requests_per_unit: {per_hour}}}\n"
    )
}

/// Polls the limits endpoint until `check` holds.
async fn until(server: &Server, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = http(server.http.unwrap(), "GET", "/v1/limits", "", None).await;
        if check(&v) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {v}\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn per_hour(v: &serde_json::Value) -> u64 {
    v["descriptors"][0]["limit"]["requestsPerUnit"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_without_a_failed_request() {
    let dir = TempDir::new("reload");
    let file = write(&dir.0, "limits.yaml", &limits(1_000_000));
    let server = Server::start(&["--config", &file]);
    let client = server.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (mut c, stop, answered) = (client.clone(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let user = format!("u{i}");
                    let r = c
                        .should_rate_limit(request("live", vec![descriptor(&[("user", &user)])]))
                        .await
                        .expect("no request fails while the configuration changes");
                    assert_eq!(r.into_inner().overall_code, Code::Ok as i32);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Rewritten in place, then replaced by a rename, as editors do.
    std::fs::write(&file, limits(2_000_000)).unwrap();
    until(&server, "a rewrite is picked up", |v| {
        per_hour(v) == 2_000_000
    })
    .await;
    let tmp = write(&dir.0, "limits.yaml.tmp", &limits(3_000_000));
    std::fs::rename(&tmp, &file).unwrap();
    until(&server, "a rename is picked up", |v| {
        per_hour(v) == 3_000_000
    })
    .await;
    // An invalid file is refused; the old limits keep serving.
    std::fs::write(
        &file,
        "domain: live\ndescriptors:\n  - key: user\n    rate_limit: {unit: fortnight}\n",
    )
    .unwrap();
    assert!(
        server
            .logs("configuration refused", Duration::from_secs(20))
            .await,
        "{}",
        server.stderr()
    );
    assert!(
        server.stderr().contains("fortnight"),
        "the refusal says why"
    );
    let (_, v) = http(server.http.unwrap(), "GET", "/v1/limits", "", None).await;
    assert_eq!(per_hour(&v), 3_000_000);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn sighup_reloads_and_counters_survive_a_new_limit() {
    let dir = TempDir::new("hup");
    let file = write(&dir.0, "limits.yaml", &limits(3));
    // Files not watched: only the signal reloads.
    let ours = write(&dir.0, "server.toml", "[server]\nwatch = false\n");
    let server = Server::start(&["--config", &file, "--config", &ours]);
    let mut c = server.client().await;
    let ask = || request("live", vec![descriptor(&[("user", "a")])]);
    let r = c.should_rate_limit(ask()).await.unwrap().into_inner();
    assert_eq!(r.statuses[0].limit_remaining, 2);
    std::fs::write(&file, limits(5)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, v) = http(server.http.unwrap(), "GET", "/v1/limits", "", None).await;
    assert_eq!(per_hour(&v), 3, "not watched");
    server.signal("HUP");
    until(&server, "SIGHUP reloads", |v| per_hour(v) == 5).await;
    let r = c.should_rate_limit(ask()).await.unwrap().into_inner();
    assert_eq!(
        r.statuses[0].limit_remaining, 3,
        "the counter kept its one request"
    );
}

#[tokio::test]
async fn a_directory_of_envoy_files_and_a_config_of_ours() {
    let dir = TempDir::new("dir");
    let limits_dir = dir.0.join("config");
    std::fs::create_dir_all(&limits_dir).unwrap();
    write(
        &limits_dir,
        "a.yaml",
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 1}\n",
    );
    write(
        &limits_dir,
        "b.yml",
        "domain: b\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 2}\n",
    );
    write(&limits_dir, "notes.txt", "not read");
    let ours = write(&dir.0, "server.toml", "[server]\nheaders = true\n");
    let server = Server::start(&["--config", limits_dir.to_str().unwrap(), "--config", &ours]);
    let (_, v) = http(server.http.unwrap(), "GET", "/v1/limits", "", None).await;
    assert_eq!(v["domains"], serde_json::json!(["a", "b"]));
    let mut c = server.client().await;
    let r = c
        .should_rate_limit(request("b", vec![descriptor(&[("k", "v")])]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.statuses[0].limit_remaining, 1);
    assert!(
        !r.response_headers_to_add.is_empty(),
        "[server] of our file applies"
    );
    // Two domains of one name, across files: refused at start, with both problems.
    write(&limits_dir, "c.yaml", "domain: a\ndescriptors: []\n");
    let (code, stderr) = Server::fail(&["--config", limits_dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("a second domain named \"a\""), "{stderr}");
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let dir = TempDir::new("term");
    let file = write(&dir.0, "limits.yaml", &limits(10));
    let mut server = Server::start(&["--config", &file]);
    let mut c = server.client().await;
    assert!(
        c.should_rate_limit(request("live", vec![descriptor(&[("user", "x")])]))
            .await
            .is_ok()
    );
    server.signal("TERM");
    assert_eq!(
        server.wait(Duration::from_secs(15)),
        Some(0),
        "{}",
        server.stderr()
    );
    assert!(server.stderr().contains("shutting down"));
}

/// Limits files as envoyproxy/ratelimit's documentation writes them
/// (written here, not copied), answered as it documents.
#[tokio::test]
async fn envoy_documented_behaviours() {
    let dir = TempDir::new("documented");
    let file = write(
        &dir.0,
        "messaging.yaml",
        r#"
domain: messaging
descriptors:
  # Marketing messages to one number: 2 a day.
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit:
          unit: day
          requests_per_unit: 2
  # Any message to one number: 3 a day.
  - key: to_number
    rate_limit:
      unit: day
      requests_per_unit: 3
  # Per-tenant limit that a more specific one replaces.
  - key: tenant
    rate_limit:
      name: tenant_default
      unit: second
      requests_per_unit: 1
    descriptors:
      - key: vip
        value: "yes"
        rate_limit:
          replaces:
            - name: tenant_default
          unit: second
          requests_per_unit: 100
"#,
    );
    let server = Server::start(&["--config", &file]);
    let mut c = server.client().await;
    let both = |n: &str| {
        request(
            "messaging",
            vec![
                descriptor(&[("message_type", "marketing"), ("to_number", n)]),
                descriptor(&[("to_number", n)]),
            ],
        )
    };
    let code =
        |r: envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse| r.overall_code;
    for _ in 0..2 {
        assert_eq!(
            code(
                c.should_rate_limit(both("2061234567"))
                    .await
                    .unwrap()
                    .into_inner()
            ),
            Code::Ok as i32
        );
    }
    // The marketing limit is reached: denied, and the general one is not charged.
    let r = c
        .should_rate_limit(both("2061234567"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[1].limit_remaining, 1);
    // A non-marketing message still fits the general limit once.
    let general = request(
        "messaging",
        vec![descriptor(&[("to_number", "2061234567")])],
    );
    assert_eq!(
        code(
            c.should_rate_limit(general.clone())
                .await
                .unwrap()
                .into_inner()
        ),
        Code::Ok as i32
    );
    assert_eq!(
        code(c.should_rate_limit(general).await.unwrap().into_inner()),
        Code::OverLimit as i32
    );
    // `replaces`: a VIP request is not held to the tenant default.
    let vip = request(
        "messaging",
        vec![
            descriptor(&[("tenant", "t")]),
            descriptor(&[("tenant", "t"), ("vip", "yes")]),
        ],
    );
    for _ in 0..5 {
        assert_eq!(
            code(c.should_rate_limit(vip.clone()).await.unwrap().into_inner()),
            Code::Ok as i32
        );
    }
    let plain = request("messaging", vec![descriptor(&[("tenant", "t")])]);
    assert_eq!(
        code(
            c.should_rate_limit(plain.clone())
                .await
                .unwrap()
                .into_inner()
        ),
        Code::Ok as i32
    );
    assert_eq!(
        code(c.should_rate_limit(plain).await.unwrap().into_inner()),
        Code::OverLimit as i32
    );
}

/// `examples/server/limits.toml` starts and answers as its comments say.
#[tokio::test]
async fn the_example_in_our_format() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/server/limits.toml"
    );
    let server = Server::start(&["--config", example]);
    let mut c = server.client().await;
    let mut req = request("llm", vec![descriptor(&[("team", "search")])]);
    req.hits_addend = 150_000;
    let r = c.should_rate_limit(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[0].limit_remaining, 50_000);
    assert!(
        r.response_headers_to_add
            .iter()
            .any(|h| h.key == "ratelimit-policy")
    );
    let r = c.should_rate_limit(req).await.unwrap().into_inner();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    let r = c
        .should_rate_limit(request(
            "partners",
            vec![
                descriptor(&[("api_key", "k1"), ("budget", "daily")]),
                descriptor(&[("api_key", "k1")]),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[0].limit_remaining, 99_999);
    assert_eq!(r.statuses[1].limit_remaining, 39);
}

/// Slow and silent clients lose their connections within
/// `request_timeout`: headers never finished, a body never finished (408),
/// a connection left idle. The server serves on.
#[tokio::test]
async fn slow_and_silent_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    let dir = TempDir::new("slow");
    let file = write(
        &dir.0,
        "limits.toml",
        "[server]\nrequest_timeout = \"1s\"\n\n[[domains]]\ndomain = \"live\"\n[[domains.descriptors]]\nkey = \"user\"\nrate_limit = { requests_per_unit = 5, unit = \"hour\" }\n",
    );
    let server = Server::start(&["--config", &file]);
    let addr = server.http.unwrap();
    let mut headers = TcpStream::connect(addr).await.unwrap();
    headers
        .write_all(b"POST /v1/check HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut body = TcpStream::connect(addr).await.unwrap();
    body.write_all(
        b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"domain\"",
    )
    .await
    .unwrap();
    let idle = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let until_closed = |mut stream: TcpStream| async move {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
            .await
            .expect("closed by the server within 10 s")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    };
    let (headers, body, idle) = tokio::join!(
        until_closed(headers),
        until_closed(body),
        until_closed(idle)
    );
    assert!(!headers.contains("200"), "{headers}");
    assert!(body.starts_with("HTTP/1.1 408"), "{body}");
    assert!(idle.is_empty(), "{idle}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let check = r#"{"domain":"live","descriptors":[{"entries":[{"key":"user","value":"a"}]}]}"#;
    let (status, v) = http(addr, "POST", "/v1/check", check, None).await;
    assert_eq!(status, 200, "{v}");
}
