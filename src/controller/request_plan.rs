//! Pure decisions for a CancelRequest: which StageRuns its target names,
//! what became of each, and how the request moves from Pending to its end.
//! No I/O here; `cancelrequest.rs` observes and applies.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::plan::{COND_RECONCILE_FAILED, PlannedEvent, after_secs, set_condition};
use crate::crd::{
    CancelRequest, CancelRequestStatus, CancelTarget, CancelTargetStatus, RequestPhase, RunResult,
    StageRun, TargetKind, TargetOutcome,
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
    let matched: Vec<&StageRun> = match target.kind() {
        Some(TargetKind::StageRun(name)) => runs
            .filter(|r| r.metadata.name.as_deref() == Some(name))
            .collect(),
        Some(TargetKind::Stage(stage)) => runs
            .filter(|r| {
                r.spec.pipeline == stage.pipeline && r.spec.stage == stage.stage && !r.is_finished()
            })
            .collect(),
        Some(TargetKind::Build(build)) => runs
            .filter(|r| {
                r.spec.pipeline == build.pipeline
                    && r.spec.pipeline_counter == build.pipeline_counter
            })
            .collect(),
        Some(TargetKind::Uids(uids)) => runs
            .filter(|r| r.metadata.uid.as_ref().is_some_and(|u| uids.contains(u)))
            .collect(),
        Some(TargetKind::Selector(selector)) => {
            let selector: Selector = selector
                .clone()
                .try_into()
                .map_err(|e| format!("invalid selector: {e}"))?;
            runs.filter(|r| selector.matches(r.labels()) && !r.is_finished())
                .collect()
        }
        None => return Err("target names nothing".into()),
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
    match target.kind() {
        Some(TargetKind::StageRun(n)) => format!("nothing to cancel: no StageRun {n} exists"),
        Some(TargetKind::Stage(s)) => format!(
            "nothing to cancel: stage {}/{} has no active run",
            s.pipeline, s.stage
        ),
        Some(TargetKind::Build(b)) => format!(
            "nothing to cancel: no run {} #{} exists",
            b.pipeline, b.pipeline_counter
        ),
        Some(TargetKind::Uids(u)) => {
            format!("nothing to cancel: no StageRun has uid {}", u.join(", "))
        }
        Some(TargetKind::Selector(_)) | None => {
            "nothing to cancel: no active StageRun matches the selector".into()
        }
    }
}

/// What the request's status should become.
pub struct RequestPlan {
    pub status: CancelRequestStatus,
    /// An Event to record once the status is written.
    pub event: Option<PlannedEvent>,
    /// Delete the request now (its TTL has passed).
    pub delete: bool,
    pub requeue_after: Option<Duration>,
}

/// Decides a CancelRequest's next status from the StageRuns in its namespace:
/// accept a pending request, follow an accepted one's targets, and count
/// down a finished one's TTL.
pub fn plan_request<R: Borrow<StageRun>>(
    req: &CancelRequest,
    runs: &[R],
    now: Timestamp,
) -> RequestPlan {
    let mut status = req.status.clone().unwrap_or_default();
    status
        .conditions
        .retain(|c| c.type_ != COND_RECONCILE_FAILED);
    let generation = req.metadata.generation;
    let mut event = None;
    if status.phase.unwrap_or(RequestPhase::Pending) == RequestPhase::Pending {
        event = Some(accept(req, runs, &mut status, now));
    }
    if status.phase == Some(RequestPhase::InProgress)
        && let Some(completed) = follow_targets(runs, &mut status, generation, now)
    {
        event = Some(completed);
    }
    let (delete, requeue_after) = match ttl_left(req, &status, now) {
        Some(Duration::ZERO) => (true, None),
        Some(left) => (false, Some(left)),
        None => (false, None),
    };
    RequestPlan {
        status,
        event,
        delete,
        requeue_after,
    }
}

/// Resolves a pending request's target once: InProgress with the targets
/// recorded, or Rejected when nothing matches.
fn accept<R: Borrow<StageRun>>(
    req: &CancelRequest,
    runs: &[R],
    status: &mut CancelRequestStatus,
    now: Timestamp,
) -> PlannedEvent {
    let generation = req.metadata.generation;
    status.start_time = Some(Time(now));
    let message = match resolve(&req.spec.target, runs) {
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
            set_condition(
                &mut status.conditions,
                COND_COMPLETE,
                "False",
                "InProgress",
                format!("cancelling {} StageRun(s)", status.targets.len()),
                generation,
                now,
            );
            return PlannedEvent::normal(
                "Accepted",
                format!("matched {} StageRun(s)", status.targets.len()),
            );
        }
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
    PlannedEvent::warning("Rejected", message)
}

/// Records what became of each target still Canceling; completes the
/// request (and returns its Event) once none is.
fn follow_targets<R: Borrow<StageRun>>(
    runs: &[R],
    status: &mut CancelRequestStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<PlannedEvent> {
    for t in status.targets.iter_mut() {
        if t.outcome == TargetOutcome::Canceling {
            t.outcome = outcome(
                runs.iter()
                    .map(Borrow::borrow)
                    .find(|r: &&StageRun| r.metadata.uid.as_deref() == Some(t.uid.as_str())),
            );
        }
    }
    let count = |outcome: TargetOutcome| {
        status
            .targets
            .iter()
            .filter(|t| t.outcome == outcome)
            .count()
    };
    let cancelled = count(TargetOutcome::Cancelled);
    status.cancelled = Some(cancelled as i64);
    if count(TargetOutcome::Canceling) > 0 {
        return None;
    }
    let message = format!(
        "{cancelled} of {} StageRun(s) cancelled; {} already finished, {} deleted",
        status.targets.len(),
        count(TargetOutcome::AlreadyFinished),
        count(TargetOutcome::Deleted),
    );
    status.phase = Some(RequestPhase::Completed);
    status.completion_time = Some(Time(now));
    set_condition(
        &mut status.conditions,
        COND_COMPLETE,
        "True",
        "Completed",
        message.clone(),
        generation,
        now,
    );
    Some(PlannedEvent::normal("Completed", message))
}

/// What a plan concludes from a StageRun's absence, which cannot be undone
/// and which a lagging cache can fake: the request rejected because nothing
/// matched, or targets recorded Deleted. Before such a plan is written, the
/// runs it rests on are read from the API server and the request decided
/// again on them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Absence {
    /// Nothing matched the target: all the namespace's runs are needed.
    NoMatch,
    /// These targets (by name) were not found.
    Targets(Vec<String>),
}

impl RequestPlan {
    /// The absence this plan rests on, compared with the request as it is.
    pub fn absence(&self, req: &CancelRequest) -> Option<Absence> {
        let before = req.status.as_ref();
        let was = |phase| before.and_then(|s| s.phase) == Some(phase);
        if self.status.phase == Some(RequestPhase::Rejected) && !was(RequestPhase::Rejected) {
            return Some(Absence::NoMatch);
        }
        let deleted_before: HashSet<&str> = before
            .iter()
            .flat_map(|s| s.targets.iter())
            .filter(|t| t.outcome == TargetOutcome::Deleted)
            .map(|t| t.uid.as_str())
            .collect();
        let newly: Vec<String> = self
            .status
            .targets
            .iter()
            .filter(|t| {
                t.outcome == TargetOutcome::Deleted && !deleted_before.contains(t.uid.as_str())
            })
            .map(|t| t.name.clone())
            .collect();
        (!newly.is_empty()).then_some(Absence::Targets(newly))
    }
}

/// How long a finished request has left to live (zero: delete it now);
/// `None` while it is not finished.
fn ttl_left(req: &CancelRequest, status: &CancelRequestStatus, now: Timestamp) -> Option<Duration> {
    if !matches!(
        status.phase,
        Some(RequestPhase::Completed | RequestPhase::Rejected)
    ) {
        return None;
    }
    let done = status.completion_time.as_ref()?;
    let expires = after_secs(done.0, req.spec.ttl_seconds_after_finished.max(0));
    if now >= expires {
        return Some(Duration::ZERO);
    }
    Some(
        expires
            .duration_since(now)
            .try_into()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
#[path = "request_plan_tests.rs"]
mod tests;
