//! Published API clients, unmodified, against the sidecar on the real
//! control plane. Each client runs in the Python virtualenv that
//! tests/clients/venv.sh builds from tests/clients/requirements.txt, driven
//! by a pytest file under tests/clients; this side sets up the namespace,
//! the controller and the sidecar, and checks what the client did to the
//! StageRuns.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cancel_operator::crd::{RunResult, StagePhase, StageRun};
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::{Value, json};
use support::python::{repo, venv};
use support::world;
use support::{TestNamespace, User, eventually_json, stage_run, wait_for};

const T: Duration = Duration::from_secs(120);

/// Runs one pytest file of tests/clients in the venv with `env`.
async fn pytest(venv: &Path, file: &str, env: Vec<(&'static str, String)>) {
    let python = venv.join("bin/python");
    let file = repo().join("tests/clients").join(file);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(&file)
            .envs(env)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
    })
    .await
    .expect("pytest ran")
    .expect("start pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest failed ({}):\n{}\n{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    // A client test that skipped (a variable not set) proved nothing.
    assert!(
        !stdout.contains("skipped"),
        "client tests were skipped:\n{stdout}"
    );
}

fn task(name: &str, counter: i64, sim: Value, labels: Value) -> StageRun {
    client_run(name, ("py-app", counter, "tasks"), sim, labels)
}

/// A StageRun of (pipeline, counter, stage) with one job whose pod template
/// carries the simulation annotations `sim`.
fn client_run(name: &str, of: (&str, i64, &str), sim: Value, labels: Value) -> StageRun {
    stage_run(name)
        .labels(labels)
        .of(of)
        .grace(5)
        .command(&["sleep", "3600"])
        .job("run", sim)
        .build()
}

fn phase(sr: &StageRun) -> Option<StagePhase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

/// The clients' virtualenv and a served namespace whose users file they log
/// in with (the file named after `prefix`), with `stages` running in it (see
/// [`start_running`]).
async fn with_users(
    prefix: &str,
    stages: &[(&str, &str, &str)],
) -> (PathBuf, world::Served, world::UsersFile) {
    let venv = venv().await;
    let users = world::UsersFile::new(&format!("{prefix}-{}", std::process::id()));
    let w = world::serve(TestNamespace::new(prefix).await, Some(&users.path)).await;
    start_running(&w, stages).await;
    (venv, w, users)
}

/// Creates a running StageRun of each (name, pipeline, stage), all with
/// pipeline counter 1, and waits until the sidecar's cache shows every job
/// building (read through GoCD's stage history as the users file's admin).
async fn start_running(w: &world::Served, stages: &[(&str, &str, &str)]) {
    let runs = w.ns.api::<StageRun>();
    let running = json!({"sim.cancel.dev/run-for": "1h"});
    for (name, pipeline, stage) in stages {
        let sr = client_run(name, (pipeline, 1, stage), running.clone(), json!({}));
        runs.create(&PostParams::default(), &sr).await.unwrap();
    }
    for (name, pipeline, stage) in stages {
        wait_for(&runs, name, &format!("{name} running"), T, |sr| {
            phase(sr) == Some(StagePhase::Running)
        })
        .await;
        let url = format!(
            "http://{}/go/api/stages/{pipeline}/{stage}/history/0",
            w.addr
        );
        eventually_json(
            &format!("the sidecar to show {name} building"),
            T,
            || {
                w.http
                    .get(&url)
                    .basic_auth("admin", Some(world::PASSWORD))
                    .header("Accept", "application/json")
            },
            |v| {
                v["stages"].as_array().is_some_and(|s| {
                    s.len() == 1
                        && s[0]["jobs"].as_array().is_some_and(|jobs| {
                            !jobs.is_empty() && jobs.iter().all(|j| j["state"] == "Building")
                        })
                })
            },
        )
        .await;
    }
}

/// Waits until StageRun `name` has ended cancelled, and returns who asked.
async fn wait_cancelled(w: &world::Served, name: &str) -> String {
    let runs = w.ns.api::<StageRun>();
    let sr = wait_for(&runs, name, &format!("{name} cancelled"), T, |sr| {
        phase(sr) == Some(StagePhase::Failed)
    })
    .await;
    let status = sr.status.unwrap();
    assert_eq!(status.result, Some(RunResult::Cancelled), "{name}");
    status
        .cancel
        .map(|c| c.requested_by)
        .unwrap_or_else(|| panic!("{name} has no cancel status"))
}

/// Asserts that the sidecar at `addr` counted each of `wants` (lines of its
/// `http_requests_total`): what the client called.
async fn assert_counted(w: &world::Served, wants: &[&str]) {
    let metrics = support::get_text(&w.http, &format!("http://{}/metrics", w.addr)).await;
    for want in wants {
        assert!(metrics.contains(want), "metrics lack {want}:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cloudfoundry_client_finds_and_cancels_a_task() {
    let venv = venv().await;
    let w = world::serve(TestNamespace::new("clients-cf").await, None).await;
    let (ns, addr, http) = (&w.ns, w.addr, &w.http);

    let running = json!({"sim.cancel.dev/run-for": "1h"});
    let runs = ns.api::<StageRun>();
    for sr in [
        task("py-1", 1, running.clone(), json!({"client": "python"})),
        task("py-2", 2, running.clone(), json!({"client": "python"})),
        task("py-3", 3, running.clone(), json!({"client": "other"})),
    ] {
        runs.create(&PostParams::default(), &sr).await.unwrap();
    }
    let mut uid = std::collections::BTreeMap::new();
    for name in ["py-1", "py-2", "py-3"] {
        let sr = wait_for(&runs, name, &format!("{name} running"), T, |sr| {
            phase(sr) == Some(StagePhase::Running)
        })
        .await;
        uid.insert(name, sr.uid().unwrap());
    }
    // The sidecar answers from its cache: wait until it shows them running.
    let admin = support::token(User::Admin);
    eventually_json(
        "the sidecar to list the tasks running",
        T,
        || {
            http.get(format!(
                "http://{addr}/v3/tasks?states=RUNNING&label_selector=client"
            ))
            .bearer_auth(&admin)
        },
        |v| v["pagination"]["total_results"] == 3,
    )
    .await;

    pytest(
        &venv,
        "test_cloudfoundry.py",
        vec![
            ("CF_API_URL", format!("http://{addr}")),
            ("CF_TOKEN", support::token(User::Operator)),
            ("CF_TASK_GUID", uid["py-2"].clone()),
            ("CF_TASK_SEQUENCE_ID", "2".into()),
            ("CF_LABEL_SELECTOR", "client=python".into()),
        ],
    )
    .await;

    // The client's cancel went through a CancelRequest to the StageRun, and
    // only to it.
    let cancelled = wait_for(&runs, "py-2", "py-2 cancelled", T, |sr| {
        phase(sr) == Some(StagePhase::Failed)
    })
    .await;
    let status = cancelled.status.unwrap();
    assert_eq!(status.result, Some(RunResult::Cancelled));
    assert_eq!(status.failure_reason.as_deref(), Some("task was cancelled"));
    assert_eq!(
        status.cancel.map(|c| c.requested_by).as_deref(),
        Some("operator")
    );
    for name in ["py-1", "py-3"] {
        let sr = runs.get(name).await.unwrap();
        assert_eq!(phase(&sr), Some(StagePhase::Running), "{name}");
    }

    // What the client called, as the sidecar counted it.
    assert_counted(
        &w,
        &[
            r#"http_requests_total{route="cf_root",code="200"}"#,
            r#"http_requests_total{route="uaa_token",code="200"}"#,
            r#"http_requests_total{route="cf_list",code="200"}"#,
            r#"http_requests_total{route="cf_cancel",code="202"} 1"#,
            r#"http_requests_total{route="cf_cancel",code="422"} 1"#,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huawei_codearts_sdk_stops_a_build_with_aksk() {
    let (venv, w, _users) = with_users("clients-codearts", &[("ca-1", "ca-app", "build")]).await;

    pytest(
        &venv,
        "test_codearts.py",
        vec![
            ("CODEARTS_ENDPOINT", format!("http://{}", w.addr)),
            ("CODEARTS_AK", world::ACCESS_KEY.into()),
            ("CODEARTS_SK", world::SECRET_KEY.into()),
            ("CODEARTS_JOB_ID", "ca-app".into()),
            ("CODEARTS_BUILD_NO", "1".into()),
        ],
    )
    .await;

    assert_eq!(wait_cancelled(&w, "ca-1").await, "jez");
    assert_counted(
        &w,
        &[
            r#"http_requests_total{route="codearts_status",code="200"}"#,
            r#"http_requests_total{route="codearts_status",code="401"} 1"#,
            r#"http_requests_total{route="codearts_history",code="200"}"#,
            r#"http_requests_total{route="codearts_history_details",code="200"}"#,
            r#"http_requests_total{route="codearts_stop",code="200"} 2"#,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_gocd_clients_cancel_running_stages() {
    let (venv, w, _users) = with_users(
        "clients-gocd",
        &[
            ("pygocd-1", "pygocd-app", "build"),
            ("yagocd-1", "yagocd-app", "deploy"),
            ("bystander-1", "other-app", "build"),
        ],
    )
    .await;

    pytest(
        &venv,
        "test_gocd.py",
        vec![
            ("GOCD_URL", format!("http://{}", w.addr)),
            ("GOCD_USER", "jez".into()),
            ("GOCD_PASSWORD", world::PASSWORD.into()),
            ("PYGOCD_PIPELINE", "pygocd-app".into()),
            ("PYGOCD_STAGE", "build".into()),
            ("PYGOCD_COUNTER", "1".into()),
            ("YAGOCD_PIPELINE", "yagocd-app".into()),
            ("YAGOCD_STAGE", "deploy".into()),
            ("YAGOCD_COUNTER", "1".into()),
        ],
    )
    .await;

    for name in ["pygocd-1", "yagocd-1"] {
        assert_eq!(wait_cancelled(&w, name).await, "jez");
    }
    let bystander = w.ns.api::<StageRun>().get("bystander-1").await.unwrap();
    assert_eq!(phase(&bystander), Some(StagePhase::Running));

    assert_counted(
        &w,
        &[
            r#"http_requests_total{route="gocd_about",code="200"}"#,
            r#"http_requests_total{route="gocd_cancel",code="200"} 4"#,
            r#"http_requests_total{route="gocd_history",code="200"}"#,
            r#"http_requests_total{route="gocd_history",code="401"}"#,
            r#"http_requests_total{route="gocd_pipeline_history",code="200"}"#,
            r#"http_requests_total{route="gocd_stage_instance_legacy",code="200"}"#,
        ],
    )
    .await;
}
