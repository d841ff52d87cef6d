//! The response future every middleware adapter returns, written once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderName, HeaderValue};
use pin_project_lite::pin_project;

pin_project! {
    /// The future of a rate-limiting middleware, for adapters (the tower
    /// and actix-web ones name it as their service's future). When the
    /// store decides at once (the memory store), it is the inner service's
    /// future `F` plus the rate-limit headers, or the middleware's own
    /// answer, with nothing boxed; when the store must wait (SQLite, Redis),
    /// the decision and the inner call run in one future `D`, which the
    /// adapter boxes.
    ///
    /// `F` yields the inner service's response `T`; `finish` adds the
    /// headers to it and makes it the middleware's response `R` (a body
    /// type that can also hold the middleware's answers, say).
    pub struct ResponseFuture<F, T, R, D> {
        #[pin]
        state: State<F, T, R, D>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<F, T, R, D> {
        Answered { response: Option<R> },
        Forwarded {
            #[pin]
            future: F,
            headers: Vec<(HeaderName, HeaderValue)>,
            finish: fn(T, Vec<(HeaderName, HeaderValue)>) -> R,
        },
        Deciding { #[pin] future: D },
    }
}

impl<F, T, R, D> ResponseFuture<F, T, R, D> {
    /// The middleware answered at once: `response`.
    pub fn answered(response: R) -> Self {
        Self {
            state: State::Answered {
                response: Some(response),
            },
        }
    }

    /// The store decided at once and the request goes on: the inner
    /// service's `future`, whose response `finish` completes with `headers`.
    pub fn forwarded(
        future: F,
        headers: Vec<(HeaderName, HeaderValue)>,
        finish: fn(T, Vec<(HeaderName, HeaderValue)>) -> R,
    ) -> Self {
        Self {
            state: State::Forwarded {
                future,
                headers,
                finish,
            },
        }
    }

    /// The store must wait: `future` decides, then answers or calls the
    /// inner service.
    pub fn deciding(future: D) -> Self {
        Self {
            state: State::Deciding { future },
        }
    }
}

impl<F, T, R, D, E> Future for ResponseFuture<F, T, R, D>
where
    F: Future<Output = Result<T, E>>,
    D: Future<Output = Result<R, E>>,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            // Polled again after completing: never completes again.
            StateProjection::Answered { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
            StateProjection::Forwarded {
                future,
                headers,
                finish,
            } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(finish(response, std::mem::take(headers))))
            }
            StateProjection::Deciding { future } => future.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{Ready, ready};
    use std::task::Waker;

    type Test = ResponseFuture<Ready<Result<u8, ()>>, u8, String, Ready<Result<String, ()>>>;

    fn poll(future: &mut Test) -> Poll<Result<String, ()>> {
        Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn finish(response: u8, headers: Vec<(HeaderName, HeaderValue)>) -> String {
        format!("{response} + {} headers", headers.len())
    }

    #[test]
    fn each_state_completes_once_with_its_response() {
        let mut answered = Test::answered("429".to_owned());
        assert_eq!(poll(&mut answered), Poll::Ready(Ok("429".to_owned())));
        assert_eq!(poll(&mut answered), Poll::Pending);

        let headers = vec![(http::header::RETRY_AFTER, HeaderValue::from(1_u64))];
        let mut forwarded = Test::forwarded(ready(Ok(200)), headers, finish);
        assert_eq!(
            poll(&mut forwarded),
            Poll::Ready(Ok("200 + 1 headers".to_owned()))
        );

        let mut failed = Test::forwarded(ready(Err(())), Vec::new(), finish);
        assert_eq!(poll(&mut failed), Poll::Ready(Err(())));

        let mut deciding = Test::deciding(ready(Ok("decided".to_owned())));
        assert_eq!(poll(&mut deciding), Poll::Ready(Ok("decided".to_owned())));
    }
}
