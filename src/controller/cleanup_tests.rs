//! The cancel modes and the cleanup jobs: every start of a run with cleanup
//! jobs against every change, with the invariants of the cancel rules
//! (`assert_invariants`) checked on each decision.

use super::*;

const REPORT_JOB: &str = "build-7-test-report";
const NOTIFY_JOB: &str = "build-7-test-notify";
/// The cleanup jobs' own deadline.
const CLEANUP_DEADLINE: i64 = 300;

/// The two-job run of the main table, with two cleanup jobs: `report`
/// (always) and `notify` (when cancelled).
fn run_with_cleanup(status: StageRunStatus) -> StageRun {
    let mut run = stage_run("success", json!({}), Some(status));
    let template = json!({"spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}});
    run.spec.cleanup = serde_json::from_value(json!([
        {"name": "report", "template": template.clone(), "activeDeadlineSeconds": CLEANUP_DEADLINE},
        {"name": "notify", "template": template, "when": "Cancelled", "activeDeadlineSeconds": CLEANUP_DEADLINE},
    ]))
    .unwrap();
    run
}

fn entry(name: &str, id: i64, state: JobState, result: RunResult, resource: &str) -> JobStatus {
    JobStatus {
        job_name: Some(resource.into()),
        scheduled_at: Some(time(-60)),
        ..job_status(name, id, state, result)
    }
}

fn cleanup_entry(name: &str, id: i64) -> JobStatus {
    JobStatus {
        cleanup: true,
        ..job_status(name, id, JobState::Scheduled, RunResult::Unknown)
    }
}

fn begun_entry(name: &str, id: i64, resource: &str) -> JobStatus {
    JobStatus {
        cleanup: true,
        job_name: Some(resource.into()),
        scheduled_at: Some(time(-30)),
        ..job_status(name, id, JobState::Building, RunResult::Unknown)
    }
}

fn skipped_entry(name: &str, id: i64) -> JobStatus {
    JobStatus {
        skipped: true,
        completion_time: Some(time(-30)),
        ..cleanup_entry(name, id)
    }
    .completed(RunResult::Unknown)
}

trait Completed {
    fn completed(self, result: RunResult) -> Self;
}

impl Completed for JobStatus {
    fn completed(self, result: RunResult) -> Self {
        JobStatus {
            state: JobState::Completed,
            result,
            completion_time: self.completion_time.or(Some(time(-30))),
            ..self
        }
    }
}

/// Started 60s ago: `unit` builds, `lint` waits for a node; no cleanup yet.
fn running() -> StageRunStatus {
    StageRunStatus {
        id: Some(500),
        phase: Some(StagePhase::Running),
        result: Some(RunResult::Unknown),
        jobs: vec![
            entry(
                "unit",
                501,
                JobState::Building,
                RunResult::Unknown,
                UNIT_JOB,
            ),
            entry(
                "lint",
                502,
                JobState::Scheduled,
                RunResult::Unknown,
                LINT_JOB,
            ),
            cleanup_entry("report", 503),
            cleanup_entry("notify", 504),
        ],
        start_time: Some(time(-60)),
        observed_generation: Some(GENERATION),
        conditions: vec![condition(COND_SUCCEEDED, "Unknown", "Running", -60)],
        ..StageRunStatus::default()
    }
}

/// A cancel of `mode` accepted `secs` seconds ago.
fn accepted(mode: CancelMode, secs: i64) -> CancelRecord {
    CancelRecord {
        mode,
        accepted_at: time(-secs),
        requested_at: time(-secs - 1),
        ..first_cancel()
    }
}

fn canceling(mode: CancelMode, secs: i64, jobs: Vec<JobStatus>) -> StageRunStatus {
    StageRunStatus {
        phase: Some(StagePhase::Canceling),
        cancel: Some(accepted(mode, secs)),
        jobs,
        conditions: vec![condition(COND_SUCCEEDED, "Unknown", "Canceling", -secs)],
        ..running()
    }
}

fn order_of(mode: CancelMode) -> CancelOrder {
    CancelOrder {
        mode,
        ..order(None)
    }
}

/// Where a run with cleanup jobs is before the pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// `unit` runs, `lint` waits for a node.
    Running,
    /// A Stop accepted 5s ago: `unit` runs on, `lint` (never started) is suspended.
    Stopping,
    /// A Cancel accepted 5s ago: `unit` suspended, its pod terminating;
    /// `lint` had passed and its Job is being deleted.
    Canceling,
    /// A Cancel accepted 60s ago, the stage's jobs gone: both cleanup jobs
    /// run since 30s.
    CleaningUpAfterCancel,
    /// No cancel: `unit` passed, `lint` failed; `report` runs since 30s,
    /// `notify` (when cancelled) was skipped.
    CleaningUp,
    /// A Terminate accepted 5s ago, during the cleanup: `report` suspended,
    /// its pod terminating; `notify`'s Job being deleted.
    Terminating,
}

const STARTS: [Start; 6] = [
    Start::Running,
    Start::Stopping,
    Start::Canceling,
    Start::CleaningUpAfterCancel,
    Start::CleaningUp,
    Start::Terminating,
];

/// What changed since the last pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Nothing,
    StopArrives,
    CancelArrives,
    TerminateArrives,
    /// The Jobs and pods of `unit` and `lint` are gone.
    StageJobsGone,
    UnitPasses,
    CleanupPasses,
    CleanupFails,
    DeadlinePasses,
    AllGone,
}

const CHANGES: [Change; 10] = [
    Change::Nothing,
    Change::StopArrives,
    Change::CancelArrives,
    Change::TerminateArrives,
    Change::StageJobsGone,
    Change::UnitPasses,
    Change::CleanupPasses,
    Change::CleanupFails,
    Change::DeadlinePasses,
    Change::AllGone,
];

fn baseline(start: Start) -> World {
    use CancelMode::{Cancel, Stop, Terminate};
    use JobState::{Building, Completing};
    use RunResult::{Cancelled, Failed, Passed, Unknown};
    let unit_running = || observed_job(UNIT_JOB, "unit");
    let unit_pod = || pod("unit-pod", "unit", PodProgress::Running);
    let cancelled_stage = || {
        vec![
            entry("unit", 501, Completing, Unknown, UNIT_JOB).completed(Cancelled),
            entry("lint", 502, Completing, Unknown, LINT_JOB).completed(Cancelled),
        ]
    };
    let with = |mut jobs: Vec<JobStatus>, more: Vec<JobStatus>| {
        jobs.extend(more);
        jobs
    };
    let (status, jobs, pods) = match start {
        Start::Running => (
            running(),
            vec![unit_running(), observed_job(LINT_JOB, "lint")],
            vec![
                unit_pod(),
                pod("lint-pod", "lint", PodProgress::Unscheduled),
            ],
        ),
        Start::Stopping => (
            canceling(
                Stop,
                5,
                vec![
                    entry("unit", 501, Building, Unknown, UNIT_JOB),
                    entry("lint", 502, Completing, Unknown, LINT_JOB),
                    cleanup_entry("report", 503),
                    cleanup_entry("notify", 504),
                ],
            ),
            vec![unit_running(), suspended(observed_job(LINT_JOB, "lint"))],
            vec![unit_pod()],
        ),
        Start::Canceling => (
            canceling(
                Cancel,
                5,
                vec![
                    entry("unit", 501, Completing, Unknown, UNIT_JOB),
                    entry("lint", 502, Completing, Unknown, LINT_JOB).completed(Passed),
                    cleanup_entry("report", 503),
                    cleanup_entry("notify", 504),
                ],
            ),
            vec![
                suspended(unit_running()),
                deleting(finished(observed_job(LINT_JOB, "lint"), Passed, -30)),
            ],
            vec![ObservedPod {
                deletion_deadline: Some(at(25)),
                ..unit_pod()
            }],
        ),
        Start::CleaningUpAfterCancel => (
            canceling(
                Cancel,
                60,
                with(
                    cancelled_stage(),
                    vec![
                        begun_entry("report", 503, REPORT_JOB),
                        begun_entry("notify", 504, NOTIFY_JOB),
                    ],
                ),
            ),
            vec![
                observed_job(REPORT_JOB, "report"),
                observed_job(NOTIFY_JOB, "notify"),
            ],
            vec![
                pod("report-pod", "report", PodProgress::Running),
                pod("notify-pod", "notify", PodProgress::Running),
            ],
        ),
        Start::CleaningUp => (
            StageRunStatus {
                jobs: vec![
                    entry("unit", 501, Completing, Unknown, UNIT_JOB).completed(Passed),
                    entry("lint", 502, Completing, Unknown, LINT_JOB).completed(Failed),
                    begun_entry("report", 503, REPORT_JOB),
                    skipped_entry("notify", 504),
                ],
                conditions: vec![condition(COND_SUCCEEDED, "Unknown", "CleaningUp", -30)],
                ..running()
            },
            vec![
                finished(unit_running(), Passed, -30),
                finished(observed_job(LINT_JOB, "lint"), Failed, -30),
                observed_job(REPORT_JOB, "report"),
            ],
            vec![
                pod("unit-pod", "unit", PodProgress::Finished),
                pod("lint-pod", "lint", PodProgress::Finished),
                pod("report-pod", "report", PodProgress::Running),
            ],
        ),
        Start::Terminating => (
            canceling(
                Terminate,
                5,
                with(
                    cancelled_stage(),
                    vec![
                        JobStatus {
                            state: Completing,
                            ..begun_entry("report", 503, REPORT_JOB)
                        },
                        JobStatus {
                            state: Completing,
                            ..begun_entry("notify", 504, NOTIFY_JOB)
                        },
                    ],
                ),
            ),
            vec![
                suspended(observed_job(REPORT_JOB, "report")),
                deleting(suspended(observed_job(NOTIFY_JOB, "notify"))),
            ],
            vec![ObservedPod {
                deletion_deadline: Some(at(25)),
                ..pod("report-pod", "report", PodProgress::Running)
            }],
        ),
    };
    World {
        jobs,
        pods,
        ..World::new(run_with_cleanup(status))
    }
}

/// Replaces the Job of `job` (keeping its flags) with a finished one and
/// its pods with a finished one, when it has a Job.
fn finish(w: &mut World, job: &str, result: RunResult) {
    let Some(j) = w.jobs.iter_mut().find(|j| j.job == job) else {
        return;
    };
    j.finished = Some((result, Some(time(-1))));
    j.stopped = true;
    for p in w.pods.iter_mut().filter(|p| p.job.as_deref() == Some(job)) {
        p.progress = PodProgress::Finished;
    }
}

fn apply(change: Change, mut w: World) -> World {
    let stage_job = |job: Option<&str>| matches!(job, Some("unit" | "lint"));
    match change {
        Change::Nothing => {}
        Change::StopArrives => w.cancel = Some(order_of(CancelMode::Stop)),
        Change::CancelArrives => w.cancel = Some(order_of(CancelMode::Cancel)),
        Change::TerminateArrives => w.cancel = Some(order_of(CancelMode::Terminate)),
        Change::StageJobsGone => {
            w.jobs.retain(|j| !stage_job(Some(&j.job)));
            w.pods.retain(|p| !stage_job(p.job.as_deref()));
        }
        Change::UnitPasses => finish(&mut w, "unit", RunResult::Passed),
        Change::CleanupPasses => finish(&mut w, "report", RunResult::Passed),
        Change::CleanupFails => finish(&mut w, "report", RunResult::Failed),
        Change::DeadlinePasses => {
            if let Some(start) = w.run.status.as_mut().and_then(|s| s.start_time.as_mut()) {
                *start = time(-DEADLINE);
            }
        }
        Change::AllGone => {
            w.jobs.clear();
            w.pods.clear();
        }
    }
    w
}

fn report_created(p: &Plan) {
    let report = job(&p.status, "report");
    assert_eq!(report.scheduled_at, Some(time(0)));
    let notify = job(&p.status, "notify");
    assert!(
        notify.skipped && notify.state == JobState::Completed,
        "{notify:?}"
    );
    assert!(
        !p.confirm,
        "a cleanup after the jobs' own end needs no fresh read"
    );
    assert_eq!(
        find_condition(&p.status, COND_SUCCEEDED).map(|c| c.reason.as_str()),
        Some("CleaningUp")
    );
}

fn both_created_after_cancel(p: &Plan) {
    for name in ["report", "notify"] {
        let js = job(&p.status, name);
        assert_eq!(js.scheduled_at, Some(time(0)), "{name}");
        assert!(!js.skipped, "{name}");
    }
    for name in ["unit", "lint"] {
        assert_eq!(job(&p.status, name).state, JobState::Completed, "{name}");
    }
    assert!(p.confirm, "cleanup after a cancel begins on a fresh read");
}

fn stopped_keeps_unit(p: &Plan) {
    assert_eq!(job(&p.status, "unit").state, JobState::Building);
    assert_eq!(
        p.status.cancel.as_ref().map(|c| c.mode),
        Some(CancelMode::Stop)
    );
}

fn escalated_to(mode: CancelMode) -> fn(&Plan) {
    match mode {
        CancelMode::Stop => {
            |p| assert_eq!(p.status.cancel.as_ref().unwrap().mode, CancelMode::Stop)
        }
        CancelMode::Cancel => |p| {
            let c = p.status.cancel.as_ref().unwrap();
            assert_eq!(
                (c.mode, c.accepted_at.clone()),
                (CancelMode::Cancel, time(0))
            );
            assert_eq!(c.request_name, "stop-it");
        },
        CancelMode::Terminate => |p| {
            let c = p.status.cancel.as_ref().unwrap();
            assert_eq!(
                (c.mode, c.accepted_at.clone()),
                (CancelMode::Terminate, time(0))
            );
            assert_eq!(c.request_name, "stop-it");
        },
    }
}

fn unit_passed_under_stop(p: &Plan) {
    let unit = job(&p.status, "unit");
    assert_eq!(
        (unit.state, unit.result),
        (JobState::Completed, RunResult::Passed)
    );
}

fn report_result(result: RunResult) -> fn(&Plan) {
    match result {
        RunResult::Passed => |p| assert_eq!(job(&p.status, "report").result, RunResult::Passed),
        _ => |p| assert_eq!(job(&p.status, "report").result, RunResult::Failed),
    }
}

fn cancelled_with_cleanup_results(p: &Plan) {
    assert_eq!(
        p.status.failure_reason.as_deref(),
        Some("task was cancelled")
    );
    // The cleanup jobs' Jobs vanished: someone deleted them.
    for name in ["report", "notify"] {
        assert_eq!(job(&p.status, name).result, RunResult::Failed, "{name}");
    }
}

fn cleanup_failure_fails_the_run(p: &Plan) {
    assert_eq!(
        p.status.failure_reason.as_deref(),
        Some("job lint, report failed")
    );
}

fn terminated(p: &Plan) {
    assert_eq!(
        p.status.failure_reason.as_deref(),
        Some("task was cancelled")
    );
    for name in ["report", "notify"] {
        assert_eq!(job(&p.status, name).result, RunResult::Cancelled, "{name}");
    }
}

#[test]
fn modes_and_cleanup_every_start_against_every_change() {
    use self::Change as C;
    use self::Start as S;
    use Requeue::{After, Never, Unchecked};
    use RunResult as R;
    use StagePhase as P;
    let suspend_both = || vec![suspend_job(UNIT_JOB), suspend_job(LINT_JOB)];
    let create_both = || vec![create("report"), create("notify")];
    let running_cleanup: fn(&Plan) = |p| {
        assert_eq!(job(&p.status, "report").state, JobState::Building);
        assert!(p.status.cancel.is_none() || !p.confirm);
    };
    #[rustfmt::skip]
    let rows = vec![
        // Running: a Stop spares the job that runs, a Cancel or Terminate
        // takes both; once the jobs have ended on their own, cleanup begins.
        row(S::Running, C::Nothing, P::Running, R::Unknown, vec![], &[], After(540)),
        row(S::Running, C::StopArrives, P::Canceling, R::Unknown, vec![suspend_job(LINT_JOB)], &["Stopping"], After(5)).check(stopped_keeps_unit),
        row(S::Running, C::CancelArrives, P::Canceling, R::Unknown, suspend_both(), &["Canceling"], After(5)),
        row(S::Running, C::TerminateArrives, P::Canceling, R::Unknown, suspend_both(), &["Terminating"], After(5)),
        row(S::Running, C::StageJobsGone, P::Running, R::Unknown, vec![create("report")], &["CleanupStarted"], After(540)).check(report_created),
        row(S::Running, C::UnitPasses, P::Running, R::Unknown, vec![], &[], After(540)),
        row(S::Running, C::CleanupPasses, P::Running, R::Unknown, vec![], &[], After(540)),
        row(S::Running, C::CleanupFails, P::Running, R::Unknown, vec![], &[], After(540)),
        row(S::Running, C::DeadlinePasses, P::Canceling, R::Unknown, suspend_both(), &["DeadlineExceeded"], After(5)),
        row(S::Running, C::AllGone, P::Running, R::Unknown, vec![create("report")], &["CleanupStarted"], After(540)).check(report_created),
        // Stopping: `unit` runs on; a stronger mode takes over.
        row(S::Stopping, C::Nothing, P::Canceling, R::Unknown, vec![], &[], After(5)).check(stopped_keeps_unit),
        row(S::Stopping, C::StopArrives, P::Canceling, R::Unknown, vec![], &[], After(5)).check(stopped_keeps_unit),
        row(S::Stopping, C::CancelArrives, P::Canceling, R::Unknown, vec![suspend_job(UNIT_JOB)], &["Canceling"], After(5)).check(escalated_to(CancelMode::Cancel)),
        row(S::Stopping, C::TerminateArrives, P::Canceling, R::Unknown, vec![suspend_job(UNIT_JOB)], &["Terminating"], After(5)).check(escalated_to(CancelMode::Terminate)),
        row(S::Stopping, C::StageJobsGone, P::Canceling, R::Unknown, create_both(), &["CleanupStarted"], Never).check(both_created_after_cancel),
        row(S::Stopping, C::UnitPasses, P::Canceling, R::Unknown, vec![delete_job(UNIT_JOB), delete_pods(&["unit-pod"], 30)], &[], After(5)).check(unit_passed_under_stop),
        row(S::Stopping, C::CleanupPasses, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Stopping, C::CleanupFails, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Stopping, C::DeadlinePasses, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Stopping, C::AllGone, P::Canceling, R::Unknown, create_both(), &["CleanupStarted"], Never).check(both_created_after_cancel),
        // Canceling: a weaker or equal mode changes nothing; cleanup begins
        // once the jobs' Jobs and pods are gone.
        row(S::Canceling, C::Nothing, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Canceling, C::StopArrives, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Canceling, C::CancelArrives, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Canceling, C::TerminateArrives, P::Canceling, R::Unknown, vec![], &["Terminating"], After(5)).check(escalated_to(CancelMode::Terminate)),
        row(S::Canceling, C::StageJobsGone, P::Canceling, R::Unknown, create_both(), &["CleanupStarted"], Never).check(both_created_after_cancel),
        row(S::Canceling, C::UnitPasses, P::Canceling, R::Unknown, vec![delete_job(UNIT_JOB)], &[], After(5)),
        row(S::Canceling, C::CleanupPasses, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Canceling, C::CleanupFails, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Canceling, C::DeadlinePasses, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Canceling, C::AllGone, P::Canceling, R::Unknown, create_both(), &["CleanupStarted"], Never).check(both_created_after_cancel),
        // Cleaning up after a cancel: the cleanup jobs run on their own,
        // past the cancel's force deadline; only a Terminate stops them.
        row(S::CleaningUpAfterCancel, C::Nothing, P::Canceling, R::Unknown, vec![], &[], Never).check(running_cleanup),
        row(S::CleaningUpAfterCancel, C::StopArrives, P::Canceling, R::Unknown, vec![], &[], Never).check(running_cleanup),
        row(S::CleaningUpAfterCancel, C::CancelArrives, P::Canceling, R::Unknown, vec![], &[], Never).check(running_cleanup),
        row(S::CleaningUpAfterCancel, C::TerminateArrives, P::Canceling, R::Unknown, vec![suspend_job(REPORT_JOB), suspend_job(NOTIFY_JOB)], &["Terminating"], After(5)).check(escalated_to(CancelMode::Terminate)),
        row(S::CleaningUpAfterCancel, C::StageJobsGone, P::Canceling, R::Unknown, vec![], &[], Never).check(running_cleanup),
        row(S::CleaningUpAfterCancel, C::UnitPasses, P::Canceling, R::Unknown, vec![], &[], Never).check(running_cleanup),
        row(S::CleaningUpAfterCancel, C::CleanupPasses, P::Canceling, R::Unknown, vec![delete_job(REPORT_JOB), delete_pods(&["report-pod"], 30)], &[], After(5)).check(report_result(RunResult::Passed)),
        row(S::CleaningUpAfterCancel, C::CleanupFails, P::Canceling, R::Unknown, vec![delete_job(REPORT_JOB), delete_pods(&["report-pod"], 30)], &[], After(5)).check(report_result(RunResult::Failed)),
        row(S::CleaningUpAfterCancel, C::DeadlinePasses, P::Canceling, R::Unknown, vec![], &[], Never).check(running_cleanup),
        row(S::CleaningUpAfterCancel, C::AllGone, P::Failed, R::Cancelled, vec![], &["Cancelled"], Never).check(cancelled_with_cleanup_results),
        // Cleaning up after the jobs' own end: a cancel now waits for the
        // cleanup (which runs on) and removes the ended Jobs; Terminate
        // stops the cleanup too.
        row(S::CleaningUp, C::Nothing, P::Running, R::Unknown, vec![], &[], Never).check(running_cleanup),
        row(S::CleaningUp, C::StopArrives, P::Canceling, R::Unknown, vec![delete_job(UNIT_JOB), delete_job(LINT_JOB), delete_pods(&["unit-pod", "lint-pod"], 30)], &["Stopping"], After(5)).check(running_cleanup),
        row(S::CleaningUp, C::CancelArrives, P::Canceling, R::Unknown, vec![delete_job(UNIT_JOB), delete_job(LINT_JOB), delete_pods(&["unit-pod", "lint-pod"], 30)], &["Canceling"], After(5)).check(running_cleanup),
        row(S::CleaningUp, C::TerminateArrives, P::Canceling, R::Unknown, vec![delete_job(UNIT_JOB), delete_job(LINT_JOB), suspend_job(REPORT_JOB), delete_pods(&["unit-pod", "lint-pod"], 30)], &["Terminating"], After(5)),
        row(S::CleaningUp, C::StageJobsGone, P::Running, R::Unknown, vec![], &[], Never).check(running_cleanup),
        row(S::CleaningUp, C::UnitPasses, P::Running, R::Unknown, vec![], &[], Never).check(running_cleanup),
        row(S::CleaningUp, C::CleanupPasses, P::Failed, R::Failed, vec![], &["Failed"], Unchecked),
        row(S::CleaningUp, C::CleanupFails, P::Failed, R::Failed, vec![], &["Failed"], Unchecked).check(cleanup_failure_fails_the_run),
        row(S::CleaningUp, C::DeadlinePasses, P::Running, R::Unknown, vec![], &[], Never).check(running_cleanup),
        row(S::CleaningUp, C::AllGone, P::Failed, R::Failed, vec![], &["Failed"], Unchecked).check(cleanup_failure_fails_the_run),
        // Terminating: nothing weaker or equal changes it; it ends once
        // nothing is left, the cleanup jobs Cancelled.
        row(S::Terminating, C::Nothing, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Terminating, C::StopArrives, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Terminating, C::CancelArrives, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Terminating, C::TerminateArrives, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Terminating, C::StageJobsGone, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Terminating, C::UnitPasses, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Terminating, C::CleanupPasses, P::Canceling, R::Unknown, vec![delete_job(REPORT_JOB)], &[], After(5)).check(report_result(RunResult::Passed)),
        row(S::Terminating, C::CleanupFails, P::Canceling, R::Unknown, vec![delete_job(REPORT_JOB)], &[], After(5)),
        row(S::Terminating, C::DeadlinePasses, P::Canceling, R::Unknown, vec![], &[], After(5)),
        row(S::Terminating, C::AllGone, P::Failed, R::Cancelled, vec![], &["Cancelled"], Never).check(terminated),
    ];
    check_table(&rows, &STARTS, &CHANGES, |start, change| {
        apply(change, baseline(start))
    });
}
