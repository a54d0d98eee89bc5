//! The sidecar binary under hostile clients, against the real control plane:
//! slow headers and bodies, oversized headers and bodies, idle connections
//! holding every slot, and 64 connections at full rate while the
//! kube-apiserver does not answer. Each test runs its own sidecar process
//! (so that its memory can be read) on a namespace of its own; the tests run
//! one at a time because one of them pauses the API server.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{TestNamespace, User, eventually, world};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The limits the tests start the sidecar with (short, to keep them quick).
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
const KUBE_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 100;
const KUBE_IN_FLIGHT: usize = 8;
/// Room for a loaded machine on top of a timeout.
const SLACK: Duration = Duration::from_secs(5);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A sidecar process, killed when dropped.
struct Sidecar {
    child: Child,
    addr: SocketAddr,
}

impl Sidecar {
    fn start(ns: &str, users: &world::UsersFile) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cancel-operator"))
            .args(["sidecar", "--listen", "127.0.0.1:0", "--namespace", ns])
            .arg("--users-file")
            .arg(&users.path)
            .args(["--auth-cache-seconds", "1"])
            .args(["--header-read-timeout-seconds", "2"])
            .args(["--body-read-timeout-seconds", "2"])
            .args(["--max-header-bytes", "8192"])
            .args(["--max-connections", &MAX_CONNECTIONS.to_string()])
            .args(["--kube-in-flight", &KUBE_IN_FLIGHT.to_string()])
            .args(["--kube-timeout-seconds", "2"])
            .env("KUBECONFIG", support::kubeconfig_path(User::Admin))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the sidecar");
        let logs = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(logs).lines() {
                let Ok(line) = line else { break };
                // Until it listens, what it says helps to understand a failure.
                if tx.is_some() {
                    eprintln!("sidecar: {line}");
                }
                if let Some(addr) = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(|v| v["message"] == "sidecar listening")
                    .and_then(|v| v["address"].as_str()?.parse().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the sidecar's listening address");
        Sidecar { child, addr }
    }

    /// The process's peak resident memory (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A namespace with readers and cancellers granted and a sidecar serving it.
async fn setup(prefix: &str) -> (TestNamespace, world::UsersFile, Sidecar, reqwest::Client) {
    let ns = TestNamespace::new(prefix).await;
    support::install_crds(&ns.client).await;
    world::grant_readers_and_cancellers(&ns).await;
    let users = world::UsersFile::new(&ns.name);
    let sidecar = Sidecar::start(&ns.name, &users);
    let http = reqwest::Client::new();
    world::wait_ready(&http, sidecar.addr).await;
    (ns, users, sidecar, http)
}

/// Reads what the server sends until it closes the connection, or `limit`.
/// None when the deadline passed with the connection still open.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

/// Status and body of a raw HTTP/1.1 response.
fn parse_response(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_idle_connections_do_not_starve_others() {
    let _serial = SERIAL.lock().await;
    let (_ns, _users, mut sidecar, http) = setup("hostile-slow-head").await;

    // Slowloris: a request head trickled a byte at a time never completes.
    let mut slow = TcpStream::connect(sidecar.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut read_half, mut write_half) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for b in b"X-Slow: ".iter().cycle() {
            if write_half.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let closed = tokio::time::timeout(HEADER_TIMEOUT + SLACK, async {
        let mut buf = [0u8; 1024];
        loop {
            match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    trickle.abort();
    assert!(
        closed.is_ok(),
        "a trickled request head kept its connection open"
    );
    assert!(
        started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(500),
        "closed before the header timeout: {:?}",
        started.elapsed()
    );

    // Idle connections beyond the connection limit: a normal request still
    // gets an answer once the header timeout has closed some of them.
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 50 {
        idle.push(TcpStream::connect(sidecar.addr).await.unwrap());
    }
    let started = Instant::now();
    let answer = tokio::time::timeout(
        HEADER_TIMEOUT + SLACK,
        http.get(sidecar.url("/healthz")).send(),
    )
    .await
    .expect("a request behind idle connections waited too long")
    .unwrap();
    assert_eq!(answer.status(), 200);
    println!(
        "behind {} idle connections: answered in {:?}",
        idle.len(),
        started.elapsed()
    );
    // Every idle connection is closed by the server, none is kept for ever.
    for (i, conn) in idle.iter_mut().enumerate() {
        assert!(
            read_to_close(conn, 2 * HEADER_TIMEOUT + SLACK)
                .await
                .is_some_and(|got| got.is_empty()),
            "idle connection {i} still open or answered"
        );
    }

    // A kept-alive connection that goes idle after a response is closed too.
    let mut kept = TcpStream::connect(sidecar.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut kept, HEADER_TIMEOUT + SLACK)
        .await
        .expect("an idle kept-alive connection stayed open");
    assert_eq!(parse_response(&got).0, 200);
    assert!(sidecar.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_requests_get_the_apis_errors() {
    let _serial = SERIAL.lock().await;
    let (_ns, _users, mut sidecar, http) = setup("hostile-sizes").await;
    let token = support::token(User::Operator);

    // A body that stops arriving: 408 in the API's format, connection closed.
    let cases = [
        ("POST /v3/jobs/stop", json!("CB.00060200"), "/error_code"),
        (
            "POST /v3/tasks/00000000-0000-0000-0000-000000000000/actions/cancel",
            json!(1001),
            "/errors/0/code",
        ),
        (
            "POST /api/1/services/api/1/publish/cancel-publish-requests.json",
            json!("Request timeout"),
            "/message",
        ),
    ];
    for (line, expected, pointer) in cases {
        let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
        s.write_all(
            format!(
                "{line} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"job_id\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let started = Instant::now();
        let got = read_to_close(&mut s, BODY_TIMEOUT + SLACK)
            .await
            .unwrap_or_else(|| panic!("{line}: a stalled body kept the connection open"));
        let (status, head, body) = parse_response(&got);
        assert_eq!(status, 408, "{line}: {body}");
        assert!(head.contains("connection: close"), "{line}: {head}");
        let body: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(body.pointer(pointer), Some(&expected), "{line}: {body}");
        assert!(started.elapsed() >= BODY_TIMEOUT - Duration::from_millis(500));
    }

    // A GoCD client asking for JSON gets GoCD's JSON message.
    let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
    s.write_all(b"POST /go/api/stages/foo/DEV/cancel HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nContent-Length: 10\r\n\r\n{")
        .await
        .unwrap();
    let got = read_to_close(&mut s, BODY_TIMEOUT + SLACK).await.unwrap();
    let (status, _, body) = parse_response(&got);
    assert_eq!(status, 408);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["message"].is_string(),
        "{body}"
    );

    // Headers over the limit: 431, connection closed.
    let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
    let big = "a".repeat(10 * 1024);
    s.write_all(format!("GET /v3/tasks HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let got = read_to_close(&mut s, SLACK)
        .await
        .expect("oversized headers kept the connection open");
    assert_eq!(parse_response(&got).0, 431);
    // Too many header fields: 431 as well.
    let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    s.write_all(format!("GET /v3/tasks HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes())
        .await
        .unwrap();
    let got = read_to_close(&mut s, SLACK).await.unwrap();
    assert_eq!(parse_response(&got).0, 431);

    // Bodies over 64 KiB: 413 in the API's format, declared or chunked.
    let big = vec![b' '; 64 * 1024 + 1];
    let r = http
        .post(sidecar.url("/v3/tasks/x/actions/cancel"))
        .bearer_auth(&token)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["title"], "CF-MessageParseError");
    let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
    let mut raw = format!(
        "POST /v3/jobs/stop HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in big.chunks(8192) {
        raw.extend(format!("{:x}\r\n", chunk.len()).bytes());
        raw.extend(chunk);
        raw.extend(b"\r\n");
    }
    raw.extend(b"0\r\n\r\n");
    s.write_all(&raw).await.unwrap();
    let got = read_to_close(&mut s, SLACK).await.unwrap();
    let (status, _, body) = parse_response(&got);
    assert_eq!(status, 413, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error_code"], "CB.00060231");
    assert!(sidecar.running());
}

/// Pauses the kube-apiserver (SIGSTOP to its process group): connections to
/// it open but nothing answers. Resumed when dropped, also on a failure.
struct PausedApiServer(i32);

impl PausedApiServer {
    fn pause() -> Self {
        let pids = std::fs::read_to_string(support::cluster_dir().join("pids")).expect("pids");
        let pid: i32 = pids
            .lines()
            .rev()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, name)| *name == "kube-apiserver")
            .find_map(|(pid, _)| pid.parse().ok())
            .expect("the kube-apiserver's pid");
        signal("STOP", pid);
        PausedApiServer(pid)
    }
}

fn signal(name: &str, pid: i32) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), "--", &format!("-{pid}")])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{name} {pid}");
}

impl Drop for PausedApiServer {
    fn drop(&mut self) {
        signal("CONT", self.0);
    }
}

/// The error each API documents for "the backend is unavailable", by path.
fn unavailable(path: &str, status: u16, body: &str) -> Result<(), String> {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let ok = match path {
        p if p.starts_with("/go/") => status == 503 && body.starts_with("Service unavailable"),
        p if p.starts_with("/v3/jobs") => status == 500 && json["error_code"] == "CB.00060299",
        p if p.starts_with("/v3/tasks") => {
            status == 503 && json["errors"][0]["title"] == "CF-ServiceUnavailable"
        }
        p if p.starts_with("/api/1/") => {
            status == 500
                && json["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Internal server error."))
        }
        _ => false,
    };
    ok.then_some(())
        .ok_or_else(|| format!("{path}: {status} {body}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_api_server_down_64_connections_get_fast_errors_and_it_recovers() {
    let _serial = SERIAL.lock().await;
    let (_ns, _users, mut sidecar, http) = setup("hostile-down").await;
    let operator = support::token(User::Operator);
    let history = sidecar.url("/go/api/stages/foo/DEV/history");
    let r = http
        .get(&history)
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_client_error() || r.status().is_success(),
        "{}",
        r.status()
    );
    let before = sidecar.peak_rss_kib();

    let targets = [
        ("POST", "/go/api/stages/foo/DEV/cancel"),
        ("POST", "/v3/jobs/stop"),
        (
            "POST",
            "/v3/tasks/00000000-0000-0000-0000-000000000000/actions/cancel",
        ),
        (
            "POST",
            "/api/1/services/api/1/publish/cancel-publish-requests.json",
        ),
    ];
    let flood_for = Duration::from_secs(3);
    let paused = PausedApiServer::pause();
    let paused_at = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..64usize {
        let base = format!("http://{}", sidecar.addr);
        tasks.push(tokio::spawn(async move {
            // One connection per task, kept alive.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut seen = Vec::new();
            let mut n = 0usize;
            while paused_at.elapsed() < flood_for {
                let (_, path) = targets[(c + n) % targets.len()];
                // A token never seen before: each needs a TokenReview.
                let token = format!("hostile-{c}-{n}");
                let started = Instant::now();
                let r = client
                    .post(format!("{base}{path}"))
                    .bearer_auth(&token)
                    .header("X-Auth-Token", &token)
                    .header("Content-Type", "application/json")
                    .body(r#"{"job_id":"f9d6c8466d614a9788e9a0acf6c15f46","build_no":"1","site_id":"foo","package_ids":["x"]}"#)
                    .send()
                    .await;
                let (status, body) = match r {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                };
                seen.push((path, status, body, started.elapsed()));
                n += 1;
            }
            seen
        }));
    }
    // Health stays answerable (and fast) while the flood runs.
    let health = tokio::time::timeout(SLACK, http.get(sidecar.url("/healthz")).send())
        .await
        .expect("healthz during the flood")
        .unwrap();
    assert_eq!(health.status(), 200);
    let mut latencies = Vec::new();
    for t in tasks {
        for (path, status, body, took) in t.await.unwrap() {
            if let Err(e) = unavailable(path, status, &body) {
                panic!("with the API server down, {e}");
            }
            latencies.push(took);
        }
    }
    let paused_for = paused_at.elapsed();
    drop(paused);
    assert!(sidecar.running(), "the sidecar died under the flood");
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        *latencies.last().unwrap(),
    );
    let after = sidecar.peak_rss_kib();
    println!(
        "API server paused {paused_for:?}: {} requests over 64 connections, time to the error p50 {p50:?} p99 {p99:?} max {max:?}; peak RSS {before} KiB before, {after} KiB after",
        latencies.len()
    );
    assert!(
        latencies.len() >= 64,
        "too few answers: {}",
        latencies.len()
    );
    assert!(
        p50 < Duration::from_millis(250),
        "p50 {p50:?}: errors are not fast"
    );
    assert!(
        max < KUBE_TIMEOUT + SLACK,
        "max {max:?}: a request waited past the Kubernetes call timeout"
    );
    assert!(
        after < 256 * 1024,
        "peak RSS {after} KiB: memory is not bounded"
    );

    // Back: authenticated requests work again, unknown tokens get 401.
    eventually("the sidecar recovered", Duration::from_secs(60), || {
        let (http, history, operator) = (http.clone(), history.clone(), operator.clone());
        async move {
            let r = http
                .get(&history)
                .bearer_auth(&operator)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().is_server_error() {
                return Err(format!("still {}", r.status()));
            }
            let r = http
                .post(history.replace("/history", "/cancel"))
                .bearer_auth("hostile-unknown")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            (r.status() == 401)
                .then_some(())
                .ok_or(format!("an unknown token got {}", r.status()))
        }
    })
    .await;
    let ready = http.get(sidecar.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}
