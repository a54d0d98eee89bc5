//! Retention: a finished StageRun older than `--keep-finished` moves to the
//! archive, then leaves the cluster.
//!
//! Archive first, delete second, both by uid. The archive commits a batch
//! before anything of it is deleted, and storing a run again is a no-op: a
//! crash (or a database error) in between leaves runs that the next pass
//! finds, stores again and deletes, so that none is lost and none appears
//! twice. Each delete carries the run's uid as a precondition, so that a
//! new run created under an old name is never deleted in its place.
//!
//! Due runs are found in the watch cache (which keeps when each finished);
//! each is read afresh before it is archived, as the cache keeps too little
//! of a finished run to archive it. Only the leader runs this (it runs with
//! the controllers), and cancels never wait for it: a database that is away
//! fails the pass, which is tried again later.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};

use super::context::Context;
use super::stagerun::ignore_not_found;
use crate::archive::Archive;
use crate::crd::StageRun;
use crate::{Result, Step};

/// Runs moved per pass at most (one archive transaction).
pub(super) const BATCH: usize = 200;

/// Between passes, unless the last one was full (then at once).
const PERIOD: Duration = Duration::from_secs(5);

/// Reads and deletes in flight at once.
const AT_ONCE: usize = 16;

/// A finished run whose retention has passed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Due {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// When its retention ended.
    pub since: Timestamp,
}

/// The finished runs among `runs` whose retention `keep` has passed at
/// `now`, those waiting longest first, at most `limit`, leaving out the
/// uids in `moved` (deleted already, still in the cache). A run's retention
/// counts from its completion time, or from its creation for a run that
/// finished without one.
pub(super) fn due(
    runs: &[Arc<StageRun>],
    now: Timestamp,
    keep: Duration,
    moved: &HashSet<String>,
    limit: usize,
) -> Vec<Due> {
    let keep = SignedDuration::try_from(keep).unwrap_or(SignedDuration::MAX);
    let mut due: Vec<Due> = runs
        .iter()
        .filter(|r| r.is_finished())
        .filter_map(|r| {
            let uid = r.uid()?;
            if moved.contains(&uid) {
                return None;
            }
            let finished = (r.status.as_ref())
                .and_then(|s| s.completion_time.as_ref())
                .or(r.metadata.creation_timestamp.as_ref())?
                .0;
            let since = finished.checked_add(keep).ok()?;
            (since <= now).then(|| Due {
                namespace: r.namespace().unwrap_or_default(),
                name: r.name_any(),
                uid,
                since,
            })
        })
        .collect();
    due.sort_by(|a, b| (a.since, &a.uid).cmp(&(b.since, &b.uid)));
    due.truncate(limit);
    due
}

/// Moves due runs to the archive until the controllers stop.
pub(super) async fn run(ctx: Arc<Context>, archive: Arc<Archive>, keep: Duration) {
    tracing::info!(keep_finished = ?keep, "retention started");
    // Uids deleted by an earlier pass, until the cache drops them.
    let mut moved: HashSet<String> = HashSet::new();
    loop {
        let runs = ctx.caches.runs.store().state();
        let cached: HashSet<String> = runs.iter().filter_map(|r| r.uid()).collect();
        moved.retain(|uid| cached.contains(uid));
        let now = Timestamp::now();
        let batch = due(&runs, now, keep, &moved, BATCH);
        drop(runs);
        let lag = batch.first().map_or(Duration::ZERO, |d| {
            Duration::try_from(now.duration_since(d.since)).unwrap_or_default()
        });
        ctx.metrics.archive_lag(lag);
        let full = batch.len() == BATCH;
        let wait = if batch.is_empty() {
            PERIOD
        } else {
            match move_batch(&ctx, &archive, &batch).await {
                Ok(gone) => {
                    moved.extend(gone);
                    if full { Duration::ZERO } else { PERIOD }
                }
                Err(e) => {
                    ctx.metrics.archive_failed();
                    tracing::warn!(error = %e, runs = batch.len(), "could not archive finished runs; retrying");
                    PERIOD
                }
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Reads the due runs afresh, archives them (one commit), then deletes
/// each from the cluster; returns the uids no longer in the cluster.
async fn move_batch(ctx: &Context, archive: &Archive, batch: &[Due]) -> Result<Vec<String>> {
    // Owned items: a stream of borrowed ones would not be Send.
    let read: Vec<Result<Option<StageRun>>> = futures::stream::iter(batch.to_vec())
        .map(|d| read_finished(ctx, d))
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    let mut runs = Vec::with_capacity(read.len());
    for run in read {
        runs.extend(run?);
    }
    archive.archive_stage_runs(&runs).await?;
    ctx.metrics.archived(runs.len());
    let archived = runs.iter().map(|r| (r.namespace(), r.name_any(), r.uid()));
    let deleted: Vec<Result<()>> = futures::stream::iter(archived.collect::<Vec<_>>())
        .map(|(ns, name, uid)| delete_archived(ctx, ns.unwrap_or_default(), name, uid))
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    // Archived and not deleted: the next pass stores them again (a no-op)
    // and deletes them.
    if let Some(e) = deleted.into_iter().find_map(Result::err) {
        return Err(e);
    }
    // Runs gone before their read count as moved too: none is read again.
    Ok(batch.iter().map(|d| d.uid.clone()).collect())
}

/// The run as the API server holds it now, if it is still the finished run
/// that was found due (same uid).
async fn read_finished(ctx: &Context, due: Due) -> Result<Option<StageRun>> {
    let run = ctx
        .api::<StageRun>(&due.namespace)
        .get_opt(&due.name)
        .await
        .step("read a finished StageRun to archive")?;
    Ok(run.filter(|r| r.uid().as_deref() == Some(due.uid.as_str()) && r.is_finished()))
}

/// Deletes an archived run, only if it is still the one archived (by uid);
/// its Jobs go with it (owner references).
async fn delete_archived(
    ctx: &Context,
    ns: String,
    name: String,
    uid: Option<String>,
) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let deleted = ctx
        .api::<StageRun>(&ns)
        .delete(&name, &params)
        .await
        .map(|_| ())
        .step("delete an archived StageRun");
    match deleted {
        // Another run of that name now: not ours to delete.
        Err(e) if e.is_conflict() => Ok(()),
        other => ignore_not_found(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(name: &str, phase: &str, created: &str, completed: Option<&str>) -> Arc<StageRun> {
        let mut status = json!({"phase": phase});
        if let Some(c) = completed {
            status["completionTime"] = json!(c);
        }
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
                "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                             "creationTimestamp": created},
                "spec": {"pipeline": "p", "pipelineCounter": 1, "stage": "s",
                         "jobs": [{"name": "j", "template": {}}]},
                "status": status
            }))
            .expect("stagerun"),
        )
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn finished_runs_past_their_retention_are_due_oldest_first() {
        let runs = vec![
            run(
                "late",
                "Succeeded",
                "2025-01-01T00:00:00Z",
                Some("2025-01-01T09:30:00Z"),
            ),
            run(
                "early",
                "Failed",
                "2025-01-01T00:00:00Z",
                Some("2025-01-01T08:00:00Z"),
            ),
            // Finished 40 minutes ago: kept for another 20.
            run(
                "recent",
                "Succeeded",
                "2025-01-01T00:00:00Z",
                Some("2025-01-01T10:00:00Z"),
            ),
            // Running, canceling, pending: never, however old.
            run("running", "Running", "2024-01-01T00:00:00Z", None),
            run("canceling", "Canceling", "2024-01-01T00:00:00Z", None),
            run("pending", "Pending", "2024-01-01T00:00:00Z", None),
            // Finished without a completion time: counted from its creation.
            run("untimed", "Failed", "2025-01-01T07:00:00Z", None),
        ];
        let now = at("2025-01-01T10:40:00Z");
        let names = |due: Vec<Due>| due.into_iter().map(|d| d.name).collect::<Vec<_>>();
        let none = HashSet::new();
        assert_eq!(
            names(due(&runs, now, HOUR, &none, 10)),
            ["untimed", "early", "late"]
        );
        let first = &due(&runs, now, HOUR, &none, 10)[0];
        assert_eq!(first.since, at("2025-01-01T08:00:00Z"));
        assert_eq!(first.uid, "uid-untimed");
        // A batch at most, the longest waiting first.
        assert_eq!(names(due(&runs, now, HOUR, &none, 2)), ["untimed", "early"]);
        // Runs moved already and still cached are left out.
        let moved = HashSet::from(["uid-untimed".to_string()]);
        assert_eq!(names(due(&runs, now, HOUR, &moved, 10)), ["early", "late"]);
        // Exactly at the end of its retention a run is due.
        assert_eq!(
            names(due(&runs, at("2025-01-01T11:00:00Z"), HOUR, &none, 10)),
            ["untimed", "early", "late", "recent"]
        );
        // A retention past the end of time keeps everything.
        assert!(due(&runs, now, Duration::MAX, &none, 10).is_empty());
    }
}
