//! The framework-free HTTP side of rate limiting, shared by every adapter.
//!
//! A view of a request that every adapter fills ([`RequestView`]), finding
//! the client's address behind reverse proxies ([`ClientIpPolicy`]), turning
//! a request into a key ([`KeyExtractor`], [`KeySource`], [`ip_key`]),
//! deciding what applies to a request ([`RouteTable`]: deny and allow lists,
//! exemptions, route rules; [`Tiers`]: per-tier limits for identified
//! callers; [`RuntimeLists`]: allow and deny lists changed at runtime and
//! kept in the store), and rendering the rate-limit response headers
//! ([`rate_limit_headers`], [`retry_after_header`]); [`HttpPolicy`] puts them
//! together into the one call every adapter makes, and hands handlers an
//! [`Admission`] (the decision, and a way to charge more). Adapters hold a
//! [`SharedPolicy`], which can be replaced while requests run. gRPC requests get
//! the same outcomes in gRPC's form ([`Outcome::into_grpc`]). Clients
//! denied again and again can be blocked for a while ([`AutoBlock`]).
//!
//! The [`Outcome`] speaks the `http` crate's types (`StatusCode`,
//! `HeaderName`, `HeaderValue`) and answers with an [`ErrorBody`]
//! serialised to JSON. What a framework adapter needs beyond translating
//! requests and responses is here too, written once: [`Headers`] for
//! `http::HeaderMap`, [`PolicyGuard::now_or_later`] (decide without a future
//! when the store can), [`response`] and [`add_headers`] for frameworks on
//! the `http` crate, [`static_name`] for those with their own header types,
//! [`Outcome::misconfigured`], and the middleware's [`ResponseFuture`].
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auto_block;
mod client_ip;
mod count;
mod future;
mod grpc;
mod headers;
mod key;
mod lists;
mod outcome;
mod per_rule;
mod places;
mod policy;
mod routes;
mod shared;
mod tiers;

pub use auto_block::{AutoBlock, DEFAULT_AUTO_BLOCK_CLIENTS};
pub use client_ip::{ClientIpPolicy, ForwardingHeader, Headers, InvalidProxy, ip_key};
pub use count::{CountWhen, Settlement};
pub use future::ResponseFuture;
pub use grpc::{grpc_status, is_grpc};
pub use headers::{HeaderStyle, ResetFormat, rate_limit_headers, retry_after_header};
pub use key::{ExtractedKey, Identity, KeyExtractor, KeyFn, KeySource, MissingKey, RequestView};
pub use lists::{DEFAULT_LIST_REFRESH, ListEntry, ListKind, RuntimeLists, parse_net};
pub use outcome::{ErrorBody, Outcome, add_headers, response, static_name};
pub use places::Places;
pub use policy::{Admission, BlockedHook, ErrorHook, Followup, HttpPolicy};
pub use routes::{Applies, ErrorMode, ExemptFn, Limits, RouteError, RouteTable};
pub use shared::{Decided, PolicyGuard, SharedPolicy};
/// A setting's name that is none of the accepted ones (`"fancy"` for a
/// header style); the message lists what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSetting(String);

impl std::fmt::Display for UnknownSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnknownSetting {}

/// The input of a failed parse, cut to 64 characters for messages.
fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

pub use tiers::{
    DEFAULT_TIER_CACHE_CAPACITY, DEFAULT_TIER_CACHE_TTL, TierResolver, Tiers, tier_resolver_fn,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_in_any_case_and_name_what_is_accepted_when_unknown() {
        assert_eq!(" Forwarded ".parse(), Ok(ForwardingHeader::Forwarded));
        assert_eq!(
            "X-Forwarded-For".parse(),
            Ok(ForwardingHeader::XForwardedFor)
        );
        assert_eq!("x-real-ip".parse(), Ok(ForwardingHeader::XRealIp));
        assert_eq!("Legacy".parse(), Ok(HeaderStyle::Legacy));
        assert_eq!("IETF".parse(), Ok(HeaderStyle::Ietf));
        assert_eq!("both".parse(), Ok(HeaderStyle::Both));
        assert_eq!(" none".parse(), Ok(HeaderStyle::None));
        let long = "y".repeat(100);
        let message = long.parse::<ForwardingHeader>().unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "unknown forwarding header {:?} (expected forwarded, x-forwarded-for or x-real-ip)",
                "y".repeat(64)
            )
        );
        let message = "fancy".parse::<HeaderStyle>().unwrap_err().to_string();
        assert_eq!(
            message,
            "unknown header style \"fancy\" (expected legacy, ietf, both or none)"
        );
    }
}
