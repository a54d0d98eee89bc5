//! CrafterCMS Studio: cancel publish requests (the v1 route; Studio's
//! current API is in `studio`). A site is a
//! pipeline; a package id is a StageRun uid. All or nothing: every id is
//! checked before anything is cancelled.

use serde::Serialize;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;

use super::auth::Identity;
use super::http::{Call, json};
use super::render::ApiErrors;
use super::routes::CrafterRoute;
use super::service::Service;
use super::service::{Failure, Signing};
use super::studio::{self, Missing, cancel_packages, site_packages};

#[derive(Serialize)]
struct Message<'a> {
    message: &'a str,
}

pub fn message(status: StatusCode, msg: &str) -> Response {
    json(status, &Message { message: msg })
}

pub fn invalid() -> Response {
    message(StatusCode::BAD_REQUEST, "Invalid parameter(s)")
}

pub fn unauthorized() -> Response {
    message(StatusCode::UNAUTHORIZED, "Unauthorized")
}

/// Studio's v1 error format: `{"message"}`.
pub struct Errors;

impl ApiErrors for Errors {
    fn route_not_found(&self, _path: &str) -> Response {
        message(StatusCode::NOT_FOUND, "Not Found")
    }
    fn method_not_allowed(&self, _allow: &str) -> Response {
        message(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
    }
    fn too_large(&self) -> Response {
        message(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
    }
    fn request_timeout(&self) -> Response {
        message(StatusCode::REQUEST_TIMEOUT, "Request timeout")
    }
    fn unreadable(&self) -> Response {
        invalid()
    }
    fn unauthenticated(&self) -> Response {
        unauthorized()
    }
    fn unavailable(&self, why: &str) -> Response {
        tracing::error!(error = why, "Crafter request failed");
        // Studio documents the exception's text after the fixed prefix.
        message(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("Internal server error. {why}"),
        )
    }
    /// Crafter's v1 API answers every refusal as unauthorized.
    fn forbidden(&self) -> Response {
        unauthorized()
    }
}

/// Answers a Crafter call: the caller is identified, the route served,
/// and a refusal of the service rendered in the route's format (v1 or
/// Studio's v2).
pub async fn handle(state: &Service, route: &CrafterRoute, call: &Call<'_>) -> Response {
    let answer = async {
        let who = state.identify(call, Signing::Refused).await?;
        match route {
            CrafterRoute::CancelV1 => cancel(state, &who, call).await,
            CrafterRoute::CancelV2 => studio::cancel(state, &who, call).await,
            CrafterRoute::Packages => studio::packages(state, &who, call).await,
        }
    }
    .await;
    answer.unwrap_or_else(|f| match route {
        CrafterRoute::CancelV1 => Errors.refused(&f),
        CrafterRoute::CancelV2 | CrafterRoute::Packages => studio::Errors.refused(&f),
    })
}

/// Validated parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct CancelParams {
    pub site_id: String,
    pub package_ids: Vec<String>,
}

/// Parses `{"site_id": "...", "package_ids": ["...", ...]}`.
pub fn parse_body(body: &[u8]) -> Option<CancelParams> {
    let Value::Object(map) = serde_json::from_slice::<Value>(body).ok()? else {
        return None;
    };
    let site_id = match map.get("site_id")? {
        Value::String(s) if !s.trim().is_empty() => s.clone(),
        _ => return None,
    };
    let Value::Array(ids) = map.get("package_ids")? else {
        return None;
    };
    if ids.is_empty() || ids.len() > 1000 {
        return None;
    }
    let mut package_ids = Vec::with_capacity(ids.len());
    for id in ids {
        match id {
            Value::String(s) if !s.trim().is_empty() => package_ids.push(s.clone()),
            _ => return None,
        }
    }
    package_ids.sort();
    package_ids.dedup();
    Some(CancelParams {
        site_id,
        package_ids,
    })
}

/// `POST /api/1/services/api/1/publish/cancel-publish-requests.json`.
async fn cancel(state: &Service, who: &Identity, call: &Call<'_>) -> Result<Response, Failure> {
    let Some(params) = parse_body(call.body) else {
        return Ok(invalid());
    };
    let packages = match site_packages(state, &params.site_id, &params.package_ids).await? {
        Ok(packages) => packages,
        Err(Missing::Site) => return Ok(message(StatusCode::NOT_FOUND, "Site not found")),
        Err(Missing::Package(_)) => {
            return Ok(message(StatusCode::NOT_FOUND, "Package ID not found"));
        }
    };
    let reason = format!(
        "publish requests of site {} cancelled through the CrafterCMS API",
        params.site_id
    );
    cancel_packages(state, who, packages, reason).await?;
    Ok(message(StatusCode::OK, "OK"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_validated() {
        let ok = parse_body(br#"{"site_id": "mysite", "package_ids": ["b", "a", "b"]}"#).unwrap();
        assert_eq!(ok.site_id, "mysite");
        assert_eq!(ok.package_ids, vec!["a".to_string(), "b".to_string()]);
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"package_ids": ["a"]}"#,
            br#"{"site_id": "", "package_ids": ["a"]}"#,
            br#"{"site_id": "s"}"#,
            br#"{"site_id": "s", "package_ids": []}"#,
            br#"{"site_id": "s", "package_ids": "a"}"#,
            br#"{"site_id": "s", "package_ids": [1]}"#,
            br#"{"site_id": "s", "package_ids": [""]}"#,
            br#"{"site_id": 3, "package_ids": ["a"]}"#,
        ] {
            assert!(
                parse_body(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
