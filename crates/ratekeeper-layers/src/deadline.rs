//! A deadline on every store call.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use ratekeeper_core::layer::{Layer, LayeredStorage, stats_with};
use ratekeeper_core::{Error, ErrorKind, Result};
use ratekeeper_core::{Storage, StorageStats};

/// Every call to the store gets at most this long; past it the call fails
/// with a transient [`ErrorKind::Timeout`], and the HTTP policy answers by
/// the route's error mode (fail closed by default, or open). A store that
/// decides without waiting (the memory store) is not timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    deadline: Duration,
}

impl Deadline {
    /// At most `deadline` per call.
    pub const fn new(deadline: Duration) -> Self {
        Self { deadline }
    }

    /// The longest a call may take.
    pub const fn deadline(&self) -> Duration {
        self.deadline
    }
}

impl Layer for Deadline {
    type Wrapped = DeadlineStorage;

    fn layer(self, inner: Arc<dyn Storage>) -> DeadlineStorage {
        DeadlineStorage::new(inner, self)
    }
}

/// A store whose calls have a [`Deadline`].
#[derive(Debug)]
pub struct DeadlineStorage {
    inner: Arc<dyn Storage>,
    deadline: Duration,
    exceeded: AtomicU64,
}

impl DeadlineStorage {
    /// `inner` with `deadline`.
    pub fn new(inner: Arc<dyn Storage>, deadline: Deadline) -> Self {
        Self {
            inner,
            deadline: deadline.deadline,
            exceeded: AtomicU64::new(0),
        }
    }

    /// Calls that ran past the deadline so far.
    pub fn exceeded(&self) -> u64 {
        self.exceeded.load(Ordering::Relaxed)
    }

    async fn timed<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.deadline, call).await {
            Ok(result) => result,
            Err(_) => {
                self.exceeded.fetch_add(1, Ordering::Relaxed);
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the store did not answer within its deadline of {}",
                        ratekeeper_core::format_duration(self.deadline)
                    ),
                )
                .with_transient(true))
            }
        }
    }
}

#[async_trait]
impl LayeredStorage for DeadlineStorage {
    fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    fn around<'a, T: Send + 'a>(
        &'a self,
        call: impl Future<Output = Result<T>> + Send + 'a,
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        self.timed(call)
    }

    async fn stats(&self) -> Result<StorageStats> {
        let inner = self.timed(self.inner.stats()).await;
        Ok(stats_with(
            inner,
            [("deadline_exceeded", self.exceeded().to_string())],
        ))
    }
}
