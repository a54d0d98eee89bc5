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
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};

use super::metrics::Metrics;
use super::wiring::run_controllers;
use super::{Config, LeaderElection};
use crate::archive::Archive;

/// Runs the controllers only while this instance holds the Lease. Losing
/// the Lease stops them at once, fails the health check and returns an
/// error (so that the process exits and its pod restarts to stand for
/// election again); a clean stop releases the Lease. A leader that has not
/// seen its Lease renewed by its renew deadline (cut off from the API
/// server, say) drops the controllers at once, before a standby may take
/// over, and returns an error without touching the Lease again.
pub(super) async fn lead(
    client: Client,
    config: Config,
    election: LeaderElection,
    metrics: Arc<Metrics>,
    archive: Option<Arc<Archive>>,
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
    let (duration, margin) = term(election.lease_duration);
    let deadline = renew_deadline(
        leases.clone(),
        election.lease_name.clone(),
        election.identity.clone(),
        duration,
        margin,
    );
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
    tokio::select! {
        _ = run_controllers(client, config, metrics.clone(), archive, stop) => {}
        _ = deadline => {
            // A standby may take the Lease once its term ends: not one more
            // write from here. The controllers are dropped, not stopped
            // gracefully (that would let the reconciles in flight go on),
            // and the Lease is neither renewed nor released.
            lease_task.abort();
            metrics.set_healthy(false);
            tracing::error!("could not renew the leader Lease before its renew deadline; stopped every write");
            anyhow::bail!(
                "passed the renew deadline of the leader Lease {}",
                election.lease_name
            );
        }
    }
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

/// Seconds before the end of its term that the Lease manager renews it.
fn grace(duration_secs: u64) -> u64 {
    (duration_secs / 3).max(1)
}

/// The Lease's term (whole seconds, at least 2) and the margin by which
/// the leader's renew deadline precedes the end of its last renewed term:
/// half the renewal's grace, so that a renewal on time (at the start of
/// the grace) is seen well before the deadline.
fn term(lease_duration: Duration) -> (Duration, Duration) {
    let secs = lease_duration.as_secs().max(2);
    (
        Duration::from_secs(secs),
        Duration::from_millis(grace(secs) * 500),
    )
}

/// How long this instance may still act by `lease` at `now`: until the
/// end of the term its last renewal began (`renewTime`, written from this
/// process's own clock, plus the duration), less `margin`. A standby takes
/// the Lease only once that term has ended, so the leader stops first.
/// Zero when the Lease names another holder or no renewal.
pub(super) fn renewed_for(
    lease: &Lease,
    identity: &str,
    duration: Duration,
    margin: Duration,
    now: Timestamp,
) -> Duration {
    let Some(spec) = lease.spec.as_ref() else {
        return Duration::ZERO;
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return Duration::ZERO;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Duration::ZERO;
    };
    let left =
        SignedDuration::try_from(duration.saturating_sub(margin)).unwrap_or(SignedDuration::MAX);
    let until = renewed.0.checked_add(left).unwrap_or(Timestamp::MAX);
    until
        .duration_since(now)
        .try_into()
        .unwrap_or(Duration::ZERO)
}

/// Completes at the leader's renew deadline: when it has not seen its
/// Lease renewed in time (the API server unreachable or slow, the renewals
/// failing), as client-go's leader election does with its renew deadline.
/// It follows the Lease by a watch; while the watch is cut off, nothing
/// moves the deadline.
async fn renew_deadline(
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    margin: Duration,
) {
    // Just acquired: the term began no later than now.
    let mut deadline = tokio::time::Instant::now() + duration.saturating_sub(margin);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut leases = std::pin::pin!(
        watcher::watcher(api, config)
            .backoff(crate::watch::backoff())
            .applied_objects()
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            lease = leases.next() => match lease {
                Some(Ok(lease)) => {
                    // Only a renewal moves the deadline, and only later: a
                    // read of the Lease from before this term (a watch
                    // cache behind the acquisition) or naming another
                    // holder (a loss, which the Lease manager reports)
                    // leaves it where it is.
                    let left = renewed_for(&lease, &identity, duration, margin, Timestamp::now());
                    deadline = deadline.max(tokio::time::Instant::now() + left);
                }
                Some(Err(_)) => {}
                None => return,
            },
        }
    }
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
    let duration = term(election.lease_duration).0.as_secs();
    // A standby rides out an API server that is away (restarting, say): it
    // retries, as the watches do, instead of exiting into a restart loop.
    let build = || {
        LeaseManagerBuilder::new(client.clone(), &election.lease_name)
            .with_namespace(&config.state_namespace)
            .with_identity(&election.identity)
            .with_duration(duration)
            .with_grace(grace(duration))
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    fn lease(holder: Option<&str>, renewed: Option<Timestamp>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                renew_time: renewed.map(MicroTime),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn the_renew_deadline_precedes_the_end_of_the_last_renewed_term() {
        let (duration, margin) = term(Duration::from_secs(15));
        assert_eq!(
            (duration, margin),
            (Duration::from_secs(15), Duration::from_millis(2500))
        );
        // The manager renews 5 s before the end (grace): 2.5 s before the deadline.
        assert!(Duration::from_secs(grace(15)) > margin);
        let t: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |secs: i64| t + SignedDuration::from_millis(secs);
        let held = lease(Some("me"), Some(t));
        assert_eq!(
            renewed_for(&held, "me", duration, margin, t),
            Duration::from_millis(12_500)
        );
        assert_eq!(
            renewed_for(&held, "me", duration, margin, at(12_000)),
            Duration::from_millis(500)
        );
        assert_eq!(
            renewed_for(&held, "me", duration, margin, at(12_500)),
            Duration::ZERO
        );
        assert_eq!(
            renewed_for(&held, "me", duration, margin, at(60_000)),
            Duration::ZERO
        );
        // Another holder, or none, or no renewal: no time left.
        assert_eq!(
            renewed_for(&lease(Some("other"), Some(t)), "me", duration, margin, t),
            Duration::ZERO
        );
        assert_eq!(
            renewed_for(&lease(None, Some(t)), "me", duration, margin, t),
            Duration::ZERO
        );
        assert_eq!(
            renewed_for(&lease(Some("me"), None), "me", duration, margin, t),
            Duration::ZERO
        );
        assert_eq!(
            renewed_for(&Lease::default(), "me", duration, margin, t),
            Duration::ZERO
        );
        // A renewal written at the end of time does not overflow.
        let far = lease(Some("me"), Some(Timestamp::MAX));
        assert!(renewed_for(&far, "me", duration, margin, t) > Duration::ZERO);
        // Short terms: at least 2 s, the margin half a second.
        assert_eq!(
            term(Duration::from_secs(1)),
            (Duration::from_secs(2), Duration::from_millis(500))
        );
    }
}
