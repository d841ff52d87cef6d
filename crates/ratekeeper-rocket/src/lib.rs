#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cache;
mod decision;
mod fairing;
mod guard;
mod routes;
mod view;

pub use cache::set_identity;
pub use decision::RateLimitDecision;
pub use fairing::RateLimit;
pub use guard::{RateLimited, RateLimitedBy, RouteLimits};
