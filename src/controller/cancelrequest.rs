//! CancelRequest reconcile: observe from the caches → decide
//! (`request_plan.rs`) → write the status, or delete the request after its TTL.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::cache::{self, Caches};
use super::request_plan::plan_request;
use super::{Context, key, resync};
use crate::crd::{CancelRequest, CancelTarget, RequestPhase, StageRun, TargetOutcome};
use crate::{Error, Result, labels};

pub async fn reconcile(obj: Arc<CancelRequest>, ctx: Arc<Context>) -> Result<Action> {
    let start = std::time::Instant::now();
    let result = reconcile_timed(obj, &ctx).await;
    ctx.metrics
        .reconciled("cancelrequest", result.is_ok(), start.elapsed());
    result
}

/// The StageRuns a request's decision may need: a superset of what its
/// target names (the pure step filters exactly), read through the indexes so
/// that the namespace's history costs nothing.
pub fn candidates(caches: &Caches, ns: &str, req: &CancelRequest) -> Vec<Arc<StageRun>> {
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
    if let Some(name) = &target.stage_run {
        runs.get(&ObjectRef::new(name).within(ns))
            .into_iter()
            .collect()
    } else if let Some(s) = &target.stage {
        runs.lookup(&cache::runs_by_stage(ns, &s.pipeline, &s.stage))
    } else if let Some(b) = &target.build {
        runs.lookup(&cache::runs_by_build(ns, &b.pipeline, b.pipeline_counter))
    } else if let Some(uids) = &target.uids {
        uids.iter()
            .flat_map(|u| runs.lookup(&cache::run_by_uid(u)))
            .filter(|r| r.namespace().as_deref() == Some(ns))
            .collect()
    } else if let Some(selector) = &target.selector {
        // The rarest of its matchLabels pairs narrows the active runs; the
        // selector itself is applied by the pure step.
        let narrowest = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| cache::active_runs_by_label(ns, k, v))
            .min_by_key(|key| runs.count(key));
        runs.lookup(&narrowest.unwrap_or_else(|| cache::active_runs(ns)))
    } else {
        Vec::new()
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
    let api: Api<CancelRequest> = ctx.api(&ns);
    let runs = candidates(&ctx.caches, &ns, &req);
    let plan = plan_request(&req, &runs, Timestamp::now());
    // A request that has just finished records that first, then goes.
    if plan.delete && req.status.as_ref() == Some(&plan.status) {
        match api.delete(&req.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        ctx.forget(req.as_ref());
        return Ok(Action::await_change());
    }
    if req.status.as_ref() != Some(&plan.status) {
        let patch = json!({
            "apiVersion": crate::crd::API_VERSION,
            "kind": "CancelRequest",
            // A precondition: a decision made on a stale read is refused (409).
            "metadata": { "resourceVersion": req.resource_version() },
            "status": plan.status,
        });
        api.patch_status(
            &req.name_any(),
            &PatchParams::apply(labels::MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
        ctx.wrote(req.as_ref());
        if let Some((warning, reason, note)) = plan.event {
            ctx.event(req.as_ref(), warning, reason, note).await;
        }
    }
    ctx.succeeded(&key(req.as_ref()));
    if plan.delete {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    Ok(match plan.requeue_after {
        Some(d) => Action::requeue(d.max(Duration::from_millis(100))),
        None if plan.status.phase == Some(RequestPhase::InProgress) => {
            Action::requeue(Duration::from_secs(30))
        }
        None => resync(),
    })
}

pub fn error_policy(obj: Arc<CancelRequest>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&key(obj.as_ref()), err);
    if !err.is_conflict() {
        tracing::warn!(cancelrequest = %obj.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    }
    Action::requeue(delay)
}
