//! The `prometheus_metrics` example as an operator runs it: a real process,
//! real requests, its `/metrics` scraped and its `/status` read; against the
//! memory store, then against a real redis-server behind the guards, paused
//! until the breaker opens, and in approximate mode.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::time::{Duration, Instant};

use common::example::Example;
use ratekeeper_testkit::http::TestClient;
use ratekeeper_testkit::redis::RedisServer;

/// The value of the sample `name{labels}` in a Prometheus text page (0 when
/// absent). `labels` are matched in any order.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name {
            continue;
        }
        let found = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        if found {
            return value.parse().unwrap();
        }
    }
    0.0
}

async fn scrape(c: &TestClient) -> String {
    let reply = c.get("/metrics", &[]).await;
    assert_eq!(reply.status, 200);
    reply.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted_and_the_status_is_served() {
    let server = Example::start(
        "prometheus_metrics",
        &[
            "--algorithm",
            "fixed_window",
            "--limit",
            "5",
            "--window",
            "1h",
        ],
    );
    let c = TestClient::new(server.addr);
    let (ok, limited) = c.burst(20, false).await;
    assert_eq!((ok, limited), (5, 15));
    assert_eq!(c.status("/health", &[]).await, 200);

    let page = scrape(&c).await;
    let decisions = "ratelimit_decisions_total";
    assert_eq!(
        sample(&page, decisions, &[("rule", "api"), ("outcome", "allowed")]),
        5.0,
        "{page}"
    );
    assert_eq!(
        sample(&page, decisions, &[("rule", "api"), ("outcome", "denied")]),
        15.0
    );
    assert!(page.contains("# HELP ratelimit_decisions_total"), "{page}");
    // The memory store answers without waiting: nothing is timed.
    assert_eq!(
        sample(&page, "ratelimit_store_duration_seconds_count", &[]),
        0.0
    );

    let status = c.get("/status", &[]).await;
    assert_eq!(status.status, 200);
    assert!(
        status.body.contains("\"backend\":\"memory\""),
        "{}",
        status.body
    );
    assert!(status.body.contains("\"healthy\":true"));
    assert!(status.body.contains("\"keys\":1,"), "{}", status.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_latency_deny_cache_and_breaker_are_visible() {
    let redis = RedisServer::start();
    let server = Example::start(
        "prometheus_metrics",
        &[
            "--storage",
            &redis.url(),
            "--algorithm",
            "gcra",
            "--limit",
            "3",
            "--window",
            "1h",
            "--key",
            "header:x-key",
            "--store-timeout",
            "100",
            "--deny-cache",
            "1000",
        ],
    );
    let c = TestClient::new(server.addr);
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(c.status("/", &[("x-key", "a")]).await);
    }
    assert_eq!(codes, [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);

    let page = scrape(&c).await;
    let d = "ratelimit_decisions_total";
    assert_eq!(
        sample(&page, d, &[("rule", "api"), ("outcome", "allowed")]),
        3.0
    );
    assert_eq!(
        sample(&page, d, &[("rule", "api"), ("outcome", "denied")]),
        7.0
    );
    // Redis made four decisions (the first denial among them); the cache
    // answered the other six without a round trip.
    assert_eq!(
        sample(&page, "ratelimit_deny_cache_hits_total", &[]),
        6.0,
        "{page}"
    );
    assert_eq!(
        sample(&page, "ratelimit_store_duration_seconds_count", &[]),
        4.0
    );
    assert!(sample(&page, "ratelimit_store_duration_seconds_sum", &[]) > 0.0);
    let status = c.get("/status", &[]).await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert!(
        status.body.contains("\"backend\":\"redis\""),
        "{}",
        status.body
    );
    assert!(status.body.contains("\"breaker\":\"closed\""));

    // Redis stops answering: each call costs the deadline, then fails
    // (503, the default error mode); after five, the breaker opens.
    redis.cmd(&["CLIENT", "PAUSE", "3000", "ALL"]);
    for i in 0..8 {
        let key = format!("k{i}");
        assert_eq!(c.status("/", &[("x-key", &key)]).await, 503);
    }
    let page = scrape(&c).await;
    assert_eq!(sample(&page, "ratelimit_breaker_state", &[]), 1.0, "{page}");
    assert_eq!(sample(&page, "ratelimit_breaker_opened_total", &[]), 1.0);
    let errors = "ratelimit_store_errors_total";
    assert_eq!(sample(&page, errors, &[("kind", "timeout")]), 5.0, "{page}");
    assert_eq!(sample(&page, errors, &[("kind", "unavailable")]), 3.0);
    let status = c.get("/status", &[]).await;
    assert_eq!(status.status, 503, "{}", status.body);
    assert!(
        status.body.contains("\"breaker\":\"open\""),
        "{}",
        status.body
    );

    // Redis answers again: a probe after the cool-down closes the breaker.
    redis.cmd(&["CLIENT", "UNPAUSE"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.status("/", &[("x-key", "fresh")]).await != 200 {
        assert!(Instant::now() < deadline, "the breaker never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = scrape(&c).await;
    assert_eq!(sample(&page, "ratelimit_breaker_state", &[]), 0.0, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_blocks_are_visible() {
    let dir = std::env::temp_dir().join(format!("ratelimit-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("limits.toml");
    std::fs::write(
        &file,
        "[defaults]\nrules = [\"api\"]\n[rules.api]\nlimit = 1\nwindow = \"1h\"\n\
         [exempt]\npaths = [\"/health\"]\n\
         [auto_block]\ndenials = 1\nwithin = \"1m\"\nblock_for = \"10m\"\n",
    )
    .unwrap();
    let server = Example::start("prometheus_metrics", &["--config", file.to_str().unwrap()]);
    let c = TestClient::new(server.addr);
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(c.status("/", &[]).await);
    }
    assert_eq!(codes, [200, 429, 429, 403]);
    let blocked = c.get("/", &[]).await;
    assert_eq!(blocked.header("retry-after"), Some("600"));
    let page = scrape(&c).await;
    assert_eq!(
        sample(&page, "ratelimit_auto_blocks_total", &[]),
        1.0,
        "{page}"
    );
    assert_eq!(sample(&page, "ratelimit_auto_blocked_clients", &[]), 1.0);
    // Refusing a blocked client takes no decision.
    let d = "ratelimit_decisions_total";
    assert_eq!(
        sample(&page, d, &[("rule", "api"), ("outcome", "denied")]),
        2.0
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approximate_mode_from_the_flag_is_exact_alone_and_counted() {
    let redis = RedisServer::start();
    let server = Example::start(
        "prometheus_metrics",
        &[
            "--storage",
            &redis.url(),
            "--algorithm",
            "fixed_window",
            "--limit",
            "100",
            "--window",
            "1h",
            "--approximate",
            // A budget is good for one flush period: long enough that the
            // burst below fits in one on a loaded machine.
            "500",
        ],
    );
    let c = TestClient::new(server.addr);
    // One instance never admits more than its limit, even from 150
    // concurrent requests.
    let (ok, limited) = c.burst(150, false).await;
    assert_eq!((ok, limited), (100, 50));
    // Local decisions reach the metrics at the next flush.
    let deadline = Instant::now() + Duration::from_secs(5);
    let page = loop {
        let page = scrape(&c).await;
        if sample(&page, "ratelimit_approximate_local_decisions_total", &[]) > 0.0
            || Instant::now() > deadline
        {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let local = sample(&page, "ratelimit_approximate_local_decisions_total", &[]);
    assert!(local > 100.0, "most of 150 decisions were local: {page}");
    assert_eq!(
        sample(&page, "ratelimit_approximate_unrecorded_units_total", &[]),
        0.0
    );
    let status = c.get("/status", &[]).await;
    assert!(
        status
            .body
            .contains("\"approximate_unrecorded_units\":\"0\""),
        "{}",
        status.body
    );
    // Every admitted unit is in Redis: its own answer for this client is
    // "nothing left".
    let store = ratekeeper::redis::RedisStorage::connect(&redis.url())
        .await
        .unwrap();
    let exact = ratekeeper::Limiter::new(std::sync::Arc::new(store));
    let rule = ratekeeper::Rule::new(
        "api",
        ratekeeper::Algorithm::FixedWindow,
        ratekeeper::Quota::new(100, Duration::from_secs(3600)).unwrap(),
    )
    .unwrap();
    let left = exact.peek(&rule, "ip:127.0.0.1").await.unwrap();
    assert_eq!(left.remaining(), 0, "{left:?}");
}
