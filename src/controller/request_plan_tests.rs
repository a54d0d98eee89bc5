//! Tests of the pure CancelRequest decisions: which StageRuns a target names,
//! what became of each, and how a request moves from Pending to its end.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Value, json};

use super::*;
use crate::crd::{CancelCause, CancelMode, CancelRecord, StagePhase, StageRunStatus};

// ---------------------------------------------------------------- fixtures --

const TTL: i64 = 3600;

use crate::controller::test_clock::{at, t0, time};

/// A StageRun with no status yet (so: active).
fn stage_run(
    name: &str,
    uid: &str,
    pipeline: &str,
    counter: i64,
    stage: &str,
    labels: Value,
) -> StageRun {
    serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1",
        "kind": "StageRun",
        "metadata": { "name": name, "namespace": "ci", "uid": uid, "labels": labels },
        "spec": {
            "pipeline": pipeline,
            "pipelineCounter": counter,
            "stage": stage,
            "jobs": [{
                "name": "unit",
                "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
            }],
        },
    }))
    .unwrap()
}

fn in_phase(mut run: StageRun, phase: StagePhase, result: RunResult) -> StageRun {
    run.status = Some(StageRunStatus {
        phase: Some(phase),
        result: Some(result),
        ..StageRunStatus::default()
    });
    run
}

fn cancel_record() -> CancelRecord {
    CancelRecord {
        cause: CancelCause::Request,
        request_name: "stop-it".into(),
        requested_by: "alice".into(),
        reason: "wrong branch".into(),
        requested_at: time(-60),
        accepted_at: time(-59),
        grace_period_seconds: 30,
        mode: CancelMode::Cancel,
    }
}

/// Canceling, with the cancel accepted.
fn canceling(run: StageRun) -> StageRun {
    let mut run = in_phase(run, StagePhase::Canceling, RunResult::Unknown);
    run.status.as_mut().unwrap().cancel = Some(cancel_record());
    run
}

/// Failed with result Cancelled, after a cancel.
fn cancelled(run: StageRun) -> StageRun {
    let mut run = in_phase(run, StagePhase::Failed, RunResult::Cancelled);
    run.status.as_mut().unwrap().cancel = Some(cancel_record());
    run
}

/// The StageRuns of namespace `ci`.
fn namespace_runs() -> Vec<StageRun> {
    vec![
        in_phase(
            stage_run(
                "build-7-test",
                "uid-7-test",
                "build",
                7,
                "test",
                json!({"team": "ci"}),
            ),
            StagePhase::Running,
            RunResult::Unknown,
        ),
        in_phase(
            stage_run(
                "build-7-lint",
                "uid-7-lint",
                "build",
                7,
                "lint",
                json!({"team": "ci"}),
            ),
            StagePhase::Succeeded,
            RunResult::Passed,
        ),
        canceling(stage_run(
            "build-8-test",
            "uid-8-test",
            "build",
            8,
            "test",
            json!({"team": "ci", "env": "prod"}),
        )),
        in_phase(
            stage_run(
                "build-6-test",
                "uid-6-test",
                "build",
                6,
                "test",
                json!({"team": "ci"}),
            ),
            StagePhase::Failed,
            RunResult::Failed,
        ),
        stage_run(
            "deploy-7-test",
            "uid-deploy",
            "deploy",
            7,
            "test",
            json!({"env": "prod"}),
        ),
        cancelled(stage_run(
            "build-5-test",
            "uid-5-test",
            "build",
            5,
            "test",
            json!({"team": "ci", "env": "prod"}),
        )),
    ]
}

fn run_named(runs: &[StageRun], name: &str) -> StageRun {
    runs.iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .cloned()
        .unwrap_or_else(|| panic!("no run {name}"))
}

fn target(value: Value) -> CancelTarget {
    serde_json::from_value(value).unwrap()
}

fn request(target: Value, status: Option<CancelRequestStatus>) -> CancelRequest {
    let mut req: CancelRequest = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1",
        "kind": "CancelRequest",
        "metadata": { "name": "stop-it", "namespace": "ci", "uid": "req-uid", "generation": 1 },
        "spec": {
            "target": target,
            "reason": "wrong branch",
            "requestedBy": "alice",
            "ttlSecondsAfterFinished": TTL,
        },
    }))
    .unwrap();
    req.status = status;
    req
}

fn target_status(name: &str, uid: &str, outcome: TargetOutcome) -> CancelTargetStatus {
    CancelTargetStatus {
        name: name.into(),
        uid: uid.into(),
        outcome,
    }
}

fn complete_condition(status: &str, reason: &str, message: &str, since: i64) -> Condition {
    Condition {
        type_: COND_COMPLETE.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(1),
        last_transition_time: time(since),
    }
}

/// Accepted 30s ago with these targets, none counted as cancelled yet.
fn in_progress(targets: Vec<CancelTargetStatus>) -> CancelRequestStatus {
    CancelRequestStatus {
        phase: Some(RequestPhase::InProgress),
        matched: Some(targets.len() as i64),
        cancelled: Some(0),
        start_time: Some(time(-30)),
        conditions: vec![complete_condition(
            "False",
            "InProgress",
            &format!("cancelling {} StageRun(s)", targets.len()),
            -30,
        )],
        targets,
        ..CancelRequestStatus::default()
    }
}

fn names(runs: &[&StageRun]) -> Vec<String> {
    runs.iter().map(|r| r.name_any()).collect()
}

// ----------------------------------------------------------------- resolve --

/// The names a target resolves to, or how its error message starts.
type Resolved = Result<&'static [&'static str], &'static str>;

#[test]
fn resolve_table() {
    let runs = namespace_runs();
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, Resolved)> = vec![
        // By name: finished runs match too, so they can be reported AlreadyFinished.
        ("name, active", json!({"stageRun": "build-7-test"}), Ok(&["build-7-test"])),
        ("name, succeeded", json!({"stageRun": "build-7-lint"}), Ok(&["build-7-lint"])),
        ("name, cancelled", json!({"stageRun": "build-5-test"}), Ok(&["build-5-test"])),
        ("name, not a prefix", json!({"stageRun": "build-7"}), Ok(&[])),
        ("name, missing", json!({"stageRun": "missing"}), Ok(&[])),
        // By stage: only active runs of exactly that pipeline and stage.
        ("stage, active ones only", json!({"stage": {"pipeline": "build", "stage": "test"}}), Ok(&["build-7-test", "build-8-test"])),
        ("stage, none active", json!({"stage": {"pipeline": "build", "stage": "lint"}}), Ok(&[])),
        ("stage, no status yet is active", json!({"stage": {"pipeline": "deploy", "stage": "test"}}), Ok(&["deploy-7-test"])),
        ("stage, pipeline and stage swapped", json!({"stage": {"pipeline": "test", "stage": "build"}}), Ok(&[])),
        ("stage, unknown pipeline", json!({"stage": {"pipeline": "nope", "stage": "test"}}), Ok(&[])),
        // By build: every stage of that pipeline run, finished ones too.
        ("build, all stages of the run", json!({"build": {"pipeline": "build", "pipelineCounter": 7}}), Ok(&["build-7-test", "build-7-lint"])),
        ("build, finished run", json!({"build": {"pipeline": "build", "pipelineCounter": 5}}), Ok(&["build-5-test"])),
        ("build, other pipeline with that counter", json!({"build": {"pipeline": "deploy", "pipelineCounter": 8}}), Ok(&[])),
        ("build, counter not a prefix", json!({"build": {"pipeline": "build", "pipelineCounter": 70}}), Ok(&[])),
        // By uid: finished ones too; unknown uids match nothing.
        ("uids, some unknown", json!({"uids": ["uid-7-lint", "uid-deploy", "uid-unknown"]}), Ok(&["build-7-lint", "deploy-7-test"])),
        ("uids, cancelled", json!({"uids": ["uid-5-test"]}), Ok(&["build-5-test"])),
        ("uids, a name is not a uid", json!({"uids": ["build-7-test"]}), Ok(&[])),
        // By selector: only active runs.
        ("selector, matchLabels", json!({"selector": {"matchLabels": {"team": "ci"}}}), Ok(&["build-7-test", "build-8-test"])),
        ("selector, In", json!({"selector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}]}}), Ok(&["build-8-test", "deploy-7-test"])),
        ("selector, NotIn", json!({"selector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["ci"]}]}}), Ok(&["deploy-7-test"])),
        ("selector, Exists", json!({"selector": {"matchExpressions": [{"key": "env", "operator": "Exists"}]}}), Ok(&["build-8-test", "deploy-7-test"])),
        ("selector, labels and DoesNotExist", json!({"selector": {"matchLabels": {"team": "ci"}, "matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}}), Ok(&["build-7-test"])),
        ("selector, no match", json!({"selector": {"matchLabels": {"team": "qa"}}}), Ok(&[])),
        ("selector, unknown operator", json!({"selector": {"matchExpressions": [{"key": "env", "operator": "Maybe", "values": ["prod"]}]}}), Err("invalid selector")),
        ("selector, In without values", json!({"selector": {"matchExpressions": [{"key": "env", "operator": "In"}]}}), Err("invalid selector")),
        // Nothing set.
        ("empty target", json!({}), Err("target names nothing")),
    ];
    for (label, value, expected) in cases {
        let got = resolve(&target(value), &runs);
        match expected {
            Ok(want) => {
                let got = got.unwrap_or_else(|e| panic!("{label}: {e}"));
                assert_eq!(names(&got), want, "{label}");
            }
            Err(prefix) => {
                let err = got.map(|r| names(&r)).unwrap_err();
                assert!(err.starts_with(prefix), "{label}: {err}");
            }
        }
    }
}

#[test]
fn resolve_returns_the_runs_themselves() {
    let runs = namespace_runs();
    let got = resolve(&target(json!({"uids": ["uid-8-test"]})), &runs).unwrap();
    assert_eq!(got.len(), 1);
    assert!(std::ptr::eq(got[0], &runs[2]));
}

#[test]
fn resolve_in_an_empty_namespace_matches_nothing() {
    for value in [
        json!({"stageRun": "build-7-test"}),
        json!({"stage": {"pipeline": "build", "stage": "test"}}),
        json!({"build": {"pipeline": "build", "pipelineCounter": 7}}),
        json!({"uids": ["uid-7-test"]}),
        json!({"selector": {"matchLabels": {"team": "ci"}}}),
    ] {
        let got = resolve::<StageRun>(&target(value.clone()), &[]).map(|r| r.len());
        assert_eq!(got, Ok(0), "{value}");
    }
}

// ----------------------------------------------------------------- outcome --

#[test]
fn outcome_table() {
    let base = || stage_run("r", "uid-r", "build", 1, "test", json!({}));
    let mut failed_with_cancelled_result_but_no_record =
        in_phase(base(), StagePhase::Failed, RunResult::Cancelled);
    failed_with_cancelled_result_but_no_record
        .status
        .as_mut()
        .unwrap()
        .cancel = None;
    let cases: Vec<(&str, Option<StageRun>, TargetOutcome)> = vec![
        ("deleted", None, TargetOutcome::Deleted),
        ("no status yet", Some(base()), TargetOutcome::Canceling),
        (
            "pending",
            Some(in_phase(base(), StagePhase::Pending, RunResult::Unknown)),
            TargetOutcome::Canceling,
        ),
        (
            "running",
            Some(in_phase(base(), StagePhase::Running, RunResult::Unknown)),
            TargetOutcome::Canceling,
        ),
        (
            "canceling",
            Some(canceling(base())),
            TargetOutcome::Canceling,
        ),
        (
            "succeeded",
            Some(in_phase(base(), StagePhase::Succeeded, RunResult::Passed)),
            TargetOutcome::AlreadyFinished,
        ),
        (
            "failed without a cancel",
            Some(in_phase(base(), StagePhase::Failed, RunResult::Failed)),
            TargetOutcome::AlreadyFinished,
        ),
        (
            "result Cancelled without a cancel record",
            Some(failed_with_cancelled_result_but_no_record),
            TargetOutcome::AlreadyFinished,
        ),
        (
            "cancelled",
            Some(cancelled(base())),
            TargetOutcome::Cancelled,
        ),
    ];
    for (label, run, expected) in cases {
        assert_eq!(outcome(run.as_ref()), expected, "{label}");
    }
}

// --------------------------------------------------- plan_request: Pending --

#[test]
fn pending_request_is_accepted_with_its_targets() {
    let runs = namespace_runs();
    let req = request(
        json!({"build": {"pipeline": "build", "pipelineCounter": 7}}),
        None,
    );
    let plan = plan_request(&req, &runs, t0());
    let status = &plan.status;
    assert_eq!(status.phase, Some(RequestPhase::InProgress));
    assert_eq!(
        status.targets,
        vec![
            target_status("build-7-test", "uid-7-test", TargetOutcome::Canceling),
            target_status("build-7-lint", "uid-7-lint", TargetOutcome::AlreadyFinished),
        ]
    );
    assert_eq!((status.matched, status.cancelled), (Some(2), Some(0)));
    assert_eq!(status.start_time, Some(time(0)));
    assert_eq!(status.completion_time, None);
    assert_eq!(
        status.conditions,
        vec![complete_condition(
            "False",
            "InProgress",
            "cancelling 2 StageRun(s)",
            0
        )]
    );
    assert_eq!(
        plan.event,
        Some(PlannedEvent::normal(
            "Accepted",
            "matched 2 StageRun(s)".to_string()
        ))
    );
    assert!(!plan.delete);
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn pending_request_for_a_stage_records_every_active_instance() {
    let runs = namespace_runs();
    let req = request(
        json!({"stage": {"pipeline": "build", "stage": "test"}}),
        None,
    );
    let plan = plan_request(&req, &runs, t0());
    assert_eq!(plan.status.phase, Some(RequestPhase::InProgress));
    assert_eq!(
        plan.status.targets,
        vec![
            target_status("build-7-test", "uid-7-test", TargetOutcome::Canceling),
            target_status("build-8-test", "uid-8-test", TargetOutcome::Canceling),
        ]
    );
    assert_eq!(plan.status.matched, Some(2));
}

#[test]
fn pending_request_for_finished_runs_completes_as_already_finished() {
    let runs = namespace_runs();
    for (label, value, targets) in [
        (
            "by name",
            json!({"stageRun": "build-7-lint"}),
            vec![target_status(
                "build-7-lint",
                "uid-7-lint",
                TargetOutcome::AlreadyFinished,
            )],
        ),
        (
            "by uids",
            json!({"uids": ["uid-6-test", "uid-5-test"]}),
            vec![
                target_status("build-6-test", "uid-6-test", TargetOutcome::AlreadyFinished),
                target_status("build-5-test", "uid-5-test", TargetOutcome::AlreadyFinished),
            ],
        ),
    ] {
        let n = targets.len();
        let plan = plan_request(&request(value, None), &runs, t0());
        let status = &plan.status;
        assert_eq!(status.phase, Some(RequestPhase::Completed), "{label}");
        // A run cancelled before this request is not this request's doing.
        assert_eq!(status.targets, targets, "{label}");
        assert_eq!(
            (status.matched, status.cancelled),
            (Some(n as i64), Some(0)),
            "{label}"
        );
        assert_eq!(status.completion_time, Some(time(0)), "{label}");
        let message = format!("0 of {n} StageRun(s) cancelled; {n} already finished, 0 deleted");
        assert_eq!(
            status.conditions,
            vec![complete_condition("True", "Completed", &message, 0)],
            "{label}"
        );
        assert_eq!(
            plan.event,
            Some(PlannedEvent::normal("Completed", message.clone())),
            "{label}"
        );
        assert!(!plan.delete, "{label}");
        assert_eq!(
            plan.requeue_after,
            Some(Duration::from_secs(TTL as u64)),
            "{label}"
        );
    }
}

#[test]
fn pending_request_matching_nothing_is_rejected() {
    let runs = namespace_runs();
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("missing name", json!({"stageRun": "missing"}), &["nothing to cancel: no StageRun missing exists"]),
        ("stage with no active run", json!({"stage": {"pipeline": "build", "stage": "lint"}}), &["nothing to cancel", "build/lint"]),
        ("unknown build", json!({"build": {"pipeline": "deploy", "pipelineCounter": 9}}), &["nothing to cancel", "deploy #9"]),
        ("unknown uids", json!({"uids": ["uid-a", "uid-b"]}), &["nothing to cancel", "uid-a, uid-b"]),
        ("selector matching no active run", json!({"selector": {"matchLabels": {"team": "qa"}}}), &["nothing to cancel", "selector"]),
        ("invalid selector", json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Maybe"}]}}), &["invalid selector"]),
        ("empty target", json!({}), &["target names nothing"]),
    ];
    for (label, value, parts) in cases {
        let plan = plan_request(&request(value, None), &runs, t0());
        let status = &plan.status;
        assert_eq!(status.phase, Some(RequestPhase::Rejected), "{label}");
        assert!(status.targets.is_empty(), "{label}");
        assert_eq!(
            (status.matched, status.cancelled),
            (Some(0), Some(0)),
            "{label}"
        );
        assert_eq!(status.start_time, Some(time(0)), "{label}");
        assert_eq!(status.completion_time, Some(time(0)), "{label}");
        let PlannedEvent {
            warning,
            reason,
            note: message,
        } = plan.event.clone().unwrap();
        assert!(warning, "{label}");
        assert_eq!(reason, "Rejected", "{label}");
        for part in parts {
            assert!(
                message.contains(part),
                "{label}: {message:?} lacks {part:?}"
            );
        }
        assert_eq!(
            status.conditions,
            vec![complete_condition("False", "Rejected", &message, 0)],
            "{label}"
        );
        assert!(!plan.delete, "{label}");
        assert_eq!(
            plan.requeue_after,
            Some(Duration::from_secs(TTL as u64)),
            "{label}"
        );
    }
}

/// A cache just started (or lagging) holds no run: what it concludes from
/// that is irrevocable, so the plan says what it rests on, and a read of
/// the API server decides it again. Each row: the request as it is, the
/// runs the decision sees, and the absence the plan rests on.
#[test]
fn plans_that_rest_on_an_absence_say_so() {
    let runs = namespace_runs();
    let gone = |outcome| {
        in_progress(vec![
            target_status("build-7-test", "uid-1", outcome),
            target_status("other", "uid-2", TargetOutcome::Cancelled),
        ])
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, CancelRequest, &[StageRun], Option<Absence>)> = vec![
        ("pending, nothing in the cache", request(json!({"stageRun": "build-7-test"}), None), &[], Some(Absence::NoMatch)),
        ("pending, matched", request(json!({"stageRun": "build-7-test"}), None), &runs, None),
        ("rejected already", {
            let mut r = request(json!({"stageRun": "missing"}), None);
            r.status = Some(plan_request(&r, &runs, t0()).status);
            r
        }, &runs, None),
        ("a target newly gone", request(json!({"stageRun": "build-7-test"}), Some(gone(TargetOutcome::Canceling))), &[],
            Some(Absence::Targets(vec!["build-7-test".into()]))),
        ("a target recorded gone before", request(json!({"stageRun": "build-7-test"}), Some(gone(TargetOutcome::Deleted))), &[], None),
    ];
    for (label, req, seen, want) in cases {
        let plan = plan_request(&req, seen, t0());
        assert_eq!(plan.absence(&req), want, "{label}");
    }
}

#[test]
fn rejection_names_the_missing_stage_run_exactly() {
    let plan = plan_request(
        &request(json!({"stageRun": "missing"}), None),
        &namespace_runs(),
        t0(),
    );
    let message = "nothing to cancel: no StageRun missing exists".to_string();
    assert_eq!(
        plan.event,
        Some(PlannedEvent::warning("Rejected", message.clone()))
    );
    assert_eq!(plan.status.conditions[0].message, message);
}

#[test]
fn rejection_messages_read_as_english() {
    let runs = namespace_runs();
    for value in [
        json!({"stage": {"pipeline": "build", "stage": "lint"}}),
        json!({"build": {"pipeline": "deploy", "pipelineCounter": 9}}),
        json!({"uids": ["uid-a"]}),
        json!({"selector": {"matchLabels": {"team": "qa"}}}),
    ] {
        let plan = plan_request(&request(value, None), &runs, t0());
        let message = plan.event.unwrap().note;
        for wrong in ["no an ", "no a ", "no the "] {
            assert!(!message.contains(wrong), "{message:?}");
        }
    }
}

// ------------------------------------------------ plan_request: InProgress --

#[test]
fn in_progress_completes_once_every_target_is_final() {
    let runs = vec![
        cancelled(stage_run("a", "uid-a", "build", 7, "test", json!({}))),
        in_phase(
            stage_run("b", "uid-b", "build", 7, "lint", json!({})),
            StagePhase::Succeeded,
            RunResult::Passed,
        ),
        // Finished on its own before the cancel reached it.
        in_phase(
            stage_run("c", "uid-c", "build", 7, "e2e", json!({})),
            StagePhase::Failed,
            RunResult::Failed,
        ),
        // "d" was deleted.
    ];
    let status = in_progress(vec![
        target_status("a", "uid-a", TargetOutcome::Canceling),
        target_status("b", "uid-b", TargetOutcome::AlreadyFinished),
        target_status("c", "uid-c", TargetOutcome::Canceling),
        target_status("d", "uid-d", TargetOutcome::Canceling),
    ]);
    let req = request(
        json!({"build": {"pipeline": "build", "pipelineCounter": 7}}),
        Some(status),
    );
    let plan = plan_request(&req, &runs, t0());
    let s = &plan.status;
    assert_eq!(s.phase, Some(RequestPhase::Completed));
    assert_eq!(
        s.targets,
        vec![
            target_status("a", "uid-a", TargetOutcome::Cancelled),
            target_status("b", "uid-b", TargetOutcome::AlreadyFinished),
            target_status("c", "uid-c", TargetOutcome::AlreadyFinished),
            target_status("d", "uid-d", TargetOutcome::Deleted),
        ]
    );
    assert_eq!((s.matched, s.cancelled), (Some(4), Some(1)));
    assert_eq!(s.start_time, Some(time(-30)), "start time kept");
    assert_eq!(s.completion_time, Some(time(0)));
    let message = "1 of 4 StageRun(s) cancelled; 2 already finished, 1 deleted";
    assert_eq!(
        s.conditions,
        vec![complete_condition("True", "Completed", message, 0)]
    );
    assert_eq!(
        plan.event,
        Some(PlannedEvent::normal("Completed", message.to_string()))
    );
    assert!(!plan.delete);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(TTL as u64)));
}

#[test]
fn in_progress_waits_while_a_target_is_canceling() {
    let runs = vec![
        canceling(stage_run("a", "uid-a", "build", 7, "test", json!({}))),
        cancelled(stage_run("b", "uid-b", "build", 7, "lint", json!({}))),
    ];
    let status = in_progress(vec![
        target_status("a", "uid-a", TargetOutcome::Canceling),
        target_status("b", "uid-b", TargetOutcome::Canceling),
    ]);
    let req = request(
        json!({"build": {"pipeline": "build", "pipelineCounter": 7}}),
        Some(status.clone()),
    );
    let plan = plan_request(&req, &runs, at(5));
    let s = &plan.status;
    assert_eq!(s.phase, Some(RequestPhase::InProgress));
    assert_eq!(
        s.targets,
        vec![
            target_status("a", "uid-a", TargetOutcome::Canceling),
            target_status("b", "uid-b", TargetOutcome::Cancelled),
        ]
    );
    assert_eq!((s.matched, s.cancelled), (Some(2), Some(1)));
    assert_eq!(s.completion_time, None);
    assert_eq!(s.start_time, status.start_time);
    assert_eq!(s.conditions, status.conditions, "condition untouched");
    assert_eq!(plan.event, None);
    assert!(!plan.delete);
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn in_progress_never_re_resolves_the_target() {
    // A new run of the same build appears after acceptance.
    let mut runs = vec![canceling(stage_run(
        "build-7-test",
        "uid-7-test",
        "build",
        7,
        "test",
        json!({}),
    ))];
    runs.push(stage_run(
        "build-7-test-rerun",
        "uid-rerun",
        "build",
        7,
        "test",
        json!({}),
    ));
    let status = in_progress(vec![target_status(
        "build-7-test",
        "uid-7-test",
        TargetOutcome::Canceling,
    )]);
    let req = request(
        json!({"build": {"pipeline": "build", "pipelineCounter": 7}}),
        Some(status),
    );

    let plan = plan_request(&req, &runs, t0());
    assert_eq!(
        plan.status.targets,
        vec![target_status(
            "build-7-test",
            "uid-7-test",
            TargetOutcome::Canceling
        )]
    );
    assert_eq!(plan.status.matched, Some(1));
    assert_eq!(plan.status.start_time, Some(time(-30)));

    // Once the original target is cancelled the request completes; the new run is untouched.
    runs[0] = cancelled(runs[0].clone());
    let plan = plan_request(&req, &runs, t0());
    assert_eq!(plan.status.phase, Some(RequestPhase::Completed));
    assert_eq!(
        plan.status.targets,
        vec![target_status(
            "build-7-test",
            "uid-7-test",
            TargetOutcome::Cancelled
        )]
    );
    assert_eq!(
        (plan.status.matched, plan.status.cancelled),
        (Some(1), Some(1))
    );
}

#[test]
fn targets_are_followed_by_uid_not_by_name() {
    // The run was deleted and a new one created under the same name.
    let runs = vec![stage_run(
        "build-7-test",
        "uid-new",
        "build",
        7,
        "test",
        json!({}),
    )];
    let status = in_progress(vec![target_status(
        "build-7-test",
        "uid-old",
        TargetOutcome::Canceling,
    )]);
    let req = request(json!({"stageRun": "build-7-test"}), Some(status));
    let plan = plan_request(&req, &runs, t0());
    assert_eq!(plan.status.phase, Some(RequestPhase::Completed));
    assert_eq!(
        plan.status.targets,
        vec![target_status(
            "build-7-test",
            "uid-old",
            TargetOutcome::Deleted
        )]
    );
    assert_eq!(plan.status.cancelled, Some(0));
}

#[test]
fn final_outcomes_are_kept() {
    // "a" was recorded Cancelled and has since been deleted; "b" still cancels.
    let runs = vec![canceling(stage_run(
        "b",
        "uid-b",
        "build",
        7,
        "lint",
        json!({}),
    ))];
    let mut status = in_progress(vec![
        target_status("a", "uid-a", TargetOutcome::Cancelled),
        target_status("b", "uid-b", TargetOutcome::Canceling),
    ]);
    status.cancelled = Some(1);
    let req = request(
        json!({"build": {"pipeline": "build", "pipelineCounter": 7}}),
        Some(status),
    );
    let plan = plan_request(&req, &runs, t0());
    assert_eq!(plan.status.targets[0].outcome, TargetOutcome::Cancelled);
    assert_eq!(plan.status.cancelled, Some(1));
    assert_eq!(plan.status.phase, Some(RequestPhase::InProgress));
}

// --------------------------------------------------------- plan_request: TTL --

fn finished_status(phase: RequestPhase) -> CancelRequestStatus {
    CancelRequestStatus {
        phase: Some(phase),
        targets: vec![target_status("a", "uid-a", TargetOutcome::Cancelled)],
        matched: Some(1),
        cancelled: Some(1),
        start_time: Some(time(-200)),
        completion_time: Some(time(-100)),
        conditions: vec![complete_condition("True", "Completed", "done", -100)],
    }
}

#[test]
fn ttl_table() {
    // Completed 100s ago with a TTL of 3600s: expires at +3500s.
    for phase in [RequestPhase::Completed, RequestPhase::Rejected] {
        for (now, delete, requeue) in [
            (0, false, Some(3500)),
            (3499, false, Some(1)),
            (3500, true, None),
            (100_000, true, None),
        ] {
            let label = format!("{phase:?} at +{now}s");
            let status = finished_status(phase);
            let req = request(json!({"stageRun": "a"}), Some(status.clone()));
            // Whatever the runs now are, a finished request does not change.
            let runs = vec![canceling(stage_run(
                "a",
                "uid-a",
                "build",
                7,
                "test",
                json!({}),
            ))];
            let plan = plan_request(&req, &runs, at(now));
            assert_eq!(plan.status, status, "{label}");
            assert_eq!(plan.event, None, "{label}");
            assert_eq!(plan.delete, delete, "{label}");
            assert_eq!(
                plan.requeue_after,
                requeue.map(Duration::from_secs),
                "{label}"
            );
        }
    }
}

#[test]
fn ttl_zero_deletes_at_completion() {
    let mut req = request(
        json!({"stageRun": "a"}),
        Some(finished_status(RequestPhase::Completed)),
    );
    req.spec.ttl_seconds_after_finished = 0;
    let plan = plan_request::<StageRun>(&req, &[], at(-100));
    assert!(plan.delete);
    assert_eq!(plan.requeue_after, None);

    // A negative TTL (refused by the schema) counts as zero, never as "keep".
    req.spec.ttl_seconds_after_finished = -50;
    let plan = plan_request::<StageRun>(&req, &[], at(-100));
    assert!(plan.delete);
}

#[test]
fn in_progress_requests_are_never_deleted() {
    let status = in_progress(vec![target_status("a", "uid-a", TargetOutcome::Canceling)]);
    let req = request(json!({"stageRun": "a"}), Some(status));
    let runs = vec![canceling(stage_run(
        "a",
        "uid-a",
        "build",
        7,
        "test",
        json!({}),
    ))];
    let plan = plan_request(&req, &runs, at(10 * TTL));
    assert_eq!(plan.status.phase, Some(RequestPhase::InProgress));
    assert!(!plan.delete);
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn the_ttl_counts_from_completion_of_a_fresh_request() {
    let runs = namespace_runs();
    let req = request(json!({"stageRun": "build-7-lint"}), None);
    let plan = plan_request(&req, &runs, t0());
    assert_eq!(plan.status.completion_time, Some(time(0)));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(TTL as u64)));

    // The next pass, at the TTL, deletes it.
    let req = request(json!({"stageRun": "build-7-lint"}), Some(plan.status));
    let plan = plan_request(&req, &runs, at(TTL));
    assert!(plan.delete);
}

#[test]
fn whole_lifecycle_of_a_request() {
    let mut runs = namespace_runs();
    let req = request(json!({"stageRun": "build-7-test"}), None);

    let accepted = plan_request(&req, &runs, t0());
    assert_eq!(accepted.status.phase, Some(RequestPhase::InProgress));

    let req = request(json!({"stageRun": "build-7-test"}), Some(accepted.status));
    runs[0] = canceling(run_named(&runs, "build-7-test"));
    let waiting = plan_request(&req, &runs, at(10));
    assert_eq!(waiting.status.phase, Some(RequestPhase::InProgress));
    assert_eq!(waiting.event, None);

    let req = request(json!({"stageRun": "build-7-test"}), Some(waiting.status));
    runs[0] = cancelled(run_named(&runs, "build-7-test"));
    let done = plan_request(&req, &runs, at(20));
    assert_eq!(done.status.phase, Some(RequestPhase::Completed));
    assert_eq!(done.status.start_time, Some(time(0)));
    assert_eq!(done.status.completion_time, Some(time(20)));
    assert_eq!(
        (done.status.matched, done.status.cancelled),
        (Some(1), Some(1))
    );
    let condition = &done.status.conditions[0];
    assert_eq!(
        (
            condition.status.as_str(),
            condition.last_transition_time.clone()
        ),
        ("True", time(20))
    );
    assert_eq!(done.requeue_after, Some(Duration::from_secs(TTL as u64)));
}

// ------------------------------------------- decisions on indexed caches --

/// A namespace's history: finished runs of the same pipelines, stages and
/// labels as the active ones, plus runs of another namespace.
fn with_history(mut runs: Vec<StageRun>) -> Vec<StageRun> {
    for i in 0..300 {
        let (pipeline, stage) = [("build", "test"), ("deploy", "test"), ("build", "lint")][i % 3];
        let labels = [json!({"team": "ci"}), json!({"env": "prod"}), json!({})][i % 3].clone();
        let result = [RunResult::Passed, RunResult::Failed, RunResult::Cancelled][i % 3];
        let phase = if result == RunResult::Passed {
            StagePhase::Succeeded
        } else {
            StagePhase::Failed
        };
        runs.push(in_phase(
            stage_run(
                &format!("old-{i}"),
                &format!("uid-old-{i}"),
                pipeline,
                (i % 9) as i64 + 1,
                stage,
                labels,
            ),
            phase,
            result,
        ));
    }
    let mut elsewhere = stage_run(
        "build-7-test",
        "uid-elsewhere",
        "build",
        7,
        "test",
        json!({"team": "ci"}),
    );
    elsewhere.metadata.namespace = Some("other".into());
    runs.push(elsewhere);
    runs
}

#[test]
fn decisions_on_indexed_caches_equal_decisions_on_every_run() {
    let all = with_history(namespace_runs());
    let caches = crate::controller::cache::caches_of(all.clone(), Vec::new());
    // In name order, as the API server lists a namespace.
    let mut in_ns: Vec<StageRun> = all
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some("ci"))
        .cloned()
        .collect();
    in_ns.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let targets = [
        json!({"stageRun": "build-7-test"}),
        json!({"stageRun": "old-4"}),
        json!({"stageRun": "missing"}),
        json!({"stage": {"pipeline": "build", "stage": "test"}}),
        json!({"stage": {"pipeline": "deploy", "stage": "test"}}),
        json!({"build": {"pipeline": "build", "pipelineCounter": 7}}),
        json!({"build": {"pipeline": "build", "pipelineCounter": 2}}),
        json!({"uids": ["uid-8-test", "uid-old-5", "uid-elsewhere", "nope"]}),
        json!({"selector": {"matchLabels": {"team": "ci"}}}),
        json!({"selector": {"matchLabels": {"team": "ci", "env": "prod"}}}),
        json!({"selector": {"matchExpressions": [{"key": "env", "operator": "Exists"}]}}),
        json!({"selector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["ci"]}]}}),
        json!({"selector": {}}),
    ];
    for value in targets {
        let req = request(value.clone(), None);
        let candidates = crate::controller::cancelrequest::candidates(&caches, "ci", &req);
        let from_index = plan_request(&req, &candidates, t0());
        let from_all = plan_request(&req, &in_ns, t0());
        assert_eq!(from_index.status, from_all.status, "{value}");
        assert_eq!(from_index.event, from_all.event, "{value}");

        // And once accepted, following the targets reads the same.
        let accepted = request(value.clone(), Some(from_all.status.clone()));
        let candidates = crate::controller::cancelrequest::candidates(&caches, "ci", &accepted);
        assert_eq!(
            plan_request(&accepted, &candidates, at(1)).status,
            plan_request(&accepted, &in_ns, at(1)).status,
            "{value}"
        );
    }
}
