//! Subscription tiers from a configuration file, with the tier of each user
//! found by an async lookup (standing in for a database query) and cached.
//!
//! ```text
//! cargo run -p ratekeeper-e2e --example saas_tiers -- \
//!     --config examples/config/saas_tiers.yaml --listen 127.0.0.1:8080
//! curl -X POST -H 'authorization: Bearer fiona' localhost:8080/api/v1/tasks/task  # free: 1/hour
//! curl -X POST -H 'authorization: Bearer paul' localhost:8080/api/v1/tasks/task   # pro: 10/hour
//! curl localhost:8080/                                                           # anonymous: per IP
//! kill -HUP <pid>                                                                # reread the file
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use ratekeeper::axum::RateLimitLayer;
use ratekeeper::config::{Loader, PolicyCode};
use ratekeeper::http::{Identity, tier_resolver_fn};

/// The accounts table: who pays for what. A real application queries its
/// database here.
struct Accounts {
    tiers: HashMap<&'static str, &'static str>,
    lookups: AtomicU64,
}

impl Accounts {
    async fn tier_of(&self, user: &str) -> Option<String> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        // A query's latency.
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.tiers.get(user).map(|t| (*t).to_owned())
    }
}

/// The application's authentication: `Authorization: Bearer <user>` names
/// the caller (a real one checks a token). The limiter reads the identity.
async fn auth(mut request: Request, next: Next) -> Response {
    let user = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|u| Identity::new(u.trim()));
    if let Some(identity) = user {
        request.extensions_mut().insert(identity);
    }
    next.run(request).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut file = "examples/config/saas_tiers.yaml".to_owned();
    let mut listen: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--config", Some(v)) => file = v,
            ("--listen", Some(v)) => listen = v.parse()?,
            _ => return Err("flags: --config FILE --listen ADDR".into()),
        }
    }

    let accounts = Arc::new(Accounts {
        tiers: HashMap::from([("fiona", "free"), ("paul", "pro"), ("petra", "pro")]),
        lookups: AtomicU64::new(0),
    });
    let db = accounts.clone();
    let code = PolicyCode::new().tier_resolver(tier_resolver_fn(move |who: Identity| {
        let db = db.clone();
        async move { Ok(db.tier_of(who.user()).await) }
    }));
    let live = ratekeeper::config::start_with(Loader::file(&file), code).await?;
    live.reload_on_hangup()?;

    let app = Router::new()
        .route("/api/v1/tasks/task", post(|| async { "task created" }))
        .route("/api/v1/reports/{id}", get(|| async { "report" }))
        .route(
            "/lookups",
            get(move || async move { accounts.lookups.load(Ordering::Relaxed).to_string() }),
        )
        .route("/", get(|| async { "hello" }))
        // Layers run outside in: authentication first, then the limiter.
        .layer(RateLimitLayer::new(&live))
        .layer(middleware::from_fn(auth));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "listening on http://{} (configuration {file})",
        listener.local_addr()?
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
