//! Reference models: obviously-correct implementations of each algorithm,
//! written from the definitions rather than from the core's code.
//!
//! A model keeps the whole history of admitted requests and answers every
//! question from it: usage is a sum over the history, the theoretical arrival
//! time is folded from it, and `retry_after` is found by searching time for the
//! first instant at which the request would fit. The core's algorithms keep
//! small incremental states instead; property tests drive both with the same
//! requests and require identical decisions.

use ratekeeper_core::{Algorithm, Decision, Rule};

/// What a model says about one request (times in µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Units left after it.
    pub remaining: u64,
    /// µs until the full limit is back.
    pub reset_after: u64,
    /// When denied: µs until it would fit.
    pub retry_after: Option<u64>,
}

impl Expected {
    /// The same fields read off a core [`Decision`].
    pub fn of(decision: &Decision) -> Self {
        Self {
            allowed: decision.is_allowed(),
            remaining: decision.remaining(),
            reset_after: micros(decision.reset_after()),
            retry_after: decision.retry_after().map(micros),
        }
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Units a [`Model`] admitted for a reservation, to settle later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// When they were admitted (µs).
    pub at: u64,
    /// How many.
    pub units: u64,
}

/// What moves a bucket's theoretical arrival time, in order.
#[derive(Debug, Clone, Copy)]
enum BucketEvent {
    /// Units admitted at an instant.
    Admit { at: u64, cost: u64 },
    /// A refund at an instant, moving the TAT back by this many µs.
    Refund { at: u64, back: u64 },
}

/// A reference model of one rule for one key.
#[derive(Debug, Clone)]
pub struct Model {
    rule: Rule,
    /// Admitted units net of refunds, as `(time, cost)`: what the window
    /// algorithms count, and what every algorithm's promise is about.
    admitted: Vec<(u64, u64)>,
    /// What the buckets' TAT is folded from.
    bucket: Vec<BucketEvent>,
    blocked_until: u64,
}

impl Model {
    /// A model of `rule` with no history.
    pub fn new(rule: Rule) -> Self {
        Self {
            rule,
            admitted: Vec::new(),
            bucket: Vec::new(),
            blocked_until: 0,
        }
    }

    /// Every admitted `(time, cost)`, in order, net of refunds.
    pub fn admitted(&self) -> &[(u64, u64)] {
        &self.admitted
    }

    /// The rule.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    fn window(&self) -> u64 {
        self.rule.quota().window_micros()
    }

    fn limit(&self) -> u64 {
        self.rule.quota().limit()
    }

    fn interval(&self) -> u64 {
        self.rule.quota().emission_interval_us()
    }

    fn sum(&self, from: u64, to: u64) -> u64 {
        // Costs admitted at instants in [from, to).
        self.admitted
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, c)| c)
            .sum()
    }

    /// The theoretical arrival time after the whole history (GCRA's definition:
    /// each admission of cost c moves it to max(TAT, t) + c × interval; a
    /// refund at t moves it back, never before t).
    pub fn tat(&self) -> u64 {
        let t = self.interval();
        self.bucket.iter().fold(0, |tat, event| match *event {
            BucketEvent::Admit { at, cost } => tat.max(at) + cost * t,
            BucketEvent::Refund { at, back } => tat.saturating_sub(back).max(at),
        })
    }

    /// Units a request could take at `now`, given the history.
    pub fn available(&self, now: u64) -> u64 {
        let w = self.window();
        let aligned = now - now % w;
        match self.rule.algorithm() {
            Algorithm::FixedWindow => self.limit().saturating_sub(self.sum(aligned, aligned + w)),
            // Leases in flight count as a log's entries until released
            // (a settle) or past their window.
            Algorithm::SlidingWindowLog | Algorithm::Concurrency => self
                .limit()
                .saturating_sub(self.sum((now + 1).saturating_sub(w), now + 1)),
            Algorithm::SlidingWindowCounter => {
                let current = self.sum(aligned, aligned + w);
                let previous = self.sum(aligned.saturating_sub(w), aligned);
                let left = u128::from(w - (now - aligned));
                let weighted = (u128::from(previous) * left).div_ceil(u128::from(w)) as u64;
                self.limit().saturating_sub(weighted + current)
            }
            _ => {
                let t = self.interval();
                let burst_span = self.rule.quota().burst() * t;
                (now + burst_span).saturating_sub(self.tat().max(now)) / t
            }
        }
    }

    /// µs from `now` until the full limit is back.
    pub fn reset_after(&self, now: u64) -> u64 {
        let w = self.window();
        let aligned = now - now % w;
        match self.rule.algorithm() {
            Algorithm::FixedWindow => {
                if self.sum(aligned, aligned + w) > 0 {
                    aligned + w - now
                } else {
                    0
                }
            }
            // Leases in flight count as a log's entries until released
            // (a settle) or past their window.
            Algorithm::SlidingWindowLog | Algorithm::Concurrency => self
                .admitted
                .iter()
                .map(|(t, _)| t + w)
                .filter(|end| *end > now)
                .max()
                .map_or(0, |end| end - now),
            Algorithm::SlidingWindowCounter => {
                if self.sum(aligned, aligned + w) > 0 {
                    aligned + 2 * w - now
                } else if self.sum(aligned.saturating_sub(w), aligned) > 0 {
                    aligned + w - now
                } else {
                    0
                }
            }
            _ => self.tat().max(now) - now,
        }
    }

    fn fits(&self, now: u64, units: u64) -> bool {
        self.available(now) >= units
    }

    /// The first instant after `now` at which `units` would fit, found by
    /// searching time (admission only becomes easier as time passes).
    fn first_fit_after(&self, now: u64, units: u64) -> u64 {
        let mut hi = 2 * self.window() + 2 * self.rule.quota().burst() * self.interval() + 2;
        assert!(self.fits(now + hi, units), "a request must fit eventually");
        let mut lo = 0;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.fits(now + mid, units) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// Decides a request of `cost` units (0 = peek) at `now` and records it.
    /// `now` must not go backwards between calls.
    pub fn check(&mut self, now: u64, cost: u64) -> Expected {
        let units = cost.max(1);
        if now < self.blocked_until {
            let wait = self.blocked_until - now;
            return Expected {
                allowed: false,
                remaining: 0,
                reset_after: self.reset_after(now).max(wait),
                retry_after: Some(wait),
            };
        }
        if self.fits(now, units) {
            if cost > 0 {
                self.admitted.push((now, cost));
                self.bucket.push(BucketEvent::Admit { at: now, cost });
            }
            return Expected {
                allowed: true,
                remaining: self.available(now),
                reset_after: self.reset_after(now),
                retry_after: None,
            };
        }
        let mut retry = self.first_fit_after(now, units);
        if self.rule.algorithm() == Algorithm::Concurrency {
            // Leases end when released, which nobody can foresee: the wait
            // told is at most a second.
            retry = retry.min(1_000_000);
        }
        match self.rule.penalty() {
            Some(p) if cost > 0 => {
                let p = micros(p);
                self.blocked_until = now + p;
                Expected {
                    allowed: false,
                    remaining: 0,
                    reset_after: self.reset_after(now).max(p),
                    retry_after: Some(retry.max(p)),
                }
            }
            _ => Expected {
                allowed: false,
                remaining: self.available(now),
                reset_after: self.reset_after(now),
                retry_after: Some(retry),
            },
        }
    }

    /// [`check`](Self::check) for a reservation of `estimate` units: what
    /// it took, to [`settle`](Self::settle), when admitted.
    pub fn reserve(&mut self, now: u64, estimate: u64) -> (Expected, Option<Taken>) {
        let expected = self.check(now, estimate);
        let taken = (expected.allowed && estimate > 0).then_some(Taken {
            at: now,
            units: estimate,
        });
        (expected, taken)
    }

    /// Settles a reservation at `actual` units (at most what it took), at
    /// `now`, as the documentation of
    /// [`Adjustment::Refund`](ratekeeper_core::Adjustment) says: units that
    /// no longer count are not given back. On the window algorithms the
    /// units left over are removed from the history, as if never admitted
    /// (the fixed window only within the window they were taken in; the
    /// counter only within that window and the next). On the buckets the
    /// TAT moves back by the part of them that cannot have refilled yet,
    /// had they begun to right after the `actual` units kept. Returns what a peek
    /// sees afterwards.
    pub fn settle(&mut self, now: u64, taken: Taken, actual: u64) -> Expected {
        assert!(
            actual <= taken.units,
            "the model settles at or below the estimate"
        );
        let back = taken.units - actual;
        let w = self.window();
        let counts = match self.rule.algorithm() {
            Algorithm::FixedWindow => now - now % w == taken.at - taken.at % w,
            Algorithm::SlidingWindowCounter => (now - now % w).saturating_sub(w) <= taken.at,
            _ => true,
        };
        if back > 0 && counts {
            if let Some(entry) = self
                .admitted
                .iter_mut()
                .find(|(at, cost)| *at == taken.at && *cost >= back)
            {
                entry.1 -= back;
            }
            self.admitted.retain(|(_, cost)| *cost > 0);
        }
        if back > 0 && self.rule.algorithm().uses_burst() {
            let span = back * self.interval();
            let from = taken.at + actual * self.interval();
            let back = span.min((from + span).saturating_sub(now));
            self.bucket.push(BucketEvent::Refund { at: now, back });
        }
        self.check(now, 0)
    }

    /// Checks the promise the algorithm makes about the whole history, without
    /// reference to any implementation; returns what was broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        let w = self.window();
        let limit = self.limit();
        match self.rule.algorithm() {
            Algorithm::FixedWindow | Algorithm::SlidingWindowCounter => {
                // No aligned window ever holds more than the limit.
                for (t, _) in &self.admitted {
                    let start = t - t % w;
                    let used = self.sum(start, start + w);
                    if used > limit {
                        return Err(format!("window at {start} admitted {used} > {limit}"));
                    }
                }
            }
            Algorithm::SlidingWindowLog | Algorithm::Concurrency => {
                // No sliding window ever holds more than the limit (for
                // concurrency: never more than the limit in flight).
                for (t, _) in &self.admitted {
                    let used = self.sum((t + 1).saturating_sub(w), t + 1);
                    if used > limit {
                        return Err(format!(
                            "sliding window ending at {t} admitted {used} > {limit}"
                        ));
                    }
                }
            }
            _ => {
                // Between any two admissions, at most burst + elapsed / interval units.
                let burst = self.rule.quota().burst();
                let t = self.interval();
                for (i, (a, _)) in self.admitted.iter().enumerate() {
                    for (b, _) in self.admitted.iter().skip(i) {
                        let used = self.sum(*a, b + 1);
                        let bound = burst + (b - a) / t;
                        if used > bound {
                            return Err(format!("[{a}, {b}] admitted {used} > {bound}"));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
