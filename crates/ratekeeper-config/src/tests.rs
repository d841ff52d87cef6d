//! Golden tests: every validation message, exactly as a person reads it.
//!
//! One file on purpose: golden tests, one per message, read as the catalogue
//! of what a user can be told.

use std::sync::Arc;

use super::*;

fn errors(text: &str) -> String {
    errors_in(text, Format::Toml)
}

fn errors_in(text: &str, format: Format) -> String {
    match Config::parse(text, format) {
        Ok(_) => "ok".to_owned(),
        Err(e) => e
            .errors()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// One file with every kind of problem: all are reported, each with its
/// field path and what was expected.
const BROKEN: &str = r#"
[storage]
url = ""
urll = "x"
[storage.options]
prefix = "a"
nested = { a = 1 }

[defaults]
algorithm = "fast"
key = "ipv4"
missing_key = 200
headers = "fancy"
reset_format = "hours"
on_store_error = "explode"
denied_status = 200
shadow = "yes"
decision_for_handlers = 1
ipv6_prefix = 129
rules = ["nope"]

[rules.zero]
limit = 0
window = "1m"

[rules.negative]
limit = -5
window = "1m"

[rules.badwindow]
limit = 5
window = "soon"

[rules.tiny]
limit = 5
window = "1ms"
algorithm = "fixed_window"

[rules.burst_on_window]
limit = 5
window = "1m"
algorithm = "fixed_window"
burst = 10

[rules.zeroburst]
limit = 5
window = "1m"
algorithm = "gcra"
burst = 0

[rules.small]
limit = 10
window = "1m"
algorithm = "token_bucket"
burst = 2

[rules.missing]
algorithm = "gcra"

[rules.typo]
limit = 1
windw = "1m"

[rules."bad name"]
limit = 1
window = "1s"

[rules.ok]
limit = 10
window = "1h"

[[routes]]
path = "/a"
rules = ["ok", "ghost", "zero"]

[[routes]]
path = "/b/{"
rules = ["ok"]

[[routes]]
path = "/a"
rules = ["ok"]
methods = ["GET", "FETCH"]

[[routes]]
path = "/c"
rules = ["small"]
cost = 3

[[routes]]
path = "/d"

[tiers.pro]
rules = [
  { path = "/tasks", limit = 10, window = "1h" },
  { path = "/tasks", rule = "ok" },
  { path = "/x", rule = "ok", limit = 3 },
  { path = "/y" },
  { path = "/z", limit = 5, window = "30 parsecs" },
]

[tier_cache]
ttl = "forever"

[exempt]
paths = ["/health", "/bad/{*x}/y"]

[lists]
allow = ["10.0.0.0/33"]
deny = ["banana"]
refresh = -1

[proxies]
trusted = ["10.0.0.0/8", "not-an-ip"]
headers = ["x-forwarded-for", "via"]
max_hops = 0

[auto_block]
denials = -1
within = "0s"
blok_for = "1h"

[extra]
x = 1
"#;

#[test]
fn every_problem_is_reported_at_once() {
    let expected = r#"configuration: storage.url: the store URL is empty (expected e.g. memory://, sqlite:///var/lib/app/limits.db or redis://host:6379)
configuration: storage.options.nested: expected a string, a number or a boolean
configuration: storage.urll: unknown field `urll` (expected one of: url, options, timeout, breaker, deny_cache, approximate); did you mean `url`?
configuration: defaults.algorithm: unknown algorithm "fast" (expected one of fixed_window, sliding_window_log, sliding_window_counter, token_bucket, leaky_bucket, gcra, concurrency)
configuration: defaults.key: invalid key "ipv4" (expected ip, user, route, header:<name>, custom:<name>, or parts joined by +, such as user+route)
configuration: defaults.missing_key: expected "ip" (key the request by its address), "reject" (refuse it with 400) or a status from 400 to 599
configuration: defaults.headers: unknown header style "fancy" (expected legacy, ietf, both or none)
configuration: defaults.reset_format: unknown reset format "hours" (expected "seconds" from now or "unix" time)
configuration: defaults.on_store_error: unknown error mode "explode" (expected "deny" to fail closed, "allow" to fail open or "degraded" to decide locally)
configuration: defaults.denied_status: 200 is out of range (expected a whole number from 400 to 599)
configuration: defaults.shadow: expected true or false, found a string
configuration: defaults.decision_for_handlers: expected true or false, found an integer
configuration: defaults.ipv6_prefix: 129 is out of range (expected a whole number from 1 to 128)
configuration: rules.badwindow.window: invalid duration "soon": each part must start with a whole number (expected e.g. "500ms", "30s", "1m", "1h", "1d" or "1h30m")
configuration: rules.missing.limit: missing (expected a whole number from 1)
configuration: rules.missing.window: missing (expected a duration such as "30s", "1m", "1h" or "1d")
configuration: rules.negative.limit: -5 is out of range (expected a whole number from 1)
configuration: rules.typo.window: missing (expected a duration such as "30s", "1m", "1h" or "1d")
configuration: rules.typo.windw: unknown field `windw` (expected one of: algorithm, limit, window, burst, penalty, wait, waiters, calendar, week_start, shadow, headers); did you mean `window`?
configuration: rules.zero.limit: 0 is out of range (expected a whole number from 1)
configuration: rules.zeroburst.burst: 0 is out of range (expected a whole number from 1)
configuration: tiers.pro.rules[2].rule: give either `rule` (the name of a rule of [rules]) or the rule's own `limit` and `window`, not both
configuration: tiers.pro.rules[3].limit: missing (expected `rule = "<name>"` or the rule's own `limit` and `window`)
configuration: tiers.pro.rules[4].window: invalid duration "30 parsecs": unknown unit (expected e.g. "500ms", "30s", "1m", "1h", "1d" or "1h30m")
configuration: tier_cache.ttl: invalid duration "forever": each part must start with a whole number (expected e.g. "500ms", "30s", "1m", "1h", "1d" or "1h30m")
configuration: lists.refresh: not a duration (expected a number of seconds from 0, or a duration such as "30s", "1m", "1h" or "1d")
configuration: proxies.headers[1]: unknown forwarding header "via" (expected forwarded, x-forwarded-for or x-real-ip)
configuration: proxies.max_hops: 0 is out of range (expected a whole number from 1 to 1000)
configuration: auto_block.denials: -1 is out of range (expected a whole number from 0 to 4294967295)
configuration: auto_block.within: must be above 0
configuration: auto_block.block_for: missing (expected a duration such as "30s", "1m", "1h" or "1d")
configuration: auto_block.blok_for: unknown field `blok_for` (expected one of: denials, within, block_for, max_clients); did you mean `block_for`?
configuration: extra: unknown field `extra` (expected one of: storage, defaults, rules, routes, tiers, tier_cache, exempt, lists, proxies, auto_block, domains, server)
configuration: rules.bad name: invalid rule name "bad name": only printable ASCII without spaces, ':', '{' or '}' is allowed
configuration: rules.burst_on_window.burst: fixed_window counts per window and takes no burst (a burst applies to token_bucket, leaky_bucket and gcra)
configuration: routes[0].rules[1]: no rule named `ghost` (expected one of the rules of [rules]: bad name, badwindow, burst_on_window, missing, negative, ok, small, tiny, typo, zero, zeroburst)
configuration: routes[1].path: invalid path pattern: Parameters must be registered with a valid name (expected a path such as /users/{id} or /files/{*rest})
configuration: routes[2].methods[1]: unknown method "FETCH" (expected one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)
configuration: routes[2].path: duplicate route: routes[0] already limits GET /a
configuration: routes[3].cost: a cost of 3 is more than rule `small` allows at once (its burst is 2): every request would be denied (expected a cost of at most 2, or a larger burst)
configuration: routes[4].rules: no rules (expected the names of one or more rules of [rules])
configuration: defaults.rules[0]: no rule named `nope` (expected one of the rules of [rules]: bad name, badwindow, burst_on_window, missing, negative, ok, small, tiny, typo, zero, zeroburst)
configuration: exempt.paths[1]: invalid path pattern: Catch-all parameters are only allowed at the end of a route (expected a path such as /users/{id} or /files/{*rest})
configuration: lists.allow[0]: invalid address or CIDR block "10.0.0.0/33": expected e.g. 203.0.113.7, 10.0.0.0/8 or fd00::/8
configuration: lists.deny[0]: invalid address or CIDR block "banana": expected e.g. 203.0.113.7, 10.0.0.0/8 or fd00::/8
configuration: proxies.trusted[1]: invalid address or CIDR block "not-an-ip": expected e.g. 203.0.113.7, 10.0.0.0/8 or fd00::/8
configuration: tiers.pro.rules[1].path: duplicate entry: tiers.pro.rules[0] already covers any method on /tasks"#;
    let found = errors(BROKEN);
    for (line, (f, e)) in found.lines().zip(expected.lines()).enumerate() {
        assert_eq!(f, e, "line {line}");
    }
    assert_eq!(found.lines().count(), expected.lines().count(), "{found}");
    let all = Config::parse(BROKEN, Format::Toml).unwrap_err();
    assert!(
        all.to_string()
            .starts_with("invalid configuration (47 problems):\n  configuration: storage.url: ")
    );
}

#[test]
fn the_server_section_reads_with_defaults_and_reports_every_problem() {
    let config = Config::parse("", Format::Toml).unwrap();
    assert_eq!(config.server, crate::ServerConfig::default());
    assert_eq!(config.server.grpc, Some("0.0.0.0:8081".parse().unwrap()));
    assert_eq!(config.server.admin, Some("127.0.0.1:6070".parse().unwrap()));
    let config = Config::parse(
        "[server]\ngrpc = \"127.0.0.1:9000\"\nhttp = \"off\"\nadmin = \"[::1]:7000\"\nshadow_mode = true\non_store_error = \"allow\"\nmax_descriptors = 8\nheaders = true\nwatch = false\ndrain = \"2s\"\n\n[[domains]]\ndomain = \"d\"\non_store_error = \"deny\"\ndescriptors = []\n",
        Format::Toml,
    )
    .unwrap();
    let s = &config.server;
    assert_eq!(s.grpc, Some("127.0.0.1:9000".parse().unwrap()));
    assert_eq!(
        (s.http, s.shadow_mode, s.headers, s.watch),
        (None, true, true, false)
    );
    assert_eq!(s.on_store_error, crate::StoreErrorMode::Allow);
    assert_eq!(
        (s.max_descriptors, s.drain),
        (8, std::time::Duration::from_secs(2))
    );
    assert_eq!(
        config.domains[0].on_store_error,
        Some(crate::StoreErrorMode::Deny)
    );
    let domains =
        crate::domains::Domains::compile(&config.domains, config.defaults.algorithm).unwrap();
    assert_eq!(
        domains.on_store_error("d"),
        Some(crate::StoreErrorMode::Deny)
    );
    assert_eq!(domains.on_store_error("other"), None);
    // The secrets are read, and left out of the Debug form.
    let config = Config::parse(
        "[server]\nadmin_token = \"admin-secret-123\"\nlease_secret = \"a lease secret of 32 chars long!\"\n",
        Format::Toml,
    )
    .unwrap();
    let s = &config.server;
    assert_eq!(
        s.lease_secret.as_deref(),
        Some("a lease secret of 32 chars long!")
    );
    let shown = format!("{s:?} {config:?}");
    assert!(
        !shown.contains("admin-secret") && !shown.contains("lease secret"),
        "{shown}"
    );
    assert!(
        shown.contains("lease_secret: Some(\"<redacted>\")"),
        "{shown}"
    );
    let found = errors(
        "[server]\ngrpc = \"localhost:80\"\nadmin = \"0.0.0.0:6070\"\nadmin_token = \" \"\non_store_error = \"maybe\"\nmax_entries = 0\nport = 1\n\n[[domains]]\ndomain = \"d\"\non_store_error = \"later\"\n",
    );
    assert_eq!(
        found,
        r#"configuration: server.grpc: "localhost:80" is not an address (expected host:port with an IP, e.g. 0.0.0.0:8081, or off)
configuration: server.admin_token: empty (leave it out, or set a secret)
configuration: server.on_store_error: unknown store error mode "maybe" (expected error, allow, deny or degraded)
configuration: server.max_entries: 0 is out of range (expected a whole number from 1 to 10000)
configuration: server.port: unknown field `port` (expected one of: grpc, http, admin, admin_token, lease_secret, shadow_mode, on_store_error, degraded_instances, max_descriptors, max_entries, max_value_bytes, max_request_bytes, max_in_flight, drain, request_timeout, refunds, json_logs, headers, watch, address_key)
configuration: domains[0].on_store_error: unknown store error mode "later" (expected error, allow, deny or degraded)"#
    );
}

#[test]
fn approximate_mode_reads_with_defaults_and_rejects_a_zero_flush() {
    let config = Config::parse("[storage.approximate]\n", Format::Toml).unwrap();
    assert_eq!(
        config.storage.approximate,
        Some(ratekeeper_layers::approximate::Approximate::new(
            ratekeeper_layers::approximate::DEFAULT_APPROXIMATE_FLUSH
        ))
    );
    let config = Config::parse(
        "[storage.approximate]\nflush = \"20ms\"\nmax_keys = 500\ninstances = 3\n",
        Format::Toml,
    )
    .unwrap();
    let a = config.storage.approximate.unwrap();
    assert_eq!(
        (a.flush(), a.max_keys(), a.instances()),
        (std::time::Duration::from_millis(20), 500, 3)
    );
    let e = Config::parse(
        "[storage.approximate]\nflush = \"0s\"\ninstances = 0\nmax = 1\n",
        Format::Toml,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid configuration (3 problems):\n  \
         configuration: storage.approximate.flush: must be above 0\n  \
         configuration: storage.approximate.instances: 0 is out of range (expected a whole number from 1 to 1000000)\n  \
         configuration: storage.approximate.max: unknown field `max` (expected one of: flush, max_keys, instances)"
    );
}

#[test]
fn a_valid_file_reads_into_the_model_with_defaults() {
    let config = Config::parse(
        r#"
[storage]
url = "redis://cache:6379/0"
options = { prefix = "app:", connections = 4 }

[defaults]
key = "user+route"
missing_key = 401
on_store_error = "allow"
rules = ["api"]

[rules.api]
limit = 100
window = "1m"

[rules.burst]
algorithm = "gcra"
limit = 10
window = "1s"
burst = 20
penalty = "5m"

[[routes]]
path = "/upload/{*rest}"
methods = ["post", "PUT"]
rules = ["api", "burst"]
cost = 5
key = "header:X-Api-Key"

[tiers.free]
rules = [{ path = "/api/v1/tasks/task", methods = ["POST"], limit = 1, window = "1h" }]

[tiers.pro]
rules = [{ path = "/api/v1/tasks/task", methods = ["POST"], rule = "api" }]
"#,
        Format::Toml,
    )
    .unwrap();
    assert_eq!(
        config.storage.full_url(),
        "redis://cache:6379/0?connections=4&prefix=app%3A"
    );
    assert!(config.defaults.decision_for_handlers, "on by default");
    assert_eq!(
        config.defaults.key,
        KeySpec::Composite(vec![KeySpec::User, KeySpec::Route])
    );
    assert_eq!(
        config.defaults.missing_key,
        ratekeeper_http::MissingKey::Reject(http::StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        config.defaults.on_store_error,
        ratekeeper_http::ErrorMode::FailOpen
    );
    assert_eq!(
        config.defaults.algorithm,
        ratekeeper_core::Algorithm::SlidingWindowCounter
    );
    assert_eq!(config.rules["burst"].burst, Some(20));
    assert_eq!(
        config.rules["burst"].penalty,
        Some(std::time::Duration::from_secs(300))
    );
    assert_eq!(config.routes[0].methods, ["post", "PUT"]);
    assert_eq!(config.routes[0].cost, 5);
    assert_eq!(
        config.routes[0].key,
        Some(KeySpec::Header("x-api-key".into()))
    );
    assert_eq!(
        config.tiers["free"].rules[0].limit,
        TierLimit::Inline {
            name: None,
            rule: RuleConfig::new(1, std::time::Duration::from_secs(3600)),
        }
    );
    assert_eq!(
        config.tiers["pro"].rules[0].limit,
        TierLimit::Named("api".into())
    );
    assert_eq!(config.tier_cache, TierCacheConfig::default());
    config.check().unwrap();
}

#[test]
fn yaml_and_json_read_the_same() {
    let toml = Config::parse("[rules.api]\nlimit = 5\nwindow = \"30s\"\n", Format::Toml).unwrap();
    let yaml = Config::parse(
        "rules:\n  api:\n    limit: 5\n    window: 30s\n",
        Format::Yaml,
    )
    .unwrap();
    let json = Config::parse(
        r#"{"rules": {"api": {"limit": 5, "window": "30s"}}}"#,
        Format::Json,
    )
    .unwrap();
    assert_eq!(toml, yaml);
    assert_eq!(toml, json);
    assert_eq!(
        errors_in(
            "rules:\n  api:\n    limit: five\n    window: 30s\n",
            Format::Yaml
        ),
        "configuration: rules.api.limit: expected a whole number from 1, found a string"
    );
}

#[test]
fn syntax_errors_name_the_format_and_place() {
    let e = errors("[rules.api\nlimit = 5\n");
    assert!(e.starts_with("configuration: not valid TOML: "), "{e}");
    assert!(e.contains("line 1"), "{e}");
    let e = errors_in("{\"rules\": ", Format::Json);
    assert!(e.starts_with("configuration: not valid JSON: "), "{e}");
    assert_eq!(
        errors("rules = 5"),
        "configuration: rules: expected a table, found an integer"
    );
    assert_eq!(
        errors("[[routes]]\npath = 7\nrules = [\"x\", 3]\n"),
        "configuration: routes[0].path: expected a string, found an integer\n\
         configuration: routes[0].rules[1]: expected a string, found an integer"
    );
}

#[test]
fn durations_accept_the_usual_forms() {
    for (text, secs) in [
        ("\"30s\"", 30),
        ("\"1m\"", 60),
        ("\"1h\"", 3600),
        ("\"1d\"", 86_400),
        ("\"1h30m\"", 5400),
        ("45", 45),
    ] {
        let c = Config::parse(
            &format!("[rules.a]\nlimit = 1\nwindow = {text}\n"),
            Format::Toml,
        )
        .unwrap();
        assert_eq!(
            c.rules["a"].window,
            std::time::Duration::from_secs(secs),
            "{text}"
        );
    }
    assert_eq!(
        errors("[rules.a]\nlimit = 1\nwindow = true\n"),
        "configuration: rules.a.window: expected a duration such as \"30s\", \"1m\", \"1h\" or \"1d\", found a boolean"
    );
    assert_eq!(
        errors("[rules.a]\nlimit = 1\nwindow = \"400d\"\n"),
        "configuration: rules.a.window: the window 400d is out of range (expected between 1us and 366d)"
    );
}

#[test]
fn tier_names_and_rule_names_do_not_clash() {
    assert_eq!(
        errors(
            r#"
[rules.shared]
limit = 5
window = "1m"

[tiers.a]
rules = [
  { path = "/x", name = "shared", limit = 1, window = "1h" },
  { path = "/y", name = "t", limit = 1, window = "1h", algorithm = "gcra" },
]
[tiers.b]
rules = [
  { path = "/y", name = "t", limit = 9, window = "1h", algorithm = "fixed_window" },
  { path = "/z", name = "u", limit = 9, window = "1h" },
]
[tiers.c]
rules = [{ path = "/z", name = "u", limit = 90, window = "1h" }]
"#
        ),
        "configuration: tiers.a.rules[0].name: duplicate rule name `shared`: rules.shared already has it (use `rule = \"shared\"` to refer to it, or another name)\n\
         configuration: tiers.b.rules[0].name: duplicate rule name `t`: tiers.a.rules[1] already uses it with algorithm gcra (entries sharing a name share counters and must use the same algorithm)"
    );
}

#[test]
fn cost_must_fit_in_one_window_for_window_algorithms() {
    assert_eq!(
        errors(
            "[rules.a]\nlimit = 2\nwindow = \"1m\"\n[[routes]]\npath = \"/\"\nrules = [\"a\", \"a\"]\ncost = 3\n"
        ),
        "configuration: routes[0].cost: a cost of 3 is more than rule `a` allows at once (its limit is 2): every request would be denied (expected a cost of at most 2, or a larger limit)\n\
         configuration: routes[0].rules[1]: rule `a` is listed twice"
    );
}

#[test]
fn custom_keys_must_be_registered_by_the_application() {
    let config = Config::parse("[defaults]\nkey = \"custom:tenant+ip\"\n", Format::Toml).unwrap();
    // Without the application (check-config), any name is accepted.
    config.check().unwrap();
    let e = build::compile(&config, &Default::default(), Some(&PolicyCode::new()))
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "invalid configuration: configuration: defaults.key: no key function registered as `tenant` (register it with PolicyCode::key(\"tenant\", …))"
    );
    let code = PolicyCode::new().key("tenant", Arc::new(|_| Some("t".into())));
    assert!(build::compile(&config, &Default::default(), Some(&code)).is_ok());
}

#[test]
fn files_are_found_by_extension() {
    let dir = std::env::temp_dir().join(format!("ratekeeper-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ini = dir.join("limits.ini");
    std::fs::write(&ini, "x").unwrap();
    let e = Loader::file(&ini).env_prefix(None).load().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "invalid configuration: {}: unknown file type (expected a .toml, .yaml, .yml or .json file)",
            ini.display()
        )
    );
    let missing = dir.join("missing.toml");
    let e = Loader::file(&missing).load().unwrap_err().to_string();
    assert!(e.contains("missing.toml: cannot read the file: "), "{e}");
    let yaml = dir.join("limits.yml");
    std::fs::write(&yaml, "rules:\n  api:\n    limit: 0\n    window: 1m\n").unwrap();
    assert_eq!(
        Loader::file(&yaml)
            .env_prefix(None)
            .load()
            .unwrap_err()
            .errors()[0]
            .to_string(),
        format!(
            "{}: rules.api.limit: 0 is out of range (expected a whole number from 1)",
            yaml.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A store registry for the tests: memory URLs only, never opened here.
const TEST_STORES: &[ratekeeper_core::storage::Opener] = &[ratekeeper_core::storage::Opener::new(
    "memory",
    &["memory://", "memory://?max_size=10"],
    test_accepts,
    test_open,
)];

fn test_accepts(url: &str) -> bool {
    url.starts_with("memory://")
}

fn test_open(_: &str) -> ratekeeper_core::Result<Arc<dyn ratekeeper_core::Storage>> {
    Err(ratekeeper_core::Error::new(
        ratekeeper_core::ErrorKind::Other,
        "the configuration tests open no store",
    ))
}

#[test]
fn stores_methods_and_code_built_values_are_checked() {
    let text = "[storage]\nurl = \"postgres://db\"\n[rules.a]\nlimit = 1\nwindow = \"1s\"\n[[routes]]\npath = \"/\"\nmethods = [\"get\", \"GET\"]\nrules = [\"a\"]\n";
    let with_stores = Loader::text(text, Format::Toml)
        .stores(TEST_STORES)
        .load()
        .unwrap_err()
        .errors()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        with_stores,
        "configuration: storage.url: unsupported store URL scheme \"postgres\" (this build opens memory://, memory://?max_size=10)\n\
         configuration: routes[0].methods[1]: method GET is listed twice"
    );
    // Without stores to check against, only the URL's form is checked.
    assert_eq!(
        errors(text),
        "configuration: routes[0].methods[1]: method GET is listed twice"
    );
    for url in ["no scheme", "://x", "1x://y", "a b://c"] {
        assert_eq!(
            errors(&format!("[storage]\nurl = {url:?}\n")),
            "configuration: storage.url: the store URL has no scheme (expected e.g. memory://, sqlite:///var/lib/app/limits.db or redis://host:6379)",
            "{url}"
        );
    }
    // What a store accepts passes, and only the scheme of a bad URL is shown.
    let accepted = Loader::text("[storage]\nurl = \"memory://?max_size=5\"\n", Format::Toml)
        .stores(TEST_STORES)
        .load();
    assert!(accepted.is_ok(), "{accepted:?}");
    let secret = Loader::text("[storage]\nurl = \"redis://:s3cret@h\"\n", Format::Toml)
        .stores(TEST_STORES)
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        secret.contains("scheme \"redis\"") && !secret.contains("s3cret"),
        "{secret}"
    );
    // What a file's reading rules out, code can still set: the same checks.
    let mut config = Config::default();
    config.defaults.denied_status = 200;
    config.defaults.ipv6_prefix = 0;
    config.proxies.max_hops = 0;
    config.lists.refresh = std::time::Duration::ZERO;
    config.mark_changed();
    let found: Vec<String> = config
        .check()
        .unwrap_err()
        .errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found,
        [
            "runtime change: defaults.denied_status: 200 is out of range (expected a whole number from 400 to 599)",
            "runtime change: defaults.ipv6_prefix: 0 is out of range (expected a whole number from 1 to 128)",
            "runtime change: lists.refresh: 0s is too often (expected at least 100ms: each refresh reads the store)",
            "runtime change: proxies.max_hops: 0 is out of range (expected a whole number from 1 to 1000)",
        ]
    );
    assert_eq!(
        ConfigErrors::single("limits.toml", "", "cannot read the file: gone").to_string(),
        "invalid configuration: limits.toml: cannot read the file: gone"
    );
}

/// Fuzzing the reader: documents built from the configuration's own
/// vocabulary (sections, fields, plausible and hostile values), and
/// arbitrary text in each format. Every document is answered, a
/// configuration or its problems, never a panic; an accepted one checks
/// and compiles.
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const SECTIONS: &[&str] = &[
        "storage",
        "defaults",
        "rules.api",
        "rules.login",
        "tier_cache",
        "exempt",
        "lists",
        "proxies",
        "auto_block",
        "tiers.pro",
        "storage.breaker",
        "storage.options",
        "storage.approximate",
    ];

    const FIELDS: &[&str] = &[
        "url",
        "timeout",
        "deny_cache",
        "flush",
        "max_keys",
        "instances",
        "failures",
        "cooldown",
        "algorithm",
        "key",
        "missing_key",
        "headers",
        "reset_format",
        "on_store_error",
        "denied_status",
        "in_flight_status",
        "shadow",
        "decision_for_handlers",
        "ipv6_prefix",
        "rules",
        "limit",
        "window",
        "burst",
        "penalty",
        "wait",
        "waiters",
        "ttl",
        "capacity",
        "paths",
        "allow",
        "deny",
        "runtime",
        "refresh",
        "trusted",
        "max_hops",
        "denials",
        "within",
        "block_for",
        "max_clients",
        "path",
        "methods",
        "cost",
        "rule",
        "name",
    ];

    const WORDS: &[&str] = &[
        "gcra",
        "fixed_window",
        "token_bucket",
        "ip",
        "user+route",
        "header:x-key",
        "custom:tenant",
        "memory://",
        "redis://h",
        "/a/{id}",
        "/files/{*rest}",
        "10.0.0.0/8",
        "::1",
        "deny",
        "allow",
        "api",
        "login",
        "GET",
        "reject",
        "unix",
        "both",
    ];

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (0u64..5_000).prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:?}")),
            any::<bool>().prop_map(|b| b.to_string()),
            "\"[0-9]{1,4}(ms|s|m|h|d)\"",
            proptest::sample::select(WORDS).prop_map(|w| format!("{w:?}")),
            "\"[^\"\\\\\\p{Cc}]{0,12}\"",
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                proptest::collection::vec((proptest::sample::select(FIELDS), inner), 0..4)
                    .prop_map(|v| {
                        let fields: Vec<String> =
                            v.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                        format!("{{ {} }}", fields.join(", "))
                    }),
            ]
        })
    }

    fn document() -> impl Strategy<Value = String> {
        let section = (
            proptest::sample::select(SECTIONS),
            proptest::collection::vec((proptest::sample::select(FIELDS), value()), 0..6),
        );
        let routes = proptest::collection::vec((proptest::sample::select(FIELDS), value()), 0..5);
        (
            proptest::collection::vec(section, 0..6),
            proptest::collection::vec(routes, 0..3),
        )
            .prop_map(|(sections, routes)| {
                let mut text = String::new();
                let mut seen = std::collections::BTreeSet::new();
                for (name, fields) in sections {
                    if !seen.insert(name) {
                        continue;
                    }
                    text.push_str(&format!("[{name}]\n"));
                    let mut keys = std::collections::BTreeSet::new();
                    for (k, v) in fields {
                        if keys.insert(k) {
                            text.push_str(&format!("{k} = {v}\n"));
                        }
                    }
                }
                for fields in routes {
                    text.push_str("[[routes]]\n");
                    let mut keys = std::collections::BTreeSet::new();
                    for (k, v) in fields {
                        if keys.insert(k) {
                            text.push_str(&format!("{k} = {v}\n"));
                        }
                    }
                }
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn documents_of_the_vocabulary_are_answered(text in document()) {
            if let Ok(config) = Config::parse(&text, Format::Toml) {
                prop_assert!(config.check().is_ok(), "accepted but failing its check:\n{text}");
                let built = config.built_rules();
                prop_assert!(built.is_ok(), "accepted but not compiling:\n{text}");
            }
        }

        #[test]
        fn arbitrary_text_is_answered_in_every_format(text in "\\PC{0,200}") {
            for format in [Format::Toml, Format::Yaml, Format::Json] {
                let _ = Config::parse(&text, format);
            }
        }
    }
}

#[test]
fn domains_in_our_own_format_use_the_default_algorithm() {
    let config = Config::parse(
        r#"
        [defaults]
        algorithm = "gcra"

        [[domains]]
        domain = "edge"

        [[domains.descriptors]]
        key = "remote_address"
        rate_limit = { unit = "second", requests_per_unit = 10, burst = 20 }

        [[domains.descriptors]]
        key = "path"
        value = "/login"
        rate_limit = { window = "15m", requests_per_unit = 5, algorithm = "sliding_window_log" }
        "#,
        Format::Toml,
    )
    .unwrap();
    assert_eq!(config.domains.len(), 1);
    let compiled = domains::Domains::compile(&config.domains, config.defaults.algorithm).unwrap();
    let ip = compiled
        .resolve("edge", &[("remote_address", "203.0.113.9")])
        .unwrap();
    let domains::Limit::Rule(rule) = ip.limit() else {
        panic!("{:?}", ip.limit())
    };
    assert_eq!(rule.algorithm(), ratekeeper_core::rule::Algorithm::Gcra);
    assert_eq!(rule.quota().burst(), 20);
}

#[test]
fn domain_problems_name_their_place_in_the_file() {
    assert_eq!(
        errors(
            r#"
            [[domains]]
            domain = "a"
            [[domains.descriptors]]
            key = "k"
            rate_limit = { unit = "second", requests_per_unit = 5, burst = 2 }

            [[domains]]
            domain = "a"
            "#
        ),
        "configuration: domains[0].descriptors[0].rate_limit: sliding_window_counter counts per window and takes no burst (a burst applies to token_bucket, leaky_bucket and gcra)\n\
         configuration: domains[1].domain: a second domain named \"a\""
    );
}

#[test]
fn count_when_reads_a_list_or_a_string_and_needs_exact_counts() {
    let config = Config::parse(
        "[rules.logins]\nlimit = 3\nwindow = \"1h\"\n\
         [[routes]]\npath = \"/login\"\nrules = [\"logins\"]\ncount_when = [\"401\", \"403\"]\n\
         [[routes]]\npath = \"/search\"\nrules = [\"logins\"]\ncount_when = \"!2xx\"\n\
         [tiers.free]\nrules = [{ path = \"/login\", rule = \"logins\", count_when = \"4xx\" }]\n",
        Format::Toml,
    )
    .unwrap();
    let statuses = |text: &str| Some(text.parse::<ratekeeper_http::CountWhen>().unwrap());
    assert_eq!(config.routes[0].count_when, statuses("401,403"));
    assert_eq!(config.routes[1].count_when, statuses("!2xx"));
    assert_eq!(config.tiers["free"].rules[0].count_when, statuses("4xx"));
    assert_eq!(
        errors(
            "[rules.a]\nlimit = 3\nwindow = \"1h\"\n[storage.approximate]\n\
             [[routes]]\npath = \"/login\"\nrules = [\"a\"]\ncount_when = \"401\"\n\
             [[routes]]\npath = \"/other\"\nrules = [\"a\"]\ncount_when = [\"401\", \"2x\"]\n"
        ),
        "configuration: routes[1].count_when: statuses to count \"401,2x\": \"2x\" is neither a status from 100 to 599 nor a class 1xx to 5xx (expected statuses and classes such as \"401\", \"4xx,5xx\" or \"!2xx\")\n\
         configuration: routes[0].count_when: counting only some responses gives costs back exactly, which approximate mode cannot do (expected no [storage.approximate], or no count_when)"
    );
}

#[test]
fn calendar_rules_read_with_their_zone_and_first_day() {
    let config = Config::parse(
        "[rules.monthly]\nalgorithm = \"fixed_window\"\nlimit = 10000\nwindow = \"month\"\ncalendar = \"Europe/Berlin\"\n\
         [rules.weekly]\nalgorithm = \"fixed_window\"\nlimit = 500\nwindow = \"week\"\ncalendar = \"UTC\"\nweek_start = \"sunday\"\n\
         [rules.span]\nlimit = 10\nwindow = \"month\"\n",
        Format::Toml,
    )
    .unwrap();
    let monthly = &config.rules["monthly"];
    assert_eq!(monthly.window, std::time::Duration::from_secs(30 * 86_400));
    assert_eq!(
        monthly.calendar,
        Some(ratekeeper_core::Calendar::new("Europe/Berlin").unwrap())
    );
    assert_eq!(
        config.rules["weekly"]
            .calendar
            .as_ref()
            .map(|c| c.week_start()),
        Some(ratekeeper_core::Weekday::Sunday)
    );
    // Without a calendar, a month is 30 days.
    assert_eq!(config.rules["span"].calendar, None);
    assert_eq!(
        errors(
            "[rules.a]\nalgorithm = \"gcra\"\nlimit = 1\nwindow = \"day\"\ncalendar = \"UTC\"\n\
             [rules.b]\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"2d\"\ncalendar = \"UTC\"\n\
             [rules.c]\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"day\"\ncalendar = \"Mars/Olympus\"\n\
             [rules.d]\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"week\"\nweek_start = \"caturday\"\n"
        ),
        "configuration: rules.c.calendar: unknown time zone \"Mars/Olympus\" (expected \"UTC\" or an IANA name such as \"Europe/Berlin\")\n\
         configuration: rules.d.week_start: unknown day of the week \"caturday\" (expected monday, tuesday, …, sunday)\n\
         configuration: rules.a.calendar: gcra cannot count calendar windows (a calendar applies to fixed_window)\n\
         configuration: rules.b.window: a calendar window is a day, a week, a month or a year, not 2d (expected a quota such as \"10000/month\")"
    );
}

#[test]
fn a_tier_entry_naming_a_rule_leaves_the_rules_settings_to_it() {
    assert_eq!(
        errors(
            "[rules.a]\nlimit = 1\nwindow = \"1m\"\n[tiers.free]\nrules = [{ path = \"/x\", rule = \"a\", shadow = true }]\n"
        ),
        "configuration: tiers.free.rules[0].shadow: `shadow` belongs to the rule: set it in [rules.a] (an entry naming a rule takes path, methods, cost, key and count_when)"
    );
}

#[test]
fn concurrency_rules_are_read_for_routes_and_kept_off_descriptors() {
    let config = Config::parse(
        "[defaults]\nin_flight_status = 503\n\
         [rules.exports]\nalgorithm = \"concurrency\"\nlimit = 2\nwindow = \"10m\"\n\
         [[routes]]\npath = \"/export\"\nrules = [\"exports\"]\n",
        Format::Toml,
    )
    .unwrap();
    assert_eq!(config.defaults.in_flight_status, 503);
    let rules = config.built_rules().unwrap();
    let exports = &rules["exports"];
    assert_eq!(
        exports.algorithm(),
        ratekeeper_core::rule::Algorithm::Concurrency
    );
    assert_eq!(exports.capacity(), 2);
    assert_eq!(
        errors(
            r#"
            [defaults]
            in_flight_status = 200

            [[domains]]
            domain = "d"
            [[domains.descriptors]]
            key = "k"
            rate_limit = { unit = "minute", requests_per_unit = 5, algorithm = "in_flight" }
            "#
        ),
        "configuration: defaults.in_flight_status: 200 is out of range (expected a whole number from 400 to 599)\n\
         configuration: domains[0].descriptors[0].rate_limit: a descriptor limits a rate: `concurrency` needs a release when the request ends, which Envoy's rate-limit API has no call for"
    );
}

#[test]
fn waiting_in_line_is_read_and_checked() {
    let config = Config::parse(
        "[rules.api]\nalgorithm = \"gcra\"\nlimit = 10\nwindow = \"1s\"\nwait = \"1s\"\nwaiters = 5\n\
         [rules.any]\nalgorithm = \"leaky_bucket\"\nlimit = 10\nwindow = \"1s\"\nwait = \"300ms\"\n\
         [rules.slots]\nalgorithm = \"concurrency\"\nlimit = 5\nwindow = \"10m\"\nwait = \"2s\"\nwaiters = 3\n",
        Format::Toml,
    )
    .unwrap();
    let rules = config.built_rules().unwrap();
    let wait = |name: &str| rules[name].wait().map(|w| (w.up_to(), w.waiters()));
    assert_eq!(wait("api"), Some((std::time::Duration::from_secs(1), 5)));
    assert_eq!(
        wait("any"),
        Some((std::time::Duration::from_millis(300), u64::MAX))
    );
    assert_eq!(wait("slots"), Some((std::time::Duration::from_secs(2), 3)));
    let config = Config::parse(
        "[rules.slots]\nalgorithm = \"concurrency\"\nlimit = 5\nwindow = \"10m\"\nwait = \"2s\"\n",
        Format::Toml,
    )
    .unwrap();
    let rules = config.built_rules().unwrap();
    let waiters = rules["slots"].wait().map(|w| w.waiters());
    assert_eq!(waiters, Some(5), "as many waiting as places by default");
    assert_eq!(
        errors(
            r#"
            [rules.tokens]
            algorithm = "token_bucket"
            limit = 10
            window = "1s"
            wait = "1s"

            [rules.short]
            algorithm = "gcra"
            limit = 1
            window = "1m"
            wait = "10s"

            [rules.alone]
            limit = 1
            window = "1m"
            waiters = 3

            [storage.approximate]
            flush = "50ms"

            [rules.local]
            algorithm = "gcra"
            limit = 10
            window = "1s"
            wait = "1s"
            "#
        ),
        "configuration: rules.alone.waiters: waiters wait for their turn up to a bound (expected `wait = \"1s\"` or a duration beside it)\n\
         configuration: rules.local.wait: waiting in line takes each place in the store's one line, which approximate mode does not keep (expected no [storage.approximate], or no wait)\n\
         configuration: rules.short.wait: waiting up to 10s admits no one: the quota lets one unit in every 1m, so wait at least that long\n\
         configuration: rules.tokens.wait: token_bucket cannot make requests wait in line: waiting applies to gcra and leaky_bucket (which admit exactly what token_bucket admits) and to concurrency"
    );
}
