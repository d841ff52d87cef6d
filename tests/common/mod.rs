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
