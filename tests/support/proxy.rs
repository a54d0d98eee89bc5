//! A TCP proxy between one client and the API server, that can cut the
//! path: black-hole it (connections stay open, nothing passes either way)
//! or reject it (every connection is closed and new ones are refused). TLS
//! passes through untouched, so the client keeps its credentials.
#![allow(dead_code)]

use std::net::SocketAddr;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Open,
    BlackHole,
    Rejected,
}

pub struct Proxy {
    pub addr: SocketAddr,
    path: watch::Sender<Path>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (path, state) = watch::channel(Path::Open);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    if *state.borrow() == Path::Rejected {
                        return;
                    }
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, state).await;
                    }
                });
            }
        });
        Proxy { addr, path, task }
    }

    pub fn set(&self, path: Path) {
        self.path.send_replace(path);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways until either side closes or the path is rejected
/// (both sockets are closed then); while black-holed, what arrives is
/// dropped.
async fn relay(client: TcpStream, server: TcpStream, state: watch::Receiver<Path>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut rejected = state.clone();
    tokio::select! {
        _ = pipe(&mut cr, &mut sw, &state) => {}
        _ = pipe(&mut sr, &mut cw, &state) => {}
        _ = rejected.wait_for(|p| *p == Path::Rejected) => {}
    }
}

async fn pipe(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    state: &watch::Receiver<Path>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let path = *state.borrow();
        match path {
            Path::Open => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Path::BlackHole => {}
            Path::Rejected => return,
        }
    }
}

// --------------------------------------------- replicas behind a proxy --

/// A kubeconfig for a replica: the admin's credentials, acting as
/// `identity` (impersonated, in system:masters) so that the API server's
/// audit log tells its writes apart, through `server` (a proxy, or the API
/// server itself).
pub fn replica_kubeconfig(identity: &str, server: Option<&str>) -> String {
    let admin = std::fs::read_to_string(super::kubeconfig_path(super::User::Admin))
        .expect("admin kubeconfig");
    let mut config: serde_json::Value = yaml_serde::from_str(&admin).expect("kubeconfig yaml");
    if let Some(server) = server {
        config["clusters"][0]["cluster"]["server"] = json!(format!("https://{server}"));
    }
    config["users"][0]["user"]["as"] = json!(identity);
    config["users"][0]["user"]["as-groups"] = json!(["system:masters"]);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubeconfigs");
    std::fs::create_dir_all(&dir).expect("create the kubeconfig directory");
    let path = dir.join(format!("{identity}.kubeconfig"));
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).expect("write kubeconfig");
    // It carries the admin's token.
    let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(&path, private).expect("chmod kubeconfig");
    path.display().to_string()
}

/// The API server's address, from the admin kubeconfig.
pub fn api_server() -> std::net::SocketAddr {
    let admin = std::fs::read_to_string(super::kubeconfig_path(super::User::Admin))
        .expect("admin kubeconfig");
    let config: serde_json::Value = yaml_serde::from_str(&admin).expect("kubeconfig yaml");
    let server = config["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("server");
    server
        .trim_start_matches("https://")
        .parse()
        .expect("host:port")
}

/// Every event of the API server's audit log (writes only: see
/// `cluster.sh`), oldest file first.
fn audit_events() -> Vec<serde_json::Value> {
    let dir = super::cluster_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("control plane directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit") && n.ends_with(".log"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no audit log in {}", dir.display());
    let mut events = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("audit log");
        events.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    events
}

/// When the API server received each write of `user`, from its audit log.
pub fn writes_of(user: &str) -> Vec<k8s_openapi::jiff::Timestamp> {
    let mut at: Vec<k8s_openapi::jiff::Timestamp> = (audit_events().iter())
        .filter(|e| e["impersonatedUser"]["username"] == user)
        .filter_map(|e| e["requestReceivedTimestamp"].as_str())
        .map(|t| t.parse().expect("timestamp"))
        .collect();
    at.sort();
    at
}

/// The names of the `resource` objects created in `namespace` (the API
/// server answered 201), once per creation, from its audit log.
pub fn created(resource: &str, namespace: &str) -> Vec<String> {
    (audit_events().iter())
        .filter(|e| e["verb"] == "create" && e["responseStatus"]["code"] == 201)
        .filter(|e| {
            e["objectRef"]["resource"] == resource && e["objectRef"]["namespace"] == namespace
        })
        .map(|e| {
            e["objectRef"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("a create without a name in the audit log: {e}"))
                .to_string()
        })
        .collect()
}
