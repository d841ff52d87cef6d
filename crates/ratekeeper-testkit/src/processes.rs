//! Several OS processes deciding against one shared store.
//!
//! A store crate adds a small worker binary (a binary cannot use
//! dev-dependencies, so it is the crate's own):
//! `WORKER STORE ALGORITHM QUOTA KEY TASKS REQUESTS` opens STORE (a file
//! path, a URL), runs TASKS concurrent tasks each making REQUESTS checks of
//! KEY under a rule named after the algorithm, and prints how many were
//! admitted. Its test calls [`assert_processes_admit_exactly`] with that
//! binary.

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
        let quota = format!("{LIMIT}/hour");
        let (tasks, requests) = (TASKS.to_string(), REQUESTS_PER_TASK.to_string());
        // Spawn them all before waiting for any: they must run at once.
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                Command::new(worker)
                    .args([
                        store.as_str(),
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
        assert_eq!(total, LIMIT, "{algorithm}");
    }
}
