//! Shared by the Redis store's tests: real servers started once per test
//! binary, and a conformance harness over any of them.
#![allow(dead_code, reason = "each test binary uses part of this")]
#![allow(clippy::expect_used, reason = "test set-up")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use ratekeeper_core::Storage;
use ratekeeper_redis::{RedisStorage, TimeSource};
use ratekeeper_testkit::redis::{RedisCluster, RedisSentinel, RedisServer};
use ratekeeper_testkit::{Expiry, Harness, ManualClock};

/// One standalone server for the whole test binary.
pub(crate) fn standalone() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

/// The shared standalone server's URL for a user whose ACL allows every
/// command but `FCALL` and `FUNCTION`: a store there decides through the
/// scripts.
pub(crate) fn scripts_url() -> String {
    let server = standalone();
    let reply = server.cmd(&[
        "ACL",
        "SETUSER",
        "scripts",
        "on",
        ">secret",
        "~*",
        "+@all",
        "-fcall",
        "-function",
    ]);
    assert_eq!(reply, ratekeeper_testkit::redis::Reply::Status("OK".into()));
    format!("redis://scripts:secret@127.0.0.1:{}", server.port())
}

/// One 3-master Cluster for the whole test binary.
pub(crate) fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3, 0))
}

/// One Sentinel group (master, replica, three Sentinels) for the whole test binary.
pub(crate) fn sentinel() -> &'static RedisSentinel {
    static GROUP: OnceLock<RedisSentinel> = OnceLock::new();
    GROUP.get_or_init(RedisSentinel::start)
}

/// A prefix no other store of this run uses. In a Cluster it carries a hash
/// tag, so the store's keys (per-user and shared ones alike) share one slot;
/// different stores land on different masters.
pub(crate) fn unique_prefix(tagged: bool) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = format!("t{}-{n}", std::process::id());
    if tagged {
        format!("{{{id}}}:")
    } else {
        format!("{id}:")
    }
}

/// Decisions at the limiter's (manual) time, with rule state kept a day
/// longer than it matters, so a manual clock lagging real time loses nothing.
pub(crate) const TEST_TIME: TimeSource = TimeSource::Client {
    skew_allowance: Duration::from_secs(86_400),
};

/// A store on `url` with a fresh prefix, deciding at `time`; lazy.
pub(crate) fn store(url: &str, tagged: bool, time: TimeSource) -> RedisStorage {
    RedisStorage::builder_from_url(url)
        .expect("a valid URL")
        .prefix(unique_prefix(tagged))
        .time_source(time)
        .response_timeout(Duration::from_secs(5))
        .build()
        .expect("a store")
}

/// The conformance harness over one deployment.
pub(crate) struct RedisHarness {
    url: String,
    tagged: bool,
}

impl RedisHarness {
    pub(crate) fn standalone() -> Self {
        Self {
            url: standalone().url(),
            tagged: false,
        }
    }

    /// The standalone server, as a user whose ACL allows no functions: the
    /// store decides through the scripts (`EVALSHA`), as on a server
    /// without functions.
    pub(crate) fn standalone_scripts() -> Self {
        Self {
            url: scripts_url(),
            tagged: false,
        }
    }

    pub(crate) fn cluster() -> Self {
        Self {
            url: cluster().url(),
            tagged: true,
        }
    }

    pub(crate) fn sentinel() -> Self {
        Self {
            url: sentinel().url(),
            tagged: false,
        }
    }
}

#[async_trait]
impl Harness for RedisHarness {
    async fn store(&self, _clock: ManualClock) -> Arc<dyn Storage> {
        Arc::new(store(&self.url, self.tagged, TEST_TIME))
    }

    fn expiry(&self) -> Expiry {
        Expiry::RealTime
    }

    async fn real_time_store(&self) -> Option<Arc<dyn Storage>> {
        Some(Arc::new(store(&self.url, self.tagged, TimeSource::Server)))
    }
}
