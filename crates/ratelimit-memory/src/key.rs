//! Keys as the memory store holds them. Rule state lives at `"{rule}:{key}"`;
//! decisions look it up from the rule name and the key without building that
//! string, and the key-value API looks it up whole. Both forms hash the same
//! bytes in the same 8-byte words, so they find the same entry. A key is hashed
//! once per operation; the hash picks the shard and the slot in it.

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
        hash_words(&[self.0.as_bytes()], state);
    }
}

/// Keys up to this long are hashed in one call on a stack copy.
const SHORT: usize = 64;

/// Hashes the concatenation of `parts` so that any split of the same bytes
/// hashes alike: short keys in one `write` of the joined bytes, longer ones as
/// little-endian 8-byte words and the length.
fn hash_words<H: Hasher>(parts: &[&[u8]], state: &mut H) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len <= SHORT {
        let mut buf = [0u8; SHORT];
        let mut at = 0;
        for part in parts {
            if let Some(dst) = buf.get_mut(at..at + part.len()) {
                dst.copy_from_slice(part);
            }
            at += part.len();
        }
        state.write(buf.get(..len).unwrap_or_default());
        return;
    }
    let (mut word, mut filled, mut total) = (0u64, 0u32, 0usize);
    for part in parts {
        for &byte in *part {
            word |= u64::from(byte) << (8 * filled);
            filled += 1;
            if filled == 8 {
                state.write_u64(word);
                (word, filled) = (0, 0);
            }
        }
        total += part.len();
    }
    if filled > 0 {
        state.write_u64(word);
    }
    state.write_usize(total);
}

/// A way to name a stored key without owning it.
pub(crate) trait KeyRef: Hash + fmt::Display {
    /// Whether `stored` is this key.
    fn matches(&self, stored: &StoreKey) -> bool;
    /// The owned key, to insert.
    fn to_store_key(&self) -> StoreKey;
}

/// A whole key, from the key-value API.
pub(crate) struct Whole<'a>(pub(crate) &'a str);

impl Hash for Whole<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_words(&[self.0.as_bytes()], state);
    }
}

impl fmt::Display for Whole<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
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
        hash_words(&[self.rule.as_bytes(), b":", self.key.as_bytes()], state);
    }
}

impl fmt::Display for RuleKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}:{}\"", self.rule, self.key.escape_debug())
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
