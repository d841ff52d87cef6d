//! Several OS processes deciding against one shared store.
//!
//! A store crate adds a small worker binary (a binary cannot use
//! dev-dependencies, so it is the crate's own):
//! `WORKER STORE ALGORITHM QUOTA KEY TASKS REQUESTS` opens STORE (a file
//! path, a URL), runs TASKS concurrent tasks each making REQUESTS checks of
//! KEY under a rule named after the algorithm, and prints how many were
//! admitted (with `RATELIMIT_WORKER_RESERVE=1`: reserves 1 to 5 units per
//! request, settles at or below the estimate, and prints the units kept).
//! Its tests call [`assert_processes_admit_exactly`] and
//! [`assert_processes_reserve_exactly`] with that binary.

use std::path::Path;
use std::process::{Command, Stdio};

use ratekeeper_core::Algorithm;

/// Worker processes started at once.
pub const PROCESSES: usize = 4;
/// Tasks in each worker.
pub const TASKS: u64 = 16;
/// Checks each task makes.
pub const REQUESTS_PER_TASK: u64 = 4;
/// The limit the workers share: 4 × 16 × 4 = 256 attempts against 100.
pub const LIMIT: u64 = 100;

/// For every algorithm: starts [`PROCESSES`] copies of `worker` at once, all
/// checking one key of the store `store(algorithm)` names, and asserts that
/// together they admitted exactly [`LIMIT`].
pub fn assert_processes_admit_exactly(worker: &Path, store: impl Fn(Algorithm) -> String) {
    for algorithm in Algorithm::ALL {
        let store = store(algorithm);
        let total = run_workers(worker, &store, algorithm, false);
        assert_eq!(total, LIMIT, "{algorithm}");
    }
}

/// For every algorithm: starts [`PROCESSES`] copies of `worker` at once with
/// `RATELIMIT_WORKER_RESERVE=1`, all reserving on one key of the store
/// `store(algorithm)` names and settling at or below their estimates, and
/// asserts that together they kept at most [`LIMIT`] units, and that
/// `left(store, algorithm)`, what a peek of the key (`"one-key"`, under a
/// rule named after the algorithm) says afterwards, is exactly the limit
/// less what they kept.
pub fn assert_processes_reserve_exactly(
    worker: &Path,
    store: impl Fn(Algorithm) -> String,
    left: impl Fn(&str, Algorithm) -> u64,
) {
    for algorithm in Algorithm::ALL {
        let store = store(algorithm);
        let kept = run_workers(worker, &store, algorithm, true);
        assert!(kept <= LIMIT, "{algorithm}: {kept} units kept");
        assert_eq!(left(&store, algorithm), LIMIT - kept, "{algorithm}");
    }
}

/// What a peek of the workers' key says `limiter` has left under
/// `algorithm`'s rule: for [`assert_processes_reserve_exactly`]'s `left`.
pub async fn left(limiter: &ratekeeper_core::Limiter, algorithm: Algorithm) -> u64 {
    let quota = ratekeeper_core::Quota::new(LIMIT, std::time::Duration::from_secs(3_600))
        .expect("the workers' quota");
    let rule = ratekeeper_core::Rule::new(algorithm.as_str(), algorithm, quota)
        .expect("the workers' rule");
    limiter
        .peek(&rule, "one-key")
        .await
        .expect("a peek")
        .remaining()
}

/// Runs [`PROCESSES`] workers at once on `store`; the sum of what they print.
fn run_workers(worker: &Path, store: &str, algorithm: Algorithm, reserve: bool) -> u64 {
    let quota = format!("{LIMIT}/hour");
    let (tasks, requests) = (TASKS.to_string(), REQUESTS_PER_TASK.to_string());
    // Spawn them all before waiting for any: they must run at once.
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            let mut command = Command::new(worker);
            if reserve {
                command.env("RATELIMIT_WORKER_RESERVE", "1");
            }
            command
                .args([
                    store,
                    algorithm.as_str(),
                    &quota,
                    "one-key",
                    &tasks,
                    &requests,
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", worker.display()))
        })
        .collect();
    let mut total = 0;
    for child in children {
        let out = child.wait_with_output().expect("a worker's output");
        assert!(
            out.status.success(),
            "a worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        total += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .expect("a worker prints its count");
    }
    total
}
