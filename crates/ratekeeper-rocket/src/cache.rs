//! What the adapter keeps in a request's local cache: the identity the app's
//! authentication found, and the policy's outcome. One cache entry holds
//! both, so a request costs two cache look-ups (one before the handler, one
//! for the response). It also holds the places in flight an admitted
//! request took: the cache lives as long as the request, which Rocket keeps
//! until the response's body has been sent (or the client has gone), so
//! they come back then.

use std::sync::Mutex;

use ratekeeper_http::{Admission, Identity, Outcome, Places, Settlement};
use rocket::Request;

/// The adapter's state of one request.
#[derive(Default)]
pub(crate) struct RequestState {
    identity: Mutex<Option<Identity>>,
    decided: Mutex<Decided>,
}

/// The outcome that applies, and what settles the decisions it replaced
/// (the fairing's, then a route guard's): each is settled by the response.
/// The places of every admission, held with the request.
#[derive(Default)]
struct Decided {
    outcome: Option<Outcome>,
    replaced: Vec<Settlement>,
    places: Vec<Places>,
}

/// What settles `outcome`, on a route counting only some responses.
fn settlement_of(outcome: Option<&Outcome>) -> Option<Settlement> {
    match outcome? {
        Outcome::Proceed {
            admission: Some(admission),
            ..
        } => admission.settlement().cloned(),
        _ => None,
    }
}

impl RequestState {
    pub(crate) fn of<'a>(request: &'a Request<'_>) -> &'a Self {
        request.local_cache(Self::default)
    }

    pub(crate) fn identity(&self) -> Option<Identity> {
        self.identity.lock().ok().and_then(|slot| slot.clone())
    }

    pub(crate) fn store(&self, outcome: Outcome) {
        let Ok(mut decided) = self.decided.lock() else {
            return;
        };
        if let Some(settlement) = settlement_of(decided.outcome.as_ref()) {
            decided.replaced.push(settlement);
        }
        if let Outcome::Proceed {
            admission: Some(admission),
            ..
        } = &outcome
            && let Some(places) = admission.places()
        {
            decided.places.push(places.clone());
        }
        decided.outcome = Some(outcome);
    }

    /// Takes the outcome out (for the response, once the handler has run),
    /// with what settles it and the decisions it replaced.
    pub(crate) fn take(&self) -> (Option<Outcome>, Vec<Settlement>) {
        let Ok(mut decided) = self.decided.lock() else {
            return (None, Vec::new());
        };
        // The places stay: the request holds them until it is dropped.
        let outcome = decided.outcome.take();
        let mut replaced = std::mem::take(&mut decided.replaced);
        replaced.extend(settlement_of(outcome.as_ref()));
        (outcome, replaced)
    }

    pub(crate) fn admission(&self) -> Option<Admission> {
        match self.decided.lock().ok()?.outcome.as_ref()? {
            Outcome::Proceed { admission, .. } => admission.clone(),
            Outcome::Respond { .. } => None,
        }
    }
}

/// Tells the rate limiter who the caller is (for `KeySource::User` and
/// custom keys). Call it from your authentication fairing, attached before
/// the [`RateLimit`](crate::RateLimit) fairing, or from a guard that runs
/// before the rate-limit guards.
pub fn set_identity(request: &Request<'_>, identity: Identity) {
    if let Ok(mut slot) = RequestState::of(request).identity.lock() {
        *slot = Some(identity);
    }
}
