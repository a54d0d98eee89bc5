//! The request as every handler sees it, and the few response builders all
//! APIs share.

use serde::Serialize;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::{Reply, Response};

/// One request: method, raw path and query, headers, and the body read in
/// full (at most the body limit).
pub struct Call<'a> {
    pub method: &'a Method,
    /// The path as sent (percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`; empty when there is none.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl Call<'_> {
    /// The query parameters, decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The absolute URL clients reach the sidecar at: the configured
    /// external URL, else the Host header (http unless a proxy said https).
    pub fn base_url(&self, external_url: Option<&str>) -> String {
        if let Some(url) = external_url {
            return url.trim_end_matches('/').to_string();
        }
        let host = self
            .header(header::HOST.as_str())
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
            .unwrap_or("localhost");
        let proto = self
            .header("x-forwarded-proto")
            .filter(|p| *p == "https" || *p == "http")
            .unwrap_or("http");
        format!("{proto}://{host}")
    }
}

pub fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let mut r = warp::reply::json(body).into_response();
    *r.status_mut() = status;
    r
}

/// JSON with a media type of the API's own (e.g. GoCD's versioned types).
pub fn json_as(status: StatusCode, content_type: &'static str, body: &impl Serialize) -> Response {
    let mut r = json(status, body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn text(status: StatusCode, body: &str) -> Response {
    let mut r = warp::reply::with_status(body.to_string(), status).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = warp::reply::with_status(body, status).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(method: &'a Method, query: &'a str, headers: &'a HeaderMap) -> Call<'a> {
        Call {
            method,
            path: "/",
            query,
            headers,
            body: b"",
        }
    }

    #[test]
    fn query_parameters_are_decoded() {
        let h = HeaderMap::new();
        let c = call(&Method::GET, "a=1&b=x%20y&a=2&c", &h);
        assert_eq!(c.query_param("a").as_deref(), Some("1"));
        assert_eq!(c.query_param("b").as_deref(), Some("x y"));
        assert_eq!(c.query_param("c").as_deref(), Some(""));
        assert_eq!(c.query_param("d"), None);
        assert_eq!(c.query_pairs().len(), 4);
    }

    #[test]
    fn base_url_comes_from_the_config_or_host() {
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            HeaderValue::from_static("api.example.local:8153"),
        );
        let c = call(&Method::GET, "", &h);
        assert_eq!(c.base_url(None), "http://api.example.local:8153");
        assert_eq!(c.base_url(Some("https://x.example/")), "https://x.example");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let c = call(&Method::GET, "", &h);
        assert_eq!(c.base_url(None), "https://api.example.local:8153");
        h.insert(header::HOST, HeaderValue::from_static("bad host"));
        let c = call(&Method::GET, "", &h);
        assert_eq!(c.base_url(None), "https://localhost");
    }
}
