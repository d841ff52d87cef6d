#![doc = include_str!("../README.md")]

mod config;
mod key;
mod shard;
mod storage;

pub use config::{DEFAULT_CLEANUP_INTERVAL, DEFAULT_MAX_SIZE, DEFAULT_SHARDS, MemoryConfig};
pub use storage::{MemoryStorage, MemoryStorageBuilder};
