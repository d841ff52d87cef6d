//! The response future.

use std::future::Future;
use std::pin::Pin;

use http::Response;

/// The future of [`RateLimit`](crate::RateLimit): the inner service's
/// future plus the rate-limit headers, or the layer's own answer, with
/// nothing boxed when the store decides at once (the memory store); one
/// boxed future when it must wait (SQLite, Redis).
pub type ResponseFuture<F, B, E> = ratekeeper_http::ResponseFuture<
    F,
    Response<B>,
    Response<B>,
    Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>,
>;
