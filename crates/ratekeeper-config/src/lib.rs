//! Declarative configuration for ratekeeper: one file (TOML, YAML or
//! JSON, by extension) plus environment overrides describes the store, the
//! defaults, named rules, route rules, tiers, exemptions, client lists and
//! trusted proxies. It is checked whole before anything runs: every problem
//! is reported at once, each with the file (or environment variable), the
//! field path and what was expected.
//!
//! A [`LivePolicy`] serves a configuration and changes it while requests
//! run: [`LivePolicy::reload`] rereads the file (on `SIGHUP` with
//! [`LivePolicy::reload_on_hangup`]), [`LivePolicy::apply`] /
//! [`LivePolicy::update`] / [`LivePolicy::set_tier_rule`] change it in code.
//! A new configuration is checked first; an invalid one is refused with its
//! problems and the old one keeps serving. Requests see the old policy or the
//! new one, never a mix.
//!
//! See `docs/configuration.md` for every option and
//! `examples/config/reference.toml` for a file that shows them all.
//!
//! ```
//! use ratekeeper_config::{Config, Format};
//!
//! let config = Config::parse(
//!     r#"
//!     [rules.api]
//!     limit = 100
//!     window = "1m"
//!
//!     [[routes]]
//!     path = "/api/{*rest}"
//!     rules = ["api"]
//!     "#,
//!     Format::Toml,
//! )?;
//! assert_eq!(config.rules["api"].limit, 100);
//!
//! let broken = Config::parse("[rules.api]\nlimit = 0\nwindow = \"soon\"\n", Format::Toml)
//!     .unwrap_err();
//! assert_eq!(broken.errors().len(), 2);
//! # Ok::<(), ratekeeper_config::ConfigErrors>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod build;
pub mod domains;
mod error;
mod live;
mod model;
mod parse;
mod reader;
mod server;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Env, Format as _, Json, Toml, Yaml};
use ratekeeper_core::storage::Opener;

pub use build::{LocalStoreFn, PolicyCode};
pub use error::{ConfigError, ConfigErrors};
pub use live::LivePolicy;
pub use model::{
    Config, DefaultsConfig, ExemptConfig, InvalidKeySpec, KeySpec, ListsConfig, ProxiesConfig,
    RouteConfig, RuleConfig, StorageConfig, TierCacheConfig, TierConfig, TierLimit, TierRuleConfig,
};
pub use server::{ServerConfig, StoreErrorMode, lease_secret_problem};

use model::Origin;
use reader::Reader;

/// The prefix of environment overrides: `RATELIMIT__STORAGE__URL` sets
/// `storage.url`, `RATELIMIT__RULES__API__LIMIT` sets `rules.api.limit`.
pub const ENV_PREFIX: &str = "RATELIMIT__";

/// A configuration file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.toml`.
    Toml,
    /// `.yaml` or `.yml`.
    Yaml,
    /// `.json`.
    Json,
}

impl Format {
    /// The format a file's extension names.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "toml" => Some(Self::Toml),
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Toml => "TOML",
            Self::Yaml => "YAML",
            Self::Json => "JSON",
        }
    }
}

/// Where a configuration comes from: a file or a string, and environment
/// overrides (on by default for files, with [`ENV_PREFIX`]).
#[derive(Debug, Clone)]
pub struct Loader {
    input: Input,
    env_prefix: Option<String>,
    stores: &'static [Opener],
}

#[derive(Debug, Clone)]
enum Input {
    File(PathBuf),
    Text { text: String, format: Format },
}

impl Loader {
    /// The file at `path`, its format by its extension, with environment
    /// overrides prefixed [`ENV_PREFIX`].
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            input: Input::File(path.into()),
            env_prefix: Some(ENV_PREFIX.to_owned()),
            stores: &[],
        }
    }

    /// `text` in `format`, without environment overrides.
    pub fn text(text: impl Into<String>, format: Format) -> Self {
        Self {
            input: Input::Text {
                text: text.into(),
                format,
            },
            env_prefix: None,
            stores: &[],
        }
    }

    /// Environment overrides with another prefix (it should end in `__`),
    /// or none.
    #[must_use]
    pub fn env_prefix(mut self, prefix: Option<&str>) -> Self {
        self.env_prefix = prefix.map(str::to_owned);
        self
    }

    /// Checks `storage.url` against these stores (the facade passes the
    /// ones its features enable, `ratekeeper::STORES`): a URL none of them
    /// opens is a problem at load time, listed with the others. Without
    /// stores (the default), only the URL's form is checked, and opening
    /// it reports an unknown scheme.
    #[must_use]
    pub fn stores(mut self, stores: &'static [Opener]) -> Self {
        self.stores = stores;
        self
    }

    /// The file, if the configuration comes from one.
    pub fn path(&self) -> Option<&Path> {
        match &self.input {
            Input::File(p) => Some(p),
            Input::Text { .. } => None,
        }
    }

    /// Reads and checks the configuration: every problem at once.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        let (source, text, format) = match &self.input {
            Input::File(path) => {
                let source = path.display().to_string();
                let Some(format) = Format::of(path) else {
                    return Err(ConfigErrors::single(
                        source,
                        "",
                        "unknown file type (expected a .toml, .yaml, .yml or .json file)",
                    ));
                };
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigErrors::single(source.clone(), "", format!("cannot read the file: {e}"))
                })?;
                (source, text, format)
            }
            Input::Text { text, format } => ("configuration".to_owned(), text.clone(), *format),
        };
        let figment = match format {
            Format::Toml => Figment::new().merge(Toml::string(&text)),
            Format::Yaml => Figment::new().merge(Yaml::string(&text)),
            Format::Json => Figment::new().merge(Json::string(&text)),
        };
        let figment = match &self.env_prefix {
            Some(prefix) => figment.merge(Env::prefixed(prefix).split("__")),
            None => figment,
        };
        let root = figment.find_value("").map_err(|e| {
            let mut message = format!("not valid {}: {}", format.name(), e.kind);
            if let Some(m) = e
                .metadata
                .as_ref()
                .filter(|m| m.name.contains("environment"))
            {
                message = format!("{message} (in {})", m.name);
            }
            ConfigErrors::single(source.clone(), "", message)
        })?;
        let mut reader = Reader::new(
            Some(&figment),
            source.clone(),
            self.env_prefix.clone().unwrap_or_default(),
        );
        reader.stores = self.stores;
        read_checked(reader, &root, source)
    }
}

/// Reads the configuration at `root` and checks it whole: every problem at
/// once, each named by `source` (or the environment variable it came from).
fn read_checked(
    mut reader: Reader<'_>,
    root: &figment::value::Value,
    source: String,
) -> Result<Config, ConfigErrors> {
    let read = parse::read(&mut reader, root);
    let mut config = read.config;
    config.origin = Origin {
        default: source,
        fields: Arc::new(reader.origins.clone()),
    };
    let mut problems = reader.problems;
    if let Err(more) = build::compile(&config, &read.broken_rules, None) {
        problems.list.extend(more.0);
    }
    problems.into_result(config)
}

/// A configuration as one section of an application's own serde
/// configuration: read and checked exactly as a file is (every problem at
/// once, each with its field path inside the section), without
/// environment overrides.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct AppConfig {
///     port: u16,
///     ratelimit: ratekeeper_config::Config,
/// }
///
/// let app: AppConfig = toml::from_str(
///     r#"
///     port = 8080
///
///     [ratelimit.rules.api]
///     limit = 100
///     window = "1m"
///     "#,
/// )?;
/// assert_eq!(app.ratelimit.rules["api"].limit, 100);
/// # Ok::<(), toml::de::Error>(())
/// ```
impl<'de> serde::Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let root = <figment::value::Value as serde::Deserialize>::deserialize(d)?;
        let source = "configuration".to_owned();
        read_checked(
            Reader::new(None, source.clone(), String::new()),
            &root,
            source,
        )
        .map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// The file at `path` (`.toml`, `.yaml`, `.yml` or `.json`) with
    /// environment overrides (`RATELIMIT__…`), checked whole.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigErrors> {
        Loader::file(path.as_ref()).load()
    }

    /// `text` in `format`, without environment overrides, checked whole.
    pub fn parse(text: &str, format: Format) -> Result<Self, ConfigErrors> {
        Loader::text(text, format).load()
    }

    /// Checks a configuration (one built or changed in code) whole, without
    /// an application's custom keys.
    pub fn check(&self) -> Result<(), ConfigErrors> {
        build::compile(self, &BTreeSet::new(), None).map(|_| ())
    }

    /// Every rule by the name its counters are kept under: the named rules
    /// and the tiers' own rules (`<tier><path>[#METHODS]` unless they give a
    /// `name`). Operators' tools use it to read or reset a key's state.
    pub fn built_rules(
        &self,
    ) -> Result<std::collections::BTreeMap<String, ratekeeper_core::Rule>, ConfigErrors> {
        build::all_rules(self)
    }

    /// Where the value at `path` (`rules.api.limit`) came from: the file, an
    /// environment variable, or `runtime change`.
    pub fn source_of(&self, path: &str) -> String {
        self.origin.of(path)
    }

    /// Marks every field as coming from a runtime change (for errors about
    /// a configuration changed in code).
    pub(crate) fn mark_changed(&mut self) {
        self.origin = Origin {
            default: "runtime change".to_owned(),
            fields: Arc::default(),
        };
    }
}

#[cfg(test)]
mod tests;
