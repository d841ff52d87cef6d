//! The writer thread ([`Blocking::Writer`](crate::Blocking::Writer)): the
//! store's decisions committed several to a transaction.
//!
//! Each decision is a job on a channel. The thread takes every job waiting
//! (up to [`MAX_GROUP`]) and runs them one after another inside one
//! `BEGIN IMMEDIATE` transaction, each in a savepoint of its own, then
//! commits once: under load, one commit (and one wait for the file's write
//! lock) serves many decisions. A job sees the writes of the jobs before it,
//! so the group decides exactly as the same decisions one transaction each
//! would. A job whose step fails rolls its savepoint back and answers its
//! error; the others are unaffected, unless SQLite ended the whole
//! transaction on that error (a full disk, an I/O error). If the
//! transaction cannot begin or commit, or SQLite ended it, every job of the
//! group answers that error and nothing of the group is stored.
//!
//! Between jobs, the thread watches the channel for [`SPIN`] before it
//! sleeps, and a caller whose job is the only one looks for its answer
//! between yields to its runtime for up to [`ANSWER_SPIN`]: one task
//! sending one decision after another finds the thread awake, and is
//! answered without either thread being put to sleep and woken (tens of
//! microseconds each on some machines). The price is processor time: at
//! most those two spans per decision, spent watching, when decisions come
//! one at a time. With one processor (or a quota of one) nothing watches:
//! the watcher would hold the processor the watched thread needs.
//!
//! Runtime workers never run SQLite, so they never wait for the file's
//! lock: they send a job and await its answer.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use ratekeeper_core::{Error, ErrorKind, Result};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::error::{pool as pool_error, sqlite};

/// The most decisions one transaction holds.
pub(crate) const MAX_GROUP: usize = 64;

/// How long the thread watches for the next job before it sleeps.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// How long a caller whose job is the only one looks for its answer before
/// it sleeps: about what SQLite takes for a decision on a local disk, a
/// few times over.
pub(crate) const ANSWER_SPIN: Duration = Duration::from_micros(100);

/// Whether this process may watch instead of sleeping: only with more
/// than one processor to run on (a quota of one included), where the
/// watcher does not hold the processor the watched thread needs.
fn may_spin() -> bool {
    static MANY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MANY.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// One decision for the writer: a step to run inside the group's
/// transaction, and where its answer goes.
pub(crate) trait Job: Send {
    /// Runs the step on `conn` (inside the transaction) and keeps its
    /// answer; how it went (if it failed, its writes are rolled back).
    fn run(&mut self, conn: &Connection, path: Option<&Path>) -> Ran;

    /// Sends the answer kept, or, for a step that succeeded, `failed`: the
    /// transaction did not commit.
    fn answer(self: Box<Self>, failed: Option<Error>);

    /// The error the step failed with, copied (for the rest of a group
    /// whose transaction SQLite ended because of it).
    fn failure(&self) -> Option<Error>;
}

/// How a [`Job`]'s step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ran {
    Ok,
    Failed,
    /// Failed on a full disk (the log's space is then given back).
    DiskFull,
}

/// A [`Job`] running `step` and answering on `reply`.
pub(crate) struct Step<T, F> {
    step: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Step<T, F>
where
    T: Send,
    F: FnOnce(&Connection, Option<&Path>) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection, path: Option<&Path>) -> Ran {
        let result = match self.step.take() {
            // A step that panics fails alone, as one on the blocking pool
            // does; the thread goes on with the others.
            Some(step) => std::panic::catch_unwind(AssertUnwindSafe(|| step(conn, path)))
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::Other, "a SQLite step panicked"))),
            None => Err(Error::new(ErrorKind::Other, "a SQLite job ran twice")),
        };
        let ran = match &result {
            Ok(_) => Ran::Ok,
            Err(e) if crate::error::is_disk_full(e) => Ran::DiskFull,
            Err(_) => Ran::Failed,
        };
        self.result = Some(result);
        ran
    }

    fn answer(self: Box<Self>, failed: Option<Error>) {
        // The caller may have stopped waiting (its future dropped): the
        // decision stands all the same, as one on the blocking pool does.
        let _ = self.reply.send(settle(self.result, failed));
    }

    fn failure(&self) -> Option<Error> {
        failure_of(self.result.as_ref())
    }
}

/// A job's answer: its step's own error, else the group's (`failed`), else
/// what its step gave.
fn settle<T>(result: Option<Result<T>>, failed: Option<Error>) -> Result<T> {
    match (result, failed) {
        (Some(Err(e)), _) => Err(e),
        (Some(Ok(_)) | None, Some(failed)) => Err(failed),
        (Some(Ok(value)), None) => Ok(value),
        (None, None) => Err(Error::new(ErrorKind::Other, "a SQLite job never ran")),
    }
}

/// A copy of the error a step failed with (see [`Job::failure`]).
fn failure_of<T>(result: Option<&Result<T>>) -> Option<Error> {
    match result {
        Some(Err(e)) => Some(copy(e)),
        _ => None,
    }
}

/// The same error for every job of a group (errors are not `Clone`: the
/// cause goes to one job, the last; the others get its kind and message).
fn copy(e: &Error) -> Error {
    Error::new(e.kind(), e.message().to_owned()).with_transient(e.is_transient())
}

/// The sending end, kept by the store; the thread ends when it is dropped.
#[derive(Debug)]
pub(crate) struct Writer {
    jobs: Sender<Box<dyn Job>>,
    /// Jobs sent and not answered yet.
    pending: Arc<AtomicUsize>,
    /// Groups committed (or tried), and the jobs they held.
    groups: Arc<Counts>,
}

/// The groups the thread committed (or tried), and the jobs they held.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    groups: std::sync::atomic::AtomicU64,
    jobs: std::sync::atomic::AtomicU64,
}

impl Writer {
    /// Starts the thread, which borrows connections from `pool` (one per
    /// group) for the database at `path`.
    pub(crate) fn start(
        pool: Pool<SqliteConnectionManager>,
        path: Option<PathBuf>,
        disk_was_full: Arc<AtomicBool>,
    ) -> Result<Self> {
        let (jobs, queue) = channel::<Box<dyn Job>>();
        let pending = Arc::new(AtomicUsize::new(0));
        let groups = Arc::new(Counts::default());
        let thread = Thread {
            pool,
            path,
            disk_was_full,
            pending: pending.clone(),
            groups: groups.clone(),
        };
        std::thread::Builder::new()
            .name("ratekeeper-sqlite-writer".to_owned())
            .spawn(move || thread.run(&queue))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    "the SQLite store's writer thread could not start",
                )
                .with_source(e)
            })?;
        Ok(Self {
            jobs,
            pending,
            groups,
        })
    }

    /// Groups committed (or tried) so far, and the decisions they held.
    pub(crate) fn groups(&self) -> (u64, u64) {
        (
            self.groups.groups.load(Ordering::Relaxed),
            self.groups.jobs.load(Ordering::Relaxed),
        )
    }

    /// Runs `step` in the writer's next group; its answer.
    pub(crate) async fn decide<T, F>(&self, step: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, Option<&Path>) -> Result<T> + Send + 'static,
    {
        let (reply, mut answer) = oneshot::channel();
        let job = Box::new(Step {
            step: Some(step),
            result: None,
            reply,
        });
        let alone = self.pending.fetch_add(1, Ordering::AcqRel) == 0;
        if self.jobs.send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(stopped());
        }
        // The only job: its answer comes as soon as SQLite has run it.
        // Looking for it between yields to the runtime, for up to
        // `ANSWER_SPIN`, spares the wake-up of a sleeping worker (tens of
        // microseconds on some machines); with jobs before it, the wait is
        // longer and the task sleeps at once.
        if alone && may_spin() {
            let until = Instant::now() + ANSWER_SPIN;
            loop {
                match answer.try_recv() {
                    Ok(result) => return result,
                    Err(oneshot::error::TryRecvError::Closed) => return Err(stopped()),
                    Err(oneshot::error::TryRecvError::Empty) if Instant::now() < until => {
                        tokio::task::yield_now().await;
                    }
                    Err(oneshot::error::TryRecvError::Empty) => break,
                }
            }
        }
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "the SQLite store's writer thread has stopped",
    )
}

/// What the thread owns.
struct Thread {
    pool: Pool<SqliteConnectionManager>,
    path: Option<PathBuf>,
    disk_was_full: Arc<AtomicBool>,
    pending: Arc<AtomicUsize>,
    groups: Arc<Counts>,
}

impl Thread {
    /// Groups of waiting jobs, one transaction each, until the store is
    /// dropped.
    fn run(&self, queue: &Receiver<Box<dyn Job>>) {
        let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = next(queue) {
            group.push(first);
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let failed = self.group(&mut group);
            self.groups.groups.fetch_add(1, Ordering::Relaxed);
            self.groups
                .jobs
                .fetch_add(group.len() as u64, Ordering::Relaxed);
            self.pending.fetch_sub(group.len(), Ordering::AcqRel);
            let last = group.len().saturating_sub(1);
            let mut failed = failed;
            for (i, job) in group.drain(..).enumerate() {
                let failed = if i == last {
                    failed.take()
                } else {
                    failed.as_ref().map(copy)
                };
                job.answer(failed);
            }
        }
    }

    /// Runs `group` on a pooled connection; the error that ended its
    /// transaction, if it did not commit.
    fn group(&self, group: &mut [Box<dyn Job>]) -> Option<Error> {
        let path = self.path.as_deref();
        let mut conn = match self.pool.get() {
            Ok(conn) => conn,
            Err(e) => return Some(pool_error(e, path)),
        };
        // A panic outside the steps (in SQLite's bindings) fails this
        // group, not the thread: the store goes on.
        let ended = std::panic::catch_unwind(AssertUnwindSafe(|| commit(&mut conn, path, group)))
            .unwrap_or_else(|panic| Ended {
                result: Err(Error::new(
                    ErrorKind::Other,
                    format!(
                        "the SQLite store's writer panicked while committing: {}",
                        panic_message(panic.as_ref())
                    ),
                )),
                disk_full: false,
                any_ok: false,
            });
        let failed = ended.result.err();
        let disk_full = ended.disk_full || failed.as_ref().is_some_and(crate::error::is_disk_full);
        // The log's space is given back after a full disk once a decision
        // has been stored again (as in the other modes, where each is a
        // transaction of its own).
        crate::storage::after(
            &conn,
            &self.disk_was_full,
            disk_full,
            failed.is_none() && ended.any_ok,
        );
        failed
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The next job: watched for during [`SPIN`], then waited for; `None` once
/// the store is gone.
fn next(queue: &Receiver<Box<dyn Job>>) -> Option<Box<dyn Job>> {
    if !may_spin() {
        return queue.recv().ok();
    }
    let until = Instant::now() + SPIN;
    loop {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if Instant::now() < until => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => return queue.recv().ok(),
        }
    }
}

/// How a group's transaction ended.
struct Ended {
    /// Whether it committed (or, for a lone job that failed, rolled back).
    result: Result<()>,
    /// Whether a job failed on a full disk.
    disk_full: bool,
    /// Whether a job's step succeeded (and, if the transaction committed,
    /// was stored).
    any_ok: bool,
}

/// Runs `group` in one immediate transaction, each job in a savepoint (a
/// lone job needs none: its failure rolls the transaction back), and
/// commits.
fn commit(conn: &mut Connection, path: Option<&Path>, group: &mut [Box<dyn Job>]) -> Ended {
    let (mut disk_full, mut any_ok) = (false, false);
    let result = (|| {
        let mut tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sqlite(e, path))?;
        if let [job] = group {
            let ran = job.run(&tx, path);
            disk_full = ran == Ran::DiskFull;
            any_ok = ran == Ran::Ok;
            if !any_ok {
                // Nothing of a step that failed part way is stored (if
                // SQLite has not rolled it back already).
                if !tx.is_autocommit() {
                    tx.rollback().map_err(|e| sqlite(e, path))?;
                }
                return Ok(());
            }
        } else {
            for job in group.iter_mut() {
                let savepoint = tx.savepoint().map_err(|e| sqlite(e, path))?;
                let ran = job.run(&savepoint, path);
                disk_full |= ran == Ran::DiskFull;
                any_ok |= ran == Ran::Ok;
                if ran == Ran::Ok {
                    savepoint.commit().map_err(|e| sqlite(e, path))?;
                } else if savepoint.is_autocommit() {
                    // SQLite ended the whole transaction on that error (a
                    // full disk, an I/O error): the rest of the group
                    // fails with it, and nothing of the group is stored.
                    return Err(job.failure().unwrap_or_else(|| {
                        Error::new(ErrorKind::Other, "a SQLite transaction ended early")
                    }));
                } else {
                    // Rolled back, then released (a savepoint's default end).
                    savepoint.finish().map_err(|e| sqlite(e, path))?;
                }
            }
        }
        tx.commit().map_err(|e| sqlite(e, path))
    })();
    Ended {
        result,
        disk_full,
        any_ok,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "test helpers")]

    use std::sync::mpsc;

    use super::*;

    /// A job that runs `sql`, then fails if told to (or panics, outside any
    /// guard a step has), and answers on `done`.
    struct Sql {
        sql: &'static str,
        then: Then,
        result: Option<Result<()>>,
        done: mpsc::Sender<Result<()>>,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Then {
        Succeed,
        Fail,
        Panic,
    }

    impl Job for Sql {
        fn run(&mut self, conn: &Connection, _: Option<&Path>) -> Ran {
            let result = conn.execute_batch(self.sql).map_err(|e| sqlite(e, None));
            let result = match self.then {
                Then::Succeed => result,
                Then::Fail => Err(Error::new(ErrorKind::Other, "failed on purpose")),
                Then::Panic => panic!("a job that panics"),
            };
            let ran = if result.is_ok() { Ran::Ok } else { Ran::Failed };
            self.result = Some(result);
            ran
        }

        fn answer(self: Box<Self>, failed: Option<Error>) {
            let _ = self.done.send(settle(self.result, failed));
        }

        fn failure(&self) -> Option<Error> {
            failure_of(self.result.as_ref())
        }
    }

    /// One connection to a private database with a table `t (x)`.
    fn pool() -> Pool<SqliteConnectionManager> {
        let pool = Pool::builder()
            .max_size(1)
            .build(SqliteConnectionManager::memory())
            .unwrap();
        pool.get()
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        pool
    }

    /// Runs `jobs` as the thread would, all queued before it starts (one
    /// group); their answers, and the thread's counters.
    fn group(
        pool: &Pool<SqliteConnectionManager>,
        jobs: &[(&'static str, Then)],
    ) -> (Vec<Result<()>>, Thread) {
        let (queue_in, queue) = channel::<Box<dyn Job>>();
        let mut answers = Vec::new();
        for &(sql, then) in jobs {
            let (done, answer) = mpsc::channel();
            queue_in
                .send(Box::new(Sql {
                    sql,
                    then,
                    result: None,
                    done,
                }))
                .unwrap();
            answers.push(answer);
        }
        drop(queue_in);
        let thread = Thread {
            pool: pool.clone(),
            path: None,
            disk_was_full: Arc::new(AtomicBool::new(false)),
            pending: Arc::new(AtomicUsize::new(jobs.len())),
            groups: Arc::new(Counts::default()),
        };
        thread.run(&queue);
        let answers = answers.iter().map(|a| a.recv().unwrap()).collect();
        (answers, thread)
    }

    fn stored(pool: &Pool<SqliteConnectionManager>) -> Vec<i64> {
        let conn = pool.get().unwrap();
        let mut statement = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_job_that_fails_is_rolled_back_alone() {
        let pool = pool();
        let (answers, thread) = group(
            &pool,
            &[
                ("INSERT INTO t VALUES (1)", Then::Succeed),
                ("INSERT INTO t VALUES (2)", Then::Fail),
                ("INSERT INTO t VALUES (3)", Then::Succeed),
            ],
        );
        let ok: Vec<bool> = answers.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true]);
        assert_eq!(stored(&pool), [1, 3]);
        assert_eq!(thread.pending.load(Ordering::Relaxed), 0);
        assert_eq!(thread.groups.groups.load(Ordering::Relaxed), 1);
        assert_eq!(thread.groups.jobs.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_transaction_sqlite_ended_fails_its_whole_group() {
        let pool = pool();
        let (answers, thread) = group(
            &pool,
            &[
                ("INSERT INTO t VALUES (1)", Then::Succeed),
                // Ends the transaction, as SQLite does on some errors.
                ("ROLLBACK", Then::Fail),
                ("INSERT INTO t VALUES (3)", Then::Succeed),
            ],
        );
        for answer in &answers {
            let e = answer.as_ref().unwrap_err();
            assert_eq!(e.message(), "failed on purpose");
        }
        assert_eq!(stored(&pool), Vec::<i64>::new());
        assert_eq!(thread.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_panic_while_committing_fails_its_group_and_the_thread_goes_on() {
        let pool = pool();
        let (answers, thread) = group(
            &pool,
            &[
                ("INSERT INTO t VALUES (1)", Then::Succeed),
                ("INSERT INTO t VALUES (2)", Then::Panic),
            ],
        );
        for answer in &answers {
            let e = answer.as_ref().unwrap_err();
            assert!(e.message().contains("a job that panics"), "{e}");
        }
        assert_eq!(stored(&pool), Vec::<i64>::new());
        assert_eq!(thread.pending.load(Ordering::Relaxed), 0);
        // The connection is usable, the next group commits.
        let (answers, _) = group(&pool, &[("INSERT INTO t VALUES (4)", Then::Succeed)]);
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(stored(&pool), [4]);
    }

    #[test]
    fn a_group_that_cannot_commit_gives_its_cause_to_one_job() {
        let pool = pool();
        // A second connection cannot take the lock on this private
        // database: make BEGIN fail instead, with a statement that leaves
        // a transaction open on the only connection.
        pool.get().unwrap().execute_batch("BEGIN").unwrap();
        let (answers, _) = group(
            &pool,
            &[
                ("INSERT INTO t VALUES (1)", Then::Succeed),
                ("INSERT INTO t VALUES (2)", Then::Succeed),
            ],
        );
        let causes: Vec<bool> = answers
            .iter()
            .map(|a| std::error::Error::source(a.as_ref().unwrap_err()).is_some())
            .collect();
        assert_eq!(causes, [false, true]);
    }
}
