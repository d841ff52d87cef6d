//! The whole HTTP decision, as every adapter uses it: request view in,
//! "proceed with these headers" or "respond with this" out.
//!
//! One file on purpose: it is the request path in the order it runs
//! (exemptions, lists, route, key, tier, decision, outcome), and reading it in
//! that order is the point.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::auto_block::{AutoBlock, AutoBlocker};
use super::count::Settlement;
use super::headers::{HeaderStyle, ResetFormat, ceil_secs, rate_limit_headers, retry_after_secs};
use super::key::{KeyExtractor, KeySource, Keyed, RequestView};
use super::lists::{ListKind, RuntimeLists};
use super::outcome::{ErrorBody, Outcome};
use super::per_rule::{Decided, PerRule, Shown, take};
use super::places::{Places, holds_place, holds_places};
use super::routes::{Applies, ErrorMode, Limits, RouteTable};
use super::tiers::{Known, Tiers};
use http::header::RETRY_AFTER;
use http::{HeaderName, HeaderValue, StatusCode};
use ratekeeper_core::Decision;
use ratekeeper_core::Limiter;
use ratekeeper_core::clock::{Clock, Timestamp, duration_to_micros};
use ratekeeper_core::rule::Rule;
use ratekeeper_core::storage::Adjustment;
use ratekeeper_core::{Error, ErrorKind, Result};
use smol_str::SmolStr;

/// Called with every request that is (or, in shadow mode, would be) denied.
pub type BlockedHook = Arc<dyn Fn(&RequestView<'_>, &Decision) + Send + Sync>;
/// Called with every store failure, whatever the error mode does with it.
pub type ErrorHook = Arc<dyn Fn(&RequestView<'_>, &Error) + Send + Sync>;

/// What the policy decided for a request it lets through, for its handler:
/// the decision, and a way to charge more units to the same rules and key
/// (for costs known only once the work is done, such as a response's size).
/// Adapters put it where handlers can read it (axum: a request extension).
#[derive(Clone)]
pub struct Admission {
    decision: Decision,
    limiter: Limiter,
    rules: Arc<[Rule]>,
    key: SmolStr,
    settlement: Option<Settlement>,
    places: Option<Places>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("decision", &self.decision)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Admission {
    fn eq(&self, other: &Self) -> bool {
        self.decision == other.decision && self.key == other.key && self.rules == other.rules
    }
}

impl Eq for Admission {}

impl Admission {
    /// The decision that let the request through (in shadow mode, possibly a
    /// denial that was not enforced).
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The key the request was limited by.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Charges `cost` more units to the request's rules and key, all or
    /// nothing like any decision. If they do not fit, nothing is charged and
    /// the denial comes back: the handler decides what to do (say, refuse to
    /// send a response that large); later requests are limited as usual.
    /// The route's concurrency rules are left alone (the request holds its
    /// places already): a route with no rate rule is an
    /// [`ErrorKind::InvalidInput`] error. A charge never waits in line:
    /// rules with a line are charged as without it.
    pub async fn charge(&self, cost: u64) -> Result<Decision> {
        self.rate_rules()?;
        let unlined = crate::per_rule::unlined(&self.rules, |_| true);
        let rules = unlined.as_deref().unwrap_or(&self.rules);
        self.limiter.check_rules(rules, &self.key, cost).await
    }

    /// An error when the route has no rate rule to charge or refund.
    fn rate_rules(&self) -> Result<()> {
        if self.rules.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "this route has no rate rule in force (only places in flight, or rules in shadow \
                 mode): nothing to charge or refund",
            ));
        }
        Ok(())
    }

    /// Gives `units` back to the request's rules and key (the work cost
    /// less than the route charged, or was not done): the newest units of
    /// each rule, as [`Limiter::refund`] does, never more than were taken.
    /// Returns what a request would get now (the most restrictive rule's
    /// decision). Concurrency rules are left alone, as by
    /// [`charge`](Self::charge), and so are rules whose requests
    /// [wait in line](ratekeeper_core::Rule::with_wait), which take no
    /// refund: a route with no other rate rule is an error.
    pub async fn refund(&self, units: u64) -> Result<Decision> {
        self.rate_rules()?;
        let refund = Adjustment::Refund {
            units,
            taken_at: None,
        };
        let changes: Vec<_> = self
            .rules
            .iter()
            .filter(|rule| rule.takes_refunds())
            .map(|rule| (rule, self.key.as_str(), refund))
            .collect();
        if changes.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "this route's rate rules make requests wait in line, and take no refund",
            ));
        }
        let decisions = self.limiter.adjust(&changes).await?;
        Decision::most_restrictive(&decisions)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::Other, "the store answered no decision"))
    }

    /// On a route that counts only some responses
    /// ([`Limits::count_when`]), what settles the request once its response
    /// is known: adapters call [`Settlement::finish`] with the response's
    /// status. `None` elsewhere (the request counted when it arrived).
    pub fn settlement(&self) -> Option<&Settlement> {
        self.settlement.as_ref()
    }

    /// On a route with concurrency rules, the places in flight the request
    /// holds: adapters keep them with the response body until it has been
    /// sent, so they come back when the response ends (or is dropped: the
    /// client went away, the handler failed). `None` elsewhere.
    pub fn places(&self) -> Option<&Places> {
        self.places.as_ref()
    }

    /// What follows the handler: its [`settlement`](Self::settlement) and
    /// its [`places`](Self::places), for adapters that keep them apart from
    /// the admission (which goes to the handler).
    pub fn followup(&self) -> Followup {
        Followup {
            settlement: self.settlement.clone(),
            places: self.places.clone(),
        }
    }
}

/// What an adapter does once the handler of an admitted request has
/// answered ([`Admission::followup`]): settle the request by its response's
/// status ([`settle`](Self::settle)), then keep its places with the
/// response body ([`into_places`](Self::into_places)). The default, for a
/// request admitted without an admission, does nothing.
#[derive(Debug, Default)]
pub struct Followup {
    settlement: Option<Settlement>,
    places: Option<Places>,
}

impl Followup {
    /// Whether there is nothing to do: the adapter can pass the handler's
    /// response on as it is.
    pub fn is_empty(&self) -> bool {
        self.settlement.is_none() && self.places.is_none()
    }

    /// On a route counting only some responses, settles the request by its
    /// response's `status` ([`Settlement::finish`]).
    pub async fn settle(&self, status: StatusCode) {
        if let Some(settlement) = &self.settlement {
            settlement.finish(status).await;
        }
    }

    /// The places to keep with the response body until it has been sent.
    pub fn into_places(self) -> Option<Places> {
        self.places
    }
}

/// The framework-free HTTP rate-limiting policy: what applies to a request,
/// its key, the decision, and the response. Cheap to clone.
#[derive(Clone)]
pub struct HttpPolicy {
    limiter: Limiter,
    routes: Arc<RouteTable>,
    keys: Arc<KeyExtractor>,
    answers: Answers,
    on_store_error: ErrorMode,
    shadow: bool,
    on_blocked: Option<BlockedHook>,
    on_error: Option<ErrorHook>,
    tiers: Option<Arc<Tiers>>,
    lists: Option<RuntimeLists>,
    auto_block: Option<Arc<AutoBlocker>>,
    degraded: Option<Degraded>,
    /// Rules in shadow mode and rules without headers, by name.
    per_rule: Option<Arc<PerRule>>,
    reads_route: bool,
    /// Whether a request let through carries its [`Admission`] for its
    /// handler (routes that count by response or hold places always do).
    for_handlers: bool,
    /// Whether the route table and the key make every request the same
    /// plan: one rule of the table's default limits, keyed by the client
    /// address ([`HttpPolicy::direct`]). Fixed when the policy is made
    /// (no other method changes the table or the key).
    by_ip_alone: bool,
}

/// Where [`ErrorMode::Degraded`] decides: a local limiter, and how many
/// instances share each rule's quota.
#[derive(Clone)]
struct Degraded {
    limiter: Limiter,
    instances: u64,
}

impl fmt::Debug for HttpPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPolicy")
            .field("routes", &self.routes)
            .field("keys", &self.keys)
            .field("answers", &self.answers)
            .field("on_store_error", &self.on_store_error)
            .field("shadow", &self.shadow)
            .finish_non_exhaustive()
    }
}

/// The policy's work before the decision.
enum Begun<'p> {
    /// Decided without the store.
    Done(Outcome),
    /// These limits apply to this key.
    Decide(Target<'p>),
    /// The caller's tier must be resolved first; what was found so far.
    ResolveTier(Pending<'p>),
}

/// What a request waiting for its tier has found already: the route table's
/// limits (used when the tier does not cover the request) and the client.
struct Pending<'p> {
    table: Option<&'p Limits>,
    client: IpAddr,
}

/// What a request is decided against: the limits, its key, and the client
/// address (found once, for the lists, the key and automatic blocking).
struct Target<'p> {
    limits: &'p Limits,
    key: SmolStr,
    client: IpAddr,
}

fn unlimited() -> Outcome {
    Outcome::Proceed {
        headers: Vec::new(),
        admission: None,
    }
}

impl HttpPolicy {
    /// A policy deciding with `limiter`, applying `routes`, keying requests
    /// with `keys`; IETF headers, 429 on denial, fail closed, not in shadow mode.
    pub fn new(limiter: Limiter, routes: RouteTable, keys: KeyExtractor) -> Self {
        let reads_route = keys.source().reads_route()
            || routes.has_exempt_predicate()
            || routes
                .all_limits()
                .any(|l| l.key.as_ref().is_some_and(KeySource::reads_route));
        let by_ip_alone = matches!(keys.source(), KeySource::Ip)
            && routes.only_default().is_some_and(|limits| {
                limits.rules.len() == 1
                    && limits.count_when.is_none()
                    && !holds_places(&limits.rules)
                    && limits
                        .key
                        .as_ref()
                        .is_none_or(|k| matches!(k, KeySource::Ip))
            });
        Self {
            by_ip_alone,
            reads_route,
            limiter,
            routes: Arc::new(routes),
            keys: Arc::new(keys),
            answers: Answers {
                style: HeaderStyle::default(),
                reset: ResetFormat::default(),
                denied_status: StatusCode::TOO_MANY_REQUESTS,
                in_flight_status: StatusCode::TOO_MANY_REQUESTS,
            },
            on_store_error: ErrorMode::default(),
            shadow: false,
            on_blocked: None,
            on_error: None,
            tiers: None,
            lists: None,
            auto_block: None,
            degraded: None,
            per_rule: None,
            for_handlers: true,
        }
    }

    /// Whether requests let through carry their decision for handlers
    /// ([`Outcome::Proceed`]'s `admission`, which adapters hand to handlers
    /// as `RateLimitDecision`): `true` by default. An application whose
    /// handlers never read it turns it off, and no request pays for it
    /// (building it and handing it over is a good part of what a layer
    /// adds per request: docs/benchmarks.md). Routes that count only some responses
    /// ([`Limits::count_when`]) or hold places in flight still carry it:
    /// what follows their handler needs it.
    #[must_use]
    pub fn decision_for_handlers(mut self, on: bool) -> Self {
        self.for_handlers = on;
        self
    }

    /// Whether requests let through carry their decision for handlers
    /// ([`decision_for_handlers`](Self::decision_for_handlers)).
    pub fn gives_decision_to_handlers(&self) -> bool {
        self.for_handlers
    }

    /// Blocks clients that keep being denied: more than `rule.denials`
    /// denials within `rule.within` refuse the client (403, with
    /// `Retry-After`) for `rule.block_for`, before any store call. Counted
    /// per instance; with [runtime lists](Self::runtime_lists) a block also
    /// goes on the shared deny list for the same duration. IPv6 clients are
    /// blocked by the key extractor's prefix. In shadow mode blocks are
    /// counted and logged, never applied. Off by default.
    #[must_use]
    pub fn auto_block(mut self, rule: AutoBlock) -> Self {
        self.auto_block = Some(Arc::new(AutoBlocker::new(
            rule,
            self.keys.ipv6_prefix_len(),
        )));
        self
    }

    /// Takes over `previous`'s automatic-blocking records (the denials
    /// counted and the clients blocked) when both policies block by the same
    /// rule and group IPv6 clients alike: a policy rebuilt from a reloaded
    /// configuration keeps blocking the clients its predecessor blocked.
    #[must_use]
    pub fn keep_auto_blocks_from(mut self, previous: &HttpPolicy) -> Self {
        if let (Some(mine), Some(theirs)) = (&self.auto_block, &previous.auto_block)
            && mine.config() == theirs.config()
            && mine.ipv6_prefix() == theirs.ipv6_prefix()
        {
            self.auto_block = Some(Arc::clone(theirs));
        }
        self
    }

    /// The automatic blocking rule, if any, with the clients blocked now and
    /// the blocks so far.
    pub fn auto_block_status(&self) -> Option<(AutoBlock, usize, u64)> {
        self.auto_block
            .as_ref()
            .map(|b| (*b.config(), b.blocked_now(), b.blocks()))
    }

    /// Lifts an automatic block of `ip` on this instance (a block on the
    /// runtime deny list is removed there); whether there was one.
    pub fn unblock(&self, ip: IpAddr) -> bool {
        self.auto_block.as_ref().is_some_and(|b| b.unblock(ip))
    }

    /// Also applies allow and deny lists kept in the store and changed at
    /// runtime: a client on the runtime deny list is refused (403) before
    /// anything else; one on the runtime allow list is never limited (unless
    /// the route table's own deny list refuses it).
    #[must_use]
    pub fn runtime_lists(mut self, lists: RuntimeLists) -> Self {
        self.lists = Some(lists);
        self
    }

    /// The runtime lists, if the policy applies any.
    pub fn lists(&self) -> Option<&RuntimeLists> {
        self.lists.as_ref()
    }

    /// Per-tier limits: a caller whose identity has a tier (given by the
    /// application or found by the tiers' resolver) gets its tier's limits
    /// for the paths the tier covers, in place of the route table's.
    #[must_use]
    pub fn tiers(mut self, tiers: Tiers) -> Self {
        self.reads_route |= tiers
            .all_limits()
            .any(|l| l.key.as_ref().is_some_and(KeySource::reads_route));
        self.tiers = Some(Arc::new(tiers));
        self
    }

    /// Which rate-limit headers to send, and how to write the legacy reset.
    #[must_use]
    pub fn headers(mut self, style: HeaderStyle, reset: ResetFormat) -> Self {
        self.answers.style = style;
        self.answers.reset = reset;
        self
    }

    /// The status of a denial (default 429).
    #[must_use]
    pub fn denied_status(mut self, status: StatusCode) -> Self {
        self.answers.denied_status = status;
        self
    }

    /// The status of a denial by a concurrency rule, every place in flight
    /// taken (default 429; 503 says "busy" rather than "slow down").
    #[must_use]
    pub fn in_flight_status(mut self, status: StatusCode) -> Self {
        self.answers.in_flight_status = status;
        self
    }

    /// What routes without their own setting do when the store fails.
    #[must_use]
    pub fn on_store_error(mut self, mode: ErrorMode) -> Self {
        self.on_store_error = mode;
        self
    }

    /// Where routes whose error mode is [`ErrorMode::Degraded`] decide
    /// while the store fails (down, past its deadline, its breaker open):
    /// on `local`, a limiter over a store that decides at once (the memory
    /// store), with each rule's quota divided by `instances`, the number of
    /// instances of the service sharing the limit ([`Rule::share_of`]).
    /// Every request still tries the shared store first, so decisions go
    /// back to it as soon as it answers; put a deadline and a breaker on it
    /// so that trying costs nothing while it is down. Local counts start
    /// empty and are not merged into the shared store afterwards.
    #[must_use]
    pub fn degraded(mut self, local: Limiter, instances: u64) -> Self {
        self.degraded = Some(Degraded {
            limiter: local,
            instances: instances.max(1),
        });
        self
    }

    /// Takes over `previous`'s local store of degraded mode, when both
    /// policies have one: a policy rebuilt from a reloaded configuration
    /// during an outage goes on with the counts made locally so far (each
    /// rule's share is this policy's).
    #[must_use]
    pub fn keep_degraded_counts_from(mut self, previous: &HttpPolicy) -> Self {
        if let (Some(mine), Some(theirs)) = (&mut self.degraded, &previous.degraded) {
            mine.limiter = theirs.limiter.clone();
        }
        self
    }

    /// How many instances share each quota when deciding degraded, if the
    /// policy has a local store for it.
    pub fn degraded_instances(&self) -> Option<u64> {
        self.degraded.as_ref().map(|d| d.instances)
    }

    /// Puts the rules called `names` in shadow mode, wherever they apply
    /// (routes, tiers): decided and counted, never denying. When only
    /// shadow rules deny a request, it is decided again with them looked at
    /// only, so the rules in force are charged as if they were not there;
    /// the denial goes to the `on_blocked` hook and the log (`shadow =
    /// true`), never to the client. Shadow rules are left out of the
    /// rate-limit headers, and never make a request wait in line (they are
    /// decided without their line). The whole policy in shadow mode is
    /// [`shadow`](Self::shadow), which no rule makes wait either.
    #[must_use]
    pub fn shadow_rules(mut self, names: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        Arc::make_mut(self.per_rule.get_or_insert_default()).shadow(names);
        self
    }

    /// Leaves the rules called `names` out of the rate-limit headers: the
    /// headers describe the most restrictive of the route's other rules,
    /// and none when every rule is left out (`Retry-After` still goes on a
    /// denial).
    #[must_use]
    pub fn hide_headers_of(mut self, names: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        Arc::make_mut(self.per_rule.get_or_insert_default()).hide(names);
        self
    }

    /// The rules in shadow mode, and the rules left out of the headers.
    pub fn rule_settings(&self) -> (Vec<&str>, Vec<&str>) {
        self.per_rule.as_deref().map_or_else(Default::default, |p| {
            (p.shadow_rules().collect(), p.hidden_rules().collect())
        })
    }

    /// The rate rules of `limits` in force: all but those in shadow mode
    /// and the concurrency rules, whose places the request holds already
    /// (what a handler's charge and refund apply to).
    fn in_force(&self, limits: &Limits) -> Arc<[Rule]> {
        let shadow = self
            .per_rule_for(limits)
            .filter(|per_rule| per_rule.shadows_any(&limits.rules));
        if shadow.is_none() && !holds_places(&limits.rules) {
            return Arc::clone(&limits.rules);
        }
        limits
            .rules
            .iter()
            .filter(|r| !holds_place(r) && !shadow.is_some_and(|p| p.is_shadow(r.name())))
            .cloned()
            .collect()
    }

    /// The per-rule settings that apply to `limits`, if any.
    fn per_rule_for(&self, limits: &Limits) -> Option<&PerRule> {
        self.per_rule
            .as_deref()
            .filter(|p| !p.is_empty() && p.applies(&limits.rules))
    }

    /// Decide and report (hooks, headers) but never block.
    #[must_use]
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Called for every denied request (also in shadow mode).
    #[must_use]
    pub fn on_blocked(mut self, hook: BlockedHook) -> Self {
        self.on_blocked = Some(hook);
        self
    }

    /// Called for every store failure.
    #[must_use]
    pub fn on_error(mut self, hook: ErrorHook) -> Self {
        self.on_error = Some(hook);
        self
    }

    /// Whether deciding may need the request's matched route pattern
    /// ([`RequestView::route`]): a key or exemption predicate reads it, or
    /// a hook (it sees the view). Adapters fill the pattern only when this
    /// is true (finding it costs a lookup, and on actix-web an allocation);
    /// the route table itself matches paths. An adapter deciding by limits
    /// of its own ([`check_with_now`](Self::check_with_now)) fills it also
    /// when their key reads it ([`KeySource::reads_route`]): without it, a
    /// route key is the same for every route.
    pub fn reads_route(&self) -> bool {
        self.reads_route || self.on_blocked.is_some() || self.on_error.is_some()
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    fn respond(status: StatusCode, error: &'static str, message: &'static str) -> Outcome {
        Outcome::answer(status, Vec::new(), ErrorBody::new(error, message))
    }

    /// Decides what happens to the request seen through `view`.
    pub async fn check(&self, view: &RequestView<'_>) -> Outcome {
        self.decide(view, self.begin_with(view, None)).await
    }

    /// [`check`](Self::check) without waiting: the outcome if the store can
    /// decide at once (the memory store always can), `None` if it must wait —
    /// then call `check`. Adapters use it to skip building a future on the
    /// fast path.
    pub fn check_now(&self, view: &RequestView<'_>) -> Option<Outcome> {
        self.decide_now(view, None)
    }

    /// The limits of every request, when deciding needs nothing but them,
    /// the client's address and the store: one rule, keyed by the client
    /// address, for every method, path and client (no routes, exemptions
    /// or networks in the table), on a policy with no lists, tiers,
    /// automatic blocks, hooks, shadow mode, per-rule settings or degraded
    /// mode. Such a request skips the general path's steps, each of which
    /// would find nothing to do.
    #[inline]
    fn direct(&self) -> Option<&Limits> {
        let plain = self.by_ip_alone
            && self.lists.is_none()
            && self.tiers.is_none()
            && self.auto_block.is_none()
            && self.on_blocked.is_none()
            && self.on_error.is_none()
            && !self.shadow
            && self.per_rule.is_none()
            && self.degraded.is_none();
        if plain {
            // `by_ip_alone`: the table holds its default alone.
            self.routes.default_limits_of()
        } else {
            None
        }
    }

    /// [`decide_now`](Self::decide_now) on the [`direct`](Self::direct)
    /// plan: the same decision and outcome, through fewer steps.
    #[inline]
    fn decide_direct(&self, view: &RequestView<'_>, limits: &Limits) -> Option<Outcome> {
        let [rule] = &*limits.rules else {
            return self.decide_each_step_now(view, None);
        };
        let client = self.keys.client_ip(view);
        let key = self.keys.ip(client);
        let result = self.limiter.check_cost_now(rule, &key, limits.cost)?;
        Some(self.finish(
            view,
            Target {
                limits,
                key,
                client,
            },
            result,
        ))
    }

    /// [`check_with`](Self::check_with) without waiting: the outcome if the
    /// store can decide at once, `None` if it must wait (then call
    /// `check_with`).
    pub fn check_with_now(&self, view: &RequestView<'_>, limits: &Limits) -> Option<Outcome> {
        self.decide_now(view, Some(limits))
    }

    /// [`check_now`](Self::check_now), with `given` limits in place of the
    /// route table's when there are some.
    pub(crate) fn decide_now(
        &self,
        view: &RequestView<'_>,
        given: Option<&Limits>,
    ) -> Option<Outcome> {
        if given.is_none()
            && let Some(limits) = self.direct()
        {
            return self.decide_direct(view, limits);
        }
        self.decide_each_step_now(view, given)
    }

    /// [`decide_now`](Self::decide_now) through every step.
    fn decide_each_step_now(
        &self,
        view: &RequestView<'_>,
        given: Option<&Limits>,
    ) -> Option<Outcome> {
        match self.begin_with(view, given) {
            Begun::Done(outcome) => Some(outcome),
            Begun::ResolveTier(_) => None,
            // A route counting some responses or holding places in flight
            // reserves, and one with rules of their own decides rule by
            // rule: never at once.
            Begun::Decide(to)
                if to.limits.count_when.is_some()
                    || self.per_rule_for(to.limits).is_some()
                    || holds_places(&to.limits.rules) =>
            {
                None
            }
            Begun::Decide(to) => {
                let limits = to.limits;
                let result = self
                    .limiter
                    .check_rules_now(&limits.rules, &to.key, limits.cost)?;
                // Deciding locally is done where it may wait.
                if result.is_err() && self.degrades(limits) {
                    return None;
                }
                Some(self.finish(view, to, result))
            }
        }
    }

    /// [`check`](Self::check) with `limits` in place of the route table's:
    /// the deny and allow lists and the exemptions still apply, then
    /// `limits` decide. For adapters whose routes carry their own limits (a
    /// per-route guard).
    pub async fn check_with(&self, view: &RequestView<'_>, limits: &Limits) -> Outcome {
        self.check_given(view, Some(limits)).await
    }

    /// [`check`](Self::check), with `given` limits in place of the route
    /// table's when there are some.
    pub(crate) async fn check_given(
        &self,
        view: &RequestView<'_>,
        given: Option<&Limits>,
    ) -> Outcome {
        self.decide(view, self.begin_with(view, given)).await
    }

    /// Finishes what [`begin_with`](Self::begin_with) started: resolves the
    /// caller's tier if needed, then decides through the store.
    async fn decide(&self, view: &RequestView<'_>, begun: Begun<'_>) -> Outcome {
        let begun = match begun {
            Begun::ResolveTier(pending) => match (&self.tiers, view.identity) {
                (Some(tiers), Some(identity)) => {
                    let tier = tiers.resolve(identity, self.limiter.clock().now()).await;
                    let limits = tiers
                        .limits(tier.as_ref(), view.method, view.path, view.route)
                        .or(pending.table);
                    self.target(view, limits, pending.client)
                }
                // Not reached: a tier is asked for only with tiers and an identity.
                _ => self.target(view, pending.table, pending.client),
            },
            begun => begun,
        };
        match begun {
            Begun::Done(outcome) => outcome,
            Begun::Decide(to) => match self.decide_on(&self.limiter, to.limits, &to.key).await {
                Ok(decided) => self.decided(view, to, decided),
                Err(error) if self.degrades(to.limits) => {
                    self.decide_locally(view, to, &error).await
                }
                Err(error) => self.failed(view, &to, &error),
            },
            // Not reached: `target` never asks for a tier.
            Begun::ResolveTier(_) => unlimited(),
        }
    }

    /// Decides `limits` for `key` on `limiter`: rule by rule when some
    /// rule has settings of its own, by a reservation on a route counting
    /// only some responses, else in one step.
    async fn decide_on(&self, limiter: &Limiter, limits: &Limits, key: &str) -> Result<Decided> {
        // A policy in shadow mode holds back no request: no rule waits in line.
        let unlined =
            crate::per_rule::unlined(&limits.rules, |_| self.shadow).map(|rules| Limits {
                rules: rules.into(),
                ..limits.clone()
            });
        let limits = unlined.as_ref().unwrap_or(limits);
        if let Some(per_rule) = self.per_rule_for(limits) {
            return per_rule.decide(limiter, limits, key).await;
        }
        if limits.count_when.is_none() && !holds_places(&limits.rules) {
            return limiter
                .check_rules(&limits.rules, key, limits.cost)
                .await
                .map(Decided::enforced);
        }
        let checks: Vec<_> = limits
            .rules
            .iter()
            .map(|rule| (rule, key, limits.cost))
            .collect();
        let taken = take(limiter, &checks, limits.count_when.as_ref()).await?;
        let decision = Decision::most_restrictive(&taken.decisions)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::Other, "the store answered no decision"))?;
        Ok(Decided {
            how: Shown {
                settlement: taken.settlement,
                places: taken.places,
                ..Shown::ENFORCED
            },
            ..Decided::enforced(decision)
        })
    }

    /// What a store failure on `limits` does: their own mode, or the
    /// policy's.
    fn error_mode(&self, limits: &Limits) -> ErrorMode {
        limits.on_store_error.unwrap_or(self.on_store_error)
    }

    /// Whether a store failure on `limits` is decided locally: their error
    /// mode is degraded and the policy has a local store.
    fn degrades(&self, limits: &Limits) -> bool {
        self.degraded.is_some() && self.error_mode(limits) == ErrorMode::Degraded
    }

    /// The store failed on a degraded route: reports it, then decides on
    /// the local store with each rule's share of its quota, as the store
    /// would have (rules with settings of their own, counting only some
    /// responses). If the local store fails too, fails closed.
    async fn decide_locally(
        &self,
        view: &RequestView<'_>,
        to: Target<'_>,
        error: &Error,
    ) -> Outcome {
        self.report_failure(view, to.limits, error);
        let Some(local) = &self.degraded else {
            return Self::unavailable();
        };
        let limits = to.limits;
        let shares = Limits {
            rules: limits
                .rules
                .iter()
                .map(|r| r.share_of(local.instances))
                .collect(),
            ..limits.clone()
        };
        match self.decide_on(&local.limiter, &shares, &to.key).await {
            Ok(decided) => {
                ratekeeper_core::observe::counter(ratekeeper_core::observe::DEGRADED, 1);
                self.decided(view, to, decided)
            }
            Err(error) => {
                tracing::warn!(
                    target: "ratekeeper::http",
                    %error,
                    "the local store of degraded mode failed too: failing closed"
                );
                Self::unavailable()
            }
        }
    }

    /// Everything before the decision: lists, exemptions, the limits (`given`
    /// ones in place of the table's; else the caller's tier's when known
    /// without waiting; else the route table's), the key. A tier that must
    /// be looked up comes back as `Begun::ResolveTier`, with what was found
    /// so far.
    fn begin_with<'p>(&'p self, view: &RequestView<'_>, given: Option<&'p Limits>) -> Begun<'p> {
        // The order: deny lists, then allow lists and exemptions, then
        // automatic blocks, then limits. An exempt path (a load balancer's
        // health check) stays reachable whatever a client behind the same
        // proxy did.
        let client = self.keys.client_ip(view);
        let listed = self.lists.as_ref().and_then(|l| l.verdict(client));
        let forbidden = || {
            Begun::Done(Self::respond(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this client is not allowed",
            ))
        };
        if listed == Some(ListKind::Deny) {
            return forbidden();
        }
        let table = match self.routes.resolve(view, client) {
            Applies::Denied => return forbidden(),
            Applies::Allowed | Applies::Exempt => return Begun::Done(unlimited()),
            _ if listed == Some(ListKind::Allow) => return Begun::Done(unlimited()),
            Applies::Unlimited => None,
            Applies::Limited(limits) => Some(limits),
        };
        if let Some(blocker) = &self.auto_block
            && !self.shadow
            && let Some(wait) = blocker.blocked(client, self.limiter.clock().now())
        {
            // Rounded up: a client retrying then is no longer blocked.
            let seconds = ceil_secs(duration_to_micros(wait)).max(1);
            return Begun::Done(Outcome::answer(
                StatusCode::FORBIDDEN,
                vec![(RETRY_AFTER, HeaderValue::from(seconds))],
                ErrorBody::new(
                    "blocked",
                    "this client was denied too often and is blocked for a while",
                ),
            ));
        }
        match (given, &self.tiers, view.identity) {
            (Some(given), _, _) => self.target(view, Some(given), client),
            (None, Some(tiers), Some(identity)) => {
                match tiers.known(identity, self.limiter.clock().now()) {
                    Known::Tier(tier) => {
                        let limits = tiers
                            .limits(tier.as_ref(), view.method, view.path, view.route)
                            .or(table);
                        self.target(view, limits, client)
                    }
                    Known::Resolve => Begun::ResolveTier(Pending { table, client }),
                }
            }
            (None, _, _) => self.target(view, table, client),
        }
    }

    /// The request's key for `limits`, or the answer when nothing limits it
    /// or it carries no key.
    fn target<'p>(
        &self,
        view: &RequestView<'_>,
        limits: Option<&'p Limits>,
        client: IpAddr,
    ) -> Begun<'p> {
        let Some(limits) = limits else {
            return Begun::Done(unlimited());
        };
        if limits.rules.is_empty() {
            return Begun::Done(unlimited());
        }
        // The client address is found once, for the lists and for the key.
        match self
            .keys
            .extract_for_client(limits.key.as_ref(), view, client)
        {
            Keyed::Key(key) => Begun::Decide(Target {
                limits,
                key,
                client,
            }),
            Keyed::Reject(status) => Begun::Done(Self::respond(
                status,
                "missing_key",
                "the request carries no rate-limit key",
            )),
        }
    }

    /// Everything after the decision: the shadow rules' denial reported,
    /// then headers, hooks and the response.
    fn decided(&self, view: &RequestView<'_>, to: Target<'_>, d: Decided) -> Outcome {
        if let Some(denial) = &d.shadow_denial {
            self.shadow_denial(view, denial);
        }
        self.outcome(view, d.decision, to, d.how)
    }

    /// The outcome of a decision made at once, or of its store's failure
    /// (one call, so the outcome is written where the caller wants it).
    fn finish(&self, view: &RequestView<'_>, to: Target<'_>, result: Result<Decision>) -> Outcome {
        match result {
            Ok(decision) => self.outcome(view, decision, to, Shown::ENFORCED),
            Err(error) => self.failed(view, &to, &error),
        }
    }

    /// Logs a store failure and gives it to the `on_error` hook.
    fn report_failure(&self, view: &RequestView<'_>, limits: &Limits, error: &Error) {
        let mode = self.error_mode(limits);
        tracing::warn!(
            target: "ratekeeper::http",
            error = %error,
            kind = error.kind().as_str(),
            method = view.method,
            path = view.path,
            mode = ?mode,
            "the rate-limit store failed"
        );
        if let Some(hook) = &self.on_error {
            hook(view, error);
        }
    }

    /// The answer when the store failed, by the route's error mode (a
    /// degraded route without a local store fails closed).
    fn failed(&self, view: &RequestView<'_>, to: &Target<'_>, error: &Error) -> Outcome {
        self.report_failure(view, to.limits, error);
        match self.error_mode(to.limits) {
            ErrorMode::FailOpen => unlimited(),
            ErrorMode::FailClosed | ErrorMode::Degraded => Self::unavailable(),
        }
    }

    /// 503: the limiter cannot decide.
    fn unavailable() -> Outcome {
        Self::respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "rate_limiter_unavailable",
            "the rate limiter cannot decide right now; try again shortly",
        )
    }

    /// Counts a denial towards automatic blocking; announces a new block
    /// and shares it through the runtime deny list.
    fn strike(&self, blocker: &AutoBlocker, client: IpAddr) {
        // A trusted proxy is where a client lands when its forwarding header
        // says nothing usable (`for=unknown`): blocking it would block
        // everyone behind it.
        if self.keys.proxy_policy().is_trusted(client) {
            return;
        }
        let Some(blocked) = blocker.denied(client, self.limiter.clock().now()) else {
            return;
        };
        let rule = blocker.config();
        tracing::warn!(
            target: "ratekeeper::http",
            client = %blocked.client,
            denials = rule.denials,
            within_s = rule.within.as_secs_f64(),
            block_for_s = rule.block_for.as_secs_f64(),
            shadow = self.shadow,
            "client blocked automatically: denied too often"
        );
        if self.shadow {
            return;
        }
        if let Some(lists) = &self.lists {
            let lists = lists.clone();
            let net = blocked.client.to_string();
            let ttl = rule.block_for;
            let share = async move {
                if let Err(error) = lists.add(ListKind::Deny, &net, Some(ttl)).await {
                    tracing::warn!(
                        target: "ratekeeper::http",
                        %error,
                        client = %net,
                        "an automatic block could not be shared through the runtime deny list"
                    );
                }
            };
            ratekeeper_core::kit::spawn_or_warn(
                "sharing an automatic block through the runtime deny list (it holds on this instance only)",
                share,
            );
        }
    }

    /// A denial by a rule in shadow mode, never enforced: the hook and the
    /// log see it.
    fn shadow_denial(&self, view: &RequestView<'_>, decision: &Decision) {
        if let Some(hook) = &self.on_blocked {
            hook(view, decision);
        }
        tracing::info!(
            target: "ratekeeper::http",
            rule = decision.rule(),
            method = view.method,
            path = view.path,
            shadow = true,
            "request over a shadow rule's limit: allowed"
        );
    }

    /// The outcome of `decision`: the rate-limit headers (unless `how`
    /// leaves its rule out of them), then the request admitted (also when
    /// the decision is not enforced: a shadow rule's) or denied.
    #[inline]
    fn outcome(
        &self,
        view: &RequestView<'_>,
        decision: Decision,
        to: Target<'_>,
        how: Shown,
    ) -> Outcome {
        let Shown {
            headers: shown,
            enforce,
            settlement,
            places,
        } = how;
        let Target {
            limits,
            key,
            client,
        } = to;
        let headers = if self.answers.style == HeaderStyle::None || !shown {
            Vec::new()
        } else {
            let window = match &*limits.rules {
                [rule] => rule.quota().window(),
                rules => rules
                    .iter()
                    .find(|r| r.name() == decision.rule())
                    .map_or(Duration::ZERO, |r| r.quota().window()),
            };
            self.answers
                .headers(&decision, window, &**self.limiter.clock())
        };
        let denied = enforce && !decision.is_allowed();
        if denied {
            if let Some(hook) = &self.on_blocked {
                hook(view, &decision);
            }
            tracing::info!(
                target: "ratekeeper::http",
                rule = decision.rule(),
                method = view.method,
                path = view.path,
                shadow = self.shadow,
                "request over its rate limit"
            );
            if let Some(blocker) = &self.auto_block {
                self.strike(blocker, client);
            }
        }
        // Built in one place: the fast path moves the outcome once.
        if !denied || self.shadow {
            let wanted = self.for_handlers || settlement.is_some() || places.is_some();
            return Outcome::Proceed {
                headers,
                admission: wanted.then(|| Admission {
                    decision,
                    limiter: self.limiter.clone(),
                    rules: self.in_force(limits),
                    key,
                    settlement,
                    places,
                }),
            };
        }
        let busy = limits
            .rules
            .iter()
            .any(|r| r.name() == decision.rule() && holds_place(r));
        self.answers.denial(decision, headers, busy)
    }
}

/// How decisions are written as answers: which rate-limit headers, the
/// legacy reset's form, the status of a denial.
#[derive(Debug, Clone, Copy)]
struct Answers {
    style: HeaderStyle,
    reset: ResetFormat,
    denied_status: StatusCode,
    /// The status of a denial by a concurrency rule.
    in_flight_status: StatusCode,
}

impl Answers {
    /// The rate-limit headers of `decision`, whose rule has this `window`.
    fn headers(
        &self,
        decision: &Decision,
        window: Duration,
        clock: &dyn Clock,
    ) -> Vec<(HeaderName, HeaderValue)> {
        // Only a legacy reset written as a Unix time needs the wall clock.
        // (Reading it for other styles would change no header, only cost
        // a clock read: `.cargo/mutants.toml` excludes the `&&` → `||`.)
        let now = if self.reset == ResetFormat::UnixTime
            && matches!(self.style, HeaderStyle::Legacy | HeaderStyle::Both)
        {
            clock.now()
        } else {
            Timestamp::from_micros(0)
        };
        rate_limit_headers(decision, window, now, self.style, self.reset)
    }

    /// A denial's answer: `headers` and `Retry-After`, the JSON body, the
    /// status (`in_flight_status` when `busy`: a concurrency rule denied,
    /// every place in flight taken), and the decision for the adapter.
    fn denial(
        &self,
        decision: Decision,
        mut headers: Vec<(HeaderName, HeaderValue)>,
        busy: bool,
    ) -> Outcome {
        let retry = retry_after_secs(&decision).unwrap_or(1);
        headers.push((RETRY_AFTER, HeaderValue::from(retry)));
        let body = ErrorBody::new(
            "rate_limited",
            format!("too many requests; retry in {retry} s"),
        )
        .with_retry_after(retry);
        let status = if busy {
            self.in_flight_status
        } else {
            self.denied_status
        };
        let mut answer = Outcome::answer(status, headers, body);
        if let Outcome::Respond { decision: d, .. } = &mut answer {
            *d = Some(decision);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test helpers")]
    use super::*;
    use crate::ClientIpPolicy;
    use ratekeeper_core::clock::ManualClock;
    use ratekeeper_core::kit::{self, RuleState};
    use ratekeeper_core::{Algorithm, Quota};
    use ratekeeper_core::{DecideRequest, Storage};

    /// A store for these tests that decides at once: the states in a
    /// locked map, stepped by `kit::decide_all` (kept past their expiry,
    /// which a GCRA state, the only kind here, decides as no state would);
    /// `get` finds nothing (empty runtime lists). The memory store cannot
    /// be a dev-dependency here: its own tests depend on this crate through
    /// the test kit, which would make packaging's order a cycle.
    #[derive(Debug, Default)]
    struct Steps(std::sync::Mutex<std::collections::HashMap<String, RuleState>>);

    impl Steps {
        fn step(&self, request: &DecideRequest<'_>) -> Result<Decision> {
            let mut states = self
                .0
                .lock()
                .map_err(|_| Error::new(ErrorKind::Other, "poisoned"))?;
            let keys: Vec<String> = request
                .entries
                .iter()
                .map(|e| kit::state_key(e.rule, e.key))
                .collect();
            let (decision, writes) = {
                let inputs: Vec<_> = request
                    .entries
                    .iter()
                    .zip(&keys)
                    .map(|(e, k)| (e.rule, states.get(k), e.cost))
                    .collect();
                kit::decide_all(&inputs, request.now)?
            };
            for (key, write) in keys.into_iter().zip(writes) {
                if let Some(write) = write {
                    states.insert(key, write.state);
                }
            }
            Ok(decision)
        }
    }

    #[async_trait::async_trait]
    impl Storage for Steps {
        async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
            self.step(request)
        }

        fn decide_now(&self, request: &DecideRequest<'_>) -> Option<Result<Decision>> {
            Some(self.step(request))
        }

        async fn get(&self, _key: &str) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
    }

    fn gcra(name: &str) -> Rule {
        Rule::new(name, Algorithm::Gcra, Quota::per_minute(3).unwrap()).unwrap()
    }

    /// A policy on a store of its own, at a manual time.
    fn policy(routes: RouteTable, keys: KeyExtractor, clock: &ManualClock) -> HttpPolicy {
        let limiter = Limiter::builder(Arc::new(Steps::default()))
            .clock(clock.clone())
            .build();
        HttpPolicy::new(limiter, routes, keys)
    }

    fn by_ip(rules: Vec<Rule>) -> (RouteTable, KeyExtractor) {
        (
            RouteTable::new().default_limits(Limits::new(rules)),
            KeyExtractor::new(KeySource::Ip),
        )
    }

    #[test]
    fn only_a_plain_policy_by_client_address_is_decided_directly() {
        let clock = ManualClock::new(Timestamp::from_micros(1_000_000));
        let plain = |rules| {
            let (routes, keys) = by_ip(rules);
            policy(routes, keys, &clock)
        };
        assert!(plain(vec![gcra("a")]).direct().is_some());
        // Headers, the decision for handlers and the store-error mode are
        // the outcome's business, not the plan's.
        let answers = plain(vec![gcra("a")])
            .headers(HeaderStyle::Both, ResetFormat::UnixTime)
            .decision_for_handlers(true)
            .on_store_error(ErrorMode::FailOpen);
        assert!(answers.direct().is_some());
        // A key named on the limits that is the client address too.
        let named = policy(
            RouteTable::new().default_limits(Limits::new(vec![gcra("a")]).key(KeySource::Ip)),
            KeyExtractor::new(KeySource::Ip),
            &clock,
        );
        assert!(named.direct().is_some());
        let lists = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(RuntimeLists::load(Arc::new(Steps::default())))
            .unwrap();
        let hook: BlockedHook = Arc::new(|_, _| {});
        let error_hook: ErrorHook = Arc::new(|_, _| {});
        let not_direct = [
            plain(vec![gcra("a"), gcra("b")]),
            plain(vec![
                Rule::new("c", Algorithm::Concurrency, Quota::per_minute(3).unwrap()).unwrap(),
            ]),
            plain(vec![gcra("a")]).shadow(true),
            plain(vec![gcra("a")]).shadow_rules(["a"]),
            plain(vec![gcra("a")]).hide_headers_of(["a"]),
            plain(vec![gcra("a")]).tiers(Tiers::new()),
            plain(vec![gcra("a")]).runtime_lists(lists),
            policy(
                RouteTable::new().default_limits(
                    Limits::new(vec![gcra("a")])
                        .count_when(crate::CountWhen::predicate(|s| s.is_success())),
                ),
                KeyExtractor::new(KeySource::Ip),
                &clock,
            ),
            plain(vec![gcra("a")]).on_blocked(hook),
            plain(vec![gcra("a")]).on_error(error_hook),
            plain(vec![gcra("a")]).auto_block(AutoBlock {
                denials: 3,
                within: Duration::from_secs(1),
                block_for: Duration::from_secs(1),
                max_clients: 10,
            }),
            plain(vec![gcra("a")]).degraded(Limiter::new(Arc::new(Steps::default())), 2),
            policy(
                RouteTable::new()
                    .route("/x", &[], Limits::new(vec![gcra("x")]))
                    .unwrap()
                    .default_limits(Limits::new(vec![gcra("a")])),
                KeyExtractor::new(KeySource::Ip),
                &clock,
            ),
            policy(
                RouteTable::new()
                    .exempt("/health")
                    .unwrap()
                    .default_limits(Limits::new(vec![gcra("a")])),
                KeyExtractor::new(KeySource::Ip),
                &clock,
            ),
            policy(
                RouteTable::new().default_limits(
                    Limits::new(vec![gcra("a")]).key(KeySource::Header("x-api-key".into())),
                ),
                KeyExtractor::new(KeySource::Ip),
                &clock,
            ),
            policy(
                RouteTable::new().default_limits(Limits::new(vec![gcra("a")])),
                KeyExtractor::new(KeySource::User),
                &clock,
            ),
            policy(RouteTable::new(), KeyExtractor::new(KeySource::Ip), &clock),
        ];
        for (i, policy) in not_direct.iter().enumerate() {
            assert!(policy.direct().is_none(), "policy {i}");
        }
    }

    /// Requests from clients spelled several ways (a mapped IPv4 address,
    /// IPv6 addresses of one /64, a forwarding header from a trusted proxy
    /// and from an untrusted one) get, on the direct plan, the outcome
    /// every step gives the same requests at the same times.
    #[test]
    fn the_direct_plan_decides_as_every_step() {
        let clock = ManualClock::new(Timestamp::from_micros(1_000_000));
        let keys = || {
            KeyExtractor::new(KeySource::Ip)
                .proxies(ClientIpPolicy::new().trust(["10.0.0.0/8"]).unwrap())
        };
        let make = || {
            let routes = RouteTable::new().default_limits(Limits::new(vec![gcra("a")]));
            policy(routes, keys(), &clock).headers(HeaderStyle::Both, ResetFormat::Seconds)
        };
        let (direct, every_step) = (make(), make());
        assert!(direct.direct().is_some());
        type Headers<'a> = &'a [(&'a str, &'a [u8])];
        let forwarded: Headers<'_> = &[("x-forwarded-for", b"203.0.113.9")];
        let none: Headers<'_> = &[];
        let requests: [(&str, Headers<'_>); 7] = [
            ("192.0.2.1", none),
            ("::ffff:192.0.2.1", none),
            ("2001:db8::1", none),
            ("2001:db8::2", none),
            ("10.1.2.3", forwarded),
            ("198.51.100.7", forwarded),
            ("203.0.113.9", none),
        ];
        let mut denied = 0;
        for round in 0..6 {
            for (peer, headers) in &requests {
                let view = RequestView {
                    method: "GET",
                    path: "/anything",
                    route: None,
                    peer: peer.parse().unwrap(),
                    headers,
                    identity: None,
                };
                let a = direct.check_now(&view).unwrap();
                let b = every_step.decide_each_step_now(&view, None).unwrap();
                assert_eq!(a, b, "round {round}, peer {peer}");
                denied += usize::from(matches!(a, Outcome::Respond { .. }));
            }
            clock.advance(Duration::from_secs(7));
        }
        // The rounds reach denials and the refill after them.
        assert!(denied > 0);
    }
}
