//! `ratekeeper`: what operators do by hand. Check a configuration file, look
//! at or reset a client's state, read a store's stats, change the runtime
//! allow and deny lists every instance applies, and simulate a rule.
//!
//! ```text
//! ratekeeper check-config limits.toml
//! ratekeeper inspect --config limits.toml --rule api ip:203.0.113.9
//! ratekeeper reset --storage redis://cache:6379 --config limits.toml ip:203.0.113.9
//! ratekeeper stats --storage sqlite:///var/lib/app/limits.db
//! ratekeeper deny add 203.0.113.0/24 --ttl 1h --storage redis://cache:6379
//! ratekeeper test-rule --algorithm gcra --limit 5 --window 1s --requests 10 --interval 100ms
//! ```
//!
//! Exit status: 0 on success, 1 when the command failed (an invalid
//! configuration, an unreachable store), 2 on a usage error.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ratekeeper::config::{Config, ConfigErrors, Loader, domains};
use ratekeeper::http::{ListKind, RuntimeLists};
use ratekeeper::kit::RuleState;
use ratekeeper::memory::MemoryStorage;
use ratekeeper::{
    Algorithm, Clock, Decision, Limiter, ManualClock, Quota, Rule, Storage, Timestamp, Wait,
    format_duration, parse_duration,
};

#[derive(Parser)]
#[command(
    name = "ratekeeper",
    version,
    about = "Operate ratekeeper: check configurations, inspect and reset keys, store stats, runtime lists, rule simulations.",
    after_help = after_help()
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file (with RATELIMIT__… environment
    /// overrides), or a limits file of envoyproxy/ratelimit's YAML format;
    /// print every problem and exit 1 if there is any.
    CheckConfig {
        /// The file (.toml, .yaml, .yml or .json; a .yaml file with a
        /// top-level `domain` is read as envoyproxy/ratelimit's format).
        file: String,
        /// Ignore RATELIMIT__… environment variables.
        #[arg(long)]
        no_env: bool,
    },
    /// Show a key's stored state and the decision a request would get now,
    /// without consuming anything.
    Inspect {
        #[command(flatten)]
        target: Target,
        /// The key, as the policy makes it (ip:203.0.113.9, user:alice).
        key: String,
    },
    /// Forget a key's state, so its next request starts afresh.
    Reset {
        #[command(flatten)]
        target: Target,
        /// The key, as the policy makes it.
        key: String,
    },
    /// Show what a store holds and how it is doing.
    Stats {
        #[command(flatten)]
        store: StoreArg,
    },
    /// The runtime allow list: clients never limited, on every instance.
    Allow {
        #[command(subcommand)]
        action: ListAction,
    },
    /// The runtime deny list: clients always refused (403), on every instance.
    Deny {
        #[command(subcommand)]
        action: ListAction,
    },
    /// Fire simulated requests at a rule and print each decision. On
    /// memory:// (the default) time is simulated: no waiting.
    TestRule {
        #[command(flatten)]
        rule: RuleArgs,
        /// How many requests.
        #[arg(long, short = 'n', default_value_t = 10)]
        requests: u32,
        /// Time between requests (e.g. 100ms, 1s).
        #[arg(long, default_value = "0s", value_parser = duration)]
        interval: Duration,
        /// Units each request costs.
        #[arg(long, default_value_t = 1)]
        cost: u64,
        /// For a concurrency rule: how long each admitted request holds its
        /// place before releasing it (default: to the end of the run).
        #[arg(long, value_parser = duration)]
        hold: Option<Duration>,
        /// For gcra and leaky_bucket: a request over the rate waits up to
        /// this long for its turn instead of being denied. For concurrency:
        /// a request finding every place taken waits up to this long for
        /// one to be released (requests come one after another here, so
        /// one that waits delays the next).
        #[arg(long, value_parser = duration)]
        wait: Option<Duration>,
        /// With --wait: the most requests waiting at once (default: as
        /// many as have their turn within the wait).
        #[arg(long, requires = "wait")]
        waiters: Option<u64>,
        /// Run against this store in real time instead (a unique key,
        /// removed afterwards).
        #[arg(long)]
        storage: Option<String>,
    },
}

#[derive(Args)]
struct StoreArg {
    /// The store's URL.
    #[arg(long, short = 's', env = "RATELIMIT__STORAGE__URL")]
    storage: String,
}

/// Which rules and which store: from a configuration file, from flags, or
/// both (flags win).
#[derive(Args)]
struct Target {
    /// The store's URL (default: the configuration's).
    #[arg(long, short = 's')]
    storage: Option<String>,
    /// A configuration file to take the rules (and the store) from.
    #[arg(long, short = 'c')]
    config: Option<String>,
    #[command(flatten)]
    rule: OptionalRule,
}

#[derive(Args)]
struct OptionalRule {
    /// The rule's name (its state is kept under it). With --config and
    /// without --limit: a rule of the file; `reset` without it resets the
    /// key in every rule of the file.
    #[arg(long, short = 'r')]
    rule: Option<String>,
    /// The algorithm, for a rule given by flags.
    #[arg(long, value_parser = algorithm)]
    algorithm: Option<Algorithm>,
    /// Units per window, for a rule given by flags.
    #[arg(long)]
    limit: Option<u64>,
    /// The window (30s, 1m, 1h, 1d), for a rule given by flags.
    #[arg(long, value_parser = duration)]
    window: Option<Duration>,
    /// The burst (token_bucket, leaky_bucket, gcra).
    #[arg(long)]
    burst: Option<u64>,
}

#[derive(Args)]
struct RuleArgs {
    /// The rule's name.
    #[arg(long, short = 'r', default_value = "test")]
    rule: String,
    /// The algorithm.
    #[arg(long, value_parser = algorithm, default_value = "sliding_window_counter")]
    algorithm: Algorithm,
    /// Units per window.
    #[arg(long)]
    limit: u64,
    /// The window (30s, 1m, 1h, 1d).
    #[arg(long, value_parser = duration)]
    window: Duration,
    /// The burst (token_bucket, leaky_bucket, gcra).
    #[arg(long)]
    burst: Option<u64>,
}

#[derive(Subcommand)]
enum ListAction {
    /// Put an address or CIDR block on the list.
    Add {
        /// 203.0.113.7, 10.0.0.0/8, 2001:db8::/32 …
        net: String,
        /// Take it off again after this long (default: until removed).
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Take an address or CIDR block off the list.
    Remove {
        /// As it was added.
        net: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Show the list.
    List {
        #[command(flatten)]
        store: StoreArg,
    },
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn algorithm(text: &str) -> Result<Algorithm, String> {
    text.parse::<Algorithm>().map_err(|e| e.to_string())
}

/// A failure worth one clear message.
type Failure = String;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::CheckConfig { file, no_env } => check_config(&file, no_env),
        Command::Inspect { target, key } => inspect(&target, &key).await,
        Command::Reset { target, key } => reset(&target, &key).await,
        Command::Stats { store } => stats(&store.storage).await,
        Command::Allow { action } => list(ListKind::Allow, action).await,
        Command::Deny { action } => list(ListKind::Deny, action).await,
        Command::TestRule {
            rule,
            requests,
            interval,
            cost,
            hold,
            wait,
            waiters,
            storage,
        } => {
            let wait = wait.map(|up_to| Wait::new(up_to, waiters.unwrap_or(u64::MAX)));
            let run = Run {
                requests,
                interval,
                cost,
                hold,
            };
            test_rule(&rule, wait, run, storage.as_deref()).await
        }
    }
}

/// The help's closing text: the store URLs this build opens, and how keys
/// are written.
fn after_help() -> String {
    format!(
        "Store URLs: {}\n\
         Keys are written as the policy makes them: ip:203.0.113.9, user:alice, \
         header:x-api-key:KEY, or parts joined by | (user:alice|route:/tasks).",
        ratekeeper::storage::Opener::examples_of(ratekeeper::STORES)
    )
}

fn load(file: &str, env: bool) -> Result<Config, ConfigErrors> {
    let loader = Loader::file(file).stores(ratekeeper::STORES);
    if env { loader } else { loader.env_prefix(None) }.load()
}

fn check_config(file: &str, no_env: bool) -> Result<(), Failure> {
    // A file that cannot be read is reported by the loader below.
    if (file.ends_with(".yaml") || file.ends_with(".yml"))
        && let Ok(text) = std::fs::read_to_string(file)
        && domains::is_envoy_yaml(&text)
    {
        return check_envoy_file(file, &text);
    }
    let config = load(file, !no_env).map_err(|e| e.to_string())?;
    let rules = config.built_rules().map_err(|e| e.to_string())?;
    println!(
        "{file}: ok: store {}, {} rules, {} routes, {} tiers",
        ratekeeper::storage::redact_url(&config.storage.url),
        config.rules.len(),
        config.routes.len(),
        config.tiers.len()
    );
    for (name, rule) in &rules {
        println!(
            "  rule {name}: {}{}",
            describe_rule(rule),
            source_note(&config, &format!("rules.{name}"))
        );
    }
    if !config.domains.is_empty() {
        let compiled = domains::Domains::compile(&config.domains, config.defaults.algorithm)
            .map_err(|e| e.to_string())?;
        println!("  {} domains", config.domains.len());
        print_limits(&compiled);
    }
    let d = &config.defaults;
    println!(
        "  defaults: key {}, {} headers, on store error {}, denied status {}{}",
        d.key,
        format!("{:?}", d.headers).to_ascii_lowercase(),
        match d.on_store_error {
            ratekeeper::http::ErrorMode::FailOpen => "allow",
            _ => "deny",
        },
        d.denied_status,
        if d.shadow { ", shadow mode" } else { "" }
    );
    Ok(())
}

/// A file of envoyproxy/ratelimit's format: its domain and every limit.
fn check_envoy_file(file: &str, text: &str) -> Result<(), Failure> {
    let domain = domains::DomainConfig::from_envoy_yaml(text, file).map_err(|e| e.to_string())?;
    let compiled = domains::Domains::compile(std::slice::from_ref(&domain), Algorithm::FixedWindow)
        .map_err(|e| e.to_string())?;
    println!(
        "{file}: ok: envoyproxy/ratelimit format, domain {:?}, {} limits",
        domain.domain,
        compiled.limits().len()
    );
    print_limits(&compiled);
    Ok(())
}

fn print_limits(compiled: &domains::Domains) {
    for m in compiled.limits() {
        let what = match m.limit() {
            domains::Limit::Rule(rule) => describe_rule(rule),
            domains::Limit::Deny => "every request denied".to_owned(),
            _ => "unlimited".to_owned(),
        };
        let shadow = if m.shadow_mode() { ", shadow mode" } else { "" };
        println!("  limit {}: {what}{shadow}", m.path());
    }
}

/// ` (from environment variable …)` when a field did not come from the file.
fn source_note(config: &Config, path: &str) -> String {
    let mut sources: Vec<String> = ["", ".limit", ".window", ".algorithm", ".burst", ".penalty"]
        .iter()
        .map(|f| config.source_of(&format!("{path}{f}")))
        .filter(|s| s.starts_with("environment"))
        .collect();
    sources.dedup();
    if sources.is_empty() {
        String::new()
    } else {
        format!(" (from {})", sources.join(", "))
    }
}

fn describe_rule(rule: &Rule) -> String {
    let q = rule.quota();
    let mut text = format!(
        "{}, {} per {}",
        rule.algorithm(),
        q.limit(),
        format_duration(q.window())
    );
    if rule.algorithm().uses_burst() {
        text.push_str(&format!(", burst {}", q.burst()));
    }
    if let Some(p) = rule.penalty() {
        text.push_str(&format!(", penalty {}", format_duration(p)));
    }
    if let Some(w) = rule.wait() {
        text.push_str(&format!(", waits up to {}", format_duration(w.up_to())));
        if w.waiters() != u64::MAX {
            text.push_str(&format!(" ({} waiters)", w.waiters()));
        }
    }
    text
}

fn open(url: &str) -> Result<Arc<dyn Storage>, Failure> {
    let store =
        ratekeeper::from_url(url).map_err(|e| format!("error: cannot open the store: {e}"))?;
    if url.starts_with("memory:") {
        eprintln!(
            "note: memory:// lives inside one process; this command sees an empty store of its own"
        );
    }
    Ok(store)
}

/// The store and the rules a command works on.
fn resolve(target: &Target) -> Result<(Arc<dyn Storage>, Vec<Rule>), Failure> {
    let config = match &target.config {
        Some(file) => Some(load(file, true).map_err(|e| e.to_string())?),
        None => None,
    };
    let url = match (&target.storage, &config) {
        (Some(url), _) => url.clone(),
        (None, Some(c)) => c.storage.full_url(),
        (None, None) => {
            return Err("error: which store? give --storage URL or --config FILE".to_owned());
        }
    };
    let r = &target.rule;
    let rules = if let Some(limit) = r.limit {
        let (Some(name), Some(window)) = (&r.rule, r.window) else {
            return Err(
                "error: a rule given by flags needs --rule NAME, --limit N and --window DURATION"
                    .to_owned(),
            );
        };
        let algorithm = r
            .algorithm
            .or(config.as_ref().map(|c| c.defaults.algorithm))
            .unwrap_or(Algorithm::SlidingWindowCounter);
        vec![make_rule(name, algorithm, limit, window, r.burst)?]
    } else {
        let Some(config) = &config else {
            return Err("error: which rule? give --config FILE (and --rule NAME), or --rule NAME --limit N --window DURATION".to_owned());
        };
        let mut all: BTreeMap<String, Rule> = config.built_rules().map_err(|e| e.to_string())?;
        match &r.rule {
            Some(name) => match all.remove(name) {
                Some(rule) => vec![rule],
                None => {
                    return Err(format!(
                        "error: {} has no rule named `{name}` (it has: {})",
                        target.config.as_deref().unwrap_or_default(),
                        all.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            },
            None => all.into_values().collect(),
        }
    };
    Ok((open(&url)?, rules))
}

fn make_rule(
    name: &str,
    algorithm: Algorithm,
    limit: u64,
    window: Duration,
    burst: Option<u64>,
) -> Result<Rule, Failure> {
    let quota = Quota::new(limit, window).map_err(|e| format!("error: {e}"))?;
    let quota = match burst {
        Some(b) => quota.with_burst(b).map_err(|e| format!("error: {e}"))?,
        None => quota,
    };
    Rule::new(name, algorithm, quota).map_err(|e| format!("error: {e}"))
}

async fn inspect(target: &Target, key: &str) -> Result<(), Failure> {
    let (store, rules) = resolve(target)?;
    if target.rule.rule.is_none() && rules.len() > 1 {
        return Err(format!(
            "error: which rule? give --rule NAME (one of: {})",
            rules.iter().map(Rule::name).collect::<Vec<_>>().join(", ")
        ));
    }
    let limiter = Limiter::new(store.clone());
    for rule in &rules {
        let state_key = limiter.state_key(rule, key);
        println!("rule {}: {}", rule.name(), describe_rule(rule));
        println!("key {key} (stored as {state_key})");
        match store.get(&state_key).await.map_err(store_error)? {
            None => println!("state: none (never seen, expired or reset)"),
            Some(bytes) => match RuleState::decode(&bytes) {
                Ok(state) => println!("state: {state:?}"),
                Err(e) => println!("state: {e}"),
            },
        }
        let decision = limiter.peek(rule, key).await.map_err(store_error)?;
        println!("now: {}", describe_decision(&decision));
    }
    Ok(())
}

fn store_error(e: ratekeeper::Error) -> Failure {
    format!("error: the store failed: {e}")
}

fn describe_decision(d: &Decision) -> String {
    match d.retry_after() {
        None => format!(
            "allowed, {} of {} left, full again in {}",
            d.remaining(),
            d.limit(),
            format_duration(d.reset_after())
        ),
        Some(wait) => format!(
            "denied, retry in {}, full again in {}",
            format_duration(wait),
            format_duration(d.reset_after())
        ),
    }
}

async fn reset(target: &Target, key: &str) -> Result<(), Failure> {
    let (store, rules) = resolve(target)?;
    let limiter = Limiter::new(store);
    for rule in &rules {
        let had = limiter.reset(rule, key).await.map_err(store_error)?;
        println!(
            "reset {key} for rule {}: {}",
            rule.name(),
            if had {
                "its state was removed"
            } else {
                "nothing was stored"
            }
        );
    }
    Ok(())
}

async fn stats(url: &str) -> Result<(), Failure> {
    let store = open(url)?;
    let s = store.stats().await.map_err(store_error)?;
    println!("store: {}", s.backend);
    let show = |name: &str, v: Option<u64>| {
        if let Some(v) = v {
            println!("{name}: {v}");
        }
    };
    show("keys", s.keys);
    show("evictions", s.evictions);
    show("expirations", s.expirations);
    show("approx_bytes", s.approx_bytes);
    for (name, value) in &s.details {
        println!("{name}: {value}");
    }
    Ok(())
}

async fn list(kind: ListKind, action: ListAction) -> Result<(), Failure> {
    let url = match &action {
        ListAction::Add { store, .. }
        | ListAction::Remove { store, .. }
        | ListAction::List { store } => store.storage.clone(),
    };
    let lists = RuntimeLists::load(open(&url)?)
        .await
        .map_err(|e| format!("error: cannot read the lists: {e}"))?;
    let name = match kind {
        ListKind::Allow => "allow",
        _ => "deny",
    };
    match action {
        ListAction::Add { net, ttl, .. } => {
            lists
                .add(kind, &net, ttl)
                .await
                .map_err(|e| format!("error: {e}"))?;
            match ttl {
                Some(ttl) => println!(
                    "added {net} to the {name} list for {}",
                    format_duration(ttl)
                ),
                None => println!("added {net} to the {name} list"),
            }
        }
        ListAction::Remove { net, .. } => {
            if lists
                .remove(kind, &net)
                .await
                .map_err(|e| format!("error: {e}"))?
            {
                println!("removed {net} from the {name} list");
            } else {
                return Err(format!("error: {net} is not on the {name} list"));
            }
        }
        ListAction::List { .. } => {
            let entries = lists.list(kind).await.map_err(|e| format!("error: {e}"))?;
            let now = Timestamp::from_system_time(std::time::SystemTime::now());
            if entries.is_empty() {
                println!("the {name} list is empty");
            }
            for e in entries {
                match e.expires {
                    Some(at) => println!(
                        "{}  (expires in {})",
                        e.net,
                        format_duration(at.saturating_duration_since(now))
                    ),
                    None => println!("{}", e.net),
                }
            }
        }
    }
    Ok(())
}

/// What `test-rule` fires.
struct Run {
    /// How many requests.
    requests: u32,
    /// Time between them.
    interval: Duration,
    /// Units each costs.
    cost: u64,
    /// On a concurrency rule: how long each holds its place.
    hold: Option<Duration>,
}

/// A clock that remembers how long the limiter slept on it (a request
/// waiting for its turn). Simulated (a manual clock), its sleeps return at
/// once without moving time, so the next requests still arrive at their
/// own times; else it sleeps on the system clock.
#[derive(Debug, Clone)]
struct Recorded {
    clock: Arc<dyn Clock>,
    simulated: bool,
    slept: Arc<std::sync::Mutex<Duration>>,
}

impl Recorded {
    /// The sleeps since the last call, added up.
    fn take_slept(&self) -> Duration {
        self.slept
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

impl Clock for Recorded {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn sleep(&self, duration: Duration) -> ratekeeper::clock::SleepFuture<'_> {
        if let Ok(mut slept) = self.slept.lock() {
            *slept += duration;
        }
        if self.simulated {
            Box::pin(std::future::ready(()))
        } else {
            self.clock.sleep(duration)
        }
    }
}

/// Lets `duration` pass between requests: at once on the simulated
/// `clock`, else in real time.
async fn pass(clock: &ManualClock, simulated: bool, duration: Duration) {
    if simulated {
        clock.advance(duration);
    } else {
        tokio::time::sleep(duration).await;
    }
}

/// `test-rule`: `requests` of `cost` units, `interval` apart; on a
/// concurrency rule each takes a place (a permit), released `hold` after
/// it was admitted; with `wait`, requests over the rate wait in line.
async fn test_rule(
    args: &RuleArgs,
    wait: Option<Wait>,
    run: Run,
    storage: Option<&str>,
) -> Result<(), Failure> {
    let Run {
        requests,
        interval,
        cost,
        hold,
    } = run;
    let rule = make_rule(
        &args.rule,
        args.algorithm,
        args.limit,
        args.window,
        args.burst,
    )?;
    let rule = match wait {
        Some(wait) => rule.with_wait(wait).map_err(|e| format!("error: {e}"))?,
        None => rule,
    };
    println!("rule {}: {}", rule.name(), describe_rule(&rule));
    let clock = ManualClock::new(Timestamp::from_micros(1_700_000_000_000_000));
    let simulated = storage.is_none();
    let recorded = Recorded {
        clock: if simulated {
            Arc::new(clock.clone())
        } else {
            Arc::new(ratekeeper::SystemClock)
        },
        simulated,
        slept: Arc::default(),
    };
    let store = match storage {
        None => Arc::new(
            MemoryStorage::builder()
                .clock(Arc::new(clock.clone()))
                .build(),
        ),
        Some(url) => open(url)?,
    };
    let limiter = Limiter::builder(store).clock(recorded.clone()).build();
    let key = format!("ratekeeper-cli-test:{}", std::process::id());
    let mut allowed = 0;
    let mut elapsed = Duration::ZERO;
    // Places held: when each is released, and its permit.
    let mut held: std::collections::VecDeque<(Duration, ratekeeper::Permit)> =
        std::collections::VecDeque::new();
    for i in 1..=requests {
        if i > 1 && !interval.is_zero() {
            pass(&clock, simulated, interval).await;
            elapsed += interval;
        }
        while held.front().is_some_and(|(at, _)| *at <= elapsed) {
            if let Some((_, permit)) = held.pop_front() {
                permit.release().await.map_err(store_error)?;
            }
        }
        // How long the request waited in line, or for a place.
        let mut waited = Duration::ZERO;
        let d = if rule.algorithm() == Algorithm::Concurrency {
            // Requests come one after another: one waiting for a place is
            // let in when the next place held is released, if that comes
            // within its wait, and the next request comes after it.
            let unlined = rule.without_wait();
            if let Some(wait) = rule.wait() {
                let free = limiter.peek(&unlined, &key).await.map_err(store_error)?;
                let next = held.front().map(|(at, _)| at.saturating_sub(elapsed));
                if let Some(next) =
                    next.filter(|next| free.remaining() < cost && *next <= wait.up_to())
                {
                    pass(&clock, simulated, next).await;
                    elapsed += next;
                    waited = next;
                    if let Some((_, permit)) = held.pop_front() {
                        permit.release().await.map_err(store_error)?;
                    }
                }
            }
            let permit = limiter
                .acquire_each(&[(&unlined, &key, cost)])
                .await
                .map_err(store_error)?;
            let d = permit.decision().clone();
            if permit.is_allowed() {
                held.push_back((
                    elapsed.saturating_add(hold.unwrap_or(Duration::MAX)),
                    permit,
                ));
            }
            d
        } else {
            let d = limiter
                .check_cost(&rule, &key, cost)
                .await
                .map_err(store_error)?;
            waited = recorded.take_slept();
            if !simulated {
                // The next request comes that much later.
                elapsed += waited;
            }
            d
        };
        allowed += u32::from(d.is_allowed());
        let turn = if rule.wait().is_some() && d.is_allowed() && !waited.is_zero() {
            let line = if rule.algorithm() == Algorithm::Concurrency {
                "for a place"
            } else {
                "in line"
            };
            format!(" after waiting {} {line}", format_duration(waited))
        } else {
            String::new()
        };
        println!(
            "#{i:<4} t={:<8} {}{turn}",
            format_duration(elapsed),
            describe_decision(&d)
        );
    }
    println!("{allowed} of {requests} allowed");
    for (_, permit) in held {
        permit.release().await.map_err(store_error)?;
    }
    if !simulated {
        limiter.reset(&rule, &key).await.map_err(store_error)?;
    }
    Ok(())
}
