//! The pure planners never panic, whatever they are given: specs and
//! statuses with extreme numbers (the ends of `i64` and of time), empty and
//! huge lists, odd strings, and observations that disagree with the status.
//! The API server admits far less than this (CRD maxima, patterns), but a
//! status may be edited by anyone allowed to, and a panic here would stop
//! the controller on that object.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, LabelSelectorRequirement, Time,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::json;

use super::plan::{
    Action, CancelOrder, Decision, Fresh, Issued, JobCreation, Need, Observation, ObservedJob,
    ObservedPod, PodProgress, decide, record_creations,
};
use super::request_plan::plan_request;
use super::test_clock::t0;
use crate::crd::{
    ApprovalType, BuildTarget, CancelCause, CancelMode, CancelRecord, CancelRequest,
    CancelRequestSpec, CancelRequestStatus, CancelTarget, CancelTargetStatus, CleanupJob,
    CleanupWhen, JobState, JobStatus, JobTemplate, RequestPhase, RunResult, StagePhase, StageRun,
    StageRunSpec, StageRunStatus, StageTarget, TargetOutcome,
};

/// Numbers at the edges as often as ordinary ones.
fn number() -> impl Strategy<Value = i64> {
    prop_oneof![
        select(vec![
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            1,
            i64::MAX - 1,
            i64::MAX
        ]),
        -100i64..100_000,
        any::<i64>(),
    ]
}

/// Anywhere in time, the ends included, and often near the test clock.
fn timestamp() -> impl Strategy<Value = Timestamp> {
    let (min, max) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    prop_oneof![
        select(vec![Timestamp::MIN, Timestamp::MAX]),
        (min..=max).prop_map(|s| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)),
        (-1_000_000i64..1_000_000).prop_map(|s| t0() + SignedDuration::from_secs(s)),
    ]
}

fn time() -> impl Strategy<Value = Time> {
    timestamp().prop_map(Time)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9.-]{1,12}", "\\PC{0,40}"]
}

/// Names drawn from a small pool, so that jobs, pods and statuses meet.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec!["build", "test", "build-1", ""]).prop_map(String::from),
        1 => text(),
    ]
}

fn phase() -> impl Strategy<Value = StagePhase> {
    select(vec![
        StagePhase::Pending,
        StagePhase::Running,
        StagePhase::Canceling,
        StagePhase::Succeeded,
        StagePhase::Failed,
    ])
}

fn result() -> impl Strategy<Value = RunResult> {
    select(vec![
        RunResult::Unknown,
        RunResult::Passed,
        RunResult::Failed,
        RunResult::Cancelled,
    ])
}

fn job_state() -> impl Strategy<Value = JobState> {
    select(vec![
        JobState::Scheduled,
        JobState::Assigned,
        JobState::Preparing,
        JobState::Building,
        JobState::Completing,
        JobState::Completed,
    ])
}

fn template() -> impl Strategy<Value = JobTemplate> {
    let pod = prop_oneof![
        Just(json!({"spec": {"containers": [{"name": "main", "image": "busybox"}]}})),
        Just(json!(null)),
        Just(json!({"spec": {"containers": "none"}, "metadata": {"labels": 7}})),
    ];
    (name(), pod, any::<i32>()).prop_map(|(name, template, backoff_limit)| JobTemplate {
        name,
        template,
        backoff_limit,
    })
}

fn mode() -> impl Strategy<Value = CancelMode> {
    select(vec![
        CancelMode::Stop,
        CancelMode::Cancel,
        CancelMode::Terminate,
    ])
}

fn cleanup_job() -> impl Strategy<Value = CleanupJob> {
    let when = select(vec![
        CleanupWhen::Always,
        CleanupWhen::Cancelled,
        CleanupWhen::Failed,
        CleanupWhen::Succeeded,
    ]);
    (template(), when, number()).prop_map(|(job, when, active_deadline_seconds)| CleanupJob {
        job,
        when,
        active_deadline_seconds,
    })
}

fn spec() -> impl Strategy<Value = StageRunSpec> {
    (
        (text(), number(), text(), number(), text()),
        any::<bool>(),
        prop::collection::vec(template(), 0..60),
        number(),
        prop::option::of(number()),
        prop::collection::vec(cleanup_job(), 0..4),
    )
        .prop_map(
            |(
                (pipeline, pipeline_counter, stage, stage_counter, approved_by),
                manual,
                jobs,
                grace,
                deadline,
                cleanup,
            )| {
                StageRunSpec {
                    pipeline,
                    pipeline_counter,
                    stage,
                    stage_counter,
                    approved_by,
                    approval_type: if manual {
                        ApprovalType::Manual
                    } else {
                        ApprovalType::Success
                    },
                    jobs,
                    cancel_grace_period_seconds: grace,
                    active_deadline_seconds: deadline,
                    cleanup,
                }
            },
        )
}

fn job_status() -> impl Strategy<Value = JobStatus> {
    (
        name(),
        number(),
        job_state(),
        result(),
        prop::option::of(time()),
        prop::option::of(name()),
        prop::option::of(time()),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                name,
                id,
                state,
                result,
                scheduled_at,
                job_name,
                completion_time,
                (cleanup, skipped),
            )| JobStatus {
                name,
                id,
                state,
                result,
                scheduled_at,
                job_uid: job_name.as_ref().map(|n| format!("uid-{n}")),
                job_name,
                completion_time,
                cleanup,
                skipped,
            },
        )
}

fn cancel_record() -> impl Strategy<Value = CancelRecord> {
    (
        any::<bool>(),
        (text(), text(), text()),
        time(),
        time(),
        (number(), mode()),
    )
        .prop_map(
            |(
                deadline,
                (request_name, requested_by, reason),
                requested_at,
                accepted_at,
                (grace, mode),
            )| {
                CancelRecord {
                    cause: if deadline {
                        CancelCause::Deadline
                    } else {
                        CancelCause::Request
                    },
                    request_name,
                    requested_by,
                    reason,
                    requested_at,
                    accepted_at,
                    grace_period_seconds: grace,
                    mode,
                }
            },
        )
}

fn condition() -> impl Strategy<Value = Condition> {
    (
        prop_oneof![
            select(vec![
                "Succeeded",
                "PodsForceDeleted",
                "ReconcileFailed",
                "Complete"
            ])
            .prop_map(String::from),
            text()
        ],
        select(vec!["True", "False", "Unknown", ""]),
        text(),
        prop::option::of(number()),
        time(),
    )
        .prop_map(
            |(type_, status, message, observed_generation, at)| Condition {
                type_,
                status: status.into(),
                reason: "Odd".into(),
                message,
                observed_generation,
                last_transition_time: at,
            },
        )
}

fn status() -> impl Strategy<Value = StageRunStatus> {
    (
        (
            prop::option::of(number()),
            prop::option::of(phase()),
            prop::option::of(result()),
        ),
        prop::collection::vec(job_status(), 0..60),
        prop::option::of(cancel_record()),
        prop::option::of(text()),
        (
            prop::option::of(time()),
            prop::option::of(time()),
            prop::option::of(number()),
        ),
        prop::collection::vec(condition(), 0..4),
    )
        .prop_map(
            |(
                (id, phase, result),
                jobs,
                cancel,
                failure_reason,
                (start_time, completion_time, observed_generation),
                conditions,
            )| {
                StageRunStatus {
                    id,
                    phase,
                    result,
                    jobs,
                    cancel,
                    failure_reason,
                    start_time,
                    completion_time,
                    observed_generation,
                    conditions,
                }
            },
        )
}

fn stage_run() -> impl Strategy<Value = StageRun> {
    (
        (name(), text(), prop::option::of(number())),
        prop::option::of(select(vec!["true", "false", ""])),
        prop::collection::btree_map(
            select(vec!["team", "tier", "x"]),
            select(vec!["web", "db", ""]),
            0..3,
        ),
        spec(),
        prop::option::of(status()),
    )
        .prop_map(
            |((name, uid, generation), approved, labels, spec, status)| {
                let mut run = StageRun::new(&name, spec);
                run.metadata.namespace = Some("ns".into());
                run.metadata.uid = Some(uid);
                run.metadata.generation = generation;
                run.metadata.labels = Some(
                    labels
                        .into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect(),
                );
                if let Some(v) = approved {
                    run.metadata.annotations =
                        Some(BTreeMap::from([(crate::labels::APPROVED.into(), v.into())]));
                }
                run.status = status;
                run
            },
        )
}

fn observed_job() -> impl Strategy<Value = ObservedJob> {
    (
        (name(), name()),
        prop::option::of((result(), prop::option::of(time()))),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        prop::option::of(number()),
    )
        .prop_map(
            |(
                (resource_name, job),
                finished,
                (deleting, suspended, stopped, deadline_exceeded),
                id,
            )| ObservedJob {
                uid: Some(format!("uid-{resource_name}")),
                resource_name,
                job,
                deadline_exceeded,
                finished,
                deleting,
                suspended,
                stopped,
                id,
            },
        )
}

fn observed_pod() -> impl Strategy<Value = ObservedPod> {
    let progress = select(vec![
        PodProgress::Unscheduled,
        PodProgress::Assigned,
        PodProgress::Preparing,
        PodProgress::Running,
        PodProgress::Finished,
    ]);
    (
        name(),
        prop::option::of(name()),
        progress,
        prop::option::of(timestamp()),
    )
        .prop_map(|(name, job, progress, deletion_deadline)| ObservedPod {
            name,
            job,
            progress,
            deletion_deadline,
        })
}

fn cancel_order() -> impl Strategy<Value = CancelOrder> {
    (
        (text(), text(), text()),
        time(),
        prop::option::of(number()),
        mode(),
    )
        .prop_map(
            |((request_name, requested_by, reason), requested_at, grace_period_seconds, mode)| {
                CancelOrder {
                    request_name,
                    requested_by,
                    reason,
                    requested_at,
                    grace_period_seconds,
                    mode,
                }
            },
        )
}

fn issued() -> impl Strategy<Value = Issued> {
    (
        prop::collection::btree_map(name(), timestamp(), 0..4),
        prop::collection::btree_map(name(), timestamp(), 0..4),
        prop::collection::btree_map(name(), (timestamp(), number()), 0..4),
    )
        .prop_map(|(jobs, suspensions, pods)| Issued {
            jobs,
            suspensions,
            pods,
        })
}

/// Everything an observation holds but the run.
type Seen = (
    Timestamp,
    Option<(i64, Vec<i64>)>,
    Vec<ObservedJob>,
    Vec<ObservedPod>,
    Option<CancelOrder>,
    u64,
    Issued,
);

fn seen() -> impl Strategy<Value = Seen> {
    (
        timestamp(),
        prop::option::of((number(), prop::collection::vec(number(), 0..60))),
        prop::collection::vec(observed_job(), 0..60),
        prop::collection::vec(observed_pod(), 0..300),
        prop::option::of(cancel_order()),
        prop_oneof![Just(0u64), Just(10), Just(u64::MAX), any::<u64>()],
        issued(),
    )
}

fn creation() -> impl Strategy<Value = JobCreation> {
    prop_oneof![
        name().prop_map(|resource_name| JobCreation::Created {
            uid: Some(format!("uid-{resource_name}")),
            resource_name,
        }),
        (name(), prop::option::of(number())).prop_map(|(resource_name, id)| {
            JobCreation::AlreadyOurs {
                uid: Some(format!("uid-{resource_name}")),
                resource_name,
                id,
            }
        }),
        name().prop_map(|resource_name| JobCreation::NameTaken { resource_name }),
        text().prop_map(|message| JobCreation::Refused { message }),
    ]
}

/// Runs a pass as the reconcile does: the reads and ids the decision asks
/// for, then the record of the creations it planned.
fn pass(run: &StageRun, seen: Seen, creations: &[JobCreation]) {
    let (now, ids, jobs, pods, cancel, margin, issued) = seen;
    let mut obs = Observation {
        now,
        run,
        ids,
        jobs,
        pods,
        cancel,
        force_margin: Duration::from_secs(margin),
        issued,
    };
    let mut fresh = Fresh::default();
    for _ in 0..4 {
        match decide(&obs, fresh) {
            Decision::Need(Need::Ids { jobs }) => {
                obs.ids = Some((1, (1..).take(jobs).collect()));
            }
            Decision::Need(Need::Jobs { .. }) => fresh.jobs = true,
            Decision::Confirm(_) => fresh.children = true,
            Decision::Apply(mut plan) => {
                let outcomes: Vec<(String, JobCreation)> = plan
                    .actions
                    .iter()
                    .filter_map(|a| match a {
                        Action::CreateJob { job } => Some(job.clone()),
                        _ => None,
                    })
                    .zip(creations.iter().cycle().cloned())
                    .collect();
                record_creations(&mut plan, &outcomes, now);
                return;
            }
        }
    }
}

fn target() -> impl Strategy<Value = CancelTarget> {
    let requirement = (
        text(),
        select(vec!["In", "NotIn", "Exists", "DoesNotExist", "Odd", ""]),
        prop::option::of(prop::collection::vec(text(), 0..3)),
    )
        .prop_map(|(key, operator, values)| LabelSelectorRequirement {
            key,
            operator: operator.into(),
            values,
        });
    let selector = (
        prop::option::of(prop::collection::btree_map(text(), text(), 0..3)),
        prop::option::of(prop::collection::vec(requirement, 0..3)),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        });
    (
        prop::option::of(name()),
        prop::option::of((text(), text())),
        prop::option::of((text(), number())),
        prop::option::of(prop::collection::vec(text(), 0..1000)),
        prop::option::of(selector),
    )
        .prop_map(|(stage_run, stage, build, uids, selector)| CancelTarget {
            stage_run,
            stage: stage.map(|(pipeline, stage)| StageTarget { pipeline, stage }),
            build: build.map(|(pipeline, pipeline_counter)| BuildTarget {
                pipeline,
                pipeline_counter,
            }),
            uids,
            selector,
        })
}

fn request() -> impl Strategy<Value = CancelRequest> {
    let outcome = select(vec![
        TargetOutcome::Canceling,
        TargetOutcome::Cancelled,
        TargetOutcome::AlreadyFinished,
        TargetOutcome::Deleted,
    ]);
    let targets = prop::collection::vec(
        (name(), text(), outcome).prop_map(|(name, uid, outcome)| CancelTargetStatus {
            name,
            uid,
            outcome,
        }),
        0..100,
    );
    let phase = select(vec![
        RequestPhase::Pending,
        RequestPhase::InProgress,
        RequestPhase::Completed,
        RequestPhase::Rejected,
    ]);
    let status = (
        prop::option::of(phase),
        targets,
        (prop::option::of(number()), prop::option::of(number())),
        (prop::option::of(time()), prop::option::of(time())),
        prop::collection::vec(condition(), 0..3),
    )
        .prop_map(
            |(phase, targets, (matched, cancelled), (start_time, completion_time), conditions)| {
                CancelRequestStatus {
                    phase,
                    targets,
                    matched,
                    cancelled,
                    start_time,
                    completion_time,
                    conditions,
                }
            },
        );
    (
        target(),
        (text(), text()),
        prop::option::of(number()),
        number(),
        prop::option::of(status),
        (prop::option::of(number()), mode()),
    )
        .prop_map(
            |(target, (reason, requested_by), grace, ttl, status, (generation, mode))| {
                let mut req = CancelRequest::new(
                    "req",
                    CancelRequestSpec {
                        target,
                        reason,
                        requested_by,
                        grace_period_seconds: grace,
                        mode,
                        ttl_seconds_after_finished: ttl,
                    },
                );
                req.metadata.namespace = Some("ns".into());
                req.metadata.generation = generation;
                req.status = status;
                req
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_stage_run_planner_never_panics(
        run in stage_run(),
        seen in seen(),
        creations in prop::collection::vec(creation(), 0..5),
    ) {
        pass(&run, seen, &creations);
    }

    #[test]
    fn the_request_planner_never_panics(
        req in request(),
        runs in prop::collection::vec(stage_run(), 0..20),
        now in timestamp(),
    ) {
        let plan = plan_request(&req, &runs, now);
        let _ = plan.absence(&req);
    }
}
