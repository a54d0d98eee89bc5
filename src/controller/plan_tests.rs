//! Tests of the pure StageRun decisions: every phase against every change,
//! the invariants of the cancel rules, and the helpers that read Jobs and pods.

use serde_json::{Value, json};

use super::*;
use crate::controller::views::{JobView, PodView};

// ---------------------------------------------------------------- fixtures --

const GENERATION: i64 = 3;
const GRACE: i64 = 30;
const DEADLINE: i64 = 600;
const MARGIN: Duration = Duration::from_secs(10);
const UNIT_JOB: &str = "build-7-test-unit";
const LINT_JOB: &str = "build-7-test-lint";

use crate::controller::test_clock::{at, t0, time};

/// A two-job StageRun (`unit`, `lint`) with a 30s grace and a 600s deadline.
fn stage_run(approval: &str, annotations: Value, status: Option<StageRunStatus>) -> StageRun {
    let template = json!({"spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}});
    let mut run: StageRun = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1",
        "kind": "StageRun",
        "metadata": {
            "name": "build-7-test",
            "namespace": "ci",
            "uid": "6f1c2f0e-0000-4000-8000-000000000007",
            "generation": GENERATION,
            "annotations": annotations,
        },
        "spec": {
            "pipeline": "build",
            "pipelineCounter": 7,
            "stage": "test",
            "approvalType": approval,
            "cancelGracePeriodSeconds": GRACE,
            "activeDeadlineSeconds": DEADLINE,
            "jobs": [
                {"name": "unit", "template": template.clone()},
                {"name": "lint", "template": template},
            ],
        },
    }))
    .unwrap();
    run.status = status;
    run
}

fn approved_annotation() -> Value {
    json!({ "cancel.dev/approved": "true" })
}

fn job_status(name: &str, id: i64, state: JobState, result: RunResult) -> JobStatus {
    JobStatus {
        name: name.into(),
        id,
        state,
        result,
        ..JobStatus::default()
    }
}

fn condition(type_: &str, status: &str, reason: &str, since: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: Some(GENERATION),
        last_transition_time: time(since),
    }
}

/// A manual run with ids, waiting for approval.
fn pending_status() -> StageRunStatus {
    StageRunStatus {
        id: Some(500),
        phase: Some(StagePhase::Pending),
        result: Some(RunResult::Unknown),
        jobs: vec![
            job_status("unit", 501, JobState::Scheduled, RunResult::Unknown),
            job_status("lint", 502, JobState::Scheduled, RunResult::Unknown),
        ],
        observed_generation: Some(GENERATION),
        conditions: vec![condition(
            COND_SUCCEEDED,
            "Unknown",
            "AwaitingApproval",
            -120,
        )],
        ..StageRunStatus::default()
    }
}

/// Started 60s ago: `unit` builds, `lint` passed 30s ago.
fn running_status() -> StageRunStatus {
    let mut unit = job_status("unit", 501, JobState::Building, RunResult::Unknown);
    unit.job_name = Some(UNIT_JOB.into());
    unit.scheduled_at = Some(time(-60));
    let mut lint = job_status("lint", 502, JobState::Completed, RunResult::Passed);
    lint.job_name = Some(LINT_JOB.into());
    lint.scheduled_at = Some(time(-60));
    lint.completion_time = Some(time(-30));
    StageRunStatus {
        id: Some(500),
        phase: Some(StagePhase::Running),
        result: Some(RunResult::Unknown),
        jobs: vec![unit, lint],
        start_time: Some(time(-60)),
        observed_generation: Some(GENERATION),
        conditions: vec![condition(COND_SUCCEEDED, "Unknown", "Running", -60)],
        ..StageRunStatus::default()
    }
}

/// The cancel accepted 5s ago (by request `first`, grace 30s).
fn first_cancel() -> CancelRecord {
    CancelRecord {
        cause: CancelCause::Request,
        request_name: "first".into(),
        requested_by: "bob".into(),
        reason: "superseded".into(),
        requested_at: time(-6),
        accepted_at: time(-5),
        grace_period_seconds: GRACE,
        mode: CancelMode::Cancel,
    }
}

fn canceling_status() -> StageRunStatus {
    let mut status = running_status();
    status.phase = Some(StagePhase::Canceling);
    status.jobs[0].state = JobState::Completing;
    status.cancel = Some(first_cancel());
    status.conditions = vec![condition(COND_SUCCEEDED, "Unknown", "Canceling", -5)];
    status
}

fn succeeded_status() -> StageRunStatus {
    let mut status = running_status();
    status.phase = Some(StagePhase::Succeeded);
    status.result = Some(RunResult::Passed);
    status.jobs[0].state = JobState::Completed;
    status.jobs[0].result = RunResult::Passed;
    status.jobs[0].completion_time = Some(time(-10));
    status.completion_time = Some(time(-10));
    status.conditions = vec![condition(COND_SUCCEEDED, "True", "Succeeded", -10)];
    status
}

fn failed_status() -> StageRunStatus {
    let mut status = succeeded_status();
    status.phase = Some(StagePhase::Failed);
    status.result = Some(RunResult::Failed);
    status.jobs[0].result = RunResult::Failed;
    status.failure_reason = Some("job unit failed".into());
    status.conditions = vec![condition(COND_SUCCEEDED, "False", "Failed", -10)];
    status
}

fn observed_job(resource_name: &str, job: &str) -> ObservedJob {
    ObservedJob {
        resource_name: resource_name.into(),
        uid: None,
        job: job.into(),
        finished: None,
        deadline_exceeded: false,
        deleting: false,
        suspended: false,
        stopped: false,
        id: None,
    }
}

fn finished(job: ObservedJob, result: RunResult, secs: i64) -> ObservedJob {
    ObservedJob {
        finished: Some((result, Some(time(secs)))),
        stopped: true,
        ..job
    }
}

fn suspended(job: ObservedJob) -> ObservedJob {
    ObservedJob {
        suspended: true,
        ..job
    }
}

fn deleting(job: ObservedJob) -> ObservedJob {
    ObservedJob {
        deleting: true,
        ..job
    }
}

fn pod(name: &str, job: &str, progress: PodProgress) -> ObservedPod {
    ObservedPod {
        name: name.into(),
        job: Some(job.into()),
        progress,
        deletion_deadline: None,
    }
}

fn order(grace: Option<i64>) -> CancelOrder {
    CancelOrder {
        request_name: "stop-it".into(),
        requested_by: "alice".into(),
        reason: "wrong branch".into(),
        requested_at: time(-1),
        grace_period_seconds: grace,
        mode: CancelMode::Cancel,
    }
}

/// What a reconcile pass would observe.
#[derive(Clone)]
struct World {
    run: StageRun,
    ids: Option<(i64, Vec<i64>)>,
    jobs: Vec<ObservedJob>,
    pods: Vec<ObservedPod>,
    cancel: Option<CancelOrder>,
    now: Timestamp,
    force_margin: Duration,
    issued: Issued,
}

impl World {
    fn new(run: StageRun) -> Self {
        World {
            run,
            ids: None,
            jobs: Vec::new(),
            pods: Vec::new(),
            cancel: None,
            now: t0(),
            force_margin: MARGIN,
            issued: Issued::default(),
        }
    }

    fn plan(&self) -> Plan {
        plan(&Observation {
            now: self.now,
            run: &self.run,
            ids: self.ids.clone(),
            jobs: self.jobs.clone(),
            pods: self.pods.clone(),
            cancel: self.cancel.clone(),
            force_margin: self.force_margin,
            issued: self.issued.clone(),
        })
    }

    /// Replaces the `unit` Job (keeping its deleting and suspended flags)
    /// or adds one.
    fn put_unit_job(&mut self, finished: Option<(RunResult, Option<Time>)>) {
        let was =
            |flag: fn(&ObservedJob) -> bool| self.jobs.iter().any(|j| j.job == "unit" && flag(j));
        let (deleting, suspended) = (was(|j| j.deleting), was(|j| j.suspended));
        self.jobs.retain(|j| j.job != "unit");
        self.jobs.insert(
            0,
            ObservedJob {
                stopped: finished.is_some(),
                finished,
                deleting,
                suspended,
                ..observed_job(UNIT_JOB, "unit")
            },
        );
    }

    /// Replaces the `unit` pods with one (keeping its deletion deadline).
    fn put_unit_pod(&mut self, progress: PodProgress) {
        let deadline = self
            .pods
            .iter()
            .find(|p| p.job.as_deref() == Some("unit"))
            .and_then(|p| p.deletion_deadline);
        self.pods.retain(|p| p.job.as_deref() != Some("unit"));
        self.pods.insert(
            0,
            ObservedPod {
                deletion_deadline: deadline,
                ..pod("unit-pod", "unit", progress)
            },
        );
    }
}

/// Where a StageRun is before the pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    NoStatus,
    AwaitingApproval,
    Approved,
    Running,
    Canceling,
    Succeeded,
    Failed,
}

const STARTS: [Start; 7] = [
    Start::NoStatus,
    Start::AwaitingApproval,
    Start::Approved,
    Start::Running,
    Start::Canceling,
    Start::Succeeded,
    Start::Failed,
];

/// What changed since the last pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Nothing,
    IdsAllocated,
    ApprovalAdded,
    PodsProgress,
    JobCompletes,
    JobFails,
    JobDisappears,
    CancelArrives,
    DeadlinePasses,
    AllGone,
    ForceDeadlinePasses,
    GraceOverrideZero,
}

const CHANGES: [Change; 12] = [
    Change::Nothing,
    Change::IdsAllocated,
    Change::ApprovalAdded,
    Change::PodsProgress,
    Change::JobCompletes,
    Change::JobFails,
    Change::JobDisappears,
    Change::CancelArrives,
    Change::DeadlinePasses,
    Change::AllGone,
    Change::ForceDeadlinePasses,
    Change::GraceOverrideZero,
];

/// The world of a run in `start`, with nothing new. A run without status comes
/// with ids: the reconcile allocates them whenever `status.id` is unset.
fn baseline(start: Start) -> World {
    let no_annotations = json!({});
    match start {
        Start::NoStatus => World {
            ids: Some((500, vec![501, 502])),
            ..World::new(stage_run("success", no_annotations, None))
        },
        Start::AwaitingApproval => {
            World::new(stage_run("manual", no_annotations, Some(pending_status())))
        }
        Start::Approved => World::new(stage_run(
            "manual",
            approved_annotation(),
            Some(pending_status()),
        )),
        Start::Running => World {
            jobs: vec![
                observed_job(UNIT_JOB, "unit"),
                finished(observed_job(LINT_JOB, "lint"), RunResult::Passed, -30),
            ],
            pods: vec![
                pod("unit-pod", "unit", PodProgress::Running),
                pod("lint-pod", "lint", PodProgress::Finished),
            ],
            ..World::new(stage_run("success", no_annotations, Some(running_status())))
        },
        // The unit Job is suspended; the job controller has not reported it
        // stopped yet. The lint Job had passed and is being deleted.
        Start::Canceling => World {
            jobs: vec![
                suspended(observed_job(UNIT_JOB, "unit")),
                deleting(finished(
                    observed_job(LINT_JOB, "lint"),
                    RunResult::Passed,
                    -30,
                )),
            ],
            pods: vec![ObservedPod {
                deletion_deadline: Some(at(25)),
                ..pod("unit-pod", "unit", PodProgress::Running)
            }],
            ..World::new(stage_run(
                "success",
                no_annotations,
                Some(canceling_status()),
            ))
        },
        Start::Succeeded => World {
            jobs: vec![
                finished(observed_job(UNIT_JOB, "unit"), RunResult::Passed, -10),
                finished(observed_job(LINT_JOB, "lint"), RunResult::Passed, -30),
            ],
            pods: vec![
                pod("unit-pod", "unit", PodProgress::Finished),
                pod("lint-pod", "lint", PodProgress::Finished),
            ],
            ..World::new(stage_run(
                "success",
                no_annotations,
                Some(succeeded_status()),
            ))
        },
        Start::Failed => World {
            jobs: vec![
                finished(observed_job(UNIT_JOB, "unit"), RunResult::Failed, -10),
                finished(observed_job(LINT_JOB, "lint"), RunResult::Passed, -30),
            ],
            pods: vec![
                pod("unit-pod", "unit", PodProgress::Finished),
                pod("lint-pod", "lint", PodProgress::Finished),
            ],
            ..World::new(stage_run("success", no_annotations, Some(failed_status())))
        },
    }
}

fn apply(change: Change, mut w: World) -> World {
    match change {
        Change::Nothing => {}
        Change::IdsAllocated => w.ids = Some((900, vec![901, 902])),
        Change::ApprovalAdded => {
            w.run
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(labels::APPROVED.into(), "true".into());
        }
        Change::PodsProgress => {
            w.put_unit_job(None);
            w.put_unit_pod(PodProgress::Preparing);
        }
        Change::JobCompletes => {
            w.put_unit_job(Some((RunResult::Passed, Some(time(-2)))));
            w.put_unit_pod(PodProgress::Finished);
        }
        Change::JobFails => {
            w.put_unit_job(Some((RunResult::Failed, Some(time(-2)))));
            w.put_unit_pod(PodProgress::Finished);
        }
        Change::JobDisappears => {
            w.jobs.retain(|j| j.job != "unit");
            w.pods.retain(|p| p.job.as_deref() != Some("unit"));
        }
        Change::CancelArrives => w.cancel = Some(order(None)),
        Change::DeadlinePasses => {
            // The deadline counts from the start; a run not started has none.
            if let Some(start) = w.run.status.as_mut().and_then(|s| s.start_time.as_mut()) {
                *start = time(-DEADLINE);
            }
        }
        Change::AllGone => {
            w.jobs.clear();
            w.pods.clear();
        }
        // Exactly the Canceling baseline's accepted_at + grace + margin.
        Change::ForceDeadlinePasses => w.now = at(35),
        Change::GraceOverrideZero => w.cancel = Some(order(Some(0))),
    }
    w
}

// -------------------------------------------------------------- assertions --

fn awaits_approval(run: &StageRun) -> bool {
    run.spec.approval_type == ApprovalType::Manual
        && run
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::APPROVED))
            .is_none_or(|v| v != "true")
}

fn find_condition<'a>(status: &'a StageRunStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn job<'a>(status: &'a StageRunStatus, name: &str) -> &'a JobStatus {
    status
        .jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name} in status"))
}

fn reasons(plan: &Plan) -> Vec<&'static str> {
    plan.events.iter().map(|e| e.reason).collect()
}

fn job_ids(status: &StageRunStatus) -> Vec<(String, i64)> {
    status.jobs.iter().map(|j| (j.name.clone(), j.id)).collect()
}

fn force_at(cancel: &CancelRecord, margin: Duration) -> Timestamp {
    cancel.accepted_at.0
        + SignedDuration::from_secs(cancel.grace_period_seconds)
        + SignedDuration::try_from(margin).unwrap()
}

/// the cancel rules, checked on every decision.
fn assert_invariants(label: &str, w: &World, p: &Plan) {
    let before = w.run.status.as_ref();
    let was_finished = before
        .and_then(|b| b.phase)
        .is_some_and(StagePhase::is_finished);
    let phase = p
        .status
        .phase
        .unwrap_or_else(|| panic!("{label}: no phase"));
    let result = p
        .status
        .result
        .unwrap_or_else(|| panic!("{label}: no result"));
    assert_eq!(
        p.status.observed_generation,
        Some(GENERATION),
        "{label}: observedGeneration"
    );

    // Finished runs never change.
    if let Some(b) = before
        && was_finished
    {
        assert_eq!(&p.status, b, "{label}: a finished run changed");
        assert!(p.actions.is_empty(), "{label}: actions on a finished run");
        assert!(p.events.is_empty(), "{label}: events on a finished run");
    }

    // Ids, once recorded, never change.
    if let Some(b) = before
        && b.id.is_some()
    {
        assert_eq!(p.status.id, b.id, "{label}: stage id changed");
        assert_eq!(job_ids(&p.status), job_ids(b), "{label}: job ids changed");
    }

    // No Job is created for a run awaiting approval, nor once a cancel is
    // accepted but for cleanup jobs: never after a Terminate, and only once
    // none of the stage's jobs' Jobs and pods is left (confirmed by a fresh
    // read when the cleanup begins).
    let is_cleanup = |job: &str| w.run.spec.cleanup_job(job).is_some();
    let created: Vec<&str> = (p.actions.iter())
        .filter_map(|a| match a {
            Action::CreateJob { job } => Some(job.as_str()),
            _ => None,
        })
        .collect();
    if awaits_approval(&w.run) {
        assert!(created.is_empty(), "{label}: CreateJob before approval");
    }
    if let Some(c) = &p.status.cancel {
        for job in &created {
            assert!(is_cleanup(job), "{label}: CreateJob {job} after a cancel");
            assert_ne!(
                c.mode,
                CancelMode::Terminate,
                "{label}: cleanup after a Terminate"
            );
            assert!(
                !w.jobs.iter().any(|j| !is_cleanup(&j.job))
                    && !w
                        .pods
                        .iter()
                        .any(|pod| pod.job.as_deref().is_none_or(|j| !is_cleanup(j))),
                "{label}: cleanup job {job} created while the stage's jobs' children are left"
            );
            let begun_before = before
                .and_then(|b| b.jobs.iter().find(|js| js.name == *job))
                .is_some_and(|js| js.scheduled_at.is_some());
            if !begun_before {
                assert!(p.confirm, "{label}: cleanup begun without a fresh read");
            }
        }
    }
    // A cleanup job is created only while its entry is not final, and the
    // stage's jobs have all ended.
    for name in created.iter().filter(|n| is_cleanup(n)) {
        let js = job(&p.status, name);
        assert_ne!(
            js.state,
            JobState::Completed,
            "{label}: {name} created twice"
        );
        assert!(
            (p.status.jobs.iter())
                .filter(|j| !j.cleanup)
                .all(|j| j.state == JobState::Completed),
            "{label}: cleanup job {name} created before the stage's jobs ended"
        );
    }

    // Jobs and pods are deleted only on a cancel, and pods never alone.
    let deletes_pods = p
        .actions
        .iter()
        .any(|a| matches!(a, Action::DeletePods { .. }));
    let deletes_jobs = p
        .actions
        .iter()
        .any(|a| matches!(a, Action::DeleteJob { .. }));
    if deletes_pods || deletes_jobs {
        assert!(
            p.status.cancel.is_some(),
            "{label}: deletes without a cancel"
        );
    }
    let pods_deleted: Vec<&String> = (p.actions.iter())
        .filter_map(|a| match a {
            Action::DeletePods { names, .. } => Some(names),
            _ => None,
        })
        .flatten()
        .collect();
    if deletes_pods {
        let of_deleted_pods = |j: &&ObservedJob| {
            w.pods
                .iter()
                .any(|pod| pod.job.as_deref() == Some(&j.job) && pods_deleted.contains(&&pod.name))
        };
        for j in w.jobs.iter().filter(of_deleted_pods) {
            let name = j.resource_name.clone();
            let stopping = j.deleting
                || j.suspended
                || w.issued.suspensions.contains_key(&name)
                || w.issued.jobs.contains_key(&name)
                || p.actions.contains(&Action::SuspendJob {
                    resource_name: name.clone(),
                })
                || p.actions.iter().any(|a| {
                    matches!(a, Action::DeleteJob { resource_name, .. } if *resource_name == name)
                });
            assert!(
                stopping,
                "{label}: pods deleted while Job {name} is neither suspended nor deleted"
            );
        }
    }
    // A Job is deleted only once the job controller has stopped it, even
    // past the force deadline: a Job gone before that can still get a pod
    // from a job controller whose cache lags behind. The one exception: a
    // suspended Job with no pod left, STOP_WAIT past the force deadline.
    let waited_out = p.status.cancel.as_ref().is_some_and(|c| {
        w.now >= force_at(c, w.force_margin) + SignedDuration::try_from(STOP_WAIT).unwrap()
    });
    for a in &p.actions {
        if let Action::DeleteJob { resource_name } = a {
            assert!(
                w.jobs.iter().any(|j| &j.resource_name == resource_name
                    && (j.stopped
                        || (j.suspended
                            && waited_out
                            && w.pods
                                .iter()
                                .all(|pod| pod.job.as_deref() != Some(j.job.as_str()))))),
                "{label}: Job {resource_name} deleted before the job controller stopped it"
            );
        }
    }

    // Failed/Cancelled only once no Job and no pod is left.
    if !was_finished && phase == StagePhase::Failed && result == RunResult::Cancelled {
        assert!(
            w.jobs.is_empty() && w.pods.is_empty(),
            "{label}: Cancelled with children left"
        );
    }

    // A finished run has every job final, and finishes after all of them.
    if phase.is_finished() {
        assert_ne!(
            result,
            RunResult::Unknown,
            "{label}: finished, result Unknown"
        );
        let done = p
            .status
            .completion_time
            .as_ref()
            .unwrap_or_else(|| panic!("{label}: finished without completionTime"));
        for j in &p.status.jobs {
            assert_eq!(
                j.state,
                JobState::Completed,
                "{label}: job {} not final",
                j.name
            );
            assert!(
                j.result != RunResult::Unknown || j.skipped,
                "{label}: job {} result",
                j.name
            );
            if let Some(c) = &j.completion_time {
                assert!(
                    done.0 >= c.0,
                    "{label}: completionTime before job {}",
                    j.name
                );
            }
        }
    } else {
        assert_eq!(result, RunResult::Unknown, "{label}: active with a result");
        assert!(
            p.status.completion_time.is_none(),
            "{label}: active with completionTime"
        );
    }

    // An accepted cancel is replaced only by one of a stronger mode.
    if let Some(c) = before.and_then(|b| b.cancel.as_ref()) {
        let now = p
            .status
            .cancel
            .as_ref()
            .unwrap_or_else(|| panic!("{label}: cancel lost"));
        if now != c {
            assert!(
                now.mode > c.mode,
                "{label}: cancel replaced by a weaker mode"
            );
            assert_eq!(
                Some(now.request_name.as_str()),
                w.cancel.as_ref().map(|o| o.request_name.as_str()),
                "{label}: cancel replaced by no request"
            );
        }
    }
    // Terminate always ends the run: nothing is waited for once none of
    // its Jobs and pods is left.
    if p.status
        .cancel
        .as_ref()
        .is_some_and(|c| c.mode == CancelMode::Terminate)
        && w.jobs.is_empty()
        && w.pods.is_empty()
    {
        assert_eq!(
            phase,
            StagePhase::Failed,
            "{label}: terminated, nothing left, not ended"
        );
        assert_eq!(result, RunResult::Cancelled, "{label}: terminated");
    }
    // After a Terminate, no cleanup job is begun.
    if p.status
        .cancel
        .as_ref()
        .is_some_and(|c| c.mode == CancelMode::Terminate)
    {
        for js in p.status.jobs.iter().filter(|js| js.cleanup) {
            let was = before.and_then(|b| b.jobs.iter().find(|j| j.name == js.name));
            if was.is_none_or(|j| j.scheduled_at.is_none()) {
                assert!(
                    js.scheduled_at.is_none(),
                    "{label}: {} begun after a Terminate",
                    js.name
                );
            }
        }
    }

    // Force deletion only at/after accepted_at + grace + margin (or with a
    // grace of 0), always with a condition that says so.
    for a in &p.actions {
        if let Action::DeletePods {
            grace_seconds: 0, ..
        } = a
        {
            let c = p.status.cancel.as_ref().unwrap();
            if c.grace_period_seconds > 0 {
                assert!(
                    w.now >= force_at(c, w.force_margin),
                    "{label}: forced before the deadline"
                );
            }
            let cond = find_condition(&p.status, COND_FORCE_DELETED);
            assert_eq!(cond.map(|c| c.status.as_str()), Some("True"), "{label}");
            assert!(
                cond.is_some_and(|c| c.message.contains("may go on running")),
                "{label}: {cond:?}"
            );
        }
    }
    let force_events = p
        .events
        .iter()
        .filter(|e| e.reason == "ForceDeleted")
        .count();
    assert!(
        force_events <= 1,
        "{label}: {force_events} ForceDeleted events"
    );
    if before.is_some_and(|b| find_condition(b, COND_FORCE_DELETED).is_some()) {
        assert_eq!(force_events, 0, "{label}: ForceDeleted event repeated");
    }

    // A timeout ends as one.
    if let Some(c) = &p.status.cancel
        && c.request_name.is_empty()
    {
        assert_eq!(c.reason, "DeadlineExceeded", "{label}");
        if phase.is_finished() && !was_finished {
            assert_eq!(
                p.status.failure_reason.as_deref(),
                Some("deadline exceeded"),
                "{label}"
            );
        }
    }
}

// ------------------------------------------------------------------ table --

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Requeue {
    Never,
    After(u64),
    /// Not part of the contract (e.g. a finished run's leftover timer).
    Unchecked,
}

/// One row of a decision table: a start, a change, and what the pass
/// decides.
struct Row<S, C> {
    start: S,
    change: C,
    phase: StagePhase,
    result: RunResult,
    actions: Vec<Action>,
    events: &'static [&'static str],
    requeue: Requeue,
    check: Option<fn(&Plan)>,
}

fn row<S, C>(
    start: S,
    change: C,
    phase: StagePhase,
    result: RunResult,
    actions: Vec<Action>,
    events: &'static [&'static str],
    requeue: Requeue,
) -> Row<S, C> {
    Row {
        start,
        change,
        phase,
        result,
        actions,
        events,
        requeue,
        check: None,
    }
}

impl<S, C> Row<S, C> {
    fn check(self, check: fn(&Plan)) -> Self {
        Row {
            check: Some(check),
            ..self
        }
    }
}

/// Checks a decision table: every start against every change exactly once,
/// each row's decision, and the invariants on every one of them.
fn check_table<S, C>(rows: &[Row<S, C>], starts: &[S], changes: &[C], world: impl Fn(S, C) -> World)
where
    S: Copy + PartialEq + std::fmt::Debug,
    C: Copy + PartialEq + std::fmt::Debug,
{
    for start in starts {
        for change in changes {
            let n = rows
                .iter()
                .filter(|r| r.start == *start && r.change == *change)
                .count();
            assert_eq!(n, 1, "{start:?} × {change:?} appears {n} times");
        }
    }
    for r in rows {
        let label = format!("{:?} × {:?}", r.start, r.change);
        let w = world(r.start, r.change);
        let p = w.plan();
        assert_eq!(p.status.phase, Some(r.phase), "{label}: phase");
        assert_eq!(p.status.result, Some(r.result), "{label}: result");
        assert_eq!(p.actions, r.actions, "{label}: actions");
        assert_eq!(reasons(&p), r.events, "{label}: events");
        match r.requeue {
            Requeue::Never => assert_eq!(p.requeue_after, None, "{label}: requeue"),
            Requeue::After(secs) => assert_eq!(
                p.requeue_after,
                Some(Duration::from_secs(secs)),
                "{label}: requeue"
            ),
            Requeue::Unchecked => {}
        }
        if let Some(check) = r.check {
            check(&p);
        }
        assert_invariants(&label, &w, &p);
    }
}

fn create(job: &str) -> Action {
    Action::CreateJob { job: job.into() }
}

fn creates_both() -> Vec<Action> {
    vec![create("unit"), create("lint")]
}

fn delete_job(resource_name: &str) -> Action {
    Action::DeleteJob {
        resource_name: resource_name.into(),
    }
}

fn suspend_job(resource_name: &str) -> Action {
    Action::SuspendJob {
        resource_name: resource_name.into(),
    }
}

fn delete_pods(names: &[&str], grace_seconds: i64) -> Action {
    Action::DeletePods {
        names: names.iter().map(|n| n.to_string()).collect(),
        grace_seconds,
    }
}

// Row checks: plain fns so that rows stay one-liners.

fn first_pass(p: &Plan) {
    assert_eq!(p.status.id, Some(500));
    assert_eq!(
        job_ids(&p.status),
        vec![("unit".to_string(), 501), ("lint".to_string(), 502)]
    );
    started_at(p, 0);
}

fn fresh_ids(p: &Plan) {
    assert_eq!(p.status.id, Some(900));
    assert_eq!(
        job_ids(&p.status),
        vec![("unit".to_string(), 901), ("lint".to_string(), 902)]
    );
}

fn started_at(p: &Plan, secs: i64) {
    assert_eq!(p.status.start_time, Some(time(secs)));
    for j in &p.status.jobs {
        assert_eq!(
            j.scheduled_at,
            Some(time(secs)),
            "scheduledAt of {}",
            j.name
        );
        assert_eq!(j.state, JobState::Scheduled, "state of {}", j.name);
    }
    let cond = find_condition(&p.status, COND_SUCCEEDED).unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("Unknown", "Running")
    );
}

fn started_now(p: &Plan) {
    started_at(p, 0);
}

fn started_late(p: &Plan) {
    started_at(p, 35);
}

fn awaiting(p: &Plan) {
    assert_eq!(p.status.start_time, None);
    let cond = find_condition(&p.status, COND_SUCCEEDED).unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("Unknown", "AwaitingApproval")
    );
    assert!(
        cond.message.contains("cancel.dev/approved=true"),
        "{}",
        cond.message
    );
    assert_eq!(cond.last_transition_time, time(-120));
    for j in &p.status.jobs {
        assert_eq!(
            (j.state, j.result, j.job_name.as_deref()),
            (JobState::Scheduled, RunResult::Unknown, None)
        );
    }
}

fn unit_adopted_preparing(p: &Plan) {
    let unit = job(&p.status, "unit");
    assert_eq!(unit.job_name.as_deref(), Some(UNIT_JOB));
    assert_eq!(
        (unit.state, unit.result),
        (JobState::Preparing, RunResult::Unknown)
    );
}

fn unit_passed_early(p: &Plan) {
    let unit = job(&p.status, "unit");
    assert_eq!(
        (unit.state, unit.result),
        (JobState::Completed, RunResult::Passed)
    );
    assert_eq!(unit.completion_time, Some(time(-2)));
}

fn unit_failed_early(p: &Plan) {
    let unit = job(&p.status, "unit");
    assert_eq!(
        (unit.state, unit.result),
        (JobState::Completed, RunResult::Failed)
    );
    assert_eq!(unit.completion_time, Some(time(-2)));
}

fn unit_building(p: &Plan) {
    let unit = job(&p.status, "unit");
    assert_eq!(
        (unit.state, unit.result),
        (JobState::Building, RunResult::Unknown)
    );
    let lint = job(&p.status, "lint");
    assert_eq!(
        (lint.state, lint.result),
        (JobState::Completed, RunResult::Passed)
    );
}

fn unit_completing(p: &Plan) {
    let unit = job(&p.status, "unit");
    assert_eq!(
        (unit.state, unit.result),
        (JobState::Completing, RunResult::Unknown)
    );
}

fn cancelled_before_any_job(p: &Plan) {
    let cancel = p.status.cancel.as_ref().unwrap();
    assert_eq!(
        (cancel.request_name.as_str(), cancel.requested_by.as_str()),
        ("stop-it", "alice")
    );
    for j in &p.status.jobs {
        assert_eq!(
            (
                j.state,
                j.result,
                j.completion_time.clone(),
                j.job_name.as_deref()
            ),
            (
                JobState::Completed,
                RunResult::Cancelled,
                Some(time(0)),
                None
            ),
            "job {}",
            j.name
        );
    }
    assert_eq!(p.status.jobs.len(), 2);
    assert_eq!(
        p.status.failure_reason.as_deref(),
        Some("task was cancelled")
    );
    assert_eq!(p.status.completion_time, Some(time(0)));
    let cond = find_condition(&p.status, COND_SUCCEEDED).unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "Cancelled")
    );
}

fn accepted_request(p: &Plan) {
    assert_eq!(
        p.status.cancel,
        Some(CancelRecord {
            cause: CancelCause::Request,
            request_name: "stop-it".into(),
            requested_by: "alice".into(),
            reason: "wrong branch".into(),
            requested_at: time(-1),
            accepted_at: time(0),
            grace_period_seconds: GRACE,
            mode: CancelMode::Cancel,
        })
    );
    canceling_condition(p);
}

fn accepted_request_grace_zero(p: &Plan) {
    let cancel = p.status.cancel.as_ref().unwrap();
    assert_eq!(
        (cancel.request_name.as_str(), cancel.grace_period_seconds),
        ("stop-it", 0)
    );
    canceling_condition(p);
}

fn accepted_deadline(p: &Plan) {
    assert_eq!(
        p.status.cancel,
        Some(CancelRecord {
            cause: CancelCause::Deadline,
            request_name: String::new(),
            requested_by: "cancel-operator".into(),
            reason: "DeadlineExceeded".into(),
            requested_at: time(0),
            accepted_at: time(0),
            grace_period_seconds: GRACE,
            mode: CancelMode::Cancel,
        })
    );
    assert!(p.events[0].warning);
    assert!(p.events[0].note.contains("600s"), "{}", p.events[0].note);
    canceling_condition(p);
}

fn canceling_condition(p: &Plan) {
    unit_completing(p);
    let cond = find_condition(&p.status, COND_SUCCEEDED).unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("Unknown", "Canceling")
    );
}

fn succeeded_now(p: &Plan) {
    assert_eq!(p.status.completion_time, Some(time(0)));
    assert_eq!(p.status.failure_reason, None);
    let cond = find_condition(&p.status, COND_SUCCEEDED).unwrap();
    assert_eq!(
        (
            cond.status.as_str(),
            cond.reason.as_str(),
            cond.last_transition_time.clone()
        ),
        ("True", "Succeeded", time(0))
    );
    unit_passed_early(p);
}

fn unit_failed_run(p: &Plan) {
    assert_eq!(p.status.failure_reason.as_deref(), Some("job unit failed"));
    assert_eq!(p.status.completion_time, Some(time(0)));
    let cond = find_condition(&p.status, COND_SUCCEEDED).unwrap();
    assert_eq!(
        (
            cond.status.as_str(),
            cond.reason.as_str(),
            cond.message.as_str()
        ),
        ("False", "Failed", "job unit failed")
    );
    let lint = job(&p.status, "lint");
    assert_eq!(
        (lint.result, lint.completion_time.clone()),
        (RunResult::Passed, Some(time(-30)))
    );
}

fn unit_vanished_run(p: &Plan) {
    unit_failed_run(p);
    let unit = job(&p.status, "unit");
    assert_eq!(
        (unit.state, unit.result, unit.completion_time.clone()),
        (JobState::Completed, RunResult::Failed, Some(time(0)))
    );
}

fn kept_first_cancel(p: &Plan) {
    assert_eq!(p.status.cancel, Some(first_cancel()));
    assert!(find_condition(&p.status, COND_FORCE_DELETED).is_none());
    unit_completing(p);
}

fn canceling_unit_passed(p: &Plan) {
    kept_first_cancel_record(p);
    unit_passed_early(p);
}

/// A Job that fails while its run is Canceling was failed by the cancel: the
/// job stays Completing and ends Cancelled with the run.
fn canceling_unit_failed(p: &Plan) {
    kept_first_cancel_record(p);
    let unit = job(&p.status, "unit");
    assert_eq!(
        (unit.state, unit.result),
        (JobState::Completing, RunResult::Unknown)
    );
}

fn kept_first_cancel_record(p: &Plan) {
    assert_eq!(p.status.cancel, Some(first_cancel()));
}

fn cancelled_after_grace(p: &Plan) {
    kept_first_cancel_record(p);
    let unit = job(&p.status, "unit");
    assert_eq!(
        (unit.state, unit.result, unit.completion_time.clone()),
        (JobState::Completed, RunResult::Cancelled, Some(time(0)))
    );
    let lint = job(&p.status, "lint");
    assert_eq!(
        (lint.state, lint.result, lint.completion_time.clone()),
        (JobState::Completed, RunResult::Passed, Some(time(-30)))
    );
    assert_eq!(
        p.status.failure_reason.as_deref(),
        Some("task was cancelled")
    );
    assert_eq!(p.status.completion_time, Some(time(0)));
    let cond = find_condition(&p.status, COND_SUCCEEDED).unwrap();
    assert_eq!(
        (
            cond.status.as_str(),
            cond.reason.as_str(),
            cond.message.as_str()
        ),
        ("False", "Cancelled", "task was cancelled")
    );
    assert!(p.events[0].note.contains("no pod of it remains"));
}

fn force_deleted(p: &Plan) {
    kept_first_cancel_record(p);
    let cond = find_condition(&p.status, COND_FORCE_DELETED).unwrap();
    assert_eq!(
        (
            cond.status.as_str(),
            cond.reason.as_str(),
            cond.last_transition_time.clone()
        ),
        ("True", "GracePeriodExpired", time(35))
    );
    let event = &p.events[0];
    assert!(event.warning);
    assert!(event.note.contains("unit-pod"), "{}", event.note);
    assert!(event.note.contains("30s grace"), "{}", event.note);
}

#[rustfmt::skip]
fn rows() -> Vec<Row<Start, Change>> {
    use Change as C;
    use Requeue::{After, Never, Unchecked};
    use RunResult as R;
    use Start as S;
    use StagePhase as P;

    let mut rows = vec![
        // A run without status: its first pass, always with fresh ids.
        row(S::NoStatus, C::Nothing, P::Running, R::Unknown, creates_both(), &[], After(600)).check(first_pass),
        row(S::NoStatus, C::IdsAllocated, P::Running, R::Unknown, creates_both(), &[], After(600)).check(fresh_ids),
        row(S::NoStatus, C::ApprovalAdded, P::Running, R::Unknown, creates_both(), &[], After(600)).check(first_pass),
        // A Job found by label before the status named it is adopted, not re-created.
        row(S::NoStatus, C::PodsProgress, P::Running, R::Unknown, vec![create("lint")], &[], After(600)).check(unit_adopted_preparing),
        row(S::NoStatus, C::JobCompletes, P::Running, R::Unknown, vec![create("lint")], &[], After(600)).check(unit_passed_early),
        row(S::NoStatus, C::JobFails, P::Running, R::Unknown, vec![create("lint")], &[], After(600)).check(unit_failed_early),
        row(S::NoStatus, C::JobDisappears, P::Running, R::Unknown, creates_both(), &[], After(600)).check(first_pass),
        row(S::NoStatus, C::CancelArrives, P::Failed, R::Cancelled, vec![], &["Canceling", "Cancelled"], Never).check(cancelled_before_any_job),
        row(S::NoStatus, C::DeadlinePasses, P::Running, R::Unknown, creates_both(), &[], After(600)).check(first_pass),
        row(S::NoStatus, C::AllGone, P::Running, R::Unknown, creates_both(), &[], After(600)).check(first_pass),
        row(S::NoStatus, C::ForceDeadlinePasses, P::Running, R::Unknown, creates_both(), &[], After(600)).check(started_late),
        row(S::NoStatus, C::GraceOverrideZero, P::Failed, R::Cancelled, vec![], &["Canceling", "Cancelled"], Never).check(cancelled_before_any_job),
        // A manual run awaiting approval creates nothing, whatever it observes.
        row(S::AwaitingApproval, C::Nothing, P::Pending, R::Unknown, vec![], &[], Never).check(awaiting),
        row(S::AwaitingApproval, C::IdsAllocated, P::Pending, R::Unknown, vec![], &[], Never).check(awaiting),
        row(S::AwaitingApproval, C::ApprovalAdded, P::Running, R::Unknown, creates_both(), &[], After(600)).check(started_now),
        row(S::AwaitingApproval, C::PodsProgress, P::Pending, R::Unknown, vec![], &[], Never).check(awaiting),
        row(S::AwaitingApproval, C::JobCompletes, P::Pending, R::Unknown, vec![], &[], Never).check(awaiting),
        row(S::AwaitingApproval, C::JobFails, P::Pending, R::Unknown, vec![], &[], Never).check(awaiting),
        row(S::AwaitingApproval, C::JobDisappears, P::Pending, R::Unknown, vec![], &[], Never).check(awaiting),
        row(S::AwaitingApproval, C::CancelArrives, P::Failed, R::Cancelled, vec![], &["Canceling", "Cancelled"], Never).check(cancelled_before_any_job),
        row(S::AwaitingApproval, C::DeadlinePasses, P::Pending, R::Unknown, vec![], &[], Never).check(awaiting),
        row(S::AwaitingApproval, C::AllGone, P::Pending, R::Unknown, vec![], &[], Never).check(awaiting),
        row(S::AwaitingApproval, C::ForceDeadlinePasses, P::Pending, R::Unknown, vec![], &[], Never).check(awaiting),
        row(S::AwaitingApproval, C::GraceOverrideZero, P::Failed, R::Cancelled, vec![], &["Canceling", "Cancelled"], Never).check(cancelled_before_any_job),
        // An approved manual run starts.
        row(S::Approved, C::Nothing, P::Running, R::Unknown, creates_both(), &[], After(600)).check(started_now),
        row(S::Approved, C::IdsAllocated, P::Running, R::Unknown, creates_both(), &[], After(600)).check(started_now),
        row(S::Approved, C::ApprovalAdded, P::Running, R::Unknown, creates_both(), &[], After(600)).check(started_now),
        row(S::Approved, C::PodsProgress, P::Running, R::Unknown, vec![create("lint")], &[], After(600)).check(unit_adopted_preparing),
        row(S::Approved, C::JobCompletes, P::Running, R::Unknown, vec![create("lint")], &[], After(600)).check(unit_passed_early),
        row(S::Approved, C::JobFails, P::Running, R::Unknown, vec![create("lint")], &[], After(600)).check(unit_failed_early),
        row(S::Approved, C::JobDisappears, P::Running, R::Unknown, creates_both(), &[], After(600)).check(started_now),
        row(S::Approved, C::CancelArrives, P::Failed, R::Cancelled, vec![], &["Canceling", "Cancelled"], Never).check(cancelled_before_any_job),
        row(S::Approved, C::DeadlinePasses, P::Running, R::Unknown, creates_both(), &[], After(600)).check(started_now),
        row(S::Approved, C::AllGone, P::Running, R::Unknown, creates_both(), &[], After(600)).check(started_now),
        row(S::Approved, C::ForceDeadlinePasses, P::Running, R::Unknown, creates_both(), &[], After(600)).check(started_late),
        row(S::Approved, C::GraceOverrideZero, P::Failed, R::Cancelled, vec![], &["Canceling", "Cancelled"], Never).check(cancelled_before_any_job),
        // Running: `unit` builds, `lint` passed; the deadline is 540s away.
        row(S::Running, C::Nothing, P::Running, R::Unknown, vec![], &[], After(540)).check(unit_building),
        row(S::Running, C::IdsAllocated, P::Running, R::Unknown, vec![], &[], After(540)).check(unit_building),
        row(S::Running, C::ApprovalAdded, P::Running, R::Unknown, vec![], &[], After(540)).check(unit_building),
        row(S::Running, C::PodsProgress, P::Running, R::Unknown, vec![], &[], After(540)).check(unit_adopted_preparing),
        row(S::Running, C::JobCompletes, P::Succeeded, R::Passed, vec![], &["Succeeded"], Unchecked).check(succeeded_now),
        row(S::Running, C::JobFails, P::Failed, R::Failed, vec![], &["Failed"], Unchecked).check(unit_failed_run),
        row(S::Running, C::JobDisappears, P::Failed, R::Failed, vec![], &["Failed"], Unchecked).check(unit_vanished_run),
        row(S::Running, C::CancelArrives, P::Canceling, R::Unknown, vec![suspend_job(UNIT_JOB), delete_job(LINT_JOB), delete_pods(&["lint-pod"], 30)], &["Canceling"], After(5)).check(accepted_request),
        row(S::Running, C::DeadlinePasses, P::Canceling, R::Unknown, vec![suspend_job(UNIT_JOB), delete_job(LINT_JOB), delete_pods(&["lint-pod"], 30)], &["DeadlineExceeded"], After(5)).check(accepted_deadline),
        row(S::Running, C::AllGone, P::Failed, R::Failed, vec![], &["Failed"], Unchecked).check(unit_vanished_run),
        row(S::Running, C::ForceDeadlinePasses, P::Running, R::Unknown, vec![], &[], After(505)).check(unit_building),
        row(S::Running, C::GraceOverrideZero, P::Canceling, R::Unknown, vec![suspend_job(UNIT_JOB), delete_job(LINT_JOB), delete_pods(&["unit-pod", "lint-pod"], 0)], &["Canceling", "ForceDeleted"], After(5)).check(accepted_request_grace_zero),
        // Canceling since 5s (grace 30s, margin 10s): the unit Job suspended,
        // not yet reported stopped; the lint Job being deleted.
        row(S::Canceling, C::Nothing, P::Canceling, R::Unknown, vec![], &[], After(5)).check(kept_first_cancel),
        row(S::Canceling, C::IdsAllocated, P::Canceling, R::Unknown, vec![], &[], After(5)).check(kept_first_cancel),
        row(S::Canceling, C::ApprovalAdded, P::Canceling, R::Unknown, vec![], &[], After(5)).check(kept_first_cancel),
        row(S::Canceling, C::PodsProgress, P::Canceling, R::Unknown, vec![], &[], After(5)).check(kept_first_cancel),
        row(S::Canceling, C::JobCompletes, P::Canceling, R::Unknown, vec![delete_job(UNIT_JOB)], &[], After(5)).check(canceling_unit_passed),
        row(S::Canceling, C::JobFails, P::Canceling, R::Unknown, vec![delete_job(UNIT_JOB)], &[], After(5)).check(canceling_unit_failed),
        row(S::Canceling, C::JobDisappears, P::Canceling, R::Unknown, vec![], &[], After(5)).check(kept_first_cancel),
        row(S::Canceling, C::CancelArrives, P::Canceling, R::Unknown, vec![], &[], After(5)).check(kept_first_cancel),
        row(S::Canceling, C::DeadlinePasses, P::Canceling, R::Unknown, vec![], &[], After(5)).check(kept_first_cancel),
        row(S::Canceling, C::AllGone, P::Failed, R::Cancelled, vec![], &["Cancelled"], Never).check(cancelled_after_grace),
        row(S::Canceling, C::ForceDeadlinePasses, P::Canceling, R::Unknown, vec![delete_pods(&["unit-pod"], 0)], &["ForceDeleted"], After(1)).check(force_deleted),
        row(S::Canceling, C::GraceOverrideZero, P::Canceling, R::Unknown, vec![], &[], After(5)).check(kept_first_cancel),
    ];
    // Finished runs never change, whatever happens.
    for (start, phase, result) in [
        (S::Succeeded, P::Succeeded, R::Passed),
        (S::Failed, P::Failed, R::Failed),
    ] {
        for change in CHANGES {
            rows.push(row(start, change, phase, result, vec![], &[], Never));
        }
    }
    rows
}

#[test]
fn plan_table_every_phase_against_every_change() {
    check_table(&rows(), &STARTS, &CHANGES, |start, change| {
        apply(change, baseline(start))
    });
}

// --------------------------------------------------------- focused cases --

#[test]
fn cancel_for_a_succeeded_run_changes_nothing() {
    for grace in [None, Some(0)] {
        let mut w = baseline(Start::Succeeded);
        w.cancel = Some(order(grace));
        w.now = at(3600);
        let p = w.plan();
        assert_eq!(p.status.phase, Some(StagePhase::Succeeded));
        assert_eq!(p.status.result, Some(RunResult::Passed));
        assert_eq!(p.status.cancel, None);
        assert_eq!(p.status, succeeded_status());
        assert!(p.actions.is_empty());
        assert!(p.events.is_empty());
        assert_eq!(p.requeue_after, None);
    }
}

#[test]
fn a_cancelled_run_stays_cancelled() {
    let mut status = canceling_status();
    status.phase = Some(StagePhase::Failed);
    status.result = Some(RunResult::Cancelled);
    status.failure_reason = Some("task was cancelled".into());
    status.completion_time = Some(time(-1));
    for j in status.jobs.iter_mut() {
        j.state = JobState::Completed;
        j.result = RunResult::Cancelled;
    }
    let w = World {
        cancel: Some(order(Some(0))),
        pods: vec![pod("unit-pod", "unit", PodProgress::Running)],
        ..World::new(stage_run("success", json!({}), Some(status.clone())))
    };
    let p = w.plan();
    assert_eq!(p.status, status);
    assert!(p.actions.is_empty() && p.events.is_empty());
}

#[test]
fn approval_needs_the_annotation_value_true() {
    for (annotations, approved) in [
        (json!({}), false),
        (json!({ "cancel.dev/approved": "false" }), false),
        (json!({ "cancel.dev/approved": "yes" }), false),
        (json!({ "cancel.dev/approved": "" }), false),
        (json!({ "cancel.dev/approve": "true" }), false),
        (json!({ "cancel.dev/approved": "true" }), true),
    ] {
        let label = annotations.to_string();
        let w = World::new(stage_run("manual", annotations, Some(pending_status())));
        let p = w.plan();
        if approved {
            assert_eq!(p.status.phase, Some(StagePhase::Running), "{label}");
            assert_eq!(p.actions, creates_both(), "{label}");
        } else {
            assert_eq!(p.status.phase, Some(StagePhase::Pending), "{label}");
            assert!(p.actions.is_empty(), "{label}");
            awaiting(&p);
        }
    }
}

#[test]
fn a_success_run_ignores_the_approval_annotation() {
    let w = World {
        ids: Some((1, vec![2, 3])),
        ..World::new(stage_run(
            "success",
            json!({ "cancel.dev/approved": "false" }),
            None,
        ))
    };
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Running));
    assert_eq!(p.actions, creates_both());
}

#[test]
fn a_new_manual_run_gets_ids_but_waits() {
    let w = World {
        ids: Some((70, vec![71, 72])),
        ..World::new(stage_run("manual", json!({}), None))
    };
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Pending));
    assert_eq!(p.status.result, Some(RunResult::Unknown));
    assert_eq!(p.status.id, Some(70));
    assert_eq!(
        job_ids(&p.status),
        vec![("unit".to_string(), 71), ("lint".to_string(), 72)]
    );
    assert!(p.actions.is_empty());
    let cond = find_condition(&p.status, COND_SUCCEEDED).unwrap();
    assert_eq!(cond.reason, "AwaitingApproval");
    assert_eq!(cond.last_transition_time, time(0));
}

#[test]
fn the_deadline_cancels_exactly_when_it_passes() {
    // Started 60s ago with a 600s deadline: the deadline is at +540s.
    for (now, cancels, requeue) in [
        (0, false, Some(540)),
        (539, false, Some(1)),
        (540, true, Some(5)),
        (4000, true, Some(5)),
    ] {
        let w = World {
            now: at(now),
            ..baseline(Start::Running)
        };
        let p = w.plan();
        let label = format!("now=+{now}s");
        assert_eq!(
            p.requeue_after,
            requeue.map(Duration::from_secs),
            "{label}: requeue"
        );
        if cancels {
            assert_eq!(p.status.phase, Some(StagePhase::Canceling), "{label}");
            let cancel = p.status.cancel.as_ref().unwrap();
            assert_eq!(cancel.reason, "DeadlineExceeded", "{label}");
            assert_eq!(
                cancel.requested_at,
                time(540),
                "{label}: requested at the deadline"
            );
            assert_eq!(cancel.accepted_at, time(now), "{label}");
            assert_eq!(reasons(&p), vec!["DeadlineExceeded"], "{label}");
        } else {
            assert_eq!(p.status.phase, Some(StagePhase::Running), "{label}");
            assert_eq!(p.status.cancel, None, "{label}");
            assert!(p.events.is_empty(), "{label}");
        }
        assert_invariants(&label, &w, &p);
    }
}

#[test]
fn a_run_without_deadline_never_times_out() {
    let mut w = baseline(Start::Running);
    w.run.spec.active_deadline_seconds = None;
    w.now = at(1_000_000);
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Running));
    assert_eq!(p.status.cancel, None);
    assert_eq!(p.requeue_after, None);
}

#[test]
fn a_timeout_finishes_as_deadline_exceeded() {
    let mut status = canceling_status();
    status.cancel = Some(CancelRecord {
        cause: CancelCause::Deadline,
        request_name: String::new(),
        requested_by: labels::MANAGER.into(),
        reason: "DeadlineExceeded".into(),
        requested_at: time(-10),
        accepted_at: time(-5),
        grace_period_seconds: GRACE,
        mode: CancelMode::Cancel,
    });
    let w = World::new(stage_run("success", json!({}), Some(status)));
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Failed));
    assert_eq!(p.status.result, Some(RunResult::Cancelled));
    assert_eq!(
        p.status.failure_reason.as_deref(),
        Some("deadline exceeded")
    );
    let cond = find_condition(&p.status, COND_SUCCEEDED).unwrap();
    assert_eq!(
        (
            cond.status.as_str(),
            cond.reason.as_str(),
            cond.message.as_str()
        ),
        ("False", "DeadlineExceeded", "deadline exceeded")
    );
    assert_eq!(reasons(&p), vec!["Cancelled"]);
    assert_invariants("timeout", &w, &p);
}

#[test]
fn a_request_named_like_a_timeout_is_still_a_cancel() {
    let mut status = canceling_status();
    status.cancel = Some(CancelRecord {
        reason: "DeadlineExceeded".into(),
        ..first_cancel()
    });
    let w = World::new(stage_run("success", json!({}), Some(status)));
    let p = w.plan();
    assert_eq!(
        p.status.failure_reason.as_deref(),
        Some("task was cancelled")
    );
    assert_eq!(
        find_condition(&p.status, COND_SUCCEEDED).map(|c| c.reason.as_str()),
        Some("Cancelled")
    );
}

#[test]
fn a_cancel_request_wins_over_a_deadline_in_the_same_pass() {
    let w = apply(
        Change::CancelArrives,
        apply(Change::DeadlinePasses, baseline(Start::Running)),
    );
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Canceling));
    let cancel = p.status.cancel.as_ref().unwrap();
    assert_eq!(
        (cancel.request_name.as_str(), cancel.reason.as_str()),
        ("stop-it", "wrong branch")
    );
    assert_eq!(reasons(&p), vec!["Canceling"]);
}

#[test]
fn the_canceling_event_names_who_and_why() {
    for (by, reason, note) in [
        (
            "alice",
            "wrong branch",
            "cancelled by alice through CancelRequest stop-it: wrong branch",
        ),
        (
            "",
            "",
            "cancelled by unknown through CancelRequest stop-it: no reason given",
        ),
    ] {
        let w = World {
            cancel: Some(CancelOrder {
                requested_by: by.into(),
                reason: reason.into(),
                ..order(None)
            }),
            ..baseline(Start::Running)
        };
        let p = w.plan();
        assert_eq!(p.events.len(), 1);
        assert!(!p.events[0].warning);
        assert_eq!(p.events[0].note, note);
        let cancel = p.status.cancel.as_ref().unwrap();
        assert_eq!(
            (cancel.requested_by.as_str(), cancel.reason.as_str()),
            (by, reason)
        );
    }
}

#[test]
fn a_second_cancel_order_does_not_replace_the_first() {
    let w = World {
        cancel: Some(CancelOrder {
            request_name: "second".into(),
            requested_by: "carol".into(),
            reason: "me too".into(),
            requested_at: time(-1),
            grace_period_seconds: Some(0),
            mode: CancelMode::Cancel,
        }),
        ..baseline(Start::Canceling)
    };
    let p = w.plan();
    assert_eq!(p.status.cancel, Some(first_cancel()));
    // The second order's grace of 0 is not applied either.
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(p.events.is_empty());
}

#[test]
fn force_deletion_waits_for_grace_plus_margin() {
    // Accepted at -5s with 30s grace and a 10s margin: force at +35s.
    for (now, forced, requeue) in [
        (0, false, 5),
        (30, false, 5),
        (34, false, 1),
        (35, true, 1),
        (100, true, 1),
    ] {
        let w = World {
            now: at(now),
            ..baseline(Start::Canceling)
        };
        let p = w.plan();
        let label = format!("now=+{now}s");
        assert_eq!(
            p.requeue_after,
            Some(Duration::from_secs(requeue)),
            "{label}"
        );
        if forced {
            assert_eq!(p.actions, vec![delete_pods(&["unit-pod"], 0)], "{label}");
            assert_eq!(reasons(&p), vec!["ForceDeleted"], "{label}");
            let cond = find_condition(&p.status, COND_FORCE_DELETED).unwrap();
            assert_eq!(cond.last_transition_time, time(now), "{label}");
        } else {
            assert!(p.actions.is_empty(), "{label}: {:?}", p.actions);
            assert!(p.events.is_empty(), "{label}");
            assert!(
                find_condition(&p.status, COND_FORCE_DELETED).is_none(),
                "{label}"
            );
        }
        assert_invariants(&label, &w, &p);
    }
}

#[test]
fn force_deletion_reports_once() {
    let first = World {
        now: at(35),
        ..baseline(Start::Canceling)
    };
    let p1 = first.plan();
    assert_eq!(reasons(&p1), vec!["ForceDeleted"]);

    let mut second = World {
        now: at(36),
        ..first.clone()
    };
    second.run.status = Some(p1.status.clone());
    second.pods[0].deletion_deadline = Some(at(35));
    let p2 = second.plan();
    assert_eq!(p2.actions, vec![delete_pods(&["unit-pod"], 0)]);
    assert!(p2.events.is_empty(), "{:?}", p2.events);
    let cond = find_condition(&p2.status, COND_FORCE_DELETED).unwrap();
    assert_eq!(cond.status, "True");
    assert_eq!(cond.last_transition_time, time(35), "transition time kept");
    assert_invariants("second forced pass", &second, &p2);
}

#[test]
fn the_force_margin_is_the_configured_one() {
    let w = World {
        now: at(25),
        force_margin: Duration::ZERO,
        ..baseline(Start::Canceling)
    };
    let p = w.plan();
    assert_eq!(p.actions, vec![delete_pods(&["unit-pod"], 0)]);
    assert!(
        p.events[0].note.contains("0s after the 30s grace"),
        "{}",
        p.events[0].note
    );

    let w = World {
        now: at(25),
        force_margin: Duration::from_secs(60),
        ..baseline(Start::Canceling)
    };
    assert!(w.plan().actions.is_empty());
}

#[test]
fn a_shorter_grace_override_shortens_pod_deletion() {
    let mut w = baseline(Start::Running);
    w.cancel = Some(order(Some(5)));
    w.pods = vec![
        pod("running", "unit", PodProgress::Running),
        pod("unscheduled", "unit", PodProgress::Unscheduled),
        pod("done", "lint", PodProgress::Finished),
        ObservedPod {
            deletion_deadline: Some(at(30)),
            ..pod("dying-late", "unit", PodProgress::Running)
        },
        ObservedPod {
            deletion_deadline: Some(at(3)),
            ..pod("dying-soon", "unit", PodProgress::Running)
        },
    ];
    // Until the job controller has stopped the unit Job, only the finished
    // lint Job's pod goes.
    let p = w.plan();
    assert_eq!(
        p.actions,
        vec![
            suspend_job(UNIT_JOB),
            delete_job(LINT_JOB),
            delete_pods(&["done"], 5),
        ]
    );
    w.jobs[0].stopped = true;
    let p = w.plan();
    assert_eq!(
        p.actions,
        vec![
            delete_job(UNIT_JOB),
            delete_job(LINT_JOB),
            delete_pods(&["running", "unscheduled", "done", "dying-late"], 5),
        ]
    );
    assert_eq!(reasons(&p), vec!["Canceling"]);
    assert!(find_condition(&p.status, COND_FORCE_DELETED).is_none());
    assert_eq!(
        p.status.cancel.as_ref().map(|c| c.grace_period_seconds),
        Some(5)
    );
    // Force at accepted + 5 + 10.
    assert_eq!(p.requeue_after, Some(Duration::from_secs(5)));
    assert_invariants("grace 5", &w, &p);
}

#[test]
fn a_longer_grace_override_delays_forcing() {
    let mut status = canceling_status();
    status.cancel = Some(CancelRecord {
        grace_period_seconds: 60,
        mode: CancelMode::Cancel,
        ..first_cancel()
    });
    // Past the stage's own grace + margin (+35s), before the override's (+65s).
    let mut w = World {
        now: at(50),
        ..baseline(Start::Canceling)
    };
    w.run.status = Some(status);
    let p = w.plan();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(5)));

    let w = World { now: at(65), ..w };
    let p = w.plan();
    assert_eq!(p.actions, vec![delete_pods(&["unit-pod"], 0)]);
    assert!(
        p.events[0].note.contains("60s grace"),
        "{}",
        p.events[0].note
    );
    assert_invariants("grace 60", &w, &p);
}

#[test]
fn a_grace_of_zero_is_a_force_deletion_and_says_so_once() {
    let mut status = canceling_status();
    status.cancel = Some(CancelRecord {
        grace_period_seconds: 0,
        mode: CancelMode::Cancel,
        ..first_cancel()
    });
    let mut w = World {
        run: stage_run("success", json!({}), Some(status)),
        ..baseline(Start::Canceling)
    };
    let p = w.plan();
    assert_eq!(p.actions, vec![delete_pods(&["unit-pod"], 0)]);
    assert_eq!(reasons(&p), vec!["ForceDeleted"]);
    let cond = find_condition(&p.status, COND_FORCE_DELETED).expect("condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "GracePeriodZero")
    );
    assert!(
        cond.message.contains("with a grace period of 0"),
        "{}",
        cond.message
    );
    assert!(
        cond.message.contains("may go on running on their node"),
        "{}",
        cond.message
    );
    // The next pass forces again, without a second Event.
    w.run.status = Some(p.status.clone());
    let again = w.plan();
    assert_eq!(again.actions, vec![delete_pods(&["unit-pod"], 0)]);
    assert!(again.events.is_empty());
}

#[test]
fn canceling_deletes_only_jobs_not_already_deleting() {
    let mut w = baseline(Start::Canceling);
    w.jobs[1].deleting = false;
    let p = w.plan();
    assert_eq!(p.actions, vec![delete_job(LINT_JOB)]);
}

#[test]
fn a_cancel_before_any_job_exists_creates_none() {
    for start in [Start::NoStatus, Start::Approved] {
        let w = apply(Change::CancelArrives, baseline(start));
        let p = w.plan();
        assert!(p.actions.is_empty(), "{start:?}: {:?}", p.actions);
        assert_eq!(p.status.phase, Some(StagePhase::Failed), "{start:?}");
        assert_eq!(p.status.start_time, None, "{start:?}");
        cancelled_before_any_job(&p);
    }
}

#[test]
fn jobs_with_pods_still_present_hold_the_cancel_open() {
    // The Jobs are gone but a pod lingers: still Canceling.
    let before = baseline(Start::Canceling).plan();
    let mut w = baseline(Start::Canceling);
    w.jobs.clear();
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Canceling));
    unit_completing(&p);
    // What goes away on the way does not change the condition: no status
    // write per pod or Job gone.
    assert_eq!(
        find_condition(&p.status, COND_SUCCEEDED),
        find_condition(&before.status, COND_SUCCEEDED)
    );
    // The pods are gone but a Job lingers: still Canceling.
    let mut w = baseline(Start::Canceling);
    w.pods.clear();
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Canceling));
}

#[test]
fn completion_time_is_never_before_a_jobs_completion() {
    // Clock skew: the Job reports completing 30s after our now.
    let mut w = apply(Change::JobCompletes, baseline(Start::Running));
    w.jobs[0].finished = Some((RunResult::Passed, Some(time(30))));
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Succeeded));
    assert_eq!(p.status.completion_time, Some(time(30)));
    assert_invariants("skew on success", &w, &p);

    // The same while canceling: a job that finished "later" during the grace.
    let mut status = canceling_status();
    status.jobs[0].state = JobState::Completed;
    status.jobs[0].result = RunResult::Passed;
    status.jobs[0].completion_time = Some(time(20));
    let w = World::new(stage_run("success", json!({}), Some(status)));
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Failed));
    assert_eq!(p.status.completion_time, Some(time(20)));
    assert_invariants("skew on cancel", &w, &p);
}

#[test]
fn a_job_without_completion_time_completes_now() {
    let mut w = apply(Change::JobCompletes, baseline(Start::Running));
    w.jobs[0].finished = Some((RunResult::Passed, None));
    let p = w.plan();
    assert_eq!(job(&p.status, "unit").completion_time, Some(time(0)));
}

#[test]
fn every_failed_job_is_named() {
    let mut w = baseline(Start::Running);
    w.jobs = vec![
        finished(observed_job(UNIT_JOB, "unit"), RunResult::Failed, -3),
        finished(observed_job(LINT_JOB, "lint"), RunResult::Failed, -30),
    ];
    w.pods = vec![pod("unit-pod", "unit", PodProgress::Finished)];
    // `lint` already passed in status; only a Job that has not completed is re-read.
    let mut status = running_status();
    status.jobs[1].state = JobState::Scheduled;
    status.jobs[1].result = RunResult::Unknown;
    w.run.status = Some(status);
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Failed));
    assert_eq!(
        p.status.failure_reason.as_deref(),
        Some("job unit, lint failed")
    );
    assert!(p.events[0].warning);
    assert_invariants("both failed", &w, &p);
}

#[test]
fn an_active_pod_holds_the_run_open() {
    // Both Jobs report done, but a pod still runs: not finished yet.
    let mut w = apply(Change::JobCompletes, baseline(Start::Running));
    w.pods.push(pod("straggler", "lint", PodProgress::Running));
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Running));
    assert_eq!(p.status.completion_time, None);
    assert!(p.events.is_empty());
}

#[test]
fn a_deleted_job_is_not_recreated() {
    let w = apply(Change::JobDisappears, baseline(Start::Running));
    let p = w.plan();
    assert!(p.actions.is_empty());
    assert_eq!(job(&p.status, "unit").job_name.as_deref(), Some(UNIT_JOB));
}

#[test]
fn a_job_being_deleted_outside_a_cancel_is_completing() {
    let mut w = baseline(Start::Running);
    w.jobs[0].deleting = true;
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Running));
    unit_completing(&p);
}

// ------------------------------------------------------- suspected bugs --

#[test]
fn a_run_without_ids_never_succeeds() {
    let w = World::new(stage_run("success", json!({}), None));
    let p = w.plan();
    assert_ne!(p.status.phase, Some(StagePhase::Succeeded));
    assert_ne!(p.status.result, Some(RunResult::Passed));
    assert!(!reasons(&p).contains(&"Succeeded"));
    assert_eq!(p.status.completion_time, None);
}

#[test]
fn a_cancel_after_every_job_finished_keeps_the_result() {
    // `lint` passed at -30s, `unit` at -2s; the request was made at -1s.
    let w = apply(
        Change::CancelArrives,
        apply(Change::JobCompletes, baseline(Start::Running)),
    );
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Succeeded));
    assert_eq!(p.status.result, Some(RunResult::Passed));
    assert_eq!(p.status.cancel, None);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn jobs_finished_before_the_deadline_keep_the_result() {
    // Deadline at +540s; `unit` finished at +500s; the controller looks at +700s.
    let mut w = apply(Change::JobCompletes, baseline(Start::Running));
    w.jobs[0].finished = Some((RunResult::Passed, Some(time(500))));
    w.now = at(700);
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Succeeded));
    assert_eq!(p.status.cancel, None);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn canceling_without_a_record_still_waits_for_the_pods() {
    let mut status = canceling_status();
    status.cancel = None;
    let w = World {
        run: stage_run("success", json!({}), Some(status.clone())),
        ..baseline(Start::Canceling)
    };
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Canceling));

    let w = World::new(stage_run("success", json!({}), Some(status)));
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Failed));
    assert!(p.status.completion_time.is_some());
    for j in &p.status.jobs {
        assert_eq!(j.state, JobState::Completed, "job {}", j.name);
    }
}

#[test]
fn an_adopted_job_gets_scheduled_at() {
    let w = apply(Change::PodsProgress, baseline(Start::NoStatus));
    let p = w.plan();
    assert!(job(&p.status, "unit").scheduled_at.is_some());
}

// ------------------------------------------------------------ job_progress --

/// A label, the Job and pods of one job, and the state and result they give.
type ProgressCase<'a> = (
    &'a str,
    Option<&'a ObservedJob>,
    Vec<&'a ObservedPod>,
    (JobState, RunResult),
);

#[test]
fn job_progress_table() {
    let running = pod("p1", "unit", PodProgress::Running);
    let finished_pod = pod("p2", "unit", PodProgress::Finished);
    let preparing = pod("p3", "unit", PodProgress::Preparing);
    let assigned = pod("p4", "unit", PodProgress::Assigned);
    let unscheduled = pod("p5", "unit", PodProgress::Unscheduled);
    let dying = ObservedPod {
        deletion_deadline: Some(at(30)),
        ..running.clone()
    };
    let job = observed_job(UNIT_JOB, "unit");
    let passed = finished(job.clone(), RunResult::Passed, -1);
    let failed = finished(job.clone(), RunResult::Failed, -1);
    let job_deleting = deleting(job.clone());

    #[rustfmt::skip]
    let cases: Vec<ProgressCase> = vec![
        ("no Job, no pod", None, vec![], (JobState::Scheduled, RunResult::Unknown)),
        ("Job, no pod", Some(&job), vec![], (JobState::Scheduled, RunResult::Unknown)),
        ("unscheduled pod", Some(&job), vec![&unscheduled], (JobState::Scheduled, RunResult::Unknown)),
        ("assigned pod", Some(&job), vec![&assigned], (JobState::Assigned, RunResult::Unknown)),
        ("preparing pod", Some(&job), vec![&preparing], (JobState::Preparing, RunResult::Unknown)),
        ("running pod", Some(&job), vec![&running], (JobState::Building, RunResult::Unknown)),
        ("finished pod, Job not done", Some(&job), vec![&finished_pod], (JobState::Completing, RunResult::Unknown)),
        ("running beats the rest", Some(&job), vec![&unscheduled, &assigned, &preparing, &finished_pod, &running], (JobState::Building, RunResult::Unknown)),
        ("preparing beats assigned", Some(&job), vec![&assigned, &preparing, &unscheduled], (JobState::Preparing, RunResult::Unknown)),
        ("assigned beats unscheduled", Some(&job), vec![&unscheduled, &assigned], (JobState::Assigned, RunResult::Unknown)),
        ("pods without a Job", None, vec![&running], (JobState::Building, RunResult::Unknown)),
        ("Job passed", Some(&passed), vec![&finished_pod], (JobState::Completed, RunResult::Passed)),
        ("Job failed", Some(&failed), vec![], (JobState::Completed, RunResult::Failed)),
        ("Job passed beats a dying pod", Some(&passed), vec![&dying], (JobState::Completed, RunResult::Passed)),
        ("Job being deleted", Some(&job_deleting), vec![&running], (JobState::Completing, RunResult::Unknown)),
        ("pod being deleted", Some(&job), vec![&dying], (JobState::Completing, RunResult::Unknown)),
        ("one of two pods being deleted", Some(&job), vec![&preparing, &dying], (JobState::Completing, RunResult::Unknown)),
    ];
    for (label, job, pods, expected) in cases {
        assert_eq!(job_progress(job, &pods), expected, "{label}");
    }
}

// ----------------------------------------------------------- set_condition --

#[test]
fn set_condition_adds_a_new_condition() {
    let mut conditions = vec![condition(
        COND_FORCE_DELETED,
        "True",
        "GracePeriodExpired",
        -50,
    )];
    set_condition(
        &mut conditions,
        COND_SUCCEEDED,
        "Unknown",
        "Running",
        "jobs are running".into(),
        Some(4),
        t0(),
    );
    assert_eq!(conditions.len(), 2);
    assert_eq!(
        conditions[0],
        condition(COND_FORCE_DELETED, "True", "GracePeriodExpired", -50)
    );
    assert_eq!(
        conditions[1],
        Condition {
            type_: COND_SUCCEEDED.into(),
            status: "Unknown".into(),
            reason: "Running".into(),
            message: "jobs are running".into(),
            observed_generation: Some(4),
            last_transition_time: time(0),
        }
    );
}

#[test]
fn set_condition_table() {
    // (existing status, new status, expected transition time)
    for (old, new, since) in [
        ("Unknown", "Unknown", -100),
        ("True", "True", -100),
        ("False", "False", -100),
        ("Unknown", "True", 0),
        ("Unknown", "False", 0),
        ("True", "False", 0),
        ("False", "Unknown", 0),
    ] {
        let label = format!("{old} -> {new}");
        let other = condition("Other", "True", "Because", -200);
        let mut conditions = vec![
            condition(COND_SUCCEEDED, old, "Before", -100),
            other.clone(),
        ];
        set_condition(
            &mut conditions,
            COND_SUCCEEDED,
            new,
            "After",
            "new message".into(),
            Some(9),
            t0(),
        );
        assert_eq!(conditions.len(), 2, "{label}: no duplicate");
        assert_eq!(conditions[1], other, "{label}: others untouched");
        let c = &conditions[0];
        assert_eq!(c.type_, COND_SUCCEEDED, "{label}: position kept");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            (new, "After", "new message"),
            "{label}"
        );
        assert_eq!(c.observed_generation, Some(9), "{label}");
        assert_eq!(
            c.last_transition_time,
            time(since),
            "{label}: transition time"
        );
    }
}

// ------------------------------------------------ ObservedJob::from_job --

fn k8s_job(value: Value) -> JobView {
    serde_json::from_value(value).unwrap()
}

/// The unit job as the controller observes it from a Job of `value` named
/// as the controller names the unit job's Job (and then called `UNIT_JOB`
/// here, as in the rest of these tests).
fn observe_unit_job(mut value: Value) -> Option<ObservedJob> {
    let run = stage_run("success", json!({}), None);
    value["metadata"]["name"] = json!(unit_job_name(&run));
    ObservedJob::from_job(&k8s_job(value), &run).map(|j| ObservedJob {
        resource_name: UNIT_JOB.into(),
        ..j
    })
}

fn unit_job_name(run: &StageRun) -> String {
    labels::job_resource_name(
        run.metadata.name.as_deref().unwrap(),
        run.metadata.uid.as_deref().unwrap(),
        "unit",
    )
}

fn annotated_job(status: Value) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": UNIT_JOB,
            "namespace": "ci",
            "labels": { "cancel.dev/stagerun-uid": "uid-1", "cancel.dev/job-id": "501" },
            "annotations": { "cancel.dev/stagerun": "build-7-test", "cancel.dev/job": "unit" },
        },
        "spec": { "template": { "spec": { "containers": [{"name": "main", "image": "busybox"}] } } },
        "status": status,
    })
}

fn job_condition(type_: &str, status: &str, since: i64) -> Value {
    json!({
        "type": type_,
        "status": status,
        "lastTransitionTime": time(since).0.to_string(),
    })
}

#[test]
fn from_job_table() {
    let t = |secs: i64| time(secs).0.to_string();
    let not_finished = Some(observed_job(UNIT_JOB, "unit"));
    let cases: Vec<(&str, Value, Option<ObservedJob>)> = vec![
        ("no status", annotated_job(json!({})), not_finished.clone()),
        (
            "active",
            annotated_job(json!({"active": 1, "startTime": t(-60)})),
            not_finished.clone(),
        ),
        (
            "Complete with completionTime",
            annotated_job(json!({
                "conditions": [job_condition("SuccessCriteriaMet", "True", -8), job_condition("Complete", "True", -5)],
                "completionTime": t(-7),
            })),
            Some(finished(
                observed_job(UNIT_JOB, "unit"),
                RunResult::Passed,
                -7,
            )),
        ),
        (
            "Complete without completionTime",
            annotated_job(json!({"conditions": [job_condition("Complete", "True", -5)]})),
            Some(finished(
                observed_job(UNIT_JOB, "unit"),
                RunResult::Passed,
                -5,
            )),
        ),
        (
            "Complete but False",
            annotated_job(json!({"conditions": [job_condition("Complete", "False", -5)]})),
            not_finished.clone(),
        ),
        (
            "Failed",
            annotated_job(json!({"conditions": [job_condition("Failed", "True", -3)]})),
            Some(finished(
                observed_job(UNIT_JOB, "unit"),
                RunResult::Failed,
                -3,
            )),
        ),
        // Pods may still be stopping, so not finished; but the job
        // controller creates no pod for it any more.
        (
            "FailureTarget only",
            annotated_job(json!({"conditions": [job_condition("FailureTarget", "True", -3)]})),
            Some(ObservedJob {
                stopped: true,
                ..observed_job(UNIT_JOB, "unit")
            }),
        ),
        (
            "SuccessCriteriaMet only",
            annotated_job(json!({"conditions": [job_condition("SuccessCriteriaMet", "True", -3)]})),
            Some(ObservedJob {
                stopped: true,
                ..observed_job(UNIT_JOB, "unit")
            }),
        ),
        (
            "FailureTarget but False",
            annotated_job(json!({"conditions": [job_condition("FailureTarget", "False", -3)]})),
            not_finished.clone(),
        ),
        (
            "Suspended",
            annotated_job(json!({"conditions": [job_condition("Suspended", "True", -3)]})),
            not_finished.clone(),
        ),
    ];
    for (label, value, expected) in cases {
        // Every Job of the table carries the id label 501.
        let expected = expected.map(|j| ObservedJob { id: Some(501), ..j });
        assert_eq!(observe_unit_job(value), expected, "{label}");
    }
}

/// A Job whose status the job controller cannot write is never reported
/// stopped: once suspended, with no pod left, STOP_WAIT past the force
/// deadline, it is deleted anyway, so that its run does not wait for good.
#[test]
fn a_suspended_job_never_reported_stopped_is_deleted_once_waited_out() {
    let mut w = baseline(Start::Canceling);
    w.jobs = vec![suspended(observed_job(UNIT_JOB, "unit"))];
    w.pods.clear();
    // Force deadline at 35 s (grace 30 + margin 10 from acceptance at -5).
    let give_up = 35 + STOP_WAIT.as_secs() as i64;
    w.now = at(give_up - 1);
    assert_eq!(deletions(&w.plan()), vec![]);
    w.now = at(give_up);
    let p = w.plan();
    assert_eq!(deletions(&p), vec![delete_job(UNIT_JOB)]);
    assert_invariants("waited out", &w, &p);

    // A pod of it still there: the pod goes first, the Job stays.
    w.pods = vec![pod("unit-pod", "unit", PodProgress::Running)];
    let p = w.plan();
    assert_eq!(deletions(&p), vec![delete_pods(&["unit-pod"], 0)]);
    assert_invariants("a pod left", &w, &p);
}

/// Seen in a chaos run: a suspended Job whose pods were force-deleted at the
/// force deadline is failed by the job controller, which writes the interim
/// `FailureTarget` but can never write `Failed` (the suspension cleared
/// `startTime`, and the API server refuses a finished Job without one), nor
/// `Suspended=True`. It is stopped all the same: deleted, and the run ends.
#[test]
fn a_suspended_job_the_job_controller_failed_but_cannot_finish_is_stopped() {
    let mut value = annotated_job(json!({
        "conditions": [job_condition("FailureTarget", "True", -3)],
        "uncountedTerminatedPods": {},
    }));
    value["spec"]["suspend"] = json!(true);
    let observed = observe_unit_job(value).unwrap();
    assert!(observed.suspended && observed.stopped && observed.finished.is_none());

    let mut w = baseline(Start::Canceling);
    w.jobs = vec![observed];
    w.pods.clear();
    w.now = at(60);
    let p = w.plan();
    assert_eq!(deletions(&p), vec![delete_job(UNIT_JOB)]);
    assert_invariants("FailureTarget", &w, &p);
    w.jobs.clear();
    assert_eq!(w.plan().status.result, Some(RunResult::Cancelled));
}

#[test]
fn from_job_reads_deletion() {
    let mut value = annotated_job(json!({}));
    value["metadata"]["deletionTimestamp"] = json!(time(0).0.to_string());
    let observed = observe_unit_job(value).unwrap();
    assert!(observed.deleting);

    let observed = observe_unit_job(annotated_job(json!({}))).unwrap();
    assert!(!observed.deleting);
}

/// Which job a Job runs is read from its name, which the controller chose
/// and nobody can change, not from annotations or labels anyone may edit.
#[test]
fn from_job_knows_the_job_by_its_name_not_its_annotations() {
    let run = stage_run("success", json!({}), None);
    let observe = |value: Value| ObservedJob::from_job(&k8s_job(value), &run);
    let named = |name: &str, annotations: Value| {
        let mut value = annotated_job(json!({}));
        value["metadata"]["name"] = json!(name);
        value["metadata"]["annotations"] = annotations;
        value
    };
    let unit = unit_job_name(&run);
    for (label, annotations) in [
        ("no annotations", json!({})),
        (
            "another job's annotation",
            json!({"cancel.dev/job": "lint"}),
        ),
        ("a job of no run", json!({"cancel.dev/job": "deploy"})),
    ] {
        let observed = observe(named(&unit, annotations)).expect(label);
        assert_eq!(observed.job, "unit", "{label}");
        assert_eq!(observed.resource_name, unit, "{label}");
    }
    // A Job the run controls under another name stands for itself (it is
    // stopped with the run, and runs no job of it).
    let stray = observe(named("hand-made", json!({"cancel.dev/job": "unit"}))).unwrap();
    assert_eq!(stray.job, "hand-made");
    let mut no_name = annotated_job(json!({}));
    no_name["metadata"].as_object_mut().unwrap().remove("name");
    assert_eq!(observe(no_name), None);
}

// ------------------------------------------------- ObservedPod::from_pod --

fn k8s_pod(spec: Value, status: Value) -> PodView {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "main", "image": "busybox"}]);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "unit-pod",
            "namespace": "ci",
            "annotations": { "cancel.dev/job": "unit" },
        },
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

fn container_status(state: Value) -> Value {
    json!([{
        "name": "main",
        "image": "busybox",
        "imageID": "",
        "ready": false,
        "restartCount": 0,
        "state": state,
    }])
}

#[test]
fn from_pod_progress_table() {
    let on_node = json!({"nodeName": "kwok-node-0"});
    let cases: Vec<(&str, Value, Value, PodProgress)> = vec![
        ("no status", json!({}), json!({}), PodProgress::Unscheduled),
        (
            "Pending, unscheduled",
            json!({}),
            json!({"phase": "Pending"}),
            PodProgress::Unscheduled,
        ),
        (
            "Pending, on a node",
            on_node.clone(),
            json!({"phase": "Pending"}),
            PodProgress::Assigned,
        ),
        (
            "Pending, on a node, empty container statuses",
            on_node.clone(),
            json!({"phase": "Pending", "containerStatuses": []}),
            PodProgress::Assigned,
        ),
        (
            "Pending, containers being created",
            on_node.clone(),
            json!({
                "phase": "Pending",
                "containerStatuses": container_status(json!({"waiting": {"reason": "ContainerCreating"}})),
            }),
            PodProgress::Preparing,
        ),
        (
            "Running",
            on_node.clone(),
            json!({"phase": "Running"}),
            PodProgress::Running,
        ),
        (
            "Succeeded",
            on_node.clone(),
            json!({"phase": "Succeeded"}),
            PodProgress::Finished,
        ),
        (
            "Failed",
            on_node.clone(),
            json!({"phase": "Failed"}),
            PodProgress::Finished,
        ),
        (
            "Failed before scheduling",
            json!({}),
            json!({"phase": "Failed"}),
            PodProgress::Finished,
        ),
    ];
    for (label, spec, status, expected) in cases {
        let observed = ObservedPod::from_pod(&k8s_pod(spec, status), Some("unit".into()));
        assert_eq!(observed.progress, expected, "{label}");
        assert_eq!(observed.name, "unit-pod", "{label}");
        assert_eq!(observed.job.as_deref(), Some("unit"), "{label}");
        assert_eq!(observed.deletion_deadline, None, "{label}");
    }
}

#[test]
fn from_pod_reads_the_deletion_deadline() {
    let mut pod = k8s_pod(json!({"nodeName": "n"}), json!({"phase": "Running"}));
    pod.metadata.deletion_timestamp = Some(time(25));
    assert_eq!(
        ObservedPod::from_pod(&pod, Some("unit".into())),
        ObservedPod {
            name: "unit-pod".into(),
            job: Some("unit".into()),
            progress: PodProgress::Running,
            deletion_deadline: Some(at(25)),
        }
    );
}

// ------------------------------------------- applying a plan, recorded --

#[test]
fn a_job_created_by_a_lost_pass_keeps_its_id() {
    // A pass allocated 500/501/502 and created the unit Job, then its status
    // write failed; this pass allocated 900/901/902.
    let mut w = baseline(Start::NoStatus);
    w.ids = Some((900, vec![901, 902]));
    w.jobs = vec![ObservedJob {
        id: Some(501),
        ..observed_job(UNIT_JOB, "unit")
    }];
    let p = w.plan();
    let unit = p.status.jobs.iter().find(|j| j.name == "unit").unwrap();
    assert_eq!(unit.id, 501, "the Job's label wins");
    assert_eq!(unit.job_name.as_deref(), Some(UNIT_JOB));
    let lint = p.status.jobs.iter().find(|j| j.name == "lint").unwrap();
    assert_eq!(lint.id, 902);
    assert_eq!(p.actions, vec![create("lint")]);
}

#[test]
fn creations_are_recorded() {
    let w = baseline(Start::NoStatus);
    let mut p = w.plan();
    assert_eq!(p.actions, creates_both());
    record_creations(
        &mut p,
        &[
            (
                "unit".into(),
                JobCreation::Created {
                    resource_name: "unit-job".into(),
                    uid: Some("unit-uid".into()),
                },
            ),
            (
                "lint".into(),
                JobCreation::AlreadyOurs {
                    resource_name: "lint-job".into(),
                    uid: Some("lint-uid".into()),
                    id: Some(777),
                },
            ),
        ],
        t0(),
    );
    let job = |n: &str| p.status.jobs.iter().find(|j| j.name == n).unwrap().clone();
    assert_eq!(job("unit").job_name.as_deref(), Some("unit-job"));
    assert_eq!(job("unit").job_uid.as_deref(), Some("unit-uid"));
    assert_eq!(job("unit").state, JobState::Scheduled);
    assert_eq!(job("lint").job_name.as_deref(), Some("lint-job"));
    assert_eq!(job("lint").job_uid.as_deref(), Some("lint-uid"));
    assert_eq!(job("lint").id, 777);
    assert!(p.events.is_empty());
}

#[test]
fn a_job_that_cannot_be_created_fails_once_and_is_never_retried() {
    for (label, outcome, reason, says) in [
        (
            "refused",
            JobCreation::Refused {
                message: "spec.template.spec.containers[0].name: Invalid value".into(),
            },
            "InvalidJob",
            "Invalid value",
        ),
        (
            "name taken",
            JobCreation::NameTaken {
                resource_name: "taken".into(),
            },
            "JobNameTaken",
            "belongs to another owner",
        ),
    ] {
        let mut w = baseline(Start::NoStatus);
        let mut p = w.plan();
        record_creations(
            &mut p,
            &[
                (
                    "unit".into(),
                    JobCreation::Created {
                        resource_name: UNIT_JOB.into(),
                        uid: None,
                    },
                ),
                ("lint".into(), outcome),
            ],
            t0(),
        );
        let lint = p.status.jobs.iter().find(|j| j.name == "lint").unwrap();
        assert_eq!(lint.state, JobState::Completed, "{label}");
        assert_eq!(lint.result, RunResult::Failed, "{label}");
        assert_eq!(reasons(&p), vec![reason], "{label}");
        assert!(p.events[0].warning, "{label}");
        assert!(p.events[0].note.contains(says), "{label}");

        // Later passes, the unit Job running: lint is not created again.
        w.run.status = Some(p.status.clone());
        w.ids = None;
        w.jobs = vec![observed_job(UNIT_JOB, "unit")];
        w.pods = vec![pod("unit-pod", "unit", PodProgress::Running)];
        let again = w.plan();
        assert!(again.actions.is_empty(), "{label}: {:?}", again.actions);
        assert!(again.events.is_empty(), "{label}");
        assert_eq!(again.status.phase, Some(StagePhase::Running), "{label}");

        // Once unit ends, the run fails, saying why.
        w.run.status = Some(again.status);
        w.jobs = vec![finished(
            observed_job(UNIT_JOB, "unit"),
            RunResult::Passed,
            0,
        )];
        w.pods = vec![pod("unit-pod", "unit", PodProgress::Finished)];
        let end = w.plan();
        assert!(end.actions.is_empty(), "{label}");
        assert_eq!(end.status.phase, Some(StagePhase::Failed), "{label}");
        assert!(
            end.status
                .failure_reason
                .as_deref()
                .is_some_and(|r| r.contains("could not be created")),
            "{label}: {:?}",
            end.status.failure_reason
        );
    }
}

#[test]
fn a_held_creation_keeps_its_siblings_outcomes_and_is_tried_again() {
    let mut w = baseline(Start::NoStatus);
    let mut p = w.plan();
    let quota = "jobs.batch \"lint\" is forbidden: exceeded quota: one-job (403)";
    let held = || JobCreation::Held {
        message: quota.into(),
    };
    record_creations(
        &mut p,
        &[
            (
                "unit".into(),
                JobCreation::Refused {
                    message: "Invalid value".into(),
                },
            ),
            ("lint".into(), held()),
        ],
        t0(),
    );
    let job = |p: &Plan, n: &str| p.status.jobs.iter().find(|j| j.name == n).unwrap().clone();
    // The refusal is recorded although its sibling's creation was held.
    assert_eq!(
        (job(&p, "unit").state, job(&p, "unit").result),
        (JobState::Completed, RunResult::Failed)
    );
    assert_eq!(job(&p, "lint").job_name, None);
    assert_eq!(job(&p, "lint").state, JobState::Scheduled);
    let cond = find_condition(&p.status, COND_CREATION_HELD).expect("condition");
    assert_eq!(cond.status, "True");
    assert!(cond.message.contains("job lint: "), "{}", cond.message);
    assert!(cond.message.contains("exceeded quota"), "{}", cond.message);
    assert_eq!(reasons(&p), vec!["InvalidJob", COND_CREATION_HELD]);

    // The next pass creates only the held job again; the same refusal is
    // not announced twice.
    w.run.status = Some(p.status.clone());
    w.ids = None;
    let mut again = w.plan();
    assert_eq!(again.actions, vec![create("lint")]);
    record_creations(&mut again, &[("lint".into(), held())], t0());
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert!(find_condition(&again.status, COND_CREATION_HELD).is_some());

    // Created at last: the condition goes.
    w.run.status = Some(again.status);
    let mut last = w.plan();
    assert_eq!(last.actions, vec![create("lint")]);
    record_creations(
        &mut last,
        &[(
            "lint".into(),
            JobCreation::Created {
                resource_name: LINT_JOB.into(),
                uid: None,
            },
        )],
        t0(),
    );
    assert!(find_condition(&last.status, COND_CREATION_HELD).is_none());
    assert!(last.events.is_empty());
    assert_eq!(job(&last, "lint").job_name.as_deref(), Some(LINT_JOB));
}

/// A running stage (unit running, lint finished) cancelled: the running Job
/// is suspended, its pod left to the job controller; the finished one is
/// deleted at once, its pod with it (finished pods too), with the stage's
/// grace. Returns the next pass's world: the lint Job gone, its pod
/// terminating.
fn cancel_accepted_while_running() -> World {
    let mut w = baseline(Start::Running);
    w.cancel = Some(order(None));
    let p = w.plan();
    assert_eq!(
        deletions(&p),
        vec![
            suspend_job(UNIT_JOB),
            delete_job(LINT_JOB),
            delete_pods(&["lint-pod"], 30),
        ]
    );
    w.run.status = Some(p.status.clone());
    w.cancel = None;
    w.jobs.retain(|j| j.resource_name == UNIT_JOB);
    w.pods[1].deletion_deadline = Some(at(30));
    w
}

#[test]
fn canceling_deletes_every_pod_with_the_grace_period_once() {
    let mut w = cancel_accepted_while_running();
    // The job controller stopped the unit Job: its pod goes.
    w.jobs[0].stopped = true;
    let p = w.plan();
    assert_eq!(
        p.actions,
        vec![delete_job(UNIT_JOB), delete_pods(&["unit-pod"], 30)]
    );
    // Next pass: the pods terminate on that deadline; nothing is deleted again.
    w.run.status = Some(p.status.clone());
    w.jobs.clear();
    for pod in w.pods.iter_mut() {
        pod.deletion_deadline = Some(at(30));
    }
    w.now = at(1);
    assert!(w.plan().actions.is_empty());
}

/// What applying `plan`'s deletions at `now` leaves in the controller's memory.
fn issued_by(plan: &Plan, now: Timestamp) -> Issued {
    let mut issued = Issued::default();
    for a in &plan.actions {
        match a {
            Action::DeleteJob { resource_name, .. } => {
                issued.jobs.insert(resource_name.clone(), now);
            }
            Action::SuspendJob { resource_name } => {
                issued.suspensions.insert(resource_name.clone(), now);
            }
            Action::DeletePods {
                names,
                grace_seconds,
            } => {
                for n in names {
                    issued.pods.insert(n.clone(), (now, *grace_seconds));
                }
            }
            Action::CreateJob { .. } => {}
        }
    }
    issued
}

fn deletions(plan: &Plan) -> Vec<Action> {
    plan.actions
        .iter()
        .filter(|a| !matches!(a, Action::CreateJob { .. }))
        .cloned()
        .collect()
}

#[test]
fn a_deletion_issued_is_not_issued_again_before_the_cache_shows_it() {
    for grace in [30, 0] {
        let label = format!("grace {grace}");
        let mut first = baseline(Start::Running);
        first.cancel = Some(order(Some(grace)));
        let p1 = first.plan();
        assert_eq!(
            deletions(&p1),
            vec![
                suspend_job(UNIT_JOB),
                delete_job(LINT_JOB),
                // A grace of 0 forces every pod at once.
                if grace == 0 {
                    delete_pods(&["unit-pod", "lint-pod"], 0)
                } else {
                    delete_pods(&["lint-pod"], grace)
                }
            ],
            "{label}"
        );

        // The next pass comes from a watch event that predates the
        // deletions: the cache still shows nothing deleted.
        let mut second = first.clone();
        second.run.status = Some(p1.status.clone());
        second.cancel = None;
        second.issued = issued_by(&p1, first.now);
        second.now = at(1);
        let p2 = second.plan();
        assert_eq!(deletions(&p2), vec![], "{label}");
        assert_invariants(&label, &second, &p2);

        // A cache that never shows them: issued again, after a while.
        let mut late = second.clone();
        late.now = first.now + SignedDuration::try_from(REISSUE_AFTER).unwrap();
        let p3 = late.plan();
        assert!(
            p3.actions.contains(&suspend_job(UNIT_JOB))
                || p3.actions.iter().any(|a| matches!(a,
                    Action::DeleteJob { resource_name, .. } if resource_name == UNIT_JOB)),
            "{label}: {:?}",
            p3.actions
        );
        assert!(
            p3.actions.contains(&delete_job(LINT_JOB)),
            "{label}: {:?}",
            p3.actions
        );
        assert!(
            p3.actions
                .iter()
                .any(|a| matches!(a, Action::DeletePods { names, .. } if names.contains(&"lint-pod".to_string()))),
            "{label}: {:?}",
            p3.actions
        );
    }
}

#[test]
fn an_issued_deletion_does_not_hold_back_a_shorter_grace_or_the_force() {
    // Deleted with 30 s at accept time (t0): a later forced pass (past
    // grace + margin) still forces, once.
    let mut w = World {
        now: at(41),
        ..baseline(Start::Canceling)
    };
    w.pods[0].deletion_deadline = None;
    w.issued.pods.insert("unit-pod".into(), (t0(), 30));
    w.issued.jobs.insert(UNIT_JOB.into(), at(39));
    let p = w.plan();
    assert_eq!(p.actions, vec![delete_pods(&["unit-pod"], 0)]);

    // Before the force deadline, a pod deleted with 30 s now gets nothing
    // more: the issued deadline counts as its own.
    let mut w = World {
        now: at(5),
        ..baseline(Start::Canceling)
    };
    w.pods[0].deletion_deadline = None;
    w.issued.pods.insert("unit-pod".into(), (at(4), 30));
    assert_eq!(deletions(&w.plan()), vec![]);
}

#[test]
fn a_running_job_is_deleted_only_once_the_job_controller_stopped_it() {
    let mut w = cancel_accepted_while_running();

    // Suspended in its spec, not yet in its status: it waits, whatever the
    // pods do, and the run stays Canceling.
    w.jobs[0].suspended = true;
    w.pods.clear();
    w.now = at(2);
    let p = w.plan();
    assert_eq!(deletions(&p), vec![], "{:?}", p.actions);
    assert_eq!(p.status.phase, Some(StagePhase::Canceling));
    assert_invariants("suspended, not stopped", &w, &p);

    // The job controller reports it suspended: deleted in the background.
    w.jobs[0].stopped = true;
    let p = w.plan();
    assert_eq!(deletions(&p), vec![delete_job(UNIT_JOB)]);
    assert_invariants("stopped", &w, &p);

    // Once it is gone, the run is cancelled, the job with it.
    w.jobs.clear();
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Failed));
    assert_eq!(p.status.result, Some(RunResult::Cancelled));
    assert_eq!(job(&p.status, "unit").result, RunResult::Cancelled);
}

/// The interleaving behind a run once reported Cancelled with pods left: the
/// job controller cannot write the Jobs' status across an API server restart,
/// so it never reports the suspension by the force deadline, and its cache
/// still shows the Jobs as running. Had the Jobs been deleted then, their
/// pods forced and "nothing left" confirmed, that job controller would have
/// made new pods for Jobs that no longer existed, after the run was reported
/// Cancelled. The Job stays until the job controller reports it stopped.
#[test]
fn a_job_the_job_controller_has_not_stopped_is_never_deleted_even_past_the_force_deadline() {
    let mut w = baseline(Start::Canceling);
    w.jobs = vec![suspended(observed_job(UNIT_JOB, "unit"))];
    w.pods = vec![pod("unit-pod", "unit", PodProgress::Running)];
    // Grace 30 s + margin 10 s from acceptance (5 s before t0).
    w.now = at(34);
    assert_eq!(deletions(&w.plan()), vec![]);

    // The force deadline: the pod is forced, the Job kept.
    w.now = at(35);
    let p = w.plan();
    assert_eq!(deletions(&p), vec![delete_pods(&["unit-pod"], 0)]);
    assert_eq!(p.status.phase, Some(StagePhase::Canceling));
    assert_invariants("force deadline", &w, &p);

    // The pod is gone; the job controller, behind, has not reported the
    // Job suspended: the run stays Canceling, nothing to delete.
    w.run.status = Some(p.status.clone());
    w.issued = issued_by(&p, w.now);
    w.pods.clear();
    w.now = at(36);
    let p = w.plan();
    assert_eq!(deletions(&p), vec![]);
    assert_eq!(p.status.phase, Some(StagePhase::Canceling));
    assert_eq!(p.status.result, Some(RunResult::Unknown));
    assert_invariants("pods gone, Job not stopped", &w, &p);

    // From its stale cache the job controller replaces the pod: forced too.
    w.pods = vec![pod("unit-replacement", "unit", PodProgress::Unscheduled)];
    w.now = at(37);
    let p = w.plan();
    assert_eq!(deletions(&p), vec![delete_pods(&["unit-replacement"], 0)]);
    assert_invariants("a replacement", &w, &p);

    // It catches up and reports the Job suspended: the Job is deleted.
    w.pods.clear();
    w.jobs[0].stopped = true;
    w.now = at(60);
    let p = w.plan();
    assert_eq!(deletions(&p), vec![delete_job(UNIT_JOB)]);
    assert_eq!(p.status.phase, Some(StagePhase::Canceling));
    assert_invariants("stopped", &w, &p);

    // Only then, nothing left, is the run cancelled.
    w.jobs.clear();
    let p = w.plan();
    assert_eq!(p.status.phase, Some(StagePhase::Failed));
    assert_eq!(p.status.result, Some(RunResult::Cancelled));
}

#[test]
fn issued_suspensions_are_remembered_like_deletions() {
    let mut w = baseline(Start::Running);
    w.cancel = Some(order(None));
    let p1 = w.plan();
    let mut memory = Issued::default();
    memory.merge(issued_by(&p1, w.now));
    assert!(memory.suspension(w.now, UNIT_JOB));
    assert!(memory.job(w.now, LINT_JOB));
    // A pass on a cache that does not show the suspension yet issues nothing.
    w.run.status = Some(p1.status.clone());
    w.cancel = None;
    w.issued = memory;
    w.now = at(1);
    assert_eq!(deletions(&w.plan()), vec![]);
}

/// A Job's uid is recorded while its run goes on, in the status written
/// before anything is deleted: its pods stay known by it once it is gone.
/// A finished run's status is left as it is.
#[test]
fn the_uids_of_observed_jobs_are_recorded_while_the_run_goes_on() {
    for start in [Start::Running, Start::Canceling] {
        let mut w = baseline(start);
        w.jobs[0].uid = Some("unit-uid".into());
        let p = w.plan();
        assert_eq!(
            job(&p.status, "unit").job_uid.as_deref(),
            Some("unit-uid"),
            "{start:?}"
        );
        assert_eq!(job(&p.status, "lint").job_uid, None, "{start:?}");
    }
    for start in [Start::Succeeded, Start::Failed] {
        let mut w = baseline(start);
        w.jobs = vec![ObservedJob {
            uid: Some("unit-uid".into()),
            ..observed_job(UNIT_JOB, "unit")
        }];
        let p = w.plan();
        assert_eq!(job(&p.status, "unit").job_uid, None, "{start:?}");
    }
}

/// A Job carries what is left of its run's deadline, so that the job
/// controller ends it at that deadline even while no controller runs.
#[test]
fn a_job_carries_what_is_left_of_the_runs_deadline() {
    let run = stage_run("success", json!({}), None);
    let started = running_status(); // 60 s ago
    assert_eq!(job_deadline(&run, &started, t0()), Some(DEADLINE - 60));
    // Part of a second left counts as a whole one.
    let now = t0().checked_add(SignedDuration::from_millis(200)).unwrap();
    assert_eq!(job_deadline(&run, &started, now), Some(DEADLINE - 60));
    // Not started yet: the whole deadline; past it: a second, never less.
    assert_eq!(
        job_deadline(&run, &StageRunStatus::default(), t0()),
        Some(DEADLINE)
    );
    assert_eq!(job_deadline(&run, &started, at(DEADLINE * 2)), Some(1));
    let mut no_deadline = run.clone();
    no_deadline.spec.active_deadline_seconds = None;
    assert_eq!(job_deadline(&no_deadline, &started, t0()), None);
}

/// A Job the job controller ended at the run's deadline (the controller was
/// away meanwhile) means the run timed out: it is cancelled for its
/// deadline, not failed by its job. A job that failed on its own, past the
/// deadline too, keeps the run's result.
#[test]
fn a_job_ended_at_the_runs_deadline_times_the_run_out() {
    let past = at(DEADLINE - 60 + 5);
    for (deadline_exceeded, phase, cause) in [
        (true, StagePhase::Canceling, Some(CancelCause::Deadline)),
        (false, StagePhase::Failed, None),
    ] {
        let mut w = baseline(Start::Running);
        w.now = past;
        w.jobs[0] = ObservedJob {
            deadline_exceeded,
            ..finished(observed_job(UNIT_JOB, "unit"), RunResult::Failed, 0)
        };
        w.pods = vec![
            pod("unit-pod", "unit", PodProgress::Finished),
            pod("lint-pod", "lint", PodProgress::Finished),
        ];
        let p = w.plan();
        assert_eq!(p.status.phase, Some(phase), "{deadline_exceeded}");
        assert_eq!(
            p.status.cancel.as_ref().map(|c| c.cause),
            cause,
            "{deadline_exceeded}"
        );
        assert_invariants("deadline exceeded by the job controller", &w, &p);
    }
}

#[test]
fn from_job_reads_a_deadline_the_job_controller_enforced() {
    let failed = |reason: &str| {
        let mut c = job_condition("Failed", "True", -3);
        c["reason"] = json!(reason);
        observe_unit_job(annotated_job(json!({"conditions": [c]}))).unwrap()
    };
    assert!(failed("DeadlineExceeded").deadline_exceeded);
    assert!(!failed("BackoffLimitExceeded").deadline_exceeded);
    assert!(
        !observe_unit_job(annotated_job(json!({})))
            .unwrap()
            .deadline_exceeded
    );
}

#[path = "cleanup_tests.rs"]
mod cleanup;
