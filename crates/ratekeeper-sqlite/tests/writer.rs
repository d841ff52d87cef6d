//! The default mode, `Blocking::Writer`: the store's thread commits every
//! decision waiting for it in one transaction, each in a savepoint (one that
//! fails, fails alone); the runtime's workers never wait for the file's
//! lock.
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

/// Garbage where `rule`'s state for `key` lives: decisions on it fail.
async fn corrupt(store: &SqliteStorage, limiter: &Limiter, rule: &Rule, key: &str) {
    store
        .set(
            &limiter.state_key(rule, key),
            b"not a rule state",
            Duration::from_secs(3_600),
        )
        .await
        .unwrap();
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
    corrupt(&store, &limiter, &rule, "bad").await;
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

/// While another connection holds the file's write lock, decisions wait
/// for it in the writer, not on the runtime's workers; once it is free, every decision that queued meanwhile is
/// committed in one transaction, the one on a corrupt key failing alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_queued_behind_the_lock_share_one_commit() {
    let (path, store, limiter) = store("lock");
    let rule = Rule::new("r", Algorithm::FixedWindow, "100/hour".parse().unwrap()).unwrap();
    corrupt(&store, &limiter, &rule, "bad").await;
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let check = |key: &'static str| {
        let (limiter, rule) = (limiter.clone(), rule.clone());
        tokio::spawn(async move { limiter.check(&rule, key).await })
    };
    // The first is taken by the writer, which waits for the lock; the
    // others queue behind it.
    let first = check("k");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut rest: Vec<_> = (0..10).map(|_| check("k")).collect();
    let corrupt = check("bad");
    rest.extend((0..10).map(|_| check("k")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!first.is_finished(), "decided while another held the lock");
    holder.execute_batch("COMMIT").unwrap();
    assert_eq!(first.await.unwrap().unwrap().remaining(), 99);
    let mut remaining = Vec::new();
    for task in rest {
        let d = task.await.unwrap().unwrap();
        assert!(d.is_allowed());
        remaining.push(d.remaining());
    }
    remaining.sort_unstable();
    assert_eq!(remaining, (79..99).collect::<Vec<_>>());
    let e = corrupt.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CorruptState, "{e}");
    let stats = store.stats().await.unwrap();
    assert_eq!(detail(&stats, "writer_commits"), 2, "{stats:?}");
    assert_eq!(detail(&stats, "writer_decisions"), 22, "{stats:?}");
    assert_eq!(limiter.peek(&rule, "k").await.unwrap().remaining(), 79);
}

/// On a current-thread runtime too: the writer decides and waits for the
/// lock; the runtime's one thread stays free meanwhile (a timer on it fires
/// while the decision waits; were the thread blocked, the decision would end
/// first, on its busy timeout).
#[tokio::test]
async fn a_current_thread_runtime_stays_free_while_the_writer_waits() {
    let (path, store, limiter) = store("current");
    let rule = Rule::new("r", Algorithm::TokenBucket, "3/hour".parse().unwrap()).unwrap();
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let waiting = tokio::spawn({
        let (limiter, rule) = (limiter.clone(), rule.clone());
        async move { limiter.check(&rule, "k").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "decided while another held the lock"
    );
    holder.execute_batch("COMMIT").unwrap();
    assert!(waiting.await.unwrap().unwrap().is_allowed());
    for expected in [true, true, false] {
        assert_eq!(
            limiter.check(&rule, "k").await.unwrap().is_allowed(),
            expected
        );
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(detail(&stats, "writer_decisions"), 4, "{stats:?}");
}
