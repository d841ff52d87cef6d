//! An axum server protected by ratelimit: `GET /` is limited, `GET /health` is
//! exempt. Flags (all optional):
//!
//! ```text
//! cargo run --example axum_server --features axum -- \
//!     --listen 127.0.0.1:8080 --storage memory:// --algorithm gcra \
//!     --limit 100 --window 60s --key ip --headers ietf --trust 10.0.0.0/8,127.0.0.1
//! ```
//!
//! `--storage` takes any URL `ratelimit::from_url` accepts (`sqlite://…` with
//! `--features sqlite`); `--key` is `ip` or `header:NAME`; `--headers` is
//! `legacy`, `ietf`, `both` or `none`; `--trust` lists trusted proxies.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use ratelimit::axum::RateLimitLayer;
use ratelimit::http::{
    ClientIpPolicy, HeaderStyle, HttpPolicy, KeyExtractor, KeySource, Limits, ResetFormat,
    RouteTable,
};
use ratelimit::{Algorithm, Limiter, Quota, Rule, parse_duration};

struct Options {
    listen: SocketAddr,
    storage: String,
    algorithm: Algorithm,
    limit: u64,
    window: Duration,
    key: KeySource,
    headers: HeaderStyle,
    trust: Vec<String>,
}

fn parse_args() -> Result<Options, Box<dyn Error>> {
    let mut o = Options {
        listen: "127.0.0.1:8080".parse()?,
        storage: "memory://".to_owned(),
        algorithm: Algorithm::Gcra,
        limit: 100,
        window: Duration::from_secs(60),
        key: KeySource::Ip,
        headers: HeaderStyle::Ietf,
        trust: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => o.listen = value()?.parse()?,
            "--storage" => o.storage = value()?,
            "--algorithm" => o.algorithm = value()?.parse()?,
            "--limit" => o.limit = value()?.parse()?,
            "--window" => o.window = parse_duration(&value()?)?,
            "--key" => {
                let v = value()?;
                o.key = match v.split_once(':') {
                    None if v == "ip" => KeySource::Ip,
                    Some(("header", name)) if !name.is_empty() => KeySource::Header(name.into()),
                    _ => return Err(format!("--key is ip or header:NAME, not {v:?}").into()),
                };
            }
            "--headers" => {
                o.headers = match value()?.as_str() {
                    "legacy" => HeaderStyle::Legacy,
                    "ietf" => HeaderStyle::Ietf,
                    "both" => HeaderStyle::Both,
                    "none" => HeaderStyle::None,
                    other => {
                        return Err(format!(
                            "--headers is legacy, ietf, both or none, not {other:?}"
                        )
                        .into());
                    }
                }
            }
            "--trust" => o.trust = value()?.split(',').map(str::to_owned).collect(),
            "--help" | "-h" => {
                println!("see the top of examples/axum_server.rs for the flags");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other:?} (try --help)").into()),
        }
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let o = parse_args()?;
    let rule = Rule::new("api", o.algorithm, Quota::new(o.limit, o.window)?)?;
    let routes = RouteTable::new()
        .default_limits(Limits::new(vec![rule]))
        .exempt("/health")?;
    let keys = KeyExtractor::new(o.key).proxies(ClientIpPolicy::new().trust(&o.trust)?);
    let policy = HttpPolicy::new(Limiter::new(ratelimit::from_url(&o.storage)?), routes, keys)
        .headers(o.headers, ResetFormat::Seconds);

    let app = Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    r#"{"message":"hello"}"#,
                )
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(policy));
    let listener = tokio::net::TcpListener::bind(o.listen).await?;
    println!(
        "listening on http://{} ({} {} per {:?}, store {})",
        listener.local_addr()?,
        o.algorithm,
        o.limit,
        o.window,
        o.storage
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down");
    })
    .await?;
    Ok(())
}
