//! The `saas_tiers` example as an operator runs it: a real process serving a
//! configuration file, tiers resolved through the application's lookup, the
//! file changed and reread on SIGHUP; an invalid change leaves the running
//! policy in place.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::example::Example;
use ratekeeper_testkit::http::TestClient;

fn config(free_limit: u32) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/config/saas_tiers.yaml"
    ))
    .unwrap();
    let free = "        limit: 1\n        window: 1h";
    assert!(text.contains(free));
    text.replacen(
        free,
        &format!("        limit: {free_limit}\n        window: 1h"),
        1,
    )
}

fn replace(path: &PathBuf, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn hangup(server: &Example) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_from_a_file_reloaded_on_sighup() {
    let dir = std::env::temp_dir().join(format!("ratelimit-saas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tiers.yaml");
    replace(&file, &config(1));
    let server = Example::start("saas_tiers", &["--config", file.to_str().unwrap()]);
    let c = TestClient::new(server.addr);
    let task = |user: &'static str| {
        let c = c.clone();
        async move {
            let auth = format!("Bearer {user}");
            c.send("POST", "/api/v1/tasks/task", &[("authorization", &auth)])
                .await
                .status
        }
    };

    assert_eq!(task("fiona").await, 200);
    assert_eq!(task("fiona").await, 429);
    for _ in 0..10 {
        assert_eq!(task("paul").await, 200);
    }
    assert_eq!(task("paul").await, 429);
    assert_eq!(c.status("/", &[]).await, 200);
    // Each user was looked up once; the cache answered the rest.
    assert_eq!(c.get("/lookups", &[]).await.body, "2");

    // Free goes to 3 an hour: fiona's request still counts, 2 more pass.
    replace(&file, &config(3));
    hangup(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while task("fiona").await != 200 {
        assert!(Instant::now() < deadline, "the reload never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(task("fiona").await, 200);
    assert_eq!(task("fiona").await, 429);

    // An invalid file: refused, the running policy stays.
    replace(
        &file,
        "tiers:\n  free:\n    rules:\n      - path: /x\n        limit: 0\n",
    );
    hangup(&server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(task("fiona").await, 429);
    assert_eq!(task("paul").await, 429);
    assert_eq!(task("petra").await, 200);

    // The handler survives a refused file: the next valid one applies.
    replace(&file, &config(5));
    hangup(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while task("fiona").await != 200 {
        assert!(
            Instant::now() < deadline,
            "the reload after a refused one never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(task("fiona").await, 200);
    assert_eq!(task("fiona").await, 429);
    std::fs::remove_dir_all(&dir).unwrap();
}
