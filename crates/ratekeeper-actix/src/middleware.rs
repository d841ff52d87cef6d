//! The middleware: translates a request into the HTTP policy's view, asks the
//! policy, and answers or passes the request on.

use std::net::IpAddr;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use actix_web::{Error, HttpMessage, HttpResponse};
use ratekeeper_http::{
    Admission, Decided, Followup, HttpPolicy, Identity, Outcome, PolicyGuard, RequestView,
    SharedPolicy,
};

use crate::decision::RateLimitDecision;
use crate::future::ResponseFuture;

/// Applies an [`HttpPolicy`] to every request of an `App`, a `scope` or a
/// `resource` (`.wrap(RateLimit::new(policy))`). The policy can be replaced
/// while the server runs, through the [`SharedPolicy`] the middleware was
/// given (or [`policy`](Self::policy)).
///
/// actix-web builds one app per worker thread by calling the app factory
/// once per worker. Build the middleware *outside* the factory and clone it
/// in: clones share the policy and its store, so every worker counts against
/// one limit. (A policy built inside the factory would give each worker its
/// own memory store: N workers, N times the limit.)
///
/// ```no_run
/// use actix_web::{App, HttpServer, web};
/// use ratekeeper_actix::RateLimit;
/// use ratekeeper_http::{HttpPolicy, KeyExtractor, KeySource, Limits, RouteTable};
/// use ratekeeper_core::{Algorithm, Limiter, Rule};
///
/// # async fn run(store: std::sync::Arc<dyn ratekeeper_core::Storage>) -> std::io::Result<()> {
/// let rule = Rule::new("api", Algorithm::Gcra, "100/minute".parse().unwrap()).unwrap();
/// let routes = RouteTable::new().default_limits(Limits::new(vec![rule]));
/// let limit = RateLimit::new(HttpPolicy::new(Limiter::new(store), routes, KeyExtractor::new(KeySource::Ip)));
/// HttpServer::new(move || {
///     App::new()
///         .wrap(limit.clone())
///         .route("/", web::get().to(|| async { "hello" }))
/// })
/// .bind(("127.0.0.1", 8080))?
/// .run()
/// .await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimit {
    policy: SharedPolicy,
}

impl RateLimit {
    /// Middleware applying `policy` (an `HttpPolicy`, or a [`SharedPolicy`]
    /// to replace it later).
    pub fn new(policy: impl Into<SharedPolicy>) -> Self {
        Self {
            policy: policy.into(),
        }
    }

    /// The policy, replaceable while the server runs.
    pub fn policy(&self) -> &SharedPolicy {
        &self.policy
    }
}

impl<S, B> Transform<S, ServiceRequest> for RateLimit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RateLimitMiddleware<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(RateLimitMiddleware {
            service: Rc::new(service),
            policy: self.policy.clone(),
        }))
    }
}

/// The service [`RateLimit`] wraps around an app, scope or resource.
#[derive(Debug)]
pub struct RateLimitMiddleware<S> {
    service: Rc<S>,
    policy: SharedPolicy,
}

/// actix's header map seen through the HTTP policy's [`Headers`] trait.
struct HeaderView<'a>(&'a HeaderMap);

impl ratekeeper_http::Headers for HeaderView<'_> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.0.get_all(name).map(HeaderValue::as_bytes).collect()
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(HeaderValue::as_bytes)
    }
}

/// The header names the policy writes, made once at compile time; any other
/// name is checked when it comes.
fn header_name(name: &http::HeaderName) -> Option<HeaderName> {
    Some(match name.as_str() {
        "ratelimit" => const { HeaderName::from_static("ratelimit") },
        "ratelimit-policy" => const { HeaderName::from_static("ratelimit-policy") },
        "x-ratelimit-limit" => const { HeaderName::from_static("x-ratelimit-limit") },
        "x-ratelimit-remaining" => const { HeaderName::from_static("x-ratelimit-remaining") },
        "x-ratelimit-reset" => const { HeaderName::from_static("x-ratelimit-reset") },
        "retry-after" => const { HeaderName::from_static("retry-after") },
        "content-type" => CONTENT_TYPE,
        other => return HeaderName::from_bytes(other.as_bytes()).ok(),
    })
}

/// Adds the policy's headers (in the `http` crate's types) to actix's map.
fn add_headers(map: &mut HeaderMap, headers: Headers) {
    for (name, value) in headers {
        if let (Some(name), Ok(value)) = (
            header_name(&name),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            map.insert(name, value);
        }
    }
}

/// The inner service's response with the policy's headers.
fn with_headers<B>(
    mut response: ServiceResponse<B>,
    headers: Headers,
) -> ServiceResponse<EitherBody<B>> {
    add_headers(response.headers_mut(), headers);
    response.map_into_left_body()
}

/// The policy's headers.
type Headers = Vec<(http::HeaderName, http::HeaderValue)>;

const NO_PEER: &str =
    "no peer address for this request (a Unix socket?): the rate limiter cannot key it";

/// What to do with a request once the policy has spoken.
enum Action {
    Answer(HttpResponse),
    /// Call the handler and add these headers; on a route counting only
    /// some responses, settle the request with the response's status; on a
    /// route with concurrency rules, hold its places until the body ends.
    Forward(Headers, Followup),
}

/// Settles the request by `response`'s status, adds `headers`, and gives
/// its places to the body.
async fn follow<B: MessageBody + 'static>(
    followup: Followup,
    response: ServiceResponse<B>,
    headers: Headers,
) -> ServiceResponse<EitherBody<B>> {
    let status = http::StatusCode::from_u16(response.status().as_u16())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    followup.settle(status).await;
    let response = with_headers(response, headers);
    match followup.into_places() {
        Some(places) => crate::places::holding(response, places),
        None => response,
    }
}

/// Applies an outcome: the middleware's answer, or the request goes on with
/// the handler's view of the decision.
fn act(outcome: Outcome, request: &ServiceRequest) -> Action {
    match outcome {
        Outcome::Respond {
            status,
            headers,
            body,
            ..
        } => {
            let status =
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = HttpResponse::build(status)
                .body(body.map_or_else(bytes::Bytes::new, |b| b.to_json()));
            add_headers(response.headers_mut(), headers);
            Action::Answer(response)
        }
        Outcome::Proceed { headers, admission } => {
            let followup = admission
                .as_ref()
                .map(Admission::followup)
                .unwrap_or_default();
            if let Some(admission) = admission {
                request
                    .extensions_mut()
                    .insert(RateLimitDecision(admission));
            }
            Action::Forward(headers, followup)
        }
    }
}

/// Asks `policy` about `request`: at once if the store can decide at once,
/// otherwise it hands the policy back for the wait.
///
/// The path the policy sees is the one actix-web routes on
/// (`match_info()`): percent-encoded characters decoded, except `/`, `%`
/// and `+`. The raw `path()` would let `/h%65alth` reach the `/health`
/// handler under another route's limits.
fn decide_now(policy: PolicyGuard, request: &ServiceRequest, peer: IpAddr) -> Decided {
    // The pattern costs a lookup and an allocation: only when it is read.
    let route = policy
        .reads_route()
        .then(|| request.match_pattern())
        .flatten();
    let extensions = request.extensions();
    let headers = HeaderView(request.headers());
    policy.now_or_later(&RequestView {
        method: request.method().as_str(),
        path: request.match_info().as_str(),
        route: route.as_deref(),
        peer,
        headers: &headers,
        identity: extensions.get::<Identity>(),
    })
}

async fn decide(policy: &HttpPolicy, request: &ServiceRequest, peer: IpAddr) -> Outcome {
    let route = policy
        .reads_route()
        .then(|| request.match_pattern())
        .flatten();
    let headers = HeaderView(request.headers());
    // The identity is copied out: no borrow of the extensions across the wait.
    let identity = request.extensions().get::<Identity>().cloned();
    policy
        .check(&RequestView {
            method: request.method().as_str(),
            path: request.match_info().as_str(),
            route: route.as_deref(),
            peer,
            headers: &headers,
            identity: identity.as_ref(),
        })
        .await
}

impl<S, B> RateLimitMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    /// Applies an outcome decided at once: nothing boxed.
    fn at_once(&self, outcome: Outcome, request: ServiceRequest) -> ResponseFuture<S::Future, B> {
        match act(outcome, &request) {
            Action::Answer(response) => {
                ResponseFuture::answered(request.into_response(response).map_into_right_body())
            }
            Action::Forward(headers, followup) if followup.is_empty() => {
                ResponseFuture::forwarded(self.service.call(request), headers, with_headers)
            }
            Action::Forward(headers, followup) => {
                let call = self.service.call(request);
                ResponseFuture::deciding(Box::pin(async move {
                    Ok(follow(followup, call.await?, headers).await)
                }))
            }
        }
    }
}

impl<S, B> Service<ServiceRequest> for RateLimitMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = ResponseFuture<S::Future, B>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        // The socket's peer, never `realip_remote_addr()`, which believes
        // whatever forwarding header the client sends. Proxies are the
        // policy's business.
        let Some(peer) = request.peer_addr().map(|a| a.ip()) else {
            return self.at_once(Outcome::misconfigured(NO_PEER), request);
        };
        // One policy for the whole request, even if it is replaced meanwhile.
        let policy = match decide_now(self.policy.load(), &request, peer) {
            Decided::Now(outcome) => return self.at_once(outcome, request),
            Decided::Later(policy) => policy,
        };
        let service = Rc::clone(&self.service);
        ResponseFuture::deciding(Box::pin(async move {
            let outcome = decide(&policy, &request, peer).await;
            match act(outcome, &request) {
                Action::Answer(response) => {
                    Ok(request.into_response(response).map_into_right_body())
                }
                Action::Forward(headers, followup) => {
                    let response = service.call(request).await?;
                    Ok(follow(followup, response, headers).await)
                }
            }
        }))
    }
}
