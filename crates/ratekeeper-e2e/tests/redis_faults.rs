//! Redis faults under load, as an operator meets them: the axum example
//! server as a real process over a real redis-server, a steady load of real
//! HTTP requests, and the server killed, then started again. Every request
//! gets an answer by the error mode (503 when failing closed, an unlimited
//! 200 when failing open) while Redis is gone, no request hangs, and the
//! limiter comes back by itself once Redis does. (Sentinel failovers and
//! Cluster node losses under load are in `crates/ratekeeper-redis/tests/faults.rs`.)
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
use ratekeeper_testkit::http::TestClient;
use ratekeeper_testkit::redis::RedisServer;

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

/// `redis` started again (off the runtime's threads: it waits for the port).
async fn restarted(mut redis: RedisServer) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap()
}

fn server(redis: &RedisServer, on_error: &str) -> Example {
    limited_server(redis, on_error, "1000000")
}

fn limited_server(redis: &RedisServer, on_error: &str, limit: &str) -> Example {
    Example::start(
        "axum_server",
        &[
            "--storage",
            &redis.url(),
            "--limit",
            limit,
            "--window",
            "1h",
            "--store-timeout",
            "100",
            "--on-error",
            on_error,
        ],
    )
}

/// Statuses of `n` requests sent `at_once` at a time.
async fn statuses(client: &TestClient, n: usize, at_once: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n / at_once {
        let batch: Vec<_> = (0..at_once)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move { c.status("/", &[]).await })
            })
            .collect();
        for b in batch {
            out.push(b.await.unwrap());
        }
    }
    out
}

/// The breaker's probe dropped with its request: a client closes its
/// connection while its request is the half-open probe, and Redis comes
/// back. The limiter must not stay half-open (it answered 503 for 41 s and
/// more failing closed, and let everything through failing open): within a
/// few cool-downs the limiter decides again and its limit holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_dropped_by_its_client_does_not_leave_the_breaker_half_open() {
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    for on_error in ["deny", "allow"] {
        redis.cmd(&["FLUSHALL"]);
        let server = limited_server(&redis, on_error, "3");
        let c = TestClient::new(server.addr);
        assert_eq!(c.status("/", &[]).await, 200);
        redis.pause();
        // Five failures open the breaker (5 × the 100 ms deadline).
        let failed = statuses(&c, 5, 1).await;
        let expected = if on_error == "deny" { 503 } else { 200 };
        assert_eq!(failed, [expected; 5], "{on_error}");
        // Past the cool-down, one request becomes the probe; its client
        // gives up after 30 ms, dropping the request.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let dropped = tokio::time::timeout(Duration::from_millis(30), c.status("/", &[])).await;
        assert!(dropped.is_err(), "the probe waits for the paused store");
        redis.resume();
        // Decided by the limiter again. Every command sent while Redis was
        // paused (five timed out, the dropped probe) still ran once it
        // resumed: a timeout never un-sends a request, so the key's 3 units
        // are spent, and from now on every answer is the limiter's 429.
        let back = Instant::now();
        loop {
            let r = c.get("/", &[]).await;
            if r.header("ratelimit").is_some() {
                assert_eq!(r.status, 429, "{on_error}: {}", r.body);
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(5),
                "{on_error}: still {} without a decision {:?} after Redis came back",
                r.status,
                back.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            statuses(&c, 5, 1).await,
            [429; 5],
            "{on_error}: the limit holds again"
        );
    }
}

/// Redis killed while an idle server fails its requests (all 503), then
/// started again: a request arriving a second and a half later is served at
/// once, four at a time, without traffic having to wake the breaker first
/// (before, the first became the probe and the three beside it got 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_does_not_wait_for_traffic() {
    let mut redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let server = server(&redis, "deny");
    let c = TestClient::new(server.addr);
    assert_eq!(c.status("/", &[]).await, 200);
    redis.stop();
    assert_eq!(statuses(&c, 20, 4).await, [503; 20]);
    let mut redis = restarted(redis).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let next = statuses(&c, 4, 4).await;
    assert_eq!(next, [200; 4], "the first requests after an idle recovery");
    redis.stop();
}

/// Statuses of `n` requests sent `at_once` at a time, each with the quota
/// its `RateLimit-Policy` header names (`q=N`; 0 without one).
async fn quotas(client: &TestClient, n: usize, at_once: usize) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    for _ in 0..n / at_once {
        let batch: Vec<_> = (0..at_once)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move {
                    let r = tokio::time::timeout(HANG, c.get("/", &[]))
                        .await
                        .expect("an answer, never a hang");
                    let quota = r
                        .header("ratelimit-policy")
                        .and_then(|v| v.split(";q=").nth(1))
                        .and_then(|q| q.split(';').next())
                        .and_then(|q| q.parse().ok())
                        .unwrap_or(0);
                    (r.status, quota)
                })
            })
            .collect();
        for b in batch {
            out.push(b.await.unwrap());
        }
    }
    out
}

/// Degraded mode through two instances of the example server over one
/// Redis, 20 requests an hour shared: while Redis is dead, each instance
/// decides on its own with half the quota (10 admitted each, told `q=10`,
/// the rest refused with 429: never a 503, never a hang), and once Redis is
/// back both decide on it again (`q=20`) without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_mode_holds_each_instances_share_while_redis_is_dead() {
    let mut redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let instance = || {
        Example::start(
            "axum_server",
            &[
                "--storage",
                &redis.url(),
                "--algorithm",
                "fixed_window",
                "--limit",
                "20",
                "--window",
                "1h",
                "--store-timeout",
                "100",
                "--on-error",
                "degraded",
                "--degraded-instances",
                "2",
            ],
        )
    };
    let (a, b) = (instance(), instance());
    let clients = [TestClient::new(a.addr), TestClient::new(b.addr)];
    for c in &clients {
        assert_eq!(quotas(c, 4, 2).await, [(200, 20); 4], "decided on Redis");
    }
    redis.stop();
    for c in &clients {
        let seen = quotas(c, 32, 4).await;
        let admitted = seen.iter().filter(|s| **s == (200, 10)).count();
        let refused = seen.iter().filter(|s| **s == (429, 10)).count();
        assert_eq!((admitted, refused), (10, 22), "{seen:?}");
    }
    let mut redis = restarted(redis).await;
    let back = Instant::now();
    for c in &clients {
        loop {
            if quotas(c, 1, 1).await[0].1 == 20 {
                break;
            }
            assert!(back.elapsed() < RECOVERY_BOUND, "still degraded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    redis.stop();
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
    let mut redis = restarted(redis).await;
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
