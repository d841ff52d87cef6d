//! One shard: an LRU map of keys to values with expiry, behind one lock.

use std::borrow::Cow;
use std::mem::size_of;

use foldhash::fast::RandomState;
use lru::LruCache;
use ratelimit_core::state::RuleState;
use ratelimit_core::{Error, ErrorKind, Result};

/// A stored value: opaque bytes from the key-value API, or rule state kept
/// decoded so decisions never serialise.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Bytes(Box<[u8]>),
    State(RuleState),
}

impl Value {
    pub(crate) fn to_bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Self::Bytes(b) => Cow::Borrowed(b),
            Self::State(s) => Cow::Owned(s.encode()),
        }
    }

    pub(crate) fn rule_state(&self, key: &str) -> Result<Cow<'_, RuleState>> {
        match self {
            Self::State(s) => Ok(Cow::Borrowed(s)),
            Self::Bytes(b) => RuleState::decode(b).map(Cow::Owned).map_err(|e| {
                Error::new(ErrorKind::CorruptState, format!("the value at {key:?} is not rate-limit state")).with_source(e)
            }),
        }
    }

    fn approx_bytes(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::State(s) => match &s.algorithm {
                ratelimit_core::state::AlgorithmState::SlidingWindowLog(log) => log.entries.len() * 16,
                _ => 0,
            },
        }
    }
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) value: Value,
    /// µs since the epoch; the entry is dead once `now >= expires_at`.
    pub(crate) expires_at: u64,
}

impl Entry {
    pub(crate) fn is_live(&self, now: u64) -> bool {
        now < self.expires_at
    }
}

/// What an insertion pushed out.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Evicted {
    pub(crate) live: u64,
    pub(crate) expired: u64,
}

#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) map: LruCache<Box<str>, Entry, RandomState>,
    capacity: usize,
}

impl Shard {
    pub(crate) fn new(capacity: usize, hasher: RandomState) -> Self {
        Self {
            map: LruCache::unbounded_with_hasher(hasher),
            capacity: capacity.max(1),
        }
    }

    /// The live entry at `key`, touching it as recently used; a dead one is
    /// removed and counted in `expired`.
    pub(crate) fn live(&mut self, key: &str, now: u64, expired: &mut u64) -> Option<&mut Entry> {
        if self.map.peek(key).is_some_and(|e| !e.is_live(now)) {
            self.map.pop(key);
            *expired += 1;
            return None;
        }
        self.map.get_mut(key)
    }

    /// Stores `value` at `key`, evicting the least recently used entries to stay
    /// within capacity.
    pub(crate) fn put(&mut self, key: &str, value: Value, expires_at: u64, now: u64) -> Evicted {
        let mut evicted = Evicted::default();
        if let Some(entry) = self.map.get_mut(key) {
            *entry = Entry { value, expires_at };
            return evicted;
        }
        while self.map.len() >= self.capacity {
            match self.map.pop_lru() {
                Some((_, old)) if old.is_live(now) => evicted.live += 1,
                Some(_) => evicted.expired += 1,
                None => break,
            }
        }
        self.map.push(Box::from(key), Entry { value, expires_at });
        evicted
    }

    /// Removes up to `batch` dead entries; returns how many.
    pub(crate) fn sweep(&mut self, now: u64, batch: usize) -> usize {
        let dead: Vec<Box<str>> = self
            .map
            .iter()
            .filter(|(_, e)| !e.is_live(now))
            .take(batch)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &dead {
            self.map.pop(key);
        }
        dead.len()
    }

    /// Live keys and their approximate footprint in bytes.
    pub(crate) fn measure(&self, now: u64) -> (u64, u64) {
        let per_entry = size_of::<Entry>() + size_of::<Box<str>>() + 4 * size_of::<usize>();
        self.map
            .iter()
            .filter(|(_, e)| e.is_live(now))
            .fold((0, 0), |(n, bytes), (k, e)| {
                (n + 1, bytes + (per_entry + k.len() + e.value.approx_bytes()) as u64)
            })
    }
}
