//! The archive against the real control plane and the real PostgreSQL
//! beside it: retention moves finished runs there, a run is stored once
//! whatever happens, ids continue above it, and cancels go on while it is
//! away.

mod support;

use std::sync::LazyLock;
use std::time::Duration;

use cancel_operator::archive::Archive;
use cancel_operator::controller;
use cancel_operator::crd::{
    CancelRequest, RequestPhase, RunResult, StagePhase, StageRun, TargetOutcome,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::core::Expression;
use serde_json::json;
use support::{TestNamespace, stage_run, wait_for, wait_list, world};

const T: Duration = Duration::from_secs(90);

/// Tests that stop the database hold it for writing; the others for
/// reading, so that none of them runs while it is away.
static DATABASE: LazyLock<tokio::sync::RwLock<()>> = LazyLock::new(|| tokio::sync::RwLock::new(()));

fn archive() -> Archive {
    Archive::connect(&support::archive_url(), 2).expect("archive URL")
}

/// A namespace with the CRDs and a controller running with `config`.
async fn setup(prefix: &str, config: impl FnOnce(&str) -> controller::Config) -> Served {
    let ns = TestNamespace::new(prefix).await;
    support::install_crds(&ns.client).await;
    let handle = tokio::spawn(controller::run(ns.client.clone(), config(&ns.name)));
    Served {
        _controller: world::AbortOnDrop(vec![handle.abort_handle()]),
        ns,
    }
}

struct Served {
    ns: TestNamespace,
    _controller: world::AbortOnDrop,
}

/// The archived run ended as the cluster's did: id, phase, result, jobs,
/// cancel record, failure reason and completion time.
fn same_outcome(archived: &StageRun, seen: &StageRun) {
    let (a, s) = (
        archived.status.as_ref().expect("archived status"),
        seen.status.as_ref().expect("status"),
    );
    assert_eq!(
        (
            a.id,
            a.phase,
            a.result,
            &a.jobs,
            &a.cancel,
            &a.failure_reason,
            &a.completion_time
        ),
        (
            s.id,
            s.phase,
            s.result,
            &s.jobs,
            &s.cancel,
            &s.failure_reason,
            &s.completion_time
        )
    );
}

fn phase(sr: &StageRun) -> Option<StagePhase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

async fn create(runs: &Api<StageRun>, run: StageRun) -> StageRun {
    runs.create(&PostParams::default(), &run)
        .await
        .expect("create StageRun")
}

/// Waits until no object of that name is left.
async fn wait_gone(runs: &Api<StageRun>, name: &str) {
    let lp = ListParams::default().fields(&format!("metadata.name={name}"));
    wait_list(
        runs,
        &lp,
        &format!("{name} gone from the cluster"),
        T,
        |items| items.is_empty(),
    )
    .await;
}

fn quick(name: &str, counter: i64) -> StageRun {
    stage_run(name)
        .counter(counter)
        .job("build", json!({"sim.cancel.dev/run-for": "1s"}))
        .build()
}

fn long(name: &str, counter: i64) -> StageRun {
    stage_run(name)
        .counter(counter)
        .job("build", json!({"sim.cancel.dev/run-for": "600s"}))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_moves_finished_runs_to_the_archive_and_leaves_running_ones() {
    let _db = DATABASE.read().await;
    let s = setup("archive-retention", |ns| {
        world::archiving_config(ns, Some(Duration::from_secs(1)))
    })
    .await;
    let runs = s.ns.api::<StageRun>();
    let archive = archive();
    create(&runs, quick("foo-1-dev", 1)).await;
    create(&runs, long("foo-2-dev", 2)).await;
    let done = wait_for(&runs, "foo-1-dev", "foo-1-dev to pass", T, |sr| {
        phase(sr) == Some(StagePhase::Succeeded)
    })
    .await;
    let running = support::wait_jobs_building(&runs, "foo-2-dev", T).await;

    wait_gone(&runs, "foo-1-dev").await;
    let archived = archive
        .stage_run(&done.uid().expect("uid"))
        .await
        .expect("read the archive")
        .expect("the finished run is in the archive");
    // Its outcome, ids and jobs, as it left the cluster.
    same_outcome(&archived, &done);
    assert_eq!(archived.spec.pipeline_counter, 1);
    assert_eq!(archived.namespace().as_deref(), Some(s.ns.name.as_str()));
    let history = archive
        .stage_history(std::slice::from_ref(&s.ns.name), "foo", "DEV", &[], 0, 10)
        .await
        .expect("read the history");
    assert_eq!(history.total, 1);
    assert_eq!(history.runs[0].uid(), done.uid());

    // The running run is where it was, and not in the archive.
    let still = runs.get("foo-2-dev").await.expect("the running run stays");
    assert_eq!(still.uid(), running.uid());
    assert!(!still.is_finished());
    let not_archived = archive
        .stage_run(&running.uid().expect("uid"))
        .await
        .expect("read the archive");
    assert!(not_archived.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_request_is_archived_before_its_ttl_deletes_it() {
    let _db = DATABASE.read().await;
    let s = setup("archive-request", |ns| world::archiving_config(ns, None)).await;
    let runs = s.ns.api::<StageRun>();
    create(&runs, quick("foo-1-dev", 1)).await;
    wait_for(&runs, "foo-1-dev", "foo-1-dev to pass", T, |sr| {
        phase(sr) == Some(StagePhase::Succeeded)
    })
    .await;
    let requests = s.ns.api::<CancelRequest>();
    let request: CancelRequest = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest",
        "metadata": {"name": "too-late"},
        "spec": {"target": {"stageRun": "foo-1-dev"}, "reason": "superseded",
                 "requestedBy": "alice", "ttlSecondsAfterFinished": 1}
    }))
    .expect("request");
    let created = requests
        .create(&PostParams::default(), &request)
        .await
        .expect("create CancelRequest");
    let lp = ListParams::default().fields("metadata.name=too-late");
    wait_list(
        &requests,
        &lp,
        "too-late deleted after its TTL",
        T,
        |items| items.is_empty(),
    )
    .await;
    let archived = archive()
        .cancel_request(&created.uid().expect("uid"))
        .await
        .expect("read the archive")
        .expect("the request is in the archive");
    let status = archived.status.expect("status");
    assert_eq!(status.phase, Some(RequestPhase::Completed));
    assert_eq!(status.targets.len(), 1);
    assert_eq!(status.targets[0].outcome, TargetOutcome::AlreadyFinished);
    assert_eq!(archived.spec.requested_by, "alice");
}

/// A finished run as it would leave the cluster, in a namespace of no
/// cluster (these rows only exercise the database).
fn finished(ns: &str, name: &str, uid: &str, counter: i64, id: i64, job_id: i64) -> StageRun {
    serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
        "metadata": {"name": name, "namespace": ns, "uid": uid,
                     "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"pipeline": "foo", "pipelineCounter": counter, "stage": "DEV",
                 "jobs": [{"name": "build", "template": {"spec": {"containers": [
                     {"name": "main", "image": "busybox", "command": ["make"]}]}}}]},
        "status": {"id": id, "phase": "Succeeded", "result": "Passed",
                   "completionTime": "2025-01-01T00:01:00Z",
                   "jobs": [{"name": "build", "id": job_id, "state": "Completed", "result": "Passed"}]}
    }))
    .expect("stagerun")
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}-{nanos:x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_archived_twice_is_one_row() {
    let _db = DATABASE.read().await;
    let archive = archive();
    let ns = unique("archived-twice");
    let uid = unique("uid");
    let run = finished(&ns, "foo-1-dev", &uid, 1, 1, 1);
    assert_eq!(
        archive
            .archive_stage_runs(std::slice::from_ref(&run))
            .await
            .expect("store"),
        1
    );
    // Again, as after a crash between the archive's commit and the delete;
    // and twice in one batch.
    assert_eq!(
        archive
            .archive_stage_runs(&[run.clone(), run.clone()])
            .await
            .expect("store again"),
        0
    );
    let page = archive
        .stage_history(std::slice::from_ref(&ns), "foo", "DEV", &[], 0, 10)
        .await
        .expect("history");
    assert_eq!(page.total, 1);
    assert_eq!(page.runs.len(), 1);

    // A new run under the same name is another run.
    let again = finished(&ns, "foo-1-dev", &unique("uid"), 2, 2, 2);
    assert_eq!(
        archive.archive_stage_runs(&[again]).await.expect("store"),
        1
    );
    let page = archive
        .stage_history(std::slice::from_ref(&ns), "foo", "DEV", &[], 0, 10)
        .await
        .expect("history");
    assert_eq!(page.total, 2);
    // Newest pipeline run first, as GoCD's history.
    let counters: Vec<i64> = page.runs.iter().map(|r| r.spec.pipeline_counter).collect();
    assert_eq!(counters, [2, 1]);
    let one = archive
        .stage_history(std::slice::from_ref(&ns), "foo", "DEV", &[], 1, 1)
        .await
        .expect("history");
    assert_eq!((one.total, one.runs.len()), (2, 1));
    assert_eq!(one.runs[0].uid().as_deref(), Some(uid.as_str()));
}

/// What a controller killed between the archive's commit and the delete
/// leaves: a finished run both in the archive and in the cluster. The REST
/// API shows it once meanwhile; the next controller deletes it from the
/// cluster and stores nothing again; it is neither lost nor shown twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_left_in_both_places_by_a_crash_is_shown_once_and_moved_once() {
    let _db = DATABASE.read().await;
    let archive = archive();
    // A controller that archives nothing runs the stage to its end.
    let mut s = setup("archive-crash", |ns| world::archiving_config(ns, None)).await;
    world::grant_readers_and_cancellers(&s.ns).await;
    let runs = s.ns.api::<StageRun>();
    create(&runs, quick("foo-1-dev", 1)).await;
    let done = wait_for(&runs, "foo-1-dev", "the run to pass", T, |sr| {
        phase(sr) == Some(StagePhase::Succeeded)
    })
    .await;
    let uid = done.uid().expect("uid");
    s._controller = world::AbortOnDrop(Vec::new());

    // The crash: archived (as retention stores it), not deleted.
    let stored = archive
        .archive_stage_runs(&[cancel_operator::archive::trimmed_run(&done)])
        .await
        .expect("store");
    assert_eq!(stored, 1);
    let (addr, _server, http) = sidecar(&s).await;
    world::wait_cached(&http, &format!("http://{addr}"), &uid, "SUCCEEDED").await;
    let (status, history) = ask(
        &http,
        addr,
        "GET",
        "/go/api/stages/foo/DEV/history",
        "application/json",
    )
    .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["pagination"]["total"], 1, "{history}");
    let (_, pipelines) = ask(
        &http,
        addr,
        "GET",
        "/go/api/pipelines/foo/history",
        "application/json",
    )
    .await;
    assert_eq!(pipelines["pagination"]["total"], 1, "{pipelines}");
    assert_eq!(
        pipelines["pipelines"][0]["stages"].as_array().map(Vec::len),
        Some(1),
        "{pipelines}"
    );

    // The next controller finishes the move.
    let handle = tokio::spawn(controller::run(
        s.ns.client.clone(),
        world::archiving_config(&s.ns.name, Some(Duration::from_secs(1))),
    ));
    s._controller = world::AbortOnDrop(vec![handle.abort_handle()]);
    wait_gone(&runs, "foo-1-dev").await;
    let page = archive
        .stage_history(std::slice::from_ref(&s.ns.name), "foo", "DEV", &[], 0, 10)
        .await
        .expect("history");
    assert_eq!(page.total, 1, "one row for the run");
    same_outcome(&page.runs[0], &done);
    let (_, after) = ask(
        &http,
        addr,
        "GET",
        "/go/api/stages/foo/DEV/history",
        "application/json",
    )
    .await;
    assert_eq!(after, history, "the same history, from the archive alone");
}

/// The REST API only reads: it answers from the archive as a role that can
/// only `SELECT` (the chart's `sidecar.archive.urlSecret`), and never
/// writes to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_reads_the_archive_as_a_role_that_can_only_select() {
    let _db = DATABASE.read().await;
    let s = setup("archive-reader", |ns| {
        world::archiving_config(ns, Some(Duration::from_secs(1)))
    })
    .await;
    world::grant_readers_and_cancellers(&s.ns).await;
    let runs = s.ns.api::<StageRun>();
    create(&runs, quick("foo-1-dev", 1)).await;
    wait_gone(&runs, "foo-1-dev").await;

    let owner = sqlx::PgPool::connect(&support::archive_url())
        .await
        .expect("connect as the owner");
    let role = unique("reader").replace('-', "_");
    let password = unique("pw");
    // Identifiers and passwords cannot be bound; these are our own.
    for statement in [
        format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        // As the README says: every table, and those later migrations add.
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&owner)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let owner_url = support::archive_url();
    let (_, at_host) = owner_url.split_once('@').expect("a URL with credentials");
    let reader_url = format!("postgres://{role}:{password}@{at_host}");
    let reader = sqlx::PgPool::connect(&reader_url)
        .await
        .expect("connect as the reader");
    let refused = sqlx::query("DELETE FROM stage_runs WHERE false")
        .execute(&reader)
        .await;
    assert!(refused.is_err(), "the reader role can write");

    let (addr, _server, http) = sidecar_at(&s, reader_url).await;
    let (status, body) = ask(
        &http,
        addr,
        "GET",
        "/go/api/stages/foo/DEV/history",
        "application/json",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pagination"]["total"], 1, "{body}");
    let text = support::get_text(&http, &format!("http://{addr}/readyz?verbose")).await;
    assert!(text.contains("[+]archive ok"), "{text}");
}

/// TLS to the database, as a managed one is reached: with `verify-full`
/// and the CA that signed the database's certificate the archive connects,
/// encrypted; without that CA (the public roots only), or by a host name
/// that the certificate does not name, it refuses to, while `verify-ca`
/// accepts the latter (the chain is good; only the name differs).
#[tokio::test]
async fn the_archive_checks_the_database_certificate_as_the_url_asks() {
    let _db = DATABASE.read().await;
    let url = support::archive_url();
    let ca = support::cluster_dir().join("postgres-ca.crt");
    assert!(ca.exists(), "{}", ca.display());
    let with = |url: &str, mode: &str, root: bool| {
        let mut with = format!("{url}?sslmode={mode}");
        if root {
            with.push_str(&format!("&sslrootcert={}", ca.display()));
        }
        with
    };
    let ping = |url: String| async move { Archive::connect(&url, 1).expect("URL").ping().await };

    let verified = with(&url, "verify-full", true);
    ping(verified.clone())
        .await
        .expect("verify-full with the database's CA");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&verified)
        .await
        .expect("connect");
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .expect("pg_stat_ssl");
    assert!(ssl, "the connection is not encrypted");

    let refused = ping(with(&url, "verify-full", false)).await;
    assert!(
        refused.is_err(),
        "verify-full accepted a certificate that no trusted CA signed"
    );
    // The certificate names 127.0.0.1, not localhost.
    let by_name = url.replacen("@127.0.0.1:", "@localhost:", 1);
    assert_ne!(by_name, url);
    let refused = ping(with(&by_name, "verify-full", true)).await;
    assert!(
        refused.is_err(),
        "verify-full accepted a certificate for another host"
    );
    ping(with(&by_name, "verify-ca", true))
        .await
        .expect("verify-ca with the database's CA, by another name");
}

/// Without an archive, ids continue above every id the cluster's runs
/// carry when the counters' ConfigMap is lost or edited back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_continue_above_the_cluster_after_the_counters_are_lost() {
    let mut s = setup("cluster-ids", world::controller_config).await;
    let runs = s.ns.api::<StageRun>();
    create(&runs, quick("foo-1-dev", 1)).await;
    let mut done = wait_for(&runs, "foo-1-dev", "the run to pass", T, |sr| {
        phase(sr) == Some(StagePhase::Succeeded)
    })
    .await;
    s._controller = world::AbortOnDrop(Vec::new());
    // Ids well past the counters, as a run from before a reinstall has.
    let status = done.status.as_mut().expect("status");
    status.id = Some(50_000);
    for job in &mut status.jobs {
        job.id += 90_000;
    }
    let high_job = status.jobs.iter().map(|j| j.id).max().expect("a job");
    runs.replace_status("foo-1-dev", &PostParams::default(), &done)
        .await
        .expect("raise the run's ids");
    s.ns.api::<ConfigMap>()
        .delete("cancel-operator-ids", &Default::default())
        .await
        .expect("delete the id counters");

    let handle = world::spawn_controller(s.ns.client.clone(), &s.ns.name);
    s._controller = world::AbortOnDrop(vec![handle.abort_handle()]);
    create(&runs, quick("foo-2-dev", 2)).await;
    let next = wait_for(&runs, "foo-2-dev", "ids for foo-2-dev", T, |sr| {
        sr.status
            .as_ref()
            .is_some_and(|s| s.id.is_some() && !s.jobs.is_empty())
    })
    .await;
    let status = next.status.expect("status");
    assert!(status.id > Some(50_000), "stage id {:?}", status.id);
    for j in &status.jobs {
        assert!(j.id > high_job, "job id {} not above {high_job}", j.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_continue_above_the_archive_after_the_counters_are_lost() {
    let _db = DATABASE.read().await;
    let archive = archive();
    let ns = TestNamespace::new("archive-ids").await;
    support::install_crds(&ns.client).await;
    let runs = ns.api::<StageRun>();
    let first = tokio::spawn(controller::run(
        ns.client.clone(),
        world::archiving_config(&ns.name, None),
    ));
    let stop_first = world::AbortOnDrop(vec![first.abort_handle()]);
    create(&runs, quick("foo-1-dev", 1)).await;
    wait_for(&runs, "foo-1-dev", "an id for foo-1-dev", T, |sr| {
        sr.status.as_ref().is_some_and(|s| s.id.is_some())
    })
    .await;

    // History from before: ids well past any this cluster handed out.
    let (stage, job) = archive.max_ids().await.expect("highest ids");
    let (old_stage, old_job) = (stage + 1000, job + 5000);
    let old = finished(
        &unique("before-reinstall"),
        "foo-1-dev",
        &unique("uid"),
        1,
        old_stage,
        old_job,
    );
    archive.archive_stage_runs(&[old]).await.expect("store");

    // The counters are lost, and the controller starts again.
    drop(stop_first);
    ns.api::<ConfigMap>()
        .delete("cancel-operator-ids", &Default::default())
        .await
        .expect("delete the id counters");
    let second = tokio::spawn(controller::run(
        ns.client.clone(),
        world::archiving_config(&ns.name, None),
    ));
    let _stop_second = world::AbortOnDrop(vec![second.abort_handle()]);
    create(&runs, quick("foo-2-dev", 2)).await;
    let next = wait_for(&runs, "foo-2-dev", "an id for foo-2-dev", T, |sr| {
        sr.status
            .as_ref()
            .is_some_and(|s| s.id.is_some() && !s.jobs.is_empty())
    })
    .await;
    let status = next.status.expect("status");
    assert!(
        status.id > Some(old_stage),
        "stage id {:?} not above the archive's {old_stage}",
        status.id
    );
    for j in &status.jobs {
        assert!(
            j.id > old_job,
            "job id {} not above the archive's {old_job}",
            j.id
        );
    }
}

/// Starts the stopped database again when dropped, whatever the test did.
struct DatabaseBack;

impl Drop for DatabaseBack {
    fn drop(&mut self) {
        support::start_component("postgres");
    }
}

/// The value of an unlabelled metric in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_complete_while_the_archive_is_away_and_runs_move_once_it_is_back() {
    let _db = DATABASE.write().await;
    let metrics_at = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let s = setup("archive-away", |ns| controller::Config {
        metrics_address: Some(metrics_at),
        ..world::archiving_config(ns, Some(Duration::from_secs(1)))
    })
    .await;
    let runs = s.ns.api::<StageRun>();
    create(&runs, long("foo-1-dev", 1)).await;
    support::wait_jobs_building(&runs, "foo-1-dev", T).await;

    tokio::task::spawn_blocking(|| support::stop_component("postgres"))
        .await
        .expect("stop postgres");
    let back = DatabaseBack;
    let request: CancelRequest = serde_json::from_value(json!({
        "apiVersion": "cancel.dev/v1alpha1", "kind": "CancelRequest",
        "metadata": {"name": "stop-it"},
        "spec": {"target": {"stageRun": "foo-1-dev"}, "reason": "superseded", "requestedBy": "alice"}
    }))
    .expect("request");
    s.ns.api::<CancelRequest>()
        .create(&PostParams::default(), &request)
        .await
        .expect("create CancelRequest");
    let cancelled = wait_for(&runs, "foo-1-dev", "foo-1-dev cancelled", T, |sr| {
        phase(sr) == Some(StagePhase::Failed)
    })
    .await;
    let status = cancelled.status.as_ref().expect("status");
    assert_eq!(status.result, Some(RunResult::Cancelled));

    // Due for the archive, which fails: the run stays in the cluster.
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://{metrics_at}/metrics");
    support::eventually("a failed archive pass", T, || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let text = support::get_text(&http, &url).await;
            match metric(&text, "cancel_operator_archive_errors_total") {
                Some(n) if n >= 1.0 => Ok(()),
                other => Err(format!("archive errors: {other:?}")),
            }
        }
    })
    .await;
    let kept = runs
        .get("foo-1-dev")
        .await
        .expect("not deleted while unarchived");
    assert_eq!(kept.uid(), cancelled.uid());

    // Back: the run moves.
    drop(back);
    wait_gone(&runs, "foo-1-dev").await;
    let archived = archive()
        .stage_run(&cancelled.uid().expect("uid"))
        .await
        .expect("read the archive")
        .expect("archived once the database is back");
    same_outcome(&archived, &cancelled);
    let text = support::get_text(&http, &url).await;
    assert!(metric(&text, "cancel_operator_archived_total").is_some_and(|n| n >= 1.0));
}

/// What the REST API answers to `path`, asked as the operator (who may read
/// and cancel in the test's namespace): status and JSON body, with the
/// sidecar's own address replaced, so that two sidecars' answers compare.
async fn ask(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    accept: &str,
) -> (u16, serde_json::Value) {
    let url = format!("http://{addr}{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let r = http
        .request(method, &url)
        .bearer_auth(support::token(support::User::Operator))
        .header("Accept", accept)
        .header("X-GoCD-Confirm", "true")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let text = text.replace(&format!("http://{addr}"), "http://sidecar");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, body)
}

/// The reads compared before and after a run moves to the archive: every
/// GoCD read of stages and pipelines, in each of its forms.
const READS: [(&str, &str); 11] = [
    ("/go/api/stages/foo/DEV/history", "application/json"),
    ("/go/api/stages/foo/DEV/history/1", "application/json"),
    (
        "/go/api/stages/foo/DEV/history",
        "application/vnd.go.cd.v3+json",
    ),
    (
        "/go/api/stages/foo/DEV/history?page_size=10&after=0",
        "application/vnd.go.cd.v3+json",
    ),
    ("/go/api/stages/foo/DEV/instance/1/1", "application/json"),
    (
        "/go/api/stages/foo/1/DEV/1",
        "application/vnd.go.cd.v3+json",
    ),
    ("/go/api/pipelines/foo/history", "application/json"),
    ("/go/api/pipelines/foo/history/1", "application/json"),
    (
        "/go/api/pipelines/foo/history",
        "application/vnd.go.cd.v1+json",
    ),
    ("/go/api/pipelines/foo/instance/2", "application/json"),
    ("/go/api/pipelines/foo/2", "application/vnd.go.cd.v1+json"),
];

async fn sidecar(s: &Served) -> (std::net::SocketAddr, world::AbortOnDrop, reqwest::Client) {
    sidecar_at(s, support::archive_url()).await
}

/// A REST API reading the archive at `url`.
async fn sidecar_at(
    s: &Served,
    url: String,
) -> (std::net::SocketAddr, world::AbortOnDrop, reqwest::Client) {
    let (addr, server) = world::spawn_sidecar_reading(
        support::client(support::User::Admin).await,
        &s.ns.name,
        Duration::from_secs(1),
        url,
    )
    .await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    world::wait_ready(&http, addr).await;
    (addr, world::AbortOnDrop(vec![server.abort_handle()]), http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_tasks_read_the_same_before_and_after_archiving() {
    let _db = DATABASE.read().await;
    // First a controller that archives nothing: the answers from the cluster.
    let mut s = setup("archive-reads", |ns| world::archiving_config(ns, None)).await;
    world::grant_readers_and_cancellers(&s.ns).await;
    let runs = s.ns.api::<StageRun>();
    let mut uids = Vec::new();
    for counter in 1..=2 {
        let name = format!("foo-{counter}-dev");
        create(&runs, quick(&name, counter)).await;
        let done = wait_for(&runs, &name, "the run to pass", T, |sr| {
            phase(sr) == Some(StagePhase::Succeeded)
        })
        .await;
        uids.push(done.uid().expect("uid"));
    }
    let (addr, before_server, http) = sidecar(&s).await;
    for uid in &uids {
        world::wait_cached(&http, &format!("http://{addr}"), uid, "SUCCEEDED").await;
    }
    let task = format!("/v3/tasks/{}", uids[0]);
    let reads: Vec<(String, &str)> = (READS.iter())
        .map(|(path, accept)| (path.to_string(), *accept))
        .chain([(task.clone(), "application/json")])
        .collect();
    let mut before = Vec::new();
    for (path, accept) in &reads {
        let answer = ask(&http, addr, "GET", path, accept).await;
        assert_eq!(answer.0, 200, "{path}: {}", answer.1);
        before.push(answer);
    }
    assert_eq!(before[0].1["pagination"]["total"], 2);
    drop(before_server);

    // Then one that moves them: gone from the cluster, in the archive.
    s._controller = world::AbortOnDrop(Vec::new());
    let handle = tokio::spawn(controller::run(
        s.ns.client.clone(),
        world::archiving_config(&s.ns.name, Some(Duration::from_secs(1))),
    ));
    s._controller = world::AbortOnDrop(vec![handle.abort_handle()]);
    wait_gone(&runs, "foo-1-dev").await;
    wait_gone(&runs, "foo-2-dev").await;

    // A sidecar that never saw them in the cluster answers from the archive
    // alone, the same.
    let (addr, _server, http) = sidecar(&s).await;
    for ((path, accept), expected) in reads.iter().zip(&before) {
        let answer = ask(&http, addr, "GET", path, accept).await;
        assert_eq!(&answer, expected, "{path} ({accept})");
    }

    // Cancels aimed at archived runs get each API's answer for a finished run.
    let (status, body) = ask(
        &http,
        addr,
        "POST",
        &format!("{task}/actions/cancel"),
        "application/json",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"][0]["detail"],
        "Task state is SUCCEEDED and therefore cannot be canceled"
    );
    let (status, body) = ask(
        &http,
        addr,
        "POST",
        "/go/api/stages/foo/DEV/cancel",
        "application/json",
    )
    .await;
    assert_eq!(
        (status, &body["message"]),
        (200, &json!("Stage is not active. Cancellation Ignored."))
    );
    let (status, body) = ask(
        &http,
        addr,
        "POST",
        "/go/api/stages/foo/1/DEV/1/cancel",
        "application/vnd.go.cd.v3+json",
    )
    .await;
    assert_eq!(
        (status, &body["message"]),
        (200, &json!("Stage is not active. Cancellation Ignored."))
    );
    for path in [
        "/go/api/stages/foo/NOPE/cancel",
        "/go/api/stages/foo/9/DEV/1/cancel",
    ] {
        let (status, _) = ask(&http, addr, "POST", path, "application/vnd.go.cd.v3+json").await;
        assert_eq!(status, 404, "{path}: neither place has it");
    }

    // A run in the cluster beside them: one history, the cluster's first.
    create(&runs, long("foo-3-dev", 3)).await;
    let running = support::wait_jobs_building(&runs, "foo-3-dev", T).await;
    world::wait_cached(
        &http,
        &format!("http://{addr}"),
        &running.uid().expect("uid"),
        "RUNNING",
    )
    .await;
    let (status, page) = ask(
        &http,
        addr,
        "GET",
        "/go/api/stages/foo/DEV/history/1",
        "application/json",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["pagination"]["total"], 3);
    assert_eq!(
        page["stages"], before[0].1["stages"],
        "the archived runs follow the cluster's"
    );
    let (_, first) = ask(
        &http,
        addr,
        "GET",
        "/go/api/stages/foo/DEV/history",
        "application/json",
    )
    .await;
    assert_eq!(first["stages"][0]["pipeline_counter"], 3);
    assert_eq!(
        first["stages"].as_array().expect("stages")[1..],
        before[0].1["stages"].as_array().expect("stages")[..]
    );

    // A pipeline run whose first stage is archived and whose second runs in
    // the cluster reads as one, in every form of the pipeline history.
    create(
        &runs,
        stage_run("foo-2-qa")
            .counter(2)
            .stage("QA")
            .job("build", json!({"sim.cancel.dev/run-for": "600s"}))
            .build(),
    )
    .await;
    let qa = support::wait_jobs_building(&runs, "foo-2-qa", T).await;
    world::wait_cached(
        &http,
        &format!("http://{addr}"),
        &qa.uid().expect("uid"),
        "RUNNING",
    )
    .await;
    let stage_names = |pipeline: &serde_json::Value| -> Vec<String> {
        (pipeline["stages"].as_array().expect("stages").iter())
            .map(|s| s["name"].as_str().expect("name").to_string())
            .collect()
    };
    let (status, instance) = ask(
        &http,
        addr,
        "GET",
        "/go/api/pipelines/foo/2",
        "application/vnd.go.cd.v1+json",
    )
    .await;
    assert_eq!(status, 200, "{instance}");
    assert_eq!(stage_names(&instance), ["DEV", "QA"]);
    let (_, legacy) = ask(
        &http,
        addr,
        "GET",
        "/go/api/pipelines/foo/history",
        "application/json",
    )
    .await;
    assert_eq!(legacy["pagination"]["total"], 3);
    let counters: Vec<i64> = (legacy["pipelines"].as_array().expect("pipelines").iter())
        .map(|p| p["counter"].as_i64().expect("counter"))
        .collect();
    assert_eq!(counters, [3, 2, 1]);
    assert_eq!(stage_names(&legacy["pipelines"][1]), ["DEV", "QA"]);
    let (_, current) = ask(
        &http,
        addr,
        "GET",
        "/go/api/pipelines/foo/history?page_size=10&after=3",
        "application/vnd.go.cd.v1+json",
    )
    .await;
    let counters: Vec<i64> = (current["pipelines"].as_array().expect("pipelines").iter())
        .map(|p| p["counter"].as_i64().expect("counter"))
        .collect();
    assert_eq!(counters, [2, 1], "{current}");
    assert_eq!(stage_names(&current["pipelines"][0]), ["DEV", "QA"]);
    assert_eq!(
        current["_links"]["previous"]["href"],
        "http://sidecar/go/api/pipelines/foo/history?before=2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_need_the_archive_say_unavailable_while_it_is_away() {
    let _db = DATABASE.write().await;
    let s = setup("archive-reads-away", |ns| {
        world::archiving_config(ns, Some(Duration::from_secs(1)))
    })
    .await;
    world::grant_readers_and_cancellers(&s.ns).await;
    let runs = s.ns.api::<StageRun>();
    let done = create(&runs, quick("foo-1-dev", 1)).await;
    wait_gone(&runs, "foo-1-dev").await;
    create(&runs, long("foo-2-dev", 2)).await;
    // Runs of another pipeline, for CodeArts and Studio to cancel.
    for counter in 1..=2 {
        let name = format!("bar-{counter}-dev");
        let run = stage_run(&name)
            .of(("bar", counter, "DEV"))
            .job("build", json!({"sim.cancel.dev/run-for": "600s"}))
            .build();
        create(&runs, run).await;
    }
    let running = support::wait_jobs_building(&runs, "foo-2-dev", T).await;
    let (addr, _server, http) = sidecar(&s).await;
    let base = format!("http://{addr}");
    let running_uid = running.uid().expect("uid");
    world::wait_cached(&http, &base, &running_uid, "RUNNING").await;
    let mut bar = Vec::new();
    for counter in 1..=2 {
        let name = format!("bar-{counter}-dev");
        let run = support::wait_jobs_building(&runs, &name, T).await;
        let uid = run.uid().expect("uid");
        world::wait_cached(&http, &base, &uid, "RUNNING").await;
        bar.push(uid);
    }
    let archived = format!("/v3/tasks/{}", done.uid().expect("uid"));
    assert_eq!(
        ask(&http, addr, "GET", &archived, "application/json")
            .await
            .0,
        200
    );
    // Task lists: the archived run and the running one.
    const LISTS: [&str; 2] = ["/v3/tasks", "/v3/apps/foo/tasks?order_by=-updated_at"];
    // Every task (foo's two and bar's two), and foo's.
    for (path, total) in LISTS.iter().zip([4, 2]) {
        let (status, body) = ask(&http, addr, "GET", path, "application/json").await;
        assert_eq!(
            (status, &body["pagination"]["total_results"]),
            (200, &json!(total)),
            "{path}: {body}"
        );
    }

    tokio::task::spawn_blocking(|| support::stop_component("postgres"))
        .await
        .expect("stop postgres");
    let back = DatabaseBack;
    for (path, accept) in &READS {
        let (status, body) = ask(&http, addr, "GET", path, accept).await;
        assert_eq!(status, 503, "{path} ({accept}): {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("Service unavailable"), "{path}: {body}");
    }
    // Ready still (cancels never need the database), and saying why the
    // history is not.
    let readyz = http
        .get(format!("{base}/readyz?verbose"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(readyz.status(), 200);
    let text = readyz.text().await.expect("readyz text");
    assert!(text.contains("[+]stagerun-cache ok"), "{text}");
    assert!(text.contains("[-]archive failed"), "{text}");
    let metrics = support::get_text(&http, &format!("{base}/metrics")).await;
    assert!(
        metrics.contains("cancel_operator_archive_query_errors_total{"),
        "{metrics}"
    );
    let (status, body) = ask(&http, addr, "GET", &archived, "application/json").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errors"][0]["code"], 10015);
    assert_eq!(body["errors"][0]["title"], "CF-ServiceUnavailable");
    // A task list is whole or not given: never the cluster's part alone.
    for path in LISTS {
        let (status, body) = ask(&http, addr, "GET", path, "application/json").await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["errors"][0]["code"], 10015, "{path}: {body}");
        assert_eq!(body["errors"][0]["title"], "CF-ServiceUnavailable");
    }
    // CodeArts: a 500 in its error format for what needs the archive: the
    // history, a build's details, a stop of a build only the archive has.
    for (method, path) in [
        ("GET", "/v3/jobs/foo/history"),
        ("GET", "/v3/jobs/foo/1/history-details"),
        ("GET", "/v3/jobs/foo/2/history-details"),
        ("POST", "/v3/jobs/foo/1/stop"),
    ] {
        let (status, body) = ask(&http, addr, method, path, "application/json").await;
        assert_eq!(status, 500, "{path}: {body}");
        assert_eq!(body["error_code"], "CB.00060299", "{path}: {body}");
    }
    // Studio: its envelope's internal failure; Crafter's v1 message.
    let archived_uid = done.uid().expect("uid");
    let (status, body) = ask(
        &http,
        addr,
        "GET",
        "/studio/api/2/publish/packages?siteId=foo",
        "application/json",
    )
    .await;
    assert_eq!(
        (status, &body["response"]["code"]),
        (500, &json!(1000)),
        "{body}"
    );
    let (status, body) = ask_json(
        &http,
        addr,
        "/studio/api/2/publish/cancel",
        &json!({"siteId": "foo", "packageIds": [archived_uid]}),
    )
    .await;
    assert_eq!(
        (status, &body["response"]["code"]),
        (500, &json!(1000)),
        "{body}"
    );
    let (status, body) = ask_json(
        &http,
        addr,
        "/api/1/services/api/1/publish/cancel-publish-requests.json",
        &json!({"site_id": "foo", "package_ids": [archived_uid]}),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Internal server error. "), "{body}");
    // What the cluster has answers without it: a task's status, a stop, a
    // Studio cancel.
    let (status, body) = ask(
        &http,
        addr,
        "GET",
        "/v3/jobs/foo/status",
        "application/json",
    )
    .await;
    assert_eq!((status, body), (200, json!({"result": true})));
    let (status, body) = ask(
        &http,
        addr,
        "POST",
        "/v3/jobs/bar/1/stop",
        "application/json",
    )
    .await;
    assert_eq!((status, body), (200, json!({"result": true})));
    let (status, body) = ask_json(
        &http,
        addr,
        "/studio/api/2/publish/cancel",
        &json!({"siteId": "bar", "packageIds": [bar[1]]}),
    )
    .await;
    assert_eq!(
        (status, &body["response"]["code"]),
        (200, &json!(0)),
        "{body}"
    );
    let requests = (s
        .ns
        .api::<CancelRequest>()
        .list(&ListParams::default())
        .await)
        .expect("list requests");
    let mut targets: Vec<Vec<String>> = (requests.items.iter())
        .filter_map(|r| r.spec.target.uids.clone())
        .collect();
    targets.sort();
    let mut want = vec![vec![bar[0].clone()], vec![bar[1].clone()]];
    want.sort();
    assert_eq!(targets, want);
    // What is in the cluster still reads, and cancels.
    let (status, body) = ask(
        &http,
        addr,
        "GET",
        &format!("/v3/tasks/{running_uid}"),
        "application/json",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = ask(
        &http,
        addr,
        "POST",
        &format!("/v3/tasks/{running_uid}/actions/cancel"),
        "application/json",
    )
    .await;
    assert_eq!(
        (status, &body["state"]),
        (202, &json!("CANCELING")),
        "{body}"
    );

    // Back: the history answers again.
    drop(back);
    support::eventually("the history back", T, || {
        let http = http.clone();
        async move {
            match ask(&http, addr, "GET", READS[0].0, READS[0].1).await {
                (200, body) if body["pagination"]["total"] == 2 => Ok(()),
                (status, body) => Err(format!("{status}: {body}")),
            }
        }
    })
    .await;
    let text = support::get_text(&http, &format!("{base}/readyz?verbose")).await;
    assert!(text.contains("[+]archive ok"), "{text}");
    let metrics = support::get_text(&http, &format!("{base}/metrics")).await;
    assert!(
        metrics.contains(
            "cancel_operator_archive_query_seconds_count{query=\"read a stage's archived runs\"}"
        ),
        "{metrics}"
    );
    // Every task again, foo's and bar's.
    let (status, body) = ask(&http, addr, "GET", LISTS[0], "application/json").await;
    assert_eq!(
        (status, &body["pagination"]["total_results"]),
        (200, &json!(4)),
        "{body}"
    );
    let (status, body) = ask(
        &http,
        addr,
        "GET",
        "/v3/jobs/foo/history",
        "application/json",
    )
    .await;
    assert_eq!((status, &body["total"]), (200, &json!(2)), "{body}");
}

/// A finished run of pipeline `pipeline` labelled `labels`, failing when
/// `fails`.
fn task_run(pipeline: &str, counter: i64, labels: serde_json::Value, fails: bool) -> StageRun {
    let sim = if fails {
        json!({"sim.cancel.dev/run-for": "1s", "sim.cancel.dev/exit-code": "1"})
    } else {
        json!({"sim.cancel.dev/run-for": "1s"})
    };
    stage_run(&format!("{pipeline}-{counter}-dev"))
        .pipeline(pipeline)
        .counter(counter)
        .labels(labels)
        .job("build", sim)
        .build()
}

/// The Cloud Foundry task lists compared before and after the runs move
/// to the archive: filters, both orders each way, pages, label selectors,
/// an app's tasks. `{uid0}` and `{uid2}` stand for runs' guids.
const TASK_LISTS: [&str; 19] = [
    "/v3/tasks",
    "/v3/tasks?order_by=-created_at",
    "/v3/tasks?order_by=-created_at&per_page=2",
    "/v3/tasks?order_by=-created_at&per_page=2&page=2",
    "/v3/tasks?order_by=updated_at&per_page=2&page=3",
    "/v3/tasks?order_by=-updated_at",
    "/v3/tasks?states=FAILED",
    "/v3/tasks?states=SUCCEEDED,RUNNING&order_by=-created_at&per_page=1&page=2",
    "/v3/tasks?label_selector=env%3Dprod",
    "/v3/tasks?label_selector=env+notin+(prod),!legacy&per_page=1&page=2",
    "/v3/tasks?label_selector=team+in+(x,y),env!%3Dstaging",
    "/v3/tasks?sequence_ids=1,3&names=foo-1-dev,foo-3-dev,bar-1-dev",
    "/v3/tasks?guids={uid0},{uid2}&order_by=-updated_at",
    "/v3/tasks?page=9&per_page=2",
    "/v3/apps/foo/tasks?order_by=-created_at",
    "/v3/apps/bar/tasks?per_page=1&page=2",
    "/v3/apps/bar/tasks?label_selector=env",
    "/v3/apps/nope/tasks",
    "/v3/apps/bar/tasks?label_selector=env+in+(prod,staging)&order_by=-created_at",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_lists_read_the_same_before_and_after_archiving() {
    let _db = DATABASE.read().await;
    // First a controller that archives nothing: the answers from the cluster.
    let mut s = setup("archive-lists", |ns| world::archiving_config(ns, None)).await;
    world::grant_readers_and_cancellers(&s.ns).await;
    let runs = s.ns.api::<StageRun>();
    let made = [
        task_run("foo", 1, json!({"env": "prod"}), false),
        task_run("foo", 2, json!({"env": "dev", "team": "x"}), true),
        task_run("foo", 3, json!({}), false),
        task_run("bar", 1, json!({"env": "prod", "team": "y"}), false),
        task_run("bar", 2, json!({"env": "staging", "legacy": "1"}), true),
    ];
    let names: Vec<String> = made.iter().map(|r| r.name_any()).collect();
    for run in made {
        create(&runs, run).await;
    }
    let mut uids = Vec::new();
    for name in &names {
        let done = wait_for(&runs, name, "the run to finish", T, |sr| sr.is_finished()).await;
        uids.push(done.uid().expect("uid"));
    }
    let (addr, before_server, http) = sidecar(&s).await;
    for (uid, name) in uids.iter().zip(&names) {
        let state = if name.ends_with("2-dev") {
            "FAILED"
        } else {
            "SUCCEEDED"
        };
        world::wait_cached(&http, &format!("http://{addr}"), uid, state).await;
    }
    let lists: Vec<String> = (TASK_LISTS.iter())
        .map(|p| p.replace("{uid0}", &uids[0]).replace("{uid2}", &uids[2]))
        .collect();
    let mut before = Vec::new();
    for path in &lists {
        before.push(ask(&http, addr, "GET", path, "application/json").await);
    }
    let total = |answer: &(u16, serde_json::Value)| answer.1["pagination"]["total_results"].clone();
    // The answers are worth comparing: each list selects what it should.
    assert_eq!(
        (before[0].0, total(&before[0])),
        (200, json!(5)),
        "{}",
        before[0].1
    );
    assert_eq!(total(&before[6]), 2, "failed: {}", before[6].1);
    assert_eq!(total(&before[8]), 2, "env=prod: {}", before[8].1);
    assert_eq!(
        total(&before[9]),
        2,
        "env notin (prod),!legacy: {}",
        before[9].1
    );
    assert_eq!(total(&before[10]), 2, "team in (x,y): {}", before[10].1);
    assert_eq!(
        total(&before[11]),
        3,
        "sequence ids and names: {}",
        before[11].1
    );
    assert_eq!(total(&before[12]), 2, "guids: {}", before[12].1);
    assert_eq!(total(&before[14]), 3, "foo's tasks: {}", before[14].1);
    assert_eq!(before[17].0, 404, "{}", before[17].1);
    assert_eq!(
        total(&before[18]),
        2,
        "bar's env in (prod,staging): {}",
        before[18].1
    );
    let found = lists
        .iter()
        .zip(&before)
        .enumerate()
        .filter(|(i, _)| *i != 17);
    for (_, (path, answer)) in found {
        assert_eq!(answer.0, 200, "{path}: {}", answer.1);
    }
    drop(before_server);

    // Then one that moves them: gone from the cluster, in the archive.
    s._controller = world::AbortOnDrop(Vec::new());
    let handle = tokio::spawn(controller::run(
        s.ns.client.clone(),
        world::archiving_config(&s.ns.name, Some(Duration::from_secs(1))),
    ));
    s._controller = world::AbortOnDrop(vec![handle.abort_handle()]);
    for name in &names {
        wait_gone(&runs, name).await;
    }

    // A sidecar that never saw them in the cluster answers from the archive
    // alone, the same.
    let (addr, _server, http) = sidecar(&s).await;
    for (path, expected) in lists.iter().zip(&before) {
        let answer = ask(&http, addr, "GET", path, "application/json").await;
        assert_eq!(&answer, expected, "{path}");
    }

    // A run in the cluster beside them, and a finished one archived but not
    // yet deleted (kept by a controller that archives nothing): one list,
    // each run once.
    s._controller = world::AbortOnDrop(Vec::new());
    let handle = tokio::spawn(controller::run(
        s.ns.client.clone(),
        world::archiving_config(&s.ns.name, None),
    ));
    s._controller = world::AbortOnDrop(vec![handle.abort_handle()]);
    create(&runs, long("foo-9-dev", 9)).await;
    let running = support::wait_jobs_building(&runs, "foo-9-dev", T).await;
    create(&runs, task_run("bar", 3, json!({"env": "prod"}), false)).await;
    let in_both = wait_for(&runs, "bar-3-dev", "bar-3-dev to pass", T, |sr| {
        phase(sr) == Some(StagePhase::Succeeded)
    })
    .await;
    assert_eq!(
        archive()
            .archive_stage_runs(std::slice::from_ref(&in_both))
            .await
            .expect("archive bar-3-dev"),
        1
    );
    let base = format!("http://{addr}");
    let running_uid = running.uid().expect("uid");
    let both_uid = in_both.uid().expect("uid");
    world::wait_cached(&http, &base, &running_uid, "RUNNING").await;
    world::wait_cached(&http, &base, &both_uid, "SUCCEEDED").await;
    let get = |path: &'static str| {
        let http = http.clone();
        async move { ask(&http, addr, "GET", path, "application/json").await }
    };
    let guids = |answer: &(u16, serde_json::Value)| -> Vec<String> {
        (answer.1["resources"].as_array().expect("resources").iter())
            .map(|t| t["guid"].as_str().expect("guid").to_string())
            .collect()
    };
    // Newest first: the two in the cluster, then the archive's as before.
    let all = get("/v3/tasks?order_by=-created_at").await;
    assert_eq!(total(&all), 7, "{}", all.1);
    let whole = guids(&all);
    let mut newest = whole[..2].to_vec();
    newest.sort();
    let mut cluster_uids = vec![running_uid.clone(), both_uid.clone()];
    cluster_uids.sort();
    assert_eq!(newest, cluster_uids, "{}", all.1);
    assert_eq!(
        all.1["resources"].as_array().expect("resources")[2..],
        before[1].1["resources"].as_array().expect("resources")[..]
    );
    // Pages cut across both places, each run once.
    let mut paged = Vec::new();
    for page in 1..=4 {
        let path = format!("/v3/tasks?order_by=-created_at&per_page=2&page={page}");
        let answer = ask(&http, addr, "GET", &path, "application/json").await;
        assert_eq!(
            (answer.0, total(&answer)),
            (200, json!(7)),
            "{path}: {}",
            answer.1
        );
        paged.extend(guids(&answer));
    }
    assert_eq!(paged, whole);
    // Filters select across both places.
    let prod = get("/v3/tasks?label_selector=env%3Dprod&order_by=-created_at").await;
    assert_eq!(total(&prod), 3, "{}", prod.1);
    assert_eq!(guids(&prod)[0], both_uid);
    let bar_prod =
        get("/v3/apps/bar/tasks?label_selector=env+in+(prod)&order_by=-created_at").await;
    assert_eq!(total(&bar_prod), 2, "{}", bar_prod.1);
    assert_eq!(guids(&bar_prod)[0], both_uid);
    let running_only = get("/v3/tasks?states=RUNNING").await;
    assert_eq!(guids(&running_only), [running_uid.as_str()]);
    let failed = get("/v3/tasks?states=FAILED").await;
    assert_eq!(failed, before[6]);
    let (status, bar) = get("/v3/apps/bar/tasks?order_by=-created_at").await;
    assert_eq!(status, 200, "{bar}");
    assert_eq!(bar["pagination"]["total_results"], 3, "{bar}");
    assert_eq!(bar["resources"][0]["guid"], json!(both_uid));
}

/// As [`ask`], with a JSON body.
async fn ask_json(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let url = format!("http://{addr}{path}");
    let r = http
        .post(&url)
        .bearer_auth(support::token(support::User::Operator))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, body)
}

/// A CodeArts or Studio call: method, path and, for a POST with one, its body.
type Call = (&'static str, String, Option<serde_json::Value>);

async fn call(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    (method, path, body): &Call,
) -> (u16, serde_json::Value) {
    match body {
        Some(body) => ask_json(http, addr, path, body).await,
        None => ask(http, addr, method, path, "application/json").await,
    }
}

/// The answer with each running build step's time left out: it grows while
/// the step runs.
fn without_running_times(mut answer: (u16, serde_json::Value)) -> (u16, serde_json::Value) {
    if let Some(steps) = (answer.1.get_mut("build_steps")).and_then(|s| s.as_array_mut()) {
        for step in steps.iter_mut().filter(|s| s["status"] == "running") {
            step["build_time"] = serde_json::Value::Null;
        }
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codearts_and_studio_read_the_same_before_and_after_archiving() {
    let _db = DATABASE.read().await;
    // First a controller that archives nothing: the answers from the cluster.
    let mut s = setup("archive-builds", |ns| world::archiving_config(ns, None)).await;
    world::grant_readers_and_cancellers(&s.ns).await;
    let runs = s.ns.api::<StageRun>();
    // Build task (and site) app: build 1 passed in both its stages, build 2
    // failed in its second, build 3 passed its first stage and runs its
    // second (which stays in the cluster). Task lib: one build, passed.
    let passes = json!({"sim.cancel.dev/run-for": "1s"});
    let fails = json!({"sim.cancel.dev/exit-code": "1"});
    let finished = [
        ("app-1-build", ("app", 1, "build"), &passes),
        ("app-1-test", ("app", 1, "test"), &passes),
        ("app-2-build", ("app", 2, "build"), &passes),
        ("app-2-test", ("app", 2, "test"), &fails),
        ("app-3-build", ("app", 3, "build"), &passes),
        ("lib-1-build", ("lib", 1, "build"), &passes),
    ];
    for (name, of, sim) in &finished {
        create(
            &runs,
            stage_run(name)
                .of(*of)
                .job("compile", (*sim).clone())
                .build(),
        )
        .await;
    }
    create(
        &runs,
        stage_run("app-3-deploy")
            .of(("app", 3, "deploy"))
            .job("compile", json!({"sim.cancel.dev/run-for": "600s"}))
            .build(),
    )
    .await;
    let mut uid = std::collections::BTreeMap::new();
    let mut done = Vec::new();
    for (name, _, _) in &finished {
        let run = wait_for(&runs, name, "the run to finish", T, |sr| sr.is_finished()).await;
        uid.insert(*name, run.uid().expect("uid"));
        done.push(run);
    }
    let running = support::wait_jobs_building(&runs, "app-3-deploy", T).await;
    uid.insert("app-3-deploy", running.uid().expect("uid"));
    let (addr, before_server, http) = sidecar(&s).await;
    let base = format!("http://{addr}");
    for run in &done {
        let state = match phase(run) {
            Some(StagePhase::Succeeded) => "SUCCEEDED",
            _ => "FAILED",
        };
        world::wait_cached(&http, &base, &run.uid().expect("uid"), state).await;
    }
    world::wait_cached(&http, &base, &uid["app-3-deploy"], "RUNNING").await;

    let get = |path: &str| -> Call { ("GET", path.to_string(), None) };
    let post =
        |path: &str, body: Option<serde_json::Value>| -> Call { ("POST", path.to_string(), body) };
    let studio_cancel = "/studio/api/2/publish/cancel";
    let calls: Vec<Call> = vec![
        get("/v3/jobs/app/status"),
        get("/v3/jobs/lib/status"),
        get("/v3/jobs/app/history"),
        get("/v3/jobs/app/history?offset=1&limit=1"),
        get("/v3/jobs/app/history?offset=1&limit=2"),
        get("/v3/jobs/app/history?interval=1&limit=100"),
        get("/v3/jobs/lib/history"),
        get("/v3/jobs/app/1/history-details"),
        get("/v3/jobs/app/2/history-details"),
        get("/v3/jobs/app/3/history-details"),
        get("/v3/jobs/lib/1/history-details"),
        get("/v3/jobs/app/9/history-details"),
        get("/v3/jobs/nope/history"),
        get("/studio/api/2/publish/packages?siteId=app"),
        get("/studio/api/2/publish/packages?siteId=app&offset=2&limit=3"),
        get("/studio/api/2/publish/packages?siteId=app&offset=6"),
        get("/studio/api/2/publish/packages?siteId=app&states=COMPLETED"),
        get("/studio/api/2/publish/packages?siteId=app&states=BLOCKED,READY_FOR_LIVE"),
        get("/studio/api/2/publish/packages?siteId=app&environment=BUILD&limit=2"),
        get("/studio/api/2/publish/packages?siteId=lib"),
        get("/studio/api/2/publish/packages?siteId=nope"),
        // Stops and cancels of finished builds and packages.
        post("/v3/jobs/app/1/stop", None),
        post(
            "/v3/jobs/stop",
            Some(json!({"job_id": "lib", "build_no": "1"})),
        ),
        post("/v3/jobs/app/9/stop", None),
        post("/v3/jobs/nope/1/stop", None),
        post(
            studio_cancel,
            Some(json!({"siteId": "app", "packageIds": [uid["app-1-build"], uid["app-2-test"]]})),
        ),
        post(
            studio_cancel,
            Some(json!({"siteId": "lib", "packageIds": [uid["lib-1-build"]]})),
        ),
        post(
            studio_cancel,
            Some(json!({"siteId": "app", "packageIds": [uid["lib-1-build"]]})),
        ),
        post(
            studio_cancel,
            Some(json!({"siteId": "nope", "packageIds": []})),
        ),
        post(
            "/api/1/services/api/1/publish/cancel-publish-requests.json",
            Some(json!({"site_id": "app", "package_ids": [uid["app-2-build"]]})),
        ),
    ];
    let mut before = Vec::new();
    for c in &calls {
        before.push(without_running_times(call(&http, addr, c).await));
    }
    // What the cluster answered, in part: the comparison below is only
    // worth what these are.
    let answer = |path: &str| -> &(u16, serde_json::Value) {
        let i = (calls.iter())
            .position(|(_, p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} is not asked"));
        &before[i]
    };
    assert_eq!(
        answer("/v3/jobs/app/status"),
        &(200, json!({"result": true}))
    );
    assert_eq!(
        answer("/v3/jobs/lib/status"),
        &(200, json!({"result": false}))
    );
    let history = &answer("/v3/jobs/app/history").1;
    assert_eq!(history["total"], 3, "{history}");
    let results: Vec<&serde_json::Value> = (history["history_records"].as_array())
        .expect("records")
        .iter()
        .map(|r| &r["result"])
        .collect();
    assert_eq!(
        results,
        [&json!("RUNNING"), &json!("FAILURE"), &json!("SUCCESS")]
    );
    let page = &answer("/v3/jobs/app/history?offset=1&limit=2").1;
    assert_eq!(page["history_records"][0]["build_number"], 1, "{page}");
    let steps = &answer("/v3/jobs/app/3/history-details").1["build_steps"];
    assert_eq!(steps[0]["status"], "success", "{steps}");
    assert_eq!(steps[1]["status"], "running", "{steps}");
    let queue = &answer("/studio/api/2/publish/packages?siteId=app").1;
    assert_eq!(queue["total"], 6, "{queue}");
    // Newest first: creation time (a second's), then pipeline and stage
    // counters, newest first, then name.
    let mut site: Vec<&StageRun> = (done.iter().chain([&running]))
        .filter(|r| r.spec.pipeline == "app")
        .collect();
    site.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            std::cmp::Reverse(r.spec.pipeline_counter),
            std::cmp::Reverse(r.spec.stage_counter),
            r.name_any(),
        )
    });
    let order: Vec<serde_json::Value> = site.iter().map(|r| json!(r.uid())).collect();
    let ids: Vec<serde_json::Value> = (queue["packages"].as_array())
        .expect("packages")
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(ids, order, "newest first");
    let queue =
        &answer("/studio/api/2/publish/packages?siteId=app&states=BLOCKED,READY_FOR_LIVE").1;
    assert_eq!(queue["total"], 2, "{queue}");
    assert_eq!(
        answer("/v3/jobs/app/1/stop"),
        &(200, json!({"result": false}))
    );
    assert_eq!(answer("/v3/jobs/app/9/stop").0, 404);
    assert_eq!(answer("/v3/jobs/nope/1/stop").0, 404);
    let studio: Vec<u16> = (calls.iter().zip(&before))
        .filter(|((_, p, _), _)| p == studio_cancel)
        .map(|(_, (status, _))| *status)
        .collect();
    assert_eq!(studio, [200, 200, 404, 404]);
    for (c, (status, body)) in calls.iter().zip(&before) {
        assert!(*status == 200 || *status == 404, "{c:?}: {status} {body}");
    }
    drop(before_server);

    // Then one that moves the finished runs: gone from the cluster, in the
    // archive; the running stage of build 3 stays.
    s._controller = world::AbortOnDrop(Vec::new());
    let handle = tokio::spawn(controller::run(
        s.ns.client.clone(),
        world::archiving_config(&s.ns.name, Some(Duration::from_secs(1))),
    ));
    s._controller = world::AbortOnDrop(vec![handle.abort_handle()]);
    for (name, _, _) in &finished {
        wait_gone(&runs, name).await;
    }
    let archive = archive();
    for (name, _, _) in &finished {
        let archived = archive
            .stage_run(&uid[name])
            .await
            .expect("read the archive");
        assert!(archived.is_some(), "{name} archived");
    }

    // A sidecar that never saw them in the cluster answers the same.
    let (addr, _server, http) = sidecar(&s).await;
    world::wait_cached(
        &http,
        &format!("http://{addr}"),
        &uid["app-3-deploy"],
        "RUNNING",
    )
    .await;
    for (c, expected) in calls.iter().zip(&before) {
        let answer = without_running_times(call(&http, addr, c).await);
        assert_eq!(&answer, expected, "{c:?}");
    }
    // Stops and cancels of archived builds and packages wrote nothing.
    let requests = s.ns.api::<CancelRequest>();
    let written = requests.list(&ListParams::default()).await.expect("list");
    assert!(written.items.is_empty(), "{:?}", written.items);

    // A Studio cancel of an archived package and one in the cluster
    // cancels the one in the cluster, and only it.
    let (status, body) = ask_json(
        &http,
        addr,
        studio_cancel,
        &json!({"siteId": "app", "packageIds": [uid["app-1-test"], uid["app-3-deploy"]]}),
    )
    .await;
    assert_eq!(
        (status, &body["response"]["code"]),
        (200, &json!(0)),
        "{body}"
    );
    let written = requests.list(&ListParams::default()).await.expect("list");
    let targets: Vec<Option<Vec<String>>> = (written.items.iter())
        .map(|r| r.spec.target.uids.clone())
        .collect();
    assert_eq!(targets, [Some(vec![uid["app-3-deploy"].clone()])]);
}

/// A task list by one label: namespaces, app, the label requirement, runs
/// left out (in the cluster), and the total expected.
type LabelCase = (
    &'static [&'static str],
    Option<&'static str>,
    Expression,
    &'static [&'static str],
    i64,
);

/// An archive written before the per-label counts existed: the migration
/// that adds them counts the runs already there, and a task list selected
/// by one label totals the same from the counts as counting rows does.
#[tokio::test]
async fn label_counts_added_to_an_existing_archive_count_its_runs() {
    let _db = DATABASE.read().await;
    let owner_url = support::archive_url();
    let owner = sqlx::PgPool::connect(&owner_url)
        .await
        .expect("connect as the owner");
    let database = unique("upgrade").replace('-', "_");
    // Identifiers cannot be bound; this one is our own.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&owner)
        .await
        .expect("create a database");
    let (server, _) = owner_url.rsplit_once('/').expect("a URL with a database");
    let url = format!("{server}/{database}");

    // The schema as it was before the label counts: the migrations before them.
    let dir = std::env::temp_dir().join(&database);
    std::fs::create_dir_all(&dir).expect("create a directory");
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&migrations).expect("read migrations") {
        let path = entry.expect("a migration").path();
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .to_string();
        if name.as_str() < "0005" {
            std::fs::copy(&path, dir.join(&name)).expect("copy a migration");
        }
    }
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .expect("read the earlier migrations")
        .run(&pool)
        .await
        .expect("apply the earlier migrations");
    let rows: [(&str, &str, i64, serde_json::Value); 5] = [
        ("a", "foo", 1, json!({"env": "prod", "team": "x"})),
        ("a", "foo", 2, json!({"env": "dev"})),
        ("a", "bar", 1, json!({"env": "prod"})),
        ("b", "foo", 1, json!({"env": "prod"})),
        ("a", "bar", 2, json!({})),
    ];
    for (i, (ns, pipeline, counter, labels)) in rows.iter().enumerate() {
        let name = format!("{pipeline}-{counter}-dev");
        let object = stage_run(&name).of((pipeline, *counter, "DEV")).build();
        sqlx::query(
            "INSERT INTO stage_runs (uid, namespace, name, pipeline, pipeline_counter, stage, \
             stage_counter, phase, labels, object) VALUES ($1, $2, $3, $4, $5, 'DEV', 1, \
             'Succeeded', $6, $7)",
        )
        .bind(format!("uid-{i}"))
        .bind(ns)
        .bind(&name)
        .bind(pipeline)
        .bind(counter)
        .bind(labels)
        .bind(serde_json::to_value(&object).expect("a run as JSON"))
        .execute(&pool)
        .await
        .expect("store a run the old way");
    }
    pool.close().await;

    let archive = Archive::connect(&url, 2).expect("archive URL");
    let filter = |namespaces: &[&str], pipeline: Option<&str>, labels: &[Expression]| {
        cancel_operator::archive::TaskFilter {
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            pipeline: pipeline.map(String::from),
            guids: None,
            names: None,
            phases: None,
            sequence_ids: None,
            labels: labels.to_vec(),
            excluding: Vec::new(),
        }
    };
    let order = cancel_operator::archive::TaskOrder {
        time: cancel_operator::archive::TaskTime::CreatedAt,
        descending: false,
    };
    let is = |k: &str, v: &str| Expression::Equal(k.into(), v.into());
    let prod_or_dev = Expression::In("env".into(), ["prod", "dev"].map(String::from).into());
    // (namespaces, app, selector, excluding) → total, from the counts; a
    // second label requirement makes the same list count rows.
    let cases: [LabelCase; 7] = [
        (&["a"], None, is("env", "prod"), &[], 2),
        (&["a", "b"], None, is("env", "prod"), &[], 3),
        (&["a"], Some("foo"), is("env", "prod"), &[], 1),
        (&["a"], None, prod_or_dev, &[], 3),
        (&["a"], None, is("team", "x"), &[], 1),
        (&["a"], None, is("env", "nope"), &[], 0),
        (
            &["a", "b"],
            None,
            is("env", "prod"),
            &["uid-0", "uid-2", "uid-1"],
            1,
        ),
    ];
    for (namespaces, app, selector, excluding, total) in cases {
        let f = cancel_operator::archive::TaskFilter {
            excluding: excluding.iter().map(|u| u.to_string()).collect(),
            ..filter(namespaces, app, std::slice::from_ref(&selector))
        };
        let counted = archive.tasks(&f, order, 0, 10).await.expect("a task list");
        assert_eq!(
            counted.total, total,
            "{selector:?} in {namespaces:?} of {app:?}"
        );
        assert_eq!(counted.runs.len() as i64, total, "{selector:?}");
        let rows = cancel_operator::archive::TaskFilter {
            labels: vec![selector.clone(), Expression::DoesNotExist("nothing".into())],
            ..f.clone()
        };
        let scanned = archive
            .tasks(&rows, order, 0, 10)
            .await
            .expect("a task list");
        assert_eq!(scanned.total, total, "{selector:?}, counted by rows");
    }
    drop(archive);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {database} WITH (FORCE)"
    )))
    .execute(&owner)
    .await
    .expect("drop the database");
    let _ = std::fs::remove_dir_all(&dir);
}
