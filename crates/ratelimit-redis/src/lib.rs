#![doc = include_str!("../README.md")]

mod config;
mod connection;
mod error;
mod keys;
mod scripts;
mod sentinel;
mod storage;

pub use config::{
    DEFAULT_PREFIX, DEFAULT_SENTINEL_PORT, MAX_CONNECTIONS, RedisConfig, SentinelConfig,
    TimeSource, TlsCertificates, Topology,
};
pub use storage::{RedisStorage, RedisStorageBuilder};
