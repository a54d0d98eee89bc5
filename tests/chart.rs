//! The Helm chart: it lints, its objects are accepted by the API server, and
//! each process has a ServiceAccount of its own whose rights are enough — and
//! no more than enough: the controller and the sidecar are run here with
//! their accounts' tokens, and each account's rights are listed exactly.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cancel_operator::controller;
use cancel_operator::crd::{CancelRequest, RunResult, StagePhase, StageRun};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectRulesReview, SelfSubjectRulesReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use support::{TestNamespace, User, stage_run, wait_for, world};

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/cancel-operator")
}

fn tool(name: &str) -> Command {
    support::tool_as(name, User::Admin)
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
    for mode in [
        &["--set", "controller.watch.mode=cluster"][..],
        &[
            "--set",
            "controller.watch.mode=namespaces",
            "--set",
            "controller.watch.namespaces={ci,nightly}",
        ][..],
    ] {
        let mut cmd = tool("helm");
        cmd.args(["lint", "--strict"]).arg(chart()).args(mode);
        run(cmd);
    }
}

/// Where the controller works is a choice the install makes: no default,
/// and a list of namespaces only with the mode that uses it.
#[test]
fn the_watched_namespaces_are_an_explicit_choice() {
    for (values, says) in [
        (&[][..], "missing property 'mode'"),
        (
            &["controller.watch.mode=all"][..],
            "'cluster', 'namespaces'",
        ),
        (&["controller.watch.mode=namespaces"][..], "minItems"),
        (
            &[
                "controller.watch.mode=cluster",
                "controller.watch.namespaces={ci}",
            ][..],
            "maxItems",
        ),
    ] {
        let mut template = tool("helm");
        template
            .args(["template", "rel", "--kube-version", "1.35.8"])
            .arg(chart());
        for v in values {
            template.args(["--set", v]);
        }
        let out = template.output().expect("helm");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{values:?} accepted");
        assert!(
            stderr.contains("/controller/watch") && stderr.contains(says),
            "{values:?}: {stderr}"
        );
    }
}

/// One template of the chart rendered with `values` (watching the cluster).
fn render(values: &[&str], template: &str) -> String {
    let mut cmd = tool("helm");
    cmd.args(["template", "rel", "--kube-version", "1.35.8"])
        .arg(chart())
        .args(["--set", "controller.watch.mode=cluster"])
        .args(["--show-only", template]);
    for v in values {
        cmd.args(["--set", v]);
    }
    run(cmd)
}

/// With an archive, both processes take its URL from the Secret (never
/// from a value in the chart), the controller with its retention; without
/// one, neither knows of a database.
#[test]
fn the_archive_url_reaches_both_processes_from_its_secret() {
    let archived = [
        "controller.archive.urlSecret=archive-db",
        "controller.archive.poolSize=3",
        "sidecar.archive.poolSize=3",
        "controller.archive.keepFinished=1h",
    ];
    let secret = r#"secretKeyRef: {name: "archive-db", key: "url"}"#;
    for template in ["templates/controller.yaml", "templates/sidecar.yaml"] {
        let text = render(&archived, template);
        assert!(
            text.contains("name: CANCEL_OPERATOR_ARCHIVE_URL"),
            "{template}: {text}"
        );
        assert!(text.contains(secret), "{template}: {text}");
        assert!(
            text.contains("name: CANCEL_OPERATOR_ARCHIVE_POOL_SIZE\n              value: \"3\""),
            "{template}: {text}"
        );
        assert!(!text.contains("postgres://"), "{template}: {text}");
        let plain = render(&[], template);
        assert!(!plain.contains("ARCHIVE"), "{template}: {plain}");
    }
    // The REST API may read as a role of its own.
    let own = [
        "controller.archive.urlSecret=archive-db",
        "sidecar.archive.urlSecret=archive-reader",
        "sidecar.archive.urlSecretKey=uri",
    ];
    let text = render(&own, "templates/sidecar.yaml");
    assert!(
        text.contains(r#"secretKeyRef: {name: "archive-reader", key: "uri"}"#),
        "{text}"
    );
    let text = render(&own, "templates/controller.yaml");
    assert!(text.contains(secret), "{text}");
    // Without the controller's archive there is none to read.
    let text = render(&own[1..], "templates/sidecar.yaml");
    assert!(!text.contains("ARCHIVE"), "{text}");
    let controller = render(&archived, "templates/controller.yaml");
    assert!(
        controller.contains("name: CANCEL_OPERATOR_KEEP_FINISHED\n              value: \"1h\"")
    );
    let sidecar = render(&archived, "templates/sidecar.yaml");
    assert!(
        !sidecar.contains("KEEP_FINISHED"),
        "the REST API deletes nothing"
    );
}

/// TLS to the database: the mode and the Secret's CA (and, when asked, its
/// client certificate) reach both processes as libpq's environment, which
/// the database client reads, with the Secret mounted read-only where that
/// environment points; the REST API's own Secret of users stays mounted
/// beside it. Without an archive, nothing of it.
#[test]
fn the_archive_tls_settings_reach_both_processes() {
    let tls = [
        "controller.archive.urlSecret=archive-db",
        "controller.archive.tls.mode=verify-full",
        "controller.archive.tls.secret=archive-ca",
        "sidecar.usersSecret=users",
    ];
    let dir = "/etc/cancel-operator/archive-tls";
    for template in ["templates/controller.yaml", "templates/sidecar.yaml"] {
        let text = render(&tls, template);
        for expected in [
            "name: PGSSLMODE\n              value: \"verify-full\"".to_string(),
            format!("name: PGSSLROOTCERT\n              value: {dir}/ca.crt"),
            format!("- name: archive-tls\n              mountPath: {dir}\n              readOnly: true"),
            "- name: archive-tls\n          secret:\n            secretName: \"archive-ca\"\n            defaultMode: 0440".to_string(),
        ] {
            assert!(text.contains(&expected), "{template}: no {expected:?} in\n{text}");
        }
        assert!(!text.contains("PGSSLCERT"), "{template}: {text}");
        let with_cert: Vec<&str> = tls
            .iter()
            .copied()
            .chain(["controller.archive.tls.clientCert=true"])
            .collect();
        let text = render(&with_cert, template);
        assert!(
            text.contains(&format!(
                "name: PGSSLCERT\n              value: {dir}/tls.crt"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "name: PGSSLKEY\n              value: {dir}/tls.key"
            )),
            "{text}"
        );
        // No archive: no database, no TLS to it.
        let text = render(&tls[1..], template);
        assert!(
            !text.contains("PGSSL") && !text.contains("archive-tls"),
            "{template}: {text}"
        );
    }
    let sidecar = render(&tls, "templates/sidecar.yaml");
    assert!(
        sidecar.contains("mountPath: /etc/cancel-operator/users"),
        "{sidecar}"
    );
    // A mode that libpq does not know is refused by the chart's schema.
    let mut cmd = tool("helm");
    cmd.args(["template", "rel", "--kube-version", "1.35.8"])
        .arg(chart())
        .args(["--set", "controller.watch.mode=cluster"])
        .args(["--set", "controller.archive.tls.mode=verify"]);
    let out = cmd.output().expect("helm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("/controller/archive/tls/mode"),
        "{stderr}"
    );
}

/// The chart's default image is the one `make image` (scripts/image.sh) tags
/// and the Dockerfile builds: ghcr.io/cancel-dev/cancel-operator:<appVersion>,
/// run as the image's user under the restricted Pod Security settings.
#[test]
fn the_default_image_is_the_one_the_project_builds() {
    let chart_yaml = std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml");
    let app_version = chart_yaml
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .expect("appVersion")
        .trim()
        .trim_matches('"');
    let image = format!("ghcr.io/cancel-dev/cancel-operator:{app_version}");

    let mut template = tool("helm");
    template
        .args(["template", "rel", "--kube-version", "1.35.8"])
        .arg(chart())
        .args(["--set", "controller.watch.mode=cluster"]);
    let rendered = run(template);
    let mut containers = 0;
    for doc in yaml_serde::Deserializer::from_str(&rendered) {
        let object: serde_json::Value = serde::Deserialize::deserialize(doc).expect("yaml");
        if object["kind"] != "Deployment" {
            continue;
        }
        let pod = &object["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{pod}");
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{pod}");
        for c in pod["containers"].as_array().expect("containers") {
            containers += 1;
            assert_eq!(c["image"], image.as_str(), "{c}");
            assert_eq!(c["imagePullPolicy"], "IfNotPresent", "{c}");
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{c}");
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{c}");
        }
    }
    assert_eq!(containers, 2, "controller and sidecar");

    // The Dockerfile's defaults follow the chart and Cargo.toml.
    let dockerfile = std::fs::read_to_string(chart().join("../../Dockerfile")).expect("Dockerfile");
    for line in [
        format!("ARG VERSION={app_version}"),
        format!(
            "org.opencontainers.image.licenses=\"{}\"",
            env!("CARGO_PKG_LICENSE")
        ),
        format!(
            "org.opencontainers.image.description=\"{}\"",
            env!("CARGO_PKG_DESCRIPTION")
        ),
        "USER 65532:65532".to_string(),
        "ENTRYPOINT [\"/cancel-operator\"]".to_string(),
        format!("docker build -t {image} "),
    ] {
        assert!(dockerfile.contains(&line), "Dockerfile lacks {line:?}");
    }
}

#[tokio::test]
async fn the_api_server_accepts_every_rendered_object() {
    let ns = TestNamespace::new("chart-render").await;
    let several = format!("sidecar.namespaces={{{},default}}", ns.name);
    let watched = format!("controller.watch.namespaces={{{},default}}", ns.name);
    for extra in [
        &["--set", "controller.watch.mode=cluster"][..],
        &[
            "--set",
            "controller.watch.mode=namespaces",
            "--set",
            "serviceMonitor.enabled=false",
            "--set",
            "sidecar.usersSecret=users",
            "--set",
            &several,
            "--set",
            &watched,
        ][..],
        &[
            "--set",
            "controller.watch.mode=cluster",
            "--set",
            "sidecar.enabled=false",
            "--set",
            "requestedByPolicy.enabled=false",
        ][..],
        &[
            "--set",
            "controller.watch.mode=cluster",
            "--set",
            "replicaCount=2",
        ][..],
        // Where the cluster serves MutatingAdmissionPolicy (as this one does);
        // and the optional ServiceAccount policy.
        &[
            "--set",
            "controller.watch.mode=cluster",
            "--api-versions",
            "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy",
            "--set",
            "stageRunServiceAccounts.restrict=true",
        ][..],
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
                // The helm test hook's pod needs its ServiceAccount to exist,
                // which a dry run does not create (tests/chart_on_node.rs runs it).
                "--skip-tests",
            ])
            .arg(chart())
            .args(extra);
        let rendered = run(template);
        let path = std::env::temp_dir().join(format!("{}-rendered.yaml", ns.name));
        std::fs::write(&path, &rendered).expect("write rendered chart");
        let mut apply = tool("kubectl");
        apply
            // Every object names its namespace (several, with sidecar.namespaces).
            .args(["apply", "--dry-run=server", "-f"])
            .arg(&path);
        let out = run(apply);
        assert!(
            out.contains("deployment.apps/rel-cancel-operator-controller created (server dry run)"),
            "{out}"
        );
        // The REST APIs run in a Deployment of their own, as their own account.
        let sidecar = !extra.contains(&"sidecar.enabled=false");
        for object in [
            "deployment.apps/rel-cancel-operator-sidecar",
            "serviceaccount/rel-cancel-operator-sidecar",
            "service/rel-cancel-operator ",
        ] {
            assert_eq!(out.contains(object), sidecar, "{object}: {out}");
        }
        // Watching namespaces, the controller's rights are a Role in each.
        let confined = extra.contains(&watched.as_str());
        assert_eq!(
            out.contains("clusterrole.rbac.authorization.k8s.io/rel-cancel-operator-controller "),
            !confined,
            "{out}"
        );
        assert_eq!(
            out.lines()
                .filter(|l| l
                    .starts_with("role.rbac.authorization.k8s.io/rel-cancel-operator-controller "))
                .count(),
            if confined { 2 } else { 0 },
            "{out}"
        );
        // An empty requestedBy is filled at admission where the API is served.
        let mutating = extra.contains(&"--api-versions");
        for object in [
            "mutatingadmissionpolicy.admissionregistration.k8s.io/rel-cancel-operator-requested-by ",
            "mutatingadmissionpolicybinding.admissionregistration.k8s.io/rel-cancel-operator-requested-by ",
        ] {
            assert_eq!(out.contains(object), mutating, "{object}: {out}");
        }
        assert_eq!(
            out.contains(
                "validatingadmissionpolicy.admissionregistration.k8s.io/rel-cancel-operator-stagerun-service-accounts "
            ),
            extra.contains(&"stageRunServiceAccounts.restrict=true"),
            "{out}"
        );
        // A disruption budget only when there is more than one replica.
        let pdb = out.contains("poddisruptionbudget.policy/rel-cancel-operator-controller created");
        assert_eq!(pdb, extra.contains(&"replicaCount=2"), "{out}");
    }
    // Values are checked against values.schema.json.
    let mut bad = tool("helm");
    bad.args(["template", "rel", "--kube-version", "1.35.8"])
        .arg(chart())
        .args(["--set", "controller.watch.mode=cluster"])
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
    stage_run(name)
        .of(("demo_pipeline", 1, "first_stage"))
        .job("first_job", json!({"sim.cancel.dev/run-for": "1h"}))
        .build()
}

/// What a ServiceAccount may do in a namespace, as the API server itself
/// answers it (SelfSubjectRulesReview), one `verb group/resource[/name]` per
/// entry; the rights every authenticated user has are left out.
async fn rights(client: &Client, ns: &str) -> BTreeSet<String> {
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(ns.into()),
        },
        ..SelfSubjectRulesReview::default()
    };
    let status = Api::<SelfSubjectRulesReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("rules review")
        .status
        .expect("rules");
    assert!(!status.incomplete, "{:?}", status.evaluation_error);
    let mut out = BTreeSet::new();
    for rule in status.resource_rules {
        let names = rule.resource_names.unwrap_or_default();
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                if resource.starts_with("selfsubject") {
                    continue;
                }
                for verb in &rule.verbs {
                    if names.is_empty() {
                        out.insert(format!("{verb} {group}/{resource}"));
                    }
                    for name in &names {
                        out.insert(format!("{verb} {group}/{resource}/{name}"));
                    }
                }
            }
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The controller's rights where it works (each watched namespace, or every
/// namespace).
const CONTROLLER_RIGHTS: &[&str] = &[
    "get cancel.dev/stageruns",
    "list cancel.dev/stageruns",
    "watch cancel.dev/stageruns",
    "get cancel.dev/cancelrequests",
    "list cancel.dev/cancelrequests",
    "watch cancel.dev/cancelrequests",
    "delete cancel.dev/cancelrequests",
    "patch cancel.dev/stageruns/status",
    "patch cancel.dev/cancelrequests/status",
    "get batch/jobs",
    "list batch/jobs",
    "watch batch/jobs",
    "create batch/jobs",
    "patch batch/jobs",
    "delete batch/jobs",
    "list /pods",
    "watch /pods",
    "delete /pods",
    "create events.k8s.io/events",
    "patch events.k8s.io/events",
];

/// The sidecar's cluster-wide rights: it authenticates and authorises callers.
const SIDECAR_REVIEWS: &[&str] = &[
    "create authentication.k8s.io/tokenreviews",
    "create authorization.k8s.io/subjectaccessreviews",
];

/// The sidecar's rights where it serves.
const SIDECAR_SERVING: &[&str] = &[
    "list cancel.dev/stageruns",
    "watch cancel.dev/stageruns",
    "create cancel.dev/cancelrequests",
];

/// The controller's rights in the release namespace, with the release's full name.
fn controller_state_rights(fullname: &str) -> BTreeSet<String> {
    set(&[
        "create /configmaps",
        &format!("get /configmaps/{fullname}-ids"),
        &format!("update /configmaps/{fullname}-ids"),
        "create coordination.k8s.io/leases",
        &format!("get coordination.k8s.io/leases/{fullname}-controller"),
        &format!("list coordination.k8s.io/leases/{fullname}-controller"),
        &format!("watch coordination.k8s.io/leases/{fullname}-controller"),
        &format!("patch coordination.k8s.io/leases/{fullname}-controller"),
    ])
}

fn union(a: &[&str], b: &[&str]) -> BTreeSet<String> {
    set(a).union(&set(b)).cloned().collect()
}

fn cancel_request(who: &str, name: &str) -> CancelRequest {
    serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest", "metadata": {"name": name},
        "spec": {"target": {"stageRun": "demo-1"}, "requestedBy": who}
    }))
    .expect("cancel request")
}

/// Creates a CancelRequest naming someone else, retrying until the admission
/// policy (which takes effect shortly after it is created) refuses it.
async fn refused_as_spoof(api: &Api<CancelRequest>, name: &str) -> String {
    support::eventually(
        "the policy to refuse a false requestedBy",
        Duration::from_secs(60),
        || async {
            match api
                .create(&PostParams::default(), &cancel_request("alice", name))
                .await
            {
                Err(kube::Error::Api(s)) if s.message.contains("spec.requestedBy") => Ok(s.message),
                Err(e) => Err(e.to_string()),
                Ok(_) => {
                    let _ = api.delete(name, &Default::default()).await;
                    Err("accepted".into())
                }
            }
        },
    )
    .await
}

fn helm_install(release: &str, values: &[String]) -> Uninstall {
    let mut install = tool("helm");
    install
        .args([
            "install",
            release,
            "--namespace",
            release,
            "--wait",
            "--timeout",
            "120s",
        ])
        .arg(chart());
    for v in values {
        install.args(["--set", v]);
    }
    run(install);
    Uninstall(release.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_has_its_own_account_with_enough_rights_and_no_more() {
    let release = TestNamespace::new("chart-install").await;
    let work = TestNamespace::new("chart-work").await;
    let second = TestNamespace::new("chart-second").await;
    let elsewhere = TestNamespace::new("chart-elsewhere").await;
    support::install_crds(&release.client).await;
    let name = release.name.clone();
    let uninstall = helm_install(
        &name,
        &[
            "controller.watch.mode=namespaces".to_string(),
            format!(
                "controller.watch.namespaces={{{},{}}}",
                work.name, second.name
            ),
            format!("sidecar.namespaces={{{}}}", work.name),
            format!(
                "requestedByPolicy.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={}",
                work.name
            ),
            "stageRunServiceAccounts.restrict=true".to_string(),
            "stageRunServiceAccounts.allowed={default,builder}".to_string(),
            format!(
                "stageRunServiceAccounts.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={}",
                work.name
            ),
        ],
    );

    let admin = release.client.clone();
    let fullname = format!("{name}-cancel-operator");
    let controller_sa = format!("{fullname}-controller");
    let sidecar_sa = format!("{fullname}-sidecar");
    let as_controller = client_as_service_account(&admin, &name, &controller_sa).await;
    let as_sidecar = client_as_service_account(&admin, &name, &sidecar_sa).await;

    // No more: each account's rights, exactly, where it works and elsewhere.
    for ns in [&work.name, &second.name] {
        assert_eq!(rights(&as_controller, ns).await, set(CONTROLLER_RIGHTS));
    }
    assert_eq!(
        rights(&as_controller, &name).await,
        controller_state_rights(&fullname)
    );
    assert_eq!(rights(&as_controller, &elsewhere.name).await, set(&[]));
    // Nothing cluster-wide: the watched namespaces are Roles.
    let controller_user = format!("system:serviceaccount:{name}:{controller_sa}");
    for (verb, group, resource) in [
        ("delete", "", "pods"),
        ("list", "", "pods"),
        ("create", "batch", "jobs"),
        ("delete", "batch", "jobs"),
        ("list", "cancel.dev", "stageruns"),
    ] {
        for (ns, may) in [
            (work.name.as_str(), true),
            (second.name.as_str(), true),
            (elsewhere.name.as_str(), false),
            ("", false),
        ] {
            assert_eq!(
                allowed(&admin, &controller_user, verb, group, resource, ns).await,
                may,
                "the controller may {verb} {resource} in {ns:?}"
            );
        }
    }
    assert_eq!(
        rights(&as_sidecar, &work.name).await,
        union(SIDECAR_REVIEWS, SIDECAR_SERVING)
    );
    assert_eq!(rights(&as_sidecar, &name).await, set(SIDECAR_REVIEWS));
    assert_eq!(
        rights(&as_sidecar, &elsewhere.name).await,
        set(SIDECAR_REVIEWS)
    );

    // Enough: the controller, as its account, runs and cancels a stage...
    let ctl = tokio::spawn(controller::run(
        as_controller.clone(),
        controller::Config {
            namespaces: vec![work.name.clone(), second.name.clone()],
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
            archive: None,
        },
    ));
    let _ctl = world::AbortOnDrop(vec![ctl.abort_handle()]);
    // A run outside the watched namespaces is left alone; one in each of
    // them runs.
    let ignored: Api<StageRun> = elsewhere.api();
    ignored
        .create(&PostParams::default(), &stagerun("outside"))
        .await
        .expect("create StageRun elsewhere");
    let runs: Api<StageRun> = work.api();
    runs.create(&PostParams::default(), &stagerun("demo-1"))
        .await
        .expect("create StageRun");
    let running =
        |r: &StageRun| r.status.as_ref().and_then(|s| s.phase) == Some(StagePhase::Running);
    wait_for(&runs, "demo-1", "Running", Duration::from_secs(60), running).await;
    let second_runs: Api<StageRun> = second.api();
    second_runs
        .create(&PostParams::default(), &stagerun("demo-2"))
        .await
        .expect("create StageRun in the second namespace");
    wait_for(
        &second_runs,
        "demo-2",
        "Running",
        Duration::from_secs(60),
        running,
    )
    .await;
    let outside = ignored.get("outside").await.expect("get");
    assert!(outside.status.is_none(), "{:?}", outside.status);

    // ...and the sidecar, as its own account, takes a GoCD cancel from `operator`.
    world::grant(
        &work,
        "canceller",
        json!({"apiGroups": ["cancel.dev"], "resources": ["cancelrequests", "stageruns"], "verbs": ["create", "list", "get"]}),
        &["operator"],
    )
    .await;
    let (addr, _server) = world::spawn_sidecar(
        as_sidecar.clone(),
        &work.name,
        None,
        Duration::from_millis(200),
    )
    .await;
    let http = reqwest::Client::new();
    let token = support::token(User::Operator);
    let url = format!("http://{addr}/go/api/stages/demo_pipeline/first_stage/cancel");
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
    let status = done.status.expect("status");
    assert_eq!(status.result, Some(RunResult::Cancelled));
    assert_eq!(status.cancel.expect("cancel").requested_by, "operator");

    // The policy keeps requestedBy truthful for everyone but the sidecar's account.
    let as_operator: Api<CancelRequest> =
        Api::namespaced(support::client(User::Operator).await, &work.name);
    let message = refused_as_spoof(&as_operator, "lie").await;
    assert!(
        message.contains("must be your own username, operator, not alice"),
        "{message}"
    );
    as_operator
        .create(
            &PostParams::default(),
            &cancel_request("operator", "truthful"),
        )
        .await
        .expect("own name is accepted");
    let on_behalf = Api::<CancelRequest>::namespaced(as_sidecar, &work.name)
        .create(
            &PostParams::default(),
            &cancel_request("alice", "on-behalf"),
        )
        .await
        .expect("the sidecar may name its caller");
    assert_eq!(on_behalf.spec.requested_by, "alice");

    // Left out, requestedBy is filled with the creating user: a plain
    // `kubectl apply` records who cancelled.
    let apply = support::kubectl_apply(
        User::Operator,
        &work.name,
        "plain",
        "apiVersion: cancel.dev/v1alpha1\nkind: CancelRequest\nmetadata: {name: plain}\nspec: {target: {stageRun: demo-1}}\n",
    );
    run(apply);
    let plain = as_operator.get("plain").await.expect("get plain");
    assert_eq!(plain.spec.requested_by, "operator");

    // With the optional policy, a StageRun's jobs run only as the listed
    // ServiceAccounts.
    let as_account = |account: &str| {
        let mut sr = stagerun("with-account");
        sr.spec.jobs[0].template["spec"]["serviceAccountName"] = json!(account);
        sr
    };
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    runs.create(&dry_run, &as_account("builder"))
        .await
        .expect("a listed ServiceAccount is accepted");
    match runs.create(&dry_run, &as_account("admin")).await {
        Err(kube::Error::Api(s)) => assert!(
            s.message
                .contains("may run only as the ServiceAccounts default, builder, not admin"),
            "{s:?}"
        ),
        other => panic!("a StageRun running as admin: {other:?}"),
    }
    // Cleanup jobs too.
    let mut with_cleanup = as_account("builder");
    let mut cleanup = serde_json::to_value(&with_cleanup.spec.jobs[0]).expect("job");
    cleanup["name"] = json!("report");
    cleanup["template"]["spec"]["serviceAccountName"] = json!("admin");
    with_cleanup.spec.cleanup = vec![serde_json::from_value(cleanup).expect("cleanup job")];
    match runs.create(&dry_run, &with_cleanup).await {
        Err(kube::Error::Api(s)) => assert!(
            s.message
                .contains("may run only as the ServiceAccounts default, builder, not admin"),
            "{s:?}"
        ),
        other => panic!("a cleanup job running as admin: {other:?}"),
    }
    // The controller's account is not exempt (give it the right to create, to
    // see that the policy, not RBAC, refuses it).
    world::grant(
        &work,
        "controller-creates",
        json!({"apiGroups": ["cancel.dev"], "resources": ["cancelrequests"], "verbs": ["create"]}),
        &[&format!("system:serviceaccount:{name}:{controller_sa}")],
    )
    .await;
    let as_controller_requests: Api<CancelRequest> = Api::namespaced(as_controller, &work.name);
    let message = refused_as_spoof(&as_controller_requests, "controller-lie").await;
    assert!(message.contains("not alice"), "{message}");
    drop(uninstall);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_the_cluster_the_controller_works_cluster_wide_and_the_sidecar_still_deletes_nothing()
 {
    let release = TestNamespace::new("chart-wide").await;
    let anywhere = TestNamespace::new("chart-anywhere").await;
    support::install_crds(&release.client).await;
    let name = release.name.clone();
    let uninstall = helm_install(
        &name,
        &[
            "controller.watch.mode=cluster".to_string(),
            format!(
                "requestedByPolicy.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={}",
                anywhere.name
            ),
        ],
    );
    let admin = release.client.clone();
    let fullname = format!("{name}-cancel-operator");
    let as_controller =
        client_as_service_account(&admin, &name, &format!("{fullname}-controller")).await;
    let as_sidecar = client_as_service_account(&admin, &name, &format!("{fullname}-sidecar")).await;
    assert_eq!(
        rights(&as_controller, &anywhere.name).await,
        set(CONTROLLER_RIGHTS)
    );
    assert_eq!(
        rights(&as_sidecar, &anywhere.name).await,
        union(SIDECAR_REVIEWS, SIDECAR_SERVING)
    );
    // Nowhere may the network-facing process delete anything.
    for (verb, group, resource) in [
        ("delete", "", "pods"),
        ("delete", "batch", "jobs"),
        ("deletecollection", "", "pods"),
        ("create", "batch", "jobs"),
        ("patch", "cancel.dev", "stageruns/status"),
    ] {
        for ns in [anywhere.name.as_str(), name.as_str(), ""] {
            assert!(
                !allowed(
                    &admin,
                    &format!("system:serviceaccount:{name}:{fullname}-sidecar"),
                    verb,
                    group,
                    resource,
                    ns
                )
                .await,
                "the sidecar may {verb} {resource} in {ns:?}"
            );
        }
    }
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
