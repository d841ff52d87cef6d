//! Benchmarks of ratelimit against its peers live in `benches/`; run them with `cargo xtask bench`.
