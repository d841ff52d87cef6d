//! The whole conformance suite on real Redis: a standalone server (its
//! functions, and its scripts as a user allowed no functions), a 3-master
//! Cluster and a Sentinel group.

mod common;

mod standalone {
    ratekeeper_testkit::storage_conformance_tests!(
        super::common::RedisHarness::standalone(),
        model_cases = 200
    );
}

mod standalone_scripts {
    ratekeeper_testkit::storage_conformance_tests!(
        super::common::RedisHarness::standalone_scripts(),
        model_cases = 100
    );
}

mod cluster {
    ratekeeper_testkit::storage_conformance_tests!(
        super::common::RedisHarness::cluster(),
        model_cases = 60
    );
}

mod sentinel {
    ratekeeper_testkit::storage_conformance_tests!(
        super::common::RedisHarness::sentinel(),
        model_cases = 60
    );
}
