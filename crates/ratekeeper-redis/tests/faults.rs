//! Real faults: a Sentinel failover under load, a server restart, a flushed
//! script cache. Each test runs its own servers, since it breaks them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ratekeeper_core::{Algorithm, ErrorKind, Limiter, Rule, Storage};
use ratekeeper_redis::RedisStorage;
use ratekeeper_testkit::redis::{RedisSentinel, RedisServer, Reply};

/// Liveness bounds: how long a recovery may take before the test calls it
/// stuck. Not performance assertions.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

fn generous_rule() -> Rule {
    Rule::new("load", Algorithm::Gcra, "1000000/s".parse().unwrap()).unwrap()
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    transient_errors: AtomicU64,
    permanent_errors: parking_lot::Mutex<Vec<String>>,
    last_transient: parking_lot::Mutex<Option<String>>,
    first_error: parking_lot::Mutex<Option<Instant>>,
    last_error: parking_lot::Mutex<Option<Instant>>,
}

impl Tally {
    fn record(&self, result: ratekeeper_core::Result<ratekeeper_core::Decision>) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let now = Instant::now();
                self.first_error.lock().get_or_insert(now);
                *self.last_error.lock() = Some(now);
                if e.is_transient()
                    && matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout)
                {
                    self.transient_errors.fetch_add(1, Ordering::Relaxed);
                    *self.last_transient.lock() = Some(e.to_string());
                } else {
                    self.permanent_errors.lock().push(e.to_string());
                }
            }
        }
    }
}

impl Tally {
    fn summary(&self) -> String {
        format!(
            "{} ok, {} transient errors (last: {:?}), permanent: {:?}",
            self.ok.load(Ordering::Relaxed),
            self.transient_errors.load(Ordering::Relaxed),
            self.last_transient.lock(),
            self.permanent_errors.lock()
        )
    }

    /// Waits until, after the fault at `since`, a second has passed without
    /// errors and 200 decisions more have succeeded; panics with `context()`
    /// after [`RECOVERY_BOUND`].
    async fn wait_for_recovery(&self, since: Instant, context: impl Fn() -> String) {
        let at_fault = self.ok.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let calm_since = self.last_error.lock().map_or(since, |t| t.max(since));
            let recovered = self.ok.load(Ordering::Relaxed) > at_fault + 200;
            if recovered && calm_since.elapsed() > Duration::from_secs(1) {
                return;
            }
            assert!(
                since.elapsed() < RECOVERY_BOUND,
                "no recovery: {}\n{}",
                self.summary(),
                context()
            );
        }
    }
}

/// Tasks deciding on distinct keys until stopped, counting what they get.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `tasks` tasks on `limiter`.
    fn start(limiter: &Limiter, tasks: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let tasks = (0..tasks)
            .map(|t| {
                let (limiter, stop, tally) = (limiter.clone(), stop.clone(), tally.clone());
                tokio::spawn(async move {
                    let rule = generous_rule();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        tally.record(limiter.check(&rule, &format!("k{t}-{}", i % 50)).await);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self { stop, tally, tasks }
    }

    /// Stops the tasks (none may have panicked) and checks that every error
    /// they met was transient, during `what`.
    async fn finish(self, what: &str) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("no load task panicked");
        }
        assert!(
            self.tally.permanent_errors.lock().is_empty(),
            "only transient errors {what}: {}",
            self.tally.summary()
        );
        self.tally
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sentinel_failover_under_load_is_followed() {
    let group = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .unwrap();
    let old_master = group.master_port();
    let store = RedisStorage::connect(&format!(
        "{}?prefix={}",
        group.url(),
        common::unique_prefix(false)
    ))
    .await
    .unwrap();
    let limiter = Limiter::new(Arc::new(store.clone()));
    let load = Load::start(&limiter, 8);
    let tally = load.tally.clone();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tally.ok.load(Ordering::Relaxed);
    assert!(before > 0, "the load runs before the failover");
    let group = Arc::new(group);
    let new_master = {
        let group = group.clone();
        tokio::task::spawn_blocking(move || group.failover())
            .await
            .unwrap()
    };
    assert_ne!(new_master, old_master);
    let failed_over = Instant::now();

    // Keep the load on until decisions have succeeded again for a while.
    tally
        .wait_for_recovery(failed_over, || "after a Sentinel failover".to_owned())
        .await;
    let tally = load.finish("during a failover").await;
    let (first, last) = (*tally.first_error.lock(), *tally.last_error.lock());
    if let (Some(first), Some(last)) = (first, last) {
        let window = last - first;
        eprintln!(
            "failover: {} transient errors over {window:?}; {} decisions in all",
            tally.transient_errors.load(Ordering::Relaxed),
            tally.ok.load(Ordering::Relaxed)
        );
        assert!(window < RECOVERY_BOUND, "errors went on for {window:?}");
    }
    let stats = store.stats().await.unwrap();
    let address = stats
        .details
        .iter()
        .find(|(k, _)| k == "address")
        .map(|(_, v)| v.clone());
    assert_eq!(
        address,
        Some(format!("127.0.0.1:{new_master}")),
        "{stats:?}"
    );
    // The new master holds what the store writes now.
    let rule = generous_rule();
    limiter.check(&rule, "after").await.unwrap();
    let key = store.redis_key(&limiter.state_key(&rule, "after"));
    let new = group
        .servers()
        .into_iter()
        .find(|s| s.port() == new_master)
        .unwrap();
    assert_eq!(new.cmd(&["EXISTS", &key]), Reply::Int(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_a_restart() {
    let mut server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let store = RedisStorage::connect(&format!("{}?response_timeout=300ms", server.url()))
        .await
        .unwrap();
    let limiter = Limiter::new(Arc::new(store.clone()));
    let rule = Rule::new(
        "restart",
        Algorithm::FixedWindow,
        "10/hour".parse().unwrap(),
    )
    .unwrap();
    assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());

    server.stop();
    for _ in 0..5 {
        let err = limiter.check(&rule, "k").await.unwrap_err();
        assert!(
            err.is_transient() && matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{err}"
        );
    }
    let stats = store.stats().await.unwrap();
    assert!(
        stats
            .details
            .iter()
            .any(|(k, v)| k == "connection" && v.starts_with("unavailable")),
        "{stats:?}"
    );

    let mut server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let restarted = Instant::now();
    // The same store, not a new one, decides again (the server kept no data
    // and no scripts: the scripts are sent again by themselves).
    loop {
        match limiter.check(&rule, "k").await {
            Ok(d) => {
                assert!(d.is_allowed());
                break;
            }
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                assert!(
                    restarted.elapsed() < RECOVERY_BOUND,
                    "no reconnect after the restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!("reconnected {:?} after the restart", restarted.elapsed());
    server.stop();
}

/// Field `field` (`calls`, `failed_calls`) of command `name`'s line in
/// `INFO commandstats`: 0 when the server has not run it.
fn command_stat(stats: &str, name: &str, field: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:")))
        .and_then(|rest| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        })
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
}

/// How many times the server ran command `name`, from `INFO commandstats`.
fn command_calls(stats: &str, name: &str) -> u64 {
    command_stat(stats, name, "calls")
}

fn hourly_rule() -> Rule {
    Rule::new(
        "flush",
        Algorithm::SlidingWindowCounter,
        "100/hour".parse().unwrap(),
    )
    .unwrap()
}

/// Decisions go through the function library; a library flushed away
/// (`FUNCTION FLUSH`, a new node) is loaded again by the first call that
/// misses it, which then runs, and no decision is lost or counted twice.
#[tokio::test]
async fn a_flushed_function_library_is_loaded_again_by_itself() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let store = RedisStorage::connect(&server.url()).await.unwrap();
    let limiter = Limiter::new(Arc::new(store));
    let rule = hourly_rule();
    limiter.check(&rule, "k").await.unwrap();
    assert_eq!(
        server.cmd(&["FUNCTION", "FLUSH"]),
        Reply::Status("OK".into())
    );
    server.cmd(&["CONFIG", "RESETSTAT"]);
    counts_down(&limiter, &rule, "k", 90..=98).await;
    // FCALL missed the library once, FUNCTION LOAD put it back, and every
    // call (the missed one again) ran the function; no script ran.
    let stats = server.cmd(&["INFO", "commandstats"]).text();
    let calls = |name: &str| command_calls(&stats, name);
    assert_eq!(calls("function|load"), 1, "{stats}");
    assert_eq!(calls("fcall"), 10, "{stats}");
    assert_eq!(command_stat(&stats, "fcall", "failed_calls"), 1, "{stats}");
    assert_eq!((calls("eval"), calls("evalsha")), (0, 0), "{stats}");

    // A call the server refuses for another reason (a full server) does
    // not load the library again: the error is the answer.
    let stats = refused_when_full(&server, &limiter, &rule).await;
    let calls = |name: &str| command_calls(&stats, name);
    assert_eq!(calls("function|load"), 0, "{stats}");
    assert_eq!((calls("eval"), calls("evalsha")), (0, 0), "{stats}");
}

/// Decisions on `key` whose remaining counts go down through `remaining`,
/// from its top.
async fn counts_down(
    limiter: &Limiter,
    rule: &Rule,
    key: &str,
    remaining: std::ops::RangeInclusive<u64>,
) {
    for expected in remaining.rev() {
        let d = limiter.check(rule, key).await.unwrap();
        assert_eq!(d.remaining(), expected, "{key}");
    }
}

/// A decision while `server` is full (`maxmemory` 1 byte): refused,
/// `Unavailable`; then the server's `INFO commandstats` for that decision
/// alone, once a decision is answered again with memory freed.
async fn refused_when_full(server: &RedisServer, limiter: &Limiter, rule: &Rule) -> String {
    assert_eq!(
        server.cmd(&["CONFIG", "SET", "maxmemory", "1"]),
        Reply::Status("OK".into())
    );
    server.cmd(&["CONFIG", "RESETSTAT"]);
    let err = limiter.check(rule, "full").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let stats = server.cmd(&["INFO", "commandstats"]).text();
    server.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    assert!(limiter.check(rule, "full").await.unwrap().is_allowed());
    stats
}

/// A user whose ACL allows no functions (as on a server without them)
/// decides through the scripts, with the same answers: whether it may call
/// functions but not load them (found out on the first decision) or may do
/// neither (found out at connect). A flushed script cache is then refilled
/// by itself: `EVALSHA` meets `NOSCRIPT` once and `EVAL` sends the source.
#[tokio::test]
async fn without_functions_decisions_run_as_scripts() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    for (user, denied) in [
        ("nofunction", &["-function"][..]),
        ("nofcall", &["-fcall", "-function"]),
    ] {
        let mut acl = vec!["ACL", "SETUSER", user, "on", ">secret", "~*", "+@all"];
        acl.extend(denied);
        assert_eq!(server.cmd(&acl), Reply::Status("OK".into()));
    }
    let url = |user: &str| format!("redis://{user}:secret@127.0.0.1:{}", server.port());
    let rule = hourly_rule();

    // Allowed FCALL but not FUNCTION LOAD, with no library on the server,
    // and not connected ahead (nothing loaded): the first decision finds
    // out.
    assert_eq!(
        server.cmd(&["FUNCTION", "FLUSH"]),
        Reply::Status("OK".into())
    );
    server.cmd(&["SCRIPT", "FLUSH"]);
    let store = RedisStorage::builder_from_url(&url("nofunction"))
        .unwrap()
        .build()
        .unwrap();
    let limiter = Limiter::new(Arc::new(store));
    server.cmd(&["CONFIG", "RESETSTAT"]);
    counts_down(&limiter, &rule, "a", 95..=99).await;
    let stats = server.cmd(&["INFO", "commandstats"]).text();
    let calls = |name: &str| command_calls(&stats, name);
    // One FCALL missed the library, one FUNCTION LOAD was refused, and
    // every decision then ran as a script (the first sending its source).
    assert_eq!(calls("fcall"), 1, "{stats}");
    assert_eq!(
        command_stat(&stats, "function|load", "rejected_calls"),
        1,
        "{stats}"
    );
    assert_eq!((calls("eval"), calls("evalsha")), (1, 5), "{stats}");

    // Allowed neither: connecting finds out (its FUNCTION LOAD refused),
    // and no FCALL is ever sent.
    server.cmd(&["CONFIG", "RESETSTAT"]);
    let store = RedisStorage::connect(&url("nofcall")).await.unwrap();
    let stats = server.cmd(&["INFO", "commandstats"]).text();
    let rejected = |name: &str| command_stat(&stats, name, "rejected_calls");
    assert_eq!(rejected("function|load"), 1, "{stats}");
    assert_eq!(
        (command_calls(&stats, "fcall"), rejected("fcall")),
        (0, 0),
        "{stats}"
    );
    let limiter = Limiter::new(Arc::new(store));
    limiter.check(&rule, "k").await.unwrap();
    assert_eq!(server.cmd(&["SCRIPT", "FLUSH"]), Reply::Status("OK".into()));
    server.cmd(&["CONFIG", "RESETSTAT"]);
    counts_down(&limiter, &rule, "k", 90..=98).await;
    let stats = server.cmd(&["INFO", "commandstats"]).text();
    let calls = |name: &str| command_calls(&stats, name);
    assert_eq!(calls("eval"), 1, "{stats}");
    assert_eq!(calls("evalsha"), 9, "{stats}");
    assert_eq!(
        command_stat(&stats, "fcall", "rejected_calls"),
        0,
        "{stats}"
    );

    // A script the server refuses for another reason (a full server) is
    // not sent again by its source: the error is the answer.
    let stats = refused_when_full(&server, &limiter, &rule).await;
    let calls = |name: &str| command_calls(&stats, name);
    assert_eq!((calls("eval"), calls("evalsha")), (0, 1), "{stats}");

    // A server without functions (as before Redis 7: FCALL and FUNCTION
    // are unknown commands there).
    let older = tokio::task::spawn_blocking(|| {
        RedisServer::start_with(&["rename-command FCALL \"\"", "rename-command FUNCTION \"\""])
    })
    .await
    .unwrap();
    assert!(
        matches!(older.cmd(&["FUNCTION", "LIST"]), Reply::Error(e) if e.contains("unknown command"))
    );
    let store = RedisStorage::connect(&older.url()).await.unwrap();
    let limiter = Limiter::new(Arc::new(store));
    older.cmd(&["CONFIG", "RESETSTAT"]);
    counts_down(&limiter, &rule, "k", 95..=99).await;
    let stats = older.cmd(&["INFO", "commandstats"]).text();
    assert_eq!(command_calls(&stats, "evalsha"), 5, "{stats}");
    // The same, found out by a store's first decision (not connected
    // ahead): its FCALL is an unknown command.
    let store = RedisStorage::builder_from_url(&older.url())
        .unwrap()
        .build()
        .unwrap();
    let limiter = Limiter::new(Arc::new(store));
    counts_down(&limiter, &rule, "lazy", 95..=99).await;
}

/// A user refused a key by its ACL (`NOPERM` on the key, not on `FCALL`)
/// gets that refusal as the answer, and the store keeps calling the
/// functions for the keys it may use.
#[tokio::test]
async fn a_key_the_acl_refuses_does_not_turn_functions_off() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let acl = [
        "ACL",
        "SETUSER",
        "keyed",
        "on",
        ">secret",
        "~allowed:*",
        "+@all",
    ];
    assert_eq!(server.cmd(&acl), Reply::Status("OK".into()));
    let url = format!(
        "redis://keyed:secret@127.0.0.1:{}?prefix=allowed:",
        server.port()
    );
    let allowed = RedisStorage::connect(&url).await.unwrap();
    let denied = allowed.with_prefix("denied:");
    let rule = hourly_rule();
    let allowed = Limiter::new(Arc::new(allowed));
    let denied = Limiter::new(Arc::new(denied));
    assert_eq!(allowed.check(&rule, "k").await.unwrap().remaining(), 99);
    let err = denied.check(&rule, "k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(!err.is_transient(), "{err}");
    server.cmd(&["CONFIG", "RESETSTAT"]);
    assert_eq!(allowed.check(&rule, "k").await.unwrap().remaining(), 98);
    let stats = server.cmd(&["INFO", "commandstats"]).text();
    let calls = |name: &str| command_calls(&stats, name);
    assert_eq!((calls("fcall"), calls("evalsha")), (1, 0), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_master_failure_is_survived_through_its_replica() {
    use ratekeeper_testkit::redis::RedisCluster;
    let mut cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap();
    let store = RedisStorage::connect(&format!(
        "{}?prefix={}",
        cluster.url(),
        common::unique_prefix(false)
    ))
    .await
    .unwrap();
    let limiter = Limiter::new(Arc::new(store));
    let load = Load::start(&limiter, 8);
    let tally = load.tally.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Kill a master outright; its replica must take over its slots.
    let victim = cluster.nodes().iter().position(is_master).unwrap();
    cluster.nodes_mut()[victim].stop();
    let killed = Instant::now();
    tally
        .wait_for_recovery(killed, || {
            let alive = cluster
                .nodes()
                .iter()
                .find(|n| ratekeeper_testkit::redis::command(n.port(), &["PING"]).is_ok());
            alive.map_or_else(String::new, |n| n.cmd(&["CLUSTER", "NODES"]).text())
        })
        .await;
    let tally = load.finish("while the replica takes over").await;
    let first = tally.first_error.lock().unwrap();
    let last = tally.last_error.lock().unwrap();
    eprintln!(
        "cluster failover: {} transient errors over {:?} ({:?} after the kill)",
        tally.transient_errors.load(Ordering::Relaxed),
        last - first,
        last - killed
    );
}

fn is_master(node: &RedisServer) -> bool {
    matches!(node.cmd(&["ROLE"]), Reply::Array(Some(items)) if items.first().map(Reply::text).as_deref() == Some("master"))
}

/// A full server (`maxmemory`, `noeviction`) makes decisions fail with a
/// transient error; they work again once memory is freed.
#[tokio::test]
async fn a_full_server_fails_decisions_transiently() {
    let server = tokio::task::spawn_blocking(|| {
        RedisServer::start_with(&["maxmemory 2mb", "maxmemory-policy noeviction"])
    })
    .await
    .unwrap();
    let store = RedisStorage::connect(&server.url()).await.unwrap();
    let limiter = Limiter::new(Arc::new(store.clone()));
    let rule = generous_rule();
    let filler = "x".repeat(10_000);
    let mut i = 0;
    while matches!(
        server.cmd(&["SET", &format!("fill{i}"), &filler]),
        Reply::Status(_)
    ) {
        i += 1;
        assert!(i < 10_000, "maxmemory never refused a write");
    }
    // Well past the limit, so no write squeezes in.
    server.cmd(&["CONFIG", "SET", "maxmemory", "1mb"]);
    let err = limiter.check(&rule, "k").await.unwrap_err();
    assert!(
        err.is_transient() && err.kind() == ErrorKind::Unavailable,
        "{err}"
    );
    server.cmd(&["FLUSHALL"]);
    server.cmd(&["CONFIG", "SET", "maxmemory", "2mb"]);
    assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
}
