//! Pure decisions: given what was observed of a StageRun and its children,
//! what the status should be and what to do. No I/O here.

use std::time::Duration;

use super::views::{JobView, PodView};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{
    ApprovalType, CancelCause, CancelMode, CancelRecord, CleanupWhen, JobState, JobStatus,
    RunResult, StagePhase, StageRun, StageRunStatus,
};
use crate::labels;

/// Condition types on a StageRun.
/// How long past the force deadline a suspended Job with no pod left waits
/// for the job controller to report it stopped before it is deleted anyway.
pub const STOP_WAIT: Duration = Duration::from_secs(60);

pub const COND_SUCCEEDED: &str = "Succeeded";
pub const COND_FORCE_DELETED: &str = "PodsForceDeleted";
/// Set by a reconcile that failed on the object itself (it panicked);
/// cleared by the next pass that gets as far as a decision.
pub const COND_RECONCILE_FAILED: &str = "ReconcileFailed";
/// Set while a job's Job could not be created for a reason that may pass.
pub const COND_CREATION_HELD: &str = "JobCreationHeld";

use crate::crd::REASON_DEADLINE;

/// A Kubernetes Job of the StageRun, as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedJob {
    /// The k8s object's name.
    pub resource_name: String,
    /// The k8s object's uid: its pods name it as their controller.
    pub uid: Option<String>,
    /// The stage's job it runs: the one whose Job name it has (see
    /// [`labels::job_resource_name`]); an owned Job of another name stands
    /// for itself.
    pub job: String,
    /// Passed/Failed once the Job has a Complete/Failed condition.
    pub finished: Option<(RunResult, Option<Time>)>,
    /// The job controller failed it for passing its `activeDeadlineSeconds`
    /// (the run's deadline, which the Job carries).
    pub deadline_exceeded: bool,
    pub deleting: bool,
    /// Its spec asks for it to be suspended.
    pub suspended: bool,
    /// The job controller has said it will create no more pods for it: its
    /// status carries `Suspended=True` (with the suspension in its spec), a
    /// finished condition, or the interim `FailureTarget` or
    /// `SuccessCriteriaMet` that precede one. The job controller writes each
    /// from a cache that has seen the suspension (or the end), and creates no
    /// pod for a Job that carries any of them. The interim ones count on their
    /// own because a suspended Job whose pods failed can keep `FailureTarget`
    /// for good: suspending it cleared its `startTime`, which the API server
    /// then requires of the `Failed` write (refused with 422, every retry).
    pub stopped: bool,
    /// The job id it was created with (label).
    pub id: Option<i64>,
}

/// The reason of a Job's `Failed` condition when the job controller ended it
/// at its `activeDeadlineSeconds`.
const JOB_DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

impl ObservedJob {
    /// A Job `run` controls (the caller checks the ownership), and which of
    /// its jobs the Job runs, known by the Job's name: the annotations and
    /// labels on it are anyone's to edit.
    pub fn from_job(job: &JobView, run: &StageRun) -> Option<Self> {
        let meta = &job.metadata;
        let resource_name = meta.name.clone()?;
        let run_uid = run.metadata.uid.as_deref().unwrap_or_default();
        let run_name = run.metadata.name.as_deref().unwrap_or_default();
        let name = run
            .spec
            .job_names()
            .find(|j| labels::job_resource_name(run_name, run_uid, j) == resource_name)
            .map_or_else(|| resource_name.clone(), str::to_string);
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
        let suspended = job.spec.as_ref().and_then(|s| s.suspend) == Some(true);
        let deadline_exceeded =
            cond("Failed").is_some_and(|c| c.reason.as_deref() == Some(JOB_DEADLINE_EXCEEDED));
        Some(ObservedJob {
            deadline_exceeded,
            resource_name,
            uid: meta.uid.clone(),
            job: name,
            stopped: finished.is_some()
                || (suspended && cond("Suspended").is_some())
                || cond("FailureTarget").is_some()
                || cond("SuccessCriteriaMet").is_some(),
            finished,
            deleting: meta.deletion_timestamp.is_some(),
            suspended,
            id: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::JOB_ID))
                .and_then(|v| v.parse().ok()),
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
    /// A pod of one of the run's Jobs (the caller checks the ownership),
    /// of the stage's `job`.
    pub fn from_pod(pod: &PodView, job: Option<String>) -> Self {
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
            job,
            progress,
            deletion_deadline: meta.deletion_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// A cancel the StageRun should act on: of the accepted CancelRequests
/// that target it, the earliest of the strongest mode.
#[derive(Clone, Debug, PartialEq)]
pub struct CancelOrder {
    pub request_name: String,
    pub requested_by: String,
    pub reason: String,
    pub requested_at: Time,
    pub grace_period_seconds: Option<i64>,
    pub mode: CancelMode,
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
    /// Deletions this controller has issued that the caches may not show yet.
    pub issued: Issued,
}

/// How long a deletion this controller issued stands for the object's own
/// mark: a cache that has not shown the mark by then gets the deletion again.
pub const REISSUE_AFTER: Duration = Duration::from_secs(10);

/// Deletions issued by this controller, by object name: a watch event that
/// predates one must not cause it again (each pod would otherwise be
/// deleted once per pass until its cache catches up).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Issued {
    /// Job name → when its deletion was issued.
    pub jobs: std::collections::BTreeMap<String, Timestamp>,
    /// Job name → when its suspension was issued.
    pub suspensions: std::collections::BTreeMap<String, Timestamp>,
    /// Pod name → when its deletion was issued, with which grace period.
    pub pods: std::collections::BTreeMap<String, (Timestamp, i64)>,
}

impl Issued {
    fn recent(now: Timestamp, at: Timestamp) -> bool {
        now.duration_since(at) < SignedDuration::try_from(REISSUE_AFTER).unwrap_or_default()
    }

    /// Drops what is no longer recent.
    pub fn prune(&mut self, now: Timestamp) {
        self.jobs.retain(|_, at| Self::recent(now, *at));
        self.suspensions.retain(|_, at| Self::recent(now, *at));
        self.pods.retain(|_, (at, _)| Self::recent(now, *at));
    }

    /// Adds what was issued since (every kind: destructured, so that a new
    /// kind cannot be left out).
    pub fn merge(&mut self, later: Issued) {
        let Issued {
            jobs,
            suspensions,
            pods,
        } = later;
        self.jobs.extend(jobs);
        self.suspensions.extend(suspensions);
        self.pods.extend(pods);
    }

    /// True when this Job's deletion was issued recently.
    pub fn job(&self, now: Timestamp, name: &str) -> bool {
        self.jobs.get(name).is_some_and(|at| Self::recent(now, *at))
    }

    /// True when this Job's suspension was issued recently.
    pub fn suspension(&self, now: Timestamp, name: &str) -> bool {
        self.suspensions
            .get(name)
            .is_some_and(|at| Self::recent(now, *at))
    }

    /// The recent deletion issued for this pod: when, with which grace.
    pub fn pod(&self, now: Timestamp, name: &str) -> Option<(Timestamp, i64)> {
        self.pods
            .get(name)
            .copied()
            .filter(|(at, _)| Self::recent(now, *at))
    }
}

/// Something to do against the API.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create the Job for this spec job.
    CreateJob { job: String },
    /// Suspend this Job: the job controller stops creating pods for it
    /// (and deletes its active ones), and says so in its status.
    SuspendJob { resource_name: String },
    /// Delete this Job, in the background: only once the job controller
    /// has stopped it, so that no pod can follow (the run's pods are
    /// deleted directly, not left to the garbage collector).
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

impl PlannedEvent {
    pub fn normal(reason: &'static str, note: String) -> Self {
        PlannedEvent {
            warning: false,
            reason,
            note,
        }
    }

    pub fn warning(reason: &'static str, note: String) -> Self {
        PlannedEvent {
            warning: true,
            reason,
            note,
        }
    }
}

/// The outcome of a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: StageRunStatus,
    pub actions: Vec<Action>,
    pub events: Vec<PlannedEvent>,
    pub requeue_after: Option<Duration>,
    /// This plan starts cleanup jobs after a cancel: only once a fresh read
    /// finds none of the cancelled jobs' Jobs and pods left.
    pub confirm: bool,
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

/// `at` plus `d`, held at the ends of time: the numbers users write
/// (deadlines, TTLs, grace periods, even in an edited status) never overflow
/// a timestamp.
pub fn later(at: Timestamp, d: SignedDuration) -> Timestamp {
    at.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `at` plus `secs` seconds, held at the ends of time.
pub fn after_secs(at: Timestamp, secs: i64) -> Timestamp {
    later(at, SignedDuration::from_secs(secs))
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

/// Decides the StageRun's next status and actions: one step per phase.
pub fn plan(obs: &Observation) -> Plan {
    let run = obs.run;
    let mut status = run.status.clone().unwrap_or_default();
    status.observed_generation = run.metadata.generation;
    status
        .conditions
        .retain(|c| c.type_ != COND_RECONCILE_FAILED);
    assign_ids(&mut status, obs);
    let mut p = Plan {
        status,
        actions: Vec::new(),
        events: Vec::new(),
        requeue_after: None,
        confirm: false,
    };
    let phase = p.status.phase.unwrap_or(StagePhase::Pending);
    // Without ids nothing can be recorded yet; the caller allocates them first.
    if phase.is_finished() || p.status.id.is_none() {
        return p;
    }
    record_job_uids(&mut p.status, obs);
    let phase = accept_cancel_or_timeout(obs, phase, &mut p);
    let phase = match phase {
        StagePhase::Pending if !approved(run) => await_approval(obs, &mut p),
        StagePhase::Pending | StagePhase::Running => run_jobs(obs, &mut p),
        StagePhase::Canceling => cancel(obs, &mut p),
        StagePhase::Succeeded | StagePhase::Failed => phase,
    };
    p.status.phase = Some(phase);
    if p.status.result.is_none() {
        p.status.result = Some(RunResult::Unknown);
    }
    p
}

/// What the decision needs before it can be taken: the reconcile observes
/// from caches only, and asks the API server when (and only when) the
/// decision says so.
#[derive(Clone, Debug, PartialEq)]
pub enum Need {
    /// Ids for the run: one stage id and this many job ids.
    Ids { jobs: usize },
    /// A fresh read of these Jobs, which the status names and the cache
    /// lacks: they may just not have reached the cache yet, and only the API
    /// server can say they are gone.
    Jobs { names: Vec<String> },
}

/// What the observation already holds from fresh reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fresh {
    /// The Jobs the cache lacked were read (`Need::Jobs`).
    pub jobs: bool,
    /// All the run's Jobs and pods were read (`Decision::Confirm`).
    pub children: bool,
}

/// The decision of one pass: a plan to apply, or what to read first (then
/// ask again, with the reads in the observation).
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Apply(Plan),
    Need(Need),
    /// This plan reports the run cancelled, which cannot be undone: apply it
    /// only if a fresh read of all the run's Jobs and pods (the API server,
    /// not the cache) finds none; otherwise decide again on what it finds.
    Confirm(Plan),
}

/// Decides a pass: [`plan`], guarded by the reads it must rest on.
pub fn decide(obs: &Observation, fresh: Fresh) -> Decision {
    let run = obs.run;
    let status = run.status.as_ref();
    if status.and_then(|s| s.id).is_none() && obs.ids.is_none() {
        return Decision::Need(Need::Ids {
            jobs: run.spec.jobs.len() + run.spec.cleanup.len(),
        });
    }
    // Not once a cancel is accepted (but for the cleanup jobs it runs): no
    // other Job is created then, and "none left" is confirmed by one list
    // before the run is reported cancelled (a read per pass here would be
    // most of a bulk cancel's requests).
    let followed = |js: &JobStatus| match status.and_then(|s| s.cancel.as_ref()) {
        None => true,
        Some(c) => js.cleanup && c.mode != CancelMode::Terminate,
    };
    if !fresh.jobs && !fresh.children {
        let names: Vec<String> = status
            .iter()
            .flat_map(|s| s.jobs.iter())
            .filter(|js| followed(js))
            .filter(|js| js.state != JobState::Completed)
            .filter_map(|js| js.job_name.clone())
            .filter(|name| obs.jobs.iter().all(|j| &j.resource_name != name))
            .collect();
        if !names.is_empty() {
            return Decision::Need(Need::Jobs { names });
        }
    }
    let p = plan(obs);
    if !fresh.children && (p.confirm || ends_cancel_now(run, &p)) {
        return Decision::Confirm(p);
    }
    Decision::Apply(p)
}

/// True when this plan would report a cancelled (or stopped) run finished.
fn ends_cancel_now(run: &StageRun, p: &Plan) -> bool {
    !run.is_finished()
        && p.status.phase.is_some_and(StagePhase::is_finished)
        && p.status.cancel.is_some()
}

/// Ids come once: allocated by the caller, or taken from Jobs that already
/// carry them (created by a pass whose status write was lost), so that a
/// Job's id label and its `status.jobs[].id` never disagree.
fn assign_ids(status: &mut StageRunStatus, obs: &Observation) {
    if status.id.is_none()
        && let Some((stage_id, job_ids)) = &obs.ids
    {
        status.id = Some(*stage_id);
        let spec = &obs.run.spec;
        status.jobs = spec
            .job_names()
            .zip(job_ids)
            .map(|(name, id)| JobStatus {
                name: name.to_string(),
                id: *id,
                cleanup: spec.cleanup_job(name).is_some(),
                ..JobStatus::default()
            })
            .collect();
    }
    for js in status.jobs.iter_mut() {
        if let Some(id) = jobs_of(obs, &js.name).and_then(|j| j.id) {
            js.id = id;
        }
    }
}

/// Each observed Job's uid, in the status of a run still going: recorded
/// before anything is deleted (the status is written first), so that the
/// Job's pods stay known by it once the Job is gone.
fn record_job_uids(status: &mut StageRunStatus, obs: &Observation) {
    for js in status.jobs.iter_mut() {
        if let Some(uid) = jobs_of(obs, &js.name).and_then(|j| j.uid.as_ref()) {
            js.job_uid = Some(uid.clone());
        }
    }
}

fn jobs_of<'a>(obs: &'a Observation, name: &str) -> Option<&'a ObservedJob> {
    obs.jobs.iter().find(|j| j.job == name)
}

fn pods_of<'a>(obs: &'a Observation, name: &str) -> Vec<&'a ObservedPod> {
    obs.pods
        .iter()
        .filter(|p| p.job.as_deref() == Some(name))
        .collect()
}

/// Accepts a cancel, or a timeout, once; returns the phase to act in.
fn accept_cancel_or_timeout(obs: &Observation, phase: StagePhase, p: &mut Plan) -> StagePhase {
    let run = obs.run;
    let now = obs.now;
    let status = &mut p.status;
    // A run whose jobs have all finished keeps its result, even when a cancel
    // or its deadline is noticed in the same pass (the cancel came too late).
    // A Job the job controller ended at the run's deadline (which it carries,
    // so that the deadline holds while no controller runs) did not finish on
    // its own: the run timed out.
    let naturally_finished = phase == StagePhase::Running
        && !status.jobs.is_empty()
        && status.jobs.iter().all(|js| {
            js.state == JobState::Completed
                || jobs_of(obs, &js.name)
                    .is_some_and(|j| j.finished.is_some() && !j.deadline_exceeded)
        })
        && obs.pods.iter().all(|p| p.progress == PodProgress::Finished);
    if let (Some(record), Some(order)) = (&status.cancel, &obs.cancel)
        && phase == StagePhase::Canceling
        && order.mode > record.mode
    {
        // A stronger mode takes over: who asked for it, and its grace
        // from now.
        let from = record.mode;
        status.cancel = Some(accept_order(run, order, now));
        p.events.push(PlannedEvent::normal(
            mode_reason(order.mode),
            format!("{} (was {from:?})", order_note(order)),
        ));
        return phase;
    }
    if phase == StagePhase::Canceling || status.cancel.is_some() || naturally_finished {
        return phase;
    }
    // The deadline is the stage's jobs': once they have ended, the cleanup
    // jobs run on their own deadlines.
    let jobs_ended = !status.jobs.is_empty()
        && (status.jobs.iter())
            .filter(|js| !js.cleanup)
            .all(|js| js.state == JobState::Completed);
    let deadline = run
        .spec
        .active_deadline_seconds
        .zip(status.start_time.as_ref())
        .filter(|_| !jobs_ended)
        .map(|(secs, start)| after_secs(start.0, secs));
    if let Some(order) = &obs.cancel {
        status.cancel = Some(accept_order(run, order, now));
        p.events.push(PlannedEvent::normal(
            mode_reason(order.mode),
            order_note(order),
        ));
        return StagePhase::Canceling;
    }
    match deadline {
        Some(deadline) if now >= deadline => {
            status.cancel = Some(CancelRecord {
                cause: CancelCause::Deadline,
                request_name: String::new(),
                requested_by: labels::MANAGER.to_string(),
                reason: REASON_DEADLINE.to_string(),
                requested_at: Time(deadline),
                accepted_at: Time(now),
                grace_period_seconds: run.spec.cancel_grace_period_seconds,
                mode: CancelMode::Cancel,
            });
            p.events.push(PlannedEvent {
                warning: true,
                reason: REASON_DEADLINE,
                note: format!(
                    "stage ran longer than activeDeadlineSeconds ({}s); cancelling",
                    run.spec.active_deadline_seconds.unwrap_or_default()
                ),
            });
            StagePhase::Canceling
        }
        Some(deadline) => {
            p.requeue_after = Some(to_std(deadline.duration_since(now)));
            phase
        }
        None => phase,
    }
}

/// The record of a cancel requested by `order`, accepted at `now`.
fn accept_order(run: &StageRun, order: &CancelOrder, now: Timestamp) -> CancelRecord {
    CancelRecord {
        cause: CancelCause::Request,
        request_name: order.request_name.clone(),
        requested_by: order.requested_by.clone(),
        reason: order.reason.clone(),
        requested_at: order.requested_at.clone(),
        accepted_at: Time(now),
        grace_period_seconds: order
            .grace_period_seconds
            .unwrap_or(run.spec.cancel_grace_period_seconds),
        mode: order.mode,
    }
}

/// The Event reason of a cancel accepted in this mode.
fn mode_reason(mode: CancelMode) -> &'static str {
    match mode {
        CancelMode::Stop => "Stopping",
        CancelMode::Cancel => "Canceling",
        CancelMode::Terminate => "Terminating",
    }
}

fn order_note(order: &CancelOrder) -> String {
    let verb = match order.mode {
        CancelMode::Stop => "stopped",
        CancelMode::Cancel => "cancelled",
        CancelMode::Terminate => "terminated",
    };
    format!(
        "{verb} by {} through CancelRequest {}: {}",
        display_or(&order.requested_by, "unknown"),
        order.request_name,
        display_or(&order.reason, "no reason given")
    )
}

/// The `activeDeadlineSeconds` of a Job created for `job` at `now`: a
/// cleanup job's own deadline, or what is left of the run's (see
/// [`job_deadline`]).
pub fn creation_deadline(
    run: &StageRun,
    status: &StageRunStatus,
    job: &str,
    now: Timestamp,
) -> Option<i64> {
    match run.spec.cleanup_job(job) {
        Some(c) => Some(c.active_deadline_seconds.max(1)),
        None => job_deadline(run, status, now),
    }
}

/// The `activeDeadlineSeconds` of a Job created for the run at `now`: what
/// is left of the run's deadline, rounded up, at least a second. The job
/// controller then ends the run's pods at its deadline even while no
/// controller of ours runs; `None` without a deadline.
pub fn job_deadline(run: &StageRun, status: &StageRunStatus, now: Timestamp) -> Option<i64> {
    let secs = run.spec.active_deadline_seconds?;
    let start = status.start_time.as_ref().map_or(now, |t| t.0);
    let left = after_secs(start, secs).duration_since(now);
    let whole = left
        .as_secs()
        .saturating_add(i64::from(left.subsec_nanos() > 0));
    Some(whole.max(1))
}

/// Pending, manual approval not given yet.
fn await_approval(obs: &Observation, p: &mut Plan) -> StagePhase {
    set_condition(
        &mut p.status.conditions,
        COND_SUCCEEDED,
        "Unknown",
        "AwaitingApproval",
        format!(
            "manual stage; annotate with {}=true to run it",
            labels::APPROVED
        ),
        obs.run.metadata.generation,
        obs.now,
    );
    StagePhase::Pending
}

/// Pending or Running: create the Jobs, follow them, end with their result.
fn run_jobs(obs: &Observation, p: &mut Plan) -> StagePhase {
    let now = obs.now;
    if p.status.start_time.is_none() {
        p.status.start_time = Some(Time(now));
        if let Some(secs) = obs.run.spec.active_deadline_seconds {
            p.requeue_after = Some(Duration::from_secs(secs.max(0) as u64));
        }
    }
    for js in p.status.jobs.iter_mut().filter(|js| begun(obs, js)) {
        follow(obs, js, &mut p.actions);
    }
    let jobs_ended = (p.status.jobs.iter())
        .filter(|js| !js.cleanup)
        .all(|js| js.state == JobState::Completed)
        && obs.pods.iter().all(|pod| {
            pod.progress == PodProgress::Finished
                || pod.job.as_deref().is_some_and(|j| is_cleanup(obs, j))
        });
    let cleaning_up = jobs_ended && begin_cleanup(obs, p, false);
    let status = &mut p.status;
    let all_done = status.jobs.iter().all(|j| j.state == JobState::Completed);
    let pods_active = obs.pods.iter().any(|p| p.progress != PodProgress::Finished);
    if !all_done || pods_active {
        let (reason, message) = if cleaning_up {
            ("CleaningUp", "cleanup jobs are running")
        } else {
            ("Running", "jobs are running")
        };
        set_condition(
            &mut status.conditions,
            COND_SUCCEEDED,
            "Unknown",
            reason,
            message.into(),
            obs.run.metadata.generation,
            now,
        );
        return StagePhase::Running;
    }
    end_with_results(obs, p)
}

fn is_cleanup(obs: &Observation, job: &str) -> bool {
    obs.run.spec.cleanup_job(job).is_some()
}

/// A job whose Job is created and followed: any of the stage's jobs, and a
/// cleanup job once the cleanup has begun (it was scheduled, or its Job is
/// there already: made by a pass whose status write was lost).
fn begun(obs: &Observation, js: &JobStatus) -> bool {
    !js.cleanup
        || js.scheduled_at.is_some()
        || js.state == JobState::Completed
        || jobs_of(obs, &js.name).is_some()
}

/// One job's state from its Job and pods; a job never created gets a
/// `CreateJob` action.
fn follow(obs: &Observation, js: &mut JobStatus, actions: &mut Vec<Action>) {
    let now = obs.now;
    let pods = pods_of(obs, &js.name);
    match jobs_of(obs, &js.name) {
        // A cleanup job whose Job could not be created before its deadline.
        None if js.state != JobState::Completed
            && js.job_name.is_none()
            && cleanup_overdue(obs, js) =>
        {
            js.state = JobState::Completed;
            js.result = RunResult::Failed;
            js.completion_time = Some(Time(now));
        }
        // Never created, and not given up on (a refused Job stays Failed).
        None if js.job_name.is_none() && js.state != JobState::Completed => {
            actions.push(Action::CreateJob {
                job: js.name.clone(),
            });
            js.scheduled_at.get_or_insert(Time(now));
        }
        None if js.state != JobState::Completed && js.job_name.is_some() => {
            // Created before, gone now (confirmed by a fresh read, see
            // `decide`): someone deleted it.
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

/// A cleanup job past its own deadline, counted from when it was scheduled.
fn cleanup_overdue(obs: &Observation, js: &JobStatus) -> bool {
    let deadline = obs
        .run
        .spec
        .cleanup_job(&js.name)
        .zip(js.scheduled_at.as_ref());
    deadline.is_some_and(|(c, at)| obs.now >= after_secs(at.0, c.active_deadline_seconds))
}

/// True when the cleanup job `name` runs once the stage's jobs have ended:
/// its `when` against their results, or the cancel.
fn cleanup_wanted(status: &StageRunStatus, when: CleanupWhen) -> bool {
    let jobs = || status.jobs.iter().filter(|js| !js.cleanup);
    let cancelled = status.cancel.is_some();
    match when {
        CleanupWhen::Always => true,
        CleanupWhen::Cancelled => cancelled,
        CleanupWhen::Failed => jobs().any(|js| js.result == RunResult::Failed),
        CleanupWhen::Succeeded => !cancelled && jobs().all(|js| js.result == RunResult::Passed),
    }
}

/// The stage's jobs have ended (after a cancel: none of their Jobs and
/// pods is left): each cleanup job not yet begun is scheduled when its
/// `when` holds (and created) and skipped otherwise. A run that never
/// started (cancelled while pending) and a Terminate skip them all. Returns
/// true while a cleanup job has not ended; the plan asks for the fresh read
/// that must precede a cleanup after a cancel (see [`Decision::Confirm`]).
fn begin_cleanup(obs: &Observation, p: &mut Plan, after_cancel: bool) -> bool {
    let now = obs.now;
    let status = &mut p.status;
    let terminate = status
        .cancel
        .as_ref()
        .is_some_and(|c| c.mode == CancelMode::Terminate);
    let started = status.start_time.is_some();
    let (mut scheduled, mut skipped) = (Vec::new(), Vec::new());
    for i in 0..status.jobs.len() {
        let js = &status.jobs[i];
        if !js.cleanup || begun(obs, js) {
            continue;
        }
        let when = obs.run.spec.cleanup_job(&js.name).map(|c| c.when);
        let runs = !terminate && started && when.is_some_and(|w| cleanup_wanted(status, w));
        let js = &mut status.jobs[i];
        if runs {
            js.scheduled_at = Some(Time(now));
            scheduled.push(js.name.clone());
        } else {
            js.state = JobState::Completed;
            js.result = RunResult::Unknown;
            js.skipped = true;
            js.completion_time = Some(Time(now));
            skipped.push(js.name.clone());
        }
    }
    if !scheduled.is_empty() {
        p.confirm |= after_cancel;
        let also = if skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped: {}", skipped.join(", "))
        };
        p.events.push(PlannedEvent::normal(
            "CleanupStarted",
            format!("running cleanup jobs: {}{also}", scheduled.join(", ")),
        ));
    }
    for js in (p.status.jobs.iter_mut()).filter(|js| scheduled.contains(&js.name)) {
        follow(obs, js, &mut p.actions);
    }
    // After a Terminate, cleanup jobs that had begun are stopped like the
    // others; none is waited for.
    !terminate && (p.status.jobs.iter()).any(|js| js.cleanup && js.state != JobState::Completed)
}

/// Every job has ended and no pod is active: Succeeded when all passed,
/// Failed otherwise.
fn end_with_results(obs: &Observation, p: &mut Plan) -> StagePhase {
    let now = obs.now;
    let generation = obs.run.metadata.generation;
    let status = &mut p.status;
    let not_passed = |j: &&JobStatus| j.result != RunResult::Passed && !j.skipped;
    let mut failed: Vec<&str> = (status.jobs.iter())
        .filter(not_passed)
        .filter(|j| j.result == RunResult::Failed)
        .map(|j| j.name.as_str())
        .collect();
    if failed.is_empty() {
        failed = (status.jobs.iter().filter(not_passed))
            .map(|j| j.name.as_str())
            .collect();
    }
    status.completion_time = Some(completion_time(status, now));
    if failed.is_empty() {
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
        p.events.push(PlannedEvent {
            warning: false,
            reason: "Succeeded",
            note: "all jobs passed".into(),
        });
        return StagePhase::Succeeded;
    }
    status.result = Some(RunResult::Failed);
    // A job that could not be created left its reason; that one is kept.
    let reason = status
        .failure_reason
        .clone()
        .unwrap_or_else(|| format!("job {} failed", failed.join(", ")));
    set_condition(
        &mut status.conditions,
        COND_SUCCEEDED,
        "False",
        "Failed",
        reason.clone(),
        generation,
        now,
    );
    p.events.push(PlannedEvent {
        warning: true,
        reason: "Failed",
        note: reason.clone(),
    });
    status.failure_reason = Some(reason);
    StagePhase::Failed
}

/// Canceling: suspend the Jobs the cancel stops, delete each once the job
/// controller has stopped it, and delete their pods directly (waiting for
/// the garbage collector would make a cancel as slow as its rate limit);
/// force past grace + margin. Once none of the stage's jobs' Jobs and pods
/// is left, the cleanup jobs run (not after a Terminate); the run ends once
/// nothing of it is left: `Failed`/`Cancelled`, or after a Stop with the
/// results its jobs had.
fn cancel(obs: &Observation, p: &mut Plan) -> StagePhase {
    let now = obs.now;
    let record = cancel_record(obs, &mut p.status);
    let mode = record.mode;
    let grace = record.grace_period_seconds.max(0);
    let force_at = later(
        after_secs(record.accepted_at.0, grace),
        SignedDuration::try_from(obs.force_margin).unwrap_or(SignedDuration::MAX),
    );
    let forced = grace == 0 || now >= force_at;
    let stops = |job: Option<&str>| job.is_none_or(|j| stopped_by(obs, mode, j));
    // Jobs left to run (after a Stop, cleanup jobs) are removed once they
    // have ended, their results recorded first; their pods have finished,
    // so their deletion is never a forced one.
    let done = |job: Option<&str>| {
        !stops(job) && job.is_some_and(|j| jobs_of(obs, j).is_some_and(|j| j.finished.is_some()))
    };
    stop_jobs(obs, p, force_at, &|j| stops(Some(j)) || done(Some(j)));
    delete_pods(obs, p, grace, forced, &|pod| stops(pod.job.as_deref()));
    delete_pods(obs, p, grace, false, &|pod| done(pod.job.as_deref()));
    settle_jobs(obs, p, &|j| stops(Some(j)));
    let stage_job = |job: Option<&str>| job.is_none_or(|j| !is_cleanup(obs, j));
    let jobs_left = obs.jobs.iter().any(|j| stage_job(Some(&j.job)))
        || obs.pods.iter().any(|pod| stage_job(pod.job.as_deref()));
    let cleaning = !jobs_left && {
        end_stage_jobs(&mut p.status, now);
        begin_cleanup(obs, p, true)
    };
    if jobs_left || cleaning || !obs.pods.is_empty() || !obs.jobs.is_empty() {
        let message = if jobs_left {
            // No counts: a message that changed with every pod gone would
            // cost a status write per pod.
            "stopping the run's Jobs and pods"
        } else if cleaning {
            "cleanup jobs are running"
        } else {
            "removing the cleanup jobs' Jobs and pods"
        };
        set_condition(
            &mut p.status.conditions,
            COND_SUCCEEDED,
            "Unknown",
            "Canceling",
            message.to_string(),
            obs.run.metadata.generation,
            now,
        );
        // Followed closely while something the cancel stops is left, and
        // while ended Jobs are removed; jobs left to run on their own are
        // followed by their watch events.
        let left = |f: &dyn Fn(Option<&str>) -> bool| {
            obs.jobs.iter().any(|j| f(Some(&j.job)))
                || obs.pods.iter().any(|pod| f(pod.job.as_deref()))
        };
        let until_force = if now < force_at {
            to_std(force_at.duration_since(now))
        } else {
            Duration::from_secs(1)
        };
        p.requeue_after = if left(&stops) {
            Some(until_force.min(Duration::from_secs(5)))
        } else if left(&done) {
            Some(Duration::from_secs(5))
        } else {
            None
        };
        return StagePhase::Canceling;
    }
    if mode == CancelMode::Stop {
        return end_stopped(obs, p, record.is_timeout());
    }
    end_cancelled(obs, p, record.is_timeout())
}

/// True when a cancel in `mode` stops `job`: every job for Terminate; the
/// stage's jobs (not its cleanup jobs) for Cancel; for Stop, the stage's
/// jobs that have not started (no pod running or finished yet) and those
/// being stopped already.
fn stopped_by(obs: &Observation, mode: CancelMode, job: &str) -> bool {
    match mode {
        CancelMode::Terminate => true,
        _ if is_cleanup(obs, job) => false,
        CancelMode::Cancel => true,
        CancelMode::Stop => {
            let Some(j) = jobs_of(obs, job) else {
                return true;
            };
            let stopping =
                j.suspended || j.deleting || obs.issued.suspension(obs.now, &j.resource_name);
            let started = j.finished.is_some()
                || pods_of(obs, job).iter().any(|pod| {
                    matches!(pod.progress, PodProgress::Running | PodProgress::Finished)
                });
            stopping || !started
        }
    }
}

/// None of the stage's jobs' Jobs and pods is left: those not ended yet
/// end Cancelled.
fn end_stage_jobs(status: &mut StageRunStatus, now: Timestamp) {
    for js in status.jobs.iter_mut().filter(|js| !js.cleanup) {
        if js.state != JobState::Completed {
            js.state = JobState::Completed;
            js.result = RunResult::Cancelled;
            js.completion_time = Some(Time(now));
        }
    }
}

/// A stopped run ends with the results its jobs had: `Failed` when one
/// failed, `Cancelled` when one was stopped before it ran, else `Succeeded`.
fn end_stopped(obs: &Observation, p: &mut Plan, timeout: bool) -> StagePhase {
    let any = |r: RunResult| (p.status.jobs.iter()).any(|js| !js.skipped && js.result == r);
    if any(RunResult::Cancelled) && !any(RunResult::Failed) {
        return end_cancelled(obs, p, timeout);
    }
    end_with_results(obs, p)
}

/// The run's cancel record. Canceling always carries one; should it be
/// lost, the cancel goes on from now with the stage's grace period.
fn cancel_record(obs: &Observation, status: &mut StageRunStatus) -> CancelRecord {
    status
        .cancel
        .get_or_insert_with(|| CancelRecord {
            cause: CancelCause::Request,
            request_name: String::new(),
            requested_by: String::new(),
            reason: "Unknown".into(),
            requested_at: Time(obs.now),
            accepted_at: Time(obs.now),
            grace_period_seconds: obs.run.spec.cancel_grace_period_seconds,
            mode: CancelMode::Cancel,
        })
        .clone()
}

/// Jobs first: each is suspended, so that the job controller creates no
/// more pods for it, and deleted only once the job controller says it has
/// stopped it (`Suspended=True` or finished, written from a cache that had
/// seen the suspension). Not before, not even at the force deadline: a Job
/// that is gone can still get a pod from a job controller whose cache lags
/// behind (an API server restart is enough), after "no pod left" was
/// confirmed. Its pods are forced meanwhile, replacements included. The one
/// exception keeps a run from waiting for good on a Job whose status the
/// job controller cannot write (the API server refuses it, as it does for
/// some suspended Jobs whose pods failed): a suspended Job with no pod left
/// [`STOP_WAIT`] past the force deadline is deleted unconfirmed; its lag
/// would have had that long to show.
fn stop_jobs(
    obs: &Observation,
    p: &mut Plan,
    force_at: Timestamp,
    targeted: &dyn Fn(&str) -> bool,
) {
    let now = obs.now;
    let waited_out = SignedDuration::try_from(STOP_WAIT)
        .ok()
        .and_then(|wait| force_at.checked_add(wait).ok())
        .is_some_and(|give_up| now >= give_up);
    for j in obs.jobs.iter().filter(|j| targeted(&j.job)) {
        let name = &j.resource_name;
        if j.deleting || obs.issued.job(now, name) {
            continue;
        }
        let unanswered = j.suspended && waited_out && pods_of(obs, &j.job).is_empty();
        if j.stopped || unanswered {
            p.actions.push(Action::DeleteJob {
                resource_name: name.clone(),
            });
        } else if !j.suspended && !obs.issued.suspension(now, name) {
            p.actions.push(Action::SuspendJob {
                resource_name: name.clone(),
            });
        }
    }
}

/// A pod is deleted once its Job can no longer replace it: the Job is gone,
/// stopped or being deleted. Until then the job controller, which deletes a
/// suspended Job's active pods itself, does it; a pod deleted before that
/// would make the job controller write the Job's status for each pod it saw
/// terminate. Past the force deadline (or with a grace of 0) every pod goes
/// at once, reported by a condition and an Event.
fn delete_pods(
    obs: &Observation,
    p: &mut Plan,
    grace: i64,
    forced: bool,
    targeted: &dyn Fn(&ObservedPod) -> bool,
) {
    let now = obs.now;
    let released = |pod: &ObservedPod| {
        pod.job
            .as_deref()
            .and_then(|name| jobs_of(obs, name))
            .is_none_or(|j| j.stopped || j.deleting)
    };
    // Every pod gets the grace period once; a pod already terminating on a
    // later deadline (a shorter override came) or still there past the force
    // deadline is deleted again, sooner.
    let kill_by = after_secs(now, grace);
    let to_delete: Vec<String> = obs
        .pods
        .iter()
        .filter(|p| targeted(p))
        .filter(|p| forced || released(p))
        .filter(|p| {
            // A deletion issued recently counts as the pod's own mark.
            let issued = obs.issued.pod(now, &p.name);
            if issued.is_some_and(|(_, g)| g == 0) {
                return false;
            }
            let issued_deadline = issued.map(|(at, g)| after_secs(at, g));
            let deadline = match (p.deletion_deadline, issued_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            forced || deadline.is_none_or(|d| d > kill_by)
        })
        .map(|p| p.name.clone())
        .collect();
    if to_delete.is_empty() {
        return;
    }
    p.actions.push(Action::DeletePods {
        names: to_delete.clone(),
        grace_seconds: if forced { 0 } else { grace },
    });
    if !forced {
        return;
    }
    // As Kubernetes says of a deletion with grace 0: the API object goes at
    // once, without the kubelet confirming that the containers stopped.
    let (reason, why) = if grace > 0 {
        (
            "GracePeriodExpired",
            format!(
                "still present {}s after the {grace}s grace period",
                obs.force_margin.as_secs()
            ),
        )
    } else {
        ("GracePeriodZero", "with a grace period of 0".to_string())
    };
    let msg = format!(
        "force-deleted {} pod(s) {why}: {}; immediate deletion does not wait for \
         confirmation that the containers have stopped, which may go on running \
         on their node for a while",
        to_delete.len(),
        to_delete.join(", ")
    );
    let status = &mut p.status;
    if status
        .conditions
        .iter()
        .all(|c| c.type_ != COND_FORCE_DELETED)
    {
        p.events.push(PlannedEvent {
            warning: true,
            reason: "ForceDeleted",
            note: msg.clone(),
        });
    }
    set_condition(
        &mut status.conditions,
        COND_FORCE_DELETED,
        "True",
        reason,
        msg,
        obs.run.metadata.generation,
        now,
    );
}

/// The jobs' states while the cancel goes on: those it stops settle,
/// the others (running on after a Stop, cleanup jobs) are followed.
fn settle_jobs(obs: &Observation, p: &mut Plan, stops: &dyn Fn(&str) -> bool) {
    for js in p.status.jobs.iter_mut() {
        if js.state == JobState::Completed {
            continue;
        }
        if !stops(&js.name) {
            if begun(obs, js) {
                follow(obs, js, &mut p.actions);
            }
            continue;
        }
        let job = jobs_of(obs, &js.name);
        // A job that passed keeps its result. One that fails now was most
        // likely failed by the cancel deleting its pods: it ends Cancelled
        // with the others, and a status write per failing Job is saved.
        if let Some((RunResult::Passed, at)) = job.and_then(|j| j.finished.clone()) {
            js.state = JobState::Completed;
            js.result = RunResult::Passed;
            js.completion_time = Some(at.unwrap_or(Time(obs.now)));
        } else if job.is_some() || !pods_of(obs, &js.name).is_empty() {
            js.state = JobState::Completing;
        }
    }
}

/// Nothing of the run is left: it ends `Failed`/`Cancelled`.
fn end_cancelled(obs: &Observation, p: &mut Plan, timeout: bool) -> StagePhase {
    let now = obs.now;
    let (reason, message) = if timeout {
        (REASON_DEADLINE, "deadline exceeded")
    } else {
        ("Cancelled", "task was cancelled")
    };
    let status = &mut p.status;
    for js in status.jobs.iter_mut() {
        if js.state != JobState::Completed {
            js.state = JobState::Completed;
            js.result = RunResult::Cancelled;
            js.completion_time = Some(Time(now));
        }
    }
    status.result = Some(RunResult::Cancelled);
    status.failure_reason = Some(message.to_string());
    status.completion_time = Some(completion_time(status, now));
    set_condition(
        &mut status.conditions,
        COND_SUCCEEDED,
        "False",
        reason,
        message.to_string(),
        obs.run.metadata.generation,
        now,
    );
    let forced = status
        .conditions
        .iter()
        .any(|c| c.type_ == COND_FORCE_DELETED && c.status == "True");
    let left = if forced {
        "no pod object of it remains; some were force-deleted, and their \
         containers may still be stopping on their nodes"
    } else {
        "no pod of it remains"
    };
    p.events.push(PlannedEvent {
        warning: false,
        reason: "Cancelled",
        note: format!("{message}; {left}"),
    });
    StagePhase::Failed
}

/// What came of creating one Job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobCreation {
    /// Created now, under this name, with this uid.
    Created {
        resource_name: String,
        uid: Option<String>,
    },
    /// Already there and owned by this StageRun (created by an earlier pass
    /// whose status write was lost), with the id it was created with.
    AlreadyOurs {
        resource_name: String,
        uid: Option<String>,
        id: Option<i64>,
    },
    /// The name is taken by a Job this StageRun does not own.
    NameTaken { resource_name: String },
    /// The API server refused it for good (invalid, or denied by policy).
    Refused { message: String },
    /// Not created this time, for a reason that may pass: forbidden (a
    /// quota, a policy or a webhook), or the API server unreachable or
    /// overloaded. Tried again with backoff; the run's deadline runs on.
    Held { message: String },
}

/// Records the outcomes of `CreateJob` actions in the plan, every one of
/// them: the second pure step of a pass. A job that cannot be created ends
/// Failed, once, with a Warning Event that says why; it is never tried
/// again. A job whose creation is held stays scheduled, and the
/// `JobCreationHeld` condition (with one Event while it says the same)
/// names it and why until every job is created.
pub fn record_creations(p: &mut Plan, outcomes: &[(String, JobCreation)], now: Timestamp) {
    let mut held = Vec::new();
    for (job, outcome) in outcomes {
        let Some(js) = p.status.jobs.iter_mut().find(|j| &j.name == job) else {
            continue;
        };
        let failure = match outcome {
            JobCreation::Created { resource_name, uid } => {
                js.job_name = Some(resource_name.clone());
                js.job_uid.clone_from(uid);
                None
            }
            JobCreation::AlreadyOurs {
                resource_name,
                uid,
                id,
            } => {
                js.job_name = Some(resource_name.clone());
                js.job_uid.clone_from(uid);
                if let Some(id) = id {
                    js.id = *id;
                }
                None
            }
            JobCreation::NameTaken { resource_name } => Some((
                "JobNameTaken",
                format!(
                    "job {job} could not be created: Job {resource_name} already exists and belongs to another owner"
                ),
            )),
            JobCreation::Refused { message } => Some((
                "InvalidJob",
                format!("job {job} could not be created: {message}"),
            )),
            JobCreation::Held { message } => {
                held.push(format!("job {job}: {message}"));
                None
            }
        };
        if let Some((reason, message)) = failure {
            js.state = JobState::Completed;
            js.result = RunResult::Failed;
            js.completion_time = Some(Time(now));
            p.status.failure_reason = Some(message.clone());
            p.events.push(PlannedEvent {
                warning: true,
                reason,
                note: message,
            });
        }
    }
    record_held(p, &held, now);
}

/// Sets or clears `JobCreationHeld` after a pass that created Jobs.
fn record_held(p: &mut Plan, held: &[String], now: Timestamp) {
    let conditions = &mut p.status.conditions;
    if held.is_empty() {
        conditions.retain(|c| c.type_ != COND_CREATION_HELD);
        return;
    }
    let message = format!("not created yet, retried with backoff: {}", held.join("; "));
    let said = conditions
        .iter()
        .any(|c| c.type_ == COND_CREATION_HELD && c.message == message);
    if !said {
        p.events
            .push(PlannedEvent::warning(COND_CREATION_HELD, message.clone()));
    }
    let generation = p.status.observed_generation;
    set_condition(
        conditions,
        COND_CREATION_HELD,
        "True",
        "CreationFailed",
        message,
        generation,
        now,
    );
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

#[cfg(test)]
#[path = "decide_tests.rs"]
mod decide_tests;
