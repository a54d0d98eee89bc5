//! The Helm chart installed for real: the image built by `make image`, run as
//! pods on a real node of the test control plane (`cluster.sh node up`: a
//! kubelet, containerd and runc), in a namespace that enforces the
//! `restricted` Pod Security level. Through the REST API's pods: the API
//! documents' curl examples, cancels of running StageRuns (whose Jobs' pods
//! stay on the kwok node), `kubectl cancel`; the admission policies (a false
//! requestedBy refused, a missing one filled by `kubectl apply`); `helm
//! upgrade` to two replicas handing leadership over; a password rotated in the
//! users Secret; `helm test`; `helm uninstall` leaving nothing of the release;
//! and `cluster.sh node down` leaving the machine as it found it.
//!
//! The node needs root, Debian's containerd, runc, CNI plugins and iptables
//! (which `cluster.sh node up` installs with apt-get when missing): where it
//! cannot run, this test fails and says why.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cancel_operator::crd::{CancelRequest, RunResult, StagePhase, StageRun};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::world::{self, PASSWORD};
use support::{TestNamespace, User, eventually, stage_run, wait_for};

const T: Duration = Duration::from_secs(90);
/// The node `cluster.sh node up` joins, and the kwok node.
const NODE: &str = "node-0";
const KWOK_NODE: &str = "kwok-node-0";
/// The documented CodeArts build task id.
const DOCUMENTED_JOB: &str = "f9d6c8466d614a9788e9a0acf6c15f46";
const ROTATED_PASSWORD: &str = "badger-rotated";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn output(mut cmd: Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command to success; its standard output.
fn run(cmd: Command) -> String {
    let what = format!("{cmd:?}");
    let out = output(cmd);
    assert!(out.status.success(), "{what} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cluster.sh ARGS` on this test run's control plane.
fn cluster(args: &[&str]) -> Command {
    let mut cmd = Command::new(root().join("tests/cluster/cluster.sh"));
    cmd.args(args)
        .env("CANCEL_OPERATOR_CLUSTER_LINK", support::cluster_dir());
    cmd
}

/// A control-plane tool (helm, kubectl) as admin.
fn tool(name: &str) -> Command {
    support::tool_as(name, User::Admin)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

/// The archive `make image` writes, named after the chart's appVersion.
fn image_archive() -> PathBuf {
    let chart = std::fs::read_to_string(root().join("charts/cancel-operator/Chart.yaml"))
        .expect("Chart.yaml");
    let version = chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .expect("appVersion")
        .trim()
        .trim_matches('"')
        .to_string();
    let path = root().join(format!("target/image/cancel-operator-{version}.oci.tar"));
    assert!(
        path.exists(),
        "{} is missing: build the image with `make image` (tests/run-tests.sh does)",
        path.display()
    );
    path
}

/// The real node; `node down` when dropped (also when the test fails).
struct Node {
    down: bool,
}

impl Node {
    fn up() -> Node {
        let out = output(cluster(&["node", "up"]));
        let node = Node { down: false };
        assert!(
            out.status.success(),
            "`cluster.sh node up` failed: the chart's pods need a real node (root, cgroups, \
             containerd, runc, CNI plugins, iptables):\n{}",
            text(&out)
        );
        node
    }

    fn down(&mut self) {
        self.down = true;
        run(cluster(&["node", "down"]));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !self.down {
            let _ = cluster(&["node", "down"]).output();
        }
    }
}

fn node_state() -> String {
    run(cluster(&["node", "state"]))
}

/// True for a line of `node state` that says nothing of the node: a built-in
/// iptables chain's default policy, there as soon as the kernel has the table
/// (on a machine where iptables was never used, the node's first use of it
/// brings every table in with its defaults).
fn kernel_default(line: &str) -> bool {
    let mut words = line.split(' ');
    matches!(
        (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next()
        ),
        (
            Some("iptables" | "ip6tables"),
            Some(_),
            Some("-P"),
            Some(_),
            Some("ACCEPT"),
            None
        )
    )
}

/// What the node itself left changed between two states: lines that differ,
/// marked - (before) and + (after), the kernel's defaults aside. Empty when
/// the node left nothing.
fn state_diff(before: &str, after: &str) -> String {
    let b: Vec<&str> = before.lines().filter(|l| !kernel_default(l)).collect();
    let a: Vec<&str> = after.lines().filter(|l| !kernel_default(l)).collect();
    let mut out = String::new();
    for l in &b {
        if !a.contains(l) {
            out += &format!("- {l}\n");
        }
    }
    for l in &a {
        if !b.contains(l) {
            out += &format!("+ {l}\n");
        }
    }
    out
}

/// A documented curl command line, run through the shell as a reader would
/// paste it; `-sS -w` only add the status code to the output.
async fn curl(command: String) -> (u16, String) {
    let line = format!("{command} -sS -w '\\n%{{http_code}}'");
    let out = blocking(move || {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&line)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY");
        output(cmd)
    })
    .await;
    assert!(out.status.success(), "{command}: {}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (body, code) = stdout.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

fn stagerun(name: &str, of: (&str, i64, &str), job: &str, run_for: &str) -> StageRun {
    stage_run(name)
        .of(of)
        .job(job, json!({"sim.cancel.dev/run-for": run_for}))
        .build()
}

fn phase(sr: &StageRun) -> Option<StagePhase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

async fn wait_phase(runs: &Api<StageRun>, name: &str, want: StagePhase) -> StageRun {
    wait_for(runs, name, &format!("{name} to be {want:?}"), T, |sr| {
        phase(sr) == Some(want)
    })
    .await
}

async fn wait_cancelled(runs: &Api<StageRun>, name: &str) -> StageRun {
    let sr = wait_phase(runs, name, StagePhase::Failed).await;
    assert_eq!(
        sr.status.as_ref().and_then(|s| s.result),
        Some(RunResult::Cancelled),
        "{name}"
    );
    sr
}

/// Waits until every REST API pod shows the StageRun (a Cloud Foundry task)
/// in `state`: each has it in its cache before it is asked to cancel it.
async fn wait_cached(bases: &[String], sr: &StageRun, state: &str) {
    for base in bases {
        world::wait_cached(&http(), base, &sr.uid().unwrap(), state).await;
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The users file of the API documents: admin (Kubernetes user gocd-admin)
/// and jez.
fn users_yaml(admin_password: &str) -> String {
    let admin = bcrypt::hash(admin_password, 4).expect("bcrypt");
    let jez = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    format!(
        "users:\n- name: admin\n  passwordHash: \"{admin}\"\n  username: gocd-admin\n- name: jez\n  passwordHash: \"{jez}\"\n  username: jez\n"
    )
}

fn users_secret(admin_password: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": "users"},
        "stringData": {"users.yaml": users_yaml(admin_password)}
    }))
    .expect("secret")
}

async fn release_pods(pods: &Api<Pod>, release: &str, component: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={release},app.kubernetes.io/component={component}"
    ));
    pods.list(&lp).await.expect("list pods").items
}

fn ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// The REST API's base URLs, one per ready pod (by pod IP: the host routes to
/// the node's pod network).
async fn sidecar_bases(pods: &Api<Pod>, release: &str) -> Vec<String> {
    release_pods(pods, release, "sidecar")
        .await
        .iter()
        .filter(|p| ready(p))
        .map(|p| {
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .expect("pod IP");
            format!("http://{ip}:8153")
        })
        .collect()
}

/// Every pod of the release runs on the real node, ready, never restarted.
async fn assert_on_the_node(pods: &Api<Pod>, release: &str, component: &str, want: usize) {
    let lp =
        format!("app.kubernetes.io/instance={release},app.kubernetes.io/component={component}");
    let found = support::wait_list(
        pods,
        &ListParams::default().labels(&lp),
        &format!("{want} ready {component} pods"),
        T,
        |items: &[Pod]| items.len() == want && items.iter().all(ready),
    )
    .await;
    for p in &found {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        assert_eq!(node.as_deref(), Some(NODE), "{}", p.name_any());
        assert_eq!(restarts(p), 0, "{} restarted", p.name_any());
    }
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_on_a_real_node() {
    let started = Instant::now();
    let image = image_archive();
    let before = node_state();

    // --- the node, and the image in its containerd ---------------------------
    let t = Instant::now();
    let mut node = blocking(Node::up).await;
    let node_up = t.elapsed();
    run(cluster(&["node", "import", image.to_str().unwrap()]));

    let ns = TestNamespace::new("e2e").await;
    let release = ns.name.clone();
    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    namespaces
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest"
            }}})),
        )
        .await
        .expect("label the namespace restricted");
    // The StageRuns, their Jobs' pods (which need no restricted level) and
    // the cancels live in a namespace of their own.
    let work = TestNamespace::new("e2e-work").await;
    world::grant_readers_and_cancellers(&work).await;
    world::grant(
        &work,
        "cancelrequest-watcher",
        json!({"apiGroups": ["cancel.dev"], "resources": ["cancelrequests"], "verbs": ["get", "list", "watch"]}),
        &["operator"],
    )
    .await;
    let secrets: Api<Secret> = ns.api();
    secrets
        .create(&PostParams::default(), &users_secret(PASSWORD))
        .await
        .expect("create the users Secret");

    // --- helm install --wait ------------------------------------------------
    let values = [
        "controller.watch.mode=namespaces".to_string(),
        // The REST APIs serve the watched namespaces.
        format!("controller.watch.namespaces={{{}}}", work.name),
        "sidecar.usersSecret=users".to_string(),
        "sidecar.authCacheSeconds=1".to_string(),
        r"nodeSelector.cancel\.dev/node=real".to_string(),
        "tolerations[0].key=cancel.dev/node".to_string(),
        "tolerations[0].operator=Exists".to_string(),
        "tolerations[0].effect=NoSchedule".to_string(),
        format!(
            r"requestedByPolicy.namespaceSelector.matchLabels.kubernetes\.io/metadata\.name={}",
            work.name
        ),
    ];
    let mut install = tool("helm");
    install
        .args([
            "install",
            &release,
            "--namespace",
            &release,
            "--wait",
            "--timeout",
            "120s",
        ])
        .arg(root().join("charts/cancel-operator"));
    for v in &values {
        install.args(["--set", v]);
    }
    let t = Instant::now();
    blocking(move || run(install)).await;
    let helm_install = t.elapsed();

    let pods: Api<Pod> = ns.api();
    assert_on_the_node(&pods, &release, "controller", 1).await;
    assert_on_the_node(&pods, &release, "sidecar", 1).await;
    let bases = sidecar_bases(&pods, &release).await;
    assert_eq!(bases.len(), 1);
    let host = bases[0].clone();

    // --- the documented examples, through the REST API's pod ------------------
    let runs: Api<StageRun> = work.api();
    let create = |sr: StageRun| {
        let runs = runs.clone();
        async move {
            runs.create(&PostParams::default(), &sr)
                .await
                .unwrap_or_else(|e| panic!("create {}: {e}", sr.name_any()))
        }
    };
    create(stagerun("foo-1-dev", ("foo", 1, "DEV"), "UnitTest", "1s")).await;
    create(stagerun(
        "demo-pipeline-1-first-stage",
        ("demo_pipeline", 1, "first_stage"),
        "first_job",
        "1h",
    ))
    .await;
    create(stagerun(
        "build-20",
        (DOCUMENTED_JOB, 20, "build"),
        "compile",
        "1h",
    ))
    .await;
    create(stagerun(
        "mysite-1",
        ("mysite", 1, "publish"),
        "deploy",
        "1h",
    ))
    .await;
    create(stagerun("task", ("app", 1, "tasks"), "migrate", "1h")).await;
    create(stagerun("foo-3-dev", ("foo", 3, "DEV"), "UnitTest", "1h")).await;
    let mut running = Vec::new();
    for name in [
        "demo-pipeline-1-first-stage",
        "build-20",
        "mysite-1",
        "task",
        "foo-3-dev",
    ] {
        let sr = wait_phase(&runs, name, StagePhase::Running).await;
        wait_cached(&bases, &sr, "RUNNING").await;
        running.push(sr);
    }
    let foo_1 = wait_phase(&runs, "foo-1-dev", StagePhase::Succeeded).await;
    wait_cached(&bases, &foo_1, "SUCCEEDED").await;
    // The stages' Jobs ran their pods on the kwok node, none on the real one.
    let job_pods = work
        .api::<Pod>()
        .list(&ListParams::default())
        .await
        .expect("list the Jobs' pods");
    assert!(!job_pods.items.is_empty());
    for p in &job_pods.items {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        assert_eq!(node.as_deref(), Some(KWOK_NODE), "{}", p.name_any());
    }

    let (code, body) = curl(format!(
        "curl -u jez:badger -d \"\" {host}/go/api/stages/demo_pipeline/first_stage/cancel"
    ))
    .await;
    assert_eq!(
        (code, body.as_str()),
        (200, "Stage cancelled successfully.")
    );
    let sr = wait_cancelled(&runs, "demo-pipeline-1-first-stage").await;
    assert_eq!(sr.status.unwrap().cancel.unwrap().requested_by, "jez");

    let (code, body) = curl(format!(
        "curl -u admin:badger {host}/go/api/stages/foo/DEV/history/0"
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    let history: Value = serde_json::from_str(&body).expect("history JSON");
    assert_eq!(history["stages"][0]["pipeline_name"], "foo", "{history}");

    let operator = support::token(User::Operator);
    let (code, body) = curl(format!(
        "curl -X POST -H 'X-Auth-Token: {operator}' -H 'Content-Type: application/json' -d '{{\n  \"job_id\" : \"{DOCUMENTED_JOB}\",\n  \"build_no\" : \"20\"\n}}' {host}/v3/jobs/stop"
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"result": true})
    );
    wait_cancelled(&runs, "build-20").await;

    let package = running[2].uid().unwrap();
    let (code, body) = curl(format!(
        "curl -X POST -H 'Authorization: Bearer {operator}' -H 'Content-Type: application/json' -d '{{\"site_id\" : \"mysite\", \"package_ids\" : [\"{package}\"]}}' {host}/api/1/services/api/1/publish/cancel-publish-requests.json"
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"message": "OK"})
    );
    wait_cancelled(&runs, "mysite-1").await;

    let task = running[3].uid().unwrap();
    let (code, body) = curl(format!(
        "curl -X POST -H 'Authorization: bearer {operator}' {host}/v3/tasks/{task}/actions/cancel"
    ))
    .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        "CANCELING"
    );
    wait_cancelled(&runs, "task").await;

    // --- kubectl cancel, as operator ------------------------------------------
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-cancel"))
        .parent()
        .expect("plugin directory")
        .to_path_buf();
    let mut kubectl_cancel = Command::new(support::cluster_dir().join("bin/kubectl"));
    kubectl_cancel
        .args([
            "cancel",
            "stagerun",
            "foo-3-dev",
            "--reason",
            "on a real node",
            "--wait",
        ])
        .args(["-n", &work.name])
        .env("KUBECONFIG", support::kubeconfig_path(User::Operator))
        .env(
            "PATH",
            format!(
                "{}:{}",
                plugin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    let printed = blocking(move || run(kubectl_cancel)).await;
    assert!(
        printed.contains("stagerun.cancel.dev/foo-3-dev Cancelled"),
        "{printed}"
    );
    let sr = wait_cancelled(&runs, "foo-3-dev").await;
    assert_eq!(sr.status.unwrap().cancel.unwrap().requested_by, "operator");

    // --- the admission policy refuses a spoofed requestedBy --------------------
    let as_operator: Api<CancelRequest> =
        Api::namespaced(support::client(User::Operator).await, &work.name);
    let spoof: CancelRequest = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest",
        "metadata": {"name": "spoofed"},
        "spec": {"target": {"stageRun": "foo-1-dev"}, "requestedBy": "alice"}
    }))
    .unwrap();
    match as_operator.create(&PostParams::default(), &spoof).await {
        Err(kube::Error::Api(s)) => {
            assert!(
                s.message
                    .contains("spec.requestedBy must be your own username"),
                "{s:?}"
            )
        }
        other => panic!("a CancelRequest naming alice, created by operator: {other:?}"),
    }
    // ...and fills an empty one with the creating user: `kubectl apply`
    // without requestedBy records who cancelled.
    let apply = support::kubectl_apply(
        User::Operator,
        &work.name,
        "plain",
        "apiVersion: cancel.dev/v1alpha1\nkind: CancelRequest\nmetadata: {name: plain}\nspec: {target: {stageRun: foo-1-dev}}\n",
    );
    let applied = blocking(move || run(apply)).await;
    assert!(
        applied.contains("cancelrequest.cancel.dev/plain created"),
        "{applied}"
    );
    let plain = as_operator.get("plain").await.expect("get plain");
    assert_eq!(plain.spec.requested_by, "operator");

    // --- helm upgrade to two replicas: leadership handed over ------------------
    let leases: Api<Lease> = ns.api();
    let lease_name = format!("{release}-cancel-operator-controller");
    let old_leader = eventually("the controller to hold its Lease", T, || {
        let leases = leases.clone();
        let name = lease_name.clone();
        async move {
            let lease = leases.get(&name).await.map_err(|e| e.to_string())?;
            holder(&lease).ok_or_else(|| "no holder".to_string())
        }
    })
    .await;
    // Watch, every 50 ms, when the leader's pod is told to stop and when
    // another instance holds the Lease.
    let seen = Arc::new(Mutex::new((None::<Instant>, None::<(Instant, String)>)));
    let watcher = {
        let (pods, leases, seen) = (pods.clone(), leases.clone(), seen.clone());
        let (old, lease_name) = (old_leader.clone(), lease_name.clone());
        tokio::spawn(async move {
            loop {
                let stopping = match pods.get_opt(&old).await {
                    Ok(Some(p)) => p.metadata.deletion_timestamp.is_some(),
                    Ok(None) => true,
                    Err(_) => false,
                };
                let now = Instant::now();
                if stopping {
                    seen.lock().unwrap().0.get_or_insert(now);
                }
                if let Ok(lease) = leases.get(&lease_name).await
                    && let Some(h) = holder(&lease)
                    && h != old
                {
                    seen.lock().unwrap().1.get_or_insert((now, h));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut upgrade = tool("helm");
    upgrade
        .args([
            "upgrade",
            &release,
            "--namespace",
            &release,
            "--reuse-values",
            "--wait",
        ])
        .args(["--timeout", "120s", "--set", "replicaCount=2"])
        // A new pod template, so that the Deployments roll their pods as an
        // upgrade to a new version does.
        .args(["--set-string", r"podAnnotations.cancel\.dev/rollout=2"])
        .arg(root().join("charts/cancel-operator"));
    blocking(move || run(upgrade)).await;
    tokio::time::timeout(T, watcher)
        .await
        .expect("a new leader in time")
        .expect("lease watcher");
    let (stopped, (acquired, new_leader)) = {
        let s = seen.lock().unwrap();
        (s.0.expect("the old leader stopped"), s.1.clone().unwrap())
    };
    let gap = acquired.saturating_duration_since(stopped);
    // Recorded, not asserted at once, so that the checks after it still run.
    let mut failures = Vec::new();
    if gap > Duration::from_secs(3) {
        failures.push(format!(
            "{new_leader} took the Lease {gap:?} after {old_leader} was told to stop"
        ));
    }
    assert_on_the_node(&pods, &release, "controller", 2).await;
    assert_on_the_node(&pods, &release, "sidecar", 2).await;
    let bases = sidecar_bases(&pods, &release).await;
    assert_eq!(bases.len(), 2);

    // --- a password rotated in the users Secret takes effect without a restart --
    let sidecars_before: Vec<(String, i32)> = release_pods(&pods, &release, "sidecar")
        .await
        .iter()
        .map(|p| (p.uid().unwrap(), restarts(p)))
        .collect();
    secrets
        .replace("users", &PostParams::default(), &{
            let mut s = users_secret(ROTATED_PASSWORD);
            s.metadata.resource_version = secrets.get("users").await.unwrap().resource_version();
            s
        })
        .await
        .expect("rotate the password");
    let t = Instant::now();
    for base in &bases {
        let url = format!("{base}/go/api/stages/foo/DEV/history/0");
        eventually(&format!("{base} to take the new password"), T, || {
            let url = url.clone();
            async move {
                let new = http()
                    .get(&url)
                    .basic_auth("admin", Some(ROTATED_PASSWORD))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .status();
                let old = http()
                    .get(&url)
                    .basic_auth("admin", Some(PASSWORD))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .status();
                if new == 200 && old == 401 {
                    Ok(())
                } else {
                    Err(format!("new password: {new}, old password: {old}"))
                }
            }
        })
        .await;
    }
    let rotation = t.elapsed();
    let sidecars_after: Vec<(String, i32)> = release_pods(&pods, &release, "sidecar")
        .await
        .iter()
        .map(|p| (p.uid().unwrap(), restarts(p)))
        .collect();
    assert_eq!(
        sidecars_after, sidecars_before,
        "the sidecar pods were restarted"
    );

    // --- helm test ---------------------------------------------------------------
    let mut helm_test = tool("helm");
    helm_test.args([
        "test",
        &release,
        "--namespace",
        &release,
        "--timeout",
        "90s",
    ]);
    let printed = blocking(move || run(helm_test)).await;
    let phases: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Phase:"))
        .map(str::trim)
        .collect();
    assert!(
        !phases.is_empty() && phases.iter().all(|p| *p == "Succeeded"),
        "{printed}"
    );

    // --- helm uninstall leaves no object of the release ---------------------------
    let mut uninstall = tool("helm");
    uninstall.args([
        "uninstall",
        &release,
        "--namespace",
        &release,
        "--wait",
        "--timeout",
        "90s",
    ]);
    blocking(move || run(uninstall)).await;
    let mut kinds = tool("kubectl");
    kinds.args(["api-resources", "--verbs=list", "-o", "name"]);
    let kinds = blocking(move || run(kinds)).await;
    let kinds: Vec<&str> = kinds
        .lines()
        .filter(|k| !k.is_empty() && *k != "events" && *k != "events.events.k8s.io")
        .collect();
    // Pods go once they have stopped (helm waits for the Deployments only).
    let kind_list = kinds.join(",");
    let selector = format!("--selector=app.kubernetes.io/instance={release}");
    eventually(
        "no object of the release left after helm uninstall",
        T,
        || {
            let mut left = tool("kubectl");
            left.args(["get", &kind_list, "--all-namespaces", "-o", "name"])
                .arg(&selector);
            async move {
                let left = blocking(move || run(left)).await;
                if left.trim().is_empty() {
                    Ok(())
                } else {
                    Err(left)
                }
            }
        },
    )
    .await;
    let mut named = tool("kubectl");
    named.args([
        "get",
        &kinds.join(","),
        "--namespace",
        &release,
        "-o",
        "name",
    ]);
    let named = blocking(move || run(named)).await;
    let fullname = format!("{release}-cancel-operator");
    let left: Vec<&str> = named.lines().filter(|l| l.contains(&fullname)).collect();
    assert!(
        left.is_empty(),
        "objects named after the release left: {left:?}"
    );

    // --- the node goes, and the machine is as it was -----------------------------
    drop(ns);
    drop(work);
    let t = Instant::now();
    blocking(move || {
        node.down();
        node
    })
    .await;
    let node_down = t.elapsed();
    let after = node_state();
    let changed = state_diff(&before, &after);
    assert!(
        changed.is_empty(),
        "`cluster.sh node down` left the machine changed:\n{changed}"
    );
    eprintln!(
        "node up {node_up:?}; helm install --wait {helm_install:?}; leadership gap {gap:?}; \
         password rotation {rotation:?}; node down {node_down:?}; whole test {:?}",
        started.elapsed()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A machine where iptables was never used: before the node, no table at all;
/// after it, every table with its default policies. Only what the node adds
/// (a chain, a rule, a policy of its own) counts.
#[test]
fn the_node_is_judged_by_what_it_leaves_not_by_the_kernels_tables() {
    let before = "# links\nlo\n# iptables\n# mounts\nproc /proc\n";
    let mut defaults = String::new();
    for cmd in ["iptables", "ip6tables"] {
        for (table, chains) in [
            ("filter", &["INPUT", "FORWARD", "OUTPUT"][..]),
            ("nat", &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"][..]),
            (
                "mangle",
                &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"][..],
            ),
            ("raw", &["PREROUTING", "OUTPUT"][..]),
        ] {
            for chain in chains {
                defaults += &format!("{cmd} {table} -P {chain} ACCEPT\n");
            }
        }
    }
    let with_tables =
        |extra: &str| format!("# links\nlo\n# iptables\n{defaults}{extra}# mounts\nproc /proc\n");
    assert_eq!(state_diff(before, &with_tables("")), "");
    assert_eq!(state_diff(&with_tables(""), before), "");

    // What the node would leave behind is still seen, whatever was there before.
    for left in [
        "iptables nat -N KUBE-MARK-DROP\n",
        "iptables nat -A OUTPUT -d 10.0.0.1/32 -j DNAT --to-destination 127.0.0.1:6443\n",
        "iptables filter -P FORWARD DROP\n",
        "ip6tables filter -N KUBE-FIREWALL\n",
    ] {
        let diff = state_diff(before, &with_tables(left));
        assert_eq!(diff, format!("+ {left}"));
    }
    assert_eq!(
        state_diff(
            before,
            "# links\nlo\ncancel-node0\n# iptables\n# mounts\nproc /proc\n"
        ),
        "+ cancel-node0\n"
    );
}
