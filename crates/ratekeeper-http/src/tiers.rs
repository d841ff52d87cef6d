//! Subscription tiers: the caller's tier picks per-path limits (free: 1
//! request an hour on a path, pro: 10), as FastAPI-boilerplate's tiered
//! limiter does.
//!
//! A request whose identity has a tier, for a path that tier covers, gets
//! the tier's limits (keyed by user unless they say otherwise) in place of
//! the route table's. Everything else falls back to the route table: clients
//! without an identity get its per-IP default; an identity without a tier,
//! with a tier no table knows, or on a path its tier does not cover gets the
//! same, and that fallback is logged once per tier and path, not once per
//! request.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use smol_str::SmolStr;

use super::key::{Identity, KeySource};
use super::routes::{Limits, RouteError, RouteTable};
use ratekeeper_core::Result;
use ratekeeper_core::clock::Timestamp;
use ratekeeper_core::kit::LogThrottle;

/// Finds the tier of an identity the application's authentication attached
/// without one, typically with a database lookup. Results are cached for a
/// short time ([`Tiers::cache`]).
///
/// ```
/// use ratekeeper_http::{Identity, TierResolver};
/// use ratekeeper_core::Result;
///
/// struct Accounts; // say, a database pool
///
/// #[async_trait::async_trait]
/// impl TierResolver for Accounts {
///     async fn tier(&self, identity: &Identity) -> Result<Option<String>> {
///         // SELECT tier FROM users WHERE id = $1
///         Ok(Some(if identity.user().starts_with("paying-") { "pro" } else { "free" }.into()))
///     }
/// }
/// ```
#[async_trait]
pub trait TierResolver: Send + Sync {
    /// The tier of `identity`; `None` when it has none. An error makes the
    /// request fall back to the route table's limits (and is logged); it is
    /// not cached.
    async fn tier(&self, identity: &Identity) -> Result<Option<String>>;
}

/// A [`TierResolver`] from an async function of the identity.
///
/// ```
/// use ratekeeper_http::{Tiers, tier_resolver_fn};
///
/// let tiers = Tiers::new().resolver(tier_resolver_fn(|identity| async move {
///     Ok(Some(if identity.user() == "alice" { "pro" } else { "free" }.into()))
/// }));
/// ```
pub fn tier_resolver_fn<F, Fut>(f: F) -> Arc<dyn TierResolver>
where
    F: Fn(Identity) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<String>>> + Send + 'static,
{
    Arc::new(FnResolver(f))
}

struct FnResolver<F>(F);

#[async_trait]
impl<F, Fut> TierResolver for FnResolver<F>
where
    F: Fn(Identity) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<String>>> + Send + 'static,
{
    async fn tier(&self, identity: &Identity) -> Result<Option<String>> {
        (self.0)(identity.clone()).await
    }
}

/// The default time a resolved tier is kept.
pub const DEFAULT_TIER_CACHE_TTL: Duration = Duration::from_secs(30);
/// The default number of identities whose tier is kept.
pub const DEFAULT_TIER_CACHE_CAPACITY: usize = 10_000;
/// How many distinct tier and path fallbacks are logged at most (a client
/// sending endless distinct paths cannot grow the set further).
const MAX_LOGGED_FALLBACKS: usize = 4_096;
/// Resolver failures are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Per-tier limits by route, the resolver that finds an identity's tier, and
/// the cache of what it found. Give it to a policy with
/// [`HttpPolicy::tiers`](super::HttpPolicy::tiers).
///
/// ```
/// use ratekeeper_http::{Limits, Tiers};
/// use ratekeeper_core::{Algorithm, Rule};
///
/// let free = Rule::new("tasks", Algorithm::FixedWindow, "1/hour".parse()?)?;
/// let pro = Rule::new("tasks", Algorithm::FixedWindow, "10/hour".parse()?)?;
/// let tiers = Tiers::new()
///     .rule("free", "/api/v1/tasks/task", &["POST"], Limits::new(vec![free]))?
///     .rule("pro", "/api/v1/tasks/task", &["POST"], Limits::new(vec![pro]))?;
/// assert_eq!(tiers.names().count(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Tiers {
    tables: HashMap<SmolStr, RouteTable>,
    resolver: Option<Arc<dyn TierResolver>>,
    cache: TierCache,
    logged: Mutex<HashSet<(SmolStr, SmolStr)>>,
    error_log: LogThrottle,
}

impl fmt::Debug for Tiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tiers")
            .field("tiers", &self.tables)
            .field("resolver", &self.resolver.is_some())
            .field("cache_ttl", &self.cache.ttl)
            .field("cache_capacity", &self.cache.capacity)
            .finish_non_exhaustive()
    }
}

impl Default for Tiers {
    fn default() -> Self {
        Self {
            tables: HashMap::new(),
            resolver: None,
            cache: TierCache::new(DEFAULT_TIER_CACHE_TTL, DEFAULT_TIER_CACHE_CAPACITY),
            logged: Mutex::new(HashSet::new()),
            error_log: LogThrottle::new(ERROR_LOG_INTERVAL),
        }
    }
}

/// What is known of a request's tier before any waiting.
pub(crate) enum Known {
    /// The tier (or that there is none).
    Tier(Option<SmolStr>),
    /// The resolver must be asked.
    Resolve,
}

impl Tiers {
    /// No tiers, no resolver; a 30 s cache of up to 10 000 identities.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits for callers of `tier` on requests whose path matches `pattern`
    /// (axum-style, as in [`RouteTable`]) and whose method is in `methods`
    /// (empty: any). Limits without their own key source are keyed by user.
    pub fn rule(
        mut self,
        tier: &str,
        pattern: &str,
        methods: &[&str],
        limits: Limits,
    ) -> Result<Self, RouteError> {
        self.add_rule(tier, pattern, methods, limits)?;
        Ok(self)
    }

    /// [`rule`](Self::rule) in place; on error nothing changes.
    pub fn add_rule(
        &mut self,
        tier: &str,
        pattern: &str,
        methods: &[&str],
        limits: Limits,
    ) -> Result<(), RouteError> {
        let limits = if limits.key.is_none() {
            limits.key(KeySource::User)
        } else {
            limits
        };
        let table = self.tables.get(tier).cloned().unwrap_or_default();
        self.tables
            .insert(tier.into(), table.route(pattern, methods, limits)?);
        Ok(())
    }

    /// Declares `tier` even if it has no rules yet, so that its callers are
    /// not reported as having an unknown tier.
    #[must_use]
    pub fn tier(mut self, tier: &str) -> Self {
        self.tables.entry(tier.into()).or_default();
        self
    }

    /// Finds the tier of identities that come without one.
    #[must_use]
    pub fn resolver(mut self, resolver: Arc<dyn TierResolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Keeps what the resolver found for `ttl` (zero: ask every time), for at
    /// most `capacity` identities.
    #[must_use]
    pub fn cache(mut self, ttl: Duration, capacity: usize) -> Self {
        self.cache = TierCache::new(ttl, capacity);
        self
    }

    /// The names of the known tiers.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(SmolStr::as_str)
    }

    /// Every limits of every tier.
    pub fn all_limits(&self) -> impl Iterator<Item = &Limits> {
        self.tables.values().flat_map(RouteTable::all_limits)
    }

    /// How many identities' tiers are cached now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The tier of `identity` if it is known without waiting: given by the
    /// application, cached, or there is no resolver.
    pub(crate) fn known(&self, identity: &Identity, now: Timestamp) -> Known {
        if let Some(tier) = &identity.tier {
            return Known::Tier(Some(tier.clone()));
        }
        if self.resolver.is_none() {
            return Known::Tier(None);
        }
        match self.cache.get(&identity.user, now) {
            Some(tier) => Known::Tier(tier),
            None => Known::Resolve,
        }
    }

    /// Asks the resolver, and caches its answer. A failure is logged (at
    /// most every 10 s) and means no tier.
    pub(crate) async fn resolve(&self, identity: &Identity, now: Timestamp) -> Option<SmolStr> {
        let resolver = self.resolver.as_ref()?;
        match resolver.tier(identity).await {
            Ok(tier) => {
                let tier = tier.map(SmolStr::from);
                self.cache.insert(identity.user.clone(), tier.clone(), now);
                tier
            }
            Err(error) => {
                if self.error_log.allow(now.as_micros()) {
                    tracing::warn!(
                        target: "ratekeeper::tiers",
                        %error,
                        "the tier resolver failed: the default limits apply"
                    );
                }
                None
            }
        }
    }

    /// The limits `tier` sets for `method path`; `None` (logged once per
    /// tier and path) when there is no tier, the tier is unknown, or it does
    /// not cover the path. `route` is the matched pattern when the adapter
    /// filled it (it does when the policy reads the route), so that the log
    /// names a route rather than each of its paths; without it each path
    /// is logged on its own, up to the bounded record's size.
    pub(crate) fn limits(
        &self,
        tier: Option<&SmolStr>,
        method: &str,
        path: &str,
        route: Option<&str>,
    ) -> Option<&Limits> {
        let (tier_name, reason) = match tier {
            None => ("", "the caller has no tier"),
            Some(tier) => match self.tables.get(tier) {
                None => (tier.as_str(), "unknown tier"),
                Some(table) => match table.route_limits(method, path) {
                    Some(limits) => return Some(limits),
                    None => (tier.as_str(), "the tier has no rule for this path"),
                },
            },
        };
        self.log_fallback(tier_name, route.unwrap_or(path), reason);
        None
    }

    fn log_fallback(&self, tier: &str, path: &str, reason: &'static str) {
        let Some(last) = self.remember_fallback(tier, path) else {
            return;
        };
        tracing::warn!(
            target: "ratekeeper::tiers",
            tier,
            path,
            reason,
            "tier fallback: the default limits apply (logged once per tier and path)"
        );
        if last {
            tracing::warn!(
                target: "ratekeeper::tiers",
                "{MAX_LOGGED_FALLBACKS} tier fallbacks logged; further ones are not"
            );
        }
    }

    /// Records a fallback of `tier` on `path` to be logged: `None` if it
    /// was logged before or the record is full, else whether this one
    /// filled the record.
    fn remember_fallback(&self, tier: &str, path: &str) -> Option<bool> {
        let mut logged = self.logged.lock();
        let entry = (SmolStr::new(tier), SmolStr::new(path));
        if logged.len() >= MAX_LOGGED_FALLBACKS || logged.contains(&entry) {
            return None;
        }
        logged.insert(entry);
        Some(logged.len() == MAX_LOGGED_FALLBACKS)
    }
}

/// Resolved tiers by user id, kept for a while, bounded in size.
struct TierCache {
    ttl: Duration,
    capacity: usize,
    entries: RwLock<HashMap<SmolStr, (Option<SmolStr>, u64)>>,
}

impl TierCache {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: RwLock::new(HashMap::new()),
        }
    }

    fn len(&self) -> usize {
        self.entries.read().len()
    }

    fn get(&self, user: &str, now: Timestamp) -> Option<Option<SmolStr>> {
        let entries = self.entries.read();
        let (tier, expires) = entries.get(user)?;
        (*expires > now.as_micros()).then(|| tier.clone())
    }

    fn insert(&self, user: SmolStr, tier: Option<SmolStr>, now: Timestamp) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let now_us = now.as_micros();
        let expires = now.saturating_add(self.ttl).as_micros();
        let mut entries = self.entries.write();
        if entries.len() >= self.capacity && !entries.contains_key(&user) {
            entries.retain(|_, (_, e)| *e > now_us);
            // Still full of live entries: drop an eighth of them, whichever
            // come first; they are looked up again when next needed.
            if entries.len() >= self.capacity {
                let drop = (self.capacity / 8).max(1);
                let victims: Vec<SmolStr> = entries.keys().take(drop).cloned().collect();
                ratekeeper_core::observe::evicted("tier_cache", victims.len() as u64);
                for victim in victims {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(user, (tier, expires));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use ratekeeper_core::{Algorithm, Rule};

    fn limits(name: &str) -> Limits {
        Limits::new(vec![
            Rule::new(name, Algorithm::Gcra, "1/second".parse().unwrap()).unwrap(),
        ])
    }

    fn at(s: u64) -> Timestamp {
        Timestamp::from_micros(s * 1_000_000)
    }

    #[test]
    fn tier_rules_match_paths_and_methods_and_key_by_user() {
        let tiers = Tiers::new()
            .rule("pro", "/tasks/{id}", &["POST"], limits("pro-tasks"))
            .unwrap();
        let pro = SmolStr::new("pro");
        let found = tiers.limits(Some(&pro), "POST", "/tasks/7", None).unwrap();
        assert_eq!(found.rules[0].name(), "pro-tasks");
        assert!(matches!(found.key, Some(KeySource::User)));
        assert!(tiers.limits(Some(&pro), "GET", "/tasks/7", None).is_none());
        assert!(
            tiers
                .limits(Some(&"gold".into()), "POST", "/tasks/7", None)
                .is_none()
        );
        assert!(tiers.limits(None, "POST", "/tasks/7", None).is_none());
    }

    #[test]
    fn fallbacks_are_remembered_once_per_tier_and_path() {
        let tiers = Tiers::new().tier("free");
        for _ in 0..3 {
            tiers.limits(Some(&"free".into()), "GET", "/a", None);
            tiers.limits(Some(&"free".into()), "GET", "/b/1", Some("/b/{id}"));
            tiers.limits(Some(&"free".into()), "GET", "/b/2", Some("/b/{id}"));
        }
        assert_eq!(tiers.logged.lock().len(), 2);
        for i in 2..MAX_LOGGED_FALLBACKS - 1 {
            tiers.limits(None, "GET", &format!("/flood/{i}"), None);
        }
        assert_eq!(tiers.remember_fallback("free", "/a"), None, "logged before");
        // The fallback that fills the record says so (one last line), and
        // none is recorded after it.
        assert_eq!(tiers.remember_fallback("", "/one-more"), Some(true));
        assert_eq!(tiers.remember_fallback("", "/and-another"), None);
        assert_eq!(tiers.logged.lock().len(), MAX_LOGGED_FALLBACKS);
        let fresh = Tiers::new();
        assert_eq!(fresh.remember_fallback("free", "/a"), Some(false));
    }

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let cache = TierCache::new(Duration::from_secs(10), 16);
        cache.insert("u".into(), Some("pro".into()), at(0));
        assert_eq!(cache.get("u", at(9)), Some(Some("pro".into())));
        assert_eq!(cache.get("u", at(10)), None);
        // Expired entries stay until room is needed.
        cache.insert("v".into(), None, at(20));
        assert_eq!(cache.len(), 2);
        for i in 0..14 {
            cache.insert(format!("user{i}").into(), None, at(20));
        }
        assert_eq!(cache.len(), 16);
        // Full: the expired entry goes first, then an eighth of the live ones.
        cache.insert("w".into(), None, at(20));
        assert_eq!(cache.len(), 16);
        assert_eq!(cache.get("u", at(0)), None, "the expired entry went");
        cache.insert("x".into(), None, at(20));
        assert_eq!(cache.len(), 16 - 2 + 1);
        // Updating a cached identity in a full cache drops nothing.
        for i in 0..1_000 {
            cache.insert(format!("flood{i}").into(), None, at(20));
        }
        assert!(cache.len() <= 16);
        let cache = TierCache::new(Duration::from_secs(10), 2);
        cache.insert("a".into(), None, at(0));
        cache.insert("b".into(), Some("pro".into()), at(0));
        cache.insert("a".into(), Some("free".into()), at(1));
        assert_eq!(cache.get("a", at(1)), Some(Some("free".into())));
        assert_eq!(cache.get("b", at(1)), Some(Some("pro".into())));
        // Expired entries make room first; an entry expires at its instant.
        let cache = TierCache::new(Duration::from_secs(1), 2);
        cache.insert("a".into(), None, at(0));
        cache.insert("b".into(), None, at(0));
        cache.insert("c".into(), None, at(1));
        assert_eq!(cache.len(), 1);
        // Nothing is kept with a zero lifetime or capacity.
        for (ttl, capacity) in [(0, 16), (10, 0)] {
            let cache = TierCache::new(Duration::from_secs(ttl), capacity);
            cache.insert("a".into(), Some("pro".into()), at(0));
            assert_eq!(cache.len(), 0);
        }
    }

    #[tokio::test]
    async fn resolved_tiers_are_cached_errors_are_not() {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let tiers = Tiers::new().resolver(tier_resolver_fn(move |identity: Identity| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if identity.user == "broken" {
                    return Err(ratekeeper_core::Error::new(
                        ratekeeper_core::ErrorKind::Unavailable,
                        "db down",
                    ));
                }
                Ok((n < 100).then(|| "pro".to_owned()))
            }
        }));
        let alice = Identity {
            user: "alice".into(),
            tier: None,
        };
        assert!(matches!(tiers.known(&alice, at(0)), Known::Resolve));
        assert_eq!(tiers.resolve(&alice, at(0)).await, Some("pro".into()));
        assert!(matches!(tiers.known(&alice, at(1)), Known::Tier(Some(_))));
        let broken = Identity {
            user: "broken".into(),
            tier: None,
        };
        assert_eq!(tiers.resolve(&broken, at(0)).await, None);
        assert!(matches!(tiers.known(&broken, at(0)), Known::Resolve));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A tier the application attached wins, without the resolver.
        let given = Identity {
            user: "bob".into(),
            tier: Some("free".into()),
        };
        assert!(matches!(tiers.known(&given, at(0)), Known::Tier(Some(t)) if t == "free"));
        assert_eq!(
            tiers.cached(),
            1,
            "alice; not the failure, not the given tier"
        );
        let carol = Identity {
            user: "carol".into(),
            tier: None,
        };
        tiers.resolve(&carol, at(0)).await;
        assert_eq!(tiers.cached(), 2);
    }
}
