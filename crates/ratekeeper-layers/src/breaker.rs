//! The circuit breaker layer.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use ratekeeper_core::layer::{Layer, LayeredStorage, stats_with};
use ratekeeper_core::observe;
use ratekeeper_core::{Clock, SystemClock, Timestamp};
use ratekeeper_core::{Error, ErrorKind, Result};
use ratekeeper_core::{Storage, StorageStats};

/// A circuit breaker around a store: when it opens and how long it stays
/// open.
///
/// After `failures` consecutive transient failures the breaker opens: calls
/// fail at once with [`ErrorKind::Unavailable`] without touching the store.
/// After `cooldown` one call goes through as a probe (half-open); its
/// success closes the breaker, its failure opens it for another cool-down. A
/// probe whose caller gave up (its future dropped: a client that
/// disconnected) counts as a failed probe, and a half-open state older than
/// one cool-down hands the probe to the next call, so the breaker can never
/// stay half-open. Errors that are not transient (a wrong type, bad input)
/// say nothing about the store's health and do not count.
///
/// While the breaker is open, a task on the tokio runtime asks the store a
/// cheap question (`exists` on a fixed key) with a backoff from 10 ms up to
/// at most 250 ms, and closes the breaker as soon as it answers: service
/// comes back when the store does, not when traffic happens to arrive. It
/// stops once the breaker closes or the store is dropped.
///
/// Put a [`Deadline`](super::Deadline) inside the breaker, so that a store
/// that hangs counts as failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    /// Consecutive transient failures that open it.
    pub failures: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
}

impl Layer for Breaker {
    type Wrapped = BreakerStorage;

    fn layer(self, inner: Arc<dyn Storage>) -> BreakerStorage {
        BreakerStorage::new(inner, self)
    }
}

impl Breaker {
    /// Opens after `failures` consecutive transient failures (at least 1),
    /// probes after `cooldown`.
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Self {
            failures: failures.max(1),
            cooldown,
        }
    }
}

/// The circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go to the store.
    Closed,
    /// Calls fail at once, until the cool-down ends.
    Open,
    /// One probe call is on its way; others fail at once.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// What a breaker has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerStatus {
    /// Its state.
    pub state: BreakerState,
    /// Times it opened.
    pub opened: u64,
    /// Calls it refused while open.
    pub rejected: u64,
    /// Transient failures of the calls it let through (a deadline's
    /// timeouts included).
    pub transient_failures: u64,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The key the background probe asks about (it never exists).
const PROBE_KEY: &str = "ratelimit:breaker-probe";
/// The background probe's first and longest wait between attempts.
const PROBE_FIRST_WAIT: Duration = Duration::from_millis(10);
const PROBE_MAX_WAIT: Duration = Duration::from_millis(250);
/// The longest a background probe waits for its answer.
const PROBE_LIMIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct BreakerCell {
    config: Breaker,
    state: AtomicU8,
    failures: AtomicU32,
    /// When the breaker last opened, or, while half-open, when the probe
    /// went out (µs).
    since_us: AtomicU64,
    /// Whether a background probe task is running.
    probing: AtomicBool,
}

/// A call the breaker let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Normal,
    Probe,
}

impl BreakerCell {
    fn new(config: Breaker) -> Self {
        Self {
            config,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            since_us: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    /// Whether a call may go to the store now, and as what. Open past its
    /// cool-down, or half-open with a probe out for longer than one (the
    /// probe is lost: hung without a deadline), the caller becomes the probe.
    fn admit(&self, now: Timestamp) -> Option<Pass> {
        let state = self.state.load(Ordering::Acquire);
        if state == CLOSED {
            return Some(Pass::Normal);
        }
        let since = self.since_us.load(Ordering::Acquire);
        let cooled = now.as_micros().saturating_sub(since)
            >= ratekeeper_core::clock::duration_to_micros(self.config.cooldown);
        // Whoever moves `since` forward owns the probe: one caller per cool-down.
        let elected = cooled
            && self
                .since_us
                .compare_exchange(since, now.as_micros(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if !elected {
            return None;
        }
        if state == OPEN {
            // Only a store that is still open goes half-open (it may have
            // closed meanwhile: then this call is a probe of a healthy store).
            let _ =
                self.state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire);
            observe::gauge(observe::BREAKER_STATE, 2.0);
        }
        Some(Pass::Probe)
    }

    /// Records a call's outcome; whether the breaker just opened.
    fn record(&self, pass: Pass, healthy: bool, now: Timestamp) -> bool {
        if healthy {
            self.failures.store(0, Ordering::Release);
            if self.state.load(Ordering::Acquire) != CLOSED
                && self.state.swap(CLOSED, Ordering::AcqRel) != CLOSED
            {
                tracing::info!(target: "ratekeeper::guard", "store circuit breaker closed: the store answers again");
                observe::gauge(observe::BREAKER_STATE, 0.0);
            }
            return false;
        }
        if pass == Pass::Probe {
            // A failed probe: open for another cool-down, unless a healthy
            // answer closed the breaker meanwhile.
            if self.state.load(Ordering::Acquire) != CLOSED {
                self.since_us.store(now.as_micros(), Ordering::Release);
                self.state.store(OPEN, Ordering::Release);
                observe::gauge(observe::BREAKER_STATE, 1.0);
            }
            return false;
        }
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.config.failures
            && self
                .state
                .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.since_us.store(now.as_micros(), Ordering::Release);
            observe::gauge(observe::BREAKER_STATE, 1.0);
            observe::counter(observe::BREAKER_OPENED, 1);
            tracing::warn!(
                target: "ratekeeper::guard",
                failures,
                cooldown_ms = self.config.cooldown.as_millis() as u64,
                "store circuit breaker opened: calls fail at once until a probe succeeds"
            );
            return true;
        }
        false
    }

    fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }
}

/// A probe on its way: if its caller gives up before the store answers (the
/// future is dropped), the probe counts as failed, so the breaker reopens
/// for one cool-down instead of staying half-open.
struct ProbeGuard<'a> {
    cell: &'a BreakerCell,
    clock: &'a dyn Clock,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cell.record(Pass::Probe, false, self.clock.now());
        }
    }
}

/// Probes `store` in the background while `cell` is open, with a bounded
/// backoff, and closes it when the store answers. At most one such task
/// per breaker; it ends when the breaker closes or is dropped.
fn spawn_background_probe(
    cell: &Arc<BreakerCell>,
    store: &Arc<dyn Storage>,
    clock: &Arc<dyn Clock>,
) {
    if cell.probing.swap(true, Ordering::AcqRel) {
        return;
    }
    let (weak, store, clock) = (Arc::downgrade(cell), Arc::clone(store), Arc::clone(clock));
    // A probe waits at most this long (a deadline layer below may cut it
    // shorter).
    let limit = PROBE_LIMIT;
    let probe = async move {
        let mut wait = PROBE_FIRST_WAIT;
        loop {
            tokio::time::sleep(wait).await;
            let Some(cell) = weak.upgrade() else { return };
            if cell.state() == BreakerState::Closed {
                cell.probing.store(false, Ordering::Release);
                // It may have opened again between the two loads, while
                // this task still held the flag: then this task goes on.
                if cell.state() == BreakerState::Closed || cell.probing.swap(true, Ordering::AcqRel)
                {
                    return;
                }
                wait = PROBE_FIRST_WAIT;
                continue;
            }
            let healthy = match tokio::time::timeout(limit, store.exists(PROBE_KEY)).await {
                Ok(Ok(_)) => true,
                // A refusal that is not transient is still an answer.
                Ok(Err(e)) => !e.is_transient(),
                Err(_) => false,
            };
            if healthy {
                cell.record(Pass::Probe, true, clock.now());
                wait = PROBE_FIRST_WAIT;
            } else {
                wait = (wait * 2).min(PROBE_MAX_WAIT);
            }
        }
    };
    if !ratekeeper_core::kit::spawn_or_warn(
        "the circuit breaker's background probe (recovery waits for a request to probe the store)",
        probe,
    ) {
        cell.probing.store(false, Ordering::Release);
    }
}

/// A store behind a [`Breaker`] (see there for how it behaves).
pub struct BreakerStorage {
    inner: Arc<dyn Storage>,
    cell: Arc<BreakerCell>,
    clock: Arc<dyn Clock>,
    opened: AtomicU64,
    rejected: AtomicU64,
    transient_failures: AtomicU64,
}

impl fmt::Debug for BreakerStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerStorage")
            .field("inner", &self.inner)
            .field("breaker", &self.cell.config)
            .field("state", &self.cell.state())
            .finish_non_exhaustive()
    }
}

impl BreakerStorage {
    /// `inner` behind `breaker`, closed.
    pub fn new(inner: Arc<dyn Storage>, breaker: Breaker) -> Self {
        Self {
            inner,
            cell: Arc::new(BreakerCell::new(breaker)),
            clock: Arc::new(SystemClock),
            opened: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            transient_failures: AtomicU64::new(0),
        }
    }

    /// The clock the cool-down is measured with (tests).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// What the breaker has done so far.
    pub fn status(&self) -> BreakerStatus {
        BreakerStatus {
            state: self.cell.state(),
            opened: self.opened.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            transient_failures: self.transient_failures.load(Ordering::Relaxed),
        }
    }

    /// Runs `call` if the breaker lets it through, and records how it went.
    async fn gated<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let Some(pass) = self.cell.admit(self.clock.now()) else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the store's circuit breaker is open: not calling the store until it answers a probe",
            )
            .with_transient(true));
        };
        // A probe whose caller gives up counts as a failed probe.
        let mut probe = (pass == Pass::Probe).then(|| ProbeGuard {
            cell: &self.cell,
            clock: &*self.clock,
            armed: true,
        });
        let result = call.await;
        if let Some(probe) = &mut probe {
            probe.armed = false;
        }
        let failed = matches!(&result, Err(e) if e.is_transient());
        if failed {
            self.transient_failures.fetch_add(1, Ordering::Relaxed);
        }
        if self.cell.record(pass, !failed, self.clock.now()) {
            self.opened.fetch_add(1, Ordering::Relaxed);
            spawn_background_probe(&self.cell, &self.inner, &self.clock);
        }
        result
    }
}

#[async_trait]
impl LayeredStorage for BreakerStorage {
    fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    fn around<'a, T: Send + 'a>(
        &'a self,
        call: impl Future<Output = Result<T>> + Send + 'a,
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        self.gated(call)
    }

    /// Not through the breaker, and answered even when the store cannot.
    async fn stats(&self) -> Result<StorageStats> {
        let s = self.status();
        Ok(stats_with(
            self.inner.stats().await,
            [
                ("breaker", s.state.as_str().to_owned()),
                ("breaker_opened", s.opened.to_string()),
                ("breaker_rejected", s.rejected.to_string()),
                ("transient_failures", s.transient_failures.to_string()),
            ],
        ))
    }

    // `decide_now` forwards: a store that answers without waiting cannot
    // hang, and needs no breaker.
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::{Deadline, DeadlineStorage};
    use ratekeeper_core::Decision;
    use ratekeeper_core::ManualClock;
    use ratekeeper_core::{CasOp, DecideRequest};

    const HEALTHY: u8 = 0;
    const FAILING: u8 = 1;
    const HANGING: u8 = 2;

    /// A store that answers, fails with a transient error, or never answers.
    #[derive(Debug, Default)]
    struct Switch(AtomicU8);

    impl Switch {
        async fn gate(&self) -> Result<()> {
            match self.0.load(Ordering::SeqCst) {
                HEALTHY => Ok(()),
                FAILING => Err(Error::new(ErrorKind::Unavailable, "down").with_transient(true)),
                _ => std::future::pending().await,
            }
        }
    }

    #[async_trait]
    impl Storage for Switch {
        async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
            ratekeeper_core::kit::decide_with_cas(self, request).await
        }
        async fn get(&self, _: &str) -> Result<Option<Vec<u8>>> {
            self.gate().await.map(|()| None)
        }
        async fn set(&self, _: &str, _: &[u8], _: Duration) -> Result<()> {
            self.gate().await
        }
        async fn delete(&self, _: &str) -> Result<bool> {
            self.gate().await.map(|()| false)
        }
        async fn exists(&self, _: &str) -> Result<bool> {
            self.gate().await.map(|()| false)
        }
        async fn increment(&self, _: &str, amount: i64, _: Duration) -> Result<i64> {
            self.gate().await.map(|()| amount)
        }
        async fn clear(&self) -> Result<u64> {
            self.gate().await.map(|()| 0)
        }
        async fn close(&self) -> Result<()> {
            Ok(())
        }
        async fn stats(&self) -> Result<StorageStats> {
            Ok(StorageStats::new("switch"))
        }
        async fn compare_and_swap(&self, _: &[CasOp<'_>]) -> Result<bool> {
            self.gate().await.map(|()| true)
        }
    }

    /// A switch behind a breaker (2 failures, 1 s) on a manual clock, and
    /// no deadline: its calls can be polled by hand, outside a runtime.
    fn guarded() -> (Arc<Switch>, Arc<ManualClock>, BreakerStorage) {
        let switch = Arc::new(Switch::default());
        let clock = Arc::new(ManualClock::new(Timestamp::from_micros(1_000_000)));
        let store = BreakerStorage::new(switch.clone(), Breaker::new(2, Duration::from_secs(1)))
            .clock(clock.clone());
        (switch, clock, store)
    }

    /// Polls `f` once.
    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn call(store: &BreakerStorage) -> Poll<Result<bool>> {
        poll_once(pin!(Storage::exists(store, "k")))
    }

    fn open(switch: &Switch, store: &BreakerStorage) {
        switch.0.store(FAILING, Ordering::SeqCst);
        for _ in 0..2 {
            assert!(matches!(call(store), Poll::Ready(Err(_))));
        }
        assert_eq!(store.status().state, BreakerState::Open);
    }

    #[test]
    fn a_dropped_probe_counts_as_a_failed_probe() {
        let (switch, clock, store) = guarded();
        open(&switch, &store);
        clock.advance(Duration::from_secs(1));
        switch.0.store(HANGING, Ordering::SeqCst);
        {
            let probe = pin!(Storage::exists(&store, "k"));
            assert!(poll_once(probe).is_pending());
            assert_eq!(store.status().state, BreakerState::HalfOpen);
            // The caller gives up: the future is dropped here.
        }
        assert_eq!(
            store.status().state,
            BreakerState::Open,
            "a dropped probe reopens the breaker"
        );
        switch.0.store(HEALTHY, Ordering::SeqCst);
        let rejected =
            matches!(call(&store), Poll::Ready(Err(e)) if e.kind() == ErrorKind::Unavailable);
        assert!(rejected, "a new cool-down starts at the dropped probe");
        clock.advance(Duration::from_secs(1));
        assert!(matches!(call(&store), Poll::Ready(Ok(false))));
        assert_eq!(store.status().state, BreakerState::Closed);
    }

    #[test]
    fn a_half_open_state_expires_after_one_cool_down() {
        let (switch, clock, store) = guarded();
        open(&switch, &store);
        clock.advance(Duration::from_secs(1));
        switch.0.store(HANGING, Ordering::SeqCst);
        let mut lost = Box::pin(Storage::exists(&store, "k"));
        assert!(poll_once(lost.as_mut()).is_pending());
        switch.0.store(HEALTHY, Ordering::SeqCst);
        // One probe at a time while it is young...
        clock.advance(Duration::from_millis(999));
        assert!(matches!(call(&store), Poll::Ready(Err(_))));
        assert_eq!(store.status().state, BreakerState::HalfOpen);
        // ...and the next call probes once it is a cool-down old.
        clock.advance(Duration::from_millis(1));
        assert!(matches!(call(&store), Poll::Ready(Ok(false))));
        assert_eq!(store.status().state, BreakerState::Closed);
        // The lost probe, given up late, does not reopen a healthy breaker.
        drop(lost);
        assert_eq!(store.status().state, BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_background_probe_closes_the_breaker_without_traffic() {
        let switch = Arc::new(Switch::default());
        let store = BreakerStorage::new(
            Arc::new(DeadlineStorage::new(
                switch.clone(),
                Deadline::new(Duration::from_millis(50)),
            )),
            // A cool-down no request would ever outlast in this test.
            Breaker::new(1, Duration::from_secs(3_600)),
        );
        switch.0.store(FAILING, Ordering::SeqCst);
        assert!(Storage::exists(&store, "k").await.is_err());
        assert_eq!(store.status().state, BreakerState::Open);
        switch.0.store(HANGING, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            store.status().state,
            BreakerState::Open,
            "a hanging store is not healthy"
        );
        switch.0.store(HEALTHY, Ordering::SeqCst);
        let mut waited = Duration::ZERO;
        while store.status().state != BreakerState::Closed {
            assert!(waited < Duration::from_secs(10), "the breaker never closed");
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        assert!(Storage::exists(&store, "k").await.is_ok());
    }
}
