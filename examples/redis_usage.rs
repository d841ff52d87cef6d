//! The Redis store: limits shared by every app instance, exactly.
//!
//! Start a server (`redis-server --port 6379`), then run
//! `cargo run --example redis_usage --features redis -- [URL]`. The URL can be
//! any form the store reads: `redis://127.0.0.1:6379/0`,
//! `redis+sentinel://127.0.0.1:26379/mymaster`,
//! `redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002`,
//! `rediss://…?tls_ca_file=ca.pem`. Run it in two terminals at once: both
//! count against the same limits.

use std::error::Error;
use std::sync::Arc;

use ratekeeper::redis::RedisStorage;
use ratekeeper::{Algorithm, Limiter, Rule, Storage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0?prefix=example:".to_owned());
    // `connect` reaches the server now, so a wrong address or password is an
    // error here rather than on the first request.
    let store = match RedisStorage::connect(&url).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot use Redis at {url}: {e}\nStart one with `redis-server --port 6379`.");
            std::process::exit(1);
        }
    };
    let limiter = Limiter::new(Arc::new(store.clone()));

    // Two quotas on one client, decided in one script call: 5 per second and
    // 20 per minute. Both keys share the client's Cluster slot.
    let burst = Rule::new("burst", Algorithm::Gcra, "5/s".parse()?)?;
    let sustained = Rule::new(
        "sustained",
        Algorithm::SlidingWindowCounter,
        "20/minute".parse()?,
    )?;
    for i in 1..=7 {
        let d = limiter
            .check_all(&[(&burst, "client-7"), (&sustained, "client-7")], 1)
            .await?;
        match d.retry_after() {
            None => println!(
                "request {i}: allowed ({} left under {:?})",
                d.remaining(),
                d.rule()
            ),
            Some(wait) => println!("request {i}: denied by {:?}, retry in {wait:?}", d.rule()),
        }
    }

    // A worker calling a third-party API at most 2 times per second, however
    // many copies of it run: until_ready waits for its turn.
    let api = Rule::new("partner-api", Algorithm::Gcra, "2/s".parse()?)?;
    let started = std::time::Instant::now();
    for call in 1..=4 {
        limiter.until_ready(&api, "partner").await?;
        println!("partner call {call} at {:?}", started.elapsed());
    }

    let stats = store.stats().await?;
    println!(
        "\nstore: {} keys under {:?}",
        stats.keys.unwrap_or(0),
        store.prefix()
    );
    for (name, value) in &stats.details {
        println!("  {name}: {value}");
    }
    // Leave nothing behind.
    store.clear().await?;
    Ok(())
}
