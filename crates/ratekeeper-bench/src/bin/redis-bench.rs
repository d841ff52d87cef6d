//! `cargo xtask bench redis`: decisions per second through the Redis store,
//! beside `redis-benchmark` calling the same decision function (`FCALL`, the
//! function the store calls), against the same freshly started
//! `redis-server`, in the same run.
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
//! behind the deny cache layer (`DenyCache`); the peer: the same
//! store without it. Both report decisions/s and Redis round trips (script
//! calls, from `INFO commandstats`) per decision.
//!
//! The row `approximate/c50` is 50 tasks on 10 hot keys that never reach
//! their limit: ours in approximate mode (`ApproximateStorage`, flush every
//! 50 ms), the peer the same store exact; decisions/s and round trips per
//! decision. The row `approximate/over-admission` is 4 instances (4
//! connections, as 4 processes would have), 12 tasks each, on one key of a
//! limit of 5 000/s: admissions per second exact, in approximate mode, and
//! in approximate mode with `with_instances(4)`, and how many more than exact
//! each admitted, in percent.
//!
//! The row `sliding_window_log/denied-full/c50` is the cost of a denial on
//! a full sliding log: 50 tasks asking one key whose log holds 10 000
//! entries (every request denied), against 50 tasks asking fresh keys (an
//! empty log, every request admitted), same store, same run. Besides
//! decisions/s it reports the Redis time per script call (`INFO
//! commandstats`); the goal is a denial costing at most twice a fresh key.
//!
//! The row `places/c50` is places in flight: 50 tasks each taking a place
//! on a concurrency rule (`Limiter::acquire`) and giving it back
//! (`Permit::release`), two script calls per pair, against the same 50
//! tasks making GCRA decisions (one call each) on the same server; pairs
//! per second against decisions per second.
//!
//! The rows `fixed_window/c1/vs-limitador`, `fixed_window/c50/vs-limitador`
//! and `three-limits/c50/vs-limitador` set us beside limitador, the
//! rate-limit library behind Kuadrant: the same requests through its Redis
//! counters without a cache (`AsyncRateLimiter` on `AsyncRedisStorage`), on the same
//! server, by `limitador-peer` (`crates/ratekeeper-bench/peers/limitador`,
//! built by `cargo xtask bench redis`, which passes its path in
//! `LIMITADOR_PEER`; without it those rows are left out, saying so). Every
//! request counts against one fixed window (1 000 000 a second) or three (a
//! second, a minute, an hour, at the same rate), keys over 1 000 values,
//! never denied. Both also report script calls per decision.
//!
//! `REDIS_BENCH_ONLY=gcra/c1` runs one row, and `REDIS_BENCH_SIDE=ours` (or
//! `peer`) one side of it, for profiling.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ratekeeper_core::{Algorithm, Clock, Limiter, Quota, Rule, Storage};
use ratekeeper_layers::approximate::{Approximate, ApproximateStorage};
use ratekeeper_layers::{DenyCache, DenyCacheStorage};
use ratekeeper_redis::RedisStorage;
use ratekeeper_testkit::redis::RedisServer;
use serde_json::json;

const KEYS: u64 = 1_000;
const MEASURE: Duration = Duration::from_secs(4);
const WARM_UP: Duration = Duration::from_secs(1);
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Gcra, Algorithm::SlidingWindowCounter];
const CONCURRENCY: [u64; 2] = [1, 50];
/// The flush period of the approximate-mode rows.
const HOT_FLUSH: Duration = Duration::from_millis(50);
/// The limit of the over-admission row, per second.
const HOT_LIMIT: u64 = 5_000;

fn rule(algorithm: Algorithm) -> Result<Rule, Box<dyn std::error::Error>> {
    Ok(Rule::new(
        "bench",
        algorithm,
        Quota::per_second(1_000_000)?,
    )?)
}

/// Decisions per second through our store with `tasks` concurrent tasks.
fn ours(url: &str, algorithm: Algorithm, tasks: u64) -> Result<f64, Box<dyn std::error::Error>> {
    Ok(ours_rules(url, &[rule(algorithm)?], tasks)?.per_s)
}

/// [`ours`], each request checked against every one of `rules` at once
/// (`Limiter::check_rules`).
fn ours_rules(url: &str, rules: &[Rule], tasks: u64) -> Result<Driven, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = RedisStorage::connect(url).await?;
        let limiter = Limiter::new(Arc::new(store));
        let key: fn(u64, u64, u64) -> String = |_, i, _| format!("k{}", i % KEYS);
        drive_op(&[limiter], rules, tasks, key, Op::Check).await
    })
}

/// The fixed windows of the rows against limitador: 1 000 000 a second,
/// then a minute and an hour at the same rate, the first `n` of them (the
/// same limits `limitador-peer` sets).
fn fixed_windows(n: usize) -> Result<Vec<Rule>, Box<dyn std::error::Error>> {
    [1_u64, 60, 3_600]
        .into_iter()
        .take(n)
        .map(|seconds| {
            let quota = Quota::new(1_000_000 * seconds, Duration::from_secs(seconds))?;
            Ok(Rule::new(
                &format!("fw-{seconds}s"),
                Algorithm::FixedWindow,
                quota,
            )?)
        })
        .collect()
}

/// What `limitador-peer` measured: decisions per second and decisions
/// made (warm-up included), with `tasks` tasks and `limits` fixed windows
/// per request; `None` when `LIMITADOR_PEER` is not set.
fn limitador(
    redis_url: &str,
    tasks: u64,
    limits: usize,
) -> Result<Option<(f64, f64)>, Box<dyn std::error::Error>> {
    let Some(binary) = std::env::var_os("LIMITADOR_PEER") else {
        return Ok(None);
    };
    let out = Command::new(&binary)
        .args([
            redis_url.to_owned(),
            tasks.to_string(),
            limits.to_string(),
            KEYS.to_string(),
            WARM_UP.as_millis().to_string(),
            MEASURE.as_millis().to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!("limitador-peer failed ({})", out.status).into());
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let field = |name: &str| {
        answer
            .get(name)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| format!("limitador-peer answered no {name:?}: {answer}"))
    };
    Ok(Some((field("per_s")?, field("total")?)))
}

/// What each task does per iteration.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// One decision (`Limiter::check`).
    Check,
    /// A place taken and given back (`Limiter::acquire`, `Permit::release`).
    AcquireRelease,
}

/// What the `places` row measured of one side: operations (pairs, or
/// decisions) per second, and the engine's time per operation on the
/// server (µs, `INFO commandstats`: two calls per pair).
#[derive(Debug, Clone, Copy)]
struct Side {
    per_s: f64,
    engine_us: f64,
}

/// Places in flight against decisions, with `tasks` tasks on one store
/// each: `(acquire+release pairs, GCRA decisions)`.
fn places(
    server: &RedisServer,
    url: &str,
    tasks: u64,
) -> Result<(Side, Side), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let places = Rule::concurrency("bench-places", 10_000, Duration::from_secs(60))?;
    let decisions = rule(Algorithm::Gcra)?;
    runtime.block_on(async {
        let key: fn(u64, u64, u64) -> String = |_, i, _| format!("k{}", i % KEYS);
        let store = RedisStorage::connect(url).await?;
        let limiter = Limiter::new(Arc::new(store));
        // The engine's time per operation, warm-up included.
        let engine_us = |ops: u64| {
            let (_, usec) = server.script_totals();
            usec as f64 / ops.max(1) as f64
        };
        server.cmd(&["CONFIG", "RESETSTAT"]);
        let ours = drive_op(
            std::slice::from_ref(&limiter),
            std::slice::from_ref(&places),
            tasks,
            key,
            Op::AcquireRelease,
        )
        .await?;
        let ours = Side {
            per_s: ours.per_s,
            engine_us: engine_us(ours.total),
        };
        server.cmd(&["CONFIG", "RESETSTAT"]);
        let peer = drive(&[limiter], &decisions, tasks, key).await?;
        let peer = Side {
            per_s: peer.per_s,
            engine_us: engine_us(peer.total),
        };
        Ok((ours, peer))
    })
}

/// What [`drive`] measured.
#[derive(Debug, Clone, Copy, Default)]
struct Driven {
    /// Decisions per second over the measured time.
    per_s: f64,
    /// Admissions per second over the measured time.
    admitted_per_s: f64,
    /// Decisions made, warm-up included.
    total: u64,
}

/// Runs `tasks` tasks on each of `limiters`, checking `rule` on the keys
/// `key(task, i, n)` names (`i` steps through a sequence spread over tasks,
/// `n` counts the task's requests), for the warm-up and then the measured
/// time.
async fn drive(
    limiters: &[Limiter],
    rule: &Rule,
    tasks: u64,
    key: fn(u64, u64, u64) -> String,
) -> Result<Driven, Box<dyn std::error::Error>> {
    drive_op(limiters, std::slice::from_ref(rule), tasks, key, Op::Check).await
}

/// [`drive`], each iteration doing `op` on every one of `rules` at once.
async fn drive_op(
    limiters: &[Limiter],
    rules: &[Rule],
    tasks: u64,
    key: fn(u64, u64, u64) -> String,
    op: Op,
) -> Result<Driven, Box<dyn std::error::Error>> {
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let admitted = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = limiters
        .iter()
        .flat_map(|limiter| (0..tasks).map(move |t| (limiter.clone(), t)))
        .map(|(limiter, t)| {
            let rules = rules.to_vec();
            let (counting, stop) = (counting.clone(), stop.clone());
            let (done, admitted, total) = (done.clone(), admitted.clone(), total.clone());
            tokio::spawn(async move {
                let (mut i, mut n) = (t, 0_u64);
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_add(7_919);
                    n += 1;
                    let key = key(t, i, n);
                    let allowed = match op {
                        Op::Check => limiter.check_rules(&rules, &key, 1).await?.is_allowed(),
                        Op::AcquireRelease => {
                            let checks: Vec<_> =
                                rules.iter().map(|r| (r, key.as_str(), 1)).collect();
                            let permit = limiter.acquire_each(&checks).await?;
                            let allowed = permit.is_allowed();
                            permit.release().await?;
                            allowed
                        }
                    };
                    // Answers that never wait (the deny cache's, local
                    // counting's) would starve the timer on this one
                    // thread: let it run.
                    if n % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                    total.fetch_add(1, Ordering::Relaxed);
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                        if allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok::<(), ratekeeper_core::Error>(())
            })
        })
        .collect();
    tokio::time::sleep(WARM_UP).await;
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(MEASURE).await;
    let (n, a) = (
        done.load(Ordering::Relaxed),
        admitted.load(Ordering::Relaxed),
    );
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await??;
    }
    Ok(Driven {
        per_s: n as f64 / elapsed,
        admitted_per_s: a as f64 / elapsed,
        total: total.load(Ordering::Relaxed),
    })
}

/// Requests per second `redis-benchmark` reports for the same call of the
/// decision function.
fn peer(
    port: u16,
    function: &str,
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
            .args(["FCALL", function, "1", &key, "", "1", "0"])
            .args([
                algorithm.state_tag().to_string(),
                q.limit().to_string(),
                q.window_micros().to_string(),
                q.burst().to_string(),
                q.emission_interval_us().to_string(),
                // No penalty; a cost of 1.
                "0".to_owned(),
                "1".to_owned(),
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

/// A denial on a sliding log of 10 000 entries, or (`full` false) a
/// decision on a fresh key: (decisions/s, Redis µs per call).
fn sliding_log(
    server: &RedisServer,
    url: &str,
    full: bool,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    use ratekeeper_core::kit::{AlgorithmState, RuleState, SlidingLogState};
    const ENTRIES: u64 = 10_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rule = Rule::new(
        "log",
        Algorithm::SlidingWindowLog,
        Quota::per_hour(ENTRIES)?,
    )?;
    runtime.block_on(async {
        let store = RedisStorage::connect(url).await?;
        store.clear().await?;
        let limiter = Limiter::new(Arc::new(store.clone()));
        // The log is full: one entry a millisecond over the last 10 s.
        let now = ratekeeper_core::SystemClock.now().as_micros();
        let entries = (0..ENTRIES)
            .map(|i| (now - 10_000_000 + i * 1_000, 1))
            .collect();
        let state = RuleState {
            blocked_until: 0,
            algorithm: AlgorithmState::SlidingWindowLog(SlidingLogState { entries }),
        };
        store
            .set(
                &limiter.state_key(&rule, "full"),
                &state.encode(),
                Duration::from_secs(3_600),
            )
            .await?;
        assert!(
            !limiter.check(&rule, "full").await?.is_allowed(),
            "the log is full"
        );
        server.cmd(&["CONFIG", "RESETSTAT"]);
        let key: fn(u64, u64, u64) -> String = if full {
            |_, _, _| "full".to_owned()
        } else {
            |t, _, n| format!("fresh-{t}-{n}")
        };
        let driven = drive(&[limiter], &rule, 50, key).await?;
        Ok((driven.per_s, ratekeeper_bench::script_us_per_call(server)))
    })
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
            Arc::new(DenyCacheStorage::new(redis, DenyCache::new(100_000)))
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
        let calls_before = server.script_calls();
        let driven = drive(&[limiter], &rule, TASKS, |t, i, n| {
            if i % 10 == 0 {
                // A legitimate client: a key of its own, under its limit.
                format!("client-{t}-{n}")
            } else {
                format!("attacker-{}", i % 100)
            }
        })
        .await?;
        let trips = server.script_calls().saturating_sub(calls_before) as f64;
        Ok((driven.per_s, trips / driven.total.max(1) as f64))
    })
}

/// How the hot-key rows run the store: exact, or in approximate mode
/// shared by this many instances.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Exact,
    Approximate(u64),
}

/// `instances` limiters, each on its own connection (as separate processes
/// would be), in `mode`, checking `rule` from 10 tasks each on `key`: what
/// they measured and the round trips per decision.
fn hot(
    server: &RedisServer,
    url: &str,
    mode: Mode,
    instances: usize,
    rule: &Rule,
    key: fn(u64, u64, u64) -> String,
) -> Result<(Driven, f64), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut stores = Vec::new();
        for _ in 0..instances {
            let redis: Arc<dyn Storage> = Arc::new(RedisStorage::connect(url).await?);
            stores.push(match mode {
                Mode::Exact => redis,
                Mode::Approximate(n) => Arc::new(ApproximateStorage::new(
                    redis,
                    Approximate::new(HOT_FLUSH).with_instances(n),
                )),
            });
        }
        if let Some(first) = stores.first() {
            first.clear().await?;
        }
        let limiters: Vec<Limiter> = stores.iter().cloned().map(Limiter::new).collect();
        let calls_before = server.script_calls();
        let driven = drive(&limiters, rule, 50 / instances as u64, key).await?;
        let trips = server.script_calls().saturating_sub(calls_before) as f64;
        for s in &stores {
            s.close().await?;
        }
        Ok((driven, trips / driven.total.max(1) as f64))
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
    // The peer's calls find the library whichever rows run.
    server.cmd(&["FUNCTION", "LOAD", ratekeeper_redis::decision_library()]);
    for algorithm in ALGORITHMS {
        let function = ratekeeper_redis::decision_function(algorithm);
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
                peer(server.port(), function, algorithm, tasks)?
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
    if selected("places/c50") {
        let (ours, peer) = places(&server, &url, 50)?;
        eprintln!(
            "places/c50: {:.0} acquire+release pairs/s ({:.1} engine µs/pair), \
             {:.0} GCRA decisions/s ({:.1} engine µs/decision)",
            ours.per_s, ours.engine_us, peer.per_s, peer.engine_us
        );
        rows.push(json!({
            "name": "places/c50",
            "ours_per_s": (ours.per_s * 10.0).round() / 10.0,
            "peer_per_s": (peer.per_s * 10.0).round() / 10.0,
            "ratio": ((ours.per_s / peer.per_s) * 100.0).round() / 100.0,
            "ours_engine_us": (ours.engine_us * 100.0).round() / 100.0,
            "peer_engine_us": (peer.engine_us * 100.0).round() / 100.0,
        }));
    }
    for (name, tasks, limits) in [
        ("fixed_window/c1/vs-limitador", 1, 1),
        ("fixed_window/c50/vs-limitador", 50, 1),
        ("three-limits/c50/vs-limitador", 50, 3),
    ] {
        if !selected(name) {
            continue;
        }
        // The peer first: without it the row is left out, and ours not run.
        let calls_before = server.script_calls();
        let Some((peer, peer_total)) = limitador(&server.url(), tasks, limits)? else {
            eprintln!(
                "{name}: left out: LIMITADOR_PEER is not set (`cargo xtask bench redis` sets it)"
            );
            continue;
        };
        let peer_calls = server.script_calls().saturating_sub(calls_before) as f64;
        let calls_before = server.script_calls();
        let ours = ours_rules(&url, &fixed_windows(limits)?, tasks)?;
        let ours_calls = server.script_calls().saturating_sub(calls_before) as f64;
        let (ours_calls, peer_calls) = (
            ours_calls / ours.total.max(1) as f64,
            peer_calls / peer_total.max(1.0),
        );
        eprintln!(
            "{name}: ours {:.0}/s ({ours_calls:.2} script calls per decision), limitador {peer:.0}/s ({peer_calls:.2})",
            ours.per_s
        );
        rows.push(json!({
            "name": name,
            "limits": limits,
            "ours_per_s": (ours.per_s * 10.0).round() / 10.0,
            "peer_per_s": (peer * 10.0).round() / 10.0,
            "ratio": ((ours.per_s / peer) * 100.0).round() / 100.0,
            "ours_script_calls_per_decision": (ours_calls * 100.0).round() / 100.0,
            "peer_script_calls_per_decision": (peer_calls * 100.0).round() / 100.0,
        }));
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
    if selected("sliding_window_log/denied-full/c50") {
        let (ours, ours_usec) = sliding_log(&server, &url, true)?;
        let (peer, peer_usec) = sliding_log(&server, &url, false)?;
        eprintln!(
            "sliding_window_log/denied-full/c50: denials on a 10 000-entry log {ours:.0}/s ({ours_usec:.1} µs of Redis \
             per call), fresh keys {peer:.0}/s ({peer_usec:.1} µs)"
        );
        rows.push(json!({
            "name": "sliding_window_log/denied-full/c50",
            "ours_per_s": (ours * 10.0).round() / 10.0,
            "peer_per_s": (peer * 10.0).round() / 10.0,
            "ratio": ((ours / peer) * 100.0).round() / 100.0,
            "ours_usec_per_call": (ours_usec * 10.0).round() / 10.0,
            "peer_usec_per_call": (peer_usec * 10.0).round() / 10.0,
        }));
    }
    if selected("approximate/c50") {
        // Ten hot keys under a limit they never reach: throughput.
        let rule = Rule::new("hot", Algorithm::Gcra, Quota::per_second(1_000_000)?)?;
        let key: fn(u64, u64, u64) -> String = |_, i, _| format!("hot-{}", i % 10);
        let (ours, ours_trips) = hot(&server, &url, Mode::Approximate(1), 1, &rule, key)?;
        let (peer, peer_trips) = hot(&server, &url, Mode::Exact, 1, &rule, key)?;
        eprintln!(
            "approximate/c50: approximate {:.0}/s ({ours_trips:.4} round trips per decision), exact {:.0}/s ({peer_trips:.3})",
            ours.per_s, peer.per_s
        );
        rows.push(json!({
            "name": "approximate/c50",
            "ours_per_s": (ours.per_s * 10.0).round() / 10.0,
            "peer_per_s": (peer.per_s * 10.0).round() / 10.0,
            "ratio": ((ours.per_s / peer.per_s) * 100.0).round() / 100.0,
            "ours_round_trips_per_decision": (ours_trips * 10_000.0).round() / 10_000.0,
            "peer_round_trips_per_decision": (peer_trips * 1000.0).round() / 1000.0,
        }));
    }
    if selected("approximate/over-admission") {
        // One key, 4 instances asking far more than its limit allows.
        let rule = Rule::new(
            "over",
            Algorithm::SlidingWindowCounter,
            Quota::per_second(HOT_LIMIT)?,
        )?;
        let key: fn(u64, u64, u64) -> String = |_, _, _| "one".to_owned();
        let (exact, _) = hot(&server, &url, Mode::Exact, 4, &rule, key)?;
        let (alone, _) = hot(&server, &url, Mode::Approximate(1), 4, &rule, key)?;
        let (shared, _) = hot(&server, &url, Mode::Approximate(4), 4, &rule, key)?;
        let over = |d: &Driven| (d.admitted_per_s / exact.admitted_per_s - 1.0) * 100.0;
        eprintln!(
            "approximate/over-admission: limit {HOT_LIMIT}/s; exact admits {:.0}/s ({:.0} decisions/s); \
             approximate {:.0}/s ({:+.1}%, {:.0} decisions/s); with with_instances(4) {:.0}/s ({:+.1}%, {:.0} decisions/s)",
            exact.admitted_per_s,
            exact.per_s,
            alone.admitted_per_s,
            over(&alone),
            alone.per_s,
            shared.admitted_per_s,
            over(&shared),
            shared.per_s
        );
        rows.push(json!({
            "name": "approximate/over-admission",
            "limit_per_s": HOT_LIMIT,
            "ours_per_s": (alone.per_s * 10.0).round() / 10.0,
            "peer_per_s": (exact.per_s * 10.0).round() / 10.0,
            "ratio": ((alone.per_s / exact.per_s) * 100.0).round() / 100.0,
            "ours_admitted_per_s": alone.admitted_per_s.round(),
            "peer_admitted_per_s": exact.admitted_per_s.round(),
            "over_admission_pct": (over(&alone) * 10.0).round() / 10.0,
            "shared_admitted_per_s": shared.admitted_per_s.round(),
            "shared_over_admission_pct": (over(&shared) * 10.0).round() / 10.0,
            "shared_per_s": (shared.per_s * 10.0).round() / 10.0,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}
