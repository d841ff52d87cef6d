//! Permits: places in flight taken by [`Limiter::acquire`], given back when
//! the work is done.

use crate::decision::Decision;
use crate::error::Result;
use crate::reservation::Reservation;
use crate::rule::Rule;

/// Places held on [`Concurrency`](crate::Algorithm::Concurrency) rules, taken by
/// [`Limiter::acquire`](crate::Limiter::acquire) or
/// [`acquire_each`](crate::Limiter::acquire_each): released by
/// [`release`](Self::release), or when dropped (by a task on the tokio
/// runtime it is dropped on; outside a runtime its leases stay until their
/// rule's window has passed, as those of a process that crashed do). The
/// units taken on rate rules in the same step stay taken: they were spent.
///
/// A denied permit holds nothing.
#[derive(Debug)]
#[must_use = "a permit releases its places when dropped: hold it while the work runs"]
pub struct Permit {
    reservation: Reservation,
    released: bool,
}

impl Permit {
    pub(crate) fn new(reservation: Reservation) -> Self {
        Self {
            reservation,
            released: false,
        }
    }

    /// Whether the places were taken: every rule charged allowed.
    pub fn is_allowed(&self) -> bool {
        self.reservation.is_allowed()
    }

    /// The most restrictive of [`decisions`](Self::decisions).
    pub fn decision(&self) -> &Decision {
        self.reservation.decision()
    }

    /// One decision per rule, in order.
    pub fn decisions(&self) -> &[Decision] {
        self.reservation.decisions()
    }

    /// Gives the places back now and waits for the store. On an error (the
    /// store is down) the leases stay until their rule's window has passed.
    /// The release is made on a task of its own when there is a tokio
    /// runtime, so it is made even if this future is dropped before it
    /// ends (a request cancelled, a timeout).
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        let Some(release) = self.releasing() else {
            return Ok(());
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn(release).await.unwrap_or_else(|e| {
                Err(crate::Error::new(
                    crate::ErrorKind::Other,
                    format!("the release task failed: {e}"),
                ))
            }),
            Err(_) => release.await,
        }
    }

    /// What gives the places back: `None` when it holds none (denied, or
    /// no concurrency rule).
    fn releasing(&self) -> Option<impl Future<Output = Result<()>> + Send + 'static> {
        let changes = self.reservation.leases();
        if changes.is_empty() {
            return None;
        }
        let limiter = self.reservation.limiter().clone();
        Some(async move {
            let borrowed: Vec<(&Rule, &str, _)> = changes
                .iter()
                .map(|(rule, key, change)| (rule, key.as_str(), *change))
                .collect();
            limiter.adjust(&borrowed).await.map(drop)
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Some(release) = self.releasing() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                if let Err(e) = release.await {
                    tracing::warn!(
                        target: "ratekeeper",
                        error = %e,
                        "a permit could not be released; its places are held until they expire"
                    );
                }
            })),
            Err(_) => tracing::warn!(
                target: "ratekeeper",
                "a permit was dropped outside a tokio runtime; its places are held until they expire"
            ),
        }
    }
}

/// Whether `rule`'s units are places in flight, given back on release.
pub(crate) fn holds_places(rule: &Rule) -> bool {
    rule.algorithm().limits_in_flight()
}
