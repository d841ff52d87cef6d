//! The deny cache layer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use ratekeeper_core::Decision;
use ratekeeper_core::Result;
use ratekeeper_core::Rule;
use ratekeeper_core::Timestamp;
use ratekeeper_core::layer::{Layer, LayeredStorage, stats_with};
use ratekeeper_core::observe;
use ratekeeper_core::{
    AdjustEntry, AdjustRequest, CasOp, DecideEntry, DecideRequest, Storage, StorageStats,
};

/// An exact local cache of denials (Envoy's over-limit cache).
///
/// Once the store says a rule denies a key until `T`, the same rule and key
/// are denied locally until `T` for requests costing at least as much,
/// without a round trip (rules with a penalty are never cached: a denial
/// there has effects). It only ever denies, and only what the store would
/// deny: the state of a denied key can only get worse until `T` (other
/// requests consume more), except through a reset or a refund, which go
/// through this store and clear the entry, or a changed rule, which has
/// another cache entry. A reset or refund made through another instance is
/// seen here at `T` at the latest. Requests with a rule of places in flight
/// ([`Concurrency`](ratekeeper_core::Algorithm::Concurrency)) always go to
/// the store: a place comes back when it is released. Bounded in size. A request of several rules denied from the cache
/// reports the cached rule and its wait, which may be shorter than another
/// of its rules would give (the client then retries early and is denied
/// again). [`decide_each`](Storage::decide_each) (one decision per rule)
/// is answered from the cache only when every rule of the request has a
/// denial cached: a rule that would allow reports what it has left, which
/// only the store knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyCache {
    capacity: usize,
}

impl DenyCache {
    /// At most `capacity` denials (at least 1).
    pub const fn new(capacity: usize) -> Self {
        Self { capacity }
    }

    /// How many denials it keeps at most.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Layer for DenyCache {
    type Wrapped = DenyCacheStorage;

    fn layer(self, inner: Arc<dyn Storage>) -> DenyCacheStorage {
        DenyCacheStorage::new(inner, self)
    }
}

/// What a deny cache has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DenyCacheStatus {
    /// Decisions it answered.
    pub hits: u64,
    /// Denials it holds now.
    pub entries: usize,
}

/// A store behind a [`DenyCache`].
#[derive(Debug)]
pub struct DenyCacheStorage {
    inner: Arc<dyn Storage>,
    table: DenyTable,
    hits: AtomicU64,
}

impl DenyCacheStorage {
    /// `inner` behind an empty cache.
    pub fn new(inner: Arc<dyn Storage>, cache: DenyCache) -> Self {
        Self {
            inner,
            table: DenyTable::new(cache.capacity),
            hits: AtomicU64::new(0),
        }
    }

    /// What the cache has done so far.
    pub fn status(&self) -> DenyCacheStatus {
        DenyCacheStatus {
            hits: self.hits.load(Ordering::Relaxed),
            entries: self.table.len(),
        }
    }

    fn cached(&self, request: &DecideRequest<'_>) -> Option<Decision> {
        let hit = self.table.lookup(request)?;
        self.hit();
        Some(hit)
    }

    /// [`decide_each`](Storage::decide_each) from the cache: only when
    /// every entry has a denial cached, since an entry that would allow
    /// reports what it has now, which only the store knows.
    fn cached_each(&self, request: &DecideRequest<'_>) -> Option<Vec<Decision>> {
        if !cacheable(request) {
            return None;
        }
        let hits = request
            .entries
            .iter()
            .map(|entry| self.table.lookup_entry(entry, request.now))
            .collect::<Option<Vec<_>>>()?;
        self.hit();
        Some(hits)
    }

    fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        observe::counter(observe::DENY_CACHE_HITS, 1);
    }

    /// Remembers the denials among one decision per entry.
    fn remember_each(&self, request: &DecideRequest<'_>, decisions: &[Decision]) {
        if !cacheable(request) {
            return;
        }
        for (entry, decision) in request.entries.iter().zip(decisions) {
            self.table.remember_entry(entry, request.now, decision);
        }
    }
}

#[async_trait]
impl LayeredStorage for DenyCacheStorage {
    fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.table.forget(key);
        self.inner.set(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.table.forget(key);
        self.inner.delete(key).await
    }

    async fn clear(&self) -> Result<u64> {
        self.table.clear();
        self.inner.clear().await
    }

    async fn stats(&self) -> Result<StorageStats> {
        let s = self.status();
        Ok(stats_with(
            self.inner.stats().await,
            [
                ("deny_cache_hits", s.hits.to_string()),
                ("deny_cache_entries", s.entries.to_string()),
            ],
        ))
    }

    async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
        for op in ops {
            self.table.forget(op.key);
        }
        self.inner.compare_and_swap(ops).await
    }

    async fn adjust(&self, request: &AdjustRequest<'_>) -> Result<Vec<Decision>> {
        // A refund may lift a denial: forget the keys' denials, and again
        // once it is done, for a denial remembered meanwhile.
        let keys: Vec<String> = request.entries.iter().map(AdjustEntry::state_key).collect();
        keys.iter().for_each(|key| self.table.forget(key));
        let result = self.inner.adjust(request).await;
        keys.iter().for_each(|key| self.table.forget(key));
        result
    }

    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        if let Some(hit) = self.cached(request) {
            return Ok(hit);
        }
        let decision = self.inner.decide(request).await?;
        self.table.remember(request, &decision);
        Ok(decision)
    }

    async fn decide_each(&self, request: &DecideRequest<'_>) -> Result<Vec<Decision>> {
        if let Some(hits) = self.cached_each(request) {
            return Ok(hits);
        }
        let decisions = self.inner.decide_each(request).await?;
        self.remember_each(request, &decisions);
        Ok(decisions)
    }

    async fn decide_each_at(
        &self,
        request: &DecideRequest<'_>,
    ) -> Result<(Timestamp, Vec<Decision>)> {
        // A cached answer takes nothing: the instant it names is never
        // refunded against.
        if let Some(hits) = self.cached_each(request) {
            return Ok((request.now, hits));
        }
        let (at, decisions) = self.inner.decide_each_at(request).await?;
        self.remember_each(request, &decisions);
        Ok((at, decisions))
    }

    fn decide_now(&self, request: &DecideRequest<'_>) -> Option<Result<Decision>> {
        if let Some(hit) = self.cached(request) {
            return Some(Ok(hit));
        }
        let result = self.inner.decide_now(request)?;
        if let Ok(d) = &result {
            self.table.remember(request, d);
        }
        Some(result)
    }
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

/// Whether a denial of `request` may come from the cache: no rule peeked,
/// no rule with a penalty (a denial there is not free of effects: after a
/// block ends, the store's next denial starts a new one, which a cached
/// answer would skip), and no rule of places in flight (a place comes back
/// when another request releases it, on any instance, not when a wait has
/// passed).
fn cacheable(request: &DecideRequest<'_>) -> bool {
    request
        .entries
        .iter()
        .all(|e| e.cost > 0 && e.rule.penalty().is_none() && !e.rule.algorithm().limits_in_flight())
}

#[derive(Debug)]
struct DenyTable {
    capacity_per_shard: usize,
    shards: Vec<Mutex<DenyShard>>,
}

/// One lock's share of the deny cache.
#[derive(Debug, Default)]
struct DenyShard {
    map: HashMap<String, Denied>,
    /// Insertions into a full map before its next sweep ([`make_room`](ratekeeper_core::kit::make_room)).
    credit: usize,
}

impl DenyTable {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity_per_shard: capacity.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, key: &str) -> Option<&Mutex<DenyShard>> {
        self.shards
            .get(ratekeeper_core::kit::shard_index(key.as_bytes(), SHARDS))
    }

    /// The cached denial answering `request`, if any.
    fn lookup(&self, request: &DecideRequest<'_>) -> Option<Decision> {
        if !cacheable(request) {
            return None;
        }
        request
            .entries
            .iter()
            .find_map(|entry| self.lookup_entry(entry, request.now))
    }

    /// The cached denial of `entry` at `now`, if one applies.
    fn lookup_entry(&self, entry: &DecideEntry<'_>, now: Timestamp) -> Option<Decision> {
        let key = entry.state_key();
        let mut shard = self.shard(&key)?.lock();
        let d = shard.map.get(&key)?;
        if d.until <= now {
            shard.map.remove(&key);
            return None;
        }
        if d.rule != *entry.rule || entry.cost < d.cost {
            return None;
        }
        let retry = d.until.saturating_duration_since(now);
        let reset = d.reset_at.saturating_duration_since(now);
        Some(Decision::deny(
            d.decision.rule(),
            d.decision.limit(),
            d.decision.remaining(),
            reset.max(retry),
            retry,
        ))
    }

    /// Remembers a denial the store just made.
    fn remember(&self, request: &DecideRequest<'_>, decision: &Decision) {
        if decision.is_allowed() || !cacheable(request) {
            return;
        }
        if let Some(entry) = request
            .entries
            .iter()
            .find(|e| e.rule.name() == decision.rule())
        {
            self.remember_entry(entry, request.now, decision);
        }
    }

    /// Remembers `decision` of `entry` at `now`, when it is a denial with
    /// a wait (the request was found cacheable).
    fn remember_entry(&self, entry: &DecideEntry<'_>, now: Timestamp, decision: &Decision) {
        let Some(retry) = decision.retry_after() else {
            return;
        };
        if decision.is_allowed() || retry.is_zero() {
            return;
        }
        let key = entry.state_key();
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let mut shard = shard.lock();
        if shard.map.len() >= self.capacity_per_shard && !shard.map.contains_key(&key) {
            let DenyShard { map, credit } = &mut *shard;
            // Expired denials first; full of live ones, any (any is safe:
            // the cache only ever saves a round trip).
            let (_, live) =
                ratekeeper_core::kit::make_room(map, self.capacity_per_shard, credit, |d| {
                    d.until > now
                });
            if live > 0 {
                observe::evicted("deny_cache", live as u64);
            }
        }
        shard.map.insert(
            key,
            Denied {
                rule: entry.rule.clone(),
                cost: entry.cost,
                until: now.saturating_add(retry),
                reset_at: now.saturating_add(decision.reset_after()),
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
