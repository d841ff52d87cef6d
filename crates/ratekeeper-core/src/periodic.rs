//! A background job that runs on an interval for as long as its owner lives:
//! what stores use for their expiry sweeps.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// A restartable periodic job on the current tokio runtime.
///
/// The job holds only a weak reference to its owner: it ends by itself when
/// the owner is dropped, or when a run returns `false` (the owner was closed).
/// Starting it again replaces the running job.
#[derive(Debug, Default)]
pub struct Periodic {
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Periodic {
    /// No job running yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `run(owner)` every `interval` (at least 1 ms), first after one
    /// interval, until `owner` is dropped or `run` returns `false`. Fails
    /// outside a tokio runtime.
    pub fn start<T, F, Fut>(&self, owner: &Arc<T>, interval: Duration, run: F) -> Result<()>
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "a background job needs a tokio runtime",
            )
            .with_source(e)
        })?;
        let weak: Weak<T> = Arc::downgrade(owner);
        let period = interval.max(Duration::from_millis(1));
        let task = handle.spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(owner) = weak.upgrade() else { return };
                if !run(owner).await {
                    return;
                }
            }
        });
        if let Some(old) = self.lock().replace(task) {
            old.abort();
        }
        Ok(())
    }

    /// Stops the job, if running.
    pub fn stop(&self) {
        if let Some(task) = self.lock().take() {
            task.abort();
        }
    }

    /// Whether the job is running.
    pub fn is_running(&self) -> bool {
        self.lock().as_ref().is_some_and(|t| !t.is_finished())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<tokio::task::JoinHandle<()>>> {
        // A poisoned lock only means a panic elsewhere while holding a handle.
        self.task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn runs_until_the_owner_says_stop_or_goes_away() {
        let owner = Arc::new(AtomicU32::new(0));
        let job = Periodic::new();
        job.start(&owner, Duration::from_millis(1), |o| async move {
            o.fetch_add(1, Ordering::SeqCst) < 2
        })
        .unwrap();
        for _ in 0..500 {
            if !job.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(!job.is_running());
        assert_eq!(owner.load(Ordering::SeqCst), 3);

        job.start(&owner, Duration::from_millis(1), |_| async { true })
            .unwrap();
        assert!(job.is_running());
        drop(owner);
        for _ in 0..500 {
            if !job.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(!job.is_running(), "the job ends once its owner is dropped");
    }

    #[test]
    fn needs_a_runtime() {
        let owner = Arc::new(());
        assert!(
            Periodic::new()
                .start(&owner, Duration::from_secs(1), |_| async { true })
                .is_err()
        );
    }
}
