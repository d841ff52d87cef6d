//! Changes to budgets after the fact: charges and refunds.

use super::{Few, Limiter, no_duplicates};
use crate::decision::Decision;
use crate::error::{Error, ErrorKind, Result};
use crate::permit::holds_places;
use crate::rule::Rule;
use crate::storage::{AdjustEntry, AdjustRequest, Adjustment};

impl Limiter {
    /// Changes budgets after the fact, each rule with its key: a cost
    /// learned late ([`Adjustment::Charge`]) or units given back
    /// ([`Adjustment::Refund`]), atomically over every entry. Returns one
    /// decision per entry: what a request of one unit would get afterwards.
    /// See [`Storage::adjust`](crate::Storage::adjust). A refund to a rule that takes none
    /// ([`Rule::takes_refunds`]: requests wait in its line) is an
    /// [`ErrorKind::InvalidInput`] error, and nothing changes.
    pub async fn adjust(&self, changes: &[(&Rule, &str, Adjustment)]) -> Result<Vec<Decision>> {
        let keys = self.bounded_keys(changes.iter().map(|(_, key, _)| *key));
        let entries = adjust_entries(changes, &keys)?;
        let request = self.adjust_request(&entries);
        let decisions = match self.inner.storage.adjust_now(&request) {
            Some(decisions) => decisions?,
            None => self.inner.storage.adjust(&request).await?,
        };
        Ok(self.adjusted(changes, decisions))
    }

    /// [`adjust`](Self::adjust) without waiting: the answer if the store
    /// can make the change at once ([`Storage::adjust_now`](crate::Storage::adjust_now)), `None` if it
    /// must wait (then call `adjust`).
    pub(crate) fn adjust_now(
        &self,
        changes: &[(&Rule, &str, Adjustment)],
    ) -> Option<Result<Vec<Decision>>> {
        let keys = self.bounded_keys(changes.iter().map(|(_, key, _)| *key));
        let entries = match adjust_entries(changes, &keys) {
            Ok(entries) => entries,
            Err(e) => return Some(Err(e)),
        };
        let decisions = self
            .inner
            .storage
            .adjust_now(&self.adjust_request(&entries))?;
        Some(decisions.map(|decisions| self.adjusted(changes, decisions)))
    }

    fn adjust_request<'a>(&self, entries: &'a [AdjustEntry<'a>]) -> AdjustRequest<'a> {
        AdjustRequest {
            now: self.inner.clock.now(),
            entries,
        }
    }

    /// What the store answered to `changes`, as each rule's clients see it;
    /// a place in flight given back lets the first waiting for one in.
    fn adjusted(
        &self,
        changes: &[(&Rule, &str, Adjustment)],
        mut decisions: Vec<Decision>,
    ) -> Vec<Decision> {
        if !self.inner.lines.is_empty() {
            for (rule, key, change) in changes {
                if matches!(change, Adjustment::Refund { units: 1.., .. }) && holds_places(rule) {
                    self.inner.lines.freed(&self.state_key(rule, key));
                }
            }
        }
        // Only a rule with a line on a bucket reads the store's answer
        // differently: without one, the answer is the store's as it is
        // (one per change at most, as the pairing below gives).
        if !super::waits_in_line(changes.iter().map(|(rule, _, _)| *rule)) {
            decisions.truncate(changes.len());
            return decisions;
        }
        decisions
            .into_iter()
            .zip(changes)
            .map(|(decision, (rule, _, _))| rule.read_store(decision).0)
            .collect()
    }

    /// Charges `units` of `rule` for `key` after the fact, whatever is
    /// left: never refused, and what goes past the limit is owed (see
    /// [`Adjustment::Charge`]). Returns what a request would get now.
    pub async fn charge(&self, rule: &Rule, key: &str, units: u64) -> Result<Decision> {
        self.adjust_one(rule, key, Adjustment::Charge(units)).await
    }

    /// Gives `units` of `rule` back to `key` (the newest units, see
    /// [`Adjustment::Refund`]; a [`Reservation`](crate::Reservation) knows when its units were
    /// taken and gives back exactly those). Returns what a request would
    /// get now; an [`ErrorKind::InvalidInput`] error on a rule that takes
    /// no refund ([`Rule::takes_refunds`]).
    pub async fn refund(&self, rule: &Rule, key: &str, units: u64) -> Result<Decision> {
        let refund = Adjustment::Refund {
            units,
            taken_at: None,
        };
        self.adjust_one(rule, key, refund).await
    }

    async fn adjust_one(&self, rule: &Rule, key: &str, change: Adjustment) -> Result<Decision> {
        let decisions = self.adjust(&[(rule, key, change)]).await?;
        decisions.into_iter().next().ok_or_else(|| {
            Error::new(
                ErrorKind::Other,
                "the store answered no decision for one rule",
            )
        })
    }
}

/// The store's entries for `changes`, over their bounded `keys`: an
/// [`ErrorKind::InvalidInput`] error for the same rule and key twice, or a
/// refund to a rule that takes none ([`Rule::takes_refunds`]: requests
/// wait in its line).
fn adjust_entries<'a>(
    changes: &'a [(&'a Rule, &'a str, Adjustment)],
    keys: &'a [std::borrow::Cow<'_, str>],
) -> Result<Few<AdjustEntry<'a>>> {
    let entries: Few<AdjustEntry<'a>> = changes
        .iter()
        .zip(keys)
        .map(|((rule, _, adjustment), key)| AdjustEntry {
            key,
            rule: rule.for_store(),
            adjustment: *adjustment,
        })
        .collect();
    no_duplicates(entries.iter().map(|e| (e.rule, e.key)))?;
    if let Some((rule, _, _)) = changes.iter().find(|(rule, _, change)| {
        !rule.takes_refunds() && matches!(change, Adjustment::Refund { units: 1.., .. })
    }) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "rule {:?} makes requests wait in line and takes no refund: moving the end \
                 of its line back would give the next request a turn beside one still waiting",
                rule.name()
            ),
        ));
    }
    Ok(entries)
}
