//! Rate-limit response headers, rendered from a decision.
//!
//! Two families exist in the wild, and clients know one or the other:
//!
//! - legacy `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`
//!   (the reset as seconds from now, or as a Unix time: [`ResetFormat`]);
//! - the IETF httpapi draft's structured fields
//!   `RateLimit-Policy: "name";q=LIMIT;w=WINDOW` and
//!   `RateLimit: "name";r=REMAINING;t=SECONDS`.
//!
//! `Retry-After` is plain HTTP: it goes on every denial, whatever the style.
//! All seconds are rounded up, so a client that waits as told is never early.

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use ratekeeper_core::Decision;
use ratekeeper_core::clock::{Timestamp, duration_to_micros};

/// Which rate-limit headers to send.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderStyle {
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    Legacy,
    /// `RateLimit-Policy` and `RateLimit` (IETF draft).
    #[default]
    Ietf,
    /// Both families.
    Both,
    /// No rate-limit headers (`Retry-After` is still sent on denials).
    None,
}

impl std::str::FromStr for HeaderStyle {
    type Err = super::UnknownSetting;

    /// `legacy`, `ietf`, `both` or `none`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "legacy" => Ok(Self::Legacy),
            "ietf" => Ok(Self::Ietf),
            "both" => Ok(Self::Both),
            "none" => Ok(Self::None),
            _ => Err(super::UnknownSetting(format!(
                "unknown header style {:?} (expected legacy, ietf, both or none)",
                super::cut(text)
            ))),
        }
    }
}

/// How `X-RateLimit-Reset` is written.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetFormat {
    /// Seconds from now until the limit is fully available again (GitHub-style
    /// clients that want a delay; the default).
    #[default]
    Seconds,
    /// The Unix time (seconds) at which the limit is fully available again.
    UnixTime,
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(micros: u64) -> u64 {
    micros.div_ceil(1_000_000)
}

fn escaped(b: &u8) -> bool {
    matches!(b, b'"' | b'\\')
}

/// The length of `s` as a structured-field string (quotes and escapes).
fn sf_string_len(s: &str) -> usize {
    s.len() + 2 + s.bytes().filter(escaped).count()
}

/// Appends a structured-field string: quoted, with `"` and `\` escaped.
fn push_sf_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    if s.bytes().any(|b| escaped(&b)) {
        for b in s.bytes() {
            if escaped(&b) {
                out.push(b'\\');
            }
            out.push(b);
        }
    } else {
        // Rule names rarely need escaping: copied at once.
        out.extend_from_slice(s.as_bytes());
    }
    out.push(b'"');
}

/// The header names the policy writes, made at compile time.
pub(crate) mod names {
    use http::HeaderName;

    pub(crate) const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
    pub(crate) const X_RATELIMIT_REMAINING: HeaderName =
        HeaderName::from_static("x-ratelimit-remaining");
    pub(crate) const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
    pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
    pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
}

/// `"name";KEY=value;KEY=value`, the shape of both IETF fields, made with its
/// exact length as capacity: `Bytes` then takes the buffer as it is, with no
/// second allocation. `None` if the rule's name holds a byte no header
/// value may hold (a control character). Written byte by byte: both fields
/// are made for every request that shows headers.
fn ietf_field(name: &str, (k1, v1): (u8, u64), (k2, v2): (u8, u64)) -> Option<HeaderValue> {
    let (mut d1, mut d2) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (v1, v2) = (d1.format(v1).as_bytes(), d2.format(v2).as_bytes());
    let len = sf_string_len(name) + 6 + v1.len() + v2.len();
    let mut out = Vec::with_capacity(len);
    push_sf_string(&mut out, name);
    for (key, value) in [(k1, v1), (k2, v2)] {
        out.extend_from_slice(&[b';', key, b'=']);
        out.extend_from_slice(value);
    }
    debug_assert_eq!(out.len(), len);
    HeaderValue::from_maybe_shared(Bytes::from(out)).ok()
}

/// How many `RateLimit-Policy` fields each thread keeps made.
const POLICY_FIELDS: usize = 4;

/// A `RateLimit-Policy` field and the rule name, limit and window it says.
type MadeField = (Box<str>, u64, u64, HeaderValue);

/// The `RateLimit-Policy` fields this thread made last, with what made
/// them: a field depends only on its rule's name, limit and window, which
/// rarely change from one request to the next, so a repeat is a clone of
/// the one made before (its buffer's count raised by one) rather than a
/// new buffer written and checked byte by byte. Each thread keeps its
/// own, so threads do not contend for one; at most [`POLICY_FIELDS`],
/// replaced in turn.
struct PolicyFields {
    made: [Option<MadeField>; POLICY_FIELDS],
    next: usize,
}

thread_local! {
    static MADE_POLICY_FIELDS: RefCell<PolicyFields> = const {
        RefCell::new(PolicyFields { made: [None, None, None, None], next: 0 })
    };
}

/// `RateLimit-Policy` of the rule `name` with `limit` per `window_secs`:
/// the one this thread made before for the same three, or a new one.
fn policy_field(name: &str, limit: u64, window_secs: u64) -> Option<HeaderValue> {
    let same = |made: &Option<MadeField>| {
        made.as_ref()
            .filter(|(n, l, w, _)| *l == limit && *w == window_secs && **n == *name)
            .map(|(.., field)| field.clone())
    };
    let made = MADE_POLICY_FIELDS
        .try_with(|fields| fields.try_borrow().ok()?.made.iter().find_map(same))
        .ok()
        .flatten();
    if made.is_some() {
        return made;
    }
    let field = ietf_field(name, (b'q', limit), (b'w', window_secs))?;
    // A thread being torn down (or a re-entrant call) just skips the keeping.
    let _ = MADE_POLICY_FIELDS.try_with(|fields| {
        if let Ok(mut fields) = fields.try_borrow_mut() {
            let at = fields.next % POLICY_FIELDS;
            fields.next = at + 1;
            if let Some(slot) = fields.made.get_mut(at) {
                *slot = Some((name.into(), limit, window_secs, field.clone()));
            }
        }
    });
    Some(field)
}

/// The rate-limit headers for `decision`, made by a rule whose window is
/// `window`, at wall time `now`, in `style`.
///
/// ```
/// use ratekeeper_http::{HeaderStyle, ResetFormat, rate_limit_headers};
/// use ratekeeper_core::{Decision, Timestamp};
/// use std::time::Duration;
///
/// let d = Decision::allow("api", 100, 42, Duration::from_millis(30_500));
/// let now = Timestamp::from_micros(1_700_000_000_000_000);
/// let h = rate_limit_headers(&d, Duration::from_secs(60), now, HeaderStyle::Both, ResetFormat::Seconds);
/// let value = |name: &str| h.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_str().unwrap());
/// assert_eq!(value("ratelimit-policy"), Some("\"api\";q=100;w=60"));
/// assert_eq!(value("ratelimit"), Some("\"api\";r=42;t=31"));
/// assert_eq!(value("x-ratelimit-reset"), Some("31"));
/// ```
pub fn rate_limit_headers(
    decision: &Decision,
    window: Duration,
    now: Timestamp,
    style: HeaderStyle,
    reset: ResetFormat,
) -> Vec<(HeaderName, HeaderValue)> {
    if style == HeaderStyle::None {
        return Vec::new();
    }
    let reset_us = duration_to_micros(decision.reset_after());
    let reset_secs = ceil_secs(reset_us);
    let mut headers = Vec::with_capacity(6);
    if matches!(style, HeaderStyle::Legacy | HeaderStyle::Both) {
        let reset_value = match reset {
            ResetFormat::Seconds => reset_secs,
            ResetFormat::UnixTime => ceil_secs(now.as_micros().saturating_add(reset_us)),
        };
        headers.push((
            names::X_RATELIMIT_LIMIT,
            HeaderValue::from(decision.limit()),
        ));
        headers.push((
            names::X_RATELIMIT_REMAINING,
            HeaderValue::from(decision.remaining()),
        ));
        headers.push((names::X_RATELIMIT_RESET, HeaderValue::from(reset_value)));
    }
    if matches!(style, HeaderStyle::Ietf | HeaderStyle::Both) {
        let window_secs = ceil_secs(duration_to_micros(window)).max(1);
        let name = decision.rule();
        if let Some(v) = policy_field(name, decision.limit(), window_secs) {
            headers.push((names::RATELIMIT_POLICY, v));
        }
        if let Some(v) = ietf_field(name, (b'r', decision.remaining()), (b't', reset_secs)) {
            headers.push((names::RATELIMIT, v));
        }
    }
    headers
}

/// The seconds a denied client should wait: rounded up, at least 1. `None`
/// for an admission.
pub(crate) fn retry_after_secs(decision: &Decision) -> Option<u64> {
    let wait = duration_to_micros(decision.retry_after()?);
    Some(ceil_secs(wait).max(1))
}

/// `Retry-After` for a denial: whole seconds, rounded up, at least 1. `None`
/// for an admission.
pub fn retry_after_header(decision: &Decision) -> Option<HeaderValue> {
    retry_after_secs(decision).map(HeaderValue::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ietf_fields_are_made_with_their_exact_length_and_escaped() {
        for name in ["api", "a\"b", "back\\slash", "ünï"] {
            let field = ietf_field(name, (b'q', 0), (b'w', u64::MAX)).unwrap();
            assert!(field.as_bytes().ends_with(b";q=0;w=18446744073709551615"));
        }
        assert_eq!(
            ietf_field("a\"b", (b'r', 7), (b't', 60)).unwrap(),
            "\"a\\\"b\";r=7;t=60"
        );
        // A control character cannot be sent: the field is left out.
        assert_eq!(ietf_field("a\nb", (b'r', 7), (b't', 60)), None);
    }

    const NOW: Timestamp = Timestamp::from_micros(1_700_000_000_250_000);

    fn denied() -> Decision {
        Decision::deny(
            "login",
            5,
            0,
            Duration::from_secs(90),
            Duration::from_millis(200),
        )
    }

    #[test]
    fn styles_select_the_families() {
        let d = denied();
        let names = |style| -> Vec<String> {
            rate_limit_headers(
                &d,
                Duration::from_secs(60),
                NOW,
                style,
                ResetFormat::Seconds,
            )
            .into_iter()
            .map(|(n, _)| n.as_str().to_owned())
            .collect()
        };
        assert_eq!(
            names(HeaderStyle::Legacy),
            [
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset"
            ]
        );
        assert_eq!(names(HeaderStyle::Ietf), ["ratelimit-policy", "ratelimit"]);
        assert_eq!(names(HeaderStyle::Both).len(), 5);
        assert!(names(HeaderStyle::None).is_empty());
    }

    #[test]
    fn reset_is_seconds_or_unix_time_rounded_up() {
        let d = denied();
        let reset = |format| {
            rate_limit_headers(
                &d,
                Duration::from_secs(60),
                NOW,
                HeaderStyle::Legacy,
                format,
            )
            .into_iter()
            .find(|(n, _)| n == "x-ratelimit-reset")
            .map(|(_, v)| v)
            .unwrap()
        };
        assert_eq!(reset(ResetFormat::Seconds), "90");
        // 1_700_000_000.25 s + 90 s, rounded up.
        assert_eq!(reset(ResetFormat::UnixTime), "1700000091");
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_a_second() {
        assert_eq!(retry_after_header(&denied()).unwrap(), "1");
        let long = Decision::deny("r", 1, 0, Duration::ZERO, Duration::from_micros(2_000_001));
        assert_eq!(retry_after_header(&long).unwrap(), "3");
        let ok = Decision::allow("r", 1, 0, Duration::ZERO);
        assert_eq!(retry_after_header(&ok), None);
    }

    #[test]
    fn ietf_fields_escape_names_and_round_windows() {
        let d = Decision::allow(r#"we"ird\rule"#, 10, 3, Duration::ZERO);
        let h = rate_limit_headers(
            &d,
            Duration::from_millis(1),
            NOW,
            HeaderStyle::Ietf,
            ResetFormat::Seconds,
        );
        assert_eq!(h[0].1, r#""we\"ird\\rule";q=10;w=1"#);
        assert_eq!(h[1].1, r#""we\"ird\\rule";r=3;t=0"#);
    }

    proptest::proptest! {
        /// Whatever a thread asked for before, the policy field it gets is
        /// the one made afresh for the same rule, limit and window.
        #[test]
        fn kept_policy_fields_are_the_fields_made_afresh(
            asks in proptest::collection::vec((0..6usize, 0..3u64, 1..3u64), 1..40),
        ) {
            const NAMES: [&str; 6] = ["ip", "ipv", "api", "a\"b", "tier", "i"];
            for (name, limit, window) in asks {
                let name = NAMES[name];
                proptest::prop_assert_eq!(
                    policy_field(name, limit, window),
                    ietf_field(name, (b'q', limit), (b'w', window))
                );
            }
        }
    }
}
