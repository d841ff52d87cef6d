//! A key flood through the `prometheus_metrics` example (axum, memory
//! store): a million unique keys, as fast as a client on the same machine
//! can send them (about ten seconds here, several million keys a minute;
//! printed, never asserted). The store holds at most its bound the whole
//! time, the process's memory stays flat, and the evictions are counted.
//! A key whose limit was spent before the flood is still denied after it:
//! eviction is no way to reset a limit.
//! `RATELIMIT_FLOOD_KEYS` sets the number of keys.
#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::example::Example;
use ratekeeper_testkit::http::TestClient;

const BOUND: u64 = 5_000;
const TASKS: u64 = 32;

/// The process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The key count `/status` reports.
async fn keys(c: &TestClient) -> u64 {
    let body = c.get("/status", &[]).await.body;
    let rest = body.split("\"keys\":").nth(1).unwrap();
    rest.split([',', '}']).next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_flood_stays_within_the_stores_bound() {
    let total: u64 = std::env::var("RATELIMIT_FLOOD_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let url = format!("memory://?max_size={BOUND}");
    let server = Example::start(
        "prometheus_metrics",
        &[
            "--storage",
            &url,
            "--key",
            "header:x-key",
            "--limit",
            "10",
            "--window",
            "1h",
        ],
    );
    let c = TestClient::new(server.addr);

    // A victim spends its limit first.
    for _ in 0..10 {
        assert_eq!(c.status("/", &[("x-key", "spent")]).await, 200);
    }
    assert_eq!(c.status("/", &[("x-key", "spent")]).await, 429);
    // Warm up past the bound, then measure from there.
    flood(&c, 0, 2 * BOUND).await;
    assert!(keys(&c).await <= BOUND);
    let rss_before = rss_kib(server.pid());

    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let sampler = {
        let (c, sent) = (c.clone(), Arc::clone(&sent));
        tokio::spawn(async move {
            let mut most = 0;
            while sent.load(Ordering::Relaxed) < total {
                most = most.max(keys(&c).await);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            most
        })
    };
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (c, sent) = (c.clone(), Arc::clone(&sent));
            tokio::spawn(async move {
                let mut i = t;
                while i < total {
                    let key = format!("flood-{}", 2 * BOUND + i);
                    assert_eq!(c.status("/", &[("x-key", &key)]).await, 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += TASKS;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let most_keys = sampler.await.unwrap();
    let rss_after = rss_kib(server.pid());
    eprintln!(
        "{total} unique keys in {:.1} s ({:.0} keys/min); most keys held {most_keys}; RSS {} -> {} KiB",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64() * 60.0,
        rss_before,
        rss_after
    );
    assert!(most_keys <= BOUND, "{most_keys} keys held");
    assert!(keys(&c).await <= BOUND);
    // Unbounded, this many keys would hold tens of megabytes more.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    let page = c.get("/metrics", &[]).await.body;
    let evicted: f64 = page
        .lines()
        .find(|l| l.starts_with("ratelimit_evictions_total{cache=\"memory_store\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(evicted >= (total + BOUND) as f64, "{evicted} evictions");
    assert_eq!(
        c.status("/", &[("x-key", "spent")]).await,
        429,
        "the flood reset a spent limit"
    );
}

async fn flood(c: &TestClient, from: u64, n: u64) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    let key = format!("flood-{}", from + i);
                    assert_eq!(c.status("/", &[("x-key", &key)]).await, 200);
                    i += TASKS;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}
