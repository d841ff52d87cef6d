#![doc = include_str!("../README.md")]

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
/// `algorithm` (what the store loads and calls with `EVALSHA`), for
/// inspection and for benchmarking the script on its own. Its arguments are
/// described at the top of its engine part.
pub fn decision_script(algorithm: ratelimit_core::Algorithm) -> &'static str {
    scripts::SCRIPTS.decision(std::iter::once(algorithm)).code
}
