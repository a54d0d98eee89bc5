//! `cancel-operator probe`: checks that every ready pod behind a Service
//! answers an HTTP GET (the chart's `helm test` hook). The pods are found
//! through the Service's EndpointSlices, so the check needs neither cluster
//! DNS nor Service routing, and it reaches each replica, not just one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

/// What to check.
pub struct Probe {
    pub namespace: String,
    pub service: String,
    /// Port name in the EndpointSlices; their first port when `None`.
    pub port_name: Option<String>,
    pub path: String,
    /// How long to keep trying before giving up.
    pub timeout: Duration,
}

/// The ready endpoints of the Service, as socket addresses.
async fn ready_endpoints(client: &kube::Client, probe: &Probe) -> anyhow::Result<Vec<SocketAddr>> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &probe.namespace);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={}", probe.service));
    let mut out = Vec::new();
    for slice in slices.list(&lp).await? {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| match &probe.port_name {
                Some(name) => p.name.as_deref() == Some(name),
                None => true,
            });
        let Some(port) = port.and_then(|p| p.port) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                // Unknown readiness counts as ready (the EndpointSlice API's advice).
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                let ip: std::net::IpAddr = address.parse()?;
                out.push(SocketAddr::new(ip, port as u16));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One GET; the status code of the answer.
fn get(address: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    status(&answer).ok_or_else(|| anyhow::anyhow!("{address}: not an HTTP answer"))
}

/// The status code of an HTTP/1.x answer.
fn status(answer: &[u8]) -> Option<u16> {
    let head = String::from_utf8_lossy(answer);
    let line = head.lines().next()?;
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if rest.len() > 3 && !rest[3..].starts_with(' ') {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

/// Retries until the Service has ready endpoints and every one of them
/// answers `path` with a 2xx status, or the timeout passes. Prints one line
/// per endpoint checked.
pub async fn run(client: kube::Client, probe: Probe) -> anyhow::Result<()> {
    let deadline = Instant::now() + probe.timeout;
    loop {
        let outcome = check_once(&client, &probe).await;
        match outcome {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
                return Ok(());
            }
            Err(e) if Instant::now() >= deadline => {
                anyhow::bail!("service {}/{}: {e:#}", probe.namespace, probe.service)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn check_once(client: &kube::Client, probe: &Probe) -> anyhow::Result<Vec<String>> {
    let endpoints = ready_endpoints(client, probe).await?;
    anyhow::ensure!(!endpoints.is_empty(), "no ready endpoint");
    let mut lines = Vec::new();
    for address in endpoints {
        let path = probe.path.clone();
        let status =
            tokio::task::spawn_blocking(move || get(address, &path, Duration::from_secs(5)))
                .await??;
        anyhow::ensure!(
            (200..300).contains(&status),
            "GET http://{address}{}: {status}",
            probe.path
        );
        lines.push(format!("GET http://{address}{}: {status}", probe.path));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_line() {
        assert_eq!(
            status(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            Some(200)
        );
        assert_eq!(
            status(b"HTTP/1.0 503 Service Unavailable\r\n\r\n"),
            Some(503)
        );
        assert_eq!(status(b"HTTP/1.1 204\r\n\r\n"), Some(204));
        assert_eq!(status(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 999 What\r\n"), None);
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status(b""), None);
    }

    #[test]
    fn gets_from_a_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            // The whole request first (it may come in several reads): an
            // answer sent before would break the client's pipe.
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut chunk).unwrap();
                assert!(n > 0, "the request ended before its headers");
                request.extend_from_slice(&chunk[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        assert_eq!(
            get(address, "/readyz", Duration::from_secs(5)).unwrap(),
            200
        );
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /readyz HTTP/1.1\r\n")
        );
    }
}
