//! The quick start: an in-memory store, a few rules, allowed and denied
//! decisions.
//!
//! Run with `cargo run --example basic_usage`.

use std::error::Error;
use std::time::Duration;

use ratekeeper::{Algorithm, Decision, Limiter, Rule};

fn show(what: &str, d: &Decision) {
    if d.is_allowed() {
        println!(
            "{what:<34} allowed  remaining={:<3} reset_after={:?}",
            d.remaining(),
            d.reset_after()
        );
    } else {
        println!(
            "{what:<34} DENIED   by rule {:?}, retry_after={:?}",
            d.rule(),
            d.retry_after().unwrap_or_default()
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    // The embedded default; `ratekeeper::from_url` also takes the other stores' URLs.
    let limiter = Limiter::new(ratekeeper::from_url("memory://?max_size=10000")?);

    println!("-- 5 requests per second, GCRA, for one API key");
    let api = Rule::new("api", Algorithm::Gcra, "5/second".parse()?)?;
    for i in 1..=7 {
        show(
            &format!("request {i} from key-1"),
            &limiter.check(&api, "key-1").await?,
        );
    }
    show(
        "request 1 from key-2 (own quota)",
        &limiter.check(&api, "key-2").await?,
    );

    println!("\n-- weighted requests: a report costs 3 of 10 units per minute");
    let exports = Rule::new(
        "exports",
        Algorithm::SlidingWindowCounter,
        "10/minute".parse()?,
    )?;
    for i in 1..=4 {
        show(
            &format!("report {i} (cost 3)"),
            &limiter.check_cost(&exports, "team-a", 3).await?,
        );
    }
    show(
        "peek (costs nothing)",
        &limiter.peek(&exports, "team-a").await?,
    );

    println!("\n-- two quotas at once: 2 per second and 3 per hour, all or nothing");
    let burst = Rule::new("login-burst", Algorithm::FixedWindow, "2/s".parse()?)?;
    let hourly = Rule::new(
        "login-hourly",
        Algorithm::SlidingWindowLog,
        "3/hour".parse()?,
    )?
    .with_penalty(Duration::from_secs(600))?;
    for i in 1..=4 {
        let d = limiter
            .check_all(&[(&burst, "alice"), (&hourly, "alice")], 1)
            .await?;
        show(&format!("login attempt {i}"), &d);
    }

    println!("\n-- throttling outgoing calls: wait until allowed (20 per second)");
    let outgoing = Rule::new(
        "third-party",
        Algorithm::TokenBucket,
        "20/s".parse::<ratekeeper::Quota>()?.with_burst(2)?,
    )?;
    let started = std::time::Instant::now();
    for _ in 0..6 {
        limiter.until_ready(&outgoing, "partner-api").await?;
    }
    println!(
        "6 calls sent in {:?} (2 at once, then one every 50ms)",
        started.elapsed()
    );

    let stats = limiter.storage().stats().await?;
    println!(
        "\nstore: {} with {} keys",
        stats.backend,
        stats.keys.unwrap_or(0)
    );
    Ok(())
}
