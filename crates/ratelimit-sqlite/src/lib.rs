#![doc = include_str!("../README.md")]

mod config;
mod error;
mod schema;
mod storage;

pub use config::{Blocking, Location, SqliteConfig, Synchronous};
pub use storage::{SqliteStorage, SqliteStorageBuilder};
