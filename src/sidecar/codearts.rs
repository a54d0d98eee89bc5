//! Huawei Cloud CodeArts Build: stop a build, and the reads a caller of
//! stop needs (is the task running, its build history, one build's steps).
//! A build task (`job_id`) is a pipeline; a build number (`build_no`) is its
//! pipeline counter; the build is every StageRun of that pipeline run.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::jiff::{RoundMode, SignedDuration, Timestamp, TimestampRound, Unit};
use serde::Serialize;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;

use super::auth::Identity;
use super::by_pipeline::{self, in_namespaces};
use super::history::archive_window;
use super::history::merged_window;
use super::http::{Call, json};
use super::render::ApiErrors;
use super::routes::CodeArtsRoute;
use super::service::Service;
use super::service::{CancelCall, Failure, Signing, is_active};
use super::service::{archive_failure, uids_of as uids};
use crate::crd::{JobState, RunResult, StageRun};

/// The error codes this API answers with (also listed in README.md).
pub mod codes {
    pub const MALFORMED_BODY: &str = "CB.00060200";
    pub const INVALID_JOB_ID: &str = "CB.00060201";
    pub const INVALID_BUILD_NO: &str = "CB.00060202";
    pub const INVALID_QUERY: &str = "CB.00060203";
    pub const UNAUTHENTICATED: &str = "CB.00060210";
    pub const FORBIDDEN: &str = "CB.00060211";
    pub const JOB_NOT_FOUND: &str = "CB.00060220";
    pub const BUILD_NOT_FOUND: &str = "CB.00060221";
    pub const ROUTE_NOT_FOUND: &str = "CB.00060222";
    pub const METHOD_NOT_ALLOWED: &str = "CB.00060230";
    pub const BODY_TOO_LARGE: &str = "CB.00060231";
    pub const INTERNAL: &str = "CB.00060299";
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error_code: &'a str,
    error_msg: &'a str,
}

pub fn error(status: StatusCode, code: &str, msg: &str) -> Response {
    json(
        status,
        &ErrorBody {
            error_code: code,
            error_msg: msg,
        },
    )
}

#[derive(Serialize)]
struct StopResult {
    result: bool,
}

/// Validated request parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct StopRequest {
    pub job_id: String,
    pub build_no: i64,
}

/// Validates `job_id` and `build_no` (a string of digits, at least 1).
pub fn validate(
    job_id: Option<&Value>,
    build_no: Option<&Value>,
) -> Result<StopRequest, (&'static str, String)> {
    let job_id = match job_id {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 255 => s.clone(),
        Some(Value::String(_)) => {
            return Err((codes::INVALID_JOB_ID, "job_id must not be empty".into()));
        }
        Some(_) => return Err((codes::INVALID_JOB_ID, "job_id must be a string".into())),
        None => return Err((codes::INVALID_JOB_ID, "job_id is required".into())),
    };
    let build_no = match build_no {
        Some(Value::String(s)) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1 && s.bytes().all(|b| b.is_ascii_digit()))
            .ok_or((
                codes::INVALID_BUILD_NO,
                format!("build_no must be a build number (1 or more), got {s:?}"),
            ))?,
        Some(_) => {
            return Err((
                codes::INVALID_BUILD_NO,
                "build_no must be a string of digits".into(),
            ));
        }
        None => return Err((codes::INVALID_BUILD_NO, "build_no is required".into())),
    };
    Ok(StopRequest { job_id, build_no })
}

/// Parses the JSON body of `POST /v3/jobs/stop`.
pub fn parse_body(body: &[u8]) -> Result<StopRequest, (&'static str, String)> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        (
            codes::MALFORMED_BODY,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(map) = value else {
        return Err((
            codes::MALFORMED_BODY,
            "request body must be a JSON object".into(),
        ));
    };
    validate(map.get("job_id"), map.get("build_no"))
}

/// CodeArts' error format: `{"error_code", "error_msg"}`.
pub struct Errors;

impl ApiErrors for Errors {
    fn route_not_found(&self, path: &str) -> Response {
        error(
            StatusCode::NOT_FOUND,
            codes::ROUTE_NOT_FOUND,
            &format!("no such API: {path}"),
        )
    }
    fn method_not_allowed(&self, allow: &str) -> Response {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::METHOD_NOT_ALLOWED,
            &format!("method not allowed; use {allow}"),
        )
    }
    fn too_large(&self) -> Response {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::BODY_TOO_LARGE,
            "request body larger than 64 KiB",
        )
    }
    fn request_timeout(&self) -> Response {
        error(
            StatusCode::REQUEST_TIMEOUT,
            codes::MALFORMED_BODY,
            "the request body was not received in time",
        )
    }
    fn unreadable(&self) -> Response {
        error(
            StatusCode::BAD_REQUEST,
            codes::MALFORMED_BODY,
            "could not read the request body",
        )
    }
    fn unauthenticated(&self) -> Response {
        error(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHENTICATED,
            "authentication failed: a valid X-Auth-Token or an AK/SK signature (SDK-HMAC-SHA256) is required",
        )
    }
    fn unavailable(&self, why: &str) -> Response {
        tracing::error!(error = why, "CodeArts request failed");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "internal error: the Kubernetes API could not be reached; try again",
        )
    }
    fn archive_unavailable(&self, why: &str) -> Response {
        tracing::error!(
            error = why,
            "CodeArts request failed: the archive could not be read"
        );
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "internal error: the build history could not be read; try again",
        )
    }
    fn forbidden(&self) -> Response {
        error(
            StatusCode::FORBIDDEN,
            codes::FORBIDDEN,
            "no permission for this operation",
        )
    }
}

/// Why a CodeArts call is not answered as asked; rendered in CodeArts'
/// error format.
#[derive(Debug)]
enum Refused {
    /// The service refused a call about build task `.1` (empty before the
    /// body naming it is read).
    Service(Failure, String),
    /// A CodeArts error: its status, code and message.
    Error(StatusCode, &'static str, String),
}

impl Refused {
    fn invalid((code, msg): (&'static str, String)) -> Self {
        Refused::Error(StatusCode::BAD_REQUEST, code, msg)
    }

    fn job_not_found(job_id: &str) -> Self {
        Refused::Error(
            StatusCode::NOT_FOUND,
            codes::JOB_NOT_FOUND,
            format!("build task {job_id} does not exist"),
        )
    }

    fn build_not_found(job_id: &str, build: i64) -> Self {
        Refused::Error(
            StatusCode::NOT_FOUND,
            codes::BUILD_NOT_FOUND,
            format!("build {build} of build task {job_id} does not exist"),
        )
    }

    fn render(self) -> Response {
        match self {
            Refused::Service(Failure::Unauthenticated, _) => Errors.unauthenticated(),
            Refused::Service(Failure::Rejected(why), _) => error(
                StatusCode::UNAUTHORIZED,
                codes::UNAUTHENTICATED,
                &format!("authentication failed: {why}"),
            ),
            Refused::Service(Failure::Unavailable(why), _) => Errors.unavailable(&why),
            Refused::Service(Failure::ArchiveUnavailable(why), _) => {
                Errors.archive_unavailable(&why)
            }
            Refused::Service(Failure::Forbidden | Failure::Hidden, job_id) => error(
                StatusCode::FORBIDDEN,
                codes::FORBIDDEN,
                &format!("no permission to stop builds of build task {job_id}"),
            ),
            Refused::Error(status, code, msg) => error(status, code, &msg),
        }
    }
}

type Answer = Result<Response, Refused>;

/// Answers a CodeArts call: the caller is identified (a signed request is
/// accepted), the route served, a refusal rendered as CodeArts does.
pub async fn handle(state: &Service, route: &CodeArtsRoute, call: &Call<'_>) -> Response {
    let answer = async {
        let who = state
            .identify(call, Signing::Accepted)
            .await
            .map_err(|f| Refused::Service(f, String::new()))?;
        let codearts = CodeArts { state, call, who };
        match route {
            CodeArtsRoute::Stop => codearts.stop(parse_body(call.body)).await,
            CodeArtsRoute::StopPath { job_id, build_no } => {
                let params = validate(
                    Some(&Value::String(job_id.clone())),
                    Some(&Value::String(build_no.clone())),
                );
                codearts.stop(params).await
            }
            CodeArtsRoute::Status { job_id } => codearts.status(job_id).await,
            CodeArtsRoute::History { job_id } => codearts.history(job_id).await,
            CodeArtsRoute::HistoryDetails {
                job_id,
                build_number,
            } => codearts.history_details(job_id, build_number).await,
        }
    }
    .await;
    answer.unwrap_or_else(Refused::render)
}

/// One CodeArts call being served, and who asks.
struct CodeArts<'a, 'c> {
    state: &'a Service,
    call: &'a Call<'c>,
    who: Identity,
}

#[derive(Serialize)]
struct StatusResult {
    result: bool,
}

/// Query of `GET /v3/jobs/{job_id}/history`.
#[derive(Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Page number, from 0.
    pub offset: usize,
    /// Builds per page, 1 to 100.
    pub limit: usize,
    /// Only builds started within this many days (1 to 30).
    pub interval: i64,
}

pub const HISTORY_DEFAULT_LIMIT: usize = 10;
pub const HISTORY_MAX_LIMIT: usize = 100;
pub const HISTORY_MAX_INTERVAL: i64 = 30;

/// Validates the history query; absent parameters take their defaults
/// (offset 0, limit 10, interval 30).
pub fn history_query(call: &Call<'_>) -> Result<HistoryQuery, String> {
    let int = |name: &str, default: i64, min: i64, max: i64| -> Result<i64, String> {
        match call.query_param(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n) && v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("{name} must be an integer from {min} to {max}, got {v:?}")),
        }
    };
    Ok(HistoryQuery {
        offset: int("offset", 0, 0, 1_000_000)? as usize,
        limit: int(
            "limit",
            HISTORY_DEFAULT_LIMIT as i64,
            1,
            HISTORY_MAX_LIMIT as i64,
        )? as usize,
        interval: int("interval", HISTORY_MAX_INTERVAL, 1, HISTORY_MAX_INTERVAL)?,
    })
}

/// One build in the history (the SDK's `HistoryRecord`).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    pub record_id: String,
    pub job_id: String,
    pub build_number: i64,
    pub start_time: String,
    pub end_time: String,
    pub result: String,
}

/// `ShowListHistoryResponse`.
#[derive(Serialize, Debug)]
pub struct HistoryPage {
    pub history_records: Vec<HistoryRecord>,
    pub total: usize,
}

/// CodeArts' time format, in UTC.
fn codearts_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

fn started(run: &StageRun) -> Option<Timestamp> {
    run.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(run.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

fn completed(run: &StageRun) -> Option<Timestamp> {
    run.status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .map(|t| t.0)
}

fn run_result(run: &StageRun) -> Option<RunResult> {
    run.status.as_ref().and_then(|s| s.result)
}

/// A build's result: `RUNNING` while a StageRun of it is active, else
/// `ABORTED` if one was cancelled, `FAILURE` if one failed, else `SUCCESS`.
pub fn build_result(runs: &[Arc<StageRun>]) -> &'static str {
    if runs.iter().any(|r| is_active(r)) {
        "RUNNING"
    } else if runs
        .iter()
        .any(|r| run_result(r) == Some(RunResult::Cancelled))
    {
        "ABORTED"
    } else if runs
        .iter()
        .any(|r| run_result(r) != Some(RunResult::Passed))
    {
        "FAILURE"
    } else {
        "SUCCESS"
    }
}

/// A stable id of one build: 32 hex digits, like CodeArts' record ids.
fn record_id(job_id: &str, build: i64) -> String {
    crate::labels::digest(&["codearts-build", job_id, &build.to_string()])[..32].to_string()
}

/// The earliest start of a build in a history of the last `interval`
/// days before `now`: rounded up to the microsecond (the archive's
/// precision), so that the cluster and the archive draw the line at the
/// same instant.
pub fn history_since(now: Timestamp, interval: i64) -> Timestamp {
    let since = now - SignedDuration::from_hours(24 * interval);
    let to_micros = TimestampRound::new()
        .smallest(Unit::Microsecond)
        .mode(RoundMode::Ceil);
    since.round(to_micros).unwrap_or(since)
}

/// `runs` by build number.
pub fn builds_of(
    runs: impl IntoIterator<Item = Arc<StageRun>>,
) -> BTreeMap<i64, Vec<Arc<StageRun>>> {
    let mut builds: BTreeMap<i64, Vec<Arc<StageRun>>> = BTreeMap::new();
    for r in runs {
        builds.entry(r.spec.pipeline_counter).or_default().push(r);
    }
    builds
}

/// The history record of build `number` (its runs `runs`), unless it
/// started before `since` (its earliest run's start; runs without one
/// aside). The archive selects builds the same way (`builds_since!`).
pub fn build_record(
    job_id: &str,
    number: i64,
    runs: &[Arc<StageRun>],
    since: Timestamp,
) -> Option<HistoryRecord> {
    let start = runs.iter().filter_map(|r| started(r)).min()?;
    if start < since {
        return None;
    }
    let end = if runs.iter().any(|r| is_active(r)) {
        String::new()
    } else {
        runs.iter()
            .filter_map(|r| completed(r))
            .max()
            .map(codearts_time)
            .unwrap_or_default()
    };
    Some(HistoryRecord {
        record_id: record_id(job_id, number),
        job_id: job_id.to_string(),
        build_number: number,
        start_time: codearts_time(start),
        end_time: end,
        result: build_result(runs).to_string(),
    })
}

/// The records of `builds` started at `since` or later, newest first.
pub fn build_records(
    job_id: &str,
    builds: BTreeMap<i64, Vec<Arc<StageRun>>>,
    since: Timestamp,
) -> Vec<HistoryRecord> {
    builds
        .into_iter()
        .rev()
        .filter_map(|(number, runs)| build_record(job_id, number, &runs, since))
        .collect()
}

/// How many builds lie before the page `query` asks for (its offset
/// counts pages).
pub fn page_start(query: &HistoryQuery) -> usize {
    query.offset.saturating_mul(query.limit)
}

/// The page `query` asks for of a history made of the cluster's records
/// `cluster` (all of them) and a window of the archive's, `archived`,
/// which starts at `window_start` ([`archive_window`]) of its
/// `archived_total` builds. The two hold different builds, so that the
/// window's arithmetic holds (see `history::merged_page`).
pub fn merged_history(
    cluster: Vec<HistoryRecord>,
    archived: Vec<HistoryRecord>,
    archived_total: usize,
    window_start: usize,
    query: &HistoryQuery,
) -> HistoryPage {
    let total = cluster.len() + archived_total;
    let history_records = merged_window(
        cluster,
        archived,
        window_start,
        page_start(query),
        query.limit,
        |a, b| b.build_number.cmp(&a.build_number),
    );
    HistoryPage {
        history_records,
        total,
    }
}

/// One step of a build (the SDK's `BuildStep`): a job of a StageRun.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct BuildStep {
    pub name: String,
    /// `running`, `success`, `error`, or empty when it has not run.
    pub status: String,
    /// Milliseconds it ran (so far).
    pub build_time: i64,
}

/// `ShowHistoryDetailsResponse`.
#[derive(Serialize, Debug)]
pub struct HistoryDetails {
    pub job_name: String,
    pub build_number: i64,
    /// The namespace of the build's StageRuns.
    pub project_id: String,
    pub project_name: String,
    pub parameters: BTreeMap<String, String>,
    pub build_steps: Vec<BuildStep>,
}

/// The steps of one build: every job of its StageRuns, by stage then job.
pub fn history_details_of(
    job_id: &str,
    build: i64,
    runs: &[Arc<StageRun>],
    now: Timestamp,
) -> HistoryDetails {
    let mut runs: Vec<&Arc<StageRun>> = runs.iter().collect();
    runs.sort_by(|a, b| {
        (&a.spec.stage, a.spec.stage_counter).cmp(&(&b.spec.stage, b.spec.stage_counter))
    });
    let mut steps = Vec::new();
    for run in &runs {
        let jobs = run.status.as_ref().map(|s| &s.jobs[..]).unwrap_or(&[]);
        // Cleanup jobs are steps too, once they run (a skipped one never did).
        for job_name in run.spec.job_names() {
            let name = format!("{}/{}", run.spec.stage, job_name);
            let found = jobs.iter().find(|j| j.name == job_name);
            if found.is_some_and(|j| j.skipped) {
                continue;
            }
            let Some(job) = found else {
                steps.push(BuildStep {
                    name,
                    status: String::new(),
                    build_time: 0,
                });
                continue;
            };
            let status = match (job.result, job.state) {
                (RunResult::Passed, _) => "success",
                (RunResult::Failed | RunResult::Cancelled, _) => "error",
                (_, JobState::Scheduled) => "",
                _ => "running",
            };
            let begin = job.scheduled_at.as_ref().map(|t| t.0);
            let end = job
                .completion_time
                .as_ref()
                .map(|t| t.0)
                .or((status == "running").then_some(now));
            let build_time = match (begin, end) {
                (Some(b), Some(e)) if e > b => e.duration_since(b).as_millis() as i64,
                _ => 0,
            };
            steps.push(BuildStep {
                name,
                status: status.to_string(),
                build_time,
            });
        }
    }
    let namespace = runs
        .first()
        .and_then(|r| r.metadata.namespace.clone())
        .unwrap_or_default();
    HistoryDetails {
        job_name: job_id.to_string(),
        build_number: build,
        project_id: namespace.clone(),
        project_name: namespace,
        parameters: BTreeMap::new(),
        build_steps: steps,
    }
}

impl CodeArts<'_, '_> {
    /// The service's refusal of a call about build task `job_id`.
    fn refused(job_id: &str) -> impl FnOnce(Failure) -> Refused + '_ {
        move |f| Refused::Service(f, job_id.to_string())
    }

    /// The namespaces of build task `job_id` (its runs in the cluster,
    /// `cluster`, and in the archive) where the caller may read: refused
    /// 404 when the task has no run in either, 403 when it may read none.
    async fn readable_namespaces(
        &self,
        job_id: &str,
        cluster: &[Arc<StageRun>],
    ) -> Result<Vec<String>, Refused> {
        let all = (self.state.pipeline_namespaces(job_id, cluster).await)
            .map_err(Self::refused(job_id))?;
        if all.is_empty() {
            return Err(Refused::job_not_found(job_id));
        }
        let readable = (by_pipeline::readable(self.state, &self.who, all).await)
            .map_err(Self::refused(job_id))?;
        if readable.is_empty() {
            return Err(Refused::Error(
                StatusCode::FORBIDDEN,
                codes::FORBIDDEN,
                format!("no permission to read build task {job_id}"),
            ));
        }
        Ok(readable)
    }

    /// The archive's runs of builds `numbers` of `job_id` in `namespaces`
    /// (all when empty) but for the uids `excluding`; none without an
    /// archive.
    async fn archived_runs(
        &self,
        namespaces: &[String],
        job_id: &str,
        numbers: &[i64],
        excluding: &[String],
    ) -> Result<Vec<Arc<StageRun>>, Refused> {
        let Some(archive) = &self.state.archive else {
            return Ok(Vec::new());
        };
        let runs = (archive
            .pipeline_runs(namespaces, job_id, numbers, excluding)
            .await)
            .map_err(|e| Refused::Service(archive_failure(e), job_id.to_string()))?;
        Ok(runs.into_iter().map(Arc::new).collect())
    }

    /// `GET /v3/jobs/{job_id}/status`: `{"result": true}` while a build of
    /// the task runs (some StageRun of it is not finished). Only the
    /// cluster has unfinished runs: the archive is asked only whether the
    /// task exists when the caller may read none of its runs there.
    async fn status(&self, job_id: &str) -> Answer {
        let cluster = self.state.cache.by_pipeline(job_id);
        let (visible, _) = (self.state.readable(&self.who, cluster.clone()).await)
            .map_err(Self::refused(job_id))?;
        if visible.is_empty() {
            self.readable_namespaces(job_id, &cluster).await?;
        }
        Ok(json(
            StatusCode::OK,
            &StatusResult {
                result: visible.iter().any(|r| is_active(r)),
            },
        ))
    }

    /// `GET /v3/jobs/{job_id}/history`: the builds of the cluster (each
    /// with its runs the archive has) and a window of the archive's other
    /// builds, paged as one history.
    async fn history(&self, job_id: &str) -> Answer {
        let cluster = self.state.cache.by_pipeline(job_id);
        let readable = self.readable_namespaces(job_id, &cluster).await?;
        let q = history_query(self.call)
            .map_err(|msg| Refused::Error(StatusCode::BAD_REQUEST, codes::INVALID_QUERY, msg))?;
        let since = history_since(Timestamp::now(), q.interval);
        let visible = (cluster.iter())
            .filter(|r| in_namespaces(r, &readable))
            .cloned();
        let mut builds = builds_of(visible);
        let in_cluster: Vec<i64> = builds.keys().copied().collect();
        let whole = self
            .archived_runs(&readable, job_id, &in_cluster, &uids(&cluster))
            .await?;
        for r in whole {
            builds.entry(r.spec.pipeline_counter).or_default().push(r);
        }
        let records = build_records(job_id, builds, since);
        let (start, count) = archive_window(page_start(&q), q.limit, records.len());
        let page = match &self.state.archive {
            Some(archive) => archive
                .build_page(
                    &readable,
                    job_id,
                    &in_cluster,
                    since,
                    i64::try_from(start).unwrap_or(i64::MAX),
                    i64::try_from(count).unwrap_or(i64::MAX),
                )
                .await
                .map_err(|e| Refused::Service(archive_failure(e), job_id.to_string()))?,
            None => Default::default(),
        };
        let runs = (self
            .archived_runs(&readable, job_id, &page.numbers, &[])
            .await)?;
        let archived = build_records(job_id, builds_of(runs), since);
        let total = usize::try_from(page.total).unwrap_or(0);
        Ok(json(
            StatusCode::OK,
            &merged_history(records, archived, total, start, &q),
        ))
    }

    /// `GET /v3/jobs/{job_id}/{build_number}/history-details`: the build's
    /// runs in the cluster and in the archive.
    async fn history_details(&self, job_id: &str, build_number: &str) -> Answer {
        let cluster = self.state.cache.by_pipeline(job_id);
        let readable = self.readable_namespaces(job_id, &cluster).await?;
        let build = validate(
            Some(&Value::String(job_id.to_string())),
            Some(&Value::String(build_number.to_string())),
        )
        .map_err(|(code, msg)| Refused::invalid((code, msg.replace("build_no", "build_number"))))?
        .build_no;
        let mut runs: Vec<Arc<StageRun>> = (cluster.iter())
            .filter(|r| r.spec.pipeline_counter == build && in_namespaces(r, &readable))
            .cloned()
            .collect();
        let archived = (self.archived_runs(&readable, job_id, &[build], &uids(&cluster))).await?;
        runs.extend(archived);
        if runs.is_empty() {
            return Err(Refused::build_not_found(job_id, build));
        }
        // In the cache's order (by uid), wherever each run is.
        runs.sort_by(|a, b| a.metadata.uid.cmp(&b.metadata.uid));
        Ok(json(
            StatusCode::OK,
            &history_details_of(job_id, build, &runs, Timestamp::now()),
        ))
    }

    /// The runs of a build the cluster has none of: the archive's, in the
    /// served namespaces (finished, all of them); refused 404 when neither
    /// place has the task, or the build.
    async fn archived_build(&self, req: &StopRequest) -> Result<Vec<Arc<StageRun>>, Refused> {
        let job_id = &req.job_id;
        if self.state.cache.by_pipeline(job_id).is_empty()
            && (self.state.pipeline_namespaces(job_id, &[]).await)
                .map_err(Self::refused(job_id))?
                .is_empty()
        {
            return Err(Refused::job_not_found(job_id));
        }
        let runs: Vec<Arc<StageRun>> = (self.archived_runs(&[], job_id, &[req.build_no], &[]))
            .await?
            .into_iter()
            .filter(|r| self.state.cache.serves(r))
            .collect();
        if runs.is_empty() {
            return Err(Refused::build_not_found(job_id, req.build_no));
        }
        Ok(runs)
    }

    /// `POST /v3/jobs/stop` (body) and `POST /v3/jobs/{job_id}/{build_no}/stop` (path).
    /// A build in the cluster is stopped without the archive; one only the
    /// archive has is finished: `false`, as for a finished build.
    async fn stop(&self, params: Result<StopRequest, (&'static str, String)>) -> Answer {
        let req = params.map_err(Refused::invalid)?;
        let mut runs = self.state.cache.by_build(&req.job_id, req.build_no);
        if runs.is_empty() {
            runs = self.archived_build(&req).await?;
        }
        let reason = format!(
            "build {} of {} stopped through the CodeArts API",
            req.build_no, req.job_id
        );
        let outcome = self
            .state
            .cancel(CancelCall {
                api: crate::labels::via::CODEARTS,
                who: &self.who,
                runs,
                reason,
                hide_unreadable: false,
            })
            .await
            .map_err(|f| Refused::Service(f, req.job_id.clone()))?;
        Ok(json(
            StatusCode::OK,
            &StopResult {
                result: outcome.any_cancelled(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The builds of `runs` alone, newest first, those started within the
    /// interval, one page of them: the history as one place holds it.
    fn history_page(
        job_id: &str,
        runs: &[Arc<StageRun>],
        query: &HistoryQuery,
        now: Timestamp,
    ) -> HistoryPage {
        let since = history_since(now, query.interval);
        let records = build_records(job_id, builds_of(runs.iter().cloned()), since);
        let (start, _) = archive_window(page_start(query), query.limit, records.len());
        merged_history(records, Vec::new(), 0, start, query)
    }

    #[test]
    fn bodies_are_validated() {
        let ok =
            parse_body(br#"{"job_id" : "f9d6c8466d614a9788e9a0acf6c15f46", "build_no" : "20"}"#);
        assert_eq!(
            ok,
            Ok(StopRequest {
                job_id: "f9d6c8466d614a9788e9a0acf6c15f46".into(),
                build_no: 20
            })
        );
        let cases: &[(&[u8], &str)] = &[
            (b"{", codes::MALFORMED_BODY),
            (b"[]", codes::MALFORMED_BODY),
            (b"", codes::MALFORMED_BODY),
            (br#"{"build_no": "1"}"#, codes::INVALID_JOB_ID),
            (br#"{"job_id": "", "build_no": "1"}"#, codes::INVALID_JOB_ID),
            (br#"{"job_id": 5, "build_no": "1"}"#, codes::INVALID_JOB_ID),
            (br#"{"job_id": "a"}"#, codes::INVALID_BUILD_NO),
            (
                br#"{"job_id": "a", "build_no": 20}"#,
                codes::INVALID_BUILD_NO,
            ),
            (
                br#"{"job_id": "a", "build_no": "0"}"#,
                codes::INVALID_BUILD_NO,
            ),
            (
                br#"{"job_id": "a", "build_no": "-3"}"#,
                codes::INVALID_BUILD_NO,
            ),
            (
                br#"{"job_id": "a", "build_no": "2x"}"#,
                codes::INVALID_BUILD_NO,
            ),
        ];
        for (body, code) in cases {
            assert_eq!(
                parse_body(body).unwrap_err().0,
                *code,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn run(counter: i64, stage: &str, status: serde_json::Value) -> Arc<StageRun> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
                "metadata": {"name": format!("demo-{counter}-{stage}"), "namespace": "ci",
                             "uid": format!("u-{counter}-{stage}"),
                             "creationTimestamp": "2026-01-01T10:00:00Z"},
                "spec": {"pipeline": "demo", "pipelineCounter": counter, "stage": stage,
                         "jobs": [{"name": "build", "template": {"spec": {"containers": []}}},
                                  {"name": "lint", "template": {"spec": {"containers": []}}}]},
                "status": status
            }))
            .unwrap(),
        )
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn runs() -> Vec<Arc<StageRun>> {
        vec![
            run(
                1,
                "test",
                serde_json::json!({"phase": "Succeeded", "result": "Passed",
                    "startTime": "2026-01-01T10:00:01Z", "completionTime": "2026-01-01T10:05:00Z"}),
            ),
            run(
                2,
                "test",
                serde_json::json!({"phase": "Failed", "result": "Cancelled",
                    "startTime": "2026-01-02T10:00:00Z", "completionTime": "2026-01-02T10:01:00Z"}),
            ),
            run(
                3,
                "test",
                serde_json::json!({"phase": "Running", "result": "Unknown",
                "startTime": "2026-01-03T10:00:00Z",
                "jobs": [
                    {"name": "build", "id": 1, "state": "Building", "result": "Unknown",
                     "scheduledAt": "2026-01-03T10:00:00Z"},
                    {"name": "lint", "id": 2, "state": "Completed", "result": "Failed",
                     "scheduledAt": "2026-01-03T10:00:00Z", "completionTime": "2026-01-03T10:00:02.5Z"}
                ]}),
            ),
            run(
                3,
                "deploy",
                serde_json::json!({"phase": "Pending", "result": "Unknown"}),
            ),
        ]
    }

    #[test]
    fn history_lists_builds_newest_first_in_pages() {
        let now = at("2026-01-03T12:00:00Z");
        let q = |offset, limit, interval| HistoryQuery {
            offset,
            limit,
            interval,
        };
        let page = history_page("demo", &runs(), &q(0, 10, 30), now);
        assert_eq!(page.total, 3);
        let v = serde_json::to_value(&page.history_records[0]).unwrap();
        assert_eq!(v["job_id"], "demo");
        assert_eq!(v["build_number"], 3);
        assert_eq!(v["result"], "RUNNING");
        assert_eq!(v["end_time"], "");
        assert_eq!(v["start_time"], "2026-01-01 10:00:00");
        assert_eq!(v["record_id"].as_str().unwrap().len(), 32);
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            [
                "build_number",
                "end_time",
                "job_id",
                "record_id",
                "result",
                "start_time"
            ]
        );
        let b2 = &page.history_records[1];
        assert_eq!(
            (b2.build_number, b2.result.as_str(), b2.end_time.as_str()),
            (2, "ABORTED", "2026-01-02 10:01:00")
        );
        assert_eq!(page.history_records[2].result, "SUCCESS");
        // Pages.
        let p1 = history_page("demo", &runs(), &q(1, 2, 30), now);
        assert_eq!(p1.total, 3);
        assert_eq!(p1.history_records.len(), 1);
        assert_eq!(p1.history_records[0].build_number, 1);
        // Only builds started within the interval (build 3 counts from its
        // deploy stage's creation, on Jan 1).
        let recent = history_page("demo", &runs()[1..3], &q(0, 10, 1), now);
        assert_eq!(recent.total, 1);
        assert_eq!(recent.history_records[0].build_number, 3);
    }

    /// A build's stage that ran on day `day` of January 2026.
    fn run_on(counter: i64, stage: &str, day: i64, phase: &str, result: &str) -> Arc<StageRun> {
        let start = format!("2026-01-{day:02}T10:00:00Z");
        let end = format!("2026-01-{day:02}T11:00:00Z");
        run(
            counter,
            stage,
            serde_json::json!({"phase": phase, "result": result,
                "startTime": start, "completionTime": end}),
        )
    }

    /// Every way of splitting a task's builds (and a build's stages)
    /// between cluster and archive, every interval and page: the page is
    /// the page of the whole, as the cluster alone gave it.
    #[test]
    fn pages_of_cluster_and_archive_are_pages_of_the_whole() {
        let now = at("2026-01-20T00:00:00Z");
        let all: Vec<Arc<StageRun>> = (1..=12)
            .flat_map(|n| {
                let (phase, result) = match n {
                    5 => ("Failed", "Failed"),
                    7 => ("Failed", "Cancelled"),
                    11 => ("Running", "Unknown"),
                    _ => ("Succeeded", "Passed"),
                };
                [
                    run_on(n, "build", n, "Succeeded", "Passed"),
                    // The second stage of build 9 started the day before its first.
                    run_on(n, "test", if n == 9 { 8 } else { n }, phase, result),
                ]
            })
            .collect();
        type Split = Box<dyn Fn(&StageRun) -> bool>;
        let splits: Vec<(&str, Split)> = vec![
            ("none", Box::new(|_| false)),
            ("all", Box::new(|_| true)),
            ("newest", Box::new(|r| r.spec.pipeline_counter >= 9)),
            ("oldest", Box::new(|r| r.spec.pipeline_counter <= 3)),
            ("odd", Box::new(|r| r.spec.pipeline_counter % 2 == 1)),
            (
                "a stage of even builds",
                Box::new(|r| r.spec.pipeline_counter % 2 == 0 && r.spec.stage == "test"),
            ),
        ];
        for (name, in_cluster) in &splits {
            let cluster: Vec<Arc<StageRun>> =
                all.iter().filter(|r| in_cluster(r)).cloned().collect();
            let archive: Vec<Arc<StageRun>> =
                all.iter().filter(|r| !in_cluster(r)).cloned().collect();
            for interval in [30, 11, 1] {
                let since = history_since(now, interval);
                // As the handler reads: the cluster's builds whole...
                let mut builds = builds_of(cluster.iter().cloned());
                let numbers: Vec<i64> = builds.keys().copied().collect();
                for r in archive
                    .iter()
                    .filter(|r| numbers.contains(&r.spec.pipeline_counter))
                {
                    builds
                        .entry(r.spec.pipeline_counter)
                        .or_default()
                        .push(r.clone());
                }
                let records = build_records("demo", builds, since);
                // ...and the archive's other builds, as its query selects them.
                let others = (archive.iter())
                    .filter(|r| !numbers.contains(&r.spec.pipeline_counter))
                    .cloned();
                let archived = build_records("demo", builds_of(others), since);
                for limit in [1, 3, 10] {
                    for offset in 0..=13 {
                        let q = HistoryQuery {
                            offset,
                            limit,
                            interval,
                        };
                        let whole = history_page("demo", &all, &q, now);
                        let (start, count) = archive_window(page_start(&q), limit, records.len());
                        let window = archived.iter().skip(start).take(count).cloned().collect();
                        let page =
                            merged_history(records.clone(), window, archived.len(), start, &q);
                        let what = format!("{name}, interval {interval}, page {offset} of {limit}");
                        assert_eq!(page.total, whole.total, "{what}");
                        assert_eq!(page.history_records, whole.history_records, "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_interval_starts_at_a_whole_microsecond() {
        let now = at("2026-01-20T00:00:00.000000001Z");
        assert_eq!(history_since(now, 1), at("2026-01-19T00:00:00.000001Z"));
        let now = at("2026-01-20T00:00:00Z");
        assert_eq!(history_since(now, 30), at("2025-12-21T00:00:00Z"));
    }

    #[test]
    fn history_details_list_each_job_as_a_step() {
        let now = at("2026-01-03T10:00:10Z");
        let all = runs();
        let d = history_details_of("demo", 3, &all[2..], now);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "job_name": "demo", "build_number": 3, "project_id": "ci", "project_name": "ci",
                "parameters": {},
                "build_steps": [
                    {"name": "deploy/build", "status": "", "build_time": 0},
                    {"name": "deploy/lint", "status": "", "build_time": 0},
                    {"name": "test/build", "status": "running", "build_time": 10000},
                    {"name": "test/lint", "status": "error", "build_time": 2500}
                ]
            })
        );
    }
}
