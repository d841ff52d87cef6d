#![doc = include_str!("../README.md")]

use std::sync::Arc;

pub use ratelimit_core::*;

/// The in-memory store (feature `memory`).
#[cfg(feature = "memory")]
pub mod memory {
    pub use ratelimit_memory::*;
}

/// The tower layer for axum, hyper and tonic (feature `axum`).
#[cfg(feature = "axum")]
pub mod axum {
    pub use ratelimit_axum::*;
}

/// The SQLite store (feature `sqlite`).
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use ratelimit_sqlite::*;
}

/// Builds a store from one URL, for twelve-factor configuration:
///
/// - `memory://` (feature `memory`), with optional `?max_size=N&shards=N&cleanup_interval=60s`;
/// - `sqlite:///absolute/path.db`, `sqlite://relative/path.db` or `sqlite::memory:`
///   (feature `sqlite`), with optional `?synchronous=normal|full|off&pool_size=N&busy_timeout=5s&cleanup_interval=5m`.
///   Opening a file does I/O: call this at start-up.
///
/// An unknown scheme, or one whose feature is not enabled, is an
/// [`ErrorKind::InvalidInput`] error that says which feature to enable.
pub fn from_url(url: &str) -> Result<Arc<dyn Storage>> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        #[cfg(feature = "memory")]
        "memory" => Ok(Arc::new(ratelimit_memory::MemoryStorage::from_url(url)?)),
        #[cfg(not(feature = "memory"))]
        "memory" => Err(missing_feature("memory", "memory")),
        #[cfg(feature = "sqlite")]
        _ if url.starts_with("sqlite:") => {
            Ok(Arc::new(ratelimit_sqlite::SqliteStorage::from_url(url)?))
        }
        #[cfg(not(feature = "sqlite"))]
        _ if url.starts_with("sqlite:") => Err(missing_feature("sqlite", "sqlite")),
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "unsupported store URL {:?}: expected memory:// or sqlite://",
                url.chars().take(64).collect::<String>()
            ),
        )),
    }
}

#[allow(dead_code, reason = "used only when some store feature is disabled")]
fn missing_feature(scheme: &str, feature: &str) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("{scheme}:// stores need the `{feature}` feature of the ratelimit crate"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_rejected() {
        for url in ["ftp://x", "", "sqlite-ish"] {
            assert_eq!(from_url(url).unwrap_err().kind(), ErrorKind::InvalidInput);
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
