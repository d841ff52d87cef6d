//! The whole conformance suite on the SQLite store, in memory and on a file,
//! in each mode of running SQLite's calls.
#![allow(clippy::expect_used, reason = "test harness set-up")]

use std::sync::Arc;

use ratekeeper_core::Storage;
use ratekeeper_sqlite::{Location, SqliteStorage};
use ratekeeper_testkit::ManualClock;

mod in_memory {
    use super::*;

    ratekeeper_testkit::storage_conformance_tests!(|clock: ManualClock| -> Arc<dyn Storage> {
        Arc::new(
            SqliteStorage::builder(Location::Memory)
                .clock(Arc::new(clock))
                .build()
                .expect("an in-memory database opens"),
        )
    });
}

/// Every call on tokio's blocking pool (`Blocking::SpawnBlocking`), a
/// transaction per decision; `in_memory` and `on_file` use the default, the
/// writer thread.
mod spawn {
    use super::*;
    use ratekeeper_sqlite::Blocking;

    ratekeeper_testkit::storage_conformance_tests!(
        |clock: ManualClock| -> Arc<dyn Storage> {
            Arc::new(
                SqliteStorage::builder(Location::Memory)
                    .blocking(Blocking::SpawnBlocking)
                    .clock(Arc::new(clock))
                    .build()
                    .expect("an in-memory database opens"),
            )
        },
        model_cases = 100
    );
}

/// Blocking calls on the calling worker (`Blocking::InPlace`); the async
/// cases run on a multi-thread runtime, where that mode applies.
mod in_place {
    use super::*;
    use ratekeeper_sqlite::Blocking;

    ratekeeper_testkit::storage_conformance_tests!(
        |clock: ManualClock| -> Arc<dyn Storage> {
            Arc::new(
                SqliteStorage::builder(Location::Memory)
                    .blocking(Blocking::InPlace)
                    .clock(Arc::new(clock))
                    .build()
                    .expect("an in-memory database opens"),
            )
        },
        model_cases = 100
    );
}

/// The same SQL and transactions on a WAL file; one file per store, so fewer
/// random model sequences than in memory.
mod on_file {
    use super::*;

    ratekeeper_testkit::storage_conformance_tests!(
        |clock: ManualClock| -> Arc<dyn Storage> {
            // Each store gets its own file.
            let path = tempdir().join(format!("rl-{}.db", unique()));
            Arc::new(
                SqliteStorage::builder(Location::File(path))
                    .clock(Arc::new(clock))
                    .build()
                    .expect("a new database file opens"),
            )
        },
        model_cases = 40
    );
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// This run's directory for database files; directories of earlier runs are
/// removed first.
fn tempdir() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir().join("ratekeeper-sqlite-conformance");
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    })
    .clone()
}
