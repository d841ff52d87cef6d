//! Several OS processes deciding through one Redis never admit more than the
//! limit: 4 processes × 16 tasks on one key, for every algorithm, through a
//! standalone server and through the Cluster.
#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use std::process::{Command, Stdio};

use ratelimit_core::Algorithm;

const PROCESSES: usize = 4;
const TASKS: &str = "16";
const REQUESTS_PER_TASK: &str = "4";
const LIMIT: u64 = 100;

fn four_processes(url: &str, tagged: bool) {
    for algorithm in Algorithm::ALL {
        let prefix = common::unique_prefix(tagged);
        let separator = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{separator}prefix={}", url_escape(&prefix));
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_ratelimit-redis-worker"))
                    .args([
                        url.as_str(),
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
}

fn url_escape(s: &str) -> String {
    s.replace('{', "%7B").replace('}', "%7D")
}

#[test]
fn four_processes_admit_exactly_the_limit_on_one_server() {
    four_processes(&common::standalone().url(), false);
}

#[test]
fn four_processes_admit_exactly_the_limit_through_the_cluster() {
    four_processes(&common::cluster().url(), false);
}
