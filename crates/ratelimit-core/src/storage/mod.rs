//! The storage trait: where rate-limit state lives.
//!
//! A store has two parts with separate contracts:
//!
//! 1. **Key-value operations** the seeds' users know — [`get`](Storage::get),
//!    [`set`](Storage::set) with a TTL, [`delete`](Storage::delete),
//!    [`exists`](Storage::exists), [`increment`](Storage::increment),
//!    [`clear`](Storage::clear), [`close`](Storage::close) and
//!    [`stats`](Storage::stats) — plus one primitive,
//!    [`compare_and_swap`](Storage::compare_and_swap). Values are opaque bytes,
//!    and every value has an expiry: no store keeps state for idle clients forever.
//! 2. **The atomic decision step**, [`decide`](Storage::decide): apply the rules of
//!    one request to their keys at a given time and store the result, atomically
//!    with respect to every other caller of the same store. Its default
//!    implementation ([`decide_with_cas`]) runs the core's algorithms in a
//!    compare-and-swap loop, so a custom store is correct by implementing the
//!    simple operations of part 1 faithfully. Built-in stores override it with
//!    something faster (a lock, a transaction, a Lua script) that must give
//!    identical results.
//!
//! # Writing a store
//!
//! ```
//! use async_trait::async_trait;
//! use ratelimit_core::{CasOp, Error, ErrorKind, Limiter, Result, Storage, StorageStats};
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, Instant};
//!
//! /// A store in a mutex-guarded map: every operation is trivially atomic.
//! #[derive(Debug, Default)]
//! struct MapStore(Mutex<HashMap<String, (Vec<u8>, Instant)>>);
//!
//! impl MapStore {
//!     fn map(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, Instant)>>> {
//!         let mut map = self.0.lock().map_err(|_| Error::new(ErrorKind::Other, "poisoned"))?;
//!         let now = Instant::now();
//!         map.retain(|_, (_, expires)| *expires > now);
//!         Ok(map)
//!     }
//! }
//!
//! #[async_trait]
//! impl Storage for MapStore {
//!     async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
//!         Ok(self.map()?.get(key).map(|(v, _)| v.clone()))
//!     }
//!     async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
//!         self.map()?.insert(key.to_owned(), (value.to_vec(), Instant::now() + ttl));
//!         Ok(())
//!     }
//!     async fn delete(&self, key: &str) -> Result<bool> {
//!         Ok(self.map()?.remove(key).is_some())
//!     }
//!     async fn exists(&self, key: &str) -> Result<bool> {
//!         Ok(self.map()?.contains_key(key))
//!     }
//!     async fn increment(&self, key: &str, amount: i64, ttl: Duration) -> Result<i64> {
//!         let mut map = self.map()?;
//!         let entry = map.entry(key.to_owned()).or_insert_with(|| (b"0".to_vec(), Instant::now() + ttl));
//!         let n: i64 = std::str::from_utf8(&entry.0).ok().and_then(|s| s.parse().ok())
//!             .ok_or_else(|| Error::new(ErrorKind::WrongType, "not an integer"))?;
//!         let n = n.checked_add(amount).ok_or_else(|| Error::new(ErrorKind::WrongType, "overflow"))?;
//!         entry.0 = n.to_string().into_bytes();
//!         Ok(n)
//!     }
//!     async fn clear(&self) -> Result<u64> {
//!         let mut map = self.map()?;
//!         let n = map.len() as u64;
//!         map.clear();
//!         Ok(n)
//!     }
//!     async fn close(&self) -> Result<()> {
//!         Ok(())
//!     }
//!     async fn stats(&self) -> Result<StorageStats> {
//!         let mut stats = StorageStats::new("map");
//!         stats.keys = Some(self.map()?.len() as u64);
//!         Ok(stats)
//!     }
//!     async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
//!         let mut map = self.map()?;
//!         if ops.iter().any(|op| map.get(op.key).map(|(v, _)| v.as_slice()) != op.expected) {
//!             return Ok(false);
//!         }
//!         for op in ops {
//!             map.insert(op.key.to_owned(), (op.new_value.to_vec(), Instant::now() + op.ttl));
//!         }
//!         Ok(true)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let limiter = Limiter::new(Arc::new(MapStore::default()));
//! let rule = ratelimit_core::Rule::new("api", ratelimit_core::Algorithm::Gcra, "2/s".parse()?)?;
//! assert!(limiter.check(&rule, "alice").await?.is_allowed());
//! assert!(limiter.check(&rule, "alice").await?.is_allowed());
//! assert!(!limiter.check(&rule, "alice").await?.is_allowed());
//! # Ok(())
//! # }
//! ```

mod cas;

mod url;
pub use url::redact_url;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use cas::{MAX_CAS_ATTEMPTS, corrupt_state, decide_with_cas};

use crate::clock::Timestamp;
use crate::decision::Decision;
use crate::error::Result;
use crate::rule::Rule;

/// One key of a [`Storage::compare_and_swap`]: if its current value is
/// `expected` (`None`: absent or expired), it becomes `new_value`, expiring
/// after `ttl`.
#[derive(Debug, Clone, Copy)]
pub struct CasOp<'a> {
    /// The key.
    pub key: &'a str,
    /// The value the key must hold; `None` means absent (or expired).
    pub expected: Option<&'a [u8]>,
    /// The value to write.
    pub new_value: &'a [u8],
    /// How long the new value lives. Never zero.
    pub ttl: Duration,
}

/// One rule of a decision and the caller's key it applies to.
#[derive(Debug, Clone, Copy)]
pub struct DecideEntry<'a> {
    /// The caller's key, already bounded by the limiter.
    pub key: &'a str,
    /// The rule.
    pub rule: &'a Rule,
}

impl DecideEntry<'_> {
    /// The store key that holds this rule's state for this key:
    /// `"{rule name}:{key}"` (see [`state_key`](crate::key::state_key)). A store
    /// that can look state up without building the string may skip this.
    pub fn state_key(&self) -> String {
        crate::key::state_key(self.rule, self.key)
    }
}

/// The input of the atomic decision step.
#[derive(Debug, Clone, Copy)]
pub struct DecideRequest<'a> {
    /// The time of the decision, from the limiter's clock. A store that has a
    /// shared clock of its own (Redis `TIME`) may use it instead.
    pub now: Timestamp,
    /// Units the request costs; 0 is a peek.
    pub cost: u64,
    /// The rules to apply, each with its key; at least one, and no rule and key
    /// twice.
    pub entries: &'a [DecideEntry<'a>],
}

/// What a store reports about itself. Fields a store cannot know are `None`.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// The kind of store (`"memory"`, `"sqlite"`, `"redis"`, ...).
    pub backend: &'static str,
    /// Live keys.
    pub keys: Option<u64>,
    /// Keys dropped to stay within a size bound.
    pub evictions: Option<u64>,
    /// Keys dropped because they expired.
    pub expirations: Option<u64>,
    /// Approximate bytes held.
    pub approx_bytes: Option<u64>,
    /// Anything else worth showing, as name/value pairs.
    pub details: Vec<(String, String)>,
}

impl StorageStats {
    /// Empty stats for a store of kind `backend`.
    pub fn new(backend: &'static str) -> Self {
        Self {
            backend,
            ..Self::default()
        }
    }
}

/// Where rate-limit state lives. Object safe: use it as `Arc<dyn Storage>`.
///
/// Every method may be called concurrently from many tasks. See the
/// [module documentation](self) for the two parts of the contract and a complete
/// custom store.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// The value at `key`, or `None` if it is absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `value` at `key`, replacing any value, expiring after `ttl`.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()>;

    /// Removes `key`; `true` if it held a live value.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Whether `key` holds a live value.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// Atomically adds `amount` to the integer at `key` (stored as its decimal
    /// ASCII text, like Redis `INCRBY`) and returns the new value. An absent key
    /// counts as 0 and is created with `ttl`; an existing key keeps its expiry.
    /// A value that is not an integer, or an overflow, is an
    /// [`ErrorKind::WrongType`](crate::ErrorKind::WrongType) error.
    async fn increment(&self, key: &str, amount: i64, ttl: Duration) -> Result<i64>;

    /// Removes every key of this store (and only of this store: a store that
    /// shares a server with others removes only its own prefix). Returns how many
    /// keys were removed, when known.
    async fn clear(&self) -> Result<u64>;

    /// Releases resources (connections, background tasks). Later calls fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed). Closing twice is fine.
    async fn close(&self) -> Result<()>;

    /// Counters and sizes, for operators.
    async fn stats(&self) -> Result<StorageStats>;

    /// Atomically: if every op's key currently holds its `expected` value, writes
    /// every op's `new_value` with its `ttl` and returns `true`; otherwise writes
    /// nothing and returns `false`. Ops name distinct keys. Atomic with respect to
    /// every other operation on this store, from any task or process that shares it.
    async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool>;

    /// The atomic decision step: decides `request` with the core's algorithms
    /// ([`engine`](crate::engine)) and stores the resulting states, atomically
    /// with respect to every other caller. The default runs [`decide_with_cas`].
    /// A store that overrides it must return exactly what the default would.
    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        decide_with_cas(self, request).await
    }

    /// The decision step for stores that never wait (no I/O, no `.await`): the
    /// [`Limiter`](crate::Limiter) calls this first and falls back to
    /// [`decide`](Self::decide) when it returns `None`, which saves boxing a
    /// future on every decision. An implementation must answer exactly as
    /// `decide` would. The default returns `None`.
    fn decide_now(&self, request: &DecideRequest<'_>) -> Option<Result<Decision>> {
        let _ = request;
        None
    }
}
