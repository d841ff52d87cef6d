//! The actix-web server `cargo xtask bench http` loads with wrk:
//! `actix-bench-server none|ours|ours+decision|ours-headers|governor PORT`. `GET /`
//! answers "hello" behind no limiter, our middleware (memory store; the
//! modes of `ratekeeper_bench::our_policy`), or actix-governor, all
//! with the same quota as the axum server (see `ratekeeper_bench::RATE`),
//! keyed by peer address. One worker: the bench pins the server to one core.
//!
//! `actix-bench-server MODE in-process N` serves nothing: it calls the same
//! app N times through actix's test service (no network) and prints
//! "MODE: X ns per request".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{App, HttpServer, web};
use ratekeeper_actix::RateLimit;
use ratekeeper_bench::{RATE, our_policy};

/// Serves the app `$app` builds (each mode's app is its own type).
macro_rules! serve {
    ($port:expr, $app:expr) => {{
        let server = HttpServer::new($app)
            .workers(1)
            .bind(("127.0.0.1", $port))?;
        for addr in server.addrs() {
            println!("{addr}");
        }
        server.run().await
    }};
}

/// Nanoseconds per request of the app `$app` builds, called `$n` times
/// in process.
macro_rules! measure {
    ($n:expr, $app:expr) => {{
        let app = actix_web::test::init_service($app).await;
        let peer: SocketAddr = "127.0.0.1:40000".parse()?;
        let start = Instant::now();
        for _ in 0..$n {
            let request = actix_web::test::TestRequest::get()
                .uri("/")
                .peer_addr(peer)
                .to_request();
            let response = actix_web::test::call_service(&app, request).await;
            if !response.status().is_success() {
                return Err(format!("status {}", response.status()).into());
            }
        }
        start.elapsed().as_nanos() as f64 / f64::from($n)
    }};
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "none".to_owned());
    let second = args.next().unwrap_or_else(|| "0".to_owned());
    if second == "in-process" {
        let n: u32 = args.next().unwrap_or_else(|| "500000".to_owned()).parse()?;
        return in_process(&mode, n);
    }
    let port: u16 = second.parse()?;
    let ours = our_policy(&mode).transpose()?.map(RateLimit::new);
    let governor = Arc::new(
        actix_governor::GovernorConfigBuilder::default()
            .requests_per_second(RATE)
            .burst_size(u32::try_from(RATE)?)
            .finish()
            .ok_or("actix-governor rejected the quota")?,
    );
    actix_web::rt::System::new().block_on(async move {
        let hello = || async { "hello" };
        match (mode.as_str(), ours) {
            ("none", _) => serve!(port, move || App::new().route("/", web::get().to(hello))),
            ("governor", _) => serve!(port, move || App::new()
                .wrap(actix_governor::Governor::new(&governor))
                .route("/", web::get().to(hello))),
            (_, Some(ours)) => serve!(port, move || App::new()
                .wrap(ours.clone())
                .route("/", web::get().to(hello))),
            (other, None) => Err(std::io::Error::other(format!(
                "unknown mode {other:?}: none, ours, ours+decision, ours-headers or governor"
            ))),
        }
    })?;
    Ok(())
}

/// `MODE in-process N`: the same apps, called without a network.
fn in_process(mode: &str, n: u32) -> Result<(), Box<dyn std::error::Error>> {
    let ours = our_policy(mode).transpose()?.map(RateLimit::new);
    let governor = actix_governor::GovernorConfigBuilder::default()
        .requests_per_second(RATE)
        .burst_size(u32::try_from(RATE)?)
        .finish()
        .ok_or("actix-governor rejected the quota")?;
    let ns = actix_web::rt::System::new().block_on(async move {
        let hello = || async { "hello" };
        Ok::<_, Box<dyn std::error::Error>>(match (mode, ours) {
            ("none", _) => measure!(n, App::new().route("/", web::get().to(hello))),
            ("governor", _) => measure!(
                n,
                App::new()
                    .wrap(actix_governor::Governor::new(&governor))
                    .route("/", web::get().to(hello))
            ),
            (_, Some(ours)) => {
                measure!(n, App::new().wrap(ours).route("/", web::get().to(hello)))
            }
            (other, None) => {
                return Err(format!(
                    "unknown mode {other:?}: none, ours, ours+decision, ours-headers or governor"
                )
                .into());
            }
        })
    })?;
    println!("{mode}: {ns:.0} ns per request");
    Ok(())
}
