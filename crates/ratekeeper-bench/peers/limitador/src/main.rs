//! The limitador side of `cargo xtask bench redis`: decisions per second
//! through limitador's Redis counters without a cache (`AsyncRedisStorage`) on a
//! Redis the bench started, measured the way `redis-bench` measures ours:
//! `TASKS` tokio tasks on a single-threaded runtime, keys spread over
//! `KEYS` values of one variable, limits that never deny (every call runs
//! the full read-update path), a warm-up, then the measured time.
//!
//! `limitador-peer URL TASKS LIMITS KEYS WARM_UP_MS MEASURE_MS` prints
//! `{"per_s": …, "admitted_per_s": …, "total": …}` (decisions and
//! admissions per second over the measured time, decisions in all). `LIMITS` fixed windows of one
//! namespace apply to every request: 1 000 000 per second, then per
//! minute and per hour at the same rate.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use limitador::AsyncRateLimiter;
use limitador::limit::{Context, Expression, Limit, Predicate};
use limitador::storage::redis::AsyncRedisStorage;

type Error = Box<dyn std::error::Error>;

fn arg(args: &[String], i: usize, name: &str) -> Result<String, Error> {
    args.get(i).cloned().ok_or_else(|| {
        format!("missing {name}: limitador-peer URL TASKS LIMITS KEYS WARM_UP_MS MEASURE_MS").into()
    })
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, 1, "URL")?;
    let tasks: u64 = arg(&args, 2, "TASKS")?.parse()?;
    let limits: u64 = arg(&args, 3, "LIMITS")?.parse()?;
    let keys: u64 = arg(&args, 4, "KEYS")?.parse()?;
    let warm_up = Duration::from_millis(arg(&args, 5, "WARM_UP_MS")?.parse()?);
    let measure = Duration::from_millis(arg(&args, 6, "MEASURE_MS")?.parse()?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let (per_s, admitted_per_s, total) = local.block_on(&runtime, async {
        let storage = AsyncRedisStorage::new(&url).await?;
        let limiter = Rc::new(AsyncRateLimiter::new_with_storage(Box::new(storage)));
        for (i, seconds) in [1_u64, 60, 3_600]
            .into_iter()
            .take(limits as usize)
            .enumerate()
        {
            let mut limit = Limit::new(
                "bench",
                1_000_000 * seconds,
                seconds,
                Vec::<Predicate>::new(),
                [Expression::parse("user")?],
            );
            limit.set_name(format!("limit-{i}"));
            limiter.add_limit(limit);
        }
        let counting = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let admitted = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let limiter = limiter.clone();
                let (counting, stop) = (counting.clone(), stop.clone());
                let (done, admitted, total) = (done.clone(), admitted.clone(), total.clone());
                tokio::task::spawn_local(async move {
                    let namespace = "bench".into();
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        i = i.wrapping_add(7_919);
                        let ctx = Context::from(HashMap::from([(
                            "user".to_owned(),
                            format!("k{}", i % keys),
                        )]));
                        let result = limiter
                            .check_rate_limited_and_update(&namespace, &ctx, 1)
                            .await
                            .map_err(|e| e.to_string())?;
                        total.fetch_add(1, Ordering::Relaxed);
                        if counting.load(Ordering::Relaxed) {
                            done.fetch_add(1, Ordering::Relaxed);
                            if !result.limited {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        tokio::time::sleep(warm_up).await;
        counting.store(true, Ordering::Relaxed);
        let start = Instant::now();
        tokio::time::sleep(measure).await;
        let (n, a) = (
            done.load(Ordering::Relaxed),
            admitted.load(Ordering::Relaxed),
        );
        let elapsed = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.await??;
        }
        let total = total.load(Ordering::Relaxed);
        Ok::<_, Error>((n as f64 / elapsed, a as f64 / elapsed, total))
    })?;
    println!(
        "{}",
        serde_json::json!({ "per_s": per_s, "admitted_per_s": admitted_per_s, "total": total })
    );
    Ok(())
}
