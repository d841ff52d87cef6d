//! The middleware's response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::Error;
use actix_web::body::EitherBody;
use actix_web::dev::ServiceResponse;
use pin_project_lite::pin_project;

use crate::middleware::add_headers;

type Deciding<B> = Pin<Box<dyn Future<Output = Result<ServiceResponse<EitherBody<B>>, Error>>>>;

pin_project! {
    /// The future of [`RateLimitMiddleware`](crate::RateLimitMiddleware).
    /// When the store decides at once (the memory store), it is the inner
    /// service's future plus the rate-limit headers, or the middleware's own
    /// answer, with nothing boxed; when the store must wait (SQLite, Redis),
    /// the decision and the inner call run in one boxed future.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<F, B> {
        Answered { response: Option<ServiceResponse<EitherBody<B>>> },
        Forwarded { #[pin] future: F, headers: Vec<(&'static str, String)> },
        Deciding { future: Deciding<B> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn answered(response: ServiceResponse<EitherBody<B>>) -> Self {
        Self {
            state: State::Answered {
                response: Some(response),
            },
        }
    }

    pub(crate) fn forwarded(future: F, headers: Vec<(&'static str, String)>) -> Self {
        Self {
            state: State::Forwarded { future, headers },
        }
    }

    pub(crate) fn deciding(future: Deciding<B>) -> Self {
        Self {
            state: State::Deciding { future },
        }
    }
}

impl<F, B> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            // Polled again after completing: never completes again.
            StateProjection::Answered { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
            StateProjection::Forwarded { future, headers } => {
                let mut response = ready!(future.poll(cx))?;
                add_headers(response.headers_mut(), std::mem::take(headers));
                Poll::Ready(Ok(response.map_into_left_body()))
            }
            StateProjection::Deciding { future } => future.as_mut().poll(cx),
        }
    }
}
