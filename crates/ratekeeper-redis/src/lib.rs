#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod connection;
mod error;
mod keys;
mod scripts;
mod sentinel;
mod storage;

pub use config::{
    DEFAULT_PREFIX, DEFAULT_RESPONSE_TIMEOUT, DEFAULT_SENTINEL_PORT, MAX_CONNECTIONS, RedisConfig,
    SentinelConfig, TimeSource, TlsCertificates, Topology,
};
pub use storage::{RedisStorage, RedisStorageBuilder};

/// The Lua source of the decision script for requests whose rules all use
/// `algorithm` (what the store calls with `EVALSHA` where the server has no
/// functions), for inspection and for benchmarking the script on its own.
/// Its arguments are described at the top of its engine part.
pub fn decision_script(algorithm: ratekeeper_core::Algorithm) -> &'static str {
    scripts::SCRIPTS
        .decision(std::iter::once(algorithm))
        .script
        .code
}

/// The `FUNCTION LOAD` source of the decision engine as a Redis function
/// library (Redis 7 and later), which the store loads and calls with
/// `FCALL` where it can: every step made once, when the library is loaded,
/// rather than on every call. Its name is `ratekeeper_` and part of its
/// source's SHA-1, so each version is a library of its own.
pub fn decision_library() -> &'static str {
    &scripts::SCRIPTS.library.code
}

/// The name of the library function ([`decision_library`]) that does what
/// [`decision_script`] for `algorithm` does, with the same keys and
/// arguments.
pub fn decision_function(algorithm: ratekeeper_core::Algorithm) -> &'static str {
    scripts::SCRIPTS
        .decision(std::iter::once(algorithm))
        .function
}

/// How registries open Redis URLs (the facade's `from_url`, the
/// configuration's check of `storage.url`, the operator tool): with
/// [`RedisStorage::from_url`], whose documentation lists the forms
/// (`redis`, `rediss`, `valkey`, `valkeys`, `unix`, each with `+cluster` or
/// `+sentinel`). The store connects on first use and must be created inside
/// a tokio runtime.
pub const OPENER: ratekeeper_core::storage::Opener = ratekeeper_core::storage::Opener::new(
    "redis",
    &[
        "redis://host:6379/0",
        "rediss://host:6380/0",
        "redis+unix:///run/redis.sock",
        "redis+cluster://h1:7000,h2:7001",
        "redis+sentinel://s1:26379/mymaster",
    ],
    accepts,
    open,
);

fn accepts(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    let base = scheme.split_once('+').map_or(scheme, |(base, _)| base);
    matches!(base, "redis" | "rediss" | "valkey" | "valkeys" | "unix")
}

fn open(url: &str) -> ratekeeper_core::Result<std::sync::Arc<dyn ratekeeper_core::Storage>> {
    Ok(std::sync::Arc::new(RedisStorage::from_url(url)?))
}
