//! Helpers shared by the facade's policy tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers; each test file uses some"
)]

pub(crate) mod example;

use ratelimit::http::{HttpPolicy, Identity, Outcome, RequestView};

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
            Outcome::Respond { status: 429, .. } => {}
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
                .map(|(_, v)| v.clone());
            (status, retry)
        }
    }
}
