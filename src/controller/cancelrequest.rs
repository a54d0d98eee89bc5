//! CancelRequest reconcile: observe from the caches → decide
//! (`request_plan.rs`) → write the status, or archive and delete the request
//! after its TTL.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::cache::{self, Caches};
use super::context::{Context, key, requeue, resync};
use super::isolate;
use super::request_plan::{Absence, plan_request};
use super::stagerun::ignore_not_found;
use crate::crd::{CancelRequest, CancelTarget, RequestPhase, StageRun, TargetKind, TargetOutcome};
use crate::{Error, Result, Step};

pub(super) async fn reconcile(obj: Arc<CancelRequest>, ctx: Arc<Context>) -> Result<Action> {
    let start = std::time::Instant::now();
    let result = isolate::isolated(reconcile_timed(obj.clone(), &ctx)).await;
    if let Err(e) = &result {
        isolate::report(&ctx, obj.as_ref(), e).await;
    }
    ctx.metrics
        .reconciled("cancelrequest", result.is_ok(), start.elapsed());
    result
}

/// The StageRuns a request's decision may need: a superset of what its
/// target names (the pure step filters exactly), read through the indexes so
/// that the namespace's history costs nothing.
pub(super) fn candidates(caches: &Caches, ns: &str, req: &CancelRequest) -> Vec<Arc<StageRun>> {
    let runs = &caches.runs;
    match req.status.as_ref().and_then(|s| s.phase) {
        None | Some(RequestPhase::Pending) => target_candidates(caches, ns, &req.spec.target),
        Some(RequestPhase::InProgress) => req
            .status
            .iter()
            .flat_map(|s| s.targets.iter())
            .filter(|t| t.outcome == TargetOutcome::Canceling)
            .flat_map(|t| runs.lookup(&cache::run_by_uid(&t.uid)))
            .collect(),
        // Finished requests only wait for their TTL.
        Some(RequestPhase::Completed | RequestPhase::Rejected) => Vec::new(),
    }
}

fn target_candidates(caches: &Caches, ns: &str, target: &CancelTarget) -> Vec<Arc<StageRun>> {
    let runs = &caches.runs;
    match target.kind() {
        Some(TargetKind::StageRun(name)) => runs
            .get(&ObjectRef::new(name).within(ns))
            .into_iter()
            .collect(),
        Some(TargetKind::Stage(s)) => runs.lookup(&cache::runs_by_stage(ns, &s.pipeline, &s.stage)),
        Some(TargetKind::Build(b)) => {
            runs.lookup(&cache::runs_by_build(ns, &b.pipeline, b.pipeline_counter))
        }
        Some(TargetKind::Uids(uids)) => uids
            .iter()
            .flat_map(|u| runs.lookup(&cache::run_by_uid(u)))
            .filter(|r| r.namespace().as_deref() == Some(ns))
            .collect(),
        Some(TargetKind::Selector(selector)) => {
            // The rarest of its matchLabels pairs narrows the active runs; the
            // selector itself is applied by the pure step.
            let narrowest = selector
                .match_labels
                .iter()
                .flatten()
                .map(|(k, v)| cache::active_runs_by_label(ns, k, v))
                .min_by_key(|key| runs.count(key));
            runs.lookup(&narrowest.unwrap_or_else(|| cache::active_runs(ns)))
        }
        None => Vec::new(),
    }
}

async fn reconcile_timed(req: Arc<CancelRequest>, ctx: &Arc<Context>) -> Result<Action> {
    let ns = req.namespace().ok_or(Error::MissingField("namespace"))?;
    if req.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if ctx.behind_own_write(req.as_ref()) {
        // Our last status write has not reached the cache yet: its watch
        // event triggers the next pass.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let mut runs = candidates(&ctx.caches, &ns, &req);
    let mut plan = plan_request(&req, &runs, Timestamp::now());
    if let Some(absence) = plan.absence(&req) {
        // The cache may not hold a run yet (or any, just after a restart):
        // an absence is decided on what the API server holds.
        let fresh = read_runs(ctx, &ns, &req.spec.target, &absence).await?;
        match absence {
            Absence::NoMatch => runs = fresh,
            Absence::Targets(_) => runs.extend(fresh),
        }
        plan = plan_request(&req, &runs, Timestamp::now());
    }
    // A request that has just finished records that first, then goes: to
    // the archive first, when there is one (retried until it answers).
    if plan.delete && req.status.as_ref() == Some(&plan.status) {
        if let Some(archive) = &ctx.archive {
            archive
                .archive_cancel_requests(std::slice::from_ref(req.as_ref()))
                .await?;
        }
        // Only the request archived: a new one of the same name stays.
        let only_this = DeleteParams {
            preconditions: Some(Preconditions {
                uid: req.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let deleted = ctx
            .api::<CancelRequest>(&ns)
            .delete(&req.name_any(), &only_this)
            .await
            .step("delete the CancelRequest after its TTL");
        match deleted {
            Err(e) if e.is_conflict() => {}
            other => ignore_not_found(other)?,
        }
        ctx.forget(req.as_ref());
        return Ok(Action::await_change());
    }
    if req.status.as_ref() != Some(&plan.status) {
        ctx.write_status(req.as_ref(), &plan.status).await?;
        if let Some(event) = plan.event {
            ctx.event(req.as_ref(), &event).await;
        }
    }
    ctx.succeeded(&key(req.as_ref()));
    if plan.delete {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    Ok(match plan.requeue_after {
        Some(d) => requeue(d),
        None if plan.status.phase == Some(RequestPhase::InProgress) => {
            Action::requeue(Duration::from_secs(30))
        }
        None => resync(),
    })
}

/// The StageRuns an absence rests on, read from the API server now: the
/// named runs, or every run of the namespace for a target that matched
/// nothing and names no run (rare: a request naming nothing).
async fn read_runs(
    ctx: &Context,
    ns: &str,
    target: &CancelTarget,
    absence: &Absence,
) -> Result<Vec<Arc<StageRun>>> {
    let api = ctx.api::<StageRun>(ns);
    let names = match (absence, target.kind()) {
        (Absence::Targets(names), _) => names.clone(),
        (Absence::NoMatch, Some(TargetKind::StageRun(name))) => vec![name.to_string()],
        (Absence::NoMatch, _) => {
            let all = api
                .list(&ListParams::default())
                .await
                .step("list StageRuns before rejecting a request")?;
            return Ok(all.items.into_iter().map(Arc::new).collect());
        }
    };
    let mut found = Vec::new();
    for name in &names {
        let run = api
            .get_opt(name)
            .await
            .step("read a StageRun the cache lacks")?;
        found.extend(run.map(Arc::new));
    }
    Ok(found)
}

pub(super) fn error_policy(obj: Arc<CancelRequest>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&key(obj.as_ref()), err);
    if !err.is_conflict() {
        tracing::warn!(cancelrequest = %obj.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    }
    Action::requeue(delay)
}
