//! The controllers' wiring: one watch per kind feeds the caches; a router
//! per kind turns each cached change into the reconciles it concerns (a
//! pod's change into its StageRun's, a StageRun's into those of the requests
//! following it); both controllers run on those triggers until one stop.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::context::Context;
use super::metrics::Metrics;
use super::{Config, cache, cancelrequest, retention, stagerun};
use crate::archive::Archive;
use crate::crd::{CancelRequest, RequestPhase, StageRun};

/// Changes queued for reconciles, per controller, before the router waits.
const TRIGGER_BUFFER: usize = 4096;

type Trigger<K> = futures::channel::mpsc::Sender<ObjectRef<K>>;

/// Runs both controllers until `stop` completes.
pub(super) async fn run_controllers(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    archive: Option<Arc<Archive>>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let stop = futures::FutureExt::shared(Box::pin(stop));
    let (caches, feeds) = cache::caches(&client, &config.namespaces);
    let caches = Arc::new(caches);
    let concurrency = config.concurrency.max(1);
    let keep_finished = config.archive.as_ref().and_then(|a| a.keep_finished);
    let (ctx, event_worker) = Context::new(client, config, metrics, caches.clone(), archive);
    let ctx = Arc::new(ctx);
    let (run_tx, run_rx) = futures::channel::mpsc::channel(TRIGGER_BUFFER);
    let (request_tx, request_rx) = futures::channel::mpsc::channel(TRIGGER_BUFFER);
    let mut routers = tokio::task::JoinSet::new();
    // Stopped with the routers: a deposed leader retries no Event.
    routers.spawn(event_worker.run());
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
    // Retention is the leader's, like every write: stopped with the routers.
    if let (Some(archive), Some(keep)) = (ctx.archive.clone(), keep_finished) {
        routers.spawn(retention::run(ctx.clone(), archive, keep));
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

/// A Job's or pod's change concerns the StageRun it belongs to: a Job's
/// controller, or the controller of a pod's Job (found by the Job's uid in
/// the run's status, or through the cached Job).
async fn route_children<K>(
    mut feed: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
    ctx: Arc<Context>,
    mut runs: Trigger<StageRun>,
) where
    K: Resource<DynamicType = ()>,
{
    let run_of = |child: &K| -> Option<ObjectRef<StageRun>> {
        let ns = child.namespace()?;
        match cache::controller_of(child)? {
            ("StageRun", name, _) => Some(ObjectRef::new(name).within(&ns)),
            ("Job", name, uid) => {
                if let Some(run) = ctx.caches.runs.lookup(&cache::run_by_job_uid(uid)).first() {
                    return Some(ObjectRef::from_obj(run.as_ref()));
                }
                let job = ctx.caches.jobs.get(&ObjectRef::new(name).within(&ns))?;
                match cache::controller_of(job.as_ref())? {
                    ("StageRun", run, _) => Some(ObjectRef::new(run).within(&ns)),
                    _ => None,
                }
            }
            _ => None,
        }
    };
    while let Some(event) = feed.next().await {
        let child = match event {
            Ok(watcher::Event::Apply(c) | watcher::Event::Delete(c)) => c,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, kind = %K::kind(&()), "watch");
                continue;
            }
        };
        let Some(run) = run_of(&child) else {
            continue;
        };
        if ctx.caches.runs.get(&run).is_some_and(|r| !r.is_finished())
            && !send(&mut runs, run).await
        {
            return;
        }
    }
}
