#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod algorithm;
pub mod calendar;
pub mod clock;
mod decision;
mod duration;
mod engine;
mod error;
mod key;
pub mod kit;
pub mod layer;
mod limiter;
pub mod observe;
mod periodic;
mod permit;
pub mod quota;
mod reservation;
pub mod rule;
#[cfg(feature = "serde")]
pub mod serde;
mod state;
pub mod storage;
mod support;

pub use calendar::{Calendar, CalendarError, Period, Weekday};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use decision::Decision;
pub use duration::{ParseDurationError, format_duration, parse_duration};
pub use error::{Error, ErrorKind, Result};
pub use key::{DEFAULT_MAX_KEY_LEN, MIN_MAX_KEY_LEN};
pub use layer::StorageExt;
pub use limiter::{Limiter, LimiterBuilder};
pub use periodic::Periodic;
pub use permit::Permit;
pub use quota::{Quota, QuotaError};
pub use reservation::Reservation;
pub use rule::{Algorithm, Rule, RuleError, Wait};
pub use storage::{
    AdjustEntry, AdjustRequest, Adjustment, CasOp, DecideEntry, DecideRequest, Storage,
    StorageStats,
};
