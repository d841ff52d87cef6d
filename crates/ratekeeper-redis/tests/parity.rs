//! Differential test: the Lua scripts against the core's Rust engine.
//!
//! Random rules (every algorithm, small and very large quotas, bursts,
//! penalties), several rules per request on the same or on shared keys, and
//! random request sequences (costs, peeks, clock jumps to exactly the retry
//! instant and one microsecond before it, the clock stepping back, rules
//! changed under the same name as by a reload), with charges and refunds
//! after the fact between them, run through the Redis store and
//! through a reference store that applies `kit::decide_all` to states in a
//! map, at the same injected times. Every decision must be identical, and
//! whenever the reference holds a live state, Redis must hold the same bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test"
)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ratekeeper_core::kit::RuleState;
use ratekeeper_core::{
    Adjustment, Algorithm, Calendar, Clock, Decision, Limiter, ManualClock, Quota, Rule, Timestamp,
};
use ratekeeper_core::{Storage, kit};

const T0: u64 = 1_700_000_000_000_000;

/// The reference: rule states in a map, expiring like the memory store's,
/// each with the rule that wrote it.
#[derive(Default)]
struct Reference {
    states: HashMap<String, (RuleState, u64, Rule)>,
}

impl Reference {
    fn live(&self, key: &str, now: u64) -> Option<&RuleState> {
        self.states
            .get(key)
            .filter(|(_, expires, _)| *expires > now)
            .map(|(s, _, _)| s)
    }

    /// Whether `key` holds a state that has expired at `now` and was written
    /// by another form of `rule`. Under the rule that wrote it, an expired
    /// state decides like no state at all (that is what its TTL means), so
    /// Redis may keep it a little longer; under a changed rule it need not.
    /// Redis expires keys in real time, not at the test's injected times, so
    /// the test expires such a state itself.
    fn expired_under_another_rule(&self, key: &str, now: u64, rule: &Rule) -> bool {
        self.states
            .get(key)
            .is_some_and(|(_, expires, writer)| *expires <= now && writer != rule)
    }

    fn adjust(
        &mut self,
        changes: &[(&Rule, &str, Adjustment)],
        now: u64,
    ) -> Result<Vec<Decision>, ratekeeper_core::ErrorKind> {
        let keys: Vec<String> = changes
            .iter()
            .map(|(rule, key, _)| ratekeeper_core::kit::state_key(rule, key))
            .collect();
        let states: Vec<Option<RuleState>> =
            keys.iter().map(|k| self.live(k, now).cloned()).collect();
        let rules: Vec<kit::AdjustInput<'_>> = changes
            .iter()
            .zip(&states)
            .map(|((rule, _, change), state)| (*rule, state.as_ref(), *change))
            .collect();
        let (decisions, writes) =
            kit::adjust(&rules, Timestamp::from_micros(now)).map_err(|e| e.kind())?;
        // A change that leaves a state equivalent to none (nothing to
        // reset) may delete the key instead of writing it, and Redis does,
        // where it holds a state of the rule's algorithm: the one the
        // reference holds, live or not (the test's TTLs keep every key in
        // Redis while it runs).
        for (key, (rule, _, change)) in keys.iter().zip(changes) {
            let held = self
                .states
                .get(key)
                .filter(|(s, _, _)| s.algorithm.algorithm() == rule.algorithm())
                .map(|(s, _, _)| s.clone());
            if let Some(held) = held {
                let at = Timestamp::from_micros(now);
                let (d, w) = kit::adjust(&[(*rule, Some(&held), *change)], at).unwrap();
                if w[0].is_some() && d[0].reset_after().is_zero() {
                    self.states.remove(key);
                }
            }
        }
        let writes = writes
            .into_iter()
            .zip(&decisions)
            .map(|(w, d)| w.filter(|_| !d.reset_after().is_zero()))
            .collect();
        self.store(keys, writes, changes.iter().map(|(rule, _, _)| *rule), now);
        Ok(decisions)
    }

    fn store<'a>(
        &mut self,
        keys: Vec<String>,
        writes: Vec<Option<kit::Write>>,
        rules: impl Iterator<Item = &'a Rule>,
        now: u64,
    ) {
        for ((key, write), rule) in keys.into_iter().zip(writes).zip(rules) {
            if let Some(w) = write {
                let expires = now + u64::try_from(w.ttl.as_micros()).unwrap();
                self.states.insert(key, (w.state, expires, rule.clone()));
            }
        }
    }

    /// `step` (`kit::decide_all` or `kit::decide_each`) on `checks`.
    fn step<T>(
        &mut self,
        checks: &[(&Rule, &str)],
        now: u64,
        cost: u64,
        step: kit::DecideFn<T>,
    ) -> Result<T, ratekeeper_core::ErrorKind> {
        let keys: Vec<String> = checks
            .iter()
            .map(|(rule, key)| ratekeeper_core::kit::state_key(rule, key))
            .collect();
        let states: Vec<Option<RuleState>> =
            keys.iter().map(|k| self.live(k, now).cloned()).collect();
        let rules: Vec<kit::Input<'_>> = checks
            .iter()
            .zip(&states)
            .map(|((rule, _), state)| (*rule, state.as_ref(), cost))
            .collect();
        let (decided, writes) = step(&rules, Timestamp::from_micros(now)).map_err(|e| e.kind())?;
        self.store(keys, writes, checks.iter().map(|(rule, _)| *rule), now);
        Ok(decided)
    }
}

#[derive(Debug, Clone, Copy)]
enum Advance {
    By(u64),
    /// The clock steps back (a client's clock, or a machine's, corrected).
    Back(u64),
    ToRetry,
    JustBeforeRetry,
}

/// What a step does besides deciding.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Decide a request of the step's cost.
    Decide,
    /// The same, with one decision per rule (`check_each`: reservations
    /// and places taken ask this).
    DecideEach,
    /// Charge the step's cost (times this factor) after the fact.
    Charge(u64),
    /// Give the step's cost back, taken this many µs ago (or at no known time).
    Refund(Option<u64>),
    /// Give the step's cost back, taken at the time of an earlier decision
    /// (this index among them, wrapped): a release of a lease in flight.
    Release(usize),
}

#[derive(Debug, Clone)]
struct Step {
    advance: Advance,
    change: Change,
    cost: u64,
    /// Which rules apply to this request (bit i: rule i); never empty.
    rules: u8,
    /// Which rules apply in their changed form (bit i: rule i's alternate,
    /// the same name with another quota or algorithm, as after a reload).
    changed: u8,
}

#[derive(Debug, Clone)]
struct Scenario {
    rules: Vec<Rule>,
    /// Per rule, the same rule name with another algorithm or quota.
    alternates: Vec<Rule>,
    /// Per rule: whether it limits the caller's key or one shared key.
    shared: Vec<bool>,
    start: u64,
    steps: Vec<Step>,
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(Algorithm::ALL.to_vec())
}

fn rule(index: usize) -> impl Strategy<Value = Rule> {
    let window = prop_oneof![
        Just(1_000u64),
        Just(7_000),
        Just(1_000_000),
        Just(60_000_000),
        Just(3_600_000_000),
        Just(86_400_000_000),
    ];
    let limit = prop_oneof![4 => 1u64..=8, 1 => 9u64..=1_000, 1 => Just(1_000_000u64)];
    (
        algorithm(),
        window,
        limit,
        proptest::option::of(1u64..=12),
        proptest::option::weighted(0.3, 1u64..=3),
        proptest::option::weighted(0.5, 0usize..3),
    )
        .prop_filter_map(
            "a valid rule",
            move |(algorithm, window, limit, burst, penalty, calendar)| {
                let limit = if algorithm.state_fields().is_none() {
                    limit.min(10_000)
                } else {
                    limit
                };
                let mut quota = Quota::new(limit, Duration::from_micros(window)).ok()?;
                if algorithm.uses_burst()
                    && let Some(b) = burst
                {
                    quota = quota.with_burst(b.max(limit / 2)).ok()?;
                }
                let mut rule = Rule::new(&format!("r{index}"), algorithm, quota).ok()?;
                if let Some(p) = penalty {
                    let p = [window / 2, window, 3 * window][p as usize - 1].max(1);
                    rule = rule.with_penalty(Duration::from_micros(p)).ok()?;
                }
                // Daily fixed windows, half of them on a calendar: the
                // script picks its window among the boundaries given.
                if let Some(zone) = calendar
                    && algorithm == Algorithm::FixedWindow
                    && window == 86_400_000_000
                {
                    let zone = ["UTC", "Europe/Berlin", "America/New_York"][zone];
                    rule = rule.with_calendar(Calendar::new(zone).ok()?).ok()?;
                }
                Some(rule)
            },
        )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..=3)
        .prop_flat_map(|n| {
            let rules: Vec<_> = (0..n).map(rule).collect();
            let alternates: Vec<_> = (0..n).map(rule).collect();
            (
                rules,
                alternates,
                proptest::collection::vec(any::<bool>(), n),
            )
        })
        .prop_flat_map(|(rules, alternates, shared)| {
            let n = rules.len();
            let all = || rules.iter().chain(&alternates);
            let widest = all().map(|r| r.quota().window_micros()).max().unwrap_or(1);
            let finest = all()
                .map(|r| r.quota().emission_interval_us())
                .min()
                .unwrap_or(1);
            let capacity = all().map(Rule::capacity).max().unwrap_or(1);
            let advance = prop_oneof![
                2 => Just(Advance::By(0)),
                3 => (0..=finest).prop_map(Advance::By),
                2 => (0..=widest * 2).prop_map(Advance::By),
                1 => (0..=widest).prop_map(Advance::Back),
                2 => Just(Advance::ToRetry),
                2 => Just(Advance::JustBeforeRetry),
            ];
            let cost = prop_oneof![
                4 => Just(1u64),
                1 => Just(0u64),
                3 => 0..=capacity,
                1 => Just(capacity + 1),
            ];
            // Mostly the rules as first written; now and then a changed one.
            let changed = prop_oneof![4 => Just(0u8), 1 => 0u8..(1u8 << n)];
            let change = prop_oneof![
                4 => Just(Change::Decide),
                2 => Just(Change::DecideEach),
                1 => (1u64..=3).prop_map(Change::Charge),
                1 => Just(Change::Refund(None)),
                1 => (0..=widest * 2).prop_map(|ago| Change::Refund(Some(ago))),
                1 => (0usize..40).prop_map(Change::Release),
            ];
            let step = (advance, change, cost, 1u8..(1u8 << n), changed).prop_map(
                |(advance, change, cost, rules, changed)| Step {
                    advance,
                    change,
                    cost,
                    rules,
                    changed,
                },
            );
            (
                Just(rules),
                Just(alternates),
                Just(shared),
                0..widest,
                proptest::collection::vec(step, 1..40),
            )
        })
        .prop_map(|(rules, alternates, shared, start, steps)| Scenario {
            rules,
            alternates,
            shared,
            start,
            steps,
        })
}

async fn run(scenario: Scenario, url: &str) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(Timestamp::from_micros(T0 + scenario.start));
    let store = common::store(url, false, common::TEST_TIME);
    let limiter = Limiter::builder(std::sync::Arc::new(store.clone()))
        .clock(clock.clone())
        .build();
    let mut reference = Reference::default();
    let mut retry_at: Option<u64> = None;
    let mut decided_at: Vec<u64> = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        let now = clock.now().as_micros();
        let dt = match (step.advance, retry_at) {
            (Advance::By(dt), _) => dt,
            (Advance::Back(dt), _) => {
                clock.set(Timestamp::from_micros(now.saturating_sub(dt).max(T0)));
                0
            }
            (Advance::ToRetry, Some(at)) => at.saturating_sub(now),
            (Advance::JustBeforeRetry, Some(at)) => at.saturating_sub(now + 1),
            (_, None) => 0,
        };
        clock.advance(Duration::from_micros(dt));
        let now = clock.now().as_micros();
        let checks: Vec<(&Rule, &str)> = scenario
            .rules
            .iter()
            .zip(&scenario.alternates)
            .zip(&scenario.shared)
            .enumerate()
            .filter(|(j, _)| step.rules & (1 << j) != 0)
            .map(|(j, ((rule, alternate), shared))| {
                let rule = if step.changed & (1 << j) != 0 {
                    alternate
                } else {
                    rule
                };
                (rule, if *shared { "all" } else { "k" })
            })
            .collect();
        for (rule, key) in &checks {
            let state_key = ratekeeper_core::kit::state_key(rule, key);
            if reference.expired_under_another_rule(&state_key, now, rule) {
                store
                    .delete(&state_key)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                // Gone from both: a clock stepping back finds it in neither.
                reference.states.remove(&state_key);
            }
        }
        let adjustment = match step.change {
            Change::Decide | Change::DecideEach => None,
            Change::Charge(times) => Some(Adjustment::Charge(step.cost * times)),
            Change::Refund(ago) => Some(Adjustment::Refund {
                units: step.cost,
                taken_at: ago.map(|ago| Timestamp::from_micros(now.saturating_sub(ago))),
            }),
            Change::Release(_) if decided_at.is_empty() => None,
            Change::Release(j) => Some(Adjustment::Refund {
                units: step.cost,
                taken_at: decided_at
                    .get(j % decided_at.len())
                    .map(|t| Timestamp::from_micros(*t)),
            }),
        };
        if let Some(adjustment) = adjustment {
            let changes: Vec<_> = checks.iter().map(|(r, k)| (*r, *k, adjustment)).collect();
            let ours = limiter.adjust(&changes).await.map_err(|e| e.kind());
            let expected = reference.adjust(&changes, now);
            prop_assert_eq!(
                &ours,
                &expected,
                "step {} at t0+{}: {:?} on {:?}",
                i,
                now - T0,
                adjustment,
                checks
            );
            compare_states(&store, &reference, &checks, now, i).await?;
            continue;
        }
        if matches!(step.change, Change::DecideEach) {
            let each: Vec<_> = checks.iter().map(|(r, k)| (*r, *k, step.cost)).collect();
            let ours = limiter.check_each(&each).await.map_err(|e| e.kind());
            let expected = reference.step(&checks, now, step.cost, kit::decide_each);
            decided_at.push(now);
            prop_assert_eq!(
                &ours,
                &expected,
                "step {} at t0+{} cost {} rules {:?}, one decision each",
                i,
                now - T0,
                step.cost,
                checks
            );
            compare_states(&store, &reference, &checks, now, i).await?;
            continue;
        }
        let ours = limiter
            .check_all(&checks, step.cost)
            .await
            .map_err(|e| e.kind());
        let expected = reference.step(&checks, now, step.cost, kit::decide_all);
        decided_at.push(now);
        prop_assert_eq!(
            &ours,
            &expected,
            "step {} at t0+{} cost {} rules {:?}",
            i,
            now - T0,
            step.cost,
            checks
        );
        if let Ok(Some(wait)) = ours.as_ref().map(Decision::retry_after) {
            retry_at = Some(now + u64::try_from(wait.as_micros()).unwrap());
        }
        compare_states(&store, &reference, &checks, now, i).await?;
    }
    store
        .close()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

/// Whenever the reference holds a live state, Redis holds the same bytes.
async fn compare_states(
    store: &ratekeeper_redis::RedisStorage,
    reference: &Reference,
    checks: &[(&Rule, &str)],
    now: u64,
    step: usize,
) -> Result<(), TestCaseError> {
    for (rule, key) in checks {
        let state_key = ratekeeper_core::kit::state_key(rule, key);
        if let Some(state) = reference.live(&state_key, now) {
            let stored = store
                .get(&state_key)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expected = state.encode();
            prop_assert_eq!(
                stored.as_deref(),
                Some(expected.as_slice()),
                "state of {} after step {}",
                state_key,
                step
            );
        }
    }
    Ok(())
}

#[test]
fn lua_functions_decide_exactly_as_the_rust_engine() {
    parity(&common::standalone().url(), "functions");
}

/// The same engine as scripts (`EVALSHA`), as a user allowed no functions.
#[test]
fn lua_scripts_decide_exactly_as_the_rust_engine() {
    parity(&common::scripts_url(), "scripts");
}

fn parity(url: &str, what: &str) {
    let cases = std::env::var("RATELIMIT_PARITY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&scenario(), |s| runtime.block_on(run(s, url)));
    if let Err(e) = result {
        panic!("the Lua {what} and the Rust engine disagree: {e}");
    }
}

/// States the store never writes: a time at or past 2^53 µs cannot be
/// computed exactly in Lua, so the scripts call such a state corrupt (where
/// the Rust engine would compute with it).
#[tokio::test]
async fn times_beyond_lua_precision_are_corrupt_state() {
    let store = common::store(&common::standalone().url(), false, common::TEST_TIME);
    let limiter = Limiter::new(std::sync::Arc::new(store.clone()));
    let rule = Rule::new("huge", Algorithm::Gcra, "1/s".parse().unwrap()).unwrap();
    let state = RuleState {
        blocked_until: 0,
        algorithm: ratekeeper_core::kit::AlgorithmState::Gcra(ratekeeper_core::kit::GcraState {
            tat: 1 << 53,
        }),
    };
    let key = limiter.state_key(&rule, "k");
    store
        .set(&key, &state.encode(), Duration::from_secs(60))
        .await
        .unwrap();
    let err = limiter.check(&rule, "k").await.unwrap_err();
    assert_eq!(err.kind(), ratekeeper_core::ErrorKind::CorruptState);
    assert!(err.to_string().contains("2^53"), "{err}");
}

/// A sliding log stored in the format of earlier versions (version 1:
/// timestamp and cost pairs) is read by the script as the core reads it,
/// decided alike, and written back in the current format, byte for byte
/// what the core writes.
#[tokio::test]
async fn a_sliding_log_of_the_first_format_is_read_and_rewritten() {
    use ratekeeper_core::kit::{AlgorithmState, SlidingLogState};
    let store = common::store(&common::standalone().url(), false, common::TEST_TIME);
    let clock = ManualClock::new(Timestamp::from_micros(T0 + 500));
    let limiter = Limiter::builder(std::sync::Arc::new(store.clone()))
        .clock(clock.clone())
        .build();
    let rule = Rule::new(
        "log",
        Algorithm::SlidingWindowLog,
        Quota::new(5, Duration::from_micros(1_000)).unwrap(),
    )
    .unwrap();
    let entries: Vec<(u64, u64)> = vec![(T0 + 100, 2), (T0 + 200, 1), (T0 + 400, 1)];
    let mut v1 = vec![1u8, 2];
    v1.extend_from_slice(&0u64.to_le_bytes());
    v1.extend_from_slice(&3u32.to_le_bytes());
    for (ts, cost) in &entries {
        v1.extend_from_slice(&ts.to_le_bytes());
        v1.extend_from_slice(&cost.to_le_bytes());
    }
    let key = limiter.state_key(&rule, "k");
    store.set(&key, &v1, Duration::from_secs(60)).await.unwrap();
    let state = RuleState::decode(&v1).unwrap();
    let now = Timestamp::from_micros(T0 + 500);
    for cost in [0, 2, 1] {
        let (expected, write) = kit::decide_one(
            &rule,
            Some(&RuleState::decode(&store.get(&key).await.unwrap().unwrap()).unwrap()),
            now,
            cost,
        )
        .unwrap();
        assert_eq!(
            limiter.check_cost(&rule, "k", cost).await.unwrap(),
            expected,
            "cost {cost}"
        );
        if let Some(write) = write {
            assert_eq!(
                store.get(&key).await.unwrap().unwrap(),
                write.state.encode()
            );
        }
    }
    let after = RuleState::decode(&store.get(&key).await.unwrap().unwrap()).unwrap();
    let AlgorithmState::SlidingWindowLog(SlidingLogState {
        entries: mut expected,
    }) = state.algorithm
    else {
        panic!("a log");
    };
    expected.push((T0 + 500, 1));
    assert_eq!(
        after.algorithm,
        AlgorithmState::SlidingWindowLog(SlidingLogState { entries: expected })
    );
}

proptest! {
    #![proptest_config(Config { cases: 24, failure_persistence: None, ..Config::default() })]

    /// Long sliding logs, which the script reads by parts (a head, then
    /// single pairs and blocks of pairs): random logs of up to 5 000
    /// entries, then requests at random times (some before the last entry:
    /// the clock stepping back), decided and stored exactly as the engine.
    #[test]
    fn long_sliding_logs_decide_as_the_engine(
        costs in proptest::collection::vec(1u64..4, 100..5_000),
        gaps in proptest::collection::vec(1u64..50, 100..5_000),
        steps in proptest::collection::vec((0u64..400_000, 0u64..6), 1..30),
    ) {
        use ratekeeper_core::kit::{AlgorithmState, SlidingLogState};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = common::store(&common::standalone().url(), false, common::TEST_TIME);
            // Room for every entry and a few more, within the log's bound: a
            // log longer than its limit (a limit lowered by a reload) is
            // decided too, and must agree as well.
            let limit: u64 = (costs.iter().sum::<u64>() + 3).min(ratekeeper_core::rule::MAX_SLIDING_LOG_LIMIT);
            let rule = Rule::new("long", Algorithm::SlidingWindowLog, Quota::new(limit, Duration::from_micros(200_000)).unwrap()).unwrap();
            let mut ts = T0;
            let entries: Vec<(u64, u64)> = costs.iter().zip(&gaps).map(|(c, g)| { ts += g; (ts, *c) }).collect();
            let mut state = RuleState { blocked_until: 0, algorithm: AlgorithmState::SlidingWindowLog(SlidingLogState { entries }) };
            let clock = ManualClock::new(Timestamp::from_micros(T0));
            let limiter = Limiter::builder(std::sync::Arc::new(store.clone())).clock(clock.clone()).build();
            let key = limiter.state_key(&rule, "k");
            store.set(&key, &state.encode(), Duration::from_secs(600)).await.unwrap();
            for (at, cost) in steps {
                let now = Timestamp::from_micros(T0 + at);
                clock.set(now);
                let (expected, write) = kit::decide_one(&rule, Some(&state), now, cost).unwrap();
                let ours = limiter.check_cost(&rule, "k", cost).await.unwrap();
                prop_assert_eq!(&ours, &expected, "at +{} cost {}", at, cost);
                if let Some(w) = write {
                    state = w.state;
                    let stored = store.get(&key).await.unwrap().unwrap();
                    prop_assert_eq!(stored, state.encode());
                    // Keep the log long: the written log is what the next step reads.
                }
            }
            Ok(())
        })?;
    }


    /// The scripts' exact `floor(a × b / c)` (the sliding window counter's
    /// weights, whose products pass 2^53 for large quotas and long windows)
    /// against 128-bit integer arithmetic, 50 triples per call.
    #[test]
    fn lua_muldiv_is_exact(triples in proptest::collection::vec(
        (1u64..(1 << 45)).prop_flat_map(|c| {
            // Products on both sides of 2^52, where the fast path stops.
            let small = 1u64 << 26;
            (prop_oneof![0..small, 0u64..(1 << 45)], prop_oneof![0..=c.min(small), 0..=c], Just(c))
        }),
        50,
    )) {
        let script = format!(
            "{}\nlocal out = {{}}\nfor i = 1, #ARGV, 3 do\n  local q, r = muldiv(tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]))\n  out[#out + 1] = q\n  out[#out + 1] = r\nend\nreturn out",
            include_str!("../src/scripts/prelude.lua")
        );
        let mut args = vec!["EVAL".to_owned(), script, "0".to_owned()];
        for (a, b, c) in &triples {
            args.extend([a.to_string(), b.to_string(), c.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = common::standalone().cmd(&args);
        let ratekeeper_testkit::redis::Reply::Array(Some(items)) = reply else {
            panic!("{reply:?}");
        };
        for (i, (a, b, c)) in triples.iter().enumerate() {
            let product = u128::from(*a) * u128::from(*b);
            let expected = (product / u128::from(*c), product % u128::from(*c));
            let got = (items[2 * i].text().parse::<u128>().unwrap(), items[2 * i + 1].text().parse::<u128>().unwrap());
            prop_assert_eq!(got, expected, "muldiv({}, {}, {})", a, b, c);
        }
    }
}
