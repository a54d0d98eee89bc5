//! CrafterCMS Studio: cancel publish requests. A site is a
//! pipeline; a package id is a StageRun uid. All or nothing: every id is
//! checked before anything is cancelled.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;

use super::auth::{AuthError, credentials};
use super::{State, is_active, json};
use crate::crd::StageRun;

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

fn internal(detail: &str) -> Response {
    tracing::error!(error = detail, "Crafter request failed");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("Internal server error. {detail}"),
    )
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
pub async fn cancel(state: &State, headers: &HeaderMap, body: &[u8]) -> Response {
    let who = match state.auth.authenticate(&credentials(headers)).await {
        Ok(id) => id,
        Err(AuthError::Unavailable(why)) => return internal(&why),
        Err(_) => return unauthorized(),
    };
    let Some(params) = parse_body(body) else {
        return invalid();
    };
    let site = state.cache.by_pipeline(&params.site_id);
    if site.is_empty() {
        return message(StatusCode::NOT_FOUND, "Site not found");
    }
    let mut packages: Vec<Arc<StageRun>> = Vec::with_capacity(params.package_ids.len());
    for id in &params.package_ids {
        match site
            .iter()
            .find(|r| r.metadata.uid.as_deref() == Some(id.as_str()))
        {
            Some(r) => packages.push(r.clone()),
            None => return message(StatusCode::NOT_FOUND, "Package ID not found"),
        }
    }
    let mut namespaces: Vec<String> = packages
        .iter()
        .filter_map(|r| r.metadata.namespace.clone())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for ns in &namespaces {
        match state.auth.can_cancel(&who, ns).await {
            Ok(true) => {}
            Ok(false) => return unauthorized(),
            Err(why) => return internal(&why),
        }
    }
    let active: Vec<Arc<StageRun>> = packages.into_iter().filter(|r| is_active(r)).collect();
    if !active.is_empty() {
        let reason = format!(
            "publish requests of site {} cancelled through the CrafterCMS API",
            params.site_id
        );
        if let Err(e) = state.request_cancel("crafter", &active, &who, reason).await {
            return internal(&e.to_string());
        }
    }
    message(StatusCode::OK, "OK")
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
