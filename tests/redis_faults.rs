//! Redis faults under load, as an operator meets them: the axum example
//! server as a real process over a real redis-server, a steady load of real
//! HTTP requests, and the server killed, then started again. Every request
//! gets an answer by the error mode (503 when failing closed, an unlimited
//! 200 when failing open) while Redis is gone, no request hangs, and the
//! limiter comes back by itself once Redis does. (Sentinel failovers and
//! Cluster node losses under load are in `crates/ratelimit-redis/tests/faults.rs`.)
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::example::Example;
use ratelimit_testkit::http::TestClient;
use ratelimit_testkit::redis::RedisServer;

/// Liveness bounds, not performance assertions.
const HANG: Duration = Duration::from_secs(10);
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// What a load saw.
#[derive(Default)]
struct Seen {
    /// 200 with rate-limit headers: decided by the limiter.
    limited: AtomicU64,
    /// Answered by the error mode: 503 (closed) or 200 without headers (open).
    error_mode: AtomicU64,
    /// Anything else, or no answer: a bug.
    other: Mutex<Vec<String>>,
    last_error_mode: Mutex<Option<Instant>>,
    /// The slowest error-mode answer, in µs.
    slowest_error_us: AtomicU64,
}

struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(server: &Example, tasks: usize, fail_open: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let tasks = (0..tasks)
            .map(|_| {
                let (stop, seen) = (stop.clone(), seen.clone());
                let client = TestClient::new(server.addr);
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        let reply =
                            tokio::time::timeout(HANG, client.try_send_bytes("GET", "/", &[]))
                                .await;
                        let took = start.elapsed();
                        match reply {
                            Ok(Ok(r)) if r.status == 200 && r.header("ratelimit").is_some() => {
                                seen.limited.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Ok(r))
                                if (fail_open
                                    && r.status == 200
                                    && r.header("ratelimit").is_none())
                                    || (!fail_open && r.status == 503) =>
                            {
                                seen.error_mode.fetch_add(1, Ordering::Relaxed);
                                *seen.last_error_mode.lock().unwrap() = Some(Instant::now());
                                let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                                seen.slowest_error_us.fetch_max(us, Ordering::Relaxed);
                            }
                            Ok(Ok(r)) => seen
                                .other
                                .lock()
                                .unwrap()
                                .push(format!("{} {}", r.status, r.body)),
                            Ok(Err(e)) => seen.other.lock().unwrap().push(e),
                            Err(_) => seen
                                .other
                                .lock()
                                .unwrap()
                                .push(format!("no answer within {HANG:?}")),
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self { stop, seen, tasks }
    }

    fn limited(&self) -> u64 {
        self.seen.limited.load(Ordering::Relaxed)
    }

    fn error_mode(&self) -> u64 {
        self.seen.error_mode.load(Ordering::Relaxed)
    }

    /// Waits until, after `since`, a second passed without an error-mode
    /// answer and 100 more requests were decided; how long after `since`
    /// the last error-mode answer came.
    async fn wait_for_recovery(&self, since: Instant, what: &str) -> Duration {
        let at = self.limited();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let last = *self.seen.last_error_mode.lock().unwrap();
            let calm = last.map_or(since, |t| t.max(since));
            if self.limited() > at + 100 && calm.elapsed() > Duration::from_secs(1) {
                return calm.saturating_duration_since(since);
            }
            assert!(since.elapsed() < RECOVERY_BOUND, "{what}: no recovery");
        }
    }

    async fn finish(self, what: &str) -> Arc<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("no load task panicked");
        }
        let other = self.seen.other.lock().unwrap().clone();
        assert!(other.is_empty(), "{what}: unexpected answers {other:?}");
        self.seen
    }
}

fn server(redis: &RedisServer, on_error: &str) -> Example {
    Example::start(
        "axum_server",
        &[
            "--storage",
            &redis.url(),
            "--limit",
            "1000000",
            "--window",
            "1h",
            "--store-timeout",
            "100",
            "--on-error",
            on_error,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_follows_the_error_mode_and_recovers_by_itself() {
    let mut redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let closed = server(&redis, "deny");
    let open = server(&redis, "allow");
    let (closed_load, open_load) = (Load::start(&closed, 4, false), Load::start(&open, 4, true));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(closed_load.limited() > 0 && open_load.limited() > 0);

    redis.stop();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(closed_load.error_mode() > 0, "fail closed answered 503");
    assert!(open_load.error_mode() > 0, "fail open let requests through");
    let mut redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    let back = Instant::now();
    let closed_after = closed_load.wait_for_recovery(back, "fail closed").await;
    let open_after = open_load.wait_for_recovery(back, "fail open").await;
    let c = closed_load.finish("fail closed").await;
    let o = open_load.finish("fail open").await;
    eprintln!(
        "redis killed for 1.5 s: fail closed answered {} × 503 (slowest {} ms), last {:?} after Redis was back; \
         fail open let {} through (slowest {} ms), last {:?} after",
        c.error_mode.load(Ordering::Relaxed),
        c.slowest_error_us.load(Ordering::Relaxed) / 1_000,
        closed_after,
        o.error_mode.load(Ordering::Relaxed),
        o.slowest_error_us.load(Ordering::Relaxed) / 1_000,
        open_after
    );
    redis.stop();
}
