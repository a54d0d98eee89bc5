//! Benchmarks against the local control plane (`make bench` starts one).
//!
//! 1. Cancel latency: from creating a CancelRequest over N running StageRuns
//!    to all of them being Failed/Cancelled with no pod left, against the
//!    baseline of Kubernetes alone: deleting N equivalent Jobs with
//!    Background propagation until their pods are gone.
//! 2. Sidecar latency: GoCD history and Cloud Foundry task reads (watch cache,
//!    cached authorisation) against the baseline of `/healthz` on the same
//!    server.
//!
//! Figures are ratios to the baseline measured in the same run, because the
//! machines are noisy.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use cancel_operator::crd::{CancelRequest, StagePhase, StageRun};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use support::{TestNamespace, wait_list, world};

const T: Duration = Duration::from_secs(300);

fn pod_template() -> serde_json::Value {
    json!({
        "metadata": {"annotations": {"sim.cancel.dev/run-for": "1h"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}
    })
}

fn running(pods: &[Pod], n: usize) -> bool {
    pods.len() == n
        && pods
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
}

/// Kubernetes alone: N Jobs deleted with Background propagation, until no pod is left.
async fn baseline_job_delete(n: usize) -> Duration {
    let ns = TestNamespace::new("bench-jobs").await;
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    for i in 0..n {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": format!("job-{i}"), "labels": {"bench": "yes"}},
            "spec": {"backoffLimit": 0, "template": pod_template()}
        }))
        .expect("job");
        jobs.create(&PostParams::default(), &job)
            .await
            .expect("create job");
    }
    let lp = ListParams::default();
    wait_list(&pods, &lp, "pods running", T, |p: &[Pod]| running(p, n)).await;
    let start = Instant::now();
    for i in 0..n {
        jobs.delete(&format!("job-{i}"), &DeleteParams::background())
            .await
            .expect("delete job");
    }
    wait_list(&pods, &lp, "pods gone", T, |p: &[Pod]| p.is_empty()).await;
    start.elapsed()
}

/// cancel-operator: one CancelRequest over N StageRuns, until all are Failed
/// with no pod left.
async fn cancel_stageruns(n: usize) -> Duration {
    let ns = TestNamespace::new("bench-cancel").await;
    support::install_crds(&ns.client).await;
    let ctl = world::spawn_controller(ns.client.clone(), &ns.name);
    let runs: Api<StageRun> = ns.api();
    let pods: Api<Pod> = ns.api();
    for i in 1..=n {
        let sr: StageRun = serde_json::from_value(json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
            "metadata": {"name": format!("run-{i}"), "labels": {"bench": "yes"}},
            "spec": {"pipeline": "bench", "pipelineCounter": i, "stage": "build",
                     "jobs": [{"name": "main", "template": pod_template()}]}
        }))
        .expect("stagerun");
        runs.create(&PostParams::default(), &sr)
            .await
            .expect("create stagerun");
    }
    let lp = ListParams::default();
    wait_list(&pods, &lp, "pods running", T, |p: &[Pod]| running(p, n)).await;
    let requests: Api<CancelRequest> = ns.api();
    let request: CancelRequest = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest",
        "metadata": {"name": "bench"},
        "spec": {"target": {"selector": {"matchLabels": {"bench": "yes"}}}, "reason": "benchmark"}
    }))
    .expect("request");
    let start = Instant::now();
    requests
        .create(&PostParams::default(), &request)
        .await
        .expect("create request");
    wait_list(&runs, &lp, "all cancelled", T, |items: &[StageRun]| {
        items.len() == n
            && items
                .iter()
                .all(|r| r.status.as_ref().and_then(|s| s.phase) == Some(StagePhase::Failed))
    })
    .await;
    let elapsed = start.elapsed();
    assert!(pods.list(&lp).await.expect("list pods").items.is_empty());
    ctl.abort();
    elapsed
}

/// Mean latency of `rounds` sequential GETs of `path`.
async fn mean_get(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    auth: Option<&str>,
    rounds: u32,
) -> Duration {
    let start = Instant::now();
    for _ in 0..rounds {
        let mut req = http.get(format!("{base}{path}"));
        if let Some(token) = auth {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("request");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.bytes().await.expect("body");
    }
    start.elapsed() / rounds
}

async fn sidecar_latency() -> (Duration, Duration, Duration) {
    let ns = TestNamespace::new("bench-sidecar").await;
    support::install_crds(&ns.client).await;
    let runs: Api<StageRun> = ns.api();
    for i in 1..=30 {
        let sr: StageRun = serde_json::from_value(json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
            "metadata": {"name": format!("foo-{i}-dev")},
            "spec": {"pipeline": "foo", "pipelineCounter": i, "stage": "DEV", "approvalType": "manual",
                     "jobs": [{"name": "UnitTest", "template": pod_template()}]}
        }))
        .expect("stagerun");
        runs.create(&PostParams::default(), &sr)
            .await
            .expect("create stagerun");
    }
    let uid = runs
        .get("foo-1-dev")
        .await
        .expect("get")
        .metadata
        .uid
        .expect("uid");
    let (addr, _server) = world::spawn_sidecar(
        support::client(support::User::Admin).await,
        &ns.name,
        None,
        Duration::from_secs(60),
    )
    .await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let token = support::token(support::User::Admin);
    let history = "/go/api/stages/foo/DEV/history/0";
    support::eventually(
        "the sidecar to serve the history",
        Duration::from_secs(60),
        || async {
            let r = http
                .get(format!("{base}{history}"))
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
            (body["pagination"]["total"] == 30)
                .then_some(())
                .ok_or_else(|| body.to_string())
        },
    )
    .await;
    let rounds = 300;
    // Warm both paths (connections, auth caches) before measuring.
    mean_get(&http, &base, history, Some(&token), 10).await;
    let healthz = mean_get(&http, &base, "/healthz", None, rounds).await;
    let hist = mean_get(&http, &base, history, Some(&token), rounds).await;
    let task = mean_get(
        &http,
        &base,
        &format!("/v3/tasks/{uid}"),
        Some(&token),
        rounds,
    )
    .await;
    (healthz, hist, task)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for n in [1usize, 20] {
        let baseline = baseline_job_delete(n).await;
        let ours = cancel_stageruns(n).await;
        println!(
            "cancel {n:>2} running stage(s): cancel-operator {:>8.1} ms, Job deletion alone {:>8.1} ms, ratio {:.2}",
            ms(ours),
            ms(baseline),
            ours.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    let (healthz, history, task) = sidecar_latency().await;
    println!(
        "sidecar GET history (30 runs) {:>6.3} ms, GET task {:>6.3} ms, /healthz baseline {:>6.3} ms, ratios {:.2} and {:.2}",
        ms(history),
        ms(task),
        ms(healthz),
        history.as_secs_f64() / healthz.as_secs_f64(),
        task.as_secs_f64() / healthz.as_secs_f64()
    );
}
