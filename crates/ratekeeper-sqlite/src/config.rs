//! Settings of the SQLite store, from code or from a `sqlite://` URL.

use std::path::PathBuf;
use std::time::Duration;

use ratekeeper_core::{Error, parse_duration};

use crate::error::invalid;

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file, shared by every process that opens it.
    File(PathBuf),
    /// A private in-memory database (tests, one process): one connection.
    Memory,
}

/// How hard SQLite works to make a commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// With WAL, commits survive an application crash; the last commits may be
    /// lost on power loss or an OS crash. The default, and SQLite's advice for WAL.
    #[default]
    Normal,
    /// Every commit is synced to disk before it returns: survives power loss,
    /// costs a sync per commit (one per decision when decisions come one at
    /// a time; one per group of them with [`Blocking::Writer`] under load).
    Full,
    /// No syncs at all: fastest; an OS crash can corrupt the database.
    Off,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
            Self::Off => "OFF",
        }
    }
}

/// Where the store runs SQLite's blocking calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Blocking {
    /// Decisions (and adjustments) on a thread of the store's own, which
    /// commits every decision waiting for it in one `BEGIN IMMEDIATE`
    /// transaction (each in a savepoint of its own: one that fails is
    /// rolled back alone). Under load, one commit and one wait for the
    /// file's lock serve many decisions. One at a time, neither thread
    /// sleeps between them: the writer watches for the next decision for
    /// 50 µs, and a caller whose decision is the only one looks for its
    /// answer between yields for up to 100 µs (processor time spent to
    /// spare two wake-ups). Runtime workers never run SQLite, so never wait
    /// for its lock, on any runtime. The other operations (key-value,
    /// cleanup, stats) run on tokio's blocking pool, as with
    /// [`SpawnBlocking`](Self::SpawnBlocking).
    #[default]
    Writer,
    /// On tokio's blocking thread pool (`spawn_blocking`): runtime workers never
    /// block. Each operation pays two thread hand-offs (tens of microseconds on
    /// some machines), which dominates when requests arrive one at a time.
    SpawnBlocking,
    /// On the calling worker thread, after tokio hands that worker's other tasks
    /// to another thread (`block_in_place`): no hand-off, so one-at-a-time
    /// decisions are several times faster than with `SpawnBlocking`, but the
    /// worker waits for the file's lock. Other futures *inside the same task*
    /// (`join!`, `select!`) wait while SQLite runs. Only on a multi-thread
    /// runtime; elsewhere it falls back to `SpawnBlocking`. Not inside a
    /// `LocalSet` run by the runtime's own `block_on` thread (actix's
    /// `System::with_tokio_rt` is one): tokio's `block_in_place` panics there.
    InPlace,
}

/// Settings of a [`SqliteStorage`](crate::SqliteStorage).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database.
    pub location: Location,
    /// Connections in the pool (1 for [`Location::Memory`]).
    pub pool_size: u32,
    /// How long a writer waits for another process's write lock before the
    /// operation fails with a transient error.
    pub busy_timeout: Duration,
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// How often the background task deletes expired rows (`None`: never;
    /// expired rows are ignored by every read anyway).
    pub cleanup_interval: Option<Duration>,
    /// Rows deleted per statement by the cleanup, so it never holds the write
    /// lock for long.
    pub cleanup_batch: u32,
    /// Where SQLite's blocking calls run.
    pub blocking: Blocking,
}

impl SqliteConfig {
    /// Defaults for a database at `location`.
    pub fn new(location: Location) -> Self {
        Self {
            location,
            pool_size: 8,
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::default(),
            cleanup_interval: Some(Duration::from_secs(300)),
            cleanup_batch: 1_000,
            blocking: Blocking::default(),
        }
    }

    /// Reads `sqlite:///absolute/path.db`, `sqlite://relative/path.db` or
    /// `sqlite::memory:`, with optional query parameters `pool_size`,
    /// `busy_timeout`, `synchronous` (`normal`, `full`, `off`),
    /// `cleanup_interval` (a duration or `off`), `cleanup_batch` and `blocking`
    /// (`writer`, `spawn` or `in_place`, see [`Blocking`]).
    ///
    /// ```
    /// use ratekeeper_sqlite::{Location, SqliteConfig, Synchronous};
    ///
    /// let c = SqliteConfig::from_url("sqlite:///var/lib/app/rl.db?synchronous=full").unwrap();
    /// assert_eq!(c.location, Location::File("/var/lib/app/rl.db".into()));
    /// assert_eq!(c.synchronous, Synchronous::Full);
    /// assert_eq!(SqliteConfig::from_url("sqlite::memory:").unwrap().location, Location::Memory);
    /// assert!(SqliteConfig::from_url("sqlite:///x.db?pool=3").is_err());
    /// ```
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let rest = url.strip_prefix("sqlite:").ok_or_else(|| {
            invalid(format!(
                "a SQLite store URL starts with sqlite://, not {:?}",
                cut(url)
            ))
        })?;
        let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
        let location = match target {
            ":memory:" | "//:memory:" => Location::Memory,
            _ => {
                let path = target.strip_prefix("//").ok_or_else(|| {
                    invalid(format!(
                        "expected sqlite:///absolute/path.db, sqlite://relative/path.db or sqlite::memory:, not {:?}",
                        cut(url)
                    ))
                })?;
                if path.is_empty() {
                    return Err(invalid("the SQLite store URL names no file".to_owned()));
                }
                Location::File(PathBuf::from(path))
            }
        };
        let mut config = Self::new(location);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = || {
                value.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    invalid(format!(
                        "{name} must be a whole number above 0, not {:?}",
                        cut(value)
                    ))
                })
            };
            let duration = || parse_duration(value).map_err(|e| invalid(format!("{name}: {e}")));
            match name {
                "pool_size" => config.pool_size = number()?,
                "cleanup_batch" => config.cleanup_batch = number()?,
                "busy_timeout" => config.busy_timeout = duration()?,
                "cleanup_interval" if value == "off" => config.cleanup_interval = None,
                "cleanup_interval" => {
                    let d = duration()?;
                    if d.is_zero() {
                        return Err(invalid(
                            "cleanup_interval must be above 0 (or off)".to_owned(),
                        ));
                    }
                    config.cleanup_interval = Some(d);
                }
                "blocking" => {
                    config.blocking = match value {
                        "writer" => Blocking::Writer,
                        "spawn" => Blocking::SpawnBlocking,
                        "in_place" => Blocking::InPlace,
                        _ => {
                            return Err(invalid(format!(
                                "blocking must be writer, spawn or in_place, not {:?}",
                                cut(value)
                            )));
                        }
                    }
                }
                "synchronous" => {
                    config.synchronous = match value.to_ascii_lowercase().as_str() {
                        "normal" => Synchronous::Normal,
                        "full" => Synchronous::Full,
                        "off" => Synchronous::Off,
                        _ => {
                            return Err(invalid(format!(
                                "synchronous must be normal, full or off, not {:?}",
                                cut(value)
                            )));
                        }
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "unknown SQLite store option {:?} (expected pool_size, busy_timeout, synchronous, \
                         cleanup_interval, cleanup_batch or blocking)",
                        cut(other)
                    )));
                }
            }
        }
        Ok(config)
    }
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}
