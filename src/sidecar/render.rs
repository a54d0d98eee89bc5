//! Errors every API must be able to answer, each in its own format. One
//! implementation per API family; the server picks it by path
//! (`server::errors_for`), and a handler renders the service's refusals
//! with it (`ApiErrors::refused`).

use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::http::text;
use super::service::Failure;

/// The errors of one API family.
pub trait ApiErrors {
    /// No endpoint at this path.
    fn route_not_found(&self, path: &str) -> Response;
    /// The path exists for other methods (the caller adds `Allow`).
    fn method_not_allowed(&self, allow: &str) -> Response;
    /// The body is over the limit.
    fn too_large(&self) -> Response;
    /// The body did not arrive within the request timeout.
    fn request_timeout(&self) -> Response;
    /// The body could not be read (e.g. broken chunked encoding).
    fn unreadable(&self) -> Response;
    /// No valid credentials.
    fn unauthenticated(&self) -> Response;
    /// The Kubernetes API could not be asked; `why` is logged, not shown.
    fn unavailable(&self, why: &str) -> Response;
    /// The archive of finished runs could not be read; `why` is logged,
    /// not shown. As [`Self::unavailable`] unless the API says more.
    fn archive_unavailable(&self, why: &str) -> Response {
        self.unavailable(why)
    }
    /// Authenticated, but not allowed to do this.
    fn forbidden(&self) -> Response;
    /// Not allowed to know the object exists; as forbidden unless the API
    /// hides such objects.
    fn hidden(&self) -> Response {
        self.forbidden()
    }

    /// The service's refusal, in this format.
    fn refused(&self, f: &Failure) -> Response {
        match f {
            Failure::Unauthenticated | Failure::Rejected(_) => self.unauthenticated(),
            Failure::Unavailable(why) => self.unavailable(why),
            Failure::ArchiveUnavailable(why) => self.archive_unavailable(why),
            Failure::Forbidden => self.forbidden(),
            Failure::Hidden => self.hidden(),
        }
    }
}

/// `Allow` on a 405.
pub fn with_allow(mut r: Response, allow: &'static str) -> Response {
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Health, metrics and the OpenAPI document: plain text.
pub struct Operations;

impl ApiErrors for Operations {
    fn route_not_found(&self, _path: &str) -> Response {
        text(StatusCode::NOT_FOUND, "not found")
    }
    fn method_not_allowed(&self, _allow: &str) -> Response {
        text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    }
    fn too_large(&self) -> Response {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body larger than 64 KiB",
        )
    }
    fn request_timeout(&self) -> Response {
        text(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        )
    }
    fn unreadable(&self) -> Response {
        text(StatusCode::BAD_REQUEST, "could not read the request body")
    }
    fn unauthenticated(&self) -> Response {
        text(StatusCode::UNAUTHORIZED, "unauthorized")
    }
    fn unavailable(&self, why: &str) -> Response {
        tracing::error!(error = why, "request failed");
        text(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
    }
    fn forbidden(&self) -> Response {
        text(StatusCode::FORBIDDEN, "forbidden")
    }
}
