//! A manual clock for code that waits: sleepers wake when the test moves
//! time past their deadline, not before.

use std::time::Duration;

use ratekeeper_core::clock::SleepFuture;
use ratekeeper_core::{Clock, ManualClock, Timestamp};
use tokio::sync::watch;

/// A [`ManualClock`] whose [`sleep`](Clock::sleep) waits until the test
/// has moved time to its end (a plain `ManualClock` moves time itself and
/// returns at once, which suits one waiter, not several waiting together).
/// Time moves only by [`advance`](Self::advance); what slept until then
/// wakes (every sleeper is told, and those whose end has not come sleep
/// on), so the test sees exactly who is let in at each instant. A sleep
/// ends at the time it was asked at plus its length: a test moves time
/// once its sleepers are asleep ([`sleepers`](Self::sleepers)).
///
/// ```
/// use ratekeeper_core::{Clock, Timestamp};
/// use ratekeeper_testkit::WaitingClock;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = WaitingClock::new(Timestamp::from_micros(0));
/// let sleeper = tokio::spawn({
///     let clock = clock.clone();
///     async move { clock.sleep(Duration::from_millis(100)).await }
/// });
/// while clock.sleepers() == 0 {
///     tokio::task::yield_now().await;
/// }
/// clock.advance(Duration::from_millis(100));
/// sleeper.await.unwrap();
/// assert_eq!(clock.now(), Timestamp::from_micros(100_000));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct WaitingClock {
    manual: ManualClock,
    moved: watch::Sender<()>,
}

impl WaitingClock {
    /// A clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        Self::over(ManualClock::new(start))
    }

    /// A clock reading and moving `manual` (the clock a store was made
    /// with, so that its keys expire as this clock moves).
    pub fn over(manual: ManualClock) -> Self {
        Self {
            manual,
            moved: watch::Sender::new(()),
        }
    }

    /// How many sleeps are waiting for time to move (a test waits for its
    /// waiters to be asleep before it moves time).
    pub fn sleepers(&self) -> usize {
        self.moved.receiver_count()
    }

    /// Moves time forward by `duration`, waking what slept until then.
    pub fn advance(&self, duration: Duration) {
        self.manual.advance(duration);
        self.moved.send_replace(());
    }
}

impl Clock for WaitingClock {
    fn now(&self) -> Timestamp {
        self.manual.now()
    }

    fn sleep(&self, duration: Duration) -> SleepFuture<'_> {
        let until = self.now().saturating_add(duration);
        let mut moved = self.moved.subscribe();
        Box::pin(async move {
            while self.now() < until {
                if moved.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}
