//! The merged configuration tree → [`Config`], reporting every field that is
//! missing, unknown, of the wrong type or out of range. What depends on
//! several fields (rule references, duplicates, patterns, costs) is checked
//! afterwards by [`compile`](super::build::compile), on the `Config`, so
//! that configurations built in code get the same checks.

use std::collections::BTreeSet;

use figment::value::Value;

use super::domains;
use super::model::{
    Config, DefaultsConfig, ExemptConfig, KeySpec, ListsConfig, ProxiesConfig, RouteConfig,
    RuleConfig, StorageConfig, TierCacheConfig, TierConfig, TierLimit, TierRuleConfig,
};
use super::reader::{Reader, Table, whole};
use http::StatusCode;
use ratekeeper_core::rule::Algorithm;
use ratekeeper_core::storage::Opener;
use ratekeeper_core::{Calendar, Weekday};
use ratekeeper_http::{
    AutoBlock, CountWhen, ErrorMode, ForwardingHeader, HeaderStyle, MissingKey, ResetFormat,
};

const TOP: &[&str] = &[
    "storage",
    "defaults",
    "rules",
    "routes",
    "tiers",
    "tier_cache",
    "exempt",
    "lists",
    "proxies",
    "auto_block",
    "domains",
    "server",
];

/// What reading found: the configuration, and the rules that were broken
/// (so that references to them are not reported a second time).
pub(crate) struct Read {
    pub(crate) config: Config,
    pub(crate) broken_rules: BTreeSet<String>,
}

/// Reads the whole tree. Problems go to `r`.
pub(crate) fn read(r: &mut Reader<'_>, root: &Value) -> Read {
    let mut config = Config::default();
    let mut broken_rules = BTreeSet::new();
    let Some(top) = Table::of(r, "", root) else {
        return Read {
            config,
            broken_rules,
        };
    };
    if let Some(t) = top.table(r, "storage") {
        config.storage = storage(r, &t);
    }
    if let Some(t) = top.table(r, "defaults") {
        config.defaults = defaults(r, &t);
    }
    if let Some(t) = top.table(r, "rules") {
        for (name, value) in t.entries() {
            let path = t.field_path(name);
            r.note_origin(&path, value);
            let Some(rule_table) = Table::of(r, &path, value) else {
                broken_rules.insert(name.clone());
                continue;
            };
            let before = r.problems.list.len();
            match rule(r, &rule_table, true) {
                Some(rule) if r.problems.list.len() == before => {
                    config.rules.insert(name.clone(), rule);
                }
                _ => {
                    broken_rules.insert(name.clone());
                }
            }
        }
    }
    for t in top.tables(r, "routes") {
        if let Some(route) = route(r, &t) {
            config.routes.push(route);
        }
    }
    if let Some(t) = top.table(r, "tiers") {
        for (name, value) in t.entries() {
            let path = t.field_path(name);
            if let Some(tier_table) = Table::of(r, &path, value) {
                config.tiers.insert(name.clone(), tier(r, &tier_table));
            }
        }
    }
    if let Some(t) = top.table(r, "tier_cache") {
        config.tier_cache = tier_cache(r, &t);
    }
    if let Some(t) = top.table(r, "exempt") {
        config.exempt = ExemptConfig {
            paths: strings(r, &t, "paths"),
        };
        t.finish(r, &["paths"]);
    }
    if let Some(t) = top.table(r, "lists") {
        config.lists = lists(r, &t);
    }
    if let Some(t) = top.table(r, "proxies") {
        config.proxies = proxies(r, &t);
    }
    if let Some(t) = top.table(r, "auto_block") {
        config.auto_block = auto_block(r, &t);
    }
    if let Some(t) = top.table(r, "server") {
        config.server = super::server::read(r, &t);
    }
    for t in top.tables(r, "domains") {
        let domain = domains::read_domain(r, &t, config.defaults.algorithm);
        config.domains.push(domain);
    }
    top.finish(r, TOP);
    Read {
        config,
        broken_rules,
    }
}

fn strings(r: &mut Reader<'_>, t: &Table<'_>, key: &str) -> Vec<String> {
    t.strings(r, key)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

fn storage(r: &mut Reader<'_>, t: &Table<'_>) -> StorageConfig {
    let mut s = StorageConfig::default();
    if let Some(url) = t.string(r, "url") {
        if url.trim().is_empty() {
            r.problem(
                &t.field_path("url"),
                t.value_of("url"),
                "the store URL is empty (expected e.g. memory://, sqlite:///var/lib/app/limits.db or redis://host:6379)",
            );
        }
        if !url.trim().is_empty()
            && let Some(problem) = store_url_problem(r.stores, &url)
        {
            r.problem(&t.field_path("url"), t.value_of("url"), problem);
        }
        s.url = url;
    }
    if let Some(options) = t.table(r, "options") {
        for (key, value) in options.entries() {
            let path = options.field_path(key);
            r.note_origin(&path, value);
            let text = match value {
                Value::String(_, v) => Some(v.clone()),
                Value::Num(_, n) => whole(n).map(|n| n.to_string()),
                Value::Bool(_, b) => Some(b.to_string()),
                _ => None,
            };
            match text {
                Some(text) => {
                    s.options.insert(key.clone(), text);
                }
                None => r.problem(
                    &path,
                    Some(value),
                    "expected a string, a number or a boolean",
                ),
            }
        }
    }
    s.timeout = t.duration(r, "timeout");
    if let Some(b) = t.table(r, "breaker") {
        let failures = b.integer(r, "failures", 1, 1_000_000).unwrap_or(5);
        let cooldown = b
            .duration(r, "cooldown")
            .unwrap_or(std::time::Duration::from_secs(1));
        s.breaker = Some(ratekeeper_layers::Breaker::new(
            u32::try_from(failures).unwrap_or(5),
            cooldown,
        ));
        b.finish(r, &["failures", "cooldown"]);
    }
    if let Some(n) = t.integer(r, "deny_cache", 0, 100_000_000) {
        s.deny_cache = usize::try_from(n).unwrap_or(0);
    }
    if let Some(a) = t.table(r, "approximate") {
        let flush = match a.duration(r, "flush") {
            Some(d) if d.is_zero() => {
                r.problem(
                    &a.field_path("flush"),
                    a.value_of("flush"),
                    "must be above 0",
                );
                d
            }
            Some(d) => d,
            None => ratekeeper_layers::approximate::DEFAULT_APPROXIMATE_FLUSH,
        };
        let keys = a
            .integer(r, "max_keys", 1, 100_000_000)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(ratekeeper_layers::approximate::DEFAULT_APPROXIMATE_KEYS);
        let instances = a.integer(r, "instances", 1, 1_000_000).unwrap_or(1);
        s.approximate = Some(
            ratekeeper_layers::approximate::Approximate::new(flush)
                .with_max_keys(keys)
                .with_instances(instances),
        );
        a.finish(r, &["flush", "max_keys", "instances"]);
    }
    t.finish(
        r,
        &[
            "url",
            "options",
            "timeout",
            "breaker",
            "deny_cache",
            "approximate",
        ],
    );
    s
}

/// What is wrong with a store URL, if anything: no store of `stores`
/// opens it or, without stores, it has no scheme. Only the scheme is shown:
/// the rest of a URL may hold a password.
fn store_url_problem(stores: &[Opener], url: &str) -> Option<String> {
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    if stores.is_empty() {
        let well_formed = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        return (!well_formed).then(|| {
            "the store URL has no scheme (expected e.g. memory://, sqlite:///var/lib/app/limits.db or redis://host:6379)".to_owned()
        });
    }
    if stores.iter().any(|o| o.accepts(url)) {
        return None;
    }
    Some(format!(
        "unsupported store URL scheme {:?} (this build opens {})",
        Opener::shown_scheme(url),
        Opener::examples_of(stores)
    ))
}

fn reset_format(text: &str) -> Result<ResetFormat, String> {
    match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "seconds" => Ok(ResetFormat::Seconds),
        "unix" | "unix_time" | "epoch" => Ok(ResetFormat::UnixTime),
        _ => Err(format!(
            "unknown reset format {:?} (expected \"seconds\" from now or \"unix\" time)",
            cut(text)
        )),
    }
}

fn forwarding_header(text: &str) -> Result<ForwardingHeader, String> {
    text.parse()
        .map_err(|e: ratekeeper_http::UnknownSetting| e.to_string())
}

fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

fn defaults(r: &mut Reader<'_>, t: &Table<'_>) -> DefaultsConfig {
    let mut d = DefaultsConfig::default();
    if let Some(a) = t.parsed(r, "algorithm", str::parse::<Algorithm>) {
        d.algorithm = a;
    }
    if let Some(k) = t.parsed(r, "key", str::parse::<KeySpec>) {
        d.key = k;
    }
    if let Some(value) = t.raw(r, "missing_key") {
        let path = t.field_path("missing_key");
        let status = match value {
            Value::String(_, s) if s.trim() == "ip" => Some(None),
            Value::String(_, s) if s.trim() == "reject" => Some(Some(StatusCode::BAD_REQUEST)),
            Value::Num(_, n) => whole(n)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| (400..=599).contains(n))
                .and_then(|n| StatusCode::from_u16(n).ok())
                .map(Some),
            _ => None,
        };
        match status {
            Some(None) => d.missing_key = MissingKey::UseIp,
            Some(Some(status)) => d.missing_key = MissingKey::Reject(status),
            None => r.problem(
                &path,
                Some(value),
                "expected \"ip\" (key the request by its address), \"reject\" (refuse it with 400) or a status from 400 to 599",
            ),
        }
    }
    if let Some(h) = t.parsed(r, "headers", str::parse::<HeaderStyle>) {
        d.headers = h;
    }
    if let Some(f) = t.parsed(r, "reset_format", reset_format) {
        d.reset_format = f;
    }
    if let Some(m) = t.parsed(r, "on_store_error", str::parse::<ErrorMode>) {
        d.on_store_error = m;
    }
    if let Some(n) = t.integer(r, "degraded_instances", 1, 100_000) {
        d.degraded_instances = n;
    }
    if let Some(s) = t.integer(r, "denied_status", 400, 599) {
        d.denied_status = u16::try_from(s).unwrap_or(429);
    }
    if let Some(s) = t.integer(r, "in_flight_status", 400, 599) {
        d.in_flight_status = u16::try_from(s).unwrap_or(429);
    }
    if let Some(s) = t.boolean(r, "shadow") {
        d.shadow = s;
    }
    if let Some(on) = t.boolean(r, "decision_for_handlers") {
        d.decision_for_handlers = on;
    }
    if let Some(p) = t.integer(r, "ipv6_prefix", 1, 128) {
        d.ipv6_prefix = u8::try_from(p).unwrap_or(64);
    }
    d.rules = strings(r, t, "rules");
    t.finish(
        r,
        &[
            "algorithm",
            "key",
            "missing_key",
            "headers",
            "reset_format",
            "on_store_error",
            "degraded_instances",
            "denied_status",
            "in_flight_status",
            "shadow",
            "decision_for_handlers",
            "ipv6_prefix",
            "rules",
        ],
    );
    d
}

const RULE_FIELDS: &[&str] = &[
    "algorithm",
    "limit",
    "window",
    "burst",
    "penalty",
    "wait",
    "waiters",
    "calendar",
    "week_start",
    "shadow",
    "headers",
];

/// A rule's fields; `finish`: report fields not a rule's (false when the
/// table also holds a tier entry's own fields).
fn rule(r: &mut Reader<'_>, t: &Table<'_>, finish: bool) -> Option<RuleConfig> {
    let algorithm = t.parsed(r, "algorithm", str::parse::<Algorithm>);
    let limit = t.required_integer(r, "limit", 1, u64::MAX);
    let window = t.required_window(r, "window");
    let burst = t.integer(r, "burst", 1, u64::MAX);
    let penalty = t.duration(r, "penalty");
    let wait = t.duration(r, "wait");
    let waiters = t.integer(r, "waiters", 1, u64::MAX);
    if waiters.is_some() && t.value_of("wait").is_none() {
        r.problem(
            &t.field_path("waiters"),
            t.value_of("waiters"),
            "waiters wait for their turn up to a bound (expected `wait = \"1s\"` or a duration beside it)",
        );
    }
    let calendar = t.parsed(r, "calendar", Calendar::new);
    let week_start = t.parsed(r, "week_start", str::parse::<Weekday>);
    if week_start.is_some() && t.value_of("calendar").is_none() {
        r.problem(
            &t.field_path("week_start"),
            t.value_of("week_start"),
            "a week's first day needs a calendar (expected `calendar = \"UTC\"` or a time zone beside it)",
        );
    }
    let calendar = calendar.map(|c| c.week_starts_on(week_start.unwrap_or_default()));
    let shadow = t.boolean(r, "shadow").unwrap_or(false);
    let headers = t.boolean(r, "headers").unwrap_or(true);
    if finish {
        t.finish(r, RULE_FIELDS);
    }
    Some(RuleConfig {
        algorithm,
        limit: limit?,
        window: window?,
        burst,
        penalty,
        wait,
        waiters,
        calendar,
        shadow,
        headers,
    })
}

fn route(r: &mut Reader<'_>, t: &Table<'_>) -> Option<RouteConfig> {
    let path = t.required_string(r, "path");
    let methods = strings(r, t, "methods");
    let rules = strings(r, t, "rules");
    let cost = t.integer(r, "cost", 1, u64::MAX).unwrap_or(1);
    let key = t.parsed(r, "key", str::parse::<KeySpec>);
    let on_store_error = t.parsed(r, "on_store_error", str::parse::<ErrorMode>);
    let count_when = count_when(r, t);
    t.finish(
        r,
        &[
            "path",
            "methods",
            "rules",
            "cost",
            "key",
            "on_store_error",
            "count_when",
        ],
    );
    Some(RouteConfig {
        path: path?,
        methods,
        rules,
        cost,
        key,
        on_store_error,
        count_when,
    })
}

/// `count_when`: statuses and classes to count, as a list (`["401", "403"]`)
/// or one string (`"4xx,!404"`).
fn count_when(r: &mut Reader<'_>, t: &Table<'_>) -> Option<CountWhen> {
    let items = t.strings(r, "count_when")?;
    let text = items
        .into_iter()
        .map(|(_, item)| item)
        .collect::<Vec<_>>()
        .join(",");
    match text.parse() {
        Ok(when) => Some(when),
        Err(e) => {
            let at = t.field_path("count_when");
            r.problem(&at, t.value_of("count_when"), e.to_string());
            None
        }
    }
}

fn tier(r: &mut Reader<'_>, t: &Table<'_>) -> TierConfig {
    let mut tier = TierConfig::default();
    for entry in t.tables(r, "rules") {
        let path = entry.required_string(r, "path");
        let methods = strings(r, &entry, "methods");
        let cost = entry.integer(r, "cost", 1, u64::MAX).unwrap_or(1);
        let key = entry.parsed(r, "key", str::parse::<KeySpec>);
        let count_when = count_when(r, &entry);
        let named = entry.string(r, "rule");
        // A quota of its own makes an entry's rule inline; the settings a
        // rule carries beside its quota belong to a named rule's table.
        let settings = ["calendar", "week_start", "shadow", "headers"];
        let inline = RULE_FIELDS
            .iter()
            .filter(|f| !settings.contains(f))
            .any(|f| entry.value_of(f).is_some());
        let limit = match (named, inline) {
            (Some(_), true) => {
                r.problem(
                    &entry.field_path("rule"),
                    entry.value_of("rule"),
                    "give either `rule` (the name of a rule of [rules]) or the rule's own `limit` and `window`, not both",
                );
                None
            }
            (Some(name), false) => {
                for field in settings {
                    if entry.value_of(field).is_some() {
                        r.problem(
                            &entry.field_path(field),
                            entry.value_of(field),
                            format!(
                                "`{field}` belongs to the rule: set it in [rules.{name}] (an entry naming a rule takes path, methods, cost, key and count_when)"
                            ),
                        );
                    }
                }
                Some(TierLimit::Named(name))
            }
            (None, true) => {
                let name = entry.string(r, "name");
                rule(r, &entry, false).map(|rule| TierLimit::Inline { name, rule })
            }
            (None, false) => {
                r.problem(
                    &entry.field_path("limit"),
                    Some(entry.value()),
                    "missing (expected `rule = \"<name>\"` or the rule's own `limit` and `window`)",
                );
                None
            }
        };
        let mut known: Vec<&str> = vec![
            "path",
            "methods",
            "cost",
            "key",
            "rule",
            "name",
            "count_when",
        ];
        known.extend_from_slice(RULE_FIELDS);
        entry.finish(r, &known);
        if let (Some(path), Some(limit)) = (path, limit) {
            tier.rules.push(TierRuleConfig {
                path,
                methods,
                limit,
                cost,
                key,
                count_when,
            });
        }
    }
    t.finish(r, &["rules"]);
    tier
}

fn tier_cache(r: &mut Reader<'_>, t: &Table<'_>) -> TierCacheConfig {
    let mut c = TierCacheConfig::default();
    if let Some(ttl) = t.duration(r, "ttl") {
        c.ttl = ttl;
    }
    if let Some(capacity) = t.integer(r, "capacity", 0, 100_000_000) {
        c.capacity = usize::try_from(capacity).unwrap_or(c.capacity);
    }
    t.finish(r, &["ttl", "capacity"]);
    c
}

fn auto_block(r: &mut Reader<'_>, t: &Table<'_>) -> Option<AutoBlock> {
    let denials = t.required_integer(r, "denials", 0, u64::from(u32::MAX));
    let mut positive = |key: &str| {
        let d = t.required_duration(r, key)?;
        if d.is_zero() {
            r.problem(&t.field_path(key), t.value_of(key), "must be above 0");
            return None;
        }
        Some(d)
    };
    let within = positive("within");
    let block_for = positive("block_for");
    let clients = t.integer(r, "max_clients", 16, 100_000_000);
    t.finish(r, &["denials", "within", "block_for", "max_clients"]);
    let mut rule = AutoBlock::new(u32::try_from(denials?).ok()?, within?, block_for?);
    if let Some(clients) = clients {
        rule = rule.max_clients(usize::try_from(clients).unwrap_or(usize::MAX));
    }
    Some(rule)
}

fn lists(r: &mut Reader<'_>, t: &Table<'_>) -> ListsConfig {
    let mut l = ListsConfig {
        allow: strings(r, t, "allow"),
        deny: strings(r, t, "deny"),
        ..ListsConfig::default()
    };
    if let Some(runtime) = t.boolean(r, "runtime") {
        l.runtime = runtime;
    }
    if let Some(refresh) = t.duration(r, "refresh") {
        l.refresh = refresh;
    }
    t.finish(r, &["allow", "deny", "runtime", "refresh"]);
    l
}

fn proxies(r: &mut Reader<'_>, t: &Table<'_>) -> ProxiesConfig {
    let mut p = ProxiesConfig {
        trusted: strings(r, t, "trusted"),
        ..ProxiesConfig::default()
    };
    if let Some(text) = t.string(r, "header") {
        match forwarding_header(&text) {
            Ok(h) => p.header = h,
            Err(e) => r.problem(&t.field_path("header"), t.value_of("header"), e),
        }
    }
    // `headers`, a list, is what older files say: one entry is that header;
    // several are refused, since "the first one present" lets a client pick
    // a header the proxy does not set and forge it.
    if let Some(headers) = t.strings(r, "headers") {
        let mut parsed = Vec::new();
        for (path, h) in headers {
            match forwarding_header(&h) {
                Ok(h) => parsed.push(h),
                Err(e) => r.problem(&path, t.value_of("headers"), e),
            }
        }
        if t.value_of("header").is_some() {
            r.problem(
                &t.field_path("headers"),
                t.value_of("headers"),
                "give `header` alone (`headers` is its older spelling)".to_owned(),
            );
        } else if parsed.len() > 1 {
            r.problem(
                &t.field_path("headers"),
                t.value_of("headers"),
                "several forwarding headers cannot be trusted at once: a client would send the one \
                 its proxy does not set and choose its own address; name the one header the proxy \
                 sets, e.g. header = \"x-forwarded-for\""
                    .to_owned(),
            );
        } else if let Some(&h) = parsed.first() {
            p.header = h;
        }
    }
    if let Some(hops) = t.integer(r, "max_hops", 1, 1_000) {
        p.max_hops = usize::try_from(hops).unwrap_or(p.max_hops);
    }
    t.finish(r, &["trusted", "header", "headers", "max_hops"]);
    p
}
