//! The service: translates a request into the HTTP policy's view, asks the policy,
//! and answers or passes the request on.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, MatchedPath, OriginalUri};
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use ratelimit_http::{Headers, Identity, Outcome, RequestView, SharedPolicy, is_grpc};
use tower::Service;

use crate::body::AnswerBody;
use crate::decision::RateLimitDecision;
use crate::future::ResponseFuture;

/// Finds a request's peer address in its extensions.
pub type PeerFn = Arc<dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync>;

/// The default peer lookup: axum's `ConnectInfo<SocketAddr>`, or a
/// `SocketAddr` the server put in the extensions (hyper services).
pub fn connect_info_peer(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .or_else(|| extensions.get::<SocketAddr>().map(SocketAddr::ip))
}

/// The [`tower::Service`] that [`RateLimitLayer`](crate::RateLimitLayer) builds.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    policy: SharedPolicy,
    peer: PeerFn,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, policy: SharedPolicy, peer: PeerFn) -> Self {
        Self {
            inner,
            policy,
            peer,
        }
    }
}

/// An `http::HeaderMap` seen through the HTTP policy's [`Headers`] trait.
struct HeaderView<'a>(&'a HeaderMap);

impl Headers for HeaderView<'_> {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.0
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(HeaderValue::as_bytes)
    }
}

/// The header names the policy writes, made once at compile time; any other
/// name is checked when it comes.
fn header_name(name: &'static str) -> Option<HeaderName> {
    Some(match name {
        "ratelimit" => const { HeaderName::from_static("ratelimit") },
        "ratelimit-policy" => const { HeaderName::from_static("ratelimit-policy") },
        "x-ratelimit-limit" => const { HeaderName::from_static("x-ratelimit-limit") },
        "x-ratelimit-remaining" => const { HeaderName::from_static("x-ratelimit-remaining") },
        "x-ratelimit-reset" => const { HeaderName::from_static("x-ratelimit-reset") },
        "retry-after" => http::header::RETRY_AFTER,
        "content-type" => http::header::CONTENT_TYPE,
        other => return HeaderName::from_bytes(other.as_bytes()).ok(),
    })
}

pub(crate) fn add_headers(map: &mut HeaderMap, headers: Vec<(&'static str, String)>) {
    map.reserve(headers.len());
    for (name, value) in headers {
        // The string's buffer becomes the header's: no copy (the policy makes
        // values with their exact length, so `Bytes` takes them as they are).
        if let (Some(name), Ok(value)) = (
            header_name(name),
            HeaderValue::from_maybe_shared(bytes::Bytes::from(value)),
        ) {
            map.insert(name, value);
        }
    }
}

fn respond<B: AnswerBody>(
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
) -> Response<B> {
    let mut response = Response::new(B::answer(bytes::Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = response.headers_mut();
    map.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // The outcome's own content type (gRPC's) replaces JSON's.
    add_headers(map, headers);
    response
}

const NO_PEER: &str = "{\"error\":\"rate_limiter_misconfigured\",\"message\":\"no peer address: serve the \
                       app with into_make_service_with_connect_info::<SocketAddr>(), or give the layer a \
                       peer function\"}";

/// What to do with a request once the policy has spoken.
enum Action<B> {
    Answer(Response<B>),
    Forward(Vec<(&'static str, String)>),
}

/// Applies an outcome: the layer's answer (in gRPC's form for gRPC requests),
/// or the request goes on with the handler's view of the decision.
fn act<B: AnswerBody, ReqBody>(outcome: Outcome, request: &mut Request<ReqBody>) -> Action<B> {
    // Only an answer differs for gRPC, so only an answer asks.
    let outcome = match outcome {
        answer @ Outcome::Respond { .. } if is_grpc(&HeaderView(request.headers())) => {
            answer.into_grpc()
        }
        other => other,
    };
    match outcome {
        Outcome::Respond {
            status,
            headers,
            body,
            ..
        } => Action::Answer(respond(status, headers, body)),
        Outcome::Proceed { headers, admission } => {
            if let Some(admission) = admission {
                request
                    .extensions_mut()
                    .insert(RateLimitDecision(admission));
            }
            Action::Forward(headers)
        }
    }
}

fn view<'a, B>(
    request: &'a Request<B>,
    peer: IpAddr,
    headers: &'a HeaderView<'a>,
) -> RequestView<'a> {
    // Inside a nested router axum strips the prefix from the URI; the
    // route table matches the full path, as the client sent it.
    let path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().path(), |original| original.0.path());
    RequestView {
        method: request.method().as_str(),
        path,
        route: request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
        peer,
        headers,
        identity: request.extensions().get::<Identity>(),
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: AnswerBody + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let Some(peer) = (self.peer)(request.extensions()) else {
            // Without a peer address every client would share one key:
            // refuse loudly rather than limit wrongly.
            return ResponseFuture::answered(respond(500, Vec::new(), NO_PEER.to_owned()));
        };
        // One policy for the whole request, even if it is replaced meanwhile.
        let policy = self.policy.load();
        let outcome = policy.check_now(&view(&request, peer, &HeaderView(request.headers())));
        if let Some(outcome) = outcome {
            // The store decided at once: no boxed future, and the service
            // that was polled ready takes the request.
            return match act(outcome, &mut request) {
                Action::Answer(response) => ResponseFuture::answered(response),
                Action::Forward(headers) => {
                    ResponseFuture::forwarded(self.inner.call(request), headers)
                }
            };
        }
        // The store must wait. The service that was polled ready handles this
        // request once decided; a clone takes its place for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let policy = policy.into_owned();
        ResponseFuture::deciding(Box::pin(async move {
            let outcome = policy
                .check(&view(&request, peer, &HeaderView(request.headers())))
                .await;
            match act(outcome, &mut request) {
                Action::Answer(response) => Ok(response),
                Action::Forward(headers) => {
                    let mut response = inner.call(request).await?;
                    add_headers(response.headers_mut(), headers);
                    Ok(response)
                }
            }
        }))
    }
}
