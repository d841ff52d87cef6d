//! Configuration files through the facade: every example file loads and
//! serves (and the example limits file of envoyproxy/ratelimit's format
//! behaves as its comments say), tiers from a file with an application's resolver, runtime changes
//! through the API, and the store that cannot change while running.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ratekeeper::Algorithm;
use ratekeeper::config::domains::{DomainConfig, Domains, Limit, Matched, is_envoy_yaml};
use ratekeeper::config::{
    Config, Format, LivePolicy, Loader, PolicyCode, RuleConfig, StorageConfig, TierLimit,
    TierRuleConfig,
};
use ratekeeper::http::{Identity, Outcome, RequestView, tier_resolver_fn};
use ratekeeper::memory::MemoryStorage;

mod common;

use common::{NONE, admitted};

fn identity(user: &str) -> Identity {
    Identity::new(user)
}

#[tokio::test]
async fn every_example_configuration_loads_and_serves() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config");
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let mut config = Loader::file(&path)
            .env_prefix(None)
            .load()
            .unwrap_or_else(|e| panic!("{e}"));
        // Served here on a memory store (the files name SQLite and Redis
        // deployments); everything else is as written.
        config.storage = StorageConfig::default();
        let code =
            PolicyCode::new().tier_resolver(tier_resolver_fn(|_: Identity| async { Ok(None) }));
        LivePolicy::start(config, Arc::new(MemoryStorage::new()), code)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        loaded.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    loaded.sort();
    assert_eq!(
        loaded,
        [
            "public_api.toml",
            "redis_cluster.toml",
            "reference.toml",
            "saas_tiers.yaml"
        ]
    );
}

/// The example limits file behaves as its comments say.
#[test]
fn the_example_envoy_file_behaves_as_its_comments_say() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/server/envoy.yaml"),
    )
    .unwrap();
    assert!(is_envoy_yaml(&text));
    let file = DomainConfig::from_envoy_yaml(&text, "envoy.yaml").unwrap();
    let d = Domains::compile(&[file], Algorithm::SlidingWindowCounter).unwrap();
    let rule_of = |m: Option<Matched<'_>>| match m.map(|m| m.limit()) {
        Some(Limit::Rule(rule)) => Some((rule.quota().limit(), rule.quota().window())),
        _ => None,
    };
    let limit = |entries: &[(&str, &str)]| d.resolve("edge", entries).map(|m| m.limit().clone());
    let per_address = rule_of(d.resolve("edge", &[("remote_address", "203.0.113.9")])).unwrap();
    assert_eq!((per_address.0, per_address.1), (50, Duration::from_secs(1)));
    let Some(Limit::Rule(rule)) = limit(&[("remote_address", "203.0.113.9"), ("path", "/login")])
    else {
        panic!()
    };
    assert_eq!(rule.algorithm(), Algorithm::SlidingWindowLog);
    assert_eq!(rule.quota().limit(), 5);
    assert_eq!(
        limit(&[("remote_address", "198.51.100.66")]),
        Some(Limit::Deny)
    );
    assert_eq!(limit(&[("path", "/healthz")]), Some(Limit::Unlimited));
    assert_eq!(
        rule_of(d.resolve("edge", &[("path", "/exports/2026.csv")]))
            .unwrap()
            .0,
        10
    );
    assert!(limit(&[("path", "/other")]).is_none());
    let free = d
        .resolve("edge", &[("api_key", "k-1"), ("plan", "free")])
        .unwrap();
    assert!(free.shadow_mode());
    let Some(Limit::Rule(rule)) = limit(&[("api_key", "k-1"), ("plan", "pro")]) else {
        panic!()
    };
    assert_eq!(
        (rule.algorithm(), rule.quota().burst()),
        (Algorithm::Gcra, 600)
    );
    // An API key alone, or with an unknown plan, has no limit.
    assert!(limit(&[("api_key", "k-1")]).is_none());
    assert!(limit(&[("api_key", "k-1"), ("plan", "enterprise")]).is_none());
    assert_eq!(d.limits().len(), 7);
}

/// A store's stats detail `name`.
fn detail(stats: &ratekeeper::StorageStats, name: &str) -> Option<String> {
    stats
        .details
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

#[tokio::test]
async fn one_call_builds_the_stack_from_a_file() {
    let dir = std::env::temp_dir().join(format!("ratekeeper-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("limits.db");
    let file = dir.join("limits.toml");
    std::fs::write(
        &file,
        format!(
            "[storage]\nurl = \"sqlite://{}\"\ntimeout = \"2s\"\ndeny_cache = 100\nbreaker = {{ failures = 3, cooldown = \"1s\" }}\n[defaults]\nrules = [\"api\"]\n[rules.api]\nlimit = 2\nwindow = \"1m\"\n",
            db.display()
        ),
    )
    .unwrap();
    let live = ratekeeper::config::start(&file).await.unwrap();
    let policy = live.policy().current();
    assert_eq!(
        admitted(&policy, 3, "GET", "/", "198.51.100.1", None).await,
        2
    );
    let stats = live.limiter().storage().stats().await.unwrap();
    assert_eq!(stats.backend, "sqlite");
    assert!(db.exists());
    // The file asked for guards: the store is behind them; the first
    // denial filled the deny cache, the next one is answered from it.
    let detail = |name: &str| detail(&stats, name);
    assert_eq!(detail("breaker").as_deref(), Some("closed"));
    assert_eq!(detail("deny_cache_entries").as_deref(), Some("1"));
    assert_eq!(
        admitted(&policy, 1, "GET", "/", "198.51.100.1", None).await,
        0
    );
    let stats = live.limiter().storage().stats().await.unwrap();
    assert!(
        stats
            .details
            .contains(&("deny_cache_hits".to_owned(), "1".to_owned()))
    );

    // The store cannot change while running; the policy stays.
    let mut moved = live.config().await;
    moved.storage.url = "memory://".into();
    let e = live.apply(moved).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "invalid configuration: {}: storage: the store cannot change while running (restart the process to use another store)",
            file.display()
        )
    );
    // A store that cannot be opened is reported against its field.
    std::fs::write(&file, "[storage]\nurl = \"redis+cluster://\"\n").unwrap();
    let e = ratekeeper::config::start(&file).await.unwrap_err();
    assert_eq!(e.errors()[0].path, "storage.url");
    // Cleanup only: the SQLite pool can still be opening a connection (and
    // recreating the log files) while the directory goes.
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn approximate_mode_from_a_file_wraps_the_guarded_store() {
    let dir = std::env::temp_dir().join(format!("ratelimit-approx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("limits.toml");
    std::fs::write(
        &file,
        format!(
            "[storage]\nurl = \"sqlite://{}\"\ntimeout = \"2s\"\n[storage.approximate]\nflush = \"1h\"\n[defaults]\nrules = [\"api\"]\n[rules.api]\nlimit = 10\nwindow = \"1m\"\n",
            dir.join("limits.db").display()
        ),
    )
    .unwrap();
    let live = ratekeeper::config::start(&file).await.unwrap();
    let policy = live.policy().current();
    assert_eq!(
        admitted(&policy, 12, "GET", "/", "198.51.100.1", None).await,
        10
    );
    let stats = live.limiter().storage().stats().await.unwrap();
    let detail = |name: &str| detail(&stats, name);
    // The first request went to the store and gave a budget of 9, spent
    // locally; the 11th went to the store with those 9 and was denied,
    // the 12th was denied locally. The deadline layer is underneath, and
    // no breaker (the file asks for none).
    assert_eq!(detail("approximate_local_decisions").as_deref(), Some("10"));
    assert_eq!(detail("approximate_store_decisions").as_deref(), Some("2"));
    assert_eq!(detail("approximate_flushed_units").as_deref(), Some("9"));
    assert_eq!(detail("deadline_exceeded").as_deref(), Some("0"));
    assert_eq!(detail("breaker"), None);
    // Cleanup only: the SQLite pool can still be opening a connection (and
    // recreating the log files) while the directory goes.
    let _ = std::fs::remove_dir_all(&dir);
}

/// FastAPI-boilerplate's tiers from a file, with the application's resolver (a lookup
/// that counts its calls, standing in for the database).
const TIERS: &str = r#"
[defaults]
rules = ["anonymous"]

[rules.anonymous]
algorithm = "fixed_window"
limit = 3
window = "1m"

[tiers.free]
rules = [{ path = "/api/v1/tasks/task", methods = ["POST"], limit = 1, window = "1h" }]

[tiers.pro]
rules = [{ path = "/api/v1/tasks/task", methods = ["POST"], limit = 10, window = "1h" }]

[tier_cache]
ttl = "1m"
"#;

const TASK: &str = "/api/v1/tasks/task";

async fn tiers_policy(lookups: Arc<AtomicU32>) -> LivePolicy {
    let resolver = tier_resolver_fn(move |who: Identity| {
        lookups.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok(match who.user() {
                "fiona" => Some("free".to_owned()),
                "paul" | "petra" => Some("pro".to_owned()),
                "gina" => Some("gold".to_owned()),
                _ => None,
            })
        }
    });
    LivePolicy::start(
        Config::parse(TIERS, Format::Toml).unwrap(),
        Arc::new(MemoryStorage::new()),
        PolicyCode::new().tier_resolver(resolver),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn tiers_from_a_file_resolve_through_the_application() {
    let lookups = Arc::new(AtomicU32::new(0));
    let live = tiers_policy(lookups.clone()).await;
    let p = live.policy().current();
    let (fiona, paul) = (identity("fiona"), identity("paul"));
    assert_eq!(
        admitted(&p, 3, "POST", TASK, "198.51.100.1", Some(&fiona)).await,
        1
    );
    assert_eq!(
        admitted(&p, 12, "POST", TASK, "198.51.100.2", Some(&paul)).await,
        10
    );
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        2,
        "each user looked up once, then cached"
    );
    // Anonymous: the default rule per IP.
    assert_eq!(admitted(&p, 5, "POST", TASK, "198.51.100.3", None).await, 3);
    // An unknown tier and a path the tier does not cover: the default, per IP.
    let gina = identity("gina");
    assert_eq!(
        admitted(&p, 5, "POST", TASK, "198.51.100.4", Some(&gina)).await,
        3
    );
    assert_eq!(
        admitted(&p, 5, "GET", "/elsewhere", "198.51.100.5", Some(&paul)).await,
        3
    );
}

#[tokio::test]
async fn tier_rules_change_through_the_api() {
    let live = tiers_policy(Arc::new(AtomicU32::new(0))).await;
    let petra = identity("petra");
    let before = live.policy().current();
    assert_eq!(
        admitted(&before, 4, "POST", TASK, "198.51.100.1", Some(&petra)).await,
        4
    );

    // Pro gets a limit on reports; the task entry is replaced by a named one.
    let mut reports = TierRuleConfig::new(
        "/api/v1/reports/{id}",
        TierLimit::Inline {
            name: Some("reports-pro".into()),
            rule: RuleConfig::new(2, std::time::Duration::from_secs(3600)),
        },
    );
    reports.methods = vec!["GET".into()];
    live.set_tier_rule("pro", reports).await.unwrap();
    let p = live.policy().current();
    assert_eq!(
        admitted(
            &p,
            3,
            "GET",
            "/api/v1/reports/7",
            "198.51.100.1",
            Some(&petra)
        )
        .await,
        2
    );
    // The task entry kept its name and algorithm: petra's 4 still count.
    assert_eq!(
        admitted(&p, 10, "POST", TASK, "198.51.100.1", Some(&petra)).await,
        6
    );

    // An invalid change is refused whole; the running policy is untouched.
    let mut broken = TierRuleConfig::new("/api/{", TierLimit::Named("missing".into()));
    broken.cost = 0;
    let e = live.set_tier_rule("pro", broken).await.unwrap_err();
    let listed: Vec<String> = e.errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        listed,
        [
            "runtime change: tiers.pro.rules[2].cost: 0 is out of range (expected a whole number from 1)",
            "runtime change: tiers.pro.rules[2].rule: no rule named `missing` (expected one of the rules of [rules]: anonymous)",
            "runtime change: tiers.pro.rules[2].path: invalid path pattern: Parameters must be registered with a valid name (expected a path such as /users/{id} or /files/{*rest})",
        ]
    );
    assert!(
        Arc::ptr_eq(&p, &live.policy().current()),
        "the old policy keeps serving"
    );

    // Removing the reports entry: the path falls back to the default.
    assert!(
        live.remove_tier_rule("pro", "/api/v1/reports/{id}", &["get"])
            .await
            .unwrap()
    );
    assert!(
        !live
            .remove_tier_rule("pro", "/api/v1/reports/{id}", &["get"])
            .await
            .unwrap()
    );
    let p = live.policy().current();
    assert_eq!(
        admitted(
            &p,
            5,
            "GET",
            "/api/v1/reports/7",
            "198.51.100.9",
            Some(&petra)
        )
        .await,
        3
    );
    assert_eq!(live.config().await.tiers["pro"].rules.len(), 1);
    // Started from a configuration, not a file: nothing to reload.
    assert_eq!(
        live.reload().await.unwrap_err().to_string(),
        "invalid configuration: configuration: this policy was not loaded from a file: there is nothing to reload"
    );
}

#[tokio::test]
async fn custom_keys_and_runtime_lists_come_from_the_application_and_the_store() {
    let config = Config::parse(
        "[defaults]\nkey = \"custom:tenant\"\nrules = [\"api\"]\n[rules.api]\nlimit = 2\nwindow = \"1m\"\n[lists]\nruntime = true\n",
        Format::Toml,
    )
    .unwrap();
    let store: Arc<dyn ratekeeper::Storage> = Arc::new(MemoryStorage::new());
    let e = LivePolicy::start(config.clone(), store.clone(), PolicyCode::new())
        .await
        .unwrap_err();
    assert_eq!(e.errors()[0].path, "defaults.key");
    let code = PolicyCode::new().key(
        "tenant",
        Arc::new(|v| v.identity.map(|i| format!("tenant:{}", i.user()))),
    );
    let live = LivePolicy::start(config, store, code).await.unwrap();
    let p = live.policy().current();
    let acme = identity("acme");
    // Keyed by tenant: two addresses share acme's 2.
    assert_eq!(
        admitted(&p, 1, "GET", "/", "198.51.100.1", Some(&acme)).await,
        1
    );
    assert_eq!(
        admitted(&p, 2, "GET", "/", "198.51.100.2", Some(&acme)).await,
        1
    );
    // The runtime deny list applies to this policy.
    let lists = live.lists().await.unwrap();
    lists
        .add(ratekeeper::http::ListKind::Deny, "198.51.100.7", None)
        .await
        .unwrap();
    let view = RequestView {
        method: "GET",
        path: "/",
        route: None,
        peer: "198.51.100.7".parse().unwrap(),
        headers: &NONE,
        identity: Some(&identity("other")),
    };
    assert!(matches!(
        p.check(&view).await,
        Outcome::Respond {
            status: http::StatusCode::FORBIDDEN,
            ..
        }
    ));
}

/// Reloading on `SIGHUP` needs a runtime to listen on: asked from a thread
/// without one, it says so instead of panicking; inside one, it listens.
#[cfg(unix)]
#[tokio::test]
async fn reloading_on_hangup_outside_a_runtime_is_an_error() {
    let live = LivePolicy::start(
        Config::default(),
        Arc::new(MemoryStorage::new()),
        PolicyCode::new(),
    )
    .await
    .unwrap();
    let outside = live.clone();
    let error = std::thread::spawn(move || outside.reload_on_hangup().map(|_| ()))
        .join()
        .unwrap()
        .unwrap_err();
    assert!(error.to_string().contains("tokio runtime"), "{error}");
    let listener = live.reload_on_hangup().unwrap();
    assert!(!listener.is_finished());
    listener.abort();
}

/// Per-rule settings and the degraded mode from a file: a rule in shadow
/// mode, a rule without headers, and the policy's local store for degraded
/// routes with its instances.
#[tokio::test]
async fn rule_settings_and_degraded_mode_come_from_the_file() {
    let dir = std::env::temp_dir().join(format!("ratekeeper-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("limits.toml");
    std::fs::write(
        &file,
        "[defaults]\nrules = [\"api\", \"trial\", \"global\"]\non_store_error = \"degraded\"\ndegraded_instances = 4\n\
         decision_for_handlers = false\n\
         [rules.api]\nlimit = 2\nwindow = \"1m\"\n\
         [rules.trial]\nlimit = 1\nwindow = \"1m\"\nshadow = true\n\
         [rules.global]\nlimit = 100\nwindow = \"1m\"\nheaders = false\n",
    )
    .unwrap();
    let live = ratekeeper::config::start(&file).await.unwrap();
    let policy = live.policy().current();
    assert_eq!(policy.rule_settings(), (vec!["trial"], vec!["global"]));
    assert_eq!(policy.degraded_instances(), Some(4));
    assert!(!policy.gives_decision_to_handlers());
    // The shadow rule's limit of 1 holds nobody back; the api rule's 2 does.
    assert_eq!(
        admitted(&policy, 3, "GET", "/", "198.51.100.1", None).await,
        2
    );
    // Without the facade's memory store, degraded mode needs one given.
    let config = live.config().await;
    let store: Arc<dyn ratekeeper::Storage> = Arc::new(ratekeeper::memory::MemoryStorage::new());
    let e = LivePolicy::start(config, store, ratekeeper::config::PolicyCode::new())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "defaults.on_store_error: degraded mode decides on a local store, and none is available"
        ),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
