//! The REST sidecar: the cancel and history endpoints of GoCD, CodeArts,
//! CrafterCMS and Cloud Foundry over StageRuns. Reads come from a watch
//! cache; the only writes are CancelRequests.

pub mod auth;
pub mod cache;
pub mod cloudfoundry;
pub mod codearts;
pub mod crafter;
pub mod gocd;
pub mod routes;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::path::FullPath;
use warp::reply::{Reply, Response};

use crate::crd::{CancelRequest, CancelRequestSpec, CancelTarget, StageRun};
use crate::labels::{self, digest};
use auth::{Authenticator, Identity};
use cache::StageRunCache;
use routes::{Family, NoRoute, Route};

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The OpenAPI document of every route, served at /openapi.json.
pub const OPENAPI: &str = include_str!("../../openapi/openapi.json");

/// Label on CancelRequests written by the sidecar: which API asked.
pub const API_LABEL: &str = "cancel.dev/api";

pub fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let mut r = warp::reply::json(body).into_response();
    *r.status_mut() = status;
    r
}

pub fn text(status: StatusCode, body: &str) -> Response {
    let mut r = warp::reply::with_status(body.to_string(), status).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// True while a StageRun can still be cancelled.
pub fn is_active(run: &StageRun) -> bool {
    !run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_finished())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: String,
}

/// Prometheus metrics of the sidecar.
pub struct Metrics {
    registry: Registry,
    requests: MetricFamily<RequestLabels, Counter>,
    latency: MetricFamily<RouteLabels, Histogram>,
    cancel_requests: MetricFamily<ApiLabels, Counter>,
    cached: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = MetricFamily::<RequestLabels, Counter>::default();
        let latency = MetricFamily::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let cancel_requests = MetricFamily::<ApiLabels, Counter>::default();
        let cached = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status code",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "cancel_requests_created",
            "CancelRequests written, by the API that asked",
            cancel_requests.clone(),
        );
        registry.register(
            "stageruns_cached",
            "StageRuns in the watch cache",
            cached.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            cancel_requests,
            cached,
        }
    }

    fn encode(&self) -> String {
        crate::telemetry::encode_metrics(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything a request handler needs.
pub struct State {
    pub client: Client,
    pub cache: Arc<StageRunCache>,
    pub auth: Authenticator,
    pub metrics: Metrics,
    /// Base of absolute links (Cloud Foundry); from the Host header when unset.
    pub external_url: Option<String>,
}

impl State {
    /// Asks the controller to cancel `runs`: one CancelRequest per namespace,
    /// named after the set of targets so that repeating the call does not
    /// create more work.
    pub async fn request_cancel(
        &self,
        api: &str,
        runs: &[Arc<StageRun>],
        who: &Identity,
        reason: String,
    ) -> Result<Vec<String>, kube::Error> {
        let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in runs {
            if let (Some(ns), Some(uid)) = (&r.metadata.namespace, &r.metadata.uid) {
                by_ns.entry(ns.clone()).or_default().push(uid.clone());
            }
        }
        let mut names = Vec::new();
        for (ns, mut uids) in by_ns {
            uids.sort();
            let name = format!("{api}-{}", &digest(&[&ns, &uids.join(",")])[..20]);
            let request = CancelRequest {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([
                        (API_LABEL.to_string(), api.to_string()),
                        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
                    ])),
                    ..ObjectMeta::default()
                },
                spec: CancelRequestSpec {
                    target: CancelTarget {
                        uids: Some(uids),
                        ..CancelTarget::default()
                    },
                    reason: reason.clone(),
                    requested_by: who.username.clone(),
                    grace_period_seconds: None,
                    ttl_seconds_after_finished: 86400,
                },
                status: None,
            };
            match Api::<CancelRequest>::namespaced(self.client.clone(), &ns)
                .create(&PostParams::default(), &request)
                .await
            {
                Ok(_) => {
                    self.metrics
                        .cancel_requests
                        .get_or_create(&ApiLabels {
                            api: api.to_string(),
                        })
                        .inc();
                    tracing::info!(api, namespace = %ns, request = %name, user = %who.username, "cancel requested");
                }
                // The same targets were already requested: nothing more to do.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e),
            }
            names.push(name);
        }
        Ok(names)
    }
}

fn not_found(family: Family, headers: &HeaderMap, path: &str) -> Response {
    match family {
        Family::GoCd => gocd::message(headers, StatusCode::NOT_FOUND, "Not Found"),
        Family::CodeArts => codearts::error(
            StatusCode::NOT_FOUND,
            codearts::codes::ROUTE_NOT_FOUND,
            &format!("no such API: {path}"),
        ),
        Family::Crafter => crafter::message(StatusCode::NOT_FOUND, "Not Found"),
        Family::CloudFoundry => cloudfoundry::error(
            StatusCode::NOT_FOUND,
            10000,
            "CF-NotFound",
            "Unknown request",
        ),
        Family::Operations => text(StatusCode::NOT_FOUND, "not found"),
    }
}

fn method_not_allowed(family: Family, allow: &'static str, headers: &HeaderMap) -> Response {
    let mut r = match family {
        Family::GoCd => gocd::message(
            headers,
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
        ),
        Family::CodeArts => codearts::error(
            StatusCode::METHOD_NOT_ALLOWED,
            codearts::codes::METHOD_NOT_ALLOWED,
            &format!("method not allowed; use {allow}"),
        ),
        Family::Crafter => crafter::message(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
        Family::CloudFoundry => cloudfoundry::error(
            StatusCode::METHOD_NOT_ALLOWED,
            10000,
            "CF-NotFound",
            &format!("Unknown request: use {allow}"),
        ),
        Family::Operations => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    };
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn too_large(family: Family, headers: &HeaderMap) -> Response {
    let msg = "request body larger than 64 KiB";
    match family {
        Family::GoCd => gocd::message(
            headers,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request Entity Too Large: body larger than 64 KiB",
        ),
        Family::CodeArts => codearts::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            codearts::codes::BODY_TOO_LARGE,
            msg,
        ),
        Family::Crafter => {
            crafter::message(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
        }
        Family::CloudFoundry => cloudfoundry::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            1001,
            "CF-MessageParseError",
            "Request invalid due to parse error: request body larger than 64 KiB",
        ),
        Family::Operations => text(StatusCode::PAYLOAD_TOO_LARGE, msg),
    }
}

/// A body that could not be read (e.g. broken chunked encoding), answered
/// in the format of the API the path belongs to.
fn unreadable(family: Family, headers: &HeaderMap) -> Response {
    let msg = "could not read the request body";
    match family {
        Family::GoCd => gocd::message(
            headers,
            StatusCode::BAD_REQUEST,
            "Bad Request { could not read the request body }",
        ),
        Family::CodeArts => codearts::error(
            StatusCode::BAD_REQUEST,
            codearts::codes::MALFORMED_BODY,
            msg,
        ),
        Family::Crafter => crafter::invalid(),
        Family::CloudFoundry => cloudfoundry::error(
            StatusCode::BAD_REQUEST,
            1001,
            "CF-MessageParseError",
            "Request invalid due to parse error: could not read the request body",
        ),
        Family::Operations => text(StatusCode::BAD_REQUEST, msg),
    }
}

enum BodyError {
    TooLarge,
    Broken,
}

/// Reads at most BODY_LIMIT bytes; refuses more without reading it all.
async fn read_body<S, B>(headers: &HeaderMap, body: S) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = body;
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| BodyError::Broken)?;
        if buf.len() + chunk.remaining() > BODY_LIMIT {
            return Err(BodyError::TooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buf.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

async fn dispatch(state: &State, route: &Route, headers: &HeaderMap, body: &[u8]) -> Response {
    match route {
        Route::GoCdCancel { pipeline, stage } => {
            gocd::cancel(state, headers, pipeline, stage, None).await
        }
        Route::GoCdCancelInstance {
            pipeline,
            pipeline_counter,
            stage,
            stage_counter,
        } => {
            gocd::cancel(
                state,
                headers,
                pipeline,
                stage,
                Some((pipeline_counter, stage_counter)),
            )
            .await
        }
        Route::GoCdHistory {
            pipeline,
            stage,
            offset,
        } => gocd::history(state, headers, pipeline, stage, offset.as_deref()).await,
        Route::CodeArtsStop => codearts::stop(state, headers, codearts::parse_body(body)).await,
        Route::CodeArtsStopPath { job_id, build_no } => {
            let params = codearts::validate(
                Some(&serde_json::Value::String(job_id.clone())),
                Some(&serde_json::Value::String(build_no.clone())),
            );
            codearts::stop(state, headers, params).await
        }
        Route::CrafterCancel => crafter::cancel(state, headers, body).await,
        Route::CfCancel { guid } => cloudfoundry::cancel(state, headers, guid).await,
        Route::CfGet { guid } => cloudfoundry::get(state, headers, guid).await,
        Route::Healthz => text(StatusCode::OK, "ok"),
        Route::Readyz => {
            if state.cache.is_synced() {
                text(StatusCode::OK, "ok")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the StageRun cache has not synced yet",
                )
            }
        }
        Route::Metrics => {
            state.metrics.cached.set(state.cache.len() as i64);
            let mut r = text(StatusCode::OK, &state.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Route::OpenApi => {
            let mut r = text(StatusCode::OK, OPENAPI);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
    }
}

async fn handle<S, B>(
    state: Arc<State>,
    method: Method,
    path: FullPath,
    headers: HeaderMap,
    body: S,
) -> Result<Response, Infallible>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let start = Instant::now();
    let path = path.as_str();
    let (label, response) = match routes::route(&method, path) {
        Err(NoRoute::NotFound(family)) => ("unknown", not_found(family, &headers, path)),
        Err(NoRoute::MethodNotAllowed { family, allow }) => {
            ("unknown", method_not_allowed(family, allow, &headers))
        }
        Ok(route) => {
            let response = match read_body(&headers, body).await {
                Ok(bytes) => dispatch(&state, &route, &headers, &bytes).await,
                Err(BodyError::TooLarge) => too_large(route.family(), &headers),
                Err(BodyError::Broken) => unreadable(route.family(), &headers),
            };
            (route.name(), response)
        }
    };
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: label.to_string(),
            code: response.status().as_u16(),
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels {
            route: label.to_string(),
        })
        .observe(start.elapsed().as_secs_f64());
    tracing::debug!(%method, path, status = response.status().as_u16(), "request");
    Ok(response)
}

/// The warp filter answering every request.
pub fn filter(
    state: Arc<State>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::any()
        .map(move || state.clone())
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and_then(|state, method, path, headers, body| {
            handle(state, method, path, headers, Box::pin(body))
        })
        .recover(|_| async { Ok::<_, Infallible>(text(StatusCode::BAD_REQUEST, "bad request")) })
        .unify()
}

/// Settings of the sidecar.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Namespaces served; all when empty.
    pub namespaces: Vec<String>,
    pub auth: auth::AuthMode,
    pub users_file: Option<std::path::PathBuf>,
    pub external_url: Option<String>,
    pub auth_cache_ttl: Duration,
}

/// Builds the state and starts the watch cache.
pub fn start(client: Client, config: &Config) -> anyhow::Result<Arc<State>> {
    let users = match &config.users_file {
        Some(path) => auth::UsersFile::load(path)?,
        None => auth::UsersFile::default(),
    };
    let cache = Arc::new(StageRunCache::new(config.namespaces.clone()));
    tokio::spawn(cache.clone().run(client.clone()));
    Ok(Arc::new(State {
        auth: Authenticator::new(config.auth, client.clone(), users, config.auth_cache_ttl),
        client,
        cache,
        metrics: Metrics::new(),
        external_url: config.external_url.clone(),
    }))
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    warp::serve(filter(state))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

/// Runs the sidecar until a termination signal.
pub async fn run(client: Client, config: Config) -> anyhow::Result<()> {
    if config.auth == auth::AuthMode::None {
        tracing::warn!("authentication is off (--auth none): every caller may cancel anything");
    }
    let state = start(client, &config)?;
    let listener = TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "sidecar listening");
    serve(state, listener, crate::shutdown::signal()).await;
    Ok(())
}
