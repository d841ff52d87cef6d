//! Keys as the memory store holds them. Rule state lives at `"{rule}:{key}"`;
//! decisions look it up from the rule name and the key without building that
//! string, and the key-value API looks it up whole; both hash the same two
//! parts, so they find the same entry. A key is hashed once per operation; the
//! hash picks the shard and the slot in it.

use std::fmt;
use std::hash::{Hash, Hasher};

use smol_str::SmolStr;

/// A stored key (short keys are held inline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreKey(SmolStr);

impl StoreKey {
    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        if self.0.is_heap_allocated() {
            self.0.len()
        } else {
            0
        }
    }
}

impl Hash for StoreKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(&self.0, state);
    }
}

/// Hashes a key as two parts: before and after its first `:`. Rule names
/// cannot contain `:`, so `"{rule}:{key}"` given whole splits exactly into the
/// parts a decision hashes, and both find the same entry without joining the
/// string. A key without `:` hashes as itself and an empty second part.
fn hash_key<H: Hasher>(key: &str, state: &mut H) {
    match key.split_once(':') {
        Some((head, tail)) => hash_parts(head, tail, state),
        None => hash_parts(key, "", state),
    }
}

fn hash_parts<H: Hasher>(head: &str, tail: &str, state: &mut H) {
    state.write(head.as_bytes());
    state.write(tail.as_bytes());
}

/// A way to name a stored key without owning it.
pub(crate) trait KeyRef: Hash {
    /// Whether `stored` is this key.
    fn matches(&self, stored: &StoreKey) -> bool;
    /// The owned key, to insert.
    fn to_store_key(&self) -> StoreKey;
}

/// A whole key, from the key-value API.
pub(crate) struct Whole<'a>(pub(crate) &'a str);

impl Hash for Whole<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.0, state);
    }
}

impl KeyRef for Whole<'_> {
    fn matches(&self, stored: &StoreKey) -> bool {
        stored.0 == self.0
    }

    fn to_store_key(&self) -> StoreKey {
        StoreKey(SmolStr::new(self.0))
    }
}

/// A rule's state key in parts: `"{rule}:{key}"`.
pub(crate) struct RuleKey<'a> {
    pub(crate) rule: &'a str,
    pub(crate) key: &'a str,
}

impl Hash for RuleKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.rule, self.key, state);
    }
}

impl fmt::Display for RuleKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.rule, self.key)
    }
}

impl KeyRef for RuleKey<'_> {
    fn matches(&self, stored: &StoreKey) -> bool {
        let s = stored.0.as_bytes();
        let (rule, key) = (self.rule.as_bytes(), self.key.as_bytes());
        s.len() == rule.len() + 1 + key.len()
            && s.starts_with(rule)
            && s.get(rule.len()) == Some(&b':')
            && s.ends_with(key)
    }

    fn to_store_key(&self) -> StoreKey {
        let mut s = smol_str::SmolStrBuilder::new();
        s.push_str(self.rule);
        s.push(':');
        s.push_str(self.key);
        StoreKey(s.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn whole_and_parts_hash_and_compare_alike() {
        let s = foldhash::fast::RandomState::default();
        for (rule, key) in [
            ("api", "user-1"),
            ("a", ""),
            ("long-rule-name", &"k".repeat(40)),
            ("r", "x:y"),
        ] {
            let whole = format!("{rule}:{key}");
            let parts = RuleKey { rule, key };
            assert_eq!(s.hash_one(Whole(&whole)), s.hash_one(&parts));
            assert_eq!(s.hash_one(Whole(&whole)), s.hash_one(parts.to_store_key()));
            assert!(parts.matches(&Whole(&whole).to_store_key()));
            assert!(!RuleKey { rule, key: "other" }.matches(&Whole(&whole).to_store_key()));
        }
    }
}
