//! One shard: a bounded map of keys to values with expiry, behind one lock.
//!
//! Entries live directly in a hash table, short keys inline, so a lookup
//! touches the table's control bytes and one entry. Recency is a per-shard
//! logical clock written into the entry on every hit. A side vector of
//! hashes, touched only on insert and removal, gives the random access that
//! sampling needs.
//!
//! GCRA state without a penalty is kept in one atomic word (a [`GcraCell`]),
//! so that a decision on a key that holds it is made under the shard's
//! *read* lock with a compare-and-swap: two threads deciding one hot key do
//! not take turns on the lock, and a denial writes nothing at all. Every
//! other change (a new key, eviction, expiry, another algorithm, several
//! rules at once) takes the write lock, which excludes those decisions, so
//! the bound, eviction and expiry see a still state.
//!
//! When the shard is full, the victim is chosen among [`SAMPLE`] randomly
//! chosen entries (all of them while the shard holds at most [`SAMPLE`]):
//! expired entries first, then the least recently used of the *evictable*
//! ones (Redis's approximated LRU). State that is still denying is never
//! evicted, since dropping it would be a way to reset a limit: rule state
//! whose last write left no room for one more unit, and state in a penalty.
//! If [`ROUNDS`] samples and a bounded scan find nothing evictable, the
//! insertion is refused ([`Full`]) and the shard stays within its bound.

use std::borrow::Cow;
use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use ratekeeper_core::Result;
use ratekeeper_core::kit::{AlgorithmState, GcraState, RuleState};
use ratekeeper_core::storage::corrupt_state;

use crate::key::{KeyRef, RuleKey, StoreKey};

/// Eviction candidates examined per sample.
pub(crate) const SAMPLE: usize = 8;

/// Samples taken before the scan, while they find only denying state.
pub(crate) const ROUNDS: usize = 4;

/// Entries the scan examines at the most, after the samples found nothing.
pub(crate) const SCAN: usize = 256;

/// Nothing could be evicted: every entry examined is state that still
/// denies. The insertion did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// A stored value: opaque bytes from the key-value API, or rule state kept
/// decoded so decisions never serialise (GCRA's without a penalty in one
/// word).
#[derive(Debug)]
pub(crate) enum Value {
    Bytes(Box<[u8]>),
    State(RuleState),
    Gcra(GcraCell),
}

impl Value {
    /// The value that holds `state`, written to expire at `expires_at` and
    /// marked `denying` (see [`Entry::packed`]): a [`GcraCell`] when the
    /// state fits one (GCRA's, no penalty, expiring when its TAT passes, as
    /// every GCRA write but a refund to nothing does).
    pub(crate) fn of_state(state: RuleState, expires_at: u64, denying: bool) -> Self {
        match GcraCell::word_for(&state, expires_at, denying) {
            Some(word) => Self::Gcra(GcraCell(AtomicU64::new(word))),
            None => Self::State(state),
        }
    }

    pub(crate) fn to_bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Self::Bytes(b) => Cow::Borrowed(b),
            Self::State(s) => Cow::Owned(s.encode()),
            Self::Gcra(c) => Cow::Owned(c.state().encode()),
        }
    }

    pub(crate) fn rule_state(&self, key: &RuleKey<'_>) -> Result<Cow<'_, RuleState>> {
        match self {
            Self::State(s) => Ok(Cow::Borrowed(s)),
            Self::Gcra(c) => Ok(Cow::Owned(c.state())),
            Self::Bytes(b) => RuleState::decode(b)
                .map(Cow::Owned)
                .map_err(|e| corrupt_state(&key.to_string(), e)),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::State(RuleState {
                algorithm: AlgorithmState::SlidingWindowLog(log) | AlgorithmState::Concurrency(log),
                ..
            }) => log.entries.capacity() * 16,
            Self::State(_) | Self::Gcra(_) => 0,
        }
    }
}

/// GCRA state without a penalty in one word: the theoretical arrival time
/// (TAT) shifted left by one, and in the low bit whether the state is
/// denying (see [`Entry::packed`]). The state expires when its TAT passes,
/// so the word holds the entry's expiry too, and a compare-and-swap on it
/// changes all three at once.
#[derive(Debug)]
pub(crate) struct GcraCell(AtomicU64);

impl GcraCell {
    /// The word that holds `state`, written to expire at `expires_at` and
    /// marked `denying`; `None` unless `state` is GCRA's, without a
    /// penalty, expiring when its TAT passes, and that TAT is before 2^63
    /// µs (one word cannot hold a later one beside the mark; no clock reads
    /// that far).
    pub(crate) fn word_for(state: &RuleState, expires_at: u64, denying: bool) -> Option<u64> {
        match state.algorithm {
            AlgorithmState::Gcra(GcraState { tat })
                if state.blocked_until == 0 && tat == expires_at && tat >> 63 == 0 =>
            {
                Some(tat << 1 | u64::from(denying))
            }
            _ => None,
        }
    }

    /// The word that holds a TAT of `tat` written at `now`, marked
    /// `denying`: what [`word_for`](Self::word_for) makes of the state and
    /// expiry a write of that TAT has (it expires when the TAT passes);
    /// `None` for a TAT at `now` or before (a write keeps it 1 µs) or from
    /// 2^63 µs on.
    pub(crate) fn word(tat: u64, now: u64, denying: bool) -> Option<u64> {
        (tat > now && tat >> 63 == 0).then(|| tat << 1 | u64::from(denying))
    }

    /// The word now. Under the shard's write lock, or before a
    /// compare-and-swap that checks it did not change.
    pub(crate) fn load(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Replaces the word `current` with `new`; the word there instead if
    /// another thread changed it first.
    pub(crate) fn swap(&self, current: u64, new: u64) -> Result<(), u64> {
        self.0
            .compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
    }

    /// The TAT in a word.
    pub(crate) const fn tat(word: u64) -> u64 {
        word >> 1
    }

    /// The state in a word.
    pub(crate) fn state_of(word: u64) -> RuleState {
        RuleState {
            blocked_until: 0,
            algorithm: AlgorithmState::Gcra(GcraState {
                tat: Self::tat(word),
            }),
        }
    }

    fn state(&self) -> RuleState {
        Self::state_of(self.load())
    }

    fn expires_at(&self) -> u64 {
        Self::tat(self.load())
    }

    fn denying(&self) -> bool {
        self.load() & 1 == 1
    }
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) value: Value,
    /// µs since the epoch; the entry is dead once `now >= expires_at`. A
    /// [`GcraCell`] holds its own (see [`Entry::expires_at`]).
    expires_at: u64,
    key: StoreKey,
    /// The shard's logical clock at the last use (wrapping; compared as
    /// ages). Atomic: a decision in a [`GcraCell`] marks it under the read
    /// lock.
    last_used: AtomicU32,
    /// Position of this entry's hash in `Shard::hashes` (the low 31 bits),
    /// and, in the top bit, whether the entry is denying state: rule state
    /// whose last write left no room for one more unit, which dropping would
    /// let through. One word for both keeps an entry within its footprint.
    packed: u32,
}

/// The top bit of [`Entry::packed`].
const DENYING: u32 = 1 << 31;

impl Entry {
    pub(crate) fn is_live(&self, now: u64) -> bool {
        now < self.expires_at()
    }

    /// When the entry dies: µs since the epoch.
    pub(crate) fn expires_at(&self) -> u64 {
        match &self.value {
            Value::Gcra(cell) => cell.expires_at(),
            _ => self.expires_at,
        }
    }

    /// Marks the entry used at `clock`, the shard's logical clock, through
    /// a shared reference (under the read lock). Writes only when it was
    /// marked earlier: a hot key's line is not written on every decision.
    pub(crate) fn mark_used(&self, clock: u32) {
        if self.last_used.load(Ordering::Relaxed) != clock {
            self.last_used.store(clock, Ordering::Relaxed);
        }
    }

    fn slot(&self) -> usize {
        (self.packed & !DENYING) as usize
    }

    // The two halves have no bit in common, so `|` and `^` are the same here
    // (that mutant is excluded in `.cargo/mutants.toml`).
    fn set_slot(&mut self, slot: usize) {
        self.packed = (self.packed & DENYING) | (slot as u32 & !DENYING);
    }

    /// Whether the entry is denying state (see [`Entry::packed`]; a
    /// [`GcraCell`] holds its own mark).
    fn denying(&self) -> bool {
        match &self.value {
            Value::Gcra(cell) => cell.denying(),
            _ => self.packed & DENYING != 0,
        }
    }

    /// Writes `value` (made with the same `expires_at` and `denying`) over
    /// the entry's.
    pub(crate) fn rewrite(&mut self, value: Value, expires_at: u64, denying: bool) {
        self.value = value;
        self.expires_at = expires_at;
        self.set_denying(denying);
    }

    /// Marks whether the entry is denying state, after a write (a
    /// [`GcraCell`] is marked when made).
    fn set_denying(&mut self, denying: bool) {
        self.packed = if denying {
            self.packed | DENYING
        } else {
            self.packed & !DENYING
        };
    }

    /// What dropping the entry would lose, for eviction: `None` for state
    /// that still denies (never evicted), else 0 for an expired entry and 1
    /// for a live one.
    fn loss(&self, now: u64) -> Option<u8> {
        if !self.is_live(now) {
            return Some(0);
        }
        let penalised = matches!(&self.value, Value::State(s) if now < s.blocked_until);
        (!penalised && !self.denying()).then_some(1)
    }
}

/// What an insertion pushed out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evicted {
    pub(crate) live: u64,
    pub(crate) expired: u64,
}

#[derive(Debug)]
pub(crate) struct Shard {
    table: HashTable<Entry>,
    hashes: Vec<u64>,
    capacity: usize,
    clock: u32,
    rng: u64,
    /// Expired entries a decision wrote over in place, counted here rather
    /// than in the store's shared counter (no shared line written per
    /// decision). Atomic: a decision in a lapsed [`GcraCell`] counts it
    /// under the read lock.
    reused_expired: AtomicU64,
    /// Recomputes an entry's hash when the table grows (entries do not carry it).
    hasher: RandomState,
}

impl Shard {
    pub(crate) fn new(capacity: usize, seed: u64, hasher: RandomState) -> Self {
        Self {
            table: HashTable::new(),
            hashes: Vec::new(),
            // Slots take 31 bits.
            capacity: capacity.clamp(1, (DENYING - 1) as usize),
            clock: 0,
            rng: seed | 1,
            reused_expired: AtomicU64::new(0),
            hasher,
        }
    }

    /// Counts an expired entry written over in place, under the write lock.
    pub(crate) fn count_reused_expired(&mut self) {
        *self.reused_expired.get_mut() += 1;
    }

    /// Counts a lapsed [`GcraCell`] written over in place, under the read
    /// lock.
    pub(crate) fn count_reused_cell(&self) {
        self.reused_expired.fetch_add(1, Ordering::Relaxed);
    }

    /// The expired entries written over in place so far.
    pub(crate) fn reused_expired(&self) -> u64 {
        self.reused_expired.load(Ordering::Relaxed)
    }

    fn tick(&mut self) -> u32 {
        self.clock = self.clock.wrapping_add(1);
        self.clock
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The shard's logical clock, for [`Entry::mark_used`].
    pub(crate) fn clock(&self) -> u32 {
        self.clock
    }

    /// The entry at `key`, live or not, marked as just used.
    pub(crate) fn touch(&mut self, hash: u64, key: &impl KeyRef) -> Option<&mut Entry> {
        let t = self.tick();
        let entry = self.table.find_mut(hash, |e| key.matches(&e.key))?;
        *entry.last_used.get_mut() = t;
        Some(entry)
    }

    /// The live entry at `key`, marked as just used; a dead one is removed and
    /// counted in `expired`.
    pub(crate) fn live(
        &mut self,
        hash: u64,
        key: &impl KeyRef,
        now: u64,
        expired: &mut u64,
    ) -> Option<&mut Entry> {
        let dead_slot = match self.touch(hash, key) {
            None => return None,
            Some(e) if e.is_live(now) => None,
            Some(e) => Some(e.slot()),
        };
        if let Some(slot) = dead_slot {
            self.remove_slot(slot);
            *expired += 1;
            return None;
        }
        self.table.find_mut(hash, |e| key.matches(&e.key))
    }

    /// The entry at `key` without marking it used.
    pub(crate) fn peek(&self, hash: u64, key: &impl KeyRef) -> Option<&Entry> {
        self.table.find(hash, |e| key.matches(&e.key))
    }

    pub(crate) fn remove(&mut self, hash: u64, key: &impl KeyRef) -> Option<Entry> {
        let slot = self.peek(hash, key)?.slot();
        self.remove_slot(slot)
    }

    pub(crate) fn clear(&mut self) -> usize {
        let n = self.table.len();
        self.table.clear();
        self.hashes.clear();
        n
    }

    /// Removes the entry whose hash sits at `slot` of `hashes`, moving the last
    /// hash into its place.
    fn remove_slot(&mut self, slot: usize) -> Option<Entry> {
        let hash = *self.hashes.get(slot)?;
        let removed = self
            .table
            .find_entry(hash, |e| e.slot() == slot)
            .ok()
            .map(|occupied| occupied.remove().0)?;
        let last = self.hashes.len() - 1;
        self.hashes.swap_remove(slot);
        if slot != last
            && let Some(moved_hash) = self.hashes.get(slot).copied()
            && let Some(moved) = self.table.find_mut(moved_hash, |e| e.slot() == last)
        {
            moved.set_slot(slot);
        }
        Some(removed)
    }

    /// Stores `value` at `key` (`denying`: see [`Entry::packed`]),
    /// evicting to stay within capacity; [`Full`] if nothing could be.
    pub(crate) fn put(
        &mut self,
        hash: u64,
        key: &impl KeyRef,
        value: Value,
        denying: bool,
        expires_at: u64,
        now: u64,
    ) -> Result<Evicted, Full> {
        let t = self.tick();
        if let Some(entry) = self.table.find_mut(hash, |e| key.matches(&e.key)) {
            entry.rewrite(value, expires_at, denying);
            *entry.last_used.get_mut() = t;
            return Ok(Evicted::default());
        }
        let evicted = self.make_room(1, now, &[])?;
        let mut entry = Entry {
            value,
            expires_at,
            key: key.to_store_key(),
            last_used: AtomicU32::new(t),
            packed: self.hashes.len() as u32,
        };
        entry.set_denying(denying);
        self.hashes.push(hash);
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, entry, |e| hasher.hash_one(&e.key));
        Ok(evicted)
    }

    /// Evicts until `new` more entries fit, sparing the entries whose hash
    /// is in `keep` (the other keys of the same operation); [`Full`] if that
    /// many cannot be made to fit (what was evicted until then stays so).
    pub(crate) fn make_room(
        &mut self,
        new: usize,
        now: u64,
        keep: &[u64],
    ) -> Result<Evicted, Full> {
        let mut evicted = Evicted::default();
        while self.table.len() + new > self.capacity {
            match self.evict_one(now, keep) {
                Some(true) => evicted.live += 1,
                Some(false) => evicted.expired += 1,
                None => return Err(Full),
            }
        }
        Ok(evicted)
    }

    // Mutants that turn a shift around give another xorshift generator,
    // as usable here (excluded in `.cargo/mutants.toml`); the spread of its
    // output is tested.
    fn next_random(&mut self) -> u64 {
        // xorshift64: cheap, and good enough to pick eviction candidates.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn at_slot(&self, slot: usize) -> Option<&Entry> {
        let hash = *self.hashes.get(slot)?;
        self.table.find(hash, |e| e.slot() == slot)
    }

    /// Evicts one entry that is not denying state and whose hash is not in
    /// `keep`: expired first, then the least recently used of a sample.
    /// `Some(true)` if it was live; `None` if no such entry was found.
    fn evict_one(&mut self, now: u64, keep: &[u64]) -> Option<bool> {
        let len = self.hashes.len();
        // (slot, loss, age): the lowest loss, then the oldest.
        let mut best: Option<(usize, u8, u32)> = None;
        if len <= SAMPLE {
            for slot in 0..len {
                self.consider(slot, now, keep, &mut best);
            }
        } else {
            for _ in 0..ROUNDS {
                for _ in 0..SAMPLE {
                    let slot = (self.next_random() % len as u64) as usize;
                    self.consider(slot, now, keep, &mut best);
                }
                if best.is_some() {
                    break;
                }
            }
            // Samples found only denying state: look at a bounded run of
            // entries from a random place before giving up.
            // Any random start will do (the mutants of this `%` only move
            // it; excluded in `.cargo/mutants.toml`).
            let start = (self.next_random() % len as u64) as usize;
            for i in 0..SCAN.min(len) {
                if best.is_some() {
                    break;
                }
                self.consider((start + i) % len, now, keep, &mut best);
            }
        }
        let (slot, loss, _) = best?;
        self.remove_slot(slot)?;
        Some(loss > 0)
    }

    /// Makes the entry at `slot` the eviction candidate if it may be evicted
    /// and loses less, or as much but was used longer ago, than `best`.
    fn consider(&self, slot: usize, now: u64, keep: &[u64], best: &mut Option<(usize, u8, u32)>) {
        let (Some(e), Some(hash)) = (self.at_slot(slot), self.hashes.get(slot)) else {
            return;
        };
        if keep.contains(hash) {
            return;
        }
        let Some(loss) = e.loss(now) else { return };
        let age = self.clock.wrapping_sub(e.last_used.load(Ordering::Relaxed));
        // On a tie either candidate is as good: `<` keeps the first (`<=`,
        // excluded in `.cargo/mutants.toml`, would keep the last).
        let better =
            best.is_none_or(|(_, l, a)| (loss, std::cmp::Reverse(age)) < (l, std::cmp::Reverse(a)));
        if better {
            *best = Some((slot, loss, age));
        }
    }

    /// Removes dead entries, examining at most `batch` entries per call,
    /// starting at `cursor`; returns (removed, next cursor or `None` when done).
    pub(crate) fn sweep(
        &mut self,
        now: u64,
        cursor: usize,
        batch: usize,
    ) -> (usize, Option<usize>) {
        let mut slot = cursor;
        let mut removed = 0;
        for _ in 0..batch {
            match self.at_slot(slot).map(|e| e.is_live(now)) {
                None => return (removed, None),
                Some(false) => {
                    // The last entry moves into `slot`: look at it again.
                    self.remove_slot(slot);
                    removed += 1;
                }
                Some(true) => slot += 1,
            }
        }
        (removed, Some(slot))
    }

    /// Live keys and their approximate footprint in bytes.
    pub(crate) fn measure(&self, now: u64) -> (u64, u64) {
        let per_entry = size_of::<Entry>() + size_of::<u64>() + 1;
        self.table
            .iter()
            .filter(|e| e.is_live(now))
            .fold((0, 0), |(n, bytes), e| {
                (
                    n + 1,
                    bytes + (per_entry + e.key.heap_bytes() + e.value.heap_bytes()) as u64,
                )
            })
    }

    /// How many entries the shard holds at most.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Every key, for consistency checks in tests.
    #[cfg(test)]
    fn keys(&self) -> Vec<&str> {
        self.table.iter().map(|e| e.key.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Whole;

    /// The shard and the tests must hash alike, as the store and its shards do.
    fn hasher() -> RandomState {
        static HASHER: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        HASHER.get_or_init(RandomState::default).clone()
    }

    fn hash(key: &str) -> u64 {
        hasher().hash_one(Whole(key))
    }

    fn put(s: &mut Shard, key: &str, expires: u64, now: u64) -> Evicted {
        s.put(
            hash(key),
            &Whole(key),
            Value::Bytes(Box::default()),
            false,
            expires,
            now,
        )
        .expect("room")
    }

    fn put_denying(s: &mut Shard, key: &str, expires: u64, now: u64) -> Result<Evicted, Full> {
        s.put(
            hash(key),
            &Whole(key),
            Value::Bytes(Box::default()),
            true,
            expires,
            now,
        )
    }

    fn consistent(s: &Shard) {
        assert_eq!(s.hashes.len(), s.table.len());
        for slot in 0..s.hashes.len() {
            let e = s.at_slot(slot).expect("every slot names an entry");
            assert_eq!(e.slot(), slot);
        }
        for key in s.keys() {
            assert!(s.peek(hash(key), &Whole(key)).is_some());
        }
    }

    #[test]
    fn evicts_within_capacity_and_stays_consistent() {
        let mut s = Shard::new(100, 7, hasher());
        for i in 0..1_000 {
            put(
                &mut s,
                &format!("k{i}"),
                if i % 10 == 0 { 5 } else { 1_000 },
                0,
            );
            if i % 97 == 0 {
                consistent(&s);
            }
        }
        assert_eq!(s.len(), 100);
        consistent(&s);
        assert!(s.remove(hash("k999"), &Whole("k999")).is_some());
        consistent(&s);
    }

    #[test]
    fn sweep_removes_every_dead_entry_in_batches() {
        let mut s = Shard::new(1_000, 7, hasher());
        for i in 0..1_000 {
            put(&mut s, &format!("k{i}"), if i % 3 == 0 { 5 } else { 50 }, 0);
        }
        let (mut cursor, mut removed) = (Some(0), 0);
        while let Some(c) = cursor {
            let (n, next) = s.sweep(10, c, 64);
            removed += n;
            cursor = next;
        }
        assert_eq!((removed, s.len()), (334, 666));
        consistent(&s);
    }

    #[test]
    fn denying_state_is_never_evicted() {
        let mut s = Shard::new(64, 7, hasher());
        for i in 0..16 {
            put_denying(&mut s, &format!("exhausted{i}"), 1_000, 0).unwrap();
        }
        // A flood of fresh keys evicts only its own kind.
        for i in 0..10_000 {
            put(&mut s, &format!("flood{i}"), 1_000, 0);
        }
        for i in 0..16 {
            let key = format!("exhausted{i}");
            assert!(
                s.peek(hash(&key), &Whole(key.as_str())).is_some(),
                "{key} evicted"
            );
        }
        consistent(&s);
        // Full of denying state: a new key is refused, the bound holds.
        for i in 16..64 {
            put_denying(&mut s, &format!("exhausted{i}"), 1_000, 0).unwrap();
        }
        assert_eq!(s.len(), 64);
        assert_eq!(put_denying(&mut s, "one-more", 1_000, 0), Err(Full));
        assert_eq!(s.len(), 64);
        // Once they expire, they go first.
        assert_eq!(put(&mut s, "later", 2_000, 1_000).expired, 1);
        consistent(&s);
    }

    #[test]
    fn room_for_several_spares_the_operation_s_own_keys() {
        let mut s = Shard::new(2, 7, hasher());
        put(&mut s, "a", 1_000, 0);
        put(&mut s, "b", 1_000, 0);
        // Room for one more, keeping `a`: `b` goes.
        assert_eq!(s.make_room(1, 0, &[hash("a")]).unwrap().live, 1);
        assert!(s.peek(hash("a"), &Whole("a")).is_some());
        // Room for two more, keeping `a`: impossible, nothing more goes.
        put(&mut s, "c", 1_000, 0);
        assert_eq!(s.make_room(2, 0, &[hash("a")]), Err(Full));
        assert_eq!(s.len(), 1);
        consistent(&s);
    }

    #[test]
    fn eviction_samples_are_spread_over_every_slot() {
        let mut s = Shard::new(10, 7, hasher());
        let mut seen = std::collections::HashSet::new();
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let r = s.next_random();
            seen.insert(r);
            buckets[(r % 10) as usize] += 1;
        }
        assert_eq!(seen.len(), 10_000, "the generator repeats");
        assert!(
            buckets.iter().all(|&n| (800..1_200).contains(&n)),
            "{buckets:?}"
        );
        // Every bit is set about half the time.
        let mut ones = [0u32; 64];
        for _ in 0..10_000 {
            let r = s.next_random();
            for (bit, n) in ones.iter_mut().enumerate() {
                *n += u32::from(r >> bit & 1 == 1);
            }
        }
        assert!(
            ones.iter().all(|&n| (4_500..5_500).contains(&n)),
            "{ones:?}"
        );
    }

    #[test]
    fn measure_counts_each_live_entry_its_hash_and_control_byte() {
        let mut s = Shard::new(10, 7, hasher());
        put(&mut s, "a", 1_000, 0);
        put(&mut s, "b", 1_000, 0);
        let per_entry = (size_of::<Entry>() + size_of::<u64>() + 1) as u64;
        assert_eq!(s.measure(0), (2, 2 * per_entry));
        assert_eq!(s.measure(1_000), (0, 0));
    }

    #[test]
    fn only_gcra_state_without_a_penalty_expiring_at_its_tat_is_a_cell() {
        let gcra = |blocked_until, tat| RuleState {
            blocked_until,
            algorithm: AlgorithmState::Gcra(GcraState { tat }),
        };
        let word = GcraCell::word_for(&gcra(0, 1_000), 1_000, true).unwrap();
        assert_eq!(GcraCell::tat(word), 1_000);
        // A TAT written at `now` makes the word its write would make.
        assert_eq!(GcraCell::word(1_000, 999, true), Some(word));
        assert_eq!(
            GcraCell::word(1_000, 0, false),
            GcraCell::word_for(&gcra(0, 1_000), 1_000, false)
        );
        // At `now` or before (a write keeps it 1 µs), or past one word.
        assert_eq!(GcraCell::word(1_000, 1_000, false), None);
        assert_eq!(GcraCell::word(1 << 63, 0, false), None);
        assert_eq!(GcraCell::state_of(word), gcra(0, 1_000));
        let cell = Value::of_state(gcra(0, 1_000), 1_000, true);
        assert!(matches!(&cell, Value::Gcra(c) if c.denying() && c.expires_at() == 1_000));
        assert!(
            matches!(Value::of_state(gcra(0, 1_000), 1_000, false), Value::Gcra(c) if !c.denying())
        );
        // A penalty, an expiry of its own, a TAT one word cannot hold
        // beside the mark, another algorithm: decoded state.
        for (state, expires_at) in [
            (gcra(5, 1_000), 1_000),
            (gcra(0, 1_000), 1_001),
            (gcra(0, 1 << 63), 1 << 63),
            (
                RuleState {
                    blocked_until: 0,
                    algorithm: AlgorithmState::TokenBucket(
                        ratekeeper_core::kit::TokenBucketState {
                            tokens: 1,
                            anchor: 1_000,
                        },
                    ),
                },
                1_000,
            ),
        ] {
            assert!(GcraCell::word_for(&state, expires_at, false).is_none());
            assert!(matches!(
                Value::of_state(state, expires_at, false),
                Value::State(_)
            ));
        }
        // The cell reads as the state it holds, in bytes too.
        let key = RuleKey {
            rule: "r",
            key: "k",
        };
        assert_eq!(cell.rule_state(&key).unwrap().into_owned(), gcra(0, 1_000));
        assert_eq!(cell.to_bytes().as_ref(), gcra(0, 1_000).encode());
    }

    #[test]
    fn sampled_eviction_spares_recent_keys() {
        // A key used just now is never the least recently used of a sample
        // that contains any other key.
        let mut s = Shard::new(1_000, 7, hasher());
        for i in 0..1_000 {
            put(&mut s, &format!("k{i}"), 1_000, 0);
        }
        for i in 0..500 {
            s.touch(hash("k0"), &Whole("k0"));
            put(&mut s, &format!("n{i}"), 1_000, 0);
        }
        assert!(s.peek(hash("k0"), &Whole("k0")).is_some());
        consistent(&s);
    }
}
#[cfg(test)]
mod footprint {
    /// Lookups at scale are bound by cache misses on entries: keep an entry
    /// (key inline, value, expiry, bookkeeping) within a cache line and a half.
    #[test]
    fn entries_stay_small() {
        assert!(
            std::mem::size_of::<super::Entry>() <= 80,
            "{}",
            std::mem::size_of::<super::Entry>()
        );
        assert!(std::mem::size_of::<ratekeeper_core::Decision>() <= 64);
    }
}
