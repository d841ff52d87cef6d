//! The admin API: reload, resets, the runtime lists, status. Every route
//! asks for the admin token when one is set.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use ratekeeper::http::{ListKind, RuntimeLists};

use crate::App;
use crate::http::{EntryBody, bad_request, error, health, limits, parse};

/// The admin API: reload, resets. Every route asks for the admin token
/// when one is set.
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/reload", post(reload))
        .route("/v1/reset", post(reset))
        .route("/v1/status", get(status))
        .route("/v1/lists", get(lists))
        .route("/v1/lists/{list}", post(list_add).delete(list_remove))
        .route("/v1/limits", get(limits))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(app)
}

/// The server's state: version, domains, requests in flight, readiness, and
/// the store's own report (which may scan the store: admin only).
async fn status(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let limits = app.service.limits();
    let in_flight = app
        .max_in_flight
        .saturating_sub(app.in_flight.available_permits());
    let store = match app.service.limiter().storage().stats().await {
        Ok(stats) => {
            let details: serde_json::Map<String, Value> = stats
                .details
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            json!({
                "backend": stats.backend,
                "keys": stats.keys,
                "details": details,
            })
        }
        Err(e) => json!({ "error": e.to_string() }),
    };
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "domains": limits.domains.names(),
        "inFlight": in_flight,
        "maxInFlight": app.max_in_flight,
        "ready": app.probe().await.err().unwrap_or_else(|| "ready".to_owned()),
        "store": store,
    }))
    .into_response()
}

/// `allow` or `deny`.
fn list_kind(name: &str) -> Option<ListKind> {
    match name {
        "allow" => Some(ListKind::Allow),
        "deny" => Some(ListKind::Deny),
        _ => None,
    }
}

/// The runtime lists, or the answer that there are none.
fn runtime_lists(app: &App) -> Result<&RuntimeLists, Box<Response>> {
    app.service.lists().ok_or_else(|| {
        Box::new(bad_request(
            "the runtime lists are off: set [lists] runtime = true in the configuration",
        ))
    })
}

/// Both runtime lists: each entry with its expiry (seconds since the
/// epoch), if any.
async fn lists(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let lists = match runtime_lists(&app) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let mut out = serde_json::Map::new();
    for kind in [ListKind::Allow, ListKind::Deny] {
        match lists.list(kind).await {
            Ok(entries) => {
                let entries: Vec<Value> = entries
                    .iter()
                    .map(|e| {
                        json!({
                            "net": e.net.to_string(),
                            "expires": e.expires.map(|t| t.as_micros() / 1_000_000),
                        })
                    })
                    .collect();
                out.insert(kind.as_str().to_owned(), Value::Array(entries));
            }
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the rate-limit store is unavailable: {e}"),
                );
            }
        }
    }
    axum::Json(Value::Object(out)).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListBody {
    net: String,
    #[serde(default)]
    ttl: Option<String>,
}

/// Adds an address or CIDR block to a list, for `ttl` or until removed.
async fn list_add(
    State(app): State<Arc<App>>,
    Path(list): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    list_change(&app, &list, &headers, &body, true).await
}

/// Removes an address or CIDR block from a list.
async fn list_remove(
    State(app): State<Arc<App>>,
    Path(list): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    list_change(&app, &list, &headers, &body, false).await
}

async fn list_change(
    app: &App,
    list: &str,
    headers: &HeaderMap,
    body: &[u8],
    add: bool,
) -> Response {
    if !authorized(app, headers) {
        return unauthorized();
    }
    let Some(kind) = list_kind(list) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no list {list:?} (allow or deny)"),
        );
    };
    let lists = match runtime_lists(app) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let body: ListBody = match parse(body) {
        Ok(b) => b,
        Err(m) => return bad_request(m),
    };
    if let Err(e) = ratekeeper::http::parse_net(&body.net) {
        return bad_request(e.to_string());
    }
    let result = if add {
        let ttl = match body
            .ttl
            .as_deref()
            .map(ratekeeper::parse_duration)
            .transpose()
        {
            Ok(t) => t,
            Err(e) => return bad_request(format!("ttl: {e}")),
        };
        lists
            .add(kind, &body.net, ttl)
            .await
            .map(|()| json!({ "added": true }))
    } else {
        if body.ttl.is_some() {
            return bad_request("a removal takes no ttl");
        }
        lists
            .remove(kind, &body.net)
            .await
            .map(|removed| json!({ "removed": removed }))
    };
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the rate-limit store is unavailable: {e}"),
        ),
    }
}

/// Whether `headers` carry the admin token (always, when none is set; the
/// token of the configuration being served, so a reload rotates it).
fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let limits = app.service.limits();
    let Some(token) = limits.server.admin_token.as_deref() else {
        return true;
    };
    if token.is_empty() {
        return false;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compared in time that depends only on the lengths.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "the admin API needs `Authorization: Bearer <admin_token>`",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

async fn reload(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    match app.reload().await {
        Ok(()) => axum::Json(json!({ "reloaded": true })).into_response(),
        Err(problems) => error(StatusCode::BAD_REQUEST, problems),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    entries: Vec<EntryBody>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// Forgets one descriptor's counters (or a named rule's, for a key).
async fn reset(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let body: ResetBody = match parse(&body) {
        Ok(b) => b,
        Err(m) => return bad_request(m),
    };
    let limits = app.service.limits();
    let (rule, key) = match (&body.rule, &body.domain) {
        (Some(name), None) => {
            let Some(rule) = limits.rules.get(name) else {
                return bad_request(format!("no rule named {name:?}"));
            };
            let Some(key) = body.key.clone() else {
                return bad_request("a reset of a rule needs a key");
            };
            (rule.clone(), key)
        }
        (None, Some(domain)) => {
            let entries: Vec<(&str, &str)> = body
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()))
                .collect();
            let Some(m) = limits.domains.resolve(domain, &entries) else {
                return bad_request("no limit of that domain applies to these entries");
            };
            let ratekeeper::config::domains::Limit::Rule(rule) = m.limit() else {
                return bad_request("that descriptor's limit keeps no counters");
            };
            (rule.clone(), crate::service::counter_key(domain, m.key()))
        }
        _ => return bad_request("give either a rule and a key, or a domain and entries"),
    };
    match app.service.limiter().reset(&rule, &key).await {
        Ok(existed) => axum::Json(json!({ "reset": existed })).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the rate-limit store is unavailable: {e}"),
        ),
    }
}
