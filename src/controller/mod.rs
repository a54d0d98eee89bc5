//! The controller: runs StageRuns' jobs and carries out CancelRequests.
//!
//! One watch per kind feeds the caches (`cache.rs`) that every reconcile
//! reads; a router turns each cached change into the reconciles it concerns
//! (a pod's change into its StageRun's, a StageRun's into those of the
//! requests following it). Both controllers share one stop: a signal, or
//! the loss of the leader Lease.

pub mod cache;
pub mod cancelrequest;
pub mod ids;
pub mod metrics;
pub mod plan;
pub mod request_plan;
pub mod stagerun;
#[cfg(test)]
mod test_clock;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;

use crate::crd::{CancelRequest, RequestPhase, StageRun};
use crate::{Error, labels};

/// Settings of a controller instance.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace to watch; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Namespace of the ConfigMap that holds the id counters.
    pub state_namespace: String,
    /// Name of that ConfigMap.
    pub id_configmap: String,
    /// Wait past a grace period before force-deleting pods.
    pub force_margin: Duration,
    /// Act only while holding this Lease (in `state_namespace`); `None` when
    /// a single instance runs.
    pub leader_election: Option<LeaderElection>,
    /// Where to serve /metrics and /healthz; not served when `None`.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Reconciles run at once, per controller.
    pub concurrency: u16,
}

/// Reconciles run at once per controller unless configured: enough to keep
/// the API server busy during a bulk cancel, few enough to bound memory.
pub const DEFAULT_CONCURRENCY: u16 = 32;

/// Leader election settings: with replicas > 1, one instance acts at a time.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_name: String,
    /// This instance's name in the Lease (the pod name in a cluster).
    pub identity: String,
    /// How long the Lease holds without renewal.
    pub lease_duration: Duration,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub ids: ids::IdAllocator,
    pub config: Config,
    pub metrics: Arc<metrics::Metrics>,
    pub caches: Arc<cache::Caches>,
    /// Per object: consecutive failures (for backoff).
    failures: Mutex<HashMap<String, u32>>,
    /// Per object: the resourceVersion our last status write replaced; a
    /// cached copy still at that version predates the write.
    written: Mutex<HashMap<String, String>>,
    /// Per StageRun: the deletions issued for its children, until its
    /// caches show them (see `plan::Issued`).
    issued: Mutex<HashMap<String, plan::Issued>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        metrics: Arc<metrics::Metrics>,
        caches: Arc<cache::Caches>,
    ) -> Self {
        let reporter = Reporter {
            controller: labels::MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let ids = ids::IdAllocator::new(
            Api::<ConfigMap>::namespaced(client.clone(), &config.state_namespace),
            config.id_configmap.clone(),
        );
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            ids,
            config,
            metrics,
            caches,
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// Records that the status of `obj` (as read) has just been written.
    fn wrote<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        if let Some(rv) = obj.resource_version() {
            lock(&self.written).insert(key(obj), rv);
        }
    }

    /// True when `obj` is the copy our last status write replaced.
    fn behind_own_write<K: Resource<DynamicType = ()>>(&self, obj: &K) -> bool {
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
    fn forget<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        let key = key(obj);
        lock(&self.failures).remove(&key);
        lock(&self.written).remove(&key);
        lock(&self.issued).remove(&key);
    }

    /// The deletions recently issued for `obj`'s children.
    fn issued<K: Resource<DynamicType = ()>>(&self, obj: &K, now: Timestamp) -> plan::Issued {
        let mut all = lock(&self.issued);
        let Some(issued) = all.get_mut(&key(obj)) else {
            return plan::Issued::default();
        };
        issued.prune(now);
        issued.clone()
    }

    /// Remembers deletions just issued for `obj`'s children.
    fn record_issued<K: Resource<DynamicType = ()>>(&self, obj: &K, done: plan::Issued) {
        let mut all = lock(&self.issued);
        let issued = all.entry(key(obj)).or_default();
        issued.merge(done);
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Records an event; failures to record are logged, never fatal.
    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        let reference = obj.object_ref(&());
        let Err(e) = self.recorder.publish(&ev, &reference).await else {
            return;
        };
        // The API server may be away for a moment (a restart): the record is
        // retried in the background for a while rather than lost.
        tracing::warn!(error = %e, reason, "could not record event yet; retrying");
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + EVENT_RETRY_FOR;
            for delay in crate::watch::retry_delays() {
                tokio::time::sleep(delay).await;
                match recorder.publish(&ev, &reference).await {
                    Ok(()) => return,
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        tracing::warn!(error = %e, reason = %ev.reason, "could not record event");
                        return;
                    }
                    Err(_) => {}
                }
            }
        });
    }

    fn succeeded(&self, key: &str) {
        lock(&self.failures).remove(key);
    }

    /// Exponential backoff per object: 0.5s, 1s, 2s, ... up to 5 minutes.
    fn backoff(&self, key: &str, err: &Error) -> Duration {
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

/// How long an Event the API server refused is retried.
const EVENT_RETRY_FOR: Duration = Duration::from_secs(120);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Runs the controllers until a termination signal; with leader election,
/// only while this instance holds the Lease. Losing the Lease stops both
/// controllers at once, fails the health check and returns an error (so
/// that the process exits and its pod restarts to stand for election again);
/// a clean stop releases the Lease so that a standby takes over at once.
pub async fn run(client: Client, config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::new());
    if let Some(addr) = config.metrics_address {
        // Served from the start, so that a standby answers health checks too.
        let listening = metrics::serve(metrics.clone(), addr, crate::shutdown::signal());
        tokio::spawn(async move {
            if let Err(e) = listening.await {
                tracing::error!(error = %e, "cannot serve metrics");
            }
        });
    }
    let Some(election) = config.leader_election.clone() else {
        run_controllers(client, config, metrics, crate::shutdown::signal()).await;
        return Ok(());
    };
    let duration = election.lease_duration.as_secs().max(2);
    let mut signal = Box::pin(crate::shutdown::signal());
    // A standby rides out an API server that is away (restarting, say): it
    // retries, as the watches do, instead of exiting into a restart loop.
    let build = || {
        LeaseManagerBuilder::new(client.clone(), &election.lease_name)
            .with_namespace(&config.state_namespace)
            .with_identity(&election.identity)
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            .build()
    };
    let mut retry = crate::watch::retry_delays();
    let mut manager = loop {
        match build().await {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the leader Lease yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(retry.next().unwrap_or_default()) => {}
                    _ = &mut signal => return Ok(()),
                }
            }
        }
    };
    metrics.set_leader(&election.lease_name, false);
    tracing::info!(lease = %election.lease_name, identity = %election.identity, "waiting to lead");
    // The Lease manager looks again only when the holder's term would end;
    // watching the Lease wakes a standby as soon as the holder releases it.
    let released = Arc::new(tokio::sync::Notify::new());
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.state_namespace);
    let release_watch = tokio::spawn(watch_releases(
        leases.clone(),
        election.lease_name.clone(),
        released.clone(),
    ));
    let _release_watch = AbortOnDrop(release_watch);
    loop {
        tokio::select! {
            leading = manager.changed() => match leading {
                Ok(true) => break,
                Ok(false) => retry = crate::watch::retry_delays(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the leader Lease; retrying");
                    tokio::time::sleep(retry.next().unwrap_or_default()).await;
                }
            },
            _ = released.notified() => {
                // The manager waits out the term it last read; a new one
                // reads the released Lease now and takes it.
                match build().await {
                    Ok(m) => manager = m,
                    Err(e) => tracing::warn!(error = %e, "cannot read the released Lease"),
                }
            }
            _ = &mut signal => {
                // The manager may have just taken the Lease.
                release_if_held(&leases, &election.lease_name, &election.identity).await;
                return Ok(());
            }
        }
    }
    drop(_release_watch);
    let (leading, lease_task) = manager.watch().await;
    tracing::info!(identity = %election.identity, "leading");
    metrics.set_leader(&election.lease_name, true);
    let mut watching = leading.clone();
    let lost_leadership = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = lost_leadership.clone();
    let health = metrics.clone();
    let stop = async move {
        tokio::select! {
            _ = watching.wait_for(|leader| !*leader) => {
                // Stop acting at once, and say so to the kubelet.
                health.set_healthy(false);
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::error!("lost the leader Lease; stopping");
            }
            _ = signal => {}
        }
    };
    run_controllers(client, config, metrics, stop).await;
    // Dropping the last receiver makes the Lease manager release the Lease.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not release the leader Lease"),
        Ok(Err(e)) => tracing::warn!(error = %e, "lease task failed"),
        Err(_) => tracing::warn!("timed out releasing the leader Lease"),
    }
    // Whatever the manager managed, a Lease still naming this instance is
    // released here, so that a standby takes over now, not when the term ends.
    release_if_held(&leases, &election.lease_name, &election.identity).await;
    if lost_leadership.load(std::sync::atomic::Ordering::SeqCst) {
        anyhow::bail!("lost the leader Lease {}", election.lease_name);
    }
    Ok(())
}

/// Clears the Lease's holder if it is `identity` (a resourceVersion
/// precondition keeps a newer holder's Lease untouched).
async fn release_if_held(api: &Api<Lease>, name: &str, identity: &str) {
    let lease = match api.get_opt(name).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the leader Lease to release it");
            return;
        }
    };
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref());
    if holder != Some(identity) {
        return;
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": lease.resource_version()},
        "spec": {"holderIdentity": null, "acquireTime": null, "renewTime": null},
    });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => tracing::info!("released the leader Lease"),
        Err(e) => tracing::warn!(error = %e, "could not release the leader Lease"),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Notifies whenever the Lease `name` has no holder.
async fn watch_releases(api: Api<Lease>, name: String, released: Arc<tokio::sync::Notify>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut leases = std::pin::pin!(
        watcher::watcher(api, config)
            .backoff(crate::watch::backoff())
            .applied_objects()
    );
    while let Some(lease) = leases.next().await {
        if let Ok(lease) = lease
            && lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                .is_none_or(str::is_empty)
        {
            released.notify_one();
        }
    }
}

/// Changes queued for reconciles, per controller, before the router waits.
const TRIGGER_BUFFER: usize = 4096;

type Trigger<K> = futures::channel::mpsc::Sender<ObjectRef<K>>;

/// Runs both controllers until `stop` completes.
async fn run_controllers(
    client: Client,
    config: Config,
    metrics: Arc<metrics::Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let stop = futures::FutureExt::shared(Box::pin(stop));
    let (caches, feeds) = cache::caches(&client, config.namespace.as_deref());
    let caches = Arc::new(caches);
    let concurrency = config.concurrency.max(1);
    let ctx = Arc::new(Context::new(client, config, metrics, caches.clone()));
    let (run_tx, run_rx) = futures::channel::mpsc::channel(TRIGGER_BUFFER);
    let (request_tx, request_rx) = futures::channel::mpsc::channel(TRIGGER_BUFFER);
    let mut routers = tokio::task::JoinSet::new();
    routers.spawn(route_runs(
        feeds.runs,
        ctx.clone(),
        run_tx.clone(),
        request_tx.clone(),
    ));
    routers.spawn(route_requests(
        feeds.requests,
        ctx.clone(),
        run_tx.clone(),
        request_tx,
    ));
    routers.spawn(route_children(feeds.jobs, ctx.clone(), run_tx.clone()));
    routers.spawn(route_children(feeds.pods, ctx.clone(), run_tx));

    // No reconcile before every cache holds its first list: an empty pod
    // cache would read as "no pod left". Awaited here, once, by one task:
    // a store's readiness wakes a single waiter.
    tokio::select! {
        _ = caches.ready() => {}
        _ = stop.clone() => return,
    }
    let settings = controller::Config::default().concurrency(concurrency);
    let request_controller = Controller::for_stream(
        futures::stream::pending::<Result<CancelRequest, watcher::Error>>(),
        caches.requests.store(),
    )
    .with_config(settings.clone())
    .reconcile_on(request_rx)
    .graceful_shutdown_on(stop.clone())
    .run(
        cancelrequest::reconcile,
        cancelrequest::error_policy,
        ctx.clone(),
    )
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "cancelrequest reconcile");
        }
    });
    let run_controller = Controller::for_stream(
        futures::stream::pending::<Result<StageRun, watcher::Error>>(),
        caches.runs.store(),
    )
    .with_config(settings)
    .reconcile_on(run_rx)
    .graceful_shutdown_on(stop)
    .run(stagerun::reconcile, stagerun::error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "stagerun reconcile");
        }
    });

    tracing::info!(concurrency, "controller started");
    futures::join!(request_controller, run_controller);
    routers.abort_all();
    tracing::info!("controller stopped");
}

async fn send<K: Resource>(tx: &mut Trigger<K>, obj: ObjectRef<K>) -> bool {
    futures::SinkExt::send(tx, obj).await.is_ok()
}

/// Sends every reference collected during a (re)list; false once the
/// controller has stopped listening.
async fn send_all<K: Resource>(tx: &mut Trigger<K>, objs: &mut Vec<ObjectRef<K>>) -> bool {
    for obj in objs.drain(..) {
        if !send(tx, obj).await {
            return false;
        }
    }
    true
}

/// A StageRun's change concerns itself (unless finished) and the requests
/// following it.
async fn route_runs(
    mut feed: impl futures::Stream<Item = Result<watcher::Event<StageRun>, watcher::Error>> + Unpin,
    ctx: Arc<Context>,
    mut runs: Trigger<StageRun>,
    mut requests: Trigger<CancelRequest>,
) {
    let mut initial = Vec::new();
    while let Some(event) = feed.next().await {
        let run = match event {
            Ok(watcher::Event::Init) => {
                initial.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(run)) => {
                if !run.is_finished() {
                    initial.push(ObjectRef::from_obj(&run));
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                if !send_all(&mut runs, &mut initial).await {
                    return;
                }
                continue;
            }
            Ok(watcher::Event::Apply(run)) => {
                if run.is_finished() {
                    ctx.forget(&run);
                } else if !send(&mut runs, ObjectRef::from_obj(&run)).await {
                    return;
                }
                run
            }
            Ok(watcher::Event::Delete(run)) => {
                ctx.forget(&run);
                run
            }
            Err(e) => {
                tracing::warn!(error = %e, "StageRun watch");
                continue;
            }
        };
        let following = ctx
            .caches
            .requests
            .lookup(&cache::requests_by_target(&run.uid().unwrap_or_default()));
        for req in following {
            if !send(&mut requests, ObjectRef::from_obj(req.as_ref())).await {
                return;
            }
        }
    }
}

/// A CancelRequest's change concerns itself and the StageRuns it has newly
/// accepted: a run learns of its cancel once. (Triggering every Canceling
/// target on every write would make a bulk request's progress cost the
/// square of its size: each target that ends rewrites the request.)
async fn route_requests(
    mut feed: impl futures::Stream<Item = Result<watcher::Event<CancelRequest>, watcher::Error>> + Unpin,
    ctx: Arc<Context>,
    mut runs: Trigger<StageRun>,
    mut requests: Trigger<CancelRequest>,
) {
    use std::collections::{HashMap, HashSet};
    let mut initial = Vec::new();
    // Per request in progress: the targets its StageRuns were told about.
    let mut routed: HashMap<ObjectRef<CancelRequest>, HashSet<String>> = HashMap::new();
    while let Some(event) = feed.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                initial.clear();
                // Whatever was missed while the watch was down is told again.
                routed.clear();
            }
            // Finished requests too: their TTL timers start here.
            Ok(watcher::Event::InitApply(req)) => initial.push(ObjectRef::from_obj(&req)),
            Ok(watcher::Event::InitDone) => {
                if !send_all(&mut requests, &mut initial).await {
                    return;
                }
            }
            Ok(watcher::Event::Apply(req)) => {
                let key = ObjectRef::from_obj(&req);
                if !send(&mut requests, key.clone()).await {
                    return;
                }
                let ns = req.namespace().unwrap_or_default();
                let canceling: Vec<&crate::crd::CancelTargetStatus> = req
                    .status
                    .iter()
                    .filter(|s| s.phase == Some(RequestPhase::InProgress))
                    .flat_map(|s| s.targets.iter())
                    .filter(|t| t.outcome == crate::crd::TargetOutcome::Canceling)
                    .collect();
                if canceling.is_empty() {
                    routed.remove(&key);
                    continue;
                }
                let told = routed.entry(key).or_default();
                for t in canceling {
                    if told.insert(t.uid.clone())
                        && !send(&mut runs, ObjectRef::new(&t.name).within(&ns)).await
                    {
                        return;
                    }
                }
            }
            Ok(watcher::Event::Delete(req)) => {
                routed.remove(&ObjectRef::from_obj(&req));
                ctx.forget(&req);
            }
            Err(e) => tracing::warn!(error = %e, "CancelRequest watch"),
        }
    }
}

/// A Job's or pod's change concerns the StageRun it belongs to.
async fn route_children<K>(
    mut feed: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
    ctx: Arc<Context>,
    mut runs: Trigger<StageRun>,
) where
    K: Resource<DynamicType = ()>,
{
    while let Some(event) = feed.next().await {
        let child = match event {
            Ok(watcher::Event::Apply(c) | watcher::Event::Delete(c)) => c,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, kind = %K::kind(&()), "watch");
                continue;
            }
        };
        let (Some(name), Some(ns)) = (
            child.annotations().get(labels::STAGERUN_NAME),
            child.namespace(),
        ) else {
            continue;
        };
        let run = ObjectRef::<StageRun>::new(name).within(&ns);
        if ctx.caches.runs.get(&run).is_some_and(|r| !r.is_finished())
            && !send(&mut runs, run).await
        {
            return;
        }
    }
}

/// Requeue for objects that need no timer: a periodic safety resync.
fn resync() -> Action {
    Action::requeue(Duration::from_secs(300))
}
