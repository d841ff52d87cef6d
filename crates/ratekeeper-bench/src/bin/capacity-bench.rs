//! `cargo xtask bench capacity`: what a deployment costs per key and per
//! decision, measured on real stores, for the sizing in `docs/capacity.md`.
//!
//! One row per algorithm, `capacity/ALGORITHM`. For each, on a freshly
//! flushed `redis-server` this binary starts:
//!
//! - **memory per key**: `KEYS` keys, each decided `PER_KEY` times (so a
//!   sliding log or a concurrency rule holds `PER_KEY` entries; the other
//!   algorithms' states have a fixed size), then Redis's `used_memory`
//!   grown per key and the mean `MEMORY USAGE` of `SAMPLE` keys;
//! - **Redis time per decision**: 50 tasks deciding on those keys for
//!   `MEASURE` (one `RedisStorage`, one multiplexed connection, a
//!   single-threaded runtime: the setting of the `bench redis` rows), the
//!   server's CPU time (`INFO cpu`, user and system) per decision, the
//!   engine's own time per call (`FCALL`; `INFO commandstats`), and
//!   decisions per second;
//! - **the memory store**: `MEMORY_KEYS` keys decided `PER_KEY` times each
//!   (a microsecond apart, on a manual clock, so that a log holds
//!   `PER_KEY` entries), the store's own estimate of its bytes per key
//!   (`StorageStats`) and this process's resident memory grown per key, in
//!   a process of its own.
//!
//! Quotas never deny (every decision reads, decides and writes). Prints the
//! rows as JSON on stdout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ratekeeper_core::{Algorithm, Clock, Limiter, ManualClock, Quota, Rule, Storage, SystemClock};
use ratekeeper_memory::MemoryStorage;
use ratekeeper_redis::RedisStorage;
use ratekeeper_testkit::redis::RedisServer;
use serde_json::json;

type Error = Box<dyn std::error::Error>;

/// Keys written to Redis per algorithm.
const KEYS: u64 = 20_000;
/// Keys written to the memory store per algorithm.
const MEMORY_KEYS: u64 = 200_000;
/// Decisions per key when filling: a sliding log's entries.
const PER_KEY: u64 = 10;
/// Keys whose `MEMORY USAGE` is averaged.
const SAMPLE: usize = 200;
/// Tasks of the timed phase.
const TASKS: u64 = 50;
/// How long the timed phase runs.
const MEASURE: Duration = Duration::from_secs(3);

/// The rule measured: 1 000 an hour per key, far from what is asked of a
/// key here, and slow enough that no state ends while it is measured (a
/// bucket's ends once it has refilled); a concurrency rule has 1 000
/// places, each held what it takes for an hour.
fn rule(algorithm: Algorithm) -> Result<Rule, Error> {
    Ok(if algorithm == Algorithm::Concurrency {
        Rule::concurrency("cap", 1_000, Duration::from_secs(3_600))?
    } else {
        Rule::new("cap", algorithm, Quota::per_hour(1_000)?)?
    })
}

/// Decides on each of `KEYS` keys `PER_KEY` times, from `TASKS` tasks.
async fn fill(limiter: &Limiter, rule: &Rule) -> Result<(), Error> {
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (limiter, rule) = (limiter.clone(), rule.clone());
            tokio::spawn(async move {
                for k in (t..KEYS).step_by(TASKS as usize) {
                    for _ in 0..PER_KEY {
                        limiter.check(&rule, &format!("k{k}")).await?;
                    }
                }
                Ok::<(), ratekeeper_core::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Decides on the `KEYS` keys in turn from `TASKS` tasks for `MEASURE`;
/// returns how many decisions were made.
async fn timed(limiter: &Limiter, rule: &Rule) -> Result<u64, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (limiter, rule) = (limiter.clone(), rule.clone());
            let (stop, done) = (stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut k = t;
                while !stop.load(Ordering::Relaxed) {
                    k = (k + 7_919) % KEYS;
                    limiter.check(&rule, &format!("k{k}")).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), ratekeeper_core::Error>(())
            })
        })
        .collect();
    tokio::time::sleep(MEASURE).await;
    stop.store(true, Ordering::Relaxed);
    let decisions = done.load(Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(decisions)
}

/// A field of an `INFO` section, as a number.
fn info(server: &RedisServer, section: &str, field: &str) -> Result<f64, Error> {
    let text = server.cmd(&["INFO", section]).text();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {field} in INFO {section}").into())
}

/// The server's CPU seconds so far, user and system.
fn cpu_seconds(server: &RedisServer) -> Result<f64, Error> {
    Ok(info(server, "cpu", "used_cpu_user")? + info(server, "cpu", "used_cpu_sys")?)
}

/// The mean `MEMORY USAGE` of `SAMPLE` random keys.
fn memory_usage(server: &RedisServer) -> Result<f64, Error> {
    let mut total = 0.0;
    for _ in 0..SAMPLE {
        let key = server.cmd(&["RANDOMKEY"]).text();
        total += server
            .cmd(&["MEMORY", "USAGE", &key, "SAMPLES", "0"])
            .text()
            .parse::<f64>()?;
    }
    Ok(total / SAMPLE as f64)
}

/// This process's resident memory, bytes (`VmRSS`).
fn resident_bytes() -> Result<f64, Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb * 1024.0)
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

/// The Redis figures of one algorithm.
fn redis(server: &RedisServer, algorithm: Algorithm) -> Result<serde_json::Value, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rule = rule(algorithm)?;
    runtime.block_on(async {
        let store = RedisStorage::connect(&server.url()).await?;
        let limiter = Limiter::new(Arc::new(store));
        server.cmd(&["FLUSHALL"]);
        let before = info(server, "memory", "used_memory")?;
        fill(&limiter, &rule).await?;
        let after = info(server, "memory", "used_memory")?;
        let keys = server.cmd(&["DBSIZE"]).text().parse::<f64>()?;
        let usage = memory_usage(server)?;
        server.cmd(&["CONFIG", "RESETSTAT"]);
        let cpu_before = cpu_seconds(server)?;
        let start = Instant::now();
        let decisions = timed(&limiter, &rule).await?;
        let elapsed = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds(server)? - cpu_before;
        let per_decision = cpu * 1e6 / decisions.max(1) as f64;
        Ok(json!({
            "redis_used_memory_per_key": ((after - before) / keys.max(1.0)).round(),
            "redis_memory_usage_bytes": usage.round(),
            "redis_cpu_us_per_decision": (per_decision * 100.0).round() / 100.0,
            "redis_script_us_per_call": (ratekeeper_bench::script_us_per_call(server) * 100.0).round() / 100.0,
            "redis_decisions_per_s": (decisions as f64 / elapsed).round(),
        }))
    })
}

/// The memory store's figures of one algorithm: its estimate and the
/// resident memory grown, per key.
fn memory(algorithm: Algorithm) -> Result<(f64, f64), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rule = rule(algorithm)?;
    runtime.block_on(async {
        let before = resident_bytes()?;
        let store = MemoryStorage::builder()
            .max_size(2 * MEMORY_KEYS as usize)
            .cleanup_interval(None)
            .build();
        // A microsecond between decisions: the memory store decides on the
        // limiter's clock, and a sliding log merges the units of one instant
        // into one entry.
        let clock = ManualClock::new(SystemClock.now());
        let limiter = Limiter::builder(Arc::new(store.clone()))
            .clock(clock.clone())
            .build();
        for k in 0..MEMORY_KEYS {
            let key = format!("k{k}");
            for _ in 0..PER_KEY {
                limiter.check(&rule, &key).await?;
                clock.advance(Duration::from_micros(1));
            }
        }
        let grown = resident_bytes()? - before;
        let stats = store.stats().await?;
        let keys = stats.keys.unwrap_or(MEMORY_KEYS).max(1) as f64;
        let estimate = stats.approx_bytes.unwrap_or(0) as f64 / keys;
        Ok((estimate, grown / keys))
    })
}

/// [`memory`] in a process of its own, so that what an algorithm measured
/// before left in this one's heap is not counted as reused.
fn memory_apart(algorithm: Algorithm) -> Result<(f64, f64), Error> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--memory-store", algorithm.as_str()])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("the memory-store measurement failed ({})", out.status).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut numbers = text.split_whitespace().map(str::parse::<f64>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(estimate)), Some(Ok(resident))) => Ok((estimate, resident)),
        _ => Err(format!("the memory-store measurement printed {text:?}").into()),
    }
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, name] = args.as_slice()
        && flag == "--memory-store"
    {
        let algorithm: Algorithm = name.parse()?;
        let (estimate, resident) = memory(algorithm)?;
        println!("{estimate} {resident}");
        return Ok(());
    }
    let only = std::env::var("CAPACITY_BENCH_ONLY").ok();
    let server = RedisServer::start();
    let mut rows = Vec::new();
    for algorithm in Algorithm::ALL {
        let name = format!("capacity/{}", algorithm.as_str());
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let (estimate, resident) = memory_apart(algorithm)?;
        let mut row = redis(&server, algorithm)?;
        if let Some(fields) = row.as_object_mut() {
            fields.insert("name".to_owned(), json!(name));
            fields.insert("entries_per_key".to_owned(), json!(PER_KEY));
            fields.insert(
                "memory_store_bytes_per_key".to_owned(),
                json!(estimate.round()),
            );
            fields.insert(
                "memory_store_resident_per_key".to_owned(),
                json!(resident.round()),
            );
        }
        eprintln!("{row}");
        rows.push(row);
    }
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}
