//! Leader election: with replicas > 1, only the holder of a Lease acts.
//!
//! A standby waits for the Lease (woken by a watch as soon as the holder
//! releases it); the leader runs the controllers until a signal or the loss
//! of the Lease, then releases it so that a standby takes over at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};

use super::metrics::Metrics;
use super::wiring::run_controllers;
use super::{Config, LeaderElection};

/// Runs the controllers only while this instance holds the Lease. Losing
/// the Lease stops them at once, fails the health check and returns an
/// error (so that the process exits and its pod restarts to stand for
/// election again); a clean stop releases the Lease.
pub(super) async fn lead(
    client: Client,
    config: Config,
    election: LeaderElection,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let mut signal = Box::pin(crate::shutdown::signal());
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.state_namespace);
    let Some(manager) =
        wait_to_lead(&leases, &client, &config, &election, &metrics, &mut signal).await
    else {
        return Ok(());
    };
    let (leading, lease_task) = manager.watch().await;
    tracing::info!(identity = %election.identity, "leading");
    metrics.set_leader(&election.lease_name, true);
    let mut watching = leading.clone();
    let lost_leadership = Arc::new(AtomicBool::new(false));
    let flag = lost_leadership.clone();
    let health = metrics.clone();
    let stop = async move {
        tokio::select! {
            _ = watching.wait_for(|leader| !*leader) => {
                // Stop acting at once, and say so to the kubelet.
                health.set_healthy(false);
                flag.store(true, Ordering::SeqCst);
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
    if lost_leadership.load(Ordering::SeqCst) {
        anyhow::bail!("lost the leader Lease {}", election.lease_name);
    }
    Ok(())
}

/// Stands by until this instance holds the Lease; `None` when `signal`
/// comes first.
async fn wait_to_lead(
    leases: &Api<Lease>,
    client: &Client,
    config: &Config,
    election: &LeaderElection,
    metrics: &Metrics,
    signal: &mut (impl Future<Output = ()> + Unpin),
) -> Option<LeaseManager> {
    let duration = election.lease_duration.as_secs().max(2);
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
                    // Nothing was taken yet: nothing to release.
                    _ = &mut *signal => return None,
                }
            }
        }
    };
    metrics.set_leader(&election.lease_name, false);
    tracing::info!(lease = %election.lease_name, identity = %election.identity, "waiting to lead");
    // The Lease manager looks again only when the holder's term would end;
    // watching the Lease wakes a standby as soon as the holder releases it.
    let released = Arc::new(tokio::sync::Notify::new());
    let _release_watch = AbortOnDrop(tokio::spawn(watch_releases(
        leases.clone(),
        election.lease_name.clone(),
        released.clone(),
    )));
    loop {
        tokio::select! {
            leading = manager.changed() => match leading {
                Ok(true) => return Some(manager),
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
            _ = &mut *signal => {
                // The manager may have just taken the Lease.
                release_if_held(leases, &election.lease_name, &election.identity).await;
                return None;
            }
        }
    }
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
