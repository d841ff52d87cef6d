//! Memory-store decisions against governor's keyed limiter, in the same run;
//! and places in flight (a concurrency rule's acquire and release) against
//! a tokio `Semaphore` per key in a sharded map, the way one is written by
//! hand.
//!
//! Rows are `ours/ALGORITHM/KEYS/THREADS` and `governor/gcra/KEYS/THREADS`,
//! `ours/acquire-release/KEYS/THREADS` and
//! `semaphore/acquire-release/KEYS/THREADS`;
//! `cargo xtask bench memory` turns criterion's estimates into
//! `target/bench/memory.json`. Both limiters see the same keys, the same
//! quota, and are prefilled so every key already has state; the measured loop
//! then visits the keys in one shared order that is unrelated to the order
//! they were created and inserted in.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    missing_docs,
    reason = "benchmark code"
)]

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota as GovQuota, RateLimiter};
use ratekeeper_bench::ready;
use ratekeeper_core::{Algorithm, Limiter, Rule};
use ratekeeper_memory::MemoryStorage;

const KEY_COUNTS: [(usize, &str); 3] = [(1, "1"), (100_000, "100k"), (1_000_000, "1M")];
const THREADS: [usize; 2] = [1, 2];
const PER_SECOND: u32 = 1_000;

/// `0..n` in a pseudo-random order fixed by `seed`.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// `n` keys, and the order in which the measured loop visits them.
///
/// The visiting order is independent of the order the keys were created (and
/// first inserted) in: real clients do not come back in the order they first
/// arrived. Walking the keys in insertion order would instead let a store that
/// allocates per key in insertion order run on the hardware prefetcher.
///
/// Criterion calls a row's routine many times with a growing iteration
/// count (here 20 calls, of about 12 000 to 250 000 iterations at 1M keys):
/// if each call started the walk over, every call would visit the same
/// first keys again, which stay in the caches, and a 1M-key row would
/// measure the first few hundred thousand keys, warm. `next` carries the
/// walk on from one call to the next, so each call visits the keys that
/// follow the last one's, and every row walks all its keys in turn.
struct Workload {
    keys: Vec<String>,
    order: Vec<usize>,
    next: AtomicUsize,
}

fn workload(n: usize) -> Arc<Workload> {
    let keys = permutation(n, 0x9E37_79B9_7F4A_7C15)
        .into_iter()
        .map(|i| format!("client-{i:07}"))
        .collect();
    Arc::new(Workload {
        keys,
        order: permutation(n, 0x2545_F491_4F6C_DD1D),
        next: AtomicUsize::new(0),
    })
}

/// Times `iters` decisions per thread on `threads` threads; reports the wall
/// time divided by the thread count, so criterion's per-iteration figure is
/// nanoseconds per decision at the aggregate rate.
fn run_threads(
    iters: u64,
    threads: usize,
    work: &Workload,
    op: impl Fn(&String) + Sync,
) -> Duration {
    let n = work.keys.len().max(1);
    let threads = threads.max(1);
    let steps = iters as usize;
    // Where the walk stands: the threads take its next `steps × threads`
    // keys in turn (thread `t` the `t`-th of every `threads`), and the next
    // call goes on past them.
    let from = work.next.fetch_add(steps * threads, Ordering::Relaxed) % n;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let op = &op;
            s.spawn(move || {
                for i in 0..steps {
                    op(&work.keys[work.order[(from + i * threads + t) % n]]);
                }
            });
        }
    });
    start.elapsed() / threads as u32
}

fn ours(c: &mut Criterion, algorithm: Algorithm) {
    let mut group = c.benchmark_group("memory");
    for (n, label) in KEY_COUNTS {
        let work = workload(n);
        let store = MemoryStorage::builder()
            .max_size(2 * n.max(1))
            .cleanup_interval(None)
            .build();
        let limiter = Limiter::new(Arc::new(store));
        let rule = Rule::new(
            "bench",
            algorithm,
            format!("{PER_SECOND}/s").parse().unwrap(),
        )
        .unwrap();
        for key in &work.keys {
            ready(limiter.check(&rule, key)).unwrap();
        }
        for threads in THREADS {
            group.bench_function(
                format!("ours/{}/{label}/{threads}t", algorithm.as_str()),
                |b| {
                    b.iter_custom(|iters| {
                        run_threads(iters, threads, &work, |key| {
                            black_box(ready(limiter.check(&rule, key)).unwrap());
                        })
                    })
                },
            );
        }
    }
    group.finish();
}

fn governor_keyed(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory");
    for (n, label) in KEY_COUNTS {
        let work = workload(n);
        let quota = GovQuota::per_second(NonZeroU32::new(PER_SECOND).unwrap());
        let limiter = RateLimiter::keyed(quota);
        for key in &work.keys {
            let _ = limiter.check_key(key);
        }
        for threads in THREADS {
            group.bench_function(format!("governor/gcra/{label}/{threads}t"), |b| {
                b.iter_custom(|iters| {
                    run_threads(iters, threads, &work, |key| {
                        let _ = black_box(limiter.check_key(key));
                    })
                })
            });
        }
    }
    group.finish();
}

/// Places per key in the places rows.
const PLACES: u64 = 5;
/// Key counts of the places rows.
const PLACE_KEYS: [(usize, &str); 2] = [(1, "1"), (100_000, "100k")];

/// A semaphore per key, in 16 locked shards: the hand-written peer.
struct Semaphores {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>>,
}

impl Semaphores {
    fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..16).map(|_| Mutex::default()).collect(),
        }
    }

    fn of(&self, key: &str) -> Arc<tokio::sync::Semaphore> {
        let shard = &self.shards[(self.hasher.hash_one(key) % 16) as usize];
        let mut map = shard.lock().unwrap();
        if let Some(s) = map.get(key) {
            return Arc::clone(s);
        }
        let s = Arc::new(tokio::sync::Semaphore::new(PLACES as usize));
        map.insert(key.to_owned(), Arc::clone(&s));
        s
    }
}

/// One place taken and given back per iteration, on each key in turn.
fn places(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory");
    for (n, label) in PLACE_KEYS {
        let work = workload(n);
        let semaphores = Semaphores::new();
        for key in &work.keys {
            drop(semaphores.of(key));
        }
        for threads in THREADS {
            group.bench_function(
                format!("semaphore/acquire-release/{label}/{threads}t"),
                |b| {
                    b.iter_custom(|iters| {
                        run_threads(iters, threads, &work, |key| {
                            let permit = semaphores.of(key).try_acquire_owned().unwrap();
                            drop(black_box(permit));
                        })
                    })
                },
            );
        }
        let store = MemoryStorage::builder()
            .max_size(2 * n.max(1))
            .cleanup_interval(None)
            .build();
        let limiter = Limiter::new(Arc::new(store));
        let rule = Rule::concurrency("bench-places", PLACES, Duration::from_secs(60)).unwrap();
        for key in &work.keys {
            ready(ready(limiter.acquire(&rule, key)).unwrap().release()).unwrap();
        }
        for threads in THREADS {
            group.bench_function(format!("ours/acquire-release/{label}/{threads}t"), |b| {
                b.iter_custom(|iters| {
                    run_threads(iters, threads, &work, |key| {
                        let permit = ready(limiter.acquire(&rule, key)).unwrap();
                        assert!(permit.is_allowed());
                        ready(permit.release()).unwrap();
                    })
                })
            });
        }
    }
    group.finish();
}

fn all(c: &mut Criterion) {
    // The compared pair runs back to back, on the same heap history; the
    // algorithms without a peer follow.
    governor_keyed(c);
    ours(c, Algorithm::Gcra);
    places(c);
    for algorithm in Algorithm::RATES {
        if algorithm != Algorithm::Gcra {
            ours(c, algorithm);
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots();
    targets = all
}
criterion_main!(benches);
