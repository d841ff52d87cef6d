//! Test support for ratekeeper stores: one conformance suite that any
//! [`Storage`] runs, reference models of every algorithm, and a manual clock.
//!
//! Add this crate (and tokio with `macros` and `rt-multi-thread`) as
//! dev-dependencies, then run the whole suite against your store
//! ([`decision_conformance_tests!`] instead if your store writes only the
//! decision step):
//!
//! ```text
//! use std::sync::Arc;
//! use ratekeeper_core::Storage;
//! use ratekeeper_testkit::ManualClock;
//!
//! ratekeeper_testkit::storage_conformance_tests!(|clock: ManualClock| -> Arc<dyn Storage> {
//!     Arc::new(my_crate::MyStore::with_clock(clock))
//! });
//! ```
//!
//! Each case gets a fresh, empty store whose expiry follows the given
//! [`ManualClock`]; the limiter uses the same clock, so every decision is
//! reproducible. A store whose keys expire in real time (a server) implements
//! [`Harness`] by hand and says so with [`Expiry::RealTime`]; the feature
//! `redis` adds [`redis`], which starts real `redis-server` topologies. Failures panic with what was expected and what came back:
//! this crate is for tests only.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test support: a failed expectation is a panic"
)]

mod clock;
pub mod conformance;
#[cfg(feature = "http")]
pub mod http;
pub mod model;
pub mod processes;
#[cfg(feature = "redis")]
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use ratekeeper_core::Storage;

pub use clock::WaitingClock;
pub use ratekeeper_core::{ManualClock, Timestamp};

/// How the keys of a [`Harness`]'s stores expire, as far as the conformance
/// suite needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Keys expire when the [`ManualClock`] given to [`Harness::store`] passes
    /// their TTL (in-process stores). The expiry cases move the clock only.
    FollowsClock,
    /// Keys expire on the store's own clock, in real time (a server such as
    /// Redis). The expiry cases wait for real time to pass, with margins.
    /// [`Harness::store`]'s stores still decide at the manual clock's time and
    /// must keep rule state at least as long as that clock says it matters,
    /// even when real time runs ahead of it (the Redis store's client time
    /// with a skew allowance does this). [`Harness::real_time_store`] must
    /// return a store that decides on its own clock, for the case that waits
    /// for rule state to expire.
    RealTime,
}

/// Makes fresh stores for the conformance suite.
///
/// Implemented for any `Fn(ManualClock) -> Arc<dyn Storage>` (whose keys
/// follow the clock); implement it by hand when creating a store is async or
/// its keys expire in real time (a network store).
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A new, empty store deciding at the time the limiter passes (`clock`'s),
    /// whose keys expire as [`expiry`](Self::expiry) says.
    async fn store(&self, clock: ManualClock) -> Arc<dyn Storage>;

    /// How the stores' keys expire (default [`Expiry::FollowsClock`]).
    fn expiry(&self) -> Expiry {
        Expiry::FollowsClock
    }

    /// For [`Expiry::RealTime`] harnesses: a new, empty store that decides on
    /// its own real clock, so its rule states expire in real time.
    async fn real_time_store(&self) -> Option<Arc<dyn Storage>> {
        None
    }
}

#[async_trait]
impl<F> Harness for F
where
    F: Fn(ManualClock) -> Arc<dyn Storage> + Send + Sync + 'static,
{
    async fn store(&self, clock: ManualClock) -> Arc<dyn Storage> {
        self(clock)
    }
}

/// Runs the whole conformance suite against the store a [`Harness`] makes
/// (the decision step and every key-value operation): one `#[test]` per
/// case. Needs tokio (`macros`, `rt-multi-thread`) in the calling crate's
/// dev-dependencies. `storage_conformance_tests!(harness, model_cases = N)`
/// runs N random sequences per algorithm instead of the default 1 000 (for
/// stores where each case is expensive, such as one database file per case).
/// Every built-in store runs it.
#[macro_export]
macro_rules! storage_conformance_tests {
    ($harness:expr) => {
        $crate::storage_conformance_tests!($harness, model_cases = 0);
    };
    ($harness:expr, model_cases = $cases:expr) => {
        $crate::decision_conformance_tests!($harness, model_cases = $cases);
        $crate::decision_conformance_tests!(@async
            kv_get_set_delete_exists, kv_values_expire, kv_increment, kv_clear, kv_close, kv_stats,
            cas_semantics, reset_forgets_a_key, state_keys_expire, long_keys_are_bounded,
            corrupt_state_is_an_error, arbitrary_state_bytes_are_answered_or_corrupt
        );
    };
}

/// Runs the conformance cases of the decision step against the store a
/// [`Harness`] makes: for a store that writes only the atomic steps
/// ([`Storage::decide`](ratekeeper_core::Storage::decide), `decide_each`
/// and `adjust`) and leaves the key-value operations unsupported. The cases go through a
/// [`Limiter`](ratekeeper_core::Limiter) and never call another method of
/// the store (the reference-model cases read GCRA's stored state when the
/// store offers `get`). Same forms and needs as
/// [`storage_conformance_tests!`], which includes these cases.
#[macro_export]
macro_rules! decision_conformance_tests {
    ($harness:expr) => {
        $crate::decision_conformance_tests!($harness, model_cases = 0);
    };
    ($harness:expr, model_cases = $cases:expr) => {
        fn __conformance_harness() -> ::std::sync::Arc<dyn $crate::Harness> {
            ::std::sync::Arc::new($harness)
        }
        /// Model cases per algorithm; 0 means the default (or `RATELIMIT_MODEL_CASES`).
        const __MODEL_CASES: u32 = $cases;
        $crate::decision_conformance_tests!(@async
            peek_does_not_consume, penalty_blocks_then_releases, multi_quota_all_or_nothing,
            per_rule_costs_and_decisions, cost_above_capacity_is_an_error, until_ready_waits,
            concurrent_exactness_every_algorithm, concurrent_multi_rule_exactness,
            charges_and_refunds, interleaved_refunds_give_back_once,
            concurrent_reservations_are_exact, calendar_windows,
            concurrency_leases, concurrent_leases_are_exact, waiting_in_line,
            waiting_for_a_place
        );
        $crate::decision_conformance_tests!(@model
            model_fixed_window => FixedWindow,
            model_sliding_window_log => SlidingWindowLog,
            model_sliding_window_counter => SlidingWindowCounter,
            model_token_bucket => TokenBucket,
            model_leaky_bucket => LeakyBucket,
            model_gcra => Gcra,
            model_concurrency => Concurrency
        );
    };
    (@async $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::conformance::$case(__conformance_harness()).await;
            }
        )*
    };
    (@model $($case:ident => $algorithm:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::matches_model(
                    __conformance_harness(),
                    ::ratekeeper_core::Algorithm::$algorithm,
                    __MODEL_CASES,
                );
            }
        )*
    };
}
