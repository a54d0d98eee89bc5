//! Talking to the control plane: clients, CRDs, namespaces, and requests sent
//! with bounded concurrency and retried on the API server's back-pressure.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use serde_json::json;

/// The control plane started by `tests/cluster/with-cluster.sh`.
pub struct Cluster {
    pub dir: PathBuf,
    pub admin: Client,
}

impl Cluster {
    pub async fn connect() -> anyhow::Result<Cluster> {
        let dir = std::env::var_os("CANCEL_OPERATOR_CLUSTER")
            .map(PathBuf::from)
            .context("CANCEL_OPERATOR_CLUSTER is not set: run the benchmark with `make bench`")?;
        if !dir.join("ready").exists() {
            bail!("no control plane is ready at {}", dir.display());
        }
        let kc = Kubeconfig::read_from(dir.join("admin.kubeconfig"))?;
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        // Listing thousands of objects takes longer than the default 295 s
        // read timeout is meant for only on a starved machine; keep a bound.
        config.read_timeout = Some(Duration::from_secs(120));
        let admin = Client::try_from(config)?;
        Ok(Cluster { dir, admin })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }
}

/// Applies the CRDs from the repository's `crds/` and waits until they serve.
pub async fn install_crds(client: &Client, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in text.split("\n---") {
        if doc.trim().is_empty() {
            continue;
        }
        let crd: CustomResourceDefinition = yaml_serde::from_str(doc).context("parse a CRD")?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply("cancel-operator-bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("apply CRD {name}"))?;
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not established within 60 s"))??;
    }
    Ok(())
}

pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"cancel.dev/bench": "true"}}
    }))?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create namespace {name}")),
    }
}

/// Whether an error is the API server asking to try again later.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `op`, retrying transient failures with backoff (at most 6 tries).
pub async fn retry<T, F, Fut>(what: &str, op: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 1.. {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 6 && transient(&e) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e).with_context(|| what.to_string()),
        }
    }
    unreachable!("the loop returns")
}

/// Ignores "not found" (the object is already gone).
pub fn gone_ok<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs `op` on every item with at most `limit` in flight; fails with the
/// first error after all have finished (so that no request is left running).
pub async fn bounded<I, F, Fut>(items: Vec<I>, limit: usize, op: F) -> anyhow::Result<()>
where
    F: Fn(I) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(items.into_iter().map(op))
        .buffer_unordered(limit.max(1))
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(e.context(format!("{failed} request(s) failed"))),
        None => Ok(()),
    }
}

/// Deletes every object of `api` matching `selector` in one request.
pub async fn delete_all<K>(api: &Api<K>, selector: &str, dp: &DeleteParams) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let lp = ListParams::default().labels(selector);
    retry("delete a collection", || api.delete_collection(dp, &lp)).await?;
    Ok(())
}
