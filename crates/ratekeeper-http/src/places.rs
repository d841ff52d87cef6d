//! Places in flight: a route with concurrency rules admits a request with
//! places taken, held until its response has been sent (or dropped: the
//! client went away, the handler failed or panicked).

use std::fmt;
use std::sync::Arc;

use ratekeeper_core::{Permit, Rule};

/// The places in flight an admitted request holds (the units of its route's
/// [`Concurrency`](ratekeeper_core::Algorithm::Concurrency) rules), given
/// back when the last clone is dropped. Adapters keep a clone with the
/// response body until it has been sent, from
/// [`Admission::places`](crate::Admission::places).
#[derive(Clone)]
pub struct Places(Arc<Permit>);

impl Places {
    pub(crate) fn new(permit: Permit) -> Self {
        Self(Arc::new(permit))
    }
}

impl fmt::Debug for Places {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Places").field(&self.0.decisions()).finish()
    }
}

/// Whether `rule` limits requests in flight.
pub(crate) fn holds_place(rule: &Rule) -> bool {
    rule.algorithm().limits_in_flight()
}

/// Whether any of `rules` limits requests in flight.
pub(crate) fn holds_places(rules: &[Rule]) -> bool {
    rules.iter().any(holds_place)
}
