//! What the example servers (axum, actix-web, rocket) share: their flags and
//! the policy they build from them. Each example includes this file and adds
//! only its framework's glue.
//!
//! ```text
//! --listen 127.0.0.1:8080   address to serve on
//! --storage memory://       any URL ratekeeper::from_url accepts
//! --algorithm gcra          fixed_window, sliding_window_log, sliding_window_counter,
//!                           token_bucket, leaky_bucket, gcra
//! --limit 100 --window 60s  the quota
//! --key ip                  ip, or header:NAME (e.g. header:x-api-key)
//! --headers ietf            legacy, ietf, both or none
//! --trust 10.0.0.0/8,…      trusted reverse proxies (addresses or CIDRs)
//! --client-ip-header x-forwarded-for
//!                           the one header those proxies set: forwarded,
//!                           x-forwarded-for (default) or x-real-ip
//! --on-error deny           what the store failing does: deny (503), allow,
//!                           or degraded (decide in memory, on this
//!                           instance's share of the limit)
//! --degraded-instances 1    how many instances share the limit when degraded
//! --store-timeout 100       a deadline (ms) on every store call, with a
//!                           circuit breaker (5 failures, 250 ms cool-down)
//! --deny-cache 10000        a local cache of up to N denials in front of
//!                           the store (see docs/operations.md)
//! --approximate 50          approximate mode: hot keys counted locally and
//!                           written every MS milliseconds (docs/operations.md)
//! --count-when 401,5xx      count only responses with these statuses
//!                           (classes like 4xx; !2xx: all but success)
//! --concurrency 5           also at most N requests in flight per key (a
//!                           place held until the response has been sent,
//!                           at most --lease long: default 60s)
//! --wait 500                a request over the rate waits up to MS
//!                           milliseconds for its turn instead of being
//!                           denied (gcra and leaky_bucket), and with
//!                           --concurrency, for a place in flight (N waiting
//!                           at most)
//! --config FILE             everything from a configuration file instead
//!                           (examples/config/); reloaded on SIGHUP
//! ```

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ratekeeper::StorageExt as _;
use ratekeeper::approximate::Approximate;
use ratekeeper::http::{
    ClientIpPolicy, CountWhen, ErrorMode, ForwardingHeader, HeaderStyle, HttpPolicy, KeyExtractor,
    KeySource, Limits, ResetFormat, RouteTable, SharedPolicy,
};
use ratekeeper::layer::{Breaker, Deadline, DenyCache};
use ratekeeper::memory::MemoryStorage;
use ratekeeper::{Algorithm, Limiter, Quota, Rule, RuleError, Wait, parse_duration};

/// The example servers' options.
pub(crate) struct Options {
    pub(crate) listen: SocketAddr,
    pub(crate) storage: String,
    pub(crate) algorithm: Algorithm,
    pub(crate) limit: u64,
    pub(crate) window: Duration,
    pub(crate) key: KeySource,
    pub(crate) headers: HeaderStyle,
    pub(crate) trust: Vec<String>,
    pub(crate) client_ip_header: ForwardingHeader,
    pub(crate) config: Option<String>,
    pub(crate) on_error: ErrorMode,
    pub(crate) store_timeout: Option<Duration>,
    pub(crate) deny_cache: usize,
    pub(crate) approximate: Option<Duration>,
    pub(crate) count_when: Option<CountWhen>,
    pub(crate) degraded_instances: u64,
    pub(crate) concurrency: Option<u64>,
    pub(crate) lease: Duration,
    pub(crate) wait: Option<Duration>,
}

/// Reads the flags (see the module docs).
pub(crate) fn parse_args() -> Result<Options, Box<dyn Error>> {
    let mut o = Options {
        listen: "127.0.0.1:8080".parse()?,
        storage: "memory://".to_owned(),
        algorithm: Algorithm::Gcra,
        limit: 100,
        window: Duration::from_secs(60),
        key: KeySource::Ip,
        headers: HeaderStyle::Ietf,
        trust: Vec::new(),
        client_ip_header: ForwardingHeader::XForwardedFor,
        config: None,
        on_error: ErrorMode::FailClosed,
        store_timeout: None,
        deny_cache: 0,
        approximate: None,
        count_when: None,
        degraded_instances: 1,
        concurrency: None,
        lease: Duration::from_secs(60),
        wait: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => o.listen = value()?.parse()?,
            "--storage" => o.storage = value()?,
            "--algorithm" => o.algorithm = value()?.parse()?,
            "--limit" => o.limit = value()?.parse()?,
            "--window" => o.window = parse_duration(&value()?)?,
            "--key" => {
                let v = value()?;
                o.key = match v.split_once(':') {
                    None if v == "ip" => KeySource::Ip,
                    Some(("header", name)) if !name.is_empty() => KeySource::Header(name.into()),
                    _ => return Err(format!("--key is ip or header:NAME, not {v:?}").into()),
                };
            }
            "--headers" => o.headers = value()?.parse()?,
            "--trust" => o.trust = value()?.split(',').map(str::to_owned).collect(),
            "--client-ip-header" => o.client_ip_header = value()?.parse()?,
            "--config" => o.config = Some(value()?),
            "--on-error" => o.on_error = value()?.parse()?,
            "--store-timeout" => {
                o.store_timeout = Some(Duration::from_millis(value()?.parse()?));
            }
            "--deny-cache" => o.deny_cache = value()?.parse()?,
            "--approximate" => {
                o.approximate = Some(Duration::from_millis(value()?.parse()?));
            }
            "--count-when" => o.count_when = Some(value()?.parse()?),
            "--degraded-instances" => o.degraded_instances = value()?.parse()?,
            "--concurrency" => o.concurrency = Some(value()?.parse()?),
            "--lease" => o.lease = parse_duration(&value()?)?,
            "--wait" => o.wait = Some(Duration::from_millis(value()?.parse()?)),
            "--help" | "-h" => {
                println!(
                    "flags: --listen ADDR --storage URL --algorithm NAME --limit N --window DURATION \
                     --key ip|header:NAME --headers legacy|ietf|both|none --trust CIDR,... \
                     --client-ip-header forwarded|x-forwarded-for|x-real-ip --on-error deny|allow|degraded --degraded-instances N --store-timeout MS --deny-cache N --approximate MS --count-when STATUS,... --concurrency N --lease DURATION --wait MS | --config FILE (reloaded on SIGHUP)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other:?} (try --help)").into()),
        }
    }
    Ok(o)
}

/// The policy the flags describe (`/` limited, `/health` exempt), or the
/// one `--config FILE` describes, reloaded on SIGHUP.
pub(crate) async fn policy(o: &Options) -> Result<SharedPolicy, Box<dyn Error>> {
    if let Some(file) = &o.config {
        let live = ratekeeper::config::start(file).await?;
        live.reload_on_hangup()?;
        return Ok(live.policy());
    }
    let mut api = Rule::new("api", o.algorithm, Quota::new(o.limit, o.window)?)?;
    if o.wait.is_some() && o.approximate.is_some() {
        return Err(
            "--wait takes each place in the store's one line, which --approximate \
                    does not keep: give one or the other"
                .into(),
        );
    }
    if let Some(up_to) = o.wait {
        match api.clone().with_wait(Wait::new(up_to, u64::MAX)) {
            Ok(waiting) => api = waiting,
            // The rate's algorithm cannot wait; the places in flight do.
            Err(RuleError::WaitNotSupported(_)) if o.concurrency.is_some() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut rules = vec![api];
    if let Some(n) = o.concurrency {
        let in_flight = Rule::concurrency("in-flight", n, o.lease)?;
        rules.push(match o.wait {
            // As many waiting for a place as there are places.
            Some(up_to) => in_flight.with_wait(Wait::new(up_to, n))?,
            None => in_flight,
        });
    }
    let mut limits = Limits::new(rules);
    if let Some(when) = &o.count_when {
        limits = limits.count_when(when.clone());
    }
    let routes = RouteTable::new().default_limits(limits).exempt("/health")?;
    let keys = KeyExtractor::new(o.key.clone()).proxies(
        ClientIpPolicy::new()
            .trust(&o.trust)?
            .header(o.client_ip_header),
    );
    let mut store = ratekeeper::from_url(&o.storage)?;
    if let Some(deadline) = o.store_timeout {
        store = store
            .layer(Deadline::new(deadline))
            .layer(Breaker::new(5, Duration::from_millis(250)));
    }
    if o.deny_cache > 0 {
        store = store.layer(DenyCache::new(o.deny_cache));
    }
    if let Some(flush) = o.approximate {
        store = store.layer(Approximate::new(flush));
    }
    let mut policy = HttpPolicy::new(Limiter::new(store), routes, keys)
        .headers(o.headers, ResetFormat::Seconds)
        .on_store_error(o.on_error);
    if o.on_error == ErrorMode::Degraded {
        let local = Limiter::new(Arc::new(MemoryStorage::new()));
        policy = policy.degraded(local, o.degraded_instances);
    }
    Ok(policy.into())
}

/// The line a server prints once it listens.
pub(crate) fn describe(o: &Options, addr: SocketAddr) -> String {
    if let Some(file) = &o.config {
        return format!("listening on http://{addr} (configuration {file})");
    }
    format!(
        "listening on http://{addr} ({} {} per {:?}, store {})",
        o.algorithm,
        o.limit,
        o.window,
        // Never a password in a banner or a log.
        ratekeeper::storage::redact_url(&o.storage)
    )
}

/// The body of `GET /`.
pub(crate) const HELLO: &str = r#"{"message":"hello"}"#;

/// `GET /slow?ms=N`: waits N milliseconds (at most 10 s), then answers.
#[allow(dead_code, reason = "the metrics example serves no slow route")]
pub(crate) async fn slow(query: Option<&str>) -> &'static str {
    let ms = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0)
        .min(10_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    r#"{"message":"slow"}"#
}

/// `GET /login`'s answer to a request whose `X-Password` header is
/// `password`: 200 for `good`, 401 otherwise (a stand-in for a real login).
#[allow(dead_code, reason = "the metrics example serves no login")]
pub(crate) fn login(password: Option<&str>) -> (u16, &'static str) {
    if password == Some("good") {
        (200, r#"{"message":"welcome"}"#)
    } else {
        (401, r#"{"error":"wrong password"}"#)
    }
}
