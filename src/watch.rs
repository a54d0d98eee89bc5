//! How every watch of the process retries.

use kube::runtime::watcher;

/// Watches retry quickly: a watch down after an API server restart is the
/// controller not seeing new work, or the REST API answering from a stale
/// cache (kube-runtime's default backoff climbs to 30 s). With jitter (up
/// to the delay again) a watch is retried at most 4 s apart, so new objects
/// are seen within 5 s of the API server's return.
pub fn backoff() -> watcher::ExponentialBackoff {
    builder().into()
}

/// The same delays for any other call retried while the API server is away.
pub fn retry_delays() -> impl Iterator<Item = std::time::Duration> {
    backon::BackoffBuilder::build(builder())
}

fn builder() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(250))
        .with_max_delay(std::time::Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}
