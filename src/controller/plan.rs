//! Pure decisions: given what was observed of a StageRun and its children,
//! what the status should be and what to do. No I/O here.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{
    ApprovalType, CancelRecord, JobState, JobStatus, RunResult, StagePhase, StageRun,
    StageRunStatus,
};
use crate::labels;

/// How long the controller waits past the grace period before force-deleting.
pub const DEFAULT_FORCE_MARGIN: Duration = Duration::from_secs(10);

/// Condition types on a StageRun.
pub const COND_SUCCEEDED: &str = "Succeeded";
pub const COND_FORCE_DELETED: &str = "PodsForceDeleted";

/// A Kubernetes Job of the StageRun, as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedJob {
    /// The k8s object's name.
    pub resource_name: String,
    /// The stage's job it runs (annotation).
    pub job: String,
    /// Passed/Failed once the Job has a Complete/Failed condition.
    pub finished: Option<(RunResult, Option<Time>)>,
    pub deleting: bool,
}

impl ObservedJob {
    pub fn from_job(job: &Job) -> Option<Self> {
        let meta = &job.metadata;
        let name = meta.annotations.as_ref()?.get(labels::JOB_NAME)?.clone();
        let status = job.status.as_ref();
        let cond = |t: &str| {
            status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == t && c.status == "True"))
        };
        let finished = if let Some(c) = cond("Complete") {
            let at = status
                .and_then(|s| s.completion_time.clone())
                .or(c.last_transition_time.clone());
            Some((RunResult::Passed, at))
        } else {
            cond("Failed").map(|c| (RunResult::Failed, c.last_transition_time.clone()))
        };
        Some(ObservedJob {
            resource_name: meta.name.clone()?,
            job: name,
            finished,
            deleting: meta.deletion_timestamp.is_some(),
        })
    }
}

/// Where a pod of the StageRun is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodProgress {
    Unscheduled,
    Assigned,
    Preparing,
    Running,
    Finished,
}

/// A pod of the StageRun, as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedPod {
    pub name: String,
    pub job: Option<String>,
    pub progress: PodProgress,
    /// When the pod will be killed, if it is being deleted.
    pub deletion_deadline: Option<Timestamp>,
}

impl ObservedPod {
    pub fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        let progress = match phase {
            "Running" => PodProgress::Running,
            "Succeeded" | "Failed" => PodProgress::Finished,
            _ if pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_none() =>
            {
                PodProgress::Unscheduled
            }
            _ if status
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| !c.is_empty()) =>
            {
                PodProgress::Preparing
            }
            _ => PodProgress::Assigned,
        };
        ObservedPod {
            name: meta.name.clone().unwrap_or_default(),
            job: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::JOB_NAME))
                .cloned(),
            progress,
            deletion_deadline: meta.deletion_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// A cancel the StageRun should act on: the earliest accepted CancelRequest
/// that targets it.
#[derive(Clone, Debug, PartialEq)]
pub struct CancelOrder {
    pub request_name: String,
    pub requested_by: String,
    pub reason: String,
    pub requested_at: Time,
    pub grace_period_seconds: Option<i64>,
}

/// Everything the decision needs.
pub struct Observation<'a> {
    pub now: Timestamp,
    pub run: &'a StageRun,
    /// Ids allocated for the run: stage id and one id per spec job, in order.
    pub ids: Option<(i64, Vec<i64>)>,
    pub jobs: Vec<ObservedJob>,
    pub pods: Vec<ObservedPod>,
    pub cancel: Option<CancelOrder>,
    pub force_margin: Duration,
}

/// Something to do against the API.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create the Job for this spec job.
    CreateJob { job: String },
    /// Delete this Job, its pods with it (Background propagation).
    DeleteJob { resource_name: String },
    /// Delete these pods with this grace period (shortening a longer one).
    DeletePods {
        names: Vec<String>,
        grace_seconds: i64,
    },
}

/// A Kubernetes Event to record on the StageRun.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The outcome of a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: StageRunStatus,
    pub actions: Vec<Action>,
    pub events: Vec<PlannedEvent>,
    pub requeue_after: Option<Duration>,
}

fn approved(run: &StageRun) -> bool {
    run.spec.approval_type == ApprovalType::Success
        || run
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::APPROVED))
            .is_some_and(|v| v == "true")
}

fn since(now: Timestamp, at: &Time) -> SignedDuration {
    now.duration_since(at.0)
}

fn to_std(d: SignedDuration) -> Duration {
    d.try_into().unwrap_or(Duration::ZERO)
}

/// State of one job from its Job (if any) and pods.
pub fn job_progress(job: Option<&ObservedJob>, pods: &[&ObservedPod]) -> (JobState, RunResult) {
    if let Some((result, _)) = job.and_then(|j| j.finished.as_ref()) {
        return (JobState::Completed, *result);
    }
    if job.is_some_and(|j| j.deleting) || pods.iter().any(|p| p.deletion_deadline.is_some()) {
        return (JobState::Completing, RunResult::Unknown);
    }
    let has = |p: PodProgress| pods.iter().any(|pod| pod.progress == p);
    let state = if has(PodProgress::Running) {
        JobState::Building
    } else if has(PodProgress::Finished) {
        JobState::Completing
    } else if has(PodProgress::Preparing) {
        JobState::Preparing
    } else if has(PodProgress::Assigned) {
        JobState::Assigned
    } else {
        JobState::Scheduled
    };
    (state, RunResult::Unknown)
}

/// Sets a condition, keeping its transition time when its status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let cond = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = cond,
        None => conditions.push(cond),
    }
}

/// Decides the StageRun's next status and actions.
pub fn plan(obs: &Observation) -> Plan {
    let run = obs.run;
    let now = obs.now;
    let generation = run.metadata.generation;
    let mut status = run.status.clone().unwrap_or_default();
    let mut actions = Vec::new();
    let mut events = Vec::new();
    let mut requeue_after = None;
    status.observed_generation = generation;

    if status.id.is_none()
        && let Some((stage_id, job_ids)) = &obs.ids
    {
        status.id = Some(*stage_id);
        status.jobs = run
            .spec
            .jobs
            .iter()
            .zip(job_ids)
            .map(|(j, id)| JobStatus {
                name: j.name.clone(),
                id: *id,
                ..JobStatus::default()
            })
            .collect();
    }
    let mut phase = status.phase.unwrap_or(StagePhase::Pending);

    // Without ids nothing can be recorded yet; the caller allocates them first.
    if phase.is_finished() || status.id.is_none() {
        return Plan {
            status,
            actions,
            events,
            requeue_after,
        };
    }

    let find_job = |name: &str| obs.jobs.iter().find(|j| j.job == name);
    let pods_of = |name: &str| -> Vec<&ObservedPod> {
        obs.pods
            .iter()
            .filter(|p| p.job.as_deref() == Some(name))
            .collect()
    };

    // A run whose jobs have all finished keeps its result, even when a cancel
    // or its deadline is noticed in the same pass (the cancel came too late).
    let naturally_finished = phase == StagePhase::Running
        && !status.jobs.is_empty()
        && status.jobs.iter().all(|js| {
            js.state == JobState::Completed
                || find_job(&js.name).is_some_and(|j| j.finished.is_some())
        })
        && obs.pods.iter().all(|p| p.progress == PodProgress::Finished);

    // Accept a cancel, or a timeout, once.
    if phase != StagePhase::Canceling && status.cancel.is_none() && !naturally_finished {
        let deadline = run
            .spec
            .active_deadline_seconds
            .zip(status.start_time.as_ref())
            .map(|(secs, start)| start.0 + SignedDuration::from_secs(secs));
        if let Some(order) = &obs.cancel {
            let grace = order
                .grace_period_seconds
                .unwrap_or(run.spec.cancel_grace_period_seconds);
            status.cancel = Some(CancelRecord {
                request_name: order.request_name.clone(),
                requested_by: order.requested_by.clone(),
                reason: order.reason.clone(),
                requested_at: order.requested_at.clone(),
                accepted_at: Time(now),
                grace_period_seconds: grace,
            });
            phase = StagePhase::Canceling;
            events.push(PlannedEvent {
                warning: false,
                reason: "Canceling",
                note: format!(
                    "cancelled by {} through CancelRequest {}: {}",
                    display_or(&order.requested_by, "unknown"),
                    order.request_name,
                    display_or(&order.reason, "no reason given")
                ),
            });
        } else if let Some(deadline) = deadline {
            if now >= deadline {
                status.cancel = Some(CancelRecord {
                    request_name: String::new(),
                    requested_by: labels::MANAGER.to_string(),
                    reason: "DeadlineExceeded".to_string(),
                    requested_at: Time(deadline),
                    accepted_at: Time(now),
                    grace_period_seconds: run.spec.cancel_grace_period_seconds,
                });
                phase = StagePhase::Canceling;
                events.push(PlannedEvent {
                    warning: true,
                    reason: "DeadlineExceeded",
                    note: format!(
                        "stage ran longer than activeDeadlineSeconds ({}s); cancelling",
                        run.spec.active_deadline_seconds.unwrap_or_default()
                    ),
                });
            } else {
                requeue_after = Some(to_std(deadline.duration_since(now)));
            }
        }
    }

    match phase {
        StagePhase::Pending if !approved(run) => {
            set_condition(
                &mut status.conditions,
                COND_SUCCEEDED,
                "Unknown",
                "AwaitingApproval",
                format!(
                    "manual stage; annotate with {}=true to run it",
                    labels::APPROVED
                ),
                generation,
                now,
            );
        }
        StagePhase::Pending | StagePhase::Running => {
            if status.start_time.is_none() {
                status.start_time = Some(Time(now));
                if let Some(secs) = run.spec.active_deadline_seconds {
                    requeue_after = Some(Duration::from_secs(secs.max(0) as u64));
                }
            }
            phase = StagePhase::Running;
            for js in status.jobs.iter_mut() {
                let observed = find_job(&js.name);
                let pods = pods_of(&js.name);
                match observed {
                    None if js.job_name.is_none() => {
                        actions.push(Action::CreateJob {
                            job: js.name.clone(),
                        });
                        js.scheduled_at.get_or_insert(Time(now));
                    }
                    None if js.state != JobState::Completed => {
                        // Created before, gone now: someone deleted it.
                        js.state = JobState::Completed;
                        js.result = RunResult::Failed;
                        js.completion_time = Some(Time(now));
                    }
                    None => {}
                    Some(j) => {
                        js.job_name = Some(j.resource_name.clone());
                        js.scheduled_at.get_or_insert(Time(now));
                        let (state, result) = job_progress(Some(j), &pods);
                        js.state = state;
                        js.result = result;
                        if let Some((_, at)) = &j.finished {
                            js.completion_time = Some(at.clone().unwrap_or(Time(now)));
                        }
                    }
                }
            }
            let all_done = status.jobs.iter().all(|j| j.state == JobState::Completed);
            let pods_active = obs.pods.iter().any(|p| p.progress != PodProgress::Finished);
            if all_done && !pods_active {
                let failed: Vec<&str> = status
                    .jobs
                    .iter()
                    .filter(|j| j.result != RunResult::Passed)
                    .map(|j| j.name.as_str())
                    .collect();
                status.completion_time = Some(completion_time(&status, now));
                if failed.is_empty() {
                    phase = StagePhase::Succeeded;
                    status.result = Some(RunResult::Passed);
                    set_condition(
                        &mut status.conditions,
                        COND_SUCCEEDED,
                        "True",
                        "Succeeded",
                        "all jobs passed".into(),
                        generation,
                        now,
                    );
                    events.push(PlannedEvent {
                        warning: false,
                        reason: "Succeeded",
                        note: "all jobs passed".into(),
                    });
                } else {
                    phase = StagePhase::Failed;
                    status.result = Some(RunResult::Failed);
                    let reason = format!("job {} failed", failed.join(", "));
                    set_condition(
                        &mut status.conditions,
                        COND_SUCCEEDED,
                        "False",
                        "Failed",
                        reason.clone(),
                        generation,
                        now,
                    );
                    events.push(PlannedEvent {
                        warning: true,
                        reason: "Failed",
                        note: reason.clone(),
                    });
                    status.failure_reason = Some(reason);
                }
            } else {
                set_condition(
                    &mut status.conditions,
                    COND_SUCCEEDED,
                    "Unknown",
                    "Running",
                    "jobs are running".into(),
                    generation,
                    now,
                );
            }
        }
        StagePhase::Canceling => {
            // Canceling always carries its record; should it be lost, the
            // cancel goes on from now with the stage's grace period.
            let cancel = status
                .cancel
                .get_or_insert_with(|| CancelRecord {
                    request_name: String::new(),
                    requested_by: String::new(),
                    reason: "Unknown".into(),
                    requested_at: Time(now),
                    accepted_at: Time(now),
                    grace_period_seconds: run.spec.cancel_grace_period_seconds,
                })
                .clone();
            let timeout = cancel.reason == "DeadlineExceeded" && cancel.request_name.is_empty();
            let grace = cancel.grace_period_seconds.max(0);
            let force_at = cancel.accepted_at.0
                + SignedDuration::from_secs(grace)
                + SignedDuration::try_from(obs.force_margin).unwrap_or(SignedDuration::ZERO);

            for j in &obs.jobs {
                if !j.deleting {
                    actions.push(Action::DeleteJob {
                        resource_name: j.resource_name.clone(),
                    });
                }
            }
            // Pods get the grace period; their template already carries the
            // stage's, so only a shorter override or the force deadline needs
            // explicit deletes.
            let forced = grace == 0 || now >= force_at;
            let kill_by = now + SignedDuration::from_secs(grace);
            let shorten: Vec<String> = obs
                .pods
                .iter()
                .filter(|p| {
                    forced
                        || (grace < run.spec.cancel_grace_period_seconds
                            && p.progress != PodProgress::Finished
                            && p.deletion_deadline.is_none_or(|d| d > kill_by))
                })
                .map(|p| p.name.clone())
                .collect();
            if !shorten.is_empty() {
                actions.push(Action::DeletePods {
                    names: shorten.clone(),
                    grace_seconds: if forced { 0 } else { grace },
                });
                if forced && grace > 0 {
                    let msg = format!(
                        "force-deleted {} pod(s) still present {}s after the {}s grace period: {}",
                        shorten.len(),
                        obs.force_margin.as_secs(),
                        grace,
                        shorten.join(", ")
                    );
                    if status
                        .conditions
                        .iter()
                        .all(|c| c.type_ != COND_FORCE_DELETED)
                    {
                        events.push(PlannedEvent {
                            warning: true,
                            reason: "ForceDeleted",
                            note: msg.clone(),
                        });
                    }
                    set_condition(
                        &mut status.conditions,
                        COND_FORCE_DELETED,
                        "True",
                        "GracePeriodExpired",
                        msg,
                        generation,
                        now,
                    );
                }
            }

            for js in status.jobs.iter_mut() {
                if js.state == JobState::Completed {
                    continue;
                }
                if let Some((result, at)) = find_job(&js.name).and_then(|j| j.finished.clone()) {
                    js.state = JobState::Completed;
                    js.result = result;
                    js.completion_time = Some(at.unwrap_or(Time(now)));
                } else if find_job(&js.name).is_some() || !pods_of(&js.name).is_empty() {
                    js.state = JobState::Completing;
                }
            }

            let (reason, message) = if timeout {
                ("DeadlineExceeded", "deadline exceeded")
            } else {
                ("Cancelled", "task was cancelled")
            };
            if obs.pods.is_empty() && obs.jobs.is_empty() {
                for js in status.jobs.iter_mut() {
                    if js.state != JobState::Completed {
                        js.state = JobState::Completed;
                        js.result = RunResult::Cancelled;
                        js.completion_time = Some(Time(now));
                    }
                }
                phase = StagePhase::Failed;
                status.result = Some(RunResult::Cancelled);
                status.failure_reason = Some(message.to_string());
                status.completion_time = Some(completion_time(&status, now));
                set_condition(
                    &mut status.conditions,
                    COND_SUCCEEDED,
                    "False",
                    reason,
                    message.to_string(),
                    generation,
                    now,
                );
                events.push(PlannedEvent {
                    warning: false,
                    reason: "Cancelled",
                    note: format!("{message}; no pod of it remains"),
                });
            } else {
                set_condition(
                    &mut status.conditions,
                    COND_SUCCEEDED,
                    "Unknown",
                    "Canceling",
                    format!(
                        "stopping {} pod(s) and {} Job(s)",
                        obs.pods.len(),
                        obs.jobs.len()
                    ),
                    generation,
                    now,
                );
                let until_force = if now < force_at {
                    to_std(force_at.duration_since(now))
                } else {
                    Duration::from_secs(1)
                };
                requeue_after = Some(until_force.min(Duration::from_secs(5)));
            }
        }
        StagePhase::Succeeded | StagePhase::Failed => {}
    }

    status.phase = Some(phase);
    if status.result.is_none() {
        status.result = Some(RunResult::Unknown);
    }
    Plan {
        status,
        actions,
        events,
        requeue_after,
    }
}

/// A completion time no earlier than any job's.
fn completion_time(status: &StageRunStatus, now: Timestamp) -> Time {
    let latest = status
        .jobs
        .iter()
        .filter_map(|j| j.completion_time.as_ref().map(|t| t.0))
        .max()
        .unwrap_or(now);
    Time(latest.max(now))
}

fn display_or<'a>(s: &'a str, fallback: &'a str) -> &'a str {
    if s.is_empty() { fallback } else { s }
}

/// Seconds since `at`, for metrics.
pub fn seconds_since(now: Timestamp, at: &Time) -> f64 {
    since(now, at).as_secs_f64()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
