#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
mod schema;
mod storage;
mod writer;

pub use config::{Blocking, Location, SqliteConfig, Synchronous};
pub use storage::{SqliteStorage, SqliteStorageBuilder};

/// How registries open `sqlite:` URLs (the facade's `from_url`, the
/// configuration's check of `storage.url`, the operator tool): with
/// [`SqliteStorage::from_url`]. Opening a file does I/O: open at start-up.
pub const OPENER: ratekeeper_core::storage::Opener = ratekeeper_core::storage::Opener::new(
    "sqlite",
    &[
        "sqlite:///absolute/path/limits.db",
        "sqlite://relative/path/limits.db",
        "sqlite::memory:",
    ],
    accepts,
    open,
);

fn accepts(url: &str) -> bool {
    url.starts_with("sqlite:")
}

fn open(url: &str) -> ratekeeper_core::Result<std::sync::Arc<dyn ratekeeper_core::Storage>> {
    Ok(std::sync::Arc::new(SqliteStorage::from_url(url)?))
}
