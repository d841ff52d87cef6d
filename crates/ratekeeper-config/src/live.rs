//! A configuration being served, changed while requests run.

use std::fmt;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::Loader;
use super::build::{PolicyCode, compile};
use super::error::ConfigErrors;
use super::model::{Config, TierConfig, TierRuleConfig};
use ratekeeper_core::Limiter;
use ratekeeper_core::storage::Storage;
use ratekeeper_http::{RuntimeLists, SharedPolicy};

/// Serves a [`Config`] as a [`SharedPolicy`] and changes it at runtime.
///
/// Every change (a new configuration, an edit in code, a reload of the
/// file) is checked whole first: an invalid one is refused with all its
/// problems and the running policy stays as it was. A valid one replaces the
/// policy in one step: each request decides with the old policy or the new
/// one, never a mix. Changes are applied one at a time.
///
/// Counters survive a change when they still apply: state is kept by rule
/// name and key, so a rule keeping its name and algorithm keeps its counters
/// under its new limit and window (see `docs/configuration.md`).
///
/// Cheap to clone; clones change the same policy. Adapters take it where
/// they take a policy (`RateLimitLayer::new(&live)`).
#[derive(Clone)]
pub struct LivePolicy(Arc<Inner>);

struct Inner {
    shared: SharedPolicy,
    limiter: Limiter,
    code: PolicyCode,
    state: Mutex<State>,
}

struct State {
    config: Config,
    loader: Option<Loader>,
    lists: Option<RuntimeLists>,
}

impl fmt::Debug for LivePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LivePolicy")
            .field("policy", &self.0.shared)
            .finish_non_exhaustive()
    }
}

impl LivePolicy {
    /// Serves `config`, deciding with `storage` (the store its
    /// `[storage]` section names; the facade's `ratekeeper::config::start`
    /// opens it for you), with the application's `code`.
    pub async fn start(
        config: Config,
        storage: Arc<dyn Storage>,
        code: PolicyCode,
    ) -> Result<Self, ConfigErrors> {
        Self::start_inner(config, None, storage, code).await
    }

    /// [`start`](Self::start) with `config` as `loader` read it;
    /// [`reload`](Self::reload) reads it again.
    pub async fn start_from(
        config: Config,
        loader: Loader,
        storage: Arc<dyn Storage>,
        code: PolicyCode,
    ) -> Result<Self, ConfigErrors> {
        Self::start_inner(config, Some(loader), storage, code).await
    }

    async fn start_inner(
        config: Config,
        loader: Option<Loader>,
        storage: Arc<dyn Storage>,
        code: PolicyCode,
    ) -> Result<Self, ConfigErrors> {
        let limiter = code.limiter(storage);
        let compiled = compile(&config, &Default::default(), Some(&code))?;
        let lists = lists_for(&config, None, &limiter).await?;
        let policy = compiled.into_policy(&config, limiter.clone(), &code, lists.clone(), None);
        Ok(Self(Arc::new(Inner {
            shared: SharedPolicy::new(policy),
            limiter,
            code,
            state: Mutex::new(State {
                config,
                loader,
                lists,
            }),
        })))
    }

    /// The policy adapters serve; it follows every change.
    pub fn policy(&self) -> SharedPolicy {
        self.0.shared.clone()
    }

    /// The limiter, for deciding outside HTTP with the same store.
    pub fn limiter(&self) -> &Limiter {
        &self.0.limiter
    }

    /// The runtime allow and deny lists, when `[lists] runtime = true`.
    pub async fn lists(&self) -> Option<RuntimeLists> {
        self.0.state.lock().await.lists.clone()
    }

    /// The configuration being served.
    pub async fn config(&self) -> Config {
        self.0.state.lock().await.config.clone()
    }

    /// Serves `config` from now on, if it is valid; otherwise returns its
    /// problems and keeps serving the current one. The store cannot change
    /// while running.
    pub async fn apply(&self, config: Config) -> Result<(), ConfigErrors> {
        let mut state = self.0.state.lock().await;
        self.swap(&mut state, config).await
    }

    /// Changes the configuration being served with `change`, then
    /// [`apply`](Self::apply)s the result.
    pub async fn update(&self, change: impl FnOnce(&mut Config)) -> Result<(), ConfigErrors> {
        let mut state = self.0.state.lock().await;
        let mut config = state.config.clone();
        config.mark_changed();
        change(&mut config);
        self.swap(&mut state, config).await
    }

    /// Adds `rule` to `tier` (creating the tier), or replaces the tier's
    /// entry with the same path and methods.
    pub async fn set_tier_rule(
        &self,
        tier: &str,
        rule: TierRuleConfig,
    ) -> Result<(), ConfigErrors> {
        self.update(|c| {
            let entries = &mut c
                .tiers
                .entry(tier.to_owned())
                .or_insert_with(TierConfig::default)
                .rules;
            match entries
                .iter_mut()
                .find(|e| e.path == rule.path && same_methods(&e.methods, &rule.methods))
            {
                Some(existing) => *existing = rule,
                None => entries.push(rule),
            }
        })
        .await
    }

    /// Removes `tier`'s entry for `path` and `methods`; whether there was
    /// one.
    pub async fn remove_tier_rule(
        &self,
        tier: &str,
        path: &str,
        methods: &[&str],
    ) -> Result<bool, ConfigErrors> {
        let methods: Vec<String> = methods.iter().map(|m| (*m).to_owned()).collect();
        let mut removed = false;
        self.update(|c| {
            if let Some(t) = c.tiers.get_mut(tier) {
                let before = t.rules.len();
                t.rules
                    .retain(|e| !(e.path == path && same_methods(&e.methods, &methods)));
                removed = t.rules.len() != before;
            }
        })
        .await?;
        Ok(removed)
    }

    /// Rereads the file the configuration came from (with its environment
    /// overrides) and serves it, if it is valid. Logs the outcome.
    pub async fn reload(&self) -> Result<(), ConfigErrors> {
        let mut state = self.0.state.lock().await;
        let Some(loader) = state.loader.clone() else {
            return Err(ConfigErrors::single(
                "configuration",
                "",
                "this policy was not loaded from a file: there is nothing to reload",
            ));
        };
        let outcome = match loader.load() {
            Ok(config) => self.swap(&mut state, config).await,
            Err(e) => Err(e),
        };
        let file = loader
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match &outcome {
            Ok(()) => tracing::info!(
                target: "ratekeeper::config",
                file = %file,
                "rate-limit configuration reloaded"
            ),
            Err(e) => tracing::warn!(
                target: "ratekeeper::config",
                file = %file,
                "rate-limit configuration not reloaded, the previous one keeps serving: {e}"
            ),
        }
        outcome
    }

    /// Reloads the file whenever the process receives `SIGHUP`, until the
    /// runtime stops. Problems are logged; the previous policy keeps
    /// serving. Outside a tokio runtime, an error says so.
    #[cfg(unix)]
    pub fn reload_on_hangup(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            std::io::Error::other(format!("reloading on SIGHUP needs a tokio runtime: {e}"))
        })?;
        let mut hangups = signal(SignalKind::hangup())?;
        let live = self.clone();
        Ok(runtime.spawn(async move {
            while hangups.recv().await.is_some() {
                // The outcome is logged by reload.
                let _ = live.reload().await;
            }
        }))
    }

    async fn swap(&self, state: &mut State, config: Config) -> Result<(), ConfigErrors> {
        if config.storage != state.config.storage {
            return Err(ConfigErrors::single(
                config.source_of("storage"),
                "storage",
                "the store cannot change while running (restart the process to use another store)",
            ));
        }
        let compiled = compile(&config, &Default::default(), Some(&self.0.code))?;
        let lists = lists_for(&config, state.lists.as_ref(), &self.0.limiter).await?;
        let previous = self.0.shared.current();
        let policy = compiled.into_policy(
            &config,
            self.0.limiter.clone(),
            &self.0.code,
            lists.clone(),
            Some(&previous),
        );
        self.0.shared.replace(policy);
        state.config = config;
        state.lists = lists;
        Ok(())
    }
}

impl From<&LivePolicy> for SharedPolicy {
    fn from(live: &LivePolicy) -> Self {
        live.policy()
    }
}

impl From<LivePolicy> for SharedPolicy {
    fn from(live: LivePolicy) -> Self {
        live.policy()
    }
}

fn same_methods(a: &[String], b: &[String]) -> bool {
    let norm = |m: &[String]| {
        let mut v: Vec<String> = m.iter().map(|s| s.trim().to_ascii_uppercase()).collect();
        v.sort();
        v
    };
    norm(a) == norm(b)
}

/// The runtime lists `config` asks for: the ones already loaded, or loaded
/// now.
async fn lists_for(
    config: &Config,
    current: Option<&RuntimeLists>,
    limiter: &Limiter,
) -> Result<Option<RuntimeLists>, ConfigErrors> {
    if !config.lists.runtime {
        return Ok(None);
    }
    if let Some(lists) = current {
        return Ok(Some(lists.clone()));
    }
    RuntimeLists::load(limiter.storage().clone())
        .await
        .map(Some)
        .map_err(|e| {
            ConfigErrors::single(
                config.source_of("lists.runtime"),
                "lists.runtime",
                format!("the runtime lists cannot be read from the store: {e}"),
            )
        })
}
