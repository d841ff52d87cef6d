//! What handlers see of the decision.

use std::ops::Deref;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::StatusCode;
use http::request::Parts;
use ratekeeper_http::Admission;

/// The rate-limit decision for the current request, and a way to charge more
/// units to its rules and key ([`Admission`]'s methods, through `Deref`).
///
/// Extract it in a handler: `decision: RateLimitDecision` on routes the layer
/// limits (a request that reaches the handler without one — an exempt route,
/// an allow-listed client, a route outside the layer, a policy built with
/// [`decision_for_handlers(false)`](ratekeeper_http::HttpPolicy::decision_for_handlers)
/// on a route neither counting by response nor holding places in flight
/// — is answered 500), or `decision: Option<RateLimitDecision>` where it may
/// be absent.
///
/// ```no_run
/// use ratekeeper_axum::RateLimitDecision;
///
/// async fn export(decision: RateLimitDecision) -> String {
///     let body = "…a large report…".repeat(1_000);
///     // Charge one more unit per 100 kB actually sent.
///     let extra = body.len() as u64 / 100_000;
///     if extra > 0 && !decision.charge(extra).await.is_ok_and(|d| d.is_allowed()) {
///         return "report too large for your remaining quota".to_owned();
///     }
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

const MISSING: &str = "no rate-limit decision for this request: the route is not behind a \
                       RateLimitLayer, or it is exempt (extract Option<RateLimitDecision> there), \
                       or the policy hands handlers no decision (decision_for_handlers(false))";

impl<S: Send + Sync> FromRequestParts<S> for RateLimitDecision {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or((StatusCode::INTERNAL_SERVER_ERROR, MISSING))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for RateLimitDecision {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}
