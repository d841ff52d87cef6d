//! The SQLite store: limits that survive restarts and are shared by processes.
//!
//! Run with `cargo run --example sqlite_usage --features sqlite -- [PATH]`; run
//! it twice, or twice at once, and the second run sees the first one's usage.

use std::error::Error;

use ratekeeper::{Algorithm, Limiter, Rule};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        std::env::temp_dir()
            .join("ratelimit-example.db")
            .display()
            .to_string()
    });
    let store = ratekeeper::from_url(&format!("sqlite://{path}"))?;
    let limiter = Limiter::new(store.clone());

    // 10 report exports per hour per team, shared by every process using the file.
    let exports = Rule::new(
        "exports",
        Algorithm::SlidingWindowCounter,
        "10/hour".parse()?,
    )?;
    for i in 1..=4 {
        let d = limiter.check(&exports, "team-a").await?;
        if d.is_allowed() {
            println!("export {i}: allowed, {} left this hour", d.remaining());
        } else {
            println!(
                "export {i}: denied, retry in {:?}",
                d.retry_after().unwrap_or_default()
            );
        }
    }
    let stats = store.stats().await?;
    println!(
        "\n{} store at {path}: {} live keys, {} bytes on disk",
        stats.backend,
        stats.keys.unwrap_or(0),
        stats.approx_bytes.unwrap_or(0)
    );
    println!("Run me again: the counts carry over.");
    Ok(())
}
