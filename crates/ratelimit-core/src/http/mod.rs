//! The framework-free HTTP side of rate limiting, shared by every adapter.
//!
//! So far: finding the client's address behind reverse proxies
//! ([`ClientIpPolicy`]), turning it into a key ([`ip_key`]), and rendering the
//! rate-limit response headers ([`rate_limit_headers`], [`retry_after_header`]).

mod client_ip;
mod headers;

pub use client_ip::{ClientIpPolicy, ForwardingHeader, Headers, InvalidProxy, ip_key};
pub use headers::{HeaderStyle, ResetFormat, rate_limit_headers, retry_after_header};
