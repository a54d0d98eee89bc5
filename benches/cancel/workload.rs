//! The objects the benchmark creates: StageRuns (running, or finished with a
//! realistic status), CancelRequests, and the equivalent bare Jobs of the
//! baselines. Built as JSON through the public API shapes (DESIGN §2), so the
//! harness does not depend on the crate's internals.

use kube::api::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

/// Label on every object of one measured set.
pub const SET: &str = "bench.cancel.dev/set";
/// Label on the finished objects that stand for a namespace's history.
pub const HISTORY: &str = "bench.cancel.dev/history";
/// The StageRun label (DESIGN: pods and Jobs are found by it).
pub const STAGERUN_UID: &str = "cancel.dev/stagerun-uid";
/// Ids of history objects start here, far from what the controller hands out.
const HISTORY_ID_BASE: i64 = 1_000_000_000;
/// Grace period of every pod, the StageRun default (DESIGN §2).
pub const GRACE_SECONDS: i64 = 30;

pub fn stageruns() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cancel.dev", "v1alpha1", "StageRun"),
        "stageruns",
    )
}

pub fn cancelrequests() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cancel.dev", "v1alpha1", "CancelRequest"),
        "cancelrequests",
    )
}

/// A kwok pod that runs until it is deleted (for the whole benchmark).
pub fn pod_template() -> Value {
    json!({
        "metadata": {"annotations": {"sim.cancel.dev/run-for": "24h"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": GRACE_SECONDS,
            "containers": [{"name": "main", "image": "busybox"}]
        }
    })
}

/// A StageRun of `jobs` long-running jobs, labelled with its set.
pub fn stagerun(name: &str, set: &str, pipeline: &str, counter: usize, jobs: usize) -> Value {
    let jobs: Vec<Value> = (1..=jobs)
        .map(|j| json!({"name": format!("job{j}"), "template": pod_template()}))
        .collect();
    json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
        "metadata": {"name": name, "labels": {SET: set}},
        "spec": {
            "pipeline": pipeline, "pipelineCounter": counter, "stage": "build",
            "cancelGracePeriodSeconds": GRACE_SECONDS,
            "jobs": jobs
        }
    })
}

/// How a history StageRun ended: most passed, some failed, some were cancelled.
pub fn history_outcome(i: usize) -> (&'static str, &'static str) {
    match i % 10 {
        0 => ("Failed", "Cancelled"),
        1 | 2 => ("Failed", "Failed"),
        _ => ("Succeeded", "Passed"),
    }
}

/// A finished StageRun as the controller would have left it: 100 pipelines,
/// each with its run counter, 2 jobs.
pub fn history_stagerun(i: usize) -> (String, Value) {
    let pipeline = format!("history-{}", i % 100);
    let counter = i / 100 + 1;
    let name = format!("{pipeline}-{counter}-build");
    let mut sr = stagerun(&name, "history", &pipeline, counter, 2);
    sr["metadata"]["labels"] = json!({HISTORY: "true"});
    (name, sr)
}

/// The status of history StageRun `i`, written through the status subresource.
pub fn history_status(i: usize, now: &str) -> Value {
    let id = HISTORY_ID_BASE + 3 * i as i64;
    let name = history_stagerun(i).0;
    let request = format!("history-{i}");
    json!({ "status": finished_status(i, id, &name, (now, now), &request) })
}

/// The status of a finished StageRun `name` with stage id `id`, as the
/// controller leaves it: passed, failed or cancelled (by CancelRequest
/// `request`) as [`history_outcome`] says for `i`, 2 jobs, started and done
/// at `times`.
pub fn finished_status(i: usize, id: i64, name: &str, times: (&str, &str), request: &str) -> Value {
    let (phase, result) = history_outcome(i);
    let (started, done) = times;
    let job_result = |j: i64| match (result, j) {
        ("Failed", 1) => "Failed",
        (r, _) => r,
    };
    let jobs: Vec<Value> = (1..=2)
        .map(|j| {
            json!({
                "name": format!("job{j}"), "id": id + j, "state": "Completed",
                "result": job_result(j), "scheduledAt": started,
                "jobName": format!("{name}-job{j}"), "completionTime": done
            })
        })
        .collect();
    let mut status = json!({
        "id": id, "phase": phase, "result": result, "jobs": jobs,
        "startTime": started, "completionTime": done, "observedGeneration": 1,
        "conditions": [{
            "type": "Succeeded", "status": if phase == "Succeeded" {"True"} else {"False"},
            "reason": result, "message": format!("the stage {}", result.to_lowercase()),
            "lastTransitionTime": done, "observedGeneration": 1
        }]
    });
    match result {
        "Cancelled" => {
            status["failureReason"] = json!("task was cancelled");
            status["cancel"] = json!({
                "requestName": request, "requestedBy": "admin",
                "reason": "superseded", "requestedAt": started, "acceptedAt": started,
                "gracePeriodSeconds": GRACE_SECONDS
            });
        }
        "Failed" => status["failureReason"] = json!("job job1 failed"),
        _ => {}
    }
    status
}

/// A completed CancelRequest of the history, targeting history StageRun `target`.
pub fn history_request(k: usize, target: &str) -> (String, Value) {
    let name = format!("history-{k}");
    (
        name.clone(),
        json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest",
            "metadata": {"name": name, "labels": {HISTORY: "true"}},
            "spec": {"target": {"stageRun": target}, "reason": "superseded", "requestedBy": "admin"}
        }),
    )
}

pub fn history_request_status(target: &str, uid: &str, now: &str) -> Value {
    json!({"status": {
        "phase": "Completed",
        "targets": [{"name": target, "uid": uid, "outcome": "Cancelled"}],
        "matched": 1, "cancelled": 1, "startTime": now, "completionTime": now,
        "conditions": [{
            "type": "Completed", "status": "True", "reason": "Cancelled",
            "message": "1 of 1 cancelled", "lastTransitionTime": now
        }]
    }})
}

/// A selector CancelRequest over one set.
pub fn selector_request(name: &str, set: &str) -> Value {
    json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest",
        "metadata": {"name": name, "labels": {SET: set}},
        "spec": {"target": {"selector": {"matchLabels": {SET: set}}}, "reason": "benchmark", "requestedBy": "admin"}
    })
}

/// A CancelRequest for one StageRun, as `kubectl apply` would send it.
pub fn single_request(name: &str, set: &str, stagerun: &str) -> Value {
    json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest",
        "metadata": {"name": name, "labels": {SET: set}},
        "spec": {"target": {"stageRun": stagerun}, "reason": "benchmark", "requestedBy": "admin"}
    })
}

/// A bare Job with the same pod as a StageRun's job, for the baselines.
pub fn job(name: &str, set: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {SET: set}},
        "spec": {"backoffLimit": 0, "template": pod_template()}
    })
}
