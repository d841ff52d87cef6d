//! `[server]`: how the rate-limit service (`ratekeeper-server`) listens and
//! what it accepts. Libraries ignore it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::reader::{Reader, Table};

/// `[server]`: the rate-limit service's addresses, bounds and modes. Every
/// field has a default, so a file of limits alone starts a service.
///
/// Its `Debug` form leaves the secrets out (`admin_token`, `lease_secret`).
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Envoy's rate-limit gRPC API; `None` (`"off"`): not served. Default
    /// `0.0.0.0:8081`, where Envoy's examples look for it.
    pub grpc: Option<SocketAddr>,
    /// The HTTP JSON API, `/health`, `/ready` and `/metrics`; `None`
    /// (`"off"`): not served. Default `0.0.0.0:8080`.
    pub http: Option<SocketAddr>,
    /// The admin API (resets, list changes, reload); `None` (`"off"`): not
    /// served. Default `127.0.0.1:6070`: loopback only.
    pub admin: Option<SocketAddr>,
    /// The bearer token the admin API asks for. Required when `admin` is
    /// not a loopback address (the server checks it once its flags and
    /// environment, which may carry the token, apply); when set, asked for
    /// on loopback too.
    pub admin_token: Option<String>,
    /// The secret lease ids of the HTTP API's `/v1/acquire` are signed
    /// with (HMAC-SHA256), at least 16 characters. Every replica behind
    /// one address needs the same; unset, each process draws its own at
    /// start, and its ids are good on it only, until it restarts.
    pub lease_secret: Option<String>,
    /// Decide and count every request, but never deny (the whole service in
    /// shadow mode); denials show in metrics and logs only.
    pub shadow_mode: bool,
    /// What a domain without its own `on_store_error` answers when the
    /// store fails. Default [`StoreErrorMode::Error`].
    pub on_store_error: StoreErrorMode,
    /// How many instances of the service share each limit, for domains
    /// deciding [degraded](StoreErrorMode::Degraded) (default 1): each
    /// decides locally with its share while the store fails.
    pub degraded_instances: u64,
    /// Descriptors one request may carry (default 64).
    pub max_descriptors: usize,
    /// Entries one descriptor may carry (default 16).
    pub max_entries: usize,
    /// Bytes of one entry's key or value, and of a domain (default 1024).
    pub max_value_bytes: usize,
    /// Bytes of one request's body (default 64 KiB).
    pub max_request_bytes: usize,
    /// Requests being answered at once; more are refused at once
    /// (RESOURCE_EXHAUSTED, 503), never queued (default 4096).
    pub max_in_flight: usize,
    /// How long shutdown waits for requests in flight (default 10 s).
    pub drain: Duration,
    /// How long one request may take, from its first byte to its answer
    /// (default 30 s): a client that sends its headers or its body slower
    /// is cut off (HTTP: the connection closed, or 408; gRPC:
    /// DEADLINE_EXCEEDED). An idle HTTP connection is closed after as
    /// long.
    pub request_timeout: Duration,
    /// Whether clients of the public ports may give units back
    /// (`is_negative_hits`, and refunds through `POST /v1/report`). Off by
    /// default: a refund undoes a limit as a reset does, and resets are the
    /// admin API's. Turn it on when every client of the public ports is
    /// trusted (Envoy, your own services).
    pub refunds: bool,
    /// Logs as JSON lines instead of text.
    pub json_logs: bool,
    /// Adds `RateLimit-Policy` and `RateLimit` (IETF draft), and
    /// `Retry-After` on denials, to every answer (Envoy's
    /// `response_headers_to_add`).
    pub headers: bool,
    /// Reloads when a configuration file changes (default `true`); SIGHUP
    /// and the admin API reload either way.
    pub watch: bool,
    /// The descriptor entry whose value is the client's address, checked
    /// against `[lists]` (default `remote_address`, what Envoy's
    /// `remote_address` action sends).
    pub address_key: String,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("ServerConfig")
            .field("grpc", &self.grpc)
            .field("http", &self.http)
            .field("admin", &self.admin)
            .field("admin_token", &secret(&self.admin_token))
            .field("lease_secret", &secret(&self.lease_secret))
            .field("shadow_mode", &self.shadow_mode)
            .field("on_store_error", &self.on_store_error)
            .field("degraded_instances", &self.degraded_instances)
            .field("max_descriptors", &self.max_descriptors)
            .field("max_entries", &self.max_entries)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_in_flight", &self.max_in_flight)
            .field("drain", &self.drain)
            .field("request_timeout", &self.request_timeout)
            .field("refunds", &self.refunds)
            .field("json_logs", &self.json_logs)
            .field("headers", &self.headers)
            .field("watch", &self.watch)
            .field("address_key", &self.address_key)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc: Some(SocketAddr::from(([0, 0, 0, 0], 8081))),
            http: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 6070))),
            admin_token: None,
            lease_secret: None,
            shadow_mode: false,
            on_store_error: StoreErrorMode::Error,
            degraded_instances: 1,
            max_descriptors: 64,
            max_entries: 16,
            max_value_bytes: 1024,
            max_request_bytes: 64 * 1024,
            max_in_flight: 4096,
            drain: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            refunds: false,
            json_logs: false,
            headers: false,
            watch: true,
            address_key: "remote_address".to_owned(),
        }
    }
}

/// What the rate-limit service answers when its store fails (unreachable,
/// past its deadline, its breaker open).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreErrorMode {
    /// An error (gRPC UNAVAILABLE, HTTP 503): the caller's own failure mode
    /// decides (Envoy's `failure_mode_deny`). The default.
    #[default]
    Error,
    /// Allow the request.
    Allow,
    /// Deny the request.
    Deny,
    /// Decide on the service's local memory store, each limit divided by
    /// [`ServerConfig::degraded_instances`]: limits hold, per instance,
    /// while the shared store is down, and decisions go back to it as soon
    /// as it answers. Reports (`/v1/report`, negative hits) answer an error.
    Degraded,
}

impl std::str::FromStr for StoreErrorMode {
    type Err = String;

    /// `error`, `allow`, `deny` or `degraded`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "error" => Ok(Self::Error),
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            "degraded" => Ok(Self::Degraded),
            other => Err(format!(
                "unknown store error mode {other:?} (expected error, allow, deny or degraded)"
            )),
        }
    }
}

/// An address, or `"off"`.
fn address(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        format!(
            "{text:?} is not an address (expected host:port with an IP, e.g. 0.0.0.0:8081, or off)"
        )
    })
}

/// What is wrong with `secret` as the server's lease secret
/// ([`ServerConfig::lease_secret`]): `None` when it will do (16 characters
/// at least, no spaces around them: a line break left at the end of one
/// replica's secret would make its ids another's).
pub fn lease_secret_problem(secret: &str) -> Option<String> {
    let chars = secret.chars().count();
    if secret.trim() != secret {
        Some("surrounded by spaces or line breaks (expected the secret alone)".to_owned())
    } else if chars < 16 {
        Some(format!(
            "too short: {chars} characters (expected at least 16, such as 32 random ones)"
        ))
    } else {
        None
    }
}

pub(crate) fn read(r: &mut Reader<'_>, t: &Table<'_>) -> ServerConfig {
    let mut s = ServerConfig::default();
    for (key, field) in [
        ("grpc", &mut s.grpc),
        ("http", &mut s.http),
        ("admin", &mut s.admin),
    ] {
        if let Some(a) = t.parsed(r, key, address) {
            *field = a;
        }
    }
    s.admin_token = t.string(r, "admin_token");
    if s.admin_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        r.problem(
            &t.field_path("admin_token"),
            t.value_of("admin_token"),
            "empty (leave it out, or set a secret)",
        );
    }
    s.lease_secret = t.string(r, "lease_secret");
    if let Some(problem) = s.lease_secret.as_deref().and_then(lease_secret_problem) {
        r.problem(
            &t.field_path("lease_secret"),
            t.value_of("lease_secret"),
            &problem,
        );
    }
    if let Some(b) = t.boolean(r, "shadow_mode") {
        s.shadow_mode = b;
    }
    if let Some(m) = t.parsed(r, "on_store_error", str::parse::<StoreErrorMode>) {
        s.on_store_error = m;
    }
    if let Some(n) = t.integer(r, "degraded_instances", 1, 100_000) {
        s.degraded_instances = n;
    }
    let bound = |r: &mut Reader<'_>, key: &str, max: u64, field: &mut usize| {
        if let Some(n) = t.integer(r, key, 1, max) {
            *field = usize::try_from(n).unwrap_or(usize::MAX);
        }
    };
    bound(r, "max_descriptors", 100_000, &mut s.max_descriptors);
    bound(r, "max_entries", 10_000, &mut s.max_entries);
    bound(r, "max_value_bytes", 1 << 20, &mut s.max_value_bytes);
    bound(r, "max_request_bytes", 64 << 20, &mut s.max_request_bytes);
    bound(r, "max_in_flight", 1 << 24, &mut s.max_in_flight);
    if let Some(d) = t.duration(r, "drain") {
        s.drain = d;
    }
    if let Some(d) = t.duration(r, "request_timeout") {
        if d.is_zero() {
            r.problem(
                &t.field_path("request_timeout"),
                t.value_of("request_timeout"),
                "zero (every request would be cut off)",
            );
        } else {
            s.request_timeout = d;
        }
    }
    if let Some(b) = t.boolean(r, "refunds") {
        s.refunds = b;
    }
    if let Some(b) = t.boolean(r, "json_logs") {
        s.json_logs = b;
    }
    if let Some(b) = t.boolean(r, "headers") {
        s.headers = b;
    }
    if let Some(b) = t.boolean(r, "watch") {
        s.watch = b;
    }
    if let Some(k) = t.string(r, "address_key") {
        if k.is_empty() {
            r.problem(
                &t.field_path("address_key"),
                t.value_of("address_key"),
                "empty",
            );
        }
        s.address_key = k;
    }
    t.finish(
        r,
        &[
            "grpc",
            "http",
            "admin",
            "admin_token",
            "lease_secret",
            "shadow_mode",
            "on_store_error",
            "degraded_instances",
            "max_descriptors",
            "max_entries",
            "max_value_bytes",
            "max_request_bytes",
            "max_in_flight",
            "drain",
            "request_timeout",
            "refunds",
            "json_logs",
            "headers",
            "watch",
            "address_key",
        ],
    );
    s
}
