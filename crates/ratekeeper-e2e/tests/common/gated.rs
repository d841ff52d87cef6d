//! A store in front of another that can hold a call back, to put a test's
//! events in a chosen order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use ratekeeper::layer::LayeredStorage;
use ratekeeper::{DecideRequest, Decision, Result, Storage};

/// Delegates everything to `inner`, except that the `get` numbered by
/// [`hold_get`](Self::hold_get) answers only once [`release`](Self::release)d
/// (with what it read before waiting), and that decisions never answer
/// while [`hang_decisions`](Self::hang_decisions) is on.
#[derive(Debug)]
pub(crate) struct Gated {
    inner: Arc<dyn Storage>,
    gets: AtomicU32,
    held: AtomicU32,
    release: tokio::sync::Notify,
    hang: AtomicBool,
}

impl Gated {
    pub(crate) fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            gets: AtomicU32::new(0),
            held: AtomicU32::new(u32::MAX),
            release: tokio::sync::Notify::new(),
            hang: AtomicBool::new(false),
        }
    }

    /// Counts `get`s from zero again and holds the one numbered `n`.
    pub(crate) fn hold_get(&self, n: u32) {
        self.gets.store(0, Ordering::SeqCst);
        self.held.store(n, Ordering::SeqCst);
    }

    /// `get`s since the last [`hold_get`](Self::hold_get).
    pub(crate) fn gets(&self) -> u32 {
        self.gets.load(Ordering::SeqCst)
    }

    /// Lets the held `get` answer.
    pub(crate) fn release(&self) {
        self.release.notify_one();
    }

    /// Whether decisions hang (never reaching `inner`).
    pub(crate) fn hang_decisions(&self, hang: bool) {
        self.hang.store(hang, Ordering::SeqCst);
    }
}

/// A layer: it overrides the operations it changes and forwards the
/// others to `inner`.
#[async_trait]
impl LayeredStorage for Gated {
    fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let value = self.inner.get(key).await;
        if self.gets.fetch_add(1, Ordering::SeqCst) == self.held.load(Ordering::SeqCst) {
            self.release.notified().await;
        }
        value
    }
    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.decide(request).await
    }
    /// Never at once: every decision goes through `decide`, where it can hang.
    fn decide_now(&self, _: &DecideRequest<'_>) -> Option<Result<Decision>> {
        None
    }
}
