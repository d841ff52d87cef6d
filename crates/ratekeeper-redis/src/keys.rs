//! Key layout: the store's prefix, and a Cluster hash tag on the caller's key.
//!
//! The store key of a rule's state is `"{rule}:{key}"` (the core's
//! [`state_key`](ratekeeper_core::kit::state_key)). In Redis it becomes
//!
//! ```text
//! <prefix><rule>:{<key>}
//! ```
//!
//! The braces make the caller's key the Cluster hash tag, so every rule of one
//! request on one key (`10/s` and `1000/h` for a client) lives in one slot and
//! is decided by one script call, while different clients spread over the
//! whole Cluster. Redis hashes the text between the first `{` and the next
//! `}`: a caller key that itself contains `}` is tagged by its text up to that
//! brace, so keys such as `acme}user-1` and `acme}all` share a slot (a way to
//! group different keys of one request). A prefix with its own `{tag}` puts
//! every key of the store in one slot.
//!
//! Every key-value key of the form `a:b` gets the same layout
//! (`<prefix>a:{b}`), so `Storage::get` of a state key reads what a decision
//! wrote; a key without `:` is stored as `<prefix><key>`.

use redis::cluster_routing::Slot;

/// The Redis key of store key `key`.
pub(crate) fn redis_key(prefix: &str, key: &str) -> String {
    match key.split_once(':') {
        Some((head, tail)) => tagged(prefix, head, tail),
        None => {
            let mut out = String::with_capacity(prefix.len() + key.len());
            out.push_str(prefix);
            out.push_str(key);
            out
        }
    }
}

/// The Redis key of `rule`'s state for `key`: `<prefix><rule>:{<key>}`.
pub(crate) fn tagged(prefix: &str, rule: &str, key: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + rule.len() + key.len() + 3);
    out.push_str(prefix);
    out.push_str(rule);
    out.push_str(":{");
    out.push_str(key);
    out.push('}');
    out
}

/// The Cluster slot of a Redis key.
pub(crate) fn slot(key: &str) -> Slot {
    Slot::for_key(key.as_bytes())
}

/// The pattern that matches every key under `prefix` (for SCAN), with glob
/// characters in the prefix escaped.
pub(crate) fn prefix_pattern(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_keys_are_tagged_by_the_callers_key() {
        assert_eq!(redis_key("rl:", "api:user-1"), "rl:api:{user-1}");
        assert_eq!(redis_key("rl:", "api:ip:10.0.0.1"), "rl:api:{ip:10.0.0.1}");
        assert_eq!(redis_key("rl:", "plain"), "rl:plain");
        assert_eq!(
            tagged("rl:", "api", "user-1"),
            redis_key("rl:", "api:user-1")
        );
    }

    #[test]
    fn rules_of_one_key_share_a_slot() {
        let per_second = redis_key("rl:", "per_second:user-42");
        let per_hour = redis_key("rl:", "per_hour:user-42");
        assert_eq!(slot(&per_second), slot(&per_hour));
        // Different clients spread over slots.
        let slots: std::collections::HashSet<_> = (0..100)
            .map(|i| slot(&redis_key("rl:", &format!("r:user-{i}"))))
            .collect();
        assert!(slots.len() > 90);
        // Keys grouped by a brace share a slot; a tagged prefix puts all in one.
        assert_eq!(
            slot(&redis_key("rl:", "a:acme}user-1")),
            slot(&redis_key("rl:", "b:acme}all"))
        );
        assert_eq!(
            slot(&redis_key("{app}:", "a:x")),
            slot(&redis_key("{app}:", "b:y"))
        );
    }

    #[test]
    fn glob_characters_in_prefixes_are_escaped() {
        assert_eq!(prefix_pattern("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:*");
    }
}
