//! Domains and descriptors: limits chosen by lists of key/value entries, the
//! way Envoy's rate-limit service chooses them, for the rate-limit server.
//!
//! A domain holds a tree of descriptors. A request names its domain and one
//! or more descriptors, each a list of entries (`("remote_address",
//! "203.0.113.9")`, then perhaps `("path", "/login")`). Each descriptor is
//! matched level by level, one entry per level: at each level the most
//! specific descriptor wins (the same key and value, then a value ending in
//! `*` that the entry's value starts with, the longest first, then the key
//! with no value, which matches any value). A descriptor gets the limit of
//! the node its last entry lands on, if that node has one; a descriptor
//! longer or shorter than the tree gets none. Counters are per value: two
//! descriptors share a counter only when all their entries are equal.
//!
//! The file format is envoyproxy/ratelimit's YAML, read unchanged
//! ([`DomainConfig::from_envoy_yaml`]): `domain`, `descriptors` with `key`,
//! `value`, `rate_limit` (`unit`, `requests_per_unit`, `unlimited`, `name`,
//! `replaces`), `shadow_mode`, `detailed_metric` and nested `descriptors`.
//! A `rate_limit` may also say what that format cannot: `algorithm` (any of
//! the six; default `fixed_window`, the only one that service has), `window`
//! (any duration, instead of `unit`), `burst` and `penalty`.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format as _, Yaml};
use ratekeeper_core::Quota;
use ratekeeper_core::rule::{Algorithm, Rule};
use sha2::{Digest, Sha256};

use super::error::{ConfigErrors, Problems};
use super::reader::{Reader, Table};

/// One domain: its name and its tree of descriptors.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// The domain's name, as requests give it.
    pub domain: String,
    /// The top level of the tree.
    pub descriptors: Vec<DescriptorConfig>,
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
    /// The next level.
    pub descriptors: Vec<DescriptorConfig>,
}

/// What applies to descriptors that end on a node.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DescriptorLimit {
    /// Always allowed, never counted in the store.
    Unlimited,
    /// A limit.
    Limited {
        /// The algorithm; `None`: `fixed_window`.
        algorithm: Option<Algorithm>,
        /// Requests per window; 0 denies every request.
        limit: u64,
        /// The window.
        window: Duration,
        /// The burst of the bucket algorithms; `None`: the limit.
        burst: Option<u64>,
        /// Blocks a client this long once it is denied.
        penalty: Option<Duration>,
        /// A name other limits can replace.
        name: Option<String>,
        /// The names of the limits this one replaces when both apply to a
        /// request.
        replaces: Vec<String>,
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
        if let Some(DescriptorLimit::Limited { algorithm, .. }) = &mut node.limit {
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
        Ok(figment::value::Value::Dict(_, dict)) => dict.contains_key("domain"),
        _ => false,
    }
}

/// `domain` and `descriptors` of a domain table, with the checks that span
/// nodes (the same key and value twice on a level, replaced names that no
/// limit has).
/// `default`: the algorithm of limits that name none.
pub(crate) fn read_domain(r: &mut Reader<'_>, t: &Table<'_>, default: Algorithm) -> DomainConfig {
    let domain = t.required_string(r, "domain").unwrap_or_default();
    if t.value_of("domain").is_some() && domain.is_empty() {
        r.problem(&t.field_path("domain"), t.value_of("domain"), "empty");
    }
    let mut names = Names {
        default,
        named: BTreeSet::new(),
        replaced: Vec::new(),
    };
    let descriptors = read_level(r, t, &mut names);
    t.finish(r, &["domain", "descriptors"]);
    for (path, name) in names.replaced {
        if !names.named.contains(&name) {
            r.problem(
                &path,
                None,
                format!("replaces {name:?}, which no limit of this domain is named"),
            );
        }
    }
    DomainConfig {
        domain,
        descriptors,
    }
}

/// What reading a domain carries along: the default algorithm, the limits'
/// names, and the names they replace (with where).
struct Names {
    default: Algorithm,
    named: BTreeSet<String>,
    replaced: Vec<(String, String)>,
}

/// The `descriptors` of `t`: one level.
fn read_level(r: &mut Reader<'_>, t: &Table<'_>, names: &mut Names) -> Vec<DescriptorConfig> {
    let mut seen = BTreeSet::new();
    let mut level = Vec::new();
    for d in t.tables(r, "descriptors") {
        let Some(node) = read_descriptor(r, &d, names) else {
            continue;
        };
        if !seen.insert((node.key.clone(), node.value.clone())) {
            let what = match &node.value {
                Some(v) => format!("key {:?} with value {v:?}", node.key),
                None => format!("key {:?} without a value", node.key),
            };
            r.problem(
                &d.path,
                Some(d.value()),
                format!("a second descriptor for {what} on this level"),
            );
        }
        level.push(node);
    }
    level
}

const DESCRIPTOR_FIELDS: &[&str] = &[
    "key",
    "value",
    "rate_limit",
    "shadow_mode",
    "detailed_metric",
    "descriptors",
];

const RATE_LIMIT_FIELDS: &[&str] = &[
    "unit",
    "requests_per_unit",
    "window",
    "unlimited",
    "name",
    "replaces",
    "algorithm",
    "burst",
    "penalty",
];

fn read_descriptor(
    r: &mut Reader<'_>,
    t: &Table<'_>,
    names: &mut Names,
) -> Option<DescriptorConfig> {
    let key = t.required_string(r, "key");
    if key.as_deref() == Some("") {
        r.problem(&t.field_path("key"), t.value_of("key"), "empty");
    }
    let value = t.string(r, "value").filter(|v| !v.is_empty());
    let limit = t
        .table(r, "rate_limit")
        .and_then(|l| read_limit(r, &l, names));
    let shadow_mode = t.boolean(r, "shadow_mode").unwrap_or(false);
    let detailed_metric = t.boolean(r, "detailed_metric").unwrap_or(false);
    let descriptors = read_level(r, t, names);
    t.finish(r, DESCRIPTOR_FIELDS);
    Some(DescriptorConfig {
        key: key?,
        value,
        limit,
        shadow_mode,
        detailed_metric,
        descriptors,
    })
}

fn read_limit(r: &mut Reader<'_>, t: &Table<'_>, names: &mut Names) -> Option<DescriptorLimit> {
    let unlimited = t.boolean(r, "unlimited").unwrap_or(false);
    let name = t.string(r, "name");
    names.named.extend(name.clone());
    let replaces = t
        .tables(r, "replaces")
        .iter()
        .filter_map(|rep| {
            let name = rep.required_string(r, "name")?;
            rep.finish(r, &["name"]);
            names.replaced.push((rep.field_path("name"), name.clone()));
            Some(name)
        })
        .collect();
    if unlimited {
        for field in [
            "unit",
            "requests_per_unit",
            "window",
            "algorithm",
            "burst",
            "penalty",
        ] {
            if t.value_of(field).is_some() {
                r.problem(
                    &t.field_path(field),
                    t.value_of(field),
                    "an unlimited descriptor has no limit to set",
                );
            }
        }
        t.finish(r, RATE_LIMIT_FIELDS);
        return Some(DescriptorLimit::Unlimited);
    }
    let window = match (t.value_of("unit"), t.value_of("window")) {
        (Some(_), Some(v)) => {
            r.problem(
                &t.field_path("window"),
                Some(v),
                "give `unit` or `window`, not both",
            );
            None
        }
        (None, Some(_)) => t.duration(r, "window"),
        (Some(_), None) => t.parsed(r, "unit", unit),
        (None, None) => {
            r.problem(
                &t.field_path("unit"),
                Some(t.value()),
                "missing (expected second, minute, hour, day or week, or a `window`)",
            );
            None
        }
    };
    let limit = t.required_integer(r, "requests_per_unit", 0, u64::from(u32::MAX));
    let algorithm = t.parsed(r, "algorithm", str::parse::<Algorithm>);
    let burst = t.integer(r, "burst", 1, u64::MAX);
    let penalty = t.duration(r, "penalty");
    t.finish(r, RATE_LIMIT_FIELDS);
    let read = DescriptorLimit::Limited {
        algorithm,
        limit: limit?,
        window: window?,
        burst,
        penalty,
        name,
        replaces,
    };
    // What only the fields together say (a window too long for the limit,
    // a burst for an algorithm without one, a log too long).
    if let Err(e) = compile_limit(&read, "check", names.default) {
        r.problem(&t.path, Some(t.value()), e);
        return None;
    }
    Some(read)
}

/// envoyproxy/ratelimit's units (any case, as that service reads them).
fn unit(text: &str) -> Result<Duration, String> {
    match text.to_ascii_lowercase().as_str() {
        "second" => Ok(Duration::from_secs(1)),
        "minute" => Ok(Duration::from_secs(60)),
        "hour" => Ok(Duration::from_secs(3_600)),
        "day" => Ok(Duration::from_secs(86_400)),
        "week" => Ok(Duration::from_secs(7 * 86_400)),
        "month" | "year" => Err(format!(
            "{text:?} is a calendar unit, which is not supported: give a `window` instead \
             (\"30d\", \"365d\")"
        )),
        _ => Err(format!(
            "unknown unit {text:?} (expected second, minute, hour, day or week)"
        )),
    }
}

/// Domains compiled for deciding: each limited node with its rule.
#[derive(Debug, Clone, Default)]
pub struct Domains {
    domains: HashMap<String, Vec<Node>>,
}

/// A node of a compiled tree.
#[derive(Debug, Clone)]
struct Node {
    key: String,
    value: ValueMatch,
    limit: Option<Limit>,
    shadow_mode: bool,
    detailed_metric: bool,
    /// The node's path in the tree, `domain.key_value.key` (for metrics and
    /// logs).
    path: String,
    children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ValueMatch {
    Any,
    Exact(String),
    Prefix(String),
}

/// What applies to a matched descriptor.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// Allowed; nothing is counted.
    Unlimited,
    /// Always denied (`requests_per_unit: 0`).
    Deny,
    /// Decided by `rule`, on the descriptor's key.
    Rule {
        /// The rule; its name is unique to the node.
        rule: Rule,
        /// The name other limits may replace it by.
        name: Option<String>,
        /// The names it replaces.
        replaces: Vec<String>,
    },
}

/// A descriptor matched to the node its last entry landed on.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    node: &'a Node,
    limit: &'a Limit,
}

impl<'a> Matched<'a> {
    /// What applies.
    pub fn limit(&self) -> &'a Limit {
        self.limit
    }

    /// Decide and count, but never deny.
    pub fn shadow_mode(&self) -> bool {
        self.node.shadow_mode
    }

    /// The node's path (`domain.key_value.key`), for metrics and logs.
    pub fn path(&self) -> &'a str {
        &self.node.path
    }

    /// Whether metrics should name the request's values.
    pub fn detailed_metric(&self) -> bool {
        self.node.detailed_metric
    }
}

impl Domains {
    /// Compiles `domains`; descriptors that name no algorithm use
    /// `default_algorithm`. Two domains with one name, or a limit that does
    /// not make a rule, are errors.
    pub fn compile(
        domains: &[DomainConfig],
        default_algorithm: Algorithm,
    ) -> Result<Self, ConfigErrors> {
        let mut out = HashMap::new();
        let mut problems = Problems::default();
        for (i, d) in domains.iter().enumerate() {
            match compile_domain(d, default_algorithm, &format!("domains[{i}].descriptors")) {
                Ok(tree) => {
                    if out.insert(d.domain.clone(), tree).is_some() {
                        problems.push(
                            "configuration".to_owned(),
                            &format!("domains[{i}].domain"),
                            format!("a second domain named {:?}", d.domain),
                        );
                    }
                }
                Err(e) => problems.list.extend(e.0),
            }
        }
        problems.into_result(Self { domains: out })
    }

    /// Whether `domain` is configured.
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// The node a descriptor (its entries in order) ends on, if that node
    /// has a limit.
    pub fn resolve<'s>(&'s self, domain: &str, entries: &[(&str, &str)]) -> Option<Matched<'s>> {
        let mut level = self.domains.get(domain)?;
        let (last, before) = entries.split_last()?;
        for (key, value) in before {
            level = &best(level, key, value)?.children;
        }
        let node = best(level, last.0, last.1)?;
        let limit = node.limit.as_ref()?;
        Some(Matched { node, limit })
    }

    /// Every node with a limit, with its domain, ordered by path.
    pub fn limits(&self) -> Vec<Matched<'_>> {
        fn collect<'a>(level: &'a [Node], out: &mut Vec<Matched<'a>>) {
            for node in level {
                if let Some(limit) = &node.limit {
                    out.push(Matched { node, limit });
                }
                collect(&node.children, out);
            }
        }
        let mut out = Vec::new();
        for tree in self.domains.values() {
            collect(tree, &mut out);
        }
        out.sort_by(|a, b| a.path().cmp(b.path()));
        out
    }

    /// Drops the matches whose limit another match replaces (neither
    /// decided nor counted).
    pub fn apply_replaces(matches: &mut Vec<Matched<'_>>) {
        let replaced: BTreeSet<&str> = matches
            .iter()
            .flat_map(|m| match m.limit() {
                Limit::Rule { replaces, .. } => replaces.iter().map(String::as_str).collect(),
                _ => Vec::new(),
            })
            .collect();
        if replaced.is_empty() {
            return;
        }
        matches.retain(|m| match m.limit() {
            Limit::Rule {
                name: Some(name), ..
            } => !replaced.contains(name.as_str()),
            _ => true,
        });
    }
}

/// The counter key of a descriptor: its entries, escaped so that different
/// entries never make the same key.
pub fn descriptor_key(entries: &[(&str, &str)]) -> String {
    let mut key = String::new();
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            key.push('|');
        }
        escape_into(&mut key, k);
        key.push('=');
        escape_into(&mut key, v);
    }
    key
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
}

/// The most specific node of `level` for one entry.
fn best<'n>(level: &'n [Node], key: &str, value: &str) -> Option<&'n Node> {
    let mut prefix: Option<(&Node, usize)> = None;
    let mut any = None;
    for node in level.iter().filter(|n| n.key == key) {
        match &node.value {
            ValueMatch::Exact(v) if v == value => return Some(node),
            ValueMatch::Prefix(p)
                if value.starts_with(p.as_str()) && prefix.is_none_or(|(_, len)| p.len() > len) =>
            {
                prefix = Some((node, p.len()));
            }
            ValueMatch::Any => any = Some(node),
            _ => {}
        }
    }
    prefix.map(|(n, _)| n).or(any)
}

fn compile_domain(
    d: &DomainConfig,
    default: Algorithm,
    path: &str,
) -> Result<Vec<Node>, ConfigErrors> {
    let mut problems = Problems::default();
    let tree = compile_level(&d.descriptors, &d.domain, path, default, &mut problems);
    problems.into_result(tree)
}

fn compile_level(
    level: &[DescriptorConfig],
    parent: &str,
    path: &str,
    default: Algorithm,
    problems: &mut Problems,
) -> Vec<Node> {
    level
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let here = format!("{path}[{i}]");
            let node_path = match &d.value {
                Some(v) => format!("{parent}.{}_{v}", d.key),
                None => format!("{parent}.{}", d.key),
            };
            let limit = d.limit.as_ref().and_then(|l| {
                compile_limit(l, &node_path, default)
                    .map_err(|e| {
                        problems.push("configuration".to_owned(), &format!("{here}.rate_limit"), e)
                    })
                    .ok()
            });
            let value = match &d.value {
                None => ValueMatch::Any,
                Some(v) => match v.strip_suffix('*') {
                    Some(p) => ValueMatch::Prefix(p.to_owned()),
                    None => ValueMatch::Exact(v.clone()),
                },
            };
            Node {
                key: d.key.clone(),
                value,
                limit,
                shadow_mode: d.shadow_mode,
                detailed_metric: d.detailed_metric,
                children: compile_level(
                    &d.descriptors,
                    &node_path,
                    &format!("{here}.descriptors"),
                    default,
                    problems,
                ),
                path: node_path,
            }
        })
        .collect()
}

fn compile_limit(
    l: &DescriptorLimit,
    node_path: &str,
    default: Algorithm,
) -> Result<Limit, String> {
    let DescriptorLimit::Limited {
        algorithm,
        limit,
        window,
        burst,
        penalty,
        name,
        replaces,
    } = l
    else {
        return Ok(Limit::Unlimited);
    };
    if *limit == 0 {
        return Ok(Limit::Deny);
    }
    let mut quota = Quota::new(*limit, *window).map_err(|e| e.to_string())?;
    if let Some(b) = burst {
        quota = quota.with_burst(*b).map_err(|e| e.to_string())?;
    }
    let mut rule = Rule::new(&rule_name(node_path), algorithm.unwrap_or(default), quota)
        .map_err(|e| e.to_string())?;
    if let Some(p) = penalty {
        rule = rule.with_penalty(*p).map_err(|e| e.to_string())?;
    }
    Ok(Limit::Rule {
        rule,
        name: name.clone(),
        replaces: replaces.clone(),
    })
}

/// A rule name for a node: `rls.` and its path when that makes a valid rule
/// name, otherwise `rls~` and a hash of the path.
fn rule_name(path: &str) -> String {
    let readable = path.len() <= 120
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b':' | b'{' | b'}'));
    if readable {
        return format!("rls.{path}");
    }
    let digest = Sha256::digest(path.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("rls~{hex}")
}

#[cfg(test)]
#[path = "domains_tests.rs"]
mod tests;
