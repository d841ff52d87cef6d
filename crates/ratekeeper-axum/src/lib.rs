#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod decision;
mod future;
mod layer;
mod service;

pub use body::{AnswerBody, ResponseBody};
pub use decision::RateLimitDecision;
pub use future::ResponseFuture;
pub use layer::RateLimitLayer;
pub use service::{PeerFn, RateLimit, connect_info_peer};
