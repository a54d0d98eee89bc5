//! The sidecar's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: String,
}

/// Prometheus metrics of the sidecar.
pub struct Metrics {
    registry: Registry,
    requests: MetricFamily<RequestLabels, Counter>,
    latency: MetricFamily<RouteLabels, Histogram>,
    cancel_requests: MetricFamily<ApiLabels, Counter>,
    cached: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_archive(None)
    }

    /// The metrics, with the archive's queries among them when there is one.
    pub fn with_archive(archive: Option<&crate::archive::Archive>) -> Self {
        let mut registry = Registry::default();
        if let Some(archive) = archive {
            archive.register_metrics(&mut registry);
        }
        let requests = MetricFamily::<RequestLabels, Counter>::default();
        let latency = MetricFamily::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let cancel_requests = MetricFamily::<ApiLabels, Counter>::default();
        let cached = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status code",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "cancel_requests_created",
            "CancelRequests written, by the API that asked",
            cancel_requests.clone(),
        );
        registry.register(
            "stageruns_cached",
            "StageRuns in the watch cache",
            cached.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            cancel_requests,
            cached,
        }
    }

    /// Counts one answered request and its latency, by route.
    pub(crate) fn observe(&self, route: &str, code: u16, elapsed: std::time::Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition text, with the cache size as of now.
    pub(crate) fn encode(&self, cached: usize) -> String {
        self.cached.set(cached as i64);
        self.encode_registry()
    }

    fn encode_registry(&self) -> String {
        crate::telemetry::encode_metrics(&self.registry)
    }

    /// Counts a CancelRequest written on behalf of `api`.
    pub fn cancel_request_created(&self, api: &str) {
        self.cancel_requests
            .get_or_create(&ApiLabels {
                api: api.to_string(),
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
