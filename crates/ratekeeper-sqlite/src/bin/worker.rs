//! Test helper for the multi-process tests: one OS process deciding against a
//! shared SQLite file. Not part of the public API.
//!
//! `ratekeeper-sqlite-worker DB ALGORITHM QUOTA KEY TASKS REQUESTS` runs TASKS
//! concurrent tasks, each making REQUESTS checks of KEY under a rule named
//! after the algorithm, and prints how many were admitted. With
//! `RATELIMIT_WORKER_RESERVE=1` each request is a reservation of 1 to 5
//! units settled at or below its estimate, and it prints the units kept. With
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
    let stream = std::env::var_os("RATELIMIT_WORKER_STREAM").is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let limiter = Limiter::new(Arc::new(SqliteStorage::open(db)?));
        let admitted = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for task in 0..tasks {
            let (limiter, rule, key, admitted) =
                (limiter.clone(), rule.clone(), key.clone(), admitted.clone());
            handles.push(tokio::spawn(async move {
                for i in 0..requests {
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
