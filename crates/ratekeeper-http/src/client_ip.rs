//! The client's address behind reverse proxies.
//!
//! The peer address of a connection is the only address nobody can forge.
//! Forwarding headers (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`) are
//! written by whoever sent the request, so they are believed only as far as a
//! chain of *trusted* proxies vouches for them. Starting from the peer (which
//! must itself be trusted), the walk goes from the right end of the header
//! (the hop nearest to us) to the left, past every trusted proxy, and stops at
//! the first address that is not one: that is the client. Anything a client
//! writes into the header itself sits to the left of what the trusted proxies
//! appended, so it is never reached. Work is bounded by a hop limit, and
//! garbage (`unknown`, obfuscated identifiers, invalid UTF-8) stops the walk
//! at the last trusted hop.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv6Net};

/// Parses addresses (`10.0.0.1`, a single host) and CIDR blocks (`10.0.0.0/8`),
/// [canonical](canonical_net) as clients are.
pub(crate) fn parse_nets<S: AsRef<str>>(
    entries: impl IntoIterator<Item = S>,
) -> Result<Vec<IpNet>, InvalidProxy> {
    entries
        .into_iter()
        .map(|e| {
            let text = e.as_ref().trim();
            parse_canonical_net(text).ok_or_else(|| InvalidProxy(text.chars().take(64).collect()))
        })
        .collect()
}

/// An address or CIDR block, [canonical](canonical_net).
pub(crate) fn parse_canonical_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .ok()
        .map(canonical_net)
}

/// `net` written as clients are: clients are compared in canonical form
/// (an IPv4-mapped IPv6 address is its IPv4 address), so a block inside the
/// mapped range (`::ffff:127.0.0.1`, `::ffff:10.0.0.0/104`) becomes the IPv4
/// block it stands for (`127.0.0.1/32`, `10.0.0.0/8`). Without this, such an
/// entry would never match anybody.
pub(crate) fn canonical_net(net: IpNet) -> IpNet {
    // Inside the mapped range: the network is `::ffff:a.b.c.d` and the
    // prefix at least 96 bits.
    if let IpNet::V6(v6) = net
        && let (Some(v4), Some(len)) = (
            v6.network().to_ipv4_mapped(),
            v6.prefix_len().checked_sub(96),
        )
    {
        return ipnet::Ipv4Net::new(v4, len).map_or(net, IpNet::V4);
    }
    net
}

/// Whether `net` holds the canonical client address `ip`. An IPv6 block
/// wider than the mapped range (`::/0`, `::/64`) also holds the IPv4
/// clients it covers through that range.
pub(crate) fn net_contains(net: &IpNet, ip: &IpAddr) -> bool {
    net.contains(ip)
        || match (net, ip) {
            (IpNet::V6(n), IpAddr::V4(v4)) => n.contains(&v4.to_ipv6_mapped()),
            _ => false,
        }
}

/// A forwarding header that proxies may set.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardingHeader {
    /// RFC 7239 `Forwarded: for=…`.
    Forwarded,
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// `X-Real-IP: client` (nginx).
    XRealIp,
}

impl std::str::FromStr for ForwardingHeader {
    type Err = super::UnknownSetting;

    /// `forwarded`, `x-forwarded-for` or `x-real-ip` (any case).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "forwarded" => Ok(Self::Forwarded),
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "x-real-ip" => Ok(Self::XRealIp),
            _ => Err(super::UnknownSetting(format!(
                "unknown forwarding header {:?} (expected forwarded, x-forwarded-for or x-real-ip)",
                super::cut(text)
            ))),
        }
    }
}

impl ForwardingHeader {
    /// The header's name, lower-case.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::XForwardedFor => "x-forwarded-for",
            Self::XRealIp => "x-real-ip",
        }
    }
}

/// Read access to a request's headers, implemented by each adapter.
pub trait Headers {
    /// Every value of the header `name` (lower-case; match it
    /// case-insensitively), in the order received.
    fn get_all(&self, name: &str) -> Vec<&[u8]>;

    /// The first value of the header `name`. The default takes it from
    /// [`get_all`](Self::get_all); adapters override it to skip building a list.
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.get_all(name).first().copied()
    }
}

/// A plain list of `(name, value)` pairs, for tests and simple integrations.
impl Headers for [(&str, &[u8])] {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    }
}

/// The same list by reference, so it can stand behind a `&dyn Headers`.
impl Headers for &[(&str, &[u8])] {
    fn get_all(&self, name: &str) -> Vec<&[u8]> {
        (**self).get_all(name)
    }
}

/// A trusted-proxy entry that is not an address or a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidProxy(pub String);

impl fmt::Display for InvalidProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid trusted proxy {:?}: expected an IP address or a CIDR block such as 10.0.0.0/8 or fd00::/8",
            self.0
        )
    }
}

impl std::error::Error for InvalidProxy {}

/// How to find the client's address: which proxies are trusted, and the one
/// forwarding header they set.
///
/// With no trusted proxies (the default) the client is always the peer, and
/// forwarding headers are ignored: a client that sends its own
/// `X-Forwarded-For` gains nothing.
///
/// Behind trusted proxies, exactly one header is read: the one they set
/// ([`header`](Self::header), `X-Forwarded-For` by default). Any other
/// forwarding header on the request came from the client through the proxy
/// untouched, so it is never looked at: a policy that took "the first header
/// present" would let a client behind a proxy that appends `X-Forwarded-For`
/// send its own `Forwarded: for=…` and choose its address (a fresh key per
/// request, or a victim's).
///
/// ```
/// use ratekeeper_http::ClientIpPolicy;
/// use std::net::IpAddr;
///
/// let policy = ClientIpPolicy::new().trust(["10.0.0.0/8"])?;
/// let peer: IpAddr = "10.0.0.5".parse()?;
/// let headers: &[(&str, &[u8])] = &[("X-Forwarded-For", b"6.6.6.6, 203.0.113.9, 10.1.1.1")];
/// // 10.1.1.1 is a trusted hop; 203.0.113.9 is the first untrusted one; the
/// // spoofed 6.6.6.6 to its left is never reached.
/// assert_eq!(policy.client_ip(peer, headers), "203.0.113.9".parse::<IpAddr>()?);
/// // From an untrusted peer, the header is ignored.
/// assert_eq!(policy.client_ip("198.51.100.1".parse()?, headers), "198.51.100.1".parse::<IpAddr>()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientIpPolicy {
    trusted: Vec<IpNet>,
    header: ForwardingHeader,
    max_hops: usize,
}

impl Default for ClientIpPolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// The longest single hop considered; longer ones are garbage.
const MAX_HOP_LEN: usize = 256;

impl ClientIpPolicy {
    /// No trusted proxies; behind trusted ones, the header
    /// `X-Forwarded-For`; at most 20 hops examined.
    pub fn new() -> Self {
        Self {
            trusted: Vec::new(),
            header: ForwardingHeader::XForwardedFor,
            max_hops: 20,
        }
    }

    /// Also trusts these proxies: addresses (`10.0.0.1`, `::1`) or CIDR blocks
    /// (`10.0.0.0/8`, `fd00::/8`).
    pub fn trust<S: AsRef<str>>(
        mut self,
        proxies: impl IntoIterator<Item = S>,
    ) -> Result<Self, InvalidProxy> {
        self.trusted.extend(parse_nets(proxies)?);
        Ok(self)
    }

    /// The forwarding header the trusted proxies set; the others are
    /// ignored (default `X-Forwarded-For`).
    #[must_use]
    pub fn header(mut self, header: ForwardingHeader) -> Self {
        self.header = header;
        self
    }

    /// The forwarding header the trusted proxies set.
    pub fn forwarding_header(&self) -> ForwardingHeader {
        self.header
    }

    /// At most this many hops are examined per request (default 20).
    #[must_use]
    pub fn max_hops(mut self, hops: usize) -> Self {
        self.max_hops = hops.max(1);
        self
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net_contains(net, &ip))
    }

    /// The client's address for a connection from `peer` carrying `headers`.
    pub fn client_ip<H: Headers + ?Sized>(&self, peer: IpAddr, headers: &H) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let values = headers.get_all(self.header.name());
        if values.is_empty() {
            return peer;
        }
        self.walk(peer, self.header, &values)
    }

    fn walk(&self, peer: IpAddr, header: ForwardingHeader, values: &[&[u8]]) -> IpAddr {
        let mut nearest_trusted = peer;
        let hops = values
            .iter()
            .rev()
            .flat_map(|value| value.rsplit(|b| *b == b','))
            .take(self.max_hops);
        for hop in hops {
            let ip = match header {
                ForwardingHeader::Forwarded => forwarded_for(hop),
                ForwardingHeader::XForwardedFor | ForwardingHeader::XRealIp => address(hop),
            };
            match ip {
                Some(ip) if self.is_trusted(ip) => nearest_trusted = ip,
                Some(ip) => return ip,
                // A trusted proxy reported something we cannot read: believe no further.
                None => return nearest_trusted,
            }
        }
        nearest_trusted
    }
}

/// An address as proxies write it: `203.0.113.9`, `203.0.113.9:4711`,
/// `2001:db8::1`, `[2001:db8::1]:4711`, optionally quoted.
fn address(raw: &[u8]) -> Option<IpAddr> {
    if raw.len() > MAX_HOP_LEN {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let ip = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok()))
        {
            return None;
        }
        IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else {
        text.parse::<SocketAddr>().ok()?.ip()
    };
    Some(ip.to_canonical())
}

/// The `for=` parameter of one RFC 7239 element (`for=…;proto=…;by=…`).
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    element.split(|b| *b == b';').find_map(|pair| {
        let eq = pair.iter().position(|b| *b == b'=')?;
        let (name, value) = pair.split_at(eq);
        let name = std::str::from_utf8(name).ok()?.trim();
        if name.eq_ignore_ascii_case("for") {
            address(value.get(1..)?)
        } else {
            None
        }
    })
}

/// The NAT64 well-known prefix `64:ff9b::/96`: an IPv4 host reached
/// through a NAT64 gateway, its address in the last 32 bits.
const NAT64: Ipv6Net = match Ipv6Net::new(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
    Ok(net) => net,
    Err(_) => panic!("a valid prefix"),
};

/// The group a client address is limited and blocked as: an IPv4 address
/// alone; an IPv6 address by its first `ipv6_prefix` bits (one /64 is
/// usually one subscriber, who could otherwise rotate through 2^64
/// addresses); an IPv6 address that carries an IPv4 host (mapped
/// `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`)
/// as that IPv4 address, since one /64 holds every such host; a 6to4
/// address (`2002:AABB:CCDD::/48`, one IPv4 host's site) by at most 48 bits,
/// since the site's 2^16 subnets belong to the same host.
pub(crate) fn client_group(ip: IpAddr, ipv6_prefix: u8) -> IpNet {
    let v6 = match ip.to_canonical() {
        IpAddr::V4(v4) => return IpNet::V4(v4.into()),
        IpAddr::V6(v6) => v6,
    };
    let embedded = || {
        let [.., a, b, c, d] = v6.octets();
        std::net::Ipv4Addr::new(a, b, c, d)
    };
    let segments = v6.segments();
    let compatible = segments.get(..6).is_some_and(|s| s.iter().all(|&x| x == 0))
        && !v6.is_unspecified()
        && !v6.is_loopback();
    if compatible || NAT64.contains(&v6) {
        return IpNet::V4(embedded().into());
    }
    let bits = if segments.first() == Some(&0x2002) {
        ipv6_prefix.min(48)
    } else {
        ipv6_prefix.min(128)
    };
    Ipv6Net::new(v6, bits).map_or(IpNet::V6(v6.into()), |n| IpNet::V6(n.trunc()))
}

/// The rate-limit key of a client address: an IPv4 address as it is; an
/// IPv6 address by its first `ipv6_prefix` bits (one /64 is usually one
/// subscriber); an IPv6 address that carries an IPv4 host (mapped,
/// IPv4-compatible, NAT64) as that IPv4 address; a 6to4 address by at most
/// its first 48 bits (one IPv4 host's site).
///
/// ```
/// use ratekeeper_http::ip_key;
///
/// assert_eq!(ip_key("203.0.113.9".parse()?, 64), "203.0.113.9");
/// assert_eq!(ip_key("2001:db8:1:2:aaaa::1".parse()?, 64), "2001:db8:1:2::/64");
/// assert_eq!(ip_key("::ffff:203.0.113.9".parse()?, 64), "203.0.113.9");
/// assert_eq!(ip_key("64:ff9b::203.0.113.9".parse()?, 64), "203.0.113.9");
/// assert_eq!(ip_key("2002:cb00:7109:5::1".parse()?, 64), "2002:cb00:7109::/48");
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn ip_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    let mut out = String::with_capacity(15);
    push_ip_key(&mut out, ip, ipv6_prefix);
    out
}

/// Appends [`ip_key`]'s text to `out`. IPv4 addresses (the common case) are
/// written digit by digit, without the formatting machinery: this runs for
/// every request.
pub(crate) fn push_ip_key(out: &mut impl std::fmt::Write, ip: IpAddr, ipv6_prefix: u8) {
    match client_group(ip, ipv6_prefix) {
        IpNet::V4(net) => {
            for (i, octet) in net.addr().octets().into_iter().enumerate() {
                if i > 0 {
                    let _ = out.write_char('.');
                }
                if octet >= 100 {
                    let _ = out.write_char(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    let _ = out.write_char(char::from(b'0' + octet / 10 % 10));
                }
                let _ = out.write_char(char::from(b'0' + octet % 10));
            }
        }
        IpNet::V6(net) => {
            let _ = write!(out, "{net}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy() -> ClientIpPolicy {
        ClientIpPolicy::new()
            .trust(["10.0.0.0/8", "fd00::/8", "192.0.2.1"])
            .unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_spoof() {
        let h: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"1.2.3.4"),
            ("forwarded", b"for=1.2.3.4"),
            ("x-real-ip", b"1.2.3.4"),
        ];
        assert_eq!(
            policy().client_ip(ip("198.51.100.7"), h),
            ip("198.51.100.7")
        );
        assert_eq!(
            ClientIpPolicy::new().client_ip(ip("10.0.0.1"), h),
            ip("10.0.0.1"),
            "no proxy trusted by default"
        );
    }

    #[test]
    fn at_most_max_hops_are_examined() {
        let h: &[(&str, &[u8])] = &[(
            "x-forwarded-for",
            b"203.0.113.9, 10.0.0.4, 10.0.0.3, 10.0.0.2",
        )];
        let p = policy();
        assert_eq!(p.client_ip(ip("10.0.0.1"), h), ip("203.0.113.9"));
        // Two hops: both trusted, so the nearer of them stands for the client.
        let p = policy().max_hops(2);
        assert_eq!(p.client_ip(ip("10.0.0.1"), h), ip("10.0.0.3"));
        assert_eq!(
            policy().max_hops(4).client_ip(ip("10.0.0.1"), h),
            ip("203.0.113.9")
        );
        // At least one.
        assert_eq!(
            policy().max_hops(0).client_ip(ip("10.0.0.1"), h),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn a_hop_longer_than_256_bytes_is_not_read() {
        let hop = |len: usize| format!("{:<len$}", "203.0.113.9");
        let fits = hop(MAX_HOP_LEN);
        let h: &[(&str, &[u8])] = &[("x-forwarded-for", fits.as_bytes())];
        assert_eq!(policy().client_ip(ip("10.0.0.1"), h), ip("203.0.113.9"));
        let long = hop(MAX_HOP_LEN + 1);
        let h: &[(&str, &[u8])] = &[("x-forwarded-for", long.as_bytes())];
        assert_eq!(policy().client_ip(ip("10.0.0.1"), h), ip("10.0.0.1"));
    }

    #[test]
    fn an_invalid_proxy_is_named_in_the_error() {
        let err = ClientIpPolicy::new()
            .trust(["10.0.0.0/8", "ten"])
            .unwrap_err();
        assert_eq!(err, InvalidProxy("ten".into()));
        assert_eq!(
            err.to_string(),
            "invalid trusted proxy \"ten\": expected an IP address or a CIDR block such as 10.0.0.0/8 or fd00::/8"
        );
    }

    #[test]
    fn walks_from_the_right_past_trusted_hops() {
        let p = policy();
        let one: &[(&str, &[u8])] = &[("X-Forwarded-For", b"203.0.113.9")];
        assert_eq!(p.client_ip(ip("10.0.0.1"), one), ip("203.0.113.9"));
        let spoofed: &[(&str, &[u8])] = &[("X-Forwarded-For", b"6.6.6.6, 203.0.113.9, 10.9.9.9")];
        assert_eq!(p.client_ip(ip("10.0.0.1"), spoofed), ip("203.0.113.9"));
        // Several header lines are one list, in order.
        let lines: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"6.6.6.6, 203.0.113.9"),
            ("x-forwarded-for", b"10.2.2.2"),
        ];
        assert_eq!(p.client_ip(ip("10.0.0.1"), lines), ip("203.0.113.9"));
        // Every hop trusted: the leftmost one.
        let all: &[(&str, &[u8])] = &[("x-forwarded-for", b"10.3.3.3, 10.2.2.2")];
        assert_eq!(p.client_ip(ip("10.0.0.1"), all), ip("10.3.3.3"));
    }

    #[test]
    fn reads_forwarded_with_quotes_ports_and_ipv6() {
        let p = policy().header(ForwardingHeader::Forwarded);
        let h: &[(&str, &[u8])] = &[(
            "Forwarded",
            b"for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.1.1.1;by=10.0.0.1",
        )];
        assert_eq!(p.client_ip(ip("10.0.0.1"), h), ip("2001:db8:cafe::17"));
        // `unknown` or an obfuscated id: believe no further than the last trusted hop.
        let hidden: &[(&str, &[u8])] =
            &[("forwarded", b"for=203.0.113.9, for=_hidden, for=10.1.1.1")];
        assert_eq!(p.client_ip(ip("10.0.0.1"), hidden), ip("10.1.1.1"));
    }

    #[test]
    fn only_the_header_the_proxy_sets_is_read() {
        // The proxy appends X-Forwarded-For; the client added a Forwarded
        // header of its own, which the proxy passed on untouched.
        let forged: &[(&str, &[u8])] = &[
            ("forwarded", b"for=6.6.6.6"),
            ("x-real-ip", b"6.6.6.7"),
            ("x-forwarded-for", b"203.0.113.9"),
        ];
        assert_eq!(
            policy().client_ip(ip("10.0.0.1"), forged),
            ip("203.0.113.9")
        );
        // Without the proxy's header: the proxy itself, never the forgery.
        let only_forged: &[(&str, &[u8])] = &[("forwarded", b"for=6.6.6.6")];
        assert_eq!(
            policy().client_ip(ip("10.0.0.1"), only_forged),
            ip("10.0.0.1")
        );
        let p = policy().header(ForwardingHeader::Forwarded);
        assert_eq!(p.forwarding_header(), ForwardingHeader::Forwarded);
        assert_eq!(p.client_ip(ip("10.0.0.1"), forged), ip("6.6.6.6"));
    }

    #[test]
    fn x_real_ip_and_ports() {
        let p = policy().header(ForwardingHeader::XRealIp);
        let h: &[(&str, &[u8])] = &[("x-real-ip", b" 203.0.113.9:5555 ")];
        assert_eq!(p.client_ip(ip("192.0.2.1"), h), ip("203.0.113.9"));
        assert_eq!(policy().client_ip(ip("192.0.2.1"), h), ip("192.0.2.1"));
    }

    #[test]
    fn hostile_input_is_bounded_and_sane() {
        let p = policy();
        // Thousands of trusted hops: only max_hops are looked at.
        let many = vec!["10.1.1.1"; 5_000].join(",");
        let h: &[(&str, &[u8])] = &[("x-forwarded-for", many.as_bytes())];
        assert_eq!(p.client_ip(ip("10.0.0.1"), h), ip("10.1.1.1"));
        // Invalid UTF-8, giant hops, empty values: the nearest trusted hop.
        for garbage in [
            &b"\xff\xfe, 10.2.2.2"[..],
            &[b'1'; 100_000],
            b"",
            b",,,",
            b"for=\"[::1",
        ] {
            let h: &[(&str, &[u8])] = &[("x-forwarded-for", garbage)];
            let got = p.client_ip(ip("10.0.0.1"), h);
            assert!(got == ip("10.0.0.1") || got == ip("10.2.2.2"), "{got}");
        }
        // An IPv4-mapped IPv6 peer is its IPv4 address.
        let h: &[(&str, &[u8])] = &[];
        assert_eq!(p.client_ip(ip("::ffff:10.0.0.1"), h), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_clients_are_grouped_by_prefix() {
        assert_eq!(
            ip_key(ip("2001:db8:1:2::1"), 64),
            ip_key(ip("2001:db8:1:2:ffff::9"), 64)
        );
        assert_ne!(
            ip_key(ip("2001:db8:1:2::1"), 64),
            ip_key(ip("2001:db8:1:3::1"), 64)
        );
        assert_eq!(ip_key(ip("2001:db8::1"), 128), "2001:db8::1/128");
        assert_eq!(ip_key(ip("2001:db8::1"), 200), "2001:db8::1/128");
    }

    #[test]
    fn mapped_entries_stand_for_their_ipv4_blocks() {
        let nets = parse_nets([
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.0/104",
            "::/0",
            "2001:db8::/32",
        ])
        .unwrap();
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["127.0.0.1/32", "10.0.0.0/8", "::/0", "2001:db8::/32"]
        );
        let held = |net: &IpNet, client: &str| net_contains(net, &ip(client).to_canonical());
        assert!(held(&nets[0], "127.0.0.1") && held(&nets[0], "::ffff:127.0.0.1"));
        assert!(held(&nets[1], "10.200.0.1") && !held(&nets[1], "11.0.0.1"));
        assert!(held(&nets[2], "192.0.2.1"), "::/0 covers IPv4 clients too");
        assert!(!held(&nets[3], "192.0.2.1"));
        let trusting = ClientIpPolicy::new().trust(["::ffff:10.0.0.1"]).unwrap();
        assert!(trusting.is_trusted(ip("10.0.0.1")));
    }

    #[test]
    fn addresses_carrying_ipv4_hosts_are_those_hosts() {
        for (client, key) in [
            ("::203.0.113.9", "203.0.113.9"),
            ("::198.51.100.1", "198.51.100.1"),
            ("64:ff9b::203.0.113.9", "203.0.113.9"),
            ("64:ff9b::c633:6401", "198.51.100.1"),
            ("2002:cb00:7109:1::1", "2002:cb00:7109::/48"),
            ("2002:cb00:7109:ffff::1", "2002:cb00:7109::/48"),
            ("::1", "::/64"),
            ("::", "::/64"),
        ] {
            assert_eq!(ip_key(ip(client), 64), key, "{client}");
        }
        // A wider prefix than /48 still applies to 6to4.
        assert_eq!(ip_key(ip("2002:cb00:7109:1::1"), 32), "2002:cb00::/32");
    }

    #[test]
    fn bad_proxy_entries_are_errors() {
        assert!(ClientIpPolicy::new().trust(["10.0.0.0/33"]).is_err());
        assert!(ClientIpPolicy::new().trust(["proxy.internal"]).is_err());
        assert!(ClientIpPolicy::new().trust(["::1", "127.0.0.1"]).is_ok());
    }

    proptest! {
        /// Whatever bytes the headers hold, the answer is the peer or an
        /// address that one of the hops spells; never a panic.
        #[test]
        fn any_header_bytes_are_safe(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..6)) {
            let p = policy();
            let peer = ip("10.0.0.1");
            let hops: Vec<IpAddr> = values
                .iter()
                .flat_map(|v| v.split(|b| *b == b','))
                .flat_map(|hop| [address(hop), forwarded_for(hop)])
                .flatten()
                .collect();
            for header in [ForwardingHeader::XForwardedFor, ForwardingHeader::Forwarded] {
                let h: Vec<(&str, &[u8])> = values.iter().map(|v| (header.name(), v.as_slice())).collect();
                let got = p.clone().header(header).client_ip(peer, h.as_slice());
                prop_assert!(got == peer || hops.contains(&got), "{got} from {values:?}");
            }
        }

        /// Addresses written the usual ways are read back exactly.
        #[test]
        fn written_addresses_are_read(v4 in any::<[u8; 4]>(), v6 in any::<[u16; 8]>(), port in any::<u16>()) {
            let a = IpAddr::from(v4);
            let b = IpAddr::from(v6).to_canonical();
            prop_assert_eq!(address(a.to_string().as_bytes()), Some(a));
            prop_assert_eq!(address(format!("{a}:{port}").as_bytes()), Some(a));
            prop_assert_eq!(address(format!("[{b}]:{port}").as_bytes()), Some(b));
            prop_assert_eq!(forwarded_for(format!("proto=https;for=\"[{b}]:{port}\"").as_bytes()), Some(b));
        }
    }
}
