//! The example servers as an operator starts them, attacked from outside:
//! what they print and which forwarding header they believe.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::example::Example;
use ratekeeper_testkit::http::TestClient;

/// A store URL's password never reaches the banner (nor, through it, a log).
/// The Redis store connects on first use, so nothing needs to listen there.
#[tokio::test]
async fn the_banner_shows_no_credentials() {
    let server = Example::start(
        "axum_server",
        &["--storage", "redis://:s3cret-pass@127.0.0.1:9/0?prefix=rl:"],
    );
    assert!(!server.banner.contains("s3cret-pass"), "{}", server.banner);
    assert!(
        server.banner.contains("redis://:***@127.0.0.1:9/0"),
        "{}",
        server.banner
    );
}

/// Requests through a proxy that appends `X-Forwarded-For` (played by the
/// test, from 127.0.0.1), each with a forged `Forwarded: for=…` of its own;
/// how many of 20 are admitted against a limit of 3.
async fn admitted_with_forged_forwarded(header: Option<&str>) -> usize {
    let mut args = vec!["--trust", "127.0.0.1", "--limit", "3", "--window", "1h"];
    if let Some(h) = header {
        args.extend(["--client-ip-header", h]);
    }
    let server = Example::start("axum_server", &args);
    let c = TestClient::new(server.addr);
    let mut admitted = 0;
    for i in 0..20 {
        let forged = format!("for=198.51.100.{i}");
        let status = c
            .status(
                "/",
                &[("forwarded", &forged), ("x-forwarded-for", "203.0.113.50")],
            )
            .await;
        admitted += usize::from(status == 200);
    }
    admitted
}

/// Trusting a proxy means trusting the one header it sets: by default
/// `X-Forwarded-For`, and a forged `Forwarded` rotates nothing. Told that
/// the proxy sets `Forwarded`, the server reads that header instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trusted_header_is_the_one_named() {
    assert_eq!(admitted_with_forged_forwarded(None).await, 3);
    assert_eq!(
        admitted_with_forged_forwarded(Some("x-forwarded-for")).await,
        3
    );
    assert_eq!(admitted_with_forged_forwarded(Some("forwarded")).await, 20);
}

/// `--concurrency 2` on each example server: six slow requests at once,
/// two run and four are refused at once; once they are answered, the
/// places are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_n_requests_in_flight() {
    for example in ["axum_server", "actix_server", "rocket_server"] {
        let args = ["--limit", "1000", "--window", "1h", "--concurrency", "2"];
        let server = Example::start(example, &args);
        let c = TestClient::new(server.addr);
        let at_once = || async {
            let tasks: Vec<_> = (0..6)
                .map(|_| {
                    let c = c.clone();
                    tokio::spawn(async move { c.status("/slow?ms=400", &[]).await })
                })
                .collect();
            let mut statuses = Vec::new();
            for task in tasks {
                statuses.push(task.await.expect("a request task"));
            }
            statuses.sort_unstable();
            statuses
        };
        assert_eq!(at_once().await, [200, 200, 429, 429, 429, 429], "{example}");
        let mut back = false;
        for _ in 0..100 {
            if c.status("/slow", &[]).await == 200 && c.status("/slow", &[]).await == 200 {
                back = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(back, "{example}: the places came back");
    }
}

/// `--concurrency 2 --wait 5000` on each example server: six slow requests
/// at once; two run, two wait for their places (as many wait as there are
/// places) and run after them, two are refused at once. (Four answered on
/// two places: two of them waited.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_for_a_place_in_flight() {
    for example in ["axum_server", "actix_server", "rocket_server"] {
        let args = [
            "--limit",
            "1000",
            "--window",
            "1h",
            "--concurrency",
            "2",
            "--wait",
            "5000",
        ];
        let server = Example::start(example, &args);
        let c = TestClient::new(server.addr);
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.status("/slow?ms=1000", &[]).await })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.expect("a request task"));
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 200, 200, 200, 429, 429], "{example}");
    }
}

/// `--wait 2000` on each example server with GCRA at 4 per 4 s (a burst of
/// 4, a turn every second): ten requests at once, four answered at once,
/// two after waiting their turns, four refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_wait_their_turn() {
    for example in ["axum_server", "actix_server", "rocket_server"] {
        let args = [
            "--algorithm",
            "gcra",
            "--limit",
            "4",
            "--window",
            "4s",
            "--wait",
            "2000",
        ];
        let server = Example::start(example, &args);
        let c = TestClient::new(server.addr);
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.status("/", &[]).await })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.expect("a request task"));
        }
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 200, 200, 200, 200, 200, 429, 429, 429, 429],
            "{example}"
        );
    }
}

/// `--count-when 401` on each example server, run as an operator runs it:
/// with 3 requests an hour, ten good logins pass and are never counted, the
/// first three wrong passwords reach the handler (401) and the next two are
/// refused (429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_failed_logins_count() {
    for example in ["axum_server", "actix_server", "rocket_server"] {
        let args = ["--limit", "3", "--window", "1h", "--count-when", "401"];
        let server = Example::start(example, &args);
        let c = TestClient::new(server.addr);
        for _ in 0..10 {
            let r = c.get("/login", &[("x-password", "good")]).await;
            assert_eq!(r.status, 200, "{example}: {r:?}");
        }
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(c.status("/login", &[("x-password", "guess")]).await);
        }
        assert_eq!(statuses, [401, 401, 401, 429, 429], "{example}");
        // `/` shares the key's limit, and is refused too now.
        assert_eq!(c.status("/", &[]).await, 429, "{example}");
    }
}
