//! What each deployment adds: TLS (CA, client certificates), the Cluster's key
//! layout, server time, prefixes, stats.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use ratekeeper_core::{Algorithm, ErrorKind, Limiter, ManualClock, Rule, Storage, Timestamp};
use ratekeeper_redis::{RedisConfig, RedisStorage, TimeSource, Topology};
use ratekeeper_testkit::redis::{RedisTls, Reply, command};

fn rule(name: &str, quota: &str) -> Rule {
    Rule::new(name, Algorithm::Gcra, quota.parse().unwrap()).unwrap()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(" / ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test]
async fn tls_with_the_servers_ca() {
    let tls = tokio::task::spawn_blocking(|| RedisTls::start(false))
        .await
        .unwrap();
    let store = RedisStorage::builder(Topology::Standalone(tls.url()))
        .tls_root_certificate(tls.ca_pem())
        .connect()
        .await
        .unwrap();
    let limiter = Limiter::new(Arc::new(store.clone()));
    let r = rule("tls", "2/hour");
    assert!(limiter.check(&r, "k").await.unwrap().is_allowed());
    assert!(limiter.check(&r, "k").await.unwrap().is_allowed());
    assert!(!limiter.check(&r, "k").await.unwrap().is_allowed());
    // The state went over TLS to the server.
    let key = store.redis_key(&limiter.state_key(&r, "k"));
    assert_eq!(tls.server().cmd(&["EXISTS", &key]), Reply::Int(1));

    // The same through the URL options.
    let dir = std::env::temp_dir().join(format!("ratelimit-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, tls.ca_pem()).unwrap();
    let store = RedisStorage::connect(&format!("{}?tls_ca_file={}", tls.url(), ca.display()))
        .await
        .unwrap();
    assert!(store.exists("nothing").await.is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_refuses_an_unknown_certificate_and_insecure_skips_the_check() {
    let tls = tokio::task::spawn_blocking(|| RedisTls::start(false))
        .await
        .unwrap();
    // The system's roots do not know the test CA. (A long response
    // deadline: a handshake on a busy machine can take longer than the
    // default, and this test is about the certificate, not speed.)
    let url = format!("{}?response_timeout=5s&connect_timeout=5s", tls.url());
    let err = RedisStorage::connect(&url).await.unwrap_err();
    let chain = error_chain(&err);
    assert!(
        chain.to_lowercase().contains("certificate") || chain.contains("UnknownIssuer"),
        "{chain}"
    );
    // A plain-text client on the TLS port gets an error, not a hang.
    let err = RedisStorage::connect(&format!(
        "redis://127.0.0.1:{}?response_timeout=500ms&connect_timeout=500ms",
        tls.tls_port()
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{err}"
    );
    // #insecure: encrypted, unverified (for tests and self-signed set-ups).
    let store = RedisStorage::connect(&format!("{}/#insecure", tls.url()))
        .await
        .unwrap();
    store.set("k", b"v", Duration::from_secs(5)).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn tls_with_a_client_certificate() {
    let tls = tokio::task::spawn_blocking(|| RedisTls::start(true))
        .await
        .unwrap();
    let without = RedisStorage::builder(Topology::Standalone(tls.url()))
        .tls_root_certificate(tls.ca_pem())
        .connect()
        .await;
    assert!(without.is_err(), "the server requires a client certificate");
    let (cert, key) = tls.client_certificate().unwrap();
    let store = RedisStorage::builder(Topology::Standalone(tls.url()))
        .tls_root_certificate(tls.ca_pem())
        .tls_client_certificate(cert, key)
        .connect()
        .await
        .unwrap();
    let limiter = Limiter::new(Arc::new(store));
    assert!(
        limiter
            .check(&rule("mtls", "1/hour"), "k")
            .await
            .unwrap()
            .is_allowed()
    );
}

/// Keys spread over every master; the rules of one request on one key share a
/// slot; a request whose keys fall in different slots is refused clearly and
/// writes nothing; clear and stats cover every master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keys_spread_and_requests_stay_in_one_slot() {
    let cluster = tokio::task::spawn_blocking(common::cluster).await.unwrap();
    let prefix = common::unique_prefix(false);
    let store = RedisStorage::connect(&format!("{}?prefix={prefix}", cluster.url()))
        .await
        .unwrap();
    let limiter = Limiter::new(Arc::new(store.clone()));
    // Not per second: a GCRA state lives one emission interval, and the
    // keys must still be there when they are counted below, however slow
    // the machine.
    let per_minute = rule("pm", "10/minute");
    let per_hour = rule("ph", "1000/hour");
    for i in 0..60 {
        let user = format!("user-{i}");
        let d = limiter
            .check_all(&[(&per_minute, &user), (&per_hour, &user)], 1)
            .await
            .unwrap();
        assert!(d.is_allowed());
    }
    let pattern = format!("{prefix}*");
    let mut per_master = Vec::new();
    for node in cluster.nodes() {
        let reply = node.cmd(&["SCAN", "0", "MATCH", &pattern, "COUNT", "100000"]);
        let Reply::Array(Some(parts)) = reply else {
            panic!("{reply:?}")
        };
        let Reply::Array(Some(keys)) = &parts[1] else {
            panic!("{parts:?}")
        };
        per_master.push(keys.len());
    }
    assert_eq!(per_master.iter().sum::<usize>(), 120, "{per_master:?}");
    assert!(
        per_master.iter().all(|n| *n > 0),
        "keys spread over every master: {per_master:?}"
    );

    // Two keys in different slots cannot be decided atomically.
    let (a, b) = (0..)
        .map(|i| (format!("a{i}"), format!("b{i}")))
        .find(|(a, b)| {
            redis::cluster_routing::Slot::for_key(store.redis_key(&format!("ph:{a}")))
                != redis::cluster_routing::Slot::for_key(store.redis_key(&format!("pm:{b}")))
        })
        .unwrap();
    let err = limiter
        .check_all(&[(&per_hour, &a), (&per_minute, &b)], 1)
        .await
        .unwrap_err();
    // Refused before it reaches the server, with the way out.
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("must share a Redis Cluster slot")
            && err.to_string().contains("hash tag"),
        "{err}"
    );
    assert!(
        !store
            .exists(&limiter.state_key(&per_hour, &a))
            .await
            .unwrap()
    );
    // Keys grouped by a brace share a slot, so they can.
    let d = limiter
        .check_all(&[(&per_hour, "acme}user-1"), (&per_minute, "acme}all")], 1)
        .await
        .unwrap();
    assert!(d.is_allowed());

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.keys, Some(122), "{stats:?}");
    assert!(
        stats
            .details
            .contains(&("cluster_masters".to_owned(), "3".to_owned())),
        "{stats:?}"
    );
    assert_eq!(store.clear().await.unwrap(), 122);
    assert_eq!(store.stats().await.unwrap().keys, Some(0));
}

/// With server time, limiters whose clocks disagree by decades still share
/// one timeline.
#[tokio::test]
async fn server_time_ignores_skewed_client_clocks() {
    let url = format!(
        "{}?prefix={}",
        common::standalone().url(),
        common::unique_prefix(false)
    );
    let store: Arc<dyn Storage> = Arc::new(RedisStorage::connect(&url).await.unwrap());
    let past = Limiter::builder(store.clone())
        .clock(ManualClock::new(Timestamp::from_micros(
            978_307_200_000_000,
        ))) // 2001
        .build();
    let future = Limiter::builder(store.clone())
        .clock(ManualClock::new(Timestamp::from_micros(
            2_208_988_800_000_000,
        ))) // 2040
        .build();
    let r = rule("skew", "2/hour");
    assert!(past.check(&r, "k").await.unwrap().is_allowed());
    assert!(future.check(&r, "k").await.unwrap().is_allowed());
    for limiter in [&past, &future] {
        let d = limiter.check(&r, "k").await.unwrap();
        let wait = d.retry_after().unwrap();
        // One unit comes back every 30 minutes of server time.
        assert!(
            wait > Duration::from_secs(29 * 60) && wait <= Duration::from_secs(30 * 60),
            "{wait:?}"
        );
    }
}

#[tokio::test]
async fn clear_removes_only_its_own_prefix() {
    let server = common::standalone();
    let base = format!("{}?prefix=", server.url());
    let a = RedisStorage::connect(&format!("{base}app*a:"))
        .await
        .unwrap();
    let b = RedisStorage::connect(&format!("{base}app-b:"))
        .await
        .unwrap();
    let hour = Duration::from_secs(3600);
    for i in 0..2_500 {
        a.set(&format!("k{i}"), b"v", hour).await.unwrap();
    }
    b.set("k0", b"v", hour).await.unwrap();
    // Someone else's key that the glob `app*a:*` would match, unescaped.
    assert_eq!(
        command(server.port(), &["SET", "appXa:other", "v"]).unwrap(),
        Reply::Status("OK".into())
    );
    assert_eq!(a.clear().await.unwrap(), 2_500);
    assert!(b.exists("k0").await.unwrap());
    assert_eq!(
        command(server.port(), &["EXISTS", "appXa:other"]).unwrap(),
        Reply::Int(1)
    );
    // A view with another prefix shares the connections, not the keys.
    let c = b.with_prefix("app-c:");
    assert!(!c.exists("k0").await.unwrap());
    assert_eq!(c.prefix(), "app-c:");
}

#[tokio::test]
async fn stats_report_keys_memory_and_connection() {
    let store = common::store(&common::standalone().url(), false, TimeSource::Server);
    store.set("a", b"1", Duration::from_secs(60)).await.unwrap();
    store
        .set("b:c", b"2", Duration::from_secs(60))
        .await
        .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.backend, "redis");
    assert_eq!(stats.keys, Some(2));
    let detail = |name: &str| {
        stats
            .details
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(detail("topology").as_deref(), Some("standalone"));
    assert_eq!(detail("connection").as_deref(), Some("ok"));
    assert!(detail("used_memory").unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(detail("time_source").as_deref(), Some("server"));
}

#[tokio::test]
async fn a_bad_password_or_address_is_an_error_at_connect() {
    let server = common::standalone();
    let err = RedisStorage::connect(&format!(
        "redis://:wrong@127.0.0.1:{}?connect_timeout=500ms",
        server.port()
    ))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let port = ratekeeper_testkit::redis::free_port();
    let err = RedisStorage::connect(&format!(
        "redis://127.0.0.1:{port}?connect_timeout=300ms&response_timeout=300ms"
    ))
    .await
    .unwrap_err();
    assert!(err.is_transient(), "{err}");
    // Bad URLs never reach the network.
    assert_eq!(
        RedisConfig::from_url("redis://h?nonsense=1")
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn a_store_outside_a_runtime_or_without_timeouts_is_an_error_not_a_panic() {
    let err = RedisStorage::from_url("redis://127.0.0.1:1").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("tokio runtime"), "{err}");
    let err = RedisStorage::builder_from_url("redis://127.0.0.1:1")
        .unwrap()
        .response_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("above 0"), "{err}");
}

#[tokio::test]
async fn a_unix_socket_server() {
    let server = tokio::task::spawn_blocking(|| {
        let dir = std::env::temp_dir().join(format!("ratelimit-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let server = ratekeeper_testkit::redis::RedisServer::start_with(&[&format!(
            "unixsocket {}",
            socket.display()
        )]);
        (server, socket)
    })
    .await
    .unwrap();
    let (_server, socket) = server;
    let store = RedisStorage::connect(&format!("redis+unix://{}?db=3", socket.display()))
        .await
        .unwrap();
    let limiter = Limiter::new(Arc::new(store));
    let r = rule("unix", "1/hour");
    assert!(limiter.check(&r, "k").await.unwrap().is_allowed());
    assert!(!limiter.check(&r, "k").await.unwrap().is_allowed());
}

/// Keys under the prefix that someone else filled with another Redis type
/// give typed errors, not panics or protocol errors.
#[tokio::test]
async fn foreign_values_at_store_keys_are_typed_errors() {
    let server = common::standalone();
    let store = common::store(&server.url(), false, TimeSource::Server);
    let limiter = Limiter::new(Arc::new(store.clone()));
    let r = rule("foreign", "5/s");
    let state_key = store.redis_key(&limiter.state_key(&r, "k"));
    server.cmd(&["HSET", &state_key, "field", "value"]);
    let err = limiter.check(&r, "k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptState, "{err}");
    let plain = store.redis_key("plain");
    server.cmd(&["LPUSH", &plain, "x"]);
    assert_eq!(
        store.get("plain").await.unwrap_err().kind(),
        ErrorKind::WrongType
    );
    assert_eq!(
        store
            .increment("plain", 1, Duration::from_secs(5))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::WrongType
    );
    assert!(limiter.reset(&r, "k").await.unwrap());
    assert!(limiter.check(&r, "k").await.unwrap().is_allowed());
}

/// Whether `server` holds each of the six decision scripts.
fn scripts_on(server: &ratekeeper_testkit::redis::RedisServer) -> Vec<bool> {
    Algorithm::ALL
        .into_iter()
        .map(|a| {
            let sha = redis::Script::new(ratekeeper_redis::decision_script(a))
                .get_hash()
                .to_owned();
            match server.cmd(&["SCRIPT", "EXISTS", &sha]) {
                Reply::Array(Some(found)) => found == [Reply::Int(1)],
                other => panic!("SCRIPT EXISTS answered {other:?}"),
            }
        })
        .collect()
}

/// The function library's name, from its `FUNCTION LOAD` source.
fn library_name() -> &'static str {
    ratekeeper_redis::decision_library()
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!lua name="))
        .expect("the library's first line names it")
}

/// Whether `server` holds the decision engine's function library.
fn library_on(server: &ratekeeper_testkit::redis::RedisServer) -> bool {
    match server.cmd(&["FUNCTION", "LIST", "LIBRARYNAME", library_name()]) {
        Reply::Array(Some(found)) => !found.is_empty(),
        other => panic!("FUNCTION LIST answered {other:?}"),
    }
}

/// Connecting loads the function library and every script on the server,
/// and on every master of a Cluster, before the first decision: no
/// decision pays for a missing function or a `NOSCRIPT` round trip. A
/// library flushed from every node of a Cluster is loaded again by the
/// first decision that misses it, on every master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_loads_every_script_on_every_master() {
    let server = tokio::task::spawn_blocking(ratekeeper_testkit::redis::RedisServer::start)
        .await
        .unwrap();
    assert_eq!(scripts_on(&server), [false; 7]);
    assert!(!library_on(&server));
    let _store = RedisStorage::connect(&server.url()).await.unwrap();
    assert_eq!(scripts_on(&server), [true; 7]);
    assert!(library_on(&server));

    let cluster =
        tokio::task::spawn_blocking(|| ratekeeper_testkit::redis::RedisCluster::start(3, 0))
            .await
            .unwrap();
    for node in cluster.nodes() {
        assert_eq!(scripts_on(node), [false; 7]);
        assert!(!library_on(node));
    }
    let store = RedisStorage::connect(&cluster.url()).await.unwrap();
    for node in cluster.nodes() {
        assert_eq!(scripts_on(node), [true; 7], "node {}", node.port());
        assert!(library_on(node), "node {}", node.port());
    }
    for node in cluster.nodes() {
        assert_eq!(node.cmd(&["FUNCTION", "FLUSH"]), Reply::Status("OK".into()));
    }
    let limiter = Limiter::new(Arc::new(store));
    let r = rule("spread", "5/minute");
    // Keys in many slots, so every master decides some.
    for i in 0..60 {
        let key = format!("user-{i}");
        for expected in [4, 3] {
            let d = limiter.check(&r, &key).await.unwrap();
            assert_eq!(d.remaining(), expected, "{key}");
        }
    }
    for node in cluster.nodes() {
        assert!(library_on(node), "node {}", node.port());
    }
}

/// On the server's clock (the default), a reservation's refund names the
/// instant its units were taken on the server's timeline: with the
/// limiter's clock ten minutes ahead or behind, settling gives back exactly
/// the units not used, on every algorithm.
#[tokio::test]
async fn refunds_follow_the_server_clock_whatever_the_limiters() {
    let url = common::standalone().url();
    let store = Arc::new(common::store(&url, false, TimeSource::Server));
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let skew = Duration::from_secs(600);
    for (name, at) in [("ahead", real + skew), ("behind", real - skew)] {
        let clock = ManualClock::new(Timestamp::from_micros(
            u64::try_from(at.as_micros()).unwrap(),
        ));
        let limiter = Limiter::builder(store.clone()).clock(clock).build();
        for algorithm in Algorithm::ALL {
            let r = Rule::new("spend", algorithm, "10/day".parse().unwrap()).unwrap();
            let key = format!("{algorithm}-{name}");
            // Someone else's units first, then the reservation's.
            assert!(limiter.check_cost(&r, &key, 3).await.unwrap().is_allowed());
            let mut reservation = limiter.reserve(&r, &key, 5).await.unwrap();
            assert!(reservation.is_allowed());
            let d = reservation.settle(1).await.unwrap();
            assert_eq!(d.remaining(), 6, "{algorithm}, the limiter's clock {name}");
        }
    }
}

/// A calendar window on the server's clock: the limiter sends the window
/// boundaries around its own time (Lua has no time zone database) and the
/// script decides in the window the server's time falls in. With the
/// limiter's clock a day ahead or behind the server's, a daily window still
/// ends at the server's next UTC midnight.
#[tokio::test]
async fn calendar_windows_follow_the_server_clock_whatever_the_limiters() {
    let url = common::standalone().url();
    let store = Arc::new(common::store(&url, false, TimeSource::Server));
    const DAY_S: i64 = 86_400;
    let now_s = || {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        i64::try_from(real.as_secs()).unwrap()
    };
    for (name, skew_s) in [("ahead", DAY_S), ("in step", 0), ("behind", -DAY_S)] {
        let at = u64::try_from((now_s() + skew_s) * 1_000_000).unwrap();
        let clock = ManualClock::new(Timestamp::from_micros(at));
        let limiter = Limiter::builder(store.clone()).clock(clock).build();
        let daily = Rule::new(
            &format!("daily-{}", skew_s.signum()),
            Algorithm::FixedWindow,
            "5/day".parse().unwrap(),
        )
        .unwrap()
        .with_calendar(ratekeeper_core::Calendar::utc())
        .unwrap();
        // Until the server's next midnight (UTC), as the test sees it just
        // before and just after the decision.
        let to_midnight = || DAY_S - now_s().rem_euclid(DAY_S);
        let before = to_midnight();
        let d = limiter.check(&daily, "k").await.unwrap();
        let after = to_midnight();
        let reset = i64::try_from(d.reset_after().as_secs()).unwrap();
        assert!(
            (before.min(after) - 2..=before.max(after) + 2).contains(&reset),
            "the limiter's clock {name}: resets in {reset} s, midnight in {before} s"
        );
    }
}
