//! `cargo xtask bench`: runs criterion benchmarks that compare us with a peer in
//! the same run, and turns criterion's estimates into one JSON file per suite
//! plus a table in `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::{cargo, on_path};

const SUITES: &[&str] = &["memory", "sqlite", "http", "redis", "server", "capacity"];
/// Suites reported as decisions per second (the rest as ns per decision).
const RATE_SUITES: &[&str] = &["sqlite"];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let suites: Vec<&str> = if args.is_empty() {
        SUITES.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for suite in &suites {
        if !SUITES.contains(suite) {
            return Err(format!(
                "unknown benchmark suite {suite:?} (known: {})",
                SUITES.join(", ")
            ));
        }
    }
    let root = workspace_root()?;
    for suite in suites {
        if suite == "http" {
            http(&root)?;
            continue;
        }
        if suite == "redis" {
            redis(&root)?;
            continue;
        }
        if suite == "server" {
            server(&root)?;
            continue;
        }
        if suite == "capacity" {
            capacity(&root)?;
            continue;
        }
        let criterion_dir = root.join("target/criterion").join(suite);
        // Old results of renamed rows must not leak into this run's table.
        let _ = fs::remove_dir_all(&criterion_dir);
        cargo(&["bench", "-p", "ratekeeper-bench", "--bench", suite], &[])?;
        let rows = collect(&criterion_dir)?;
        write_outputs(&root, suite, &rows)?;
    }
    Ok(())
}

/// Rounds of the HTTP benchmark (each runs every mode once).
const HTTP_ROUNDS: usize = 5;

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// `program` as a command, pinned to `core` with `taskset` when `pin`.
fn pinned(pin: bool, core: &str, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    if pin {
        let mut c = std::process::Command::new("taskset");
        c.args(["-c", core]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

/// Requests per second that `wrk` measures against `http-bench-server MODE`.
fn wrk_rps(server: &Path, mode: &str) -> Result<f64, String> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    // The server on the first core, wrk on the second (when there are two).
    let pin = on_path("taskset") && available_cores() >= 2;
    let mut child = pinned(pin, "0", server)
        .args([mode, "0"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", server.display()))?;
    let addr = child
        .stdout
        .take()
        .and_then(|out| BufReader::new(out).lines().next())
        .and_then(Result::ok)
        .ok_or("the bench server did not print its address")?;
    let out = pinned(pin, "1", "wrk")
        .args(["-t1", "-c32", "-d5s", &format!("http://{addr}/")])
        .output();
    let _ = child.kill();
    let _ = child.wait();
    let out =
        out.map_err(|e| format!("cannot run wrk ({e}); install it: apt-get install -y wrk"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        return Err(format!(
            "{mode}: some responses were not 2xx; the quota must not deny:\n{text}"
        ));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

/// `cargo xtask bench http`: wrk against the same route of each framework's
/// server with no limiter, our adapter, and that framework's governor
/// adapter, taking turns in the same run.
/// One framework's benchmark server, its modes, and the rows they make:
/// (row, our mode, the peer's mode).
struct HttpServer {
    binary: &'static str,
    modes: &'static [&'static str],
    rows: &'static [(&'static str, &'static str, &'static str)],
    /// How to call the same app in a loop without a network; it prints
    /// "MODE: N ns per request": the per-request cost free of the
    /// network's noise.
    in_process: InProcess,
}

enum InProcess {
    /// An example of `ratekeeper-bench`: `EXAMPLE MODE N`.
    Example(&'static str),
    /// The server binary itself: `SERVER MODE in-process N`.
    Server,
}

const HTTP_SERVERS: &[HttpServer] = &[
    HttpServer {
        binary: "http-bench-server",
        modes: &["none", "ours", "ours+decision", "ours-headers", "governor"],
        rows: &[
            ("axum/vs-no-limiter", "ours", "none"),
            ("axum/vs-tower_governor", "ours", "governor"),
            (
                "axum+decision/vs-tower_governor",
                "ours+decision",
                "governor",
            ),
            ("axum+ietf-headers/vs-no-limiter", "ours-headers", "none"),
        ],
        in_process: InProcess::Example("profile_http"),
    },
    HttpServer {
        binary: "actix-bench-server",
        modes: &["none", "ours", "ours+decision", "governor"],
        rows: &[
            ("actix/vs-no-limiter", "ours", "none"),
            ("actix/vs-actix-governor", "ours", "governor"),
            (
                "actix+decision/vs-actix-governor",
                "ours+decision",
                "governor",
            ),
        ],
        in_process: InProcess::Server,
    },
    HttpServer {
        binary: "rocket-bench-server",
        modes: &["none", "ours", "ours+decision", "governor"],
        rows: &[
            ("rocket/vs-no-limiter", "ours", "none"),
            ("rocket/vs-rocket-governor", "ours", "governor"),
            (
                "rocket+decision/vs-rocket-governor",
                "ours+decision",
                "governor",
            ),
        ],
        in_process: InProcess::Server,
    },
];

fn http(root: &Path) -> Result<(), String> {
    if !crate::on_path("wrk") {
        crate::apt_install("wrk", "the HTTP bench loads each server with wrk")?;
    }
    let mut out = Vec::new();
    let mut table = String::from(
        "| row | ours (requests/s) | peer (requests/s) | ratio ours/peer | overhead per request (µs) | in process: ours / peer (ns per request) | in process: ours / peer (instructions per request) |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for server in HTTP_SERVERS {
        let binary = release_binary(root, server.binary)?;
        // The modes take turns, round after round, and each keeps its
        // median: a slow stretch of this shared machine then hits every mode
        // alike.
        let mut samples: Vec<(&str, Vec<f64>)> =
            server.modes.iter().map(|m| (*m, Vec::new())).collect();
        for round in 1..=HTTP_ROUNDS {
            for (mode, runs) in &mut samples {
                let r = wrk_rps(&binary, mode)?;
                eprintln!(
                    "{}, round {round}, {mode}: {r:.0} requests/s",
                    server.binary
                );
                runs.push(r);
            }
        }
        let get = |m: &str| {
            samples
                .iter()
                .find(|(mode, _)| *mode == m)
                .map_or(0.0, |(_, runs)| median(runs))
        };
        let command = in_process_command(root, &server.in_process, &binary)?;
        let ns = in_process_ns(&command, server.modes)?;
        let counted = in_process_instructions(&command, server.modes);
        for (name, ours_mode, peer_mode) in server.rows {
            let (ours, peer) = (get(ours_mode), get(peer_mode));
            let ratio = ratio_of(ours, peer);
            let overhead = round(1e6 / ours - 1e6 / peer);
            let mut row = json!({ "name": name, "ours_per_s": round(ours), "peer_per_s": round(peer), "ratio": ratio, "overhead_us": overhead });
            let pair = |figures: &[(&str, f64)]| {
                let of = |m: &str| figures.iter().find(|(mode, _)| *mode == m).map(|(_, x)| *x);
                of(ours_mode).zip(of(peer_mode))
            };
            let cell = in_process_cell(
                &mut row,
                pair(&ns),
                ["in_process_ours_ns", "in_process_peer_ns"],
            );
            if let (Some((o, p)), Some(fields)) = (pair(&ns), row.as_object_mut()) {
                fields.insert("in_process_ratio".into(), json!(ratio_of(o, p)));
            }
            let counted = in_process_cell(
                &mut row,
                pair(&counted),
                ["instructions_ours", "instructions_peer"],
            );
            out.push(row);
            let _ = writeln!(
                table,
                "| {name} | {ours:.0} | {peer:.0} | {ratio:.2} | {overhead:.2} | {cell} | {counted} |"
            );
        }
    }
    publish(root, "http", &out, &table)
}

/// Runs of each mode in the in-process measurement (the median is kept).
const IN_PROCESS_ROUNDS: usize = 5;
/// Requests per in-process run: below the bench quota's burst, so every
/// mode is allowed all of them.
const IN_PROCESS_REQUESTS: &str = "400000";

/// The in-process command of `how`: the program, and its flag before the
/// request count.
fn in_process_command(
    root: &Path,
    how: &InProcess,
    server: &Path,
) -> Result<(PathBuf, Option<&'static str>), String> {
    Ok(match how {
        InProcess::Example(example) => {
            cargo(
                &[
                    "build",
                    "--release",
                    "-p",
                    "ratekeeper-bench",
                    "--example",
                    example,
                ],
                &[],
            )?;
            (root.join("target/release/examples").join(example), None)
        }
        InProcess::Server => (server.to_path_buf(), Some("in-process")),
    })
}

/// Instructions per request of each mode, counted by callgrind: the
/// difference between a run of 20 000 requests and one of 60 000, over
/// 40 000, so start-up and one-time work cancel out. Less, in each run,
/// what making a `quanta` clock executed ([`CALIBRATING`]): the clock both
/// limiters read calibrates itself against the OS clock until its estimate
/// settles (or 200 ms pass), so for a number of instructions that changes
/// from run to run (3 to 16 million, which moved the modes with a limiter
/// by up to 250 per request). (Not quite all
/// of the rest: the threads actix-web and Rocket start at once do a varying
/// amount of work before the loop, up to a few million instructions; over
/// 40 000 requests that is a few tens per request. Work timed by the clock,
/// such as a store's cleanup task, is rare next to 40 000 requests.) It
/// moves far less than time on a shared machine. Modes it cannot count (no
/// valgrind, a failed run) are left out, with a message.
fn in_process_instructions(
    (binary, flag): &(PathBuf, Option<&'static str>),
    modes: &[&'static str],
) -> Vec<(&'static str, f64)> {
    if !on_path("valgrind")
        && let Err(e) = crate::apt_install("valgrind", "counting instructions needs valgrind")
    {
        eprintln!("xtask: no instruction counts: {e}");
        return Vec::new();
    }
    let count = |mode: &str, n: &str| -> Option<f64> {
        let profile =
            std::env::temp_dir().join(format!("xtask-callgrind-{}-{}.out", std::process::id(), n));
        let ran = std::process::Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", profile.display()))
            .arg(binary)
            .arg(mode)
            .args(*flag)
            .arg(n)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|_| {
                // Every function: by default the listing stops once it
                // has shown 99% of the total, which can leave the clock's
                // calibration out of a long run.
                std::process::Command::new("callgrind_annotate")
                    .args(["--inclusive=yes", "--auto=no", "--threshold=100"])
                    .arg(&profile)
                    .output()
                    .ok()
            });
        let _ = std::fs::remove_file(&profile);
        let text = String::from_utf8_lossy(&ran?.stdout).into_owned();
        let (total, calibration) = program_and_calibration(&text)?;
        if calibration == 0.0 && mode != "none" {
            eprintln!(
                "xtask: no quanta clock made in {mode} ({n} requests): its calibration, if any, \
                 is counted (a quanta version that names its constructors otherwise?)"
            );
        }
        Some(total - calibration)
    };
    modes
        .iter()
        .filter_map(|mode| {
            let per_request = count(mode, "20000")
                .zip(count(mode, "60000"))
                .map(|(few, many)| (many - few) / 40_000.0);
            match per_request {
                Some(n) => eprintln!("{mode}: {n:.0} instructions per request"),
                None => eprintln!("xtask: callgrind could not count {mode}"),
            }
            per_request.map(|n| (*mode, n))
        })
        .collect()
}

/// The functions that make a `quanta` clock, which calibrates itself: ours
/// calls `Clock::new`, governor `Clock::default` (which calls `new` inlined).
const CALIBRATING: [&str; 2] = [
    ":quanta::Clock::new",
    ":<quanta::Clock as core::default::Default>::default",
];

/// From `callgrind_annotate --inclusive=yes`: the program's instructions,
/// and those a clock's calibration executed, with what it called (the
/// largest of [`CALIBRATING`]: one limiter makes one clock; 0 if none ran).
/// `None` without the program's total.
fn program_and_calibration(text: &str) -> Option<(f64, f64)> {
    let count = |line: &str| -> Option<f64> {
        line.split_whitespace()
            .next()?
            .replace(',', "")
            .parse()
            .ok()
    };
    let total = text
        .lines()
        .find(|l| l.contains("PROGRAM TOTALS"))
        .and_then(count)?;
    let calibration = text
        .lines()
        .filter(|l| {
            let function = l.split(" [").next().unwrap_or(l).trim_end();
            CALIBRATING.iter().any(|name| function.ends_with(name))
        })
        .filter_map(count)
        .fold(0.0, f64::max);
    Some((total, calibration))
}

/// Nanoseconds per request of each mode, measured in process (pinned to
/// one core; the modes take turns, each keeping its median).
fn in_process_ns(
    (binary, flag): &(PathBuf, Option<&'static str>),
    modes: &[&'static str],
) -> Result<Vec<(&'static str, f64)>, String> {
    let name = binary
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut samples: Vec<(&'static str, Vec<f64>)> =
        modes.iter().map(|m| (*m, Vec::new())).collect();
    for _ in 0..IN_PROCESS_ROUNDS {
        for (mode, runs) in &mut samples {
            let out = pinned(on_path("taskset"), "0", binary)
                .arg(*mode)
                .args(*flag)
                .arg(IN_PROCESS_REQUESTS)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let ns = text
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|_| out.status.success())
                .ok_or_else(|| format!("{name} {mode} printed no figure: {text}"))?;
            eprintln!("{name}, in process, {mode}: {ns:.0} ns per request");
            runs.push(ns);
        }
    }
    Ok(samples
        .into_iter()
        .map(|(mode, runs)| (mode, median(&runs)))
        .collect())
}

/// `cargo xtask bench redis`: the `redis-bench` binary starts its own
/// `redis-server`, measures our store and `redis-benchmark` on the same
/// decision function back to back, and prints the rows as JSON.
fn redis(root: &Path) -> Result<(), String> {
    let bench = release_binary(root, "redis-bench")?;
    let mut command = std::process::Command::new(&bench);
    // A limitador peer built already (its RocksDB takes long to build) can
    // be named instead of built.
    let prebuilt = std::env::var_os("LIMITADOR_PEER").map(PathBuf::from);
    match prebuilt.map_or_else(|| limitador_peer(root), Ok) {
        Ok(limitador) => {
            command.env("LIMITADOR_PEER", limitador);
        }
        Err(e) => eprintln!("xtask: the limitador rows are left out: {e}"),
    }
    let out = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bench.display()))?;
    if !out.status.success() {
        return Err(format!("redis-bench failed ({})", out.status));
    }
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("redis-bench printed no JSON rows: {e}"))?;
    let mut table = String::from(
        "| row | ours (decisions/s) | peer (decisions/s) | ratio ours/peer |\n|---|---:|---:|---:|\n",
    );
    for row in &rows {
        let field = |name: &str| row.get(name).and_then(Value::as_f64).unwrap_or(0.0);
        let _ = writeln!(
            table,
            "| {} | {:.0} | {:.0} | {:.2} |",
            row.get("name").and_then(Value::as_str).unwrap_or("?"),
            field("ours_per_s"),
            field("peer_per_s"),
            field("ratio")
        );
    }
    for row in &rows {
        let _ = write!(table, "{}", redis_footnote(row));
    }
    publish(root, "redis", &rows, &table)
}

/// `cargo xtask bench server`: the `server-bench` binary runs the release
/// `ratekeeper-server` as a process and measures decisions per second
/// through it (gRPC, HTTP) beside the same decisions in process, on the
/// memory store and on a fresh `redis-server`.
fn server(root: &Path) -> Result<(), String> {
    cargo(&["build", "--release", "-p", "ratekeeper-server"], &[])?;
    let bench = release_binary(root, "server-bench")?;
    let binary = root.join("target/release/ratekeeper-server");
    let out = std::process::Command::new(&bench)
        .arg(&binary)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bench.display()))?;
    if !out.status.success() {
        return Err(format!("server-bench failed ({})", out.status));
    }
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("server-bench printed no JSON rows: {e}"))?;
    let mut table = String::from(
        "| row | through the service (decisions/s) | in process (decisions/s) | ratio service/in process | added latency (µs per decision) | server CPU (µs per decision) | in-process CPU (µs per decision) | added CPU (µs per decision) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let name = |row: &Value| {
        row.get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let (in_process, through): (Vec<&Value>, Vec<&Value>) =
        rows.iter().partition(|r| name(r).ends_with("/in-process"));
    let mut first = String::from(
        "| row | the service, in process (ns per decision) | the library (ns per decision) | added by the service (µs per decision) |\n|---|---:|---:|---:|\n",
    );
    for row in &in_process {
        let field = |name: &str| row.get(name).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let _ = writeln!(
            first,
            "| {} | {:.0} | {:.0} | {:.1} |",
            name(row),
            field("service_ns_per_decision"),
            field("library_ns_per_decision"),
            field("added_us_per_decision"),
        );
    }
    first.push('\n');
    table.insert_str(0, &first);
    for row in &through {
        let field = |name: &str| row.get(name).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let _ = writeln!(
            table,
            "| {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} |",
            row.get("name").and_then(Value::as_str).unwrap_or("?"),
            field("service_per_s"),
            field("in_process_per_s"),
            field("ratio"),
            field("added_us_per_decision"),
            field("server_cpu_us_per_decision"),
            field("in_process_cpu_us_per_decision"),
            field("added_cpu_us_per_decision"),
        );
    }
    publish(root, "server", &rows, &table)
}

/// What a row of the Redis suite measures beyond decisions per second, as
/// a paragraph for the table (empty for plain rows).
fn redis_footnote(row: &Value) -> String {
    let name = row.get("name").and_then(Value::as_str).unwrap_or("?");
    let field = |f: &str| row.get(f).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let (ours_trips, peer_trips) = (
        field("ours_round_trips_per_decision"),
        field("peer_round_trips_per_decision"),
    );
    if name.starts_with("attack/") {
        format!(
            "\n`{name}`: 90% of requests from 100 keys over their limit, 10% from clients under theirs; the peer column is the same \
             store without the deny cache. Redis round trips per decision: {ours_trips:.3} with the cache, {peer_trips:.3} without.\n"
        )
    } else if name == "places/c50" {
        format!(
            "\n`{name}`: 50 tasks each taking a place on a concurrency rule and giving it back (`Limiter::acquire`, \
             `Permit::release`: two calls of the Lua engine) on 1 000 keys; the peer column is the same 50 tasks making \
             GCRA decisions (one call each) on the same server. The goal is at least 0.5. The engine's time on the server \
             (`INFO commandstats`): {:.1} µs per pair, {:.1} µs per GCRA decision ({:.2}×).\n",
            field("ours_engine_us"),
            field("peer_engine_us"),
            field("ours_engine_us") / field("peer_engine_us"),
        )
    } else if name.ends_with("/vs-limitador") {
        format!(
            "\n`{name}`: the peer column is limitador 0.14 (`AsyncRateLimiter` on its Redis counters without a cache, \
             `AsyncRedisStorage`) making the same requests on the same server: {:.0} fixed window(s) per request, keys \
             over 1 000 values, never denied; ours is `Limiter::check_rules` on the Redis store. Lua calls per \
             decision (ours `FCALL`, limitador's scripts): ours {:.2}, limitador {:.2}.\n",
            field("limits"),
            field("ours_script_calls_per_decision"),
            field("peer_script_calls_per_decision"),
        )
    } else if name == "sliding_window_log/denied-full/c50" {
        format!(
            "\n`{name}`: 50 tasks, every request denied by one key whose sliding log holds 10 000 entries; the peer column is \
             50 tasks on fresh keys (empty logs), same store. Redis time per call: {:.1} µs denied on the full log, \
             {:.1} µs on a fresh key ({:.2}×; the goal is at most 2×).\n",
            field("ours_usec_per_call"),
            field("peer_usec_per_call"),
            field("ours_usec_per_call") / field("peer_usec_per_call"),
        )
    } else if name == "approximate/c50" {
        format!(
            "\n`{name}`: 50 tasks on 10 hot keys under their limit; ours in approximate mode (flush every 50 ms), the peer column \
             the same store exact. Redis round trips per decision: {ours_trips:.4} approximate, {peer_trips:.3} exact.\n"
        )
    } else if name == "approximate/over-admission" {
        format!(
            "\n`{name}`: 4 instances (own connections), 12 tasks each, on one key limited to {:.0}/s, asking far more; the \
             columns are decisions/s, approximate against exact. Admitted per second: exact {:.0}, approximate {:.0} ({:+.1}%), \
             approximate with `with_instances(4)` {:.0} ({:+.1}%).\n",
            field("limit_per_s"),
            field("peer_admitted_per_s"),
            field("ours_admitted_per_s"),
            field("over_admission_pct"),
            field("shared_admitted_per_s"),
            field("shared_over_admission_pct"),
        )
    } else {
        String::new()
    }
}

/// Builds a benchmark binary of `ratekeeper-bench` in release mode and
/// returns its path.
fn release_binary(root: &Path, name: &str) -> Result<PathBuf, String> {
    cargo(
        &[
            "build",
            "--release",
            "-p",
            "ratekeeper-bench",
            "--bin",
            name,
        ],
        &[],
    )?;
    Ok(root.join("target/release").join(name))
}

/// Builds the limitador side of the Redis rows: a workspace of its own
/// (`crates/ratekeeper-bench/peers/limitador`), so that limitador and what
/// it pulls in stay out of the workspace's builds and CI. limitador's Redis
/// counters do not compile without its disk storage, which builds RocksDB
/// with bindgen: when the build fails, `libclang-dev` is installed (as
/// root) and the build tried again. The first build takes a while (RocksDB
/// is C++). An error leaves the limitador rows out of the run.
fn limitador_peer(root: &Path) -> Result<PathBuf, String> {
    let manifest = root.join("crates/ratekeeper-bench/peers/limitador/Cargo.toml");
    let target = root.join("target/peers");
    let (manifest, target) = (manifest.display().to_string(), target.display().to_string());
    let args = [
        "build",
        "--release",
        "--manifest-path",
        &manifest,
        "--target-dir",
        &target,
    ];
    if let Err(first) = cargo(&args, &[]) {
        let install = crate::apt_install(
            "libclang-dev",
            "limitador's build failed; it may need libclang (bindgen)",
        );
        install.map_err(|e| format!("{first}; {e}"))?;
        cargo(&args, &[])?;
    }
    Ok(root.join("target/peers/release/limitador-peer"))
}

/// Decisions per second the sizing in `docs/capacity.md` is for.
const SIZED_DECISIONS_PER_S: f64 = 1e6;
/// Active keys the sizing is for.
const SIZED_KEYS: f64 = 100e6;
/// The share of a Redis core a primary is planned to use (headroom for
/// bursts, replication, persistence).
const CPU_CEILING: f64 = 0.7;
/// The memory planned per primary (`maxmemory`), GiB.
const GIB_PER_PRIMARY: f64 = 8.0;

/// `cargo xtask bench capacity`: the `capacity-bench` binary measures, per
/// algorithm, bytes per key (Redis and the memory store) and Redis time per
/// decision; the table and the sizing computed from it go to
/// `docs/capacity.md`.
fn capacity(root: &Path) -> Result<(), String> {
    let bench = release_binary(root, "capacity-bench")?;
    let out = std::process::Command::new(&bench)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bench.display()))?;
    if !out.status.success() {
        return Err(format!("capacity-bench failed ({})", out.status));
    }
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("capacity-bench printed no JSON rows: {e}"))?;
    let mut table = String::from(
        "| row | Redis bytes/key (`used_memory`) | Redis `MEMORY USAGE` | Redis CPU µs/decision | \
         engine µs/call | decisions/s at 50 tasks | memory store bytes/key (estimate) | memory store \
         bytes/key (resident) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut sizing = format!(
        "\nSizing for {:.0} M decisions/s over {:.0} M active keys, from the rows above (a primary \
         planned at {:.0}% of its core and {GIB_PER_PRIMARY:.0} GiB; replicas not counted):\n\n\
         | algorithm | Redis cores | Redis memory (GiB) | primaries for CPU | primaries for memory | \
         primaries | memory store, 10 M keys (GiB) |\n|---|---:|---:|---:|---:|---:|---:|\n",
        SIZED_DECISIONS_PER_S / 1e6,
        SIZED_KEYS / 1e6,
        CPU_CEILING * 100.0
    );
    for row in &rows {
        let field = |name: &str| row.get(name).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let name = row.get("name").and_then(Value::as_str).unwrap_or("?");
        let _ = writeln!(
            table,
            "| {name} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
            field("redis_used_memory_per_key"),
            field("redis_memory_usage_bytes"),
            field("redis_cpu_us_per_decision"),
            field("redis_script_us_per_call"),
            field("redis_decisions_per_s"),
            field("memory_store_bytes_per_key"),
            field("memory_store_resident_per_key"),
        );
        let gib = 1024.0_f64.powi(3);
        let cores = SIZED_DECISIONS_PER_S * field("redis_cpu_us_per_decision") / 1e6;
        let memory = SIZED_KEYS * field("redis_used_memory_per_key") / gib;
        let for_cpu = (cores / CPU_CEILING).ceil();
        let for_memory = (memory / GIB_PER_PRIMARY).ceil();
        let _ = writeln!(
            sizing,
            "| {} | {cores:.1} | {memory:.1} | {for_cpu:.0} | {for_memory:.0} | {:.0} | {:.1} |",
            name.trim_start_matches("capacity/"),
            for_cpu.max(for_memory),
            10e6 * field("memory_store_resident_per_key") / gib,
        );
    }
    table.push_str(&sizing);
    table.push_str(&layer_figures(root));
    let dir = root.join("target/bench");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("capacity.json");
    let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
    fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    update_doc_in(root, "docs/capacity.md", "capacity", &table)?;
    println!("{table}");
    Ok(())
}

/// What the deny cache and approximate mode change, from the last `bench
/// redis` run's rows (`target/bench/redis.json`), as a paragraph.
fn layer_figures(root: &Path) -> String {
    let rows: Vec<Value> = fs::read(root.join("target/bench/redis.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let trips = |row: &str, field: &str| {
        rows.iter()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(row))
            .and_then(|r| r.get(field))
            .and_then(Value::as_f64)
    };
    match (
        trips("attack/c50", "ours_round_trips_per_decision"),
        trips("approximate/c50", "ours_round_trips_per_decision"),
    ) {
        (Some(attack), Some(approximate)) => format!(
            "\nRedis calls per decision with the layers (rows of the last `cargo xtask bench redis`): \
             `attack/c50` {attack:.3} with the deny cache (90% of requests from keys over their limit), \
             `approximate/c50` {approximate:.4} in approximate mode (10 hot keys, a flush every 50 ms). \
             The Redis cores above scale by the share of decisions that still reach Redis.\n"
        ),
        _ => "\nRun `cargo xtask bench redis` first for the deny cache's and approximate mode's \
              figures (`attack/c50`, `approximate/c50`).\n"
            .to_owned(),
    }
}

/// Writes a suite's rows to `target/bench/SUITE.json` and its table to
/// `docs/benchmarks.md`, and prints the table.
fn publish(root: &Path, suite: &str, rows: &[Value], table: &str) -> Result<(), String> {
    let dir = root.join("target/bench");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{suite}.json"));
    let text = serde_json::to_string_pretty(rows).map_err(|e| e.to_string())?;
    fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    update_doc(root, suite, table)?;
    println!("{table}");
    Ok(())
}

fn workspace_root() -> Result<PathBuf, String> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .map_err(|_| "run this through `cargo xtask`".to_owned())?;
    Path::new(&manifest)
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "xtask has no parent directory".to_owned())
}

/// (benchmark id without the group, median ns per iteration)
fn collect(dir: &Path) -> Result<Vec<(String, f64)>, String> {
    let mut rows = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "new") {
                    rows.push(read_estimate(&path)?);
                } else {
                    stack.push(path);
                }
            }
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if rows.is_empty() {
        return Err(format!("no criterion results under {}", dir.display()));
    }
    Ok(rows)
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_estimate(dir: &Path) -> Result<(String, f64), String> {
    let bench = read_json(&dir.join("benchmark.json"))?;
    let estimates = read_json(&dir.join("estimates.json"))?;
    let id = bench
        .get("full_id")
        .and_then(Value::as_str)
        .ok_or("benchmark.json has no full_id")?;
    let id = id.split_once('/').map_or(id, |(_, rest)| rest).to_owned();
    let median = estimates
        .get("median")
        .and_then(|m| m.get("point_estimate"))
        .and_then(Value::as_f64)
        .ok_or("estimates.json has no median")?;
    Ok((id, median))
}

/// Pairs `ours/X` with `PEER/X` and writes the JSON and the Markdown table.
/// Latency suites report ns per decision (ratio = ours / peer, lower is
/// better for us); rate suites report decisions per second (ratio = ours /
/// peer, higher is better for us).
fn write_outputs(root: &Path, suite: &str, rows: &[(String, f64)]) -> Result<(), String> {
    let rate = RATE_SUITES.contains(&suite);
    let (unit, field) = if rate {
        ("decisions/s", "per_s")
    } else {
        ("ns/decision", "ns")
    };
    let mut out = Vec::new();
    let mut table = format!(
        "| row | ours ({unit}) | peer ({unit}) | ratio ours/peer |\n|---|---:|---:|---:|\n"
    );
    for (id, ours_ns) in rows {
        let Some(name) = id.strip_prefix("ours/") else {
            continue;
        };
        let peer_ns = rows
            .iter()
            // `X+variant` rows of ours pair with the peer's `X`.
            .find(|(pid, _)| {
                let base = name.split_once('+').map_or(name, |(b, _)| b);
                !pid.starts_with("ours/")
                    && pid.split_once('/').is_some_and(|(_, rest)| rest == base)
            })
            .map(|(_, p)| *p);
        let value = |ns: f64| if rate { 1e9 / ns } else { ns };
        let ours = value(*ours_ns);
        let peer = peer_ns.map(value);
        let ratio = peer.map(|p| ratio_of(ours, p));
        out.push(json!({
            "name": name,
            format!("ours_{field}"): round(ours),
            format!("peer_{field}"): peer.map(round),
            "ratio": ratio,
        }));
        let _ = writeln!(
            table,
            "| {name} | {ours:.1} | {} | {} |",
            peer.map_or("–".to_owned(), |p| format!("{p:.1}")),
            ratio.map_or("–".to_owned(), |r| format!("{r:.2}"))
        );
    }
    publish(root, suite, &out, &table)
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `ours / peer`, to two decimals.
fn ratio_of(ours: f64, peer: f64) -> f64 {
    ((ours / peer) * 100.0).round() / 100.0
}

/// A table cell of an in-process pair, `ours / peer (±difference)`, with
/// both figures put in `row` under `names`; a dash for a pair not measured.
fn in_process_cell(row: &mut Value, pair: Option<(f64, f64)>, names: [&str; 2]) -> String {
    match (pair, row.as_object_mut()) {
        (Some((o, p)), Some(fields)) => {
            for (name, x) in names.into_iter().zip([o, p]) {
                fields.insert(name.into(), json!(x.round()));
            }
            format!("{o:.0} / {p:.0} ({:+.0})", o - p)
        }
        _ => "—".to_owned(),
    }
}

/// Replaces the suite's section of `docs/benchmarks.md` (between markers).
fn update_doc(root: &Path, suite: &str, table: &str) -> Result<(), String> {
    update_doc_in(root, "docs/benchmarks.md", suite, table)
}

/// Writes `table` between the `suite`'s markers of the document at `doc`
/// (appended, with its markers, when they are missing).
fn update_doc_in(root: &Path, doc: &str, suite: &str, table: &str) -> Result<(), String> {
    let path = root.join(doc);
    let doc = fs::read_to_string(&path).unwrap_or_default();
    let begin = format!("<!-- bench:{suite}:begin -->");
    let end = format!("<!-- bench:{suite}:end -->");
    let section = format!("{begin}\n{table}{end}");
    let updated = match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}{section}{}",
            doc.get(..b).unwrap_or_default(),
            doc.get(e + end.len()..).unwrap_or_default()
        ),
        _ => format!("{doc}\n{section}\n"),
    };
    fs::write(&path, updated).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::program_and_calibration;

    #[test]
    fn the_clocks_calibration_is_taken_out_of_the_program_total() {
        let text = "\
--------------------------------------------------------------------------------
624,070,246 (100.0%)  PROGRAM TOTALS
--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
 14,304,587 ( 2.29%)  ???:quanta::Clock::new [/bin/profile_http]
 14,304,361 ( 2.29%)  ???:quanta::Calibration::calibrate [/bin/profile_http]
        181 ( 0.00%)  ???:quanta::Clock::new_with_mock [/bin/profile_http]
";
        assert_eq!(
            program_and_calibration(text),
            Some((624_070_246.0, 14_304_587.0))
        );
        let governor = "\
536,276,986 (100.0%)  PROGRAM TOTALS
 13,335,160 ( 2.49%)  ???:<governor::clock::quanta::QuantaClock as core::default::Default>::default [/bin/p]
 13,335,159 ( 2.49%)  ???:<quanta::Clock as core::default::Default>::default [/bin/p]
";
        assert_eq!(
            program_and_calibration(governor),
            Some((536_276_986.0, 13_335_159.0))
        );
        let without = "  9 (100.0%)  PROGRAM TOTALS\n";
        assert_eq!(program_and_calibration(without), Some((9.0, 0.0)));
        assert_eq!(program_and_calibration("nothing"), None);
    }
}
