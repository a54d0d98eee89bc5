//! A cancel in progress survives a restart of the kube-apiserver: the
//! controller's watches reconnect (relisting when their resource version has
//! expired) and the cancel completes exactly once. This binary holds a single
//! test because it restarts the API server every other test shares.

mod support;

use std::time::Duration;

use cancel_operator::crd::{CancelRequest, RequestPhase, RunResult, StagePhase, StageRun};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::{TestNamespace, stage_run, wait_for, world};

const T: Duration = Duration::from_secs(120);
/// Waits for work that spans the restart (pods deleted past their grace).
const AFTER_RESTART: Duration = Duration::from_secs(240);
/// How soon after the API server is back new objects are acted on.
const RECOVERY: Duration = Duration::from_secs(5);

/// foo/DEV run `counter` with one job, UnitTest, whose pod carries `sim`.
fn stagerun(name: &str, counter: i64, sim: serde_json::Value) -> StageRun {
    stage_run(name)
        .counter(counter)
        .grace(5)
        .image("ant")
        .job("UnitTest", sim)
        .build()
}

fn phase(r: &StageRun) -> Option<StagePhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_survives_an_apiserver_restart() {
    if std::env::var_os("RUST_LOG").is_some() {
        cancel_operator::telemetry::init(cancel_operator::telemetry::LogFormat::Text);
    }
    let ns = TestNamespace::new("apiserver-restart").await;
    support::install_crds(&ns.client).await;
    let _controller = world::spawn_controller(ns.client.clone(), &ns.name);
    let runs: Api<StageRun> = ns.api();
    let stubborn = json!({"sim.cancel.dev/run-for": "1h", "sim.cancel.dev/ignore-sigterm": "true"});
    runs.create(
        &PostParams::default(),
        &stagerun("foo-1-dev", 1, stubborn.clone()),
    )
    .await
    .unwrap();
    support::wait_jobs_building(&runs, "foo-1-dev", T).await;
    let requests: Api<CancelRequest> = ns.api();
    let request: CancelRequest = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest", "metadata": {"name": "stop"},
        "spec": {"target": {"stageRun": "foo-1-dev"}, "reason": "restart test", "requestedBy": "alice"}
    }))
    .unwrap();
    requests
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    let canceling = wait_for(&runs, "foo-1-dev", "Canceling", T, |r| {
        phase(r) == Some(StagePhase::Canceling)
    })
    .await;

    // The acceptance is recorded (status and Event) and the pods are still within
    // their grace period: restart the API server now.
    let events: Api<Event> = ns.api();
    let canceling_events =
        ListParams::default().fields("involvedObject.name=foo-1-dev,reason=Canceling");
    support::wait_list(
        &events,
        &canceling_events,
        "the Canceling event",
        T,
        |e: &[Event]| !e.is_empty(),
    )
    .await;
    tokio::task::spawn_blocking(|| support::restart_component("kube-apiserver"))
        .await
        .unwrap();

    // The watches are back within seconds: a StageRun and a CancelRequest
    // created as soon as the API server answers are acted on within 5 s.
    runs.create(
        &PostParams::default(),
        &stagerun("foo-3-dev", 3, stubborn.clone()),
    )
    .await
    .unwrap();
    wait_for(
        &runs,
        "foo-3-dev",
        "a new StageRun acted on",
        RECOVERY,
        |r| phase(r).is_some(),
    )
    .await;
    support::wait_jobs_building(&runs, "foo-3-dev", T).await;
    let third: CancelRequest = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest", "metadata": {"name": "stop-3"},
        "spec": {"target": {"stageRun": "foo-3-dev"}, "reason": "restart test", "requestedBy": "alice",
                 "gracePeriodSeconds": 0}
    }))
    .unwrap();
    requests
        .create(&PostParams::default(), &third)
        .await
        .unwrap();
    wait_for(
        &runs,
        "foo-3-dev",
        "a new CancelRequest acted on",
        RECOVERY,
        |r| phase(r) == Some(StagePhase::Canceling) || phase(r) == Some(StagePhase::Failed),
    )
    .await;

    let done = wait_for(
        &runs,
        "foo-1-dev",
        "Failed after the restart",
        AFTER_RESTART,
        |r| phase(r) == Some(StagePhase::Failed),
    )
    .await;
    let st = done.status.as_ref().unwrap();
    assert_eq!(st.result, Some(RunResult::Cancelled));
    assert_eq!(
        st.cancel,
        canceling.status.as_ref().unwrap().cancel,
        "accepted once"
    );
    let pods: Api<Pod> = ns.api();
    let selector = format!("cancel.dev/stagerun-uid={}", done.uid().unwrap());
    assert!(
        pods.list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let req = wait_for(
        &requests,
        "stop",
        "the request completed",
        AFTER_RESTART,
        |r| r.status.as_ref().and_then(|s| s.phase) == Some(RequestPhase::Completed),
    )
    .await;
    assert_eq!(req.status.unwrap().cancelled, Some(1));
    assert_eq!(
        events.list(&canceling_events).await.unwrap().items.len(),
        1,
        "accepted once"
    );

    // The controller keeps working on new objects after the restart.
    runs.create(&PostParams::default(), &stagerun("foo-2-dev", 2, json!({})))
        .await
        .unwrap();
    let second = wait_for(&runs, "foo-2-dev", "Succeeded", AFTER_RESTART, |r| {
        phase(r) == Some(StagePhase::Succeeded)
    })
    .await;
    assert_eq!(second.status.unwrap().result, Some(RunResult::Passed));
}
