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

/// Which of `shards` locks `bytes` (a key, an address) belongs to, for the
/// core's sharded local tables (the deny cache, automatic blocking). FNV-1a:
/// cheap and stable; a collision only puts two entries behind one lock, so
/// inputs chosen by clients cost nothing more than that.
pub(crate) fn shard_index(bytes: &[u8], shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % shards.max(1) as u64).unwrap_or(0)
}

/// Entries examined for an expired one before an arbitrary one is dropped.
const ROOM_SAMPLE: usize = 8;

/// Makes room for one more entry in `map`, which holds `capacity` or more,
/// for the core's bounded local tables (the deny cache, automatic
/// blocking): drops expired entries (`live` says which are not) first, else
/// an arbitrary one. Returns how many were dropped, and how many of those
/// were live.
///
/// Sweeping the whole map costs O(n), so it happens at most once per
/// `capacity / 4` calls (`credit` counts them down); in between, a sample
/// of a few entries is searched for an expired one. A map full of live
/// entries thus costs O(1) amortised per insertion, never O(n) each.
pub(crate) fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut std::collections::HashMap<K, V>,
    capacity: usize,
    credit: &mut usize,
    live: impl Fn(&V) -> bool,
) -> (usize, usize) {
    let before = map.len();
    if *credit == 0 {
        map.retain(|_, v| live(v));
        *credit = (capacity / 4).max(1);
    } else {
        *credit -= 1;
        let expired = map
            .iter()
            .take(ROOM_SAMPLE)
            .find(|(_, v)| !live(v))
            .map(|(k, _)| k.clone());
        if let Some(k) = expired {
            map.remove(&k);
        }
    }
    let mut evicted_live = 0;
    while map.len() >= capacity.max(1) {
        let Some(victim) = map.keys().next().cloned() else {
            break;
        };
        map.remove(&victim);
        evicted_live += 1;
    }
    (before - map.len(), evicted_live)
}

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
mod room_tests {
    use super::make_room;
    use std::collections::HashMap;

    #[test]
    fn expired_entries_go_first_and_sweeps_are_amortised() {
        // 100 live entries (odd values) and 100 expired ones (even).
        let mut map: HashMap<u32, u32> = (0..200).map(|i| (i, i)).collect();
        let live = |v: &u32| v % 2 == 1;
        let mut credit = 0;
        // The first call sweeps: every expired entry goes, no live one.
        assert_eq!(make_room(&mut map, 200, &mut credit, live), (100, 0));
        assert_eq!(credit, 50);
        // Full of live entries: one arbitrary entry per call, no sweep
        // until the credit is spent.
        for i in 0..50 {
            map.insert(1_000 + 2 * i + 1, 1);
            while map.len() < 200 {
                map.insert(10_000 + map.len() as u32 * 2 + 1, 1);
            }
            assert_eq!(make_room(&mut map, 200, &mut credit, live), (1, 1));
        }
        assert_eq!(credit, 0);
        assert!(map.len() < 200);
    }
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
