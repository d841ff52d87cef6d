//! Several OS processes deciding through one Redis never admit more than the
//! limit: 4 processes × 16 tasks on one key, for every algorithm, through a
//! standalone server and through the Cluster.

mod common;

use std::path::Path;

fn four_processes(url: &str) {
    ratekeeper_testkit::processes::assert_processes_admit_exactly(
        Path::new(env!("CARGO_BIN_EXE_ratekeeper-redis-worker")),
        // A fresh keyspace for each algorithm's round.
        |_| format!("{url}?prefix={}", common::unique_prefix(false)),
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
