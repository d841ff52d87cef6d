//! Time: one representation everywhere (integer microseconds since the Unix
//! epoch) and injectable clocks.
//!
//! Every algorithm takes `now` as an argument; the [`Limiter`](crate::Limiter)
//! reads it from a [`Clock`]. Production code uses [`SystemClock`]; tests use a
//! [`ManualClock`] and move time by hand, which makes every decision reproducible.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);

    /// A timestamp `micros` microseconds after the Unix epoch.
    #[inline]
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    #[inline]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The timestamp of a [`SystemTime`]; times before the epoch clamp to it.
    pub fn from_system_time(time: SystemTime) -> Self {
        let micros = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, duration_to_micros);
        Self(micros)
    }

    /// `self + duration`, saturating at the largest timestamp.
    #[must_use]
    #[inline]
    pub fn saturating_add(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(duration_to_micros(duration)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// Whole microseconds in `d`, saturating at `u64::MAX`.
#[inline]
pub fn duration_to_micros(d: Duration) -> u64 {
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

/// Wall-clock time, cheap to read.
///
/// Reading the operating system's wall clock costs tens of nanoseconds on
/// some machines, a large share of an in-memory decision. This clock counts
/// with the processor's time-stamp counter (through `quanta`, falling back to
/// the OS monotonic clock where the counter is unreliable) from an anchor on the
/// wall clock, and re-reads the wall clock at least once a second, so it never
/// drifts from it by more than a second's worth of counter error (microseconds),
/// and follows it when it is adjusted. All instances share one anchor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

struct Anchored {
    clock: quanta::Clock,
    /// The counter's raw reading at the anchor.
    base: u64,
    /// Wall time (µs since the epoch) minus µs counted since `base`.
    offset: AtomicU64,
    /// µs since `base` at the last re-read of the wall clock.
    synced_at: AtomicU64,
}

const RESYNC_EVERY_US: u64 = 1_000_000;

fn wall_micros() -> u64 {
    Timestamp::from_system_time(SystemTime::now()).as_micros()
}

impl Anchored {
    fn get() -> &'static Self {
        static ANCHOR: OnceLock<Anchored> = OnceLock::new();
        ANCHOR.get_or_init(|| {
            let clock = quanta::Clock::new();
            let base = clock.raw();
            Self {
                clock,
                base,
                offset: AtomicU64::new(wall_micros()),
                synced_at: AtomicU64::new(0),
            }
        })
    }

    #[inline]
    fn now(&self) -> u64 {
        let counted = self.clock.delta_as_nanos(self.base, self.clock.raw()) / 1_000;
        // Re-read the wall clock every second, and whenever the counter reads
        // behind the last re-read (it is not guaranteed to be monotonic across
        // cores): the wrapping difference is then huge. Every reading is thus
        // within a second of a wall-clock read, or is one.
        if counted.wrapping_sub(self.synced_at.load(Ordering::Relaxed)) >= RESYNC_EVERY_US {
            // Several threads may do this at once; each stores a correct offset.
            self.synced_at.store(counted, Ordering::Relaxed);
            self.offset
                .store(wall_micros().wrapping_sub(counted), Ordering::Relaxed);
        }
        self.offset.load(Ordering::Relaxed).wrapping_add(counted)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(Anchored::get().now())
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
/// use ratekeeper_core::{Clock, ManualClock, Timestamp};
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
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(step))
            });
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
    fn system_clock_follows_the_wall_clock() {
        for _ in 0..3 {
            let wall = wall_micros();
            let ours = SystemClock.now().as_micros();
            // This only guards against a wrong anchor or unit. By design the
            // clock follows wall-clock adjustments within a second, and these
            // machines' wall clocks are stepped by NTP by ~100 ms at times:
            // the bound allows that, and still catches a wrong unit (×1000)
            // or anchor (years).
            assert!(
                ours.abs_diff(wall) < 2_000_000,
                "ours {ours} vs wall {wall}"
            );
            std::thread::sleep(Duration::from_millis(600));
        }
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp::from_micros(u64::MAX - 1);
        assert_eq!(
            t.saturating_add(Duration::from_secs(1)).as_micros(),
            u64::MAX
        );
        assert_eq!(
            Timestamp::EPOCH.saturating_duration_since(t),
            Duration::ZERO
        );
    }

    #[tokio::test]
    async fn manual_clock_sleep_advances_time() {
        let clock = ManualClock::new(Timestamp::from_micros(10));
        clock.sleep(Duration::from_micros(5)).await;
        assert_eq!(clock.clone().now().as_micros(), 15);
    }
}
