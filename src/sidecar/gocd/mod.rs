//! GoCD: the seeds' Stages API (cancel a stage, stage history by offset) and
//! the neighbouring calls GoCD's clients make: server version and about
//! page, stage instances, per-instance cancel, cursor-paged stage history,
//! pipeline history and instances. Current routes negotiate their version
//! through `Accept` as GoCD does; the seeds' legacy routes answer without it.

pub mod shapes;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::auth::Identity;
use super::http::{Call, html, json, json_as, text};
use super::render::ApiErrors;
use super::routes::GoCdRoute;
use super::service::Service;
use super::service::{CancelCall, Failure, Rights, Signing};
use crate::crd::StageRun;
use shapes::{
    Cursor, History, Href, LegacyPipelineHistory, PAGE_SIZE, PageLinks, Pagination,
    V1PipelineHistory, V3History, cursor_page, legacy_pipeline, legacy_stage, parse_counter,
    parse_cursor, parse_offset, pipeline_runs, sort_newest_first, stage_instance, v1_pipeline,
    v3_history_stage, v3_stage,
};

/// The GoCD release whose API this server speaks (what `/go/api/version`
/// and the about page report).
pub const GOCD_VERSION: &str = "23.1.0";

/// GoCD's answer to a path or API version it does not serve.
const URL_INCORRECT: &str = "The url you are trying to reach appears to be incorrect.\n";

/// API versions each current route serves (`application/vnd.go.cd+json`
/// asks for the newest).
const STAGE_API: &[u32] = &[3];
const PIPELINE_API: &[u32] = &[1];
const VERSION_API: &[u32] = &[1];

/// GoCD answers in plain text unless the client asks for JSON.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

#[derive(Serialize)]
struct Message<'a> {
    message: &'a str,
}

/// A GoCD message in the format the client asked for (legacy routes).
pub fn message(headers: &HeaderMap, status: StatusCode, msg: &str) -> Response {
    if wants_json(headers) {
        json(status, &Message { message: msg })
    } else {
        text(status, msg)
    }
}

/// A versioned GoCD media type named in `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Requested {
    Version(u32),
    Latest,
}

/// The GoCD media types of an `Accept` header, in order.
fn requested(headers: &HeaderMap) -> Vec<Requested> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Vec::new();
    };
    accept
        .split(',')
        .filter_map(|range| {
            let media = range.split(';').next()?.trim().to_ascii_lowercase();
            if media == "application/vnd.go.cd+json" {
                return Some(Requested::Latest);
            }
            let n = media
                .strip_prefix("application/vnd.go.cd.v")?
                .strip_suffix("+json")?;
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse().ok().map(Requested::Version))
                .flatten()
        })
        .collect()
}

/// The version of a current route to answer with, if `Accept` asks for one
/// it serves.
fn negotiate(headers: &HeaderMap, served: &[u32]) -> Option<u32> {
    requested(headers).into_iter().find_map(|r| match r {
        Requested::Latest => served.iter().max().copied(),
        Requested::Version(v) => served.contains(&v).then_some(v),
    })
}

fn media_type(version: u32) -> &'static str {
    match version {
        1 => "application/vnd.go.cd.v1+json; charset=utf-8",
        3 => "application/vnd.go.cd.v3+json; charset=utf-8",
        _ => "application/json; charset=utf-8",
    }
}

/// How a route answers: the seeds' legacy way, or a current API version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavour {
    Legacy,
    Current(u32),
}

impl Flavour {
    fn message(self, headers: &HeaderMap, status: StatusCode, msg: &str) -> Response {
        match self {
            Flavour::Legacy => message(headers, status, msg),
            Flavour::Current(v) => json_as(status, media_type(v), &Message { message: msg }),
        }
    }

    fn body(self, status: StatusCode, body: &impl Serialize) -> Response {
        match self {
            Flavour::Legacy => json(status, body),
            Flavour::Current(v) => json_as(status, media_type(v), body),
        }
    }

    fn unauthenticated(self, headers: &HeaderMap) -> Response {
        let mut r = self.message(
            headers,
            StatusCode::UNAUTHORIZED,
            "Unauthorized: authentication is required.",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"GoCD\""),
        );
        r
    }

    fn unavailable(self, headers: &HeaderMap, why: &str) -> Response {
        tracing::error!(error = why, "GoCD request failed");
        self.message(
            headers,
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable: the Kubernetes API could not be reached; try again.",
        )
    }

    /// No permission: the seeds document 401, the current API answers 403.
    fn forbidden(self, headers: &HeaderMap, msg: &str) -> Response {
        let status = match self {
            Flavour::Legacy => StatusCode::UNAUTHORIZED,
            Flavour::Current(_) => StatusCode::FORBIDDEN,
        };
        self.message(headers, status, msg)
    }

    fn refused(self, headers: &HeaderMap, f: &Failure, forbidden: &str) -> Response {
        match f {
            Failure::Unauthenticated | Failure::Rejected(_) => self.unauthenticated(headers),
            Failure::Unavailable(why) => self.unavailable(headers, why),
            Failure::Forbidden | Failure::Hidden => self.forbidden(headers, forbidden),
        }
    }
}

/// GoCD's error format: plain text, or `{"message"}` when JSON is asked for.
pub struct Errors<'a> {
    pub headers: &'a HeaderMap,
}

impl ApiErrors for Errors<'_> {
    fn route_not_found(&self, _path: &str) -> Response {
        message(self.headers, StatusCode::NOT_FOUND, "Not Found")
    }
    fn method_not_allowed(&self, _allow: &str) -> Response {
        message(
            self.headers,
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
        )
    }
    fn too_large(&self) -> Response {
        message(
            self.headers,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request Entity Too Large: body larger than 64 KiB",
        )
    }
    fn request_timeout(&self) -> Response {
        message(
            self.headers,
            StatusCode::REQUEST_TIMEOUT,
            "Request Timeout: the request body was not received in time",
        )
    }
    fn unreadable(&self) -> Response {
        message(
            self.headers,
            StatusCode::BAD_REQUEST,
            "Bad Request { could not read the request body }",
        )
    }
    fn unauthenticated(&self) -> Response {
        Flavour::Legacy.unauthenticated(self.headers)
    }
    fn unavailable(&self, why: &str) -> Response {
        Flavour::Legacy.unavailable(self.headers, why)
    }
}

pub async fn handle(state: &Service, route: &GoCdRoute, call: &Call<'_>) -> Response {
    let versioned = !requested(call.headers).is_empty();
    match route {
        GoCdRoute::Cancel { pipeline, stage } => cancel_stage(state, call, pipeline, stage).await,
        GoCdRoute::CancelInstance {
            pipeline,
            pipeline_counter,
            stage,
            stage_counter,
        } => {
            cancel_instance(
                state,
                call,
                pipeline,
                pipeline_counter,
                stage,
                stage_counter,
            )
            .await
        }
        GoCdRoute::History {
            pipeline,
            stage,
            offset: None,
        } if versioned => cursor_history(state, call, pipeline, stage).await,
        GoCdRoute::History {
            pipeline,
            stage,
            offset,
        } => offset_history(state, call, pipeline, stage, offset.as_deref()).await,
        GoCdRoute::StageInstanceLegacy {
            pipeline,
            stage,
            pipeline_counter,
            stage_counter,
        } => {
            stage_instance_read(
                state,
                call,
                None,
                (pipeline, pipeline_counter, stage, stage_counter),
            )
            .await
        }
        GoCdRoute::StageInstance {
            pipeline,
            pipeline_counter,
            stage,
            stage_counter,
        } => {
            stage_instance_read(
                state,
                call,
                Some(STAGE_API),
                (pipeline, pipeline_counter, stage, stage_counter),
            )
            .await
        }
        GoCdRoute::PipelineHistory {
            pipeline,
            offset: None,
        } if versioned => pipeline_cursor_history(state, call, pipeline).await,
        GoCdRoute::PipelineHistory { pipeline, offset } => {
            pipeline_offset_history(state, call, pipeline, offset.as_deref()).await
        }
        GoCdRoute::PipelineInstanceLegacy { pipeline, counter } => {
            pipeline_instance(state, call, None, pipeline, counter).await
        }
        GoCdRoute::PipelineInstance { pipeline, counter } => {
            pipeline_instance(state, call, Some(PIPELINE_API), pipeline, counter).await
        }
        GoCdRoute::Version => version(state, call).await,
        GoCdRoute::About => about(state, call).await,
    }
}

fn url_incorrect() -> Response {
    text(StatusCode::NOT_FOUND, URL_INCORRECT)
}

async fn identify(
    state: &Service,
    call: &Call<'_>,
    flavour: Flavour,
) -> Result<Identity, Response> {
    state
        .identify(call, Signing::Refused)
        .await
        .map_err(|f| flavour.refused(call.headers, &f, ""))
}

/// A current route: the caller is authenticated first (as GoCD's filters
/// do), then `Accept` must name a version the route serves.
async fn current(
    state: &Service,
    call: &Call<'_>,
    served: &[u32],
) -> Result<(Identity, Flavour), Response> {
    let version = negotiate(call.headers, served);
    let who = identify(
        state,
        call,
        version.map_or(Flavour::Legacy, Flavour::Current),
    )
    .await?;
    match version {
        Some(v) => Ok((who, Flavour::Current(v))),
        None => Err(url_incorrect()),
    }
}

/// A legacy route (`served` None) or a current one.
async fn legacy_or_current(
    state: &Service,
    call: &Call<'_>,
    served: Option<&[u32]>,
) -> Result<(Identity, Flavour), Response> {
    match served {
        Some(served) => current(state, call, served).await,
        None => Ok((
            identify(state, call, Flavour::Legacy).await?,
            Flavour::Legacy,
        )),
    }
}

/// `POST /go/api/stages/{pipeline}/{stage}/cancel` (seed): every active
/// instance of the stage.
async fn cancel_stage(state: &Service, call: &Call<'_>, pipeline: &str, stage: &str) -> Response {
    let flavour = Flavour::Legacy;
    let who = match identify(state, call, flavour).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let runs = state.cache.by_stage(pipeline, stage);
    if runs.is_empty() {
        return flavour.message(
            call.headers,
            StatusCode::NOT_FOUND,
            &format!("Not Found {{ Stage '{stage}' of pipeline '{pipeline}' not found }}"),
        );
    }
    cancel_runs(state, call, flavour, &who, runs, pipeline, stage).await
}

/// `POST /go/api/stages/{pipeline}/{pipeline_counter}/{stage}/{stage_counter}/cancel`
/// (current): one stage instance. Needs a versioned `Accept` and, with no
/// JSON body, `X-GoCD-Confirm`.
async fn cancel_instance(
    state: &Service,
    call: &Call<'_>,
    pipeline: &str,
    pipeline_counter: &str,
    stage: &str,
    stage_counter: &str,
) -> Response {
    let (who, flavour) = match current(state, call, STAGE_API).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !call.body.is_empty() {
        let json_body = call
            .header(header::CONTENT_TYPE.as_str())
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json"));
        if !json_body {
            return flavour.message(
                call.headers,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "You must specify a 'Content-Type' of 'application/json'",
            );
        }
    } else if call.header("x-gocd-confirm").is_none() {
        return flavour.message(
            call.headers,
            StatusCode::BAD_REQUEST,
            "Missing required header 'X-GoCD-Confirm' with value 'true'",
        );
    }
    let runs = match find_instance(state, pipeline, pipeline_counter, stage, stage_counter) {
        Some(r) => r,
        None => {
            return flavour.message(
                call.headers,
                StatusCode::NOT_FOUND,
                &instance_not_found(stage, stage_counter),
            );
        }
    };
    cancel_runs(state, call, flavour, &who, runs, pipeline, stage).await
}

fn instance_not_found(stage: &str, stage_counter: &str) -> String {
    format!(
        "Not Found {{ Stage '{stage}' with counter '{stage_counter}' not found. Please make sure specified stage or stage run with specified counter exists. }}"
    )
}

/// The runs of one stage instance, if the counters are counters and it exists.
fn find_instance(
    state: &Service,
    pipeline: &str,
    pipeline_counter: &str,
    stage: &str,
    stage_counter: &str,
) -> Option<Vec<Arc<StageRun>>> {
    let (pc, sc) = (
        parse_counter(pipeline_counter)?,
        parse_counter(stage_counter)?,
    );
    let runs: Vec<Arc<StageRun>> = state
        .cache
        .by_stage(pipeline, stage)
        .into_iter()
        .filter(|r| r.spec.pipeline_counter == pc && r.spec.stage_counter == sc)
        .collect();
    (!runs.is_empty()).then_some(runs)
}

async fn cancel_runs(
    state: &Service,
    call: &Call<'_>,
    flavour: Flavour,
    who: &Identity,
    runs: Vec<Arc<StageRun>>,
    pipeline: &str,
    stage: &str,
) -> Response {
    let outcome = state
        .cancel(CancelCall {
            api: "gocd",
            who,
            runs,
            reason: format!("stage {pipeline}/{stage} cancelled through the GoCD API"),
            hide_unreadable: false,
        })
        .await;
    match outcome {
        Ok(o) if o.any_cancelled() => flavour.message(
            call.headers,
            StatusCode::OK,
            "Stage cancelled successfully.",
        ),
        Ok(_) => flavour.message(
            call.headers,
            StatusCode::OK,
            "Stage is not active. Cancellation Ignored.",
        ),
        Err(f) => flavour.refused(
            call.headers,
            &f,
            &format!(
                "You do not have operate permissions for stage '{stage}' of pipeline '{pipeline}'."
            ),
        ),
    }
}

/// The runs of `all` the caller may read, with their rights; a refusal when
/// there are none.
async fn readable(
    state: &Service,
    call: &Call<'_>,
    flavour: Flavour,
    who: &Identity,
    all: Vec<Arc<StageRun>>,
    pipeline: &str,
) -> Result<(Vec<Arc<StageRun>>, BTreeMap<String, Rights>), Response> {
    let view = format!("You do not have view permissions for pipeline '{pipeline}'.");
    let (runs, rights) = state
        .readable(who, all)
        .await
        .map_err(|f| flavour.refused(call.headers, &f, &view))?;
    if runs.is_empty() {
        return Err(flavour.forbidden(call.headers, &view));
    }
    Ok((runs, rights))
}

fn can_operate(rights: &BTreeMap<String, Rights>, run: &StageRun) -> bool {
    run.metadata
        .namespace
        .as_ref()
        .and_then(|ns| rights.get(ns))
        .is_some_and(|r| r.cancel)
}

/// `GET /go/api/stages/{pipeline}/{stage}/history[/{offset}]` (seed).
async fn offset_history(
    state: &Service,
    call: &Call<'_>,
    pipeline: &str,
    stage: &str,
    offset: Option<&str>,
) -> Response {
    let flavour = Flavour::Legacy;
    let who = match identify(state, call, flavour).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    if let Some(refused) = legacy_cursor_refused(call, offset) {
        return refused;
    }
    let Some(offset) = parse_offset(offset) else {
        return flavour.message(
            call.headers,
            StatusCode::BAD_REQUEST,
            "Bad Request { The offset must be a non-negative integer. }",
        );
    };
    let all = state.cache.by_stage(pipeline, stage);
    if all.is_empty() {
        return flavour.message(
            call.headers,
            StatusCode::NOT_FOUND,
            &format!("Not Found {{ Stage '{stage}' of pipeline '{pipeline}' not found }}"),
        );
    }
    let (mut runs, rights) = match readable(state, call, flavour, &who, all, pipeline).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    sort_newest_first(&mut runs);
    let total = runs.len();
    let stages = runs
        .iter()
        .skip(offset)
        .take(PAGE_SIZE)
        .map(|r| stage_instance(r, can_operate(&rights, r)))
        .collect();
    json(
        StatusCode::OK,
        &History {
            stages,
            pagination: Pagination {
                offset,
                total,
                page_size: PAGE_SIZE,
            },
        },
    )
}

/// Cursor parameters of the query, or why they are invalid.
fn cursor(call: &Call<'_>) -> Result<(Cursor, usize), String> {
    parse_cursor(
        call.query_param("after").as_deref(),
        call.query_param("before").as_deref(),
        call.query_param("page_size").as_deref(),
    )
}

/// The offset form of a history without an offset in its path takes the
/// cursor form's query parameters too (it answers the first page and pages
/// by offset), but refuses them when they are malformed, as the cursor form
/// does: one path, one set of rules for its query.
fn legacy_cursor_refused(call: &Call<'_>, offset: Option<&str>) -> Option<Response> {
    if offset.is_some() {
        return None;
    }
    let msg = cursor(call).err()?;
    Some(Flavour::Legacy.message(
        call.headers,
        StatusCode::BAD_REQUEST,
        &format!("Bad Request {{ {msg} }}"),
    ))
}

fn page_links(base: &str, previous: Option<i64>, next: Option<i64>) -> Option<PageLinks> {
    (previous.is_some() || next.is_some()).then(|| PageLinks {
        previous: previous.map(|id| Href {
            href: format!("{base}?before={id}"),
        }),
        next: next.map(|id| Href {
            href: format!("{base}?after={id}"),
        }),
    })
}

fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `GET /go/api/stages/{pipeline}/{stage}/history` with `Accept:
/// application/vnd.go.cd.v3+json`: newest first by stage id, paged by
/// `after`/`before` ids.
async fn cursor_history(state: &Service, call: &Call<'_>, pipeline: &str, stage: &str) -> Response {
    let (who, flavour) = match current(state, call, STAGE_API).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (cursor, size) = match self::cursor(call) {
        Ok(c) => c,
        Err(msg) => return flavour.message(call.headers, StatusCode::BAD_REQUEST, &msg),
    };
    let all = state.cache.by_stage(pipeline, stage);
    if all.is_empty() {
        return flavour.body(
            StatusCode::OK,
            &V3History {
                links: None,
                stages: vec![],
            },
        );
    }
    let (runs, _) = match readable(state, call, flavour, &who, all, pipeline).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // Only runs the controller has given an id can be paged by id.
    let mut by_id: Vec<(i64, Arc<StageRun>)> = runs
        .into_iter()
        .filter_map(|r| r.status.as_ref().and_then(|s| s.id).map(|id| (id, r)))
        .collect();
    by_id.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    by_id.dedup_by_key(|(id, _)| *id);
    let ids: Vec<i64> = by_id.iter().map(|(id, _)| *id).collect();
    let (page, previous, next) = cursor_page(&ids, cursor, size);
    let base = format!(
        "{}/go/api/stages/{}/{}/history",
        call.base_url(state.external_url.as_deref()),
        path_segment(pipeline),
        path_segment(stage)
    );
    let stages = page
        .iter()
        .filter_map(|id| by_id.iter().find(|(i, _)| i == id))
        .map(|(_, r)| v3_history_stage(r))
        .collect();
    flavour.body(
        StatusCode::OK,
        &V3History {
            links: page_links(&base, previous, next),
            stages,
        },
    )
}

/// A stage instance, legacy or current (v3).
async fn stage_instance_read(
    state: &Service,
    call: &Call<'_>,
    served: Option<&[u32]>,
    (pipeline, pipeline_counter, stage, stage_counter): (&str, &str, &str, &str),
) -> Response {
    let (who, flavour) = match legacy_or_current(state, call, served).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(runs) = find_instance(state, pipeline, pipeline_counter, stage, stage_counter) else {
        return flavour.message(
            call.headers,
            StatusCode::NOT_FOUND,
            &instance_not_found(stage, stage_counter),
        );
    };
    let (runs, _) = match readable(state, call, flavour, &who, runs, pipeline).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(run) = runs.first() else {
        return flavour.message(
            call.headers,
            StatusCode::NOT_FOUND,
            &instance_not_found(stage, stage_counter),
        );
    };
    match flavour {
        Flavour::Legacy => flavour.body(StatusCode::OK, &legacy_stage(run)),
        Flavour::Current(_) => flavour.body(StatusCode::OK, &v3_stage(run)),
    }
}

fn pipeline_not_found(pipeline: &str) -> String {
    format!("Not Found {{ Pipeline '{pipeline}' not found. }}")
}

/// `GET /go/api/pipelines/{pipeline}/history[/{offset}]` (legacy).
async fn pipeline_offset_history(
    state: &Service,
    call: &Call<'_>,
    pipeline: &str,
    offset: Option<&str>,
) -> Response {
    let flavour = Flavour::Legacy;
    let who = match identify(state, call, flavour).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    if let Some(refused) = legacy_cursor_refused(call, offset) {
        return refused;
    }
    let Some(offset) = parse_offset(offset) else {
        return flavour.message(
            call.headers,
            StatusCode::BAD_REQUEST,
            "Bad Request { The offset must be a non-negative integer. }",
        );
    };
    let all = state.cache.by_pipeline(pipeline);
    if all.is_empty() {
        return flavour.message(
            call.headers,
            StatusCode::NOT_FOUND,
            &pipeline_not_found(pipeline),
        );
    }
    let (runs, rights) = match readable(state, call, flavour, &who, all, pipeline).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let groups = pipeline_runs(&runs);
    let total = groups.len();
    let operate = |r: &StageRun| can_operate(&rights, r);
    let pipelines = groups
        .iter()
        .skip(offset)
        .take(PAGE_SIZE)
        .filter_map(|(counter, stages)| legacy_pipeline(*counter, stages, &operate))
        .collect();
    json(
        StatusCode::OK,
        &LegacyPipelineHistory {
            pipelines,
            pagination: Pagination {
                offset,
                total,
                page_size: PAGE_SIZE,
            },
        },
    )
}

/// `GET /go/api/pipelines/{pipeline}/history` with `Accept:
/// application/vnd.go.cd.v1+json`: paged by pipeline counter.
async fn pipeline_cursor_history(state: &Service, call: &Call<'_>, pipeline: &str) -> Response {
    let (who, flavour) = match current(state, call, PIPELINE_API).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (cursor, size) = match self::cursor(call) {
        Ok(c) => c,
        Err(msg) => return flavour.message(call.headers, StatusCode::BAD_REQUEST, &msg),
    };
    let all = state.cache.by_pipeline(pipeline);
    if all.is_empty() {
        return flavour.message(
            call.headers,
            StatusCode::NOT_FOUND,
            &pipeline_not_found(pipeline),
        );
    }
    let (runs, rights) = match readable(state, call, flavour, &who, all, pipeline).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let groups = pipeline_runs(&runs);
    let ids: Vec<i64> = groups.iter().map(|(c, _)| *c).collect();
    let (page, previous, next) = cursor_page(&ids, cursor, size);
    let operate = |r: &StageRun| can_operate(&rights, r);
    let pipelines = page
        .iter()
        .filter_map(|c| groups.iter().find(|(counter, _)| counter == c))
        .filter_map(|(counter, stages)| v1_pipeline(*counter, stages, &operate))
        .collect();
    let base = format!(
        "{}/go/api/pipelines/{}/history",
        call.base_url(state.external_url.as_deref()),
        path_segment(pipeline)
    );
    flavour.body(
        StatusCode::OK,
        &V1PipelineHistory {
            links: page_links(&base, previous, next),
            pipelines,
        },
    )
}

/// A pipeline instance: legacy (`/instance/{counter}`) or current (v1).
async fn pipeline_instance(
    state: &Service,
    call: &Call<'_>,
    served: Option<&[u32]>,
    pipeline: &str,
    counter: &str,
) -> Response {
    let (who, flavour) = match legacy_or_current(state, call, served).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(counter) = parse_counter(counter).filter(|c| *c >= 1) else {
        let status = match flavour {
            Flavour::Legacy => StatusCode::NOT_FOUND,
            Flavour::Current(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        return flavour.message(
            call.headers,
            status,
            "The pipeline counter should be an integer of at least 1.",
        );
    };
    let runs = state.cache.by_build(pipeline, counter);
    if runs.is_empty() {
        return flavour.message(
            call.headers,
            StatusCode::NOT_FOUND,
            &format!("Not Found {{ Pipeline '{pipeline}' with counter '{counter}' not found. }}"),
        );
    }
    let (runs, rights) = match readable(state, call, flavour, &who, runs, pipeline).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let groups = pipeline_runs(&runs);
    let operate = |r: &StageRun| can_operate(&rights, r);
    let Some((c, stages)) = groups.first() else {
        return flavour.message(
            call.headers,
            StatusCode::NOT_FOUND,
            &pipeline_not_found(pipeline),
        );
    };
    match flavour {
        Flavour::Legacy => flavour.body(StatusCode::OK, &legacy_pipeline(*c, stages, &operate)),
        Flavour::Current(_) => flavour.body(StatusCode::OK, &v1_pipeline(*c, stages, &operate)),
    }
}

#[derive(Serialize)]
struct VersionLinks {
    #[serde(rename = "self")]
    self_: Href,
    doc: Href,
}

/// GoCD's version document.
#[derive(Serialize)]
struct VersionInfo {
    #[serde(rename = "_links")]
    links: VersionLinks,
    version: &'static str,
    build_number: &'static str,
    git_sha: &'static str,
    full_version: String,
    commit_url: String,
}

/// The build this server reports: the operator's own version.
const BUILD: &str = env!("CARGO_PKG_VERSION");

fn full_version() -> String {
    format!("{GOCD_VERSION} ({BUILD})")
}

/// `GET /go/api/version` (v1).
async fn version(state: &Service, call: &Call<'_>) -> Response {
    let flavour = match current(state, call, VERSION_API).await {
        Ok((_, flavour)) => flavour,
        Err(r) => return r,
    };
    let base = call.base_url(state.external_url.as_deref());
    flavour.body(
        StatusCode::OK,
        &VersionInfo {
            links: VersionLinks {
                self_: Href {
                    href: format!("{base}/go/api/version"),
                },
                doc: Href {
                    href: "https://api.gocd.org/#version".into(),
                },
            },
            version: GOCD_VERSION,
            build_number: BUILD,
            git_sha: "",
            full_version: full_version(),
            commit_url: String::new(),
        },
    )
}

/// `GET /go/about`: the HTML page whose table clients read the server
/// version from.
async fn about(state: &Service, call: &Call<'_>) -> Response {
    if let Err(r) = identify(state, call, Flavour::Legacy).await {
        return r;
    }
    let rows = [
        ("Server Version", full_version()),
        ("Server", format!("cancel-operator {BUILD}")),
        ("OS Information", std::env::consts::OS.to_string()),
    ];
    let cells: String = rows
        .iter()
        .map(|(k, v)| format!("<tr><td>{k}</td><td>{v}</td></tr>"))
        .collect();
    html(
        StatusCode::OK,
        format!(
            "<!DOCTYPE html><html><head><title>About - GoCD</title></head><body><table class=\"about\">{cells}</table></body></html>"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn versions_are_negotiated_as_gocd_does() {
        assert_eq!(
            negotiate(&accept("application/vnd.go.cd.v3+json"), STAGE_API),
            Some(3)
        );
        assert_eq!(
            negotiate(&accept("application/vnd.go.cd+json"), STAGE_API),
            Some(3)
        );
        assert_eq!(
            negotiate(&accept("Application/Vnd.Go.Cd.V1+Json; q=1"), VERSION_API),
            Some(1)
        );
        assert_eq!(
            negotiate(
                &accept("application/vnd.go.cd.v2+json, application/vnd.go.cd.v3+json"),
                STAGE_API
            ),
            Some(3)
        );
        for bad in [
            "application/json",
            "*/*",
            "application/vnd.go.cd.v1+json",
            "application/vnd.go.cd.vx+json",
            "text/html",
        ] {
            assert_eq!(negotiate(&accept(bad), STAGE_API), None, "{bad}");
        }
        assert_eq!(negotiate(&HeaderMap::new(), STAGE_API), None);
        assert!(requested(&accept("application/json")).is_empty());
        assert!(!requested(&accept("application/vnd.go.cd.v9+json")).is_empty());
    }
}
