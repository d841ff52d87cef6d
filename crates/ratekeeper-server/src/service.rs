//! What the service decides, whatever the protocol: a domain and its
//! descriptors in, one status per descriptor and an overall code out.
//!
//! Every descriptor of one request is decided in one atomic step of the
//! store (`Limiter::check_each`): if any limit the request is charged on
//! denies, no limit consumes anything. Shadow-mode limits are decided and
//! counted but never deny: when only they deny, the step runs again with
//! them looked at only (cost 0), so that the others are charged.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ratekeeper::config::domains::{Domains, Limit, descriptor_key};
use ratekeeper::config::{ServerConfig, StoreErrorMode};
use ratekeeper::http::{HeaderStyle, ResetFormat, rate_limit_headers, retry_after_header};
use ratekeeper::{Algorithm, Decision, Limiter, Quota, Rule};

/// Envoy's units of time, for limits a request brings along and for the
/// limits reported back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    /// 30 days, as envoyproxy/ratelimit counts it.
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    pub(crate) fn window(self) -> Duration {
        Duration::from_secs(match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        })
    }

    /// The unit whose length is exactly `window`.
    pub(crate) fn of(window: Duration) -> Option<Unit> {
        Self::ALL.into_iter().find(|u| u.window() == window)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Unit> {
        Self::ALL.into_iter().find(|u| u.as_str() == text)
    }
}

/// One request: a domain, its descriptors, and the units it costs.
#[derive(Debug, Default)]
pub(crate) struct Check {
    pub(crate) domain: String,
    pub(crate) descriptors: Vec<Descriptor>,
    /// Units each descriptor costs unless it says otherwise.
    pub(crate) hits: u64,
}

/// One descriptor of a request.
#[derive(Debug, Default)]
pub(crate) struct Descriptor {
    pub(crate) entries: Vec<(String, String)>,
    /// Its own cost; 0 looks without charging.
    pub(crate) hits: Option<u64>,
    /// A limit the caller brings for this descriptor instead of the
    /// configured one.
    pub(crate) limit: Option<(u64, Unit)>,
    /// Units to give back instead of taking (not supported yet).
    pub(crate) negative: bool,
}

/// Why a request gets no answer.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The request is malformed or past a bound.
    Invalid(String),
    /// The store failed and the domain answers errors for that.
    Unavailable(String),
}

/// A limit as reported back.
#[derive(Debug, Clone)]
pub(crate) struct Shown {
    pub(crate) name: String,
    pub(crate) limit: u64,
    pub(crate) window: Duration,
}

/// One descriptor's answer.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    pub(crate) over_limit: bool,
    /// The limit that applied; `None` when none did (no match, unlimited).
    pub(crate) limit: Option<Shown>,
    pub(crate) remaining: u64,
    pub(crate) reset_after: Duration,
    pub(crate) retry_after: Option<Duration>,
    /// Decided in shadow mode and over its limit: reported, not enforced.
    pub(crate) shadow_over_limit: bool,
}

impl Status {
    fn free() -> Self {
        Self {
            over_limit: false,
            limit: None,
            remaining: 0,
            reset_after: Duration::ZERO,
            retry_after: None,
            shadow_over_limit: false,
        }
    }
}

/// A request's answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) over_limit: bool,
    pub(crate) statuses: Vec<Status>,
    /// Response headers, when the service adds them.
    pub(crate) headers: Vec<(String, String)>,
}

/// What one descriptor asks of the store.
enum Plan<'a> {
    /// Nothing applies.
    Free,
    /// Always over its limit (`requests_per_unit: 0`, or a cost that can
    /// never fit).
    Deny { shown: Shown, shadow: bool },
    /// Decided by `rule` on `key` at `cost`.
    Rule {
        rule: Cow<'a, Rule>,
        key: String,
        cost: u64,
        shadow: bool,
        path: &'a str,
    },
}

/// The limits being served: swapped whole on reload.
#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) domains: Domains,
    /// The configuration's named rules, for checks by rule and key.
    pub(crate) rules: std::collections::BTreeMap<String, Rule>,
    pub(crate) server: ServerConfig,
}

/// The service: the limits being served and the limiter on the store.
#[derive(Debug)]
pub(crate) struct Service {
    limits: ArcSwap<Limits>,
    limiter: Limiter,
}

impl Service {
    pub(crate) fn new(limits: Limits, limiter: Limiter) -> Self {
        Self {
            limits: ArcSwap::from_pointee(limits),
            limiter,
        }
    }

    pub(crate) fn limits(&self) -> Arc<Limits> {
        self.limits.load_full()
    }

    pub(crate) fn swap(&self, limits: Limits) {
        self.limits.store(Arc::new(limits));
    }

    pub(crate) fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Checks `check` against the bounds of `server`.
    fn validate(server: &ServerConfig, check: &Check) -> Result<(), Refusal> {
        let invalid = |m: String| Err(Refusal::Invalid(m));
        if check.domain.is_empty() {
            return invalid("the domain is empty".to_owned());
        }
        if check.domain.len() > server.max_value_bytes {
            return invalid(format!(
                "the domain is longer than {} bytes",
                server.max_value_bytes
            ));
        }
        if check.descriptors.is_empty() {
            return invalid("no descriptors".to_owned());
        }
        if check.descriptors.len() > server.max_descriptors {
            return invalid(format!(
                "{} descriptors; at most {} are accepted",
                check.descriptors.len(),
                server.max_descriptors
            ));
        }
        for (i, d) in check.descriptors.iter().enumerate() {
            if d.entries.is_empty() {
                return invalid(format!("descriptors[{i}] has no entries"));
            }
            if d.entries.len() > server.max_entries {
                return invalid(format!(
                    "descriptors[{i}] has {} entries; at most {} are accepted",
                    d.entries.len(),
                    server.max_entries
                ));
            }
            for (j, (k, v)) in d.entries.iter().enumerate() {
                if k.is_empty() {
                    return invalid(format!("descriptors[{i}].entries[{j}].key is empty"));
                }
                if k.len() > server.max_value_bytes || v.len() > server.max_value_bytes {
                    return invalid(format!(
                        "descriptors[{i}].entries[{j}] is longer than {} bytes",
                        server.max_value_bytes
                    ));
                }
            }
            if d.negative {
                return invalid(format!(
                    "descriptors[{i}] asks to give units back (is_negative_hits), which this \
                     service does not do yet"
                ));
            }
            if let Some((0, _)) = d.limit {
                return invalid(format!(
                    "descriptors[{i}].limit.requests_per_unit is 0"
                ));
            }
        }
        Ok(())
    }

    /// Decides `check`.
    pub(crate) async fn decide(&self, check: &Check) -> Result<Answer, Refusal> {
        let limits = self.limits.load();
        Self::validate(&limits.server, check)?;
        let domain = check.domain.as_str();
        let n = check.descriptors.len();
        if !limits.domains.has_domain(domain) {
            return Ok(Answer {
                over_limit: false,
                statuses: vec![Status::free(); n],
                headers: Vec::new(),
            });
        }
        let hits = check.hits.max(1);
        let shadow_all = limits.server.shadow_mode;
        let plans = plan(&limits.domains, check, hits, shadow_all);
        let mut statuses = vec![Status::free(); n];
        // A limit that always denies holds the whole request back: then
        // every other limit is only looked at.
        let denied_up_front = plans
            .iter()
            .any(|p| matches!(p, Plan::Deny { shadow: false, .. }));
        let rules: Vec<(usize, &Rule, &str, u64, bool)> = plans
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Plan::Rule {
                    rule,
                    key,
                    cost,
                    shadow,
                    ..
                } => Some((
                    i,
                    rule.as_ref(),
                    key.as_str(),
                    if denied_up_front { 0 } else { *cost },
                    *shadow,
                )),
                _ => None,
            })
            .collect();
        let mut costs: Vec<u64> = rules.iter().map(|r| r.3).collect();
        let mut shadow_denied = vec![false; rules.len()];
        let mut decisions: Vec<Decision> = Vec::new();
        if !rules.is_empty() {
            // Each round either admits, denies for good, or turns at least
            // one shadow denial into a look: at most one round per rule.
            for _ in 0..=rules.len() {
                let checks: Vec<(&Rule, &str, u64)> = rules
                    .iter()
                    .zip(&costs)
                    .map(|(r, cost)| (r.1, r.2, *cost))
                    .collect();
                decisions = match self.limiter.check_each(&checks).await {
                    Ok(d) => d,
                    Err(e) => {
                        return self.store_failed(&limits, domain, &plans, e);
                    }
                };
                let denying: Vec<usize> = (0..rules.len())
                    .filter(|&k| costs[k] > 0 && !decisions[k].is_allowed())
                    .collect();
                if denying.is_empty() || denying.iter().any(|&k| !rules[k].4) {
                    break;
                }
                for k in denying {
                    shadow_denied[k] = true;
                    costs[k] = 0;
                }
            }
        }
        let mut over_limit = denied_up_front;
        for (k, (i, rule, _, _, shadow)) in rules.iter().enumerate() {
            let d = &decisions[k];
            let denied = !d.is_allowed();
            let status = &mut statuses[*i];
            *status = Status {
                over_limit: denied && !shadow,
                limit: Some(shown(rule)),
                remaining: d.remaining(),
                reset_after: d.reset_after(),
                retry_after: d.retry_after().filter(|_| !shadow),
                shadow_over_limit: shadow_denied[k] || (denied && *shadow),
            };
            if denied && !shadow && costs[k] > 0 {
                over_limit = true;
            }
        }
        for (i, p) in plans.iter().enumerate() {
            if let Plan::Deny { shown, shadow } = p {
                statuses[i] = Status {
                    over_limit: !shadow,
                    limit: Some(shown.clone()),
                    remaining: 0,
                    reset_after: shown.window,
                    retry_after: (!shadow).then_some(shown.window),
                    shadow_over_limit: *shadow,
                };
            }
        }
        observe(domain, &plans, &statuses);
        let headers = if limits.server.headers {
            self.headers(&rules, &decisions, over_limit)
        } else {
            Vec::new()
        };
        Ok(Answer {
            over_limit,
            statuses,
            headers,
        })
    }

    /// `RateLimit-Policy` and `RateLimit` for the most restrictive enforced
    /// limit, and `Retry-After` when the request is denied.
    fn headers(
        &self,
        rules: &[(usize, &Rule, &str, u64, bool)],
        decisions: &[Decision],
        over_limit: bool,
    ) -> Vec<(String, String)> {
        let enforced: Vec<(Decision, Duration)> = rules
            .iter()
            .zip(decisions)
            .filter(|(r, _)| !r.4)
            .map(|(r, d)| (d.clone(), r.1.quota().window()))
            .collect();
        let only: Vec<Decision> = enforced.iter().map(|(d, _)| d.clone()).collect();
        let Some(d) = Decision::most_restrictive(&only) else {
            return Vec::new();
        };
        let window = enforced
            .iter()
            .find(|(e, _)| e == d)
            .map_or(Duration::from_secs(1), |(_, w)| *w);
        let now = self.limiter.clock().now();
        let mut out: Vec<(String, String)> =
            rate_limit_headers(d, window, now, HeaderStyle::Ietf, ResetFormat::Seconds)
                .into_iter()
                .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
        if over_limit
            && let Some(v) = retry_after_header(d)
            && let Ok(v) = v.to_str()
        {
            out.push(("retry-after".to_owned(), v.to_owned()));
        }
        out
    }

    /// The answer when the store failed, by the domain's mode.
    fn store_failed(
        &self,
        limits: &Limits,
        domain: &str,
        plans: &[Plan<'_>],
        error: ratekeeper::Error,
    ) -> Result<Answer, Refusal> {
        let mode = limits
            .domains
            .on_store_error(domain)
            .unwrap_or(limits.server.on_store_error);
        tracing::warn!(
            target: "ratekeeper::server",
            domain,
            mode = ?mode,
            error = %error,
            "the store failed"
        );
        metrics::counter!("ratelimit_server_store_failures_total", "domain" => domain.to_owned())
            .increment(1);
        let deny = match mode {
            StoreErrorMode::Allow => false,
            StoreErrorMode::Deny => true,
            _ => return Err(Refusal::Unavailable(error.to_string())),
        };
        let statuses = plans
            .iter()
            .map(|p| match p {
                Plan::Free => Status::free(),
                Plan::Deny { shown, .. } => Status {
                    over_limit: deny,
                    limit: Some(shown.clone()),
                    ..Status::free()
                },
                Plan::Rule { rule, shadow, .. } => Status {
                    over_limit: deny && !shadow,
                    limit: Some(shown(rule)),
                    ..Status::free()
                },
            })
            .collect();
        Ok(Answer {
            over_limit: deny,
            statuses,
            headers: Vec::new(),
        })
    }
}

/// What each descriptor asks: its limit (or none), key and cost, after
/// `replaces` and limits brought along.
fn plan<'a>(domains: &'a Domains, check: &'a Check, hits: u64, shadow_all: bool) -> Vec<Plan<'a>> {
    let domain = check.domain.as_str();
    let matches: Vec<_> = check
        .descriptors
        .iter()
        .map(|d| {
            if d.limit.is_some() {
                return None;
            }
            let entries: Vec<(&str, &str)> = d
                .entries
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            domains.resolve(domain, &entries)
        })
        .collect();
    let replaced: Vec<&str> = matches
        .iter()
        .flatten()
        .flat_map(|m| m.replaces().iter().map(String::as_str))
        .collect();
    check
        .descriptors
        .iter()
        .zip(matches)
        .map(|(d, m)| {
            let cost = d.hits.unwrap_or(hits);
            if let Some((limit, unit)) = d.limit {
                // A limit brought along: a fixed window per domain and
                // descriptor, as envoyproxy/ratelimit counts it.
                let name = format!("rlo.{limit}.{}", unit.as_str());
                let Ok(quota) = Quota::new(limit, unit.window()) else {
                    return Plan::Free;
                };
                let Ok(rule) = Rule::new(&name, Algorithm::FixedWindow, quota) else {
                    return Plan::Free;
                };
                let entries: Vec<(&str, &str)> = std::iter::once(("", domain))
                    .chain(d.entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .collect();
                return rule_plan(
                    Cow::Owned(rule),
                    descriptor_key(&entries),
                    cost,
                    shadow_all,
                    "limit_override",
                );
            }
            let Some(m) = m else {
                return Plan::Free;
            };
            if m.name().is_some_and(|n| replaced.contains(&n)) {
                return Plan::Free;
            }
            let shadow = shadow_all || m.shadow_mode();
            match m.limit() {
                Limit::Rule(rule) => {
                    rule_plan(Cow::Borrowed(rule), m.key().to_owned(), cost, shadow, m.path())
                }
                Limit::Deny => Plan::Deny {
                    shown: Shown {
                        name: m.path().to_owned(),
                        limit: 0,
                        window: Duration::from_secs(1),
                    },
                    shadow,
                },
                _ => Plan::Free,
            }
        })
        .collect()
}

fn rule_plan<'a>(
    rule: Cow<'a, Rule>,
    key: String,
    cost: u64,
    shadow: bool,
    path: &'a str,
) -> Plan<'a> {
    if cost > rule.capacity() {
        // Never fits: over the limit whatever was counted.
        return Plan::Deny {
            shown: shown(&rule),
            shadow,
        };
    }
    Plan::Rule {
        rule,
        key,
        cost,
        shadow,
        path,
    }
}

fn shown(rule: &Rule) -> Shown {
    Shown {
        name: rule.name().to_owned(),
        limit: rule.quota().limit(),
        window: rule.quota().window(),
    }
}

/// Per-descriptor counters, labelled by the configured path (never by the
/// request's values, whose number a client chooses).
fn observe(domain: &str, plans: &[Plan<'_>], statuses: &[Status]) {
    for (p, s) in plans.iter().zip(statuses) {
        let (path, cost) = match p {
            Plan::Rule { path, cost, .. } => (*path, *cost),
            Plan::Deny { shown, .. } => (shown.name.as_str(), 1),
            Plan::Free => continue,
        };
        let outcome = if s.over_limit {
            "over_limit"
        } else if s.shadow_over_limit {
            "shadow_over_limit"
        } else {
            "ok"
        };
        metrics::counter!(
            "ratelimit_server_descriptors_total",
            "domain" => domain.to_owned(),
            "descriptor" => path.to_owned(),
            "outcome" => outcome,
        )
        .increment(1);
        metrics::counter!(
            "ratelimit_server_hits_total",
            "domain" => domain.to_owned(),
            "descriptor" => path.to_owned(),
        )
        .increment(cost);
        if s.shadow_over_limit {
            tracing::info!(
                target: "ratekeeper::server",
                domain,
                descriptor = path,
                "over its limit in shadow mode: allowed"
            );
        }
    }
}
