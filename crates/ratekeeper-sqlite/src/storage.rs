//! The SQLite store.
//!
//! One file on purpose: the builder, the blocking-pool plumbing and the
//! `Storage` methods share the schema and the transaction helpers; split, each
//! part would need the others open beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use ratekeeper_core::kit;
use ratekeeper_core::kit::RuleState;
use ratekeeper_core::storage::corrupt_state;
use ratekeeper_core::{
    AdjustRequest, CasOp, Clock, DecideEntry, DecideRequest, Decision, Error, ErrorKind, Periodic,
    Result, Rule, Storage, StorageStats, SystemClock, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::config::{Blocking, Location, SqliteConfig};
use crate::error::{pool as pool_error, sqlite};
use crate::schema;
use crate::writer::Writer;

const UPSERT: &str = "INSERT INTO ratelimit_kv (key, value, expires_at) VALUES (?1, ?2, ?3)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at";
const SELECT_LIVE: &str =
    "SELECT value, expires_at FROM ratelimit_kv WHERE key = ?1 AND expires_at > ?2";

/// The SQLite store: one machine, persistent, shared by several processes.
///
/// State lives in one table of a SQLite file in WAL mode. SQLite never runs
/// on a runtime worker: by default decisions go to the store's writer
/// thread, which commits every decision waiting for it in one transaction
/// ([`Blocking::Writer`]), and the other operations run on tokio's
/// blocking pool with a pooled connection. A decision runs the core's
/// algorithms inside a `BEGIN IMMEDIATE` transaction, so any number of
/// tasks, threads and processes sharing the file never admit more than a
/// rule allows. Every row carries its expiry; a
/// background task deletes expired rows in small batches.
///
/// ```no_run
/// use ratekeeper_core::{Algorithm, Limiter, Rule};
/// use ratekeeper_sqlite::SqliteStorage;
/// use std::sync::Arc;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStorage::open("/var/lib/app/ratelimit.db")?;
/// let limiter = Limiter::new(Arc::new(store));
/// let rule = Rule::new("api", Algorithm::Gcra, "100/minute".parse()?)?;
/// let decision = limiter.check(&rule, "user-42").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Pool<SqliteConnectionManager>,
    path: Option<PathBuf>,
    config: SqliteConfig,
    clock: Arc<dyn Clock>,
    closed: AtomicBool,
    expired_removed: AtomicU64,
    cleanup: Periodic,
    /// A write failed on a full disk, and the log has not been truncated
    /// since (see [`make_room`]). Shared with the writer thread.
    disk_was_full: Arc<AtomicBool>,
    /// The thread that commits decisions in groups
    /// ([`Blocking::Writer`]); `None` in the other modes.
    writer: Option<Writer>,
}

/// Builds a [`SqliteStorage`].
#[derive(Debug)]
#[must_use]
pub struct SqliteStorageBuilder {
    config: SqliteConfig,
    clock: Arc<dyn Clock>,
}

impl SqliteStorageBuilder {
    /// All settings at once.
    pub fn config(mut self, config: SqliteConfig) -> Self {
        self.config = config;
        self
    }

    /// Connections in the pool (at least 1).
    pub fn pool_size(mut self, size: u32) -> Self {
        self.config.pool_size = size.max(1);
        self
    }

    /// How long to wait for another writer's lock.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.config.busy_timeout = timeout;
        self
    }

    /// Durability of commits (see [`Synchronous`](crate::Synchronous)).
    pub fn synchronous(mut self, synchronous: crate::Synchronous) -> Self {
        self.config.synchronous = synchronous;
        self
    }

    /// How often to delete expired rows in the background; `None` disables it.
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.cleanup_interval = interval;
        self
    }

    /// Where SQLite's blocking calls run (see [`Blocking`]).
    pub fn blocking(mut self, blocking: Blocking) -> Self {
        self.config.blocking = blocking;
        self
    }

    /// The clock for expiry of key-value operations (decisions use the time in
    /// the request). Give it the limiter's clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Opens (creating if needed) the database and checks it. This does file
    /// I/O: call it at start-up, or inside `spawn_blocking`. Starts the cleanup
    /// task if a cleanup interval is set and this runs inside a tokio runtime.
    pub fn build(self) -> Result<SqliteStorage> {
        let config = self.config;
        let (manager, path, size) = match &config.location {
            Location::Memory => (SqliteConnectionManager::memory(), None, 1),
            Location::File(p) => {
                if p.is_dir() {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("{} is a directory, not a SQLite database file", p.display()),
                    ));
                }
                (
                    SqliteConnectionManager::file(p),
                    Some(p.clone()),
                    config.pool_size.max(1),
                )
            }
        };
        let busy = config.busy_timeout;
        let synchronous = config.synchronous.pragma();
        let is_file = path.is_some();
        let manager = manager.with_init(move |c: &mut Connection| {
            c.busy_timeout(busy)?;
            if is_file {
                c.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
            }
            c.pragma_update(None, "synchronous", synchronous)
        });
        // Check the file once, with a plain connection, so a bad file is a
        // clear error rather than a pool that never fills.
        if let Some(p) = &path {
            let mut first = Connection::open(p).map_err(|e| sqlite(e, Some(p)))?;
            schema::prepare(&mut first, Some(p))?;
        }
        let pool = Pool::builder()
            .thread_pool(helper_threads())
            // A connection to a local file does not go stale; checking it on
            // every checkout would cost a statement per operation.
            .test_on_check_out(false)
            .max_size(size)
            .min_idle(Some(size.min(2)))
            .connection_timeout(config.busy_timeout.max(Duration::from_secs(1)))
            .build(manager)
            .map_err(|e| pool_error(e, path.as_deref()))?;
        if path.is_none() {
            let mut conn = pool.get().map_err(|e| pool_error(e, None))?;
            schema::prepare(&mut conn, None)?;
        }
        let disk_was_full = Arc::new(AtomicBool::new(false));
        let writer = match config.blocking {
            Blocking::Writer => Some(Writer::start(
                pool.clone(),
                path.clone(),
                disk_was_full.clone(),
            )?),
            _ => None,
        };
        let store = SqliteStorage {
            inner: Arc::new(Inner {
                pool,
                path,
                clock: self.clock,
                closed: AtomicBool::new(false),
                expired_removed: AtomicU64::new(0),
                cleanup: Periodic::new(),
                disk_was_full,
                writer,
                config,
            }),
        };
        if let Some(interval) = store.inner.config.cleanup_interval {
            let _ = store.start_cleanup(interval);
        }
        Ok(store)
    }
}

/// The pool's background work (opening idle connections) runs on one thread
/// shared by every store of the process, not on threads per store.
fn helper_threads() -> Arc<scheduled_thread_pool::ScheduledThreadPool> {
    static HELPERS: std::sync::OnceLock<Arc<scheduled_thread_pool::ScheduledThreadPool>> =
        std::sync::OnceLock::new();
    HELPERS
        .get_or_init(|| {
            Arc::new(
                scheduled_thread_pool::ScheduledThreadPool::builder()
                    .num_threads(1)
                    .thread_name_pattern("ratekeeper-sqlite-pool")
                    .build(),
            )
        })
        .clone()
}

fn micros(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn expiry(now: u64, ttl: Duration) -> i64 {
    micros(Timestamp::from_micros(now).saturating_add(ttl).as_micros())
}

impl SqliteStorage {
    /// Opens (creating if needed) the database file at `path` with default settings.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder(Location::File(path.as_ref().to_path_buf())).build()
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::builder(Location::Memory).build()
    }

    /// A store configured by a `sqlite://` URL (see [`SqliteConfig::from_url`]).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::builder(Location::Memory)
            .config(SqliteConfig::from_url(url)?)
            .build()
    }

    /// A builder with the default settings for `location`.
    pub fn builder(location: Location) -> SqliteStorageBuilder {
        SqliteStorageBuilder {
            config: SqliteConfig::new(location),
            clock: Arc::new(SystemClock),
        }
    }

    /// The database file (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Starts deleting expired rows every `interval`, replacing a running task.
    /// Fails outside a tokio runtime. Stops by itself when the store is closed
    /// or dropped.
    pub fn start_cleanup(&self, interval: Duration) -> Result<()> {
        self.inner
            .cleanup
            .start(&self.inner, interval, |inner| async move {
                if inner.closed.load(Ordering::Acquire) {
                    return false;
                }
                // A failed sweep (a busy database) is retried at the next tick.
                let _ = SqliteStorage { inner }.cleanup_expired().await;
                true
            })
    }

    /// Stops the cleanup task, if running.
    pub fn stop_cleanup(&self) {
        self.inner.cleanup.stop();
    }

    /// Whether the cleanup task is running.
    pub fn is_cleanup_running(&self) -> bool {
        self.inner.cleanup.is_running()
    }

    /// Deletes expired rows now, in batches of `cleanup_batch` (each its own
    /// short transaction); returns how many were deleted.
    pub async fn cleanup_expired(&self) -> Result<u64> {
        let now = micros(self.inner.clock.now().as_micros());
        let batch = i64::from(self.inner.config.cleanup_batch.max(1));
        let removed = self
            .blocking(move |conn, path| {
                let mut total = 0u64;
                loop {
                    let n = conn
                        .prepare_cached(
                            "DELETE FROM ratelimit_kv WHERE key IN \
                             (SELECT key FROM ratelimit_kv WHERE expires_at <= ?1 LIMIT ?2)",
                        )
                        .and_then(|mut s| s.execute(params![now, batch]))
                        .map_err(|e| sqlite(e, path))?;
                    total += n as u64;
                    if (n as i64) < batch {
                        return Ok(total);
                    }
                }
            })
            .await?;
        self.inner
            .expired_removed
            .fetch_add(removed, Ordering::Relaxed);
        Ok(removed)
    }

    fn ensure_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        Ok(())
    }

    fn now(&self) -> u64 {
        self.inner.clock.now().as_micros()
    }

    /// Runs `f` with a pooled connection on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, Option<&Path>) -> Result<T> + Send + 'static,
    {
        self.ensure_open()?;
        let inner = self.inner.clone();
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "the SQLite store runs inside a tokio runtime",
            )
            .with_source(e)
        })?;
        let job = move || {
            let path = inner.path.as_deref();
            let mut conn = inner.pool.get().map_err(|e| pool_error(e, path))?;
            let result = f(&mut conn, path);
            let disk_full = result
                .as_ref()
                .err()
                .is_some_and(crate::error::is_disk_full);
            after(&conn, &inner.disk_was_full, disk_full, result.is_ok());
            result
        };
        // Where the job runs changes no result, only which thread waits
        // (`.cargo/mutants.toml` excludes this condition's mutants).
        if self.inner.config.blocking == Blocking::InPlace
            && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        {
            return tokio::task::block_in_place(job);
        }
        handle.spawn_blocking(job).await.map_err(|e| {
            Error::new(
                ErrorKind::Other,
                "a SQLite operation panicked or was cancelled",
            )
            .with_source(e)
        })?
    }
}

/// After an operation on `conn` (`ok`: it succeeded; `disk_full`: it, or a
/// step of it, failed on a full disk): gives the log's space back around a
/// full disk (see [`make_room`]).
pub(crate) fn after(conn: &Connection, disk_was_full: &AtomicBool, disk_full: bool, ok: bool) {
    // Checkpoints around a full disk only give the log's space back: one
    // more or one fewer changes no result, only the work done
    // (`.cargo/mutants.toml` excludes the mutants of these guards; the
    // disk-full fault test checks that the store recovers).
    if disk_full {
        disk_was_full.store(true, Ordering::Relaxed);
        make_room(conn, "PASSIVE");
    } else if ok
        && disk_was_full.load(Ordering::Relaxed)
        && disk_was_full.swap(false, Ordering::Relaxed)
    {
        // The first success after a full disk: there is room again, enough
        // for the log to move into the database.
        make_room(conn, "TRUNCATE");
    }
}

/// Gives the write-ahead log's space back around a full disk. The log grows
/// by a page with every commit and starts over only after a checkpoint has
/// copied it into the database; SQLite's automatic checkpoint waits for
/// 1 000 pages (4 MB), which a nearly full disk never lets the log reach:
/// a store on a disk that filled up would then fail every write, however
/// much room (under 4 MB) was freed. So: after a write failed on a full
/// disk, a `PASSIVE` checkpoint (it never waits; when it copies everything,
/// the next commit starts the log over, reusing its space); after the first
/// write that succeeds again, a `TRUNCATE` one (the log's file shrinks to
/// nothing). Best effort: a checkpoint that fails changes nothing.
fn make_room(conn: &Connection, mode: &str) {
    let _ = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction: the write lock is taken first,
/// so the reads inside cannot go stale before the writes.
fn immediate<T>(
    conn: &mut Connection,
    path: Option<&Path>,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
) -> Result<T> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sqlite(e, path))?;
    let value = f(&tx)?;
    tx.commit().map_err(|e| sqlite(e, path))?;
    Ok(value)
}

fn read_live(
    tx: &Connection,
    key: &str,
    now: u64,
    path: Option<&Path>,
) -> Result<Option<(Vec<u8>, i64)>> {
    tx.prepare_cached(SELECT_LIVE)
        .and_then(|mut s| {
            s.query_row(params![key, micros(now)], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| sqlite(e, path))
}

fn write(
    tx: &Connection,
    key: &str,
    value: &[u8],
    expires_at: i64,
    path: Option<&Path>,
) -> Result<()> {
    tx.prepare_cached(UPSERT)
        .and_then(|mut s| s.execute(params![key, value, expires_at]))
        .map(|_| ())
        .map_err(|e| sqlite(e, path))
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let (key, now) = (key.to_owned(), self.now());
        self.blocking(move |conn, path| Ok(read_live(conn, &key, now, path)?.map(|(v, _)| v)))
            .await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let (key, value, at) = (key.to_owned(), value.to_vec(), expiry(self.now(), ttl));
        self.blocking(move |conn, path| write(conn, &key, &value, at, path))
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let (key, now) = (key.to_owned(), micros(self.now()));
        self.blocking(move |conn, path| {
            immediate(conn, path, |tx| {
                let live = tx
                    .prepare_cached("SELECT 1 FROM ratelimit_kv WHERE key = ?1 AND expires_at > ?2")
                    .and_then(|mut s| s.exists(params![key, now]))
                    .map_err(|e| sqlite(e, path))?;
                tx.prepare_cached("DELETE FROM ratelimit_kv WHERE key = ?1")
                    .and_then(|mut s| s.execute(params![key]))
                    .map_err(|e| sqlite(e, path))?;
                Ok(live)
            })
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let (key, now) = (key.to_owned(), self.now());
        self.blocking(move |conn, path| Ok(read_live(conn, &key, now, path)?.is_some()))
            .await
    }

    async fn increment(&self, key: &str, amount: i64, ttl: Duration) -> Result<i64> {
        let (key, now) = (key.to_owned(), self.now());
        self.blocking(move |conn, path| {
            immediate(conn, path, |tx| {
                let wrong = || {
                    Error::new(
                        ErrorKind::WrongType,
                        format!("the value at {key:?} is not an integer"),
                    )
                };
                let (current, expires_at) = match read_live(tx, &key, now, path)? {
                    Some((bytes, at)) => {
                        let n: i64 = std::str::from_utf8(&bytes)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(wrong)?;
                        (n, at)
                    }
                    None => (0, expiry(now, ttl)),
                };
                let next = current.checked_add(amount).ok_or_else(|| {
                    Error::new(
                        ErrorKind::WrongType,
                        format!("incrementing {key:?} by {amount} overflows"),
                    )
                })?;
                write(tx, &key, next.to_string().as_bytes(), expires_at, path)?;
                Ok(next)
            })
        })
        .await
    }

    async fn clear(&self) -> Result<u64> {
        self.blocking(|conn, path| {
            conn.execute("DELETE FROM ratelimit_kv", [])
                .map(|n| n as u64)
                .map_err(|e| sqlite(e, path))
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.stop_cleanup();
        Ok(())
    }

    async fn stats(&self) -> Result<StorageStats> {
        let now = micros(self.now());
        let (rows, bytes, journal, synchronous) = self
            .blocking(move |conn, path| {
                let rows: i64 = conn
                    .query_row(
                        "SELECT COUNT(*) FROM ratelimit_kv WHERE expires_at > ?1",
                        [now],
                        |r| r.get(0),
                    )
                    .map_err(|e| sqlite(e, path))?;
                let pages: i64 = conn
                    .pragma_query_value(None, "page_count", |r| r.get(0))
                    .map_err(|e| sqlite(e, path))?;
                let size: i64 = conn
                    .pragma_query_value(None, "page_size", |r| r.get(0))
                    .map_err(|e| sqlite(e, path))?;
                let journal: String = conn
                    .pragma_query_value(None, "journal_mode", |r| r.get(0))
                    .map_err(|e| sqlite(e, path))?;
                // The mode the connection runs with, read back: what the
                // store asked for only if SQLite took it.
                let synchronous: i64 = conn
                    .pragma_query_value(None, "synchronous", |r| r.get(0))
                    .map_err(|e| sqlite(e, path))?;
                Ok((rows, pages.saturating_mul(size), journal, synchronous))
            })
            .await?;
        let mut stats = StorageStats::new("sqlite");
        stats.keys = Some(u64::try_from(rows).unwrap_or(0));
        stats.approx_bytes = Some(u64::try_from(bytes).unwrap_or(0));
        stats.expirations = Some(self.inner.expired_removed.load(Ordering::Relaxed));
        stats.details = vec![
            ("path".to_owned(), crate::error::describe(self.path())),
            ("journal_mode".to_owned(), journal),
            (
                "synchronous".to_owned(),
                match synchronous {
                    0 => "OFF".to_owned(),
                    1 => "NORMAL".to_owned(),
                    2 => "FULL".to_owned(),
                    3 => "EXTRA".to_owned(),
                    other => other.to_string(),
                },
            ),
            (
                "schema_version".to_owned(),
                schema::SCHEMA_VERSION.to_string(),
            ),
            (
                "cleanup_running".to_owned(),
                self.is_cleanup_running().to_string(),
            ),
        ];
        if let Some(writer) = &self.inner.writer {
            // How many decisions each commit of the writer served.
            let (groups, decisions) = writer.groups();
            stats.details.extend([
                ("writer_commits".to_owned(), groups.to_string()),
                ("writer_decisions".to_owned(), decisions.to_string()),
            ]);
        }
        Ok(stats)
    }

    async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
        let now = self.now();
        let ops: Vec<(String, Option<Vec<u8>>, Vec<u8>, i64)> = ops
            .iter()
            .map(|op| {
                (
                    op.key.to_owned(),
                    op.expected.map(<[u8]>::to_vec),
                    op.new_value.to_vec(),
                    expiry(now, op.ttl),
                )
            })
            .collect();
        self.blocking(move |conn, path| {
            immediate(conn, path, |tx| {
                for (key, expected, _, _) in &ops {
                    let current = read_live(tx, key, now, path)?.map(|(v, _)| v);
                    if current != *expected {
                        return Ok(false);
                    }
                }
                for (key, _, value, at) in &ops {
                    write(tx, key, value, *at, path)?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        self.decide_with(request, kit::decide_all).await
    }

    async fn decide_each(&self, request: &DecideRequest<'_>) -> Result<Vec<Decision>> {
        self.decide_with(request, kit::decide_each).await
    }

    async fn adjust(&self, request: &AdjustRequest<'_>) -> Result<Vec<Decision>> {
        let rules = request
            .entries
            .iter()
            .map(|e| (e.state_key(), e.rule.clone(), e.adjustment))
            .collect();
        self.step_with(rules, request.now, kit::adjust).await
    }
}

impl SqliteStorage {
    /// The decision step with `decide` (the combined decision or one per
    /// entry).
    async fn decide_with<T: Send + 'static>(
        &self,
        request: &DecideRequest<'_>,
        decide: kit::DecideFn<T>,
    ) -> Result<T> {
        let rules = request
            .entries
            .iter()
            .map(|e: &DecideEntry<'_>| (e.state_key(), e.rule.clone(), e.cost))
            .collect();
        self.step_with(rules, request.now, decide).await
    }

    /// In one immediate transaction: reads the states of `rules` (each its
    /// state key, the rule and its `X`, a cost or an adjustment), runs
    /// `step` on them, and stores what it says.
    async fn step_with<X: Copy + Send + 'static, T: Send + 'static>(
        &self,
        rules: Vec<(String, Rule, X)>,
        now: Timestamp,
        step: kit::StepFn<X, T>,
    ) -> Result<T> {
        let job = move |tx: &Connection, path: Option<&Path>| {
            let now_us = now.as_micros();
            let mut states = Vec::with_capacity(rules.len());
            for (key, _, _) in &rules {
                let state = match read_live(tx, key, now_us, path)? {
                    Some((bytes, _)) => {
                        Some(RuleState::decode(&bytes).map_err(|e| corrupt_state(key, e))?)
                    }
                    None => None,
                };
                states.push(state);
            }
            let inputs: Vec<_> = rules
                .iter()
                .zip(&states)
                .map(|((_, rule, x), state)| (rule, state.as_ref(), *x))
                .collect();
            let (decided, writes) = step(&inputs, now)?;
            for ((key, _, _), w) in rules.iter().zip(writes) {
                if let Some(w) = w {
                    write(tx, key, &w.state.encode(), expiry(now_us, w.ttl), path)?;
                }
            }
            Ok(decided)
        };
        match &self.inner.writer {
            Some(writer) => {
                self.ensure_open()?;
                writer.decide(job).await
            }
            None => {
                self.blocking(move |conn, path| immediate(conn, path, |tx| job(tx, path)))
                    .await
            }
        }
    }
}
