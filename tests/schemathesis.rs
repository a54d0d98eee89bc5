//! schemathesis against the sidecar on the real control plane: every
//! operation of openapi/openapi.json, fed with the data this test seeds
//! (pipelines, stages and counters of existing StageRuns, CodeArts jobs and
//! build numbers, Cloud Foundry task guids and apps, Studio sites and
//! package ids) and valid credentials for each API (HTTP Basic, Bearer,
//! X-Auth-Token, and Huawei AK/SK signing through
//! tests/clients/schemathesis_hooks.py). Every check of schemathesis runs;
//! any failure fails the test: a schema-valid request refused, a status code
//! or body the document does not describe, a 5xx.
//!
//! schemathesis comes from the clients' virtualenv (tests/clients/venv.sh).

mod support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cancel_operator::crd::{CancelRequest, StagePhase, StageRun};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use support::python::{repo, venv};
use support::world::{self, PASSWORD, UsersFile};
use support::{TestNamespace, User, stage_run, wait_for};

const T: Duration = Duration::from_secs(120);
/// The seed of every run, so that a failure can be replayed.
const SEED: u64 = 20_260_102;
/// Examples per operation in the generating phases: enough to reach every
/// status code an operation documents, small enough for about a minute.
const MAX_EXAMPLES: u32 = 10;

/// A StageRun of `pipeline` run `counter`, stage `stage`, with one job whose
/// pod carries the simulation annotations `sim`.
fn seeded_run(name: &str, of: (&str, i64, &str), sim: Value) -> StageRun {
    stage_run(name)
        .of(of)
        .grace(2)
        .command(&["sleep", "3600"])
        .job("run", sim)
        .build()
}

/// A TOML string.
fn toml_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// A TOML array of strings.
fn toml_list<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_str(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cancel-schemathesis-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The seeded data schemathesis draws parameter values from.
struct Seeded {
    pipelines: Vec<&'static str>,
    stages: Vec<&'static str>,
    counters: Vec<String>,
    guids: Vec<String>,
}

/// schemathesis.toml for a run against `addr` with the seeded data.
fn config(addr: std::net::SocketAddr, data: &Seeded) -> String {
    let token = support::token(User::Operator);
    let mut c = String::new();
    // Top level: one worker and a fixed seed, so that a run is repeatable;
    // nothing kept between runs.
    writeln!(
        c,
        r#"base-url = "http://{addr}"
seed = {SEED}
workers = 1
continue-on-failure = true
request-timeout = 30

[cache]
enabled = false

[generation]
max-examples = {MAX_EXAMPLES}
database = "none"

[phases.stateful]
max-steps = 6

[phases.fuzzing.extra-data-sources]
responses = true

# Time is not what this run measures (the machine may be busy): only an
# answer that never comes fails.
[checks]
max_response_time = 30

# Valid data is accepted: the request is carried out (2xx), or what it names
# does not exist (404: a generated pipeline, job, task, site ...).
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404"]

[auth.openapi.basic]
username = "admin"
password = {password}

[auth.openapi.bearer]
bearer = {token}

[auth.openapi.xAuthToken]
api_key = {token}

# Replaced by a signature in schemathesis_hooks.py.
[auth.openapi.akSk]
api_key = "SDK-HMAC-SHA256 unsigned"
"#,
        password = toml_str(PASSWORD),
        token = toml_str(&token),
    )
    .unwrap();

    // Answers that depend on the state of what a valid request names, not
    // on its form: a task that has already ended cannot be cancelled (422,
    // as the Cloud Controller answers), and a refresh token that Kubernetes
    // did not issue is refused (401, as UAA answers).
    c.push_str(
        r#"[[operations]]
include-operation-id = ["cfCancelTask", "cfCancelTaskPut"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "422"]

[[operations]]
include-operation-id = "uaaToken"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401"]

# GoCD answers a current route without its media type in `Accept` with 404
# `The url you are trying to reach appears to be incorrect.`, not 4xx of
# another kind; the version route has no path parameter to excuse it.
[[operations]]
include-operation-id = "gocdVersion"
checks.missing_required_header.expected-statuses = ["404"]

# The routes of GoCD's pipeline and version APIs speak v1, not the stage
# API's v3.
[[operations]]
include-operation-id = ["gocdPipelineHistory", "gocdPipelineInstance", "gocdVersion"]
parameters = { "header.Accept" = { dictionary = "gocd_v1_media_types", probability = 0.8 } }

"#,
    );

    // The seeded values, drawn most of the time; generated ones otherwise.
    let numbers: Vec<&str> = data.counters.iter().map(String::as_str).collect();
    for (name, values) in [
        ("pipelines", data.pipelines.clone()),
        ("stages", data.stages.clone()),
        ("counters", numbers),
        ("offsets", vec!["0", "1", "10"]),
        (
            "guids",
            data.guids.iter().map(String::as_str).collect::<Vec<_>>(),
        ),
    ] {
        writeln!(
            c,
            "[dictionaries.{name}]\nvalues = {}\n",
            toml_list(&values)
        )
        .unwrap();
    }
    c.push_str(
        "[dictionaries.gocd_media_types]\nvalues = [\"application/vnd.go.cd.v3+json\", \"application/vnd.go.cd+json\"]\n\n",
    );
    c.push_str(
        "[dictionaries.gocd_v1_media_types]\nvalues = [\"application/vnd.go.cd.v1+json\", \"application/vnd.go.cd+json\"]\n\n",
    );
    writeln!(
        c,
        "[dictionaries.tokens]\nvalues = {}\n",
        toml_list(&[support::token(User::Viewer)])
    )
    .unwrap();
    c.push_str("[parameters]\n");
    for (key, dictionary) in [
        ("path.pipeline", "pipelines"),
        ("path.job_id", "pipelines"),
        ("path.app_guid", "pipelines"),
        ("query.siteId", "pipelines"),
        ("body.job_id", "pipelines"),
        ("body.site_id", "pipelines"),
        ("body.siteId", "pipelines"),
        ("path.stage", "stages"),
        ("path.pipeline_counter", "counters"),
        ("path.stage_counter", "counters"),
        ("path.counter", "counters"),
        ("path.offset", "offsets"),
        ("path.build_no", "counters"),
        ("path.build_number", "counters"),
        ("body.build_no", "counters"),
        ("path.guid", "guids"),
        ("body.refresh_token", "tokens"),
        ("header.Accept", "gocd_media_types"),
        ("body.package_ids[*]", "guids"),
        ("body.packageIds[*]", "guids"),
    ] {
        writeln!(
            c,
            "{} = {{ dictionary = {}, probability = 0.8 }}",
            toml_str(key),
            toml_str(dictionary)
        )
        .unwrap();
    }
    c
}

/// The sidecar's counts of 5xx answers, by route and code (the 503s of
/// `/readyz` while its cache was syncing among them).
async fn server_errors(http: &reqwest::Client, addr: std::net::SocketAddr) -> Vec<String> {
    let metrics = support::get_text(http, &format!("http://{addr}/metrics")).await;
    metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total") && l.contains("code=\"5"))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_seeded_data() {
    let venv = venv().await;
    let ns = TestNamespace::new("schemathesis").await;
    let users = UsersFile::new(&ns.name);
    let world::Served {
        ns,
        addr,
        http,
        tasks: _tasks,
    } = world::serve(ns, Some(&users.path)).await;

    // Two pipelines (also CodeArts jobs, Cloud Foundry apps and Studio
    // sites) with finished, failed and running instances, and a third whose
    // runs only task guids name. A cancelled run is still data every
    // operation answers about.
    let done = json!({"sim.cancel.dev/run-for": "1s"});
    let failed = json!({"sim.cancel.dev/run-for": "1s", "sim.cancel.dev/exit-code": "1"});
    let running = json!({"sim.cancel.dev/run-for": "1h"});
    let seeds = [
        (
            "web-1-build",
            ("web", 1, "build"),
            &done,
            StagePhase::Succeeded,
        ),
        (
            "web-1-test",
            ("web", 1, "test"),
            &failed,
            StagePhase::Failed,
        ),
        (
            "web-2-build",
            ("web", 2, "build"),
            &done,
            StagePhase::Succeeded,
        ),
        (
            "web-2-test",
            ("web", 2, "test"),
            &running,
            StagePhase::Running,
        ),
        (
            "web-3-build",
            ("web", 3, "build"),
            &running,
            StagePhase::Running,
        ),
        (
            "api-1-build",
            ("api", 1, "build"),
            &done,
            StagePhase::Succeeded,
        ),
        (
            "api-1-deploy",
            ("api", 1, "deploy"),
            &running,
            StagePhase::Running,
        ),
        (
            "api-2-build",
            ("api", 2, "build"),
            &running,
            StagePhase::Running,
        ),
        // Named by their task guids only: left for the Cloud Foundry cancels.
        (
            "tasks-1-run",
            ("tasks", 1, "run"),
            &running,
            StagePhase::Running,
        ),
        (
            "tasks-2-run",
            ("tasks", 2, "run"),
            &running,
            StagePhase::Running,
        ),
    ];
    let runs: Api<StageRun> = ns.api();
    for (name, key, sim, _) in &seeds {
        runs.create(
            &PostParams::default(),
            &seeded_run(name, *key, (*sim).clone()),
        )
        .await
        .unwrap();
    }
    let mut guids = Vec::new();
    for (name, _, _, want) in &seeds {
        let sr = wait_for(&runs, name, &format!("{name} {want:?}"), T, |sr| {
            sr.status.as_ref().and_then(|s| s.phase) == Some(*want)
        })
        .await;
        let uid = sr.uid().unwrap();
        let state = match want {
            StagePhase::Succeeded => "SUCCEEDED",
            StagePhase::Failed => "FAILED",
            _ => "RUNNING",
        };
        // The sidecar answers from its cache: wait until it shows the run so.
        world::wait_cached(&http, &format!("http://{addr}"), &uid, state).await;
        guids.push(uid);
    }
    let data = Seeded {
        pipelines: vec!["web", "api"],
        stages: vec!["build", "test", "deploy"],
        counters: vec!["1".into(), "2".into(), "3".into()],
        guids,
    };

    // The document the sidecar serves, from a file: loaded from its URL,
    // schemathesis would leave out the operation that serves it.
    let served = support::get_text(&http, &format!("http://{addr}/openapi.json")).await;
    assert_eq!(served, cancel_operator::sidecar::OPENAPI);
    let doc: Value = serde_json::from_str(&served).unwrap();
    let operations = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().keys())
        .filter(|k| *k != "parameters")
        .count();
    let dir = TempDir::new(&ns.name);
    std::fs::write(dir.0.join("openapi.json"), &served).expect("write openapi.json");
    std::fs::write(dir.0.join("schemathesis.toml"), config(addr, &data))
        .expect("write schemathesis.toml");
    let hooks = repo().join("tests/clients/schemathesis_hooks.py");
    let before = server_errors(&http, addr).await;
    let started = Instant::now();
    let out = {
        let (exe, cwd) = (venv.join("bin/schemathesis"), dir.0.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(exe)
                .arg("--no-color")
                .arg("--config-file")
                .arg(cwd.join("schemathesis.toml"))
                .args(["run", "openapi.json"])
                .args(["--checks", "all"])
                .current_dir(&cwd)
                .env("SCHEMATHESIS_HOOKS", hooks)
                .env("SCHEMATHESIS_AK", world::ACCESS_KEY)
                .env("SCHEMATHESIS_SK", world::SECRET_KEY)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .output()
        })
        .await
        .expect("schemathesis ran")
        .expect("start schemathesis")
    };
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("schemathesis took {elapsed:.1?}:\n{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "schemathesis failed ({}); replay with seed {SEED}",
        out.status
    );
    // Every operation was tested, with test cases that passed.
    assert!(
        stdout.contains(&format!("Tested: {operations}\n")),
        "not every one of the {operations} operations was tested"
    );
    let cases = stdout
        .lines()
        .skip_while(|l| l.trim() != "Test cases:")
        .nth(1)
        .unwrap_or_default();
    let generated: u64 = cases
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        generated > 0 && cases.contains(&format!("{generated} generated, {generated} passed")),
        "test cases: {cases}"
    );

    // Nothing the run did broke the data: every StageRun is still there,
    // and the sidecar still answers about every one of them.
    let left = runs.list(&ListParams::default()).await.unwrap();
    assert_eq!(left.items.len(), seeds.len());
    for guid in &data.guids {
        let r = http
            .get(format!("http://{addr}/v3/tasks/{guid}"))
            .bearer_auth(support::token(User::Admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "task {guid} after the run");
    }
    // The cancels of the run went through: CancelRequests were written.
    let requests: Api<CancelRequest> = ns.api();
    assert!(
        !requests
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the run wrote no CancelRequest"
    );
    // The seeded values reached the GoCD reads: each answered 200 at least
    // once, not only 404 for generated names.
    let metrics = support::get_text(&http, &format!("http://{addr}/metrics")).await;
    for route in [
        "gocd_history",
        "gocd_stage_instance_legacy",
        "gocd_stage_instance",
        "gocd_pipeline_history",
        "gocd_pipeline_instance_legacy",
        "gocd_pipeline_instance",
        "gocd_version",
        "gocd_about",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with("http_requests_total")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains("code=\"200\"")),
            "no 200 from {route} during the run"
        );
    }
    // And the sidecar answered no request of the run with a 5xx.
    assert_eq!(
        server_errors(&http, addr).await,
        before,
        "5xx answers during the run"
    );
}
