//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `ci`: format check, clippy with `-D warnings`, every test, doc tests and
//!   rustdoc with broken intra-doc links denied: what must pass before a change lands.
//! - `test`: provisions what the tests need on this machine, then runs every test.
//! - `bench [memory]`: runs benchmarks against their peers and writes
//!   `target/bench/<name>.json` and `docs/benchmarks.md`.

mod bench;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("bench") => bench::run(args.get(1..).unwrap_or_default()),
        _ => {
            eprintln!("usage: cargo xtask <ci | test | bench [memory]>");
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

/// What the tests need that cargo does not fetch. Nothing yet: the memory
/// store and the testkit run in-process.
fn provision() -> Result<(), String> {
    Ok(())
}

fn test() -> Result<(), String> {
    provision()?;
    cargo(
        &["test", "--workspace", "--all-features", "--all-targets"],
        &[],
    )?;
    cargo(&["test", "--workspace", "--all-features", "--doc"], &[])
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
    )
}
