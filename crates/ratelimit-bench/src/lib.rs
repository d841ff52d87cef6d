//! Benchmarks of ratelimit against its peers live in `benches/`; run them with
//! `cargo xtask bench`. This library holds what the benches and the profiling
//! example share.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs a future that completes without ever waiting (a memory-store
/// decision), polling it in place: no executor overhead in the figures.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
    }
}
