//! Rules with settings of their own: shadow rules, decided and counted but
//! never denying (a new limit tried on live traffic beside the ones in
//! force), and rules left out of the rate-limit headers (a limit clients
//! need not see, such as a global safety net).
//!
//! A route with such a rule is decided rule by rule (`check_each`, or
//! `reserve_each` on a route counting only some responses): when only
//! shadow rules deny, the request is decided again with them looked at
//! only, so that the rules in force are charged as if the shadow rules were
//! not there.

use std::collections::HashSet;

use ratekeeper_core::{Decision, Limiter, Result, Rule};
use smol_str::SmolStr;

use super::count::Settlement;
use super::routes::Limits;

/// The rules, by name, in shadow mode and without headers.
#[derive(Debug, Default, Clone)]
pub(crate) struct PerRule {
    shadow: HashSet<SmolStr>,
    hidden: HashSet<SmolStr>,
}

/// What deciding a request on rules with settings of their own found.
pub(crate) struct Decided {
    /// The denial of a rule in force, or else the most restrictive decision
    /// of the rules the headers show (neither hidden nor in shadow mode; of
    /// all rules, when none is shown).
    pub(crate) decision: Decision,
    /// Whether `decision`'s rule is shown in the headers.
    pub(crate) headers: bool,
    /// The most restrictive denial of a shadow rule, when only shadow
    /// rules denied: reported, never enforced.
    pub(crate) shadow_denial: Option<Decision>,
    /// On a route counting only some responses, what settles the request.
    pub(crate) settlement: Option<Settlement>,
}

impl PerRule {
    /// Puts `names` in shadow mode.
    pub(crate) fn shadow(&mut self, names: impl IntoIterator<Item = impl AsRef<str>>) {
        self.shadow
            .extend(names.into_iter().map(|n| SmolStr::new(n.as_ref())));
    }

    /// Leaves `names` out of the rate-limit headers.
    pub(crate) fn hide(&mut self, names: impl IntoIterator<Item = impl AsRef<str>>) {
        self.hidden
            .extend(names.into_iter().map(|n| SmolStr::new(n.as_ref())));
    }

    /// Whether nothing is set.
    pub(crate) fn is_empty(&self) -> bool {
        self.shadow.is_empty() && self.hidden.is_empty()
    }

    /// Whether the headers show `rule`: neither hidden nor in shadow mode
    /// (a rule being tried must not change what clients see).
    fn shows(&self, rule: &str) -> bool {
        !self.hidden.contains(rule) && !self.shadow.contains(rule)
    }

    /// Whether any of `rules` has a setting of its own.
    pub(crate) fn applies(&self, rules: &[Rule]) -> bool {
        rules
            .iter()
            .any(|r| self.shadow.contains(r.name()) || self.hidden.contains(r.name()))
    }

    /// The rules in shadow mode.
    pub(crate) fn shadow_rules(&self) -> impl Iterator<Item = &str> {
        self.shadow.iter().map(SmolStr::as_str)
    }

    /// The rules left out of the headers.
    pub(crate) fn hidden_rules(&self) -> impl Iterator<Item = &str> {
        self.hidden.iter().map(SmolStr::as_str)
    }

    /// Decides a request of `limits` on `key`, rule by rule.
    pub(crate) async fn decide(
        &self,
        limiter: &Limiter,
        limits: &Limits,
        key: &str,
    ) -> Result<Decided> {
        let rules = &*limits.rules;
        let mut costs = vec![limits.cost; rules.len()];
        let mut shadow_denial = None;
        // At most two rounds: the second with the denying shadow rules
        // looked at only.
        let (decisions, settlement) = loop {
            let checks: Vec<(&Rule, &str, u64)> = rules
                .iter()
                .zip(&costs)
                .map(|(rule, cost)| (rule, key, *cost))
                .collect();
            let (decisions, settlement) = match &limits.count_when {
                Some(when) => {
                    let reservation = limiter.reserve_each(&checks).await?;
                    let decisions = reservation.decisions().to_vec();
                    let settlement = reservation
                        .is_allowed()
                        .then(|| Settlement::new(when.clone(), reservation));
                    (decisions, settlement)
                }
                None => (limiter.check_each(&checks).await?, None),
            };
            let denying: Vec<usize> = (0..rules.len())
                .filter(|&i| {
                    costs.get(i).is_some_and(|c| *c > 0)
                        && decisions.get(i).is_some_and(|d| !d.is_allowed())
                })
                .collect();
            let only_shadow = denying
                .iter()
                .all(|&i| rules.get(i).is_some_and(|r| self.shadow.contains(r.name())));
            if denying.is_empty() || !only_shadow || shadow_denial.is_some() {
                break (decisions, settlement);
            }
            let denials: Vec<Decision> = denying
                .iter()
                .filter_map(|&i| decisions.get(i).cloned())
                .collect();
            shadow_denial = Decision::most_restrictive(&denials).cloned();
            for i in denying {
                if let Some(cost) = costs.get_mut(i) {
                    *cost = 0;
                }
            }
        };
        let charged_denials: Vec<Decision> = decisions
            .iter()
            .zip(&costs)
            .filter(|(d, cost)| **cost > 0 && !d.is_allowed())
            .map(|(d, _)| d.clone())
            .collect();
        let shown: Vec<Decision> = decisions
            .iter()
            .filter(|d| self.shows(d.rule()))
            .cloned()
            .collect();
        let decision = Decision::most_restrictive(&charged_denials)
            .or_else(|| Decision::most_restrictive(&shown))
            .or_else(|| Decision::most_restrictive(&decisions))
            .cloned()
            .ok_or_else(|| {
                ratekeeper_core::Error::new(
                    ratekeeper_core::ErrorKind::Other,
                    "the store answered no decision",
                )
            })?;
        Ok(Decided {
            headers: self.shows(decision.rule()),
            decision,
            shadow_denial,
            settlement,
        })
    }
}
