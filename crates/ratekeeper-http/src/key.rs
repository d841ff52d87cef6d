//! Rate-limit keys for HTTP requests, from a framework-free view of the request.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::StatusCode;
use smol_str::{SmolStr, SmolStrBuilder};

use super::client_ip::{ClientIpPolicy, Headers, push_ip_key};

/// Who the application's own authentication says the caller is: a user (or
/// API client) id and, when the application knows it, a subscription tier.
///
/// ```
/// use ratekeeper_http::Identity;
///
/// let alice = Identity::new("alice").with_tier("pro");
/// assert_eq!((alice.user(), alice.tier()), ("alice", Some("pro")));
/// assert_eq!(Identity::new("bob").tier(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub(crate) user: SmolStr,
    pub(crate) tier: Option<SmolStr>,
}

impl Identity {
    /// The caller `user`, tier unknown (a tier resolver may find it).
    pub fn new(user: &str) -> Self {
        Self {
            user: SmolStr::new(user),
            tier: None,
        }
    }

    /// The same caller, in `tier`.
    #[must_use]
    pub fn with_tier(mut self, tier: &str) -> Self {
        self.tier = Some(SmolStr::new(tier));
        self
    }

    /// The user (or API client) id.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The subscription tier, if the application gave it.
    pub fn tier(&self) -> Option<&str> {
        self.tier.as_deref()
    }
}

/// What the policy sees of a request; each adapter fills one from its
/// framework's request.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    /// The method (`GET`, ...).
    pub method: &'a str,
    /// The path, without the query string.
    pub path: &'a str,
    /// The matched route pattern (`/users/{id}`), when the framework knows
    /// it and the policy reads it ([`HttpPolicy::reads_route`](crate::HttpPolicy::reads_route)),
    /// or the limits it is decided by key by it ([`KeySource::reads_route`]).
    pub route: Option<&'a str>,
    /// The connection's peer address.
    pub peer: IpAddr,
    /// The request's headers.
    pub headers: &'a (dyn Headers + Sync),
    /// The caller's identity, if the application's authentication attached one.
    pub identity: Option<&'a Identity>,
}

impl fmt::Debug for RequestView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestView")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("route", &self.route)
            .field("peer", &self.peer)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// A custom key function: `None` means "no key for this request".
pub type KeyFn = Arc<dyn Fn(&RequestView<'_>) -> Option<String> + Send + Sync>;

/// Where a request's rate-limit key comes from.
#[non_exhaustive]
#[derive(Clone)]
pub enum KeySource {
    /// The client's address (through the trusted-proxy policy; IPv6 grouped by
    /// prefix): `ip:203.0.113.9`, `ip:2001:db8:1:2::/64`.
    Ip,
    /// A header's value, such as an API key: `header:x-api-key:VALUE`.
    /// Missing, empty or non-UTF-8 values count as no key.
    Header(String),
    /// The authenticated user: `user:ID`.
    User,
    /// The matched route pattern, so the whole route shares one limit:
    /// `route:/users/{id}`. A request that matched no route (a 404) gets
    /// `route:<unmatched>`, one key for all of them: keying by its path
    /// would give every path a client invents a fresh limit.
    Route,
    /// The application's own function.
    Custom(KeyFn),
    /// Several sources joined (`user:42|route:/export`); missing if any part
    /// is. Within each part `%` and `|` are written `%25` and `%7C`, so
    /// parts a client chooses (a header) cannot shift the boundaries and
    /// make two different requests share a key.
    Composite(Vec<KeySource>),
}

impl KeySource {
    /// Whether keys from this source may depend on the matched route
    /// pattern (`Route`, and custom functions, which may read it).
    pub fn reads_route(&self) -> bool {
        match self {
            Self::Route | Self::Custom(_) => true,
            Self::Composite(parts) => parts.iter().any(Self::reads_route),
            Self::Ip | Self::Header(_) | Self::User => false,
        }
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip => f.write_str("Ip"),
            Self::Header(h) => write!(f, "Header({h:?})"),
            Self::User => f.write_str("User"),
            Self::Route => f.write_str("Route"),
            Self::Custom(_) => f.write_str("Custom(..)"),
            Self::Composite(parts) => f.debug_tuple("Composite").field(parts).finish(),
        }
    }
}

/// What to do when a request has no key (no identity, header missing).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingKey {
    /// Limit the request by its client address instead (the default, and what
    /// anonymous users get in tiered setups).
    #[default]
    UseIp,
    /// Refuse the request with this status (e.g. 400 or 401).
    Reject(StatusCode),
}

/// The outcome of key extraction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtractedKey {
    /// The key to limit the request by.
    Key(String),
    /// No key, and the policy says to refuse the request with this status.
    Reject(StatusCode),
}

/// The outcome of key extraction on the request path: short keys, such as
/// an address, are stored inline (no allocation per request).
#[derive(Debug)]
pub(crate) enum Keyed {
    Key(SmolStr),
    Reject(StatusCode),
}

impl From<Keyed> for ExtractedKey {
    fn from(keyed: Keyed) -> Self {
        match keyed {
            Keyed::Key(key) => Self::Key(key.into()),
            Keyed::Reject(status) => Self::Reject(status),
        }
    }
}

/// Turns requests into keys: a source, the fallback for requests without one,
/// the trusted-proxy policy, and the IPv6 grouping prefix.
///
/// ```
/// use ratekeeper_http::{ClientIpPolicy, ExtractedKey, KeyExtractor, KeySource, MissingKey, RequestView};
/// use http::StatusCode;
///
/// let extractor = KeyExtractor::new(KeySource::Header("x-api-key".into()))
///     .on_missing(MissingKey::Reject(StatusCode::UNAUTHORIZED));
/// let headers: &[(&str, &[u8])] = &[("X-Api-Key", b"k-123")];
/// let view = RequestView {
///     method: "GET", path: "/", route: None, peer: "198.51.100.7".parse()?,
///     headers: &headers, identity: None,
/// };
/// assert_eq!(extractor.extract(&view), ExtractedKey::Key("header:x-api-key:k-123".into()));
/// let none: &[(&str, &[u8])] = &[];
/// let anonymous = RequestView { headers: &none, ..view };
/// assert_eq!(extractor.extract(&anonymous), ExtractedKey::Reject(StatusCode::UNAUTHORIZED));
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Debug, Clone)]
pub struct KeyExtractor {
    source: KeySource,
    missing: MissingKey,
    proxies: ClientIpPolicy,
    ipv6_prefix: u8,
}

/// The route part of a request that matched no route.
const UNMATCHED: &str = "<unmatched>";

/// The longest header value used as a key; longer values are hashed by the
/// limiter anyway, this only bounds the work here.
const MAX_HEADER_KEY: usize = 1_024;

impl KeyExtractor {
    /// Keys from `source`; falls back to the client address; trusts no proxy;
    /// groups IPv6 by /64.
    pub fn new(source: KeySource) -> Self {
        Self {
            source,
            missing: MissingKey::default(),
            proxies: ClientIpPolicy::new(),
            ipv6_prefix: 64,
        }
    }

    /// What to do when a request has no key.
    #[must_use]
    pub fn on_missing(mut self, missing: MissingKey) -> Self {
        self.missing = missing;
        self
    }

    /// How to find the client address behind proxies.
    #[must_use]
    pub fn proxies(mut self, proxies: ClientIpPolicy) -> Self {
        self.proxies = proxies;
        self
    }

    /// IPv6 clients are grouped by this prefix length (default 64).
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }

    /// The IPv6 grouping prefix length.
    pub fn ipv6_prefix_len(&self) -> u8 {
        self.ipv6_prefix
    }

    /// The default key source.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// How the client address is found behind proxies.
    pub fn proxy_policy(&self) -> &ClientIpPolicy {
        &self.proxies
    }

    /// The client address of `view`, through the proxy policy.
    pub fn client_ip(&self, view: &RequestView<'_>) -> IpAddr {
        self.proxies.client_ip(view.peer, view.headers)
    }

    /// The key of `view`, or what to do without one.
    pub fn extract(&self, view: &RequestView<'_>) -> ExtractedKey {
        self.extract_with(&self.source, view)
    }

    /// Like [`extract`](Self::extract), with another source (a route's own)
    /// and this extractor's fallback, proxies and IPv6 grouping.
    pub fn extract_with(&self, source: &KeySource, view: &RequestView<'_>) -> ExtractedKey {
        self.resolve(source, view, self.client_ip(view)).into()
    }

    /// Like [`extract_with`](Self::extract_with) (`None`: this extractor's
    /// source) when the caller already found the client address with
    /// [`client_ip`](Self::client_ip), so the forwarding headers are walked once.
    pub(crate) fn extract_for_client(
        &self,
        source: Option<&KeySource>,
        view: &RequestView<'_>,
        client: IpAddr,
    ) -> Keyed {
        self.resolve(source.unwrap_or(&self.source), view, client)
    }

    fn resolve(&self, source: &KeySource, view: &RequestView<'_>, client: IpAddr) -> Keyed {
        match self.key(source, view, client) {
            Some(key) => Keyed::Key(key),
            None => match self.missing {
                MissingKey::UseIp => Keyed::Key(self.ip(client)),
                MissingKey::Reject(status) => Keyed::Reject(status),
            },
        }
    }

    /// The key of the client at `client` (`ip:…`, IPv6 grouped by the
    /// extractor's prefix).
    pub(crate) fn ip(&self, client: IpAddr) -> SmolStr {
        if let IpAddr::V4(v4) = client.to_canonical() {
            return ipv4_key(v4);
        }
        let mut key = SmolStrBuilder::new();
        key.push_str("ip:");
        push_ip_key(&mut key, client, self.ipv6_prefix);
        key.finish()
    }

    fn key(&self, source: &KeySource, view: &RequestView<'_>, client: IpAddr) -> Option<SmolStr> {
        let joined = |parts: &[&str]| {
            let mut key = SmolStrBuilder::new();
            for part in parts {
                key.push_str(part);
            }
            key.finish()
        };
        match source {
            KeySource::Ip => Some(self.ip(client)),
            KeySource::Header(name) => {
                let name = name.to_ascii_lowercase();
                let value = view.headers.get(&name)?;
                let value = std::str::from_utf8(value.get(..value.len().min(MAX_HEADER_KEY))?)
                    .ok()?
                    .trim();
                (!value.is_empty()).then(|| joined(&["header:", &name, ":", value]))
            }
            KeySource::User => view.identity.map(|id| joined(&["user:", &id.user])),
            KeySource::Route => Some(joined(&["route:", view.route.unwrap_or(UNMATCHED)])),
            KeySource::Custom(f) => f(view).filter(|k| !k.is_empty()).map(SmolStr::from),
            KeySource::Composite(parts) => {
                let keys = parts
                    .iter()
                    .map(|p| self.key(p, view, client))
                    .collect::<Option<Vec<_>>>()?;
                let mut key = SmolStrBuilder::new();
                for (i, part) in keys.iter().enumerate() {
                    if i > 0 {
                        key.push('|');
                    }
                    for piece in part.split_inclusive(['%', '|']) {
                        match piece.char_indices().last() {
                            Some((at, '%')) => {
                                key.push_str(piece.get(..at).unwrap_or_default());
                                key.push_str("%25");
                            }
                            Some((at, '|')) => {
                                key.push_str(piece.get(..at).unwrap_or_default());
                                key.push_str("%7C");
                            }
                            _ => key.push_str(piece),
                        }
                    }
                }
                (!keys.is_empty()).then(|| key.finish())
            }
        }
    }
}

/// Each octet's decimal digits (three bytes, the unused ones zero) and how
/// many there are, worked out at compile time.
#[allow(
    clippy::indexing_slicing,
    reason = "constant evaluation: an index out of range fails the build"
)]
const OCTETS: [([u8; 3], u8); 256] = {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let n = i as u8;
        table[i] = if n >= 100 {
            ([b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10], 3)
        } else if n >= 10 {
            ([b'0' + n / 10, b'0' + n % 10, 0], 2)
        } else {
            ([b'0' + n, 0, 0], 1)
        };
        i += 1;
    }
    table
};

/// A key's bytes, word-aligned and 32 long, so that checking them as
/// UTF-8 takes the standard library's word-at-a-time ASCII path (two steps
/// of 16 bytes) instead of its byte-by-byte one (about 80 instructions for
/// a 12-byte key).
#[repr(align(8))]
struct KeyBuf([u8; 32]);

/// The key of an IPv4 client, `ip:a.b.c.d`: the common case, written from
/// a table into a stack buffer and stored inline (no allocation, no
/// formatting machinery).
fn ipv4_key(ip: std::net::Ipv4Addr) -> SmolStr {
    // "ip:" and at most 15 characters of address. Each octet is written as
    // three bytes, then the key moves on by its digits: the last starts at
    // 15 at most, so its three bytes always fit. The bytes past the key
    // stay zero (ASCII): the whole buffer is checked, then the key cut out.
    let mut buf = KeyBuf([0u8; 32]);
    let mut len = 3;
    if let Some(head) = buf.0.get_mut(..3) {
        head.copy_from_slice(b"ip:");
    }
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            if let Some(dot) = buf.0.get_mut(len) {
                *dot = b'.';
            }
            len += 1;
        }
        let (digits, n) = OCTETS.get(usize::from(octet)).copied().unwrap_or_default();
        if let Some(at) = buf.0.get_mut(len..len + 3) {
            at.copy_from_slice(&digits);
        }
        len += usize::from(n);
    }
    // Every byte is ASCII, so the check passes and `len` is a boundary.
    let text = std::str::from_utf8(&buf.0)
        .ok()
        .and_then(|text| text.get(..len));
    SmolStr::new(text.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        headers: &'a &'a [(&'a str, &'a [u8])],
        identity: Option<&'a Identity>,
    ) -> RequestView<'a> {
        RequestView {
            method: "POST",
            path: "/users/42/export",
            route: Some("/users/{id}/export"),
            peer: "10.0.0.1".parse().unwrap(),
            headers,
            identity,
        }
    }

    #[test]
    fn sources_that_may_read_the_route_say_so() {
        let custom = KeySource::Custom(Arc::new(|_| None));
        assert!(KeySource::Route.reads_route());
        assert!(custom.reads_route());
        assert!(KeySource::Composite(vec![KeySource::Ip, KeySource::Route]).reads_route());
        for source in [
            KeySource::Ip,
            KeySource::Header("x-api-key".into()),
            KeySource::User,
            KeySource::Composite(vec![KeySource::Ip, KeySource::User]),
        ] {
            assert!(!source.reads_route(), "{source:?}");
        }
        let all = KeySource::Composite(vec![
            KeySource::Ip,
            KeySource::Header("x-api-key".into()),
            KeySource::User,
            KeySource::Route,
            custom,
        ]);
        assert_eq!(
            format!("{all:?}"),
            r#"Composite([Ip, Header("x-api-key"), User, Route, Custom(..)])"#
        );
    }

    #[test]
    fn a_request_view_is_debugged_without_its_headers() {
        let h: &[(&str, &[u8])] = &[("authorization", b"Bearer s3cret")];
        let shown = format!("{:?}", view(&h, None));
        assert_eq!(
            shown,
            r#"RequestView { method: "POST", path: "/users/42/export", route: Some("/users/{id}/export"), peer: 10.0.0.1, identity: None, .. }"#
        );
    }

    #[test]
    fn each_source() {
        let alice = Identity {
            user: "alice".into(),
            tier: Some("pro".into()),
        };
        let h: &[(&str, &[u8])] = &[("x-forwarded-for", b"203.0.113.9"), ("X-API-Key", b" k1 ")];
        let v = view(&h, Some(&alice));
        let key = |s: KeySource| KeyExtractor::new(s).extract(&v);
        assert_eq!(
            key(KeySource::Ip),
            ExtractedKey::Key("ip:10.0.0.1".into()),
            "no proxy trusted"
        );
        let behind = KeyExtractor::new(KeySource::Ip)
            .proxies(ClientIpPolicy::new().trust(["10.0.0.0/8"]).unwrap());
        assert_eq!(
            behind.extract(&v),
            ExtractedKey::Key("ip:203.0.113.9".into())
        );
        assert_eq!(
            key(KeySource::Header("X-Api-Key".into())),
            ExtractedKey::Key("header:x-api-key:k1".into())
        );
        assert_eq!(key(KeySource::User), ExtractedKey::Key("user:alice".into()));
        assert_eq!(
            key(KeySource::Route),
            ExtractedKey::Key("route:/users/{id}/export".into())
        );
        let composite = KeySource::Composite(vec![KeySource::User, KeySource::Route]);
        assert_eq!(
            key(composite),
            ExtractedKey::Key("user:alice|route:/users/{id}/export".into())
        );
        let custom: KeyFn = Arc::new(|v: &RequestView<'_>| {
            v.identity
                .and_then(|i| i.tier.as_ref())
                .map(|t| format!("tier:{t}"))
        });
        assert_eq!(
            key(KeySource::Custom(custom)),
            ExtractedKey::Key("tier:pro".into())
        );
    }

    #[test]
    fn unmatched_routes_share_one_key_and_composite_parts_keep_their_bounds() {
        let h: &[(&str, &[u8])] = &[("x-a", b"1|header:x-b:2"), ("x-b", b"3")];
        let mut v = view(&h, None);
        v.route = None;
        let e = KeyExtractor::new(KeySource::Route);
        assert_eq!(e.extract(&v), ExtractedKey::Key("route:<unmatched>".into()));
        v.path = "/invented/by/the/client";
        assert_eq!(e.extract(&v), ExtractedKey::Key("route:<unmatched>".into()));
        // Without escaping, these two requests would share one key.
        let both = KeyExtractor::new(KeySource::Composite(vec![
            KeySource::Header("x-a".into()),
            KeySource::Header("x-b".into()),
        ]));
        let one = both.extract(&v);
        let h2: &[(&str, &[u8])] = &[("x-a", b"1"), ("x-b", b"2|header:x-b:3")];
        let other = both.extract(&view(&h2, None));
        assert_ne!(one, other);
        assert_eq!(
            one,
            ExtractedKey::Key("header:x-a:1%7Cheader:x-b:2|header:x-b:3".into())
        );
        let h3: &[(&str, &[u8])] = &[("x-a", b"100%7C"), ("x-b", b"%")];
        assert_eq!(
            both.extract(&view(&h3, None)),
            ExtractedKey::Key("header:x-a:100%257C|header:x-b:%25".into())
        );
    }

    #[test]
    fn missing_keys_fall_back_or_reject() {
        let h: &[(&str, &[u8])] = &[("x-api-key", b"   "), ("x-other", b"\xff")];
        let v = view(&h, None);
        for source in [
            KeySource::User,
            KeySource::Header("x-api-key".into()),
            KeySource::Header("x-other".into()),
            KeySource::Header("x-absent".into()),
            KeySource::Composite(vec![KeySource::Ip, KeySource::User]),
            KeySource::Custom(Arc::new(|_: &RequestView<'_>| Some(String::new()))),
        ] {
            let e = KeyExtractor::new(source.clone());
            assert_eq!(
                e.extract(&v),
                ExtractedKey::Key("ip:10.0.0.1".into()),
                "{source:?}"
            );
            let strict = e.on_missing(MissingKey::Reject(StatusCode::UNAUTHORIZED));
            assert_eq!(
                strict.extract(&v),
                ExtractedKey::Reject(StatusCode::UNAUTHORIZED),
                "{source:?}"
            );
        }
    }

    #[test]
    fn ipv6_clients_share_their_prefix() {
        let h: &[(&str, &[u8])] = &[];
        let mut v = view(&h, None);
        v.peer = "2001:db8:1:2::7".parse().unwrap();
        let e = KeyExtractor::new(KeySource::Ip);
        assert_eq!(
            e.extract(&v),
            ExtractedKey::Key("ip:2001:db8:1:2::/64".into())
        );
        assert_eq!(
            e.ipv6_prefix(48).extract(&v),
            ExtractedKey::Key("ip:2001:db8:1::/48".into())
        );
    }

    proptest::proptest! {
        /// The hand-written IPv4 key is the address as `Display` writes it.
        #[test]
        fn ipv4_keys_match_display(octets in proptest::array::uniform4(0u8..=255)) {
            let ip = std::net::Ipv4Addr::from(octets);
            let e = KeyExtractor::new(KeySource::Ip);
            proptest::prop_assert_eq!(e.ip(IpAddr::V4(ip)), SmolStr::new(format!("ip:{ip}")));
            // An IPv4-mapped IPv6 peer is the same client.
            proptest::prop_assert_eq!(e.ip(IpAddr::V6(ip.to_ipv6_mapped())), SmolStr::new(format!("ip:{ip}")));
        }
    }

    /// Every octet value, in every position, is written as `Display` writes it.
    #[test]
    fn ipv4_keys_spell_every_octet_as_display_does() {
        for n in 0..=255u8 {
            for ip in [
                std::net::Ipv4Addr::new(n, n, n, n),
                std::net::Ipv4Addr::new(n, 255 - n, n / 3, 7),
            ] {
                assert_eq!(ipv4_key(ip), SmolStr::new(format!("ip:{ip}")));
            }
        }
    }
}
