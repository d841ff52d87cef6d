//! The framework-free HTTP side of rate limiting, shared by every adapter.
//!
//! So far: finding the client's address behind reverse proxies
//! ([`ClientIpPolicy`]) and turning it into a key ([`ip_key`]).

mod client_ip;

pub use client_ip::{ClientIpPolicy, ForwardingHeader, Headers, InvalidProxy, ip_key};
