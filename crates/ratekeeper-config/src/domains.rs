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

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format as _, Yaml};
use figment::value::Value;
use ratekeeper_core::Quota;
use ratekeeper_core::rule::{Algorithm, Rule};
use sha2::{Digest, Sha256};

use super::error::{ConfigErrors, Problems};
use super::reader::{Reader, Table, whole};

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

/// `domain` and `descriptors` of a domain table, with the checks that span
/// nodes (the same key and value twice on a level, replaced names that no
/// limit has). `default`: the algorithm of limits that name none.
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
    "value_to_metric",
    "share_threshold",
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

/// A key or value: YAML's plain scalars (`200`, `true`) read as the text
/// they are written as.
fn scalar(r: &mut Reader<'_>, t: &Table<'_>, key: &str) -> Option<String> {
    match t.value_of(key) {
        Some(Value::Num(_, n)) => whole(n).map(|n| n.to_string()).or_else(|| t.string(r, key)),
        Some(Value::Bool(_, b)) => Some(b.to_string()),
        _ => t.string(r, key),
    }
}

fn read_descriptor(
    r: &mut Reader<'_>,
    t: &Table<'_>,
    names: &mut Names,
) -> Option<DescriptorConfig> {
    let key = scalar(r, t, "key");
    if t.value_of("key").is_none() {
        r.problem(
            &t.field_path("key"),
            Some(t.value()),
            "missing (expected a string)",
        );
    } else if key.as_deref() == Some("") {
        r.problem(&t.field_path("key"), t.value_of("key"), "empty");
    }
    let value = scalar(r, t, "value").filter(|v| !v.is_empty());
    let limit = t
        .table(r, "rate_limit")
        .and_then(|l| read_limit(r, &l, names));
    let shadow_mode = t.boolean(r, "shadow_mode").unwrap_or(false);
    let detailed_metric = t.boolean(r, "detailed_metric").unwrap_or(false);
    let value_to_metric = t.boolean(r, "value_to_metric").unwrap_or(false);
    let share_threshold = t.boolean(r, "share_threshold").unwrap_or(false);
    if share_threshold && !value.as_deref().is_some_and(|v| v.ends_with('*')) {
        r.problem(
            &t.field_path("share_threshold"),
            t.value_of("share_threshold"),
            "only a wildcard value (ending in `*`) has matches to share a counter",
        );
    }
    let descriptors = read_level(r, t, names);
    t.finish(r, DESCRIPTOR_FIELDS);
    Some(DescriptorConfig {
        key: key?,
        value,
        limit,
        shadow_mode,
        detailed_metric,
        value_to_metric,
        share_threshold,
        descriptors,
    })
}

fn read_limit(r: &mut Reader<'_>, t: &Table<'_>, names: &mut Names) -> Option<DescriptorLimit> {
    let unlimited = t.boolean(r, "unlimited").unwrap_or(false);
    let name = t.string(r, "name");
    names.named.extend(name.clone());
    let replaces: Vec<String> = t
        .tables(r, "replaces")
        .iter()
        .filter_map(|rep| {
            let replaced = rep.required_string(r, "name")?;
            rep.finish(r, &["name"]);
            let path = rep.field_path("name");
            if name.as_ref() == Some(&replaced) {
                r.problem(&path, rep.value_of("name"), "a limit cannot replace itself");
            }
            names.replaced.push((path, replaced.clone()));
            Some(replaced)
        })
        .collect();
    if unlimited {
        // A requests_per_unit beside `unlimited` is ignored, as there.
        for field in ["unit", "window", "algorithm", "burst", "penalty"] {
            if t.value_of(field).is_some() {
                r.problem(
                    &t.field_path(field),
                    t.value_of(field),
                    "an unlimited descriptor has no limit to set",
                );
            }
        }
        t.finish(r, RATE_LIMIT_FIELDS);
        return Some(DescriptorLimit {
            name,
            replaces,
            kind: LimitKind::Unlimited,
        });
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
                "missing (expected second, minute, hour, day, week, month or year, or a `window`)",
            );
            None
        }
    };
    let limit = t.required_integer(r, "requests_per_unit", 0, u64::from(u32::MAX));
    let algorithm = t.parsed(r, "algorithm", str::parse::<Algorithm>);
    let burst = t.integer(r, "burst", 1, u64::MAX);
    let penalty = t.duration(r, "penalty");
    t.finish(r, RATE_LIMIT_FIELDS);
    let read = DescriptorLimit {
        name,
        replaces,
        kind: LimitKind::Limited {
            algorithm,
            limit: limit?,
            window: window?,
            burst,
            penalty,
        },
    };
    // What only the fields together say (a window too long for the limit,
    // a burst for an algorithm without one, a log too long).
    if let Err(e) = compile_limit(&read.kind, "check", names.default) {
        r.problem(&t.path, Some(t.value()), e);
        return None;
    }
    Some(read)
}

/// envoyproxy/ratelimit's units (any case, as that service reads them;
/// `month` and `year` are 30 and 365 days there too).
fn unit(text: &str) -> Result<Duration, String> {
    const DAY: u64 = 86_400;
    let secs = match text.to_ascii_lowercase().as_str() {
        "second" => 1,
        "minute" => 60,
        "hour" => 3_600,
        "day" => DAY,
        "week" => 7 * DAY,
        "month" => 30 * DAY,
        "year" => 365 * DAY,
        _ => {
            return Err(format!(
                "unknown unit {text:?} (expected second, minute, hour, day, week, month or year)"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
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
    name: Option<String>,
    replaces: Vec<String>,
    shadow_mode: bool,
    detailed_metric: bool,
    share_threshold: bool,
    /// The node's path in envoyproxy/ratelimit's style,
    /// `domain.key_value.key` (for metrics and logs).
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
    /// Decided by the rule, on the descriptor's [key](Matched::key).
    Rule(Rule),
}

/// A descriptor matched to the node its last entry landed on.
#[derive(Debug, Clone)]
pub struct Matched<'a> {
    node: &'a Node,
    limit: &'a Limit,
    key: String,
}

impl<'a> Matched<'a> {
    /// What applies.
    pub fn limit(&self) -> &'a Limit {
        self.limit
    }

    /// The counter key: the descriptor's entries, escaped so that different
    /// entries never make one key (a wildcard with `share_threshold` keeps
    /// its pattern instead of the request's value).
    pub fn key(&self) -> &str {
        &self.key
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

    /// The limit's name, which others may replace.
    pub fn name(&self) -> Option<&'a str> {
        self.node.name.as_deref()
    }
}

impl Domains {
    /// Compiles `domains`; limits that name no algorithm use
    /// `default_algorithm`. Two domains with one name, or a limit that does
    /// not make a rule, are errors (paths `domains[i]…`).
    pub fn compile(
        domains: &[DomainConfig],
        default_algorithm: Algorithm,
    ) -> Result<Self, ConfigErrors> {
        let mut out = HashMap::new();
        let mut problems = Problems::default();
        for (i, d) in domains.iter().enumerate() {
            let at = format!("domains[{i}].descriptors");
            let root = Segment::root(&d.domain);
            let tree = compile_level(&d.descriptors, &root, &at, default_algorithm, &mut problems);
            if out.insert(d.domain.clone(), tree).is_some() {
                problems.push(
                    "configuration".to_owned(),
                    &format!("domains[{i}].domain"),
                    format!("a second domain named {:?}", d.domain),
                );
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
        let mut key = String::new();
        let mut found = None;
        for (i, (k, v)) in entries.iter().enumerate() {
            let node = best(level, k, v)?;
            if i > 0 {
                key.push('|');
            }
            escape_into(&mut key, k);
            key.push('=');
            match &node.value {
                ValueMatch::Prefix(p) if node.share_threshold => {
                    escape_into(&mut key, p);
                    key.push('*');
                }
                _ => escape_into(&mut key, v),
            }
            level = &node.children;
            found = Some(node);
        }
        let node = found?;
        let limit = node.limit.as_ref()?;
        Some(Matched { node, limit, key })
    }

    /// Every node with a limit, ordered by path (for listings; the keys of
    /// these matches are empty).
    pub fn limits(&self) -> Vec<Matched<'_>> {
        fn collect<'a>(level: &'a [Node], out: &mut Vec<Matched<'a>>) {
            for node in level {
                if let Some(limit) = &node.limit {
                    out.push(Matched {
                        node,
                        limit,
                        key: String::new(),
                    });
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
    /// decided nor counted). Any match may replace, unlimited ones too.
    pub fn apply_replaces(matches: &mut Vec<Matched<'_>>) {
        let replaced: BTreeSet<&str> = matches
            .iter()
            .flat_map(|m| m.node.replaces.iter().map(String::as_str))
            .collect();
        if replaced.is_empty() {
            return;
        }
        matches.retain(|m| m.name().is_none_or(|n| !replaced.contains(n)));
    }
}

/// The counter key of a descriptor that matched no wildcard with
/// `share_threshold`: its entries, escaped so that different entries never
/// make the same key ([`Matched::key`] is the one to use).
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
            '*' => out.push_str("%2A"),
            c => out.push(c),
        }
    }
}

/// The most specific node of `level` for one entry: the exact value, then
/// the first wildcard (in the file's order) the value starts with, then the
/// key alone.
fn best<'n>(level: &'n [Node], key: &str, value: &str) -> Option<&'n Node> {
    let mut wildcard = None;
    let mut any = None;
    for node in level.iter().filter(|n| n.key == key) {
        match &node.value {
            ValueMatch::Exact(v) if v == value => return Some(node),
            ValueMatch::Prefix(p) if wildcard.is_none() && value.starts_with(p.as_str()) => {
                wildcard = Some(node);
            }
            ValueMatch::Any => any = Some(node),
            _ => {}
        }
    }
    wildcard.or(any)
}

/// Where a node sits: its path in envoyproxy/ratelimit's style (for
/// metrics), and an unambiguous one (for its rule's name).
struct Segment {
    path: String,
    exact: String,
}

impl Segment {
    fn root(domain: &str) -> Self {
        let mut exact = String::new();
        escape_name_into(&mut exact, domain);
        Self {
            path: domain.to_owned(),
            exact,
        }
    }

    fn child(&self, key: &str, value: Option<&str>) -> Self {
        let mut exact = format!("{}.", self.exact);
        escape_name_into(&mut exact, key);
        let path = match value {
            Some(v) => {
                exact.push('=');
                escape_name_into(&mut exact, v);
                format!("{}.{key}_{v}", self.path)
            }
            None => format!("{}.{key}", self.path),
        };
        Self { path, exact }
    }
}

/// Escapes what separates a rule name's parts (`.`, `=`) and the escape.
fn escape_name_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
}

fn compile_level(
    level: &[DescriptorConfig],
    parent: &Segment,
    path: &str,
    default: Algorithm,
    problems: &mut Problems,
) -> Vec<Node> {
    level
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let here = format!("{path}[{i}]");
            let segment = parent.child(&d.key, d.value.as_deref());
            let limit = d.limit.as_ref().and_then(|l| {
                compile_limit(&l.kind, &segment.exact, default)
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
            let children = compile_level(
                &d.descriptors,
                &segment,
                &format!("{here}.descriptors"),
                default,
                problems,
            );
            Node {
                key: d.key.clone(),
                value,
                limit,
                name: d.limit.as_ref().and_then(|l| l.name.clone()),
                replaces: d
                    .limit
                    .as_ref()
                    .map(|l| l.replaces.clone())
                    .unwrap_or_default(),
                shadow_mode: d.shadow_mode,
                detailed_metric: d.detailed_metric || d.value_to_metric,
                share_threshold: d.share_threshold,
                path: segment.path,
                children,
            }
        })
        .collect()
}

fn compile_limit(kind: &LimitKind, exact_path: &str, default: Algorithm) -> Result<Limit, String> {
    let LimitKind::Limited {
        algorithm,
        limit,
        window,
        burst,
        penalty,
    } = kind
    else {
        return Ok(Limit::Unlimited);
    };
    let mut quota = Quota::new((*limit).max(1), *window).map_err(|e| e.to_string())?;
    if let Some(b) = burst {
        quota = quota.with_burst(*b).map_err(|e| e.to_string())?;
    }
    let mut rule = Rule::new(&rule_name(exact_path), algorithm.unwrap_or(default), quota)
        .map_err(|e| e.to_string())?;
    if let Some(p) = penalty {
        rule = rule.with_penalty(*p).map_err(|e| e.to_string())?;
    }
    // Checked like any other limit, then never decided.
    if *limit == 0 {
        return Ok(Limit::Deny);
    }
    Ok(Limit::Rule(rule))
}

/// A rule name for a node: `rls.` and its unambiguous path when that makes
/// a valid rule name, otherwise `rls~` and a hash of that path.
fn rule_name(exact_path: &str) -> String {
    let readable = exact_path.len() <= 120
        && exact_path
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b':' | b'{' | b'}'));
    if readable {
        return format!("rls.{exact_path}");
    }
    let digest = Sha256::digest(exact_path.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("rls~{hex}")
}

#[cfg(test)]
#[path = "domains_tests.rs"]
mod tests;
