//! Request guards: limit the routes that ask for it.

use std::marker::PhantomData;
use std::sync::Arc;

use ratekeeper_http::{Admission, Limits, Outcome};
use rocket::Request;
use rocket::http::Status;
use rocket::request::{self, FromRequest};

use crate::cache::RequestState;
use crate::fairing::Managed;
use crate::view::decide;

/// Limits the route it guards with the policy's route table (pattern rules
/// and the default), for applications that attach
/// [`RateLimit::guards_only`](crate::RateLimit::guards_only). Its value is
/// the admission (`None` when the request is not limited: exempt or
/// allow-listed; and when the policy hands handlers no decision,
/// [`decision_for_handlers(false)`](ratekeeper_http::HttpPolicy::decision_for_handlers)). Under the every-route fairing ([`RateLimit::new`](crate::RateLimit::new)),
/// which has already decided by the same table, it charges nothing more and
/// gives the fairing's admission.
///
/// ```no_run
/// use ratekeeper_rocket::RateLimited;
///
/// #[rocket::get("/search")]
/// fn search(_limit: RateLimited) -> &'static str {
///     "results"
/// }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimited(pub Option<Admission>);

/// Limits of one route, for the [`RateLimitedBy`] guard. Built once per type
/// and kept.
///
/// ```no_run
/// use ratekeeper_http::Limits;
/// use ratekeeper_core::{Algorithm, Rule};
/// use ratekeeper_rocket::{RateLimitedBy, RouteLimits};
///
/// struct Exports;
///
/// impl RouteLimits for Exports {
///     fn limits() -> Limits {
///         let rule = Rule::new("exports", Algorithm::SlidingWindowCounter, "5/hour".parse().unwrap()).unwrap();
///         Limits::new(vec![rule]).cost(1)
///     }
/// }
///
/// #[rocket::get("/export")]
/// fn export(_limit: RateLimitedBy<Exports>) -> &'static str {
///     "report"
/// }
/// ```
pub trait RouteLimits: Send + Sync + 'static {
    /// The route's limits (rules, cost, key source, error mode).
    fn limits() -> Limits;
}

/// Limits the route it guards with `L`'s limits, in place of the route
/// table's (the deny and allow lists and exemptions still apply). With the
/// every-route fairing the route gets both: the global limits, then these.
pub struct RateLimitedBy<L>(pub Option<Admission>, PhantomData<fn() -> L>);

impl<L> std::fmt::Debug for RateLimitedBy<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RateLimitedBy").field(&self.0).finish()
    }
}

/// Decides for `request` (with `limits`, or the table's), keeps the outcome
/// for the fairing's `on_response`, and turns it into a guard outcome.
async fn guard(
    request: &Request<'_>,
    limits: impl FnOnce(&Managed) -> Option<Arc<Limits>>,
) -> request::Outcome<Option<Admission>, ()> {
    let Some(managed) = request.rocket().state::<Managed>() else {
        RequestState::of(request).store(Outcome::misconfigured(
            "a rate-limit guard needs the RateLimit fairing attached",
        ));
        return request::Outcome::Error((Status::InternalServerError, ()));
    };
    let limits = limits(managed);
    if limits.is_none() && managed.every_route {
        // The fairing decided by the table already: one request, one charge.
        return request::Outcome::Success(RequestState::of(request).admission());
    }
    let outcome = decide(&managed.policy, request, limits.as_deref(), None).await;
    let result = match &outcome {
        Outcome::Respond { status, .. } => {
            request::Outcome::Error((Status::new(status.as_u16()), ()))
        }
        Outcome::Proceed { admission, .. } => request::Outcome::Success(admission.clone()),
    };
    RequestState::of(request).store(outcome);
    result
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for RateLimited {
    type Error = ();

    async fn from_request(request: &'r Request<'_>) -> request::Outcome<Self, ()> {
        guard(request, |_| None).await.map(Self)
    }
}

#[rocket::async_trait]
impl<'r, L: RouteLimits> FromRequest<'r> for RateLimitedBy<L> {
    type Error = ();

    async fn from_request(request: &'r Request<'_>) -> request::Outcome<Self, ()> {
        guard(request, |m| Some(m.limits_for::<L>()))
            .await
            .map(|admission| Self(admission, PhantomData))
    }
}
