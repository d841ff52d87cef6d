#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod approximate;
mod breaker;
mod deadline;
mod deny_cache;

pub use approximate::{Approximate, ApproximateStatus, ApproximateStorage};
pub use breaker::{Breaker, BreakerState, BreakerStatus, BreakerStorage};
pub use deadline::{Deadline, DeadlineStorage};
pub use deny_cache::{DenyCache, DenyCacheStatus, DenyCacheStorage};
