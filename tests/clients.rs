//! Published API clients, unmodified, against the sidecar on the real
//! control plane. Python clients run in the virtualenv that
//! tests/clients/venv.sh builds from tests/clients/requirements.txt, driven
//! by a pytest file under tests/clients; Huawei Cloud's Go, Java and Node.js
//! SDKs run in a program of tests/clients/<sdk>/ that tests/clients/sdk.sh
//! builds. This side sets up the namespace, the controller and the sidecar,
//! and checks what the client did to the StageRuns.

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
    let (w, users) = serve_with_users(prefix, stages).await;
    (venv, w, users)
}

/// [`with_users`] without the virtualenv.
async fn serve_with_users(
    prefix: &str,
    stages: &[(&str, &str, &str)],
) -> (world::Served, world::UsersFile) {
    let users = world::UsersFile::new(&format!("{prefix}-{}", std::process::id()));
    let w = world::serve(TestNamespace::new(prefix).await, Some(&users.path)).await;
    start_running(&w, stages).await;
    (w, users)
}

/// Runs the runner of one of Huawei Cloud's published SDKs
/// (tests/clients/<sdk>/, built by tests/clients/sdk.sh) with `env`. It
/// exits non-zero at the first step that fails.
async fn huawei_sdk(sdk: &'static str, env: Vec<(&'static str, String)>) {
    let script = repo().join("tests/clients/sdk.sh");
    let built = tokio::task::spawn_blocking(move || Command::new(script).arg(sdk).output())
        .await
        .expect("sdk.sh ran")
        .expect("start sdk.sh");
    assert!(
        built.status.success(),
        "sdk.sh {sdk} failed ({}):\n{}",
        built.status,
        String::from_utf8_lossy(&built.stderr)
    );
    let run = PathBuf::from(String::from_utf8(built.stdout).expect("a path").trim());
    let out = tokio::task::spawn_blocking(move || Command::new(run).envs(env).output())
        .await
        .expect("the SDK runner ran")
        .expect("start the SDK runner");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok:"),
        "the {sdk} SDK failed ({}):\n{}\n{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The CodeArts client `client` stops build 1 of `job`, running as
/// `stage_run` in a namespace named after `prefix`, signing with the users
/// file's access key; the build ends cancelled by the key's user, and the
/// sidecar counted the calls of the client's workflow (see
/// tests/clients/test_codearts.py, which each SDK's runner follows).
async fn codearts_client_stops_a_build(
    prefix: &str,
    (stage_run, job): (&str, &str),
    client: CodeArtsClient,
) {
    let (w, _users) = serve_with_users(prefix, &[(stage_run, job, "build")]).await;
    let env = vec![
        ("CODEARTS_ENDPOINT", format!("http://{}", w.addr)),
        ("CODEARTS_AK", world::ACCESS_KEY.into()),
        ("CODEARTS_SK", world::SECRET_KEY.into()),
        ("CODEARTS_JOB_ID", job.into()),
        ("CODEARTS_BUILD_NO", "1".into()),
    ];
    match client {
        CodeArtsClient::Python => pytest(&venv().await, "test_codearts.py", env).await,
        CodeArtsClient::Sdk(sdk) => huawei_sdk(sdk, env).await,
    }

    assert_eq!(wait_cancelled(&w, stage_run).await, "jez");
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

enum CodeArtsClient {
    /// tests/clients/test_codearts.py in the virtualenv.
    Python,
    /// A runner of tests/clients/sdk.sh: go, node or java.
    Sdk(&'static str),
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
    codearts_client_stops_a_build(
        "clients-codearts",
        ("ca-1", "ca-app"),
        CodeArtsClient::Python,
    )
    .await;
}

/// Huawei's Go SDK signs only the headers it sets, never Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huawei_codearts_go_sdk_stops_a_build_with_aksk() {
    codearts_client_stops_a_build(
        "clients-codearts-go",
        ("ca-go-1", "ca-go-app"),
        CodeArtsClient::Sdk("go"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huawei_codearts_java_sdk_stops_a_build_with_aksk() {
    codearts_client_stops_a_build(
        "clients-codearts-java",
        ("ca-java-1", "ca-java-app"),
        CodeArtsClient::Sdk("java"),
    )
    .await;
}

/// The Node.js SDK's core signing and sending the CodeArts client's calls
/// (its CodeArts Build package is not published on npm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huawei_codearts_nodejs_sdk_stops_a_build_with_aksk() {
    codearts_client_stops_a_build(
        "clients-codearts-node",
        ("ca-node-1", "ca-node-app"),
        CodeArtsClient::Sdk("node"),
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
