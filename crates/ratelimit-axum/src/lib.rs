#![doc = include_str!("../README.md")]

mod layer;
mod service;

pub use layer::RateLimitLayer;
pub use service::{RateLimit, RateLimitDecision};
