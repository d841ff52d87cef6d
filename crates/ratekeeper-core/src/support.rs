//! Building blocks shared by this workspace's crates (the HTTP policy, the
//! stores, the store layers) and by crates that extend it in the same way.
//! An application deciding requests with a [`Limiter`](crate::Limiter)
//! needs none of them.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which of `shards` locks `bytes` (a key, an address) belongs to, for
/// sharded local tables (the deny cache, automatic blocking). FNV-1a:
/// cheap and stable; a collision only puts two entries behind one lock, so
/// inputs chosen by clients cost nothing more than that.
pub fn shard_index(bytes: &[u8], shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % shards.max(1) as u64).unwrap_or(0)
}

/// Entries examined for an expired one before an arbitrary one is dropped.
const ROOM_SAMPLE: usize = 8;

/// Makes room for one more entry in `map`, which holds `capacity` or more,
/// for bounded local tables (the deny cache, automatic blocking,
/// a tier cache): drops expired entries (`live` says which are not) first, else
/// an arbitrary one. Returns how many were dropped, and how many of those
/// were live.
///
/// Sweeping the whole map costs O(n), so it happens at most once per
/// `capacity / 4` calls (`credit` counts them down); in between, a sample
/// of a few entries is searched for an expired one. A map full of live
/// entries thus costs O(1) amortised per insertion, never O(n) each.
pub fn make_room<K: Clone + Eq + Hash, V>(
    map: &mut HashMap<K, V>,
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

/// Lets a repeated warning through at most once per interval, so that a
/// failure met on every request (a store down, a resolver failing) cannot
/// flood the log. The first warning always passes.
#[derive(Debug)]
pub struct LogThrottle {
    interval_us: u64,
    /// When a warning last passed (µs; 0: never).
    last: AtomicU64,
}

impl LogThrottle {
    /// Lets a warning through at most once per `interval`.
    pub const fn new(interval: Duration) -> Self {
        // Any interval worth configuring fits in u64 microseconds (584 000 years).
        #[allow(clippy::cast_possible_truncation, reason = "see above")]
        let interval_us = interval.as_micros() as u64;
        Self {
            interval_us,
            last: AtomicU64::new(0),
        }
    }

    /// Whether a warning at `now_us` may be logged: yes for the first one,
    /// then once `interval` has passed since the last that was; of two
    /// threads asking at once, one.
    pub fn allow(&self, now_us: u64) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now_us.saturating_sub(last) >= self.interval_us)
            && self
                .last
                .compare_exchange(last, now_us.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Starts `task` on the current tokio runtime, for work a component does
/// in the background (a breaker's recovery probe, a list refresh, sharing a
/// block). Outside a runtime nothing starts and `false` comes back; a
/// warning then says what is not done (`what`, "the circuit breaker's
/// background probe: recovery waits for traffic"), at most once a minute
/// for the whole process, so that a caller on another executor learns why
/// and the log is not flooded.
pub fn spawn_or_warn<F>(what: &'static str, task: F) -> bool
where
    F: Future<Output = ()> + Send + 'static,
{
    static WARNED: LogThrottle = LogThrottle::new(Duration::from_secs(60));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        drop(runtime.spawn(task));
        return true;
    }
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, crate::clock::duration_to_micros);
    if WARNED.allow(now_us) {
        tracing::warn!(
            target: "ratekeeper",
            "no tokio runtime on this thread, so this is not done: {what}"
        );
    }
    false
}

/// `s` as a JSON string literal: quotes, backslashes and control
/// characters escaped.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_warning_passes_first_then_once_per_interval() {
        let log = LogThrottle::new(Duration::from_secs(10));
        assert!(log.allow(5), "the first warning passes, whenever it comes");
        assert!(!log.allow(5));
        assert!(!log.allow(10_000_004));
        assert!(log.allow(10_000_005), "one interval after the last");
        assert!(!log.allow(10_000_005));
        assert!(!log.allow(3), "a clock that stepped back waits");
        assert!(log.allow(40_000_000));
        // Of many threads asking at once, one passes.
        let log = std::sync::Arc::new(LogThrottle::new(Duration::from_secs(10)));
        let passed: usize = (0..4)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || (0..1_000).filter(|_| log.allow(7)).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(passed, 1);
    }

    /// Outside a runtime the task is not started (nor leaked, nor run); inside
    /// one it runs.
    #[test]
    fn background_work_needs_a_runtime_and_says_so() {
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let task = async move { flag.store(true, Ordering::SeqCst) };
        assert!(!spawn_or_warn("a test task", task));
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(
            std::sync::Arc::strong_count(&ran),
            1,
            "the task was dropped"
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let flag = ran.clone();
        runtime.block_on(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            assert!(spawn_or_warn("a test task", async move {
                flag.store(true, Ordering::SeqCst);
                let _ = tx.send(());
            }));
            rx.await.unwrap();
        });
        assert!(ran.load(Ordering::SeqCst));
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        assert_eq!(
            json_string("a \"b\" \\ \u{0}\n\u{1f}\u{7f}é"),
            "\"a \\\"b\\\" \\\\ \\u0000\\u000a\\u001f\u{7f}é\""
        );
    }

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
