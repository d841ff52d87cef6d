//! [`Config`] → the pieces of an [`HttpPolicy`], checking everything that
//! depends on more than one field: rules that must make a valid quota, rule
//! references, duplicates, path patterns, addresses, costs.
//!
//! One file on purpose: every check that spans several fields runs in one pass
//! (`Checker`), so that all problems of a file are reported at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use super::error::{ConfigErrors, Problems};
use super::model::{Config, KeySpec, RuleConfig, TierLimit};
use ratekeeper_core::Limiter;
use ratekeeper_core::clock::Clock;
use ratekeeper_core::quota::{Quota, QuotaError};
use ratekeeper_core::rule::{Algorithm, Rule, RuleError, Wait};
use ratekeeper_core::storage::Storage;
use ratekeeper_http::{
    BlockedHook, ClientIpPolicy, ErrorHook, ErrorMode, ExemptFn, HttpPolicy, KeyExtractor, KeyFn,
    KeySource, Limits, RouteTable, RuntimeLists, TierResolver, Tiers, parse_net,
};

/// What an application adds to a configuration: the code a file cannot
/// hold. Custom keys are registered by name and referred to in the file as
/// `key = "custom:<name>"`.
///
/// ```
/// use std::sync::Arc;
/// use ratekeeper_config::PolicyCode;
/// use ratekeeper_http::{Identity, tier_resolver_fn};
///
/// let code = PolicyCode::new()
///     .key("tenant", Arc::new(|view| view.identity.map(|i| i.user().to_owned())))
///     .tier_resolver(tier_resolver_fn(|who: Identity| async move {
///         Ok(Some(if who.user().starts_with("vip") { "pro".into() } else { "free".into() }))
///     }));
/// assert!(code.has_key("tenant"));
/// ```
#[derive(Clone, Default)]
pub struct PolicyCode {
    keys: BTreeMap<String, KeyFn>,
    resolver: Option<Arc<dyn TierResolver>>,
    exempt_when: Option<ExemptFn>,
    on_blocked: Option<BlockedHook>,
    on_error: Option<ErrorHook>,
    clock: Option<Arc<dyn Clock>>,
    local_store: Option<LocalStoreFn>,
}

/// Builds the local store degraded mode decides on, on the limiter's
/// clock (see [`PolicyCode::local_store`]).
pub type LocalStoreFn = Arc<dyn Fn(Arc<dyn Clock>) -> Arc<dyn Storage> + Send + Sync>;

impl fmt::Debug for PolicyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyCode")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("resolver", &self.resolver.is_some())
            .field("exempt_when", &self.exempt_when.is_some())
            .field("on_blocked", &self.on_blocked.is_some())
            .field("on_error", &self.on_error.is_some())
            .field("local_store", &self.local_store.is_some())
            .finish_non_exhaustive()
    }
}

impl PolicyCode {
    /// No custom keys, no resolver, no predicate, no hooks, the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A key function the configuration refers to as `custom:<name>`.
    #[must_use]
    pub fn key(mut self, name: &str, key: KeyFn) -> Self {
        self.keys.insert(name.to_owned(), key);
        self
    }

    /// Whether a key function is registered under `name`.
    pub fn has_key(&self, name: &str) -> bool {
        self.keys.contains_key(name)
    }

    /// Finds the tier of identified callers whose tier the request does not
    /// carry (typically a database lookup); cached as `[tier_cache]` says.
    #[must_use]
    pub fn tier_resolver(mut self, resolver: Arc<dyn TierResolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Never limits requests for which `predicate` returns true.
    #[must_use]
    pub fn exempt_when(mut self, predicate: ExemptFn) -> Self {
        self.exempt_when = Some(predicate);
        self
    }

    /// Called for every denied request.
    #[must_use]
    pub fn on_blocked(mut self, hook: BlockedHook) -> Self {
        self.on_blocked = Some(hook);
        self
    }

    /// Called for every store error.
    #[must_use]
    pub fn on_error(mut self, hook: ErrorHook) -> Self {
        self.on_error = Some(hook);
        self
    }

    /// The limiter's clock (tests use a manual one).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Where routes with `on_store_error = "degraded"` decide while the
    /// store fails: a store that decides at once (the memory store), built
    /// on the limiter's clock. The facade's `ratekeeper::config::start`
    /// gives the memory store when its `memory` feature is on; without one,
    /// a configuration asking for degraded mode is refused.
    #[must_use]
    pub fn local_store(mut self, build: LocalStoreFn) -> Self {
        self.local_store = Some(build);
        self
    }

    /// Whether a local store for degraded mode is set.
    pub fn has_local_store(&self) -> bool {
        self.local_store.is_some()
    }

    pub(crate) fn limiter(&self, storage: Arc<dyn ratekeeper_core::storage::Storage>) -> Limiter {
        match &self.clock {
            Some(clock) => Limiter::builder(storage)
                .shared_clock(clock.clone())
                .build(),
            None => Limiter::new(storage),
        }
    }
}

/// A checked configuration, ready to become a policy.
pub(crate) struct Compiled {
    routes: RouteTable,
    keys: KeyExtractor,
    tiers: Option<Tiers>,
    /// Rules (by name) in shadow mode, and left out of the headers.
    shadow: Vec<String>,
    hidden: Vec<String>,
}

/// Whether any route (or the defaults) decides degraded when the store fails.
fn degraded_somewhere(config: &Config) -> bool {
    config.defaults.on_store_error == ErrorMode::Degraded
        || config
            .routes
            .iter()
            .any(|r| r.on_store_error == Some(ErrorMode::Degraded))
}

/// The local store degraded mode decides on, `build` on `shared`'s clock.
fn local_limiter(shared: &Limiter, build: &LocalStoreFn) -> Limiter {
    let clock = Arc::clone(shared.clock());
    Limiter::builder(build(Arc::clone(&clock)))
        .shared_clock(clock)
        .build()
}

impl Compiled {
    /// The policy, deciding with `limiter`; `previous`: the policy it
    /// replaces, if any.
    pub(crate) fn into_policy(
        self,
        config: &Config,
        limiter: Limiter,
        code: &PolicyCode,
        lists: Option<RuntimeLists>,
        previous: Option<&HttpPolicy>,
    ) -> HttpPolicy {
        let d = &config.defaults;
        let local = code
            .local_store
            .as_ref()
            .filter(|_| degraded_somewhere(config))
            .map(|build| local_limiter(&limiter, build));
        let mut policy = HttpPolicy::new(limiter, self.routes, self.keys)
            .headers(d.headers, d.reset_format)
            // `ranges` has checked the status (400 to 599).
            .denied_status(
                http::StatusCode::from_u16(d.denied_status)
                    .unwrap_or(http::StatusCode::TOO_MANY_REQUESTS),
            )
            .in_flight_status(
                http::StatusCode::from_u16(d.in_flight_status)
                    .unwrap_or(http::StatusCode::TOO_MANY_REQUESTS),
            )
            .on_store_error(d.on_store_error)
            .shadow(d.shadow)
            .decision_for_handlers(d.decision_for_handlers)
            .shadow_rules(&self.shadow)
            .hide_headers_of(&self.hidden);
        if let Some(local) = local {
            policy = policy.degraded(local, d.degraded_instances);
            // A reload during an outage keeps the local counts.
            if let Some(previous) = previous {
                policy = policy.keep_degraded_counts_from(previous);
            }
        }
        if let Some(mut tiers) = self.tiers {
            if let Some(resolver) = &code.resolver {
                tiers = tiers.resolver(resolver.clone());
            }
            policy = policy.tiers(tiers);
        }
        if let Some(hook) = &code.on_blocked {
            policy = policy.on_blocked(hook.clone());
        }
        if let Some(hook) = &code.on_error {
            policy = policy.on_error(hook.clone());
        }
        if let Some(lists) = lists {
            policy = policy.runtime_lists(lists.refresh_every(config.lists.refresh));
        }
        if let Some(rule) = config.auto_block {
            policy = policy.auto_block(rule);
            // A reload with the same rule keeps the clients' records and
            // blocks.
            if let Some(previous) = previous {
                policy = policy.keep_auto_blocks_from(previous);
            }
        }
        policy
    }
}

/// The rule `name` from `rc` (its algorithm, or `default`): the one place
/// a configured rule is built, for named rules, tiers and domains alike. An
/// error names the field at fault (`None`: the name).
pub(crate) fn build_rule(
    name: &str,
    rc: &RuleConfig,
    default: Algorithm,
) -> Result<Rule, (Option<&'static str>, String)> {
    let quota = Quota::new(rc.limit, rc.window)
        .and_then(|q| match rc.burst {
            Some(b) => q.with_burst(b),
            None => Ok(q),
        })
        .map_err(|e| {
            let field = match e {
                QuotaError::WindowOutOfRange(_) => "window",
                QuotaError::ZeroBurst | QuotaError::BurstTooLarge(_) => "burst",
                _ => "limit",
            };
            (Some(field), e.to_string())
        })?;
    Rule::new(name, rc.algorithm.unwrap_or(default), quota)
        .and_then(|r| match rc.penalty {
            Some(p) => r.with_penalty(p),
            None => Ok(r),
        })
        .and_then(|r| match &rc.calendar {
            Some(c) => r.with_calendar(c.clone()),
            None => Ok(r),
        })
        .map_err(|e| {
            let field = match e {
                RuleError::InvalidName { .. } => None,
                RuleError::BurstNotSupported(_) => Some("burst"),
                RuleError::InvalidPenalty(_) => Some("penalty"),
                RuleError::CalendarNeedsFixedWindow(_) => Some("calendar"),
                RuleError::CalendarWindow(_) => Some("window"),
                _ => Some("limit"),
            };
            (field, e.to_string())
        })
        .and_then(|r| match rc.wait {
            Some(up_to) => {
                // By default as many wait for a place as it has (a bucket's
                // line is bounded by its burst already).
                let places = r.algorithm().limits_in_flight().then(|| r.capacity());
                let waiters = rc.waiters.or(places).unwrap_or(u64::MAX);
                r.with_wait(Wait::new(up_to, waiters))
                    .map_err(|e| (Some("wait"), e.to_string()))
            }
            None => Ok(r),
        })
}

/// Checks `config` whole and builds its pieces. `broken_rules`: rules a
/// reading already reported, whose references are not reported again.
/// `code`: `None` when no application is there to provide custom keys
/// (`ratekeeper check-config`): their names are not checked.
pub(crate) fn compile(
    config: &Config,
    broken_rules: &BTreeSet<String>,
    code: Option<&PolicyCode>,
) -> Result<Compiled, ConfigErrors> {
    let mut c = Checker {
        config,
        code,
        problems: Problems::default(),
        broken: broken_rules.clone(),
        shadow: Vec::new(),
        hidden: Vec::new(),
    };
    let rules = c.rules();
    let d = &config.defaults;
    c.ranges();
    if let Err(e) = crate::domains::Domains::compile(&config.domains, d.algorithm) {
        for problem in e.0 {
            c.problem(&problem.path, problem.message);
        }
    }

    // Routes.
    let mut routes = RouteTable::new();
    let mut seen = Covered::default();
    for (i, route) in config.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        let methods = c.methods(&format!("{at}.methods"), &route.methods);
        for (first, what) in seen.add(&route.path, &methods, i) {
            c.problem(
                &format!("{at}.path"),
                format!(
                    "duplicate route: routes[{first}] already limits {what} {}",
                    route.path
                ),
            );
        }
        if route.rules.is_empty() {
            c.problem(
                &format!("{at}.rules"),
                "no rules (expected the names of one or more rules of [rules])".to_owned(),
            );
        }
        let Some(limits) = c.limits(&rules, &at, &route.rules, route.cost, route.key.as_ref())
        else {
            c.pattern(&format!("{at}.path"), &route.path);
            continue;
        };
        let mut limits = match route.on_store_error {
            Some(mode) => limits.on_store_error(mode),
            None => limits,
        };
        if let Some(when) = &route.count_when {
            c.counts_exactly(&format!("{at}.count_when"));
            limits = limits.count_when(when.clone());
        }
        let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
        match routes.clone().route(&route.path, &methods, limits) {
            Ok(next) => routes = next,
            Err(e) => c.problem(&format!("{at}.path"), pattern_message(e.reason())),
        }
    }
    if !d.rules.is_empty()
        && let Some(limits) = c.limits(&rules, "defaults", &d.rules, 1, None)
    {
        routes = routes.default_limits(limits);
    }
    for (i, pattern) in config.exempt.paths.iter().enumerate() {
        match routes.clone().exempt(pattern) {
            Ok(next) => routes = next,
            Err(e) => c.problem(&format!("exempt.paths[{i}]"), pattern_message(e.reason())),
        }
    }
    if let Some(predicate) = code.and_then(|c| c.exempt_when.as_ref()) {
        routes = routes.exempt_when(predicate.clone());
    }
    let allow = c.nets("lists.allow", &config.lists.allow);
    let deny = c.nets("lists.deny", &config.lists.deny);
    routes = match routes.allow(&allow).and_then(|t| t.deny(&deny)) {
        Ok(t) => t,
        // Every entry was parsed above.
        Err(_) => RouteTable::new(),
    };

    // Keys.
    let trusted = c.nets("proxies.trusted", &config.proxies.trusted);
    let proxies = ClientIpPolicy::new()
        .trust(&trusted)
        .unwrap_or_default()
        .header(config.proxies.header)
        .max_hops(config.proxies.max_hops);
    let source = c.key_source("defaults.key", &d.key);
    let keys = KeyExtractor::new(source.unwrap_or(KeySource::Ip))
        .on_missing(d.missing_key)
        .proxies(proxies)
        .ipv6_prefix(d.ipv6_prefix);

    // Degraded mode needs a store to decide on locally.
    if let Some(code) = c.code
        && !code.has_local_store()
        && degraded_somewhere(config)
    {
        let at = if d.on_store_error == ErrorMode::Degraded {
            "defaults.on_store_error".to_owned()
        } else {
            let i = config
                .routes
                .iter()
                .position(|r| r.on_store_error == Some(ErrorMode::Degraded))
                .unwrap_or_default();
            format!("routes[{i}].on_store_error")
        };
        c.problem(
            &at,
            "degraded mode decides on a local store, and none is available (expected the memory \
             store's feature, or PolicyCode::local_store)"
                .to_owned(),
        );
    }

    // Tiers.
    let tiers = c.tiers(&rules);

    c.problems.into_result(Compiled {
        routes,
        keys,
        tiers,
        shadow: c.shadow,
        hidden: c.hidden,
    })
}

/// The path-and-method pairs entries cover, to find entries an earlier one
/// shadows (the first matching entry applies).
#[derive(Default)]
struct Covered(BTreeMap<(String, String), usize>);

impl Covered {
    /// Records entry `i` for `path` and `methods` (empty: any). Returns, for
    /// each method an earlier entry already covers, that entry and how the
    /// method reads in a message (`GET`, `any method on`).
    fn add(&mut self, path: &str, methods: &[String], i: usize) -> Vec<(usize, String)> {
        let any = vec!["*".to_owned()];
        let methods = if methods.is_empty() { &any } else { methods };
        let mut shadowed = Vec::new();
        for m in methods {
            let earlier = self
                .0
                .get(&(path.to_owned(), "*".to_owned()))
                .or_else(|| self.0.get(&(path.to_owned(), m.clone())))
                .copied();
            self.0.entry((path.to_owned(), m.clone())).or_insert(i);
            if let Some(first) = earlier {
                let what = if m == "*" {
                    "any method on".to_owned()
                } else {
                    m.clone()
                };
                shadowed.push((first, what));
            }
        }
        shadowed
    }
}

fn pattern_message(reason: &str) -> String {
    format!(
        "invalid path pattern: {reason} (expected a path such as /users/{{id}} or /files/{{*rest}})"
    )
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

struct Checker<'c> {
    config: &'c Config,
    code: Option<&'c PolicyCode>,
    problems: Problems,
    broken: BTreeSet<String>,
    /// Rules built with `shadow = true`, and with `headers = false`.
    shadow: Vec<String>,
    hidden: Vec<String>,
}

impl Checker<'_> {
    fn problem(&mut self, path: &str, message: String) {
        let source = self.config.origin.of(path);
        self.problems.push(source, path, message);
    }

    /// What a file cannot get wrong (its reading checks it) but code can.
    fn ranges(&mut self) {
        let config = self.config;
        let d = &config.defaults;
        for (field, status) in [
            ("defaults.denied_status", d.denied_status),
            ("defaults.in_flight_status", d.in_flight_status),
        ] {
            if !(400..=599).contains(&status) {
                self.problem(
                    field,
                    format!("{status} is out of range (expected a whole number from 400 to 599)"),
                );
            }
        }
        if !(1..=128).contains(&d.ipv6_prefix) {
            self.problem(
                "defaults.ipv6_prefix",
                format!(
                    "{} is out of range (expected a whole number from 1 to 128)",
                    d.ipv6_prefix
                ),
            );
        }
        if config.lists.refresh < std::time::Duration::from_millis(100) {
            self.problem(
                "lists.refresh",
                format!(
                    "{} is too often (expected at least 100ms: each refresh reads the store)",
                    ratekeeper_core::format_duration(config.lists.refresh)
                ),
            );
        }
        if config.proxies.max_hops == 0 {
            self.problem(
                "proxies.max_hops",
                "0 is out of range (expected a whole number from 1 to 1000)".to_owned(),
            );
        }
        let zero_costs: Vec<String> = config
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.cost == 0)
            .map(|(i, _)| format!("routes[{i}].cost"))
            .chain(config.tiers.iter().flat_map(|(name, t)| {
                t.rules
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.cost == 0)
                    .map(move |(i, _)| format!("tiers.{name}.rules[{i}].cost"))
            }))
            .collect();
        for at in zero_costs {
            self.problem(
                &at,
                "0 is out of range (expected a whole number from 1)".to_owned(),
            );
        }
    }

    /// Reports a reference to `name`, which `[rules]` does not define.
    fn unknown_rule(&mut self, at: &str, name: &str, rules: &BTreeMap<String, Rule>) {
        let mut known: BTreeSet<&str> = rules.keys().map(String::as_str).collect();
        known.extend(self.broken.iter().map(String::as_str));
        let known = if known.is_empty() {
            "none are defined".to_owned()
        } else {
            known.into_iter().collect::<Vec<_>>().join(", ")
        };
        self.problem(
            at,
            format!("no rule named `{name}` (expected one of the rules of [rules]: {known})"),
        );
    }

    /// Reports `pattern` if it is not a valid path pattern on its own.
    fn pattern(&mut self, at: &str, pattern: &str) {
        if let Err(e) = RouteTable::check_pattern(pattern) {
            self.problem(at, pattern_message(e.reason()));
        }
    }

    /// The named rules, each checked.
    fn rules(&mut self) -> BTreeMap<String, Rule> {
        let mut out = BTreeMap::new();
        let config = self.config;
        for (name, rc) in &config.rules {
            if let Some(rule) = self.rule(&format!("rules.{name}"), name, rc) {
                out.insert(name.clone(), rule);
            } else {
                self.broken.insert(name.clone());
            }
        }
        out
    }

    /// One rule, as `name`, whose fields are at `at`.
    fn rule(&mut self, at: &str, name: &str, rc: &RuleConfig) -> Option<Rule> {
        match build_rule(name, rc, self.config.defaults.algorithm) {
            Ok(rule) => {
                if rc.wait.is_some() && self.config.storage.approximate.is_some() {
                    self.problem(
                        &format!("{at}.wait"),
                        "waiting in line takes each place in the store's one line, which \
                         approximate mode does not keep (expected no [storage.approximate], or \
                         no wait)"
                            .to_owned(),
                    );
                }
                if rc.shadow {
                    self.shadow.push(name.to_owned());
                }
                if !rc.headers {
                    self.hidden.push(name.to_owned());
                }
                Some(rule)
            }
            Err((Some(field), message)) => {
                self.problem(&format!("{at}.{field}"), message);
                None
            }
            Err((None, message)) => {
                self.problem(at, message);
                None
            }
        }
    }

    /// The limits of `names` at `at` (`<at>.rules`), costing `cost`.
    fn limits(
        &mut self,
        rules: &BTreeMap<String, Rule>,
        at: &str,
        names: &[String],
        cost: u64,
        key: Option<&KeySpec>,
    ) -> Option<Limits> {
        let mut found = Vec::new();
        let mut ok = true;
        for (i, name) in names.iter().enumerate() {
            let path = format!("{at}.rules[{i}]");
            match rules.get(name) {
                Some(rule) => {
                    if found.iter().any(|r: &Rule| r.name() == name) {
                        self.problem(&path, format!("rule `{name}` is listed twice"));
                        ok = false;
                        continue;
                    }
                    ok &= self.affordable(&format!("{at}.cost"), rule, cost);
                    found.push(rule.clone());
                }
                None if self.broken.contains(name) => ok = false,
                None => {
                    self.unknown_rule(&path, name, rules);
                    ok = false;
                }
            }
        }
        let key = match key {
            Some(spec) => Some(self.key_source(&format!("{at}.key"), spec)?),
            None => None,
        };
        if !ok || found.is_empty() {
            return None;
        }
        let mut limits = Limits::new(found).cost(cost);
        if let Some(key) = key {
            limits = limits.key(key);
        }
        Some(limits)
    }

    /// Whether one request of `cost` can ever pass `rule`: a cost above the
    /// burst (or, for window algorithms, the limit) never would.
    fn affordable(&mut self, at: &str, rule: &Rule, cost: u64) -> bool {
        let capacity = rule.capacity();
        if cost <= capacity {
            return true;
        }
        let what = if rule.algorithm().uses_burst() {
            "burst"
        } else {
            "limit"
        };
        self.problem(
            at,
            format!(
                "a cost of {cost} is more than rule `{}` allows at once (its {what} is {capacity}): \
                 every request would be denied (expected a cost of at most {capacity}, or a larger {what})",
                rule.name()
            ),
        );
        false
    }

    fn methods(&mut self, at: &str, methods: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            let upper = m.trim().to_ascii_uppercase();
            if !METHODS.contains(&upper.as_str()) {
                self.problem(
                    &format!("{at}[{i}]"),
                    format!(
                        "unknown method {:?} (expected one of {})",
                        m.chars().take(32).collect::<String>(),
                        METHODS.join(", ")
                    ),
                );
            } else if out.contains(&upper) {
                self.problem(
                    &format!("{at}[{i}]"),
                    format!("method {upper} is listed twice"),
                );
            } else {
                out.push(upper);
            }
        }
        out
    }

    fn nets(&mut self, at: &str, entries: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match parse_net(entry) {
                Ok(net) => out.push(net.to_string()),
                Err(e) => self.problem(&format!("{at}[{i}]"), e.message().to_owned()),
            }
        }
        out
    }

    fn key_source(&mut self, at: &str, spec: &KeySpec) -> Option<KeySource> {
        Some(match spec {
            KeySpec::Ip => KeySource::Ip,
            KeySpec::User => KeySource::User,
            KeySpec::Route => KeySource::Route,
            KeySpec::Header(h) => KeySource::Header(h.as_str().into()),
            KeySpec::Custom(name) => match self.code {
                Some(code) => match code.keys.get(name) {
                    Some(f) => KeySource::Custom(f.clone()),
                    None => {
                        self.problem(
                            at,
                            format!(
                                "no key function registered as `{name}` (register it with PolicyCode::key(\"{name}\", …))"
                            ),
                        );
                        return None;
                    }
                },
                // Checked without the application: any name will do.
                None => KeySource::Custom(Arc::new(|_| None)),
            },
            KeySpec::Composite(parts) => {
                let mut sources = Vec::new();
                for part in parts {
                    sources.push(self.key_source(at, part)?);
                }
                KeySource::Composite(sources)
            }
        })
    }

    /// `count_when` at `at` gives costs back after the response, which
    /// approximate mode cannot do (it would refuse every such request).
    fn counts_exactly(&mut self, at: &str) {
        if self.config.storage.approximate.is_some() {
            self.problem(
                at,
                "counting only some responses gives costs back exactly, which approximate mode \
                 cannot do (expected no [storage.approximate], or no count_when)"
                    .to_owned(),
            );
        }
    }

    fn tiers(&mut self, rules: &BTreeMap<String, Rule>) -> Option<Tiers> {
        let config = self.config;
        if config.tiers.is_empty() {
            return None;
        }
        let mut tiers = Tiers::new().cache(config.tier_cache.ttl, config.tier_cache.capacity);
        // Inline rules by name: (where first defined, algorithm).
        let mut inline: BTreeMap<String, (String, ratekeeper_core::rule::Algorithm)> =
            BTreeMap::new();
        for (tier_name, tier) in &config.tiers {
            tiers = tiers.tier(tier_name);
            let mut seen = Covered::default();
            for (i, entry) in tier.rules.iter().enumerate() {
                let at = format!("tiers.{tier_name}.rules[{i}]");
                let methods = self.methods(&format!("{at}.methods"), &entry.methods);
                for (first, what) in seen.add(&entry.path, &methods, i) {
                    self.problem(
                        &format!("{at}.path"),
                        format!(
                            "duplicate entry: tiers.{tier_name}.rules[{first}] already covers {what} {}",
                            entry.path
                        ),
                    );
                }
                let limits = match &entry.limit {
                    TierLimit::Named(name) => {
                        let mut rules_at = at.clone();
                        rules_at.push_str(".rule");
                        match rules.get(name) {
                            Some(rule) => self
                                .affordable(&format!("{at}.cost"), rule, entry.cost)
                                .then(|| Limits::new(vec![rule.clone()])),
                            None if self.broken.contains(name) => None,
                            None => {
                                self.unknown_rule(&rules_at, name, rules);
                                None
                            }
                        }
                    }
                    TierLimit::Inline { name, rule } => {
                        let rule_name = name
                            .clone()
                            .unwrap_or_else(|| inline_name(tier_name, &entry.path, &methods));
                        let name_at = if name.is_some() {
                            format!("{at}.name")
                        } else {
                            at.clone()
                        };
                        let built = self.rule(&at, &rule_name, rule);
                        if let Some(built) = &built {
                            if rules.contains_key(&rule_name) || self.broken.contains(&rule_name) {
                                self.problem(
                                    &name_at,
                                    format!(
                                        "duplicate rule name `{rule_name}`: rules.{rule_name} already has it \
                                         (use `rule = \"{rule_name}\"` to refer to it, or another name)"
                                    ),
                                );
                            } else if let Some((first, algorithm)) = inline.get(&rule_name) {
                                if *algorithm != built.algorithm() || *first == at {
                                    self.problem(
                                        &name_at,
                                        format!(
                                            "duplicate rule name `{rule_name}`: {first} already uses it with \
                                             algorithm {algorithm} (entries sharing a name share counters and \
                                             must use the same algorithm)"
                                        ),
                                    );
                                }
                            } else {
                                inline.insert(rule_name.clone(), (at.clone(), built.algorithm()));
                            }
                        }
                        built.and_then(|b| {
                            self.affordable(&format!("{at}.cost"), &b, entry.cost)
                                .then(|| Limits::new(vec![b]))
                        })
                    }
                };
                let key = match &entry.key {
                    Some(spec) => self.key_source(&format!("{at}.key"), spec),
                    None => Some(KeySource::User),
                };
                let (Some(limits), Some(key)) = (limits, key) else {
                    self.pattern(&format!("{at}.path"), &entry.path);
                    continue;
                };
                let mut limits = limits.cost(entry.cost).key(key);
                if let Some(when) = &entry.count_when {
                    self.counts_exactly(&format!("{at}.count_when"));
                    limits = limits.count_when(when.clone());
                }
                let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
                if let Err(e) = tiers.add_rule(tier_name, &entry.path, &methods, limits) {
                    self.problem(&format!("{at}.path"), pattern_message(e.reason()));
                }
            }
        }
        Some(tiers)
    }
}

/// Every rule of `config` by the name its counters are kept under: the
/// named rules and the tiers' own rules.
pub(crate) fn all_rules(config: &Config) -> Result<BTreeMap<String, Rule>, ConfigErrors> {
    let mut c = Checker {
        config,
        code: None,
        problems: Problems::default(),
        broken: BTreeSet::new(),
        shadow: Vec::new(),
        hidden: Vec::new(),
    };
    let mut rules = c.rules();
    for (tier, t) in &config.tiers {
        for (i, entry) in t.rules.iter().enumerate() {
            if let TierLimit::Inline { name, rule } = &entry.limit {
                let methods: Vec<String> = entry
                    .methods
                    .iter()
                    .map(|m| m.trim().to_ascii_uppercase())
                    .collect();
                let name = name
                    .clone()
                    .unwrap_or_else(|| inline_name(tier, &entry.path, &methods));
                if let Some(built) = c.rule(&format!("tiers.{tier}.rules[{i}]"), &name, rule) {
                    rules.insert(name, built);
                }
            }
        }
    }
    c.problems.into_result(rules)
}

/// The name an inline tier rule's counters are kept under: the tier, the
/// path and the methods, with the characters rule names cannot hold
/// replaced (`pro/api/tasks/(id)#POST`).
pub(crate) fn inline_name(tier: &str, path: &str, methods: &[String]) -> String {
    let mut name: String = format!("{tier}{path}")
        .chars()
        .map(|c| match c {
            '{' => '(',
            '}' => ')',
            ':' | ' ' => '_',
            c if c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    if !methods.is_empty() {
        name.push('#');
        name.push_str(&methods.join(","));
    }
    name.chars().take(128).collect()
}
