//! Rate limiting for Rust services: six algorithms, several limits per
//! request decided all or nothing, stores that keep a limit exact across
//! tasks, processes and machines (memory, SQLite, Redis), and one HTTP
//! policy with adapters for axum / tower, actix-web and Rocket.
//!
//! A denial is a value, not an error: [`Limiter::check`] returns a
//! [`Decision`] (allowed, limit, remaining, reset after, retry after, the
//! rule that decided). `Err` means the store failed, and
//! [`Error::is_transient`] tells a fail-open policy whether to let the
//! request through.
//!
//! # Two-minute start
//!
//! ```no_run
//! use ratekeeper::{Algorithm, Limiter, Rule};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = Limiter::new(ratekeeper::from_url("memory://")?);
//! let rule = Rule::new("api", Algorithm::Gcra, "100/minute".parse()?)?;
//!
//! let decision = limiter.check(&rule, "user-42").await?;
//! if !decision.is_allowed() {
//!     println!("slow down; retry in {:?}", decision.retry_after());
//! }
//! # Ok(()) }
//! ```
//!
//! The same limiter serves code that is not HTTP at all: a worker calling a
//! partner's API, a queue consumer, a budget of LLM tokens
//! ([`Limiter::check_cost`], [`Limiter::until_ready`]).
//!
//! # Which feature
//!
//! | you want | feature | start from |
//! |---|---|---|
//! | the in-memory store (one process) | `memory` (default) | `from_url("memory://")` |
//! | SQLite (several processes, one machine) | `sqlite` | `from_url("sqlite:///var/lib/app/limits.db")` |
//! | Redis: standalone, Sentinel, Cluster, TLS (many machines) | `redis` | `from_url("redis://cache:6379")` |
//! | axum, hyper or any tower HTTP service | `axum` | `ratekeeper::axum::RateLimitLayer` |
//! | tonic gRPC servers | `tonic` | the same layer, answering in tonic's body |
//! | actix-web | `actix` | `ratekeeper::actix::RateLimit` |
//! | Rocket | `rocket` | `ratekeeper::rocket::RateLimit` |
//! | the HTTP policy without an adapter | `http` | `ratekeeper::http::HttpPolicy` |
//! | limits from a TOML, YAML or JSON file, reloaded at runtime | `config` (default) | `ratekeeper::config::start` |
//! | metrics through the `metrics` facade | `metrics` | [`observe`] |
//! | serde for rules, quotas, algorithms and decisions | `serde` | `ratekeeper::serde` |
//!
//! Store layers (a deadline, a circuit breaker, a deny cache, approximate
//! mode for very hot keys) wrap any store: [`layer`].
//!
//! # Guides
//!
//! The package's `docs/` folder holds the guides: `algorithms.md` (which
//! algorithm to choose), `backends.md` and `distributed.md` (the stores),
//! `http.md` and `frameworks/` (the HTTP policy and each adapter),
//! `configuration.md` and `tiers.md`, `operations.md` (metrics, failures,
//! sizing) and `security.md` (the threat model). Their Rust examples are
//! compiled as doc tests.
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

pub use ratekeeper_core::*;

/// Store layers: the contract from the core ([`Layer`](layer::Layer),
/// [`LayeredStorage`](layer::LayeredStorage)) and the layers of
/// `ratekeeper-layers` (deadline, circuit breaker, deny cache, approximate
/// mode).
pub mod layer {
    pub use ratekeeper_core::layer::*;
    pub use ratekeeper_layers::*;
}

/// Approximate mode for very hot keys: count locally, write to the store in
/// batches.
pub mod approximate {
    pub use ratekeeper_layers::approximate::*;
}

/// The framework-free HTTP policy every adapter applies (feature `http`, on
/// with `config` and with every adapter).
#[cfg(feature = "http")]
pub mod http {
    pub use ratekeeper_http::*;
}

/// The in-memory store (feature `memory`).
#[cfg(feature = "memory")]
pub mod memory {
    pub use ratekeeper_memory::*;
}

/// The tower layer for axum, hyper and tonic (feature `axum`).
#[cfg(feature = "axum")]
pub mod axum {
    pub use ratekeeper_axum::*;
}

/// The actix-web middleware (feature `actix`).
#[cfg(feature = "actix")]
pub mod actix {
    pub use ratekeeper_actix::*;
}

/// The Rocket fairing and request guards (feature `rocket`).
#[cfg(feature = "rocket")]
pub mod rocket {
    pub use ratekeeper_rocket::*;
}

/// The SQLite store (feature `sqlite`).
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use ratekeeper_sqlite::*;
}

/// The Redis store (feature `redis`).
#[cfg(feature = "redis")]
pub mod redis {
    pub use ratekeeper_redis::*;
}

/// Declarative configuration (feature `config`, on by default): one file
/// plus environment overrides builds the whole stack, store and policy.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // Reads limits.toml (and RATELIMIT__… variables), opens its store,
/// // serves its policy, and rereads it on SIGHUP.
/// let live = ratekeeper::config::start("limits.toml").await?;
/// live.reload_on_hangup()?;
/// let policy = live.policy(); // hand it (or `&live`) to any adapter
/// # Ok(()) }
/// ```
#[cfg(feature = "config")]
pub mod config {
    use std::path::Path;
    use std::sync::Arc;

    pub use ratekeeper_config::*;

    use crate::Storage;

    /// Opens the store `config`'s `[storage]` section names (its URL with
    /// its options), with [`from_url`](crate::from_url), behind the guards
    /// it asks for (`timeout`, `breaker`, `deny_cache`).
    pub fn open_store(config: &Config) -> Result<Arc<dyn Storage>, ConfigErrors> {
        crate::from_url(&config.storage.full_url())
            .map(|store| config.storage.guard(store))
            .map_err(|e| {
                ConfigErrors::single(
                    config.source_of("storage.url"),
                    "storage.url",
                    e.message().to_owned(),
                )
            })
    }

    /// The whole stack from one file: reads and checks it (with
    /// `RATELIMIT__…` environment overrides), opens its store, and serves
    /// its policy. Every problem is reported at once.
    pub async fn start(path: impl AsRef<Path>) -> Result<LivePolicy, ConfigErrors> {
        start_with(Loader::file(path.as_ref()), PolicyCode::new()).await
    }

    /// [`start`] from any [`Loader`], with the application's code (custom
    /// keys, a tier resolver, hooks). `storage.url` is checked against the
    /// stores this build opens ([`STORES`](crate::STORES)).
    pub async fn start_with(loader: Loader, code: PolicyCode) -> Result<LivePolicy, ConfigErrors> {
        // Degraded mode decides on the memory store, unless the
        // application gave another.
        #[cfg(feature = "memory")]
        let code = if code.has_local_store() {
            code
        } else {
            code.local_store(Arc::new(|clock| {
                Arc::new(
                    ratekeeper_memory::MemoryStorage::builder()
                        .clock(clock)
                        .build(),
                )
            }))
        };
        let loader = loader.stores(crate::STORES);
        let config = loader.load()?;
        let store = open_store(&config)?;
        LivePolicy::start_from(config, loader, store, code).await
    }
}

/// The stores this build opens by URL, one per enabled store feature, in
/// the order [`from_url`] asks them. Adding a store is one line here (and
/// its feature).
pub const STORES: &[storage::Opener] = &[
    #[cfg(feature = "memory")]
    ratekeeper_memory::OPENER,
    #[cfg(feature = "sqlite")]
    ratekeeper_sqlite::OPENER,
    #[cfg(feature = "redis")]
    ratekeeper_redis::OPENER,
];

/// The built-in stores whose feature this build lacks, for errors.
const DISABLED_STORES: &[&str] = &[
    #[cfg(not(feature = "memory"))]
    "memory",
    #[cfg(not(feature = "sqlite"))]
    "sqlite",
    #[cfg(not(feature = "redis"))]
    "redis",
];

/// Builds a store from one URL, for twelve-factor configuration, with the
/// first of [`STORES`] that accepts it:
///
/// - `memory://` (feature `memory`), with optional `?max_size=N&shards=N&cleanup_interval=60s`;
/// - `sqlite:///absolute/path.db`, `sqlite://relative/path.db` or `sqlite::memory:`
///   (feature `sqlite`), with optional `?synchronous=normal|full|off&pool_size=N&busy_timeout=5s&cleanup_interval=5m&cleanup_batch=N&blocking=writer|spawn|in_place`.
///   Opening a file does I/O: call this at start-up.
/// - `redis://`, `rediss://`, `redis+unix://`, `redis+cluster://`,
///   `redis+sentinel://` (feature `redis`; see
///   `ratekeeper::redis::RedisConfig::from_url` for the forms and options).
///   The store connects on first use and must be created inside a tokio
///   runtime; `RedisStorage::connect` checks the connection at start-up
///   instead.
///
/// A URL no enabled store accepts is an [`ErrorKind::InvalidInput`] error
/// that lists what this build opens and the store features it lacks.
pub fn from_url(url: &str) -> Result<Arc<dyn Storage>> {
    match STORES.iter().find(|opener| opener.accepts(url)) {
        Some(opener) => opener.open(url),
        None => Err(Error::new(ErrorKind::InvalidInput, unsupported(url))),
    }
}

/// Why no store opens `url`: only its scheme is shown, since the rest of a
/// URL may hold a password.
fn unsupported(url: &str) -> String {
    let opened = storage::Opener::examples_of(STORES);
    let mut message = format!(
        "unsupported store URL scheme {:?}: this build opens {}",
        storage::Opener::shown_scheme(url),
        if opened.is_empty() {
            "no store"
        } else {
            &opened
        }
    );
    if !DISABLED_STORES.is_empty() {
        let features: Vec<String> = DISABLED_STORES.iter().map(|f| format!("`{f}`")).collect();
        message.push_str("; more stores come with the ratekeeper crate's features ");
        message.push_str(&features.join(", "));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_rejected() {
        for url in [
            "ftp://x",
            "",
            "sqlite-ish",
            "memoryx://",
            "ftp://user:s3cret@host",
        ] {
            let err = from_url(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}");
            assert!(
                err.message().contains("unsupported store URL scheme"),
                "{err}"
            );
            assert!(!err.message().contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn the_registry_has_one_opener_per_enabled_store() {
        let names: Vec<&str> = STORES.iter().map(|o| o.store()).collect();
        let mut expected = Vec::new();
        if cfg!(feature = "memory") {
            expected.push("memory");
        }
        if cfg!(feature = "sqlite") {
            expected.push("sqlite");
        }
        if cfg!(feature = "redis") {
            expected.push("redis");
        }
        assert_eq!(names, expected);
        // Every example is opened by its own store, and by no other.
        for opener in STORES {
            for example in opener.examples() {
                let takers: Vec<&str> = STORES
                    .iter()
                    .filter(|o| o.accepts(example))
                    .map(|o| o.store())
                    .collect();
                assert_eq!(takers, [opener.store()], "{example}");
            }
        }
        // The error lists what this build opens.
        let message = from_url("ftp://x").unwrap_err().to_string();
        for opener in STORES {
            assert!(message.contains(opener.examples()[0]), "{message}");
        }
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_url_builds_a_working_store() {
        let store = from_url("sqlite::memory:").unwrap();
        store
            .set("k", b"v", std::time::Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(store.stats().await.unwrap().backend, "sqlite");
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn redis_urls_build_redis_stores() {
        for url in [
            "redis://127.0.0.1:1",
            "rediss://localhost:1",
            "redis+cluster://127.0.0.1:1,127.0.0.1:2",
            "redis+sentinel://127.0.0.1:1/mymaster",
        ] {
            let store = from_url(url).unwrap();
            assert!(format!("{store:?}").contains("RedisStorage"), "{url}");
        }
        assert_eq!(
            from_url("redis://h?bogus=1").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn memory_url_builds_a_working_store() {
        let store = from_url("memory://?max_size=10").unwrap();
        store
            .set("k", b"v", std::time::Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(store.stats().await.unwrap().backend, "memory");
    }
}

/// README's example, compiled as a doc test (the guides in `docs/` are
/// compiled by `crates/ratekeeper-e2e`, which has every feature and the
/// frameworks). Not part of the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct Readme;
