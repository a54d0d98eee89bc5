//! The controller: runs StageRuns' jobs and carries out CancelRequests.

pub mod cancelrequest;
pub mod ids;
pub mod metrics;
pub mod plan;
pub mod stagerun;
#[cfg(test)]
mod test_clock;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
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
}

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
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Arc<metrics::Metrics>) -> Self {
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
            failures: Mutex::new(HashMap::new()),
        }
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
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not record event");
        }
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Exponential backoff per object: 0.5s, 1s, 2s, ... up to 5 minutes.
    fn backoff(&self, key: &str, err: &Error) -> Duration {
        if err.is_conflict() {
            // The object changed under us: read it again soon.
            return Duration::from_millis(200);
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let ms = 500u64.saturating_mul(1 << (*n - 1).min(10));
        Duration::from_millis(ms.min(300_000))
    }
}

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

fn watched<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controllers until a termination signal; with leader election,
/// only while this instance holds the Lease, and fails when it loses it (so
/// that its pod restarts and stands for election again).
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
    let manager = LeaseManagerBuilder::new(client.clone(), &election.lease_name)
        .with_namespace(&config.state_namespace)
        .with_identity(&election.identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    tracing::info!(lease = %election.lease_name, identity = %election.identity, "waiting to lead");
    let mut signal = Box::pin(crate::shutdown::signal());
    let became_leader = tokio::select! {
        r = leading.wait_for(|leader| *leader) => Some(r.map(|_| ())),
        _ = &mut signal => None,
    };
    match became_leader {
        Some(r) => r?,
        None => {
            drop(leading);
            let _ = lease_task.await;
            return Ok(());
        }
    }
    tracing::info!(identity = %election.identity, "leading");
    let mut watching = leading.clone();
    let lost = async move {
        let _ = watching.wait_for(|leader| !*leader).await;
    };
    let lost_leadership = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = lost_leadership.clone();
    let stop = async move {
        tokio::select! {
            _ = lost => flag.store(true, std::sync::atomic::Ordering::SeqCst),
            _ = signal => {}
        }
    };
    run_controllers(client, config, metrics, stop).await;
    // Releases the Lease on a clean stop.
    drop(leading);
    let _ = lease_task.await;
    if lost_leadership.load(std::sync::atomic::Ordering::SeqCst) {
        anyhow::bail!("lost the leader Lease {}", election.lease_name);
    }
    Ok(())
}

/// Runs both controllers until `stop` completes.
async fn run_controllers(
    client: Client,
    config: Config,
    metrics: Arc<metrics::Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let stop = futures::FutureExt::shared(Box::pin(stop));
    let ns = config.namespace.clone();
    let runs: Api<StageRun> = watched(&client, &ns);
    let requests: Api<CancelRequest> = watched(&client, &ns);
    let jobs: Api<Job> = watched(&client, &ns);
    let pods: Api<Pod> = watched(&client, &ns);
    let ctx = Arc::new(Context::new(client, config, metrics));
    let children = watcher::Config::default().labels(labels::STAGERUN_UID);

    let request_controller = Controller::new(requests.clone(), watcher::Config::default());
    let request_store = request_controller.store();
    let request_controller = request_controller
        .watches(
            runs.clone(),
            watcher::Config::default(),
            move |run: StageRun| {
                // Requests in progress that target this StageRun.
                let uid = run.uid().unwrap_or_default();
                request_store
                    .state()
                    .iter()
                    .filter(|r| {
                        r.status.as_ref().is_some_and(|s| {
                            s.phase == Some(RequestPhase::InProgress)
                                && s.targets.iter().any(|t| t.uid == uid)
                        })
                    })
                    .map(|r| ObjectRef::from_obj(r.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
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

    let run_controller = Controller::new(runs, watcher::Config::default())
        .owns(jobs, children.clone())
        .watches(pods, children, |pod: Pod| {
            let name = pod.annotations().get(labels::STAGERUN_NAME).cloned();
            let ns = pod.namespace();
            name.zip(ns)
                .map(|(n, ns)| ObjectRef::<StageRun>::new(&n).within(&ns))
        })
        .watches(
            requests,
            watcher::Config::default(),
            |req: CancelRequest| {
                let ns = req.namespace().unwrap_or_default();
                req.status
                    .iter()
                    .flat_map(|s| s.targets.iter())
                    .map(|t| ObjectRef::<StageRun>::new(&t.name).within(&ns))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stop)
        .run(stagerun::reconcile, stagerun::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "stagerun reconcile");
            }
        });

    tracing::info!("controller started");
    futures::join!(request_controller, run_controller);
    tracing::info!("controller stopped");
}

/// Requeue for objects that need no timer: a periodic safety resync.
fn resync() -> Action {
    Action::requeue(Duration::from_secs(300))
}
