#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod decision;
mod future;
mod middleware;
mod places;

pub use decision::RateLimitDecision;
pub use future::ResponseFuture;
pub use middleware::{RateLimit, RateLimitMiddleware};
