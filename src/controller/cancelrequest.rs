//! CancelRequest reconcile: resolve the targets once, follow them to the end,
//! then delete the request after its TTL.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::plan::set_condition;
use super::{Context, key, resync};
use crate::crd::{
    CancelRequest, CancelRequestStatus, CancelTarget, CancelTargetStatus, RequestPhase, RunResult,
    StageRun, TargetOutcome,
};
use crate::{Error, Result, labels};

/// Condition type on a CancelRequest.
pub const COND_COMPLETE: &str = "Complete";

fn is_finished(run: &StageRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_finished())
}

/// The StageRuns a target names, or why it cannot match anything. Targets
/// that name runs directly (name, uids, build) match finished runs too, so
/// that they can be reported as AlreadyFinished; the bulk targets (stage,
/// selector) match only active runs.
pub fn resolve<'a>(
    target: &CancelTarget,
    runs: &'a [StageRun],
) -> Result<Vec<&'a StageRun>, String> {
    let matched: Vec<&StageRun> = if let Some(name) = &target.stage_run {
        runs.iter()
            .filter(|r| r.metadata.name.as_ref() == Some(name))
            .collect()
    } else if let Some(stage) = &target.stage {
        runs.iter()
            .filter(|r| {
                r.spec.pipeline == stage.pipeline && r.spec.stage == stage.stage && !is_finished(r)
            })
            .collect()
    } else if let Some(build) = &target.build {
        runs.iter()
            .filter(|r| {
                r.spec.pipeline == build.pipeline
                    && r.spec.pipeline_counter == build.pipeline_counter
            })
            .collect()
    } else if let Some(uids) = &target.uids {
        runs.iter()
            .filter(|r| r.metadata.uid.as_ref().is_some_and(|u| uids.contains(u)))
            .collect()
    } else if let Some(selector) = &target.selector {
        let selector: Selector = selector
            .clone()
            .try_into()
            .map_err(|e| format!("invalid selector: {e}"))?;
        runs.iter()
            .filter(|r| selector.matches(r.labels()) && !is_finished(r))
            .collect()
    } else {
        return Err("target names nothing".into());
    };
    Ok(matched)
}

/// A target's outcome given its StageRun now (None: it no longer exists).
pub fn outcome(run: Option<&StageRun>) -> TargetOutcome {
    match run {
        None => TargetOutcome::Deleted,
        Some(r) if is_finished(r) => {
            let status = r.status.as_ref();
            let cancelled = status.and_then(|s| s.result) == Some(RunResult::Cancelled)
                && status.is_some_and(|s| s.cancel.is_some());
            if cancelled {
                TargetOutcome::Cancelled
            } else {
                TargetOutcome::AlreadyFinished
            }
        }
        Some(_) => TargetOutcome::Canceling,
    }
}

/// Why a target matched nothing, as a sentence.
fn no_match(target: &CancelTarget) -> String {
    if let Some(n) = &target.stage_run {
        format!("nothing to cancel: no StageRun {n} exists")
    } else if let Some(s) = &target.stage {
        format!(
            "nothing to cancel: stage {}/{} has no active run",
            s.pipeline, s.stage
        )
    } else if let Some(b) = &target.build {
        format!(
            "nothing to cancel: no run {} #{} exists",
            b.pipeline, b.pipeline_counter
        )
    } else if let Some(u) = &target.uids {
        format!("nothing to cancel: no StageRun has uid {}", u.join(", "))
    } else {
        "nothing to cancel: no active StageRun matches the selector".into()
    }
}

/// What the request's status should become.
pub struct RequestPlan {
    pub status: CancelRequestStatus,
    pub event: Option<(bool, &'static str, String)>,
    /// Delete the request now (its TTL has passed).
    pub delete: bool,
    pub requeue_after: Option<Duration>,
}

/// Decides a CancelRequest's next status from the StageRuns in its namespace.
pub fn plan_request(req: &CancelRequest, runs: &[StageRun], now: Timestamp) -> RequestPlan {
    let mut status = req.status.clone().unwrap_or_default();
    let generation = req.metadata.generation;
    let mut event = None;
    match status.phase.unwrap_or(RequestPhase::Pending) {
        RequestPhase::Pending => {
            status.start_time = Some(Time(now));
            match resolve(&req.spec.target, runs) {
                Ok(matched) if !matched.is_empty() => {
                    status.targets = matched
                        .iter()
                        .map(|r| CancelTargetStatus {
                            name: r.name_any(),
                            uid: r.uid().unwrap_or_default(),
                            outcome: if is_finished(r) {
                                TargetOutcome::AlreadyFinished
                            } else {
                                TargetOutcome::Canceling
                            },
                        })
                        .collect();
                    status.matched = Some(status.targets.len() as i64);
                    status.cancelled = Some(0);
                    status.phase = Some(RequestPhase::InProgress);
                    event = Some((
                        false,
                        "Accepted",
                        format!("matched {} StageRun(s)", status.targets.len()),
                    ));
                    set_condition(
                        &mut status.conditions,
                        COND_COMPLETE,
                        "False",
                        "InProgress",
                        format!("cancelling {} StageRun(s)", status.targets.len()),
                        generation,
                        now,
                    );
                }
                result => {
                    let message = match result {
                        Err(why) => why,
                        Ok(_) => no_match(&req.spec.target),
                    };
                    status.phase = Some(RequestPhase::Rejected);
                    status.matched = Some(0);
                    status.cancelled = Some(0);
                    status.completion_time = Some(Time(now));
                    set_condition(
                        &mut status.conditions,
                        COND_COMPLETE,
                        "False",
                        "Rejected",
                        message.clone(),
                        generation,
                        now,
                    );
                    event = Some((true, "Rejected", message));
                }
            }
        }
        RequestPhase::InProgress => {}
        RequestPhase::Completed | RequestPhase::Rejected => {}
    }

    if status.phase == Some(RequestPhase::InProgress) {
        for t in status.targets.iter_mut() {
            if t.outcome == TargetOutcome::Canceling {
                t.outcome = outcome(
                    runs.iter()
                        .find(|r| r.metadata.uid.as_deref() == Some(t.uid.as_str())),
                );
            }
        }
        let cancelled = status
            .targets
            .iter()
            .filter(|t| t.outcome == TargetOutcome::Cancelled)
            .count();
        status.cancelled = Some(cancelled as i64);
        if status
            .targets
            .iter()
            .all(|t| t.outcome != TargetOutcome::Canceling)
        {
            status.phase = Some(RequestPhase::Completed);
            status.completion_time = Some(Time(now));
            let message = format!(
                "{cancelled} of {} StageRun(s) cancelled; {} already finished, {} deleted",
                status.targets.len(),
                status
                    .targets
                    .iter()
                    .filter(|t| t.outcome == TargetOutcome::AlreadyFinished)
                    .count(),
                status
                    .targets
                    .iter()
                    .filter(|t| t.outcome == TargetOutcome::Deleted)
                    .count(),
            );
            set_condition(
                &mut status.conditions,
                COND_COMPLETE,
                "True",
                "Completed",
                message.clone(),
                generation,
                now,
            );
            event = Some((false, "Completed", message));
        }
    }

    let mut delete = false;
    let mut requeue_after = None;
    if matches!(
        status.phase,
        Some(RequestPhase::Completed | RequestPhase::Rejected)
    ) && let Some(done) = &status.completion_time
    {
        let expires =
            done.0 + SignedDuration::from_secs(req.spec.ttl_seconds_after_finished.max(0));
        if now >= expires {
            delete = true;
        } else {
            requeue_after = Some(
                expires
                    .duration_since(now)
                    .try_into()
                    .unwrap_or(Duration::ZERO),
            );
        }
    }
    RequestPlan {
        status,
        event,
        delete,
        requeue_after,
    }
}

pub async fn reconcile(obj: Arc<CancelRequest>, ctx: Arc<Context>) -> Result<Action> {
    let start = std::time::Instant::now();
    let result = reconcile_timed(obj, &ctx).await;
    ctx.metrics
        .reconciled("cancelrequest", result.is_ok(), start.elapsed());
    result
}

async fn reconcile_timed(obj: Arc<CancelRequest>, ctx: &Arc<Context>) -> Result<Action> {
    let ns = obj.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<CancelRequest> = ctx.api(&ns);
    let Some(req) = api.get_opt(&obj.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if req.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let finished = matches!(
        req.status.as_ref().and_then(|s| s.phase),
        Some(RequestPhase::Completed | RequestPhase::Rejected)
    );
    // Finished requests only wait for their TTL; no need to list StageRuns.
    let runs = if finished {
        Vec::new()
    } else {
        ctx.api::<StageRun>(&ns)
            .list(&ListParams::default())
            .await?
            .items
    };
    let plan = plan_request(&req, &runs, Timestamp::now());
    // A request that has just finished records that first, then goes.
    if plan.delete && req.status.as_ref() == Some(&plan.status) {
        match api.delete(&req.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        ctx.succeeded(&key(&req));
        return Ok(Action::await_change());
    }
    if req.status.as_ref() != Some(&plan.status) {
        let patch = json!({
            "apiVersion": "cancel.dev/v1alpha1",
            "kind": "CancelRequest",
            "metadata": { "resourceVersion": req.resource_version() },
            "status": plan.status,
        });
        api.patch_status(
            &req.name_any(),
            &PatchParams::apply(labels::MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
        if let Some((warning, reason, note)) = plan.event {
            ctx.event(&req, warning, reason, note).await;
        }
    }
    ctx.succeeded(&key(&req));
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

#[cfg(test)]
#[path = "cancelrequest_tests.rs"]
mod tests;
