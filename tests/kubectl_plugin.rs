//! `kubectl cancel`, run through the real kubectl as a plugin, as the
//! `operator` user.

mod support;

use std::process::Output;
use std::time::Duration;

use cancel_operator::crd::{CancelMode, CancelRequest, RunResult, StagePhase, StageRun};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::{TestNamespace, User, stage_run, wait_for, wait_list, world};

const T: Duration = Duration::from_secs(90);

fn stagerun(name: &str, counter: i64, labels: serde_json::Value) -> StageRun {
    stage_run(name)
        .labels(labels)
        .counter(counter)
        .image("ant")
        .job("UnitTest", json!({"sim.cancel.dev/run-for": "1h"}))
        .build()
}

/// `kubectl cancel ARGS` as `operator`, with the plugin on PATH.
async fn kubectl_cancel(ns: &str, args: &[&str]) -> Output {
    let mut cmd = world::kubectl_cancel(ns, args, User::Operator);
    tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl cancel"))
        .await
        .expect("join")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_cancel_cancels_in_the_callers_name() {
    let ns = TestNamespace::new("kubectl-cancel").await;
    support::install_crds(&ns.client).await;
    let _controller = world::spawn_controller(ns.client.clone(), &ns.name);
    world::grant(
        &ns,
        "canceller",
        json!({"apiGroups": ["cancel.dev"], "resources": ["cancelrequests"], "verbs": ["create", "get", "list", "watch"]}),
        &["operator"],
    )
    .await;
    let runs: Api<StageRun> = ns.api();
    runs.create(&PostParams::default(), &stagerun("foo-1-dev", 1, json!({})))
        .await
        .unwrap();
    for i in 2..=4 {
        runs.create(
            &PostParams::default(),
            &stagerun(&format!("foo-{i}-dev"), i, json!({"team": "web"})),
        )
        .await
        .unwrap();
    }
    wait_list(
        &runs,
        &ListParams::default(),
        "all running",
        T,
        |items: &[StageRun]| {
            items.len() == 4
                && items
                    .iter()
                    .all(|r| r.status.as_ref().and_then(|s| s.phase) == Some(StagePhase::Running))
        },
    )
    .await;

    // One by name, waiting for the outcome.
    let out = kubectl_cancel(
        &ns.name,
        &[
            "stagerun",
            "foo-1-dev",
            "--reason",
            "wrong branch",
            "--mode",
            "terminate",
            "--wait",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("cancelrequest.cancel.dev/kubectl-cancel-"),
        "{printed}"
    );
    assert!(
        printed.contains("stagerun.cancel.dev/foo-1-dev Cancelled"),
        "{printed}"
    );
    let sr = runs.get("foo-1-dev").await.unwrap();
    let status = sr.status.unwrap();
    assert_eq!(status.result, Some(RunResult::Cancelled));
    let record = status.cancel.unwrap();
    assert_eq!(
        record.requested_by, "operator",
        "the API server's word for who asked"
    );
    assert_eq!(record.reason, "wrong branch");
    assert_eq!(record.mode, CancelMode::Terminate);

    // In bulk, by selector, without waiting.
    let out = kubectl_cancel(&ns.name, &["selector", "team=web", "--grace-period", "0"]).await;
    assert!(out.status.success(), "{}", text(&out));
    for i in 2..=4 {
        wait_for(
            &runs,
            &format!("foo-{i}-dev"),
            "cancelled",
            T,
            |r: &StageRun| r.status.as_ref().and_then(|s| s.result) == Some(RunResult::Cancelled),
        )
        .await;
    }
    let requests: Api<CancelRequest> = ns.api();
    assert_eq!(
        requests
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    // Nothing to cancel: a clear refusal and a failing exit status.
    let out = kubectl_cancel(&ns.name, &["stagerun", "no-such-run", "--wait"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("rejected: nothing to cancel: no StageRun no-such-run exists"),
        "{}",
        text(&out)
    );

    // Without the right to create CancelRequests, kubectl says so.
    let mut cmd = world::kubectl_cancel(&ns.name, &["stagerun", "foo-1-dev"], User::Nobody);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("forbidden"), "{}", text(&out));
}
