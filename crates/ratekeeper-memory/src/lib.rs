#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod key;
mod shard;
mod storage;

pub use config::{DEFAULT_CLEANUP_INTERVAL, DEFAULT_MAX_SIZE, DEFAULT_SHARDS, MemoryConfig};
pub use storage::{MemoryStorage, MemoryStorageBuilder};

/// How registries open `memory://` URLs (the facade's `from_url`, the
/// configuration's check of `storage.url`, the operator tool): with
/// [`MemoryStorage::from_url`].
pub const OPENER: ratekeeper_core::storage::Opener = ratekeeper_core::storage::Opener::new(
    "memory",
    &[
        "memory://",
        "memory://?max_size=100000&shards=64&cleanup_interval=60s",
    ],
    accepts,
    open,
);

fn accepts(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme == "memory")
}

fn open(url: &str) -> ratekeeper_core::Result<std::sync::Arc<dyn ratekeeper_core::Storage>> {
    Ok(std::sync::Arc::new(MemoryStorage::from_url(url)?))
}
