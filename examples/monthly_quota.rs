//! A monthly API quota per customer that starts again at midnight of the
//! 1st in the customer's time zone, with a daily cap beside it.
//!
//! The clock is a manual one, set to the last evening of October 2024 in
//! Berlin (the month the clocks went back): the quota runs out, the reset
//! says how long until November begins there, and at midnight it is whole
//! again.
//!
//! Run with `cargo run --example monthly_quota`.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use ratekeeper::memory::MemoryStorage;
use ratekeeper::{Algorithm, Calendar, Limiter, ManualClock, Rule, Timestamp};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    // 2024-10-31 22:00 UTC: 23:00 on Halloween in Berlin (CET).
    let clock = ManualClock::new(Timestamp::from_micros(1_730_412_000_000_000));
    let store = MemoryStorage::builder()
        .clock(Arc::new(clock.clone()))
        .build();
    let limiter = Limiter::builder(Arc::new(store))
        .clock(clock.clone())
        .build();
    let berlin = Calendar::new("Europe/Berlin")?;
    let monthly = Rule::new("monthly", Algorithm::FixedWindow, "5/month".parse()?)?
        .with_calendar(berlin.clone())?;
    let daily =
        Rule::new("daily", Algorithm::FixedWindow, "3/day".parse()?)?.with_calendar(berlin)?;
    let customer = "acme";

    // Earlier in October the customer used 3 of its 5.
    limiter.check_cost(&monthly, customer, 3).await?;
    for call in 1..=3 {
        let d = limiter
            .check_all(&[(&monthly, customer), (&daily, customer)], 1)
            .await?;
        println!(
            "call {call}: {} by {}, {} left, resets in {:?}",
            if d.is_allowed() { "allowed" } else { "DENIED" },
            d.rule(),
            d.remaining(),
            d.reset_after()
        );
    }
    // Midnight in Berlin: November, and a new day.
    clock.advance(Duration::from_secs(3_600));
    let d = limiter
        .check_all(&[(&monthly, customer), (&daily, customer)], 1)
        .await?;
    println!(
        "November 1st, 00:00 in Berlin: {}, {} left by {}, resets in {:?}",
        if d.is_allowed() { "allowed" } else { "DENIED" },
        d.remaining(),
        d.rule(),
        d.reset_after()
    );
    Ok(())
}
