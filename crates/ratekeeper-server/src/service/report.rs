//! Reports: costs learned after the request. A descriptor's hits are
//! charged (never refused; past the limit they are owed), or, with
//! `is_negative_hits`, given back. Every descriptor of one report is one
//! atomic step of the store (`Limiter::adjust`).

use ratekeeper::config::{ServerConfig, StoreErrorMode};
use ratekeeper::{Adjustment, Rule};

use super::{
    Group, Plan, Refusal, Service, Status, deny_status, group, is_request_error, plan, shown,
};
use crate::request::{Answer, Check};

impl Service {
    /// Applies `check` as a report: each descriptor's hits charged, or
    /// given back when it says `is_negative_hits` (the newest units; see
    /// `Adjustment::Refund`). Answers, per descriptor, what a request would
    /// get now. A store failure is `Unavailable`, whatever the mode: a
    /// report decides nothing for the mode to answer.
    pub(crate) async fn report(&self, check: &Check) -> Result<Answer, Refusal> {
        let limits = self.limits.load();
        Self::validate(&limits.server, check)?;
        refunds_allowed(&limits.server, check)?;
        let n = check.descriptors.len();
        let mut statuses = vec![Status::free(); n];
        // Listed clients and unknown domains count nothing.
        if self.listed(&limits, check).is_some() || !limits.domains.has_domain(&check.domain) {
            return Ok(Answer {
                over_limit: false,
                statuses,
                headers: Vec::new(),
            });
        }
        // A request's hits of 0 is protobuf's default: 1, as in a check.
        let plans = plan(
            &limits.domains,
            check,
            check.hits.max(1),
            limits.server.shadow_mode,
        )?;
        // Each limit's net change: charged less given back.
        let nets: Vec<(Group<'_>, i128)> = group(&plans)
            .into_iter()
            .map(|g| {
                let units =
                    g.at.iter()
                        .filter_map(|&i| Some((plans.get(i)?, check.descriptors.get(i)?)))
                        .map(|(p, d)| {
                            let cost = i128::from(p.cost());
                            if d.negative { -cost } else { cost }
                        })
                        .sum();
                (g, units)
            })
            .collect();
        if !nets.is_empty() {
            let changes: Vec<(&Rule, &str, Adjustment)> = nets
                .iter()
                .map(|(g, net)| {
                    let units = u64::try_from(net.unsigned_abs()).unwrap_or(u64::MAX);
                    let change = if *net >= 0 {
                        Adjustment::Charge(units)
                    } else {
                        Adjustment::Refund {
                            units,
                            taken_at: None,
                        }
                    };
                    (g.rule, g.key, change)
                })
                .collect();
            let decisions = match self.limiter.adjust(&changes).await {
                Ok(d) => d,
                Err(e) if is_request_error(&e) => return Err(Refusal::Invalid(e.to_string())),
                Err(e) => return Err(Refusal::Unavailable(e.to_string())),
            };
            for ((g, _), d) in nets.iter().zip(decisions) {
                let over = !d.is_allowed();
                for &at in &g.at {
                    if let Some(status) = statuses.get_mut(at) {
                        *status = Status {
                            over_limit: over && !g.shadow,
                            limit: Some(shown(g.rule)),
                            remaining: d.remaining(),
                            reset_after: d.reset_after(),
                            retry_after: d.retry_after().filter(|_| !g.shadow),
                            shadow_over_limit: over && g.shadow,
                        };
                    }
                }
            }
        }
        for (p, status) in plans.iter().zip(statuses.iter_mut()) {
            if let Plan::Deny { shown, shadow, .. } = p {
                *status = deny_status(shown, *shadow);
            }
        }
        Ok(Answer {
            over_limit: statuses.iter().any(|s| s.over_limit),
            statuses,
            headers: Vec::new(),
        })
    }

    /// Decides a request some of whose descriptors give units back
    /// (`is_negative_hits`): those are reported first, then the others are
    /// decided, all or nothing among themselves; one status per descriptor
    /// in the request's order.
    pub(super) async fn decide_with_refunds(&self, check: &Check) -> Result<Answer, Refusal> {
        // The whole request is checked before anything is given back.
        let limits = self.limits.load();
        Self::validate(&limits.server, check)?;
        refunds_allowed(&limits.server, check)?;
        let (back, charged): (Vec<usize>, Vec<usize>) = (0..check.descriptors.len())
            .partition(|&i| check.descriptors.get(i).is_some_and(|d| d.negative));
        let part = |at: &[usize]| Check {
            domain: check.domain.clone(),
            descriptors: at
                .iter()
                .filter_map(|&i| check.descriptors.get(i).cloned())
                .collect(),
            hits: check.hits,
        };
        let mut statuses = vec![Status::free(); check.descriptors.len()];
        match self.report(&part(&back)).await {
            Ok(given) => {
                for (&i, s) in back.iter().zip(given.statuses) {
                    if let Some(status) = statuses.get_mut(i) {
                        *status = s;
                    }
                }
            }
            // A failed store, by the domain's mode: with `allow` or `deny`
            // the refund is skipped and the rest decided as the mode says.
            Err(Refusal::Unavailable(e))
                if Self::mode(&limits, &check.domain) == StoreErrorMode::Error =>
            {
                return Err(Refusal::Unavailable(e));
            }
            Err(Refusal::Unavailable(_)) => {}
            Err(refused) => return Err(refused),
        }
        if charged.is_empty() {
            return Ok(Answer {
                over_limit: false,
                statuses,
                headers: Vec::new(),
            });
        }
        let decided = Box::pin(self.decide(&part(&charged))).await?;
        for (&i, s) in charged.iter().zip(decided.statuses) {
            if let Some(status) = statuses.get_mut(i) {
                *status = s;
            }
        }
        Ok(Answer {
            over_limit: decided.over_limit,
            statuses,
            headers: decided.headers,
        })
    }
}

/// Refused unless `[server] refunds` is on, when `check` gives units back: a
/// refund undoes a limit as a reset does, and resets are the admin API's.
fn refunds_allowed(server: &ServerConfig, check: &Check) -> Result<(), Refusal> {
    match check.descriptors.iter().position(|d| d.negative) {
        Some(i) if !server.refunds => Err(Refusal::Invalid(format!(
            "descriptors[{i}] gives units back (is_negative_hits), which this server does not \
             take: set [server] refunds = true when every client of its public ports is trusted"
        ))),
        _ => Ok(()),
    }
}
