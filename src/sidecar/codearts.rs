//! Huawei Cloud CodeArts Build: stop a build.
//! A build task (`job_id`) is a pipeline; a build number (`build_no`) is its
//! pipeline counter; the build is every StageRun of that pipeline run.

use serde::Serialize;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;

use super::State;
use super::http::{Call, json};
use super::render::ApiErrors;
use super::routes::CodeArtsRoute;
use super::service::{CancelCall, Failure};

/// The error codes this API answers with (also listed in README.md).
pub mod codes {
    pub const MALFORMED_BODY: &str = "CB.00060200";
    pub const INVALID_JOB_ID: &str = "CB.00060201";
    pub const INVALID_BUILD_NO: &str = "CB.00060202";
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
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 255 => s.clone(),
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
            "authentication failed: a valid X-Auth-Token is required",
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
}

/// A refused call, for build task `job_id`.
fn refused(f: &Failure, job_id: &str) -> Response {
    match f {
        Failure::Unauthenticated => Errors.unauthenticated(),
        Failure::Unavailable(why) => Errors.unavailable(why),
        Failure::Forbidden | Failure::Hidden => error(
            StatusCode::FORBIDDEN,
            codes::FORBIDDEN,
            &format!("no permission to stop builds of build task {job_id}"),
        ),
    }
}

pub async fn handle(state: &State, route: &CodeArtsRoute, call: &Call<'_>) -> Response {
    match route {
        CodeArtsRoute::Stop => stop(state, call, parse_body(call.body)).await,
        CodeArtsRoute::StopPath { job_id, build_no } => {
            let params = validate(
                Some(&Value::String(job_id.clone())),
                Some(&Value::String(build_no.clone())),
            );
            stop(state, call, params).await
        }
    }
}

/// `POST /v3/jobs/stop` (body) and `POST /v3/jobs/{job_id}/{build_no}/stop` (path).
async fn stop(
    state: &State,
    call: &Call<'_>,
    params: Result<StopRequest, (&'static str, String)>,
) -> Response {
    let who = match state.identify(call).await {
        Ok(id) => id,
        Err(f) => return refused(&f, ""),
    };
    let req = match params {
        Ok(r) => r,
        Err((code, msg)) => return error(StatusCode::BAD_REQUEST, code, &msg),
    };
    if state.cache.by_pipeline(&req.job_id).is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            codes::JOB_NOT_FOUND,
            &format!("build task {} does not exist", req.job_id),
        );
    }
    let runs = state.cache.by_build(&req.job_id, req.build_no);
    if runs.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            codes::BUILD_NOT_FOUND,
            &format!(
                "build {} of build task {} does not exist",
                req.build_no, req.job_id
            ),
        );
    }
    let reason = format!(
        "build {} of {} stopped through the CodeArts API",
        req.build_no, req.job_id
    );
    match state
        .cancel(CancelCall {
            api: "codearts",
            who: &who,
            runs,
            reason,
            hide_unreadable: false,
        })
        .await
    {
        Ok(outcome) => json(
            StatusCode::OK,
            &StopResult {
                result: outcome.any_cancelled(),
            },
        ),
        Err(f) => refused(&f, &req.job_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
