//! Reservations: an estimate taken now, settled at the real cost later.

use smol_str::SmolStr;

use crate::clock::Timestamp;
use crate::decision::Decision;
use crate::error::{Error, ErrorKind, Result};
use crate::limiter::Limiter;
use crate::rule::Rule;
use crate::storage::Adjustment;

/// Units taken by [`Limiter::reserve`] or [`Limiter::reserve_each`], to
/// settle at the real cost once it is known.
///
/// Settling compares the real cost with the estimate, rule by rule: what
/// was not used is given back (to the window it was taken in: a
/// reservation knows when its units were taken; on the buckets, less what
/// could have refilled since), what went past the
/// estimate is charged, never refused, and owed if it takes the key past
/// its limit (see [`Adjustment`]); a rule whose requests
/// [wait in line](Rule::with_wait) keeps the estimate, as it takes no
/// refund. A reservation dropped without settling
/// keeps the estimate. A denied reservation took nothing: settling it
/// changes nothing and returns its decisions. A reservation is settled
/// once; when settling fails (the store is down), it stays open and can be
/// settled again (after a store deadline the change may have been made
/// already, and settling again makes it twice: the estimate errs the
/// other way).
///
/// On a [`Concurrency`](crate::Algorithm::Concurrency) rule the units are
/// places in flight: what a settle keeps (and a charge past the estimate
/// takes) stays held until the rule's window has passed, and only what it
/// gives back comes back before. To hold places and give them back when the
/// work ends, take a [`Permit`](crate::Permit) ([`Limiter::acquire`], or
/// [`take_places`](Self::take_places) from a reservation).
#[derive(Debug)]
#[must_use = "settle the reservation at the real cost, or its estimate stands"]
pub struct Reservation {
    limiter: Limiter,
    /// Each rule, its bounded key and its estimate.
    entries: Vec<(Rule, SmolStr, u64)>,
    taken_at: Timestamp,
    decisions: Vec<Decision>,
    /// The most restrictive of `decisions`.
    decision: Decision,
    admitted: bool,
    settled: bool,
    /// Whether its places in flight were moved into a permit
    /// ([`take_places`](Self::take_places)): settling leaves them alone.
    places_taken: bool,
}

impl Reservation {
    /// A reservation of `entries`, decided at `taken_at`; an error unless
    /// the store answered one decision per entry.
    pub(crate) fn new(
        limiter: Limiter,
        entries: Vec<(Rule, SmolStr, u64)>,
        taken_at: Timestamp,
        decisions: Vec<Decision>,
    ) -> Result<Self> {
        let decision = match Decision::most_restrictive(&decisions) {
            Some(d) if decisions.len() == entries.len() => d.clone(),
            _ => {
                return Err(Error::new(
                    ErrorKind::Other,
                    "the store did not answer one decision per rule",
                ));
            }
        };
        // Admitted when every rule charged allows (a rule only looked at
        // never holds the others back).
        let admitted = entries
            .iter()
            .zip(&decisions)
            .all(|((_, _, estimate), d)| *estimate == 0 || d.is_allowed());
        Ok(Self {
            limiter,
            entries,
            taken_at,
            decisions,
            decision,
            admitted,
            settled: false,
            places_taken: false,
        })
    }

    /// Whether the estimate was taken: every rule charged allowed it.
    pub fn is_allowed(&self) -> bool {
        self.admitted
    }

    /// The most restrictive of [`decisions`](Self::decisions), as
    /// [`Limiter::check_all`] reports.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// One decision per rule, in order, as [`Limiter::check_each`] reports.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// When the units were taken (the limiter's clock).
    pub fn taken_at(&self) -> Timestamp {
        self.taken_at
    }

    /// Whether it has been settled (or cancelled).
    pub fn is_settled(&self) -> bool {
        self.settled
    }

    /// Settles a reservation of one rule at `actual` units; returns what a
    /// request would get afterwards. A reservation of several rules is
    /// settled with [`settle_each`](Self::settle_each), one cost per rule
    /// (the tokens a call used are not the calls it made): here it is an
    /// [`ErrorKind::InvalidInput`] error.
    pub async fn settle(&mut self, actual: u64) -> Result<Decision> {
        if self.entries.len() != 1 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a reservation of {} rules is settled with settle_each, one cost per rule",
                    self.entries.len()
                ),
            ));
        }
        let decisions = self.settle_each(&[actual]).await?;
        Decision::most_restrictive(&decisions)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::Other, "the store answered no decision"))
    }

    /// Settles rule `i` at `actual[i]` units, all rules in one atomic
    /// step; returns one decision per rule. `actual` must have one cost per
    /// rule reserved, and the reservation must not be settled yet, or this
    /// is an [`ErrorKind::InvalidInput`] error and nothing changes.
    pub async fn settle_each(&mut self, actual: &[u64]) -> Result<Vec<Decision>> {
        if self.settled {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "this reservation is settled already",
            ));
        }
        if actual.len() != self.entries.len() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a reservation of {} rules settled with {} costs",
                    self.entries.len(),
                    actual.len()
                ),
            ));
        }
        if !self.admitted {
            self.settled = true;
            return Ok(self.decisions.clone());
        }
        let changes: Vec<(&Rule, &str, Adjustment)> = self
            .entries
            .iter()
            .zip(actual)
            .map(|((rule, key, estimate), actual)| {
                let change = if self.places_taken && crate::permit::holds_places(rule) {
                    Adjustment::Charge(0)
                } else if actual >= estimate {
                    Adjustment::Charge(actual - estimate)
                } else if !rule.takes_refunds() {
                    // A rule with a line keeps its units (see `Rule::takes_refunds`).
                    Adjustment::Charge(0)
                } else {
                    let units = estimate - actual;
                    Adjustment::Refund {
                        units,
                        taken_at: Some(self.counted_from(rule, *actual)),
                    }
                };
                (rule, key.as_str(), change)
            })
            .collect();
        let decisions = self.limiter.adjust(&changes).await?;
        self.settled = true;
        Ok(decisions)
    }

    /// When the units a settlement at `actual` gives back on `rule` began
    /// to count: on the windows, when they were taken; on the buckets,
    /// after the `actual` units kept, which refill first (the units are
    /// alike: those kept are counted as the first of the reservation). Not
    /// from where the reservation's units stood in the key's debt: a refund
    /// of units ahead of them moves them up, and the store cannot tell, so
    /// counting from there gave back units that had refilled. A refund
    /// gives back only what has not refilled since.
    fn counted_from(&self, rule: &Rule, actual: u64) -> Timestamp {
        if !rule.algorithm().uses_burst() {
            return self.taken_at;
        }
        let kept = actual.saturating_mul(rule.for_store().quota().emission_interval_us());
        Timestamp::from_micros(self.taken_at.as_micros().saturating_add(kept))
    }

    /// Moves the places in flight it took (the units of its
    /// [`Concurrency`](crate::Algorithm::Concurrency) rules) into a
    /// [`Permit`](crate::Permit) that releases them when dropped; the
    /// reservation keeps its rate rules, and settling it leaves those
    /// places alone. `None` when it was denied, took no place, or they were
    /// moved already. For work whose cost is settled when it ends and whose
    /// places must be held until then (an HTTP response counted by its
    /// status, whose body is still being sent).
    pub fn take_places(&mut self) -> Option<crate::Permit> {
        if !self.admitted || self.places_taken {
            return None;
        }
        let (entries, decisions): (Vec<_>, Vec<_>) = self
            .entries
            .iter()
            .zip(&self.decisions)
            .filter(|((rule, _, units), _)| *units > 0 && crate::permit::holds_places(rule))
            .map(|(entry, decision)| (entry.clone(), decision.clone()))
            .unzip();
        if entries.is_empty() {
            return None;
        }
        let places = Self::new(self.limiter.clone(), entries, self.taken_at, decisions).ok()?;
        self.places_taken = true;
        Some(crate::Permit::new(places))
    }

    /// The limiter it was taken on.
    pub(crate) fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The refunds that give back its places in flight (the units of its
    /// [`Concurrency`](crate::Algorithm::Concurrency) rules, at the instant
    /// they were taken); none when it was denied.
    pub(crate) fn leases(&self) -> crate::limiter::Few<(&Rule, &str, Adjustment)> {
        if !self.admitted {
            return crate::limiter::Few::new();
        }
        let taken = (self.entries.iter()).map(|(rule, key, units)| (rule, key.as_str(), *units));
        crate::permit::leases(taken, self.taken_at)
    }

    /// Gives the whole estimate back: the work was not done (rules that
    /// take no refund, see [`Rule::takes_refunds`], keep it).
    pub async fn cancel(&mut self) -> Result<Vec<Decision>> {
        let none = vec![0; self.entries.len()];
        self.settle_each(&none).await
    }
}
