//! The HTTP JSON API, `/health`, `/ready` and `/metrics`, and how both
//! HTTP ports are served (the admin API is `admin.rs`).
//!
//! Requests and answers follow the protobuf JSON mapping of Envoy's
//! messages (what envoyproxy/ratelimit's `/json` takes), so a client of
//! that endpoint works unchanged; a check may also name a rule of the
//! configuration's `[rules]` and a key. Schemas: `docs/server.md`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use ratekeeper::config::StoreErrorMode;

use crate::App;
use crate::service::{Answer, Check, Descriptor, Refusal, Status, Unit};

/// Serves `router` on `listener` until `stopped`, then lets the
/// connections finish their requests. A request has `timeout` from its
/// first byte to its answer, headers and body included: a client sending
/// slower loses its connection (headers) or gets 408 (body), and an idle
/// connection is closed after as long, so slow or silent clients cannot
/// hold connections open.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    timeout: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let router = router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| async move {
            tokio::time::timeout(timeout, next.run(request))
                .await
                .unwrap_or_else(|_| error(StatusCode::REQUEST_TIMEOUT, "the request took too long"))
        },
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(target: "ratekeeper::server", error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small answers go out at once (no Nagle delay).
        let _ = tcp.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    // The caller bounds the drain.
    graceful.shutdown().await;
    Ok(())
}

/// The public HTTP API.
pub(crate) fn router(app: Arc<App>) -> Router {
    let limit = app.service.limits().server.max_request_bytes;
    Router::new()
        .route("/v1/check", post(check))
        .route("/json", post(check))
        .route("/v1/peek", post(peek))
        .route("/v1/report", post(report))
        .route("/v1/acquire", post(crate::lease::acquire))
        .route("/v1/release", post(crate::lease::release))
        .route("/v1/limits", get(limits))
        .route("/health", get(health))
        .route("/healthcheck", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// 503 past `max_in_flight`, at once: requests are never queued.
pub(crate) fn busy() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many requests in flight; try again",
    )
}

pub(crate) fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// A check as JSON: Envoy's `RateLimitRequest` in protobuf JSON (snake or
/// camel case), or a named rule and a key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    descriptors: Vec<DescriptorBody>,
    #[serde(default, alias = "hitsAddend", alias = "hits")]
    hits_addend: Option<u64>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    key: Option<String>,
    /// Give units back: every descriptor's (or the rule's) hits. A report
    /// only.
    #[serde(default, alias = "isNegativeHits")]
    is_negative_hits: bool,
}

/// What a request to the check endpoints asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// Decide, and charge what is admitted.
    Check,
    /// Decide without charging.
    Peek,
    /// Charge after the fact, or give back.
    Report,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DescriptorBody {
    entries: Vec<EntryBody>,
    /// A `UInt64Value`: protobuf JSON writes it as a string.
    #[serde(default, alias = "hitsAddend", alias = "hits")]
    hits_addend: Option<Uint64>,
    #[serde(default)]
    limit: Option<LimitBody>,
    #[serde(default, alias = "isNegativeHits")]
    is_negative_hits: bool,
}

/// A 64-bit integer as protobuf JSON writes one: a string, or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Uint64 {
    Number(u64),
    Text(String),
}

impl Uint64 {
    fn value(&self) -> Result<u64, String> {
        match self {
            Uint64::Number(n) => Ok(*n),
            Uint64::Text(t) => t
                .parse()
                .map_err(|_| format!("{t:?} is not a whole number")),
        }
    }
}

/// A unit as protobuf JSON writes an enum: its name, or its number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum UnitBody {
    Name(String),
    Number(i64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryBody {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitBody {
    #[serde(alias = "requestsPerUnit")]
    requests_per_unit: u64,
    unit: UnitBody,
}

/// `body` as JSON, or what is wrong with it.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))
}

fn check_of(body: CheckBody, ask: Ask) -> Result<Check, String> {
    let peek = ask == Ask::Peek;
    if body.is_negative_hits && ask != Ask::Report {
        return Err(
            "is_negative_hits at the top is for reports (/v1/report); a check takes it per \
             descriptor"
                .to_owned(),
        );
    }
    let all_negative = body.is_negative_hits;
    let descriptors = body
        .descriptors
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let limit = match d.limit {
                None => None,
                Some(l) => {
                    let unit = match &l.unit {
                        UnitBody::Name(n) => Unit::parse(&n.to_ascii_lowercase()),
                        UnitBody::Number(n) => Unit::from_envoy(*n),
                    };
                    let unit = unit.ok_or_else(|| {
                        format!(
                            "descriptors[{i}].limit.unit {:?} is not second, minute, hour, day, \
                             week, month or year",
                            l.unit
                        )
                    })?;
                    Some((l.requests_per_unit, unit))
                }
            };
            let hits = match &d.hits_addend {
                None => None,
                Some(h) => Some(
                    h.value()
                        .map_err(|e| format!("descriptors[{i}].hits_addend: {e}"))?,
                ),
            };
            Ok(Descriptor {
                entries: d.entries.into_iter().map(|e| (e.key, e.value)).collect(),
                hits: if peek { Some(0) } else { hits },
                limit,
                negative: d.is_negative_hits || all_negative,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Check {
        domain: body.domain.unwrap_or_default(),
        descriptors,
        hits: body.hits_addend.unwrap_or(1),
    })
}

async fn check(State(app): State<Arc<App>>, body: Bytes) -> Response {
    decide(app, &body, Ask::Check).await
}

async fn peek(State(app): State<Arc<App>>, body: Bytes) -> Response {
    decide(app, &body, Ask::Peek).await
}

async fn report(State(app): State<Arc<App>>, body: Bytes) -> Response {
    decide(app, &body, Ask::Report).await
}

async fn decide(app: Arc<App>, body: &[u8], ask: Ask) -> Response {
    let Ok(_permit) = app.in_flight.clone().try_acquire_owned() else {
        return busy();
    };
    let body: CheckBody = match parse(body) {
        Ok(b) => b,
        Err(m) => return bad_request(m),
    };
    if let Some(rule) = body.rule.clone() {
        return decide_rule(&app, &rule, body, ask).await;
    }
    let check = match check_of(body, ask) {
        Ok(c) => c,
        Err(m) => return bad_request(m),
    };
    let answer = if ask == Ask::Report {
        app.service.report(&check).await
    } else {
        app.service.decide(&check).await
    };
    match answer {
        Ok(answer) => axum::Json(answer_json(&answer)).into_response(),
        Err(Refusal::Invalid(m)) => bad_request(m),
        Err(Refusal::Unavailable(m)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the rate-limit store is unavailable: {m}"),
        ),
    }
}

/// `{"rule": "api", "key": "alice", "hits_addend": 2}`: a named rule of
/// the configuration on a key.
async fn decide_rule(app: &App, name: &str, body: CheckBody, ask: Ask) -> Response {
    if body.domain.is_some() || !body.descriptors.is_empty() {
        return bad_request("give either a rule and a key, or a domain and descriptors");
    }
    let Some(key) = body.key else {
        return bad_request("a check of a rule needs a key");
    };
    let limits = app.service.limits();
    let Some(rule) = limits.rules.get(name) else {
        return bad_request(format!("no rule named {name:?}"));
    };
    if rule.algorithm().limits_in_flight() {
        // A place taken here would never be given back before its lease ends.
        return bad_request(format!(
            "rule {name:?} limits requests in flight, which needs a release when a request \
             ends: take its places with /v1/acquire, and give them back with /v1/release"
        ));
    }
    if body.is_negative_hits && rule.wait().is_some() {
        return bad_request(format!(
            "rule {name:?} makes requests wait in line, and takes no refund"
        ));
    }
    // The server answers at once: a rule's line is for the applications
    // that wait in it, and here a request over the rate is told when to
    // come back.
    let unlined;
    let rule = if rule.wait().is_some() {
        unlined = rule.without_wait();
        &unlined
    } else {
        rule
    };
    if key.len() > limits.server.max_value_bytes {
        return bad_request(format!(
            "the key is longer than {} bytes",
            limits.server.max_value_bytes
        ));
    }
    if body.is_negative_hits && ask != Ask::Report {
        return bad_request("is_negative_hits is for reports (/v1/report)");
    }
    let cost = if ask == Ask::Peek {
        0
    } else {
        body.hits_addend.unwrap_or(1)
    };
    let limit = Some(crate::service::shown(rule));
    let limiter = app.service.limiter();
    if body.is_negative_hits && !limits.server.refunds {
        return bad_request(
            "this server takes no refunds: set [server] refunds = true when every client of its \
             public ports is trusted",
        );
    }
    let mut decided = match ask {
        Ask::Report if body.is_negative_hits => limiter.refund(rule, &key, cost).await,
        Ask::Report => limiter.charge(rule, &key, cost).await,
        _ => limiter.check_cost(rule, &key, cost).await,
    };
    // `[server] on_store_error = "degraded"`: a check decides locally.
    if let Err(e) = &decided
        && ask != Ask::Report
        && e.kind() != ratekeeper::ErrorKind::CostExceedsCapacity
        && limits.server.on_store_error == StoreErrorMode::Degraded
    {
        let instances = limits.server.degraded_instances;
        let checks = [(rule, key.as_str(), cost)];
        if let Ok(local) = app.service.decide_locally(&checks, instances).await
            && let Some(d) = local.into_iter().next()
        {
            decided = Ok(d);
        }
    }
    let status = match decided {
        Ok(d) => {
            // `[server] shadow_mode` holds here too: decided, never denied.
            let shadow = limits.server.shadow_mode && !d.is_allowed();
            let over = !d.is_allowed() && !shadow;
            Status {
                over_limit: over,
                limit,
                remaining: d.remaining(),
                reset_after: d.reset_after(),
                retry_after: d.retry_after().filter(|_| over),
                shadow_over_limit: shadow,
            }
        }
        Err(e) if e.kind() == ratekeeper::ErrorKind::CostExceedsCapacity => {
            return bad_request(e.to_string());
        }
        // A report decides nothing for a mode to answer.
        Err(e) if ask == Ask::Report => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the rate-limit store is unavailable: {e}"),
            );
        }
        // A failed store: `[server] on_store_error`, as for domains.
        Err(e) => match limits.server.on_store_error {
            mode @ (StoreErrorMode::Allow | StoreErrorMode::Deny) => Status {
                over_limit: mode == StoreErrorMode::Deny && !limits.server.shadow_mode,
                limit,
                ..Status::free()
            },
            _ => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the rate-limit store is unavailable: {e}"),
                );
            }
        },
    };
    let answer = Answer {
        over_limit: status.over_limit,
        statuses: vec![status],
        headers: Vec::new(),
    };
    axum::Json(answer_json(&answer)).into_response()
}

/// A duration as protobuf JSON writes one: seconds with a suffix `s`.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}.{:06}s", d.as_secs(), d.subsec_micros())
    }
}

fn unit_name(window: Duration) -> String {
    Unit::of(window).map_or("UNKNOWN".to_owned(), |u| u.as_str().to_ascii_uppercase())
}

fn answer_json(answer: &Answer) -> Value {
    let code = |over: bool| if over { "OVER_LIMIT" } else { "OK" };
    let statuses: Vec<Value> = answer
        .statuses
        .iter()
        .map(|s| {
            let mut v = json!({ "code": code(s.over_limit), "limitRemaining": s.remaining });
            if let (Some(l), Some(obj)) = (&s.limit, v.as_object_mut()) {
                obj.insert(
                    "currentLimit".to_owned(),
                    json!({
                        "name": l.name,
                        "requestsPerUnit": l.limit,
                        "unit": unit_name(l.window),
                    }),
                );
                obj.insert(
                    "durationUntilReset".to_owned(),
                    json!(seconds(s.reset_after)),
                );
            }
            if let Some(obj) = v.as_object_mut() {
                if let Some(r) = s.retry_after {
                    obj.insert("retryAfter".to_owned(), json!(seconds(r)));
                }
                if s.shadow_over_limit {
                    obj.insert("shadowOverLimit".to_owned(), json!(true));
                }
            }
            v
        })
        .collect();
    let headers: Vec<Value> = answer
        .headers
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect();
    json!({
        "overallCode": code(answer.over_limit),
        "statuses": statuses,
        "responseHeadersToAdd": headers,
    })
}

/// The loaded limits: every domain's limited descriptors, and the named rules.
pub(crate) async fn limits(State(app): State<Arc<App>>) -> Response {
    let limits = app.service.limits();
    let domains: Vec<Value> = limits
        .domains
        .limits()
        .iter()
        .map(|m| {
            let limit = match m.limit() {
                ratekeeper::config::domains::Limit::Rule(rule) => rule_json(rule),
                ratekeeper::config::domains::Limit::Deny => json!("deny"),
                _ => json!("unlimited"),
            };
            json!({
                "descriptor": m.path(),
                "name": m.name(),
                "shadowMode": m.shadow_mode(),
                "limit": limit,
            })
        })
        .collect();
    let rules: Vec<Value> = limits.rules.values().map(rule_json).collect();
    axum::Json(json!({
        "domains": limits.domains.names(),
        "descriptors": domains,
        "rules": rules,
    }))
    .into_response()
}

/// A rule as `/v1/limits` lists it.
fn rule_json(rule: &ratekeeper::Rule) -> Value {
    json!({
        "rule": rule.name(),
        "algorithm": rule.algorithm().as_str(),
        "requestsPerUnit": rule.quota().limit(),
        "window": seconds(rule.quota().window()),
    })
}

pub(crate) async fn health() -> Response {
    (StatusCode::OK, "OK\n").into_response()
}

/// Ready when the store answers within its deadline (and its breaker, if
/// any, is closed).
async fn ready(State(app): State<Arc<App>>) -> Response {
    match app.probe().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    match &app.prometheus {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "metrics are not recorded"),
    }
}
