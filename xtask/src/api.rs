//! `cargo xtask api [--check]`: the public API of every library crate, one
//! item per line, in `api/<crate>.txt`, so that a change to it shows in
//! review. `--check` (run by `cargo xtask ci`) fails when a listing is out
//! of date.
//!
//! The listings come from `cargo-public-api`, which reads rustdoc's JSON
//! output: that needs the nightly toolchain, and a `cargo-public-api` that
//! reads the JSON format of that nightly. Without a nightly toolchain the
//! check is skipped, loudly.

use std::path::Path;
use std::process::Command;

use crate::{cargo, on_path};

/// The crates whose public API is promised.
const CRATES: &[&str] = &[
    "ratekeeper",
    "ratekeeper-core",
    "ratekeeper-layers",
    "ratekeeper-http",
    "ratekeeper-config",
    "ratekeeper-memory",
    "ratekeeper-sqlite",
    "ratekeeper-redis",
    "ratekeeper-axum",
    "ratekeeper-actix",
    "ratekeeper-rocket",
    "ratekeeper-testkit",
];

/// The `cargo-public-api` release that reads the JSON of the nightly these
/// machines have (rustdoc JSON format 57); a newer nightly may need a newer
/// release.
const TOOL: &str = "cargo-public-api@0.52.0";

pub(crate) fn run(root: &Path, check: bool) -> Result<(), String> {
    if !crate::nightly_available() {
        eprintln!(
            "xtask: SKIPPED: the public API listings need the nightly toolchain \
             (`rustup toolchain install nightly`); api/*.txt were not checked"
        );
        return Ok(());
    }
    if !on_path("cargo-public-api") {
        cargo(&["install", "--locked", TOOL], &[])?;
    }
    let dir = root.join("api");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut stale = Vec::new();
    for krate in CRATES {
        let listing = listing(krate)?;
        let path = dir.join(format!("{krate}.txt"));
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == listing {
            continue;
        }
        if check {
            stale.push(format!("api/{krate}.txt"));
        } else {
            std::fs::write(&path, listing)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("xtask: api/{krate}.txt updated");
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the public API changed: {} out of date. Run `cargo xtask api` and review \
             the diff: every line is a promise",
            stale.join(", ")
        ))
    }
}

/// `krate`'s public API with every feature, without blanket and auto-trait
/// implementations (derived ones stay: `Clone` or `Eq` is a promise too).
fn listing(krate: &str) -> Result<String, String> {
    eprintln!("$ cargo public-api -p {krate} --all-features -ss");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["public-api", "-p", krate, "--all-features", "-ss"])
        .output()
        .map_err(|e| format!("cannot run cargo public-api: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo public-api -p {krate}` failed ({}): {}. A newer nightly may need a newer \
             {TOOL}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("cargo public-api printed no text: {e}"))
}
