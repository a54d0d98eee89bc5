//! A fixed clock for the decision tests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The fixed "now" of every test.
pub fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

/// `t0()` shifted by `secs` seconds.
pub fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

/// `at(secs)` as a Kubernetes time.
pub fn time(secs: i64) -> Time {
    Time(at(secs))
}
