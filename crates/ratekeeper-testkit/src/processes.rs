//! Several OS processes deciding against one shared store.
//!
//! A store crate adds a small worker binary (a binary cannot use
//! dev-dependencies, so it is the crate's own):
//! `WORKER STORE ALGORITHM QUOTA KEY TASKS REQUESTS` opens STORE (a file
//! path, a URL), runs TASKS concurrent tasks each making REQUESTS checks of
//! KEY under a rule named after the algorithm, and prints how many were
//! admitted (with `RATELIMIT_WORKER_RESERVE=1`: reserves 1 to 5 units per
//! request, settles at or below the estimate, and prints the units kept).
//! Its tests call [`assert_processes_admit_exactly`],
//! [`assert_processes_reserve_exactly`], [`assert_processes_hold_at_most`]
//! and [`assert_killed_holders_places_come_back`] with that binary (the
//! last two need its `RATELIMIT_WORKER_MODE` `leases` and `hold`).

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ratekeeper_core::{Algorithm, Rule};

/// Worker processes started at once.
pub const PROCESSES: usize = 4;
/// Tasks in each worker.
pub const TASKS: u64 = 16;
/// Checks each task makes.
pub const REQUESTS_PER_TASK: u64 = 4;
/// The limit the workers share: 4 × 16 × 4 = 256 attempts against 100.
pub const LIMIT: u64 = 100;

/// Places in flight the workers of [`assert_processes_hold_at_most`] share.
pub const PLACES: u64 = 5;
/// Tasks in each worker there.
pub const LEASE_TASKS: u64 = 32;
/// Jobs each task runs there.
pub const JOBS: u64 = 4;

/// Starts [`PROCESSES`] workers at once on `store`, each of
/// [`LEASE_TASKS`] tasks running [`JOBS`] jobs on one key limited to
/// [`PLACES`] in flight (a permit per job, held a millisecond, retried when
/// denied): every job runs, and the jobs the workers report running at any
/// instant (by the system clock, one for every process) never pass
/// [`PLACES`].
pub fn assert_processes_hold_at_most(worker: &Path, store: &str) {
    let quota = format!("{PLACES}/hour");
    let (tasks, jobs) = (LEASE_TASKS.to_string(), JOBS.to_string());
    let args = [store, "concurrency", &quota, "one-key", &tasks, &jobs];
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(worker)
                .env("RATELIMIT_WORKER_MODE", "leases")
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", worker.display()))
        })
        .collect();
    // (instant, +1 for a start, -1 for an end); at one instant, ends first.
    let mut events: Vec<(u128, i64)> = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("a worker's output");
        assert!(
            out.status.success(),
            "a worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((start, end)) = line.split_once(' ') {
                events.push((start.parse().expect("a start"), 1));
                events.push((end.parse().expect("an end"), -1));
            }
        }
    }
    let expected = PROCESSES as u64 * LEASE_TASKS * JOBS;
    assert_eq!(events.len() as u64, 2 * expected, "every job ran");
    events.sort_unstable();
    let (mut running, mut most) = (0i64, 0i64);
    for (_, change) in events {
        running += change;
        most = most.max(running);
    }
    assert!(most <= PLACES as i64, "{most} jobs ran at once");
    assert!(
        most > 1,
        "the jobs never overlapped: the bound was not tested"
    );
}

/// Starts a worker that takes every place of a concurrency rule (5 in
/// flight, leases of 5 s) on `store` and kills it (`SIGKILL`) once it says
/// so: its places stay taken (`left(rule, key)`, a peek, says 0), then
/// come back by themselves when its leases end.
pub fn assert_killed_holders_places_come_back(
    worker: &Path,
    store: &str,
    left: impl Fn(&Rule, &str) -> u64,
) {
    let rule = Rule::concurrency("concurrency", 5, Duration::from_secs(5)).expect("a rule");
    let mut child = Command::new(worker)
        .env("RATELIMIT_WORKER_MODE", "hold")
        .args([store, "concurrency", "5/5s", "crash-key", "5", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", worker.display()));
    let out = child.stdout.take().expect("the worker's stdout");
    let held = std::io::BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "held");
    assert!(held, "the worker took its places");
    child.kill().expect("kill -9 the worker");
    let _ = child.wait();
    assert_eq!(
        left(&rule, "crash-key"),
        0,
        "a killed holder's places stay taken"
    );
    let back = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        left(&rule, "crash-key") == 5
    });
    assert!(back, "the places came back when their leases ended");
}

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
/// rule named after the algorithm) says afterwards, is the limit less what
/// they kept: exactly on the windows; on the buckets never more, and less
/// by no more than what could have refilled while the reservations were
/// open (a refund in real time gives back only what cannot have refilled,
/// see `Adjustment::Refund`): at most the run's length, once per request,
/// in units of the rule's interval.
pub fn assert_processes_reserve_exactly(
    worker: &Path,
    store: impl Fn(Algorithm) -> String,
    left: impl Fn(&str, Algorithm) -> u64,
) {
    let interval = Duration::from_secs(3_600) / u32::try_from(LIMIT).expect("a small limit");
    let requests = u32::try_from(PROCESSES as u64 * TASKS * REQUESTS_PER_TASK).expect("a count");
    for algorithm in Algorithm::ALL {
        let store = store(algorithm);
        let started = std::time::Instant::now();
        let kept = run_workers(worker, &store, algorithm, true);
        let run = started.elapsed();
        assert!(kept <= LIMIT, "{algorithm}: {kept} units kept");
        let left = left(&store, algorithm);
        if algorithm.uses_burst() {
            let slack = (run * requests).as_micros().div_ceil(interval.as_micros());
            let slack = u64::try_from(slack).unwrap_or(u64::MAX);
            assert!(
                left <= LIMIT - kept,
                "{algorithm}: {left} left, {kept} kept"
            );
            assert!(
                left.saturating_add(slack) >= LIMIT - kept,
                "{algorithm}: {left} left, {kept} kept, slack {slack}"
            );
        } else {
            assert_eq!(left, LIMIT - kept, "{algorithm}");
        }
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
