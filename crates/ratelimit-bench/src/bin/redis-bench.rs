//! `cargo xtask bench redis`: decisions per second through the Redis store,
//! beside `redis-benchmark` running the same decision script with `EVALSHA`,
//! against the same freshly started `redis-server`, in the same run.
//!
//! Rows are `ALGORITHM/cTASKS`. Ours: `TASKS` tokio tasks calling
//! `Limiter::check` on one `RedisStorage` (one multiplexed connection, which
//! pipelines whatever the tasks have in flight), on a single-threaded runtime
//! so that, like `redis-benchmark`, the client uses one core and the server the
//! other. The peer: `redis-benchmark -c TASKS -P 1`, i.e. TASKS connections
//! each waiting for every reply before sending the next request. Both spread
//! requests over 1 000 keys, with a quota that never denies (every call runs
//! the full read-decide-write path). Prints the rows as JSON on stdout.
//!
//! The row `attack/c50` is an attack pattern: 90% of requests come from 100
//! keys already over their limit, 10% from legitimate clients, each under
//! its limit. Ours: the store
//! behind the deny cache (`GuardedStorage::deny_cache`); the peer: the same
//! store without it. Both report decisions/s and Redis round trips (script
//! calls, from `INFO commandstats`) per decision.
//!
//! `REDIS_BENCH_ONLY=gcra/c1` runs one row, and `REDIS_BENCH_SIDE=ours` (or
//! `peer`) one side of it, for profiling.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ratelimit_core::guard::GuardedStorage;
use ratelimit_core::{Algorithm, Limiter, Quota, Rule, Storage};
use ratelimit_redis::RedisStorage;
use ratelimit_testkit::redis::RedisServer;
use serde_json::json;

const KEYS: u64 = 1_000;
const MEASURE: Duration = Duration::from_secs(4);
const WARM_UP: Duration = Duration::from_secs(1);
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Gcra, Algorithm::SlidingWindowCounter];
const CONCURRENCY: [u64; 2] = [1, 50];

fn rule(algorithm: Algorithm) -> Result<Rule, Box<dyn std::error::Error>> {
    Ok(Rule::new(
        "bench",
        algorithm,
        Quota::per_second(1_000_000)?,
    )?)
}

/// Decisions per second through our store with `tasks` concurrent tasks.
fn ours(url: &str, algorithm: Algorithm, tasks: u64) -> Result<f64, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rule = rule(algorithm)?;
    runtime.block_on(async {
        let store = RedisStorage::connect(url).await?;
        let limiter = Limiter::new(Arc::new(store));
        let (per_s, _) = drive(&limiter, &rule, tasks, |_, i, _| format!("k{}", i % KEYS)).await?;
        Ok(per_s)
    })
}

/// Runs `tasks` tasks checking `rule` on the keys `key(task, i, n)` names
/// (`i` steps through a sequence spread over tasks, `n` counts the task's
/// requests) for the warm-up and then the measured time: decisions/s over
/// the measured time, and all decisions made.
async fn drive(
    limiter: &Limiter,
    rule: &Rule,
    tasks: u64,
    key: fn(u64, u64, u64) -> String,
) -> Result<(f64, u64), Box<dyn std::error::Error>> {
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (done, total) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (limiter, rule) = (limiter.clone(), rule.clone());
            let (counting, stop) = (counting.clone(), stop.clone());
            let (done, total) = (done.clone(), total.clone());
            tokio::spawn(async move {
                let (mut i, mut n) = (t, 0_u64);
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_add(7_919);
                    n += 1;
                    limiter.check(&rule, &key(t, i, n)).await?;
                    // Answers that never wait (the deny cache's) would
                    // starve the timer on this one thread: let it run.
                    if n % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                    total.fetch_add(1, Ordering::Relaxed);
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<(), ratelimit_core::Error>(())
            })
        })
        .collect();
    tokio::time::sleep(WARM_UP).await;
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(MEASURE).await;
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await??;
    }
    Ok((
        n as f64 / elapsed.as_secs_f64(),
        total.load(Ordering::Relaxed),
    ))
}

/// Requests per second `redis-benchmark` reports for the same script call.
fn peer(
    port: u16,
    sha: &str,
    algorithm: Algorithm,
    clients: u64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let rule = rule(algorithm)?;
    let q = rule.quota();
    let run = |requests: u64| -> Result<f64, Box<dyn std::error::Error>> {
        let key = format!("peer:bench:{{__rand_int__}}{}", algorithm.state_tag());
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-c",
                &clients.to_string(),
                "-P",
                "1",
                "-n",
                &requests.to_string(),
            ])
            .args(["-r", &KEYS.to_string(), "--csv"])
            .args(["EVALSHA", sha, "1", &key, "", "1", "0"])
            .args([
                algorithm.state_tag().to_string(),
                q.limit().to_string(),
                q.window_micros().to_string(),
                q.burst().to_string(),
                q.emission_interval_us().to_string(),
                "0".to_owned(),
            ])
            .output()
            .map_err(|e| {
                format!(
                    "cannot run redis-benchmark ({e}); install it: apt-get install -y redis-tools"
                )
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|line| line.split(',').nth(1))
            .and_then(|rps| rps.trim_matches('"').parse().ok())
            .ok_or_else(|| {
                format!(
                    "no rate in redis-benchmark's output:\n{text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
                .into()
            })
    };
    // A short run sizes the measured one to about MEASURE.
    let estimate = run(5_000 * clients.min(4))?;
    let requests = (estimate * MEASURE.as_secs_f64()) as u64;
    run(requests.max(10_000))
}

/// Script calls the server has run so far.
fn script_calls(server: &RedisServer) -> u64 {
    let info = server.cmd(&["INFO", "commandstats"]).text();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The attack pattern with or without the deny cache: (decisions/s, round
/// trips per decision).
fn attack(
    server: &RedisServer,
    url: &str,
    cache: bool,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    const TASKS: u64 = 50;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rule = Rule::new(
        "attack",
        Algorithm::SlidingWindowCounter,
        Quota::per_hour(10)?,
    )?;
    runtime.block_on(async {
        let redis: Arc<dyn Storage> = Arc::new(RedisStorage::connect(url).await?);
        redis.clear().await?;
        let store: Arc<dyn Storage> = if cache {
            Arc::new(GuardedStorage::new(redis).deny_cache(100_000))
        } else {
            redis
        };
        let limiter = Limiter::new(store);
        // The attackers are over their limit before the run.
        for a in 0..100 {
            for _ in 0..10 {
                limiter.check(&rule, &format!("attacker-{a}")).await?;
            }
        }
        let calls_before = script_calls(server);
        let (per_s, decisions) = drive(&limiter, &rule, TASKS, |t, i, n| {
            if i % 10 == 0 {
                // A legitimate client: a key of its own, under its limit.
                format!("client-{t}-{n}")
            } else {
                format!("attacker-{}", i % 100)
            }
        })
        .await?;
        let trips = script_calls(server).saturating_sub(calls_before) as f64;
        Ok((per_s, trips / decisions.max(1) as f64))
    })
}

/// Whether `REDIS_BENCH_ONLY` (if set) names this row.
fn selected(row: &str) -> bool {
    std::env::var("REDIS_BENCH_ONLY").map_or(true, |only| only == row)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = RedisServer::start();
    let url = format!("{}?prefix=bench:", server.url());
    let mut rows = Vec::new();
    for algorithm in ALGORITHMS {
        let script = ratelimit_redis::decision_script(algorithm);
        let sha = server.cmd(&["SCRIPT", "LOAD", script]).text();
        for tasks in CONCURRENCY {
            let name = format!("{}/c{tasks}", algorithm.as_str());
            if !selected(&name) {
                continue;
            }
            let side = std::env::var("REDIS_BENCH_SIDE").unwrap_or_default();
            // The compared pair runs back to back on the same server.
            let ours = if side == "peer" {
                f64::NAN
            } else {
                ours(&url, algorithm, tasks)?
            };
            let peer = if side == "ours" {
                f64::NAN
            } else {
                peer(server.port(), &sha, algorithm, tasks)?
            };
            eprintln!("{name}: ours {ours:.0}/s, redis-benchmark {peer:.0}/s");
            rows.push(json!({
                "name": name,
                "ours_per_s": (ours * 10.0).round() / 10.0,
                "peer_per_s": (peer * 10.0).round() / 10.0,
                "ratio": ((ours / peer) * 100.0).round() / 100.0,
            }));
        }
    }
    if selected("attack/c50") {
        let (ours, ours_trips) = attack(&server, &url, true)?;
        let (peer, peer_trips) = attack(&server, &url, false)?;
        eprintln!(
            "attack/c50: with the deny cache {ours:.0}/s ({ours_trips:.3} round trips per decision), \
             without {peer:.0}/s ({peer_trips:.3})"
        );
        rows.push(json!({
            "name": "attack/c50",
            "ours_per_s": (ours * 10.0).round() / 10.0,
            "peer_per_s": (peer * 10.0).round() / 10.0,
            "ratio": ((ours / peer) * 100.0).round() / 100.0,
            "ours_round_trips_per_decision": (ours_trips * 1000.0).round() / 1000.0,
            "peer_round_trips_per_decision": (peer_trips * 1000.0).round() / 1000.0,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}
