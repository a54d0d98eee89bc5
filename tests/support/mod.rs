//! Test support: the local control plane (tests/cluster), its users, a
//! namespace per test, and waiting on conditions with deadlines.
#![allow(dead_code)]

use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, CustomResourceExt, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use cancel_operator::crd::{CancelRequest, StageRun};

pub mod fixture;
pub mod proxy;
pub mod python;
pub mod raw_http;
pub mod world;

#[allow(unused_imports)]
pub use fixture::stage_run;

/// A user of the test control plane (static tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum User {
    /// system:masters.
    Admin,
    /// No rights until a test grants some.
    Operator,
    Viewer,
    Nobody,
}

impl User {
    pub fn name(self) -> &'static str {
        match self {
            User::Admin => "admin",
            User::Operator => "operator",
            User::Viewer => "viewer",
            User::Nobody => "nobody",
        }
    }
}

/// The running control plane, found through `CANCEL_OPERATOR_CLUSTER` or the
/// repository's `.cluster` link (written by `make cluster-up`).
pub fn cluster_dir() -> PathBuf {
    let dir = std::env::var_os("CANCEL_OPERATOR_CLUSTER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cluster"));
    assert!(
        dir.join("ready").exists(),
        "no test control plane at {}: run the tests with `make test`, or start one with `make cluster-up`",
        dir.display()
    );
    dir
}

/// The URL of the test control plane's PostgreSQL (the archive's database).
pub fn archive_url() -> String {
    let path = cluster_dir().join("postgres.url");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

pub fn kubeconfig_path(user: User) -> PathBuf {
    cluster_dir().join(format!("{}.kubeconfig", user.name()))
}

/// A control-plane tool (kubectl, helm) acting as `user`.
pub fn tool_as(name: &str, user: User) -> std::process::Command {
    let mut cmd = std::process::Command::new(cluster_dir().join("bin").join(name));
    cmd.env("KUBECONFIG", kubeconfig_path(user));
    cmd
}

/// `kubectl apply` of `manifest` (YAML) in `ns`, as `user`; the manifest is
/// written to a file named after `file`.
pub fn kubectl_apply(user: User, ns: &str, file: &str, manifest: &str) -> std::process::Command {
    let path = std::env::temp_dir().join(format!("{ns}-{file}.yaml"));
    std::fs::write(&path, manifest).expect("write manifest");
    let mut apply = tool_as("kubectl", user);
    apply.args(["apply", "-n", ns, "-f"]).arg(path);
    apply
}

pub fn token(user: User) -> String {
    std::fs::read_to_string(cluster_dir().join(format!("{}.token", user.name())))
        .expect("token file")
        .trim()
        .to_string()
}

pub async fn config(user: User) -> Config {
    let kc = Kubeconfig::read_from(kubeconfig_path(user)).expect("kubeconfig");
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("client config")
}

pub async fn client(user: User) -> Client {
    Client::try_from(config(user).await).expect("client")
}

/// Installs (server-side applies) the CRDs and waits until they serve.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [StageRun::crd(), CancelRequest::crd()] {
        let name = crd.metadata.name.clone().expect("crd name");
        crds.patch(
            &name,
            &PatchParams::apply("cancel-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .expect("CRD established in time")
            .expect("watch CRD");
    }
}

/// A namespace of its own for one test, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<unique suffix>` as admin.
    pub async fn new(prefix: &str) -> Self {
        let client = client(User::Admin).await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let name = format!(
            "{prefix}-{:x}",
            (nanos as u64) ^ (std::process::id() as u64) << 40
        );
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("cancel.dev/test".to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        TestNamespace { name, client }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop may run outside any runtime (or inside one that is shutting
        // down), so the deletion gets a thread and a runtime of its own.
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = client(User::Admin).await;
                let _ = Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await;
            });
        });
        let _ = handle.join();
    }
}

/// Waits until `cond` holds for the named object, watching it; panics with
/// the last state seen when the deadline passes.
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, what: &str, timeout: Duration, cond: F) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: Fn(&K) -> bool,
{
    let mut stream = watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .applied_objects()
    .boxed();
    let mut last: Option<K> = None;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.try_next()).await {
            Ok(Ok(Some(obj))) => {
                if cond(&obj) {
                    return obj;
                }
                last = Some(obj);
            }
            Ok(Ok(None)) => panic!("watch of {name} ended while waiting for {what}"),
            Ok(Err(e)) => panic!("watch of {name} failed while waiting for {what}: {e}"),
            Err(_) => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last:#?}")
            }
        }
    }
}

/// Waits until `cond` holds for the list of objects selected by `lp`.
pub async fn wait_list<K, F>(
    api: &Api<K>,
    lp: &ListParams,
    what: &str,
    timeout: Duration,
    cond: F,
) -> Vec<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    F: Fn(&[K]) -> bool,
{
    match try_wait_list(api, lp, what, timeout, cond).await {
        Ok(items) => items,
        Err(items) => {
            let names: Vec<String> = items.iter().map(|o| o.name_any()).collect();
            panic!("timed out after {timeout:?} waiting for {what}; objects now: {names:?}");
        }
    }
}

/// As [`wait_list`], but hands back the objects seen last at the deadline,
/// for a caller that can say more about what did not happen.
pub async fn try_wait_list<K, F>(
    api: &Api<K>,
    lp: &ListParams,
    what: &str,
    timeout: Duration,
    cond: F,
) -> Result<Vec<K>, Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    F: Fn(&[K]) -> bool,
{
    let mut wc = watcher::Config::default();
    if let Some(l) = &lp.label_selector {
        wc = wc.labels(l);
    }
    if let Some(f) = &lp.field_selector {
        wc = wc.fields(f);
    }
    let (reader, writer) = kube::runtime::reflector::store();
    let mut stream = watcher(api.clone(), wc).reflect(writer).boxed();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ready = false;
    loop {
        if ready {
            let items: Vec<K> = reader.state().iter().map(|o| o.as_ref().clone()).collect();
            if cond(&items) {
                return Ok(items);
            }
        }
        match tokio::time::timeout_at(deadline, stream.try_next()).await {
            Ok(Ok(Some(ev))) => {
                if matches!(
                    ev,
                    watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)
                ) {
                    ready = ready || matches!(ev, watcher::Event::InitDone);
                }
            }
            Ok(Ok(None)) => panic!("watch ended while waiting for {what}"),
            Ok(Err(e)) => panic!("watch failed while waiting for {what}: {e}"),
            Err(_) => return Err(reader.state().iter().map(|o| o.as_ref().clone()).collect()),
        }
    }
}

/// Retries `check` until it returns Some, for conditions no watch can report
/// (discovery, published OpenAPI); panics with the last error at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        interval.tick().await;
        match check().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {e}")
            }
            Err(_) => {}
        }
    }
}

/// Sends the request `request` builds until its JSON answer satisfies
/// `done`, as [`eventually`] retries; returns that answer.
pub async fn eventually_json<R, D>(
    what: &str,
    timeout: Duration,
    request: R,
    done: D,
) -> serde_json::Value
where
    R: Fn() -> reqwest::RequestBuilder,
    D: Fn(&serde_json::Value) -> bool,
{
    let done = &done;
    eventually(what, timeout, || {
        let request = request();
        async move {
            let v: serde_json::Value = request
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            if done(&v) { Ok(v) } else { Err(v.to_string()) }
        }
    })
    .await
}

/// Waits until every job of the StageRun `name` (its cleanup jobs aside) is
/// Building.
pub async fn wait_jobs_building(runs: &Api<StageRun>, name: &str, timeout: Duration) -> StageRun {
    wait_for(runs, name, "its jobs building", timeout, |sr: &StageRun| {
        sr.status.as_ref().is_some_and(|s| {
            !s.jobs.is_empty()
                && (s.jobs.iter())
                    .filter(|j| !j.cleanup)
                    .all(|j| j.state == cancel_operator::crd::JobState::Building)
        })
    })
    .await
}

/// Waits until the job `job` of the StageRun `name` is Building.
pub async fn wait_job_building(
    runs: &Api<StageRun>,
    name: &str,
    job: &str,
    timeout: Duration,
) -> StageRun {
    wait_for(
        runs,
        name,
        &format!("{job} building"),
        timeout,
        |sr: &StageRun| {
            sr.status.as_ref().is_some_and(|s| {
                (s.jobs.iter())
                    .any(|j| j.name == job && j.state == cancel_operator::crd::JobState::Building)
            })
        },
    )
    .await
}

/// The Events recorded on `name` with `reason`, once at least one exists.
pub async fn events_for(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> Vec<k8s_openapi::api::core::v1::Event> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name},reason={reason}"));
    wait_list(
        &api,
        &lp,
        &format!("a {reason} event on {name}"),
        timeout,
        |items| !items.is_empty(),
    )
    .await
}

/// The body of a GET of `url`, which must answer.
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Restarts one component of the test control plane with the same flags
/// (`cluster.sh restart`), waiting until it is back.
pub fn restart_component(component: &str) {
    cluster_sh("restart", component);
}

/// Stops one component of the test control plane (`cluster.sh stop`).
pub fn stop_component(component: &str) {
    cluster_sh("stop", component);
}

/// Starts a stopped component again with its flags (`cluster.sh start`),
/// waiting until it answers.
pub fn start_component(component: &str) {
    cluster_sh("start", component);
}

fn cluster_sh(verb: &str, component: &str) {
    let status = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/cluster/cluster.sh"
    ))
    .args([verb, component])
    .env("CANCEL_OPERATOR_CLUSTER_LINK", cluster_dir())
    .status()
    .unwrap_or_else(|e| panic!("run cluster.sh {verb}: {e}"));
    assert!(status.success(), "cluster.sh {verb} {component} failed");
}
