//! Several OS processes deciding through one Redis never admit more than the
//! limit: 4 processes × 16 tasks on one key, for every algorithm, through a
//! standalone server and through the Cluster; and reserving and settling,
//! they never keep more than the limit, and what is left is exactly the
//! rest; holding places in flight, never more than the limit at once, and a
//! killed holder's places come back.

#![allow(clippy::expect_used, reason = "test")]

mod common;

use std::path::Path;

/// `url` with a fresh keyspace, and a response deadline generous enough for
/// a machine busy with the other tests (what these tests check is
/// exactness, not speed; the default is 100 ms).
fn keyspace(url: &str) -> String {
    format!(
        "{url}?prefix={}&response_timeout=2s",
        common::unique_prefix(false)
    )
}

fn four_processes(url: &str) {
    ratekeeper_testkit::processes::assert_processes_admit_exactly(
        Path::new(env!("CARGO_BIN_EXE_ratekeeper-redis-worker")),
        // A fresh keyspace for each algorithm's round.
        |_| keyspace(url),
    );
}

#[test]
fn four_processes_admit_exactly_the_limit_on_one_server() {
    four_processes(&common::standalone().url());
}

#[test]
fn four_processes_admit_exactly_the_limit_through_the_cluster() {
    four_processes(&common::cluster().url());
}

fn four_processes_reserving(url: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    ratekeeper_testkit::processes::assert_processes_reserve_exactly(
        Path::new(env!("CARGO_BIN_EXE_ratekeeper-redis-worker")),
        |_| keyspace(url),
        |store, algorithm| {
            runtime.block_on(async {
                let store = ratekeeper_redis::RedisStorage::connect(store)
                    .await
                    .expect("the store");
                let limiter = ratekeeper_core::Limiter::new(std::sync::Arc::new(store));
                ratekeeper_testkit::processes::left(&limiter, algorithm).await
            })
        },
    );
}

#[test]
fn four_processes_reserving_keep_exactly_what_they_settled_on_one_server() {
    four_processes_reserving(&common::standalone().url());
}

#[test]
fn four_processes_reserving_keep_exactly_what_they_settled_through_the_cluster() {
    four_processes_reserving(&common::cluster().url());
}

#[test]
fn four_processes_hold_at_most_the_places_in_flight() {
    for url in [common::standalone().url(), common::cluster().url()] {
        ratekeeper_testkit::processes::assert_processes_hold_at_most(
            Path::new(env!("CARGO_BIN_EXE_ratekeeper-redis-worker")),
            &keyspace(&url),
        );
    }
}

#[test]
fn a_killed_holders_places_come_back_when_its_leases_end() {
    let url = keyspace(&common::standalone().url());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let limiter = runtime.block_on(async {
        let store = ratekeeper_redis::RedisStorage::connect(&url)
            .await
            .expect("the store");
        ratekeeper_core::Limiter::new(std::sync::Arc::new(store))
    });
    ratekeeper_testkit::processes::assert_killed_holders_places_come_back(
        Path::new(env!("CARGO_BIN_EXE_ratekeeper-redis-worker")),
        &url,
        |rule, key| {
            runtime
                .block_on(limiter.peek(rule, key))
                .expect("a peek")
                .remaining()
        },
    );
}
