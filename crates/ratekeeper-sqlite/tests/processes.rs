//! Several OS processes deciding against one database file never admit more
//! than the limit: 4 processes × 16 tasks on one key, for every algorithm.

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
