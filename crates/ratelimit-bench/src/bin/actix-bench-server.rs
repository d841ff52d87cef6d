//! The actix-web server `cargo xtask bench http` loads with wrk:
//! `actix-bench-server none|ours|governor PORT`. `GET /` answers "hello"
//! behind no limiter, our middleware (memory store), or actix-governor, all
//! with the same quota as the axum server (see `ratelimit_bench::RATE`),
//! keyed by peer address. One worker: the bench pins the server to one core.

use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use ratelimit_actix::RateLimit;
use ratelimit_bench::{RATE, bench_policy};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "none".to_owned());
    let port: u16 = args.next().unwrap_or_else(|| "0".to_owned()).parse()?;
    let ours = RateLimit::new(bench_policy(false)?);
    let governor = Arc::new(
        actix_governor::GovernorConfigBuilder::default()
            .requests_per_second(RATE)
            .burst_size(u32::try_from(RATE)?)
            .finish()
            .ok_or("actix-governor rejected the quota")?,
    );
    actix_web::rt::System::new().block_on(async move {
        let hello = || async { "hello" };
        match mode.as_str() {
            "none" => serve!(port, move || App::new().route("/", web::get().to(hello))),
            "ours" => serve!(port, move || App::new()
                .wrap(ours.clone())
                .route("/", web::get().to(hello))),
            "governor" => serve!(port, move || App::new()
                .wrap(actix_governor::Governor::new(&governor))
                .route("/", web::get().to(hello))),
            other => Err(std::io::Error::other(format!(
                "unknown mode {other:?}: none, ours or governor"
            ))),
        }
    })?;
    Ok(())
}
