//! Settings of the memory store, from code or from a `memory://` URL.

use std::time::Duration;

use ratekeeper_core::{Error, ErrorKind, parse_duration};

/// The default bound on stored keys.
pub const DEFAULT_MAX_SIZE: usize = 100_000;
/// The default number of shards (independent locks).
pub const DEFAULT_SHARDS: usize = 64;
/// The default interval of the background sweep of expired keys.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// Settings of a [`MemoryStorage`](crate::MemoryStorage).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// The most keys held at once; past it, the least recently used keys are
    /// evicted. At least 1.
    pub max_size: usize,
    /// Independent locks the keys are spread over; rounded down to a power of
    /// two, and to at most `max_size`.
    pub shards: usize,
    /// How often the background task sweeps expired keys; `None` disables the
    /// task (expired keys are still dropped when touched or evicted).
    pub cleanup_interval: Option<Duration>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
            shards: DEFAULT_SHARDS,
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }
}

impl MemoryConfig {
    /// Reads `memory://` with optional query parameters `max_size`, `shards` and
    /// `cleanup_interval` (a duration such as `30s`, or `off`).
    ///
    /// ```
    /// use ratekeeper_memory::MemoryConfig;
    /// use std::time::Duration;
    ///
    /// let c = MemoryConfig::from_url("memory://?max_size=5000&cleanup_interval=30s").unwrap();
    /// assert_eq!((c.max_size, c.cleanup_interval), (5000, Some(Duration::from_secs(30))));
    /// assert!(MemoryConfig::from_url("memory://?max_size=0").is_err());
    /// assert!(MemoryConfig::from_url("memory://?colour=blue").is_err());
    /// ```
    pub fn from_url(input: &str) -> Result<Self, Error> {
        let invalid = |msg: String| Error::new(ErrorKind::InvalidInput, msg);
        // A URL only in form: a scheme and a query, nothing to resolve, so
        // its query is all there is to parse.
        let (scheme, rest) = input.split_once("://").ok_or_else(|| {
            invalid(format!(
                "invalid memory store URL {input:?}: expected memory://?max_size=N"
            ))
        })?;
        if !scheme.eq_ignore_ascii_case("memory") {
            return Err(invalid(format!(
                "a memory store URL starts with memory://, not {scheme}://"
            )));
        }
        let (place, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !matches!(place, "" | "/") || query.contains('#') {
            return Err(invalid(
                "a memory store URL has no host, path or fragment: use memory://?max_size=N"
                    .to_owned(),
            ));
        }
        let mut config = Self::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let number = || {
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        invalid(format!(
                            "{name} must be a whole number above 0, not {value:?}"
                        ))
                    })
            };
            match name.as_ref() {
                "max_size" => config.max_size = number()?,
                "shards" => config.shards = number()?,
                "cleanup_interval" if value == "off" => config.cleanup_interval = None,
                "cleanup_interval" => {
                    let d = parse_duration(&value)
                        .map_err(|e| invalid(format!("cleanup_interval: {e}")))?;
                    if d.is_zero() {
                        return Err(invalid(
                            "cleanup_interval must be above 0 (or off)".to_owned(),
                        ));
                    }
                    config.cleanup_interval = Some(d);
                }
                other => {
                    return Err(invalid(format!(
                        "unknown memory store option {other:?} (expected max_size, shards or cleanup_interval)"
                    )));
                }
            }
        }
        Ok(config)
    }
}
