//! The controller against the real control plane (kwok runs the pods).

mod support;

use std::process::Child;
use std::time::Duration;

use cancel_operator::crd::{
    CancelCause, CancelMode, CancelRequest, JobState, JobStatus, RequestPhase, RunResult,
    StagePhase, StageRun, TargetOutcome,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{TestNamespace, stage_run, wait_for, wait_list, world};

const T: Duration = Duration::from_secs(90);

/// A namespace with the CRDs installed and a controller watching it.
struct Setup {
    ns: TestNamespace,
    _controller: world::AbortOnDrop,
}

async fn setup(prefix: &str) -> Setup {
    let ns = TestNamespace::new(prefix).await;
    support::install_crds(&ns.client).await;
    with_controller(ns)
}

/// A controller watching `ns` from now on.
fn with_controller(ns: TestNamespace) -> Setup {
    let handle = world::spawn_controller(ns.client.clone(), &ns.name);
    Setup {
        ns,
        _controller: world::AbortOnDrop(vec![handle.abort_handle()]),
    }
}

fn cancel_request(name: &str, target: Value, extra: Value) -> CancelRequest {
    let mut spec =
        json!({"target": target, "reason": "superseded by a newer build", "requestedBy": "alice"});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("cancel request")
}

fn phase(sr: &StageRun) -> Option<StagePhase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

fn request_phase(r: &CancelRequest) -> Option<RequestPhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

async fn wait_phase(api: &Api<StageRun>, name: &str, want: StagePhase) -> StageRun {
    wait_for(api, name, &format!("{name} to be {want:?}"), T, |sr| {
        phase(sr) == Some(want)
    })
    .await
}

async fn wait_request_done(api: &Api<CancelRequest>, name: &str) -> CancelRequest {
    wait_for(api, name, &format!("{name} to complete"), T, |r| {
        matches!(
            request_phase(r),
            Some(RequestPhase::Completed | RequestPhase::Rejected)
        )
    })
    .await
}

/// Once every job of foo-1-dev builds, asks to cancel it through the
/// CancelRequest `request`; returns the StageRun once it is Canceling.
async fn cancel_when_building(
    runs: &Api<StageRun>,
    requests: &Api<CancelRequest>,
    request: &str,
) -> StageRun {
    support::wait_jobs_building(runs, "foo-1-dev", T).await;
    requests
        .create(
            &PostParams::default(),
            &cancel_request(request, json!({"stageRun": "foo-1-dev"}), json!({})),
        )
        .await
        .unwrap();
    wait_phase(runs, "foo-1-dev", StagePhase::Canceling).await
}

fn selector(sr: &StageRun) -> ListParams {
    ListParams::default().labels(&format!("cancel.dev/stagerun-uid={}", sr.uid().unwrap()))
}

async fn pods_of(client: &Client, ns: &str, sr: &StageRun) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&selector(sr))
        .await
        .unwrap()
        .items
}

async fn jobs_of(client: &Client, ns: &str, sr: &StageRun) -> Vec<Job> {
    Api::<Job>::namespaced(client.clone(), ns)
        .list(&selector(sr))
        .await
        .unwrap()
        .items
}

async fn events_for(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    support::events_for(client, ns, name, reason, T).await
}

/// Asserts the invariants of a cancelled StageRun: final job states, no pods,
/// no Jobs, a completion time no earlier than any job's.
async fn assert_cancelled(s: &Setup, sr: &StageRun, failure_reason: &str) {
    let status = sr.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(StagePhase::Failed));
    assert_eq!(status.result, Some(RunResult::Cancelled));
    assert_eq!(status.failure_reason.as_deref(), Some(failure_reason));
    assert!(status.cancel.is_some());
    let completion = status.completion_time.as_ref().expect("completionTime").0;
    for j in &status.jobs {
        assert_eq!(j.state, JobState::Completed, "{j:?}");
        assert!(j.result != RunResult::Unknown || j.skipped, "{j:?}");
        assert!(
            j.completion_time
                .as_ref()
                .is_some_and(|t| t.0 <= completion),
            "{j:?}"
        );
    }
    assert!(
        pods_of(&s.ns.client, &s.ns.name, sr).await.is_empty(),
        "no pod may remain"
    );
    assert!(
        jobs_of(&s.ns.client, &s.ns.name, sr).await.is_empty(),
        "no Job may remain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_whose_names_meet_each_run_their_own_job() {
    // `app-1-deploy` + `smoke-test` and `app-1-deploy-smoke` + `test` once
    // mapped to one Job name; each run must get, and own, its own Job.
    let s = setup("ctl-collide").await;
    let runs: Api<StageRun> = s.ns.api();
    let quick = json!({"sim.cancel.dev/run-for": "1s"});
    for (run, job) in [
        ("app-1-deploy", "smoke-test"),
        ("app-1-deploy-smoke", "test"),
    ] {
        runs.create(
            &PostParams::default(),
            &stage_run(run).job(job, quick.clone()).build(),
        )
        .await
        .unwrap();
    }
    let mut names = Vec::new();
    for run in ["app-1-deploy", "app-1-deploy-smoke"] {
        let sr = wait_phase(&runs, run, StagePhase::Succeeded).await;
        let status = sr.status.clone().unwrap();
        assert_eq!(status.result, Some(RunResult::Passed), "{run}");
        let jobs = jobs_of(&s.ns.client, &s.ns.name, &sr).await;
        assert_eq!(jobs.len(), 1, "{run} owns its Job");
        names.push(jobs[0].name_any());
    }
    assert_ne!(names[0], names[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_runs_its_jobs_to_success() {
    let s = setup("ctl-success").await;
    let runs: Api<StageRun> = s.ns.api();
    let quick = json!({"sim.cancel.dev/run-for": "1s"});
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .job("UnitTest", quick.clone())
            .job("Lint", quick)
            .build(),
    )
    .await
    .unwrap();

    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Succeeded).await;
    let status = sr.status.clone().unwrap();
    assert_eq!(status.result, Some(RunResult::Passed));
    assert!(status.id.is_some_and(|id| id >= 1));
    assert_eq!(status.jobs.len(), 2);
    let ids: Vec<i64> = status.jobs.iter().map(|j| j.id).collect();
    assert_ne!(ids[0], ids[1], "job ids are unique");
    for j in &status.jobs {
        assert_eq!(
            (j.state, j.result),
            (JobState::Completed, RunResult::Passed)
        );
        assert!(j.job_name.is_some());
    }
    assert!(status.start_time.unwrap().0 <= status.completion_time.unwrap().0);
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .unwrap();
    assert_eq!(cond.status, "True");

    // The Jobs are the StageRun's, found by owner.
    let jobs = jobs_of(&s.ns.client, &s.ns.name, &sr).await;
    assert_eq!(jobs.len(), 2);
    for j in &jobs {
        assert_eq!(j.owner_references()[0].uid, sr.uid().unwrap());
    }

    // A second run gets fresh ids.
    runs.create(
        &PostParams::default(),
        &stage_run("foo-2-dev")
            .counter(2)
            .job("UnitTest", json!({}))
            .build(),
    )
    .await
    .unwrap();
    let second = wait_phase(&runs, "foo-2-dev", StagePhase::Succeeded).await;
    let second = second.status.unwrap();
    assert!(second.id > status.id);
    assert!(!ids.contains(&second.jobs[0].id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_fails_the_stage() {
    let s = setup("ctl-fail").await;
    let runs: Api<StageRun> = s.ns.api();
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .job("UnitTest", json!({"sim.cancel.dev/exit-code": "1"}))
            .job("Lint", json!({"sim.cancel.dev/run-for": "2s"}))
            .build(),
    )
    .await
    .unwrap();
    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    let status = sr.status.unwrap();
    assert_eq!(status.result, Some(RunResult::Failed));
    assert_eq!(
        status.failure_reason.as_deref(),
        Some("job UnitTest failed")
    );
    let by_name = |n: &str| status.jobs.iter().find(|j| j.name == n).unwrap().clone();
    assert_eq!(
        (by_name("UnitTest").state, by_name("UnitTest").result),
        (JobState::Completed, RunResult::Failed)
    );
    assert_eq!(
        (by_name("Lint").state, by_name("Lint").result),
        (JobState::Completed, RunResult::Passed)
    );
    assert!(status.cancel.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_pending_stage_never_creates_its_jobs() {
    let s = setup("ctl-pending").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-uat")
            .stage("UATTest")
            .manual()
            .job("UAT", json!({}))
            .build(),
    )
    .await
    .unwrap();
    let pending = wait_for(&runs, "foo-1-uat", "the stage to await approval", T, |sr| {
        phase(sr) == Some(StagePhase::Pending) && sr.status.as_ref().is_some_and(|s| s.id.is_some())
    })
    .await;

    requests
        .create(
            &PostParams::default(),
            &cancel_request("stop-uat", json!({"stageRun": "foo-1-uat"}), json!({})),
        )
        .await
        .unwrap();
    let sr = wait_phase(&runs, "foo-1-uat", StagePhase::Failed).await;
    assert_cancelled(&s, &sr, "task was cancelled").await;
    assert!(
        sr.status
            .as_ref()
            .unwrap()
            .jobs
            .iter()
            .all(|j| j.job_name.is_none())
    );
    assert_eq!(
        sr.status.as_ref().unwrap().jobs[0].result,
        RunResult::Cancelled
    );
    assert_eq!(
        sr.status.as_ref().unwrap().id,
        pending.status.unwrap().id,
        "ids are stable"
    );

    // Approving it afterwards changes nothing: it stays cancelled, with no Job.
    runs.patch(
        "foo-1-uat",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"cancel.dev/approved": "true"}}})),
    )
    .await
    .unwrap();
    let req = wait_request_done(&requests, "stop-uat").await;
    let st = req.status.unwrap();
    assert_eq!(st.phase, Some(RequestPhase::Completed));
    assert_eq!((st.matched, st.cancelled), (Some(1), Some(1)));
    assert_eq!(st.targets[0].outcome, TargetOutcome::Cancelled);
    let after = runs.get("foo-1-uat").await.unwrap();
    assert_eq!(phase(&after), Some(StagePhase::Failed));
    assert!(jobs_of(&s.ns.client, &s.ns.name, &after).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_stage_stops_its_pods_then_fails_it() {
    let s = setup("ctl-running").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    let slow_stop = json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/terminate-after": "2s"});
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .job("UnitTest", slow_stop.clone())
            .job("Lint", slow_stop)
            .build(),
    )
    .await
    .unwrap();
    let canceling = cancel_when_building(&runs, &requests, "stop-dev").await;
    let record = canceling.status.as_ref().unwrap().cancel.clone().unwrap();
    assert_eq!(record.request_name, "stop-dev");
    assert_eq!(record.cause, CancelCause::Request);
    assert_eq!(record.requested_by, "alice");
    assert_eq!(record.reason, "superseded by a newer build");

    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    assert_cancelled(&s, &sr, "task was cancelled").await;
    assert!(
        sr.status
            .as_ref()
            .unwrap()
            .jobs
            .iter()
            .all(|j| j.result == RunResult::Cancelled)
    );
    // Each Job was stopped by the job controller (suspended) before it was
    // deleted: no pod of it can come after the run is reported cancelled.
    for j in &sr.status.as_ref().unwrap().jobs {
        let job = j.job_name.as_deref().expect("the Job's name");
        assert_eq!(
            events_for(&s.ns.client, &s.ns.name, job, "Suspended")
                .await
                .len(),
            1,
            "{job}"
        );
    }
    assert_eq!(
        events_for(&s.ns.client, &s.ns.name, "foo-1-dev", "Canceling")
            .await
            .len(),
        1
    );
    assert_eq!(
        events_for(&s.ns.client, &s.ns.name, "foo-1-dev", "Cancelled")
            .await
            .len(),
        1
    );

    let req = wait_request_done(&requests, "stop-dev").await;
    let st = req.status.unwrap();
    assert_eq!((st.matched, st.cancelled), (Some(1), Some(1)));
    assert_eq!(st.targets[0].outcome, TargetOutcome::Cancelled);
    assert!(st.completion_time.is_some());
    assert_eq!(
        events_for(&s.ns.client, &s.ns.name, "stop-dev", "Accepted")
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_cancel_during_canceling_causes_no_second_cancellation() {
    let s = setup("ctl-twice").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    let stubborn = json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/ignore-sigterm": "true"});
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .grace(3)
            .job("UnitTest", stubborn)
            .build(),
    )
    .await
    .unwrap();
    let canceling = cancel_when_building(&runs, &requests, "first").await;
    requests
        .create(
            &PostParams::default(),
            &cancel_request(
                "second",
                json!({"stage": {"pipeline": "foo", "stage": "DEV"}}),
                json!({"requestedBy": "bob"}),
            ),
        )
        .await
        .unwrap();

    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    assert_cancelled(&s, &sr, "task was cancelled").await;
    let record = sr.status.as_ref().unwrap().cancel.clone().unwrap();
    assert_eq!(
        record,
        canceling.status.unwrap().cancel.unwrap(),
        "the first cancel stands"
    );
    assert_eq!(record.request_name, "first");
    assert_eq!(
        events_for(&s.ns.client, &s.ns.name, "foo-1-dev", "Canceling")
            .await
            .len(),
        1
    );

    for name in ["first", "second"] {
        let st = wait_request_done(&requests, name).await.status.unwrap();
        assert_eq!(st.phase, Some(RequestPhase::Completed), "{name}");
        assert_eq!(st.targets.len(), 1, "{name}");
        assert_eq!(st.targets[0].outcome, TargetOutcome::Cancelled, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_stage_keeps_its_result_when_cancelled_late() {
    let s = setup("ctl-late").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev").job("UnitTest", json!({})).build(),
    )
    .await
    .unwrap();
    wait_phase(&runs, "foo-1-dev", StagePhase::Succeeded).await;
    requests
        .create(
            &PostParams::default(),
            &cancel_request("too-late", json!({"stageRun": "foo-1-dev"}), json!({})),
        )
        .await
        .unwrap();
    let st = wait_request_done(&requests, "too-late")
        .await
        .status
        .unwrap();
    assert_eq!(st.phase, Some(RequestPhase::Completed));
    assert_eq!((st.matched, st.cancelled), (Some(1), Some(0)));
    assert_eq!(st.targets[0].outcome, TargetOutcome::AlreadyFinished);
    let sr = runs.get("foo-1-dev").await.unwrap();
    let status = sr.status.unwrap();
    assert_eq!(
        (status.phase, status.result),
        (Some(StagePhase::Succeeded), Some(RunResult::Passed))
    );
    assert!(status.cancel.is_none());

    // A request that matches nothing is rejected with a message.
    requests
        .create(
            &PostParams::default(),
            &cancel_request("nothing", json!({"stageRun": "missing"}), json!({})),
        )
        .await
        .unwrap();
    let rejected = wait_request_done(&requests, "nothing")
        .await
        .status
        .unwrap();
    assert_eq!(rejected.phase, Some(RequestPhase::Rejected));
    let cond = rejected
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    assert!(
        cond.message.contains("StageRun missing"),
        "{}",
        cond.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_cancels_fifty_stages_and_nothing_else() {
    let s = setup("ctl-bulk").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    let long = json!({"sim.cancel.dev/run-for": "1h"});
    for i in 1..=50 {
        let sr = stage_run(&format!("bulk-{i}"))
            .counter(i)
            .labels(json!({"team": "bulk"}))
            .job("UnitTest", long.clone())
            .build();
        runs.create(&PostParams::default(), &sr).await.unwrap();
    }
    runs.create(
        &PostParams::default(),
        &stage_run("other")
            .labels(json!({"team": "other"}))
            .job("UnitTest", long.clone())
            .build(),
    )
    .await
    .unwrap();
    let all = ListParams::default();
    wait_list(
        &runs,
        &all,
        "all 51 running",
        Duration::from_secs(180),
        |items: &[StageRun]| {
            items.len() == 51
                && items
                    .iter()
                    .all(|sr| phase(sr) == Some(StagePhase::Running))
        },
    )
    .await;

    requests
        .create(
            &PostParams::default(),
            &cancel_request(
                "bulk",
                json!({"selector": {"matchLabels": {"team": "bulk"}}}),
                json!({"gracePeriodSeconds": 0}),
            ),
        )
        .await
        .unwrap();
    wait_for(&requests, "bulk", "the request accepted", T, |r| {
        request_phase(r) == Some(RequestPhase::InProgress)
            || request_phase(r) == Some(RequestPhase::Completed)
    })
    .await;
    // Created after acceptance: never matched by the old request.
    runs.create(
        &PostParams::default(),
        &stage_run("bulk-late")
            .counter(51)
            .labels(json!({"team": "bulk"}))
            .job("UnitTest", long)
            .build(),
    )
    .await
    .unwrap();

    let st = wait_request_done(&requests, "bulk").await.status.unwrap();
    assert_eq!(st.phase, Some(RequestPhase::Completed));
    assert_eq!((st.matched, st.cancelled), (Some(50), Some(50)));
    assert!(
        st.targets
            .iter()
            .all(|t| t.outcome == TargetOutcome::Cancelled)
    );
    assert!(st.targets.iter().all(|t| t.name != "bulk-late"));
    let items = runs.list(&all).await.unwrap().items;
    for sr in &items {
        let p = phase(sr);
        match sr.name_any().as_str() {
            "other" | "bulk-late" => assert_ne!(
                p,
                Some(StagePhase::Failed),
                "{} must not be cancelled",
                sr.name_any()
            ),
            _ => {
                assert_eq!(p, Some(StagePhase::Failed), "{}", sr.name_any());
                assert_eq!(
                    sr.status.as_ref().unwrap().result,
                    Some(RunResult::Cancelled)
                );
            }
        }
    }
    let pods: Api<Pod> = s.ns.api();
    let remaining = pods.list(&ListParams::default()).await.unwrap().items;
    assert!(
        remaining.len() <= 2,
        "only the two uncancelled stages keep pods: {}",
        remaining.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_still_present_after_the_grace_period_are_force_deleted() {
    let s = setup("ctl-force").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    // Its node no longer answers: the pod would stay Terminating for ever.
    let stuck = json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/unresponsive": "true"});
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .grace(2)
            .job("UnitTest", stuck)
            .build(),
    )
    .await
    .unwrap();
    let canceling = cancel_when_building(&runs, &requests, "stop").await;
    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    assert_cancelled(&s, &sr, "task was cancelled").await;
    let status = sr.status.as_ref().unwrap();
    let forced = status
        .conditions
        .iter()
        .find(|c| c.type_ == "PodsForceDeleted")
        .expect("condition");
    assert_eq!(forced.status, "True");
    // Not before the grace period (2s) and the margin (1s) had passed.
    let accepted = canceling.status.unwrap().cancel.unwrap().accepted_at.0;
    assert!(
        forced
            .last_transition_time
            .0
            .duration_since(accepted)
            .as_secs_f64()
            >= 3.0
    );
    assert_eq!(
        events_for(&s.ns.client, &s.ns.name, "foo-1-dev", "ForceDeleted")
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_deadline_times_the_stage_out_through_the_cancel_path() {
    let s = setup("ctl-deadline").await;
    let runs: Api<StageRun> = s.ns.api();
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .deadline(2)
            .job("UnitTest", json!({"sim.cancel.dev/run-for": "1h"}))
            .build(),
    )
    .await
    .unwrap();
    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    assert_cancelled(&s, &sr, "deadline exceeded").await;
    let status = sr.status.as_ref().unwrap();
    assert_eq!(status.cancel.as_ref().unwrap().reason, "DeadlineExceeded");
    assert_eq!(status.cancel.as_ref().unwrap().cause, CancelCause::Deadline);
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "DeadlineExceeded")
    );
    let elapsed = status
        .completion_time
        .as_ref()
        .unwrap()
        .0
        .duration_since(status.start_time.as_ref().unwrap().0);
    assert!(elapsed.as_secs_f64() >= 2.0, "{elapsed:?}");
    assert_eq!(
        events_for(&s.ns.client, &s.ns.name, "foo-1-dev", "DeadlineExceeded")
            .await
            .len(),
        1
    );
}

/// The deadline holds while no controller runs: each Job carries what is
/// left of it, and the job controller ends the Job there. The controller,
/// back, reports the run timed out, as if it had been there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_holds_while_the_controller_is_away() {
    let ns = TestNamespace::new("ctl-deadline-away").await;
    support::install_crds(&ns.client).await;
    let s = with_controller(ns);
    let runs: Api<StageRun> = s.ns.api();
    let jobs: Api<Job> = s.ns.api();
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .deadline(6)
            .job("UnitTest", json!({"sim.cancel.dev/run-for": "1h"}))
            .build(),
    )
    .await
    .unwrap();
    let building = support::wait_jobs_building(&runs, "foo-1-dev", T).await;
    let Setup { ns, _controller } = s;
    drop(_controller);
    let job_name = building.status.as_ref().unwrap().jobs[0]
        .job_name
        .clone()
        .unwrap();
    let job = jobs.get(&job_name).await.unwrap();
    let carried = job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
    assert!(carried.is_some_and(|d| (1..=6).contains(&d)), "{carried:?}");

    // The job controller ends it at the deadline; the run, unwatched, still
    // says Running.
    wait_for(&jobs, &job_name, "the Job to pass its deadline", T, |j| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "Failed"
                        && c.status == "True"
                        && c.reason.as_deref() == Some("DeadlineExceeded")
                })
            })
    })
    .await;
    assert_eq!(
        phase(&runs.get("foo-1-dev").await.unwrap()),
        Some(StagePhase::Running)
    );

    let s = with_controller(ns);
    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    assert_cancelled(&s, &sr, "deadline exceeded").await;
    let cancel = sr.status.as_ref().unwrap().cancel.clone().unwrap();
    assert_eq!(cancel.cause, CancelCause::Deadline);
    assert_eq!(cancel.reason, "DeadlineExceeded");
}

/// A status anyone allowed to edit it may write: a cancel accepted at the
/// end of time, with the longest grace period there is. The controller must
/// neither die on it (the timestamp arithmetic once overflowed and panicked,
/// and every replica would die on it again) nor stop serving other runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_edited_to_extreme_values_stops_nothing_else() {
    let s = setup("ctl-extreme").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    let long = json!({"sim.cancel.dev/run-for": "1h"});
    runs.create(
        &PostParams::default(),
        &stage_run("wild-1-dev")
            .job("UnitTest", long.clone())
            .build(),
    )
    .await
    .unwrap();
    wait_phase(&runs, "wild-1-dev", StagePhase::Running).await;
    runs.patch_status(
        "wild-1-dev",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Canceling", "cancel": {
            "cause": "Request", "requestName": "edited", "requestedBy": "mallory",
            "reason": "edited by hand",
            "requestedAt": "9999-12-30T00:00:00Z", "acceptedAt": "9999-12-30T00:00:00Z",
            "gracePeriodSeconds": i64::MAX,
        }}})),
    )
    .await
    .unwrap();
    // The controller goes on: a run created after the edit runs, and its
    // cancel completes.
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev").job("UnitTest", long).build(),
    )
    .await
    .unwrap();
    let sr = cancel_when_building(&runs, &requests, "stop-dev").await;
    let sr = wait_phase(&runs, &sr.name_any(), StagePhase::Failed).await;
    assert_cancelled(&s, &sr, "task was cancelled").await;
    // Nothing failed on the edited run either: its arithmetic holds at the
    // end of time.
    let wild = runs.get("wild-1-dev").await.unwrap();
    let conditions = &wild.status.as_ref().unwrap().conditions;
    assert!(
        conditions.iter().all(|c| c.type_ != "ReconcileFailed"),
        "{conditions:?}"
    );
}

/// Waits until the run says a job's creation is held; returns the run.
async fn wait_held(runs: &Api<StageRun>, name: &str) -> StageRun {
    wait_for(runs, name, "a held Job creation", T, |sr: &StageRun| {
        sr.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "JobCreationHeld"))
    })
    .await
}

/// The held job is named with why; the other was created, and neither
/// failed.
fn assert_held(sr: &StageRun, job: Option<&str>, why: &str) {
    let status = sr.status.as_ref().unwrap();
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "JobCreationHeld")
        .unwrap();
    assert!(cond.message.contains(why), "{}", cond.message);
    let held: Vec<&str> = status
        .jobs
        .iter()
        .filter(|j| j.job_name.is_none())
        .map(|j| j.name.as_str())
        .collect();
    assert_eq!(held.len(), 1, "{:?}", status.jobs);
    if let Some(job) = job {
        assert_eq!(held, vec![job]);
    }
    assert!(
        cond.message.contains(&format!("job {}: ", held[0])),
        "{}",
        cond.message
    );
    assert!(status.jobs.iter().all(|j| j.result != RunResult::Failed));
}

/// Once the held job runs too, the condition is gone and was announced once.
async fn assert_released(s: &Setup, runs: &Api<StageRun>) {
    let sr = support::wait_jobs_building(runs, "foo-1-dev", T).await;
    let status = sr.status.as_ref().unwrap();
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.type_ != "JobCreationHeld"),
        "{:?}",
        status.conditions
    );
    let held = events_for(&s.ns.client, &s.ns.name, "foo-1-dev", "JobCreationHeld").await;
    assert_eq!(held.len(), 1, "{held:?}");
}

/// A quota that allows one Job: the first creation passes, the second is
/// forbidden (403). Its sibling's outcome is recorded, the run says which
/// job waits and why, and the job is created once the quota allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_quota_forbids_is_held_and_created_once_allowed() {
    let s = setup("ctl-quota").await;
    let runs: Api<StageRun> = s.ns.api();
    let quotas: Api<ResourceQuota> = s.ns.api();
    let quota = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "one-job"},
        "spec": {"hard": {"count/jobs.batch": "1"}}
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // Enforced once the quota controller has counted what the namespace holds.
    wait_for(
        &quotas,
        "one-job",
        "the quota's usage",
        T,
        |q: &ResourceQuota| q.status.as_ref().and_then(|s| s.used.as_ref()).is_some(),
    )
    .await;
    let long = json!({"sim.cancel.dev/run-for": "1h"});
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .job("UnitTest", long.clone())
            .job("Lint", long)
            .build(),
    )
    .await
    .unwrap();
    let sr = wait_held(&runs, "foo-1-dev").await;
    assert_held(&sr, None, "exceeded quota");
    quotas
        .delete("one-job", &DeleteParams::default())
        .await
        .unwrap();
    assert_released(&s, &runs).await;
}

/// A validating admission policy that forbids the Lint job (reason
/// Forbidden: 403): held, said, and created once the policy is unbound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_policy_forbids_is_held_until_the_policy_allows_it() {
    let s = setup("ctl-policy").await;
    let runs: Api<StageRun> = s.ns.api();
    let name = format!("freeze-lint-{}", s.ns.name);
    let gvk = |kind: &str| {
        kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ))
    };
    let policies: Api<DynamicObject> =
        Api::all_with(s.ns.client.clone(), &gvk("ValidatingAdmissionPolicy"));
    let bindings: Api<DynamicObject> = Api::all_with(
        s.ns.client.clone(),
        &gvk("ValidatingAdmissionPolicyBinding"),
    );
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["batch"], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["jobs"]
            }]},
            "validations": [{
                "expression": "!has(object.metadata.annotations) || !('cancel.dev/job' in object.metadata.annotations) || object.metadata.annotations['cancel.dev/job'] != 'Lint'",
                "message": "Lint jobs are frozen this week",
                "reason": "Forbidden"
            }]
        }
    }))
    .unwrap();
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": s.ns.name}}}
        }
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The API server enforces a new policy a moment later: wait until a
    // dry run of a Lint Job is refused.
    let jobs: Api<Job> = s.ns.api();
    let probe: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "probe", "annotations": {"cancel.dev/job": "Lint"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    support::eventually("the policy enforced", T, || async {
        match jobs
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &probe,
            )
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 403 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let long = json!({"sim.cancel.dev/run-for": "1h"});
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .job("UnitTest", long.clone())
            .job("Lint", long)
            .build(),
    )
    .await
    .unwrap();
    let sr = wait_held(&runs, "foo-1-dev").await;
    assert_held(&sr, Some("Lint"), "Lint jobs are frozen this week");
    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    assert_released(&s, &runs).await;
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

fn spawn_controller(ns: &str) -> Child {
    world::controller_process(ns, &[], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_cancel_completes_it_exactly_once_after_restart() {
    let ns = TestNamespace::new("ctl-restart").await;
    support::install_crds(&ns.client).await;
    let runs: Api<StageRun> = ns.api();
    let requests: Api<CancelRequest> = ns.api();
    let mut first = spawn_controller(&ns.name);
    let stubborn = json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/ignore-sigterm": "true"});
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .grace(4)
            .job("UnitTest", stubborn.clone())
            .job("Lint", stubborn)
            .build(),
    )
    .await
    .unwrap();
    let canceling = cancel_when_building(&runs, &requests, "stop").await;
    events_for(&ns.client, &ns.name, "foo-1-dev", "Canceling").await;
    first.kill().expect("kill -9 the controller");
    first.wait().expect("reap");
    // Its pods are still terminating while no controller runs.
    assert!(!pods_of(&ns.client, &ns.name, &canceling).await.is_empty());

    let mut second = spawn_controller(&ns.name);
    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    let req = wait_request_done(&requests, "stop").await;
    let cancelled_events = events_for(&ns.client, &ns.name, "foo-1-dev", "Cancelled").await;
    second.kill().ok();
    second.wait().ok();

    let status = sr.status.as_ref().unwrap();
    assert_eq!(status.result, Some(RunResult::Cancelled));
    assert_eq!(
        status.cancel,
        canceling.status.as_ref().unwrap().cancel,
        "accepted once, never again"
    );
    assert!(
        status
            .jobs
            .iter()
            .all(|j| j.state == JobState::Completed && j.result == RunResult::Cancelled)
    );
    assert!(pods_of(&ns.client, &ns.name, &sr).await.is_empty());
    assert_eq!(
        events_for(&ns.client, &ns.name, "foo-1-dev", "Canceling")
            .await
            .len(),
        1
    );
    assert_eq!(cancelled_events.len(), 1);
    let st = req.status.unwrap();
    assert_eq!((st.matched, st.cancelled), (Some(1), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_requests_are_deleted_after_their_ttl() {
    let s = setup("ctl-ttl").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .job("UnitTest", json!({"sim.cancel.dev/run-for": "1h"}))
            .build(),
    )
    .await
    .unwrap();
    wait_phase(&runs, "foo-1-dev", StagePhase::Running).await;
    requests
        .create(
            &PostParams::default(),
            &cancel_request(
                "short-lived",
                json!({"stageRun": "foo-1-dev"}),
                json!({"ttlSecondsAfterFinished": 1, "gracePeriodSeconds": 0}),
            ),
        )
        .await
        .unwrap();
    wait_list(
        &requests,
        &ListParams::default(),
        "the request deleted after its TTL",
        T,
        |items: &[CancelRequest]| items.is_empty(),
    )
    .await;
    let sr = runs.get("foo-1-dev").await.unwrap();
    let status = sr.status.unwrap();
    assert_eq!(status.result, Some(RunResult::Cancelled));
    // A grace period of 0 is a force deletion, and the run says so.
    let forced = status
        .conditions
        .iter()
        .find(|c| c.type_ == "PodsForceDeleted")
        .expect("the PodsForceDeleted condition");
    assert_eq!(forced.reason, "GracePeriodZero");
    assert!(
        forced.message.contains("may go on running"),
        "{}",
        forced.message
    );
    assert_eq!(
        events_for(&s.ns.client, &s.ns.name, "foo-1-dev", "ForceDeleted")
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_deleted_directly_with_the_requests_grace_then_forced() {
    let s = setup("ctl-direct").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    // The stage's grace period (the pods' terminationGracePeriodSeconds) is a
    // minute; the request shortens it to 3s. The garbage collector would delete
    // the pods with their own minute, so a 3s deletion is the controller's own,
    // and the pods, whose node no longer answers, stay Terminating until forced.
    let stuck = json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/unresponsive": "true"});
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .grace(60)
            .job("UnitTest", stuck.clone())
            .job("Lint", stuck)
            .build(),
    )
    .await
    .unwrap();
    let sr = support::wait_jobs_building(&runs, "foo-1-dev", T).await;
    requests
        .create(
            &PostParams::default(),
            &cancel_request(
                "stop",
                json!({"stageRun": "foo-1-dev"}),
                json!({"gracePeriodSeconds": 3}),
            ),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = s.ns.api();
    let terminating = wait_list(
        &pods,
        &selector(&sr),
        "both pods deleted with the request's grace period",
        T,
        |items| {
            items.len() == 2
                && items
                    .iter()
                    .all(|p| p.metadata.deletion_grace_period_seconds == Some(3))
        },
    )
    .await;
    // Deleted gracefully first: not forced before grace + margin.
    let accepted = wait_phase(&runs, "foo-1-dev", StagePhase::Canceling)
        .await
        .status
        .unwrap()
        .cancel
        .unwrap()
        .accepted_at
        .0;
    for p in &terminating {
        assert!(p.metadata.deletion_timestamp.is_some());
    }
    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    assert_cancelled(&s, &sr, "task was cancelled").await;
    let status = sr.status.as_ref().unwrap();
    let forced = status
        .conditions
        .iter()
        .find(|c| c.type_ == "PodsForceDeleted")
        .expect("forced after grace + margin");
    let waited = forced
        .last_transition_time
        .0
        .duration_since(accepted)
        .as_secs_f64();
    // Grace (3s) and margin (1s) honoured; the stage's minute was not waited for.
    assert!((4.0..60.0).contains(&waited), "forced after {waited}s");
    assert_eq!(status.cancel.as_ref().unwrap().grace_period_seconds, 3);
    // One forced deletion, recorded once.
    let forced = events_for(&s.ns.client, &s.ns.name, "foo-1-dev", "ForceDeleted").await;
    assert_eq!(forced.len(), 1);
    assert!(forced[0].series.is_none(), "{:?}", forced[0].series);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_api_refuses_fails_the_stage_once_and_is_never_retried() {
    let s = setup("ctl-refused").await;
    let runs: Api<StageRun> = s.ns.api();
    // A container name the Job API refuses (not a DNS label).
    let sr = stage_run("foo-1-dev")
        .container(json!({"name": "Not_A_Label", "image": "busybox"}))
        .bare_job("UnitTest")
        .build();
    runs.create(&PostParams::default(), &sr).await.unwrap();
    let failed = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    let status = failed.status.as_ref().unwrap();
    assert_eq!(status.result, Some(RunResult::Failed));
    let reason = status.failure_reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("job UnitTest could not be created:"),
        "{reason}"
    );
    assert_eq!(status.jobs[0].state, JobState::Completed);
    assert_eq!(status.jobs[0].result, RunResult::Failed);
    // Touch the final StageRun: the pass this causes must not try again.
    runs.patch(
        "foo-1-dev",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"touched": "yes"}}})),
    )
    .await
    .unwrap();
    // A second StageRun created after the touch and run to its end: by then
    // the touched one has been looked at again.
    runs.create(
        &PostParams::default(),
        &stage_run("foo-2-dev")
            .counter(2)
            .job("UnitTest", json!({"sim.cancel.dev/run-for": "1s"}))
            .build(),
    )
    .await
    .unwrap();
    wait_phase(&runs, "foo-2-dev", StagePhase::Succeeded).await;
    let events = events_for(&s.ns.client, &s.ns.name, "foo-1-dev", "InvalidJob").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].series.is_none(),
        "refused more than once: {:?}",
        events[0].series
    );
    assert!(jobs_of(&s.ns.client, &s.ns.name, &failed).await.is_empty());
    let again = runs.get("foo-1-dev").await.unwrap();
    assert_eq!(
        again.status, failed.status,
        "a final StageRun does not change"
    );
}

/// Finished StageRuns of the same pipeline and stage, as the controller would
/// have left them, written through the status subresource.
async fn finished_history(runs: &Api<StageRun>, count: usize, labels: Value) {
    use futures::{StreamExt, TryStreamExt};
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    futures::stream::iter(0..count)
        .map(|i| {
            let labels = labels.clone();
            let now = now.clone();
            async move {
                let name = format!("foo-h{i}-dev");
                let sr = stage_run(&name)
                    .counter(1000 + i as i64)
                    .labels(labels)
                    .job("UnitTest", json!({}))
                    .build();
                runs.create(&PostParams::default(), &sr).await?;
                let (phase, result) = if i % 3 == 0 {
                    ("Failed", "Cancelled")
                } else {
                    ("Succeeded", "Passed")
                };
                let status = json!({"status": {
                    "id": 9_000_000 + i, "phase": phase, "result": result,
                    "startTime": now, "completionTime": now,
                    "jobs": [{"name": "UnitTest", "id": 9_500_000 + i, "state": "Completed",
                              "result": if result == "Passed" { "Passed" } else { "Cancelled" },
                              "scheduledAt": now, "completionTime": now}]
                }});
                runs.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_with_a_long_history_gives_the_same_decisions() {
    // The history is written before the controller starts, so that it meets
    // it all in its first lists, as after an upgrade.
    let ns = TestNamespace::new("ctl-history").await;
    support::install_crds(&ns.client).await;
    let runs: Api<StageRun> = ns.api();
    let requests: Api<CancelRequest> = ns.api();
    finished_history(&runs, 300, json!({"team": "web"})).await;
    for k in 0..30 {
        let done = cancel_request(
            &format!("old-{k}"),
            json!({"stageRun": format!("foo-h{}-dev", k * 3)}),
            json!({}),
        );
        requests
            .create(&PostParams::default(), &done)
            .await
            .unwrap();
    }
    let s = with_controller(ns);
    // The old requests meet only finished runs: each completes, changing nothing.
    for k in 0..30 {
        let r = wait_request_done(&requests, &format!("old-{k}")).await;
        let status = r.status.unwrap();
        assert_eq!(status.cancelled, Some(0), "old-{k}");
        assert_eq!(status.targets.len(), 1, "old-{k}");
        assert_eq!(status.targets[0].outcome, TargetOutcome::AlreadyFinished);
    }
    // Two running instances among the history of the same pipeline and stage.
    let long = json!({"sim.cancel.dev/run-for": "1h"});
    for (name, counter) in [("foo-1-dev", 1), ("foo-2-dev", 2)] {
        runs.create(
            &PostParams::default(),
            &stage_run(name)
                .counter(counter)
                .labels(json!({"team": "web"}))
                .job("UnitTest", long.clone())
                .build(),
        )
        .await
        .unwrap();
        support::wait_jobs_building(&runs, name, T).await;
    }
    // By stage and by selector, the requests match the two active runs only.
    requests
        .create(
            &PostParams::default(),
            &cancel_request(
                "by-stage",
                json!({"stage": {"pipeline": "foo", "stage": "DEV"}}),
                json!({}),
            ),
        )
        .await
        .unwrap();
    let by_stage = wait_request_done(&requests, "by-stage").await;
    let status = by_stage.status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Completed));
    let mut matched: Vec<&str> = status.targets.iter().map(|t| t.name.as_str()).collect();
    matched.sort();
    assert_eq!(matched, ["foo-1-dev", "foo-2-dev"]);
    assert_eq!(status.cancelled, Some(2));
    for name in ["foo-1-dev", "foo-2-dev"] {
        let sr = wait_phase(&runs, name, StagePhase::Failed).await;
        assert_cancelled(&s, &sr, "task was cancelled").await;
    }
    requests
        .create(
            &PostParams::default(),
            &cancel_request(
                "by-label",
                json!({"selector": {"matchLabels": {"team": "web"}}}),
                json!({}),
            ),
        )
        .await
        .unwrap();
    let by_label = wait_request_done(&requests, "by-label")
        .await
        .status
        .unwrap();
    // Nothing active is left to match.
    assert_eq!(by_label.phase, Some(RequestPhase::Rejected), "{by_label:?}");
    // The history kept every result.
    let all = runs.list(&ListParams::default()).await.unwrap();
    let untouched = all
        .items
        .iter()
        .filter(|r| r.name_any().starts_with("foo-h"))
        .filter(|r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.cancel.is_none() && s.id.is_some_and(|id| id >= 9_000_000))
        })
        .count();
    assert_eq!(untouched, 300);
}

/// What makes a Job or pod a run's is ownership: a Job the run controls, a
/// pod its Job controls. Labels and annotations anyone may edit: stripped
/// from a run's live children, the children are still stopped before the
/// run is reported cancelled; forged on objects the run does not own, those
/// objects neither hold the cancel open nor get deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_known_by_ownership_not_by_labels() {
    let s = setup("ctl-owner").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    let (jobs_api, pods_api): (Api<Job>, Api<Pod>) = (s.ns.api(), s.ns.api());
    let slow_stop = json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/terminate-after": "2s"});
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .job("UnitTest", slow_stop.clone())
            .job("Lint", slow_stop.clone())
            .build(),
    )
    .await
    .unwrap();
    let building = support::wait_jobs_building(&runs, "foo-1-dev", T).await;
    let uid = building.uid().unwrap();
    let (jobs, pods) = (
        jobs_of(&s.ns.client, &s.ns.name, &building).await,
        pods_of(&s.ns.client, &s.ns.name, &building).await,
    );
    assert_eq!((jobs.len(), pods.len()), (2, 2));

    // Every label and annotation the controller put on them, stripped
    // (the job controller's own labels stay: without them it would
    // release the pods).
    let strip = json!({"metadata": {
        "labels": {"cancel.dev/stagerun-uid": null, "cancel.dev/job-id": null,
                   "app.kubernetes.io/managed-by": null},
        "annotations": {"cancel.dev/stagerun": null, "cancel.dev/job": null},
    }});
    let pp = PatchParams::default();
    for j in &jobs {
        jobs_api
            .patch(&j.name_any(), &pp, &Patch::Merge(&strip))
            .await
            .unwrap();
    }
    for p in &pods {
        pods_api
            .patch(&p.name_any(), &pp, &Patch::Merge(&strip))
            .await
            .unwrap();
    }
    // The run's labels and annotations, forged on a bare pod and on a Job
    // of nobody's (suspended: it makes no pod).
    let forged = json!({
        "labels": {"cancel.dev/stagerun-uid": uid, "cancel.dev/job-id": "1",
                   "app.kubernetes.io/managed-by": "cancel-operator"},
        "annotations": {"cancel.dev/stagerun": "foo-1-dev", "cancel.dev/job": "UnitTest"},
    });
    let mut impostor_meta = forged.clone();
    impostor_meta["name"] = json!("impostor");
    let impostor: Pod = serde_json::from_value(json!({
        "metadata": impostor_meta,
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }))
    .unwrap();
    pods_api
        .create(&PostParams::default(), &impostor)
        .await
        .unwrap();
    let mut stray_meta = forged.clone();
    stray_meta["name"] = json!("impostor-job");
    let stray: Job = serde_json::from_value(json!({
        "metadata": stray_meta,
        "spec": {"suspend": true, "template": {
            "metadata": forged,
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]},
        }},
    }))
    .unwrap();
    jobs_api
        .create(&PostParams::default(), &stray)
        .await
        .unwrap();

    requests
        .create(
            &PostParams::default(),
            &cancel_request("stop-dev", json!({"stageRun": "foo-1-dev"}), json!({})),
        )
        .await
        .unwrap();
    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    let status = sr.status.as_ref().unwrap();
    assert_eq!(status.result, Some(RunResult::Cancelled));
    // Reported cancelled once its own children were gone, found by owner.
    for j in &jobs {
        assert!(
            jobs_api.get_opt(&j.name_any()).await.unwrap().is_none(),
            "Job {} outlived the cancel",
            j.name_any()
        );
        assert!(
            status.jobs.iter().any(|js| js.job_uid == j.uid()),
            "{j:?} recorded"
        );
    }
    for p in &pods {
        assert!(
            pods_api.get_opt(&p.name_any()).await.unwrap().is_none(),
            "pod {} outlived the cancel",
            p.name_any()
        );
    }
    // What only looked like the run's is untouched.
    let impostor = pods_api.get("impostor").await.unwrap();
    assert!(
        impostor.metadata.deletion_timestamp.is_none(),
        "{impostor:?}"
    );
    let stray = jobs_api.get("impostor-job").await.unwrap();
    assert!(stray.metadata.deletion_timestamp.is_none(), "{stray:?}");
    assert_eq!(
        stray.spec.as_ref().and_then(|s| s.suspend),
        Some(true),
        "nobody's Job is left as it was"
    );
}

fn job_entry<'a>(sr: &'a StageRun, name: &str) -> &'a JobStatus {
    (sr.status.as_ref().expect("status").jobs.iter())
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name} in {sr:?}"))
}

/// The Job of `job` of `sr`, once it exists.
async fn wait_job_of(s: &Setup, runs: &Api<StageRun>, name: &str, job: &str) -> Job {
    let sr = wait_for(runs, name, &format!("{job}'s Job to be created"), T, |sr| {
        sr.status.as_ref().is_some_and(|st| {
            st.jobs
                .iter()
                .any(|j| j.name == job && j.job_name.is_some())
        })
    })
    .await;
    let job_name = job_entry(&sr, job).job_name.clone().unwrap();
    Api::<Job>::namespaced(s.ns.client.clone(), &s.ns.name)
        .get(&job_name)
        .await
        .expect("the Job the status names")
}

/// The pods the job controller made for this Job, listed now.
async fn pods_of_job(s: &Setup, job: &Job) -> Vec<Pod> {
    let uid = job.uid().unwrap();
    Api::<Pod>::namespaced(s.ns.client.clone(), &s.ns.name)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}")))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_runs_the_cleanup_jobs_once_the_pods_are_gone() {
    let s = setup("ctl-cleanup").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    let slow_stop = json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/terminate-after": "2s"});
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .job("UnitTest", slow_stop)
            .cleanup("report", "Always", json!({"sim.cancel.dev/run-for": "3s"}))
            .cleanup(
                "release-lock",
                "Cancelled",
                json!({"sim.cancel.dev/run-for": "1s", "sim.cancel.dev/exit-code": "1"}),
            )
            .cleanup(
                "publish",
                "Succeeded",
                json!({"sim.cancel.dev/run-for": "1s"}),
            )
            .build(),
    )
    .await
    .unwrap();
    let running = wait_for(&runs, "foo-1-dev", "UnitTest to build", T, |sr| {
        sr.status.as_ref().is_some_and(|st| {
            st.jobs
                .iter()
                .any(|j| j.name == "UnitTest" && j.state == JobState::Building)
        })
    })
    .await;
    // Listed from the start, as GoCD lists a stage's jobs; not begun.
    let report = job_entry(&running, "report");
    assert!(report.cleanup && report.job_name.is_none(), "{report:?}");
    let unit_job = wait_job_of(&s, &runs, "foo-1-dev", "UnitTest").await;
    requests
        .create(
            &PostParams::default(),
            &cancel_request("stop-dev", json!({"stageRun": "foo-1-dev"}), json!({})),
        )
        .await
        .unwrap();

    // The cleanup begins only once the cancelled job's pods are gone.
    let report_job = wait_job_of(&s, &runs, "foo-1-dev", "report").await;
    assert!(
        pods_of_job(&s, &unit_job).await.is_empty(),
        "a cleanup job began while a pod of a cancelled job was left"
    );
    let during = runs.get("foo-1-dev").await.unwrap();
    assert_eq!(
        phase(&during),
        Some(StagePhase::Canceling),
        "Canceling while the cleanup runs"
    );
    assert_eq!(job_entry(&during, "UnitTest").result, RunResult::Cancelled);
    let carried = report_job
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds);
    assert_eq!(carried, Some(600), "a cleanup job carries its own deadline");

    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    assert_cancelled(&s, &sr, "task was cancelled").await;
    let entry = |name| job_entry(&sr, name).clone();
    assert_eq!(entry("report").result, RunResult::Passed);
    assert_eq!(
        entry("release-lock").result,
        RunResult::Failed,
        "its own result"
    );
    let publish = entry("publish");
    assert!(publish.skipped && publish.job_name.is_none(), "{publish:?}");
    let cleanup_done = ["report", "release-lock"]
        .map(|n| entry(n).completion_time.unwrap().0)
        .into_iter()
        .max()
        .unwrap();
    assert!(
        sr.status
            .as_ref()
            .unwrap()
            .completion_time
            .as_ref()
            .unwrap()
            .0
            >= cleanup_done
    );
    assert_eq!(
        events_for(&s.ns.client, &s.ns.name, "foo-1-dev", "CleanupStarted")
            .await
            .len(),
        1
    );
    let st = wait_request_done(&requests, "stop-dev")
        .await
        .status
        .unwrap();
    assert_eq!(st.targets[0].outcome, TargetOutcome::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_a_running_job_finish_and_never_starts_a_pending_one() {
    let s = setup("ctl-stop").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    let mut run = stage_run("foo-1-dev")
        .job("Build", json!({"sim.cancel.dev/run-for": "8s"}))
        .job("Deploy", json!({"sim.cancel.dev/run-for": "1s"}))
        .cleanup("report", "Always", json!({"sim.cancel.dev/run-for": "1s"}))
        .build();
    // No node takes Deploy's pod: it stays pending.
    run.spec.jobs[1].template["spec"]["nodeSelector"] = json!({"cancel.dev/no-such-node": "true"});
    runs.create(&PostParams::default(), &run).await.unwrap();
    wait_for(&runs, "foo-1-dev", "Build to build", T, |sr| {
        sr.status.as_ref().is_some_and(|st| {
            st.jobs
                .iter()
                .any(|j| j.name == "Build" && j.state == JobState::Building)
        })
    })
    .await;
    let deploy_job = wait_job_of(&s, &runs, "foo-1-dev", "Deploy").await;
    requests
        .create(
            &PostParams::default(),
            &cancel_request(
                "stop-gently",
                json!({"stageRun": "foo-1-dev"}),
                json!({"mode": "Stop"}),
            ),
        )
        .await
        .unwrap();
    let stopping = wait_phase(&runs, "foo-1-dev", StagePhase::Canceling).await;
    let record = stopping.status.as_ref().unwrap().cancel.clone().unwrap();
    assert_eq!(record.mode, CancelMode::Stop);

    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    assert_cancelled(&s, &sr, "task was cancelled").await;
    assert_eq!(
        job_entry(&sr, "Build").result,
        RunResult::Passed,
        "it finished on its own"
    );
    assert_eq!(
        job_entry(&sr, "Deploy").result,
        RunResult::Cancelled,
        "it never started"
    );
    assert_eq!(job_entry(&sr, "report").result, RunResult::Passed);
    // Deploy's pod never ran.
    assert!(
        events_for(
            &s.ns.client,
            &s.ns.name,
            &deploy_job.name_any(),
            "Suspended"
        )
        .await
        .len()
            == 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_during_cleanup_ends_the_run_at_once() {
    let s = setup("ctl-terminate").await;
    let runs: Api<StageRun> = s.ns.api();
    let requests: Api<CancelRequest> = s.ns.api();
    runs.create(
        &PostParams::default(),
        &stage_run("foo-1-dev")
            .grace(2)
            .job(
                "UnitTest",
                json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/terminate-after": "1s"}),
            )
            .cleanup(
                "slow-cleanup",
                "Always",
                json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/terminate-after": "1s"}),
            )
            .build(),
    )
    .await
    .unwrap();
    cancel_when_building(&runs, &requests, "cancel-first").await;
    wait_for(&runs, "foo-1-dev", "the cleanup to run", T, |sr| {
        sr.status.as_ref().is_some_and(|st| {
            st.jobs
                .iter()
                .any(|j| j.name == "slow-cleanup" && j.state == JobState::Building)
        })
    })
    .await;
    requests
        .create(
            &PostParams::default(),
            &cancel_request(
                "terminate",
                json!({"stageRun": "foo-1-dev"}),
                json!({"mode": "Terminate", "requestedBy": "bob"}),
            ),
        )
        .await
        .unwrap();
    let sr = wait_phase(&runs, "foo-1-dev", StagePhase::Failed).await;
    assert_cancelled(&s, &sr, "task was cancelled").await;
    assert_eq!(job_entry(&sr, "slow-cleanup").result, RunResult::Cancelled);
    let record = sr.status.as_ref().unwrap().cancel.clone().unwrap();
    assert_eq!(
        (record.mode, record.request_name.as_str()),
        (CancelMode::Terminate, "terminate")
    );
    assert_eq!(record.requested_by, "bob");
    assert_eq!(
        events_for(&s.ns.client, &s.ns.name, "foo-1-dev", "Terminating")
            .await
            .len(),
        1
    );
    for name in ["cancel-first", "terminate"] {
        let st = wait_request_done(&requests, name).await.status.unwrap();
        assert_eq!(st.targets[0].outcome, TargetOutcome::Cancelled, "{name}");
    }
}
