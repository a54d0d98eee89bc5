//! Prometheus metrics of the controller, named like controller-runtime's,
//! served with a health check on `--metrics-address`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use warp::Filter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Reply;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabels {
    name: String,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_time: Family<ControllerLabels, Histogram>,
    cancel_duration: Family<ReasonLabels, Histogram>,
    leader: Family<LeaseLabels, Gauge>,
    event_queue: Gauge,
    events_dropped: Family<ReasonLabels, Counter>,
    archived: Counter,
    archive_errors: Counter,
    archive_lag: Gauge,
    /// False once this instance must be restarted (it lost its Lease).
    healthy: std::sync::atomic::AtomicBool,
}

fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn cancel_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 14))
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
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_time = Family::<ControllerLabels, Histogram>::new_with_constructor(
            reconcile_histogram as fn() -> Histogram,
        );
        let cancel_duration = Family::<ReasonLabels, Histogram>::new_with_constructor(
            cancel_histogram as fn() -> Histogram,
        );
        registry.register(
            "controller_runtime_reconcile",
            "Reconciliations per controller and result",
            reconciles.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Time spent in one reconciliation, per controller",
            reconcile_time.clone(),
        );
        registry.register(
            "cancel_operator_cancel_duration_seconds",
            "From a cancel being requested to its StageRun having no pod left, per reason",
            cancel_duration.clone(),
        );
        let leader = Family::<LeaseLabels, Gauge>::default();
        registry.register(
            "leader_election_master_status",
            "1 while this instance holds the leader Lease, 0 while it stands by (absent before it has read the Lease)",
            leader.clone(),
        );
        let event_queue = Gauge::default();
        registry.register(
            "cancel_operator_event_retry_queue",
            "Events the API server refused that wait to be recorded again",
            event_queue.clone(),
        );
        let events_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "cancel_operator_events_dropped",
            "Events never recorded, per reason: queue_full, expired (retried too long), stopped (the controllers stopped)",
            events_dropped.clone(),
        );
        let archived = Counter::default();
        registry.register(
            "cancel_operator_archived",
            "Finished StageRuns committed to the archive by retention (then deleted from the cluster)",
            archived.clone(),
        );
        let archive_errors = Counter::default();
        registry.register(
            "cancel_operator_archive_errors",
            "Retention passes that failed (archive unavailable, or the API server); retried",
            archive_errors.clone(),
        );
        let archive_lag = Gauge::default();
        registry.register(
            "cancel_operator_archive_lag_seconds",
            "How long past its retention the oldest finished StageRun still in the cluster is (0: none waits)",
            archive_lag.clone(),
        );
        Metrics {
            registry,
            archived,
            archive_errors,
            archive_lag,
            leader,
            event_queue,
            events_dropped,
            reconciles,
            reconcile_time,
            cancel_duration,
            healthy: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Whether this instance leads through Lease `name` (or stands by,
    /// having read it).
    pub fn set_leader(&self, name: &str, leading: bool) {
        self.leader
            .get_or_create(&LeaseLabels {
                name: name.to_string(),
            })
            .set(i64::from(leading));
    }

    /// How many refused Events wait to be recorded again.
    pub(super) fn event_queued(&self, waiting: usize) {
        self.event_queue
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// Counts Events dropped unrecorded, for `reason`.
    pub(super) fn events_dropped(&self, reason: &'static str, n: usize) {
        self.events_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    #[cfg(test)]
    pub(super) fn dropped_events(&self, reason: &'static str) -> u64 {
        self.events_dropped
            .get_or_create(&ReasonLabels { reason })
            .get()
    }

    #[cfg(test)]
    pub(super) fn queued_events(&self) -> i64 {
        self.event_queue.get()
    }

    /// Counts runs committed to the archive.
    pub(super) fn archived(&self, n: usize) {
        self.archived.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// Counts a failed retention pass.
    pub(super) fn archive_failed(&self) {
        self.archive_errors.inc();
    }

    /// How long past its retention the oldest waiting run is.
    pub(super) fn archive_lag(&self, lag: Duration) {
        self.archive_lag
            .set(i64::try_from(lag.as_secs()).unwrap_or(i64::MAX));
    }

    /// Makes /healthz fail from now on.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy
            .store(healthy, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts and times one reconciliation.
    pub fn reconciled(&self, controller: &'static str, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        self.reconcile_time
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
    }

    /// Records a completed cancel (`timeout`: it was a deadline).
    pub fn cancelled(&self, timeout: bool, took: Duration) {
        let reason = if timeout {
            crate::crd::REASON_DEADLINE
        } else {
            "CancelRequest"
        };
        self.cancel_duration
            .get_or_create(&ReasonLabels { reason })
            .observe(took.as_secs_f64());
    }

    pub fn encode(&self) -> String {
        crate::telemetry::encode_metrics(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until `stop` completes.
pub async fn serve(
    metrics: Arc<Metrics>,
    addr: SocketAddr,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "metrics listening");
    let health_of = metrics.clone();
    let scrape = warp::path!("metrics").and(warp::get()).map(move || {
        let mut r = warp::reply::with_status(metrics.encode(), StatusCode::OK).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    });
    let health = warp::path!("healthz").and(warp::get()).map(move || {
        if health_of.is_healthy() {
            "ok".into_response()
        } else {
            warp::reply::with_status("lost the leader Lease", StatusCode::SERVICE_UNAVAILABLE)
                .into_response()
        }
    });
    let routes = scrape
        .or(health)
        .unify()
        .recover(|_| async {
            Ok::<_, Infallible>(
                warp::reply::with_status("not found", StatusCode::NOT_FOUND).into_response(),
            )
        })
        .unify();
    warp::serve(routes)
        .incoming(listener)
        .graceful(stop)
        .run()
        .await;
    Ok(())
}
