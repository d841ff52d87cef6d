//! What the service decides, whatever the protocol: a domain and its
//! descriptors in, one status per descriptor and an overall code out.
//!
//! Every descriptor of one request is decided in one atomic step of the
//! store (`Limiter::check_each`): if any limit the request is charged on
//! denies, no limit consumes anything. Shadow-mode limits are decided and
//! counted but never deny: when only they deny, the step runs again with
//! them looked at only (cost 0), so that the others are charged.
//!
//! One file on purpose: it is the decision in the order it runs
//! (validation, lists, the plan of each descriptor, the limits charged,
//! the store, the statuses, the headers, the store's failure), and reading
//! it in that order is the point. Reports are `service/report.rs`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ratekeeper::config::domains::{Domains, Limit, descriptor_key};
use ratekeeper::config::{ServerConfig, StoreErrorMode};
use ratekeeper::http::{HeaderStyle, ResetFormat, rate_limit_headers, retry_after_header};
use std::net::IpAddr;

use ratekeeper::http::{ListKind, RuntimeLists};
use ratekeeper::kit::LogThrottle;
use ratekeeper::memory::MemoryStorage;
use ratekeeper::{Algorithm, Decision, Limiter, Quota, Rule};
use sha2::Digest as _;

mod report;

pub(crate) use crate::request::{Answer, Check, Descriptor, Refusal, Shown, Status, Unit};

/// One limit a request is decided on, and what it said.
struct Charge<'a> {
    /// The positions in the request of the descriptors it decides.
    at: Vec<usize>,
    rule: &'a Rule,
    key: &'a str,
    cost: u64,
    shadow: bool,
    /// Over its limit in shadow mode, and then only looked at.
    shadow_denied: bool,
    /// Asked for more than the limit ever grants at once.
    too_big: bool,
    decision: Option<Decision>,
}

/// What one descriptor asks of the store.
enum Plan<'a> {
    /// Nothing applies.
    Free,
    /// Always over its limit (`requests_per_unit: 0`); a cost of 0 only
    /// looks.
    Deny {
        shown: Shown,
        shadow: bool,
        cost: u64,
        path: &'a str,
        /// `detailed_metric`: counted per value too.
        detailed: bool,
    },
    /// Decided by `rule` on `key` at `cost`.
    Rule {
        rule: Cow<'a, Rule>,
        key: String,
        cost: u64,
        shadow: bool,
        path: &'a str,
        /// `detailed_metric`: counted per value too.
        detailed: bool,
    },
}

/// The limits being served: swapped whole on reload.
#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) domains: Domains,
    /// `[lists] allow` and `deny`: addresses never limited, always refused.
    pub(crate) allow: Vec<ipnet::IpNet>,
    pub(crate) deny: Vec<ipnet::IpNet>,
    /// The configuration's named rules, for checks by rule and key.
    pub(crate) rules: std::collections::BTreeMap<String, Rule>,
    pub(crate) server: ServerConfig,
}

/// The service: the limits being served and the limiter on the store.
#[derive(Debug)]
pub(crate) struct Service {
    limits: ArcSwap<Limits>,
    limiter: Limiter,
    /// Where domains deciding degraded decide while the store fails: in
    /// memory, on the limiter's clock.
    local: Limiter,
    /// `[lists] runtime`: the lists kept in the store, changed at runtime.
    lists: Option<RuntimeLists>,
    /// Store failures and shadow-mode denials come with every request
    /// while they last: logged once a second.
    store_errors: LogThrottle,
    shadow_denials: LogThrottle,
    /// The entries `detailed_metric` labels have taken, bounded.
    detailed: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Service {
    pub(crate) fn new(limits: Limits, limiter: Limiter, lists: Option<RuntimeLists>) -> Self {
        let clock = Arc::clone(limiter.clock());
        let memory = MemoryStorage::builder().clock(Arc::clone(&clock)).build();
        let local = Limiter::builder(Arc::new(memory))
            .shared_clock(clock)
            .build();
        Self {
            limits: ArcSwap::from_pointee(limits),
            limiter,
            local,
            lists,
            store_errors: LogThrottle::new(Duration::from_secs(1)),
            shadow_denials: LogThrottle::new(Duration::from_secs(1)),
            detailed: std::sync::Mutex::default(),
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

    pub(crate) fn lists(&self) -> Option<&RuntimeLists> {
        self.lists.as_ref()
    }

    /// Decides `checks` on the local store, each rule with one of
    /// `instances`' share of its quota: the degraded store-error mode.
    pub(crate) async fn decide_locally(
        &self,
        checks: &[(&Rule, &str, u64)],
        instances: u64,
    ) -> ratekeeper::Result<Vec<Decision>> {
        let shares: Vec<Rule> = checks
            .iter()
            .map(|(r, _, _)| r.share_of(instances))
            .collect();
        let local: Vec<(&Rule, &str, u64)> = shares
            .iter()
            .zip(checks)
            .map(|(share, (_, key, cost))| (share, *key, *cost))
            .collect();
        let decisions = self.local.check_each(&local).await?;
        metrics::counter!(ratekeeper::observe::DEGRADED).increment(1);
        Ok(decisions)
    }

    /// The store-error mode of `domain` (its own, or the server's).
    fn mode(limits: &Limits, domain: &str) -> StoreErrorMode {
        limits
            .domains
            .on_store_error(domain)
            .unwrap_or(limits.server.on_store_error)
    }

    /// The list a request's client address is on, if any (deny first):
    /// every entry keyed `address_key` whose value is an address.
    fn listed(&self, limits: &Limits, check: &Check) -> Option<ListKind> {
        if limits.allow.is_empty() && limits.deny.is_empty() && self.lists.is_none() {
            return None;
        }
        let key = limits.server.address_key.as_str();
        let mut verdict = None;
        let addresses = check
            .descriptors
            .iter()
            .flat_map(|d| d.entries.iter())
            .filter(|(k, _)| k == key)
            .filter_map(|(_, v)| v.trim().parse::<IpAddr>().ok());
        for ip in addresses {
            let ip = ip.to_canonical();
            let runtime = self.lists.as_ref().and_then(|l| l.verdict(ip));
            if limits.deny.iter().any(|n| n.contains(&ip)) || runtime == Some(ListKind::Deny) {
                return Some(ListKind::Deny);
            }
            if limits.allow.iter().any(|n| n.contains(&ip)) || runtime == Some(ListKind::Allow) {
                verdict = Some(ListKind::Allow);
            }
        }
        verdict
    }

    fn now_us(&self) -> u64 {
        self.limiter.clock().now().as_micros()
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
            if let Some((0, _)) = d.limit {
                return invalid(format!("descriptors[{i}].limit.requests_per_unit is 0"));
            }
        }
        Ok(())
    }

    /// Decides `check`.
    pub(crate) async fn decide(&self, check: &Check) -> Result<Answer, Refusal> {
        if check.descriptors.iter().any(|d| d.negative) {
            return self.decide_with_refunds(check).await;
        }
        let limits = self.limits.load();
        Self::validate(&limits.server, check)?;
        let domain = check.domain.as_str();
        let n = check.descriptors.len();
        if let Some(list) = self.listed(&limits, check) {
            // A listed client: refused, or let through, without counting.
            metrics::counter!("ratelimit_server_listed_total", "list" => list.as_str())
                .increment(1);
            let denied = list == ListKind::Deny;
            return Ok(Answer {
                over_limit: denied,
                statuses: vec![
                    Status {
                        over_limit: denied,
                        ..Status::free()
                    };
                    n
                ],
                headers: Vec::new(),
            });
        }
        if !limits.domains.has_domain(domain) {
            return Ok(Answer {
                over_limit: false,
                statuses: vec![Status::free(); n],
                headers: Vec::new(),
            });
        }
        let hits = check.hits.max(1);
        let shadow_all = limits.server.shadow_mode;
        let plans = plan(&limits.domains, check, hits, shadow_all)?;
        // A limit that always denies, charged, holds the whole request
        // back: then every other limit is only looked at.
        let denied_up_front = plans.iter().any(|p| {
            matches!(
                p,
                Plan::Deny {
                    shadow: false,
                    cost: 1..,
                    ..
                }
            )
        });
        let mut charges: Vec<Charge<'_>> = group(&plans)
            .into_iter()
            .map(|g| Charge {
                cost: if denied_up_front {
                    0
                } else {
                    g.at.iter()
                        .filter_map(|&i| plans.get(i))
                        .map(Plan::cost)
                        .fold(0, u64::saturating_add)
                },
                at: g.at,
                rule: g.rule,
                key: g.key,
                shadow: g.shadow,
                shadow_denied: false,
                too_big: false,
                decision: None,
            })
            .collect();
        // A cost no limit could ever grant is over that limit, whatever was
        // counted; charged (not shadow), it holds the request back too.
        let mut denied_up_front = denied_up_front;
        for c in charges.iter_mut().filter(|c| c.cost > c.rule.capacity()) {
            c.too_big = true;
            if c.shadow {
                c.shadow_denied = true;
            } else {
                denied_up_front = true;
            }
            c.cost = 0;
        }
        if denied_up_front {
            for c in &mut charges {
                c.cost = 0;
            }
        }
        // Each round either admits, denies for good, or turns at least one
        // shadow denial into a look: at most one round per limit, and one.
        // Once the store has failed on a domain deciding degraded, the
        // request's later rounds stay local.
        let mut degraded = false;
        for _ in 0..=charges.len() {
            if charges.is_empty() {
                break;
            }
            let checks: Vec<(&Rule, &str, u64)> =
                charges.iter().map(|c| (c.rule, c.key, c.cost)).collect();
            let instances = limits.server.degraded_instances;
            let decided = if degraded {
                self.decide_locally(&checks, instances).await
            } else {
                self.limiter.check_each(&checks).await
            };
            let decisions = match decided {
                Ok(d) => d,
                Err(e) if is_request_error(&e) => return Err(Refusal::Invalid(e.to_string())),
                Err(e) if !degraded && Self::mode(&limits, domain) == StoreErrorMode::Degraded => {
                    self.failed(domain, StoreErrorMode::Degraded, &e);
                    degraded = true;
                    match self.decide_locally(&checks, instances).await {
                        Ok(d) => d,
                        Err(e) => {
                            return self.store_failed(&limits, domain, &plans, denied_up_front, e);
                        }
                    }
                }
                Err(e) => {
                    return self.store_failed(&limits, domain, &plans, denied_up_front, e);
                }
            };
            for (c, d) in charges.iter_mut().zip(decisions) {
                c.decision = Some(d);
            }
            let denying =
                |c: &Charge<'_>| c.cost > 0 && c.decision.as_ref().is_some_and(|d| !d.is_allowed());
            if !charges.iter().any(denying) || charges.iter().any(|c| denying(c) && !c.shadow) {
                break;
            }
            for c in charges.iter_mut().filter(|c| denying(c)) {
                c.shadow_denied = true;
                c.cost = 0;
            }
        }
        let mut statuses = vec![Status::free(); check.descriptors.len()];
        let mut over_limit = denied_up_front;
        for c in &charges {
            let Some(d) = &c.decision else { continue };
            let denied = !d.is_allowed();
            if denied && !c.shadow && c.cost > 0 {
                over_limit = true;
            }
            let denied = denied || c.too_big;
            for at in &c.at {
                if let Some(status) = statuses.get_mut(*at) {
                    *status = Status {
                        over_limit: denied && !c.shadow,
                        limit: Some(shown(c.rule)),
                        remaining: d.remaining(),
                        reset_after: d.reset_after(),
                        retry_after: d.retry_after().filter(|_| !c.shadow),
                        shadow_over_limit: c.shadow_denied || (denied && c.shadow),
                    };
                }
            }
        }
        for (p, status) in plans.iter().zip(statuses.iter_mut()) {
            if let Plan::Deny { shown, shadow, .. } = p {
                *status = deny_status(shown, *shadow);
            }
        }
        self.observe(domain, check, &plans, &statuses);
        if statuses.iter().any(|s| s.shadow_over_limit) && self.shadow_denials.allow(self.now_us())
        {
            tracing::info!(
                target: "ratekeeper::server",
                domain,
                "over a limit in shadow mode: allowed (logged at most once a second; counted in ratelimit_server_descriptors_total)"
            );
        }
        let headers = if limits.server.headers {
            self.headers(&charges, &plans, over_limit)
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
        charges: &[Charge<'_>],
        plans: &[Plan<'_>],
        over_limit: bool,
    ) -> Vec<(String, String)> {
        let mut enforced: Vec<(Decision, Duration)> = charges
            .iter()
            .filter(|c| !c.shadow)
            .filter_map(|c| Some((c.decision.clone()?, c.rule.quota().window())))
            .collect();
        // A limit that denies every request decides when it applies.
        for p in plans {
            if let Plan::Deny {
                shown,
                shadow: false,
                cost: 1..,
                ..
            } = p
            {
                enforced.push((
                    Decision::deny(&shown.name, 0, 0, shown.window, shown.window),
                    shown.window,
                ));
            }
        }
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

    /// Logs (at most once a second) and counts a store failure on `domain`,
    /// answered by `mode`.
    fn failed(&self, domain: &str, mode: StoreErrorMode, error: &ratekeeper::Error) {
        if self.store_errors.allow(self.now_us()) {
            tracing::warn!(
                target: "ratekeeper::server",
                domain,
                mode = ?mode,
                error = %error,
                "the store failed"
            );
        }
        metrics::counter!("ratelimit_server_store_failures_total", "domain" => domain.to_owned())
            .increment(1);
    }

    /// The answer when the store failed, by the domain's mode. A limit that
    /// denies every request still denies, and shadow-mode limits never do.
    fn store_failed(
        &self,
        limits: &Limits,
        domain: &str,
        plans: &[Plan<'_>],
        denied_up_front: bool,
        error: ratekeeper::Error,
    ) -> Result<Answer, Refusal> {
        let mode = Self::mode(limits, domain);
        self.failed(domain, mode, &error);
        let deny = match mode {
            _ if denied_up_front => false,
            StoreErrorMode::Allow => false,
            StoreErrorMode::Deny => true,
            _ => return Err(Refusal::Unavailable(error.to_string())),
        };
        let statuses: Vec<Status> = plans
            .iter()
            .map(|p| match p {
                Plan::Free => Status::free(),
                Plan::Deny { shown, shadow, .. } => deny_status(shown, *shadow),
                Plan::Rule { rule, shadow, .. } => Status {
                    over_limit: deny && !shadow,
                    limit: Some(shown(rule)),
                    ..Status::free()
                },
            })
            .collect();
        Ok(Answer {
            over_limit: denied_up_front || statuses.iter().any(|s| s.over_limit),
            statuses,
            headers: Vec::new(),
        })
    }
}

/// The status of a limit that denies every request.
fn deny_status(shown: &Shown, shadow: bool) -> Status {
    Status {
        over_limit: !shadow,
        limit: Some(shown.clone()),
        remaining: 0,
        reset_after: shown.window,
        retry_after: (!shadow).then_some(shown.window),
        shadow_over_limit: shadow,
    }
}

/// Errors that are the request's fault, not the store's.
fn is_request_error(e: &ratekeeper::Error) -> bool {
    matches!(
        e.kind(),
        ratekeeper::ErrorKind::InvalidInput | ratekeeper::ErrorKind::CostExceedsCapacity
    )
}

/// The counter key of a descriptor of `domain`: the domain's Cluster hash
/// tag, then the descriptor. Every counter of a domain lives in one Redis
/// Cluster slot, so the descriptors of any request are decided in one
/// script call; a long or brace-holding domain is tagged by a hash of it
/// (the tag stays within the part of a key that bounding keeps).
pub(crate) fn counter_key(domain: &str, descriptor: &str) -> String {
    let mut key = String::with_capacity(domain.len() + descriptor.len() + 1);
    if domain.len() <= 24 && !domain.contains(['{', '}']) {
        key.push_str(domain);
    } else {
        let digest = sha2::Sha256::digest(domain.as_bytes());
        for b in digest.iter().take(8) {
            let _ = write!(key, "{b:02x}");
        }
    }
    key.push('}');
    key.push_str(descriptor);
    key
}

/// What each descriptor asks: its limit (or none), key and cost, after
/// `replaces` and limits brought along.
fn plan<'a>(
    domains: &'a Domains,
    check: &'a Check,
    hits: u64,
    shadow_all: bool,
) -> Result<Vec<Plan<'a>>, Refusal> {
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
        .enumerate()
        .map(|(i, (d, m))| {
            let cost = d.hits.unwrap_or(hits);
            if let Some((limit, unit)) = d.limit {
                // A limit brought along: a fixed window per domain and
                // descriptor, as envoyproxy/ratelimit counts it. Named by
                // its unit only, so that clients cannot name new series.
                let name = format!("rlo.{}", unit.as_str());
                let rule = Quota::new(limit, unit.window())
                    .map_err(|e| e.to_string())
                    .and_then(|q| {
                        Rule::new(&name, Algorithm::FixedWindow, q).map_err(|e| e.to_string())
                    })
                    .map_err(|e| Refusal::Invalid(format!("descriptors[{i}].limit: {e}")))?;
                let entries: Vec<(&str, &str)> = d
                    .entries
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                return Ok(Plan::Rule {
                    rule: Cow::Owned(rule),
                    key: counter_key(domain, &descriptor_key(&entries)),
                    cost,
                    shadow: shadow_all,
                    path: "limit_override",
                    detailed: false,
                });
            }
            let Some(m) = m else {
                return Ok(Plan::Free);
            };
            if m.name().is_some_and(|n| replaced.contains(&n)) {
                return Ok(Plan::Free);
            }
            let shadow = shadow_all || m.shadow_mode();
            Ok(match m.limit() {
                Limit::Rule(rule) => Plan::Rule {
                    rule: Cow::Borrowed(rule),
                    key: counter_key(domain, m.key()),
                    cost,
                    shadow,
                    path: m.path(),
                    detailed: m.detailed_metric(),
                },
                Limit::Deny => Plan::Deny {
                    shown: Shown {
                        name: m.path().to_owned(),
                        limit: 0,
                        window: Duration::from_secs(1),
                    },
                    shadow,
                    cost,
                    path: m.path(),
                    detailed: m.detailed_metric(),
                },
                _ => Plan::Free,
            })
        })
        .collect()
}

impl Plan<'_> {
    /// What the plan charges its limit (nothing where there is none).
    fn cost(&self) -> u64 {
        match self {
            Plan::Rule { cost, .. } => *cost,
            _ => 0,
        }
    }
}

/// One limit and key that descriptors of a request apply to.
struct Group<'p> {
    /// The positions of those descriptors.
    at: Vec<usize>,
    rule: &'p Rule,
    key: &'p str,
    shadow: bool,
}

/// The limits `plans` apply to, each once (two descriptors alike are one
/// limit and key, reported at both places), in the order first met.
fn group<'p>(plans: &'p [Plan<'_>]) -> Vec<Group<'p>> {
    let mut groups: Vec<Group<'p>> = Vec::new();
    // A map: the number of descriptors is the operator's to raise.
    let mut seen: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
    for (at, p) in plans.iter().enumerate() {
        let Plan::Rule {
            rule, key, shadow, ..
        } = p
        else {
            continue;
        };
        let id = (rule.name(), key.as_str());
        match seen.get(&id).and_then(|&i| groups.get_mut(i)) {
            Some(g) => g.at.push(at),
            None => {
                seen.insert(id, groups.len());
                groups.push(Group {
                    at: vec![at],
                    rule: rule.as_ref(),
                    key: key.as_str(),
                    shadow: *shadow,
                });
            }
        }
    }
    groups
}

/// A rule as reported back.
pub(crate) fn shown(rule: &Rule) -> Shown {
    Shown {
        name: rule.name().to_owned(),
        limit: rule.quota().limit(),
        window: rule.quota().window(),
    }
}

/// Per-descriptor counters, labelled by the configured path (never by the
/// request's values, whose number a client chooses).
impl Service {
    /// Counts each descriptor decided: by domain, configured path and
    /// outcome, and for `detailed_metric` descriptors by their entries too,
    /// up to [`MAX_DETAILED`] distinct ones (then `_other_`: clients cannot
    /// grow the series without bound).
    fn observe(&self, domain: &str, check: &Check, plans: &[Plan<'_>], statuses: &[Status]) {
        for (i, (p, s)) in plans.iter().zip(statuses).enumerate() {
            let (path, cost, detailed) = match p {
                Plan::Rule {
                    path,
                    cost,
                    detailed,
                    ..
                }
                | Plan::Deny {
                    path,
                    cost,
                    detailed,
                    ..
                } => (*path, *cost, *detailed),
                Plan::Free => continue,
            };
            let outcome = observe(domain, path, cost, s);
            if detailed && let Some(d) = check.descriptors.get(i) {
                let entries: Vec<(&str, &str)> = d
                    .entries
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let label = self.detailed_label(domain, descriptor_key(&entries));
                metrics::counter!(
                    "ratelimit_server_detailed_total",
                    "domain" => domain.to_owned(),
                    "descriptor" => path.to_owned(),
                    "entries" => label,
                    "outcome" => outcome,
                )
                .increment(1);
            }
        }
    }

    /// `entries` as a label value, if it is one of the first
    /// [`MAX_DETAILED`] seen (per service); `_other_` after.
    fn detailed_label(&self, domain: &str, entries: String) -> String {
        // At most 128 characters: a thousand series of 16 kB values would
        // make the metrics page itself a load.
        let entries = if entries.chars().count() > MAX_DETAILED_CHARS {
            entries.chars().take(MAX_DETAILED_CHARS).collect()
        } else {
            entries
        };
        let seen_key = format!("{domain}\u{0}{entries}");
        let Ok(mut seen) = self.detailed.lock() else {
            return OTHER.to_owned();
        };
        if seen.contains(&seen_key) || seen.len() < MAX_DETAILED {
            seen.insert(seen_key);
            entries
        } else {
            OTHER.to_owned()
        }
    }
}

/// The most distinct entries `detailed_metric` labels take (per service).
const MAX_DETAILED: usize = 1_000;
/// The longest entries label, in characters (longer ones are cut).
const MAX_DETAILED_CHARS: usize = 128;
/// The label of the entries past [`MAX_DETAILED`].
const OTHER: &str = "_other_";

/// Counts one descriptor decided; its outcome label.
fn observe(domain: &str, path: &str, cost: u64, s: &Status) -> &'static str {
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
    outcome
}
