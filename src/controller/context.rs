//! What every reconcile shares: the client, the caches, the Event recorder,
//! the id allocator, and the bookkeeping kept per object between passes
//! (failures for backoff, our own status writes, deletions issued).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::Config;
use super::cache::Caches;
use super::events::{self, EventRetries, EventWorker};
use super::ids::IdAllocator;
use super::metrics::Metrics;
use super::plan::{Issued, PlannedEvent};
use crate::archive::Archive;
use crate::{Error, Result, Step, labels};

/// Shared by every reconcile.
pub(super) struct Context {
    client: Client,
    recorder: Recorder,
    /// Events the API server refused, retried by the worker `new` returns.
    event_retries: EventRetries,
    pub(super) ids: IdAllocator,
    pub(super) config: Config,
    pub(super) metrics: Arc<Metrics>,
    pub(super) caches: Arc<Caches>,
    /// Where finished runs and requests go before they leave the cluster.
    pub(super) archive: Option<Arc<Archive>>,
    /// Per object: consecutive failures (for backoff).
    failures: Mutex<HashMap<String, u32>>,
    /// Per object: the resourceVersion our last status write replaced; a
    /// cached copy still at that version predates the write.
    written: Mutex<HashMap<String, String>>,
    /// Per StageRun: the deletions issued for its children, until its
    /// caches show them (see `Issued`).
    issued: Mutex<HashMap<String, Issued>>,
}

impl Context {
    /// The context, and the worker that retries the Events it could not
    /// record (run it beside the controllers, stop it with them).
    pub(super) fn new(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
        caches: Arc<Caches>,
        archive: Option<Arc<Archive>>,
    ) -> (Self, EventWorker) {
        let reporter = Reporter {
            controller: labels::MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let ids = IdAllocator::new(
            Api::<ConfigMap>::namespaced(client.clone(), &config.state_namespace),
            config.id_configmap.clone(),
            archive.clone(),
            Some(caches.runs.clone()),
        );
        let recorder = Recorder::new(client.clone(), reporter);
        let (event_retries, worker) = events::queue(
            recorder.clone(),
            metrics.clone(),
            events::CAPACITY,
            events::RETRY_FOR,
        );
        let ctx = Context {
            recorder,
            event_retries,
            client,
            ids,
            config,
            metrics,
            caches,
            archive,
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            issued: Mutex::new(HashMap::new()),
        };
        (ctx, worker)
    }

    /// Records that the status of `obj` (as read) has just been written.
    pub(super) fn wrote<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        if let Some(rv) = obj.resource_version() {
            lock(&self.written).insert(key(obj), rv);
        }
    }

    /// True when `obj` is the copy our last status write replaced.
    pub(super) fn behind_own_write<K: Resource<DynamicType = ()>>(&self, obj: &K) -> bool {
        let mut written = lock(&self.written);
        let k = key(obj);
        match written.get(&k) {
            Some(rv) if Some(rv) == obj.resource_version().as_ref() => true,
            Some(_) => {
                written.remove(&k);
                false
            }
            None => false,
        }
    }

    /// Drops what is kept about an object that finished or went.
    pub(super) fn forget<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        let key = key(obj);
        lock(&self.failures).remove(&key);
        lock(&self.written).remove(&key);
        lock(&self.issued).remove(&key);
    }

    /// The deletions recently issued for `obj`'s children.
    pub(super) fn issued<K: Resource<DynamicType = ()>>(&self, obj: &K, now: Timestamp) -> Issued {
        let mut all = lock(&self.issued);
        let Some(issued) = all.get_mut(&key(obj)) else {
            return Issued::default();
        };
        issued.prune(now);
        issued.clone()
    }

    /// Remembers deletions just issued for `obj`'s children.
    pub(super) fn record_issued<K: Resource<DynamicType = ()>>(&self, obj: &K, done: Issued) {
        let mut all = lock(&self.issued);
        let issued = all.entry(key(obj)).or_default();
        issued.merge(done);
    }

    pub(super) fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Writes `status` to `obj` by server-side apply, with our field
    /// manager, on the precondition that `obj` is the version the decision
    /// was made on (a decision made on a stale read is refused with 409).
    pub(super) async fn write_status<K>(&self, obj: &K, status: &impl Serialize) -> Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let ns = obj.namespace().ok_or(Error::MissingField("namespace"))?;
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": { "resourceVersion": obj.resource_version() },
            "status": status,
        });
        self.api::<K>(&ns)
            .patch_status(
                &obj.name_any(),
                &PatchParams::apply(labels::MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
            .step("write the status")?;
        self.wrote(obj);
        Ok(())
    }

    /// Records an event; failures to record are logged, never fatal.
    pub(super) async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        planned: &PlannedEvent,
    ) {
        let reason = planned.reason;
        let ev = Event {
            type_: if planned.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(planned.note.clone()),
            action: reason.into(),
            secondary: None,
        };
        let reference = obj.object_ref(&());
        let Err(e) = self.recorder.publish(&ev, &reference).await else {
            return;
        };
        // The API server may be away for a moment (a restart): the record is
        // retried from the bounded queue for a while rather than lost.
        tracing::warn!(error = %e, reason, "could not record event yet; retrying");
        self.event_retries.retry(ev, reference);
    }

    pub(super) fn succeeded(&self, key: &str) {
        lock(&self.failures).remove(key);
    }

    /// Exponential backoff per object: 0.5s, 1s, 2s, ... up to 5 minutes.
    pub(super) fn backoff(&self, key: &str, err: &Error) -> Duration {
        if err.is_conflict() {
            // The object changed under us: read it again soon.
            return Duration::from_millis(200);
        }
        let mut failures = lock(&self.failures);
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let ms = 500u64.saturating_mul(1 << (*n - 1).min(10));
        Duration::from_millis(ms.min(300_000))
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// The safety resync of objects that need no timer.
const RESYNC: Duration = Duration::from_secs(300);

/// Requeue for objects that need no timer: a periodic safety resync.
pub(super) fn resync() -> Action {
    Action::requeue(RESYNC)
}

/// Requeue after `d`, held between 100 ms and the resync period: a timer
/// a year away (a deadline, a TTL) is checked again at the resync instead
/// of overflowing the scheduler's clock.
pub(super) fn requeue(d: Duration) -> Action {
    Action::requeue(d.clamp(Duration::from_millis(100), RESYNC))
}
