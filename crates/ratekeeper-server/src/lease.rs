//! Places in flight for clients of the HTTP API: `POST /v1/acquire` takes
//! places on a concurrency rule of `[rules]` and answers a lease id;
//! `POST /v1/release` gives them back.
//!
//! A lease id names the rule, the key, the instant the store took the
//! places at, their number and a random nonce, signed with HMAC-SHA256
//! under `[server] lease_secret` (or a key drawn at start, when none is
//! set). So a client can only release places it was given: an id it
//! made or changed is refused. An id is released once: the first release
//! marks its nonce in the store (an increment that lives the lease's
//! window), and a replay is refused before anything is given back (leases
//! taken in the same microsecond share a store entry, so a second release
//! of one could free another's place).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use serde_json::json;

use ratekeeper::{Adjustment, ErrorKind, Rule, Timestamp};

use crate::App;
use crate::http::{bad_request, busy, error, parse};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Where the marks of released lease ids are kept: a name with a space,
/// which no rule's state key has.
const RELEASED: &str = "ratekeeper released";

/// The key lease ids are signed with when `[server] lease_secret` is not
/// set: drawn at start, so ids are good for this process only.
#[derive(Clone)]
pub(crate) struct LeaseKey([u8; 32]);

impl LeaseKey {
    /// A key drawn from the operating system's random source.
    pub(crate) fn random() -> Result<Self, String> {
        let mut key = [0; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no random source for lease ids: {e}"))?;
        Ok(Self(key))
    }
}

impl std::fmt::Debug for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseKey(..)")
    }
}

/// What a lease id says.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Lease {
    rule: String,
    key: String,
    /// When the store took the places (µs since the epoch, its clock).
    at: u64,
    units: u64,
    /// Random: no two ids alike.
    nonce: String,
}

/// `payload.mac`, both base64url without padding; the payload is the
/// lease as JSON.
fn sign(secret: &[u8], lease: &Lease) -> Result<String, String> {
    let payload = serde_json::to_vec(lease).map_err(|e| e.to_string())?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|e| e.to_string())?;
    mac.update(&payload);
    let tag = mac.finalize().into_bytes();
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(tag)
    ))
}

/// The lease an id signed with `secret` names; `None` for anything else
/// (malformed, forged, changed, or signed with another secret). The tag
/// is compared in constant time.
fn open(secret: &[u8], id: &str) -> Option<Lease> {
    let (payload, tag) = id.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(&payload);
    mac.verify_slice(&tag).ok()?;
    serde_json::from_slice(&payload).ok()
}

/// `{"rule": "exports", "key": "team-7", "hits": 1}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireBody {
    rule: String,
    key: String,
    #[serde(default, alias = "hitsAddend", alias = "hits_addend")]
    hits: Option<u64>,
}

/// `{"lease": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    lease: String,
}

/// The secret lease ids are signed with now: `[server] lease_secret`, or
/// the key drawn at start.
fn secret(app: &App) -> Vec<u8> {
    match &app.service.limits().server.lease_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => app.lease_key.0.to_vec(),
    }
}

/// The concurrency rule of `[rules]` called `name`, without its line (the
/// server answers at once), or why there is none.
fn places_rule(app: &App, name: &str) -> Result<Rule, String> {
    let limits = app.service.limits();
    let Some(rule) = limits.rules.get(name) else {
        return Err(format!("no rule named {name:?}"));
    };
    if !rule.algorithm().limits_in_flight() {
        return Err(format!(
            "rule {name:?} limits a rate, not requests in flight: check it with /v1/check"
        ));
    }
    Ok(rule.without_wait())
}

fn unavailable(e: &ratekeeper::Error) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the rate-limit store is unavailable: {e}"),
    )
}

/// `POST /v1/acquire`: takes `hits` places (default 1) on a concurrency
/// rule for a key. Admitted: `{"overallCode": "OK", "lease": "...",
/// "limitRemaining": N}`; else `{"overallCode": "OVER_LIMIT",
/// "retryAfter": "1s", ...}` and nothing is taken. A failed store is 503
/// whatever `on_store_error` says: a place cannot be granted without it.
pub(crate) async fn acquire(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let Ok(_permit) = app.in_flight.clone().try_acquire_owned() else {
        return busy();
    };
    let body: AcquireBody = match parse(&body) {
        Ok(b) => b,
        Err(m) => return bad_request(m),
    };
    let rule = match places_rule(&app, &body.rule) {
        Ok(rule) => rule,
        Err(m) => return bad_request(m),
    };
    let limits = app.service.limits();
    if body.key.len() > limits.server.max_value_bytes {
        return bad_request(format!(
            "the key is longer than {} bytes",
            limits.server.max_value_bytes
        ));
    }
    let units = body.hits.unwrap_or(1);
    if units == 0 {
        return bad_request("hits must be at least 1: an acquire takes places");
    }
    // Drawn first: a place is never taken without an id to give it back.
    let mut nonce = [0; 16];
    if let Err(e) = getrandom::fill(&mut nonce) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no random source: {e}"),
        );
    }
    let reservation = match app.service.limiter().reserve(&rule, &body.key, units).await {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::CostExceedsCapacity => return bad_request(e.to_string()),
        Err(e) => return unavailable(&e),
    };
    let d = reservation.decision();
    let mut answer = serde_json::Map::new();
    let code = if d.is_allowed() { "OK" } else { "OVER_LIMIT" };
    answer.insert("overallCode".into(), json!(code));
    answer.insert("limitRemaining".into(), json!(d.remaining()));
    let reset = crate::http::seconds(d.reset_after());
    answer.insert("durationUntilReset".into(), json!(reset));
    if let Some(retry) = d.retry_after() {
        answer.insert("retryAfter".into(), json!(crate::http::seconds(retry)));
    }
    if d.is_allowed() {
        let lease = Lease {
            rule: body.rule,
            key: body.key,
            at: reservation.taken_at().as_micros(),
            units,
            nonce: URL_SAFE_NO_PAD.encode(nonce),
        };
        match sign(&secret(&app), &lease) {
            Ok(id) => drop(answer.insert("lease".into(), json!(id))),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
    axum::Json(serde_json::Value::Object(answer)).into_response()
}

/// `POST /v1/release`: gives back the places of a lease id. 200 with
/// `{"released": true, "limitRemaining": N}` (a lease whose window has
/// passed frees nothing: its places came back by themselves); 400 for an
/// id this server did not sign; 409 for an id released already.
pub(crate) async fn release(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let Ok(_permit) = app.in_flight.clone().try_acquire_owned() else {
        return busy();
    };
    let body: ReleaseBody = match parse(&body) {
        Ok(b) => b,
        Err(m) => return bad_request(m),
    };
    let Some(lease) = open(&secret(&app), &body.lease) else {
        return bad_request(
            "not a lease id of this server (changed, made up, or signed with another \
             lease_secret)",
        );
    };
    let rule = match places_rule(&app, &lease.rule) {
        Ok(rule) => rule,
        Err(m) => return bad_request(m),
    };
    // Made on a task of its own: a client gone or a timeout does not cut
    // it between the mark and the refund.
    let limiter = app.service.limiter().clone();
    let released = tokio::spawn(async move { release_once(&limiter, &rule, &lease).await });
    match released.await {
        Ok(Ok(remaining)) => {
            axum::Json(json!({"released": true, "limitRemaining": remaining})).into_response()
        }
        Ok(Err(answer)) => answer,
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the release failed: {e}"),
        ),
    }
}

/// Marks `lease` released, then gives its places back: the places left
/// afterwards. A lease marked already is refused (409) and frees nothing.
/// The mark is an integer incremented at a key of its nonce, which lives
/// the rule's window (after it, the lease has expired and frees nothing);
/// no rule's state can be at that key (its name has a space). When the
/// refund fails, the mark is taken back (as far as the store answers), so
/// that the release can be made again.
async fn release_once(
    limiter: &ratekeeper::Limiter,
    rule: &Rule,
    lease: &Lease,
) -> Result<u64, Response> {
    let store = limiter.storage();
    let mark = format!("{RELEASED}:{{{}}}", lease.nonce);
    match store.increment(&mark, 1, rule.quota().window()).await {
        Ok(1) => {}
        Ok(_) => {
            return Err(error(
                StatusCode::CONFLICT,
                "this lease was released already",
            ));
        }
        Err(e) => return Err(unavailable(&e)),
    }
    let release = Adjustment::Refund {
        units: lease.units,
        taken_at: Some(Timestamp::from_micros(lease.at)),
    };
    match limiter.adjust(&[(rule, &lease.key, release)]).await {
        Ok(after) => Ok(after.first().map_or(0, ratekeeper::Decision::remaining)),
        Err(e) => {
            if let Err(undo) = store.delete(&mark).await {
                tracing::warn!(
                    target: "ratekeeper::server",
                    error = %undo,
                    "a failed release could not be taken back: its lease stays held until its window ends"
                );
            }
            Err(unavailable(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            rule: "exports".into(),
            key: "team-7".into(),
            at: 1_700_000_000_000_000,
            units: 2,
            nonce: "n".into(),
        }
    }

    #[test]
    fn an_id_opens_under_its_secret_only() {
        let id = sign(b"a secret of the server", &lease()).unwrap();
        assert_eq!(open(b"a secret of the server", &id), Some(lease()));
        assert_eq!(open(b"another secret", &id), None);
        // A payload changed (more units) under the same tag.
        let (_, tag) = id.split_once('.').unwrap();
        let more = Lease {
            units: 5,
            ..lease()
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&more).unwrap());
        assert_eq!(
            open(b"a secret of the server", &format!("{payload}.{tag}")),
            None
        );
        for junk in ["", ".", "x", "x.y", "not base64!.AAAA"] {
            assert_eq!(open(b"a secret of the server", junk), None, "{junk:?}");
        }
    }
}
