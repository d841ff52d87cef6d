//! The shared HTTP behaviour suite on a real actix-web server (two workers):
//! over the memory store (decided without a future) and over SQLite.
#![allow(clippy::expect_used, reason = "test harness set-up")]

mod common;

mod memory {
    ratekeeper_testkit::http_behaviour_tests!(super::common::Actix { sqlite: false });
}

mod sqlite {
    ratekeeper_testkit::http_behaviour_tests!(super::common::Actix { sqlite: true });
}
