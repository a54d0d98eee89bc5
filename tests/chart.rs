//! The Helm chart: it lints, its objects are accepted by the API server, and
//! its RBAC is enough — and no more than enough — for the controller and the
//! sidecar, which are run here with the chart's ServiceAccount token.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cancel_operator::controller;
use cancel_operator::crd::{CancelRequest, RunResult, StagePhase, StageRun};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use support::{TestNamespace, User, wait_for, world};

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/cancel-operator")
}

fn tool(name: &str) -> Command {
    let mut cmd = Command::new(support::cluster_dir().join("bin").join(name));
    cmd.env("KUBECONFIG", support::kubeconfig_path(User::Admin));
    cmd
}

fn run(mut cmd: Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_chart_lints() {
    let mut cmd = tool("helm");
    cmd.args(["lint", "--strict"]).arg(chart());
    run(cmd);
}

#[tokio::test]
async fn the_api_server_accepts_every_rendered_object() {
    let ns = TestNamespace::new("chart-render").await;
    for extra in [
        &[][..],
        &[
            "--set",
            "serviceMonitor.enabled=false",
            "--set",
            "sidecar.usersSecret=users",
            "--set",
            "sidecar.namespaces={a,b}",
        ][..],
        &[
            "--set",
            "sidecar.enabled=false",
            "--set",
            "requestedByPolicy.enabled=false",
        ][..],
        &["--set", "replicaCount=2"][..],
    ] {
        let mut template = tool("helm");
        template
            .args([
                "template",
                "rel",
                "--namespace",
                &ns.name,
                "--kube-version",
                "1.35.8",
                "--include-crds",
            ])
            .arg(chart())
            .args(extra);
        let rendered = run(template);
        let path = std::env::temp_dir().join(format!("{}-rendered.yaml", ns.name));
        std::fs::write(&path, &rendered).expect("write rendered chart");
        let mut apply = tool("kubectl");
        apply
            .args(["apply", "--dry-run=server", "-n", &ns.name, "-f"])
            .arg(&path);
        let out = run(apply);
        assert!(
            out.contains("deployment.apps/rel-cancel-operator created (server dry run)"),
            "{out}"
        );
        // A disruption budget only when there is more than one replica.
        let pdb = out.contains("poddisruptionbudget.policy/rel-cancel-operator created");
        assert_eq!(pdb, extra.contains(&"replicaCount=2"), "{out}");
    }
    // Values are checked against values.schema.json.
    let mut bad = tool("helm");
    bad.args(["template", "rel", "--kube-version", "1.35.8"])
        .arg(chart())
        .args(["--set", "replicaCount=-1"]);
    let out = bad.output().expect("helm");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("replicaCount"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client authenticated as a ServiceAccount, through a token request.
async fn client_as_service_account(admin: &Client, ns: &str, name: &str) -> Client {
    let tr = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(
            name,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(3600),
                    ..TokenRequestSpec::default()
                },
                ..TokenRequest::default()
            },
        )
        .await
        .expect("token request");
    let token = tr.status.expect("token").token;
    let text = std::fs::read_to_string(support::kubeconfig_path(User::Admin)).expect("kubeconfig");
    let mut kc: serde_json::Value = yaml_serde::from_str(&text).expect("parse kubeconfig");
    kc["users"][0]["user"] = json!({ "token": token });
    let kc = Kubeconfig::from_yaml(&yaml_serde::to_string(&kc).expect("yaml")).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

async fn allowed(
    admin: &Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    ns: &str,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: Some(ns.into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("review")
        .status
        .is_some_and(|s| s.allowed)
}

fn stagerun(name: &str) -> StageRun {
    serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun", "metadata": {"name": name},
        "spec": {"pipeline": "demo_pipeline", "pipelineCounter": 1, "stage": "first_stage",
                 "jobs": [{"name": "first_job", "template": {
                     "metadata": {"annotations": {"sim.cancel.dev/run-for": "1h"}},
                     "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}]}
    }))
    .expect("stagerun")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_rbac_is_enough_for_the_controller_and_sidecar_and_no_more() {
    let release = TestNamespace::new("chart-install").await;
    let work = TestNamespace::new("chart-work").await;
    support::install_crds(&release.client).await;
    let name = release.name.clone();
    let mut install = tool("helm");
    install
        .args(["install", &name, "--namespace", &name, "--wait", "--timeout", "120s"])
        .args(["--set", &format!("requestedByPolicy.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={}", work.name)])
        .arg(chart());
    run(install);
    let uninstall = Uninstall(name.clone());

    let admin = release.client.clone();
    let fullname = format!("{name}-cancel-operator");
    let sa_user = format!("system:serviceaccount:{name}:{fullname}");
    // Least privilege: what it must not do.
    for (verb, group, resource) in [
        ("list", "", "secrets"),
        ("delete", "cancel.dev", "stageruns"),
        ("update", "cancel.dev", "stageruns"),
        ("create", "", "pods"),
        ("patch", "batch", "jobs"),
    ] {
        assert!(
            !allowed(&admin, &sa_user, verb, group, resource, &work.name).await,
            "{verb} {resource} must be refused"
        );
    }

    // The controller, as the chart's ServiceAccount, runs and cancels a stage.
    let sa_client = client_as_service_account(&admin, &name, &fullname).await;
    let ctl = tokio::spawn(controller::run(
        sa_client.clone(),
        controller::Config {
            namespace: Some(work.name.clone()),
            state_namespace: name.clone(),
            id_configmap: format!("{fullname}-ids"),
            force_margin: Duration::from_secs(1),
            // As the chart runs it, so that the Lease rules are exercised too.
            leader_election: Some(controller::LeaderElection {
                lease_name: format!("{fullname}-controller"),
                identity: "chart-test".into(),
                lease_duration: Duration::from_secs(15),
            }),
            metrics_address: None,
            concurrency: controller::DEFAULT_CONCURRENCY,
        },
    ));
    let runs: Api<StageRun> = work.api();
    runs.create(&PostParams::default(), &stagerun("demo-1"))
        .await
        .unwrap();
    wait_for(
        &runs,
        "demo-1",
        "Running",
        Duration::from_secs(60),
        |r: &StageRun| r.status.as_ref().and_then(|s| s.phase) == Some(StagePhase::Running),
    )
    .await;

    // The sidecar, as the same ServiceAccount, takes a GoCD cancel from `operator`.
    world::grant(
        &work,
        "canceller",
        json!({"apiGroups": ["cancel.dev"], "resources": ["cancelrequests", "stageruns"], "verbs": ["create", "list", "get"]}),
        &["operator"],
    )
    .await;
    let (addr, _server) = world::spawn_sidecar(
        sa_client.clone(),
        &work.name,
        None,
        Duration::from_millis(200),
    )
    .await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let token = support::token(User::Operator);
    let url = format!("{base}/go/api/stages/demo_pipeline/first_stage/cancel");
    let body = support::eventually(
        "the GoCD cancel to be accepted",
        Duration::from_secs(60),
        || async {
            let r = http
                .post(&url)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let text = r.text().await.map_err(|e| e.to_string())?;
            if status == 200 {
                Ok(text)
            } else {
                Err(format!("{status}: {text}"))
            }
        },
    )
    .await;
    assert_eq!(body, "Stage cancelled successfully.");
    let done = wait_for(
        &runs,
        "demo-1",
        "Failed",
        Duration::from_secs(60),
        |r: &StageRun| r.status.as_ref().and_then(|s| s.phase) == Some(StagePhase::Failed),
    )
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.result, Some(RunResult::Cancelled));
    assert_eq!(status.cancel.unwrap().requested_by, "operator");
    ctl.abort();

    // The policy keeps requestedBy truthful for everyone but the sidecar.
    let request = |who: &str, name: &str| -> CancelRequest {
        serde_json::from_value(json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest", "metadata": {"name": name},
            "spec": {"target": {"stageRun": "demo-1"}, "requestedBy": who}
        }))
        .unwrap()
    };
    let as_operator: Api<CancelRequest> =
        Api::namespaced(support::client(User::Operator).await, &work.name);
    let message = support::eventually(
        "the policy to refuse a false requestedBy",
        Duration::from_secs(60),
        || async {
            match as_operator
                .create(&PostParams::default(), &request("alice", "lie"))
                .await
            {
                Err(kube::Error::Api(s)) if s.message.contains("spec.requestedBy") => Ok(s.message),
                Err(e) => Err(e.to_string()),
                Ok(_) => {
                    let _ = as_operator.delete("lie", &Default::default()).await;
                    Err("accepted".into())
                }
            }
        },
    )
    .await;
    assert!(
        message.contains("must be your own username, operator, not alice"),
        "{message}"
    );
    as_operator
        .create(&PostParams::default(), &request("operator", "truthful"))
        .await
        .expect("own name is accepted");
    let as_sa: Api<CancelRequest> = Api::namespaced(sa_client, &work.name);
    as_sa
        .create(&PostParams::default(), &request("alice", "on-behalf"))
        .await
        .expect("the sidecar may name its caller");
    drop(uninstall);
}

/// Uninstalls the release (its cluster-scoped objects outlive namespaces).
struct Uninstall(String);

impl Drop for Uninstall {
    fn drop(&mut self) {
        let mut cmd = tool("helm");
        cmd.args(["uninstall", &self.0, "--namespace", &self.0, "--wait"]);
        let _ = cmd.output();
    }
}
