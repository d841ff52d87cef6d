//! What handlers see of the decision.

use std::ops::Deref;

use ratekeeper_http::Admission;
use rocket::Request;
use rocket::http::Status;
use rocket::request::{FromRequest, Outcome};

/// The rate-limit decision for the current request, and a way to charge more
/// units to its rules and key ([`Admission`]'s methods, through `Deref`).
///
/// A request guard: `decision: RateLimitDecision` on routes the fairing (or
/// an earlier rate-limit guard in the same handler) limited; a request
/// without one (an exempt path, an allow-listed client, a policy built with
/// [`decision_for_handlers(false)`](ratekeeper_http::HttpPolicy::decision_for_handlers)
/// on a route neither counting by response nor holding places in flight)
/// fails with 500. Use `Option<RateLimitDecision>` where it may be absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitDecision(pub Admission);

impl Deref for RateLimitDecision {
    type Target = Admission;

    fn deref(&self) -> &Admission {
        &self.0
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for RateLimitDecision {
    type Error = &'static str;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        match crate::cache::RequestState::of(request).admission() {
            Some(admission) => Outcome::Success(Self(admission)),
            None => Outcome::Error((
                Status::InternalServerError,
                "no rate-limit decision for this request: it is exempt or allow-listed, no \
                 RateLimit fairing or rate-limit guard before this one limited it, or the policy \
                 hands handlers no decision (decision_for_handlers(false))",
            )),
        }
    }
}
