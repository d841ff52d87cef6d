//! SQLite-store decisions against a plain rusqlite loop doing the same
//! read-modify-write, in the same run, on the same file settings.
//!
//! Ours: `Limiter::check` on a `SqliteStorage` in its default mode (the
//! store's writer thread, decisions committed several to a transaction).
//! The peer: one OS thread and one connection per task, each decision one
//! `BEGIN IMMEDIATE` transaction that reads the state, decides with the
//! same core engine and writes it back — what our store does, without our
//! layers. Rows are `ours|peer/ALGORITHM/cTASKS`; `cargo xtask bench
//! sqlite` turns them into decisions per second. Our `+spawn` rows use
//! `Blocking::SpawnBlocking` (tokio's blocking pool, a transaction per
//! decision) and `+in_place` rows `Blocking::InPlace`; both pair with the
//! same peer row.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    missing_docs,
    reason = "benchmark code"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ratekeeper_core::kit;
use ratekeeper_core::kit::RuleState;
use ratekeeper_core::{Algorithm, Clock, Limiter, Rule, SystemClock};
use ratekeeper_sqlite::{Blocking, Location, SqliteStorage};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

const CONCURRENCY: [usize; 2] = [1, 16];
const KEYS: usize = 1_000;
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Gcra, Algorithm::SlidingWindowCounter];

fn fresh_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ratekeeper-bench-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn rule(algorithm: Algorithm) -> Rule {
    Rule::new("bench", algorithm, "1000000/s".parse().unwrap()).unwrap()
}

/// Splits `iters` decisions over `tasks` and returns the wall time.
fn ours(
    runtime: &tokio::runtime::Runtime,
    limiter: &Limiter,
    rule: &Rule,
    iters: u64,
    tasks: usize,
) -> Duration {
    let per_task = (iters as usize).div_ceil(tasks);
    let start = Instant::now();
    runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (limiter, rule) = (limiter.clone(), rule.clone());
                tokio::spawn(async move {
                    for i in 0..per_task {
                        let key = format!("k{}", (t * per_task + i) % KEYS);
                        limiter.check(&rule, &key).await.unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    });
    start.elapsed()
}

fn open_plain(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
        .unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn
}

/// The same work with plain rusqlite: a thread and a connection per task.
fn peer(path: &Path, rule: &Rule, iters: u64, tasks: usize) -> Duration {
    let per_task = (iters as usize).div_ceil(tasks);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..tasks {
            s.spawn(move || {
                let mut conn = open_plain(path);
                for i in 0..per_task {
                    let key = format!("bench:k{}", (t * per_task + i) % KEYS);
                    let now = SystemClock.now();
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
                    let state: Option<Vec<u8>> = tx
                        .prepare_cached("SELECT value FROM ratelimit_kv WHERE key = ?1 AND expires_at > ?2")
                        .unwrap()
                        .query_row(params![key, now.as_micros() as i64], |r| r.get(0))
                        .optional()
                        .unwrap();
                    let state = state.map(|b| RuleState::decode(&b).unwrap());
                    let (_, write) = kit::decide_one(rule, state.as_ref(), now, 1).unwrap();
                    if let Some(w) = write {
                        let expires = now.saturating_add(w.ttl).as_micros() as i64;
                        tx.prepare_cached(
                            "INSERT INTO ratelimit_kv (key, value, expires_at) VALUES (?1, ?2, ?3) \
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                        )
                        .unwrap()
                        .execute(params![key, w.state.encode(), expires])
                        .unwrap();
                    }
                    tx.commit().unwrap();
                }
            });
        }
    });
    start.elapsed()
}

fn all(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("sqlite");
    for algorithm in ALGORITHMS {
        let rule = rule(algorithm);
        for tasks in CONCURRENCY {
            let name = format!("{}/c{tasks}", algorithm.as_str());
            // Both sides on a fresh file with the same schema and settings;
            // ours in every blocking mode (the other modes' rows pair with
            // the same peer).
            for (suffix, blocking) in [
                ("", Blocking::Writer),
                ("+spawn", Blocking::SpawnBlocking),
                ("+in_place", Blocking::InPlace),
            ] {
                let path = fresh_db(&format!("ours-{name}{suffix}").replace(['/', '+'], "-"));
                let store = runtime.block_on(async {
                    SqliteStorage::builder(Location::File(path.clone()))
                        .pool_size(tasks.max(1) as u32)
                        .blocking(blocking)
                        .cleanup_interval(None)
                        .build()
                        .unwrap()
                });
                let limiter = Limiter::new(Arc::new(store));
                group.bench_function(format!("ours/{name}{suffix}"), |b| {
                    b.iter_custom(|iters| ours(&runtime, &limiter, &rule, iters, tasks))
                });
            }
            let path = fresh_db(&format!("peer-{name}").replace('/', "-"));
            drop(SqliteStorage::open(&path).unwrap());
            group.bench_function(format!("peer/{name}"), |b| {
                b.iter_custom(|iters| peer(&path, &rule, iters, tasks))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .without_plots();
    targets = all
}
criterion_main!(benches);
