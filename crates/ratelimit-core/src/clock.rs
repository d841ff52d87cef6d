//! Time: one representation everywhere (integer microseconds since the Unix
//! epoch) and injectable clocks.
//!
//! Every algorithm takes `now` as an argument; the [`Limiter`](crate::Limiter)
//! reads it from a [`Clock`]. Production code uses [`SystemClock`]; tests use a
//! [`ManualClock`] and move time by hand, which makes every decision reproducible.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);

    /// A timestamp `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The timestamp of a [`SystemTime`]; times before the epoch clamp to it.
    pub fn from_system_time(time: SystemTime) -> Self {
        let micros = time.duration_since(UNIX_EPOCH).map_or(0, |d| duration_to_micros(d));
        Self(micros)
    }

    /// `self + duration`, saturating at the largest timestamp.
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(duration_to_micros(duration)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// Whole microseconds in `d`, saturating at `u64::MAX`.
pub(crate) fn duration_to_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A boxed, sendable future, as returned by [`Clock::sleep`].
pub type SleepFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of time for the limiter and the stores.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Waits for `duration` of this clock's time. Used by
    /// [`Limiter::until_ready`](crate::Limiter::until_ready); the default sleeps
    /// on the tokio timer.
    fn sleep(&self, duration: Duration) -> SleepFuture<'_> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Wall-clock time from the operating system.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// A clock that moves only when told to: for deterministic tests.
///
/// Clones share the same time. [`Clock::sleep`] on a manual clock advances it by
/// the requested duration and returns at once, so code that waits (such as
/// [`Limiter::until_ready`](crate::Limiter::until_ready)) runs instantly and
/// deterministically.
///
/// ```
/// use ratelimit_core::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_micros(1_000));
/// clock.advance(Duration::from_millis(2));
/// assert_eq!(clock.now(), Timestamp::from_micros(3_000));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            micros: Arc::new(AtomicU64::new(start.as_micros())),
        }
    }

    /// Moves time forward by `duration`.
    pub fn advance(&self, duration: Duration) {
        let step = duration_to_micros(duration);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t.saturating_add(step)));
    }

    /// Sets the time (it may move backwards, to test clock skew).
    pub fn set(&self, now: Timestamp) {
        self.micros.store(now.as_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::SeqCst))
    }

    fn sleep(&self, duration: Duration) -> SleepFuture<'_> {
        self.advance(duration);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now().as_micros() > 1_577_836_800_000_000);
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp::from_micros(u64::MAX - 1);
        assert_eq!(t.saturating_add(Duration::from_secs(1)).as_micros(), u64::MAX);
        assert_eq!(Timestamp::EPOCH.saturating_duration_since(t), Duration::ZERO);
    }

    #[tokio::test]
    async fn manual_clock_sleep_advances_time() {
        let clock = ManualClock::new(Timestamp::from_micros(10));
        clock.sleep(Duration::from_micros(5)).await;
        assert_eq!(clock.clone().now().as_micros(), 15);
    }
}
