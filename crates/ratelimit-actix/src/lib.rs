#![doc = include_str!("../README.md")]

mod decision;
mod future;
mod middleware;

pub use decision::RateLimitDecision;
pub use future::ResponseFuture;
pub use middleware::{RateLimit, RateLimitMiddleware};
