//! Response bodies: the layer answers in the inner service's own body type
//! ([`AnswerBody`]), or wraps a body type it cannot write ([`ResponseBody`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full};
use pin_project_lite::pin_project;
use ratekeeper_http::Places;

/// A response body type the layer can write its own answers in (a denial's
/// JSON, an empty gRPC answer), so that its responses and the inner service's
/// have one type and nothing is re-boxed on the way out.
///
/// Implemented for axum's `Body`, `Full<Bytes>`, `String`, http-body-util's
/// `BoxBody` and `UnsyncBoxBody`, tonic's `Body` (feature `tonic`) and
/// [`ResponseBody`]. A service with another body type goes behind the layer
/// with its body wrapped in [`ResponseBody::inner`]:
///
/// ```
/// # use tower::ServiceBuilder;
/// # use ratekeeper_axum::{RateLimitLayer, ResponseBody};
/// # fn demo<S, B>(layer: RateLimitLayer, service: S)
/// # where S: tower::Service<http::Request<()>, Response = http::Response<B>> {
/// let limited = ServiceBuilder::new()
///     .layer(layer)
///     .map_response(|r: http::Response<B>| r.map(ResponseBody::inner))
///     .service(service);
/// # }
/// ```
pub trait AnswerBody: Sized {
    /// A body holding `bytes`.
    fn answer(bytes: Bytes) -> Self;

    /// This body, holding `places` (a request's places in flight on a
    /// route with concurrency rules) until it has been sent or dropped.
    /// The default gives them back at once, when the response leaves the
    /// layer: right for a body held whole in memory (`Full<Bytes>`,
    /// `String`), which goes out at once; the streaming bodies (axum's,
    /// the boxed ones, tonic's, [`ResponseBody`]) hold them to the end.
    fn holding(self, places: Places) -> Self {
        drop(places);
        self
    }
}

impl AnswerBody for axum::body::Body {
    fn answer(bytes: Bytes) -> Self {
        Self::from(bytes)
    }

    fn holding(self, places: Places) -> Self {
        Self::new(Holding::new(self, places))
    }
}

impl AnswerBody for Full<Bytes> {
    fn answer(bytes: Bytes) -> Self {
        Self::new(bytes)
    }
}

impl AnswerBody for String {
    fn answer(bytes: Bytes) -> Self {
        // The layer writes UTF-8 only.
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl<E> AnswerBody for BoxBody<Bytes, E>
where
    E: 'static,
{
    fn answer(bytes: Bytes) -> Self {
        Full::new(bytes).map_err(|never| match never {}).boxed()
    }

    fn holding(self, places: Places) -> Self {
        Holding::new(self, places).boxed()
    }
}

impl<E> AnswerBody for UnsyncBoxBody<Bytes, E>
where
    E: 'static,
{
    fn answer(bytes: Bytes) -> Self {
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    fn holding(self, places: Places) -> Self {
        Holding::new(self, places).boxed_unsync()
    }
}

#[cfg(feature = "tonic")]
impl AnswerBody for tonic::body::Body {
    fn answer(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            Self::default()
        } else {
            Self::new(Full::new(bytes))
        }
    }

    fn holding(self, places: Places) -> Self {
        Self::new(Holding::new(self, places))
    }
}

impl<B> AnswerBody for ResponseBody<B> {
    fn answer(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                body: Full::new(bytes),
            },
            places: Vec::new(),
        }
    }

    fn holding(mut self, places: Places) -> Self {
        self.places.push(places);
        self
    }
}

pin_project! {
    /// A body that is either a service's own body or one the layer wrote (a
    /// denial's JSON): for services whose body type is not an
    /// [`AnswerBody`]. Any `http_body::Body` with `Bytes` data fits inside.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
        // Places in flight (of each layer that holds some), given back when
        // the body ends.
        places: Vec<Places>,
    }
}

pin_project! {
    /// A body holding a request's places in flight until it ends (its last
    /// frame, an error) or is dropped (the client went away).
    struct Holding<B> {
        #[pin]
        body: B,
        places: Option<Places>,
    }
}

impl<B> Holding<B> {
    fn new(body: B, places: Places) -> Self {
        Self {
            body,
            places: Some(places),
        }
    }
}

impl<B: Body> Body for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.body.poll_frame(cx);
        if ends(&frame) {
            this.places.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Whether `frame` ends its body: the end, or an error (its places are
/// given back then).
fn ends<T, E>(frame: &Poll<Option<Result<T, E>>>) -> bool {
    matches!(frame, Poll::Ready(None | Some(Err(_))))
}

pin_project! {
    #[project = KindProjection]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { #[pin] body: Full<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps a service's own body.
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
            places: Vec::new(),
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { body } => f.debug_tuple("Inner").field(body).finish(),
            Kind::Full { body } => f.debug_tuple("Full").field(body).finish(),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = match this.kind.project() {
            KindProjection::Inner { body } => body.poll_frame(cx),
            KindProjection::Full { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(|never| match never {}))),
        };
        if ends(&frame) {
            this.places.clear();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { body } => body.size_hint(),
        }
    }
}
