//! The kit for crates that extend ratekeeper the way this workspace's own
//! crates do: stores that keep state themselves, store layers, HTTP
//! policies. An application deciding requests with a
//! [`Limiter`](crate::Limiter) needs none of it.
//!
//! - **The decision step**: [`decide_one`] (and [`decide_gcra`], the
//!   same for a GCRA state held as one number), [`decide_all`] (all or nothing
//!   over a request's rules), [`decide_each`] (the same, one decision per
//!   rule), [`adjust`] and [`adjust_one`] (a late charge or a refund), [`check_cost`], and the [`Write`]s they ask a
//!   store to make. Pure functions: a store runs them inside whatever makes
//!   its step atomic (a lock, a transaction, a script).
//! - **Rule state** and its versioned byte encoding: [`RuleState`] (whose
//!   documentation describes the format), [`AlgorithmState`] and one state
//!   per algorithm, [`DecodeError`].
//! - **Naming stored state**: [`state_key`] (`"{rule}:{key}"`) and
//!   [`bounded_key`] (long keys hashed).
//! - **The compare-and-swap default**, for stores with only atomic
//!   read and compare-and-swap: [`decide_with_cas`], [`decide_each_with_cas`],
//!   [`adjust_with_cas`],
//!   and [`corrupt_state`] for the error a value that does not decode
//!   becomes.
//! - **Building blocks** for local tables, logs and background work:
//!   [`shard_index`], [`make_room`], [`LogThrottle`], [`json_string`],
//!   [`spawn_or_warn`].
//!
//! The state encoding is what stores persist: a change to it is a change
//! of format, versioned (see [`RuleState`]).

pub use crate::engine::{
    AdjustInput, DecideFn, Input, StepFn, Write, adjust, adjust_one, check_cost, decide_all,
    decide_each, decide_gcra, decide_one, leaves_no_room,
};
pub use crate::key::{bounded_key, state_key};
pub use crate::state::{
    AlgorithmState, DecodeError, FixedWindowState, GcraState, LeakyBucketState, RuleState,
    SlidingCounterState, SlidingLogState, TokenBucketState,
};
pub use crate::storage::{adjust_with_cas, corrupt_state, decide_each_with_cas, decide_with_cas};
pub use crate::support::{LogThrottle, json_string, make_room, shard_index, spawn_or_warn};
