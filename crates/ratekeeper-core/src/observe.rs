//! Metrics, decision events and a status view.
//!
//! **Metrics** go through the [`metrics`](https://docs.rs/metrics) facade
//! when the `metrics` feature is on: install any recorder (Prometheus,
//! StatsD, OpenTelemetry…) before the first request and they appear. Without
//! the feature, or without a recorder, they cost nothing (without the
//! feature) or next to nothing (a facade call that goes nowhere).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `ratelimit_decisions_total` | counter | `rule`, `outcome` (`allowed`, `denied`) | decisions made (peeks not counted); `rule` is the rule that decided |
//! | `ratelimit_store_errors_total` | counter | `kind` ([`ErrorKind::as_str`](crate::ErrorKind::as_str)) | decisions the store could not make |
//! | `ratelimit_store_duration_seconds` | histogram | — | time of each decision that waited for its store (remote stores; the memory store answers without waiting and is not timed) |
//! | `ratelimit_breaker_state` | gauge | — | the circuit breaker: 0 closed, 1 open, 2 half-open |
//! | `ratelimit_breaker_opened_total` | counter | — | times the breaker opened |
//! | `ratelimit_deny_cache_hits_total` | counter | — | denials answered by the deny cache without a store call |
//! | `ratelimit_evictions_total` | counter | `cache` (`memory_store`, `deny_cache`, `tier_cache`) | live entries dropped to stay within a size bound |
//! | `ratelimit_auto_blocks_total` | counter | — | clients put on the deny list by automatic blocking (`ratekeeper-http`'s `AutoBlock`) |
//! | `ratelimit_auto_blocked_clients` | gauge | — | clients blocked automatically now (this instance) |
//! | `ratelimit_approximate_local_decisions_total` | counter | — | decisions approximate mode (`ratekeeper-layers`) answered without the store (added at each flush) |
//! | `ratelimit_approximate_unrecorded_units_total` | counter | — | units approximate mode admitted that no longer fitted when written: measured over-admission |
//!
//! Call [`describe`] once after installing the recorder to give each metric
//! its help text and unit.
//!
//! **Events** go through `tracing`: every decision at `debug` (target
//! `ratekeeper::decision`), a request over its limit at `info` and a store
//! failure at `warn` (target `ratekeeper::http`), breaker changes at `warn`
//! and `info` (target `ratekeeper::guard`).
//!
//! **Status**: [`status`] reads a store's health, kind, key count and guard
//! state at once, for a health or admin endpoint.

use std::time::Duration;

use crate::decision::Decision;
use crate::error::Result;
use crate::storage::{DecideEntry, Storage};

/// Counter: decisions, by `rule` and `outcome`.
pub const DECISIONS: &str = "ratelimit_decisions_total";
/// Counter: failed store calls, by error `kind`.
pub const STORE_ERRORS: &str = "ratelimit_store_errors_total";
/// Histogram: seconds each decision waited for its store.
pub const STORE_DURATION: &str = "ratelimit_store_duration_seconds";
/// Gauge: the circuit breaker's state (0 closed, 1 open, 2 half-open).
pub const BREAKER_STATE: &str = "ratelimit_breaker_state";
/// Counter: times the circuit breaker opened.
pub const BREAKER_OPENED: &str = "ratelimit_breaker_opened_total";
/// Counter: denials answered by the deny cache.
pub const DENY_CACHE_HITS: &str = "ratelimit_deny_cache_hits_total";
/// Counter: live entries evicted to stay within a bound, by `cache`.
pub const EVICTIONS: &str = "ratelimit_evictions_total";
/// Counter: new keys a store refused because it was at its bound and every
/// entry it could drop still denied ([`ErrorKind::Full`](crate::ErrorKind::Full)).
pub const STORE_FULL: &str = "ratelimit_store_full_total";
/// Counter: clients blocked automatically.
pub const AUTO_BLOCKS: &str = "ratelimit_auto_blocks_total";
/// Gauge: clients blocked automatically now.
pub const AUTO_BLOCKED: &str = "ratelimit_auto_blocked_clients";
/// Counter: decisions made on the local store while the shared one failed
/// (the `degraded` store-error mode).
pub const DEGRADED: &str = "ratelimit_degraded_decisions_total";
/// Counter: decisions answered locally by approximate mode (`ratekeeper-layers`).
pub const APPROXIMATE_LOCAL: &str = "ratelimit_approximate_local_decisions_total";
/// Counter: units approximate mode admitted that no longer fitted when
/// written to the store.
pub const APPROXIMATE_UNRECORDED: &str = "ratelimit_approximate_unrecorded_units_total";

/// Gives every metric above its help text and unit in the installed
/// recorder. Does nothing without the `metrics` feature.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(DECISIONS, "Rate-limit decisions, by rule and outcome.");
        describe_counter!(
            STORE_ERRORS,
            "Rate-limit decisions the store could not make, by error kind."
        );
        describe_histogram!(
            STORE_DURATION,
            Unit::Seconds,
            "Time each rate-limit decision waited for its store."
        );
        describe_gauge!(
            BREAKER_STATE,
            "The store's circuit breaker: 0 closed, 1 open, 2 half-open."
        );
        describe_counter!(BREAKER_OPENED, "Times the store's circuit breaker opened.");
        describe_counter!(
            DENY_CACHE_HITS,
            "Denials answered by the local deny cache without a store call."
        );
        describe_counter!(
            EVICTIONS,
            "Live entries evicted to stay within a size bound, by cache."
        );
        describe_counter!(
            STORE_FULL,
            "New keys a store refused: at its bound, with nothing it may drop."
        );
        describe_counter!(AUTO_BLOCKS, "Clients put on the deny list automatically.");
        describe_gauge!(AUTO_BLOCKED, "Clients blocked automatically now.");
        describe_counter!(
            DEGRADED,
            "Decisions made on the local store, with each instance's share of the quota, while the shared store failed."
        );
        describe_counter!(
            APPROXIMATE_LOCAL,
            "Decisions approximate mode answered locally, without the store."
        );
        describe_counter!(
            APPROXIMATE_UNRECORDED,
            "Units approximate mode admitted that no longer fitted in the store: over-admission."
        );
    }
}

/// Counts a decision and logs it at `debug`.
#[inline]
pub(crate) fn decision(entries: &[DecideEntry<'_>], cost: u64, result: &Result<Decision>) {
    match result {
        Ok(d) => decided(entries, cost, d),
        Err(e) => store_error(e),
    }
}

/// Counts and logs the decisions of [`Limiter::check_each`](crate::Limiter::check_each),
/// one per entry, each with its entry's cost. When the request was denied,
/// the entries that would have allowed consumed nothing: they are not
/// counted as admissions.
pub(crate) fn decisions(entries: &[DecideEntry<'_>], result: &Result<Vec<Decision>>) {
    match result {
        Ok(each) => {
            let admitted = entries
                .iter()
                .zip(each)
                .all(|(e, d)| e.cost == 0 || d.is_allowed());
            for (entry, d) in entries.iter().zip(each) {
                if admitted || !d.is_allowed() {
                    decided(std::slice::from_ref(entry), entry.cost, d);
                }
            }
        }
        Err(e) => store_error(e),
    }
}

#[inline]
fn decided(entries: &[DecideEntry<'_>], cost: u64, d: &Decision) {
    tracing::debug!(
        target: "ratekeeper::decision",
        rule = d.rule(),
        key = entries
            .iter()
            .find(|e| e.rule.name() == d.rule())
            .map_or("", |e| e.key),
        cost,
        allowed = d.is_allowed(),
        remaining = d.remaining(),
        retry_after_ms = d.retry_after().map(|w| w.as_millis() as u64),
        "rate-limit decision"
    );
    #[cfg(feature = "metrics")]
    if cost > 0 {
        counters::decision(d.rule(), d.is_allowed());
    }
}

#[inline]
pub(crate) fn store_error(e: &crate::error::Error) {
    let _ = e;
    #[cfg(feature = "metrics")]
    metrics::counter!(STORE_ERRORS, "kind" => e.kind().as_str()).increment(1);
}

/// Measures a decision that waits for its store.
pub(crate) struct Timer {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Timer {
    #[inline]
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    #[inline]
    pub(crate) fn stop(self) {
        #[cfg(feature = "metrics")]
        metrics::histogram!(STORE_DURATION).record(self.started.elapsed().as_secs_f64());
    }
}

/// Counts `n` live entries evicted from `cache` (`memory_store`,
/// `deny_cache`, `tier_cache`, or a store's own name). For stores and caches
/// outside this crate; does nothing without the `metrics` feature.
#[inline]
pub fn evicted(cache: &'static str, n: u64) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        metrics::counter!(EVICTIONS, "cache" => cache).increment(n);
    }
    let _ = (cache, n);
}

/// Counts a new key a store refused because it was at its bound and every
/// entry it could drop still denied ([`ErrorKind::Full`](crate::ErrorKind::Full)).
/// For stores outside this crate; does nothing without the `metrics` feature.
#[inline]
pub fn refused_full() {
    counter(STORE_FULL, 1);
}

/// Adds `n` to the counter `name` (one of this module's names). For the
/// workspace's other crates (the HTTP policy's automatic blocking) and for
/// stores outside it; does nothing without the `metrics` feature.
#[inline]
pub fn counter(name: &'static str, n: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(name).increment(n);
    let _ = (name, n);
}

/// Sets the gauge `name` (one of this module's names) to `value`; does
/// nothing without the `metrics` feature.
#[inline]
pub fn gauge(name: &'static str, value: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(name).set(value);
    let _ = (name, value);
}

/// Decision counters by rule, registered once per rule and outcome (the
/// label value is the rule's name, which would otherwise be copied into a
/// new label on every decision).
#[cfg(feature = "metrics")]
mod counters {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use metrics::Counter;
    use parking_lot::RwLock;
    use smol_str::SmolStr;

    /// Rules with cached counters at most; others register each time.
    const MAX_RULES: usize = 4096;

    type Cache = RwLock<HashMap<SmolStr, [Counter; 2]>>;

    fn cache() -> &'static Cache {
        static CACHE: OnceLock<Cache> = OnceLock::new();
        CACHE.get_or_init(Cache::default)
    }

    fn register(rule: &str) -> [Counter; 2] {
        let label = rule.to_owned();
        [
            metrics::counter!(super::DECISIONS, "rule" => label.clone(), "outcome" => "denied"),
            metrics::counter!(super::DECISIONS, "rule" => label, "outcome" => "allowed"),
        ]
    }

    pub(super) fn decision(rule: &str, allowed: bool) {
        let i = usize::from(allowed);
        if let Some(c) = cache().read().get(rule).and_then(|c| c.get(i)) {
            c.increment(1);
            return;
        }
        let counters = register(rule);
        if let Some(c) = counters.get(i) {
            c.increment(1);
        }
        let mut cache = cache().write();
        if cache.len() < MAX_RULES {
            cache.insert(SmolStr::new(rule), counters);
        }
    }
}

/// A store's health and state, read at once (see [`status`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Status {
    /// The kind of store (`memory`, `sqlite`, `redis`), or `unavailable`
    /// when it did not answer.
    pub backend: String,
    /// Whether the store answered.
    pub healthy: bool,
    /// How long it took to answer.
    pub latency: Duration,
    /// Live keys, when the store counts them.
    pub keys: Option<u64>,
    /// The circuit breaker's state, when there is one (`closed`, `open`,
    /// `half_open`).
    pub breaker: Option<String>,
    /// The error, when the store did not answer.
    pub error: Option<String>,
    /// Everything else the store and its guards report.
    pub details: Vec<(String, String)>,
}

impl Status {
    /// The status as one JSON object.
    pub fn to_json(&self) -> String {
        let text = |s: &str| crate::support::json_string(s);
        let opt = |s: &Option<String>| s.as_deref().map_or_else(|| "null".to_owned(), text);
        let details: Vec<String> = self
            .details
            .iter()
            .map(|(k, v)| format!("{}:{}", text(k), text(v)))
            .collect();
        format!(
            "{{\"backend\":{},\"healthy\":{},\"latency_ms\":{:.3},\"keys\":{},\"breaker\":{},\"error\":{},\"details\":{{{}}}}}",
            text(&self.backend),
            self.healthy,
            self.latency.as_secs_f64() * 1000.0,
            self.keys
                .map_or_else(|| "null".to_owned(), |k| k.to_string()),
            opt(&self.breaker),
            opt(&self.error),
            details.join(",")
        )
    }
}

/// Asks `store` for its [stats](Storage::stats) within `timeout` and tells
/// what it found: whether the store answered and how fast, its kind, its
/// key count, and (for a store behind [layers](crate::layer)) the
/// breaker's state and the layers' counters. Never fails: a store that does
/// not answer, reports its connection `unavailable` (a detail named
/// `connection`), or whose breaker is open is reported unhealthy.
pub async fn status(store: &dyn Storage, timeout: Duration) -> Status {
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(timeout, store.stats()).await;
    let latency = started.elapsed();
    let stats = match answer {
        Ok(Ok(stats)) => stats,
        Ok(Err(e)) => return unhealthy(latency, e.to_string()),
        Err(_) => {
            return unhealthy(
                latency,
                format!("no answer within {}", crate::format_duration(timeout)),
            );
        }
    };
    let find = |name: &str| {
        stats
            .details
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // A guarded store reports its store's failure as `error`; a store that
    // answers its stats without its server (Redis) says so in `connection`.
    let error =
        find("error").or_else(|| find("connection").filter(|c| c.starts_with("unavailable")));
    let breaker = find("breaker");
    Status {
        backend: stats.backend.to_owned(),
        healthy: error.is_none()
            && stats.backend != "unavailable"
            && breaker.as_deref() != Some("open"),
        latency,
        keys: stats.keys,
        breaker,
        error,
        details: stats.details,
    }
}

fn unhealthy(latency: Duration, error: String) -> Status {
    Status {
        backend: "unavailable".to_owned(),
        healthy: false,
        latency,
        keys: None,
        breaker: None,
        error: Some(error),
        details: Vec::new(),
    }
}
