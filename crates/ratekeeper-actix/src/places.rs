//! Response bodies that hold a request's places in flight until they have
//! been sent.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use bytes::Bytes;
use ratekeeper_http::Places;

/// A body holding places in flight until it ends (its last chunk, an error)
/// or is dropped (the client went away).
struct Holding {
    body: BoxBody,
    places: Option<Places>,
}

impl MessageBody for Holding {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let next = Pin::new(&mut self.body).poll_next(cx);
        if matches!(next, Poll::Ready(None | Some(Err(_)))) {
            self.places.take();
        }
        next
    }
}

/// `response` with its body holding `places` until it has been sent (the
/// body boxed: only on routes with concurrency rules).
pub(crate) fn holding<B>(
    response: ServiceResponse<EitherBody<B>>,
    places: Places,
) -> ServiceResponse<EitherBody<B>>
where
    B: MessageBody + 'static,
{
    response.map_body(|_, body| {
        EitherBody::right(BoxBody::new(Holding {
            body: body.boxed(),
            places: Some(places),
        }))
    })
}
