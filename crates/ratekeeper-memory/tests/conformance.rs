//! The whole conformance suite on the memory store.

use std::sync::Arc;

use ratekeeper_core::Storage;
use ratekeeper_memory::MemoryStorage;
use ratekeeper_testkit::ManualClock;

ratekeeper_testkit::storage_conformance_tests!(|clock: ManualClock| -> Arc<dyn Storage> {
    Arc::new(MemoryStorage::builder().clock(Arc::new(clock)).build())
});
