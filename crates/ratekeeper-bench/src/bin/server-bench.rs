//! `cargo xtask bench server`: decisions per second through the rate-limit
//! service (`ratekeeper-server`, a real process), over gRPC (Envoy's API,
//! through its generated client) and over HTTP (the JSON API, through a
//! real HTTP/1.1 client), with 1 and 50 concurrent clients, on the memory
//! store and on a freshly started `redis-server`; beside the same
//! decisions made in this process through the library (`Limiter::check_each`
//! on the same store, behind the same deadline and breaker the server puts
//! on it), in the same run.
//!
//! Rows are `STORE/TRANSPORT/cCLIENTS`. Every request is one descriptor on
//! a limit that never denies (every call runs the full decision and write),
//! spread over 1 000 values per client. The clients run in this process,
//! on the same machine as the server: on a small machine they compete with
//! it for cores, which the in-process figure does not pay; the ratio is
//! the service's cost as a deployment sees it on one box.
//!
//! Beside decisions per second, each row reports the CPU time the server
//! process spent per decision (from `/proc/PID/stat`, over the measured
//! window) and the CPU this process spent per decision in process: their
//! difference is the service's own cost, free of the client's work and of
//! the machine's loopback latency.
//!
//! The rows `memory/TRANSPORT/in-process` are the service's CPU per
//! decision without sockets: the server binary's hidden
//! `--bench-in-process N` calls its own gRPC service and HTTP router N times
//! in process (framing, decoding, deciding, encoding), beside the library
//! deciding the same on one task. This is the figure the service's cost is
//! judged by; the rows through sockets are the end-to-end sanity figures.
//!
//! Usage: `server-bench PATH-TO-ratekeeper-server`. Prints the rows as JSON.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use http_body_util::{BodyExt as _, Full};
use ratekeeper_core::{Algorithm, Limiter, Quota, Rule, Storage, StorageExt as _};
use ratekeeper_layers::{Breaker, Deadline};
use ratekeeper_testkit::redis::RedisServer;
use serde_json::{Value, json};

const MEASURE: Duration = Duration::from_secs(3);
const WARM_UP: Duration = Duration::from_millis(500);
const CLIENTS: [usize; 2] = [1, 50];
const VALUES: usize = 1_000;
/// Decisions of the in-process run of the server binary.
const IN_PROCESS_DECISIONS: usize = 200_000;
const LIMITS: &str = "domain: bench\ndescriptors:\n  - key: client\n    rate_limit: {unit: hour, requests_per_unit: 1000000000}\n";

/// A server process, killed when dropped.
struct Server {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(binary: &str, config: &str, storage: &str) -> Result<Server, String> {
    let mut child = Command::new(binary)
        .args(["--config", config, "--storage", storage])
        .args([
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "off",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {binary}: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    let (mut grpc, mut http) = (None, None);
    while grpc.is_none() || http.is_none() {
        let line = lines
            .next()
            .ok_or("the server stopped before listening")?
            .map_err(|e| e.to_string())?;
        let Some((what, addr)) = line
            .strip_prefix("ratekeeper-server: ")
            .and_then(|l| l.split_once(" listening on "))
        else {
            continue;
        };
        let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr}"))?;
        match what {
            "grpc" => grpc = Some(addr),
            "http" => http = Some(addr),
            _ => {}
        }
    }
    // Keep reading stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Server {
        child,
        grpc: grpc.ok_or("no gRPC address")?,
        http: http.ok_or("no HTTP address")?,
    })
}

/// CPU time (user + system) a process has used, in µs, from
/// `/proc/PID/stat` (clock ticks of 10 ms, Linux's usual `CLK_TCK` of 100).
fn cpu_us(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10_000.0)
}

/// What one measurement found.
struct Measured {
    per_s: f64,
    /// CPU µs the measured process (`pid`) spent per decision.
    cpu_us: Option<f64>,
}

/// Runs `clients` tasks calling `one(task, i)` until the time is up;
/// decisions per second after the warm-up and the CPU process `pid` spent
/// per decision meanwhile, or the first failure.
async fn measure<F, Fut>(clients: usize, pid: u32, one: F) -> Result<Measured, String>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let one = Arc::new(one);
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|task| {
            let (one, counting, stop, done) =
                (one.clone(), counting.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = one(task, i % VALUES).await {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    i += 1;
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    // A store that answers at once never yields by itself:
                    // let the timers (and the other tasks) run.
                    tokio::task::yield_now().await;
                }
                Ok(())
            })
        })
        .collect();
    tokio::time::sleep(WARM_UP).await;
    counting.store(true, Ordering::Relaxed);
    let cpu_before = cpu_us(pid);
    let started = Instant::now();
    tokio::time::sleep(MEASURE).await;
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu_after = cpu_us(pid);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let cpu_us = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) if n > 0 => Some((a - b) / n as f64),
        _ => None,
    };
    Ok(Measured {
        per_s: n as f64 / elapsed.as_secs_f64(),
        cpu_us,
    })
}

fn descriptor(value: &str) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: vec![Entry {
            key: "client".to_owned(),
            value: value.to_owned(),
        }],
        ..RateLimitDescriptor::default()
    }
}

async fn grpc_rate(server: &Server, clients: usize) -> Result<Measured, String> {
    let mut channels = Vec::new();
    for _ in 0..clients {
        let c = RateLimitServiceClient::connect(format!("http://{}", server.grpc))
            .await
            .map_err(|e| e.to_string())?;
        channels.push(c);
    }
    let channels = Arc::new(channels);
    measure(clients, server.child.id(), move |task, i| {
        let c = channels.get(task).cloned();
        async move {
            let mut c = c.ok_or("no channel")?;
            let r = c
                .should_rate_limit(RateLimitRequest {
                    domain: "bench".to_owned(),
                    descriptors: vec![descriptor(&format!("t{task}-{i}"))],
                    hits_addend: 0,
                })
                .await
                .map_err(|e| e.to_string())?;
            if r.into_inner().overall_code != 1 {
                return Err("a request was denied".to_owned());
            }
            Ok(())
        }
    })
    .await
}

async fn http_rate(server: &Server, clients: usize) -> Result<Measured, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let url = format!("http://{}/v1/check", server.http);
    measure(clients, server.child.id(), move |task, i| {
        let body = format!(
            r#"{{"domain":"bench","descriptors":[{{"entries":[{{"key":"client","value":"t{task}-{i}"}}]}}]}}"#
        );
        let req = http::Request::post(url.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)));
        let client = client.clone();
        async move {
            let req = req.map_err(|e| e.to_string())?;
            let res = client.request(req).await.map_err(|e| e.to_string())?;
            if !res.status().is_success() {
                return Err(format!("HTTP {}", res.status()));
            }
            let _ = res.into_body().collect().await;
            Ok(())
        }
    })
    .await
}

async fn in_process_rate(store: Arc<dyn Storage>, clients: usize) -> Result<Measured, String> {
    let limiter = Limiter::new(
        store
            .layer(Deadline::new(Duration::from_secs(1)))
            .layer(Breaker::new(5, Duration::from_secs(1))),
    );
    let quota = Quota::per_hour(1_000_000_000).map_err(|e| e.to_string())?;
    let rule =
        Rule::new("rls.bench.client", Algorithm::FixedWindow, quota).map_err(|e| e.to_string())?;
    measure(clients, std::process::id(), move |task, i| {
        let (limiter, rule) = (limiter.clone(), rule.clone());
        async move {
            let key = format!("bench}}client=t{task}-{i}");
            let d = limiter
                .check_each(&[(&rule, &key, 1)])
                .await
                .map_err(|e| e.to_string())?;
            if !d.iter().all(|d| d.is_allowed()) {
                return Err("a request was denied".to_owned());
            }
            Ok(())
        }
    })
    .await
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), String> {
    let binary = std::env::args()
        .nth(1)
        .ok_or("usage: server-bench PATH-TO-ratekeeper-server")?;
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("ratekeeper-server-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("limits.yaml");
    std::fs::write(&config, LIMITS).map_err(|e| e.to_string())?;
    let config = config.display().to_string();
    let mut rows: Vec<Value> = Vec::new();
    for (store_name, url) in [("memory", "memory://".to_owned()), ("redis", redis.url())] {
        let server = start(&binary, &config, &url)?;
        for clients in CLIENTS {
            let store: Arc<dyn Storage> = if store_name == "memory" {
                Arc::new(ratekeeper_memory::MemoryStorage::new())
            } else {
                Arc::new(
                    ratekeeper_redis::RedisStorage::connect(&url)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            };
            let in_process = in_process_rate(store, clients).await?;
            for transport in ["grpc", "http"] {
                let service = match transport {
                    "grpc" => grpc_rate(&server, clients).await?,
                    _ => http_rate(&server, clients).await?,
                };
                let name = format!("{store_name}/{transport}/c{clients}");
                let added_us = (1e6 / service.per_s - 1e6 / in_process.per_s) * clients as f64;
                let server_cpu = service.cpu_us.unwrap_or(f64::NAN);
                let library_cpu = in_process.cpu_us.unwrap_or(f64::NAN);
                eprintln!(
                    "{name}: {:.0}/s through the service ({server_cpu:.1} µs of server CPU per \
                     decision), {:.0}/s in process ({library_cpu:.1} µs of CPU per decision)",
                    service.per_s, in_process.per_s
                );
                rows.push(json!({
                    "name": name,
                    "service_per_s": service.per_s,
                    "in_process_per_s": in_process.per_s,
                    "ratio": service.per_s / in_process.per_s,
                    "added_us_per_decision": added_us,
                    "server_cpu_us_per_decision": server_cpu,
                    "in_process_cpu_us_per_decision": library_cpu,
                    "added_cpu_us_per_decision": server_cpu - library_cpu,
                }));
            }
        }
    }
    // The service's own CPU per decision, without sockets: the release
    // binary calls its gRPC service and HTTP router in process (memory
    // store), beside the library's own decision on one task.
    let out = Command::new(&binary)
        .args([
            "--config",
            &config,
            "--storage",
            "memory://",
            "--bench-in-process",
        ])
        .arg(IN_PROCESS_DECISIONS.to_string())
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|e| format!("cannot run {binary}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("--bench-in-process failed: {text}"));
    }
    let library = in_process_rate(Arc::new(ratekeeper_memory::MemoryStorage::new()), 1).await?;
    let library_ns = 1e9 / library.per_s;
    for transport in ["grpc", "http"] {
        let ns: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{transport}: ")))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no {transport} figure in {text:?}"))?;
        eprintln!(
            "memory/{transport}/in-process: {ns:.0} ns per decision, library {library_ns:.0} ns"
        );
        rows.push(json!({
            "name": format!("memory/{transport}/in-process"),
            "service_ns_per_decision": ns,
            "library_ns_per_decision": library_ns,
            "added_us_per_decision": (ns - library_ns) / 1_000.0,
        }));
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        serde_json::to_string(&rows).map_err(|e| e.to_string())?
    );
    Ok(())
}
