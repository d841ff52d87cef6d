//! Automatic blocking of abusive clients (ratethrottle's DDoS protection):
//! a client denied more than `denials` times within `within` is refused
//! (403) for `block_for`, without a store call.
//!
//! Counted per instance, by client address (IPv6 grouped by the key
//! extractor's prefix, /64 by default). When the policy also applies
//! [runtime lists](super::RuntimeLists), a block is added to the shared deny
//! list with the same duration, so every instance refuses the client within
//! the lists' refresh interval. Both tables are bounded (`max_clients`);
//! past the bound the oldest-looking entries make room, so a flood of
//! addresses costs memory up to the bound, never more.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use parking_lot::Mutex;

use ratekeeper_core::clock::{Timestamp, duration_to_micros};
use ratekeeper_core::kit::{make_room, shard_index};
use ratekeeper_core::observe;

/// The default bound on clients tracked (and on clients blocked).
pub const DEFAULT_AUTO_BLOCK_CLIENTS: usize = 100_000;

const SHARDS: usize = 16;

/// When a client is blocked automatically, and for how long. Off unless a
/// policy is given one ([`HttpPolicy::auto_block`](super::HttpPolicy::auto_block)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoBlock {
    /// Denials a client may have within `within`; one more blocks it.
    pub denials: u32,
    /// The period denials are counted over.
    pub within: Duration,
    /// How long a block lasts.
    pub block_for: Duration,
    /// Clients tracked at most (and blocked at most).
    pub max_clients: usize,
}

impl AutoBlock {
    /// Blocks a client for `block_for` once it is denied more than `denials`
    /// times within `within`; tracks up to [`DEFAULT_AUTO_BLOCK_CLIENTS`].
    pub fn new(denials: u32, within: Duration, block_for: Duration) -> Self {
        Self {
            denials,
            within,
            block_for,
            max_clients: DEFAULT_AUTO_BLOCK_CLIENTS,
        }
    }

    /// Tracks (and blocks) at most `clients` clients (at least 16).
    #[must_use]
    pub fn max_clients(mut self, clients: usize) -> Self {
        self.max_clients = clients.max(SHARDS);
        self
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Denials by client: when counting started, how many.
    strikes: HashMap<IpNet, (u64, u32)>,
    /// Blocked clients, until when (µs).
    blocked: HashMap<IpNet, u64>,
    /// Insertions into a full map before its next sweep ([`make_room`]).
    strikes_credit: usize,
    blocked_credit: usize,
}

/// A new block: the client and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocked {
    pub(crate) client: IpNet,
    pub(crate) until: Timestamp,
}

/// The auto-blocker's state.
#[derive(Debug)]
pub(crate) struct AutoBlocker {
    config: AutoBlock,
    ipv6_prefix: u8,
    per_shard: usize,
    shards: Vec<Mutex<Shard>>,
    blocked_now: AtomicUsize,
    blocks: AtomicU64,
}

impl AutoBlocker {
    pub(crate) fn new(config: AutoBlock, ipv6_prefix: u8) -> Self {
        Self {
            config,
            ipv6_prefix,
            per_shard: config.max_clients.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            blocked_now: AtomicUsize::new(0),
            blocks: AtomicU64::new(0),
        }
    }

    pub(crate) fn config(&self) -> &AutoBlock {
        &self.config
    }

    pub(crate) fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }

    /// The client's group, as it is keyed.
    fn group(&self, ip: IpAddr) -> IpNet {
        super::client_ip::client_group(ip, self.ipv6_prefix)
    }

    fn shard(&self, client: &IpNet) -> Option<&Mutex<Shard>> {
        let index = match client.addr() {
            IpAddr::V4(a) => shard_index(&a.octets(), SHARDS),
            IpAddr::V6(a) => shard_index(&a.octets(), SHARDS),
        };
        self.shards.get(index)
    }

    /// How long `ip` stays blocked, if it is.
    pub(crate) fn blocked(&self, ip: IpAddr, now: Timestamp) -> Option<Duration> {
        let client = self.group(ip);
        let mut shard = self.shard(&client)?.lock();
        let until = *shard.blocked.get(&client)?;
        let now = now.as_micros();
        if until > now {
            return Some(Duration::from_micros(until - now));
        }
        shard.blocked.remove(&client);
        self.blocked_now.fetch_sub(1, Ordering::Relaxed);
        observe::gauge(observe::AUTO_BLOCKED, self.blocked_now() as f64);
        None
    }

    /// Counts a denial of `ip`; the new block when this one crossed the
    /// threshold.
    pub(crate) fn denied(&self, ip: IpAddr, now: Timestamp) -> Option<Blocked> {
        let client = self.group(ip);
        let now_us = now.as_micros();
        let within = duration_to_micros(self.config.within);
        let mut shard = self.shard(&client)?.lock();
        if shard.blocked.get(&client).is_some_and(|u| *u > now_us) {
            return None;
        }
        if !shard.strikes.contains_key(&client) && shard.strikes.len() >= self.per_shard {
            let Shard {
                strikes,
                strikes_credit,
                ..
            } = &mut *shard;
            make_room(strikes, self.per_shard, strikes_credit, |(start, _)| {
                now_us.saturating_sub(*start) < within
            });
        }
        let strikes = shard.strikes.entry(client).or_insert((now_us, 0));
        if now_us.saturating_sub(strikes.0) >= within {
            *strikes = (now_us, 0);
        }
        strikes.1 = strikes.1.saturating_add(1);
        if strikes.1 <= self.config.denials {
            return None;
        }
        shard.strikes.remove(&client);
        let until = now.saturating_add(self.config.block_for);
        // Only when full and the client is new: sweeping earlier would drop
        // expired blocks sooner, which `blocked` does anyway when it meets
        // them (so `&&` → `||` is an equivalent mutant).
        if shard.blocked.len() >= self.per_shard && !shard.blocked.contains_key(&client) {
            let Shard {
                blocked,
                blocked_credit,
                ..
            } = &mut *shard;
            let (dropped, live) =
                make_room(blocked, self.per_shard, blocked_credit, |u| *u > now_us);
            observe::evicted("auto_block", live as u64);
            self.blocked_now.fetch_sub(dropped, Ordering::Relaxed);
        }
        if shard.blocked.insert(client, until.as_micros()).is_none() {
            self.blocked_now.fetch_add(1, Ordering::Relaxed);
        }
        drop(shard);
        self.blocks.fetch_add(1, Ordering::Relaxed);
        observe::counter(observe::AUTO_BLOCKS, 1);
        observe::gauge(observe::AUTO_BLOCKED, self.blocked_now() as f64);
        Some(Blocked { client, until })
    }

    /// Clients blocked now (expired blocks are dropped when next seen).
    pub(crate) fn blocked_now(&self) -> usize {
        self.blocked_now.load(Ordering::Relaxed)
    }

    /// Blocks so far.
    pub(crate) fn blocks(&self) -> u64 {
        self.blocks.load(Ordering::Relaxed)
    }

    /// Lifts the block of `ip`; whether it was blocked.
    pub(crate) fn unblock(&self, ip: IpAddr) -> bool {
        let client = self.group(ip);
        let Some(shard) = self.shard(&client) else {
            return false;
        };
        let removed = shard.lock().blocked.remove(&client).is_some();
        if removed {
            self.blocked_now.fetch_sub(1, Ordering::Relaxed);
            observe::gauge(observe::AUTO_BLOCKED, self.blocked_now() as f64);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_micros(s * 1_000_000)
    }

    /// Blocks for 60 s after more than `denials` denials within 10 s,
    /// tracking up to `clients` clients; IPv6 grouped by /64.
    fn blocker(denials: u32, clients: usize) -> AutoBlocker {
        AutoBlocker::new(
            AutoBlock::new(denials, Duration::from_secs(10), Duration::from_secs(60))
                .max_clients(clients),
            64,
        )
    }

    #[test]
    fn blocks_after_the_threshold_for_the_duration() {
        let b = blocker(3, DEFAULT_AUTO_BLOCK_CLIENTS);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(b.denied(ip, at(1)), None);
        }
        let blocked = b.denied(ip, at(2)).unwrap();
        assert_eq!(blocked.until, at(62));
        assert_eq!(blocked.client.to_string(), "203.0.113.9/32");
        assert_eq!(b.blocked(ip, at(30)), Some(Duration::from_secs(32)));
        assert_eq!(b.blocked_now(), 1);
        assert_eq!(b.blocked(ip, at(62)), None);
        assert_eq!(b.blocked_now(), 0);
        // Another client is not touched.
        assert_eq!(b.blocked("203.0.113.10".parse().unwrap(), at(30)), None);
    }

    #[test]
    fn denials_spread_over_periods_do_not_block() {
        let b = blocker(2, DEFAULT_AUTO_BLOCK_CLIENTS);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        for s in [0, 5, 10, 15, 20, 25] {
            assert_eq!(b.denied(ip, at(s)), None, "at {s}");
        }
        assert_eq!(b.blocks(), 0);
    }

    #[test]
    fn ipv6_clients_are_blocked_by_prefix() {
        let b = blocker(1, DEFAULT_AUTO_BLOCK_CLIENTS);
        b.denied("2001:db8:1:2::1".parse().unwrap(), at(0));
        let blocked = b
            .denied("2001:db8:1:2::ffff".parse().unwrap(), at(0))
            .unwrap();
        assert_eq!(blocked.client.to_string(), "2001:db8:1:2::/64");
        assert!(
            b.blocked("2001:db8:1:2:abcd::".parse().unwrap(), at(1))
                .is_some()
        );
        assert!(
            b.blocked("2001:db8:1:3::1".parse().unwrap(), at(1))
                .is_none()
        );
        assert!(b.unblock("2001:db8:1:2::7".parse().unwrap()));
        assert!(
            b.blocked("2001:db8:1:2::1".parse().unwrap(), at(1))
                .is_none()
        );
    }

    /// `n` addresses of 10.0.0.0/8 that fall in shard `index`.
    fn same_shard(index: usize, n: usize) -> Vec<IpAddr> {
        (1..u32::MAX)
            .map(|i| IpAddr::from((0x0a00_0000 | i).to_be_bytes()))
            .filter(|ip| match ip {
                IpAddr::V4(a) => shard_index(&a.octets(), SHARDS) == index,
                IpAddr::V6(_) => false,
            })
            .take(n)
            .collect()
    }

    /// Shards 8 entries wide, and for each of four shards: a client seen
    /// first, seven seen next, and a newcomer that needs room.
    fn full_shards(denials: u32) -> (AutoBlocker, Vec<(IpAddr, Vec<IpAddr>, IpAddr)>) {
        let b = blocker(denials, 128);
        let shards = [0, 5, 9, 14]
            .map(|index| {
                let mut ips = same_shard(index, 9);
                let newcomer = ips.pop().unwrap();
                let first = ips.remove(0);
                (first, ips, newcomer)
            })
            .to_vec();
        (b, shards)
    }

    #[test]
    fn a_blocked_client_is_not_counted_again_until_its_block_ends() {
        let b = blocker(1, DEFAULT_AUTO_BLOCK_CLIENTS);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(b.denied(ip, at(0)), None);
        assert_eq!(b.denied(ip, at(0)).unwrap().until, at(60));
        // Denials during the block neither extend it nor count as blocks.
        for s in [1, 2, 3, 30, 59] {
            assert_eq!(b.denied(ip, at(s)), None, "at {s}");
        }
        assert_eq!(b.blocks(), 1);
        assert_eq!(b.blocked(ip, at(59)), Some(Duration::from_secs(1)));
        // The instant the block ends, denials count afresh.
        assert_eq!(b.denied(ip, at(60)), None);
        assert_eq!(b.denied(ip, at(60)).unwrap().until, at(120));
        assert_eq!(b.blocks(), 2);
        assert_eq!(b.blocked_now(), 1);
    }

    #[test]
    fn a_full_shard_keeps_the_strikes_of_clients_it_already_counts() {
        // 16 clients at most: one per shard.
        let b = blocker(2, 16);
        let ip = same_shard(3, 1)[0];
        assert_eq!(b.denied(ip, at(0)), None);
        assert_eq!(b.denied(ip, at(1)), None);
        assert!(b.denied(ip, at(2)).is_some());
    }

    #[test]
    fn strikes_stay_within_the_bound() {
        let b = blocker(5, 160);
        for i in 0..5_000u32 {
            let ip = IpAddr::from(i.wrapping_mul(2_654_435_761).to_be_bytes());
            assert_eq!(b.denied(ip, at(1)), None);
        }
        for shard in &b.shards {
            assert!(shard.lock().strikes.len() <= 10);
        }
        assert_eq!(b.blocks(), 0);
    }

    #[test]
    fn a_full_shard_drops_strikes_that_ended_before_live_ones() {
        // In each shard, the first client is counted at 0 s (its period
        // ends at 10 s) and seven at 5 s; the newcomer at 10 s takes the
        // ended one's place, so none of the seven loses its strike: a
        // second denial blocks each of them.
        let (b, shards) = full_shards(1);
        for (old, live, newcomer) in shards {
            assert_eq!(b.denied(old, at(0)), None);
            for ip in &live {
                assert_eq!(b.denied(*ip, at(5)), None);
            }
            assert_eq!(b.denied(newcomer, at(10)), None);
            for ip in &live {
                assert!(b.denied(*ip, at(11)).is_some(), "{ip}");
            }
        }
        assert_eq!(b.blocks(), 28);
    }

    #[test]
    fn a_full_shard_drops_blocks_that_ended_before_live_ones() {
        // In each shard, the first client is blocked at 0 s (until 60 s)
        // and seven at 30 s (until 90 s); the newcomer's block at 60 s
        // takes the ended one's place, and the seven stay blocked.
        let (b, shards) = full_shards(0);
        for (old, live, newcomer) in shards {
            assert!(b.denied(old, at(0)).is_some());
            for ip in &live {
                assert!(b.denied(*ip, at(30)).is_some());
            }
            assert!(b.denied(newcomer, at(60)).is_some());
            for ip in &live {
                assert_eq!(
                    b.blocked(*ip, at(61)),
                    Some(Duration::from_secs(29)),
                    "{ip}"
                );
            }
        }
        assert_eq!(b.blocked_now(), 32);
    }

    #[test]
    fn a_flood_of_addresses_stays_within_the_bound() {
        let b = blocker(0, 1_000);
        for i in 0..50_000u32 {
            let ip = IpAddr::from(i.wrapping_mul(2_654_435_761).to_be_bytes());
            b.denied(ip, at(1));
        }
        let (strikes, blocked): (usize, usize) = b
            .shards
            .iter()
            .map(|s| {
                let s = s.lock();
                (s.strikes.len(), s.blocked.len())
            })
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        assert!((900..=1_008).contains(&blocked), "{blocked}");
        assert_eq!(strikes, 0);
        assert_eq!(b.blocked_now(), blocked);
        assert_eq!(b.blocks(), 50_000);
    }
}
