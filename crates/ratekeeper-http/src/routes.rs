//! What applies to a request: deny and allow lists, exemptions, and the
//! limits of the route it matches.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use smol_str::SmolStr;

use super::client_ip::{InvalidProxy, net_contains, parse_nets};
use super::key::{KeySource, RequestView};
use ratekeeper_core::rule::Rule;

use super::count::CountWhen;

/// The limits of a route: rules checked together (all must pass, decided
/// atomically), what one request costs, and, optionally, its own key source.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The rules; all must allow.
    pub rules: Arc<[Rule]>,
    /// Units one request costs (default 1).
    pub cost: u64,
    /// The key source for this route; `None` uses the policy's default.
    pub key: Option<KeySource>,
    /// What to do when the store fails; `None` uses the policy's default.
    pub on_store_error: Option<ErrorMode>,
    /// Which responses count; `None`: every request counts when it arrives.
    pub count_when: Option<CountWhen>,
}

/// What to do with a request when the store cannot decide (down, slow, corrupt).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorMode {
    /// Refuse the request with 503 (the default: a limiter that silently stops
    /// limiting is a limiter an attacker can switch off).
    #[default]
    FailClosed,
    /// Let the request through unlimited (fastapi-traffic's `skip_on_error`).
    FailOpen,
    /// Decide on the policy's local store, each rule's quota divided by
    /// the number of instances sharing the limit
    /// ([`HttpPolicy::degraded`](crate::HttpPolicy::degraded)): limits hold,
    /// per instance, while the shared store is down. Without a local store
    /// set on the policy, fails closed.
    Degraded,
}

impl std::str::FromStr for ErrorMode {
    type Err = super::UnknownSetting;

    /// `deny` (also `fail_closed`, `closed`), `allow` (also `fail_open`,
    /// `open`) or `degraded` (also `local`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "deny" | "fail_closed" | "closed" => Ok(Self::FailClosed),
            "allow" | "fail_open" | "open" => Ok(Self::FailOpen),
            "degraded" | "local" => Ok(Self::Degraded),
            _ => Err(super::UnknownSetting(format!(
                "unknown error mode {:?} (expected \"deny\" to fail closed, \"allow\" to fail open or \"degraded\" to decide locally)",
                super::cut(text)
            ))),
        }
    }
}

impl Limits {
    /// These rules, cost 1, the default key.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules: rules.into(),
            cost: 1,
            key: None,
            on_store_error: None,
            count_when: None,
        }
    }

    /// Each request costs `cost` units.
    #[must_use]
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    /// This route's requests are keyed by `key`.
    #[must_use]
    pub fn key(mut self, key: KeySource) -> Self {
        self.key = Some(key);
        self
    }

    /// What this route does when the store fails.
    #[must_use]
    pub fn on_store_error(mut self, mode: ErrorMode) -> Self {
        self.on_store_error = Some(mode);
        self
    }

    /// Only responses `when` accepts count ("only 401s on /login"): each
    /// request's cost is taken when it arrives, so concurrent requests
    /// cannot pass the limit while their responses are unknown, and given
    /// back once its response shows it does not count. Needs an exact store
    /// (approximate mode refuses it: the route's store-error mode applies).
    #[must_use]
    pub fn count_when(mut self, when: CountWhen) -> Self {
        self.count_when = Some(when);
        self
    }
}

/// What a request gets.
#[derive(Debug, Clone, Copy)]
pub enum Applies<'a> {
    /// The client is on the deny list: refuse it (403).
    Denied,
    /// The client is on the allow list: never limited.
    Allowed,
    /// The path or the exemption predicate exempts the request.
    Exempt,
    /// These limits apply.
    Limited(&'a Limits),
    /// No route matched and there is no default: not limited.
    Unlimited,
}

/// A route table that could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pattern: String,
    reason: String,
}

impl RouteError {
    /// The pattern or entry at fault.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid route pattern {:?}: {} (patterns look like /users/{{id}} or /files/{{*rest}})",
            self.pattern, self.reason
        )
    }
}

impl std::error::Error for RouteError {}

impl From<InvalidProxy> for RouteError {
    fn from(e: InvalidProxy) -> Self {
        Self {
            pattern: e.0.clone(),
            reason: e.to_string(),
        }
    }
}

/// A predicate that exempts requests (like fastapi-traffic's `exempt_when`).
pub type ExemptFn = Arc<dyn Fn(&RequestView<'_>) -> bool + Send + Sync>;

/// Route rules, exemptions and client lists: decides what applies to each
/// request. Routes use axum's pattern syntax (`/users/{id}`, `/files/{*rest}`);
/// each may be restricted to methods; the first entry registered for a
/// pattern whose methods include the request's wins.
///
/// ```
/// use ratekeeper_http::{Applies, Limits, RouteTable};
/// use ratekeeper_core::{Algorithm, Rule};
///
/// let strict = Rule::new("writes", Algorithm::Gcra, "10/minute".parse()?)?;
/// let relaxed = Rule::new("reads", Algorithm::Gcra, "600/minute".parse()?)?;
/// let table = RouteTable::new()
///     .route("/users/{id}", &["POST", "PUT"], Limits::new(vec![strict]))?
///     .default_limits(Limits::new(vec![relaxed]))
///     .exempt("/health")?
///     .deny(["203.0.113.0/24"])?;
/// let rule = |a: Applies<'_>| match a { Applies::Limited(l) => l.rules[0].name().to_owned(), other => format!("{other:?}") };
/// let ip = "198.51.100.7".parse()?;
/// assert_eq!(rule(table.resolve_path("PUT", "/users/42", ip)), "writes");
/// assert_eq!(rule(table.resolve_path("GET", "/users/42", ip)), "reads");
/// assert_eq!(rule(table.resolve_path("GET", "/health", ip)), "Exempt");
/// assert_eq!(rule(table.resolve_path("GET", "/", "203.0.113.9".parse()?)), "Denied");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct RouteTable {
    router: matchit::Router<usize>,
    patterns: HashMap<String, usize>,
    /// Per pattern, its entries in registration order: (methods, limits).
    entries: Vec<Vec<(Option<Vec<SmolStr>>, Limits)>>,
    default: Option<Limits>,
    exempt: matchit::Router<()>,
    /// Whether any exempt pattern was added (an empty router is not searched).
    has_exempt: bool,
    exempt_when: Option<ExemptFn>,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.patterns.keys().collect::<Vec<_>>())
            .field("default", &self.default)
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .finish_non_exhaustive()
    }
}

impl RouteTable {
    /// An empty table: nothing limited, nothing exempt.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits for requests whose path matches `pattern` and whose method is in
    /// `methods` (empty: any method).
    pub fn route(
        mut self,
        pattern: &str,
        methods: &[&str],
        limits: Limits,
    ) -> Result<Self, RouteError> {
        let index = match self.patterns.get(pattern) {
            Some(&i) => i,
            None => {
                let i = self.entries.len();
                self.router.insert(pattern, i).map_err(|e| RouteError {
                    pattern: pattern.to_owned(),
                    reason: e.to_string(),
                })?;
                self.patterns.insert(pattern.to_owned(), i);
                self.entries.push(Vec::new());
                i
            }
        };
        let methods = (!methods.is_empty()).then(|| {
            methods
                .iter()
                .map(|m| SmolStr::new(m.to_ascii_uppercase()))
                .collect()
        });
        if let Some(list) = self.entries.get_mut(index) {
            list.push((methods, limits));
        }
        Ok(self)
    }

    /// Limits for requests that match no route.
    #[must_use]
    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.default = Some(limits);
        self
    }

    /// Never limits requests whose path matches `pattern`.
    pub fn exempt(mut self, pattern: &str) -> Result<Self, RouteError> {
        self.exempt.insert(pattern, ()).map_err(|e| RouteError {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })?;
        self.has_exempt = true;
        Ok(self)
    }

    /// Never limits requests for which `predicate` returns true.
    #[must_use]
    pub fn exempt_when(mut self, predicate: ExemptFn) -> Self {
        self.exempt_when = Some(predicate);
        self
    }

    /// Never limits these clients (addresses or CIDR blocks).
    pub fn allow<S: AsRef<str>>(
        mut self,
        clients: impl IntoIterator<Item = S>,
    ) -> Result<Self, RouteError> {
        self.allow.extend(parse_nets(clients)?);
        Ok(self)
    }

    /// Always refuses these clients (addresses or CIDR blocks), before anything else.
    pub fn deny<S: AsRef<str>>(
        mut self,
        clients: impl IntoIterator<Item = S>,
    ) -> Result<Self, RouteError> {
        self.deny.extend(parse_nets(clients)?);
        Ok(self)
    }

    /// Whether `pattern` is a valid route pattern on its own
    /// (`/users/{id}`, `/files/{*rest}`); the error says why not. Patterns
    /// are also checked when added, against the table's others.
    pub fn check_pattern(pattern: &str) -> Result<(), RouteError> {
        matchit::Router::<()>::new()
            .insert(pattern, ())
            .map_err(|e| RouteError {
                pattern: pattern.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Every limits of the table (routes and default), for adapters that
    /// want to know what the policy will ask of a request.
    pub fn all_limits(&self) -> impl Iterator<Item = &Limits> {
        self.entries
            .iter()
            .flatten()
            .map(|(_, limits)| limits)
            .chain(self.default.as_ref())
    }

    /// The limits every request gets whatever its method, path or client:
    /// the default, in a table with no routes, no exemption (path or
    /// predicate) and no allowed or denied networks. `None` for any other
    /// table.
    pub(crate) fn only_default(&self) -> Option<&Limits> {
        let nothing_else = self.entries.is_empty()
            && !self.has_exempt
            && self.exempt_when.is_none()
            && self.allow.is_empty()
            && self.deny.is_empty();
        self.default.as_ref().filter(|_| nothing_else)
    }

    /// The default limits, whatever else the table holds.
    pub(crate) fn default_limits_of(&self) -> Option<&Limits> {
        self.default.as_ref()
    }

    /// Whether the exemption predicate may read the matched route pattern.
    pub(crate) fn has_exempt_predicate(&self) -> bool {
        self.exempt_when.is_some()
    }

    /// What applies to `view`, whose client address is `client` (found with a
    /// [`ClientIpPolicy`](super::ClientIpPolicy)).
    pub fn resolve(&self, view: &RequestView<'_>, client: IpAddr) -> Applies<'_> {
        match self.resolve_path(view.method, view.path, client) {
            Applies::Limited(_) | Applies::Unlimited
                if self.exempt_when.as_ref().is_some_and(|f| f(view)) =>
            {
                Applies::Exempt
            }
            other => other,
        }
    }

    /// The limits of the route `method path` matches, without the default,
    /// the lists or the exemptions. An entry for `GET` also applies to
    /// `HEAD`: axum, actix-web and Rocket all answer `HEAD` with the `GET`
    /// handler, so a `GET` limit must hold for both spellings.
    pub fn route_limits(&self, method: &str, path: &str) -> Option<&Limits> {
        if self.entries.is_empty() {
            return None;
        }
        let head = method.eq_ignore_ascii_case("HEAD");
        self.entries
            .get(*self.router.at(path).ok()?.value)?
            .iter()
            .find(|(methods, _)| {
                methods.as_ref().is_none_or(|ms| {
                    ms.iter()
                        .any(|m| m.eq_ignore_ascii_case(method) || (head && m == "GET"))
                })
            })
            .map(|(_, limits)| limits)
    }

    /// [`resolve`](Self::resolve) without the exemption predicate, from the
    /// method, path and client address alone.
    pub fn resolve_path(&self, method: &str, path: &str, client: IpAddr) -> Applies<'_> {
        let client = client.to_canonical();
        if self.deny.iter().any(|n| net_contains(n, &client)) {
            return Applies::Denied;
        }
        if self.allow.iter().any(|n| net_contains(n, &client)) {
            return Applies::Allowed;
        }
        if self.has_exempt && self.exempt.at(path).is_ok() {
            return Applies::Exempt;
        }
        match self.route_limits(method, path).or(self.default.as_ref()) {
            Some(limits) => Applies::Limited(limits),
            None => Applies::Unlimited,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratekeeper_core::{Algorithm, Quota};

    fn limits(name: &str) -> Limits {
        Limits::new(vec![
            Rule::new(name, Algorithm::Gcra, Quota::per_second(1).unwrap()).unwrap(),
        ])
    }

    fn name(a: Applies<'_>) -> String {
        match a {
            Applies::Limited(l) => l
                .rules
                .first()
                .map(|r| r.name().to_owned())
                .unwrap_or_default(),
            other => format!("{other:?}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_methods_and_default() {
        let t = RouteTable::new()
            .route("/users/{id}", &["post"], limits("user-write"))
            .unwrap()
            .route("/users/{id}", &[], limits("user-any"))
            .unwrap()
            .route("/files/{*rest}", &["GET"], limits("files"))
            .unwrap()
            .default_limits(limits("default"));
        let c = ip("198.51.100.1");
        assert_eq!(name(t.resolve_path("POST", "/users/7", c)), "user-write");
        assert_eq!(name(t.resolve_path("GET", "/users/7", c)), "user-any");
        assert_eq!(name(t.resolve_path("GET", "/files/a/b/c.txt", c)), "files");
        assert_eq!(name(t.resolve_path("DELETE", "/files/a", c)), "default");
        // HEAD is answered by the GET handler in every framework.
        assert_eq!(name(t.resolve_path("HEAD", "/files/a", c)), "files");
        assert_eq!(name(t.resolve_path("head", "/users/7", c)), "user-any");
        assert_eq!(name(t.resolve_path("GET", "/users/7/extra", c)), "default");
        assert_eq!(
            name(RouteTable::new().resolve_path("GET", "/", c)),
            "Unlimited"
        );
    }

    #[test]
    fn lists_and_exemptions_come_first() {
        let t = RouteTable::new()
            .default_limits(limits("default"))
            .exempt("/health")
            .unwrap()
            .exempt("/static/{*rest}")
            .unwrap()
            .allow(["10.0.0.0/8", "::1"])
            .unwrap()
            .deny(["10.6.6.6", "2001:db8::/32"])
            .unwrap();
        assert_eq!(
            name(t.resolve_path("GET", "/health", ip("198.51.100.1"))),
            "Exempt"
        );
        assert_eq!(
            name(t.resolve_path("GET", "/static/app.js", ip("198.51.100.1"))),
            "Exempt"
        );
        assert_eq!(name(t.resolve_path("GET", "/", ip("10.1.1.1"))), "Allowed");
        assert_eq!(name(t.resolve_path("GET", "/", ip("::1"))), "Allowed");
        // The deny list wins over the allow list and exemptions.
        assert_eq!(
            name(t.resolve_path("GET", "/health", ip("10.6.6.6"))),
            "Denied"
        );
        assert_eq!(
            name(t.resolve_path("GET", "/", ip("2001:db8::5"))),
            "Denied"
        );
        assert_eq!(
            name(t.resolve_path("GET", "/", ip("::ffff:10.6.6.6"))),
            "Denied"
        );
        // Entries spelled IPv4-mapped match as clients do.
        let mapped = RouteTable::new()
            .deny(["::ffff:127.0.0.1"])
            .unwrap()
            .allow(["::ffff:192.0.2.0/120"])
            .unwrap();
        assert_eq!(
            name(mapped.resolve_path("GET", "/", ip("127.0.0.1"))),
            "Denied"
        );
        assert_eq!(
            name(mapped.resolve_path("GET", "/", ip("192.0.2.9"))),
            "Allowed"
        );
        assert_eq!(
            name(t.resolve_path("GET", "/", ip("198.51.100.1"))),
            "default"
        );
    }

    #[test]
    fn the_predicate_exempts_what_would_be_limited() {
        let t = RouteTable::new()
            .default_limits(limits("default"))
            .deny(["203.0.113.1"])
            .unwrap()
            .exempt_when(Arc::new(|v: &RequestView<'_>| {
                v.identity.is_some_and(|i| i.user == "admin")
            }));
        let admin = super::super::Identity {
            user: "admin".into(),
            tier: None,
        };
        let h: &[(&str, &[u8])] = &[];
        let view = RequestView {
            method: "GET",
            path: "/",
            route: None,
            peer: ip("198.51.100.1"),
            headers: &h,
            identity: Some(&admin),
        };
        assert_eq!(name(t.resolve(&view, view.peer)), "Exempt");
        assert_eq!(
            name(t.resolve(&view, ip("203.0.113.1"))),
            "Denied",
            "the deny list still wins"
        );
        let anonymous = RequestView {
            identity: None,
            ..view
        };
        assert_eq!(name(t.resolve(&anonymous, view.peer)), "default");
    }

    #[test]
    fn bad_patterns_and_entries_are_errors() {
        let err = RouteTable::new()
            .route("/a/{", &[], limits("x"))
            .unwrap_err();
        assert!(err.to_string().contains("/a/{"), "{err}");
        assert!(RouteTable::new().exempt("/a/{*rest}/b").is_err());
        assert!(RouteTable::new().deny(["not-an-ip"]).is_err());
    }
}
