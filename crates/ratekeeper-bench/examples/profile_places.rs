//! Profiling aid: a long loop of places taken and given back on one key of
//! the memory store (`Limiter::acquire`, `Permit::release`), for `perf record`.
//! `cargo run --release -p ratekeeper-bench --example profile_places -- [ITERATIONS]`
#![allow(clippy::unwrap_used, missing_docs)]
use std::sync::Arc;
use std::time::Duration;

use ratekeeper_core::{Limiter, Rule};
use ratekeeper_memory::MemoryStorage;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(5_000_000, |s| s.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limiter = Limiter::new(Arc::new(MemoryStorage::new()));
    let rule = Rule::concurrency("places", 5, Duration::from_secs(60)).unwrap();
    runtime.block_on(async {
        for _ in 0..n {
            let permit = limiter.acquire(&rule, "key").await.unwrap();
            assert!(permit.is_allowed());
            permit.release().await.unwrap();
        }
    });
}
