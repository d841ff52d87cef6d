//! What the adapter keeps in a request's local cache: the identity the app's
//! authentication found, and the policy's outcome. One cache entry holds
//! both, so a request costs two cache look-ups (one before the handler, one
//! for the response).

use std::sync::Mutex;

use ratekeeper_http::{Admission, Identity, Outcome, Settlement};
use rocket::Request;

/// The adapter's state of one request.
#[derive(Default)]
pub(crate) struct RequestState {
    identity: Mutex<Option<Identity>>,
    outcome: Mutex<Option<Outcome>>,
    /// What settles decisions an outcome stored later replaced (the
    /// fairing's, then a route guard's): each is settled by the response.
    replaced: Mutex<Vec<Settlement>>,
}

impl RequestState {
    pub(crate) fn of<'a>(request: &'a Request<'_>) -> &'a Self {
        request.local_cache(Self::default)
    }

    pub(crate) fn identity(&self) -> Option<Identity> {
        self.identity.lock().ok().and_then(|slot| slot.clone())
    }

    pub(crate) fn store(&self, outcome: Outcome) {
        let Ok(mut slot) = self.outcome.lock() else {
            return;
        };
        if let Some(Outcome::Proceed {
            admission: Some(admission),
            ..
        }) = slot.as_ref()
            && let Some(settlement) = admission.settlement()
            && let Ok(mut replaced) = self.replaced.lock()
        {
            replaced.push(settlement.clone());
        }
        *slot = Some(outcome);
    }

    /// Takes what settles the decisions replaced by later ones.
    pub(crate) fn take_replaced(&self) -> Vec<Settlement> {
        self.replaced
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Takes the outcome out (for the response, once the handler has run).
    pub(crate) fn take_outcome(&self) -> Option<Outcome> {
        self.outcome.lock().ok().and_then(|mut slot| slot.take())
    }

    pub(crate) fn admission(&self) -> Option<Admission> {
        match self.outcome.lock().ok()?.as_ref()? {
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
