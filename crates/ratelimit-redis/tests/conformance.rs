//! The whole conformance suite on real Redis: a standalone server, a
//! 3-master Cluster and a Sentinel group.

mod common;

mod standalone {
    ratelimit_testkit::storage_conformance_tests!(
        super::common::RedisHarness::standalone(),
        model_cases = 200
    );
}

mod cluster {
    ratelimit_testkit::storage_conformance_tests!(
        super::common::RedisHarness::cluster(),
        model_cases = 60
    );
}

mod sentinel {
    ratelimit_testkit::storage_conformance_tests!(
        super::common::RedisHarness::sentinel(),
        model_cases = 60
    );
}
