//! Events the API server refused are retried by one worker from one
//! bounded queue. During an outage a bulk cancel's Events wait there in
//! order (at most [`CAPACITY`]; more are dropped and counted) instead of
//! each starting a retry loop of its own that would all fire when the API
//! server returns. The worker runs with the controllers: when they stop
//! (leadership lost, shutdown) the queue goes with them, so that a deposed
//! leader records nothing more.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::metrics::Metrics;

/// Events waiting for the API server, at most.
pub(super) const CAPACITY: usize = 4096;

/// How long a refused Event is retried before it is dropped.
pub(super) const RETRY_FOR: Duration = Duration::from_secs(120);

struct Refused {
    event: Event,
    reference: ObjectReference,
    since: Instant,
}

/// The queue's sending side, held by the reconciles' context.
pub(super) struct EventRetries {
    tx: mpsc::Sender<Refused>,
    metrics: Arc<Metrics>,
}

/// The queue's worker: retries each Event in turn until it is recorded or
/// [`RETRY_FOR`] has passed since it was refused.
pub(super) struct EventWorker {
    rx: mpsc::Receiver<Refused>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    retry_for: Duration,
}

/// A queue of `capacity` for Events `recorder` could not record.
pub(super) fn queue(
    recorder: Recorder,
    metrics: Arc<Metrics>,
    capacity: usize,
    retry_for: Duration,
) -> (EventRetries, EventWorker) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        EventRetries {
            tx,
            metrics: metrics.clone(),
        },
        EventWorker {
            rx,
            recorder,
            metrics,
            retry_for,
        },
    )
}

impl EventRetries {
    /// Queues a refused Event; drops it (counted) when the queue is full or
    /// its worker has stopped.
    pub(super) fn retry(&self, event: Event, reference: ObjectReference) {
        let refused = Refused {
            event,
            reference,
            since: Instant::now(),
        };
        match self.tx.try_send(refused) {
            Ok(()) => self.metrics.event_queued(self.queued()),
            Err(mpsc::error::TrySendError::Full(r)) => {
                tracing::warn!(reason = %r.event.reason, "event retry queue full; event dropped");
                self.metrics.events_dropped("queue_full", 1);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.metrics.events_dropped("stopped", 1),
        }
    }

    fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

impl EventWorker {
    /// Runs until the context is gone; dropping it (the controllers stop)
    /// drops what is still queued, counted.
    pub(super) async fn run(mut self) {
        while let Some(refused) = self.rx.recv().await {
            self.metrics.event_queued(self.rx.len());
            self.deliver(refused).await;
        }
    }

    async fn deliver(&self, r: Refused) {
        for delay in crate::watch::retry_delays() {
            if r.since.elapsed() >= self.retry_for {
                tracing::warn!(reason = %r.event.reason, "could not record event; dropped");
                self.metrics.events_dropped("expired", 1);
                return;
            }
            tokio::time::sleep(delay).await;
            if self.recorder.publish(&r.event, &r.reference).await.is_ok() {
                return;
            }
        }
    }
}

impl Drop for EventWorker {
    fn drop(&mut self) {
        let left = self.rx.len();
        if left > 0 {
            self.metrics.events_dropped("stopped", left);
        }
        self.metrics.event_queued(0);
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::events::{EventType, Reporter};

    use super::*;

    /// A recorder whose API server refuses every connection.
    fn unreachable_recorder() -> Recorder {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        Recorder::new(
            client,
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        )
    }

    fn event() -> (Event, ObjectReference) {
        let event = Event {
            type_: EventType::Normal,
            reason: "Canceling".into(),
            note: None,
            action: "Canceling".into(),
            secondary: None,
        };
        let reference = ObjectReference {
            name: Some("foo-1-dev".into()),
            namespace: Some("demo".into()),
            ..ObjectReference::default()
        };
        (event, reference)
    }

    #[tokio::test]
    async fn the_queue_is_bounded_and_goes_with_its_worker() {
        let metrics = Arc::new(Metrics::new());
        let (retries, worker) = queue(unreachable_recorder(), metrics.clone(), 2, RETRY_FOR);
        for _ in 0..3 {
            let (e, r) = event();
            retries.retry(e, r);
        }
        assert_eq!(metrics.queued_events(), 2);
        assert_eq!(metrics.dropped_events("queue_full"), 1);
        // The controllers stop: what waits is dropped, and nothing more is queued.
        drop(worker);
        assert_eq!(metrics.dropped_events("stopped"), 2);
        assert_eq!(metrics.queued_events(), 0);
        let (e, r) = event();
        retries.retry(e, r);
        assert_eq!(metrics.dropped_events("stopped"), 3);
    }

    #[tokio::test]
    async fn an_event_refused_for_too_long_is_dropped() {
        let metrics = Arc::new(Metrics::new());
        let retry_for = Duration::from_secs(1);
        let (retries, worker) = queue(unreachable_recorder(), metrics.clone(), 8, retry_for);
        for _ in 0..2 {
            let (e, r) = event();
            retries.retry(e, r);
        }
        let started = Instant::now();
        let running = tokio::spawn(worker.run());
        tokio::time::timeout(Duration::from_secs(60), async {
            while metrics.dropped_events("expired") < 2 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("both events expire");
        assert!(started.elapsed() >= retry_for);
        assert_eq!(metrics.queued_events(), 0);
        running.abort();
    }
}
