//! The test control plane is real: Jobs run pods through the job controller,
//! the scheduler and kwok; the garbage collector removes them; RBAC decides.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use serde_json::json;
use support::{TestNamespace, User, wait_for, wait_list};

fn job(name: &str, run_for: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {"sim.cancel.dev/run-for": run_for}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}]
                }
            }
        }
    }))
    .expect("job")
}

#[tokio::test]
async fn a_job_runs_a_pod_to_success() {
    let ns = TestNamespace::new("smoke-job").await;
    let jobs: Api<Job> = ns.api();
    jobs.create(&PostParams::default(), &job("hello", "1s"))
        .await
        .unwrap();

    let done = wait_for(
        &jobs,
        "hello",
        "the Job to complete",
        Duration::from_secs(60),
        |j: &Job| j.status.as_ref().and_then(|s| s.succeeded) == Some(1),
    )
    .await;
    assert!(
        done.status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    );

    let pods: Api<Pod> = ns.api();
    let listed = pods
        .list(&ListParams::default().labels("job-name=hello"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let pod = &listed.items[0];
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded")
    );
    assert!(
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some(),
        "scheduled to a node"
    );
}

#[tokio::test]
async fn deleting_a_job_with_background_propagation_removes_its_pods() {
    let ns = TestNamespace::new("smoke-gc").await;
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    jobs.create(&PostParams::default(), &job("long", "1h"))
        .await
        .unwrap();
    let lp = ListParams::default().labels("job-name=long");
    wait_list(
        &pods,
        &lp,
        "a running pod",
        Duration::from_secs(60),
        |p: &[Pod]| {
            p.iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        },
    )
    .await;

    jobs.delete("long", &DeleteParams::background())
        .await
        .unwrap();
    wait_list(
        &pods,
        &lp,
        "the pods to be gone",
        Duration::from_secs(60),
        |p: &[Pod]| p.is_empty(),
    )
    .await;
}

#[tokio::test]
async fn rbac_refuses_nobody_and_allows_what_a_role_grants() {
    let ns = TestNamespace::new("smoke-rbac").await;
    let roles: Api<Role> = ns.api();
    roles
        .create(
            &PostParams::default(),
            &Role {
                metadata: ObjectMeta {
                    name: Some("configmap-writer".into()),
                    ..ObjectMeta::default()
                },
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec!["".into()]),
                    resources: Some(vec!["configmaps".into()]),
                    verbs: vec!["create".into(), "get".into()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = ns.api();
    bindings
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: ObjectMeta {
                    name: Some("operator-writes".into()),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: "configmap-writer".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "User".into(),
                    name: "operator".into(),
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap();

    let cm = |name: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let as_nobody: Api<ConfigMap> = Api::namespaced(support::client(User::Nobody).await, &ns.name);
    match as_nobody
        .create(&PostParams::default(), &cm("denied"))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("nobody must be refused, got {other:?}"),
    }

    // RBAC changes take effect once the authorizer's informer sees them.
    let as_operator: Api<ConfigMap> =
        Api::namespaced(support::client(User::Operator).await, &ns.name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match as_operator
            .create(&PostParams::default(), &cm("allowed"))
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 403 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("operator must be allowed: {e}"),
        }
    }
    match as_nobody.get("allowed").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("nobody must not read, got {other:?}"),
    }
}
