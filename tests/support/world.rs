//! The pieces a test starts next to the control plane: the controller and
//! the sidecar in-process, RBAC grants, a users file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cancel_operator::controller;
use cancel_operator::sidecar::{self, auth::AuthMode};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::{TestNamespace, eventually};

/// Password of the users in [`UsersFile`].
pub const PASSWORD: &str = "badger";

/// A controller watching only `ns`, keeping its ids there too.
pub fn controller_config(ns: &str) -> controller::Config {
    controller::Config {
        namespaces: vec![ns.to_string()],
        state_namespace: ns.to_string(),
        id_configmap: "cancel-operator-ids".into(),
        force_margin: Duration::from_secs(1),
        leader_election: None,
        metrics_address: None,
        concurrency: controller::DEFAULT_CONCURRENCY,
        archive: None,
    }
}

/// As [`controller_config`], archiving into the test control plane's
/// PostgreSQL, finished runs kept `keep_finished` (`None`: kept for ever).
pub fn archiving_config(ns: &str, keep_finished: Option<Duration>) -> controller::Config {
    controller::Config {
        archive: Some(controller::ArchiveSettings {
            url: super::archive_url(),
            pool_size: 2,
            keep_finished,
        }),
        ..controller_config(ns)
    }
}

/// Runs a controller for `ns` until the handle is aborted or the test ends.
pub fn spawn_controller(client: Client, ns: &str) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(controller::run(client, controller_config(ns)))
}

/// A Role with one rule, bound to the given users.
pub async fn grant(ns: &TestNamespace, name: &str, rule: Value, users: &[&str]) {
    let role: Role =
        serde_json::from_value(json!({"metadata": {"name": name}, "rules": [rule]})).expect("role");
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    let subjects: Vec<Value> = users
        .iter()
        .map(|u| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": u}))
        .collect();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": subjects
    }))
    .expect("binding");
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");
}

/// Read access for viewer, operator, gocd-admin and jez; cancel rights
/// (create CancelRequests) for operator, gocd-admin and jez.
pub async fn grant_readers_and_cancellers(ns: &TestNamespace) {
    grant(
        ns,
        "stagerun-reader",
        json!({"apiGroups": ["cancel.dev"], "resources": ["stageruns"], "verbs": ["get", "list", "watch"]}),
        &["viewer", "operator", "gocd-admin", "jez"],
    )
    .await;
    grant(
        ns,
        "stagerun-canceller",
        json!({"apiGroups": ["cancel.dev"], "resources": ["cancelrequests"], "verbs": ["create"]}),
        &["operator", "gocd-admin", "jez"],
    )
    .await;
}

/// Huawei AK/SK access key of [`UsersFile`], authorised as Kubernetes user jez.
pub const ACCESS_KEY: &str = "CANCELTESTAKJEZ";
/// Secret key of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "cancel-operator-test-secret-key-0001";

/// A users file with the API documents' users: admin (as Kubernetes user gocd-admin)
/// and jez, both with password [`PASSWORD`], and the access key [`ACCESS_KEY`]
/// (as jez). Removed when dropped.
pub struct UsersFile {
    dir: PathBuf,
    pub path: PathBuf,
}

impl UsersFile {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cancel-sidecar-{tag}"));
        std::fs::create_dir_all(&dir).expect("users dir");
        let path = dir.join("users.yaml");
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        std::fs::write(
            &path,
            format!(
                "users:\n- name: admin\n  passwordHash: \"{hash}\"\n  username: gocd-admin\n- name: jez\n  passwordHash: \"{hash}\"\n  username: jez\naccessKeys:\n- accessKey: {ACCESS_KEY}\n  secretKey: {SECRET_KEY}\n  username: jez\n"
            ),
        )
        .expect("write users file");
        UsersFile { dir, path }
    }
}

impl Drop for UsersFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves the sidecar for `ns` on a free loopback port, authenticating with
/// Kubernetes, until the handle is aborted or the test ends.
pub async fn spawn_sidecar(
    client: Client,
    ns: &str,
    users_file: Option<&Path>,
    auth_cache_ttl: Duration,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    spawn_sidecar_serving(client, &[ns], users_file, auth_cache_ttl).await
}

/// As [`spawn_sidecar`], serving several namespaces.
pub async fn spawn_sidecar_serving(
    client: Client,
    namespaces: &[&str],
    users_file: Option<&Path>,
    auth_cache_ttl: Duration,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    spawn_sidecar_limited(
        client,
        namespaces,
        users_file,
        auth_cache_ttl,
        sidecar::Limits::default(),
    )
    .await
}

/// As [`spawn_sidecar_serving`], with the HTTP server's `limits`.
pub async fn spawn_sidecar_limited(
    client: Client,
    namespaces: &[&str],
    users_file: Option<&Path>,
    auth_cache_ttl: Duration,
    limits: sidecar::Limits,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    spawn_sidecar_with(client, namespaces, users_file, auth_cache_ttl, limits, None).await
}

/// As [`spawn_sidecar`], reading finished runs from the test control
/// plane's PostgreSQL too.
pub async fn spawn_sidecar_archived(
    client: Client,
    ns: &str,
    auth_cache_ttl: Duration,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    spawn_sidecar_reading(client, ns, auth_cache_ttl, super::archive_url()).await
}

/// As [`spawn_sidecar_archived`], with the archive at `url` (another role).
pub async fn spawn_sidecar_reading(
    client: Client,
    ns: &str,
    auth_cache_ttl: Duration,
    url: String,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    spawn_sidecar_with(
        client,
        &[ns],
        None,
        auth_cache_ttl,
        sidecar::Limits::default(),
        Some(url),
    )
    .await
}

async fn spawn_sidecar_with(
    client: Client,
    namespaces: &[&str],
    users_file: Option<&Path>,
    auth_cache_ttl: Duration,
    limits: sidecar::Limits,
    archive_url: Option<String>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let state = sidecar::start(
        client,
        &sidecar::Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            auth: AuthMode::Kubernetes,
            users_file: users_file.map(Path::to_path_buf),
            external_url: None,
            auth_cache_ttl,
            users_file_poll: Duration::from_millis(200),
            signing: sidecar::auth::SigningConfig::default(),
            archive_url: archive_url.map(sidecar::ArchiveUrl),
            archive_pool_size: 2,
            limits,
        },
    )
    .expect("start the sidecar");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    (
        addr,
        tokio::spawn(sidecar::serve(state, listener, std::future::pending())),
    )
}

/// Waits until the sidecar at `addr` is ready (its cache has synced).
pub async fn wait_ready(http: &reqwest::Client, addr: SocketAddr) {
    let url = format!("http://{addr}/readyz");
    eventually("the sidecar ready", Duration::from_secs(90), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
            (r.status() == 200)
                .then_some(())
                .ok_or(format!("readyz answered {}", r.status()))
        }
    })
    .await;
}

/// A namespace served for a test: the controller, the grants of
/// [`grant_readers_and_cancellers`] and a sidecar, ready.
pub struct Served {
    pub ns: TestNamespace,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// The controller and the sidecar, stopped when dropped.
    pub tasks: AbortOnDrop,
}

/// Installs the CRDs and serves `ns` as [`Served`] says, the sidecar
/// reading `users_file` when given.
pub async fn serve(ns: TestNamespace, users_file: Option<&Path>) -> Served {
    super::install_crds(&ns.client).await;
    let controller = spawn_controller(ns.client.clone(), &ns.name);
    grant_readers_and_cancellers(&ns).await;
    let (addr, server) = spawn_sidecar(
        super::client(super::User::Admin).await,
        &ns.name,
        users_file,
        Duration::from_secs(1),
    )
    .await;
    let tasks = AbortOnDrop(vec![controller.abort_handle(), server.abort_handle()]);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    wait_ready(&http, addr).await;
    Served {
        ns,
        addr,
        http,
        tasks,
    }
}

/// Background tasks of a test, aborted when it ends.
pub struct AbortOnDrop(pub Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Where each controller process a test starts writes its log.
pub fn controller_log_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("controller-logs")
}

/// A new file for one controller process's log, `<ns>-<n>.log`, so a failing
/// test can be followed through every replica it started.
fn controller_log(ns: &str) -> std::fs::File {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = controller_log_dir();
    std::fs::create_dir_all(&dir).expect("create the controller log directory");
    std::fs::File::create(dir.join(format!("{ns}-{n}.log"))).expect("create a controller log")
}

/// The controller binary for `ns`, as admin, with `extra` arguments and
/// environment; its metrics on an ephemeral port unless `extra` names one.
pub fn controller_process(ns: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cancel-operator"));
    cmd.args(["controller", "--namespace", ns, "--state-namespace", ns])
        .args(["--force-delete-margin-seconds", "1"]);
    if !extra.contains(&"--metrics-address") {
        cmd.args(["--metrics-address", "127.0.0.1:0"]);
    }
    cmd.env("KUBECONFIG", super::kubeconfig_path(super::User::Admin))
        .args(extra)
        .envs(env.iter().copied())
        .env("LOG_FORMAT", "text")
        .stdout(controller_log(ns))
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start the controller")
}

/// `kubectl cancel ARGS -n NS` as `user`, with the plugin on PATH.
pub fn kubectl_cancel(ns: &str, args: &[&str], user: super::User) -> std::process::Command {
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-cancel"))
        .parent()
        .expect("plugin directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = std::process::Command::new(super::cluster_dir().join("bin/kubectl"));
    cmd.arg("cancel")
        .args(args)
        .args(["-n", ns])
        .env("KUBECONFIG", super::kubeconfig_path(user))
        .env("PATH", path);
    cmd
}

/// Waits until the REST API at `base` shows StageRun `uid` in Cloud Foundry
/// task state `state` (its cache has caught up), asking as admin.
pub async fn wait_cached(http: &reqwest::Client, base: &str, uid: &str, state: &str) {
    let url = format!("{base}/v3/tasks/{uid}");
    let token = super::token(super::User::Admin);
    let what = format!("{base} to show {uid} as {state}");
    eventually(&what, Duration::from_secs(120), || {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let r = http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
            if status == 200 && body["state"] == state {
                Ok(())
            } else {
                Err(format!("{status}: {body}"))
            }
        }
    })
    .await;
}
