//! Several OS processes deciding against one database file never admit more
//! than the limit: 4 processes × 16 tasks on one key, for every algorithm.

use std::process::{Command, Stdio};

use ratelimit_core::Algorithm;

const PROCESSES: usize = 4;
const TASKS: &str = "16";
const REQUESTS_PER_TASK: &str = "4";
const LIMIT: u64 = 100;

#[test]
fn four_processes_admit_exactly_the_limit() {
    let dir =
        std::env::temp_dir().join(format!("ratelimit-sqlite-processes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("shared.db");
    // Create the file once, so the workers race on decisions, not on the schema.
    drop(ratelimit_sqlite::SqliteStorage::open(&db).unwrap());
    for algorithm in Algorithm::ALL {
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_ratelimit-sqlite-worker"))
                    .args([
                        db.to_str().unwrap(),
                        algorithm.as_str(),
                        &format!("{LIMIT}/hour"),
                        "one-key",
                        TASKS,
                        REQUESTS_PER_TASK,
                    ])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // All four run at once: 4 × 16 × 4 = 256 attempts at a limit of 100.
        let mut total = 0;
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            total += String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap();
        }
        assert_eq!(total, LIMIT, "{algorithm}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
