//! A store written only from the `Storage` trait documentation: a map behind a
//! mutex offering every key-value operation, whose `decide` is the core's
//! compare-and-swap step. It must pass the whole conformance suite.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use ratekeeper_core::storage::decide_with_cas;
use ratekeeper_core::{
    CasOp, Clock, DecideRequest, Decision, Error, ErrorKind, Result, Storage, StorageStats,
};
use ratekeeper_testkit::ManualClock;

#[derive(Debug)]
struct MapStore {
    clock: ManualClock,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    closed: bool,
    map: HashMap<String, (Vec<u8>, u64)>,
}

impl MapStore {
    fn new(clock: ManualClock) -> Self {
        Self {
            clock,
            inner: Mutex::default(),
        }
    }

    fn now(&self) -> u64 {
        self.clock.now().as_micros()
    }

    fn expiry(&self, ttl: Duration) -> u64 {
        self.now() + u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX / 2)
    }

    /// The map with expired values dropped; fails once closed.
    fn open(&self) -> Result<MutexGuard<'_, Inner>> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Error::new(ErrorKind::Other, "lock poisoned"))?;
        if inner.closed {
            return Err(Error::closed());
        }
        let now = self.now();
        inner.map.retain(|_, (_, expires)| *expires > now);
        Ok(inner)
    }
}

#[async_trait]
impl Storage for MapStore {
    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        decide_with_cas(self, request).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.open()?.map.get(key).map(|(v, _)| v.clone()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let expires = self.expiry(ttl);
        self.open()?
            .map
            .insert(key.to_owned(), (value.to_vec(), expires));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.open()?.map.remove(key).is_some())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.open()?.map.contains_key(key))
    }

    async fn increment(&self, key: &str, amount: i64, ttl: Duration) -> Result<i64> {
        let expires = self.expiry(ttl);
        let mut inner = self.open()?;
        let entry = inner
            .map
            .entry(key.to_owned())
            .or_insert_with(|| (b"0".to_vec(), expires));
        let wrong = || {
            Error::new(
                ErrorKind::WrongType,
                format!("{key:?} does not hold an integer"),
            )
        };
        let current: i64 = std::str::from_utf8(&entry.0)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(wrong)?;
        let next = current.checked_add(amount).ok_or_else(wrong)?;
        entry.0 = next.to_string().into_bytes();
        Ok(next)
    }

    async fn clear(&self) -> Result<u64> {
        let mut inner = self.open()?;
        let n = inner.map.len() as u64;
        inner.map.clear();
        Ok(n)
    }

    async fn close(&self) -> Result<()> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Error::new(ErrorKind::Other, "lock poisoned"))?;
        inner.closed = true;
        inner.map.clear();
        Ok(())
    }

    async fn stats(&self) -> Result<StorageStats> {
        let mut stats = StorageStats::new("custom-map");
        stats.keys = Some(self.open()?.map.len() as u64);
        Ok(stats)
    }

    async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
        let mut inner = self.open()?;
        let unchanged = ops
            .iter()
            .all(|op| inner.map.get(op.key).map(|(v, _)| v.as_slice()) == op.expected);
        if !unchanged {
            return Ok(false);
        }
        for op in ops {
            let expires = self.expiry(op.ttl);
            inner
                .map
                .insert(op.key.to_owned(), (op.new_value.to_vec(), expires));
        }
        Ok(true)
    }
}

ratekeeper_testkit::storage_conformance_tests!(|clock: ManualClock| -> Arc<dyn Storage> {
    Arc::new(MapStore::new(clock))
});
