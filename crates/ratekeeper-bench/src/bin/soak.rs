//! `cargo xtask soak [MINUTES]`: the three example servers (axum, actix-web,
//! Rocket) over one real `redis-server`, under steady load for MINUTES
//! (default 10), while Redis is paused (`SIGSTOP`), killed and restarted at
//! random intervals. Not part of CI: it is long, and it is for people.
//!
//! Redis writes every command to its append-only file before answering, so a
//! kill loses nothing it acknowledged (without it, a restarted Redis forgets
//! the window's count and admits the limit again: the first runs showed
//! exactly that). The servers share one limit (fixed window, 100 per 5 s,
//! keyed by the client address, all three on the same Redis keys) and fail closed with a
//! 100 ms store deadline and a circuit breaker. Requests are not sent in the
//! 100 ms around a window's boundary, so each answer belongs to one window
//! beyond doubt. At the end it prints, per window, how many requests the
//! three servers admitted together against the 100 allowed (it fails if any
//! window admitted more), the answer latency percentiles, and, for every
//! fault, how long after Redis was back the first decision came.
//!
//! Usage: `soak MINUTES AXUM ACTIX ROCKET` (the example binaries' paths).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ratekeeper_testkit::http::TestClient;
use ratekeeper_testkit::redis::RedisServer;

const LIMIT: u64 = 100;
const WINDOW_S: u64 = 5;
/// No request is sent this close to a window's boundary.
const GUARD: Duration = Duration::from_millis(100);
const TASKS_PER_SERVER: usize = 4;

/// An example server process; killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    client: TestClient,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(
    name: &'static str,
    program: &str,
    redis: &str,
) -> Result<Server, Box<dyn std::error::Error>> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(program)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--storage",
            redis,
            "--algorithm",
            "fixed_window",
            "--limit",
            &LIMIT.to_string(),
            "--window",
            &format!("{WINDOW_S}s"),
            "--store-timeout",
            "100",
            "--on-error",
            "deny",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let addr = line
        .strip_prefix("listening on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{name} did not start: {line:?}"))?;
    Ok(Server {
        name,
        child,
        client: TestClient::new(addr),
    })
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Per window (its index since the epoch): admitted, denied, 503.
    windows: BTreeMap<u64, [u64; 3]>,
    /// Every answer's latency, µs.
    latencies: Vec<u64>,
    /// Answers that were none of 200 with headers, 429, 503.
    other: Vec<String>,
    /// When (µs since the epoch) each decided answer came back.
    decided_at: Vec<u64>,
}

/// A small, seeded random source for the fault schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from).max(1))
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [minutes, axum, actix, rocket] = args.as_slice() else {
        return Err("usage: soak MINUTES AXUM ACTIX ROCKET".into());
    };
    let minutes: f64 = minutes.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Every write on disk before Redis acknowledges it: a killed Redis must
    // forget nothing, or a window would restart its count after a kill.
    let mut redis = RedisServer::start_with(&["appendonly yes", "appendfsync always"]);
    let url = redis.url();
    let servers = vec![
        start("axum", axum, &url)?,
        start("actix-web", actix, &url)?,
        start("rocket", rocket, &url)?,
    ];
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let length = Duration::from_secs_f64(minutes * 60.0);
    let started = Instant::now();
    let window_us = WINDOW_S * 1_000_000;
    let guard_us = u64::try_from(GUARD.as_micros()).unwrap_or(0);

    let mut faults: Vec<(String, u64)> = Vec::new();
    runtime.block_on(async {
        let load: Vec<_> = servers
            .iter()
            .flat_map(|s| (0..TASKS_PER_SERVER).map(move |_| (s.name, s.client.clone())))
            .map(|(name, client)| {
                let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let now = unix_micros();
                        let into = now % window_us;
                        if into < guard_us || window_us - into < guard_us {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                        let window = now / window_us;
                        let sent = Instant::now();
                        let reply = tokio::time::timeout(
                            Duration::from_secs(5),
                            client.try_send_bytes("GET", "/", &[]),
                        )
                        .await;
                        let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let back = unix_micros();
                        {
                            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                            seen.latencies.push(took);
                            // An answer that crossed a boundary is not counted.
                            let counted = back / window_us == window;
                            match reply {
                                Ok(Ok(r)) if r.status == 200 && r.header("ratelimit").is_some() => {
                                    seen.decided_at.push(back);
                                    if counted {
                                        seen.windows.entry(window).or_default()[0] += 1;
                                    }
                                }
                                Ok(Ok(r)) if r.status == 429 => {
                                    seen.decided_at.push(back);
                                    if counted {
                                        seen.windows.entry(window).or_default()[1] += 1;
                                    }
                                }
                                Ok(Ok(r)) if r.status == 503 => {
                                    if counted {
                                        seen.windows.entry(window).or_default()[2] += 1;
                                    }
                                }
                                Ok(Ok(r)) => {
                                    seen.other.push(format!("{name}: {} {}", r.status, r.body))
                                }
                                Ok(Err(e)) => seen.other.push(format!("{name}: {e}")),
                                Err(_) => seen.other.push(format!("{name}: no answer within 5 s")),
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();

        // Faults at random intervals.
        let mut rng = Rng(unix_micros() | 1);
        while started.elapsed() + Duration::from_secs(15) < length {
            tokio::time::sleep(rng.millis(3_000, 10_000)).await;
            let down = rng.millis(300, 3_000);
            let kind = if rng.next().is_multiple_of(2) {
                "pause"
            } else {
                "kill"
            };
            if kind == "pause" {
                redis.pause();
                tokio::time::sleep(down).await;
                redis.resume();
            } else {
                redis.stop();
                tokio::time::sleep(down).await;
                redis.restart();
            }
            faults.push((format!("{kind} {} ms", down.as_millis()), unix_micros()));
        }
        let left = length.saturating_sub(started.elapsed());
        tokio::time::sleep(left).await;
        stop.store(true, Ordering::Relaxed);
        for task in load {
            let _ = task.await;
        }
    });

    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut latencies = seen.latencies.clone();
    latencies.sort_unstable();
    let over: Vec<_> = seen.windows.iter().filter(|(_, c)| c[0] > LIMIT).collect();
    println!(
        "soak: {minutes} min, {} requests to 3 servers (axum, actix-web, Rocket) sharing one limit of {LIMIT} per {WINDOW_S} s over one Redis",
        latencies.len()
    );
    println!("\nadmitted per window (allowed {LIMIT}), windows with any answer:");
    println!(
        "| window start (unix s) | admitted | denied (429) | store down (503) |\n|---:|---:|---:|---:|"
    );
    for (w, c) in &seen.windows {
        println!("| {} | {} | {} | {} |", w * WINDOW_S, c[0], c[1], c[2]);
    }
    let most = seen.windows.values().map(|c| c[0]).max().unwrap_or(0);
    println!(
        "\nwindows: {}; most admitted in one window: {most} of {LIMIT}; windows over the limit: {}",
        seen.windows.len(),
        over.len()
    );
    println!(
        "latency (µs): p50 {} p90 {} p99 {} p99.9 {} max {}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        latencies.last().copied().unwrap_or(0)
    );
    println!("\nfaults: Redis back at -> first decision after it");
    let mut recoveries = Vec::new();
    for (what, back) in &faults {
        let first = seen.decided_at.iter().filter(|t| **t >= *back).min();
        match first {
            Some(t) => {
                recoveries.push(t - back);
                println!("- {what}: {} ms", (t - back) / 1_000);
            }
            None => println!("- {what}: no decision after it"),
        }
    }
    recoveries.sort_unstable();
    println!(
        "recovery (ms): median {} max {}",
        percentile(&recoveries, 0.5) / 1_000,
        recoveries.last().copied().unwrap_or(0) / 1_000
    );
    if !seen.other.is_empty() {
        println!("\nunexpected answers ({}):", seen.other.len());
        for o in seen.other.iter().take(20) {
            println!("- {o}");
        }
    }
    drop(servers);
    if !over.is_empty() {
        return Err(format!("{} windows admitted more than {LIMIT}", over.len()).into());
    }
    if !seen.other.is_empty() {
        return Err(format!("{} unexpected answers", seen.other.len()).into());
    }
    Ok(())
}
