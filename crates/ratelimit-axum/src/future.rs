//! The response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use crate::service::add_headers;

type Deciding<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

pin_project! {
    /// The future of [`RateLimit`](crate::RateLimit). When the store decides at
    /// once (the memory store), it is the inner service's future plus the
    /// rate-limit headers, or the layer's own answer, with nothing boxed; when
    /// the store must wait (SQLite, Redis), the decision and the inner call run
    /// in one boxed future.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<F, B, E> {
        Answered { response: Option<Response<B>> },
        Forwarded { #[pin] future: F, headers: Vec<(&'static str, String)> },
        Deciding { future: Deciding<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn answered(response: Response<B>) -> Self {
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

    pub(crate) fn deciding(future: Deciding<B, E>) -> Self {
        Self {
            state: State::Deciding { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

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
                Poll::Ready(Ok(response))
            }
            StateProjection::Deciding { future } => future.as_mut().poll(cx),
        }
    }
}
