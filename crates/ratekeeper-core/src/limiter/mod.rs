//! The limiter: the API applications call, from HTTP middleware or any async code.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::decision::Decision;
use crate::error::{Error, ErrorKind, Result};
use crate::key::{DEFAULT_MAX_KEY_LEN, bounded_key, state_key};
use crate::observe;
use crate::permit::{HeldInLine, Permit};
use crate::reservation::Reservation;
use crate::rule::Rule;
use crate::storage::{DecideEntry, DecideRequest, Storage};

mod adjust;
mod waiting;

/// What a request has one of per rule: inline for one or two rules (the
/// usual request), so that no allocation is made for them.
pub(crate) type Few<T> = smallvec::SmallVec<[T; 2]>;

/// Decides whether requests may proceed, against a shared [`Storage`].
///
/// Cheap to clone: clones share the store and the clock, so one limit holds
/// across every task, thread and connection that uses a clone.
///
/// ```
/// use ratekeeper_core::{Algorithm, Limiter, ManualClock, Rule, Timestamp};
/// # use ratekeeper_core::{CasOp, Decision, DecideRequest, Result, Storage};
/// # use std::time::Duration;
/// # #[derive(Debug, Default)] struct Store(std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);
/// # #[async_trait::async_trait] impl Storage for Store {
/// #   async fn decide(&self, r: &DecideRequest<'_>) -> Result<Decision> { ratekeeper_core::storage::decide_with_cas(self, r).await }
/// #   async fn get(&self, k: &str) -> Result<Option<Vec<u8>>> { Ok(self.0.lock().unwrap().get(k).cloned()) }
/// #   async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
/// #     let mut m = self.0.lock().unwrap();
/// #     if ops.iter().any(|o| m.get(o.key).map(Vec::as_slice) != o.expected) { return Ok(false) }
/// #     for o in ops { m.insert(o.key.into(), o.new_value.into()); } Ok(true) } }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// # let store = std::sync::Arc::new(Store::default());
/// let clock = ManualClock::new(Timestamp::from_micros(0));
/// let limiter = Limiter::builder(store).clock(clock.clone()).build();
/// let rule = Rule::new("api", Algorithm::Gcra, "10/s".parse()?)?;
///
/// let d = limiter.check_cost(&rule, "alice", 10).await?;
/// assert!(d.is_allowed() && d.remaining() == 0);
/// let d = limiter.check(&rule, "alice").await?;
/// assert_eq!(d.retry_after(), Some(Duration::from_millis(100)));
/// // Waiting on a manual clock moves it, so this returns at once.
/// assert!(limiter.until_ready(&rule, "alice").await?.is_allowed());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    max_key_len: usize,
    /// Requests waiting for a place in flight, per rule and key.
    lines: Arc<waiting::Lines>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("storage", &self.inner.storage)
            .field("clock", &self.inner.clock)
            .field("max_key_len", &self.inner.max_key_len)
            .finish()
    }
}

/// Builds a [`Limiter`].
#[derive(Debug)]
#[must_use]
pub struct LimiterBuilder {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    max_key_len: usize,
}

impl LimiterBuilder {
    /// Reads time from `clock` instead of the system clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Reads time from a shared `clock`.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Keys longer than this many bytes are hashed (see [`bounded_key`](crate::kit::bounded_key)); default
    /// [`DEFAULT_MAX_KEY_LEN`], at least [`MIN_MAX_KEY_LEN`](crate::MIN_MAX_KEY_LEN).
    pub fn max_key_len(mut self, max: usize) -> Self {
        self.max_key_len = max.max(crate::key::MIN_MAX_KEY_LEN);
        self
    }

    /// The limiter.
    pub fn build(self) -> Limiter {
        Limiter {
            inner: Arc::new(Inner {
                storage: self.storage,
                clock: self.clock,
                max_key_len: self.max_key_len,
                lines: Arc::default(),
            }),
        }
    }
}

impl Limiter {
    /// A limiter on `storage` with the system clock.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self::builder(storage).build()
    }

    /// A builder for a limiter on `storage`.
    pub fn builder(storage: Arc<dyn Storage>) -> LimiterBuilder {
        LimiterBuilder {
            storage,
            clock: Arc::new(SystemClock),
            max_key_len: DEFAULT_MAX_KEY_LEN,
        }
    }

    /// The store.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The store key that holds `rule`'s state for `key` (after bounding the key).
    pub fn state_key(&self, rule: &Rule, key: &str) -> String {
        state_key(rule, &bounded_key(key, self.inner.max_key_len))
    }

    /// One request of cost 1 against `rule` for `key`.
    pub fn check<'a>(
        &'a self,
        rule: &'a Rule,
        key: &'a str,
    ) -> impl Future<Output = Result<Decision>> + Send + 'a {
        self.check_cost(rule, key, 1)
    }

    /// One request of `cost` units (weighted requests; 0 is a [peek](Self::peek)).
    pub async fn check_cost(&self, rule: &Rule, key: &str, cost: u64) -> Result<Decision> {
        let key = bounded_key(key, self.inner.max_key_len);
        let entries = [DecideEntry {
            key: &key,
            rule,
            cost,
        }];
        self.decide(&entries, cost).await
    }

    /// Decides through the store: at once if it can, else waiting for it
    /// (and for a request's turn on a rule with a line).
    async fn decide(&self, entries: &[DecideEntry<'_>], cost: u64) -> Result<Decision> {
        if waits(entries.iter().map(|e| e.rule)) {
            // Boxed: waiting is a large future (over a kilobyte), and every
            // check's future would otherwise be as large, copied whole each
            // time one is made.
            return Box::pin(self.decide_waiting(entries)).await;
        }
        let request = self.request(entries);
        // Stores that never wait answer here, without boxing a future.
        let result = match self.inner.storage.decide_now(&request) {
            Some(result) => result,
            None => {
                let timer = observe::Timer::start();
                let result = self.inner.storage.decide(&request).await;
                timer.stop();
                result
            }
        };
        observe::decision(entries, cost, &result);
        result
    }

    /// [`decide`](Self::decide) on rules whose requests wait in line.
    async fn decide_waiting(&self, entries: &[DecideEntry<'_>]) -> Result<Decision> {
        let checks: Vec<_> = entries.iter().map(|e| (e.rule, e.key, e.cost)).collect();
        let (_, decisions) = self.decide_each(&checks, false).await?;
        Decision::most_restrictive(&decisions)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::Other, "the store answered no decision"))
    }

    /// Decides through the store if it can answer at once (and no rule
    /// makes requests wait in line).
    fn decide_now(&self, entries: &[DecideEntry<'_>], cost: u64) -> Option<Result<Decision>> {
        if waits(entries.iter().map(|e| e.rule)) {
            return None;
        }
        let result = self.inner.storage.decide_now(&self.request(entries))?;
        observe::decision(entries, cost, &result);
        Some(result)
    }

    /// [`check_cost`](Self::check_cost) without waiting: the decision if the
    /// store can make it at once (the memory store always can), `None` if it
    /// must wait (a database, a server, a rule whose requests
    /// [wait in line](Rule::with_wait)) — then call `check_cost`. Lets
    /// middleware skip building a future on the fast path.
    pub fn check_cost_now(&self, rule: &Rule, key: &str, cost: u64) -> Option<Result<Decision>> {
        let key = bounded_key(key, self.inner.max_key_len);
        let entries = [DecideEntry {
            key: &key,
            rule,
            cost,
        }];
        self.decide_now(&entries, cost)
    }

    /// Whether a request of one unit would be allowed now, without consuming
    /// anything. `remaining` is what is left now.
    pub fn peek<'a>(
        &'a self,
        rule: &'a Rule,
        key: &'a str,
    ) -> impl Future<Output = Result<Decision>> + Send + 'a {
        self.check_cost(rule, key, 0)
    }

    /// One request of `cost` units against several rules, each with its own key
    /// (e.g. 10/s and 1000/h for a user, or a per-user and a per-route rule),
    /// decided atomically: if any rule denies, none consumes. The decision
    /// returned is the most restrictive.
    pub async fn check_all(&self, checks: &[(&Rule, &str)], cost: u64) -> Result<Decision> {
        let keys = self.bounded_keys(checks.iter().map(|(_, key)| *key));
        let entries = entries(checks.iter().map(|(rule, _)| (*rule, cost)), &keys)?;
        self.decide(&entries, cost).await
    }

    /// One request against several rules, each with its own key and its own
    /// cost (0 only looks at that rule, and never holds the others back),
    /// decided atomically like
    /// [`check_all`](Self::check_all): if any rule denies, none consumes.
    /// Returns one decision per check, in order (see
    /// [`Storage::decide_each`] for what each reports);
    /// [`Decision::most_restrictive`] of them is what `check_all` would
    /// return. For callers that report every limit, like the rate-limit
    /// service's status per descriptor.
    ///
    /// ```
    /// # use ratekeeper_core::{Algorithm, Limiter, Rule};
    /// # async fn run(limiter: Limiter) -> Result<(), Box<dyn std::error::Error>> {
    /// let tokens = Rule::new("llm-tokens", Algorithm::TokenBucket, "10000/minute".parse()?)?;
    /// let calls = Rule::new("llm-calls", Algorithm::FixedWindow, "60/minute".parse()?)?;
    /// let each = limiter
    ///     .check_each(&[(&tokens, "team-a", 1_200), (&calls, "team-a", 1)])
    ///     .await?;
    /// if each.iter().all(|d| d.is_allowed()) {
    ///     println!("{} tokens left this minute", each[0].remaining());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn check_each(&self, checks: &[(&Rule, &str, u64)]) -> Result<Vec<Decision>> {
        self.decide_each(checks, false)
            .await
            .map(|(_, decisions)| decisions)
    }

    /// [`check_each`](Self::check_each), and the time it was decided at:
    /// with `at`, the store's ([`Storage::decide_each_at`]: its own clock's
    /// when it keeps one), else the request's (and the store is asked the
    /// plain `decide_each`, the service's hot path). On rules with a line,
    /// returns when the request's turn has come (see [`Rule::with_wait`]).
    async fn decide_each(
        &self,
        checks: &[(&Rule, &str, u64)],
        at: bool,
    ) -> Result<(crate::Timestamp, Vec<Decision>)> {
        if checks
            .iter()
            .any(|(rule, _, cost)| *cost > 0 && rule.queue().is_some())
        {
            // Boxed, as in `decide`: waiting for a place is a large future.
            return Box::pin(self.decide_for_place(checks, at)).await;
        }
        self.decide_once(checks, at, true).await
    }

    /// One decision of the store on `checks` (see
    /// [`decide_each`](Self::decide_each)), counted and logged when
    /// `observed`; on rules with a line on a bucket, returns when the
    /// request's turn has come.
    async fn decide_once(
        &self,
        checks: &[(&Rule, &str, u64)],
        at: bool,
        observed: bool,
    ) -> Result<(crate::Timestamp, Vec<Decision>)> {
        let in_line = waits_in_line(checks.iter().map(|(rule, _, _)| *rule));
        if in_line {
            // The store sees the burst grown by the line: the real one bounds a cost.
            for (rule, _, cost) in checks {
                crate::engine::check_cost(rule, *cost)?;
            }
        }
        let keys = self.bounded_keys(checks.iter().map(|(_, key, _)| *key));
        let for_store = checks
            .iter()
            .map(|(rule, _, cost)| (rule.for_store(), *cost));
        let entries = entries(for_store, &keys)?;
        let request = self.request(&entries);
        // Stores that never wait answer here, without boxing a future.
        let result = match self.inner.storage.decide_each_now(&request) {
            Some(result) => result,
            None => {
                let timer = observe::Timer::start();
                let result = if at || in_line {
                    self.inner.storage.decide_each_at(&request).await
                } else {
                    let each = self.inner.storage.decide_each(&request).await;
                    each.map(|decisions| (request.now, decisions))
                };
                timer.stop();
                result
            }
        };
        let (at, result) = match result {
            Ok((at, decisions)) => (at, Ok(decisions)),
            Err(e) => (request.now, Err(e)),
        };
        // What a client of each rule sees (the places in line are not units
        // left), and the longest wait for a turn.
        let mut wait = Duration::ZERO;
        let result = result.map(|decisions| {
            if !in_line {
                return decisions;
            }
            checks
                .iter()
                .zip(decisions)
                .map(|((rule, _, cost), decision)| {
                    let (decision, turn) = rule.read_store(decision);
                    if *cost > 0 {
                        wait = wait.max(turn);
                    }
                    decision
                })
                .collect()
        });
        if observed {
            observe::decisions(&entries, &result);
        }
        let decisions = result?;
        let admitted = checks
            .iter()
            .zip(&decisions)
            .all(|((_, _, cost), d)| *cost == 0 || d.is_allowed());
        if admitted && !wait.is_zero() {
            // The place in line is kept if this future is dropped (a refund
            // would let the next request take a turn beside one still
            // asleep); places in flight taken with it come back.
            let taken = checks.iter().zip(&keys);
            let taken = taken.map(|((rule, _, cost), key)| (*rule, key.as_ref(), *cost));
            let held = HeldInLine::new(self, &crate::permit::leases(taken, at));
            self.inner.clock.sleep(wait).await;
            held.keep();
        }
        Ok((at, decisions))
    }

    /// Takes `estimate` units of `rule` for `key` now, to
    /// [settle](Reservation::settle) at the real cost once it is known: the
    /// tokens a language model answered with, the bytes a download sent.
    /// The estimate is decided like [`check_cost`](Self::check_cost), so
    /// concurrent requests cannot overshoot while their costs are unknown;
    /// settling gives back what was not used, or charges what went past
    /// the estimate.
    ///
    /// ```
    /// # use ratekeeper_core::{Algorithm, Limiter, Rule};
    /// # async fn run(limiter: Limiter, call_model: impl AsyncFn() -> u64) -> Result<(), Box<dyn std::error::Error>> {
    /// let tokens = Rule::new("llm-tokens", Algorithm::TokenBucket, "10000/minute".parse()?)?;
    /// let mut reservation = limiter.reserve(&tokens, "team-a", 500).await?;
    /// if reservation.is_allowed() {
    ///     let used = call_model().await;
    ///     reservation.settle(used).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn reserve(&self, rule: &Rule, key: &str, estimate: u64) -> Result<Reservation> {
        self.reserve_each(&[(rule, key, estimate)]).await
    }

    /// [`reserve`](Self::reserve) on several rules, each with its key and
    /// its estimate, all or nothing like [`check_each`](Self::check_each)
    /// (tokens and calls of a model in one step).
    pub async fn reserve_each(&self, checks: &[(&Rule, &str, u64)]) -> Result<Reservation> {
        let (taken_at, decisions) = self.decide_each(checks, true).await?;
        let entries = checks
            .iter()
            .map(|(rule, key, estimate)| {
                // Short keys are held inline, with nothing allocated.
                let key = smol_str::SmolStr::new(bounded_key(key, self.inner.max_key_len));
                ((*rule).clone(), key, *estimate)
            })
            .collect();
        Reservation::new(self.clone(), entries, taken_at, decisions)
    }

    /// Takes a place in flight on `rule` (an
    /// [`Algorithm::Concurrency`](crate::Algorithm::Concurrency) rule, such
    /// as [`Rule::concurrency`]) for `key`: the [`Permit`] gives it back
    /// when released or dropped. A denied permit holds nothing; its
    /// decision says how many are in flight and when to try again.
    ///
    /// ```
    /// # use ratekeeper_core::{Limiter, Rule};
    /// # use std::time::Duration;
    /// # async fn run(limiter: Limiter) -> Result<(), Box<dyn std::error::Error>> {
    /// let exports = Rule::concurrency("exports", 2, Duration::from_secs(600))?;
    /// let permit = limiter.acquire(&exports, "team-7").await?;
    /// if permit.is_allowed() {
    ///     // ... run the export; the place is free again when `permit` drops.
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn acquire(&self, rule: &Rule, key: &str) -> Result<Permit> {
        self.acquire_each(&[(rule, key, 1)]).await
    }

    /// [`acquire`](Self::acquire) on several rules, each with its key and
    /// cost, all or nothing (as [`check_each`](Self::check_each)): places
    /// in flight on the concurrency rules and units of the rate rules, in
    /// one atomic step. A request a rate rule denies takes no place, and
    /// one without a place consumes no rate. Releasing gives back the
    /// places only: the rate was spent.
    pub async fn acquire_each(&self, checks: &[(&Rule, &str, u64)]) -> Result<Permit> {
        self.reserve_each(checks).await.map(Permit::new)
    }

    /// [`check_all`](Self::check_all) without waiting: the decision if the
    /// store can make it at once, `None` if it must wait (see
    /// [`check_cost_now`](Self::check_cost_now)).
    pub fn check_all_now(&self, checks: &[(&Rule, &str)], cost: u64) -> Option<Result<Decision>> {
        let keys = self.bounded_keys(checks.iter().map(|(_, key)| *key));
        match entries(checks.iter().map(|(rule, _)| (*rule, cost)), &keys) {
            Ok(entries) => self.decide_now(&entries, cost),
            Err(e) => Some(Err(e)),
        }
    }

    /// One request of `cost` units against several rules over one key, all
    /// or nothing ([`check_all`](Self::check_all) with `key` for every rule;
    /// one rule is [`check_cost`](Self::check_cost), with nothing
    /// allocated): what an HTTP route with several limits asks.
    pub async fn check_rules(&self, rules: &[Rule], key: &str, cost: u64) -> Result<Decision> {
        match rules {
            [rule] => self.check_cost(rule, key, cost).await,
            rules => {
                let checks: Vec<_> = rules.iter().map(|r| (r, key)).collect();
                self.check_all(&checks, cost).await
            }
        }
    }

    /// [`check_rules`](Self::check_rules) without waiting: the decision if
    /// the store can make it at once, `None` if it must wait.
    pub fn check_rules_now(
        &self,
        rules: &[Rule],
        key: &str,
        cost: u64,
    ) -> Option<Result<Decision>> {
        match rules {
            [rule] => self.check_cost_now(rule, key, cost),
            rules => {
                let checks: Vec<_> = rules.iter().map(|r| (r, key)).collect();
                self.check_all_now(&checks, cost)
            }
        }
    }

    /// Each key bounded; one or two kept inline, with nothing allocated.
    fn bounded_keys<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Few<Cow<'a, str>> {
        keys.map(|key| bounded_key(key, self.inner.max_key_len))
            .collect()
    }

    #[inline]
    fn request<'a>(&self, entries: &'a [DecideEntry<'a>]) -> DecideRequest<'a> {
        DecideRequest {
            now: self.inner.clock.now(),
            entries,
        }
    }

    /// Forgets `rule`'s state for `key` (its counters and any penalty). `true`
    /// if there was state.
    pub async fn reset(&self, rule: &Rule, key: &str) -> Result<bool> {
        self.inner.storage.delete(&self.state_key(rule, key)).await
    }
}

/// Whether one of `rules` makes requests wait in line on a bucket.
#[inline]
fn waits_in_line<'a>(mut rules: impl Iterator<Item = &'a Rule>) -> bool {
    rules.any(Rule::has_line)
}

/// Whether one of `rules` makes requests wait in line, on a bucket or for
/// a place in flight.
#[inline]
fn waits<'a>(mut rules: impl Iterator<Item = &'a Rule>) -> bool {
    rules.any(|rule| rule.has_line() || rule.queue().is_some())
}

/// The entries of a multi-rule check, from each rule and cost and the bounded
/// keys; the same rule and key twice is an error.
fn entries<'a>(
    rules: impl Iterator<Item = (&'a Rule, u64)>,
    keys: &'a [Cow<'_, str>],
) -> Result<Few<DecideEntry<'a>>> {
    let entries: Few<DecideEntry<'a>> = rules
        .zip(keys)
        .map(|((rule, cost), key)| DecideEntry { key, rule, cost })
        .collect();
    no_duplicates(entries.iter().map(|e| (e.rule, e.key)))?;
    Ok(entries)
}

/// An error if the same rule and key appear twice.
fn no_duplicates<'a>(pairs: impl Iterator<Item = (&'a Rule, &'a str)> + Clone) -> Result<()> {
    for (i, (rule, key)) in pairs.clone().enumerate() {
        if pairs
            .clone()
            .skip(i + 1)
            .any(|(r, k)| rule.name() == r.name() && key == k)
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the same rule and key appear twice in one check ({:?})",
                    state_key(rule, key)
                ),
            ));
        }
    }
    Ok(())
}
