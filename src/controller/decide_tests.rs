//! Tests of `decide`: which fresh reads the decision asks for before a plan
//! is applied (the table tests of `plan` itself are in plan_tests.rs).

use serde_json::json;

use super::*;
use crate::controller::test_clock::{t0, time};

fn run(status: Option<StageRunStatus>) -> StageRun {
    let template = json!({"spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}});
    let mut run: StageRun = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1",
        "kind": "StageRun",
        "metadata": {"name": "r", "namespace": "ci", "uid": "u", "generation": 1},
        "spec": {"pipeline": "p", "pipelineCounter": 1, "stage": "s",
                 "jobs": [{"name": "unit", "template": template}]},
    }))
    .unwrap();
    run.status = status;
    run
}

fn running() -> StageRunStatus {
    StageRunStatus {
        id: Some(1),
        phase: Some(StagePhase::Running),
        jobs: vec![JobStatus {
            name: "unit".into(),
            id: 2,
            state: JobState::Building,
            job_name: Some("r-unit".into()),
            ..JobStatus::default()
        }],
        start_time: Some(time(-60)),
        ..StageRunStatus::default()
    }
}

fn canceling() -> StageRunStatus {
    StageRunStatus {
        phase: Some(StagePhase::Canceling),
        cancel: Some(CancelRecord {
            cause: CancelCause::Request,
            request_name: "stop".into(),
            requested_by: "bob".into(),
            reason: "why".into(),
            requested_at: time(-5),
            accepted_at: time(-5),
            grace_period_seconds: 30,
            mode: CancelMode::Cancel,
        }),
        ..running()
    }
}

fn observe(run: &StageRun, jobs: Vec<ObservedJob>, pods: Vec<ObservedPod>) -> Observation<'_> {
    Observation {
        now: t0(),
        run,
        ids: None,
        jobs,
        pods,
        cancel: None,
        force_margin: Duration::from_secs(10),
        issued: Issued::default(),
    }
}

fn unit_job() -> ObservedJob {
    ObservedJob {
        resource_name: "r-unit".into(),
        uid: None,
        job: "unit".into(),
        finished: None,
        deadline_exceeded: false,
        deleting: false,
        suspended: false,
        stopped: false,
        id: Some(2),
    }
}

#[test]
fn a_run_without_ids_asks_for_them_first() {
    let r = run(None);
    assert_eq!(
        decide(&observe(&r, vec![], vec![]), Fresh::default()),
        Decision::Need(Need::Ids { jobs: 1 })
    );
    let mut obs = observe(&r, vec![], vec![]);
    obs.ids = Some((1, vec![2]));
    assert!(matches!(decide(&obs, Fresh::default()), Decision::Apply(_)));
}

#[test]
fn a_job_the_cache_lacks_is_read_fresh_before_it_is_called_gone() {
    let r = run(Some(running()));
    assert_eq!(
        decide(&observe(&r, vec![], vec![]), Fresh::default()),
        Decision::Need(Need::Jobs {
            names: vec!["r-unit".into()]
        })
    );
    // In the cache: no read.
    assert!(matches!(
        decide(&observe(&r, vec![unit_job()], vec![]), Fresh::default()),
        Decision::Apply(_)
    ));
    // Read and still gone: the plan records it deleted.
    let fresh = Fresh {
        jobs: true,
        ..Fresh::default()
    };
    let Decision::Apply(p) = decide(&observe(&r, vec![], vec![]), fresh) else {
        panic!("a plan once the Job was read");
    };
    assert_eq!(p.status.jobs[0].result, RunResult::Failed);
}

#[test]
fn a_canceling_run_reads_no_single_job() {
    // Once a cancel is accepted no Job is created; only the final
    // confirmation reads.
    let r = run(Some(canceling()));
    assert!(matches!(
        decide(&observe(&r, vec![], vec![]), Fresh::default()),
        Decision::Confirm(_)
    ));
}

#[test]
fn reporting_a_run_cancelled_waits_for_a_fresh_read_of_its_children() {
    let r = run(Some(canceling()));
    let Decision::Confirm(p) = decide(&observe(&r, vec![], vec![]), Fresh::default()) else {
        panic!("confirmation first");
    };
    assert_eq!(p.status.result, Some(RunResult::Cancelled));
    // The fresh read found a Job: the run stays Canceling.
    let fresh = Fresh {
        children: true,
        ..Fresh::default()
    };
    let Decision::Apply(p) = decide(&observe(&r, vec![unit_job()], vec![]), fresh) else {
        panic!("a plan once the children were read");
    };
    assert_eq!(p.status.phase, Some(StagePhase::Canceling));
    // While anything is left, no confirmation is asked for.
    assert!(matches!(
        decide(&observe(&r, vec![unit_job()], vec![]), Fresh::default()),
        Decision::Apply(_)
    ));
}
