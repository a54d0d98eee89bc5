//! HTTP/1.1 over a bare TCP connection, for requests no client library
//! sends (malformed chunked bodies, stalled bodies, too many header fields).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer read off a raw connection.
pub struct RawAnswer {
    pub status: u16,
    /// The header fields, names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// All that was read, for messages.
    pub raw: String,
}

impl RawAnswer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Writes `request` (a whole request, with `Connection: close`) to `host`
/// (`address:port`) and reads until the server closes the connection, which
/// must happen within `timeout`.
pub async fn exchange(host: &str, request: &str, timeout: Duration) -> RawAnswer {
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(timeout, conn.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    let raw = String::from_utf8(out).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawAnswer {
        status,
        headers,
        body: body.to_string(),
        raw: raw.clone(),
    }
}
