#![doc = include_str!("../README.md")]

mod algorithm;
pub mod approximate;
pub mod clock;
mod decision;
mod duration;
pub mod engine;
mod error;
pub mod key;
pub mod layer;
mod limiter;
pub mod observe;
mod periodic;
pub mod quota;
pub mod rule;
#[cfg(feature = "serde")]
pub mod serde;
pub mod state;
pub mod storage;
pub mod support;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use decision::Decision;
pub use duration::{ParseDurationError, format_duration, parse_duration};
pub use error::{Error, ErrorKind, Result};
pub use layer::StorageExt;
pub use limiter::{Limiter, LimiterBuilder};
pub use periodic::Periodic;
pub use quota::{Quota, QuotaError};
pub use rule::{Algorithm, Rule, RuleError};
pub use storage::{CasOp, DecideEntry, DecideRequest, Storage, StorageStats};
