//! Store layers: wrappers that add one concern to any store, composed like
//! tower's layers. This module holds the contract ([`Layer`],
//! [`LayeredStorage`], [`StorageExt::layer`]); the layers themselves live in
//! the `ratekeeper-layers` crate:
//!
//! | layer | what it adds |
//! |---|---|
//! | `Deadline` | every call gets at most this long, then fails with a transient [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) |
//! | `Breaker` | a circuit breaker: after consecutive transient failures, calls fail at once until a probe succeeds |
//! | `DenyCache` | denials remembered locally until they end (never denies what the store would allow) |
//! | `Approximate` | hot keys counted locally, written in batches |
//!
//! Put them on with [`StorageExt::layer`], innermost first (the
//! `ratekeeper-layers` crate documents the order to use).
//!
//! Each layer adds its counters to the store's [`stats`](Storage::stats)
//! details, and answers `stats` even when the store cannot (its own state is
//! most wanted then): the details then say `error`.
//!
//! # Writing a layer
//!
//! Implement [`LayeredStorage`]: say where the inner store is, and override
//! only the operations the layer changes; the others forward. [`Storage`]
//! comes with it. A [`Layer`] is the configuration that wraps a store. A
//! layer that treats every call alike overrides
//! [`around`](LayeredStorage::around) instead, which every forwarded call
//! runs through (the deadline and the breaker are written so):
//!
//! ```
//! use std::future::Future;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use ratekeeper_core::layer::LayeredStorage;
//! use ratekeeper_core::{Result, Storage};
//!
//! /// Counts the calls that reach the store below.
//! #[derive(Debug)]
//! struct CountCalls {
//!     inner: Arc<dyn Storage>,
//!     calls: AtomicU64,
//! }
//!
//! impl LayeredStorage for CountCalls {
//!     fn inner(&self) -> &Arc<dyn Storage> {
//!         &self.inner
//!     }
//!     fn around<'a, T: Send + 'a>(
//!         &'a self,
//!         call: impl Future<Output = Result<T>> + Send + 'a,
//!     ) -> impl Future<Output = Result<T>> + Send + 'a {
//!         self.calls.fetch_add(1, Ordering::Relaxed);
//!         call
//!     }
//! }
//! ```
//!
//! Or override one operation:
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use async_trait::async_trait;
//! use ratekeeper_core::layer::LayeredStorage;
//! use ratekeeper_core::{Result, Storage};
//!
//! /// Counts the reads of the store below.
//! #[derive(Debug)]
//! struct CountReads {
//!     inner: Arc<dyn Storage>,
//!     reads: AtomicU64,
//! }
//!
//! #[async_trait]
//! impl LayeredStorage for CountReads {
//!     fn inner(&self) -> &Arc<dyn Storage> {
//!         &self.inner
//!     }
//!     async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
//!         self.reads.fetch_add(1, Ordering::Relaxed);
//!         self.inner.get(key).await
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::decision::Decision;
use crate::error::Result;
use crate::storage::{AdjustRequest, CasOp, DecideRequest, Storage, StorageStats};

/// The configuration of a store wrapper: wraps a store in it.
pub trait Layer {
    /// The wrapped store.
    type Wrapped: Storage + 'static;

    /// Wraps `inner`.
    fn layer(self, inner: Arc<dyn Storage>) -> Self::Wrapped;
}

/// Putting layers on a store.
pub trait StorageExt {
    /// This store wrapped in `layer`.
    fn layer<L: Layer>(self, layer: L) -> Arc<dyn Storage>;
}

impl StorageExt for Arc<dyn Storage> {
    fn layer<L: Layer>(self, layer: L) -> Arc<dyn Storage> {
        Arc::new(layer.layer(self))
    }
}

/// A store that wraps another: every operation forwards to
/// [`inner`](Self::inner) unless overridden. Every type implementing it is a
/// [`Storage`]. An override keeps the contract of the [`Storage`] method of
/// the same name.
///
/// A layer that treats every call to the store alike (a deadline, a circuit
/// breaker) overrides [`around`](Self::around) alone: every forwarded
/// operation except [`stats`](Self::stats), [`close`](Self::close) and
/// [`decide_now`](Self::decide_now) runs through it.
#[async_trait]
pub trait LayeredStorage: Send + Sync + fmt::Debug {
    /// The store this one wraps.
    fn inner(&self) -> &Arc<dyn Storage>;

    /// Runs one forwarded call to the inner store: `get`, `set`, `delete`,
    /// `exists`, `increment`, `clear`, `compare_and_swap`, `decide`,
    /// `decide_each`, `decide_each_at` and `adjust`, unless overridden. The default runs `call` as it is.
    fn around<'a, T: Send + 'a>(
        &'a self,
        call: impl Future<Output = Result<T>> + Send + 'a,
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        call
    }

    /// [`Storage::get`].
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.around(self.inner().get(key)).await
    }

    /// [`Storage::set`].
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.around(self.inner().set(key, value, ttl)).await
    }

    /// [`Storage::delete`].
    async fn delete(&self, key: &str) -> Result<bool> {
        self.around(self.inner().delete(key)).await
    }

    /// [`Storage::exists`].
    async fn exists(&self, key: &str) -> Result<bool> {
        self.around(self.inner().exists(key)).await
    }

    /// [`Storage::increment`].
    async fn increment(&self, key: &str, amount: i64, ttl: Duration) -> Result<i64> {
        self.around(self.inner().increment(key, amount, ttl)).await
    }

    /// [`Storage::clear`].
    async fn clear(&self) -> Result<u64> {
        self.around(self.inner().clear()).await
    }

    /// [`Storage::close`]. Not through [`around`](Self::around): closing
    /// is never refused nor cut short.
    async fn close(&self) -> Result<()> {
        self.inner().close().await
    }

    /// [`Storage::stats`]. Not through [`around`](Self::around): a layer
    /// that reports its own state overrides this.
    async fn stats(&self) -> Result<StorageStats> {
        self.inner().stats().await
    }

    /// [`Storage::compare_and_swap`].
    async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
        self.around(self.inner().compare_and_swap(ops)).await
    }

    /// [`Storage::decide`].
    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        self.around(self.inner().decide(request)).await
    }

    /// [`Storage::decide_each`]. A layer that changes
    /// [`decide`](Self::decide) decides whether this changes too; forwarded
    /// as it is, it runs through [`around`](Self::around).
    async fn decide_each(&self, request: &DecideRequest<'_>) -> Result<Vec<Decision>> {
        self.around(self.inner().decide_each(request)).await
    }

    /// [`Storage::decide_each_at`], through [`around`](Self::around), as
    /// [`decide_each`](Self::decide_each). A layer that changes
    /// `decide_each` changes this too: forwarded, the inner store's answer
    /// would bypass the layer (the limiter's `check_each` and reservations
    /// ask for this one).
    async fn decide_each_at(
        &self,
        request: &DecideRequest<'_>,
    ) -> Result<(crate::clock::Timestamp, Vec<Decision>)> {
        self.around(self.inner().decide_each_at(request)).await
    }

    /// [`Storage::adjust`], through [`around`](Self::around). A layer that
    /// remembers decisions (a deny cache) forgets those of the keys
    /// adjusted.
    async fn adjust(&self, request: &AdjustRequest<'_>) -> Result<Vec<Decision>> {
        self.around(self.inner().adjust(request)).await
    }

    /// [`Storage::decide_now`]. A layer that changes [`decide`](Self::decide)
    /// changes this too (or returns `None`, sending every decision through
    /// `decide`): forwarded, the inner store's answer would bypass the layer
    /// (the memory store answers every decision here). Not through
    /// [`around`](Self::around): it does not wait, so nothing can hang.
    fn decide_now(&self, request: &DecideRequest<'_>) -> Option<Result<Decision>> {
        self.inner().decide_now(request)
    }

    /// [`Storage::decide_each_now`]: `None`, so that every such decision
    /// goes through [`decide_each_at`](Self::decide_each_at) or
    /// [`decide_each`](Self::decide_each) and [`around`](Self::around). A
    /// layer that changes neither may forward it.
    fn decide_each_now(
        &self,
        request: &DecideRequest<'_>,
    ) -> Option<Result<(crate::clock::Timestamp, Vec<Decision>)>> {
        let _ = request;
        None
    }

    /// [`Storage::adjust_now`]: `None`, so that every adjustment goes
    /// through [`adjust`](Self::adjust) and [`around`](Self::around). A
    /// layer that changes nothing about adjustments may forward it.
    fn adjust_now(&self, request: &AdjustRequest<'_>) -> Option<Result<Vec<Decision>>> {
        let _ = request;
        None
    }
}

#[async_trait]
impl<T: LayeredStorage> Storage for T {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        LayeredStorage::get(self, key).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        LayeredStorage::set(self, key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        LayeredStorage::delete(self, key).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        LayeredStorage::exists(self, key).await
    }
    async fn increment(&self, key: &str, amount: i64, ttl: Duration) -> Result<i64> {
        LayeredStorage::increment(self, key, amount, ttl).await
    }
    async fn clear(&self) -> Result<u64> {
        LayeredStorage::clear(self).await
    }
    async fn close(&self) -> Result<()> {
        LayeredStorage::close(self).await
    }
    async fn stats(&self) -> Result<StorageStats> {
        LayeredStorage::stats(self).await
    }
    async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
        LayeredStorage::compare_and_swap(self, ops).await
    }
    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        LayeredStorage::decide(self, request).await
    }
    async fn decide_each(&self, request: &DecideRequest<'_>) -> Result<Vec<Decision>> {
        LayeredStorage::decide_each(self, request).await
    }
    async fn decide_each_at(
        &self,
        request: &DecideRequest<'_>,
    ) -> Result<(crate::clock::Timestamp, Vec<Decision>)> {
        LayeredStorage::decide_each_at(self, request).await
    }
    async fn adjust(&self, request: &AdjustRequest<'_>) -> Result<Vec<Decision>> {
        LayeredStorage::adjust(self, request).await
    }
    fn decide_now(&self, request: &DecideRequest<'_>) -> Option<Result<Decision>> {
        LayeredStorage::decide_now(self, request)
    }
    fn decide_each_now(
        &self,
        request: &DecideRequest<'_>,
    ) -> Option<Result<(crate::clock::Timestamp, Vec<Decision>)>> {
        LayeredStorage::decide_each_now(self, request)
    }
    fn adjust_now(&self, request: &AdjustRequest<'_>) -> Option<Result<Vec<Decision>>> {
        LayeredStorage::adjust_now(self, request)
    }
}

/// The inner store's stats with a layer's `details` added; when the store
/// cannot answer, stats of an `unavailable` store saying why (a layer's own
/// state is most wanted when its store is down). For a layer's
/// [`stats`](Storage::stats):
///
/// ```
/// use ratekeeper_core::layer::stats_with;
/// use ratekeeper_core::{Error, StorageStats};
///
/// let up = stats_with(Ok(StorageStats::new("memory")), [("hits", "3".to_owned())]);
/// assert_eq!(up.details, [("hits".to_owned(), "3".to_owned())]);
///
/// let down = stats_with(Err(Error::closed()), [("hits", "3".to_owned())]);
/// assert_eq!(down.backend, "unavailable");
/// assert_eq!(down.details[0].0, "error");
/// ```
pub fn stats_with(
    inner: Result<StorageStats>,
    details: impl IntoIterator<Item = (&'static str, String)>,
) -> StorageStats {
    let mut stats = inner.unwrap_or_else(|e| {
        let mut s = StorageStats::new("unavailable");
        s.details.push(("error".to_owned(), e.to_string()));
        s
    });
    stats
        .details
        .extend(details.into_iter().map(|(k, v)| (k.to_owned(), v)));
    stats
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::clock::Timestamp;
    use crate::rule::{Algorithm, Rule};
    use crate::storage::{DecideEntry, decide_with_cas};

    /// A map offering every operation.
    #[derive(Debug, Default)]
    struct Map(Mutex<HashMap<String, Vec<u8>>>);

    #[async_trait]
    impl Storage for Map {
        async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
            decide_with_cas(self, request).await
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.0.lock().unwrap().get(key).cloned())
        }
        async fn set(&self, key: &str, value: &[u8], _: Duration) -> Result<()> {
            self.0.lock().unwrap().insert(key.into(), value.into());
            Ok(())
        }
        async fn delete(&self, key: &str) -> Result<bool> {
            Ok(self.0.lock().unwrap().remove(key).is_some())
        }
        async fn exists(&self, key: &str) -> Result<bool> {
            Ok(self.0.lock().unwrap().contains_key(key))
        }
        async fn increment(&self, _: &str, amount: i64, _: Duration) -> Result<i64> {
            Ok(amount)
        }
        async fn clear(&self) -> Result<u64> {
            Ok(0)
        }
        async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
            let mut map = self.0.lock().unwrap();
            if ops
                .iter()
                .any(|op| map.get(op.key).map(Vec::as_slice) != op.expected)
            {
                return Ok(false);
            }
            for op in ops {
                map.insert(op.key.into(), op.new_value.into());
            }
            Ok(true)
        }
    }

    /// Counts what runs through `around`; overrides nothing else.
    #[derive(Debug)]
    struct Counting {
        inner: Arc<dyn Storage>,
        calls: AtomicU64,
    }

    impl LayeredStorage for Counting {
        fn inner(&self) -> &Arc<dyn Storage> {
            &self.inner
        }
        fn around<'a, T: Send + 'a>(
            &'a self,
            call: impl Future<Output = Result<T>> + Send + 'a,
        ) -> impl Future<Output = Result<T>> + Send + 'a {
            self.calls.fetch_add(1, Ordering::Relaxed);
            call
        }
    }

    /// Every forwarded operation but `stats`, `close` and `decide_now` runs
    /// through `around`, and each still reaches the store below.
    #[tokio::test]
    async fn forwarded_operations_run_through_around() {
        let layer = Counting {
            inner: Arc::new(Map::default()),
            calls: AtomicU64::new(0),
        };
        let hour = Duration::from_secs(3_600);
        let count = || layer.calls.load(Ordering::Relaxed);
        Storage::set(&layer, "k", b"v", hour).await.unwrap();
        assert_eq!(count(), 1);
        assert_eq!(
            Storage::get(&layer, "k").await.unwrap(),
            Some(b"v".to_vec())
        );
        assert!(Storage::exists(&layer, "k").await.unwrap());
        assert!(Storage::delete(&layer, "k").await.unwrap());
        assert_eq!(Storage::increment(&layer, "n", 5, hour).await.unwrap(), 5);
        assert_eq!(Storage::clear(&layer).await.unwrap(), 0);
        let op = CasOp {
            key: "c",
            expected: None,
            new_value: b"1",
            ttl: hour,
        };
        assert!(Storage::compare_and_swap(&layer, &[op]).await.unwrap());
        assert_eq!(count(), 7);
        let rule = Rule::new("r", Algorithm::Gcra, "1/s".parse().unwrap()).unwrap();
        let entries = [DecideEntry {
            key: "a",
            rule: &rule,
            cost: 1,
        }];
        let request = DecideRequest {
            now: Timestamp::from_micros(1_000_000),
            entries: &entries,
        };
        assert!(
            Storage::decide(&layer, &request)
                .await
                .unwrap()
                .is_allowed()
        );
        assert_eq!(count(), 8);
        let each = Storage::decide_each(&layer, &request).await.unwrap();
        assert!(each.len() == 1 && !each[0].is_allowed());
        assert_eq!(count(), 9);
        // Not through `around`: reports, closing, and the answer-now path.
        Storage::stats(&layer).await.unwrap();
        Storage::close(&layer).await.unwrap();
        assert!(Storage::decide_now(&layer, &request).is_none());
        assert_eq!(count(), 9);
    }
}
