//! The Rocket server `cargo xtask bench http` loads with wrk:
//! `rocket-bench-server none|ours|ours+decision|ours-headers|governor PORT`. `GET /`
//! answers "hello" behind no limiter, our fairing (memory store; the modes
//! of `ratekeeper_bench::our_policy`), or rocket-governor's
//! guard, all with the same quota as the axum server (see
//! `ratekeeper_bench::RATE`), keyed by client address. One worker: the bench
//! pins the server to one core.
//!
//! `rocket-bench-server MODE in-process N` serves nothing: it dispatches N
//! requests to the same app through Rocket's local client (no network) and
//! prints "MODE: X ns per request".

use std::num::NonZeroU32;

use ratekeeper_bench::{RATE, our_policy};
use ratekeeper_rocket::RateLimit;
use rocket_governor::{Method, Quota, RocketGovernable, RocketGovernor};

struct Governed;

impl RocketGovernable<'_> for Governed {
    fn quota(_: Method, _: &str) -> Quota {
        let rate =
            NonZeroU32::new(u32::try_from(RATE).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        Quota::per_second(rate).allow_burst(rate)
    }
}

#[rocket::get("/")]
fn plain() -> &'static str {
    "hello"
}

#[rocket::get("/")]
fn governed(_limit: RocketGovernor<'_, Governed>) -> &'static str {
    "hello"
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "none".to_owned());
    let second = args.next().unwrap_or_else(|| "0".to_owned());
    let in_process = second == "in-process";
    let port: u16 = if in_process { 0 } else { second.parse()? };
    let config = rocket::Config {
        address: std::net::Ipv4Addr::LOCALHOST.into(),
        port,
        workers: 1,
        log_level: rocket::config::LogLevel::Off,
        ..rocket::Config::release_default()
    };
    let rocket = rocket::custom(config);
    let rocket = match (mode.as_str(), our_policy(&mode)) {
        ("none", _) => rocket.mount("/", rocket::routes![plain]),
        (_, Some(ours)) => rocket
            .attach(RateLimit::new(ours?))
            .mount("/", rocket::routes![plain]),
        ("governor", _) => rocket.mount("/", rocket::routes![governed]).register(
            "/",
            rocket::catchers![rocket_governor::rocket_governor_catcher],
        ),
        (other, None) => {
            return Err(format!(
                "unknown mode {other:?}: none, ours, ours+decision, ours-headers or governor"
            )
            .into());
        }
    };
    if in_process {
        let n: u32 = args.next().unwrap_or_else(|| "200000".to_owned()).parse()?;
        let ns = rocket::execute(async move {
            let client = rocket::local::asynchronous::Client::untracked(rocket).await?;
            let peer: std::net::SocketAddr = "127.0.0.1:40000".parse()?;
            let start = std::time::Instant::now();
            for _ in 0..n {
                let response = client.get("/").remote(peer).dispatch().await;
                if response.status() != rocket::http::Status::Ok {
                    return Err(format!("status {}", response.status()).into());
                }
            }
            Ok::<_, Box<dyn std::error::Error>>(start.elapsed().as_nanos() as f64 / f64::from(n))
        })?;
        println!("{mode}: {ns:.0} ns per request");
        return Ok(());
    }
    let rocket = rocket.attach(rocket::fairing::AdHoc::on_liftoff("address", |rocket| {
        Box::pin(async move {
            println!("127.0.0.1:{}", rocket.config().port);
        })
    }));
    rocket::execute(rocket.launch())?;
    Ok(())
}
