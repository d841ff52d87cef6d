//! `serde` support (feature `serde`): limits read from an application's own
//! configuration files, decisions written to logs and JSON APIs.
//!
//! Everything is read from the same text users write elsewhere: an
//! [`Algorithm`] by its name (`"gcra"`, `"sliding_window_counter"`), a
//! [`Quota`] as `"100/minute"` or as `{ limit, window, burst }` with a
//! duration such as `"1m"` or `"1h30m"`, a [`Rule`] as `{ name, algorithm,
//! limit, window, burst, penalty }`. A value that would be refused in code
//! (a zero limit, an unknown algorithm, a burst on a fixed window) is a
//! deserialisation error saying why. A [`Decision`] serialises as `{
//! allowed, rule, limit, remaining, reset_after_ms, retry_after_ms }`.
//!
//! ```
//! use ratekeeper_core::{Algorithm, Rule};
//!
//! #[derive(serde::Deserialize)]
//! struct Limits {
//!     api: Rule,
//! }
//!
//! let limits: Limits = serde_json::from_str(
//!     r#"{ "api": { "name": "api", "algorithm": "gcra", "limit": 100, "window": "1m", "burst": 10 } }"#,
//! )?;
//! assert_eq!(limits.api.algorithm(), Algorithm::Gcra);
//! assert_eq!(limits.api.capacity(), 10);
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! For a [`Duration`] field of your own in the same notation, use
//! `#[serde(with = "ratekeeper_core::serde::duration")]`.

use std::fmt;
use std::time::Duration;

use ::serde::de::{self, MapAccess, Visitor};
use ::serde::ser::SerializeStruct;
use ::serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::calendar::{Calendar, Weekday};
use crate::decision::Decision;
use crate::duration::{format_duration, parse_duration};
use crate::quota::Quota;
use crate::rule::{Algorithm, Rule};

/// A [`Duration`] written as text (`"30s"`, `"1h30m"`, `"250ms"`) or as a
/// whole number of seconds; written back as text.
pub mod duration {
    use super::*;

    /// Writes `d` as [`format_duration`] does.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Reads a duration from text or whole seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"30s\", \"1m\" or \"1h30m\", or whole seconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("a duration cannot be negative"))
        }
    }

    /// A [`Duration`] read through [`deserialize`], as a value of its own.
    pub(super) struct Text(pub(super) Duration);

    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d).map(Text)
        }
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AlgorithmVisitor;

        impl Visitor<'_> for AlgorithmVisitor {
            type Value = Algorithm;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an algorithm name such as \"gcra\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Algorithm, E> {
                v.parse().map_err(E::custom)
            }
        }

        d.deserialize_str(AlgorithmVisitor)
    }
}

impl Serialize for Quota {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = if self.has_explicit_burst() { 3 } else { 2 };
        let mut q = s.serialize_struct("Quota", fields)?;
        q.serialize_field("limit", &self.limit())?;
        q.serialize_field("window", &format_duration(self.window()))?;
        if self.has_explicit_burst() {
            q.serialize_field("burst", &self.burst())?;
        }
        q.end()
    }
}

/// The parts of a quota (and of a rule) as read from a map.
#[derive(Default)]
struct QuotaParts {
    limit: Option<u64>,
    window: Option<Duration>,
    burst: Option<u64>,
}

impl QuotaParts {
    /// Reads `key` if it is a quota's; whether it was.
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "limit" => once(&mut self.limit, "limit", map.next_value()?)?,
            "window" => once(
                &mut self.window,
                "window",
                map.next_value::<duration::Text>()?.0,
            )?,
            "burst" => once(&mut self.burst, "burst", map.next_value()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn quota<E: de::Error>(self) -> Result<Quota, E> {
        let limit = self.limit.ok_or_else(|| E::missing_field("limit"))?;
        let window = self.window.ok_or_else(|| E::missing_field("window"))?;
        let quota = Quota::new(limit, window).map_err(E::custom)?;
        match self.burst {
            Some(b) => quota.with_burst(b).map_err(E::custom),
            None => Ok(quota),
        }
    }
}

/// Sets a field read from a map, refusing it twice.
fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

const QUOTA_FIELDS: &[&str] = &["limit", "window", "burst"];
const RULE_FIELDS: &[&str] = &[
    "name",
    "algorithm",
    "limit",
    "window",
    "burst",
    "penalty",
    "wait",
    "waiters",
    "calendar",
    "week_start",
];

impl<'de> Deserialize<'de> for Quota {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct QuotaVisitor;

        impl<'de> Visitor<'de> for QuotaVisitor {
            type Value = Quota;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quota such as \"100/minute\", or { limit, window, burst }")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quota, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Quota, A::Error> {
                let mut parts = QuotaParts::default();
                while let Some(key) = map.next_key::<String>()? {
                    if !parts.read(&key, &mut map)? {
                        return Err(de::Error::unknown_field(&key, QUOTA_FIELDS));
                    }
                }
                parts.quota()
            }
        }

        d.deserialize_any(QuotaVisitor)
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let quota = self.quota();
        let calendar = self.calendar().map(|(c, _)| c);
        let wait = self.wait();
        let waiters = wait.map(crate::Wait::waiters).filter(|w| *w != u64::MAX);
        let fields = 4
            + usize::from(quota.has_explicit_burst())
            + usize::from(self.penalty().is_some())
            + usize::from(wait.is_some())
            + usize::from(waiters.is_some())
            + 2 * usize::from(calendar.is_some());
        let mut r = s.serialize_struct("Rule", fields)?;
        r.serialize_field("name", self.name())?;
        r.serialize_field("algorithm", &self.algorithm())?;
        r.serialize_field("limit", &quota.limit())?;
        r.serialize_field("window", &format_duration(quota.window()))?;
        if quota.has_explicit_burst() {
            r.serialize_field("burst", &quota.burst())?;
        }
        if let Some(p) = self.penalty() {
            r.serialize_field("penalty", &format_duration(p))?;
        }
        if let Some(w) = wait {
            r.serialize_field("wait", &format_duration(w.up_to()))?;
        }
        if let Some(n) = waiters {
            r.serialize_field("waiters", &n)?;
        }
        if let Some(c) = calendar {
            r.serialize_field("calendar", c.zone())?;
            r.serialize_field("week_start", c.week_start().as_str())?;
        }
        r.end()
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RuleVisitor;

        impl<'de> Visitor<'de> for RuleVisitor {
            type Value = Rule;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a rule: { name, algorithm, limit, window, burst, penalty, wait, waiters, \
                     calendar, week_start }",
                )
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Rule, A::Error> {
                let (mut name, mut algorithm, mut penalty) = (None::<String>, None, None);
                let (mut zone, mut week_start) = (None::<String>, None::<String>);
                let (mut wait, mut waiters) = (None, None::<u64>);
                let mut parts = QuotaParts::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" => once(&mut name, "name", map.next_value()?)?,
                        "algorithm" => once(&mut algorithm, "algorithm", map.next_value()?)?,
                        "penalty" => once(
                            &mut penalty,
                            "penalty",
                            map.next_value::<duration::Text>()?.0,
                        )?,
                        "wait" => once(&mut wait, "wait", map.next_value::<duration::Text>()?.0)?,
                        "waiters" => once(&mut waiters, "waiters", map.next_value()?)?,
                        "calendar" => once(&mut zone, "calendar", map.next_value()?)?,
                        "week_start" => once(&mut week_start, "week_start", map.next_value()?)?,
                        other => {
                            if !parts.read(other, &mut map)? {
                                return Err(de::Error::unknown_field(other, RULE_FIELDS));
                            }
                        }
                    }
                }
                let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
                let algorithm: Algorithm =
                    algorithm.ok_or_else(|| de::Error::missing_field("algorithm"))?;
                let rule =
                    Rule::new(&name, algorithm, parts.quota()?).map_err(de::Error::custom)?;
                let rule = match penalty {
                    Some(p) => rule.with_penalty(p).map_err(de::Error::custom)?,
                    None => rule,
                };
                let rule = match (wait, waiters) {
                    (Some(up_to), n) => {
                        let wait = crate::Wait::new(up_to, n.unwrap_or(u64::MAX));
                        rule.with_wait(wait).map_err(de::Error::custom)?
                    }
                    (None, Some(_)) => {
                        return Err(de::Error::custom("waiters needs a wait (a duration)"));
                    }
                    (None, None) => rule,
                };
                let first_day = match week_start {
                    Some(day) => Some(day.parse::<Weekday>().map_err(de::Error::custom)?),
                    None => None,
                };
                match zone {
                    Some(zone) => {
                        let calendar = Calendar::new(&zone)
                            .map_err(de::Error::custom)?
                            .week_starts_on(first_day.unwrap_or_default());
                        rule.with_calendar(calendar).map_err(de::Error::custom)
                    }
                    None if first_day.is_some() => Err(de::Error::custom(
                        "week_start needs a calendar (a time zone such as \"UTC\")",
                    )),
                    None => Ok(rule),
                }
            }
        }

        d.deserialize_map(RuleVisitor)
    }
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut d = s.serialize_struct("Decision", 6)?;
        d.serialize_field("allowed", &self.is_allowed())?;
        d.serialize_field("rule", self.rule())?;
        d.serialize_field("limit", &self.limit())?;
        d.serialize_field("remaining", &self.remaining())?;
        d.serialize_field("reset_after_ms", &millis(self.reset_after()))?;
        d.serialize_field("retry_after_ms", &self.retry_after().map(millis))?;
        d.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_and_rules_read_the_strings_users_write() {
        let q: Quota = serde_json::from_str(r#""100/minute""#).unwrap();
        assert_eq!(q, Quota::per_minute(100).unwrap());
        let q: Quota =
            serde_json::from_str(r#"{"limit": 10, "window": "1h30m", "burst": 4}"#).unwrap();
        assert_eq!(
            (q.limit(), q.window(), q.burst()),
            (10, Duration::from_secs(5_400), 4)
        );
        let q: Quota = serde_json::from_str(r#"{"limit": 10, "window": 60}"#).unwrap();
        assert_eq!(q, Quota::per_minute(10).unwrap());
        for (bad, why) in [
            (r#""0/s""#, "limit"),
            (r#"{"limit": 10}"#, "missing field `window`"),
            (r#"{"limit": 10, "window": "soon"}"#, "soon"),
            (
                r#"{"limit": 10, "window": "1m", "brust": 2}"#,
                "unknown field `brust`",
            ),
            (
                r#"{"limit": 10, "window": "1m", "limit": 2}"#,
                "duplicate field `limit`",
            ),
        ] {
            let e = serde_json::from_str::<Quota>(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let rule: Rule = serde_json::from_str(
            r#"{"name": "login", "algorithm": "fixed-window", "limit": 5, "window": "15m", "penalty": "1h"}"#,
        )
        .unwrap();
        assert_eq!(rule.algorithm(), Algorithm::FixedWindow);
        assert_eq!(rule.penalty(), Some(Duration::from_secs(3_600)));
        for (bad, why) in [
            (
                r#"{"name": "x", "algorithm": "fast", "limit": 5, "window": "1m"}"#,
                "unknown algorithm",
            ),
            (
                r#"{"name": "x", "algorithm": "fixed_window", "limit": 5, "window": "1m", "burst": 9}"#,
                "burst",
            ),
            (
                r#"{"name": "a b", "algorithm": "gcra", "limit": 5, "window": "1m"}"#,
                "name",
            ),
            (
                r#"{"algorithm": "gcra", "limit": 5, "window": "1m"}"#,
                "missing field `name`",
            ),
            (
                r#"{"name": "x", "algorithm": "gcra", "limit": 5, "window": "1d", "calendar": "UTC"}"#,
                "cannot count calendar windows",
            ),
            (
                r#"{"name": "x", "algorithm": "fixed_window", "limit": 5, "window": "1d", "week_start": "sun"}"#,
                "week_start needs a calendar",
            ),
        ] {
            let e = serde_json::from_str::<Rule>(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn rules_and_quotas_round_trip() {
        let rules = [
            Rule::new(
                "api",
                Algorithm::Gcra,
                "100/minute"
                    .parse::<Quota>()
                    .unwrap()
                    .with_burst(10)
                    .unwrap(),
            )
            .unwrap(),
            Rule::new(
                "login",
                Algorithm::SlidingWindowLog,
                Quota::per_hour(5).unwrap(),
            )
            .unwrap()
            .with_penalty(Duration::from_secs(600))
            .unwrap(),
            Rule::new(
                "line",
                Algorithm::LeakyBucket,
                Quota::per_second(10).unwrap(),
            )
            .unwrap()
            .with_wait(crate::Wait::new(Duration::from_millis(500), 3))
            .unwrap(),
            Rule::new("ready", Algorithm::Gcra, Quota::per_second(10).unwrap())
                .unwrap()
                .with_wait(crate::Wait::new(Duration::from_secs(1), u64::MAX))
                .unwrap(),
            Rule::new(
                "monthly",
                Algorithm::FixedWindow,
                "10000/month".parse().unwrap(),
            )
            .unwrap()
            .with_calendar(
                Calendar::new("Europe/Berlin")
                    .unwrap()
                    .week_starts_on(Weekday::Sunday),
            )
            .unwrap(),
        ];
        for rule in rules {
            let text = serde_json::to_string(&rule).unwrap();
            assert_eq!(serde_json::from_str::<Rule>(&text).unwrap(), rule, "{text}");
            let quota = serde_json::to_string(&rule.quota()).unwrap();
            assert_eq!(
                serde_json::from_str::<Quota>(&quota).unwrap(),
                *rule.quota(),
                "{quota}"
            );
        }
        for a in Algorithm::ALL {
            let text = serde_json::to_string(&a).unwrap();
            assert_eq!(text, format!("\"{a}\""));
            assert_eq!(serde_json::from_str::<Algorithm>(&text).unwrap(), a);
        }
    }

    #[test]
    fn decisions_serialise_for_logs_and_apis() {
        let denied = Decision::deny(
            "api",
            100,
            0,
            Duration::from_millis(30_500),
            Duration::from_millis(600),
        );
        assert_eq!(
            serde_json::to_string(&denied).unwrap(),
            r#"{"allowed":false,"rule":"api","limit":100,"remaining":0,"reset_after_ms":30500,"retry_after_ms":600}"#
        );
        let allowed = Decision::allow("api", 100, 7, Duration::from_secs(1));
        assert!(
            serde_json::to_string(&allowed)
                .unwrap()
                .ends_with(r#""retry_after_ms":null}"#)
        );
    }
}
