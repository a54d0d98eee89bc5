//! Two controller processes with leader election: one acts, and when it is
//! killed the other takes the Lease over and finishes the work.

mod support;

use std::process::Child;
use std::time::Duration;

use cancel_operator::crd::{CancelRequest, RunResult, StagePhase, StageRun};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::proxy::{Path, Proxy, api_server, replica_kubeconfig, writes_of};
use support::{TestNamespace, stage_run, wait_for, world};

const T: Duration = Duration::from_secs(90);
const LEASE: &str = "cancel-operator-controller";

/// A loopback address that was free a moment ago.
fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").to_string()
}

fn controller(ns: &str, identity: &str, metrics: &str) -> Child {
    world::controller_process(
        ns,
        &[
            "--leader-elect",
            "--lease-duration-seconds",
            "4",
            "--metrics-address",
            metrics,
        ],
        &[("POD_NAME", identity)],
    )
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
}

async fn reporters(ns: &TestNamespace, reason: &str) -> Vec<String> {
    support::events_for(&ns.client, &ns.name, "foo-1-dev", reason, T)
        .await
        .iter()
        .map(|e| e.reporting_instance.clone().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_leader_dies() {
    let ns = TestNamespace::new("leader-election").await;
    support::install_crds(&ns.client).await;
    let leases: Api<Lease> = ns.api();
    let (metrics_a, metrics_b) = (free_address(), free_address());
    let mut first = controller(&ns.name, "ctl-a", &metrics_a);
    wait_for(&leases, LEASE, "ctl-a to lead", T, |l| {
        holder(l) == Some("ctl-a")
    })
    .await;
    let mut second = controller(&ns.name, "ctl-b", &metrics_b);
    // The standby is healthy while it waits.
    let http = reqwest::Client::new();
    let healthz = format!("http://{metrics_b}/healthz");
    support::eventually("the standby's health check", T, || async {
        let r = http.get(&healthz).send().await.map_err(|e| e.to_string())?;
        (r.status() == 200)
            .then_some(())
            .ok_or(r.status().to_string())
    })
    .await;

    let runs: Api<StageRun> = ns.api();
    let sr = stage_run("foo-1-dev")
        .image("ant")
        .job("UnitTest", json!({"sim.cancel.dev/run-for": "1h"}))
        .build();
    runs.create(&PostParams::default(), &sr).await.unwrap();
    support::wait_jobs_building(&runs, "foo-1-dev", T).await;
    // Only the leader acted.
    let lease = leases.get(LEASE).await.unwrap();
    assert_eq!(holder(&lease), Some("ctl-a"));

    first.kill().expect("kill the leader");
    first.wait().expect("reap");
    let requests: Api<CancelRequest> = ns.api();
    let request: CancelRequest = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest", "metadata": {"name": "stop"},
        "spec": {"target": {"stageRun": "foo-1-dev"}, "requestedBy": "alice"}
    }))
    .unwrap();
    requests
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    wait_for(&leases, LEASE, "ctl-b to take over", T, |l| {
        holder(l) == Some("ctl-b")
    })
    .await;
    let done = wait_for(&runs, "foo-1-dev", "cancelled by the new leader", T, |r| {
        r.status.as_ref().and_then(|s| s.phase) == Some(StagePhase::Failed)
    })
    .await;
    assert_eq!(done.status.unwrap().result, Some(RunResult::Cancelled));
    assert_eq!(reporters(&ns, "Canceling").await, vec!["ctl-b".to_string()]);
    // The new leader's metrics count its reconciles and the cancel.
    let scraped = support::get_text(&http, &format!("http://{metrics_b}/metrics")).await;
    assert!(
        scraped.contains(
            r#"controller_runtime_reconcile_total{controller="stagerun",result="success"}"#
        ),
        "{scraped}"
    );
    assert!(
        scraped.contains("controller_runtime_reconcile_time_seconds_bucket"),
        "{scraped}"
    );
    assert!(
        scraped
            .contains(r#"cancel_operator_cancel_duration_seconds_count{reason="CancelRequest"} 1"#),
        "{scraped}"
    );
    second.kill().ok();
    second.wait().ok();
}

/// Polls `child` until it exits.
async fn exit_status(child: &mut Child, what: &str) -> std::process::ExitStatus {
    support::eventually(what, T, || {
        let status = child.try_wait();
        async move {
            match status {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err("still running".to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_stops_fails_health_and_exits_non_zero() {
    let ns = TestNamespace::new("lease-lost").await;
    support::install_crds(&ns.client).await;
    let leases: Api<Lease> = ns.api();
    let metrics = free_address();
    let mut leader = controller(&ns.name, "ctl-a", &metrics);
    wait_for(&leases, LEASE, "ctl-a to lead", T, |l| {
        holder(l) == Some("ctl-a")
    })
    .await;
    let http = reqwest::Client::new();
    let healthz = format!("http://{metrics}/healthz");
    support::eventually("the leader's health check", T, || async {
        let r = http.get(&healthz).send().await.map_err(|e| e.to_string())?;
        (r.status() == 200)
            .then_some(())
            .ok_or(r.status().to_string())
    })
    .await;
    // Another holder takes the Lease over, for an hour.
    let now = serde_json::to_value(MicroTime(k8s_openapi::jiff::Timestamp::now())).unwrap();
    leases
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "holderIdentity": "intruder", "leaseDurationSeconds": 3600,
                "acquireTime": now, "renewTime": now
            }})),
        )
        .await
        .unwrap();
    assert!(
        matches!(leader.try_wait(), Ok(None)),
        "the leader stopped while it held the Lease"
    );
    // Its health fails (or it is gone: then another process may have
    // its port), and it exits with an error.
    support::eventually("the former leader's health check to fail", T, || {
        let gone = !matches!(leader.try_wait(), Ok(None));
        let (http, healthz) = (&http, &healthz);
        async move {
            match http.get(healthz).send().await {
                Ok(r) if r.status() == 200 && !gone => Err("still healthy".to_string()),
                _ => Ok(()),
            }
        }
    })
    .await;
    let status = exit_status(&mut leader, "the former leader to exit").await;
    assert!(!status.success(), "{status:?}");
    // It released nothing that was not its own.
    let lease = leases.get(LEASE).await.unwrap();
    assert_eq!(holder(&lease), Some("intruder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_cleanly_hands_over_before_its_term_ends() {
    let ns = TestNamespace::new("lease-release").await;
    support::install_crds(&ns.client).await;
    let leases: Api<Lease> = ns.api();
    // A term far longer than the test's deadline: only a release lets the
    // standby in within it.
    let long = |identity: &str, metrics: &str| {
        world::controller_process(
            &ns.name,
            &[
                "--leader-elect",
                "--lease-duration-seconds",
                "300",
                "--metrics-address",
                metrics,
            ],
            &[("POD_NAME", identity)],
        )
    };
    let mut first = long("ctl-a", &free_address());
    wait_for(&leases, LEASE, "ctl-a to lead", T, |l| {
        holder(l) == Some("ctl-a")
    })
    .await;
    // The standby has read the Lease (and its 300 s term) before the leader
    // stops: only the release can let it in now.
    let metrics_b = free_address();
    let mut second = long("ctl-b", &metrics_b);
    let http = reqwest::Client::new();
    let url = format!("http://{metrics_b}/metrics");
    support::eventually("ctl-b standing by", T, || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let text = http
                .get(&url)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            text.contains(&format!(
                "leader_election_master_status{{name=\"{LEASE}\"}} 0"
            ))
            .then_some(())
            .ok_or_else(|| "not standing by yet".to_string())
        }
    })
    .await;
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(stopped.success());
    let status = exit_status(&mut first, "the leader to stop").await;
    assert!(status.success(), "a clean stop exits 0: {status:?}");
    wait_for(&leases, LEASE, "ctl-b to take over", T, |l| {
        holder(l) == Some("ctl-b")
    })
    .await;
    second.kill().ok();
    second.wait().ok();
}

/// A leader whose path to the API server is cut (black-holed, or every
/// connection rejected) stops on its own, before the standby can take the
/// Lease, and exits non-zero; the API server's audit log shows that it
/// wrote nothing after the new leader's first write, even once the path is
/// open again.
async fn a_partitioned_leader_stops_before_the_standby_takes_over(cut: Path) {
    let ns = TestNamespace::new(&format!("partition-{cut:?}").to_lowercase()).await;
    support::install_crds(&ns.client).await;
    let leases: Api<Lease> = ns.api();
    let proxy = Proxy::start(api_server()).await;
    let (a, b) = (format!("{}-a", ns.name), format!("{}-b", ns.name));
    let replica = |identity: &str, server: Option<&str>| {
        let kubeconfig = replica_kubeconfig(identity, server);
        world::controller_process(
            &ns.name,
            &["--leader-elect", "--lease-duration-seconds", "4"],
            &[("POD_NAME", identity), ("KUBECONFIG", &kubeconfig)],
        )
    };
    let proxied = proxy.addr.to_string();
    let mut first = replica(&a, Some(&proxied));
    wait_for(&leases, LEASE, "the first replica to lead", T, |l| {
        holder(l) == Some(a.as_str())
    })
    .await;
    let runs: Api<StageRun> = ns.api();
    let sr = stage_run("foo-1-dev")
        .job("UnitTest", json!({"sim.cancel.dev/run-for": "1h"}))
        .build();
    runs.create(&PostParams::default(), &sr).await.unwrap();
    support::wait_jobs_building(&runs, "foo-1-dev", T).await;
    let mut second = replica(&b, None);

    proxy.set(cut);
    let status = exit_status(&mut first, "the cut-off leader to stop on its own").await;
    assert!(!status.success(), "{status:?}");
    wait_for(&leases, LEASE, "the standby to take over", T, |l| {
        holder(l) == Some(b.as_str())
    })
    .await;
    // The path heals: nothing of the old leader may arrive now.
    proxy.set(Path::Open);
    let requests: Api<CancelRequest> = ns.api();
    let request: CancelRequest = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest", "metadata": {"name": "stop"},
        "spec": {"target": {"stageRun": "foo-1-dev"}, "requestedBy": "alice"}
    }))
    .unwrap();
    requests
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    wait_for(&runs, "foo-1-dev", "cancelled by the new leader", T, |r| {
        r.status.as_ref().and_then(|s| s.phase) == Some(StagePhase::Failed)
    })
    .await;

    let (old, new) = (writes_of(&a), writes_of(&b));
    assert!(
        !old.is_empty(),
        "the first leader's writes are in the audit log"
    );
    let first_new = *new.first().expect("the new leader's writes");
    let last_old = *old.last().unwrap();
    assert!(
        last_old < first_new,
        "the old leader wrote at {last_old}, after the new leader's first write at {first_new}"
    );
    second.kill().ok();
    second.wait().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_by_a_black_hole_stops_before_the_standby_takes_over() {
    a_partitioned_leader_stops_before_the_standby_takes_over(Path::BlackHole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_connections_are_refused_stops_before_the_standby_takes_over() {
    a_partitioned_leader_stops_before_the_standby_takes_over(Path::Rejected).await;
}
