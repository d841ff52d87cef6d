//! A Rocket server protected by ratekeeper: `GET /`, `GET /login` and
//! `GET /slow?ms=N` are limited, `GET /health` is exempt. The same flags and behaviour as
//! `axum_server`:
//!
//! ```text
//! cargo run -p ratekeeper-e2e --example rocket_server -- \
//!     --listen 127.0.0.1:8080 --storage memory:// --algorithm gcra \
//!     --limit 100 --window 60s --key ip --headers ietf --trust 10.0.0.0/8,127.0.0.1
//! ```
//!
//! One line protects every route: `.attach(RateLimit::new(policy))`.

#[path = "common/server.rs"]
mod server;

use std::error::Error;

use ratekeeper::rocket::RateLimit;
use rocket::fairing::AdHoc;
use rocket::http::ContentType;

#[rocket::get("/")]
fn index() -> (ContentType, &'static str) {
    (ContentType::JSON, server::HELLO)
}

#[rocket::get("/health")]
fn health() -> &'static str {
    "ok"
}

/// The request's `X-Password` header.
struct Password(Option<String>);

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for Password {
    type Error = std::convert::Infallible;

    async fn from_request(
        request: &'r rocket::Request<'_>,
    ) -> rocket::request::Outcome<Self, Self::Error> {
        let password = request.headers().get_one("x-password").map(str::to_owned);
        rocket::request::Outcome::Success(Self(password))
    }
}

#[rocket::get("/login")]
fn login(password: Password) -> (rocket::http::Status, (ContentType, &'static str)) {
    let (status, body) = server::login(password.0.as_deref());
    (rocket::http::Status::new(status), (ContentType::JSON, body))
}

#[rocket::get("/slow?<ms>")]
async fn slow(ms: Option<u64>) -> (ContentType, &'static str) {
    let query = ms.map(|ms| format!("ms={ms}"));
    (ContentType::JSON, server::slow(query.as_deref()).await)
}

#[rocket::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let o = server::parse_args()?;
    let policy = server::policy(&o).await?;
    let config = rocket::Config {
        address: o.listen.ip(),
        port: o.listen.port(),
        log_level: rocket::config::LogLevel::Critical,
        ..rocket::Config::release_default()
    };
    let banner = move |rocket: &rocket::Rocket<rocket::Orbit>| {
        let addr = std::net::SocketAddr::new(rocket.config().address, rocket.config().port);
        println!("{}", server::describe(&o, addr));
    };
    rocket::custom(config)
        .attach(RateLimit::new(policy))
        .attach(AdHoc::on_liftoff("banner", move |rocket| {
            Box::pin(async move { banner(rocket) })
        }))
        .mount("/", rocket::routes![index, health, login, slow])
        .launch()
        .await?;
    // Rocket stops gracefully on Ctrl-C by itself.
    println!("shut down");
    Ok(())
}
