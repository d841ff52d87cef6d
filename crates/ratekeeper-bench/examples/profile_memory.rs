//! Profiling aid: a long loop of memory-store GCRA decisions, for `perf record`.
//! `cargo run --release -p ratekeeper-bench --example profile_memory -- [KEYS] [governor]`
//! (`SHARDS=n` sets the shard count, `OPS=n` the decisions made per thread:
//! 20 million by default, `THREADS=n` the threads making them, each over
//! the same keys: 1 by default). Prints the wall time per decision and
//! thread, as the memory bench does.
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
    let ops: usize = std::env::var("OPS").map_or(20_000_000, |s| s.parse().unwrap());
    let threads: usize = std::env::var("THREADS").map_or(1, |s| s.parse().unwrap());
    let rounds = ops / n.max(1);
    // Runs `decide` on every key in the shared order, `rounds` times, on
    // each thread; the wall time per decision and thread.
    let timed = |decide: &(dyn Fn(&String) + Sync)| {
        let start = std::time::Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..rounds {
                        for i in &order {
                            decide(&keys[*i]);
                        }
                    }
                });
            }
        });
        start.elapsed().as_nanos() as f64 / (rounds * n) as f64 / threads as f64
    };
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
        let lim = &lim;
        let ns = timed(&|key| {
            let _ = std::hint::black_box(lim.check_key(key));
        });
        println!("governor {ns:.1} ns/decision");
        return;
    }
    let ns = timed(&|key| {
        std::hint::black_box(ready(limiter.check(&rule, key)).unwrap());
    });
    println!("{ns:.1} ns/decision");
}
