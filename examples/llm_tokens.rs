//! An LLM token budget: reserve an estimate before each call, settle the
//! real token count after it.
//!
//! A team may spend 10 000 tokens and make 20 calls per minute. A call's
//! cost is known only once the model has answered, so each call reserves
//! what its prompt is likely to cost (both limits at once, all or nothing),
//! and settles at what the model reports: what was not used comes back,
//! what went past the estimate is charged (and owed, if it takes the team
//! past its budget). A call that fails gives its whole estimate back.
//!
//! Run with `cargo run --example llm_tokens`.

use std::error::Error;

use ratekeeper::{Algorithm, Limiter, Rule};

/// A pretend model: how many tokens a prompt and its answer cost.
fn call_model(prompt_words: u64) -> Result<u64, &'static str> {
    match prompt_words {
        0 => Err("empty prompt"),
        n => Ok(n * 3 + 120),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let limiter = Limiter::new(ratekeeper::from_url("memory://")?);
    let tokens = Rule::new(
        "llm-tokens",
        Algorithm::TokenBucket,
        "10000/minute".parse()?,
    )?;
    let calls = Rule::new("llm-calls", Algorithm::FixedWindow, "20/minute".parse()?)?;
    let team = "team-a";

    for prompt_words in [400, 0, 900, 2_500, 1_200, 600] {
        // The estimate: the prompt's tokens and a typical answer.
        let estimate = prompt_words * 2 + 500;
        let mut reservation = limiter
            .reserve_each(&[(&tokens, team, estimate), (&calls, team, 1)])
            .await?;
        if !reservation.is_allowed() {
            let d = reservation.decision();
            println!(
                "{prompt_words:>5} words: estimate {estimate:>5} DENIED by {}, retry in {:?}",
                d.rule(),
                d.retry_after().unwrap_or_default()
            );
            continue;
        }
        match call_model(prompt_words) {
            Ok(used) => {
                // The call is counted as made; the tokens at what they cost.
                let after = reservation.settle_each(&[used, 1]).await?;
                if let [tokens_left, calls_left] = after.as_slice() {
                    println!(
                        "{prompt_words:>5} words: estimate {estimate:>5}, used {used:>5}: {:>5} tokens left, {:>2} calls",
                        tokens_left.remaining(),
                        calls_left.remaining()
                    );
                }
            }
            Err(why) => {
                let after = reservation.cancel().await?;
                let tokens_left = after.first().map_or(0, |d| d.remaining());
                println!(
                    "{prompt_words:>5} words: failed ({why}), estimate given back: {tokens_left} tokens left"
                );
            }
        }
    }

    // A cost learned with no reservation (a streamed answer's tail), and a
    // refund for a call the provider did not bill.
    let d = limiter.charge(&tokens, team, 7_000).await?;
    println!(
        "charged 7000 after the fact: allowed now? {} (retry in {:?})",
        d.is_allowed(),
        d.retry_after().unwrap_or_default()
    );
    let d = limiter.refund(&tokens, team, 1_000).await?;
    println!("refunded 1000: {} tokens left", d.remaining());
    Ok(())
}
