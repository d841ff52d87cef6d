//! The fairing: protects every route (or serves the guards), and writes the
//! policy's headers and answers into responses.

use std::any::TypeId;
use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use ratekeeper_http::{Limits, Outcome, SharedPolicy, static_name};
use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::http::uri::Origin;
use rocket::http::{Header, Method, Status};
use rocket::route::{self, Handler, Route};
use rocket::{Build, Data, Orbit, Request, Response, Rocket};

use crate::cache::RequestState;
use crate::routes::RouteIndex;
use crate::view::decide;

/// Where a request the policy answers is sent instead of its own route, so
/// that its handler never runs.
const ANSWER_PATH: &str = "/__ratelimit/answer";

/// Applies an [`HttpPolicy`](ratekeeper_http::HttpPolicy) in a Rocket application.
///
/// - `rocket.attach(RateLimit::new(policy))` protects every route with one
///   line: the fairing decides before routing, and a request the policy
///   answers (429, 403, 503, …) is sent to the adapter's own route, so its
///   handler never runs. Tune single routes in the policy's route table
///   (patterns such as `/users/{id}`), or add a [`RateLimitedBy`](crate::RateLimitedBy)
///   guard for limits of their own.
/// - `rocket.attach(RateLimit::guards_only(policy))` decides only where a
///   route asks, with the [`RateLimited`](crate::RateLimited) or
///   [`RateLimitedBy`](crate::RateLimitedBy) guards.
///
/// Either way the fairing writes the rate-limit headers into responses, and
/// the policy's answer (status, `Retry-After`, headers, JSON body) over the
/// response of a denied request.
///
/// ```no_run
/// use ratekeeper_http::{HttpPolicy, KeyExtractor, KeySource, Limits, RouteTable};
/// use ratekeeper_core::{Algorithm, Limiter, Rule};
/// use ratekeeper_rocket::RateLimit;
///
/// # fn build(store: std::sync::Arc<dyn ratekeeper_core::Storage>) -> rocket::Rocket<rocket::Build> {
/// let rule = Rule::new("api", Algorithm::Gcra, "100/minute".parse().unwrap()).unwrap();
/// let routes = RouteTable::new().default_limits(Limits::new(vec![rule]));
/// let policy = HttpPolicy::new(Limiter::new(store), routes, KeyExtractor::new(KeySource::Ip));
/// rocket::build().attach(RateLimit::new(policy))
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimit {
    policy: SharedPolicy,
    every_route: bool,
    /// The app's routes, indexed at liftoff, for policies that key by route:
    /// the fairing decides before Rocket matches one.
    routes: Arc<OnceLock<RouteIndex>>,
}

impl RateLimit {
    /// A fairing that limits every request with `policy` (an `HttpPolicy`,
    /// or a [`SharedPolicy`] to replace it later).
    pub fn new(policy: impl Into<SharedPolicy>) -> Self {
        Self {
            policy: policy.into(),
            every_route: true,
            routes: Arc::default(),
        }
    }

    /// A fairing that limits only the routes with a rate-limit guard.
    pub fn guards_only(policy: impl Into<SharedPolicy>) -> Self {
        Self {
            policy: policy.into(),
            every_route: false,
            routes: Arc::default(),
        }
    }

    /// The policy, replaceable while the server runs.
    pub fn policy(&self) -> &SharedPolicy {
        &self.policy
    }
}

/// What the guards find in Rocket's managed state.
pub(crate) struct Managed {
    pub(crate) policy: SharedPolicy,
    /// Whether the fairing already decided every request by the route table.
    pub(crate) every_route: bool,
    /// Per [`RouteLimits`](crate::RouteLimits) type, its limits, built once.
    limits: Mutex<HashMap<TypeId, Arc<Limits>>>,
}

impl Managed {
    pub(crate) fn limits_for<L: crate::RouteLimits>(&self) -> Arc<Limits> {
        let build = || Arc::new(L::limits());
        match self.limits.lock() {
            Ok(mut map) => Arc::clone(map.entry(TypeId::of::<L>()).or_insert_with(build)),
            Err(_) => build(),
        }
    }
}

/// The adapter's own route: an empty answer, replaced in `on_response`.
#[derive(Clone)]
struct Answer;

#[rocket::async_trait]
impl Handler for Answer {
    async fn handle<'r>(&self, request: &'r Request<'_>, _: Data<'r>) -> route::Outcome<'r> {
        route::Outcome::from(request, ())
    }
}

#[rocket::async_trait]
impl Fairing for RateLimit {
    fn info(&self) -> Info {
        Info {
            name: "ratekeeper",
            kind: Kind::Ignite | Kind::Liftoff | Kind::Request | Kind::Response,
        }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> fairing::Result {
        let rocket = rocket.manage(Managed {
            policy: self.policy.clone(),
            every_route: self.every_route,
            limits: Mutex::new(HashMap::new()),
        });
        Ok(if self.every_route {
            // Ranked ahead of any catch-all route of the app.
            rocket.mount(
                "/",
                vec![Route::ranked(-100, Method::Get, ANSWER_PATH, Answer)],
            )
        } else {
            rocket
        })
    }

    async fn on_liftoff(&self, rocket: &Rocket<Orbit>) {
        // Every route is mounted by now, also those of later fairings. The
        // index is built even if the policy does not key by route yet: a
        // replacement policy may.
        if self.every_route {
            let _ = self.routes.set(RouteIndex::new(rocket.routes()));
        }
    }

    async fn on_request(&self, request: &mut Request<'_>, _: &mut Data<'_>) {
        if !self.every_route {
            return;
        }
        let outcome = decide(&self.policy, request, None, self.routes.get()).await;
        let answered = matches!(outcome, Outcome::Respond { .. });
        RequestState::of(request).store(outcome);
        if answered {
            // A fairing cannot refuse a request, but it can send it
            // elsewhere: its handler never runs.
            request.set_method(Method::Get);
            if let Ok(uri) = Origin::parse(ANSWER_PATH) {
                request.set_uri(uri);
            }
        }
    }

    async fn on_response<'r>(&self, request: &'r Request<'_>, response: &mut Response<'r>) {
        // Routes counting only some responses settle by this one: the
        // decision applied, and any a route guard's decision replaced.
        let (outcome, settlements) = RequestState::of(request).take();
        if let Ok(status) = http::StatusCode::from_u16(response.status().code) {
            for settlement in settlements {
                settlement.finish(status).await;
            }
        }
        let headers = match outcome {
            Some(Outcome::Proceed { headers, .. }) => headers,
            Some(Outcome::Respond {
                status,
                headers,
                body,
                ..
            }) => {
                response.set_status(Status::new(status.as_u16()));
                let body = body.map_or_else(Bytes::new, |b| b.to_json());
                response.set_sized_body(body.len(), Cursor::new(body));
                headers
            }
            None => return,
        };
        for (name, value) in headers {
            // The policy writes UTF-8 (a rule's name may be non-ASCII).
            if let Ok(value) = std::str::from_utf8(value.as_bytes()) {
                response.set_header(Header::new(static_name(&name), value.to_owned()));
            }
        }
    }
}
