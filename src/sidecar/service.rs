//! The service behind every API: its state (the watch cache, the
//! authenticator, metrics, limits) and the one cancel pipeline every API
//! goes through: identify the caller,
//! authorise per namespace, keep the active runs, write CancelRequests, and
//! report a domain outcome that each API renders in its own format. Finding
//! the runs stays with each API, since what "not found" means differs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::Api;
use kube::api::PostParams;

use kube::Client;
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;

use super::Config;
use super::Limits;
use super::auth::{self, Authenticator};
use super::auth::{AuthError, AuthMode, Credentials, Identity};
use super::cache::StageRunCache;
use super::history::{archive_window, merged_page, merged_window, newest_first};
use super::http::Call;
use super::metrics::Metrics;
use crate::archive::{Archive, CounterWindow, IdPage, IdWindow};
use crate::crd::{CancelMode, CancelRequest, CancelTarget, StageRun};
use crate::request::{Naming, NewCancelRequest, name_for_uids};

/// Everything a request handler needs.
pub struct Service {
    pub client: Client,
    pub cache: Arc<StageRunCache>,
    /// Finished runs that have left the cluster; `None`: the cluster's runs
    /// are the whole history.
    pub archive: Option<Arc<Archive>>,
    pub auth: Authenticator,
    pub metrics: Metrics,
    /// Base of absolute links (Cloud Foundry); from the Host header when unset.
    pub external_url: Option<String>,
    pub limits: Limits,
    /// One permit per API request being handled.
    pub in_flight: Arc<Semaphore>,
}

/// A client for the calls made on behalf of requests: at most
/// `kube_in_flight` at once (further calls fail at once rather than queue,
/// so that an unreachable API server cannot pile requests up) and each
/// bounded by `kube_timeout`. The watch cache keeps the unbounded client.
pub fn request_client(client: Client, limits: &Limits) -> Client {
    let timeout = limits.kube_timeout;
    let namespace = client.default_namespace().to_string();
    let send = tower::service_fn(move |request: warp::http::Request<kube::client::Body>| {
        let client = client.clone();
        async move {
            match tokio::time::timeout(timeout, client.send(request)).await {
                Ok(answer) => answer.map_err(tower::BoxError::from),
                Err(_) => Err(tower::BoxError::from(format!(
                    "no answer from the Kubernetes API within {timeout:?}"
                ))),
            }
        }
    });
    kube::client::ClientBuilder::new(send, namespace)
        .with_layer(&ConcurrencyLimitLayer::new(limits.kube_in_flight.max(1)))
        .with_layer(&LoadShedLayer::new())
        .build()
}

/// Builds the service and starts the watch cache.
pub fn start(client: Client, config: &Config) -> anyhow::Result<Arc<Service>> {
    let users = match &config.users_file {
        Some(path) => auth::UsersFile::load(path)?,
        None => auth::UsersFile::default(),
    };
    let cache = Arc::new(StageRunCache::new(config.namespaces.clone()));
    let archive = match config.archive_url() {
        // The REST API only reads: the controller applies the schema.
        Some(url) => Some(Arc::new(Archive::connect_as(
            url,
            config.archive_pool_size,
            crate::archive::Role::Reader,
        )?)),
        None => None,
    };
    tokio::spawn(cache.clone().run(client.clone()));
    let client = request_client(client, &config.limits);
    let auth = Authenticator::new(
        config.auth,
        client.clone(),
        users,
        config.auth_cache_ttl,
        config.signing,
    );
    if let Some(path) = &config.users_file {
        tokio::spawn(
            auth.clone()
                .watch_users_file(path.clone(), config.users_file_poll),
        );
    }
    let metrics = Metrics::with_archive(archive.as_deref());
    Ok(Arc::new(Service {
        auth,
        client,
        cache,
        archive,
        metrics,
        external_url: config.external_url.clone(),
        limits: config.limits.clone(),
        in_flight: Arc::new(Semaphore::new(config.limits.max_in_flight.max(1))),
    }))
}

/// Why a call was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No valid credentials.
    Unauthenticated,
    /// Credentials refused for a reason the caller may be told (a signed
    /// request that does not verify, say).
    Rejected(String),
    /// The API server could not be asked (or refused the write).
    Unavailable(String),
    /// The archive of finished runs could not be read, and the answer
    /// needs it: a history without it would be presented as complete.
    ArchiveUnavailable(String),
    /// The caller may see the runs but not cancel them.
    Forbidden,
    /// The caller may not even read the runs; APIs that hide what a caller
    /// cannot see answer as if the runs did not exist.
    Hidden,
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unavailable(why) => Failure::Unavailable(why),
            AuthError::Missing | AuthError::Invalid => Failure::Unauthenticated,
            AuthError::Rejected(why) => Failure::Rejected(why),
        }
    }
}

/// Whether an API takes Huawei's AK/SK request signatures (only CodeArts
/// does); elsewhere a signed request is unauthenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    Accepted,
    Refused,
}

/// What a cancel did.
#[derive(Debug, Clone)]
pub struct CancelOutcome {
    /// Every run the call named.
    pub matched: Vec<Arc<StageRun>>,
    /// The runs that were active and are now being cancelled (possibly by an
    /// earlier, identical request).
    pub cancelled: Vec<Arc<StageRun>>,
}

impl CancelOutcome {
    /// True when at least one run was still active.
    pub fn any_cancelled(&self) -> bool {
        !self.cancelled.is_empty()
    }
}

/// A cancel to carry out.
pub struct CancelCall<'a> {
    /// Which API asks (the CancelRequest's `cancel.dev/api` label).
    pub api: &'static str,
    pub who: &'a Identity,
    pub runs: Vec<Arc<StageRun>>,
    pub reason: String,
    /// Refuse with [`Failure::Hidden`] when the caller cannot read the runs.
    pub hide_unreadable: bool,
}

/// A failed read of the archive, as the APIs report it.
pub fn archive_failure(e: crate::Error) -> Failure {
    Failure::ArchiveUnavailable(e.to_string())
}

/// The pipeline counters of `runs`, newest first, once each.
pub fn counters_of(runs: &[Arc<StageRun>]) -> Vec<i64> {
    let set: BTreeSet<i64> = runs.iter().map(|r| r.spec.pipeline_counter).collect();
    set.into_iter().rev().collect()
}

/// The uids of `runs`.
pub fn uids_of(runs: &[Arc<StageRun>]) -> Vec<String> {
    runs.iter().filter_map(|r| r.metadata.uid.clone()).collect()
}

/// True while a StageRun can still be cancelled.
pub fn is_active(run: &StageRun) -> bool {
    !run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_finished())
}

/// The namespaces of `runs`, sorted, once each.
pub fn namespaces(runs: &[Arc<StageRun>]) -> Vec<String> {
    let set: BTreeSet<String> = runs
        .iter()
        .filter_map(|r| r.metadata.namespace.clone())
        .collect();
    set.into_iter().collect()
}

/// What a caller may do in one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    pub read: bool,
    pub cancel: bool,
}

impl Service {
    /// Who is calling. A signed request authenticates only on an API that
    /// takes `signing`.
    pub async fn identify(&self, call: &Call<'_>, signing: Signing) -> Result<Identity, Failure> {
        let creds = super::auth::credentials(call.headers);
        if let Credentials::Signed(signed) = &creds {
            if signing == Signing::Refused || self.auth.mode() == AuthMode::None {
                return Ok(self
                    .auth
                    .authenticate(&Credentials::Malformed(None))
                    .await?);
            }
            return Ok(self.auth.authenticate_signed(signed, call)?);
        }
        Ok(self.auth.authenticate(&creds).await?)
    }

    /// The caller's rights in each namespace of `runs`.
    pub async fn rights(
        &self,
        who: &Identity,
        runs: &[Arc<StageRun>],
    ) -> Result<BTreeMap<String, Rights>, Failure> {
        self.rights_in(who, namespaces(runs)).await
    }

    /// The caller's rights in each of `namespaces`.
    pub async fn rights_in(
        &self,
        who: &Identity,
        namespaces: Vec<String>,
    ) -> Result<BTreeMap<String, Rights>, Failure> {
        let mut out = BTreeMap::new();
        for ns in namespaces {
            let read = self
                .auth
                .can_read(who, &ns)
                .await
                .map_err(Failure::Unavailable)?;
            let cancel = self
                .auth
                .can_cancel(who, &ns)
                .await
                .map_err(Failure::Unavailable)?;
            out.insert(ns, Rights { read, cancel });
        }
        Ok(out)
    }

    /// Only the runs the caller may read, with the caller's rights.
    pub async fn readable(
        &self,
        who: &Identity,
        runs: Vec<Arc<StageRun>>,
    ) -> Result<(Vec<Arc<StageRun>>, BTreeMap<String, Rights>), Failure> {
        let rights = self.rights(who, &runs).await?;
        let visible = runs
            .into_iter()
            .filter(|r| {
                r.metadata
                    .namespace
                    .as_ref()
                    .and_then(|ns| rights.get(ns))
                    .is_some_and(|r| r.read)
            })
            .collect();
        Ok((visible, rights))
    }

    /// Only the runs the caller may read (one SubjectAccessReview per
    /// namespace, for `list stageruns`).
    pub async fn visible(
        &self,
        who: &Identity,
        runs: Vec<Arc<StageRun>>,
    ) -> Result<Vec<Arc<StageRun>>, Failure> {
        let mut readable = BTreeSet::new();
        for ns in namespaces(&runs) {
            if self
                .auth
                .can_read(who, &ns)
                .await
                .map_err(Failure::Unavailable)?
            {
                readable.insert(ns);
            }
        }
        Ok(runs
            .into_iter()
            .filter(|r| {
                r.metadata
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| readable.contains(ns))
            })
            .collect())
    }

    /// Authorises, keeps the active runs and writes one CancelRequest per
    /// namespace. Permission is checked for every namespace before anything
    /// is written.
    pub async fn cancel(&self, call: CancelCall<'_>) -> Result<CancelOutcome, Failure> {
        self.authorise_cancel(call.who, &namespaces(&call.runs), call.hide_unreadable)
            .await?;
        let cancelled: Vec<Arc<StageRun>> =
            call.runs.iter().filter(|r| is_active(r)).cloned().collect();
        self.write_requests(call.api, &cancelled, call.who, &call.reason)
            .await
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
        Ok(CancelOutcome {
            matched: call.runs,
            cancelled,
        })
    }

    /// Whether `who` may cancel runs in every one of `namespaces`
    /// ([`Failure::Hidden`] first when `hide_unreadable` and it may not
    /// even read them).
    pub async fn authorise_cancel(
        &self,
        who: &Identity,
        namespaces: &[String],
        hide_unreadable: bool,
    ) -> Result<(), Failure> {
        for ns in namespaces {
            if hide_unreadable
                && !self
                    .auth
                    .can_read(who, ns)
                    .await
                    .map_err(Failure::Unavailable)?
            {
                return Err(Failure::Hidden);
            }
            if !self
                .auth
                .can_cancel(who, ns)
                .await
                .map_err(Failure::Unavailable)?
            {
                return Err(Failure::Forbidden);
            }
        }
        Ok(())
    }

    /// The run of this uid: the cluster's, else the archive's (when it is
    /// in a served namespace). Asks the archive only for a uid the cluster
    /// does not have, so that reads and cancels of runs in the cluster never
    /// need it.
    pub async fn run_by_uid(&self, uid: &str) -> Result<Option<Arc<StageRun>>, Failure> {
        if let Some(run) = self.cache.by_uid(uid) {
            return Ok(Some(run));
        }
        let Some(archive) = &self.archive else {
            return Ok(None);
        };
        let run = archive.stage_run(uid).await.map_err(archive_failure)?;
        Ok(run.filter(|r| self.cache.serves(r)).map(Arc::new))
    }

    /// The served namespaces where a pipeline's stage has runs, in the
    /// cluster (`cluster`, its runs there) or in the archive.
    pub async fn stage_namespaces(
        &self,
        pipeline: &str,
        stage: &str,
        cluster: &[Arc<StageRun>],
    ) -> Result<Vec<String>, Failure> {
        let archived = match &self.archive {
            Some(archive) => archive.stage_namespaces(pipeline, stage).await,
            None => Ok(Vec::new()),
        };
        self.served_namespaces(cluster, archived)
    }

    /// The served namespaces where a pipeline has runs, in the cluster
    /// (`cluster`, its runs there) or in the archive.
    pub async fn pipeline_namespaces(
        &self,
        pipeline: &str,
        cluster: &[Arc<StageRun>],
    ) -> Result<Vec<String>, Failure> {
        let archived = match &self.archive {
            Some(archive) => archive.pipeline_namespaces(pipeline).await,
            None => Ok(Vec::new()),
        };
        self.served_namespaces(cluster, archived)
    }

    /// The namespaces of `cluster` and the served ones of `archived`.
    fn served_namespaces(
        &self,
        cluster: &[Arc<StageRun>],
        archived: crate::Result<Vec<String>>,
    ) -> Result<Vec<String>, Failure> {
        let mut all: BTreeSet<String> = namespaces(cluster).into_iter().collect();
        let archived = archived.map_err(archive_failure)?;
        all.extend(
            archived
                .into_iter()
                .filter(|ns| self.cache.serves_namespace(ns)),
        );
        Ok(all.into_iter().collect())
    }

    /// A page of a stage's history, newest first, and the number of runs
    /// in it: the cluster's runs `cluster` (those the caller may read) and
    /// the archive's in the `readable` namespaces, without `in_cluster`
    /// (every uid the cluster has of this stage).
    #[allow(clippy::too_many_arguments)]
    pub async fn stage_history(
        &self,
        stage: (&str, &str),
        readable: &[String],
        mut cluster: Vec<Arc<StageRun>>,
        in_cluster: &[String],
        offset: usize,
        size: usize,
    ) -> Result<(Vec<Arc<StageRun>>, usize), Failure> {
        cluster.sort_by(|a, b| newest_first(a, b));
        // No namespace readable means none, never all.
        let Some(archive) = self.archive.as_ref().filter(|_| !readable.is_empty()) else {
            let total = cluster.len();
            return Ok((cluster.into_iter().skip(offset).take(size).collect(), total));
        };
        let (start, count) = archive_window(offset, size, cluster.len());
        let (pipeline, stage) = stage;
        let page = archive
            .stage_history(
                readable,
                pipeline,
                stage,
                in_cluster,
                i64::try_from(start).unwrap_or(i64::MAX),
                i64::try_from(count).unwrap_or(i64::MAX),
            )
            .await
            .map_err(archive_failure)?;
        let total = cluster.len() + usize::try_from(page.total).unwrap_or(0);
        Ok((merged_page(&cluster, page.runs, start, offset, size), total))
    }

    /// The archive's runs of a stage in the `readable` namespaces, without
    /// `in_cluster`, paged by id as [`Archive::stage_ids`] does; nothing
    /// without an archive.
    pub async fn archived_stage_ids(
        &self,
        stage: (&str, &str),
        readable: &[String],
        in_cluster: &[String],
        window: IdWindow,
        size: usize,
    ) -> Result<IdPage, Failure> {
        let Some(archive) = self.archive.as_ref().filter(|_| !readable.is_empty()) else {
            return Ok(IdPage::default());
        };
        let (pipeline, stage) = stage;
        archive
            .stage_ids(
                readable,
                pipeline,
                stage,
                in_cluster,
                window,
                i64::try_from(size).unwrap_or(i64::MAX),
            )
            .await
            .map_err(archive_failure)
    }

    /// The runs of a page of a pipeline's history (its pipeline runs,
    /// newest counter first, `size` from `offset`) and how many pipeline
    /// runs it has: the cluster's runs `cluster` (those the caller may
    /// read) and the archive's in the `readable` namespaces but for the
    /// uids `in_cluster`. Pages are cut from the union of the two sides'
    /// counters: the archive counts and windows only counters the cluster
    /// has none of, so that the two lists are disjoint.
    pub async fn pipeline_history(
        &self,
        pipeline: &str,
        readable: &[String],
        cluster: Vec<Arc<StageRun>>,
        in_cluster: &[String],
        offset: usize,
        size: usize,
    ) -> Result<(Vec<Arc<StageRun>>, usize), Failure> {
        let counters = counters_of(&cluster);
        let Some(archive) = self.archive.as_ref().filter(|_| !readable.is_empty()) else {
            let total = counters.len();
            let page: BTreeSet<i64> = counters.into_iter().skip(offset).take(size).collect();
            let runs = (cluster.into_iter())
                .filter(|r| page.contains(&r.spec.pipeline_counter))
                .collect();
            return Ok((runs, total));
        };
        let (start, count) = archive_window(offset, size, counters.len());
        let archived = archive
            .pipeline_counters(
                readable,
                pipeline,
                &counters,
                i64::try_from(start).unwrap_or(i64::MAX),
                i64::try_from(count).unwrap_or(i64::MAX),
            )
            .await
            .map_err(archive_failure)?;
        let total = counters.len() + usize::try_from(archived.total).unwrap_or(0);
        let page = merged_window(counters, archived.counters, start, offset, size, |a, b| {
            b.cmp(a)
        });
        let runs = self
            .pipeline_runs_of(pipeline, readable, cluster, in_cluster, &page)
            .await?;
        Ok((runs, total))
    }

    /// The archive's counters of a pipeline in the `readable` namespaces
    /// but for `in_cluster`, paged by counter as
    /// [`Archive::pipeline_counter_window`] does; nothing without an
    /// archive.
    pub async fn archived_pipeline_counters(
        &self,
        pipeline: &str,
        readable: &[String],
        in_cluster: &[i64],
        window: IdWindow,
        size: usize,
    ) -> Result<CounterWindow, Failure> {
        let Some(archive) = self.archive.as_ref().filter(|_| !readable.is_empty()) else {
            return Ok(CounterWindow::default());
        };
        archive
            .pipeline_counter_window(
                readable,
                pipeline,
                in_cluster,
                window,
                i64::try_from(size).unwrap_or(i64::MAX),
            )
            .await
            .map_err(archive_failure)
    }

    /// The runs of the pipeline runs `page`: the cluster's (`cluster`, the
    /// runs the caller may read) and the archive's in the `readable`
    /// namespaces, but for those the cluster has (`in_cluster`, every uid
    /// it has of the pipeline): a pipeline run may have stages on both
    /// sides.
    pub async fn pipeline_runs_of(
        &self,
        pipeline: &str,
        readable: &[String],
        cluster: Vec<Arc<StageRun>>,
        in_cluster: &[String],
        page: &[i64],
    ) -> Result<Vec<Arc<StageRun>>, Failure> {
        let mut runs: Vec<Arc<StageRun>> = (cluster.into_iter())
            .filter(|r| page.contains(&r.spec.pipeline_counter))
            .collect();
        if let Some(archive) = self.archive.as_ref()
            && !page.is_empty()
            && !readable.is_empty()
        {
            let archived = (archive
                .pipeline_runs(readable, pipeline, page, in_cluster)
                .await)
                .map_err(archive_failure)?;
            runs.extend(archived.into_iter().map(Arc::new));
        }
        Ok(runs)
    }

    /// Every run of one pipeline run, from the cluster and, but for the
    /// cluster's uids, the archive, in the served namespaces.
    pub async fn build_runs(
        &self,
        pipeline: &str,
        counter: i64,
    ) -> Result<Vec<Arc<StageRun>>, Failure> {
        let mut runs = self.cache.by_build(pipeline, counter);
        let Some(archive) = &self.archive else {
            return Ok(runs);
        };
        let namespaces = self.pipeline_namespaces(pipeline, &[]).await?;
        if namespaces.is_empty() {
            return Ok(runs);
        }
        let archived = archive
            .pipeline_runs(&namespaces, pipeline, &[counter], &uids_of(&runs))
            .await
            .map_err(archive_failure)?;
        runs.extend(archived.into_iter().map(Arc::new));
        Ok(runs)
    }

    /// The runs of one stage instance: the cluster's, else the archive's in
    /// the served namespaces (asked only when the cluster has none).
    pub async fn stage_instance_runs(
        &self,
        pipeline: &str,
        pipeline_counter: i64,
        stage: &str,
        stage_counter: i64,
    ) -> Result<Vec<Arc<StageRun>>, Failure> {
        let runs: Vec<Arc<StageRun>> = (self.cache.by_stage(pipeline, stage).into_iter())
            .filter(|r| {
                r.spec.pipeline_counter == pipeline_counter && r.spec.stage_counter == stage_counter
            })
            .collect();
        let Some(archive) = self.archive.as_ref().filter(|_| runs.is_empty()) else {
            return Ok(runs);
        };
        let namespaces = self.stage_namespaces(pipeline, stage, &[]).await?;
        if namespaces.is_empty() {
            return Ok(runs);
        }
        let archived = archive
            .stage_instance(
                &namespaces,
                pipeline,
                pipeline_counter,
                stage,
                stage_counter,
            )
            .await
            .map_err(archive_failure)?;
        Ok(archived.into_iter().map(Arc::new).collect())
    }

    /// One CancelRequest per namespace, named after its set of targets so
    /// that repeating the call creates nothing new.
    async fn write_requests(
        &self,
        api: &str,
        runs: &[Arc<StageRun>],
        who: &Identity,
        reason: &str,
    ) -> Result<(), kube::Error> {
        let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in runs {
            if let (Some(ns), Some(uid)) = (&r.metadata.namespace, &r.metadata.uid) {
                by_ns.entry(ns.clone()).or_default().push(uid.clone());
            }
        }
        for (ns, uids) in by_ns {
            let name = name_for_uids(api, &ns, &uids);
            let mut sorted = uids;
            sorted.sort();
            sorted.dedup();
            let request = NewCancelRequest {
                api: api.to_string(),
                target: CancelTarget {
                    uids: Some(sorted),
                    ..CancelTarget::default()
                },
                reason: reason.to_string(),
                requested_by: who.username.clone(),
                grace_period_seconds: None,
                // A REST cancel means what its API documents.
                mode: CancelMode::Cancel,
            }
            .build(Naming::Fixed(name.clone()));
            match Api::<CancelRequest>::namespaced(self.client.clone(), &ns)
                .create(&PostParams::default(), &request)
                .await
            {
                Ok(_) => {
                    self.metrics.cancel_request_created(api);
                    tracing::info!(api, namespace = %ns, request = %name, user = %who.username, "cancel requested");
                }
                // The same targets were already requested: nothing more to do.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
