//! Real file faults in the middle of a load, through the HTTP policy: the
//! database made read-only (immutable) while requests run, and the disk
//! filling up (a small tmpfs). Each time: clear errors, the error mode
//! answers, the store recovers by itself once the fault is gone, SQLite's
//! integrity check passes, and every admission is counted exactly once.
#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ratekeeper_core::{Algorithm, Limiter, Quota, Rule};
use ratekeeper_http::{
    ErrorMode, HttpPolicy, KeyExtractor, KeySource, Limits, Outcome, RequestView, RouteTable,
};
use ratekeeper_sqlite::SqliteStorage;

const NO_HEADERS: &[(&str, &[u8])] = &[];

/// A liveness bound, not a performance assertion.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

fn rule() -> Rule {
    Rule::new(
        "api",
        Algorithm::FixedWindow,
        Quota::new(1_000_000, Duration::from_secs(3600)).unwrap(),
    )
    .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ratekeeper-sqlite-faults-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The policy over `store`: one rule for every request, keyed by the peer
/// address, with `mode` on store errors; the errors it met are kept.
fn policy(
    store: Arc<SqliteStorage>,
    mode: ErrorMode,
    errors: Arc<Mutex<Vec<String>>>,
) -> HttpPolicy {
    HttpPolicy::new(
        Limiter::new(store),
        RouteTable::new().default_limits(Limits::new(vec![rule()])),
        KeyExtractor::new(KeySource::Ip),
    )
    .on_store_error(mode)
    .on_error(Arc::new(move |_, e| {
        errors.lock().unwrap().push(e.to_string())
    }))
}

/// What the load saw, per task.
#[derive(Default)]
struct Seen {
    /// Requests the limiter admitted (a decision and its headers).
    limited: AtomicU64,
    /// Requests answered by the error mode.
    error_mode: AtomicU64,
    /// Anything else (a bug).
    other: Mutex<Vec<String>>,
    last_error_mode: Mutex<Option<Instant>>,
}

/// Tasks sending requests through the policy until stopped; task `t`
/// comes from its own address (`peer(t, i)` for its `i`-th request).
struct Load {
    stop: Arc<AtomicBool>,
    seen: Vec<Arc<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(policy: &HttpPolicy, tasks: u8, peer: fn(u8, u64) -> IpAddr, mode: ErrorMode) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Vec<Arc<Seen>> = (0..tasks).map(|_| Arc::default()).collect();
        let handles = (0..tasks)
            .map(|t| {
                let (policy, stop, seen) =
                    (policy.clone(), stop.clone(), seen[usize::from(t)].clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let view = RequestView {
                            method: "GET",
                            path: "/",
                            route: None,
                            peer: peer(t, i),
                            headers: &NO_HEADERS,
                            identity: None,
                        };
                        match (policy.check(&view).await, mode) {
                            (
                                Outcome::Proceed {
                                    admission: Some(_), ..
                                },
                                _,
                            ) => {
                                seen.limited.fetch_add(1, Ordering::Relaxed);
                            }
                            (
                                Outcome::Proceed {
                                    admission: None,
                                    headers,
                                },
                                ErrorMode::FailOpen,
                            ) if headers.is_empty() => {
                                seen.error_mode.fetch_add(1, Ordering::Relaxed);
                                *seen.last_error_mode.lock().unwrap() = Some(Instant::now());
                            }
                            (
                                Outcome::Respond {
                                    status: http::StatusCode::SERVICE_UNAVAILABLE,
                                    ..
                                },
                                ErrorMode::FailClosed,
                            ) => {
                                seen.error_mode.fetch_add(1, Ordering::Relaxed);
                                *seen.last_error_mode.lock().unwrap() = Some(Instant::now());
                            }
                            (other, _) => seen.other.lock().unwrap().push(format!("{other:?}")),
                        }
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            seen,
            tasks: handles,
        }
    }

    fn limited(&self) -> u64 {
        self.seen
            .iter()
            .map(|s| s.limited.load(Ordering::Relaxed))
            .sum()
    }

    fn error_mode(&self) -> u64 {
        self.seen
            .iter()
            .map(|s| s.error_mode.load(Ordering::Relaxed))
            .sum()
    }

    fn last_error_mode(&self) -> Option<Instant> {
        self.seen
            .iter()
            .filter_map(|s| *s.last_error_mode.lock().unwrap())
            .max()
    }

    /// Waits until answers by the error mode appear.
    async fn wait_for_errors(&self, what: &str) {
        let start = Instant::now();
        while self.error_mode() == 0 {
            assert!(start.elapsed() < RECOVERY_BOUND, "no error after {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until, after `since`, a second has passed without an answer
    /// by the error mode and 100 more requests were admitted; how long
    /// after `since` the last error-mode answer came.
    async fn wait_for_recovery(&self, since: Instant, errors: &Mutex<Vec<String>>) -> Duration {
        let at = self.limited();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let calm = self.last_error_mode().map_or(since, |t| t.max(since));
            if self.limited() > at + 100 && calm.elapsed() > Duration::from_secs(1) {
                return calm.saturating_duration_since(since);
            }
            if since.elapsed() > RECOVERY_BOUND {
                let last: Vec<String> = errors
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(3)
                    .cloned()
                    .collect();
                let other: Vec<String> = self
                    .seen
                    .iter()
                    .flat_map(|s| s.other.lock().unwrap().clone())
                    .take(3)
                    .collect();
                panic!(
                    "no recovery: {} admitted, {} by the error mode, other answers {other:?}; last errors: {last:?}",
                    self.limited(),
                    self.error_mode()
                );
            }
        }
    }

    /// Stops the load; none of its tasks may have panicked or seen an
    /// answer other than an admission or the error mode's.
    async fn finish(self) -> Vec<Arc<Seen>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("no load task panicked");
        }
        for s in &self.seen {
            assert!(
                s.other.lock().unwrap().is_empty(),
                "unexpected answers: {:?}",
                s.other.lock().unwrap()
            );
        }
        self.seen
    }
}

/// Runs `command`; panics with `hint` when it cannot.
fn run(command: &mut Command, hint: &str) {
    let status = command.status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "{command:?} failed: {hint}"
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

/// The database's files: the file itself and its WAL. (Not its
/// shared-memory index: SQLite maps it into memory, and a mapped page that
/// can no longer be written is a SIGBUS, not an error; no operator makes a
/// running process's mapping read-only.)
fn database_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

/// Makes `files` impossible to write, even for root (whom permission bits
/// do not stop): the immutable attribute. Undone on drop.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(files: Vec<PathBuf>) -> Self {
        let hint = "the test needs `chattr` (e2fsprogs) on a filesystem with attributes, as root";
        if is_root() {
            for f in &files {
                run(Command::new("chattr").arg("+i").arg(f), hint);
            }
        } else {
            for f in &files {
                let mut perms = std::fs::metadata(f).unwrap().permissions();
                perms.set_readonly(true);
                std::fs::set_permissions(f, perms).unwrap();
            }
        }
        Self(files)
    }

    fn undo(&mut self) {
        for f in self.0.drain(..) {
            if is_root() {
                let _ = Command::new("chattr").arg("-i").arg(&f).status();
            } else if let Ok(meta) = std::fs::metadata(&f) {
                let mut perms = meta.permissions();
                #[allow(
                    clippy::permissions_set_readonly_false,
                    reason = "undoing the test's own change"
                )]
                perms.set_readonly(false);
                let _ = std::fs::set_permissions(&f, perms);
            }
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        self.undo();
    }
}

/// Nothing corrupt, nothing lost, nothing counted twice: SQLite's integrity
/// check passes, and each task's key used exactly what the task saw
/// admitted (its peer is `task_peer`).
async fn assert_intact(db: &Path, seen: &[Arc<Seen>]) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    drop(conn);
    let limiter = Limiter::new(Arc::new(SqliteStorage::open(db).unwrap()));
    for (t, s) in seen.iter().enumerate() {
        let key = format!("ip:{}", task_peer(u8::try_from(t).unwrap(), 0));
        let used = 1_000_000 - limiter.peek(&rule(), &key).await.unwrap().remaining();
        assert_eq!(used, s.limited.load(Ordering::Relaxed), "{key}");
    }
}

fn task_peer(t: u8, _: u64) -> IpAddr {
    IpAddr::from([10, 0, 0, t])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_made_read_only_mid_run_fails_closed_and_recovers() {
    let dir = scratch("readonly");
    let db = dir.join("rl.db");
    let store = Arc::new(SqliteStorage::open(&db).unwrap());
    let errors = Arc::new(Mutex::new(Vec::new()));
    let policy = policy(store.clone(), ErrorMode::FailClosed, errors.clone());
    let load = Load::start(&policy, 8, task_peer, ErrorMode::FailClosed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(load.limited() > 0, "the load runs before the fault");

    let mut frozen = Immutable::set(database_files(&db));
    load.wait_for_errors("making the database read-only").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    frozen.undo();
    let back = Instant::now();
    let recovered = load.wait_for_recovery(back, &errors).await;
    let refused = load.error_mode();
    let seen = load.finish().await;
    eprintln!(
        "read-only database: {refused} requests answered 503, the last {recovered:?} after the file was writable again; first error: {}",
        errors.lock().unwrap()[0]
    );

    // A clear error, naming the file.
    let first = errors.lock().unwrap().first().cloned().unwrap();
    assert!(first.contains(&db.display().to_string()), "{first}");
    assert!(
        first.contains("read-only") || first.contains("I/O error"),
        "{first}"
    );
    drop(policy);
    drop(store);
    assert_intact(&db, &seen).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs of a given size, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir),
            "the disk-full test mounts a small tmpfs and needs root (with CAP_SYS_ADMIN)",
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a store a failed test left open must not keep it busy.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A new address for every request (never one of `task_peer`'s): every
/// admission adds a row.
fn flood_peer(t: u8, i: u64) -> IpAddr {
    let [_, b, c, d] = (i as u32).to_be_bytes();
    IpAddr::from([11 + t, b, c, d])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_open_and_recovers_when_space_is_freed() {
    let dir = scratch("full");
    // 1 MB, a quarter of it ballast, deleted later: less room than the
    // write-ahead log's automatic checkpoint needs (4 MB), so the store must
    // give the log's space back by itself.
    let _disk = SmallDisk::mount(&dir, "1m");
    let ballast = dir.join("ballast");
    std::fs::write(&ballast, vec![0u8; 256 << 10]).unwrap();
    let db = dir.join("rl.db");
    let store = Arc::new(SqliteStorage::open(&db).unwrap());
    let errors = Arc::new(Mutex::new(Vec::new()));
    let policy = policy(store.clone(), ErrorMode::FailOpen, errors.clone());
    let load = Load::start(&policy, 4, flood_peer, ErrorMode::FailOpen);

    load.wait_for_errors("filling the disk").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Stop adding keys (new rows would fill the space again), then free
    // space and go on with known keys.
    let flooded = load.finish().await;
    let full_answers: u64 = flooded
        .iter()
        .map(|s| s.error_mode.load(Ordering::Relaxed))
        .sum();
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    let load = Load::start(&policy, 4, task_peer, ErrorMode::FailOpen);
    // Admissions go on. (The room freed is below the log's checkpoint
    // size, so a few writes may still fail now and then, each followed by a
    // checkpoint: count them, do not require none.)
    let at = load.error_mode();
    while load.limited() < 4_000 {
        assert!(
            freed.elapsed() < RECOVERY_BOUND,
            "no recovery: {} admitted; last error: {:?}",
            load.limited(),
            errors.lock().unwrap().last().cloned()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = load.error_mode() - at;
    let seen = load.finish().await;
    eprintln!(
        "full disk: {full_answers} requests let through unlimited (fail open); after 256 KB were freed, 4 000 admissions with {again} failures among them"
    );
    let first = errors.lock().unwrap().first().cloned().unwrap();
    assert!(first.contains(&db.display().to_string()), "{first}");
    assert!(first.contains("is full"), "{first}");

    drop(policy);
    drop(store);
    assert_intact(&db, &seen).await;
}
