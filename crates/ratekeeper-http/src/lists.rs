//! Allow and deny lists changed while the service runs, kept in the store so
//! that every instance sharing it sees them (ratethrottle keeps its lists in
//! its backend the same way).
//!
//! Each list is one store value (`ratelimit-lists.allow`,
//! `ratelimit-lists.deny`: keys without `:`, so they never meet a rule's
//! state) holding one entry per line: an address or CIDR block and when it
//! expires. Changes go through the store's compare-and-swap, so two
//! operators adding entries at once both land. Each instance keeps a snapshot
//! it checks requests against without waiting, refreshed from the store in
//! the background at most every [`refresh interval`](RuntimeLists::refresh_every):
//! a change made through one instance applies there at once and everywhere
//! else within that interval.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use super::client_ip::{canonical_net, net_contains, parse_canonical_net};
use ratekeeper_core::clock::{Clock, SystemClock, Timestamp, duration_to_micros};
use ratekeeper_core::kit::LogThrottle;
use ratekeeper_core::storage::{CasOp, Storage};
use ratekeeper_core::{Error, ErrorKind, Result};

/// How often, at most, an instance rereads the lists by default.
pub const DEFAULT_LIST_REFRESH: Duration = Duration::from_secs(2);
/// How long a list value lives in the store after its last change (every
/// key has an expiry; entries have their own).
const LIST_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How many times a change is retried when another writer got in between.
const CAS_ATTEMPTS: usize = 32;
/// The first line of a list value.
const HEADER: &str = "ratelimit-list v1";
/// Refresh failures are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// Clients never limited.
    Allow,
    /// Clients always refused (403), before anything else.
    Deny,
}

impl ListKind {
    /// `"allow"` or `"deny"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }

    /// The store key of this list.
    pub const fn store_key(self) -> &'static str {
        match self {
            Self::Allow => "ratelimit-lists.allow",
            Self::Deny => "ratelimit-lists.deny",
        }
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a runtime list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListEntry {
    /// The address (as a /32 or /128) or CIDR block.
    pub net: IpNet,
    /// When the entry stops applying; `None`: until removed.
    pub expires: Option<Timestamp>,
}

/// Parses an address or CIDR block (`203.0.113.7`, `10.0.0.0/8`, `fd00::/8`).
/// An IPv4-mapped entry (`::ffff:203.0.113.7`) is its IPv4 address, as
/// clients are.
pub fn parse_net(text: &str) -> Result<IpNet> {
    let text = text.trim();
    parse_canonical_net(text)
        .map(|n| n.trunc())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "invalid address or CIDR block {:?}: expected e.g. 203.0.113.7, 10.0.0.0/8 or fd00::/8",
                    text.chars().take(64).collect::<String>()
                ),
            )
        })
}

/// A list's entries, for checking addresses quickly: single addresses in a
/// hash map, blocks in a short vector.
#[derive(Debug, Default)]
struct Snapshot {
    hosts: HashMap<IpAddr, u64>,
    nets: Vec<(IpNet, u64)>,
}

impl Snapshot {
    fn of(entries: &[ListEntry]) -> Self {
        let mut snapshot = Self::default();
        for e in entries {
            let expires = e.expires.map_or(0, Timestamp::as_micros);
            // Entries written before they were canonicalised may be mapped.
            let net = canonical_net(e.net);
            if net.prefix_len() == net.max_prefix_len() {
                snapshot.hosts.insert(net.addr(), expires);
            } else {
                snapshot.nets.push((net, expires));
            }
        }
        snapshot
    }

    fn contains(&self, ip: IpAddr, now: u64) -> bool {
        let live = |expires: u64| expires == 0 || expires > now;
        self.hosts.get(&ip).is_some_and(|e| live(*e))
            || self
                .nets
                .iter()
                .any(|(net, e)| live(*e) && net_contains(net, &ip))
    }
}

fn encode(entries: &[ListEntry]) -> Vec<u8> {
    let mut out = String::from(HEADER);
    for e in entries {
        out.push('\n');
        out.push_str(&e.net.to_string());
        out.push(' ');
        out.push_str(&e.expires.map_or(0, Timestamp::as_micros).to_string());
    }
    out.into_bytes()
}

fn decode(kind: ListKind, bytes: &[u8]) -> Result<Vec<ListEntry>> {
    let corrupt = |why: &str| {
        Error::new(
            ErrorKind::CorruptState,
            format!(
                "the {kind} list in the store ({}) is not readable: {why}; fix or delete that key",
                kind.store_key()
            ),
        )
    };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(corrupt("unknown format"));
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (net, expires) = line.split_once(' ').ok_or_else(|| corrupt("a bad line"))?;
            let net = net.parse::<IpNet>().map_err(|_| corrupt("a bad address"))?;
            let expires: u64 = expires.parse().map_err(|_| corrupt("a bad expiry"))?;
            Ok(ListEntry {
                net,
                expires: (expires != 0).then(|| Timestamp::from_micros(expires)),
            })
        })
        .collect()
}

struct Inner {
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    /// The refresh interval, in microseconds.
    refresh_us: AtomicU64,
    allow: ArcSwap<Snapshot>,
    deny: ArcSwap<Snapshot>,
    refreshed_at: AtomicU64,
    refreshing: AtomicBool,
    error_log: LogThrottle,
    /// Snapshots are stored under this lock, which counts the ones changes
    /// stored: a refresh or a change that read the store before another
    /// change stored its snapshot does not put an older one over it.
    snapshots: parking_lot::Mutex<u64>,
}

/// Allow and deny lists kept in a store, changed at runtime. Give them to a
/// policy with [`HttpPolicy::runtime_lists`](super::HttpPolicy::runtime_lists);
/// change them from an admin endpoint, or from the `ratekeeper` command line
/// (`ratekeeper deny add --storage URL 203.0.113.7 --ttl 1h`). Cheap to clone;
/// clones share the snapshot.
///
/// Deny entries refuse a client before anything else (403), allow entries
/// exempt it from every limit; a client on both is refused, and a runtime
/// allow entry does not override the policy's own deny list.
///
/// ```
/// # async fn demo(store: std::sync::Arc<dyn ratekeeper_core::Storage>) -> ratekeeper_core::Result<()> {
/// use std::time::Duration;
/// use ratekeeper_http::{ListKind, RuntimeLists};
///
/// let lists = RuntimeLists::load(store).await?;
/// lists.add(ListKind::Deny, "203.0.113.7", Some(Duration::from_secs(3600))).await?;
/// assert!(lists.is_denied("203.0.113.7".parse().unwrap()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RuntimeLists(Arc<Inner>);

impl fmt::Debug for RuntimeLists {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeLists")
            .field("refresh_us", &self.0.refresh_us)
            .field("allow", &self.0.allow.load())
            .field("deny", &self.0.deny.load())
            .finish_non_exhaustive()
    }
}

impl RuntimeLists {
    /// The lists kept in `store`, read once now. Entries expire by the
    /// system clock (the lists are shared by machines: their clocks, not a
    /// limiter's, decide).
    pub async fn load(store: Arc<dyn Storage>) -> Result<Self> {
        Self::load_with_clock(store, Arc::new(SystemClock)).await
    }

    /// [`load`](Self::load) with another clock (tests).
    pub async fn load_with_clock(store: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> Result<Self> {
        let lists = Self(Arc::new(Inner {
            store,
            clock,
            refresh_us: AtomicU64::new(duration_to_micros(DEFAULT_LIST_REFRESH)),
            allow: ArcSwap::default(),
            deny: ArcSwap::default(),
            refreshed_at: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            error_log: LogThrottle::new(ERROR_LOG_INTERVAL),
            snapshots: parking_lot::Mutex::new(0),
        }));
        lists.refresh().await?;
        Ok(lists)
    }

    /// Rereads the lists at most every `interval` (default 2 s): the time
    /// another instance's change takes to apply here. Applies to every clone.
    #[must_use]
    pub fn refresh_every(self, interval: Duration) -> Self {
        self.0
            .refresh_us
            .store(duration_to_micros(interval), Ordering::Relaxed);
        self
    }

    /// The store the lists live in.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.0.store
    }

    /// Adds (or replaces) `net` on the `kind` list, for `ttl` (`None`: until
    /// removed). Applies here at once.
    pub async fn add(&self, kind: ListKind, net: &str, ttl: Option<Duration>) -> Result<()> {
        let net = parse_net(net)?;
        let expires = ttl.map(|t| self.0.clock.now().saturating_add(t));
        self.change(kind, |entries| {
            entries.retain(|e| e.net != net);
            entries.push(ListEntry { net, expires });
            true
        })
        .await
        .map(|_| ())
    }

    /// Removes `net` (exactly as it was added) from the `kind` list; whether
    /// it was there.
    pub async fn remove(&self, kind: ListKind, net: &str) -> Result<bool> {
        let net = parse_net(net)?;
        self.change(kind, |entries| {
            let before = entries.len();
            entries.retain(|e| e.net != net);
            entries.len() != before
        })
        .await
    }

    /// The live entries of the `kind` list, read from the store.
    pub async fn list(&self, kind: ListKind) -> Result<Vec<ListEntry>> {
        let now = self.0.clock.now().as_micros();
        let entries = self.read(kind).await?.1;
        Ok(entries
            .into_iter()
            .filter(|e| e.expires.is_none_or(|t| t.as_micros() > now))
            .collect())
    }

    /// Rereads both lists from the store now. If a change made through this
    /// instance lands while the lists are being read, what was read may be
    /// older than the change: it is dropped, and the next refresh is due at
    /// once.
    pub async fn refresh(&self) -> Result<()> {
        let now = self.0.clock.now().as_micros();
        let seen = *self.0.snapshots.lock();
        let (_, allow) = self.read(ListKind::Allow).await?;
        let (_, deny) = self.read(ListKind::Deny).await?;
        let (allow, deny) = (
            Arc::new(Snapshot::of(&allow)),
            Arc::new(Snapshot::of(&deny)),
        );
        let changes = self.0.snapshots.lock();
        if *changes == seen {
            self.0.allow.store(allow);
            self.0.deny.store(deny);
            self.0.refreshed_at.store(now.max(1), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether `ip` is on the deny list (as of the last refresh).
    pub fn is_denied(&self, ip: IpAddr) -> bool {
        self.0
            .deny
            .load()
            .contains(ip.to_canonical(), self.0.clock.now().as_micros())
    }

    /// Whether `ip` is on the allow list (as of the last refresh).
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        self.0
            .allow
            .load()
            .contains(ip.to_canonical(), self.0.clock.now().as_micros())
    }

    /// The list `ip` is on (deny first), without waiting; starts a
    /// background refresh when the snapshot is older than the refresh
    /// interval and a tokio runtime is running. What the HTTP policy and
    /// the rate-limit server ask on every request.
    pub fn verdict(&self, ip: IpAddr) -> Option<ListKind> {
        let now = self.0.clock.now().as_micros();
        self.refresh_if_stale(now);
        let ip = ip.to_canonical();
        if self.0.deny.load().contains(ip, now) {
            Some(ListKind::Deny)
        } else if self.0.allow.load().contains(ip, now) {
            Some(ListKind::Allow)
        } else {
            None
        }
    }

    fn refresh_if_stale(&self, now: u64) {
        let last = self.0.refreshed_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < self.0.refresh_us.load(Ordering::Relaxed) {
            return;
        }
        if self.0.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let lists = self.clone();
        let refresh = async move {
            if let Err(error) = lists.refresh().await {
                // Keep the last snapshot; try again after another interval.
                lists.0.refreshed_at.store(now.max(1), Ordering::Relaxed);
                if lists.0.error_log.allow(now) {
                    tracing::warn!(
                        target: "ratekeeper::lists",
                        %error,
                        "cannot reread the runtime allow and deny lists; keeping the last ones"
                    );
                }
            }
            lists.0.refreshing.store(false, Ordering::Release);
        };
        if !ratekeeper_core::kit::spawn_or_warn(
            "rereading the runtime allow and deny lists (the last ones read stay in force)",
            refresh,
        ) {
            self.0.refreshing.store(false, Ordering::Release);
        }
    }

    /// The list's current value (for compare-and-swap) and its entries.
    async fn read(&self, kind: ListKind) -> Result<(Option<Vec<u8>>, Vec<ListEntry>)> {
        let bytes = self.0.store.get(kind.store_key()).await?;
        let entries = match &bytes {
            Some(b) => decode(kind, b)?,
            None => Vec::new(),
        };
        Ok((bytes, entries))
    }

    /// Applies `edit` to the list in the store (dropping expired entries),
    /// retrying when another writer got in between; then refreshes this
    /// instance's snapshot. Returns what `edit` returned; `false` writes
    /// nothing.
    async fn change(
        &self,
        kind: ListKind,
        mut edit: impl FnMut(&mut Vec<ListEntry>) -> bool,
    ) -> Result<bool> {
        for _ in 0..CAS_ATTEMPTS {
            let now = self.0.clock.now().as_micros();
            let seen = *self.0.snapshots.lock();
            let (current, mut entries) = self.read(kind).await?;
            entries.retain(|e| e.expires.is_none_or(|t| t.as_micros() > now));
            if !edit(&mut entries) {
                return Ok(false);
            }
            let value = encode(&entries);
            let swapped = self
                .0
                .store
                .compare_and_swap(&[CasOp {
                    key: kind.store_key(),
                    expected: current.as_deref(),
                    new_value: &value,
                    ttl: LIST_TTL,
                }])
                .await?;
            if swapped {
                let snapshot = Arc::new(Snapshot::of(&entries));
                let mut changes = self.0.snapshots.lock();
                if *changes == seen {
                    match kind {
                        ListKind::Allow => self.0.allow.store(snapshot),
                        ListKind::Deny => self.0.deny.store(snapshot),
                    }
                    *changes += 1;
                } else {
                    // Another change stored a snapshot meanwhile, which may
                    // be newer than this one: reread the store at once
                    // instead of guessing.
                    self.0.refreshed_at.store(0, Ordering::Relaxed);
                }
                return Ok(true);
            }
        }
        Err(Error::new(
            ErrorKind::Contention,
            format!("the {kind} list kept changing under this update; try again"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_corruption_is_an_error() {
        let entries = vec![
            ListEntry {
                net: parse_net("203.0.113.7").unwrap(),
                expires: None,
            },
            ListEntry {
                net: parse_net("10.1.2.3/8").unwrap(),
                expires: Some(Timestamp::from_micros(5)),
            },
        ];
        let decoded = decode(ListKind::Deny, &encode(&entries)).unwrap();
        assert_eq!(decoded, entries);
        assert_eq!(decoded[1].net.to_string(), "10.0.0.0/8");
        for bad in [&b"garbage"[..], b"ratelimit-list v1\nnot-an-ip 0", b"\xff"] {
            let e = decode(ListKind::Deny, bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::CorruptState);
            assert!(e.to_string().contains("ratelimit-lists.deny"), "{e}");
        }
        assert_eq!(
            parse_net("nope").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn snapshots_match_hosts_blocks_and_expiry() {
        let s = Snapshot::of(&[
            ListEntry {
                net: parse_net("203.0.113.7").unwrap(),
                expires: Some(Timestamp::from_micros(100)),
            },
            ListEntry {
                net: parse_net("2001:db8::/32").unwrap(),
                expires: None,
            },
        ]);
        assert!(s.contains("203.0.113.7".parse().unwrap(), 99));
        assert!(!s.contains("203.0.113.7".parse().unwrap(), 100));
        assert!(!s.contains("203.0.113.8".parse().unwrap(), 0));
        assert!(s.contains("2001:db8::1".parse().unwrap(), u64::MAX));
    }

    #[test]
    fn mapped_entries_match_their_ipv4_clients() {
        assert_eq!(
            parse_net("::ffff:127.0.0.1").unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(
            parse_net(" ::ffff:10.1.2.3/104 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
        // An entry stored mapped by an older version still matches.
        let s = Snapshot::of(&[ListEntry {
            net: "::ffff:198.51.100.0/120".parse().unwrap(),
            expires: None,
        }]);
        assert!(s.contains("198.51.100.20".parse().unwrap(), 0));
    }
}
