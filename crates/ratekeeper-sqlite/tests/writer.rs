//! The default mode, `Blocking::Writer`: the store's thread commits every
//! decision waiting for it in one transaction, each in a savepoint (one that
//! fails, fails alone); a caller on a multi-thread runtime decides in place
//! only while the writer is idle and nothing holds the file's write lock,
//! and never waits for that lock.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test helpers")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ratekeeper_core::{
    Algorithm, ErrorKind, Limiter, ManualClock, Rule, Storage, StorageStats, Timestamp,
};
use ratekeeper_sqlite::{Location, SqliteStorage};

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("ratekeeper-sqlite-writer")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A store on a new file in the default mode and a limiter over it, both on
/// one manual clock (time stands still unless moved).
fn store(name: &str) -> (PathBuf, SqliteStorage, Limiter) {
    let path = dir(name).join("rl.db");
    let clock = ManualClock::new(Timestamp::from_micros(1_700_000_000_000_000));
    let store = SqliteStorage::builder(Location::File(path.clone()))
        .clock(Arc::new(clock.clone()))
        .cleanup_interval(None)
        .build()
        .unwrap();
    let limiter = Limiter::builder(Arc::new(store.clone()))
        .shared_clock(Arc::new(clock))
        .build();
    (path, store, limiter)
}

fn detail(stats: &StorageStats, name: &str) -> u64 {
    stats
        .details
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {stats:?}"))
}

/// 32 tasks at once: the writer's commits serve several decisions each,
/// the limit stays exact, and the decisions on a key whose state is
/// corrupt fail alone, never a decision beside them in the same commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decisions_share_commits_and_one_that_fails_fails_alone() {
    let (_, store, limiter) = store("groups");
    let rule = Rule::new("hot", Algorithm::Gcra, "10/hour".parse().unwrap()).unwrap();
    let bad = limiter.state_key(&rule, "bad");
    store
        .set(&bad, b"not a rule state", Duration::from_secs(3_600))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32 {
        let (limiter, rule) = (limiter.clone(), rule.clone());
        tasks.spawn(async move {
            let mut admitted = 0u32;
            for _ in 0..8 {
                if t % 4 == 0 {
                    let e = limiter.check(&rule, "bad").await.unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::CorruptState, "{e}");
                } else if limiter.check(&rule, "hot").await.unwrap().is_allowed() {
                    admitted += 1;
                }
            }
            admitted
        });
    }
    let admitted: u32 = tasks.join_all().await.iter().sum();
    assert_eq!(admitted, 10);
    let stats = store.stats().await.unwrap();
    let (commits, decisions) = (
        detail(&stats, "writer_commits"),
        detail(&stats, "writer_decisions"),
    );
    assert!(
        decisions > commits,
        "no commit served two decisions: {stats:?}"
    );
}

/// While another connection holds the write lock, a decision does not wait
/// for it on the runtime's worker: it goes to the writer, which waits, and
/// answers once the lock is free. While nothing holds it and the writer is
/// idle, a decision is made in place, without the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_writer_waits_for_the_lock() {
    let (path, store, limiter) = store("lock");
    let rule = Rule::new("r", Algorithm::FixedWindow, "5/hour".parse().unwrap()).unwrap();
    assert!(limiter.check(&rule, "k").await.unwrap().is_allowed());
    let stats = store.stats().await.unwrap();
    assert_eq!(detail(&stats, "writer_decisions"), 0, "{stats:?}");

    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let waiting = tokio::spawn({
        let (limiter, rule) = (limiter.clone(), rule.clone());
        async move { limiter.check(&rule, "k").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "decided while another held the lock"
    );
    holder.execute_batch("COMMIT").unwrap();
    let decision = waiting.await.unwrap().unwrap();
    assert!(decision.is_allowed() && decision.remaining() == 3);
    let stats = store.stats().await.unwrap();
    assert_eq!(detail(&stats, "writer_decisions"), 1, "{stats:?}");
}

/// On a current-thread runtime there is no worker to hand off: every
/// decision goes to the writer.
#[tokio::test]
async fn a_current_thread_runtime_decides_through_the_writer() {
    let (_, store, limiter) = store("current");
    let rule = Rule::new("r", Algorithm::TokenBucket, "3/hour".parse().unwrap()).unwrap();
    for expected in [true, true, true, false] {
        assert_eq!(
            limiter.check(&rule, "k").await.unwrap().is_allowed(),
            expected
        );
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(detail(&stats, "writer_decisions"), 4, "{stats:?}");
}
