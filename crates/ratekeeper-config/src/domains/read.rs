//! Reading a domain's tree: every field checked, every problem at once.

use std::collections::BTreeSet;
use std::time::Duration;

use figment::value::Value;
use ratekeeper_core::rule::Algorithm;

use super::tree::compile_limit;
use super::{DescriptorConfig, DescriptorLimit, DomainConfig, LimitKind};
use crate::reader::{Reader, Table, whole};

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
    let on_store_error = t.parsed(r, "on_store_error", str::parse::<crate::StoreErrorMode>);
    t.finish(r, &["domain", "descriptors", "on_store_error"]);
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
        on_store_error,
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
