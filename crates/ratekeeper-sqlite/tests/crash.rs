//! `kill -9` of a writer in the middle of a load: the file reopens, SQLite's
//! integrity check passes, and every admission the writer reported (each
//! reported only after its transaction committed) is still counted.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use ratekeeper_core::{Algorithm, Limiter, Rule};
use ratekeeper_sqlite::SqliteStorage;

const TASKS: u64 = 16;
const QUOTA: &str = "1000000/366d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_loses_no_committed_decision() {
    let dir = std::env::temp_dir().join(format!("ratekeeper-sqlite-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("crash.db");
    drop(SqliteStorage::open(&db).unwrap());

    let mut child = Command::new(env!("CARGO_BIN_EXE_ratekeeper-sqlite-worker"))
        .args([
            db.to_str().unwrap(),
            "fixed_window",
            QUOTA,
            "victim",
            &TASKS.to_string(),
            "100000",
        ])
        .env("RATELIMIT_WORKER_STREAM", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reported = 0u64;
    while reported < 300 {
        let line = lines.next().expect("the worker is still writing").unwrap();
        if line == "+" {
            reported += 1;
        }
    }
    // SIGKILL: no destructor, no rollback, no checkpoint runs in the worker.
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines already in the pipe were printed after their commit, too.
    reported += lines.map_while(Result::ok).filter(|l| l == "+").count() as u64;

    let conn = rusqlite::Connection::open(&db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    drop(conn);

    let rule = Rule::new(
        "fixed_window",
        Algorithm::FixedWindow,
        QUOTA.parse().unwrap(),
    )
    .unwrap();
    let limiter = Limiter::new(Arc::new(SqliteStorage::open(&db).unwrap()));
    let used = 1_000_000 - limiter.peek(&rule, "victim").await.unwrap().remaining();
    assert!(
        used >= reported,
        "{used} counted < {reported} reported committed"
    );
    // At most one committed-but-unreported decision per task.
    assert!(
        used <= reported + TASKS,
        "{used} counted, {reported} reported"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
