//! Helpers shared by the facade's policy tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers; each test file uses some"
)]

pub(crate) mod example;
pub(crate) mod gated;

use std::time::Duration;

use ratekeeper::http::{HttpPolicy, Identity, Outcome, RequestView};
use ratekeeper::{Algorithm, Quota, Rule};

/// No headers.
pub(crate) const NONE: &[(&str, &[u8])] = &[];

/// How many of `n` requests from `peer` get through.
pub(crate) async fn admitted(
    p: &HttpPolicy,
    n: usize,
    method: &str,
    path: &str,
    peer: &str,
    who: Option<&Identity>,
) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let view = RequestView {
            method,
            path,
            route: None,
            peer: peer.parse().unwrap(),
            headers: &NONE,
            identity: who,
        };
        match p.check(&view).await {
            Outcome::Proceed { .. } => ok += 1,
            Outcome::Respond {
                status: http::StatusCode::TOO_MANY_REQUESTS,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }
    ok
}

/// The status a `GET /` from `peer` gets (200 when it goes through), and the
/// answer's `Retry-After`, if any.
pub(crate) async fn get_from(p: &HttpPolicy, peer: &str) -> (u16, Option<String>) {
    let view = RequestView {
        method: "GET",
        path: "/",
        route: None,
        peer: peer.parse().unwrap(),
        headers: &NONE,
        identity: None,
    };
    match p.check(&view).await {
        Outcome::Proceed { .. } => (200, None),
        Outcome::Respond {
            status, headers, ..
        } => {
            let retry = headers
                .iter()
                .find(|(n, _)| *n == "retry-after")
                .map(|(_, v)| v.to_str().unwrap().to_owned());
            (status.as_u16(), retry)
        }
    }
}

/// One rule per algorithm, named `r-ALGORITHM`: `limit` per 10 s, with a
/// burst of `burst` on the algorithms that take one.
pub(crate) fn every_algorithm(limit: u64, burst: u64) -> Vec<Rule> {
    Algorithm::ALL
        .iter()
        .map(|&a| {
            let quota = Quota::new(limit, Duration::from_secs(10)).unwrap();
            let quota = if a.uses_burst() {
                quota.with_burst(burst).unwrap()
            } else {
                quota
            };
            Rule::new(&format!("r-{a}"), a, quota).unwrap()
        })
        .collect()
}

/// Asks `f` up to `tries` times, `every` apart, until it holds; whether it
/// did (a liveness bound, not a timing assertion).
pub(crate) async fn poll_until(
    tries: u32,
    every: Duration,
    mut f: impl AsyncFnMut() -> bool,
) -> bool {
    for _ in 0..tries {
        if f().await {
            return true;
        }
        tokio::time::sleep(every).await;
    }
    false
}
