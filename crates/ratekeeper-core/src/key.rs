//! Keys: bounding what callers pass, and naming rule state in a store.
//!
//! Keys come from callers (and, through the HTTP policy, from clients), so they
//! can be arbitrarily long. A key longer than the limiter's maximum (default
//! [`DEFAULT_MAX_KEY_LEN`] bytes) is replaced by its first 32 bytes followed by
//! `~sha256:` and the SHA-256 of the whole key in hex: at most 104 bytes, stable
//! across processes, machines and versions, and still readable in a store.

use std::borrow::Cow;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::rule::Rule;

/// The default longest key kept as it is.
pub const DEFAULT_MAX_KEY_LEN: usize = 256;
/// The smallest allowed maximum key length (a hashed key is up to 104 bytes).
pub const MIN_MAX_KEY_LEN: usize = 128;

const KEPT_PREFIX: usize = 32;

/// `key` itself if it is at most `max_len` bytes, otherwise its bounded form.
#[inline]
pub fn bounded_key(key: &str, max_len: usize) -> Cow<'_, str> {
    if key.len() <= max_len.max(MIN_MAX_KEY_LEN) {
        return Cow::Borrowed(key);
    }
    let mut cut = KEPT_PREFIX;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(cut + 8 + 64);
    out.push_str(key.get(..cut).unwrap_or_default());
    out.push_str("~sha256:");
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    Cow::Owned(out)
}

/// The store key of `rule`'s state for `key`: `"{rule name}:{key}"`. Rule names
/// cannot contain `:`, so this never collides across rules.
pub fn state_key(rule: &Rule, key: &str) -> String {
    let mut out = String::with_capacity(rule.name().len() + 1 + key.len());
    out.push_str(rule.name());
    out.push(':');
    out.push_str(key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_kept() {
        assert!(matches!(
            bounded_key("user:1", 256),
            Cow::Borrowed("user:1")
        ));
    }

    #[test]
    fn long_keys_are_hashed_stably() {
        let long = "é".repeat(10_000);
        let a = bounded_key(&long, 256);
        assert!(a.len() <= 104, "{}", a.len());
        assert_eq!(a, bounded_key(&long, 256));
        let mut other = long.clone();
        other.push('x');
        assert_ne!(a, bounded_key(&other, 256));
        assert!(a.starts_with("éééé"));
    }
}
