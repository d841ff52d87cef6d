//! Domains and descriptors: limits chosen by lists of key/value entries, the
//! way Envoy's rate-limit service chooses them, for the rate-limit server.
//!
//! A domain holds a tree of descriptors. A request names its domain and one
//! or more descriptors, each a list of entries (`("remote_address",
//! "203.0.113.9")`, then perhaps `("path", "/login")`). Each descriptor is
//! matched level by level, one entry per level: at each level the most
//! specific descriptor wins (the same key and value; then a value ending in
//! `*` that the entry's value starts with, the first such in the file's
//! order; then the key with no value, which matches any value). A
//! descriptor gets the limit of the node its last entry lands on, if that
//! node has one; a descriptor longer or shorter than the tree gets none.
//! Counters are per value: two descriptors share a counter only when all
//! their entries are equal (or, with `share_threshold`, when they match the
//! same wildcard).
//!
//! The file format is envoyproxy/ratelimit's YAML
//! ([`DomainConfig::from_envoy_yaml`]): `domain`, `descriptors` with `key`,
//! `value`, `rate_limit` (`unit`, `requests_per_unit`, `unlimited`, `name`,
//! `replaces`), `shadow_mode`, `detailed_metric`, `value_to_metric`,
//! `share_threshold` and nested `descriptors`. `month` and `year` are 30 and
//! 365 days, as there. A `rate_limit` may also say what that format cannot:
//! `algorithm` (any of the six; default `fixed_window`, the only one that
//! service has), `window` (any duration, instead of `unit`), `burst` and
//! `penalty`. Three things that service accepts silently are refused here,
//! because they are mistakes: a `rate_limit` without `requests_per_unit`
//! (there: a limit of 0, denying everything), a `replaces` naming no limit of
//! the domain, and a limit replacing itself.

mod read;
mod tree;

use std::time::Duration;

use figment::Figment;
use figment::providers::{Format as _, Yaml};
use figment::value::Value;
use ratekeeper_core::rule::Algorithm;

use super::error::ConfigErrors;
use super::reader::{Reader, Table};

pub(crate) use read::read_domain;
pub use tree::{Domains, Limit, Matched, descriptor_key};

/// One domain: its name and its tree of descriptors.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// The domain's name, as requests give it.
    pub domain: String,
    /// The top level of the tree.
    pub descriptors: Vec<DescriptorConfig>,
    /// What the rate-limit server answers for this domain when its store
    /// fails; `None`: the server's `on_store_error`.
    pub on_store_error: Option<crate::StoreErrorMode>,
}

/// One node of a domain's tree.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorConfig {
    /// The entry key this node matches.
    pub key: String,
    /// The value it matches: `None` for any value (a counter per value),
    /// `Some("v")` for exactly `v`, `Some("v*")` for values starting with `v`.
    pub value: Option<String>,
    /// The limit of descriptors that end here; `None`: no limit (a node that
    /// only leads to deeper ones, or one that is never limited).
    pub limit: Option<DescriptorLimit>,
    /// Decide and count as usual, but never deny: report the denial in
    /// metrics and logs only.
    pub shadow_mode: bool,
    /// Metrics for this node name the request's value, not only the key.
    pub detailed_metric: bool,
    /// Metrics name the request's value for this entry (envoyproxy/ratelimit's
    /// newer spelling of the same wish).
    pub value_to_metric: bool,
    /// With a wildcard value: every value it matches shares one counter,
    /// instead of one counter per value.
    pub share_threshold: bool,
    /// The next level.
    pub descriptors: Vec<DescriptorConfig>,
}

/// A node's `rate_limit`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorLimit {
    /// A name other limits can replace.
    pub name: Option<String>,
    /// The names of the limits this one replaces when both apply to a
    /// request (they are then neither decided nor counted).
    pub replaces: Vec<String>,
    /// The limit itself.
    pub kind: LimitKind,
}

/// What a `rate_limit` sets.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKind {
    /// Always allowed, never counted in the store.
    Unlimited,
    /// A limit.
    Limited {
        /// The algorithm; `None`: the default one.
        algorithm: Option<Algorithm>,
        /// Requests per window; 0 denies every request.
        limit: u64,
        /// The window.
        window: Duration,
        /// The burst of the bucket algorithms; `None`: the limit.
        burst: Option<u64>,
        /// Blocks a client this long once it is denied.
        penalty: Option<Duration>,
    },
}

impl DomainConfig {
    /// Reads one file of envoyproxy/ratelimit's YAML format (with this
    /// crate's extensions, see the [module](self)); `source` names it in
    /// errors. Every problem at once, each with its path. Limits that name
    /// no algorithm get `fixed_window`, the only one that service has.
    ///
    /// ```
    /// use ratekeeper_config::domains::DomainConfig;
    ///
    /// let domain = DomainConfig::from_envoy_yaml(
    ///     "
    /// domain: messaging
    /// descriptors:
    ///   - key: message_type
    ///     value: marketing
    ///     descriptors:
    ///       - key: to_number
    ///         rate_limit:
    ///           unit: day
    ///           requests_per_unit: 5
    /// ",
    ///     "messaging.yaml",
    /// )?;
    /// assert_eq!(domain.domain, "messaging");
    ///
    /// let broken = DomainConfig::from_envoy_yaml(
    ///     "domain: x\ndescriptors:\n  - value: v\n    rate_limit: {unit: fortnight}\n",
    ///     "x.yaml",
    /// )
    /// .unwrap_err();
    /// // No key, an unknown unit, no requests_per_unit.
    /// assert_eq!(broken.errors().len(), 3);
    /// # Ok::<(), ratekeeper_config::ConfigErrors>(())
    /// ```
    pub fn from_envoy_yaml(text: &str, source: &str) -> Result<Self, ConfigErrors> {
        let figment = Figment::new().merge(Yaml::string(text));
        let root = figment.find_value("").map_err(|e| {
            ConfigErrors::single(source.to_owned(), "", format!("not valid YAML: {}", e.kind))
        })?;
        let mut r = Reader::new(Some(&figment), source.to_owned(), String::new());
        let domain =
            Table::of(&mut r, "", &root).map(|t| read_domain(&mut r, &t, Algorithm::FixedWindow));
        match domain {
            Some(mut d) => {
                // That service has one algorithm; say so, so that compiling
                // with another default leaves these files as they were.
                fill_algorithm(&mut d.descriptors, Algorithm::FixedWindow);
                r.problems.into_result(d)
            }
            None => Err(ConfigErrors(r.problems.list)),
        }
    }
}

fn fill_algorithm(level: &mut [DescriptorConfig], default: Algorithm) {
    for node in level {
        if let Some(DescriptorLimit {
            kind: LimitKind::Limited { algorithm, .. },
            ..
        }) = &mut node.limit
        {
            algorithm.get_or_insert(default);
        }
        fill_algorithm(&mut node.descriptors, default);
    }
}

/// Whether `text` is a file of envoyproxy/ratelimit's format (a YAML
/// mapping with a top-level `domain`) rather than a configuration of this
/// crate's format.
///
/// ```
/// use ratekeeper_config::domains::is_envoy_yaml;
///
/// assert!(is_envoy_yaml("domain: edge\ndescriptors: []\n"));
/// assert!(!is_envoy_yaml("rules:\n  api: {limit: 5, window: 1m}\n"));
/// assert!(!is_envoy_yaml("[not yaml"));
/// ```
pub fn is_envoy_yaml(text: &str) -> bool {
    match Figment::new().merge(Yaml::string(text)).find_value("") {
        Ok(Value::Dict(_, dict)) => dict.contains_key("domain"),
        _ => false,
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
