//! Test helper for the multi-process tests: one OS process deciding against a
//! shared SQLite file. Not part of the public API.
//!
//! `ratekeeper-sqlite-worker DB ALGORITHM QUOTA KEY TASKS REQUESTS` runs TASKS
//! concurrent tasks, each making REQUESTS checks of KEY under a rule named
//! after the algorithm, and prints how many were admitted. With
//! `RATELIMIT_WORKER_RESERVE=1` each request is a reservation of 1 to 5
//! units settled at or below its estimate, and it prints the units kept.
//! With `RATELIMIT_WORKER_MODE=leases` (a concurrency ALGORITHM) each task
//! runs REQUESTS jobs, each holding a permit for a millisecond (retrying
//! when denied), and prints a line `START END` (µs since the epoch) per
//! job. With `RATELIMIT_WORKER_MODE=hold` it takes TASKS permits, prints
//! `held`, and waits to be killed. With
//! `RATELIMIT_WORKER_STREAM=1` it also prints `+` on a line of its own as soon
//! as each admission has come back (and so has been committed).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ratekeeper_core::{Algorithm, Limiter, Rule};
use ratekeeper_sqlite::SqliteStorage;

fn main() -> ExitCode {
    match run() {
        Ok(admitted) => {
            println!("{admitted}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<u64, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, algorithm, quota, key, tasks, requests] = args.as_slice() else {
        return Err("usage: ratekeeper-sqlite-worker DB ALGORITHM QUOTA KEY TASKS REQUESTS".into());
    };
    let algorithm: Algorithm = algorithm.parse()?;
    let rule = Rule::new(algorithm.as_str(), algorithm, quota.parse()?)?;
    let (tasks, requests): (u64, u64) = (tasks.parse()?, requests.parse()?);
    let reserve = std::env::var_os("RATELIMIT_WORKER_RESERVE").is_some();
    let mode = std::env::var("RATELIMIT_WORKER_MODE").unwrap_or_default();
    let stream = std::env::var_os("RATELIMIT_WORKER_STREAM").is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let limiter = Limiter::new(Arc::new(SqliteStorage::open(db)?));
        if mode == "hold" {
            let mut held = Vec::new();
            for _ in 0..tasks {
                held.push(limiter.acquire(&rule, key).await?);
            }
            println!("held");
            tokio::time::sleep(std::time::Duration::from_secs(3_600)).await;
            drop(held);
        }
        let admitted = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for task in 0..tasks {
            let (limiter, rule, key, admitted) =
                (limiter.clone(), rule.clone(), key.clone(), admitted.clone());
            let mode = mode.clone();
            handles.push(tokio::spawn(async move {
                let mut done = 0;
                while mode == "leases" && done < requests {
                    let permit = limiter.acquire(&rule, &key).await?;
                    if permit.is_allowed() {
                        let start = micros_now();
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        let end = micros_now();
                        permit.release().await?;
                        println!("{start} {end}");
                        done += 1;
                    } else {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                }
                for i in (0..requests).filter(|_| mode != "leases") {
                    if reserve {
                        // 1 to 5 units reserved, settled at or below that.
                        let estimate = 1 + (task + i) % 5;
                        let mut reservation = limiter.reserve(&rule, &key, estimate).await?;
                        if reservation.is_allowed() {
                            let actual = (task * 7 + i) % (estimate + 1);
                            reservation.settle(actual).await?;
                            admitted.fetch_add(actual, Ordering::Relaxed);
                        }
                    } else if limiter.check(&rule, &key).await?.is_allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        if stream {
                            // Stdout is line-buffered: the line leaves now.
                            println!("+");
                        }
                    }
                }
                Ok::<(), ratekeeper_core::Error>(())
            }));
        }
        for handle in handles {
            handle.await??;
        }
        Ok(admitted.load(Ordering::Relaxed))
    })
}

/// The system clock, µs since the epoch (one clock for every process).
fn micros_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}
