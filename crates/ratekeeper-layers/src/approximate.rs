//! Approximate mode for very hot keys: count locally, write to the store in
//! batches (the idea of limitador's cached counters).
//!
//! [`ApproximateStorage`] wraps a store (usually Redis). The first request
//! for a rule and key in a while is decided by the store, exactly, and the
//! answer becomes a local *budget*: the units the store said were left.
//! Until the budget runs out or is one flush period old, later requests for
//! that key are decided here, in memory, without a round trip; the units
//! they take are *pending*. Every flush period a background task writes each
//! key's pending units to the store in one call and refreshes the budget
//! from its answer.
//!
//! **What it trades.** Each instance spends its budget without knowing what
//! the others spend in the same period, so the limit is shared only
//! approximately:
//!
//! - With one instance it never admits more than the exact limiter would,
//!   give or take what refills within one flush period (a budget does not
//!   grow between flushes, so it admits less rather than more).
//! - With `N` instances, all of which see `R` units left at their last
//!   refresh, up to `N × R` units can be admitted before the next refresh
//!   shows them: over-admission is at most `(N − 1) × R` per flush period per
//!   key. [`Approximate::with_instances`] divides each budget by the number of
//!   instances, which removes most of it at the price of more round trips
//!   near the limit. Units admitted that no longer fit when the batch is
//!   written are counted as `unrecorded` (see [`ApproximateStatus`]).
//! - Denials are answered locally until the store's retry time, like the
//!   [deny cache](crate::DenyCache): they are exact.
//! - `cargo xtask bench redis` measures the throughput gained and the
//!   over-admission under load; docs/operations.md has the figures.
//!
//! **What stays exact.** Peeks (cost 0) and rules with a penalty always go
//! to the store. A key that has not been seen within one flush period is
//! decided by the store. When the table is full ([`Approximate::with_max_keys`]),
//! new keys are decided by the store, so a flood of unique keys costs
//! bounded memory and loses nothing. A reset (or any write) through this
//! store drops the key's local state, pending units included.
//!
//! **Failures.** A batch the store refuses with an error stays pending and
//! is retried at the next flush. A batch whose write timed out is not: a
//! slow store may still run it, and writing it again could count it twice,
//! so its units are counted as `uncertain` instead. A request that needs the
//! store gets the error (and the rule's error mode). A decision that took a
//! key's pending units to the store and was dropped before it finished (its
//! client went away) puts the units it had not written back as pending: if
//! its write was already on its way they may be counted twice, so the limit
//! errs strict, never loose.
//! [`close`](Storage::close) writes whatever is pending before closing the
//! store.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ratekeeper_layers::{Approximate, ApproximateStorage};
//! # use ratekeeper_core::Storage;
//! # fn wrap(redis: Arc<dyn Storage>) -> ApproximateStorage {
//! ApproximateStorage::new(redis, Approximate::new(Duration::from_millis(50)).with_max_keys(10_000))
//! # }
//! ```
//!
//! One file on purpose: the local table, the decision and the batched flush
//! share one invariant (a pending unit is written once or put back, never
//! lost), which is only checkable with all three in view.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};

use ratekeeper_core::Decision;
use ratekeeper_core::Periodic;
use ratekeeper_core::Result;
use ratekeeper_core::Rule;
use ratekeeper_core::layer::{Layer, LayeredStorage, stats_with};
use ratekeeper_core::observe;
use ratekeeper_core::{AdjustRequest, CasOp, DecideEntry, DecideRequest, Storage, StorageStats};
use ratekeeper_core::{Clock, SystemClock, Timestamp};

/// How many keys the local table holds unless told otherwise.
pub const DEFAULT_APPROXIMATE_KEYS: usize = 10_000;

/// The flush period configuration files get unless they name one.
pub const DEFAULT_APPROXIMATE_FLUSH: Duration = Duration::from_millis(50);

/// Batches written to the store at once by one flush.
const FLUSH_CONCURRENCY: usize = 32;

const SHARDS: usize = 16;

/// The settings of approximate mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approximate {
    flush: Duration,
    max_keys: usize,
    instances: u64,
}

impl Approximate {
    /// Writes pending units every `flush` (at least 1 ms): also how old a
    /// local budget may get before the store is asked again.
    pub fn new(flush: Duration) -> Self {
        Self {
            flush: flush.max(Duration::from_millis(1)),
            max_keys: DEFAULT_APPROXIMATE_KEYS,
            instances: 1,
        }
    }

    /// How many instances share the store (at least 1, the default): each
    /// takes only `1/n` of what the store says is left as its local budget,
    /// so that together they do not spend more than is left before their
    /// next refresh. Budgets shrink as the limit nears, and the last units
    /// are decided by the store. The price: more round trips near the limit.
    #[must_use]
    pub fn with_instances(mut self, n: u64) -> Self {
        self.instances = n.max(1);
        self
    }

    /// At most `n` keys (at least 1) counted locally at once; others are
    /// decided by the store.
    #[must_use]
    pub fn with_max_keys(mut self, n: usize) -> Self {
        self.max_keys = n.max(1);
        self
    }

    /// The flush period.
    pub fn flush(&self) -> Duration {
        self.flush
    }

    /// The bound on locally counted keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How many instances share the store.
    pub fn instances(&self) -> u64 {
        self.instances
    }

    /// The local budget when the store says `remaining` units are left and
    /// `pending` are not written yet.
    fn budget(&self, remaining: u64, pending: u64) -> u64 {
        remaining.saturating_sub(pending) / self.instances
    }
}

/// What approximate mode has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ApproximateStatus {
    /// Decisions answered locally (admissions from a budget, denials until
    /// a retry time).
    pub local_decisions: u64,
    /// Decisions that went to the store.
    pub store_decisions: u64,
    /// Batches of pending units written to the store.
    pub batches: u64,
    /// Units written to the store in batches.
    pub flushed_units: u64,
    /// Units admitted locally that no longer fitted when their batch was
    /// written: the measured over-admission.
    pub unrecorded_units: u64,
    /// Batches the store failed to take. Their units are pending again,
    /// except after a timeout (see `uncertain_units`).
    pub flush_errors: u64,
    /// Units whose write timed out: the store may or may not have taken
    /// them (a slow store can still run a write its caller gave up on), so
    /// they are never written again — never counted twice, perhaps not at
    /// all.
    pub uncertain_units: u64,
    /// Keys counted locally now.
    pub keys: usize,
}

/// One rule and key counted locally.
#[derive(Debug)]
struct Local {
    key: String,
    rule: Rule,
    /// Units this instance may still admit without asking the store.
    budget: u64,
    /// Units admitted here and not yet written.
    pending: u64,
    limit: u64,
    synced_at: Timestamp,
    used_at: Timestamp,
    reset_at: Timestamp,
    /// The store denied requests of at least this cost until then.
    denied: Option<(Timestamp, u64, Decision)>,
    /// Held by whoever talks to the store about this key: the store sees
    /// the key's pending units before any other decision on it.
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Local {
    /// A key about to be decided in the store: no budget yet.
    fn new(entry: &DecideEntry<'_>, now: Timestamp) -> Self {
        Self {
            key: entry.key.to_owned(),
            rule: entry.rule.clone(),
            budget: 0,
            pending: 0,
            limit: entry.rule.quota().limit(),
            synced_at: Timestamp::from_micros(0),
            used_at: now,
            reset_at: now,
            denied: None,
            gate: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

/// A key with pending units, to write.
struct Batch {
    state_key: String,
    key: String,
    rule: Rule,
    gate: Arc<tokio::sync::Mutex<()>>,
}

type Table = HashMap<String, Local>;

struct Shared {
    inner: Arc<dyn Storage>,
    config: Approximate,
    clock: Arc<dyn Clock>,
    shards: Vec<Mutex<Table>>,
    closed: AtomicBool,
    local_decisions: AtomicU64,
    local_reported: AtomicU64,
    store_decisions: AtomicU64,
    batches: AtomicU64,
    flushed_units: AtomicU64,
    unrecorded_units: AtomicU64,
    flush_errors: AtomicU64,
    uncertain_units: AtomicU64,
}

const NOT_STARTED: u8 = 0;
const RUNNING: u8 = 1;
const UNAVAILABLE: u8 = 2;

/// A store that counts hot keys locally and writes them in batches (see the
/// [module docs](self)). Off unless used: wrap a store in it to turn it on.
pub struct ApproximateStorage {
    shared: Arc<Shared>,
    flusher: Periodic,
    flusher_state: AtomicU8,
}

impl fmt::Debug for ApproximateStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApproximateStorage")
            .field("inner", &self.shared.inner)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// Whether `request` may be counted locally: one cost on every rule, not a
/// peek, and no rule with a penalty (whose denials have effects).
fn eligible(request: &DecideRequest<'_>) -> bool {
    cost(request) > 0 && request.entries.iter().all(|e| e.rule.penalty().is_none())
}

/// The cost of a request whose entries share one (every request counted
/// locally); 0 otherwise.
fn cost(request: &DecideRequest<'_>) -> u64 {
    request.uniform_cost().unwrap_or(0)
}

fn shard_of(state_key: &str) -> usize {
    ratekeeper_core::kit::shard_index(state_key.as_bytes(), SHARDS)
}

/// `entry` at `cost`, alone.
fn single<'a>(entry: &DecideEntry<'a>, cost: u64) -> [DecideEntry<'a>; 1] {
    [DecideEntry { cost, ..*entry }]
}

impl ApproximateStorage {
    /// `inner` behind approximate mode with `config`.
    pub fn new(inner: Arc<dyn Storage>, config: Approximate) -> Self {
        Self {
            shared: Arc::new(Shared {
                inner,
                config,
                clock: Arc::new(SystemClock),
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                closed: AtomicBool::new(false),
                local_decisions: AtomicU64::new(0),
                local_reported: AtomicU64::new(0),
                store_decisions: AtomicU64::new(0),
                batches: AtomicU64::new(0),
                flushed_units: AtomicU64::new(0),
                unrecorded_units: AtomicU64::new(0),
                flush_errors: AtomicU64::new(0),
                uncertain_units: AtomicU64::new(0),
            }),
            flusher: Periodic::new(),
            flusher_state: AtomicU8::new(NOT_STARTED),
        }
    }

    /// The clock the background flush reads (tests; decisions use the time
    /// of their request). Set it right after [`new`](Self::new): once the
    /// store is in use it is ignored.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.clock = clock;
        }
        self
    }

    /// The store behind.
    pub fn inner(&self) -> &Arc<dyn Storage> {
        &self.shared.inner
    }

    /// The settings.
    pub fn config(&self) -> Approximate {
        self.shared.config
    }

    /// What approximate mode has done so far.
    pub fn status(&self) -> ApproximateStatus {
        let s = &self.shared;
        ApproximateStatus {
            local_decisions: s.local_decisions.load(Ordering::Relaxed),
            store_decisions: s.store_decisions.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            flushed_units: s.flushed_units.load(Ordering::Relaxed),
            unrecorded_units: s.unrecorded_units.load(Ordering::Relaxed),
            flush_errors: s.flush_errors.load(Ordering::Relaxed),
            uncertain_units: s.uncertain_units.load(Ordering::Relaxed),
            keys: s.shards.iter().map(|m| m.lock().len()).sum(),
        }
    }

    /// Writes every pending unit now (what the background task does each
    /// flush period).
    pub async fn flush(&self) {
        Shared::flush(&self.shared, true).await;
    }

    /// Starts the background flush once; whether local counting is possible
    /// (it needs a tokio runtime for the flush).
    fn flusher_running(&self) -> bool {
        match self.flusher_state.load(Ordering::Acquire) {
            RUNNING => true,
            UNAVAILABLE => false,
            _ => {
                let started =
                    self.flusher
                        .start(&self.shared, self.shared.config.flush, |s| async move {
                            if s.closed.load(Ordering::Acquire) {
                                return false;
                            }
                            Shared::flush(&s, false).await;
                            true
                        });
                let state = match started {
                    Ok(()) => RUNNING,
                    Err(e) => {
                        tracing::warn!(
                            target: "ratekeeper::approximate",
                            error = %e,
                            "approximate mode needs a tokio runtime for its flush: deciding every request in the store"
                        );
                        UNAVAILABLE
                    }
                };
                match self.flusher_state.compare_exchange(
                    NOT_STARTED,
                    state,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => state == RUNNING,
                    // Another task started it first; ours replaced its job,
                    // which is just as good.
                    Err(current) => current == RUNNING,
                }
            }
        }
    }

    fn forget(&self, state_key: &str) {
        if let Some(shard) = self.shared.shards.get(shard_of(state_key)) {
            shard.lock().remove(state_key);
        }
    }
}

impl Shared {
    fn shard(&self, state_key: &str) -> Option<MutexGuard<'_, Table>> {
        self.shards.get(shard_of(state_key)).map(Mutex::lock)
    }

    /// Runs `f` on the local entry of `state_key`, if it counts for `rule`
    /// (an entry of a changed rule is another's).
    fn with_local<T>(
        &self,
        state_key: &str,
        rule: &Rule,
        f: impl FnOnce(&mut Local) -> T,
    ) -> Option<T> {
        let mut table = self.shard(state_key)?;
        table.get_mut(state_key).filter(|l| l.rule == *rule).map(f)
    }

    fn capacity_per_shard(&self) -> usize {
        self.config.max_keys.div_ceil(SHARDS).max(1)
    }

    /// The local answer to `request`, when there is one; `None` sends it to
    /// the store.
    fn local(&self, request: &DecideRequest<'_>) -> Option<Decision> {
        if !eligible(request) {
            return None;
        }
        let keys: Vec<String> = request.entries.iter().map(DecideEntry::state_key).collect();
        // Lock every shard involved, in index order (no deadlock), so that
        // a request of several rules takes from all budgets or none.
        let mut order: Vec<usize> = keys.iter().map(|k| shard_of(k)).collect();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Table>)> = order
            .into_iter()
            .filter_map(|i| self.shards.get(i).map(|m| (i, m.lock())))
            .collect();
        let now = request.now;
        let flush = self.config.flush;
        // Check all first.
        for (entry, key) in request.entries.iter().zip(&keys) {
            let table = table_of(&mut guards, key)?;
            let local = table.get(key)?;
            if local.rule != *entry.rule {
                return None;
            }
            if let Some((until, denied_cost, decision)) = &local.denied {
                if *until > now && cost(request) >= *denied_cost {
                    self.local_decisions.fetch_add(1, Ordering::Relaxed);
                    let retry = until.saturating_duration_since(now);
                    let reset = local.reset_at.saturating_duration_since(now);
                    return Some(Decision::deny(
                        decision.rule(),
                        decision.limit(),
                        decision.remaining(),
                        reset.max(retry),
                        retry,
                    ));
                }
                return None;
            }
            if now >= local.synced_at.saturating_add(flush) || local.budget < cost(request) {
                return None;
            }
        }
        // Then take from all; answer with the tightest.
        let mut answer: Option<Decision> = None;
        for (entry, key) in request.entries.iter().zip(&keys) {
            let table = table_of(&mut guards, key)?;
            let local = table.get_mut(key)?;
            local.budget -= cost(request);
            local.pending += cost(request);
            local.used_at = now;
            if answer.as_ref().is_none_or(|a| local.budget < a.remaining()) {
                answer = Some(Decision::allow(
                    entry.rule.name(),
                    local.limit,
                    local.budget,
                    local.reset_at.saturating_duration_since(now),
                ));
            }
        }
        if answer.is_some() {
            self.local_decisions.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    /// The gates of `request`'s keys, in one order (no deadlock), creating
    /// entries for keys not yet counted while the table has room (a key
    /// without one stays exact).
    fn gates(&self, request: &DecideRequest<'_>) -> Vec<Arc<tokio::sync::Mutex<()>>> {
        let capacity = self.capacity_per_shard();
        let mut keyed: Vec<(String, Arc<tokio::sync::Mutex<()>>)> = request
            .entries
            .iter()
            .filter_map(|entry| {
                let key = entry.state_key();
                let mut table = self.shard(&key)?;
                if let Some(local) = table.get_mut(&key) {
                    if local.rule != *entry.rule {
                        // The rule changed: what was counted under the old
                        // one cannot be written under the new one.
                        self.unrecorded(local.pending);
                        *local = Local::new(entry, request.now);
                    }
                    return Some((key, local.gate.clone()));
                }
                if table.len() >= capacity {
                    return None;
                }
                let local = Local::new(entry, request.now);
                let gate = local.gate.clone();
                table.insert(key.clone(), local);
                Some((key, gate))
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed.into_iter().map(|(_, gate)| gate).collect()
    }

    /// Takes the pending units of `request`'s keys.
    fn take_pending(&self, request: &DecideRequest<'_>) -> Vec<u64> {
        request
            .entries
            .iter()
            .map(|e| {
                self.with_local(&e.state_key(), e.rule, |l| std::mem::take(&mut l.pending))
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Deals with units whose write failed: a write that timed out may
    /// still happen (the store may run it late), so its units are never
    /// written again (counted as uncertain); after any other failure they
    /// are pending again, for the next flush.
    fn failed(&self, state_key: &str, rule: &Rule, units: u64, error: &ratekeeper_core::Error) {
        if units == 0 {
            return;
        }
        if error.kind() == ratekeeper_core::ErrorKind::Timeout {
            self.uncertain_units.fetch_add(units, Ordering::Relaxed);
            return;
        }
        let kept = self
            .with_local(state_key, rule, |l| l.pending += units)
            .is_some();
        if !kept {
            self.unrecorded(units);
        }
    }

    fn unrecorded(&self, units: u64) {
        if units > 0 {
            self.unrecorded_units.fetch_add(units, Ordering::Relaxed);
            observe::counter(observe::APPROXIMATE_UNRECORDED, units);
        }
    }

    /// Writes `units` admitted locally for `entry`; what fits when the key
    /// is already over its limit, counting the rest as unrecorded. The
    /// store's last answer.
    async fn record(
        &self,
        entry: &DecideEntry<'_>,
        units: u64,
        now: Timestamp,
    ) -> Result<Decision> {
        // More than one request could ever take (units kept through failed
        // writes) cannot be written at once: the excess is over-admission.
        let excess = units.saturating_sub(entry.rule.capacity());
        let units = units - excess;
        let entries = single(entry, units);
        let d = self
            .inner
            .decide(&DecideRequest {
                now,
                entries: &entries,
            })
            .await?;
        self.batches.fetch_add(1, Ordering::Relaxed);
        let (mut written, mut last) = (0, d);
        if last.is_allowed() {
            written = units;
        } else {
            let fit = last.remaining().min(units);
            if fit > 0 {
                let entries = single(entry, fit);
                last = self
                    .inner
                    .decide(&DecideRequest {
                        now,
                        entries: &entries,
                    })
                    .await?;
                if last.is_allowed() {
                    written = fit;
                }
            }
        }
        self.flushed_units.fetch_add(written, Ordering::Relaxed);
        self.unrecorded(units - written + excess);
        Ok(last)
    }

    /// Decides `request` in the store, writing its keys' pending units
    /// first (or with it, in one call, when that fits).
    async fn decide_in_store(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        if !eligible(request) {
            self.store_decisions.fetch_add(1, Ordering::Relaxed);
            return self.inner.decide(request).await;
        }
        let gates = self.gates(request);
        let mut held = Vec::with_capacity(gates.len());
        for gate in gates {
            held.push(gate.lock_owned().await);
        }
        // Whoever held the gate before may have refreshed the budget.
        if let Some(d) = self.local(request) {
            return Ok(d);
        }
        self.store_decisions.fetch_add(1, Ordering::Relaxed);
        // Units taken from the local counts are at risk until written or
        // put back: if this future is dropped on the way (its client went
        // away), the guard puts back what was not written.
        let mut taken = Taken {
            shared: self,
            request,
            at_risk: self.take_pending(request),
        };
        let pending = taken.at_risk.clone();
        let decision = match (request.entries, pending.as_slice()) {
            ([entry], [units])
                if *units > 0 && units.saturating_add(entry.cost) <= entry.rule.capacity() =>
            {
                let both = single(entry, units + entry.cost);
                let both = DecideRequest {
                    now: request.now,
                    entries: &both,
                };
                match self.inner.decide(&both).await {
                    Ok(d) if d.is_allowed() => {
                        taken.written(0);
                        self.batches.fetch_add(1, Ordering::Relaxed);
                        self.flushed_units.fetch_add(*units, Ordering::Relaxed);
                        Ok(d)
                    }
                    Ok(_) => self.write_then_decide(request, &mut taken).await,
                    Err(e) => {
                        taken.written(0);
                        self.failed(&entry.state_key(), entry.rule, *units, &e);
                        Err(e)
                    }
                }
            }
            _ => self.write_then_decide(request, &mut taken).await,
        }?;
        self.remember(request, &decision);
        drop(held);
        Ok(decision)
    }

    /// Writes each key's pending units (those `taken` holds), then decides
    /// `request` exactly.
    async fn write_then_decide(
        &self,
        request: &DecideRequest<'_>,
        taken: &mut Taken<'_, '_>,
    ) -> Result<Decision> {
        let pending = taken.at_risk.clone();
        for (i, (entry, units)) in request.entries.iter().zip(&pending).enumerate() {
            if *units == 0 {
                continue;
            }
            let recorded = self.record(entry, *units, request.now).await;
            // Written, or handed to `failed` below: no longer at risk.
            taken.written(i);
            if let Err(e) = recorded {
                // Put back what this and the following entries took.
                for (j, (entry, units)) in request.entries.iter().zip(&pending).enumerate().skip(i)
                {
                    taken.written(j);
                    self.failed(&entry.state_key(), entry.rule, *units, &e);
                }
                return Err(e);
            }
        }
        self.inner.decide(request).await
    }

    /// Turns the store's answer into local budgets (for keys that have an
    /// entry: see [`gates`](Self::gates)).
    fn remember(&self, request: &DecideRequest<'_>, decision: &Decision) {
        let now = request.now;
        for entry in request.entries {
            let denied_here = !decision.is_allowed() && decision.rule() == entry.rule.name();
            if !decision.is_allowed() && !denied_here {
                continue;
            }
            let key = entry.state_key();
            let Some(mut table) = self.shard(&key) else {
                continue;
            };
            let Some(local) = table.get_mut(&key).filter(|l| l.rule == *entry.rule) else {
                continue;
            };
            local.synced_at = now;
            local.used_at = now;
            local.reset_at = now.saturating_add(decision.reset_after());
            if decision.rule() == entry.rule.name() {
                local.limit = decision.limit();
            }
            match decision.retry_after() {
                Some(retry) if denied_here => {
                    local.budget = 0;
                    local.denied = (!retry.is_zero())
                        .then(|| (now.saturating_add(retry), cost(request), decision.clone()));
                }
                _ => {
                    local.budget = self.config.budget(decision.remaining(), local.pending);
                    local.denied = None;
                }
            }
        }
    }

    /// Writes every key's pending units, refreshes their budgets and drops
    /// keys idle for a flush period (`all`: drops every key, after writing
    /// its units — for `close`).
    async fn flush(shared: &Arc<Self>, all: bool) {
        let now = shared.clock.now();
        let flush = shared.config.flush;
        let mut batches = Vec::new();
        for shard in &shared.shards {
            shard.lock().retain(|state_key, l| {
                if l.pending > 0 {
                    batches.push(Batch {
                        state_key: state_key.clone(),
                        key: l.key.clone(),
                        rule: l.rule.clone(),
                        gate: l.gate.clone(),
                    });
                    return true;
                }
                let denied = l.denied.as_ref().is_some_and(|(until, _, _)| *until > now);
                !all && (denied || l.used_at.saturating_add(flush) > now)
            });
        }
        let local = shared.local_decisions.load(Ordering::Relaxed);
        let before = shared.local_reported.swap(local, Ordering::Relaxed);
        observe::counter(observe::APPROXIMATE_LOCAL, local.saturating_sub(before));
        let mut running = tokio::task::JoinSet::new();
        for batch in batches {
            if running.len() >= FLUSH_CONCURRENCY {
                running.join_next().await;
            }
            let shared = shared.clone();
            running.spawn(async move { shared.write(batch, now).await });
        }
        while running.join_next().await.is_some() {}
        if all {
            for shard in &shared.shards {
                shard.lock().clear();
            }
        }
    }

    /// Writes one key's pending units and refreshes its budget from the
    /// answer.
    async fn write(&self, batch: Batch, now: Timestamp) {
        let _held = batch.gate.lock().await;
        let units = self
            .with_local(&batch.state_key, &batch.rule, |l| {
                std::mem::take(&mut l.pending)
            })
            .unwrap_or(0);
        if units == 0 {
            // A decision in the store took them first.
            return;
        }
        let entry = DecideEntry {
            key: &batch.key,
            rule: &batch.rule,
            cost: units,
        };
        match self.record(&entry, units, now).await {
            Ok(d) => {
                self.with_local(&batch.state_key, &batch.rule, |l| {
                    l.budget = self.config.budget(d.remaining(), l.pending);
                    l.synced_at = now;
                    l.reset_at = now.saturating_add(d.reset_after());
                });
            }
            Err(e) => {
                self.flush_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: "ratekeeper::approximate",
                    rule = batch.rule.name(),
                    units,
                    error = %e,
                    "could not write locally counted units to the store"
                );
                self.failed(&batch.state_key, &batch.rule, units, &e);
            }
        }
    }
}

/// Pending units taken from the local counts for a decision in the store,
/// until they are written: dropped with units still at risk (the decision's
/// future was dropped mid-way), it puts them back as pending. A write that
/// was sent before the drop may still land, so those units may be counted
/// twice: the limit errs strict, never loose.
struct Taken<'s, 'r> {
    shared: &'s Shared,
    request: &'r DecideRequest<'r>,
    /// Per entry of the request, units neither written nor put back.
    at_risk: Vec<u64>,
}

impl Taken<'_, '_> {
    /// Entry `i`'s units are taken care of.
    fn written(&mut self, i: usize) {
        if let Some(units) = self.at_risk.get_mut(i) {
            *units = 0;
        }
    }
}

impl Drop for Taken<'_, '_> {
    fn drop(&mut self) {
        for (entry, units) in self.request.entries.iter().zip(&self.at_risk) {
            if *units == 0 {
                continue;
            }
            let kept = self
                .shared
                .with_local(&entry.state_key(), entry.rule, |l| l.pending += units)
                .is_some();
            if !kept {
                self.shared.unrecorded(*units);
            }
        }
    }
}

/// The locked table holding `state_key`.
fn table_of<'g, 'a>(
    guards: &'g mut [(usize, MutexGuard<'a, Table>)],
    state_key: &str,
) -> Option<&'g mut Table> {
    let i = shard_of(state_key);
    guards
        .iter_mut()
        .find(|(j, _)| *j == i)
        .map(|(_, g)| &mut **g)
}

impl Layer for Approximate {
    type Wrapped = ApproximateStorage;

    fn layer(self, inner: Arc<dyn Storage>) -> ApproximateStorage {
        ApproximateStorage::new(inner, self)
    }
}

#[async_trait]
impl LayeredStorage for ApproximateStorage {
    fn inner(&self) -> &Arc<dyn Storage> {
        &self.shared.inner
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.forget(key);
        self.shared.inner.set(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.forget(key);
        self.shared.inner.delete(key).await
    }

    async fn clear(&self) -> Result<u64> {
        for shard in &self.shared.shards {
            shard.lock().clear();
        }
        self.shared.inner.clear().await
    }

    async fn close(&self) -> Result<()> {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            self.flusher.stop();
            Shared::flush(&self.shared, true).await;
        }
        self.shared.inner.close().await
    }

    async fn stats(&self) -> Result<StorageStats> {
        let mut stats = stats_with(self.shared.inner.stats().await, []);
        let s = self.status();
        stats.details.extend([
            ("approximate_keys".to_owned(), s.keys.to_string()),
            (
                "approximate_local_decisions".to_owned(),
                s.local_decisions.to_string(),
            ),
            (
                "approximate_store_decisions".to_owned(),
                s.store_decisions.to_string(),
            ),
            ("approximate_batches".to_owned(), s.batches.to_string()),
            (
                "approximate_flushed_units".to_owned(),
                s.flushed_units.to_string(),
            ),
            (
                "approximate_unrecorded_units".to_owned(),
                s.unrecorded_units.to_string(),
            ),
            (
                "approximate_flush_errors".to_owned(),
                s.flush_errors.to_string(),
            ),
            (
                "approximate_uncertain_units".to_owned(),
                s.uncertain_units.to_string(),
            ),
        ]);
        Ok(stats)
    }

    async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
        for op in ops {
            self.forget(op.key);
        }
        self.shared.inner.compare_and_swap(ops).await
    }

    /// Refused: approximate mode answers a request with one decision, from
    /// local budgets; deciding entry by entry in the store would skip the
    /// units counted locally and not yet written.
    async fn decide_each(&self, request: &DecideRequest<'_>) -> Result<Vec<Decision>> {
        let _ = request;
        Err(ratekeeper_core::Error::unsupported(
            "decide_each (approximate mode answers one decision per request)",
        ))
    }

    /// Refused, as `decide_each` (reservations and `check_each` ask for
    /// this one): the store alone does not hold a key's count.
    async fn decide_each_at(
        &self,
        request: &DecideRequest<'_>,
    ) -> Result<(Timestamp, Vec<Decision>)> {
        LayeredStorage::decide_each(self, request)
            .await
            .map(|each| (request.now, each))
    }

    /// Refused, like [`decide_each`](Storage::decide_each) (and so
    /// reservations): a key's units are partly counted locally and not yet
    /// written, so a change made in the store alone would be applied to the
    /// wrong total.
    async fn adjust(&self, request: &AdjustRequest<'_>) -> Result<Vec<Decision>> {
        let _ = request;
        Err(ratekeeper_core::Error::unsupported(
            "adjust (approximate mode counts units locally; charges and refunds need the exact store)",
        ))
    }

    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        if let Some(d) = self.shared.local(request) {
            return Ok(d);
        }
        if !self.flusher_running() {
            return self.shared.inner.decide(request).await;
        }
        self.shared.decide_in_store(request).await
    }

    fn decide_now(&self, request: &DecideRequest<'_>) -> Option<Result<Decision>> {
        self.shared.local(request).map(Ok)
    }
}
