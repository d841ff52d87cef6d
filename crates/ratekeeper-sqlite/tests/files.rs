//! What the store does with the files it is given: bad files are clear errors
//! naming the path, never a panic or a silently recreated database; state
//! outlives the process.
#![allow(clippy::unwrap_used, reason = "test helpers")]

use std::path::PathBuf;
use std::sync::Arc;

use ratekeeper_core::{Algorithm, ErrorKind, Limiter, Rule, Storage};
use ratekeeper_sqlite::{Blocking, Location, SqliteConfig, SqliteStorage, Synchronous};

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("ratekeeper-sqlite-files")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let path = dir("garbage").join("notes.db");
    let garbage = b"these are my notes, not a database; please do not recreate me".repeat(200);
    std::fs::write(&path, &garbage).unwrap();
    let err = SqliteStorage::open(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        err.to_string().contains("is not a SQLite database"),
        "{err}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file is untouched"
    );
}

#[test]
fn a_directory_is_refused() {
    let path = dir("directory");
    let err = SqliteStorage::open(&path).unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_missing_parent_directory_is_a_clear_error() {
    let path = dir("missing").join("no/such/dir/rl.db");
    let err = SqliteStorage::open(&path).unwrap_err();
    assert!(err.to_string().contains("cannot be opened"), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let path = dir("newer").join("rl.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = SqliteStorage::open(&path).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn urls_open_files_and_memory() {
    let path = dir("url").join("rl.db");
    let url = format!(
        "sqlite://{}?synchronous=full&pool_size=2&cleanup_interval=off",
        path.display()
    );
    let store = SqliteStorage::from_url(&url).unwrap();
    assert_eq!(store.path(), Some(path.as_path()));
    assert!(
        SqliteStorage::from_url("sqlite::memory:")
            .unwrap()
            .path()
            .is_none()
    );
    for bad in [
        "postgres://x",
        "sqlite:/x.db",
        "sqlite://",
        "sqlite:///x.db?colour=red",
        "sqlite:///x.db?synchronous=maybe",
        "sqlite:///x.db?pool_size=0",
        "sqlite:///x.db?cleanup_interval=0s",
        "sqlite:///x.db?cleanup_interval=soon",
    ] {
        assert_eq!(
            SqliteConfig::from_url(bad).unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{bad}"
        );
    }
}

#[test]
fn url_options_set_what_they_name() {
    let config = SqliteConfig::from_url(
        "sqlite:///x.db?pool_size=3&cleanup_interval=5m&cleanup_batch=7&busy_timeout=250ms",
    )
    .unwrap();
    assert_eq!(config.pool_size, 3);
    assert_eq!(
        config.cleanup_interval,
        Some(std::time::Duration::from_secs(300))
    );
    assert_eq!(config.cleanup_batch, 7);
    assert_eq!(config.busy_timeout, std::time::Duration::from_millis(250));
    let off = SqliteConfig::from_url("sqlite:///x.db?cleanup_interval=off").unwrap();
    assert_eq!(off.cleanup_interval, None);
    assert_eq!(
        SqliteConfig::from_url("sqlite:///x.db").unwrap().blocking,
        Blocking::Writer
    );
    for (value, blocking) in [
        ("writer", Blocking::Writer),
        ("spawn", Blocking::SpawnBlocking),
        ("in_place", Blocking::InPlace),
    ] {
        let url = format!("sqlite:///x.db?blocking={value}");
        assert_eq!(SqliteConfig::from_url(&url).unwrap().blocking, blocking);
    }
    for (value, synchronous) in [
        ("normal", Synchronous::Normal),
        ("FULL", Synchronous::Full),
        ("off", Synchronous::Off),
    ] {
        let url = format!("sqlite:///x.db?synchronous={value}");
        assert_eq!(
            SqliteConfig::from_url(&url).unwrap().synchronous,
            synchronous
        );
    }
    // Errors quote what was wrong, cut to 80 characters.
    let long = "y".repeat(100);
    let e = SqliteConfig::from_url(&format!("sqlite:///x.db?{long}=1")).unwrap_err();
    assert!(
        e.message().contains(&format!("{:?}", "y".repeat(80))),
        "{e}"
    );
    assert!(!e.message().contains(&"y".repeat(81)), "{e}");
    let e = SqliteConfig::from_url("sqlite:///x.db?blocking=sideways").unwrap_err();
    assert!(e.message().contains("\"sideways\""), "{e}");
}

/// The synchronous mode asked for is the one SQLite runs with: the stats
/// read it back from a connection.
#[tokio::test]
async fn the_synchronous_mode_asked_for_is_the_one_sqlite_runs() {
    for (mode, expected) in [("off", "OFF"), ("normal", "NORMAL"), ("full", "FULL")] {
        let path = dir(&format!("synchronous-{mode}")).join("rl.db");
        let url = format!("sqlite://{}?synchronous={mode}", path.display());
        let stats = SqliteStorage::from_url(&url)
            .unwrap()
            .stats()
            .await
            .unwrap();
        let synchronous = stats
            .details
            .iter()
            .find(|(name, _)| name == "synchronous")
            .map(|(_, value)| value.as_str());
        assert_eq!(synchronous, Some(expected), "{mode}");
    }
}

/// Opening a file whose layout is current writes nothing: another process
/// may be holding the write lock at that moment, and the open must not wait
/// for it.
#[test]
fn opening_a_current_file_does_not_wait_for_the_write_lock() {
    let path = dir("busy-open").join("rl.db");
    drop(SqliteStorage::open(&path).unwrap());
    let writer = rusqlite::Connection::open(&path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    let store = SqliteStorage::builder(Location::File(path.clone()))
        .busy_timeout(std::time::Duration::from_millis(50))
        .build();
    assert!(store.is_ok(), "{:?}", store.err());
    writer.execute_batch("ROLLBACK").unwrap();
}

/// State written by one process is honoured by the next one, after the first
/// has exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart() {
    let path = dir("restart").join("rl.db");
    let first = Command::new(env!("CARGO_BIN_EXE_ratekeeper-sqlite-worker"))
        .args([
            path.to_str().unwrap(),
            "fixed_window",
            "5/366d",
            "client",
            "1",
            "3",
        ])
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&first.stdout).trim(), "3");

    let rule = Rule::new(
        "fixed_window",
        Algorithm::FixedWindow,
        "5/366d".parse().unwrap(),
    )
    .unwrap();
    let store = SqliteStorage::builder(Location::File(path.clone()))
        .build()
        .unwrap();
    let limiter = Limiter::new(Arc::new(store.clone()));
    assert_eq!(limiter.peek(&rule, "client").await.unwrap().remaining(), 2);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.backend, stats.keys), ("sqlite", Some(1)));
    assert!(
        stats
            .details
            .iter()
            .any(|(k, v)| k == "journal_mode" && v == "wal"),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_deletes_expired_rows_in_batches() {
    let path = dir("cleanup").join("rl.db");
    let clock = ratekeeper_core::ManualClock::new(ratekeeper_core::Timestamp::from_micros(
        1_700_000_000_000_000,
    ));
    let mut config = SqliteConfig::new(Location::File(path));
    config.cleanup_batch = 7;
    config.cleanup_interval = None;
    let store = SqliteStorage::builder(Location::Memory)
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    for i in 0..50 {
        store
            .set(
                &format!("short{i}"),
                b"v",
                std::time::Duration::from_secs(1),
            )
            .await
            .unwrap();
    }
    store
        .set("long", b"v", std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    clock.advance(std::time::Duration::from_secs(2));
    assert_eq!(store.cleanup_expired().await.unwrap(), 50);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.keys, stats.expirations), (Some(1), Some(50)));
}

/// The background cleanup: started by the configuration, stopped and
/// started again on demand, stopped by `close`. (Waits are liveness bounds;
/// the one negative check gives a stopped task ten of its intervals.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_cleanup_runs_stops_and_starts_again() {
    use std::time::Duration;
    let clock = ratekeeper_core::ManualClock::new(ratekeeper_core::Timestamp::from_micros(
        1_700_000_000_000_000,
    ));
    let mut config = SqliteConfig::new(Location::File(dir("background-cleanup").join("rl.db")));
    config.cleanup_interval = Some(Duration::from_millis(20));
    let store = SqliteStorage::builder(Location::Memory)
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    assert!(store.is_cleanup_running());
    let expire = |prefix: &'static str| {
        let (store, clock) = (&store, &clock);
        async move {
            for i in 0..5 {
                store
                    .set(&format!("{prefix}{i}"), b"v", Duration::from_secs(1))
                    .await
                    .unwrap();
            }
            clock.advance(Duration::from_secs(2));
        }
    };
    let removed = || async { store.stats().await.unwrap().expirations.unwrap() };
    let until_removed = |n: u64| async move {
        for _ in 0..500 {
            if removed().await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the cleanup never removed {n} rows");
    };
    expire("a").await;
    until_removed(5).await;

    store.stop_cleanup();
    assert!(!store.is_cleanup_running());
    expire("b").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(removed().await, 5, "a stopped cleanup removed rows");

    store.start_cleanup(Duration::from_millis(20)).unwrap();
    assert!(store.is_cleanup_running());
    until_removed(10).await;
    store.close().await.unwrap();
    assert!(!store.is_cleanup_running());
}

/// Makes `path` read-only for this process: permission bits for a normal user;
/// for root, whom permission bits do not stop, the immutable attribute.
fn make_read_only(path: &std::path::Path) -> impl Drop {
    struct Restore(PathBuf, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            if self.1 {
                let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
            }
        }
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if root {
        let status = Command::new("chattr").arg("+i").arg(path).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "running as root, the test needs `chattr +i` (e2fsprogs, on a filesystem with attributes) \
             to make a file read-only; run it as a normal user or install chattr"
        );
        Restore(path.to_path_buf(), true)
    } else {
        let mut perms = std::fs::metadata(path).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(path, perms).unwrap();
        Restore(path.to_path_buf(), false)
    }
}

use std::process::Command;

#[test]
fn a_read_only_file_is_refused() {
    let path = dir("readonly").join("rl.db");
    drop(SqliteStorage::open(&path).unwrap());
    let _restore = make_read_only(&path);
    let err = SqliteStorage::open(&path).unwrap_err();
    assert!(err.to_string().contains("is read-only"), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(!err.is_transient());
}
