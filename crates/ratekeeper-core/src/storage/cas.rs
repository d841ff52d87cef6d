//! The default decision step: read, decide with the core, compare-and-swap.

use crate::clock::Timestamp;
use crate::decision::Decision;
use crate::engine::{self, Write};
use crate::error::{Error, ErrorKind, Result};
use crate::rule::Rule;
use crate::state::RuleState;

use super::{AdjustEntry, AdjustRequest, CasOp, DecideEntry, DecideRequest, Storage};

/// How many times [`decide_with_cas`] retries after losing a race before it
/// gives up with a transient [`ErrorKind::Contention`] error.
const MAX_CAS_ATTEMPTS: usize = 1_000;

/// The error for a stored value at `key` that is not rate-limit state: every
/// store reports corrupt state the same way.
pub fn corrupt_state(key: &str, err: crate::state::DecodeError) -> Error {
    Error::new(
        ErrorKind::CorruptState,
        format!("the value at {key:?} is not rate-limit state"),
    )
    .with_source(err)
}

/// The decision step built on [`Storage::get`] and
/// [`Storage::compare_and_swap`]: read every rule's state, decide with the core,
/// and write the new states only if none changed meanwhile; otherwise start over.
///
/// Exact under any concurrency as long as `compare_and_swap` is atomic. A
/// decision that writes nothing (a peek, or a denial without a penalty) is
/// answered from the states read. After 1 000 lost races in a row on the
/// same keys it gives up with a transient [`ErrorKind::Contention`] error.
pub async fn decide_with_cas<S: Storage + ?Sized>(
    store: &S,
    request: &DecideRequest<'_>,
) -> Result<Decision> {
    decide_cas(store, request, engine::decide_all).await
}

/// [`decide_with_cas`] with one decision per entry: the default
/// [`Storage::decide_each`].
pub async fn decide_each_with_cas<S: Storage + ?Sized>(
    store: &S,
    request: &DecideRequest<'_>,
) -> Result<Vec<Decision>> {
    decide_cas(store, request, engine::decide_each).await
}

/// [`Storage::adjust`] built on [`Storage::get`] and
/// [`Storage::compare_and_swap`], as [`decide_with_cas`]: the default
/// `adjust`.
pub async fn adjust_with_cas<S: Storage + ?Sized>(
    store: &S,
    request: &AdjustRequest<'_>,
) -> Result<Vec<Decision>> {
    let keys: Vec<String> = request.entries.iter().map(AdjustEntry::state_key).collect();
    let rules: Vec<_> = request
        .entries
        .iter()
        .map(|e| (e.rule, e.adjustment))
        .collect();
    cas_step(store, &keys, &rules, request.now, engine::adjust).await
}

async fn decide_cas<S: Storage + ?Sized, T>(
    store: &S,
    request: &DecideRequest<'_>,
    decide: engine::DecideFn<T>,
) -> Result<T> {
    let keys: Vec<String> = request.entries.iter().map(DecideEntry::state_key).collect();
    let rules: Vec<_> = request.entries.iter().map(|e| (e.rule, e.cost)).collect();
    cas_step(store, &keys, &rules, request.now, decide).await
}

/// Read the states at `keys` (one per rule of `rules`), compute the answer
/// and the writes with `step`, compare-and-swap; again on a lost race.
async fn cas_step<S: Storage + ?Sized, X: Copy + Sync, T>(
    store: &S,
    keys: &[String],
    rules: &[(&Rule, X)],
    now: Timestamp,
    step: engine::StepFn<X, T>,
) -> Result<T> {
    if keys.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "a decision needs at least one rule",
        ));
    }
    for _ in 0..MAX_CAS_ATTEMPTS {
        let mut raw = Vec::with_capacity(keys.len());
        for key in keys {
            raw.push(store.get(key).await?);
        }
        let states = raw
            .iter()
            .zip(keys)
            .map(|(bytes, key)| {
                bytes
                    .as_deref()
                    .map(RuleState::decode)
                    .transpose()
                    .map_err(|e| corrupt_state(key, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let inputs: Vec<_> = rules
            .iter()
            .zip(&states)
            .map(|((rule, x), state)| (*rule, state.as_ref(), *x))
            .collect();
        let (decided, writes) = step(&inputs, now)?;
        let encoded: Vec<(usize, Vec<u8>, std::time::Duration)> = writes
            .into_iter()
            .enumerate()
            .filter_map(|(i, w)| w.map(|Write { state, ttl }| (i, state.encode(), ttl)))
            .collect();
        if encoded.is_empty() {
            return Ok(decided);
        }
        let ops: Vec<CasOp<'_>> = encoded
            .iter()
            .filter_map(|(i, bytes, ttl)| {
                Some(CasOp {
                    key: keys.get(*i)?,
                    expected: raw.get(*i)?.as_deref(),
                    new_value: bytes,
                    ttl: *ttl,
                })
            })
            .collect();
        if store.compare_and_swap(&ops).await? {
            return Ok(decided);
        }
    }
    Err(Error::new(
        ErrorKind::Contention,
        format!("gave up after {MAX_CAS_ATTEMPTS} lost compare-and-swap races"),
    ))
}
