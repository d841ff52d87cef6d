//! Waiting: for a turn on a bucket with a line ([`Limiter::until_ready`]),
//! and for a place in flight on a concurrency rule with a line (the line
//! each limiter keeps, per rule and key: first come, first let in).

use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::Limiter;
use crate::clock::Timestamp;
use crate::decision::Decision;
use crate::error::Result;
use crate::rule::{Rule, Wait};

/// How often the first in line for a place in flight looks again at the
/// store when no release through its limiter wakes it: a place freed by
/// another process, or by a lease that expired, is seen within this.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// How long `until_ready` without a bound waits in line for a place: a year
/// stands for ever.
const WITHOUT_END: Duration = Duration::from_secs(365 * 86_400);

impl Limiter {
    /// Waits until one unit is granted, then returns the admission. For
    /// throttling outgoing work (calls to a third-party API, queue consumers).
    pub async fn until_ready(&self, rule: &Rule, key: &str) -> Result<Decision> {
        self.until_ready_cost(rule, key, 1, None).await
    }

    /// Waits until `cost` units are granted. With `max_wait`, gives up when the
    /// next wait would go past it and returns that denial instead.
    ///
    /// On a rule whose requests [wait in line](Rule::with_wait), the
    /// request takes a place in line (in a line no longer than `max_wait`)
    /// and sleeps until its turn: one store call, and waiters are let in
    /// one at a time, in the order they were placed; when the line is
    /// full, it sleeps until a place opens and asks again. On other rules
    /// it sleeps until the store says a request would fit, and asks again
    /// (waiters then race for each unit that comes back: give the rule a
    /// line to have them wait in turn). On a concurrency rule that waits
    /// for a place, the request waits in its line as long as it may
    /// (`max_wait`, or without end), keeping its place.
    pub async fn until_ready_cost(
        &self,
        rule: &Rule,
        key: &str,
        cost: u64,
        max_wait: Option<Duration>,
    ) -> Result<Decision> {
        let clock = &self.inner.clock;
        let started = clock.now();
        loop {
            let waited = clock.now().saturating_duration_since(started);
            let left = max_wait.map(|max| max.saturating_sub(waited));
            let cut = in_line_for(rule, left);
            let asked = cut.as_ref().unwrap_or(rule);
            let decision = self.check_cost(asked, key, cost.max(1)).await?;
            let wait = match decision.retry_after() {
                None => return Ok(decision),
                Some(wait) => wait.max(Duration::from_micros(1)),
            };
            // Asking again then finds a place at the end of the line, a
            // line's length from its turn.
            if left.is_some_and(|left| wait.saturating_add(asked.line_length()) > left) {
                return Ok(decision);
            }
            clock.sleep(wait).await;
        }
    }

    /// [`decide_each`](Self::decide_each) for a request that may wait for
    /// a place in flight (see [`Rule::with_wait`]). When no one waits in
    /// its lines, it asks the store at once; denied for want of a place
    /// only, or when others wait already, it joins the line of each such
    /// rule and key (denied at once when one is full), waits to be first in
    /// all of them, then asks the store until it is let in, a rule without
    /// a line denies it, or its wait is over. Counted and logged once, by
    /// its last decision.
    pub(super) async fn decide_for_place(
        &self,
        checks: &[(&Rule, &str, u64)],
        at: bool,
    ) -> Result<(Timestamp, Vec<Decision>)> {
        let clock = &self.inner.clock;
        // The lines in the order of their keys: two requests in the same
        // lines take their turns in the same order, and never wait on each
        // other.
        let mut lines: Vec<(String, usize, Wait)> = checks
            .iter()
            .enumerate()
            .filter(|(_, (_, _, cost))| *cost > 0)
            .filter_map(|(i, (rule, key, _))| Some((self.state_key(rule, key), i, rule.queue()?)))
            .collect();
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        let up_to = lines.iter().map(|(_, _, wait)| wait.up_to()).min();
        let deadline = clock.now().saturating_add(up_to.unwrap_or_default());
        let lined: Vec<usize> = lines.iter().map(|(_, i, _)| *i).collect();
        // What the store would refuse is refused before taking a place.
        let keys = self.bounded_keys(checks.iter().map(|(_, key, _)| *key));
        let pairs = checks.iter().zip(&keys);
        super::no_duplicates(pairs.map(|((rule, _, _), key)| (*rule, key.as_ref())))?;
        for (rule, _, cost) in checks {
            crate::engine::check_cost(rule, *cost)?;
        }
        let mut first = None;
        if lines.iter().all(|(key, _, _)| !self.inner.lines.has(key)) {
            let (taken_at, decisions) = self.decided(checks, at).await?;
            if waits_for_place(checks, &decisions, &lined).is_none() {
                return self.answered(checks, taken_at, decisions);
            }
            first = Some((taken_at, decisions));
        }
        let mut places = Vec::with_capacity(lines.len());
        for (key, i, wait) in &lines {
            let units = checks.get(*i).map_or(1, |(_, _, cost)| *cost);
            match self.inner.lines.join(key, units, wait.waiters()) {
                Some(place) => places.push(place),
                None => {
                    drop(places);
                    return self.turned_away(checks, *i, first).await;
                }
            }
        }
        let mut waited_out = None;
        for (place, i) in places.iter_mut().zip(&lined) {
            let left = deadline.saturating_duration_since(clock.now());
            if first_of(place.turn(), clock.sleep(left)).await.is_none() {
                waited_out = Some(*i);
                break;
            }
        }
        if let Some(i) = waited_out {
            drop(places);
            return self.turned_away(checks, i, None).await;
        }
        loop {
            let (taken_at, decisions) = self.decided(checks, at).await?;
            let left = deadline.saturating_duration_since(clock.now());
            let hint = waits_for_place(checks, &decisions, &lined);
            let Some(hint) = hint.filter(|_| !left.is_zero()) else {
                return self.answered(checks, taken_at, decisions);
            };
            let freed = places.iter().map(Place::freed);
            first_of(any_of(freed), clock.sleep(hint.min(left))).await;
            // A clock whose sleep returns at once must not starve the task
            // that would release a place.
            tokio::task::yield_now().await;
        }
    }

    /// One decision of the store for a request waiting for a place, not
    /// counted (its last one is); a store error is counted at once.
    async fn decided(
        &self,
        checks: &[(&Rule, &str, u64)],
        at: bool,
    ) -> Result<(Timestamp, Vec<Decision>)> {
        let decided = self.decide_once(checks, at, false).await;
        if let Err(e) = &decided {
            crate::observe::store_error(e);
        }
        decided
    }

    /// The last answer to a request for a place, counted and logged.
    fn answered(
        &self,
        checks: &[(&Rule, &str, u64)],
        at: Timestamp,
        decisions: Vec<Decision>,
    ) -> Result<(Timestamp, Vec<Decision>)> {
        let keys = self.bounded_keys(checks.iter().map(|(_, key, _)| *key));
        let rules = checks
            .iter()
            .map(|(rule, _, cost)| (rule.for_store(), *cost));
        let entries = super::entries(rules, &keys)?;
        let answer = Ok(decisions);
        crate::observe::decisions(&entries, &answer);
        answer.map(|decisions| (at, decisions))
    }

    /// The answer to a request turned away from a line for a place in
    /// flight (the line of `checks[i]` full, or its wait over before its
    /// turn): what each rule has left now (the store's `first` answer to
    /// the request, when it was asked, else a look), and a denial by the
    /// rule of that line. Nothing is taken.
    async fn turned_away(
        &self,
        checks: &[(&Rule, &str, u64)],
        i: usize,
        first: Option<(Timestamp, Vec<Decision>)>,
    ) -> Result<(Timestamp, Vec<Decision>)> {
        let (at, mut decisions) = match first {
            Some(first) => first,
            None => {
                let looks: Vec<_> = checks
                    .iter()
                    .map(|(rule, key, _)| (*rule, *key, 0))
                    .collect();
                self.decided(&looks, true).await?
            }
        };
        if let (Some((rule, _, _)), Some(d)) = (checks.get(i), decisions.get_mut(i)) {
            let wait = rule.queue().map_or(LOOK_AGAIN, Wait::up_to);
            // A place opens in the line when the first in it is let in,
            // or gives up: within its wait.
            let retry = d.retry_after().unwrap_or(wait).min(wait);
            *d = Decision::deny_by(rule, 0, d.reset_after(), retry);
        }
        self.answered(checks, at, decisions)
    }
}

/// `rule`'s line cut to `left` (for [`Limiter::until_ready_cost`]): the
/// same places, fewer when their turns would come later than `left`; a
/// line for a place in flight, as long as `left` (without end when there
/// is no bound). `None` when `rule` has no line, or its line on a bucket
/// needs no cut; a line with no place left within `left` is the rule
/// without it (a request then waits only for the store to let it in at
/// once).
fn in_line_for(rule: &Rule, left: Option<Duration>) -> Option<Rule> {
    let wait = rule.wait()?;
    let up_to = if rule.queue().is_some() {
        // For a place: in line as long as the caller may wait, keeping its
        // place (none left: asked without a line).
        left.unwrap_or(WITHOUT_END)
    } else {
        left.filter(|left| *left < wait.up_to())?
    };
    // Without the rule's penalty: a request its whole line would have
    // placed is not to block the key.
    let unlined = rule.without_wait();
    let cut = Wait::new(up_to, wait.waiters());
    Some(unlined.clone().with_wait(cut).unwrap_or(unlined))
}

/// When to look again at the store for a request denied for want of a
/// place only (every rule that denied it is one of the checks at `lined`,
/// with a line): the soonest of the denials' hints, between 1 ms and
/// [`LOOK_AGAIN`]. `None` when it was let in, or denied by another rule.
fn waits_for_place(
    checks: &[(&Rule, &str, u64)],
    decisions: &[Decision],
    lined: &[usize],
) -> Option<Duration> {
    let mut denied = checks
        .iter()
        .zip(decisions)
        .enumerate()
        .filter(|(_, ((_, _, cost), d))| *cost > 0 && !d.is_allowed())
        .peekable();
    denied.peek()?;
    denied.try_fold(LOOK_AGAIN, |soonest, (i, (_, d))| {
        let hint = d.retry_after().unwrap_or(LOOK_AGAIN);
        lined
            .contains(&i)
            .then(|| soonest.min(hint.max(Duration::from_millis(1))))
    })
}

/// The lines of one limiter for places in flight, by state key: a line is
/// kept while requests wait in it.
#[derive(Default)]
pub(super) struct Lines {
    lines: Mutex<HashMap<String, Entry>>,
    /// How many lines there are: a release looks for one only when some.
    open: AtomicUsize,
}

struct Entry {
    /// Units waiting in the line, the first in it included.
    waiting: u64,
    line: Arc<Line>,
}

struct Line {
    /// Held by the first in line. Tokio's semaphore hands its permit to
    /// waiters in the order they asked: the line's order.
    turn: Arc<Semaphore>,
    /// Told when a place is released through this limiter.
    freed: Notify,
}

impl Lines {
    /// Whether no request waits for a place.
    pub(super) fn is_empty(&self) -> bool {
        self.open.load(Ordering::Acquire) == 0
    }

    /// Whether requests wait in the line of `key`.
    fn has(&self, key: &str) -> bool {
        !self.is_empty() && self.lines.lock().contains_key(key)
    }

    /// A place for `units` at the end of the line of `key`; `None` when
    /// more than `waiters` units would then wait in it.
    fn join(self: &Arc<Self>, key: &str, units: u64, waiters: u64) -> Option<Place> {
        let mut lines = self.lines.lock();
        let waiting = lines.get(key).map_or(0, |entry| entry.waiting);
        if waiting.saturating_add(units) > waiters {
            return None;
        }
        let entry = lines.entry(key.to_owned()).or_insert_with(|| {
            self.open.fetch_add(1, Ordering::AcqRel);
            Entry {
                waiting: 0,
                line: Arc::new(Line {
                    turn: Arc::new(Semaphore::new(1)),
                    freed: Notify::new(),
                }),
            }
        });
        entry.waiting = entry.waiting.saturating_add(units);
        Some(Place {
            lines: Arc::clone(self),
            key: key.to_owned(),
            units,
            line: Arc::clone(&entry.line),
            turn: None,
        })
    }

    /// A place was released on `key`: the first in its line looks again.
    pub(super) fn freed(&self, key: &str) {
        if let Some(entry) = self.lines.lock().get(key) {
            entry.line.freed.notify_one();
        }
    }
}

/// A request's place in a line; it leaves the line when dropped.
struct Place {
    lines: Arc<Lines>,
    key: String,
    units: u64,
    line: Arc<Line>,
    /// Held while first in line.
    turn: Option<OwnedSemaphorePermit>,
}

impl Place {
    /// Waits to be first in line.
    async fn turn(&mut self) {
        // The semaphore is never closed.
        self.turn = Arc::clone(&self.line.turn).acquire_owned().await.ok();
    }

    /// Waits for a place to be released through this limiter (at once if
    /// one was since the first in line last looked).
    fn freed(&self) -> impl Future<Output = ()> + '_ {
        self.line.freed.notified()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        // The next in line goes first.
        drop(self.turn.take());
        let mut lines = self.lines.lines.lock();
        if let Some(entry) = lines.get_mut(&self.key) {
            entry.waiting = entry.waiting.saturating_sub(self.units);
            if entry.waiting == 0 {
                lines.remove(&self.key);
                self.lines.open.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// `future`'s output, or `None` when `timer` ends first.
async fn first_of<T>(
    future: impl Future<Output = T>,
    timer: impl Future<Output = ()>,
) -> Option<T> {
    let mut future = pin!(future);
    let mut timer = pin!(timer);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Ends when the first of `futures` ends (never when there are none).
async fn any_of<F: Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut futures: Vec<Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        if futures.iter_mut().any(|f| f.as_mut().poll(cx).is_ready()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}
