//! The CRDs: checked-in YAML matches the Rust types, and the API server
//! rejects invalid resources with messages that say what is wrong.

mod support;

use std::process::Command;
use std::time::Duration;

use cancel_operator::crd::{CancelRequest, StageRun, crds_yaml};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{TestNamespace, stage_run};

#[test]
fn checked_in_crds_match_the_rust_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/cancel.dev.yaml");
    let checked_in = std::fs::read_to_string(path).expect("crds/cancel.dev.yaml");
    let generated = crds_yaml().expect("generate");
    assert!(
        checked_in == generated,
        "crds/cancel.dev.yaml is out of date with src/crd.rs: run `make crds` and commit the result"
    );
}

/// A StageRun as raw JSON, for specs the typed fixture cannot express.
fn stagerun(spec: Value) -> Value {
    json!({"apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun", "metadata": {"name": "bad"}, "spec": spec})
}

fn job(name: &str) -> Value {
    json!({"name": name, "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}})
}

/// Creates `obj` (untyped, so that anything can be sent) and returns the API
/// server's refusal message.
async fn refusal<K>(ns: &TestNamespace, obj: Value) -> String
where
    K: kube::Resource<DynamicType = ()>,
{
    let api: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::erase::<K>(&()));
    let obj: DynamicObject = serde_json::from_value(obj).expect("object");
    match api.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            s.message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_resources_are_rejected_with_a_clear_message() {
    let ns = TestNamespace::new("crd-validation").await;
    support::install_crds(&ns.client).await;
    let runs: Api<StageRun> = ns.api();

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV", "jobs": []}),
            "spec.jobs",
        ),
        (
            json!({"pipeline": "foo", "pipelineCounter": 0, "stage": "DEV", "jobs": [job("a")]}),
            "spec.pipelineCounter",
        ),
        (
            json!({"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV", "jobs": [job("a"), job("a")]}),
            "job names must be unique within a stage",
        ),
        (
            json!({"pipeline": "foo bar", "pipelineCounter": 1, "stage": "DEV", "jobs": [job("a")]}),
            "spec.pipeline",
        ),
        (
            json!({"pipelineCounter": 1, "stage": "DEV", "jobs": [job("a")]}),
            "spec.pipeline: Required value",
        ),
        (
            json!({"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV", "jobs": [{"name": "a", "template": {"spec": {"containers": []}}}]}),
            "containers",
        ),
        (
            json!({"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV", "jobs": [job("a")], "cancelGracePeriodSeconds": -1}),
            "spec.cancelGracePeriodSeconds",
        ),
        (
            json!({"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV", "jobs": [job("a")], "approvalType": "sometimes"}),
            "spec.approvalType",
        ),
        (
            json!({"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV", "jobs": [job("a")], "activeDeadlineSeconds": 300_000_000_000i64}),
            "activeDeadlineSeconds must be at most 31536000 (a year)",
        ),
        (
            json!({"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV", "jobs": [job("a")], "cleanup": [job("a")]}),
            "a cleanup job cannot have the name of one of the stage's jobs",
        ),
        (
            json!({"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV", "jobs": [job("a")], "cleanup": [job("b"), job("b")]}),
            "cleanup job names must be unique within a stage",
        ),
        (
            json!({"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV", "jobs": [job("a")],
                   "cleanup": [{"when": "Sometimes", "name": "b", "template": job("b")["template"]}]}),
            "spec.cleanup[0].when",
        ),
        (
            json!({"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV", "jobs": [job("a")],
                   "cleanup": [{"activeDeadlineSeconds": 90000, "name": "b", "template": job("b")["template"]}]}),
            "a cleanup job's activeDeadlineSeconds must be at most 86400 (a day)",
        ),
    ];
    for (spec, expected) in cases {
        let message = refusal::<StageRun>(&ns, stagerun(spec.clone())).await;
        assert!(
            message.contains(expected),
            "for {spec}: {message:?} should mention {expected:?}"
        );
    }

    // The spec is immutable.
    let good = stage_run("bad").manual().bare_job("a").build();
    runs.create(&PostParams::default(), &good).await.unwrap();
    match runs
        .patch(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pipelineCounter": 2}})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert!(s.message.contains("spec is immutable"), "{}", s.message);
        }
        other => panic!("spec change must be refused, got {other:?}"),
    }
    // Defaults are filled in.
    let stored = runs.get("bad").await.unwrap();
    assert_eq!(stored.spec.stage_counter, 1);
    assert_eq!(stored.spec.approved_by, "changes");
    assert_eq!(stored.spec.cancel_grace_period_seconds, 30);
    // A cleanup job's defaults: it always runs, within ten minutes.
    let mut with_cleanup = stagerun(
        json!({"pipeline": "foo", "pipelineCounter": 1, "stage": "DEV",
        "approvalType": "manual", "jobs": [job("a")], "cleanup": [job("b")]}),
    );
    with_cleanup["metadata"]["name"] = json!("with-cleanup");
    let created = runs
        .create(
            &PostParams::default(),
            &serde_json::from_value(with_cleanup).unwrap(),
        )
        .await
        .unwrap();
    let cleanup = &created.spec.cleanup[0];
    assert_eq!(cleanup.when, cancel_operator::crd::CleanupWhen::Always);
    assert_eq!(cleanup.active_deadline_seconds, 600);

    let request = |target: Value| json!({"apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest", "metadata": {"name": "bad"}, "spec": {"target": target}});
    let exactly_one = "target must set exactly one of stageRun, stage, build, uids or selector";
    for target in [
        json!({}),
        json!({"stageRun": "a", "uids": ["b"]}),
        json!({"stage": {"pipeline": "foo", "stage": "DEV"}, "build": {"pipeline": "foo", "pipelineCounter": 1}}),
    ] {
        let message = refusal::<CancelRequest>(&ns, request(target.clone())).await;
        assert!(message.contains(exactly_one), "for {target}: {message}");
    }
    let message = refusal::<CancelRequest>(
        &ns,
        request(json!({"build": {"pipeline": "foo", "pipelineCounter": 0}})),
    )
    .await;
    assert!(
        message.contains("spec.target.build.pipelineCounter"),
        "{message}"
    );
    let mut long_lived = request(json!({"stageRun": "a"}));
    long_lived["spec"]["ttlSecondsAfterFinished"] = json!(9_000_000_000_000_000_000i64);
    let message = refusal::<CancelRequest>(&ns, long_lived).await;
    assert!(
        message.contains("ttlSecondsAfterFinished must be at most 31536000 (a year)"),
        "{message}"
    );
    let mut odd_mode = request(json!({"stageRun": "a"}));
    odd_mode["spec"]["mode"] = json!("Abort");
    let message = refusal::<CancelRequest>(&ns, odd_mode).await;
    assert!(
        message.contains("spec.mode") && message.contains("\"Terminate\""),
        "{message}"
    );
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_descriptions() {
    let ns = TestNamespace::new("crd-explain").await;
    support::install_crds(&ns.client).await;
    let kubectl = support::cluster_dir().join("bin/kubectl");
    // The API server publishes a new CRD's schema a moment after it serves it.
    let text = support::eventually("kubectl explain", Duration::from_secs(60), || async {
        let out = Command::new(&kubectl)
            .args(["explain", "stagerun.spec.jobs"])
            .env("KUBECONFIG", support::kubeconfig_path(support::User::Admin))
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await;
    assert!(text.contains("The jobs of the stage"), "{text}");
    assert!(
        text.contains("Name of the job, unique within the stage"),
        "{text}"
    );
}
