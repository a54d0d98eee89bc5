//! The REST sidecar: the cancel and history endpoints of GoCD, CodeArts,
//! CrafterCMS and Cloud Foundry over StageRuns. Reads come from a watch
//! cache; the only writes are CancelRequests.

pub mod aksk;
pub mod auth;
pub mod cache;
pub mod cloudfoundry;
pub mod codearts;
mod config;
pub mod crafter;
pub mod gocd;
pub mod http;
pub mod render;
pub mod routes;
pub mod service;
pub mod studio;
pub mod uaa;

#[cfg(test)]
mod hostile_tests;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kube::Client;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::path::FullPath;
use warp::reply::Response;

pub use config::{Config, Limits};

use auth::Authenticator;
use cache::StageRunCache;
use http::{Call, text};
use render::{errors_for, with_allow};
use routes::{NoRoute, Route};

/// Seconds a client is asked to wait when the sidecar sheds a request.
const RETRY_AFTER_SECONDS: &str = "1";

/// The OpenAPI document of every route, served at /openapi.json.
pub const OPENAPI: &str = include_str!("../../openapi/openapi.json");

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

    /// Counts a CancelRequest written on behalf of `api`.
    pub fn cancel_request_created(&self, api: &str) {
        self.cancel_requests
            .get_or_create(&ApiLabels {
                api: api.to_string(),
            })
            .inc();
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
    pub limits: Limits,
    /// One permit per API request being handled.
    pub in_flight: Arc<Semaphore>,
}

enum BodyError {
    TooLarge,
    Broken,
    TimedOut,
}

/// A refused body up to this size is read and discarded before the 413 is
/// sent, so that a client still sending sees the answer instead of a reset
/// connection; a larger one is cut off.
const DRAIN_LIMIT: usize = 1 << 20;

/// Reads and discards the rest of a refused body, bounded in size and time.
async fn drain<S, B>(body: &mut S, mut seen: usize)
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.remaining();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

/// Reads at most `limit` bytes within `timeout`; refuses more, reading a
/// bounded rest.
async fn read_body<S, B>(
    headers: &HeaderMap,
    body: S,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    tokio::time::timeout(timeout, read_limited(headers, body, limit))
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

async fn read_limited<S, B>(headers: &HeaderMap, body: S, limit: usize) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        if n <= DRAIN_LIMIT as u64 {
            drain(&mut body, 0).await;
        }
        return Err(BodyError::TooLarge);
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| BodyError::Broken)?;
        if buf.len() + chunk.remaining() > limit {
            drain(&mut body, buf.len() + chunk.remaining()).await;
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

async fn dispatch(state: &State, route: &Route, call: &Call<'_>) -> Response {
    match route {
        Route::GoCd(r) => gocd::handle(state, r, call).await,
        Route::CodeArts(r) => codearts::handle(state, r, call).await,
        Route::Crafter(r) => crafter::handle(state, r, call).await,
        Route::CloudFoundry(r) => cloudfoundry::handle(state, r, call).await,
        Route::Uaa(r) => uaa::handle(state, r, call).await,
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
    path: String,
    query: String,
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
        Err(NoRoute::NotFound(family)) => (
            "unknown",
            errors_for(family, &headers).route_not_found(path),
        ),
        Err(NoRoute::MethodNotAllowed { family, allow }) => (
            "unknown",
            with_allow(
                errors_for(family, &headers).method_not_allowed(allow),
                allow,
            ),
        ),
        Ok(route) => {
            let limits = &state.limits;
            let read = read_body(&headers, body, limits.body_limit, limits.body_read_timeout).await;
            let response = match read {
                Ok(bytes) => {
                    let call = Call {
                        method: &method,
                        path,
                        query: &query,
                        headers: &headers,
                        body: &bytes,
                    };
                    // Health and metrics stay answerable under load.
                    match route.family() {
                        routes::Family::Operations => dispatch(&state, &route, &call).await,
                        family => match state.in_flight.try_acquire() {
                            Ok(_permit) => dispatch(&state, &route, &call).await,
                            Err(_) => overloaded(family, &headers),
                        },
                    }
                }
                Err(BodyError::TooLarge) => errors_for(route.family(), &headers).too_large(),
                Err(BodyError::Broken) => errors_for(route.family(), &headers).unreadable(),
                Err(BodyError::TimedOut) => {
                    let mut r = errors_for(route.family(), &headers).request_timeout();
                    // The rest of the body may still come: do not read it as a request.
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    r
                }
            };
            (route.name(), response)
        }
    };
    let mut response = response;
    if matches!(
        routes::family_of(path),
        routes::Family::CloudFoundry | routes::Family::Uaa
    ) {
        cloudfoundry::stamp_request_id(&headers, &mut response);
    }
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

/// The answer when `max_in_flight` requests are being handled already.
fn overloaded(family: routes::Family, headers: &HeaderMap) -> Response {
    let mut r = errors_for(family, headers).unavailable("too many requests in flight");
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    r
}

/// The warp filter answering every request.
pub fn filter(
    state: Arc<State>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::any()
        .map(move || state.clone())
        .and(warp::method())
        .and(warp::path::full().map(|p: FullPath| p.as_str().to_string()))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and_then(|state, method, path, query, headers, body| {
            handle(state, method, path, query, headers, Box::pin(body))
        })
        .recover(|_| async { Ok::<_, Infallible>(text(StatusCode::BAD_REQUEST, "bad request")) })
        .unify()
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

/// Builds the state and starts the watch cache.
pub fn start(client: Client, config: &Config) -> anyhow::Result<Arc<State>> {
    let users = match &config.users_file {
        Some(path) => auth::UsersFile::load(path)?,
        None => auth::UsersFile::default(),
    };
    let cache = Arc::new(StageRunCache::new(config.namespaces.clone()));
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
    Ok(Arc::new(State {
        auth,
        client,
        cache,
        metrics: Metrics::new(),
        external_url: config.external_url.clone(),
        limits: config.limits.clone(),
        in_flight: Arc::new(Semaphore::new(config.limits.max_in_flight.max(1))),
    }))
}

/// Serves on `listener` until `shutdown` completes, then lets the
/// requests in progress finish.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let limits = state.limits.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes);
    let service = warp::service(filter(state));
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the connection limit, wait for a slot before accepting more.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: let some close first.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
