//! Several OS processes deciding against one database file never admit more
//! than the limit: 4 processes × 16 tasks on one key, for every algorithm;
//! and reserving and settling, they never keep more than the limit, and what
//! is left is exactly the rest; holding places in flight, never more than
//! the limit at once, and a killed holder's places come back.

#![allow(clippy::expect_used, reason = "test")]

use std::path::Path;

#[test]
fn four_processes_admit_exactly_the_limit() {
    let dir = std::env::temp_dir().join(format!(
        "ratekeeper-sqlite-processes-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let db = dir.join("shared.db");
    // Create the file once, so the workers race on decisions, not on the schema.
    drop(ratekeeper_sqlite::SqliteStorage::open(&db).expect("a new database file"));
    ratekeeper_testkit::processes::assert_processes_admit_exactly(
        Path::new(env!("CARGO_BIN_EXE_ratekeeper-sqlite-worker")),
        |_| db.display().to_string(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn four_processes_reserving_keep_exactly_what_they_settled() {
    let dir = std::env::temp_dir().join(format!(
        "ratekeeper-sqlite-reservations-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    ratekeeper_testkit::processes::assert_processes_reserve_exactly(
        Path::new(env!("CARGO_BIN_EXE_ratekeeper-sqlite-worker")),
        // A file per algorithm's round, created before the workers race.
        |algorithm| {
            let db = dir.join(format!("{algorithm}.db"));
            drop(ratekeeper_sqlite::SqliteStorage::open(&db).expect("a new database file"));
            db.display().to_string()
        },
        |file, algorithm| {
            let store = ratekeeper_sqlite::SqliteStorage::open(file).expect("the file");
            let limiter = ratekeeper_core::Limiter::new(std::sync::Arc::new(store));
            runtime.block_on(ratekeeper_testkit::processes::left(&limiter, algorithm))
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh database file in a directory of its own, created before the
/// workers race.
fn fresh_db(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("ratekeeper-sqlite-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let db = dir.join("shared.db");
    drop(ratekeeper_sqlite::SqliteStorage::open(&db).expect("a new database file"));
    let db = db.display().to_string();
    (dir, db)
}

#[test]
fn four_processes_hold_at_most_the_places_in_flight() {
    let (dir, db) = fresh_db("leases");
    ratekeeper_testkit::processes::assert_processes_hold_at_most(
        Path::new(env!("CARGO_BIN_EXE_ratekeeper-sqlite-worker")),
        &db,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_holders_places_come_back_when_its_leases_end() {
    let (dir, db) = fresh_db("killed");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let limiter = ratekeeper_core::Limiter::new(std::sync::Arc::new(
        ratekeeper_sqlite::SqliteStorage::open(&db).expect("the file"),
    ));
    ratekeeper_testkit::processes::assert_killed_holders_places_come_back(
        Path::new(env!("CARGO_BIN_EXE_ratekeeper-sqlite-worker")),
        &db,
        |rule, key| {
            runtime
                .block_on(limiter.peek(rule, key))
                .expect("a peek")
                .remaining()
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}
