//! At most 3 calls to a partner API in flight, whatever the number of
//! workers: each worker takes a place before calling and gives it back when
//! the call returns.
//!
//! Twelve workers each make two calls that take 50 ms. A worker that finds
//! every place taken waits a little and asks again (places come back when
//! calls end, so the wait a denial reports is only a hint). A place is
//! held at most 30 s: a worker that crashes mid-call frees its place by then.
//!
//! Run with `cargo run --example in_flight`.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ratekeeper::{Limiter, Rule};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let limiter = Limiter::new(ratekeeper::from_url("memory://")?);
    let partner = Rule::concurrency("partner-api", 3, Duration::from_secs(30))?;
    let running = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));

    let mut workers = Vec::new();
    for worker in 0..12 {
        let (limiter, partner) = (limiter.clone(), partner.clone());
        let (running, most) = (running.clone(), most.clone());
        workers.push(tokio::spawn(async move {
            let mut calls = 0;
            let mut waits = 0;
            while calls < 2 {
                let permit = limiter.acquire(&partner, "acme").await?;
                if !permit.is_allowed() {
                    waits += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await; // the call
                running.fetch_sub(1, Ordering::SeqCst);
                permit.release().await?;
                calls += 1;
            }
            println!("worker {worker:>2}: 2 calls made, {waits} times told to wait");
            Ok::<(), ratekeeper::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let most = most.load(Ordering::SeqCst);
    println!("at most {most} calls were in flight at once (the limit is 3)");
    assert!(most <= 3);
    let free = limiter.peek(&partner, "acme").await?.remaining();
    println!("{free} places free at the end");
    Ok(())
}
