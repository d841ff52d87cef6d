//! A store that writes only the decision step, as a store author outside the
//! workspace would: typed rule states in a map behind a mutex, decided with
//! the core's pure steps (the combined decision, one decision per rule, and
//! the change after the fact). It offers no key-value operation, so it runs the
//! decision half of the conformance kit, and says `Unsupported` for the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ratekeeper_core::kit::RuleState;
use ratekeeper_core::kit::{self, Write};
use ratekeeper_core::{
    AdjustRequest, Algorithm, Clock, DecideRequest, Decision, Error, ErrorKind, Limiter, Result,
    Rule, Storage,
};
use ratekeeper_testkit::{ManualClock, Timestamp};

/// Rule states by state key, each with the time (µs) it expires at.
#[derive(Debug)]
struct DecisionStore {
    clock: ManualClock,
    states: Mutex<HashMap<String, (RuleState, u64)>>,
}

impl DecisionStore {
    /// Under the lock: reads the states of `rules` (each with its key and
    /// its `X`, a cost or an adjustment), runs `step` on them, and stores
    /// what it says.
    fn step<X: Copy, T>(
        &self,
        rules: &[(&Rule, String, X)],
        now: Timestamp,
        step: kit::StepFn<X, T>,
    ) -> Result<T> {
        let mut states = self
            .states
            .lock()
            .map_err(|_| Error::new(ErrorKind::Other, "lock poisoned"))?;
        let at = self.clock.now().as_micros();
        states.retain(|_, (_, expires)| *expires > at);
        let current: Vec<Option<RuleState>> = rules
            .iter()
            .map(|(_, k, _)| states.get(k).map(|(s, _)| s.clone()))
            .collect();
        let inputs: Vec<_> = rules
            .iter()
            .zip(&current)
            .map(|((rule, _, x), s)| (*rule, s.as_ref(), *x))
            .collect();
        let (answer, writes) = step(&inputs, now)?;
        for ((_, key, _), write) in rules.iter().zip(writes) {
            if let Some(Write { state, ttl }) = write {
                let ttl = u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX / 2);
                states.insert(key.clone(), (state, at.saturating_add(ttl)));
            }
        }
        Ok(answer)
    }

    fn decide_with<T>(&self, request: &DecideRequest<'_>, decide: kit::DecideFn<T>) -> Result<T> {
        let rules: Vec<_> = request
            .entries
            .iter()
            .map(|e| (e.rule, e.state_key(), e.cost))
            .collect();
        self.step(&rules, request.now, decide)
    }
}

#[async_trait]
impl Storage for DecisionStore {
    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        self.decide_with(request, kit::decide_all)
    }

    async fn decide_each(&self, request: &DecideRequest<'_>) -> Result<Vec<Decision>> {
        self.decide_with(request, kit::decide_each)
    }

    async fn adjust(&self, request: &AdjustRequest<'_>) -> Result<Vec<Decision>> {
        let rules: Vec<_> = request
            .entries
            .iter()
            .map(|e| (e.rule, e.state_key(), e.adjustment))
            .collect();
        self.step(&rules, request.now, kit::adjust)
    }
}

ratekeeper_testkit::decision_conformance_tests!(|clock: ManualClock| -> Arc<dyn Storage> {
    Arc::new(DecisionStore {
        clock,
        states: Mutex::default(),
    })
});

/// What the store has not written answers `Unsupported`, by name; what has
/// a default works; a limiter on it decides, and its reset says why it
/// cannot.
#[tokio::test]
async fn the_rest_of_the_contract_is_unsupported_or_defaulted() {
    let clock = ManualClock::new(Timestamp::from_micros(1_000_000));
    let store = Arc::new(DecisionStore {
        clock: clock.clone(),
        states: Mutex::default(),
    });
    let hour = std::time::Duration::from_secs(3_600);
    let errors = [
        ("get", store.get("k").await.map(drop)),
        ("set", store.set("k", b"v", hour).await),
        ("delete", store.delete("k").await.map(drop)),
        ("exists", store.exists("k").await.map(drop)),
        ("increment", store.increment("k", 1, hour).await.map(drop)),
        ("clear", store.clear().await.map(drop)),
        (
            "compare_and_swap",
            store.compare_and_swap(&[]).await.map(drop),
        ),
    ];
    for (operation, result) in errors {
        let err = result.expect_err(operation);
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{operation}");
        assert!(!err.is_transient(), "{operation}");
        assert!(err.to_string().contains(operation), "{err}");
    }
    store.close().await.unwrap();
    assert_eq!(store.stats().await.unwrap().backend, "custom");

    let limiter = Limiter::builder(store.clone()).clock(clock).build();
    let rule = Rule::new("r", Algorithm::Gcra, "1/hour".parse().unwrap()).unwrap();
    assert!(limiter.check(&rule, "a").await.unwrap().is_allowed());
    assert!(!limiter.check(&rule, "a").await.unwrap().is_allowed());
    let err = limiter.reset(&rule, "a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}
