//! A TCP proxy between one client and the API server, that can cut the
//! path: black-hole it (connections stay open, nothing passes either way)
//! or reject it (every connection is closed and new ones are refused). TLS
//! passes through untouched, so the client keeps its credentials.
#![allow(dead_code)]

use std::net::SocketAddr;

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
