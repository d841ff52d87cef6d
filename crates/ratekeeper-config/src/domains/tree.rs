//! A domain's tree compiled for deciding: the nodes with their rules, and
//! the matching of a request's descriptors to them.

use std::collections::{BTreeSet, HashMap};

use ratekeeper_core::rule::{Algorithm, Rule};
use sha2::{Digest, Sha256};

use super::{DescriptorConfig, DomainConfig, LimitKind};
use crate::build::build_rule;
use crate::error::{ConfigErrors, Problems};
use crate::model::RuleConfig;

/// Domains compiled for deciding: each limited node with its rule.
#[derive(Debug, Clone, Default)]
pub struct Domains {
    domains: HashMap<String, Vec<Node>>,
    /// Each domain's own `on_store_error`, when it has one.
    on_store_error: HashMap<String, crate::StoreErrorMode>,
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

    /// The names of the limits this one replaces.
    pub fn replaces(&self) -> &'a [String] {
        &self.node.replaces
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
        let mut on_store_error = HashMap::new();
        let mut problems = Problems::default();
        for (i, d) in domains.iter().enumerate() {
            if let Some(mode) = d.on_store_error {
                on_store_error.insert(d.domain.clone(), mode);
            }
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
        problems.into_result(Self {
            domains: out,
            on_store_error,
        })
    }

    /// What `domain` answers when the store fails, if it says
    /// (`on_store_error`); `None`: the server's default.
    pub fn on_store_error(&self, domain: &str) -> Option<crate::StoreErrorMode> {
        self.on_store_error.get(domain).copied()
    }

    /// The configured domains' names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.domains.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
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
        for (k, v) in entries {
            let node = best(level, k, v)?;
            match &node.value {
                ValueMatch::Prefix(p) if node.share_threshold => {
                    push_entry(&mut key, k, p);
                    key.push('*');
                }
                _ => push_entry(&mut key, k, v),
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
    for (k, v) in entries {
        push_entry(&mut key, k, v);
    }
    key
}

/// What a counter key escapes: its separators, the wildcard, the escape.
const KEY_SPECIAL: &[char] = &['%', '|', '=', '*'];
/// What a rule name's exact path escapes: its separators and the escape.
const NAME_SPECIAL: &[char] = &['%', '.', '='];

/// Appends the entry `key=value` (after a `|` if `out` holds entries).
fn push_entry(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push('|');
    }
    escape_into(out, key, KEY_SPECIAL);
    out.push('=');
    escape_into(out, value, KEY_SPECIAL);
}

/// Appends `text` with each of `special` written `%XX`.
fn escape_into(out: &mut String, text: &str, special: &[char]) {
    for c in text.chars() {
        if special.contains(&c) {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
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
        escape_into(&mut exact, domain, NAME_SPECIAL);
        Self {
            path: domain.to_owned(),
            exact,
        }
    }

    fn child(&self, key: &str, value: Option<&str>) -> Self {
        let mut exact = format!("{}.", self.exact);
        escape_into(&mut exact, key, NAME_SPECIAL);
        let path = match value {
            Some(v) => {
                exact.push('=');
                escape_into(&mut exact, v, NAME_SPECIAL);
                format!("{}.{key}_{v}", self.path)
            }
            None => format!("{}.{key}", self.path),
        };
        Self { path, exact }
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

pub(super) fn compile_limit(
    kind: &LimitKind,
    exact_path: &str,
    default: Algorithm,
) -> Result<Limit, String> {
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
    // A limit of 0 is checked as a limit of 1 would be, then never decided.
    let rc = RuleConfig {
        algorithm: *algorithm,
        limit: (*limit).max(1),
        window: *window,
        burst: *burst,
        penalty: *penalty,
        wait: None,
        waiters: None,
        calendar: None,
        shadow: false,
        headers: true,
    };
    let rule = build_rule(&rule_name(exact_path), &rc, default).map_err(|(_, e)| e)?;
    if rule.algorithm() == Algorithm::Concurrency {
        return Err(
            "a descriptor limits a rate: `concurrency` needs a release when the request ends, \
             which Envoy's rate-limit API has no call for"
                .to_owned(),
        );
    }
    if *limit == 0 {
        return Ok(Limit::Deny);
    }
    Ok(Limit::Rule(rule))
}

/// A rule name for a node: `rls.` and its unambiguous path when that makes
/// a valid rule name, otherwise `rls~` and a hash of that path.
pub(super) fn rule_name(exact_path: &str) -> String {
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
