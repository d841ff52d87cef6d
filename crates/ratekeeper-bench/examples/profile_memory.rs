//! Profiling aid: a long loop of memory-store GCRA decisions, for `perf record`.
//! `cargo run --release -p ratekeeper-bench --example profile_memory -- [KEYS] [governor]`
//! (`SHARDS=n` sets the shard count).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]
use std::sync::Arc;

use ratekeeper_bench::ready;
use ratekeeper_core::{Algorithm, Limiter, Rule};
use ratekeeper_memory::MemoryStorage;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |s| s.parse().unwrap());
    let keys: Vec<String> = (0..n)
        .map(|i| format!("client-{:07}", (i * 7919) % n))
        .collect();
    // The measured walk visits keys in an order unrelated to the order they
    // were inserted (and allocated) in, as real traffic does.
    let mut order: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let shards: usize = std::env::var("SHARDS").map_or(64, |s| s.parse().unwrap());
    let store = MemoryStorage::builder()
        .max_size(2 * n)
        .shards(shards)
        .cleanup_interval(None)
        .build();
    let limiter = Limiter::new(Arc::new(store));
    let rule = Rule::new("bench", Algorithm::Gcra, "1000/s".parse().unwrap()).unwrap();
    for k in &keys {
        ready(limiter.check(&rule, k)).unwrap();
    }
    if std::env::args().nth(2).as_deref() == Some("governor") {
        let lim = governor::RateLimiter::keyed(governor::Quota::per_second(
            std::num::NonZeroU32::new(1000).unwrap(),
        ));
        for k in &keys {
            let _ = lim.check_key(k);
        }
        let start = std::time::Instant::now();
        let rounds = 20_000_000 / n.max(1);
        for _ in 0..rounds {
            for i in 0..n {
                let _ = std::hint::black_box(lim.check_key(&keys[order[i]]));
            }
        }
        println!(
            "governor {:.1} ns/decision",
            start.elapsed().as_nanos() as f64 / (rounds * n) as f64
        );
        return;
    }
    let start = std::time::Instant::now();
    let rounds = 20_000_000 / n.max(1);
    for _ in 0..rounds {
        for i in 0..n {
            std::hint::black_box(ready(limiter.check(&rule, &keys[order[i]])).unwrap());
        }
    }
    let ops = (rounds * n) as f64;
    println!("{:.1} ns/decision", start.elapsed().as_nanos() as f64 / ops);
}
