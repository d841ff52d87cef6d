//! What handlers see of the decision.

use std::future::{Ready, ready};
use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use ratekeeper_http::Admission;

/// The rate-limit decision for the current request, and a way to charge more
/// units to its rules and key ([`Admission`]'s methods, through `Deref`).
///
/// Take it as a handler argument: `decision: RateLimitDecision` on limited
/// routes (a request that reaches the handler without one — an exempt path,
/// an allow-listed client, a route outside the middleware, a policy built
/// with [`decision_for_handlers(false)`](ratekeeper_http::HttpPolicy::decision_for_handlers)
/// on a route neither counting by response nor holding places in flight
/// — is answered 500), or `decision: Option<RateLimitDecision>` where it
/// may be absent.
///
/// ```no_run
/// use ratekeeper_actix::RateLimitDecision;
///
/// async fn export(decision: RateLimitDecision) -> String {
///     format!("{} requests left", decision.decision().remaining())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitDecision(pub Admission);

impl Deref for RateLimitDecision {
    type Target = Admission;

    fn deref(&self) -> &Admission {
        &self.0
    }
}

const MISSING: &str = "no rate-limit decision for this request: the route is not wrapped by the \
                       RateLimit middleware, or it is exempt (take Option<RateLimitDecision> there), \
                       or the policy hands handlers no decision (decision_for_handlers(false))";

impl FromRequest for RateLimitDecision {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Self>()
                .cloned()
                .ok_or_else(|| actix_web::error::ErrorInternalServerError(MISSING)),
        )
    }
}
