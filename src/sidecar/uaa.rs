//! The token endpoint Cloud Foundry clients look for at the root
//! document's `login`/`uaa` link (`POST /oauth/token`, UAA's shape).
//!
//! The sidecar issues no tokens. It takes the `refresh_token` grant whose
//! refresh token is a Kubernetes bearer token, checks it with a
//! TokenReview, and hands the same token back as the access token. That is
//! how clients that start from a refresh token (the python
//! cloudfoundry-client's `init_with_token`, a cf CLI config) come to send
//! the Kubernetes token as their bearer token. Other grants are refused as
//! UAA refuses grants it does not support.

use serde::Serialize;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::auth::{AuthError, Credentials};
use super::http::{Call, json};
use super::render::ApiErrors;
use super::routes::UaaRoute;
use super::service::Service;

#[derive(Serialize)]
struct OAuthError<'a> {
    error: &'a str,
    error_description: &'a str,
}

/// An OAuth 2 error (RFC 6749 §5.2), as UAA writes it.
pub fn error(status: StatusCode, error: &str, description: &str) -> Response {
    json(
        status,
        &OAuthError {
            error,
            error_description: description,
        },
    )
}

/// UAA's error format: `{"error", "error_description"}`.
pub struct Errors;

impl ApiErrors for Errors {
    fn route_not_found(&self, _path: &str) -> Response {
        error(StatusCode::NOT_FOUND, "not_found", "Not Found")
    }
    fn method_not_allowed(&self, allow: &str) -> Response {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("Request method not supported: use {allow}"),
        )
    }
    fn too_large(&self) -> Response {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "Request body larger than 64 KiB",
        )
    }
    fn request_timeout(&self) -> Response {
        error(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            "The request body was not received in time",
        )
    }
    fn unreadable(&self) -> Response {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Could not read the request body",
        )
    }
    fn unauthenticated(&self) -> Response {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Full authentication is required to access this resource",
        )
    }
    fn unavailable(&self, why: &str) -> Response {
        tracing::error!(error = why, "token request failed");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "The Kubernetes API could not be reached; try again",
        )
    }
    fn forbidden(&self) -> Response {
        error(StatusCode::FORBIDDEN, "access_denied", "Access is denied")
    }
}

/// A successful token response.
#[derive(Serialize, Debug, PartialEq)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub refresh_token: String,
    pub scope: String,
}

/// What a token request asks for, or why it cannot be answered.
#[derive(Debug, PartialEq)]
pub enum Grant {
    /// `grant_type=refresh_token` with this token.
    Refresh(String),
    Invalid {
        error: &'static str,
        description: String,
    },
}

/// Reads a form-encoded token request.
pub fn grant(body: &[u8]) -> Grant {
    let form: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    // The grant type is a name, taken as it is (` refresh_token` is none).
    let grant_type = form
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty());
    match grant_type {
        None => Grant::Invalid {
            error: "invalid_request",
            description: "A grant type is required".into(),
        },
        Some("refresh_token") => match field("refresh_token") {
            Some(token) => Grant::Refresh(token),
            None => Grant::Invalid {
                error: "invalid_request",
                description: "A refresh token is required".into(),
            },
        },
        Some(other) => Grant::Invalid {
            error: "unsupported_grant_type",
            description: format!(
                "Unsupported grant type: {other}; this server takes only refresh_token, with a Kubernetes bearer token as the refresh token"
            ),
        },
    }
}

pub async fn handle(state: &Service, route: &UaaRoute, call: &Call<'_>) -> Response {
    match route {
        UaaRoute::Token => token(state, call).await,
    }
}

/// `POST /oauth/token`.
async fn token(state: &Service, call: &Call<'_>) -> Response {
    let token = match grant(call.body) {
        Grant::Refresh(t) => t,
        Grant::Invalid {
            error: e,
            description,
        } => {
            return error(StatusCode::BAD_REQUEST, e, &description);
        }
    };
    let mut response = match state
        .auth
        .authenticate(&Credentials::Token(token.clone()))
        .await
    {
        Ok(_) => json(
            StatusCode::OK,
            &TokenResponse {
                access_token: token.clone(),
                token_type: "bearer",
                refresh_token: token,
                scope: String::new(),
            },
        ),
        Err(AuthError::Unavailable(why)) => Errors.unavailable(&why),
        Err(AuthError::Missing | AuthError::Invalid | AuthError::Rejected(_)) => error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "The refresh token is not a valid Kubernetes token",
        ),
    };
    // Token responses are never cached (RFC 6749 §5.1).
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_refresh_token_grant_is_taken() {
        assert_eq!(
            grant(b"grant_type=refresh_token&scope=&refresh_token=abc.def"),
            Grant::Refresh("abc.def".into())
        );
        assert_eq!(
            grant(b"refresh_token=x&grant_type=refresh_token"),
            Grant::Refresh("x".into())
        );
        for (body, want) in [
            (&b""[..], "invalid_request"),
            (b"grant_type=refresh_token", "invalid_request"),
            (
                b"grant_type=refresh_token&refresh_token=",
                "invalid_request",
            ),
            (
                b"grant_type=password&username=admin&password=badger",
                "unsupported_grant_type",
            ),
            (b"grant_type=client_credentials", "unsupported_grant_type"),
            (
                b"grant_type=+refresh_token&refresh_token=x",
                "unsupported_grant_type",
            ),
            (
                b"grant_type=refresh_token&refresh_token=+%09",
                "invalid_request",
            ),
            (b"{\"grant_type\": \"refresh_token\"}", "invalid_request"),
        ] {
            match grant(body) {
                Grant::Invalid { error, .. } => {
                    assert_eq!(error, want, "{}", String::from_utf8_lossy(body))
                }
                g => panic!("{}: {g:?}", String::from_utf8_lossy(body)),
            }
        }
    }
}
