//! Pure decisions for a CancelRequest: which StageRuns its target names,
//! what became of each, and how the request moves from Pending to its end.
//! No I/O here; `cancelrequest.rs` observes and applies.

use std::borrow::Borrow;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::plan::set_condition;
use crate::crd::{
    CancelRequest, CancelRequestStatus, CancelTarget, CancelTargetStatus, RequestPhase, RunResult,
    StageRun, TargetOutcome,
};

/// Condition type on a CancelRequest.
pub const COND_COMPLETE: &str = "Complete";

/// The StageRuns a target names, or why it cannot match anything. Targets
/// that name runs directly (name, uids, build) match finished runs too, so
/// that they can be reported as AlreadyFinished; the bulk targets (stage,
/// selector) match only active runs.
pub fn resolve<'a, R: Borrow<StageRun>>(
    target: &CancelTarget,
    runs: &'a [R],
) -> Result<Vec<&'a StageRun>, String> {
    let runs = runs.iter().map(Borrow::borrow);
    let matched: Vec<&StageRun> = if let Some(name) = &target.stage_run {
        runs.filter(|r| r.metadata.name.as_ref() == Some(name))
            .collect()
    } else if let Some(stage) = &target.stage {
        runs.filter(|r| {
            r.spec.pipeline == stage.pipeline && r.spec.stage == stage.stage && !r.is_finished()
        })
        .collect()
    } else if let Some(build) = &target.build {
        runs.filter(|r| {
            r.spec.pipeline == build.pipeline && r.spec.pipeline_counter == build.pipeline_counter
        })
        .collect()
    } else if let Some(uids) = &target.uids {
        runs.filter(|r| r.metadata.uid.as_ref().is_some_and(|u| uids.contains(u)))
            .collect()
    } else if let Some(selector) = &target.selector {
        let selector: Selector = selector
            .clone()
            .try_into()
            .map_err(|e| format!("invalid selector: {e}"))?;
        runs.filter(|r| selector.matches(r.labels()) && !r.is_finished())
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
        Some(r) if r.is_finished() => {
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
pub fn plan_request<R: Borrow<StageRun>>(
    req: &CancelRequest,
    runs: &[R],
    now: Timestamp,
) -> RequestPlan {
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
                            outcome: if r.is_finished() {
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
                        .map(Borrow::borrow)
                        .find(|r: &&StageRun| r.metadata.uid.as_deref() == Some(t.uid.as_str())),
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

#[cfg(test)]
#[path = "request_plan_tests.rs"]
mod tests;
