//! Stored state of one rule for one key, and its byte encoding (documented
//! on [`RuleState`]).

use std::fmt;

use crate::rule::Algorithm;

/// Fixed window: the start of the current window and what it has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindowState {
    /// Start of the window, µs since the epoch.
    pub window_start: u64,
    /// Units used in that window.
    pub count: u64,
}

/// Sliding window log: admitted instants and their costs, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlidingLogState {
    /// `(timestamp µs, cost)` pairs, sorted by timestamp, one per distinct instant.
    pub entries: Vec<(u64, u64)>,
}

/// Sliding window counter: the counts of the current and the previous window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingCounterState {
    /// Start of the current window, µs since the epoch.
    pub window_start: u64,
    /// Units used in the previous window.
    pub previous: u64,
    /// Units used in the current window.
    pub current: u64,
}

/// Token bucket: tokens left, and the instant refills are counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucketState {
    /// Whole tokens in the bucket.
    pub tokens: u64,
    /// Refills happen every emission interval after this instant (µs).
    pub anchor: u64,
}

/// Leaky bucket: the water level, and the instant leaks are counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakyBucketState {
    /// Units in the bucket.
    pub level: u64,
    /// One unit leaks every emission interval after this instant (µs).
    pub anchor: u64,
}

/// GCRA: the theoretical arrival time of the next unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraState {
    /// Theoretical arrival time, µs since the epoch.
    pub tat: u64,
}

/// The per-algorithm part of a rule's state: one variant per
/// [`Algorithm`], in the order of [`Algorithm::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlgorithmState {
    /// [`Algorithm::FixedWindow`]'s state.
    FixedWindow(FixedWindowState),
    /// [`Algorithm::SlidingWindowLog`]'s state.
    SlidingWindowLog(SlidingLogState),
    /// [`Algorithm::SlidingWindowCounter`]'s state.
    SlidingWindowCounter(SlidingCounterState),
    /// [`Algorithm::TokenBucket`]'s state.
    TokenBucket(TokenBucketState),
    /// [`Algorithm::LeakyBucket`]'s state.
    LeakyBucket(LeakyBucketState),
    /// [`Algorithm::Gcra`]'s state.
    Gcra(GcraState),
    /// [`Algorithm::Concurrency`]'s state: the leases held, as a sliding
    /// log's entries (the instant each was taken, and its units). A lease
    /// counts until it is released or its window has passed.
    Concurrency(SlidingLogState),
}

impl AlgorithmState {
    /// The algorithm this state belongs to.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::FixedWindow(_) => Algorithm::FixedWindow,
            Self::SlidingWindowLog(_) => Algorithm::SlidingWindowLog,
            Self::SlidingWindowCounter(_) => Algorithm::SlidingWindowCounter,
            Self::TokenBucket(_) => Algorithm::TokenBucket,
            Self::LeakyBucket(_) => Algorithm::LeakyBucket,
            Self::Gcra(_) => Algorithm::Gcra,
            Self::Concurrency(_) => Algorithm::Concurrency,
        }
    }
}

/// Everything stored for one rule and one key.
///
///
///  Stores that keep bytes (SQLite, Redis, custom stores through the default
///  decision step) store [`RuleState::encode`]'s output. The format is versioned:
///
///  ```text
///  byte 0      format version: 2 for the sliding log and concurrency, 1 for every other algorithm
///  byte 1      algorithm tag (Algorithm::state_tag): 1 fixed window, 2 sliding log, 3 sliding counter,
///              4 token bucket, 5 leaky bucket, 6 GCRA, 7 concurrency
///  bytes 2..10 blocked_until (u64 LE, µs since the epoch; 0 = not blocked)
///  then        the algorithm's fields as u64 LE; the sliding log (and
///              concurrency, whose leases are a log's entries) has a u32 LE
///              count followed by (timestamp, running total) pairs: each
///              entry's cost plus the costs of the entries before it
///  ```
///
///  The sliding log's running totals let a store that reads the bytes
///  directly (the Redis script) find the units in the window by a binary
///  search for its first live entry, and the wait of a denial by a second
///  one: a denial costs O(log n) on a log of n entries instead of reading
///  them all. Version 1 of the sliding log (pairs of timestamp and cost, as
///  written before) is still read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleState {
    /// While `now < blocked_until`, every request is denied (the rule's penalty).
    pub blocked_until: u64,
    /// The algorithm's state.
    pub algorithm: AlgorithmState,
}

/// A stored value that is not a valid rule state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(&'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stored rate-limit state is corrupt: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

const VERSION: u8 = 1;
/// The sliding log's format, with running totals.
const LOG_VERSION: u8 = 2;

impl RuleState {
    /// The versioned byte encoding described on [`RuleState`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(34);
        out.push(VERSION);
        let tag = self.algorithm.algorithm().state_tag();
        // Each state's fields, counted beside them (the count must agree with
        // `Algorithm::state_fields`: a test checks).
        let (fields, used): ([u64; 3], usize) = match &self.algorithm {
            AlgorithmState::FixedWindow(s) => ([s.window_start, s.count, 0], 2),
            AlgorithmState::SlidingWindowLog(s) | AlgorithmState::Concurrency(s) => {
                out.clear();
                out.push(LOG_VERSION);
                out.push(tag);
                out.extend_from_slice(&self.blocked_until.to_le_bytes());
                let n = u32::try_from(s.entries.len()).unwrap_or(u32::MAX);
                // A capacity hint only: any size gives the same bytes, so the
                // mutants of this line are equivalent (excluded in
                // `.cargo/mutants.toml`).
                out.reserve(4 + 16 * n as usize);
                out.extend_from_slice(&n.to_le_bytes());
                let mut total = 0u64;
                for (ts, cost) in s.entries.iter().take(n as usize) {
                    total = total.saturating_add(*cost);
                    out.extend_from_slice(&ts.to_le_bytes());
                    out.extend_from_slice(&total.to_le_bytes());
                }
                return out;
            }
            AlgorithmState::SlidingWindowCounter(s) => ([s.window_start, s.previous, s.current], 3),
            AlgorithmState::TokenBucket(s) => ([s.tokens, s.anchor, 0], 2),
            AlgorithmState::LeakyBucket(s) => ([s.level, s.anchor, 0], 2),
            AlgorithmState::Gcra(s) => ([s.tat, 0, 0], 1),
        };
        out.push(tag);
        out.extend_from_slice(&self.blocked_until.to_le_bytes());
        for f in fields.iter().take(used) {
            out.extend_from_slice(&f.to_le_bytes());
        }
        out
    }

    /// Decodes [`RuleState::encode`]'s output; any other input is an error,
    /// never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != VERSION && version != LOG_VERSION {
            return Err(DecodeError("unknown format version"));
        }
        let tag = r.u8()?;
        let logs = [Algorithm::SlidingWindowLog, Algorithm::Concurrency].map(Algorithm::state_tag);
        if version == LOG_VERSION && !logs.contains(&tag)
            || version == VERSION && tag == Algorithm::Concurrency.state_tag()
        {
            return Err(DecodeError("unknown format version"));
        }
        let blocked_until = r.u64()?;
        let algorithm =
            Algorithm::from_state_tag(tag).ok_or(DecodeError("unknown algorithm tag"))?;
        let algorithm = match algorithm {
            Algorithm::FixedWindow => AlgorithmState::FixedWindow(FixedWindowState {
                window_start: r.u64()?,
                count: r.u64()?,
            }),
            Algorithm::SlidingWindowLog | Algorithm::Concurrency => {
                let n = r.u32()? as usize;
                if r.0.len() != n.saturating_mul(16) {
                    return Err(DecodeError("sliding log length does not match its count"));
                }
                let mut entries = Vec::with_capacity(n);
                let (mut last, mut total) = (0, 0);
                for _ in 0..n {
                    let (ts, value) = (r.u64()?, r.u64()?);
                    if ts < last {
                        return Err(DecodeError("sliding log is not sorted"));
                    }
                    last = ts;
                    let cost = if version == LOG_VERSION {
                        // A running total: never below the one before.
                        let cost = value
                            .checked_sub(total)
                            .ok_or(DecodeError("sliding log totals go down"))?;
                        total = value;
                        cost
                    } else {
                        value
                    };
                    entries.push((ts, cost));
                }
                let log = SlidingLogState { entries };
                if algorithm == Algorithm::Concurrency {
                    AlgorithmState::Concurrency(log)
                } else {
                    AlgorithmState::SlidingWindowLog(log)
                }
            }
            Algorithm::SlidingWindowCounter => {
                AlgorithmState::SlidingWindowCounter(SlidingCounterState {
                    window_start: r.u64()?,
                    previous: r.u64()?,
                    current: r.u64()?,
                })
            }
            Algorithm::TokenBucket => AlgorithmState::TokenBucket(TokenBucketState {
                tokens: r.u64()?,
                anchor: r.u64()?,
            }),
            Algorithm::LeakyBucket => AlgorithmState::LeakyBucket(LeakyBucketState {
                level: r.u64()?,
                anchor: r.u64()?,
            }),
            Algorithm::Gcra => AlgorithmState::Gcra(GcraState { tat: r.u64()? }),
        };
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Self {
            blocked_until,
            algorithm,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError("value is truncated"))?;
        self.0 = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Each state encodes as many fields as its algorithm's row says.
    #[test]
    fn states_encode_the_fields_their_algorithm_declares() {
        for state in samples() {
            let algorithm = state.algorithm.algorithm();
            let bytes = state.encode();
            match algorithm.state_fields() {
                Some(n) => assert_eq!(bytes.len(), 10 + 8 * usize::from(n), "{algorithm}"),
                None => assert!(matches!(
                    algorithm,
                    Algorithm::SlidingWindowLog | Algorithm::Concurrency
                )),
            }
            assert_eq!(bytes.get(1), Some(&algorithm.state_tag()));
        }
        let covered: Vec<_> = samples().iter().map(|s| s.algorithm.algorithm()).collect();
        for a in Algorithm::ALL {
            assert!(covered.contains(&a), "no sample state for {a}");
        }
    }

    fn samples() -> Vec<RuleState> {
        let algos = vec![
            AlgorithmState::FixedWindow(FixedWindowState {
                window_start: 7,
                count: 3,
            }),
            AlgorithmState::SlidingWindowLog(SlidingLogState {
                entries: vec![(1, 2), (5, 1)],
            }),
            AlgorithmState::SlidingWindowLog(SlidingLogState::default()),
            AlgorithmState::SlidingWindowCounter(SlidingCounterState {
                window_start: 9,
                previous: 4,
                current: 2,
            }),
            AlgorithmState::TokenBucket(TokenBucketState {
                tokens: 5,
                anchor: 11,
            }),
            AlgorithmState::LeakyBucket(LeakyBucketState {
                level: 6,
                anchor: 12,
            }),
            AlgorithmState::Gcra(GcraState { tat: u64::MAX }),
            AlgorithmState::Concurrency(SlidingLogState {
                entries: vec![(3, 1), (8, 2)],
            }),
        ];
        algos
            .into_iter()
            .map(|algorithm| RuleState {
                blocked_until: 42,
                algorithm,
            })
            .collect()
    }

    #[test]
    fn round_trips_every_algorithm() {
        for s in samples() {
            assert_eq!(RuleState::decode(&s.encode()).unwrap(), s);
        }
    }

    #[test]
    fn the_sliding_log_is_written_with_running_totals() {
        let log = RuleState {
            blocked_until: 0,
            algorithm: AlgorithmState::SlidingWindowLog(SlidingLogState {
                entries: vec![(10, 2), (20, 1), (30, 4)],
            }),
        };
        let bytes = log.encode();
        assert_eq!(bytes[0], 2);
        let totals: Vec<u64> = bytes[14..]
            .chunks(16)
            .map(|pair| u64::from_le_bytes(pair[8..].try_into().unwrap()))
            .collect();
        assert_eq!(totals, [2, 3, 7]);
        // Totals that go down are corrupt.
        let mut bad = bytes.clone();
        bad[14 + 16 + 8] = 1;
        assert!(RuleState::decode(&bad).is_err());
        // Version 1 (timestamp and cost) is still read.
        let v1 = log_bytes(1, &[(10, 2), (20, 1), (30, 4)]);
        assert_eq!(RuleState::decode(&v1).unwrap(), log);
        // Version 2 is the sliding log's alone.
        let mut gcra = samples()[6].encode();
        gcra[0] = 2;
        assert!(RuleState::decode(&gcra).is_err());
        // Concurrency has only the format with running totals.
        let mut leases = samples()[7].encode();
        assert_eq!(leases[..2], [2, 7]);
        leases[0] = 1;
        assert!(RuleState::decode(&leases).is_err());
    }

    fn log_bytes(version: u8, pairs: &[(u64, u64)]) -> Vec<u8> {
        let mut out = vec![version, 2];
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&u32::try_from(pairs.len()).unwrap().to_le_bytes());
        for (ts, value) in pairs {
            out.extend_from_slice(&ts.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        out
    }

    #[test]
    fn a_log_out_of_order_is_corrupt_and_says_so() {
        let err = RuleState::decode(&log_bytes(2, &[(20, 1), (10, 2)])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stored rate-limit state is corrupt: sliding log is not sorted"
        );
        let err = RuleState::decode(&log_bytes(1, &[(20, 1), (10, 2)])).unwrap_err();
        assert!(err.to_string().ends_with("not sorted"), "{err}");
    }

    #[test]
    fn log_timestamps_may_start_at_zero_and_repeat() {
        // The clock's epoch is a valid instant, and a log written by an older
        // version may hold two entries at one instant: both decode as written.
        let decoded = RuleState::decode(&log_bytes(2, &[(0, 1), (0, 3), (7, 4)])).unwrap();
        assert_eq!(
            decoded.algorithm,
            AlgorithmState::SlidingWindowLog(SlidingLogState {
                entries: vec![(0, 1), (0, 2), (7, 1)],
            })
        );
    }

    #[test]
    fn gcra_state_is_small() {
        assert_eq!(samples()[6].encode().len(), 18);
    }

    #[test]
    fn truncations_and_extensions_are_errors() {
        for s in samples() {
            let bytes = s.encode();
            for cut in 0..bytes.len() {
                assert!(RuleState::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(RuleState::decode(&longer).is_err());
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = RuleState::decode(&bytes);
        }
    }
}
