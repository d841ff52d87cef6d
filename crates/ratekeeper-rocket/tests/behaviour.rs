//! The shared HTTP behaviour suite on a real Rocket server, protected by the
//! every-route fairing: over the memory store and over SQLite.

mod common;

mod memory {
    ratekeeper_testkit::http_behaviour_tests!(super::common::RocketHarness { sqlite: false });
}

mod sqlite {
    ratekeeper_testkit::http_behaviour_tests!(super::common::RocketHarness { sqlite: true });
}
