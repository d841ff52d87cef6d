//! A policy that can be replaced while requests are being decided.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::key::RequestView;
use super::outcome::Outcome;
use super::policy::HttpPolicy;
use super::routes::Limits;

/// The running policy, replaceable at any time (a reloaded config, a tier
/// rule changed through an admin API). Every adapter holds one: cloning it
/// shares it, so replacing the policy through any clone changes what every
/// worker and every route applies.
///
/// Each request loads the policy once and decides with that one snapshot
/// from start to end, so a request never sees half of an old policy and
/// half of a new one; requests already in flight finish with the policy
/// they started with. Loading is a few atomic operations, without a lock.
///
/// ```
/// use std::sync::Arc;
/// use ratekeeper_http::{HttpPolicy, KeyExtractor, KeySource, RouteTable, SharedPolicy};
/// # use ratekeeper_core::{Limiter, Storage};
/// # fn demo(store: Arc<dyn Storage>) {
/// let policy = SharedPolicy::new(HttpPolicy::new(
///     Limiter::new(store.clone()),
///     RouteTable::new(),
///     KeyExtractor::new(KeySource::Ip),
/// ));
/// // Give `policy.clone()` to the adapter; later, from anywhere:
/// policy.replace(HttpPolicy::new(Limiter::new(store), RouteTable::new(), KeyExtractor::new(KeySource::User)));
/// # }
/// ```
#[derive(Clone)]
pub struct SharedPolicy(Arc<ArcSwap<HttpPolicy>>);

impl fmt::Debug for SharedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedPolicy").field(&*self.load()).finish()
    }
}

impl SharedPolicy {
    /// Starts with `policy`.
    pub fn new(policy: HttpPolicy) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(policy)))
    }

    /// The current policy, for one request: cheap, lock-free, and held only
    /// as long as the request needs it.
    #[inline]
    pub fn load(&self) -> PolicyGuard {
        PolicyGuard(self.0.load())
    }

    /// The current policy, owned (for work that outlives a borrow, such as
    /// a boxed future).
    pub fn current(&self) -> Arc<HttpPolicy> {
        self.0.load_full()
    }

    /// Replaces the policy; requests that start from now on use `policy`.
    /// Returns the one it replaced.
    pub fn replace(&self, policy: HttpPolicy) -> Arc<HttpPolicy> {
        self.0.swap(Arc::new(policy))
    }

    /// Replaces the policy with what `change` makes of the current one,
    /// without losing a replacement made meanwhile by another caller
    /// (`change` may run more than once). An `Err` keeps the current policy.
    pub fn update<E>(
        &self,
        mut change: impl FnMut(&HttpPolicy) -> Result<HttpPolicy, E>,
    ) -> Result<(), E> {
        let mut error = None;
        self.0.rcu(|current| match change(current) {
            Ok(next) => Arc::new(next),
            Err(e) => {
                error = Some(e);
                Arc::clone(current)
            }
        });
        error.map_or(Ok(()), Err)
    }
}

impl From<HttpPolicy> for SharedPolicy {
    fn from(policy: HttpPolicy) -> Self {
        Self::new(policy)
    }
}

impl From<Arc<HttpPolicy>> for SharedPolicy {
    fn from(policy: Arc<HttpPolicy>) -> Self {
        Self(Arc::new(ArcSwap::new(policy)))
    }
}

/// The policy one request decides with (see [`SharedPolicy::load`]).
pub struct PolicyGuard(Guard<Arc<HttpPolicy>>);

impl PolicyGuard {
    /// The same policy, owned: for a request that goes on deciding in a
    /// future after the guard's borrow ends, with the very policy it began
    /// with.
    pub fn into_owned(self) -> Arc<HttpPolicy> {
        Guard::into_inner(self.0)
    }

    /// Decides for `view` at once when the store can (the memory store
    /// decides without waiting): [`Decided::Now`], with no future to box.
    /// Otherwise [`Decided::Later`] hands back this same policy, owned, for
    /// the adapter to decide with ([`HttpPolicy::check`]) in a future that
    /// owns the request.
    #[inline]
    pub fn now_or_later(self, view: &RequestView<'_>) -> Decided {
        match self.check_now(view) {
            Some(outcome) => Decided::Now(outcome),
            None => Decided::Later(self.into_owned()),
        }
    }

    /// Decides for `view` with `limits` in place of the route table's when
    /// given: at once when the store can, otherwise across the wait with
    /// this same policy (the guard is not held across the wait).
    pub async fn decide(self, view: &RequestView<'_>, limits: Option<&Limits>) -> Outcome {
        if let Some(outcome) = self.decide_now(view, limits) {
            return outcome;
        }
        self.into_owned().check_given(view, limits).await
    }
}

/// What [`PolicyGuard::now_or_later`] found.
#[derive(Debug)]
pub enum Decided {
    /// The store decided at once.
    Now(Outcome),
    /// The store must wait: decide with this policy.
    Later(Arc<HttpPolicy>),
}

impl Deref for PolicyGuard {
    type Target = HttpPolicy;

    fn deref(&self) -> &HttpPolicy {
        &self.0
    }
}

impl fmt::Debug for PolicyGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
