//! GoCD Stages API: cancel a stage, cancel one stage
//! instance, and stage history.

use std::sync::Arc;

use serde::Serialize;
use warp::http::{HeaderMap, StatusCode, header};
use warp::reply::{Reply, Response};

use super::auth::{AuthError, Credentials, credentials};
use super::{State, is_active, json, text};
use crate::crd::{JobState, RunResult, StageRun};

const PAGE_SIZE: usize = 10;

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

/// A GoCD message in the format the client asked for.
pub fn message(headers: &HeaderMap, status: StatusCode, msg: &str) -> Response {
    if wants_json(headers) {
        json(status, &Message { message: msg })
    } else {
        text(status, msg)
    }
}

fn unauthenticated(headers: &HeaderMap) -> Response {
    let mut r = message(
        headers,
        StatusCode::UNAUTHORIZED,
        "Unauthorized: authentication is required.",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"GoCD\""),
    );
    r
}

fn unavailable(headers: &HeaderMap, why: &str) -> Response {
    tracing::error!(error = why, "GoCD request failed");
    message(
        headers,
        StatusCode::SERVICE_UNAVAILABLE,
        "Service unavailable: the Kubernetes API could not be reached; try again.",
    )
}

async fn authenticate(
    state: &State,
    headers: &HeaderMap,
) -> Result<super::auth::Identity, Response> {
    let creds: Credentials = credentials(headers);
    match state.auth.authenticate(&creds).await {
        Ok(id) => Ok(id),
        Err(AuthError::Unavailable(why)) => Err(unavailable(headers, &why)),
        Err(_) => Err(unauthenticated(headers)),
    }
}

/// `POST /go/api/stages/{pipeline}/{stage}/cancel`, and the per-instance form
/// when `instance` is (pipeline_counter, stage_counter).
pub async fn cancel(
    state: &State,
    headers: &HeaderMap,
    pipeline: &str,
    stage: &str,
    instance: Option<(&str, &str)>,
) -> Response {
    let who = match authenticate(state, headers).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let mut runs = state.cache.by_stage(pipeline, stage);
    if let Some((pc, sc)) = instance {
        let (Some(pc), Some(sc)) = (parse_counter(pc), parse_counter(sc)) else {
            return not_found(headers, pipeline, stage, instance);
        };
        runs.retain(|r| r.spec.pipeline_counter == pc && r.spec.stage_counter == sc);
    }
    if runs.is_empty() {
        return not_found(headers, pipeline, stage, instance);
    }
    // Permission first, before anything changes.
    for ns in namespaces(&runs) {
        match state.auth.can_cancel(&who, &ns).await {
            Ok(true) => {}
            Ok(false) => {
                return message(
                    headers,
                    StatusCode::UNAUTHORIZED,
                    &format!(
                        "You do not have operate permissions for stage '{stage}' of pipeline '{pipeline}'."
                    ),
                );
            }
            Err(why) => return unavailable(headers, &why),
        }
    }
    let active: Vec<Arc<StageRun>> = runs.into_iter().filter(|r| is_active(r)).collect();
    if active.is_empty() {
        return message(
            headers,
            StatusCode::OK,
            "Stage is not active. Cancellation Ignored.",
        );
    }
    let reason = format!("stage {pipeline}/{stage} cancelled through the GoCD API");
    match state.request_cancel("gocd", &active, &who, reason).await {
        Ok(_) => message(headers, StatusCode::OK, "Stage cancelled successfully."),
        Err(e) => unavailable(headers, &e.to_string()),
    }
}

fn not_found(
    headers: &HeaderMap,
    pipeline: &str,
    stage: &str,
    instance: Option<(&str, &str)>,
) -> Response {
    let msg = match instance {
        None => format!("Not Found {{ Stage '{stage}' of pipeline '{pipeline}' not found }}"),
        Some((pc, sc)) => {
            format!(
                "Not Found {{ Stage '{stage}' (counter {sc}) of pipeline '{pipeline}' (counter {pc}) not found }}"
            )
        }
    };
    message(headers, StatusCode::NOT_FOUND, &msg)
}

fn namespaces(runs: &[Arc<StageRun>]) -> Vec<String> {
    let mut ns: Vec<String> = runs
        .iter()
        .filter_map(|r| r.metadata.namespace.clone())
        .collect();
    ns.sort();
    ns.dedup();
    ns
}

/// One stage instance, field for field as GoCD's history JSON.
#[derive(Serialize, Debug, PartialEq)]
pub struct StageInstance {
    pub name: String,
    pub approved_by: String,
    pub jobs: Vec<JobInstance>,
    pub can_run: bool,
    pub pipeline_counter: i64,
    pub pipeline_name: String,
    pub approval_type: String,
    pub result: RunResult,
    pub id: i64,
    pub counter: String,
    pub operate_permission: bool,
    pub scheduled: bool,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JobInstance {
    pub name: String,
    pub result: RunResult,
    pub state: JobState,
    pub id: i64,
    pub scheduled_date: i64,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Pagination {
    pub offset: usize,
    pub total: usize,
    pub page_size: usize,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct History {
    pub stages: Vec<StageInstance>,
    pub pagination: Pagination,
}

/// A StageRun as a GoCD stage instance.
pub fn stage_instance(run: &StageRun, operate_permission: bool) -> StageInstance {
    let status = run.status.clone().unwrap_or_default();
    let scheduled_ms = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.or(run.metadata.creation_timestamp.as_ref())
            .map(|t| t.0.as_millisecond())
            .unwrap_or(0)
    };
    let jobs = if status.jobs.is_empty() {
        // Not yet seen by the controller: jobs are scheduled, with no id yet.
        run.spec
            .jobs
            .iter()
            .map(|j| JobInstance {
                name: j.name.clone(),
                result: RunResult::Unknown,
                state: JobState::Scheduled,
                id: 0,
                scheduled_date: scheduled_ms(None),
            })
            .collect()
    } else {
        status
            .jobs
            .iter()
            .map(|j| JobInstance {
                name: j.name.clone(),
                result: j.result,
                state: j.state,
                id: j.id,
                scheduled_date: scheduled_ms(j.scheduled_at.as_ref()),
            })
            .collect()
    };
    StageInstance {
        name: run.spec.stage.clone(),
        approved_by: run.spec.approved_by.clone(),
        jobs,
        can_run: false,
        pipeline_counter: run.spec.pipeline_counter,
        pipeline_name: run.spec.pipeline.clone(),
        approval_type: match run.spec.approval_type {
            crate::crd::ApprovalType::Success => "success".into(),
            crate::crd::ApprovalType::Manual => "manual".into(),
        },
        result: status.result.unwrap_or_default(),
        id: status.id.unwrap_or(0),
        counter: run.spec.stage_counter.to_string(),
        operate_permission,
        scheduled: true,
    }
}

/// Newest first: pipeline counter, then stage counter, descending.
pub fn sort_newest_first(runs: &mut [Arc<StageRun>]) {
    runs.sort_by(|a, b| {
        (
            b.spec.pipeline_counter,
            b.spec.stage_counter,
            &b.metadata.creation_timestamp,
            &b.metadata.name,
        )
            .cmp(&(
                a.spec.pipeline_counter,
                a.spec.stage_counter,
                &a.metadata.creation_timestamp,
                &a.metadata.name,
            ))
    });
}

/// Parses a pipeline or stage counter of a path: decimal digits only, so
/// that `+2` or ` 2` name no instance.
pub fn parse_counter(raw: &str) -> Option<i64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Parses a history offset: a non-negative decimal integer.
pub fn parse_offset(raw: Option<&str>) -> Option<usize> {
    match raw {
        None => Some(0),
        Some(s) if !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        Some(_) => None,
    }
}

/// `GET /go/api/stages/{pipeline}/{stage}/history[/{offset}]`.
pub async fn history(
    state: &State,
    headers: &HeaderMap,
    pipeline: &str,
    stage: &str,
    offset: Option<&str>,
) -> Response {
    let who = match authenticate(state, headers).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(offset) = parse_offset(offset) else {
        return message(
            headers,
            StatusCode::BAD_REQUEST,
            "Bad Request { The offset must be a non-negative integer. }",
        );
    };
    let all = state.cache.by_stage(pipeline, stage);
    if all.is_empty() {
        return not_found(headers, pipeline, stage, None);
    }
    let mut readable = Vec::new();
    let mut operate = std::collections::HashMap::new();
    for ns in namespaces(&all) {
        let read = match state.auth.can_read(&who, &ns).await {
            Ok(v) => v,
            Err(why) => return unavailable(headers, &why),
        };
        if read {
            let op = match state.auth.can_cancel(&who, &ns).await {
                Ok(v) => v,
                Err(why) => return unavailable(headers, &why),
            };
            operate.insert(ns.clone(), op);
            readable.push(ns);
        }
    }
    if readable.is_empty() {
        return message(
            headers,
            StatusCode::UNAUTHORIZED,
            &format!("You do not have view permissions for pipeline '{pipeline}'."),
        );
    }
    let mut runs: Vec<Arc<StageRun>> = all
        .into_iter()
        .filter(|r| {
            r.metadata
                .namespace
                .as_ref()
                .is_some_and(|ns| readable.contains(ns))
        })
        .collect();
    sort_newest_first(&mut runs);
    let total = runs.len();
    let stages = runs
        .iter()
        .skip(offset)
        .take(PAGE_SIZE)
        .map(|r| {
            let op = r
                .metadata
                .namespace
                .as_ref()
                .and_then(|ns| operate.get(ns))
                .copied()
                .unwrap_or(false);
            stage_instance(r, op)
        })
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
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn offsets_are_non_negative_integers() {
        assert_eq!(parse_offset(None), Some(0));
        assert_eq!(parse_offset(Some("0")), Some(0));
        assert_eq!(parse_offset(Some("20")), Some(20));
        for bad in ["", "-1", "abc", "1.5", "+1", "99999999999999999999"] {
            assert_eq!(parse_offset(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn counters_are_decimal_digits() {
        assert_eq!(parse_counter("2"), Some(2));
        assert_eq!(parse_counter("02"), Some(2));
        for bad in ["", "+2", "-2", " 2", "2 ", "x", "99999999999999999999"] {
            assert_eq!(parse_counter(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_stagerun_renders_as_gocd_documents_it() {
        let run: StageRun = serde_json::from_value(json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
            "metadata": {"name": "foo-2-dev", "namespace": "demo", "creationTimestamp": "2014-09-23T07:21:16Z"},
            "spec": {"pipeline": "foo", "pipelineCounter": 2, "stage": "DEV", "approvedBy": "admin",
                     "jobs": [{"name": "UnitTest", "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}]},
            "status": {"id": 3, "phase": "Failed", "result": "Failed",
                       "jobs": [{"name": "UnitTest", "id": 3, "state": "Completed", "result": "Failed",
                                 "scheduledAt": "2014-09-23T07:21:16.262Z"}]}
        }))
        .unwrap();
        let got = serde_json::to_value(stage_instance(&run, false)).unwrap();
        let want = json!({
            "name": "DEV", "approved_by": "admin",
            "jobs": [{"name": "UnitTest", "result": "Failed", "state": "Completed", "id": 3, "scheduled_date": 1411456876262_i64}],
            "can_run": false, "pipeline_counter": 2, "pipeline_name": "foo", "approval_type": "success",
            "result": "Failed", "id": 3, "counter": "1", "operate_permission": false, "scheduled": true
        });
        assert_eq!(got, want);
    }
}
