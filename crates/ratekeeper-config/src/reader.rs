//! Walks the merged configuration tree field by field, so that every
//! problem is found (not only the first, as deserializing would), each with
//! its field path and the file or environment variable it came from.

use std::collections::BTreeMap;
use std::time::Duration;

use figment::Figment;
use figment::value::{Dict, Num, Value};

use super::error::Problems;
use ratekeeper_core::parse_duration;

/// The longest duration written as a bare number of seconds (about 100 years).
const MAX_DURATION_SECS: u64 = 100 * 366 * 86_400;

/// Names sources and collects problems for one reading.
pub(crate) struct Reader<'a> {
    figment: Option<&'a Figment>,
    /// The file (or other default source) name.
    file: String,
    /// Environment variables' prefix, for naming them (`RATELIMIT__`).
    env_prefix: String,
    pub(crate) problems: Problems,
    /// Sources of fields that did not come from the file.
    pub(crate) origins: BTreeMap<String, String>,
    /// The stores `storage.url` is checked against; none: its form only.
    pub(crate) stores: &'static [ratekeeper_core::storage::Opener],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(figment: Option<&'a Figment>, file: String, env_prefix: String) -> Self {
        Self {
            figment,
            file,
            env_prefix,
            problems: Problems::default(),
            origins: BTreeMap::new(),
            stores: &[],
        }
    }

    /// Where `value` (at `path`) came from.
    pub(crate) fn source(&self, path: &str, value: Option<&Value>) -> String {
        // A table merged from several sources carries the tag of the last
        // one to touch it: only single values name their source.
        let metadata = value
            .filter(|v| !matches!(v, Value::Dict(..)))
            .and_then(|v| self.figment?.get_metadata(v.tag()));
        match metadata {
            Some(m) if m.name.contains("environment") => {
                format!("environment variable {}{}", self.env_prefix, env_name(path))
            }
            _ => self.file.clone(),
        }
    }

    /// Remembers where a field came from when it was not the file.
    pub(crate) fn note_origin(&mut self, path: &str, value: &Value) {
        let source = self.source(path, Some(value));
        if source != self.file {
            self.origins.insert(path.to_owned(), source);
        }
    }

    pub(crate) fn problem(
        &mut self,
        path: &str,
        value: Option<&Value>,
        message: impl Into<String>,
    ) {
        let source = self.source(path, value);
        self.problems.push(source, path, message);
    }
}

/// `tiers.pro.rules` → `TIERS__PRO__RULES`.
fn env_name(path: &str) -> String {
    path.split('.')
        .map(|p| p.split('[').next().unwrap_or_default().to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join("__")
}

/// A number as a whole number, whatever its width or sign (YAML gives
/// unsigned numbers, TOML signed ones).
pub(crate) fn whole(n: &Num) -> Option<i128> {
    n.to_i128()
        .or_else(|| n.to_u128().and_then(|u| i128::try_from(u).ok()))
}

/// What kind of value this is, for "expected …, found …".
fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(..) | Value::Char(..) => "a string",
        Value::Bool(..) => "a boolean",
        Value::Num(_, Num::F32(_) | Num::F64(_)) => "a decimal number",
        Value::Num(..) => "an integer",
        Value::Empty(..) => "nothing",
        Value::Dict(..) => "a table",
        Value::Array(..) => "a list",
    }
}

/// A table being read: its path, its entries, and which keys were asked for
/// (the rest are unknown fields).
pub(crate) struct Table<'v> {
    pub(crate) path: String,
    dict: &'v Dict,
    value: &'v Value,
}

impl<'v> Table<'v> {
    /// `value` as the table at `path`, or a problem.
    pub(crate) fn of(r: &mut Reader<'_>, path: &str, value: &'v Value) -> Option<Self> {
        match value {
            Value::Dict(_, dict) => Some(Self {
                path: path.to_owned(),
                dict,
                value,
            }),
            other => {
                r.problem(
                    path,
                    Some(other),
                    format!("expected a table, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub(crate) fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw value of `key`, remembering where it came from.
    pub(crate) fn raw(&self, r: &mut Reader<'_>, key: &str) -> Option<&'v Value> {
        let value = self.dict.get(key)?;
        r.note_origin(&self.field_path(key), value);
        Some(value)
    }

    /// The entries, in order, for tables whose keys are names.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'v String, &'v Value)> {
        self.dict.iter()
    }

    /// Reports every key not in `known`, suggesting a close one.
    pub(crate) fn finish(&self, r: &mut Reader<'_>, known: &[&str]) {
        for (key, value) in self.dict {
            if known.contains(&key.as_str()) {
                continue;
            }
            let hint = closest(key, known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            r.problem(
                &self.field_path(key),
                Some(value),
                format!(
                    "unknown field `{key}` (expected one of: {}){hint}",
                    known.join(", ")
                ),
            );
        }
    }

    /// A sub-table.
    pub(crate) fn table(&self, r: &mut Reader<'_>, key: &str) -> Option<Table<'v>> {
        let value = self.raw(r, key)?;
        Table::of(r, &self.field_path(key), value)
    }

    /// A string.
    pub(crate) fn string(&self, r: &mut Reader<'_>, key: &str) -> Option<String> {
        let value = self.raw(r, key)?;
        as_string(r, &self.field_path(key), value)
    }

    /// A required string.
    pub(crate) fn required_string(&self, r: &mut Reader<'_>, key: &str) -> Option<String> {
        let found = self.string(r, key);
        if self.dict.get(key).is_none() {
            r.problem(
                &self.field_path(key),
                Some(self.value),
                "missing (expected a string)",
            );
        }
        found
    }

    /// A boolean.
    pub(crate) fn boolean(&self, r: &mut Reader<'_>, key: &str) -> Option<bool> {
        let value = self.raw(r, key)?;
        match value {
            Value::Bool(_, b) => Some(*b),
            other => {
                r.problem(
                    &self.field_path(key),
                    Some(other),
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A whole number within `min..=max`.
    pub(crate) fn integer(&self, r: &mut Reader<'_>, key: &str, min: u64, max: u64) -> Option<u64> {
        let value = self.raw(r, key)?;
        as_integer(r, &self.field_path(key), value, min, max)
    }

    /// A required whole number within `min..=max`.
    pub(crate) fn required_integer(
        &self,
        r: &mut Reader<'_>,
        key: &str,
        min: u64,
        max: u64,
    ) -> Option<u64> {
        if self.dict.get(key).is_none() {
            r.problem(
                &self.field_path(key),
                Some(self.value),
                format!("missing (expected a whole number from {min})"),
            );
            return None;
        }
        self.integer(r, key, min, max)
    }

    /// A duration (`"30s"`, `"1m"`, `"1h"`, `"1d"`, `"1h30m"`; a bare number
    /// of seconds too).
    pub(crate) fn duration(&self, r: &mut Reader<'_>, key: &str) -> Option<Duration> {
        let value = self.raw(r, key)?;
        let path = self.field_path(key);
        match value {
            Value::String(_, s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    r.problem(&path, Some(value), e.to_string());
                    None
                }
            },
            Value::Num(_, n) => match whole(n).and_then(|n| u64::try_from(n).ok()) {
                Some(secs) if secs <= MAX_DURATION_SECS => Some(Duration::from_secs(secs)),
                _ => {
                    r.problem(
                        &path,
                        Some(value),
                        "not a duration (expected a number of seconds from 0, or a duration such as \"30s\", \"1m\", \"1h\" or \"1d\")",
                    );
                    None
                }
            },
            other => {
                r.problem(
                    &path,
                    Some(other),
                    format!(
                        "expected a duration such as \"30s\", \"1m\", \"1h\" or \"1d\", found {}",
                        kind(other)
                    ),
                );
                None
            }
        }
    }

    /// A rule's window: a duration, or `"day"`, `"week"`, `"month"` (30
    /// days) or `"year"` (365 days), which a rule on a calendar counts as
    /// the calendar's.
    pub(crate) fn required_window(&self, r: &mut Reader<'_>, key: &str) -> Option<Duration> {
        if let Some(Value::String(_, s)) = self.dict.get(key)
            && let Some(period) = ratekeeper_core::Period::from_name(s)
        {
            return Some(period.nominal());
        }
        self.required_duration(r, key)
    }

    /// A required duration.
    pub(crate) fn required_duration(&self, r: &mut Reader<'_>, key: &str) -> Option<Duration> {
        if self.dict.get(key).is_none() {
            r.problem(
                &self.field_path(key),
                Some(self.value),
                "missing (expected a duration such as \"30s\", \"1m\", \"1h\" or \"1d\")",
            );
            return None;
        }
        self.duration(r, key)
    }

    /// A string parsed by `parse`, whose error explains what was expected.
    pub(crate) fn parsed<T, E: std::fmt::Display>(
        &self,
        r: &mut Reader<'_>,
        key: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Option<T> {
        let value = self.raw(r, key)?;
        let path = self.field_path(key);
        let text = as_string(r, &path, value)?;
        match parse(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                r.problem(&path, Some(value), e.to_string());
                None
            }
        }
    }

    /// A list of strings (a single string counts as a list of one). Items
    /// that are not strings are reported; the rest are kept.
    pub(crate) fn strings(&self, r: &mut Reader<'_>, key: &str) -> Option<Vec<(String, String)>> {
        let value = self.raw(r, key)?;
        let path = self.field_path(key);
        match value {
            Value::Array(_, items) => Some(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| {
                        let item_path = format!("{path}[{i}]");
                        as_string(r, &item_path, item).map(|s| (item_path, s))
                    })
                    .collect(),
            ),
            Value::String(_, s) => Some(vec![(format!("{path}[0]"), s.clone())]),
            other => {
                r.problem(
                    &path,
                    Some(other),
                    format!("expected a list of strings, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A list of tables.
    pub(crate) fn tables(&self, r: &mut Reader<'_>, key: &str) -> Vec<Table<'v>> {
        let Some(value) = self.raw(r, key) else {
            return Vec::new();
        };
        let path = self.field_path(key);
        match value {
            Value::Array(_, items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| Table::of(r, &format!("{path}[{i}]"), item))
                .collect(),
            other => {
                r.problem(
                    &path,
                    Some(other),
                    format!("expected a list of tables, found {}", kind(other)),
                );
                Vec::new()
            }
        }
    }

    /// The source of a field of this table, for problems found later.
    pub(crate) fn value_of(&self, key: &str) -> Option<&'v Value> {
        self.dict.get(key)
    }

    /// This table's own value (for problems about the table as a whole).
    pub(crate) fn value(&self) -> &'v Value {
        self.value
    }
}

fn as_string(r: &mut Reader<'_>, path: &str, value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(s.clone()),
        Value::Char(_, c) => Some(c.to_string()),
        other => {
            r.problem(
                path,
                Some(other),
                format!("expected a string, found {}", kind(other)),
            );
            None
        }
    }
}

fn as_integer(r: &mut Reader<'_>, path: &str, value: &Value, min: u64, max: u64) -> Option<u64> {
    let range = || {
        if max == u64::MAX {
            format!("a whole number from {min}")
        } else {
            format!("a whole number from {min} to {max}")
        }
    };
    let number = match value {
        Value::Num(_, n) => whole(n),
        // Environment variables and some YAML come as text.
        Value::String(_, s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    match number {
        Some(n) if n >= i128::from(min) && n <= i128::from(max) => u64::try_from(n).ok(),
        Some(n) => {
            r.problem(
                path,
                Some(value),
                format!("{n} is out of range (expected {})", range()),
            );
            None
        }
        None => {
            r.problem(
                path,
                Some(value),
                format!("expected {}, found {}", range(), kind(value)),
            );
            None
        }
    }
}

/// The known key closest to `key`, if it is close (a typo).
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row.first().copied().unwrap_or_default();
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or_default();
            let left = row.get(j).copied().unwrap_or_default();
            let next = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(left + 1);
            diagonal = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = next;
            }
        }
    }
    row.last().copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest("windw", &["limit", "window"]), Some("window"));
        assert_eq!(
            closest("algoritm", &["algorithm", "burst"]),
            Some("algorithm")
        );
        assert_eq!(closest("zzz", &["limit", "window"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            env_name("tiers.pro.rules[1].window"),
            "TIERS__PRO__RULES__WINDOW"
        );
    }
}
