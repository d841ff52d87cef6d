//! The service: translates a request into the HTTP policy's view, asks the policy,
//! and answers or passes the request on.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, MatchedPath, OriginalUri};
use http::{Extensions, HeaderName, HeaderValue, Request, Response};
use ratekeeper_http::{
    Admission, Decided, Followup, Identity, Outcome, RequestView, SharedPolicy, add_headers,
    response,
};
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

/// What the layer and every service it builds share. One reference: axum
/// clones a route's service for every request, and each reference counted
/// is an atomic increment and decrement per request.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) policy: SharedPolicy,
    pub(crate) peer: PeerFn,
}

/// The [`tower::Service`] that [`RateLimitLayer`](crate::RateLimitLayer) builds.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

const NO_PEER: &str = "no peer address: serve the app with \
                       into_make_service_with_connect_info::<SocketAddr>(), or give the layer a peer \
                       function";

/// What to do with a request once the policy has spoken.
enum Action<B> {
    Answer(Response<B>),
    /// Call the handler and add these headers; on a route counting only
    /// some responses, settle the request with the response's status; on a
    /// route with concurrency rules, hold its places until the body ends.
    Forward(Vec<(HeaderName, HeaderValue)>, Followup),
}

/// Settles the request by `response`'s status, adds `headers`, and gives
/// its places to the body.
async fn follow<B: AnswerBody>(
    followup: Followup,
    response: Response<B>,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Response<B> {
    followup.settle(response.status()).await;
    let response = with_headers(response, headers);
    match followup.into_places() {
        Some(places) => response.map(|body| body.holding(places)),
        None => response,
    }
}

/// Applies an outcome: the layer's answer (in gRPC's form for gRPC requests),
/// or the request goes on with the handler's view of the decision.
#[inline]
fn act<B: AnswerBody, ReqBody>(outcome: Outcome, request: &mut Request<ReqBody>) -> Action<B> {
    match outcome.for_request(request.headers()) {
        Outcome::Respond {
            status,
            headers,
            body,
            ..
        } => Action::Answer(response(status, headers, body).map(B::answer)),
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

fn with_headers<B>(
    mut response: Response<B>,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Response<B> {
    add_headers(response.headers_mut(), headers);
    response
}

/// What the policy sees of `request`; the matched route pattern only when
/// the policy reads it (`reads_route`: looking it up costs as much as a
/// third of what the view costs).
fn view<B>(request: &Request<B>, peer: IpAddr, reads_route: bool) -> RequestView<'_> {
    // Inside a nested router axum strips the prefix from the URI; the
    // route table matches the full path, as the client sent it.
    let path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().path(), |original| original.0.path());
    RequestView {
        method: request.method().as_str(),
        path,
        route: reads_route
            .then(|| request.extensions().get::<MatchedPath>())
            .flatten()
            .map(MatchedPath::as_str),
        peer,
        headers: request.headers(),
        identity: request.extensions().get::<Identity>(),
    }
}

impl<S> RateLimit<S> {
    /// Applies an outcome decided at once: no boxed future, and the service
    /// that was polled ready takes the request.
    #[inline]
    fn at_once<ReqBody, ResBody>(
        &mut self,
        outcome: Outcome,
        mut request: Request<ReqBody>,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ResBody: AnswerBody + Send + 'static,
    {
        match act(outcome, &mut request) {
            Action::Answer(response) => ResponseFuture::answered(response),
            Action::Forward(headers, followup) if followup.is_empty() => {
                ResponseFuture::forwarded(self.inner.call(request), headers, with_headers)
            }
            Action::Forward(headers, followup) => {
                let call = self.inner.call(request);
                ResponseFuture::deciding(Box::pin(async move {
                    Ok(follow(followup, call.await?, headers).await)
                }))
            }
        }
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

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let Some(peer) = (self.shared.peer)(request.extensions()) else {
            // Without a peer address every client would share one key:
            // refuse loudly rather than limit wrongly.
            return self.at_once(Outcome::misconfigured(NO_PEER), request);
        };
        // One policy for the whole request, even if it is replaced meanwhile.
        let policy = self.shared.policy.load();
        let reads_route = policy.reads_route();
        let policy = match policy.now_or_later(&view(&request, peer, reads_route)) {
            Decided::Now(outcome) => return self.at_once(outcome, request),
            Decided::Later(policy) => policy,
        };
        // The store must wait. The service that was polled ready handles this
        // request once decided; a clone takes its place for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::deciding(Box::pin(async move {
            let outcome = policy.check(&view(&request, peer, reads_route)).await;
            let mut request = request;
            match act(outcome, &mut request) {
                Action::Answer(response) => Ok(response),
                Action::Forward(headers, followup) => {
                    let response = inner.call(request).await?;
                    Ok(follow(followup, response, headers).await)
                }
            }
        }))
    }
}
