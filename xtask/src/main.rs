//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `ci`: format check, clippy with `-D warnings`, every test, doc tests,
//!   rustdoc with broken intra-doc links denied (on stable, and on nightly as
//!   docs.rs builds it), `cargo package` of every publishable crate, and the
//!   public API listings: what must pass before a change lands.
//! - `test`: provisions what the tests need on this machine, then runs every test.
//! - `bench [memory|sqlite|http|redis|server|capacity]`: runs benchmarks against their
//!   peers and writes `target/bench/<name>.json` and `docs/benchmarks.md` (`capacity`:
//!   bytes per key and Redis time per decision, and the sizing in `docs/capacity.md`).
//! - `soak [MINUTES]`: the three example servers over one Redis under steady
//!   load while Redis is paused, killed and restarted at random (default 10
//!   minutes; not in CI).
//! - `accuracy [SEED]`: each algorithm beside the exact sliding log on 2 000
//!   simulated Poisson clients (a few seconds; the table in
//!   `docs/algorithms.md` comes from it).
//! - `mutants [PATH...] [-- ARGS]`: mutation testing with `cargo-mutants` over
//!   the given files or folders (default: the core's algorithms, engine, state
//!   and quota); not in CI.
//! - `api [--check]`: writes the public API of every library crate to
//!   `api/<crate>.txt` (`--check`, part of `ci`: fails when one is out of date).

mod api;
mod bench;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("bench") => bench::run(args.get(1..).unwrap_or_default()),
        Some("soak") => soak(args.get(1).map_or("10", String::as_str)),
        Some("accuracy") => accuracy(args.get(1..).unwrap_or_default()),
        Some("mutants") => mutants(args.get(1..).unwrap_or_default()),
        Some("api") => api::run(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(std::path::Path::new(".")),
            args.get(1).is_some_and(|a| a == "--check"),
        ),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | test | bench [memory|sqlite|http|redis|server|capacity] | soak [MINUTES] \
                 | accuracy [SEED] | mutants [PATH...] [-- CARGO_MUTANTS_ARGS] | api [--check]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// What the tests need that cargo does not fetch: `redis-server` and
/// `redis-cli` (the Redis store's tests start real servers, clusters and
/// Sentinels). Installs Debian's package when missing and running as root;
/// otherwise stops with the command to run. The Redis tests never skip.
fn provision() -> Result<(), String> {
    if on_path("redis-server") && on_path("redis-cli") {
        return Ok(());
    }
    apt_install("redis-server", "the tests need redis-server and redis-cli")?;
    if on_path("redis-server") && on_path("redis-cli") {
        Ok(())
    } else {
        Err("redis-server was installed but is not on PATH".to_owned())
    }
}

/// Installs Debian's `package` when running as root with `apt-get`;
/// otherwise an error saying `why` it is needed and the command to run.
pub(crate) fn apt_install(package: &str, why: &str) -> Result<(), String> {
    let install = format!("apt-get install -y {package}");
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root || !on_path("apt-get") {
        return Err(format!(
            "{why}, which is not installed; install it (Debian/Ubuntu: `sudo {install}`) and \
             run this again"
        ));
    }
    eprintln!("$ {install}");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    // A fresh machine may have no package lists yet.
    let installed =
        apt(&["install", "-y", package]) || (apt(&["update"]) && apt(&["install", "-y", package]));
    if installed {
        Ok(())
    } else {
        Err(format!(
            "`{install}` failed; install {package} and run this again"
        ))
    }
}

pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Passed and failed tests, summed over every `test result:` line.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test ARGS`, echoing its output and counting its results.
fn cargo_test(args: &[&str], tally: &mut Tally) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo test {}", args.join(" "));
    let mut child = Command::new(cargo)
        .arg("test")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout().lock();
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| e.to_string())?;
            tally.add(&line);
            let _ = writeln!(stdout, "{line}");
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo test {}` failed ({status})", args.join(" ")))
    }
}

fn test() -> Result<(), String> {
    provision()?;
    let mut tally = Tally::default();
    let result = cargo_test(
        &["--workspace", "--all-features", "--all-targets"],
        &mut tally,
    )
    .and_then(|()| cargo_test(&["--workspace", "--all-features", "--doc"], &mut tally));
    // One closing line, for people and for CI.
    println!("total: {} passed, {} failed", tally.passed, tally.failed);
    result
}

/// `cargo xtask accuracy [SEED]`: runs
/// `crates/ratekeeper-bench/src/bin/accuracy.rs` in release mode, which
/// prints each algorithm's admissions beside the exact sliding log's on the
/// same simulated streams.
fn accuracy(args: &[String]) -> Result<(), String> {
    let mut cmd = vec![
        "run",
        "--release",
        "--quiet",
        "-p",
        "ratekeeper-bench",
        "--bin",
        "accuracy",
        "--",
    ];
    cmd.extend(args.iter().map(String::as_str));
    cargo(&cmd, &[])
}

/// `cargo xtask soak [MINUTES]`: builds the example servers and the `soak`
/// driver (`crates/ratekeeper-bench/src/bin/soak.rs`) in release mode and runs
/// it; it prints admitted against allowed per window, latency percentiles
/// and recovery times, and fails if any window admitted too many.
fn soak(minutes: &str) -> Result<(), String> {
    provision()?;
    minutes
        .parse::<f64>()
        .ok()
        .filter(|m| *m > 0.0)
        .ok_or_else(|| format!("soak takes a number of minutes, not {minutes:?}"))?;
    let examples = ["axum_server", "actix_server", "rocket_server"];
    let mut args = vec!["build", "--release", "--workspace", "--all-features"];
    for e in &examples {
        args.extend(["--example", e]);
    }
    cargo(&args, &[])?;
    cargo(
        &[
            "build",
            "--release",
            "-p",
            "ratekeeper-bench",
            "--bin",
            "soak",
        ],
        &[],
    )?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?
        .join("target/release");
    let status = Command::new(root.join("soak"))
        .arg(minutes)
        .args(examples.iter().map(|e| root.join("examples").join(e)))
        .status()
        .map_err(|e| format!("cannot run soak: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the soak failed ({status})"))
    }
}

/// The files `cargo xtask mutants` mutates when given no path.
const MUTANTS_DEFAULT: [&str; 4] = [
    "crates/ratekeeper-core/src/algorithm",
    "crates/ratekeeper-core/src/engine.rs",
    "crates/ratekeeper-core/src/state.rs",
    "crates/ratekeeper-core/src/quota.rs",
];

/// The test targets that exercise the HTTP policy (in `ratekeeper-http`, the
/// axum adapter and `ratekeeper-e2e`), for `cargo xtask mutants`.
/// They go to every cargo call (`--cargo-arg`), so the build leaves out the
/// end-to-end tests that run the example servers.
const HTTP_POLICY_TESTS: [&str; 8] = [
    "--lib",
    "--test=server",
    "--test=behaviour",
    "--test=http_policy",
    "--test=tiers",
    "--test=runtime_lists",
    "--test=auto_block",
    "--test=config",
];

/// `cargo xtask mutants [PATH...] [-- ARGS]`: runs `cargo mutants` (installing
/// it with `cargo install` when missing) over each path, a file or a folder
/// under `crates/<package>/`. The mutants of a path are tested by its
/// package's tests; the core's also by the memory store's, which run the
/// engine through a real store, and the HTTP policy's by
/// [`HTTP_POLICY_TESTS`]. `ARGS` go to `cargo mutants` as they
/// are (for example `--in-place` to reuse `target/`, `--shard 1/4`,
/// `--iterate`). Results are under `target/mutants/<package>/mutants.out`.
fn mutants(args: &[String]) -> Result<(), String> {
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let (paths, extra) = args.split_at(split);
    let extra: Vec<&str> = extra.iter().skip(1).map(String::as_str).collect();
    let paths: Vec<&str> = if paths.is_empty() {
        MUTANTS_DEFAULT.to_vec()
    } else {
        paths.iter().map(String::as_str).collect()
    };
    if !on_path("cargo-mutants") {
        cargo(&["install", "--locked", "cargo-mutants"], &[])?;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?;
    // One `cargo mutants` run per package, over all of that package's paths.
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
    for path in paths {
        let path = path.trim_start_matches("./").trim_end_matches('/');
        if !root.join(path).exists() {
            return Err(format!("{path}: no such file or folder in the workspace"));
        }
        let package = path
            .strip_prefix("crates/")
            .and_then(|rest| rest.split('/').next())
            .filter(|p| p.starts_with("ratekeeper-"))
            .ok_or_else(|| format!("{path}: not under crates/<package>/"))?
            .to_owned();
        let glob = if root.join(path).is_dir() {
            format!("{path}/**/*.rs")
        } else {
            path.to_owned()
        };
        match runs.iter_mut().find(|(p, _)| *p == package) {
            Some((_, files)) => files.push(glob),
            None => runs.push((package, vec![glob])),
        }
    }
    if runs.iter().any(|(p, _)| p == "ratekeeper-redis") {
        provision()?;
    }
    let mut failed = Vec::new();
    for (package, files) in &runs {
        let dir = root.join("target/mutants").join(package);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let output = dir.display().to_string();
        // Paths are the workspace's, wherever this runs from.
        let workspace = root.display().to_string();
        let mut cmd = vec!["mutants", "--dir", &workspace, "--package", package];
        cmd.extend(["--output", &output]);
        cmd.extend(["--test-package", package]);
        if package == "ratekeeper-http" {
            // The HTTP policy: its own tests, the policy tests through the
            // facade (ratekeeper-e2e, with the memory store) and the shared behaviour suite,
            // which the axum adapter runs through a real server.
            cmd.extend(["--test-package", "ratekeeper-axum"]);
            cmd.extend(["--test-package", "ratekeeper-e2e"]);
            for target in HTTP_POLICY_TESTS {
                cmd.push("--cargo-arg");
                cmd.push(target);
            }
            // cargo-mutants tests the unmutated tree with the mutated
            // package alone, which has not all these targets: no baseline,
            // so a timeout must be given.
            cmd.push("--baseline=skip");
            if !extra.iter().any(|a| a.starts_with("--timeout")) {
                cmd.extend(["--timeout", "120"]);
            }
        } else if package == "ratekeeper-core" {
            // The core, also through the memory store's suite.
            cmd.extend(["--test-package", "ratekeeper-memory"]);
        }
        for file in files {
            cmd.extend(["--file", file]);
        }
        // Mutants are built without debug information: faster to link.
        cmd.extend(["--profile", "mutants"]);
        cmd.extend(extra.iter().copied());
        // cargo-mutants exits non-zero when a mutant survives: go on with the
        // other packages, and fail at the end.
        if let Err(e) = cargo(&cmd, &[]) {
            eprintln!("xtask: {e}; see {output}/mutants.out/missed.txt");
            failed.push(package.as_str());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "mutants survived or failed to build in {}",
            failed.join(", ")
        ))
    }
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    test()?;
    cargo(
        &["doc", "--workspace", "--all-features", "--no-deps"],
        &[(
            "RUSTDOCFLAGS",
            "-D warnings -D rustdoc::broken_intra_doc_links",
        )],
    )?;
    docs_rs()?;
    // Every crate meant for the registry packages (no build: the tests
    // above built the same sources).
    cargo(
        &[
            "package",
            "--workspace",
            "--no-verify",
            "--allow-dirty",
            "--exclude",
            "ratekeeper-bench",
            "--exclude",
            "ratekeeper-e2e",
            "--exclude",
            "xtask",
        ],
        &[],
    )?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?;
    api::run(root, true)
}

/// Whether the nightly toolchain is installed (the docs.rs-style build and
/// the public API listings need it).
pub(crate) fn nightly_available() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The documentation as docs.rs builds it: nightly, every feature,
/// `--cfg docsrs` (so each feature-gated item shows its feature). Skipped,
/// loudly, without a nightly toolchain.
fn docs_rs() -> Result<(), String> {
    if !nightly_available() {
        eprintln!(
            "xtask: SKIPPED: the docs.rs-style documentation build needs the nightly toolchain \
             (`rustup toolchain install nightly`)"
        );
        return Ok(());
    }
    let args = [
        "run",
        "nightly",
        "cargo",
        "doc",
        "--workspace",
        "--all-features",
        "--no-deps",
    ];
    eprintln!("$ rustup {}", args.join(" "));
    let status = Command::new("rustup")
        .args(args)
        .env(
            "RUSTDOCFLAGS",
            "--cfg docsrs -D warnings -D rustdoc::broken_intra_doc_links",
        )
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the docs.rs-style documentation build failed ({status})"
        ))
    }
}
