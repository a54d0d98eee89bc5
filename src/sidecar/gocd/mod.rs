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
use super::routes::{GoCdRoute, StageInstance};
use super::service::Service;
use super::service::{CancelCall, Failure, Rights, Signing, counters_of, uids_of};
use crate::archive::IdWindow;
use crate::crd::StageRun;
use shapes::{
    Cursor, History, Href, LegacyPipelineHistory, PAGE_SIZE, PageLinks, Pagination,
    V1PipelineHistory, V3History, cursor_page, legacy_pipeline, legacy_stage, parse_counter,
    parse_cursor, parse_offset, pipeline_runs, stage_instance, v1_pipeline, v3_history_stage,
    v3_stage,
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

    fn archive_unavailable(self, headers: &HeaderMap, why: &str) -> Response {
        tracing::error!(error = why, "GoCD request failed: archive unavailable");
        self.message(
            headers,
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable: the archive of finished stages could not be reached; try again.",
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
            Failure::ArchiveUnavailable(why) => self.archive_unavailable(headers, why),
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
    fn forbidden(&self) -> Response {
        Flavour::Legacy.forbidden(
            self.headers,
            "You do not have permission to perform this operation.",
        )
    }
}

/// Answers a GoCD call: the route's flavour is negotiated, the caller
/// identified (before the version is judged, as GoCD's filters do), the
/// route served, and a refusal rendered in the route's flavour.
pub async fn handle(state: &Service, route: &GoCdRoute, call: &Call<'_>) -> Response {
    let version = served(route, !requested(call.headers).is_empty())
        .map(|served| negotiate(call.headers, served));
    let flavour = match version {
        Some(Some(v)) => Flavour::Current(v),
        _ => Flavour::Legacy,
    };
    let answer = async {
        let who = state
            .identify(call, Signing::Refused)
            .await
            .map_err(|f| Refused::Service(f, String::new()))?;
        if version == Some(None) {
            return Err(Refused::UrlIncorrect);
        }
        GoCd {
            state,
            call,
            who,
            flavour,
        }
        .serve(route)
        .await
    }
    .await;
    answer.unwrap_or_else(|r| r.render(flavour, call.headers))
}

/// The API versions a route serves; None for the seeds' legacy routes (and
/// for a history without an offset asked for in the legacy way).
fn served(route: &GoCdRoute, versioned: bool) -> Option<&'static [u32]> {
    match route {
        GoCdRoute::CancelInstance { .. } | GoCdRoute::StageInstance { .. } => Some(STAGE_API),
        GoCdRoute::History { offset: None, .. } if versioned => Some(STAGE_API),
        GoCdRoute::PipelineHistory { offset: None, .. } if versioned => Some(PIPELINE_API),
        GoCdRoute::PipelineInstance { .. } => Some(PIPELINE_API),
        GoCdRoute::Version => Some(VERSION_API),
        GoCdRoute::Cancel { .. }
        | GoCdRoute::History { .. }
        | GoCdRoute::StageInstanceLegacy { .. }
        | GoCdRoute::PipelineHistory { .. }
        | GoCdRoute::PipelineInstanceLegacy { .. }
        | GoCdRoute::About => None,
    }
}

/// Why a GoCD call is not answered as asked; rendered in the route's flavour.
#[derive(Debug)]
enum Refused {
    /// The service refused; the text is GoCD's message for a caller
    /// without permission.
    Service(Failure, String),
    /// The caller may see none of what it asked for.
    Forbidden(String),
    /// A GoCD message with this status.
    Message(StatusCode, String),
    /// A path or API version GoCD does not serve.
    UrlIncorrect,
}

impl Refused {
    fn not_found(msg: String) -> Self {
        Refused::Message(StatusCode::NOT_FOUND, msg)
    }

    fn bad_request(msg: String) -> Self {
        Refused::Message(StatusCode::BAD_REQUEST, msg)
    }

    fn render(self, flavour: Flavour, headers: &HeaderMap) -> Response {
        match self {
            Refused::Service(f, forbidden) => flavour.refused(headers, &f, &forbidden),
            Refused::Forbidden(msg) => flavour.forbidden(headers, &msg),
            Refused::Message(status, msg) => flavour.message(headers, status, &msg),
            Refused::UrlIncorrect => text(StatusCode::NOT_FOUND, URL_INCORRECT),
        }
    }
}

type Answer = Result<Response, Refused>;

fn stage_not_found(pipeline: &str, stage: &str) -> Refused {
    Refused::not_found(format!(
        "Not Found {{ Stage '{stage}' of pipeline '{pipeline}' not found }}"
    ))
}

fn instance_not_found(instance: &StageInstance) -> Refused {
    let StageInstance {
        stage,
        stage_counter,
        ..
    } = instance;
    Refused::not_found(format!(
        "Not Found {{ Stage '{stage}' with counter '{stage_counter}' not found. Please make sure specified stage or stage run with specified counter exists. }}"
    ))
}

fn pipeline_not_found(pipeline: &str) -> Refused {
    Refused::not_found(format!("Not Found {{ Pipeline '{pipeline}' not found. }}"))
}

fn bad_offset() -> Refused {
    Refused::bad_request("Bad Request { The offset must be a non-negative integer. }".into())
}

/// GoCD's answer to a cancel of a stage with no active instance.
const NOT_ACTIVE: &str = "Stage is not active. Cancellation Ignored.";

fn no_operate(pipeline: &str, stage: &str) -> String {
    format!("You do not have operate permissions for stage '{stage}' of pipeline '{pipeline}'.")
}

/// The runs of one stage instance, in the cluster or the archive; not
/// found unless the counters are counters and it exists.
async fn find_instance(
    state: &Service,
    instance: &StageInstance,
) -> Result<Vec<Arc<StageRun>>, Refused> {
    let Some((pc, sc)) =
        parse_counter(&instance.pipeline_counter).zip(parse_counter(&instance.stage_counter))
    else {
        return Err(instance_not_found(instance));
    };
    let runs = state
        .stage_instance_runs(&instance.pipeline, pc, &instance.stage, sc)
        .await
        .map_err(|f| Refused::Service(f, String::new()))?;
    if runs.is_empty() {
        return Err(instance_not_found(instance));
    }
    Ok(runs)
}

/// The runs of `runs` in one of `namespaces`.
fn in_namespaces(runs: Vec<Arc<StageRun>>, namespaces: &[String]) -> Vec<Arc<StageRun>> {
    runs.into_iter()
        .filter(|r| (r.metadata.namespace.as_ref()).is_some_and(|ns| namespaces.contains(ns)))
        .collect()
}

fn can_operate(rights: &BTreeMap<String, Rights>, run: &StageRun) -> bool {
    run.metadata
        .namespace
        .as_ref()
        .and_then(|ns| rights.get(ns))
        .is_some_and(|r| r.cancel)
}

/// Cursor parameters of the query, or why they are invalid.
fn cursor(call: &Call<'_>) -> Result<(Cursor, usize), String> {
    parse_cursor(
        call.query_param("after").as_deref(),
        call.query_param("before").as_deref(),
        call.query_param("page_size").as_deref(),
    )
}

/// The offset of a legacy history. Without an offset in its path it takes
/// the cursor form's query parameters too (it answers the first page and
/// pages by offset), but refuses them when they are malformed, as the cursor
/// form does: one path, one set of rules for its query.
fn legacy_offset(call: &Call<'_>, offset: Option<&str>) -> Result<usize, Refused> {
    if offset.is_none()
        && let Err(msg) = cursor(call)
    {
        return Err(Refused::bad_request(format!("Bad Request {{ {msg} }}")));
    }
    parse_offset(offset).ok_or_else(bad_offset)
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

/// One GoCD call being served: who asks, and how the route answers.
struct GoCd<'a, 'c> {
    state: &'a Service,
    call: &'a Call<'c>,
    who: Identity,
    flavour: Flavour,
}

impl GoCd<'_, '_> {
    async fn serve(&self, route: &GoCdRoute) -> Answer {
        let current = matches!(self.flavour, Flavour::Current(_));
        match route {
            GoCdRoute::Cancel { pipeline, stage } => self.cancel_stage(pipeline, stage).await,
            GoCdRoute::CancelInstance(instance) => self.cancel_instance(instance).await,
            GoCdRoute::History {
                pipeline,
                stage,
                offset: None,
            } if current => self.cursor_history(pipeline, stage).await,
            GoCdRoute::History {
                pipeline,
                stage,
                offset,
            } => {
                self.offset_history(pipeline, stage, offset.as_deref())
                    .await
            }
            GoCdRoute::StageInstanceLegacy(instance) | GoCdRoute::StageInstance(instance) => {
                self.stage_instance(instance).await
            }
            GoCdRoute::PipelineHistory {
                pipeline,
                offset: None,
            } if current => self.pipeline_cursor_history(pipeline).await,
            GoCdRoute::PipelineHistory { pipeline, offset } => {
                self.pipeline_offset_history(pipeline, offset.as_deref())
                    .await
            }
            GoCdRoute::PipelineInstanceLegacy { pipeline, counter }
            | GoCdRoute::PipelineInstance { pipeline, counter } => {
                self.pipeline_instance(pipeline, counter).await
            }
            GoCdRoute::Version => Ok(self.version()),
            GoCdRoute::About => Ok(about()),
        }
    }

    fn message(&self, status: StatusCode, msg: &str) -> Response {
        self.flavour.message(self.call.headers, status, msg)
    }

    fn body(&self, body: &impl Serialize) -> Response {
        self.flavour.body(StatusCode::OK, body)
    }

    /// `POST /go/api/stages/{pipeline}/{stage}/cancel` (seed): every active
    /// instance of the stage. A stage whose runs have all moved to the
    /// archive exists and is not active; the archive is asked only then.
    async fn cancel_stage(&self, pipeline: &str, stage: &str) -> Answer {
        let runs = self.state.cache.by_stage(pipeline, stage);
        if !runs.is_empty() {
            return self.cancel_runs(runs, pipeline, stage).await;
        }
        let archived = (self.state.stage_namespaces(pipeline, stage, &[]).await)
            .map_err(|f| Refused::Service(f, String::new()))?;
        if archived.is_empty() {
            return Err(stage_not_found(pipeline, stage));
        }
        (self
            .state
            .authorise_cancel(&self.who, &archived, false)
            .await)
            .map_err(|f| Refused::Service(f, no_operate(pipeline, stage)))?;
        Ok(self.message(StatusCode::OK, NOT_ACTIVE))
    }

    /// `POST /go/api/stages/{pipeline}/{pipeline_counter}/{stage}/{stage_counter}/cancel`
    /// (current): one stage instance. With no JSON body it needs
    /// `X-GoCD-Confirm`.
    async fn cancel_instance(&self, instance: &StageInstance) -> Answer {
        let call = self.call;
        if !call.body.is_empty() {
            let json_body = call
                .header(header::CONTENT_TYPE.as_str())
                .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json"));
            if !json_body {
                return Err(Refused::Message(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "You must specify a 'Content-Type' of 'application/json'".into(),
                ));
            }
        } else if call.header("x-gocd-confirm").is_none() {
            return Err(Refused::bad_request(
                "Missing required header 'X-GoCD-Confirm' with value 'true'".into(),
            ));
        }
        let runs = find_instance(self.state, instance).await?;
        self.cancel_runs(runs, &instance.pipeline, &instance.stage)
            .await
    }

    async fn cancel_runs(&self, runs: Vec<Arc<StageRun>>, pipeline: &str, stage: &str) -> Answer {
        let outcome = self
            .state
            .cancel(CancelCall {
                api: crate::labels::via::GOCD,
                who: &self.who,
                runs,
                reason: format!("stage {pipeline}/{stage} cancelled through the GoCD API"),
                hide_unreadable: false,
            })
            .await
            .map_err(|f| Refused::Service(f, no_operate(pipeline, stage)))?;
        let msg = if outcome.any_cancelled() {
            "Stage cancelled successfully."
        } else {
            NOT_ACTIVE
        };
        Ok(self.message(StatusCode::OK, msg))
    }

    /// The runs of `all` the caller may read, with their rights; refused
    /// when there are none.
    async fn readable(
        &self,
        all: Vec<Arc<StageRun>>,
        pipeline: &str,
    ) -> Result<(Vec<Arc<StageRun>>, BTreeMap<String, Rights>), Refused> {
        let view = format!("You do not have view permissions for pipeline '{pipeline}'.");
        match self.state.readable(&self.who, all).await {
            Err(f) => Err(Refused::Service(f, view)),
            Ok((runs, _)) if runs.is_empty() => Err(Refused::Forbidden(view)),
            Ok(readable) => Ok(readable),
        }
    }

    /// The namespaces of a stage's history the caller may read, and its
    /// rights there, from the cluster's runs `all` and the archive's; None
    /// when the stage has no run in either.
    async fn stage_rights(
        &self,
        all: &[Arc<StageRun>],
        pipeline: &str,
        stage: &str,
    ) -> Result<Option<(Vec<String>, BTreeMap<String, Rights>)>, Refused> {
        let namespaces = self.state.stage_namespaces(pipeline, stage, all).await;
        self.history_rights(namespaces, pipeline).await
    }

    /// [`Self::stage_rights`] for a pipeline's history.
    async fn pipeline_rights(
        &self,
        all: &[Arc<StageRun>],
        pipeline: &str,
    ) -> Result<Option<(Vec<String>, BTreeMap<String, Rights>)>, Refused> {
        let namespaces = self.state.pipeline_namespaces(pipeline, all).await;
        self.history_rights(namespaces, pipeline).await
    }

    /// The caller's rights in the `namespaces` of a history and those it
    /// may read; None when there are none, refused when it may read none.
    async fn history_rights(
        &self,
        namespaces: Result<Vec<String>, Failure>,
        pipeline: &str,
    ) -> Result<Option<(Vec<String>, BTreeMap<String, Rights>)>, Refused> {
        let view = format!("You do not have view permissions for pipeline '{pipeline}'.");
        let namespaces = namespaces.map_err(|f| Refused::Service(f, view.clone()))?;
        if namespaces.is_empty() {
            return Ok(None);
        }
        let rights = (self.state.rights_in(&self.who, namespaces).await)
            .map_err(|f| Refused::Service(f, view.clone()))?;
        let readable: Vec<String> = (rights.iter())
            .filter(|(_, r)| r.read)
            .map(|(ns, _)| ns.clone())
            .collect();
        if readable.is_empty() {
            return Err(Refused::Forbidden(view));
        }
        Ok(Some((readable, rights)))
    }

    /// `GET /go/api/stages/{pipeline}/{stage}/history[/{offset}]` (seed),
    /// from the cluster and the archive together.
    async fn offset_history(&self, pipeline: &str, stage: &str, offset: Option<&str>) -> Answer {
        let offset = legacy_offset(self.call, offset)?;
        let all = self.state.cache.by_stage(pipeline, stage);
        let Some((readable, rights)) = self.stage_rights(&all, pipeline, stage).await? else {
            return Err(stage_not_found(pipeline, stage));
        };
        let in_cluster = uids_of(&all);
        let runs = in_namespaces(all, &readable);
        let (page, total) = self
            .state
            .stage_history(
                (pipeline, stage),
                &readable,
                runs,
                &in_cluster,
                offset,
                PAGE_SIZE,
            )
            .await
            .map_err(|f| Refused::Service(f, String::new()))?;
        let stages = page
            .iter()
            .map(|r| stage_instance(r, can_operate(&rights, r)))
            .collect();
        Ok(json(
            StatusCode::OK,
            &History {
                stages,
                pagination: Pagination {
                    offset,
                    total,
                    page_size: PAGE_SIZE,
                },
            },
        ))
    }

    /// `GET /go/api/stages/{pipeline}/{stage}/history` with `Accept:
    /// application/vnd.go.cd.v3+json`: newest first by stage id, paged by
    /// `after`/`before` ids, from the cluster and the archive together.
    async fn cursor_history(&self, pipeline: &str, stage: &str) -> Answer {
        let (cursor, size) = cursor(self.call).map_err(Refused::bad_request)?;
        let all = self.state.cache.by_stage(pipeline, stage);
        let Some((readable, _)) = self.stage_rights(&all, pipeline, stage).await? else {
            return Ok(self.body(&V3History {
                links: None,
                stages: vec![],
            }));
        };
        let in_cluster = uids_of(&all);
        let runs = in_namespaces(all, &readable);
        let window = match cursor {
            Cursor::Latest => IdWindow::Below(i64::MAX),
            Cursor::After(id) => IdWindow::Below(id),
            Cursor::Before(id) => IdWindow::Above(id),
        };
        let archived = self
            .state
            .archived_stage_ids((pipeline, stage), &readable, &in_cluster, window, size)
            .await
            .map_err(|f| Refused::Service(f, String::new()))?;
        // Only runs the controller has given an id can be paged by id. The
        // cluster's first, so that its copy wins a tie; the archive's window
        // holds every archived run of the page, and its newest and oldest
        // ids tell whether there are pages beyond.
        let mut by_id: Vec<(i64, Arc<StageRun>)> = (runs.into_iter())
            .chain(archived.runs.into_iter().map(Arc::new))
            .filter_map(|r| r.status.as_ref().and_then(|s| s.id).map(|id| (id, r)))
            .collect();
        by_id.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        by_id.dedup_by_key(|(id, _)| *id);
        let mut ids: Vec<i64> = (by_id.iter().map(|(id, _)| *id))
            .chain(archived.newest)
            .chain(archived.oldest)
            .collect();
        ids.sort_by_key(|id| std::cmp::Reverse(*id));
        ids.dedup();
        let (page, previous, next) = cursor_page(&ids, cursor, size);
        let base = format!(
            "{}/go/api/stages/{}/{}/history",
            self.base_url(),
            path_segment(pipeline),
            path_segment(stage)
        );
        let stages = page
            .iter()
            .filter_map(|id| by_id.iter().find(|(i, _)| i == id))
            .map(|(_, r)| v3_history_stage(r))
            .collect();
        Ok(self.body(&V3History {
            links: page_links(&base, previous, next),
            stages,
        }))
    }

    /// A stage instance, legacy or current (v3).
    async fn stage_instance(&self, instance: &StageInstance) -> Answer {
        let runs = find_instance(self.state, instance).await?;
        let (runs, _) = self.readable(runs, &instance.pipeline).await?;
        let run = runs.first().ok_or_else(|| instance_not_found(instance))?;
        Ok(match self.flavour {
            Flavour::Legacy => self.body(&legacy_stage(run)),
            Flavour::Current(_) => self.body(&v3_stage(run)),
        })
    }

    /// `GET /go/api/pipelines/{pipeline}/history[/{offset}]` (legacy),
    /// from the cluster and the archive together.
    async fn pipeline_offset_history(&self, pipeline: &str, offset: Option<&str>) -> Answer {
        let offset = legacy_offset(self.call, offset)?;
        let all = self.state.cache.by_pipeline(pipeline);
        let Some((readable, rights)) = self.pipeline_rights(&all, pipeline).await? else {
            return Err(pipeline_not_found(pipeline));
        };
        let in_cluster = uids_of(&all);
        let runs = in_namespaces(all, &readable);
        let (runs, total) = self
            .state
            .pipeline_history(pipeline, &readable, runs, &in_cluster, offset, PAGE_SIZE)
            .await
            .map_err(|f| Refused::Service(f, String::new()))?;
        let operate = |r: &StageRun| can_operate(&rights, r);
        let pipelines = pipeline_runs(&runs)
            .iter()
            .filter_map(|(counter, stages)| legacy_pipeline(*counter, stages, &operate))
            .collect();
        Ok(json(
            StatusCode::OK,
            &LegacyPipelineHistory {
                pipelines,
                pagination: Pagination {
                    offset,
                    total,
                    page_size: PAGE_SIZE,
                },
            },
        ))
    }

    /// `GET /go/api/pipelines/{pipeline}/history` with `Accept:
    /// application/vnd.go.cd.v1+json`: paged by pipeline counter, from the
    /// cluster and the archive together.
    async fn pipeline_cursor_history(&self, pipeline: &str) -> Answer {
        let (cursor, size) = cursor(self.call).map_err(Refused::bad_request)?;
        let all = self.state.cache.by_pipeline(pipeline);
        let Some((readable, rights)) = self.pipeline_rights(&all, pipeline).await? else {
            return Err(pipeline_not_found(pipeline));
        };
        let uids = uids_of(&all);
        let runs = in_namespaces(all, &readable);
        let in_cluster = counters_of(&runs);
        let window = match cursor {
            Cursor::Latest => IdWindow::Below(i64::MAX),
            Cursor::After(c) => IdWindow::Below(c),
            Cursor::Before(c) => IdWindow::Above(c),
        };
        let archived = self
            .state
            .archived_pipeline_counters(pipeline, &readable, &in_cluster, window, size)
            .await
            .map_err(|f| Refused::Service(f, String::new()))?;
        // The archive's window holds every archived counter of the page,
        // and its newest and oldest tell whether there are pages beyond.
        let mut ids: Vec<i64> = (in_cluster.iter().copied())
            .chain(archived.counters)
            .chain(archived.newest)
            .chain(archived.oldest)
            .collect();
        ids.sort_by_key(|id| std::cmp::Reverse(*id));
        ids.dedup();
        let (page, previous, next) = cursor_page(&ids, cursor, size);
        let runs = self
            .state
            .pipeline_runs_of(pipeline, &readable, runs, &uids, &page)
            .await
            .map_err(|f| Refused::Service(f, String::new()))?;
        let groups = pipeline_runs(&runs);
        let operate = |r: &StageRun| can_operate(&rights, r);
        let pipelines = page
            .iter()
            .filter_map(|c| groups.iter().find(|(counter, _)| counter == c))
            .filter_map(|(counter, stages)| v1_pipeline(*counter, stages, &operate))
            .collect();
        let base = format!(
            "{}/go/api/pipelines/{}/history",
            self.base_url(),
            path_segment(pipeline)
        );
        Ok(self.body(&V1PipelineHistory {
            links: page_links(&base, previous, next),
            pipelines,
        }))
    }

    /// A pipeline instance: legacy (`/instance/{counter}`) or current (v1).
    async fn pipeline_instance(&self, pipeline: &str, counter: &str) -> Answer {
        let Some(counter) = parse_counter(counter).filter(|c| *c >= 1) else {
            let status = match self.flavour {
                Flavour::Legacy => StatusCode::NOT_FOUND,
                Flavour::Current(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            return Err(Refused::Message(
                status,
                "The pipeline counter should be an integer of at least 1.".into(),
            ));
        };
        let runs = (self.state.build_runs(pipeline, counter).await)
            .map_err(|f| Refused::Service(f, String::new()))?;
        if runs.is_empty() {
            return Err(Refused::not_found(format!(
                "Not Found {{ Pipeline '{pipeline}' with counter '{counter}' not found. }}"
            )));
        }
        let (runs, rights) = self.readable(runs, pipeline).await?;
        let groups = pipeline_runs(&runs);
        let operate = |r: &StageRun| can_operate(&rights, r);
        let (c, stages) = groups.first().ok_or_else(|| pipeline_not_found(pipeline))?;
        Ok(match self.flavour {
            Flavour::Legacy => self.body(&legacy_pipeline(*c, stages, &operate)),
            Flavour::Current(_) => self.body(&v1_pipeline(*c, stages, &operate)),
        })
    }

    fn base_url(&self) -> String {
        self.call.base_url(self.state.external_url.as_deref())
    }

    /// `GET /go/api/version` (v1).
    fn version(&self) -> Response {
        let base = self.base_url();
        self.body(&VersionInfo {
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
        })
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

/// `GET /go/about`: the HTML page whose table clients read the server
/// version from.
fn about() -> Response {
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
