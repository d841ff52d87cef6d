//! The decision step over one or several rules, as a pure function.
//!
//! Stores call these functions inside whatever makes their step atomic (a lock,
//! a transaction, a compare-and-swap loop). The rules of one request are decided
//! all or nothing: if any rule the request is charged on denies, no rule
//! consumes anything (a denying rule's penalty is still recorded). A rule
//! with a cost of 0 is only looked at: its denial is reported but holds
//! nothing back. The decision reported is the most restrictive one, looks
//! included (when every rule costs the same, as through `check_all`, a
//! denial means nothing was consumed).

use std::time::Duration;

use crate::algorithm::{self, Change};
use crate::clock::Timestamp;
use crate::decision::Decision;
use crate::error::{Error, ErrorKind, Result};
use crate::rule::{Algorithm, Rule};
use crate::state::{GcraState, RuleState};
use crate::storage::Adjustment;
use smol_str::SmolStr;

/// A state to store for one rule, and how long to keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The new state.
    pub state: RuleState,
    /// After this long the state is equivalent to no state and may be dropped.
    /// Never zero. A state that is equivalent to none already (an
    /// [`adjust`] that gave a budget back whole) has 1 µs: a store may
    /// delete the key instead of writing it.
    pub ttl: Duration,
}

/// What one rule says about a request, before the rules are combined.
#[derive(Debug)]
struct Verdict {
    decision: Decision,
    /// What to store: if the rule allows, what it consumed (stored only if every
    /// rule of the request allows); if it denies, a penalty being started
    /// (stored whenever the request is denied).
    write: Option<Write>,
}

impl Verdict {
    /// The write to apply when the whole request was admitted or not.
    fn write_if(self, admitted: bool) -> Option<Write> {
        if self.decision.is_allowed() == admitted {
            self.write
        } else {
            None
        }
    }
}

#[inline]
fn write(state: RuleState, ttl_us: u64) -> Write {
    Write {
        state,
        ttl: Duration::from_micros(ttl_us.max(1)),
    }
}

/// Whether `decision`, made on `rule` by a store, leaves state that still
/// holds requests back: a denial, no unit left, on the rule a
/// [`Limiter`](crate::Limiter) hands a store for a rule whose requests
/// [wait in line](Rule::with_wait) nothing left but places in line, or, on
/// a concurrency rule, any place held (work still running holds it until
/// it is released). A store that bounds its keys keeps such state when it
/// makes room (dropping it would give the key its whole limit back, its
/// line, or places still in use).
#[inline]
pub fn leaves_no_room(rule: &Rule, decision: &Decision) -> bool {
    !decision.is_allowed()
        || decision.remaining() <= rule.places_in_line()
        || (rule.algorithm().limits_in_flight() && decision.remaining() < rule.capacity())
}

/// Checks that a request of `cost` units can ever fit `rule`: a cost above
/// the rule's [capacity](Rule::capacity) is an
/// [`ErrorKind::CostExceedsCapacity`] error. The decision functions check
/// this themselves; a store that decides natively calls it before deciding.
#[inline]
pub fn check_cost(rule: &Rule, cost: u64) -> Result<()> {
    if cost > rule.capacity() {
        return Err(Error::new(
            ErrorKind::CostExceedsCapacity,
            format!(
                "a cost of {cost} can never fit rule {:?}, whose capacity is {}",
                rule.name(),
                rule.capacity()
            ),
        ));
    }
    Ok(())
}

#[inline]
fn evaluate(rule: &Rule, state: Option<&RuleState>, now: u64, cost: u64) -> Result<Verdict> {
    check_cost(rule, cost)?;
    let name = rule.shared_name().clone();
    let limit = rule.quota().limit();
    let blocked_until = state.map_or(0, |s| s.blocked_until);
    let blocked = now < blocked_until;
    // A blocked key consumes nothing: look at its state as a peek would.
    let step = algorithm::step(
        rule,
        state.map(|s| &s.algorithm),
        now,
        if blocked { 0 } else { cost },
    );
    if blocked {
        let wait = blocked_until - now;
        return Ok(Verdict {
            decision: Decision::deny_us(name, limit, 0, step.reset_after.max(wait), wait),
            write: None,
        });
    }
    match rule.penalty() {
        Some(penalty) if !step.allowed && cost > 0 => {
            let p = crate::clock::duration_to_micros(penalty);
            let decision = Decision::deny_us(
                name,
                limit,
                0,
                step.reset_after.max(p),
                step.retry_after.max(p),
            );
            let penalty = write(
                RuleState {
                    blocked_until: now.saturating_add(p),
                    algorithm: step.state,
                },
                step.ttl.max(p),
            );
            Ok(Verdict {
                decision,
                write: Some(penalty),
            })
        }
        _ => {
            let (decision, writes) = plain(name, limit, &step, cost);
            let write = writes.then(|| {
                write(
                    RuleState {
                        blocked_until: 0,
                        algorithm: step.state,
                    },
                    step.ttl,
                )
            });
            Ok(Verdict { decision, write })
        }
    }
}

/// A step's decision and whether to store its state, where no block or
/// penalty applies: an admission stores what it consumed; a denial stores
/// only an older quota's debt, capped (so the wait stays true), and never
/// on a peek.
#[inline]
fn plain<S>(name: SmolStr, limit: u64, step: &algorithm::Step<S>, cost: u64) -> (Decision, bool) {
    if step.allowed {
        (
            Decision::allow_us(name, limit, step.remaining, step.reset_after),
            step.consumed,
        )
    } else {
        (
            Decision::deny_us(
                name,
                limit,
                step.remaining,
                step.reset_after,
                step.retry_after,
            ),
            step.rewrite && cost > 0,
        )
    }
}

/// Decides one request of `cost` units against one rule whose stored state is
/// `state`, at `now`. Returns the decision and what to store (`None`: leave the
/// stored state as it is).
///
/// A cost of 0 is a peek: it reports what a request of one unit would get and
/// never writes. A cost above the rule's [capacity](Rule::capacity) is an
/// [`ErrorKind::CostExceedsCapacity`] error.
#[inline]
pub fn decide_one(
    rule: &Rule,
    state: Option<&RuleState>,
    now: Timestamp,
    cost: u64,
) -> Result<(Decision, Option<Write>)> {
    let v = evaluate(rule, state, now.as_micros(), cost)?;
    Ok((v.decision, v.write))
}

/// [`decide_one`] on a GCRA rule without a penalty whose stored state is
/// its theoretical arrival time (TAT) alone, `tat` (`None`: no state):
/// the same decision, and the TAT to store instead of a [`Write`] (`None`:
/// store nothing). The stored state is equivalent to none once its TAT
/// has passed, which is when the `Write` of `decide_one` lets it go (but
/// for a TAT at `now`, which `decide_one` keeps for 1 µs). For stores that
/// keep such a state in one word and change it by compare-and-swap: this
/// skips the general step's dispatch and its state types. `None` for any
/// other rule: decide it with `decide_one`.
#[inline]
pub fn decide_gcra(
    rule: &Rule,
    tat: Option<u64>,
    now: Timestamp,
    cost: u64,
) -> Option<Result<(Decision, Option<u64>)>> {
    if rule.algorithm() != Algorithm::Gcra || rule.penalty().is_some() {
        return None;
    }
    if let Err(e) = check_cost(rule, cost) {
        return Some(Err(e));
    }
    let state = tat.map(|tat| GcraState { tat });
    let step = algorithm::gcra::step(rule.quota(), state.as_ref(), now.as_micros(), cost);
    // As `evaluate` decides without a penalty or a block.
    let (decision, write) = plain(
        rule.shared_name().clone(),
        rule.quota().limit(),
        &step,
        cost,
    );
    Some(Ok((decision, write.then_some(step.state.tat))))
}

/// One rule of a multi-rule decision: the rule, its stored state, and what
/// the request costs on it.
pub type Input<'a> = (&'a Rule, Option<&'a RuleState>, u64);

/// A pure step over rules, each with its stored state and an `X` (a cost,
/// an [`Adjustment`]): [`decide_all`], [`decide_each`] or [`adjust`]. A
/// store runs any of them inside one atomic step (reading the states,
/// storing what the step returns beside its answer), so it writes that
/// step once.
pub type StepFn<X, T> =
    fn(&[(&Rule, Option<&RuleState>, X)], Timestamp) -> Result<(T, Vec<Option<Write>>)>;

/// [`decide_all`] or [`decide_each`]: a [`StepFn`] over costs.
pub type DecideFn<T> = StepFn<u64, T>;

/// Decides one request against several rules at once, each with its stored
/// state and its cost: all or nothing. Returns the most restrictive decision
/// ([`Decision::most_restrictive`]) and, per rule in the same order, what to
/// store.
pub fn decide_all(rules: &[Input<'_>], now: Timestamp) -> Result<(Decision, Vec<Option<Write>>)> {
    let (verdicts, admitted) = verdicts(rules, now.as_micros())?;
    let decision = Decision::most_restrictive_of(verdicts.iter().map(|v| &v.decision))
        .cloned()
        .ok_or_else(no_rule)?;
    let writes = verdicts.into_iter().map(|v| v.write_if(admitted)).collect();
    Ok((decision, writes))
}

/// [`decide_all`] with one decision per rule, in the same order, and what to
/// store. A rule with a cost of 0 is only looked at: it reports what a
/// request of one unit would get and never holds the others back. When
/// every charged rule allows, each reports its own admission. When any
/// denies, nothing is consumed: each denying rule reports its denial, and
/// each rule that would have allowed reports what it has now, as a peek
/// would.
pub fn decide_each(
    rules: &[Input<'_>],
    now: Timestamp,
) -> Result<(Vec<Decision>, Vec<Option<Write>>)> {
    let now_us = now.as_micros();
    let (verdicts, admitted) = verdicts(rules, now_us)?;
    let mut decisions = Vec::with_capacity(verdicts.len());
    let mut writes = Vec::with_capacity(verdicts.len());
    for ((rule, state, _), v) in rules.iter().zip(verdicts) {
        if admitted || !v.decision.is_allowed() {
            decisions.push(v.decision.clone());
        } else {
            decisions.push(evaluate(rule, *state, now_us, 0)?.decision);
        }
        writes.push(v.write_if(admitted));
    }
    Ok((decisions, writes))
}

/// One rule of an adjustment: the rule, its stored state, and the change.
pub type AdjustInput<'a> = (&'a Rule, Option<&'a RuleState>, Adjustment);

/// Applies each rule's [`Adjustment`] to its stored state at `now`.
/// Returns, per rule in the same order, what a request of one unit would
/// get afterwards (as a peek reports) and what to store. A penalty in
/// force stays in force. See [`Storage::adjust`](crate::Storage::adjust).
pub fn adjust(
    rules: &[AdjustInput<'_>],
    now: Timestamp,
) -> Result<(Vec<Decision>, Vec<Option<Write>>)> {
    if rules.is_empty() {
        return Err(no_rule());
    }
    let now = now.as_micros();
    rules
        .iter()
        .map(|(rule, state, adjustment)| adjust_at(rule, *state, now, *adjustment))
        .collect::<Result<Vec<_>>>()
        .map(|done| done.into_iter().unzip())
}

/// [`adjust`] on one rule, without its vectors: what a request of one
/// unit would get after the change, and what to store.
#[inline]
pub fn adjust_one(
    rule: &Rule,
    state: Option<&RuleState>,
    now: Timestamp,
    adjustment: Adjustment,
) -> Result<(Decision, Option<Write>)> {
    adjust_at(rule, state, now.as_micros(), adjustment)
}

fn adjust_at(
    rule: &Rule,
    state: Option<&RuleState>,
    now: u64,
    adjustment: Adjustment,
) -> Result<(Decision, Option<Write>)> {
    let change = match adjustment {
        Adjustment::Charge(units) => Change::Charge(units),
        Adjustment::Refund { units, taken_at } => {
            Change::Refund(units, taken_at.map(Timestamp::as_micros))
        }
    };
    let Some(algorithm) = algorithm::adjust(rule, state.map(|s| &s.algorithm), now, change) else {
        return Ok((evaluate(rule, state, now, 0)?.decision, None));
    };
    // A penalty in force stays; one that has ended is forgotten.
    let blocked_until = state
        .map(|s| s.blocked_until)
        .filter(|&b| b > now)
        .unwrap_or(0);
    let ttl = algorithm::step(rule, Some(&algorithm), now, 0)
        .ttl
        .max(blocked_until.saturating_sub(now));
    let next = RuleState {
        blocked_until,
        algorithm,
    };
    let decision = evaluate(rule, Some(&next), now, 0)?.decision;
    // A state equivalent to none replaces only a state of this rule's
    // algorithm (its TTL of 1 µs lets a store delete the key instead);
    // where there was none, nothing is written.
    let had_state = state.is_some_and(|s| s.algorithm.algorithm() == rule.algorithm());
    if ttl == 0 && !had_state {
        return Ok((decision, None));
    }
    Ok((decision, Some(write(next, ttl))))
}

/// Every rule's verdict, and whether the request is admitted: every rule it
/// is charged on allows (a rule it only peeks at never holds it back).
fn verdicts(rules: &[Input<'_>], now: u64) -> Result<(Vec<Verdict>, bool)> {
    if rules.is_empty() {
        return Err(no_rule());
    }
    let verdicts = rules
        .iter()
        .map(|(rule, state, cost)| evaluate(rule, *state, now, *cost))
        .collect::<Result<Vec<_>>>()?;
    let admitted = verdicts
        .iter()
        .zip(rules)
        .all(|(v, (_, _, cost))| *cost == 0 || v.decision.is_allowed());
    Ok((verdicts, admitted))
}

fn no_rule() -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "a decision needs at least one rule",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, Quota};

    fn rule(name: &str, limit: u64) -> Rule {
        Rule::new(
            name,
            Algorithm::FixedWindow,
            Quota::per_second(limit).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn all_or_nothing_across_rules() {
        let small = rule("small", 1);
        let big = rule("big", 10);
        let now = Timestamp::from_micros(5_000_000);
        let (d, writes) = decide_all(&[(&small, None, 1), (&big, None, 1)], now).unwrap();
        assert!(d.is_allowed() && d.rule() == "small" && d.remaining() == 0);
        let small_state = writes[0].clone().unwrap().state;
        let (d, writes) =
            decide_all(&[(&small, Some(&small_state), 1), (&big, None, 1)], now).unwrap();
        assert!(!d.is_allowed() && d.rule() == "small");
        assert!(
            writes.iter().all(Option::is_none),
            "a denied request consumes nothing"
        );
    }

    #[test]
    fn each_rule_reports_with_its_own_cost() {
        let small = rule("small", 2);
        let big = rule("big", 10);
        let now = Timestamp::from_micros(5_000_000);
        let (each, writes) = decide_each(&[(&small, None, 2), (&big, None, 5)], now).unwrap();
        assert_eq!(
            each.iter()
                .map(|d| (d.rule(), d.is_allowed(), d.remaining()))
                .collect::<Vec<_>>(),
            [("small", true, 0), ("big", true, 5)]
        );
        let (one, _) = decide_all(&[(&small, None, 2), (&big, None, 5)], now).unwrap();
        assert_eq!(Some(&one), Decision::most_restrictive(&each));
        let small_state = writes[0].clone().unwrap().state;
        let big_state = writes[1].clone().unwrap().state;
        // Denied by `small`: `big` consumes nothing and reports what it has.
        let (each, writes) = decide_each(
            &[(&small, Some(&small_state), 1), (&big, Some(&big_state), 3)],
            now,
        )
        .unwrap();
        assert!(!each[0].is_allowed() && each[0].retry_after().is_some());
        assert!(each[1].is_allowed() && each[1].remaining() == 5);
        assert!(writes.iter().all(Option::is_none));
        // A peek of a spent rule beside a charge on another: the peek
        // reports the denial a request would get, the charge goes through.
        let peek_and_charge = [(&small, Some(&small_state), 0), (&big, Some(&big_state), 1)];
        let (each, writes) = decide_each(&peek_and_charge, now).unwrap();
        assert!(!each[0].is_allowed() && each[1].is_allowed() && each[1].remaining() == 4);
        assert!(writes[0].is_none() && writes[1].is_some());
        let (one, _) = decide_all(&peek_and_charge, now).unwrap();
        assert!(
            !one.is_allowed() && one.rule() == "small",
            "the combined answer says so"
        );
        let (each, writes) =
            decide_each(&[(&small, None, 0), (&big, Some(&big_state), 1)], now).unwrap();
        assert!(each[0].is_allowed() && each[0].remaining() == 2 && writes[0].is_none());
        assert_eq!(each[1].remaining(), 4);
        assert!(writes[1].is_some());
        assert_eq!(
            decide_each(&[], now).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn penalty_blocks_after_a_denial() {
        let r = rule("login", 1)
            .with_penalty(Duration::from_secs(60))
            .unwrap();
        let t0 = Timestamp::from_micros(1_000_000);
        let (_, w) = decide_one(&r, None, t0, 1).unwrap();
        let s = w.unwrap().state;
        let (d, w) = decide_one(&r, Some(&s), t0, 1).unwrap();
        assert_eq!(d.retry_after(), Some(Duration::from_secs(60)));
        let blocked = w.unwrap();
        assert_eq!(blocked.ttl, Duration::from_secs(60));
        // A new window would allow, but the block holds; requests do not extend it.
        let later = t0.saturating_add(Duration::from_secs(30));
        let (d, w) = decide_one(&r, Some(&blocked.state), later, 1).unwrap();
        assert!(!d.is_allowed() && d.retry_after() == Some(Duration::from_secs(30)) && w.is_none());
        let after = t0.saturating_add(Duration::from_secs(60));
        assert!(
            decide_one(&r, Some(&blocked.state), after, 1)
                .unwrap()
                .0
                .is_allowed()
        );
    }

    #[test]
    fn adjustments_report_what_a_peek_sees_after_them() {
        let r = rule("r", 4);
        let t0 = Timestamp::from_micros(5_000_000);
        let (_, w) = decide_one(&r, None, t0, 3).unwrap();
        let spent = w.unwrap().state;
        let refund = Adjustment::Refund {
            units: 2,
            taken_at: Some(t0),
        };
        let (each, writes) = adjust(&[(&r, Some(&spent), refund)], t0).unwrap();
        assert!(each[0].is_allowed() && each[0].remaining() == 3);
        let back = writes[0].clone().unwrap().state;
        let (each, writes) = adjust(&[(&r, Some(&back), Adjustment::Charge(6))], t0).unwrap();
        assert!(!each[0].is_allowed() && each[0].remaining() == 0);
        // 7 in a window of 4: the next window owes 3, so the state outlives this one.
        assert_eq!(writes[0].as_ref().unwrap().ttl, Duration::from_secs(2));
        // Nothing to change: a look, and nothing written.
        let (each, writes) = adjust(&[(&r, None, Adjustment::Charge(0))], t0).unwrap();
        assert!(each[0].remaining() == 4 && writes[0].is_none());
        assert_eq!(adjust(&[], t0).unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn a_penalty_outlasts_a_refund() {
        let r = rule("login", 1)
            .with_penalty(Duration::from_secs(60))
            .unwrap();
        let t0 = Timestamp::from_micros(1_000_000);
        let (_, w) = decide_one(&r, None, t0, 1).unwrap();
        let (_, w) = decide_one(&r, Some(&w.unwrap().state), t0, 1).unwrap();
        let blocked = w.unwrap().state;
        let refund = Adjustment::Refund {
            units: 1,
            taken_at: None,
        };
        let (each, writes) = adjust(&[(&r, Some(&blocked), refund)], t0).unwrap();
        assert_eq!(each[0].retry_after(), Some(Duration::from_secs(60)));
        assert_eq!(writes[0].as_ref().unwrap().ttl, Duration::from_secs(60));
    }

    #[test]
    fn cost_above_capacity_is_an_error() {
        let err = decide_one(&rule("r", 3), None, Timestamp::EPOCH, 4).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CostExceedsCapacity);
    }

    #[test]
    fn peek_never_writes() {
        let (d, w) = decide_one(&rule("r", 3), None, Timestamp::EPOCH, 0).unwrap();
        assert!(d.is_allowed() && d.remaining() == 3 && w.is_none());
        // Every algorithm, on a fresh key and on one partly spent: a peek
        // answers like a request of one unit and writes nothing.
        for algorithm in Algorithm::ALL {
            let r = Rule::new("r", algorithm, Quota::per_second(3).unwrap()).unwrap();
            let (d, w) = decide_one(&r, None, Timestamp::EPOCH, 0).unwrap();
            assert!(d.is_allowed() && w.is_none(), "{algorithm:?} fresh");
            let (_, spent) = decide_one(&r, None, Timestamp::EPOCH, 1).unwrap();
            let spent = spent.expect("a request writes").state;
            let later = Timestamp::from_micros(1_000);
            let (d, w) = decide_one(&r, Some(&spent), later, 0).unwrap();
            assert!(d.is_allowed() && w.is_none(), "{algorithm:?} spent");
            assert_eq!(d.remaining(), 2, "{algorithm:?}");
        }
    }

    #[test]
    fn the_gcra_word_path_is_for_gcra_without_a_penalty() {
        let now = Timestamp::from_micros(5_000_000);
        assert!(decide_gcra(&rule("w", 5), None, now, 1).is_none());
        let gcra = Rule::new("g", Algorithm::Gcra, Quota::per_second(5).unwrap()).unwrap();
        let penalised = gcra
            .clone()
            .with_penalty(std::time::Duration::from_secs(1))
            .unwrap();
        assert!(decide_gcra(&penalised, None, now, 1).is_none());
        let err = decide_gcra(&gcra, None, now, 6).unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CostExceedsCapacity);
    }

    proptest::proptest! {
        /// The GCRA word path decides as the general step does, and stores
        /// the TAT the general step's write holds, kept exactly until it
        /// passes.
        #[test]
        fn the_gcra_word_path_decides_as_the_general_step(
            limit in 1u64..50,
            window_ms in 1u64..5_000,
            burst in proptest::option::of(1u64..60),
            tat in proptest::option::weighted(0.9, 0u64..40_000_000),
            now in 0u64..30_000_000,
            // Peeks (cost 0) often: they never write, even a capped debt.
            cost in proptest::prop_oneof![proptest::strategy::Just(0u64), 1u64..3, 0u64..60],
        ) {
            let mut quota = Quota::new(limit, std::time::Duration::from_millis(window_ms)).unwrap();
            if let Some(burst) = burst {
                quota = quota.with_burst(burst).unwrap();
            }
            let rule = Rule::new("g", Algorithm::Gcra, quota).unwrap();
            let now = Timestamp::from_micros(now);
            let state = tat.map(|tat| RuleState {
                blocked_until: 0,
                algorithm: crate::state::AlgorithmState::Gcra(GcraState { tat }),
            });
            let general = decide_one(&rule, state.as_ref(), now, cost);
            let word = decide_gcra(&rule, tat, now, cost).unwrap();
            match (general, word) {
                (Ok((decision, write)), Ok((same, stored))) => {
                    proptest::prop_assert_eq!(&decision, &same);
                    let expected = write.map(|w| {
                        let crate::state::AlgorithmState::Gcra(GcraState { tat }) = w.state.algorithm else {
                            panic!("a GCRA rule wrote {w:?}");
                        };
                        proptest::prop_assert_eq!(w.state.blocked_until, 0);
                        proptest::prop_assert_eq!(
                            w.ttl,
                            std::time::Duration::from_micros(tat.saturating_sub(now.as_micros()).max(1))
                        );
                        Ok(tat)
                    }).transpose()?;
                    proptest::prop_assert_eq!(expected, stored);
                }
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a.kind(), b.kind()),
                (a, b) => proptest::prop_assert!(false, "{a:?} against {b:?}"),
            }
        }
    }
}
