//! The middleware's response future.

use std::future::Future;
use std::pin::Pin;

use actix_web::Error;
use actix_web::body::EitherBody;
use actix_web::dev::ServiceResponse;

/// The future of [`RateLimitMiddleware`](crate::RateLimitMiddleware): the
/// inner service's future plus the rate-limit headers, or the middleware's
/// own answer, with nothing boxed when the store decides at once (the memory
/// store); one boxed future when it must wait (SQLite, Redis).
pub type ResponseFuture<F, B> = ratekeeper_http::ResponseFuture<
    F,
    ServiceResponse<B>,
    ServiceResponse<EitherBody<B>>,
    Pin<Box<dyn Future<Output = Result<ServiceResponse<EitherBody<B>>, Error>>>>,
>;
