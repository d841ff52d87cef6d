//! `ratekeeper-server`: ratekeeper's limits as a service, for any language
//! and for Envoy.
//!
//! Serves Envoy's rate-limit gRPC API (v3) and an HTTP JSON API on the
//! stores and configuration of the library: limits files of
//! envoyproxy/ratelimit's YAML format as they are, or this project's own
//! format with `[[domains]]`. See `docs/server.md`.

mod admin;
mod bench;
mod grpc;
mod http;
mod lease;
mod load;
mod request;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use metrics_exporter_prometheus::PrometheusHandle;
use ratekeeper::{Algorithm, Limiter, Quota, Rule};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::service::Service;

/// The command line. Every flag can also be set by its environment
/// variable; both win over the configuration file.
#[derive(Debug, Parser)]
#[command(name = "ratekeeper-server", version, about)]
struct Args {
    /// A configuration file (this project's TOML/YAML/JSON format), a limits
    /// file of envoyproxy/ratelimit's YAML format, or a directory of such
    /// files. Repeat for several.
    #[arg(
        long = "config",
        env = "RATEKEEPER_CONFIG",
        value_delimiter = ',',
        required = true
    )]
    config: Vec<PathBuf>,
    /// The store URL (memory://, sqlite://…, redis://…, redis+cluster://…,
    /// redis+sentinel://…); default: the configuration's, else memory://.
    #[arg(long, env = "RATEKEEPER_STORAGE")]
    storage: Option<String>,
    /// The gRPC address (host:port, or `off`).
    #[arg(long, env = "RATEKEEPER_GRPC")]
    grpc: Option<String>,
    /// The HTTP address (host:port, or `off`).
    #[arg(long, env = "RATEKEEPER_HTTP")]
    http: Option<String>,
    /// The admin address (host:port, or `off`).
    #[arg(long, env = "RATEKEEPER_ADMIN")]
    admin: Option<String>,
    /// The admin API's bearer token (better set by its environment variable).
    #[arg(long, env = "RATEKEEPER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The secret lease ids of `/v1/acquire` are signed with, shared by
    /// every replica (better set by its environment variable).
    #[arg(long, env = "RATEKEEPER_LEASE_SECRET", hide_env_values = true)]
    lease_secret: Option<String>,
    /// Logs as JSON lines.
    #[arg(long, env = "RATEKEEPER_JSON_LOGS")]
    json_logs: bool,
    /// For `cargo xtask bench server`: N decisions through the services in
    /// process, timed; then exit.
    #[arg(long, hide = true)]
    bench_in_process: Option<usize>,
}

/// What every request handler shares.
pub(crate) struct App {
    pub(crate) service: Service,
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) prometheus: Option<PrometheusHandle>,
    sources: load::Sources,
    /// The store's URL at start: the store never changes while running.
    storage_url: String,
    pub(crate) max_in_flight: usize,
    probe_rule: Rule,
    /// How long `/ready` waits for the store: its deadline
    /// (`[storage] timeout`).
    ready_within: Duration,
    /// Set when shutdown begins: not ready from then on.
    draining: std::sync::atomic::AtomicBool,
    /// Reloads one at a time.
    reloading: tokio::sync::Mutex<()>,
    /// What lease ids are signed with when `[server] lease_secret` is not set.
    lease_key: lease::LeaseKey,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Reads the configuration again and serves it if it is valid;
    /// otherwise keeps the current limits and returns every problem.
    pub(crate) async fn reload(&self) -> Result<(), String> {
        let _one = self.reloading.lock().await;
        let sources = self.sources.clone();
        let loaded = tokio::task::spawn_blocking(move || sources.load())
            .await
            .map_err(|e| format!("the reload failed: {e}"))?;
        match loaded {
            Ok(loaded) => {
                let current = self.service.limits();
                if loaded.storage_url != self.storage_url {
                    tracing::warn!(
                        target: "ratekeeper::server",
                        "the store's URL changed; the server keeps its store until restarted"
                    );
                }
                if loaded.limits.server.grpc != current.server.grpc
                    || loaded.limits.server.http != current.server.http
                    || loaded.limits.server.admin != current.server.admin
                {
                    tracing::warn!(
                        target: "ratekeeper::server",
                        "the listening addresses changed; they apply after a restart"
                    );
                }
                self.service.swap(loaded.limits);
                tracing::info!(target: "ratekeeper::config", "configuration reloaded");
                Ok(())
            }
            Err(problems) => {
                tracing::error!(
                    target: "ratekeeper::config",
                    problems = %problems,
                    "configuration refused; the previous one keeps serving"
                );
                Err(problems)
            }
        }
    }

    /// Whether the server takes requests and its store answers: a look at
    /// a probe key, answered within the store's deadline (an open circuit
    /// breaker answers it with an error at once). One decision's work,
    /// whatever the store holds.
    pub(crate) async fn probe(&self) -> Result<(), String> {
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("shutting down".to_owned());
        }
        let look = self.service.limiter().peek(&self.probe_rule, "ready");
        match tokio::time::timeout(self.ready_within, look).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("the store failed: {e}")),
            Err(_) => Err(format!(
                "the store did not answer within {:?}",
                self.ready_within
            )),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ratekeeper-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ratekeeper-server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn bind(what: &str, address: Option<SocketAddr>) -> Result<Option<TcpListener>, String> {
    let Some(address) = address else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen for {what} on {address}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the {what} address: {e}"))?;
    // One line per address, on stdout, for operators and scripts.
    println!("ratekeeper-server: {what} listening on {local}");
    Ok(Some(listener))
}

async fn run(args: Args) -> Result<(), String> {
    let args_bench = args.bench_in_process;
    let flags = load::Flags {
        storage: args.storage,
        grpc: args.grpc,
        http: args.http,
        admin: args.admin,
        admin_token: args.admin_token,
        lease_secret: args.lease_secret,
        json_logs: args.json_logs,
    };
    let sources = load::Sources::new(args.config, flags);
    let loaded = {
        let sources = sources.clone();
        tokio::task::spawn_blocking(move || sources.load())
            .await
            .map_err(|e| e.to_string())??
    };
    let limits = loaded.limits;
    init_logs(limits.server.json_logs);
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(target: "ratekeeper::server", error = %e, "no metrics"))
        .ok();
    let store = ratekeeper::config::open_store(&loaded.config).map_err(|e| e.to_string())?;
    let server = limits.server.clone();
    // `[lists] runtime`: the allow and deny lists kept in the store, shared
    // by every replica; read now, then again every `refresh`.
    let lists = if loaded.config.lists.runtime {
        Some(
            ratekeeper::http::RuntimeLists::load(store.clone())
                .await
                .map_err(|e| format!("cannot read the runtime lists from the store: {e}"))?
                .refresh_every(loaded.config.lists.refresh),
        )
    } else {
        None
    };
    let probe_rule = Quota::per_second(1)
        .ok()
        .and_then(|q| Rule::new("rls.ready", Algorithm::FixedWindow, q).ok())
        .ok_or("cannot build the readiness probe")?;
    let app = Arc::new(App {
        service: Service::new(limits, Limiter::new(store.clone()), lists),
        in_flight: Arc::new(Semaphore::new(server.max_in_flight)),
        prometheus,
        sources,
        storage_url: loaded.storage_url.clone(),
        max_in_flight: server.max_in_flight,
        probe_rule,
        ready_within: loaded
            .config
            .storage
            .timeout
            .unwrap_or(load::DEFAULT_STORE_DEADLINE),
        draining: std::sync::atomic::AtomicBool::new(false),
        reloading: tokio::sync::Mutex::new(()),
        lease_key: lease::LeaseKey::random()?,
    });
    let limits = app.service.limits();
    if limits.server.lease_secret.is_none()
        && limits
            .rules
            .values()
            .any(|r| r.algorithm().limits_in_flight())
    {
        tracing::warn!(
            target: "ratekeeper::server",
            "no [server] lease_secret: the lease ids of /v1/acquire are good on this process \
             only, until it restarts (set RATEKEEPER_LEASE_SECRET on every replica)"
        );
    }
    if let Some(n) = args_bench {
        return bench::run(app, n.max(1)).await;
    }
    tracing::info!(
        target: "ratekeeper::server",
        store = %ratekeeper::storage::redact_url(&loaded.storage_url),
        "serving"
    );

    // Signals and file changes are handled before the first address is
    // announced: a reload asked for right after start is never lost.
    let signals = Signals::new();
    let watcher = if server.watch {
        load::watch(app.clone())
            .map_err(|e| {
                tracing::warn!(
                    target: "ratekeeper::server",
                    error = %e,
                    "configuration files are not watched; reload with SIGHUP"
                );
            })
            .ok()
    } else {
        None
    };
    let grpc = bind("grpc", server.grpc).await?;
    let http = bind("http", server.http).await?;
    let admin = bind("admin", server.admin).await?;

    // gRPC health checking (grpc.health.v1): serving until shutdown.
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<RateLimitServiceServer<grpc::Grpc>>()
        .await;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = grpc {
        let app = app.clone();
        let mut stopped = stopped.clone();
        let max = server.max_request_bytes;
        tasks.spawn(async move {
            let service =
                RateLimitServiceServer::new(grpc::Grpc(app)).max_decoding_message_size(max);
            tonic::transport::Server::builder()
                // Bounded before the handler's own bound: streams per
                // connection, and a request's whole time.
                .max_concurrent_streams(1024)
                .timeout(server.request_timeout)
                .layer(tower::util::MapResponseLayer::new(
                    grpc::decode_errors_are_invalid_arguments::<tonic::body::Body>,
                ))
                .add_service(service)
                .add_service(health_service)
                .serve_with_incoming_shutdown(
                    // Small answers go out at once (no Nagle delay).
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    },
                )
                .await
                .map_err(|e| format!("gRPC: {e}"))
        });
    }
    for (listener, router) in [
        (http, http::router(app.clone())),
        (admin, admin::router(app.clone())),
    ] {
        let Some(listener) = listener else { continue };
        let timeout = server.request_timeout;
        tasks.spawn(http::serve(listener, router, timeout, stopped.clone()));
    }
    wait_for_signals(&app, signals).await;
    tracing::info!(target: "ratekeeper::server", "shutting down: draining requests in flight");
    // Not ready and not serving first, so that health checks see it.
    app.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    health
        .set_not_serving::<RateLimitServiceServer<grpc::Grpc>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let _ = stop.send(true);
    let drained = tokio::time::timeout(server.drain, async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!(target: "ratekeeper::server", error = %e, "a listener failed");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(target: "ratekeeper::server", "requests still in flight after the drain time; stopping");
    }
    drop(watcher);
    if let Err(e) = store.close().await {
        tracing::warn!(target: "ratekeeper::server", error = %e, "closing the store failed");
    }
    Ok(())
}

/// The signals the server answers, listened to from start-up on.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                hup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }
}

/// Returns on SIGTERM or Ctrl-C; reloads on SIGHUP.
async fn wait_for_signals(app: &Arc<App>, signals: Signals) {
    #[cfg(unix)]
    {
        let Signals { term, hup } = signals;
        let (Some(mut term), Some(mut hup)) = (term, hup) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
                _ = hup.recv() => {
                    // In its own task: a slow reload never delays SIGTERM.
                    let app = app.clone();
                    tokio::spawn(async move {
                        let _ = app.reload().await;
                    });
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (app, signals);
        let _ = tokio::signal::ctrl_c().await;
    }
}
