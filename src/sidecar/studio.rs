//! CrafterCMS Studio's current (v2) publishing API: cancel packages and
//! read the publishing queue. A site is a pipeline; a package is a StageRun
//! (its id the StageRun's uid). Answers use Studio's v2 envelope,
//! `{"response": {"code", "message", "remedialAction", "documentationUrl"}, ...}`,
//! with Studio's codes and HTTP statuses.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value, json};
use warp::http::StatusCode;
use warp::reply::Response;

use super::auth::Identity;
use super::by_pipeline::{self, in_namespaces};
use super::history::archive_window;
use super::history::merged_window;
use super::http::{Call, json};
use super::render::ApiErrors;
use super::service::Service;
use super::service::{CancelCall, Failure};
use super::service::{archive_failure, uids_of as uids};
use crate::crd::{RunResult, StagePhase, StageRun};

/// The `response` object of every answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResponse {
    pub code: u32,
    pub message: String,
    pub remedial_action: String,
    pub documentation_url: String,
}

impl ApiResponse {
    fn new(code: u32, message: &str, remedial_action: &str) -> Self {
        ApiResponse {
            code,
            message: message.to_string(),
            remedial_action: remedial_action.to_string(),
            documentation_url: String::new(),
        }
    }

    pub fn ok() -> Self {
        Self::new(0, "OK", "")
    }
    pub fn internal_system_failure() -> Self {
        Self::new(1000, "Internal system failure", "Contact support")
    }
    pub fn invalid_params() -> Self {
        Self::new(
            1001,
            "Invalid parameter(s)",
            "Check API and make sure you're sending the correct parameters",
        )
    }
    pub fn unauthenticated() -> Self {
        Self::new(2000, "Unauthenticated", "Please login first")
    }
    pub fn unauthorized() -> Self {
        Self::new(
            2001,
            "Unauthorized",
            "You don't have permission to perform this task, please contact your administrator",
        )
    }
    pub fn site_not_found() -> Self {
        Self::new(
            5000,
            "Site not found",
            "Check if you sent in the right Site Id",
        )
    }
    pub fn content_not_found() -> Self {
        Self::new(
            7000,
            "Content not found",
            "Check if you sent in the right Content Id",
        )
    }
}

/// `{"response": r, ...payload}`.
pub fn envelope(
    status: StatusCode,
    response: ApiResponse,
    payload: Map<String, Value>,
) -> Response {
    let mut body = payload;
    body.insert(
        "response".into(),
        serde_json::to_value(response).unwrap_or(Value::Null),
    );
    json(status, &Value::Object(body))
}

fn answer(status: StatusCode, response: ApiResponse) -> Response {
    envelope(status, response, Map::new())
}

/// One rejected parameter, as Studio lists them in `validationErrors`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_error(field: &str, message: &str) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.to_string(),
    }
}

/// 400 with code 1001; `validationErrors` names the rejected parameters.
pub fn invalid(errors: &[FieldError]) -> Response {
    let mut payload = Map::new();
    if !errors.is_empty() {
        payload.insert("validationErrors".into(), json!(errors));
    }
    envelope(
        StatusCode::BAD_REQUEST,
        ApiResponse::invalid_params(),
        payload,
    )
}

/// Studio v2's error format, for every path under `/studio/api/2/`.
pub struct Errors;

impl ApiErrors for Errors {
    fn route_not_found(&self, _path: &str) -> Response {
        let mut r = ApiResponse::content_not_found();
        r.remedial_action = "Check the API path".into();
        answer(StatusCode::NOT_FOUND, r)
    }
    fn method_not_allowed(&self, allow: &str) -> Response {
        let mut r = ApiResponse::invalid_params();
        r.remedial_action = format!("Use {allow}");
        answer(StatusCode::METHOD_NOT_ALLOWED, r)
    }
    fn too_large(&self) -> Response {
        let mut r = ApiResponse::invalid_params();
        r.remedial_action = "Send a request body of at most 64 KiB".into();
        answer(StatusCode::PAYLOAD_TOO_LARGE, r)
    }
    fn request_timeout(&self) -> Response {
        let mut r = ApiResponse::invalid_params();
        r.remedial_action = "Send the whole request body without pausing".into();
        answer(StatusCode::REQUEST_TIMEOUT, r)
    }
    fn unreadable(&self) -> Response {
        invalid(&[])
    }
    fn unauthenticated(&self) -> Response {
        answer(StatusCode::UNAUTHORIZED, ApiResponse::unauthenticated())
    }
    fn unavailable(&self, why: &str) -> Response {
        tracing::error!(error = why, "Studio request failed");
        answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiResponse::internal_system_failure(),
        )
    }
    fn forbidden(&self) -> Response {
        answer(StatusCode::FORBIDDEN, ApiResponse::unauthorized())
    }
}

// ---------------------------------------------------------------------------
// POST /studio/api/2/publish/cancel

/// At most this many package ids in one cancel.
pub const MAX_PACKAGE_IDS: usize = 1000;

/// A validated cancel body.
#[derive(Debug, PartialEq, Eq)]
pub struct CancelParams {
    pub site_id: String,
    /// Lowercase, sorted, once each.
    pub package_ids: Vec<String>,
}

/// A UUID in its canonical 36-character form (any case), lowercased.
pub fn canonical_uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        };
        if !ok {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

/// Parses `{"siteId": "...", "packageIds": ["<uuid>", ...]}`. A missing or
/// null `packageIds` is an empty list, as in Studio.
pub fn parse_cancel(body: &[u8]) -> Result<CancelParams, Vec<FieldError>> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(Vec::new());
    };
    let mut errors = Vec::new();
    let site_id = match map.get("siteId") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            errors.push(field_error("siteId", "must not be empty"));
            None
        }
        Some(_) => {
            errors.push(field_error("siteId", "must be a string"));
            None
        }
    };
    let mut package_ids = Vec::new();
    match map.get("packageIds") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ids)) if ids.len() > MAX_PACKAGE_IDS => errors.push(field_error(
            "packageIds",
            &format!("at most {MAX_PACKAGE_IDS} package ids"),
        )),
        Some(Value::Array(ids)) => {
            for id in ids {
                match id.as_str().and_then(canonical_uuid) {
                    Some(u) => package_ids.push(u),
                    None => {
                        errors.push(field_error(
                            "packageIds",
                            &format!("not a package id (a UUID): {id}"),
                        ));
                        break;
                    }
                }
            }
        }
        Some(_) => errors.push(field_error("packageIds", "must be an array of UUIDs")),
    }
    match site_id {
        Some(site_id) if errors.is_empty() => {
            package_ids.sort();
            package_ids.dedup();
            Ok(CancelParams {
                site_id,
                package_ids,
            })
        }
        _ => Err(errors),
    }
}

/// `POST /studio/api/2/publish/cancel`: all or nothing, like the v1 route.
pub(crate) async fn cancel(
    state: &Service,
    who: &Identity,
    call: &Call<'_>,
) -> Result<Response, Failure> {
    let params = match parse_cancel(call.body) {
        Ok(p) => p,
        Err(errors) => return Ok(invalid(&errors)),
    };
    let packages = match site_packages(state, &params.site_id, &params.package_ids).await? {
        Ok(packages) => packages,
        Err(Missing::Site) => {
            return Ok(answer(StatusCode::NOT_FOUND, ApiResponse::site_not_found()));
        }
        Err(Missing::Package(id)) => {
            let mut r = ApiResponse::content_not_found();
            r.remedial_action = format!(
                "Check that package '{id}' exists in site '{}'",
                params.site_id
            );
            return Ok(answer(StatusCode::NOT_FOUND, r));
        }
    };
    let reason = format!(
        "publishing packages of site {} cancelled through the CrafterCMS Studio API",
        params.site_id
    );
    cancel_packages(state, who, packages, reason).await?;
    Ok(answer(StatusCode::OK, ApiResponse::ok()))
}

/// What a cancel named that does not exist.
pub(crate) enum Missing {
    Site,
    Package(String),
}

/// The packages (StageRuns, by uid) of a site (a pipeline), all of them or
/// which is missing: Studio's cancels are all or nothing. Those the cluster
/// has are found there; the archive is asked only for the others (finished
/// packages), and whether the site exists when the cluster has no run of it.
pub(crate) async fn site_packages(
    state: &Service,
    site_id: &str,
    package_ids: &[String],
) -> Result<Result<Vec<Arc<StageRun>>, Missing>, Failure> {
    let site = state.cache.by_pipeline(site_id);
    if site.is_empty() && state.pipeline_namespaces(site_id, &[]).await?.is_empty() {
        return Ok(Err(Missing::Site));
    }
    let in_cluster = |id: &String| {
        site.iter()
            .find(|r| r.metadata.uid.as_deref() == Some(id.as_str()))
            .cloned()
    };
    let elsewhere: Vec<String> = (package_ids.iter())
        .filter(|id| in_cluster(id).is_none())
        .cloned()
        .collect();
    let archived: Vec<Arc<StageRun>> = match &state.archive {
        Some(archive) if !elsewhere.is_empty() => (archive.site_runs(site_id, &elsewhere).await)
            .map_err(archive_failure)?
            .into_iter()
            .filter(|r| state.cache.serves(r))
            .map(Arc::new)
            .collect(),
        _ => Vec::new(),
    };
    Ok(package_ids
        .iter()
        .map(|id| {
            in_cluster(id)
                .or_else(|| {
                    (archived.iter())
                        .find(|r| r.metadata.uid.as_deref() == Some(id.as_str()))
                        .cloned()
                })
                .ok_or_else(|| Missing::Package(id.clone()))
        })
        .collect())
}

/// Cancels publishing packages on behalf of `who` (both Studio APIs).
pub(crate) async fn cancel_packages(
    state: &Service,
    who: &Identity,
    packages: Vec<Arc<StageRun>>,
    reason: String,
) -> Result<(), Failure> {
    state
        .cancel(CancelCall {
            api: crate::labels::via::CRAFTER,
            who,
            runs: packages,
            reason,
            hide_unreadable: false,
        })
        .await
        .map(|_| ())
}

// ---------------------------------------------------------------------------
// GET /studio/api/2/publish/packages

/// Studio's package states.
pub const READY_FOR_LIVE: &str = "READY_FOR_LIVE";
pub const COMPLETED: &str = "COMPLETED";
pub const CANCELLED: &str = "CANCELLED";
pub const BLOCKED: &str = "BLOCKED";

/// A validated queue query.
#[derive(Debug, PartialEq, Eq)]
pub struct PackagesQuery {
    pub site_id: String,
    /// Matches the stage name, ignoring case.
    pub environment: Option<String>,
    /// Upper-cased; empty means every state.
    pub states: Vec<String>,
    pub offset: usize,
    pub limit: usize,
}

fn count(pairs: &[(String, String)], name: &str, default: usize) -> Result<usize, FieldError> {
    match pairs.iter().find(|(k, _)| k == name) {
        None => Ok(default),
        Some((_, v)) if v.is_empty() => Ok(default),
        Some((_, v)) => v
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| n as usize)
            .ok_or_else(|| field_error(name, "must be an integer from 0 to 2147483647")),
    }
}

/// Parses `siteId`, `environment`, `states` (repeated or comma-separated),
/// `offset` (default 0) and `limit` (default 10). `path` filters Studio's
/// content paths, which packages here do not have: it is refused.
pub fn parse_packages_query(pairs: &[(String, String)]) -> Result<PackagesQuery, Vec<FieldError>> {
    let mut errors = Vec::new();
    let first = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let site_id = first("siteId").filter(|s| !s.trim().is_empty());
    if site_id.is_none() {
        errors.push(field_error("siteId", "must not be empty"));
    }
    if first("path").is_some_and(|p| !p.is_empty()) {
        errors.push(field_error(
            "path",
            "not supported: packages are StageRuns, which have no content paths",
        ));
    }
    let offset = count(pairs, "offset", 0).map_err(|e| errors.push(e)).ok();
    let limit = count(pairs, "limit", 10).map_err(|e| errors.push(e)).ok();
    let states: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "states")
        .flat_map(|(_, v)| v.split(','))
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
        .collect();
    let environment = first("environment").filter(|e| !e.is_empty());
    match (site_id, offset, limit) {
        (Some(site_id), Some(offset), Some(limit)) if errors.is_empty() => Ok(PackagesQuery {
            site_id,
            environment,
            states,
            offset,
            limit,
        }),
        _ => Err(errors),
    }
}

/// A StageRun's package state: still cancellable (Pending, Running) is
/// READY_FOR_LIVE, the state in which Studio offers to cancel; a cancel under
/// way or done is CANCELLED; passed is COMPLETED; failed is BLOCKED.
pub fn package_state(run: &StageRun) -> &'static str {
    let status = run.status.as_ref();
    match status.and_then(|s| s.phase) {
        None | Some(StagePhase::Pending) | Some(StagePhase::Running) => READY_FOR_LIVE,
        Some(StagePhase::Canceling) => CANCELLED,
        Some(StagePhase::Succeeded) => COMPLETED,
        Some(StagePhase::Failed) => {
            if status.and_then(|s| s.result) == Some(RunResult::Cancelled) {
                CANCELLED
            } else {
                BLOCKED
            }
        }
    }
}

/// Studio's `PublishingPackage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub id: String,
    pub site_id: String,
    pub environment: String,
    pub state: &'static str,
    pub schedule: Option<String>,
    pub approver: String,
    pub comment: Option<String>,
}

pub fn package(run: &StageRun) -> Package {
    let status = run.status.as_ref();
    let comment = status
        .and_then(|s| s.cancel.as_ref())
        .map(|c| c.reason.clone())
        .or_else(|| status.and_then(|s| s.failure_reason.clone()));
    Package {
        id: run.metadata.uid.clone().unwrap_or_default(),
        site_id: run.spec.pipeline.clone(),
        environment: run.spec.stage.clone(),
        state: package_state(run),
        schedule: run
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        approver: run.spec.approved_by.clone(),
        comment,
    }
}

/// Studio's queue order, newest first: creation time (none last), then
/// pipeline and stage counters, newest first, then name and uid, so that
/// the order is total. The archive orders its rows the same way (its
/// `queue_order!` query text).
pub fn queue_order(a: &StageRun, b: &StageRun) -> Ordering {
    let created = |r: &StageRun| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    // Descending, and `None` sorts below any time: last.
    (created(b).cmp(&created(a)))
        .then_with(|| b.spec.pipeline_counter.cmp(&a.spec.pipeline_counter))
        .then_with(|| b.spec.stage_counter.cmp(&a.spec.stage_counter))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        .then_with(|| a.metadata.uid.cmp(&b.metadata.uid))
}

/// The packages of `runs` that `q` asks for (environment, states), in
/// [`queue_order`].
pub fn matching(runs: &[Arc<StageRun>], q: &PackagesQuery) -> Vec<Arc<StageRun>> {
    let mut matching: Vec<Arc<StageRun>> = runs
        .iter()
        .filter(|r| {
            q.environment
                .as_ref()
                .is_none_or(|e| r.spec.stage.eq_ignore_ascii_case(e))
        })
        .filter(|r| q.states.is_empty() || q.states.iter().any(|s| s == package_state(r)))
        .cloned()
        .collect();
    matching.sort_by(|a, b| queue_order(a, b));
    matching
}

/// The page `q` asks for of a queue made of the cluster's matching
/// packages `cluster` (all of them) and a window of the archive's,
/// `archived`, which starts at `window_start` ([`archive_window`]) of its
/// `archived_total`, and the queue's total. The two hold different runs, so
/// that the window's arithmetic holds (see `history::merged_page`).
pub fn merged_queue(
    cluster: Vec<Arc<StageRun>>,
    archived: Vec<Arc<StageRun>>,
    archived_total: usize,
    window_start: usize,
    q: &PackagesQuery,
) -> (usize, Vec<Package>) {
    let total = cluster.len() + archived_total;
    let page = merged_window(
        cluster,
        archived,
        window_start,
        q.offset,
        q.limit,
        |a, b| queue_order(a, b),
    );
    (total, page.iter().map(|r| package(r)).collect())
}

/// `GET /studio/api/2/publish/packages`: the site's packages the caller may
/// read, in the cluster and in the archive; 404 for an unknown site, 403
/// when it may read none of them.
pub(crate) async fn packages(
    state: &Service,
    who: &Identity,
    call: &Call<'_>,
) -> Result<Response, Failure> {
    let q = match parse_packages_query(&call.query_pairs()) {
        Ok(q) => q,
        Err(errors) => return Ok(invalid(&errors)),
    };
    let site = state.cache.by_pipeline(&q.site_id);
    let namespaces = state.pipeline_namespaces(&q.site_id, &site).await?;
    if namespaces.is_empty() {
        return Ok(answer(StatusCode::NOT_FOUND, ApiResponse::site_not_found()));
    }
    let readable = by_pipeline::readable(state, who, namespaces).await?;
    if readable.is_empty() {
        return Err(Failure::Forbidden);
    }
    let visible: Vec<Arc<StageRun>> = (site.iter())
        .filter(|r| in_namespaces(r, &readable))
        .cloned()
        .collect();
    let cluster = matching(&visible, &q);
    let (start, count) = archive_window(q.offset, q.limit, cluster.len());
    let archived = match &state.archive {
        Some(archive) => archive
            .site_packages(
                &readable,
                &q.site_id,
                &uids(&site),
                q.environment.as_deref(),
                &q.states,
                i64::try_from(start).unwrap_or(i64::MAX),
                i64::try_from(count).unwrap_or(i64::MAX),
            )
            .await
            .map_err(archive_failure)?,
        None => Default::default(),
    };
    let (total, page) = merged_queue(
        cluster,
        archived.runs.into_iter().map(Arc::new).collect(),
        usize::try_from(archived.total).unwrap_or(0),
        start,
        &q,
    );
    let mut payload = Map::new();
    payload.insert("total".into(), json!(total));
    payload.insert("offset".into(), json!(q.offset));
    // As Studio: the number of packages in this answer.
    payload.insert("limit".into(), json!(page.len()));
    payload.insert("packages".into(), json!(page));
    Ok(envelope(StatusCode::OK, ApiResponse::ok(), payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matching packages of `runs` alone, newest first, and their total
    /// before paging: the queue as one place holds it.
    fn packages_page(runs: &[Arc<StageRun>], q: &PackagesQuery) -> (usize, Vec<Package>) {
        let cluster = matching(runs, q);
        let (start, _) = archive_window(q.offset, q.limit, cluster.len());
        merged_queue(cluster, Vec::new(), 0, start, q)
    }

    const U1: &str = "588d5441-9aa9-4fb7-9a51-8c9a80f4f1d5";
    const U2: &str = "9a7a1d3a-5b33-43c7-8214-6795335a56b7";

    #[test]
    fn cancel_bodies_are_validated() {
        let body = format!(
            r#"{{"siteId": "mysite", "packageIds": ["{U2}", "{}", "{U1}"]}}"#,
            U1.to_uppercase()
        );
        let ok = parse_cancel(body.as_bytes()).unwrap();
        assert_eq!(ok.site_id, "mysite");
        assert_eq!(ok.package_ids, vec![U1.to_string(), U2.to_string()]);
        // Studio: no ids is an empty list.
        for empty in [
            &br#"{"siteId": "s"}"#[..],
            br#"{"siteId": "s", "packageIds": null}"#,
            br#"{"siteId": "s", "packageIds": []}"#,
        ] {
            assert!(parse_cancel(empty).unwrap().package_ids.is_empty());
        }
        assert_eq!(parse_cancel(b"{").unwrap_err(), vec![]);
        assert_eq!(parse_cancel(b"[]").unwrap_err(), vec![]);
        for (bad, field) in [
            (&br#"{"packageIds": []}"#[..], "siteId"),
            (br#"{"siteId": " ", "packageIds": []}"#, "siteId"),
            (br#"{"siteId": 3, "packageIds": []}"#, "siteId"),
            (br#"{"siteId": "s", "packageIds": "x"}"#, "packageIds"),
            (br#"{"siteId": "s", "packageIds": [""]}"#, "packageIds"),
            (br#"{"siteId": "s", "packageIds": [" "]}"#, "packageIds"),
            (br#"{"siteId": "s", "packageIds": [1]}"#, "packageIds"),
            (br#"{"siteId": "s", "packageIds": [null]}"#, "packageIds"),
            (br#"{"siteId": "s", "packageIds": ["x"]}"#, "packageIds"),
            (
                br#"{"siteId": "s", "packageIds": ["588d5441-9aa9-4fb7-9a51-8c9a80f4f1dz"]}"#,
                "packageIds",
            ),
            (
                br#"{"siteId": "s", "packageIds": ["588d54419aa94fb79a518c9a80f4f1d5xxxx"]}"#,
                "packageIds",
            ),
        ] {
            let errs = parse_cancel(bad).unwrap_err();
            assert_eq!(errs[0].field, field, "{}", String::from_utf8_lossy(bad));
        }
        let many: Vec<String> = (0..=MAX_PACKAGE_IDS).map(|_| U1.to_string()).collect();
        let body = json!({"siteId": "s", "packageIds": many}).to_string();
        assert!(parse_cancel(body.as_bytes()).is_err());
    }

    fn pairs(q: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn queue_queries_are_validated() {
        let q = parse_packages_query(&pairs("siteId=s")).unwrap();
        assert_eq!((q.offset, q.limit), (0, 10));
        assert!(q.states.is_empty() && q.environment.is_none());
        let q = parse_packages_query(&pairs(
            "siteId=s&offset=5&limit=0&states=ready_for_live,BLOCKED&states=CANCELLED&environment=live&offset=",
        ))
        .unwrap();
        assert_eq!((q.offset, q.limit), (5, 0));
        assert_eq!(q.states, ["READY_FOR_LIVE", "BLOCKED", "CANCELLED"]);
        assert_eq!(q.environment.as_deref(), Some("live"));
        let q = parse_packages_query(&pairs("siteId=s&offset=&limit=")).unwrap();
        assert_eq!((q.offset, q.limit), (0, 10));
        for (bad, field) in [
            ("", "siteId"),
            ("siteId=", "siteId"),
            ("siteId=s&offset=-1", "offset"),
            ("siteId=s&offset=x", "offset"),
            ("siteId=s&offset=2147483648", "offset"),
            ("siteId=s&limit=-1", "limit"),
            ("siteId=s&limit=1.5", "limit"),
            ("siteId=s&path=/site/.*", "path"),
        ] {
            let errs = parse_packages_query(&pairs(bad)).unwrap_err();
            assert_eq!(errs[0].field, field, "{bad}");
        }
    }

    fn run(name: &str, counter: i64, stage: &str, created: &str, status: Value) -> Arc<StageRun> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
                "metadata": {"name": name, "namespace": "a", "uid": format!("uid-{name}"),
                             "creationTimestamp": created},
                "spec": {"pipeline": "site", "pipelineCounter": counter, "stage": stage,
                         "approvedBy": "admin",
                         "jobs": [{"name": "j", "template": {}}]},
                "status": status
            }))
            .unwrap(),
        )
    }

    #[test]
    fn phases_map_to_package_states() {
        let t = "2026-01-01T10:00:00Z";
        for (status, want) in [
            (json!({}), READY_FOR_LIVE),
            (json!({"phase": "Pending"}), READY_FOR_LIVE),
            (json!({"phase": "Running"}), READY_FOR_LIVE),
            (json!({"phase": "Canceling"}), CANCELLED),
            (json!({"phase": "Succeeded", "result": "Passed"}), COMPLETED),
            (json!({"phase": "Failed", "result": "Failed"}), BLOCKED),
            (json!({"phase": "Failed", "result": "Cancelled"}), CANCELLED),
        ] {
            assert_eq!(
                package_state(&run("r", 1, "live", t, status.clone())),
                want,
                "{status}"
            );
        }
    }

    #[test]
    fn packages_have_studios_shape() {
        let r = run(
            "r",
            1,
            "live",
            "2026-01-01T10:00:00Z",
            json!({"phase": "Failed", "result": "Failed", "failureReason": "job j failed"}),
        );
        assert_eq!(
            serde_json::to_value(package(&r)).unwrap(),
            json!({
                "id": "uid-r", "siteId": "site", "environment": "live", "state": "BLOCKED",
                "schedule": "2026-01-01T10:00:00Z", "approver": "admin", "comment": "job j failed"
            })
        );
    }

    /// Every way of splitting a site's packages between cluster and
    /// archive, every filter and page: the page is the page of the whole.
    #[test]
    fn pages_of_cluster_and_archive_are_pages_of_the_whole() {
        let phases = [
            json!({"phase": "Running"}),
            json!({"phase": "Succeeded", "result": "Passed"}),
            json!({"phase": "Failed", "result": "Failed"}),
            json!({"phase": "Failed", "result": "Cancelled"}),
        ];
        // Two packages an hour, so that times tie and counters decide.
        let all: Vec<Arc<StageRun>> = (0..14)
            .map(|i: i64| {
                run(
                    &format!("p{i:02}"),
                    i / 3,
                    if i % 3 == 0 { "staging" } else { "live" },
                    &format!("2026-01-01T{:02}:00:00Z", 10 + i / 2),
                    phases[(i % 4) as usize].clone(),
                )
            })
            .collect();
        type Split = Box<dyn Fn(usize) -> bool>;
        let splits: Vec<(&str, Split)> = vec![
            ("none", Box::new(|_| false)),
            ("all", Box::new(|_| true)),
            ("first", Box::new(|i| i < 4)),
            ("last", Box::new(|i| i >= 10)),
            ("every third", Box::new(|i| i % 3 == 1)),
        ];
        let queries = [
            "",
            "states=READY_FOR_LIVE",
            "environment=LIVE&states=COMPLETED,BLOCKED",
        ];
        for (name, in_cluster) in &splits {
            let cluster: Vec<Arc<StageRun>> = (all.iter().enumerate())
                .filter(|(i, _)| in_cluster(*i))
                .map(|(_, r)| r.clone())
                .collect();
            let archive: Vec<Arc<StageRun>> = (all.iter().enumerate())
                .filter(|(i, _)| !in_cluster(*i))
                .map(|(_, r)| r.clone())
                .collect();
            for filter in queries {
                for limit in [0, 1, 3, 10] {
                    for offset in 0..=15 {
                        let q = parse_packages_query(&pairs(&format!(
                            "siteId=site&offset={offset}&limit={limit}&{filter}"
                        )))
                        .unwrap();
                        let whole = packages_page(&all, &q);
                        let mine = matching(&cluster, &q);
                        let theirs = matching(&archive, &q);
                        let (start, count) = archive_window(offset, limit, mine.len());
                        let window = theirs.iter().skip(start).take(count).cloned().collect();
                        let page = merged_queue(mine, window, theirs.len(), start, &q);
                        assert_eq!(page, whole, "{name}, {filter}, {offset}+{limit}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_queue_order_is_total() {
        let t = "2026-01-01T10:00:00Z";
        let a = run("a", 1, "live", t, json!({}));
        let mut twin = (*a).clone();
        twin.metadata.uid = Some("uid-a2".into());
        assert_eq!(queue_order(&a, &twin), Ordering::Less);
        assert_eq!(
            queue_order(&run("b", 1, "live", t, json!({})), &a),
            Ordering::Greater
        );
        let newer = run("z", 1, "live", "2026-01-01T10:00:01Z", json!({}));
        assert_eq!(queue_order(&newer, &a), Ordering::Less);
        let mut unborn = (*a).clone();
        unborn.metadata.creation_timestamp = None;
        assert_eq!(queue_order(&unborn, &a), Ordering::Greater, "no time: last");
    }

    #[test]
    fn the_queue_is_filtered_newest_first_and_paged() {
        let runs = vec![
            run(
                "a",
                1,
                "live",
                "2026-01-01T10:00:00Z",
                json!({"phase": "Running"}),
            ),
            run(
                "b",
                2,
                "live",
                "2026-01-01T11:00:00Z",
                json!({"phase": "Succeeded"}),
            ),
            run(
                "c",
                3,
                "staging",
                "2026-01-01T12:00:00Z",
                json!({"phase": "Pending"}),
            ),
            run(
                "d",
                4,
                "live",
                "2026-01-01T12:00:00Z",
                json!({"phase": "Running"}),
            ),
        ];
        let query = |s: &str| parse_packages_query(&pairs(&format!("siteId=site&{s}"))).unwrap();
        let ids = |(total, page): (usize, Vec<Package>)| {
            (total, page.into_iter().map(|p| p.id).collect::<Vec<_>>())
        };
        assert_eq!(
            ids(packages_page(&runs, &query(""))),
            (
                4,
                vec![
                    "uid-d".into(),
                    "uid-c".into(),
                    "uid-b".into(),
                    "uid-a".into()
                ]
            )
        );
        assert_eq!(
            ids(packages_page(&runs, &query("offset=1&limit=2"))),
            (4, vec!["uid-c".into(), "uid-b".into()])
        );
        assert_eq!(ids(packages_page(&runs, &query("offset=9"))), (4, vec![]));
        assert_eq!(
            ids(packages_page(
                &runs,
                &query("states=READY_FOR_LIVE&environment=LIVE")
            )),
            (2, vec!["uid-d".into(), "uid-a".into()])
        );
        assert_eq!(
            ids(packages_page(&runs, &query("states=COMPLETED,BLOCKED"))),
            (1, vec!["uid-b".into()])
        );
    }
}
