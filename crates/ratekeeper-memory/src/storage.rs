//! The memory store.
//!
//! One file on purpose: the `Storage` methods share the shard locking and
//! the room-making rules that keep a flood from evicting state that still
//! denies, and those rules read best in one place.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use foldhash::fast::RandomState;
use parking_lot::{RwLock, RwLockWriteGuard};
use ratekeeper_core::kit::{self, Write};
use ratekeeper_core::{
    AdjustEntry, AdjustRequest, Algorithm, CasOp, Clock, DecideEntry, DecideRequest, Decision,
    Error, ErrorKind, Periodic, Result, Rule, Storage, StorageStats, SystemClock, Timestamp,
};
use std::hash::BuildHasher;

use crate::config::MemoryConfig;
use crate::key::{KeyRef, RuleKey, Whole};
use crate::shard::{Entry, Evicted, Full, GcraCell, Shard, Value};

/// Entries examined per lock hold by the sweep.
const SWEEP_BATCH: usize = 1_024;

/// The in-memory store: the embedded default.
///
/// Keys are spread over shards, each a map behind its own lock, so the store
/// holds at most [`max_size`](MemoryConfig::max_size) keys. When a shard is
/// full, expired keys go first, then the least recently used: the store
/// compares 8 random keys of the shard and evicts the one used longest ago
/// (Redis's approximated LRU; exact in shards of up to 8 keys). Every value
/// expires; expired values are dropped when touched, when evicted, and by a
/// background sweep.
///
/// Eviction is never a way to reset a limit: state that still denies (a key
/// whose last decision left no room for one more unit, a key in a
/// penalty, or a concurrency rule's key with a place held) is never evicted, so a flood of fresh keys, of any rule, can
/// only push out state that gives nothing away. When a shard holds nothing
/// else (after four samples and a scan of up to 256 keys), a *new* key is
/// refused with [`ErrorKind::Full`] and the bound holds: the HTTP policy
/// answers by its error mode (503 by default). Keys already stored keep
/// being decided. Size `max_size` above the number of keys that can be
/// spent at once (see docs/operations.md).
///
/// Decisions run under the shard locks of their keys, so they are exact across
/// any number of tasks and threads in one process. A GCRA rule without a
/// penalty, decided alone on a key the store holds, takes the shard's lock
/// only to read: its state is one word, changed by a compare-and-swap, so
/// threads deciding one hot key (a global limit) do not wait on each other. State is not shared between
/// processes and is lost on restart: use the SQLite or Redis store for that.
///
/// Cheap to clone; clones share the same data.
///
/// ```
/// use ratekeeper_core::{Algorithm, Limiter, Rule};
/// use ratekeeper_memory::MemoryStorage;
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStorage::builder().max_size(10_000).build();
/// let limiter = Limiter::new(Arc::new(store));
/// let rule = Rule::new("api", Algorithm::SlidingWindowCounter, "2/minute".parse()?)?;
/// assert!(limiter.check(&rule, "10.0.0.1").await?.is_allowed());
/// assert!(limiter.check(&rule, "10.0.0.1").await?.is_allowed());
/// assert!(!limiter.check(&rule, "10.0.0.1").await?.is_allowed());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStorage {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    shards: Box<[RwLock<Shard>]>,
    mask: usize,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    closed: AtomicBool,
    evictions: AtomicU64,
    /// Expired entries removed; those a decision wrote over in place are
    /// counted by their shards (`stats` adds both).
    expirations: AtomicU64,
    /// New keys refused: full of state that still denies.
    refused: AtomicU64,
    max_size: usize,
    cleanup: Periodic,
}

/// Builds a [`MemoryStorage`].
#[derive(Debug)]
#[must_use]
pub struct MemoryStorageBuilder {
    config: MemoryConfig,
    clock: Arc<dyn Clock>,
}

impl MemoryStorageBuilder {
    /// The most keys held at once (at least 1).
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.config.max_size = max_size;
        self
    }

    /// How many independent locks (rounded down to a power of two).
    pub fn shards(mut self, shards: usize) -> Self {
        self.config.shards = shards;
        self
    }

    /// How often to sweep expired keys in the background; `None` disables it.
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.cleanup_interval = interval;
        self
    }

    /// All settings at once.
    pub fn config(mut self, config: MemoryConfig) -> Self {
        self.config = config;
        self
    }

    /// The clock used for expiry of key-value operations (decisions use the
    /// time in the request). Give it the limiter's clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The store. If a cleanup interval is set and this runs inside a tokio
    /// runtime, the background sweep starts now; otherwise call
    /// [`MemoryStorage::start_cleanup`] from within a runtime later.
    pub fn build(self) -> MemoryStorage {
        let max_size = self.config.max_size.max(1);
        let wanted = self.config.shards.clamp(1, max_size);
        // Largest power of two not above `wanted`.
        let count = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        let hasher = RandomState::default();
        let shards = (0..count)
            .map(|i| {
                let capacity = max_size / count + usize::from(i < max_size % count);
                RwLock::new(Shard::new(
                    capacity,
                    // Any seed per shard will do (`Shard::new` makes it
                    // non-zero): the mutants of this `^` are equivalent,
                    // excluded in `.cargo/mutants.toml`.
                    0x9E37_79B9_7F4A_7C15 ^ i as u64,
                    hasher.clone(),
                ))
            })
            .collect();
        let store = MemoryStorage {
            shared: Arc::new(Shared {
                shards,
                mask: count - 1,
                hasher,
                clock: self.clock,
                closed: AtomicBool::new(false),
                evictions: AtomicU64::new(0),
                expirations: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                max_size,
                cleanup: Periodic::new(),
            }),
        };
        if let Some(interval) = self.config.cleanup_interval {
            // Without a runtime there is nothing to run the task on; the store
            // still bounds itself through LRU eviction and lazy expiry.
            let _ = store.start_cleanup(interval);
        }
        store
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl MemoryStorage {
    /// A store with the default settings ([`MemoryConfig::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder with the default settings.
    pub fn builder() -> MemoryStorageBuilder {
        MemoryStorageBuilder {
            config: MemoryConfig::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// A store configured by a `memory://` URL (see [`MemoryConfig::from_url`]).
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(Self::builder().config(MemoryConfig::from_url(url)?).build())
    }

    /// The bound on stored keys.
    pub fn max_size(&self) -> usize {
        self.shared.max_size
    }

    /// Starts the background sweep of expired keys every `interval`, replacing a
    /// running one. Fails outside a tokio runtime. The task stops by itself when
    /// the store is dropped or closed.
    pub fn start_cleanup(&self, interval: Duration) -> Result<()> {
        self.shared
            .cleanup
            .start(&self.shared, interval, |shared| async move {
                if shared.closed.load(Ordering::Acquire) {
                    return false;
                }
                shared.sweep();
                true
            })
    }

    /// Stops the background sweep, if running.
    pub fn stop_cleanup(&self) {
        self.shared.cleanup.stop();
    }

    /// Whether the background sweep is running.
    pub fn is_cleanup_running(&self) -> bool {
        self.shared.cleanup.is_running()
    }

    /// Sweeps expired keys now, in batches; returns how many were removed.
    pub fn cleanup_expired(&self) -> u64 {
        self.shared.sweep()
    }

    fn ensure_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        Ok(())
    }

    fn now(&self) -> u64 {
        self.shared.clock.now().as_micros()
    }

    /// The key's hash (computed once per operation) and its shard's index. The
    /// shard comes from the middle bits: the table uses the low bits for slots
    /// and the top bits for tags, which must stay varied within a shard.
    fn locate(&self, key: &impl KeyRef) -> (u64, usize) {
        let hash = self.shared.hasher.hash_one(key);
        (hash, ((hash >> 32) as usize) & self.shared.mask)
    }

    /// The key's hash and its shard, locked.
    fn shard(&self, key: &impl KeyRef) -> (u64, RwLockWriteGuard<'_, Shard>) {
        let (hash, index) = self.locate(key);
        (hash, self.lock(index))
    }

    /// The shard at `index` (from [`locate`](Self::locate)), locked.
    #[allow(
        clippy::indexing_slicing,
        reason = "the index is masked to the shard count, a power of two"
    )]
    fn lock(&self, index: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shared.shards[index].write()
    }

    // The `> 0` guards here, in `count_expired`, `make_room_for` and the
    // sweep only skip work for zero (`>= 0` is the same: excluded in
    // `.cargo/mutants.toml`).
    fn record(&self, evicted: Evicted) {
        if evicted.live > 0 {
            self.shared
                .evictions
                .fetch_add(evicted.live, Ordering::Relaxed);
            ratekeeper_core::observe::evicted("memory_store", evicted.live);
        }
        self.count_expired(evicted.expired);
    }

    fn count_expired(&self, n: u64) {
        if n > 0 {
            self.shared.expirations.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Locks the shards of `keys` in index order (so concurrent multi-key
    /// operations cannot deadlock) and returns the guards with, per key, the
    /// position of its guard.
    /// Also returns each key's hash.
    fn lock_many<'a, K: KeyRef + 'a>(
        &'a self,
        keys: impl Iterator<Item = &'a K>,
    ) -> (Vec<RwLockWriteGuard<'a, Shard>>, Vec<(u64, usize)>) {
        let located: Vec<(u64, usize)> = keys.map(|k| self.locate(k)).collect();
        let indices: Vec<usize> = located.iter().map(|(_, i)| *i).collect();
        let mut order = indices.clone();
        order.sort_unstable();
        order.dedup();
        let guards = order
            .iter()
            .filter_map(|&i| self.shared.shards.get(i))
            .map(|s| s.write())
            .collect();
        let slots = located
            .iter()
            .map(|(hash, i)| (*hash, order.binary_search(i).unwrap_or_default()))
            .collect();
        (guards, slots)
    }

    fn decide_one(&self, entry: &DecideEntry<'_>, now: Timestamp) -> Result<Decision> {
        let (now_us, cost) = (now.as_micros(), entry.cost);
        let key = RuleKey {
            rule: entry.rule.name(),
            key: entry.key,
        };
        let (hash, index) = self.locate(&key);
        if let Some(decided) = self.decide_in_cell(index, hash, &key, entry, now) {
            return decided;
        }
        let mut shard = self.lock(index);
        match shard.touch(hash, &key) {
            Some(slot) if slot.is_live(now_us) => {
                let state = slot.value.rule_state(&key)?;
                let (decision, write) = kit::decide_one(entry.rule, Some(&state), now, cost)?;
                if let Some(write) = write {
                    rewrite(slot, entry.rule, &decision, write, now_us);
                }
                Ok(decision)
            }
            Some(slot) => {
                let (decision, write) = kit::decide_one(entry.rule, None, now, cost)?;
                if let Some(write) = write {
                    rewrite(slot, entry.rule, &decision, write, now_us);
                    // Under the shard's lock: no atomic on this common path
                    // (a key seen again after its state has lapsed).
                    shard.count_reused_expired();
                }
                Ok(decision)
            }
            None => {
                let (decision, write) = kit::decide_one(entry.rule, None, now, cost)?;
                if let Some(write) = write {
                    let evicted =
                        self.insert(&mut shard, hash, &key, entry.rule, &decision, write, now_us)?;
                    drop(shard);
                    self.record(evicted);
                }
                Ok(decision)
            }
        }
    }

    /// Decides `entry` under its shard's read lock, if its rule's state
    /// there is a [`GcraCell`] (GCRA, no penalty): the same step as under
    /// the write lock (on no state if the cell has lapsed, counted as an
    /// expiry when written over), stored by a compare-and-swap of the word
    /// it read (again on a word another thread changed meanwhile). `None`:
    /// decide it under the write lock (no cell, or another rule), which
    /// makes room for what is new.
    #[allow(
        clippy::indexing_slicing,
        reason = "the index is masked to the shard count, a power of two"
    )]
    fn decide_in_cell(
        &self,
        index: usize,
        hash: u64,
        key: &RuleKey<'_>,
        entry: &DecideEntry<'_>,
        now: Timestamp,
    ) -> Option<Result<Decision>> {
        let rule = entry.rule;
        if rule.algorithm() != Algorithm::Gcra || rule.penalty().is_some() {
            return None;
        }
        let now_us = now.as_micros();
        let shard = self.shared.shards[index].read();
        let slot = shard.peek(hash, key)?;
        let Value::Gcra(cell) = &slot.value else {
            return None;
        };
        let mut word = cell.load();
        loop {
            let lapsed = now_us >= GcraCell::tat(word);
            let tat = (!lapsed).then(|| GcraCell::tat(word));
            let (decision, stored) = match kit::decide_gcra(rule, tat, now, entry.cost)? {
                Ok(decided) => decided,
                Err(e) => return Some(Err(e)),
            };
            let Some(tat) = stored else {
                slot.mark_used(shard.clock());
                return Some(Ok(decision));
            };
            // Not a cell's state (a TAT at `now` is kept 1 µs more): the
            // write lock's path stores it.
            let new = GcraCell::word(tat, now_us, kit::leaves_no_room(rule, &decision))?;
            match cell.swap(word, new) {
                Ok(()) => {
                    if lapsed {
                        shard.count_reused_cell();
                    }
                    slot.mark_used(shard.clock());
                    return Some(Ok(decision));
                }
                Err(current) => word = current,
            }
        }
    }

    /// Decides several entries under their shards' locks with `decide`
    /// (the combined decision or one per entry).
    fn decide_many<T>(
        &self,
        entries: &[DecideEntry<'_>],
        now: Timestamp,
        decide: kit::DecideFn<T>,
    ) -> Result<T> {
        let rules: Vec<_> = entries.iter().map(|e| (e.rule, e.key, e.cost)).collect();
        self.step_many(&rules, now, decide)
    }

    /// Under the shards' locks of every rule and key of `rules`: reads their
    /// states, runs `step` on them (with each rule's `X`, a cost or an
    /// adjustment), and stores what it says.
    fn step_many<X: Copy, T>(
        &self,
        rules: &[(&Rule, &str, X)],
        now: Timestamp,
        step: kit::StepFn<X, T>,
    ) -> Result<T> {
        let now_us = now.as_micros();
        let keys: Vec<RuleKey<'_>> = rules
            .iter()
            .map(|(rule, key, _)| RuleKey {
                rule: rule.name(),
                key,
            })
            .collect();
        let (mut guards, slots) = self.lock_many(keys.iter());
        let mut expired = 0;
        let mut states = Vec::with_capacity(rules.len());
        for (key, &(hash, slot)) in keys.iter().zip(&slots) {
            let shard = guards.get_mut(slot).ok_or_else(internal)?;
            let state = match shard.live(hash, key, now_us, &mut expired) {
                Some(e) => Some(e.value.rule_state(key)?.into_owned()),
                None => None,
            };
            states.push(state);
        }
        let inputs: Vec<_> = rules
            .iter()
            .zip(&states)
            .map(|((rule, _, x), state)| (*rule, state.as_ref(), *x))
            .collect();
        let (decided, writes) = step(&inputs, now)?;
        // Room first, sparing this request's own keys, so that the request
        // is stored whole or not at all.
        let mut evicted = self.make_room_for(
            &mut guards,
            &keys,
            &slots,
            writes.iter().map(Option::is_some),
            now_us,
        )?;
        for (((key, &(hash, slot)), write), (rule, _, _)) in
            keys.iter().zip(&slots).zip(writes).zip(rules)
        {
            if let Some(write) = write {
                // Whether this rule, on its own, lets one more unit in at once.
                let peek = kit::decide_one(rule, Some(&write.state), now, 0)?.0;
                let shard = guards.get_mut(slot).ok_or_else(internal)?;
                // Room was made above: `put` finds it and evicts nothing.
                self.insert(shard, hash, key, rule, &peek, write, now_us)?;
            }
        }
        drop(guards);
        evicted.expired += expired;
        self.record(evicted);
        Ok(decided)
    }

    /// Makes room, in the locked shards, for the keys of one operation that
    /// it writes (`writes`, per key) and that are not stored yet, sparing
    /// every key of the operation; the full-store error if they cannot all
    /// fit.
    fn make_room_for<K: KeyRef>(
        &self,
        guards: &mut [RwLockWriteGuard<'_, Shard>],
        keys: &[K],
        slots: &[(u64, usize)],
        writes: impl Iterator<Item = bool>,
        now: u64,
    ) -> Result<Evicted> {
        let hashes: Vec<u64> = slots.iter().map(|&(hash, _)| hash).collect();
        let mut new_per_guard = vec![0_usize; guards.len()];
        for ((key, &(hash, slot)), writes) in keys.iter().zip(slots).zip(writes) {
            let shard = guards.get(slot).ok_or_else(internal)?;
            if writes && shard.peek(hash, key).is_none() {
                *new_per_guard.get_mut(slot).ok_or_else(internal)? += 1;
            }
        }
        let mut evicted = Evicted::default();
        for (shard, new) in guards.iter_mut().zip(new_per_guard) {
            if new > 0 {
                let e = shard
                    .make_room(new, now, &hashes)
                    .map_err(|Full| self.full())?;
                evicted.live += e.live;
                evicted.expired += e.expired;
            }
        }
        Ok(evicted)
    }

    /// The error for a store that is full of state that still denies.
    fn full(&self) -> Error {
        let refused = self.shared.refused.fetch_add(1, Ordering::Relaxed) + 1;
        ratekeeper_core::observe::refused_full();
        // Logged at the 1st, 2nd, 4th, 8th… refusal: a flood cannot flood the log.
        if refused.is_power_of_two() {
            tracing::warn!(
                target: "ratekeeper::memory",
                max_size = self.shared.max_size,
                refused,
                "the memory store is full of state that still denies: a new key was not stored \
                 (raise max_size; see docs/operations.md)"
            );
        }
        Error::new(
            ErrorKind::Full,
            format!(
                "the memory store holds {} keys, its bound, and every key it could drop still \
                 denies (a spent limit or a penalty): a new key is not stored until some expire",
                self.shared.max_size
            ),
        )
    }
}

/// Writes `rule`'s state into an entry that holds it, marked as denying by
/// `decision`, what a request gets now.
fn rewrite(slot: &mut Entry, rule: &Rule, decision: &Decision, write: Write, now_us: u64) {
    let (value, expires_at, denying) = stored(rule, decision, write, now_us);
    slot.rewrite(value, expires_at, denying);
}

/// What an entry holds for `write`, made at `now_us` by `rule` with
/// `decision`: the value, its expiry, and whether it is denying state.
fn stored(rule: &Rule, decision: &Decision, write: Write, now_us: u64) -> (Value, u64, bool) {
    let (expires_at, denying) = (
        expiry(now_us, write.ttl),
        kit::leaves_no_room(rule, decision),
    );
    (
        Value::of_state(write.state, expires_at, denying),
        expires_at,
        denying,
    )
}

fn expiry(now: u64, ttl: Duration) -> u64 {
    Timestamp::from_micros(now).saturating_add(ttl).as_micros()
}

fn internal() -> Error {
    Error::new(
        ErrorKind::Other,
        "memory store: shard bookkeeping is inconsistent",
    )
}

impl Shared {
    fn sweep(&self) -> u64 {
        let now = self.clock.now().as_micros();
        let mut removed = 0u64;
        for shard in self.shards.iter() {
            let mut cursor = Some(0);
            while let Some(start) = cursor {
                let (n, next) = shard.write().sweep(now, start, SWEEP_BATCH);
                removed += n as u64;
                cursor = next;
            }
        }
        if removed > 0 {
            self.expirations.fetch_add(removed, Ordering::Relaxed);
        }
        removed
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.ensure_open()?;
        let now = self.now();
        let mut expired = 0;
        let key = Whole(key);
        let (hash, mut shard) = self.shard(&key);
        let value = shard
            .live(hash, &key, now, &mut expired)
            .map(|e| e.value.to_bytes().into_owned());
        self.count_expired(expired);
        Ok(value)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.ensure_open()?;
        let now = self.now();
        let key = Whole(key);
        let (hash, mut shard) = self.shard(&key);
        let evicted = shard
            .put(
                hash,
                &key,
                Value::Bytes(value.into()),
                false,
                expiry(now, ttl),
                now,
            )
            .map_err(|Full| self.full())?;
        drop(shard);
        self.record(evicted);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.ensure_open()?;
        let now = self.now();
        let key = Whole(key);
        let (hash, mut shard) = self.shard(&key);
        let removed = shard.remove(hash, &key);
        Ok(removed.is_some_and(|e| e.is_live(now)))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.ensure_open()?;
        let now = self.now();
        let key = Whole(key);
        let (hash, shard) = self.shard(&key);
        Ok(shard.peek(hash, &key).is_some_and(|e| e.is_live(now)))
    }

    async fn increment(&self, key: &str, amount: i64, ttl: Duration) -> Result<i64> {
        self.ensure_open()?;
        let now = self.now();
        let mut expired = 0;
        let name = key;
        let key = Whole(key);
        let (hash, mut shard) = self.shard(&key);
        let (current, expires_at) = match shard.live(hash, &key, now, &mut expired) {
            Some(entry) => (parse_integer(name, &entry.value)?, entry.expires_at()),
            None => (0, expiry(now, ttl)),
        };
        let next = current.checked_add(amount).ok_or_else(|| {
            Error::new(
                ErrorKind::WrongType,
                format!("incrementing {name:?} by {amount} overflows"),
            )
        })?;
        let evicted = shard
            .put(
                hash,
                &key,
                Value::Bytes(next.to_string().into_bytes().into()),
                false,
                expires_at,
                now,
            )
            .map_err(|Full| self.full())?;
        drop(shard);
        self.record(evicted);
        self.count_expired(expired);
        Ok(next)
    }

    async fn clear(&self) -> Result<u64> {
        self.ensure_open()?;
        Ok(self.clear_all())
    }

    async fn close(&self) -> Result<()> {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            self.stop_cleanup();
            self.clear_all();
        }
        Ok(())
    }

    async fn stats(&self) -> Result<StorageStats> {
        self.ensure_open()?;
        let now = self.now();
        let (keys, bytes, reused) = self
            .shared
            .shards
            .iter()
            .map(|s| {
                let shard = s.read();
                let (keys, bytes) = shard.measure(now);
                (keys, bytes, shard.reused_expired())
            })
            .fold((0, 0, 0), |(k, b, r), (k2, b2, r2)| {
                (k + k2, b + b2, r + r2)
            });
        let mut stats = StorageStats::new("memory");
        stats.keys = Some(keys);
        stats.evictions = Some(self.shared.evictions.load(Ordering::Relaxed));
        stats.expirations = Some(self.shared.expirations.load(Ordering::Relaxed) + reused);
        stats.approx_bytes = Some(bytes);
        stats.details = vec![
            ("max_size".to_owned(), self.shared.max_size.to_string()),
            ("shards".to_owned(), self.shared.shards.len().to_string()),
            (
                "refused_full".to_owned(),
                self.shared.refused.load(Ordering::Relaxed).to_string(),
            ),
            (
                "cleanup_running".to_owned(),
                self.is_cleanup_running().to_string(),
            ),
        ];
        Ok(stats)
    }

    async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
        self.ensure_open()?;
        let now = self.now();
        let keys: Vec<Whole<'_>> = ops.iter().map(|op| Whole(op.key)).collect();
        let (mut guards, slots) = self.lock_many(keys.iter());
        let mut expired = 0;
        for ((op, key), &(hash, slot)) in ops.iter().zip(&keys).zip(&slots) {
            let shard = guards.get_mut(slot).ok_or_else(internal)?;
            let current = shard.live(hash, key, now, &mut expired);
            let matches = match (current, op.expected) {
                (None, None) => true,
                (Some(entry), Some(expected)) => entry.value.to_bytes().as_ref() == expected,
                _ => false,
            };
            if !matches {
                drop(guards);
                self.count_expired(expired);
                return Ok(false);
            }
        }
        // Room first, sparing the operation's own keys: all or nothing.
        let mut evicted =
            self.make_room_for(&mut guards, &keys, &slots, std::iter::repeat(true), now)?;
        evicted.expired += expired;
        for ((op, key), &(hash, slot)) in ops.iter().zip(&keys).zip(&slots) {
            let shard = guards.get_mut(slot).ok_or_else(internal)?;
            // Room was made above: `put` finds it and evicts nothing.
            shard
                .put(
                    hash,
                    key,
                    Value::Bytes(op.new_value.into()),
                    false,
                    expiry(now, op.ttl),
                    now,
                )
                .map_err(|Full| self.full())?;
        }
        drop(guards);
        self.record(evicted);
        Ok(true)
    }

    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        self.decide_sync(request)
    }

    fn decide_now(&self, request: &DecideRequest<'_>) -> Option<Result<Decision>> {
        Some(self.decide_sync(request))
    }

    async fn decide_each(&self, request: &DecideRequest<'_>) -> Result<Vec<Decision>> {
        self.decide_each_sync(request)
    }

    async fn decide_each_at(
        &self,
        request: &DecideRequest<'_>,
    ) -> Result<(Timestamp, Vec<Decision>)> {
        Ok((request.now, self.decide_each_sync(request)?))
    }

    fn decide_each_now(
        &self,
        request: &DecideRequest<'_>,
    ) -> Option<Result<(Timestamp, Vec<Decision>)>> {
        Some(
            self.decide_each_sync(request)
                .map(|each| (request.now, each)),
        )
    }

    async fn adjust(&self, request: &AdjustRequest<'_>) -> Result<Vec<Decision>> {
        self.adjust_sync(request)
    }

    fn adjust_now(&self, request: &AdjustRequest<'_>) -> Option<Result<Vec<Decision>>> {
        Some(self.adjust_sync(request))
    }
}

impl MemoryStorage {
    fn decide_sync(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        self.ensure_open()?;
        match request.entries {
            [] => Err(Error::new(
                ErrorKind::InvalidInput,
                "a decision needs at least one rule",
            )),
            [entry] => self.decide_one(entry, request.now),
            many => self.decide_many(many, request.now, kit::decide_all),
        }
    }

    /// One decision per entry; one entry is decided as `decide` decides
    /// it (the same answer and write as the step over many), with nothing
    /// allocated but the answer.
    fn decide_each_sync(&self, request: &DecideRequest<'_>) -> Result<Vec<Decision>> {
        self.ensure_open()?;
        match request.entries {
            [entry] => Ok(vec![self.decide_one(entry, request.now)?]),
            // No entries: the engine's step says so, as for `decide`.
            many => self.decide_many(many, request.now, kit::decide_each),
        }
    }

    fn adjust_sync(&self, request: &AdjustRequest<'_>) -> Result<Vec<Decision>> {
        self.ensure_open()?;
        if let [entry] = request.entries {
            return Ok(vec![self.adjust_one(entry, request.now)?]);
        }
        let rules: Vec<_> = request
            .entries
            .iter()
            .map(|e| (e.rule, e.key, e.adjustment))
            .collect();
        self.step_many(&rules, request.now, kit::adjust)
    }

    /// One adjustment, under its shard's lock: the step over many on one
    /// entry, without its vectors (a place in flight given back).
    fn adjust_one(&self, entry: &AdjustEntry<'_>, now: Timestamp) -> Result<Decision> {
        let now_us = now.as_micros();
        let key = RuleKey {
            rule: entry.rule.name(),
            key: entry.key,
        };
        let (hash, mut shard) = self.shard(&key);
        let mut expired = 0;
        if let Some(slot) = shard.live(hash, &key, now_us, &mut expired) {
            let state = slot.value.rule_state(&key)?;
            let (decision, write) =
                kit::adjust_one(entry.rule, Some(&state), now, entry.adjustment)?;
            // The decision is a peek after the change: the mark the step
            // over many gives a write.
            if let Some(write) = write {
                rewrite(slot, entry.rule, &decision, write, now_us);
            }
            return Ok(decision);
        }
        let (decision, write) = kit::adjust_one(entry.rule, None, now, entry.adjustment)?;
        let mut evicted = Evicted::default();
        if let Some(write) = write {
            evicted = self.insert(&mut shard, hash, &key, entry.rule, &decision, write, now_us)?;
        }
        drop(shard);
        evicted.expired += expired;
        self.record(evicted);
        Ok(decision)
    }

    /// Stores `rule`'s first state at `key` (making room if need be),
    /// marked as denying by `decision`, what a request gets now.
    #[allow(
        clippy::too_many_arguments,
        reason = "one shard's entry, its rule and its write"
    )]
    fn insert(
        &self,
        shard: &mut Shard,
        hash: u64,
        key: &RuleKey<'_>,
        rule: &Rule,
        decision: &Decision,
        write: Write,
        now_us: u64,
    ) -> Result<Evicted> {
        let (value, expires_at, denying) = stored(rule, decision, write, now_us);
        shard
            .put(hash, key, value, denying, expires_at, now_us)
            .map_err(|Full| self.full())
    }

    fn clear_all(&self) -> u64 {
        self.shared
            .shards
            .iter()
            .map(|s| s.write().clear() as u64)
            .sum()
    }
}

fn parse_integer(key: &str, value: &Value) -> Result<i64> {
    let not_integer = || {
        Error::new(
            ErrorKind::WrongType,
            format!("the value at {key:?} is not an integer"),
        )
    };
    match value {
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(not_integer),
        Value::State(_) | Value::Gcra(_) => Err(not_integer()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_capacities_add_up_to_the_bound() {
        for (max_size, shards) in [(1_000, 64), (5, 64), (1, 8), (777, 16), (10, 3)] {
            let store = MemoryStorage::builder()
                .max_size(max_size)
                .shards(shards)
                .cleanup_interval(None)
                .build();
            let caps: Vec<usize> = store
                .shared
                .shards
                .iter()
                .map(|s| s.read().capacity())
                .collect();
            assert_eq!(caps.iter().sum::<usize>(), max_size, "{max_size}/{shards}");
            let (lo, hi) = (caps.iter().min().unwrap(), caps.iter().max().unwrap());
            assert!(hi - lo <= 1, "{caps:?}");
            assert!(caps.len().is_power_of_two() && caps.len() <= shards);
        }
    }
}
