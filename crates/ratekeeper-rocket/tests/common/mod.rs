//! A real Rocket server for the tests, on an ephemeral loopback port.
#![allow(dead_code, reason = "each test binary uses part of this")]
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test harness set-up; a handler that panics"
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use ratekeeper_core::Storage;
use ratekeeper_http::SharedPolicy;
use ratekeeper_rocket::{RateLimit, RateLimitDecision, set_identity};
use ratekeeper_testkit::http::{
    HttpHarness, InFlight, Server, calls_body, count_call, decision_body, login, most_body, slow,
    stream_delay, suite_identity,
};
use rocket::fairing::AdHoc;
use rocket::http::Status;
use rocket::request::{self, FromRequest};
use rocket::{Build, Request, Rocket, Route, State};

#[rocket::get("/")]
fn index() -> &'static str {
    "ok"
}

#[rocket::get("/health")]
fn health() -> &'static str {
    "ok"
}

#[rocket::get("/users/<id>")]
fn user(id: u64) -> &'static str {
    let _ = id;
    "user"
}

#[rocket::post("/users/<id>")]
fn user_post(id: u64) -> &'static str {
    let _ = id;
    "user"
}

#[rocket::get("/decision")]
fn decision(decision: Option<RateLimitDecision>) -> String {
    decision_body(decision.as_ref().map(|d| d.decision()))
}

/// How many times `/counted` ran, per server.
pub(crate) struct Calls(AtomicU64);

#[rocket::get("/counted")]
fn counted(calls: &State<Calls>) -> String {
    count_call(&calls.0)
}

#[rocket::get("/calls")]
fn calls(calls: &State<Calls>) -> String {
    calls_body(&calls.0)
}

#[rocket::get("/slow?<ms>")]
async fn slow_route(ms: Option<u64>, flight: &State<InFlight>) -> &'static str {
    let query = ms.map(|ms| format!("ms={ms}"));
    slow(query.as_deref(), flight).await
}

#[rocket::get("/most")]
fn most(flight: &State<InFlight>) -> String {
    most_body(flight)
}

/// `/stream`: `first ` at once, `second` after the pause asked for.
#[rocket::get("/stream?<ms>")]
fn stream(ms: Option<u64>) -> rocket::response::stream::ByteStream![&'static [u8]] {
    let delay = stream_delay(ms.map(|ms| format!("ms={ms}")).as_deref());
    rocket::response::stream::ByteStream! {
        yield &b"first "[..];
        tokio::time::sleep(delay).await;
        yield &b"second"[..];
    }
}

#[rocket::get("/panic")]
fn panics() -> &'static str {
    panic!("a handler that panics")
}

/// The request's `x-password` header.
pub(crate) struct Password(Option<String>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Password {
    type Error = std::convert::Infallible;

    async fn from_request(request: &'r Request<'_>) -> request::Outcome<Self, Self::Error> {
        let password = request.headers().get_one("x-password").map(str::to_owned);
        request::Outcome::Success(Self(password))
    }
}

#[rocket::get("/login")]
fn sign_in(password: Password) -> (Status, &'static str) {
    let (status, body) = login(password.0.as_deref());
    (Status::new(status), body)
}

/// The suite's routes.
pub(crate) fn routes() -> Vec<Route> {
    rocket::routes![
        index, health, user, user_post, decision, counted, calls, sign_in, slow_route, most,
        panics, stream
    ]
}

/// A quiet Rocket on 127.0.0.1:0 whose own authentication turns `x-user` /
/// `x-tier` into the caller's identity, ahead of the rate limiter.
pub(crate) fn app() -> Rocket<Build> {
    let config = rocket::Config {
        address: Ipv4Addr::LOCALHOST.into(),
        port: 0,
        workers: 2,
        log_level: rocket::config::LogLevel::Off,
        cli_colors: false,
        shutdown: rocket::config::Shutdown {
            ctrlc: false,
            ..rocket::config::Shutdown::default()
        },
        ..rocket::Config::debug_default()
    };
    rocket::custom(config)
        .manage(Calls(AtomicU64::new(0)))
        .manage(InFlight::default())
        .attach(AdHoc::on_request("auth", |request, _| {
            Box::pin(async move {
                if let Some(identity) = suite_identity(|name| request.headers().get_one(name)) {
                    set_identity(request, identity);
                }
            })
        }))
}

/// Stops the server when the scenario is done.
pub(crate) struct Stop(rocket::Shutdown);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.clone().notify();
    }
}

/// Launches `rocket`; returns its address and what stops it.
pub(crate) async fn launch(rocket: Rocket<Build>) -> (SocketAddr, Stop) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let rocket = rocket.attach(AdHoc::on_liftoff("report", |rocket| {
        Box::pin(async move {
            let _ = tx.send((rocket.config().port, rocket.shutdown()));
        })
    }));
    tokio::spawn(async move {
        let _ = rocket.launch().await;
    });
    let (port, shutdown) = rx.await.expect("rocket lifted off");
    (
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Stop(shutdown),
    )
}

pub(crate) struct RocketHarness {
    pub(crate) sqlite: bool,
}

#[async_trait]
impl HttpHarness for RocketHarness {
    async fn serve(&self, policy: SharedPolicy) -> Server {
        let (addr, stop) = launch(app().attach(RateLimit::new(policy)).mount("/", routes())).await;
        Server {
            addr,
            guard: Box::new(stop),
        }
    }

    async fn store(&self) -> Arc<dyn Storage> {
        if self.sqlite {
            Arc::new(ratekeeper_sqlite::SqliteStorage::in_memory().expect("a SQLite store"))
        } else {
            Arc::new(ratekeeper_memory::MemoryStorage::new())
        }
    }
}
