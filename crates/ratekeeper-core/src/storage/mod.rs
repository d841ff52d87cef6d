//! The storage trait: where rate-limit state lives.
//!
//! A store has two parts with separate contracts:
//!
//! 1. **The atomic decision step**, [`decide`](Storage::decide), the one
//!    method every store writes: apply the rules of one request to their keys
//!    at a given time and store the result, atomically with respect to every
//!    other caller of the same store. A store either runs the core's pure
//!    step ([`kit::decide_all`](crate::kit::decide_all)) inside
//!    whatever makes it atomic (a lock, a transaction, a Lua script), or, if
//!    it offers [`get`](Storage::get) and
//!    [`compare_and_swap`](Storage::compare_and_swap), delegates to
//!    [`decide_with_cas`], the core's compare-and-swap loop. Both give
//!    identical results.
//!    [`decide_each`](Storage::decide_each) is the same step answered rule
//!    by rule; it defaults to [`decide_each_with_cas`], and a store with a
//!    native `decide` writes it the same way, around
//!    [`kit::decide_each`](crate::kit::decide_each).
//!    [`adjust`](Storage::adjust), the change of a budget after the fact
//!    (a late charge, a refund), is a step of the same kind: it defaults
//!    to [`adjust_with_cas`], and a store with a native `decide` writes it
//!    around [`kit::adjust`](crate::kit::adjust).
//! 2. **Key-value operations** the users of other rate limiters know —
//!    [`get`](Storage::get), [`set`](Storage::set) with a TTL,
//!    [`delete`](Storage::delete), [`exists`](Storage::exists),
//!    [`increment`](Storage::increment), [`clear`](Storage::clear) — plus
//!    [`compare_and_swap`](Storage::compare_and_swap). Values are opaque
//!    bytes, and every value has an expiry: no store keeps state for idle
//!    clients forever. Every built-in store offers them all. They are
//!    optional for a new store: each defaults to an
//!    [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) error, and
//!    only the features that need one fail without it
//!    ([`Limiter::reset`](crate::Limiter::reset) needs `delete`; the
//!    operator tool's `inspect`, `reset` and `clear` need `get`, `delete` and
//!    `clear`). [`close`](Storage::close) and [`stats`](Storage::stats) have
//!    working defaults.
//!
//! The conformance kit (`ratekeeper-testkit`) has one suite for each part:
//! `decision_conformance_tests!` for a store that writes only `decide`,
//! `storage_conformance_tests!` for one that offers everything.
//!
//! # Writing a store
//!
//! A store that keeps bytes under keys offers `get` and `compare_and_swap`,
//! and decides with [`decide_with_cas`]:
//!
//! ```
//! use async_trait::async_trait;
//! use ratekeeper_core::storage::decide_with_cas;
//! use ratekeeper_core::{CasOp, Decision, DecideRequest, Error, ErrorKind, Limiter, Result, Storage};
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//! use std::time::Instant;
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
//!     async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
//!         decide_with_cas(self, request).await
//!     }
//!     async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
//!         Ok(self.map()?.get(key).map(|(v, _)| v.clone()))
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
//!     async fn delete(&self, key: &str) -> Result<bool> {
//!         Ok(self.map()?.remove(key).is_some())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let limiter = Limiter::new(Arc::new(MapStore::default()));
//! let rule = ratekeeper_core::Rule::new("api", ratekeeper_core::Algorithm::Gcra, "2/s".parse()?)?;
//! assert!(limiter.check(&rule, "alice").await?.is_allowed());
//! assert!(limiter.check(&rule, "alice").await?.is_allowed());
//! assert!(!limiter.check(&rule, "alice").await?.is_allowed());
//! assert!(limiter.reset(&rule, "alice").await?);
//! // What the store does not offer says so.
//! let store = MapStore::default();
//! let err = store.increment("n", 1, std::time::Duration::from_secs(1)).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Unsupported);
//! # Ok(())
//! # }
//! ```

mod cas;
mod opener;
mod url;

pub use opener::Opener;
pub use url::redact_url;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use cas::{adjust_with_cas, corrupt_state, decide_each_with_cas, decide_with_cas};

use crate::clock::Timestamp;
use crate::decision::Decision;
use crate::error::{Error, Result};
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

/// One rule of a decision, the caller's key it applies to, and what the
/// request costs on it.
#[derive(Debug, Clone, Copy)]
pub struct DecideEntry<'a> {
    /// The caller's key, already bounded by the limiter.
    pub key: &'a str,
    /// The rule.
    pub rule: &'a Rule,
    /// Units the request costs on this rule; 0 is a peek of this rule. The
    /// [`Limiter`](crate::Limiter) gives every entry the same cost except in
    /// [`check_each`](crate::Limiter::check_each).
    pub cost: u64,
}

impl DecideEntry<'_> {
    /// The store key that holds this rule's state for this key:
    /// `"{rule name}:{key}"` (see [`state_key`](crate::kit::state_key)). A store
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
    /// The rules to apply, each with its key and cost; at least one, and no
    /// rule and key twice.
    pub entries: &'a [DecideEntry<'a>],
}

impl DecideRequest<'_> {
    /// The cost every entry shares, or `None` when the entries cost
    /// different amounts (or there are none). Layers that reason about one
    /// cost per request (a deny cache, approximate mode) pass other
    /// requests through.
    #[inline]
    pub fn uniform_cost(&self) -> Option<u64> {
        let (first, rest) = self.entries.split_first()?;
        rest.iter()
            .all(|e| e.cost == first.cost)
            .then_some(first.cost)
    }
}

/// A change to a rule's budget after the request it belongs to was
/// decided: see [`Storage::adjust`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    /// Takes `units` whatever is left: a cost learned after the fact (the
    /// tokens a model answered with, the bytes sent). Never refused: it may
    /// take the key past its limit, and the excess is then owed, up to one
    /// full limit (each algorithm's documentation says how it is paid
    /// back). Later requests are denied until it is.
    Charge(u64),
    /// Gives back `units`, never more than the rule's full budget: a
    /// request that turned out to cost less, or should not count at all.
    /// With `taken_at`, only units that still count come back: the key
    /// never has more than it would have had without them.
    Refund {
        /// Units to give back.
        units: u64,
        /// When they were taken, so that only units that still count come
        /// back. On the window algorithms: units in a window that has not
        /// ended, to that window (the fixed window gives back only units
        /// of its current window; the sliding log removes the units of
        /// that instant, then the oldest after it). On the buckets (token,
        /// leaky, GCRA): the units less what could have refilled since
        /// `taken_at`, the instant they could begin to refill at the
        /// earliest (a [`Reservation`](crate::Reservation) passes when it
        /// was taken plus the turns of the units it kept; not where its
        /// units stood in the key's debt, since a refund of units ahead of
        /// them moves them up, which the store cannot tell). On the store's timeline: a store that
        /// decides on its own clock reports it
        /// ([`Storage::decide_each_at`]). `None`: the newest units, all of
        /// them (the current window's; on the buckets, as if taken just
        /// now, so units that refilled meanwhile come back twice).
        taken_at: Option<Timestamp>,
    },
}

/// One rule of an adjustment, the caller's key, and the change.
#[derive(Debug, Clone, Copy)]
pub struct AdjustEntry<'a> {
    /// The caller's key, already bounded by the limiter.
    pub key: &'a str,
    /// The rule.
    pub rule: &'a Rule,
    /// The change.
    pub adjustment: Adjustment,
}

impl AdjustEntry<'_> {
    /// The store key that holds this rule's state for this key, as
    /// [`DecideEntry::state_key`].
    pub fn state_key(&self) -> String {
        crate::key::state_key(self.rule, self.key)
    }
}

/// The input of [`Storage::adjust`].
#[derive(Debug, Clone, Copy)]
pub struct AdjustRequest<'a> {
    /// The time of the adjustment, from the limiter's clock (a store with a
    /// shared clock of its own may use it instead, as for decisions).
    pub now: Timestamp,
    /// The changes; at least one, and no rule and key twice.
    pub entries: &'a [AdjustEntry<'a>],
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
/// Every method may be called concurrently from many tasks. A store must
/// write [`decide`](Self::decide); every other method has a default (an
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) error for the
/// key-value operations). See the [module documentation](self) for the two
/// parts of the contract and a complete custom store.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// The atomic decision step: decides `request` with the core's algorithms
    /// ([`kit`](crate::kit)) and stores the resulting states, atomically
    /// with respect to every other caller. [`decide_with_cas`] implements it
    /// for a store that offers [`get`](Self::get) and
    /// [`compare_and_swap`](Self::compare_and_swap); a store that writes its
    /// own must return exactly what that would.
    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision>;

    /// The decision step for stores that never wait (no I/O, no `.await`): the
    /// [`Limiter`](crate::Limiter) calls this first and falls back to
    /// [`decide`](Self::decide) when it returns `None`, which saves boxing a
    /// future on every decision. An implementation must answer exactly as
    /// `decide` would. The default returns `None`.
    fn decide_now(&self, request: &DecideRequest<'_>) -> Option<Result<Decision>> {
        let _ = request;
        None
    }

    /// The decision step with one decision per entry, in entry order: the
    /// same atomic, all-or-nothing step as [`decide`](Self::decide), for
    /// callers that report every rule (the rate-limit service's status per
    /// descriptor). The most restrictive of them
    /// ([`Decision::most_restrictive`]) is what `decide` returns.
    ///
    /// An entry with a cost of 0 is only looked at: it reports what a
    /// request of one unit would get and never holds the others back. When
    /// every charged entry allows, each reports its own admission. When any
    /// denies, nothing is consumed: each denying entry reports its denial,
    /// and each entry that would have allowed reports what it has now, as a
    /// peek would. [`kit::decide_each`](crate::kit::decide_each) computes it.
    ///
    /// The default is [`decide_each_with_cas`], which needs
    /// [`get`](Self::get) and [`compare_and_swap`](Self::compare_and_swap);
    /// every built-in store has its own.
    async fn decide_each(&self, request: &DecideRequest<'_>) -> Result<Vec<Decision>> {
        decide_each_with_cas(self, request).await
    }

    /// [`decide_each`](Self::decide_each), and the time it decided at:
    /// the request's `now`, or the store's own clock when it keeps one
    /// (Redis `TIME`). A [`Reservation`](crate::Reservation) records it,
    /// so that its refunds name the instant its units were taken on the
    /// store's timeline, whatever the limiter's clock says. The default
    /// answers `request.now` beside `decide_each`; a store that decides on
    /// a clock of its own writes it.
    async fn decide_each_at(
        &self,
        request: &DecideRequest<'_>,
    ) -> Result<(Timestamp, Vec<Decision>)> {
        Ok((request.now, self.decide_each(request).await?))
    }

    /// [`decide_each_at`](Self::decide_each_at) for stores that never
    /// wait, as [`decide_now`](Self::decide_now) is for `decide`: the
    /// [`Limiter`](crate::Limiter) calls this first (reservations, permits,
    /// checks of several rules) and falls back to `decide_each_at` or
    /// [`decide_each`](Self::decide_each) when it returns `None`. An
    /// implementation must answer exactly as `decide_each_at` would. The
    /// default returns `None`.
    fn decide_each_now(
        &self,
        request: &DecideRequest<'_>,
    ) -> Option<Result<(Timestamp, Vec<Decision>)>> {
        let _ = request;
        None
    }

    /// Changes the budgets of rules after the fact: charges a cost learned
    /// late, or gives units back (see [`Adjustment`]), atomically: every
    /// entry or none, with respect to every other caller. Returns one
    /// decision per entry, in order: what a request of one unit would get
    /// after the change, as a peek reports. A penalty in force stays.
    /// [`kit::adjust`](crate::kit::adjust) computes it.
    ///
    /// The default is [`adjust_with_cas`], which needs [`get`](Self::get)
    /// and [`compare_and_swap`](Self::compare_and_swap); every built-in
    /// store has its own.
    async fn adjust(&self, request: &AdjustRequest<'_>) -> Result<Vec<Decision>> {
        adjust_with_cas(self, request).await
    }

    /// The adjustment step for stores that never wait, as
    /// [`decide_now`](Self::decide_now) is for decisions: the
    /// [`Limiter`](crate::Limiter) calls this first (a
    /// [`Permit`](crate::Permit) giving its places back, a charge or a
    /// refund) and falls back to [`adjust`](Self::adjust) when it returns
    /// `None`, which saves boxing a future. An implementation must answer
    /// exactly as `adjust` would. The default returns `None`.
    fn adjust_now(&self, request: &AdjustRequest<'_>) -> Option<Result<Vec<Decision>>> {
        let _ = request;
        None
    }

    /// The value at `key`, or `None` if it is absent or expired.
    /// Default: unsupported.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let _ = key;
        Err(Error::unsupported("get"))
    }

    /// Stores `value` at `key`, replacing any value, expiring after `ttl`.
    /// Default: unsupported.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let _ = (key, value, ttl);
        Err(Error::unsupported("set"))
    }

    /// Removes `key`; `true` if it held a live value.
    /// [`Limiter::reset`](crate::Limiter::reset) uses it. Default: unsupported.
    async fn delete(&self, key: &str) -> Result<bool> {
        let _ = key;
        Err(Error::unsupported("delete"))
    }

    /// Whether `key` holds a live value. Default: unsupported.
    async fn exists(&self, key: &str) -> Result<bool> {
        let _ = key;
        Err(Error::unsupported("exists"))
    }

    /// Atomically adds `amount` to the integer at `key` (stored as its decimal
    /// ASCII text, like Redis `INCRBY`) and returns the new value. An absent key
    /// counts as 0 and is created with `ttl`; an existing key keeps its expiry.
    /// A value that is not an integer, or an overflow, is an
    /// [`ErrorKind::WrongType`](crate::ErrorKind::WrongType) error.
    /// Default: unsupported.
    async fn increment(&self, key: &str, amount: i64, ttl: Duration) -> Result<i64> {
        let _ = (key, amount, ttl);
        Err(Error::unsupported("increment"))
    }

    /// Removes every key of this store (and only of this store: a store that
    /// shares a server with others removes only its own prefix). Returns how many
    /// keys were removed, when known. Default: unsupported.
    async fn clear(&self) -> Result<u64> {
        Err(Error::unsupported("clear"))
    }

    /// Atomically: if every op's key currently holds its `expected` value, writes
    /// every op's `new_value` with its `ttl` and returns `true`; otherwise writes
    /// nothing and returns `false`. Ops name distinct keys. Atomic with respect to
    /// every other operation on this store, from any task or process that shares it.
    /// Default: unsupported.
    async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
        let _ = ops;
        Err(Error::unsupported("compare_and_swap"))
    }

    /// Releases resources (connections, background tasks). Later calls fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed). Closing twice is fine.
    /// Default: nothing to release, `Ok`.
    async fn close(&self) -> Result<()> {
        Ok(())
    }

    /// Counters and sizes, for operators. Default: stats of a `"custom"`
    /// store that knows none of them.
    async fn stats(&self) -> Result<StorageStats> {
        Ok(StorageStats::new("custom"))
    }
}
