//! What the adapter keeps in a request's local cache: the identity the app's
//! authentication found, and the policy's outcome.

use std::sync::Mutex;

use ratelimit_core::http::{Admission, Identity, Outcome};
use rocket::Request;

/// The caller's identity, set by the app's auth (see [`set_identity`]).
#[derive(Default)]
struct RequestIdentity(Mutex<Option<Identity>>);

/// Tells the rate limiter who the caller is (for `KeySource::User` and
/// custom keys). Call it from your authentication fairing, attached before
/// the [`RateLimit`](crate::RateLimit) fairing, or from a guard that runs
/// before the rate-limit guards.
pub fn set_identity(request: &Request<'_>, identity: Identity) {
    let cell = request.local_cache(RequestIdentity::default);
    if let Ok(mut slot) = cell.0.lock() {
        *slot = Some(identity);
    }
}

pub(crate) fn identity(request: &Request<'_>) -> Option<Identity> {
    let cell = request.local_cache(RequestIdentity::default);
    cell.0.lock().ok().and_then(|slot| slot.clone())
}

/// The latest outcome of the policy for this request.
#[derive(Default)]
struct Decided(Mutex<Option<Outcome>>);

pub(crate) fn store(request: &Request<'_>, outcome: Outcome) {
    let cell = request.local_cache(Decided::default);
    if let Ok(mut slot) = cell.0.lock() {
        *slot = Some(outcome);
    }
}

pub(crate) fn outcome(request: &Request<'_>) -> Option<Outcome> {
    let cell = request.local_cache(Decided::default);
    cell.0.lock().ok().and_then(|slot| slot.clone())
}

/// Takes the outcome out (for the response, once the handler has run).
pub(crate) fn take_outcome(request: &Request<'_>) -> Option<Outcome> {
    let cell = request.local_cache(Decided::default);
    cell.0.lock().ok().and_then(|mut slot| slot.take())
}

pub(crate) fn admission(request: &Request<'_>) -> Option<Admission> {
    match outcome(request)? {
        Outcome::Proceed { admission, .. } => admission,
        Outcome::Respond { .. } => None,
    }
}
