//! Not published: this crate holds the workspace's end-to-end pieces.
//!
//! - `examples/`: the example servers for axum, actix-web and Rocket, the
//!   tiered SaaS server and the Prometheus one
//!   (`cargo run -p ratekeeper-e2e --example axum_server -- --help`). They
//!   live here rather than beside the facade's own examples because they
//!   need the frameworks, which the facade's examples should not compile.
//! - `tests/`: the facade as applications use it: the HTTP policy, tiers,
//!   lists, configuration and store layers through `ratekeeper::…`, and the
//!   example servers run as real processes, through real clients, against
//!   real stores (Redis killed, paused and restarted underneath them).
//! - the guides in `docs/` with Rust blocks, compiled here as doc tests so
//!   that those blocks cannot rot (`cargo test -p ratekeeper-e2e --doc`).

/// The guides, each a doc test. Not part of any API.
#[cfg(doctest)]
mod guides {
    #[doc = include_str!("../../../docs/algorithms.md")]
    struct Algorithms;
    #[doc = include_str!("../../../docs/backends.md")]
    struct Backends;
    #[doc = include_str!("../../../docs/configuration.md")]
    struct Configuration;
    #[doc = include_str!("../../../docs/distributed.md")]
    struct Distributed;
    #[doc = include_str!("../../../docs/http.md")]
    struct Http;
    #[doc = include_str!("../../../docs/storage.md")]
    struct Storage;
    #[doc = include_str!("../../../docs/tiers.md")]
    struct Tiers;
    #[doc = include_str!("../../../docs/frameworks/axum.md")]
    struct Axum;
    #[doc = include_str!("../../../docs/frameworks/actix.md")]
    struct Actix;
    #[doc = include_str!("../../../docs/frameworks/rocket.md")]
    struct Rocket;
}
