//! The HTTP server: each request is routed, its body read within the
//! limits, handed to its API (or refused in that API's format) and counted.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use futures::Stream;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::path::FullPath;
use warp::reply::Response;

use super::body::{BodyError, read_body};
use super::http::{Call, text};
use super::render::{ApiErrors, Operations, with_allow};
use super::routes::{self, Family, NoRoute, Route};
use super::service::{Service, start};
use super::{Config, OPENAPI, auth, cloudfoundry, codearts, crafter, gocd, studio, uaa};

/// Seconds a client is asked to wait when the sidecar sheds a request.
const RETRY_AFTER_SECONDS: &str = "1";

/// The error format of `family`; GoCD's depends on the Accept header.
pub(crate) fn errors_for(family: Family, headers: &HeaderMap) -> Box<dyn ApiErrors + '_> {
    match family {
        Family::GoCd => Box::new(gocd::Errors { headers }),
        Family::CodeArts => Box::new(codearts::Errors),
        Family::Crafter => Box::new(crafter::Errors),
        Family::StudioV2 => Box::new(studio::Errors),
        Family::CloudFoundry => Box::new(cloudfoundry::Errors),
        Family::Uaa => Box::new(uaa::Errors),
        Family::Operations => Box::new(Operations),
    }
}

/// `/readyz`: ready once the StageRun cache has synced. The archive does
/// not make the process unready (cancels never need it, and reads that do
/// answer their API's unavailable error); `?verbose` lists each check, the
/// archive's included, as the API server's own `/readyz?verbose` does.
async fn readiness(service: &Service, verbose: bool) -> Response {
    let synced = service.cache.is_synced();
    let status = if synced {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !verbose {
        return match synced {
            true => text(status, "ok"),
            false => text(status, "the StageRun cache has not synced yet"),
        };
    }
    let mut lines = vec![match synced {
        true => "[+]stagerun-cache ok".to_string(),
        false => "[-]stagerun-cache failed: not synced yet".to_string(),
    }];
    if let Some(archive) = &service.archive {
        lines.push(match archive.ping().await {
            Ok(()) => "[+]archive ok".to_string(),
            Err(_) => {
                "[-]archive failed (not required): history reads that need it answer unavailable"
                    .to_string()
            }
        });
    }
    lines.push(match synced {
        true => "readyz check passed".to_string(),
        false => "readyz check failed".to_string(),
    });
    text(status, &(lines.join("\n") + "\n"))
}

async fn dispatch(service: &Service, route: &Route, call: &Call<'_>) -> Response {
    match route {
        Route::GoCd(r) => gocd::handle(service, r, call).await,
        Route::CodeArts(r) => codearts::handle(service, r, call).await,
        Route::Crafter(r) => crafter::handle(service, r, call).await,
        Route::CloudFoundry(r) => cloudfoundry::handle(service, r, call).await,
        Route::Uaa(r) => uaa::handle(service, r, call).await,
        Route::Healthz => text(StatusCode::OK, "ok"),
        Route::Readyz => readiness(service, call.query_param("verbose").is_some()).await,
        Route::Metrics => {
            let mut r = text(StatusCode::OK, &service.metrics.encode(service.cache.len()));
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

/// One request, answered and counted.
pub(crate) async fn handle<S, B>(
    service: Arc<Service>,
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
    let (label, mut response) = match routes::route(&method, path) {
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
            let request = Request {
                method: &method,
                path,
                query: &query,
                headers: &headers,
            };
            (route.name(), answer(&service, &route, request, body).await)
        }
    };
    if matches!(routes::family_of(path), Family::CloudFoundry | Family::Uaa) {
        cloudfoundry::stamp_request_id(&headers, &mut response);
    }
    let status = response.status().as_u16();
    service.metrics.observe(label, status, start.elapsed());
    tracing::debug!(%method, path, status, "request");
    Ok(response)
}

/// A routed request before its body is read.
struct Request<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a str,
    headers: &'a HeaderMap,
}

/// Reads the body of a routed request and hands it to its API, unless
/// the body is refused or too many requests are in flight.
async fn answer<S, B>(service: &Service, route: &Route, request: Request<'_>, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let limits = &service.limits;
    let headers = request.headers;
    let errors = || errors_for(route.family(), headers);
    let bytes = match read_body(headers, body, limits.body_limit, limits.body_read_timeout).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => return errors().too_large(),
        Err(BodyError::Broken) => return errors().unreadable(),
        Err(BodyError::TimedOut) => {
            let mut r = errors().request_timeout();
            // The rest of the body may still come: do not read it as a request.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    let call = Call {
        method: request.method,
        path: request.path,
        query: request.query,
        headers,
        body: &bytes,
    };
    // Health and metrics stay answerable under load.
    match route.family() {
        Family::Operations => dispatch(service, route, &call).await,
        family => match service.in_flight.try_acquire() {
            Ok(_permit) => dispatch(service, route, &call).await,
            Err(_) => overloaded(family, headers),
        },
    }
}

/// The answer when `max_in_flight` requests are being handled already.
fn overloaded(family: Family, headers: &HeaderMap) -> Response {
    let mut r = errors_for(family, headers).unavailable("too many requests in flight");
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    r
}

/// The warp filter answering every request.
pub fn filter(
    service: Arc<Service>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::any()
        .map(move || service.clone())
        .and(warp::method())
        .and(warp::path::full().map(|p: FullPath| p.as_str().to_string()))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and_then(|service, method, path, query, headers, body| {
            handle(service, method, path, query, headers, Box::pin(body))
        })
        .recover(|_| async { Ok::<_, Infallible>(text(StatusCode::BAD_REQUEST, "bad request")) })
        .unify()
}

/// Serves on `listener` until `shutdown` completes, then lets the
/// requests in progress finish.
pub async fn serve(
    service: Arc<Service>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let limits = service.limits.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes);
    let service = warp::service(filter(service));
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
    let service = start(client, &config)?;
    let listener = TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "sidecar listening");
    serve(service, listener, crate::shutdown::signal()).await;
    Ok(())
}
