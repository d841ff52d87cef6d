//! The whole conformance suite on the memory store.

use std::sync::Arc;

use ratelimit_core::Storage;
use ratelimit_memory::MemoryStorage;
use ratelimit_testkit::ManualClock;

ratelimit_testkit::storage_conformance_tests!(|clock: ManualClock| -> Arc<dyn Storage> {
    Arc::new(MemoryStorage::builder().clock(Arc::new(clock)).build())
});
