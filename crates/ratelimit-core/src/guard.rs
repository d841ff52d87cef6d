//! A store behind guards: a deadline on every call, a circuit breaker, and a
//! local cache of denials.
//!
//! [`GuardedStorage`] wraps any [`Storage`] (usually a remote one: Redis):
//!
//! - **Deadline.** Every call gets at most this long; past it the call fails
//!   with a transient [`ErrorKind::Timeout`], and the HTTP policy answers by
//!   the rule's error mode (fail closed by default, or open).
//! - **Circuit breaker.** After `failures` consecutive transient failures it
//!   opens: calls fail at once with [`ErrorKind::Unavailable`] without
//!   touching the store. After `cooldown` one call goes through as a probe
//!   (half-open); its success closes the breaker, its failure opens it for
//!   another cool-down. A probe whose caller gave up (its future dropped: a
//!   client that disconnected) counts as a failed probe, and a half-open
//!   state older than one cool-down hands the probe to the next call, so the
//!   breaker can never stay half-open. Errors that are not transient (a wrong
//!   type, bad input) say nothing about the store's health and do not count.
//! - **Background probe.** While the breaker is open, a task on the tokio
//!   runtime asks the store a cheap question (`exists` on a fixed key) with a
//!   backoff from 10 ms up to at most 250 ms, and closes the breaker as soon
//!   as it answers: service comes back when the store does, not when traffic
//!   happens to arrive. It stops once the breaker closes or the store is
//!   dropped.
//! - **Deny cache** (Envoy's over-limit cache). Once the store says a rule
//!   denies a key until `T`, the same rule and key are denied locally until
//!   `T` for requests costing at least as much, without a round trip (rules
//!   with a penalty are never cached: a denial there has effects). It only
//!   ever denies, and only what the store would deny: the state of a denied
//!   key can only get worse until `T` (other requests consume more), except
//!   through a reset, which goes through this store and clears the entry, or
//!   a changed rule, which has another cache entry. A reset made through
//!   another instance is seen here at `T` at the latest. Bounded in size.
//!   A request of several rules denied from the cache reports the cached
//!   rule and its wait, which may be shorter than another of its rules would
//!   give (the client then retries early and is denied again).
//!
//! Counters are in [`GuardedStorage::status`] and in the store's
//! [`stats`](Storage::stats) details.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ratelimit_core::guard::{Breaker, GuardedStorage};
//! # use ratelimit_core::Storage;
//! # fn wrap(redis: Arc<dyn Storage>) -> GuardedStorage {
//! GuardedStorage::new(redis)
//!     .deadline(Duration::from_millis(100))
//!     .breaker(Breaker::new(5, Duration::from_secs(1)))
//!     .deny_cache(100_000)
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use smol_str::SmolStr;

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::decision::Decision;
use crate::error::{Error, ErrorKind, Result};
use crate::observe;
use crate::rule::Rule;
use crate::storage::{CasOp, DecideRequest, Storage, StorageStats};

/// When the circuit breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    /// Consecutive transient failures that open it.
    pub failures: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
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

/// What the guards have done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuardStatus {
    /// The breaker's state (`Closed` when there is no breaker).
    pub breaker: BreakerState,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// Calls refused by the open breaker.
    pub breaker_rejected: u64,
    /// Calls that ran past the deadline.
    pub deadline_exceeded: u64,
    /// Transient failures the store itself returned (its own timeouts
    /// included).
    pub transient_failures: u64,
    /// Decisions answered by the deny cache.
    pub deny_cache_hits: u64,
    /// Denials in the deny cache now.
    pub deny_cache_entries: usize,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The key the background probe asks about (it never exists).
const PROBE_KEY: &str = "ratelimit:breaker-probe";
/// The background probe's first and longest wait between attempts.
const PROBE_FIRST_WAIT: Duration = Duration::from_millis(10);
const PROBE_MAX_WAIT: Duration = Duration::from_millis(250);

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
            >= crate::clock::duration_to_micros(self.config.cooldown);
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
                tracing::info!(target: "ratelimit::guard", "store circuit breaker closed: the store answers again");
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
                target: "ratelimit::guard",
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
    deadline: Option<Duration>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if cell.probing.swap(true, Ordering::AcqRel) {
        return;
    }
    let (weak, store, clock) = (Arc::downgrade(cell), Arc::clone(store), Arc::clone(clock));
    // A probe waits no longer than a call would (one second without a deadline).
    let limit = deadline.unwrap_or(Duration::from_secs(1));
    runtime.spawn(async move {
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
    });
}

/// A cached denial: this rule denies this key, for requests costing at
/// least `cost`, until `until`.
#[derive(Debug, Clone)]
struct Denied {
    rule: Rule,
    cost: u64,
    until: Timestamp,
    /// When the key's state is whole again, as the store said.
    reset_at: Timestamp,
    decision: Decision,
}

const SHARDS: usize = 16;

/// Whether a denial of `request` may come from the cache: not a peek, and
/// no rule with a penalty (a denial there is not free of effects: after a
/// block ends, the store's next denial starts a new one, which a cached
/// answer would skip).
fn cacheable(request: &DecideRequest<'_>) -> bool {
    request.cost > 0 && request.entries.iter().all(|e| e.rule.penalty().is_none())
}

#[derive(Debug)]
struct DenyCache {
    capacity_per_shard: usize,
    shards: Vec<Mutex<DenyShard>>,
}

/// One lock's share of the deny cache.
#[derive(Debug, Default)]
struct DenyShard {
    map: HashMap<String, Denied>,
    /// Insertions into a full map before its next sweep ([`make_room`](crate::support::make_room)).
    credit: usize,
}

impl DenyCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity_per_shard: capacity.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, key: &str) -> Option<&Mutex<DenyShard>> {
        self.shards
            .get(crate::support::shard_index(key.as_bytes(), SHARDS))
    }

    /// The cached denial answering `request`, if any.
    fn lookup(&self, request: &DecideRequest<'_>) -> Option<Decision> {
        if !cacheable(request) {
            return None;
        }
        for entry in request.entries {
            let key = entry.state_key();
            let Some(shard) = self.shard(&key) else {
                continue;
            };
            let mut shard = shard.lock();
            if let Some(d) = shard.map.get(&key) {
                if d.until <= request.now {
                    shard.map.remove(&key);
                    continue;
                }
                if d.rule == *entry.rule && request.cost >= d.cost {
                    let retry = d.until.saturating_duration_since(request.now);
                    let reset = d.reset_at.saturating_duration_since(request.now);
                    return Some(Decision::deny(
                        SmolStr::new(d.decision.rule()),
                        d.decision.limit(),
                        d.decision.remaining(),
                        reset.max(retry),
                        retry,
                    ));
                }
            }
        }
        None
    }

    /// Remembers a denial the store just made.
    fn remember(&self, request: &DecideRequest<'_>, decision: &Decision) {
        let Some(retry) = decision.retry_after() else {
            return;
        };
        if decision.is_allowed() || !cacheable(request) || retry.is_zero() {
            return;
        }
        let Some(entry) = request
            .entries
            .iter()
            .find(|e| e.rule.name() == decision.rule())
        else {
            return;
        };
        let key = entry.state_key();
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let mut shard = shard.lock();
        if shard.map.len() >= self.capacity_per_shard && !shard.map.contains_key(&key) {
            let now = request.now;
            let DenyShard { map, credit } = &mut *shard;
            // Expired denials first; full of live ones, any (any is safe:
            // the cache only ever saves a round trip).
            let (_, live) =
                crate::support::make_room(map, self.capacity_per_shard, credit, |d| d.until > now);
            if live > 0 {
                observe::evicted("deny_cache", live as u64);
            }
        }
        shard.map.insert(
            key,
            Denied {
                rule: entry.rule.clone(),
                cost: request.cost,
                until: request.now.saturating_add(retry),
                reset_at: request.now.saturating_add(decision.reset_after()),
                decision: decision.clone(),
            },
        );
    }

    fn forget(&self, state_key: &str) {
        if let Some(shard) = self.shard(state_key) {
            shard.lock().map.remove(state_key);
        }
    }

    fn clear(&self) {
        for s in &self.shards {
            s.lock().map.clear();
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }
}

/// A store behind a deadline, a circuit breaker and a deny cache (see the
/// [module docs](self)). Each guard is off until configured.
pub struct GuardedStorage {
    inner: Arc<dyn Storage>,
    deadline: Option<Duration>,
    breaker: Option<Arc<BreakerCell>>,
    deny_cache: Option<DenyCache>,
    clock: Arc<dyn Clock>,
    breaker_opened: AtomicU64,
    breaker_rejected: AtomicU64,
    deadline_exceeded: AtomicU64,
    transient_failures: AtomicU64,
    deny_cache_hits: AtomicU64,
}

impl fmt::Debug for GuardedStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedStorage")
            .field("inner", &self.inner)
            .field("deadline", &self.deadline)
            .field("breaker", &self.breaker.as_ref().map(|b| b.config))
            .field("deny_cache", &self.deny_cache.is_some())
            .finish_non_exhaustive()
    }
}

impl GuardedStorage {
    /// `inner` with no guard yet.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            deadline: None,
            breaker: None,
            deny_cache: None,
            clock: Arc::new(SystemClock),
            breaker_opened: AtomicU64::new(0),
            breaker_rejected: AtomicU64::new(0),
            deadline_exceeded: AtomicU64::new(0),
            transient_failures: AtomicU64::new(0),
            deny_cache_hits: AtomicU64::new(0),
        }
    }

    /// Every call gets at most `deadline`.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// A circuit breaker.
    #[must_use]
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = Some(Arc::new(BreakerCell::new(breaker)));
        self
    }

    /// A deny cache of at most `capacity` denials (0: none).
    #[must_use]
    pub fn deny_cache(mut self, capacity: usize) -> Self {
        self.deny_cache = (capacity > 0).then(|| DenyCache::new(capacity));
        self
    }

    /// The clock the breaker's cool-down is measured with (tests).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The store behind the guards.
    pub fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    /// What the guards have done so far.
    pub fn status(&self) -> GuardStatus {
        GuardStatus {
            breaker: self
                .breaker
                .as_ref()
                .map_or(BreakerState::Closed, |b| b.state()),
            breaker_opened: self.breaker_opened.load(Ordering::Relaxed),
            breaker_rejected: self.breaker_rejected.load(Ordering::Relaxed),
            deadline_exceeded: self.deadline_exceeded.load(Ordering::Relaxed),
            transient_failures: self.transient_failures.load(Ordering::Relaxed),
            deny_cache_hits: self.deny_cache_hits.load(Ordering::Relaxed),
            deny_cache_entries: self.deny_cache.as_ref().map_or(0, DenyCache::len),
        }
    }

    /// Runs `call` behind the breaker and the deadline.
    async fn guarded<T, F>(&self, call: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let pass = match &self.breaker {
            Some(b) => match b.admit(self.clock.now()) {
                Some(pass) => Some(pass),
                None => {
                    self.breaker_rejected.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        "the store's circuit breaker is open: not calling the store until it answers a probe",
                    )
                    .with_transient(true));
                }
            },
            None => None,
        };
        // A probe whose caller gives up counts as a failed probe.
        let mut probe = match (&self.breaker, pass) {
            (Some(cell), Some(Pass::Probe)) => Some(ProbeGuard {
                cell,
                clock: &*self.clock,
                armed: true,
            }),
            _ => None,
        };
        let answered = match self.deadline {
            Some(deadline) => tokio::time::timeout(deadline, call)
                .await
                .map_err(|_| deadline),
            None => Ok(call.await),
        };
        if let Some(probe) = &mut probe {
            probe.armed = false;
        }
        let result = match answered {
            Ok(r) => {
                // The store's own failures (its own timeouts included).
                if matches!(&r, Err(e) if e.is_transient()) {
                    self.transient_failures.fetch_add(1, Ordering::Relaxed);
                }
                r
            }
            Err(deadline) => {
                self.deadline_exceeded.fetch_add(1, Ordering::Relaxed);
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the store did not answer within its deadline of {}",
                        crate::format_duration(deadline)
                    ),
                )
                .with_transient(true))
            }
        };
        let failed = matches!(&result, Err(e) if e.is_transient());
        if let (Some(b), Some(pass)) = (&self.breaker, pass)
            && b.record(pass, !failed, self.clock.now())
        {
            self.breaker_opened.fetch_add(1, Ordering::Relaxed);
            spawn_background_probe(b, &self.inner, &self.clock, self.deadline);
        }
        result
    }
}

#[async_trait]
impl Storage for GuardedStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.guarded(self.inner.get(key)).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        if let Some(c) = &self.deny_cache {
            c.forget(key);
        }
        self.guarded(self.inner.set(key, value, ttl)).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        if let Some(c) = &self.deny_cache {
            c.forget(key);
        }
        self.guarded(self.inner.delete(key)).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.guarded(self.inner.exists(key)).await
    }

    async fn increment(&self, key: &str, amount: i64, ttl: Duration) -> Result<i64> {
        self.guarded(self.inner.increment(key, amount, ttl)).await
    }

    async fn clear(&self) -> Result<u64> {
        if let Some(c) = &self.deny_cache {
            c.clear();
        }
        self.guarded(self.inner.clear()).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    async fn stats(&self) -> Result<StorageStats> {
        // Not through the breaker, and never failing for the store's sake:
        // the guards' own state is most wanted when the store is down.
        let inner = match self.deadline {
            Some(d) => tokio::time::timeout(d, self.inner.stats())
                .await
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::Timeout, "stats timed out"))),
            None => self.inner.stats().await,
        };
        let mut stats = inner.unwrap_or_else(|e| {
            let mut s = StorageStats::new("unavailable");
            s.details.push(("error".to_owned(), e.to_string()));
            s
        });
        let s = self.status();
        stats.details.extend([
            ("breaker".to_owned(), s.breaker.as_str().to_owned()),
            ("breaker_opened".to_owned(), s.breaker_opened.to_string()),
            (
                "breaker_rejected".to_owned(),
                s.breaker_rejected.to_string(),
            ),
            (
                "deadline_exceeded".to_owned(),
                s.deadline_exceeded.to_string(),
            ),
            (
                "transient_failures".to_owned(),
                s.transient_failures.to_string(),
            ),
            ("deny_cache_hits".to_owned(), s.deny_cache_hits.to_string()),
            (
                "deny_cache_entries".to_owned(),
                s.deny_cache_entries.to_string(),
            ),
        ]);
        Ok(stats)
    }

    async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
        if let Some(c) = &self.deny_cache {
            for op in ops {
                c.forget(op.key);
            }
        }
        self.guarded(self.inner.compare_and_swap(ops)).await
    }

    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        if let Some(hit) = self.cached(request) {
            return Ok(hit);
        }
        let decision = self.guarded(self.inner.decide(request)).await?;
        if let Some(c) = &self.deny_cache {
            c.remember(request, &decision);
        }
        Ok(decision)
    }

    fn decide_now(&self, request: &DecideRequest<'_>) -> Option<Result<Decision>> {
        if let Some(hit) = self.cached(request) {
            return Some(Ok(hit));
        }
        // A store that answers without waiting needs no deadline.
        let result = self.inner.decide_now(request)?;
        if let (Some(c), Ok(d)) = (&self.deny_cache, &result) {
            c.remember(request, d);
        }
        Some(result)
    }
}

impl GuardedStorage {
    fn cached(&self, request: &DecideRequest<'_>) -> Option<Decision> {
        let hit = self.deny_cache.as_ref()?.lookup(request)?;
        self.deny_cache_hits.fetch_add(1, Ordering::Relaxed);
        observe::counter(observe::DENY_CACHE_HITS, 1);
        Some(hit)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::clock::ManualClock;

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

    /// A guarded switch with a breaker (2 failures, 1 s) on a manual clock,
    /// and no deadline: its calls can be polled by hand, outside a runtime.
    fn guarded() -> (Arc<Switch>, Arc<ManualClock>, GuardedStorage) {
        let switch = Arc::new(Switch::default());
        let clock = Arc::new(ManualClock::new(Timestamp::from_micros(1_000_000)));
        let store = GuardedStorage::new(switch.clone())
            .breaker(Breaker::new(2, Duration::from_secs(1)))
            .clock(clock.clone());
        (switch, clock, store)
    }

    /// Polls `f` once.
    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn call(store: &GuardedStorage) -> Poll<Result<bool>> {
        poll_once(pin!(store.exists("k")))
    }

    fn open(switch: &Switch, store: &GuardedStorage) {
        switch.0.store(FAILING, Ordering::SeqCst);
        for _ in 0..2 {
            assert!(matches!(call(store), Poll::Ready(Err(_))));
        }
        assert_eq!(store.status().breaker, BreakerState::Open);
    }

    #[test]
    fn a_dropped_probe_counts_as_a_failed_probe() {
        let (switch, clock, store) = guarded();
        open(&switch, &store);
        clock.advance(Duration::from_secs(1));
        switch.0.store(HANGING, Ordering::SeqCst);
        {
            let probe = pin!(store.exists("k"));
            assert!(poll_once(probe).is_pending());
            assert_eq!(store.status().breaker, BreakerState::HalfOpen);
            // The caller gives up: the future is dropped here.
        }
        assert_eq!(
            store.status().breaker,
            BreakerState::Open,
            "a dropped probe reopens the breaker"
        );
        switch.0.store(HEALTHY, Ordering::SeqCst);
        let rejected =
            matches!(call(&store), Poll::Ready(Err(e)) if e.kind() == ErrorKind::Unavailable);
        assert!(rejected, "a new cool-down starts at the dropped probe");
        clock.advance(Duration::from_secs(1));
        assert!(matches!(call(&store), Poll::Ready(Ok(false))));
        assert_eq!(store.status().breaker, BreakerState::Closed);
    }

    #[test]
    fn a_half_open_state_expires_after_one_cool_down() {
        let (switch, clock, store) = guarded();
        open(&switch, &store);
        clock.advance(Duration::from_secs(1));
        switch.0.store(HANGING, Ordering::SeqCst);
        let mut lost = Box::pin(store.exists("k"));
        assert!(poll_once(lost.as_mut()).is_pending());
        switch.0.store(HEALTHY, Ordering::SeqCst);
        // One probe at a time while it is young...
        clock.advance(Duration::from_millis(999));
        assert!(matches!(call(&store), Poll::Ready(Err(_))));
        assert_eq!(store.status().breaker, BreakerState::HalfOpen);
        // ...and the next call probes once it is a cool-down old.
        clock.advance(Duration::from_millis(1));
        assert!(matches!(call(&store), Poll::Ready(Ok(false))));
        assert_eq!(store.status().breaker, BreakerState::Closed);
        // The lost probe, given up late, does not reopen a healthy breaker.
        drop(lost);
        assert_eq!(store.status().breaker, BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_background_probe_closes_the_breaker_without_traffic() {
        let switch = Arc::new(Switch::default());
        let store = GuardedStorage::new(switch.clone())
            .deadline(Duration::from_millis(50))
            // A cool-down no request would ever outlast in this test.
            .breaker(Breaker::new(1, Duration::from_secs(3_600)));
        switch.0.store(FAILING, Ordering::SeqCst);
        assert!(store.exists("k").await.is_err());
        assert_eq!(store.status().breaker, BreakerState::Open);
        switch.0.store(HANGING, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            store.status().breaker,
            BreakerState::Open,
            "a hanging store is not healthy"
        );
        switch.0.store(HEALTHY, Ordering::SeqCst);
        let mut waited = Duration::ZERO;
        while store.status().breaker != BreakerState::Closed {
            assert!(waited < Duration::from_secs(10), "the breaker never closed");
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        assert!(store.exists("k").await.is_ok());
    }
}
