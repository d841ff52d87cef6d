//! Permits: places in flight taken by [`Limiter::acquire`], given back when
//! the work is done.

use crate::decision::Decision;
use crate::error::Result;
use crate::limiter::Limiter;
use crate::reservation::Reservation;
use crate::rule::Rule;
use crate::storage::Adjustment;

/// Places held on [`Concurrency`](crate::Algorithm::Concurrency) rules, taken by
/// [`Limiter::acquire`](crate::Limiter::acquire) or
/// [`acquire_each`](crate::Limiter::acquire_each): released by
/// [`release`](Self::release), or when dropped (at once, anywhere, when
/// the store answers at once: the memory store without layers; otherwise
/// by a task of the tokio runtime it is dropped on, and outside a runtime
/// its leases stay until their rule's window has passed, as those of a
/// process that crashed do). The
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
        let leases = self.reservation.leases();
        if leases.is_empty() {
            return Ok(());
        }
        // A store that answers at once (the memory store) gives them back here.
        if let Some(done) = self.reservation.limiter().adjust_now(&leases) {
            return done.map(drop);
        }
        let release = releasing(self.reservation.limiter(), &leases);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => match at_once(release) {
                Ok(done) => done,
                Err(rest) => runtime.spawn(rest).await.unwrap_or_else(|e| {
                    Err(crate::Error::new(
                        crate::ErrorKind::Other,
                        format!("the release task failed: {e}"),
                    ))
                }),
            },
            Err(_) => release.await,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.released {
            release_later(self.reservation.limiter(), &self.reservation.leases());
        }
    }
}

/// What gives back `leases` (refunds of places in flight) on `limiter`,
/// owning what it needs to run on a task.
fn releasing(
    limiter: &Limiter,
    leases: &[(&Rule, &str, Adjustment)],
) -> impl Future<Output = Result<()>> + Send + 'static {
    let limiter = limiter.clone();
    let leases = owned(leases);
    async move { limiter.adjust(&borrowed(&leases)).await.map(drop) }
}

/// Leases (rule, bounded key, release), owned: to outlive what they were
/// borrowed from.
type Owned = Vec<(Rule, String, Adjustment)>;

fn owned(leases: &[(&Rule, &str, Adjustment)]) -> Owned {
    (leases.iter())
        .map(|(rule, key, change)| ((*rule).clone(), (*key).to_owned(), *change))
        .collect()
}

/// Owned leases borrowed again, as [`Limiter::adjust`] takes them.
fn borrowed(leases: &[(Rule, String, Adjustment)]) -> Vec<(&Rule, &str, Adjustment)> {
    (leases.iter())
        .map(|(rule, key, change)| (rule, key.as_str(), *change))
        .collect()
}

/// Places in flight taken with a rate whose request then waits in line
/// for its turn: released if the request is dropped before it
/// ([`keep`](Self::keep) once the turn has come).
pub(crate) struct HeldInLine {
    limiter: Limiter,
    leases: Owned,
}

impl HeldInLine {
    pub(crate) fn new(limiter: &Limiter, leases: &[(&Rule, &str, Adjustment)]) -> Self {
        Self {
            limiter: limiter.clone(),
            leases: owned(leases),
        }
    }

    /// The turn has come: the places stay with the request.
    pub(crate) fn keep(mut self) {
        self.leases.clear();
    }
}

impl Drop for HeldInLine {
    fn drop(&mut self) {
        release_later(&self.limiter, &borrowed(&self.leases));
    }
}

/// Gives `leases` back: at once when the store can, else on a task of the
/// tokio runtime this is called on (what is dropped cannot wait for it);
/// outside a runtime, or when it fails, the places stay taken until their
/// leases expire, with a warning.
fn release_later(limiter: &Limiter, leases: &[(&Rule, &str, Adjustment)]) {
    if leases.is_empty() {
        return;
    }
    let warn = |e: crate::Error| {
        tracing::warn!(
            target: "ratekeeper",
            error = %e,
            "places in flight could not be released; they are held until they expire"
        );
    };
    if let Some(done) = limiter.adjust_now(leases) {
        return done.map(drop).unwrap_or_else(warn);
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => match at_once(releasing(limiter, leases)) {
            Ok(done) => done.unwrap_or_else(warn),
            Err(rest) => drop(runtime.spawn(async move { rest.await.unwrap_or_else(warn) })),
        },
        Err(_) => tracing::warn!(
            target: "ratekeeper",
            "places in flight were dropped outside a tokio runtime; they are held until they expire"
        ),
    }
}

/// A boxed release future, to finish on a task.
type Rest = std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// `release` polled once, in place, on the runtime it is called on: a
/// store that answers at once (the memory store) gives the places back
/// without a task. Otherwise the rest, to run on a task (which polls it
/// again with its own waker).
fn at_once(
    release: impl Future<Output = Result<()>> + Send + 'static,
) -> std::result::Result<Result<()>, Rest> {
    let mut release: Rest = Box::pin(release);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match release.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(done) => Ok(done),
        std::task::Poll::Pending => Err(release),
    }
}

/// The refunds that give back the places in flight among `taken` (each
/// rule, its bounded key and its units), taken at `at`.
pub(crate) fn leases<'a>(
    taken: impl Iterator<Item = (&'a Rule, &'a str, u64)>,
    at: crate::Timestamp,
) -> crate::limiter::Few<(&'a Rule, &'a str, Adjustment)> {
    taken
        .filter(|(rule, _, units)| *units > 0 && holds_places(rule))
        .map(|(rule, key, units)| {
            let release = Adjustment::Refund {
                units,
                taken_at: Some(at),
            };
            (rule, key, release)
        })
        .collect()
}

/// Whether `rule`'s units are places in flight, given back on release.
pub(crate) fn holds_places(rule: &Rule) -> bool {
    rule.algorithm().limits_in_flight()
}
