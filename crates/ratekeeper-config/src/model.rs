//! The configuration as data: what a file says, with every default filled
//! in. Change it in code and hand it to
//! [`LivePolicy::apply`](super::LivePolicy::apply), which checks it whole
//! before anything changes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ratekeeper_core::Calendar;
use ratekeeper_core::rule::Algorithm;
use ratekeeper_http::{
    CountWhen, DEFAULT_LIST_REFRESH, DEFAULT_TIER_CACHE_CAPACITY, DEFAULT_TIER_CACHE_TTL,
    ErrorMode, ForwardingHeader, HeaderStyle, MissingKey, ResetFormat,
};

/// A whole configuration: the store, the defaults, named rules, route rules,
/// tiers, exemptions, client lists and trusted proxies.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `[storage]`: where limits are kept.
    pub storage: StorageConfig,
    /// `[defaults]`: what applies where nothing more specific is said.
    pub defaults: DefaultsConfig,
    /// `[rules.<name>]`: named rules, referred to by routes and tiers.
    pub rules: BTreeMap<String, RuleConfig>,
    /// `[[routes]]`: limits by path pattern and method.
    pub routes: Vec<RouteConfig>,
    /// `[tiers.<name>]`: per-tier limits by path, for identified callers.
    pub tiers: BTreeMap<String, TierConfig>,
    /// `[tier_cache]`: how long resolved tiers are kept.
    pub tier_cache: TierCacheConfig,
    /// `[exempt]`: paths never limited.
    pub exempt: ExemptConfig,
    /// `[lists]`: clients always allowed or refused.
    pub lists: ListsConfig,
    /// `[proxies]`: which forwarding headers to believe, from whom.
    pub proxies: ProxiesConfig,
    /// `[auto_block]`: clients denied too often are refused for a while
    /// (off when absent).
    pub auto_block: Option<ratekeeper_http::AutoBlock>,
    /// `[[domains]]`: limits chosen by descriptors, for the rate-limit
    /// server (see [`domains`](crate::domains)).
    pub domains: Vec<crate::domains::DomainConfig>,
    /// `[server]`: how the rate-limit server listens and what it accepts.
    pub server: crate::server::ServerConfig,
    /// Where each field came from, for error messages.
    pub(crate) origin: Origin,
}

/// Where the fields of a configuration came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    /// The source of fields not listed: the file, or "runtime change".
    pub(crate) default: String,
    /// Sources by field path (environment variables, mostly).
    pub(crate) fields: Arc<BTreeMap<String, String>>,
}

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        // Where values came from is not part of what they are.
        true
    }
}

impl Origin {
    pub(crate) fn of(&self, path: &str) -> String {
        // The longest recorded prefix: `rules.api` set as a whole by one
        // environment variable covers `rules.api.limit`.
        let mut probe = path;
        loop {
            if let Some(source) = self.fields.get(probe) {
                return source.clone();
            }
            match probe.rfind(['.', '[']) {
                Some(at) => probe = probe.get(..at).unwrap_or_default(),
                None => break,
            }
        }
        if self.default.is_empty() {
            "configuration".to_owned()
        } else {
            self.default.clone()
        }
    }
}

/// `[storage]`. Its `Debug` form shows the URL and options without their
/// credentials ([`redact_url`](ratekeeper_core::storage::redact_url)).
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// A store URL (`memory://`, `sqlite:///path.db`, `redis://host`, …).
    pub url: String,
    /// `[storage.options]`: store options added to the URL's query
    /// (`prefix`, `response_timeout`, `pool_size`, …).
    pub options: BTreeMap<String, String>,
    /// A deadline on every store call (none by default).
    pub timeout: Option<Duration>,
    /// `[storage.breaker]`: a circuit breaker around the store (none by
    /// default).
    pub breaker: Option<ratekeeper_layers::Breaker>,
    /// How many denials the local deny cache keeps (0, the default: none).
    pub deny_cache: usize,
    /// `[storage.approximate]`: count hot keys locally and write them in
    /// batches (off by default; see [`approximate`](ratekeeper_layers::approximate)).
    pub approximate: Option<ratekeeper_layers::approximate::Approximate>,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field(
                "url",
                &ratekeeper_core::storage::redact_url(&self.full_url()),
            )
            .field("timeout", &self.timeout)
            .field("breaker", &self.breaker)
            .field("deny_cache", &self.deny_cache)
            .field("approximate", &self.approximate)
            .finish()
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "memory://".to_owned(),
            options: BTreeMap::new(),
            timeout: None,
            breaker: None,
            deny_cache: 0,
            approximate: None,
        }
    }
}

impl StorageConfig {
    /// `store` behind the layers this section asks for, innermost first:
    /// the deadline, the breaker, the deny cache, approximate mode (whose
    /// store calls then go through the guards).
    pub fn guard(
        &self,
        store: Arc<dyn ratekeeper_core::Storage>,
    ) -> Arc<dyn ratekeeper_core::Storage> {
        use ratekeeper_core::StorageExt as _;
        use ratekeeper_layers::{Deadline, DenyCache};
        let mut store = store;
        if let Some(t) = self.timeout {
            store = store.layer(Deadline::new(t));
        }
        if let Some(b) = self.breaker {
            store = store.layer(b);
        }
        if self.deny_cache > 0 {
            store = store.layer(DenyCache::new(self.deny_cache));
        }
        if let Some(a) = self.approximate {
            store = store.layer(a);
        }
        store
    }

    /// The URL with the options appended to its query string.
    pub fn full_url(&self) -> String {
        if self.options.is_empty() {
            return self.url.clone();
        }
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.options)
            .finish();
        let joiner = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{joiner}{query}", self.url)
    }
}

/// `[defaults]`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultsConfig {
    /// The algorithm of rules that do not name one (default
    /// `sliding_window_counter`).
    pub algorithm: Algorithm,
    /// How requests are keyed (default `ip`).
    pub key: KeySpec,
    /// What happens when a request has no key (default: use its IP).
    pub missing_key: MissingKey,
    /// Which rate-limit headers responses carry (default `ietf`).
    pub headers: HeaderStyle,
    /// How legacy headers write the reset (default `seconds`).
    pub reset_format: ResetFormat,
    /// What happens when the store fails (default `deny`: fail closed).
    pub on_store_error: ErrorMode,
    /// How many instances share each quota when a route decides degraded
    /// (`on_store_error = "degraded"`): each decides locally with its
    /// share (default 1).
    pub degraded_instances: u64,
    /// The status of a denied request (default 429).
    pub denied_status: u16,
    /// The status of a request denied by a concurrency rule, every place
    /// in flight taken (default 429).
    pub in_flight_status: u16,
    /// Decide and report, never block (default false).
    pub shadow: bool,
    /// Whether requests let through carry their decision for handlers
    /// (default true); see
    /// [`HttpPolicy::decision_for_handlers`](ratekeeper_http::HttpPolicy::decision_for_handlers).
    pub decision_for_handlers: bool,
    /// IPv6 clients are keyed by this prefix (default 64).
    pub ipv6_prefix: u8,
    /// Named rules applied to requests no route matches (default none).
    pub rules: Vec<String>,
}

impl Default for DefaultsConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::SlidingWindowCounter,
            key: KeySpec::Ip,
            missing_key: MissingKey::UseIp,
            headers: HeaderStyle::default(),
            reset_format: ResetFormat::default(),
            on_store_error: ErrorMode::FailClosed,
            degraded_instances: 1,
            denied_status: 429,
            in_flight_status: 429,
            shadow: false,
            decision_for_handlers: true,
            ipv6_prefix: 64,
            rules: Vec::new(),
        }
    }
}

/// A rule: `limit` units per `window`, by an algorithm.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleConfig {
    /// The algorithm; `None`: the default one.
    pub algorithm: Option<Algorithm>,
    /// Units per window.
    pub limit: u64,
    /// The window.
    pub window: Duration,
    /// The burst (token bucket, leaky bucket, GCRA); `None`: the limit.
    pub burst: Option<u64>,
    /// Blocks a client this long once it is denied.
    pub penalty: Option<Duration>,
    /// `wait`: a request over the rate waits up to this long for its turn
    /// instead of being denied (GCRA and the leaky bucket), or for a place
    /// in flight (concurrency); see
    /// [`Rule::with_wait`](ratekeeper_core::Rule::with_wait).
    pub wait: Option<Duration>,
    /// `waiters`: the most requests of one key waiting at once (with
    /// `wait`; default: as many as have their turn within it, or on a
    /// concurrency rule as many as it has places).
    pub waiters: Option<u64>,
    /// `calendar` (a time zone) and `week_start`: windows of a day, week,
    /// month or year on the calendar, fixed window only; `None`: windows
    /// aligned to the epoch.
    pub calendar: Option<Calendar>,
    /// `shadow = true`: decided and counted, never denying (default
    /// false); see [`HttpPolicy::shadow_rules`](ratekeeper_http::HttpPolicy::shadow_rules).
    pub shadow: bool,
    /// `headers = false`: left out of the rate-limit headers (default true).
    pub headers: bool,
}

impl RuleConfig {
    /// `limit` per `window`, the default algorithm, no burst, no penalty.
    pub fn new(limit: u64, window: Duration) -> Self {
        Self {
            algorithm: None,
            limit,
            window,
            burst: None,
            penalty: None,
            wait: None,
            waiters: None,
            calendar: None,
            shadow: false,
            headers: true,
        }
    }
}

/// `[[routes]]`: limits for requests matching a path pattern and methods.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// An axum-style pattern: `/users/{id}`, `/files/{*rest}`.
    pub path: String,
    /// The methods (empty: any).
    pub methods: Vec<String>,
    /// Named rules; all must allow.
    pub rules: Vec<String>,
    /// Units one request costs (default 1).
    pub cost: u64,
    /// This route's key; `None`: the default.
    pub key: Option<KeySpec>,
    /// What this route does when the store fails; `None`: the default.
    pub on_store_error: Option<ErrorMode>,
    /// `count_when`: only these responses count (`["401"]`, `"!2xx"`);
    /// `None`: every request counts.
    pub count_when: Option<CountWhen>,
}

impl RouteConfig {
    /// Requests to `path`, any method, limited by the named `rules`.
    pub fn new(path: &str, rules: &[&str]) -> Self {
        Self {
            path: path.to_owned(),
            methods: Vec::new(),
            rules: rules.iter().map(|r| (*r).to_owned()).collect(),
            cost: 1,
            key: None,
            on_store_error: None,
            count_when: None,
        }
    }
}

/// `[tiers.<name>]`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TierConfig {
    /// The tier's rules by path.
    pub rules: Vec<TierRuleConfig>,
}

/// One entry of a tier: a path (and methods) and its limit.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRuleConfig {
    /// An axum-style pattern.
    pub path: String,
    /// The methods (empty: any).
    pub methods: Vec<String>,
    /// The limit.
    pub limit: TierLimit,
    /// Units one request costs (default 1).
    pub cost: u64,
    /// The key; `None`: by user.
    pub key: Option<KeySpec>,
    /// `count_when`: only these responses count; `None`: every request.
    pub count_when: Option<CountWhen>,
}

impl TierRuleConfig {
    /// `path` (any method) limited by `limit`.
    pub fn new(path: &str, limit: TierLimit) -> Self {
        Self {
            path: path.to_owned(),
            methods: Vec::new(),
            limit,
            cost: 1,
            key: None,
            count_when: None,
        }
    }
}

/// A tier entry's limit: a named rule, or one of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierLimit {
    /// `rule = "name"`: a rule of `[rules]`.
    Named(String),
    /// `limit`, `window` and the rest inline. Its state is kept under `name`,
    /// by default `<tier>:<path>`-derived: a caller moving to another tier
    /// starts afresh on that path unless both tiers give the same `name`.
    Inline {
        /// The name its counters are kept under; `None`: derived from the
        /// tier and path.
        name: Option<String>,
        /// The rule.
        rule: RuleConfig,
    },
}

/// `[tier_cache]`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierCacheConfig {
    /// How long a resolved tier is kept (default 30 s; 0: not kept).
    pub ttl: Duration,
    /// How many identities' tiers are kept at most (default 10 000).
    pub capacity: usize,
}

impl Default for TierCacheConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TIER_CACHE_TTL,
            capacity: DEFAULT_TIER_CACHE_CAPACITY,
        }
    }
}

/// `[exempt]`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExemptConfig {
    /// Path patterns never limited (`/health`, `/static/{*rest}`).
    pub paths: Vec<String>,
}

/// `[lists]`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListsConfig {
    /// Addresses or CIDR blocks never limited.
    pub allow: Vec<String>,
    /// Addresses or CIDR blocks always refused (403).
    pub deny: Vec<String>,
    /// Also apply the lists kept in the store and changed at runtime
    /// (`ratekeeper allow|deny add …`); default false.
    pub runtime: bool,
    /// How often the runtime lists are reread (default 2 s).
    pub refresh: Duration,
}

impl Default for ListsConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            deny: Vec::new(),
            runtime: false,
            refresh: DEFAULT_LIST_REFRESH,
        }
    }
}

/// `[proxies]`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiesConfig {
    /// Proxies (addresses or CIDR blocks) whose forwarding headers are
    /// believed. Empty (the default): none are, the peer is the client.
    pub trusted: Vec<String>,
    /// The one forwarding header they set (default `X-Forwarded-For`); any
    /// other is ignored, since a client could send it through the proxy.
    pub header: ForwardingHeader,
    /// At most this many hops are walked (default 20).
    pub max_hops: usize,
}

impl Default for ProxiesConfig {
    fn default() -> Self {
        Self {
            trusted: Vec::new(),
            header: ForwardingHeader::XForwardedFor,
            max_hops: 20,
        }
    }
}

/// How requests are keyed, as written in a config: `ip`, `user`, `route`,
/// `header:<name>`, `custom:<name>` (a function the application registers
/// under that name), or parts joined by `+` (`user+route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// `ip`.
    Ip,
    /// `user`.
    User,
    /// `route`.
    Route,
    /// `header:<name>`.
    Header(String),
    /// `custom:<name>`.
    Custom(String),
    /// `a+b`.
    Composite(Vec<KeySpec>),
}

/// A key that is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKeySpec(pub String);

impl fmt::Display for InvalidKeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid key {:?} (expected ip, user, route, header:<name>, custom:<name>, or parts joined by +, such as user+route)",
            self.0
        )
    }
}

impl std::error::Error for InvalidKeySpec {}

impl FromStr for KeySpec {
    type Err = InvalidKeySpec;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidKeySpec(s.chars().take(64).collect());
        let part = |p: &str| -> Result<Self, InvalidKeySpec> {
            let p = p.trim();
            match p.split_once(':') {
                Some(("header", name)) if valid_name(name) => {
                    Ok(Self::Header(name.to_ascii_lowercase()))
                }
                Some(("custom", name)) if valid_name(name) => Ok(Self::Custom(name.to_owned())),
                Some(_) => Err(bad()),
                None => match p {
                    "ip" => Ok(Self::Ip),
                    "user" => Ok(Self::User),
                    "route" => Ok(Self::Route),
                    _ => Err(bad()),
                },
            }
        };
        if s.contains('+') {
            let parts = s.split('+').map(part).collect::<Result<Vec<_>, _>>()?;
            Ok(Self::Composite(parts))
        } else {
            part(s)
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip => f.write_str("ip"),
            Self::User => f.write_str("user"),
            Self::Route => f.write_str("route"),
            Self::Header(h) => write!(f, "header:{h}"),
            Self::Custom(c) => write!(f, "custom:{c}"),
            Self::Composite(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str("+")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs_parse_and_print() {
        for text in [
            "ip",
            "user",
            "route",
            "header:x-api-key",
            "custom:tenant",
            "user+route",
        ] {
            assert_eq!(text.parse::<KeySpec>().unwrap().to_string(), text);
        }
        assert_eq!(
            "header:X-Api-Key".parse::<KeySpec>().unwrap(),
            KeySpec::Header("x-api-key".into())
        );
        for bad in ["", "ipv4", "header:", "user+", "custom:a b", "ip:x"] {
            assert!(bad.parse::<KeySpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn store_options_join_the_url() {
        let mut s = StorageConfig {
            url: "redis://h:6379/0".into(),
            ..StorageConfig::default()
        };
        assert_eq!(s.full_url(), "redis://h:6379/0");
        s.options.insert("prefix".into(), "app 1:".into());
        s.options.insert("connections".into(), "4".into());
        assert_eq!(
            s.full_url(),
            "redis://h:6379/0?connections=4&prefix=app+1%3A"
        );
        s.url.push_str("?time=client");
        assert!(s.full_url().starts_with("redis://h:6379/0?time=client&"));
    }
}
