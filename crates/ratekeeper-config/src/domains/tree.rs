//! A domain's tree compiled for deciding: the nodes with their rules, and
//! the matching of a request's descriptors to them.

use std::collections::{BTreeSet, HashMap};

use ratekeeper_core::Quota;
use ratekeeper_core::rule::{Algorithm, Rule};
use sha2::{Digest, Sha256};

use super::{DescriptorConfig, DomainConfig, LimitKind};
use crate::error::{ConfigErrors, Problems};

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
