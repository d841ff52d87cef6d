//! The service: translates a request into the core's view, asks the policy,
//! and answers or passes the request on.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, MatchedPath};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use ratelimit_core::Decision;
use ratelimit_core::http::{Headers, HttpPolicy, Identity, Outcome, RequestView};
use tower::Service;

/// The decision for the current request, inserted into its extensions for
/// handlers: `Extension(RateLimitDecision(d)): Extension<RateLimitDecision>`.
#[derive(Debug, Clone)]
pub struct RateLimitDecision(pub Decision);

/// The [`tower::Service`] that [`RateLimitLayer`](crate::RateLimitLayer) builds.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    policy: Arc<HttpPolicy>,
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, policy: Arc<HttpPolicy>) -> Self {
        Self { inner, policy }
    }
}

/// An `http::HeaderMap` seen through the core's [`Headers`] trait.
struct HeaderView<'a>(&'a HeaderMap);

impl Headers for HeaderView<'_> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.0
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }
}

fn respond<B: From<String>>(
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
) -> Response<B> {
    let mut response = Response::new(B::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    let map = response.headers_mut();
    map.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_headers(map, headers);
    response
}

fn add_headers(map: &mut HeaderMap, headers: Vec<(&'static str, String)>) {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            map.insert(HeaderName::from_static(name), value);
        }
    }
}

const NO_PEER: &str = "{\"error\":\"rate_limiter_misconfigured\",\"message\":\"no peer address: serve the app with \
                       into_make_service_with_connect_info::<SocketAddr>()\"}";

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready handles this request; a clone
        // takes its place for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy.clone();
        Box::pin(async move {
            let Some(peer) = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
            else {
                // Without a peer address every client would share one key:
                // refuse loudly rather than limit wrongly.
                return Ok(respond(500, Vec::new(), NO_PEER.to_owned()));
            };
            let outcome = {
                let headers = HeaderView(request.headers());
                let view = RequestView {
                    method: request.method().as_str(),
                    path: request.uri().path(),
                    route: request
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str),
                    peer,
                    headers: &headers,
                    identity: request.extensions().get::<Identity>(),
                };
                policy.check(&view).await
            };
            match outcome {
                Outcome::Respond {
                    status,
                    headers,
                    body,
                    ..
                } => Ok(respond(status, headers, body)),
                Outcome::Proceed { headers, decision } => {
                    if let Some(decision) = decision {
                        request.extensions_mut().insert(RateLimitDecision(decision));
                    }
                    let mut response = inner.call(request).await?;
                    add_headers(response.headers_mut(), headers);
                    Ok(response)
                }
            }
        })
    }
}
