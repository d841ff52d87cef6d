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

use super::count::{CountWhen, Settlement};
use super::places::{Places, holds_place};
use super::routes::Limits;

/// The rules, by name, in shadow mode and without headers.
#[derive(Debug, Default, Clone)]
pub(crate) struct PerRule {
    shadow: HashSet<SmolStr>,
    hidden: HashSet<SmolStr>,
}

/// What deciding a request found.
pub(crate) struct Decided {
    /// The denial of a rule in force, or else the most restrictive decision
    /// of the rules the headers show (neither hidden nor in shadow mode;
    /// else of the rules in force; else of all).
    pub(crate) decision: Decision,
    /// How it applies.
    pub(crate) how: Shown,
    /// The most restrictive denial of a shadow rule, when only shadow
    /// rules denied: reported, never enforced.
    pub(crate) shadow_denial: Option<Decision>,
}

impl Decided {
    /// `decision`, enforced and shown, with nothing to settle.
    pub(crate) fn enforced(decision: Decision) -> Self {
        Self {
            decision,
            how: Shown::ENFORCED,
            shadow_denial: None,
        }
    }
}

/// How a decision applies: whether its headers are shown and it is
/// enforced, and what settles an admitted request (small, to keep the
/// policy's fast path's moves small).
pub(crate) struct Shown {
    /// Whether the decision's rule is shown in the headers.
    pub(crate) headers: bool,
    /// Whether the decision is enforced: false when it is a shadow rule's,
    /// which never denies.
    pub(crate) enforce: bool,
    /// On a route counting only some responses, what settles the request.
    pub(crate) settlement: Option<Settlement>,
    /// On a route with concurrency rules, the places it holds.
    pub(crate) places: Option<Places>,
}

impl Shown {
    /// Shown and enforced, nothing to settle.
    pub(crate) const ENFORCED: Self = Self {
        headers: true,
        enforce: true,
        settlement: None,
        places: None,
    };
}

/// What one atomic step over a route's rules took.
pub(crate) struct Taken {
    /// One decision per rule.
    pub(crate) decisions: Vec<Decision>,
    /// On a route counting only some responses, what settles the request.
    pub(crate) settlement: Option<Settlement>,
    /// On a route with concurrency rules, the places taken.
    pub(crate) places: Option<Places>,
}

/// Decides `checks` on `limiter` in one atomic step, one decision per
/// rule; on a route counting only the responses `when` accepts, or holding
/// places in flight, by a reservation: what settles its rates and the
/// places it took, when it was admitted.
pub(crate) async fn take(
    limiter: &Limiter,
    checks: &[(&Rule, &str, u64)],
    when: Option<&CountWhen>,
) -> Result<Taken> {
    let places = checks.iter().any(|(rule, _, _)| holds_place(rule));
    if when.is_none() && !places {
        return Ok(Taken {
            decisions: limiter.check_each(checks).await?,
            settlement: None,
            places: None,
        });
    }
    let mut reservation = limiter.reserve_each(checks).await?;
    let decisions = reservation.decisions().to_vec();
    let places = reservation.take_places().map(Places::new);
    let settlement = match when {
        Some(when) if reservation.is_allowed() => Some(Settlement::new(when.clone(), reservation)),
        _ => None,
    };
    Ok(Taken {
        decisions,
        settlement,
        places,
    })
}

/// `rules` with the line taken off each rule `strip` picks (see
/// [`Rule::without_wait`]); `None` when none of them has one.
pub(crate) fn unlined(rules: &[Rule], strip: impl Fn(&Rule) -> bool) -> Option<Vec<Rule>> {
    if !rules.iter().any(|r| r.wait().is_some() && strip(r)) {
        return None;
    }
    let each = |r: &Rule| {
        if strip(r) {
            r.without_wait()
        } else {
            r.clone()
        }
    };
    Some(rules.iter().map(each).collect())
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

    /// Whether `rule` is in shadow mode.
    pub(crate) fn is_shadow(&self, rule: &str) -> bool {
        self.shadow.contains(rule)
    }

    /// Whether any of `rules` is in shadow mode.
    pub(crate) fn shadows_any(&self, rules: &[Rule]) -> bool {
        rules.iter().any(|r| self.is_shadow(r.name()))
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

    /// Decides a request of `limits` on `key`, rule by rule: while only
    /// shadow rules deny, again with them only looked at (at most once per
    /// rule, and once more).
    pub(crate) async fn decide(
        &self,
        limiter: &Limiter,
        limits: &Limits,
        key: &str,
    ) -> Result<Decided> {
        // A rule in shadow mode holds back no request: it never waits in line.
        let unlined = unlined(&limits.rules, |r| self.is_shadow(r.name()));
        let rules = unlined.as_deref().unwrap_or(&limits.rules);
        let shadow = |i: usize| rules.get(i).is_some_and(|r| self.is_shadow(r.name()));
        let mut costs = vec![limits.cost; rules.len()];
        let mut shadow_denials = Vec::new();
        let mut round = 0;
        let taken = loop {
            round += 1;
            let checks: Vec<(&Rule, &str, u64)> = rules
                .iter()
                .zip(&costs)
                .map(|(rule, cost)| (rule, key, *cost))
                .collect();
            let taken = take(limiter, &checks, limits.count_when.as_ref()).await?;
            let denying: Vec<usize> = (0..rules.len())
                .filter(|&i| {
                    costs.get(i).is_some_and(|c| *c > 0)
                        && taken.decisions.get(i).is_some_and(|d| !d.is_allowed())
                })
                .collect();
            if denying.is_empty() || !denying.iter().all(|&i| shadow(i)) || round > rules.len() {
                break taken;
            }
            for i in denying {
                shadow_denials.extend(taken.decisions.get(i).cloned());
                if let Some(cost) = costs.get_mut(i) {
                    *cost = 0;
                }
            }
        };
        let Taken {
            decisions,
            settlement,
            places,
        } = taken;
        let pick = |keep: &dyn Fn(usize) -> bool| {
            let kept: Vec<Decision> = (0..decisions.len())
                .filter(|&i| keep(i))
                .filter_map(|i| decisions.get(i).cloned())
                .collect();
            Decision::most_restrictive(&kept).cloned()
        };
        let charged = |i: usize| costs.get(i).is_some_and(|c| *c > 0);
        let denied = |i: usize| decisions.get(i).is_some_and(|d| !d.is_allowed());
        let shown = |i: usize| rules.get(i).is_some_and(|r| self.shows(r.name()));
        let (decision, enforce) = match pick(&|i| charged(i) && denied(i) && !shadow(i)) {
            Some(denial) => (Some(denial), true),
            None => match pick(&shown).or_else(|| pick(&|i| !shadow(i))) {
                Some(allowed) => (Some(allowed), true),
                // Only shadow rules: nothing is enforced.
                None => (pick(&|_| true), false),
            },
        };
        let decision = decision.ok_or_else(|| {
            ratekeeper_core::Error::new(
                ratekeeper_core::ErrorKind::Other,
                "the store answered no decision",
            )
        })?;
        Ok(Decided {
            how: Shown {
                headers: self.shows(decision.rule()),
                enforce,
                settlement,
                places,
            },
            decision,
            shadow_denial: Decision::most_restrictive(&shadow_denials).cloned(),
        })
    }
}
